"""InMemoryCluster: the Cluster port as dicts with resourceVersions, for unit tests and benchmarks.

It behaves like the API server where the service depends on it (guarded replaces, 409 on a stale
revision, create refused when the name exists, merge-patch of status), records every write and every Event
in order, and can refuse a verb on a resource (``deny``) the way RBAC would.
"""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from managed_secrets.cluster.base import EventRef, LiveSecret, SecretObject, WorkloadRef
from managed_secrets.errors import ApiConflict, ApiForbidden, KubernetesApiError

__all__ = ["InMemoryCluster", "RecordedEvent", "Write"]


@dataclass(frozen=True)
class Write:
    verb: str
    resource: str
    namespace: str
    name: str


@dataclass(frozen=True)
class RecordedEvent:
    type: str
    reason: str
    message: str
    namespace: str
    name: str


# How the Kubernetes adapter names resources in its messages, so both ports say the same.
_SHOWN = {
    "secrets": "Secrets",
    "deployments": "deployments (apps)",
    "statefulsets": "statefulsets (apps)",
    "daemonsets": "daemonsets (apps)",
}


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class InMemoryCluster:
    """A thread-safe fake API server for the objects the service touches."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._revision = itertools.count(1)
        self.secrets: dict[tuple[str, str], LiveSecret] = {}
        self.managed_secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.workloads: dict[WorkloadRef, dict[str, str]] = {}
        self.writes: list[Write] = []
        self.events: list[RecordedEvent] = []
        self.reads: list[tuple[str, str, str]] = []
        self._denied: set[tuple[str, str, str | None]] = set()

    # --- test controls ------------------------------------------------------------------------------------

    def deny(self, verb: str, resource: str, name: str | None = None) -> None:
        """From now on ``verb`` on ``resource`` (one object, or all) fails with 403, as RBAC would."""
        self._denied.add((verb, resource, name))

    def allow(self, verb: str, resource: str, name: str | None = None) -> None:
        self._denied.discard((verb, resource, name))

    def _check(self, verb: str, resource: str, what: str, name: str) -> None:
        if (verb, resource, None) in self._denied or (verb, resource, name) in self._denied:
            raise ApiForbidden(verb, what, 403, "Forbidden", _SHOWN.get(resource, resource))

    def _next(self) -> str:
        return str(next(self._revision))

    def put_managed_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Creates or replaces a ManagedSecret the way a user's apply would (generation moves on spec change)."""
        with self._lock:
            obj = copy.deepcopy(dict(body))
            meta = obj.setdefault("metadata", {})
            key = (meta["namespace"], meta["name"])
            old = self.managed_secrets.get(key)
            meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            generation = old["metadata"].get("generation", 1) if old else 1
            if old is not None and old.get("spec") != obj.get("spec"):
                generation += 1
            meta["generation"] = generation
            meta["resourceVersion"] = self._next()
            if old is not None and "status" not in obj and old.get("status"):
                obj["status"] = copy.deepcopy(old["status"])
            self.managed_secrets[key] = obj
            return copy.deepcopy(obj)

    def remove_managed_secret(self, namespace: str, name: str) -> None:
        with self._lock:
            self.managed_secrets.pop((namespace, name), None)

    def put_secret(self, secret: SecretObject) -> LiveSecret:
        """Writes a Secret as someone other than the operator would (not recorded as the operator's write)."""
        with self._lock:
            live = LiveSecret(**{**secret.__dict__, "resource_version": self._next()})
            self.secrets[(secret.namespace, secret.name)] = live
            return live

    def writes_of(self, resource: str | None = None) -> list[Write]:
        return [w for w in self.writes if resource is None or w.resource == resource]

    def event_reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    # --- the Cluster port --------------------------------------------------------------------------------

    def get_managed_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            self.reads.append(("get", "managedsecrets", name))
            self._check("get", "managedsecrets", f"ManagedSecret {namespace}/{name}", name)
            found = self.managed_secrets.get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def read_secret(self, namespace: str, name: str) -> LiveSecret | None:
        with self._lock:
            self.reads.append(("get", "secrets", name))
            self._check("get", "secrets", f"Secret {namespace}/{name}", name)
            return self.secrets.get((namespace, name))

    def create_secret(self, secret: SecretObject) -> str:
        with self._lock:
            what = f"Secret {secret.namespace}/{secret.name}"
            self._check("create", "secrets", what, secret.name)
            _validate(secret, "create", what)
            if (secret.namespace, secret.name) in self.secrets:
                raise ApiConflict("create", what, 409, "Conflict", "Secrets")
            live = self.put_secret(secret)
            self.writes.append(Write("create", "secrets", secret.namespace, secret.name))
            return live.resource_version

    def replace_secret(self, secret: SecretObject, resource_version: str) -> str:
        with self._lock:
            what = f"Secret {secret.namespace}/{secret.name}"
            self._check("update", "secrets", what, secret.name)
            live = self.secrets.get((secret.namespace, secret.name))
            if live is None:
                raise KubernetesApiError("update", what, 404, "Not Found", "Secrets")
            if live.resource_version != resource_version:
                raise ApiConflict("update", what, 409, "Conflict", "Secrets")
            _validate(secret, "update", what)
            live = self.put_secret(secret)
            self.writes.append(Write("update", "secrets", secret.namespace, secret.name))
            return live.resource_version

    def delete_secret(self, namespace: str, name: str, resource_version: str | None = None) -> bool:
        with self._lock:
            what = f"Secret {namespace}/{name}"
            self._check("delete", "secrets", what, name)
            live = self.secrets.get((namespace, name))
            if live is None:
                return False
            if resource_version is not None and live.resource_version != resource_version:
                raise ApiConflict("delete", what, 409, "Conflict", "Secrets")
            del self.secrets[(namespace, name)]
            self.writes.append(Write("delete", "secrets", namespace, name))
            return True

    def set_finalizers(
        self,
        namespace: str,
        name: str,
        finalizers: list[str],
        resource_version: str,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        with self._lock:
            what = f"ManagedSecret {namespace}/{name}"
            self._check("patch", "managedsecrets", what, name)
            obj = self.managed_secrets.get((namespace, name))
            if obj is None:
                return False
            if obj["metadata"].get("resourceVersion") != resource_version:
                raise ApiConflict("patch", what, 409, "Conflict", "managedsecrets")
            obj["metadata"]["finalizers"] = list(finalizers)
            if labels:
                obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), **labels}
            obj["metadata"]["resourceVersion"] = self._next()
            self.writes.append(Write("patch", "managedsecrets", namespace, name))
            if not finalizers and obj["metadata"].get("deletionTimestamp"):
                del self.managed_secrets[(namespace, name)]
            return True

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        with self._lock:
            self._check("patch", "managedsecrets/status", f"ManagedSecret {namespace}/{name}", name)
            obj = self.managed_secrets.get((namespace, name))
            if obj is None:
                return
            current = obj.setdefault("status", {})
            _merge(current, status)
            obj["metadata"]["resourceVersion"] = self._next()
            self.writes.append(Write("patch", "managedsecrets/status", namespace, name))

    def post_event(self, about: EventRef, type_: str, reason: str, message: str) -> None:
        with self._lock:
            self.events.append(RecordedEvent(type_, reason, message[:1024], about.namespace, about.name))
            self.writes.append(Write("create", "events", about.namespace, about.name))

    def read_workload_template_annotations(self, ref: WorkloadRef) -> Mapping[str, str] | None:
        with self._lock:
            self._check("get", ref.kind.lower() + "s", f"{ref.kind} {ref.name}", ref.name)
            found = self.workloads.get(ref)
            return dict(found) if found is not None else None

    def patch_workload_template_annotations(self, ref: WorkloadRef, annotations: Mapping[str, str]) -> None:
        with self._lock:
            self._check("patch", ref.kind.lower() + "s", f"{ref.kind} {ref.name}", ref.name)
            if ref not in self.workloads:
                raise KubernetesApiError("patch", f"{ref.kind} {ref.name}", 404, "Not Found", ref.kind)
            self.workloads[ref] = {**self.workloads[ref], **annotations}
            self.writes.append(Write("patch", ref.kind.lower() + "s", ref.namespace, ref.name))


# The keys the API server requires for some Secret types (the rest of its validation is not modelled).
_REQUIRED_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/basic-auth": (),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def _validate(secret: SecretObject, verb: str, what: str) -> None:
    missing = [k for k in _REQUIRED_KEYS.get(secret.type, ()) if k not in secret.data]
    if missing:
        raise KubernetesApiError(verb, what, 422, "Unprocessable Entity", "Secrets")


def with_data(secret: LiveSecret, data: Mapping[str, bytes]) -> SecretObject:
    """``secret`` with other data (for tests that edit a projected Secret as a user would)."""
    return replace(secret, data=dict(data))
