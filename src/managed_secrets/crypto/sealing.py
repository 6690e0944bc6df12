"""Sealing the keyring under an external key: the keyring at rest is only ciphertext without the HSM or KMS.

The layout follows the way Kubernetes' KMS v2 protects its data-encryption seed: a fresh random 256-bit
*seal key* encrypts the keyring document locally (AES-256-GCM), and only those 32 bytes are sent to the
external service to be encrypted under a key that never leaves it. Opening the keyring is one call to the
service (decrypt the seal key) however many keys the keyring holds and however many versions they protect;
data keys of versions are never sent anywhere.

The sealed document (JSON, what the keyring Secret holds under ``keyring.sealed``)::

    {"format": "managed-secrets-sealed-keyring", "version": 1,
     "provider": "pkcs11" | "kmsv2", "keyId": "<external key id>",
     "annotations": {"<name>": "<base64>"},      # what a KMS v2 plugin asked to keep with its ciphertext
     "wrappedKey": "<base64>",                   # the seal key, encrypted by the external service
     "ciphertext": "<base64>"}                   # nonce || AES-256-GCM(seal key, keyring document)

The provider name and the external key id are authenticated as additional data, so a document cannot be
relabelled to another key or provider without failing to open.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from managed_secrets.errors import KeyringError, KeyServiceRefused, UnsealFailed

__all__ = [
    "SEALED_FORMAT",
    "ExternalKey",
    "ExternalSeal",
    "SealInfo",
    "read_seal_info",
    "seal_keyring",
    "unseal_keyring",
]

SEALED_FORMAT = "managed-secrets-sealed-keyring"
SEALED_FORMAT_VERSION = 1
_SEAL_KEY_BYTES = 32
_NONCE_BYTES = 12
_FIELDS = frozenset({"format", "version", "provider", "keyId", "annotations", "wrappedKey", "ciphertext"})


@dataclass(frozen=True)
class ExternalSeal:
    """A small secret (the seal key) as the external service encrypted it, with what it needs to decrypt it."""

    key_id: str
    ciphertext: bytes
    annotations: Mapping[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ExternalSeal(key_id={self.key_id!r}, ciphertext=<{len(self.ciphertext)} bytes>)"


class ExternalKey(abc.ABC):
    """A key held by an external service (an HSM over PKCS#11, a KMS v2 plugin) that encrypts small secrets.

    Implementations raise ``KeyServiceUnavailable`` when the service cannot be reached (retried with backoff),
    ``KeyServiceRefused`` when it answers no (wrong PIN, no such token or key: the message names it), and
    ``UnsealFailed`` when a ciphertext does not authenticate. ``observe(operation, ok)`` is called once per
    call that reaches the service (the operator counts them in a metric).
    """

    provider: str = ""

    def __init__(self) -> None:
        self.observe: Callable[[str, bool], None] = lambda operation, ok: None

    @abc.abstractmethod
    def describe(self) -> str:
        """What the key is, for messages (``PKCS#11 token 'mso' key 'kek-1' …``, ``KMS v2 plugin at …``)."""

    @abc.abstractmethod
    def current_key_id(self) -> str:
        """The id new seals are made under; also the health check (a KMS v2 plugin is asked its Status)."""

    @abc.abstractmethod
    def encrypt(self, plaintext: bytes, aad: bytes) -> ExternalSeal:
        """Encrypts a small secret under the current key."""

    @abc.abstractmethod
    def decrypt(self, seal: ExternalSeal, aad: bytes) -> bytes:
        """Decrypts what ``encrypt`` returned, under the key the seal names (which may no longer be current)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases sessions or channels."""


@dataclass(frozen=True)
class SealInfo:
    provider: str
    key_id: str


def _aad(provider: str, key_id: str) -> bytes:
    return f"{SEALED_FORMAT}/{SEALED_FORMAT_VERSION}\0{provider}\0{key_id}".encode()


def seal_keyring(plain: bytes, external: ExternalKey) -> bytes:
    """The keyring document ``plain`` sealed under the external key's current key (one call to the service)."""
    seal_key = AESGCM.generate_key(bit_length=256)
    try:
        key_id = external.current_key_id()
        wrapped = external.encrypt(seal_key, _aad(external.provider, key_id))
        if wrapped.key_id != key_id:
            # A KMS whose key moved between Status and Encrypt: the document names what really sealed it.
            key_id = wrapped.key_id
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = nonce + AESGCM(seal_key).encrypt(nonce, plain, _aad(external.provider, key_id))
    finally:
        del seal_key
    document = {
        "format": SEALED_FORMAT,
        "version": SEALED_FORMAT_VERSION,
        "provider": external.provider,
        "keyId": key_id,
        "annotations": {k: _b64(v) for k, v in sorted(wrapped.annotations.items())},
        "wrappedKey": _b64(wrapped.ciphertext),
        "ciphertext": _b64(ciphertext),
    }
    return json.dumps(document, indent=2).encode() + b"\n"


def read_seal_info(document: bytes) -> SealInfo:
    """Which provider and external key sealed ``document`` (no call to the service)."""
    parsed = _parse(document)
    return SealInfo(provider=parsed["provider"], key_id=parsed["keyId"])


def unseal_keyring(document: bytes, external: ExternalKey) -> bytes:
    """The keyring document inside a sealed one (one call to the service). Errors name keys, never material."""
    parsed = _parse(document)
    provider, key_id = parsed["provider"], parsed["keyId"]
    if provider != external.provider:
        raise KeyServiceRefused(
            f"the keyring is sealed by a {provider!r} key ({key_id!r}) but the operator is configured for "
            f"{external.provider!r} ({external.describe()}); configure the provider that sealed it"
        )
    aad = _aad(provider, key_id)
    seal = ExternalSeal(
        key_id=key_id,
        ciphertext=_unb64("wrappedKey", parsed["wrappedKey"]),
        annotations={k: _unb64(f"annotation {k!r}", v) for k, v in parsed["annotations"].items()},
    )
    seal_key = external.decrypt(seal, aad)
    if len(seal_key) != _SEAL_KEY_BYTES:
        raise UnsealFailed(f"the external key {key_id!r} returned a seal key of the wrong size")
    ciphertext = _unb64("ciphertext", parsed["ciphertext"])
    try:
        return AESGCM(seal_key).decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise UnsealFailed(f"the sealed keyring does not authenticate under external key {key_id!r}") from None
    finally:
        del seal_key


def _parse(document: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise KeyringError("the sealed keyring is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise KeyringError("the sealed keyring must be a JSON object")
    missing, unknown = _FIELDS - parsed.keys(), parsed.keys() - _FIELDS
    if missing or unknown:
        raise KeyringError(
            "the sealed keyring has "
            + "; ".join(
                part
                for part in (
                    f"missing field(s): {', '.join(sorted(missing))}" if missing else "",
                    f"unknown field(s): {', '.join(sorted(unknown))}" if unknown else "",
                )
                if part
            )
        )
    if parsed["format"] != SEALED_FORMAT or parsed["version"] != SEALED_FORMAT_VERSION:
        raise KeyringError(f"the sealed keyring is not format {SEALED_FORMAT!r} version {SEALED_FORMAT_VERSION}")
    for name in ("provider", "keyId", "wrappedKey", "ciphertext"):
        if not isinstance(parsed[name], str) or not parsed[name]:
            raise KeyringError(f"the sealed keyring's {name!r} must be a non-empty string")
    annotations = parsed["annotations"]
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise KeyringError("the sealed keyring's 'annotations' must map names to base64 strings")
    return parsed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(what: str, value: object) -> bytes:
    try:
        return base64.b64decode(str(value).encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise KeyringError(f"the sealed keyring's {what} is not valid base64") from None
