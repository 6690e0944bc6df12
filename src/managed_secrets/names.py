"""Every name the operator shares with the cluster, the CLI and the tests, in one place.

API coordinates, the ``managedsecrets.io/`` annotations and labels on ManagedSecrets, projected Secrets,
workloads and store Secrets, the attributes the store keeps beside a record, and the JSON shape of the
move-stage request. Pure constants and two tiny codecs: no Kopf, no Kubernetes client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PREFIX = "managedsecrets.io"

# --- the ManagedSecret resource -----------------------------------------------------------------------
API_GROUP = PREFIX
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
KIND = "ManagedSecret"
PLURAL = "managedsecrets"
FINALIZER = f"{PREFIX}/finalizer"
# Set by the operator with its finalizer: the shard (0..shards-1) of the object, so that each replica's watch
# asks the API server for its own shards only (see service.sharding).
SHARD_LABEL = f"{PREFIX}/shard"
# Leases in the operator's namespace, one per replica, naming the shards it holds.
MEMBER_LABEL = f"{PREFIX}/member"
MEMBER_LEASE_PREFIX = "managed-secrets-member"
SHARDS_ANNOTATION = f"{PREFIX}/shards"
SHARD_COUNT_ANNOTATION = f"{PREFIX}/shard-count"
# Kopf drops annotations under its storage prefix from the diffed essence, so user-facing annotations
# (restore, rotate) must not share it: Kopf's bookkeeping gets a sub-domain of its own.
KOPF_PREFIX = f"kopf.{PREFIX}"

# --- annotations a user (or ``kubectl msecret``) puts on a ManagedSecret ----------------------------------
ROTATE_ANNOTATION = f"{PREFIX}/rotate"
REINITIALIZE_ANNOTATION = f"{PREFIX}/reinitialize"  # start again after a lost store, from the version named
RESTORE_ANNOTATION = f"{PREFIX}/restore"
MOVE_STAGE_ANNOTATION = f"{PREFIX}/move-stage"

# --- the projected Secret ---------------------------------------------------------------------------------
VERSION_ANNOTATION = f"{PREFIX}/version"
PREVIOUS_VERSION_ANNOTATION = f"{PREFIX}/previous-version"
DATA_HASH_ANNOTATION = f"{PREFIX}/data-hash"
OWNER_ANNOTATION = f"{PREFIX}/managed-secret"
MANAGED_LABEL = f"{PREFIX}/managed"
# Set by users on a Secret that a ManagedSecret takes its value from (spec.valueFrom.secretRef): the operator
# watches only Secrets that carry it (or MANAGED_LABEL), so a change of the source is seen at once.
SOURCE_LABEL = f"{PREFIX}/source"

# --- restart targets (pod template annotation) -------------------------------------------------------------
WORKLOAD_VERSIONS_ANNOTATION = f"{PREFIX}/secret-versions"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

# --- store and keyring Secrets in the operator's namespace -------------------------------------------------
STORE_SECRET_TYPE = f"{PREFIX}/versions"
STORE_LABEL = f"{PREFIX}/store"
SOURCE_NAMESPACE_LABEL = f"{PREFIX}/source-namespace"
SOURCE_ANNOTATION = f"{PREFIX}/source"
ATTRIBUTE_PREFIX = f"attributes.{PREFIX}/"
KEYRING_SECRET_TYPE = f"{PREFIX}/keyring"
DEFAULT_KEYRING_SECRET = "managed-secrets-keyring"
DEFAULT_OPERATOR_NAMESPACE = "managed-secrets"
ROTATE_KEK_ANNOTATION = f"{PREFIX}/rotate-kek"
KEK_HANDLED_ANNOTATION = f"{PREFIX}/kek-rotation-handled"

# --- attributes kept beside a stored record (store-neutral names) ------------------------------------------
LAST_ROTATE_REQUEST = "last-rotate-request"
LAST_STAGE_MOVE = "last-stage-move"
LAST_STAGE_MOVE_TIME = "last-stage-move-time"
DELETED_AT = "deleted-at"
PURGE_AFTER = "purge-after"
CREATE_FAILURES = "rotation-create-failures"
CREATE_RETRY_AFTER = "rotation-create-retry-after"
SOURCE_IDENTITY = "source"  # where the value comes from (kind and target), checked before a restore

ADMISSION_POLICY = f"managedsecrets-references.{PREFIX}"
"""The ValidatingAdmissionPolicy (and its binding) of deploy/admission-policy.yaml."""

# --- Secrets the operator never reads for a spec, nor adopts: credentials of the cluster and its own state ---
PROTECTED_SECRET_TYPES = frozenset(
    {
        "kubernetes.io/service-account-token",
        "bootstrap.kubernetes.io/token",
        "helm.sh/release.v1",
        "managedsecrets.io/versions",
        "managedsecrets.io/keyring",
    }
)

# --- value sources: the spec fields that say where a value comes from, in the CRD's order ------------------
VALUE_SOURCES = ("generate", "valueFrom", "database", "sshKey", "external")
ROTATING_SOURCES = ("generate", "database", "sshKey", "external")


@dataclass(frozen=True)
class StageMoveRequest:
    """The ``managedsecrets.io/move-stage`` annotation: move ``label`` to ``version``, once per ``id``."""

    label: str
    version: str
    id: str

    def encode(self) -> str:
        return json.dumps({"label": self.label, "version": self.version, "id": self.id}, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str) -> StageMoveRequest:
        """Raises ``ValueError`` for anything but a JSON object with the three string fields."""
        try:
            data = json.loads(raw)
            return cls(label=str(data["label"]), version=str(data["version"]), id=str(data["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"annotation {MOVE_STAGE_ANNOTATION} is not valid JSON") from e
