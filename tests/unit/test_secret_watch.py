"""SecretWatch against a scripted API: paged list, watch events, bookmarks, a 410 relist, and what it keeps."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from managed_secrets.cluster.watch import SecretChange, SecretWatch


def secret(name: str, rv: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "app", "name": name, "resourceVersion": rv, "annotations": annotations},
        "data": {"password": "c2VjcmV0"},
    }


class Response:
    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode() if not isinstance(body, list) else b""
        self._lines = [json.dumps(e).encode() + b"\n" for e in body] if isinstance(body, list) else []

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield from self._lines

    def release_conn(self) -> None:
        pass


class ScriptedApi:
    """Answers list calls from ``lists`` and watch calls from ``watches``, in order; records the calls."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]]], done: threading.Event):
        self.lists = lists
        self.watches = watches
        self.calls: list[dict[str, Any]] = []
        self.done = done

    def list_secret_for_all_namespaces(self, **kwargs: Any) -> Response:
        self.calls.append(kwargs)
        if kwargs.get("watch"):
            if not self.watches:
                self.done.set()
                raise ConnectionError("no more scripted watches")
            return Response(self.watches.pop(0))
        return Response(self.lists.pop(0))


def run(api: ScriptedApi, done: threading.Event, **kwargs: Any) -> tuple[SecretWatch, list[SecretChange]]:
    changes: list[SecretChange] = []
    watch = SecretWatch(object(), "test", on_change=changes.append, label_selector="x=y", **kwargs)  # type: ignore[arg-type]
    watch._core = api  # type: ignore[assignment]
    watch.start()
    assert done.wait(5), "the scripted calls were not all made"
    watch.stop()
    return watch, changes


def test_it_lists_in_pages_then_follows_the_watch_and_keeps_only_revisions() -> None:
    done = threading.Event()
    api = ScriptedApi(
        lists=[
            {"metadata": {"continue": "next", "resourceVersion": "10"}, "items": [secret("a", "5")]},
            {"metadata": {"resourceVersion": "11"}, "items": [secret("b", "6")]},
        ],
        watches=[
            [
                {"type": "MODIFIED", "object": secret("a", "12", **{"managedsecrets.io/managed-secret": "app/a"})},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
                {"type": "DELETED", "object": secret("b", "21")},
                {"type": "ADDED", "object": secret("c", "22")},
            ]
        ],
        done=done,
    )
    watch, changes = run(api, done)

    assert [c.get("_continue") for c in api.calls[:2]] == [None, "next"]
    assert all(c["label_selector"] == "x=y" for c in api.calls)
    # The listed Secrets are not reported (the service resumes from status); what follows is.
    assert [(c.name, c.resource_version) for c in changes] == [("a", "12"), ("b", None), ("c", "22")]
    assert changes[0].annotations == {"managedsecrets.io/managed-secret": "app/a"}
    assert watch.revision("app", "a") == "12" and watch.revision("app", "b") is None and len(watch) == 2
    assert watch.synced.is_set()
    # The next watch starts from the last resourceVersion seen, bookmarks included.
    assert api.calls[3]["resource_version"] == "22"
    assert not hasattr(watch, "_bodies") and all(isinstance(v, str) for v in watch._revisions.values())


def test_an_expired_resource_version_lists_again_and_reports_what_changed_meanwhile() -> None:
    done = threading.Event()
    api = ScriptedApi(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [secret("a", "5"), secret("b", "6")]},
            {"metadata": {"resourceVersion": "30"}, "items": [secret("a", "25"), secret("c", "26")]},
        ],
        watches=[[{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}]],
        done=done,
    )
    watch, changes = run(api, done)

    assert sorted((c.name, c.resource_version) for c in changes) == [("a", "25"), ("b", None), ("c", "26")]
    assert (watch.revision("app", "a"), watch.revision("app", "b"), watch.revision("app", "c")) == (
        "25",
        None,
        "26",
    )


def test_report_listed_tells_of_the_listed_secrets_too() -> None:
    done = threading.Event()
    api = ScriptedApi(
        lists=[{"metadata": {"resourceVersion": "1"}, "items": [secret("keyring", "1", request="r1")]}],
        watches=[],
        done=done,
    )
    _, changes = run(api, done, report_listed=True)
    assert [(c.name, c.annotations) for c in changes] == [("keyring", {"request": "r1"})]
