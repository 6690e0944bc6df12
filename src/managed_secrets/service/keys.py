"""Key-encryption-key rotation: add a new primary KEK, re-wrap every version's data key, retire old KEKs.

Triggered by the annotation ``managedsecrets.io/rotate-kek: <request id>`` on the keyring Secret
(``kubectl msecret rotate-kek``). Re-wrapping touches only the wrapped data key of each version (the
ciphertext stays), one compare-and-swap write per record, and a KEK is removed from the keyring only when
no stored version references it any more. The sweep runs again on every purge interval, so a re-wrap cut
short by a restart completes later; when everything is on the primary KEK it reads and writes nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from managed_secrets.cluster.keyring import KeyringSecret
from managed_secrets.crypto import LocalKeyring, key_id_of, rewrap
from managed_secrets.domain import SecretRecord
from managed_secrets.errors import ManagedSecretsError, WriteConflict
from managed_secrets.names import KEK_HANDLED_ANNOTATION, ROTATE_KEK_ANNOTATION
from managed_secrets.store import SecretVault

log = logging.getLogger(__name__)

HANDLED_ANNOTATION = KEK_HANDLED_ANNOTATION


class KeyManager:
    def __init__(self, vault: SecretVault, keyring: LocalKeyring, secret: KeyringSecret) -> None:
        self.vault = vault
        self.keyring = keyring
        self.secret = secret
        self._lock = threading.Lock()
        # Keys found unused by a sweep: retired only if the next sweep finds them unused too (another replica
        # may have sealed under the old primary just before it heard of the new one).
        self._unused: set[str] = set()

    def sync(self) -> bool:
        """A replica that does not run the KEK jobs takes the keyring Secret's keys and primary (another
        replica rotated it); returns whether anything changed. Keys are never dropped here."""
        stored, _, _ = self.secret.read()
        changed = self.keyring.merge(stored)
        if changed:
            log.info("keyring reloaded: primary key-encryption key %s", self.keyring.primary_key_id())
        return changed

    def handle_request(self, annotations: dict[str, str]) -> str | None:
        """Starts a KEK rotation if the keyring Secret carries a request not handled yet; returns the new id."""
        request = annotations.get(ROTATE_KEK_ANNOTATION)
        if not request or annotations.get(HANDLED_ANNOTATION) == request:
            return None
        with self._lock:
            _, _, current = self.secret.read()
            if current.get(HANDLED_ANNOTATION) == request:
                return None  # handled while we waited for the lock (our own writes also trigger events)
            new_id = self._add_primary(request)
        log.info("key-encryption key %s is now primary; re-wrapping stored versions", new_id)
        self.rewrap_all()
        return new_id

    def _add_primary(self, request: str) -> str:
        """Persists a new KEK first (not yet primary), then makes it primary, so no value is ever sealed under
        a key the keyring Secret does not hold."""
        for _ in range(5):
            stored, revision, _ = self.secret.read()
            _check_known(stored, self.keyring)
            new_id = self.keyring.add_key(make_primary=False)
            try:
                self.secret.write(self.keyring, revision, {})
            except Exception:
                self.keyring.remove_key(new_id)  # never primary, so nothing was sealed under it
                continue
            self.keyring.set_primary(new_id)
            for _ in range(5):
                _, revision, _ = self.secret.read()
                try:
                    self.secret.write(self.keyring, revision, {HANDLED_ANNOTATION: request})
                    return new_id
                except WriteConflict:
                    continue
            raise ManagedSecretsError("the keyring Secret kept changing; the new primary key was not recorded")
        raise ManagedSecretsError("the keyring Secret kept changing; KEK rotation not started")

    def rewrap_all(self) -> int:
        """Moves every stored version to the primary KEK, then retires KEKs nothing references. Returns writes."""
        primary = self.keyring.primary_key_id()
        writes = 0
        in_use: set[str] = {primary}
        unsure = False
        for stored in self.vault.store.list():
            try:
                # The listing already holds each record: no read per record when nothing needs re-wrapping.
                loaded = self.vault.loaded(stored)
                record = loaded.record
                keys = _keys_of(record)
                target = self._target_key(record)
                if keys - {target}:
                    updated = self.vault.update(stored.key, self._rewrapped, known=loaded)
                    writes += 1
                    keys = _keys_of(updated) if updated is not None else set()
            except ManagedSecretsError as e:
                # A record we cannot read or re-wrap may still need its old key: retire nothing this time.
                log.warning("could not re-wrap the stored versions of %s: %s", stored.key, e)
                unsure = True
                continue
            in_use |= keys
            if record.metadata.encryption_key:
                in_use.add(record.metadata.encryption_key)  # pinned keys are never retired
        if not unsure:
            self._retire(in_use)
        return writes

    def _target_key(self, record: SecretRecord) -> str:
        """A secret pinned by ``spec.encryptionKey`` stays on that key while the keyring has it."""
        pinned = record.metadata.encryption_key
        return pinned if pinned and pinned in self.keyring.key_ids() else self.keyring.primary_key_id()

    def _rewrapped(self, record: SecretRecord | None) -> SecretRecord | None:
        if record is None:
            return None
        target = self._target_key(record)
        versions = tuple(
            replace(
                v,
                sealed=rewrap(
                    v.sealed, secret_id=record.secret_id, version_id=v.id, provider=self.keyring, key_id=target
                ),
            )
            for v in record.versions
        )
        return replace(record, versions=versions)

    def _retire(self, in_use: set[str]) -> None:
        found = self.keyring.key_ids() - in_use - {self.keyring.primary_key_id()}
        unused, self._unused = found & self._unused, set(found)
        if not unused:
            return
        with self._lock:
            _, revision, _ = self.secret.read()
            for key_id in sorted(unused):
                self.keyring.remove_key(key_id)
            try:
                self.secret.write(self.keyring, revision, {})
            except WriteConflict:
                log.info("keyring Secret changed while retiring keys; the next sweep retries")
                return
        log.info("retired key-encryption keys %s: no stored version references them", sorted(unused))


def _keys_of(record: SecretRecord) -> set[str]:
    return {key_id_of(v.sealed, secret_id=record.secret_id, version_id=v.id) for v in record.versions}


def _check_known(stored: LocalKeyring, ours: LocalKeyring) -> None:
    """Refuse to overwrite a keyring Secret holding keys this process does not (someone else rotated)."""
    missing = stored.key_ids() - ours.key_ids()
    if missing:
        raise ManagedSecretsError(
            f"the keyring Secret holds keys this operator does not know: {sorted(missing)}; restart it to reload"
        )
