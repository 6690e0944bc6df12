"""What the watches bring in, kept small: which events need a reconcile and which are echoes of our writes.

Per ManagedSecret the service remembers three short strings and nothing of the object's body:

- the *trigger* of the last event it handled (uid, generation, labels and annotations): a later event with the
  same trigger is the echo of a status or finalizer patch and costs nothing;
- the resourceVersion of the projected Secret as the last reconcile left it: the projected Secret's own watch
  event for a write we made is recognised and dropped;
- the Secret it takes its value from (``valueFrom.secretRef``), so a change of that Secret finds its owners
  without an index over every ManagedSecret.

A restart resumes an object without a read when its status says it was reconciled at this generation and
the revisions recorded in ``status.revisions`` still match what the server-side-filtered watches list now
(``Revisions``): the store record, the projected Secret and the value source are exactly as that reconcile
left them. Anything else (a drift while the operator was down, a due rotation, a pending request, a failure)
goes through the full reconcile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from managed_secrets.names import (
    MOVE_STAGE_ANNOTATION,
    REINITIALIZE_ANNOTATION,
    RESTORE_ANNOTATION,
    ROTATE_ANNOTATION,
)
from managed_secrets.service.resource import ManagedSecretResource
from managed_secrets.store import RecordKey

__all__ = ["Resume", "Revisions", "Watched", "requests_digest", "resumable", "source_of", "trigger_of"]

_REQUESTS = (ROTATE_ANNOTATION, MOVE_STAGE_ANNOTATION, RESTORE_ANNOTATION, REINITIALIZE_ANNOTATION)


class Revisions(Protocol):
    """resourceVersions as the operator's filtered watches list them now (``None``: not listed)."""

    def synced(self) -> bool:
        """True once every watch has listed what exists."""
        ...

    def store(self, key: RecordKey) -> str | None: ...

    def projected(self, namespace: str, name: str) -> str | None: ...

    def source(self, namespace: str, name: str) -> str | None: ...


def requests_digest(annotations: Mapping[str, str]) -> str:
    """A short digest of the request annotations (rotate, move-stage, restore, reinitialize)."""
    joined = "\0".join(annotations.get(a, "") for a in _REQUESTS)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def trigger_of(resource: ManagedSecretResource) -> tuple[str, int | None, str]:
    """What, in a ManagedSecret event, can ask for work: its identity, its spec generation, its labels and
    annotations (the requests, and any "touch" a user makes to have it reconciled). The operator never writes
    these, so its own writes (status, finalizer) keep the trigger as it was."""
    meta = [*sorted(resource.annotations.items()), ("", ""), *sorted(resource.labels.items())]
    digest = hashlib.sha256(json.dumps(meta).encode()).hexdigest()[:16]
    return (resource.uid, resource.generation, digest)


def source_of(raw_spec: Mapping[str, Any]) -> str | None:
    ref = (raw_spec.get("valueFrom") or {}).get("secretRef") or {}
    name = ref.get("name")
    return str(name) if name else None


class Watched:
    """The per-object memory described above; thread-safe."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._triggers: dict[RecordKey, tuple[str, int | None, str]] = {}
        self._projected: dict[RecordKey, str] = {}
        self._sources: dict[tuple[str, str], set[str]] = {}
        self._source_of: dict[RecordKey, str] = {}

    def __len__(self) -> int:
        return len(self._triggers)

    def seen(self, key: RecordKey) -> bool:
        return key in self._triggers

    def is_echo(self, resource: ManagedSecretResource) -> bool:
        return self._triggers.get(resource.key) == trigger_of(resource)

    def handled(self, resource: ManagedSecretResource) -> None:
        with self._guard:
            self._triggers[resource.key] = trigger_of(resource)

    def unhandled(self, key: RecordKey) -> None:
        """The last event's work failed: the next event with the same trigger runs it again."""
        with self._guard:
            self._triggers.pop(key, None)

    def projected(self, key: RecordKey, resource_version: str | None) -> None:
        with self._guard:
            if resource_version:
                self._projected[key] = resource_version
            else:
                self._projected.pop(key, None)

    def projected_echo(self, key: RecordKey, resource_version: str | None) -> bool:
        """True when the projected Secret is at the revision our last reconcile left it at."""
        return resource_version is not None and self._projected.get(key) == resource_version

    def takes_value_from(self, key: RecordKey, source: str | None) -> None:
        with self._guard:
            old = self._source_of.pop(key, None)
            if old is not None:
                owners = self._sources.get((key.namespace, old))
                if owners is not None:
                    owners.discard(key.name)
                    if not owners:
                        del self._sources[(key.namespace, old)]
            if source:
                self._source_of[key] = source
                self._sources.setdefault((key.namespace, source), set()).add(key.name)

    def owners_of_source(self, namespace: str, name: str) -> list[str]:
        with self._guard:
            return sorted(self._sources.get((namespace, name), ()))

    def forget(self, key: RecordKey) -> None:
        self.takes_value_from(key, None)
        with self._guard:
            self._triggers.pop(key, None)
            self._projected.pop(key, None)


@dataclass(frozen=True)
class Resume:
    """A ManagedSecret resumed from its status: when it wants to run next (``None``: only on a change)."""

    next_rotation: dt.datetime | None


def resumable(
    resource: ManagedSecretResource,
    revisions: Revisions | None,
    now: dt.datetime,
    admission_policy_installed: bool | None,
) -> Resume | None:
    """``Resume`` if ``resource`` can be resumed from its status alone, ``None`` if it needs a reconcile."""
    if revisions is None or not revisions.synced() or resource.deleting:
        return None
    status = resource.status
    recorded = status.get("revisions") or {}
    if status.get("observedGeneration") != resource.generation or not recorded:
        return None
    if status.get("retry") or status.get("rotation") or status.get("pendingVersion"):
        return None
    if resource.old_condition("Ready").get("status") != "True":
        return None
    policy = resource.old_condition("AdmissionPolicy").get("status")
    if (admission_policy_installed is False) != (policy == "False"):
        return None
    if recorded.get("requests") != requests_digest(resource.annotations):
        return None
    target = str(status.get("projectedSecret") or "")
    if not target or not recorded.get("store") or not recorded.get("projected"):
        return None
    if revisions.store(resource.key) != recorded["store"]:
        return None
    if revisions.projected(resource.namespace, target) != recorded["projected"]:
        return None
    source = source_of(resource.raw_spec)
    if source is not None and revisions.source(resource.namespace, source) != recorded.get("source"):
        return None
    due = status.get("nextRotationTime")
    if not due:
        return Resume(None)
    try:
        when = dt.datetime.fromisoformat(str(due).replace("Z", "+00:00"))
    except ValueError:
        return None
    return Resume(when) if when > now else None
