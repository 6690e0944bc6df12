"""The Helm chart on the local node: the operator image from ``make image`` runs as a real pod.

``hack/build-image.sh`` builds (or, from buildah's layer cache, rebuilds in seconds) the image
localhost/managed-secrets-operator:<version>; ``buildah push`` writes it to an OCI archive that keeps its name,
and ``hack/cluster.py``'s ``import_image`` loads it into the node's containerd. ``helm install`` puts the chart
into a namespace that enforces the restricted Pod Security Standard, with that image (pullPolicy Never: nothing
can be pulled here) and one replica. The pod must be admitted without a warning, run as 65532 with a read-only
root filesystem, become Ready through its readiness probe, and serve ManagedSecrets in another namespace, talking
to the API server through its in-cluster configuration (the ``kubernetes`` Service, DNATed by hack/cluster.py).
``helm uninstall`` must then leave what NOTES.txt and the README say it leaves: the CRD (and the ManagedSecrets
it holds), the keyring Secret and the version store Secrets; the pod and everything else go.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

import cluster as local_cluster
from managed_secrets.names import KEYRING_SECRET_TYPE, MEMBER_LABEL
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import STORE_SECRET_TYPE, store_secret_name
from support import kube
from support.operator import (
    ADMISSION_POLICY,
    GROUP,
    PLURAL,
    VERSION,
    create,
    install_admission_policy,
    managed_secret,
    remove_admission_policy,
    secret_data,
    wait_ready,
)

from .conftest import FIGURES, ROOT, NodeCluster, OperatorImage, tail, wait_for

# A cold image build (debootstrap, wheels) takes minutes; with buildah's layer cache it is seconds.
pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

CHART = ROOT / "charts" / "managed-secrets-operator"
CHART_NAME = "managed-secrets-operator"
KEYRING_SECRET = "managed-secrets-keyring"
CRD_NAME = "managedsecrets.managedsecrets.io"
UID = 65532
# Waiting reasons that mean the pod will not start by itself.
STUCK = ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerError",
         "CreateContainerConfigError", "RunContainerError", "InvalidImageName")  # fmt: skip


# --- tools -------------------------------------------------------------------------------------------------


def _bin(node_cluster: NodeCluster) -> Path:
    """The directory with helm and kubectl (the control plane's build, which cluster.json names)."""
    return Path(json.loads((node_cluster.state_dir / "cluster.json").read_text())["bin"])


def helm(node_cluster: NodeCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(_bin(node_cluster) / "helm"), *args, f"--kubeconfig={node_cluster.kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    return done


def kubectl(node_cluster: NodeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_bin(node_cluster) / "kubectl"), f"--kubeconfig={node_cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def restricted_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")} | {
        f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")
    }
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    return name


def _events(core: client.CoreV1Api, ns: str) -> str:
    return "\n".join(
        f"{e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
        for e in core.list_namespaced_event(ns).items
    )


def _ready_pod(core: client.CoreV1Api, ns: str, selector: str) -> client.V1Pod | None:
    """The release's one pod once it is Ready; fails at once when it cannot start, with its logs and events."""
    pods = [
        p for p in core.list_namespaced_pod(ns, label_selector=selector).items if not p.metadata.deletion_timestamp
    ]
    for pod in pods:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if (waiting and waiting.reason in STUCK) or status.restart_count:
                logs = ""
                with contextlib.suppress(ApiException):
                    logs = core.read_namespaced_pod_log(
                        pod.metadata.name, ns, previous=bool(status.restart_count), tail_lines=40
                    )
                reason = waiting.reason if waiting else f"{status.restart_count} restarts"
                raise AssertionError(
                    f"pod {ns}/{pod.metadata.name} cannot start ({reason}: {waiting.message if waiting else ''})"
                    f"\nlogs:\n{logs}\nevents:\n{_events(core, ns)}"
                )
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if conditions.get("Ready") == "True":
            return pod
    return None


def _audit_events(node_cluster: NodeCluster, ns: str, resource: str, verb: str) -> list[dict[str, Any]]:
    log = node_cluster.state_dir / "logs" / "audit.log"
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if f'"{ns}"' not in line:
            continue
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (
            ref.get("namespace") == ns
            and ref.get("resource") == resource
            and not ref.get("subresource")
            and event.get("verb") == verb
            and event.get("stage") == "ResponseComplete"
        ):
            found.append(event)
    return found


def _drop_finalizers(objects: client.CustomObjectsApi, ns: str) -> None:
    with contextlib.suppress(ApiException):
        for item in objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
            objects.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, item["metadata"]["name"], {"metadata": {"finalizers": []}}
            )


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    app: str  # where the test's ManagedSecrets live

    @property
    def fullname(self) -> str:
        return f"{self.name}-{CHART_NAME}"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name={CHART_NAME},app.kubernetes.io/instance={self.name}"


@pytest.fixture
def namespaces(node_cluster: NodeCluster) -> Iterator[Release]:
    """A restricted release namespace and a plain one for ManagedSecrets; the session's admission policy (if
    another module applied it from deploy/) makes way for the chart's and comes back afterwards."""
    api = node_cluster.api
    core = client.CoreV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    had_policy = kube.status_of(lambda: admission.read_validating_admission_policy(ADMISSION_POLICY)) == 200
    remove_admission_policy(api, roles=True)
    release = Release(
        f"mso-{uuid.uuid4().hex[:6]}",
        restricted_namespace(core, "mso-chart"),
        kube.create_namespace(api, "mso-app"),
    )
    app = release.app
    try:
        yield release
    finally:
        helm(node_cluster, "uninstall", release.name, "-n", release.namespace, "--wait", check=False)
        objects = client.CustomObjectsApi(api)
        _drop_finalizers(objects, app)
        kube.delete_namespace(api, app)
        kube.delete_namespace(api, release.namespace)
        if had_policy:
            install_admission_policy(api)


def test_the_chart_runs_the_image_as_a_restricted_pod_that_serves_managed_secrets(
    node_cluster: NodeCluster, operator_image: OperatorImage, namespaces: Release
) -> None:
    api = node_cluster.api
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rbac, objects = client.RbacAuthorizationV1Api(api), client.CustomObjectsApi(api)
    admission, ext = client.AdmissionregistrationV1Api(api), client.ApiextensionsV1Api(api)
    release = namespaces
    ns, app = release.namespace, release.app

    # --- helm install -> the pod is Ready ------------------------------------------------------------------
    installing = time.monotonic()
    installed = helm(
        node_cluster, "install", release.name, str(CHART), "-n", ns,
        # The CRD may exist already (another module applies crds/): the release adopts it, as an upgrade does.
        "--take-ownership",
        "--set", f"image.repository={operator_image.repository}",
        "--set", f"image.tag={operator_image.tag}",
        "--set", "image.pullPolicy=Never",
        "--set", "replicas=1",
        "--set", "admissionPolicy.enabled=true",
    )  # fmt: skip
    # Admitted by the restricted policy: not even a warning for the Deployment's pod template.
    assert "PodSecurity" not in installed.stderr, installed.stderr
    assert "would violate" not in installed.stderr, installed.stderr
    pod = wait_for(lambda: _ready_pod(core, ns, release.selector), 180, "the operator pod to be Ready", 0.25)
    FIGURES["helm install -> operator pod Ready"] = f"{time.monotonic() - installing:.1f}s"
    name = pod.metadata.name
    assert pod.spec.node_name == node_cluster.node_name
    deployment = apps.read_namespaced_deployment(release.fullname, ns)
    assert deployment.spec.replicas == 1
    (container,) = pod.spec.containers
    assert container.image == operator_image.ref
    assert container.image_pull_policy == "Never"
    assert container.readiness_probe.http_get.path == "/healthz"
    # The readiness probe (not only the container's start) made it Ready: the kubelet probed it.
    status = pod.status.container_statuses[0]
    assert status.ready and status.started and status.restart_count == 0, status
    assert status.image_id, status

    # --- restricted Pod Security: what the API server admitted, and what really runs -------------------------
    sc, psc = container.security_context, pod.spec.security_context
    assert psc.run_as_non_root and psc.run_as_user == UID and psc.seccomp_profile.type == "RuntimeDefault"
    assert sc.run_as_non_root and sc.read_only_root_filesystem and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and not sc.capabilities.add
    created = _audit_events(node_cluster, ns, "pods", "create")
    assert created, "no audit event for the pod's creation"
    annotations = created[-1].get("annotations") or {}
    assert created[-1]["responseStatus"]["code"] == 201, created[-1]
    assert annotations.get("pod-security.kubernetes.io/enforce-policy") == "restricted:latest", annotations
    assert not any("violations" in key for key in annotations), annotations

    # As run: the process's credentials and its root filesystem, seen from inside the container ...
    probe = kubectl(
        node_cluster, "exec", "-n", ns, name, "-c", "operator", "--", "sh", "-c",
        "grep -E '^(Uid|Gid|NoNewPrivs|Seccomp|CapEff):' /proc/1/status; "
        "grep -E '^[^ ]+ / ' /proc/mounts | head -n 1; "
        "if touch /probe 2>/dev/null; then echo root=writable; else echo root=read-only; fi; "
        "touch /tmp/probe && echo tmp=writable",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    proc = dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith(("root=", "tmp=")))
    proc = {k: v.split() for k, v in proc.items()}
    assert proc["Uid"] == [str(UID)] * 4 and proc["Gid"] == [str(UID)] * 4, probe.stdout
    assert proc["NoNewPrivs"] == ["1"] and proc["Seccomp"] == ["2"], probe.stdout  # 2: a seccomp filter
    assert int(proc["CapEff"][0], 16) == 0, probe.stdout
    root_mount = next(line for line in lines if " / " in line)
    assert "ro" in root_mount.split()[3].split(","), root_mount
    assert "root=read-only" in lines and "tmp=writable" in lines, probe.stdout
    # ... and the OCI spec containerd handed to runc.
    container_id = status.container_id.split("://", 1)[1]
    spec = json.loads(local_cluster.node_ctr(node_cluster.state_dir, "containers", "info", container_id).stdout)
    spec = spec["Spec"]
    assert spec["root"].get("readonly") is True, spec["root"]
    assert spec["process"]["user"]["uid"] == UID and spec["process"]["user"]["gid"] == UID
    assert spec["process"].get("noNewPrivileges") is True
    assert not (spec["process"].get("capabilities") or {}).get("effective")
    assert spec["linux"].get("seccomp", {}).get("defaultAction"), "no seccomp profile in the OCI spec"

    # --- it serves ManagedSecrets, through the in-cluster config ---------------------------------------------
    lease = client.CoordinationV1Api(api).read_namespaced_lease(f"managed-secrets-member-{name}", ns)
    assert lease.metadata.labels.get(MEMBER_LABEL) == "true"
    assert [(o.kind, o.name, o.uid) for o in lease.metadata.owner_references or []] == [
        ("Pod", name, pod.metadata.uid)
    ], "the member Lease is owned by its pod"
    creating = time.monotonic()
    create(api, app, managed_secret("served"))
    wait_ready(api, app, "served", timeout=120)
    FIGURES["ManagedSecret create -> Ready (operator in the pod)"] = f"{time.monotonic() - creating:.1f}s"
    password = secret_data(api, app, "served")["password"]
    assert len(password) >= 16
    create(api, app, managed_secret("deleted"))
    wait_ready(api, app, "deleted", timeout=120)
    assert kube.status_of(lambda: core.read_namespaced_secret(KEYRING_SECRET, ns)) == 200
    # Deleted while the operator runs (as NOTES.txt says): its finalizer goes, its store stays for the
    # recovery window.
    objects.delete_namespaced_custom_object(GROUP, VERSION, app, PLURAL, "deleted")
    gone = lambda: objects.get_namespaced_custom_object(GROUP, VERSION, app, PLURAL, "deleted")  # noqa: E731
    wait_for(lambda: kube.status_of(gone) == 404, 60, "the deleted ManagedSecret to be gone")
    logs = core.read_namespaced_pod_log(name, ns)
    assert not re.search(r"APIForbiddenError|Forbidden|forbidden|HTTP 403", logs), tail(logs)

    # --- helm uninstall leaves what NOTES.txt says --------------------------------------------------------
    # The pod's log as it stops (gone with the pod otherwise): its Lease hand-over shows there.
    follow_log = node_cluster.state_dir / f"{name}.log"
    with follow_log.open("wb") as out:
        follower = subprocess.Popen(
            [str(_bin(node_cluster) / "kubectl"), f"--kubeconfig={node_cluster.kubeconfig}", "logs", "-f",
             "--tail=0", "-n", ns, name, "-c", "operator"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    time.sleep(1)
    uninstalling = time.monotonic()
    helm(node_cluster, "uninstall", release.name, "-n", ns)
    wait_for(lambda: not core.list_namespaced_pod(ns).items, 90, "the operator pod to be gone")
    FIGURES["helm uninstall -> operator pod gone"] = f"{time.monotonic() - uninstalling:.1f}s"
    with contextlib.suppress(subprocess.TimeoutExpired):
        follower.wait(10)
    follower.kill()
    follower.wait()
    shutdown_log = follow_log.read_text(errors="replace")
    wait_for(lambda: not apps.list_namespaced_replica_set(ns).items, 30, "the ReplicaSet to be collected")

    # Kept: the keyring Secret and the version stores (both ManagedSecrets', the deleted one's too) ...
    secrets = {s.metadata.name: s.type for s in core.list_namespaced_secret(ns).items}
    assert secrets.pop(KEYRING_SECRET) == KEYRING_SECRET_TYPE
    for kept in ("served", "deleted"):
        assert secrets.pop(store_secret_name(RecordKey(app, kept))) == STORE_SECRET_TYPE
    assert set(secrets.values()) <= {STORE_SECRET_TYPE}, secrets
    # ... the CRD, by its resource policy, and with it the ManagedSecret and its projected Secret.
    crd = ext.read_custom_resource_definition(CRD_NAME)
    assert crd.metadata.deletion_timestamp is None
    assert (crd.metadata.annotations or {}).get("helm.sh/resource-policy") == "keep"
    assert objects.get_namespaced_custom_object(GROUP, VERSION, app, PLURAL, "served")
    assert secret_data(api, app, "served")["password"] == password
    # Gone: everything else but the member Lease (below).
    assert not apps.list_namespaced_deployment(ns).items
    assert not core.list_namespaced_service(ns).items
    assert [sa.metadata.name for sa in core.list_namespaced_service_account(ns).items] in ([], ["default"])
    assert not rbac.list_namespaced_role(ns).items and not rbac.list_namespaced_role_binding(ns).items
    assert kube.status_of(lambda: rbac.read_cluster_role(release.fullname)) == 404
    assert kube.status_of(lambda: rbac.read_cluster_role_binding(release.fullname)) == 404
    assert kube.status_of(lambda: admission.read_validating_admission_policy(ADMISSION_POLICY)) == 404
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] in ([], ["kube-root-ca.crt"])
    # helm uninstall deletes the Lease Role and RoleBinding together with the Deployment, so a stopping replica
    # may be refused (403) the deletion of its own member Lease; the Lease is owned by the pod, so the garbage
    # collector removes it with the pod either way.
    coordination = client.CoordinationV1Api(api)
    try:
        wait_for(
            lambda: not coordination.list_namespaced_lease(ns, label_selector=f"{MEMBER_LABEL}=true").items,
            60,
            "the member Lease to be collected with its pod",
        )
    except AssertionError:
        left = coordination.list_namespaced_lease(ns, label_selector=f"{MEMBER_LABEL}=true").items
        raise AssertionError(
            f"member Lease(s) left after helm uninstall: {[lease.metadata.name for lease in left]}; "
            f"the pod's log as it stopped:\n{tail(shutdown_log, 30)}"
        ) from None
