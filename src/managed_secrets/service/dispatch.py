"""From the ManagedSecret watches to the worker pools: one pending entry per object, and a bound on them.

A watch thread offers every object it lists or hears of. If that object already waits for a worker, the newer
body replaces the older one (a burst of events costs one reconcile, of the latest state); if a worker is handling
it now, that worker takes the newer body when it is done (one worker per object at a time: an object whose
webhook hangs holds one thread, not one per event); otherwise it waits for a worker, and the watch thread
blocks while ``limit`` objects wait. That blocking is the back-pressure: a
listing of 10,000 objects is taken one page at a time as the workers get through it, instead of being held in
memory all at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from managed_secrets.service.pools import WorkPools

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

Key = tuple[str, str]
Handler = Callable[[str | None, Mapping[str, Any]], None]


class Dispatcher:
    def __init__(self, pools: WorkPools, handle: Handler, limit: int) -> None:
        self._pools = pools
        self._handle = handle
        self._limit = max(1, limit)
        self._pending: dict[Key, tuple[str | None, Mapping[str, Any]]] = {}
        self._running: set[Key] = set()
        self._cond = threading.Condition()
        self._stopped = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def offer(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._cond:
            if key in self._pending or key in self._running:
                # The latest event and body stand for both (the body is the object as it is now); a worker
                # that handles this object now takes it next.
                self._pending[key] = (event_type, body)
                return
            while len(self._pending) >= self._limit and not self._stopped:
                self._cond.wait(timeout=1.0)
            if self._stopped:
                return
            self._pending[key] = (event_type, body)
        self._pools.submit(body.get("spec") or {}, self._run, key)

    def _run(self, key: Key) -> None:
        while True:
            with self._cond:
                entry = self._pending.pop(key, None)
                if entry is None:
                    self._running.discard(key)
                    return
                self._running.add(key)
                self._cond.notify_all()
            try:
                self._handle(*entry)
            except Exception as e:  # the handler reports its own failures; this worker goes on
                log.warning("handling %s/%s failed: %s", key[0], key[1], type(e).__name__)
