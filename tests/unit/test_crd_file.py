"""Fast checks of the CRD file itself; what the API server makes of it is tested in tests/integration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "managedsecrets.io_managedsecrets.yaml"
CHART = ROOT / "charts" / "managed-secrets-operator"
# Copies of the CRD file, each in a directory that may only hold copies of crds/: the kustomize base's (kustomize
# refuses files outside its directory) and the one the chart's templates/crds.yaml renders (a chart reads only
# its own files). tests/integration/test_chart.py checks what the chart renders from its copy.
COPIES = [ROOT / "deploy" / "crds", CHART / "files" / "crds"]

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(CRD_FILE.read_text()))
    assert len(documents) == 1, "the CRD file holds exactly one document"
    document = documents[0]
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> Schema:
    return dict(version["schema"]["openAPIV3Schema"])


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node below ``schema`` with a readable path: properties, list items and map values."""
    for name, child in schema.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield f"{path}[]", schema["items"]
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}{{}}", schema["additionalProperties"]
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def node(root: Schema, path: str) -> Schema:
    """The schema at a path as ``walk`` writes it, e.g. ``spec.generate.keys[].length``; KeyError if none."""
    schema = root
    for step in re.findall(r"\[\]|\{\}|[^.\[\]{}]+", path):
        if step == "[]":
            schema = schema["items"]
        elif step == "{}":
            schema = schema["additionalProperties"]
        else:
            schema = schema["properties"][step]
    return schema


@pytest.mark.parametrize("directory", COPIES, ids=["deploy", "chart"])
def test_every_copy_is_byte_identical_to_crds(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in CRD_FILE.parent.iterdir())
    for original in CRD_FILE.parent.iterdir():
        assert (directory / original.name).read_bytes() == original.read_bytes(), (
            f"copy {original.relative_to(ROOT)} to {directory.relative_to(ROOT)}/"
        )


def test_the_chart_renders_the_crd_from_its_copy_and_has_no_crds_dir() -> None:
    """A chart's crds/ is installed once and never upgraded (and would clash with the template's CRD)."""
    assert not (CHART / "crds").exists(), "the chart's CRD is templates/crds.yaml, rendered from files/crds/"
    template = (CHART / "templates" / "crds.yaml").read_text()
    assert f'"files/crds/{CRD_FILE.name}"' in template


def test_identity_names_and_subresources(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "managedsecrets.managedsecrets.io"
    spec = crd["spec"]
    assert spec["group"] == "managedsecrets.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ManagedSecret",
        "listKind": "ManagedSecretList",
        "plural": "managedsecrets",
        "singular": "managedsecret",
        "shortNames": ["msec"],
        "categories": ["secrets-management"],
    }
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Type": ("string", ".spec.type"),
        "Current": ("string", ".status.currentVersion"),
        "Last-Rotation": ("date", ".status.lastRotationTime"),
        "Next-Rotation": ("string", ".status.nextRotationTime"),
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_every_field_has_a_description(root: Schema) -> None:
    assert len(root.get("description", "")) > 40
    # The API server forbids anything but a type on the root metadata, so it is the one exception.
    missing = [
        path
        for path, schema in walk(root)
        if path != ".metadata"
        and (not path.endswith(("[]", "{}")) or schema.get("type") == "object")
        and len(schema.get("description", "").strip()) < 10
    ]
    assert missing == []


def test_the_walk_reaches_deep_fields(root: Schema) -> None:
    paths = {path for path, _ in walk(root)}
    assert {
        ".spec.generate.keys[].requireEachIncludedType",
        ".spec.database.adminSecretRef.passwordKey",
        ".spec.target.template.data",
        ".spec.restartTargets[].kind",
        ".status.conditions[].lastTransitionTime",
        ".status.rotation.versionId",
    } <= paths


def test_no_field_keeps_unknown_fields(root: Schema) -> None:
    text = CRD_FILE.read_text()
    assert "x-kubernetes-preserve-unknown-fields" not in text
    assert all("x-kubernetes-preserve-unknown-fields" not in s for _, s in walk(root))


def test_spec_strings_lists_and_maps_are_bounded(root: Schema) -> None:
    """CEL cost is estimated from these bounds; an unbounded one can push a rule over the API server's budget."""
    unbounded = []
    for path, schema in walk(node(root, "spec"), ".spec"):
        kind = schema.get("type")
        if kind == "string" and "maxLength" not in schema and "enum" not in schema:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in schema:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in schema and "maxProperties" not in schema:
            unbounded.append(path)
    assert unbounded == []


def test_every_rule_has_a_message_and_a_real_field_path(root: Schema) -> None:
    rules = [(path, rule) for path, schema in walk(root) for rule in schema.get("x-kubernetes-validations", [])]
    assert len(rules) >= 20
    for path, rule in rules:
        assert rule["rule"].strip(), path
        assert len(rule.get("message", "")) > 10, path
        # FieldValueDuplicate is left out on purpose: the API server drops the message for that reason.
        assert rule.get("reason", "FieldValueInvalid") in {
            "FieldValueInvalid",
            "FieldValueForbidden",
            "FieldValueRequired",
        }, path
        if "fieldPath" in rule:
            node(root, path + rule["fieldPath"])  # KeyError if it names no field


def test_defaults_are_allowed_values(root: Schema) -> None:
    checked = 0
    for path, schema in walk(root):
        if "default" in schema and "enum" in schema:
            assert schema["default"] in schema["enum"], path
            checked += 1
        if "default" in schema and "minimum" in schema:
            assert schema["minimum"] <= schema["default"] <= schema["maximum"], path
            checked += 1
    assert checked >= 10


def test_spec_defaults(root: Schema) -> None:
    assert node(root, "spec.type")["default"] == "Generic"
    assert node(root, "spec.versionLimit")["default"] == 10
    assert node(root, "spec.generate.keys[].length")["default"] == 32
    assert node(root, "spec.generate.keys[].requireEachIncludedType")["default"] is True
    assert node(root, "spec.database.mode")["default"] == "dual"
    assert node(root, "spec.database.sslMode")["default"] == "prefer"
    assert node(root, "spec.sshKey.algorithm")["default"] == "ed25519"
    assert "default" not in node(root, "spec.sshKey.rsaBits"), "rsaBits only goes with rsa, so no default"
    assert "default" not in node(root, "spec.database.port"), "the port depends on the engine"
    assert node(root, "spec.external.timeoutSeconds")["default"] == 30
    for section in ("rotation", "target", "deletion"):
        assert node(root, f"spec.{section}")["default"] == {}, section
    assert node(root, "spec.target.creationPolicy")["default"] == "Owner"
    assert node(root, "spec.target.driftPolicy")["default"] == "Revert"
    assert node(root, "spec.target.previousSuffix")["default"] == "_PREVIOUS"
    assert node(root, "spec.deletion.recoveryWindowDays")["default"] == 7


def test_list_types(root: Schema) -> None:
    keys = node(root, "spec.generate.keys")
    assert (keys["x-kubernetes-list-type"], keys["x-kubernetes-list-map-keys"]) == ("map", ["name"])
    targets = node(root, "spec.restartTargets")
    assert (targets["x-kubernetes-list-type"], targets["x-kubernetes-list-map-keys"]) == ("map", ["kind", "name"])
    assert targets["items"]["required"] == ["kind", "name"]
    conditions = node(root, "status.conditions")
    assert (conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]) == ("map", ["type"])


def test_database_password_policy_matches_a_generated_key(root: Schema) -> None:
    """Both are the same password policy; the generated key only adds its name."""
    key = dict(node(root, "spec.generate.keys[]"))
    policy = node(root, "spec.database.passwordPolicy")
    key_fields = {k: v for k, v in key["properties"].items() if k != "name"}
    assert key_fields == policy["properties"]
    assert key["x-kubernetes-validations"] == policy["x-kubernetes-validations"]


def test_status_holds_no_value_fields(root: Schema) -> None:
    words = {path.rsplit(".", 1)[-1].lower() for path, _ in walk(node(root, "status"))}
    assert not words & {"value", "password", "data", "stringdata", "privatekey", "plaintext"}
    assert node(root, "status.publicKey")["type"] == "string"


DATA_KEY_CASES = [
    ("password", True),
    ("DATABASE_URL", True),
    (".env", True),
    ("tls.crt", True),
    ("a-b_c.d", True),
    (".", False),
    ("..", False),
    ("..data", False),
    ("a b", False),
    ("key/x", False),
    ("", False),
]


@pytest.mark.parametrize(("key", "valid"), DATA_KEY_CASES)
def test_data_key_pattern_follows_secret_key_rules(root: Schema, key: str, valid: bool) -> None:
    pattern = node(root, "spec.generate.keys[].name")["pattern"]
    assert bool(re.fullmatch(pattern, key)) is valid
    # The same rule appears in other places and in CEL over map keys; all must agree.
    for path in (
        "spec.valueFrom.secretRef.keys[]",
        "spec.database.adminSecretRef.usernameKey",
        "spec.database.adminSecretRef.passwordKey",
    ):
        assert node(root, path)["pattern"] == pattern, path
    for path in ("spec.generate.static", "spec.target.template.data"):
        (rule,) = node(root, path)["x-kubernetes-validations"]
        assert f"k.matches('{pattern}')" in rule["rule"], path


DURATION_CASES = [
    ("30d", True),
    ("12h", True),
    ("1h30m", True),
    ("45s", True),
    ("30 days", False),
    ("1.5h", False),
    ("d", False),
    ("", False),
    ("30", False),
    ("-1h", False),
]


@pytest.mark.parametrize(("text", "valid"), DURATION_CASES)
def test_duration_pattern(root: Schema, text: str, valid: bool) -> None:
    for field in ("interval", "window"):
        assert bool(re.fullmatch(node(root, f"spec.rotation.{field}")["pattern"], text)) is valid


SCHEDULE_CASES = [
    ("0 3 * * 1", True),
    ("*/15 * * * *", True),
    ("@daily", True),
    ("0 3 * *", False),
    ("@often", False),
    ("0 3 * * 1 2026", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "valid"), SCHEDULE_CASES)
def test_schedule_pattern(root: Schema, text: str, valid: bool) -> None:
    assert bool(re.fullmatch(node(root, "spec.rotation.schedule")["pattern"], text)) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [("db", True), ("db-creds.v2", True), ("a", True), ("DB", False), ("-db", False), ("db_", False)],
)
def test_object_name_pattern_is_a_dns_subdomain(root: Schema, name: str, valid: bool) -> None:
    assert bool(re.fullmatch(node(root, "spec.target.name")["pattern"], name)) is valid
