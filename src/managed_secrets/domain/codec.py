"""Records to and from JSON documents, for the store. Reading is strict: anything unexpected is ``CorruptRecord``.

The document (``schemaVersion`` 1)::

    {"schemaVersion": 1,
     "metadata": {"namespace", "name", "uid", "type", "description", "encryptionKey", "tags": {}, "created"},
     "nextVersionNumber": 4,
     "versions": [{"id", "number", "created", "stages": [...], "requestId", "fingerprint", "sealed"}],
     "rotation": null | {"versionId", "requestId", "step", "attempts", "started", "updated",
                         "lastError", "nextAttempt"}}

Sealed values are base64, times ISO-8601 in UTC with microseconds (``2024-01-01T00:00:00.000000Z``), and every
field is always present (``null`` where empty), so ``from_document(to_document(r)) == r`` exactly.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from managed_secrets.domain.clock import iso
from managed_secrets.domain.model import (
    RotationProgress,
    RotationStep,
    SecretMetadata,
    SecretRecord,
    SecretType,
    Version,
)
from managed_secrets.domain.operations import check_invariants
from managed_secrets.errors import CorruptRecord

__all__ = ["SCHEMA_VERSION", "decode_record", "encode_record", "from_document", "to_document"]

SCHEMA_VERSION = 1

_RECORD_FIELDS = ("schemaVersion", "metadata", "nextVersionNumber", "versions", "rotation")
_METADATA_FIELDS = ("namespace", "name", "uid", "type", "description", "encryptionKey", "tags", "created")
_VERSION_FIELDS = ("id", "number", "created", "stages", "requestId", "fingerprint", "sealed")
_ROTATION_FIELDS = (
    "versionId",
    "requestId",
    "step",
    "attempts",
    "started",
    "updated",
    "lastError",
    "nextAttempt",
)


def _time_text(moment: datetime) -> str:
    return iso(moment, "microseconds")


def to_document(secret: SecretRecord) -> dict[str, Any]:
    """``secret`` as a JSON-serialisable dict."""
    meta = secret.metadata
    progress = secret.rotation
    return {
        "schemaVersion": SCHEMA_VERSION,
        "metadata": {
            "namespace": meta.namespace,
            "name": meta.name,
            "uid": meta.uid,
            "type": meta.secret_type.value,
            "description": meta.description,
            "encryptionKey": meta.encryption_key,
            "tags": dict(meta.tags),
            "created": _time_text(meta.created),
        },
        "nextVersionNumber": secret.next_version_number,
        "versions": [
            {
                "id": v.id,
                "number": v.number,
                "created": _time_text(v.created),
                "stages": sorted(v.stages),
                "requestId": v.request_id,
                "fingerprint": v.fingerprint,
                "sealed": base64.b64encode(v.sealed).decode("ascii"),
            }
            for v in secret.versions
        ],
        "rotation": None
        if progress is None
        else {
            "versionId": progress.version_id,
            "requestId": progress.request_id,
            "step": progress.step.value,
            "attempts": progress.attempts,
            "started": _time_text(progress.started),
            "updated": _time_text(progress.updated),
            "lastError": progress.last_error,
            "nextAttempt": None if progress.next_attempt is None else _time_text(progress.next_attempt),
        },
    }


def encode_record(secret: SecretRecord) -> bytes:
    """``to_document`` as compact JSON bytes with sorted keys (the same record always gives the same bytes)."""
    return json.dumps(to_document(secret), sort_keys=True, separators=(",", ":")).encode("utf-8")


class _Fields:
    """One JSON object being read: typed accessors that name the field's path in every error."""

    def __init__(self, doc: object, path: str, expected: tuple[str, ...], context: str) -> None:
        self.path = path
        self.context = context
        if not isinstance(doc, dict):
            raise self.error(f"{path or 'document'} must be an object")
        missing = [key for key in expected if key not in doc]
        unexpected = sorted(str(key) for key in doc if key not in expected)
        if missing:
            raise self.error(f"missing field {', '.join(self.where(key) for key in missing)}")
        if unexpected:
            raise self.error(f"unexpected field {', '.join(self.where(key) for key in unexpected)}")
        self.doc: dict[str, object] = doc

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: str) -> CorruptRecord:
        return CorruptRecord(f"{self.context}: {message}")

    def raw(self, key: str) -> object:
        return self.doc[key]

    def text(self, key: str, *, empty_ok: bool = False) -> str:
        value = self.doc[key]
        if not isinstance(value, str):
            raise self.error(f"field {self.where(key)} must be a string")
        if not value and not empty_ok:
            raise self.error(f"field {self.where(key)} must not be empty")
        return value

    def optional_text(self, key: str, *, empty_ok: bool = False) -> str | None:
        return None if self.doc[key] is None else self.text(key, empty_ok=empty_ok)

    def integer(self, key: str) -> int:
        value = self.doc[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"field {self.where(key)} must be an integer")
        return value

    def time(self, key: str) -> datetime:
        text = self.text(key)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.error(f"field {self.where(key)} is not an ISO-8601 time") from None
        if moment.tzinfo is None or moment.utcoffset() != UTC.utcoffset(None):
            raise self.error(f"field {self.where(key)} must be a time in UTC")
        return moment.astimezone(UTC)

    def optional_time(self, key: str) -> datetime | None:
        return None if self.doc[key] is None else self.time(key)

    def base64(self, key: str) -> bytes:
        text = self.text(key, empty_ok=True)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self.error(f"field {self.where(key)} is not valid base64") from None
        if base64.b64encode(raw).decode("ascii") != text:
            raise self.error(f"field {self.where(key)} is not canonical base64")
        return raw

    def array(self, key: str) -> list[object]:
        value = self.doc[key]
        if not isinstance(value, list):
            raise self.error(f"field {self.where(key)} must be an array")
        return value


def _metadata(doc: object, context: str) -> SecretMetadata:
    fields = _Fields(doc, "metadata", _METADATA_FIELDS, context)
    tags = fields.raw("tags")
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise fields.error("field metadata.tags must be an object of strings")
    type_name = fields.text("type")
    try:
        secret_type = SecretType(type_name)
    except ValueError:
        raise fields.error(f"field metadata.type: unknown secret type {type_name!r}") from None
    return SecretMetadata(
        namespace=fields.text("namespace"),
        name=fields.text("name"),
        uid=fields.text("uid"),
        secret_type=secret_type,
        created=fields.time("created"),
        description=fields.text("description", empty_ok=True),
        encryption_key=fields.optional_text("encryptionKey"),
        tags=tuple(tags.items()),
    )


def _version(doc: object, path: str, context: str) -> Version:
    fields = _Fields(doc, path, _VERSION_FIELDS, context)
    stages = fields.array("stages")
    if not all(isinstance(label, str) for label in stages):
        raise fields.error(f"field {path}.stages must be an array of strings")
    if len(set(stages)) != len(stages):
        raise fields.error(f"field {path}.stages repeats a label")
    return Version(
        id=fields.text("id"),
        number=fields.integer("number"),
        created=fields.time("created"),
        fingerprint=fields.text("fingerprint"),
        sealed=fields.base64("sealed"),
        stages=frozenset(str(label) for label in stages),
        request_id=fields.optional_text("requestId"),
    )


def _rotation(doc: object, context: str) -> RotationProgress | None:
    if doc is None:
        return None
    fields = _Fields(doc, "rotation", _ROTATION_FIELDS, context)
    step_name = fields.text("step")
    try:
        step = RotationStep(step_name)
    except ValueError:
        raise fields.error(f"field rotation.step: unknown rotation step {step_name!r}") from None
    attempts = fields.integer("attempts")
    if attempts < 0:
        raise fields.error("field rotation.attempts must not be negative")
    return RotationProgress(
        version_id=fields.text("versionId"),
        request_id=fields.text("requestId"),
        step=step,
        started=fields.time("started"),
        updated=fields.time("updated"),
        attempts=attempts,
        last_error=fields.optional_text("lastError", empty_ok=True),
        next_attempt=fields.optional_time("nextAttempt"),
    )


def from_document(doc: object) -> SecretRecord:
    """Read a document written by ``to_document``; raise ``CorruptRecord`` on anything malformed or unsound."""
    context = "stored secret record"
    top = _Fields(doc, "", _RECORD_FIELDS, context)
    schema = top.raw("schemaVersion")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise top.error(f"unsupported schemaVersion {schema!r} (this operator reads {SCHEMA_VERSION})")
    try:
        metadata = _metadata(top.raw("metadata"), context)
        context = f"stored record of secret {metadata.secret_id}"
        top.context = context
        versions = tuple(
            _version(item, f"versions[{index}]", context) for index, item in enumerate(top.array("versions"))
        )
        record = SecretRecord(
            metadata=metadata,
            versions=versions,
            next_version_number=top.integer("nextVersionNumber"),
            rotation=_rotation(top.raw("rotation"), context),
        )
    except (TypeError, ValueError) as exc:
        # The constructors' own shape checks (empty names, duplicate tags, ...).
        raise CorruptRecord(f"{context}: {exc}") from None
    check_invariants(record)
    return record


def decode_record(data: bytes) -> SecretRecord:
    """Parse ``encode_record`` output."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"stored secret record is not valid JSON: {exc}") from None
    return from_document(doc)
