"""Fixtures for the end-to-end tests that hack/e2e-kind.sh runs against a kind cluster with the chart installed.

They need a kubelet (the operator runs as the chart's pod), so they are skipped unless MSO_E2E is set; the
script sets it together with the release's namespace and name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kubernetes import client

from support import kube


@pytest.fixture(scope="session")
def e2e_admin() -> client.ApiClient:
    return kube.admin_client(os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config"))


@pytest.fixture(scope="session")
def release_namespace() -> str:
    return os.environ.get("MSO_E2E_NAMESPACE", "managed-secrets")


@pytest.fixture(scope="session")
def release_fullname() -> str:
    release = os.environ.get("MSO_E2E_RELEASE", "mso")
    chart = "managed-secrets-operator"
    return release if chart in release else f"{release}-{chart}"


@pytest.fixture
def app_namespace(e2e_admin: client.ApiClient) -> Iterator[str]:
    name = kube.create_namespace(e2e_admin, "e2e")
    yield name
    kube.delete_namespace(e2e_admin, name)
