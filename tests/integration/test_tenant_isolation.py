"""A ManagedSecret never gives more than its author already has, tried as tenants with their own identities.

The tenant is a ServiceAccount that may only write ManagedSecrets in its namespace (no Secrets, no workloads).
The admission policy (deploy/admission-policy.yaml, installed with the session's operator) must refuse each
reference it could not follow itself, naming the field; a namespace editor (the built-in ``edit`` role, into
which our user roles aggregate) may do all of it, and only a namespace ``admin`` may restore.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.names import RESTORE_ANNOTATION
from support import kube
from support.cleartext_servers import CleartextPostgres, cleartext_server
from support.https_endpoint import LOCALHOST, Endpoint, make_authority, make_server_cert, serve
from support.operator import (
    ADMISSION_POLICY_FILE,
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    install_admission_policy,
    managed_secret,
    remove_admission_policy,
)

pytestmark = pytest.mark.integration

TENANT_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def identity(
    admin: client.ApiClient, namespace: str, name: str, *, cluster_role: str | None = None
) -> client.ApiClient:
    """A ServiceAccount bound in ``namespace`` to ``cluster_role``, or to ManagedSecret verbs only."""
    rbac = client.RbacAuthorizationV1Api(admin)
    if cluster_role is None:
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name=name),
                rules=[client.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL], verbs=TENANT_VERBS)],
            ),
        )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole" if cluster_role else "Role",
                name=cluster_role or name,
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)],
        ),
    )
    return kube.service_account_client(admin, namespace, name)


@pytest.fixture
def world(admin: client.ApiClient, namespace: str, operator: OperatorEnvironment) -> Iterator[dict[str, Any]]:
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="someone-elses"), string_data={"token": "x"})
    )
    yield {
        "tenant": identity(admin, namespace, "tenant"),
        "editor": identity(admin, namespace, "editor", cluster_role="edit"),
        "viewer": identity(admin, namespace, "viewer", cluster_role="view"),
        "owner": identity(admin, namespace, "owner", cluster_role="admin"),
    }


def create_as(api: client.ApiClient, namespace: str, body: dict[str, Any], *, dry_run: bool = True) -> str:
    """'' when admitted, else the API server's refusal message."""
    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, dry_run="All" if dry_run else None
        )
    except ApiException as e:
        assert e.status == 403, (e.status, e.body)
        return str(json.loads(e.body)["message"])
    return ""


REFERENCES: dict[str, tuple[dict[str, Any], str, str]] = {
    "valueFrom": (
        {"valueFrom": {"secretRef": {"name": "someone-elses"}}},
        "spec.valueFrom.secretRef.name",
        "may not get Secret someone-elses",
    ),
    "database": (
        {
            "type": "Database",
            "database": {
                "engine": "postgresql",
                "host": "db.tenant.example",
                "adminSecretRef": {"name": "someone-elses"},
                "usernames": ["app_a", "app_b"],
            },
        },
        "spec.database.adminSecretRef.name",
        "may not get Secret someone-elses",
    ),
    "external": (
        {
            "type": "External",
            "external": {
                "url": "https://hook.tenant.example/rotate",
                "credentialsSecretRef": {"name": "someone-elses"},
            },
        },
        "spec.external.credentialsSecretRef.name",
        "may not get Secret someone-elses",
    ),
    "sshKey": (
        {
            "type": "SSHKey",
            "sshKey": {
                "hosts": [{"address": "bastion.tenant.example"}],
                "user": "deploy",
                "adminSecretRef": {"name": "someone-elses"},
                "knownHosts": "bastion.tenant.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk5IG5vdCBvdXJz\n",
            },
        },
        "spec.sshKey.adminSecretRef.name",
        "may not get Secret someone-elses",
    ),
    "adoptExisting": (
        {"target": {"name": "someone-elses", "adoptExisting": True}},
        "spec.target.adoptExisting",
        "may not update Secret someone-elses",
    ),
    "restartTargets": (
        {"restartTargets": [{"kind": "Deployment", "name": "web"}, {"kind": "DaemonSet", "name": "agent"}]},
        "spec.restartTargets[0]",
        "may not patch Deployment web",
    ),
}


@pytest.mark.parametrize("path", sorted(REFERENCES))
def test_a_tenant_cannot_reference_what_it_cannot_touch(world: dict[str, Any], namespace: str, path: str) -> None:
    spec, field, missing = REFERENCES[path]
    refused = create_as(world["tenant"], namespace, managed_secret(f"ref-{path.lower()}", **spec))
    assert refused.startswith(
        f'managedsecrets.managedsecrets.io "ref-{path.lower()}" is forbidden: ValidatingAdmissionPolicy'
    )
    assert f"{field}: system:serviceaccount:{namespace}:tenant {missing}" in refused
    # The namespace editor has those rights, so the same spec is admitted for them.
    assert create_as(world["editor"], namespace, managed_secret(f"ref-{path.lower()}", **spec)) == ""


def test_a_plain_spec_is_admitted_and_an_edit_of_the_reference_is_checked_again(
    admin: client.ApiClient, world: dict[str, Any], namespace: str
) -> None:
    tenant = world["tenant"]
    assert create_as(tenant, namespace, managed_secret("plain"), dry_run=False) == ""
    objects = client.CustomObjectsApi(tenant)

    def patch(body: dict[str, Any]) -> None:
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "plain", body)

    # Annotations (rotate, rollback) are not references: the tenant may set them.
    patch({"metadata": {"annotations": {"managedsecrets.io/rotate": "r1"}}})
    with pytest.raises(ApiException) as refused:
        patch({"spec": {"target": {"name": "someone-elses", "adoptExisting": True}}})
    assert refused.value.status == 403
    assert "spec.target.adoptExisting" in json.loads(refused.value.body)["message"]


def test_only_a_namespace_admin_may_restore(world: dict[str, Any], namespace: str) -> None:
    body = managed_secret("restored")
    body["metadata"]["annotations"] = {RESTORE_ANNOTATION: "true"}
    for who in ("tenant", "editor"):
        refused = create_as(world[who], namespace, body)
        assert (
            f"metadata.annotations[{RESTORE_ANNOTATION}]: system:serviceaccount:{namespace}:{who} may not restore"
            in refused
        )
    assert create_as(world["owner"], namespace, body) == ""


def test_user_roles_aggregate_into_view_edit_and_admin(world: dict[str, Any], namespace: str) -> None:
    viewer = client.CustomObjectsApi(world["viewer"])
    assert viewer.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []
    assert (
        kube.status_of(
            lambda: viewer.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, managed_secret("v"))
        )
        == 403
    )
    editor = client.CustomObjectsApi(world["editor"])
    editor.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, managed_secret("e"))
    editor.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "e", {"metadata": {"annotations": {"managedsecrets.io/rotate": "r1"}}}
    )
    editor.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "e")


def test_every_reference_field_of_the_crd_is_checked_by_the_policy(crd_schema: dict[str, Any]) -> None:
    """Walks the CRD schema for fields that name another object (``*Ref``, the adopted target, the restart
    targets); each must have a validation in the policy, and a new one must be added to this list on purpose."""
    found: list[str] = []

    def walk(schema: dict[str, Any], path: str) -> None:
        for name, sub in (schema.get("properties") or {}).items():
            here = f"{path}.{name}"
            if name.endswith("Ref") or name in ("restartTargets", "adoptExisting"):
                found.append(here)
            walk(sub, here)
            if sub.get("type") == "array":
                walk(sub.get("items") or {}, here)

    walk(crd_schema["properties"]["spec"], "spec")
    policy = next(
        d
        for d in yaml.safe_load_all(ADMISSION_POLICY_FILE.read_text())
        if d["kind"] == "ValidatingAdmissionPolicy"
    )
    messages = [v["messageExpression"] for v in policy["spec"]["validations"]]
    for field in found:
        assert any(f"'{field}" in m for m in messages), f"{field} is not checked by {ADMISSION_POLICY_FILE.name}"
    assert sorted(found) == [
        "spec.database.adminSecretRef",
        "spec.external.credentialsSecretRef",
        "spec.restartTargets",
        "spec.sshKey.adminSecretRef",
        "spec.target.adoptExisting",
        "spec.valueFrom.secretRef",
    ]


@pytest.fixture
def crd_schema() -> dict[str, Any]:
    from support.operator import CRD_FILE

    crd = yaml.safe_load(CRD_FILE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


CANARY = "CANARY-tenant-2d9f4a"


@pytest.fixture
def without_policy(admin: client.ApiClient) -> Iterator[None]:
    """The admission policy removed, as on a cluster where nobody installed it; put back afterwards."""
    remove_admission_policy(admin)
    yield
    install_admission_policy(admin)


@pytest.fixture
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, str]]:
    authority = make_authority("tenant webhook CA")
    cert = make_server_cert(authority, tmp_path_factory.mktemp("tenant-webhook"), names=LOCALHOST)
    yield from ((endpoint, authority.pem) for endpoint in serve(cert))


@pytest.mark.usefixtures("without_policy")
def test_without_the_policy_the_operator_still_lets_no_value_out(
    admin: client.ApiClient,
    namespace: str,
    operator: OperatorEnvironment,
    world: dict[str, Any],
    webhook: tuple[Endpoint, str],
) -> None:
    """A tenant on a cluster without the policy tries each path; nothing of the canaries reaches it."""
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="ci"))
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="ci-token", annotations={"kubernetes.io/service-account.name": "ci"}
            ),
            type="kubernetes.io/service-account-token",
            string_data={"token": CANARY, "username": CANARY, "password": CANARY},
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="db-admin"),
            string_data={"username": "postgres", "password": CANARY, "value": CANARY},
        ),
    )
    endpoint, ca = webhook
    tenant = world["tenant"]
    probe = managed_secret("probe", valueFrom={"secretRef": {"name": "db-admin"}})
    kube.eventually(lambda: create_as(tenant, namespace, probe) == "", what="the API server to drop the policy")
    offset = len(operator.process.logs())
    with cleartext_server(CleartextPostgres) as collector:
        attempts = {
            "hook": managed_secret(
                "hook",
                type="External",
                external={"url": endpoint.url, "caBundle": ca, "credentialsSecretRef": {"name": "ci-token"}},
            ),
            "collect": managed_secret(
                "collect",
                type="Database",
                database={
                    "engine": "postgresql",
                    "host": "127.0.0.1",
                    "port": collector.port,
                    "sslMode": "prefer",
                    "adminSecretRef": {"name": "db-admin"},
                    "mode": "single",
                    "username": "app",
                },
            ),
            "leak": managed_secret(
                "leak",
                valueFrom={"secretRef": {"name": "db-admin"}},
                target={
                    "name": "leak-out",
                    "template": {"data": {"x": "{{ {}[password] }}", "y": "{{ value.x }}"}},
                },
            ),
            "grab": managed_secret("grab", target={"name": "ci-token", "adoptExisting": True}),
        }
        for name, body in attempts.items():
            assert create_as(tenant, namespace, body, dry_run=False) == "", name

        def settled() -> bool:
            objects = client.CustomObjectsApi(admin).list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL
            )
            ready = {
                o["metadata"]["name"]: next(
                    (c for c in (o.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {}
                )
                for o in objects["items"]
            }
            return all(ready.get(n, {}).get("status") == "False" for n in attempts)

        kube.eventually(settled, timeout=60, what="every attempt to be refused with a condition")
        reasons = {
            name: next(
                c
                for c in client.CustomObjectsApi(admin).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )["status"]["conditions"]
                if c["type"] == "Ready"
            )
            for name in attempts
        }
        assert reasons["hook"]["reason"] == "ReferenceRefused", reasons["hook"]
        assert (
            reasons["grab"]["reason"] == "SecretNotOwned" and "service-account-token" in reasons["grab"]["message"]
        )
        assert reasons["leak"]["reason"] == "TemplateError", reasons["leak"]
        assert reasons["collect"]["reason"] == "InsecureAuthentication", reasons["collect"]
        assert endpoint.calls == [], "the tenant's endpoint received nothing"
        assert collector.connections >= 1 and CANARY.encode() not in bytes(collector.received)

    assert core.read_namespaced_secret("ci-token", namespace).type == "kubernetes.io/service-account-token"
    everything = json.dumps(
        [
            client.CustomObjectsApi(admin).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL),
            [e.to_dict() for e in core.list_namespaced_event(namespace).items],
        ],
        default=str,
    )
    assert CANARY not in everything, "no canary in the ManagedSecrets (spec, status, annotations) or Events"
    assert CANARY not in operator.process.logs()[offset:], "no canary in the operator's DEBUG log"
