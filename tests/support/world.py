"""An in-memory world for the reconcile service: store, cluster, keyring and a manual clock.

``World`` drives the real ``ManagedSecretService`` exactly as the Kopf handlers do (the body as the API
server holds it), with nothing but dicts behind it, so each test runs in milliseconds.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from managed_secrets.cluster import LiveSecret, SecretObject
from managed_secrets.cluster.memory import InMemoryCluster, Write
from managed_secrets.crypto import LocalKeyring
from managed_secrets.crypto.provider import OpeningKeyProvider
from managed_secrets.domain import SecretRecord
from managed_secrets.domain.clock import ManualClock
from managed_secrets.errors import RecordNotFound
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.names import API_GROUP, API_VERSION, KIND, MANAGED_LABEL, SOURCE_LABEL
from managed_secrets.rotation.engine import Backoff
from managed_secrets.service import ManagedSecretService, Outcome
from managed_secrets.store import InMemoryStore, RecordKey, SecretVault, StoredRecord

NAMESPACE = "app"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class CountingStore(InMemoryStore):
    """An InMemoryStore that counts the calls made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.writes = 0

    def read(self, key: RecordKey) -> StoredRecord:
        self.reads += 1
        return super().read(key)

    def write(self, key: RecordKey, document: bytes, **kwargs: Any) -> StoredRecord:
        self.writes += 1
        return super().write(key, document, **kwargs)


def managed_secret(name: str, namespace: str = NAMESPACE, **spec: Any) -> dict[str, Any]:
    """A ManagedSecret body; defaults to one generated password."""
    if not any(k in spec for k in ("generate", "valueFrom", "database", "sshKey", "external")):
        spec["generate"] = {"keys": [{"name": "password"}]}
    annotations = spec.pop("annotations", None) or {}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }


class World:
    def __init__(
        self,
        *,
        store: CountingStore | None = None,
        keyring: LocalKeyring | None = None,
        cluster: InMemoryCluster | None = None,
        clock: ManualClock | None = None,
        provider: OpeningKeyProvider | None = None,
    ) -> None:
        self.clock = clock or ManualClock(START)
        self.store = store or CountingStore()
        self.cluster = cluster or InMemoryCluster()
        self.keyring = keyring or LocalKeyring.generate()
        if provider is not None:
            # A keyring still being opened (its key service is away): the start-up wiring's stand-in.
            self.vault = SecretVault(self.store, provider, lambda: provider.hash_key, self.clock)
        else:
            self.vault = SecretVault(self.store, self.keyring, self.keyring.hash_key, self.clock)
        self.metrics = OperatorMetrics(runtime_collectors=False)
        self.service = ManagedSecretService(
            self.cluster, self.vault, backoff=Backoff(base_seconds=30, max_seconds=3600), metrics=self.metrics
        )

    def watch_revisions(self) -> WatchRevisions:
        """What the operator's Secret watches would list now, wired into the service."""
        revisions = WatchRevisions(self)
        self.service.revisions = revisions
        return revisions

    def restarted(self) -> World:
        """A new operator process over the same store, keyring and cluster (nothing kept in memory)."""
        return World(store=self.store, keyring=self.keyring, cluster=self.cluster, clock=self.clock)

    # --- the user's side -------------------------------------------------------------------------------

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.cluster.put_managed_secret(body)

    def edit(self, name: str, *, annotations: Mapping[str, str | None] | None = None, **spec: Any) -> None:
        body = self.ms(name)
        body.pop("status", None)
        for k, v in (annotations or {}).items():
            if v is None:
                body["metadata"].setdefault("annotations", {}).pop(k, None)
            else:
                body["metadata"].setdefault("annotations", {})[k] = v
        body["spec"].update(spec)
        self.apply(body)

    def delete(self, name: str) -> None:
        self.service.delete(self.ms(name))
        self.service.forget(NAMESPACE, name)
        self.cluster.remove_managed_secret(NAMESPACE, name)

    def put_secret(self, name: str, data: Mapping[str, bytes], **fields: Any) -> LiveSecret:
        return self.cluster.put_secret(SecretObject(namespace=NAMESPACE, name=name, data=dict(data), **fields))

    # --- the operator's side ---------------------------------------------------------------------------

    def reconcile(self, name: str) -> Outcome:
        """One handler run on the object as the API server holds it now."""
        return self.service.reconcile(self.ms(name))

    def event(self, name: str, event_type: str | None = "MODIFIED") -> None:
        """The Kopf event handler's call: the object as the watch brings it (``None``: the start-up listing)."""
        self.service.observe(event_type, self.ms(name))

    def drain(self, timeout: float = 10.0) -> None:
        """Waits until the service's pools have nothing queued or running."""
        deadline = time.monotonic() + timeout
        while self.service.pools.pending:
            assert time.monotonic() < deadline, "the pools did not drain"
            time.sleep(0.005)

    def settle(self, name: str, times: int = 3) -> Outcome:
        """Reconciles until nothing is written (the watch would bring the object back after each write)."""
        outcome = self.reconcile(name)
        for _ in range(times):
            before = len(self.cluster.writes), self.store.writes
            outcome = self.reconcile(name)
            if (len(self.cluster.writes), self.store.writes) == before:
                return outcome
        raise AssertionError(f"{name} kept writing after {times} reconciles")

    # --- looking at it ---------------------------------------------------------------------------------

    def ms(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.cluster.managed_secrets[(NAMESPACE, name)])

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.ms(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == type_), {})

    def secret(self, name: str) -> LiveSecret | None:
        return self.cluster.secrets.get((NAMESPACE, name))

    def record(self, name: str) -> SecretRecord:
        loaded = self.vault.load(RecordKey(NAMESPACE, name))
        assert loaded is not None, f"no stored record for {name}"
        return loaded.record

    def attributes(self, name: str) -> Mapping[str, str]:
        loaded = self.vault.load(RecordKey(NAMESPACE, name))
        assert loaded is not None
        return loaded.attributes

    def value(self, name: str, version: str | None = None) -> dict[str, bytes]:
        record = self.record(name)
        chosen = record.version(version) if version else record.current
        assert chosen is not None
        return self.vault.open(record, chosen).as_dict()

    def mark(self) -> tuple[int, int, int]:
        return len(self.cluster.writes), self.store.writes, len(self.cluster.events)

    def writes_since(self, mark: tuple[int, int, int]) -> tuple[list[Write], int, list[str]]:
        """Cluster writes, store writes and Event reasons since ``mark``."""
        return (
            self.cluster.writes[mark[0] :],
            self.store.writes - mark[1],
            [e.reason for e in self.cluster.events[mark[2] :]],
        )

    def events(self, type_: str | None = None) -> list[str]:
        return [e.reason for e in self.cluster.events if type_ is None or e.type == type_]


class WatchRevisions:
    """``Revisions`` as the operator's filtered Secret watches would list them in ``world``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.is_synced = True

    def synced(self) -> bool:
        return self.is_synced

    def store(self, key: RecordKey) -> str | None:
        try:
            return InMemoryStore.read(self.world.store, key).revision  # not counted as the operator's read
        except RecordNotFound:
            return None

    def projected(self, namespace: str, name: str) -> str | None:
        live = self.world.cluster.secrets.get((namespace, name))
        return live.resource_version if live is not None and live.labels.get(MANAGED_LABEL) == "true" else None

    def source(self, namespace: str, name: str) -> str | None:
        live = self.world.cluster.secrets.get((namespace, name))
        return live.resource_version if live is not None and live.labels.get(SOURCE_LABEL) == "true" else None
