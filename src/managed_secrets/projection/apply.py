"""Apply a rendered Secret to the cluster: create, update, restore after drift, or refuse a foreign Secret.

Writes happen only when something differs: the live data is compared by keyed hash, and labels,
annotations, type and owner reference field by field. A replace carries the resourceVersion that was read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from managed_secrets.cluster import Cluster, LiveSecret, OwnerRef, SecretObject
from managed_secrets.errors import ApiConflict, KubernetesApiError, ManagedSecretsError
from managed_secrets.names import DATA_HASH_ANNOTATION, MANAGED_LABEL, OWNER_ANNOTATION, PROTECTED_SECRET_TYPES
from managed_secrets.projection.render import DesiredSecret, TargetSpec, data_hash

__all__ = [
    "Applied",
    "ApplyAction",
    "Owner",
    "ProjectionConflict",
    "ProjectionError",
    "ProjectionRejected",
    "apply_projection",
    "delete_projection",
]


class ProjectionError(ManagedSecretsError):
    """The projected Secret could not be written."""


class ProjectionRejected(ProjectionError):
    """The API server refused the rendered Secret as invalid (HTTP 422, e.g. a TLS type without its keys):
    retrying the same render cannot help, so the object waits for a change of its spec."""


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
class Applied:
    """What ``apply_projection`` did, and the resourceVersion the projected Secret has after it ("" if none)."""

    action: ApplyAction
    resource_version: str = ""


@dataclass(frozen=True)
class Owner:
    """The ManagedSecret that owns the projection."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @property
    def ref(self) -> OwnerRef:
        return OwnerRef(self.api_version, self.kind, self.name, self.uid, controller=True)


def _owner_refs(target: TargetSpec, owner: Owner, existing: tuple[OwnerRef, ...]) -> tuple[OwnerRef, ...]:
    others = tuple(r for r in existing if not (r.kind == owner.kind and r.name == owner.name))
    if target.creation_policy == "Owner":
        return (*others, owner.ref)
    return others


def _is_ours(secret: LiveSecret, owner: Owner) -> bool:
    return secret.annotations.get(OWNER_ANNOTATION) == f"{owner.namespace}/{owner.name}"


def _check_adoptable(live: LiveSecret, desired: DesiredSecret, where: str) -> None:
    """adoptExisting takes over a plain Secret of the same type, never one with another job."""
    other = live.annotations.get(OWNER_ANNOTATION)
    if other or live.labels.get(MANAGED_LABEL):
        raise ProjectionConflict(
            f"{where} is managed by ManagedSecret {other or '(another)'}; spec.target.adoptExisting never takes "
            "over another ManagedSecret's Secret"
        )
    if live.type in PROTECTED_SECRET_TYPES or live.type != desired.type:
        raise ProjectionConflict(
            f"{where} is of type {live.type}; spec.target.adoptExisting takes over only a Secret of the target's "
            f"type ({desired.type})"
        )


def _error(error: KubernetesApiError) -> ProjectionError:
    # The adapter's message names the verb, the Secret and the status; never the API server's body.
    if error.status == 422:
        return ProjectionRejected(f"{error}: the rendered Secret is invalid for its type (check spec.target.type)")
    return ProjectionError(str(error))


def apply_projection(
    cluster: Cluster,
    desired: DesiredSecret,
    target: TargetSpec,
    owner: Owner,
    hash_key: bytes,
    *,
    previously_projected: bool,
    assume_absent: bool = False,
) -> Applied:
    """Makes the live Secret match ``desired``; returns what was done.

    ``assume_absent``: the caller knows of no such Secret (a first projection the watch does not list), so
    it is created without a read; if one exists after all, the create is refused and it is read then."""
    try:
        return _apply(
            cluster,
            desired,
            target,
            owner,
            hash_key=hash_key,
            previously_projected=previously_projected,
            assume_absent=assume_absent,
        )
    except KubernetesApiError as e:
        raise _error(e) from None


def _apply(
    cluster: Cluster,
    desired: DesiredSecret,
    target: TargetSpec,
    owner: Owner,
    *,
    hash_key: bytes,
    previously_projected: bool,
    assume_absent: bool,
) -> Applied:
    body = SecretObject(
        namespace=desired.namespace,
        name=desired.name,
        type=desired.type,
        data=dict(desired.data),
        labels=dict(desired.labels),
        annotations=dict(desired.annotations),
        owner_references=_owner_refs(target, owner, ()),
    )
    live = None if assume_absent else cluster.read_secret(desired.namespace, desired.name)
    if live is None:
        if previously_projected and target.drift_policy == "Report":
            return Applied(ApplyAction.MISSING_REPORTED)
        try:
            created = cluster.create_secret(body)
        except ApiConflict:
            live = cluster.read_secret(desired.namespace, desired.name) if assume_absent else None
            if live is None:
                raise
        else:
            return Applied(ApplyAction.RESTORED if previously_projected else ApplyAction.CREATED, created)

    if not _is_ours(live, owner):
        where = f"Secret {desired.namespace}/{desired.name}"
        if not target.adopt_existing:
            raise ProjectionConflict(
                f"{where} already exists and is not managed by this ManagedSecret; "
                "set spec.target.adoptExisting: true to take it over, or choose another spec.target.name"
            )
        _check_adoptable(live, desired, where)

    live_hash = data_hash(live.data, hash_key)
    # Drift: the data no longer matches the hash we annotated it with, i.e. someone else edited it.
    drifted = _is_ours(live, owner) and live_hash != live.annotations.get(DATA_HASH_ANNOTATION)
    refs = _owner_refs(target, owner, live.owner_references)
    metadata_matches = (
        live.type == desired.type
        and all(live.labels.get(k) == v for k, v in desired.labels.items())
        and all(live.annotations.get(k) == v for k, v in desired.annotations.items())
        and sorted(live.owner_references, key=repr) == sorted(refs, key=repr)
    )
    if live_hash == desired.data_hash and metadata_matches:
        return Applied(ApplyAction.UNCHANGED, live.resource_version)
    if drifted and target.drift_policy == "Report":
        return Applied(ApplyAction.DRIFT_REPORTED, live.resource_version)

    if live.type != desired.type:
        # A Secret's type is immutable: replace the object.
        cluster.delete_secret(desired.namespace, desired.name, live.resource_version)
        created = cluster.create_secret(body)
        return Applied(ApplyAction.DRIFT_REVERTED if drifted else ApplyAction.UPDATED, created)

    keep_labels = {k: v for k, v in live.labels.items() if k not in desired.labels}
    keep_annotations = {k: v for k, v in live.annotations.items() if k not in desired.annotations}
    updated = replace(
        body,
        labels={**keep_labels, **desired.labels},
        annotations={**keep_annotations, **desired.annotations},
        owner_references=refs,
    )
    replaced = cluster.replace_secret(updated, live.resource_version)
    return Applied(ApplyAction.DRIFT_REVERTED if drifted else ApplyAction.UPDATED, replaced)


def delete_projection(cluster: Cluster, namespace: str, name: str, owner: Owner) -> bool:
    """Deletes a Secret this ManagedSecret projected earlier (e.g. after spec.target.name changed)."""
    try:
        live = cluster.read_secret(namespace, name)
        if live is None or not _is_ours(live, owner):
            return False
        cluster.delete_secret(namespace, name, live.resource_version)
    except KubernetesApiError as e:
        raise _error(e) from None
    return True
