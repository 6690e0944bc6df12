"""The operator's namespace and its keyring Secret, handled as metadata only.

``rotate-kek`` annotates the keyring Secret. A Secret's ordinary API answers carry its data; asking for
``PartialObjectMetadata`` (``Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1``) makes the
API server answer with the metadata alone, so the plugin never receives a key, sealed or not.

The operator's namespace, when neither ``--operator-namespace`` nor ``MSO_NAMESPACE`` names it, is where its
replicas' member Leases are (label ``managedsecrets.io/member=true``), else where a Secret of the keyring type
is.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes.client.exceptions import ApiException

from managed_secrets.cli.connection import Connection
from managed_secrets.cli.errors import CliError
from managed_secrets.names import KEYRING_SECRET_TYPE, MEMBER_LABEL

__all__ = ["find_operator_namespace", "list_secret_metadata", "patch_secret_metadata"]

_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def _call(
    conn: Connection,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: Any = None,
    *,
    accept: str,
    content_type: str | None = None,
) -> dict[str, Any]:
    configuration = conn.api.configuration
    url = configuration.host.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
    headers = {"Accept": accept, "User-Agent": conn.api.user_agent}
    if content_type:
        headers["Content-Type"] = content_type
    token = configuration.get_api_key_with_prefix("BearerToken")  # runs a token refresh hook, if any
    if token:
        headers["Authorization"] = token
    rest: Any = conn.api.rest_client  # untyped in some client versions; the call is the same in all
    response = rest.request(method, url, headers=headers, body=body)
    data = getattr(response, "data", None)
    if data is None:
        data = response.read()
    if not 200 <= int(response.status) <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        raise error
    parsed: dict[str, Any] = json.loads(data or b"{}")
    return parsed


def patch_secret_metadata(
    conn: Connection, namespace: str, name: str, body: dict[str, Any], *, dry_run: bool = False
) -> dict[str, Any]:
    """A merge patch of a Secret's metadata; the answer holds the metadata only."""
    return _call(
        conn,
        "PATCH",
        f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}",
        {"dryRun": "All"} if dry_run else None,
        body,
        accept=_METADATA,
        content_type="application/merge-patch+json",
    )


def list_secret_metadata(conn: Connection, field_selector: str) -> list[dict[str, Any]]:
    """The metadata of the Secrets in every namespace that match the field selector."""
    listing = _call(conn, "GET", "/api/v1/secrets", {"fieldSelector": field_selector}, accept=_METADATA_LIST)
    items: list[dict[str, Any]] = listing.get("items") or []
    return items


def find_operator_namespace(conn: Connection) -> str:
    """Where the operator runs, from what it leaves in the cluster; ``CliError`` if that is not one place."""
    how = "pass --operator-namespace NAMESPACE (or set MSO_NAMESPACE)"
    namespaces: set[str] = set()
    denied: list[str] = []
    try:
        leases = conn.coordination().list_lease_for_all_namespaces(label_selector=f"{MEMBER_LABEL}=true")
        namespaces = {str(lease.metadata.namespace) for lease in leases.items if lease.metadata}
    except ApiException as e:
        if e.status not in (401, 403):
            raise
        denied.append("Leases")
    if not namespaces:
        try:
            secrets = list_secret_metadata(conn, f"type={KEYRING_SECRET_TYPE}")
            namespaces = {s["metadata"]["namespace"] for s in secrets}
        except ApiException as e:
            if e.status not in (401, 403):
                raise
            denied.append("Secrets")
    if len(namespaces) == 1:
        return namespaces.pop()
    if namespaces:
        raise CliError(f"the operator runs in several namespaces ({', '.join(sorted(namespaces))}): {how}")
    looked = (
        f"cannot list {' or '.join(denied)} in all namespaces"
        if denied
        else f"no member Lease ({MEMBER_LABEL}=true) nor {KEYRING_SECRET_TYPE} Secret is visible"
    )
    raise CliError(f"cannot find the operator's namespace ({looked}): {how}")
