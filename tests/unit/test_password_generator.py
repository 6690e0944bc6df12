"""The GetRandomPassword-style generator: policy checks, exclusions, required classes, determinism."""

from __future__ import annotations

import dataclasses
import random
import string
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_secrets.errors import InvalidPolicy, InvalidRequest
from managed_secrets.rotation.generators import (
    MAX_PASSWORD_LENGTH,
    PUNCTUATION,
    PasswordPolicy,
    RandomSource,
    generate_password,
)

CLASSES = {
    "lowercase": set(string.ascii_lowercase),
    "uppercase": set(string.ascii_uppercase),
    "numbers": set(string.digits),
    "punctuation": set(string.punctuation),
}


def policy(**overrides: Any) -> PasswordPolicy:
    return PasswordPolicy(**overrides)


def password(seed: int = 0, **overrides: Any) -> str:
    return generate_password(policy(**overrides), random.Random(seed))


def classes_in(value: str) -> set[str]:
    return {name for name, members in CLASSES.items() if members & set(value)}


# -- defaults and determinism -----------------------------------------------------------------------


def test_defaults() -> None:
    assert PasswordPolicy() == PasswordPolicy(
        length=32,
        exclude_characters="",
        exclude_numbers=False,
        exclude_punctuation=False,
        exclude_uppercase=False,
        exclude_lowercase=False,
        include_space=False,
        require_each_included_type=True,
    )
    value = generate_password(PasswordPolicy())
    assert len(value) == 32
    assert set(value) <= set(string.ascii_letters + string.digits + string.punctuation)
    assert classes_in(value) == set(CLASSES)


def test_punctuation_is_the_ascii_set() -> None:
    assert PUNCTUATION == string.punctuation == "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def test_seeded_rng_is_deterministic() -> None:
    assert password(1234, length=16) == "_dl!ey-cO1Ec\\kmT"
    assert password(7, length=12, exclude_punctuation=True) == "Id6edxL0EkPg"
    assert password(99, length=20, include_space=True, exclude_characters="lI1O0") == "&E,n[A,HNG2m+m5@ }s6"
    assert password(5) == password(5)
    assert password(5) != password(6)


def test_default_rng_is_the_system_csprng() -> None:
    values = {generate_password(PasswordPolicy()) for _ in range(20)}
    assert len(values) == 20


def test_rng_only_needs_choice_and_shuffle() -> None:
    class FirstChoice:
        def choice(self, seq: str) -> str:
            return seq[0]

        def shuffle(self, x: list[Any]) -> None:
            x.reverse()

    rng: RandomSource = FirstChoice()
    # Required classes first (lower, upper, numbers, punctuation), then the rest; reversed by "shuffle".
    assert generate_password(PasswordPolicy(length=6), rng) == "aa!0Aa"
    assert generate_password(PasswordPolicy(length=3, require_each_included_type=False), rng) == "aaa"


# -- length -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [4, 5, 32, 100, MAX_PASSWORD_LENGTH])
def test_length_is_honoured(length: int) -> None:
    for seed in range(5):
        assert len(password(seed, length=length)) == length


def test_length_one_without_requirements() -> None:
    value = password(3, length=1, require_each_included_type=False)
    assert len(value) == 1
    assert value in string.ascii_letters + string.digits + string.punctuation


# -- exclusions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "class_name"),
    [
        ("exclude_lowercase", "lowercase"),
        ("exclude_uppercase", "uppercase"),
        ("exclude_numbers", "numbers"),
        ("exclude_punctuation", "punctuation"),
    ],
)
def test_excluded_classes_never_appear(flag: str, class_name: str) -> None:
    for seed in range(100):
        value = password(seed, length=64, **{flag: True})
        assert not CLASSES[class_name] & set(value)
        assert classes_in(value) == set(CLASSES) - {class_name}


def test_excluded_characters_never_appear_over_many_seeds() -> None:
    excluded = "lI1O0o|`'\"\\"
    seen: Counter[str] = Counter()
    for seed in range(500):
        value = password(seed, length=40, exclude_characters=excluded)
        assert not set(excluded) & set(value)
        seen.update(value)
    allowed = set(string.ascii_letters + string.digits + string.punctuation) - set(excluded)
    assert set(seen) == allowed  # everything else does turn up


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**64),
    excluded=st.text(alphabet=string.printable, max_size=40),
    length=st.integers(min_value=4, max_value=200),
)
def test_excluded_characters_property(seed: int, excluded: str, length: int) -> None:
    try:
        chosen = policy(length=length, exclude_characters=excluded, include_space=True)
    except InvalidPolicy:
        # Only when a required class is emptied entirely.
        assert any(members <= set(excluded) for members in CLASSES.values())
        return
    value = generate_password(chosen, random.Random(seed))
    assert len(value) == length
    assert not set(excluded) & set(value)
    assert classes_in(value) == set(CLASSES)


def test_emptied_class_is_dropped_when_not_required() -> None:
    value = password(1, length=50, exclude_characters=string.digits, require_each_included_type=False)
    assert len(value) == 50
    assert not set(string.digits) & set(value)


# -- required classes -------------------------------------------------------------------------------


def test_each_required_class_appears_even_at_minimum_length() -> None:
    for seed in range(300):
        value = password(seed, length=4)
        assert classes_in(value) == set(CLASSES)
        assert sorted(len(CLASSES[name] & set(value)) for name in CLASSES) == [1, 1, 1, 1]


def test_required_characters_are_shuffled_into_every_position() -> None:
    digit_positions = set()
    for seed in range(200):
        value = password(seed, length=4)
        digit_positions.add(next(i for i, c in enumerate(value) if c.isdigit()))
    assert digit_positions == {0, 1, 2, 3}


def test_only_included_classes_are_required() -> None:
    for seed in range(100):
        value = password(seed, length=2, exclude_numbers=True, exclude_punctuation=True)
        assert classes_in(value) == {"lowercase", "uppercase"}


def test_without_requirement_classes_may_be_missing() -> None:
    values = [password(seed, length=4, require_each_included_type=False) for seed in range(200)]
    assert any(classes_in(value) != set(CLASSES) for value in values)


# -- space ------------------------------------------------------------------------------------------


def test_space_only_when_included() -> None:
    assert " " not in "".join(password(seed, length=200) for seed in range(20))
    with_space = password(2, length=MAX_PASSWORD_LENGTH, include_space=True)
    assert with_space.count(" ") > 10
    assert classes_in(with_space) == set(CLASSES)


def test_space_is_not_a_required_class() -> None:
    value = password(0, length=4, include_space=True)
    assert len(value) == 4
    assert classes_in(value) == set(CLASSES)
    assert " " not in value


def test_space_alone() -> None:
    lonely = policy(
        length=3,
        exclude_lowercase=True,
        exclude_uppercase=True,
        exclude_numbers=True,
        exclude_punctuation=True,
        include_space=True,
    )
    assert generate_password(lonely, random.Random(0)) == "   "


def test_excluding_the_space_character_wins_over_include_space() -> None:
    value = password(0, length=500, include_space=True, exclude_characters=" ")
    assert " " not in value


# -- invalid policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"length": 0}, "password length must be between 1 and 4096, got 0"),
        ({"length": -5}, "password length must be between 1 and 4096, got -5"),
        ({"length": MAX_PASSWORD_LENGTH + 1}, "password length must be between 1 and 4096, got 4097"),
        ({"length": True}, "password length must be an integer, got bool"),
        ({"length": 8.0}, "password length must be an integer, got float"),
        ({"exclude_characters": None}, "exclude_characters must be a string"),
        (
            {
                "exclude_lowercase": True,
                "exclude_uppercase": True,
                "exclude_numbers": True,
                "exclude_punctuation": True,
            },
            "every character class is excluded",
        ),
        (
            {"length": 3},
            "password length 3 is shorter than the 4 character classes that must each appear "
            "(lowercase, uppercase, numbers, punctuation)",
        ),
        (
            {"length": 1, "exclude_numbers": True},
            "password length 1 is shorter than the 3 character classes that must each appear "
            "(lowercase, uppercase, punctuation)",
        ),
        (
            {"exclude_characters": "0123456789"},
            "exclude_characters removes every character of the required class 'numbers'",
        ),
        (
            {"exclude_characters": string.ascii_uppercase + "x"},
            "exclude_characters removes every character of the required class 'uppercase'",
        ),
        (
            {
                "exclude_characters": string.ascii_letters + string.digits,
                "exclude_punctuation": True,
                "require_each_included_type": False,
            },
            "exclude_characters removes every character the policy allows",
        ),
    ],
)
def test_invalid_policies_are_refused_clearly(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        PasswordPolicy(**overrides)
    assert message in str(caught.value)
    assert isinstance(caught.value, InvalidRequest)


def test_excluding_a_whole_class_by_characters_is_fine_when_not_required() -> None:
    chosen = policy(exclude_characters="0123456789", require_each_included_type=False)
    assert [name for name, _, _ in chosen.character_classes()] == ["lowercase", "uppercase", "punctuation"]


def test_policy_is_frozen() -> None:
    chosen = PasswordPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.length = 8  # type: ignore[misc]
