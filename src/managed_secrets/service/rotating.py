"""The rotation trigger acted on: start, refuse, wait or advance, with Events, metrics and conditions.

The decision itself is ``rotation.trigger.decide`` (pure). A failure of the *create* step (no pending
version yet) is persisted in the store attributes beside the record, with its backoff, so a restart neither
forgets it nor retries at once; a failure of a later step is persisted in the record's rotation progress.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

from managed_secrets.domain.clock import iso
from managed_secrets.domain.schedule import RotationSchedule
from managed_secrets.errors import Fenced, InvalidRequest, ManagedSecretsError, RotationInProgress
from managed_secrets.metrics import RotationResult
from managed_secrets.names import (
    CREATE_FAILURES,
    CREATE_RETRY_AFTER,
    LAST_ROTATE_REQUEST,
    LAST_STAGE_MOVE_TIME,
)
from managed_secrets.rotation import trigger
from managed_secrets.rotation.engine import RotationFailed, describe
from managed_secrets.rotation.strategies import strategy_for
from managed_secrets.rotation.strategy import RotationStepFailed, RotationStrategy
from managed_secrets.service.context import Pass

__all__ = ["create_failure", "rotate"]

log = logging.getLogger(__name__)


def create_failure(attributes: Mapping[str, str]) -> trigger.CreateFailure | None:
    """The persisted create failure, if any (unreadable attributes count as none)."""
    try:
        return trigger.CreateFailure(
            int(attributes[CREATE_FAILURES]), dt.datetime.fromisoformat(attributes[CREATE_RETRY_AFTER])
        )
    except (KeyError, ValueError):
        return None


def _stage_moved(attributes: Mapping[str, str]) -> dt.datetime | None:
    moved = attributes.get(LAST_STAGE_MOVE_TIME)
    try:
        return dt.datetime.fromisoformat(moved) if moved else None
    except ValueError:
        return None


def _mark(p: Pass, request: str) -> None:
    p.keep(
        p.deps.vault.change(
            p.key, lambda r: r, attributes=lambda a: {**a, LAST_ROTATE_REQUEST: request}, known=p.loaded
        )
    )


def rotate(p: Pass) -> None:
    """Resumes a rotation in flight, or starts one that is requested or due. ACSCurrent is never lost."""
    record = p.record
    assert record is not None and record.current is not None
    request = p.resource.rotate_request
    handled = p.attributes.get(LAST_ROTATE_REQUEST, "")
    found = strategy_for(p.spec.raw)
    if found is None:
        if request and request != handled:
            _mark(p, request)
            p.warning(
                "RotationNotSupported",
                f"rotation request {request!r} ignored: a valueFrom secret gets a new version when its source "
                "Secret changes",
            )
        return
    strategy, config = found
    try:
        schedule = RotationSchedule.from_spec(
            p.spec.raw.get("rotation"), min_interval=p.deps.min_rotation_interval
        )
    except InvalidRequest as e:
        # A rotation-config error stops automatic rotation only: requests still rotate, and the current
        # value is still projected.
        schedule = RotationSchedule()
        problem: str | None = str(e)
    else:
        problem = None
    decision = trigger.decide(
        record,
        schedule,
        request=request,
        handled=handled,
        failure=create_failure(p.attributes),
        stage_moved=_stage_moved(p.attributes),
        now=p.deps.now(),
    )
    if isinstance(decision, trigger.Start):
        if not _begin(p, strategy, config, decision):
            return
        decision = trigger.advance(p.record or record, p.deps.now())
    elif isinstance(decision, trigger.Refuse):
        p.deps.metrics.record_rotation(strategy.name, RotationResult.REFUSED)
        _mark(p, decision.request_id)
        p.warning(
            "RotationInProgress",
            f"rotation request {decision.request_id!r} refused: version {decision.pending_version} is already "
            f"being rotated (request {decision.pending_request!r})",
        )
        decision = trigger.advance(p.record or record, p.deps.now())

    waiting = isinstance(decision, trigger.WaitUntil)
    if isinstance(decision, trigger.WaitUntil):
        p.outcome.wake(decision.when)  # RotationFailed keeps what the failure set
    elif isinstance(decision, trigger.Advance) and not _advance(p, strategy, config):
        return
    elif isinstance(decision, trigger.Stuck):
        problem = (
            f"version {decision.pending_version} carries ACSPending but no rotation is in progress; move or "
            "remove the label (kubectl msecret label) to rotate again"
        )
    _finish_pass(p, strategy, schedule, waiting=waiting, problem=problem)


def _begin(p: Pass, strategy: RotationStrategy, config: Mapping[str, object], start: trigger.Start) -> bool:
    """Step *create*; False when it failed (the failure and its backoff are persisted) or was refused."""
    assert p.loaded is not None

    def attributes(a: Mapping[str, str]) -> Mapping[str, str]:
        kept = {k: v for k, v in a.items() if k not in (CREATE_FAILURES, CREATE_RETRY_AFTER)}
        return {**kept, LAST_ROTATE_REQUEST: start.request_id} if start.requested else kept

    started = p.deps.now()
    try:
        before = p.record
        p.keep(
            p.deps.engine.begin(
                p.key,
                p.loaded,
                strategy,
                config,
                request_id=start.request_id,
                read_secret=p.read_secret,
                key_id=p.spec.encryption_key,
                attributes=attributes,
                finish_with_limit=p.spec.version_limit if strategy.is_local(config) else None,
                fence=p.fence,
                report=p.report,
            )
        )
    except Fenced:
        raise
    except RotationInProgress as e:
        p.deps.metrics.record_rotation(strategy.name, RotationResult.REFUSED)
        _mark(p, start.request_id)
        p.warning("RotationInProgress", str(e))
        return False
    except ManagedSecretsError as e:
        previous = create_failure(p.attributes)
        attempts = (previous.attempts if previous else 0) + 1
        p.deps.metrics.record_rotation(
            strategy.name, RotationResult.FAILED, namespace=p.key.namespace, name=p.key.name, failures=attempts
        )
        now = p.deps.now()
        retry = now + p.deps.engine.backoff.delay(attempts)
        p.keep(
            p.deps.vault.change(
                p.key,
                lambda r: r,
                attributes=lambda a: {**a, CREATE_FAILURES: str(attempts), CREATE_RETRY_AFTER: iso(retry)},
                known=p.loaded,
            )
        )
        p.outcome.wake(retry)
        message = describe("create", e)
        p.outcome.add("RotationFailed", "True", _reason(e), message)
        _warn_once(p, _reason(e), message)
        return False
    record = p.record
    if strategy.is_local(config):
        if record is not None and record is not before:
            _rotated(p, strategy, started)
        return True
    # No Event here: status.rotation and the Rotating condition show the rotation in flight; the one Event of
    # a rotation is Rotated (or the failure's warning).
    return True


def _advance(p: Pass, strategy: RotationStrategy, config: Mapping[str, object]) -> bool:
    """Runs the remaining steps; False when a step failed (recorded with its retry time)."""
    assert p.loaded is not None
    progress = p.loaded.record.rotation
    assert progress is not None
    try:
        loaded, finished = p.deps.engine.advance(
            p.key,
            p.loaded,
            strategy,
            config,
            read_secret=p.read_secret,
            version_limit=p.spec.version_limit,
            fence=p.fence,
            report=p.report,
        )
    except RotationFailed as e:
        if e.loaded is not None:
            p.keep(e.loaded)
        record = p.record
        failed = record.rotation if record is not None else None
        p.deps.metrics.record_rotation(
            strategy.name,
            RotationResult.FAILED,
            namespace=p.key.namespace,
            name=p.key.name,
            failures=failed.attempts if failed is not None else None,
        )
        message = failed.last_error if failed and failed.last_error else describe("rotation", e.cause)
        p.outcome.add("RotationFailed", "True", _reason(e.cause), message)
        p.outcome.wake(failed.next_attempt if failed else None)
        _warn_once(p, _reason(e.cause), message)
        return False
    p.keep(loaded)
    if finished:
        _rotated(p, strategy, progress.started)
    return True


def _rotated(p: Pass, strategy: RotationStrategy, started: dt.datetime) -> None:
    record = p.record
    if record is None or record.current is None:
        return
    took = (p.deps.now() - started).total_seconds()
    p.deps.metrics.record_rotation(
        strategy.name, RotationResult.SUCCEEDED, max(0.0, took), namespace=p.key.namespace, name=p.key.name
    )
    p.outcome.rotated = record.current.id
    p.normal(
        "Rotated",
        f"version {record.current.id} is now ACSCurrent"
        + (f", {record.previous.id} ACSPrevious" if record.previous else ""),
    )
    log.info("rotated %s to %s", p.key, record.current.id)


def _finish_pass(
    p: Pass, strategy: RotationStrategy, schedule: RotationSchedule, *, waiting: bool, problem: str | None
) -> None:
    record = p.record
    assert record is not None
    current = p.open_current()
    if current is not None:
        p.outcome.public_key = strategy.public_data(current).get("publicKey")
    if problem is not None:
        reason = "InvalidSchedule" if problem.startswith("spec.rotation") else "PendingWithoutRotation"
        p.outcome.add("RotationFailed", "True", reason, problem)
        _warn_once(p, reason, problem)
    elif not waiting:
        p.outcome.add("RotationFailed", "False", "NoFailure", "the last rotation step succeeded")
    if record.rotation is None and record.pending is None:
        p.outcome.next_rotation = trigger.next_due(schedule, record, record.secret_id, _stage_moved(p.attributes))


def _warn_once(p: Pass, reason: str, message: str) -> None:
    before = p.resource.old_condition("RotationFailed")
    if before.get("status") != "True" or before.get("message") != message:
        p.warning(reason, message)


def _reason(error: BaseException) -> str:
    if isinstance(error, RotationStepFailed):
        return error.reason
    if isinstance(error, RotationInProgress):
        return "RotationInProgress"
    return "RotationError" if isinstance(error, ManagedSecretsError) else "APIError"
