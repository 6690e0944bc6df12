"""Which replica serves which ManagedSecrets, decided from the replicas' Leases alone (pure logic, no I/O).

Every ManagedSecret falls in one of ``shards`` fixed shards (a stable hash of namespace/name; the operator
puts the number in the ``managedsecrets.io/shard`` label so a replica's watch can ask the API server for its
shards only). One more pseudo-shard, ``LEADER``, stands for the cluster-wide jobs.

Each replica renews a Lease of its own, naming the shards it holds. A shard's desired owner is the live member
with the highest rendezvous hash for it (so a join or a leave moves only about 1/n of the shards). A replica
acts on a shard only after two steps: it wrote the shard into its Lease (a claim), and a later read of every
Lease showed no other live member holding it. A claim that meets another holder is dropped again. So two
replicas never both act on a shard: of two claims, the second one's confirming read sees the first.

A member is live while its Lease keeps changing: another replica counts a Lease as expired ``lease_seconds``
after it last saw it change, on its own clock (never comparing timestamps across machines, as client-go's leader
election does), and only over reads that came regularly (a stall of its own, or of the API server, restarts the
count rather than expiring everyone). A replica whose own renewals fail stops acting ``fence_seconds``
(< ``lease_seconds``) after its last renewal began: before anyone else may count its Lease as expired.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from managed_secrets.names import SHARD_LABEL

__all__ = ["LEADER", "Member", "Membership", "Plan", "Share", "format_held", "parse_held", "shard_of"]

LEADER = "leader"
"""The pseudo-shard whose holder runs the cluster-wide jobs (purge sweep, KEK re-wrap, keyring creation)."""

Shard = int | str


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard of a ManagedSecret: stable across processes, versions and machines (not Python's hash())."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def _score(shard: Shard, identity: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{shard}|{identity}".encode()).digest()[:8], "big")


def parse_held(text: str | None) -> frozenset[Shard]:
    held: set[Shard] = set()
    for part in (p.strip() for p in (text or "").split(",")):
        if part == LEADER:
            held.add(LEADER)
        elif part.isdigit():
            held.add(int(part))
    return frozenset(held)


def format_held(held: Iterable[Shard]) -> str:
    numbers = sorted(s for s in held if isinstance(s, int))
    return ",".join([*(str(n) for n in numbers), *([LEADER] if LEADER in held else [])])


@dataclass(frozen=True)
class Member:
    """One replica's Lease as read: its ``revision`` (resourceVersion), the shards it holds, whether it leaves."""

    identity: str
    revision: str
    held: frozenset[Shard] = frozenset()
    standby: bool = False
    """On standby (starting, not serving yet): given no shard of ManagedSecrets, possibly the leader's."""


@dataclass(frozen=True)
class Plan:
    """What this replica does after a read of every Lease."""

    release: frozenset[Shard]
    """Held shards that another member should own now: stop acting, drain, then drop them from the Lease."""
    claim: frozenset[Shard]
    """Shards this replica should own and nobody holds: write them into the Lease, then confirm."""
    active: frozenset[Shard]
    """Shards this replica may act on now (held, desired, and nobody else holds them)."""
    waiting: Mapping[Shard, str] = field(default_factory=dict)
    """Shards this replica should own that another member still holds (shard -> that member)."""


@dataclass
class _Seen:
    revision: str
    changed_at: float


@dataclass
class Membership:
    identity: str
    shards: int
    lease_seconds: float
    fence_seconds: float
    standby: bool = False
    """This replica cannot serve yet (it is starting): it may hold the leader's shard, no other."""
    read_gap: float = math.inf
    """Reads further apart than this (our process or the API server stalled) prove nothing about the others'
    renewals in between: every Lease then counts as changed at the read that ends the gap."""
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _members: dict[str, Member] = field(default_factory=dict)
    _renewed_at: float | None = None
    _read_at: float | None = None

    @property
    def all_shards(self) -> frozenset[Shard]:
        return frozenset([*range(self.shards), LEADER])

    # --- what the reads and writes bring ---------------------------------------------------------------

    def observe(self, members: Iterable[Member], now: float) -> None:
        """Every member Lease as just read (ours included); ``now`` from a monotonic clock."""
        current = {m.identity: m for m in members}
        stalled = self._read_at is not None and now - self._read_at > self.read_gap
        self._read_at = now
        for identity, member in current.items():
            seen = self._seen.get(identity)
            if seen is None or seen.revision != member.revision or stalled:
                self._seen[identity] = _Seen(member.revision, now)
        for identity in list(self._seen):
            if identity not in current:
                del self._seen[identity]
        self._members = current

    def renewed(self, started_at: float) -> None:
        """Our Lease was written; the write began at ``started_at`` (monotonic)."""
        self._renewed_at = started_at

    @property
    def fenced_at(self) -> float:
        """When this replica must stop acting unless it renews again (monotonic)."""
        return -math.inf if self._renewed_at is None else self._renewed_at + self.fence_seconds

    def lost(self) -> None:
        """Our Lease is not ours alone: act on nothing until it is renewed again."""
        self._renewed_at = None

    def fresh(self, now: float) -> bool:
        """Whether this replica may act at all: its last renewal began less than ``fence_seconds`` ago."""
        return self._renewed_at is not None and now - self._renewed_at < self.fence_seconds

    def live(self, now: float) -> list[Member]:
        """Members whose Lease changed within ``lease_seconds`` (ours counts while it is fresh)."""
        out = []
        for identity, member in self._members.items():
            if identity == self.identity:
                if self.fresh(now):
                    out.append(member)
                continue
            seen = self._seen.get(identity)
            if seen is not None and now - seen.changed_at < self.lease_seconds:
                out.append(member)
        return out

    def expired(self, now: float, after: float) -> list[str]:
        """Identities of other members whose Lease has not changed for ``after`` seconds (to clean up)."""
        return [
            identity
            for identity, seen in self._seen.items()
            if identity != self.identity and now - seen.changed_at >= after
        ]

    # --- deciding ---------------------------------------------------------------------------------------

    def desired(self, now: float) -> dict[Shard, str]:
        """Each shard's desired owner: the live members that serve (not on standby: starting, or unable to open
        the keyring) for the ManagedSecrets' shards, every live member for the leader's (a first start needs a
        leader to create the keyring before anyone can serve)."""
        others = [m for m in self.live(now) if m.identity != self.identity]
        everyone = [m.identity for m in others] + ([self.identity] if self.fresh(now) else [])
        serving = [m.identity for m in others if not m.standby]
        if self.fresh(now) and not self.standby:
            serving.append(self.identity)

        def best(shard: Shard, candidates: list[str]) -> str | None:
            return max(candidates, key=lambda i: _score(shard, i)) if candidates else None

        out: dict[Shard, str] = {}
        for shard in self.all_shards:
            owner = best(shard, everyone if shard == LEADER else serving)
            if owner is not None:
                out[shard] = owner
        return out

    def plan(self, held: frozenset[Shard], active: frozenset[Shard], now: float) -> Plan:
        """From ``held`` (in our Lease) and ``active`` (confirmed), what to release, claim and act on."""
        if not self.fresh(now):
            return Plan(release=frozenset(), claim=frozenset(), active=frozenset())
        desired = self.desired(now)
        holders: dict[Shard, str] = {}
        for member in self.live(now):
            if member.identity != self.identity:
                holders.update(dict.fromkeys(member.held, member.identity))
        others = set(holders)
        mine = frozenset(s for s, owner in desired.items() if owner == self.identity)
        release = held - mine
        # A claim still unconfirmed that meets another holder is dropped (the other may act already).
        contested = (held - active) & others
        claim = frozenset(s for s in mine - held if s not in others)
        confirmed = frozenset(s for s in (held & mine) - contested if s not in others or s in active)
        waiting = {s: holders[s] for s in mine - held if s in holders}
        return Plan(release=release | contested, claim=claim, active=confirmed, waiting=waiting)


class Share:
    """The shards this replica may act on, and until when (the fence): what the service asks before each side
    effect. The coordinator sets it after each renewal of the replica's Lease.

    Built with ``everything=True`` (one process, tests) it holds every shard for good."""

    def __init__(self, shards: int, *, everything: bool = False, clock: Callable[[], float] = time.monotonic):
        self.shards = shards
        self._clock = clock
        self._active: frozenset[Shard] = frozenset([*range(shards), LEADER]) if everything else frozenset()
        self._until = math.inf if everything else -math.inf

    def set(self, active: frozenset[Shard], until: float) -> None:
        self._active, self._until = active, until

    @property
    def active(self) -> frozenset[Shard]:
        return self._active if self._clock() < self._until else frozenset()

    def holds(self, shard: Shard) -> bool:
        return shard in self._active and self._clock() < self._until

    @property
    def leader(self) -> bool:
        return self.holds(LEADER)

    def shard(self, namespace: str, name: str, labels: Mapping[str, str] | None = None) -> int:
        """The object's shard: its shard label when that is valid, else the hash of its name."""
        label = (labels or {}).get(SHARD_LABEL)
        if label is not None and label.isdigit() and int(label) < self.shards:
            return int(label)
        return shard_of(namespace, name, self.shards)

    def owns(self, namespace: str, name: str, labels: Mapping[str, str] | None = None) -> bool:
        return self.holds(self.shard(namespace, name, labels))
