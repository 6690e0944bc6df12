"""kube-apiserver encrypts Secrets at rest through our KMS v2 plugin (hack/cluster.py starts it by default).

A Secret written through the API is read back raw from etcd: it must be a KMS v2 envelope of the provider
``softhsm`` (``k8s:enc:kms:v2:softhsm:``), naming the plugin's key, without the value in it; the API still
returns the value; and the plugin's call counts show the Encrypt that wrapped the API server's seed. A
cluster started with ``--no-kms`` (or not by hack/cluster.py) fails here: that is what this test is for.
"""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

pytestmark = pytest.mark.integration

PREFIX = b"k8s:enc:kms:v2:softhsm:"


def cluster_info(kubeconfig: str) -> dict[str, Any]:
    """cluster.json of the control plane (the state directory is the kubeconfig's directory); called in the
    test itself, so a cluster without KMS is a failed test, not an error of a fixture."""
    path = Path(kubeconfig).parent / "cluster.json"
    if not path.exists():
        pytest.fail(
            f"no {path}: this cluster was not started by hack/cluster.py, so there is no KMS plugin to prove "
            "encryption at rest against (unset KUBECONFIG to let the suite start one)"
        )
    info: dict[str, Any] = json.loads(path.read_text())
    if "kms" not in info:
        pytest.fail(
            f"{path} has no 'kms' entry: the control plane was started with --no-kms, so Secrets are stored "
            "unencrypted; start it with KMS (the default: python hack/cluster.py up) to run this test"
        )
    return info


def etcd_value(etcd_url: str, key: str) -> bytes:
    """The raw value etcd stores under ``key`` (its v3 JSON gateway), or fails if there is none."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    assert etcd_url.startswith("http://127.0.0.1:"), etcd_url
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{etcd_url}/v3/kv/range", data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - etcd on loopback
        answer = json.loads(response.read())
    kvs = answer.get("kvs") or []
    assert len(kvs) == 1, f"etcd holds no single value under {key}: {answer}"
    return base64.b64decode(kvs[0]["value"])


def test_secrets_are_encrypted_at_rest_by_the_kms_plugin(
    kubeconfig: str, admin: client.ApiClient, namespace: str
) -> None:
    info = cluster_info(kubeconfig)
    kms = info["kms"]
    core = client.CoreV1Api(admin)
    value = f"at-rest-probe-{uuid.uuid4().hex}"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="kms-probe"), string_data={"password": value}),
    )

    raw = etcd_value(info["etcd"], f"/registry/secrets/{namespace}/kms-probe")
    assert raw.startswith(PREFIX), f"stored as {raw[:40]!r}..., not a KMS v2 envelope of provider 'softhsm'"
    for form in (value.encode(), base64.b64encode(value.encode())):
        assert form not in raw
    # The envelope names the plugin's key in clear (its key id), and carries the plugin's annotation.
    assert kms["keyLabel"].encode() in raw
    assert b"key-label.kms.managedsecrets.io" in raw

    read = core.read_namespaced_secret("kms-probe", namespace)
    assert base64.b64decode(read.data["password"]).decode() == value

    stats = json.loads(Path(kms["stats"]).read_text())
    assert stats.get("Encrypt", {}).get("ok", 0) >= 1, f"the plugin counted no Encrypt call: {stats}"
    assert stats.get("Status", {}).get("ok", 0) >= 1, stats
    assert "error" not in stats.get("Encrypt", {}), stats
