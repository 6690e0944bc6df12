"""Bounded worker pools, one per kind of work, so slow work of some ManagedSecrets cannot starve the rest.

A reconcile that may call an outside system (a database, a webhook, the SSH hosts of ``sshKey.hosts``) runs
on the ``external`` pool; every other one (generated values, ``valueFrom``, SSH keys without hosts: only the
API server and the CPU) runs on the ``local`` pool. Each outside call has its own deadline as well; the pools
make sure that eight hung webhooks occupy at most the external pool's threads, while new ordinary
ManagedSecrets keep being projected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from managed_secrets.rotation.strategies import strategy_for

__all__ = ["WorkPools", "reaches_outside"]

T = TypeVar("T")


def reaches_outside(spec: Mapping[str, Any]) -> bool:
    """True for a spec whose strategy's steps talk to systems outside the cluster (``is_local`` says no)."""
    found = strategy_for(spec)
    return found is not None and not found[0].is_local(found[1])


class WorkPools:
    def __init__(self, local_workers: int = 8, external_workers: int = 4) -> None:
        self.local = ThreadPoolExecutor(max_workers=local_workers, thread_name_prefix="reconcile")
        self.external = ThreadPoolExecutor(max_workers=external_workers, thread_name_prefix="external")
        self._pending = 0
        self._guard = threading.Lock()

    @property
    def pending(self) -> int:
        """Calls submitted and not yet finished, on both pools."""
        return self._pending

    def _done(self, _future: Future[Any]) -> None:
        with self._guard:
            self._pending -= 1

    def for_spec(self, spec: Mapping[str, Any]) -> ThreadPoolExecutor:
        return self.external if reaches_outside(spec) else self.local

    def submit(self, spec: Mapping[str, Any], call: Callable[..., T], *args: Any) -> Future[T]:
        with self._guard:
            self._pending += 1
        future = self.for_spec(spec).submit(call, *args)
        future.add_done_callback(self._done)
        return future

    def shutdown(self) -> None:
        for pool in (self.local, self.external):
            pool.shutdown(wait=False, cancel_futures=True)
