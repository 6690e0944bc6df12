"""Rendering the projected Secret: keys, templates, previous keys, annotations, and no values in errors."""

from __future__ import annotations

import pytest

from managed_secrets.domain import SecretValue
from managed_secrets.names import (
    DATA_HASH_ANNOTATION,
    OWNER_ANNOTATION,
    PREVIOUS_VERSION_ANNOTATION,
    VERSION_ANNOTATION,
)
from managed_secrets.projection import RenderError, TargetSpec, data_hash, render

HASH_KEY = b"k" * 32
CANARY = "CANARY-7f3a9"


def run(target: TargetSpec, current: dict[str, bytes], previous: dict[str, bytes] | None = None):  # type: ignore[no-untyped-def]
    return render(
        owner_namespace="team",
        owner_name="db",
        target=target,
        current=SecretValue.from_map(current),
        current_version="v3",
        previous=SecretValue.from_map(previous) if previous else None,
        previous_version="v2" if previous else None,
        hash_key=HASH_KEY,
    )


def test_plain_keys_and_annotations() -> None:
    desired = run(TargetSpec(name="db-creds", labels={"team": "a"}), {"username": b"app", "password": b"pw"})
    assert desired.name == "db-creds" and desired.namespace == "team" and desired.type == "Opaque"
    assert dict(desired.data) == {"username": b"app", "password": b"pw"}
    assert desired.annotations[VERSION_ANNOTATION] == "v3"
    assert desired.annotations[OWNER_ANNOTATION] == "team/db"
    assert desired.annotations[DATA_HASH_ANNOTATION] == data_hash(desired.data, HASH_KEY)
    assert desired.labels["team"] == "a" and desired.labels["managedsecrets.io/managed"] == "true"
    assert "pw" not in repr(desired)


def test_template_merges_and_replaces() -> None:
    template = {"DSN": "postgres://{{ username }}:{{ password }}@db:5432/app?v={{ version }}"}
    merged = run(TargetSpec(name="x", template=template), {"username": b"app", "password": b"pw"})
    assert merged.data["DSN"] == b"postgres://app:pw@db:5432/app?v=v3"
    assert merged.data["password"] == b"pw"
    replaced = run(
        TargetSpec(name="x", template=template, merge_policy="Replace"), {"username": b"a", "password": b"p"}
    )
    assert set(replaced.data) == {"DSN"}


def test_previous_keys_and_previous_in_templates() -> None:
    target = TargetSpec(
        name="x", include_previous=True, template={"BOTH": "{{ password }},{{ previous.password }}"}
    )
    desired = run(target, {"password": b"new"}, {"password": b"old"})
    assert desired.data["password_PREVIOUS"] == b"old"
    assert desired.data["BOTH"] == b"new,old"
    assert desired.annotations[PREVIOUS_VERSION_ANNOTATION] == "v2"
    without = run(TargetSpec(name="x"), {"password": b"new"}, {"password": b"old"})
    assert set(without.data) == {"password"}


def test_hash_changes_with_data_only() -> None:
    a = run(TargetSpec(name="x"), {"password": b"one"})
    b = run(TargetSpec(name="x", labels={"l": "v"}), {"password": b"one"})
    c = run(TargetSpec(name="x"), {"password": b"two"})
    assert a.data_hash == b.data_hash != c.data_hash
    assert data_hash({"password": b"one"}, b"z" * 32) != a.data_hash, "the hash is keyed"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ nothing }}", "undefined"),
        ("{{ password", "syntax error"),
        ("{{ password.__class__.__mro__ }}", "sandbox forbids"),
        ("{{ password | int + [] }}", "failed"),
        ("{{ ''.__class__.__subclasses__() }}", "sandbox forbids"),
    ],
)
def test_template_errors_name_the_key_but_never_a_value(template: str, message: str) -> None:
    with pytest.raises(RenderError) as err:
        run(TargetSpec(name="x", template={"OUT": template}), {"password": CANARY.encode()})
    assert "'OUT'" in str(err.value) and message in str(err.value)
    assert CANARY not in str(err.value)


def test_sandbox_refuses_python_internals() -> None:
    with pytest.raises(RenderError):
        run(TargetSpec(name="x", template={"OUT": "{{ password.upper.__globals__ }}"}), {"password": b"p"})


def test_binary_values_project_under_value() -> None:
    desired = render(
        owner_namespace="n",
        owner_name="blob",
        target=TargetSpec(name="blob"),
        current=SecretValue.from_blob(b"\x00\xff"),
        current_version="v1",
        hash_key=HASH_KEY,
    )
    assert dict(desired.data) == {"value": b"\x00\xff"}


def test_target_spec_defaults_from_crd_shape() -> None:
    target = TargetSpec.from_spec({"target": {"template": {"data": {"A": "x"}, "mergePolicy": "Replace"}}}, "ms")
    assert target.name == "ms" and target.creation_policy == "Owner" and target.drift_policy == "Revert"
    assert target.template == {"A": "x"} and target.merge_policy == "Replace"


@pytest.mark.parametrize(
    "template",
    [
        "{% for a in 'x' * 200000 %}{% for b in 'x' * 200000 %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * 10**9 }}",
        "{% for i in range(60000) %}{{ 'y' * 100 }}{% endfor %}",
    ],
)
def test_a_template_cannot_run_forever_nor_grow_without_bound(template: str) -> None:
    with pytest.raises(RenderError, match="template for key 'K'") as failed:
        run(TargetSpec(name="t", template={"K": template}), {"password": CANARY.encode()})
    assert CANARY not in str(failed.value)
