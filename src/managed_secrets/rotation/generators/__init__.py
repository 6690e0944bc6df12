"""Value generators for rotation strategies: pure functions of a policy and an injected random source.

No Kopf or Kubernetes imports here.
"""

from managed_secrets.rotation.generators.password import (
    MAX_PASSWORD_LENGTH,
    PUNCTUATION,
    PasswordPolicy,
    RandomSource,
    generate_password,
    policy_from_spec,
)

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "PUNCTUATION",
    "PasswordPolicy",
    "RandomSource",
    "generate_password",
    "policy_from_spec",
]
