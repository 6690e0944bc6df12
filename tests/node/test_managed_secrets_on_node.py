"""ManagedSecrets consumed by real Pods on the local node: the projected Secret mounted as a volume follows a
rotation, and a Deployment in ``restartTargets`` rolls exactly once per rotation and its new Pod reads the new
value. The operator runs as a process with its own ServiceAccount (deploy/rbac.yaml), as in tests/integration
(``node_operator`` in conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from kubernetes import client

from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    create,
    managed_secret,
    secret_data,
    wait_ready,
)

from .conftest import FIGURES, NodeCluster, wait_for
from .test_node import PROPAGATION_LIMIT, _logs, _phase, _pod

pytestmark = pytest.mark.node


def plugin(node_cluster: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl msecret ARGS`` as an admin of the node cluster."""
    return subprocess.run(
        [sys.executable, "-m", "managed_secrets.cli.main", "--kubeconfig", node_cluster.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ},
    )


def test_a_pod_reads_the_projected_value_and_sees_the_rotated_one(
    node_cluster: NodeCluster, node_namespace: str, node_operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(node_cluster.api)
    ns = node_namespace
    create(node_cluster.api, ns, managed_secret("app-db"))
    wait_ready(node_cluster.api, ns, "app-db")
    first = secret_data(node_cluster.api, ns, "app-db")["password"].decode()
    core.create_namespaced_pod(
        ns,
        _pod(
            "reader",
            node_cluster.busybox_image,
            'while true; do echo "password=$(cat /etc/app-db/password)"; sleep 1; done',
            volume_mounts=[client.V1VolumeMount(name="creds", mount_path="/etc/app-db", read_only=True)],
            volumes=[client.V1Volume(name="creds", secret=client.V1SecretVolumeSource(secret_name="app-db"))],
        ),
    )
    wait_for(lambda: _phase(core, ns, "reader") == "Running", 90, "the reader pod to run")
    wait_for(lambda: f"password={first}" in _logs(core, ns, "reader", 5), 30, "ACSCurrent (v1) in the pod")

    rotated = plugin(node_cluster, "rotate", "app-db", "-n", ns, "--wait", "--timeout", "2m")
    assert rotated.returncode == 0, rotated.stderr
    done = time.monotonic()
    second = secret_data(node_cluster.api, ns, "app-db")["password"].decode()
    assert second != first
    wait_for(
        lambda: f"password={second}" in _logs(core, ns, "reader", 3),
        PROPAGATION_LIMIT,
        "the rotated value (v2) to reach the mounted file",
        interval=0.25,
    )
    FIGURES["rotation done -> new value in the mounted file"] = f"{time.monotonic() - done:.1f}s"
    wait_for(lambda: _logs(core, ns, "reader", 1).strip() == f"password={second}", 5, "only the new value")


def test_a_restart_target_rolls_once_and_its_new_pod_reads_the_new_value(
    node_cluster: NodeCluster, node_namespace: str, node_operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(node_cluster.api)
    apps = client.AppsV1Api(node_cluster.api)
    ns = node_namespace
    labels = {"app": "web"}
    container = client.V1Container(
        name="web",
        image=node_cluster.busybox_image,
        image_pull_policy="Never",
        # An environment variable is read once, at start: only a new Pod sees a new value.
        command=["sh", "-c", 'while true; do echo "password=$PASSWORD"; sleep 1; done'],
        env=[
            client.V1EnvVar(
                name="PASSWORD",
                value_from=client.V1EnvVarSource(
                    secret_key_ref=client.V1SecretKeySelector(name="web-db", key="password")
                ),
            )
        ],
    )
    create(
        node_cluster.api,
        ns,
        managed_secret("web-db", restartTargets=[{"kind": "Deployment", "name": "web"}]),
    )
    wait_ready(node_cluster.api, ns, "web-db")
    first = secret_data(node_cluster.api, ns, "web-db")["password"].decode()
    apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(termination_grace_period_seconds=1, containers=[container]),
                ),
            ),
        ),
    )

    def pods() -> list[client.V1Pod]:
        return [
            p
            for p in core.list_namespaced_pod(ns, label_selector="app=web").items
            if p.metadata.deletion_timestamp is None
        ]

    def running_with(value: str) -> client.V1Pod | None:
        for pod in pods():
            if pod.status.phase == "Running" and f"password={value}" in _logs(core, ns, pod.metadata.name, 3):
                return pod
        return None

    old = wait_for(lambda: running_with(first), 120, "the Deployment's pod to read v1")
    replica_sets = len(apps.list_namespaced_replica_set(ns, label_selector="app=web").items)

    rotated = plugin(node_cluster, "rotate", "web-db", "-n", ns, "--wait", "--timeout", "2m")
    assert rotated.returncode == 0, rotated.stderr
    done = time.monotonic()
    second = secret_data(node_cluster.api, ns, "web-db")["password"].decode()
    assert second != first
    new = wait_for(lambda: running_with(second), 120, "a new pod reading v2")
    FIGURES["rotation done -> restarted pod reads the new value"] = f"{time.monotonic() - done:.1f}s"
    assert new.metadata.name != old.metadata.name
    wait_for(lambda: [p.metadata.name for p in pods()] == [new.metadata.name], 60, "the old pod to be gone")
    # Exactly one rollout: one new ReplicaSet, and none more while the operator keeps running.
    assert len(apps.list_namespaced_replica_set(ns, label_selector="app=web").items) == replica_sets + 1
    # A later pass of the operator over the same version rolls nothing: change the spec (not the value) and
    # wait until the operator has observed that generation, then count again.
    objects = client.CustomObjectsApi(node_cluster.api)
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "web-db", {"spec": {"description": "after the rollout"}}
    )
    generation = patched["metadata"]["generation"]
    wait_for(
        lambda: (
            (objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "web-db").get("status") or {}).get(
                "observedGeneration"
            )
            == generation
        ),
        60,
        "the operator to observe the spec change",
    )
    assert len(apps.list_namespaced_replica_set(ns, label_selector="app=web").items) == replica_sets + 1
    template = apps.read_namespaced_deployment("web", ns).spec.template.metadata.annotations or {}
    assert any("web-db" in v for v in template.values()), template
