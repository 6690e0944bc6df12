"""PostgreSQL for the database strategy, through psycopg 3.

The password itself never reaches the server. libpq's ``PQencryptPasswordConn`` (``PGconn.encrypt_password``)
turns it into the verifier the server stores, in the server's ``password_encryption`` format (SCRAM-SHA-256
unless it says md5), and only that verifier travels in ``ALTER ROLE ... PASSWORD``, as ``psql``'s
``\\password`` does. Utility statements take no bind parameters, so the statement is composed client-side with
``psycopg.sql.Identifier`` for the role and ``psycopg.sql.Literal`` for the verifier.

When the admin account is a superuser, its session also turns statement logging off (``log_statement``,
``log_min_error_statement``, ``log_min_duration_statement``) so not even the verifier lands in the server log.
A non-superuser admin cannot change those settings; then a server that logs statements records the verifier
(never the password). Extensions that record statements on their own (``pg_stat_statements``, ``pgaudit``)
are out of reach likewise.

Login failures cannot be told apart by SQLSTATE (libpq reports startup errors as text only), so they are told
apart by whether the server asked for a password: if it did, the login was refused; if not, the server was
never reached (refused, timed out, TLS impossible, or rejected by ``pg_hba.conf`` before authentication).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import pq, sql

from managed_secrets.rotation.strategies._db import (
    CONNECT_TIMEOUT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    Credentials,
    DatabaseFailure,
    Endpoint,
    Reason,
    SslMode,
)

__all__ = ["MAINTENANCE_DATABASE", "PostgresEngine"]

log = logging.getLogger(__name__)

MAINTENANCE_DATABASE = "postgres"
"""The database to open when ``spec.database.database`` is not set (roles are cluster-wide)."""
APPLICATION_NAME = "managed-secrets-operator"
_LIBPQ_WITH_SYSTEM_ROOT_CERTS = 160000  # sslrootcert=system needs libpq 16


def connection_parameters(endpoint: Endpoint, login: Credentials) -> dict[str, Any]:
    """The keyword arguments of ``psycopg.connect`` for ``login`` at ``endpoint``."""
    params: dict[str, Any] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "dbname": endpoint.database or MAINTENANCE_DATABASE,
        "user": login.username,
        "password": login.password,
        "sslmode": endpoint.ssl_mode.value,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": APPLICATION_NAME,
        "autocommit": True,
        # Only a challenge-response login: a server (or a host a spec points at) that asks for the password in
        # clear (or as MD5, replayable) gets nothing. libpq >= 16 enforces it before sending anything.
        "require_auth": "scram-sha-256",
    }
    if endpoint.ssl_mode is SslMode.VERIFY_FULL and pq.version() >= _LIBPQ_WITH_SYSTEM_ROOT_CERTS:
        params["sslrootcert"] = "system"  # the system CAs, as the CRD promises; older libpq reads ~/.postgresql
    return params


class PostgresEngine:
    """PostgreSQL: ``ALTER ROLE ... WITH PASSWORD <verifier>`` as the admin, ``SELECT 1`` as the account."""

    name = "postgresql"

    def set_password(self, endpoint: Endpoint, admin: Credentials, account: Credentials) -> None:
        conn = _connect(endpoint, admin, Reason.ADMIN_LOGIN_FAILED, "admin account")
        try:
            failure = _alter_role(conn, endpoint, admin, account)
        finally:
            conn.close()
        if failure is not None:
            raise failure
        log.info("set new credentials for role %r on %s", account.username, endpoint.describe())

    def check_login(self, endpoint: Endpoint, account: Credentials) -> None:
        conn = _connect(endpoint, account, Reason.TEST_LOGIN_FAILED, "account")
        sqlstate: str | None = None
        try:
            row = conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            sqlstate, row = exc.sqlstate, None
        finally:
            conn.close()
        if row != (1,):
            raise DatabaseFailure(
                Reason.TEST_LOGIN_FAILED,
                f"role {account.username!r} logged in to {endpoint.describe()} but SELECT 1 failed"
                f" (SQLSTATE {sqlstate or 'unknown'})",
            )


def _connect(endpoint: Endpoint, login: Credentials, refused: Reason, who: str) -> psycopg.Connection[Any]:
    database = endpoint.database or MAINTENANCE_DATABASE
    try:
        return psycopg.connect(**connection_parameters(endpoint, login))
    except psycopg.Error as exc:
        # Only the libpq connection state is looked at: the exception's text is never passed on.
        pgconn = getattr(exc, "pgconn", None)
        server_asked_for_password = bool(pgconn is not None and pgconn.used_password)
        # libpq's own wording when require_auth refused the server's method (nothing of the server's is quoted).
        insecure = "authentication method requirement" in str(exc)
    if insecure:
        raise DatabaseFailure(
            Reason.INSECURE_AUTHENTICATION,
            f"{endpoint.describe()} asked {who} {login.username!r} for its password instead of a SCRAM login;"
            " refused, nothing was sent (configure scram-sha-256 for this host in pg_hba.conf)",
        )
    if server_asked_for_password:
        raise DatabaseFailure(
            refused,
            f"{endpoint.describe()} refused the login of {who} {login.username!r} to database {database!r}"
            f" (wrong password, no such role, no LOGIN or CONNECT right, or no such database)",
        )
    raise DatabaseFailure(
        Reason.DATABASE_UNREACHABLE,
        f"could not connect to {endpoint.describe()} as {who} {login.username!r} with sslMode"
        f" {endpoint.ssl_mode.value} (server down or unreachable, no answer within {CONNECT_TIMEOUT_SECONDS}s,"
        f" TLS not possible, or no pg_hba.conf entry)",
    )


def _alter_role(
    conn: psycopg.Connection[Any], endpoint: Endpoint, admin: Credentials, account: Credentials
) -> DatabaseFailure | None:
    """Change the password; return the failure instead of raising it, so it carries no driver exception."""
    role = account.username
    try:
        _quiet_session(conn)
        verifier = conn.pgconn.encrypt_password(account.password.encode("utf-8"), role.encode("utf-8"))
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode()))
        )
    except psycopg.Error as exc:
        return _alter_failure(exc.sqlstate, endpoint, admin, role)
    return None


def _quiet_session(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{STATEMENT_TIMEOUT_SECONDS}s")))
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{STATEMENT_TIMEOUT_SECONDS}s")))
    row = conn.execute("SELECT current_setting('is_superuser')").fetchone()
    if row == ("on",):
        conn.execute("SET log_statement = 'none'")
        conn.execute("SET log_min_error_statement = 'panic'")
        conn.execute("SET log_min_duration_statement = -1")


def _alter_failure(sqlstate: str | None, endpoint: Endpoint, admin: Credentials, role: str) -> DatabaseFailure:
    code = sqlstate or "unknown"
    if code == "42501":  # insufficient_privilege
        return DatabaseFailure(
            Reason.PERMISSION_DENIED,
            f"admin account {admin.username!r} may not change the password of role {role!r} on"
            f" {endpoint.describe()} (SQLSTATE {code}: it needs CREATEROLE, or superuser for a superuser role)",
        )
    if code == "42704":  # undefined_object
        return DatabaseFailure(
            Reason.ACCOUNT_MISSING, f"role {role!r} does not exist on {endpoint.describe()} (SQLSTATE {code})"
        )
    if code[:2] in {"08", "57"} or code == "unknown":  # connection exception, operator intervention (timeouts)
        return DatabaseFailure(
            Reason.DATABASE_UNREACHABLE,
            f"lost the connection to {endpoint.describe()} or timed out while changing the password of role"
            f" {role!r} (SQLSTATE {code})",
        )
    return DatabaseFailure(
        Reason.DATABASE_ERROR,
        f"changing the password of role {role!r} on {endpoint.describe()} failed (SQLSTATE {code})",
    )
