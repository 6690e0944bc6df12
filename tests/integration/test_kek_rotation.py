"""KEK rotation through the operator: a new primary key, every version re-wrapped, the old key retired."""

from __future__ import annotations

import base64
import time

import pytest
from kubernetes import client

from managed_secrets.crypto import LocalKeyring, key_id_of
from managed_secrets.store import RecordKey
from support import kube
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    annotate,
    condition,
    get_ms,
    managed_secret,
    open_store,
    wait_ready,
)

pytestmark = pytest.mark.integration


def keyring(admin: client.ApiClient, operator: OperatorEnvironment) -> LocalKeyring:
    secret = client.CoreV1Api(admin).read_namespaced_secret("managed-secrets-keyring", operator.namespace)
    return LocalKeyring.from_bytes(base64.b64decode(secret.data["keyring.json"]))


def test_kek_rotation_rewraps_everything_and_retires_the_old_key(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    custom = client.CustomObjectsApi(admin)
    for name in ("k-one", "k-two"):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, managed_secret(name))
        wait_ready(admin, namespace, name)
    annotate(admin, namespace, "k-two", {"managedsecrets.io/rotate": "r1"})
    kube.eventually(lambda: get_ms(admin, namespace, "k-two")["status"]["currentVersion"] == "v2", what="v2")
    before = keyring(admin, operator)
    old_primary = before.primary_key_id()
    projected_before = {
        n: client.CoreV1Api(admin).read_namespaced_secret(n, namespace).data for n in ("k-one", "k-two")
    }

    client.CoreV1Api(admin).patch_namespaced_secret(
        "managed-secrets-keyring",
        operator.namespace,
        {"metadata": {"annotations": {"managedsecrets.io/rotate-kek": "kek-1"}}},
    )

    def rotated() -> LocalKeyring | None:
        ring = keyring(admin, operator)
        return ring if ring.primary_key_id() != old_primary and old_primary not in ring.key_ids() else None

    after = kube.eventually(rotated, timeout=60, what="a new primary KEK and the old one retired")
    vault = open_store(admin, operator.namespace)
    for name in ("k-one", "k-two"):
        record = vault.load(RecordKey(namespace, name)).record
        assert {key_id_of(v.sealed) for v in record.versions} == {after.primary_key_id()}
        for version in record.versions:
            vault.open(record, version)  # every version still opens
    # Re-wrapping does not change any value: the projected Secrets are untouched.
    for name, data in projected_before.items():
        assert client.CoreV1Api(admin).read_namespaced_secret(name, namespace).data == data
    # New versions are sealed under the new key.
    annotate(admin, namespace, "k-one", {"managedsecrets.io/rotate": "r2"})
    kube.eventually(lambda: get_ms(admin, namespace, "k-one")["status"]["currentVersion"] == "v2", what="v2")
    record = open_store(admin, operator.namespace).load(RecordKey(namespace, "k-one")).record
    assert key_id_of(record.current.sealed) == after.primary_key_id()


def test_encryption_key_pins_a_secret_and_unknown_keys_are_reported(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    custom = client.CustomObjectsApi(admin)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("unknown-key", encryptionKey="k999")
    )
    failed = kube.eventually(
        lambda: (
            (o := get_ms(admin, namespace, "unknown-key")) and condition(o, "Ready").get("status") == "False" and o
        ),
        what="Ready=False for an unknown key",
    )
    assert "'k999'" in condition(failed, "Ready")["message"]

    pinned_key = keyring(admin, operator).primary_key_id()
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("pinned", encryptionKey=pinned_key)
    )
    wait_ready(admin, namespace, "pinned")
    client.CoreV1Api(admin).patch_namespaced_secret(
        "managed-secrets-keyring",
        operator.namespace,
        {"metadata": {"annotations": {"managedsecrets.io/rotate-kek": "kek-pin"}}},
    )
    kube.eventually(lambda: keyring(admin, operator).primary_key_id() != pinned_key, what="a new primary")
    annotate(admin, namespace, "pinned", {"managedsecrets.io/rotate": "r1"})
    kube.eventually(lambda: get_ms(admin, namespace, "pinned")["status"]["currentVersion"] == "v2", what="v2")
    time.sleep(3)  # a background sweep has run
    ring = keyring(admin, operator)
    assert pinned_key in ring.key_ids(), "a pinned key is never retired"
    record = open_store(admin, operator.namespace).load(RecordKey(namespace, "pinned")).record
    assert {key_id_of(v.sealed) for v in record.versions} == {pinned_key}
