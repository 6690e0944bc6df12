"""The database strategy never sends a password to a server that asks for it in clear.

The servers are real sockets speaking the first messages of each protocol (tests/support/cleartext_servers.py).
"""

from __future__ import annotations

import pytest

from managed_secrets.rotation.strategies import _mysql, _postgres
from managed_secrets.rotation.strategies._db import Credentials, DatabaseFailure, Endpoint, Reason, SslMode
from support.cleartext_servers import CleartextMySQL, CleartextPostgres, cleartext_server

CANARY = "CANARY-admin-password-5b1e"


def test_postgres_login_refuses_a_cleartext_password_request() -> None:
    with cleartext_server(CleartextPostgres) as server:
        endpoint = Endpoint("postgresql", "127.0.0.1", server.port, None, SslMode.PREFER)
        with pytest.raises(DatabaseFailure) as failed:
            _postgres.PostgresEngine().set_password(
                endpoint, Credentials("admin", CANARY), Credentials("app", "new-password")
            )
        assert server.connections >= 1, "the client did reach the server"
        assert CANARY.encode() not in bytes(server.received)
        assert b"new-password" not in bytes(server.received)
        assert failed.value.reason is Reason.INSECURE_AUTHENTICATION
        assert CANARY not in str(failed.value)


def test_mysql_login_refuses_a_cleartext_password_request() -> None:
    with cleartext_server(CleartextMySQL) as server:
        endpoint = Endpoint("mysql", "127.0.0.1", server.port, None, SslMode.PREFER)
        with pytest.raises(DatabaseFailure) as failed:
            _mysql.MySQLEngine().set_password(
                endpoint, Credentials("admin", CANARY), Credentials("app", "new-password")
            )
        assert server.connections >= 1 and server.received, "the client did reach the server"
        assert CANARY.encode() not in bytes(server.received)
        assert CANARY not in str(failed.value)
