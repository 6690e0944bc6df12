"""The PKCS#11-backed KMS v2 plugin (``managed_secrets.kms.plugin``) over a real SoftHSM2 token.

Each plugin runs as its own process (``python -m managed_secrets.kms.plugin``), as kube-apiserver and the
operator meet it: python-pkcs11 loads one PKCS#11 library per process and SoftHSM2 reads SOFTHSM2_CONF only
once, so tokens in several directories need several processes. The clients are the operator's own
``KmsV2Key`` and, where the gRPC status code matters, a bare gRPC channel. Tokens are made with
hack/softhsm.py (Debian package softhsm2, which ``make install`` installs; without it these tests fail, they
do not skip).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import softhsm  # hack/softhsm.py; tests/conftest.py puts hack/ on the path

from managed_secrets.crypto.sealing import ExternalSeal
from managed_secrets.errors import KeyServiceUnavailable, UnsealFailed
from managed_secrets.kms import kmsv2_api as api
from managed_secrets.kms.kmsv2 import KmsV2Key
from managed_secrets.kms.plugin import KEY_LABEL_ANNOTATION, NONCE_BYTES, TAG_BYTES

LIBRARY = softhsm.library()  # SoftHsmError (naming the Debian package) when SoftHSM2 is missing

TOKEN = "mso"
PIN = "user-pin-4321"
SEED = bytes(range(32))  # what kube-apiserver sends: a 32-byte seed


class PluginProcess:
    """One plugin process on ``socket_path``; ``stop()`` sends SIGTERM and returns the exit status."""

    def __init__(
        self,
        token_dir: Path,
        workdir: Path,
        key_labels: list[str],
        *,
        pin_file: Path | None = None,
        socket_path: Path | None = None,
    ) -> None:
        self.socket_path = socket_path or workdir / "kms.sock"
        self.stats_file = workdir / "stats.json"
        self.log_file = workdir / "plugin.log"
        self.expected_exit = 0
        argv = [
            sys.executable,
            "-m",
            "managed_secrets.kms.plugin",
            "--listen",
            str(self.socket_path),
            "--library",
            LIBRARY,
            "--token-label",
            TOKEN,
            "--pin-file",
            str(pin_file or softhsm.pin_path(token_dir)),
            "--stats-file",
            str(self.stats_file),
            "--log-level",
            "DEBUG",
        ]
        for label in key_labels:
            argv += ["--key-label", label]
        env = {**os.environ, **softhsm.environment(token_dir)}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 20.0) -> PluginProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the plugin exited ({self.process.returncode}):\n{self.log()}")
            if self.socket_path.exists():
                try:
                    status(self.socket_path)
                    return self
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"the plugin did not answer in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stats(self) -> dict[str, dict[str, int]]:
        return dict(json.loads(self.stats_file.read_text()))

    def key(self) -> KmsV2Key:
        return KmsV2Key(f"unix://{self.socket_path}", timeout_seconds=5)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


def call(socket_path: Path, name: str, request: Any, response_type: Any) -> Any:
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        method = channel.unary_unary(
            api.method(name),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return method(request, timeout=5)


def status(socket_path: Path) -> Any:
    return call(socket_path, "Status", api.StatusRequest(), api.StatusResponse)


def decrypt_error(socket_path: Path, key_id: str, ciphertext: bytes) -> Any:
    """The gRPC error of a Decrypt that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call(
            socket_path,
            "Decrypt",
            api.DecryptRequest(ciphertext=ciphertext, uid="u", key_id=key_id),
            api.DecryptResponse,
        )
    return caught.value


def new_token(directory: Path, *key_labels: str) -> Path:
    softhsm.init_token(directory, token_label=TOKEN, pin=PIN, so_pin="87654321", key_label=key_labels[0])
    for label in key_labels[1:]:
        softhsm.add_key(directory, token_label=TOKEN, key_label=label)
    return directory


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token with kek-1 and kek-2, shared by the tests that do not change its keys."""
    return new_token(tmp_path_factory.mktemp("softhsm"), "kek-1", "kek-2")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[PluginProcess]]:
    """Plugins started by a test; stopped (and checked to stop cleanly) at its end."""
    plugins: list[PluginProcess] = []
    yield plugins
    for plugin in plugins:
        assert plugin.stop() == plugin.expected_exit, plugin.log()


@pytest.fixture
def plugin(token_dir: Path, tmp_path: Path, started: list[PluginProcess]) -> PluginProcess:
    """A plugin with kek-2 as the write key and kek-1 kept for Decrypt."""
    process = PluginProcess(token_dir, tmp_path, ["kek-2", "kek-1"]).wait_ready()
    started.append(process)
    return process


def test_status_names_the_write_key(plugin: PluginProcess) -> None:
    response = status(plugin.socket_path)
    assert (response.version, response.healthz, response.key_id) == ("v2", "ok", "kek-2")
    assert plugin.key().current_key_id() == "kek-2"


def test_encrypt_decrypt_round_trip(plugin: PluginProcess) -> None:
    key = plugin.key()
    seal = key.encrypt(SEED, b"")
    assert seal.key_id == "kek-2"
    assert seal.annotations == {KEY_LABEL_ANNOTATION: b"kek-2"}
    assert len(seal.ciphertext) == NONCE_BYTES + len(SEED) + TAG_BYTES
    assert SEED not in seal.ciphertext
    again = key.encrypt(SEED, b"")
    assert again.ciphertext[:NONCE_BYTES] != seal.ciphertext[:NONCE_BYTES]  # a fresh nonce every time
    assert key.decrypt(seal, b"") == SEED
    assert key.decrypt(again, b"") == SEED
    # The annotation is informative: the key id alone selects the key.
    assert key.decrypt(ExternalSeal(key_id=seal.key_id, ciphertext=seal.ciphertext), b"") == SEED
    # Never logged, even at DEBUG: neither the plaintext nor the ciphertext.
    log = plugin.log()
    assert "Encrypt uid=" in log
    for secret in (SEED, seal.ciphertext):
        assert secret.hex() not in log
        assert repr(secret)[2:-1] not in log


def test_the_annotation_name_is_one_kube_apiserver_accepts() -> None:
    # kube-apiserver (kmsv2.validateAnnotations) wants each annotation name to be a fully qualified domain
    # name: no "/", at least two dot-separated DNS-1123 labels.
    labels = KEY_LABEL_ANNOTATION.split(".")
    assert "/" not in KEY_LABEL_ANNOTATION
    assert len(labels) >= 2
    assert all(label and label.replace("-", "").isalnum() and label == label.lower() for label in labels)


def test_decrypt_under_an_older_key_after_the_write_key_changes(
    tmp_path: Path, started: list[PluginProcess]
) -> None:
    token_dir = new_token(tmp_path / "token", "kek-1")
    first = PluginProcess(token_dir, tmp_path, ["kek-1"]).wait_ready()
    started.append(first)
    old = first.key().encrypt(SEED, b"")
    assert old.key_id == "kek-1"
    assert first.stop() == 0

    softhsm.add_key(token_dir, token_label=TOKEN, key_label="kek-2")
    second = PluginProcess(token_dir, tmp_path, ["kek-2", "kek-1"]).wait_ready()
    started.append(second)
    key = second.key()
    assert key.current_key_id() == "kek-2"  # what tells kube-apiserver and the operator to re-encrypt
    assert key.decrypt(old, b"") == SEED
    new = key.encrypt(SEED, b"")
    assert new.key_id == "kek-2"
    assert key.decrypt(new, b"") == SEED

    # The old key taken out of the token: what it sealed no longer opens, the write key still works.
    softhsm.destroy_key(token_dir, token_label=TOKEN, key_label="kek-1")
    error = decrypt_error(second.socket_path, "kek-1", old.ciphertext)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "kek-1" in error.details()
    assert key.current_key_id() == "kek-2"
    assert key.decrypt(new, b"") == SEED


def test_a_key_id_the_plugin_does_not_hold_is_refused(plugin: PluginProcess) -> None:
    seal = plugin.key().encrypt(SEED, b"")
    error = decrypt_error(plugin.socket_path, "kek-9", seal.ciphertext)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'kek-9' is not one of this plugin's keys (kek-2, kek-1)" in error.details()
    with pytest.raises(UnsealFailed, match="INVALID_ARGUMENT"):
        plugin.key().decrypt(ExternalSeal(key_id="kek-9", ciphertext=seal.ciphertext), b"")
    assert decrypt_error(plugin.socket_path, "", seal.ciphertext).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_ciphertext_that_does_not_authenticate_is_invalid(plugin: PluginProcess) -> None:
    seal = plugin.key().encrypt(SEED, b"")
    tampered = seal.ciphertext[:-1] + bytes([seal.ciphertext[-1] ^ 1])
    for key_id, ciphertext in (
        ("kek-2", tampered),
        ("kek-1", seal.ciphertext),  # a configured key, but not the one that encrypted it
        ("kek-2", seal.ciphertext[: NONCE_BYTES + TAG_BYTES - 1]),
    ):
        error = decrypt_error(plugin.socket_path, key_id, ciphertext)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (key_id, error.details())
    assert (
        "does not authenticate under key 'kek-2'" in decrypt_error(plugin.socket_path, "kek-2", tampered).details()
    )
    assert plugin.key().decrypt(seal, b"") == SEED  # the session is fine afterwards


def test_calls_are_counted_in_the_stats_file(plugin: PluginProcess) -> None:
    before = plugin.stats()
    assert set(before) == {"Status"}  # the readiness probe's calls only
    key = plugin.key()
    key.current_key_id()
    seal = key.encrypt(SEED, b"")
    key.decrypt(seal, b"")
    key.decrypt(seal, b"")
    decrypt_error(plugin.socket_path, "kek-9", seal.ciphertext)
    after = plugin.stats()
    assert after == {
        "Status": {"ok": before["Status"]["ok"] + 1},
        "Encrypt": {"ok": 1},
        "Decrypt": {"ok": 2, "error": 1},
    }
    assert sorted(p.name for p in plugin.stats_file.parent.iterdir() if p.name.startswith(".")) == []  # no temp


def test_missing_write_key_is_reported_by_status(
    token_dir: Path, tmp_path: Path, started: list[PluginProcess]
) -> None:
    plugin = PluginProcess(token_dir, tmp_path, ["kek-absent", "kek-1"]).wait_ready()
    started.append(plugin)
    response = status(plugin.socket_path)
    assert response.key_id == "kek-absent"
    assert response.healthz != "ok"
    assert "kek-absent" in response.healthz
    assert len(response.healthz) <= 200
    with pytest.raises(KeyServiceUnavailable, match="not healthy"):
        plugin.key().current_key_id()
    with pytest.raises(grpc.RpcError) as caught:
        call(plugin.socket_path, "Encrypt", api.EncryptRequest(plaintext=SEED, uid="u"), api.EncryptResponse)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert plugin.stats()["Status"].get("unhealthy", 0) >= 2
    assert plugin.stats()["Encrypt"] == {"error": 1}


def test_a_wrong_pin_is_reported_without_the_pin_and_a_corrected_file_is_picked_up(
    token_dir: Path, tmp_path: Path, started: list[PluginProcess]
) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("wrong-pin-9999\n")
    plugin = PluginProcess(token_dir, tmp_path, ["kek-2"], pin_file=pin_file).wait_ready()
    started.append(plugin)
    response = status(plugin.socket_path)
    assert response.healthz != "ok"
    assert str(pin_file) in response.healthz
    for pin in ("wrong-pin-9999", PIN):
        assert pin not in response.healthz
        assert pin not in plugin.log()

    pin_file.write_text(PIN + "\n")  # the file is re-read at the next login
    assert status(plugin.socket_path).healthz == "ok"
    key = plugin.key()
    assert key.decrypt(key.encrypt(SEED, b""), b"") == SEED


def test_stale_socket_is_replaced_and_sigterm_removes_the_socket(
    token_dir: Path, tmp_path: Path, started: list[PluginProcess]
) -> None:
    path = tmp_path / "kms.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed plugin leaves behind
    assert path.exists()

    plugin = PluginProcess(token_dir, tmp_path, ["kek-2"]).wait_ready()
    started.append(plugin)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert plugin.key().current_key_id() == "kek-2"

    # A second plugin on the same, live socket refuses to start instead of stealing it.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = PluginProcess(token_dir, other_dir, ["kek-2"], socket_path=path)
    other.expected_exit = 2
    started.append(other)
    assert other.process.wait(timeout=20) == 2
    assert "another process is listening" in other.log()
    assert plugin.key().current_key_id() == "kek-2"

    assert plugin.stop() == 0
    assert not path.exists()
    assert "SIGTERM: stopping" in plugin.log()
