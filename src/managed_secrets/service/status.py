"""The status block: metadata about versions and conditions, never a value."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from managed_secrets.domain import SecretRecord


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def desired_status(
    body: Mapping[str, Any],
    record: SecretRecord | None,
    conditions: list[Condition],
    projected_secret: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    old = body.get("status") or {}
    generation = body["metadata"].get("generation")
    old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
    merged: dict[str, dict[str, Any]] = {t: dict(c) for t, c in old_conditions.items() if t}
    for c in conditions:
        before = old_conditions.get(c.type) or {}
        since = before.get("lastTransitionTime") if before.get("status") == c.status else None
        merged[c.type] = {
            "type": c.type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastTransitionTime": since or _iso(now),
            "observedGeneration": generation,
        }
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [merged[t] for t in sorted(merged)],
    }
    if record is not None:
        status["versions"] = [
            {"id": v.id, "stages": sorted(v.stages), "created": _iso(v.created)} for v in record.versions
        ]
        status["currentVersion"] = record.current.id if record.current else None
        status["previousVersion"] = record.previous.id if record.previous else None
        status["pendingVersion"] = record.pending.id if record.pending else None
    if projected_secret is not None:
        status["projectedSecret"] = projected_secret
    elif old.get("projectedSecret"):
        status["projectedSecret"] = old["projectedSecret"]
    return status


def status_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when patching ``new`` would change what is stored (None values delete keys in a merge patch)."""
    for key, value in new.items():
        if value is None:
            if old.get(key) is not None:
                return True
        elif old.get(key) != value:
            return True
    return False
