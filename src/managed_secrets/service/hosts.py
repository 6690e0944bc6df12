"""``status.hosts``: where each target system of a multi-target strategy (``sshKey.hosts``) stands.

A pass reports only the targets it touched; the others keep what the status last said. A target that left
the spec leaves the list, and the field goes when the spec names no targets. Entries hold a host, a version
id, a step, a state and a message (never a value); ``lastTransitionTime`` moves only when the state or the
version does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from managed_secrets.domain.clock import iso_seconds
from managed_secrets.rotation.strategies import strategy_for
from managed_secrets.rotation.strategy import TargetReport

__all__ = ["host_status", "targets_of"]


def targets_of(spec: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The targets the spec's strategy acts on (none for most strategies, and for an unknown source)."""
    found = strategy_for(spec) if spec is not None else None
    if found is None:
        return ()
    strategy, config = found
    return strategy.targets(config)


def host_status(
    old: Sequence[Mapping[str, Any]] | None,
    targets: Sequence[str],
    reports: Mapping[str, tuple[TargetReport, dt.datetime]],
) -> list[dict[str, Any]] | None:
    """The new ``status.hosts`` (``None`` removes the field)."""
    if not targets:
        return None
    before = {str(e.get("host")): dict(e) for e in old or [] if isinstance(e, Mapping)}
    entries: list[dict[str, Any]] = []
    for target in targets:
        known = before.get(target)
        if target in reports:
            report, when = reports[target]
            entry: dict[str, Any] = {
                "host": target,
                "versionId": report.version_id,
                "step": report.step,
                "state": report.state,
                "message": report.message,
            }
            same = known is not None and all(known.get(k) == entry[k] for k in ("versionId", "state"))
            entry["lastTransitionTime"] = (
                known.get("lastTransitionTime") if same and known is not None else iso_seconds(when)
            )
            entries.append(entry)
        elif known is not None:
            entries.append(known)
    return entries or None
