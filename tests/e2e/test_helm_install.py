"""The chart installed on a cluster with a kubelet (kind, via hack/e2e-kind.sh): the operator runs as its pod."""

from __future__ import annotations

import json
import os

import pytest
from kubernetes import client

from support import kube
from support.operator import GROUP, PLURAL, VERSION, managed_secret, wait_ready

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("MSO_E2E"), reason="needs a cluster with a kubelet: hack/e2e-kind.sh"),
]


def operator_pod(admin: client.ApiClient, namespace: str, fullname: str) -> client.V1Pod:
    deployment = client.AppsV1Api(admin).read_namespaced_deployment(fullname, namespace)
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    pods = [
        p
        for p in client.CoreV1Api(admin).list_namespaced_pod(namespace, label_selector=selector).items
        if p.metadata.deletion_timestamp is None
    ]
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_get(admin: client.ApiClient, namespace: str, pod: str, port: int, path: str) -> str:
    """GET through the API server's pod proxy (no port-forward needed)."""
    return str(
        client.CoreV1Api(admin).connect_get_namespaced_pod_proxy_with_path(f"{pod}:{port}", namespace, path)
    )


def service_get(admin: client.ApiClient, namespace: str, service: str, port: str, path: str) -> str:
    """GET through the API server's service proxy."""
    api = client.CoreV1Api(admin)
    return str(api.connect_get_namespaced_service_proxy_with_path(f"{service}:{port}", namespace, path))


def test_operator_pod_runs_restricted(
    e2e_admin: client.ApiClient, release_namespace: str, release_fullname: str
) -> None:
    pod = kube.eventually(
        lambda: (p := operator_pod(e2e_admin, release_namespace, release_fullname)) and ready(p) and p,
        timeout=180,
        what="the operator pod to be Ready",
    )
    assert pod.spec.security_context.run_as_user == 65532
    (status,) = pod.status.container_statuses
    assert status.restart_count == 0
    namespace = client.CoreV1Api(e2e_admin).read_namespace(release_namespace)
    assert namespace.metadata.labels.get("pod-security.kubernetes.io/enforce") == "restricted"


def test_managed_secret_is_reconciled_by_the_pod(
    e2e_admin: client.ApiClient, app_namespace: str, release_namespace: str
) -> None:
    client.CustomObjectsApi(e2e_admin).create_namespaced_custom_object(
        GROUP, VERSION, app_namespace, PLURAL, managed_secret("e2e")
    )
    obj = wait_ready(e2e_admin, app_namespace, "e2e", timeout=120)
    assert obj["status"]["currentVersion"] == "v1"
    assert client.CoreV1Api(e2e_admin).read_namespaced_secret("e2e", app_namespace).data["password"]
    keyring = client.CoreV1Api(e2e_admin).read_namespaced_secret("managed-secrets-keyring", release_namespace)
    assert keyring.type == "managedsecrets.io/keyring"


def test_health_and_metrics_endpoints(
    e2e_admin: client.ApiClient, release_namespace: str, release_fullname: str
) -> None:
    pod = operator_pod(e2e_admin, release_namespace, release_fullname)
    health = pod_get(e2e_admin, release_namespace, pod.metadata.name, 8080, "healthz")
    json.loads(health)  # Kopf answers with the (possibly empty) results of its probes
    metrics = service_get(e2e_admin, release_namespace, f"{release_fullname}-metrics", "metrics", "metrics")
    assert "# TYPE managed_secrets_rotations_total counter" in metrics
    assert "process_resident_memory_bytes" in metrics


def test_logs_are_json_lines(e2e_admin: client.ApiClient, release_namespace: str, release_fullname: str) -> None:
    pod = operator_pod(e2e_admin, release_namespace, release_fullname)
    text = client.CoreV1Api(e2e_admin).read_namespaced_pod_log(pod.metadata.name, release_namespace, tail_lines=50)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_pod_restart_resumes_without_a_new_version(
    e2e_admin: client.ApiClient, app_namespace: str, release_namespace: str, release_fullname: str
) -> None:
    objects = client.CustomObjectsApi(e2e_admin)
    objects.create_namespaced_custom_object(GROUP, VERSION, app_namespace, PLURAL, managed_secret("restart"))
    wait_ready(e2e_admin, app_namespace, "restart", timeout=120)
    before = operator_pod(e2e_admin, release_namespace, release_fullname)
    client.CoreV1Api(e2e_admin).delete_namespaced_pod(before.metadata.name, release_namespace)
    kube.eventually(
        lambda: (
            (p := operator_pod(e2e_admin, release_namespace, release_fullname)).metadata.uid != before.metadata.uid
            and ready(p)
        ),
        timeout=180,
        what="the replacement operator pod to be Ready",
    )
    obj = objects.get_namespaced_custom_object(GROUP, VERSION, app_namespace, PLURAL, "restart")
    assert obj["status"]["currentVersion"] == "v1"
    assert [v["id"] for v in obj["status"]["versions"]] == ["v1"]
