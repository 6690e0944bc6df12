"""The ManagedSecret CRD as a real API server sees it: accepted, defaulted, and rejecting bad specs by field path.

The module applies crds/managedsecrets.io_managedsecrets.yaml itself (create, or replace when it exists), so it
works on a fresh cluster and always tests the file as it is now.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

import cluster as local_cluster
from support import kube

pytestmark = pytest.mark.integration

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "managedsecrets.io_managedsecrets.yaml"
GROUP = "managedsecrets.io"
VERSION = "v1alpha1"
PLURAL = "managedsecrets"

Spec = dict[str, Any]
Kubectl = Callable[..., str]


def load_crd() -> dict[str, Any]:
    document = yaml.safe_load(CRD_FILE.read_text())
    assert isinstance(document, dict)
    return document


def apply_crd(admin: client.ApiClient, crd: dict[str, Any]) -> None:
    """Creates the CRD, or replaces the one there with this file's, and waits until it is established."""
    ext = client.ApiextensionsV1Api(admin)
    name = crd["metadata"]["name"]

    def applied() -> bool:
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise
            body = copy.deepcopy(crd)
            body["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
                name
            ).metadata.resource_version
            ext.replace_custom_resource_definition(name, body)  # a 409 from a racing writer is retried
        return True

    kube.eventually(applied, what=f"the CRD {name} to be applied")

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    kube.eventually(established, what=f"the CRD {name} to be established")


@pytest.fixture(scope="module")
def crd(admin: client.ApiClient) -> dict[str, Any]:
    document = load_crd()
    apply_crd(admin, document)
    return document


@pytest.fixture(scope="module")
def objects(admin: client.ApiClient, crd: dict[str, Any]) -> client.CustomObjectsApi:
    api = client.CustomObjectsApi(admin)
    probe = kube.create_namespace(admin, "crd-probe")
    try:
        # Established can precede the new schema reaching every handler; wait until a dry run is served.
        kube.eventually(
            lambda: api.create_namespaced_custom_object(
                GROUP, VERSION, probe, PLURAL, managed_secret("probe", generic_spec()), dry_run="All"
            ),
            what="ManagedSecrets to be served",
        )
    finally:
        kube.delete_namespace(admin, probe)
    return api


@pytest.fixture(scope="module")
def kubectl(kubeconfig: str) -> Kubectl:
    """Runs the kubectl built by hack/build-controlplane.sh (a cached no-op) and returns its stdout."""
    binary = local_cluster.build_binaries() / "kubectl"

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(binary), f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    return run


def generic_spec(**fields: Any) -> Spec:
    """The smallest valid spec (one generated password), with ``fields`` set on top; None removes a field."""
    spec: Spec = {"generate": {"keys": [{"name": "password"}]}}
    for name, value in fields.items():
        if value is None:
            spec.pop(name, None)
        else:
            spec[name] = value
    return spec


def database_spec(**fields: Any) -> Spec:
    """A valid dual-account PostgreSQL source, with ``fields`` set on top; None removes a field."""
    source: Spec = {
        "engine": "postgresql",
        "host": "postgres.db.svc",
        "usernames": ["app_blue", "app_green"],
        "adminSecretRef": {"name": "postgres-admin"},
    }
    for name, value in fields.items():
        if value is None:
            source.pop(name, None)
        else:
            source[name] = value
    return {"type": "Database", "database": source}


def managed_secret(name: str, spec: Spec, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ManagedSecret",
        "metadata": {"name": name},
        "spec": spec,
        **extra,
    }


def causes_of(error: ApiException) -> list[tuple[str, str, str]]:
    """(field, reason, message) of each cause in a 422 answer.

    Leaves out the API server's note that CEL rules were skipped because the schema already failed.
    """
    details = json.loads(error.body).get("details") or {}
    causes = [(c.get("field", ""), c.get("reason", ""), c.get("message", "")) for c in details.get("causes", [])]
    return [c for c in causes if "validation rules were not checked" not in c[2]]


def test_crd_is_established_with_its_names(admin: client.ApiClient, crd: dict[str, Any]) -> None:
    served = client.ApiextensionsV1Api(admin).read_custom_resource_definition("managedsecrets.managedsecrets.io")
    conditions = {c.type: c.status for c in served.status.conditions}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert served.status.accepted_names.kind == "ManagedSecret"
    assert served.status.accepted_names.short_names == ["msec"]
    assert served.status.accepted_names.categories == ["secrets-management"]
    assert [v.name for v in served.spec.versions] == ["v1alpha1"]
    assert served.spec.versions[0].subresources.status == {}


def test_minimal_object_is_stored_with_defaults(objects: client.CustomObjectsApi, namespace: str) -> None:
    objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("app", generic_spec())
    )
    spec = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "app")["spec"]

    assert spec["type"] == "Generic"
    assert spec["versionLimit"] == 10
    assert spec["generate"]["keys"] == [
        {
            "name": "password",
            "length": 32,
            "excludeNumbers": False,
            "excludePunctuation": False,
            "excludeUppercase": False,
            "excludeLowercase": False,
            "includeSpace": False,
            "requireEachIncludedType": True,
        }
    ]
    assert spec["rotation"] == {"enabled": False}
    assert spec["target"] == {
        "type": "Opaque",
        "includePrevious": False,
        "previousSuffix": "_PREVIOUS",
        "creationPolicy": "Owner",
        "adoptExisting": False,
        "driftPolicy": "Revert",
    }
    assert spec["deletion"] == {"recoveryWindowDays": 7}
    assert "encryptionKey" not in spec


def test_source_defaults(objects: client.CustomObjectsApi, namespace: str) -> None:
    def created(name: str, spec: Spec) -> Spec:
        body = managed_secret(name, spec)
        return dict(objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)["spec"])

    database = created("db", database_spec())["database"]
    assert database["mode"] == "dual"
    assert database["sslMode"] == "prefer"
    assert database["adminSecretRef"] == {
        "name": "postgres-admin",
        "usernameKey": "username",
        "passwordKey": "password",
    }
    assert database["passwordPolicy"]["length"] == 32
    assert database["passwordPolicy"]["requireEachIncludedType"] is True
    assert "port" not in database

    assert created("ssh", {"type": "SSHKey", "sshKey": {}})["sshKey"] == {"algorithm": "ed25519"}

    external = created("ext", {"type": "External", "external": {"url": "https://rotator.example/rotate"}})
    assert external["external"] == {"url": "https://rotator.example/rotate", "timeoutSeconds": 30}

    template = created("tpl", generic_spec(target={"template": {"data": {"DSN": "u={{ password }}"}}}))["target"]
    assert template["template"] == {"data": {"DSN": "u={{ password }}"}, "mergePolicy": "Merge"}


VALID_SPECS = [
    pytest.param(
        generic_spec(
            description="API token for the billing service",
            encryptionKey="kek:2026-01/primary",
            versionLimit=100,
            generate={
                "keys": [
                    {"name": "password", "length": 64, "excludeCharacters": "\"'\\@/", "includeSpace": True},
                    {"name": "pin", "length": 6, "excludePunctuation": True, "excludeUppercase": True}
                    | {"excludeLowercase": True},
                ],
                "static": {"username": "billing", ".env": "prod"},
            },
            rotation={"enabled": True, "schedule": "0 3 * * 1", "window": "2h"},
            target={
                "name": "billing-creds",
                "type": "kubernetes.io/basic-auth",
                "labels": {"team": "billing"},
                "annotations": {"example.com/owner": "billing"},
                "template": {"data": {"DSN": "{{ username }}:{{ password }}"}, "mergePolicy": "Replace"},
                "includePrevious": True,
                "previousSuffix": ".old",
                "creationPolicy": "Orphan",
                "adoptExisting": True,
                "driftPolicy": "Report",
            },
            restartTargets=[
                {"kind": "Deployment", "name": "billing"},
                {"kind": "StatefulSet", "name": "billing"},
                {"kind": "DaemonSet", "name": "agent"},
            ],
            deletion={"recoveryWindowDays": 0},
        ),
        id="generic-everything",
    ),
    pytest.param(
        generic_spec(generate=None, valueFrom={"secretRef": {"name": "upstream", "keys": ["token", "tls.crt"]}}),
        id="generic-value-from",
    ),
    pytest.param(generic_spec(rotation={"enabled": True, "interval": "1d12h"}), id="rotation-interval"),
    pytest.param(generic_spec(rotation={"enabled": False, "schedule": "@weekly"}), id="rotation-paused"),
    pytest.param(
        database_spec(
            engine="mysql",
            port=3307,
            database="shop",
            mode="single",
            usernames=None,
            username="shop",
            sslMode="verify-full",
            passwordPolicy={"length": 40, "excludePunctuation": True},
        ),
        id="database-single",
    ),
    pytest.param(
        {"type": "SSHKey", "sshKey": {"algorithm": "rsa", "rsaBits": 4096, "comment": "deploy@ci"}},
        id="ssh-rsa",
    ),
    pytest.param(
        {
            "type": "External",
            "external": {
                "url": "https://rotator.example:8443/v1/rotate?team=a",
                "timeoutSeconds": 300,
                "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                "credentialsSecretRef": {"name": "rotator-token"},
            },
            "rotation": {"enabled": True, "interval": "90m"},
        },
        id="external",
    ),
]


@pytest.mark.parametrize("spec", VALID_SPECS)
def test_valid_specs_are_accepted(objects: client.CustomObjectsApi, namespace: str, spec: Spec) -> None:
    created = objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("ok", spec)
    )
    assert_holds(created["spec"], spec, "spec")


def assert_holds(actual: Any, given: Any, path: str) -> None:
    """Every value in ``given`` is in ``actual`` at the same place; ``actual`` may add defaults around them."""
    if isinstance(given, dict):
        assert isinstance(actual, dict), path
        for name, value in given.items():
            assert name in actual, f"{path}.{name} was dropped"
            assert_holds(actual[name], value, f"{path}.{name}")
    elif isinstance(given, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(given), path
        for i, (a, g) in enumerate(zip(actual, given, strict=True)):
            assert_holds(a, g, f"{path}[{i}]")
    else:
        assert actual == given, path


class Rejected(NamedTuple):
    spec: Spec
    field: str
    says: str
    reason: str = "FieldValueInvalid"
    also: tuple[str, ...] = ()  # other fields the same spec is rightly rejected on


TWO_SOURCES = "exactly one value source must be set"
ALL_EXCLUDED = "cannot exclude every character class"
DATA_KEY = "must be valid Secret data keys"

INVALID_SPECS = {
    "two-sources": Rejected(generic_spec(sshKey={}), "spec", TWO_SOURCES),
    "no-source": Rejected(generic_spec(generate=None), "spec", TWO_SOURCES, also=("spec.type",)),
    "database-type-with-generate": Rejected(
        generic_spec(type="Database"), "spec.type", "type Database takes its value from database"
    ),
    "generic-type-with-ssh-key": Rejected(
        {"type": "Generic", "sshKey": {}}, "spec.type", "type Generic takes its value from generate or valueFrom"
    ),
    "external-type-with-database": Rejected(
        {**database_spec(), "type": "External"}, "spec.type", "type External takes its value from external"
    ),
    "unknown-type": Rejected(
        generic_spec(type="Token"), "spec.type", "Unsupported value", "FieldValueNotSupported"
    ),
    "version-limit-zero": Rejected(
        generic_spec(versionLimit=0), "spec.versionLimit", "greater than or equal to 1"
    ),
    "version-limit-101": Rejected(
        generic_spec(versionLimit=101), "spec.versionLimit", "less than or equal to 100"
    ),
    "description-too-long": Rejected(
        generic_spec(description="x" * 2049), "spec.description", "may not be more than 2048", "FieldValueTooLong"
    ),
    "bad-encryption-key": Rejected(generic_spec(encryptionKey="-kek"), "spec.encryptionKey", "should match"),
    "recovery-window-31": Rejected(
        generic_spec(deletion={"recoveryWindowDays": 31}),
        "spec.deletion.recoveryWindowDays",
        "less than or equal to 30",
    ),
    "interval-and-schedule": Rejected(
        generic_spec(rotation={"interval": "30d", "schedule": "0 3 * * *"}), "spec.rotation", "not both"
    ),
    "enabled-without-timing": Rejected(
        generic_spec(rotation={"enabled": True}),
        "spec.rotation",
        "rotation enabled needs an interval or a schedule",
        "FieldValueRequired",
    ),
    "bad-interval": Rejected(
        generic_spec(rotation={"interval": "30 days"}), "spec.rotation.interval", "should match"
    ),
    "zero-interval": Rejected(
        generic_spec(rotation={"interval": "0d0h"}), "spec.rotation.interval", "interval must be longer than zero"
    ),
    "four-field-schedule": Rejected(
        generic_spec(rotation={"schedule": "0 3 * *"}), "spec.rotation.schedule", "should match"
    ),
    "window-alone": Rejected(
        generic_spec(rotation={"window": "2h"}),
        "spec.rotation.window",
        "window needs an interval or a schedule",
        "FieldValueForbidden",
    ),
    "rotating-a-copied-value": Rejected(
        generic_spec(
            generate=None, valueFrom={"secretRef": {"name": "up"}}, rotation={"enabled": True, "interval": "1d"}
        ),
        "spec.rotation.enabled",
        "rotation cannot be enabled for a value copied with valueFrom",
        "FieldValueForbidden",
    ),
    "unknown-creation-policy": Rejected(
        generic_spec(target={"creationPolicy": "Merge"}),
        "spec.target.creationPolicy",
        'supported values: "Owner", "Orphan"',
        "FieldValueNotSupported",
    ),
    "unknown-drift-policy": Rejected(
        generic_spec(target={"driftPolicy": "Ignore"}),
        "spec.target.driftPolicy",
        'supported values: "Revert", "Report"',
        "FieldValueNotSupported",
    ),
    "bad-target-name": Rejected(
        generic_spec(target={"name": "Billing_Creds"}), "spec.target.name", "should match"
    ),
    "token-target-type": Rejected(
        generic_spec(target={"type": "kubernetes.io/service-account-token"}),
        "spec.target.type",
        "cannot be projected",
    ),
    "reserved-label": Rejected(
        generic_spec(target={"labels": {"managedsecrets.io/version": "v1"}}), "spec.target.labels", "reserved"
    ),
    "bad-template-key": Rejected(
        generic_spec(target={"template": {"data": {"database url": "{{ password }}"}}}),
        "spec.target.template.data",
        f"template data keys {DATA_KEY}",
    ),
    "key-length-zero": Rejected(
        generic_spec(generate={"keys": [{"name": "password", "length": 0}]}),
        "spec.generate.keys[0].length",
        "greater than or equal to 1",
    ),
    "all-classes-excluded": Rejected(
        generic_spec(
            generate={
                "keys": [
                    {
                        "name": "password",
                        "excludeNumbers": True,
                        "excludePunctuation": True,
                        "excludeUppercase": True,
                        "excludeLowercase": True,
                    }
                ]
            }
        ),
        "spec.generate.keys[0]",
        ALL_EXCLUDED,
    ),
    "too-short-for-each-type": Rejected(
        generic_spec(generate={"keys": [{"name": "pin", "length": 3}]}),
        "spec.generate.keys[0].length",
        "too short to hold one character of each included class",
    ),
    "duplicate-key-names": Rejected(
        generic_spec(generate={"keys": [{"name": "password"}, {"name": "password", "length": 8}]}),
        "spec.generate.keys[1]",
        "Duplicate value",
        "FieldValueDuplicate",
    ),
    "bad-key-name": Rejected(
        generic_spec(generate={"keys": [{"name": "..data"}]}), "spec.generate.keys[0].name", "should match"
    ),
    "no-keys": Rejected(generic_spec(generate={"keys": []}), "spec.generate.keys", "at least 1 item"),
    "static-collides": Rejected(
        generic_spec(generate={"keys": [{"name": "password"}], "static": {"password": "hunter2"}}),
        "spec.generate.static",
        "must not repeat the name of a generated key",
    ),
    "bad-static-key": Rejected(
        generic_spec(generate={"keys": [{"name": "password"}], "static": {"user name": "app"}}),
        "spec.generate.static",
        f"static keys {DATA_KEY}",
    ),
    "value-from-without-name": Rejected(
        generic_spec(generate=None, valueFrom={"secretRef": {}}),
        "spec.valueFrom.secretRef.name",
        "Required value",
        "FieldValueRequired",
    ),
    "dual-with-one-username": Rejected(
        database_spec(usernames=["app_blue"]), "spec.database.usernames", "exactly two distinct account names"
    ),
    "dual-with-the-same-username-twice": Rejected(
        database_spec(usernames=["app", "app"]), "spec.database.usernames", "exactly two distinct account names"
    ),
    "dual-with-username": Rejected(
        database_spec(username="app"),
        "spec.database.username",
        "username is for mode single",
        "FieldValueForbidden",
    ),
    "single-without-username": Rejected(
        database_spec(mode="single", usernames=None),
        "spec.database.username",
        "mode single needs username",
        "FieldValueRequired",
    ),
    "unknown-engine": Rejected(
        database_spec(engine="oracle"), "spec.database.engine", "Unsupported value", "FieldValueNotSupported"
    ),
    "port-zero": Rejected(database_spec(port=0), "spec.database.port", "greater than or equal to 1"),
    "no-admin-secret": Rejected(
        database_spec(adminSecretRef=None), "spec.database.adminSecretRef", "Required value", "FieldValueRequired"
    ),
    "password-policy-all-excluded": Rejected(
        database_spec(
            passwordPolicy={
                "excludeNumbers": True,
                "excludePunctuation": True,
                "excludeUppercase": True,
                "excludeLowercase": True,
            }
        ),
        "spec.database.passwordPolicy",
        ALL_EXCLUDED,
    ),
    "rsa-bits-with-ed25519": Rejected(
        {"type": "SSHKey", "sshKey": {"rsaBits": 4096}},
        "spec.sshKey.rsaBits",
        "rsaBits applies only to algorithm rsa",
        "FieldValueForbidden",
    ),
    "odd-rsa-bits": Rejected(
        {"type": "SSHKey", "sshKey": {"algorithm": "rsa", "rsaBits": 1024}},
        "spec.sshKey.rsaBits",
        "Unsupported value",
        "FieldValueNotSupported",
    ),
    "multi-line-ssh-comment": Rejected(
        {"type": "SSHKey", "sshKey": {"comment": "a\nb"}}, "spec.sshKey.comment", "should match"
    ),
    "http-url": Rejected(
        {"type": "External", "external": {"url": "http://rotator.example/rotate"}},
        "spec.external.url",
        "url must be an absolute https:// URL",
    ),
    "url-without-host": Rejected(
        {"type": "External", "external": {"url": "https://"}}, "spec.external.url", "https:// URL with a host"
    ),
    "timeout-301": Rejected(
        {"type": "External", "external": {"url": "https://r.example", "timeoutSeconds": 301}},
        "spec.external.timeoutSeconds",
        "less than or equal to 300",
    ),
    "ca-bundle-not-pem": Rejected(
        {"type": "External", "external": {"url": "https://r.example", "caBundle": "MIIBIjANBgkqh"}},
        "spec.external.caBundle",
        "caBundle must hold PEM certificates",
    ),
    "restart-a-pod": Rejected(
        generic_spec(restartTargets=[{"kind": "Pod", "name": "web"}]),
        "spec.restartTargets[0].kind",
        'supported values: "Deployment", "StatefulSet", "DaemonSet"',
        "FieldValueNotSupported",
    ),
    "restart-the-same-workload-twice": Rejected(
        generic_spec(
            restartTargets=[{"kind": "Deployment", "name": "web"}, {"kind": "Deployment", "name": "web"}]
        ),
        "spec.restartTargets[1]",
        "Duplicate value",
        "FieldValueDuplicate",
    ),
}


@pytest.mark.parametrize("case", INVALID_SPECS.values(), ids=INVALID_SPECS.keys())
def test_invalid_spec_is_rejected_with_its_field_path(
    objects: client.CustomObjectsApi, namespace: str, case: Rejected
) -> None:
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, managed_secret("bad", case.spec)
        )
    assert rejected.value.status == 422
    causes = causes_of(rejected.value)
    assert {field for field, _, _ in causes} == {case.field, *case.also}, causes
    matching = [(reason, message) for field, reason, message in causes if field == case.field]
    assert any(case.says in message and reason == case.reason for reason, message in matching), causes
    assert case.field in rejected.value.body
    assert (
        kube.status_of(lambda: objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bad"))
        == 404
    )


def test_type_is_immutable_but_other_fields_change(objects: client.CustomObjectsApi, namespace: str) -> None:
    objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("app", generic_spec())
    )

    to_ssh = {"spec": {"type": "SSHKey", "generate": None, "sshKey": {}}}
    with pytest.raises(ApiException) as rejected:
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "app", to_ssh)
    assert rejected.value.status == 422
    assert [(f, r) for f, r, _ in causes_of(rejected.value)] == [("spec.type", "FieldValueInvalid")]
    assert "type is immutable" in causes_of(rejected.value)[0][2]

    changed = objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "app", {"spec": {"versionLimit": 5, "description": "changed"}}
    )
    assert changed["spec"]["versionLimit"] == 5
    assert changed["spec"]["type"] == "Generic"
    assert "generate" in changed["spec"]


def test_status_is_a_subresource_and_pruned(objects: client.CustomObjectsApi, namespace: str) -> None:
    body = managed_secret("app", generic_spec(), status={"currentVersion": "v9"})
    created = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert created.get("status", {}).get("currentVersion") != "v9", "status is ignored on the main resource"

    status = {"status": {"currentVersion": "v1", "rotation": {"step": "set", "attempts": 2}, "secretValue": "x"}}
    written = objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "app", status)
    assert written["status"]["currentVersion"] == "v1"
    assert written["status"]["rotation"]["step"] == "set"
    assert "secretValue" not in written["status"], "unknown status fields are pruned"

    bad_step = {"status": {"rotation": {"step": "rollback"}}}
    with pytest.raises(ApiException) as rejected:
        objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "app", bad_step)
    assert rejected.value.status == 422
    assert "status.rotation.step" in rejected.value.body


def _row(output: str, name: str) -> dict[str, str]:
    """The row for ``name`` in ``kubectl get`` output, as {header: cell}; columns split on runs of spaces."""
    lines = output.splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    for line in lines[1:]:
        cells = {header[s:e].strip(): line[s:e].strip() for s, e in zip(starts, bounds, strict=True)}
        if cells["NAME"] == name:
            return cells
    raise AssertionError(f"no row for {name} in:\n{output}")


def test_kubectl_get_prints_the_columns(
    objects: client.CustomObjectsApi, namespace: str, kubectl: Kubectl
) -> None:
    objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("ssh", {"type": "SSHKey", "sshKey": {}})
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    last, upcoming = now - dt.timedelta(days=3), now + dt.timedelta(days=27)
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Projected",
        "message": "version v3 is projected",
        "lastTransitionTime": last.isoformat().replace("+00:00", "Z"),
    }
    status = {
        "currentVersion": "v3",
        "lastRotationTime": last.isoformat().replace("+00:00", "Z"),
        "nextRotationTime": upcoming.isoformat().replace("+00:00", "Z"),
        "conditions": [ready],
    }
    objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "ssh", {"status": status})

    def consistent_row() -> tuple[dict[str, str], dict[str, Any]] | None:
        # Compare against one unchanged snapshot of the object, in case something else writes its status.
        before = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ssh")
        output = kubectl("get", "msec", "-n", namespace)
        after = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "ssh")
        same = before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
        return (_row(output, "ssh"), after) if same else None

    row, seen = kube.eventually(consistent_row, what="a stable ManagedSecret to list")
    assert list(row) == ["NAME", "TYPE", "CURRENT", "LAST-ROTATION", "NEXT-ROTATION", "READY", "AGE"]
    assert row["TYPE"] == "SSHKey"
    # An operator running against the same cluster may rewrite the status; the row must show what is there.
    seen_status = seen.get("status", {})
    if seen_status == status:
        assert (row["CURRENT"], row["LAST-ROTATION"], row["READY"]) == ("v3", "3d", "True")
        assert row["NEXT-ROTATION"] == status["nextRotationTime"]
    ready_seen = [c["status"] for c in seen_status.get("conditions", []) if c["type"] == "Ready"]
    assert row["CURRENT"] == seen_status.get("currentVersion", "")
    assert row["NEXT-ROTATION"] == seen_status.get("nextRotationTime", "")
    assert row["READY"] == "".join(ready_seen)
    assert (row["LAST-ROTATION"] == "3d") == (seen_status.get("lastRotationTime") == status["lastRotationTime"])

    by_category = kubectl("get", "secrets-management", "-n", namespace, "-o", "name")
    assert by_category.split() == ["managedsecret.managedsecrets.io/ssh"]


def test_kubectl_explain_shows_the_descriptions(kubectl: Kubectl, crd: dict[str, Any]) -> None:
    def explained(path: str) -> str:
        return " ".join(kubectl("explain", path).split())

    rotation = explained("managedsecret.spec.rotation")
    assert "Set interval (counted from the last rotation) or schedule (cron), not both." in rotation
    for field in ("enabled", "interval", "schedule", "window"):
        assert f"{field} <" in rotation, field
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    window = schema["properties"]["spec"]["properties"]["rotation"]["properties"]["window"]["description"]
    assert " ".join(window.split()) in rotation

    days = explained("managedsecret.spec.deletion.recoveryWindowDays")
    assert "0 deletes them at once" in days
