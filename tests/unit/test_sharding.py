"""Replicas sharing the ManagedSecrets: several coordinators against one in-memory Lease store, a fake clock.

What must hold whatever the interleaving: no shard (and not the leader pseudo-shard) is ever active on two
replicas at once; every shard is served while replicas are alive; a replica that cannot renew stops acting
before another may take its shards over; a replica that leaves hands its shards over at once.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections import Counter
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_secrets.cluster import LeaseRecord
from managed_secrets.service.coordinator import Coordinator
from managed_secrets.service.sharding import (
    LEADER,
    Member,
    Membership,
    Share,
    format_held,
    parse_held,
    shard_of,
)

SHARDS = 8
LEASE = 6.0
RENEW = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Outage(Exception):
    pass


class MemoryLeases:
    """Leases as the API server keeps them: a resourceVersion per write, 409 on a stale one."""

    def __init__(self) -> None:
        self.items: dict[str, LeaseRecord] = {}
        self._rv = itertools.count(1)
        self.down: set[str] = set()  # identities whose API access is cut
        self.caller = ""

    def list(self) -> list[LeaseRecord]:
        if self.caller in self.down:
            raise Outage()
        return list(self.items.values())

    def write(
        self,
        name: str,
        identity: str,
        *,
        held: str,
        shard_count: int,
        lease_seconds: int,
        revision: str | None,
        standby: bool = False,
    ) -> str:
        if self.caller in self.down:
            raise Outage()
        current = self.items.get(name)
        if (current is None) != (revision is None) or (current is not None and current.revision != revision):
            raise Outage("409")
        rv = str(next(self._rv))
        self.items[name] = LeaseRecord(name, identity, rv, held, standby, shard_count)
        return rv

    def delete(self, name: str, revision: str | None = None) -> None:
        if self.caller in self.down:
            raise Outage()
        current = self.items.get(name)
        if current is not None and (revision is None or current.revision == revision):
            del self.items[name]


class Replica:
    def __init__(self, identity: str, leases: MemoryLeases, clock: Clock) -> None:
        self.identity = identity
        self.name = identity
        self.leases = leases
        self.share = Share(SHARDS, clock=clock)
        self.released: list[frozenset[object]] = []
        self.coordinator = Coordinator(
            leases,
            identity=identity,
            lease_name=f"member-{identity}",
            share=self.share,
            lease_seconds=LEASE,
            renew_seconds=RENEW,
            clock=clock,
        )
        self.coordinator.attach(lambda _active: None, lambda shards, _t: self.released.append(shards))

    def round(self) -> None:
        self.leases.caller = self.identity
        with contextlib.suppress(Outage):
            self.coordinator.round()


def acting(replicas: Iterable[Replica]) -> Counter[object]:
    counts: Counter[object] = Counter()
    for r in replicas:
        counts.update(r.share.active)
    return counts


def assert_exclusive(replicas: Iterable[Replica]) -> None:
    doubled = {s: n for s, n in acting(replicas).items() if n > 1}
    assert not doubled, f"shards active on more than one replica: {doubled}"


def run(replicas: list[Replica], clock: Clock, seconds: float, rng: random.Random | None = None) -> None:
    """Every replica renews about once a second, in a shuffled order; exclusivity is checked after each step."""
    rng = rng or random.Random(0)
    end = clock.now + seconds
    while clock.now < end:
        order = list(replicas)
        rng.shuffle(order)
        for r in order:
            r.round()
            assert_exclusive(replicas)
        clock.now += RENEW * rng.uniform(0.5, 1.0)


def test_shard_of_is_stable_and_spreads() -> None:
    assert shard_of("app", "db", 16) == shard_of("app", "db", 16)
    counts = Counter(shard_of("ns", f"name-{i}", 16) for i in range(1600))
    assert set(counts) == set(range(16)) and max(counts.values()) < 2 * min(counts.values())


def test_held_round_trips() -> None:
    assert parse_held(format_held({3, 1, LEADER})) == {1, 3, LEADER}
    assert parse_held("") == frozenset() and parse_held("x,2") == {2}


def test_share_label_wins_when_valid() -> None:
    share = Share(4, everything=True)
    assert share.shard("a", "b", {"managedsecrets.io/shard": "2"}) == 2
    assert share.shard("a", "b", {"managedsecrets.io/shard": "9"}) == shard_of("a", "b", 4)


def test_one_replica_takes_every_shard_in_one_round() -> None:
    clock = Clock()
    leases = MemoryLeases()
    alone = Replica("a", leases, clock)
    alone.round()
    assert alone.share.active == frozenset([*range(SHARDS), LEADER])
    assert alone.share.leader


def test_three_replicas_split_the_shards_exclusively() -> None:
    clock = Clock()
    leases = MemoryLeases()
    replicas = [Replica(i, leases, clock) for i in "abc"]
    run(replicas, clock, 10)
    counts = acting(replicas)
    assert set(counts) == {*range(SHARDS), LEADER}, "every shard is served"
    assert all(n == 1 for n in counts.values())
    assert all(r.share.active for r in replicas), "each replica serves a share"


def test_a_joining_replica_gets_shards_only_after_they_were_released() -> None:
    clock = Clock()
    leases = MemoryLeases()
    a = Replica("a", leases, clock)
    run([a], clock, 3)
    b = Replica("b", leases, clock)
    run([a, b], clock, 6)
    assert b.share.active and a.share.active
    moved = set().union(*a.released)
    assert moved == set(b.share.active), "exactly what b serves left a first"


def test_a_killed_replica_is_taken_over_after_its_lease_expires() -> None:
    clock = Clock()
    leases = MemoryLeases()
    replicas = [Replica(i, leases, clock) for i in "abc"]
    run(replicas, clock, 8)
    dead = replicas[0]
    orphaned = set(dead.share.active)
    killed_at = clock.now
    # SIGKILL: it never runs again; its Lease stays as it was.
    survivors = replicas[1:]
    taken: float | None = None
    while clock.now < killed_at + 30:
        run(survivors, clock, 0.5)
        if orphaned <= set(acting(survivors)):
            taken = clock.now
            break
        # Its own view of the share expires too (it would have stopped acting, had it been alive).
        assert not (orphaned & set(acting(survivors))) or clock.now - killed_at >= LEASE
    assert taken is not None, "the dead replica's shards were taken over"
    assert LEASE <= taken - killed_at <= LEASE + 3 * RENEW


def test_a_replica_that_cannot_renew_stops_acting_before_others_take_over() -> None:
    clock = Clock()
    leases = MemoryLeases()
    replicas = [Replica(i, leases, clock) for i in "abc"]
    run(replicas, clock, 8)
    cut = replicas[0]
    mine = set(cut.share.active)
    leases.down.add(cut.identity)  # its API access is revoked: it can neither read nor renew
    stopped_at = taken_at = None
    while clock.now < 1000 + 60 and (stopped_at is None or taken_at is None):
        run(replicas, clock, 0.25)
        if stopped_at is None and not cut.share.active:
            stopped_at = clock.now
        if taken_at is None and mine <= set(acting(replicas[1:])):
            taken_at = clock.now
    assert stopped_at is not None and taken_at is not None
    assert stopped_at < taken_at, "the partitioned replica stopped before anyone took its shards"


def test_a_leaving_replica_hands_over_at_once() -> None:
    clock = Clock()
    leases = MemoryLeases()
    replicas = [Replica(i, leases, clock) for i in "abc"]
    run(replicas, clock, 8)
    leaving = replicas[0]
    handed = set(leaving.share.active)
    leases.caller = leaving.identity
    leaving.coordinator.stop(drain_seconds=0)
    assert not leaving.share.active and f"member-{leaving.identity}" not in leases.items
    run(replicas[1:], clock, 2.5)
    assert handed <= set(acting(replicas[1:])), "taken within a few renewals, not after the Lease duration"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), joins=st.lists(st.sampled_from("abcde"), min_size=1, max_size=8))
def test_exclusive_under_random_joins_kills_and_outages(seed: int, joins: list[str]) -> None:
    rng = random.Random(seed)
    clock = Clock()
    leases = MemoryLeases()
    alive: dict[str, Replica] = {}
    for identity in joins:
        if identity in alive and rng.random() < 0.5:
            # A crash (no handover), or an outage of its API access for a while.
            if rng.random() < 0.5:
                del alive[identity]
            else:
                leases.down.symmetric_difference_update({identity})
        elif identity not in alive:
            alive[identity] = Replica(f"{identity}{len(leases.items)}{seed}", leases, clock)
        run(list(alive.values()), clock, rng.uniform(0.5, 8), rng)
    leases.down.clear()
    run(list(alive.values()), clock, 3 * LEASE, rng)
    if alive:
        assert set(acting(alive.values())) == {*range(SHARDS), LEADER}, "all served once things settle"


def test_membership_ignores_a_stale_lease_it_first_sees() -> None:
    m = Membership("me", SHARDS, LEASE, LEASE - 2)
    m.renewed(0.0)
    m.observe([Member("me", "1"), Member("old", "7", frozenset({1, 2}))], now=0.0)
    assert {x.identity for x in m.live(0.0)} == {"me", "old"}, "first seen counts as a change"
    m.renewed(5.0)
    m.observe([Member("me", "2"), Member("old", "7", frozenset({1, 2}))], now=LEASE + 0.1)
    assert {x.identity for x in m.live(LEASE + 0.1)} == {"me"}
    plan = m.plan(frozenset(), frozenset(), LEASE + 0.1)
    assert {1, 2} <= plan.claim, "an expired holder holds nothing"


@pytest.mark.parametrize("members", [2, 3, 5])
def test_rendezvous_moves_few_shards_when_one_joins(members: int) -> None:
    def owners(ids: list[str]) -> dict[object, str]:
        m = Membership(ids[0], 64, LEASE, LEASE - 2)
        m.renewed(0.0)
        m.observe([Member(i, "1") for i in ids], now=0.0)
        return m.desired(0.0)

    ids = [f"r{i}" for i in range(members)]
    before, after = owners(ids), owners([*ids, "new"])
    moved = [s for s in before if before[s] != after[s]]
    assert all(after[s] == "new" for s in moved), "only shards that go to the newcomer move"
    assert len(moved) <= 2.5 * 65 / (members + 1)


def test_a_claim_that_meets_another_claim_is_not_acted_on_and_is_dropped() -> None:
    """Two replicas with different views claim the same shard; the one whose confirming read sees the other's
    claim never acts on it (the other's read came first, so it may act)."""
    clock = Clock()
    leases = MemoryLeases()
    a = Replica("a", leases, clock)
    a.round()
    assert a.share.active == frozenset([*range(SHARDS), LEADER])
    write = leases.write

    def racing_write(name: str, identity: str, **kwargs: object) -> str:
        rv = write(name, identity, **kwargs)  # type: ignore[arg-type]
        if identity == "b" and kwargs["held"] and "rival" not in leases.items:
            # Between b's claim and its confirming read, a rival that had a stale view claims every shard.
            leases.items["rival"] = LeaseRecord("rival", "rival", "900", format_held(range(SHARDS)), False, SHARDS)
        return rv

    leases.write = racing_write  # type: ignore[method-assign]
    leases.delete("member-a")  # a leaves without a handover (as if killed and its Lease cleaned up)
    b = Replica("b", leases, clock)
    b.round()  # renews holding nothing, then claims; the rival's claim lands before b confirms
    assert parse_held(leases.items["member-b"].held) >= set(range(SHARDS)), "b did claim them"
    assert not (b.share.active & set(range(SHARDS))), "no shard claimed by two is acted on by the later reader"
    clock.now += 0.5
    b.round()
    assert not (parse_held(leases.items["member-b"].held) & set(range(SHARDS))), "the contested claims dropped"


def test_a_stall_of_our_own_reads_expires_nobody() -> None:
    m = Membership("me", SHARDS, LEASE, LEASE - 2, read_gap=3 * RENEW)
    m.renewed(0.0)
    m.observe([Member("me", "1"), Member("other", "5", frozenset({1}))], now=0.0)
    # Our process (or the API server) stalled for longer than the Lease duration: the other's Lease is unchanged
    # in the first read after the stall, which proves nothing about its renewals.
    m.renewed(LEASE + 1)
    m.observe([Member("me", "2"), Member("other", "5", frozenset({1}))], now=LEASE + 1)
    assert {x.identity for x in m.live(LEASE + 1)} == {"me", "other"}
    # Regular reads that keep seeing it unchanged do expire it.
    for t in range(int(LEASE) + 2, 2 * int(LEASE) + 3):
        m.renewed(float(t))
        m.observe([Member("me", str(t)), Member("other", "5", frozenset({1}))], now=float(t))
    assert {x.identity for x in m.live(2 * LEASE + 2)} == {"me"}


def test_a_crash_restart_under_the_same_name_takes_its_lease_back_after_the_fence() -> None:
    """A container restarted in the same pod keeps its name: its previous incarnation's Lease is taken over,
    and shards are claimed once that incarnation would have fenced itself, not after the Lease expires."""
    clock = Clock()
    leases = MemoryLeases()
    first = Replica("pod-a", leases, clock)
    run([first], clock, 3)
    assert first.share.active
    crashed_at = clock.now
    again = Replica("pod-a", leases, clock)  # same identity, same Lease name
    served_at = None
    while clock.now < crashed_at + 30:
        again.round()
        if again.share.active == frozenset([*range(SHARDS), LEADER]):
            served_at = clock.now
            break
        clock.now += RENEW
    assert served_at is not None
    fence = LEASE - 2 * RENEW
    assert fence <= served_at - crashed_at < LEASE, "after the old incarnation's fence, before its Lease expiry"


def test_two_processes_under_one_name_are_never_active_together() -> None:
    clock = Clock()
    leases = MemoryLeases()
    twins = [Replica("same", leases, clock), Replica("same", leases, clock)]
    rng = random.Random(7)
    for _ in range(200):
        twin = rng.choice(twins)
        leases.caller = twin.identity
        with contextlib.suppress(Outage):
            twin.coordinator.round()
        assert not (twins[0].share.active & twins[1].share.active), "both twins act on the same shards"
        clock.now += rng.uniform(0.1, 0.6)


def test_a_replica_that_cannot_serve_yet_is_given_no_shard_of_managed_secrets() -> None:
    """A replica starting (or stuck before it can open the keyring) is on standby: the others keep its share."""
    clock = Clock()
    leases = MemoryLeases()
    serving = Replica("serving", leases, clock)
    run([serving], clock, 3)
    share = Share(SHARDS, clock=clock)
    starting = Coordinator(
        leases,
        identity="starting",
        lease_name="member-starting",
        share=share,
        lease_seconds=LEASE,
        renew_seconds=RENEW,
        clock=clock,
    )
    for _ in range(10):
        leases.caller = "starting"
        starting.round()
        serving.round()
        clock.now += RENEW
    assert not (share.active - {LEADER}), "no shard of ManagedSecrets while on standby"
    assert set(range(SHARDS)) <= serving.share.active
    assert LEADER in share.active | serving.share.active
    starting.attach(lambda _a: None, lambda _s, _t: None)
    for _ in range(5):
        leases.caller = "starting"
        starting.round()
        serving.round()
        clock.now += RENEW
    assert share.active & set(range(SHARDS)), "once it serves it gets its share"
    assert_exclusive([serving, type("R", (), {"share": share})()])  # type: ignore[list-item]


def test_the_lease_of_a_dead_replica_is_deleted_so_a_newcomer_does_not_wait_for_it() -> None:
    clock = Clock()
    leases = MemoryLeases()
    replicas = [Replica(i, leases, clock) for i in "abc"]
    run(replicas, clock, 8)
    dead = replicas.pop(0)
    run(replicas, clock, LEASE + 3 * RENEW)
    assert f"member-{dead.identity}" not in leases.items, "the leader deleted it once counted out"
    newcomer = Replica("d", leases, clock)
    replicas.append(newcomer)
    run(replicas, clock, 3 * RENEW)
    assert newcomer.share.active, "the newcomer got its share within a few renewals"
    assert newcomer.coordinator._waiting == {} or all(
        h != dead.identity for h in newcomer.coordinator._waiting.values()
    )
