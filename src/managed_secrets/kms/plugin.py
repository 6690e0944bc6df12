"""A Kubernetes KMS v2 plugin backed by a PKCS#11 token (an HSM, or SoftHSM2): gRPC on a unix socket.

kube-apiserver (``EncryptionConfiguration`` provider ``kms``, ``apiVersion: v2``) and the operator's
``kms.kmsv2.KmsV2Key`` are its clients::

    python -m managed_secrets.kms.plugin --listen /run/kms/kms.sock \\
        --library /usr/lib/softhsm/libsofthsm2.so --token-label mso --pin-file /etc/kms/pin \\
        --key-label kek-2 --key-label kek-1 [--stats-file /run/kms/stats.json]

The first ``--key-label`` is the write key; the others are older keys, kept so that what they encrypted still
decrypts. The three calls:

- ``Status``: version ``v2``, ``healthz`` ``ok`` when a session opens on the token and the write key is in it
  (otherwise a short reason, naming the token, key label or PIN *file*, never a secret), ``key_id`` the write
  key's label. A changed key id is what tells kube-apiserver (and the operator) that the key was rotated.
- ``Encrypt``: AES-256-GCM computed inside the token under the write key, with a fresh random 12-byte nonce;
  the ciphertext is ``nonce || ct || tag``, the key id the write key's label, and the annotation
  ``key-label.kms.managedsecrets.io`` repeats the label (kube-apiserver requires annotation names to be fully
  qualified domain names, so the name cannot contain a ``/``).
- ``Decrypt``: under the key the request's ``key_id`` names, which must be one of the configured labels
  (else ``INVALID_ARGUMENT``); a ciphertext that does not authenticate is ``INVALID_ARGUMENT`` too. A token
  that cannot be reached is ``UNAVAILABLE``; one that refuses (wrong PIN, key missing) ``FAILED_PRECONDITION``.

The token session is ``kms.pkcs11.Pkcs11Token``'s: reopened when the token drops it, and the PIN file is
re-read at every login. Plaintext and ciphertext are never logged. Every call is counted by method and result
(``ok``, ``error``, and ``unhealthy`` for a Status that answered but not ``ok``); with ``--stats-file`` the
counts are rewritten there (temp file + rename) after every call, e.g.
``{"Status": {"ok": 3}, "Encrypt": {"ok": 1}, "Decrypt": {"ok": 2, "error": 1}}``.

A stale socket file is removed at start (a live one, that another process still answers on, is not); on
SIGTERM or SIGINT the server stops and the socket is removed. ``serve(...)`` starts the same server in the
calling process and returns a handle with ``.stop()`` (note that python-pkcs11 loads one PKCS#11 library per
process, and SoftHSM2 reads ``SOFTHSM2_CONF`` once, when it is first loaded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import grpc

from managed_secrets.errors import KeyServiceRefused, KeyServiceUnavailable
from managed_secrets.kms import kmsv2_api as api
from managed_secrets.kms.pkcs11 import Pkcs11Token

__all__ = ["KEY_LABEL_ANNOTATION", "CallStats", "KeyService", "Plugin", "PluginError", "main", "serve"]

log = logging.getLogger("managed_secrets.kms.plugin")  # not "__main__" under -m

KEY_LABEL_ANNOTATION = "key-label.kms.managedsecrets.io"
NONCE_BYTES = 12
TAG_BYTES = 16
_HEALTHZ_MAX = 200
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, NUL included
_MAX_PLAINTEXT = 1 << 20  # kube-apiserver sends a 32-byte seed; the operator a 32-byte seal key


class PluginError(Exception):
    """The plugin cannot start: bad configuration, or its socket path is taken."""


class _Refusal(Exception):
    """A call answered with a gRPC error: a status code and a message safe to send and to log."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallStats:
    """Calls counted by method and result; rewritten to ``path`` (atomically) after every call if given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        if path is not None:
            with self._lock:
                self._write()

    def count(self, method: str, result: str) -> None:
        with self._lock:
            per_method = self._counts.setdefault(method, {})
            per_method[result] = per_method.get(result, 0) + 1
            if self.path is not None:
                self._write()

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {method: dict(results) for method, results in self._counts.items()}

    def _write(self) -> None:
        assert self.path is not None
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self._counts, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as error:  # the counts are a diagnostic: a full disk must not fail the call
            log.warning("cannot write the stats file %s: %s", self.path, error.strerror)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _HEALTHZ_MAX else text[: _HEALTHZ_MAX - 3] + "..."


def _quoted(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


class KeyService:
    """The three KMS v2 calls over a PKCS#11 token, without the gRPC plumbing (see ``Plugin`` for that)."""

    def __init__(self, token: Pkcs11Token, key_labels: Sequence[str], stats: CallStats | None = None) -> None:
        labels = list(key_labels)
        if not labels:
            raise PluginError("at least one key label is needed (the first is the write key)")
        if any(not label.strip() for label in labels):
            raise PluginError("a key label is empty")
        if len(set(labels)) != len(labels):
            raise PluginError(f"a key label is given twice: {', '.join(labels)}")
        self.token = token
        self.key_labels = labels
        self.write_label = labels[0]
        self.stats = stats if stats is not None else CallStats()

    # --- the calls (each returns the response and the result to count) ---------------------------------

    def status(self, request: Any) -> tuple[Any, str]:
        try:
            self.token.run(self.write_label, lambda key: None)
        except (KeyServiceRefused, KeyServiceUnavailable) as error:
            reason = _short(str(error))
        except Exception as error:  # an unexpected token error: its type says enough, and nothing secret
            reason = _short(f"{self.token.describe(self.write_label)} failed: {type(error).__name__}")
        else:
            return api.StatusResponse(version=api.API_VERSION, healthz="ok", key_id=self.write_label), "ok"
        log.warning("Status: not healthy: %s", reason)
        return api.StatusResponse(version=api.API_VERSION, healthz=reason, key_id=self.write_label), "unhealthy"

    def encrypt(self, request: Any) -> tuple[Any, str]:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        plaintext = bytes(request.plaintext)
        if not plaintext:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "Encrypt needs a non-empty plaintext")
        if len(plaintext) > _MAX_PLAINTEXT:
            raise _Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Encrypt takes at most {_MAX_PLAINTEXT} bytes of plaintext, not {len(plaintext)}",
            )
        nonce = os.urandom(NONCE_BYTES)

        def encrypt(key: Any) -> bytes:
            params = GCMParams(nonce, None, TAG_BYTES * 8)
            return bytes(key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params))

        sealed = self._run(self.write_label, encrypt)
        log.debug("Encrypt uid=%s under %r", request.uid, self.write_label)
        response = api.EncryptResponse(
            ciphertext=nonce + sealed,
            key_id=self.write_label,
            annotations={KEY_LABEL_ANNOTATION: self.write_label.encode()},
        )
        return response, "ok"

    def decrypt(self, request: Any) -> tuple[Any, str]:
        from pkcs11 import Mechanism
        from pkcs11 import exceptions as e
        from pkcs11.mechanisms import GCMParams

        key_id = str(request.key_id)
        if not key_id:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "Decrypt needs a key id")
        if key_id not in self.key_labels:
            raise _Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"key id {_quoted(key_id)} is not one of this plugin's keys ({', '.join(self.key_labels)})",
            )
        ciphertext = bytes(request.ciphertext)
        if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
            raise _Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the ciphertext is {len(ciphertext)} bytes: too short to hold a nonce and a tag",
            )
        nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]

        def decrypt(key: Any) -> bytes:
            params = GCMParams(nonce, None, TAG_BYTES * 8)
            try:
                return bytes(key.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=params))
            except (e.EncryptedDataInvalid, e.EncryptedDataLenRange, e.GeneralError, e.FunctionFailed):
                raise _Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the ciphertext does not authenticate under key {_quoted(key_id)}",
                ) from None

        plaintext = self._run(key_id, decrypt)
        log.debug("Decrypt uid=%s: %d bytes under %r", request.uid, len(ciphertext), key_id)
        return api.DecryptResponse(plaintext=plaintext), "ok"

    def _run(self, key_label: str, action: Callable[[Any], bytes]) -> bytes:
        try:
            return bytes(self.token.run(key_label, action))
        except KeyServiceUnavailable as error:
            raise _Refusal(grpc.StatusCode.UNAVAILABLE, _short(str(error))) from None
        except KeyServiceRefused as error:
            raise _Refusal(grpc.StatusCode.FAILED_PRECONDITION, _short(str(error))) from None

    # --- gRPC ----------------------------------------------------------------------------------------------

    def handler(self) -> Any:
        """The generic handler of ``v2.KeyManagementService`` for a ``grpc.server``."""

        def unary(name: str, call: Callable[[Any], tuple[Any, str]], request_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                self._counted(name, call),
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(
            api.SERVICE,
            {
                "Status": unary("Status", self.status, api.StatusRequest),
                "Encrypt": unary("Encrypt", self.encrypt, api.EncryptRequest),
                "Decrypt": unary("Decrypt", self.decrypt, api.DecryptRequest),
            },
        )

    def _counted(self, name: str, call: Callable[[Any], tuple[Any, str]]) -> Callable[[Any, Any], Any]:
        def handle(request: Any, context: Any) -> Any:
            try:
                response, result = call(request)
            except _Refusal as refusal:
                self.stats.count(name, "error")
                log.warning("%s refused (%s): %s", name, refusal.code.name, refusal.message)
                _abort(context, refusal.code, refusal.message)
            except Exception as error:
                self.stats.count(name, "error")
                # The type only: an exception's text could quote what it was working on.
                log.error("%s failed: %s", name, type(error).__name__)
                _abort(context, grpc.StatusCode.INTERNAL, f"{name} failed: {type(error).__name__}")
            self.stats.count(name, result)
            return response

        return handle


def _abort(context: Any, code: Any, message: str) -> NoReturn:
    context.abort(code, message)  # raises
    raise RuntimeError("grpc's context.abort returned")


def _socket_path(listen: str | Path) -> Path:
    path = Path(str(listen).removeprefix("unix://")).absolute()
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise PluginError(f"the socket path {path} is longer than a unix socket address allows ({_SUN_PATH_MAX})")
    return path


def _clear_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise PluginError(f"{path} exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing the stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as error:
        raise PluginError(f"cannot tell whether the socket {path} is in use: {error.strerror}") from None
    finally:
        probe.close()
    raise PluginError(f"another process is listening on {path}")


class Plugin:
    """A running plugin: its gRPC server on the unix socket. ``stop()`` ends it and removes the socket."""

    def __init__(self, server: Any, socket_path: Path, service: KeyService) -> None:
        self._server = server
        self.socket_path = socket_path
        self.service = service
        self._inode = socket_path.stat().st_ino
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return self.service.stats.snapshot()

    def stop(self, grace: float | None = 2.0) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self._server.stop(grace).wait()
            with contextlib.suppress(FileNotFoundError):
                if self.socket_path.lstat().st_ino == self._inode:  # ours still, not a successor's
                    self.socket_path.unlink()
            self.service.token.close()
            self._stopped.set()
            log.info("stopped; removed %s", self.socket_path)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until ``stop()`` has finished (True) or ``timeout`` seconds have passed (False)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Plugin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    listen: str | Path,
    *,
    library: str,
    token_label: str,
    pin_file: Path,
    key_labels: Sequence[str],
    stats_file: Path | None = None,
    max_workers: int = 4,
) -> Plugin:
    """Starts the plugin on the unix socket ``listen`` (a path, or ``unix://`` + path) and returns its handle."""
    path = _socket_path(listen)
    token = Pkcs11Token(library, token_label, Path(pin_file))
    service = KeyService(token, key_labels, CallStats(stats_file))
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(path)
    for label in service.key_labels:  # opens the session now, so the first Status is quick; never fatal
        try:
            token.run(label, lambda key: None)
        except (KeyServiceRefused, KeyServiceUnavailable) as error:
            log.warning("%s key %r: %s", "write" if label == service.write_label else "decrypt-only", label, error)
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kms-plugin"))
    server.add_generic_rpc_handlers((service.handler(),))
    try:
        try:
            bound = server.add_insecure_port(f"unix://{path}")
        except RuntimeError as error:
            raise PluginError(f"cannot listen on {path}: {error}") from None
        if not bound:
            raise PluginError(f"cannot listen on {path}")
        os.chmod(path, 0o600)  # whoever can connect can decrypt: the owner only
        server.start()
    except BaseException:
        server.stop(None)
        token.close()
        raise
    log.info(
        "KMS v2 plugin on unix://%s: %s, write key %r%s",
        path,
        token.describe(),
        service.write_label,
        f", decrypt-only keys {service.key_labels[1:]}" if len(service.key_labels) > 1 else "",
    )
    return Plugin(server, path, service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m managed_secrets.kms.plugin",
        description="A Kubernetes KMS v2 plugin backed by a PKCS#11 token.",
    )
    parser.add_argument("--listen", required=True, help="unix socket path (or unix:///path) to serve on")
    parser.add_argument(
        "--library", required=True, help="the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so"
    )
    parser.add_argument("--token-label", required=True, help="label of the token that holds the keys")
    parser.add_argument(
        "--pin-file", required=True, type=Path, help="file holding the user PIN (re-read at login)"
    )
    parser.add_argument(
        "--key-label",
        required=True,
        action="append",
        dest="key_labels",
        help="AES key label; the first is the write key, the others are kept for Decrypt (repeatable)",
    )
    parser.add_argument(
        "--stats-file", type=Path, help="JSON file rewritten with the call counts after every call"
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        plugin = serve(
            args.listen,
            library=args.library,
            token_label=args.token_label,
            pin_file=args.pin_file,
            key_labels=args.key_labels,
            stats_file=args.stats_file,
        )
    except PluginError as error:
        print(f"kms-plugin: {error}", file=sys.stderr)
        return 2
    try:
        while not stop.wait(1.0):
            pass
    finally:
        plugin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
