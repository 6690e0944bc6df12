"""The keyring sealed under an external key: format, the keyring Secret codec, migration both ways, faults,
external key rotation, the opener and the key-service monitor, and the service while the keyring is closed.

The external service is ``support.fake_kms.FakeKms`` (AES-GCM in memory, a switch to make it unreachable,
counted calls); the real PKCS#11 and KMS v2 paths run in tests/integration/test_kms.py.
"""

from __future__ import annotations

import base64
import json
import threading

import pytest

from managed_secrets.cluster import SecretObject
from managed_secrets.cluster.keyring import (
    KEYRING_DATA_KEY,
    SEALED_DATA_KEY,
    KeyringCodec,
    KeyringSecret,
    load_or_create_keyring,
)
from managed_secrets.cluster.memory import InMemoryCluster
from managed_secrets.crypto import LocalKeyring
from managed_secrets.crypto.provider import OpeningKeyProvider
from managed_secrets.crypto.sealing import read_seal_info, seal_keyring, unseal_keyring
from managed_secrets.errors import (
    KeyringError,
    KeyringLost,
    KeyServiceRefused,
    KeyServiceUnavailable,
    ManagedSecretsError,
    UnsealFailed,
)
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.names import KEK_HANDLED_ANNOTATION, ROTATE_KEK_ANNOTATION
from managed_secrets.service.keys import KeyManager, KeyringOpener, KeyServiceMonitor
from support.fake_kms import FakeKms
from support.world import World, managed_secret

NS, NAME = "managed-secrets", "managed-secrets-keyring"


def stored(cluster: InMemoryCluster) -> dict[str, bytes]:
    return dict(cluster.secrets[(NS, NAME)].data)


def key_material(keyring: LocalKeyring) -> list[bytes]:
    """Every key of the keyring as the plain document writes it (base64), and raw."""
    document = json.loads(keyring.to_bytes())
    encoded = [*document["keys"].values(), document["hash_key"]]
    return [v.encode() for v in encoded] + [base64.b64decode(v) for v in encoded]


# --- the sealed document ------------------------------------------------------------------------------------


def test_a_sealed_keyring_opens_only_through_its_external_key() -> None:
    kms = FakeKms()
    keyring = LocalKeyring.generate()
    keyring.add_key()
    sealed = seal_keyring(keyring.to_bytes(), kms)
    for material in key_material(keyring):
        assert material not in sealed
    assert read_seal_info(sealed).key_id == "kms-key-1"
    assert kms.calls == {"status": 1, "encrypt": 1}
    opened = LocalKeyring.from_bytes(unseal_keyring(sealed, kms))
    assert opened.key_ids() == keyring.key_ids() and opened.hash_key == keyring.hash_key
    assert kms.calls["decrypt"] == 1
    # Another KMS (same key id, other material) opens nothing.
    with pytest.raises(UnsealFailed):
        unseal_keyring(sealed, FakeKms())


def test_a_relabelled_or_tampered_document_fails_closed() -> None:
    kms = FakeKms()
    sealed = seal_keyring(LocalKeyring.generate().to_bytes(), kms)
    kms.rotate("kms-key-2")
    document = json.loads(sealed)
    relabelled = json.dumps({**document, "keyId": "kms-key-2"}).encode()
    with pytest.raises(UnsealFailed):
        unseal_keyring(relabelled, kms)  # the key id is authenticated with the seal
    body = bytearray(base64.b64decode(document["ciphertext"]))
    body[-1] ^= 1
    tampered = json.dumps({**document, "ciphertext": base64.b64encode(bytes(body)).decode()}).encode()
    with pytest.raises(UnsealFailed):
        unseal_keyring(tampered, kms)
    other_provider = json.dumps({**document, "provider": "pkcs11"}).encode()
    with pytest.raises(KeyServiceRefused, match="sealed by a 'pkcs11' key"):
        unseal_keyring(other_provider, kms)
    with pytest.raises(KeyringError, match="unknown field"):
        unseal_keyring(json.dumps({**document, "extra": 1}).encode(), kms)
    with pytest.raises(KeyringError, match="not valid JSON"):
        unseal_keyring(b"{", kms)
    # The old key still opens the original (a KMS keeps old key versions).
    assert LocalKeyring.from_bytes(unseal_keyring(sealed, kms))


# --- the keyring Secret -------------------------------------------------------------------------------------


def test_first_start_with_a_key_service_stores_only_the_sealed_keyring() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), reseal=True)
    data = stored(cluster)
    assert set(data) == {SEALED_DATA_KEY}
    for material in key_material(keyring):
        assert material not in data[SEALED_DATA_KEY]
    # The next start: one Decrypt (and, for the leader, one Status to see the seal is current).
    kms.calls.clear()
    again = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), reseal=True)
    assert again.key_ids() == keyring.key_ids()
    assert kms.calls == {"decrypt": 1, "status": 1}
    kms.calls.clear()
    load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    assert kms.calls == {"decrypt": 1}


def test_reading_an_unchanged_sealed_keyring_again_calls_nothing() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    codec = KeyringCodec(kms)
    load_or_create_keyring(cluster, NS, NAME, codec=codec)
    secret = KeyringSecret(cluster, NS, NAME, codec)
    kms.calls.clear()
    for _ in range(5):
        secret.read()
    assert kms.calls == {}


def test_a_plain_keyring_is_sealed_by_the_leader_and_only_by_it() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    plain = load_or_create_keyring(cluster, NS, NAME)
    assert set(stored(cluster)) == {KEYRING_DATA_KEY}
    # A replica that does not lead uses it as it is.
    load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), reseal=False)
    assert set(stored(cluster)) == {KEYRING_DATA_KEY}
    migrated = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), reseal=True)
    data = stored(cluster)
    assert set(data) == {SEALED_DATA_KEY}, "the plain copy is removed in the same write"
    assert migrated.key_ids() == plain.key_ids() and migrated.hash_key == plain.hash_key
    for material in key_material(plain):
        assert material not in data[SEALED_DATA_KEY]
    # Without the key service the sealed keyring is refused, and the message says what sealed it.
    with pytest.raises(KeyServiceRefused, match=r"sealed by a 'kmsv2' key \('kms-key-1'\)"):
        load_or_create_keyring(cluster, NS, NAME)


def test_the_disaster_recovery_direction_writes_the_keyring_plain_again() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    sealed = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    secret = KeyringSecret(cluster, NS, NAME, KeyringCodec(kms))
    keyring, revision, _ = secret.read()
    KeyringSecret(cluster, NS, NAME).write(keyring, revision, {})
    assert set(stored(cluster)) == {KEYRING_DATA_KEY}
    plain = load_or_create_keyring(cluster, NS, NAME)
    assert plain.key_ids() == sealed.key_ids() and plain.hash_key == sealed.hash_key


def test_a_new_external_key_reseals_the_keyring_and_the_old_one_is_no_longer_needed() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    kms.rotate("kms-key-2")
    world = World(keyring=keyring, cluster=cluster)
    keys = KeyManager(world.vault, keyring, KeyringSecret(cluster, NS, NAME, KeyringCodec(kms)))
    why = keys.reseal()
    assert why is not None and "'kms-key-1'" in why and "'kms-key-2'" in why
    assert read_seal_info(stored(cluster)[SEALED_DATA_KEY]).key_id == "kms-key-2"
    assert keys.reseal() is None, "nothing to do once it is current"
    del kms.keys["kms-key-1"]  # the old external key destroyed
    again = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    assert again.key_ids() == keyring.key_ids()


def test_an_unreachable_or_refusing_key_service_never_yields_a_new_keyring() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    world = World(cluster=cluster)
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    world.apply(managed_secret("db"))
    before = stored(cluster)
    kms.reachable = False
    with pytest.raises(KeyServiceUnavailable):
        load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), reseal=True)
    kms.reachable = True
    del kms.keys["kms-key-1"]  # the key is gone from the service
    with pytest.raises(KeyServiceRefused, match="no key 'kms-key-1'"):
        load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), reseal=True)
    with pytest.raises(UnsealFailed):
        load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(FakeKms()), reseal=True)
    assert stored(cluster) == before, "the keyring Secret is untouched by every failure"
    # A keyring Secret that is gone while versions are stored is lost, with or without a key service.
    assert keyring is not None
    world.reconcile("db")
    del cluster.secrets[(NS, NAME)]
    with pytest.raises(KeyringLost):
        load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms), store_is_empty=world.store.is_empty)


def test_kek_rotation_under_a_key_service_reseals_and_fails_closed_when_it_is_away() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    codec = KeyringCodec(kms)
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=codec)
    world = World(keyring=keyring, cluster=cluster)
    world.apply(managed_secret("db"))
    world.settle("db")
    keys = KeyManager(world.vault, keyring, KeyringSecret(cluster, NS, NAME, codec))
    kms.reachable = False
    with pytest.raises(ManagedSecretsError):
        keys.handle_request({ROTATE_KEK_ANNOTATION: "r1"})
    assert keyring.primary_key_id() == "k1", "a KEK the keyring Secret does not hold never becomes primary"
    assert "k2" not in keyring.key_ids()
    kms.reachable = True
    assert keys.handle_request({ROTATE_KEK_ANNOTATION: "r2"}) is not None
    data = stored(cluster)
    assert set(data) == {SEALED_DATA_KEY}
    reopened = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    assert reopened.primary_key_id() == keyring.primary_key_id() != "k1"
    assert cluster.secrets[(NS, NAME)].annotations[KEK_HANDLED_ANNOTATION] == "r2"
    assert world.value("db")  # still opens


# --- start-up with the key service away, and the monitor ----------------------------------------------------


def test_while_the_keyring_is_closed_objects_needing_it_fail_with_a_reason_and_recover_when_it_opens() -> None:
    opening = OpeningKeyProvider("fake KMS cannot be reached")
    world = World(provider=opening)
    world.apply(managed_secret("db"))
    world.reconcile("db")
    ready = world.condition("db", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "KeyServiceUnavailable"
    assert "fake KMS cannot be reached" in ready["message"]
    assert world.status("db")["retry"]["reason"] == "KeyServiceUnavailable"
    assert world.secret("db") is None
    # Backing off: an event before the retry time does nothing.
    world.reconcile("db")
    assert world.secret("db") is None
    opening.open(world.keyring, world.keyring.hash_key)
    world.service.keyring_opened()
    assert world.service.scheduler.due_time("app", "db") == world.clock.now()
    world.settle("db")
    assert world.condition("db", "Ready")["status"] == "True"
    assert world.secret("db") is not None


def test_the_opener_retries_with_backoff_until_the_keyring_opens() -> None:
    attempts: list[int] = []
    keyring = LocalKeyring.generate()

    def load() -> LocalKeyring:
        attempts.append(1)
        if len(attempts) < 3:
            raise KeyServiceUnavailable("away")
        return keyring

    opening = OpeningKeyProvider("away")
    world = World(provider=opening)
    keys = KeyManager(world.vault, None, KeyringSecret(InMemoryCluster(), NS, NAME))
    woken: list[bool] = []

    class Service:
        def keyring_opened(self) -> None:
            woken.append(True)

    metrics = OperatorMetrics(runtime_collectors=False)
    opener = KeyringOpener(
        load, opening, keys, Service(), metrics, stop=threading.Event(), first_delay=0.01, max_delay=0.02
    )
    assert opener.run()
    assert len(attempts) == 3 and opening.is_open and keys.ready and woken == [True]
    assert b"managed_secrets_keyring_open 1.0" in metrics.exposition()
    stop = threading.Event()
    stop.set()
    never = KeyringOpener(load, OpeningKeyProvider("x"), keys, Service(), metrics, stop=stop)
    assert not never.run(), "a stopped operator stops trying"


def test_the_monitor_reports_the_degraded_state_and_the_leader_reseals_on_a_new_key() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    codec = KeyringCodec(kms)
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=codec)
    world = World(keyring=keyring, cluster=cluster)
    keys = KeyManager(world.vault, keyring, KeyringSecret(cluster, NS, NAME, codec))
    metrics = OperatorMetrics(runtime_collectors=False)
    leading = [False]
    monitor = KeyServiceMonitor(kms, keys, metrics, 1.0, leader=lambda: leading[0])
    assert monitor.check()
    assert b'managed_secrets_key_service_up{provider="kmsv2"} 1.0' in metrics.exposition()
    kms.reachable = False
    assert not monitor.check() and not monitor.check()
    assert b'managed_secrets_key_service_up{provider="kmsv2"} 0.0' in metrics.exposition()
    world.apply(managed_secret("db"))
    world.settle("db")
    assert world.condition("db", "Ready")["status"] == "True", "it serves with the keys in memory"
    kms.reachable = True
    kms.rotate("kms-key-2")
    assert monitor.check()
    assert read_seal_info(stored(cluster)[SEALED_DATA_KEY]).key_id == "kms-key-1", "only the leader reseals"
    leading[0] = True
    assert monitor.check()
    assert read_seal_info(stored(cluster)[SEALED_DATA_KEY]).key_id == "kms-key-2"


def test_a_sealed_keyring_secret_left_over_is_not_confused_with_a_plain_one() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    sealed = stored(cluster)[SEALED_DATA_KEY]
    # Both keys present (a hand-made Secret): the sealed one is what is read.
    plain_other = LocalKeyring.generate().to_bytes()
    cluster.put_secret(
        SecretObject(namespace=NS, name=NAME, data={SEALED_DATA_KEY: sealed, KEYRING_DATA_KEY: plain_other})
    )
    opened = load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms))
    assert opened.hash_key != LocalKeyring.from_bytes(plain_other).hash_key


def test_a_kek_rotation_requested_while_the_key_service_was_away_goes_when_it_answers() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    codec = KeyringCodec(kms)
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=codec)
    world = World(keyring=keyring, cluster=cluster)
    secret = KeyringSecret(cluster, NS, NAME, codec)
    keys = KeyManager(world.vault, keyring, secret)
    monitor = KeyServiceMonitor(kms, keys, OperatorMetrics(runtime_collectors=False), 1.0, leader=lambda: True)
    kms.reachable = False
    live = cluster.secrets[(NS, NAME)]
    cluster.put_secret(
        SecretObject(namespace=NS, name=NAME, data=dict(live.data), annotations={ROTATE_KEK_ANNOTATION: "r1"})
    )
    with pytest.raises(ManagedSecretsError):
        keys.handle_request({ROTATE_KEK_ANNOTATION: "r1"})
    assert not monitor.check()
    kms.reachable = True
    assert monitor.check()
    # k2 went to the attempt that failed: ids are never reused, so the new primary is k3.
    assert keyring.primary_key_id() == "k3"
    assert cluster.secrets[(NS, NAME)].annotations[KEK_HANDLED_ANNOTATION] == "r1"
    assert load_or_create_keyring(cluster, NS, NAME, codec=KeyringCodec(kms)).primary_key_id() == "k3"


def test_a_check_on_the_leader_asks_the_key_service_once() -> None:
    cluster, kms = InMemoryCluster(), FakeKms()
    codec = KeyringCodec(kms)
    keyring = load_or_create_keyring(cluster, NS, NAME, codec=codec)
    world = World(keyring=keyring, cluster=cluster)
    keys = KeyManager(world.vault, keyring, KeyringSecret(cluster, NS, NAME, codec))
    monitor = KeyServiceMonitor(kms, keys, OperatorMetrics(runtime_collectors=False), 1.0, leader=lambda: True)
    kms.calls.clear()
    for _ in range(3):
        assert monitor.check()
    assert kms.calls == {"status": 3}, "one Status per check, nothing else while the seal is current"
