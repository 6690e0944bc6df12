"""Where a version's value comes from: ``generate``, ``valueFrom`` a Secret, or a strategy's first value.

``ensure_value`` stores a new version only when the source wants one (the generated keys changed, the
``valueFrom`` Secret changed, or there is no value yet), pins the record to ``spec.encryptionKey`` and
prunes unlabelled versions beyond ``versionLimit``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from managed_secrets.domain import SecretRecord, SecretValue, apply_prune, new_secret, put_value
from managed_secrets.errors import InvalidRequest, SourceUnavailable
from managed_secrets.names import SOURCE_IDENTITY, SOURCE_LABEL
from managed_secrets.rotation.engine import initial_value
from managed_secrets.rotation.strategies import strategy_for
from managed_secrets.rotation.strategies.generic import GenerateStrategy
from managed_secrets.rotation.strategy import RotationContext
from managed_secrets.service.context import Pass

__all__ = ["ensure_value"]

log = logging.getLogger(__name__)


def ensure_value(p: Pass) -> None:
    """Brings the stored record in line with the value source (``p.loaded`` holds what is stored)."""
    vault = p.deps.vault
    record = p.record
    spec = p.spec
    if record is not None and record.metadata.encryption_key != spec.encryption_key:
        # Remember the pinned key on the record: KEK rotation re-wraps a pinned secret to that key only.
        pinned = spec.encryption_key
        p.keep(
            vault.change(
                p.key,
                lambda r: replace(r, metadata=replace(r.metadata, encryption_key=pinned)) if r else r,
                known=p.loaded,
            )
        )
    value = source_value(p)
    if value is not None:
        store_value(p, value)
    record = p.record
    if record is not None and len(record.versions) > spec.version_limit:
        limit = spec.version_limit
        p.keep(vault.change(p.key, lambda r: apply_prune(r, limit) if r else r, known=p.loaded))


def source_value(p: Pass) -> SecretValue | None:
    """The value the source wants stored now, or ``None`` when the current version already has it."""
    spec = p.spec
    record = p.record
    current = p.open_current()
    if spec.value_from is not None:
        return read_value_from(p)
    found = strategy_for(spec.raw)
    if found is None:
        raise InvalidRequest(f"spec.{spec.source_kind or 'source'} is not a value source this operator knows")
    strategy, config = found
    if spec.generate is not None and current is not None:
        if GenerateStrategy.matches_spec(config, current):
            return None
    elif current is not None:
        return None  # a strategy's value changes only by rotation
    ctx = RotationContext(
        secret_id=str(p.key),
        version_id=p.deps.vault.next_version_id(record),
        config=config,
        current=current,
        read_secret=p.read_secret,
        report=p.report,
    )
    return initial_value(strategy, ctx)


def read_value_from(p: Pass) -> SecretValue:
    source = p.spec.value_from
    assert source is not None
    namespace, name = p.resource.namespace, source.secret_name
    where = f"source Secret {namespace}/{name}"
    live = p.read_referenced(name)
    if live is None:
        raise SourceUnavailable(f"{where} (spec.valueFrom) does not exist")
    p.outcome.source_revision = live.resource_version
    if live.labels.get(SOURCE_LABEL) == "true":
        p.outcome.add("SourceWatched", "True", "Labeled", f"changes of {where} are seen at once")
    else:
        p.outcome.add(
            "SourceWatched",
            "False",
            "NotLabeled",
            f"{where} lacks the label {SOURCE_LABEL}=true: the operator watches only labelled Secrets, so a "
            "change of it is seen only at the next reconcile (a spec change or an operator restart)",
        )
    data = dict(live.data)
    if source.keys is not None:
        missing = sorted(set(source.keys) - set(data))
        if missing:
            raise SourceUnavailable(f"{where} lacks the keys {missing}")
        data = {k: data[k] for k in source.keys}
    if not data:
        raise SourceUnavailable(f"{where} has no data")
    return SecretValue.from_map(data)


def store_value(p: Pass, value: SecretValue) -> None:
    """PutSecretValue: ``value`` becomes ACSCurrent under a new version id (no-op if it already is)."""
    vault = p.deps.vault
    spec = p.spec
    fingerprint = vault.fingerprint(value)
    created: list[str] = []

    def change(record: SecretRecord | None) -> SecretRecord:
        now = vault.clock.now()
        base = record or new_secret(p.new_metadata(now))
        version_id = vault.next_version_id(base)
        sealed = vault.seal(base.secret_id, version_id, value, spec.encryption_key)
        updated, version = put_value(base, fingerprint=fingerprint, sealed=sealed, now=now)
        created[:] = [version.id] if updated is not base or record is None else []
        return updated

    identity = spec.source_identity
    p.keep(
        vault.change(
            p.key,
            change,
            # The source identity is recorded when the record is made (an older record keeps what it has).
            attributes=lambda a: a if SOURCE_IDENTITY in a else {**a, SOURCE_IDENTITY: identity},
            known=p.loaded,
            known_absent=p.absent and p.loaded is None,
        )
    )
    if created:
        p.outcome.new_version = created[0]
        how = "generated" if spec.generate is not None else f"from {spec.source_kind}"
        if p.record is not None and len(p.record.versions) > 1:
            # The first version of a new ManagedSecret is reported by its status alone (no Event write).
            p.normal("VersionCreated", f"stored version {created[0]} as ACSCurrent ({how})")
        log.info("stored version %s of %s", created[0], p.key)
