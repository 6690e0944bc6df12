"""The replicas' member Leases (coordination.k8s.io/v1) in the operator's namespace.

One Lease per replica, named after it and labelled ``managedsecrets.io/member=true``: ``holderIdentity`` is the
replica, ``renewTime`` moves with every renewal, and the annotation ``managedsecrets.io/shards`` names the
shards it holds. Only its replica writes a Lease (the leader also deletes Leases long expired), always with the
resourceVersion it last saw.

In a pod (the chart passes ``POD_NAME`` and ``POD_UID`` from the downward API) the Lease is owned by that Pod,
so Kubernetes' garbage collector deletes it with the pod: after ``helm uninstall`` or a rolling update, even
though the Role that lets a replica delete its own Lease may be gone before the pod stops.
"""

from __future__ import annotations

import datetime as dt
import re

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.cluster.base import LeaseRecord
from managed_secrets.names import MEMBER_LABEL, SHARD_COUNT_ANNOTATION, SHARDS_ANNOTATION

__all__ = ["LeaseRecord", "MemberLeases", "lease_name"]

STANDBY_ANNOTATION = "managedsecrets.io/standby"  # starting: give it no shard of ManagedSecrets yet
_TIMEOUT = (3, 5)  # well below a renewal period: a hung request never holds the renewal loop for long


def lease_name(prefix: str, identity: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{prefix}-{identity}".lower()).strip("-.")
    return name[:253]


class MemberLeases:
    def __init__(self, api: client.ApiClient, namespace: str, pod: tuple[str, str] | None = None) -> None:
        """``pod``: the name and uid of the Pod this replica runs in, which then owns its Lease."""
        self._api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self._owners = (
            [
                client.V1OwnerReference(
                    api_version="v1", kind="Pod", name=pod[0], uid=pod[1], block_owner_deletion=False
                )
            ]
            if pod is not None
            else None
        )

    def list(self) -> list[LeaseRecord]:
        leases = self._api.list_namespaced_lease(
            self.namespace, label_selector=f"{MEMBER_LABEL}=true", _request_timeout=_TIMEOUT
        )
        return [_record(lease) for lease in leases.items or []]

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
        """Creates (``revision`` ``None``) or renews our Lease; returns its new resourceVersion.

        ``ApiException`` 409 when it changed meanwhile (it was deleted as expired, or another process runs under
        the same identity): the caller reads again."""
        now = dt.datetime.now(dt.UTC)
        annotations = {SHARDS_ANNOTATION: held, SHARD_COUNT_ANNOTATION: str(shard_count)}
        if standby:
            annotations[STANDBY_ANNOTATION] = "true"
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=self.namespace,
                labels={MEMBER_LABEL: "true", "app.kubernetes.io/name": "managed-secrets-operator"},
                annotations=annotations,
                resource_version=revision,
                owner_references=self._owners,
            ),
            spec=client.V1LeaseSpec(
                holder_identity=identity,
                lease_duration_seconds=lease_seconds,
                renew_time=now,
                acquire_time=now if revision is None else None,
            ),
        )
        if revision is None:
            written = self._api.create_namespaced_lease(self.namespace, body, _request_timeout=_TIMEOUT)
        else:
            written = self._api.replace_namespaced_lease(name, self.namespace, body, _request_timeout=_TIMEOUT)
        assert written.metadata is not None
        return str(written.metadata.resource_version)

    def delete(self, name: str, revision: str | None = None) -> None:
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=revision))
        try:
            self._api.delete_namespaced_lease(name, self.namespace, body=options, _request_timeout=_TIMEOUT)
        except ApiException as e:
            if e.status not in (404, 409):
                raise


def _record(lease: client.V1Lease) -> LeaseRecord:
    meta = lease.metadata
    assert meta is not None
    annotations = meta.annotations or {}
    count = annotations.get(SHARD_COUNT_ANNOTATION, "")
    return LeaseRecord(
        name=str(meta.name),
        identity=str((lease.spec.holder_identity if lease.spec else None) or meta.name),
        revision=str(meta.resource_version),
        held=annotations.get(SHARDS_ANNOTATION, ""),
        standby=annotations.get(STANDBY_ANNOTATION) == "true",
        shard_count=int(count) if count.isdigit() else None,
    )
