"""The operator end to end against the real control plane, running as its own ServiceAccount."""

from __future__ import annotations

import base64
import subprocess

import pytest
from kubernetes import client

import cluster as local_cluster
from managed_secrets.names import SOURCE_LABEL
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import store_secret_name
from support import kube
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    condition,
    create,
    get_ms,
    managed_secret,
    secret_data,
    sleep,
    wait_ready,
)

pytestmark = pytest.mark.integration


def test_create_projects_the_current_value(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(
        admin,
        namespace,
        managed_secret(
            "db", generate={"keys": [{"name": "password", "length": 24}], "static": {"username": "app"}}
        ),
    )
    obj = wait_ready(admin, namespace, "db")
    status = obj["status"]
    assert status["currentVersion"] == "v1"
    assert status["versions"][0]["id"] == "v1" and status["versions"][0]["stages"] == ["ACSCurrent"]
    data = secret_data(admin, namespace, "db")
    assert data["username"] == b"app"
    assert len(data["password"]) == 24
    # The store holds ciphertext only: the password appears nowhere in it.
    store = client.CoreV1Api(admin).read_namespaced_secret(
        store_secret_name(RecordKey(namespace, "db")), operator.namespace
    )
    document = base64.b64decode(store.data["record"])
    assert data["password"] not in document
    assert base64.b64encode(data["password"]) not in document


def objects(admin: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin)


def events_for(admin: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    items = client.CoreV1Api(admin).list_namespaced_event(namespace).items
    return [e for e in items if e.involved_object.name == name]


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    kubectl = local_cluster.build_binaries() / "kubectl"
    return subprocess.run([str(kubectl), *args], capture_output=True, text=True, timeout=120, check=False)


def test_kubectl_wait_and_printer_columns(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str
) -> None:
    create(admin, namespace, managed_secret("web"))
    waited = kubectl(
        f"--kubeconfig={kubeconfig}", "-n", namespace, "wait", "--for=condition=Ready", "msec/web", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    table = kubectl(f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "msec")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    for column in ("TYPE", "CURRENT", "READY"):
        assert column in header
    assert row.split()[:4] == ["web", "Generic", "v1", "True"] or ("v1" in row and "True" in row)


def test_edit_and_delete_of_projected_secret_are_reverted(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("app"))
    wait_ready(admin, namespace, "app")
    core = client.CoreV1Api(admin)
    original = secret_data(admin, namespace, "app")
    core.patch_namespaced_secret("app", namespace, {"data": {"password": base64.b64encode(b"tampered").decode()}})
    kube.eventually(lambda: secret_data(admin, namespace, "app") == original, what="the edit to be reverted")
    core.delete_namespaced_secret("app", namespace)
    kube.eventually(
        lambda: (
            kube.status_of(lambda: core.read_namespaced_secret("app", namespace)) == 200
            and secret_data(admin, namespace, "app") == original
        ),
        what="the deleted Secret to be restored",
    )
    reasons = {e.reason for e in events_for(admin, namespace, "app")}
    assert {"Projected", "DriftReverted"} <= reasons  # restored after the deletion; the create posts none
    assert get_ms(admin, namespace, "app")["status"]["currentVersion"] == "v1", "no new version for drift"


def test_drift_policy_report_only_reports(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("rep", target={"driftPolicy": "Report"}))
    wait_ready(admin, namespace, "rep")
    core = client.CoreV1Api(admin)
    core.patch_namespaced_secret("rep", namespace, {"data": {"password": base64.b64encode(b"mine").decode()}})
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "rep"), "Drifted").get("status") == "True",
        what="a Drifted condition",
    )
    assert secret_data(admin, namespace, "rep")["password"] == b"mine"


def test_unowned_secret_is_not_overwritten(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="taken"), string_data={"password": "theirs"})
    )
    create(admin, namespace, managed_secret("taken"))
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "taken"), "Ready").get("reason") == "SecretNotOwned",
        what="a SecretNotOwned condition",
    )
    assert secret_data(admin, namespace, "taken") == {"password": b"theirs"}
    warnings = [e for e in events_for(admin, namespace, "taken") if e.type == "Warning"]
    assert any(e.reason == "SecretNotOwned" and "adoptExisting" in e.message for e in warnings)
    # Adopting it is an explicit choice in the spec.
    objects(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "taken", {"spec": {"target": {"adoptExisting": True}}}
    )
    wait_ready(admin, namespace, "taken")
    assert secret_data(admin, namespace, "taken")["password"] != b"theirs"


def test_value_from_source_change_creates_a_version(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="src", labels={SOURCE_LABEL: "true"}), string_data={"token": "one"}
        ),
    )
    create(admin, namespace, managed_secret("tok", valueFrom={"secretRef": {"name": "src"}}))
    assert condition(wait_ready(admin, namespace, "tok"), "SourceWatched")["status"] == "True"
    assert secret_data(admin, namespace, "tok") == {"token": b"one"}
    core.patch_namespaced_secret("src", namespace, {"stringData": {"token": "two"}})
    kube.eventually(lambda: secret_data(admin, namespace, "tok") == {"token": b"two"}, what="the new source value")
    status = kube.eventually(
        lambda: (s := get_ms(admin, namespace, "tok")["status"])["currentVersion"] == "v2" and s,
        what="version v2",
    )
    assert status["previousVersion"] == "v1"
    assert {v["id"]: v["stages"] for v in status["versions"]} == {"v1": ["ACSPrevious"], "v2": ["ACSCurrent"]}


def test_an_unlabelled_source_is_named_and_its_change_taken_at_the_next_reconcile(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="plain"), string_data={"token": "one"})
    )
    create(admin, namespace, managed_secret("unl", valueFrom={"secretRef": {"name": "plain"}}))
    watched = condition(wait_ready(admin, namespace, "unl"), "SourceWatched")
    assert watched["status"] == "False" and SOURCE_LABEL in watched["message"]
    core.patch_namespaced_secret("plain", namespace, {"stringData": {"token": "two"}})
    # Not watched: the change waits for the next reconcile, here a spec change.
    sleep(3)
    assert secret_data(admin, namespace, "unl") == {"token": b"one"}
    objects(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "unl", {"spec": {"description": "touched"}}
    )
    kube.eventually(lambda: secret_data(admin, namespace, "unl") == {"token": b"two"}, what="the new source value")


def test_spec_change_reprojects_without_a_new_version(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(
        admin,
        namespace,
        managed_secret("tpl", generate={"keys": [{"name": "password"}], "static": {"username": "u"}}),
    )
    wait_ready(admin, namespace, "tpl")
    objects(admin).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "tpl",
        {"spec": {"target": {"template": {"data": {"DSN": "postgres://{{ username }}:{{ password }}@db/app"}}}}},
    )
    data = kube.eventually(
        lambda: (d := secret_data(admin, namespace, "tpl")).get("DSN") and d, what="the DSN key"
    )
    assert data["DSN"] == b"postgres://u:" + data["password"] + b"@db/app"
    assert get_ms(admin, namespace, "tpl")["status"]["currentVersion"] == "v1"


def test_delete_with_recovery_window_then_restore(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="src2", labels={SOURCE_LABEL: "true"}), string_data={"k": "a"}
        ),
    )
    create(
        admin,
        namespace,
        managed_secret("keep", valueFrom={"secretRef": {"name": "src2"}}, deletion={"recoveryWindowDays": 3}),
    )
    wait_ready(admin, namespace, "keep")
    core.patch_namespaced_secret("src2", namespace, {"stringData": {"k": "b"}})
    kube.eventually(lambda: get_ms(admin, namespace, "keep")["status"]["currentVersion"] == "v2", what="v2")
    objects(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "keep")
    kube.eventually(
        lambda: kube.status_of(lambda: get_ms(admin, namespace, "keep")) == 404, what="the ManagedSecret to go"
    )
    # The projected Secret is garbage-collected through its ownerReference by kube-controller-manager.
    kube.eventually(
        lambda: kube.status_of(lambda: core.read_namespaced_secret("keep", namespace)) == 404,
        timeout=60,
        what="garbage collection of the projected Secret",
    )
    store_name = store_secret_name(RecordKey(namespace, "keep"))
    store = core.read_namespaced_secret(store_name, operator.namespace)
    assert "attributes.managedsecrets.io/purge-after" in store.metadata.annotations

    # Created again without the restore annotation: refused, nothing overwritten.
    core.delete_namespaced_secret("src2", namespace)
    create(admin, namespace, managed_secret("keep", valueFrom={"secretRef": {"name": "src2"}}))
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "keep"), "Ready").get("reason") == "InRecoveryWindow",
        what="InRecoveryWindow",
    )
    # Restored under the value source the versions came from (another source would be refused).
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="src2"), string_data={"k": "b"})
    )
    objects(admin).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "keep",
        {"metadata": {"annotations": {"managedsecrets.io/restore": "true"}}},
    )
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "keep"), "Ready").get("status") == "True", what="Ready"
    )
    status = get_ms(admin, namespace, "keep")["status"]
    assert [v["id"] for v in status["versions"]][:2] == ["v1", "v2"]
    assert secret_data(admin, namespace, "keep")["k"] != b"b" or status["currentVersion"] == "v2"


def test_delete_with_zero_window_removes_the_store(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("gone", deletion={"recoveryWindowDays": 0}))
    wait_ready(admin, namespace, "gone")
    core = client.CoreV1Api(admin)
    store_name = store_secret_name(RecordKey(namespace, "gone"))
    assert kube.status_of(lambda: core.read_namespaced_secret(store_name, operator.namespace)) == 200
    objects(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")
    kube.eventually(
        lambda: kube.status_of(lambda: core.read_namespaced_secret(store_name, operator.namespace)) == 404,
        what="the store to be deleted",
    )


def test_deleted_while_operator_is_down(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("offline", deletion={"recoveryWindowDays": 0}))
    wait_ready(admin, namespace, "offline")
    operator.process.stop()
    try:
        objects(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "offline")
        # The finalizer holds it while the operator is away.
        assert get_ms(admin, namespace, "offline")["metadata"].get("deletionTimestamp")
    finally:
        operator.process.start()
    kube.eventually(lambda: kube.status_of(lambda: get_ms(admin, namespace, "offline")) == 404, what="deletion")
    store_name = store_secret_name(RecordKey(namespace, "offline"))
    assert (
        kube.status_of(lambda: client.CoreV1Api(admin).read_namespaced_secret(store_name, operator.namespace))
        == 404
    )


def test_recovery_window_expiry_purges_the_store(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    """The purge sweep deletes a record whose purge-after time has passed (set into the past here)."""
    create(admin, namespace, managed_secret("old"))
    wait_ready(admin, namespace, "old")
    objects(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "old")
    core = client.CoreV1Api(admin)
    store_name = store_secret_name(RecordKey(namespace, "old"))
    kube.eventually(
        lambda: (
            "attributes.managedsecrets.io/purge-after"
            in (core.read_namespaced_secret(store_name, operator.namespace).metadata.annotations or {})
        ),
        what="the store to be marked",
    )
    core.patch_namespaced_secret(
        store_name,
        operator.namespace,
        {"metadata": {"annotations": {"attributes.managedsecrets.io/purge-after": "2000-01-01T00:00:00Z"}}},
    )
    kube.eventually(
        lambda: kube.status_of(lambda: core.read_namespaced_secret(store_name, operator.namespace)) == 404,
        what="the purge sweep",
    )


def test_orphan_policy_and_target_rename(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    create(admin, namespace, managed_secret("orph", target={"creationPolicy": "Orphan", "name": "orph-a"}))
    wait_ready(admin, namespace, "orph")
    assert core.read_namespaced_secret("orph-a", namespace).metadata.owner_references is None
    # Renaming the target moves the projection; an Orphan Secret is left where it was.
    objects(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "orph", {"spec": {"target": {"name": "orph-b"}}}
    )
    kube.eventually(
        lambda: kube.status_of(lambda: core.read_namespaced_secret("orph-b", namespace)) == 200, what="b"
    )
    assert secret_data(admin, namespace, "orph-b") == secret_data(admin, namespace, "orph-a")
    objects(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "orph")
    kube.eventually(lambda: kube.status_of(lambda: get_ms(admin, namespace, "orph")) == 404, what="deletion")
    assert kube.status_of(lambda: core.read_namespaced_secret("orph-b", namespace)) == 200, (
        "Orphan keeps the Secret"
    )

    create(admin, namespace, managed_secret("owned", target={"name": "owned-a"}))
    wait_ready(admin, namespace, "owned")
    objects(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "owned", {"spec": {"target": {"name": "owned-b"}}}
    )
    kube.eventually(
        lambda: (
            kube.status_of(lambda: core.read_namespaced_secret("owned-a", namespace)) == 404
            and kube.status_of(lambda: core.read_namespaced_secret("owned-b", namespace)) == 200
        ),
        what="the projection to move from owned-a to owned-b",
    )
    assert get_ms(admin, namespace, "owned")["status"]["projectedSecret"] == "owned-b"
