"""Rotation strategies, one module each; ``load_all`` imports (and so registers) every one present.

``strategy_for`` resolves a spec to its strategy.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from typing import Any

from managed_secrets.names import ROTATING_SOURCES
from managed_secrets.rotation.strategy import RotationStrategy, get_strategy

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


def strategy_for(spec: Mapping[str, Any]) -> tuple[RotationStrategy, Mapping[str, Any]] | None:
    """The one spec -> strategy resolution: the strategy named by the spec's value source, and its section.

    ``None`` for a source that is not a strategy (``valueFrom``: a new version comes from its Secret).
    """
    for name in ROTATING_SOURCES:
        section = spec.get(name)
        if section is not None:
            load_all()
            return get_strategy(name), section
    return None
