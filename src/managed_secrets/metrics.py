"""Prometheus metrics of the operator: a small typed API over ``prometheus_client``, and its HTTP server.

One ``OperatorMetrics`` is built at start-up and passed down (it owns its own registry, so tests and a
second instance never collide with the process-wide default registry). Nothing here imports Kopf or the
Kubernetes client: callers report what happened in plain values.

Exposed series (all prefixed ``managed_secrets_``):

==============================================  =========  ======================  ==============================
name                                            type       labels                  meaning
==============================================  =========  ======================  ==============================
``managed_secrets_with_condition``              gauge      condition, status       ManagedSecrets per condition
``managed_secrets_rotations_total``             counter    strategy, result        finished rotation attempts
``managed_secrets_rotation_duration_seconds``   histogram  strategy                time from create to finish
``managed_secrets_projection_duration_seconds`` histogram  (none)                  render + apply of a Secret
``managed_secrets_next_rotation_timestamp_seconds`` gauge  namespace, name         when the next rotation is due
``managed_secrets_store_errors_total``          counter    operation, reason       failed VersionStore calls
``managed_secrets_api_errors_total``            counter    operation, reason       failed Kubernetes API calls
==============================================  =========  ======================  ==============================

Label values must come from small sets (condition types, strategy names, operation names, HTTP reasons or
exception class names), never from secret values or free text.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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
from prometheus_client import start_http_server as _start_http_server

__all__ = [
    "DEFAULT_METRICS_PORT",
    "MetricsServer",
    "OperatorMetrics",
    "RotationResult",
    "error_reason",
    "start_metrics_server",
]

DEFAULT_METRICS_PORT = 9090
ROTATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
PROJECTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RotationResult(StrEnum):
    """How a rotation attempt ended (the ``result`` label of ``managed_secrets_rotations_total``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A second request while one rotation is in flight.
    REFUSED = "refused"


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
        # (namespace, name) -> {condition type: status}: what the condition gauge is counted from.
        self._conditions: dict[tuple[str, str], dict[str, str]] = {}
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
        self._projection_duration = Histogram(
            "managed_secrets_projection_duration_seconds",
            "Duration of rendering and applying one projected Secret.",
            buckets=PROJECTION_BUCKETS,
            registry=self.registry,
        )
        self._next_rotation = Gauge(
            "managed_secrets_next_rotation_timestamp_seconds",
            "Unix time at which the next rotation of a ManagedSecret is due.",
            ["namespace", "name"],
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
        self._objects.set_function(lambda: len(self._conditions))
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

    # --- conditions -------------------------------------------------------------------------------------

    def observe_conditions(self, namespace: str, name: str, conditions: Mapping[str, str]) -> None:
        """Records the current conditions of one ManagedSecret (type -> "True"/"False"/"Unknown").

        Call it after every status write; the gauge counts each object once per condition type.
        """
        with self._lock:
            old = self._conditions.get((namespace, name), {})
            new = dict(conditions)
            self._conditions[(namespace, name)] = new
            self._shift(old, new)

    def forget(self, namespace: str, name: str) -> None:
        """Drops a deleted ManagedSecret from the condition gauge and its next-rotation series."""
        with self._lock:
            old = self._conditions.pop((namespace, name), {})
            self._shift(old, {})
        self.remove_next_rotation(namespace, name)

    def _shift(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        for kind, status in old.items():
            if new.get(kind) != status:
                self._with_condition.labels(kind, status).dec()
        for kind, status in new.items():
            if old.get(kind) != status:
                self._with_condition.labels(kind, status).inc()

    # --- rotations --------------------------------------------------------------------------------------

    def record_rotation(
        self, strategy: str, result: RotationResult | str, duration_seconds: float | None = None
    ) -> None:
        """Counts one ended rotation attempt; a duration (succeeded ones) goes into the histogram."""
        self._rotations.labels(strategy, str(result)).inc()
        if duration_seconds is not None:
            self._rotation_duration.labels(strategy).observe(duration_seconds)

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

    def set_next_rotation(self, namespace: str, name: str, when: dt.datetime | None) -> None:
        """Publishes when the next rotation is due (an aware datetime); ``None`` removes the series."""
        if when is None:
            self.remove_next_rotation(namespace, name)
            return
        if when.tzinfo is None:
            raise ValueError("next rotation time must be timezone-aware")
        self._next_rotation.labels(namespace, name).set(when.timestamp())

    def remove_next_rotation(self, namespace: str, name: str) -> None:
        """Removes the next-rotation series of one ManagedSecret (rotation disabled, or object deleted)."""
        with suppress(KeyError):
            self._next_rotation.remove(namespace, name)

    # --- projection and errors --------------------------------------------------------------------------

    def observe_projection(self, duration_seconds: float) -> None:
        self._projection_duration.observe(duration_seconds)

    @contextmanager
    def time_projection(self) -> Iterator[None]:
        """Times a projection (render + apply); the duration is recorded whether or not it raises."""
        start = time.monotonic()
        try:
            yield
        finally:
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
        """The registry in Prometheus' text format, exactly as the HTTP endpoint serves it."""
        return bytes(generate_latest(self.registry))


def _reason(reason: str | BaseException) -> str:
    return reason if isinstance(reason, str) else error_reason(reason)


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server (a daemon thread); ``port`` is the bound port."""

    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    metrics: OperatorMetrics,
    port: int = DEFAULT_METRICS_PORT,
    addr: str = "0.0.0.0",  # noqa: S104 - in a pod, Prometheus scrapes the pod IP
) -> MetricsServer:
    """Serves ``metrics`` on ``http://addr:port/metrics`` (port 0 picks a free port) in a daemon thread."""
    server, thread = _start_http_server(port, addr=addr, registry=metrics.registry)
    return MetricsServer(port=int(server.server_port), _server=server, _thread=thread)
