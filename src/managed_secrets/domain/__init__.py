"""The secret model, pure: versions, stage labels, rotation bookkeeping, pruning, and the record codec.

No Kopf, no Kubernetes, no I/O, no crypto. Values arrive sealed (``Version.sealed``) with a keyed
``fingerprint`` computed by the crypto layer; time arrives as an argument or through a ``Clock``.
"""

from managed_secrets.domain.clock import Clock, ManualClock, SystemClock, as_utc
from managed_secrets.domain.codec import (
    SCHEMA_VERSION,
    decode_record,
    encode_record,
    from_document,
    to_document,
)
from managed_secrets.domain.labels import (
    BUILTIN_LABELS,
    MAX_STAGE_LABELS,
    StageLabel,
    is_builtin_label,
    validate_label,
)
from managed_secrets.domain.model import (
    RotationProgress,
    RotationStep,
    SecretMetadata,
    SecretRecord,
    SecretType,
    Version,
    new_secret,
    version_id_for,
)
from managed_secrets.domain.operations import (
    abandon_rotation,
    apply_prune,
    begin_rotation,
    check_invariants,
    finish_rotation,
    invariant_violations,
    move_label,
    prune_unlabelled_versions,
    put_value,
    record_rotation_failure,
    record_rotation_step,
    remove_label,
)
from managed_secrets.domain.values import SecretValue, ValueKind

__all__ = [
    "BUILTIN_LABELS",
    "MAX_STAGE_LABELS",
    "SCHEMA_VERSION",
    "Clock",
    "ManualClock",
    "RotationProgress",
    "RotationStep",
    "SecretMetadata",
    "SecretRecord",
    "SecretType",
    "SecretValue",
    "StageLabel",
    "SystemClock",
    "ValueKind",
    "Version",
    "abandon_rotation",
    "apply_prune",
    "as_utc",
    "begin_rotation",
    "check_invariants",
    "decode_record",
    "encode_record",
    "finish_rotation",
    "from_document",
    "invariant_violations",
    "is_builtin_label",
    "move_label",
    "new_secret",
    "prune_unlabelled_versions",
    "put_value",
    "record_rotation_failure",
    "record_rotation_step",
    "remove_label",
    "to_document",
    "validate_label",
    "version_id_for",
]
