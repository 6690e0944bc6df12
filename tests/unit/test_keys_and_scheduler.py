"""KEK rotation (KeyManager over the keyring Secret) and the rotation scheduler, without a server."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from managed_secrets.cluster import SecretObject
from managed_secrets.cluster.keyring import KEYRING_DATA_KEY, KeyringSecret, load_or_create_keyring
from managed_secrets.cluster.memory import InMemoryCluster
from managed_secrets.crypto import key_id_of
from managed_secrets.domain.clock import ManualClock
from managed_secrets.errors import KeyringError, ManagedSecretsError
from managed_secrets.names import KEK_HANDLED_ANNOTATION, KEYRING_SECRET_TYPE, ROTATE_KEK_ANNOTATION
from managed_secrets.service.keys import KeyManager
from managed_secrets.service.scheduler import Scheduler
from support.world import World, managed_secret

OPERATOR_NS = "managed-secrets"
KEYRING = "managed-secrets-keyring"


def key_ids_in_use(world: World, name: str) -> set[str]:
    record = world.record(name)
    return {key_id_of(v.sealed, secret_id=record.secret_id, version_id=v.id) for v in record.versions}


@pytest.fixture
def keyed() -> tuple[World, KeyManager, KeyringSecret]:
    cluster = InMemoryCluster()
    keyring = load_or_create_keyring(cluster, OPERATOR_NS, KEYRING)
    world = World(keyring=keyring, cluster=cluster)
    secret = KeyringSecret(cluster, OPERATOR_NS, KEYRING)
    return world, KeyManager(world.vault, keyring, secret), secret


def test_first_start_creates_the_keyring_and_the_next_start_reads_it() -> None:
    cluster = InMemoryCluster()
    created = load_or_create_keyring(cluster, OPERATOR_NS, KEYRING)
    stored = cluster.secrets[(OPERATOR_NS, KEYRING)]
    assert stored.type == KEYRING_SECRET_TYPE
    again = load_or_create_keyring(cluster, OPERATOR_NS, KEYRING)
    assert again.key_ids() == created.key_ids() and again.hash_key == created.hash_key


def test_keyring_creation_can_be_refused_and_a_bad_secret_is_reported() -> None:
    cluster = InMemoryCluster()
    with pytest.raises(KeyringError, match="creating one is disabled"):
        load_or_create_keyring(cluster, OPERATOR_NS, KEYRING, create=False)
    cluster.put_secret(SecretObject(namespace=OPERATOR_NS, name=KEYRING, data={"other": b"x"}))
    with pytest.raises(KeyringError, match=f"neither '{KEYRING_DATA_KEY}'"):
        load_or_create_keyring(cluster, OPERATOR_NS, KEYRING)
    cluster.deny("get", "secrets")
    with pytest.raises(KeyringError, match="lacks 'get' on Secrets"):
        load_or_create_keyring(cluster, OPERATOR_NS, KEYRING)


def test_kek_rotation_rewraps_every_version_and_retires_the_old_key(
    keyed: tuple[World, KeyManager, KeyringSecret],
) -> None:
    world, keys, secret = keyed
    for name in ("one", "two"):
        world.apply(managed_secret(name))
        world.reconcile(name)
    values = {name: world.value(name) for name in ("one", "two")}
    old = world.keyring.primary_key_id()

    new = keys.handle_request({ROTATE_KEK_ANNOTATION: "kek-1"})
    assert new is not None and new != old
    stored, _, annotations = secret.read()
    # Retired only when a second sweep finds it unused too (another replica may still seal under it briefly).
    assert stored.primary_key_id() == new and old in stored.key_ids()
    assert keys.rewrap_all() == 0
    stored, _, annotations = secret.read()
    assert stored.primary_key_id() == new and old not in stored.key_ids()
    assert annotations[KEK_HANDLED_ANNOTATION] == "kek-1"
    for name in ("one", "two"):
        assert key_ids_in_use(world, name) == {new}
        assert world.value(name) == values[name]

    writes = world.store.writes
    assert keys.handle_request({ROTATE_KEK_ANNOTATION: "kek-1", KEK_HANDLED_ANNOTATION: "kek-1"}) is None
    assert keys.rewrap_all() == 0
    assert world.store.writes == writes, "a finished re-wrap reads and writes nothing"


def test_a_pinned_key_is_kept(keyed: tuple[World, KeyManager, KeyringSecret]) -> None:
    world, keys, secret = keyed
    pinned = world.keyring.primary_key_id()
    world.apply(managed_secret("pinned", encryptionKey=pinned))
    world.reconcile("pinned")
    keys.handle_request({ROTATE_KEK_ANNOTATION: "kek-1"})
    assert key_ids_in_use(world, "pinned") == {pinned}
    assert pinned in secret.read()[0].key_ids()


def test_a_keyring_secret_with_unknown_keys_is_not_overwritten(
    keyed: tuple[World, KeyManager, KeyringSecret],
) -> None:
    _world, keys, secret = keyed
    stored, revision, _ = secret.read()
    stored.add_key(make_primary=False)  # someone else added a key meanwhile
    secret.write(stored, revision, {})
    with pytest.raises(ManagedSecretsError, match="keys this operator does not know"):
        keys.handle_request({ROTATE_KEK_ANNOTATION: "kek-2"})


def test_an_unreadable_record_retires_nothing(
    keyed: tuple[World, KeyManager, KeyringSecret], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, keys, secret = keyed
    world.apply(managed_secret("one"))
    world.reconcile("one")
    old = world.keyring.primary_key_id()

    def broken(key: object) -> object:
        raise ManagedSecretsError("store down")

    monkeypatch.setattr(world.vault, "loaded", broken)
    keys.handle_request({ROTATE_KEK_ANNOTATION: "kek-1"})
    assert old in secret.read()[0].key_ids()


def test_the_scheduler_calls_back_when_due_and_forgets_on_request() -> None:
    clock = ManualClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    called: list[tuple[str, str]] = []
    done = threading.Event()

    def callback(namespace: str, name: str) -> None:
        called.append((namespace, name))
        done.set()

    scheduler = Scheduler(callback, clock)
    scheduler.start()
    try:
        scheduler.schedule("app", "later", clock.now() + dt.timedelta(hours=1))
        scheduler.schedule("app", "gone", clock.now())
        scheduler.schedule("app", "gone", None)  # forgotten before the loop ran it
        assert scheduler.due_time("app", "later") == clock.now() + dt.timedelta(hours=1)
        scheduler.schedule("app", "now", clock.now())
        assert done.wait(10)
        assert called == [("app", "now")]
        done.clear()
        clock.advance(hours=2)
        scheduler.schedule("app", "nudge", clock.now() + dt.timedelta(days=1))  # wakes the loop
        assert done.wait(10)
        assert called == [("app", "now"), ("app", "later")]
    finally:
        scheduler.stop()


def test_a_failing_callback_does_not_stop_the_scheduler() -> None:
    clock = ManualClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    seen = threading.Event()
    calls: list[str] = []

    def callback(namespace: str, name: str) -> None:
        calls.append(name)
        if name == "bad":
            raise RuntimeError("boom")
        seen.set()

    scheduler = Scheduler(callback, clock, workers=1)
    scheduler.start()
    try:
        scheduler.schedule("app", "bad", clock.now())
        scheduler.schedule("app", "good", clock.now())
        assert seen.wait(10)
        assert sorted(calls) == ["bad", "good"]
    finally:
        scheduler.stop()


def test_a_lost_keyring_is_never_replaced_while_versions_are_stored() -> None:
    world = World()
    world.apply(managed_secret("db"))
    world.reconcile("db")
    with pytest.raises(KeyringError, match="the keyring was lost"):
        load_or_create_keyring(world.cluster, OPERATOR_NS, KEYRING, store_is_empty=world.store.is_empty)
    assert (OPERATOR_NS, KEYRING) not in world.cluster.secrets, "no new keyring was written"


def test_the_scheduler_never_runs_an_object_twice_within_its_gap() -> None:
    clock = ManualClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    runs: list[dt.datetime] = []
    ran = threading.Event()

    def callback(namespace: str, name: str) -> None:
        runs.append(clock.now())
        ran.set()
        scheduler.schedule(namespace, name, clock.now())  # asks to run again at once, every time

    scheduler = Scheduler(callback, clock)
    scheduler.start()
    try:
        scheduler.schedule("app", "spin", clock.now())
        assert ran.wait(10)
        ran.clear()
        assert not ran.wait(0.5), "no second run before the gap has passed"
        assert scheduler.due_time("app", "spin") == runs[0] + Scheduler.MIN_GAP
        clock.advance(Scheduler.MIN_GAP)
        scheduler.schedule("app", "nudge", clock.now() + dt.timedelta(days=1))  # wakes the loop
        assert ran.wait(10)
        assert len(runs) == 2
    finally:
        scheduler.stop()


def test_work_that_calls_out_runs_on_a_pool_of_its_own() -> None:
    from managed_secrets.service.pools import WorkPools

    pools = WorkPools(local_workers=1, external_workers=1)
    try:
        assert pools.for_spec({"external": {"url": "https://x"}}) is pools.external
        assert pools.for_spec({"database": {"engine": "postgresql"}}) is pools.external
        for spec in ({"generate": {}}, {"valueFrom": {}}, {"sshKey": {}}):
            assert pools.for_spec(spec) is pools.local
        hung = threading.Event()
        pools.submit({"external": {}}, hung.wait, 30)  # the only external thread is now busy
        assert pools.submit({"generate": {}}, lambda: "served").result(timeout=10) == "served"
        hung.set()
    finally:
        pools.shutdown()


def test_the_retry_policy_doubles_caps_and_jitters() -> None:
    from managed_secrets.rotation.engine import Backoff

    exact = Backoff(base_seconds=30, max_seconds=100)
    assert [exact.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
    spread = Backoff(base_seconds=30, max_seconds=3600, jitter=0.2)
    delays = {spread.delay(1).total_seconds() for _ in range(50)}
    assert all(24 <= d <= 30 for d in delays) and len(delays) > 10
