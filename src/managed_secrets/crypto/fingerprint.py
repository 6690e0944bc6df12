"""Keyed fingerprints of secret values.

A fingerprint lets the operator tell whether two values are equal (idempotent PutSecretValue: same version
id and same value is a no-op) and mark a projected Secret with the data it carries, without storing or
showing the value. A plain hash would not do: a short password can be found from its SHA-256 by trying
candidates. HMAC under the keyring's `hash_key` cannot be checked without that key.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["FINGERPRINT_PREFIX", "fingerprint"]

FINGERPRINT_PREFIX = "hmac-sha256:"
_MIN_HASH_KEY_BYTES = 32


def fingerprint(data: bytes, hash_key: bytes) -> str:
    """`"hmac-sha256:<64 hex digits>"`, the HMAC-SHA256 of `data` under `hash_key` (at least 32 bytes).

    Equal data under the same key gives equal fingerprints, so compare fingerprints, never values.
    """
    if len(hash_key) < _MIN_HASH_KEY_BYTES:
        raise ValueError(f"hash_key must be at least {_MIN_HASH_KEY_BYTES} bytes, got {len(hash_key)}")
    return FINGERPRINT_PREFIX + hmac.new(hash_key, data, hashlib.sha256).hexdigest()
