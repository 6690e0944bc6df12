"""The one reconcile path behind every handler: create, update, resume, source change, drift, delete.

``ManagedSecretService`` takes the per-object lock, parses the body once, and composes the rooms of the
service in order: lifecycle (load, restore) -> sources (store a new value if the source wants one) ->
stage moves -> rotating -> projecting; then the error policy, the status patch and the next wake-up.

``reconcile`` is idempotent: run twice on an unchanged world it writes nothing the second time (no store
write, no Secret write, no status patch, no Event).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from managed_secrets.cluster import Cluster
from managed_secrets.domain.clock import iso_seconds
from managed_secrets.domain.schedule import MIN_INTERVAL
from managed_secrets.errors import (
    Fenced,
    InvalidRequest,
    KeyringError,
    KeyServiceUnavailable,
    KubernetesApiError,
    ManagedSecretsError,
    RecordTooLarge,
    ReferenceRefused,
    SourceUnavailable,
    StoreError,
    safe_message,
)
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.names import ADMISSION_POLICY, FINALIZER, SHARD_LABEL
from managed_secrets.projection import ProjectionConflict, ProjectionError, ProjectionRejected, RenderError
from managed_secrets.projection.restart import RestartError
from managed_secrets.rotation.engine import Backoff, RotationEngine
from managed_secrets.rotation.strategy import RotationStepFailed
from managed_secrets.service import lifecycle
from managed_secrets.service.conditions import Outcome, desired_status, rotation_status, status_differs
from managed_secrets.service.context import Deps, Pass
from managed_secrets.service.events import EventRecorder
from managed_secrets.service.hosts import host_status, targets_of
from managed_secrets.service.pools import WorkPools
from managed_secrets.service.projecting import project
from managed_secrets.service.resource import ManagedSecretResource
from managed_secrets.service.rotating import rotate
from managed_secrets.service.scheduler import Scheduler
from managed_secrets.service.sharding import Share
from managed_secrets.service.sources import ensure_value
from managed_secrets.service.spec import ManagedSecretSpec
from managed_secrets.service.stage_moves import move_stage
from managed_secrets.service.watching import Revisions, Watched, requests_digest, resumable, source_of
from managed_secrets.store import RecordKey, SecretVault

__all__ = ["ManagedSecretService", "Outcome"]

log = logging.getLogger(__name__)

# Errors that wait for a change in the world (the Secret watch or a spec edit brings the object back). Anything
# else may go away by itself (an API or store outage, an endpoint down at the first value): it is retried with
# exponential backoff and jitter, the attempts persisted in status.retry so that a restart honours them.
_WAITS = (
    ProjectionConflict,
    ProjectionRejected,
    SourceUnavailable,
    InvalidRequest,
    RenderError,
    KeyringError,
    RecordTooLarge,
)
_REASONS: dict[type[Exception], str] = {
    ProjectionConflict: "SecretNotOwned",
    ProjectionRejected: "SecretRejected",
    SourceUnavailable: "SourceUnavailable",
    RenderError: "TemplateError",
    RestartError: "RestartFailed",
}


class ManagedSecretService:
    """Reconciles ManagedSecrets against the vault and the cluster."""

    def __init__(
        self,
        cluster: Cluster,
        vault: SecretVault,
        *,
        backoff: Backoff | None = None,
        metrics: OperatorMetrics | None = None,
        operator_namespace: str | None = None,
        min_rotation_interval: dt.timedelta = MIN_INTERVAL,
        local_workers: int = 8,
        external_workers: int = 4,
        share: Share | None = None,
    ) -> None:
        # The shards this replica serves (every one when it runs alone): checked before each side effect.
        self.share = share or Share(1, everything=True)
        self.operator_namespace = operator_namespace
        # Set at start-up: whether the admission policy is bound (None: the operator cannot tell).
        self.admission_policy_installed: bool | None = None
        self.metrics = metrics or OperatorMetrics(runtime_collectors=False)
        self.cluster = cluster
        self.vault = vault
        self.events = EventRecorder(cluster)
        self.engine = RotationEngine(vault, backoff or Backoff())
        self.deps = Deps(
            vault,
            cluster,
            self.events,
            self.metrics,
            self.engine,
            min_rotation_interval,
            lambda: self.revisions,
            self._fence,
        )
        self.pools = WorkPools(local_workers, external_workers)
        self.metrics.track_pending(lambda: self.pools.pending)
        # The scheduler's threads only fetch the object and hand the reconcile to the pool for its kind.
        self.scheduler = Scheduler(self._scheduled, vault.clock)
        self._locks: dict[RecordKey, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        # Small per-object memory of what the watches brought (see ``service.watching``).
        self.watched = Watched()
        # What the operator's Secret watches list now; set at start-up (``None``: every resume reads).
        self.revisions: Revisions | None = None
        self._failures: dict[RecordKey, int] = {}
        # Objects whose last pass failed because the keyring was not open (see keyring_opened).
        self._key_waiters: set[RecordKey] = set()
        # The shard of each object seen (its label's, else its name's hash): what ``release`` drains.
        self._shards: dict[RecordKey, int] = {}

    def _lock(self, key: RecordKey) -> threading.RLock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.RLock()
            return lock

    # --- entry points ----------------------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        resource = ManagedSecretResource.from_body(body)
        with self._lock(resource.key), self.metrics.time_reconcile() as timed:
            outcome = self._reconcile(resource)
            timed.ready(ready.status if (ready := outcome.condition("Ready")) else None)
            return outcome

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A ManagedSecret as a watch brings it (``event_type`` ``None``: listed at start-up), or as a
        scheduled run reads it (``SCHEDULED``). Never raises: a failure is logged and retried with backoff.

        Keeps the finalizer (added with the first event, removed when deletion is done); drops events that are
        echoes of our own writes; resumes a listed object from its status when nothing changed while the
        operator was away; otherwise reconciles.
        """
        meta = body.get("metadata") or {}
        key = RecordKey(str(meta["namespace"]), str(meta["name"]))
        if event_type == "DELETED":
            self.forget(key.namespace, key.name)
            return
        shard = self.share.shard(key.namespace, key.name, meta.get("labels"))
        if not self.share.holds(shard):
            if self.watched.seen(key):
                self.forget(key.namespace, key.name)
            return
        self._shards[key] = shard
        try:
            with self._lock(key):
                self._observe(event_type, body, key)
        except Fenced:
            log.info("ManagedSecret %s is no longer served by this replica; its new owner goes on", key)
        except Exception as e:  # whatever it is, it is logged safely and retried
            self.watched.unhandled(key)
            attempts = self._failures.get(key, 0) + 1
            self._failures[key] = attempts
            delay = self.engine.backoff.delay(attempts)
            log.warning(
                "handling ManagedSecret %s failed (retry in %.0fs): %s",
                key,
                delay.total_seconds(),
                safe_message(e),
            )
            self.scheduler.schedule(key.namespace, key.name, self.vault.clock.now() + delay)
            return
        self._failures.pop(key, None)

    def _observe(self, event_type: str | None, body: Mapping[str, Any], key: RecordKey) -> None:
        meta = body.get("metadata") or {}
        finalizers = [str(f) for f in meta.get("finalizers") or []]
        version = str(meta.get("resourceVersion") or "")
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers:
                self.delete(body)
                self.cluster.set_finalizers(
                    key.namespace, key.name, [f for f in finalizers if f != FINALIZER], version
                )
            self.forget(key.namespace, key.name)
            return
        resource = ManagedSecretResource.from_body(body)
        forced = event_type == "SCHEDULED"
        if not forced and self.watched.is_echo(resource):
            return
        first = not self.watched.seen(key)
        shard = str(self._shards.get(key, 0))
        labelled = (meta.get("labels") or {}).get(SHARD_LABEL) == shard
        if FINALIZER not in finalizers or not labelled:
            # The one metadata write a ManagedSecret costs: deletion waits for its versions to be kept or purged,
            # and the shard label lets each replica's watch select its own objects.
            self._fence(key)
            if FINALIZER not in finalizers:
                finalizers = [*finalizers, FINALIZER]
            self.cluster.set_finalizers(key.namespace, key.name, finalizers, version, labels={SHARD_LABEL: shard})
            labels = {**(meta.get("labels") or {}), SHARD_LABEL: shard}
            body = {**body, "metadata": {**meta, "labels": labels, "finalizers": finalizers}}
            resource = ManagedSecretResource.from_body(body)  # its echo is recognised by these labels
        elif first and not forced and self._resume(resource):
            self.watched.handled(resource)
            return
        self.reconcile(body)
        self.watched.handled(resource)

    def _resume(self, resource: ManagedSecretResource) -> bool:
        """Resumes ``resource`` from its status without a read, if nothing changed while we were away."""
        resume = resumable(resource, self.revisions, self.vault.clock.now(), self.admission_policy_installed)
        if resume is None:
            return False
        key = resource.key
        status = resource.status
        self.watched.projected(key, str((status.get("revisions") or {}).get("projected") or ""))
        self.watched.takes_value_from(key, source_of(resource.raw_spec))
        conditions = {str(c.get("type")): str(c.get("status")) for c in status.get("conditions") or []}
        self.metrics.set_next_rotation(key.namespace, key.name, resume.next_rotation)
        self.metrics.set_last_rotation(key.namespace, key.name, status.get("lastRotationTime"))
        self.metrics.observe_conditions(key.namespace, key.name, conditions)
        self.scheduler.schedule(key.namespace, key.name, resume.next_rotation)
        return True

    def secret_changed(self, namespace: str, name: str, resource_version: str | None, owner: str | None) -> None:
        """A projected Secret or a value source changed (``resource_version`` ``None``: it was deleted).

        ``owner`` is the projected Secret's owner annotation (``namespace/name``). A projected Secret at the
        revision our last reconcile left it at is the echo of our own write and is dropped.
        """
        owner_ns, _sep, owner_name = (owner or "").partition("/")
        # Only objects this replica serves (it has seen them through its share's watch); another replica's
        # watch brought the same event to their owner.
        if owner_ns == namespace and owner_name and self.watched.seen(RecordKey(namespace, owner_name)):
            self.pools.submit({}, self._projected_changed, RecordKey(namespace, owner_name), resource_version)
        for ms_name in self.watched.owners_of_source(namespace, name):
            self.pools.submit({}, self._source_changed, namespace, ms_name)

    def record_deleted(self, namespace: str, name: str) -> None:
        """A store record went away (purged by the replica that runs the sweep, or deleted by hand): an object
        this replica serves is reconciled (it starts afresh after a purge, or reports its lost store)."""
        if self.watched.seen(RecordKey(namespace, name)):
            self.pools.submit({}, self._scheduled, namespace, name)

    def _source_changed(self, namespace: str, name: str) -> None:
        self._scheduled(namespace, name, here=True)

    def _projected_changed(self, key: RecordKey, resource_version: str | None) -> None:
        with self._lock(key):
            # Under the lock: a reconcile that is writing this Secret records its revision before letting go,
            # so the watch event of its own write is recognised however early it comes.
            if self.watched.projected_echo(key, resource_version):
                return
        self._scheduled(key.namespace, key.name, here=True)

    def _scheduled(self, namespace: str, name: str, *, here: bool = False) -> None:
        """Reads the ManagedSecret and handles it (in this thread when ``here`` and it is local work)."""
        try:
            body = self.cluster.get_managed_secret(namespace, name)
        except KubernetesApiError as e:
            log.warning("cannot read ManagedSecret %s/%s: %s", namespace, name, safe_message(e))
            self.scheduler.schedule(namespace, name, self.vault.clock.now() + self.engine.backoff.delay(1))
            return
        if body is None:
            return
        spec = body.get("spec") or {}
        if here and self.pools.for_spec(spec) is self.pools.local:
            self.observe("SCHEDULED", body)
        else:
            self.pools.submit(spec, self.observe, "SCHEDULED", body)

    def keyring_opened(self) -> None:
        """The keyring opened after its key service was away: the objects that failed for it go again now."""
        waiting, self._key_waiters = self._key_waiters, set()
        now = self.vault.clock.now()
        for key in waiting:
            self.scheduler.schedule(key.namespace, key.name, now)

    def submit(self, body: Mapping[str, Any]) -> Future[Outcome]:
        """``reconcile(body)`` on the worker pool for the object's kind of work (see ``service.pools``)."""
        return self.pools.submit(body.get("spec") or {}, self.reconcile, body)

    def current_body(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The ManagedSecret as the API server holds it now; ``None`` if it is gone or being deleted."""
        body = self.cluster.get_managed_secret(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return body

    def _fence(self, key: RecordKey) -> None:
        shard = self._shards.get(key)
        if not self.share.holds(shard if shard is not None else self.share.shard(key.namespace, key.name)):
            raise Fenced(f"ManagedSecret {key} is no longer served by this replica")

    def release(self, shards: frozenset[int | str], timeout: float) -> None:
        """The shards left this replica's share (``share`` already says so, so no new side effect starts on
        them): forget their objects, and wait (at most ``timeout`` seconds) for passes still running on them."""
        deadline = time.monotonic() + timeout
        keys = [k for k, s in list(self._shards.items()) if s in shards]
        for key in keys:
            lock = self._lock(key)
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                lock.release()
            else:
                log.warning("a pass on %s is still running while its shard moves to another replica", key)
            self.forget(key.namespace, key.name)

    def served(self) -> int:
        """How many ManagedSecrets this replica serves now."""
        return len(self._shards)

    def forget(self, namespace: str, name: str) -> None:
        key = RecordKey(namespace, name)
        self._shards.pop(key, None)
        self.watched.forget(key)
        with self._locks_guard:
            self._locks.pop(key, None)
        self.scheduler.schedule(namespace, name, None)
        self.metrics.forget(namespace, name)

    def reconcile_by_name(self, namespace: str, name: str) -> Outcome | None:
        """Reconciles the ManagedSecret read fresh from the API, in the calling thread."""
        body = self.current_body(namespace, name)
        return self.reconcile(body) if body is not None else None

    def delete(self, body: Mapping[str, Any]) -> None:
        """The ManagedSecret is going away: keep its versions for the recovery window, or purge them now."""
        resource = ManagedSecretResource.from_body(body)
        with self._lock(resource.key):
            lifecycle.delete(self.deps, resource)

    def purge_expired(self) -> list[RecordKey]:
        """Purges records past their recovery window; a ManagedSecret that waited for one starts afresh."""
        purged = lifecycle.purge_expired(self.deps)
        for key in purged:
            if not self.share.owns(key.namespace, key.name):
                continue  # its owner hears of the purge from its store watch (``record_deleted``)
            try:
                self.reconcile_by_name(key.namespace, key.name)
            except ManagedSecretsError as e:
                log.warning("reconcile of %s after its purge failed: %s", key, safe_message(e))
        return purged

    # --- the reconcile path ----------------------------------------------------------------------------

    def _reconcile(self, resource: ManagedSecretResource) -> Outcome:
        outcome = Outcome()
        backing_off = self._backing_off(resource)
        if backing_off is not None:
            # A failure is being retried and the spec is unchanged: nothing to do before the next attempt
            # (this is what keeps a restart, or any event, from retrying every failing object at once).
            outcome.wake(backing_off)
            self.scheduler.schedule(resource.namespace, resource.name, backing_off)
            return outcome
        spec: ManagedSecretSpec | None = None
        p: Pass | None = None
        self.watched.takes_value_from(resource.key, source_of(resource.raw_spec))
        try:
            self._fence(resource.key)
            if resource.namespace == self.operator_namespace:
                raise ReferenceRefused(
                    f"ManagedSecrets in the operator's own namespace {resource.namespace} are not served: it "
                    "holds the keyring and the version stores"
                )
            spec = resource.parse()
            p = Pass(self.deps, resource, spec, outcome)
            if lifecycle.load(p):
                ensure_value(p)
                if p.record is not None and p.record.current is not None:
                    move_stage(p)
                    rotate(p)
                    project(p)
        except Fenced:
            # Nothing more is written (status included): the object's new owner takes it from the store.
            log.info("stopped the pass on %s: it is no longer served by this replica", resource.key)
            return outcome
        except ManagedSecretsError as e:
            if isinstance(e, StoreError):
                self.metrics.count_store_error("reconcile", e)
            elif isinstance(e, KubernetesApiError):
                self.metrics.count_api_error("reconcile", e)
            reason = self._fail(resource, outcome, e)
            outcome.record = p.record if p is not None else None
            if isinstance(e, KeyServiceUnavailable):
                # The keyring's key service is away: tried again with backoff, and at once when it opens.
                self._key_waiters.add(resource.key)
                self._retry_later(resource, outcome, reason)
            elif not isinstance(e, _WAITS):
                self._retry_later(resource, outcome, reason)
            self._finish(resource, spec, outcome)
            return outcome
        outcome.record = p.record
        outcome.store_revision = p.loaded.stored.revision if p.loaded is not None else None
        self._finish(resource, spec, outcome)
        return outcome

    def _backing_off(self, resource: ManagedSecretResource) -> dt.datetime | None:
        retry = resource.status.get("retry") or {}
        if not retry.get("nextAttemptTime") or resource.status.get("observedGeneration") != resource.generation:
            return None
        if retry.get("reason") == "KeyServiceUnavailable" and getattr(self.vault.provider, "is_open", True):
            return None  # it waited for the keyring, which is open now
        try:
            when = dt.datetime.fromisoformat(str(retry["nextAttemptTime"]).replace("Z", "+00:00"))
        except ValueError:
            return None
        return when if when > self.vault.clock.now() else None

    def _retry_later(self, resource: ManagedSecretResource, outcome: Outcome, reason: str) -> None:
        previous = resource.status.get("retry") or {}
        attempts = int(previous.get("attempts") or 0) + 1
        delay = self.engine.backoff.delay(attempts)  # the same policy as rotation steps, jitter included
        when = (self.vault.clock.now() + delay).replace(microsecond=0) + dt.timedelta(seconds=1)
        outcome.retry = {"attempts": attempts, "reason": reason, "nextAttemptTime": iso_seconds(when)}
        outcome.wake(when)

    def _finish(self, resource: ManagedSecretResource, spec: ManagedSecretSpec | None, outcome: Outcome) -> None:
        if self.admission_policy_installed is False:
            outcome.add(
                "AdmissionPolicy",
                "False",
                "NotInstalled",
                f"the admission policy {ADMISSION_POLICY} is not installed: references in this spec were not "
                "checked against its author's rights",
            )
        elif self.admission_policy_installed and resource.old_condition("AdmissionPolicy"):
            outcome.add(
                "AdmissionPolicy", "True", "Installed", f"the admission policy {ADMISSION_POLICY} is bound"
            )
        self._write_status(resource, spec, outcome)
        key = resource.key
        if outcome.projection is not None:
            self.watched.projected(key, outcome.projected_revision)
        # Metrics: the next due time stays while a rotation is in flight or failing (rotation enabled, no due time
        # this pass); the conditions are the whole status' (the ones this pass kept included), as written.
        record = outcome.record
        self.metrics.set_next_rotation(
            key.namespace,
            key.name,
            outcome.next_rotation,
            keep=bool((resource.raw_spec.get("rotation") or {}).get("enabled")),
            fallback=record.rotation.started if record is not None and record.rotation is not None else None,
        )
        current = record.current if record is not None else None
        if current is not None and current.request_id is not None:
            self.metrics.set_last_rotation(key.namespace, key.name, current.created)
        self.metrics.observe_conditions(
            key.namespace,
            key.name,
            {str(c.get("type")): str(c.get("status")) for c in resource.status.get("conditions") or []}
            | {c.type: c.status for c in outcome.conditions},
        )
        self.scheduler.schedule(key.namespace, key.name, wake_time(outcome, self.vault.clock.now()))

    def _fail(self, resource: ManagedSecretResource, outcome: Outcome, error: ManagedSecretsError) -> str:
        message = safe_message(error)
        reason = _REASONS.get(type(error), type(error).__name__)
        if isinstance(error, RotationStepFailed):
            reason = error.reason
        outcome.drop("Ready", "Projected")
        if isinstance(error, (ProjectionError, RenderError)):
            outcome.add("Projected", "False", reason, message)
        outcome.add("Ready", "False", reason, message)
        before = resource.old_condition("Ready")
        if before.get("reason") != reason or before.get("message") != message:
            self.events.warning(resource.event_ref, reason, message)
        return reason

    def _write_status(
        self, resource: ManagedSecretResource, spec: ManagedSecretSpec | None, outcome: Outcome
    ) -> None:
        record = outcome.record
        projected = spec.target.name if spec is not None and outcome.projection is not None else None
        rotation_fields = rotation_status(record, outcome)
        new = desired_status(resource, record, outcome.conditions, projected, self.vault.clock.now())
        new.update(rotation_fields)
        new["retry"] = outcome.retry
        new["hosts"] = host_status(
            resource.status.get("hosts"), targets_of(spec.raw if spec is not None else None), outcome.reports
        )
        if status_differs(resource.status, new):
            self._fence(resource.key)
            # Written along when the status changes anyway, never on its own: a hint for the next start-up.
            new["revisions"] = _revisions(resource, outcome)
            self.cluster.patch_status(resource.namespace, resource.name, new)


def _revisions(resource: ManagedSecretResource, outcome: Outcome) -> dict[str, str | None] | None:
    """``status.revisions``: what this pass left the store record, the projected Secret and the source at."""
    if outcome.store_revision is None or outcome.projected_revision is None or outcome.retry is not None:
        return None
    return {
        "store": outcome.store_revision,
        "projected": outcome.projected_revision,
        "source": outcome.source_revision,
        "requests": requests_digest(resource.annotations),
    }


def wake_time(outcome: Outcome, now: dt.datetime) -> dt.datetime | None:
    """When to reconcile this object again. A due time already past counts only when nothing else was asked
    for: a rotation that is due but waiting (backoff, a stuck label) wakes at the wait's end, never at once."""
    due = outcome.next_rotation
    if outcome.wake_at is not None:
        return outcome.wake_at if due is None or due <= now else min(due, outcome.wake_at)
    return due
