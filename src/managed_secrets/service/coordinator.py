"""The renewal loop of one replica: read every member Lease, release and claim shards, renew our Lease.

The decisions are ``service.sharding``'s; this is the I/O around them, against a ``Leases`` store (the
Kubernetes one in ``cluster.leases``; an in-memory one in the unit tests, which run several coordinators
against it). ``round()`` is one step, so tests drive it with a fake clock; ``start()`` runs it every
``renew_seconds`` in a thread.

Order within a round, and why:
1. read every Lease (a quorum read);
2. shards we should not act on any more leave ``share`` at once (the fence), then their passes are drained,
   and only then does our Lease stop naming them: the next owner can start only after we stopped;
3. claims are written with the renewal;
4. after a claim, every Lease is read again: a claimed shard nobody else holds is ours to act on.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

from managed_secrets.cluster import LeaseRecord, Leases
from managed_secrets.errors import safe_message
from managed_secrets.service.sharding import LEADER, Member, Membership, Shard, Share, format_held, parse_held

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)


ActiveChanged = Callable[[frozenset[Shard]], None]
"""Told the shards this replica acts on, each time they change (the ManagedSecret watches follow it)."""
Release = Callable[[frozenset[Shard], float], None]
"""Drains the passes still running on shards that left (at most the given seconds)."""


class Coordinator:
    def __init__(
        self,
        leases: Leases,
        *,
        identity: str,
        lease_name: str,
        share: Share,
        lease_seconds: float,
        renew_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_count: Callable[[str, int], None] = lambda _direction, _n: None,
    ) -> None:
        self.identity = identity
        self.lease_name = lease_name
        self.share = share
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        fence = max(renew_seconds, lease_seconds - 2 * renew_seconds)
        self.membership = Membership(identity, share.shards, lease_seconds, fence, read_gap=3 * renew_seconds)
        self.membership.standby = True  # until ``attach``: the service is not built yet
        self.first_round = threading.Event()
        self._leases = leases
        self._clock = clock
        self._on_count = on_count
        self._held: frozenset[Shard] = frozenset()
        self._active: frozenset[Shard] = frozenset()
        self._revision: str | None = None
        self._written: str | None = None  # the resourceVersion of our last write of our Lease
        self._adopting = False
        self._twin = False
        self._quiet_until = -math.inf
        self._waiting: dict[Shard, str] = {}
        self._listeners: list[ActiveChanged] = []
        self._release: Release = lambda _shards, _timeout: None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="coordinator", daemon=True)
        self.live_members = 0
        self._records: list[LeaseRecord] = []  # every member Lease, as the last read found them

    @property
    def active(self) -> frozenset[Shard]:
        return self._active

    def attach(self, on_active: ActiveChanged, release: Release) -> None:
        """Follows the active shards from now on (told the current ones at once)."""
        self._listeners.append(on_active)
        self._release = release
        self.membership.standby = False  # serving now: the next rounds claim shards of ManagedSecrets too
        on_active(self.share.active)

    # --- running -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self, drain_seconds: float = 10.0) -> None:
        """Leaves: stops acting on every shard, drains, and deletes our Lease (others claim at once)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.renew_seconds + 10)
        self._set_active(frozenset(), drain_seconds)
        if self._revision is not None:
            try:
                self._leases.delete(self.lease_name, self._revision)
            except Exception as e:
                log.warning("could not delete the Lease %s: %s", self.lease_name, safe_message(e))

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.round()
                failures = 0
            except Exception as e:  # an API outage: the fence stops us acting before anyone may take over
                failures += 1
                if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th... failure in a row
                    log.warning(
                        "renewing the membership Lease failed (%d in a row): %s", failures, safe_message(e)
                    )
            # Backoff (up to 4 periods) while failing, and a little jitter: replicas do not renew in lockstep.
            period = self.renew_seconds * min(4, 2 ** max(0, failures - 1))
            wait = period * random.uniform(0.9, 1.1) - (self._clock() - started)  # noqa: S311
            if self._stop.wait(max(0.05, wait)):
                return

    # --- one round -----------------------------------------------------------------------------------

    def round(self) -> None:
        self._read()
        if self._twin:
            # Someone else wrote our Lease: another process runs under our identity (or a previous incarnation
            # was still renewing). Stop acting now; take the Lease back and wait out its fence before claiming.
            self._twin = False
            self._set_active(frozenset(), self.lease_seconds / 2)
            self.membership.lost()
        if not self.membership.fresh(self._clock()):
            # First round, or renewals failed for longer than the fence: others may count our Lease as expired
            # and have taken our shards. Act on nothing, hold nothing, renew; then claim afresh.
            self._set_active(frozenset(), self.lease_seconds / 2)
            self._renew(frozenset())
            self._read()
        now = self._clock()
        plan = self.membership.plan(self._held, self._active, now)
        if plan.waiting != self._waiting:
            self._waiting = dict(plan.waiting)
            for holder in sorted(set(plan.waiting.values())):
                shards = format_held(s for s, h in plan.waiting.items() if h == holder)
                log.info("shards %s wait for replica %s to release them", shards, holder)
        stopping = self._active - plan.active
        if stopping:
            self._set_active(self._active & plan.active, self.lease_seconds / 2)
        claim = plan.claim if self._clock() >= self._quiet_until else frozenset()
        held = (self._held - plan.release) | claim
        self._renew(held)
        if plan.release:
            self._on_count("released", len(plan.release))
            log.info("released shards %s", format_held(plan.release) or "-")
        self._set_active(plan.active & held, 0)
        if claim:
            self._read()
            confirm = self.membership.plan(self._held, self._active, self._clock())
            newly = (confirm.active & self._held) - self._active
            if newly:
                self._on_count("claimed", len(newly))
                log.info("serving shards %s", format_held(newly))
            self._set_active(confirm.active & self._held, 0)
        self._cleanup()
        self.first_round.set()

    def _read(self) -> None:
        records = self._records = self._leases.list()
        members = []
        for record in records:
            if record.shard_count is not None and record.shard_count != self.share.shards:
                log.warning(
                    "replica %s uses %d shards, this one %d: every replica must have the same MSO_SHARDS",
                    record.identity,
                    record.shard_count,
                    self.share.shards,
                )
            if record.name == self.lease_name:
                if self._written is not None and record.revision != self._written:
                    log.error(
                        "the Lease %s was written by another process: two replicas run as %s (MSO_IDENTITY / "
                        "POD_NAME must be unique); this one stops acting until it holds the Lease alone",
                        self.lease_name,
                        self.identity,
                    )
                    self._twin = True
                if self._written is None or self._twin:
                    # A Lease of our name we did not write in this process: a previous incarnation's (a crash
                    # restart keeps the pod name) or a twin's. Taken over; its writer is fenced once its renewals
                    # fail against our write, which ``_quiet_until`` waits for.
                    self._adopting = True
                    self._written = None
                self._revision = record.revision
            members.append(Member(record.identity, record.revision, parse_held(record.held), record.standby))
        if not any(r.name == self.lease_name for r in records):
            self._revision = None
            self._written = None
            self._held = frozenset()  # our Lease is gone (deleted as expired): we hold nothing
        self.membership.observe(members, self._clock())
        self.live_members = len(self.membership.live(self._clock()))

    def _renew(self, held: frozenset[Shard]) -> None:
        started = self._clock()
        self._revision = self._leases.write(
            self.lease_name,
            self.identity,
            held=format_held(held),
            shard_count=self.share.shards,
            lease_seconds=max(1, round(self.lease_seconds)),
            revision=self._revision,
            standby=self.membership.standby,
        )
        self._written = self._revision
        if self._adopting:
            self._adopting = False
            self._quiet_until = started + self.membership.fence_seconds
            log.info(
                "took over the Lease %s; claiming shards after %.0fs",
                self.lease_name,
                self.membership.fence_seconds,
            )
        self._held = held
        self.membership.renewed(started)
        self.share.set(self._active, self.membership.fenced_at)

    def _set_active(self, active: frozenset[Shard], drain_seconds: float) -> None:
        stopping = self._active - active
        changed = active != self._active
        self._active = active
        self.share.set(active, self.membership.fenced_at)
        if changed:
            for listener in self._listeners:
                listener(active)
        if stopping:
            self._release(stopping, drain_seconds)

    def _cleanup(self) -> None:
        """The leader deletes the Leases of replicas counted out (a killed pod leaves its Lease behind): a replica
        started later would otherwise see it for the first time, count it live for a Lease duration, and wait for
        it to release shards it no longer holds. One counted out has fenced itself already; should it come back,
        it finds its Lease gone, holds nothing and claims afresh."""
        if LEADER not in self._active:
            return
        expired = set(self.membership.expired(self._clock(), after=self.lease_seconds))
        for record in self._records:
            if record.identity in expired and record.name != self.lease_name:
                log.info("deleting the Lease of replica %s: counted out", record.identity)
                # Guarded by the revision read: a Lease renewed meanwhile is kept.
                self._leases.delete(record.name, record.revision)
