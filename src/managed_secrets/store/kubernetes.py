"""The default VersionStore: the Kubernetes API itself, no extra infrastructure.

One ``Secret`` of type ``managedsecrets.io/versions`` per ManagedSecret, in the operator's own namespace,
holds the sealed record. Every write is a PUT carrying the ``resourceVersion`` that was read, so the API
server turns concurrent writers into a 409 Conflict for all but one. The Secret has no owner reference: it
must outlive its ManagedSecret during the deletion recovery window.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.errors import CorruptRecord, RecordNotFound, StoreError, WriteConflict

__all__ = ["STORE_SECRET_TYPE", "KubernetesStore", "store_secret_name"]

from managed_secrets.names import (
    ATTRIBUTE_PREFIX,
    SOURCE_ANNOTATION,
    SOURCE_NAMESPACE_LABEL,
    STORE_LABEL,
    STORE_SECRET_TYPE,
)
from managed_secrets.store.base import RecordKey, StoredRecord, VersionStore

DOCUMENT_KEY = "record"
_MAX_NAME = 253


def store_secret_name(key: RecordKey) -> str:
    """A stable, valid Secret name for a record key.

    Namespace names cannot contain dots, so ``msec.<namespace>.<name>`` is unambiguous. Names that would be
    longer than 253 characters are cut and given a hash suffix, which keeps them unique.
    """
    name = f"msec.{key.namespace}.{key.name}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(str(key).encode()).hexdigest()[:16]
    return f"{name[: _MAX_NAME - 17].rstrip('.-')}.{digest}"


class KubernetesStore(VersionStore):
    """Records as Secrets in ``namespace``, written with optimistic concurrency on ``resourceVersion``."""

    # A Secret's data may hold 1 MiB; the rest is left for the attributes and the object's metadata.
    max_document_bytes = 1024 * 1024 - 32 * 1024

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace

    def read(self, key: RecordKey) -> StoredRecord:
        try:
            secret = self._core.read_namespaced_secret(store_secret_name(key), self._namespace)
        except ApiException as e:
            if e.status == 404:
                raise RecordNotFound(f"no stored record for {key}") from None
            raise _store_error("get", key, e) from None
        return self._to_record(secret, key)

    def write(
        self,
        key: RecordKey,
        document: bytes,
        *,
        expected_revision: str | None,
        attributes: Mapping[str, str] | None = None,
    ) -> StoredRecord:
        name = store_secret_name(key)
        if attributes is None and expected_revision is not None:
            # Keep the stored attributes; the PUT below is guarded by the same revision, so they are current.
            try:
                current = self.read(key)
            except RecordNotFound:
                raise WriteConflict(f"record for {key} was deleted since it was read") from None
            if current.revision != expected_revision:
                raise WriteConflict(f"record for {key} changed since it was read")
            attributes = current.attributes
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=self._namespace,
                resource_version=expected_revision,
                labels={
                    STORE_LABEL: "true",
                    SOURCE_NAMESPACE_LABEL: key.namespace,
                    "app.kubernetes.io/managed-by": "managed-secrets-operator",
                },
                annotations={
                    SOURCE_ANNOTATION: str(key),
                    **{ATTRIBUTE_PREFIX + k: v for k, v in (attributes or {}).items()},
                },
            ),
            type=STORE_SECRET_TYPE,
            data={DOCUMENT_KEY: base64.b64encode(document).decode("ascii")},
        )
        try:
            if expected_revision is None:
                created = self._core.create_namespaced_secret(self._namespace, body)
            else:
                created = self._core.replace_namespaced_secret(name, self._namespace, body)
        except ApiException as e:
            if e.status == 409:
                what = "already exists" if expected_revision is None else "changed since it was read"
                raise WriteConflict(f"record for {key} {what}") from None
            if e.status == 404:
                raise WriteConflict(f"record for {key} was deleted since it was read") from None
            raise _store_error("create" if expected_revision is None else "update", key, e) from None
        return self._to_record(created, key)

    def list(self) -> list[StoredRecord]:
        records: list[StoredRecord] = []
        cont: str | None = None
        while True:
            try:
                page = self._core.list_namespaced_secret(
                    self._namespace, label_selector=f"{STORE_LABEL}=true", limit=500, _continue=cont
                )
            except ApiException as e:
                raise _store_error("list", None, e) from None
            for secret in page.items:
                meta = secret.metadata or client.V1ObjectMeta()
                source = (meta.annotations or {}).get(SOURCE_ANNOTATION, "")
                namespace, _, name = source.partition("/")
                if secret.type != STORE_SECRET_TYPE or not namespace or not name:
                    continue
                records.append(self._to_record(secret, RecordKey(namespace, name)))
            cont = page.metadata._continue if page.metadata else None
            if not cont:
                break
        return sorted(records, key=lambda r: r.key)

    def is_empty(self) -> bool:
        try:
            page = self._core.list_namespaced_secret(
                self._namespace, label_selector=f"{STORE_LABEL}=true", limit=1
            )
        except ApiException as e:
            raise _store_error("list", None, e) from None
        return not page.items

    def delete(self, key: RecordKey, *, expected_revision: str | None = None) -> None:
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=expected_revision) if expected_revision else None
        )
        try:
            self._core.delete_namespaced_secret(store_secret_name(key), self._namespace, body=options)
        except ApiException as e:
            if e.status == 404:
                raise RecordNotFound(f"no stored record for {key}") from None
            if e.status == 409:
                raise WriteConflict(f"record for {key} changed since revision {expected_revision}") from None
            raise _store_error("delete", key, e) from None

    def _to_record(self, secret: Any, key: RecordKey) -> StoredRecord:
        data = secret.data or {}
        if secret.type != STORE_SECRET_TYPE or DOCUMENT_KEY not in data:
            raise CorruptRecord(f"store Secret {secret.metadata.name} for {key} is not a version store")
        try:
            document = base64.b64decode(data[DOCUMENT_KEY], validate=True)
        except ValueError:
            raise CorruptRecord(f"store Secret {secret.metadata.name} for {key} is not valid base64") from None
        annotations = secret.metadata.annotations or {}
        attributes = {
            k[len(ATTRIBUTE_PREFIX) :]: v for k, v in annotations.items() if k.startswith(ATTRIBUTE_PREFIX)
        }
        return StoredRecord(
            key=key, document=document, revision=str(secret.metadata.resource_version), attributes=attributes
        )


def _store_error(op: str, key: RecordKey | None, e: ApiException) -> StoreError:
    where = f" for {key}" if key else ""
    if e.status == 403:
        return StoreError(
            f"store {op}{where} forbidden: the operator's ServiceAccount lacks permission on Secrets "
            f"in its namespace (needs '{op}'; {e.reason})"
        )
    return StoreError(f"store {op}{where} failed: HTTP {e.status} {e.reason}")
