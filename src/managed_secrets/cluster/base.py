"""The Cluster port: everything the reconcile service asks of Kubernetes, in plain values.

Why a port: the service decides what to write; only the adapter (``cluster.kubernetes``) knows the client
library, its models and its exceptions. Failures arrive as ``KubernetesApiError`` subclasses that have been
translated once, so the service never sees (and never quotes) an API response body. ``InMemoryCluster``
(``cluster.memory``) is a second, complete implementation that records every write and Event, so the whole
reconcile path runs in unit tests without a server.

Reads of objects that may be absent return ``None`` instead of raising: "not there" is a normal answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Cluster", "EventRef", "LeaseRecord", "Leases", "LiveSecret", "OwnerRef", "SecretObject", "WorkloadRef"]


@dataclass(frozen=True)
class OwnerRef:
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = False


@dataclass(frozen=True)
class SecretObject:
    """A Secret to write: the fields the operator manages (data as bytes, never base64 here)."""

    namespace: str
    name: str
    type: str = "Opaque"
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_references: tuple[OwnerRef, ...] = ()


@dataclass(frozen=True)
class LiveSecret(SecretObject):
    """A Secret as read, with the revision a guarded write must carry."""

    resource_version: str = ""


@dataclass(frozen=True)
class WorkloadRef:
    """A Deployment, StatefulSet or DaemonSet in a namespace."""

    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class EventRef:
    """The object an Event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""


class Cluster(Protocol):
    """The Kubernetes calls of the reconcile service. Errors: ``KubernetesApiError`` and its subclasses."""

    def get_managed_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The ManagedSecret object (as a plain dict), or ``None`` if it does not exist."""
        ...

    def read_secret(self, namespace: str, name: str) -> LiveSecret | None:
        """The Secret, or ``None`` if it does not exist."""
        ...

    def create_secret(self, secret: SecretObject) -> str:
        """Creates the Secret and returns its resourceVersion; ``ApiConflict`` if one of that name exists."""
        ...

    def replace_secret(self, secret: SecretObject, resource_version: str) -> str:
        """Replaces the Secret if it is still at ``resource_version`` and returns the new resourceVersion;
        ``ApiConflict`` otherwise."""
        ...

    def delete_secret(self, namespace: str, name: str, resource_version: str | None = None) -> bool:
        """Deletes the Secret (only at ``resource_version`` if given); ``False`` if it was not there."""
        ...

    def set_finalizers(
        self,
        namespace: str,
        name: str,
        finalizers: list[str],
        resource_version: str,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        """Sets the ManagedSecret's finalizers (and merges ``labels``) if it is still at ``resource_version``;
        ``ApiConflict`` otherwise; ``False`` if it is gone."""
        ...

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patches the ManagedSecret's status (``None`` values remove fields); absent object: no-op."""
        ...

    def post_event(self, about: EventRef, type_: str, reason: str, message: str) -> None:
        """Posts an Event (best effort: a failure is logged by the adapter, never raised)."""
        ...

    def read_workload_template_annotations(self, ref: WorkloadRef) -> Mapping[str, str] | None:
        """The pod template annotations of the workload, or ``None`` if it does not exist."""
        ...

    def patch_workload_template_annotations(self, ref: WorkloadRef, annotations: Mapping[str, str]) -> None:
        """Merge-patches the pod template annotations (which rolls the workload's pods once)."""
        ...


@dataclass(frozen=True)
class LeaseRecord:
    """A replica's member Lease as read (see ``cluster.leases``)."""

    name: str
    identity: str
    revision: str
    held: str
    standby: bool
    shard_count: int | None


class Leases(Protocol):
    """The replicas' member Leases: ``cluster.leases`` on Kubernetes, an in-memory one in unit tests."""

    def list(self) -> list[LeaseRecord]: ...

    def write(
        self,
        name: str,
        identity: str,
        *,
        held: str,
        shard_count: int,
        lease_seconds: int,
        revision: str | None,
        standby: bool = False,
    ) -> str:
        """Creates (``revision`` ``None``) or renews the Lease ``name``; returns its new resourceVersion."""
        ...

    def delete(self, name: str, revision: str | None = None) -> None: ...
