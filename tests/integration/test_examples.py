"""Every example in examples/ is accepted by the real API server as it is (server-side dry run).

examples/helm-chart/ is left out on purpose: it is a Helm chart, not manifests (its templates are not YAML until
Helm renders them); tests/integration/test_helm_example.py renders it and applies the result.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from kubernetes import client

import cluster as local_cluster
from support import kube
from support.operator import install_crd

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HELM_CHART = ROOT / "examples" / "helm-chart"


def kubectl() -> str:
    return str(local_cluster.build_binaries() / "kubectl")


def test_examples_are_valid(admin: client.ApiClient, kubeconfig: str) -> None:
    install_crd(admin)
    created_namespace = kube.status_of(lambda: client.CoreV1Api(admin).read_namespace("demo")) == 404
    if created_namespace:
        client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="demo")))
    files = sorted(f for f in (ROOT / "examples").rglob("*.yaml") if HELM_CHART not in f.parents)
    assert len(files) >= 7
    result = subprocess.run(
        [kubectl(), f"--kubeconfig={kubeconfig}", "apply", "--dry-run=server", *(f"-f={f}" for f in files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if created_namespace:
        kube.delete_namespace(admin, "demo")
    assert result.returncode == 0, result.stderr
    created = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert sum("managedsecret.managedsecrets.io/" in line for line in created) == 6
