"""The Database strategy's failures without a database: reasons, messages that quote no value, driver options.

Driver exceptions are faked with a canary in their text: it must never come out in what the strategy raises.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Mapping
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.strategies import _mysql, _postgres
from managed_secrets.rotation.strategies._db import Credentials, DatabaseFailure, Endpoint, Reason, SslMode
from managed_secrets.rotation.strategies.database import DatabaseStrategy
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed

CANARY = "CANARY-pw-7f3e1d"
ADMIN = Credentials("admin", "ADMIN-CANARY-91c2")
ACCOUNT = Credentials("app_b", CANARY)


def database_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "engine": "postgresql",
        "host": "db.example.svc",
        "mode": "dual",
        "usernames": ["app_a", "app_b"],
        "adminSecretRef": {"name": "db-admin"},
        "passwordPolicy": {},
        "sslMode": "prefer",
    }
    spec.update(overrides)
    return {key: value for key, value in spec.items() if value is not None}


def pending_value(username: str = "app_b", password: str = CANARY) -> SecretValue:
    return SecretValue.from_map({"username": username.encode(), "password": password.encode()})


def admin_secret(**data: bytes) -> Mapping[str, bytes]:
    return data or {"username": ADMIN.username.encode(), "password": ADMIN.password.encode()}


class FakeEngine:
    """Raises the failure it is given, from inside an except block, as a driver wrapper would."""

    def __init__(self, failure: DatabaseFailure | None = None) -> None:
        self.failure = failure
        self.calls: list[tuple[str, Credentials | None, Credentials]] = []

    def _maybe_fail(self) -> None:
        if self.failure is not None:
            try:
                raise RuntimeError(f"driver text with {CANARY}")
            except RuntimeError:
                raise self.failure from None

    def set_password(self, endpoint: Endpoint, admin: Credentials, account: Credentials) -> None:
        self.calls.append(("set_password", admin, account))
        self._maybe_fail()

    def check_login(self, endpoint: Endpoint, account: Credentials) -> None:
        self.calls.append(("check_login", None, account))
        self._maybe_fail()


def strategy_with(engine: FakeEngine) -> DatabaseStrategy:
    class WithFake(DatabaseStrategy):
        engines = {"postgresql": engine, "mysql": engine}

    return WithFake()


def context(
    config: Mapping[str, Any] | None = None,
    *,
    current: SecretValue | None = None,
    secrets: Mapping[str, Mapping[str, bytes]] | None = None,
) -> RotationContext:
    stored = {"db-admin": admin_secret()} if secrets is None else secrets

    def read_secret(name: str) -> Mapping[str, bytes]:
        if name not in stored:
            raise KeyError(name)
        return stored[name]

    return RotationContext(
        "team/db",
        "v3",
        config or database_spec(),
        current=current,
        read_secret=read_secret,
        rng=random.Random(3),
    )


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), *map(str, exc.args)):
        for secret in (CANARY, ADMIN.password):
            assert secret not in text
    # no driver exception (or UnicodeDecodeError holding the bytes) rides along, not even suppressed
    assert exc.__context__ is None
    assert exc.__cause__ is None


# --- the strategy's own checks ------------------------------------------------------------------------------


def test_set_passes_admin_and_pending_account_to_the_engine() -> None:
    engine = FakeEngine()
    strategy_with(engine).set(context(current=pending_value("app_a")), pending_value())
    assert engine.calls == [("set_password", ADMIN, ACCOUNT)]


def test_admin_keys_can_be_renamed() -> None:
    engine = FakeEngine()
    spec = database_spec(adminSecretRef={"name": "db-admin", "usernameKey": "user", "passwordKey": "pass"})
    secrets = {"db-admin": {"user": b"root", "pass": b"s3cret"}}
    strategy_with(engine).set(context(spec, secrets=secrets), pending_value())
    assert engine.calls[0][1] == Credentials("root", "s3cret")


@pytest.mark.parametrize(
    ("secrets", "fragment"),
    [
        ({}, "does not exist or is empty"),
        ({"db-admin": {}}, "does not exist or is empty"),
        ({"db-admin": {"password": ADMIN.password.encode()}}, "no key 'username'"),
        ({"db-admin": {"username": b"admin"}}, "no key 'password'"),
        ({"db-admin": {"username": b"admin", "password": b""}}, "no key 'password'"),
        ({"db-admin": {"username": b"admin", "password": b"\xff"}}, "not UTF-8"),
    ],
)
def test_missing_admin_credentials(secrets: dict[str, dict[str, bytes]], fragment: str) -> None:
    engine = FakeEngine()
    with pytest.raises(RotationStepFailed) as failed:
        strategy_with(engine).set(context(secrets=secrets), pending_value())
    assert failed.value.step == "set"
    assert failed.value.reason == Reason.ADMIN_CREDENTIALS_MISSING
    assert "db-admin" in str(failed.value)
    assert fragment in str(failed.value)
    assert_no_secret(failed.value)
    assert engine.calls == []


def test_missing_admin_key_names_neither_the_other_keys_nor_values() -> None:
    secrets = {"db-admin": {"user": b"admin", "pass": ADMIN.password.encode()}}
    with pytest.raises(RotationStepFailed) as failed:
        strategy_with(FakeEngine()).set(context(secrets=secrets), pending_value())
    assert "has no key 'username' (it has 2 other keys" in str(failed.value)
    assert "'pass'" not in str(failed.value) and "'user'" not in str(failed.value)
    assert_no_secret(failed.value)


@pytest.mark.parametrize(
    ("pending", "fragment"),
    [
        (SecretValue.from_map({"username": b"app_b"}), "no 'password' key"),
        (SecretValue.from_map({"password": CANARY.encode()}), "no 'username' key"),
        (SecretValue.from_blob(CANARY.encode()), "no 'username' key"),
        (pending_value(username="intruder"), "'intruder', which is not in spec.database.usernames"),
        (pending_value(username="app_a"), "holds the current credentials"),
    ],
)
def test_set_refuses_a_pending_value_it_must_not_apply(pending: SecretValue, fragment: str) -> None:
    engine = FakeEngine()
    with pytest.raises(RotationStepFailed) as failed:
        strategy_with(engine).set(context(current=pending_value("app_a", "old")), pending)
    assert failed.value.reason == Reason.INVALID_PENDING_VALUE
    assert fragment in str(failed.value)
    assert_no_secret(failed.value)
    assert engine.calls == []


def test_single_mode_sets_the_current_account_in_place() -> None:
    engine = FakeEngine()
    spec = database_spec(mode="single", usernames=None, username="owner")
    strategy_with(engine).set(context(spec, current=pending_value("owner", "old")), pending_value("owner"))
    assert engine.calls == [("set_password", ADMIN, Credentials("owner", CANARY))]


def test_test_step_logs_in_as_the_pending_account_without_admin() -> None:
    engine = FakeEngine()
    strategy_with(engine).test(context(secrets={}), pending_value())
    assert engine.calls == [("check_login", None, ACCOUNT)]


@pytest.mark.parametrize("reason", list(Reason))
@pytest.mark.parametrize("step", ["set", "test"])
def test_engine_failures_become_step_failures_without_driver_context(reason: Reason, step: str) -> None:
    strategy = strategy_with(FakeEngine(DatabaseFailure(reason, "fixed sentence")))
    with pytest.raises(RotationStepFailed) as failed:
        getattr(strategy, step)(context(), pending_value())
    assert (failed.value.step, failed.value.reason) == (step, reason)
    assert str(failed.value) == f"{step} step failed: fixed sentence"
    assert failed.value.__context__ is None
    assert failed.value.__cause__ is None


def test_credentials_repr_hides_the_password() -> None:
    assert CANARY not in repr(ACCOUNT)
    assert "app_b" in repr(ACCOUNT)


# --- PostgreSQL: statements, options, error mapping --------------------------------------------------------

PG = Endpoint("postgresql", "pg.db.svc", 5432, None, SslMode.PREFER)


@pytest.mark.parametrize(
    ("role", "rendered"),
    [
        ("app", '"app"'),
        ('app"x', '"app""x"'),
        ("app x", '"app x"'),
        ("App; DROP ROLE postgres; --", '"App; DROP ROLE postgres; --"'),
    ],
)
def test_postgres_role_names_are_quoted_identifiers(role: str, rendered: str) -> None:
    statement = sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), sql.Literal("SCRAM$v'1"))
    assert statement.as_string(None) == f"ALTER ROLE {rendered} WITH PASSWORD 'SCRAM$v''1'"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("disable", "disable"), ("prefer", "prefer"), ("require", "require"), ("verify-full", "verify-full")],
)
def test_postgres_connection_parameters(mode: str, expected: str) -> None:
    endpoint = Endpoint("postgresql", "pg.db.svc", 5433, None, SslMode(mode))
    params = _postgres.connection_parameters(endpoint, ACCOUNT)
    assert params["sslmode"] == expected
    assert params["connect_timeout"] == 10
    assert params["dbname"] == "postgres"
    assert (params["host"], params["port"], params["user"]) == ("pg.db.svc", 5433, "app_b")
    assert params["autocommit"] is True
    assert ("sslrootcert" in params) == (mode == "verify-full" and psycopg.pq.version() >= 160000)


def test_postgres_connects_to_the_configured_database() -> None:
    endpoint = Endpoint("postgresql", "pg", 5432, "shop", SslMode.DISABLE)
    assert _postgres.connection_parameters(endpoint, ACCOUNT)["dbname"] == "shop"


@pytest.mark.parametrize(
    ("sqlstate", "reason"),
    [
        ("42501", Reason.PERMISSION_DENIED),
        ("42704", Reason.ACCOUNT_MISSING),
        ("57014", Reason.DATABASE_UNREACHABLE),
        ("08006", Reason.DATABASE_UNREACHABLE),
        (None, Reason.DATABASE_UNREACHABLE),
        ("55P03", Reason.DATABASE_ERROR),
        ("XX000", Reason.DATABASE_ERROR),
    ],
)
def test_postgres_alter_role_failures_by_sqlstate(sqlstate: str | None, reason: Reason) -> None:
    failure = _postgres._alter_failure(sqlstate, PG, ADMIN, "app_b")
    assert failure.reason == reason
    assert "app_b" in failure.message
    assert f"SQLSTATE {sqlstate or 'unknown'}" in failure.message


class _FakePgResult:
    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row

    def fetchone(self) -> tuple[Any, ...]:
        return self.row


class _FakePgConn:
    """Enough of a psycopg connection for ``_alter_role``; raises ``error`` on ALTER ROLE."""

    def __init__(self, error: Exception | None, superuser: bool = True) -> None:
        self.error = error
        self.superuser = superuser
        self.statements: list[str] = []
        self.pgconn = self

    def encrypt_password(self, password: bytes, user: bytes, algorithm: bytes | None = None) -> bytes:
        return b"SCRAM-SHA-256$4096:c2FsdA==$stored:server"

    def execute(self, query: Any) -> _FakePgResult:
        text = query if isinstance(query, str) else query.as_string(None)
        self.statements.append(text)
        if text.startswith("ALTER ROLE") and self.error is not None:
            raise self.error
        return _FakePgResult(("on" if self.superuser else "off",))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            psycopg.errors.InsufficientPrivilege(f"permission denied; PASSWORD '{CANARY}'"),
            Reason.PERMISSION_DENIED,
        ),
        (psycopg.errors.UndefinedObject(f"role does not exist; {CANARY}"), Reason.ACCOUNT_MISSING),
        (psycopg.errors.SyntaxError(f"syntax error at or near '{CANARY}'"), Reason.DATABASE_ERROR),
        (psycopg.OperationalError(f"server closed the connection {CANARY}"), Reason.DATABASE_UNREACHABLE),
    ],
)
def test_postgres_alter_role_never_passes_on_driver_text(error: Exception, reason: Reason) -> None:
    failure = _postgres._alter_role(_FakePgConn(error), PG, ADMIN, ACCOUNT)  # type: ignore[arg-type]
    assert failure is not None
    assert failure.reason == reason
    assert_no_secret(failure)


def test_postgres_sends_only_the_verifier_and_quiets_the_log_as_superuser() -> None:
    conn = _FakePgConn(None, superuser=True)
    assert _postgres._alter_role(conn, PG, ADMIN, Credentials('app"x', CANARY)) is None  # type: ignore[arg-type]
    assert conn.statements[-1] == 'ALTER ROLE "app""x" WITH PASSWORD \'SCRAM-SHA-256$4096:c2FsdA==$stored:server\''
    assert "SET log_statement = 'none'" in conn.statements
    assert not any(CANARY in statement for statement in conn.statements)


def test_postgres_leaves_log_settings_alone_for_a_non_superuser() -> None:
    conn = _FakePgConn(None, superuser=False)
    assert _postgres._alter_role(conn, PG, ADMIN, ACCOUNT) is None  # type: ignore[arg-type]
    assert not any(statement.startswith("SET log_") for statement in conn.statements)


@pytest.mark.parametrize(
    ("used_password", "reason"),
    [(True, Reason.ADMIN_LOGIN_FAILED), (False, Reason.DATABASE_UNREACHABLE)],
)
def test_postgres_login_failures_are_told_apart_by_whether_a_password_was_asked(
    monkeypatch: pytest.MonkeyPatch, used_password: bool, reason: Reason
) -> None:
    class FakeFailedPgconn:
        def __init__(self) -> None:
            self.used_password = used_password

    def failing_connect(**params: Any) -> None:
        text = f"FATAL: password authentication failed ({params['password']})"
        raise psycopg.OperationalError(text, pgconn=FakeFailedPgconn())  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg, "connect", failing_connect)
    with pytest.raises(DatabaseFailure) as failed:
        _postgres.PostgresEngine().set_password(PG, ADMIN, ACCOUNT)
    assert failed.value.reason == reason
    assert "'admin'" in failed.value.message
    assert_no_secret(failed.value)


# --- MySQL/MariaDB: statements, options, error mapping -----------------------------------------------------

MY = Endpoint("mysql", "mysql.db.svc", 3306, "shop", SslMode.PREFER)


def test_native_password_hash_matches_the_server() -> None:
    # SELECT PASSWORD('password') on MariaDB / MySQL 5.7
    assert _mysql.native_password_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_mysql_connection_parameters_by_ssl_mode() -> None:
    def params(mode: str) -> dict[str, Any]:
        endpoint = Endpoint("mysql", "mysql.db.svc", 3307, None, SslMode(mode))
        return _mysql.connection_parameters(endpoint, ACCOUNT, None)

    assert params("disable")["ssl_disabled"] is True
    assert "ssl" not in params("prefer")
    assert "ssl_disabled" not in params("prefer")
    required = params("require")["ssl"]
    assert isinstance(required, ssl.SSLContext)
    assert (required.verify_mode, required.check_hostname) == (ssl.CERT_NONE, False)
    verified = params("verify-full")["ssl"]
    assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, True)
    base = params("prefer")
    assert base["connect_timeout"] == 10
    assert base["password"] == CANARY.encode()
    assert (base["host"], base["port"], base["user"]) == ("mysql.db.svc", 3307, "app_b")
    assert "database" not in base
    assert _mysql.connection_parameters(MY, ACCOUNT, "shop")["database"] == "shop"


class _FakeCursor:
    """Answers the statements ``_alter_user`` runs: ``errors`` maps a statement prefix to the error it raises."""

    def __init__(self, rows: list[tuple[Any, ...]], errors: dict[str, Exception] | None = None) -> None:
        self.rows = rows
        self.errors = errors or {}
        self.executed: list[tuple[str, Any]] = []

    def __enter__(self) -> _FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, query: str, params: Any = None) -> None:
        self.executed.append((query, params))
        for prefix, error in self.errors.items():
            if query.startswith(prefix):
                raise error

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class _FakeMyConn:
    def __init__(self, cursor: _FakeCursor) -> None:
        self._cursor = cursor

    def cursor(self) -> _FakeCursor:
        return self._cursor


def _denied(errno: int) -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(errno, f"Access denied near 'IDENTIFIED BY '{CANARY}''")


def test_mysql_alters_every_host_of_the_user_sending_native_hashes() -> None:
    cursor = _FakeCursor([("localhost", "mysql_native_password"), ("%", "caching_sha2_password")])
    assert _mysql._alter_user(_FakeMyConn(cursor), MY, ADMIN, Credentials("app`x", CANARY)) is None
    queries = [query for query, _ in cursor.executed]
    assert queries[0] == "SET SESSION sql_log_off = ON"
    assert cursor.executed[1][1] == ("app`x",)
    alter, params = cursor.executed[-1]
    assert alter == ("ALTER USER %s@%s IDENTIFIED BY %s, %s@%s IDENTIFIED WITH mysql_native_password AS %s")
    assert params == ["app`x", "%", CANARY, "app`x", "localhost", _mysql.native_password_hash(CANARY)]
    assert not any(CANARY in query for query in queries)  # the password is only ever a parameter


def test_mysql_assumes_any_host_when_mysql_user_is_unreadable() -> None:
    cursor = _FakeCursor([], {"SELECT": _denied(1142), "SET SESSION": _denied(1227)})
    assert _mysql._alter_user(_FakeMyConn(cursor), MY, ADMIN, ACCOUNT) is None
    assert cursor.executed[-1] == ("ALTER USER %s@%s IDENTIFIED BY %s", ["app_b", "%", CANARY])


def test_mysql_account_missing_when_mysql_user_has_no_row() -> None:
    cursor = _FakeCursor([])
    failure = _mysql._alter_user(_FakeMyConn(cursor), MY, ADMIN, ACCOUNT)
    assert failure is not None
    assert failure.reason == Reason.ACCOUNT_MISSING
    assert not any(query.startswith("ALTER") for query, _ in cursor.executed)


@pytest.mark.parametrize(
    ("errno", "reason"),
    [
        (1227, Reason.PERMISSION_DENIED),
        (1044, Reason.PERMISSION_DENIED),
        (1142, Reason.PERMISSION_DENIED),
        (1396, Reason.ACCOUNT_MISSING),
        (2013, Reason.DATABASE_UNREACHABLE),
        (1064, Reason.DATABASE_ERROR),
    ],
)
def test_mysql_alter_user_failures_by_errno(errno: int, reason: Reason) -> None:
    cursor = _FakeCursor([("%", "mysql_native_password")], {"ALTER USER": _denied(errno)})
    failure = _mysql._alter_user(_FakeMyConn(cursor), MY, ADMIN, ACCOUNT)
    assert failure is not None
    assert failure.reason == reason
    assert f"error {errno}" in failure.message
    assert_no_secret(failure)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_denied(1045), Reason.ADMIN_LOGIN_FAILED),
        (_denied(1130), Reason.ADMIN_LOGIN_FAILED),
        (pymysql.err.OperationalError(2003, f"Can't connect {CANARY}"), Reason.DATABASE_UNREACHABLE),
        (pymysql.err.OperationalError(2026, f"SSL is required {CANARY}"), Reason.DATABASE_UNREACHABLE),
        (ssl.SSLError(f"handshake {CANARY}"), Reason.DATABASE_UNREACHABLE),
        (RuntimeError(f"cryptography is required {CANARY}"), Reason.DATABASE_UNREACHABLE),
    ],
)
def test_mysql_connect_failures(monkeypatch: pytest.MonkeyPatch, error: Exception, reason: Reason) -> None:
    def failing_connect(**params: Any) -> None:
        raise error

    monkeypatch.setattr(pymysql, "connect", failing_connect)
    with pytest.raises(DatabaseFailure) as failed:
        _mysql.MySQLEngine().set_password(MY, ADMIN, ACCOUNT)
    assert failed.value.reason == reason
    assert_no_secret(failed.value)


def test_mysql_test_login_refused_names_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_connect(**params: Any) -> None:
        raise _denied(1044)

    monkeypatch.setattr(pymysql, "connect", failing_connect)
    with pytest.raises(DatabaseFailure) as failed:
        _mysql.MySQLEngine().check_login(MY, ACCOUNT)
    assert failed.value.reason == Reason.TEST_LOGIN_FAILED
    assert "database 'shop'" in failed.value.message
    assert_no_secret(failed.value)
