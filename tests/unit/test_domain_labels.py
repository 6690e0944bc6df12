"""Stage label names: built-ins, custom label rules, and which secret types may carry custom labels."""

from __future__ import annotations

import pytest

from managed_secrets.domain import (
    BUILTIN_LABELS,
    MAX_STAGE_LABELS,
    SecretType,
    StageLabel,
    is_builtin_label,
    validate_label,
)
from managed_secrets.errors import InvalidRequest, InvalidStageLabel


def test_builtin_labels_have_their_aws_style_names() -> None:
    assert StageLabel.CURRENT.value == "ACSCurrent"
    assert StageLabel.PREVIOUS.value == "ACSPrevious"
    assert StageLabel.PENDING.value == "ACSPending"
    assert {"ACSCurrent", "ACSPrevious", "ACSPending"} == BUILTIN_LABELS
    assert MAX_STAGE_LABELS == 8


def test_invalid_stage_label_is_an_invalid_request() -> None:
    assert issubclass(InvalidStageLabel, InvalidRequest)


@pytest.mark.parametrize("secret_type", list(SecretType))
@pytest.mark.parametrize("label", ["ACSCurrent", "ACSPrevious", "ACSPending"])
def test_builtin_labels_are_valid_on_every_type(label: str, secret_type: SecretType) -> None:
    assert validate_label(label, secret_type) == label
    assert is_builtin_label(label)


@pytest.mark.parametrize("label", ["blue", "green-2", "release_1.4", "A", "9lives", "x" * 64])
def test_well_formed_custom_labels_are_valid_on_generic_secrets(label: str) -> None:
    assert validate_label(label, SecretType.GENERIC) == label
    assert not is_builtin_label(label)


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("", "malformed"),
        ("ACS Current", "malformed"),
        ("-blue", "malformed"),
        (".hidden", "malformed"),
        ("blue/green", "malformed"),
        ("x" * 65, "malformed"),
        ("blüe", "malformed"),
        ("acscurrent", "only by case"),
        ("ACSCURRENT", "only by case"),
        ("acsPending", "only by case"),
    ],
)
def test_malformed_or_case_colliding_labels_are_refused(label: str, fragment: str) -> None:
    with pytest.raises(InvalidStageLabel) as info:
        validate_label(label, SecretType.GENERIC, secret_id="apps/db")
    assert fragment in str(info.value)
    assert "apps/db" in str(info.value)


def test_non_string_label_is_refused() -> None:
    with pytest.raises(InvalidStageLabel, match="must be a string"):
        validate_label(42, SecretType.GENERIC)


def test_long_labels_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidStageLabel) as info:
        validate_label("bad label " * 100, SecretType.GENERIC)
    assert len(str(info.value)) < 250


@pytest.mark.parametrize("secret_type", [SecretType.DATABASE, SecretType.SSH_KEY, SecretType.EXTERNAL])
def test_custom_labels_are_for_generic_secrets_only(secret_type: SecretType) -> None:
    with pytest.raises(InvalidStageLabel) as info:
        validate_label("blue", secret_type)
    message = str(info.value)
    assert "'blue'" in message
    assert secret_type.value in message
    assert "Generic" in message
