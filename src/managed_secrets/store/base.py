"""The VersionStore interface: where sealed secret records live.

A record is one opaque document per ManagedSecret (its versions, sealed values and stage map, serialised by
the domain codec) plus a few string attributes the store keeps beside it (for example when the record was
marked deleted). The store never sees plaintext and never interprets the document.

Why compare-and-swap and nothing finer: every change to a secret (a new version, a label move, a rotation
step) is computed from one read and committed by one write guarded by the revision that read returned. If
anyone wrote in between, the write fails with ``WriteConflict`` and the caller re-reads and recomputes. So
stage moves are atomic without locks, and two operator replicas (or an operator and a human with kubectl)
can never interleave half-applied changes.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

from managed_secrets.errors import RecordNotFound, WriteConflict

__all__ = ["RecordKey", "RecordNotFound", "StoredRecord", "VersionStore", "WriteConflict"]


@dataclass(frozen=True, order=True)
class RecordKey:
    """Which ManagedSecret a record belongs to."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class StoredRecord:
    """A record as read from the store. ``revision`` is opaque and changes on every write."""

    key: RecordKey
    document: bytes
    revision: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"StoredRecord(key={self.key}, revision={self.revision!r}, "
            f"document=<{len(self.document)} bytes>, attributes={dict(self.attributes)!r})"
        )


class VersionStore(abc.ABC):
    """Reads and writes one record per ManagedSecret, every write guarded by the revision last read."""

    max_document_bytes: int = 16 * 1024 * 1024
    """The largest document a write may carry; the vault prunes old unlabelled versions to stay under it."""

    @abc.abstractmethod
    def read(self, key: RecordKey) -> StoredRecord:
        """The current record. Raises ``RecordNotFound``."""

    @abc.abstractmethod
    def write(
        self,
        key: RecordKey,
        document: bytes,
        *,
        expected_revision: str | None,
        attributes: Mapping[str, str] | None = None,
    ) -> StoredRecord:
        """Stores ``document`` if the record is still at ``expected_revision``.

        ``expected_revision=None`` creates the record and fails if it exists. Raises ``WriteConflict`` when
        the record changed (or exists, or vanished) since it was read; nothing is written then.
        ``attributes`` replace the stored ones when given and are kept as they are when ``None``.
        """

    @abc.abstractmethod
    def list(self) -> list[StoredRecord]:
        """Every record in the store, in key order."""

    def is_empty(self) -> bool:
        """True when the store holds no record at all (backends may answer without listing everything)."""
        return not self.list()

    @abc.abstractmethod
    def delete(self, key: RecordKey, *, expected_revision: str | None = None) -> None:
        """Deletes the record (only at ``expected_revision`` if given). Raises ``RecordNotFound``."""
