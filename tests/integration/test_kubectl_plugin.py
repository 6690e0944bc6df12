"""`kubectl msecret` as users run it: through kubectl's plugin mechanism, against the running operator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from support import kube
from support.operator import GROUP, PLURAL, VERSION, OperatorEnvironment, get_ms, managed_secret, wait_ready

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def kubectl_bin() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-controlplane.sh")], check=True, capture_output=True, text=True
    ).stdout
    return out.strip().splitlines()[-1] + "/kubectl"


def msecret(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    # kubectl finds plugins on PATH: kubectl-msecret lives beside the Python that runs the tests.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "KUBECONFIG": kubeconfig}
    return subprocess.run(
        [kubectl_bin(), "msecret", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_plugin_rotate_rollback_versions_status(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str
) -> None:
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("cli")
    )
    wait_ready(admin, namespace, "cli")
    rotated = msecret(kubeconfig, "rotate", "cli", "-n", namespace)
    assert rotated.returncode == 0, rotated.stderr
    assert "rotation requested" in rotated.stdout
    kube.eventually(lambda: get_ms(admin, namespace, "cli")["status"]["currentVersion"] == "v2", what="v2")

    versions = msecret(kubeconfig, "versions", "cli", "-n", namespace)
    assert versions.returncode == 0, versions.stderr
    lines = versions.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "STAGES", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["v1", "ACSPrevious"], ["v2", "ACSCurrent"]]

    rolled = msecret(kubeconfig, "rollback", "cli", "-n", namespace)
    assert rolled.returncode == 0, rolled.stderr
    kube.eventually(
        lambda: get_ms(admin, namespace, "cli")["status"]["currentVersion"] == "v1", what="rollback to v1"
    )
    status = get_ms(admin, namespace, "cli")["status"]
    assert status["previousVersion"] == "v2"

    refused = msecret(kubeconfig, "label", "cli", "ACSCurrent", "--to", "v9", "-n", namespace)
    assert refused.returncode == 0
    kube.eventually(
        lambda: any(
            e.reason == "StageMoveRefused" and "v9" in e.message
            for e in client.CoreV1Api(admin).list_namespaced_event(namespace).items
        ),
        what="the refusal Event",
    )
    assert get_ms(admin, namespace, "cli")["status"]["currentVersion"] == "v1", "a bad move changes nothing"

    shown = msecret(kubeconfig, "status", "cli", "-n", namespace)
    assert shown.returncode == 0 and "Ready=True" in shown.stdout
    missing = msecret(kubeconfig, "rotate", "nope", "-n", namespace)
    assert missing.returncode == 1 and "404" in missing.stderr
