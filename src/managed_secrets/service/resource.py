"""The ManagedSecret as one reconcile sees it: parsed once from the Kopf body into typed, frozen values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from managed_secrets.cluster import EventRef
from managed_secrets.names import (
    GROUP_VERSION,
    KIND,
    MOVE_STAGE_ANNOTATION,
    RESTORE_ANNOTATION,
    ROTATE_ANNOTATION,
)
from managed_secrets.projection import Owner
from managed_secrets.service.spec import ManagedSecretSpec, parse_spec
from managed_secrets.store import RecordKey

__all__ = ["ManagedSecretResource"]


@dataclass(frozen=True)
class ManagedSecretResource:
    """What the service needs of a ManagedSecret object; ``spec`` is ``None`` when it does not parse."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    resource_version: str
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    status: Mapping[str, Any]
    deleting: bool
    raw_spec: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ManagedSecretResource:
        meta = body.get("metadata") or {}
        return cls(
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta.get("uid") or ""),
            generation=meta.get("generation"),
            resource_version=str(meta.get("resourceVersion") or ""),
            annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            status=dict(body.get("status") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
            raw_spec=dict(body.get("spec") or {}),
        )

    def parse(self) -> ManagedSecretSpec:
        """The typed spec; ``InvalidRequest`` naming the field for what the schema cannot express."""
        return parse_spec(self.raw_spec, self.name)

    @property
    def key(self) -> RecordKey:
        return RecordKey(self.namespace, self.name)

    @property
    def event_ref(self) -> EventRef:
        return EventRef(GROUP_VERSION, KIND, self.namespace, self.name, self.uid, self.resource_version)

    @property
    def owner(self) -> Owner:
        return Owner(GROUP_VERSION, KIND, self.namespace, self.name, self.uid)

    @property
    def rotate_request(self) -> str:
        return self.annotations.get(ROTATE_ANNOTATION, "")

    @property
    def restore_requested(self) -> bool:
        return self.annotations.get(RESTORE_ANNOTATION, "").lower() == "true"

    @property
    def stage_move_request(self) -> str:
        return self.annotations.get(MOVE_STAGE_ANNOTATION, "")

    def old_condition(self, type_: str) -> Mapping[str, Any]:
        for c in self.status.get("conditions") or []:
            if c.get("type") == type_:
                return dict(c)
        return {}
