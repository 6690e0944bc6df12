"""The record codec: the exact document, exact round trips, and strict refusal of anything malformed."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from managed_secrets.domain import (
    SCHEMA_VERSION,
    SecretMetadata,
    SecretRecord,
    SecretType,
    begin_rotation,
    decode_record,
    encode_record,
    from_document,
    move_label,
    new_secret,
    put_value,
    record_rotation_failure,
    to_document,
)
from managed_secrets.errors import CorruptRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def empty() -> SecretRecord:
    meta = SecretMetadata(
        namespace="apps",
        name="db",
        uid="uid-1",
        secret_type=SecretType.GENERIC,
        created=T0,
        description="the app's database login",
        encryption_key="kek-2",
        tags=(("team", "payments"), ("env", "prod")),
    )
    return new_secret(meta)


def sample() -> SecretRecord:
    """Two values, a custom label, and a rotation that failed once."""
    secret, _ = put_value(empty(), fingerprint="fp-1", sealed=b"\x00\x01", now=T0, request_id="req-1")
    secret, _ = put_value(secret, fingerprint="fp-2", sealed=b"\xff" * 3, now=T0 + timedelta(microseconds=7))
    secret = move_label(secret, "blue", "v1")
    secret, _ = begin_rotation(secret, request_id="rot-1", fingerprint="fp-3", sealed=b"abc", now=T0)
    return record_rotation_failure(secret, "v3", "password rejected", T0 + timedelta(seconds=1), T0 + timedelta(1))


def test_document_is_exactly_this() -> None:
    assert to_document(sample()) == {
        "schemaVersion": 1,
        "metadata": {
            "namespace": "apps",
            "name": "db",
            "uid": "uid-1",
            "type": "Generic",
            "description": "the app's database login",
            "encryptionKey": "kek-2",
            "tags": {"env": "prod", "team": "payments"},
            "created": "2024-05-01T12:00:00.000000Z",
        },
        "nextVersionNumber": 4,
        "versions": [
            {
                "id": "v1",
                "number": 1,
                "created": "2024-05-01T12:00:00.000000Z",
                "stages": ["ACSPrevious", "blue"],
                "requestId": "req-1",
                "fingerprint": "fp-1",
                "sealed": "AAE=",
            },
            {
                "id": "v2",
                "number": 2,
                "created": "2024-05-01T12:00:00.000007Z",
                "stages": ["ACSCurrent"],
                "requestId": None,
                "fingerprint": "fp-2",
                "sealed": "////",
            },
            {
                "id": "v3",
                "number": 3,
                "created": "2024-05-01T12:00:00.000000Z",
                "stages": ["ACSPending"],
                "requestId": "rot-1",
                "fingerprint": "fp-3",
                "sealed": "YWJj",
            },
        ],
        "rotation": {
            "versionId": "v3",
            "requestId": "rot-1",
            "step": "set",
            "attempts": 1,
            "started": "2024-05-01T12:00:00.000000Z",
            "updated": "2024-05-01T12:00:01.000000Z",
            "lastError": "password rejected",
            "nextAttempt": "2024-05-02T12:00:00.000000Z",
        },
    }
    assert SCHEMA_VERSION == 1


@pytest.mark.parametrize("build", [empty, sample])
def test_round_trip_is_exact(build: Callable[[], SecretRecord]) -> None:
    secret = build()
    again = from_document(json.loads(json.dumps(to_document(secret))))
    assert again == secret
    assert to_document(again) == to_document(secret)
    assert decode_record(encode_record(secret)) == secret


def test_encoding_is_deterministic_compact_json() -> None:
    raw = encode_record(sample())
    assert raw == encode_record(sample())
    assert raw.startswith(b'{"metadata":{"created":"2024-05-01T12:00:00.000000Z"')
    assert b" " not in raw.replace(b"the app's database login", b"").replace(b"password rejected", b"")


def test_times_in_other_offsets_are_written_in_utc() -> None:
    secret, _ = put_value(
        empty(), fingerprint="f", sealed=b"s", now=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    )
    assert to_document(secret)["versions"][0]["created"] == "2024-05-01T12:00:00.000000Z"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets (or, for the sentinel ``...``, deletes) a dotted path in a document."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing field": (_set("metadata.uid", ...), "missing field metadata.uid"),
    "missing top field": (_set("nextVersionNumber", ...), "missing field nextVersionNumber"),
    "unexpected field": (_set("versions.0.value", "x"), "unexpected field versions[0].value"),
    "unexpected top field": (_set("extra", 1), "unexpected field extra"),
    "newer schema": (_set("schemaVersion", 2), "unsupported schemaVersion 2"),
    "schema as bool": (_set("schemaVersion", True), "unsupported schemaVersion True"),
    "schema as string": (_set("schemaVersion", "1"), "unsupported schemaVersion '1'"),
    "metadata not an object": (_set("metadata", []), "metadata must be an object"),
    "unknown type": (_set("metadata.type", "Vault"), "unknown secret type 'Vault'"),
    "empty name": (_set("metadata.name", ""), "field metadata.name must not be empty"),
    "tags not strings": (_set("metadata.tags", {"a": 1}), "metadata.tags must be an object of strings"),
    "naive time": (_set("metadata.created", "2024-05-01T12:00:00"), "metadata.created must be a time in UTC"),
    "offset time": (
        _set("versions.1.created", "2024-05-01T12:00:00+02:00"),
        "versions[1].created must be a time in UTC",
    ),
    "garbage time": (_set("rotation.started", "yesterday"), "rotation.started is not an ISO-8601 time"),
    "number as bool": (_set("versions.0.number", True), "versions[0].number must be an integer"),
    "number as float": (_set("versions.0.number", 1.0), "versions[0].number must be an integer"),
    "versions not a list": (_set("versions", {}), "field versions must be an array"),
    "version not an object": (_set("versions.0", "v1"), "versions[0] must be an object"),
    "bad base64": (_set("versions.2.sealed", "a$c="), "versions[2].sealed is not valid base64"),
    "non-canonical base64": (_set("versions.2.sealed", "YWJk="), "versions[2].sealed is not"),
    "stages not strings": (_set("versions.0.stages", [1]), "versions[0].stages must be an array of strings"),
    "stages repeated": (_set("versions.0.stages", ["blue", "blue"]), "versions[0].stages repeats a label"),
    "request id not a string": (_set("versions.0.requestId", 5), "versions[0].requestId must be a string"),
    "unknown step": (_set("rotation.step", "deploy"), "unknown rotation step 'deploy'"),
    "negative attempts": (_set("rotation.attempts", -1), "rotation.attempts must not be negative"),
    "rotation not an object": (_set("rotation", "set"), "rotation must be an object"),
    "two currents": (
        _set("versions.0.stages", ["ACSCurrent"]),
        "stage label ACSCurrent is on more than one version: v1, v2",
    ),
    "id reused": (_set("nextVersionNumber", 2), "not below the next version number 2"),
    "rotation without pending": (_set("versions.2.stages", []), "which does not carry ACSPending"),
    "custom label on a Database secret": (
        _set("metadata.type", "Database"),
        "'blue' is not allowed on a Database",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_documents_are_corrupt_records(case: str) -> None:
    mutate, fragment = MALFORMED[case]
    doc = to_document(sample())
    mutate(doc)
    kept = copy.deepcopy(doc)
    with pytest.raises(CorruptRecord) as info:
        from_document(doc)
    assert fragment in str(info.value)
    assert doc == kept


def test_errors_name_the_secret_once_its_metadata_is_read() -> None:
    doc = to_document(sample())
    doc["versions"][0]["number"] = "one"
    with pytest.raises(
        CorruptRecord, match=r"^stored record of secret apps/db: field versions\[0\]\.number must be an integer$"
    ):
        from_document(doc)


@pytest.mark.parametrize("doc", [None, [], "record", 1])
def test_a_document_must_be_an_object(doc: object) -> None:
    with pytest.raises(CorruptRecord, match="document must be an object"):
        from_document(doc)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b"[1, 2]"])
def test_decode_refuses_what_is_not_a_json_record(raw: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode_record(raw)
