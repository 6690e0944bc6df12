"""Where the local keyring lives: a Secret in the operator's namespace (over the Cluster port), or a file.

On first start the operator generates a keyring and creates the Secret; when two replicas race, the loser
of the create reads the winner's keyring, so every replica encrypts under the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from managed_secrets.cluster.base import Cluster, SecretObject
from managed_secrets.crypto import LocalKeyring
from managed_secrets.errors import (
    ApiConflict,
    ApiForbidden,
    KeyringError,
    KeyringLost,
    KubernetesApiError,
    WriteConflict,
)
from managed_secrets.names import KEYRING_SECRET_TYPE

__all__ = ["KEYRING_DATA_KEY", "KeyringSecret", "load_keyring_file", "load_or_create_keyring"]

KEYRING_DATA_KEY = "keyring.json"


def load_keyring_file(path: Path) -> LocalKeyring:
    try:
        return LocalKeyring.from_bytes(path.read_bytes())
    except OSError as e:
        raise KeyringError(f"cannot read keyring file {path}: {e.strerror}") from None


def load_or_create_keyring(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    create: bool = True,
    store_is_empty: Callable[[], bool] = lambda: True,
) -> LocalKeyring:
    """The keyring from its Secret; generated and stored on first start unless ``create`` is false.

    A missing keyring is only a first start while the store is empty too: with stored versions it was lost,
    and a new one would make every version undecryptable, so the operator refuses to start (fail closed).
    """
    where = f"keyring Secret {namespace}/{name}"
    for _ in range(3):
        try:
            secret = cluster.read_secret(namespace, name)
        except ApiForbidden:
            raise KeyringError(
                f"cannot read {where}: the operator's ServiceAccount lacks 'get' on Secrets in its namespace"
            ) from None
        except KubernetesApiError as e:
            raise KeyringError(f"cannot read {where}: HTTP {e.status}") from None
        if secret is not None:
            raw = secret.data.get(KEYRING_DATA_KEY)
            if not raw:
                raise KeyringError(f"{where} has no {KEYRING_DATA_KEY!r} key")
            return LocalKeyring.from_bytes(raw)
        if not store_is_empty():
            raise KeyringLost(
                f"{where} does not exist but the store holds sealed versions: the keyring was lost. Restore the "
                "keyring Secret from a backup; a new keyring would make every stored version undecryptable, so "
                "none is generated"
            )
        if not create:
            raise KeyringError(
                f"{where} does not exist and creating one is disabled "
                "(MSO_KEYRING_CREATE=false, the chart's keyring.source=existingSecret)"
            )
        keyring = LocalKeyring.generate()
        body = SecretObject(
            namespace=namespace,
            name=name,
            type=KEYRING_SECRET_TYPE,
            data={KEYRING_DATA_KEY: keyring.to_bytes()},
            labels={"app.kubernetes.io/managed-by": "managed-secrets-operator"},
        )
        try:
            cluster.create_secret(body)
        except ApiConflict:
            continue  # another replica created it first: use theirs
        except KubernetesApiError as e:
            raise KeyringError(f"cannot create {where}: HTTP {e.status}") from None
        return keyring
    raise KeyringError(f"{where} could not be read or created")


class KeyringSecret:
    """The keyring Secret, written back with optimistic concurrency after a KEK is added or retired."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self._cluster = cluster
        self.namespace = namespace
        self.name = name

    @property
    def _where(self) -> str:
        return f"keyring Secret {self.namespace}/{self.name}"

    def read(self) -> tuple[LocalKeyring, str, dict[str, str]]:
        """The keyring, the Secret's resourceVersion, and its annotations."""
        try:
            secret = self._cluster.read_secret(self.namespace, self.name)
        except KubernetesApiError as e:
            raise KeyringError(f"cannot read {self._where}: HTTP {e.status}") from None
        if secret is None:
            raise KeyringError(f"cannot read {self._where}: HTTP 404 Not Found")
        raw = secret.data.get(KEYRING_DATA_KEY)
        if not raw:
            raise KeyringError(f"{self._where} has no {KEYRING_DATA_KEY!r} key")
        return LocalKeyring.from_bytes(raw), secret.resource_version, dict(secret.annotations)

    def write(self, keyring: LocalKeyring, resource_version: str, annotations: dict[str, str]) -> None:
        """Stores ``keyring`` if the Secret is still at ``resource_version`` (``WriteConflict`` otherwise)."""
        try:
            secret = self._cluster.read_secret(self.namespace, self.name)
            if secret is None:
                raise WriteConflict(f"{self._where} was deleted meanwhile")
            updated = replace(
                secret,
                annotations={**secret.annotations, **annotations},
                data={KEYRING_DATA_KEY: keyring.to_bytes()},
            )
            # A PUT guarded by the resourceVersion the caller read: 'update' is a verb the operator has anyway.
            self._cluster.replace_secret(updated, resource_version)
        except ApiConflict:
            raise WriteConflict(f"{self._where} changed meanwhile") from None
        except KubernetesApiError as e:
            raise KeyringError(f"cannot write {self._where}: HTTP {e.status}") from None
