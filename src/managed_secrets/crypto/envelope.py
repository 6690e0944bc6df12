"""Envelope encryption of one secret version: seal, open, re-wrap.

Every call to `seal` draws a fresh random 256-bit data key and encrypts the value with AES-256-GCM under a
fresh random 96-bit nonce; the data key itself is wrapped by the key provider's primary KEK. A sealed value
is one self-describing binary blob (all integers big-endian)::

    offset  size  field
    0       4     magic b"MSEC"
    4       1     format version (1)
    5       1     KEK id length n (1..255)
    6       n     KEK id, printable ASCII (e.g. b"k1")
    6+n     2     wrapped data key length w (1..65535)
    8+n     w     wrapped data key (opaque, from the key provider)
    8+n+w   12    data nonce
    20+n+w  ...   AES-256-GCM ciphertext of the value, followed by the 16-byte tag

Two AADs tie a blob to its place. Each is the magic and format version byte followed by length-prefixed
fields (4-byte length, then the bytes), so no two different field lists encode alike:

- key wrapping:    magic, version, "wrap", KEK id, secret id, version id
- data encryption: magic, version, "data", secret id, version id

The KEK id is bound by the wrapping AAD only. That is what lets `rewrap` move a value to a new KEK by
replacing the header and the wrapped key while the data nonce and ciphertext stay byte-for-byte the same.
The header is still fully authenticated: a changed KEK id selects another (or no) KEK and fails to unwrap,
a changed wrapped key fails to unwrap, and a changed nonce or ciphertext fails the data tag.

Every failure to open (bad magic, other format, truncation, tampering, a blob moved to another secret or
version) raises `IntegrityError` naming the secret and version; a KEK the provider no longer holds raises
its subclass `UnknownKeyError`. No message ever contains the value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from managed_secrets.crypto.provider import KeyProvider, WrappedKey
from managed_secrets.errors import IntegrityError, KeyNotFound, KeyringError, UnknownKeyError, UnwrapFailed

__all__ = ["FORMAT_VERSION", "MAGIC", "key_id_of", "keys_in_use", "open_sealed", "rewrap", "seal"]

MAGIC = b"MSEC"
FORMAT_VERSION = 1

_DATA_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # 96-bit GCM nonce
_TAG_BYTES = 16
_MAX_KEY_ID_BYTES = 255
_MAX_WRAPPED_BYTES = 0xFFFF
# A provider may, in a rare race with KEK rotation, wrap under a newer primary than the one the AAD named.
_WRAP_ATTEMPTS = 3
_UNKNOWN = "<unknown>"


@dataclass(frozen=True, slots=True)
class _Sealed:
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes  # with the GCM tag at the end

    def __repr__(self) -> str:
        return f"_Sealed(key_id={self.key_id!r}, <{len(self.ciphertext)} ciphertext bytes>)"


def seal(
    plaintext: bytes, *, secret_id: str, version_id: str, provider: KeyProvider, key_id: str | None = None
) -> bytes:
    """Encrypt one version's value under a new data key wrapped by the KEK `key_id` (default the primary).

    An unknown `key_id` raises `KeyringError` naming it.
    """
    _check_ids(secret_id, version_id)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _data_aad(secret_id, version_id))
    wrapped = _wrap(data_key, secret_id=secret_id, version_id=version_id, provider=provider, key_id=key_id)
    return _encode(_Sealed(wrapped.key_id, wrapped.blob, nonce, ciphertext))


def open_sealed(blob: bytes, *, secret_id: str, version_id: str, provider: KeyProvider) -> bytes:
    """Decrypt a value made by `seal` for exactly this secret and version.

    Raises `IntegrityError` for anything wrong with the blob, `UnknownKeyError` if its KEK is gone.
    """
    _check_ids(secret_id, version_id)
    sealed = _decode(blob, secret_id, version_id)
    data_key = _unwrap(sealed, secret_id=secret_id, version_id=version_id, provider=provider)
    return _decrypt(data_key, sealed, secret_id, version_id)


def rewrap(
    blob: bytes, *, secret_id: str, version_id: str, provider: KeyProvider, key_id: str | None = None
) -> bytes:
    """Move a sealed value to the KEK `key_id` (default the provider's current primary), for KEK rotation.

    Only the header and the wrapped data key change; the data nonce and ciphertext are kept as they are.
    Returns `blob` itself when it already uses that KEK. The value is authenticated before it is
    re-wrapped, so a damaged record fails here (`IntegrityError`) instead of being carried to the new KEK.
    """
    _check_ids(secret_id, version_id)
    sealed = _decode(blob, secret_id, version_id)
    if sealed.key_id == (key_id or provider.primary_key_id()):
        return blob
    data_key = _unwrap(sealed, secret_id=secret_id, version_id=version_id, provider=provider)
    _decrypt(data_key, sealed, secret_id, version_id)
    wrapped = _wrap(data_key, secret_id=secret_id, version_id=version_id, provider=provider, key_id=key_id)
    return _encode(_Sealed(wrapped.key_id, wrapped.blob, sealed.nonce, sealed.ciphertext))


def key_id_of(blob: bytes, *, secret_id: str = _UNKNOWN, version_id: str = _UNKNOWN) -> str:
    """The id of the KEK a sealed value is wrapped under, from its header alone (no key needed).

    `secret_id` and `version_id` only label the `IntegrityError` raised for a malformed blob.
    """
    return _decode(blob, secret_id, version_id).key_id


def keys_in_use(blobs: Iterable[bytes]) -> frozenset[str]:
    """Every KEK id the given sealed values reference; a KEK outside this set can be removed.

    A malformed blob raises `IntegrityError` rather than being skipped: when unsure which key it needs,
    no key should be retired.
    """
    return frozenset(key_id_of(blob) for blob in blobs)


# -- internals ---------------------------------------------------------------------------------------


def _check_ids(secret_id: str, version_id: str) -> None:
    if not secret_id or not version_id:
        raise ValueError("secret_id and version_id must be non-empty")


def _is_key_id(key_id: bytes) -> bool:
    return 0 < len(key_id) <= _MAX_KEY_ID_BYTES and all(0x21 <= byte <= 0x7E for byte in key_id)


def _fields(purpose: bytes, *fields: str) -> bytes:
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    for field in (purpose, *(field.encode("utf-8") for field in fields)):
        out += len(field).to_bytes(4, "big")
        out += field
    return bytes(out)


def _data_aad(secret_id: str, version_id: str) -> bytes:
    return _fields(b"data", secret_id, version_id)


def _wrap_aad(key_id: str, secret_id: str, version_id: str) -> bytes:
    return _fields(b"wrap", key_id, secret_id, version_id)


def _wrap(
    data_key: bytes, *, secret_id: str, version_id: str, provider: KeyProvider, key_id: str | None = None
) -> WrappedKey:
    pinned = key_id
    for _ in range(_WRAP_ATTEMPTS):
        key_id = pinned or provider.primary_key_id()
        if not _is_key_id(key_id.encode("utf-8")):
            raise KeyringError(f"key provider returned an unusable key id {key_id!r}")
        try:
            wrapped = provider.wrap_data_key(data_key, _wrap_aad(key_id, secret_id, version_id), key_id)
        except KeyNotFound:
            raise KeyringError(
                f"secret {secret_id} version {version_id}: the keyring has no key-encryption key {key_id!r}"
            ) from None
        if not 0 < len(wrapped.blob) <= _MAX_WRAPPED_BYTES:
            raise KeyringError(
                f"key provider returned a wrapped key of {len(wrapped.blob)} bytes under {key_id!r}"
            )
        if wrapped.key_id == key_id:
            return wrapped
    raise KeyringError(
        f"primary key-encryption key kept changing while sealing secret {secret_id} version {version_id}"
    )


def _unwrap(sealed: _Sealed, *, secret_id: str, version_id: str, provider: KeyProvider) -> bytes:
    aad = _wrap_aad(sealed.key_id, secret_id, version_id)
    try:
        data_key = provider.unwrap_data_key(sealed.key_id, sealed.wrapped_key, aad)
    except KeyNotFound:
        raise UnknownKeyError(secret_id, version_id, sealed.key_id) from None
    except UnwrapFailed:
        raise IntegrityError(
            secret_id, version_id, f"data key failed authentication under key-encryption key {sealed.key_id!r}"
        ) from None
    if len(data_key) != _DATA_KEY_BYTES:
        raise IntegrityError(secret_id, version_id, f"unwrapped data key has the wrong length ({len(data_key)})")
    return data_key


def _decrypt(data_key: bytes, sealed: _Sealed, secret_id: str, version_id: str) -> bytes:
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _data_aad(secret_id, version_id))
    except InvalidTag:
        raise IntegrityError(secret_id, version_id, "ciphertext failed authentication") from None


def _encode(sealed: _Sealed) -> bytes:
    key_id = sealed.key_id.encode("ascii")
    return b"".join(
        (
            MAGIC,
            bytes((FORMAT_VERSION, len(key_id))),
            key_id,
            len(sealed.wrapped_key).to_bytes(2, "big"),
            sealed.wrapped_key,
            sealed.nonce,
            sealed.ciphertext,
        )
    )


def _decode(blob: bytes, secret_id: str, version_id: str) -> _Sealed:
    def fail(reason: str) -> IntegrityError:
        return IntegrityError(secret_id, version_id, reason)

    if len(blob) < len(MAGIC) + 1:
        raise fail(f"sealed value is truncated ({len(blob)} bytes)")
    if blob[: len(MAGIC)] != MAGIC:
        raise fail("not a sealed value (bad magic)")
    position = len(MAGIC)
    if blob[position] != FORMAT_VERSION:
        raise fail(f"unsupported sealed-value format version {blob[position]} (expected {FORMAT_VERSION})")
    position += 1

    def take(size: int, what: str) -> bytes:
        nonlocal position
        if len(blob) - position < size:
            raise fail(f"sealed value is truncated in the {what}")
        chunk = blob[position : position + size]
        position += size
        return chunk

    key_id = take(take(1, "key id length")[0], "key id")
    if not _is_key_id(key_id):
        raise fail("malformed key-encryption key id in the header")
    wrapped_key = take(int.from_bytes(take(2, "wrapped key length"), "big"), "wrapped key")
    if not wrapped_key:
        raise fail("empty wrapped data key in the header")
    nonce = take(_NONCE_BYTES, "nonce")
    ciphertext = blob[position:]
    if len(ciphertext) < _TAG_BYTES:
        raise fail("sealed value is truncated in the ciphertext")
    return _Sealed(key_id.decode("ascii"), wrapped_key, nonce, ciphertext)
