"""SSHKey and External (webhook) ManagedSecrets through the running operator."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from kubernetes import client

from support import kube
from support.https_endpoint import (
    Call,
    Endpoint,
    Reply,
    value_reply,
)
from support.operator import (
    OperatorEnvironment,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    wait_ready,
)

pytestmark = pytest.mark.integration


def data(admin: client.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    secret = client.CoreV1Api(admin).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def test_ssh_key_is_projected_and_rotated(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(
        admin,
        namespace,
        managed_secret(
            "deploy-key", type="SSHKey", sshKey={"comment": "deploy@ci"}, target={"type": "kubernetes.io/ssh-auth"}
        ),
    )
    obj = wait_ready(admin, namespace, "deploy-key")
    secret = client.CoreV1Api(admin).read_namespaced_secret("deploy-key", namespace)
    assert secret.type == "kubernetes.io/ssh-auth"
    first = data(admin, namespace, "deploy-key")
    private = load_ssh_private_key(first["ssh-privatekey"], password=None)
    public_line = obj["status"]["publicKey"]
    assert public_line.startswith("ssh-ed25519 ") and public_line.endswith("deploy@ci")
    assert load_ssh_public_key(public_line.encode()).public_bytes_raw() == private.public_key().public_bytes_raw()  # type: ignore[attr-defined]
    assert "PRIVATE" not in str(obj)
    annotate(admin, namespace, "deploy-key", {"managedsecrets.io/rotate": "new-key"})
    kube.eventually(lambda: get_ms(admin, namespace, "deploy-key")["status"]["currentVersion"] == "v2", what="v2")
    kube.eventually(
        lambda: get_ms(admin, namespace, "deploy-key")["status"].get("publicKey") not in (None, public_line),
        what="the new public key in status",
    )
    assert data(admin, namespace, "deploy-key")["ssh-privatekey"] != first["ssh-privatekey"]


def test_external_rotation_fails_safely_then_resumes(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, webhook: tuple[Endpoint, str]
) -> None:
    endpoint, ca = webhook
    counter = {"n": 0}
    broken = {"set": False}

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            counter["n"] += 1
            return value_reply({"key": f"key-{counter['n']}".encode()})
        if call.document["step"] == "set" and broken["set"]:
            return Reply(status=503)
        return Reply()

    endpoint.responder = responder
    client.CoreV1Api(admin).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="hook-creds"), string_data={"token": "t0ken"})
    )
    create(
        admin,
        namespace,
        managed_secret(
            "api-key",
            type="External",
            external={
                "url": endpoint.url,
                "caBundle": ca,
                "timeoutSeconds": 5,
                "credentialsSecretRef": {"name": "hook-creds"},
            },
        ),
    )
    wait_ready(admin, namespace, "api-key")
    assert data(admin, namespace, "api-key") == {"key": b"key-1"}
    assert [c.document["step"] for c in endpoint.calls] == ["create", "set", "test"]
    assert all(c.headers.get("Authorization") == "Bearer t0ken" for c in endpoint.calls)

    broken["set"] = True
    annotate(admin, namespace, "api-key", {"managedsecrets.io/rotate": "r1"})
    failed = kube.eventually(
        lambda: (
            (o := get_ms(admin, namespace, "api-key"))
            and condition(o, "RotationFailed").get("status") == "True"
            and o
        ),
        what="RotationFailed",
    )
    assert condition(failed, "RotationFailed")["reason"] == "WebhookRejected"
    assert "503" in condition(failed, "RotationFailed")["message"]
    assert failed["status"]["currentVersion"] == "v1", "ACSCurrent untouched"
    assert failed["status"]["pendingVersion"] == "v2"
    assert failed["status"]["rotation"]["step"] == "set" and failed["status"]["rotation"]["attempts"] >= 1
    assert data(admin, namespace, "api-key") == {"key": b"key-1"}
    kube.eventually(
        lambda: get_ms(admin, namespace, "api-key")["status"]["rotation"]["attempts"] >= 2,
        what="a retry with backoff",
    )

    broken["set"] = False
    kube.eventually(
        lambda: get_ms(admin, namespace, "api-key")["status"]["currentVersion"] == "v2", what="recovery"
    )
    kube.eventually(
        lambda: get_ms(admin, namespace, "api-key")["status"].get("rotation") is None, what="the rotation cleared"
    )
    status = get_ms(admin, namespace, "api-key")["status"]
    assert [v["id"] for v in status["versions"]] == ["v1", "v2"], "the same pending version finished; no orphan"
    assert status.get("pendingVersion") is None
    assert data(admin, namespace, "api-key") == {"key": b"key-2"}
    assert counter["n"] == 2, "create ran once per version"
    assert condition(get_ms(admin, namespace, "api-key"), "RotationFailed")["status"] == "False"
    v2_calls = [c for c in endpoint.calls if c.document["versionId"] == "v2"]
    assert {c.document["step"] for c in v2_calls} == {"create", "set", "test", "finish"}
