"""An in-memory external key service for unit tests: AES-GCM keys by id, a switch to make it unreachable,
and counts of the calls that reached it (what the operator's metric counts against a real one)."""

from __future__ import annotations

import os
from collections import Counter

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from managed_secrets.crypto.sealing import ExternalKey, ExternalSeal
from managed_secrets.errors import KeyServiceRefused, KeyServiceUnavailable, UnsealFailed


class FakeKms(ExternalKey):
    provider = "kmsv2"

    def __init__(self, key_id: str = "kms-key-1") -> None:
        super().__init__()
        self.keys = {key_id: AESGCM.generate_key(bit_length=256)}
        self.current = key_id
        self.reachable = True
        self.calls: Counter[str] = Counter()

    def rotate(self, key_id: str) -> None:
        """A new current key; the old ones stay for decrypting (as a KMS keeps old key versions)."""
        self.keys[key_id] = AESGCM.generate_key(bit_length=256)
        self.current = key_id

    def _reach(self, operation: str) -> None:
        if not self.reachable:
            self.observe(operation, False)
            raise KeyServiceUnavailable("fake KMS cannot be reached")
        self.calls[operation] += 1
        self.observe(operation, True)

    def describe(self) -> str:
        return "fake KMS"

    def current_key_id(self) -> str:
        self._reach("status")
        return self.current

    def encrypt(self, plaintext: bytes, aad: bytes) -> ExternalSeal:
        self._reach("encrypt")
        nonce = os.urandom(12)
        ciphertext = nonce + AESGCM(self.keys[self.current]).encrypt(nonce, plaintext, aad)
        return ExternalSeal(key_id=self.current, ciphertext=ciphertext, annotations={"fake.example.com/n": b"1"})

    def decrypt(self, seal: ExternalSeal, aad: bytes) -> bytes:
        self._reach("decrypt")
        key = self.keys.get(seal.key_id)
        if key is None:
            raise KeyServiceRefused(f"fake KMS has no key {seal.key_id!r}")
        if seal.annotations.get("fake.example.com/n") != b"1":
            raise UnsealFailed("annotations lost")
        try:
            return AESGCM(key).decrypt(seal.ciphertext[:12], seal.ciphertext[12:], aad)
        except InvalidTag:
            raise UnsealFailed("fake KMS: does not authenticate") from None
