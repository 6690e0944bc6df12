"""Where the local keyring lives: a Secret in the operator's namespace (over the Cluster port), or a file.

The Secret holds the keyring either plain (``keyring.json``) or sealed under an external key
(``keyring.sealed``, see ``crypto.sealing``): with a KMS configured the operator only ever writes the sealed
form, and a plain keyring it finds is sealed (migrated) by the leader. Without a KMS a sealed keyring is
refused with a message naming the provider that sealed it.

On first start the operator generates a keyring and creates the Secret; when two replicas race, the loser
of the create reads the winner's keyring, so every replica encrypts under the same keys.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from managed_secrets.cluster.base import Cluster, LiveSecret, SecretObject
from managed_secrets.crypto import LocalKeyring
from managed_secrets.crypto.sealing import ExternalKey, read_seal_info, seal_keyring, unseal_keyring
from managed_secrets.errors import (
    ApiConflict,
    ApiForbidden,
    KeyringError,
    KeyringLost,
    KeyServiceRefused,
    KubernetesApiError,
    WriteConflict,
)
from managed_secrets.names import KEYRING_SECRET_TYPE

__all__ = [
    "KEYRING_DATA_KEY",
    "SEALED_DATA_KEY",
    "KeyringCodec",
    "KeyringSecret",
    "load_keyring_file",
    "load_or_create_keyring",
]

log = logging.getLogger(__name__)

KEYRING_DATA_KEY = "keyring.json"
SEALED_DATA_KEY = "keyring.sealed"


def load_keyring_file(path: Path) -> LocalKeyring:
    try:
        return LocalKeyring.from_bytes(path.read_bytes())
    except OSError as e:
        raise KeyringError(f"cannot read keyring file {path}: {e.strerror}") from None


class KeyringCodec:
    """Reads a keyring out of the Secret's data and writes it back: plain, or sealed under ``external``.

    Opening a sealed keyring costs one call to the external service; the last one opened is remembered (by
    a digest of the sealed document), so reading an unchanged Secret again calls nothing.
    """

    def __init__(self, external: ExternalKey | None = None) -> None:
        self.external = external
        self._lock = threading.Lock()
        self._opened: tuple[bytes, bytes] | None = None  # (digest of the sealed document, keyring document)

    def decode(self, data: Mapping[str, bytes], where: str) -> LocalKeyring:
        sealed = data.get(SEALED_DATA_KEY)
        if sealed:
            if self.external is None:
                info = read_seal_info(sealed)
                raise KeyServiceRefused(
                    f"{where} is sealed by a {info.provider!r} key ({info.key_id!r}) and the operator has no key "
                    "service configured (MSO_KMS_PROVIDER, the chart's kms.provider)"
                )
            digest = hashlib.sha256(sealed).digest()
            with self._lock:
                opened = self._opened
            if opened is not None and opened[0] == digest:
                return LocalKeyring.from_bytes(opened[1])
            plain = unseal_keyring(sealed, self.external)
            keyring = LocalKeyring.from_bytes(plain)
            with self._lock:
                self._opened = (digest, plain)
            return keyring
        raw = data.get(KEYRING_DATA_KEY)
        if not raw:
            raise KeyringError(f"{where} has neither {KEYRING_DATA_KEY!r} nor {SEALED_DATA_KEY!r}")
        return LocalKeyring.from_bytes(raw)

    def encode(self, keyring: LocalKeyring) -> dict[str, bytes]:
        plain = keyring.to_bytes()
        if self.external is None:
            return {KEYRING_DATA_KEY: plain}
        sealed = seal_keyring(plain, self.external)
        with self._lock:
            self._opened = (hashlib.sha256(sealed).digest(), plain)
        return {SEALED_DATA_KEY: sealed}

    def stale(self, data: Mapping[str, bytes], current: str | None = None) -> str | None:
        """Why ``data`` should be written again under the external key: it is plain, or sealed under a key
        that is no longer the service's ``current`` one (asked with one Status call when not given). ``None``
        when it is as it should be."""
        if self.external is None:
            return None
        sealed = data.get(SEALED_DATA_KEY)
        if not sealed:
            return "it is not sealed"
        info = read_seal_info(sealed)
        current = current or self.external.current_key_id()
        if info.key_id != current:
            return f"it is sealed under external key {info.key_id!r}, and the current key is {current!r}"
        return None


def load_or_create_keyring(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    create: bool = True,
    store_is_empty: Callable[[], bool] = lambda: True,
    codec: KeyringCodec | None = None,
    reseal: bool = False,
) -> LocalKeyring:
    """The keyring from its Secret; generated and stored on first start unless ``create`` is false.

    A missing keyring is only a first start while the store is empty too: with stored versions it was lost,
    and a new one would make every version undecryptable, so the operator refuses to start (fail closed).
    A keyring that does not open (a wrong PIN, a missing external key, an unreachable KMS) is an error; it is
    never replaced. With ``reseal`` (the leader) a plain keyring, or one sealed under an old external key, is
    sealed again under the current one.
    """
    codec = codec or KeyringCodec()
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
            keyring = codec.decode(secret.data, where)
            if reseal:
                why = codec.stale(secret.data)
                if why is not None:
                    try:
                        KeyringSecret(cluster, namespace, name, codec).write(keyring, secret.resource_version, {})
                    except WriteConflict:
                        continue  # changed meanwhile: read it again
                    assert codec.external is not None
                    log.info("%s sealed under %s (%s before)", where, codec.external.describe(), why)
            return keyring
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
            data=codec.encode(keyring),
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

    def __init__(self, cluster: Cluster, namespace: str, name: str, codec: KeyringCodec | None = None) -> None:
        self._cluster = cluster
        self.namespace = namespace
        self.name = name
        self.codec = codec or KeyringCodec()

    @property
    def _where(self) -> str:
        return f"keyring Secret {self.namespace}/{self.name}"

    def _read(self) -> LiveSecret:
        try:
            secret = self._cluster.read_secret(self.namespace, self.name)
        except KubernetesApiError as e:
            raise KeyringError(f"cannot read {self._where}: HTTP {e.status}") from None
        if secret is None:
            raise KeyringError(f"cannot read {self._where}: HTTP 404 Not Found")
        return secret

    def read(self) -> tuple[LocalKeyring, str, dict[str, str]]:
        """The keyring, the Secret's resourceVersion, and its annotations."""
        secret = self._read()
        return self.codec.decode(secret.data, self._where), secret.resource_version, dict(secret.annotations)

    def annotations(self) -> dict[str, str]:
        """The Secret's annotations only (nothing is opened)."""
        return dict(self._read().annotations)

    def reseal_if_stale(self, current: str | None = None) -> str | None:
        """Seals the keyring again if it is plain or under an old external key (``current``: the service's key
        id, when the caller just asked); says why it did, or ``None``."""
        secret = self._read()
        why = self.codec.stale(secret.data, current)
        if why is None:
            return None
        keyring = self.codec.decode(secret.data, self._where)
        self.write(keyring, secret.resource_version, {})
        return why

    def write(self, keyring: LocalKeyring, resource_version: str, annotations: dict[str, str]) -> None:
        """Stores ``keyring`` if the Secret is still at ``resource_version`` (``WriteConflict`` otherwise)."""
        try:
            secret = self._cluster.read_secret(self.namespace, self.name)
            if secret is None:
                raise WriteConflict(f"{self._where} was deleted meanwhile")
            if secret.resource_version != resource_version:
                raise WriteConflict(f"{self._where} changed meanwhile")
            updated = replace(
                secret,
                annotations={**secret.annotations, **annotations},
                # The whole data replaced: a plain copy never stays beside the sealed one.
                data=self.codec.encode(keyring),
            )
            # A PUT guarded by the resourceVersion the caller read: 'update' is a verb the operator has anyway.
            self._cluster.replace_secret(updated, resource_version)
        except ApiConflict:
            raise WriteConflict(f"{self._where} changed meanwhile") from None
        except KubernetesApiError as e:
            raise KeyringError(f"cannot write {self._where}: HTTP {e.status}") from None
