"""Each operation on a secret, as tables: what it does, and how it refuses bad requests changing nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from managed_secrets.domain import (
    RotationProgress,
    RotationStep,
    SecretMetadata,
    SecretRecord,
    SecretType,
    Version,
    abandon_rotation,
    apply_prune,
    begin_rotation,
    check_invariants,
    finish_rotation,
    invariant_violations,
    move_label,
    new_secret,
    prune_unlabelled_versions,
    put_value,
    record_rotation_failure,
    record_rotation_step,
    remove_label,
    to_document,
)
from managed_secrets.errors import (
    CorruptRecord,
    IdempotencyConflict,
    InvalidRequest,
    InvalidStageLabel,
    LabelLimitExceeded,
    ProtectedLabel,
    RotationInProgress,
    VersionNotFound,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CUR, PREV, PEND = "ACSCurrent", "ACSPrevious", "ACSPending"


# --- builders ------------------------------------------------------------------------------------------


def empty(secret_type: SecretType = SecretType.GENERIC) -> SecretRecord:
    return new_secret(SecretMetadata("apps", "db", "uid-1", secret_type, T0))


def put(secret: SecretRecord, fingerprint: str, **kwargs: object) -> SecretRecord:
    """Store a value named by its fingerprint; the sealed bytes and time follow from it."""
    minute = secret.next_version_number
    updated, _ = put_value(
        secret,
        fingerprint=fingerprint,
        sealed=f"sealed:{fingerprint}".encode(),
        now=T0 + timedelta(minutes=minute),
        **kwargs,  # type: ignore[arg-type]
    )
    return updated


def with_values(*fingerprints: str, secret_type: SecretType = SecretType.GENERIC) -> SecretRecord:
    secret = empty(secret_type)
    for fingerprint in fingerprints:
        secret = put(secret, fingerprint)
    return secret


def three(secret_type: SecretType = SecretType.GENERIC) -> SecretRecord:
    """v1 unlabelled, v2 ACSPrevious, v3 ACSCurrent."""
    return with_values("a", "b", "c", secret_type=secret_type)


def rotating(secret_type: SecretType = SecretType.GENERIC) -> SecretRecord:
    """``three`` plus v4 ACSPending, rotation request ``rot-1`` at step set."""
    secret, _ = begin_rotation(three(secret_type), request_id="rot-1", fingerprint="d", sealed=b"D", now=T0)
    return secret


def eight_labels() -> SecretRecord:
    """``three`` with six custom labels on v1: the limit of eight distinct labels is reached."""
    secret = three()
    for index in range(1, 7):
        secret = move_label(secret, f"custom-{index}", "v1")
    return secret


def stages(secret: SecretRecord) -> dict[str, list[str]]:
    return {v.id: sorted(v.stages) for v in secret.versions}


# --- put_value -----------------------------------------------------------------------------------------


def test_first_value_becomes_v1_and_current() -> None:
    secret, version = put_value(empty(), fingerprint="a", sealed=b"A", now=T0)
    assert version == Version("v1", 1, T0, "a", b"A", frozenset({CUR}))
    assert secret.versions == (version,)
    assert secret.next_version_number == 2
    check_invariants(secret)


def test_each_new_value_takes_current_and_hands_previous_to_the_old_current() -> None:
    assert stages(with_values("a", "b")) == {"v1": [PREV], "v2": [CUR]}
    assert stages(with_values("a", "b", "c")) == {"v1": [], "v2": [PREV], "v3": [CUR]}
    assert stages(with_values("a", "b", "c", "d")) == {"v1": [], "v2": [], "v3": [PREV], "v4": [CUR]}


def test_put_returns_the_new_version() -> None:
    secret, version = put_value(three(), fingerprint="z", sealed=b"Z", now=T0, request_id="req-9")
    assert version.id == "v4"
    assert version.request_id == "req-9"
    assert version.stages == {CUR}
    assert secret.current == version


def test_same_value_without_request_id_is_a_no_op() -> None:
    secret = three()
    again, version = put_value(secret, fingerprint="c", sealed=b"other ciphertext", now=T0)
    assert again is secret
    assert version.id == "v3"


def test_same_value_with_a_new_request_id_makes_a_new_version() -> None:
    secret, version = put_value(three(), fingerprint="c", sealed=b"C2", now=T0, request_id="req-1")
    assert version.id == "v4"
    assert stages(secret)["v3"] == [PREV]


def test_repeated_request_id_with_the_same_value_returns_the_first_version() -> None:
    first, made = put_value(three(), fingerprint="x", sealed=b"X", now=T0, request_id="req-1")
    later = put(first, "y")
    again, found = put_value(later, fingerprint="x", sealed=b"X'", now=T0, request_id="req-1")
    assert again is later
    assert found == later.version(made.id)


def test_repeated_request_id_with_another_value_is_a_conflict() -> None:
    secret, _ = put_value(three(), fingerprint="x", sealed=b"X", now=T0, request_id="req-1")
    before = to_document(secret)
    with pytest.raises(IdempotencyConflict) as info:
        put_value(secret, fingerprint="other", sealed=b"O", now=T0, request_id="req-1")
    assert str(info.value) == ("secret apps/db: request 'req-1' already stored version v4 with a different value")
    assert to_document(secret) == before


def test_put_with_custom_stages_leaves_current_alone() -> None:
    secret, version = put_value(three(), fingerprint="x", sealed=b"X", now=T0, stages=["staging"])
    assert version.stages == {"staging"}
    assert stages(secret) == {"v1": [], "v2": [PREV], "v3": [CUR], "v4": ["staging"]}


def test_put_with_current_and_a_custom_label() -> None:
    secret, _ = put_value(three(), fingerprint="x", sealed=b"X", now=T0, stages=[CUR, "blue"])
    assert stages(secret) == {"v1": [], "v2": [], "v3": [PREV], "v4": [CUR, "blue"]}


def test_first_value_is_current_even_when_other_stages_are_asked_for() -> None:
    secret, version = put_value(empty(), fingerprint="a", sealed=b"A", now=T0, stages=["blue"])
    assert version.stages == {CUR, "blue"}
    check_invariants(secret)


def test_put_during_a_rotation_keeps_the_pending_version_and_its_progress() -> None:
    secret = rotating()
    secret, version = put_value(secret, fingerprint="e", sealed=b"E", now=T0)
    assert stages(secret) == {"v1": [], "v2": [], "v3": [PREV], "v4": [PEND], "v5": [CUR]}
    assert secret.rotation is not None and secret.rotation.version_id == "v4"
    check_invariants(secret)
    finished = finish_rotation(secret, "v4")
    assert stages(finished) == {"v1": [], "v2": [], "v3": [], "v4": [CUR], "v5": [PREV]}
    assert version.id == "v5"


# --- rotation ------------------------------------------------------------------------------------------


def test_begin_rotation_adds_a_pending_version_and_progress() -> None:
    secret, version = begin_rotation(three(), request_id="rot-1", fingerprint="d", sealed=b"D", now=T0)
    assert version == Version("v4", 4, T0, "d", b"D", frozenset({PEND}), "rot-1")
    assert stages(secret) == {"v1": [], "v2": [PREV], "v3": [CUR], "v4": [PEND]}
    assert secret.rotation == RotationProgress("v4", "rot-1", RotationStep.SET, T0, T0)
    assert secret.rotation.attempts == 0
    check_invariants(secret)


def test_begin_rotation_again_with_the_same_request_resumes_with_the_stored_value() -> None:
    secret = record_rotation_step(rotating(), "v4", RotationStep.TEST, T0 + timedelta(minutes=1))
    again, version = begin_rotation(
        secret, request_id="rot-1", fingerprint="new", sealed=b"NEW", now=T0 + timedelta(hours=1)
    )
    assert again is secret
    assert version.id == "v4"
    assert version.fingerprint == "d"
    assert again.rotation is not None and again.rotation.step is RotationStep.TEST


def test_begin_rotation_of_a_finished_request_starts_nothing() -> None:
    done = finish_rotation(rotating(), "v4")
    again, version = begin_rotation(done, request_id="rot-1", fingerprint="e", sealed=b"E", now=T0)
    assert again is done
    assert version.id == "v4"
    assert PEND not in version.stages
    assert again.rotation is None


def test_record_rotation_step_advances_and_resets_failures() -> None:
    later = T0 + timedelta(minutes=5)
    secret = record_rotation_failure(rotating(), "v4", "db unreachable", T0, T0 + timedelta(minutes=1))
    secret = record_rotation_step(secret, "v4", RotationStep.TEST, later)
    assert secret.rotation == RotationProgress("v4", "rot-1", RotationStep.TEST, T0, later)
    assert record_rotation_step(secret, "v4", "test", later + timedelta(minutes=1)) is secret
    secret = record_rotation_step(secret, "v4", "finish", later)
    assert secret.rotation is not None and secret.rotation.step is RotationStep.FINISH


def test_record_rotation_failure_counts_attempts() -> None:
    retry = T0 + timedelta(minutes=2)
    secret = record_rotation_failure(rotating(), "v4", "connection refused", T0 + timedelta(minutes=1), retry)
    secret = record_rotation_failure(secret, "v4", "timeout", T0 + timedelta(minutes=3), retry + timedelta(days=1))
    progress = secret.rotation
    assert progress is not None
    assert progress.attempts == 2
    assert progress.last_error == "timeout"
    assert progress.next_attempt == retry + timedelta(days=1)
    assert progress.step is RotationStep.SET
    assert progress.updated == T0 + timedelta(minutes=3)
    assert stages(secret)["v3"] == [CUR]


def test_long_failure_reasons_are_cut() -> None:
    secret = record_rotation_failure(rotating(), "v4", "x" * 5000, T0, None)
    assert secret.rotation is not None and secret.rotation.last_error is not None
    assert len(secret.rotation.last_error) == 1024
    assert secret.rotation.last_error.endswith("...")


def test_finish_rotation_moves_the_labels_and_clears_progress() -> None:
    secret = finish_rotation(rotating(), "v4")
    assert stages(secret) == {"v1": [], "v2": [], "v3": [PREV], "v4": [CUR]}
    assert secret.rotation is None
    assert finish_rotation(secret, "v4") is secret
    check_invariants(secret)


def test_abandon_rotation_leaves_the_version_unlabelled_and_prunable() -> None:
    secret = abandon_rotation(rotating(), "v4")
    assert stages(secret) == {"v1": [], "v2": [PREV], "v3": [CUR], "v4": []}
    assert secret.rotation is None
    assert abandon_rotation(secret, "v4") is secret
    assert prune_unlabelled_versions(secret.versions, 2) == ("v1", "v4")
    # A new rotation can start, under a new id.
    _, version = begin_rotation(secret, request_id="rot-2", fingerprint="e", sealed=b"E", now=T0)
    assert version.id == "v5"


# --- labels --------------------------------------------------------------------------------------------


def test_moving_current_back_is_a_rollback() -> None:
    secret = move_label(three(), CUR, "v1")
    assert stages(secret) == {"v1": [CUR], "v2": [], "v3": [PREV]}
    check_invariants(secret)


def test_moving_current_to_the_previous_version_swaps_them() -> None:
    secret = move_label(three(), CUR, "v2", from_version_id="v3")
    assert stages(secret) == {"v1": [], "v2": [CUR], "v3": [PREV]}


def test_moving_a_label_where_it_already_is_is_a_no_op() -> None:
    secret = three()
    assert move_label(secret, CUR, "v3") is secret
    assert move_label(secret, CUR, "v3", from_version_id="v2") is secret


def test_moving_previous_and_custom_labels() -> None:
    secret = move_label(three(), PREV, "v1")
    assert stages(secret) == {"v1": [PREV], "v2": [], "v3": [CUR]}
    secret = move_label(secret, "blue", "v2")
    secret = move_label(secret, "blue", "v3", from_version_id="v2")
    assert stages(secret) == {"v1": [PREV], "v2": [], "v3": [CUR, "blue"]}


def test_pending_placed_by_hand_blocks_a_rotation_until_removed() -> None:
    secret = move_label(three(), PEND, "v1")
    assert secret.rotation is None
    with pytest.raises(RotationInProgress, match=r"v1 carries ACSPending \(no rotation is running"):
        begin_rotation(secret, request_id="rot-1", fingerprint="d", sealed=b"D", now=T0)
    secret = remove_label(secret, PEND, "v1")
    _, version = begin_rotation(secret, request_id="rot-1", fingerprint="d", sealed=b"D", now=T0)
    assert version.id == "v4"


def test_the_ninth_label_is_refused_but_reusing_one_is_fine() -> None:
    secret = eight_labels()
    assert len(secret.labels()) == 8
    moved = move_label(secret, "custom-1", "v2")
    assert stages(moved)["v2"] == [PREV, "custom-1"]
    # Moving ACSCurrent does not add a label either: ACSPrevious already exists.
    assert stages(move_label(secret, CUR, "v1"))["v3"] == [PREV]


def test_remove_custom_label() -> None:
    secret = move_label(three(), "blue", "v2")
    removed = remove_label(secret, "blue", "v2")
    assert stages(removed) == stages(three())
    assert remove_label(removed, "blue", "v2") is removed


def test_remove_pending_ends_the_rotation() -> None:
    secret = remove_label(rotating(), PEND, "v4")
    assert secret.rotation is None
    assert stages(secret)["v4"] == []
    check_invariants(secret)


# --- refusals ------------------------------------------------------------------------------------------

Refusal = tuple[Callable[[], SecretRecord], Callable[[SecretRecord], object], type[Exception], tuple[str, ...]]

REFUSALS: dict[str, Refusal] = {
    "unknown stage name on put": (
        three,
        lambda s: put_value(s, fingerprint="x", sealed=b"X", now=T0, stages=["acsCurrent"]),
        InvalidStageLabel,
        ("'acsCurrent'", "ACSCurrent", "apps/db"),
    ),
    "malformed stage name on move": (
        three,
        lambda s: move_label(s, "blue green", "v1"),
        InvalidStageLabel,
        ("'blue green'", "malformed", "apps/db"),
    ),
    "malformed stage name on remove": (
        three,
        lambda s: remove_label(s, "-x", "v1"),
        InvalidStageLabel,
        ("'-x'",),
    ),
    "empty stages on put": (
        three,
        lambda s: put_value(s, fingerprint="x", sealed=b"X", now=T0, stages=[]),
        InvalidStageLabel,
        ("at least one stage label",),
    ),
    "current and previous on one new version": (
        three,
        lambda s: put_value(s, fingerprint="x", sealed=b"X", now=T0, stages=[CUR, PREV]),
        InvalidStageLabel,
        ("ACSCurrent", "ACSPrevious"),
    ),
    "a 9th label by move": (
        eight_labels,
        lambda s: move_label(s, "custom-7", "v2"),
        LabelLimitExceeded,
        ("custom-7", "9 distinct", "at most 8", "apps/db"),
    ),
    "a 9th label by put": (
        eight_labels,
        lambda s: put_value(s, fingerprint="x", sealed=b"X", now=T0, stages=["custom-7"]),
        LabelLimitExceeded,
        ("custom-7",),
    ),
    "a 9th label by rotation": (
        eight_labels,
        lambda s: begin_rotation(s, request_id="r", fingerprint="x", sealed=b"X", now=T0),
        LabelLimitExceeded,
        ("ACSPending",),
    ),
    "removing ACSCurrent": (
        three,
        lambda s: remove_label(s, CUR, "v3"),
        ProtectedLabel,
        ("ACSCurrent", "only moved", "apps/db"),
    ),
    "removing ACSPrevious": (
        three,
        lambda s: remove_label(s, PREV, "v2"),
        ProtectedLabel,
        ("ACSPrevious",),
    ),
    "removing a label from the wrong version": (
        lambda: move_label(three(), "blue", "v1"),
        lambda s: remove_label(s, "blue", "v2"),
        InvalidRequest,
        ("blue", "is on version v1, not v2"),
    ),
    "removing from a missing version": (
        lambda: move_label(three(), "blue", "v1"),
        lambda s: remove_label(s, "blue", "v9"),
        VersionNotFound,
        ("v9", "apps/db"),
    ),
    "moving a label to a missing version": (
        three,
        lambda s: move_label(s, CUR, "v9"),
        VersionNotFound,
        ("'v9'", "apps/db"),
    ),
    "moving a label from a missing version": (
        three,
        lambda s: move_label(s, CUR, "v1", from_version_id="v8"),
        VersionNotFound,
        ("'v8'",),
    ),
    "moving a label from a version that does not hold it": (
        three,
        lambda s: move_label(s, CUR, "v1", from_version_id="v2"),
        InvalidRequest,
        ("ACSCurrent is not on version v2", "it is on v3"),
    ),
    "moving ACSPrevious onto the current version": (
        three,
        lambda s: move_label(s, PREV, "v3"),
        InvalidRequest,
        ("ACSPrevious", "v3", "carries ACSCurrent"),
    ),
    "custom label on a Database secret by move": (
        lambda: three(SecretType.DATABASE),
        lambda s: move_label(s, "blue", "v1"),
        InvalidStageLabel,
        ("'blue'", "Database", "Generic"),
    ),
    "custom label on a Database secret by put": (
        lambda: three(SecretType.DATABASE),
        lambda s: put_value(s, fingerprint="x", sealed=b"X", now=T0, stages=["blue"]),
        InvalidStageLabel,
        ("'blue'", "Database"),
    ),
    "second rotation while one is pending": (
        rotating,
        lambda s: begin_rotation(s, request_id="rot-2", fingerprint="x", sealed=b"X", now=T0),
        RotationInProgress,
        ("rotation in progress", "v4", "'rot-1'", "apps/db"),
    ),
    "rotation of an empty secret": (
        empty,
        lambda s: begin_rotation(s, request_id="rot-1", fingerprint="x", sealed=b"X", now=T0),
        InvalidRequest,
        ("no ACSCurrent version", "apps/db"),
    ),
    "empty request id": (
        three,
        lambda s: begin_rotation(s, request_id="", fingerprint="x", sealed=b"X", now=T0),
        InvalidRequest,
        ("request id",),
    ),
    "moving ACSPending during a rotation": (
        rotating,
        lambda s: move_label(s, PEND, "v1"),
        RotationInProgress,
        ("v4", "ACSPending"),
    ),
    "putting a value as ACSPending during a rotation": (
        rotating,
        lambda s: put_value(s, fingerprint="x", sealed=b"X", now=T0, stages=[PEND]),
        RotationInProgress,
        ("v4",),
    ),
    "finishing a version that is not pending": (
        rotating,
        lambda s: finish_rotation(s, "v2"),
        InvalidRequest,
        ("v2", "does not carry ACSPending"),
    ),
    "finishing a missing version": (
        rotating,
        lambda s: finish_rotation(s, "v7"),
        VersionNotFound,
        ("'v7'",),
    ),
    "abandoning a missing version": (
        rotating,
        lambda s: abandon_rotation(s, "v7"),
        VersionNotFound,
        ("'v7'",),
    ),
    "step for another version": (
        rotating,
        lambda s: record_rotation_step(s, "v3", RotationStep.TEST, T0),
        RotationInProgress,
        ("of version v4, not 'v3'",),
    ),
    "step with no rotation": (
        three,
        lambda s: record_rotation_step(s, "v3", RotationStep.TEST, T0),
        InvalidRequest,
        ("no rotation is in progress", "v3"),
    ),
    "unknown step": (
        rotating,
        lambda s: record_rotation_step(s, "v4", "deploy", T0),
        InvalidRequest,
        ("'deploy'",),
    ),
    "step going back": (
        lambda: record_rotation_step(rotating(), "v4", RotationStep.TEST, T0),
        lambda s: record_rotation_step(s, "v4", RotationStep.SET, T0),
        InvalidRequest,
        ("at step test", "back to set"),
    ),
    "failure of a missing version": (
        rotating,
        lambda s: record_rotation_failure(s, "v9", "boom", T0, None),
        VersionNotFound,
        ("'v9'",),
    ),
    "prune limit zero": (
        three,
        lambda s: apply_prune(s, 0),
        InvalidRequest,
        ("at least 1, got 0",),
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refused_requests_raise_a_clear_error_and_change_nothing(case: str) -> None:
    build, operation, error, fragments = REFUSALS[case]
    secret = build()
    check_invariants(secret)
    before = to_document(secret)
    with pytest.raises(error) as info:
        operation(secret)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert "sealed:" not in message
    assert to_document(secret) == before
    assert secret == build()


# --- pruning -------------------------------------------------------------------------------------------


def labelled(*stage_sets: set[str]) -> tuple[Version, ...]:
    return tuple(
        Version(f"v{n}", n, T0, f"fp{n}", b"x", frozenset(labels)) for n, labels in enumerate(stage_sets, 1)
    )


@pytest.mark.parametrize(
    ("versions", "limit", "expected"),
    [
        (labelled(), 1, ()),
        (labelled({CUR}), 1, ()),
        (labelled(set(), {PREV}, {CUR}), 3, ()),
        (labelled(set(), {PREV}, {CUR}), 2, ("v1",)),
        (labelled(set(), set(), set(), {PREV}, {CUR}), 2, ("v1", "v2", "v3")),
        (labelled(set(), set(), set(), {PREV}, {CUR}), 4, ("v1",)),
        (labelled({"blue"}, set(), {PREV}, set(), {CUR}), 2, ("v2", "v4")),
        (labelled({"blue"}, {PEND}, {PREV}, {CUR}), 1, ()),
        (labelled({PREV}, set(), {CUR}, set()), 3, ("v2",)),
    ],
)
def test_prune_picks_the_oldest_unlabelled_versions(
    versions: tuple[Version, ...], limit: int, expected: tuple[str, ...]
) -> None:
    assert prune_unlabelled_versions(versions, limit) == expected


def test_prune_order_follows_version_numbers_not_position() -> None:
    versions = tuple(reversed(labelled(set(), set(), {CUR})))
    assert prune_unlabelled_versions(versions, 1) == ("v1", "v2")


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_prune_limit_must_be_a_positive_integer(limit: int) -> None:
    with pytest.raises(InvalidRequest):
        prune_unlabelled_versions(labelled({CUR}), limit)


def test_apply_prune_never_reuses_version_ids() -> None:
    secret = with_values("a", "b", "c", "d")
    pruned = apply_prune(secret, 2)
    assert [v.id for v in pruned.versions] == ["v3", "v4"]
    assert pruned.next_version_number == 5
    assert apply_prune(pruned, 2) is pruned
    _, version = put_value(pruned, fingerprint="e", sealed=b"E", now=T0)
    assert version.id == "v5"


# --- invariants ----------------------------------------------------------------------------------------


def _replace_version(secret: SecretRecord, version_id: str, **changes: object) -> SecretRecord:
    versions = tuple(
        dataclasses.replace(v, **changes) if v.id == version_id else v  # type: ignore[arg-type]
        for v in secret.versions
    )
    return dataclasses.replace(secret, versions=versions)


BROKEN: dict[str, tuple[Callable[[], SecretRecord], str]] = {
    "label on two versions": (
        lambda: _replace_version(three(), "v1", stages=frozenset({CUR})),
        "stage label ACSCurrent is on more than one version: v1, v3",
    ),
    "no current": (
        lambda: _replace_version(three(), "v3", stages=frozenset()),
        "no version carries ACSCurrent",
    ),
    "previous on current": (
        lambda: _replace_version(three(), "v3", stages=frozenset({CUR, PREV})),
        "ACSPrevious is on the ACSCurrent version v3",
    ),
    "two pending": (
        lambda: _replace_version(rotating(), "v1", stages=frozenset({PEND})),
        "stage label ACSPending is on more than one version: v1, v4",
    ),
    "nine labels": (
        lambda: _replace_version(eight_labels(), "v2", stages=frozenset({PREV, "custom-7"})),
        "9 distinct stage labels, more than 8",
    ),
    "custom label on a Database secret": (
        lambda: _replace_version(three(SecretType.DATABASE), "v1", stages=frozenset({"blue"})),
        "custom stage label 'blue' is not allowed on a Database secret",
    ),
    "malformed label": (
        lambda: _replace_version(three(), "v1", stages=frozenset({"no spaces"})),
        "stage label 'no spaces' is malformed",
    ),
    "numbers out of order": (
        lambda: dataclasses.replace(three(), versions=tuple(reversed(three().versions))),
        "version v2 has number 2, not above 3",
    ),
    "id not matching number": (
        lambda: _replace_version(three(), "v1", id="x1"),
        "version x1 should be called v1",
    ),
    "number not below next": (
        lambda: dataclasses.replace(three(), next_version_number=3),
        "version v3 has number 3, not below the next version number 3",
    ),
    "shared request id": (
        lambda: _replace_version(_replace_version(three(), "v1", request_id="r"), "v2", request_id="r"),
        "versions v1 and v2 share request id 'r'",
    ),
    "rotation without pending": (
        lambda: dataclasses.replace(three(), rotation=RotationProgress("v3", "r", RotationStep.SET, T0, T0)),
        "rotation progress refers to version v3, which does not carry ACSPending",
    ),
    "rotation of another request": (
        lambda: dataclasses.replace(rotating(), rotation=RotationProgress("v4", "r9", RotationStep.SET, T0, T0)),
        "rotation progress has request id 'r9' but version v4 was created by 'rot-1'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_check_invariants_names_the_broken_rule(case: str) -> None:
    build, expected = BROKEN[case]
    secret = build()
    assert any(expected in problem for problem in invariant_violations(secret))
    with pytest.raises(CorruptRecord) as info:
        check_invariants(secret)
    assert str(info.value).startswith("secret apps/db breaks the secret model: ")
    assert expected in str(info.value)


@pytest.mark.parametrize("build", [empty, three, rotating, eight_labels])
def test_sound_records_pass(build: Callable[[], SecretRecord]) -> None:
    assert invariant_violations(build()) == []
