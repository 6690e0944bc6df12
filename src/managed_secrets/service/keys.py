"""Key-encryption-key rotation: add a new primary KEK, re-wrap every version's data key, retire old KEKs.

Triggered by the annotation ``managedsecrets.io/rotate-kek: <request id>`` on the keyring Secret
(``kubectl msecret rotate-kek``). Re-wrapping touches only the wrapped data key of each version (the
ciphertext stays), one compare-and-swap write per record, and a KEK is removed from the keyring only when
no stored version references it any more. The sweep runs again on every purge interval, so a re-wrap cut
short by a restart completes later; when everything is on the primary KEK it reads and writes nothing.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from managed_secrets.cluster.keyring import KeyringSecret
from managed_secrets.crypto import LocalKeyring, key_id_of, rewrap
from managed_secrets.crypto.provider import OpeningKeyProvider
from managed_secrets.crypto.sealing import ExternalKey
from managed_secrets.domain import SecretRecord
from managed_secrets.errors import KeyServiceUnavailable, ManagedSecretsError, WriteConflict, safe_message
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.names import KEK_HANDLED_ANNOTATION, ROTATE_KEK_ANNOTATION
from managed_secrets.store import SecretVault

log = logging.getLogger(__name__)

HANDLED_ANNOTATION = KEK_HANDLED_ANNOTATION


class KeyManager:
    """KEK rotation and re-wrapping (the leader), keyring reloads (the others), re-sealing under a new external
    key (the leader). ``keyring`` may be ``None`` while a sealed keyring cannot be opened yet: until ``attach``
    everything here is a no-op."""

    def __init__(self, vault: SecretVault, keyring: LocalKeyring | None, secret: KeyringSecret) -> None:
        self.vault = vault
        self._keyring = keyring
        self.secret = secret
        self._lock = threading.Lock()
        # Keys found unused by a sweep: retired only if the next sweep finds them unused too (another replica
        # may have sealed under the old primary just before it heard of the new one).
        self._unused: set[str] = set()

    @property
    def keyring(self) -> LocalKeyring:
        if self._keyring is None:
            raise KeyServiceUnavailable("the keyring is not open yet")
        return self._keyring

    @property
    def ready(self) -> bool:
        return self._keyring is not None

    def attach(self, keyring: LocalKeyring) -> None:
        self._keyring = keyring

    def reseal(self, current: str | None = None) -> str | None:
        """The leader seals the keyring again when it is plain or sealed under an external key that is no
        longer current (the KMS rotated its key); returns why it did, or ``None``. One Status call when
        nothing is to do; one Encrypt more when it re-seals."""
        if not self.ready or self.secret.codec.external is None:
            return None
        with self._lock:
            for _ in range(5):
                try:
                    why = self.secret.reseal_if_stale(current)
                except WriteConflict:
                    continue
                if why is not None:
                    log.info(
                        "keyring sealed again under %s (%s before); the previous external key is no longer "
                        "needed by the keyring",
                        self.secret.codec.external.describe(),
                        why,
                    )
                return why
        raise ManagedSecretsError("the keyring Secret kept changing; it was not sealed again")

    def sync(self) -> bool:
        """A replica that does not run the KEK jobs takes the keyring Secret's keys and primary (another
        replica rotated it); returns whether anything changed. Keys are never dropped here."""
        if not self.ready:
            return False
        stored, _, _ = self.secret.read()
        changed = self.keyring.merge(stored)
        if changed:
            log.info("keyring reloaded: primary key-encryption key %s", self.keyring.primary_key_id())
        return changed

    def handle_request(self, annotations: dict[str, str]) -> str | None:
        """Starts a KEK rotation if the keyring Secret carries a request not handled yet; returns the new id."""
        request = annotations.get(ROTATE_KEK_ANNOTATION)
        if not request or annotations.get(HANDLED_ANNOTATION) == request or not self.ready:
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
            except WriteConflict:
                self.keyring.remove_key(new_id)  # never primary, so nothing was sealed under it
                continue
            except Exception:
                # E.g. the key service cannot seal it now: the rotation is not started, and says why.
                self.keyring.remove_key(new_id)
                raise
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
        if not self.ready:
            return 0
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


def _worth_logging(failures: int) -> bool:
    """The 1st, 2nd, 4th, 8th… failure in a row: an outage is reported without a line per attempt."""
    return failures & (failures - 1) == 0


class KeyringOpener:
    """Opens a sealed keyring that could not be opened at start-up (its key service was unreachable or
    refused), trying again with backoff (1 s doubling to 30 s, jittered) until it opens or the operator stops.

    It never creates a keyring in place of one that does not open. Once open, the keyring goes into the
    vault's provider and the key manager, and the objects that failed for want of it are tried again at once.
    """

    def __init__(
        self,
        load: Callable[[], LocalKeyring],
        opening: OpeningKeyProvider,
        keys: KeyManager,
        service: KeyringUser,
        metrics: OperatorMetrics,
        *,
        stop: threading.Event,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
    ) -> None:
        self._load = load
        self._opening = opening
        self._keys = keys
        self._service = service
        self._metrics = metrics
        self._stop = stop
        self._first = first_delay
        self._max = max_delay

    def run(self) -> bool:
        delay = self._first
        failures = 0
        while not self._stop.wait(delay * random.uniform(0.8, 1.2)):  # noqa: S311 - jitter, not secrecy
            try:
                keyring = self._load()
            except ManagedSecretsError as e:
                failures += 1
                self._opening.reason = safe_message(e)
                if _worth_logging(failures):
                    log.error("the keyring still cannot be opened (attempt %d): %s", failures, safe_message(e))
                delay = min(self._max, delay * 2)
                continue
            self._opening.open(keyring, keyring.hash_key)
            self._keys.attach(keyring)
            self._metrics.set_keyring_open(True)
            log.info("keyring opened after %d failed attempt(s): serving every ManagedSecret again", failures + 1)
            self._service.keyring_opened()
            return True
        return False


class KeyringUser(Protocol):
    def keyring_opened(self) -> None: ...


class KeyServiceMonitor:
    """Checks the external key service every ``interval`` seconds (a KMS v2 Status call, or a PKCS#11 session
    and key lookup): ``managed_secrets_key_service_up`` and a log line when it goes away or comes back. While
    it is away the operator goes on with the keys it holds in memory (degraded: a KEK rotation or a first
    start elsewhere would have to wait). On the leader, a changed current key id re-seals the keyring."""

    def __init__(
        self,
        external: ExternalKey,
        keys: KeyManager,
        metrics: OperatorMetrics,
        interval: float,
        *,
        leader: Callable[[], bool],
    ) -> None:
        self.external = external
        self.keys = keys
        self.metrics = metrics
        self.interval = interval
        self.leader = leader
        self.failures = 0

    def check(self) -> bool:
        """One check; returns whether the service answered."""
        try:
            current = self.external.current_key_id()
        except ManagedSecretsError as e:
            self.failures += 1
            self.metrics.set_key_service_up(self.external.provider, 0)
            if _worth_logging(self.failures):
                log.warning(
                    "the key service is unavailable (%d check(s) in a row): %s; %s",
                    self.failures,
                    safe_message(e),
                    "serving with the keys held in memory" if self.keys.ready else "the keyring is not open",
                )
            return False
        recovered = self.failures > 0
        if recovered:
            log.info("the key service answers again after %d failed check(s)", self.failures)
        self.failures = 0
        self.metrics.set_key_service_up(self.external.provider, 1)
        if self.leader() and self.keys.ready:
            try:
                self.keys.reseal(current)
                if recovered:
                    # A KEK rotation requested while the key service was away goes now.
                    self.keys.handle_request(self.keys.secret.annotations())
            except ManagedSecretsError as e:
                log.warning("could not seal the keyring again: %s", safe_message(e))
        return True

    def run(self, stop: threading.Event) -> None:
        while True:
            self.check()
            if stop.wait(self.interval):
                return
