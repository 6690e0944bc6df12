"""Several operator replicas (processes of the same install, one ServiceAccount, one store and keyring) against
the real API server: each object served by exactly one of them, takeover after a SIGKILL without a doubled
side effect, a rolling restart that writes nothing, a partitioned replica that stops acting.

The session's own operator is stopped for this module, so that only the replicas act. Figures (takeover
time, the longest a shard had no owner) are printed for the closing notes, and bounded by what the Lease
settings promise (``MSO_LEASE_SECONDS=8``, renewed every second): never asserted on wall-clock speed beyond
that bound.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kubernetes import client

from managed_secrets.names import (
    API_GROUP,
    API_VERSION,
    MEMBER_LABEL,
    PLURAL,
    ROTATE_ANNOTATION,
    SHARD_LABEL,
    SHARDS_ANNOTATION,
)
from managed_secrets.service.sharding import LEADER, parse_held
from support import kube
from support.https_endpoint import Call, Endpoint, Reply, value_reply
from support.operator import (
    OperatorEnvironment,
    OperatorProcess,
    annotate,
    managed_secret,
    write_token_kubeconfig,
)
from support.proxy import Proxy

SHARDS = 16
LEASE_SECONDS = 8.0
RENEW_SECONDS = 1.0
FAILOVER_BOUND = LEASE_SECONDS + 4 * RENEW_SECONDS
"""Unseen for the Lease duration, then a round to see it and one to claim and confirm, plus the listing."""
OBJECTS = 300
EVERY = {*range(SHARDS), LEADER}

pytestmark = pytest.mark.timeout(900)


class Replicas:
    def __init__(self, admin: client.ApiClient, env: OperatorEnvironment, workdir: Path) -> None:
        self.admin = admin
        self.env = env
        self.workdir = workdir
        self.running: dict[str, OperatorProcess] = {}
        self.logs: dict[str, Path] = {}

    def start(self, identity: str, kubeconfig: Path | None = None) -> OperatorProcess:
        log = self.workdir / f"{identity}.log"
        self.logs[identity] = log
        process = OperatorProcess(
            kubeconfig or self.env.kubeconfig,
            self.env.namespace,
            log,
            {
                "MSO_IDENTITY": identity,
                "MSO_SHARDS": str(SHARDS),
                "MSO_PURGE_INTERVAL_SECONDS": "3600",
                "MSO_LEASE_SECONDS": str(int(LEASE_SECONDS)),
                "MSO_LEASE_RENEW_SECONDS": str(int(RENEW_SECONDS)),
            },
            log_level="INFO",
            log_format="full",  # with timestamps: the handover's timeline can be read from the logs
        )
        process.start()
        self.running[identity] = process
        return process

    def stop(self, identity: str, sig: int = signal.SIGTERM) -> None:
        self.running.pop(identity).stop(sig)

    def stop_all(self) -> None:
        for identity in list(self.running):
            self.stop(identity)

    def leases(self) -> dict[str, frozenset[object]]:
        """Identity -> shards its member Lease names."""
        items = client.CoordinationV1Api(self.admin).list_namespaced_lease(
            self.env.namespace, label_selector=f"{MEMBER_LABEL}=true"
        )
        return {
            str(lease.spec.holder_identity): parse_held((lease.metadata.annotations or {}).get(SHARDS_ANNOTATION))
            for lease in items.items
        }

    def settled(self, members: set[str]) -> dict[str, frozenset[object]] | None:
        """The Leases when exactly ``members`` hold every shard, each shard once."""
        leases = {k: v for k, v in self.leases().items() if k in self.running}
        if set(leases) != members or any(not held for held in leases.values()):
            return None
        held = Counter(s for shards in leases.values() for s in shards)
        return leases if set(held) == EVERY and max(held.values()) == 1 else None

    def metrics(self, identity: str) -> dict[str, float]:
        port = self.running[identity].metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = {}
        for line in text.splitlines():
            match = re.match(r"^(managed_secrets_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match:
                found[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return found


@pytest.fixture(scope="module")
def replicas(
    admin: client.ApiClient, operator: OperatorEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    operator.process.stop()
    group = Replicas(admin, operator, tmp_path_factory.mktemp("replicas"))
    try:
        yield group
    finally:
        group.stop_all()
        operator.process.start()


@pytest.fixture(scope="module")
def served(admin: client.ApiClient, replicas: Replicas) -> Iterator[str]:
    """A namespace with 300 ManagedSecrets, all Ready, served by three replicas."""
    namespace = kube.create_namespace(admin, "replicas")
    for i in range(3):
        replicas.start(f"replica-{i}")
    kube.eventually(
        lambda: replicas.settled({"replica-0", "replica-1", "replica-2"}),
        timeout=60,
        what="three replicas to share every shard",
    )
    custom = client.CustomObjectsApi(admin)
    for i in range(OBJECTS):
        custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, managed_secret(f"s-{i:03d}")
        )
    kube.eventually(lambda: ready_count(admin, namespace) == OBJECTS, timeout=300, interval=1, what="all Ready")
    yield namespace
    kube.delete_namespace(admin, namespace)


def ready_count(admin: client.ApiClient, namespace: str) -> int:
    items = client.CustomObjectsApi(admin).list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)
    return sum(
        1
        for item in items["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (item.get("status") or {}).get("conditions", [])
        )
    )


def audit_writes(audit_log: Path, offset: int, user: str, namespace: str, operator_ns: str) -> dict[str, set[str]]:
    """ManagedSecret name -> User-Agents of the operator's writes about it (the object, its status, its projected
    Secret, its store record, its Events) after ``offset``."""
    writers: dict[str, set[str]] = defaultdict(set)
    with audit_log.open("rb") as f:
        f.seek(offset)
        for line in f:
            entry = json.loads(line)
            if entry.get("user", {}).get("username") != user or entry.get("verb") not in (
                "create",
                "update",
                "patch",
                "delete",
            ):
                continue
            ref = entry.get("objectRef") or {}
            name = str(ref.get("name") or "")
            if ref.get("namespace") == operator_ns and name.startswith(f"msec.{namespace}."):
                writers[name.removeprefix(f"msec.{namespace}.")].add(entry.get("userAgent", ""))
            elif ref.get("namespace") == namespace and ref.get("resource") in ("managedsecrets", "secrets"):
                writers[name].add(entry.get("userAgent", ""))
            elif ref.get("namespace") == namespace and ref.get("resource") == "events":
                writers[f"event {entry.get('auditID')}"].add(entry.get("userAgent", ""))
    return writers


def test_three_replicas_serve_every_object_exactly_once(
    admin: client.ApiClient, replicas: Replicas, served: str, operator: OperatorEnvironment, audit_log: Path
) -> None:
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    writers = audit_writes(audit_log, 0, user, served, operator.namespace)
    objects = {k: v for k, v in writers.items() if k.startswith("s-")}
    assert len(objects) == OBJECTS
    doubled = {k: v for k, v in objects.items() if len(v) != 1}
    assert not doubled, f"objects written by more than one replica: {doubled}"
    per_replica = Counter(next(iter(v)) for v in objects.values())
    assert set(per_replica) == {f"managed-secrets-operator/replica-{i}" for i in range(3)}
    leases = replicas.leases()
    items = client.CustomObjectsApi(admin).list_namespaced_custom_object(API_GROUP, API_VERSION, served, PLURAL)
    for item in items["items"]:
        shard = int(item["metadata"]["labels"][SHARD_LABEL])
        owner = next(i for i, held in leases.items() if shard in held)
        assert writers[item["metadata"]["name"]] == {f"managed-secrets-operator/{owner}"}, "its shard's holder"
    metrics = kube.eventually(lambda: served_once(admin, replicas), timeout=30, what="each object served once")
    assert sorted(m["managed_secrets_is_leader"] for m in metrics.values()) == [0.0, 0.0, 1.0]
    assert all(m["managed_secrets_replicas"] == 3 for m in metrics.values())
    print(f"\nobjects written per replica (audit log): {dict(per_replica)}")
    print(
        "objects served per replica (metrics): "
        + str({i: m["managed_secrets_objects"] for i, m in metrics.items()})
    )


def served_once(admin: client.ApiClient, replicas: Replicas) -> dict[str, dict[str, float]] | None:
    """Each replica's metrics, when together they serve as many objects as the cluster holds (the replicas
    serve every namespace: objects other tests left behind count too)."""
    items = client.CustomObjectsApi(admin).list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL)["items"]
    total = sum(1 for i in items if not i["metadata"].get("deletionTimestamp"))
    metrics = {i: replicas.metrics(i) for i in replicas.running}
    served = sum(m["managed_secrets_objects"] for m in metrics.values())
    return metrics if served == total and all(m["managed_secrets_objects"] > 0 for m in metrics.values()) else None


def external_steps(endpoint: Endpoint, step_seconds: float) -> None:
    made = iter(range(1, 10_000))

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            reply = value_reply({"password": f"pw-{next(made)}".encode()})
            reply.delay = 0 if call.document.get("current") is None else step_seconds
            return reply
        return Reply(delay=step_seconds)

    endpoint.responder = responder


def calls_by_key(endpoint: Endpoint, since: int) -> Counter[str]:
    return Counter(c.headers.get("Idempotency-Key", "") for c in endpoint.calls[since:])


def owner_of(replicas: Replicas, admin: client.ApiClient, namespace: str, name: str) -> str:
    body = client.CustomObjectsApi(admin).get_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, PLURAL, name
    )
    shard = int(body["metadata"]["labels"][SHARD_LABEL])
    return next(i for i, held in replicas.leases().items() if shard in held)


def rotated_events(admin: client.ApiClient, namespace: str) -> Counter[str]:
    events = client.CoreV1Api(admin).list_namespaced_event(namespace).items
    return Counter(e.involved_object.name for e in events if e.reason == "Rotated")


def test_sigkill_during_rotations_is_taken_over_and_nothing_is_done_twice(
    admin: client.ApiClient, replicas: Replicas, served: str, webhook: tuple[Endpoint, str]
) -> None:
    endpoint, ca = webhook
    external_steps(endpoint, step_seconds=1.0)
    namespace = kube.create_namespace(admin, "replica-kill")
    custom = client.CustomObjectsApi(admin)
    names = [f"ext-{i:02d}" for i in range(12)]
    for name in names:
        body = managed_secret(
            name, type="External", external={"url": endpoint.url, "caBundle": ca, "timeoutSeconds": 10}
        )
        custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body)
    kube.eventually(lambda: ready_count(admin, namespace) == len(names), timeout=120, what="the External objects")
    owners = {name: owner_of(replicas, admin, namespace, name) for name in names}
    victim = Counter(owners.values()).most_common(1)[0][0]
    victims_objects = [n for n, o in owners.items() if o == victim]
    since = len(endpoint.calls)
    for name in names:
        annotate(admin, namespace, name, {ROTATE_ANNOTATION: "r1"})
    # Kill the victim while its rotations are past create, in a step that reaches the endpoint.
    kube.eventually(
        lambda: sum(1 for c in endpoint.calls[since:] if c.document["step"] in ("set", "test")) >= 3,
        timeout=60,
        interval=0.05,
        what="rotations to be in flight",
    )
    held = replicas.leases()[victim]
    killed = time.monotonic()
    replicas.stop(victim, signal.SIGKILL)
    survivors = set(replicas.running)

    def taken_over() -> bool:
        leases = replicas.leases()
        return held <= set().union(*(leases.get(s, frozenset()) for s in survivors))

    kube.eventually(taken_over, timeout=60, interval=0.1, what="the killed replica's shards to be taken over")
    takeover = time.monotonic() - killed
    print(
        f"\nSIGKILL of {victim} (served {len(victims_objects)} of {len(names)}): "
        f"shards taken over in {takeover:.1f}s"
    )
    assert takeover <= FAILOVER_BOUND

    def all_rotated() -> bool:
        items = custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)["items"]
        return all(
            (i.get("status") or {}).get("currentVersion") == "v2" and not (i.get("status") or {}).get("rotation")
            for i in items
        )

    kube.eventually(all_rotated, timeout=120, interval=0.5, what="every requested rotation to finish")
    done = time.monotonic() - killed
    print(f"every rotation finished {done:.1f}s after the kill")
    keys = calls_by_key(endpoint, since)
    per_secret: dict[str, Counter[str]] = defaultdict(Counter)
    for key, count in keys.items():
        secret_id, version, step = key.rsplit("/", 2)
        per_secret[secret_id][f"{version}/{step}"] = count
    assert len(per_secret) == len(names)
    doubled_total = 0
    for secret_id, steps in per_secret.items():
        creates = [k for k in steps if k.endswith("/create")]
        assert len(creates) == 1, f"{secret_id}: one version id for the rotation, {steps}"
        doubled = [k for k, n in steps.items() if n > 1]
        assert len(doubled) <= 1 and all(steps[k] == 2 for k in doubled), f"{secret_id}: {steps}"
        doubled_total += len(doubled)
    assert doubled_total <= len(victims_objects), "only the killed replica's step in flight is called again"
    print(f"(versionId, step) pairs called twice: {doubled_total} (the killed replica had {len(victims_objects)})")
    victims_ids = {f"{namespace}/{n}" for n in victims_objects}
    assert all(
        max(steps.values()) == 1 for secret_id, steps in per_secret.items() if secret_id not in victims_ids
    ), "the survivors' own rotations called nothing twice"
    events = rotated_events(admin, namespace)
    assert all(events[name] == 1 for name in names), f"one Rotated Event per version: {events}"
    # The replicas go on with three: a new one takes the place of the killed one.
    replicas.start("replica-3")
    kube.eventually(lambda: replicas.settled(set(replicas.running)), timeout=60, what="three replicas again")
    kube.delete_namespace(admin, namespace)


def test_rolling_restart_leaves_no_shard_without_owner_and_writes_nothing(
    admin: client.ApiClient, replicas: Replicas, served: str, operator: OperatorEnvironment, audit_log: Path
) -> None:
    assert ready_count(admin, served) == OBJECTS
    time.sleep(2)  # the last status writes of the previous test's replicas have landed
    offset = audit_log.stat().st_size
    unowned_since: dict[object, float] = {}
    gaps: list[tuple[float, object, str]] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            last = stop.wait(0.2)
            try:
                leases = replicas.leases()
            except Exception:  # noqa: S112 - a failed sample is just skipped
                continue
            held = set().union(*leases.values()) if leases else set()
            now = time.monotonic()
            for shard in EVERY:
                if shard in held:
                    if shard in unowned_since:
                        owner = next(i for i, s in leases.items() if shard in s)
                        gaps.append(
                            (now - unowned_since.pop(shard), shard, f"{time.strftime('%H:%M:%S')} {owner}")
                        )
                else:
                    unowned_since.setdefault(shard, now)
            if last:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for n, identity in enumerate(sorted(replicas.running)):
        replicas.stop(identity)  # SIGTERM, as a rolling update does
        replicas.start(f"rolled-{n}")
        kube.eventually(lambda: replicas.settled(set(replicas.running)), timeout=60, what="the shards settled")
    stop.set()
    sampler.join()
    longest = max(gaps, key=lambda g: g[0], default=(0.0, None, ""))
    print(
        f"\nrolling restart of 3 replicas with {OBJECTS} objects: longest a shard had no owner {longest[0]:.1f}s"
    )
    print(
        "  the longest gaps (seconds, shard, when it was taken and by whom):",
        sorted(gaps, key=lambda g: g[0])[-5:],
    )
    assert not unowned_since and longest[0] <= FAILOVER_BOUND
    assert ready_count(admin, served) == OBJECTS
    time.sleep(3)
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    writes = audit_writes(audit_log, offset, user, served, operator.namespace)
    assert writes == {}, f"the handover wrote about {len(writes)} objects: {sorted(writes)[:10]}"
    assert kube.eventually(lambda: served_once(admin, replicas), timeout=30, what="each object served once")


def test_a_partitioned_replica_stops_acting_before_its_shards_are_taken_over(
    admin: client.ApiClient, replicas: Replicas, served: str, operator: OperatorEnvironment, tmp_path: Path
) -> None:
    server = urlparse(admin.configuration.host)
    proxy = Proxy(server.hostname or "127.0.0.1", server.port or 443)
    try:
        config = json.loads(operator.kubeconfig.read_text())
        token = config["users"][0]["user"]["token"]
        proxied = write_token_kubeconfig(admin, token, tmp_path / "proxied.kubeconfig")
        config = json.loads(proxied.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        proxied.write_text(json.dumps(config))
        replicas.start("partitioned", kubeconfig=proxied)
        kube.eventually(lambda: replicas.settled(set(replicas.running)), timeout=60, what="four replicas settled")
        mine = replicas.leases()["partitioned"]
        assert replicas.metrics("partitioned")["managed_secrets_owned_shards"] > 0
        cut = time.monotonic()
        proxy.cut()
        stopped = taken = None
        others = set(replicas.running) - {"partitioned"}
        while time.monotonic() - cut < 60 and (stopped is None or taken is None):
            now = time.monotonic() - cut
            if stopped is None and replicas.metrics("partitioned")["managed_secrets_owned_shards"] == 0:
                stopped = now
            leases = replicas.leases()
            if taken is None and mine <= set().union(*(leases.get(o, frozenset()) for o in others)):
                taken = now
            time.sleep(0.1)
        print(f"\npartitioned replica: stopped acting after {stopped}s, its shards taken over after {taken}s")
        assert stopped is not None and taken is not None
        assert stopped < taken, "it stopped before another replica started on its shards"
        assert replicas.metrics("partitioned")["managed_secrets_is_leader"] == 0
        assert ready_count(admin, served) == OBJECTS
    finally:
        if "partitioned" in replicas.running:
            replicas.stop("partitioned", signal.SIGKILL)
        proxy.close()
