"""A canary value never appears where plaintext must not be, over a whole lifecycle."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes import client

from managed_secrets.names import SOURCE_LABEL
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import store_secret_name
from support import kube
from support.operator import GROUP, PLURAL, VERSION, OperatorEnvironment, managed_secret, wait_ready

pytestmark = pytest.mark.integration


def forms(value: str) -> list[str]:
    raw = value.encode()
    return [value, base64.b64encode(raw).decode(), raw.hex()]


def test_canary_never_leaks(admin: client.ApiClient, namespace: str, operator: OperatorEnvironment) -> None:
    core = client.CoreV1Api(admin)
    custom = client.CustomObjectsApi(admin)
    canaries = [f"CANARY{uuid.uuid4().hex}", f"CANARY{uuid.uuid4().hex}"]
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="source", labels={SOURCE_LABEL: "true"}),
            string_data={"token": canaries[0]},
        ),
    )
    body = managed_secret(
        "leak",
        valueFrom={"secretRef": {"name": "source"}},
        target={"includePrevious": True, "template": {"data": {"HEADER": "Bearer {{ token }}"}}},
        deletion={"recoveryWindowDays": 1},
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_ready(admin, namespace, "leak")
    # A new version, drift (edit and delete), a broken template, then deletion and restore.
    core.patch_namespaced_secret("source", namespace, {"stringData": {"token": canaries[1]}})
    kube.eventually(
        lambda: (
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "leak")["status"][
                "currentVersion"
            ]
            == "v2"
        ),
        what="v2",
    )
    core.patch_namespaced_secret("leak", namespace, {"stringData": {"token": "edited"}})
    core.delete_namespaced_secret("leak", namespace)
    kube.eventually(
        lambda: kube.status_of(lambda: core.read_namespaced_secret("leak", namespace)) == 200, what="restore"
    )
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "leak",
        {"spec": {"target": {"template": {"data": {"BAD": "{{ token | nope }}"}}}}},
    )
    kube.eventually(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "False"
            for c in custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "leak")["status"][
                "conditions"
            ]
        ),
        what="the template error",
    )
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "leak", {"spec": {"target": {"template": {"data": {"BAD": None}}}}}
    )
    wait_ready(admin, namespace, "leak")
    projected = core.read_namespaced_secret("leak", namespace)
    assert base64.b64decode(projected.data["token"]).decode() == canaries[1], "the value did reach its target"
    assert base64.b64decode(projected.data["token_PREVIOUS"]).decode() == canaries[0]
    cr = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "leak")
    store = core.read_namespaced_secret(store_secret_name(RecordKey(namespace, "leak")), operator.namespace)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "leak")
    kube.eventually(
        lambda: (
            kube.status_of(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "leak"))
            == 404
        ),
        what="deletion",
    )

    places = {
        "operator logs (DEBUG)": operator.process.logs(),
        "Events": json.dumps(
            [admin.sanitize_for_serialization(e) for e in core.list_namespaced_event(namespace).items]
        ),
        "ManagedSecret (spec, annotations, status)": json.dumps(cr),
        "projected Secret annotations and labels": json.dumps(
            [projected.metadata.annotations, projected.metadata.labels]
        ),
        "store Secret (all of it)": json.dumps(admin.sanitize_for_serialization(store)),
        "store document": base64.b64decode(store.data["record"]).decode(),
    }
    # Kopf logs handler invocations at DEBUG only: proof that the operator really ran at DEBUG.
    assert f"source Secret {namespace}/source changed" in places["operator logs (DEBUG)"]
    for where, text in places.items():
        for canary in canaries:
            for form in forms(canary):
                assert form not in text, f"canary found in {where}"


def test_canary_never_leaks_through_rotations(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Values made by a rotation webhook, through a failing and a succeeding rotation."""
    from support.https_endpoint import LOCALHOST, Call, Reply, make_authority, make_server_cert, serve, value_reply

    authority = make_authority("canary CA")
    cert = make_server_cert(authority, tmp_path_factory.mktemp("canary"), names=LOCALHOST)
    canaries: list[str] = []
    fail_set = {"on": False}

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            canaries.append(f"CANARY{uuid.uuid4().hex}")
            return value_reply({"key": canaries[-1].encode()})
        if call.document["step"] == "set" and fail_set["on"]:
            return Reply(status=500, body=json.dumps(call.document).encode())  # a webhook that echoes secrets
        return Reply()

    custom = client.CustomObjectsApi(admin)
    for endpoint in serve(cert):
        endpoint.responder = responder
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ManagedSecret",
            "metadata": {"name": "hooked"},
            "spec": {"type": "External", "external": {"url": endpoint.url, "caBundle": authority.pem}},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        wait_ready(admin, namespace, "hooked")
        fail_set["on"] = True
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "hooked",
            {"metadata": {"annotations": {"managedsecrets.io/rotate": "a"}}},
        )
        kube.eventually(
            lambda: (
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "hooked")["status"]
                .get("rotation", {})
                .get("attempts", 0)
                >= 2
            ),
            what="failed attempts",
        )
        fail_set["on"] = False
        kube.eventually(
            lambda: (
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "hooked")["status"][
                    "currentVersion"
                ]
                == "v2"
            ),
            what="v2",
        )
    core = client.CoreV1Api(admin)
    cr = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "hooked")
    projected = core.read_namespaced_secret("hooked", namespace)
    assert base64.b64decode(projected.data["key"]).decode() == canaries[-1]
    places = {
        "operator logs (DEBUG)": operator.process.logs(),
        "Events": json.dumps(
            [admin.sanitize_for_serialization(e) for e in core.list_namespaced_event(namespace).items]
        ),
        "ManagedSecret": json.dumps(cr),
        "projected Secret metadata": json.dumps(admin.sanitize_for_serialization(projected.metadata)),
    }
    assert len(canaries) == 2
    for where, text in places.items():
        for canary in canaries:
            for form in forms(canary):
                assert form not in text, f"canary found in {where}"
