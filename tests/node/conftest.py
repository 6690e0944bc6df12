"""Fixtures for tests that need Pods to really run: a local cluster with a node.

The session fixture starts ``hack/cluster.py up --with-node`` (control plane, containerd, CNI bridge, kubelet
``mso-node``, kube-scheduler; see the "node" section of hack/cluster.py) in a temporary directory and stops it
when the session ends. Root only (containerd, runc, CNI and iptables need it): the tests fail otherwise.
Figures the tests measure are printed in the terminal summary.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

import cluster as local_cluster
from support import kube

FIGURES: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "node: needs the local cluster's node (hack/cluster.py up --with-node)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "local node figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@dataclass(frozen=True)
class NodeCluster:
    state_dir: Path
    kubeconfig: str
    api: client.ApiClient
    busybox_image: str
    node_name: str


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    if os.geteuid() != 0:
        pytest.fail("the local node needs root (containerd, runc, CNI, iptables); run tests/node as root")
    state = Path(tempfile.mkdtemp(prefix="mso-node-"))
    try:
        started = local_cluster.up_with_retries(state, node=True)
        info = json.loads((state / "cluster.json").read_text())["node"]
        yield NodeCluster(
            state_dir=state,
            kubeconfig=str(started.kubeconfig),
            api=kube.admin_client(str(started.kubeconfig)),
            busybox_image=info["images"]["busybox"],
            node_name=info["name"],
        )
    finally:
        local_cluster.down(state)


@pytest.fixture
def node_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (Pods are rejected until it does)."""
    core = client.CoreV1Api(node_cluster.api)
    name = f"node-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: _exists(lambda: core.read_namespaced_service_account("default", name)), 30, "SA default")
    yield name
    core.delete_namespace(name, grace_period_seconds=0)


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
