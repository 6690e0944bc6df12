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
    shards: int = 16
    lease_seconds: float = 15.0
    lease_renew_seconds: float = 2.0

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
            shards=max(1, int(env.get("MSO_SHARDS", "16"))),
            lease_seconds=float(env.get("MSO_LEASE_SECONDS", "15")),
            lease_renew_seconds=float(env.get("MSO_LEASE_RENEW_SECONDS", "2")),
        )


def _service_account_namespace() -> str | None:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
