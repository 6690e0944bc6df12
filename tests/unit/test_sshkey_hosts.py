"""``sshKey.hosts`` without a network: the authorized_keys edits, the spec checks, status.hosts, the pool.

The SSH steps themselves run against real sshd servers in tests/integration (test_sshkey_hosts_strategy.py
and test_ssh_hosts.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from managed_secrets.rotation.strategies._authorized_keys import KeyLine, install, keep_only, tag, versions_in
from managed_secrets.rotation.strategies._ssh import parse_address
from managed_secrets.rotation.strategies.sshkey import HostsConfig, SSHKeyStrategy
from managed_secrets.rotation.strategy import RotationStepFailed, TargetReport
from managed_secrets.service.hosts import host_status, targets_of
from managed_secrets.service.pools import reaches_outside

SID = "team-a/bastion"
K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1"
K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA2"
K3 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA3"
OTHER = b'from="10.0.0.0/8",no-pty ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ alice@laptop\r\n'
HAND = b"# keys below are managed by hand\n" + OTHER + b"\nssh-ed25519 AAAAbob bob\n"
KNOWN = "[127.0.0.1]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"


def ours(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "managedsecrets.io/" in line]


def test_install_appends_a_tagged_line_and_keeps_every_other_byte() -> None:
    out = install(HAND, SID, "v2", KeyLine(K2, "deploy@ci"))
    assert out is not None
    assert out.startswith(HAND), "lines not ours (options, CRLF, blank lines, comments) must stay as they were"
    assert out[len(HAND) :] == f"{K2} managedsecrets.io/{SID}/v2 deploy@ci\n".encode()


def test_install_is_idempotent_and_replaces_a_stale_line_of_the_same_version() -> None:
    once = install(HAND, SID, "v1", KeyLine(K1))
    assert once is not None
    assert install(once, SID, "v1", KeyLine(K1)) is None, "a repeated set must not rewrite the file"
    # A first value made again after a crash: same version id, another key. One line, the new key.
    again = install(once, SID, "v1", KeyLine(K2))
    assert again is not None
    assert ours(again) == [f"{K2} {tag(SID, 'v1')}"]
    assert again.startswith(HAND)


def test_install_adds_a_newline_to_a_file_without_one() -> None:
    assert install(b"ssh-ed25519 AAAAbob bob", SID, "v1", KeyLine(K1)) == (
        f"ssh-ed25519 AAAAbob bob\n{K1} {tag(SID, 'v1')}\n".encode()
    )
    assert install(None, SID, "v1", KeyLine(K1)) == f"{K1} {tag(SID, 'v1')}\n".encode()


def test_keep_only_leaves_exactly_current_and_previous_in_place() -> None:
    text = HAND
    for version, key in (("v1", K1), ("v2", K2), ("v3", K3)):
        step = install(text, SID, version, KeyLine(key))
        assert step is not None
        text = step
    out = keep_only(text, SID, {"v3": KeyLine(K3), "v2": KeyLine(K2)})
    assert out is not None
    assert out.startswith(HAND)
    assert ours(out) == [f"{K2} {tag(SID, 'v2')}", f"{K3} {tag(SID, 'v3')}"]
    assert keep_only(out, SID, {"v3": KeyLine(K3), "v2": KeyLine(K2)}) is None


def test_keep_only_adds_a_missing_kept_key_and_drops_duplicates() -> None:
    text = HAND + f"{K3} {tag(SID, 'v3')}\n{K3} {tag(SID, 'v3')}\n".encode()
    out = keep_only(text, SID, {"v3": KeyLine(K3), "v2": KeyLine(K2)})
    assert out is not None
    assert ours(out) == [f"{K3} {tag(SID, 'v3')}", f"{K2} {tag(SID, 'v2')}"]


def test_other_secrets_and_look_alike_lines_are_not_ours() -> None:
    foreign = (
        f"{K1} {tag('team-a/bastion-2', 'v1')}\n"  # another ManagedSecret whose name starts like ours
        f"{K1} {tag('team-b/bastion', 'v1')}\n"  # the same name in another namespace
        f"{K1} comment managedsecrets.io/{SID}/v1\n"  # the tag not where we write it
        f"{K1} {tag(SID, 'v1')}/extra\n"
    ).encode()
    assert versions_in(foreign, SID) == {}
    out = keep_only(foreign, SID, {"v2": KeyLine(K2)})
    assert out == foreign + f"{K2} {tag(SID, 'v2')}\n".encode()


def test_a_comment_change_rewrites_our_lines_only() -> None:
    text = install(HAND, SID, "v1", KeyLine(K1, "old"))
    assert text is not None
    out = keep_only(text, SID, {"v1": KeyLine(K1, "new")})
    assert out is not None and ours(out) == [f"{K1} {tag(SID, 'v1')} new"]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bastion.example.com", ("bastion.example.com", 22)),
        ("10.0.0.5:2222", ("10.0.0.5", 2222)),
        ("[fd00::1]:2200", ("fd00::1", 2200)),
        ("[fd00::1]", ("fd00::1", 22)),
    ],
)
def test_addresses(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "fd00::1", "host:0", "host:65536", "host:ssh", "[fd00::1", "a b"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_address(address)


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "hosts": [{"address": "127.0.0.1:2201"}, {"address": "bastion", "authorizedKeysFile": "/etc/keys/deploy"}],
        "user": "deploy",
        "adminSecretRef": {"name": "ssh-admin"},
        "knownHosts": KNOWN,
        **overrides,
    }


def test_hosts_config_defaults() -> None:
    config = HostsConfig.from_spec(spec(), "set")
    assert config is not None
    assert [(h.hostname, h.port, h.authorized_keys_file) for h in config.hosts] == [
        ("127.0.0.1", 2201, ".ssh/authorized_keys"),
        ("bastion", 22, "/etc/keys/deploy"),
    ]
    assert (config.admin_user, config.admin_key_name, config.test_command, config.concurrency) == (
        "deploy",
        "ssh-privatekey",
        "true",
        4,
    )
    assert (config.settings.connect_timeout, config.settings.command_timeout) == (10.0, 30.0)
    assert KNOWN not in repr(config), "the known_hosts text is long and not for logs"


def test_no_hosts_is_the_local_strategy() -> None:
    assert HostsConfig.from_spec({"algorithm": "ed25519"}, "set") is None
    strategy = SSHKeyStrategy()
    assert strategy.is_local({"algorithm": "ed25519"})
    assert not strategy.is_local(spec())
    assert strategy.targets(spec()) == ("127.0.0.1:2201", "bastion")
    assert not reaches_outside({"sshKey": {"algorithm": "ed25519"}})
    assert reaches_outside({"sshKey": spec()})
    # The pool follows each strategy's is_local: databases and webhooks reach out, generated values do not.
    assert reaches_outside({"database": {"engine": "postgresql"}})
    assert reaches_outside({"external": {"url": "https://hook.example"}})
    assert not reaches_outside({"generate": {"keys": [{"name": "password"}]}})
    assert not reaches_outside({"valueFrom": {"secretRef": {"name": "s"}}})
    assert not reaches_outside({})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"knownHosts": ""}, "spec.sshKey.knownHosts must hold"),
        ({"knownHosts": "not a known_hosts line"}, "spec.sshKey.knownHosts: line 1 does not hold a public key"),
        ({"knownHosts": "# only a comment\n"}, "spec.sshKey.knownHosts: it holds no host key"),
        (
            {"knownHosts": "@trust-all * ssh-ed25519 AAAA\n"},
            "spec.sshKey.knownHosts: line 1 has an unknown marker",
        ),
        ({"knownHosts": KNOWN + "host ssh-ed25519\n"}, "spec.sshKey.knownHosts: line 2 is not 'host-patterns"),
        ({"user": None}, "spec.sshKey.user"),
        ({"adminSecretRef": {}}, "spec.sshKey.adminSecretRef.name"),
        ({"concurrency": 0}, "spec.sshKey.concurrency must be an integer from 1 to 32"),
        ({"connectTimeoutSeconds": True}, "spec.sshKey.connectTimeoutSeconds"),
        ({"hosts": [{"address": "a:99999"}]}, "spec.sshKey.hosts[0].address: the port"),
        ({"hosts": [{"address": "a"}, {"address": "a"}]}, "spec.sshKey.hosts[1].address: a is listed twice"),
        ({"adminUser": "root"}, "spec.sshKey.hosts[0].authorizedKeysFile must be an absolute path"),
    ],
)
def test_hosts_config_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RotationStepFailed) as failed:
        HostsConfig.from_spec(spec(**overrides), "set")
    assert failed.value.reason == "InvalidSpec"
    assert field in str(failed.value)


def test_an_admin_user_with_absolute_paths_is_accepted() -> None:
    config = HostsConfig.from_spec(
        spec(adminUser="root", authorizedKeysFile="/home/deploy/.ssh/authorized_keys"), "t"
    )
    assert config is not None and config.admin_user == "root"


NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_status_hosts_merges_reports_into_what_the_status_said() -> None:
    old = [
        {"host": "a", "versionId": "v2", "step": "finish", "state": "Current", "message": "m",
         "lastTransitionTime": "2026-11-30T00:00:00Z"},
        {"host": "b", "versionId": "v2", "step": "finish", "state": "Current", "message": "m",
         "lastTransitionTime": "2026-11-30T00:00:00Z"},
        {"host": "gone", "versionId": "v2", "step": "finish", "state": "Current", "message": "m"},
    ]  # fmt: skip
    reports = {"b": (TargetReport("b", "v3", "set", "Failed", "HostUnreachable: cannot connect"), NOW)}
    new = host_status(old, ["a", "b", "c"], reports)
    assert new == [
        old[0],
        {"host": "b", "versionId": "v3", "step": "set", "state": "Failed",
         "message": "HostUnreachable: cannot connect", "lastTransitionTime": "2026-12-01T12:00:00Z"},
    ]  # fmt: skip
    # The same state reported again keeps its transition time; no targets removes the field.
    later = {"b": (TargetReport("b", "v3", "set", "Failed", "another try"), NOW + dt.timedelta(minutes=5))}
    again = host_status(new, ["a", "b"], later)
    assert again is not None and again[1]["lastTransitionTime"] == "2026-12-01T12:00:00Z"
    assert again[1]["message"] == "another try"
    assert host_status(new, [], {}) is None


def test_targets_of_specs() -> None:
    assert targets_of({"sshKey": spec()}) == ("127.0.0.1:2201", "bastion")
    assert targets_of({"sshKey": {}}) == ()
    assert targets_of({"generate": {"keys": {}}}) == ()
    assert targets_of(None) == ()
