"""Deletion, the recovery window, restore and purge.

Deleting a ManagedSecret keeps its stored versions for ``recoveryWindowDays`` (marked with the time they
may be purged), or deletes them at once when the window is 0. A ManagedSecret created again under the same
name finds them waiting and says so, until it carries the restore annotation; then every version comes back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from managed_secrets.domain import SecretRecord, new_secret, version_id_for
from managed_secrets.domain.clock import iso
from managed_secrets.errors import CorruptRecord, IntegrityError, ManagedSecretsError, RecordNotFound, safe_message
from managed_secrets.names import (
    DELETED_AT,
    LAST_ROTATE_REQUEST,
    LAST_STAGE_MOVE,
    PURGE_AFTER,
    REINITIALIZE_ANNOTATION,
    RESTORE_ANNOTATION,
    SOURCE_IDENTITY,
    StageMoveRequest,
)
from managed_secrets.service.context import Deps, Pass
from managed_secrets.service.resource import ManagedSecretResource
from managed_secrets.store import RecordKey

__all__ = ["delete", "load", "purge_expired", "recovery_window_days"]

log = logging.getLogger(__name__)


def load(p: Pass) -> bool:
    """Reads the stored record into ``p``; restores a deleted one when asked. False: it waits for a restore."""
    listed = p.deps.listed()
    if listed is not None and high_water(p.resource.status) == 0 and listed.store(p.key) is None:
        # A new object whose record the store watch does not list: not read. (Were one created meanwhile,
        # the create is refused and read then; an object whose status shows versions is always read, so a
        # lost store is never taken for a new one.)
        loaded = None
        p.absent = True
    else:
        loaded = p.deps.vault.load(p.key)
    p.keep(loaded)
    if loaded is None:
        return _store_lost(p)
    if DELETED_AT not in loaded.attributes:
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


def high_water(status: Mapping[str, Any]) -> int:
    """The next version number the status proves (0: the status shows no versions were ever stored)."""
    ids = [str(v.get("id", "")) for v in status.get("versions") or [] if isinstance(v, dict)]
    numbers = [int(i[1:]) for i in ids if i[1:].isdigit()]
    for field in ("currentVersion", "previousVersion", "pendingVersion"):
        value = status.get(field)
        if isinstance(value, str) and value[1:].isdigit():
            numbers.append(int(value[1:]))
    recorded = status.get("nextVersion")
    return max([int(recorded) if isinstance(recorded, int) else 0, *(n + 1 for n in numbers)])


def _store_lost(p: Pass) -> bool:
    """No stored record. Fine for a new object; a fault for one whose status shows versions were stored.

    Nothing is generated then until a person sets ``managedsecrets.io/reinitialize`` to the version id the
    condition names; the new record starts at that number, so no version id is ever issued twice.
    """
    start = high_water(p.resource.status)
    if start == 0:
        return True
    first = version_id_for(start)
    if p.resource.annotations.get(REINITIALIZE_ANNOTATION) == first:
        # The requests on the object were handled before the loss: they must not run again on the new record.
        handled = {LAST_ROTATE_REQUEST: p.resource.rotate_request} if p.resource.rotate_request else {}
        with contextlib.suppress(ValueError):
            handled[LAST_STAGE_MOVE] = StageMoveRequest.decode(p.resource.stage_move_request).id
        p.keep(
            p.deps.vault.change(
                p.key,
                lambda r: r or replace(new_secret(p.new_metadata()), next_version_number=start),
                attributes=lambda a: {**a, **handled},
            )
        )
        p.warning("Reinitialized", f"the stored versions were lost; starting again at version {first}")
        return True
    message = (
        f"the stored versions of {p.key} are gone (was the store Secret deleted?); nothing new is generated. "
        f"Restore the store Secret from a backup, or set the annotation {REINITIALIZE_ANNOTATION}: '{first}' "
        "to start again with new values"
    )
    p.outcome.add("Ready", "False", "StoreLost", message)
    p.deps.metrics.count_store_error("reconcile", "StoreLost")
    if p.resource.old_condition("Ready").get("reason") != "StoreLost":
        p.warning("StoreLost", message)
    return False


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
    try:
        loaded = deps.vault.load(key)
    except (CorruptRecord, IntegrityError) as e:
        # Deletion always completes. A record this object cannot read (damaged, or copied from another
        # object) is not marked; with no recovery window its store Secret, which is this object's, goes.
        log.warning("the stored record of %s is unusable (%s); deleting the ManagedSecret anyway", key, e)
        if days == 0:
            with contextlib.suppress(RecordNotFound):
                deps.vault.store.delete(key)
        return
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
