"""The four-step rotation engine: create → set → test → finish, each step persisted before the next.

- *create* stores the new value as ``ACSPending`` under a new version id before any side effect, so a
  crash anywhere later resumes with the same version id and the same value.
- *set* and *test* call the strategy; the step reached is recorded in the store after each.
- *finish* moves ``ACSCurrent``/``ACSPrevious`` in one compare-and-swap write; projection and restart
  targets follow from the reconcile that runs next (and converge after a crash, since they compare state).

A failing step records the failure (attempts, reason, next attempt with exponential backoff) and leaves
``ACSCurrent`` untouched. ``MSO_FAILPOINT`` (tests only) makes the process exit at a named step boundary.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from managed_secrets.domain import (
    RotationStep,
    SecretRecord,
    SecretValue,
    apply_prune,
    begin_rotation,
    finish_rotation,
    record_rotation_failure,
    record_rotation_step,
)
from managed_secrets.errors import ManagedSecretsError, RotationInProgress
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, RotationStrategy, get_strategy
from managed_secrets.store import RecordKey, SecretVault

log = logging.getLogger(__name__)

FAILPOINTS = ("after-create", "after-set", "after-test", "during-finish")


def failpoint(name: str) -> None:
    """Exit the process here if ``MSO_FAILPOINT`` names this point (crash tests; never set in production)."""
    if os.environ.get("MSO_FAILPOINT") == name:
        log.warning("failpoint %s reached: exiting as if the process had crashed", name)
        os._exit(86)


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def delay(self, attempts: int) -> dt.timedelta:
        return dt.timedelta(seconds=min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))


def strategy_name(spec: Mapping[str, Any]) -> str | None:
    for name in ("generate", "database", "sshKey", "external"):
        if spec.get(name) is not None:
            return name
    return None


class RotationEngine:
    def __init__(self, vault: SecretVault, backoff: Backoff) -> None:
        self.vault = vault
        self.backoff = backoff

    def context(
        self,
        record: SecretRecord,
        version_id: str,
        config: Mapping[str, Any],
        read_secret: Any,
    ) -> RotationContext:
        current = self.vault.open(record, record.current) if record.current else None
        previous = self.vault.open(record, record.previous) if record.previous else None
        return RotationContext(
            secret_id=record.secret_id,
            version_id=version_id,
            config=config,
            current=current,
            previous=previous,
            read_secret=read_secret,
        )

    def begin(
        self,
        key: RecordKey,
        strategy: RotationStrategy,
        config: Mapping[str, Any],
        request_id: str,
        read_secret: Any,
        *,
        key_id: str | None = None,
    ) -> SecretRecord:
        """Step *create*. Refuses (``RotationInProgress``) while another request's version is pending."""
        loaded = self.vault.load(key)
        if loaded is None or loaded.record.current is None:
            raise ManagedSecretsError(f"{key} has no current version to rotate yet")
        record = loaded.record
        pending = record.pending
        if pending is not None and pending.request_id != request_id:
            step = record.rotation.step.value if record.rotation else "?"
            raise RotationInProgress(
                f"rotation request {request_id!r} refused: version {pending.id} of {key} is already being "
                f"rotated (request {pending.request_id!r}, step {step})"
            )
        if record.version_for_request(request_id) is not None:
            return record  # created before (resume) or already finished
        ctx = self.context(record, self.vault.next_version_id(record), config, read_secret)
        value = strategy.create(ctx)
        fingerprint = self.vault.fingerprint(value)

        def change(r: SecretRecord | None) -> SecretRecord:
            assert r is not None
            version_id = self.vault.next_version_id(r)
            sealed = self.vault.seal(r.secret_id, version_id, value, key_id)
            updated, _ = begin_rotation(
                r, request_id=request_id, fingerprint=fingerprint, sealed=sealed, now=self.vault.clock.now()
            )
            return updated

        record = self._update(key, change)
        failpoint("after-create")
        return record

    def advance(
        self,
        key: RecordKey,
        strategy: RotationStrategy,
        config: Mapping[str, Any],
        read_secret: Any,
        version_limit: int,
    ) -> tuple[SecretRecord, bool]:
        """Runs the remaining steps of the rotation in flight; returns the record and whether it finished.

        A failing step is recorded (with the time of the next attempt) and re-raised.
        """
        loaded = self.vault.load(key)
        assert loaded is not None
        record = loaded.record
        progress = record.rotation
        if progress is None or record.pending is None:
            return record, False
        version_id = progress.version_id
        pending_version = record.version(version_id)
        pending = self.vault.open(record, pending_version)
        ctx = self.context(record, version_id, config, read_secret)
        step = progress.step
        try:
            if step is RotationStep.CREATE or step is RotationStep.SET:
                strategy.set(ctx, pending)
                record = self._step(key, version_id, RotationStep.TEST)
                failpoint("after-set")
                step = RotationStep.TEST
            if step is RotationStep.TEST:
                strategy.test(ctx, pending)
                record = self._step(key, version_id, RotationStep.FINISH)
                failpoint("after-test")
                step = RotationStep.FINISH
            if step is RotationStep.FINISH:
                strategy.finish(ctx, pending)
                record = self._update(
                    key, lambda r: apply_prune(finish_rotation(_req(r), version_id), version_limit)
                )
                failpoint("during-finish")
                return record, True
        except Exception as e:
            self._fail(key, version_id, step, e)
            raise
        return record, False

    def _fail(self, key: RecordKey, version_id: str, step: RotationStep, error: Exception) -> None:
        reason = describe(step, error)
        now = self.vault.clock.now()

        def change(r: SecretRecord | None) -> SecretRecord:
            r = _req(r)
            attempts = (r.rotation.attempts if r.rotation else 0) + 1
            return record_rotation_failure(r, version_id, reason, now, now + self.backoff.delay(attempts))

        try:
            self._update(key, change)
        except ManagedSecretsError as e:
            log.warning("could not record the failed rotation of %s: %s", key, e)

    def _step(self, key: RecordKey, version_id: str, step: RotationStep) -> SecretRecord:
        now = self.vault.clock.now()
        return self._update(key, lambda r: record_rotation_step(_req(r), version_id, step, now))

    def _update(self, key: RecordKey, change: Any) -> SecretRecord:
        record = self.vault.update(key, change)
        assert record is not None
        return record


def describe(step: RotationStep | str, error: BaseException) -> str:
    """A failure reason safe for status and Events (strategy messages are written never to hold values)."""
    from managed_secrets.service.reconcile import safe_message

    if isinstance(error, RotationStepFailed):
        return f"{error.reason}: {error}"
    return f"{getattr(step, 'value', step)} step failed: {safe_message(error)}"


def _req(record: SecretRecord | None) -> SecretRecord:
    if record is None:
        raise ManagedSecretsError("the stored record disappeared during a rotation")
    return record


def initial_value(strategy: RotationStrategy, ctx: RotationContext) -> SecretValue:
    """The first value of a new ManagedSecret: made, applied and tested before it is stored as ACSCurrent."""
    value = strategy.initial(ctx)
    strategy.set(ctx, value)
    strategy.test(ctx, value)
    return value


def strategy_for(spec: Mapping[str, Any]) -> tuple[RotationStrategy, Mapping[str, Any]] | None:
    name = strategy_name(spec)
    if name is None:
        return None
    from managed_secrets.rotation import strategies  # registers the built-in strategies

    strategies.load_all()
    return get_strategy(name), spec[name]
