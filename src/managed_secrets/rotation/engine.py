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
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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
from managed_secrets.errors import Fenced, ManagedSecretsError, RotationInProgress, safe_message
from managed_secrets.rotation.strategy import (
    Reporter,
    RotationContext,
    RotationStepFailed,
    RotationStrategy,
    SecretReader,
)
from managed_secrets.store import Loaded, RecordKey, SecretVault

log = logging.getLogger(__name__)

FAILPOINTS = ("after-create", "after-set", "after-test", "during-finish")


def failpoint(name: str) -> None:
    """Exit the process here if ``MSO_FAILPOINT`` names this point (crash tests; never set in production)."""
    if os.environ.get("MSO_FAILPOINT") == name:
        log.warning("failpoint %s reached: exiting as if the process had crashed", name)
        os._exit(86)


@dataclass(frozen=True)
class Backoff:
    """The one retry policy: ``base_seconds`` doubled per attempt, never more than ``max_seconds``, less up to
    ``jitter`` (a fraction) at random so that objects that failed together do not retry together."""

    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempts: int) -> dt.timedelta:
        full = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return dt.timedelta(seconds=full * (1.0 - self.jitter * self.rng.random()))


Attributes = Callable[[Mapping[str, str]], Mapping[str, str]]


class RotationEngine:
    """Runs the four steps against the vault. Every method takes the record the caller holds (``Loaded``)
    and returns the record as now stored, so a rotation reads the store once and writes once per step."""

    def __init__(self, vault: SecretVault, backoff: Backoff) -> None:
        self.vault = vault
        self.backoff = backoff

    def context(
        self,
        record: SecretRecord,
        version_id: str,
        config: Mapping[str, object],
        read_secret: SecretReader,
        report: Reporter | None = None,
    ) -> RotationContext:
        current = self.vault.open(record, record.current) if record.current else None
        previous = self.vault.open(record, record.previous) if record.previous else None
        return RotationContext(
            secret_id=record.secret_id,
            version_id=version_id,
            config=config,
            current=current,
            previous=previous,
            current_id=record.current.id if record.current else None,
            read_secret=read_secret,
            report=report if report is not None else _no_report,
        )

    def begin(
        self,
        key: RecordKey,
        loaded: Loaded,
        strategy: RotationStrategy,
        config: Mapping[str, object],
        *,
        request_id: str,
        read_secret: SecretReader,
        key_id: str | None = None,
        attributes: Attributes | None = None,
        finish_with_limit: int | None = None,
        fence: Callable[[], None] = lambda: None,
        report: Reporter | None = None,
    ) -> Loaded:
        """Step *create*. Refuses (``RotationInProgress``) while another request's version is pending.

        ``attributes`` (e.g. marking the request handled, clearing a recorded create failure) are written
        in the same compare-and-swap as the pending version. With ``finish_with_limit`` (for a
        ``local_only`` strategy) set, test and finish run in memory first and the same write makes the new
        version current (pruned to that version limit): one store write for the whole rotation, and nothing
        written if a step raises. ``fence`` is called before each step that reaches outside (it raises
        ``Fenced`` when this replica may no longer act on the object).
        """
        record = loaded.record
        if record.current is None:
            raise ManagedSecretsError(f"{key} has no current version to rotate yet")
        pending = record.pending
        if pending is not None and pending.request_id != request_id:
            step = record.rotation.step.value if record.rotation else "?"
            raise RotationInProgress(
                f"rotation request {request_id!r} refused: version {pending.id} of {key} is already being "
                f"rotated (request {pending.request_id!r}, step {step})"
            )
        if record.version_for_request(request_id) is not None:
            return loaded  # created before (resume) or already finished
        ctx = self.context(record, self.vault.next_version_id(record), config, read_secret, report)
        fence()
        value = strategy.create(ctx)
        if finish_with_limit is not None:
            for step_call in (strategy.set, strategy.test, strategy.finish):
                fence()
                step_call(ctx, value)
        fingerprint = self.vault.fingerprint(value)

        def change(r: SecretRecord | None) -> SecretRecord:
            r = _req(r)
            version_id = self.vault.next_version_id(r)
            sealed = self.vault.seal(r.secret_id, version_id, value, key_id)
            updated, _ = begin_rotation(
                r, request_id=request_id, fingerprint=fingerprint, sealed=sealed, now=self.vault.clock.now()
            )
            if finish_with_limit is None:
                return updated
            return apply_prune(finish_rotation(updated, version_id), finish_with_limit)

        result = self._change(key, change, loaded, attributes)
        failpoint("after-create" if finish_with_limit is None else "during-finish")
        return result

    def advance(
        self,
        key: RecordKey,
        loaded: Loaded,
        strategy: RotationStrategy,
        config: Mapping[str, object],
        *,
        read_secret: SecretReader,
        version_limit: int,
        fence: Callable[[], None] = lambda: None,
        report: Reporter | None = None,
    ) -> tuple[Loaded, bool]:
        """Runs the remaining steps of the rotation in flight; returns the record and whether it finished.

        A failing step is recorded (with the time of the next attempt) and re-raised as ``RotationFailed``
        carrying the record as stored after the failure.
        """
        record = loaded.record
        progress = record.rotation
        if progress is None or record.pending is None:
            return loaded, False
        version_id = progress.version_id
        pending = self.vault.open(record, record.version(version_id))
        ctx = self.context(record, version_id, config, read_secret, report)
        step = progress.step
        try:
            if step is RotationStep.CREATE or step is RotationStep.SET:
                fence()
                strategy.set(ctx, pending)
                loaded = self._step(key, loaded, version_id, RotationStep.TEST)
                failpoint("after-set")
                step = RotationStep.TEST
            if step is RotationStep.TEST:
                fence()
                strategy.test(ctx, pending)
                loaded = self._step(key, loaded, version_id, RotationStep.FINISH)
                failpoint("after-test")
                step = RotationStep.FINISH
            fence()
            strategy.finish(ctx, pending)
            loaded = self._change(
                key, lambda r: apply_prune(finish_rotation(_req(r), version_id), version_limit), loaded
            )
            failpoint("during-finish")
            return loaded, True
        except Fenced:
            raise  # not a failure of the step: another replica takes the rotation over where it stands
        except Exception as e:
            after = self._fail(key, loaded, version_id, step, e)
            raise RotationFailed(after, e) from e

    def _fail(
        self, key: RecordKey, loaded: Loaded, version_id: str, step: RotationStep, error: Exception
    ) -> Loaded | None:
        reason = describe(step, error)
        now = self.vault.clock.now()

        def change(r: SecretRecord | None) -> SecretRecord:
            r = _req(r)
            attempts = (r.rotation.attempts if r.rotation else 0) + 1
            return record_rotation_failure(r, version_id, reason, now, now + self.backoff.delay(attempts))

        try:
            return self._change(key, change, loaded)
        except ManagedSecretsError as e:
            log.warning("could not record the failed rotation of %s: %s", key, safe_message(e))
            return None

    def _step(self, key: RecordKey, loaded: Loaded, version_id: str, step: RotationStep) -> Loaded:
        now = self.vault.clock.now()
        return self._change(key, lambda r: record_rotation_step(_req(r), version_id, step, now), loaded)

    def _change(
        self,
        key: RecordKey,
        change: Callable[[SecretRecord | None], SecretRecord | None],
        known: Loaded,
        attributes: Attributes | None = None,
    ) -> Loaded:
        result = self.vault.change(key, change, attributes=attributes, known=known)
        if result is None:
            raise ManagedSecretsError(f"the stored record of {key} disappeared during a rotation")
        return result


class RotationFailed(ManagedSecretsError):
    """A rotation step failed; carries the record as stored after the failure was recorded (if it was)."""

    def __init__(self, loaded: Loaded | None, cause: Exception) -> None:
        self.loaded = loaded
        self.cause = cause
        super().__init__(safe_message(cause))


def describe(step: RotationStep | str, error: BaseException) -> str:
    """A failure reason safe for status and Events (strategy messages are written never to hold values)."""
    if isinstance(error, RotationStepFailed):
        return f"{error.reason}: {error}"
    return f"{getattr(step, 'value', step)} step failed: {safe_message(error)}"


def _no_report(_report: object) -> None:
    """A rotation nobody asked about its targets."""


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
