"""What can be done to a secret: store a value, rotate, move and remove labels, prune.

Every operation is a pure function from a record to a new record. On any error it raises (an
``InvalidRequest`` subclass, naming the secret, version and label involved) and, records being immutable, the
caller's record is untouched. Operations are idempotent: repeating one with the same request or version id
returns the record unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime

from managed_secrets.domain.labels import MAX_STAGE_LABELS, StageLabel, show_label, validate_label
from managed_secrets.domain.model import (
    RotationProgress,
    RotationStep,
    SecretRecord,
    Version,
    version_id_for,
)
from managed_secrets.errors import (
    CorruptRecord,
    IdempotencyConflict,
    InvalidRequest,
    InvalidStageLabel,
    LabelLimitExceeded,
    ProtectedLabel,
    RotationInProgress,
)

__all__ = [
    "MAX_ERROR_LENGTH",
    "MAX_REQUEST_ID_LENGTH",
    "abandon_rotation",
    "apply_prune",
    "begin_rotation",
    "check_invariants",
    "finish_rotation",
    "invariant_violations",
    "move_label",
    "prune_unlabelled_versions",
    "put_value",
    "record_rotation_failure",
    "record_rotation_step",
    "remove_label",
]

CURRENT = StageLabel.CURRENT.value
PREVIOUS = StageLabel.PREVIOUS.value
PENDING = StageLabel.PENDING.value

MAX_REQUEST_ID_LENGTH = 253
MAX_ERROR_LENGTH = 1024
"""``last_error`` is cut to this many characters: it ends up in the resource's status."""


# --- helpers -------------------------------------------------------------------------------------------


def _check_request_id(secret: SecretRecord, request_id: object) -> str:
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequest(f"secret {secret.secret_id}: request id must be a non-empty string")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidRequest(
            f"secret {secret.secret_id}: request id is longer than {MAX_REQUEST_ID_LENGTH} characters"
        )
    return request_id


def _relabel(versions: Iterable[Version], stage_map: dict[str, str]) -> tuple[Version, ...]:
    """``versions`` with their stages rebuilt from ``stage_map`` (label -> version id)."""
    by_version: dict[str, set[str]] = {}
    for label, version_id in stage_map.items():
        by_version.setdefault(version_id, set()).add(label)
    relabelled = []
    for version in versions:
        stages = frozenset(by_version.get(version.id, ()))
        relabelled.append(version if stages == version.stages else dataclasses.replace(version, stages=stages))
    return tuple(relabelled)


def _check_label_limit(secret: SecretRecord, stage_map: dict[str, str]) -> None:
    before = secret.labels()
    after = set(stage_map)
    if len(after) > MAX_STAGE_LABELS and after - before:
        added = ", ".join(sorted(after - before))
        raise LabelLimitExceeded(
            f"secret {secret.secret_id}: adding stage label {added} would make {len(after)} distinct labels; "
            f"at most {MAX_STAGE_LABELS} are allowed (remove a custom label first)"
        )


def _with_stages(
    secret: SecretRecord,
    stage_map: dict[str, str],
    *,
    rotation: RotationProgress | None,
    new_version: Version | None = None,
) -> SecretRecord:
    _check_label_limit(secret, stage_map)
    versions = secret.versions if new_version is None else (*secret.versions, new_version)
    next_number = secret.next_version_number if new_version is None else new_version.number + 1
    return dataclasses.replace(
        secret, versions=_relabel(versions, stage_map), next_version_number=next_number, rotation=rotation
    )


def _rotation_of(secret: SecretRecord, version_id: str) -> RotationProgress:
    secret.version(version_id)
    progress = secret.rotation
    if progress is None:
        raise InvalidRequest(f"secret {secret.secret_id}: no rotation is in progress (asked about {version_id})")
    if progress.version_id != version_id:
        raise RotationInProgress(
            f"secret {secret.secret_id}: the rotation in progress is of version {progress.version_id}, "
            f"not {show_label(version_id)}"
        )
    return progress


def _pending_conflict(secret: SecretRecord, pending: Version) -> RotationInProgress:
    progress = secret.rotation
    how = (
        f"rotation request {progress.request_id!r} is at step {progress.step.value}"
        if progress is not None
        else "no rotation is running; the label was placed by hand"
    )
    return RotationInProgress(
        f"secret {secret.secret_id}: rotation in progress: version {pending.id} carries {PENDING} ({how}); "
        "finish or abandon it first"
    )


# --- storing values ------------------------------------------------------------------------------------


def _resolve_put_stages(secret: SecretRecord, stages: Iterable[str] | None) -> frozenset[str]:
    sid = secret.secret_id
    if stages is None:
        wanted = {CURRENT}
    else:
        if isinstance(stages, str):
            raise TypeError("stages must be a collection of labels, not one string")
        wanted = {validate_label(label, secret.secret_type, secret_id=sid) for label in stages}
        if not wanted:
            raise InvalidStageLabel(f"secret {sid}: a new version needs at least one stage label")
    if not secret.versions:
        # As in AWS: the first version of a secret is always its current one.
        wanted.add(CURRENT)
    if CURRENT in wanted and PREVIOUS in wanted:
        raise InvalidStageLabel(
            f"secret {sid}: the new version cannot carry both {CURRENT} and {PREVIOUS} "
            f"({PREVIOUS} goes to the version that was {CURRENT})"
        )
    if PENDING in wanted and secret.rotation is not None:
        pending = secret.pending
        assert pending is not None  # check_invariants: rotation progress always has its pending version
        raise _pending_conflict(secret, pending)
    return frozenset(wanted)


def _next_version(
    secret: SecretRecord, *, fingerprint: str, sealed: bytes, now: datetime, request_id: str | None
) -> Version:
    """An unlabelled version under the secret's next (never used) number."""
    number = secret.next_version_number
    return Version(
        id=version_id_for(number),
        number=number,
        created=now,
        fingerprint=fingerprint,
        sealed=sealed,
        request_id=request_id,
    )


def put_value(
    secret: SecretRecord,
    *,
    fingerprint: str,
    sealed: bytes,
    now: datetime,
    request_id: str | None = None,
    stages: Iterable[str] | None = None,
) -> tuple[SecretRecord, Version]:
    """Store a new value (AWS PutSecretValue). Returns the new record and the version holding the value.

    The new version gets ``stages`` (default: ACSCurrent; the first version always gets ACSCurrent). When it
    takes ACSCurrent, the version that had ACSCurrent gets ACSPrevious. Other labels, ACSPending included,
    stay where they are.

    Idempotency: a ``request_id`` already used returns its version unchanged if ``fingerprint`` matches, and
    raises ``IdempotencyConflict`` if not (a pruned version's request id is forgotten). Without a request id,
    a value equal to the current one (same fingerprint) whose labels the current version already has is a
    no-op returning the current version: a re-sync of an unchanged source creates no version.
    """
    if request_id is not None:
        request_id = _check_request_id(secret, request_id)
        earlier = secret.version_for_request(request_id)
        if earlier is not None:
            if earlier.fingerprint != fingerprint:
                raise IdempotencyConflict(
                    f"secret {secret.secret_id}: request {request_id!r} already stored version {earlier.id} "
                    "with a different value"
                )
            return secret, earlier
    wanted = _resolve_put_stages(secret, stages)
    current = secret.current
    if (
        request_id is None
        and current is not None
        and current.fingerprint == fingerprint
        and wanted <= current.stages
    ):
        return secret, current
    version = _next_version(secret, fingerprint=fingerprint, sealed=sealed, now=now, request_id=request_id)
    stage_map = secret.stage_map()
    if CURRENT in wanted and current is not None:
        stage_map[PREVIOUS] = current.id
    for label in wanted:
        stage_map[label] = version.id
    updated = _with_stages(secret, stage_map, rotation=secret.rotation, new_version=version)
    return updated, updated.versions[-1]


# --- rotation ------------------------------------------------------------------------------------------


def begin_rotation(
    secret: SecretRecord, *, request_id: str, fingerprint: str, sealed: bytes, now: datetime
) -> tuple[SecretRecord, Version]:
    """Step *create*: store the new value as a version carrying ACSPending only, and start tracking progress.

    Idempotent per ``request_id``: if that request already created a version, the record is returned
    unchanged with that version. It is the stored value that wins: the new ``fingerprint``/``sealed`` are
    discarded (a generator makes a different value on every call, so a resumed rotation must use the stored
    one). If the returned version no longer carries ACSPending, that rotation has already finished or been
    abandoned and no new one is started.

    Raises ``RotationInProgress`` (naming the pending version) if another version carries ACSPending, and
    ``InvalidRequest`` if the secret has no current value to rotate from.
    """
    sid = secret.secret_id
    request_id = _check_request_id(secret, request_id)
    earlier = secret.version_for_request(request_id)
    if earlier is not None:
        if earlier.has(PENDING) and secret.rotation is None:
            # ACSPending was put back on this version by hand: resume its rotation from the start.
            progress = RotationProgress(earlier.id, request_id, RotationStep.SET, started=now, updated=now)
            return dataclasses.replace(secret, rotation=progress), earlier
        return secret, earlier
    pending = secret.pending
    if pending is not None:
        raise _pending_conflict(secret, pending)
    if secret.current is None:
        raise InvalidRequest(f"secret {sid} has no {CURRENT} version to rotate; store a value first")
    version = _next_version(secret, fingerprint=fingerprint, sealed=sealed, now=now, request_id=request_id)
    stage_map = secret.stage_map()
    stage_map[PENDING] = version.id
    progress = RotationProgress(version.id, request_id, RotationStep.SET, started=now, updated=now)
    updated = _with_stages(secret, stage_map, rotation=progress, new_version=version)
    return updated, updated.versions[-1]


def record_rotation_step(
    secret: SecretRecord, version_id: str, step: RotationStep | str, now: datetime
) -> SecretRecord:
    """The rotation of ``version_id`` has reached ``step`` (the next step to run); earlier steps are done.

    Resets the failure count. Recording the step it is already at is a no-op; going back is refused.
    """
    progress = _rotation_of(secret, version_id)
    try:
        step = RotationStep(step)
    except ValueError:
        raise InvalidRequest(f"secret {secret.secret_id}: unknown rotation step {show_label(step)}") from None
    if step is progress.step:
        return secret
    if step.order < progress.step.order:
        raise InvalidRequest(
            f"secret {secret.secret_id}: the rotation of {version_id} is at step {progress.step.value}; "
            f"it cannot go back to {step.value}"
        )
    advanced = dataclasses.replace(
        progress, step=step, attempts=0, last_error=None, next_attempt=None, updated=now
    )
    return dataclasses.replace(secret, rotation=advanced)


def record_rotation_failure(
    secret: SecretRecord, version_id: str, reason: str, now: datetime, next_attempt: datetime | None = None
) -> SecretRecord:
    """The current step of the rotation of ``version_id`` failed: count it and remember why and when to retry.

    ``reason`` is the caller's text (which must never contain a value); it is cut to ``MAX_ERROR_LENGTH``.
    ACSCurrent is untouched.
    """
    progress = _rotation_of(secret, version_id)
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a string, got {type(reason).__name__}")
    if len(reason) > MAX_ERROR_LENGTH:
        reason = reason[: MAX_ERROR_LENGTH - 3] + "..."
    failed = dataclasses.replace(
        progress, attempts=progress.attempts + 1, last_error=reason, next_attempt=next_attempt, updated=now
    )
    return dataclasses.replace(secret, rotation=failed)


def finish_rotation(secret: SecretRecord, version_id: str) -> SecretRecord:
    """Step *finish*: ACSCurrent moves to ``version_id``, ACSPrevious to the old current, ACSPending goes.

    Repeating it once done (the version is current and no longer pending) is a no-op.
    """
    version = secret.version(version_id)
    if not version.has(PENDING):
        if version.has(CURRENT):
            return secret
        raise InvalidRequest(
            f"secret {secret.secret_id}: version {version_id} does not carry {PENDING}; "
            "there is no rotation of it to finish"
        )
    stage_map = secret.stage_map()
    current = secret.current
    if current is not None and current.id != version_id:
        stage_map[PREVIOUS] = current.id
    stage_map[CURRENT] = version_id
    del stage_map[PENDING]
    return _with_stages(secret, stage_map, rotation=None)


def abandon_rotation(secret: SecretRecord, version_id: str) -> SecretRecord:
    """Give up the rotation of ``version_id``: ACSPending is removed (the version becomes prunable).

    A version that does not carry ACSPending (already abandoned, or finished) is left as it is.
    """
    version = secret.version(version_id)
    if not version.has(PENDING):
        return secret
    stage_map = secret.stage_map()
    del stage_map[PENDING]
    return _with_stages(secret, stage_map, rotation=None)


# --- labels --------------------------------------------------------------------------------------------


def move_label(
    secret: SecretRecord, label: str, to_version_id: str, *, from_version_id: str | None = None
) -> SecretRecord:
    """Attach ``label`` to ``to_version_id``, taking it from whichever version had it (UpdateSecretVersionStage).

    Moving ACSCurrent also moves ACSPrevious to the version that had ACSCurrent: moving ACSCurrent back to an
    older version is a rollback. ``from_version_id``, if given, must be the version holding the label. A
    label already on the target is a no-op. ACSPrevious cannot go on the current version; ACSPending cannot
    be moved while a rotation is in progress (finish or abandon it first).
    """
    sid = secret.secret_id
    label = validate_label(label, secret.secret_type, secret_id=sid)
    target = secret.version(to_version_id)
    source = secret.version(from_version_id) if from_version_id is not None else None
    if target.has(label):
        return secret
    holder = secret.version_with(label)
    if source is not None and not source.has(label):
        where = f"it is on {holder.id}" if holder is not None else "no version carries it"
        raise InvalidRequest(f"secret {sid}: stage label {label} is not on version {source.id} ({where})")
    stage_map = secret.stage_map()
    if label == CURRENT:
        if holder is not None:
            stage_map[PREVIOUS] = holder.id
    elif label == PREVIOUS:
        if target.has(CURRENT):
            raise InvalidRequest(
                f"secret {sid}: {PREVIOUS} cannot be moved to version {target.id}, which carries {CURRENT}"
            )
    elif label == PENDING and secret.rotation is not None:
        assert holder is not None  # check_invariants: rotation progress always has its pending version
        raise _pending_conflict(secret, holder)
    stage_map[label] = target.id
    return _with_stages(secret, stage_map, rotation=secret.rotation)


def remove_label(secret: SecretRecord, label: str, from_version_id: str) -> SecretRecord:
    """Detach ``label`` from ``from_version_id``. ACSCurrent and ACSPrevious can only be moved: ``ProtectedLabel``.

    Removing ACSPending ends the rotation in progress, like ``abandon_rotation``. A label that no version
    carries any more is a no-op (a repeated removal); one carried by another version is refused.
    """
    sid = secret.secret_id
    label = validate_label(label, secret.secret_type, secret_id=sid)
    if label in (CURRENT, PREVIOUS):
        raise ProtectedLabel(f"secret {sid}: stage label {label} cannot be removed, only moved to another version")
    version = secret.version(from_version_id)
    holder = secret.version_with(label)
    if holder is None:
        return secret
    if holder.id != version.id:
        raise InvalidRequest(f"secret {sid}: stage label {label} is on version {holder.id}, not {version.id}")
    stage_map = secret.stage_map()
    del stage_map[label]
    return _with_stages(secret, stage_map, rotation=None if label == PENDING else secret.rotation)


# --- pruning -------------------------------------------------------------------------------------------


def _check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidRequest(f"version limit must be an integer of at least 1, got {limit!r}")
    return limit


def prune_unlabelled_versions(versions: Sequence[Version], limit: int) -> tuple[str, ...]:
    """Ids of the versions to delete so that at most ``limit`` remain, oldest first.

    Only versions without any label are ever chosen, so more than ``limit`` may remain.
    """
    limit = _check_limit(limit)
    excess = len(versions) - limit
    if excess <= 0:
        return ()
    unlabelled = sorted((v for v in versions if not v.stages), key=lambda v: v.number)
    return tuple(v.id for v in unlabelled[:excess])


def apply_prune(secret: SecretRecord, limit: int) -> SecretRecord:
    """``secret`` without the versions ``prune_unlabelled_versions`` picks. Version numbers are not reused."""
    doomed = set(prune_unlabelled_versions(secret.versions, limit))
    if not doomed:
        return secret
    return dataclasses.replace(secret, versions=tuple(v for v in secret.versions if v.id not in doomed))


# --- invariants ----------------------------------------------------------------------------------------


def invariant_violations(secret: SecretRecord) -> list[str]:
    """Every rule of the model that ``secret`` breaks, described; empty if it is sound."""
    problems: list[str] = []
    if secret.next_version_number < 1:
        problems.append(f"next version number {secret.next_version_number} is below 1")
    last = 0
    request_ids: dict[str, str] = {}
    holders: dict[str, list[str]] = {}
    for version in secret.versions:
        if version.number < 1 or version.number <= last:
            problems.append(f"version {version.id} has number {version.number}, not above {last}")
        if version.number >= secret.next_version_number:
            problems.append(
                f"version {version.id} has number {version.number}, "
                f"not below the next version number {secret.next_version_number}"
            )
        if version.id != version_id_for(version.number):
            problems.append(f"version {version.id} should be called {version_id_for(version.number)}")
        last = max(last, version.number)
        if version.request_id is not None:
            if version.request_id in request_ids:
                problems.append(
                    f"versions {request_ids[version.request_id]} and {version.id} "
                    f"share request id {version.request_id!r}"
                )
            request_ids.setdefault(version.request_id, version.id)
        for label in sorted(version.stages):
            holders.setdefault(label, []).append(version.id)
    for label, ids in sorted(holders.items()):
        if len(ids) > 1:
            problems.append(f"stage label {label} is on more than one version: {', '.join(ids)}")
        try:
            validate_label(label, secret.secret_type)
        except InvalidStageLabel as exc:
            problems.append(str(exc))
    if len(holders) > MAX_STAGE_LABELS:
        problems.append(f"{len(holders)} distinct stage labels, more than {MAX_STAGE_LABELS}")
    current = holders.get(CURRENT, [])
    if secret.versions and not current:
        problems.append(f"no version carries {CURRENT}")
    if set(current) & set(holders.get(PREVIOUS, [])):
        problems.append(f"{PREVIOUS} is on the {CURRENT} version {current[0]}")
    progress = secret.rotation
    if progress is not None:
        pending = holders.get(PENDING, [])
        if progress.version_id not in pending:
            problems.append(
                f"rotation progress refers to version {progress.version_id}, which does not carry {PENDING}"
            )
        else:
            version = secret.version(progress.version_id)
            if version.request_id != progress.request_id:
                problems.append(
                    f"rotation progress has request id {progress.request_id!r} but version {version.id} "
                    f"was created by {version.request_id!r}"
                )
    return problems


def check_invariants(secret: SecretRecord) -> None:
    """Raise ``CorruptRecord`` naming every broken rule, if any."""
    problems = invariant_violations(secret)
    if problems:
        raise CorruptRecord(f"secret {secret.secret_id} breaks the secret model: {'; '.join(problems)}")
