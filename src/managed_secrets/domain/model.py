"""The secret model: metadata, versions with stage labels, rotation progress, and the record tying them up.

Everything here is immutable; ``operations`` computes new records from old ones. Constructors check shapes
and types only (a naive datetime or an empty name is a programming error: ``ValueError``/``TypeError``);
the rules that span a whole record live in ``operations.check_invariants``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from managed_secrets.domain.clock import as_utc
from managed_secrets.domain.labels import SecretType, StageLabel, show_label
from managed_secrets.errors import VersionNotFound

__all__ = [
    "RotationProgress",
    "RotationStep",
    "SecretMetadata",
    "SecretRecord",
    "SecretType",
    "Version",
    "new_secret",
    "version_id_for",
]


def version_id_for(number: int) -> str:
    """The id of version ``number``: ``v1``, ``v2``, ..."""
    return f"v{number}"


def _require_str(value: object, what: str, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not empty_ok:
        raise ValueError(f"{what} must not be empty")


def _require_int(value: object, what: str) -> None:
    # bool is an int subclass; True is never a meaningful version number or attempt count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")


@dataclass(frozen=True)
class SecretMetadata:
    """Who the secret is. ``tags`` are (key, value) pairs kept sorted by key, so equal tag sets compare equal."""

    namespace: str
    name: str
    uid: str
    secret_type: SecretType
    created: datetime
    description: str = ""
    encryption_key: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _require_str(self.namespace, "namespace")
        _require_str(self.name, "name")
        _require_str(self.uid, "uid")
        _require_str(self.description, "description", empty_ok=True)
        if self.encryption_key is not None:
            _require_str(self.encryption_key, "encryption_key")
        object.__setattr__(self, "secret_type", SecretType(self.secret_type))
        object.__setattr__(self, "created", as_utc(self.created, "created"))
        pairs = tuple(self.tags.items()) if isinstance(self.tags, Mapping) else tuple(self.tags)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError("tags must be (key, value) pairs")
            _require_str(pair[0], "tag key")
            _require_str(pair[1], f"tag {pair[0]!r}", empty_ok=True)
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("tag keys must be unique")
        object.__setattr__(self, "tags", tuple(sorted(pairs)))

    @property
    def secret_id(self) -> str:
        """``namespace/name``: how messages and the store name this secret."""
        return f"{self.namespace}/{self.name}"

    @property
    def tag_map(self) -> dict[str, str]:
        """The tags as a new dict."""
        return dict(self.tags)


@dataclass(frozen=True, repr=False)
class Version:
    """One stored value of a secret.

    ``fingerprint`` is a keyed digest of the plaintext, computed outside the domain; comparing fingerprints is
    how repeated requests are recognised without decrypting. ``sealed`` is the opaque ciphertext.
    """

    id: str
    number: int
    created: datetime
    fingerprint: str
    sealed: bytes
    stages: frozenset[str] = frozenset()
    request_id: str | None = None

    def __post_init__(self) -> None:
        _require_str(self.id, "version id")
        _require_int(self.number, "version number")
        _require_str(self.fingerprint, "fingerprint")
        if not isinstance(self.sealed, bytes):
            raise TypeError(f"sealed value must be bytes, got {type(self.sealed).__name__}")
        if self.request_id is not None:
            _require_str(self.request_id, "request id")
        object.__setattr__(self, "created", as_utc(self.created, "created"))
        stages = frozenset(self.stages)
        for label in stages:
            _require_str(label, "stage label")
        object.__setattr__(self, "stages", stages)

    def has(self, label: str) -> bool:
        """Whether this version carries ``label``."""
        return label in self.stages

    def __repr__(self) -> str:
        return (
            f"Version(id={self.id!r}, number={self.number}, created={self.created.isoformat()}, "
            f"stages={sorted(self.stages)!r}, request_id={self.request_id!r}, "
            f"fingerprint={self.fingerprint!r}, sealed=<{len(self.sealed)} bytes>)"
        )


class RotationStep(StrEnum):
    """The four steps of a rotation, in order."""

    CREATE = "create"
    SET = "set"
    TEST = "test"
    FINISH = "finish"

    @property
    def order(self) -> int:
        """Position in the sequence create, set, test, finish (0-based)."""
        return list(RotationStep).index(self)


@dataclass(frozen=True)
class RotationProgress:
    """How far the rotation of ``version_id`` has got.

    ``step`` is the step to run next: ``begin_rotation`` has done *create* (the pending version exists), so a
    fresh rotation is at *set*. ``attempts`` counts failures of the current step; ``updated`` is when a step
    or failure was last recorded; ``next_attempt`` is when to retry after a failure.
    """

    version_id: str
    request_id: str
    step: RotationStep
    started: datetime
    updated: datetime
    attempts: int = 0
    last_error: str | None = None
    next_attempt: datetime | None = None

    def __post_init__(self) -> None:
        _require_str(self.version_id, "rotation version id")
        _require_str(self.request_id, "rotation request id")
        _require_int(self.attempts, "rotation attempts")
        if self.attempts < 0:
            raise ValueError("rotation attempts must not be negative")
        if self.last_error is not None:
            _require_str(self.last_error, "rotation last error", empty_ok=True)
        object.__setattr__(self, "step", RotationStep(self.step))
        object.__setattr__(self, "started", as_utc(self.started, "rotation started"))
        object.__setattr__(self, "updated", as_utc(self.updated, "rotation updated"))
        if self.next_attempt is not None:
            object.__setattr__(self, "next_attempt", as_utc(self.next_attempt, "rotation next attempt"))


@dataclass(frozen=True)
class SecretRecord:
    """A secret with all its versions: the unit the store reads and writes.

    ``versions`` is ordered by number. ``next_version_number`` only grows, so an id is never issued twice,
    even after the version that had it was pruned.
    """

    metadata: SecretMetadata
    versions: tuple[Version, ...] = ()
    next_version_number: int = 1
    rotation: RotationProgress | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, SecretMetadata):
            raise TypeError("metadata must be SecretMetadata")
        versions = tuple(self.versions)
        for version in versions:
            if not isinstance(version, Version):
                raise TypeError(f"versions must be Version objects, got {type(version).__name__}")
        object.__setattr__(self, "versions", versions)
        _require_int(self.next_version_number, "next version number")
        if self.rotation is not None and not isinstance(self.rotation, RotationProgress):
            raise TypeError("rotation must be RotationProgress or None")

    @property
    def secret_id(self) -> str:
        """``namespace/name``."""
        return self.metadata.secret_id

    @property
    def secret_type(self) -> SecretType:
        return self.metadata.secret_type

    def find_version(self, version_id: str) -> Version | None:
        """The version with this id, or None."""
        return next((v for v in self.versions if v.id == version_id), None)

    def version(self, version_id: str) -> Version:
        """The version with this id; ``VersionNotFound`` if there is none."""
        found = self.find_version(version_id)
        if found is None:
            raise VersionNotFound(f"secret {self.secret_id} has no version {show_label(version_id)}")
        return found

    def version_with(self, label: str) -> Version | None:
        """The version carrying ``label``, or None."""
        return next((v for v in self.versions if label in v.stages), None)

    def version_for_request(self, request_id: str) -> Version | None:
        """The version created by the request with this id, or None (never created, or pruned since)."""
        return next((v for v in self.versions if v.request_id == request_id), None)

    @property
    def current(self) -> Version | None:
        return self.version_with(StageLabel.CURRENT)

    @property
    def previous(self) -> Version | None:
        return self.version_with(StageLabel.PREVIOUS)

    @property
    def pending(self) -> Version | None:
        return self.version_with(StageLabel.PENDING)

    def labels(self) -> frozenset[str]:
        """Every distinct label on any version."""
        return frozenset(label for v in self.versions for label in v.stages)

    def stage_map(self) -> dict[str, str]:
        """Label -> id of the version carrying it (the last one, should a corrupt record have duplicates)."""
        return {label: v.id for v in self.versions for label in sorted(v.stages)}


def new_secret(metadata: SecretMetadata) -> SecretRecord:
    """A secret with no versions yet."""
    return SecretRecord(metadata=metadata)
