"""The SSHKey strategy: every version is a new SSH key pair; the public key is published in status.

Without ``sshKey.hosts`` nothing else happens (the steps are local: one store write per rotation). With hosts,
the new key is rolled out to each host's ``authorized_keys`` over SSH before it becomes current, as a cloud
secrets manager's server-secret rotation does (see ``_ssh`` for the transport, ``_authorized_keys`` for the
edit):

- ``set``: logged in with the admin key (``adminSecretRef``), append the pending public key to the login
  user's ``authorized_keys``, tagged with the version id (idempotent: the line of a version is written once);
- ``test``: log in as the user with the *pending* private key and run ``testCommand`` (default ``true``);
- ``finish``: leave exactly two of this secret's lines on each host, the new ACSCurrent key and the one that
  becomes ACSPrevious, so clients holding the previous key keep working until the next rotation (the
  dual-credential idea of the database strategy); the key before it is removed.

A host that fails a step fails the step (named in the condition, with every host's state in
``status.hosts``); ACSCurrent is untouched and still logs in everywhere, since nothing removes it before it
is ACSPrevious, and the step is retried with backoff under the same version id.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from managed_secrets.domain import SecretValue, ValueKind
from managed_secrets.rotation.strategies._authorized_keys import KeyLine, install, keep_only
from managed_secrets.rotation.strategies._ssh import (
    Host,
    HostFailure,
    SshSettings,
    import_known_hosts,
    import_private_key,
    parse_address,
    run_on_hosts,
    session,
)
from managed_secrets.rotation.strategy import (
    RotationContext,
    RotationStepFailed,
    RotationStrategy,
    TargetReport,
    register,
)

__all__ = ["PRIVATE_KEY", "PUBLIC_KEY", "HostsConfig", "SSHKeyConfig", "SSHKeyStrategy"]

PRIVATE_KEY = "ssh-privatekey"
PUBLIC_KEY = "ssh-publickey"

ALGORITHMS = ("ed25519", "rsa")
RSA_SIZES = (2048, 3072, 4096)
# The CRD gives rsaBits no default (it is forbidden with ed25519); omitted, RSA keys get 3072 bits, the size
# ssh-keygen has used by default since OpenSSH 8.1.
DEFAULT_RSA_BITS = 3072
MAX_COMMENT_LENGTH = 256

_PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

_FIELD = "spec.sshKey"
MAX_HOSTS = 64
DEFAULT_AUTHORIZED_KEYS = ".ssh/authorized_keys"
DEFAULTS = {"concurrency": 4, "connectTimeoutSeconds": 10, "commandTimeoutSeconds": 30}
LIMITS = {"concurrency": (1, 32), "connectTimeoutSeconds": (1, 300), "commandTimeoutSeconds": (1, 600)}


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


def _invalid(step: str, message: str) -> RotationStepFailed:
    return RotationStepFailed(step, "InvalidSpec", message)


def _text(raw: Mapping[str, Any], name: str, step: str, default: str | None = None) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(step, f"{_FIELD}.{name} must be a non-empty string")
    return value


@dataclass(frozen=True)
class HostsConfig:
    """``spec.sshKey``'s host fields, for a spec that names hosts (defaults applied here, not by the CRD)."""

    hosts: tuple[Host, ...]
    user: str
    admin_user: str
    admin_secret: str
    admin_key_name: str
    settings: SshSettings
    test_command: str
    concurrency: int

    @property
    def admin_key_label(self) -> str:
        """How messages name the admin key."""
        return f"the admin key of Secret {self.admin_secret}"

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any], step: str) -> HostsConfig | None:
        """``None`` without hosts; ``RotationStepFailed(step, InvalidSpec)`` naming the field if unusable."""
        entries = raw.get("hosts")
        if not entries:
            return None
        if not isinstance(entries, Sequence) or isinstance(entries, str) or len(entries) > MAX_HOSTS:
            raise _invalid(step, f"{_FIELD}.hosts must be a list of at most {MAX_HOSTS} hosts")
        user = _text(raw, "user", step)
        admin_user = _text(raw, "adminUser", step, user)
        ref = raw.get("adminSecretRef")
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
            raise _invalid(step, f"{_FIELD}.adminSecretRef.name must name a Secret holding the admin private key")
        key_name = ref.get("privateKeyKey") or PRIVATE_KEY
        if not isinstance(key_name, str):
            raise _invalid(step, f"{_FIELD}.adminSecretRef.privateKeyKey must be a string")
        known_hosts = raw.get("knownHosts")
        if not isinstance(known_hosts, str) or not known_hosts.strip():
            raise _invalid(
                step,
                f"{_FIELD}.knownHosts must hold the hosts' public keys (or a @cert-authority line): host keys "
                "are never trusted on first use",
            )
        try:
            trusted = import_known_hosts(known_hosts)
        except ValueError as e:
            raise _invalid(step, f"{_FIELD}.knownHosts: {e}") from None
        numbers: dict[str, int] = {}
        for name, default in DEFAULTS.items():
            value = raw.get(name, default)
            low, high = LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _invalid(step, f"{_FIELD}.{name} must be an integer from {low} to {high}")
            numbers[name] = value
        default_file = raw.get("authorizedKeysFile") or DEFAULT_AUTHORIZED_KEYS
        hosts: list[Host] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"{_FIELD}.hosts[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("address"), str):
                raise _invalid(step, f"{where}.address must be host, host:port or [IPv6]:port")
            address = entry["address"].strip()
            try:
                hostname, port = parse_address(address)
            except ValueError as e:
                raise _invalid(step, f"{where}.address: {e}") from None
            if address in seen:
                raise _invalid(step, f"{where}.address: {address} is listed twice")
            seen.add(address)
            path = entry.get("authorizedKeysFile") or default_file
            if not isinstance(path, str) or "\0" in path or "\n" in path:
                raise _invalid(step, f"{where}.authorizedKeysFile must be a file path")
            if admin_user != user and not path.startswith("/"):
                raise _invalid(
                    step,
                    f"{where}.authorizedKeysFile must be an absolute path when adminUser ({admin_user}) is not "
                    f"user ({user}): a relative path is read from the admin's home directory",
                )
            hosts.append(Host(address, hostname, port, path))
        return cls(
            hosts=tuple(hosts),
            user=user,
            admin_user=admin_user,
            admin_secret=ref["name"],
            admin_key_name=key_name,
            settings=SshSettings(
                known_hosts=trusted,
                connect_timeout=float(numbers["connectTimeoutSeconds"]),
                command_timeout=float(numbers["commandTimeoutSeconds"]),
            ),
            test_command=_text(raw, "testCommand", step, "true"),
            concurrency=numbers["concurrency"],
        )


@register
class SSHKeyStrategy(RotationStrategy):
    """A new ed25519 (default) or RSA key pair for every version."""

    name = "sshKey"
    local_only = True

    def is_local(self, config: Mapping[str, Any]) -> bool:
        return not config.get("hosts")

    def targets(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        entries = config.get("hosts") or []
        return tuple(
            str(e["address"]).strip()
            for e in entries
            if isinstance(e, Mapping) and isinstance(e.get("address"), str)
        )

    def initial(self, ctx: RotationContext) -> SecretValue:
        return self._new_key_pair(ctx, "initial")

    def create(self, ctx: RotationContext) -> SecretValue:
        return self._new_key_pair(ctx, "create")

    def set(self, ctx: RotationContext, pending: SecretValue) -> None:
        hosts = HostsConfig.from_spec(ctx.config, "set")
        if hosts is None:
            return
        line = _key_line(pending, ctx.config, "set")
        secret_id, version_id = ctx.secret_id, ctx.version_id
        results = self._edit(ctx, hosts, "set", lambda text: install(text, secret_id, version_id, line))
        _conclude(
            ctx,
            hosts,
            "set",
            results,
            state="Installed",
            message=lambda changed: (
                f"authorized_keys holds {version_id}" + ("" if changed else " (it already did)")
            ),
        )

    def test(self, ctx: RotationContext, pending: SecretValue) -> None:
        self._test_pair(pending)
        hosts = HostsConfig.from_spec(ctx.config, "test")
        if hosts is None:
            return
        try:
            pending_key = import_private_key(pending.as_dict()[PRIVATE_KEY], PRIVATE_KEY)
        except ValueError as e:
            raise RotationStepFailed("test", "InvalidKeyPair", str(e)) from None
        version_id = ctx.version_id

        async def on(host: Host) -> None:
            s = await session(host, hosts.settings, hosts.user, pending_key, f"the key of version {version_id}")
            try:
                await s.run(hosts.test_command)
            finally:
                await s.close()

        results = run_on_hosts(hosts.hosts, hosts.concurrency, on)
        _conclude(
            ctx,
            hosts,
            "test",
            results,
            state="Verified",
            message=lambda _: f"{hosts.user} logged in with {version_id}",
        )

    def finish(self, ctx: RotationContext, pending: SecretValue) -> None:
        hosts = HostsConfig.from_spec(ctx.config, "finish")
        if hosts is None:
            return
        keep = {ctx.version_id: _key_line(pending, ctx.config, "finish")}
        if ctx.current is not None and ctx.current_id is not None and ctx.current_id != ctx.version_id:
            keep[ctx.current_id] = _key_line(ctx.current, ctx.config, "finish")
        secret_id = ctx.secret_id
        held = " and ".join(f"{v} (ACSCurrent)" if v == ctx.version_id else f"{v} (ACSPrevious)" for v in keep)
        results = self._edit(ctx, hosts, "finish", lambda text: keep_only(text, secret_id, keep))
        _conclude(
            ctx, hosts, "finish", results, state="Current", message=lambda _: f"authorized_keys holds {held} only"
        )

    def _edit(
        self, ctx: RotationContext, hosts: HostsConfig, step: str, change: Callable[[bytes | None], bytes | None]
    ) -> list[bool | HostFailure]:
        """``change`` applied to ``authorized_keys`` on every host, logged in with the admin key: per host,
        whether the file was rewritten, or its failure."""
        admin_key = self._admin_key(ctx, hosts, step)

        async def on(host: Host) -> bool:
            s = await session(host, hosts.settings, hosts.admin_user, admin_key, hosts.admin_key_label)
            try:
                return await s.edit(change)
            finally:
                await s.close()

        return run_on_hosts(hosts.hosts, hosts.concurrency, on)

    def _admin_key(self, ctx: RotationContext, hosts: HostsConfig, step: str) -> Any:
        data = ctx.read_secret(hosts.admin_secret)
        where = f"admin Secret {hosts.admin_secret!r} ({_FIELD}.adminSecretRef)"
        if not data:
            raise RotationStepFailed(step, "AdminSecretMissing", f"{where} does not exist or is empty")
        if hosts.admin_key_name not in data:
            raise RotationStepFailed(step, "AdminSecretMissing", f"{where} has no key {hosts.admin_key_name!r}")
        try:
            return import_private_key(data[hosts.admin_key_name], f"{where} key {hosts.admin_key_name!r}")
        except ValueError as e:
            raise RotationStepFailed(step, "InvalidAdminKey", str(e)) from None

    def _test_pair(self, pending: SecretValue) -> None:
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


def _key_line(value: SecretValue, config: Mapping[str, Any], step: str) -> KeyLine:
    """The ``authorized_keys`` line of a version: its public key (parsed, so nothing else gets in) and the
    spec's comment."""
    _private, public_key = _load_pair(value, step)
    comment = SSHKeyConfig.from_spec(config, step).comment
    return KeyLine(_openssh_public(public_key).decode("ascii"), comment)


def _conclude(
    ctx: RotationContext,
    hosts: HostsConfig,
    step: str,
    results: Sequence[object],
    *,
    state: str,
    message: Callable[[Any], str],
) -> None:
    """Reports every host's result; raises ``RotationStepFailed`` naming the hosts that failed."""
    failed: list[tuple[Host, HostFailure]] = []
    for host, result in zip(hosts.hosts, results, strict=True):
        if isinstance(result, HostFailure):
            failed.append((host, result))
            ctx.report(TargetReport(host.address, ctx.version_id, step, "Failed", f"{result.reason}: {result}"))
        else:
            ctx.report(TargetReport(host.address, ctx.version_id, step, state, message(result)))
    if not failed:
        return
    reasons = {f.reason for _h, f in failed}
    reason = reasons.pop() if len(reasons) == 1 else "HostsFailed"
    detail = "; ".join(f"{h.address}: {f}" for h, f in failed)
    if len(detail) > 900:
        detail = detail[:900] + " …"
    raise RotationStepFailed(step, reason, f"{len(failed)} of {len(hosts.hosts)} hosts failed ({detail})")


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
