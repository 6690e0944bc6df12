"""An idle operator writes nothing: 100 ready ManagedSecrets, an operator restart, then a quiet period.

Writes are counted in the API server's audit log (hack/cluster.py records every write request by user),
so this counts what really reached the API server, not what the operator believes it sent.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from support import kube
from support.operator import GROUP, PLURAL, VERSION, OperatorEnvironment, managed_secret

pytestmark = pytest.mark.integration

COUNT = 100
IDLE_SECONDS = float(os.environ.get("MSO_IDLE_SECONDS", "300"))


def writes_by(audit_log: Path, user: str, offset: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    with audit_log.open("rb") as f:
        f.seek(offset)
        for line in f:
            entry = json.loads(line)
            if entry.get("user", {}).get("username") == user and entry.get("stage") == "ResponseComplete":
                ref = entry.get("objectRef", {})
                what = f"{entry['verb']} {ref.get('resource')}/{ref.get('subresource', '')}".rstrip("/")
                counts[f"{what} {ref.get('namespace')}/{ref.get('name')}"] += 1
    return counts


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
    time.sleep(10)  # let Kopf finish its own bookkeeping of the last creations

    operator.process.stop()
    operator.process.start()
    restart_offset = audit_log.stat().st_size
    time.sleep(20)  # resume handlers run for every object
    after_restart = writes_by(audit_log, user, restart_offset)

    idle_offset = audit_log.stat().st_size
    time.sleep(IDLE_SECONDS)
    idle = writes_by(audit_log, user, idle_offset)
    print(f"writes: after restart {dict(after_restart)}; idle {IDLE_SECONDS:.0f}s {dict(idle)}")
    assert idle == Counter(), f"writes during {IDLE_SECONDS:.0f}s idle: {dict(idle)}"
    assert after_restart == Counter(), f"writes caused by a restart alone: {dict(after_restart)}"
