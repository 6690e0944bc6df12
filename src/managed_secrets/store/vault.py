"""SecretVault: the domain model, sealed with the keyring, kept in a VersionStore.

Every change is read → compute (pure domain operation) → compare-and-swap write, retried on conflict with a
fresh read, so concurrent writers never lose each other's versions or half-move a label. A change that
leaves the record as it was writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from managed_secrets.crypto import KeyProvider, fingerprint, open_sealed, seal
from managed_secrets.domain import SecretRecord, SecretValue, Version, apply_prune, codec, version_id_for
from managed_secrets.domain.clock import Clock
from managed_secrets.errors import CorruptRecord, RecordNotFound, RecordTooLarge, StoreError, WriteConflict
from managed_secrets.store.base import RecordKey, StoredRecord, VersionStore

__all__ = ["Loaded", "SecretVault"]

Change = Callable[[SecretRecord | None], SecretRecord | None]


@dataclass(frozen=True)
class Loaded:
    """A record as read, with the store's bookkeeping beside it."""

    record: SecretRecord
    stored: StoredRecord

    @property
    def attributes(self) -> Mapping[str, str]:
        return self.stored.attributes


class SecretVault:
    """Reads, seals, opens and changes secret records."""

    def __init__(
        self,
        store: VersionStore,
        provider: KeyProvider,
        hash_key: bytes | Callable[[], bytes],
        clock: Clock,
        *,
        max_attempts: int = 20,
    ) -> None:
        self.store = store
        self.provider = provider
        self.clock = clock
        self._hash_key = hash_key
        self._max_attempts = max_attempts

    # --- values ----------------------------------------------------------------------------------------

    def fingerprint(self, value: SecretValue) -> str:
        return fingerprint(value.to_bytes(), self.hash_key)

    @property
    def hash_key(self) -> bytes:
        """The fingerprint key; a callable is asked each time (a keyring still being opened raises)."""
        key = self._hash_key
        return key if isinstance(key, bytes) else key()

    def seal(self, secret_id: str, version_id: str, value: SecretValue, key_id: str | None = None) -> bytes:
        """Seals under the KEK ``key_id`` (a secret's ``encryptionKey``) or, by default, the primary KEK."""
        return seal(
            value.to_bytes(), secret_id=secret_id, version_id=version_id, provider=self.provider, key_id=key_id
        )

    def open(self, record: SecretRecord, version: Version) -> SecretValue:
        """The plaintext of ``version``. ``IntegrityError`` (for that version only) if it was tampered with."""
        raw = open_sealed(
            version.sealed, secret_id=record.secret_id, version_id=version.id, provider=self.provider
        )
        return SecretValue.from_bytes(raw)

    # --- records ---------------------------------------------------------------------------------------

    def load(self, key: RecordKey) -> Loaded | None:
        try:
            stored = self.store.read(key)
        except RecordNotFound:
            return None
        return self.loaded(stored)

    def loaded(self, stored: StoredRecord) -> Loaded:
        """A record already read (e.g. by ``store.list()``), decoded and checked like ``load``."""
        key = stored.key
        record = self._decode(stored)
        if record.secret_id != str(key):
            # A record copied (or a store name made to collide) from another secret: never open it as this one.
            raise CorruptRecord(f"stored record for {key} belongs to {record.secret_id}; refusing to use it")
        return Loaded(record=record, stored=stored)

    def update(
        self,
        key: RecordKey,
        change: Change,
        *,
        attributes: Callable[[Mapping[str, str]], Mapping[str, str]] | None = None,
        known: Loaded | None = None,
    ) -> SecretRecord | None:
        """Applies ``change`` to the stored record (None if there is none) and writes the result.

        ``change`` must be pure: it can run more than once when another writer wins a race. Returning the
        record unchanged (and attributes unchanged) writes nothing. ``attributes`` maps the stored
        attributes to the new ones.
        """
        loaded = self.change(key, change, attributes=attributes, known=known)
        return loaded.record if loaded is not None else None

    def change(
        self,
        key: RecordKey,
        change: Change,
        *,
        attributes: Callable[[Mapping[str, str]], Mapping[str, str]] | None = None,
        known: Loaded | None = None,
        known_absent: bool = False,
    ) -> Loaded | None:
        """``update`` returning the record as now stored (with its new revision), for the caller to keep.

        ``known`` is the record the caller has just read (or written): the first attempt computes from it
        instead of reading again; the compare-and-swap write still refuses it if it is stale, and the next
        attempt reads afresh. ``known_absent``: the caller knows there is no record (the first attempt creates
        without reading; if one exists after all, the create is refused and the next attempt reads).
        """
        for _ in range(self._max_attempts):
            loaded = known if known is not None or known_absent else self.load(key)
            known, known_absent = None, False
            before = loaded.record if loaded else None
            after = change(before)
            if after is None:
                return None
            old_attrs = dict(loaded.attributes) if loaded else {}
            new_attrs = dict(attributes(old_attrs)) if attributes else old_attrs
            if loaded and after == before and new_attrs == old_attrs:
                return loaded
            after, document = self._fit(key, after)
            try:
                stored = self.store.write(
                    key,
                    document,
                    expected_revision=loaded.stored.revision if loaded else None,
                    attributes=new_attrs,
                )
            except WriteConflict:
                continue
            return Loaded(record=after, stored=stored)
        raise StoreError(f"record for {key} kept changing: gave up after {self._max_attempts} attempts")

    def _fit(self, key: RecordKey, record: SecretRecord) -> tuple[SecretRecord, bytes]:
        """The record and its document, within the store's size budget: the oldest unlabelled versions are
        pruned until it fits (labelled ones never are); ``RecordTooLarge`` if even that is not enough."""
        document = codec.encode_record(record)
        keep = len(record.versions)
        while len(document) > self.store.max_document_bytes and keep > 1:
            keep -= 1
            smaller = apply_prune(record, keep)
            if smaller is record:
                break  # only labelled versions are left
            record, document = smaller, codec.encode_record(smaller)
        if len(document) > self.store.max_document_bytes:
            raise RecordTooLarge(
                f"the stored record of {key} would be {len(document)} bytes, over the store's budget of "
                f"{self.store.max_document_bytes} (one Kubernetes Secret holds at most 1 MiB): make the value "
                "smaller or move labels off old versions"
            )
        return record, document

    def set_attributes(self, key: RecordKey, attributes: Callable[[Mapping[str, str]], Mapping[str, str]]) -> None:
        self.update(key, lambda record: record, attributes=attributes)

    def next_version_id(self, record: SecretRecord | None) -> str:
        return version_id_for(record.next_version_number if record else 1)

    @staticmethod
    def _decode(stored: StoredRecord) -> SecretRecord:
        try:
            return codec.decode_record(stored.document)
        except CorruptRecord as e:
            raise CorruptRecord(f"stored record for {stored.key} is corrupt: {e}") from None
