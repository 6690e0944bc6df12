"""Cluster benchmark: the operator on a local control plane of its own, each figure beside a baseline
measured in the same run.

    python -m bench.cluster [--quick] [--objects N] [--unrelated N] [--rotations N] [--namespaces N]
                            [--threads N] [--replicas N] [--kms {none,kmsv2,pkcs11}] [--json PATH] [--keep]

It starts etcd, kube-apiserver and kube-controller-manager (hack/cluster.py) in a fresh directory, installs
the CRD and the admission policy, and runs the operator as its own ServiceAccount with the shipped RBAC, at
log level INFO and with the production intervals (Leases included). With --replicas N it runs N operator
processes (MSO_IDENTITY replica-0..N-1) that share the ManagedSecrets by shard, as a Deployment's pods would;
they are started together, stopped together, and the run measures only once their member Leases hold every
shard exactly once. One admin client (a pool of --threads threads) sends every request the benchmark makes.
Writes are counted in the API server's audit log (all replicas together: they share the ServiceAccount; the
User-Agent tells them apart), memory is each replica's VmRSS (with several: the largest and the sum), CPU
is summed over the replicas, and "settled" means, in three polls 0.5 s apart: every replica's
managed_secrets_pending_work read 0, their managed_secrets_objects add up to the ManagedSecrets created,
each sees all N replicas, and the Leases held every shard exactly once, unchanged.

Steps: 1 RSS idle; 2 unrelated Secrets (raw create rate, RSS); 3 ManagedSecrets created until all projected,
beside raw Secret creates, and the objects each replica serves, beside an even share; 4 operator writes per
object, beside the client's; 5 latency create -> projected, beside the watch-event floor; 6 writes while idle
(Lease renewals apart, beside their period); 7 cold start of every replica, beside listing everything;
8 rotations, beside sending the requests; 9 ManagedSecrets written by more than one replica (audit log
User-Agents outside the cold start). Ratios are figure / baseline: how many times the baseline it costs.

With --kms kmsv2 or pkcs11 the operator seals its keyring under an external key: kmsv2 is the control plane's
own KMS v2 plugin (the one kube-apiserver encrypts Secrets at rest with; MSO_KMS_ENDPOINT its socket), pkcs11
a SoftHSM2 token of the run's own (hack/softhsm.py; MSO_PKCS11_* and SOFTHSM2_CONF). Steps 1, 3 and 7 then
also count the operator's calls to it (managed_secrets_kms_requests_total, summed over the replicas) by
operation, beside 0 (what the same run makes without a key service), at start-up on the empty cluster, for
the ManagedSecrets created, and per cold start, where the keyring's seal should cost one decrypt per replica
(plus the key-service checks' Status calls), not one per object. With kmsv2 the plugin's own counts (its stats
file) over the same stretches are printed beside the operator's: kube-apiserver's calls are among them.

Figures go to stdout, progress (with elapsed time) to stderr. Nothing is asserted: the exit status is 1 only
when the run cannot finish (the control plane or the operator does not start, or objects are not projected,
rotated or settled within a generous timeout).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.probes import (
    AuditLog,
    FirstSeen,
    Gauges,
    KmsCalls,
    Object,
    Tally,
    cpu_seconds,
    key_of,
    list_all,
    make_client,
    read_gauges,
    read_kms_requests,
    read_leases,
    read_plugin_stats,
    rss_mib,
    send,
)

ROOT = Path(__file__).resolve().parent.parent
for _extra in (ROOT / "hack", ROOT / "tests"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import softhsm  # noqa: E402  (hack/softhsm.py, on the path just above)

import cluster as local_cluster  # noqa: E402  (hack/cluster.py, on the path just above)
from managed_secrets.names import (  # noqa: E402
    API_GROUP,
    API_VERSION,
    MANAGED_LABEL,
    MEMBER_LABEL,
    PLURAL,
    ROTATE_ANNOTATION,
    SHARDS_ANNOTATION,
)
from managed_secrets.service.sharding import LEADER, format_held, parse_held  # noqa: E402
from support import kube  # noqa: E402  (tests/support, as the integration tests use it)
from support.operator import (  # noqa: E402
    OperatorEnvironment,
    OperatorProcess,
    install_admission_policy,
    install_crd,
    managed_secret,
    write_token_kubeconfig,
)

SERVICE_ACCOUNT = "managed-secrets-operator"
ADMIN_USER = "admin"  # the common name of hack/cluster.py's admin certificate
OTHER_NAMESPACE = "bench-unrelated"  # a few unrelated Secrets and no ManagedSecret
LATENCY_LABEL = "bench/latency"
# The operator's own defaults: the test helper would otherwise start it with short test intervals.
PRODUCTION_ENV = {
    "MSO_WATCH_TIMEOUT_SECONDS": "300",
    "MSO_PURGE_INTERVAL_SECONDS": "3600",
    "MSO_ROTATION_BACKOFF_SECONDS": "30",
    "MSO_MIN_ROTATION_INTERVAL_SECONDS": "60",
    "MSO_LEASE_SECONDS": "15",
    "MSO_LEASE_RENEW_SECONDS": "2",
}
RENEW_SECONDS = float(PRODUCTION_ENV["MSO_LEASE_RENEW_SECONDS"])
SHARDS = 16  # the operator's default (MSO_SHARDS)
EVERY_SHARD = frozenset([*range(SHARDS), LEADER])
TOKEN_SECONDS = 24 * 3600  # a long run must not outlive the operator's ServiceAccount token
LATENCY_TIMEOUT = 60.0
POLL = 0.5
KMS_CHOICES = ("none", "kmsv2", "pkcs11")
KMS_OPERATIONS = ("status", "encrypt", "decrypt")
KMS_TOKEN_LABEL = "bench"  # --kms pkcs11: the run's own SoftHSM2 token and key
KMS_KEY_LABEL = "bench-kek-1"
NO_KMS = "without a key service (--kms none)"  # the KMS figures' baseline: no calls at all
KMS_CHECK_SECONDS = 30  # the operator's default (MSO_KMS_CHECK_SECONDS): a Status call each, on every replica


class BenchError(Exception):
    """The run cannot go on (a timeout, an operator that does not answer): reported, exit status 1."""


@dataclass(frozen=True)
class Sizes:
    objects: int
    unrelated: int
    rotations: int
    namespaces: int
    threads: int
    replicas: int
    latency_samples: int
    idle_seconds: float
    pause_seconds: float
    """How long to let the operator settle before a memory reading or after a cold start."""


FULL = Sizes(
    objects=1000,
    unrelated=10000,
    rotations=1000,
    namespaces=10,
    threads=8,
    replicas=1,
    latency_samples=100,
    idle_seconds=30,
    pause_seconds=5,
)
# The smoke run of `make test`: every step once, small, in about half a minute.
QUICK = Sizes(
    objects=100,
    unrelated=200,
    rotations=20,
    namespaces=2,
    threads=8,
    replicas=1,
    latency_samples=10,
    idle_seconds=5,
    pause_seconds=1,
)


@dataclass(frozen=True)
class Figure:
    """One measured figure and the baseline it is read against (``baseline`` None: it has none)."""

    step: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


@dataclass
class Results:
    sizes: Sizes
    figures: list[Figure] = field(default_factory=list)
    writes: dict[str, dict[str, float]] = field(default_factory=dict)  # table -> "verb resource" -> value
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> "409"/"429"/"5xx" -> responses
    kms: str = "none"
    # table -> "operator" / "plugin" -> "operation result" -> calls
    kms_calls: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "sizes": dataclasses.asdict(self.sizes),
            "kms": self.kms,
            "seconds": round(self.seconds, 2),
            "figures": [{**dataclasses.asdict(f), "ratio": f.ratio} for f in self.figures],
            "writes": self.writes,
            "errors": self.errors,
            "kms_calls": self.kms_calls,
        }


# --- output ------------------------------------------------------------------------------------------------


class Progress:
    """Progress lines on stderr, stamped with the time since the run began."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():7.1f}s] {msg}", file=sys.stderr, flush=True)


def amount(value: float, unit: str) -> str:
    digits = {"s": 2, "ms": 1, "MiB": 1, "writes": 0, "objects": 0, "renewals": 1, "calls": 0}.get(unit, 2)
    return f"{value:,.{digits}f} {unit}"


def figure_line(f: Figure) -> str:
    baseline = amount(f.baseline, f.unit) if f.baseline is not None else "-"
    ratio = f"ratio {f.ratio:7.2f}x" if f.ratio is not None else f"ratio {'-':>7} "
    note = f"  ({f.note})" if f.note else ""
    value = amount(f.value, f.unit)
    line = f"{f.name:<46} {value:>15}   vs {f.baseline_name or '-':<40} {baseline:>13}   {ratio}{note}"
    return line.rstrip()


def over_idle(value: float, idle: float) -> str:
    return f"{(value / idle - 1) * 100:+.1f} % over idle"


def by_operation(calls: KmsCalls) -> str:
    """``calls`` as "status 2, encrypt 0, decrypt 1", failed ones (any result but ok) said apart."""
    parts = []
    for operation in KMS_OPERATIONS:
        done = sum(n for (op, _), n in calls.items() if op == operation)
        failed = sum(n for (op, result), n in calls.items() if op == operation and result != "ok")
        parts.append(f"{operation} {done}" + (f" ({failed} not ok)" if failed else ""))
    return ", ".join(parts)


def calls_delta(after: KmsCalls, before: KmsCalls) -> KmsCalls:
    """The calls made between two readings of the same counters."""
    return Counter({key: n - before.get(key, 0) for key, n in after.items() if n - before.get(key, 0)})


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def responses(t: Tally) -> str:
    return "responses " + ", ".join(f"{code}: {t.errors.get(code, 0)}" for code in ("409", "429", "5xx"))


def secrets_lister(api: client.ApiClient) -> Callable[..., Any]:
    return client.CoreV1Api(api).list_secret_for_all_namespaces


def managed_lister(api: client.ApiClient) -> Callable[..., Any]:
    return partial(client.CustomObjectsApi(api).list_cluster_custom_object, API_GROUP, API_VERSION, PLURAL)


def plain_secret(name: str, data: str = "eA==", labels: dict[str, str] | None = None) -> Object:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"v": data}}


# --- the run -----------------------------------------------------------------------------------------------


class Bench:
    """The steps of the run, in order, against one control plane and the operator's replicas."""

    def __init__(
        self, cluster: local_cluster.Cluster, sizes: Sizes, progress: Progress, kms: str = "none"
    ) -> None:
        self.cluster = cluster
        self.sizes = sizes
        self.progress = progress
        self.kms = kms
        self.kms_env: dict[str, str] = {}  # the operator's key-service settings (setup)
        self.plugin_stats: Path | None = None  # --kms kmsv2: the control plane's plugin's stats file
        self.workdir = cluster.state_dir / "bench"
        self.results = Results(sizes, kms=kms)
        self.admin = make_client(cluster.kubeconfig, sizes.threads)
        self.core = client.CoreV1Api(self.admin)
        self.custom = client.CustomObjectsApi(self.admin)
        self.pool = ThreadPoolExecutor(sizes.threads, thread_name_prefix="bench-client")
        self.audit = AuditLog(cluster.audit_log)
        self.namespaces = [f"bench-{i}" for i in range(sizes.namespaces)]
        self.watches: list[FirstSeen] = []
        self.env: OperatorEnvironment | None = None
        self.identities = [f"replica-{i}" for i in range(sizes.replicas)]
        self.operators: list[OperatorProcess] = []  # one per identity, in that order
        self.ports: list[int] = []  # their metrics ports
        self.coordination = client.CoordinationV1Api(self.admin)
        self.step = ""
        self.rss_idle: list[float] = []  # per replica
        self.managed: list[tuple[str, str]] = []  # (namespace, name) of step 3's ManagedSecrets
        self.managed_keys: set[str] = set()  # "namespace/name" of every ManagedSecret created
        self.steady_spans: list[tuple[int, int]] = []  # audit log marks around the steps without a handover
        self.created = 0  # ManagedSecrets created so far
        self.projected: FirstSeen | None = None  # projected Secrets, watched from step 3 on
        self.create_window = (0, 0)  # audit log marks around step 3's ManagedSecret creates
        self.raw_writes = Tally()  # the admin client's writes for step 3's raw Secrets

    # --- plumbing ------------------------------------------------------------------------------------------

    @property
    def operator_user(self) -> str:
        assert self.env is not None
        return f"system:serviceaccount:{self.env.namespace}:{SERVICE_ACCOUNT}"

    def heading(self, step: str, title: str) -> None:
        self.step = step
        print(f"\n{step}. {title}", flush=True)
        self.progress.log(f"step {step}: {title}")

    def record(
        self, name: str, value: float, unit: str, *, vs: tuple[str, float] | None = None, note: str = ""
    ) -> None:
        """Prints and keeps one figure; ``vs`` is its baseline (a name and a value in the same unit)."""
        baseline_name, baseline = vs if vs is not None else ("", None)
        figure = Figure(self.step, name, value, unit, baseline_name, baseline, note)
        self.results.figures.append(figure)
        print(figure_line(figure), flush=True)

    @property
    def several(self) -> bool:
        return len(self.identities) > 1

    def record_rss(self, what: str, rss: list[float]) -> None:
        """``rss`` per replica, beside idle: one figure for one replica; the largest and the sum for several."""
        if not self.several:
            idle = self.rss_idle[0]
            self.record(
                f"operator RSS {what}", rss[0], "MiB", vs=("operator RSS idle", idle), note=over_idle(rss[0], idle)
            )
            return
        for label, value, idle, of in (
            ("replica RSS max", max(rss), max(self.rss_idle), "the largest"),
            ("replica RSS sum", sum(rss), sum(self.rss_idle), "summed"),
        ):
            note = f"{over_idle(value, idle)}; {of} of {len(rss)} replicas"
            self.record(f"{label} {what}", value, "MiB", vs=(f"{label} idle", idle), note=note)

    def writes_table(self, title: str, tally: Tally, per: int) -> None:
        """Prints and records ``tally``'s writes by verb and resource, divided by ``per``."""
        rows = {what: count / per for what, count in tally.writes.most_common()}
        self.results.writes[title] = rows
        self.results.errors[title] = dict(tally.errors)
        print(f"  {title}:")
        for what, value in rows.items():
            verb, resource = what.split(" ", 1)
            print(f"    {verb:<8} {resource:<36} {value:>10.2f}")
        if not rows:
            print("    (none)")

    @staticmethod
    def generous(count: int) -> float:
        return max(120.0, count * 0.2)

    def spread(self, prefix: str, count: int) -> list[tuple[str, str]]:
        """``count`` (namespace, name) pairs, round-robin over the benchmark namespaces."""
        return [(self.namespaces[i % len(self.namespaces)], f"{prefix}-{i:05d}") for i in range(count)]

    def submit_all(self, call: Callable[[Any], object], items: Iterable[Any]) -> list[Future[float]]:
        """Makes ``call`` for every item on the pool; each future gives the monotonic time its call returned."""

        def timed(item: Any) -> float:
            call(item)
            return time.monotonic()

        return [self.pool.submit(timed, item) for item in items]

    @staticmethod
    def finish(futures: list[Future[float]]) -> float:
        """Waits for every call (raising the first error); returns when the last of them returned."""
        return max(future.result() for future in futures)

    def parallel(self, call: Callable[[Any], object], items: Iterable[Any]) -> float:
        """Seconds the pool takes to make ``call`` for every item."""
        started = time.monotonic()
        return self.finish(self.submit_all(call, items)) - started

    def create_secret(self, item: tuple[str, Object]) -> None:
        send(self.core.create_namespaced_secret, item[0], item[1])

    def create_managed(self, item: tuple[str, Object]) -> None:
        send(self.custom.create_namespaced_custom_object, API_GROUP, API_VERSION, item[0], PLURAL, item[1])

    def request_rotation(self, item: tuple[str, str]) -> None:
        """What ``kubectl msecret rotate`` does: a fresh request id in the rotate annotation."""
        body = {"metadata": {"annotations": {ROTATE_ANNOTATION: f"bench-{uuid.uuid4().hex[:12]}"}}}
        send(self.custom.patch_namespaced_custom_object, API_GROUP, API_VERSION, item[0], PLURAL, item[1], body)

    def watch(self, lister: Callable[[client.ApiClient], Callable[..., Any]], **kwargs: Any) -> FirstSeen:
        """A FirstSeen on a client of its own (a watch holds its connection), stopped when the run ends."""
        watcher = FirstSeen(lister(make_client(self.cluster.kubeconfig, 2)), **kwargs)
        self.watches.append(watcher)
        return watcher

    def gauges(self) -> list[Gauges | None]:
        """Each replica's gauges (None for one that does not answer)."""
        return [read_gauges(port) for port in self.ports]

    def describe(self, gauges: list[Gauges | None]) -> str:
        if not self.several:
            return f"operator {gauges[0]}"
        return "; ".join(
            f"{who}: {g if g is not None else 'no answer'}" for who, g in zip(self.identities, gauges, strict=True)
        )

    def rss(self) -> list[float]:
        """Each replica's VmRSS in MiB."""
        return [rss_mib(self.pid(operator)) for operator in self.operators]

    @staticmethod
    def pid(operator: OperatorProcess) -> int:
        assert operator.proc is not None
        return operator.proc.pid

    def each(self, call: Callable[[OperatorProcess], object]) -> None:
        """Makes ``call`` for every replica at once, as a Deployment starts its pods (raises the first error)."""
        with ThreadPoolExecutor(len(self.operators), thread_name_prefix="bench-replica") as pool:
            for future in [pool.submit(call, operator) for operator in self.operators]:
                future.result()

    def start_operators(self, tag: str) -> float:
        """Starts every replica (a log file each per start), all at once; returns the monotonic time just before
        the first was spawned. Each start returns once its replica logged that it started."""
        assert self.env is not None
        self.operators = [
            OperatorProcess(
                self.env.kubeconfig,
                self.env.namespace,
                self.workdir / f"operator-{tag}-{identity}.log",
                env={**PRODUCTION_ENV, **self.kms_env, "MSO_IDENTITY": identity},
                log_level="INFO",
            )
            for identity in self.identities
        ]
        self.ports = []
        started = time.monotonic()
        self.each(OperatorProcess.start)
        self.ports = [operator.metrics_port for operator in self.operators]
        what = "operator" if not self.several else f"{len(self.operators)} operator replicas"
        self.progress.log(f"{what} started in {time.monotonic() - started:.1f}s")
        return started

    def stop_operators(self) -> None:
        """Stops every replica at once (SIGTERM: each drains and deletes its Lease)."""
        if self.operators:
            self.each(OperatorProcess.stop)

    def holdings(self) -> dict[str, frozenset[int | str]]:
        """Each member Lease's holder and the shards it names."""
        assert self.env is not None
        leases = read_leases(
            self.coordination.list_namespaced_lease, self.env.namespace, f"{MEMBER_LABEL}=true", SHARDS_ANNOTATION
        )
        return {identity: parse_held(held) for identity, held in leases.items()}

    def held_once(self, holdings: dict[str, frozenset[int | str]]) -> bool:
        """Whether every replica has a Lease, and the Leases name every shard (and the leader) exactly once."""
        named = [shard for held in holdings.values() for shard in held]
        return set(holdings) == set(self.identities) and len(named) == len(EVERY_SHARD) == len(set(named))

    def settle(self, timeout: float) -> float:
        """Waits until, in 3 polls 0.5 s apart, every replica's pending_work == 0, their objects add up to the
        ManagedSecrets created, each sees every replica, and the Leases name every shard exactly once, unchanged.

        Returns the monotonic time of the first of those polls. (pending_work alone is not enough: it counts
        the service's worker pools, not the events the watches have yet to hand over. And a replica that holds
        a shard another one should own serves its objects until it hands it over.)
        """
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + 10
        streak: list[tuple[float, dict[str, frozenset[int | str]]]] = []
        while True:
            at = time.monotonic()
            gauges = self.gauges()
            holdings = self.holdings()
            answered = [g for g in gauges if g is not None]
            good = (
                len(answered) == len(gauges)
                and all(g.pending == 0 and g.replicas == len(gauges) for g in answered)
                and sum(g.objects for g in answered) == self.created
                and self.held_once(holdings)
                and (not streak or streak[-1][1] == holdings)
            )
            streak = [*streak, (at, holdings)] if good else []
            if len(streak) == 3:
                return streak[0][0]
            if at > deadline:
                raise BenchError(
                    f"the operator did not settle within {timeout:.0f}s; last gauges: {self.describe(gauges)}; "
                    f"Leases: {self.leases_text(holdings)}"
                )
            if at > next_report:
                self.progress.log(f"settling: {self.describe(gauges)}; Leases: {self.leases_text(holdings)}")
                next_report = at + 10
            time.sleep(POLL)

    @staticmethod
    def leases_text(holdings: dict[str, frozenset[int | str]]) -> str:
        return ", ".join(f"{who} [{format_held(held)}]" for who, held in sorted(holdings.items())) or "none"

    def wait_seen(
        self, watcher: FirstSeen, keys: set[str], what: str, timeout: float, need: int | None = None
    ) -> float:
        """Waits until ``need`` (default: all) of ``keys`` were seen; returns when the need-th one was."""
        need = len(keys) if need is None else need
        poll = 0.002 if len(keys) == 1 else 0.1
        deadline = time.monotonic() + timeout
        next_report = time.monotonic() + 10
        while (count := watcher.count(keys)) < need:
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}: {count}/{need} reached")
            if now > next_report:
                self.progress.log(f"{what}: {count}/{need} ({self.describe(self.gauges())})")
                next_report = now + 10
            time.sleep(poll)
        return sorted(watcher.times(keys))[need - 1]

    def sequential(
        self, watcher: FirstSeen, items: list[tuple[str, Object]], create: Callable[[tuple[str, Object]], None]
    ) -> list[float]:
        """Creates ``items`` one at a time; for each, seconds from sending the create to its watch event."""
        latencies = []
        for ns, body in items:
            key = f"{ns}/{body['metadata']['name']}"
            sent = time.monotonic()
            create((ns, body))
            latencies.append(self.wait_seen(watcher, {key}, f"the watch event of {key}", LATENCY_TIMEOUT) - sent)
            time.sleep(0.05)
        return latencies

    def kms_calls(self) -> KmsCalls:
        """The operator's key-service calls so far, summed over the replicas (since each one started)."""
        total: KmsCalls = Counter()
        for who, port in zip(self.identities, self.ports, strict=True):
            calls = read_kms_requests(port)
            if calls is None:
                raise BenchError(f"{who} does not answer on its metrics port {port}")
            total += calls
        return total

    def plugin_calls(self) -> KmsCalls | None:
        """The KMS v2 plugin's calls so far (all its clients), or None when the operator does not use it."""
        return read_plugin_stats(self.plugin_stats) if self.plugin_stats is not None else None

    def kms_table(self, title: str, ours: KmsCalls, plugin: KmsCalls | None) -> None:
        """Prints and records the calls by operation: the operator's metric and (kmsv2) the plugin's stats."""
        tables = {"operator": ours, **({"plugin": plugin} if plugin is not None else {})}
        self.results.kms_calls[title] = {
            who: {f"{op} {result}": n for (op, result), n in sorted(calls.items())}
            for who, calls in tables.items()
        }
        print(f"  {title}:")
        header = f"    {'operation':<10} {'operator (metric)':>18}"
        print(header + (f" {'plugin (stats file)':>20}" if plugin is not None else ""))
        for operation in KMS_OPERATIONS:
            row = f"    {operation:<10} {sum(n for (op, _), n in ours.items() if op == operation):>18}"
            if plugin is not None:
                row += f" {sum(n for (op, _), n in plugin.items() if op == operation):>20}"
            print(row)

    def record_kms(self, what: str, ours: KmsCalls, plugin: KmsCalls | None, note: str = "") -> None:
        """The operator's calls over a stretch, beside none (no key service); by operation in the note."""
        replicas = f"; summed over {len(self.identities)} replicas" if self.several else ""
        self.record(
            f"operator KMS calls {what}",
            ours.total(),
            "calls",
            vs=(NO_KMS, 0),
            note=f"{by_operation(ours)}{replicas}{'; ' + note if note else ''}",
        )
        if plugin is not None:
            self.record(
                f"KMS plugin calls {what}",
                plugin.total(),
                "calls",
                vs=("the operator's count (its metric)", ours.total()),
                note=f"{by_operation(plugin)}; the plugin's stats file, kube-apiserver's calls included",
            )

    # --- setup and teardown --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.progress.log("installing the CRD and the admission policy; creating the namespaces")
        install_crd(self.admin)
        install_admission_policy(self.admin)
        for namespace in [*self.namespaces, OTHER_NAMESPACE]:
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = OperatorEnvironment(self.admin, self.workdir)
        token = kube.token_for(self.admin, self.env.namespace, SERVICE_ACCOUNT, seconds=TOKEN_SECONDS)
        write_token_kubeconfig(self.admin, token, self.env.kubeconfig)
        self.kms_env = self.key_service()

    def key_service(self) -> dict[str, str]:
        """The operator's environment for ``--kms``: the control plane's plugin, or a SoftHSM2 token of ours."""
        if self.kms == "kmsv2":
            info = json.loads((self.cluster.state_dir / "cluster.json").read_text()).get("kms")
            if not info:
                raise BenchError("the control plane runs no KMS v2 plugin (cluster.json has no 'kms' entry)")
            self.plugin_stats = Path(info["stats"])
            self.progress.log(f"keyring sealed by the control plane's KMS v2 plugin {info['socket']}")
            return {"MSO_KMS_PROVIDER": "kmsv2", "MSO_KMS_ENDPOINT": f"unix://{info['socket']}"}
        if self.kms == "pkcs11":
            directory = self.workdir / "softhsm"
            try:
                softhsm.init_token(directory, token_label=KMS_TOKEN_LABEL, key_label=KMS_KEY_LABEL)
                library = softhsm.library()
            except softhsm.SoftHsmError as e:
                raise BenchError(f"no SoftHSM2 token for --kms pkcs11: {e}") from e
            self.progress.log(f"keyring sealed under key {KMS_KEY_LABEL} of a SoftHSM2 token in {directory}")
            return {
                "MSO_KMS_PROVIDER": "pkcs11",
                "MSO_PKCS11_LIBRARY": library,
                "MSO_PKCS11_TOKEN_LABEL": KMS_TOKEN_LABEL,
                "MSO_PKCS11_PIN_FILE": str(softhsm.pin_path(directory)),
                "MSO_PKCS11_KEY_LABEL": KMS_KEY_LABEL,
                **softhsm.environment(directory),
            }
        return {}

    def close(self) -> None:
        for watcher in self.watches:
            watcher.stop()
        if restarts := sum(w.restarts for w in self.watches):
            self.progress.log(f"the benchmark's watches broke and listed again {restarts} times")
        self.stop_operators()
        self.pool.shutdown(cancel_futures=True)

    def operator_log_tail(self, lines: int = 40) -> str:
        """The last lines of each replica's log (fewer of each when there are several)."""
        each = max(10, lines // max(1, len(self.operators)))
        tails = [
            (f"--- {operator.log_path.name}\n" if self.several else "")
            + "\n".join(operator.logs().splitlines()[-each:])
            for operator in self.operators
        ]
        return "\n".join(tails)

    # --- the steps -----------------------------------------------------------------------------------------

    def step_rss_idle(self) -> None:
        replicas = f" ({len(self.identities)} replicas)" if self.several else ""
        self.heading("1", f"operator memory, idle{replicas}")
        plugin_before = self.plugin_calls()
        started = self.start_operators("first")
        settled = self.settle(self.generous(0))
        self.progress.log(
            f"every shard held exactly once {settled - started:.1f}s after the first spawn: "
            f"{self.leases_text(self.holdings())}"
        )
        time.sleep(self.sizes.pause_seconds)
        self.rss_idle = self.rss()
        note = "the RSS figures' baseline"
        if not self.several:
            self.record("operator RSS idle (no ManagedSecret)", self.rss_idle[0], "MiB", note=note)
        else:
            n = len(self.rss_idle)
            self.record(
                "replica RSS max idle (no ManagedSecret)", max(self.rss_idle), "MiB", note=f"{note}; of {n}"
            )
            self.record(
                "replica RSS sum idle (no ManagedSecret)", sum(self.rss_idle), "MiB", note=f"{note}; of {n}"
            )
        if self.kms != "none":
            # From spawn until settled + the pause: the keyring is created and sealed (by the leader).
            ours, plugin_after = self.kms_calls(), self.plugin_calls()
            plugin = calls_delta(plugin_after, plugin_before) if plugin_after is not None else None
            pause = f"{self.sizes.pause_seconds:g} s"
            self.kms_table(f"KMS calls at start-up on the empty cluster (until settled + {pause})", ours, plugin)
            self.record_kms("at start-up (empty cluster)", ours, plugin, note="the keyring created and sealed")

    def step_unrelated(self) -> None:
        n = self.sizes.unrelated
        self.heading("2", f"{n:,} unrelated Secrets (no labels, 1 KiB of random data each)")
        few = min(n, max(5, n // 100))
        names = [*self.spread("u", n - few), *((OTHER_NAMESPACE, f"u-{i:05d}") for i in range(few))]
        items = [(ns, plain_secret(name, base64.b64encode(os.urandom(1024)).decode())) for ns, name in names]
        seconds = self.parallel(self.create_secret, items)
        rate = f"the raw create rate: {n / seconds:,.0f} Secrets/s with {self.sizes.threads} threads"
        self.record(f"{n:,} unrelated Secrets created", seconds, "s", note=rate)
        time.sleep(self.sizes.pause_seconds)
        self.record_rss("with the unrelated Secrets", self.rss())

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the API server, etcd and the operator (its replicas together)."""
        used = {
            name: cpu_seconds(int((self.cluster.state_dir / "pids" / f"{name}.pid").read_text()))
            for name in ("kube-apiserver", "etcd")
        }
        used["operator"] = sum(cpu_seconds(self.pid(operator)) for operator in self.operators)
        return used

    def record_cpu(
        self,
        what: str,
        before: dict[str, float],
        after: dict[str, float],
        per: int,
        vs: tuple[str, dict[str, float], dict[str, float]] | None = None,
    ) -> None:
        """CPU milliseconds per object of each process between ``before`` and ``after`` (beside ``vs``)."""
        for name in ("kube-apiserver", "etcd", "operator"):
            used = (after[name] - before[name]) * 1000 / per
            if vs is not None and name != "operator":
                base = (vs[2][name] - vs[1][name]) * 1000 / per
                self.record(f"{name} CPU per {what}", used, "ms", vs=(f"{name} CPU per {vs[0]}", base))
            else:
                note = f"summed over {len(self.operators)} replicas" if name == "operator" and self.several else ""
                self.record(f"{name} CPU per {what}", used, "ms", note=note)

    def step_creates(self) -> None:
        n = self.sizes.objects
        self.heading("3", f"{n:,} ManagedSecrets created -> every Secret projected")
        self.projected = self.watch(secrets_lister, label_selector=f"{MANAGED_LABEL}=true")
        self.projected.start()
        raw = [(ns, plain_secret(name)) for ns, name in self.spread("raw", n)]
        start = self.audit.mark()
        raw_cpu = self.cpu()
        raw_seconds = self.parallel(self.create_secret, raw)
        raw_cpu_after = self.cpu()
        self.raw_writes = self.audit.tally(ADMIN_USER, start, self.audit.mark())
        self.record(
            f"{n:,} raw Secrets created",
            raw_seconds,
            "s",
            note=f"{n / raw_seconds:,.0f}/s; the next line's baseline",
        )

        self.managed = self.spread("ms", n)
        keys = {f"{ns}/{name}" for ns, name in self.managed}
        self.managed_keys |= keys
        items = [(ns, managed_secret(name)) for ns, name in self.managed]
        kms_before = (self.kms_calls(), self.plugin_calls()) if self.kms != "none" else None
        start = self.audit.mark()
        ms_cpu = self.cpu()
        started = time.monotonic()
        futures = self.submit_all(self.create_managed, items)
        self.created += n
        rss_1000 = None
        if n >= 1000:
            self.wait_seen(self.projected, keys, "projected Secrets", self.generous(n), need=1000)
            rss_1000 = self.rss()
        sent = self.finish(futures) - started
        projected = self.wait_seen(self.projected, keys, "projected Secrets", self.generous(n)) - started
        self.progress.log(f"all {n:,} projected after {projected:.1f}s; waiting for pending_work == 0")
        self.settle(self.generous(n))
        ms_cpu_after = self.cpu()
        rss_all = self.rss()
        served = [g.objects if g is not None else 0.0 for g in self.gauges()]
        self.create_window = (start, self.audit.mark())
        seconds = time.monotonic() - started
        kms_after = (self.kms_calls(), self.plugin_calls()) if kms_before is not None else None
        self.record(
            f"{n:,} ManagedSecrets created -> all projected",
            projected,
            "s",
            vs=(f"{n:,} raw Secrets created", raw_seconds),
            note=f"{n / projected:,.0f}/s; the creates were sent in {sent:.2f} s",
        )
        # Where the time goes: all three processes share the machine's cores.
        self.record_cpu("ManagedSecret", ms_cpu, ms_cpu_after, n, vs=("raw Secret", raw_cpu, raw_cpu_after))
        if rss_1000 is not None:
            self.record_rss("at 1,000 ManagedSecrets", rss_1000)
        self.record_rss(f"at {n:,} ManagedSecrets, settled", rss_all)
        # How evenly the shards spread the objects (managed_secrets_objects of each replica, settled).
        share = n / len(served)
        even = f"an even share ({n:,} / {len(served)})"
        each = ", ".join(f"{who} {count:,.0f}" for who, count in zip(self.identities, served, strict=True))
        self.record("ManagedSecrets served per replica, min", min(served), "objects", vs=(even, share), note=each)
        self.record("ManagedSecrets served per replica, max", max(served), "objects", vs=(even, share))
        if kms_before is not None and kms_after is not None:
            ours = calls_delta(kms_after[0], kms_before[0])
            before, after = kms_before[1], kms_after[1]
            plugin = calls_delta(after, before) if after is not None and before is not None else None
            self.kms_table(f"KMS calls for {n:,} ManagedSecrets created (until settled)", ours, plugin)
            self.record_kms(
                f"creating {n:,} objects",
                ours,
                plugin,
                note=f"{ours.total() / n:.4f}/object; over {seconds:.0f} s, a check each {KMS_CHECK_SECONDS} s",
            )

    def step_writes_per_object(self) -> None:
        n = self.sizes.objects
        self.heading("4", f"operator writes per ManagedSecret (audit log of step 3, until settled; {n:,} objects)")
        tally = self.audit.tally(self.operator_user, *self.create_window)
        self.writes_table("operator writes per ManagedSecret", tally, n)
        self.record(
            "operator writes per ManagedSecret",
            tally.total_writes / n,
            "/object",
            vs=("client writes per raw Secret", self.raw_writes.total_writes / n),
            note=f"{responses(tally)}; GETs {tally.gets / n:.2f}/object",
        )

    def step_latency(self) -> None:
        s = self.sizes.latency_samples
        self.heading("5", f"latency create -> projected: {s} creates one at a time, on the settled operator")
        assert self.projected is not None
        managed = [(ns, managed_secret(name)) for ns, name in self.spread("lat-ms", s)]
        self.managed_keys |= {f"{ns}/{body['metadata']['name']}" for ns, body in managed}
        ours = self.sequential(self.projected, managed, self.create_managed)
        self.created += s
        self.settle(self.generous(s))
        plain = self.watch(secrets_lister, label_selector=f"{LATENCY_LABEL}=true")
        plain.start()
        labels = {LATENCY_LABEL: "true"}
        secrets = [(ns, plain_secret(name, labels=labels)) for ns, name in self.spread("lat-raw", s)]
        floor = self.sequential(plain, secrets, self.create_secret)
        plain.stop()
        self.projected.stop()
        for p in (50, 99):
            self.record(
                f"create ManagedSecret -> projected, p{p}",
                percentile(ours, p) * 1000,
                "ms",
                vs=(f"create Secret -> its watch event, p{p}", percentile(floor, p) * 1000),
            )

    def step_idle_writes(self) -> None:
        seconds = self.sizes.idle_seconds
        self.heading("6", f"operator writes while idle ({seconds:.0f} s after pending_work == 0)")
        self.settle(self.generous(self.sizes.latency_samples))
        start = self.audit.mark()
        time.sleep(seconds)
        end = self.audit.mark()
        self.steady_spans.append((self.create_window[0], end))  # steps 3 to 6: the shards stayed put
        tally = self.audit.tally(self.operator_user, start, end)
        self.writes_table("operator writes while idle (total)", tally, 1)
        leases = tally.writes_to("leases")
        self.record(
            f"operator writes in {seconds:.0f} s idle, Leases apart",
            tally.total_writes - leases,
            "writes",
            vs=("expected", 0),
        )
        # Each replica renews its Lease every MSO_LEASE_RENEW_SECONDS (with 10 % jitter).
        n = len(self.operators)
        self.record(
            f"Lease renewals in {seconds:.0f} s idle",
            leases,
            "renewals",
            vs=(f"{n} replica{'s' if n > 1 else ''}, one each {RENEW_SECONDS:g} s", n * seconds / RENEW_SECONDS),
        )

    def step_cold_start(self) -> None:
        if self.several:
            self.heading("7", f"cold start: all {len(self.operators)} replicas stopped, then started -> steady")
        else:
            self.heading("7", "cold start: the operator restarted -> steady")
        self.stop_operators()
        listed = time.monotonic()
        total = len(list_all(managed_lister(self.admin))[0])
        secrets = len(list_all(secrets_lister(self.admin))[0])
        listed = time.monotonic() - listed
        plugin_before = self.plugin_calls()
        start = self.audit.mark()
        started = self.start_operators("restart")
        if total != self.created:
            raise BenchError(f"{total} ManagedSecrets exist, {self.created} were created")
        steady = self.settle(self.generous(total))
        rss = self.rss()
        time.sleep(max(0.0, steady + self.sizes.pause_seconds - time.monotonic()))
        tally = self.audit.tally(self.operator_user, start, self.audit.mark())
        ours = self.kms_calls() if self.kms != "none" else Counter()  # new processes: counted from 0
        plugin_after = self.plugin_calls()
        pause = f"{self.sizes.pause_seconds:g} s"
        self.writes_table(f"operator writes during cold start (total, until steady + {pause})", tally, 1)
        until = "objects == total and pending_work == 0 in 3 polls"
        if self.several:
            until = "the summed objects == total, pending_work == 0 and every shard held once, in 3 polls"
        self.record(
            f"cold start -> steady ({total:,} ManagedSecrets)",
            steady - started,
            "s",
            vs=(f"list {total:,} ManagedSecrets + {secrets:,} Secrets", listed),
            note=f"from spawn until {until}",
        )
        leases = tally.writes_to("leases")
        self.record(
            "operator writes in cold start, Leases apart",
            tally.total_writes - leases,
            "writes",
            vs=("expected", 0),
            note=f"{responses(tally)}; {leases} Lease writes",
        )
        self.record_rss("after cold start, steady", rss)
        if self.kms != "none":
            plugin = None
            if plugin_after is not None and plugin_before is not None:
                plugin = calls_delta(plugin_after, plugin_before)
            self.kms_table(f"KMS calls during cold start (until steady + {pause})", ours, plugin)
            window = steady - started + self.sizes.pause_seconds
            self.record_kms(
                "per cold start",
                ours,
                plugin,
                note=f"{total:,} ManagedSecrets stored: {ours.total() / total:.4f}/object; over {window:.0f} s",
            )
            decrypts = sum(n for (op, _), n in ours.items() if op == "decrypt")
            r = len(self.identities)
            self.record(
                "operator KMS decrypts per cold start",
                decrypts,
                "calls",
                vs=(f"the keyring's seal, once per replica ({r})", r),
                note=f"O(1) expected, not O({total:,} objects)",
            )

    def step_rotations(self) -> None:
        r = self.sizes.rotations
        self.heading("8", f"{r:,} rotations requested (rotate annotation) -> a new status.currentVersion")
        targets = self.managed[:r]
        keys = {f"{ns}/{name}" for ns, name in targets}
        items, version = list_all(managed_lister(self.admin))
        before = {key_of(o): (o.get("status") or {}).get("currentVersion") for o in items}
        if not all(before.get(k) for k in keys):
            raise BenchError("some ManagedSecrets to rotate have no status.currentVersion")

        def rotated(obj: Object) -> bool:
            current = (obj.get("status") or {}).get("currentVersion")
            return bool(current) and current != before.get(key_of(obj))

        watcher = self.watch(managed_lister, match=rotated)
        watcher.start(resource_version=version)
        start = self.audit.mark()
        started = time.monotonic()
        sent = self.parallel(self.request_rotation, targets)
        done = self.wait_seen(watcher, keys, "rotated ManagedSecrets", self.generous(r)) - started
        watcher.stop()
        time.sleep(2)
        end = self.audit.mark()
        self.steady_spans.append((start, end))
        tally = self.audit.tally(self.operator_user, start, end)
        client_writes = self.audit.tally(ADMIN_USER, start, end).total_writes
        self.writes_table("operator writes per rotation", tally, r)
        self.record(
            f"{r:,} rotations requested -> all rotated",
            done,
            "s",
            vs=(f"send the {r:,} rotate patches", sent),
            note=f"{r / done:,.1f} rotations/s",
        )
        self.record(
            "operator writes per rotation",
            tally.total_writes / r,
            "/rotation",
            vs=("client writes per rotation", client_writes / r),
            note=f"{responses(tally)}; GETs {tally.gets / r:.2f}/rotation",
        )

    def managed_secret_of(self, ref: Object) -> str | None:
        """The ManagedSecret (``namespace/name``) a write's objectRef is about: the object itself (and its
        status), its projected Secret (same name, same namespace) or its store Secret (msec.<ns>.<name>)."""
        assert self.env is not None
        namespace, name = ref.get("namespace", ""), ref.get("name", "")
        if ref.get("resource") == "secrets" and namespace == self.env.namespace:
            if not name.startswith("msec."):
                return None
            namespace, _, name = name.removeprefix("msec.").partition(".")
        elif ref.get("resource") not in ("managedsecrets", "secrets"):
            return None
        key = f"{namespace}/{name}"
        return key if key in self.managed_keys else None

    def step_one_writer(self) -> None:
        self.heading("9", "ManagedSecrets written by more than one replica (audit log User-Agents)")
        writers = self.audit.writers(self.operator_user, self.steady_spans, self.managed_secret_of)
        shared = sorted(key for key, agents in writers.items() if len(agents) > 1)
        agents = Counter(agent for found in writers.values() for agent in found)
        by = ", ".join(
            f"{agent.removeprefix('managed-secrets-operator/') or '(none)'}: {count:,}"
            for agent, count in sorted(agents.items())
        )
        self.record(
            "ManagedSecrets written by 2+ replicas",
            len(shared),
            "objects",
            vs=("expected", 0),
            note=f"steps 3-6 and 8, the cold start left out; {len(writers):,} objects written, by {by or '-'}",
        )
        if shared:
            print(f"  for example: {', '.join(shared[:5])}")

    def run(self) -> None:
        self.setup()
        self.step_rss_idle()
        self.step_unrelated()
        self.step_creates()
        self.step_writes_per_object()
        self.step_latency()
        self.step_idle_writes()
        self.step_cold_start()
        self.step_rotations()
        self.step_one_writer()


# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, a 5 s idle window")
    parser.add_argument("--objects", type=int, help=f"ManagedSecrets ({FULL.objects}; quick {QUICK.objects})")
    parser.add_argument("--unrelated", type=int, help=f"plain Secrets ({FULL.unrelated}; quick {QUICK.unrelated})")
    parser.add_argument("--rotations", type=int, help=f"rotations (--objects; quick {QUICK.rotations})")
    parser.add_argument("--namespaces", type=int, help=f"namespaces ({FULL.namespaces}; quick {QUICK.namespaces})")
    parser.add_argument("--threads", type=int, help=f"client threads ({FULL.threads})")
    parser.add_argument(
        "--replicas", type=int, help=f"operator processes sharing the ManagedSecrets by shard ({FULL.replicas})"
    )
    parser.add_argument(
        "--kms",
        choices=KMS_CHOICES,
        default="none",
        help="the key service that seals the operator's keyring: none (plain), kmsv2 (the control plane's "
        "KMS v2 plugin) or pkcs11 (a SoftHSM2 token of the run's own); its calls are counted (%(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="leave the control plane (and its logs) running")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name in ("objects", "unrelated", "namespaces", "threads", "replicas"):
        if getattr(args, name) is not None:
            sizes = dataclasses.replace(sizes, **{name: getattr(args, name)})
    rotations = args.rotations
    if rotations is None:
        rotations = QUICK.rotations if args.quick else sizes.objects
    sizes = dataclasses.replace(sizes, rotations=min(rotations, sizes.objects))
    if min(dataclasses.astuple(sizes)) < 1:
        parser.error("every size must be at least 1")
    return sizes, args


def print_summary(results: Results) -> None:
    print(f"\nsummary (ratio = figure / baseline; the whole run took {results.seconds:.0f} s)")
    print(f"{'figure':<46} {'value':>15}   vs {'baseline':<40} {'value':>13}")
    for figure in results.figures:
        print(figure_line(figure))


def run(state: Path, sizes: Sizes, progress: Progress, kms: str = "none") -> Results:
    try:
        cluster = local_cluster.up_with_retries(state)
    except RuntimeError as e:
        raise BenchError(f"the control plane did not start: {e}") from e
    progress.log(f"control plane up in {state}")
    bench = Bench(cluster, sizes, progress, kms)
    try:
        bench.run()
    except Exception:
        tail = bench.operator_log_tail()
        if tail:
            print(f"last lines of the operator log:\n{tail}", file=sys.stderr)
        raise
    finally:
        bench.close()
    return bench.results


def main(argv: list[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    progress = Progress()
    state = Path(tempfile.gettempdir()) / f"mso-bench-cluster-{os.getpid()}"
    print(
        f"managed-secrets-operator cluster benchmark{' (quick)' if args.quick else ''}: {sizes.objects:,} "
        f"ManagedSecrets, {sizes.unrelated:,} unrelated Secrets, {sizes.rotations:,} rotations, "
        f"{sizes.namespaces} namespaces, {sizes.threads} client threads, "
        f"{sizes.replicas} operator replica{'s' if sizes.replicas > 1 else ''}, "
        f"keyring sealed by: {args.kms if args.kms != 'none' else 'no key service (plain)'}",
        flush=True,
    )
    try:
        results = run(state, sizes, progress, args.kms)
    except (BenchError, AssertionError) as e:  # AssertionError: the timeouts of the test helpers
        print(f"bench-cluster: the run could not finish: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            progress.log(
                f"kept the control plane (the operator is stopped): KUBECONFIG={state / 'admin.kubeconfig'}; "
                f"logs in {state / 'logs'} and {state / 'bench'}; stop it with "
                f"python hack/cluster.py down --dir {state}"
            )
        else:
            local_cluster.down(state)
    results.seconds = progress.elapsed()
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results.to_json(), indent=2) + "\n")
        progress.log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
