"""Faults fail closed and lose nothing, against the real API server with the operator as its ServiceAccount."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from managed_secrets.domain import move_label
from managed_secrets.names import (
    MOVE_STAGE_ANNOTATION,
    REINITIALIZE_ANNOTATION,
    ROTATE_ANNOTATION,
    StageMoveRequest,
)
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import store_secret_name
from support import kube
from support.cleartext_servers import SilentServer, cleartext_server
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    OperatorProcess,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    open_store,
    secret_data,
    wait_ready,
)

pytestmark = pytest.mark.integration

OBSERVE_SECONDS = 10


def test_a_deleted_store_secret_is_reported_and_nothing_is_regenerated(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    create(admin, namespace, managed_secret("lost"))
    wait_ready(admin, namespace, "lost")
    annotate(admin, namespace, "lost", {ROTATE_ANNOTATION: "r1"})
    kube.eventually(lambda: get_ms(admin, namespace, "lost")["status"].get("currentVersion") == "v2", what="v2")
    projected = secret_data(admin, namespace, "lost")
    store_name = store_secret_name(RecordKey(namespace, "lost"))
    core.delete_namespaced_secret(store_name, operator.namespace)
    # Any event brings the object back: an unrelated annotation is enough.
    annotate(admin, namespace, "lost", {"example.com/touch": "1"})
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "lost"), "Ready").get("reason") == "StoreLost", what="StoreLost"
    )
    assert kube.status_of(lambda: core.read_namespaced_secret(store_name, operator.namespace)) == 404
    assert secret_data(admin, namespace, "lost") == projected, "the projected value is left alone"
    message = condition(get_ms(admin, namespace, "lost"), "Ready")["message"]
    assert f"{REINITIALIZE_ANNOTATION}: 'v3'" in message

    annotate(admin, namespace, "lost", {REINITIALIZE_ANNOTATION: "v3"})
    kube.eventually(
        lambda: get_ms(admin, namespace, "lost")["status"].get("currentVersion") == "v3", what="a new v3, never v1"
    )
    assert [v["id"] for v in get_ms(admin, namespace, "lost")["status"]["versions"]] == ["v3"]


def test_a_lost_keyring_stops_the_operator_instead_of_a_new_one(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, tmp_path: Path
) -> None:
    core = client.CoreV1Api(admin)
    create(admin, namespace, managed_secret("sealed"))
    wait_ready(admin, namespace, "sealed")
    keyring = core.read_namespaced_secret("managed-secrets-keyring", operator.namespace)
    core.delete_namespaced_secret("managed-secrets-keyring", operator.namespace)
    second = OperatorProcess(operator.kubeconfig, operator.namespace, tmp_path / "second.log")
    try:
        with pytest.raises(AssertionError, match="exited at start-up"):
            second.start()
        assert "the keyring was lost" in second.logs()
        assert (
            kube.status_of(lambda: core.read_namespaced_secret("managed-secrets-keyring", operator.namespace))
            == 404
        )
    finally:
        second.stop()
        keyring.metadata = client.V1ObjectMeta(name=keyring.metadata.name, namespace=operator.namespace)
        core.create_namespaced_secret(operator.namespace, keyring)


def test_hung_endpoints_do_not_stop_ordinary_managed_secrets(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    """Eight External ManagedSecrets whose endpoint accepts and never answers hold the external pool; a new
    ordinary ManagedSecret is projected while they still hang."""
    with cleartext_server(SilentServer) as silent:
        for i in range(8):
            create(
                admin,
                namespace,
                managed_secret(
                    f"hung-{i}",
                    type="External",
                    external={"url": f"https://127.0.0.1:{silent.port}/rotate", "timeoutSeconds": 120},
                ),
            )
        kube.eventually(lambda: silent.open >= 4, timeout=60, what="the hung calls to fill the external pool")
        create(admin, namespace, managed_secret("ordinary"))
        wait_ready(admin, namespace, "ordinary", timeout=60)
        assert silent.open >= 4, "the hung calls were still hanging while the ordinary one was served"
        held = [get_ms(admin, namespace, f"hung-{i}") for i in range(8)]
        assert all(condition(o, "Ready").get("status") != "True" for o in held)


def requests_by(audit_log: Path, user: str, offset: int, namespaces: set[str]) -> int:
    """Requests by ``user`` about objects in ``namespaces`` (or their store Secrets) since ``offset``."""
    count = 0
    with audit_log.open("rb") as f:
        f.seek(offset)
        for line in f:
            entry = json.loads(line)
            if entry.get("user", {}).get("username") != user or entry.get("stage") != "ResponseComplete":
                continue
            ref = entry.get("objectRef", {})
            name = str(ref.get("name", ""))
            if ref.get("namespace") in namespaces or any(name.startswith(f"msec.{ns}.") for ns in namespaces):
                count += 1
    return count


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_failing_objects_cost_few_requests_and_no_memory(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, audit_log: Path
) -> None:
    """Five ManagedSecrets whose first value keeps failing (an endpoint that refuses connections) and five that
    wait for a missing source, watched for half a minute: requests per object stay small and RSS stays flat."""
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert operator.process.proc is not None
    rss_before = rss_kib(operator.process.proc.pid)
    offset = audit_log.stat().st_size
    for i in range(5):
        create(
            admin,
            namespace,
            managed_secret(f"down-{i}", type="External", external={"url": f"https://127.0.0.1:{closed_port}/"}),
        )
        create(admin, namespace, managed_secret(f"waits-{i}", valueFrom={"secretRef": {"name": "absent"}}))
    kube.eventually(
        lambda: all(
            condition(get_ms(admin, namespace, n), "Ready").get("status") == "False"
            for n in [f"down-{i}" for i in range(5)] + [f"waits-{i}" for i in range(5)]
        ),
        what="every object to report its failure",
    )
    time.sleep(OBSERVE_SECONDS)
    requests = requests_by(audit_log, user, offset, {namespace})
    retry = get_ms(admin, namespace, "down-0")["status"]["retry"]
    rss_after = rss_kib(operator.process.proc.pid)
    print(
        f"requests for 10 failing objects in {OBSERVE_SECONDS} s: {requests}; retry {retry}; "
        f"RSS {rss_before} -> {rss_after} KiB"
    )
    assert retry["attempts"] >= 3, "the failing first values are retried"
    # Backoff (1 s base in the test operator, doubling) allows about 4 attempts in the window for each failing
    # object, each a few requests; waiting objects cost nothing after their first report. A busy loop would
    # make thousands.
    assert requests <= 10 * 20, f"{requests} requests for 10 failing objects"
    assert rss_after - rss_before < 50 * 1024, "RSS grew by more than 50 MiB"


EVERY_CHARACTER = "".join(chr(c) for c in range(33, 127))
ROTATION = "RotationFailed"

# name -> (spec, the Ready or RotationFailed reason it must report, the condition that carries it)
BAD_SPECS: dict[str, tuple[dict[str, object], str, str]] = {
    "no-policy": (
        {"generate": {"keys": [{"name": "password", "excludeCharacters": EVERY_CHARACTER}]}},
        "InvalidPolicy",
        "Ready",
    ),
    "huge-interval": (
        {"rotation": {"enabled": True, "interval": "999999999d"}},
        "InvalidSchedule",
        "RotationFailed",
    ),
    "bad-cron": ({"rotation": {"enabled": True, "schedule": "61 * * * *"}}, "InvalidSchedule", "RotationFailed"),
    "never-cron": ({"rotation": {"enabled": True, "schedule": "0 0 30 2 *"}}, "InvalidSchedule", "RotationFailed"),
    "big-template": ({"target": {"template": {"data": {"x": "{{ 'x' * 10**9 }}"}}}}, "TemplateError", "Ready"),
    "endless-template": (
        {
            "target": {
                "template": {
                    "data": {"x": "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"}
                }
            }
        },
        "TemplateError",
        "Ready",
    ),
    "tls-without-keys": ({"target": {"type": "kubernetes.io/tls"}}, "SecretRejected", "Ready"),
    "suffix-clash": (
        {
            "generate": {"keys": [{"name": "password"}], "static": {"password_old": "x"}},
            "target": {"includePrevious": True, "previousSuffix": "_old"},
        },
        "InvalidRequest",
        "Ready",
    ),
    "too-big": ({"valueFrom": {"secretRef": {"name": "big-source"}}}, "RecordTooLarge", "Ready"),
}


def test_hostile_but_valid_specs_report_and_cost_little(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, audit_log: Path
) -> None:
    """Each spec the schema admits but the operator cannot serve reports a condition; ordinary objects keep
    being served; nothing loops (requests counted in the audit log), memory stays flat, deletion completes."""
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="big-source"), data={"blob": "QUFB" * 230000})
    )
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    assert operator.process.proc is not None
    rss_before = rss_kib(operator.process.proc.pid)
    for name, (spec, _reason, _where) in BAD_SPECS.items():
        create(admin, namespace, managed_secret(name, **spec))
    bad_move = managed_secret("bad-move")
    bad_move["metadata"]["annotations"] = {"managedsecrets.io/move-stage": "{not json"}
    create(admin, namespace, bad_move)

    def reported() -> bool:
        return all(
            condition(get_ms(admin, namespace, name), where).get("reason") == reason
            for name, (_spec, reason, where) in BAD_SPECS.items()
        )

    kube.eventually(reported, timeout=90, what="every hostile spec to report its condition")
    for name in ("huge-interval", "bad-cron", "never-cron"):
        assert condition(get_ms(admin, namespace, name), "Ready")["status"] == "True", "the value is projected"
    create(admin, namespace, managed_secret("ordinary"))
    wait_ready(admin, namespace, "ordinary")

    offset = audit_log.stat().st_size
    time.sleep(OBSERVE_SECONDS)
    requests = requests_by(audit_log, user, offset, {namespace})
    warnings = [e for e in core.list_namespaced_event(namespace).items if e.involved_object.name == "bad-move"]
    rss_after = rss_kib(operator.process.proc.pid)
    print(
        f"requests for {len(BAD_SPECS) + 2} objects in {OBSERVE_SECONDS} s: {requests}; "
        f"RSS {rss_before} -> {rss_after} KiB"
    )
    assert requests <= 20, f"{requests} requests in {OBSERVE_SECONDS} s for objects that wait for a spec change"
    assert rss_after - rss_before < 100 * 1024, "RSS grew by more than 100 MiB"
    assert len([e for e in warnings if e.reason == "InvalidStageMove"]) == 1, "one Warning per distinct cause"

    objects = client.CustomObjectsApi(admin)
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "no-policy")
    kube.eventually(
        lambda: kube.status_of(lambda: get_ms(admin, namespace, "no-policy")) == 404,
        what="the deletion of a spec that does not parse to complete",
    )


def test_a_record_copied_from_another_object_is_refused(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    for name in ("mine", "theirs"):
        # No recovery window: the damaged record must not outlive the test (KEK retirement waits for every
        # stored record to be readable, and rightly so).
        create(admin, namespace, managed_secret(name, deletion={"recoveryWindowDays": 0}))
        wait_ready(admin, namespace, name)
    mine = secret_data(admin, namespace, "mine")
    theirs = core.read_namespaced_secret(store_secret_name(RecordKey(namespace, "theirs")), operator.namespace)
    core.patch_namespaced_secret(
        store_secret_name(RecordKey(namespace, "mine")), operator.namespace, {"data": theirs.data}
    )
    annotate(admin, namespace, "mine", {"example.com/touch": "1"})
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "mine"), "Ready").get("reason") == "CorruptRecord",
        what="the copied record to be refused",
    )
    assert f"belongs to {namespace}/theirs" in condition(get_ms(admin, namespace, "mine"), "Ready")["message"]
    assert secret_data(admin, namespace, "mine") == mine, "the other object's value was not projected"
    # Deleting it completes although its record is unusable.
    client.CustomObjectsApi(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mine")
    kube.eventually(lambda: kube.status_of(lambda: get_ms(admin, namespace, "mine")) == 404, what="deleted")
    assert (
        kube.status_of(
            lambda: core.read_namespaced_secret(
                store_secret_name(RecordKey(namespace, "mine")), operator.namespace
            )
        )
        == 404
    )


def test_no_label_moves_onto_a_version_that_does_not_decrypt(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("flip", deletion={"recoveryWindowDays": 0}))
    wait_ready(admin, namespace, "flip")
    annotate(admin, namespace, "flip", {ROTATE_ANNOTATION: "r1"})
    kube.eventually(lambda: get_ms(admin, namespace, "flip")["status"].get("currentVersion") == "v2", what="v2")
    vault = open_store(admin, operator.namespace)
    key = RecordKey(namespace, "flip")

    def flip_v1(record: Any) -> Any:
        v1 = record.version("v1")
        sealed = bytearray(v1.sealed)
        sealed[-1] ^= 1
        versions = tuple(replace(v, sealed=bytes(sealed)) if v.id == "v1" else v for v in record.versions)
        return replace(record, versions=versions)

    vault.update(key, flip_v1)
    annotate(
        admin, namespace, "flip", {MOVE_STAGE_ANNOTATION: StageMoveRequest("ACSCurrent", "v1", "m1").encode()}
    )

    def refused() -> bool:
        events = client.CoreV1Api(admin).list_namespaced_event(namespace).items
        return any(e.reason == "StageMoveRefused" and e.involved_object.name == "flip" for e in events)

    kube.eventually(refused, what="the rollback onto the damaged version to be refused")
    status = get_ms(admin, namespace, "flip")["status"]
    assert (
        status["currentVersion"] == "v2"
        and condition(get_ms(admin, namespace, "flip"), "Ready")["status"] == "True"
    )


def test_a_hand_placed_pending_label_is_reported_without_a_loop(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, audit_log: Path
) -> None:
    create(admin, namespace, managed_secret("stuck", rotation={"enabled": True, "interval": "3s"}))
    wait_ready(admin, namespace, "stuck")
    vault = open_store(admin, operator.namespace)
    vault.update(RecordKey(namespace, "stuck"), lambda r: move_label(r, "ACSPending", "v1") if r else r)
    annotate(admin, namespace, "stuck", {ROTATE_ANNOTATION: "r1"})
    kube.eventually(
        lambda: (
            condition(get_ms(admin, namespace, "stuck"), "RotationFailed").get("reason")
            == "PendingWithoutRotation"
        ),
        what="the stuck label to be reported",
    )
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    offset = audit_log.stat().st_size
    time.sleep(OBSERVE_SECONDS)  # the interval is due again and again in this window
    requests = requests_by(audit_log, user, offset, {namespace})
    assert requests <= 5, f"{requests} requests in {OBSERVE_SECONDS} s for an object that cannot rotate"


def test_a_purge_frees_the_object_that_waited_for_it(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    core = client.CoreV1Api(admin)
    objects = client.CustomObjectsApi(admin)
    create(admin, namespace, managed_secret("again"))
    wait_ready(admin, namespace, "again")
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")
    kube.eventually(lambda: kube.status_of(lambda: get_ms(admin, namespace, "again")) == 404, what="deleted")
    create(admin, namespace, managed_secret("again"))
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "again"), "Ready").get("reason") == "InRecoveryWindow",
        what="InRecoveryWindow",
    )
    core.patch_namespaced_secret(
        store_secret_name(RecordKey(namespace, "again")),
        operator.namespace,
        {"metadata": {"annotations": {"attributes.managedsecrets.io/purge-after": "2000-01-01T00:00:00Z"}}},
    )
    wait_ready(admin, namespace, "again", timeout=60)
