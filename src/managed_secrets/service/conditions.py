"""Conditions and the status block: metadata about versions and conditions, never a value.

``Outcome`` collects what one reconcile did; ``desired_status`` turns it into the status to patch, and
``status_differs`` says whether patching would change anything (so an unchanged world writes nothing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from managed_secrets.domain import SecretRecord
from managed_secrets.domain.clock import iso_seconds
from managed_secrets.projection import ApplyAction
from managed_secrets.rotation.strategy import TargetReport
from managed_secrets.service.resource import ManagedSecretResource

__all__ = ["Condition", "Outcome", "desired_status", "rotation_status", "status_differs"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass
class Outcome:
    """What one reconcile did, for the status, the scheduler, the handler's log and tests."""

    record: SecretRecord | None = None
    new_version: str | None = None
    projection: ApplyAction | None = None
    projected_revision: str | None = None
    """The projected Secret's resourceVersion after this pass (set with ``projection``)."""
    store_revision: str | None = None
    source_revision: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    rotated: str | None = None
    next_rotation: dt.datetime | None = None
    wake_at: dt.datetime | None = None
    public_key: str | None = None
    reports: dict[str, tuple[TargetReport, dt.datetime]] = field(default_factory=dict)
    """What this pass's steps said of each target system (``status.hosts``), with the time they said it."""
    retry: dict[str, Any] | None = None
    """``status.retry`` while a failure is retried with backoff; ``None`` clears it."""

    def add(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions.append(Condition(type_, status, reason, message))

    def drop(self, *types: str) -> None:
        self.conditions = [c for c in self.conditions if c.type not in types]

    def wake(self, when: dt.datetime | None) -> None:
        """Reconcile again at ``when`` (the earliest of all the times asked for in this pass)."""
        if when is not None and (self.wake_at is None or when < self.wake_at):
            self.wake_at = when

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in reversed(self.conditions) if c.type == type_), None)


def desired_status(
    resource: ManagedSecretResource,
    record: SecretRecord | None,
    conditions: list[Condition],
    projected_secret: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    old = resource.status
    generation = resource.generation
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
            "lastTransitionTime": since or iso_seconds(now),
            "observedGeneration": generation,
        }
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [merged[t] for t in sorted(merged)],
    }
    if record is not None:
        status["versions"] = [
            {"id": v.id, "stages": sorted(v.stages), "created": iso_seconds(v.created)} for v in record.versions
        ]
        status["currentVersion"] = record.current.id if record.current else None
        status["previousVersion"] = record.previous.id if record.previous else None
        status["pendingVersion"] = record.pending.id if record.pending else None
        status["nextVersion"] = record.next_version_number
    if projected_secret is not None:
        status["projectedSecret"] = projected_secret
    elif old.get("projectedSecret"):
        status["projectedSecret"] = old["projectedSecret"]
    return status


def rotation_status(record: SecretRecord | None, outcome: Outcome) -> dict[str, Any]:
    """Status fields about rotation; ``None`` values remove a field (merge patch). Adds ``Rotating``."""
    fields: dict[str, Any] = {
        "nextRotationTime": iso_seconds(outcome.next_rotation) if outcome.next_rotation else None
    }
    if record is None:
        return fields
    current = record.current
    rotated = current is not None and current.request_id is not None
    fields["lastRotationTime"] = iso_seconds(current.created) if rotated and current is not None else None
    progress = record.rotation
    fields["rotation"] = (
        {
            "step": progress.step.value,
            "attempts": progress.attempts,
            "lastError": progress.last_error,
            "requestId": progress.request_id,
            "versionId": progress.version_id,
            "startTime": iso_seconds(progress.started),
            "nextAttemptTime": iso_seconds(progress.next_attempt) if progress.next_attempt else None,
        }
        if progress is not None
        else None
    )
    if outcome.public_key is not None:
        fields["publicKey"] = outcome.public_key
    if progress is not None:
        outcome.add(
            "Rotating",
            "True",
            f"Step{progress.step.value.capitalize()}",
            f"rotating to version {progress.version_id}, next step {progress.step.value}",
        )
    else:
        outcome.add("Rotating", "False", "Idle", "no rotation in progress")
    return fields


def status_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when patching ``new`` would change what is stored (None values delete keys in a merge patch)."""
    for key, value in new.items():
        if value is None:
            if old.get(key) is not None:
                return True
        elif old.get(key) != value:
            return True
    return False
