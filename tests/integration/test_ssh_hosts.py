"""Server rotation end to end: the operator, as its ServiceAccount, rotates an SSH key on two real sshd hosts.

Each test starts two ``sshd`` servers on 127.0.0.1 (tests/support/sshd.py), each with its own host key and
``authorized_keys`` holding the admin key and a line nobody else owns. The admin private key is an ordinary
Secret in the test namespace. Logins are checked with the OpenSSH client, the admin's logins counted in the
servers' logs (``LogLevel VERBOSE`` names the key of every accepted login).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from managed_secrets.names import MOVE_STAGE_ANNOTATION, StageMoveRequest
from managed_secrets.store import RecordKey
from support import kube
from support.operator import (
    OperatorEnvironment,
    OperatorProcess,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    open_store,
    secret_data,
    wait_ready,
)
from support.sshd import SSH_KEYGEN, SshServer, keygen

pytestmark = pytest.mark.integration

UNRELATED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5IG5vdCBvdXJzIGJ1dCBrZXB0IGFzIGl0IGlzIQAAAA alice@laptop"


@dataclass
class Fleet:
    a: SshServer
    b: SshServer
    admin_key: bytes
    admin_fingerprint: str
    tmp: Path

    @property
    def hosts(self) -> tuple[SshServer, SshServer]:
        return self.a, self.b

    def spec(self, known_hosts: str | None = None) -> dict[str, Any]:
        return {
            "hosts": [{"address": s.address, "authorizedKeysFile": str(s.authorized_keys)} for s in self.hosts],
            "user": self.a.user,
            "adminSecretRef": {"name": "ssh-admin"},
            "knownHosts": known_hosts or "".join(s.known_hosts_line + "\n" for s in self.hosts),
            "comment": "deploy@fleet",
            "connectTimeoutSeconds": 5,
            "commandTimeoutSeconds": 10,
        }

    def admin_logins(self, server: SshServer, since: int = 0) -> int:
        return sum(
            "Accepted publickey" in line and self.admin_fingerprint in line
            for line in server.log_text()[since:].splitlines()
        )


@pytest.fixture
def fleet(admin: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Fleet]:
    admin_key, admin_public = keygen(tmp_path / "admin", "fleet-admin")
    listed = subprocess.run(
        [SSH_KEYGEN, "-l", "-f", str(tmp_path / "admin.pub")], capture_output=True, text=True, check=True
    )
    servers = (SshServer(tmp_path / "host-a"), SshServer(tmp_path / "host-b"))
    for server in servers:
        server.authorized_keys.write_text(f"{admin_public}\n{UNRELATED}\n")
        server.start()
    client.CoreV1Api(admin).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="ssh-admin"),
            type="kubernetes.io/ssh-auth",
            string_data={"ssh-privatekey": admin_key.decode()},
        ),
    )
    yield Fleet(servers[0], servers[1], admin_key, listed.stdout.split()[1], tmp_path)
    for server in servers:
        server.stop()


def projected_key(admin: client.ApiClient, namespace: str, name: str) -> bytes:
    return secret_data(admin, namespace, name)["ssh-privatekey"]


def current_version(admin: client.ApiClient, namespace: str, name: str) -> str | None:
    return (get_ms(admin, namespace, name).get("status") or {}).get("currentVersion")


def rotate_to(admin: client.ApiClient, namespace: str, name: str, request: str, version: str) -> None:
    annotate(admin, namespace, name, {"managedsecrets.io/rotate": request})
    kube.eventually(
        lambda: current_version(admin, namespace, name) == version, timeout=90, what=f"{name} rotated to {version}"
    )


def test_three_rotations_across_two_hosts_keep_current_and_previous(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, fleet: Fleet
) -> None:
    name = "fleet-key"
    create(admin, namespace, managed_secret(name, type="SSHKey", sshKey=fleet.spec()))
    wait_ready(admin, namespace, name, timeout=90)
    vault = open_store(admin, operator.namespace)
    keys = {"v1": projected_key(admin, namespace, name)}
    for server in fleet.hosts:
        assert server.login(keys["v1"], fleet.tmp), f"v1 does not log in to {server.address}"
    for n in range(2, 5):
        version, previous = f"v{n}", f"v{n - 1}"
        rotate_to(admin, namespace, name, f"r{n}", version)
        kube.eventually(
            lambda: projected_key(admin, namespace, name) not in keys.values(), what=f"{version} projected"
        )
        keys[version] = projected_key(admin, namespace, name)
        record = vault.load(RecordKey(namespace, name)).record
        assert (record.current.id, record.previous.id) == (version, previous)
        for server in fleet.hosts:
            assert server.login(keys[version], fleet.tmp), (
                f"the new key {version} does not log in to {server.address}"
            )
            assert server.login(keys[previous], fleet.tmp), f"the previous key {previous} stopped working"
            if n > 2:
                older = f"v{n - 2}"
                assert not server.login(keys[older], fleet.tmp), f"{older} still logs in to {server.address}"
            lines = server.lines()
            assert lines[1] == UNRELATED, "a line the operator did not write changed"
            assert server.login(fleet.admin_key, fleet.tmp), "the admin key was removed"
            tags = sorted(line.split()[2] for line in lines if "managedsecrets.io/" in line)
            assert tags == [f"managedsecrets.io/{namespace}/{name}/{v}" for v in sorted((previous, version))]
        status = get_ms(admin, namespace, name)["status"]
        assert [(h["host"], h["versionId"], h["state"]) for h in status["hosts"]] == [
            (s.address, version, "Current") for s in fleet.hosts
        ]
        public = status["publicKey"].split()
        assert all(f"{public[0]} {public[1]} managedsecrets.io/" in "\n".join(s.lines()) for s in fleet.hosts)
    assert condition(get_ms(admin, namespace, name), "RotationFailed")["status"] == "False"
    # No private key in the operator's log (DEBUG), the ManagedSecret (status, annotations) or its Events.
    events = client.CoreV1Api(admin).list_namespaced_event(namespace).items
    texts = [
        operator.process.logs(),
        json.dumps(get_ms(admin, namespace, name)),
        *(e.message or "" for e in events),
    ]
    texts += [s.log_text() for s in fleet.hosts]
    for version, pem in keys.items():
        body = b"".join(pem.splitlines()[1:-1]).decode()
        for piece in (body[20:60], body[-60:-20]):
            assert not any(piece in text for text in texts), f"a piece of the {version} private key leaked"


@pytest.mark.parametrize("failpoint", ["after-set", "after-test"])
def test_a_crash_after_set_or_test_resumes_under_the_same_version_and_installs_the_key_once(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    fleet: Fleet,
    *,
    tmp_path: Path,
    failpoint: str,
) -> None:
    name = f"crash-{failpoint}"
    create(admin, namespace, managed_secret(name, type="SSHKey", sshKey=fleet.spec()))
    wait_ready(admin, namespace, name, timeout=90)
    vault = open_store(admin, operator.namespace)
    key = RecordKey(namespace, name)
    operator.process.stop()
    crashing = OperatorProcess(
        operator.kubeconfig,
        operator.namespace,
        tmp_path / "crash.log",
        env={"MSO_IDENTITY": "operator", "MSO_FAILPOINT": failpoint},
    )
    try:
        crashing.start()
        annotate(admin, namespace, name, {"managedsecrets.io/rotate": "r1"})
        assert crashing.proc is not None
        crashing.proc.wait(timeout=90)
        assert crashing.proc.returncode == 86, f"expected the failpoint exit, got {crashing.proc.returncode}"
        record = vault.load(key).record
        assert (record.current.id, record.pending.id) == ("v1", "v2")
        assert record.rotation.step.value == {"after-set": "test", "after-test": "finish"}[failpoint]
        for server in fleet.hosts:
            assert sum(f"/{name}/v2" in line for line in server.lines()) == 1
        marks = {s.address: len(s.log_text()) for s in fleet.hosts}
    finally:
        operator.process.start()
    kube.eventually(
        lambda: current_version(admin, namespace, name) == "v2", timeout=90, what="the resumed rotation"
    )
    record = vault.load(key).record
    assert [v.id for v in record.versions] == ["v1", "v2"], "resumed under the same version id, not a new one"
    assert record.next_version_number == 3
    v2 = vault.open(record, record.current).as_dict()["ssh-privatekey"]
    for server in fleet.hosts:
        assert sum(f"/{name}/v2" in line for line in server.lines()) == 1, "the v2 key is installed once"
        assert server.login(v2, fleet.tmp)
        # After the crash only finish logs in as the admin: set is not run again.
        assert fleet.admin_logins(server, marks[server.address]) == 1


def test_a_host_down_at_set_fails_the_rotation_naming_it_and_completes_when_it_returns(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, fleet: Fleet
) -> None:
    name = "host-down"
    create(admin, namespace, managed_secret(name, type="SSHKey", sshKey=fleet.spec()))
    wait_ready(admin, namespace, name, timeout=90)
    v1 = projected_key(admin, namespace, name)
    fleet.b.stop()
    annotate(admin, namespace, name, {"managedsecrets.io/rotate": "r1"})

    def failed() -> dict[str, Any] | None:
        obj = get_ms(admin, namespace, name)
        return obj if condition(obj, "RotationFailed").get("status") == "True" else None

    obj = kube.eventually(failed, timeout=60, what="RotationFailed")
    message = condition(obj, "RotationFailed")["message"]
    assert condition(obj, "RotationFailed")["reason"] == "HostUnreachable"
    assert f"1 of 2 hosts failed ({fleet.b.address}: cannot connect to {fleet.b.address}" in message
    assert fleet.a.address + ":" not in message.split("(", 1)[1], "only the failing host is named"
    status = obj["status"]
    assert status["currentVersion"] == "v1" and status["pendingVersion"] == "v2"
    hosts = {h["host"]: h for h in status["hosts"]}
    assert (hosts[fleet.a.address]["state"], hosts[fleet.a.address]["versionId"]) == ("Installed", "v2")
    assert (hosts[fleet.b.address]["state"], hosts[fleet.b.address]["step"]) == ("Failed", "set")
    assert projected_key(admin, namespace, name) == v1, "ACSCurrent moved while a host failed"
    assert fleet.a.login(v1, fleet.tmp), "the current key stopped working on the host that took the set"
    fleet.b.start()
    kube.eventually(
        lambda: current_version(admin, namespace, name) == "v2", timeout=90, what="the retried rotation"
    )
    kube.eventually(lambda: projected_key(admin, namespace, name) != v1, what="v2 projected")
    v2 = projected_key(admin, namespace, name)
    for server in fleet.hosts:
        assert server.login(v2, fleet.tmp) and server.login(v1, fleet.tmp)
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, name), "RotationFailed").get("status") == "False",
        what="RotationFailed cleared",
    )


def test_a_wrong_host_key_is_refused_without_a_login_attempt(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, fleet: Fleet
) -> None:
    _other, other_public = keygen(fleet.tmp / "impostor", "impostor")
    key_type, key = other_public.split()[:2]
    known = f"{fleet.a.known_hosts_line}\n[127.0.0.1]:{fleet.b.port} {key_type} {key}\n"
    mark = len(fleet.b.log_text())
    name = "wrong-host-key"
    create(admin, namespace, managed_secret(name, type="SSHKey", sshKey=fleet.spec(known)))

    def refused() -> dict[str, Any] | None:
        obj = get_ms(admin, namespace, name)
        return obj if condition(obj, "Ready").get("reason") == "HostKeyRejected" else None

    obj = kube.eventually(refused, timeout=60, what="Ready=False HostKeyRejected")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert f"the host key of {fleet.b.address} does not match sshKey.knownHosts" in ready["message"]
    seen = fleet.b.log_text()[mark:]
    assert "Connection from 127.0.0.1" in seen, "the operator never reached host b: the test proves nothing"
    for word in ("publickey", "Accepted", "Failed", "Postponed"):
        assert word not in seen, f"host b saw an authentication attempt ({word})"
    assert not any("managedsecrets.io/" in line for line in fleet.b.lines())


def test_a_rollback_puts_the_old_key_back_on_every_host_first_and_is_refused_while_a_host_is_down(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, fleet: Fleet
) -> None:
    name = "rollback"
    create(admin, namespace, managed_secret(name, type="SSHKey", sshKey=fleet.spec()))
    wait_ready(admin, namespace, name, timeout=90)
    v1 = projected_key(admin, namespace, name)
    rotate_to(admin, namespace, name, "r2", "v2")
    rotate_to(admin, namespace, name, "r3", "v3")
    kube.eventually(lambda: projected_key(admin, namespace, name) != v1, what="v3 projected")
    v3 = projected_key(admin, namespace, name)
    assert not fleet.a.login(v1, fleet.tmp), "v1 was removed by the second rotation's finish"

    def refusals() -> list[str]:
        return [
            e.message
            for e in client.CoreV1Api(admin).list_namespaced_event(namespace).items
            if e.reason == "StageMoveRefused" and e.involved_object.name == name
        ]

    fleet.b.stop()
    move = StageMoveRequest("ACSCurrent", "v1", "back-1").encode()
    annotate(admin, namespace, name, {MOVE_STAGE_ANNOTATION: move})
    refused = kube.eventually(refusals, timeout=60, what="the rollback refused")
    assert (
        f"moving ACSCurrent to v1 refused: set step failed: 1 of 2 hosts failed ({fleet.b.address}" in refused[0]
    )
    assert current_version(admin, namespace, name) == "v3" and projected_key(admin, namespace, name) == v3
    fleet.b.start()
    annotate(
        admin, namespace, name, {MOVE_STAGE_ANNOTATION: StageMoveRequest("ACSCurrent", "v1", "back-2").encode()}
    )
    kube.eventually(lambda: current_version(admin, namespace, name) == "v1", timeout=60, what="the rollback")
    kube.eventually(lambda: projected_key(admin, namespace, name) == v1, what="v1 projected again")
    for server in fleet.hosts:
        assert server.login(v1, fleet.tmp), f"the rolled-back key does not log in to {server.address}"
        assert server.login(v3, fleet.tmp), "the key current before the rollback (now ACSPrevious) was removed"
