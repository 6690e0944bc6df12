"""The watch intake: the writes a create costs, echoes that cost nothing, resume from status after a restart."""

from __future__ import annotations

import datetime as dt

import pytest

from managed_secrets.cluster import SecretObject
from managed_secrets.names import FINALIZER, ROTATE_ANNOTATION, SOURCE_LABEL
from managed_secrets.service.watching import Watched
from managed_secrets.store import RecordKey
from support.world import NAMESPACE, World, managed_secret


@pytest.fixture
def world() -> World:
    return World()


def created(world: World, name: str = "db", **spec: object) -> None:
    """A new ManagedSecret as the watch brings it, then the echo of every write the operator made."""
    world.apply(managed_secret(name, **spec))
    world.event(name, "ADDED")
    world.event(name)


def test_a_create_costs_four_writes_and_no_event(world: World) -> None:
    world.apply(managed_secret("db"))
    world.event("db", "ADDED")

    writes = [(w.verb, w.resource) for w in world.cluster.writes]
    assert writes == [
        ("patch", "managedsecrets"),  # the finalizer
        ("create", "secrets"),  # the projected Secret
        ("patch", "managedsecrets/status"),
    ]
    assert world.store.writes == 1  # the record
    assert world.events() == []
    assert FINALIZER in world.ms("db")["metadata"]["finalizers"]
    assert world.status("db")["revisions"]["store"] and world.status("db")["revisions"]["projected"]


def test_the_echo_of_our_own_writes_reads_and_writes_nothing(world: World) -> None:
    created(world)
    mark, reads, store_reads = world.mark(), len(world.cluster.reads), world.store.reads

    world.event("db")
    secret = world.secret("db")
    assert secret is not None
    world.service.secret_changed(NAMESPACE, "db", secret.resource_version, f"{NAMESPACE}/db")
    world.drain()

    assert world.writes_since(mark) == ([], 0, [])
    assert (len(world.cluster.reads), world.store.reads) == (reads, store_reads)


def test_an_edit_of_the_projected_secret_is_reverted(world: World) -> None:
    created(world)
    live = world.secret("db")
    assert live is not None
    edited = world.put_secret("db", {"password": b"mine"}, labels=live.labels, annotations=live.annotations)

    world.service.secret_changed(NAMESPACE, "db", edited.resource_version, f"{NAMESPACE}/db")
    world.drain()

    restored = world.secret("db")
    assert restored is not None and restored.data["password"] != b"mine"
    assert "DriftReverted" in world.events()


def test_a_source_change_makes_a_new_version(world: World) -> None:
    world.put_secret("src", {"token": b"one"}, labels={SOURCE_LABEL: "true"})
    created(world, valueFrom={"secretRef": {"name": "src"}})
    source = world.put_secret("src", {"token": b"two"}, labels={SOURCE_LABEL: "true"})

    world.service.secret_changed(NAMESPACE, "src", source.resource_version, None)
    world.drain()

    assert world.record("db").current is not None and world.record("db").current.id == "v2"
    assert world.value("db") == {"token": b"two"}


def test_a_spec_change_is_not_an_echo(world: World) -> None:
    created(world)
    world.edit("db", generate={"keys": [{"name": "password"}, {"name": "pin"}]})
    world.event("db")
    assert world.record("db").current is not None and world.record("db").current.id == "v2"


def test_a_restart_resumes_from_status_without_a_read_or_write(world: World) -> None:
    created(world, rotation={"enabled": True, "interval": "720h"})
    again = world.restarted()
    again.watch_revisions()
    mark, reads, store_reads = again.mark(), len(again.cluster.reads), again.store.reads

    again.event("db", None)

    assert again.writes_since(mark) == ([], 0, [])
    assert (len(again.cluster.reads), again.store.reads) == (reads, store_reads)
    assert again.service.scheduler.due_time(NAMESPACE, "db") == world.clock.now() + dt.timedelta(days=30)
    # The echo memory is warm: its projected Secret's next event is recognised.
    live = again.secret("db")
    assert live is not None
    assert again.service.watched.projected_echo(RecordKey(NAMESPACE, "db"), live.resource_version)


def test_a_drift_while_the_operator_was_away_is_reverted_at_start_up(world: World) -> None:
    created(world)
    live = world.secret("db")
    assert live is not None
    world.put_secret("db", {"password": b"mine"}, labels=live.labels, annotations=live.annotations)
    again = world.restarted()
    again.watch_revisions()

    again.event("db", None)

    restored = again.secret("db")
    assert restored is not None and restored.data["password"] != b"mine"


@pytest.mark.parametrize(
    "change",
    ["rotate-request", "due", "not-synced", "store-written", "no-revisions"],
)
def test_a_restart_reconciles_what_it_cannot_trust(world: World, change: str) -> None:
    created(world, rotation={"enabled": True, "interval": "24h"})
    again = world.restarted()
    revisions = again.watch_revisions()
    if change == "rotate-request":
        world.edit("db", annotations={ROTATE_ANNOTATION: "now-1"})
    elif change == "due":
        world.clock.advance(dt.timedelta(days=2))
    elif change == "not-synced":
        revisions.is_synced = False
    elif change == "store-written":
        world.vault.set_attributes(RecordKey(NAMESPACE, "db"), lambda a: {**a, "touched": "yes"})
    else:
        again.cluster.patch_status(NAMESPACE, "db", {"revisions": None})
    store_reads = again.store.reads

    again.event("db", None)

    assert again.store.reads > store_reads


def test_deletion_keeps_the_versions_then_removes_the_finalizer(world: World) -> None:
    created(world)
    body = world.ms("db")
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    world.cluster.managed_secrets[(NAMESPACE, "db")] = body

    world.event("db")

    assert (NAMESPACE, "db") not in world.cluster.managed_secrets
    assert world.attributes("db")  # the record is kept for the recovery window
    assert not world.service.watched.seen(RecordKey(NAMESPACE, "db"))


def test_a_failing_event_is_retried_with_backoff_and_not_taken_for_an_echo(world: World) -> None:
    world.apply(managed_secret("db"))
    world.cluster.deny("patch", "managedsecrets")

    world.event("db", "ADDED")  # does not raise

    due = world.service.scheduler.due_time(NAMESPACE, "db")
    assert due is not None and due > world.clock.now()
    world.cluster.allow("patch", "managedsecrets")
    world.event("db")
    assert FINALIZER in world.ms("db")["metadata"]["finalizers"]
    assert world.secret("db") is not None


def test_watched_moves_a_source_between_objects() -> None:
    watched = Watched()
    key = RecordKey(NAMESPACE, "db")
    watched.takes_value_from(key, "a")
    watched.takes_value_from(RecordKey(NAMESPACE, "other"), "a")
    watched.takes_value_from(key, "b")
    assert watched.owners_of_source(NAMESPACE, "a") == ["other"]
    assert watched.owners_of_source(NAMESPACE, "b") == ["db"]
    watched.forget(key)
    assert watched.owners_of_source(NAMESPACE, "b") == []


def test_a_foreign_secret_event_reconciles_nothing(world: World) -> None:
    created(world)
    world.cluster.put_secret(SecretObject(namespace=NAMESPACE, name="other", data={"a": b"b"}))
    reads = len(world.cluster.reads)
    world.service.secret_changed(NAMESPACE, "other", "999", None)
    world.drain()
    assert len(world.cluster.reads) == reads


def test_a_new_object_is_created_without_a_read_when_the_watches_list_nothing(world: World) -> None:
    world.watch_revisions()
    world.apply(managed_secret("db"))
    world.event("db", "ADDED")
    assert world.store.reads == 0
    assert [r for r in world.cluster.reads if r[1] == "secrets"] == []
    assert world.secret("db") is not None and world.record("db").current is not None


def test_a_foreign_secret_the_watch_does_not_list_is_still_refused(world: World) -> None:
    world.watch_revisions()
    world.put_secret("db", {"theirs": b"x"})  # unlabelled: the projected-Secret watch does not list it
    world.apply(managed_secret("db"))
    world.event("db", "ADDED")
    assert world.condition("db", "Ready")["reason"] == "SecretNotOwned"
    live = world.secret("db")
    assert live is not None and live.data == {"theirs": b"x"}


def test_an_object_with_versions_is_always_read_so_a_lost_store_is_reported(world: World) -> None:
    created(world)
    world.store.delete(RecordKey(NAMESPACE, "db"))
    again = world.restarted()
    again.watch_revisions()
    reads = again.store.reads
    again.event("db", None)
    assert again.store.reads == reads + 1
    assert again.condition("db", "Ready")["reason"] == "StoreLost"
