"""The keyring sealed by a real key service: a SoftHSM2 token over PKCS#11, and KMS v2 plugins over gRPC (the
control plane's own, which kube-apiserver uses for encryption at rest, and one per test that can be cut).

Every operator here is a real process running as its own ServiceAccount, in a namespace of its own. The
session's operator is stopped for the module (it would serve the same ManagedSecrets). SoftHSM2 tokens are
made by hack/softhsm.py in one directory for the module; this process loads the PKCS#11 library itself only
to prove what the token opens.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import softhsm
from kubernetes import client

from managed_secrets.cluster.keyring import KEYRING_DATA_KEY, SEALED_DATA_KEY
from managed_secrets.crypto import LocalKeyring
from managed_secrets.crypto.sealing import read_seal_info, unseal_keyring
from managed_secrets.domain.clock import SystemClock
from managed_secrets.errors import KeyringError, UnsealFailed
from managed_secrets.kms.kmsv2 import KmsV2Key
from managed_secrets.names import ROTATE_ANNOTATION
from managed_secrets.store import RecordKey, SecretVault
from managed_secrets.store.kubernetes import KubernetesStore
from support import kube
from support.operator import (
    OperatorEnvironment,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    secret_data,
    wait_ready,
)

pytestmark = pytest.mark.integration

KEYRING = "managed-secrets-keyring"
ROOT = Path(__file__).resolve().parents[2]


# --- the module's token directory and plugins ---------------------------------------------------------------


class Hsm:
    """One SoftHSM2 directory: tokens ``mso`` (the operator's PKCS#11 key) and ``other`` (a token with a key of
    the same label, to show it opens nothing); each KMS v2 plugin adds one of its own."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        softhsm.init_token(directory, token_label="mso", key_label="kek-1")
        softhsm.init_token(directory, token_label="other", key_label="kek-1")
        self.env = softhsm.environment(directory)
        self.pin_file = softhsm.pin_path(directory)
        self.library = softhsm.library()

    def pkcs11_env(self, key_label: str = "kek-1", pin_file: Path | None = None) -> dict[str, str]:
        return {
            **self.env,
            "MSO_KMS_PROVIDER": "pkcs11",
            "MSO_PKCS11_LIBRARY": self.library,
            "MSO_PKCS11_TOKEN_LABEL": "mso",
            "MSO_PKCS11_PIN_FILE": str(pin_file or self.pin_file),
            "MSO_PKCS11_KEY_LABEL": key_label,
            "MSO_KMS_CHECK_SECONDS": "1",
        }


class PluginProcess:
    """``python -m managed_secrets.kms.plugin`` on a socket of its own, against a token of its own (its first
    key ``kms-1``)."""

    def __init__(self, hsm: Hsm, workdir: Path) -> None:
        self.hsm = hsm
        self.token = f"kms-{workdir.name[-12:]}"
        softhsm.init_token(hsm.dir, token_label=self.token, key_label="kms-1")
        self.socket = workdir / "kms.sock"
        self.stats = workdir / "stats.json"
        self.log = workdir / "plugin.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *labels: str) -> None:
        argv = [sys.executable, "-m", "managed_secrets.kms.plugin", "--listen", str(self.socket)]
        argv += ["--library", self.hsm.library, "--token-label", self.token, "--pin-file", str(self.hsm.pin_file)]
        argv += ["--stats-file", str(self.stats)]
        for label in labels or ("kms-1",):
            argv += ["--key-label", label]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, env={**os.environ, **self.hsm.env}, stdout=log, stderr=log)
        try:
            kube.eventually(lambda: self._answers(labels[0] if labels else "kms-1"), timeout=30, what="the plugin")
        except AssertionError:
            self.stop()  # never left running behind a failed start
            raise

    def _answers(self, key_id: str) -> bool:
        try:
            return KmsV2Key(str(self.socket), timeout_seconds=2).current_key_id() == key_id
        except KeyringError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def kmsv2_env(self) -> dict[str, str]:
        return {
            "MSO_KMS_PROVIDER": "kmsv2",
            "MSO_KMS_ENDPOINT": f"unix://{self.socket}",
            "MSO_KMS_CHECK_SECONDS": "1",
        }


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Hsm:
    found = Hsm(tmp_path_factory.mktemp("softhsm"))
    # This process may load the PKCS#11 library (once, with this configuration) to check what the token opens.
    os.environ.update(found.env)
    return found


@pytest.fixture(scope="module", autouse=True)
def alone(operator: OperatorEnvironment) -> Iterator[None]:
    """The session's operator serves every namespace: it is stopped while these operators run."""
    operator.process.stop()
    try:
        yield
    finally:
        operator.process.start()


@pytest.fixture
def plugin(hsm: Hsm, tmp_path: Path) -> Iterator[PluginProcess]:
    started = PluginProcess(hsm, tmp_path)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def install(admin: client.ApiClient, tmp_path: Path) -> Iterator[Any]:
    """``install(env)``: an operator namespace with the shipped RBAC, and its process with ``env``."""
    made: list[OperatorEnvironment] = []

    def make(env: dict[str, str]) -> OperatorEnvironment:
        workdir = tmp_path / f"op{len(made)}"
        workdir.mkdir()
        environment = OperatorEnvironment(admin, workdir)
        environment.process.extra_env.update(env)
        environment.process.liveness = False
        made.append(environment)
        return environment

    yield make
    for environment in made:
        environment.close()


def scrape(operator: OperatorEnvironment) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.process.metrics_port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


def keyring_data(admin: client.ApiClient, namespace: str) -> dict[str, bytes]:
    return secret_data(admin, namespace, KEYRING)


def rotate(admin: client.ApiClient, namespace: str, name: str, request: str, version: str) -> None:
    annotate(admin, namespace, name, {ROTATE_ANNOTATION: request})
    kube.eventually(
        lambda: get_ms(admin, namespace, name)["status"].get("currentVersion") == version, timeout=60, what=version
    )


def operator_secrets(admin: client.ApiClient, namespace: str) -> list[client.V1Secret]:
    return list(client.CoreV1Api(admin).list_namespaced_secret(namespace).items)


def assert_sealed_only(admin: client.ApiClient, operator_ns: str, values: list[bytes]) -> bytes:
    """The keyring Secret holds the sealed form only, and no Secret of the operator's namespace holds a value
    or the keyring in plain. Returns the sealed document."""
    data = keyring_data(admin, operator_ns)
    assert set(data) == {SEALED_DATA_KEY}, f"the keyring Secret holds {sorted(data)}"
    sealed = data[SEALED_DATA_KEY]
    assert b'"keys"' not in sealed and b"hash_key" not in sealed
    with pytest.raises(KeyringError):
        LocalKeyring.from_bytes(sealed)
    for secret in operator_secrets(admin, operator_ns):
        raw = b"".join(base64.b64decode(v) for v in (secret.data or {}).values())
        for value in values:
            assert value not in raw, f"a value is readable in Secret {secret.metadata.name}"
    return sealed


def store_values(
    admin: client.ApiClient, operator_ns: str, keyring: LocalKeyring, ns: str, name: str
) -> set[bytes]:
    """Every stored version's password, opened with ``keyring`` (what a holder of the token could do)."""
    vault = SecretVault(KubernetesStore(admin, operator_ns), keyring, keyring.hash_key, SystemClock())
    loaded = vault.load(RecordKey(ns, name))
    assert loaded is not None
    return {vault.open(loaded.record, v).as_dict()["password"] for v in loaded.record.versions}


# --- the tests ----------------------------------------------------------------------------------------------


def test_pkcs11_sealed_keyring_serves_rotates_projects_and_nothing_decrypts_without_the_token(
    admin: client.ApiClient, namespace: str, hsm: Hsm, install: Any
) -> None:
    from managed_secrets.kms.pkcs11 import Pkcs11Key, Pkcs11Token

    op = install(hsm.pkcs11_env())
    op.process.start()
    create(admin, namespace, managed_secret("db"))
    wait_ready(admin, namespace, "db")
    first = secret_data(admin, namespace, "db")["password"]
    rotate(admin, namespace, "db", "r1", "v2")
    second = secret_data(admin, namespace, "db")["password"]
    assert second != first
    sealed = assert_sealed_only(admin, op.namespace, [first, second])
    assert read_seal_info(sealed).provider == "pkcs11" and read_seal_info(sealed).key_id == "kek-1"
    # The same label in another token opens nothing.
    with pytest.raises(UnsealFailed):
        unseal_keyring(sealed, Pkcs11Key(Pkcs11Token(hsm.library, "other", hsm.pin_file), "kek-1"))
    # With the token: the keyring, and through it both stored versions.
    keyring = LocalKeyring.from_bytes(
        unseal_keyring(sealed, Pkcs11Key(Pkcs11Token(hsm.library, "mso", hsm.pin_file), "kek-1"))
    )
    assert store_values(admin, op.namespace, keyring, namespace, "db") == {first, second}
    text = scrape(op)
    assert metric(text, "managed_secrets_keyring_open") == 1
    assert metric(text, "managed_secrets_key_service_up", provider="pkcs11") == 1
    # A cold start costs one decrypt of the seal (Status calls are the session and key check).
    op.process.stop()
    op.process.start()
    wait_ready(admin, namespace, "db")
    assert metric(scrape(op), "managed_secrets_kms_requests_total", operation="decrypt", result="ok") == 1


def test_the_control_planes_kms_v2_plugin_encrypts_etcd_and_seals_the_operators_keyring(
    admin: client.ApiClient, kubeconfig: str, namespace: str, install: Any
) -> None:
    info = json.loads((Path(kubeconfig).parent / "cluster.json").read_text())
    assert "kms" in info, "the control plane was started without its KMS v2 plugin (hack/cluster.py --no-kms)"
    socket = info["kms"]["socket"]
    op = install({"MSO_KMS_PROVIDER": "kmsv2", "MSO_KMS_ENDPOINT": f"unix://{socket}"})
    op.process.start()
    create(admin, namespace, managed_secret("app"))
    wait_ready(admin, namespace, "app")
    value = secret_data(admin, namespace, "app")["password"]
    sealed = assert_sealed_only(admin, op.namespace, [value])
    assert read_seal_info(sealed).provider == "kmsv2"
    assert read_seal_info(sealed).key_id == KmsV2Key(socket).current_key_id()
    # kube-apiserver stores the projected Secret through the same plugin: ciphertext in etcd.
    key = base64.b64encode(f"/registry/secrets/{namespace}/app".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - the etcd URL of our own control plane
        f"{info['etcd']}/v3/kv/range", data=json.dumps({"key": key}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        raw = base64.b64decode(json.loads(resp.read())["kvs"][0]["value"])
    assert raw.startswith(b"k8s:enc:kms:v2:softhsm:")
    assert value not in raw
    rotate(admin, namespace, "app", "r1", "v2")


def test_a_new_external_key_reseals_the_keyring_without_downtime_and_the_old_key_can_go(
    admin: client.ApiClient, namespace: str, hsm: Hsm, plugin: PluginProcess, install: Any
) -> None:
    op = install(plugin.kmsv2_env())
    op.process.start()
    create(admin, namespace, managed_secret("svc"))
    wait_ready(admin, namespace, "svc")
    assert read_seal_info(keyring_data(admin, op.namespace)[SEALED_DATA_KEY]).key_id == "kms-1"
    # The KMS rotates: a new write key, the old one kept for decrypting.
    softhsm.add_key(hsm.dir, token_label=plugin.token, key_label="kms-2")
    plugin.stop()
    plugin.start("kms-2", "kms-1")
    kube.eventually(
        lambda: read_seal_info(keyring_data(admin, op.namespace)[SEALED_DATA_KEY]).key_id == "kms-2",
        timeout=30,
        what="the keyring sealed again under kms-2",
    )
    assert "the previous external key is no longer needed" in op.process.logs()
    rotate(admin, namespace, "svc", "r1", "v2")
    create(admin, namespace, managed_secret("svc-2"))
    wait_ready(admin, namespace, "svc-2")
    # The old key destroyed and forgotten by the plugin: a cold start still opens the keyring.
    plugin.stop()
    softhsm.destroy_key(hsm.dir, token_label=plugin.token, key_label="kms-1")
    plugin.start("kms-2")
    op.process.stop()
    op.process.start()
    rotate(admin, namespace, "svc", "r2", "v3")
    assert set(secret_data(admin, namespace, "svc")) == {"password"}


def test_migration_from_plain_to_sealed_and_back_keeps_every_version(
    admin: client.ApiClient, kubeconfig: str, namespace: str, hsm: Hsm, install: Any
) -> None:
    op = install({})
    op.process.start()
    create(admin, namespace, managed_secret("m"))
    wait_ready(admin, namespace, "m")
    v1 = secret_data(admin, namespace, "m")["password"]
    plain = LocalKeyring.from_bytes(keyring_data(admin, op.namespace)[KEYRING_DATA_KEY])
    # Plain -> sealed: the same install started with a PKCS#11 key; its leader seals the keyring.
    op.process.stop()
    op.process.extra_env.update(hsm.pkcs11_env())
    op.process.start()
    kube.eventually(lambda: SEALED_DATA_KEY in keyring_data(admin, op.namespace), timeout=30, what="sealed")
    rotate(admin, namespace, "m", "r1", "v2")
    v2 = secret_data(admin, namespace, "m")["password"]
    assert_sealed_only(admin, op.namespace, [v1, v2])
    # Sealed -> plain (disaster recovery): operator stopped, the keyring tool run with the key service.
    op.process.stop()
    env = {**os.environ, **hsm.pkcs11_env(), "KUBECONFIG": kubeconfig, "MSO_NAMESPACE": op.namespace}
    tool = [sys.executable, "-m", "managed_secrets.operator.main", "keyring"]
    refused = subprocess.run([*tool, "unseal"], env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "--confirm" in refused.stderr
    status = subprocess.run([*tool, "status"], env=env, capture_output=True, text=True, check=True)
    report = json.loads(status.stdout)
    assert report["form"] == "sealed" and report["opens"] and report["keyIds"] == sorted(plain.key_ids())
    done = subprocess.run([*tool, "unseal", "--confirm"], env=env, capture_output=True, text=True, check=True)
    assert "plain now" in done.stdout
    data = keyring_data(admin, op.namespace)
    assert set(data) == {KEYRING_DATA_KEY}
    assert LocalKeyring.from_bytes(data[KEYRING_DATA_KEY]).hash_key == plain.hash_key
    for name in list(hsm.pkcs11_env()):
        op.process.extra_env.pop(name, None)
    op.process.start()
    rotate(admin, namespace, "m", "r2", "v3")
    v3 = secret_data(admin, namespace, "m")["password"]
    assert store_values(admin, op.namespace, plain, namespace, "m") == {v1, v2, v3}


def test_key_service_unreachable_at_start_then_while_running(
    admin: client.ApiClient, namespace: str, plugin: PluginProcess, install: Any
) -> None:
    op = install(plugin.kmsv2_env())
    op.process.start()
    create(admin, namespace, managed_secret("before"))
    wait_ready(admin, namespace, "before")
    sealed = keyring_data(admin, op.namespace)
    op.process.stop()
    # Unreachable at start: nothing that needs a key is served, it says why, and it keeps trying.
    plugin.stop()
    op.process.start()
    create(admin, namespace, managed_secret("during"))

    def refused() -> dict[str, Any] | None:
        ready = condition(get_ms(admin, namespace, "during"), "Ready")
        return ready if ready.get("reason") == "KeyServiceUnavailable" else None

    ready = kube.eventually(refused, timeout=30, what="Ready=False KeyServiceUnavailable")
    assert "KMS v2 plugin" in ready["message"] and ready["status"] == "False"
    text = scrape(op)
    assert metric(text, "managed_secrets_keyring_open") == 0
    assert metric(text, "managed_secrets_key_service_up", provider="kmsv2") == 0
    assert "the keyring cannot be opened" in op.process.logs()
    assert condition(get_ms(admin, namespace, "before"), "Ready")["status"] == "True", "it needed no key"
    assert keyring_data(admin, op.namespace) == sealed, "never a new keyring"
    # The plugin comes back: the keyring opens, and the waiting object is served without a spec change.
    plugin.start()
    wait_ready(admin, namespace, "during", timeout=60)
    assert "keyring opened after" in op.process.logs()
    # Unreachable while running: it goes on with the keys in memory and reports the degraded state.
    plugin.stop()
    kube.eventually(
        lambda: metric(scrape(op), "managed_secrets_key_service_up", provider="kmsv2") == 0, what="down reported"
    )
    assert re.search(r"key service is unavailable .*serving with the keys held in memory", op.process.logs())
    create(admin, namespace, managed_secret("degraded"))
    wait_ready(admin, namespace, "degraded")
    rotate(admin, namespace, "before", "r1", "v2")
    plugin.start()
    kube.eventually(lambda: metric(scrape(op), "managed_secrets_key_service_up", provider="kmsv2") == 1, what="up")
    assert keyring_data(admin, op.namespace) == sealed


def test_a_wrong_pin_or_a_missing_key_is_named_and_never_yields_a_new_keyring(
    admin: client.ApiClient, namespace: str, hsm: Hsm, install: Any, tmp_path: Path
) -> None:
    op = install(hsm.pkcs11_env())
    op.process.start()
    create(admin, namespace, managed_secret("p"))
    wait_ready(admin, namespace, "p")
    sealed = keyring_data(admin, op.namespace)
    op.process.stop()
    # A missing key: the label is named.
    op.process.extra_env.update(hsm.pkcs11_env(key_label="kek-9"))
    op.process.start()
    kube.eventually(lambda: "holds no AES key labelled 'kek-9'" in op.process.logs(), what="the missing key named")
    op.process.stop()
    assert keyring_data(admin, op.namespace) == sealed
    # A wrong PIN: the file is named (never the PIN), the PIN is not sent again until the file changes.
    pin_file = tmp_path / "pin"
    pin_file.write_text("0000\n")
    op.process.extra_env.update(hsm.pkcs11_env(pin_file=pin_file))
    op.process.start()
    kube.eventually(lambda: f"refused the PIN in {pin_file}" in op.process.logs(), what="the PIN refusal")
    assert "0000" not in op.process.logs()
    create(admin, namespace, managed_secret("q"))
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "q"), "Ready").get("reason") == "KeyServiceUnavailable",
        what="Ready=False while the keyring is closed",
    )
    assert keyring_data(admin, op.namespace) == sealed
    pin_file.write_text(hsm.pin_file.read_text())
    wait_ready(admin, namespace, "q", timeout=90)
    assert keyring_data(admin, op.namespace) == sealed
