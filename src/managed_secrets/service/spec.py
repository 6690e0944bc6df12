"""The ManagedSecret spec as typed, immutable values (the CRD has already applied defaults and checks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from managed_secrets.domain import SecretType
from managed_secrets.errors import InvalidRequest
from managed_secrets.names import VALUE_SOURCES
from managed_secrets.projection import TargetSpec
from managed_secrets.projection.render import delimiters_problem
from managed_secrets.rotation.generators import PasswordPolicy, policy_from_spec


@dataclass(frozen=True)
class GeneratedKey:
    name: str
    policy: PasswordPolicy


@dataclass(frozen=True)
class GenerateSource:
    keys: tuple[GeneratedKey, ...]
    static: Mapping[str, str] = field(default_factory=dict)

    @property
    def key_names(self) -> frozenset[str]:
        return frozenset(k.name for k in self.keys) | frozenset(self.static)


@dataclass(frozen=True)
class ValueFromSource:
    secret_name: str
    keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ManagedSecretSpec:
    secret_type: SecretType
    description: str
    encryption_key: str | None
    version_limit: int
    target: TargetSpec
    recovery_window_days: int
    generate: GenerateSource | None = None
    value_from: ValueFromSource | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def source_kind(self) -> str:
        return next((name for name in VALUE_SOURCES if self.raw.get(name) is not None), "")

    @property
    def source_identity(self) -> str:
        """Where values come from and go to (kind plus the Secret, server or endpoint), never a credential.

        Kept beside the record at creation: a restore under another identity would hand the restored
        versions to whoever controls the new target (e.g. a different webhook), so it is refused.
        """
        kind = self.source_kind
        section = self.raw.get(kind) or {}
        if kind == "valueFrom":
            return f"valueFrom:{(section.get('secretRef') or {}).get('name', '')}"
        if kind == "database":
            return f"database:{section.get('engine', '')}://{section.get('host', '')}:{section.get('port', '')}"
        if kind == "external":
            return f"external:{section.get('url', '')}"
        return kind


password_policy = policy_from_spec


def _generated_key(index: int, key: Mapping[str, Any]) -> GeneratedKey:
    try:
        return GeneratedKey(str(key["name"]), password_policy(key))
    except InvalidRequest as e:
        raise type(e)(f"spec.generate.keys[{index}] ({key.get('name')}): {e}") from None


DELIMITERS_PATH = "spec.target.template.delimiters"


def _check_delimiters(spec: Mapping[str, Any]) -> None:
    """``spec.target.template.delimiters``, if set, is a pair that delimits variables. The CRD's rules say so
    too, but are not relied on (a hand-edited CRD would let any pair through): an unusable pair is refused here,
    by field path, before anything is generated or projected."""
    target = spec.get("target") or {}
    template = (target.get("template") if isinstance(target, Mapping) else None) or {}
    delimiters = template.get("delimiters") if isinstance(template, Mapping) else None
    if delimiters is None:
        return
    if not isinstance(delimiters, Mapping):
        raise InvalidRequest(f"{DELIMITERS_PATH}: must be an object with left and right")
    missing = [side for side in ("left", "right") if side not in delimiters]
    if missing:
        raise InvalidRequest(f"{DELIMITERS_PATH}.{missing[0]}: is required when delimiters is set")
    problem = delimiters_problem(delimiters["left"], delimiters["right"])
    if problem is not None:
        side, reason = problem
        raise InvalidRequest(f"{DELIMITERS_PATH}.{side}: {reason}")


def parse_spec(spec: Mapping[str, Any], name: str) -> ManagedSecretSpec:
    """Typed view of ``spec``; ``InvalidRequest`` for what the schema cannot express."""
    try:
        secret_type = SecretType(spec.get("type", "Generic"))
    except ValueError:
        raise InvalidRequest(f"spec.type {spec.get('type')!r} is not supported") from None
    generate = None
    if spec.get("generate") is not None:
        g = spec["generate"]
        generate = GenerateSource(
            keys=tuple(_generated_key(i, k) for i, k in enumerate(g.get("keys") or ())),
            static=dict(g.get("static") or {}),
        )
    value_from = None
    if spec.get("valueFrom") is not None:
        ref = spec["valueFrom"].get("secretRef") or {}
        keys = ref.get("keys")
        value_from = ValueFromSource(secret_name=str(ref.get("name")), keys=tuple(keys) if keys else None)
    _check_delimiters(spec)
    target = TargetSpec.from_spec(spec, default_name=name)
    if target.include_previous and generate is not None:
        keys = set(generate.key_names)
        clashes = sorted(k + target.previous_suffix for k in keys if k + target.previous_suffix in keys)
        if clashes:
            raise InvalidRequest(
                f"spec.target.previousSuffix: {target.previous_suffix!r} makes the previous value's keys "
                f"{clashes} collide with keys of the current value"
            )
    deletion = spec.get("deletion") or {}
    return ManagedSecretSpec(
        secret_type=secret_type,
        description=str(spec.get("description", "")),
        encryption_key=spec.get("encryptionKey"),
        version_limit=int(spec.get("versionLimit", 10)),
        target=target,
        recovery_window_days=int(deletion.get("recoveryWindowDays", 7)),
        generate=generate,
        value_from=value_from,
        raw=spec,
    )
