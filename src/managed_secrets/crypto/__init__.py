"""Envelope encryption of secret versions, the local keyring, and the `KeyProvider` interface.

- `seal` / `open_sealed` / `rewrap`: one random data key per version, wrapped by a key-encryption key.
- `LocalKeyring`: the built-in `KeyProvider`; external KMSs implement the same small interface.
- `fingerprint`: keyed HMAC of a value, to compare or annotate without revealing it.

No Kopf or Kubernetes imports here: this layer sits under the store and the operator.
"""

from managed_secrets.crypto.envelope import (
    FORMAT_VERSION,
    MAGIC,
    key_id_of,
    keys_in_use,
    open_sealed,
    rewrap,
    seal,
)
from managed_secrets.crypto.fingerprint import FINGERPRINT_PREFIX, fingerprint
from managed_secrets.crypto.keyring import KEYRING_FORMAT, KEYRING_FORMAT_VERSION, LocalKeyring
from managed_secrets.crypto.provider import KeyProvider, WrappedKey

__all__ = [
    "FINGERPRINT_PREFIX",
    "FORMAT_VERSION",
    "KEYRING_FORMAT",
    "KEYRING_FORMAT_VERSION",
    "MAGIC",
    "KeyProvider",
    "LocalKeyring",
    "WrappedKey",
    "fingerprint",
    "key_id_of",
    "keys_in_use",
    "open_sealed",
    "rewrap",
    "seal",
]
