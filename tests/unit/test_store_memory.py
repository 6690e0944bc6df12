"""The in-memory store keeps the VersionStore contract."""

from __future__ import annotations

from managed_secrets.store import InMemoryStore, RecordKey
from support import store_contract

KEY = RecordKey("team-a", "db")


def test_create_read_update_delete() -> None:
    store_contract.check_create_read_update_delete(InMemoryStore(), KEY)


def test_binary_documents_round_trip() -> None:
    store_contract.check_binary_documents_round_trip(InMemoryStore(), KEY)


def test_single_race_has_one_winner() -> None:
    store_contract.check_single_race_has_one_winner(InMemoryStore(), KEY)


def test_racing_writers_lose_nothing() -> None:
    store_contract.check_racing_writers(InMemoryStore(), KEY, writers=4, rounds=50)


def test_list_is_in_key_order() -> None:
    store = InMemoryStore()
    for ns, name in [("b", "x"), ("a", "z"), ("a", "y")]:
        store.write(RecordKey(ns, name), b"", expected_revision=None)
    assert [str(r.key) for r in store.list()] == ["a/y", "a/z", "b/x"]
