"""Whether to rotate now: a pure decision over frozen inputs, the way cert-manager decides renewal.

``decide`` looks at the stored record, the schedule, the user's request annotation, the last request the
operator handled, a persisted create failure and the time, and answers one of:

- ``Start(request_id)``: begin a rotation under this request id (the user's, or ``schedule-<due time>``);
- ``Refuse(request_id, pending)``: a new request arrived while another version is pending;
- ``WaitUntil(when)``: a create failure is backing off, or the step in flight is not due for a retry;
- ``Advance``: a rotation is in flight and its next step may run now;
- ``Idle(next_due)``: nothing to do; ``next_due`` is the next scheduled rotation, if any;
- ``Stuck(version)``: a version is ACSPending without a rotation in progress (a hand-moved label).

Both ``Refuse`` and the in-flight answers still advance the rotation in flight: ``advance`` tells when.
Because the backoff is read from what is persisted with the record, a restart neither forgets a failure nor
storms the target.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from managed_secrets.domain import SecretRecord
from managed_secrets.domain.clock import iso
from managed_secrets.domain.schedule import RotationSchedule, next_rotation_time, rotation_due

__all__ = [
    "Advance",
    "CreateFailure",
    "Decision",
    "Idle",
    "Refuse",
    "Start",
    "Stuck",
    "WaitUntil",
    "decide",
    "next_due",
]


@dataclass(frozen=True)
class CreateFailure:
    """A rotation whose *create* step failed (so no pending version exists): how often, and when to retry."""

    attempts: int
    retry_after: dt.datetime


@dataclass(frozen=True)
class Start:
    request_id: str
    requested: bool
    """True when the user's annotation asked for it (so the request is marked handled with the write)."""


@dataclass(frozen=True)
class Refuse:
    request_id: str
    pending_version: str
    pending_request: str


@dataclass(frozen=True)
class WaitUntil:
    when: dt.datetime


@dataclass(frozen=True)
class Advance:
    pass


@dataclass(frozen=True)
class Idle:
    next_due: dt.datetime | None


@dataclass(frozen=True)
class Stuck:
    """A version carries ACSPending without rotation progress (e.g. a label moved by hand): nothing can start
    or advance until a person moves the label; waiting on a schedule would only spin."""

    pending_version: str


Decision = Start | Refuse | WaitUntil | Advance | Idle | Stuck


def next_due(
    schedule: RotationSchedule, record: SecretRecord, secret_id: str, stage_moved: dt.datetime | None
) -> dt.datetime | None:
    """The next scheduled rotation: counted from the current version's creation, or a later rollback."""
    if record.current is None:
        return None
    last = record.current.created
    if stage_moved is not None:
        # A rollback makes an old version current; the schedule counts from the move, not from its age.
        last = max(last, stage_moved)
    return next_rotation_time(schedule, last, secret_id)


def decide(
    record: SecretRecord,
    schedule: RotationSchedule,
    *,
    request: str,
    handled: str,
    failure: CreateFailure | None,
    stage_moved: dt.datetime | None,
    now: dt.datetime,
) -> Decision:
    """What the rotation trigger does now (see the module docstring). ``request`` is "" when none is set."""
    new_request = bool(request) and request != handled
    if record.rotation is None and record.pending is not None:
        return Stuck(record.pending.id)
    if record.rotation is not None or record.pending is not None:
        pending = record.pending
        if new_request and pending is not None and pending.request_id != request:
            return Refuse(request, pending.id, pending.request_id or "")
        return advance(record, now)
    due = next_due(schedule, record, record.secret_id, stage_moved)
    started: Start | None = None
    if new_request:
        started = Start(request, requested=True)
    elif due is not None and rotation_due(due, now):
        started = Start(f"schedule-{iso(due)}", requested=False)
    if started is None:
        return Idle(due)
    if failure is not None and failure.retry_after > now:
        return WaitUntil(failure.retry_after)
    return started


def advance(record: SecretRecord, now: dt.datetime) -> Advance | WaitUntil | Idle:
    """For a rotation in flight: run its next step now, or wait for the retry time of a failed step."""
    progress = record.rotation
    if progress is None:
        return Idle(None)
    if progress.next_attempt is not None and progress.next_attempt > now:
        return WaitUntil(progress.next_attempt)
    return Advance()
