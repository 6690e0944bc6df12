"""`kubectl msecret` as users run it: through kubectl's plugin mechanism, against the running operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

import cluster as local_cluster
from support import kube
from support.https_endpoint import Call, Endpoint, Reply, value_reply
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    wait_ready,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def kubectl_bin() -> str:
    return str(local_cluster.build_binaries() / "kubectl")


def msecret(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    # kubectl finds plugins on PATH: kubectl-msecret lives beside the Python that runs the tests.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "KUBECONFIG": kubeconfig}
    env.pop("MSO_NAMESPACE", None)
    return subprocess.run(
        [kubectl_bin(), "msecret", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_plugin_rotate_rollback_versions_status(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str
) -> None:
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("cli")
    )
    wait_ready(admin, namespace, "cli")
    rotated = msecret(kubeconfig, "-n", namespace, "rotate", "cli")
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
    assert missing.returncode == 1
    assert missing.stderr == 'Error from server (NotFound): managedsecrets.managedsecrets.io "nope" not found\n'


def two_contexts(kubeconfig: str, namespace: str, directory: Path) -> str:
    """KUBECONFIG with a second file: contexts on the same cluster and user, one in ``namespace``."""
    original = yaml.safe_load(Path(kubeconfig).read_text())
    current = next(c for c in original["contexts"] if c["name"] == original["current-context"])["context"]
    extra = directory / "contexts.kubeconfig"
    extra.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "msecret-elsewhere",  # the first file's current-context wins, as in kubectl
                "contexts": [
                    {"name": "msecret-here", "context": {**current, "namespace": namespace}},
                    {"name": "msecret-elsewhere", "context": {**current, "namespace": "default"}},
                ],
            }
        )
    )
    return f"{kubeconfig}:{extra}"


def test_plugin_flags_in_both_positions_contexts_and_json(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str, tmp_path: Path
) -> None:
    create(admin, namespace, managed_secret("flags"))
    wait_ready(admin, namespace, "flags")
    both = two_contexts(kubeconfig, namespace, tmp_path)

    before = msecret(both, "-n", namespace, "status", "flags", "-o", "json")
    after = msecret(both, "status", "flags", "-o", "json", "--namespace", namespace)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    doc = json.loads(before.stdout)
    assert json.loads(after.stdout) == doc
    assert (doc["name"], doc["namespace"], doc["currentVersion"], doc["ready"]) == (
        "flags",
        namespace,
        "v1",
        "True",
    )
    assert "spec" not in doc and "data" not in doc, "metadata and status fields only"

    # --context picks that context's namespace: before or after the command, no -n needed.
    for args in (
        ["--context", "msecret-here", "versions", "flags"],
        ["versions", "flags", "--context=msecret-here"],
    ):
        shown = msecret(both, *args, "-o", "yaml")
        assert shown.returncode == 0, shown.stderr
        assert [v["id"] for v in yaml.safe_load(shown.stdout)["versions"]] == ["v1"]
    elsewhere = msecret(both, "status", "flags", "--context", "msecret-elsewhere")
    assert elsewhere.returncode == 1 and '"flags" not found' in elsewhere.stderr
    assert msecret(both, "status", "flags", "--context", "msecret-elsewhere", "-n", namespace).returncode == 0

    listing = msecret(both, "status", "-A", "-o", "json")
    assert listing.returncode == 0, listing.stderr
    assert {"name": "flags", "namespace": namespace} in [
        {"name": i["name"], "namespace": i["namespace"]} for i in json.loads(listing.stdout)["items"]
    ]
    named = msecret(both, "status", "-n", namespace, "-o", "name")
    assert named.stdout == "managedsecret.managedsecrets.io/flags\n"

    missing = msecret(both, "status", "--context", "nope")
    assert (missing.returncode, missing.stderr) == (1, 'error: context "nope" does not exist\n')

    dry = msecret(both, "rotate", "flags", "-n", namespace, "--dry-run=server")
    assert dry.returncode == 0 and dry.stdout.endswith("(server dry run)\n"), dry.stderr
    annotations = get_ms(admin, namespace, "flags")["metadata"].get("annotations") or {}
    assert "managedsecrets.io/rotate" not in annotations, "a server dry run persists nothing"


def test_plugin_rotate_wait_succeeds(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str
) -> None:
    create(admin, namespace, managed_secret("waited"))
    wait_ready(admin, namespace, "waited")
    done = msecret(kubeconfig, "rotate", "waited", "--wait", "--timeout", "60s", "-n", namespace)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "managedsecret/waited rotated: v2 is ACSCurrent"
    assert get_ms(admin, namespace, "waited")["status"]["currentVersion"] == "v2"
    assert "Traceback" not in done.stderr


def external(name: str, endpoint: Endpoint, ca: str, timeout: int = 5) -> dict[str, object]:
    return managed_secret(
        name, type="External", external={"url": endpoint.url, "caBundle": ca, "timeoutSeconds": timeout}
    )


def test_plugin_rotate_wait_reports_a_failed_step(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    kubeconfig: str,
    webhook: tuple[Endpoint, str],
) -> None:
    endpoint, ca = webhook
    broken = {"set": False}

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            return value_reply({"key": call.document["versionId"].encode()})
        return Reply(status=503) if call.document["step"] == "set" and broken["set"] else Reply()

    endpoint.responder = responder
    create(admin, namespace, external("hooked", endpoint, ca))
    wait_ready(admin, namespace, "hooked")
    broken["set"] = True
    failed = msecret(kubeconfig, "-n", namespace, "rotate", "hooked", "--wait", "--timeout", "60s")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "rotation requested" in failed.stdout
    last = failed.stderr.splitlines()[-1]
    assert last.startswith("error: managedsecret/hooked: rotation to v2 failed at step set (WebhookRejected): ")
    assert "Traceback" not in failed.stderr
    assert condition(get_ms(admin, namespace, "hooked"), "RotationFailed")["status"] == "True"

    broken["set"] = False  # the operator retries with backoff and finishes the same version
    kube.eventually(lambda: get_ms(admin, namespace, "hooked")["status"]["currentVersion"] == "v2", what="v2")


def test_plugin_rotate_wait_times_out_with_124(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    kubeconfig: str,
    webhook: tuple[Endpoint, str],
) -> None:
    endpoint, ca = webhook

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            hang = 20.0 if call.document["versionId"] != "v1" else 0.0  # a new version's endpoint hangs
            return Reply(delay=hang, body=value_reply({"key": b"k"}).body)
        return Reply()

    endpoint.responder = responder
    create(admin, namespace, external("slow", endpoint, ca, timeout=30))
    wait_ready(admin, namespace, "slow")
    started = time.monotonic()
    slow = msecret(kubeconfig, "rotate", "slow", "-n", namespace, "--wait", "--timeout=3s")
    took = time.monotonic() - started
    assert slow.returncode == 124, (slow.stdout, slow.stderr)
    assert slow.stderr.splitlines()[-1].startswith(
        "error: timed out waiting for the rotation of managedsecret/slow"
    )
    assert 3 <= took < 30
    annotate(admin, namespace, "slow", {"managedsecrets.io/rotate": None})


def test_plugin_completion_through_kubectl(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str, tmp_path: Path
) -> None:
    create(admin, namespace, managed_secret("complete-me"))
    # What the kubectl_complete-msecret console script runs (the package's entry point, on PATH).
    hook = tmp_path / "kubectl_complete-msecret"
    hook.write_text(
        f"#!{sys.executable}\nimport sys\nfrom managed_secrets.cli.completion import kubectl_complete\n"
        "sys.exit(kubectl_complete())\n"
    )
    hook.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "KUBECONFIG": kubeconfig,
    }

    def kubectl_complete(*words: str) -> list[str]:
        done = subprocess.run(
            [kubectl_bin(), "__complete", "msecret", *words],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return done.stdout.splitlines()

    assert kubectl_complete("rot")[:2] == [
        "rotate\trotate now",
        "rotate-kek\tadd a new primary key-encryption key and re-wrap every version",
    ]
    assert kubectl_complete("-n", namespace, "rotate", "")[0] == "complete-me"
    assert kubectl_complete("status", "-o", "")[-1] == ":4"


def test_plugin_rotate_kek_finds_the_operator_namespace(operator: OperatorEnvironment, kubeconfig: str) -> None:
    dry = msecret(kubeconfig, "rotate-kek", "--dry-run=server")
    if "several namespaces" in dry.stderr:
        pytest.skip("more than one operator's Leases in this cluster")
    assert dry.returncode == 0, dry.stderr
    assert f"in namespace {operator.namespace})" in dry.stdout and dry.stdout.endswith("(server dry run)\n")
