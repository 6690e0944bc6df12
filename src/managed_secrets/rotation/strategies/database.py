"""The Database strategy: rotate the password of a PostgreSQL or MySQL/MariaDB account (``spec.database``).

The value is a map with ``engine``, ``host``, ``port``, ``username``, ``password`` and, when
``spec.database.database`` is set, ``dbname`` (the keys the CRD documents, as in AWS Secrets Manager's
database secrets), so the projected Secret can build a connection string.

Two modes, as in AWS Secrets Manager's rotation functions:

- **dual** (alternating users): two accounts with the same rights take turns. Each rotation gives a new
  password to the account that is *not* current (``usernames[1]`` when ``usernames[0]`` is current, else
  ``usernames[0]``) and then makes it current; the current credentials, which become ``ACSPrevious``, are
  not touched and keep working until the next rotation. The first value is for ``usernames[0]``.
- **single**: one account's password is changed in place. Clients that still hold the old password fail
  from the moment ``set`` runs until they read the new value: a short window that dual mode does not have.

Steps: ``initial``/``create`` only generate (with ``spec.database.passwordPolicy``); ``set`` logs in with the
admin credentials of ``spec.database.adminSecretRef`` and changes the password (idempotent: setting the same
password again is harmless); ``test`` logs in with the new credentials and runs ``SELECT 1``. The engine
modules (``_postgres``, ``_mysql``) say what reaches the server and its logs. Errors carry a fixed reason
(``Reason``) and a message that names accounts, servers and Secrets, never a password nor a driver's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from managed_secrets.domain import SecretValue
from managed_secrets.errors import InvalidPolicy
from managed_secrets.rotation.generators import PasswordPolicy, generate_password, policy_from_spec
from managed_secrets.rotation.strategies._db import (
    Credentials,
    DatabaseFailure,
    Endpoint,
    Engine,
    Reason,
    SslMode,
)
from managed_secrets.rotation.strategies._mysql import MySQLEngine
from managed_secrets.rotation.strategies._postgres import PostgresEngine
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, RotationStrategy, register

__all__ = [
    "DEFAULT_PORTS",
    "DatabaseConfig",
    "DatabaseStrategy",
    "Reason",
    "account_for_rotation",
    "database_value",
    "password_policy_from_spec",
]

DEFAULT_PORTS: Mapping[str, int] = {"postgresql": 5432, "mysql": 3306}
DUAL, SINGLE = "dual", "single"
_FIELD = "spec.database"


def _invalid(step: str, message: str) -> RotationStepFailed:
    return RotationStepFailed(step, Reason.INVALID_SPEC, message)


password_policy_from_spec = policy_from_spec


@dataclass(frozen=True)
class DatabaseConfig:
    """``spec.database`` as typed values. ``accounts`` holds the two dual-mode accounts or the single one."""

    endpoint: Endpoint
    mode: str
    accounts: tuple[str, ...]
    admin_secret: str
    admin_username_key: str
    admin_password_key: str
    policy: PasswordPolicy

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any], step: str) -> DatabaseConfig:
        """Parse ``raw`` (CRD defaults applied or not); ``RotationStepFailed(step, InvalidSpec)`` if unusable."""
        engine = raw.get("engine")
        if not isinstance(engine, str) or engine not in DEFAULT_PORTS:
            raise _invalid(step, f"{_FIELD}.engine must be one of {sorted(DEFAULT_PORTS)}, got {engine!r}")
        host = raw.get("host")
        if not isinstance(host, str) or not host:
            raise _invalid(step, f"{_FIELD}.host must be a non-empty string")
        port = raw.get("port", DEFAULT_PORTS[engine])
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _invalid(step, f"{_FIELD}.port must be an integer from 1 to 65535, got {port!r}")
        database = raw.get("database") or None
        if database is not None and not isinstance(database, str):
            raise _invalid(step, f"{_FIELD}.database must be a string")
        try:
            ssl_mode = SslMode(raw.get("sslMode", SslMode.PREFER.value))
        except ValueError:
            allowed = [mode.value for mode in SslMode]
            raise _invalid(
                step, f"{_FIELD}.sslMode must be one of {allowed}, got {raw.get('sslMode')!r}"
            ) from None
        mode = raw.get("mode", DUAL)
        if mode == DUAL:
            names = raw.get("usernames")
            if (
                not isinstance(names, list | tuple)
                or len(names) != 2
                or not all(isinstance(name, str) and name for name in names)
                or names[0] == names[1]
            ):
                raise _invalid(step, f"mode dual needs {_FIELD}.usernames: exactly two distinct account names")
            accounts: tuple[str, ...] = (names[0], names[1])
        elif mode == SINGLE:
            name = raw.get("username")
            if not isinstance(name, str) or not name:
                raise _invalid(step, f"mode single needs {_FIELD}.username: the account whose password is rotated")
            accounts = (name,)
        else:
            raise _invalid(step, f"{_FIELD}.mode must be 'dual' or 'single', got {mode!r}")
        ref = raw.get("adminSecretRef")
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
            raise _invalid(step, f"{_FIELD}.adminSecretRef.name must name a Secret")
        try:
            policy = password_policy_from_spec(raw.get("passwordPolicy"))
        except InvalidPolicy as exc:
            raise _invalid(step, f"{_FIELD}.passwordPolicy: {exc}") from None
        return cls(
            endpoint=Endpoint(engine=engine, host=host, port=port, database=database, ssl_mode=ssl_mode),
            mode=mode,
            accounts=accounts,
            admin_secret=ref["name"],
            admin_username_key=str(ref.get("usernameKey") or "username"),
            admin_password_key=str(ref.get("passwordKey") or "password"),
            policy=policy,
        )


def username_of(value: SecretValue | None) -> str | None:
    """The ``username`` a value holds, or ``None`` (no value, a binary value, no such key, not UTF-8)."""
    if value is None or not value.keys():
        return None
    raw = value.as_dict().get("username")
    return None if raw is None else _text(raw)


def _text(raw: bytes) -> str | None:
    """``raw`` as UTF-8 text, or ``None``. The UnicodeDecodeError (it holds the bytes) goes no further."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def account_for_rotation(config: DatabaseConfig, current: SecretValue | None) -> str:
    """The account whose password the next rotation changes: in dual mode, the one that is not current."""
    if config.mode == SINGLE:
        return config.accounts[0]
    first, second = config.accounts
    return second if username_of(current) == first else first


def database_value(config: DatabaseConfig, username: str, password: str) -> SecretValue:
    """The value stored for ``username``/``password``: everything a client needs to connect."""
    endpoint = config.endpoint
    data = {
        "engine": endpoint.engine,
        "host": endpoint.host,
        "port": str(endpoint.port),
        "username": username,
        "password": password,
    }
    if endpoint.database:
        data["dbname"] = endpoint.database
    return SecretValue.from_map({key: text.encode("utf-8") for key, text in data.items()})


def pending_credentials(
    config: DatabaseConfig, ctx: RotationContext, pending: SecretValue, step: str
) -> Credentials:
    """The account and password ``pending`` holds, checked against the spec (and, in dual mode, ACSCurrent)."""
    data = pending.as_dict() if pending.keys() else {}
    texts: dict[str, str] = {}
    for key in ("username", "password"):
        raw = data.get(key)
        if not raw:
            raise RotationStepFailed(step, Reason.INVALID_PENDING_VALUE, f"the pending value has no {key!r} key")
        text = _text(raw)
        if text is None:
            raise RotationStepFailed(
                step, Reason.INVALID_PENDING_VALUE, f"the pending value's {key!r} is not UTF-8 text"
            )
        texts[key] = text
    username = texts["username"]
    if username not in config.accounts:
        raise RotationStepFailed(
            step,
            Reason.INVALID_PENDING_VALUE,
            f"the pending value is for account {username!r}, which is not in {_FIELD}"
            f".{'usernames' if config.mode == DUAL else 'username'}",
        )
    if config.mode == DUAL and step == "set" and username == username_of(ctx.current):
        raise RotationStepFailed(
            step,
            Reason.INVALID_PENDING_VALUE,
            f"the pending value is for account {username!r}, which holds the current credentials; in mode dual"
            f" the other account's password is changed, so the current one keeps working",
        )
    return Credentials(username=username, password=texts["password"])


def admin_credentials(config: DatabaseConfig, ctx: RotationContext, step: str) -> Credentials:
    """The admin account from ``adminSecretRef``. A missing Secret (``{}`` or ``LookupError``) or key fails."""
    name = config.admin_secret
    try:
        data = ctx.read_secret(name)
    except LookupError:
        data = {}
    texts: dict[str, str] = {}
    for key in (config.admin_username_key, config.admin_password_key):
        raw = data.get(key)
        if not raw:
            # The Secret's other key names are not listed: the requester may not be allowed to read it.
            found = "the Secret does not exist or is empty" if not data else f"it has {len(data)} other keys"
            raise RotationStepFailed(
                step,
                Reason.ADMIN_CREDENTIALS_MISSING,
                f"admin Secret {name!r} has no key {key!r} ({found}; see {_FIELD}.adminSecretRef)",
            )
        text = _text(raw)
        if text is None:
            raise RotationStepFailed(
                step, Reason.ADMIN_CREDENTIALS_MISSING, f"key {key!r} of admin Secret {name!r} is not UTF-8 text"
            )
        texts[key] = text
    return Credentials(username=texts[config.admin_username_key], password=texts[config.admin_password_key])


@register
class DatabaseStrategy(RotationStrategy):
    """Passwords of PostgreSQL and MySQL/MariaDB accounts, in dual (alternating) or single mode."""

    name = "database"
    engines: ClassVar[Mapping[str, Engine]] = {"postgresql": PostgresEngine(), "mysql": MySQLEngine()}

    def initial(self, ctx: RotationContext) -> SecretValue:
        config = DatabaseConfig.from_spec(ctx.config, "initial")
        return self._new_value(config, ctx, config.accounts[0])

    def create(self, ctx: RotationContext) -> SecretValue:
        config = DatabaseConfig.from_spec(ctx.config, "create")
        return self._new_value(config, ctx, account_for_rotation(config, ctx.current))

    def set(self, ctx: RotationContext, pending: SecretValue) -> None:
        config = DatabaseConfig.from_spec(ctx.config, "set")
        account = pending_credentials(config, ctx, pending, "set")
        admin = admin_credentials(config, ctx, "set")
        self._run("set", lambda engine: engine.set_password(config.endpoint, admin, account), config)

    def test(self, ctx: RotationContext, pending: SecretValue) -> None:
        config = DatabaseConfig.from_spec(ctx.config, "test")
        account = pending_credentials(config, ctx, pending, "test")
        self._run("test", lambda engine: engine.check_login(config.endpoint, account), config)

    def _new_value(self, config: DatabaseConfig, ctx: RotationContext, username: str) -> SecretValue:
        return database_value(config, username, generate_password(config.policy, ctx.rng))

    def _run(self, step: str, action: Callable[[Engine], None], config: DatabaseConfig) -> None:
        engine = self.engines[config.endpoint.engine]
        try:
            action(engine)
        except DatabaseFailure as exc:
            reason, message = exc.reason, exc.message
        else:
            return
        # Raised outside the except block: no driver exception rides along as __context__.
        raise RotationStepFailed(step, reason, message)
