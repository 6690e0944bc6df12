"""An in-memory VersionStore: a real backend for unit tests and benchmarks, with the same semantics."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from managed_secrets.errors import RecordNotFound, WriteConflict
from managed_secrets.store.base import RecordKey, StoredRecord, VersionStore


class InMemoryStore(VersionStore):
    """Thread-safe; revisions are increasing integers rendered as strings."""

    def __init__(self) -> None:
        self._records: dict[RecordKey, StoredRecord] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def read(self, key: RecordKey) -> StoredRecord:
        with self._lock:
            try:
                return self._records[key]
            except KeyError:
                raise RecordNotFound(f"no stored record for {key}") from None

    def write(
        self,
        key: RecordKey,
        document: bytes,
        *,
        expected_revision: str | None,
        attributes: Mapping[str, str] | None = None,
    ) -> StoredRecord:
        with self._lock:
            current = self._records.get(key)
            if expected_revision is None and current is not None:
                raise WriteConflict(f"record for {key} already exists")
            if expected_revision is not None:
                if current is None:
                    raise WriteConflict(f"record for {key} was deleted since revision {expected_revision}")
                if current.revision != expected_revision:
                    raise WriteConflict(
                        f"record for {key} changed: expected revision {expected_revision}, "
                        f"found {current.revision}"
                    )
            self._counter += 1
            kept = dict(current.attributes) if current is not None else {}
            record = StoredRecord(
                key=key,
                document=bytes(document),
                revision=str(self._counter),
                attributes=dict(attributes) if attributes is not None else kept,
            )
            self._records[key] = record
            return record

    def list(self) -> list[StoredRecord]:
        with self._lock:
            return [self._records[k] for k in sorted(self._records)]

    def delete(self, key: RecordKey, *, expected_revision: str | None = None) -> None:
        with self._lock:
            current = self._records.get(key)
            if current is None:
                raise RecordNotFound(f"no stored record for {key}")
            if expected_revision is not None and current.revision != expected_revision:
                raise WriteConflict(f"record for {key} changed since revision {expected_revision}")
            del self._records[key]
