"""``rotate --wait``: follow a ManagedSecret's status until the rotation a request started has finished.

What the operator reports (see ``service.conditions`` and ``service.rotating``):

- ``status.rotation`` while a rotation is in flight: ``requestId`` (the annotation's value), ``versionId`` (the
  ACSPending version), ``step`` (the step to run next: set, test, finish), ``attempts`` and ``lastError`` once a
  step failed (it is retried with backoff from ``nextAttemptTime``), and the condition ``RotationFailed=True``
  with the step's reason (e.g. ``WebhookRejected``);
- when it finishes, ``status.rotation`` is removed and ``currentVersion`` is the new version;
- a *create* failure (no pending version yet) shows as ``RotationFailed=True`` without ``status.rotation``;
- a strategy that runs every step in one pass (Generate, SSHKey) never shows ``status.rotation``: the new
  version is current at once (``currentVersion`` changes, ``nextVersion`` grows);
- a request that arrives while another request's rotation is in flight is refused with a Warning Event
  ``RotationInProgress`` that names it.

``RotationTracker`` is the pure part (one state in, a verdict or nothing out); ``follow`` watches the object.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import watch as kubernetes_watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from managed_secrets.cli.connection import Connection
from managed_secrets.cli.output import as_object, condition, status_of
from managed_secrets.names import API_GROUP, API_VERSION, KIND, PLURAL, ROTATE_ANNOTATION

__all__ = ["RotationTracker", "Verdict", "follow"]

WATCH_WINDOW = 30.0  # seconds per watch request (then it is opened again from where it stopped)
EVENT_CHECK_WINDOW = 3.0  # while a refusal may come, the Events are looked at this often
MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class Verdict:
    code: int
    """0: rotated; 1: failed (or refused, or the object went away)."""
    message: str


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class RotationTracker:
    """What ``rotate --wait`` concludes from the states of one ManagedSecret after writing ``request``.

    ``before`` is the object as read just before the request was written: what changed since tells this
    request's effects from what was already there (an old failure, another request's rotation).
    """

    def __init__(self, name: str, request: str, before: Mapping[str, Any] | None) -> None:
        status = status_of(before)
        self.name = name
        self.request = request
        self.before_current = status.get("currentVersion")
        self.before_next = _int(status.get("nextVersion"))
        self.before_failed = condition(status, "RotationFailed")
        self.before_ready = condition(status, "Ready")
        rotation = status.get("rotation") or {}
        annotations = ((before or {}).get("metadata") or {}).get("annotations") or {}
        self.already_requested = annotations.get(ROTATE_ANNOTATION) == request
        mine = bool(rotation) and rotation.get("requestId") == request
        self.version: str | None = rotation.get("versionId") if mine else None
        self.step: str | None = None
        # Another request's rotation in flight: this request is refused unless that one ends first.
        self.other_version: str | None = None
        if rotation and not mine:
            self.other_version = rotation.get("versionId") or status.get("pendingVersion") or "?"
        elif not rotation and status.get("pendingVersion"):
            self.other_version = status.get("pendingVersion")
        self.progress: list[str] = []
        self.last_state = "waiting for the operator to take the request"

    @property
    def subject(self) -> str:
        return f"managedsecret/{self.name}"

    @property
    def refusal_possible(self) -> bool:
        return self.other_version is not None and self.version is None

    def initial(self) -> Verdict | None:
        """A verdict from ``before`` alone: the same request id was written earlier (``--request-id``)."""
        if not self.already_requested or self.version is not None:
            return None
        if self.before_failed.get("status") == "True" and self.other_version is None:
            return self._failed(self.before_failed)
        if self.other_version is None:
            return Verdict(0, f"{self.subject}: request {self.request} was already handled; {self._current()}")
        return None

    def _current(self, current: str | None = None) -> str:
        version = current if current is not None else self.before_current
        return f"{version} is ACSCurrent" if version else "no version is ACSCurrent"

    def _failed(self, failed: Mapping[str, Any]) -> Verdict:
        return Verdict(
            1,
            f"{self.subject}: rotation failed ({failed.get('reason') or 'RotationFailed'}): "
            f"{failed.get('message') or 'no message'}",
        )

    def _say(self, line: str) -> None:
        self.progress.append(line)
        self.last_state = line.split(": ", 1)[-1]

    def observe(self, obj: Mapping[str, Any]) -> Verdict | None:
        """A verdict for this state of the object, or ``None`` to keep waiting (``progress`` gets new lines)."""
        status = status_of(obj)
        rotation = status.get("rotation") or None
        current = status.get("currentVersion")
        failed = condition(status, "RotationFailed")
        ready = condition(status, "Ready")
        if rotation is not None and rotation.get("requestId") == self.request:
            self.version = str(rotation.get("versionId") or "?")
            step = str(rotation.get("step") or "?")
            attempts = _int(rotation.get("attempts")) or 0
            if step != self.step:
                self.step = step
                self._say(f"{self.subject}: rotating to {self.version}: step {step}")
            if attempts > 0 or rotation.get("lastError"):
                reason = failed.get("reason") if failed.get("status") == "True" else None
                message = rotation.get("lastError") or failed.get("message") or "the step failed"
                retry = rotation.get("nextAttemptTime")
                return Verdict(
                    1,
                    f"{self.subject}: rotation to {self.version} failed at step {step}"
                    + (f" ({reason})" if reason else "")
                    + f": {message}"
                    + (f" (attempt {attempts}; the operator tries again at {retry})" if retry else ""),
                )
            return None
        if self.version is not None:  # this request's rotation was in flight and is not any more
            if current == self.version:
                return Verdict(0, f"{self.subject} rotated: {self._current(current)}")
            if rotation is None:
                return Verdict(
                    1, f"{self.subject}: the rotation to {self.version} ended, but {self._current(current)}"
                )
            return None
        if rotation is not None:
            return None  # another request's rotation: a refusal Event, or its end, comes next
        grown = _int(status.get("nextVersion"))
        made = grown is not None and (self.before_next is None or grown > self.before_next)
        if current and current not in (self.before_current, self.other_version) and made:
            return Verdict(0, f"{self.subject} rotated: {self._current(current)}")
        if failed.get("status") == "True" and failed != self.before_failed:
            return self._failed(failed)
        if ready.get("status") == "False" and ready != self.before_ready:
            return Verdict(
                1,
                f"{self.subject} is not Ready ({ready.get('reason') or 'NotReady'}): "
                f"{ready.get('message') or 'no message'}",
            )
        return None

    def refused(self, events: Sequence[Mapping[str, Any]]) -> Verdict | None:
        """The operator's refusal of this request, if one of these Events (about this object) is it."""
        for event in events:
            message = str(event.get("message") or "")
            if event.get("reason") == "RotationInProgress" and repr(self.request) in message:
                return Verdict(1, f"{self.subject}: {message}")
        return None

    def timed_out(self) -> str:
        return f"timed out waiting for the rotation of {self.subject} ({self.last_state})"


watch: Any = kubernetes_watch  # untyped


def _refusal_events(conn: Connection, namespace: str, name: str) -> list[dict[str, Any]]:
    listing = conn.core().list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},reason=RotationInProgress"
    )
    return [
        {"reason": e.reason, "message": e.message}
        for e in listing.items
        if (e.involved_object.kind or KIND) == KIND
    ]


def follow(
    conn: Connection,
    namespace: str,
    tracker: RotationTracker,
    *,
    resource_version: str | None,
    deadline: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> Verdict | None:
    """Watches the object from ``resource_version`` until the tracker has a verdict; ``None`` at ``deadline``.

    Each watch lasts at most ``WATCH_WINDOW`` (less near the deadline, or while a refusal may come); when it
    ends it is opened again from the last version seen; a connection that fails is retried with backoff.
    """
    api = conn.custom()
    name = tracker.name
    backoff = 0.5
    rv = resource_version

    def judge(obj: Mapping[str, Any]) -> Verdict | None:
        verdict = tracker.observe(obj)
        for line in tracker.progress:
            say(line)
        tracker.progress.clear()
        return verdict

    while True:
        if tracker.refusal_possible:
            verdict = tracker.refused(_refusal_events(conn, namespace, name))
            if verdict is not None:
                return verdict
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        window = min(remaining, EVENT_CHECK_WINDOW if tracker.refusal_possible else WATCH_WINDOW)
        try:
            if rv is None:
                try:
                    obj = as_object(
                        api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
                    )
                except ApiException as e:
                    if e.status == 404:
                        return Verdict(1, f"{tracker.subject} was deleted")
                    raise
                rv = obj["metadata"]["resourceVersion"]
                verdict = judge(obj)
                if verdict is not None:
                    return verdict
            stream = watch.Watch()
            for event in stream.stream(
                api.list_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=max(1, math.ceil(window)),
                _request_timeout=(30, window + 10),
            ):
                kind = event.get("type")
                obj = event.get("raw_object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old a version: read the object again
                        rv = None
                        break
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message") or "watch error")
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    return Verdict(1, f"{tracker.subject} was deleted")
                verdict = judge(obj)
                if verdict is not None:
                    with contextlib.suppress(Exception):
                        stream.stop()
                    return verdict
                if clock() >= deadline:
                    return None
            backoff = 0.5
        except ApiException as e:
            if e.status != 410:
                raise
            rv = None
        except HTTPError:
            # The watch connection broke (or read nothing for too long): open it again, with backoff.
            time.sleep(min(backoff, max(0.0, deadline - clock())))
            backoff = min(backoff * 2, MAX_BACKOFF)
