"""The one reconcile path behind every handler: create, update, resume, source change, drift, delete.

``reconcile`` is idempotent: run twice on an unchanged world it writes nothing the second time (no store
write, no Secret write, no status patch, no Event). Handlers stay thin and call into here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.domain import (
    SecretMetadata,
    SecretRecord,
    SecretValue,
    apply_prune,
    move_label,
    new_secret,
    put_value,
)
from managed_secrets.domain.schedule import RotationSchedule, next_rotation_time, rotation_due
from managed_secrets.errors import (
    InvalidRequest,
    KeyringError,
    ManagedSecretsError,
    RotationInProgress,
    StoreError,
)
from managed_secrets.metrics import OperatorMetrics, RotationResult
from managed_secrets.projection import (
    ApplyAction,
    Owner,
    ProjectionConflict,
    ProjectionError,
    RenderError,
    apply_projection,
    delete_projection,
    render,
)
from managed_secrets.projection.restart import RestartError, RestartTarget, restart_targets
from managed_secrets.rotation.generators import generate_password
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed
from managed_secrets.service.events import EventRecorder
from managed_secrets.service.rotation import Backoff, RotationEngine, describe, initial_value, strategy_for
from managed_secrets.service.scheduler import Scheduler
from managed_secrets.service.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    GenerateSource,
    ManagedSecretSpec,
    parse_spec,
)
from managed_secrets.service.status import Condition, desired_status, status_differs
from managed_secrets.store import RecordKey, SecretVault

log = logging.getLogger(__name__)

RESTORE_ANNOTATION = "managedsecrets.io/restore"
ROTATE_ANNOTATION = "managedsecrets.io/rotate"
LAST_ROTATE_REQUEST = "last-rotate-request"
MOVE_STAGE_ANNOTATION = "managedsecrets.io/move-stage"
LAST_STAGE_MOVE = "last-stage-move"
LAST_STAGE_MOVE_TIME = "last-stage-move-time"
DELETED_AT = "deleted-at"
PURGE_AFTER = "purge-after"


class SourceUnavailable(ManagedSecretsError):
    """The value source (e.g. the valueFrom Secret) cannot be read yet."""


@dataclass
class Outcome:
    """What one reconcile did, for the handler to log and for tests."""

    record: SecretRecord | None = None
    new_version: str | None = None
    projection: ApplyAction | None = None
    conditions: list[Condition] = field(default_factory=list)
    rotated: str | None = None
    next_rotation: dt.datetime | None = None
    wake_at: dt.datetime | None = None
    public_key: str | None = None


class ManagedSecretService:
    """Reconciles ManagedSecrets against the vault and the cluster."""

    def __init__(
        self,
        api: client.ApiClient,
        vault: SecretVault,
        events: EventRecorder,
        *,
        backoff: Backoff | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.metrics = metrics or OperatorMetrics(runtime_collectors=False)
        self.api = api
        self.vault = vault
        self.events = events
        self.engine = RotationEngine(vault, backoff or Backoff())
        self.scheduler = Scheduler(self._scheduled, vault.clock)
        self._create_failures: dict[RecordKey, tuple[int, dt.datetime]] = {}
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._locks: dict[RecordKey, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, key: RecordKey) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # --- entry points ----------------------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        meta = body["metadata"]
        key = RecordKey(meta["namespace"], meta["name"])
        with self._lock(key):
            return self._reconcile(body, key)

    def _scheduled(self, namespace: str, name: str) -> None:
        self.reconcile_by_name(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self.scheduler.schedule(namespace, name, None)
        self.metrics.forget(namespace, name)

    def reconcile_by_name(self, namespace: str, name: str) -> Outcome | None:
        """Reconciles the ManagedSecret read fresh from the API (for Secret events)."""
        try:
            body: dict[str, Any] = self._custom.get_namespaced_custom_object(  # type: ignore[assignment]
                API_GROUP, API_VERSION, namespace, PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        if body.get("metadata", {}).get("deletionTimestamp"):
            return None
        return self.reconcile(body)

    def delete(self, body: Mapping[str, Any]) -> None:
        """The ManagedSecret is going away: keep its versions for the recovery window, or purge them now."""
        meta = body["metadata"]
        key = RecordKey(meta["namespace"], meta["name"])
        spec = parse_spec(body.get("spec") or {}, meta["name"])
        with self._lock(key):
            loaded = self.vault.load(key)
            if loaded is None:
                return
            if loaded.record.metadata.uid != meta.get("uid") and DELETED_AT in loaded.attributes:
                return  # the record belongs to an earlier incarnation already deleted
            if spec.recovery_window_days == 0:
                self.vault.store.delete(key)
                log.info("deleted the stored versions of %s at once (recoveryWindowDays=0)", key)
                return
            now = self.vault.clock.now()
            purge = now + dt.timedelta(days=spec.recovery_window_days)
            self.vault.set_attributes(key, lambda a: {**a, DELETED_AT: _iso(now), PURGE_AFTER: _iso(purge)})
            log.info("kept the stored versions of %s until %s", key, _iso(purge))

    def purge_expired(self) -> list[RecordKey]:
        """Deletes stored records whose recovery window has passed. Reads only when nothing is due."""
        now = self.vault.clock.now()
        purged = []
        for stored in self.vault.store.list():
            due = stored.attributes.get(PURGE_AFTER)
            if due and dt.datetime.fromisoformat(due) <= now:
                try:
                    self.vault.store.delete(stored.key, expected_revision=stored.revision)
                except ManagedSecretsError:
                    continue
                purged.append(stored.key)
                log.info("purged the stored versions of %s: recovery window over", stored.key)
        return purged

    # --- the reconcile path ----------------------------------------------------------------------------

    def _reconcile(self, body: Mapping[str, Any], key: RecordKey) -> Outcome:
        meta = body["metadata"]
        outcome = Outcome()
        spec = parse_spec(body.get("spec") or {}, meta["name"])
        try:
            # The store attributes are read once here and kept current by the steps that write them.
            attrs: dict[str, str] = {}
            record = self._ensure_record(body, key, spec, outcome, attrs)
            if record is not None and record.current is not None:
                record = self._move_stage(body, key, record, attrs)
                record = self._rotate(body, key, spec, record, outcome, attrs=attrs)
            outcome.record = record
            if record is not None and record.current is not None:
                self._project(body, spec, record, outcome)
        except (ManagedSecretsError, ApiException) as e:
            if isinstance(e, StoreError):
                self.metrics.count_store_error("reconcile", e)
            elif isinstance(e, ApiException):
                self.metrics.count_api_error("reconcile", e)
            self._fail(body, outcome, e)
            self._write_status(body, spec, outcome)
            self._schedule(key, outcome)
            waits = (
                ProjectionConflict,
                SourceUnavailable,
                InvalidRequest,
                RenderError,
                RotationStepFailed,
                KeyringError,
            )
            if isinstance(e, waits):
                return outcome  # waits for a change (the Secret watch or a spec edit brings it back)
            raise
        self._write_status(body, spec, outcome)
        self._schedule(key, outcome)
        return outcome

    def _schedule(self, key: RecordKey, outcome: Outcome) -> None:
        self.metrics.set_next_rotation(key.namespace, key.name, outcome.next_rotation)
        self.metrics.observe_conditions(key.namespace, key.name, {c.type: c.status for c in outcome.conditions})
        times = [t for t in (outcome.next_rotation, outcome.wake_at) if t is not None]
        self.scheduler.schedule(key.namespace, key.name, min(times) if times else None)

    # --- rotation --------------------------------------------------------------------------------------

    def _read_secret_fn(self, namespace: str) -> Any:
        def read(name: str) -> Mapping[str, bytes]:
            try:
                secret = self._core.read_namespaced_secret(name, namespace)
            except ApiException as e:
                if e.status == 404:
                    return {}
                if e.status == 403:
                    raise ManagedSecretsError(
                        f"cannot read Secret {namespace}/{name}: the operator lacks 'get' on Secrets"
                    ) from None
                raise ManagedSecretsError(f"cannot read Secret {namespace}/{name}: HTTP {e.status}") from None
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

        return read

    def _rotate(
        self,
        body: Mapping[str, Any],
        key: RecordKey,
        spec: ManagedSecretSpec,
        record: SecretRecord,
        outcome: Outcome,
        *,
        attrs: dict[str, str],
    ) -> SecretRecord:
        """Resumes a rotation in flight, or starts one that is requested or due. ACSCurrent is never lost."""
        meta = body["metadata"]
        now = self.vault.clock.now()
        schedule = RotationSchedule.from_spec(spec.raw.get("rotation"))
        found = strategy_for(spec.raw)
        request = str((meta.get("annotations") or {}).get(ROTATE_ANNOTATION) or "")
        handled = attrs.get(LAST_ROTATE_REQUEST, "")
        if found is None:
            if request and request != handled:
                self._mark_request(key, request, attrs)
                self.events.warning(
                    body,
                    "RotationNotSupported",
                    f"rotation request {request!r} ignored: a valueFrom secret gets a new version when its source "
                    "Secret changes",
                )
            return record
        strategy, config = found
        read_secret = self._read_secret_fn(meta["namespace"])
        if record.current is not None and found[0].name == "sshKey":
            public = strategy.public_data(self.vault.open(record, record.current))
            outcome.public_key = public.get("publicKey")

        started: str | None = None
        if record.rotation is None and record.pending is None:
            due = self._next_due(schedule, record, key, attrs)
            if request and request != handled:
                started = request
            elif due is not None and rotation_due(due, now):
                started = f"schedule-{_iso(due)}"
            failure = self._create_failures.get(key)
            if started and failure and failure[1] > now:
                outcome.wake_at = failure[1]
                started = None
            if started:
                try:
                    record = self.engine.begin(
                        key, strategy, config, started, read_secret, key_id=spec.encryption_key
                    )
                except RotationInProgress as e:
                    self.metrics.record_rotation(strategy.name, RotationResult.REFUSED)
                    self._mark_request(key, started, attrs)
                    self.events.warning(body, "RotationInProgress", str(e))
                    return record
                except (ManagedSecretsError, ApiException) as e:
                    self.metrics.record_rotation(strategy.name, RotationResult.FAILED)
                    attempts = (failure[0] if failure else 0) + 1
                    retry = now + self.engine.backoff.delay(attempts)
                    self._create_failures[key] = (attempts, retry)
                    outcome.wake_at = retry
                    reason = describe("create", e)
                    outcome.conditions.append(Condition("RotationFailed", "True", _reason(e), reason))
                    self._warn_once(body, _reason(e), reason)
                    return record
                self._create_failures.pop(key, None)
                if request == started:
                    self._mark_request(key, request, attrs)
                pending_id = record.pending.id if record.pending else "?"
                self.events.normal(
                    body, "RotationStarted", f"rotation {started!r} created version {pending_id} as ACSPending"
                )
        elif request and request != handled:
            pending = record.pending
            if pending is not None and pending.request_id != request:
                self.metrics.record_rotation(strategy.name, RotationResult.REFUSED)
                self._mark_request(key, request, attrs)
                self.events.warning(
                    body,
                    "RotationInProgress",
                    f"rotation request {request!r} refused: version {pending.id} is already being rotated "
                    f"(request {pending.request_id!r})",
                )

        progress = record.rotation
        if progress is not None:
            if progress.next_attempt is not None and progress.next_attempt > now:
                outcome.wake_at = progress.next_attempt
            else:
                try:
                    record, finished = self.engine.advance(key, strategy, config, read_secret, spec.version_limit)
                except (ManagedSecretsError, ApiException) as e:
                    self.metrics.record_rotation(strategy.name, RotationResult.FAILED)
                    loaded = self.vault.load(key)
                    record = loaded.record if loaded else record
                    failed = record.rotation
                    message = failed.last_error if failed and failed.last_error else describe("rotation", e)
                    outcome.conditions.append(Condition("RotationFailed", "True", _reason(e), message))
                    outcome.wake_at = failed.next_attempt if failed else None
                    self._warn_once(body, _reason(e), message)
                    return record
                if finished and record.current is not None:
                    took = (self.vault.clock.now() - progress.started).total_seconds()
                    self.metrics.record_rotation(strategy.name, RotationResult.SUCCEEDED, max(0.0, took))
                    outcome.rotated = record.current.id
                    self.events.normal(
                        body,
                        "Rotated",
                        f"version {record.current.id} is now ACSCurrent"
                        + (f", {record.previous.id} ACSPrevious" if record.previous else ""),
                    )
                    log.info("rotated %s to %s", key, record.current.id)
        if record.current is not None and found[0].name == "sshKey":
            outcome.public_key = strategy.public_data(self.vault.open(record, record.current)).get("publicKey")
        outcome.conditions.append(
            Condition("RotationFailed", "False", "NoFailure", "the last rotation step succeeded")
        )
        outcome.next_rotation = self._next_due(schedule, record, key, attrs) if record.rotation is None else None
        return record

    def _next_due(
        self, schedule: RotationSchedule, record: SecretRecord, key: RecordKey, attrs: Mapping[str, str]
    ) -> dt.datetime | None:
        if record.current is None:
            return None
        last = record.current.created
        moved = attrs.get(LAST_STAGE_MOVE_TIME)
        if moved:
            # A rollback makes an old version current; the schedule counts from the move, not from its age.
            last = max(last, dt.datetime.fromisoformat(moved))
        return next_rotation_time(schedule, last, str(key))

    def _move_stage(
        self, body: Mapping[str, Any], key: RecordKey, record: SecretRecord, attrs: dict[str, str]
    ) -> SecretRecord:
        """UpdateSecretVersionStage, requested by annotation (``kubectl msecret rollback`` / ``label``).

        The annotation holds JSON ``{"label": "ACSCurrent", "version": "v3", "id": "<request id>"}``; each
        request id is applied once.
        """
        raw = (body["metadata"].get("annotations") or {}).get(MOVE_STAGE_ANNOTATION)
        if not raw:
            return record
        try:
            request = json.loads(raw)
            label, version, request_id = str(request["label"]), str(request["version"]), str(request["id"])
        except (ValueError, KeyError, TypeError):
            self.events.warning(body, "InvalidStageMove", f"annotation {MOVE_STAGE_ANNOTATION} is not valid JSON")
            return record
        if attrs.get(LAST_STAGE_MOVE) == request_id:
            return record
        now = _iso(self.vault.clock.now())
        try:
            moved = self.vault.update(
                key,
                lambda r: move_label(r, label, version) if r else r,
                attributes=lambda a: {**a, LAST_STAGE_MOVE: request_id, LAST_STAGE_MOVE_TIME: now},
            )
        except InvalidRequest as e:
            self.vault.set_attributes(key, lambda a: {**a, LAST_STAGE_MOVE: request_id})
            attrs[LAST_STAGE_MOVE] = request_id
            self.events.warning(body, "StageMoveRefused", f"moving {label} to {version} refused: {e}")
            return record
        assert moved is not None
        attrs.update({LAST_STAGE_MOVE: request_id, LAST_STAGE_MOVE_TIME: now})
        self.events.normal(body, "StageMoved", f"{label} moved to version {version}")
        log.info("moved %s of %s to %s", label, key, version)
        return moved

    def _mark_request(self, key: RecordKey, request: str, attrs: dict[str, str]) -> None:
        self.vault.set_attributes(key, lambda a: {**a, LAST_ROTATE_REQUEST: request})
        attrs[LAST_ROTATE_REQUEST] = request

    def _warn_once(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        old = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}
        before = old.get("RotationFailed") or {}
        if before.get("status") != "True" or before.get("message") != message:
            self.events.warning(body, reason, message)

    def _ensure_record(
        self,
        body: Mapping[str, Any],
        key: RecordKey,
        spec: ManagedSecretSpec,
        outcome: Outcome,
        attrs: dict[str, str],
    ) -> SecretRecord | None:
        """The stored record, created or updated from the value source; fills ``attrs`` with its attributes."""
        meta = body["metadata"]
        loaded = self.vault.load(key)
        if loaded is not None and DELETED_AT in loaded.attributes:
            if (meta.get("annotations") or {}).get(RESTORE_ANNOTATION, "").lower() != "true":
                until = loaded.attributes.get(PURGE_AFTER, "?")
                outcome.conditions.append(
                    Condition(
                        "Ready",
                        "False",
                        "InRecoveryWindow",
                        f"an earlier ManagedSecret {key} was deleted; its versions are kept until {until}. "
                        f"Add the annotation {RESTORE_ANNOTATION}: 'true' to restore them",
                    )
                )
                return None
            uid = meta["uid"]
            self.vault.update(
                key,
                lambda r: _with_uid(r, uid) if r else r,
                attributes=lambda a: {k: v for k, v in a.items() if k not in (DELETED_AT, PURGE_AFTER)},
            )
            self.events.normal(body, "Restored", f"restored {len(loaded.record.versions)} stored versions")
            loaded = self.vault.load(key)

        attrs.update(loaded.attributes if loaded else {})
        record = loaded.record if loaded else None
        if record is not None and record.metadata.encryption_key != spec.encryption_key:
            # Remember the pinned key on the record: KEK rotation re-wraps a pinned secret to that key only.
            pinned = spec.encryption_key
            record = self.vault.update(
                key, lambda r: replace(r, metadata=replace(r.metadata, encryption_key=pinned)) if r else r
            )
        value = self._source_value(body, spec, record)
        if value is not None:
            record = self._store_value(body, key, spec, value, outcome)
        if record is not None and len(record.versions) > spec.version_limit:
            limit = spec.version_limit
            record = self.vault.update(key, lambda r: apply_prune(r, limit) if r else r)
        return record

    def _source_value(
        self, body: Mapping[str, Any], spec: ManagedSecretSpec, record: SecretRecord | None
    ) -> SecretValue | None:
        """The value the source wants stored now, or None when the current version already has it."""
        if spec.generate is not None:
            current = self._open_current(record)
            if current is not None and _generated_value_current(spec.generate, current):
                return None
            return _generate(spec.generate, current)
        if spec.value_from is not None:
            return self._read_value_from(body["metadata"]["namespace"], spec)
        if record is not None and record.current is not None:
            return None
        found = strategy_for(spec.raw)
        if found is None:
            raise InvalidRequest(f"spec.{spec.source_kind or 'source'} is not a value source this operator knows")
        strategy, config = found
        meta = body["metadata"]
        ctx = RotationContext(
            secret_id=f"{meta['namespace']}/{meta['name']}",
            version_id=self.vault.next_version_id(record),
            config=config,
            read_secret=self._read_secret_fn(meta["namespace"]),
        )
        return initial_value(strategy, ctx)

    def _open_current(self, record: SecretRecord | None) -> SecretValue | None:
        if record is None or record.current is None:
            return None
        return self.vault.open(record, record.current)

    def _read_value_from(self, namespace: str, spec: ManagedSecretSpec) -> SecretValue:
        assert spec.value_from is not None
        name = spec.value_from.secret_name
        try:
            source = self._core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                raise SourceUnavailable(
                    f"source Secret {namespace}/{name} (spec.valueFrom) does not exist"
                ) from None
            if e.status == 403:
                raise SourceUnavailable(
                    f"cannot read source Secret {namespace}/{name}: the operator lacks 'get' on Secrets"
                ) from None
            raise
        data = {k: base64.b64decode(v) for k, v in (source.data or {}).items()}
        if spec.value_from.keys is not None:
            missing = sorted(set(spec.value_from.keys) - set(data))
            if missing:
                raise SourceUnavailable(f"source Secret {namespace}/{name} lacks the keys {missing}")
            data = {k: data[k] for k in spec.value_from.keys}
        if not data:
            raise SourceUnavailable(f"source Secret {namespace}/{name} has no data")
        return SecretValue.from_map(data)

    def _store_value(
        self,
        body: Mapping[str, Any],
        key: RecordKey,
        spec: ManagedSecretSpec,
        value: SecretValue,
        outcome: Outcome,
    ) -> SecretRecord:
        meta = body["metadata"]
        fingerprint = self.vault.fingerprint(value)
        created: list[str] = []

        def change(record: SecretRecord | None) -> SecretRecord:
            base = record or new_secret(_metadata(body, spec, self.vault.clock.now()))
            version_id = self.vault.next_version_id(base)
            sealed = self.vault.seal(base.secret_id, version_id, value, spec.encryption_key)
            updated, version = put_value(base, fingerprint=fingerprint, sealed=sealed, now=self.vault.clock.now())
            created[:] = [version.id] if updated is not base or record is None else []
            return updated

        record = self.vault.update(key, change)
        assert record is not None
        if created:
            outcome.new_version = created[0]
            self.events.normal(
                body, "VersionCreated", f"stored version {created[0]} as ACSCurrent ({_source_word(spec)})"
            )
            log.info("stored version %s of %s/%s", created[0], meta["namespace"], meta["name"])
        return record

    def _project(
        self, body: Mapping[str, Any], spec: ManagedSecretSpec, record: SecretRecord, outcome: Outcome
    ) -> None:
        meta = body["metadata"]
        current = record.current
        assert current is not None
        previous = record.previous if spec.target.include_previous else None
        desired = render(
            owner_namespace=meta["namespace"],
            owner_name=meta["name"],
            target=spec.target,
            current=self.vault.open(record, current),
            current_version=current.id,
            previous=self.vault.open(record, previous) if previous else None,
            previous_version=previous.id if previous else None,
            hash_key=self.vault.hash_key,
        )
        owner = Owner(f"{API_GROUP}/{API_VERSION}", KIND, meta["namespace"], meta["name"], meta["uid"])
        status = body.get("status") or {}
        old_name = str(status.get("projectedSecret") or "")
        with self.metrics.time_projection():
            action = apply_projection(
                self.api,
                desired,
                spec.target,
                owner,
                self.vault.hash_key,
                previously_projected=old_name == desired.name,
            )
        outcome.projection = action
        moved = bool(old_name) and old_name != desired.name and spec.target.creation_policy == "Owner"
        if moved and delete_projection(self.api, meta["namespace"], old_name, owner):
            self.events.normal(body, "ProjectionMoved", f"deleted the old projected Secret {old_name}")
        if action in (ApplyAction.CREATED, ApplyAction.UPDATED, ApplyAction.RESTORED):
            self.events.normal(
                body, "Projected", f"Secret {desired.name} now holds version {current.id} ({action})"
            )
        elif action is ApplyAction.DRIFT_REVERTED:
            self.events.normal(
                body, "DriftReverted", f"Secret {desired.name} was edited; restored version {current.id}"
            )
        if action in (ApplyAction.DRIFT_REPORTED, ApplyAction.MISSING_REPORTED):
            what = "was edited" if action is ApplyAction.DRIFT_REPORTED else "was deleted"
            outcome.conditions.append(
                Condition(
                    "Drifted", "True", "DriftDetected", f"Secret {desired.name} {what}; driftPolicy is Report"
                )
            )
        else:
            outcome.conditions.append(Condition("Drifted", "False", "InSync", f"Secret {desired.name} is in sync"))
        targets = [RestartTarget(t["kind"], t["name"]) for t in spec.raw.get("restartTargets") or []]
        if targets and action not in (ApplyAction.DRIFT_REPORTED, ApplyAction.MISSING_REPORTED):
            rolled = restart_targets(
                self.api, meta["namespace"], targets, meta["name"], current.id, first_version=current.number == 1
            )
            for target in rolled:
                self.events.normal(
                    body, "RestartedTarget", f"{target.kind} {target.name} rolled for version {current.id}"
                )
        outcome.conditions.append(
            Condition("Projected", "True", "Projected", f"Secret {desired.name} holds version {current.id}")
        )
        outcome.conditions.append(
            Condition("Ready", "True", "Ready", f"version {current.id} is current and projected")
        )

    # --- failure and status ----------------------------------------------------------------------------

    def _fail(self, body: Mapping[str, Any], outcome: Outcome, error: Exception) -> None:
        message = safe_message(error)
        reasons: dict[type[Exception], str] = {
            ProjectionConflict: "SecretNotOwned",
            SourceUnavailable: "SourceUnavailable",
            RenderError: "TemplateError",
            RestartError: "RestartFailed",
        }
        reason = reasons.get(type(error), type(error).__name__)
        if isinstance(error, RotationStepFailed):
            reason = error.reason
        outcome.conditions = [c for c in outcome.conditions if c.type not in ("Ready", "Projected")]
        if isinstance(error, (ProjectionConflict, ProjectionError, RenderError)):
            outcome.conditions.append(Condition("Projected", "False", reason, message))
        outcome.conditions.append(Condition("Ready", "False", reason, message))
        old = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}
        previous_ready = old.get("Ready") or {}
        if previous_ready.get("reason") != reason or previous_ready.get("message") != message:
            self.events.warning(body, reason, message)

    def _write_status(self, body: Mapping[str, Any], spec: ManagedSecretSpec, outcome: Outcome) -> None:
        meta = body["metadata"]
        record = outcome.record
        projected = spec.target.name if outcome.projection is not None else None
        rotation_fields = rotation_status(record, outcome)
        new = desired_status(body, record, outcome.conditions, projected, self.vault.clock.now())
        new.update(rotation_fields)
        if not status_differs(body.get("status") or {}, new):
            return
        try:
            self._custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, meta["namespace"], PLURAL, meta["name"], {"status": new}
            )
        except ApiException as e:
            if e.status == 404:
                return
            raise


def rotation_status(record: SecretRecord | None, outcome: Outcome) -> dict[str, Any]:
    """Status fields about rotation; ``None`` values remove a field (merge patch)."""
    fields: dict[str, Any] = {"nextRotationTime": _iso_s(outcome.next_rotation) if outcome.next_rotation else None}
    if record is None:
        return fields
    current = record.current
    rotated = current is not None and current.request_id is not None
    fields["lastRotationTime"] = _iso_s(current.created) if rotated and current is not None else None
    progress = record.rotation
    fields["rotation"] = (
        {
            "step": progress.step.value,
            "attempts": progress.attempts,
            "lastError": progress.last_error,
            "requestId": progress.request_id,
            "versionId": progress.version_id,
            "startTime": _iso_s(progress.started),
            "nextAttemptTime": _iso_s(progress.next_attempt) if progress.next_attempt else None,
        }
        if progress is not None
        else None
    )
    if outcome.public_key is not None:
        fields["publicKey"] = outcome.public_key
    rotating = progress is not None
    outcome.conditions.append(
        Condition(
            "Rotating",
            "True" if rotating else "False",
            f"Step{progress.step.value.capitalize()}" if progress is not None else "Idle",
            f"rotating to version {progress.version_id}, next step {progress.step.value}"
            if progress is not None
            else "no rotation in progress",
        )
    )
    return fields


def _iso_s(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def safe_message(error: BaseException) -> str:
    """Error text safe for status, Events and logs: our messages never hold values; API bodies might."""
    if isinstance(error, ApiException):
        return f"Kubernetes API error: HTTP {error.status} {error.reason}"
    if isinstance(error, ManagedSecretsError):
        return str(error)
    return f"unexpected {type(error).__name__}"


def _reason(error: BaseException) -> str:
    if isinstance(error, RotationStepFailed):
        return error.reason
    if isinstance(error, RotationInProgress):
        return "RotationInProgress"
    return "RotationError" if isinstance(error, ManagedSecretsError) else "APIError"


def _metadata(body: Mapping[str, Any], spec: ManagedSecretSpec, now: dt.datetime) -> SecretMetadata:
    meta = body["metadata"]
    return SecretMetadata(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        secret_type=spec.secret_type,
        created=now,
        description=spec.description,
        encryption_key=spec.encryption_key,
        tags=tuple(sorted((meta.get("labels") or {}).items())),
    )


def _with_uid(record: SecretRecord, uid: str) -> SecretRecord:
    return replace(record, metadata=replace(record.metadata, uid=uid))


def _generated_value_current(source: GenerateSource, current: SecretValue) -> bool:
    keys = set(current.keys())
    if keys != set(source.key_names):
        return False
    data = current.as_dict()
    return all(data.get(k) == v.encode() for k, v in source.static.items())


def _generate(source: GenerateSource, current: SecretValue | None) -> SecretValue:
    """A value with every generated key: kept from ``current`` where it has it, new where it does not."""
    kept = current.as_dict() if current is not None and current.keys() else {}
    data: dict[str, bytes] = {}
    for key in source.keys:
        data[key.name] = kept[key.name] if key.name in kept else generate_password(key.policy).encode()
    for name, text in source.static.items():
        data[name] = text.encode()
    return SecretValue.from_map(data)


def _source_word(spec: ManagedSecretSpec) -> str:
    return "generated" if spec.generate is not None else f"from {spec.source_kind}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
