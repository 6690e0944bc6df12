"""Run the real operator process against the test cluster, as its own ServiceAccount with deploy/rbac.yaml."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from managed_secrets.names import API_GROUP as GROUP
from managed_secrets.names import API_VERSION as VERSION
from managed_secrets.names import PLURAL, VALUE_SOURCES
from support import kube

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "managedsecrets.io_managedsecrets.yaml"
RBAC_FILE = ROOT / "deploy" / "rbac.yaml"
WATCH_TIMEOUT_SECONDS = 10


ADMISSION_POLICY_FILE = ROOT / "deploy" / "admission-policy.yaml"
USER_ROLES_FILE = ROOT / "deploy" / "user-roles.yaml"


def apply_documents(admin: client.ApiClient, path: Path) -> None:
    """Server-side apply of every document in ``path`` (create or update, as ``kubectl apply`` would)."""
    dynamic = DynamicClient(admin)
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.server_side_apply(
            body=doc, name=doc["metadata"]["name"], field_manager="tests", force_conflicts=True
        )


def install_admission_policy(admin: client.ApiClient) -> None:
    """deploy/admission-policy.yaml and deploy/user-roles.yaml, as every install path ships them."""
    apply_documents(admin, ADMISSION_POLICY_FILE)
    apply_documents(admin, USER_ROLES_FILE)


ADMISSION_POLICY = "managedsecrets-references.managedsecrets.io"
USER_ROLES = ("managed-secrets-view", "managed-secrets-edit", "managed-secrets-admin")


def remove_admission_policy(admin: client.ApiClient, *, roles: bool = False) -> None:
    """Deletes the policy and its binding (and the user roles if ``roles``), e.g. before a chart installs them."""
    api = client.AdmissionregistrationV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    calls = [lambda: api.delete_validating_admission_policy_binding(ADMISSION_POLICY)]
    calls.append(lambda: api.delete_validating_admission_policy(ADMISSION_POLICY))
    if roles:
        calls += [lambda name=name: rbac.delete_cluster_role(name) for name in USER_ROLES]
    for call in calls:
        try:
            call()
        except ApiException as e:
            if e.status != 404:
                raise


def install_crd(admin: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(admin)
    crd = yaml.safe_load(CRD_FILE.read_text())
    name = crd["metadata"]["name"]
    try:
        existing = ext.read_custom_resource_definition(name)
        crd["metadata"]["resourceVersion"] = existing.metadata.resource_version
        ext.replace_custom_resource_definition(name, crd)
    except ApiException as e:
        if e.status != 404:
            raise
        ext.create_custom_resource_definition(crd)

    def established() -> bool:
        got = ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or []))

    kube.eventually(established, what="the ManagedSecret CRD to be established")


def rbac_documents(namespace: str, suffix: str) -> list[dict[str, Any]]:
    """deploy/rbac.yaml for an operator in ``namespace``; cluster-scoped names get ``suffix``."""
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    for doc in docs:
        meta = doc["metadata"]
        if "namespace" in meta:
            meta["namespace"] = namespace
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{suffix}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            for subject in doc["subjects"]:
                subject["namespace"] = namespace
    return docs


def write_token_kubeconfig(admin: client.ApiClient, token: str, path: Path) -> Path:
    cfg = admin.configuration
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert}}
                ],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return path


class OperatorProcess:
    """The ``managed-secrets-operator`` command, started and stopped like a pod would be."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        liveness: bool = False,
        log_level: str = "DEBUG",
        log_format: str = "plain",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness = liveness
        self.log_level = log_level
        self.log_format = log_format
        self.liveness_port = 0

    @property
    def metrics_port(self) -> int:
        """The port the running process serves /metrics on (it picks a free one and logs it)."""
        found = re.findall(r"metrics served on port (\d+)", self.logs())
        assert found, "the operator did not log its metrics port"
        return int(found[-1])

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MSO_NAMESPACE": self.namespace,
            "MSO_PURGE_INTERVAL_SECONDS": "2",
            "MSO_ROTATION_BACKOFF_SECONDS": "1",
            "MSO_METRICS_PORT": "0",
            # Short watches: every test sees Kopf reconnect, and the idle test waits for one in seconds.
            "MSO_WATCH_TIMEOUT_SECONDS": str(WATCH_TIMEOUT_SECONDS),
            # The schedule tests rotate every few seconds, below the production floor of one minute.
            "MSO_MIN_ROTATION_INTERVAL_SECONDS": "1",
            # Short Leases: 6 s unseen, renewed every second.
            "MSO_LEASE_SECONDS": "6",
            "MSO_LEASE_RENEW_SECONDS": "1",
            **self.extra_env,
        }
        env.pop("MSO_REQUIRE_EXISTING_CLUSTER", None)
        # A free port found by binding port 0 can be taken by someone else before the operator binds it:
        # then the operator exits, and it is started again on another port.
        for _ in range(3):
            offset = len(self.logs())
            self._spawn(env)
            if not self._died():
                return
            if "address already in use" not in self.logs()[offset:]:
                break
        raise AssertionError(f"the operator exited at start-up:\n{self.logs()[-4000:]}")

    def _spawn(self, env: dict[str, str]) -> None:
        argv = [
            sys.executable,
            "-m",
            "managed_secrets.operator.main",
            f"--log-level={self.log_level}",
            f"--log-format={self.log_format}",
        ]
        if self.liveness:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.liveness_port = int(s.getsockname()[1])
            argv.append(f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz")
        offset = len(self.logs())  # a restart appends to the same log: only its own lines count
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        kube.eventually(
            lambda: "managed-secrets-operator started" in self.logs()[offset:] or self._died(),
            timeout=60,
            what="the operator to start",
        )
        if self.liveness and not self._died():
            kube.eventually(lambda: self._healthy() or self._died(), timeout=30, what="the liveness endpoint")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class OperatorEnvironment:
    """An operator namespace with the shipped RBAC, a ServiceAccount token kubeconfig, and the process."""

    def __init__(self, admin: client.ApiClient, workdir: Path) -> None:
        self.admin = admin
        self.suffix = uuid.uuid4().hex[:6]
        self.namespace = kube.create_namespace(admin, "mso-system")
        utils.create_from_yaml(admin, yaml_objects=rbac_documents(self.namespace, self.suffix))
        token = kube.token_for(admin, self.namespace, "managed-secrets-operator")
        self.kubeconfig = write_token_kubeconfig(admin, token, workdir / "operator.kubeconfig")
        # One name across restarts, as a pod's container restart keeps it: a restart after a crash takes its
        # Lease back after the fence (4 s) instead of waiting for it to expire. Other processes get their own.
        self.process = OperatorProcess(
            self.kubeconfig, self.namespace, workdir / "operator.log", {"MSO_IDENTITY": "operator"}, liveness=True
        )

    def close(self) -> None:
        self.process.stop()
        rbac = client.RbacAuthorizationV1Api(self.admin)
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            with contextlib.suppress(ApiException):
                delete(f"managed-secrets-operator-{self.suffix}")
        kube.delete_namespace(self.admin, self.namespace)


def managed_secret(name: str, **spec: Any) -> dict[str, Any]:
    """A ManagedSecret body; without a value source it gets one generated password."""
    if not any(source in spec for source in VALUE_SOURCES):
        spec["generate"] = {"keys": [{"name": "password"}]}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ManagedSecret", "metadata": {"name": name}, "spec": spec}


def wait_ready(admin: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    objects = client.CustomObjectsApi(admin)

    def ready() -> dict[str, Any] | None:
        obj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return dict(obj)
        return None

    return kube.eventually(ready, timeout=timeout, what=f"ManagedSecret {namespace}/{name} to be Ready")


def wait_until(check: Any, timeout: float = 30, what: str = "") -> Any:
    return kube.eventually(check, timeout=timeout, what=what)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def open_store(admin: client.ApiClient, operator_namespace: str) -> Any:
    """A SecretVault over the operator's real store and keyring, for tests that must see sealed versions."""
    from managed_secrets.crypto import LocalKeyring
    from managed_secrets.domain.clock import SystemClock
    from managed_secrets.store import SecretVault
    from managed_secrets.store.kubernetes import KubernetesStore

    keyring_secret = client.CoreV1Api(admin).read_namespaced_secret("managed-secrets-keyring", operator_namespace)
    keyring = LocalKeyring.from_bytes(base64.b64decode(keyring_secret.data["keyring.json"]))
    return SecretVault(KubernetesStore(admin, operator_namespace), keyring, keyring.hash_key, SystemClock())


def create(admin: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    """Creates the ManagedSecret ``body`` (e.g. from ``managed_secret``) in ``namespace``."""
    client.CustomObjectsApi(admin).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def secret_data(admin: client.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    """The decoded data of a Secret."""
    secret = client.CoreV1Api(admin).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def get_ms(admin: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    )


def annotate(admin: client.ApiClient, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
    client.CustomObjectsApi(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": annotations}}
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})
