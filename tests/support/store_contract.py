"""Behaviour every VersionStore backend must have; run against each backend by its own test module."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from managed_secrets.errors import RecordNotFound, WriteConflict
from managed_secrets.store import RecordKey, VersionStore


def check_create_read_update_delete(store: VersionStore, key: RecordKey) -> None:
    with pytest.raises(RecordNotFound):
        store.read(key)
    first = store.write(key, b"one", expected_revision=None, attributes={"deleted-at": "x"})
    assert store.read(key).document == b"one"
    assert store.read(key).attributes == {"deleted-at": "x"}
    with pytest.raises(WriteConflict):
        store.write(key, b"again", expected_revision=None)
    second = store.write(key, b"two", expected_revision=first.revision)
    assert second.revision != first.revision
    assert store.read(key).attributes == {"deleted-at": "x"}, "attributes=None keeps the stored ones"
    third = store.write(key, b"three", expected_revision=second.revision, attributes={})
    assert store.read(key).attributes == {}
    with pytest.raises(WriteConflict):
        store.write(key, b"stale", expected_revision=first.revision)
    assert store.read(key).document == b"three"
    assert key in [r.key for r in store.list()]
    with pytest.raises(WriteConflict):
        store.delete(key, expected_revision=first.revision)
    store.delete(key, expected_revision=third.revision)
    with pytest.raises(RecordNotFound):
        store.read(key)
    with pytest.raises(RecordNotFound):
        store.delete(key)
    with pytest.raises(WriteConflict):
        store.write(key, b"after delete", expected_revision=third.revision)


def check_binary_documents_round_trip(store: VersionStore, key: RecordKey) -> None:
    blob = bytes(range(256)) * 40
    store.write(key, blob, expected_revision=None)
    assert store.read(key).document == blob
    assert "bytes" in repr(store.read(key)) and blob[:16].hex() not in repr(store.read(key))


def check_racing_writers(store: VersionStore, key: RecordKey, writers: int = 2, rounds: int = 10) -> None:
    """Each writer appends its own tokens; losers of a race re-read and retry; no token may be lost."""
    store.write(key, b"", expected_revision=None)
    conflicts = [0] * writers
    barrier = threading.Barrier(writers)

    def writer(index: int) -> None:
        for n in range(rounds):
            token = f"{index}:{n};".encode()
            first_try = True
            while True:
                current = store.read(key)
                if first_try:
                    barrier.wait(timeout=30)  # everyone read the same revision: a real race
                    first_try = False
                try:
                    store.write(key, current.document + token, expected_revision=current.revision)
                    break
                except WriteConflict:
                    conflicts[index] += 1

    run_threads(writer, writers)
    tokens = store.read(key).document.decode().split(";")[:-1]
    assert sorted(tokens) == sorted(f"{i}:{n}" for i in range(writers) for n in range(rounds))
    assert sum(conflicts) >= rounds, "every round had one winner and at least one loser"


def check_single_race_has_one_winner(store: VersionStore, key: RecordKey) -> None:
    base = store.write(key, b"base", expected_revision=None)
    results: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def writer(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            store.write(key, f"writer-{index}".encode(), expected_revision=base.revision)
            results[index] = "won"
        except WriteConflict:
            results[index] = "conflict"

    run_threads(writer, 2)
    assert sorted(results.values()) == ["conflict", "won"]
    winner = next(i for i, r in results.items() if r == "won")
    assert store.read(key).document == f"writer-{winner}".encode()


def run_threads(target: Callable[[int], None], count: int) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
