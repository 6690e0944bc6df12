"""A real HTTPS endpoint on 127.0.0.1 with certificates made for the test: a stand-in rotation webhook.

Shared by the External strategy's unit tests and the operator's end-to-end rotation tests.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- certificates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_authority(common_name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def make_server_cert(authority: Authority, directory: Path, *, names: list[x509.GeneralName]) -> Path:
    """A leaf certificate and key for the names, signed by ``authority``, in one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("rotation endpoint"))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
        .sign(authority.key, hashes.SHA256())
    )
    path = directory / f"{x509.random_serial_number()}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path


LOCALHOST = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]


@dataclass(frozen=True)
class PKI:
    trusted: Authority
    good_cert: Path
    """Signed by ``trusted`` for 127.0.0.1."""
    foreign_cert: Path
    """Signed by another authority for 127.0.0.1."""
    wrong_name_cert: Path
    """Signed by ``trusted``, but for another host name."""


# -- the endpoint -----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering."""
    drip: float = 0.0
    """If set, send the body one byte at a time with this pause between bytes."""
    content_length: bool = True


@dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]
    document: dict[str, Any]


def value_reply(data: dict[str, bytes]) -> Reply:
    encoded = {key: base64.b64encode(raw).decode() for key, raw in data.items()}
    return Reply(body=json.dumps({"value": encoded}).encode())


NEW_VALUE = {"username": b"app", "password": b"n3w-pa55"}


def default_responder(call: Call) -> Reply:
    return value_reply(NEW_VALUE) if call.document["step"] == "create" else Reply()


class _Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        call = Call(self.path, dict(self.headers.items()), json.loads(raw))
        self.server.calls.append(call)
        reply = self.server.responder(call)
        if reply.delay:
            self.server.released.wait(reply.delay)
        self.send_response(reply.status)
        for name, text in reply.headers.items():
            self.send_header(name, text)
        if reply.content_length:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.drip:
            for index in range(len(reply.body)):
                self.wfile.write(reply.body[index : index + 1])
                self.wfile.flush()
                if self.server.released.wait(reply.drip):
                    return
        else:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Endpoint(ThreadingHTTPServer):
    """An HTTPS rotation endpoint that records each call and answers with ``responder``."""

    daemon_threads = True

    def __init__(self, certfile: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(certfile)
        self.calls: list[Call] = []
        self.responder: Callable[[Call], Reply] = default_responder
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/rotate"

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the request's own thread, so a client that gives up cannot stall the server.
        request.settimeout(5)
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass  # the client hung up (timeout tests)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def serve(certfile: Path) -> Iterator[Endpoint]:
    server = Endpoint(certfile)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
