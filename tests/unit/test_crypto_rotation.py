"""KEK rotation: add a primary, re-wrap everything, retire the old key."""

from __future__ import annotations

import pytest

from managed_secrets.crypto import LocalKeyring, key_id_of, keys_in_use, open_sealed, rewrap, seal
from managed_secrets.errors import IntegrityError, UnknownKeyError

SECRET = "shop/api-token"


def value_of(version_id: str) -> bytes:
    return f"token-for-{version_id}".encode()


def seal_versions(keyring: LocalKeyring, count: int = 5) -> dict[str, bytes]:
    return {
        f"v{n}": seal(value_of(f"v{n}"), secret_id=SECRET, version_id=f"v{n}", provider=keyring)
        for n in range(1, count + 1)
    }


def open_all(blobs: dict[str, bytes], keyring: LocalKeyring) -> dict[str, bytes]:
    return {
        version_id: open_sealed(blob, secret_id=SECRET, version_id=version_id, provider=keyring)
        for version_id, blob in blobs.items()
    }


def test_rotate_rewrap_and_retire_the_old_key() -> None:
    keyring = LocalKeyring.generate()
    blobs = seal_versions(keyring)
    expected = {version_id: value_of(version_id) for version_id in blobs}
    assert keys_in_use(blobs.values()) == {"k1"}

    assert keyring.add_key() == "k2"
    assert keyring.primary_key_id() == "k2"
    assert open_all(blobs, keyring) == expected  # old blobs still open under k1

    rewrapped = {
        version_id: rewrap(blob, secret_id=SECRET, version_id=version_id, provider=keyring)
        for version_id, blob in blobs.items()
    }
    assert keys_in_use(rewrapped.values()) == {"k2"}
    assert {key_id_of(blob) for blob in rewrapped.values()} == {"k2"}
    assert open_all(rewrapped, keyring) == expected

    assert keyring.key_ids() - keys_in_use(rewrapped.values()) == {"k1"}
    keyring.remove_key("k1")
    assert keyring.key_ids() == {"k2"}
    assert open_all(rewrapped, keyring) == expected

    # A version that was never re-wrapped is lost with k1, and says so.
    with pytest.raises(UnknownKeyError) as caught:
        open_sealed(blobs["v2"], secret_id=SECRET, version_id="v2", provider=keyring)
    message = str(caught.value)
    assert SECRET in message
    assert "version v2" in message
    assert "'k1'" in message
    assert caught.value.key_id == "k1"
    assert b"token-for-v2".decode() not in message


def test_rewrap_survives_a_keyring_reload() -> None:
    keyring = LocalKeyring.generate()
    blobs = seal_versions(keyring, 3)
    keyring.add_key()
    reloaded = LocalKeyring.from_bytes(keyring.to_bytes())
    rewrapped = {v: rewrap(b, secret_id=SECRET, version_id=v, provider=reloaded) for v, b in blobs.items()}
    reloaded.remove_key("k1")
    assert open_all(rewrapped, LocalKeyring.from_bytes(reloaded.to_bytes())) == {
        "v1": b"token-for-v1",
        "v2": b"token-for-v2",
        "v3": b"token-for-v3",
    }


def test_rewrap_keeps_the_data_nonce_and_ciphertext() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(b"payload", secret_id=SECRET, version_id="v1", provider=keyring)
    keyring.add_key()
    moved = rewrap(blob, secret_id=SECRET, version_id="v1", provider=keyring)
    tail = 12 + len(b"payload") + 16  # data nonce + ciphertext + tag, at the end of the blob
    assert moved[-tail:] == blob[-tail:]
    assert moved[:-tail] != blob[:-tail]
    assert moved[:10] == b"MSEC\x01\x02k2\x00\x3c"
    assert len(moved) == len(blob)


def test_rewrap_on_the_primary_is_a_no_op() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(b"payload", secret_id=SECRET, version_id="v1", provider=keyring)
    assert rewrap(blob, secret_id=SECRET, version_id="v1", provider=keyring) is blob
    keyring.add_key()
    once = rewrap(blob, secret_id=SECRET, version_id="v1", provider=keyring)
    assert once != blob
    assert rewrap(once, secret_id=SECRET, version_id="v1", provider=keyring) is once


def test_rewrap_follows_set_primary_back_to_an_older_key() -> None:
    keyring = LocalKeyring.generate()
    keyring.add_key()
    blob = seal(b"payload", secret_id=SECRET, version_id="v1", provider=keyring)
    assert key_id_of(blob) == "k2"
    keyring.set_primary("k1")
    back = rewrap(blob, secret_id=SECRET, version_id="v1", provider=keyring)
    assert key_id_of(back) == "k1"
    assert open_sealed(back, secret_id=SECRET, version_id="v1", provider=keyring) == b"payload"


def test_rewrap_refuses_a_damaged_or_moved_blob() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(b"payload", secret_id=SECRET, version_id="v1", provider=keyring)
    keyring.add_key()
    damaged = blob[:-1] + bytes([blob[-1] ^ 0x01])
    with pytest.raises(IntegrityError, match="ciphertext failed authentication"):
        rewrap(damaged, secret_id=SECRET, version_id="v1", provider=keyring)
    with pytest.raises(IntegrityError, match="data key failed authentication"):
        rewrap(blob, secret_id=SECRET, version_id="v2", provider=keyring)


def test_rewrapped_blob_is_still_bound_to_its_version() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(b"payload", secret_id=SECRET, version_id="v1", provider=keyring)
    keyring.add_key()
    moved = rewrap(blob, secret_id=SECRET, version_id="v1", provider=keyring)
    with pytest.raises(IntegrityError):
        open_sealed(moved, secret_id=SECRET, version_id="v2", provider=keyring)
    with pytest.raises(IntegrityError):
        open_sealed(moved, secret_id="shop/other", version_id="v1", provider=keyring)


def test_rewrap_after_the_old_key_is_gone_is_an_unknown_key() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(b"payload", secret_id=SECRET, version_id="v7", provider=keyring)
    keyring.add_key()
    keyring.remove_key("k1")
    with pytest.raises(UnknownKeyError, match=r"shop/api-token version v7: unknown key-encryption key id 'k1'"):
        rewrap(blob, secret_id=SECRET, version_id="v7", provider=keyring)


def test_keys_in_use_over_mixed_blobs() -> None:
    keyring = LocalKeyring.generate()
    old = seal(b"a", secret_id=SECRET, version_id="v1", provider=keyring)
    keyring.add_key()
    new = seal(b"b", secret_id=SECRET, version_id="v2", provider=keyring)
    assert keys_in_use([old, new]) == {"k1", "k2"}
    assert keys_in_use([]) == frozenset()
    with pytest.raises(IntegrityError, match="bad magic"):
        keys_in_use([old, b"not a sealed value at all"])


def test_a_pinned_key_is_used_instead_of_the_primary_and_unknown_ones_are_refused() -> None:
    from managed_secrets.crypto import LocalKeyring, key_id_of, open_sealed, rewrap, seal
    from managed_secrets.errors import KeyringError

    ring = LocalKeyring.generate()
    ring.add_key(make_primary=True)  # k2 primary
    blob = seal(b"v", secret_id="ns/a", version_id="v1", provider=ring, key_id="k1")
    assert key_id_of(blob) == "k1"
    assert open_sealed(blob, secret_id="ns/a", version_id="v1", provider=ring) == b"v"
    assert rewrap(blob, secret_id="ns/a", version_id="v1", provider=ring, key_id="k1") is blob
    moved = rewrap(blob, secret_id="ns/a", version_id="v1", provider=ring)
    assert key_id_of(moved) == "k2"
    with pytest.raises(KeyringError, match="no key-encryption key 'k9'"):
        seal(b"v", secret_id="ns/a", version_id="v2", provider=ring, key_id="k9")
