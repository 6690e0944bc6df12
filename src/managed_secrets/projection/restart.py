"""Roll Deployments, StatefulSets and DaemonSets when, and only when, the projected version changes.

Each workload's pod template carries one annotation, ``managedsecrets.io/secret-versions``: a JSON map of
ManagedSecret name to the version its pods were started with. Changing an entry changes the template, so
the workload controller rolls the pods once; an entry that already matches means no write at all, so an
operator restart or a repeated reconcile never restarts anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from managed_secrets.errors import ManagedSecretsError

VERSIONS_ANNOTATION = "managedsecrets.io/secret-versions"


class RestartError(ManagedSecretsError):
    """A restart target could not be read or patched."""


@dataclass(frozen=True)
class RestartTarget:
    kind: str
    name: str


def restart_targets(
    api: client.ApiClient,
    namespace: str,
    targets: Sequence[RestartTarget],
    secret_name: str,
    version_id: str,
    *,
    first_version: bool,
) -> list[RestartTarget]:
    """Brings each target's annotation entry for ``secret_name`` to ``version_id``; returns those patched.

    A workload that has no entry yet while the secret is still at its first version is left alone: its
    pods cannot hold any other value, and rolling them would be a restart for nothing.
    """
    apps = client.AppsV1Api(api)
    patched: list[RestartTarget] = []
    for target in targets:
        read, patch = _calls(apps, target.kind)
        try:
            obj = read(target.name, namespace)
        except ApiException as e:
            if e.status == 404:
                continue  # not there (yet): nothing runs with the old value
            raise _error("get", target, e) from None
        annotations: Mapping[str, str] = obj.spec.template.metadata.annotations or {}
        versions = _parse(annotations.get(VERSIONS_ANNOTATION))
        if versions.get(secret_name) == version_id:
            continue
        if secret_name not in versions and first_version:
            continue
        versions[secret_name] = version_id
        body = {
            "spec": {
                "template": {
                    "metadata": {"annotations": {VERSIONS_ANNOTATION: json.dumps(versions, sort_keys=True)}}
                }
            }
        }
        try:
            patch(target.name, namespace, body)
        except ApiException as e:
            raise _error("patch", target, e) from None
        patched.append(target)
    return patched


def _parse(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _calls(apps: client.AppsV1Api, kind: str) -> tuple[Any, Any]:
    if kind == "Deployment":
        return apps.read_namespaced_deployment, apps.patch_namespaced_deployment
    if kind == "StatefulSet":
        return apps.read_namespaced_stateful_set, apps.patch_namespaced_stateful_set
    if kind == "DaemonSet":
        return apps.read_namespaced_daemon_set, apps.patch_namespaced_daemon_set
    raise RestartError(f"restart target kind {kind!r} is not supported (Deployment, StatefulSet, DaemonSet)")


def _error(verb: str, target: RestartTarget, e: ApiException) -> RestartError:
    plural = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}[target.kind]
    if e.status == 403:
        return RestartError(
            f"cannot {verb} {target.kind} {target.name}: the operator's ServiceAccount lacks '{verb}' on "
            f"{plural} (apps)"
        )
    return RestartError(f"cannot {verb} {target.kind} {target.name}: HTTP {e.status} {e.reason}")
