"""MySQL and MariaDB for the database strategy, through PyMySQL.

An account name in MySQL is ``'user'@'host'``, and one user name may exist for several hosts. The admin reads
the hosts (and each account's authentication plugin) from ``mysql.user`` and changes every account of that
user name in one ``ALTER USER`` statement. If the admin may not read ``mysql.user``, the account is assumed to
be ``'user'@'%'``. Account names and passwords are passed as query parameters: PyMySQL quotes them as string
literals (``'app''s'@'%'``), which MySQL accepts for account names, and escapes them for the connection's SQL
mode.

What reaches the server: for an account that uses ``mysql_native_password`` (MariaDB's default), only the hash
the server stores (``*`` + SHA1(SHA1(password))) is sent, as ``IDENTIFIED WITH mysql_native_password AS``, so
the password is not in any statement the server might log. For any other plugin (MySQL 8's
``caching_sha2_password``, ``ed25519``) the server must hash the password itself, so it is sent as a literal in
``IDENTIFIED BY``; MySQL rewrites such literals in its logs, MariaDB does not. In both cases the admin session
first tries ``SET SESSION sql_log_off = ON`` to keep the statement out of the general query log; that needs the
SUPER privilege and is skipped silently without it. The binary log is left alone: replicas need the change.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from typing import Any

import pymysql

from managed_secrets.rotation.strategies._db import (
    CONNECT_TIMEOUT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    Credentials,
    DatabaseFailure,
    Endpoint,
    Reason,
    SslMode,
)

__all__ = ["ANY_HOST", "MySQLEngine", "native_password_hash"]

log = logging.getLogger(__name__)

ANY_HOST = "%"
"""The host part assumed when the admin cannot read ``mysql.user``."""
NATIVE_PASSWORD_PLUGIN = "mysql_native_password"

# Error numbers (server ER_* and client CR_*), as PyMySQL puts them in exception.args[0].
_ER_DBACCESS_DENIED = 1044
_ER_ACCESS_DENIED = 1045
_ER_BAD_DB = 1049
_ER_TABLEACCESS_DENIED = 1142
_ER_HOST_NOT_PRIVILEGED = 1130
_ER_SPECIFIC_ACCESS_DENIED = 1227
_ER_CANNOT_USER = 1396
_ER_ACCESS_DENIED_NO_PASSWORD = 1698
_ER_MUST_CHANGE_PASSWORD_LOGIN = 1862
_ER_ACCOUNT_LOCKED = 3118
_CR_SSL_CONNECTION_ERROR = 2026
_REFUSED_LOGIN = frozenset(
    {
        _ER_DBACCESS_DENIED,
        _ER_ACCESS_DENIED,
        _ER_BAD_DB,
        _ER_HOST_NOT_PRIVILEGED,
        _ER_ACCESS_DENIED_NO_PASSWORD,
        _ER_MUST_CHANGE_PASSWORD_LOGIN,
        _ER_ACCOUNT_LOCKED,
    }
)
_DENIED = frozenset({_ER_DBACCESS_DENIED, _ER_ACCESS_DENIED, _ER_TABLEACCESS_DENIED, _ER_SPECIFIC_ACCESS_DENIED})


def native_password_hash(password: str) -> str:
    """What ``mysql_native_password`` stores for ``password``: ``*`` and SHA1(SHA1(password)) in upper hex."""
    # The plugin is defined with SHA1; this is the server's format, not a choice of hash.
    inner = hashlib.sha1(password.encode("utf-8")).digest()  # noqa: S324
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


CLEARTEXT_PLUGINS = ("mysql_clear_password", "dialog")


class _RefuseCleartext:
    """A PyMySQL auth plugin handler that refuses, so a cleartext password request fails the login."""

    def __init__(self, connection: object) -> None:
        self.connection = connection

    def authenticate(self, packet: object) -> object:
        raise pymysql.err.OperationalError(2059, "the server asked for a cleartext password; refused")


def connection_parameters(endpoint: Endpoint, login: Credentials, database: str | None) -> dict[str, Any]:
    """The keyword arguments of ``pymysql.connect`` for ``login`` at ``endpoint``."""
    params: dict[str, Any] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "user": login.username,
        # bytes, so the server sees the same UTF-8 the password was set with (PyMySQL would use latin-1)
        "password": login.password.encode("utf-8"),
        "charset": "utf8mb4",
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": STATEMENT_TIMEOUT_SECONDS,
        "write_timeout": STATEMENT_TIMEOUT_SECONDS,
        "autocommit": True,
        # Plugins that send the password itself (in clear unless TLS is verified) are refused before anything
        # is sent: a host named by a spec could be a server that only wants to collect passwords.
        "auth_plugin_map": {name: _RefuseCleartext for name in CLEARTEXT_PLUGINS},
    }
    if database:
        params["database"] = database
    if endpoint.ssl_mode is SslMode.DISABLE:
        params["ssl_disabled"] = True
    elif endpoint.ssl_mode is SslMode.REQUIRE:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        params["ssl"] = context  # PyMySQL >= 1.2: a context makes TLS required
    elif endpoint.ssl_mode is SslMode.VERIFY_FULL:
        params["ssl"] = ssl.create_default_context()  # system CAs, host name checked
    # SslMode.PREFER: PyMySQL's default, TLS when the server offers it.
    return params


class MySQLEngine:
    """MySQL/MariaDB: ``ALTER USER`` for every host of the user as the admin, ``SELECT 1`` as the account."""

    name = "mysql"

    def set_password(self, endpoint: Endpoint, admin: Credentials, account: Credentials) -> None:
        # ALTER USER works from any database; the configured one may not even be open to the admin.
        conn = _connect(endpoint, admin, None, Reason.ADMIN_LOGIN_FAILED, "admin account")
        try:
            failure = _alter_user(conn, endpoint, admin, account)
        finally:
            conn.close()
        if failure is not None:
            raise failure
        log.info("set new credentials for user %r on %s", account.username, endpoint.describe())

    def check_login(self, endpoint: Endpoint, account: Credentials) -> None:
        conn = _connect(endpoint, account, endpoint.database, Reason.TEST_LOGIN_FAILED, "account")
        errno: int | None = None
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                row = cursor.fetchone()
        except pymysql.MySQLError as exc:
            errno, row = _errno(exc), None
        finally:
            conn.close()
        if row != (1,):
            raise DatabaseFailure(
                Reason.TEST_LOGIN_FAILED,
                f"user {account.username!r} logged in to {endpoint.describe()} but SELECT 1 failed"
                f" (error {errno or 'unknown'})",
            )


def _errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _connect(
    endpoint: Endpoint, login: Credentials, database: str | None, refused: Reason, who: str
) -> Any:  # pymysql.connections.Connection, which ships no type information
    try:
        return pymysql.connect(**connection_parameters(endpoint, login, database))
    except (pymysql.MySQLError, OSError, RuntimeError) as exc:
        # Only the error number is looked at: the exception's text is never passed on.
        errno = _errno(exc) if isinstance(exc, pymysql.MySQLError) else None
    if errno in _REFUSED_LOGIN:
        where = f" to database {database!r}" if database else ""
        raise DatabaseFailure(
            refused,
            f"{endpoint.describe()} refused the login of {who} {login.username!r}{where} (error {errno}:"
            f" wrong password, no such user for this client host, account locked, or no such database)",
        )
    tls = " (the server does not offer TLS)" if errno == _CR_SSL_CONNECTION_ERROR else ""
    raise DatabaseFailure(
        Reason.DATABASE_UNREACHABLE,
        f"could not connect to {endpoint.describe()} as {who} {login.username!r} with sslMode"
        f" {endpoint.ssl_mode.value}{tls} (server down or unreachable, no answer within"
        f" {CONNECT_TIMEOUT_SECONDS}s, or TLS not possible; error {errno or 'unknown'})",
    )


def _alter_user(conn: Any, endpoint: Endpoint, admin: Credentials, account: Credentials) -> DatabaseFailure | None:
    """Change the password; return the failure instead of raising it, so it carries no driver exception."""
    user = account.username
    try:
        with conn.cursor() as cursor:
            _quiet_session(cursor)
            accounts = _accounts(cursor, user)
            if not accounts:
                return DatabaseFailure(
                    Reason.ACCOUNT_MISSING, f"user {user!r} has no account on {endpoint.describe()}"
                )
            clauses, params = [], []
            for host, plugin in accounts:
                if plugin == NATIVE_PASSWORD_PLUGIN:
                    clauses.append(f"%s@%s IDENTIFIED WITH {NATIVE_PASSWORD_PLUGIN} AS %s")
                    params += [user, host, native_password_hash(account.password)]
                else:
                    clauses.append("%s@%s IDENTIFIED BY %s")
                    params += [user, host, account.password]
            cursor.execute("ALTER USER " + ", ".join(clauses), params)
    except pymysql.MySQLError as exc:
        return _alter_failure(_errno(exc), endpoint, admin, user)
    return None


def _quiet_session(cursor: Any) -> None:
    # Needs SUPER; without it the general query log (if it is on) sees the statement.
    with contextlib.suppress(pymysql.MySQLError):
        cursor.execute("SET SESSION sql_log_off = ON")


def _accounts(cursor: Any, user: str) -> list[tuple[str, str | None]]:
    """``(host, plugin)`` of every account named ``user``; ``[('%', None)]`` if ``mysql.user`` is unreadable."""
    try:
        # Host '' marks a MariaDB role, not a login account.
        cursor.execute("SELECT Host, plugin FROM mysql.user WHERE User = %s AND Host <> ''", (user,))
        rows = cursor.fetchall()
    except pymysql.MySQLError as exc:
        if _errno(exc) not in _DENIED:
            raise
        return [(ANY_HOST, None)]
    found: list[tuple[str, str | None]] = []
    for host, plugin in rows:
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        plugin_text = plugin.decode() if isinstance(plugin, bytes) else plugin
        found.append((host_text, str(plugin_text) if plugin_text is not None else None))
    return sorted(found)


def _alter_failure(errno: int | None, endpoint: Endpoint, admin: Credentials, user: str) -> DatabaseFailure:
    if errno in _DENIED:
        return DatabaseFailure(
            Reason.PERMISSION_DENIED,
            f"admin account {admin.username!r} may not change the password of user {user!r} on"
            f" {endpoint.describe()} (error {errno}: it needs the CREATE USER privilege, or UPDATE on the mysql"
            f" schema)",
        )
    if errno == _ER_CANNOT_USER:
        return DatabaseFailure(
            Reason.ACCOUNT_MISSING,
            f"user {user!r} has no account on {endpoint.describe()} that the admin can change (error {errno};"
            f" without SELECT on mysql.user the operator assumes host '{ANY_HOST}')",
        )
    if errno is None or 2000 <= errno < 3000:  # client-side errors: lost connection, timeout
        return DatabaseFailure(
            Reason.DATABASE_UNREACHABLE,
            f"lost the connection to {endpoint.describe()} or timed out while changing the password of user"
            f" {user!r} (error {errno or 'unknown'})",
        )
    return DatabaseFailure(
        Reason.DATABASE_ERROR,
        f"changing the password of user {user!r} on {endpoint.describe()} failed (error {errno})",
    )
