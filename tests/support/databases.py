"""Real PostgreSQL and MariaDB servers for tests: connection details and admin helpers (hack/databases.sh)."""

from __future__ import annotations

import abc
import contextlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "databases.sh"
REQUIRED_ENV = (
    "MSO_PG_HOST",
    "MSO_PG_PORT",
    "MSO_PG_USER",
    "MSO_PG_PASSWORD",
    "MSO_MYSQL_HOST",
    "MSO_MYSQL_PORT",
    "MSO_MYSQL_USER",
    "MSO_MYSQL_PASSWORD",
)
TEST_DATABASE = "mso_rotation"
ADMIN_SECRET = "db-admin"
ROTATIONS = 5


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip().removeprefix("export ")
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@contextlib.contextmanager
def database_servers(prefix: str = "mso-test-databases-") -> Iterator[dict[str, str]]:
    """Connection details of both servers: from the environment (``hack/databases.sh env``, as CI exports them),
    or from servers started here with ``hack/databases.sh up`` and stopped on exit. Never a skip: a server that
    does not start fails the test."""
    if all(os.environ.get(key) for key in REQUIRED_ENV):
        yield {key: value for key, value in os.environ.items() if key.startswith(("MSO_PG_", "MSO_MYSQL_"))}
        return
    state = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "up", "--dir", str(state)],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if started.returncode != 0:
            pytest.fail(f"hack/databases.sh up failed ({started.returncode}):\n{started.stderr[-4000:]}")
        yield read_env_file(Path(started.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "down", "--dir", str(state)], capture_output=True, timeout=300, check=False
        )


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Server(abc.ABC):
    """One database server and an admin connection for setting tests up; names are never interpolated."""

    engine: str

    def __init__(self, env: Mapping[str, str], prefix: str) -> None:
        self.host = env[f"{prefix}_HOST"]
        self.port = int(env[f"{prefix}_PORT"])
        self.admin_user = env[f"{prefix}_USER"]
        self.admin_password = env[f"{prefix}_PASSWORD"]
        log = env.get(f"{prefix}_LOG")
        self.log_path = Path(log) if log else None
        self.accounts: list[str] = []

    def spec(self, **overrides: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "engine": self.engine,
            "host": self.host,
            "port": self.port,
            "database": TEST_DATABASE,
            "mode": "dual",
            "adminSecretRef": {"name": ADMIN_SECRET},
            "passwordPolicy": {},
            "sslMode": "prefer",
        }
        spec.update(overrides)
        return {key: value for key, value in spec.items() if value is not None}

    def admin_secret(self, username: str | None = None, password: str | None = None) -> dict[str, bytes]:
        return {
            "username": (username or self.admin_user).encode(),
            "password": (password or self.admin_password).encode(),
        }

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    @abc.abstractmethod
    def can_login(self, username: str, password: str) -> bool: ...

    @abc.abstractmethod
    def create_account(self, name: str) -> None:
        """A login account without a password, allowed to read the test table (same grants for all)."""

    @abc.abstractmethod
    def create_weak_admin(self, name: str, password: str) -> None:
        """An account that may log in and read the test table but not change other accounts' passwords."""

    @abc.abstractmethod
    def drop_accounts(self) -> None: ...


class Postgres(Server):
    engine = "postgresql"

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env, "MSO_PG")
        with self._admin("postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DATABASE,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEST_DATABASE)))
        with self._admin() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS items (id integer)")

    def _admin(self, database: str = TEST_DATABASE) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.admin_user,
            password=self.admin_password,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )

    def setting(self, name: str) -> str:
        with self._admin() as conn:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    def can_login(self, username: str, password: str) -> bool:
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=username,
                password=password,
                dbname=TEST_DATABASE,
                connect_timeout=10,
            ) as conn:
                return conn.execute("SELECT count(*) FROM items").fetchone() is not None
        except psycopg.OperationalError:
            return False

    def create_account(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            conn.execute(sql.SQL("GRANT SELECT ON items TO {}").format(sql.Identifier(name)))
        self.accounts.append(name)

    def create_weak_admin(self, name: str, password: str) -> None:
        with self._admin() as conn:
            # Only the verifier is sent, so the password stays out of this server's statement log too.
            verifier = conn.pgconn.encrypt_password(password.encode(), name.encode()).decode()
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(verifier)
                )
            )
            conn.execute(sql.SQL("GRANT SELECT ON items TO {}").format(sql.Identifier(name)))
        self.accounts.append(name)

    def drop_accounts(self) -> None:
        with self._admin() as conn:
            for name in self.accounts:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        self.accounts.clear()


class MariaDB(Server):
    engine = "mysql"

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env, "MSO_MYSQL")
        with self._admin() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {TEST_DATABASE}")
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {TEST_DATABASE}.items (id INT)")

    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        conn = pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.admin_user,
            password=self.admin_password,
            autocommit=True,
            connect_timeout=10,
        )
        try:
            with conn.cursor() as cursor:
                yield cursor
        finally:
            conn.close()

    def execute_as_admin(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._admin() as cursor:
            cursor.execute(query, params)
            return list(cursor.fetchall())

    def can_login(self, username: str, password: str) -> bool:
        try:
            conn = pymysql.connect(
                host=self.host,
                port=self.port,
                user=username,
                password=password.encode(),
                database=TEST_DATABASE,
                connect_timeout=10,
            )
        except pymysql.MySQLError:
            return False
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM items")
                return cursor.fetchone() is not None
        finally:
            conn.close()

    def create_account(self, name: str) -> None:
        with self._admin() as cursor:
            cursor.execute("CREATE USER %s@'%%'", (name,))
            cursor.execute(f"GRANT SELECT ON {TEST_DATABASE}.items TO %s@'%%'", (name,))
        self.accounts.append(name)

    def create_weak_admin(self, name: str, password: str) -> None:
        with self._admin() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (name, password))
            cursor.execute(f"GRANT SELECT ON {TEST_DATABASE}.items TO %s@'%%'", (name,))
        self.accounts.append(name)

    def drop_accounts(self) -> None:
        with self._admin() as cursor:
            for name in self.accounts:
                cursor.execute("DROP USER IF EXISTS %s@'%%'", (name,))
        self.accounts.clear()
