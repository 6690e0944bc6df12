"""Where sealed records live: the VersionStore interface and its backends."""

from managed_secrets.store.base import RecordKey, StoredRecord, VersionStore
from managed_secrets.store.memory import InMemoryStore
from managed_secrets.store.vault import Loaded, SecretVault

__all__ = ["InMemoryStore", "Loaded", "RecordKey", "SecretVault", "StoredRecord", "VersionStore"]
