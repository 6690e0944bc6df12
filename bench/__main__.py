"""Benchmarks of the hot paths, each printed beside a baseline measured in the same run.

    python -m bench [--quick]

Figures are medians of several rounds (operations per second); the ratio says what the operator's own
work costs over the bare primitive it is built on, so it stays meaningful on any machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_secrets.crypto import LocalKeyring, open_sealed, seal
from managed_secrets.domain import SecretMetadata, SecretType, SecretValue, apply_prune, new_secret, put_value
from managed_secrets.domain.clock import SystemClock
from managed_secrets.projection import TargetSpec, render
from managed_secrets.store import InMemoryStore, RecordKey, SecretVault


def rate(fn: Callable[[], object], n: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append(n / (time.perf_counter() - start))
    return statistics.median(results)


def row(name: str, ours: float, baseline_name: str, baseline: float) -> None:
    print(
        f"{name:<38} {ours:>12,.0f}/s   {baseline_name:<28} {baseline:>12,.0f}/s   ratio {baseline / ours:>6.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    n, rounds = (200, 3) if args.quick else (2000, 5)
    keyring = LocalKeyring.generate()
    value = SecretValue.from_map({"username": b"app", "password": os.urandom(24).hex().encode(), "host": b"db"})
    plaintext = value.to_bytes()
    print(f"managed-secrets-operator benchmarks ({n} operations x {rounds} rounds, median)\n")

    key = AESGCM.generate_key(bit_length=256)
    aes = AESGCM(key)
    row(
        "seal (envelope: data key + wrap)",
        rate(lambda: seal(plaintext, secret_id="ns/db", version_id="v1", provider=keyring), n, rounds),
        "bare AES-256-GCM encrypt",
        rate(lambda: aes.encrypt(os.urandom(12), plaintext, b"aad"), n, rounds),
    )
    blob = seal(plaintext, secret_id="ns/db", version_id="v1", provider=keyring)
    nonce = os.urandom(12)
    ct = aes.encrypt(nonce, plaintext, b"aad")
    row(
        "open (unwrap + decrypt + verify)",
        rate(lambda: open_sealed(blob, secret_id="ns/db", version_id="v1", provider=keyring), n, rounds),
        "bare AES-256-GCM decrypt",
        rate(lambda: aes.decrypt(nonce, ct, b"aad"), n, rounds),
    )

    now = dt.datetime.now(dt.UTC)
    meta = SecretMetadata("ns", "db", "uid", SecretType.GENERIC, now)

    def put_ten() -> None:
        record = new_secret(meta)
        for i in range(10):
            record, _ = put_value(record, fingerprint=f"f{i}", sealed=b"x" * 64, now=now)
        apply_prune(record, 5)

    def replace_ten() -> None:
        record = new_secret(meta)
        for i in range(10):
            record = dataclasses.replace(record, next_version_number=i + 2)

    row(
        "domain: 10 put_value + prune",
        rate(put_ten, n // 10, rounds),
        "10 bare dataclasses.replace",
        rate(replace_ten, n // 10, rounds),
    )

    store = InMemoryStore()
    vault = SecretVault(store, keyring, keyring.hash_key, SystemClock())
    record_key = RecordKey("ns", "db")
    counter = iter(range(10**9))

    def vault_put() -> None:
        i = next(counter)
        v = SecretValue.from_map({"password": str(i).encode()})

        def change(r):  # type: ignore[no-untyped-def]
            base = r or new_secret(meta)
            version_id = vault.next_version_id(base)
            updated, _ = put_value(
                base, fingerprint=vault.fingerprint(v), sealed=vault.seal("ns/db", version_id, v), now=now
            )
            return apply_prune(updated, 10)

        vault.update(record_key, change)

    raw_store = InMemoryStore()
    raw_key = RecordKey("ns", "raw")
    for _ in range(10):
        vault_put()
    document = store.read(record_key).document

    def seal_and_write() -> None:
        seal(b"x" * 64, secret_id="ns/db", version_id="v1", provider=keyring)
        current = raw_store.read(raw_key).revision if raw_store.list() else None
        raw_store.write(raw_key, document, expected_revision=current)

    row(
        "vault: new version, sealed, CAS write",
        rate(vault_put, n // 4, rounds),
        "one seal + one raw CAS write",
        rate(seal_and_write, n // 4, rounds),
    )

    template_text = "postgresql://{{ username }}:{{ password }}@{{ host }}/app"
    target = TargetSpec(name="db", template={"DATABASE_URL": template_text})
    sandbox = ImmutableSandboxedEnvironment()
    row(
        "render projected Secret (1 template)",
        rate(
            lambda: render(
                owner_namespace="ns",
                owner_name="db",
                target=target,
                current=value,
                current_version="v1",
                hash_key=keyring.hash_key,
            ),
            n,
            rounds,
        ),
        "bare sandboxed Jinja2 render",
        rate(lambda: sandbox.from_string(template_text).render(username="app", password="p"), n, rounds),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
