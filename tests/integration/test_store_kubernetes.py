"""The Kubernetes store against the real API server, as the operator's ServiceAccount with a Role on Secrets."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from kubernetes import client

from managed_secrets.errors import StoreError
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import STORE_SECRET_TYPE, KubernetesStore, store_secret_name
from support import kube, store_contract

pytestmark = pytest.mark.integration

STORE_ROLE_VERBS = ["get", "list", "watch", "create", "update", "delete"]


@pytest.fixture
def store(admin: client.ApiClient, namespace: str) -> Iterator[KubernetesStore]:
    """A store in ``namespace``, used through a ServiceAccount that may only touch Secrets there."""
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="store"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=STORE_ROLE_VERBS)],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="store"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="store"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="operator", namespace=namespace)],
        ),
    )
    api = kube.service_account_client(admin, namespace, "operator")
    kube.eventually(
        lambda: kube.status_of(lambda: client.CoreV1Api(api).list_namespaced_secret(namespace)) == 200,
        what="the store Role to take effect",
    )
    yield KubernetesStore(api, namespace)


KEY = RecordKey("team-a", "db")


def test_create_read_update_delete(store: KubernetesStore) -> None:
    store_contract.check_create_read_update_delete(store, KEY)


def test_binary_documents_round_trip(store: KubernetesStore) -> None:
    store_contract.check_binary_documents_round_trip(store, KEY)


def test_single_race_has_one_winner(store: KubernetesStore) -> None:
    store_contract.check_single_race_has_one_winner(store, KEY)


def test_racing_writers_lose_nothing(store: KubernetesStore) -> None:
    store_contract.check_racing_writers(store, KEY, writers=2, rounds=10)


def test_record_is_a_typed_secret_in_the_operator_namespace(
    store: KubernetesStore, admin: client.ApiClient, namespace: str
) -> None:
    store.write(KEY, b"sealed-bytes", expected_revision=None, attributes={"deleted-at": "2026-01-01T00:00:00Z"})
    secret = client.CoreV1Api(admin).read_namespaced_secret(store_secret_name(KEY), namespace)
    assert secret.type == STORE_SECRET_TYPE
    assert base64.b64decode(secret.data["record"]) == b"sealed-bytes"
    assert secret.metadata.owner_references is None
    assert secret.metadata.annotations["managedsecrets.io/source"] == "team-a/db"
    assert [str(r.key) for r in store.list()] == ["team-a/db"]


def test_long_names_get_a_unique_valid_secret_name(store: KubernetesStore) -> None:
    a = RecordKey("ns", "x" * 250 + "a")
    b = RecordKey("ns", "x" * 250 + "b")
    assert store_secret_name(a) != store_secret_name(b)
    assert max(len(store_secret_name(a)), len(store_secret_name(b))) <= 253
    store.write(a, b"a", expected_revision=None)
    store.write(b, b"b", expected_revision=None)
    assert store.read(a).document == b"a"
    assert store.read(b).document == b"b"


def test_missing_permission_is_named(admin: client.ApiClient, namespace: str) -> None:
    api = kube.service_account_client(admin, namespace, "nobody")
    with pytest.raises(StoreError, match="lacks permission on Secrets"):
        KubernetesStore(api, namespace).read(KEY)
