"""Rotation end to end: schedules, requests, refusals, restart targets, and crashes at every step boundary."""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from managed_secrets.store import RecordKey
from support import kube
from support.https_endpoint import Call, Endpoint, Reply, value_reply
from support.operator import (
    OperatorEnvironment,
    OperatorProcess,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    open_store,
    wait_ready,
)

pytestmark = pytest.mark.integration


def password(admin: client.ApiClient, namespace: str, name: str) -> bytes | None:
    try:
        secret = client.CoreV1Api(admin).read_namespaced_secret(name, namespace)
    except client.exceptions.ApiException:
        return None
    raw = (secret.data or {}).get("password")
    return base64.b64decode(raw) if raw else None


def current_version(admin: client.ApiClient, namespace: str, name: str) -> str | None:
    return (get_ms(admin, namespace, name).get("status") or {}).get("currentVersion")


@contextmanager
def watching(admin: client.ApiClient, namespace: str, name: str) -> Iterator[list[bytes]]:
    """Records every value the projected Secret holds while the block runs."""
    seen: list[bytes] = []
    stop = threading.Event()

    def sample() -> None:
        value = password(admin, namespace, name)
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)

    def poll() -> None:
        while not stop.is_set():
            sample()
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=5)
        # A read in flight when the block ended can have returned the value from before its last change.
        sample()


def test_immediate_rotation_is_idempotent_per_request_id(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("now"))
    wait_ready(admin, namespace, "now")
    first = password(admin, namespace, "now")
    annotate(admin, namespace, "now", {"managedsecrets.io/rotate": "req-1"})
    kube.eventually(lambda: current_version(admin, namespace, "now") == "v2", what="v2")
    kube.eventually(lambda: password(admin, namespace, "now") not in (None, first), what="the new value projected")
    status = get_ms(admin, namespace, "now")["status"]
    assert status["previousVersion"] == "v1"
    assert status["lastRotationTime"]
    assert condition(get_ms(admin, namespace, "now"), "Rotating")["status"] == "False"
    # The same request id again (e.g. a re-applied manifest) does nothing; a new id rotates again. The edit
    # is handled before the next request (Kopf serialises one object's events), so a rotation it caused
    # would show as a fourth version below.
    annotate(admin, namespace, "now", {"some-other": "edit"})
    annotate(admin, namespace, "now", {"managedsecrets.io/rotate": "req-2"})
    kube.eventually(lambda: current_version(admin, namespace, "now") == "v3", what="v3")
    versions = {v["id"]: v["stages"] for v in get_ms(admin, namespace, "now")["status"]["versions"]}
    assert versions == {"v1": [], "v2": ["ACSPrevious"], "v3": ["ACSCurrent"]}
    reasons = [e.reason for e in client.CoreV1Api(admin).list_namespaced_event(namespace).items]
    assert reasons.count("Rotated") == 2


def test_interval_schedule_fires_on_time(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    """The real scheduler thread wakes the operator on time. (Cron times, windows and catch-up after
    downtime are decided by the same code and are proven with a manual clock in tests/unit.)"""
    create(
        admin, namespace, managed_secret("every5s", rotation={"enabled": True, "interval": "5s"}, versionLimit=3)
    )
    create(admin, namespace, managed_secret("cron", rotation={"enabled": True, "schedule": "* * * * *"}))
    wait_ready(admin, namespace, "every5s")
    obj = wait_ready(admin, namespace, "cron")
    assert obj["status"]["nextRotationTime"].endswith(":00Z"), "cron times fall on whole minutes"
    kube.eventually(
        lambda: current_version(admin, namespace, "every5s") == "v4", timeout=40, what="three rotations"
    )
    vault = open_store(admin, operator.namespace)
    record = vault.load(RecordKey(namespace, "every5s")).record
    created = [v.created for v in record.versions]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(created)]
    assert all(gap >= 4.5 for gap in gaps), f"rotations came too early: {gaps}"
    assert len(record.versions) <= 3, "versionLimit prunes unlabelled versions"


def test_no_storm_after_downtime_and_no_rotation_on_restart(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    create(admin, namespace, managed_secret("hourly", rotation={"enabled": True, "interval": "1h"}))
    interval = 6
    create(admin, namespace, managed_secret("tensec", rotation={"enabled": True, "interval": f"{interval}s"}))
    hourly = wait_ready(admin, namespace, "hourly")
    wait_ready(admin, namespace, "tensec")
    operator.process.stop()
    # "tensec" becomes due twice while the operator is away. (Many missed intervals giving one rotation is
    # proven with a manual clock in tests/unit/test_reconcile.py; this is the real process across a restart.)
    time.sleep(2 * interval + 1)
    operator.process.start()
    kube.eventually(lambda: current_version(admin, namespace, "tensec") == "v2", timeout=15, what="the catch-up")
    time.sleep(interval / 2)  # less than one interval after the catch-up: nothing more may have happened
    assert current_version(admin, namespace, "tensec") == "v2", (
        "one catch-up rotation, not one per missed due time"
    )
    after = get_ms(admin, namespace, "hourly")["status"]
    assert after["currentVersion"] == "v1"
    assert after["nextRotationTime"] == hourly["status"]["nextRotationTime"], "persisted, not reset by a restart"


def test_request_while_rotation_in_flight_is_refused(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    tmp_path: Path,
    webhook: tuple[Endpoint, str],
) -> None:
    endpoint, ca = webhook
    counting_webhook(endpoint)
    create(admin, namespace, external("busy", endpoint, ca))
    wait_ready(admin, namespace, "busy")
    # Leave a rotation in flight: a process that crashes right after the create step.
    operator.process.stop()
    crashing = OperatorProcess(
        operator.kubeconfig,
        operator.namespace,
        tmp_path / "crash.log",
        env={"MSO_IDENTITY": "operator", "MSO_FAILPOINT": "after-create"},
    )
    try:
        _run_until_crash(crashing, lambda: annotate(admin, namespace, "busy", {"managedsecrets.io/rotate": "a"}))
        annotate(admin, namespace, "busy", {"managedsecrets.io/rotate": "b"})
        vault = open_store(admin, operator.namespace)
        assert vault.load(RecordKey(namespace, "busy")).record.pending.id == "v2"
    finally:
        operator.process.start()
    kube.eventually(lambda: current_version(admin, namespace, "busy") == "v2", what="the resumed rotation")

    def refusals() -> list[client.CoreV1Event]:
        return [
            e
            for e in client.CoreV1Api(admin).list_namespaced_event(namespace).items
            if e.reason == "RotationInProgress" and e.involved_object.name == "busy"
        ]

    # Request b is marked handled in the same pass that refuses it, so once the refusal is out it is done.
    refused = kube.eventually(refusals, what="request b refused")
    assert "'b' refused" in refused[0].message and "v2" in refused[0].message
    record = open_store(admin, operator.namespace).load(RecordKey(namespace, "busy")).record
    assert [v.id for v in record.versions] == ["v1", "v2"], "request b created nothing"
    assert record.pending is None


def _run_until_crash(process: OperatorProcess, trigger) -> None:  # type: ignore[no-untyped-def]
    process.start()
    trigger()
    assert process.proc is not None
    process.proc.wait(timeout=60)
    assert process.proc.returncode == 86, f"expected the failpoint exit, got {process.proc.returncode}"


def counting_webhook(endpoint: Endpoint) -> None:
    """Each *create* call answers a new password (pw-1, pw-2, ...); set and test succeed."""
    made = itertools.count(1)

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            return value_reply({"password": f"pw-{next(made)}".encode()})
        return Reply()

    endpoint.responder = responder


def external(name: str, endpoint: Endpoint, ca: str) -> dict[str, object]:
    """A ManagedSecret whose steps call ``endpoint``: a strategy with side effects, persisted step by step."""
    return managed_secret(
        name, type="External", external={"url": endpoint.url, "caBundle": ca, "timeoutSeconds": 5}
    )


@pytest.mark.parametrize("failpoint", ["after-create", "after-set", "after-test", "during-finish"])
def test_crash_at_each_step_boundary_completes_exactly_once(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    *,
    tmp_path: Path,
    failpoint: str,
    webhook: tuple[Endpoint, str],
) -> None:
    endpoint, ca = webhook
    counting_webhook(endpoint)
    name = f"crash-{failpoint}"
    create(admin, namespace, external(name, endpoint, ca))
    wait_ready(admin, namespace, name)
    v1_value = password(admin, namespace, name)
    vault = open_store(admin, operator.namespace)
    key = RecordKey(namespace, name)
    with watching(admin, namespace, name) as seen:
        operator.process.stop()
        crashing = OperatorProcess(
            operator.kubeconfig,
            operator.namespace,
            tmp_path / "crash.log",
            env={"MSO_IDENTITY": "operator", "MSO_FAILPOINT": failpoint},
        )
        try:
            _run_until_crash(
                crashing, lambda: annotate(admin, namespace, name, {"managedsecrets.io/rotate": "r1"})
            )
            record = vault.load(key).record
            if failpoint == "during-finish":
                assert record.current.id == "v2" and record.pending is None
                v2 = record.current
            else:
                assert record.current.id == "v1" and record.pending.id == "v2"
                v2 = record.pending
            expected_step = {"after-create": "set", "after-set": "test", "after-test": "finish"}.get(failpoint)
            if expected_step:
                assert record.rotation.step.value == expected_step
            v2_value = vault.open(record, v2).as_dict()["password"]
            creates = [c for c in endpoint.calls if c.document["step"] == "create"]
        finally:
            operator.process.start()
        kube.eventually(lambda: current_version(admin, namespace, name) == "v2", what="the rotation to complete")
        kube.eventually(lambda: password(admin, namespace, name) == v2_value, what="v2 projected")
        kube.eventually(
            lambda: get_ms(admin, namespace, name)["status"].get("rotation") is None, what="the rotation cleared"
        )
    record = vault.load(key).record
    assert [v.id for v in record.versions] == ["v1", "v2"], "completed exactly once, under the same version id"
    assert record.next_version_number == 3
    assert record.pending is None and record.rotation is None
    assert vault.open(record, record.current).as_dict()["password"] == v2_value
    assert record.previous.id == "v1"
    assert set(seen) <= {v1_value, v2_value}, "the projected Secret only held ACSCurrent or ACSPrevious values"
    assert seen[0] == v1_value and seen[-1] == v2_value
    assert [c for c in endpoint.calls if c.document["step"] == "create"] == creates, "no second create call"


def test_a_local_only_rotation_is_one_write_and_survives_a_crash_after_it(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, tmp_path: Path
) -> None:
    # generate reaches nothing outside: its four steps are one store write, so "during-finish" is the only
    # boundary there is; a crash right after it leaves v2 current, and the restart projects it.
    create(admin, namespace, managed_secret("local"))
    wait_ready(admin, namespace, "local")
    vault = open_store(admin, operator.namespace)
    key = RecordKey(namespace, "local")
    revision = vault.store.read(key).revision
    operator.process.stop()
    crashing = OperatorProcess(
        operator.kubeconfig,
        operator.namespace,
        tmp_path / "crash.log",
        env={"MSO_IDENTITY": "operator", "MSO_FAILPOINT": "during-finish"},
    )
    try:
        _run_until_crash(crashing, lambda: annotate(admin, namespace, "local", {"managedsecrets.io/rotate": "r1"}))
        record = vault.load(key).record
        assert record.current.id == "v2" and record.previous.id == "v1" and record.pending is None
        assert int(vault.store.read(key).revision) > int(revision)
        v2_value = vault.open(record, record.current).as_dict()["password"]
    finally:
        operator.process.start()
    kube.eventually(lambda: password(admin, namespace, "local") == v2_value, what="v2 projected after the restart")
    assert [v.id for v in vault.load(key).record.versions] == ["v1", "v2"]


def test_restart_targets_roll_once_per_rotation(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    apps = client.AppsV1Api(admin)
    apps.create_namespaced_deployment(namespace, kube.web_deployment())

    def replicasets() -> int:
        return len(apps.list_namespaced_replica_set(namespace, label_selector="app=web").items)

    kube.eventually(lambda: replicasets() == 1, what="the first ReplicaSet")
    create(admin, namespace, managed_secret("creds", restartTargets=[{"kind": "Deployment", "name": "web"}]))
    wait_ready(admin, namespace, "creds")
    # No restart for the first version: a rollout now would make every count below one too high.
    assert replicasets() == 1
    for n, request in enumerate(["r1", "r2"], start=2):
        annotate(admin, namespace, "creds", {"managedsecrets.io/rotate": request})
        kube.eventually(lambda n=n: current_version(admin, namespace, "creds") == f"v{n}", what=f"v{n}")
        kube.eventually(lambda n=n: replicasets() == n, what=f"{n} ReplicaSets")
    template = apps.read_namespaced_deployment("web", namespace).spec.template.metadata.annotations
    assert template["managedsecrets.io/secret-versions"] == '{"creds": "v3"}'
    # Neither an operator restart nor a no-op reconcile restarts anything: both are handled before the next
    # request (one object's events are processed in order), which must add exactly one ReplicaSet.
    operator.process.stop()
    operator.process.start()
    annotate(admin, namespace, "creds", {"unrelated": "change"})
    annotate(admin, namespace, "creds", {"managedsecrets.io/rotate": "r3"})
    kube.eventually(lambda: current_version(admin, namespace, "creds") == "v4", what="v4")

    def rolled_out() -> bool:
        web = apps.read_namespaced_deployment("web", namespace)
        return bool(web.status.observed_generation == web.metadata.generation)

    kube.eventually(rolled_out, what="the deployment controller to see the v4 template")
    assert replicasets() == 4
