"""The Database strategy without a database: reading spec.database, choosing the account, the value's shape."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.generators import PasswordPolicy
from managed_secrets.rotation.strategies._db import Credentials, Endpoint, SslMode
from managed_secrets.rotation.strategies.database import (
    DatabaseConfig,
    DatabaseStrategy,
    account_for_rotation,
    database_value,
    password_policy_from_spec,
)
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, get_strategy


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


def context(config: Mapping[str, Any], current: SecretValue | None = None, seed: int = 7) -> RotationContext:
    return RotationContext("team/db", "v2", config, current=current, rng=random.Random(seed))


def account_value(username: str) -> SecretValue:
    return SecretValue.from_map({"username": username.encode(), "password": b"x"})


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_password(self, endpoint: Endpoint, admin: Credentials, account: Credentials) -> None:
        self.calls.append("set_password")

    def check_login(self, endpoint: Endpoint, account: Credentials) -> None:
        self.calls.append("check_login")


def test_registered_under_database() -> None:
    assert isinstance(get_strategy("database"), DatabaseStrategy)


@pytest.mark.parametrize(
    ("overrides", "port"),
    [
        ({"engine": "postgresql"}, 5432),
        ({"engine": "mysql"}, 3306),
        ({"engine": "mysql", "port": 3307}, 3307),
        ({"engine": "postgresql", "port": 6432}, 6432),
    ],
)
def test_port_defaults_by_engine(overrides: dict[str, Any], port: int) -> None:
    assert DatabaseConfig.from_spec(database_spec(**overrides), "create").endpoint.port == port


def test_spec_is_read_with_crd_defaults_missing() -> None:
    raw = {"engine": "mysql", "host": "h", "usernames": ["a", "b"], "adminSecretRef": {"name": "adm"}}
    config = DatabaseConfig.from_spec(raw, "create")
    assert config.mode == "dual"
    assert config.accounts == ("a", "b")
    assert config.endpoint == Endpoint("mysql", "h", 3306, None, SslMode.PREFER)
    assert (config.admin_secret, config.admin_username_key, config.admin_password_key) == (
        "adm",
        "username",
        "password",
    )
    assert config.policy == PasswordPolicy()


def test_password_policy_from_crd_names() -> None:
    raw = {
        "length": 20,
        "excludeCharacters": "'\"\\@",
        "excludeNumbers": True,
        "excludePunctuation": False,
        "excludeUppercase": True,
        "excludeLowercase": False,
        "includeSpace": True,
        "requireEachIncludedType": False,
    }
    assert password_policy_from_spec(raw) == PasswordPolicy(
        length=20,
        exclude_characters="'\"\\@",
        exclude_numbers=True,
        exclude_uppercase=True,
        include_space=True,
        require_each_included_type=False,
    )
    assert password_policy_from_spec({}) == password_policy_from_spec(None) == PasswordPolicy()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"engine": "oracle"}, "spec.database.engine"),
        ({"engine": None}, "spec.database.engine"),
        ({"host": ""}, "spec.database.host"),
        ({"port": 0}, "spec.database.port"),
        ({"port": "5432"}, "spec.database.port"),
        ({"port": True}, "spec.database.port"),
        ({"sslMode": "allow"}, "spec.database.sslMode"),
        ({"mode": "triple"}, "spec.database.mode"),
        ({"usernames": ["only"]}, "exactly two distinct"),
        ({"usernames": ["same", "same"]}, "exactly two distinct"),
        ({"usernames": ["a", ""]}, "exactly two distinct"),
        ({"usernames": None}, "exactly two distinct"),
        ({"mode": "single", "usernames": None}, "spec.database.username"),
        ({"adminSecretRef": None}, "adminSecretRef.name"),
        ({"adminSecretRef": {"usernameKey": "u"}}, "adminSecretRef.name"),
        ({"passwordPolicy": {"length": 2}}, "spec.database.passwordPolicy"),
        ({"passwordPolicy": {"excludeCharacters": "abcdefghijklmnopqrstuvwxyz"}}, "passwordPolicy"),
    ],
)
def test_unusable_spec_fails_with_invalid_spec(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(RotationStepFailed) as failed:
        DatabaseConfig.from_spec(database_spec(**overrides), "create")
    assert failed.value.step == "create"
    assert failed.value.reason == "InvalidSpec"
    assert fragment in str(failed.value)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, "app_a"),
        (account_value("app_a"), "app_b"),
        (account_value("app_b"), "app_a"),
        (account_value("someone_else"), "app_a"),  # usernames changed since: start over with the first
        (SecretValue.from_map({"password": b"x"}), "app_a"),
        (SecretValue.from_blob(b"opaque"), "app_a"),
        (SecretValue.from_map({"username": b"\xff\xfe"}), "app_a"),
    ],
)
def test_dual_mode_changes_the_account_that_is_not_current(current: SecretValue | None, expected: str) -> None:
    config = DatabaseConfig.from_spec(database_spec(), "create")
    assert account_for_rotation(config, current) == expected


@pytest.mark.parametrize("current", [None, account_value("owner"), account_value("other")])
def test_single_mode_always_changes_its_one_account(current: SecretValue | None) -> None:
    config = DatabaseConfig.from_spec(database_spec(mode="single", usernames=None, username="owner"), "create")
    assert account_for_rotation(config, current) == "owner"


def test_initial_is_for_the_first_account_and_create_alternates() -> None:
    strategy = DatabaseStrategy()
    spec = database_spec()
    value = strategy.initial(context(spec))
    seen = [value.as_dict()["username"]]
    for _ in range(4):
        value = strategy.create(context(spec, current=value))
        seen.append(value.as_dict()["username"])
    assert seen == [b"app_a", b"app_b", b"app_a", b"app_b", b"app_a"]


def test_single_mode_initial_and_create_keep_the_account() -> None:
    strategy = DatabaseStrategy()
    spec = database_spec(mode="single", usernames=None, username="owner")
    first = strategy.initial(context(spec))
    second = strategy.create(context(spec, current=first, seed=8))
    assert first.as_dict()["username"] == second.as_dict()["username"] == b"owner"
    assert first.as_dict()["password"] != second.as_dict()["password"]


def test_value_holds_what_a_client_needs_as_utf8_bytes() -> None:
    value = DatabaseStrategy().initial(
        context(database_spec(engine="mysql", host="mysql.db.svc", database="shop"))
    )
    data = value.as_dict()
    assert set(data) == {"engine", "host", "port", "dbname", "username", "password"}
    assert data["engine"] == b"mysql"
    assert data["host"] == b"mysql.db.svc"
    assert data["port"] == b"3306"
    assert data["dbname"] == b"shop"
    assert data["username"] == b"app_a"
    assert len(data["password"].decode("utf-8")) == 32


def test_value_has_no_dbname_when_no_database_is_set() -> None:
    value = DatabaseStrategy().initial(context(database_spec()))
    assert set(value.keys()) == {"engine", "host", "port", "username", "password"}


def test_password_follows_the_policy_and_the_injected_rng() -> None:
    spec = database_spec(passwordPolicy={"length": 12, "excludePunctuation": True})
    first = DatabaseStrategy().initial(context(spec, seed=1)).as_dict()["password"].decode()
    again = DatabaseStrategy().initial(context(spec, seed=1)).as_dict()["password"].decode()
    other = DatabaseStrategy().initial(context(spec, seed=2)).as_dict()["password"].decode()
    assert first == again != other
    assert len(first) == 12
    assert first.isalnum()


def test_database_value_builder() -> None:
    config = DatabaseConfig.from_spec(database_spec(port=5433, database="app"), "create")
    value = database_value(config, 'app"x', "pw é")
    assert value.as_dict() == {
        "engine": b"postgresql",
        "host": b"db.example.svc",
        "port": b"5433",
        "dbname": b"app",
        "username": b'app"x',
        "password": "pw é".encode(),
    }


def test_initial_and_create_touch_no_database() -> None:
    engine = RecordingEngine()

    class Offline(DatabaseStrategy):
        engines = {"postgresql": engine, "mysql": engine}

    strategy = Offline()
    spec = database_spec()
    strategy.create(context(spec, current=strategy.initial(context(spec))))
    assert engine.calls == []


def test_value_repr_shows_no_password() -> None:
    value = DatabaseStrategy().initial(context(database_spec()))
    assert value.as_dict()["password"].decode() not in repr(value)
