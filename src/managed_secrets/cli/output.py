"""What the read commands print: a table, JSON, YAML or ``kind.group/name`` lines (``-o``).

JSON and YAML hold the ManagedSecret's metadata and status fields only: versions, stage labels, times,
conditions, rotation progress. There is no value in a ManagedSecret's status, and the plugin never reads a
Secret's data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from managed_secrets.names import API_GROUP, KIND

__all__ = [
    "FORMATS",
    "as_object",
    "condition",
    "emit",
    "print_table",
    "resource_name",
    "status_of",
    "summary",
    "versions_of",
]

FORMATS = ("table", "json", "yaml", "name")
RESOURCE = f"{KIND.lower()}.{API_GROUP}"


def as_object(answer: object) -> dict[str, Any]:
    """A custom-objects API answer (typed ``object`` by the client) as the JSON object it is."""
    if not isinstance(answer, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(answer).__name__}")
    return answer


def status_of(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """The condition of that type in a status (an empty dict if there is none)."""
    return dict(next((c for c in status.get("conditions") or [] if c.get("type") == type_), {}))


def resource_name(obj: Mapping[str, Any]) -> str:
    return f"{RESOURCE}/{obj['metadata']['name']}"


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"name": meta.get("name"), "namespace": meta.get("namespace")}


def summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``status -o json``: where the ManagedSecret stands (metadata only)."""
    status = status_of(obj)
    ready = condition(status, "Ready")
    return {
        **_identity(obj),
        "type": (obj.get("spec") or {}).get("type"),
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "currentVersion": status.get("currentVersion"),
        "previousVersion": status.get("previousVersion"),
        "pendingVersion": status.get("pendingVersion"),
        "lastRotationTime": status.get("lastRotationTime"),
        "nextRotationTime": status.get("nextRotationTime"),
        "rotation": status.get("rotation"),
        "retry": status.get("retry"),
        "projectedSecret": status.get("projectedSecret"),
        **({"hosts": list(status["hosts"])} if status.get("hosts") else {}),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
            for c in status.get("conditions") or []
        ],
    }


def versions_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``versions -o json``: the versions and their stage labels (metadata only)."""
    status = status_of(obj)
    return {
        **_identity(obj),
        "currentVersion": status.get("currentVersion"),
        "previousVersion": status.get("previousVersion"),
        "pendingVersion": status.get("pendingVersion"),
        "versions": [
            {"id": v.get("id"), "stages": list(v.get("stages") or []), "created": v.get("created")}
            for v in status.get("versions") or []
        ],
    }


def emit(documents: Sequence[dict[str, Any]], fmt: str, *, single: bool, out: TextIO | None = None) -> None:
    """Prints the documents as one object (``single``: a NAME was asked for) or as ``{"items": [...]}``."""
    out = out or sys.stdout
    doc: dict[str, Any] = documents[0] if single and len(documents) == 1 else {"items": list(documents)}
    if fmt == "json":
        out.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    else:
        out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def print_table(rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
