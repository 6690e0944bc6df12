"""The operator end to end against the real control plane, running as its own ServiceAccount."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import kube
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    install_crd,
    managed_secret,
    wait_ready,
)

from managed_secrets.store.kubernetes import store_secret_name
from managed_secrets.store import RecordKey

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(admin: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorEnvironment]:
    install_crd(admin)
    env = OperatorEnvironment(admin, tmp_path_factory.mktemp("operator"))
    env.process.start()
    yield env
    env.close()


def create(admin: client.ApiClient, namespace: str, body: dict) -> None:
    client.CustomObjectsApi(admin).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def secret_data(admin: client.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    secret = client.CoreV1Api(admin).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def test_create_projects_the_current_value(admin: client.ApiClient, namespace: str, operator: OperatorEnvironment) -> None:
    create(admin, namespace, managed_secret("db", generate={"keys": [{"name": "password", "length": 24}], "static": {"username": "app"}}))
    obj = wait_ready(admin, namespace, "db")
    status = obj["status"]
    assert status["currentVersion"] == "v1"
    assert status["versions"][0]["id"] == "v1" and status["versions"][0]["stages"] == ["ACSCurrent"]
    data = secret_data(admin, namespace, "db")
    assert data["username"] == b"app"
    assert len(data["password"]) == 24
    # The store holds ciphertext only: the password appears nowhere in it.
    store = client.CoreV1Api(admin).read_namespaced_secret(store_secret_name(RecordKey(namespace, "db")), operator.namespace)
    document = base64.b64decode(store.data["record"])
    assert data["password"] not in document
    assert base64.b64encode(data["password"]) not in document
