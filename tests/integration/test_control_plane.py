"""The local control plane is a real one: schema validation, garbage collection, RBAC, controllers."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support import kube

pytestmark = pytest.mark.integration

GROUP = "probe.managedsecrets.io"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "colour": {"type": "string", "enum": ["red", "blue"]},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widget_crd(admin: client.ApiClient) -> str:
    ext = client.ApiextensionsV1Api(admin)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as e:
        if e.status != 409:
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"widgets.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    kube.eventually(established, what="the Widget CRD to be established")
    return GROUP


def widget(name: str, spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_custom_object_round_trip_and_schema_rejection(
    admin: client.ApiClient, namespace: str, widget_crd: str
) -> None:
    objects = client.CustomObjectsApi(admin)
    objects.create_namespaced_custom_object(
        widget_crd, "v1", namespace, "widgets", widget("good", {"size": 3, "colour": "red"})
    )
    back = objects.get_namespaced_custom_object(widget_crd, "v1", namespace, "widgets", "good")
    assert back["spec"] == {"size": 3, "colour": "red"}

    with pytest.raises(ApiException) as bad:
        objects.create_namespaced_custom_object(
            widget_crd, "v1", namespace, "widgets", widget("bad", {"size": 11, "colour": "green"})
        )
    assert bad.value.status == 422
    assert "spec.size" in bad.value.body
    assert "spec.colour" in bad.value.body
    with pytest.raises(ApiException) as missing:
        objects.create_namespaced_custom_object(widget_crd, "v1", namespace, "widgets", widget("bad", {}))
    assert missing.value.status == 422
    assert "spec.size" in missing.value.body


def test_owned_object_is_garbage_collected(admin: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "b"})
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, block_owner_deletion=True
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="owned", owner_references=[ref]), data={}),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def gone() -> bool:
        return kube.status_of(lambda: core.read_namespaced_secret("owned", namespace)) == 404

    kube.eventually(gone, timeout=60, what="the garbage collector to delete the owned Secret")


def test_service_account_rbac_is_enforced(admin: client.ApiClient) -> None:
    home = kube.create_namespace(admin, "rbac-home")
    other = kube.create_namespace(admin, "rbac-other")
    try:
        rbac = client.RbacAuthorizationV1Api(admin)
        rbac.create_namespaced_role(
            home,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="secrets"),
                rules=[
                    client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["get", "list", "create"])
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            home,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="secrets"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="secrets"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="app", namespace=home)],
            ),
        )
        as_app = client.CoreV1Api(kube.service_account_client(admin, home, "app"))
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"k": "v"})

        # RBAC propagates through an informer in the API server: allow a moment for the binding.
        kube.eventually(
            lambda: kube.status_of(lambda: as_app.list_namespaced_secret(home)) == 200,
            what="the RoleBinding to take effect",
        )
        assert kube.status_of(lambda: as_app.create_namespaced_secret(home, secret)) == 200
        assert kube.status_of(lambda: as_app.list_namespaced_secret(other)) == 403
        assert kube.status_of(lambda: as_app.create_namespaced_secret(other, secret)) == 403
        assert kube.status_of(lambda: as_app.delete_namespaced_secret("s", home)) == 403
    finally:
        kube.delete_namespace(admin, home)
        kube.delete_namespace(admin, other)


def test_deployment_template_change_creates_a_new_replicaset(admin: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(admin)
    apps.create_namespaced_deployment(namespace, kube.web_deployment())

    def replicasets() -> list[client.V1ReplicaSet]:
        return list(apps.list_namespaced_replica_set(namespace, label_selector="app=web").items)

    first = kube.eventually(replicasets, what="the first ReplicaSet")
    assert len(first) == 1
    patch = {"spec": {"template": {"metadata": {"annotations": {"managedsecrets.io/version": "v2"}}}}}
    apps.patch_namespaced_deployment("web", namespace, patch)
    both = kube.eventually(lambda: len(replicasets()) == 2 and replicasets(), what="a second ReplicaSet")
    templates = [rs.spec.template.metadata.annotations or {} for rs in both]
    assert {t.get("managedsecrets.io/version") for t in templates} == {None, "v2"}
