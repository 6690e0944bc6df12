"""Projection: render the ACSCurrent value, apply it to the target Secret, report drift, roll restart targets."""

from __future__ import annotations

from managed_secrets.projection import ApplyAction, apply_projection, delete_projection, render
from managed_secrets.projection.restart import RestartTarget, restart_targets
from managed_secrets.service.context import Pass

__all__ = ["project"]

_REPORTED = (ApplyAction.DRIFT_REPORTED, ApplyAction.MISSING_REPORTED)


def project(p: Pass) -> None:
    record = p.record
    assert record is not None and record.current is not None
    current = record.current
    spec, resource, outcome = p.spec, p.resource, p.outcome
    vault, cluster = p.deps.vault, p.deps.cluster
    previous = record.previous if spec.target.include_previous else None
    desired = render(
        owner_namespace=resource.namespace,
        owner_name=resource.name,
        target=spec.target,
        current=p.open(current),
        current_version=current.id,
        previous=p.open(previous) if previous else None,
        previous_version=previous.id if previous else None,
        hash_key=vault.hash_key,
    )
    owner = resource.owner
    old_name = str(resource.status.get("projectedSecret") or "")
    p.fence()
    with p.deps.metrics.time_projection():
        listed = p.deps.listed()
        applied = apply_projection(
            cluster,
            desired,
            spec.target,
            owner,
            vault.hash_key,
            previously_projected=old_name == desired.name,
            # A first projection the projected-Secret watch does not list is created without a read.
            assume_absent=not old_name
            and listed is not None
            and listed.projected(desired.namespace, desired.name) is None,
        )
    action = applied.action
    outcome.projection = action
    outcome.projected_revision = applied.resource_version or None
    moved = bool(old_name) and old_name != desired.name and spec.target.creation_policy == "Owner"
    if moved and delete_projection(cluster, resource.namespace, old_name, owner):
        p.normal("ProjectionMoved", f"deleted the old projected Secret {old_name}")
    if action is ApplyAction.RESTORED or (
        # A new version is told by its own Event (Rotated, VersionCreated); a re-render by this one.
        action is ApplyAction.UPDATED and outcome.rotated is None and outcome.new_version is None
    ):
        p.normal("Projected", f"Secret {desired.name} now holds version {current.id} ({action})")
    elif action is ApplyAction.DRIFT_REVERTED:
        p.normal("DriftReverted", f"Secret {desired.name} was edited; restored version {current.id}")
    if action in _REPORTED:
        what = "was edited" if action is ApplyAction.DRIFT_REPORTED else "was deleted"
        outcome.add("Drifted", "True", "DriftDetected", f"Secret {desired.name} {what}; driftPolicy is Report")
    else:
        outcome.add("Drifted", "False", "InSync", f"Secret {desired.name} is in sync")
    targets = [RestartTarget(t["kind"], t["name"]) for t in spec.raw.get("restartTargets") or []]
    if targets and action not in _REPORTED:
        p.fence()
        rolled = restart_targets(
            cluster, resource.namespace, targets, resource.name, current.id, first_version=current.number == 1
        )
        for target in rolled:
            p.normal("RestartedTarget", f"{target.kind} {target.name} rolled for version {current.id}")
    outcome.add("Projected", "True", "Projected", f"Secret {desired.name} holds version {current.id}")
    outcome.add("Ready", "True", "Ready", f"version {current.id} is current and projected")
