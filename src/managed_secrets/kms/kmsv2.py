"""A Kubernetes KMS v2 plugin (gRPC on a unix socket) as the external key that seals the keyring.

Any plugin written for kube-apiserver's encryption at rest works: cloud KMSs, Vault-backed ones, or the
PKCS#11-backed one in ``kms.plugin``. The operator is just a second client of the same API:

- ``Status`` is the health check and names the plugin's current key id (a changed id means the plugin's key
  was rotated: the leader re-seals the keyring under it);
- ``Encrypt`` is called with the 32-byte seal key when the keyring is written (first start, KEK rotation,
  re-seal); ``Decrypt`` when it is read (start-up, or another replica changed it). Never per version.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from managed_secrets.crypto.sealing import ExternalKey, ExternalSeal
from managed_secrets.errors import KeyServiceRefused, KeyServiceUnavailable, UnsealFailed
from managed_secrets.kms import kmsv2_api as api

__all__ = ["KmsV2Key"]


class KmsV2Key(ExternalKey):
    """The keyring's external key behind a KMS v2 plugin's unix socket."""

    provider = "kmsv2"

    def __init__(self, endpoint: str, *, timeout_seconds: float = 5.0) -> None:
        super().__init__()
        # Accept the kube-apiserver spelling (unix:///path) as well as a bare path.
        self.path = endpoint.removeprefix("unix://")
        self.timeout = timeout_seconds
        self._lock = threading.Lock()
        self._channel: Any = None
        self._calls: dict[str, Any] = {}

    def describe(self) -> str:
        return f"KMS v2 plugin at unix://{self.path}"

    def _call(self, name: str, request: Any, response_type: Any) -> Any:
        import grpc

        with self._lock:
            if self._channel is None:
                # gRPC's own reconnect backoff grows to two minutes; a plugin that restarts is found sooner.
                self._channel = grpc.insecure_channel(
                    f"unix://{self.path}",
                    options=[("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000)],
                )
                self._calls = {}
            call = self._calls.get(name)
            if call is None:
                call = self._channel.unary_unary(
                    api.method(name),
                    request_serializer=lambda message: message.SerializeToString(),
                    response_deserializer=response_type.FromString,
                )
                self._calls[name] = call
        try:
            response = call(request, timeout=self.timeout)
        except grpc.RpcError as error:
            self.observe(name.lower(), False)
            code = error.code() if hasattr(error, "code") else None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                raise KeyServiceUnavailable(f"{self.describe()} cannot be reached ({code.name})") from None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise KeyServiceRefused(f"{self.describe()} does not implement the KMS v2 API ({name})") from None
            detail = code.name if code is not None else type(error).__name__
            raise _RefusedCall(name, f"{self.describe()} refused {name}: {detail}") from None
        self.observe(name.lower(), True)
        return response

    def current_key_id(self) -> str:
        status = self._call("Status", api.StatusRequest(), api.StatusResponse)
        if status.version != api.API_VERSION:
            raise KeyServiceRefused(
                f"{self.describe()} speaks KMS API {status.version!r}, not {api.API_VERSION!r}"
            )
        if status.healthz != "ok":
            # The plugin's own words on what is wrong (a message about its backend, never about our data).
            raise KeyServiceUnavailable(f"{self.describe()} is not healthy: {status.healthz[:200]}")
        if not status.key_id:
            raise KeyServiceRefused(f"{self.describe()} reported an empty key id")
        return str(status.key_id)

    def encrypt(self, plaintext: bytes, aad: bytes) -> ExternalSeal:
        response = self._call(
            "Encrypt", api.EncryptRequest(plaintext=plaintext, uid=str(uuid.uuid4())), api.EncryptResponse
        )
        if not response.key_id or not response.ciphertext:
            raise KeyServiceRefused(f"{self.describe()} returned an Encrypt response without key id or ciphertext")
        return ExternalSeal(
            key_id=str(response.key_id),
            ciphertext=bytes(response.ciphertext),
            annotations={str(k): bytes(v) for k, v in response.annotations.items()},
        )

    def decrypt(self, seal: ExternalSeal, aad: bytes) -> bytes:
        request = api.DecryptRequest(
            ciphertext=seal.ciphertext,
            uid=str(uuid.uuid4()),
            key_id=seal.key_id,
            annotations=dict(seal.annotations),
        )
        try:
            response = self._call("Decrypt", request, api.DecryptResponse)
        except _RefusedCall as error:
            # The plugin could not decrypt what it was given: another key, a key it no longer holds, or tampering.
            raise UnsealFailed(
                f"{self.describe()} could not decrypt the keyring's seal under its key {seal.key_id!r} ({error})"
            ) from None
        return bytes(response.plaintext)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None


class _RefusedCall(KeyServiceRefused):
    def __init__(self, name: str, message: str) -> None:
        self.call = name
        super().__init__(message)
