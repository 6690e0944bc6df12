"""The Database strategy against real PostgreSQL and MariaDB servers, with no Kubernetes.

The servers come from the environment (``MSO_PG_*`` and ``MSO_MYSQL_*``, as ``hack/databases.sh env`` writes
them) or, when those are not set, the session fixture starts them with ``hack/databases.sh up`` in a temporary
directory and stops them afterwards. Each test drives the strategy's steps the way the rotation engine does,
with a ``RotationContext`` whose ``read_secret`` hands out the admin credentials, and checks the effect by
logging in. Every password a test generates is looked for, afterwards, in the server logs it can read.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from psycopg import sql

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.strategies.database import DatabaseStrategy
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed
from support.databases import (
    ADMIN_SECRET,
    ROTATIONS,
    MariaDB,
    Postgres,
    Server,
    unique,
)

pytestmark = pytest.mark.integration


@dataclass
class Rotation:
    """Runs the strategy's steps as the rotation engine does, and remembers every password it produced."""

    server: Server
    spec: dict[str, Any]
    admin: dict[str, bytes]
    passwords: list[str] = field(default_factory=list)
    strategy: DatabaseStrategy = field(default_factory=DatabaseStrategy)

    def context(self, current: SecretValue | None = None, previous: SecretValue | None = None) -> RotationContext:
        secrets = {ADMIN_SECRET: self.admin}

        def read_secret(name: str) -> Mapping[str, bytes]:
            return secrets[name]

        return RotationContext(
            "team/db", "v-test", self.spec, current=current, previous=previous, read_secret=read_secret
        )

    def _remember(self, value: SecretValue) -> SecretValue:
        self.passwords.append(value.as_dict()["password"].decode())
        return value

    def initial(self) -> SecretValue:
        ctx = self.context()
        value = self._remember(self.strategy.initial(ctx))
        self.strategy.set(ctx, value)
        self.strategy.test(ctx, value)
        return value

    def create(self, current: SecretValue, previous: SecretValue | None = None) -> SecretValue:
        return self._remember(self.strategy.create(self.context(current, previous)))

    def rotate(self, current: SecretValue, previous: SecretValue | None = None) -> SecretValue:
        ctx = self.context(current, previous)
        pending = self._remember(self.strategy.create(ctx))
        self.strategy.set(ctx, pending)
        self.strategy.test(ctx, pending)
        self.strategy.finish(ctx, pending)
        return pending


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Iterator[Server]:
    chosen = servers[request.param]
    yield chosen
    chosen.drop_accounts()


@pytest.fixture
def rotations(server: Server) -> Iterator[list[Rotation]]:
    """Every ``Rotation`` a test makes; afterwards none of their passwords may be in the server's log."""
    made: list[Rotation] = []
    yield made
    log = server.log_text()
    for rotation in made:
        for password in rotation.passwords:
            assert password not in log, f"a generated password is in {server.log_path}"


def login(value: SecretValue) -> tuple[str, str]:
    data = value.as_dict()
    return data["username"].decode(), data["password"].decode()


def assert_clean(failure: RotationStepFailed, *secrets: str) -> None:
    text = f"{failure} {failure!r} {failure.args}"
    for secret in secrets:
        assert secret not in text
    assert failure.__context__ is None or failure.__suppress_context__
    assert failure.__cause__ is None


class LoginProbe(threading.Thread):
    """Logs in with "the current credentials" over and over, as an application that reads the projected
    Secret would. ``publish`` swaps them (the engine's finish step) and waits until the probe has logged in
    with the new ones, like applications picking the new Secret up before the next rotation."""

    def __init__(self, server: Server, current: SecretValue) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.current = login(current)
        self.generation = 0
        self.done_generation = -1
        self.attempts = 0
        self.failures: list[tuple[int, str]] = []
        self.stopping = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        while not self.stopping.is_set():
            generation, (username, password) = self.generation, self.current
            self.attempts += 1
            if not self.server.can_login(username, password):
                self.failures.append((generation, username))
            with self.progress:
                self.done_generation = generation
                self.progress.notify_all()
            time.sleep(0.005)

    def publish(self, value: SecretValue) -> None:
        with self.progress:
            self.current = login(value)
            self.generation += 1
            target = self.generation
            assert self.progress.wait_for(lambda: self.done_generation >= target, timeout=30)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


# --- dual mode ---------------------------------------------------------------------------------------------


def test_dual_mode_alternates_and_keeps_previous_credentials_valid(
    server: Server, rotations: list[Rotation]
) -> None:
    first, second = unique("mso_a"), unique("mso_b")
    server.create_account(first)
    server.create_account(second)
    rotation = Rotation(server, server.spec(usernames=[first, second]), server.admin_secret())
    rotations.append(rotation)

    current = rotation.initial()
    assert server.can_login(*login(current))
    previous: SecretValue | None = None
    accounts = [login(current)[0]]
    probe = LoginProbe(server, current)
    probe.start()
    try:
        for _ in range(ROTATIONS):
            pending = rotation.rotate(current, previous)
            # test passed: the engine moves the labels and re-projects; only now do clients see the new value
            probe.publish(pending)
            previous, current = current, pending
            accounts.append(login(current)[0])
            assert server.can_login(*login(current)), "the new ACSCurrent credentials must log in"
            assert server.can_login(*login(previous)), "the ACSPrevious credentials must still log in"
    finally:
        probe.stop()

    assert accounts == [first, second, first, second, first, second]
    assert probe.failures == []
    assert probe.attempts >= ROTATIONS
    assert len(set(rotation.passwords)) == ROTATIONS + 1


def test_dual_mode_set_is_idempotent(server: Server, rotations: list[Rotation]) -> None:
    first, second = unique("mso_a"), unique("mso_b")
    server.create_account(first)
    server.create_account(second)
    rotation = Rotation(server, server.spec(usernames=[first, second]), server.admin_secret())
    rotations.append(rotation)
    current = rotation.initial()
    ctx = rotation.context(current)
    pending = rotation.create(current)
    for _ in range(2):  # a crash after set: the engine resumes and sets the same value again
        rotation.strategy.set(ctx, pending)
    rotation.strategy.test(ctx, pending)
    assert server.can_login(*login(pending))
    assert server.can_login(*login(current))


@pytest.mark.parametrize(
    "names",
    [
        ('app"x', "app x"),
        ("app'x", "app`x"),
        ("app;x", "app\\x"),
    ],
    ids=["double-quote+space", "quote+backquote", "semicolon+backslash"],
)
def test_account_names_are_quoted(server: Server, rotations: list[Rotation], names: tuple[str, str]) -> None:
    suffix = uuid.uuid4().hex[:6]
    first, second = f"{names[0]}{suffix}", f"{names[1]}{suffix}"
    server.create_account(first)
    server.create_account(second)
    rotation = Rotation(server, server.spec(usernames=[first, second]), server.admin_secret())
    rotations.append(rotation)
    current = rotation.initial()
    pending = rotation.rotate(current)
    assert login(current)[0] == first
    assert login(pending)[0] == second
    assert server.can_login(*login(current))
    assert server.can_login(*login(pending))


@pytest.mark.parametrize(
    "policy",
    [
        {"length": 64, "excludeNumbers": True, "excludeUppercase": True, "excludeLowercase": True},
        {"length": 48, "includeSpace": True, "excludeLowercase": True, "excludeUppercase": True},
    ],
    ids=["punctuation-only", "with-space"],
)
def test_passwords_full_of_quotes_and_backslashes_work(
    server: Server, rotations: list[Rotation], policy: dict[str, Any]
) -> None:
    first, second = unique("mso_a"), unique("mso_b")
    server.create_account(first)
    server.create_account(second)
    rotation = Rotation(
        server, server.spec(usernames=[first, second], passwordPolicy=policy), server.admin_secret()
    )
    rotations.append(rotation)
    current = rotation.initial()
    pending = rotation.rotate(current)
    assert server.can_login(*login(current))
    assert server.can_login(*login(pending))


# --- single mode -------------------------------------------------------------------------------------------


def test_single_mode_changes_the_password_in_place(server: Server, rotations: list[Rotation]) -> None:
    owner = unique("mso_owner")
    server.create_account(owner)
    rotation = Rotation(server, server.spec(mode="single", username=owner), server.admin_secret())
    rotations.append(rotation)
    old = rotation.initial()
    new = rotation.rotate(old)
    assert login(new)[0] == login(old)[0] == owner
    assert server.can_login(*login(new))
    assert not server.can_login(*login(old))


# --- failures ----------------------------------------------------------------------------------------------


def test_admin_without_rights_gets_permission_denied(server: Server, rotations: list[Rotation]) -> None:
    owner, weak = unique("mso_owner"), unique("mso_weak")
    weak_password = f"WEAK-CANARY-{uuid.uuid4().hex}"
    server.create_account(owner)
    server.create_weak_admin(weak, weak_password)
    spec = server.spec(mode="single", username=owner)
    setup = Rotation(server, spec, server.admin_secret())
    rotations.append(setup)
    old = setup.initial()

    denied = Rotation(server, spec, server.admin_secret(weak, weak_password))
    rotations.append(denied)
    pending = denied.create(old)
    with pytest.raises(RotationStepFailed) as failed:
        denied.strategy.set(denied.context(old), pending)
    assert failed.value.reason == "PermissionDenied"
    assert failed.value.step == "set"
    assert weak in str(failed.value)
    assert_clean(failed.value, login(pending)[1], login(old)[1], weak_password)
    assert server.can_login(*login(old)), "a refused set must leave the password as it was"
    assert not server.can_login(*login(pending))
    assert weak_password not in server.log_text()


def test_wrong_admin_password_is_admin_login_failed(server: Server, rotations: list[Rotation]) -> None:
    owner = unique("mso_owner")
    server.create_account(owner)
    canary = f"ADMIN-CANARY-{uuid.uuid4().hex}"
    rotation = Rotation(server, server.spec(mode="single", username=owner), server.admin_secret(password=canary))
    rotations.append(rotation)
    with pytest.raises(RotationStepFailed) as failed:
        rotation.initial()
    assert failed.value.reason == "AdminLoginFailed"
    assert server.admin_user in str(failed.value)
    assert_clean(failed.value, canary, *rotation.passwords)
    assert canary not in server.log_text()


def test_missing_admin_secret_is_reported_before_connecting(server: Server, rotations: list[Rotation]) -> None:
    rotation = Rotation(server, server.spec(mode="single", username="nobody"), {})
    rotations.append(rotation)
    with pytest.raises(RotationStepFailed) as failed:
        rotation.initial()
    assert failed.value.reason == "AdminCredentialsMissing"
    assert ADMIN_SECRET in str(failed.value)


def test_missing_account_is_account_missing(server: Server, rotations: list[Rotation]) -> None:
    ghost = unique("mso_ghost")
    rotation = Rotation(server, server.spec(usernames=[ghost, unique("mso_ghost")]), server.admin_secret())
    rotations.append(rotation)
    with pytest.raises(RotationStepFailed) as failed:
        rotation.initial()
    assert failed.value.reason == "AccountMissing"
    assert ghost in str(failed.value)
    assert_clean(failed.value, *rotation.passwords)


def test_test_step_fails_when_the_password_was_never_set(server: Server, rotations: list[Rotation]) -> None:
    owner = unique("mso_owner")
    server.create_account(owner)
    rotation = Rotation(server, server.spec(mode="single", username=owner), server.admin_secret())
    rotations.append(rotation)
    current = rotation.initial()
    pending = rotation.create(current)
    with pytest.raises(RotationStepFailed) as failed:
        rotation.strategy.test(rotation.context(current), pending)  # set was skipped
    assert (failed.value.step, failed.value.reason) == ("test", "TestLoginFailed")
    assert_clean(failed.value, *rotation.passwords)


def test_tls_required_by_spec_but_not_offered(server: Server, rotations: list[Rotation]) -> None:
    owner = unique("mso_owner")
    server.create_account(owner)
    rotation = Rotation(
        server, server.spec(mode="single", username=owner, sslMode="require"), server.admin_secret()
    )
    rotations.append(rotation)
    with pytest.raises(RotationStepFailed) as failed:
        rotation.initial()  # the test servers have no TLS
    assert failed.value.reason == "DatabaseUnreachable"
    assert "sslMode require" in str(failed.value)


def test_closed_port_is_database_unreachable(server: Server, rotations: list[Rotation]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    rotation = Rotation(server, server.spec(mode="single", username="x", port=closed_port), server.admin_secret())
    rotations.append(rotation)
    with pytest.raises(RotationStepFailed) as failed:
        rotation.initial()
    assert failed.value.reason == "DatabaseUnreachable"
    assert f"127.0.0.1:{closed_port}" in str(failed.value)


# --- what reaches the server's logs ------------------------------------------------------------------------


def test_postgres_never_receives_the_password_in_clear(servers: dict[str, Server]) -> None:
    """The test server logs every statement; a non-superuser admin cannot turn that off for its session, so
    its ALTER ROLE is logged: with the SCRAM verifier, never the password."""
    server = servers["postgresql"]
    assert isinstance(server, Postgres)
    if server.setting("log_statement") != "all" or server.log_path is None:
        pytest.skip("this PostgreSQL server does not log every statement to a file we can read")
    owner, admin = unique("mso_owner"), unique("mso_roleadmin")
    admin_password = f"ROLEADMIN-{uuid.uuid4().hex}"
    server.create_account(owner)
    server.create_weak_admin(admin, admin_password)
    with server._admin() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(admin)))
    try:
        rotation = Rotation(
            server, server.spec(mode="single", username=owner), server.admin_secret(admin, admin_password)
        )
        current = rotation.initial()
        pending = rotation.rotate(current)
        assert server.can_login(*login(pending))
        log = server.log_text()
        assert f'ALTER ROLE "{owner}" WITH PASSWORD \'SCRAM-SHA-256$' in log
        for password in (*rotation.passwords, admin_password):
            assert password not in log
    finally:
        server.drop_accounts()


def test_mariadb_general_log_never_sees_the_password(servers: dict[str, Server]) -> None:
    """With the general query log on, an admin without SUPER (it cannot switch the log off for its session)
    sends only mysql_native_password hashes; a SUPER admin's session is not logged at all."""
    server = servers["mysql"]
    assert isinstance(server, MariaDB)
    if server.log_path is None:
        pytest.skip("no MSO_MYSQL_LOG: no directory known to the server to write a general log into")
    general_log = server.log_path.parent / f"general-{uuid.uuid4().hex[:6]}.log"
    owner, admin = unique("mso_owner"), unique("mso_useradmin")
    admin_password = f"USERADMIN-{uuid.uuid4().hex}"
    server.create_account(owner)
    server.create_weak_admin(admin, admin_password)
    server.execute_as_admin("GRANT CREATE USER ON *.* TO %s@'%%'", (admin,))
    server.execute_as_admin("GRANT SELECT ON mysql.user TO %s@'%%'", (admin,))
    spec = server.spec(mode="single", username=owner)
    server.execute_as_admin("SET GLOBAL general_log_file = %s", (str(general_log),))
    server.execute_as_admin("SET GLOBAL general_log = ON")
    try:
        by_user_admin = Rotation(server, spec, server.admin_secret(admin, admin_password))
        current = by_user_admin.initial()
        by_super_admin = Rotation(server, spec, server.admin_secret())
        pending = by_super_admin.rotate(current)
        assert server.can_login(*login(pending))
    finally:
        server.execute_as_admin("SET GLOBAL general_log = OFF")
        server.drop_accounts()
    log = general_log.read_text(errors="replace")
    general_log.unlink(missing_ok=True)
    assert "IDENTIFIED WITH mysql_native_password AS '*" in log  # the user admin's ALTER USER, hashed
    for password in (*by_user_admin.passwords, *by_super_admin.passwords):
        assert password not in log


def test_mariadb_admin_that_cannot_read_mysql_user_assumes_any_host(servers: dict[str, Server]) -> None:
    """Without SELECT on mysql.user the plugin is unknown: the password goes as an escaped literal to
    'user'@'%', and the rotation still works."""
    server = servers["mysql"]
    assert isinstance(server, MariaDB)
    owner, admin = unique("mso_owner"), unique("mso_useradmin")
    admin_password = f"USERADMIN-{uuid.uuid4().hex}"
    server.create_account(owner)
    server.create_weak_admin(admin, admin_password)
    server.execute_as_admin("GRANT CREATE USER ON *.* TO %s@'%%'", (admin,))
    try:
        spec = server.spec(mode="single", username=owner, passwordPolicy={"length": 40})
        rotation = Rotation(server, spec, server.admin_secret(admin, admin_password))
        current = rotation.initial()
        pending = rotation.rotate(current)
        assert server.can_login(*login(pending))
        assert not server.can_login(*login(current))
    finally:
        server.drop_accounts()
