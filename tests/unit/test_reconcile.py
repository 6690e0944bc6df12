"""The reconcile service end to end over the in-memory store, the in-memory cluster and a manual clock.

Each test drives the real ``ManagedSecretService`` the way the Kopf handlers do; what only a real API server
can prove (RBAC, crash failpoints, audit-log write counts, garbage collection) stays in tests/integration.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from managed_secrets.cluster import OwnerRef, WorkloadRef
from managed_secrets.domain import move_label
from managed_secrets.errors import StoreError
from managed_secrets.names import (
    CREATE_FAILURES,
    CREATE_RETRY_AFTER,
    DATA_HASH_ANNOTATION,
    DELETED_AT,
    MOVE_STAGE_ANNOTATION,
    OWNER_ANNOTATION,
    REINITIALIZE_ANNOTATION,
    RESTORE_ANNOTATION,
    ROTATE_ANNOTATION,
    VERSION_ANNOTATION,
    WORKLOAD_VERSIONS_ANNOTATION,
    StageMoveRequest,
)
from managed_secrets.rotation.strategies import load_all
from managed_secrets.rotation.strategies.generic import GenerateStrategy
from managed_secrets.rotation.strategy import RotationStepFailed
from managed_secrets.store import RecordKey
from support.world import NAMESPACE, World, managed_secret

load_all()


@pytest.fixture
def world() -> World:
    return World()


def ready(world: World, name: str) -> bool:
    return world.condition(name, "Ready").get("status") == "True"


# --- create, idempotence -------------------------------------------------------------------------------


def test_create_stores_v1_projects_it_and_reports_ready(world: World) -> None:
    world.apply(
        managed_secret("db", generate={"keys": [{"name": "password", "length": 24}], "static": {"user": "app"}})
    )
    outcome = world.reconcile("db")

    assert outcome.new_version == "v1"
    secret = world.secret("db")
    assert secret is not None
    assert secret.data["user"] == b"app" and len(secret.data["password"]) == 24
    assert secret.annotations[VERSION_ANNOTATION] == "v1"
    assert secret.annotations[OWNER_ANNOTATION] == f"{NAMESPACE}/db"
    assert secret.owner_references == (
        OwnerRef("managedsecrets.io/v1alpha1", "ManagedSecret", "db", world.ms("db")["metadata"]["uid"], True),
    )
    assert ready(world, "db")
    status = world.status("db")
    assert status["currentVersion"] == "v1" and status["projectedSecret"] == "db"
    # A new object's first version and projection are told by its status; no Event write.
    assert world.events() == []
    # The store holds ciphertext only.
    stored = world.store.read(RecordKey(NAMESPACE, "db")).document
    assert secret.data["password"] not in stored


def test_second_reconcile_of_an_unchanged_world_writes_nothing(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    mark = world.mark()
    reads = world.store.reads
    world.reconcile("db")
    world.reconcile("db")
    assert world.writes_since(mark) == ([], 0, [])
    assert world.store.reads - reads == 2, "one store read per reconcile"


def test_create_costs_one_store_write_one_secret_one_status_patch(world: World) -> None:
    world.apply(managed_secret("db"))
    mark = world.mark()
    world.reconcile("db")
    writes, store_writes, _ = world.writes_since(mark)
    assert store_writes == 1
    assert [(w.verb, w.resource) for w in writes if w.resource != "events"] == [
        ("create", "secrets"),
        ("patch", "managedsecrets/status"),
    ]


def test_a_new_generated_key_keeps_the_others(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    first = world.value("db")["password"]
    world.edit("db", generate={"keys": [{"name": "password"}, {"name": "token"}]})
    outcome = world.reconcile("db")
    assert outcome.new_version == "v2"
    value = world.value("db")
    assert value["password"] == first and set(value) == {"password", "token"}
    assert world.record("db").previous is not None


def test_template_change_reprojects_without_a_new_version(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    world.edit("db", target={"template": {"data": {"URL": "postgres://app:{{ password }}@db"}}})
    outcome = world.reconcile("db")
    assert outcome.new_version is None
    secret = world.secret("db")
    assert secret is not None
    assert secret.data["URL"] == b"postgres://app:" + world.value("db")["password"] + b"@db"
    assert [v.id for v in world.record("db").versions] == ["v1"]


# --- valueFrom -----------------------------------------------------------------------------------------


def test_value_from_a_secret_and_its_changes(world: World) -> None:
    world.put_secret("source", {"api-key": b"one"})
    world.apply(managed_secret("key", valueFrom={"secretRef": {"name": "source"}}))
    world.reconcile("key")
    assert world.value("key") == {"api-key": b"one"}
    world.put_secret("source", {"api-key": b"two"})
    outcome = world.reconcile("key")
    assert outcome.new_version == "v2"
    secret = world.secret("key")
    assert secret is not None and secret.data == {"api-key": b"two"}


def test_missing_value_from_source_waits_with_a_condition(world: World) -> None:
    world.apply(managed_secret("key", valueFrom={"secretRef": {"name": "absent"}}))
    outcome = world.reconcile("key")
    ready_condition = world.condition("key", "Ready")
    assert ready_condition["status"] == "False" and ready_condition["reason"] == "SourceUnavailable"
    assert "absent" in ready_condition["message"]
    assert outcome.wake_at is None, "the Secret watch brings it back when the source appears"
    assert world.events("Warning") == ["SourceUnavailable"]
    world.reconcile("key")
    assert world.events("Warning") == ["SourceUnavailable"], "the same failure is not re-posted"


def test_value_from_missing_keys(world: World) -> None:
    world.put_secret("source", {"a": b"1"})
    world.apply(managed_secret("key", valueFrom={"secretRef": {"name": "source", "keys": ["a", "b"]}}))
    world.reconcile("key")
    assert "lacks the keys ['b']" in world.condition("key", "Ready")["message"]


def test_a_rotation_request_on_value_from_is_ignored_once(world: World) -> None:
    world.put_secret("source", {"a": b"1"})
    world.apply(managed_secret("key", valueFrom={"secretRef": {"name": "source"}}))
    world.reconcile("key")
    world.edit("key", annotations={ROTATE_ANNOTATION: "r1"})
    world.reconcile("key")
    world.reconcile("key")
    assert world.events("Warning") == ["RotationNotSupported"]


# --- rotation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("local_only", [True, False])
def test_requested_rotation_runs_all_steps_in_one_read(
    world: World, monkeypatch: pytest.MonkeyPatch, local_only: bool
) -> None:
    # A strategy whose steps reach outside persists each step; a local-only one rotates in one write.
    monkeypatch.setattr(GenerateStrategy, "local_only", local_only)
    world.apply(managed_secret("db"))
    world.reconcile("db")
    old = world.value("db")
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    reads, mark = world.store.reads, world.mark()
    outcome = world.reconcile("db")
    assert outcome.rotated == "v2"
    writes, store_writes, events = world.writes_since(mark)
    assert world.store.reads - reads == 1
    assert store_writes == (1 if local_only else 4), "create (with the request marked), set, test, finish"
    assert events == ["Rotated"]
    assert [(w.verb, w.resource) for w in writes] == [
        ("create", "events"),
        ("update", "secrets"),
        ("patch", "managedsecrets/status"),
    ]
    record = world.record("db")
    assert record.current is not None and record.current.id == "v2"
    assert record.previous is not None and record.previous.id == "v1"
    assert world.value("db", "v1") == old
    assert ready(world, "db") and world.condition("db", "RotationFailed")["status"] == "False"
    assert world.status("db")["lastRotationTime"]
    mark = world.mark()
    world.reconcile("db")
    assert world.writes_since(mark) == ([], 0, []), "a handled request is not rotated again"


def test_interval_rotation_after_downtime_rotates_once(world: World) -> None:
    world.apply(managed_secret("db", rotation={"enabled": True, "interval": "1h"}))
    outcome = world.reconcile("db")
    assert outcome.next_rotation == world.clock.now() + dt.timedelta(hours=1)
    assert world.service.scheduler.due_time(NAMESPACE, "db") == outcome.next_rotation
    assert world.status("db")["nextRotationTime"] == "2026-01-01T01:00:00Z"

    world.clock.advance(hours=5)  # the operator was away for five intervals
    assert world.reconcile("db").rotated == "v2"
    for _ in range(3):
        assert world.reconcile("db").rotated is None
    assert [v.id for v in world.record("db").versions] == ["v1", "v2"]
    assert world.reconcile("db").next_rotation == world.clock.now() + dt.timedelta(hours=1)


def test_cron_schedule_rotates_at_the_top_of_the_minute(world: World) -> None:
    world.clock.advance(seconds=17)
    world.apply(managed_secret("db", rotation={"enabled": True, "schedule": "* * * * *"}))
    outcome = world.reconcile("db")
    assert outcome.next_rotation == dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    assert world.status("db")["nextRotationTime"] == "2026-01-01T00:01:00Z"
    world.clock.set(dt.datetime(2026, 1, 1, 0, 0, 59, tzinfo=dt.UTC))
    assert world.reconcile("db").rotated is None
    world.clock.set(dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC))
    assert world.reconcile("db").rotated == "v2"
    assert world.record("db").current.created == world.clock.now()  # type: ignore[union-attr]
    assert world.reconcile("db").next_rotation == dt.datetime(2026, 1, 1, 0, 2, tzinfo=dt.UTC)


def test_a_rotation_window_spreads_the_due_time_deterministically(world: World) -> None:
    rotation = {"enabled": True, "interval": "1h", "window": "30m"}
    world.apply(managed_secret("a", rotation=rotation))
    world.apply(managed_secret("b", rotation=rotation))
    due = {name: world.reconcile(name).next_rotation for name in ("a", "b")}
    start = world.clock.now() + dt.timedelta(hours=1)
    for when in due.values():
        assert when is not None and start <= when < start + dt.timedelta(minutes=30)
    assert world.restarted().reconcile("a").next_rotation == due["a"], "a restart does not move it"


def test_nothing_rotates_before_it_is_due(world: World) -> None:
    world.apply(managed_secret("db", rotation={"enabled": True, "interval": "1h"}))
    world.reconcile("db")
    world.clock.advance(minutes=59)
    mark = world.mark()
    assert world.reconcile("db").rotated is None
    assert world.writes_since(mark) == ([], 0, [])


def test_restart_rotates_nothing(world: World) -> None:
    world.apply(managed_secret("db", rotation={"enabled": True, "interval": "1h"}))
    world.reconcile("db")
    later = world.restarted()
    mark = later.mark()
    assert later.reconcile("db").rotated is None
    assert later.writes_since(mark) == ([], 0, [])


@pytest.fixture
def failing_test_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The generate strategy's *test* step fails while the list holds a truthy value (set it to 1)."""
    failing = [0]

    def test(self: GenerateStrategy, ctx: object, pending: object) -> None:
        if failing[0]:
            raise RotationStepFailed("test", "LoginFailed", "the new credentials were refused")

    monkeypatch.setattr(GenerateStrategy, "test", test)
    # As a strategy whose steps reach outside: each step is persisted.
    monkeypatch.setattr(GenerateStrategy, "local_only", False)
    yield failing


def test_failed_step_leaves_current_untouched_and_retries_with_backoff(
    world: World, failing_test_step: list[int]
) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    failing_test_step[0] = 1
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    outcome = world.reconcile("db")

    record = world.record("db")
    assert record.current is not None and record.current.id == "v1"
    assert record.pending is not None and record.pending.id == "v2"
    failed = world.condition("db", "RotationFailed")
    assert failed["status"] == "True" and failed["reason"] == "LoginFailed"
    assert world.condition("db", "Rotating")["status"] == "True"
    assert outcome.wake_at == world.clock.now() + dt.timedelta(seconds=30)
    secret = world.secret("db")
    assert secret is not None and secret.annotations[VERSION_ANNOTATION] == "v1"
    assert world.events("Warning") == ["LoginFailed"]

    # Before the retry time nothing is tried again, and the failure stays reported.
    world.clock.advance(seconds=10)
    mark = world.mark()
    world.reconcile("db")
    assert world.writes_since(mark) == ([], 0, [])
    assert world.condition("db", "RotationFailed")["status"] == "True"

    # The second failure doubles the wait.
    world.clock.advance(seconds=25)
    assert world.reconcile("db").wake_at == world.clock.now() + dt.timedelta(seconds=60)
    assert world.record("db").rotation is not None and world.record("db").rotation.attempts == 2  # type: ignore[union-attr]

    failing_test_step[0] = 0
    world.clock.advance(seconds=61)
    assert world.reconcile("db").rotated == "v2"
    assert world.condition("db", "RotationFailed")["status"] == "False"


def test_a_second_request_while_one_is_pending_is_refused(world: World, failing_test_step: list[int]) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    failing_test_step[0] = 1
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    world.reconcile("db")
    world.edit("db", annotations={ROTATE_ANNOTATION: "r2"})
    world.clock.advance(seconds=1)
    world.reconcile("db")
    world.reconcile("db")
    assert world.events("Warning").count("RotationInProgress") == 1
    record = world.record("db")
    assert [v.id for v in record.versions] == ["v1", "v2"]
    assert record.pending is not None and record.pending.request_id == "r1"
    samples = world.metrics.exposition().decode()
    assert 'managed_secrets_rotations_total{result="refused",strategy="generate"} 1.0' in samples


def test_a_local_only_rotation_that_fails_stores_nothing_and_backs_off(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")

    def test(self: GenerateStrategy, ctx: object, pending: object) -> None:
        raise RotationStepFailed("test", "Unusable", "the new value failed its check")

    monkeypatch.setattr(GenerateStrategy, "test", test)
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    outcome = world.reconcile("db")
    record = world.record("db")
    assert [v.id for v in record.versions] == ["v1"] and record.pending is None
    assert record.next_version_number == 2
    assert world.condition("db", "RotationFailed")["reason"] == "Unusable"
    assert world.attributes("db")[CREATE_FAILURES] == "1"
    assert outcome.wake_at is not None and outcome.wake_at > world.clock.now()


def test_create_failure_is_persisted_and_survives_a_restart(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")

    def broken(self: GenerateStrategy, ctx: object) -> object:
        raise RotationStepFailed("create", "GeneratorDown", "no value could be made")

    monkeypatch.setattr(GenerateStrategy, "create", broken)
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    outcome = world.reconcile("db")
    assert world.condition("db", "RotationFailed")["reason"] == "GeneratorDown"
    attributes = world.attributes("db")
    assert attributes[CREATE_FAILURES] == "1"
    assert outcome.wake_at == dt.datetime.fromisoformat(attributes[CREATE_RETRY_AFTER])

    later = world.restarted()  # the backoff is not forgotten
    mark = later.mark()
    later.reconcile("db")
    assert later.writes_since(mark) == ([], 0, [])

    monkeypatch.undo()
    load_all()
    world.clock.advance(seconds=31)
    assert later.reconcile("db").rotated == "v2"
    assert CREATE_FAILURES not in later.attributes("db")
    assert later.condition("db", "RotationFailed")["status"] == "False"


def test_ssh_key_publishes_its_public_key(world: World) -> None:
    world.apply(managed_secret("ssh", type="SSHKey", sshKey={"algorithm": "ed25519"}))
    world.reconcile("ssh")
    assert world.status("ssh")["publicKey"].startswith("ssh-ed25519 ")
    secret = world.secret("ssh")
    assert secret is not None and b"PRIVATE KEY" in secret.data["ssh-privatekey"]
    assert b"PRIVATE KEY" not in json.dumps(world.status("ssh")).encode()


# --- stage moves ---------------------------------------------------------------------------------------


def rotated_twice(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    for request in ("r1", "r2"):
        world.edit("db", annotations={ROTATE_ANNOTATION: request})
        world.reconcile("db")


def test_rollback_by_annotation_moves_current_and_reprojects(world: World) -> None:
    rotated_twice(world)
    move = StageMoveRequest(label="ACSCurrent", version="v1", id="m1")
    world.edit("db", annotations={MOVE_STAGE_ANNOTATION: move.encode()})
    world.reconcile("db")
    record = world.record("db")
    assert record.current is not None and record.current.id == "v1"
    secret = world.secret("db")
    assert secret is not None and secret.annotations[VERSION_ANNOTATION] == "v1"
    assert "StageMoved" in world.events()
    mark = world.mark()
    world.reconcile("db")
    assert world.writes_since(mark) == ([], 0, []), "each move request is applied once"


def test_invalid_and_refused_stage_moves(world: World) -> None:
    rotated_twice(world)
    world.edit("db", annotations={MOVE_STAGE_ANNOTATION: "{not json"})
    world.reconcile("db")
    world.reconcile("db")
    assert world.events("Warning") == ["InvalidStageMove"], "one Warning per distinct annotation"
    world.edit(
        "db", annotations={MOVE_STAGE_ANNOTATION: json.dumps({"label": "ACSCurrent", "version": "v9", "id": "m2"})}
    )
    world.reconcile("db")
    world.reconcile("db")
    assert world.events("Warning").count("StageMoveRefused") == 1
    assert world.record("db").current.id == "v3"  # type: ignore[union-attr]


def test_rollback_onto_a_tampered_version_is_refused(world: World) -> None:
    rotated_twice(world)
    key = RecordKey(NAMESPACE, "db")
    loaded = world.vault.load(key)
    assert loaded is not None
    record = loaded.record
    old = record.version("v1")
    flipped = bytearray(old.sealed)
    flipped[-1] ^= 1
    tampered = replace(
        record, versions=tuple(replace(v, sealed=bytes(flipped)) if v.id == "v1" else v for v in record.versions)
    )
    world.vault.update(key, lambda r: tampered)
    world.edit("db", annotations={MOVE_STAGE_ANNOTATION: StageMoveRequest("ACSCurrent", "v1", "m3").encode()})
    world.reconcile("db")
    assert world.record("db").current.id == "v3"  # type: ignore[union-attr]
    assert "StageMoveRefused" in world.events("Warning")
    assert ready(world, "db")


# --- drift ---------------------------------------------------------------------------------------------


def test_edited_and_deleted_projection_is_reverted(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    secret = world.secret("db")
    assert secret is not None
    world.cluster.put_secret(replace(secret, data={"password": b"edited"}))
    world.reconcile("db")
    restored = world.secret("db")
    assert restored is not None and restored.data == {"password": world.value("db")["password"]}
    assert "DriftReverted" in world.events()
    del world.cluster.secrets[(NAMESPACE, "db")]
    world.reconcile("db")
    assert world.secret("db") is not None
    assert world.events()[-1] == "Projected"


def test_drift_is_only_reported_under_report(world: World) -> None:
    world.apply(managed_secret("db", target={"driftPolicy": "Report"}))
    world.reconcile("db")
    secret = world.secret("db")
    assert secret is not None
    world.cluster.put_secret(replace(secret, data={"password": b"edited"}))
    world.reconcile("db")
    assert world.secret("db").data == {"password": b"edited"}  # type: ignore[union-attr]
    assert world.condition("db", "Drifted")["status"] == "True"


def test_a_foreign_secret_is_not_overwritten_unless_adopted(world: World) -> None:
    world.put_secret("db", {"mine": b"keep"})
    world.apply(managed_secret("db"))
    world.reconcile("db")
    not_owned = world.condition("db", "Ready")
    assert not_owned["reason"] == "SecretNotOwned" and "adoptExisting" in not_owned["message"]
    assert world.condition("db", "Projected")["status"] == "False"
    assert world.secret("db").data == {"mine": b"keep"}  # type: ignore[union-attr]
    world.edit("db", target={"adoptExisting": True})
    world.reconcile("db")
    assert ready(world, "db")
    assert world.secret("db").annotations[OWNER_ANNOTATION] == f"{NAMESPACE}/db"  # type: ignore[union-attr]


def test_a_changed_secret_type_replaces_the_object(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    world.edit(
        "db",
        target={"type": "kubernetes.io/basic-auth"},
        generate={"keys": [{"name": "password"}], "static": {"username": "u"}},
    )
    world.reconcile("db")
    secret = world.secret("db")
    assert secret is not None and secret.type == "kubernetes.io/basic-auth"
    verbs = [w.verb for w in world.cluster.writes_of("secrets")]
    assert verbs == ["create", "delete", "create"]


def test_target_rename_deletes_the_old_projection(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    world.edit("db", target={"name": "db-v2"})
    world.reconcile("db")
    assert world.secret("db") is None and world.secret("db-v2") is not None
    assert "ProjectionMoved" in world.events()


def test_include_previous_projects_both(world: World) -> None:
    world.apply(managed_secret("db", target={"includePrevious": True}))
    world.reconcile("db")
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    world.reconcile("db")
    secret = world.secret("db")
    assert secret is not None
    assert secret.data["password_PREVIOUS"] == world.value("db", "v1")["password"]


# --- restart targets -----------------------------------------------------------------------------------


def test_restart_targets_roll_once_per_version(world: World) -> None:
    web = WorkloadRef("Deployment", NAMESPACE, "web")
    world.cluster.workloads[web] = {}
    world.apply(
        managed_secret(
            "db", restartTargets=[{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "absent"}]
        )
    )
    world.reconcile("db")
    assert world.cluster.writes_of("deployments") == [], "the first version restarts nothing"
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    world.reconcile("db")
    world.reconcile("db")
    assert len(world.cluster.writes_of("deployments")) == 1
    assert json.loads(world.cluster.workloads[web][WORKLOAD_VERSIONS_ANNOTATION]) == {"db": "v2"}
    assert "RestartedTarget" in world.events()


def test_a_restart_target_that_cannot_be_patched_fails_ready(world: World) -> None:
    world.cluster.workloads[WorkloadRef("Deployment", NAMESPACE, "web")] = {
        WORKLOAD_VERSIONS_ANNOTATION: '{"db": "v0"}'
    }
    world.cluster.deny("patch", "deployments")
    world.apply(managed_secret("db", restartTargets=[{"kind": "Deployment", "name": "web"}]))
    world.reconcile("db")
    assert world.status("db")["retry"]["reason"] == "RestartFailed"
    failed = world.condition("db", "Ready")
    assert failed["reason"] == "RestartFailed" and "lacks 'patch'" in failed["message"]


# --- failure conditions --------------------------------------------------------------------------------


def test_template_error_names_the_key_never_the_value(world: World) -> None:
    world.apply(managed_secret("db", target={"template": {"data": {"URL": "{{ password | nosuchfilter }}"}}}))
    world.reconcile("db")
    failed = world.condition("db", "Projected")
    assert failed["status"] == "False" and failed["reason"] == "TemplateError"
    assert "URL" in failed["message"]
    assert world.value("db")["password"].decode() not in json.dumps(world.status("db"))


def test_an_unparseable_spec_gets_a_condition_and_no_retry(world: World) -> None:
    world.apply(
        managed_secret(
            "db", generate={"keys": [{"name": "password", "excludeCharacters": "".join(map(chr, range(32, 127)))}]}
        )
    )
    outcome = world.reconcile("db")
    failed = world.condition("db", "Ready")
    assert failed["status"] == "False" and failed["reason"] == "InvalidPolicy"
    assert failed["message"].startswith("spec.generate.keys[0] (password): ")
    assert outcome.wake_at is None
    assert world.store.writes == 0


@pytest.mark.parametrize(
    ("rotation", "message"),
    [
        ({"enabled": True, "interval": "soon"}, "spec.rotation.interval: duration 'soon' must be whole numbers"),
        ({"enabled": True, "interval": "999999999d"}, "spec.rotation.interval: duration '999999999d' is longer"),
        ({"enabled": True, "interval": "1s"}, "spec.rotation.interval: 1s is shorter than the operator's floor"),
        ({"enabled": True, "schedule": "61 * * * *"}, "spec.rotation.schedule '61 * * * *' is not a valid cron"),
        ({"enabled": True, "schedule": "0 0 30 2 *"}, "spec.rotation.schedule '0 0 30 2 *' never fires"),
    ],
)
def test_an_invalid_rotation_setting_is_reported_and_the_value_still_projected(
    world: World, rotation: dict[str, object], message: str
) -> None:
    world.apply(managed_secret("db", rotation=rotation))
    outcome = world.reconcile("db")
    failed = world.condition("db", "RotationFailed")
    assert failed["status"] == "True" and failed["reason"] == "InvalidSchedule"
    assert failed["message"].startswith(message)
    assert ready(world, "db") and world.secret("db") is not None, "a rotation-config error blocks no projection"
    assert outcome.next_rotation is None and outcome.wake_at is None
    mark = world.mark()
    world.reconcile("db")
    assert world.writes_since(mark) == ([], 0, []), "reported once, then quiet"


def test_a_hand_placed_pending_label_is_reported_and_does_not_spin(world: World) -> None:
    world.apply(managed_secret("db", rotation={"enabled": True, "interval": "1h"}))
    world.reconcile("db")
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    world.reconcile("db")
    key = RecordKey(NAMESPACE, "db")
    world.vault.update(key, lambda r: move_label(r, "ACSPending", "v1") if r else r)  # as a hand edit would
    world.clock.advance(hours=2)  # and the next rotation is due
    outcome = world.reconcile("db")
    stuck = world.condition("db", "RotationFailed")
    assert stuck["reason"] == "PendingWithoutRotation" and "v1 carries ACSPending" in stuck["message"]
    assert outcome.wake_at is None and outcome.next_rotation is None, "nothing to wake for until a person acts"
    assert world.service.scheduler.due_time(NAMESPACE, "db") is None


def test_a_due_rotation_that_backs_off_wakes_at_the_end_of_the_wait(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.apply(managed_secret("db", rotation={"enabled": True, "interval": "1h"}))
    world.reconcile("db")

    def broken(self: GenerateStrategy, ctx: object) -> object:
        raise RotationStepFailed("create", "GeneratorDown", "no value could be made")

    monkeypatch.setattr(GenerateStrategy, "create", broken)
    world.clock.advance(hours=1, seconds=1)
    world.reconcile("db")
    retry = world.service.scheduler.due_time(NAMESPACE, "db")
    assert retry == world.clock.now() + dt.timedelta(seconds=30), "not the due time in the past: no busy loop"
    world.clock.advance(seconds=5)
    world.reconcile("db")
    assert world.service.scheduler.due_time(NAMESPACE, "db") == retry


def test_projection_write_forbidden_is_named(world: World) -> None:
    world.cluster.deny("create", "secrets")
    world.apply(managed_secret("db"))
    world.reconcile("db")
    assert "lacks 'create' on Secrets" in world.condition("db", "Ready")["message"]
    assert world.status("db")["currentVersion"] == "v1"


def test_a_store_failure_is_reported_and_retried_with_backoff(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.apply(managed_secret("db"))

    def down(key: RecordKey) -> object:
        raise StoreError("store get for app/db failed: HTTP 500 Internal Server Error")

    monkeypatch.setattr(world.store, "read", down)
    first = world.reconcile("db")
    assert world.condition("db", "Ready")["reason"] == "StoreError"
    retry = world.status("db")["retry"]
    assert retry["attempts"] == 1 and retry["reason"] == "StoreError"
    delay = (first.wake_at - world.clock.now()).total_seconds()  # type: ignore[operator]
    assert 24 <= delay <= 31, "30 s backoff less up to 20 % jitter"
    # Until then nothing is tried, even by a restarted operator (its resume handler runs at once).
    mark = world.mark()
    world.restarted().reconcile("db")
    assert world.writes_since(mark) == ([], 0, [])
    world.clock.advance(seconds=31)
    second = world.reconcile("db")
    assert world.status("db")["retry"]["attempts"] == 2
    assert (second.wake_at - world.clock.now()).total_seconds() >= 48  # type: ignore[operator]
    monkeypatch.undo()
    world.clock.advance(seconds=61)
    world.reconcile("db")
    assert ready(world, "db") and "retry" not in world.status("db"), "success clears the retry"
    assert (
        'managed_secrets_store_errors_total{operation="reconcile",reason="StoreError"} 2.0'
        in world.metrics.exposition().decode()
    )


def test_a_version_sealed_under_an_unknown_key_fails_closed(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    stranger = World(store=world.store, cluster=world.cluster, clock=world.clock)  # another keyring
    stranger.reconcile("db")
    failed = world.condition("db", "Ready")
    assert failed["status"] == "False" and failed["reason"] in ("UnknownKeyError", "IntegrityError")
    assert world.secret("db").annotations[VERSION_ANNOTATION] == "v1"  # type: ignore[union-attr]


# --- lifecycle -----------------------------------------------------------------------------------------


def test_delete_keeps_versions_and_restore_brings_them_back(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    value = world.value("db")
    world.delete("db")
    assert DELETED_AT in world.attributes("db")

    world.apply(managed_secret("db"))  # a new object of the same name (a new uid)
    world.reconcile("db")
    waiting = world.condition("db", "Ready")
    assert waiting["reason"] == "InRecoveryWindow" and RESTORE_ANNOTATION in waiting["message"]

    world.edit("db", annotations={RESTORE_ANNOTATION: "true"})
    world.reconcile("db")
    assert ready(world, "db") and world.value("db") == value
    assert "Restored" in world.events()
    assert world.record("db").metadata.uid == world.ms("db")["metadata"]["uid"]


def test_delete_with_no_window_purges_at_once(world: World) -> None:
    world.apply(managed_secret("db", deletion={"recoveryWindowDays": 0}))
    world.reconcile("db")
    world.delete("db")
    assert world.vault.load(RecordKey(NAMESPACE, "db")) is None


def test_purge_after_the_window_frees_a_waiting_object(world: World) -> None:
    world.apply(managed_secret("db", deletion={"recoveryWindowDays": 1}))
    world.reconcile("db")
    world.delete("db")
    world.apply(managed_secret("db"))
    world.reconcile("db")
    assert world.condition("db", "Ready")["reason"] == "InRecoveryWindow"
    assert world.service.purge_expired() == []
    world.clock.advance(days=1, seconds=1)
    assert world.service.purge_expired() == [RecordKey(NAMESPACE, "db")]
    assert ready(world, "db"), "the purge reconciles the object that waited for it"


def test_delete_of_a_spec_that_does_not_parse_still_keeps_the_window(world: World) -> None:
    world.apply(managed_secret("db", deletion={"recoveryWindowDays": 3}))
    world.reconcile("db")
    world.edit("db", rotation={"enabled": True, "interval": "bad"})
    world.delete("db")
    purge = dt.datetime.fromisoformat(world.attributes("db")["purge-after"])
    assert purge == world.clock.now() + dt.timedelta(days=3)


def test_reconcile_by_name_of_a_missing_object(world: World) -> None:
    assert world.service.reconcile_by_name(NAMESPACE, "nothing") is None


def test_pinned_encryption_key_is_remembered(world: World) -> None:
    key_id = world.keyring.primary_key_id()
    world.keyring.add_key(make_primary=True)
    world.apply(managed_secret("db", encryptionKey=key_id))
    world.reconcile("db")
    assert world.record("db").metadata.encryption_key == key_id


def test_version_limit_prunes_unlabelled_versions(world: World) -> None:
    world.apply(managed_secret("db", versionLimit=2))
    world.reconcile("db")
    for request in ("r1", "r2", "r3"):
        world.edit("db", annotations={ROTATE_ANNOTATION: request})
        world.reconcile("db")
    assert [v.id for v in world.record("db").versions] == ["v3", "v4"]


def test_hash_annotation_is_a_keyed_hash_not_the_value(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    secret = world.secret("db")
    assert secret is not None
    assert secret.annotations[DATA_HASH_ANNOTATION].startswith("hmac-sha256:")
    assert secret.data["password"].decode() not in json.dumps(world.ms("db"))


# --- defense in depth: what the operator refuses even without the admission policy ------------------------


def test_a_token_secret_is_never_read_for_a_spec(world: World) -> None:
    world.put_secret("sa-token", {"token": b"CANARY-token"}, type="kubernetes.io/service-account-token")
    world.apply(managed_secret("key", valueFrom={"secretRef": {"name": "sa-token"}}))
    world.reconcile("key")
    refused = world.condition("key", "Ready")
    assert refused["reason"] == "ReferenceRefused" and "kubernetes.io/service-account-token" in refused["message"]
    assert world.secret("key") is None and world.store.writes == 0


@pytest.mark.parametrize(
    ("existing", "why"),
    [
        ({"type": "kubernetes.io/service-account-token"}, "is of type kubernetes.io/service-account-token"),
        ({"type": "kubernetes.io/dockerconfigjson"}, "is of type kubernetes.io/dockerconfigjson"),
        ({"annotations": {OWNER_ANNOTATION: f"{NAMESPACE}/other"}}, f"managed by ManagedSecret {NAMESPACE}/other"),
    ],
)
def test_adoption_never_takes_a_secret_with_another_job(
    world: World, existing: dict[str, object], why: str
) -> None:
    world.put_secret("taken", {"token": b"CANARY-keep"}, **existing)  # type: ignore[arg-type]
    world.apply(managed_secret("taker", target={"name": "taken", "adoptExisting": True}))
    world.reconcile("taker")
    refused = world.condition("taker", "Ready")
    assert refused["reason"] == "SecretNotOwned" and why in refused["message"]
    assert world.secret("taken").data == {"token": b"CANARY-keep"}  # type: ignore[union-attr]


def test_the_operator_namespace_is_never_served() -> None:
    world = World()
    world.service.operator_namespace = NAMESPACE
    world.put_secret("managed-secrets-keyring", {"keyring.json": b"{}"}, type="managedsecrets.io/keyring")
    world.apply(managed_secret("grab", target={"name": "managed-secrets-keyring", "adoptExisting": True}))
    world.reconcile("grab")
    refused = world.condition("grab", "Ready")
    assert refused["reason"] == "ReferenceRefused" and "operator's own namespace" in refused["message"]
    assert world.secret("managed-secrets-keyring").data == {"keyring.json": b"{}"}  # type: ignore[union-attr]
    assert world.store.writes == 0


@pytest.mark.parametrize(
    "again",
    [
        {"type": "External", "external": {"url": "https://tenant.example/hook"}},
        {"generate": {"keys": [{"name": "password"}]}, "type": "Generic", "deletion": {"recoveryWindowDays": 1}},
    ],
)
def test_restore_under_another_type_or_source_is_refused(world: World, again: dict[str, object]) -> None:
    world.put_secret("source", {"password": b"CANARY-restored"})
    world.apply(managed_secret("db", valueFrom={"secretRef": {"name": "source"}}))
    world.reconcile("db")
    world.delete("db")
    body = managed_secret("db", **again)
    body["metadata"]["annotations"] = {RESTORE_ANNOTATION: "true"}
    world.apply(body)
    mark = world.mark()
    world.reconcile("db")
    refused = world.condition("db", "Ready")
    assert refused["reason"] == "RestoreRefused"
    assert "CANARY" not in json.dumps(world.status("db"))
    assert DELETED_AT in world.attributes("db"), "the stored versions wait, untouched"
    writes, store_writes, _ = world.writes_since(mark)
    assert store_writes == 0 and not [w for w in writes if w.resource == "secrets"]


def test_a_record_copied_from_another_secret_is_refused(world: World) -> None:
    for name in ("a", "b"):
        world.apply(managed_secret(name))
        world.reconcile(name)
    b = world.store.read(RecordKey(NAMESPACE, "b"))
    a = world.store.read(RecordKey(NAMESPACE, "a"))
    world.store.write(RecordKey(NAMESPACE, "a"), b.document, expected_revision=a.revision)
    world.reconcile("a")
    assert world.condition("a", "Ready")["reason"] == "CorruptRecord"
    assert "belongs to app/b" in world.condition("a", "Ready")["message"]
    world.delete("a")  # deletion completes; the unusable record is left for a person (a recovery window)
    assert world.store.read(RecordKey(NAMESPACE, "a")).document == b.document
    secret = world.secret("a")
    assert secret is not None and secret.data != world.secret("b").data  # type: ignore[union-attr]


def test_a_missing_admission_policy_is_reported_on_each_object(world: World) -> None:
    world.service.admission_policy_installed = False
    world.apply(managed_secret("db"))
    world.reconcile("db")
    missing = world.condition("db", "AdmissionPolicy")
    assert missing["status"] == "False" and missing["reason"] == "NotInstalled"
    assert ready(world, "db"), "the operator still serves the object"
    world.service.admission_policy_installed = True
    world.reconcile("db")
    assert world.condition("db", "AdmissionPolicy")["status"] == "True"
    fresh = World()
    fresh.service.admission_policy_installed = True
    fresh.apply(managed_secret("db"))
    fresh.reconcile("db")
    assert fresh.condition("db", "AdmissionPolicy") == {}, "nothing to say where the policy always was"


# --- faults fail closed ----------------------------------------------------------------------------------


def test_a_lost_store_is_a_fault_not_a_fresh_start(world: World) -> None:
    world.apply(managed_secret("db"))
    world.reconcile("db")
    world.edit("db", annotations={ROTATE_ANNOTATION: "r1"})
    world.reconcile("db")
    projected = world.secret("db").data  # type: ignore[union-attr]
    assert world.status("db")["nextVersion"] == 3
    world.store.delete(RecordKey(NAMESPACE, "db"))

    mark = world.mark()
    world.reconcile("db")
    world.reconcile("db")
    lost = world.condition("db", "Ready")
    assert lost["reason"] == "StoreLost" and f"{REINITIALIZE_ANNOTATION}: 'v3'" in lost["message"]
    writes, store_writes, events = world.writes_since(mark)
    assert store_writes == 0 and events == ["StoreLost"], "nothing generated, one Warning"
    assert sorted(w.resource for w in writes) == ["events", "managedsecrets/status"], (
        "one status patch, then quiet"
    )
    assert world.secret("db").data == projected, "the projected value is left as it was"  # type: ignore[union-attr]
    assert world.status("db")["currentVersion"] == "v2", "the status keeps its evidence"

    world.edit("db", annotations={REINITIALIZE_ANNOTATION: "v2"})  # not the version the condition names
    world.reconcile("db")
    assert world.store.writes == store_writes + mark[1]
    world.edit("db", annotations={REINITIALIZE_ANNOTATION: "v3"})
    world.reconcile("db")
    assert [v.id for v in world.record("db").versions] == ["v3"], "version ids are never issued twice"
    assert ready(world, "db") and "Reinitialized" in world.events("Warning")


def test_a_target_the_api_server_rejects_waits_for_a_spec_change(world: World) -> None:
    world.apply(managed_secret("tls", target={"type": "kubernetes.io/tls"}))
    outcome = world.reconcile("tls")  # no exception: Kopf does not retry it every 15 s
    rejected = world.condition("tls", "Ready")
    assert rejected["reason"] == "SecretRejected" and "spec.target.type" in rejected["message"]
    assert outcome.wake_at is None
    mark = world.mark()
    world.reconcile("tls")
    assert [w for w in world.writes_since(mark)[0] if w.resource != "secrets"] == [], "no writes while it waits"


def test_a_record_over_the_store_budget_prunes_old_versions_or_is_refused(world: World) -> None:
    world.store.max_document_bytes = 6000
    big = "x" * 1200
    world.put_secret("source", {"blob": big.encode()})
    world.apply(managed_secret("big", valueFrom={"secretRef": {"name": "source"}}, versionLimit=10))
    world.reconcile("big")
    for n in range(2, 6):
        world.put_secret("source", {"blob": (big + str(n)).encode()})
        world.reconcile("big")
    record = world.record("big")
    assert len(world.store.read(RecordKey(NAMESPACE, "big")).document) <= 6000
    assert record.current is not None and record.current.id == "v5"
    assert len(record.versions) < 5, "the oldest unlabelled versions made room"
    world.put_secret("source", {"blob": b"y" * 5000})  # even alone it does not fit
    world.reconcile("big")
    refused = world.condition("big", "Ready")
    assert refused["reason"] == "RecordTooLarge" and "over the store's budget of 6000" in refused["message"]
    assert world.record("big").current.id == "v5"  # type: ignore[union-attr]


def test_a_first_value_that_fails_is_retried_when_the_target_may_be_back(
    world: World, failing_test_step: list[int]
) -> None:
    failing_test_step[0] = 1  # e.g. the webhook is down when the ManagedSecret is created
    world.apply(managed_secret("db"))
    outcome = world.reconcile("db")
    assert world.condition("db", "Ready")["reason"] == "LoginFailed"
    assert outcome.wake_at is not None and world.status("db")["retry"]["attempts"] == 1
    assert world.store.writes == 0, "nothing is stored before the value works"
    failing_test_step[0] = 0
    world.clock.set(outcome.wake_at)
    world.reconcile("db")
    assert ready(world, "db") and world.value("db")


def test_a_previous_suffix_that_collides_with_a_key_is_reported(world: World) -> None:
    world.apply(
        managed_secret(
            "db",
            generate={"keys": [{"name": "password"}], "static": {"password_old": "x"}},
            target={"includePrevious": True, "previousSuffix": "_old"},
        )
    )
    world.reconcile("db")
    refused = world.condition("db", "Ready")
    assert refused["reason"] == "InvalidRequest"
    assert refused["message"].startswith("spec.target.previousSuffix: '_old'")
