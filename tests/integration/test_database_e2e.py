"""Database rotation through the running operator, against real PostgreSQL and MariaDB servers.

A probe reads the *projected Secret* and logs in with it in a loop while rotations run: in dual-account
mode it must never fail, because the new account's password is set and tested before the Secret switches
to it, and the previous account keeps working.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from support import kube
from support.databases import Server, unique
from support.operator import (
    OperatorEnvironment,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    wait_ready,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Iterator[Server]:
    chosen = servers[request.param]
    yield chosen
    chosen.drop_accounts()


def projected(admin: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    secret = client.CoreV1Api(admin).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


class Probe(threading.Thread):
    """Logs in with whatever the projected Secret holds, as an application pod would."""

    def __init__(self, admin: client.ApiClient, namespace: str, name: str, server: Server) -> None:
        super().__init__(daemon=True)
        self.admin, self.namespace, self.name, self.server = admin, namespace, name, server
        self.stop = threading.Event()
        self.logins = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            creds = projected(self.admin, self.namespace, self.name)
            if self.server.can_login(creds["username"], creds["password"]):
                self.logins += 1
            else:
                self.failures.append(creds["username"])
            time.sleep(0.05)


def admin_secret(
    admin: client.ApiClient, namespace: str, server: Server, name: str = "db-admin", **kw: str
) -> None:
    data = {k: v.decode() for k, v in server.admin_secret(**kw).items()}
    client.CoreV1Api(admin).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
    )


def test_dual_account_rotations_never_break_a_client(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, server: Server
) -> None:
    users = [unique("app_a"), unique("app_b")]
    for user in users:
        server.create_account(user)
    admin_secret(admin, namespace, server)
    create(admin, namespace, managed_secret("db", type="Database", database=server.spec(usernames=users)))
    wait_ready(admin, namespace, "db")
    first = projected(admin, namespace, "db")
    assert first["username"] == users[0]
    assert first["engine"] == server.engine and first["port"] == str(server.port)

    probe = Probe(admin, namespace, "db", server)
    probe.start()
    seen = [first]
    try:
        for n in range(2, 7):  # five rotations
            annotate(admin, namespace, "db", {"managedsecrets.io/rotate": f"r{n}"})
            kube.eventually(
                lambda n=n: get_ms(admin, namespace, "db")["status"]["currentVersion"] == f"v{n}", what=f"v{n}"
            )
            creds = kube.eventually(
                lambda: (c := projected(admin, namespace, "db"))["password"] != seen[-1]["password"] and c,
                what="the new credentials projected",
            )
            previous = seen[-1]
            assert server.can_login(creds["username"], creds["password"])
            assert server.can_login(previous["username"], previous["password"]), "ACSPrevious still works"
            seen.append(creds)
            time.sleep(0.5)
    finally:
        probe.stop.set()
        probe.join(timeout=10)
    assert [c["username"] for c in seen] == [users[0], users[1]] * 3
    assert probe.failures == [], f"a client using the projected Secret failed to log in: {probe.failures}"
    assert probe.logins > 20


def test_admin_without_rights_keeps_current_and_recovers(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, server: Server
) -> None:
    users = [unique("svc_a"), unique("svc_b")]
    for user in users:
        server.create_account(user)
    weak, weak_password = unique("weak"), "Weak-Pass-1234"
    server.create_weak_admin(weak, weak_password)
    admin_secret(admin, namespace, server)
    create(admin, namespace, managed_secret("svc", type="Database", database=server.spec(usernames=users)))
    wait_ready(admin, namespace, "svc")
    before = projected(admin, namespace, "svc")
    # The admin Secret now names an account that may not change passwords.
    client.CoreV1Api(admin).patch_namespaced_secret(
        "db-admin", namespace, {"stringData": {"username": weak, "password": weak_password}}
    )
    annotate(admin, namespace, "svc", {"managedsecrets.io/rotate": "r1"})
    failed = kube.eventually(
        lambda: (
            (o := get_ms(admin, namespace, "svc")) and condition(o, "RotationFailed").get("status") == "True" and o
        ),
        what="RotationFailed",
    )
    assert condition(failed, "RotationFailed")["reason"] == "PermissionDenied"
    assert failed["status"]["currentVersion"] == "v1" and failed["status"]["pendingVersion"] == "v2"
    assert projected(admin, namespace, "svc") == before
    assert server.can_login(before["username"], before["password"])
    # Fix the fault: the same pending version completes; nothing is left behind.
    client.CoreV1Api(admin).patch_namespaced_secret(
        "db-admin",
        namespace,
        {"stringData": {k: v.decode() for k, v in server.admin_secret().items()}},
    )
    kube.eventually(
        lambda: get_ms(admin, namespace, "svc")["status"]["currentVersion"] == "v2", timeout=60, what="v2"
    )
    status = get_ms(admin, namespace, "svc")["status"]
    assert [v["id"] for v in status["versions"]] == ["v1", "v2"] and status.get("pendingVersion") is None
    after = kube.eventually(
        lambda: (c := projected(admin, namespace, "svc"))["username"] == users[1] and c, what="v2 projected"
    )
    assert server.can_login(after["username"], after["password"])
