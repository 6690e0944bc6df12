"""Stage labels: the three built-in ones and the rules for custom labels."""

from __future__ import annotations

import re
from enum import StrEnum

from managed_secrets.errors import InvalidStageLabel

__all__ = [
    "BUILTIN_LABELS",
    "MAX_STAGE_LABELS",
    "SecretType",
    "StageLabel",
    "is_builtin_label",
    "show_label",
    "validate_label",
]


class SecretType(StrEnum):
    """What kind of secret this is; chooses the rotation strategy."""

    GENERIC = "Generic"
    DATABASE = "Database"
    SSH_KEY = "SSHKey"
    EXTERNAL = "External"

    @property
    def allows_custom_labels(self) -> bool:
        """Custom stage labels are for Generic secrets only: the other types' strategies own their labels."""
        return self is SecretType.GENERIC


class StageLabel(StrEnum):
    """The labels the secrets manager itself moves."""

    CURRENT = "ACSCurrent"
    PREVIOUS = "ACSPrevious"
    PENDING = "ACSPending"


BUILTIN_LABELS: frozenset[str] = frozenset(label.value for label in StageLabel)

MAX_STAGE_LABELS = 8
"""Distinct labels one secret may carry across all its versions, built-in ones included."""

_CUSTOM_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BUILTIN_FOLDED = {label.value.casefold(): label.value for label in StageLabel}


def is_builtin_label(name: str) -> bool:
    """Whether ``name`` is exactly one of the built-in labels."""
    return name in BUILTIN_LABELS


def show_label(name: object) -> str:
    """A label as it may appear in an error message: quoted, and cut short if absurdly long."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_label(name: object, secret_type: SecretType, *, secret_id: str | None = None) -> str:
    """Return ``name`` if it is a label this secret type may carry, else raise ``InvalidStageLabel``.

    Built-in labels are allowed on every type. Custom labels must match a conservative pattern (letters,
    digits, ``_ . -``; starting with a letter or digit; at most 64 characters), must not be a built-in label
    in another case (``acscurrent`` is surely a typo), and are allowed on Generic secrets only.
    """
    where = f"secret {secret_id}: " if secret_id else ""
    if not isinstance(name, str):
        raise InvalidStageLabel(f"{where}stage label must be a string, got {type(name).__name__}")
    if is_builtin_label(name):
        return name
    builtin = _BUILTIN_FOLDED.get(name.casefold())
    if builtin is not None:
        raise InvalidStageLabel(
            f"{where}stage label {show_label(name)} differs from the built-in label {builtin} only by case"
        )
    if not _CUSTOM_LABEL.fullmatch(name):
        raise InvalidStageLabel(
            f"{where}stage label {show_label(name)} is malformed: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if not secret_type.allows_custom_labels:
        raise InvalidStageLabel(
            f"{where}custom stage label {show_label(name)} is not allowed on a {secret_type.value} secret "
            "(custom labels are allowed on Generic secrets only)"
        )
    return name
