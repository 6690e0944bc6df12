"""Rotation strategies, one module each; ``load_all`` imports (and so registers) every one present."""

from __future__ import annotations

import functools
import importlib
import logging

log = logging.getLogger(__name__)

BUILT_IN = ("generic", "database", "sshkey", "external")


@functools.cache
def load_all() -> None:
    for module in BUILT_IN:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
            log.debug("rotation strategy module %s is not available", module)
