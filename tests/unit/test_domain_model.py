"""The model's objects: construction checks, lookups, and reprs that do not dump ciphertext."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from managed_secrets.domain import (
    RotationProgress,
    RotationStep,
    SecretMetadata,
    SecretRecord,
    SecretType,
    Version,
    new_secret,
    put_value,
    version_id_for,
)
from managed_secrets.errors import VersionNotFound

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def metadata(**overrides: object) -> SecretMetadata:
    fields: dict[str, object] = {
        "namespace": "apps",
        "name": "db",
        "uid": "uid-1",
        "secret_type": SecretType.GENERIC,
        "created": T0,
    }
    fields.update(overrides)
    return SecretMetadata(**fields)  # type: ignore[arg-type]


def version(n: int = 1, **overrides: object) -> Version:
    fields: dict[str, object] = {
        "id": f"v{n}",
        "number": n,
        "created": T0,
        "fingerprint": f"fp-{n}",
        "sealed": b"\x01" * 40,
    }
    fields.update(overrides)
    return Version(**fields)  # type: ignore[arg-type]


def test_secret_types_have_their_spec_names() -> None:
    assert [t.value for t in SecretType] == ["Generic", "Database", "SSHKey", "External"]
    assert [t.allows_custom_labels for t in SecretType] == [True, False, False, False]


def test_metadata_secret_id_and_defaults() -> None:
    meta = metadata()
    assert meta.secret_id == "apps/db"
    assert meta.description == ""
    assert meta.encryption_key is None
    assert meta.tags == ()


def test_metadata_sorts_tags_and_accepts_a_mapping() -> None:
    from_pairs = metadata(tags=(("team", "a"), ("env", "prod")))
    from_mapping = metadata(tags={"env": "prod", "team": "a"})
    assert from_pairs.tags == (("env", "prod"), ("team", "a"))
    assert from_pairs == from_mapping
    assert from_pairs.tag_map == {"env": "prod", "team": "a"}


def test_metadata_converts_times_to_utc_and_type_names_to_the_enum() -> None:
    plus_two = timezone(timedelta(hours=2))
    meta = metadata(created=datetime(2024, 5, 1, 14, 0, tzinfo=plus_two), secret_type="Database")
    assert meta.created == T0
    assert meta.created.tzinfo is UTC
    assert meta.secret_type is SecretType.DATABASE


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"namespace": ""}, ValueError, "namespace must not be empty"),
        ({"name": 7}, TypeError, "name must be a string"),
        ({"created": datetime(2024, 5, 1)}, ValueError, "timezone-aware"),
        ({"secret_type": "Vault"}, ValueError, "Vault"),
        ({"tags": (("a", "1"), ("a", "2"))}, ValueError, "unique"),
        ({"tags": (("a",),)}, TypeError, "pairs"),
        ({"encryption_key": ""}, ValueError, "encryption_key"),
    ],
)
def test_metadata_refuses_bad_shapes(overrides: dict[str, object], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        metadata(**overrides)


def test_version_repr_shows_the_sealed_length_not_the_bytes() -> None:
    sealed = b"SEALED-CANARY" * 3
    text = repr(version(3, sealed=sealed, stages={"ACSCurrent"}))
    assert "SEALED-CANARY" not in text
    assert f"sealed=<{len(sealed)} bytes>" in text
    assert "id='v3'" in text
    assert "['ACSCurrent']" in text


def test_version_normalises_stages_to_a_frozenset() -> None:
    made = version(stages=["ACSCurrent", "blue"])
    assert made.stages == frozenset({"ACSCurrent", "blue"})
    assert made.has("blue")
    assert not made.has("green")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"number": True}, TypeError),
        ({"number": "1"}, TypeError),
        ({"fingerprint": ""}, ValueError),
        ({"sealed": "text"}, TypeError),
        ({"request_id": ""}, ValueError),
        ({"created": datetime(2024, 1, 1)}, ValueError),
        ({"stages": {1}}, TypeError),
    ],
)
def test_version_refuses_bad_shapes(overrides: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        version(**overrides)  # type: ignore[arg-type]
    assert "multiple values" not in str(info.value)


def test_version_ids() -> None:
    assert version_id_for(1) == "v1"
    assert version_id_for(12) == "v12"


def test_rotation_steps_are_ordered() -> None:
    assert [s.value for s in RotationStep] == ["create", "set", "test", "finish"]
    assert [s.order for s in RotationStep] == [0, 1, 2, 3]


def test_rotation_progress_refuses_negative_attempts_and_naive_times() -> None:
    with pytest.raises(ValueError, match="negative"):
        RotationProgress("v2", "r", RotationStep.SET, T0, T0, attempts=-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        RotationProgress("v2", "r", RotationStep.SET, T0, T0, next_attempt=datetime(2024, 1, 1))


def test_new_secret_is_empty() -> None:
    secret = new_secret(metadata())
    assert secret.versions == ()
    assert secret.next_version_number == 1
    assert secret.rotation is None
    assert secret.current is None
    assert secret.labels() == frozenset()
    assert secret.secret_id == "apps/db"


def test_lookups() -> None:
    secret, _ = put_value(new_secret(metadata()), fingerprint="a", sealed=b"A", now=T0, request_id="r1")
    secret, _ = put_value(secret, fingerprint="b", sealed=b"B", now=T0 + timedelta(minutes=1))
    assert secret.version("v1").fingerprint == "a"
    assert secret.find_version("v9") is None
    assert secret.current is not None and secret.current.id == "v2"
    assert secret.previous is not None and secret.previous.id == "v1"
    assert secret.pending is None
    assert secret.version_with("blue") is None
    assert secret.version_for_request("r1") == secret.version("v1")
    assert secret.version_for_request("r2") is None
    assert secret.labels() == {"ACSCurrent", "ACSPrevious"}
    assert secret.stage_map() == {"ACSCurrent": "v2", "ACSPrevious": "v1"}


def test_version_lookup_names_the_secret_and_version() -> None:
    secret = new_secret(metadata())
    with pytest.raises(VersionNotFound) as info:
        secret.version("v7")
    assert str(info.value) == "secret apps/db has no version 'v7'"


def test_record_normalises_a_list_of_versions_to_a_tuple() -> None:
    record = SecretRecord(metadata(), [version(1)], next_version_number=2)  # type: ignore[arg-type]
    assert record.versions == (version(1),)
    assert dataclasses.replace(record) == record
