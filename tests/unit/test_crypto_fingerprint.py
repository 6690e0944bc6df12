"""Keyed fingerprints of values."""

from __future__ import annotations

import hashlib

import pytest

from managed_secrets.crypto import FINGERPRINT_PREFIX, LocalKeyring, fingerprint


def test_matches_the_rfc_4231_hmac_sha256_vector() -> None:
    # RFC 4231, test case 6: a 131-byte key of 0xaa.
    key = b"\xaa" * 131
    data = b"Test Using Larger Than Block-Size Key - Hash Key First"
    assert fingerprint(data, key) == (
        "hmac-sha256:60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    )


def test_format_and_determinism() -> None:
    key = bytes(range(32))
    value = fingerprint(b"s3cr3t-password", key)
    assert value.startswith(FINGERPRINT_PREFIX)
    assert FINGERPRINT_PREFIX == "hmac-sha256:"
    digest = value.removeprefix("hmac-sha256:")
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert fingerprint(b"s3cr3t-password", key) == value
    assert fingerprint(b"", key) == (
        "hmac-sha256:d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb"
    )


def test_depends_on_key_and_data_and_hides_the_value() -> None:
    key = bytes(range(32))
    value = b"s3cr3t-password"
    assert fingerprint(value, key) != fingerprint(value + b"!", key)
    assert fingerprint(value, key) != fingerprint(value, bytes(range(1, 33)))
    # Not a plain hash: someone without the key cannot check guesses against it.
    assert hashlib.sha256(value).hexdigest() not in fingerprint(value, key)
    assert value.decode() not in fingerprint(value, key)


def test_stable_across_kek_rotation() -> None:
    keyring = LocalKeyring.generate()
    before = fingerprint(b"value", keyring.hash_key)
    keyring.add_key()
    keyring.remove_key("k1")
    assert fingerprint(b"value", LocalKeyring.from_bytes(keyring.to_bytes()).hash_key) == before


@pytest.mark.parametrize("key", [b"", b"short", bytes(31)])
def test_short_keys_are_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match=f"hash_key must be at least 32 bytes, got {len(key)}"):
        fingerprint(b"value", key)
