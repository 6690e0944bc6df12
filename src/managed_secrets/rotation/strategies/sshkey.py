"""The SSHKey strategy: every version is a new SSH key pair; the public key is published in status.

The value has the two keys of a ``kubernetes.io/ssh-auth`` Secret plus the public half:

- ``ssh-privatekey``: the private key in OpenSSH format (``-----BEGIN OPENSSH PRIVATE KEY-----``),
  unencrypted, as ``ssh-keygen`` writes it;
- ``ssh-publickey``: one ``authorized_keys`` line, ``<type> <base64> [comment]``, ending in a newline as a
  ``.pub`` file does.

Keys come from OpenSSL's CSPRNG through ``cryptography``. ``RotationContext.rng`` is not used: it cannot drive
key generation, and a seeded generator must never make a real key. There is no target system, so ``set`` and
``finish`` do nothing; ``test`` checks that the private key loads and belongs to the public key.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from managed_secrets.domain import SecretValue, ValueKind
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, RotationStrategy, register

__all__ = ["PRIVATE_KEY", "PUBLIC_KEY", "SSHKeyConfig", "SSHKeyStrategy"]

PRIVATE_KEY = "ssh-privatekey"
PUBLIC_KEY = "ssh-publickey"

ALGORITHMS = ("ed25519", "rsa")
RSA_SIZES = (2048, 3072, 4096)
# The CRD gives rsaBits no default (it is forbidden with ed25519); omitted, RSA keys get 3072 bits, the size
# ssh-keygen has used by default since OpenSSH 8.1.
DEFAULT_RSA_BITS = 3072
MAX_COMMENT_LENGTH = 256

_PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class SSHKeyConfig:
    """``spec.sshKey``, checked again here although the CRD schema already did (defence against old objects)."""

    algorithm: str = "ed25519"
    rsa_bits: int = DEFAULT_RSA_BITS
    comment: str = ""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], step: str) -> SSHKeyConfig:
        algorithm = spec.get("algorithm", "ed25519")
        if algorithm not in ALGORITHMS:
            raise RotationStepFailed(
                step, "InvalidSpec", f"sshKey.algorithm must be one of {', '.join(ALGORITHMS)}"
            )
        rsa_bits = spec.get("rsaBits")
        if rsa_bits is None:
            rsa_bits = DEFAULT_RSA_BITS
        elif algorithm != "rsa":
            raise RotationStepFailed(step, "InvalidSpec", "sshKey.rsaBits applies only to algorithm rsa")
        elif isinstance(rsa_bits, bool) or rsa_bits not in RSA_SIZES:
            sizes = ", ".join(map(str, RSA_SIZES))
            raise RotationStepFailed(step, "InvalidSpec", f"sshKey.rsaBits must be one of {sizes}")
        comment = spec.get("comment") or ""
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT_LENGTH:
            raise RotationStepFailed(
                step, "InvalidSpec", f"sshKey.comment must be a string of at most {MAX_COMMENT_LENGTH} characters"
            )
        if not comment.isprintable():
            raise RotationStepFailed(
                step, "InvalidSpec", "sshKey.comment must be one line of printable characters"
            )
        return cls(algorithm=algorithm, rsa_bits=rsa_bits, comment=comment.strip())


@register
class SSHKeyStrategy(RotationStrategy):
    """A new ed25519 (default) or RSA key pair for every version."""

    name = "sshKey"
    local_only = True

    def initial(self, ctx: RotationContext) -> SecretValue:
        return self._new_key_pair(ctx, "initial")

    def create(self, ctx: RotationContext) -> SecretValue:
        return self._new_key_pair(ctx, "create")

    def test(self, ctx: RotationContext, pending: SecretValue) -> None:
        private_key, public_key = _load_pair(pending, "test")
        if _openssh_public(private_key) != _openssh_public(public_key):
            raise RotationStepFailed("test", "KeyPairMismatch", f"{PRIVATE_KEY} does not belong to {PUBLIC_KEY}")
        # Equal public halves already prove the pair; a signature also proves the private key is usable.
        message = secrets.token_bytes(32)
        try:
            if isinstance(private_key, ed25519.Ed25519PrivateKey) and isinstance(
                public_key, ed25519.Ed25519PublicKey
            ):
                public_key.verify(private_key.sign(message), message)
            elif isinstance(private_key, rsa.RSAPrivateKey) and isinstance(public_key, rsa.RSAPublicKey):
                signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
                public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise InvalidSignature
        except InvalidSignature:
            raise RotationStepFailed(
                "test", "KeyPairMismatch", f"a signature made with {PRIVATE_KEY} does not verify with {PUBLIC_KEY}"
            ) from None

    def public_data(self, value: SecretValue) -> Mapping[str, str]:
        """``{"publicKey": <the authorized_keys line>}``, only if ``ssh-publickey`` really is a public key."""
        raw = value.as_dict().get(PUBLIC_KEY) if value.kind is ValueKind.MAP else None
        if raw is None:
            return {}
        try:
            line = raw.decode("utf-8").strip()
            serialization.load_ssh_public_key(line.encode("utf-8"))
        except (ValueError, UnsupportedAlgorithm):
            return {}
        # The parser reads only the first line; anything after it is not part of a public key.
        if "\n" in line or "\r" in line:
            return {}
        return {"publicKey": line}

    def _new_key_pair(self, ctx: RotationContext, step: str) -> SecretValue:
        config = SSHKeyConfig.from_spec(ctx.config, step)
        private_key: _PrivateKey
        if config.algorithm == "rsa":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=config.rsa_bits)
        else:
            private_key = ed25519.Ed25519PrivateKey.generate()
        private_pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public_line = _openssh_public(private_key)
        if config.comment:
            public_line += b" " + config.comment.encode("utf-8")
        return SecretValue.from_map({PRIVATE_KEY: private_pem, PUBLIC_KEY: public_line + b"\n"})


def _openssh_public(key: _PrivateKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> bytes:
    """``<type> <base64>`` without a comment."""
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) else key
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def _load_pair(value: SecretValue, step: str) -> tuple[_PrivateKey, ed25519.Ed25519PublicKey | rsa.RSAPublicKey]:
    """Parse both halves. Errors name the key, never quote it (nor chain cryptography's error, which may)."""
    data = value.as_dict() if value.kind is ValueKind.MAP else {}
    for key in (PRIVATE_KEY, PUBLIC_KEY):
        if key not in data:
            raise RotationStepFailed(step, "InvalidKeyPair", f"the value has no {key}")
    try:
        private_key = serialization.load_ssh_private_key(data[PRIVATE_KEY], password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise RotationStepFailed(
            step, "InvalidKeyPair", f"{PRIVATE_KEY} is not an unencrypted OpenSSH private key"
        ) from None
    try:
        public_key = serialization.load_ssh_public_key(data[PUBLIC_KEY])
    except (ValueError, UnsupportedAlgorithm):
        raise RotationStepFailed(step, "InvalidKeyPair", f"{PUBLIC_KEY} is not an OpenSSH public key") from None
    if not isinstance(private_key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise RotationStepFailed(step, "InvalidKeyPair", f"{PRIVATE_KEY} is neither an ed25519 nor an RSA key")
    if not isinstance(public_key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise RotationStepFailed(step, "InvalidKeyPair", f"{PUBLIC_KEY} is neither an ed25519 nor an RSA key")
    return private_key, public_key
