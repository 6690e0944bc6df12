"""An AES key inside a PKCS#11 token (an HSM, or SoftHSM2) as the external key that seals the keyring.

The key never leaves the token: the operator asks the token to run AES-256-GCM on the 32-byte seal key
(``C_Encrypt`` / ``C_Decrypt`` with ``CKM_AES_GCM``), binding the sealed document's header as additional data.
Encrypting uses the configured key label; decrypting uses the label the sealed document names, so a keyring
sealed under an older key still opens while that key is in the token (external key rotation).

Configuration: the module library (``libsofthsm2.so``, a vendor's ``.so``), the token label, a file holding
the user PIN (a mounted Secret; re-read on every login, so a corrected PIN is picked up) and the key label.
Errors name the library, token, key label and PIN *file*, never the PIN.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from managed_secrets.crypto.sealing import ExternalKey, ExternalSeal
from managed_secrets.errors import KeyServiceRefused, KeyServiceUnavailable, PinIncorrect, UnsealFailed

__all__ = ["Pkcs11Key", "Pkcs11Token"]

log = logging.getLogger(__name__)

_NONCE_BYTES = 12


class Pkcs11Token:
    """One logged-in session on a token, reopened when the token drops it. Safe to share between threads."""

    def __init__(self, library: str, token_label: str, pin_file: Path) -> None:
        self.library = library
        self.token_label = token_label
        self.pin_file = pin_file
        self._lock = threading.Lock()
        self._session: Any = None
        self._refused_pin: bytes | None = None  # digest of a PIN the token refused: never sent again

    def describe(self, key_label: str | None = None) -> str:
        key = f" key {key_label!r}" if key_label else ""
        return f"PKCS#11 token {self.token_label!r}{key} (library {self.library})"

    def _pin(self) -> str:
        try:
            pin = self.pin_file.read_text().strip()
        except OSError as e:
            raise KeyServiceRefused(f"cannot read the PKCS#11 PIN file {self.pin_file}: {e.strerror}") from None
        if not pin:
            raise KeyServiceRefused(f"the PKCS#11 PIN file {self.pin_file} is empty")
        return pin

    def _open(self) -> Any:
        import pkcs11
        from pkcs11 import exceptions as e

        try:
            lib = pkcs11.lib(self.library)
        except e.PKCS11Error as error:
            raise KeyServiceRefused(f"cannot load the PKCS#11 library {self.library}: {error}") from None
        try:
            token = lib.get_token(token_label=self.token_label)
        except e.NoSuchToken:
            raise KeyServiceRefused(f"no PKCS#11 token labelled {self.token_label!r} in {self.library}") from None
        except e.MultipleTokensReturned:
            raise KeyServiceRefused(f"several PKCS#11 tokens are labelled {self.token_label!r}") from None
        except (e.DeviceError, e.DeviceRemoved, e.TokenNotPresent, e.DeviceMemory) as error:
            raise KeyServiceUnavailable(f"{self.describe()} cannot be reached: {type(error).__name__}") from None
        pin = self._pin()
        digest = hashlib.sha256(pin.encode()).digest()
        if digest == self._refused_pin:
            raise PinIncorrect(
                f"{self.describe()} refused the PIN in {self.pin_file}; it is not tried again (a token locks "
                "after repeated wrong PINs) until that file changes"
            )
        try:
            session = token.open(user_pin=pin)
        except (e.PinIncorrect, e.PinInvalid, e.PinLenRange):
            self._refused_pin = digest
            raise PinIncorrect(
                f"{self.describe()} refused the PIN in {self.pin_file}; correct the file (it is re-read, "
                "the wrong PIN is not sent again)"
            ) from None
        except e.PinLocked:
            raise KeyServiceRefused(
                f"{self.describe()}: the user PIN is locked; the security officer must reset it"
            ) from None
        except (e.DeviceError, e.DeviceRemoved, e.TokenNotPresent, e.DeviceMemory, e.SessionCount) as error:
            raise KeyServiceUnavailable(f"{self.describe()} cannot be reached: {type(error).__name__}") from None
        self._refused_pin = None
        return session

    def run(self, key_label: str, action: Any) -> Any:
        """``action(key)`` on the AES key ``key_label`` in a logged-in session (opened or reopened as needed)."""
        from pkcs11 import KeyType
        from pkcs11 import exceptions as e

        with self._lock:
            for attempt in (1, 2):
                if self._session is None:
                    self._session = self._open()
                try:
                    key = self._session.get_key(key_type=KeyType.AES, label=key_label)
                    return action(key)
                except e.NoSuchKey:
                    raise KeyServiceRefused(f"{self.describe()} holds no AES key labelled {key_label!r}") from None
                except e.MultipleObjectsReturned:
                    raise KeyServiceRefused(
                        f"{self.describe()} holds several AES keys labelled {key_label!r}"
                    ) from None
                except (
                    e.SessionClosed,
                    e.SessionHandleInvalid,
                    e.UserNotLoggedIn,
                    e.DeviceRemoved,
                    e.TokenNotPresent,
                ):
                    self._drop()
                    if attempt == 2:
                        raise KeyServiceUnavailable(f"{self.describe()} keeps dropping the session") from None
                except (e.DeviceError, e.DeviceMemory) as error:
                    self._drop()
                    raise KeyServiceUnavailable(f"{self.describe()} failed: {type(error).__name__}") from None
        raise KeyServiceUnavailable(f"{self.describe()} cannot be used")

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):  # the session is gone either way
                session.close()

    def close(self) -> None:
        with self._lock:
            self._drop()


class Pkcs11Key(ExternalKey):
    """The keyring's external key in a PKCS#11 token: AES-256-GCM computed inside the token."""

    provider = "pkcs11"

    def __init__(self, token: Pkcs11Token, key_label: str) -> None:
        super().__init__()
        self.token = token
        self.key_label = key_label

    def describe(self) -> str:
        return self.token.describe(self.key_label)

    def _call(self, operation: str, key_label: str, action: Any) -> Any:
        try:
            result = self.token.run(key_label, action)
        except Exception:
            self.observe(operation, False)
            raise
        self.observe(operation, True)
        return result

    def current_key_id(self) -> str:
        # The health check: a session opens and the configured key is there. The key id is its label.
        self._call("status", self.key_label, lambda key: None)
        return self.key_label

    def encrypt(self, plaintext: bytes, aad: bytes) -> ExternalSeal:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        nonce = os.urandom(_NONCE_BYTES)

        def encrypt(key: Any) -> bytes:
            return bytes(
                key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128))
            )

        ciphertext = self._call("encrypt", self.key_label, encrypt)
        return ExternalSeal(key_id=self.key_label, ciphertext=nonce + ciphertext)

    def decrypt(self, seal: ExternalSeal, aad: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11 import exceptions as e
        from pkcs11.mechanisms import GCMParams

        nonce, body = seal.ciphertext[:_NONCE_BYTES], seal.ciphertext[_NONCE_BYTES:]

        def decrypt(key: Any) -> bytes:
            try:
                return bytes(
                    key.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128))
                )
            except (e.EncryptedDataInvalid, e.EncryptedDataLenRange, e.GeneralError, e.FunctionFailed):
                raise UnsealFailed(
                    f"the sealed keyring does not decrypt under {self.token.describe(seal.key_id)}"
                ) from None

        return bytes(self._call("decrypt", seal.key_id, decrypt))

    def close(self) -> None:
        self.token.close()
