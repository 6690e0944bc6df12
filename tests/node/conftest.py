"""Fixtures for tests that need Pods to really run: a local cluster with a node.

The session fixture starts ``hack/cluster.py up --with-node`` (control plane, containerd, CNI bridge, kubelet
``mso-node``, kube-scheduler; see the "node" section of hack/cluster.py) in a temporary directory and stops it
when the session ends. Root only (containerd, runc, CNI and iptables need it): the tests fail otherwise.
``node_operator`` runs the operator as a process with its own ServiceAccount (deploy/rbac.yaml), as in
tests/integration; ``operator_image`` is the image from ``make image``, imported into the node's containerd.
Figures the tests measure are printed in the terminal summary.
"""

from __future__ import annotations

import json
import os
import subprocess
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
from support.operator import OperatorEnvironment, install_admission_policy, install_crd

ROOT = Path(__file__).resolve().parents[2]
# A cold image build (debootstrap, wheels) takes minutes; with buildah's layer cache it is seconds.
BUILD_TIMEOUT = 900
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


@pytest.fixture(scope="module")
def node_operator(
    node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnvironment]:
    install_crd(node_cluster.api)
    install_admission_policy(node_cluster.api)
    env = OperatorEnvironment(node_cluster.api, tmp_path_factory.mktemp("node-operator"))
    env.process.start()
    yield env
    env.close()


@dataclass(frozen=True)
class OperatorImage:
    ref: str

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator_image(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> OperatorImage:
    """``make image``, pushed to an OCI archive and imported into the node's containerd (once a session)."""
    started = time.monotonic()
    try:
        built = subprocess.run(
            ["bash", str(ROOT / "hack" / "build-image.sh")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hack/build-image.sh timed out after {BUILD_TIMEOUT}s:\n{tail(str(e.stderr or ''))}")
    if built.returncode != 0:
        pytest.fail(f"hack/build-image.sh exited {built.returncode}:\n{tail(built.stderr + built.stdout)}")
    values = dict(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)
    ref, driver = values["image"], values["storage_driver"]
    FIGURES["make image (hack/build-image.sh)"] = f"{time.monotonic() - started:.1f}s ({driver} storage)"

    archive = tmp_path_factory.mktemp("operator-image") / "operator.tar"
    pushed_at = time.monotonic()
    # oci-archive:PATH:NAME keeps the image's name (index.json's org.opencontainers.image.ref.name), which is
    # what containerd names the imported image after.
    pushed = subprocess.run(
        ["buildah", "--storage-driver", driver, "push", "--quiet", ref, f"oci-archive:{archive}:{ref}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pushed.returncode == 0, f"buildah push exited {pushed.returncode}:\n{pushed.stderr}{pushed.stdout}"
    size = archive.stat().st_size / 2**20
    FIGURES["buildah push -> OCI archive"] = f"{time.monotonic() - pushed_at:.1f}s ({size:.0f} MiB)"

    imported_at = time.monotonic()
    local_cluster.import_image(node_cluster.state_dir, archive, ref)
    FIGURES["operator image import into containerd"] = f"{time.monotonic() - imported_at:.1f}s"
    archive.unlink()  # containerd has its own copy now
    return OperatorImage(ref)


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
