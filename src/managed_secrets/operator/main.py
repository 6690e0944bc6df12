"""The ``managed-secrets-operator`` command: Kopf's runner with this operator's handlers and settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf

from managed_secrets.operator import handlers, startup  # noqa: F401 - registers the handlers
from managed_secrets.operator.config import OperatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="managed-secrets-operator", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="json", choices=["json", "plain", "full"])
    parser.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    args = parser.parse_args(argv)

    cfg = OperatorConfig.from_env()
    kopf.configure(
        debug=args.log_level == "DEBUG",
        verbose=args.log_level == "DEBUG",
        log_format={"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}[
            args.log_format
        ],
    )
    logging.getLogger().setLevel(args.log_level)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    memo = kopf.Memo(config=cfg)
    namespaces = list(cfg.watch_namespaces)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            memo=memo,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
