"""The Helm chart and the kustomize base against the real control plane.

Static checks (lint, schema, rendering, the CRD and RBAC copies) need only the helm and kubectl binaries.
The install tests run ``helm install`` (pods stay Pending: there is no kubelet) and then the operator
*process* on this machine with a token of the chart's own ServiceAccount, so the API server enforces exactly
the RBAC the chart installed. Assertions about permissions are made on that process's own log and store (the
session-wide operator fixture, if it runs, has another ServiceAccount and another store namespace).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import cluster as local_cluster
from managed_secrets.store import RecordKey
from managed_secrets.store.kubernetes import STORE_SECRET_TYPE, store_secret_name
from support import kube
from support.operator import (
    ADMISSION_POLICY,
    CRD_FILE,
    GROUP,
    PLURAL,
    RBAC_FILE,
    VERSION,
    OperatorProcess,
    create,
    get_ms,
    install_admission_policy,
    install_crd,
    managed_secret,
    remove_admission_policy,
    wait_ready,
    write_token_kubeconfig,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "managed-secrets-operator"
DEPLOY = ROOT / "deploy"
CHART_NAME = "managed-secrets-operator"
# `helm template` has no cluster to ask; any version the chart's kubeVersion accepts will do.
KUBE_VERSION = "1.35.0"
KEYRING_SECRET = "managed-secrets-keyring"
CRD_NAME = "managedsecrets.managedsecrets.io"
# What the chart adds to the CRD file's metadata when it renders it (templates/crds.yaml).
KEEP = {"helm.sh/resource-policy": "keep"}
# What a log shows when the API server refused the operator something.
FORBIDDEN = re.compile(r"APIForbiddenError|Forbidden|forbidden|HTTP 403|lacks |Not enough permissions")


# --- tools ------------------------------------------------------------------------------------------------


@functools.cache
def tools() -> Path:
    """The directory with helm and kubectl (the cached control-plane build)."""
    return local_cluster.build_binaries()


def run(tool: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(tools() / tool), *args], input=stdin, capture_output=True, text=True, timeout=180, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    return done


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("helm", *args, check=check)


def kubectl(
    kubeconfig: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run("kubectl", f"--kubeconfig={kubeconfig}", *args, stdin=stdin, check=check)


def template(*options: str, release: str = "r", namespace: str = "mso") -> str:
    return helm(
        "template", release, str(CHART), "-n", namespace, f"--kube-version={KUBE_VERSION}", *options
    ).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(*options: str, release: str = "r", namespace: str = "mso") -> list[dict[str, Any]]:
    return documents(template(*options, release=release, namespace=namespace))


def aggregated(doc: dict[str, Any]) -> bool:
    """A user-facing ClusterRole (aggregated into view/edit/admin), not one of the operator's own."""
    labels = doc["metadata"].get("labels") or {}
    return any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels)


def find(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """The documents of ``kind`` (the operator's own: user-facing aggregated roles are left out)."""
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (namespace is None or d["metadata"].get("namespace") == namespace)
        and not aggregated(d)
    ]


def only(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, namespace)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def canonical(rules: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], ...]]:
    """Rules compared as sets: order of rules, groups, resources and verbs does not matter."""
    return sorted(
        (
            tuple(sorted(r.get("apiGroups") or [])),
            tuple(sorted(r.get("resources") or [])),
            tuple(sorted(r.get("verbs") or [])),
        )
        for r in rules
    )


def deploy_cluster_role_rules() -> list[dict[str, Any]]:
    return list(only(documents(RBAC_FILE.read_text()), "ClusterRole")["rules"])


def named(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [d for d in find(docs, kind, namespace) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


LEASE_VERBS = {"get", "list", "create", "update", "delete"}


def deploy_lease_role() -> dict[str, Any]:
    return named(documents(RBAC_FILE.read_text()), "Role", f"{CHART_NAME}-leases", "managed-secrets")


# --- static checks ----------------------------------------------------------------------------------------

NAMESPACED = ("--set", "watchNamespaces={team-a,team-b}")
KEYRING_FILE = ("--set", "keyring.source=file", "--set", "keyring.file.secretName=my-keyring")
NO_CRDS = ("--set", "crds.enabled=false")


@pytest.mark.parametrize(
    "options",
    [(), NAMESPACED, KEYRING_FILE, NO_CRDS],
    ids=["default", "namespaced", "keyring-file", "crds-disabled"],
)
def test_helm_lint_passes(options: tuple[str, ...]) -> None:
    done = helm("lint", "--strict", str(CHART), *options)
    assert "0 chart(s) failed" in done.stdout


def without_added_metadata(crd: dict[str, Any], chart_labels: dict[str, str]) -> dict[str, Any]:
    """The rendered CRD without what templates/crds.yaml adds to the file's metadata: the chart's labels (those
    the file does not set itself) and the keep annotation."""
    own = yaml.safe_load(CRD_FILE.read_text())["metadata"]["labels"]
    crd = dict(crd)
    meta = crd["metadata"] = dict(crd["metadata"])
    meta["labels"] = {k: v for k, v in meta["labels"].items() if k in own or k not in chart_labels}
    if meta.pop("annotations", KEEP) != KEEP:
        raise AssertionError(f"unexpected annotations on the rendered CRD: {crd['metadata']}")
    return crd


def test_chart_renders_the_crd_file_with_its_labels_and_the_keep_policy() -> None:
    """The chart has no crds/ (Helm would install it once and never upgrade it): templates/crds.yaml renders
    files/crds/ (tests/unit/test_crd_file.py checks that it is a byte-identical copy of crds/)."""
    assert not (CHART / "crds").exists()
    assert (CHART / "files" / "crds" / CRD_FILE.name).read_bytes() == CRD_FILE.read_bytes()
    original = yaml.safe_load(CRD_FILE.read_text())
    docs = render()
    crd = only(docs, "CustomResourceDefinition")
    labels = only(docs, "Deployment")["metadata"]["labels"]
    # The file's own labels stay as they are (component: crd, not the operator's); the chart's others are added.
    assert crd["metadata"]["labels"] == {**labels, **original["metadata"]["labels"]}
    assert crd["metadata"]["labels"]["app.kubernetes.io/component"] == "crd"
    assert crd["metadata"]["annotations"] == KEEP
    assert without_added_metadata(crd, labels) == original
    # crds.keep=false: the same CRD without the annotation, which Helm then deletes on uninstall.
    unkept = only(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    assert without_added_metadata(unkept, labels) == original


def test_crds_disabled_renders_nothing_crd_related() -> None:
    default, off = template(), template(*NO_CRDS)
    assert "CustomResourceDefinition" in default and "CustomResourceDefinition" not in off
    assert "resource-policy" not in off and "openAPIV3Schema" not in off
    # Everything else is the same; crds.keep means nothing without the CRD.
    assert [d for d in documents(default) if d["kind"] != "CustomResourceDefinition"] == documents(off)
    assert template(*NO_CRDS, "--set", "crds.keep=false") == off
    # --include-crds adds nothing: the chart has no crds/ that Helm would install besides the templates.
    assert "CustomResourceDefinition" not in template(*NO_CRDS, "--include-crds")


def test_kustomize_crd_is_a_byte_identical_copy_of_crds() -> None:
    assert (DEPLOY / "crds" / CRD_FILE.name).read_bytes() == CRD_FILE.read_bytes(), (
        f"copy {CRD_FILE.relative_to(ROOT)} to deploy/crds/"
    )


def test_chart_ships_the_admission_policy_and_user_roles_of_deploy() -> None:
    chart_files = CHART / "files"
    for name in ("admission-policy.yaml", "user-roles.yaml"):
        assert (chart_files / name).read_bytes() == (DEPLOY / name).read_bytes(), (
            f"copy deploy/{name} to {chart_files}"
        )
    docs = render()
    policy = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    binding = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert len(policy) == 1 and len(binding) == 1
    assert binding[0]["spec"]["policyName"] == policy[0]["metadata"]["name"]
    assert binding[0]["spec"]["validationActions"] == ["Deny"]
    roles = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole" and aggregated(d))
    assert roles == ["managed-secrets-admin", "managed-secrets-edit", "managed-secrets-view"]
    off = render("--set", "admissionPolicy.enabled=false", "--set", "userRoles.create=false")
    assert not [d for d in off if d["kind"].startswith("ValidatingAdmissionPolicy") or aggregated(d)]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert {"admission-policy.yaml", "user-roles.yaml"} <= set(kustomization["resources"])


def test_chart_rbac_rules_equal_deploy_rbac_rules() -> None:
    docs = render()
    cluster_role = only(docs, "ClusterRole")
    assert canonical(cluster_role["rules"]) == canonical(deploy_cluster_role_rules())
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    subjects = [
        {"kind": "ServiceAccount", "name": only(docs, "ServiceAccount")["metadata"]["name"], "namespace": "mso"}
    ]
    assert binding["subjects"] == subjects
    # Cluster-wide, the only Role is the one for the member Leases, in the release namespace.
    lease_role = only(docs, "Role")
    assert (lease_role["metadata"]["name"], lease_role["metadata"]["namespace"]) == (
        "r-managed-secrets-operator-leases",
        "mso",
    )
    assert canonical(lease_role["rules"]) == canonical(deploy_lease_role()["rules"])
    lease_binding = only(docs, "RoleBinding")
    assert lease_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": lease_role["metadata"]["name"],
    }
    assert lease_binding["metadata"]["namespace"] == "mso" and lease_binding["subjects"] == subjects


def test_namespaced_rbac_is_the_same_rules_split_by_scope() -> None:
    docs = render(*NAMESPACED)
    deploy_rules = deploy_cluster_role_rules()
    cluster_scoped = (["apiextensions.k8s.io"], ["admissionregistration.k8s.io"])
    namespaced = [r for r in deploy_rules if r["apiGroups"] not in cluster_scoped]
    for ns in ("team-a", "team-b"):
        assert canonical(only(docs, "Role", ns)["rules"]) == canonical(namespaced)
        assert only(docs, "RoleBinding", ns)["subjects"][0]["namespace"] == "mso"
    # Cluster-scoped: only what Kopf reads for discovery (CRDs, and namespace names to match its list).
    assert canonical(only(docs, "ClusterRole")["rules"]) == canonical(
        [
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingadmissionpolicybindings"],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        ]
    )
    # The release namespace: the keyring and the stores (watched by label and by name), the same Secret verbs;
    # and the member Leases, as cluster-wide.
    assert sorted(d["metadata"]["name"] for d in find(docs, "Role", "mso")) == [
        "r-managed-secrets-operator-leases",
        "r-managed-secrets-operator-store",
    ]
    lease_role = named(docs, "Role", "r-managed-secrets-operator-leases", "mso")
    assert canonical(lease_role["rules"]) == canonical(deploy_lease_role()["rules"])
    (store_rule,) = named(docs, "Role", "r-managed-secrets-operator-store", "mso")["rules"]
    secrets_rule = next(r for r in deploy_rules if r["resources"] == ["secrets"])
    assert store_rule["resources"] == ["secrets"]
    assert set(store_rule["verbs"]) == set(secrets_rule["verbs"])
    assert env_of(docs)["MSO_WATCH_NAMESPACES"] == "team-a,team-b"


def test_kustomize_base_renders_what_the_chart_renders() -> None:
    """deploy/ is the chart's default output written by hand: the pod spec, RBAC and Service must agree."""
    base = documents(run("kubectl", "kustomize", str(DEPLOY)).stdout)
    chart = render(release=CHART_NAME, namespace="managed-secrets")
    kinds = (
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRoleBinding",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
    )
    for kind in kinds:
        assert only(base, kind)["metadata"]["name"] == only(chart, kind)["metadata"]["name"]
        assert only(base, kind)["metadata"].get("namespace") == only(chart, kind)["metadata"].get("namespace")
    # The pod specs are equal but for the topology spread's selector: each one selects its own Deployment's pods
    # (the chart's selector labels include app.kubernetes.io/instance, which the base's pods do not have).
    pods: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for name, docs in (("base", base), ("chart", chart)):
        deployment = only(docs, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        spread = pod.pop("topologySpreadConstraints")
        for constraint in spread:
            assert constraint.pop("labelSelector") == deployment["spec"]["selector"], name
        pods[name] = (pod, spread)
    assert pods["base"] == pods["chart"]
    assert only(base, "Deployment")["spec"]["replicas"] == only(chart, "Deployment")["spec"]["replicas"] == 2
    assert only(base, "Deployment")["spec"]["strategy"] == only(chart, "Deployment")["spec"]["strategy"]
    base_pdb, chart_pdb = only(base, "PodDisruptionBudget")["spec"], only(chart, "PodDisruptionBudget")["spec"]
    assert base_pdb["selector"] == only(base, "Deployment")["spec"]["selector"]
    assert {k: v for k, v in base_pdb.items() if k != "selector"} == {
        k: v for k, v in chart_pdb.items() if k != "selector"
    }
    assert canonical(only(base, "Role")["rules"]) == canonical(only(chart, "Role")["rules"])
    assert only(base, "RoleBinding")["subjects"] == only(chart, "RoleBinding")["subjects"]
    assert only(base, "RoleBinding")["roleRef"] == only(chart, "RoleBinding")["roleRef"]
    assert only(base, "Service")["spec"]["ports"] == only(chart, "Service")["spec"]["ports"]
    assert only(base, "ClusterRoleBinding")["subjects"] == only(chart, "ClusterRoleBinding")["subjects"]
    assert canonical(only(base, "ClusterRole")["rules"]) == canonical(only(chart, "ClusterRole")["rules"])
    assert only(base, "CustomResourceDefinition") == yaml.safe_load(CRD_FILE.read_text())
    chart_labels = only(chart, "Deployment")["metadata"]["labels"]
    assert without_added_metadata(only(chart, "CustomResourceDefinition"), chart_labels) == only(
        base, "CustomResourceDefinition"
    )


def test_defaults() -> None:
    docs = render()
    assert {d["kind"] for d in docs} == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }, "ServiceMonitor and NetworkPolicy are opt-in"
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    c = container(docs)
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert c["image"] == f"managed-secrets-operator:{chart_meta['appVersion']}"
    assert c["args"] == ["--log-level=INFO", "--log-format=json", "--liveness=http://0.0.0.0:8080/healthz"]
    env = env_of(docs)
    assert env["MSO_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MSO_KEYRING_SECRET"] == KEYRING_SECRET and "MSO_KEYRING_FILE" not in env
    assert "MSO_WATCH_NAMESPACES" not in env  # cluster-wide
    assert (env["MSO_MAX_WORKERS"], env["MSO_PURGE_INTERVAL_SECONDS"], env["MSO_METRICS_PORT"]) == (
        "8",
        "3600",
        "9090",
    )
    assert (env["MSO_SHARDS"], env["MSO_LEASE_SECONDS"], env["MSO_LEASE_RENEW_SECONDS"]) == ("16", "15", "2")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert only(docs, "Service")["spec"]["ports"][0]["port"] == 9090


def test_values_reach_the_deployment() -> None:
    docs = render(
        "--set", "image.repository=registry.example/mso",
        "--set", "image.tag=1.2.3",
        "--set", "logLevel=DEBUG",
        "--set", "logFormat=plain",
        "--set", "maxWorkers=3",
        "--set", "metrics.port=9300",
        "--set", "probes.port=8081",
        "--set", "extraEnv[0].name=EXTRA,extraEnv[0].value=yes",
        "--set", "imagePullSecrets[0].name=regcred",
        "--set", "podAnnotations.team=secrets",
        "--set", "nodeSelector.pool=system",
    )  # fmt: skip
    c = container(docs)
    assert c["image"] == "registry.example/mso:1.2.3"
    assert c["args"] == ["--log-level=DEBUG", "--log-format=plain", "--liveness=http://0.0.0.0:8081/healthz"]
    env = env_of(docs)
    assert (env["MSO_MAX_WORKERS"], env["MSO_METRICS_PORT"], env["EXTRA"]) == ("3", "9300", "yes")
    pod = only(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"team": "secrets"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert only(docs, "Service")["spec"]["ports"][0]["port"] == 9300


def test_extra_args_are_appended_to_the_operator_args_and_pod_labels_added() -> None:
    docs = render(
        "--set-json", 'extraArgs=["--log-format=full"]',
        "--set", "logLevel=DEBUG",
        "--set", "podLabels.team=secrets",
    )  # fmt: skip
    # After the chart's own: the operator's argument parser takes the last of a repeated flag.
    assert container(docs)["args"] == [
        "--log-level=DEBUG",
        "--log-format=json",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=full",
    ]
    pod = only(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "secrets"
    assert only(docs, "Deployment")["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert container(render("--set-json", "extraArgs=[]"))["args"] == container(render())["args"]


def test_keyring_sources() -> None:
    existing = env_of(render("--set", "keyring.source=existingSecret", "--set", "keyring.secretName=my-keys"))
    assert existing["MSO_KEYRING_SECRET"] == "my-keys"

    docs = render(*KEYRING_FILE)
    env = env_of(docs)
    assert env["MSO_KEYRING_FILE"] == "/etc/managed-secrets/keyring/keyring.json"
    assert "MSO_KEYRING_SECRET" not in env
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "keyring")
    assert volume["secret"]["secretName"] == "my-keyring"
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "keyring")
    assert mount == {"name": "keyring", "mountPath": "/etc/managed-secrets/keyring", "readOnly": True}

    # A path the user mounts with extraVolumes: no Secret volume from the chart.
    docs = render("--set", "keyring.source=file", "--set", "keyring.file.path=/vault/keyring.json")
    assert env_of(docs)["MSO_KEYRING_FILE"] == "/vault/keyring.json"
    assert [v["name"] for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]] == ["tmp"]


def test_optional_objects_render_only_when_enabled() -> None:
    docs = render(
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.labels.release=prom",
        "--set", "networkPolicy.enabled=true",
        "--set", "podDisruptionBudget.enabled=true",
    )  # fmt: skip
    monitor = only(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == only(docs, "Service")["spec"]["selector"]
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert only(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    pdb = only(
        render("--set", "podDisruptionBudget.enabled=true", "--set", "podDisruptionBudget.minAvailable=1"),
        "PodDisruptionBudget",
    )
    assert pdb["spec"] == {"selector": pdb["spec"]["selector"], "minAvailable": 1}

    failed = helm(
        "template", "r", str(CHART), f"--kube-version={KUBE_VERSION}",
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
        check=False,
    )  # fmt: skip
    assert failed.returncode != 0 and "needs metrics.service.enabled" in failed.stderr


def test_replicas_by_default_roll_spread_and_keep_one_through_drains() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    # Time to hand the shards over and delete the Lease (about 10 s) before the pod is killed.
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["topologySpreadConstraints"] == [
        {
            "topologyKey": "kubernetes.io/hostname",
            "maxSkew": 1,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": deployment["spec"]["selector"],
        }
    ]
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"selector": deployment["spec"]["selector"], "maxUnavailable": 1}
    # The replica's identity comes from the downward API: its member Lease is named after its pod.
    env = env_of(docs)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}  # the pod owns its Lease
    assert "MSO_IDENTITY" not in env

    # Rolling with one replica too (the new pod takes over the shards the old one hands over).
    single = only(render("--set", "replicas=1"), "Deployment")
    assert single["spec"]["replicas"] == 1
    assert single["spec"]["strategy"] == deployment["spec"]["strategy"]
    assert env_of(render("--set", "replicas=1"))["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    # An own constraint keeps its selector; an empty list renders none.
    spread = only(
        render(
            "--set-json",
            'topologySpreadConstraints=[{"topologyKey": "zone", "maxSkew": 2, '
            '"whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"x": "y"}}}]',
        ),
        "Deployment",
    )["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread == [
        {"topologyKey": "zone", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"x": "y"}}}
    ]  # fmt: skip
    none = only(render("--set", "topologySpreadConstraints=null"), "Deployment")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in none


def test_pod_disruption_budget_follows_the_replicas() -> None:
    # One replica: no budget by default (minAvailable 1 would block node drains).
    assert not find(render("--set", "replicas=1"), "PodDisruptionBudget")
    forced = only(
        render("--set", "replicas=1", "--set", "podDisruptionBudget.enabled=true"), "PodDisruptionBudget"
    )
    assert forced["spec"]["maxUnavailable"] == 1 and "minAvailable" not in forced["spec"]
    assert only(render("--set", "replicas=3"), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not find(render("--set", "podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


@pytest.mark.parametrize("options", [(), NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_lease_role_in_the_release_namespace(options: tuple[str, ...]) -> None:
    docs = render(*options)
    role = named(docs, "Role", "r-managed-secrets-operator-leases", "mso")
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
    assert sorted(rule["verbs"]) == sorted(LEASE_VERBS)  # exactly these: no watch, patch or deletecollection
    binding = named(docs, "RoleBinding", "r-managed-secrets-operator-leases", "mso")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": only(docs, "ServiceAccount")["metadata"]["name"], "namespace": "mso"}
    ]
    # Leases nowhere else: not in the ClusterRole, not in the served namespaces' Roles.
    others = [d for d in find(docs, "Role") + find(docs, "ClusterRole") if d is not role]
    assert not [r for d in others for r in d["rules"] if "leases" in r["resources"]]
    assert set(deploy_lease_role()["rules"][0]["verbs"]) == LEASE_VERBS


def test_sharding_and_lease_values_reach_the_deployment() -> None:
    env = env_of(
        render(
            "--set", "sharding.shards=32",
            "--set-json", 'leaderElection={"leaseSeconds": 7.5, "renewSeconds": 2.5}',
        )
    )  # fmt: skip
    assert (env["MSO_SHARDS"], env["MSO_LEASE_SECONDS"], env["MSO_LEASE_RENEW_SECONDS"]) == ("32", "7.5", "2.5")
    failed = helm(
        "template", "r", str(CHART), f"--kube-version={KUBE_VERSION}",
        "--set", "leaderElection.leaseSeconds=5", "--set", "leaderElection.renewSeconds=2",
        check=False,
    )  # fmt: skip
    assert failed.returncode != 0 and "at least 3 x leaderElection.renewSeconds" in failed.stderr


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--set", "replicas=0"), "replicas"),
        (("--set", "sharding.shards=0"), "sharding"),
        (("--set", "terminationGracePeriodSeconds=10"), "terminationGracePeriodSeconds"),
        (("--set", "logFormat=xml"), "logFormat"),
        (("--set", "keyring.source=file"), "keyring"),
        (("--set", "keyring.source=vault"), "keyring"),
        (("--set", "watchNamespaces={Not_A_Namespace}"), "watchNamespaces"),
        (("--set", "unknownValue=1"), "unknownValue"),
        (("--set", "crds.enabled=maybe"), "crds"),
        (("--set", "crds.upgrade=true"), "crds"),
        (("--set-json", 'extraArgs="--log-format=full"'), "extraArgs"),
        (("--set-json", "extraArgs=[1]"), "extraArgs"),
    ],
    ids=[
        "no-replicas",
        "no-shards",
        "short-grace-period",
        "log-format",
        "file-without-source",
        "unknown-source",
        "bad-namespace",
        "typo",
        "crds-enabled-not-boolean",
        "crds-unknown-key",
        "extra-args-not-a-list",
        "extra-args-not-strings",
    ],
)
def test_schema_refuses_bad_values(options: tuple[str, ...], expected: str) -> None:
    failed = helm("template", "r", str(CHART), f"--kube-version={KUBE_VERSION}", *options, check=False)
    assert failed.returncode != 0
    assert "values don't meet the specifications of the schema" in failed.stderr
    assert expected in failed.stderr


# --- the key service that seals the keyring (kms.*) -----------------------------------------------------------

PIN_FILE = "/etc/managed-secrets/pkcs11/pin"
PKCS11_VALUES = {
    "kms.pkcs11.library": "/usr/lib/softhsm/libsofthsm2.so",
    "kms.pkcs11.tokenLabel": "mso",
    "kms.pkcs11.keyLabel": "kek-1",
    "kms.pkcs11.pin.secretName": "hsm-pin",
}


def pkcs11(*, without: str = "", **values: str) -> tuple[str, ...]:
    """``--set`` options for kms.provider=pkcs11 with every required value but ``without``."""
    settings = {"kms.provider": "pkcs11", **PKCS11_VALUES, **values}
    settings.pop(without, None)
    return tuple(option for name, value in settings.items() for option in ("--set", f"{name}={value}"))


PKCS11 = pkcs11()
KMSV2 = ("--set", "kms.provider=kmsv2")
KMSV2_SIDECAR = (*KMSV2, "--set", "kms.kmsv2.sidecar.image=registry.example/kms-plugin:1.0")


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(only(docs, "Deployment")["spec"]["template"]["spec"])


def kms_env(env: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in env.items() if name.startswith(("MSO_KMS_", "MSO_PKCS11_"))}


def kms_volumes(docs: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in pod_spec(docs)["volumes"] if v["name"].startswith("kms-")]


@pytest.mark.parametrize("options", [PKCS11, KMSV2, KMSV2_SIDECAR], ids=["pkcs11", "kmsv2", "kmsv2-sidecar"])
def test_helm_lint_passes_with_a_kms_provider(options: tuple[str, ...]) -> None:
    done = helm("lint", "--strict", str(CHART), *options)
    assert "0 chart(s) failed" in done.stdout


def test_kms_none_renders_nothing_key_service_related() -> None:
    docs = render()
    assert not kms_env(env_of(docs))
    assert not kms_volumes(docs)
    assert [m["name"] for m in container(docs)["volumeMounts"]] == ["tmp"]
    # Explicitly none, with provider settings filled in: they are ignored, the output is the same.
    assert (
        template("--set", "kms.provider=none", *pkcs11()[2:], "--set", "kms.kmsv2.sidecar.image=x") == template()
    )


def test_kms_pkcs11_mounts_the_pin_from_its_secret_and_never_puts_it_in_env() -> None:
    docs = render(
        *pkcs11(**{"kms.pkcs11.pin.key": "user-pin", "kms.checkSeconds": "10"}),
        "--set-json", 'kms.pkcs11.env=[{"name": "SOFTHSM2_CONF", "value": "/var/lib/softhsm/softhsm2.conf"}]',
        "--set-json", 'kms.pkcs11.volumes=[{"name": "softhsm", "persistentVolumeClaim": {"claimName": "tokens"}}]',
        "--set-json", 'kms.pkcs11.volumeMounts=[{"name": "softhsm", "mountPath": "/var/lib/softhsm"}]',
    )  # fmt: skip
    env = env_of(docs)
    assert kms_env(env) == {
        "MSO_KMS_PROVIDER": "pkcs11",
        "MSO_KMS_CHECK_SECONDS": "10",
        "MSO_PKCS11_LIBRARY": "/usr/lib/softhsm/libsofthsm2.so",
        "MSO_PKCS11_TOKEN_LABEL": "mso",
        "MSO_PKCS11_KEY_LABEL": "kek-1",
        "MSO_PKCS11_PIN_FILE": PIN_FILE,
    }
    assert env["SOFTHSM2_CONF"] == "/var/lib/softhsm/softhsm2.conf"
    # The PIN is only a file: no variable reads the Secret, nothing is taken from it with envFrom.
    c = container(docs)
    assert not [e for e in c["env"] if "valueFrom" in e and "fieldRef" not in e["valueFrom"]]
    assert "envFrom" not in c
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["kms-pkcs11-pin"] == {
        "name": "kms-pkcs11-pin",
        "secret": {"secretName": "hsm-pin", "defaultMode": 0o400, "items": [{"key": "user-pin", "path": "pin"}]},
    }
    assert volumes["softhsm"] == {"name": "softhsm", "persistentVolumeClaim": {"claimName": "tokens"}}
    assert "kms-socket" not in volumes
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["kms-pkcs11-pin"] == {
        "name": "kms-pkcs11-pin",
        "mountPath": str(Path(PIN_FILE).parent),
        "readOnly": True,
    }
    assert mounts["softhsm"]["mountPath"] == "/var/lib/softhsm"
    # The pod's security stays as it is: read-only root filesystem, non-root.
    default = render()
    assert c["securityContext"] == container(default)["securityContext"]
    assert pod_spec(docs)["securityContext"] == pod_spec(default)["securityContext"]


def test_kms_kmsv2_renders_the_endpoint_and_the_socket_volume() -> None:
    docs = render(*KMSV2)
    assert kms_env(env_of(docs)) == {
        "MSO_KMS_PROVIDER": "kmsv2",
        "MSO_KMS_CHECK_SECONDS": "30",
        "MSO_KMS_ENDPOINT": "unix:///var/run/kmsplugin/socket.sock",
        "MSO_KMS_TIMEOUT_SECONDS": "5",
    }
    # By default the node's KMS plugin directory, the one kube-apiserver's plugin serves.
    assert kms_volumes(docs) == ["kms-socket"]
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "kms-socket")
    assert volume == {"name": "kms-socket", "hostPath": {"path": "/var/run/kmsplugin", "type": "Directory"}}
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "kms-socket")
    assert mount == {"name": "kms-socket", "mountPath": "/var/run/kmsplugin", "readOnly": True}

    # Another endpoint: the socket volume is mounted at its directory; a volume of one's own is used as given.
    docs = render(
        *KMSV2,
        "--set", "kms.kmsv2.endpoint=/run/kms/plugin.sock",
        "--set-json", "kms.timeoutSeconds=2.5",
        "--set-json", 'kms.kmsv2.socketVolume={"hostPath": null, "csi": {"driver": "kms.example.com"}}',
    )  # fmt: skip
    env = env_of(docs)
    assert (env["MSO_KMS_ENDPOINT"], env["MSO_KMS_TIMEOUT_SECONDS"]) == ("/run/kms/plugin.sock", "2.5")
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "kms-socket")
    assert volume == {"name": "kms-socket", "csi": {"driver": "kms.example.com"}}
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "kms-socket")
    assert mount["mountPath"] == "/run/kms"


def test_kms_kmsv2_sidecar_shares_an_emptydir_socket() -> None:
    docs = render(
        *KMSV2_SIDECAR, "--set-json", 'kms.kmsv2.sidecar.args=["--listen=/var/run/kmsplugin/socket.sock"]'
    )
    pod = pod_spec(docs)
    operator, plugin = pod["containers"]
    assert operator["name"] == "operator"
    assert plugin["name"] == "kms-plugin" and plugin["image"] == "registry.example/kms-plugin:1.0"
    assert plugin["args"] == ["--listen=/var/run/kmsplugin/socket.sock"]
    # No hostPath: the socket lives in an emptyDir both containers mount (the plugin writable, to create it).
    assert [v for v in pod["volumes"] if v["name"] == "kms-socket"] == [{"name": "kms-socket", "emptyDir": {}}]
    assert plugin["volumeMounts"] == [{"name": "kms-socket", "mountPath": "/var/run/kmsplugin"}]
    assert {"name": "kms-socket", "mountPath": "/var/run/kmsplugin", "readOnly": True} in operator["volumeMounts"]
    # Without a securityContext of its own the plugin gets the operator's (restricted Pod Security holds).
    assert plugin["securityContext"] == operator["securityContext"]

    # Its own name, securityContext and mount of the socket volume are kept.
    docs = render(
        *KMSV2_SIDECAR,
        "--set-json", 'kms.kmsv2.sidecar.securityContext={"runAsUser": 1000}',
        "--set", "kms.kmsv2.sidecar.name=vault-kms",
        "--set-json", 'kms.kmsv2.sidecar.volumeMounts=[{"name": "kms-socket", "mountPath": "/sockets"}]',
    )  # fmt: skip
    plugin = pod_spec(docs)["containers"][1]
    assert plugin["name"] == "vault-kms" and plugin["securityContext"] == {"runAsUser": 1000}
    assert plugin["volumeMounts"] == [{"name": "kms-socket", "mountPath": "/sockets"}]
    # No sidecar unless the provider is kmsv2.
    assert len(pod_spec(render("--set", "kms.kmsv2.sidecar.image=x"))["containers"]) == 1


SCHEMA_ERROR = "values don't meet the specifications of the schema"


@pytest.mark.parametrize(
    ("options", "expected", "error"),
    [
        (pkcs11(without="kms.pkcs11.tokenLabel"), "'/kms/pkcs11/tokenLabel'", SCHEMA_ERROR),
        (pkcs11(without="kms.pkcs11.keyLabel"), "'/kms/pkcs11/keyLabel'", SCHEMA_ERROR),
        (pkcs11(without="kms.pkcs11.library"), "'/kms/pkcs11/library'", SCHEMA_ERROR),
        (pkcs11(without="kms.pkcs11.pin.secretName"), "'/kms/pkcs11/pin/secretName'", SCHEMA_ERROR),
        (pkcs11(**{"kms.pkcs11.library": "libsofthsm2.so"}), "'/kms/pkcs11/library'", SCHEMA_ERROR),
        (("--set", "kms.provider=hsm"), "'/kms/provider'", SCHEMA_ERROR),
        ((*KMSV2, "--set", "kms.kmsv2.endpoint="), "'/kms/kmsv2/endpoint'", SCHEMA_ERROR),
        ((*KMSV2, "--set", "kms.kmsv2.endpoint=/socket.sock"), "'/kms/kmsv2/endpoint'", SCHEMA_ERROR),
        ((*KMSV2, "--set", "kms.kmsv2.sidecar.name=plugin"), "'/kms/kmsv2/sidecar'", SCHEMA_ERROR),
        ((*KMSV2, "--set", "kms.kmsv2.socketVolume=null"), "kms.kmsv2.socketVolume", "execution error"),
        ((*KMSV2, *KEYRING_FILE), "keyring.source file", "execution error"),
        # Without the schema (--skip-schema-validation) the template still names what is missing.
        (
            (*pkcs11(without="kms.pkcs11.tokenLabel"), "--skip-schema-validation"),
            "kms.pkcs11.tokenLabel is required with kms.provider pkcs11",
            "execution error",
        ),
        (
            (*pkcs11(without="kms.pkcs11.pin.secretName"), "--skip-schema-validation"),
            "kms.pkcs11.pin.secretName (the Secret with the token's PIN) is required",
            "execution error",
        ),
    ],
    ids=[
        "pkcs11-no-token-label",
        "pkcs11-no-key-label",
        "pkcs11-no-library",
        "pkcs11-no-pin-secret",
        "pkcs11-relative-library",
        "unknown-provider",
        "kmsv2-no-endpoint",
        "kmsv2-endpoint-in-root",
        "kmsv2-sidecar-without-image",
        "kmsv2-no-socket-volume",
        "kms-with-keyring-file",
        "pkcs11-no-token-label-unchecked",
        "pkcs11-no-pin-secret-unchecked",
    ],
)
def test_kms_incomplete_settings_fail_naming_the_missing_value(
    options: tuple[str, ...], expected: str, error: str
) -> None:
    failed = helm("template", "r", str(CHART), f"--kube-version={KUBE_VERSION}", *options, check=False)
    assert failed.returncode != 0
    assert error in failed.stderr and expected in failed.stderr, failed.stderr
    if error == SCHEMA_ERROR and "/kms/pkcs11/" in expected:
        # Only the missing value is named, and `helm lint` refuses the same.
        named_values = re.findall(r"'/kms/pkcs11/[a-zA-Z/]+'", failed.stderr)
        assert set(named_values) == {expected}, failed.stderr
        lint = helm("lint", "--strict", str(CHART), *options, check=False)
        assert lint.returncode != 0 and expected in lint.stdout + lint.stderr


def rendered_notes(tmp_path: Path, *options: str) -> str:
    """NOTES.txt as `helm install` prints it: `helm template` skips it, so a copy of the chart renders it."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, dirs_exist_ok=True)
    (chart / "files" / "notes.txt").write_bytes((CHART / "templates" / "NOTES.txt").read_bytes())
    (chart / "templates" / "notes.yaml").write_text('notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n')
    out = helm(
        "template", "r", str(chart), "-n", "mso", f"--kube-version={KUBE_VERSION}",
        "--show-only", "templates/notes.yaml", *options,
    ).stdout  # fmt: skip
    return str(yaml.safe_load(out)["notes"])


def test_kms_notes_name_the_key_service_and_how_to_check_it(tmp_path: Path) -> None:
    assert "Key service" not in rendered_notes(tmp_path)
    check = f"kubectl -n mso get secret {KEYRING_SECRET} -o jsonpath='{{.data}}'"
    notes = rendered_notes(tmp_path, *PKCS11)
    assert 'sealed under key "kek-1" of the PKCS#11 token "mso"' in notes
    assert check in notes and "only keyring.sealed" in notes
    assert 'managed_secrets_key_service_up{provider="pkcs11"}' in notes
    notes = rendered_notes(tmp_path, *KMSV2)
    assert "sealed under the KMS v2 plugin at unix:///var/run/kmsplugin/socket.sock" in notes
    assert check in notes and 'managed_secrets_key_service_up{provider="kmsv2"}' in notes


def comparable_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    """The pod spec without the topology spread (its selector differs), lists keyed by name: a kustomize patch
    puts the items it adds first, the chart last."""
    pod = dict(deployment["spec"]["template"]["spec"])
    pod.pop("topologySpreadConstraints")
    pod["volumes"] = sorted(pod["volumes"], key=lambda v: v["name"])
    containers = []
    for original in pod["containers"]:
        c = dict(original)
        c["env"] = sorted(c["env"], key=lambda e: e["name"])
        c["volumeMounts"] = sorted(c["volumeMounts"], key=lambda m: m["name"])
        containers.append(c)
    pod["containers"] = containers
    return pod


@pytest.mark.parametrize(
    ("example", "options"),
    [
        (
            "kms-pkcs11-example.yaml",
            pkcs11(
                **{
                    "kms.pkcs11.library": "/opt/hsm/lib/libpkcs11.so",
                    "kms.pkcs11.pin.secretName": "managed-secrets-pkcs11-pin",
                }
            ),
        ),
        ("kms-kmsv2-example.yaml", KMSV2),
    ],
    ids=["pkcs11", "kmsv2"],
)
def test_kms_examples_patch_the_kustomize_base_into_what_the_chart_renders(
    tmp_path: Path, example: str, options: tuple[str, ...]
) -> None:
    assert example in (DEPLOY / "kustomization.yaml").read_text()
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copy(DEPLOY / example, overlay / example)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [os.path.relpath(DEPLOY, overlay)], "patches": [{"path": example}]})
    )
    base = only(documents(run("kubectl", "kustomize", str(overlay)).stdout), "Deployment")
    chart = only(render(*options, release=CHART_NAME, namespace="managed-secrets"), "Deployment")
    assert comparable_pod(base) == comparable_pod(chart)
    assert kms_env(env_of([chart]))  # the comparison is about a key service


# --- the real API server: Pod Security and server-side validation -----------------------------------------


def restricted_namespace(admin: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")} | {
        f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")
    }
    client.CoreV1Api(admin).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


def pod_from_deployment(docs: list[dict[str, Any]], namespace: str) -> str:
    """The Deployment's pod template as a bare Pod, which Pod Security *enforces* on (Deployments get warnings)."""
    template_ = only(docs, "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pss-check", "namespace": namespace, "labels": template_["metadata"]["labels"]},
        "spec": template_["spec"],
    }
    return yaml.safe_dump(pod)


def test_rendered_chart_passes_server_side_dry_run_under_restricted_pss(
    admin: client.ApiClient, kubeconfig: str
) -> None:
    ns = restricted_namespace(admin, "mso-pss")
    try:
        for options in (
            (),
            (
                "--set",
                f"watchNamespaces={{{ns}}}",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "podDisruptionBudget.enabled=true",
            ),
        ):
            text = template("--include-crds", *options, namespace=ns)
            applied = kubectl(kubeconfig, "apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=text)
            assert "deployment.apps/r-managed-secrets-operator created (server dry run)" in applied.stdout
            assert "would violate PodSecurity" not in applied.stderr, applied.stderr
            pod = kubectl(
                kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=pod_from_deployment(documents(text), ns)
            )
            assert "pod/pss-check created (server dry run)" in pod.stdout

        # The check is live: a weakened securityContext is refused for the Pod and warned about for the Deployment.
        bad = template(
            "--set",
            "securityContext.allowPrivilegeEscalation=true",
            "--set",
            "podSecurityContext.runAsNonRoot=false",
            "--set",
            "securityContext.runAsNonRoot=false",
            namespace=ns,
        )
        applied = kubectl(kubeconfig, "apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=bad)
        assert 'would violate PodSecurity "restricted:latest"' in applied.stderr
        refused = kubectl(
            kubeconfig,
            "create",
            "--dry-run=server",
            "-f",
            "-",
            stdin=pod_from_deployment(documents(bad), ns),
            check=False,
        )
        assert refused.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in refused.stderr
        assert "allowPrivilegeEscalation != false" in refused.stderr
    finally:
        kube.delete_namespace(admin, ns)


def test_key_service_pods_pass_restricted_pss_but_a_host_socket_does_not(
    admin: client.ApiClient, kubeconfig: str
) -> None:
    """pkcs11 and a kmsv2 sidecar keep the pod "restricted"; the node's plugin socket (a hostPath) cannot."""
    ns = restricted_namespace(admin, "mso-kms-pss")
    try:
        for options in (PKCS11, KMSV2_SIDECAR):
            pod = pod_from_deployment(render(*options, namespace=ns), ns)
            created = kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=pod)
            assert "pod/pss-check created (server dry run)" in created.stdout
        pod = pod_from_deployment(render(*KMSV2, namespace=ns), ns)
        refused = kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=pod, check=False)
        assert refused.returncode != 0
        assert 'volume "kms-socket" uses restricted volume type "hostPath"' in refused.stderr, refused.stderr
    finally:
        kube.delete_namespace(admin, ns)


def test_kustomize_base_applies_and_its_pod_is_admitted(admin: client.ApiClient, kubeconfig: str) -> None:
    core, rbac, apps = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin), client.AppsV1Api(admin)
    if (
        kube.status_of(lambda: core.read_namespace("managed-secrets")) != 404
        or kube.status_of(lambda: rbac.read_cluster_role(CHART_NAME)) != 404
    ):
        pytest.skip("this cluster already has the kustomize base's namespace or ClusterRole; not touching them")
    install_crd(admin)  # so that deleting what apply -k made never has to touch the shared CRD
    try:
        applied = kubectl(kubeconfig, "apply", "-k", str(DEPLOY))
        for line in (
            "namespace/managed-secrets",
            "customresourcedefinition.apiextensions.k8s.io/managedsecrets.managedsecrets.io",
            "serviceaccount/managed-secrets-operator",
            "clusterrole.rbac.authorization.k8s.io/managed-secrets-operator",
            "clusterrolebinding.rbac.authorization.k8s.io/managed-secrets-operator",
            "service/managed-secrets-operator-metrics",
            "deployment.apps/managed-secrets-operator",
            "poddisruptionbudget.policy/managed-secrets-operator",
            "role.rbac.authorization.k8s.io/managed-secrets-operator-leases",
            "rolebinding.rbac.authorization.k8s.io/managed-secrets-operator-leases",
            "validatingadmissionpolicy.admissionregistration.k8s.io/managedsecrets-references.managedsecrets.io",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/managedsecrets-references.managedsecrets.io",
            "clusterrole.rbac.authorization.k8s.io/managed-secrets-edit",
        ):
            assert line in applied.stdout
        namespace = core.read_namespace("managed-secrets")
        assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        deployment = apps.read_namespaced_deployment(CHART_NAME, "managed-secrets")
        assert deployment.spec.template.spec.service_account_name == CHART_NAME
        # The replicaset controller creates the pod in a namespace that enforces "restricted": it was admitted.
        kube.eventually(
            lambda: core.list_namespaced_pod("managed-secrets").items,
            what="the operator pod to be created (admitted under restricted Pod Security)",
        )

        # Applying again changes nothing. kubectl reports the PodDisruptionBudget "configured" every time (it
        # always sends its selector, whose patch strategy is "replace"), but the object is left as it was.
        def pdb_version() -> str | None:
            meta = (
                client.PolicyV1Api(admin)
                .read_namespaced_pod_disruption_budget(CHART_NAME, "managed-secrets")
                .metadata
            )
            return meta.resource_version if meta else None

        before = pdb_version()
        again = kubectl(kubeconfig, "apply", "-k", str(DEPLOY))
        changed = [line for line in again.stdout.splitlines() if "configured" in line]
        assert changed in ([], [f"poddisruptionbudget.policy/{CHART_NAME} configured"]), again.stdout
        assert pdb_version() == before
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(CHART_NAME)
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role(CHART_NAME)
        kube.delete_namespace(admin, "managed-secrets")


# --- helm install + the operator process with the chart's ServiceAccount -----------------------------------


@dataclass
class Release:
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-{CHART_NAME}"


def read_crd(admin: client.ApiClient) -> client.V1CustomResourceDefinition:
    return client.ApiextensionsV1Api(admin).read_custom_resource_definition(CRD_NAME)


def crd_established(admin: client.ApiClient) -> None:
    def established() -> bool:
        conditions = read_crd(admin).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    kube.eventually(established, what="the ManagedSecret CRD to be established")


@contextlib.contextmanager
def installed(
    admin: client.ApiClient, kubeconfig: str, *options: str, chart: Path = CHART, take_ownership: bool = True
) -> Iterator[Release]:
    """``helm install`` into a new namespace that enforces the restricted Pod Security Standard.

    The CRD is cluster-wide and usually exists already (the session's, applied from crds/, or one an earlier
    release kept), so the release takes it over (``--take-ownership``), as one upgraded from chart 0.1.0 does.
    """
    release = Release(f"mso-{uuid.uuid4().hex[:6]}", restricted_namespace(admin, "mso-chart"))
    # The chart installs the cluster-scoped admission policy and user roles itself: the session's copies
    # (applied from deploy/) make way for the release and come back after it.
    remove_admission_policy(admin, roles=True)
    adopt = ("--take-ownership",) if take_ownership else ()
    try:
        helm(
            "install", release.name, str(chart), "-n", release.namespace, f"--kubeconfig={kubeconfig}",
            *adopt, *options,
        )  # fmt: skip
        crd_established(admin)  # before the operator starts
        policy = client.AdmissionregistrationV1Api(admin).read_validating_admission_policy(ADMISSION_POLICY)
        assert policy.metadata.annotations["meta.helm.sh/release-name"] == release.name
        yield release
    finally:
        helm("uninstall", release.name, "-n", release.namespace, f"--kubeconfig={kubeconfig}", check=False)
        kube.delete_namespace(admin, release.namespace)
        install_admission_policy(admin)


def operator_for(admin: client.ApiClient, release: Release, workdir: Path) -> OperatorProcess:
    """The operator process configured as the installed Deployment's pod would be, with its ServiceAccount."""
    deployment = client.AppsV1Api(admin).read_namespaced_deployment(release.fullname, release.namespace)
    pod = deployment.spec.template.spec
    env: dict[str, str] = {}
    # No pod here: an empty POD_UID gives the member Lease no owner (one naming no real pod would be collected).
    fields = {
        "metadata.namespace": release.namespace,
        "metadata.name": f"{release.name}-local",
        "metadata.uid": "",
    }
    for var in pod.containers[0].env:
        if var.value_from is not None:
            env[var.name] = fields[var.value_from.field_ref.field_path]
        else:
            env[var.name] = var.value or ""
    assert env["POD_NAME"] == f"{release.name}-local"  # the identity: its member Lease is named after it
    # A port of its own on this shared machine (0: pick a free one) instead of the pod's 9090.
    env["MSO_METRICS_PORT"] = "0"
    token = kube.token_for(admin, release.namespace, pod.service_account_name)
    kubeconfig = write_token_kubeconfig(admin, token, workdir / f"{release.name}.kubeconfig")
    return OperatorProcess(kubeconfig, release.namespace, workdir / f"{release.name}.log", env)


def member_lease(admin: client.ApiClient, release: Release) -> client.V1Lease | None:
    """The Lease of the operator process started by ``operator_for`` (its identity is <release>-local)."""
    name = f"managed-secrets-member-{release.name}-local"
    try:
        return client.CoordinationV1Api(admin).read_namespaced_lease(name, release.namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def store_exists(admin: client.ApiClient, release: Release, namespace: str, name: str) -> bool:
    secret = store_secret_name(RecordKey(namespace, name))
    return kube.status_of(lambda: client.CoreV1Api(admin).read_namespaced_secret(secret, release.namespace)) == 200


def delete_all_ms(admin: client.ApiClient, namespace: str) -> None:
    """Deletes the namespace's ManagedSecrets while an operator runs, and waits until its finalizer is gone."""
    objects = client.CustomObjectsApi(admin)
    for item in objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"])
    kube.eventually(
        lambda: not objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
        what=f"the ManagedSecrets in {namespace} to be deleted",
    )


def drop_finalizers(admin: client.ApiClient, namespace: str) -> None:
    """Safety net after a failure: no ManagedSecret may keep a namespace Terminating for ever."""
    objects = client.CustomObjectsApi(admin)
    with contextlib.suppress(ApiException):
        for item in objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
            objects.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"], {"metadata": {"finalizers": []}}
            )


def other_operators(admin: client.ApiClient, release: Release) -> list[str]:
    """Bindings of other operator ServiceAccounts (e.g. the session-wide fixture's) that may be running."""
    bindings = client.RbacAuthorizationV1Api(admin).list_cluster_role_binding().items
    return [
        b.metadata.name for b in bindings if CHART_NAME in b.metadata.name and b.metadata.name != release.fullname
    ]


def alone_with(admin: client.ApiClient, namespace: str) -> None:
    """Waits until no ManagedSecret exists outside ``namespace``, before a cluster-wide operator of ours starts.

    Otherwise it would also reconcile other tests' leftovers (e.g. in namespaces being deleted, where the API
    server refuses writes with 403) and fight the session-wide operator over their Secrets.
    """
    objects = client.CustomObjectsApi(admin)

    def others() -> list[str]:
        items = objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        return [
            f"{i['metadata']['namespace']}/{i['metadata']['name']}"
            for i in items
            if i["metadata"]["namespace"] != namespace
        ]

    try:
        kube.eventually(lambda: not others(), timeout=90, what="other tests' ManagedSecrets to be deleted")
    except AssertionError:
        pytest.skip(f"ManagedSecrets of others exist ({others()[:3]}); a second cluster-wide operator would fight")


def forbidden_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if FORBIDDEN.search(line)]


@contextlib.contextmanager
def app_namespace(admin: client.ApiClient) -> Iterator[str]:
    ns = kube.create_namespace(admin, "mso-app")
    try:
        yield ns
    finally:
        drop_finalizers(admin, ns)
        kube.delete_namespace(admin, ns)


def test_cluster_wide_install_reconciles_and_names_a_missing_verb(
    admin: client.ApiClient, kubeconfig: str, tmp_path: Path
) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    with app_namespace(admin) as app, installed(admin, kubeconfig) as release:
        # The Deployment's pod was admitted in a namespace that enforces "restricted".
        kube.eventually(
            lambda: client.CoreV1Api(admin).list_namespaced_pod(release.namespace).items,
            what="the chart's operator pod to be created",
        )
        operator = operator_for(admin, release, tmp_path)
        alone_with(admin, app)
        try:
            operator.start()
            create(admin, app, managed_secret("ok"))
            wait_ready(admin, app, "ok")
            kube.eventually(lambda: store_exists(admin, release, app, "ok"), what="our operator's store record")
            assert client.CoreV1Api(admin).read_namespaced_secret("ok", app).data["password"]
            assert member_lease(admin, release) is not None  # written with the chart's Lease Role
            # Rotate it with a restart target: every verb the rotation path uses is in the chart's role.
            apps = client.AppsV1Api(admin)
            apps.create_namespaced_deployment(app, kube.web_deployment())
            client.CustomObjectsApi(admin).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                app,
                PLURAL,
                "ok",
                {
                    "metadata": {"annotations": {"managedsecrets.io/rotate": "chart-r1"}},
                    "spec": {"restartTargets": [{"kind": "Deployment", "name": "web"}]},
                },
            )
            kube.eventually(lambda: get_ms(admin, app, "ok")["status"]["currentVersion"] == "v2", what="rotation")
            kube.eventually(
                lambda: (
                    (apps.read_namespaced_deployment("web", app).spec.template.metadata.annotations or {}).get(
                        "managedsecrets.io/secret-versions"
                    )
                    == '{"ok": "v2"}'
                ),
                what="the restart target to be rolled",
            )
            assert not forbidden_lines(operator.logs()), forbidden_lines(operator.logs())
            operator.stop()

            # Take 'create' on Secrets away from the installed ClusterRole; a new ManagedSecret cannot be stored.
            role = rbac.read_cluster_role(release.fullname)
            rules = admin.sanitize_for_serialization(role.rules)
            for rule in rules:
                if rule["resources"] == ["secrets"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
            rbac.patch_cluster_role(release.fullname, {"rules": rules})
            create(admin, app, managed_secret("denied"))
            offset = len(operator.logs())
            operator.start()  # resumes both ManagedSecrets as this ServiceAccount
            denied = kube.eventually(
                lambda: [
                    line
                    for line in operator.logs()[offset:].splitlines()
                    if f"{app}/denied" in line and "forbidden" in line and "lacks permission on Secrets" in line
                ],
                timeout=60,
                what="the operator to report the missing permission",
            )
            assert "Kubernetes API error" not in denied[0]  # the operator's own message, not a bare status
            assert not store_exists(admin, release, app, "denied")
            if not other_operators(admin, release):
                # Nobody else reconciled it, so its Ready condition carries our operator's message too.
                ready = next(
                    c for c in get_ms(admin, app, "denied")["status"]["conditions"] if c["type"] == "Ready"
                )
                assert ready["status"] == "False" and "lacks permission on Secrets" in ready["message"], ready
            delete_all_ms(admin, app)
        finally:
            operator.stop()


def test_namespaced_install_serves_only_its_namespaces(
    admin: client.ApiClient, kubeconfig: str, tmp_path: Path
) -> None:
    with (
        app_namespace(admin) as app,
        app_namespace(admin) as other,
        installed(admin, kubeconfig, "--set", f"watchNamespaces={{{app}}}") as release,
    ):
        rbac = client.RbacAuthorizationV1Api(admin)
        assert rbac.read_namespaced_role(release.fullname, app).rules
        assert kube.status_of(lambda: rbac.read_namespaced_role(release.fullname, other)) == 404
        operator = operator_for(admin, release, tmp_path)
        assert operator.extra_env["MSO_WATCH_NAMESPACES"] == app
        try:
            operator.start()
            create(admin, app, managed_secret("served"))
            create(admin, other, managed_secret("not-served"))
            wait_ready(admin, app, "served")
            kube.eventually(
                lambda: store_exists(admin, release, app, "served"), what="our operator's store record"
            )
            # The member Lease, written with the chart's Lease Role; the object got its shard label.
            lease = member_lease(admin, release)
            assert lease is not None and lease.metadata is not None
            assert (lease.metadata.labels or {}).get("managedsecrets.io/member") == "true"
            assert get_ms(admin, app, "served")["metadata"]["labels"]["managedsecrets.io/shard"].isdigit()
            logs = operator.logs()
            # Nothing forbidden: the namespaced Roles plus the small ClusterRole are all Kopf needs.
            assert not forbidden_lines(logs), forbidden_lines(logs)
            assert other not in logs
            assert not store_exists(admin, release, other, "not-served")
            delete_all_ms(admin, app)
            # On SIGTERM it hands its shards over and deletes its Lease (the Role's delete verb).
            operator.stop()
            assert member_lease(admin, release) is None, "the member Lease outlived its replica"
        finally:
            operator.stop()


def test_uninstall_keeps_only_the_documented_objects(
    admin: client.ApiClient, kubeconfig: str, tmp_path: Path
) -> None:
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    rbac, policy = client.RbacAuthorizationV1Api(admin), client.PolicyV1Api(admin)
    networking = client.NetworkingV1Api(admin)
    with app_namespace(admin) as app:
        options = ("--set", "networkPolicy.enabled=true", "--set", "podDisruptionBudget.enabled=true")
        with installed(admin, kubeconfig, *options) as release:
            ns = release.namespace
            operator = operator_for(admin, release, tmp_path)
            alone_with(admin, app)
            try:
                operator.start()
                create(admin, app, managed_secret("kept"))
                wait_ready(admin, app, "kept")
                kube.eventually(lambda: store_exists(admin, release, app, "kept"), what="our store record")
                delete_all_ms(admin, app)  # the store outlives it for the recovery window
            finally:
                operator.stop()
            assert networking.list_namespaced_network_policy(ns).items
            assert policy.list_namespaced_pod_disruption_budget(ns).items

            helm("uninstall", release.name, "-n", ns, f"--kubeconfig={kubeconfig}")

            # Kept on purpose: the keyring and the version stores, in the release namespace.
            secrets = {s.metadata.name: s.type for s in core.list_namespaced_secret(ns).items}
            assert secrets.pop(KEYRING_SECRET) == "managedsecrets.io/keyring"
            assert store_secret_name(RecordKey(app, "kept")) in secrets
            assert set(secrets.values()) == {STORE_SECRET_TYPE}, secrets
            # Kept by its resource policy (crds.keep), with every ManagedSecret.
            crd = read_crd(admin)
            assert crd.metadata.deletion_timestamp is None
            assert (crd.metadata.annotations or {}).get("helm.sh/resource-policy") == "keep"
            # Everything else is gone (the pod and its ReplicaSet through the garbage collector).
            kube.eventually(
                lambda: not apps.list_namespaced_replica_set(ns).items and not core.list_namespaced_pod(ns).items,
                what="the ReplicaSet and pod to be garbage-collected",
            )
            assert not apps.list_namespaced_deployment(ns).items
            assert not core.list_namespaced_service(ns).items
            assert [sa.metadata.name for sa in core.list_namespaced_service_account(ns).items] in ([], ["default"])
            assert not rbac.list_namespaced_role(ns).items and not rbac.list_namespaced_role_binding(ns).items
            assert not networking.list_namespaced_network_policy(ns).items
            assert not policy.list_namespaced_pod_disruption_budget(ns).items
            assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] in (
                [],
                ["kube-root-ca.crt"],
            )
            assert kube.status_of(lambda: rbac.read_cluster_role(release.fullname)) == 404
            assert kube.status_of(lambda: rbac.read_cluster_role_binding(release.fullname)) == 404


# --- the CRD across upgrades: from chart 0.1.0 (CRD in crds/) to the CRD as a template -----------------------

OLD_CHART_CRD = f"charts/{CHART_NAME}/crds/{CRD_FILE.name}"


def git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout


def crds_dir_chart(into: Path) -> Path:
    """The last chart that shipped the CRD in crds/ (0.1.0): git HEAD's until the move to templates/crds.yaml is
    committed, then the one just before the commit that made it."""
    try:
        moved = git("log", "-1", "--format=%H", "--diff-filter=D", "HEAD", "--", OLD_CHART_CRD).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the previous chart comes from the repository's history")
    ref = f"{moved}^" if moved else "HEAD"
    into.mkdir(parents=True)
    archive = git("archive", ref, f"charts/{CHART_NAME}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    chart = into / "charts" / CHART_NAME
    assert (chart / "crds" / CRD_FILE.name).is_file(), f"{ref} has no {OLD_CHART_CRD}"
    assert not (chart / "templates" / "crds.yaml").exists()
    return chart


def chart_with_a_changed_crd(into: Path) -> Path:
    """A copy of the working tree's chart whose CRD has one more (priority 1) printer column, so that what an
    upgrade does to the CRD shows whatever the real CRD file holds."""
    chart = into / CHART_NAME
    shutil.copytree(CHART, chart)
    copy = chart / "files" / "crds" / CRD_FILE.name
    crd = yaml.safe_load(copy.read_text())
    (version,) = crd["spec"]["versions"]
    version["additionalPrinterColumns"].append(
        {"name": "Upgraded", "type": "string", "jsonPath": ".spec.type", "priority": 1,
         "description": "Added by the chart upgrade test."}
    )  # fmt: skip
    copy.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def printer_columns(crd: client.V1CustomResourceDefinition) -> list[str]:
    return [c.name for c in crd.spec.versions[0].additional_printer_columns or []]


def test_upgrade_from_the_crds_dir_chart_takes_over_the_crd_and_uninstall_keeps_it(
    admin: client.ApiClient, kubeconfig: str, tmp_path: Path
) -> None:
    old_chart = crds_dir_chart(tmp_path / "old")
    new_chart = chart_with_a_changed_crd(tmp_path / "new")
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert yaml.safe_load((old_chart / "Chart.yaml").read_text())["version"] != version
    # The CRD as the old chart's crds/ leaves it: the file as it is, without Helm's ownership metadata.
    install_crd(admin)
    try:
        with (
            app_namespace(admin) as app,
            installed(admin, kubeconfig, chart=old_chart, take_ownership=False) as release,
        ):
            where = ("-n", release.namespace, f"--kubeconfig={kubeconfig}")
            before = read_crd(admin)
            assert "meta.helm.sh/release-name" not in (before.metadata.annotations or {})
            assert "Upgraded" not in printer_columns(before)
            assert "kind: CustomResourceDefinition" not in helm("get", "manifest", release.name, *where).stdout
            create(admin, app, managed_secret("survives"))
            uid = get_ms(admin, app, "survives")["metadata"]["uid"]

            # A plain upgrade refuses a CRD that Helm did not create for the release.
            refused = helm("upgrade", release.name, str(new_chart), *where, check=False)
            assert refused.returncode != 0
            assert "invalid ownership metadata" in refused.stderr and CRD_NAME in refused.stderr, refused.stderr
            # The release is left as it was (the check runs before a new revision is recorded).
            assert json.loads(helm("status", release.name, *where, "-o", "json").stdout)["version"] == 1

            # The README's command: with --reuse-values, the values new in 0.2.0 take their defaults.
            helm("upgrade", release.name, str(new_chart), *where, "--take-ownership", "--reuse-values")
            after = read_crd(admin)
            assert after.metadata.uid == before.metadata.uid  # updated in place, never deleted and recreated
            assert "Upgraded" in printer_columns(after)
            assert after.metadata.annotations["helm.sh/resource-policy"] == "keep"
            assert after.metadata.annotations["meta.helm.sh/release-name"] == release.name
            assert after.metadata.annotations["meta.helm.sh/release-namespace"] == release.namespace
            assert after.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
            assert after.metadata.labels["helm.sh/chart"] == f"{CHART_NAME}-{version}"
            assert after.metadata.labels["app.kubernetes.io/component"] == "crd"
            # Helm owns it now: later upgrades need no flag.
            helm("upgrade", release.name, str(new_chart), *where, "--reuse-values")

            uninstalled = helm("uninstall", release.name, *where)
            assert "kept due to the resource policy" in uninstalled.stdout, uninstalled.stdout
            assert f"[CustomResourceDefinition] {CRD_NAME}" in uninstalled.stdout
            kept = read_crd(admin)
            assert kept.metadata.uid == before.metadata.uid and kept.metadata.deletion_timestamp is None
            assert "Upgraded" in printer_columns(kept)
            assert get_ms(admin, app, "survives")["metadata"]["uid"] == uid
    finally:
        install_crd(admin)  # back to the file as it is, for the other tests


def test_turning_crds_off_keeps_the_crd_and_its_objects(admin: client.ApiClient, kubeconfig: str) -> None:
    """A GitOps user switching to crds.enabled=false: the CRD leaves the release but stays in the cluster."""
    with app_namespace(admin) as app, installed(admin, kubeconfig) as release:
        where = ("-n", release.namespace, f"--kubeconfig={kubeconfig}")
        before = read_crd(admin)
        assert before.metadata.annotations["meta.helm.sh/release-name"] == release.name
        create(admin, app, managed_secret("survives"))
        helm("upgrade", release.name, str(CHART), *where, "--reuse-values", *NO_CRDS)
        assert "kind: CustomResourceDefinition" not in helm("get", "manifest", release.name, *where).stdout
        kept = read_crd(admin)
        assert kept.metadata.uid == before.metadata.uid and kept.metadata.deletion_timestamp is None
        assert get_ms(admin, app, "survives")
