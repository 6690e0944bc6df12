"""Deletion, the recovery window, restore and purge.

Deleting a ManagedSecret keeps its stored versions for ``recoveryWindowDays`` (marked with the time they
may be purged), or deletes them at once when the window is 0. A ManagedSecret created again under the same
name finds them waiting and says so, until it carries the restore annotation; then every version comes back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import replace

from managed_secrets.domain import SecretRecord
from managed_secrets.domain.clock import iso
from managed_secrets.errors import ManagedSecretsError, safe_message
from managed_secrets.names import DELETED_AT, PURGE_AFTER, RESTORE_ANNOTATION, SOURCE_IDENTITY
from managed_secrets.service.context import Deps, Pass
from managed_secrets.service.resource import ManagedSecretResource
from managed_secrets.store import RecordKey

__all__ = ["delete", "load", "purge_expired", "recovery_window_days"]

log = logging.getLogger(__name__)


def load(p: Pass) -> bool:
    """Reads the stored record into ``p``; restores a deleted one when asked. False: it waits for a restore."""
    loaded = p.deps.vault.load(p.key)
    p.keep(loaded)
    if loaded is None or DELETED_AT not in loaded.attributes:
        return True
    if not p.resource.restore_requested:
        until = loaded.attributes.get(PURGE_AFTER, "?")
        p.outcome.add(
            "Ready",
            "False",
            "InRecoveryWindow",
            f"an earlier ManagedSecret {p.key} was deleted; its versions are kept until {until}. "
            f"Add the annotation {RESTORE_ANNOTATION}: 'true' to restore them",
        )
        p.keep(None)
        return False
    refusal = _restore_refusal(p, loaded.record, loaded.attributes)
    if refusal:
        p.outcome.add("Ready", "False", "RestoreRefused", refusal)
        if p.resource.old_condition("Ready").get("message") != refusal:
            p.warning("RestoreRefused", refusal)
        p.keep(None)
        return False
    uid = p.resource.uid
    p.keep(
        p.deps.vault.change(
            p.key,
            lambda r: _with_uid(r, uid) if r else r,
            attributes=lambda a: {k: v for k, v in a.items() if k not in (DELETED_AT, PURGE_AFTER)},
            known=loaded,
        )
    )
    p.normal("Restored", f"restored {len(loaded.record.versions)} stored versions")
    return True


def _restore_refusal(p: Pass, record: SecretRecord, attributes: Mapping[str, str]) -> str:
    """Why the stored versions may not be restored into this ManagedSecret ("" if they may)."""
    spec = p.spec
    if record.metadata.secret_type != spec.secret_type:
        return (
            f"the stored versions of {p.key} are of type {record.metadata.secret_type.value}, not "
            f"{spec.secret_type.value}: restore them with the spec they had"
        )
    stored = attributes.get(SOURCE_IDENTITY)
    if stored is not None and stored != spec.source_identity:
        return (
            f"the stored versions of {p.key} came from {stored}; this spec names {spec.source_identity}. "
            "Restore them with the source (Secret, server or endpoint) they had"
        )
    return ""


def recovery_window_days(resource: ManagedSecretResource) -> int:
    """``spec.deletion.recoveryWindowDays`` (default 7), read even from a spec that does not parse otherwise."""
    try:
        return resource.parse().recovery_window_days
    except (ManagedSecretsError, ValueError, TypeError):
        raw = (resource.raw_spec.get("deletion") or {}).get("recoveryWindowDays", 7)
        return raw if isinstance(raw, int) and 0 <= raw <= 30 else 7


def delete(deps: Deps, resource: ManagedSecretResource) -> None:
    """The ManagedSecret is going away: keep its versions for the recovery window, or purge them now."""
    key = resource.key
    days = recovery_window_days(resource)
    loaded = deps.vault.load(key)
    if loaded is None:
        return
    if loaded.record.metadata.uid != resource.uid and DELETED_AT in loaded.attributes:
        return  # the record belongs to an earlier incarnation already deleted
    if days == 0:
        deps.vault.store.delete(key)
        log.info("deleted the stored versions of %s at once (recoveryWindowDays=0)", key)
        return
    now = deps.now()
    purge = now + dt.timedelta(days=days)
    deps.vault.change(
        key, lambda r: r, attributes=lambda a: {**a, DELETED_AT: iso(now), PURGE_AFTER: iso(purge)}, known=loaded
    )
    log.info("kept the stored versions of %s until %s", key, iso(purge))


def purge_expired(deps: Deps) -> list[RecordKey]:
    """Deletes stored records whose recovery window has passed. Reads only when nothing is due."""
    now = deps.now()
    purged = []
    for stored in deps.vault.store.list():
        due = stored.attributes.get(PURGE_AFTER)
        if due and dt.datetime.fromisoformat(due) <= now:
            try:
                deps.vault.store.delete(stored.key, expected_revision=stored.revision)
            except ManagedSecretsError as e:
                log.info("purge of %s skipped: %s", stored.key, safe_message(e))
                continue
            purged.append(stored.key)
            log.info("purged the stored versions of %s: recovery window over", stored.key)
    return purged


def _with_uid(record: SecretRecord, uid: str) -> SecretRecord:
    return replace(record, metadata=replace(record.metadata, uid=uid))
