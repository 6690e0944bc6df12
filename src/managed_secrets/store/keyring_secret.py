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
from managed_secrets.errors import KeyringError

KEYRING_SECRET_TYPE = "managedsecrets.io/keyring"
KEYRING_DATA_KEY = "keyring.json"


def load_keyring_file(path: Path) -> LocalKeyring:
    try:
        return LocalKeyring.from_bytes(path.read_bytes())
    except OSError as e:
        raise KeyringError(f"cannot read keyring file {path}: {e.strerror}") from None


def load_or_create_keyring(api: client.ApiClient, namespace: str, name: str) -> LocalKeyring:
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
