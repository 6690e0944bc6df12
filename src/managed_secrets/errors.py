"""Every error the operator raises on purpose, in one place.

The tree::

    ManagedSecretsError                  base of everything below
    ├── InvalidRequest                   the caller asked for something the model forbids; state unchanged
    │   ├── InvalidStageLabel            unknown/malformed label, or a custom label on a non-Generic secret
    │   ├── LabelLimitExceeded           a 9th distinct stage label
    │   ├── ProtectedLabel               removing ACSCurrent/ACSPrevious instead of moving them
    │   ├── VersionNotFound              a version id the secret does not have
    │   ├── RotationInProgress           a second rotation while one is ACSPending
    │   ├── IdempotencyConflict          same version/request id, different value
    │   ├── InvalidPolicy                a value-generator policy that cannot produce a value
    │   └── ReferenceRefused             a reference the operator never follows (token Secrets, its own state)
    ├── IntegrityError                   a sealed record failed authentication: fails closed for that version
    │   └── UnknownKeyError              the record names a key-encryption key the keyring does not have
    ├── KeyringError                     the keyring itself is malformed or cannot be used
    │   ├── KeyringLost                  no keyring Secret, but sealed versions exist: the operator stops
    │   ├── KeyNotFound                  the key provider holds no key-encryption key with that id
    │   ├── KeyServiceUnavailable        the external key service (HSM, KMS plugin) cannot be reached: retried
    │   ├── KeyServiceRefused            it answered no: wrong PIN, no such token or key; fixed by configuration
    │   │   └── PinIncorrect             the PIN was refused: not tried again until the PIN file changes
    │   ├── UnsealFailed                 the sealed keyring does not open under the external key it names
    │   └── UnwrapFailed                 a wrapped data key failed authentication under its key
    ├── StoreError                       the backing store failed
    │   ├── RecordNotFound               no record under that key
    │   ├── WriteConflict                compare-and-swap lost: someone else wrote first
    │   ├── RecordTooLarge               a record over the store's size budget, even with old versions pruned
    │   └── CorruptRecord                a stored record that does not parse or breaks the model's invariants
    ├── SourceUnavailable                a value source (valueFrom Secret) cannot be read yet
    └── KubernetesApiError               a Kubernetes API call failed (translated once, in cluster.kubernetes)
        ├── ApiForbidden                 HTTP 403: the ServiceAccount lacks a permission
        ├── ApiConflict                  HTTP 409: changed meanwhile, or already exists
        └── ApiNotFound                  HTTP 404 where the object had to exist

Messages name secrets, versions and keys, never a value: Kopf copies exception text into status and Events.
``safe_message`` is the one way any error becomes text for status, Events and logs.
"""

from __future__ import annotations


class ManagedSecretsError(Exception):
    """Base class of the operator's own errors."""


class Fenced(ManagedSecretsError):
    """This replica may no longer act on the object (its shard moved, or its Lease could not be renewed):
    the pass stops before its next side effect and writes nothing more; the new owner goes on."""


class InvalidRequest(ManagedSecretsError):
    """The request breaks a rule of the secret model; nothing was changed."""


class InvalidStageLabel(InvalidRequest):
    """A stage label that is unknown, malformed, or not allowed on this secret type."""


class LabelLimitExceeded(InvalidRequest):
    """The secret would carry more distinct stage labels than allowed."""


class ProtectedLabel(InvalidRequest):
    """ACSCurrent and ACSPrevious can be moved but never simply removed."""


class VersionNotFound(InvalidRequest):
    """The secret has no version with the given id."""


class RotationInProgress(InvalidRequest):
    """A rotation is already in flight (a version carries ACSPending)."""


class IdempotencyConflict(InvalidRequest):
    """A repeated version or request id came with a different value."""


class InvalidPolicy(InvalidRequest):
    """A value-generator policy that cannot produce a value (e.g. every character excluded)."""


class IntegrityError(ManagedSecretsError):
    """A sealed value failed authentication (tampered, truncated, or moved). Fails closed for that version."""

    def __init__(self, secret_id: str, version_id: str, reason: str) -> None:
        self.secret_id = secret_id
        self.version_id = version_id
        self.reason = reason
        super().__init__(f"integrity check failed for secret {secret_id} version {version_id}: {reason}")


class UnknownKeyError(IntegrityError):
    """The sealed value names a key-encryption key that the keyring does not hold."""

    def __init__(self, secret_id: str, version_id: str, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(secret_id, version_id, f"unknown key-encryption key id {key_id!r}")


class KeyringError(ManagedSecretsError):
    """The keyring is malformed or cannot serve the request."""


class KeyringLost(KeyringError):
    """The keyring Secret is gone while sealed versions are stored: never replaced by a new keyring."""


class KeyNotFound(KeyringError):
    """The key provider holds no key-encryption key with this id (never created, or already removed).

    Raised by key providers without knowing which secret asked; the envelope layer turns it into
    `UnknownKeyError` naming the secret and version.
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no key-encryption key with id {key_id!r}")


class KeyServiceUnavailable(KeyringError):
    """The external key service (PKCS#11 token, KMS v2 plugin) cannot be reached now; retried with backoff."""


class KeyServiceRefused(KeyringError):
    """The external key service answered but refused: the message names what is missing or wrong."""


class PinIncorrect(KeyServiceRefused):
    """The token refused the PIN. Retrying the same PIN could lock the token, so it is not retried."""


class UnsealFailed(KeyringError):
    """The sealed keyring does not decrypt under the external key it names (tampered, or another key)."""


class UnwrapFailed(KeyringError):
    """A wrapped data key failed authentication under its key-encryption key (tampered, or bound elsewhere).

    Raised by key providers; the envelope layer turns it into `IntegrityError` naming the secret and version.
    Any other `KeyringError` from a provider (e.g. an external KMS that cannot be reached) is not an integrity
    failure and is passed on unchanged.
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"wrapped data key failed authentication under key-encryption key {key_id!r}")


class StoreError(ManagedSecretsError):
    """The backing store failed."""


class RecordNotFound(StoreError):
    """No record is stored under that key."""


class WriteConflict(StoreError):
    """A compare-and-swap write lost: the record changed since it was read (or already exists)."""


class RecordTooLarge(StoreError):
    """A record that does not fit the store's size budget even with every unlabelled version pruned."""


class CorruptRecord(StoreError):
    """A stored record does not parse, or breaks the model's invariants."""


class ReferenceRefused(InvalidRequest):
    """The spec references an object the operator never uses for a ManagedSecret (e.g. a token Secret)."""


class SourceUnavailable(ManagedSecretsError):
    """The value source (e.g. the ``valueFrom`` Secret) cannot be read yet; a change there brings it back."""


class KubernetesApiError(ManagedSecretsError):
    """A Kubernetes API call failed. Translated once, in the cluster adapter, from the client's exception.

    The message names the verb, the object and the HTTP status, never the response body: the API server's
    message for an invalid Secret can quote its data.
    """

    def __init__(self, verb: str, what: str, status: int, reason: str = "", resource: str = "") -> None:
        self.verb = verb
        self.what = what
        self.status = status
        self.reason = reason
        self.resource = resource
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"cannot {self.verb} {self.what}: HTTP {self.status} {self.reason}".rstrip()


class ApiForbidden(KubernetesApiError):
    """HTTP 403: the operator's ServiceAccount lacks a permission."""

    def describe(self) -> str:
        resource = self.resource or "it"
        return f"cannot {self.verb} {self.what}: the operator's ServiceAccount lacks '{self.verb}' on {resource}"


class ApiConflict(KubernetesApiError):
    """HTTP 409: the object changed since it was read, or already exists."""

    def describe(self) -> str:
        return f"cannot {self.verb} {self.what}: it changed meanwhile (will retry)"


class ApiNotFound(KubernetesApiError):
    """HTTP 404 where the caller needed the object to exist."""


def safe_message(error: BaseException) -> str:
    """Error text safe for status, Events and logs: our own messages never hold values; anything else might."""
    if isinstance(error, ManagedSecretsError):
        return str(error)
    return f"unexpected {type(error).__name__}"
