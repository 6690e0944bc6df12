"""Prometheus metrics of the operator: a small typed API over ``prometheus_client``, and its HTTP server.

One ``OperatorMetrics`` is built at start-up and passed down (it owns its own registry, so tests and a
second instance never collide with the process-wide default registry). Nothing here imports Kopf or the
Kubernetes client: callers report what happened in plain values.

Every series is described in ``docs/metrics.md`` (name, type, labels, meaning, when it changes); a unit test
fails when this module exports one the page does not name. The main ones, all prefixed ``managed_secrets_``:

- aggregates: ``with_condition{condition,status}``, ``rotations_total{strategy,result}``,
  ``rotation_duration_seconds{strategy}``, ``projections_total{result}``, ``projection_duration_seconds``,
  ``reconcile_total{result}``, ``reconcile_duration_seconds``, ``store_errors_total{operation,reason}``,
  ``api_errors_total{operation,reason}``, ``build_info{version,python}``, and the replica, key-service and
  admission-policy gauges;
- per ManagedSecret (labels ``namespace``, ``name``; one small record per object, rendered from it at
  scrape time, removed by ``forget``): ``status_condition{condition,status}`` (1/0, like External Secrets'
  ``externalsecret_status_condition``), ``next_rotation_timestamp_seconds``,
  ``last_rotation_timestamp_seconds`` and ``rotation_failures``. The HTTP server is this module's own (a
  scrape is ``exposition()``), since prometheus_client's renders only its registry.

Label values must come from small sets (condition types, strategy names, operation names, HTTP reasons or
exception class names), never from secret values or free text. ``*_created`` series are not exported
(``prometheus_client.disable_created_metrics``, process-wide: the env var PROMETHEUS_DISABLE_CREATED_SERIES
is only read when ``prometheus_client`` is first imported, which may be before this module runs).
"""

from __future__ import annotations

import datetime as dt
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from managed_secrets import __version__
from managed_secrets.metrics_objects import PER_OBJECT_CONDITIONS, Tracked, render_objects

__all__ = [
    "DEFAULT_METRICS_PORT",
    "PER_OBJECT_CONDITIONS",
    "OperatorMetrics",
    "ReconcileResult",
    "ReconcileTimer",
    "RotationResult",
    "error_reason",
]

# No ``*_created`` series (a second sample per counter and histogram child that no dashboard or alert reads).
# prometheus_client checks the flag when it renders samples, so this holds for every registry, ours included.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

DEFAULT_METRICS_PORT = 9090
ROTATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PROJECTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The conditions ``managed_secrets_status_condition`` exports per object (each with a True and a False
# series): the ones alerts and dashboards read. Every condition type is still counted, without the object's
# name, by ``managed_secrets_with_condition``. Two series per condition and object keep 10,000 objects at
# 80,000 series.


class RotationResult(StrEnum):
    """How a rotation attempt ended (the ``result`` label of ``managed_secrets_rotations_total``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A second request while one rotation is in flight.
    REFUSED = "refused"


class ReconcileResult(StrEnum):
    """How one reconcile pass ended (the ``result`` label of ``managed_secrets_reconcile_total``)."""

    # The pass ran and the object is Ready.
    SUCCEEDED = "succeeded"
    # The pass ran and reported a failure (Ready=False; retried with backoff or waiting for a change).
    FAILED = "failed"
    # Nothing was done: a failure is backing off, or the object moved to another replica.
    SKIPPED = "skipped"
    # The pass raised (logged and retried with backoff by the caller).
    ERROR = "error"

    @classmethod
    def of(cls, ready: str | None) -> ReconcileResult:
        """The result of a pass that returned, from the status of the Ready condition it set (None: none)."""
        if ready is None:
            return cls.SKIPPED
        return cls.SUCCEEDED if ready == "True" else cls.FAILED


@dataclass
class ReconcileTimer:
    """What ``OperatorMetrics.time_reconcile`` yields: set ``result`` (or call ``ready``) before the block ends."""

    result: ReconcileResult = ReconcileResult.SUCCEEDED

    def ready(self, status: str | None) -> None:
        self.result = ReconcileResult.of(status)


def error_reason(error: BaseException) -> str:
    """A low-cardinality ``reason`` label for an error: the HTTP status of API errors, else the class name.

    Works with the Kubernetes client's ``ApiException`` (it has an int ``status``) without importing it.
    """
    status = getattr(error, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return str(status)
    return type(error).__name__


class OperatorMetrics:
    """The operator's metrics, in a registry of their own (plus the process/GC/platform collectors)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, runtime_collectors: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if runtime_collectors and registry is None:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self._lock = threading.Lock()
        # (namespace, name) -> the object's per-object state; the condition gauge is counted from it too.
        self._tracked: dict[tuple[str, str], Tracked] = {}
        # Interned condition tuples: objects in the same state share one tuple.
        self._condition_sets: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        self._build_info = Gauge(
            "managed_secrets_build_info",
            "Always 1; the labels name the operator's version and the Python version it runs on.",
            ["version", "python"],
            registry=self.registry,
        )
        self._build_info.labels(__version__, platform.python_version()).set(1)
        self._with_condition = Gauge(
            "managed_secrets_with_condition",
            "Number of ManagedSecrets whose condition `condition` has status `status`.",
            ["condition", "status"],
            registry=self.registry,
        )
        self._rotations = Counter(
            "managed_secrets_rotations",
            "Rotation attempts that ended, by strategy and result (succeeded, failed, refused).",
            ["strategy", "result"],
            registry=self.registry,
        )
        self._rotation_duration = Histogram(
            "managed_secrets_rotation_duration_seconds",
            "Duration of a rotation from its create step to its finish step.",
            ["strategy"],
            buckets=ROTATION_BUCKETS,
            registry=self.registry,
        )
        self._projections = Counter(
            "managed_secrets_projections",
            "Applies of projected Secrets that ended, by result (succeeded, failed).",
            ["result"],
            registry=self.registry,
        )
        for result in ("succeeded", "failed"):
            self._projections.labels(result)
        self._projection_duration = Histogram(
            "managed_secrets_projection_duration_seconds",
            "Duration of rendering and applying one projected Secret.",
            buckets=PROJECTION_BUCKETS,
            registry=self.registry,
        )
        self._reconciles = Counter(
            "managed_secrets_reconcile",
            "Reconcile passes that ended, by result (succeeded, failed, skipped, error).",
            ["result"],
            registry=self.registry,
        )
        for reconcile_result in ReconcileResult:
            self._reconciles.labels(reconcile_result.value)
        self._reconcile_duration = Histogram(
            "managed_secrets_reconcile_duration_seconds",
            "Duration of one reconcile pass (under the object's lock), whatever its result.",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self._store_errors = Counter(
            "managed_secrets_store_errors",
            "Failed calls to the version store, by operation and reason.",
            ["operation", "reason"],
            registry=self.registry,
        )
        self._api_errors = Counter(
            "managed_secrets_api_errors",
            "Failed Kubernetes API calls, by operation and reason.",
            ["operation", "reason"],
            registry=self.registry,
        )
        self._admission_policy = Gauge(
            "managed_secrets_admission_policy_installed",
            "1 when the admission policy that checks ManagedSecret references is bound, 0 when it is not, "
            "-1 when the operator cannot tell.",
            registry=self.registry,
        )
        self._admission_policy.set(-1)
        self._objects = Gauge(
            "managed_secrets_objects",
            "ManagedSecrets this process serves (seen since start and not deleted).",
            registry=self.registry,
        )
        self._objects.set_function(lambda: len(self._tracked))
        self._is_leader = Gauge(
            "managed_secrets_is_leader",
            "1 while this replica runs the cluster-wide jobs (purge sweep, KEK re-wrap, keyring creation).",
            registry=self.registry,
        )
        self._owned_shards = Gauge(
            "managed_secrets_owned_shards",
            "Shards of ManagedSecrets this replica serves now (managed_secrets_objects counts their objects).",
            registry=self.registry,
        )
        self._replicas = Gauge(
            "managed_secrets_replicas",
            "Live replicas this replica sees (member Leases renewed within their duration).",
            registry=self.registry,
        )
        self._handovers = Counter(
            "managed_secrets_shard_handovers_total",
            "Shards this replica claimed or released.",
            ["direction"],
            registry=self.registry,
        )
        self._pending = Gauge(
            "managed_secrets_pending_work",
            "Reconciles queued or running on the worker pools.",
            registry=self.registry,
        )
        self._kms_requests = Counter(
            "managed_secrets_kms_requests",
            "Calls to the external key service that seals the keyring (PKCS#11 token or KMS v2 plugin), by "
            "operation (status, encrypt, decrypt) and result (ok, error).",
            ["provider", "operation", "result"],
            registry=self.registry,
        )
        self._key_service_up = Gauge(
            "managed_secrets_key_service_up",
            "1 when the last check of the external key service succeeded, 0 when it failed (the operator goes on "
            "with the keys it holds in memory), -1 before the first check; absent without a key service.",
            ["provider"],
            registry=self.registry,
        )
        self._keyring_open = Gauge(
            "managed_secrets_keyring_open",
            "1 once the keyring is open (unsealed) in memory; 0 while the operator waits for its key service.",
            registry=self.registry,
        )
        self._keyring_open.set(0)

    def track_membership(
        self, *, leader: Callable[[], bool], shards: Callable[[], int], replicas: Callable[[], int]
    ) -> None:
        """Serves the replica's view of the membership (see ``service.sharding``)."""
        self._is_leader.set_function(lambda: 1.0 if leader() else 0.0)
        self._owned_shards.set_function(shards)
        self._replicas.set_function(replicas)

    def count_handover(self, direction: str, shards: int) -> None:
        """``direction``: ``claimed`` or ``released``."""
        self._handovers.labels(direction).inc(shards)

    def count_kms_request(self, provider: str, operation: str, ok: bool) -> None:
        self._kms_requests.labels(provider, operation, "ok" if ok else "error").inc()

    def set_key_service_up(self, provider: str, up: int) -> None:
        self._key_service_up.labels(provider).set(up)

    def set_keyring_open(self, is_open: bool) -> None:
        self._keyring_open.set(1 if is_open else 0)

    def track_pending(self, count: Callable[[], int]) -> None:
        """Serves ``count()`` as the pending-work gauge (the worker pools' queued and running reconciles)."""
        self._pending.set_function(count)

    # --- per-object state -------------------------------------------------------------------------------

    def observe_conditions(self, namespace: str, name: str, conditions: Mapping[str, str]) -> None:
        """Records the current conditions of one ManagedSecret (type -> "True"/"False"/"Unknown").

        Call it after every status write with every condition the status holds (not only the ones the pass
        set); the aggregate gauge counts each object once per condition type, and the per-object
        ``managed_secrets_status_condition`` follows.
        """
        new = tuple(sorted((str(k), str(v)) for k, v in conditions.items()))
        with self._lock:
            new = self._condition_sets.setdefault(new, new)
            tracked = self._tracked.get((namespace, name))
            if tracked is None:
                tracked = self._tracked[(namespace, name)] = Tracked()
            old = tracked.conditions
            tracked.conditions = new
            self._shift(dict(old), dict(new))

    def forget(self, namespace: str, name: str) -> None:
        """Drops a deleted (or no longer served) ManagedSecret: every per-object series, and its counts."""
        with self._lock:
            tracked = self._tracked.pop((namespace, name), None)
            if tracked is not None:
                self._shift(dict(tracked.conditions), {})

    def tracked_objects(self) -> int:
        """How many ManagedSecrets have per-object state (what ``managed_secrets_objects`` serves)."""
        return len(self._tracked)

    def _shift(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        for kind, status in old.items():
            if new.get(kind) != status:
                self._with_condition.labels(kind, status).dec()
        for kind, status in new.items():
            if old.get(kind) != status:
                self._with_condition.labels(kind, status).inc()

    def _state(self, namespace: str, name: str, *, create: bool) -> Tracked | None:
        """The object's state (the caller holds the lock)."""
        tracked = self._tracked.get((namespace, name))
        if tracked is None and create:
            tracked = self._tracked[(namespace, name)] = Tracked()
        return tracked

    # --- rotations --------------------------------------------------------------------------------------

    def record_rotation(
        self,
        strategy: str,
        result: RotationResult | str,
        duration_seconds: float | None = None,
        *,
        namespace: str | None = None,
        name: str | None = None,
        failures: int | None = None,
    ) -> None:
        """Counts one ended rotation attempt; a duration (succeeded ones) goes into the histogram.

        With ``namespace`` and ``name``, also sets the object's ``managed_secrets_rotation_failures``: 0 after
        a success; after a failure ``failures`` (the persisted count of consecutive failed attempts, so it
        survives a restart) or, without it, one more than before. A refused request changes nothing.
        """
        result = RotationResult(result)
        self._rotations.labels(strategy, result.value).inc()
        if duration_seconds is not None:
            self._rotation_duration.labels(strategy).observe(duration_seconds)
        if namespace is None or name is None or result is RotationResult.REFUSED:
            return
        with self._lock:
            tracked = self._state(namespace, name, create=True)
            assert tracked is not None
            if result is RotationResult.SUCCEEDED:
                tracked.failures = 0
            else:
                tracked.failures = failures if failures is not None else (tracked.failures or 0) + 1

    @contextmanager
    def time_rotation(self, strategy: str) -> Iterator[None]:
        """Times a block that runs a rotation to its end: succeeded if it returns, failed if it raises."""
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.record_rotation(strategy, RotationResult.FAILED)
            raise
        self.record_rotation(strategy, RotationResult.SUCCEEDED, time.monotonic() - start)

    def set_next_rotation(
        self,
        namespace: str,
        name: str,
        when: dt.datetime | None,
        *,
        keep: bool = False,
        fallback: dt.datetime | None = None,
    ) -> None:
        """Publishes when the next rotation is due (an aware datetime).

        ``when`` ``None`` with ``keep`` False (rotation disabled, or the object has no schedule) removes the
        series. With ``keep`` True (rotation is enabled, but this pass did not compute a due time: a rotation is
        in flight or failing, or the pass failed) the last published time stays, so that "overdue" alerts keep
        firing exactly while a rotation is stuck; when none was published yet (a restart during a stuck
        rotation) ``fallback`` is published (the start of the rotation in flight: it was due then at the
        latest).
        """
        for at in (when, fallback):
            if at is not None and at.tzinfo is None:
                raise ValueError("next rotation time must be timezone-aware")
        with self._lock:
            if when is not None:
                tracked = self._state(namespace, name, create=True)
                assert tracked is not None
                tracked.next_rotation = when.timestamp()
                return
            tracked = self._state(namespace, name, create=keep and fallback is not None)
            if tracked is None:
                return
            if not keep:
                tracked.next_rotation = None
            elif tracked.next_rotation is None and fallback is not None:
                tracked.next_rotation = fallback.timestamp()

    def remove_next_rotation(self, namespace: str, name: str) -> None:
        """Removes the next-rotation series of one ManagedSecret (rotation disabled, or object deleted)."""
        self.set_next_rotation(namespace, name, None)

    def set_last_rotation(self, namespace: str, name: str, when: dt.datetime | str | None) -> None:
        """Publishes when the object last rotated successfully: an aware datetime, or the ISO 8601 text of
        ``status.lastRotationTime``. ``None`` (or text that does not parse) leaves what is published."""
        if isinstance(when, str):
            try:
                when = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError:
                return
        if not isinstance(when, dt.datetime):
            return  # None, or a status field of another type
        if when.tzinfo is None:
            raise ValueError("last rotation time must be timezone-aware")
        with self._lock:
            tracked = self._state(namespace, name, create=True)
            assert tracked is not None
            tracked.last_rotation = when.timestamp()

    # --- reconciles -------------------------------------------------------------------------------------

    def record_reconcile(self, result: ReconcileResult | str, duration_seconds: float) -> None:
        self._reconciles.labels(ReconcileResult(result).value).inc()
        self._reconcile_duration.observe(duration_seconds)

    @contextmanager
    def time_reconcile(self) -> Iterator[ReconcileTimer]:
        """Times one reconcile pass: the result the block sets on the timer, or ``error`` if it raises."""
        timer = ReconcileTimer()
        start = time.monotonic()
        try:
            yield timer
        except BaseException:
            self.record_reconcile(ReconcileResult.ERROR, time.monotonic() - start)
            raise
        self.record_reconcile(timer.result, time.monotonic() - start)

    # --- projection and errors --------------------------------------------------------------------------

    def observe_projection(self, duration_seconds: float, *, ok: bool = True) -> None:
        self._projections.labels("succeeded" if ok else "failed").inc()
        self._projection_duration.observe(duration_seconds)

    @contextmanager
    def time_projection(self) -> Iterator[None]:
        """Times a projection (render + apply); the duration is recorded whether or not it raises, the result
        is ``failed`` if it raises."""
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.observe_projection(time.monotonic() - start, ok=False)
            raise
        self.observe_projection(time.monotonic() - start)

    def count_store_error(self, operation: str, reason: str | BaseException) -> None:
        """Counts a failed store call (``operation``: read, write, list, delete)."""
        self._store_errors.labels(operation, _reason(reason)).inc()

    def set_admission_policy(self, installed: bool | None) -> None:
        """Whether the admission policy is bound (``None``: unknown)."""
        self._admission_policy.set(-1 if installed is None else int(installed))

    def count_api_error(self, operation: str, reason: str | BaseException) -> None:
        """Counts a failed Kubernetes API call (``operation`` e.g. ``create_secret``, ``patch_status``)."""
        self._api_errors.labels(operation, _reason(reason)).inc()

    # --- exposition -------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every series in Prometheus' text format, exactly as the HTTP endpoint serves it: the registry's,
        then the per-object families."""
        with self._lock:
            tracked = [
                (namespace, name, t.conditions, t.next_rotation, t.last_rotation, t.failures)
                for (namespace, name), t in self._tracked.items()
            ]
        return bytes(generate_latest(self.registry)) + render_objects(tracked)


def _reason(reason: str | BaseException) -> str:
    return reason if isinstance(reason, str) else error_reason(reason)
