"""One scheduler thread that sleeps until the earliest due time, instead of a timer polling every object."""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from managed_secrets.domain.clock import Clock

log = logging.getLogger(__name__)

Key = tuple[str, str]


class Scheduler:
    """Calls ``callback(namespace, name)`` at (or soon after) the time last scheduled for that object."""

    MIN_GAP = dt.timedelta(seconds=2)
    """No object is run twice within this gap, whatever it asks for: a reconcile that keeps asking to run
    again at once (a bug, or a state it cannot leave) costs one run every two seconds, not a busy loop."""

    def __init__(self, callback: Callable[[str, str], object], clock: Clock, workers: int = 2) -> None:
        self._callback = callback
        self._clock = clock
        self._due: dict[Key, dt.datetime] = {}
        self._last_run: dict[Key, dt.datetime] = {}
        self._heap: list[tuple[dt.datetime, Key]] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rotation")
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def schedule(self, namespace: str, name: str, when: dt.datetime | None) -> None:
        """Wake for this object at ``when`` (replacing an earlier time); ``None`` forgets it."""
        key = (namespace, name)
        with self._cond:
            if when is None:
                self._due.pop(key, None)
                self._last_run.pop(key, None)
                return
            last = self._last_run.get(key)
            if last is not None and when < last + self.MIN_GAP:
                when = last + self.MIN_GAP
            if self._due.get(key) == when:
                return
            self._due[key] = when
            heapq.heappush(self._heap, (when, key))
            self._cond.notify_all()

    def due_time(self, namespace: str, name: str) -> dt.datetime | None:
        with self._cond:
            return self._due.get((namespace, name))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    # Drop heap entries that were replaced or forgotten.
                    while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    when, key = self._heap[0]
                    wait = (when - self._clock.now()).total_seconds()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        del self._due[key]
                        self._last_run[key] = self._clock.now()
                        break
                    self._cond.wait(timeout=min(wait, 60.0))
                if self._stopped:
                    return
            self._pool.submit(self._run, key)

    def _run(self, key: Key) -> None:
        try:
            self._callback(*key)
        except Exception as e:  # the callback reports its own failures; keep the scheduler alive
            log.warning("scheduled reconcile of %s/%s failed: %s", key[0], key[1], type(e).__name__)
