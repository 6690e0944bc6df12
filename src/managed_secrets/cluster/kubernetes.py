"""The Cluster port over the official ``kubernetes`` client: the only place the service's calls live.

Every ``ApiException`` is translated here, once, into a ``KubernetesApiError`` subclass whose message names
the verb, the object and the status (never the response body, which can quote Secret data).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.cluster.base import EventRef, LiveSecret, OwnerRef, SecretObject, WorkloadRef
from managed_secrets.errors import ApiConflict, ApiForbidden, ApiNotFound, KubernetesApiError
from managed_secrets.names import API_GROUP, API_VERSION, PLURAL

__all__ = ["KubernetesCluster", "admission_policy_bound", "translate"]

log = logging.getLogger(__name__)
COMPONENT = "managed-secrets-operator"
T = TypeVar("T")

_BY_STATUS: dict[int, type[KubernetesApiError]] = {403: ApiForbidden, 404: ApiNotFound, 409: ApiConflict}
_WORKLOAD_PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


def translate(error: ApiException, verb: str, what: str, resource: str = "") -> KubernetesApiError:
    """The one ApiException -> KubernetesApiError mapping."""
    status = int(error.status or 0)
    cls = _BY_STATUS.get(status, KubernetesApiError)
    return cls(verb, what, status, str(error.reason or ""), resource)


def _call(fn: Callable[[], T], verb: str, what: str, resource: str) -> T:
    try:
        return fn()
    except ApiException as e:
        raise translate(e, verb, what, resource) from None


def _call_or_none(fn: Callable[[], T], verb: str, what: str, resource: str) -> T | None:
    try:
        return fn()
    except ApiException as e:
        if e.status == 404:
            return None
        raise translate(e, verb, what, resource) from None


def _owner(ref: Any) -> OwnerRef:
    return OwnerRef(ref.api_version, ref.kind, ref.name, ref.uid, bool(ref.controller))


def _live(secret: Any) -> LiveSecret:
    meta = secret.metadata or client.V1ObjectMeta()
    return LiveSecret(
        namespace=str(meta.namespace),
        name=str(meta.name),
        type=secret.type or "Opaque",
        data={k: base64.b64decode(v) for k, v in (secret.data or {}).items()},
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        owner_references=tuple(_owner(r) for r in meta.owner_references or ()),
        resource_version=str(meta.resource_version or ""),
    )


def _revision(secret: Any) -> str:
    return str(secret.metadata.resource_version) if secret.metadata is not None else ""


def _body(secret: SecretObject, resource_version: str | None = None) -> client.V1Secret:
    refs = [
        client.V1OwnerReference(
            api_version=r.api_version, kind=r.kind, name=r.name, uid=r.uid, controller=r.controller
        )
        for r in secret.owner_references
    ]
    return client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=secret.name,
            namespace=secret.namespace,
            labels=dict(secret.labels),
            annotations=dict(secret.annotations),
            owner_references=refs or None,
            resource_version=resource_version,
        ),
        type=secret.type,
        data={k: base64.b64encode(v).decode("ascii") for k, v in secret.data.items()},
    )


class KubernetesCluster:
    """``Cluster`` backed by an ``ApiClient`` (the operator's ServiceAccount in production)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    def get_managed_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = _call_or_none(  # type: ignore[assignment]
            lambda: self._custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name),
            "get",
            f"ManagedSecret {namespace}/{name}",
            "managedsecrets",
        )
        return found

    def read_secret(self, namespace: str, name: str) -> LiveSecret | None:
        found = _call_or_none(
            lambda: self._core.read_namespaced_secret(name, namespace),
            "get",
            f"Secret {namespace}/{name}",
            "Secrets",
        )
        return _live(found) if found is not None else None

    def create_secret(self, secret: SecretObject) -> str:
        created = _call(
            lambda: self._core.create_namespaced_secret(secret.namespace, _body(secret)),
            "create",
            f"Secret {secret.namespace}/{secret.name}",
            "Secrets",
        )
        return _revision(created)

    def replace_secret(self, secret: SecretObject, resource_version: str) -> str:
        replaced = _call(
            lambda: self._core.replace_namespaced_secret(
                secret.name, secret.namespace, _body(secret, resource_version)
            ),
            "update",
            f"Secret {secret.namespace}/{secret.name}",
            "Secrets",
        )
        return _revision(replaced)

    def delete_secret(self, namespace: str, name: str, resource_version: str | None = None) -> bool:
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version) if resource_version else None
        )
        done = _call_or_none(
            lambda: self._core.delete_namespaced_secret(name, namespace, body=options),
            "delete",
            f"Secret {namespace}/{name}",
            "Secrets",
        )
        return done is not None

    def set_finalizers(
        self,
        namespace: str,
        name: str,
        finalizers: list[str],
        resource_version: str,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> bool:
        # A merge patch carrying the resourceVersion: the API server refuses it (409) if anyone changed the
        # object since, so another controller's finalizer is never dropped.
        meta: dict[str, Any] = {"finalizers": list(finalizers), "resourceVersion": resource_version}
        if labels:
            meta["labels"] = dict(labels)
        body = {"metadata": meta}
        done = _call_or_none(
            lambda: self._custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, body
            ),
            "patch",
            f"ManagedSecret {namespace}/{name}",
            "managedsecrets",
        )
        return done is not None

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        _call_or_none(
            lambda: self._custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": dict(status)}
            ),
            "patch",
            f"the status of ManagedSecret {namespace}/{name}",
            "managedsecrets/status",
        )

    def post_event(self, about: EventRef, type_: str, reason: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{about.name}.{uuid.uuid4().hex[:12]}", namespace=about.namespace),
            involved_object=client.V1ObjectReference(
                api_version=about.api_version,
                kind=about.kind,
                name=about.name,
                namespace=about.namespace,
                uid=about.uid or None,
                resource_version=about.resource_version or None,
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self._core.create_namespaced_event(about.namespace, event)
        except ApiException as e:
            # Events are best effort; a missing permission is worth saying once per failure.
            log.warning("could not post a %s Event %s: HTTP %s %s", type_, reason, e.status, e.reason)

    def _workload_calls(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        if kind == "Deployment":
            return self._apps.read_namespaced_deployment, self._apps.patch_namespaced_deployment
        if kind == "StatefulSet":
            return self._apps.read_namespaced_stateful_set, self._apps.patch_namespaced_stateful_set
        if kind == "DaemonSet":
            return self._apps.read_namespaced_daemon_set, self._apps.patch_namespaced_daemon_set
        raise ValueError(f"unsupported workload kind {kind!r}")

    def read_workload_template_annotations(self, ref: WorkloadRef) -> Mapping[str, str] | None:
        read, _ = self._workload_calls(ref.kind)
        obj = _call_or_none(
            lambda: read(ref.name, ref.namespace),
            "get",
            f"{ref.kind} {ref.name}",
            f"{_WORKLOAD_PLURALS[ref.kind]} (apps)",
        )
        if obj is None:
            return None
        return dict(obj.spec.template.metadata.annotations or {}) if obj.spec.template.metadata else {}

    def patch_workload_template_annotations(self, ref: WorkloadRef, annotations: Mapping[str, str]) -> None:
        _, patch = self._workload_calls(ref.kind)
        body = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
        _call(
            lambda: patch(ref.name, ref.namespace, body),
            "patch",
            f"{ref.kind} {ref.name}",
            f"{_WORKLOAD_PLURALS[ref.kind]} (apps)",
        )


def admission_policy_bound(api: client.ApiClient, binding: str) -> bool | None:
    """Whether the ValidatingAdmissionPolicyBinding ``binding`` exists; ``None`` if the operator may not tell."""
    try:
        client.AdmissionregistrationV1Api(api).read_validating_admission_policy_binding(binding)
    except ApiException as e:
        if e.status == 404:
            return False
        log.warning("cannot tell whether the admission policy is installed: HTTP %s %s", e.status, e.reason)
        return None
    return True
