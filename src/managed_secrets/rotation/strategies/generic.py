"""Generic rotation: every generated key gets a new value from its password policy; static keys stay."""

from __future__ import annotations

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.generators import generate_password, policy_from_spec
from managed_secrets.rotation.strategy import RotationContext, RotationStrategy, register


@register
class GenerateStrategy(RotationStrategy):
    """``spec.generate``: new passwords per key; nothing outside the operator to update or test."""

    name = "generate"

    def initial(self, ctx: RotationContext) -> SecretValue:
        return self.create(ctx)

    def create(self, ctx: RotationContext) -> SecretValue:
        data: dict[str, bytes] = {}
        for key in ctx.config.get("keys") or ():
            data[str(key["name"])] = generate_password(policy_from_spec(key), ctx.rng).encode()
        for name, text in (ctx.config.get("static") or {}).items():
            data[str(name)] = str(text).encode()
        return SecretValue.from_map(data)
