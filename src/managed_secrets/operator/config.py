"""Operator configuration, read once at start-up from the environment (the Helm chart sets it)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str
    keyring_secret: str = "managed-secrets-keyring"
    keyring_file: Path | None = None
    keyring_create: bool = True
    watch_namespaces: tuple[str, ...] = ()
    purge_interval_seconds: float = 3600.0
    max_workers: int = 8
    external_workers: int = 4
    rotation_backoff_seconds: float = 30.0
    metrics_port: int = 9090
    watch_timeout_seconds: int = 300
    min_rotation_interval_seconds: float = 60.0
    identity: str = ""
    pod: tuple[str, str] | None = None
    """The Pod this process runs in (``POD_NAME``, ``POD_UID``): it owns the member Lease."""
    shards: int = 16
    lease_seconds: float = 15.0
    lease_renew_seconds: float = 2.0
    # The external key service that seals the keyring: "" (none: the keyring Secret is plain), "pkcs11", "kmsv2".
    kms_provider: str = ""
    kms_endpoint: str = ""
    kms_timeout_seconds: float = 5.0
    kms_check_seconds: float = 30.0
    pkcs11_library: str = ""
    pkcs11_token_label: str = ""
    pkcs11_pin_file: Path | None = None
    pkcs11_key_label: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        namespace = env.get("MSO_NAMESPACE") or _service_account_namespace() or "managed-secrets"
        watch = tuple(n.strip() for n in env.get("MSO_WATCH_NAMESPACES", "").split(",") if n.strip())
        keyring_file = env.get("MSO_KEYRING_FILE")
        return cls(
            namespace=namespace,
            keyring_secret=env.get("MSO_KEYRING_SECRET", "managed-secrets-keyring"),
            keyring_file=Path(keyring_file) if keyring_file else None,
            keyring_create=env.get("MSO_KEYRING_CREATE", "true").lower() not in ("false", "0", "no"),
            watch_namespaces=watch,
            purge_interval_seconds=float(env.get("MSO_PURGE_INTERVAL_SECONDS", "3600")),
            max_workers=int(env.get("MSO_MAX_WORKERS", "8")),
            external_workers=int(env.get("MSO_EXTERNAL_WORKERS", "4")),
            rotation_backoff_seconds=float(env.get("MSO_ROTATION_BACKOFF_SECONDS", "30")),
            metrics_port=int(env.get("MSO_METRICS_PORT", "9090")),
            watch_timeout_seconds=int(env.get("MSO_WATCH_TIMEOUT_SECONDS", "300")),
            min_rotation_interval_seconds=float(env.get("MSO_MIN_ROTATION_INTERVAL_SECONDS", "60")),
            # The pod's name (the chart passes it in): each replica's member Lease is named after it.
            identity=env.get("MSO_IDENTITY") or env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            pod=(env["POD_NAME"], env["POD_UID"]) if env.get("POD_NAME") and env.get("POD_UID") else None,
            shards=max(1, int(env.get("MSO_SHARDS", "16"))),
            lease_seconds=float(env.get("MSO_LEASE_SECONDS", "15")),
            lease_renew_seconds=float(env.get("MSO_LEASE_RENEW_SECONDS", "2")),
            kms_provider=env.get("MSO_KMS_PROVIDER", "").strip().lower(),
            kms_endpoint=env.get("MSO_KMS_ENDPOINT", ""),
            kms_timeout_seconds=float(env.get("MSO_KMS_TIMEOUT_SECONDS", "5")),
            kms_check_seconds=float(env.get("MSO_KMS_CHECK_SECONDS", "30")),
            pkcs11_library=env.get("MSO_PKCS11_LIBRARY", ""),
            pkcs11_token_label=env.get("MSO_PKCS11_TOKEN_LABEL", ""),
            pkcs11_pin_file=Path(env["MSO_PKCS11_PIN_FILE"]) if env.get("MSO_PKCS11_PIN_FILE") else None,
            pkcs11_key_label=env.get("MSO_PKCS11_KEY_LABEL", ""),
        )

    def kms_problems(self) -> list[str]:
        """What is missing or wrong in the key-service settings (empty when they are complete)."""
        if self.kms_provider in ("", "none"):
            return []
        if self.kms_provider == "kmsv2":
            return [] if self.kms_endpoint else ["MSO_KMS_ENDPOINT (the plugin's unix socket) is not set"]
        if self.kms_provider == "pkcs11":
            needed = {
                "MSO_PKCS11_LIBRARY": self.pkcs11_library,
                "MSO_PKCS11_TOKEN_LABEL": self.pkcs11_token_label,
                "MSO_PKCS11_PIN_FILE": self.pkcs11_pin_file,
                "MSO_PKCS11_KEY_LABEL": self.pkcs11_key_label,
            }
            return [f"{name} is not set" for name, value in needed.items() if not value]
        return [f"MSO_KMS_PROVIDER={self.kms_provider!r} is not one of pkcs11, kmsv2 (or empty for none)"]


def _service_account_namespace() -> str | None:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
