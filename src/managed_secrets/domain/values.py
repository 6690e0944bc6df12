"""Plaintext secret values: a map of keys to bytes, or one opaque blob. Never printed."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from managed_secrets.domain.labels import show_label
from managed_secrets.errors import CorruptRecord, InvalidRequest

__all__ = ["MAX_DATA_KEY_LENGTH", "SecretValue", "ValueKind", "validate_data_key"]

MAX_DATA_KEY_LENGTH = 253
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


class ValueKind(StrEnum):
    """The two shapes a value can take."""

    MAP = "map"
    BINARY = "binary"


def validate_data_key(key: object) -> str:
    """Return ``key`` if it is valid as a key of a Kubernetes Secret's ``data``, else raise ``InvalidRequest``."""
    if not isinstance(key, str):
        raise InvalidRequest(f"secret value keys must be strings, got {type(key).__name__}")
    problem = None
    if not key:
        problem = "is empty"
    elif len(key) > MAX_DATA_KEY_LENGTH:
        problem = f"is longer than {MAX_DATA_KEY_LENGTH} characters"
    elif not _DATA_KEY.fullmatch(key):
        problem = "may contain only letters, digits, '-', '_' and '.'"
    elif key in {".", ".."} or key.startswith(".."):
        problem = "must not be '.' or '..' or start with '..'"
    if problem:
        raise InvalidRequest(f"secret value key {show_label(key)} {problem}")
    return key


def _as_bytes(raw: object, what: str) -> bytes:
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    raise InvalidRequest(f"{what} must be bytes, got {type(raw).__name__}")


@dataclass(frozen=True, repr=False)
class SecretValue:
    """One version's plaintext. Build it with ``from_map`` or ``from_blob``.

    ``entries`` holds the map sorted by key, so equal maps compare (and serialise) equal. ``repr`` and
    ``str`` show key names and sizes only.
    """

    kind: ValueKind
    entries: tuple[tuple[str, bytes], ...] = ()
    blob: bytes = b""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ValueKind(self.kind))
        except ValueError:
            raise InvalidRequest(f"unknown secret value kind {show_label(self.kind)}") from None
        if self.kind is ValueKind.MAP:
            if not self.entries:
                raise InvalidRequest("a secret value map must have at least one key")
            if self.blob:
                raise InvalidRequest("a secret value map cannot also carry a binary blob")
            keys = [key for key, _ in self.entries]
            for key, raw in self.entries:
                validate_data_key(key)
                if not isinstance(raw, bytes):
                    raise InvalidRequest(f"secret value key {show_label(key)} must map to bytes")
            if keys != sorted(set(keys)):
                raise InvalidRequest("secret value entries must be sorted by key without duplicates")
        else:
            if self.entries:
                raise InvalidRequest("a binary secret value cannot also carry keys")
            if not isinstance(self.blob, bytes) or not self.blob:
                raise InvalidRequest("a binary secret value must be non-empty bytes")

    @classmethod
    def from_map(cls, data: Mapping[str, bytes]) -> SecretValue:
        """A value made of named entries (``username``, ``password``, ...)."""
        entries = [
            (validate_data_key(key), _as_bytes(raw, f"secret value key {key!r}")) for key, raw in data.items()
        ]
        return cls(ValueKind.MAP, tuple(sorted(entries)))

    @classmethod
    def from_blob(cls, blob: bytes) -> SecretValue:
        """A value that is one opaque binary blob."""
        return cls(ValueKind.BINARY, blob=_as_bytes(blob, "a binary secret value"))

    def keys(self) -> tuple[str, ...]:
        """The map's keys in sorted order; empty for a binary value."""
        return tuple(key for key, _ in self.entries)

    def as_dict(self) -> dict[str, bytes]:
        """The map as a new dict. A binary value has no keys: that raises ``TypeError``."""
        if self.kind is not ValueKind.MAP:
            raise TypeError("a binary secret value has no keys")
        return dict(self.entries)

    @property
    def size(self) -> int:
        """Total bytes of plaintext (keys not counted)."""
        return len(self.blob) + sum(len(raw) for _, raw in self.entries)

    def to_bytes(self) -> bytes:
        """Canonical serialisation: equal values give equal bytes (this is what gets sealed)."""
        doc: dict[str, Any] = {"kind": self.kind.value}
        if self.kind is ValueKind.MAP:
            doc["data"] = {key: base64.b64encode(raw).decode("ascii") for key, raw in self.entries}
        else:
            doc["blob"] = base64.b64encode(self.blob).decode("ascii")
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def from_bytes(cls, raw: bytes) -> SecretValue:
        """Parse ``to_bytes`` output. Anything else raises ``CorruptRecord``, whose text never quotes the input."""
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            # from None: a JSONDecodeError keeps the whole document, i.e. the plaintext, on itself.
            raise CorruptRecord("secret value is not valid JSON") from None
        if not isinstance(doc, dict):
            raise CorruptRecord("secret value must be a JSON object")
        kind = doc.get("kind")
        try:
            if kind == ValueKind.MAP.value and set(doc) == {"kind", "data"}:
                data = doc["data"]
                if not isinstance(data, dict):
                    raise CorruptRecord("secret value field 'data' must be an object")
                return cls.from_map({key: _b64(text, f"data[{show_label(key)}]") for key, text in data.items()})
            if kind == ValueKind.BINARY.value and set(doc) == {"kind", "blob"}:
                return cls.from_blob(_b64(doc["blob"], "blob"))
        except InvalidRequest as exc:
            raise CorruptRecord(f"secret value is malformed: {exc}") from None
        raise CorruptRecord("secret value must be {kind: map, data} or {kind: binary, blob}")

    def __repr__(self) -> str:
        if self.kind is ValueKind.MAP:
            shown = ", ".join(f"{key}=<{len(raw)} bytes>" for key, raw in self.entries)
            return f"SecretValue(map: {shown})"
        return f"SecretValue(binary: <{len(self.blob)} bytes>)"


def _b64(text: object, field: str) -> bytes:
    if not isinstance(text, str):
        raise CorruptRecord(f"secret value field {field} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptRecord(f"secret value field {field} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise CorruptRecord(f"secret value field {field} is not canonical base64")
    return raw
