"""Rendering the projected Secret: keys, templates (with their delimiters), previous keys, annotations, and no
values in errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from managed_secrets.domain import SecretValue
from managed_secrets.errors import InvalidRequest
from managed_secrets.names import (
    DATA_HASH_ANNOTATION,
    OWNER_ANNOTATION,
    PREVIOUS_VERSION_ANNOTATION,
    VERSION_ANNOTATION,
)
from managed_secrets.projection import RenderError, TargetSpec, data_hash, render
from managed_secrets.projection.render import (
    DEFAULT_DELIMITERS,
    DELIMITER_CHARACTERS,
    DELIMITER_LENGTH,
    RESERVED_DELIMITERS,
    Delimiters,
    delimiters_problem,
)
from managed_secrets.rotation.strategies import load_all
from managed_secrets.service import parse_spec
from support.world import World, managed_secret

load_all()

HASH_KEY = b"k" * 32
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "managedsecrets.io_managedsecrets.yaml"
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


# --- delimiters (spec.target.template.delimiters) ---------------------------------------------------------

SQUARE = Delimiters("[[", "]]")
VALUE = {"username": b"app", "password": b"pw", "host": b"db"}
# One template per feature (variables, filters, blocks, comments, previous, whitespace control), written once
# with {{ }} and rewritten for each pair: every pair must render exactly what {{ }} renders.
TEMPLATES = {
    "URL": "postgresql://{{ username }}:{{ password | urlencode }}@{{ host }}:5432/app?v={{ version }}",
    "BLOCK": "{% if password %}set{% else %}unset{% endif %}{# a comment #}:"
    "{% for k in ['a', 'b'] %}{{ k }}{% endfor %}",
    "TRIM": "x  {{- username -}}  y",
    "NESTED": "{{ {'a': [username]}['a'][0] }}",
    "BOTH": "{{ password }},{{ previous.password }}",
}


def with_delimiters(template: str, delimiters: Delimiters) -> str:
    return template.replace("{{", delimiters.left).replace("}}", delimiters.right)


def test_default_delimiters_are_unchanged() -> None:
    assert TargetSpec(name="x").delimiters == DEFAULT_DELIMITERS == Delimiters("{{", "}}")
    assert (
        TargetSpec.from_spec({"target": {"template": {"data": {"A": "x"}}}}, "ms").delimiters == DEFAULT_DELIMITERS
    )
    desired = run(TargetSpec(name="x", template={"A": "{{ username }}[[ username ]]"}), VALUE)
    assert desired.data["A"] == b"app[[ username ]]"


@pytest.mark.parametrize(
    "delimiters", [SQUARE, Delimiters("<<", ">>"), Delimiters("((", "))"), Delimiters("${", "}$")]
)
def test_custom_delimiters_render_what_the_default_renders(delimiters: Delimiters) -> None:
    target = TargetSpec(name="x", template=TEMPLATES, include_previous=True)
    expected = run(target, VALUE, {"password": b"old"})
    custom = TargetSpec(
        name="x",
        template={k: with_delimiters(v, delimiters) for k, v in TEMPLATES.items()},
        include_previous=True,
        delimiters=delimiters,
    )
    got = run(custom, VALUE, {"password": b"old"})
    assert dict(got.data) == dict(expected.data)
    assert got.data["URL"] == b"postgresql://app:pw@db:5432/app?v=v3"
    assert got.data["BLOCK"] == b"set:ab" and got.data["TRIM"] == b"xappy" and got.data["BOTH"] == b"pw,old"
    assert got.data_hash == expected.data_hash


def test_with_custom_delimiters_braces_are_plain_text() -> None:
    """What Helm leaves after rendering a chart that escaped nothing: {{ }} is text, [[ ]] the variables."""
    desired = run(TargetSpec(name="x", template={"A": "{{ username }}=[[ username ]]"}, delimiters=SQUARE), VALUE)
    assert desired.data["A"] == b"{{ username }}=app"


def test_the_spec_field_reaches_render() -> None:
    spec = {
        "generate": {"keys": [{"name": "password"}], "static": {"username": "app"}},
        "target": {
            "template": {
                "data": {"URL": "postgresql://[[ username ]]:[[ password ]]@db/app"},
                "delimiters": {"left": "[[", "right": "]]"},
            }
        },
    }
    target = parse_spec(spec, "ms").target
    assert target.delimiters == SQUARE
    assert run(target, VALUE).data["URL"] == b"postgresql://app:pw@db/app"


@pytest.mark.parametrize(
    "template",
    [
        "[[ password.__class__.__mro__ ]]",
        "[[ ''.__class__.__subclasses__() ]]",
        "[[ password.upper.__globals__ ]]",
    ],
)
def test_custom_delimiters_keep_the_sandbox(template: str) -> None:
    """Refused as the same template written with {{ }} is, with the same message."""
    as_default = template.replace("[[", "{{").replace("]]", "}}")
    with pytest.raises(RenderError) as default:
        run(TargetSpec(name="x", template={"OUT": as_default}), {"password": CANARY.encode()})
    with pytest.raises(RenderError) as err:
        run(TargetSpec(name="x", template={"OUT": template}, delimiters=SQUARE), {"password": CANARY.encode()})
    assert str(err.value) == str(default.value)
    assert CANARY not in str(err.value)


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "[[ 'x' * 10**9 ]]",
        "{% for i in range(60000) %}[[ 'y' * 100 ]]{% endfor %}",
    ],
)
def test_custom_delimiters_keep_the_bounds(template: str) -> None:
    with pytest.raises(RenderError, match="template for key 'K'") as failed:
        run(TargetSpec(name="t", template={"K": template}, delimiters=SQUARE), {"password": CANARY.encode()})
    assert CANARY not in str(failed.value)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("[[ nothing ]]", "refers to undefined names ['nothing']"),
        ("[[ password", "syntax error"),
        ("[[ password ]", "syntax error"),
    ],
)
def test_custom_delimiter_errors_name_the_key_but_never_a_value(template: str, message: str) -> None:
    with pytest.raises(RenderError) as err:
        run(TargetSpec(name="x", template={"OUT": template}, delimiters=SQUARE), {"password": CANARY.encode()})
    assert "'OUT'" in str(err.value) and message in str(err.value)
    assert CANARY not in str(err.value)


PATH = "spec.target.template.delimiters"
INVALID_DELIMITERS = [
    ({"left": "[[", "right": "[["}, f"{PATH}.right: must differ from left"),
    ({"left": "", "right": "]]"}, f"{PATH}.left: must be a string of 2 to 8 characters"),
    ({"left": "[", "right": "]"}, f"{PATH}.left: must be a string of 2 to 8 characters"),
    ({"left": "[[", "right": "]]]]]]]]]"}, f"{PATH}.right: must be a string of 2 to 8 characters"),
    ({"left": "  ", "right": "]]"}, f"{PATH}.left: '  ' must be made of the punctuation characters"),
    ({"left": "[[", "right": "] ]"}, f"{PATH}.right: '] ]' must be made of the punctuation characters"),
    ({"left": "<a", "right": "a>"}, f"{PATH}.left: '<a' must be made of the punctuation characters"),
    ({"left": "__", "right": "]]"}, f"{PATH}.left: '__' must be made of the punctuation"),
    ({"left": '"[', "right": ']"'}, f"{PATH}.left: '\"[' must be made of the punctuation"),
    ({"left": "{%", "right": "%}"}, PATH + ".left: '{%' contains '{%', which Jinja keeps for blocks"),
    ({"left": "[[", "right": "#}}"}, PATH + ".right: '#}}' contains '#}', which Jinja keeps for blocks"),
    ({"left": "[[", "right": 7}, f"{PATH}.right: must be a string of 2 to 8 characters"),
    ({"left": "[["}, f"{PATH}.right: is required when delimiters is set"),
    ("[[ ]]", f"{PATH}: must be an object with left and right"),
]


@pytest.mark.parametrize(("delimiters", "message"), INVALID_DELIMITERS)
def test_invalid_delimiters_are_refused_with_the_field_path(delimiters: object, message: str) -> None:
    spec = {
        "generate": {"keys": [{"name": "password"}]},
        "target": {"template": {"data": {"A": "x"}, "delimiters": delimiters}},
    }
    with pytest.raises(InvalidRequest) as refused:
        parse_spec(spec, "ms")
    assert str(refused.value).startswith(message), str(refused.value)


def test_invalid_delimiters_make_a_condition_naming_the_field_and_nothing_is_stored() -> None:
    world = World()
    world.apply(
        managed_secret(
            "db",
            target={"template": {"data": {"A": "[[ password ]]"}, "delimiters": {"left": "[[", "right": "[["}}},
        )
    )
    world.reconcile("db")
    refused = world.condition("db", "Ready")
    assert (refused["status"], refused["reason"]) == ("False", "InvalidRequest")
    assert refused["message"] == "spec.target.template.delimiters.right: must differ from left (both are '[[')"
    assert world.secret("db") is None and world.store.writes == 0

    world.edit(
        "db", target={"template": {"data": {"A": "[[ password ]]"}, "delimiters": {"left": "[[", "right": "]]"}}}
    )
    world.reconcile("db")
    assert world.condition("db", "Ready")["status"] == "True"
    secret = world.secret("db")
    assert secret is not None and secret.data["A"] == secret.data["password"]


def test_the_crd_and_the_operator_agree_on_delimiters() -> None:
    """The CRD's rules (what the API server refuses) and delimiters_problem (what the operator refuses) are the
    same: the characters, the lengths and the reserved strings."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"]["spec"]["properties"]["target"]["properties"]["template"]["properties"][
        "delimiters"
    ]
    assert node["required"] == ["left", "right"]
    assert node["properties"]["left"] == node["properties"]["right"] | {
        "description": node["properties"]["left"]["description"]
    }
    side = node["properties"]["left"]
    assert (side["minLength"], side["maxLength"]) == DELIMITER_LENGTH
    characters, reserved = (rule["rule"] for rule in side["x-kubernetes-validations"])
    (pattern,) = re.findall(r"self\.matches\(r'(.*)'\)", characters)
    printable = [chr(c) for c in range(0x20, 0x7F)]
    assert [c for c in printable if re.fullmatch(pattern, c * 2)] == sorted(DELIMITER_CHARACTERS)
    assert re.findall(r"'([^']+)'", reserved) == list(RESERVED_DELIMITERS)
    for c in printable:
        assert (delimiters_problem(c * 2, "]]") is None) == (c in DELIMITER_CHARACTERS and c * 2 != "]]"), c
