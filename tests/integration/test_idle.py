"""An idle operator writes nothing: 100 ready ManagedSecrets, an operator restart, then a quiet period that
spans at least one real watch reconnect.

Writes are counted in the API server's audit log (hack/cluster.py records every write request by user, and
the watches of ManagedSecrets), so this counts what really reached the API server, not what the operator
believes it sent. The test operator's watches last ``WATCH_TIMEOUT_SECONDS`` (``MSO_WATCH_TIMEOUT_SECONDS``),
so the quiet period needs seconds, not the five minutes of the default watch.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
from kubernetes import client

from support import kube
from support.operator import GROUP, PLURAL, VERSION, WATCH_TIMEOUT_SECONDS, OperatorEnvironment, managed_secret

pytestmark = pytest.mark.integration

COUNT = 100
IDLE_SECONDS = float(os.environ.get("MSO_IDLE_SECONDS", str(WATCH_TIMEOUT_SECONDS + 5)))
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def audit_entries(audit_log: Path, user: str, offset: int) -> list[dict[str, object]]:
    entries = []
    with audit_log.open("rb") as f:
        f.seek(offset)
        for line in f:
            entry = json.loads(line)
            if entry.get("user", {}).get("username") == user:
                entries.append(entry)
    return entries


def writes_by(audit_log: Path, user: str, offset: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for entry in audit_entries(audit_log, user, offset):
        if entry.get("verb") in WRITE_VERBS and entry.get("stage") == "ResponseComplete":
            ref: dict[str, str] = entry.get("objectRef", {})  # type: ignore[assignment]
            what = f"{entry['verb']} {ref.get('resource')}/{ref.get('subresource', '')}".rstrip("/")
            counts[f"{what} {ref.get('namespace')}/{ref.get('name')}"] += 1
    return counts


def watches_started(audit_log: Path, user: str, offset: int) -> int:
    """New watches of ManagedSecrets the operator opened after ``offset`` (each reconnect opens one)."""
    return sum(
        1
        for e in audit_entries(audit_log, user, offset)
        if e.get("verb") == "watch"
        and e.get("stage") == "ResponseStarted"
        and (e.get("objectRef") or {}).get("resource") == "managedsecrets"
    )


def test_idle_operator_makes_no_writes(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, audit_log: Path
) -> None:
    custom = client.CustomObjectsApi(admin)
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    for i in range(COUNT):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, managed_secret(f"idle-{i:03d}"))

    def all_ready() -> bool:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        ready = [
            o
            for o in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (o.get("status") or {}).get("conditions", [])
            )
        ]
        return len(ready) == COUNT

    kube.eventually(all_ready, timeout=300, interval=1, what=f"{COUNT} ManagedSecrets to be Ready")
    assert writes_by(audit_log, user, 0), "the operator's writes are visible in the audit log"
    time.sleep(1)  # the last status patches are in flight

    operator.process.stop()
    restart_offset = audit_log.stat().st_size
    operator.process.start()
    kube.eventually(
        lambda: watches_started(audit_log, user, restart_offset) > 0,
        timeout=60,
        what="the restarted operator to watch ManagedSecrets",
    )
    # The window covers the resume handlers of every object and then a quiet period long enough for the
    # server to end the watch and Kopf to open a new one.
    time.sleep(IDLE_SECONDS)
    writes = writes_by(audit_log, user, restart_offset)
    watches = watches_started(audit_log, user, restart_offset)
    print(f"writes after a restart and {IDLE_SECONDS:.0f}s idle: {dict(writes)}; watches opened: {watches}")
    assert watches >= 2, f"no watch of ManagedSecrets was reopened within {IDLE_SECONDS:.0f}s"
    # Only this test's objects count: the session's operator may still be finishing the deletion of an
    # earlier test's objects (their namespaces are deleted at teardown), which is work, not idleness.
    ours = Counter({k: n for k, n in writes.items() if f" {namespace}/" in k or f"/msec.{namespace}." in k})
    assert ours == Counter(), f"writes caused by a restart and an idle period: {dict(ours)}"


def test_every_list_and_watch_of_secrets_carries_a_selector(
    operator: OperatorEnvironment, audit_log: Path
) -> None:
    """The operator is never sent a Secret it has nothing to do with: the API server filters every list and
    watch of Secrets it makes by label (projected, sources, store records) or by name (the keyring)."""
    user = f"system:serviceaccount:{operator.namespace}:managed-secrets-operator"
    requests = [
        str(e.get("requestURI"))
        for e in audit_entries(audit_log, user, 0)
        if e.get("verb") in ("list", "watch")
        and e.get("stage") == "ResponseComplete"
        and (e.get("objectRef") or {}).get("resource") == "secrets"
    ]
    assert requests, "the operator lists its Secrets at start-up"
    unfiltered = [uri for uri in requests if "labelSelector=" not in uri and "fieldSelector=" not in uri]
    assert unfiltered == [], unfiltered
    selectors = {
        unquote(uri.split("labelSelector=")[1].split("&")[0]) for uri in requests if "labelSelector=" in uri
    }
    assert selectors == {
        "managedsecrets.io/managed=true",
        "managedsecrets.io/source=true",
        "managedsecrets.io/store=true",
    }
