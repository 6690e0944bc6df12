"""The ``managed-secrets-operator`` command: Kopf's runner with this operator's handlers and settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tracemalloc

import kopf

from managed_secrets.operator import handlers, startup  # noqa: F401 - registers the handlers
from managed_secrets.operator.config import OperatorConfig


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keyring"]:
        from managed_secrets.operator import keyring_tool

        return keyring_tool.main(argv[1:])
    parser = argparse.ArgumentParser(prog="managed-secrets-operator", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="json", choices=["json", "plain", "full"])
    parser.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    args = parser.parse_args(argv)

    cfg = OperatorConfig.from_env()
    if os.environ.get("MSO_TRACEMALLOC"):
        _trace_memory(int(os.environ["MSO_TRACEMALLOC"]))
    kopf.configure(
        debug=args.log_level == "DEBUG",
        verbose=args.log_level == "DEBUG",
        log_format={"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}[
            args.log_format
        ],
    )
    logging.getLogger().setLevel(args.log_level)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if args.log_level != "DEBUG":
        # Kopf logs every handler run at INFO: one line per ManagedSecret event, none of them news.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
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


def _trace_memory(frames: int) -> None:
    """``MSO_TRACEMALLOC=N``: trace allocations (N frames each; slows the process) and log, on SIGUSR2, the
    traced total and the 30 allocating lines that grew most since the previous SIGUSR2 (or hold most, the
    first time)."""
    tracemalloc.start(max(1, frames))
    log = logging.getLogger("managed_secrets.memory")
    previous: list[tracemalloc.Snapshot] = []

    def report(_signum: int, _frame: object) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        total = sum(s.size for s in snapshot.statistics("filename"))
        log.warning("traced Python memory: %.1f MiB", total / 2**20)
        if previous:
            for diff in snapshot.compare_to(previous[-1], "lineno")[:30]:
                where = diff.traceback[0]
                log.warning(
                    "  %+9.1f KiB %+8d blocks  %s:%d",
                    diff.size_diff / 1024,
                    diff.count_diff,
                    where.filename,
                    where.lineno,
                )
        else:
            for stat in snapshot.statistics("lineno")[:30]:
                where = stat.traceback[0]
                log.warning(
                    "  %9.1f KiB %8d blocks  %s:%d", stat.size / 1024, stat.count, where.filename, where.lineno
                )
        previous[:] = [snapshot]

    signal.signal(signal.SIGUSR2, report)


if __name__ == "__main__":
    sys.exit(main())
