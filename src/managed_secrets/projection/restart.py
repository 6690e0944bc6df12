"""Roll Deployments, StatefulSets and DaemonSets when, and only when, the projected version changes.

Each workload's pod template carries one annotation, ``managedsecrets.io/secret-versions``: a JSON map of
ManagedSecret name to the version its pods were started with. Changing an entry changes the template, so
the workload controller rolls the pods once; an entry that already matches means no write at all, so an
operator restart or a repeated reconcile never restarts anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from managed_secrets.cluster import Cluster, WorkloadRef
from managed_secrets.errors import KubernetesApiError, ManagedSecretsError
from managed_secrets.names import WORKLOAD_KINDS, WORKLOAD_VERSIONS_ANNOTATION

VERSIONS_ANNOTATION = WORKLOAD_VERSIONS_ANNOTATION


class RestartError(ManagedSecretsError):
    """A restart target could not be read or patched."""


@dataclass(frozen=True)
class RestartTarget:
    kind: str
    name: str


def restart_targets(
    cluster: Cluster,
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
    patched: list[RestartTarget] = []
    for target in targets:
        if target.kind not in WORKLOAD_KINDS:
            raise RestartError(
                f"restart target kind {target.kind!r} is not supported (Deployment, StatefulSet, DaemonSet)"
            )
        ref = WorkloadRef(target.kind, namespace, target.name)
        try:
            annotations = cluster.read_workload_template_annotations(ref)
            if annotations is None:
                continue  # not there (yet): nothing runs with the old value
            versions = _parse(annotations.get(VERSIONS_ANNOTATION))
            if versions.get(secret_name) == version_id:
                continue
            if secret_name not in versions and first_version:
                continue
            versions[secret_name] = version_id
            cluster.patch_workload_template_annotations(
                ref, {VERSIONS_ANNOTATION: json.dumps(versions, sort_keys=True)}
            )
        except KubernetesApiError as e:
            raise RestartError(str(e)) from None
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
