"""Generic rotation: every generated key gets a new value from its password policy; static keys stay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.generators import PasswordPolicy, generate_password
from managed_secrets.rotation.strategy import RotationContext, RotationStrategy, register


def policy_from_spec(raw: Mapping[str, Any]) -> PasswordPolicy:
    """A password policy from its CRD form (camelCase, defaults applied by the API server)."""
    return PasswordPolicy(
        length=int(raw.get("length", 32)),
        exclude_characters=str(raw.get("excludeCharacters", "")),
        exclude_numbers=bool(raw.get("excludeNumbers", False)),
        exclude_punctuation=bool(raw.get("excludePunctuation", False)),
        exclude_uppercase=bool(raw.get("excludeUppercase", False)),
        exclude_lowercase=bool(raw.get("excludeLowercase", False)),
        include_space=bool(raw.get("includeSpace", False)),
        require_each_included_type=bool(raw.get("requireEachIncludedType", True)),
    )


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
