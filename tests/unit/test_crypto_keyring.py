"""LocalKeyring: key ids, management, serialisation, and never showing key bytes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from managed_secrets.crypto import KEYRING_FORMAT, KeyProvider, LocalKeyring, WrappedKey, open_sealed, seal
from managed_secrets.errors import KeyNotFound, KeyringError, UnwrapFailed

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
HASH_KEY = bytes(range(64, 96))


def keyring_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": "managed-secrets-keyring",
        "version": 1,
        "primary_key_id": "k2",
        "next_key_number": 4,
        "keys": {"k1": base64.b64encode(KEY_A).decode(), "k2": base64.b64encode(KEY_B).decode()},
        "hash_key": base64.b64encode(HASH_KEY).decode(),
    }
    document.update(overrides)
    return document


def encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def key_material_texts(*keys: bytes) -> list[str]:
    texts = []
    for key in keys:
        texts += [base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1]]
    return texts


# -- generation and management ----------------------------------------------------------------------


def test_generate_makes_one_primary_key_and_a_hash_key() -> None:
    keyring = LocalKeyring.generate()
    assert isinstance(keyring, KeyProvider)
    assert keyring.primary_key_id() == "k1"
    assert keyring.key_ids() == frozenset({"k1"})
    assert len(keyring.hash_key) == 32
    assert keyring.hash_key != LocalKeyring.generate().hash_key


def test_add_set_and_remove_keys() -> None:
    keyring = LocalKeyring.generate()
    assert keyring.add_key() == "k2"
    assert keyring.primary_key_id() == "k2"
    assert keyring.add_key(make_primary=False) == "k3"
    assert keyring.primary_key_id() == "k2"
    assert keyring.key_ids() == {"k1", "k2", "k3"}
    keyring.set_primary("k3")
    assert keyring.primary_key_id() == "k3"
    keyring.remove_key("k1")
    assert keyring.key_ids() == {"k2", "k3"}


def test_primary_cannot_be_removed() -> None:
    keyring = LocalKeyring.generate()
    keyring.add_key(make_primary=False)
    with pytest.raises(KeyringError, match="cannot remove key-encryption key 'k1': it is the primary key"):
        keyring.remove_key("k1")
    assert keyring.key_ids() == {"k1", "k2"}


def test_unknown_ids_are_refused() -> None:
    keyring = LocalKeyring.generate()
    with pytest.raises(KeyNotFound, match="no key-encryption key with id 'k9'") as caught:
        keyring.set_primary("k9")
    assert caught.value.key_id == "k9"
    assert isinstance(caught.value, KeyringError)
    with pytest.raises(KeyNotFound):
        keyring.remove_key("k9")
    assert keyring.primary_key_id() == "k1"


def test_ids_are_never_reused_after_removal_and_reload() -> None:
    keyring = LocalKeyring.generate()
    assert keyring.add_key() == "k2"
    keyring.remove_key("k1")
    assert keyring.add_key(make_primary=False) == "k3"
    keyring.remove_key("k3")
    reloaded = LocalKeyring.from_bytes(keyring.to_bytes())
    assert reloaded.key_ids() == {"k2"}
    assert reloaded.add_key() == "k4"
    assert LocalKeyring.from_bytes(reloaded.to_bytes()).add_key() == "k5"


def test_hash_key_survives_kek_rotation_and_reload() -> None:
    keyring = LocalKeyring.generate()
    hash_key = keyring.hash_key
    keyring.add_key()
    keyring.remove_key("k1")
    assert keyring.hash_key == hash_key
    assert LocalKeyring.from_bytes(keyring.to_bytes()).hash_key == hash_key


# -- wrapping ---------------------------------------------------------------------------------------


def test_wrap_and_unwrap() -> None:
    keyring = LocalKeyring.generate()
    data_key = bytes(32)
    wrapped = keyring.wrap_data_key(data_key, b"aad")
    assert wrapped.key_id == "k1"
    assert len(wrapped.blob) == 12 + 32 + 16
    assert keyring.unwrap_data_key("k1", wrapped.blob, b"aad") == data_key
    assert keyring.wrap_data_key(data_key, b"aad").blob != wrapped.blob  # fresh nonce every time


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[:27],
        lambda blob: blob[:-1],
        lambda blob: blob + b"\x00",
        lambda blob: bytes([blob[0] ^ 1]) + blob[1:],
        lambda blob: blob[:20] + bytes([blob[20] ^ 1]) + blob[21:],
    ],
)
def test_damaged_wrapped_key_fails(damage: Callable[[bytes], bytes]) -> None:
    keyring = LocalKeyring.generate()
    blob = keyring.wrap_data_key(bytes(32), b"aad").blob
    with pytest.raises(UnwrapFailed) as caught:
        keyring.unwrap_data_key("k1", damage(blob), b"aad")
    assert caught.value.key_id == "k1"


def test_unwrap_checks_the_aad_and_the_key_id() -> None:
    keyring = LocalKeyring.generate()
    keyring.add_key(make_primary=False)
    blob = keyring.wrap_data_key(bytes(32), b"aad").blob
    with pytest.raises(UnwrapFailed, match="'k1'"):
        keyring.unwrap_data_key("k1", blob, b"other aad")
    with pytest.raises(UnwrapFailed, match="'k2'"):
        keyring.unwrap_data_key("k2", blob, b"aad")
    with pytest.raises(KeyNotFound, match="'k3'"):
        keyring.unwrap_data_key("k3", blob, b"aad")


# -- serialisation ----------------------------------------------------------------------------------


def test_serialisation_round_trip() -> None:
    keyring = LocalKeyring.generate()
    blob = seal(b"value", secret_id="ns/s", version_id="v1", provider=keyring)
    keyring.add_key()
    data = keyring.to_bytes()
    reloaded = LocalKeyring.from_bytes(data)
    assert reloaded.to_bytes() == data
    assert reloaded.primary_key_id() == "k2"
    assert reloaded.key_ids() == {"k1", "k2"}
    assert reloaded.hash_key == keyring.hash_key
    assert open_sealed(blob, secret_id="ns/s", version_id="v1", provider=reloaded) == b"value"


def test_serialised_format() -> None:
    keyring = LocalKeyring.from_bytes(encoded(keyring_document()))
    assert json.loads(keyring.to_bytes()) == {
        "format": KEYRING_FORMAT,
        "version": 1,
        "primary_key_id": "k2",
        "next_key_number": 4,
        "keys": {"k1": base64.b64encode(KEY_A).decode(), "k2": base64.b64encode(KEY_B).decode()},
        "hash_key": base64.b64encode(HASH_KEY).decode(),
    }
    assert keyring.add_key() == "k4"


def test_constructor_validates_like_from_bytes() -> None:
    keyring = LocalKeyring(keys={"k1": KEY_A}, primary_key_id="k1", next_key_number=2, hash_key=HASH_KEY)
    assert keyring.key_ids() == {"k1"}
    with pytest.raises(KeyringError, match="not below next_key_number"):
        LocalKeyring(keys={"k2": KEY_A}, primary_key_id="k2", next_key_number=2, hash_key=HASH_KEY)
    with pytest.raises(KeyringError, match="hash_key must be 32 bytes"):
        LocalKeyring(keys={"k1": KEY_A}, primary_key_id="k1", next_key_number=2, hash_key=b"short")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not valid UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"format": 1, "format": 2}', "duplicate field 'format'"),
        (encoded({k: v for k, v in keyring_document().items() if k != "hash_key"}), "missing field(s): hash_key"),
        (encoded(keyring_document(extra=True)), "unknown field(s): extra"),
        (encoded(keyring_document(format="something-else")), "format must be 'managed-secrets-keyring'"),
        (encoded(keyring_document(version=2)), "unsupported keyring format version 2"),
        (encoded(keyring_document(version="1")), "version must be an integer"),
        (encoded(keyring_document(version=True)), "version must be an integer"),
        (encoded(keyring_document(primary_key_id="k3")), "primary key id 'k3' is not in the keyring"),
        (encoded(keyring_document(primary_key_id=2)), "primary_key_id must be a string"),
        (encoded(keyring_document(next_key_number=2)), "key id 'k2' is not below next_key_number 2"),
        (encoded(keyring_document(next_key_number=4.0)), "next_key_number must be an integer"),
        (encoded(keyring_document(next_key_number=True)), "next_key_number must be an integer"),
        (encoded(keyring_document(keys={})), "at least one key-encryption key"),
        (encoded(keyring_document(keys=[])), "keys must be a JSON object"),
        (encoded(keyring_document(keys={"key1": base64.b64encode(KEY_A).decode()})), "invalid key id 'key1'"),
        (encoded(keyring_document(keys={"k0": base64.b64encode(KEY_A).decode()})), "invalid key id 'k0'"),
        (encoded(keyring_document(keys={"k01": base64.b64encode(KEY_A).decode()})), "invalid key id 'k01'"),
        (encoded(keyring_document(keys={"k2": "not*base64"})), "key-encryption key 'k2' is not valid base64"),
        (encoded(keyring_document(keys={"k2": "\u00e9"})), "key-encryption key 'k2' is not valid base64"),
        (encoded(keyring_document(keys={"k2": 7})), "key-encryption key 'k2' must be a base64 string"),
        (
            encoded(keyring_document(keys={"k2": base64.b64encode(KEY_B[:16]).decode()})),
            "key-encryption key 'k2' must be 32 bytes",
        ),
        (encoded(keyring_document(hash_key=base64.b64encode(bytes(31)).decode())), "hash_key must be 32 bytes"),
        (encoded(keyring_document(hash_key=None)), "hash_key must be a base64 string"),
        (b"[" * 100_000, "keyring"),
    ],
)
def test_malformed_keyrings_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(KeyringError) as caught:
        LocalKeyring.from_bytes(data)
    assert message in str(caught.value)
    for text in key_material_texts(KEY_A, KEY_B, HASH_KEY):
        assert text not in str(caught.value)


def test_json_error_does_not_echo_the_document() -> None:
    data = encoded(keyring_document())[:-5]
    with pytest.raises(KeyringError, match=r"not valid JSON: .* at line 1 column \d+") as caught:
        LocalKeyring.from_bytes(data)
    for text in key_material_texts(KEY_A, KEY_B, HASH_KEY):
        assert text not in str(caught.value)


# -- never show key bytes ---------------------------------------------------------------------------


def test_repr_shows_ids_not_key_bytes() -> None:
    keyring = LocalKeyring.from_bytes(encoded(keyring_document()))
    assert repr(keyring) == "LocalKeyring(primary_key_id='k2', key_ids=['k1', 'k2'])"
    assert str(keyring) == repr(keyring)
    for text in key_material_texts(KEY_A, KEY_B, HASH_KEY):
        assert text not in repr(keyring)


def test_generated_keyring_repr_hides_its_keys() -> None:
    keyring = LocalKeyring.generate()
    for _ in range(9):
        keyring.add_key()
    document = json.loads(keyring.to_bytes())
    secrets_in_it = [*document["keys"].values(), document["hash_key"]]
    assert len(secrets_in_it) == 11
    assert repr(keyring).endswith("key_ids=['k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', 'k8', 'k9', 'k10'])")
    for text in secrets_in_it:
        assert text not in repr(keyring)
        assert base64.b64decode(text).hex() not in repr(keyring)


def test_wrapped_key_repr_hides_the_blob() -> None:
    wrapped = WrappedKey(key_id="k1", blob=b"\x01" * 60)
    assert repr(wrapped) == "WrappedKey(key_id='k1', blob=<60 bytes>)"


def test_merge_takes_new_keys_and_the_primary_and_drops_none() -> None:
    """A replica following the keyring Secret another replica rotated: it can open what the other seals under
    the new key, and still opens what it sealed a moment before under the old one."""
    ours = LocalKeyring.generate()
    theirs = LocalKeyring.from_bytes(ours.to_bytes())
    sealed_before = seal(b"v", secret_id="s", version_id="v1", provider=ours)
    new = theirs.add_key()
    theirs.remove_key("k1")
    assert ours.merge(theirs) is True
    assert ours.primary_key_id() == new and ours.key_ids() == {"k1", new}
    assert (
        open_sealed(
            seal(b"w", secret_id="s", version_id="v2", provider=theirs),
            secret_id="s",
            version_id="v2",
            provider=ours,
        )
        == b"w"
    )
    assert open_sealed(sealed_before, secret_id="s", version_id="v1", provider=ours) == b"v"
    assert ours.merge(theirs) is False
    with pytest.raises(KeyringError, match="another keyring"):
        ours.merge(LocalKeyring.generate())
