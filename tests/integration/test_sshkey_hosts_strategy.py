"""The ``sshKey.hosts`` steps against real OpenSSH servers, without a cluster (the strategy on its own).

The operator-level tests (``test_ssh_hosts.py``) run the same through the operator as its ServiceAccount; these
drive the steps directly, so each case (idempotence, a wrong host key, a refused admin key, a host down) costs
seconds. Logins are checked with the OpenSSH client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.strategies.sshkey import PRIVATE_KEY, SSHKeyStrategy
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, TargetReport
from support.sshd import SshServer, keygen

SECRET_ID = "team-a/bastion-key"
UNRELATED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5IG5vdCBvdXJzIGJ1dCBrZXB0IGFzIGl0IGlzIQAAAA alice@laptop"


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[SshServer, SshServer, bytes]]:
    admin_private, admin_public = keygen(tmp_path / "admin", "admin")
    servers = (SshServer(tmp_path / "host-a"), SshServer(tmp_path / "host-b"))
    for server in servers:
        server.authorized_keys.write_text(f"# managed by hand\n{admin_public}\n{UNRELATED}\n")
        server.start()
    yield servers[0], servers[1], admin_private
    for server in servers:
        server.stop()


def spec(*servers: SshServer, **overrides: Any) -> dict[str, Any]:
    return {
        "algorithm": "ed25519",
        # Each test server has its own file (sshd_config's AuthorizedKeysFile), not the user's ~/.ssh one.
        "hosts": [{"address": s.address, "authorizedKeysFile": str(s.authorized_keys)} for s in servers],
        "user": servers[0].user,
        "adminSecretRef": {"name": "ssh-admin"},
        "knownHosts": "".join(s.known_hosts_line + "\n" for s in servers),
        "connectTimeoutSeconds": 5,
        "commandTimeoutSeconds": 10,
        **overrides,
    }


class Steps:
    """Runs the steps the way the engine does, keeping versions and reports."""

    def __init__(self, config: dict[str, Any], admin: bytes) -> None:
        self.config = config
        self.admin = admin
        self.strategy = SSHKeyStrategy()
        self.versions: dict[str, SecretValue] = {}
        self.current: str | None = None
        self.reports: list[TargetReport] = []

    def ctx(self, version_id: str) -> RotationContext:
        return RotationContext(
            secret_id=SECRET_ID,
            version_id=version_id,
            config=self.config,
            current=self.versions.get(self.current) if self.current else None,
            current_id=self.current,
            read_secret=lambda name: {PRIVATE_KEY: self.admin} if name == "ssh-admin" else {},
            report=self.reports.append,
        )

    def initial(self) -> str:
        ctx = self.ctx("v1")
        value = self.strategy.initial(ctx)
        self.strategy.set(ctx, value)
        self.strategy.test(ctx, value)
        self.versions["v1"], self.current = value, "v1"
        return "v1"

    def rotate(self) -> str:
        version_id = f"v{len(self.versions) + 1}"
        ctx = self.ctx(version_id)
        value = self.strategy.create(ctx)
        self.versions[version_id] = value
        for step in (self.strategy.set, self.strategy.test, self.strategy.finish):
            step(ctx, value)
        self.current = version_id
        return version_id

    def key(self, version_id: str) -> bytes:
        return self.versions[version_id].as_dict()[PRIVATE_KEY]


def test_three_rotations_keep_current_and_previous_and_drop_the_one_before(
    hosts: tuple[SshServer, SshServer, bytes], tmp_path: Path
) -> None:
    a, b, admin = hosts
    steps = Steps(spec(a, b), admin)
    steps.initial()
    for server in (a, b):
        assert server.login(steps.key("v1"), tmp_path)
    for n in range(3):
        new = steps.rotate()
        previous = f"v{n + 1}"
        for server in (a, b):
            assert server.login(steps.key(new), tmp_path), f"{new} does not log in to {server.address}"
            assert server.login(steps.key(previous), tmp_path), f"previous {previous} refused by {server.address}"
            if n > 0:
                assert not server.login(steps.key(f"v{n}"), tmp_path), f"v{n} still logs in to {server.address}"
            lines = server.lines()
            assert lines[:3] == ["# managed by hand", lines[1], UNRELATED], "the lines not ours moved or changed"
            assert server.login(admin, tmp_path), "the admin key was removed"
            ours = [line for line in lines if "managedsecrets.io/" in line]
            assert sorted(line.split()[2] for line in ours) == sorted(
                f"managedsecrets.io/{SECRET_ID}/{v}" for v in (previous, new)
            )
    assert {(r.target, r.state) for r in steps.reports if r.version_id == "v4"} == {
        (a.address, "Installed"),
        (a.address, "Verified"),
        (a.address, "Current"),
        (b.address, "Installed"),
        (b.address, "Verified"),
        (b.address, "Current"),
    }


def test_set_is_idempotent_under_the_version_id(hosts: tuple[SshServer, SshServer, bytes]) -> None:
    a, b, admin = hosts
    steps = Steps(spec(a, b), admin)
    steps.initial()
    ctx = steps.ctx("v2")
    value = steps.strategy.create(ctx)
    before = a.authorized_keys.stat().st_mtime_ns
    steps.strategy.set(ctx, value)
    after_first = a.authorized_keys.read_text()
    assert a.authorized_keys.stat().st_mtime_ns != before
    steps.strategy.set(ctx, value)
    assert a.authorized_keys.read_text() == after_first
    assert [r.message for r in steps.reports if r.target == a.address][-1].endswith("(it already did)")
    assert sum(f"/{SECRET_ID}/v2" in line for line in a.lines()) == 1


def test_a_wrong_host_key_is_refused_before_any_login(
    hosts: tuple[SshServer, SshServer, bytes], tmp_path: Path
) -> None:
    a, b, admin = hosts
    _other_private, other_public = keygen(tmp_path / "not-the-host-key")
    key_type, key = other_public.split()[:2]
    config = spec(a, b)
    config["knownHosts"] = f"{a.known_hosts_line}\n[127.0.0.1]:{b.port} {key_type} {key}\n"
    steps = Steps(config, admin)
    log_before = len(b.log_text())
    with pytest.raises(RotationStepFailed) as failed:
        steps.initial()
    assert failed.value.reason == "HostKeyRejected"
    assert b.address in str(failed.value) and a.address not in str(failed.value)
    attempts = b.log_text()[log_before:]
    assert "Connection from 127.0.0.1" in attempts, "the client never reached sshd: the test proves nothing"
    for word in ("publickey", "Accepted", "Failed", "Postponed", "userauth"):
        assert word not in attempts, f"sshd saw an authentication attempt ({word}):\n{attempts}"
    assert not any("managedsecrets.io/" in line for line in b.lines())


def test_a_host_down_at_set_fails_the_step_naming_it_and_leaves_current_working(
    hosts: tuple[SshServer, SshServer, bytes], tmp_path: Path
) -> None:
    a, b, admin = hosts
    steps = Steps(spec(a, b), admin)
    steps.initial()
    b.stop()
    ctx = steps.ctx("v2")
    value = steps.strategy.create(ctx)
    with pytest.raises(RotationStepFailed) as failed:
        steps.strategy.set(ctx, value)
    assert failed.value.reason == "HostUnreachable"
    assert f"1 of 2 hosts failed ({b.address}: cannot connect to {b.address}" in str(failed.value)
    assert a.login(steps.key("v1"), tmp_path), "the current key stopped working on the host that took the set"
    b.start()
    assert b.login(steps.key("v1"), tmp_path)
    for step in (steps.strategy.set, steps.strategy.test, steps.strategy.finish):
        step(ctx, value)
    for server in (a, b):
        assert server.login(value.as_dict()[PRIVATE_KEY], tmp_path)
        assert server.login(steps.key("v1"), tmp_path)


def test_a_refused_admin_key_and_a_key_that_does_not_log_in_are_named(
    hosts: tuple[SshServer, SshServer, bytes], tmp_path: Path
) -> None:
    a, b, _admin = hosts
    stranger, _public = keygen(tmp_path / "stranger")
    steps = Steps(spec(a, b), stranger)
    with pytest.raises(RotationStepFailed) as failed:
        steps.initial()
    assert failed.value.reason == "AuthenticationFailed"
    assert "refused the admin key of Secret ssh-admin" in str(failed.value)
    assert "2 of 2 hosts failed" in str(failed.value)
    assert "BEGIN OPENSSH" not in str(failed.value)


def test_a_failing_test_command_fails_the_test_step(hosts: tuple[SshServer, SshServer, bytes]) -> None:
    a, b, admin = hosts
    steps = Steps(spec(a, b, testCommand="exit 3"), admin)
    with pytest.raises(RotationStepFailed) as failed:
        steps.initial()
    assert failed.value.step == "test" and failed.value.reason == "LoginFailed"
    assert "the test command exited 3" in str(failed.value)


def test_a_host_certificate_signed_by_a_known_ca_is_trusted(tmp_path: Path) -> None:
    """knownHosts may name a CA (@cert-authority) instead of each host key; a host without its certificate is
    refused."""
    ca_private_path = tmp_path / "host-ca"
    _ca, ca_public = keygen(ca_private_path, "host-ca")
    admin_private, admin_public = keygen(tmp_path / "admin", "admin")
    signed = SshServer(tmp_path / "signed", host_ca=ca_private_path)
    unsigned = SshServer(tmp_path / "unsigned")
    try:
        for server in (signed, unsigned):
            server.authorized_keys.write_text(admin_public + "\n")
            server.start()
        ca_type, ca_key = ca_public.split()[:2]
        trusted = f"@cert-authority [127.0.0.1]:* {ca_type} {ca_key}\n"
        steps = Steps(spec(signed, knownHosts=trusted), admin_private)
        steps.initial()
        assert signed.login(steps.key("v1"), tmp_path)
        refused = Steps(spec(unsigned, knownHosts=trusted), admin_private)
        with pytest.raises(RotationStepFailed) as failed:
            refused.initial()
        # The client offers only certificate host-key types, so sshd ends the key exchange; which error the
        # client sees first (its own negotiation failure or the closed connection) is a race.
        assert failed.value.step == "set" and unsigned.address in str(failed.value)
        assert "no matching host key type found" in unsigned.log_text()
        assert "publickey" not in unsigned.log_text()
        assert not any("managedsecrets.io/" in line for line in unsigned.lines())
    finally:
        signed.stop()
        unsigned.stop()
