"""Envelope encryption: round trips, the blob layout, and failing closed on every kind of damage."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_secrets.crypto import (
    FORMAT_VERSION,
    MAGIC,
    KeyProvider,
    LocalKeyring,
    WrappedKey,
    key_id_of,
    open_sealed,
    seal,
)
from managed_secrets.errors import IntegrityError, KeyNotFound, KeyringError, UnknownKeyError, UnwrapFailed

SECRET = "payments/db-credentials"
VERSION = "v3"
CANARY = b"CANARY-7d1f0c-do-not-log-me"


def sealed(plaintext: bytes = CANARY, keyring: LocalKeyring | None = None, **ids: str) -> bytes:
    return seal(
        plaintext,
        secret_id=ids.get("secret_id", SECRET),
        version_id=ids.get("version_id", VERSION),
        provider=keyring if keyring is not None else KEYRING,
    )


def opened(blob: bytes, keyring: LocalKeyring | None = None, **ids: str) -> bytes:
    return open_sealed(
        blob,
        secret_id=ids.get("secret_id", SECRET),
        version_id=ids.get("version_id", VERSION),
        provider=keyring if keyring is not None else KEYRING,
    )


KEYRING = LocalKeyring.generate()


@dataclass(frozen=True)
class Parts:
    magic: bytes
    version: int
    key_id: bytes
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


def split(blob: bytes) -> Parts:
    """Read the documented layout independently of the implementation."""
    key_id_end = 6 + blob[5]
    wrapped_end = key_id_end + 2 + int.from_bytes(blob[key_id_end : key_id_end + 2], "big")
    return Parts(
        magic=blob[:4],
        version=blob[4],
        key_id=blob[6:key_id_end],
        wrapped_key=blob[key_id_end + 2 : wrapped_end],
        nonce=blob[wrapped_end : wrapped_end + 12],
        ciphertext=blob[wrapped_end + 12 :],
    )


def assert_no_canary(error: BaseException) -> None:
    seen: BaseException | None = error
    while seen is not None:
        for text in (str(seen), repr(seen)):
            assert CANARY.decode() not in text
            assert CANARY.hex() not in text
        seen = seen.__cause__ or seen.__context__


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 255, 4096, 65_537, 1_048_576])
def test_round_trip_for_many_sizes(size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert len(plaintext) == size
    blob = sealed(plaintext)
    assert opened(blob) == plaintext
    assert len(blob) == 4 + 1 + 1 + len(b"k1") + 2 + 60 + 12 + size + 16


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    secret_id=st.text(min_size=1, max_size=80),
    version_id=st.text(min_size=1, max_size=12),
)
def test_round_trip_property(plaintext: bytes, secret_id: str, version_id: str) -> None:
    blob = seal(plaintext, secret_id=secret_id, version_id=version_id, provider=KEYRING)
    assert open_sealed(blob, secret_id=secret_id, version_id=version_id, provider=KEYRING) == plaintext


def test_blob_layout_matches_the_documented_format() -> None:
    blob = sealed(b"hunter2")
    parts = split(blob)
    assert parts.magic == MAGIC == b"MSEC"
    assert parts.version == FORMAT_VERSION == 1
    assert parts.key_id == b"k1"
    assert len(parts.wrapped_key) == 12 + 32 + 16  # LocalKeyring: nonce, AES-256 key, tag
    assert len(parts.nonce) == 12
    assert len(parts.ciphertext) == len(b"hunter2") + 16
    assert key_id_of(blob) == "k1"


def test_plaintext_is_not_in_the_blob_and_each_seal_is_fresh() -> None:
    first, second = sealed(), sealed()
    assert CANARY not in first
    assert first != second
    assert split(first).wrapped_key != split(second).wrapped_key
    assert split(first).nonce != split(second).nonce
    assert opened(first) == opened(second) == CANARY


# -- tampering --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_single_byte_change_fails_closed(mask: int) -> None:
    blob = sealed()
    assert opened(blob) == CANARY
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= mask
        with pytest.raises(IntegrityError) as caught:
            opened(bytes(tampered))
        assert caught.value.secret_id == SECRET
        assert caught.value.version_id == VERSION
        assert_no_canary(caught.value)


def test_every_truncation_fails_closed() -> None:
    blob = sealed()
    for length in range(len(blob)):
        with pytest.raises(IntegrityError) as caught:
            opened(blob[:length])
        assert_no_canary(caught.value)


def test_appended_bytes_fail_closed() -> None:
    with pytest.raises(IntegrityError, match="ciphertext failed authentication"):
        opened(sealed() + b"\x00")


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "truncated"),
        (b"MSE", "truncated"),
        (b"XSEC\x01\x02k1" + bytes(100), "bad magic"),
        (b"MSEC\x02\x02k1" + bytes(100), "unsupported sealed-value format version 2"),
        (b"MSEC\x01\x00" + bytes(100), "malformed key-encryption key id"),
        (b"MSEC\x01\x02k\n" + bytes(100), "malformed key-encryption key id"),
        (b"MSEC\x01\x02k1\x00\x00" + bytes(100), "empty wrapped data key"),
        (b"MSEC\x01\x02k1\x00\x3c" + bytes(60 + 12 + 15), "truncated in the ciphertext"),
        (b"MSEC\x01\x02k1\x00\x3c" + bytes(59), "truncated in the wrapped key"),
        (b"MSEC\x01\x09k1", "truncated in the key id"),
    ],
)
def test_malformed_blobs_say_what_is_wrong(blob: bytes, reason: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        opened(blob)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"integrity check failed for secret {SECRET} version {VERSION}: ")
    with pytest.raises(IntegrityError):
        key_id_of(blob)


def test_swapping_wrapped_keys_between_blobs_fails() -> None:
    first, second = sealed(b"first"), sealed(b"second")
    first_key, second_key = split(first).wrapped_key, split(second).wrapped_key
    assert len(first_key) == len(second_key) == 60
    franken = second.replace(second_key, first_key)
    assert len(franken) == len(second)
    assert franken != second
    with pytest.raises(IntegrityError, match="ciphertext failed authentication"):
        opened(franken)


# -- a blob bound to its secret and version ---------------------------------------------------------


def test_blob_moved_to_another_version_fails() -> None:
    blob = sealed(version_id="v3")
    with pytest.raises(IntegrityError) as caught:
        opened(blob, version_id="v4")
    assert str(caught.value) == (
        f"integrity check failed for secret {SECRET} version v4: "
        "data key failed authentication under key-encryption key 'k1'"
    )
    assert_no_canary(caught.value)


def test_blob_moved_to_another_secret_fails() -> None:
    blob = sealed(secret_id="payments/db-credentials")
    with pytest.raises(IntegrityError) as caught:
        opened(blob, secret_id="payments/db-credentials-copy")
    assert caught.value.secret_id == "payments/db-credentials-copy"
    assert_no_canary(caught.value)
    with pytest.raises(IntegrityError):
        opened(blob, secret_id="other-namespace/db-credentials")


def test_ids_are_length_prefixed_in_the_aad() -> None:
    # Concatenated without lengths, "ns/a" + "v12" and "ns/av" + "12" would read the same.
    blob = sealed(b"x", secret_id="ns/a", version_id="v12")
    assert opened(blob, secret_id="ns/a", version_id="v12") == b"x"
    with pytest.raises(IntegrityError):
        opened(blob, secret_id="ns/av", version_id="12")


def test_empty_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        seal(b"x", secret_id="", version_id="v1", provider=KEYRING)
    with pytest.raises(ValueError, match="non-empty"):
        open_sealed(sealed(), secret_id=SECRET, version_id="", provider=KEYRING)


# -- keys -------------------------------------------------------------------------------------------


def test_unknown_kek_id_names_secret_version_and_key() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(CANARY, secret_id=SECRET, version_id=VERSION, provider=keyring)
    keyring.add_key()
    keyring.remove_key("k1")
    with pytest.raises(UnknownKeyError) as caught:
        opened(blob, keyring)
    assert caught.value.key_id == "k1"
    assert caught.value.secret_id == SECRET
    assert caught.value.version_id == VERSION
    assert str(caught.value) == (
        f"integrity check failed for secret {SECRET} version {VERSION}: unknown key-encryption key id 'k1'"
    )
    assert_no_canary(caught.value)


def test_kek_id_edited_in_the_header_is_an_unknown_key() -> None:
    blob = sealed()
    with pytest.raises(UnknownKeyError) as caught:
        opened(blob.replace(b"\x02k1", b"\x02k7", 1))
    assert caught.value.key_id == "k7"


def test_same_kek_id_with_other_key_material_fails() -> None:
    other = LocalKeyring.generate()  # also has a "k1", with different bytes
    with pytest.raises(IntegrityError) as caught:
        opened(sealed(), other)
    assert not isinstance(caught.value, UnknownKeyError)
    assert "data key failed authentication under key-encryption key 'k1'" in str(caught.value)


class UnreachableKms(KeyProvider):
    """A provider whose backend is down: not an integrity failure."""

    def primary_key_id(self) -> str:
        return "transit-1"

    def key_ids(self) -> frozenset[str]:
        return frozenset({"transit-1"})

    def wrap_data_key(self, data_key: bytes, aad: bytes, key_id: str | None = None) -> WrappedKey:
        raise KeyringError("key provider unreachable")

    def unwrap_data_key(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        raise KeyringError("key provider unreachable")


class XorProvider(KeyProvider):
    """A toy provider in the shape of an external KMS, to show the interface is enough.

    Not secure: only for checking the contract (ids in the header, AAD passed through, errors mapped).
    """

    def __init__(self, primary: str = "transit/app:v1", drift: bool = False) -> None:
        self.primary = primary
        self.drift = drift
        self.seen_aad: list[bytes] = []

    def primary_key_id(self) -> str:
        return self.primary

    def key_ids(self) -> frozenset[str]:
        return frozenset({self.primary})

    def wrap_data_key(self, data_key: bytes, aad: bytes, key_id: str | None = None) -> WrappedKey:
        self.seen_aad.append(aad)
        wrapped_under = self.primary + ("-newer" if self.drift else "")
        return WrappedKey(wrapped_under, bytes(b ^ 0x5A for b in data_key) + aad)

    def unwrap_data_key(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        if key_id != self.primary:
            raise KeyNotFound(key_id)
        self.seen_aad.append(aad)
        if blob[32:] != aad:
            raise UnwrapFailed(key_id)
        return bytes(b ^ 0x5A for b in blob[:32])


def test_other_provider_failures_are_not_integrity_errors() -> None:
    with pytest.raises(KeyringError, match="unreachable") as caught:
        seal(b"x", secret_id=SECRET, version_id=VERSION, provider=UnreachableKms())
    assert not isinstance(caught.value, IntegrityError)
    blob = seal(b"x", secret_id=SECRET, version_id=VERSION, provider=XorProvider("transit-1"))
    with pytest.raises(KeyringError, match="unreachable") as caught:
        open_sealed(blob, secret_id=SECRET, version_id=VERSION, provider=UnreachableKms())
    assert not isinstance(caught.value, IntegrityError)


def test_an_external_style_provider_fits_the_interface() -> None:
    provider = XorProvider()
    blob = seal(CANARY, secret_id=SECRET, version_id=VERSION, provider=provider)
    assert key_id_of(blob) == "transit/app:v1"
    assert open_sealed(blob, secret_id=SECRET, version_id=VERSION, provider=provider) == CANARY
    wrap_aad, unwrap_aad = provider.seen_aad
    assert wrap_aad == unwrap_aad
    assert b"transit/app:v1" in wrap_aad
    assert SECRET.encode() in wrap_aad
    assert VERSION.encode() in wrap_aad
    with pytest.raises(IntegrityError, match="data key failed authentication"):
        open_sealed(blob, secret_id=SECRET, version_id="v9", provider=provider)
    with pytest.raises(UnknownKeyError):
        open_sealed(blob, secret_id=SECRET, version_id=VERSION, provider=XorProvider("transit/app:v2"))


def test_provider_that_wraps_under_an_unexpected_key_is_refused() -> None:
    with pytest.raises(KeyringError, match="kept changing"):
        seal(b"x", secret_id=SECRET, version_id=VERSION, provider=XorProvider(drift=True))


@pytest.mark.parametrize("bad_id", ["", "has space", "k\u00e9", "k" * 256])
def test_provider_with_unusable_key_id_is_refused(bad_id: str) -> None:
    with pytest.raises(KeyringError, match="unusable key id"):
        seal(b"x", secret_id=SECRET, version_id=VERSION, provider=XorProvider(bad_id))


# -- nonces -----------------------------------------------------------------------------------------


def test_no_nonce_repeats_in_100k_seals() -> None:
    keyring = LocalKeyring.generate()
    count = 100_000
    data_nonces: set[bytes] = set()
    wrap_nonces: set[bytes] = set()
    blob = b""
    for _ in range(count):
        blob = seal(b"", secret_id="ns/n", version_id="v1", provider=keyring)
        # Layout for "k1": magic 4, version 1, id length 1, id 2, wrapped length 2 (=60), wrapped 60, nonce 12.
        wrap_nonces.add(blob[10:22])
        data_nonces.add(blob[70:82])
    assert split(blob).wrapped_key[:12] == blob[10:22]
    assert split(blob).nonce == blob[70:82]
    assert len(data_nonces) == count
    assert len(wrap_nonces) == count
