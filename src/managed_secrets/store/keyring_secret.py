"""Where the local keyring lives: a Secret in the operator's namespace, or a mounted file.

On first start the operator generates a keyring and creates the Secret; when two replicas race, the loser
of the create reads the winner's keyring, so every replica encrypts under the same keys.
"""

from __future__ import annotations

import base64
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.crypto import LocalKeyring
from managed_secrets.errors import KeyringError, WriteConflict

KEYRING_SECRET_TYPE = "managedsecrets.io/keyring"
KEYRING_DATA_KEY = "keyring.json"


def load_keyring_file(path: Path) -> LocalKeyring:
    try:
        return LocalKeyring.from_bytes(path.read_bytes())
    except OSError as e:
        raise KeyringError(f"cannot read keyring file {path}: {e.strerror}") from None


def load_or_create_keyring(
    api: client.ApiClient, namespace: str, name: str, *, create: bool = True
) -> LocalKeyring:
    """The keyring from its Secret; generated and stored on first start unless ``create`` is false."""
    core = client.CoreV1Api(api)
    for _ in range(3):
        try:
            secret = core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 403:
                raise KeyringError(
                    f"cannot read keyring Secret {namespace}/{name}: the operator's ServiceAccount lacks 'get' "
                    "on Secrets in its namespace"
                ) from None
            if e.status != 404:
                raise KeyringError(f"cannot read keyring Secret {namespace}/{name}: HTTP {e.status}") from None
        else:
            raw = (secret.data or {}).get(KEYRING_DATA_KEY)
            if not raw:
                raise KeyringError(f"keyring Secret {namespace}/{name} has no {KEYRING_DATA_KEY!r} key")
            return LocalKeyring.from_bytes(base64.b64decode(raw))
        if not create:
            raise KeyringError(
                f"keyring Secret {namespace}/{name} does not exist and creating one is disabled "
                "(MSO_KEYRING_CREATE=false, the chart's keyring.source=existingSecret)"
            )
        keyring = LocalKeyring.generate()
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=namespace,
                labels={"app.kubernetes.io/managed-by": "managed-secrets-operator"},
            ),
            type=KEYRING_SECRET_TYPE,
            data={KEYRING_DATA_KEY: base64.b64encode(keyring.to_bytes()).decode("ascii")},
        )
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as e:
            if e.status == 409:
                continue  # another replica created it first: use theirs
            raise KeyringError(f"cannot create keyring Secret {namespace}/{name}: HTTP {e.status}") from None
        return keyring
    raise KeyringError(f"keyring Secret {namespace}/{name} could not be read or created")


class KeyringSecret:
    """The keyring Secret, written back with optimistic concurrency after a KEK is added or retired."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name

    def read(self) -> tuple[LocalKeyring, str, dict[str, str]]:
        """The keyring, the Secret's resourceVersion, and its annotations."""
        try:
            secret = self._core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as e:
            raise KeyringError(
                f"cannot read keyring Secret {self.namespace}/{self.name}: HTTP {e.status}"
            ) from None
        raw = (secret.data or {}).get(KEYRING_DATA_KEY)
        if not raw:
            raise KeyringError(f"keyring Secret {self.namespace}/{self.name} has no {KEYRING_DATA_KEY!r} key")
        meta = secret.metadata or client.V1ObjectMeta()
        return (
            LocalKeyring.from_bytes(base64.b64decode(raw)),
            str(meta.resource_version),
            dict(meta.annotations or {}),
        )

    def write(self, keyring: LocalKeyring, resource_version: str, annotations: dict[str, str]) -> None:
        """Stores ``keyring`` if the Secret is still at ``resource_version`` (``WriteConflict`` otherwise)."""
        try:
            secret = self._core.read_namespaced_secret(self.name, self.namespace)
            meta = secret.metadata or client.V1ObjectMeta()
            meta.resource_version = resource_version
            meta.annotations = {**(meta.annotations or {}), **annotations}
            secret.metadata = meta
            secret.data = {KEYRING_DATA_KEY: base64.b64encode(keyring.to_bytes()).decode("ascii")}
            # A PUT guarded by the resourceVersion the caller read: 'update' is a verb the operator has anyway.
            self._core.replace_namespaced_secret(self.name, self.namespace, secret)
        except ApiException as e:
            if e.status == 409:
                raise WriteConflict(f"keyring Secret {self.namespace}/{self.name} changed meanwhile") from None
            raise KeyringError(
                f"cannot write keyring Secret {self.namespace}/{self.name}: HTTP {e.status}"
            ) from None
