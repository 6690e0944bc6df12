"""The service as one replica among several: it serves only its share, stops at the fence before a side effect,
labels new objects with their shard in the finalizer's write, and the dispatcher coalesces and throttles."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from managed_secrets.domain import SecretValue
from managed_secrets.names import FINALIZER, ROTATE_ANNOTATION, SHARD_LABEL
from managed_secrets.rotation.engine import RotationEngine
from managed_secrets.rotation.strategy import RotationContext, RotationStrategy
from managed_secrets.service.dispatch import Dispatcher
from managed_secrets.service.pools import WorkPools
from managed_secrets.service.sharding import LEADER, Share, shard_of
from managed_secrets.store import RecordKey
from support.world import NAMESPACE, World, managed_secret

SHARDS = 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def replica(world: World, shards: set[int]) -> tuple[Share, Clock]:
    clock = Clock()
    share = Share(SHARDS, clock=clock)
    share.set(frozenset(shards), until=100.0)
    world.service.share = share
    return share, clock


def name_in(shard: int, prefix: str = "db") -> str:
    return next(f"{prefix}-{i}" for i in range(1000) if shard_of(NAMESPACE, f"{prefix}-{i}", SHARDS) == shard)


def test_a_new_object_gets_its_shard_label_in_the_finalizer_write() -> None:
    world = World()
    replica(world, {0, 1, 2, 3})
    name = name_in(2)
    world.apply(managed_secret(name))
    world.event(name, "ADDED")
    meta = world.ms(name)["metadata"]
    assert meta["labels"][SHARD_LABEL] == "2" and FINALIZER in meta["finalizers"]
    assert next((w.verb, w.resource) for w in world.cluster.writes) == ("patch", "managedsecrets")
    assert sum(1 for w in world.cluster.writes if w.resource == "managedsecrets") == 1, "one metadata write"
    assert world.record(name).metadata.tags == (), "the shard label is bookkeeping, not a tag of the record"
    before = len(world.cluster.writes), world.store.writes
    world.event(name)  # the echo of the label and status writes
    assert (len(world.cluster.writes), world.store.writes) == before


def test_objects_outside_the_share_are_left_alone() -> None:
    world = World()
    replica(world, {0})
    theirs = name_in(1)
    world.apply(managed_secret(theirs))
    world.event(theirs, "ADDED")
    assert world.cluster.writes == [] and world.store.writes == 0
    assert world.service.served() == 0


def test_a_label_names_the_shard_even_when_the_hash_differs() -> None:
    world = World()
    replica(world, {3})
    name = name_in(1)
    body = managed_secret(name)
    body["metadata"]["labels"] = {SHARD_LABEL: "3"}
    world.apply(body)
    world.event(name, "ADDED")
    assert world.condition(name, "Ready")["status"] == "True"


def test_losing_the_share_mid_pass_writes_nothing_more() -> None:
    world = World()
    share, clock = replica(world, {0, 1, 2, 3})
    name = name_in(0)
    world.apply(managed_secret(name))
    world.event(name, "ADDED")
    world.event(name)
    status_before = world.status(name)
    mark = world.mark()
    world.edit(name, annotations={ROTATE_ANNOTATION: "r1"})
    clock.now = 101.0  # the renewals stopped: the fence passed
    world.event(name)
    writes, store_writes, events = world.writes_since(mark)
    assert writes == [] and store_writes == 0 and events == []
    assert world.status(name) == status_before
    share.set(frozenset({0}), until=200.0)  # this replica (or the next owner) goes on
    world.event(name)
    assert world.status(name)["currentVersion"] == "v2"


def test_release_forgets_the_objects_and_waits_for_a_pass_in_flight() -> None:
    world = World()
    share, _ = replica(world, {0, 1})
    names = [name_in(0), name_in(1)]
    for name in names:
        world.apply(managed_secret(name))
        world.event(name, "ADDED")
    assert world.service.served() == 2
    lock = world.service._lock(RecordKey(NAMESPACE, names[1]))
    lock.acquire()
    released = threading.Event()

    def release() -> None:
        share.set(frozenset({0}), until=100.0)
        world.service.release(frozenset({1}), timeout=5)
        released.set()

    threading.Thread(target=release).start()
    time.sleep(0.2)
    assert not released.is_set(), "release waits for the pass that holds the object"
    lock.release()
    assert released.wait(5)
    assert world.service.served() == 1
    assert world.service.scheduler.due_time(NAMESPACE, names[1]) is None


class Steps(RotationStrategy):
    name = "test-steps"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def initial(self, ctx: RotationContext) -> SecretValue:
        return SecretValue.from_map({"v": b"0"})

    def create(self, ctx: RotationContext) -> SecretValue:
        self.calls.append("create")
        return SecretValue.from_map({"v": b"1"})

    def set(self, ctx: RotationContext, pending: SecretValue) -> None:
        self.calls.append("set")

    def test(self, ctx: RotationContext, pending: SecretValue) -> None:
        self.calls.append("test")

    def finish(self, ctx: RotationContext, pending: SecretValue) -> None:
        self.calls.append("finish")


def test_the_engine_checks_the_fence_before_each_outside_step_and_records_no_failure() -> None:
    from managed_secrets.errors import Fenced
    from managed_secrets.rotation.engine import Backoff

    world = World()
    world.apply(managed_secret("ext"))
    world.event("ext", "ADDED")
    key = RecordKey(NAMESPACE, "ext")
    engine = RotationEngine(world.vault, Backoff())
    strategy = Steps()
    loaded = world.vault.load(key)
    loaded = engine.begin(key, loaded, strategy, {}, request_id="r1", read_secret=lambda _n: {})
    allowed = iter([True, False])

    def fence() -> None:
        if not next(allowed):
            raise Fenced("moved")

    try:
        engine.advance(key, loaded, strategy, {}, read_secret=lambda _n: {}, version_limit=10, fence=fence)
        raise AssertionError("the fence did not stop the rotation")
    except Fenced:
        pass
    assert strategy.calls == ["create", "set"], "test was not called once the fence closed"
    record = world.vault.load(key).record
    assert record.rotation is not None and record.rotation.step.value == "test"
    assert record.rotation.last_error is None and record.rotation.attempts == 0, "no failure was recorded"
    # The new owner resumes at the persisted step, under the same version id.
    version = record.rotation.version_id
    loaded, finished = engine.advance(
        key, world.vault.load(key), strategy, {}, read_secret=lambda _n: {}, version_limit=10
    )
    assert finished and loaded.record.current is not None and loaded.record.current.id == version
    assert strategy.calls == ["create", "set", "test", "finish"]


def test_the_dispatcher_coalesces_and_blocks_the_watch_when_full() -> None:
    pools = WorkPools(1, 1)
    gate = threading.Event()
    seen: list[tuple[str | None, str]] = []

    def handle(kind: str | None, body: Mapping[str, Any]) -> None:
        gate.wait(5)
        seen.append((kind, body["metadata"]["resourceVersion"]))

    dispatcher = Dispatcher(pools, handle, limit=2)

    def body(name: str, rv: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "n", "name": name, "resourceVersion": rv}, "spec": {}}

    dispatcher.offer(None, body("a", "1"))  # taken by the one worker, which waits at the gate
    time.sleep(0.1)
    dispatcher.offer("MODIFIED", body("b", "2"))
    dispatcher.offer("MODIFIED", body("b", "3"))  # replaces b's pending body
    dispatcher.offer("MODIFIED", body("c", "4"))
    assert len(dispatcher) == 2
    blocked = threading.Event()

    def offer_d() -> None:
        dispatcher.offer("ADDED", body("d", "5"))
        blocked.set()

    threading.Thread(target=offer_d).start()
    time.sleep(0.2)
    assert not blocked.is_set(), "the watch waits while the limit of objects is pending"
    gate.set()
    assert blocked.wait(5)
    deadline = time.monotonic() + 5
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(seen, key=lambda s: s[1]) == [(None, "1"), ("MODIFIED", "3"), ("MODIFIED", "4"), ("ADDED", "5")]
    pools.shutdown()


def test_everything_share_is_the_single_process_default() -> None:
    share = Share(1, everything=True)
    assert share.leader and share.holds(0) and share.owns("a", "b") and LEADER in share.active


def test_the_dispatcher_gives_an_object_one_worker_at_a_time() -> None:
    """An object whose handling hangs (a webhook) holds one thread; its later events wait for that thread."""
    pools = WorkPools(1, 2)
    gate = threading.Event()
    handled: list[str] = []
    running = []

    def handle(kind: str | None, body: Mapping[str, Any]) -> None:
        running.append(threading.current_thread().name)
        gate.wait(5)
        handled.append(body["metadata"]["resourceVersion"])

    dispatcher = Dispatcher(pools, handle, limit=10)
    external = {"external": {"url": "https://x"}}

    def body(rv: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "n", "name": "hung", "resourceVersion": rv}, "spec": external}

    dispatcher.offer(None, body("1"))
    time.sleep(0.1)
    dispatcher.offer("MODIFIED", body("2"))
    dispatcher.offer("MODIFIED", body("3"))
    time.sleep(0.1)
    assert len(running) == 1, "the second event did not take another thread"
    gate.set()
    deadline = time.monotonic() + 5
    while len(handled) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handled == ["1", "3"] and len(set(running)) == 1
    pools.shutdown()
