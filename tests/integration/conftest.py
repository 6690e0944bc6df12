"""Fixtures for tests that run against a real control plane.

The session fixture reuses the cluster that KUBECONFIG points at if it answers; otherwise it starts one with
``hack/cluster.py`` in a temporary directory and stops it when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

import cluster as local_cluster
from support import kube
from support.databases import MariaDB, Postgres, Server, database_servers
from support.https_endpoint import LOCALHOST, Endpoint, make_authority, make_server_cert, serve
from support.operator import GROUP, PLURAL, VERSION, OperatorEnvironment, install_admission_policy, install_crd


def _reachable(kubeconfig: str) -> bool:
    try:
        api = kube.admin_client(kubeconfig)
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    given = os.environ.get("KUBECONFIG")
    if given and _reachable(given):
        yield given
        return
    if os.environ.get("MSO_REQUIRE_EXISTING_CLUSTER"):
        pytest.fail(f"KUBECONFIG={given!r} does not answer and MSO_REQUIRE_EXISTING_CLUSTER is set")
    state = Path(tempfile.mkdtemp(prefix="mso-test-cluster-"))
    started = local_cluster.up_with_retries(state)
    try:
        yield str(started.kubeconfig)
    finally:
        local_cluster.down(state)


@pytest.fixture(scope="session")
def admin(kubeconfig: str) -> client.ApiClient:
    return kube.admin_client(kubeconfig)


@pytest.fixture
def namespace(admin: client.ApiClient) -> Iterator[str]:
    name = kube.create_namespace(admin)
    yield name
    kube.delete_namespace(admin, name)


@pytest.fixture(scope="session")
def audit_log(kubeconfig: str) -> Path:
    """The API server's audit log (write requests, metadata only) of a cluster started by hack/cluster.py."""
    path = Path(kubeconfig).parent / "logs" / "audit.log"
    if not path.exists():
        pytest.skip("this cluster was not started by hack/cluster.py, so it has no audit log to count writes")
    return path


@pytest.fixture(scope="session")
def operator(admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorEnvironment]:
    """The operator process, running as the ServiceAccount of deploy/rbac.yaml in its own namespace."""
    install_crd(admin)
    install_admission_policy(admin)
    env = OperatorEnvironment(admin, tmp_path_factory.mktemp("operator"))
    env.process.start()
    yield env

    # Let the operator finish the deletions the last tests started (finalizers), so a cluster that is reused
    # for the next session holds no half-deleted ManagedSecrets.
    def settled() -> bool:
        items = client.CustomObjectsApi(admin).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        return not any(i["metadata"].get("deletionTimestamp") for i in items)

    with contextlib.suppress(AssertionError):
        kube.eventually(settled, timeout=60, interval=0.5, what="pending ManagedSecret deletions")
    env.close()


@pytest.fixture(scope="session")
def database_env() -> Iterator[dict[str, str]]:
    """Connection details of both servers: from the environment, or from servers started here."""
    with database_servers() as env:
        yield env


@pytest.fixture(scope="session")
def servers(database_env: dict[str, str]) -> dict[str, Server]:
    return {"postgresql": Postgres(database_env), "mysql": MariaDB(database_env)}


@pytest.fixture
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, str]]:
    """A real HTTPS rotation endpoint on loopback, and the PEM of the CA that signed its certificate."""
    authority = make_authority("webhook test CA")
    cert = make_server_cert(authority, tmp_path_factory.mktemp("webhook"), names=LOCALHOST)
    yield from ((endpoint, authority.pem) for endpoint in serve(cert))
