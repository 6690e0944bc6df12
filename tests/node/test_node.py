"""Pods really run on the local node: Secret volumes (and their updates) and in-cluster API access."""

from __future__ import annotations

import base64
import json
import time

import pytest
from kubernetes import client

from .conftest import FIGURES, NodeCluster, wait_for

pytestmark = pytest.mark.node

# The kubelet's defaults (syncFrequency 1m, configMapAndSecretChangeDetectionStrategy Watch) plus jitter and
# slack for a loaded machine: a changed Secret must reach the mounted file well within this.
PROPAGATION_LIMIT = 150


def _pod(name: str, image: str, command: str, **spec: object) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            termination_grace_period_seconds=1,
            containers=[
                client.V1Container(
                    name="main",
                    image=image,
                    # Nothing can be pulled here: the image was imported into containerd by hack/cluster.py.
                    image_pull_policy="Never",
                    command=["sh", "-c", command],
                    volume_mounts=spec.pop("volume_mounts", None),
                )
            ],
            **spec,
        ),
    )


def _phase(core: client.CoreV1Api, ns: str, name: str) -> str:
    pod = core.read_namespaced_pod(name, ns)
    waiting = [
        s.state.waiting.reason
        for s in (pod.status.container_statuses or [])
        if s.state and s.state.waiting and s.state.waiting.reason not in ("ContainerCreating", "PodInitializing")
    ]
    if waiting:
        raise AssertionError(f"pod {ns}/{name} cannot start: {waiting}")
    return str(pod.status.phase)


def _logs(core: client.CoreV1Api, ns: str, name: str, tail: int | None = None) -> str:
    # Raw: the client would otherwise turn a log that happens to be JSON into a Python repr.
    resp = core.read_namespaced_pod_log(name, ns, tail_lines=tail, _preload_content=False)
    return resp.data.decode()


def test_secret_volume_is_mounted_and_follows_updates(node_cluster: NodeCluster, node_namespace: str) -> None:
    core = client.CoreV1Api(node_cluster.api)
    ns = node_namespace
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="app"), string_data={"value": "first-value"})
    )
    core.create_namespaced_pod(
        ns,
        _pod(
            "reader",
            node_cluster.busybox_image,
            'while true; do echo "value=$(cat /secret/value)"; sleep 1; done',
            volume_mounts=[client.V1VolumeMount(name="secret", mount_path="/secret", read_only=True)],
            volumes=[client.V1Volume(name="secret", secret=client.V1SecretVolumeSource(secret_name="app"))],
        ),
    )
    started = time.monotonic()
    wait_for(lambda: _phase(core, ns, "reader") == "Running", 90, "the pod to run")
    FIGURES["pod scheduled to Running"] = f"{time.monotonic() - started:.1f}s"
    pod = core.read_namespaced_pod("reader", ns)
    assert pod.spec.node_name == node_cluster.node_name
    wait_for(lambda: "value=first-value" in _logs(core, ns, "reader", 5), 30, "the first value in the logs")

    core.patch_namespaced_secret("app", ns, {"stringData": {"value": "second-value"}})
    changed = time.monotonic()
    wait_for(
        lambda: "value=second-value" in _logs(core, ns, "reader", 3),
        PROPAGATION_LIMIT,
        "the changed Secret to reach the mounted file",
        interval=0.25,
    )
    elapsed = time.monotonic() - changed
    FIGURES["Secret update to mounted file (kubelet defaults)"] = f"{elapsed:.1f}s"
    wait_for(lambda: _logs(core, ns, "reader", 1).strip() == "value=second-value", 5, "only the new value")


def test_pod_reaches_api_server_with_in_cluster_config(node_cluster: NodeCluster, node_namespace: str) -> None:
    """KUBERNETES_SERVICE_HOST/PORT, the service-account token and CA: what client-go's in-cluster config uses."""
    core = client.CoreV1Api(node_cluster.api)
    rbac = client.RbacAuthorizationV1Api(node_cluster.api)
    ns = node_namespace
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="visible"), string_data={"token": "in-cluster-ok"})
    )
    rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-visible"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["secrets"], verbs=["get"], resource_names=["visible"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-visible"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-visible"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default", namespace=ns)],
        ),
    )
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    core.create_namespaced_pod(
        ns,
        _pod(
            "client",
            node_cluster.busybox_image,
            f'echo "host=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; '
            f'kubeget /version "/api/v1/namespaces/$(cat {sa}/namespace)/secrets/visible"',
            restart_policy="Never",
        ),
    )
    phase = wait_for(
        lambda: (p := _phase(core, ns, "client")) in ("Succeeded", "Failed") and p, 90, "the client pod to finish"
    )
    logs = _logs(core, ns, "client")
    assert phase == "Succeeded", logs
    lines = logs.splitlines()
    assert lines[0] == "host=10.0.0.1:443", logs
    version = json.loads(lines[1])
    assert version["gitVersion"] == "v1.35.4", version
    secret = json.loads(lines[2])
    assert base64.b64decode(secret["data"]["token"]).decode() == "in-cluster-ok"
