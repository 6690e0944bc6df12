"""Clients for a real API server: admin, and one that authenticates as a ServiceAccount.

The ServiceAccount client gets its token from the TokenRequest API, so the API server enforces that
account's RBAC exactly as it would for the operator's pod.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

T = TypeVar("T")


def admin_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def token_for(api: client.ApiClient, namespace: str, service_account: str, seconds: int = 3600) -> str:
    """A bound token for the ServiceAccount, from the TokenRequest API."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    resp = client.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, request)
    return str(resp.status.token)


def client_with_token(admin: client.ApiClient, token: str) -> client.ApiClient:
    """A client for the same server as ``admin`` that authenticates with a bearer token only."""
    base = admin.configuration
    cfg = client.Configuration()
    cfg.host = base.host
    cfg.ssl_ca_cert = base.ssl_ca_cert
    cfg.verify_ssl = True
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def service_account_client(admin: client.ApiClient, namespace: str, name: str) -> client.ApiClient:
    """Creates the ServiceAccount if needed and returns a client that acts as it."""
    core = client.CoreV1Api(admin)
    try:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    except ApiException as e:
        if e.status != 409:
            raise
    return client_with_token(admin, token_for(admin, namespace, name))


def create_namespace(admin: client.ApiClient, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def delete_namespace(admin: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(admin).delete_namespace(name)
    except ApiException as e:
        if e.status != 404:
            raise


def eventually(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2, what: str = "") -> T:
    """Polls ``check`` until it returns something truthy; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except ApiException as e:
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last error: {last_error}")


def status_of(call: Callable[[], Any]) -> int:
    """HTTP status of an API call: 200 when it succeeds, the error status otherwise."""
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def web_deployment(name: str = "web") -> client.V1Deployment:
    """A one-replica Deployment labelled app=<name> (its pods stay Pending without a kubelet)."""
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name=name, image=f"example/{name}:1")]),
            ),
        ),
    )
