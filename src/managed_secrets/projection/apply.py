"""Apply a rendered Secret to the cluster: create, update, restore after drift, or refuse a foreign Secret.

Writes happen only when something differs: the live data is compared by keyed hash, and labels,
annotations, type and owner reference field by field. A replace carries the resourceVersion that was read.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.errors import ManagedSecretsError
from managed_secrets.projection.render import (
    DATA_HASH_ANNOTATION,
    OWNER_ANNOTATION,
    DesiredSecret,
    TargetSpec,
    data_hash,
)

__all__ = [
    "ApplyAction",
    "Owner",
    "ProjectionConflict",
    "ProjectionError",
    "apply_projection",
    "delete_projection",
]


class ProjectionError(ManagedSecretsError):
    """The projected Secret could not be written."""


class ProjectionConflict(ProjectionError):
    """A Secret of the target name exists and is not managed by this ManagedSecret."""


class ApplyAction(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DRIFT_REVERTED = "drift-reverted"
    DRIFT_REPORTED = "drift-reported"
    RESTORED = "restored"
    MISSING_REPORTED = "missing-reported"


@dataclass(frozen=True)
class Owner:
    """The ManagedSecret that owns the projection."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @property
    def ref(self) -> client.V1OwnerReference:
        return client.V1OwnerReference(
            api_version=self.api_version, kind=self.kind, name=self.name, uid=self.uid, controller=True
        )


def _decode(data: Mapping[str, Any] | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}


def _owner_refs(target: TargetSpec, owner: Owner, existing: list[Any] | None) -> list[Any]:
    others = [r for r in (existing or []) if not (r.kind == owner.kind and r.name == owner.name)]
    if target.creation_policy == "Owner":
        return [*others, owner.ref]
    return others


def _refs_equal(a: list[Any] | None, b: list[Any]) -> bool:
    def key(r: Any) -> tuple[str, str, str, str, bool]:
        return (r.api_version, r.kind, r.name, r.uid, bool(r.controller))

    return sorted(map(key, a or [])) == sorted(map(key, b))


def _is_ours(secret: Any, owner: Owner) -> bool:
    annotations = secret.metadata.annotations or {}
    return bool(annotations.get(OWNER_ANNOTATION) == f"{owner.namespace}/{owner.name}")


def apply_projection(
    api: client.ApiClient,
    desired: DesiredSecret,
    target: TargetSpec,
    owner: Owner,
    hash_key: bytes,
    *,
    previously_projected: bool,
) -> ApplyAction:
    """Makes the live Secret match ``desired``; returns what was done."""
    core = client.CoreV1Api(api)
    try:
        live = core.read_namespaced_secret(desired.name, desired.namespace)
    except ApiException as e:
        if e.status != 404:
            raise _api_error("read", desired, e) from None
        live = None

    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=desired.name,
            namespace=desired.namespace,
            labels=dict(desired.labels),
            annotations=dict(desired.annotations),
            owner_references=_owner_refs(target, owner, None) or None,
        ),
        type=desired.type,
        data={k: base64.b64encode(v).decode("ascii") for k, v in desired.data.items()},
    )
    if live is None:
        if previously_projected and target.drift_policy == "Report":
            return ApplyAction.MISSING_REPORTED
        _create(core, desired, body)
        return ApplyAction.RESTORED if previously_projected else ApplyAction.CREATED

    if not _is_ours(live, owner) and not target.adopt_existing:
        raise ProjectionConflict(
            f"Secret {desired.namespace}/{desired.name} already exists and is not managed by this ManagedSecret; "
            "set spec.target.adoptExisting: true to take it over, or choose another spec.target.name"
        )

    live_meta = live.metadata or client.V1ObjectMeta()
    live_annotations = live_meta.annotations or {}
    live_hash = data_hash(_decode(live.data), hash_key)
    # Drift: the data no longer matches the hash we annotated it with, i.e. someone else edited it.
    drifted = _is_ours(live, owner) and live_hash != live_annotations.get(DATA_HASH_ANNOTATION)
    refs = _owner_refs(target, owner, live_meta.owner_references)
    metadata_matches = (
        (live.type or "Opaque") == desired.type
        and all((live_meta.labels or {}).get(k) == v for k, v in desired.labels.items())
        and all(live_annotations.get(k) == v for k, v in desired.annotations.items())
        and _refs_equal(live_meta.owner_references, refs)
    )
    if live_hash == desired.data_hash and metadata_matches:
        return ApplyAction.UNCHANGED
    if drifted and target.drift_policy == "Report":
        return ApplyAction.DRIFT_REPORTED

    if (live.type or "Opaque") != desired.type:
        # A Secret's type is immutable: replace the object.
        _delete(core, desired.namespace, desired.name, live_meta.resource_version)
        _create(core, desired, body)
        return ApplyAction.DRIFT_REVERTED if drifted else ApplyAction.UPDATED

    keep_labels = {k: v for k, v in (live_meta.labels or {}).items() if k not in desired.labels}
    keep_annotations = {k: v for k, v in live_annotations.items() if k not in desired.annotations}
    body_meta = body.metadata or client.V1ObjectMeta()
    body_meta.labels = {**keep_labels, **desired.labels}
    body_meta.annotations = {**keep_annotations, **desired.annotations}
    body_meta.owner_references = refs or None
    body_meta.resource_version = live_meta.resource_version
    body.metadata = body_meta
    try:
        core.replace_namespaced_secret(desired.name, desired.namespace, body)
    except ApiException as e:
        raise _api_error("update", desired, e) from None
    return ApplyAction.DRIFT_REVERTED if drifted else ApplyAction.UPDATED


def delete_projection(api: client.ApiClient, namespace: str, name: str, owner: Owner) -> bool:
    """Deletes a Secret this ManagedSecret projected earlier (e.g. after spec.target.name changed)."""
    core = client.CoreV1Api(api)
    try:
        live = core.read_namespaced_secret(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    if not _is_ours(live, owner):
        return False
    _delete(core, namespace, name, (live.metadata or client.V1ObjectMeta()).resource_version)
    return True


def _create(core: client.CoreV1Api, desired: DesiredSecret, body: client.V1Secret) -> None:
    try:
        core.create_namespaced_secret(desired.namespace, body)
    except ApiException as e:
        raise _api_error("create", desired, e) from None


def _delete(core: client.CoreV1Api, namespace: str, name: str, resource_version: str | None) -> None:
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=resource_version))
    try:
        core.delete_namespaced_secret(name, namespace, body=options)
    except ApiException as e:
        if e.status != 404:
            raise ProjectionError(f"cannot delete Secret {namespace}/{name}: HTTP {e.status} {e.reason}") from None


def _api_error(op: str, desired: DesiredSecret, e: ApiException) -> ProjectionError:
    where = f"Secret {desired.namespace}/{desired.name}"
    if e.status == 403:
        return ProjectionError(f"cannot {op} {where}: the operator's ServiceAccount lacks '{op}' on Secrets")
    if e.status == 409:
        return ProjectionError(f"cannot {op} {where}: it changed meanwhile (will retry)")
    # The API server's message for an invalid Secret can quote data: report the status only.
    return ProjectionError(f"cannot {op} {where}: HTTP {e.status} {e.reason}")
