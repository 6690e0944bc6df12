"""Where sealed records live: the VersionStore interface and its backends."""

from managed_secrets.store.base import RecordKey, StoredRecord, VersionStore
from managed_secrets.store.memory import InMemoryStore

__all__ = ["InMemoryStore", "RecordKey", "StoredRecord", "VersionStore"]
