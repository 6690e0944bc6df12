"""Server-side filtered Secret watches that keep a name -> resourceVersion map and nothing else.

The API server filters by label or field selector, so a Secret the operator has nothing to do with (a Helm
release, a token, a TLS pair) is never sent to it; of those that are, only the name, the resourceVersion and
the few annotations a callback asks for are looked at, and only the name and resourceVersion are kept.

Each ``SecretWatch`` is a thread: a paged list (``limit``/``continue``), then a watch from the list's
resourceVersion with bookmarks, reconnecting when the server ends the stream and listing again when the
resourceVersion is too old (410 Gone). Failures are retried with exponential backoff and jitter. Responses are
read as raw JSON: the client's model classes are never built for the Secrets that stream by.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["ObjectWatch", "SecretChange", "SecretWatch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecretChange:
    """A Secret that changed after the initial listing; ``resource_version`` is ``None`` when it was deleted."""

    namespace: str
    name: str
    resource_version: str | None
    annotations: Mapping[str, str]


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class SecretWatch:
    """Lists and watches the Secrets matching ``label_selector``/``field_selector`` (in ``namespace`` or all).

    ``on_change`` hears of every change after the first listing (and of the listed Secrets too with
    ``report_listed``)."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        *,
        on_change: Callable[[SecretChange], None] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        timeout_seconds: int = 300,
        report_listed: bool = False,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self.name = name
        self._on_change = on_change
        self._namespace = namespace
        self._selectors = {
            k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector)) if v
        }
        self._page_size = page_size
        self._report_listed = report_listed
        self._timeout = timeout_seconds
        self._revisions: dict[tuple[str, str], str] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    # --- what it knows -------------------------------------------------------------------------------------

    def revision(self, namespace: str, name: str) -> str | None:
        return self._revisions.get((namespace, name))

    def __len__(self) -> int:
        return len(self._revisions)

    # --- running -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()

    def _interrupt(self) -> None:
        """Ends the stream being read, without waiting: closing a response waits for the read another thread is
        blocked in, which can last until the next event or the server's timeout, so it is done off this thread
        (the watch thread stops at its next event or when the stream ends, and reports nothing more)."""
        response = self._response
        if response is not None:
            threading.Thread(target=_close, args=(response, self.name), daemon=True).start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                failures = 0
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Gone:
                log.info("watch %s: resourceVersion expired; listing again", self.name)
                failures = 0
                if self._stop.wait(0.5):
                    return
            except Exception as e:  # a connection reset, a 5xx, a token being rotated: back off and go on
                if self._stop.is_set():
                    return  # the stream was closed on purpose
                failures += 1
                delay = min(30.0, 0.5 * 2**failures) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter only
                log.warning("watch %s failed (retry in %.1fs): %s", self.name, delay, _describe(e))
                if self._stop.wait(delay):
                    return

    def _call(self, **kwargs: Any) -> Any:
        kwargs.update(self._selectors)
        if self._namespace:
            return self._core.list_namespaced_secret(self._namespace, _preload_content=False, **kwargs)
        return self._core.list_secret_for_all_namespaces(_preload_content=False, **kwargs)

    def _list(self) -> str:
        listed: dict[tuple[str, str], str] = {}
        cont: str | None = None
        version = ""
        relist = self.synced.is_set()
        while True:
            response = self._call(limit=self._page_size, _continue=cont, _request_timeout=(10, 60))
            page = json.loads(response.data)
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                key = (str(meta.get("namespace")), str(meta.get("name")))
                listed[key] = str(meta.get("resourceVersion"))
                if not relist:
                    self._seen("LISTED", key, listed[key], item)
                elif self._revisions.get(key) != listed[key]:
                    self._seen("MODIFIED" if key in self._revisions else "ADDED", key, listed[key], item)
            page_meta = page.get("metadata") or {}
            version = str(page_meta.get("resourceVersion") or version)
            cont = page_meta.get("continue")
            if not cont:
                break
        # A list after the watch fell behind: report what went away meanwhile.
        for key in [k for k in self._revisions if k not in listed]:
            self._seen("DELETED", key, None, {"metadata": {"namespace": key[0], "name": key[1]}})
        self._revisions = listed
        return version

    def _seen(self, kind: str, key: tuple[str, str], version: str | None, item: Mapping[str, Any]) -> None:
        """One object from a listing (kind ``LISTED`` on the first one) or a watch event."""
        if self._stop.is_set() or (kind == "LISTED" and not self._report_listed):
            return
        self._emit(key, version, (item.get("metadata") or {}).get("annotations") or {})

    def _watch(self, version: str) -> str:
        response = self._response = self._call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._timeout,
            _request_timeout=(10, self._timeout + 30),
        )
        try:
            for event in _events(response):
                kind = event.get("type")
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error HTTP {obj.get('code')} {obj.get('reason')}")
                version = str(meta.get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                key = (str(meta.get("namespace")), str(meta.get("name")))
                if kind == "DELETED":
                    self._revisions.pop(key, None)
                    self._seen("DELETED", key, None, obj)
                else:
                    self._revisions[key] = version
                    self._seen(str(kind), key, version, obj)
                if self._stop.is_set():
                    break
        finally:
            self._response = None
            response.release_conn()
        return version

    def _emit(self, key: tuple[str, str], version: str | None, annotations: Mapping[str, str]) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(SecretChange(key[0], key[1], version, dict(annotations)))
        except Exception as e:  # one failing callback never stops the watch
            log.warning("watch %s: handling %s/%s failed: %s", self.name, key[0], key[1], _describe(e))


def _close(response: Any, name: str) -> None:
    try:
        response.close()
    except Exception as e:  # the socket is going away anyway
        log.debug("watch %s: closing the stream: %s", name, _describe(e))


def _events(response: Any) -> Iterator[dict[str, Any]]:
    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
        if line:
            yield json.loads(line)


def _describe(error: Exception) -> str:
    # Never an exception's text from the client: it can quote a response body (Secret data).
    status = getattr(error, "status", None)
    return f"{type(error).__name__}" + (f" HTTP {status}" if status else "")


class ObjectWatch(SecretWatch):
    """The same list-then-watch loop for ManagedSecrets, handing each whole object to ``on_event(kind, body)``.

    ``kind`` is ``None`` for the objects of the first listing (as a start-up listing), ``ADDED``/``MODIFIED``/
    ``DELETED`` for watch events and for what a later listing found changed. ``on_event`` may
    block: that is the back-pressure that keeps a listing of many objects from being held in memory at once
    (only one page is).
    """

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        *,
        group: str,
        version: str,
        plural: str,
        on_event: Callable[[str | None, Mapping[str, Any]], None],
        namespace: str | None = None,
        label_selector: str | None = None,
        page_size: int = 500,
        timeout_seconds: int = 300,
    ) -> None:
        super().__init__(
            api,
            name,
            namespace=namespace,
            label_selector=label_selector,
            page_size=page_size,
            timeout_seconds=timeout_seconds,
        )
        self._custom = client.CustomObjectsApi(api)
        self._resource = (group, version, plural)
        self._on_event = on_event

    def _call(self, **kwargs: Any) -> Any:
        kwargs.update(self._selectors)
        if self._namespace:
            return self._custom.list_namespaced_custom_object(
                *self._resource[:2], self._namespace, self._resource[2], _preload_content=False, **kwargs
            )
        return self._custom.list_cluster_custom_object(*self._resource, _preload_content=False, **kwargs)

    def _seen(self, kind: str, key: tuple[str, str], version: str | None, item: Mapping[str, Any]) -> None:
        if self._stop.is_set():
            return  # replaced by a watch with another selector: it reports nothing more
        try:
            self._on_event(None if kind == "LISTED" else kind, item)
        except Exception as e:  # one failing callback never stops the watch
            log.warning("watch %s: handling %s/%s failed: %s", self.name, key[0], key[1], _describe(e))
