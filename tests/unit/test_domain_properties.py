"""Random sequences of every operation: the model's rules hold after each step, and refusals change nothing."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from managed_secrets.domain import (
    MAX_STAGE_LABELS,
    ManualClock,
    RotationStep,
    SecretMetadata,
    SecretRecord,
    SecretType,
    abandon_rotation,
    apply_prune,
    begin_rotation,
    check_invariants,
    decode_record,
    encode_record,
    finish_rotation,
    from_document,
    move_label,
    new_secret,
    put_value,
    record_rotation_failure,
    record_rotation_step,
    remove_label,
    to_document,
)
from managed_secrets.errors import InvalidRequest

CUR, PREV, PEND = "ACSCurrent", "ACSPrevious", "ACSPending"

_GOOD_LABELS = [CUR, PREV, PEND, *(f"c{n}" for n in range(1, 8))]
LABELS = st.sampled_from([*_GOOD_LABELS, *_GOOD_LABELS, "bad label", "acsprevious"])
VERSION_REFS = st.integers(min_value=0, max_value=19)
"""Mostly an existing version (by position); sometimes an id that may be pruned or never issued."""
FINGERPRINTS = st.sampled_from(["fp-a", "fp-b", "fp-c"])
REQUESTS = st.sampled_from(["req-1", "req-2", "req-3", "req-4", "req-5"])
STEPS = st.sampled_from(list(RotationStep))

OUTCOMES: Counter[str] = Counter()
"""What the machine did, by operation and outcome: the coverage test checks that every path was taken."""

MACHINE_SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def holders(secret: SecretRecord) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for version in secret.versions:
        for label in version.stages:
            found.setdefault(label, []).append(version.id)
    return found


class SecretMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.secret = new_secret(SecretMetadata("apps", "db", "uid-1", SecretType.GENERIC, datetime.now(UTC)))
        self.clock = ManualClock(datetime(2024, 1, 1, tzinfo=UTC))
        self.issued: set[str] = set()
        self.highest_next = 1

    @initialize(
        secret_type=st.sampled_from([SecretType.GENERIC, SecretType.GENERIC, SecretType.DATABASE]),
        values=st.integers(min_value=0, max_value=3),
    )
    def start(self, secret_type: SecretType, values: int) -> None:
        self.secret = new_secret(SecretMetadata("apps", "db", "uid-1", secret_type, self.clock.now()))
        for index in range(values):
            self.put(f"fp-start-{index}", None, None)

    def pick(self, ref: int) -> str:
        versions = self.secret.versions
        if ref < 16 and versions:
            return versions[ref % len(versions)].id
        return f"v{ref - 8}"

    # --- the step runner -----------------------------------------------------------------------------

    def apply(self, name: str, operation: Callable[[SecretRecord], SecretRecord]) -> SecretRecord | None:
        """Run ``operation``; on refusal check nothing changed, on success check ids and commit."""
        before = self.secret
        snapshot = to_document(before)
        self.clock.advance(seconds=1)
        try:
            after = operation(before)
        except InvalidRequest as exc:
            OUTCOMES[f"{name}: refused ({type(exc).__name__})"] += 1
            assert to_document(before) == snapshot
            assert self.secret is before
            return None
        OUTCOMES[f"{name}: {'no-op' if after == before else 'changed'}"] += 1
        before_ids = {v.id for v in before.versions}
        new_ids = {v.id for v in after.versions} - before_ids
        assert not new_ids & self.issued, f"version id reused: {sorted(new_ids & self.issued)}"
        self.issued |= new_ids
        assert after.next_version_number >= self.highest_next
        self.highest_next = after.next_version_number
        if name != "prune":
            assert before_ids <= {v.id for v in after.versions}, "only pruning deletes versions"
        self.secret = after
        return after

    # --- rules ---------------------------------------------------------------------------------------

    @rule(
        fingerprint=FINGERPRINTS,
        request_id=st.none() | REQUESTS,
        stages=st.none() | st.lists(LABELS, max_size=3),
    )
    def put(self, fingerprint: str, request_id: str | None, stages: list[str] | None) -> None:
        before = self.secret
        made: list[str] = []

        def operation(secret: SecretRecord) -> SecretRecord:
            updated, version = put_value(
                secret,
                fingerprint=fingerprint,
                sealed=f"sealed-{fingerprint}".encode(),
                now=self.clock.now(),
                request_id=request_id,
                stages=stages,
            )
            made.append(version.id)
            assert updated.version(version.id) == version
            return updated

        after = self.apply("put", operation)
        if after is None:
            return
        version = after.version(made[0])
        if request_id is not None:
            assert version.request_id == request_id
            assert version.fingerprint == fingerprint
        if after is before:
            return
        assert version.fingerprint == fingerprint
        if stages is None:
            assert after.current == version
            if before.current is not None:
                assert after.previous is not None and after.previous.id == before.current.id
        pending_before = before.pending
        if PEND not in (stages or ()) and pending_before is not None:
            assert after.pending is not None and after.pending.id == pending_before.id
            assert after.rotation == before.rotation

    @rule(request_id=REQUESTS, fingerprint=FINGERPRINTS)
    def rotate(self, request_id: str, fingerprint: str) -> None:
        before = self.secret
        after = self.apply(
            "begin_rotation",
            lambda s: begin_rotation(
                s, request_id=request_id, fingerprint=fingerprint, sealed=b"rotated", now=self.clock.now()
            )[0],
        )
        if before.pending is not None and before.version_for_request(request_id) is None:
            assert after is None, "a second rotation was started while one is pending"
        if after is not None and after is not before:
            pending = after.pending
            assert pending is not None and pending.request_id == request_id
            assert after.rotation is not None and after.rotation.version_id == pending.id
            assert after.current == before.current

    @rule(ref=VERSION_REFS, action=st.sampled_from(["step", "fail", "finish", "abandon"]), step=STEPS)
    def rotation_call(self, ref: int, action: str, step: RotationStep) -> None:
        """A rotation call for any version, pending or not (most are refused)."""
        version_id = self.pick(ref)
        if action == "step":
            self.record_step(version_id, step)
        elif action == "fail":
            self.record_failure(version_id)
        elif action == "finish":
            self._finish(version_id)
        else:
            self.apply("abandon_rotation", lambda s: abandon_rotation(s, version_id))

    def record_step(self, version_id: str, step: RotationStep) -> None:
        self.apply("record_rotation_step", lambda s: record_rotation_step(s, version_id, step, self.clock.now()))

    def record_failure(self, version_id: str) -> None:
        retry = self.clock.now() + timedelta(minutes=5)
        self.apply(
            "record_rotation_failure",
            lambda s: record_rotation_failure(s, version_id, "target refused", self.clock.now(), retry),
        )

    @precondition(lambda self: self.secret.pending is not None)
    @rule(step=STEPS, failures=st.integers(min_value=0, max_value=2))
    def drive_pending(self, step: RotationStep, failures: int) -> None:
        """What the rotation engine does: fail a few times, then advance."""
        pending = self.secret.pending
        assert pending is not None
        for _ in range(failures):
            self.record_failure(pending.id)
        self.record_step(pending.id, step)

    @precondition(lambda self: self.secret.pending is not None)
    @rule()
    def finish_pending(self) -> None:
        pending = self.secret.pending
        assert pending is not None
        self._finish(pending.id)

    @precondition(lambda self: self.secret.pending is not None)
    @rule()
    def abandon_pending(self) -> None:
        pending = self.secret.pending
        assert pending is not None
        after = self.apply("abandon_rotation", lambda s: abandon_rotation(s, pending.id))
        assert after is not None
        assert after.pending is None and after.rotation is None
        assert after.version(pending.id).stages == pending.stages - {PEND}

    @precondition(lambda self: self.secret.rotation is not None)
    @rule(ref=VERSION_REFS, action=st.sampled_from(["move pending", "put pending", "rotate again"]))
    def interfere_with_rotation(self, ref: int, action: str) -> None:
        """Anything that would take ACSPending from the rotation in progress is refused."""
        progress = self.secret.rotation
        assert progress is not None
        target = self.pick(ref)
        if action == "move pending":
            after = self.apply("move_label", lambda s: move_label(s, PEND, target))
            assert after is None or target == progress.version_id
        elif action == "put pending":
            self.put("fp-new", None, [PEND])
        else:
            self.rotate("req-other", "fp-new")
        assert self.secret.rotation is not None
        assert self.secret.rotation.version_id == progress.version_id

    def _finish(self, version_id: str) -> None:
        before = self.secret
        after = self.apply("finish_rotation", lambda s: finish_rotation(s, version_id))
        if after is None or after is before:
            return
        assert after.current is not None and after.current.id == version_id
        assert after.pending is None and after.rotation is None
        old = before.current
        if old is not None and old.id != version_id:
            assert after.previous is not None and after.previous.id == old.id

    @rule(moves=st.lists(st.tuples(LABELS, VERSION_REFS, st.none() | VERSION_REFS), min_size=1, max_size=4))
    def move(self, moves: list[tuple[str, int, int | None]]) -> None:
        for label, to_ref, from_ref in moves:
            self.move_one(label, to_ref, from_ref)

    def move_one(self, label: str, to_ref: int, from_ref: int | None) -> None:
        to_version = self.pick(to_ref)
        from_version = None if from_ref is None else self.pick(from_ref)
        before = self.secret
        after = self.apply("move_label", lambda s: move_label(s, label, to_version, from_version_id=from_version))
        if after is None:
            return
        holder = after.version_with(label)
        assert holder is not None and holder.id == to_version
        old = before.current
        if label == CUR and old is not None and old.id != to_version:
            assert after.previous is not None and after.previous.id == old.id

    @precondition(lambda self: self.secret.secret_type is SecretType.GENERIC)
    @rule(
        labels=st.lists(st.sampled_from([f"c{n}" for n in range(1, 8)]), min_size=2, max_size=7), ref=VERSION_REFS
    )
    def move_many(self, labels: list[str], ref: int) -> None:
        """Custom labels in bulk, so that the label limit is reached often enough."""
        for label in labels:
            self.move_one(label, ref, None)

    @rule(removals=st.lists(st.tuples(LABELS, VERSION_REFS), min_size=1, max_size=3))
    def remove(self, removals: list[tuple[str, int]]) -> None:
        for label, ref in removals:
            self.remove_one(label, ref)

    @rule(index=st.integers(min_value=0, max_value=9))
    def remove_held(self, index: int) -> None:
        """Remove a label from the version that actually has it."""
        labels = sorted(self.secret.labels())
        if labels:
            label = labels[index % len(labels)]
            holder = self.secret.version_with(label)
            assert holder is not None
            self.remove_by_id(label, holder.id)

    def remove_one(self, label: str, ref: int) -> None:
        self.remove_by_id(label, self.pick(ref))

    def remove_by_id(self, label: str, version_id: str) -> None:
        after = self.apply("remove_label", lambda s: remove_label(s, label, version_id))
        if after is not None:
            assert not after.version(version_id).has(label)
            assert label not in (CUR, PREV)
            if label == PEND:
                assert after.rotation is None

    @rule(limit=st.integers(min_value=0, max_value=4))
    def prune(self, limit: int) -> None:
        before = self.secret
        after = self.apply("prune", lambda s: apply_prune(s, limit))
        if after is None:
            assert limit == 0
            return
        kept = {v.id for v in after.versions}
        removed = [v for v in before.versions if v.id not in kept]
        assert all(not v.stages for v in removed), "a labelled version was pruned"
        unlabelled = [v for v in before.versions if not v.stages]
        expected = min(max(0, len(before.versions) - limit), len(unlabelled))
        assert removed == unlabelled[:expected]
        assert after.next_version_number == before.next_version_number

    # --- what must hold after every step -------------------------------------------------------------

    @invariant()
    def the_model_holds(self) -> None:
        secret = self.secret
        check_invariants(secret)
        found = holders(secret)
        if secret.versions:
            assert len(found.get(CUR, [])) == 1, "exactly one ACSCurrent once a value exists"
        else:
            assert found == {}
        assert len(found.get(PEND, [])) <= 1
        if PREV in found:
            assert found[PREV] != found[CUR]
        assert all(len(ids) == 1 for ids in found.values())
        assert len(found) <= MAX_STAGE_LABELS
        if secret.rotation is not None:
            assert found[PEND] == [secret.rotation.version_id]
        numbers = [v.number for v in secret.versions]
        assert numbers == sorted(set(numbers))
        assert all(number < secret.next_version_number for number in numbers)
        assert {v.id for v in secret.versions} <= self.issued

    @invariant()
    def the_codec_round_trip_is_exact(self) -> None:
        document = to_document(self.secret)
        assert from_document(json.loads(json.dumps(document))) == self.secret
        assert decode_record(encode_record(self.secret)) == self.secret


TestSecretMachine = SecretMachine.TestCase
TestSecretMachine.settings = MACHINE_SETTINGS


def test_the_machine_takes_every_path() -> None:
    """Guards the machine itself: if the strategies drifted so that a path is never taken, this fails."""
    OUTCOMES.clear()
    run_state_machine_as_test(SecretMachine, settings=MACHINE_SETTINGS)
    expected = [
        "put: changed",
        "put: no-op",
        "put: refused (IdempotencyConflict)",
        "put: refused (InvalidStageLabel)",
        "begin_rotation: changed",
        "begin_rotation: no-op",
        "begin_rotation: refused (RotationInProgress)",
        "record_rotation_step: changed",
        "record_rotation_failure: changed",
        "finish_rotation: changed",
        "finish_rotation: no-op",
        "abandon_rotation: changed",
        "move_label: changed",
        "move_label: no-op",
        "move_label: refused (VersionNotFound)",
        "move_label: refused (InvalidStageLabel)",
        "move_label: refused (LabelLimitExceeded)",
        "remove_label: changed",
        "remove_label: refused (ProtectedLabel)",
        "prune: changed",
        "prune: refused (InvalidRequest)",
    ]
    missing = [outcome for outcome in expected if OUTCOMES[outcome] == 0]
    assert not missing, f"never happened: {missing}; saw {sorted(OUTCOMES)}"
