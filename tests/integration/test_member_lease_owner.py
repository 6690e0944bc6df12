"""A replica's member Lease is owned by its Pod, so the garbage collector removes it with the pod.

Against the real control plane (kube-controller-manager runs the garbage collector): a Pod object (it stays
Pending, there is no node here, which is all the test needs), the Lease written by ``MemberLeases`` for that
pod, then the Pod deleted. Without a pod (an operator run as a process) the Lease has no owner and stays.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from managed_secrets.cluster.leases import MemberLeases
from managed_secrets.operator.config import OperatorConfig
from support import kube

pytestmark = pytest.mark.integration


def test_the_member_lease_of_a_pod_goes_with_the_pod(admin: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin)
    pod = core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="operator-0"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="operator", image="not-pulled:none")]),
        ),
    )
    config = OperatorConfig.from_env({"POD_NAME": pod.metadata.name, "POD_UID": pod.metadata.uid})
    assert config.pod == ("operator-0", pod.metadata.uid) and config.identity == "operator-0"
    leases = MemberLeases(admin, namespace, config.pod)
    leases.write("member-operator-0", config.identity, held="1", shard_count=4, lease_seconds=15, revision=None)
    unowned = MemberLeases(admin, namespace, OperatorConfig.from_env({"POD_NAME": "process-1"}).pod)
    unowned.write("member-process-1", "process-1", held="2", shard_count=4, lease_seconds=15, revision=None)
    coordination = client.CoordinationV1Api(admin)
    owners = coordination.read_namespaced_lease("member-operator-0", namespace).metadata.owner_references
    assert [(o.kind, o.name, o.uid) for o in owners] == [("Pod", "operator-0", pod.metadata.uid)]

    core.delete_namespaced_pod("operator-0", namespace)
    kube.eventually(
        lambda: kube.status_of(lambda: coordination.read_namespaced_lease("member-operator-0", namespace)) == 404,
        timeout=60,
        what="the garbage collector to delete the Lease of the deleted pod",
    )
    lease = coordination.read_namespaced_lease("member-process-1", namespace)
    assert not lease.metadata.owner_references, "a process outside a pod writes a Lease without an owner"
