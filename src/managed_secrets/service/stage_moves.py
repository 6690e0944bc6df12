"""UpdateSecretVersionStage by annotation (``kubectl msecret rollback`` / ``label``).

The annotation holds a ``StageMoveRequest`` (``{"label": "ACSCurrent", "version": "v3", "id": "..."}``);
each request id is applied once, remembered in the store attributes with the time of the move (a rollback
restarts the rotation schedule from then).

For a strategy with target systems (``sshKey.hosts``), ``ACSCurrent`` moves onto a version only once every
target accepts it: its *set* and *test* steps run first for that version (the rolled-back key is put back in
``authorized_keys`` and logged in with). A target that fails refuses the move, naming it; nothing is removed
from the targets here (the next rotation's *finish* keeps the new current and previous keys only).
"""

from __future__ import annotations

import hashlib
import logging

from managed_secrets.domain import move_label
from managed_secrets.domain.clock import iso
from managed_secrets.domain.labels import StageLabel
from managed_secrets.errors import IntegrityError, InvalidRequest
from managed_secrets.names import LAST_STAGE_MOVE, LAST_STAGE_MOVE_TIME, StageMoveRequest
from managed_secrets.rotation.strategies import strategy_for
from managed_secrets.rotation.strategy import RotationStepFailed
from managed_secrets.service.context import Pass

__all__ = ["move_stage"]

log = logging.getLogger(__name__)


def move_stage(p: Pass) -> None:
    raw = p.resource.stage_move_request
    if not raw:
        return
    try:
        request = StageMoveRequest.decode(raw)
    except ValueError as e:
        # Said once per distinct annotation, not once per reconcile.
        seen = "invalid:" + hashlib.sha256(raw.encode()).hexdigest()[:16]
        if p.attributes.get(LAST_STAGE_MOVE) != seen:
            p.keep(p.deps.vault.change(p.key, lambda r: r, attributes=lambda a: {**a, LAST_STAGE_MOVE: seen}))
            p.warning("InvalidStageMove", str(e))
        return
    if p.attributes.get(LAST_STAGE_MOVE) == request.id:
        return
    vault = p.deps.vault
    now = iso(p.deps.now())
    label, version = request.label, request.version
    try:
        _check_opens(p, version)
        if label == StageLabel.CURRENT:
            _targets_accept(p, version)
        p.keep(
            vault.change(
                p.key,
                lambda r: move_label(r, label, version) if r else r,
                attributes=lambda a: {**a, LAST_STAGE_MOVE: request.id, LAST_STAGE_MOVE_TIME: now},
                known=p.loaded,
            )
        )
    except (InvalidRequest, IntegrityError, RotationStepFailed) as e:
        p.keep(vault.change(p.key, lambda r: r, attributes=lambda a: {**a, LAST_STAGE_MOVE: request.id}))
        p.warning("StageMoveRefused", f"moving {label} to {version} refused: {e}")
        return
    p.normal("StageMoved", f"{label} moved to version {version}")
    log.info("moved %s of %s to %s", label, p.key, version)


def _check_opens(p: Pass, version_id: str) -> None:
    """A label never moves onto a version that does not decrypt (tampered or sealed under a lost key)."""
    record = p.record
    if record is None:
        return
    found = record.find_version(version_id)
    if found is not None:
        p.open(found)


def _targets_accept(p: Pass, version_id: str) -> None:
    """Runs *set* and *test* of ``version_id`` on the strategy's targets (if any) before it becomes current."""
    record = p.record
    found = strategy_for(p.spec.raw)
    if record is None or found is None or (record.current is not None and record.current.id == version_id):
        return
    strategy, config = found
    version = record.find_version(version_id)
    if version is None or not strategy.targets(config):
        return  # an unknown version is refused by move_label, with its own message
    value = p.open(version)
    ctx = p.deps.engine.context(record, version_id, config, p.read_secret, p.report)
    p.fence()
    strategy.set(ctx, value)
    p.fence()
    strategy.test(ctx, value)
