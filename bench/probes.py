"""What the cluster benchmark measures with: API calls without model overhead, a watch that timestamps
objects, the API server's audit log, the replicas' member Leases, and the operator's metrics and memory.

Kept apart from the steps in ``bench/cluster.py`` so each step reads as what it measures, not how.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

PAGE = 500
WATCH_SECONDS = 10  # server-side watch timeout: the watcher reconnects (from its resource version) this often
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

Object = dict[str, Any]


# --- API calls ---------------------------------------------------------------------------------------------


def make_client(kubeconfig: Path, pool_size: int) -> client.ApiClient:
    """A client for ``kubeconfig`` whose connection pool holds ``pool_size`` connections."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def send(call: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """Calls an API method and returns the raw response body (no model is built from it)."""
    resp = call(*args, _preload_content=False, **kwargs)
    try:
        return bytes(resp.read())
    finally:
        resp.release_conn()


def list_all(call: Callable[..., Any], **kwargs: Any) -> tuple[list[Object], str]:
    """Every item of a list call, in pages of ``PAGE``; and the resource version of the (consistent) list."""
    items: list[Object] = []
    token = None
    version = ""
    while True:
        page = json.loads(send(call, limit=PAGE, _continue=token, **kwargs))
        items.extend(page.get("items") or [])
        version = version or page["metadata"]["resourceVersion"]
        token = page["metadata"].get("continue")
        if not token:
            return items, version


def key_of(obj: Object) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


# --- watch -------------------------------------------------------------------------------------------------


def _always(_: Object) -> bool:
    return True


class FirstSeen:
    """A cluster-wide watch that records when each object (``namespace/name``) first satisfied ``match``.

    Times are ``time.monotonic()`` at the moment the event arrived. If the watch breaks (its resource version
    expired, or the connection dropped) it lists again, so nothing is missed; objects found that way are
    timed by the list.
    """

    def __init__(
        self,
        list_call: Callable[..., Any],
        *,
        label_selector: str | None = None,
        match: Callable[[Object], bool] = _always,
    ) -> None:
        self._list = list_call
        self._selector = label_selector
        self._match = match
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.restarts = 0

    def start(self, resource_version: str | None = None) -> None:
        """Lists (unless given the resource version to watch from) and watches from there in a thread."""
        version = resource_version or self._relist()
        self._thread = threading.Thread(target=self._run, args=(version,), name="bench-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]
        if self._thread is not None:
            self._thread.join(timeout=WATCH_SECONDS + 5)

    def count(self, keys: set[str]) -> int:
        with self._lock:
            return len(keys & self._seen.keys())

    def times(self, keys: Iterable[str]) -> list[float]:
        """When each of ``keys`` was first seen (only those seen so far)."""
        with self._lock:
            return [self._seen[k] for k in keys if k in self._seen]

    def _observe(self, obj: Object, at: float) -> None:
        if self._match(obj):
            with self._lock:
                self._seen.setdefault(key_of(obj), at)

    def _relist(self) -> str:
        items, version = list_all(self._list, label_selector=self._selector)
        now = time.monotonic()
        for obj in items:
            self._observe(obj, now)
        return version

    def _run(self, version: str | None) -> None:
        while not self._stopping.is_set():
            try:
                version = self._stream(version) if version else self._relist()
            except (ApiException, urllib3.exceptions.HTTPError, OSError):
                if self._stopping.is_set():
                    return
                self.restarts += 1
                version = None
                time.sleep(0.5)

    def _stream(self, version: str) -> str:
        self._watch = watch.Watch(return_type=object)  # type: ignore[no-untyped-call]
        for event in self._watch.stream(  # type: ignore[no-untyped-call]
            self._list,
            label_selector=self._selector,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 30,
        ):
            if not event:  # a line cut short when the stream ends
                continue
            obj = event["raw_object"]
            version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self._observe(obj, time.monotonic())
            if self._stopping.is_set():
                break
        return version


# --- audit log ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """One user's requests in a stretch of the audit log."""

    writes: Counter[str] = field(default_factory=Counter)  # "verb resource[/subresource]" -> requests
    gets: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # "409", "429", "5xx" -> responses

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())

    def writes_to(self, resource: str) -> int:
        """Writes of any verb to ``resource`` (e.g. ``leases``), subresources included."""
        return sum(n for what, n in self.writes.items() if what.split(" ", 1)[1].split("/")[0] == resource)


class AuditLog:
    """The API server's JSON-lines audit log; ``mark()`` positions delimit the stretches to count."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """The end of the last complete line: entries before it are in the log, none is cut in half."""
        with self.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            back = min(size, 1 << 16)
            f.seek(size - back)
            return size - back + f.read(back).rfind(b"\n") + 1

    def tally(self, user: str, start: int, end: int) -> Tally:
        """``user``'s completed requests logged between the marks ``start`` and ``end``."""
        result = Tally()
        needle = json.dumps(user).encode()
        with self.path.open("rb") as f:
            f.seek(start)
            chunk = f.read(end - start)
        for line in chunk.splitlines():
            if needle not in line:
                continue
            entry = json.loads(line)
            if entry.get("user", {}).get("username") != user or entry.get("stage") != "ResponseComplete":
                continue
            _count(result, entry)
        return result

    def writers(
        self, user: str, spans: Iterable[tuple[int, int]], key: Callable[[Object], str | None]
    ) -> dict[str, set[str]]:
        """For each object ``key`` maps a write's objectRef to (None: not counted), the User-Agents of
        ``user``'s writes to it in the stretches ``spans`` (pairs of marks), failed writes included."""
        found: dict[str, set[str]] = {}
        needle = json.dumps(user).encode()
        with self.path.open("rb") as f:
            for start, end in spans:
                f.seek(start)
                for line in f.read(end - start).splitlines():
                    if needle not in line:
                        continue
                    entry = json.loads(line)
                    if (
                        entry.get("user", {}).get("username") != user
                        or entry.get("stage") != "ResponseComplete"
                        or entry.get("verb") not in WRITE_VERBS
                    ):
                        continue
                    k = key(entry.get("objectRef") or {})
                    if k is not None:
                        found.setdefault(k, set()).add(str(entry.get("userAgent", "")))
        return found


def _count(result: Tally, entry: Object) -> None:
    verb = entry.get("verb")
    if verb in WRITE_VERBS:
        ref = entry.get("objectRef", {})
        resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
        result.writes[f"{verb} {resource}"] += 1
    elif verb == "get":
        result.gets += 1
    code = int(entry.get("responseStatus", {}).get("code", 0))
    if code in (409, 429):
        result.errors[str(code)] += 1
    elif code >= 500:
        result.errors["5xx"] += 1


# --- the operator process ----------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Gauges:
    objects: float  # managed_secrets_objects: ManagedSecrets the process serves
    pending: float  # managed_secrets_pending_work: reconciles queued or running
    shards: float = 0  # managed_secrets_owned_shards: shards this replica serves
    leader: float = 0  # managed_secrets_is_leader
    replicas: float = 0  # managed_secrets_replicas: live replicas this replica sees

    def __str__(self) -> str:
        lead = ", leader" if self.leader else ""
        return (
            f"objects {self.objects:g}, pending {self.pending:g}, shards {self.shards:g}{lead}, "
            f"sees {self.replicas:g} replicas"
        )


def read_gauges(port: int) -> Gauges | None:
    """The operator's gauges from its /metrics, or None while it does not answer (or lacks the first two)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = {f.name: f.samples[0].value for f in text_string_to_metric_families(text) if f.samples}
    if "managed_secrets_objects" not in values or "managed_secrets_pending_work" not in values:
        return None
    return Gauges(
        values["managed_secrets_objects"],
        values["managed_secrets_pending_work"],
        values.get("managed_secrets_owned_shards", 0),
        values.get("managed_secrets_is_leader", 0),
        values.get("managed_secrets_replicas", 0),
    )


def read_leases(call: Callable[..., Any], namespace: str, label_selector: str, annotation: str) -> dict[str, str]:
    """Each Lease's holder (its name if it has none) and the value of ``annotation`` on it ("" if absent);
    ``call`` is ``CoordinationV1Api.list_namespaced_lease``."""
    items = json.loads(send(call, namespace, label_selector=label_selector)).get("items") or []
    return {
        (item.get("spec") or {}).get("holderIdentity") or item["metadata"]["name"]: (
            (item["metadata"].get("annotations") or {}).get(annotation, "")
        )
        for item in items
    }


# --- the key service ---------------------------------------------------------------------------------------

KmsCalls = Counter[tuple[str, str]]  # (operation, result) -> calls; operation status/encrypt/decrypt


def read_kms_requests(port: int) -> KmsCalls | None:
    """The operator's ``managed_secrets_kms_requests_total`` by operation and result (empty without a key
    service), or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return kms_requests(text)


def kms_requests(text: str) -> KmsCalls:
    """``managed_secrets_kms_requests_total`` in a /metrics page, by operation and result."""
    calls: KmsCalls = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "managed_secrets_kms_requests":
            continue
        for sample in family.samples:
            if sample.name == "managed_secrets_kms_requests_total":
                calls[sample.labels["operation"], sample.labels["result"]] += int(sample.value)
    return calls


def read_plugin_stats(path: Path) -> KmsCalls:
    """The KMS v2 plugin's call counts (its ``--stats-file``: method -> result -> calls), keyed like the
    operator's metric: ("status" | "encrypt" | "decrypt", "ok" | "error" | "unhealthy")."""
    try:
        counts = json.loads(path.read_text())
    except FileNotFoundError:
        return Counter()
    return Counter(
        {(method.lower(), result): int(n) for method, results in counts.items() for result, n in results.items()}
    )
