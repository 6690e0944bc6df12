"""`LocalKeyring`: the built-in key provider, a small set of AES-256 key-encryption keys kept by the operator.

The keyring is generated on first start and stored (as `to_bytes()`) in a Secret in the operator's
namespace, or loaded from a mounted file. Key ids are `k1`, `k2`, … and are never reused: the next number
is stored with the keys, so removing `k3` and reloading still makes the next key `k4`. A sealed value that
names `k3` therefore can never be opened by different key material that happens to reuse the id.

KEK rotation: `add_key()` creates a new primary, the operator re-wraps data keys in the background
(`envelope.rewrap`), and `remove_key()` retires an old key once `envelope.keys_in_use` no longer lists it.

The keyring also holds a separate `hash_key` for keyed fingerprints of values (`fingerprint.py`). It is not
a KEK and is not rotated with them, so fingerprints stay comparable across KEK rotations.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from collections.abc import Mapping
from typing import Any, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from managed_secrets.crypto.provider import KeyProvider, WrappedKey
from managed_secrets.errors import KeyNotFound, KeyringError, UnwrapFailed

__all__ = ["KEYRING_FORMAT", "KEYRING_FORMAT_VERSION", "LocalKeyring"]

KEYRING_FORMAT = "managed-secrets-keyring"
KEYRING_FORMAT_VERSION = 1

_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # 96-bit GCM nonce
_TAG_BYTES = 16
_KEY_ID = re.compile(r"k([1-9][0-9]{0,17})")
_FIELDS = frozenset({"format", "version", "primary_key_id", "next_key_number", "keys", "hash_key"})


def _key_number(key_id: str) -> int | None:
    match = _KEY_ID.fullmatch(key_id)
    return int(match.group(1)) if match else None


def _key_order(key_id: str) -> int:
    return _key_number(key_id) or 0


def _check_key_bytes(what: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != _KEY_BYTES:
        raise KeyringError(f"{what} must be {_KEY_BYTES} bytes (AES-256)")
    return value


class LocalKeyring(KeyProvider):
    """AES-256-GCM key-encryption keys with ids `k1`, `k2`, …, plus a fingerprint `hash_key`.

    Wrapping a data key: AES-256-GCM under the primary KEK with a fresh random 96-bit nonce and the caller's
    AAD; the wrapped blob is `nonce || ciphertext || tag`.

    Safe to share between threads. `repr()` shows key ids only, never key bytes.
    """

    def __init__(
        self,
        *,
        keys: Mapping[str, bytes],
        primary_key_id: str,
        next_key_number: int,
        hash_key: bytes,
    ) -> None:
        """Build a keyring from its parts, validating them (`KeyringError`). Most callers want `generate`."""
        if not keys:
            raise KeyringError("a keyring needs at least one key-encryption key")
        if isinstance(next_key_number, bool) or not isinstance(next_key_number, int):
            raise KeyringError("next_key_number must be an integer")
        for key_id, material in keys.items():
            number = _key_number(key_id) if isinstance(key_id, str) else None
            if number is None:
                raise KeyringError(f"invalid key id {key_id!r}: expected k1, k2, …")
            if number >= next_key_number:
                raise KeyringError(
                    f"key id {key_id!r} is not below next_key_number {next_key_number}: ids would be reused"
                )
            _check_key_bytes(f"key-encryption key {key_id!r}", material)
        if primary_key_id not in keys:
            raise KeyringError(f"primary key id {primary_key_id!r} is not in the keyring")
        self._hash_key = _check_key_bytes("hash_key", hash_key)
        self._lock = threading.Lock()
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(material) for key_id, material in keys.items()}
        self._primary = primary_key_id
        self._next_number = next_key_number

    @classmethod
    def generate(cls) -> Self:
        """A new keyring with one random primary key, `k1`, and a random hash key."""
        return cls(
            keys={"k1": os.urandom(_KEY_BYTES)},
            primary_key_id="k1",
            next_key_number=2,
            hash_key=os.urandom(_KEY_BYTES),
        )

    # -- KeyProvider -------------------------------------------------------------------------------

    def primary_key_id(self) -> str:
        """The id of the key new data keys are wrapped with."""
        with self._lock:
            return self._primary

    def key_ids(self) -> frozenset[str]:
        """Every key id in the keyring."""
        with self._lock:
            return frozenset(self._keys)

    def wrap_data_key(self, data_key: bytes, aad: bytes, key_id: str | None = None) -> WrappedKey:
        """AES-256-GCM-encrypt `data_key` under `key_id` (default: the primary), random nonce, binding `aad`."""
        with self._lock:
            key_id = self._primary if key_id is None else key_id
            cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyNotFound(key_id)
        nonce = os.urandom(_NONCE_BYTES)
        return WrappedKey(key_id=key_id, blob=nonce + cipher.encrypt(nonce, data_key, aad))

    def unwrap_data_key(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob made by `wrap_data_key`; `KeyNotFound` / `UnwrapFailed` on failure."""
        with self._lock:
            cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyNotFound(key_id)
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise UnwrapFailed(key_id)
        try:
            return cipher.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise UnwrapFailed(key_id) from None

    # -- key management ----------------------------------------------------------------------------

    @property
    def hash_key(self) -> bytes:
        """The 256-bit key for keyed fingerprints; independent of the KEKs and unchanged by their rotation."""
        return self._hash_key

    def add_key(self, *, make_primary: bool = True) -> str:
        """Create a new random KEK under the next unused id and return that id.

        With `make_primary` (the default) new seals and re-wraps use it from now on.
        """
        material = os.urandom(_KEY_BYTES)
        with self._lock:
            key_id = f"k{self._next_number}"
            self._next_number += 1
            self._keys[key_id] = material
            self._ciphers[key_id] = AESGCM(material)
            if make_primary:
                self._primary = key_id
        return key_id

    def merge(self, other: LocalKeyring) -> bool:
        """Takes the keys of ``other`` this keyring lacks and its primary (a replica following the keyring
        Secret another replica rotated); keys ``other`` lacks are kept. Returns whether anything changed."""
        if other.hash_key != self._hash_key:
            raise KeyringError("the keyring Secret holds another keyring (its fingerprint key differs)")
        with other._lock:
            keys, primary, number = dict(other._keys), other._primary, other._next_number
        with self._lock:
            new = {k: m for k, m in keys.items() if k not in self._keys}
            for key_id, material in new.items():
                self._keys[key_id] = material
                self._ciphers[key_id] = AESGCM(material)
            changed = bool(new) or primary != self._primary
            self._primary = primary
            self._next_number = max(self._next_number, number)
        return changed

    def set_primary(self, key_id: str) -> None:
        """Make an existing key the primary (`KeyNotFound` if the keyring has no such key)."""
        with self._lock:
            if key_id not in self._keys:
                raise KeyNotFound(key_id)
            self._primary = key_id

    def remove_key(self, key_id: str) -> None:
        """Forget a key for good. Values still wrapped under it can no longer be opened.

        Refuses the primary key (`KeyringError`): promote another key first. Call it only when
        `envelope.keys_in_use` over every stored value no longer lists `key_id`.
        """
        with self._lock:
            if key_id not in self._keys:
                raise KeyNotFound(key_id)
            if key_id == self._primary:
                raise KeyringError(f"cannot remove key-encryption key {key_id!r}: it is the primary key")
            del self._keys[key_id]
            del self._ciphers[key_id]

    # -- serialisation -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The keyring as versioned JSON (keys base64-encoded). This *is* key material: store it as a Secret."""
        with self._lock:
            document = {
                "format": KEYRING_FORMAT,
                "version": KEYRING_FORMAT_VERSION,
                "primary_key_id": self._primary,
                "next_key_number": self._next_number,
                "keys": {
                    key_id: base64.b64encode(material).decode("ascii")
                    for key_id, material in sorted(self._keys.items(), key=lambda item: _key_order(item[0]))
                },
                "hash_key": base64.b64encode(self._hash_key).decode("ascii"),
            }
        return json.dumps(document, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Load a keyring written by `to_bytes`, validating it strictly (`KeyringError` says what is wrong).

        Error messages name fields and key ids, never key material.
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyringError("keyring is not valid UTF-8") from None
        try:
            document = json.loads(text, object_pairs_hook=_reject_duplicate_fields)
        except RecursionError:
            raise KeyringError("keyring JSON is nested too deeply") from None
        except json.JSONDecodeError as exc:
            # The position only; exc.doc would be the key material.
            raise KeyringError(
                f"keyring is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        if not isinstance(document, dict):
            raise KeyringError("keyring must be a JSON object")
        missing = _FIELDS - document.keys()
        if missing:
            raise KeyringError(f"keyring is missing field(s): {', '.join(sorted(missing))}")
        unknown = document.keys() - _FIELDS
        if unknown:
            raise KeyringError(f"keyring has unknown field(s): {', '.join(sorted(unknown))}")
        if document["format"] != KEYRING_FORMAT:
            raise KeyringError(f"keyring format must be {KEYRING_FORMAT!r}")
        version = document["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise KeyringError("keyring version must be an integer")
        if version != KEYRING_FORMAT_VERSION:
            raise KeyringError(
                f"unsupported keyring format version {version} (this operator reads {KEYRING_FORMAT_VERSION})"
            )
        primary = document["primary_key_id"]
        if not isinstance(primary, str):
            raise KeyringError("primary_key_id must be a string")
        encoded_keys = document["keys"]
        if not isinstance(encoded_keys, dict):
            raise KeyringError("keys must be a JSON object mapping key ids to base64 key material")
        keys = {
            key_id: _decode_key(f"key-encryption key {key_id!r}", value) for key_id, value in encoded_keys.items()
        }
        return cls(
            keys=keys,
            primary_key_id=primary,
            next_key_number=document["next_key_number"],
            hash_key=_decode_key("hash_key", document["hash_key"]),
        )

    def __repr__(self) -> str:
        with self._lock:
            ids = sorted(self._keys, key=_key_order)
            return f"LocalKeyring(primary_key_id={self._primary!r}, key_ids={ids!r})"


def _reject_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise KeyringError(f"keyring has duplicate field {name!r}")
        result[name] = value
    return result


def _decode_key(what: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        material = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise KeyringError(f"{what} is not valid base64") from None
    return _check_key_bytes(what, material)
