"""Plaintext values: shapes, key rules, canonical bytes, and never showing a value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_secrets.domain import SecretValue, ValueKind
from managed_secrets.errors import CorruptRecord, InvalidRequest

CANARY = b"canary-7f3a-do-not-print"


def test_map_value_keeps_entries_sorted_by_key() -> None:
    value = SecretValue.from_map({"username": b"app", "password": b"hunter2"})
    assert value.kind is ValueKind.MAP
    assert value.keys() == ("password", "username")
    assert value.as_dict() == {"password": b"hunter2", "username": b"app"}
    assert value.size == 10


def test_equal_maps_are_equal_whatever_the_insertion_order() -> None:
    first = SecretValue.from_map({"a": b"1", "b": b"2"})
    second = SecretValue.from_map({"b": b"2", "a": b"1"})
    assert first == second
    assert hash(first) == hash(second)
    assert first.to_bytes() == second.to_bytes()


def test_binary_value() -> None:
    value = SecretValue.from_blob(b"\x00\x01\xff")
    assert value.kind is ValueKind.BINARY
    assert value.blob == b"\x00\x01\xff"
    assert value.keys() == ()
    assert value.size == 3
    with pytest.raises(TypeError):
        value.as_dict()


def test_canonical_bytes_are_exactly_this_json() -> None:
    value = SecretValue.from_map({"user": b"ab", "pw": b"\xff"})
    assert value.to_bytes() == b'{"data":{"pw":"/w==","user":"YWI="},"kind":"map"}'
    assert SecretValue.from_blob(b"ab").to_bytes() == b'{"blob":"YWI=","kind":"binary"}'


def test_a_map_and_a_blob_never_serialise_alike() -> None:
    assert SecretValue.from_map({"blob": b"x"}).to_bytes() != SecretValue.from_blob(b"x").to_bytes()


@pytest.mark.parametrize(
    "value",
    [
        SecretValue.from_map({"password": CANARY}),
        SecretValue.from_map({"a.b_c-d": b"", "tls.crt": CANARY}),
        SecretValue.from_blob(CANARY),
    ],
)
def test_repr_and_str_show_key_names_and_sizes_but_never_the_value(value: SecretValue) -> None:
    for text in (repr(value), str(value), f"{value}", f"{[value]}"):
        assert CANARY.decode() not in text
        assert "canary" not in text
        assert f"<{len(CANARY)} bytes>" in text


def test_repr_names_the_keys() -> None:
    value = SecretValue.from_map({"username": b"app", "password": CANARY})
    assert repr(value) == f"SecretValue(map: password=<{len(CANARY)} bytes>, username=<3 bytes>)"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({}, "at least one key"),
        ({"": b"x"}, "is empty"),
        ({"bad key": b"x"}, "'bad key' may contain only"),
        ({"a/b": b"x"}, "'a/b' may contain only"),
        ({".": b"x"}, "must not be '.'"),
        ({"..": b"x"}, "must not be '.'"),
        ({"..data": b"x"}, "start with '..'"),
        ({"k" * 254: b"x"}, "longer than 253"),
        ({"ok": "a string"}, "must be bytes"),
    ],
)
def test_bad_maps_are_refused_with_a_reason(data: dict[str, bytes], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        SecretValue.from_map(data)
    assert fragment in str(info.value)


def test_longest_allowed_key_is_accepted() -> None:
    assert SecretValue.from_map({"k" * 253: b"x"}).keys() == ("k" * 253,)


def test_empty_blob_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="non-empty"):
        SecretValue.from_blob(b"")


def test_direct_construction_checks_the_shape() -> None:
    with pytest.raises(InvalidRequest, match="sorted"):
        SecretValue(ValueKind.MAP, (("b", b"1"), ("a", b"2")))
    with pytest.raises(InvalidRequest, match="cannot also carry keys"):
        SecretValue(ValueKind.BINARY, (("a", b"1"),), b"x")
    with pytest.raises(InvalidRequest, match="unknown secret value kind"):
        SecretValue("text", blob=b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json " + CANARY, "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"kind":"map"}', "must be {kind: map, data}"),
        (b'{"kind":"map","data":{},"extra":1}', "must be {kind: map, data}"),
        (b'{"kind":"text","data":{}}', "must be {kind: map, data}"),
        (b'{"kind":"map","data":[]}', "'data' must be an object"),
        (b'{"kind":"map","data":{}}', "at least one key"),
        (b'{"kind":"map","data":{"bad key":"eA=="}}', "may contain only"),
        (b'{"kind":"map","data":{"k":"***"}}', "not valid base64"),
        (b'{"kind":"map","data":{"k":"eB=="}}', "not canonical base64"),
        (b'{"kind":"map","data":{"k":7}}', "must be a base64 string"),
        (b'{"kind":"binary","blob":""}', "non-empty"),
    ],
)
def test_from_bytes_refuses_anything_but_canonical_form(raw: bytes, fragment: str) -> None:
    with pytest.raises(CorruptRecord) as info:
        SecretValue.from_bytes(raw)
    assert fragment in str(info.value)
    assert "canary" not in str(info.value)
    # The cause chain must not carry the document (a JSONDecodeError keeps it in .doc).
    assert info.value.__cause__ is None


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.", min_size=1, max_size=20).filter(
    lambda key: key not in {".", ".."} and not key.startswith("..")
)
_values = st.one_of(
    st.dictionaries(_keys, st.binary(max_size=40), min_size=1, max_size=6).map(SecretValue.from_map),
    st.binary(min_size=1, max_size=64).map(SecretValue.from_blob),
)


@settings(max_examples=200, derandomize=True)
@given(_values)
def test_bytes_round_trip_is_exact_and_canonical(value: SecretValue) -> None:
    raw = value.to_bytes()
    again = SecretValue.from_bytes(raw)
    assert again == value
    assert again.to_bytes() == raw


@settings(max_examples=200, derandomize=True)
@given(_values, _values)
def test_different_values_give_different_bytes(first: SecretValue, second: SecretValue) -> None:
    assert (first.to_bytes() == second.to_bytes()) == (first == second)
