"""Random passwords from a policy, in the manner of AWS Secrets Manager's GetRandomPassword.

The random source is injected: production uses `secrets.SystemRandom()` (the OS CSPRNG); tests pass a seeded
`random.Random` to get the same password every run.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from managed_secrets.errors import InvalidPolicy

__all__ = ["MAX_PASSWORD_LENGTH", "PUNCTUATION", "PasswordPolicy", "RandomSource", "generate_password"]

MAX_PASSWORD_LENGTH = 4096
PUNCTUATION = string.punctuation  # the 32 ASCII punctuation characters, as GetRandomPassword uses
_SPACE = " "


class RandomSource(Protocol):
    """The part of `random.Random` the generator uses; `secrets.SystemRandom` fits, as does a seeded Random."""

    def choice(self, seq: str) -> str: ...

    def shuffle(self, x: list[Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """What a generated password may and must contain. Checked on construction (`InvalidPolicy`).

    Character classes: lowercase letters, uppercase letters, numbers and `string.punctuation`, each on unless
    excluded, and the space character, off unless `include_space`. `exclude_characters` removes individual
    characters from every class. With `require_each_included_type`, the password holds at least one
    character of each included letter, number and punctuation class; the space is never required (as in
    GetRandomPassword, whose requirement covers upper, lower, numbers and punctuation only).
    """

    length: int = 32
    exclude_characters: str = ""
    exclude_numbers: bool = False
    exclude_punctuation: bool = False
    exclude_uppercase: bool = False
    exclude_lowercase: bool = False
    include_space: bool = False
    require_each_included_type: bool = True

    def __post_init__(self) -> None:
        self.character_classes()  # validates; the result is cheap to recompute

    def character_classes(self) -> tuple[tuple[str, str, bool], ...]:
        """`(name, characters, required)` for each class that is left, after every exclusion."""
        if isinstance(self.length, bool) or not isinstance(self.length, int):
            raise InvalidPolicy(f"password length must be an integer, got {type(self.length).__name__}")
        if not 1 <= self.length <= MAX_PASSWORD_LENGTH:
            raise InvalidPolicy(f"password length must be between 1 and {MAX_PASSWORD_LENGTH}, got {self.length}")
        if not isinstance(self.exclude_characters, str):
            raise InvalidPolicy("exclude_characters must be a string")
        candidates = (
            ("lowercase", string.ascii_lowercase, not self.exclude_lowercase, True),
            ("uppercase", string.ascii_uppercase, not self.exclude_uppercase, True),
            ("numbers", string.digits, not self.exclude_numbers, True),
            ("punctuation", PUNCTUATION, not self.exclude_punctuation, True),
            ("space", _SPACE, self.include_space, False),
        )
        if not any(included for _, _, included, _ in candidates):
            raise InvalidPolicy("every character class is excluded: the password could contain nothing")
        excluded = set(self.exclude_characters)
        classes: list[tuple[str, str, bool]] = []
        for name, characters, included, requirable in candidates:
            if not included:
                continue
            remaining = "".join(c for c in characters if c not in excluded)
            required = requirable and self.require_each_included_type
            if not remaining:
                if required:
                    raise InvalidPolicy(
                        f"exclude_characters removes every character of the required class {name!r}; "
                        f"exclude the class instead, or set require_each_included_type to false"
                    )
                continue
            classes.append((name, remaining, required))
        if not classes:
            raise InvalidPolicy("exclude_characters removes every character the policy allows")
        required_names = [name for name, _, required in classes if required]
        if self.length < len(required_names):
            raise InvalidPolicy(
                f"password length {self.length} is shorter than the {len(required_names)} character classes "
                f"that must each appear ({', '.join(required_names)})"
            )
        return tuple(classes)


_SYSTEM_RANDOM = secrets.SystemRandom()


def generate_password(policy: PasswordPolicy, rng: RandomSource | None = None) -> str:
    """A password of exactly `policy.length` characters drawn uniformly from the allowed characters.

    With `require_each_included_type`, one character is first drawn from each required class, the rest
    from all allowed characters, and the positions are then shuffled with `rng`, so the guaranteed
    characters sit anywhere. `rng` defaults to `secrets.SystemRandom()`.
    """
    source: RandomSource = _SYSTEM_RANDOM if rng is None else rng
    classes = policy.character_classes()
    alphabet = "".join(characters for _, characters, _ in classes)
    chars = [source.choice(characters) for _, characters, required in classes if required]
    chars.extend(source.choice(alphabet) for _ in range(policy.length - len(chars)))
    source.shuffle(chars)
    return "".join(chars)


def policy_from_spec(raw: Mapping[str, Any] | None) -> PasswordPolicy:
    """A policy from its CRD form (``spec.generate.keys[]`` or ``passwordPolicy``: camelCase, all optional)."""
    raw = raw or {}
    defaults = PasswordPolicy()
    return PasswordPolicy(
        length=int(raw.get("length", defaults.length)),
        exclude_characters=str(raw.get("excludeCharacters", defaults.exclude_characters)),
        exclude_numbers=bool(raw.get("excludeNumbers", defaults.exclude_numbers)),
        exclude_punctuation=bool(raw.get("excludePunctuation", defaults.exclude_punctuation)),
        exclude_uppercase=bool(raw.get("excludeUppercase", defaults.exclude_uppercase)),
        exclude_lowercase=bool(raw.get("excludeLowercase", defaults.exclude_lowercase)),
        include_space=bool(raw.get("includeSpace", defaults.include_space)),
        require_each_included_type=bool(raw.get("requireEachIncludedType", defaults.require_each_included_type)),
    )
