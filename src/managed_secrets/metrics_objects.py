"""The per-ManagedSecret series of the operator's metrics, kept as one small record per object.

``OperatorMetrics`` (``metrics.py``) holds a ``Tracked`` per ManagedSecret it serves and renders these families
straight from the records at scrape time (``render_objects``): prometheus_client would need a child object per
series and about 10 us per sample to render it; this is about a tenth of that, which keeps a scrape of 10,000
objects near 0.1 s. Every family is described in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PER_OBJECT_CONDITIONS", "PER_OBJECT_FAMILIES", "Tracked", "render_objects"]

PER_OBJECT_CONDITIONS = ("Ready", "Projected", "Rotating", "RotationFailed")
_STATUSES = ("True", "False")


class Tracked:
    """What the per-object series of one ManagedSecret are served from (a few slots: 10,000 objects are normal)."""

    __slots__ = ("conditions", "failures", "last_rotation", "next_rotation")

    def __init__(self) -> None:
        self.conditions: tuple[tuple[str, str], ...] = ()
        self.next_rotation: float | None = None
        self.last_rotation: float | None = None
        self.failures: int | None = None


# The per-object families: (name, help). Rendered by ``OperatorMetrics.exposition`` straight from the objects'
# records (prometheus_client would need a child object per series and ~10 us per sample to render it; this is
# about a tenth of that, which keeps a scrape of 10,000 objects near 0.1 s).
_STATUS_CONDITION = "managed_secrets_status_condition"
_NEXT_ROTATION = "managed_secrets_next_rotation_timestamp_seconds"
_LAST_ROTATION = "managed_secrets_last_rotation_timestamp_seconds"
_ROTATION_FAILURES = "managed_secrets_rotation_failures"
PER_OBJECT_FAMILIES: tuple[tuple[str, str], ...] = (
    (
        _STATUS_CONDITION,
        "1 when condition `condition` of ManagedSecret namespace/name has status `status`, else 0 (conditions "
        + ", ".join(PER_OBJECT_CONDITIONS)
        + ").",
    ),
    (
        _NEXT_ROTATION,
        "Unix time at which the next rotation of a ManagedSecret is due; kept while a rotation is in flight or "
        "failing, removed when rotation is disabled or the object is deleted.",
    ),
    (
        _LAST_ROTATION,
        "Unix time of the last successful rotation of a ManagedSecret (creation of its current rotated version).",
    ),
    (_ROTATION_FAILURES, "Consecutive failed attempts of the rotation of a ManagedSecret (0 after a success)."),
)


def _label(value: str) -> str:
    """A label value escaped for the text format (Kubernetes names never need it; this is the safety net)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def render_objects(
    tracked: Iterable[tuple[str, str, tuple[tuple[str, str], ...], float | None, float | None, int | None]],
) -> bytes:
    """The per-object families in the text format (HELP and TYPE even without samples)."""
    lines: dict[str, list[str]] = {name: [] for name, _doc in PER_OBJECT_FAMILIES}
    status, next_rotation = lines[_STATUS_CONDITION], lines[_NEXT_ROTATION]
    last_rotation, failures = lines[_LAST_ROTATION], lines[_ROTATION_FAILURES]
    wanted = frozenset(PER_OBJECT_CONDITIONS)
    for namespace, name, conditions, next_at, last_at, failed in tracked:
        ids = f'name="{_label(name)}",namespace="{_label(namespace)}"'
        for kind, value in conditions:
            if kind not in wanted:
                continue
            for s in _STATUSES if value in _STATUSES else (*_STATUSES, value):
                status.append(
                    f'{_STATUS_CONDITION}{{condition="{kind}",{ids},status="{_label(s)}"}} '
                    f"{'1.0' if s == value else '0.0'}\n"
                )
        if next_at is not None:
            next_rotation.append(f"{_NEXT_ROTATION}{{{ids}}} {next_at!r}\n")
        if last_at is not None:
            last_rotation.append(f"{_LAST_ROTATION}{{{ids}}} {last_at!r}\n")
        if failed is not None:
            failures.append(f"{_ROTATION_FAILURES}{{{ids}}} {float(failed)}\n")
    out: list[str] = []
    for name, doc in PER_OBJECT_FAMILIES:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out.extend(lines[name])
    return "".join(out).encode()
