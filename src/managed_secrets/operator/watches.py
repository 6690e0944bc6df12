"""The operator's Secret watches, each filtered by the API server:

- projected Secrets (label ``managedsecrets.io/managed=true``): an edit or a deletion is reverted;
- value sources (label ``managedsecrets.io/source=true``, set by the user on a ``valueFrom`` Secret): a change
  makes a new version at once;
- the store records (label ``managedsecrets.io/store=true``, operator namespace): only their revisions, so a
  restart can resume an object from its status without reading its record;
- the keyring Secret (by name, operator namespace): a ``rotate-kek`` request.

Together they are the ``Revisions`` the service resumes objects from. No other Secret reaches the operator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from managed_secrets.cluster.watch import ObjectWatch, SecretChange, SecretWatch
from managed_secrets.errors import safe_message
from managed_secrets.names import (
    API_GROUP,
    API_VERSION,
    MANAGED_LABEL,
    OWNER_ANNOTATION,
    PLURAL,
    SHARD_LABEL,
    SOURCE_ANNOTATION,
    SOURCE_LABEL,
    STORE_LABEL,
)
from managed_secrets.operator.config import OperatorConfig
from managed_secrets.service import ManagedSecretService
from managed_secrets.service.dispatch import Dispatcher
from managed_secrets.service.keys import KeyManager
from managed_secrets.service.sharding import Shard
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import store_secret_name

__all__ = ["ManagedSecretWatches", "SecretWatches"]

log = logging.getLogger(__name__)


class SecretWatches:
    def __init__(
        self,
        api: client.ApiClient,
        cfg: OperatorConfig,
        service: ManagedSecretService,
        keys: KeyManager | None,
        *,
        leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self._service = service
        self._keys = keys
        self._leader = leader
        self._namespace = cfg.namespace
        scopes: tuple[str | None, ...] = cfg.watch_namespaces or (None,)
        timeout = cfg.watch_timeout_seconds

        def where(ns: str | None) -> str:
            return f" in {ns}" if ns else ""

        self._store = SecretWatch(
            api,
            "store",
            namespace=cfg.namespace,
            label_selector=f"{STORE_LABEL}=true",
            on_change=self._store_changed,
            timeout_seconds=timeout,
        )

        def per_scope(name: str, label: str, on_change: Callable[[SecretChange], None]) -> list[SecretWatch]:
            return [
                SecretWatch(
                    api,
                    name + where(ns),
                    namespace=ns,
                    label_selector=f"{label}=true",
                    on_change=on_change,
                    timeout_seconds=timeout,
                )
                for ns in scopes
            ]

        self._projected = per_scope("projected", MANAGED_LABEL, self._projected_changed)
        self._sources = per_scope("sources", SOURCE_LABEL, self._source_changed)
        self._all = [self._store, *self._projected, *self._sources]
        if keys is not None:
            self._all.append(
                SecretWatch(
                    api,
                    "keyring",
                    namespace=cfg.namespace,
                    field_selector=f"metadata.name={cfg.keyring_secret}",
                    on_change=self._keyring_changed,
                    timeout_seconds=timeout,
                    report_listed=True,  # a request made while the operator was down
                )
            )

    def __len__(self) -> int:
        return len(self._all)

    def start(self, wait_seconds: float) -> None:
        """Starts every watch and waits (at most ``wait_seconds``) for their first listings."""
        for watch in self._all:
            watch.start()
        deadline = time.monotonic() + wait_seconds
        for watch in self._all:
            if not watch.synced.wait(max(0.0, deadline - time.monotonic())):
                log.warning("watch %s has not listed yet; objects are resumed with a full reconcile", watch.name)
                return
        log.info(
            "Secret watches listed %d projected Secrets, %d value sources, %d store records",
            sum(len(w) for w in self._projected),
            sum(len(w) for w in self._sources),
            len(self._store),
        )

    def stop(self) -> None:
        for watch in self._all:
            watch.stop()

    # --- Revisions -----------------------------------------------------------------------------------------

    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self._all)

    def store(self, key: RecordKey) -> str | None:
        return self._store.revision(self._namespace, store_secret_name(key))

    def projected(self, namespace: str, name: str) -> str | None:
        return _first(self._projected, namespace, name)

    def source(self, namespace: str, name: str) -> str | None:
        return _first(self._sources, namespace, name)

    # --- changes -------------------------------------------------------------------------------------------

    def _projected_changed(self, change: SecretChange) -> None:
        log.debug("projected Secret %s/%s changed", change.namespace, change.name)
        owner = change.annotations.get(OWNER_ANNOTATION)
        if change.resource_version is None and owner is None:
            # A deletion event carries the last state; without its annotation the owner is the name's.
            owner = f"{change.namespace}/{change.name}"
        self._service.secret_changed(change.namespace, change.name, change.resource_version, owner)

    def _source_changed(self, change: SecretChange) -> None:
        log.debug("source Secret %s/%s changed", change.namespace, change.name)
        self._service.secret_changed(change.namespace, change.name, change.resource_version, None)

    def _store_changed(self, change: SecretChange) -> None:
        namespace, _sep, name = change.annotations.get(SOURCE_ANNOTATION, "").partition("/")
        if change.resource_version is None and namespace and name:
            self._service.record_deleted(namespace, name)

    def _keyring_changed(self, change: SecretChange) -> None:
        if self._keys is None or change.resource_version is None:
            return
        try:
            if self._leader():
                self._keys.handle_request(dict(change.annotations))
            else:
                self._keys.sync()  # another replica rotated it: take its new keys and primary
        except Exception as e:
            log.warning("key-encryption key rotation failed: %s", safe_message(e))


def _first(watches: list[SecretWatch], namespace: str, name: str) -> str | None:
    for watch in watches:
        found = watch.revision(namespace, name)
        if found is not None:
            return found
    return None


class ManagedSecretWatches:
    """The ManagedSecret watches of this replica, per scope (every namespace, or each watched one):

    - its share: label ``managedsecrets.io/shard in (...)`` for the shards it serves;
    - new objects: ``managedsecrets.io/shard notin (0..n-1)``, i.e. not labelled yet; every replica sees these
      few, and the one whose shard the name hashes to labels it (with the finalizer) and serves it.

    When the shards change, both are replaced by watches that list afresh (what left the share is forgotten by
    the service's ``release``; an object created while its shard was moving is in the new listing of
    unlabelled ones). A replaced watch is stopped without waiting for its stream and reports nothing more.
    Objects go through the ``Dispatcher`` (one pending entry per object, the listing throttled to the workers).
    """

    def __init__(
        self, api: client.ApiClient, cfg: OperatorConfig, dispatcher: Dispatcher, initial: frozenset[Shard]
    ) -> None:
        self._api = api
        self._scopes: tuple[str | None, ...] = cfg.watch_namespaces or (None,)
        self._every = ",".join(str(s) for s in range(cfg.shards))
        self._timeout = cfg.watch_timeout_seconds
        self._dispatcher = dispatcher
        self._lock = threading.Lock()
        self._started = False
        self._selector = _selector(initial)
        self._watches = self._build(self._selector)

    def _build(self, selector: str | None) -> list[ObjectWatch]:
        def unlabelled(kind: str | None, body: Mapping[str, Any]) -> None:
            # An object leaves this watch when it gets its shard label: the watch reports that as DELETED, but
            # the object lives on in its owner's share watch (a real deletion is seen there too).
            if kind != "DELETED":
                self._dispatcher.offer(kind, body)

        def watch(name: str, ns: str | None, label_selector: str, on_event: Any) -> ObjectWatch:
            return ObjectWatch(
                self._api,
                name + (f" in {ns}" if ns else ""),
                group=API_GROUP,
                version=API_VERSION,
                plural=PLURAL,
                on_event=on_event,
                namespace=ns,
                label_selector=label_selector,
                timeout_seconds=self._timeout,
            )

        watches = [
            watch("new managedsecrets", ns, f"{SHARD_LABEL} notin ({self._every})", unlabelled)
            for ns in self._scopes
        ]
        if selector is not None:
            watches += [watch("managedsecrets", ns, selector, self._dispatcher.offer) for ns in self._scopes]
        return watches

    def start(self) -> None:
        with self._lock:
            self._started = True
            for w in self._watches:
                w.start()

    def stop(self) -> None:
        self._dispatcher.stop()
        with self._lock:
            self._started = False
            for w in self._watches:
                w.stop()

    def follow(self, active: frozenset[Shard]) -> None:
        """The shards this replica serves changed: watches for the new share list it afresh."""
        selector = _selector(active)
        with self._lock:
            if selector == self._selector:
                return
            self._selector = selector
            old, self._watches = self._watches, self._build(selector)
            if self._started:
                for w in self._watches:
                    w.start()
        for w in old:
            w.stop()


def _selector(active: frozenset[Shard]) -> str | None:
    numbers = sorted(s for s in active if isinstance(s, int))
    return f"{SHARD_LABEL} in ({','.join(str(n) for n in numbers)})" if numbers else None
