"""Generic rotation: every generated key gets a new value from its password policy; static keys stay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.generators import generate_password, policy_from_spec
from managed_secrets.rotation.strategy import RotationContext, RotationStrategy, register


@register
class GenerateStrategy(RotationStrategy):
    """``spec.generate``: new passwords per key; nothing outside the operator to update or test."""

    name = "generate"
    local_only = True

    def initial(self, ctx: RotationContext) -> SecretValue:
        """The value the spec asks for: generated keys kept from ``ctx.current`` where it has them."""
        return _generate(ctx, keep=ctx.current)

    def create(self, ctx: RotationContext) -> SecretValue:
        return _generate(ctx, keep=None)

    @staticmethod
    def matches_spec(config: Mapping[str, Any], value: SecretValue) -> bool:
        """True when ``value`` has exactly the spec's keys and its static keys' texts (no new version needed)."""
        generated = {str(k["name"]) for k in config.get("keys") or ()}
        static = {str(k): str(v).encode() for k, v in (config.get("static") or {}).items()}
        if set(value.keys()) != generated | set(static):
            return False
        data = value.as_dict()
        return all(data.get(k) == v for k, v in static.items())


def _generate(ctx: RotationContext, keep: SecretValue | None) -> SecretValue:
    kept = keep.as_dict() if keep is not None and keep.keys() else {}
    data: dict[str, bytes] = {}
    for key in ctx.config.get("keys") or ():
        name = str(key["name"])
        data[name] = kept[name] if name in kept else generate_password(policy_from_spec(key), ctx.rng).encode()
    for name, text in (ctx.config.get("static") or {}).items():
        data[str(name)] = str(text).encode()
    return SecretValue.from_map(data)
