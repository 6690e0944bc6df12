"""The reconcile service with a multi-target strategy (``sshKey.hosts``), in memory.

The SSH steps are replaced by a fake fleet that keeps, per host, the versions its ``authorized_keys`` would
hold, and that can take a host down; the real steps against real sshd servers are tests/integration's. What is
checked here is the service's part: steps persisted one by one, ``status.hosts`` built from the reports, a
failing host leaving ACSCurrent alone and the retry completing, and a rollback waiting for every host.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from managed_secrets.domain import SecretValue
from managed_secrets.names import MOVE_STAGE_ANNOTATION, ROTATE_ANNOTATION, StageMoveRequest
from managed_secrets.rotation.strategies import load_all
from managed_secrets.rotation.strategies.sshkey import SSHKeyStrategy
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, TargetReport
from support.world import World, managed_secret

HOSTS = ("a:22", "b:22")
KNOWN = "a ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"


@dataclass
class Fleet:
    held: dict[str, set[str]] = field(default_factory=lambda: {h: set() for h in HOSTS})
    down: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def each(self, ctx: RotationContext, step: str, state: str, change: object) -> None:
        self.calls.append((step, ctx.version_id))
        failed = []
        for host in HOSTS:
            if host in self.down:
                ctx.report(TargetReport(host, ctx.version_id, step, "Failed", "HostUnreachable: down"))
                failed.append(host)
                continue
            if callable(change):
                change(self.held[host])
            ctx.report(TargetReport(host, ctx.version_id, step, state, f"{state} {ctx.version_id}"))
        if failed:
            raise RotationStepFailed(
                step, "HostUnreachable", f"{len(failed)} of 2 hosts failed ({failed[0]}: down)"
            )


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    load_all()
    fleet = Fleet()

    def set_(self: SSHKeyStrategy, ctx: RotationContext, pending: SecretValue) -> None:
        fleet.each(ctx, "set", "Installed", lambda held: held.add(ctx.version_id))

    def test(self: SSHKeyStrategy, ctx: RotationContext, pending: SecretValue) -> None:
        fleet.each(ctx, "test", "Verified", None)

    def finish(self: SSHKeyStrategy, ctx: RotationContext, pending: SecretValue) -> None:
        keep = {ctx.version_id, ctx.current_id}
        fleet.each(ctx, "finish", "Current", lambda held: held.intersection_update(keep))

    monkeypatch.setattr(SSHKeyStrategy, "set", set_)
    monkeypatch.setattr(SSHKeyStrategy, "test", test)
    monkeypatch.setattr(SSHKeyStrategy, "finish", finish)
    yield fleet


def keyed(name: str = "bastion") -> dict[str, object]:
    return managed_secret(
        name,
        type="SSHKey",
        sshKey={
            "hosts": [{"address": h} for h in HOSTS],
            "user": "deploy",
            "adminSecretRef": {"name": "admin"},
            "knownHosts": KNOWN,
        },
    )


def hosts(world: World, name: str = "bastion") -> list[tuple[str, str, str]]:
    return [(h["host"], h["versionId"], h["state"]) for h in world.status(name).get("hosts") or []]


def test_a_rotation_on_hosts_is_persisted_step_by_step_and_shown_per_host(world: World, fleet: Fleet) -> None:
    world.apply(keyed())
    world.reconcile("bastion")
    assert hosts(world) == [("a:22", "v1", "Verified"), ("b:22", "v1", "Verified")]
    world.edit("bastion", annotations={ROTATE_ANNOTATION: "r1"})
    writes = world.store.writes
    assert world.reconcile("bastion").rotated == "v2"
    assert world.store.writes - writes == 4, "create, set, test and finish each persisted: the steps reach out"
    assert fleet.calls[-3:] == [("set", "v2"), ("test", "v2"), ("finish", "v2")]
    assert hosts(world) == [("a:22", "v2", "Current"), ("b:22", "v2", "Current")]
    assert fleet.held == {"a:22": {"v1", "v2"}, "b:22": {"v1", "v2"}}


def test_a_host_down_fails_the_step_keeps_current_and_the_retry_completes(world: World, fleet: Fleet) -> None:
    world.apply(keyed())
    world.reconcile("bastion")
    fleet.down.add("b:22")
    world.edit("bastion", annotations={ROTATE_ANNOTATION: "r1"})
    outcome = world.reconcile("bastion")
    failed = world.condition("bastion", "RotationFailed")
    assert (failed["status"], failed["reason"]) == ("True", "HostUnreachable")
    assert "b:22" in failed["message"]
    assert world.record("bastion").current.id == "v1"  # type: ignore[union-attr]
    assert hosts(world) == [("a:22", "v2", "Installed"), ("b:22", "v2", "Failed")]
    since = {h["host"]: h["lastTransitionTime"] for h in world.status("bastion")["hosts"]}
    fleet.down.clear()
    assert outcome.wake_at is not None
    world.clock.advance(seconds=(outcome.wake_at - world.clock.now()).total_seconds() + 1)
    assert world.reconcile("bastion").rotated == "v2"
    assert fleet.calls.count(("set", "v2")) == 2, "the failed set was retried under the same version id"
    assert hosts(world) == [("a:22", "v2", "Current"), ("b:22", "v2", "Current")]
    assert all(h["lastTransitionTime"] != since[h["host"]] for h in world.status("bastion")["hosts"])
    assert world.condition("bastion", "RotationFailed")["status"] == "False"


def test_a_rollback_waits_for_every_host(world: World, fleet: Fleet) -> None:
    world.apply(keyed())
    world.reconcile("bastion")
    for n in (2, 3):
        world.edit("bastion", annotations={ROTATE_ANNOTATION: f"r{n}"})
        assert world.reconcile("bastion").rotated == f"v{n}"
    assert fleet.held["a:22"] == {"v2", "v3"}
    fleet.down.add("b:22")
    world.edit("bastion", annotations={MOVE_STAGE_ANNOTATION: StageMoveRequest("ACSCurrent", "v1", "m1").encode()})
    world.reconcile("bastion")
    assert world.record("bastion").current.id == "v3"  # type: ignore[union-attr]
    assert "StageMoveRefused" in world.events("Warning")
    fleet.down.clear()
    world.edit("bastion", annotations={MOVE_STAGE_ANNOTATION: StageMoveRequest("ACSCurrent", "v1", "m2").encode()})
    world.clock.advance(seconds=1)
    world.reconcile("bastion")
    assert world.record("bastion").current.id == "v1"  # type: ignore[union-attr]
    assert fleet.calls[-2:] == [("set", "v1"), ("test", "v1")]
    assert fleet.held == {"a:22": {"v1", "v2", "v3"}, "b:22": {"v1", "v2", "v3"}}
    assert world.value("bastion") == world.value("bastion", "v1")


def test_status_hosts_goes_with_the_hosts(world: World, fleet: Fleet) -> None:
    world.apply(keyed())
    world.reconcile("bastion")
    assert len(hosts(world)) == 2
    body = keyed()
    body["spec"]["sshKey"]["hosts"] = [{"address": "a:22"}]  # type: ignore[index]
    world.apply(body)
    world.reconcile("bastion")
    assert hosts(world) == [("a:22", "v1", "Verified")]
    world.apply(managed_secret("bastion", type="SSHKey", sshKey={"algorithm": "ed25519"}))
    world.reconcile("bastion")
    assert "hosts" not in world.status("bastion")
