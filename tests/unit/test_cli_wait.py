"""What `rotate --wait` concludes from the states a ManagedSecret's status goes through after a request."""

from __future__ import annotations

from typing import Any

from managed_secrets.cli.waiting import RotationTracker

OK = {"type": "RotationFailed", "status": "False", "reason": "NoFailure", "message": "ok"}
READY = {"type": "Ready", "status": "True", "reason": "Ready", "message": "current"}


def obj(
    *, annotation: str | None = None, conditions: tuple[dict[str, Any], ...] = (READY, OK), **status: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "db", "namespace": "ns"}
    if annotation:
        meta["annotations"] = {"managedsecrets.io/rotate": annotation}
    return {
        "metadata": meta,
        "status": {"currentVersion": "v2", "nextVersion": 3, "conditions": list(conditions), **status},
    }


def flight(request: str = "r1", step: str = "set", **extra: Any) -> dict[str, Any]:
    return {"requestId": request, "versionId": "v3", "step": step, "attempts": 0, **extra}


def test_steps_then_success() -> None:
    tracker = RotationTracker("db", "r1", obj())
    assert tracker.initial() is None
    assert tracker.observe(obj(annotation="r1")) is None
    assert tracker.observe(obj(rotation=flight(step="set"))) is None
    assert tracker.observe(obj(rotation=flight(step="set"))) is None
    assert tracker.observe(obj(rotation=flight(step="test"))) is None
    assert tracker.progress == [
        "managedsecret/db: rotating to v3: step set",
        "managedsecret/db: rotating to v3: step test",
    ]
    done = tracker.observe(obj(currentVersion="v3", nextVersion=4))
    assert done is not None and done.code == 0 and done.message == "managedsecret/db rotated: v3 is ACSCurrent"


def test_a_one_pass_rotation_is_seen_by_the_new_current_version() -> None:
    tracker = RotationTracker("db", "r1", obj())
    verdict = tracker.observe(obj(currentVersion="v3", nextVersion=4))
    assert verdict is not None and verdict.code == 0


def test_a_rollback_is_not_a_rotation() -> None:
    tracker = RotationTracker("db", "r1", obj())
    assert tracker.observe(obj(currentVersion="v1", nextVersion=3)) is None


def test_a_failed_step_fails_the_wait() -> None:
    tracker = RotationTracker("db", "r1", obj())
    failed = {"type": "RotationFailed", "status": "True", "reason": "WebhookRejected", "message": "HTTP 503"}
    state = obj(
        conditions=(READY, failed),
        rotation=flight(
            attempts=1, lastError="the endpoint answered HTTP 503", nextAttemptTime="2026-01-01T00:01:00Z"
        ),
    )
    verdict = tracker.observe(state)
    assert verdict is not None and verdict.code == 1
    assert verdict.message == (
        "managedsecret/db: rotation to v3 failed at step set (WebhookRejected): the endpoint answered HTTP 503 "
        "(attempt 1; the operator tries again at 2026-01-01T00:01:00Z)"
    )


def test_a_create_failure_fails_the_wait_but_an_old_one_does_not() -> None:
    failed = {"type": "RotationFailed", "status": "True", "reason": "DatabaseUnreachable", "message": "no route"}
    fresh = RotationTracker("db", "r1", obj())
    verdict = fresh.observe(obj(conditions=(READY, failed)))
    assert verdict is not None and verdict.code == 1 and "(DatabaseUnreachable): no route" in verdict.message

    stale = RotationTracker("db", "r1", obj(conditions=(READY, failed)))
    assert stale.observe(obj(conditions=(READY, failed))) is None, "the failure was there before the request"
    again = {**failed, "message": "connection refused"}
    verdict = stale.observe(obj(conditions=(READY, again)))
    assert verdict is not None and verdict.code == 1


def test_not_ready_fails_the_wait() -> None:
    tracker = RotationTracker("db", "r1", obj())
    broken = {"type": "Ready", "status": "False", "reason": "StoreError", "message": "cannot write"}
    verdict = tracker.observe(obj(conditions=(broken, OK)))
    assert (
        verdict is not None and verdict.code == 1 and "is not Ready (StoreError): cannot write" in verdict.message
    )


def test_a_rotation_that_ends_elsewhere_fails() -> None:
    tracker = RotationTracker("db", "r1", obj())
    tracker.observe(obj(rotation=flight()))
    verdict = tracker.observe(obj(currentVersion="v2"))
    assert verdict is not None and verdict.code == 1 and "ended, but v2 is ACSCurrent" in verdict.message


def test_another_requests_rotation_is_followed_by_a_refusal() -> None:
    before = obj(rotation=flight(request="other"), pendingVersion="v3")
    tracker = RotationTracker("db", "r1", before)
    assert tracker.refusal_possible
    assert tracker.observe(obj(rotation=flight(request="other", step="test"))) is None
    assert tracker.observe(obj(currentVersion="v3", nextVersion=4)) is None, "that was the other request's version"
    events = [
        {"reason": "RotationInProgress", "message": "rotation request 'r0' refused: ..."},
        {
            "reason": "RotationInProgress",
            "message": "rotation request 'r1' refused: version v3 is already being rotated (request 'other')",
        },
    ]
    verdict = tracker.refused(events)
    assert verdict is not None and verdict.code == 1
    assert verdict.message == (
        "managedsecret/db: rotation request 'r1' refused: version v3 is already being rotated (request 'other')"
    )


def test_the_same_request_id_again() -> None:
    handled = RotationTracker("db", "r1", obj(annotation="r1"))
    verdict = handled.initial()
    assert verdict is not None and verdict.code == 0 and "already handled" in verdict.message

    failed = {"type": "RotationFailed", "status": "True", "reason": "WebhookRejected", "message": "HTTP 500"}
    failing = RotationTracker("db", "r1", obj(annotation="r1", conditions=(READY, failed)))
    verdict = failing.initial()
    assert verdict is not None and verdict.code == 1

    in_flight = RotationTracker("db", "r1", obj(annotation="r1", rotation=flight()))
    assert in_flight.initial() is None and in_flight.version == "v3"


def test_the_timeout_message_names_the_last_step() -> None:
    tracker = RotationTracker("db", "r1", obj())
    assert tracker.timed_out() == (
        "timed out waiting for the rotation of managedsecret/db (waiting for the operator to take the request)"
    )
    tracker.observe(obj(rotation=flight(step="finish")))
    assert tracker.timed_out().endswith("(rotating to v3: step finish)")
