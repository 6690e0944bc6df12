"""The `KeyProvider` interface: who holds the key-encryption keys (KEKs).

Envelope encryption splits the work in two. Each secret version is encrypted with its own random data key
(`envelope.py`); only that small data key is sent to a key provider to be *wrapped* (encrypted) by a KEK.
The provider never sees a secret value, and the KEKs never leave it.

The interface is deliberately small, because it has to fit more than the built-in `LocalKeyring`:
an external KMS such as Vault Transit, a cloud KMS or an HSM holds its keys itself and only offers
"encrypt this small blob" / "decrypt this small blob" calls. Anything richer (listing key material,
exporting keys, choosing nonces) would shut those out. Key management (adding, promoting and removing keys)
is therefore *not* part of the interface: each provider does that in its own way, out of band for a KMS.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from managed_secrets.errors import KeyServiceUnavailable

__all__ = ["KeyProvider", "OpeningKeyProvider", "WrappedKey"]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under one KEK.

    `key_id` names the KEK that wrapped it; it is written into the sealed value's header so the right KEK
    is asked to unwrap it later. `blob` is opaque and provider-specific (for `LocalKeyring`: nonce followed
    by the AES-GCM ciphertext and tag).
    """

    key_id: str
    blob: bytes

    def __repr__(self) -> str:
        # The blob is ciphertext, but there is no reason to spray it over logs either.
        return f"WrappedKey(key_id={self.key_id!r}, blob=<{len(self.blob)} bytes>)"


class KeyProvider(abc.ABC):
    """Wraps and unwraps data keys with key-encryption keys that it keeps to itself.

    Contract for implementations:

    - Key ids are short printable ASCII strings (at most 255 bytes, no spaces). They are stored in every
      sealed value, so a provider must never reuse an id for different key material: a value sealed under
      the old key would then fail to open (or worse, open under a key it was not meant for).
    - `wrap_data_key` uses the *current primary* key and reports which one it used in `WrappedKey.key_id`.
    - The `aad` (additional authenticated data) must be authenticated together with the wrapped key, so that
      unwrapping with a different `aad` fails. The envelope layer puts the secret identity, version id and
      key id there, which is what stops a sealed value being copied to another secret or version.
    - `unwrap_data_key` raises `KeyNotFound` when it holds no key with that id, and `UnwrapFailed` when the
      blob does not authenticate (tampered, truncated, other `aad`). The envelope layer turns those into
      `UnknownKeyError` / `IntegrityError` naming the secret and version. Any other `KeyringError` (say, a
      KMS that cannot be reached) is passed on unchanged: a transient outage is not tampering.
    - Errors never carry key material or data keys.
    """

    @abc.abstractmethod
    def primary_key_id(self) -> str:
        """The id of the key that `wrap_data_key` uses now; new seals and re-wraps move to it."""

    @abc.abstractmethod
    def key_ids(self) -> frozenset[str]:
        """Every key id the provider can still unwrap with (the primary included).

        Used to decide which old keys can be retired once nothing references them any more.
        """

    @abc.abstractmethod
    def wrap_data_key(self, data_key: bytes, aad: bytes, key_id: str | None = None) -> WrappedKey:
        """Encrypt `data_key` under `key_id` (default: the primary key), authenticating `aad` with it.

        Raises `KeyNotFound` for a `key_id` the provider does not hold (a secret pinned to a retired key).
        """

    @abc.abstractmethod
    def unwrap_data_key(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a wrapped data key with the key `key_id`, checking `aad`.

        Raises `KeyNotFound` for an id the provider does not hold, `UnwrapFailed` if authentication fails.
        """


class OpeningKeyProvider(KeyProvider):
    """Stands in for the keyring while it cannot be opened yet (its external key service is unreachable).

    Every call raises ``KeyServiceUnavailable`` saying why, so a reconcile pass that needs a key fails with
    that reason (and is retried), while passes that need no key go on. ``open(keyring)`` swaps the real
    keyring in; from then on every call goes to it.
    """

    def __init__(self, reason: str) -> None:
        self._target: KeyProvider | None = None
        self._hash_key: bytes | None = None
        self.reason = reason

    @property
    def is_open(self) -> bool:
        return self._target is not None

    def open(self, provider: KeyProvider, hash_key: bytes) -> None:
        self._hash_key = hash_key
        self._target = provider

    def _ready(self) -> KeyProvider:
        target = self._target
        if target is None:
            raise KeyServiceUnavailable(f"the keyring is not open yet: {self.reason}")
        return target

    @property
    def hash_key(self) -> bytes:
        self._ready()
        assert self._hash_key is not None
        return self._hash_key

    def primary_key_id(self) -> str:
        return self._ready().primary_key_id()

    def key_ids(self) -> frozenset[str]:
        return self._ready().key_ids()

    def wrap_data_key(self, data_key: bytes, aad: bytes, key_id: str | None = None) -> WrappedKey:
        return self._ready().wrap_data_key(data_key, aad, key_id)

    def unwrap_data_key(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        return self._ready().unwrap_data_key(key_id, blob, aad)
