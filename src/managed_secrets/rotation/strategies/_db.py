"""What the database strategy shares with its engine modules (``_postgres``, ``_mysql``).

An engine does two things: change an account's password as the admin account (the ``set`` step), and log in
as an account (the ``test`` step). It reports failure with ``DatabaseFailure``: a fixed reason and a message
written here, never the text of a driver exception, because driver and server messages can quote SQL, and
the SQL of a password change holds the password. The strategy adds the step and turns it into
``RotationStepFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "STATEMENT_TIMEOUT_SECONDS",
    "Credentials",
    "DatabaseFailure",
    "Endpoint",
    "Engine",
    "Reason",
    "SslMode",
]

CONNECT_TIMEOUT_SECONDS = 10
"""How long to wait for a server to accept a connection and a login."""
STATEMENT_TIMEOUT_SECONDS = 30
"""How long one statement (reading accounts, changing a password) may take, locks included."""


class Reason(StrEnum):
    """The ``reason`` of a failed database rotation step (it ends up in the RotationFailed condition)."""

    INVALID_SPEC = "InvalidSpec"
    """``spec.database`` cannot be used as it is (the CRD schema normally prevents this)."""
    ADMIN_CREDENTIALS_MISSING = "AdminCredentialsMissing"
    """The admin Secret, or its username or password key, is missing."""
    ADMIN_LOGIN_FAILED = "AdminLoginFailed"
    """The server refused the admin account's login."""
    PERMISSION_DENIED = "PermissionDenied"
    """The admin account may not change the rotated account's password."""
    ACCOUNT_MISSING = "AccountMissing"
    """The rotated account does not exist."""
    TEST_LOGIN_FAILED = "TestLoginFailed"
    """The new credentials do not log in."""
    DATABASE_UNREACHABLE = "DatabaseUnreachable"
    """No connection: server down, network, DNS, timeout, or TLS not possible with the sslMode asked for."""
    INSECURE_AUTHENTICATION = "InsecureAuthentication"
    """The server asked for the password itself (cleartext or MD5) instead of a challenge-response login."""
    DATABASE_ERROR = "DatabaseError"
    """Any other error the server returned; the message carries its SQLSTATE or error number."""
    INVALID_PENDING_VALUE = "InvalidPendingValue"
    """The value to apply lacks a key, or names an account this secret must not change."""


class SslMode(StrEnum):
    """``spec.database.sslMode``: the libpq names, mapped onto each driver's options."""

    DISABLE = "disable"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_FULL = "verify-full"


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: the server, the database to open (``None``: the engine's default), TLS."""

    engine: str
    host: str
    port: int
    database: str | None
    ssl_mode: SslMode

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.engine} server {host}:{self.port}"


@dataclass(frozen=True, repr=False)
class Credentials:
    """An account name and its password. ``repr`` hides the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


class DatabaseFailure(Exception):
    """An engine step failed. The message names accounts and servers, never a password or driver text."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class Engine(Protocol):
    """One database engine (``spec.database.engine``)."""

    def set_password(self, endpoint: Endpoint, admin: Credentials, account: Credentials) -> None:
        """Log in as ``admin`` and give ``account.username`` the password ``account.password``. Idempotent."""

    def check_login(self, endpoint: Endpoint, account: Credentials) -> None:
        """Log in as ``account`` and run ``SELECT 1``; ``DatabaseFailure`` if that does not work."""
