"""Servers for tests of what the operator sends where, and what happens when nobody answers.

Some speak just enough of the PostgreSQL or MySQL protocol to ask a client for its password in clear.

They stand for a host named in a tenant's spec whose only purpose is to collect the admin password: they offer
no TLS, ask for the cleartext password (PostgreSQL AuthenticationCleartextPassword; MySQL an auth switch to
``mysql_clear_password``), and record every byte they receive.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
AUTH_CLEARTEXT = 3


class _Recorder:
    """A listening socket on 127.0.0.1 whose connections are handled by ``_handle``; records what arrives."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.5)
        self.port = int(self._sock.getsockname()[1])
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_startup(self, conn: socket.socket) -> int:
        header = self._recv(conn, 8)
        length, code = struct.unpack("!II", header)
        self._recv(conn, length - 8)
        return int(code)

    def _recv(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        self.received.extend(data)
        return data

    def _drain(self, conn: socket.socket) -> None:
        while chunk := conn.recv(4096):
            self.received.extend(chunk)

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)


class CleartextPostgres(_Recorder):
    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            code = self._read_startup(conn)
            while code in (SSL_REQUEST, GSS_REQUEST):
                conn.sendall(b"N")  # no TLS, no GSSAPI: the client must decide in the clear
                code = self._read_startup(conn)
            conn.sendall(b"R" + struct.pack("!II", 8, AUTH_CLEARTEXT))
            self._drain(conn)
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            conn.close()


def _mysql_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


class CleartextMySQL(_Recorder):
    CAPABILITIES = 0x1 | 0x8 | 0x200 | 0x8000 | 0x80000  # long password, with db, 4.1, secure conn., plugin auth

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        salt = b"abcdefghijklmnopqrst"
        handshake = (
            b"\x0a5.7.99-collector\x00"
            + struct.pack("<I", 7)
            + salt[:8]
            + b"\x00"
            + struct.pack("<H", self.CAPABILITIES & 0xFFFF)
            + b"\x21"
            + struct.pack("<H", 2)
            + struct.pack("<H", self.CAPABILITIES >> 16)
            + bytes([21])
            + b"\x00" * 10
            + salt[8:]
            + b"\x00"
            + b"mysql_clear_password\x00"
        )
        try:
            conn.sendall(_mysql_packet(0, handshake))
            header = self._recv(conn, 4)
            self._recv(conn, int.from_bytes(header[:3], "little"))  # the handshake response
            conn.sendall(_mysql_packet(2, b"\xfe" + b"mysql_clear_password\x00" + salt + b"\x00"))
            self._drain(conn)
        except (OSError, ConnectionError):
            pass
        finally:
            conn.close()


class SilentServer(_Recorder):
    """Accepts every connection and never answers (a hung endpoint); counts the connections held open."""

    def __init__(self) -> None:
        self.open = 0
        self._count = threading.Lock()
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        with self._count:
            self.open += 1
        conn.settimeout(1)
        try:
            while not self._stop.is_set():
                try:
                    if not conn.recv(4096):
                        break
                except TimeoutError:
                    continue
        except OSError:
            pass
        finally:
            with self._count:
                self.open -= 1
            conn.close()


@contextmanager
def cleartext_server(kind: type[_Recorder]) -> Iterator[_Recorder]:
    server = kind()
    try:
        yield server
    finally:
        server.close()
