"""SSH to the hosts of ``sshKey.hosts`` (AsyncSSH): edit ``authorized_keys`` over SFTP, prove a login works.

- **Host keys are checked before anything is sent.** Every connection verifies the server's host key (or its
  host certificate, with ``@cert-authority`` lines) against ``sshKey.knownHosts`` during key exchange, so an
  unknown or changed host never sees a login attempt, let alone the admin key. There is no trust on first use.
- **Only the keys given are offered:** no SSH agent, no ``~/.ssh/config``, no default key files, no password
  or keyboard-interactive authentication.
- **Edits are atomic:** the new file is written beside the old one (same directory, mode and owner), then
  renamed over it with the ``posix-rename@openssh.com`` extension, so sshd reads either the old file or the new
  one, never a half-written one. Two writers editing the same file at the same moment can still lose one of
  their edits (SFTP has no lock); give each host's ``authorized_keys`` one automated writer.
- **Errors never carry a value:** each failure is mapped to a fixed reason and a message naming the host, the
  user and the file; no text from a library or a server that could quote a key goes into status.

Every call runs its own event loop (``asyncio.run``) in the calling worker thread; the hosts of one step are
reached concurrently, at most ``concurrency`` at a time, each within its own timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import asyncssh

__all__ = [
    "Host",
    "HostFailure",
    "Session",
    "SshSettings",
    "connect",
    "import_known_hosts",
    "import_private_key",
    "parse_address",
    "run_on_hosts",
    "session",
]

T = TypeVar("T")

# AsyncSSH logs each connection at INFO; the operator's own log says what matters, per step.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

MAX_AUTHORIZED_KEYS_BYTES = 1 << 20
"""An ``authorized_keys`` file larger than this (1 MiB) is refused rather than read."""


class HostFailure(Exception):
    """One host failed a step: ``reason`` is a fixed word, the message names the host (never a value)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Host:
    """One entry of ``sshKey.hosts``."""

    address: str
    """As the spec writes it (``host``, ``host:port`` or ``[v6]:port``): the name in status and messages."""
    hostname: str
    port: int
    authorized_keys_file: str


@dataclass(frozen=True)
class SshSettings:
    known_hosts: asyncssh.SSHKnownHosts = field(repr=False)
    """``sshKey.knownHosts``, parsed once (``import_known_hosts``) for every connection of a step."""
    connect_timeout: float = 10.0
    command_timeout: float = 30.0


def parse_address(address: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6addr]`` or ``[v6addr]:port`` → ``(host, port)``; ``ValueError`` if not."""
    text = address.strip()
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("an IPv6 address must be written [address] or [address]:port")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("only :port may follow [address]")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise ValueError("write an IPv6 address as [address] or [address]:port")
    else:
        host = text
    if not host or any(c.isspace() for c in host):
        raise ValueError("the host name is empty or holds a space")
    port = 22
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError("the port must be a number from 1 to 65535")
        port = int(port_text)
    return host, port


def import_known_hosts(text: str) -> asyncssh.SSHKnownHosts:
    """``ValueError`` (naming the line, never quoting it) when ``text`` is not in known_hosts format.

    AsyncSSH skips lines whose key does not parse; here every entry must hold a key, so a typo is an error
    rather than a host that is silently refused."""
    entries = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].startswith("@"):
            if fields[0] not in ("@cert-authority", "@revoked"):
                raise ValueError(f"line {number} has an unknown marker (only @cert-authority and @revoked)")
            fields = fields[1:]
        if len(fields) < 3:
            raise ValueError(f"line {number} is not 'host-patterns key-type base64-key'")
        try:
            asyncssh.import_public_key(f"{fields[1]} {fields[2]}")
        except (ValueError, asyncssh.KeyImportError):
            raise ValueError(f"line {number} does not hold a public key OpenSSH reads") from None
        entries += 1
    if not entries:
        raise ValueError("it holds no host key")
    try:
        return asyncssh.import_known_hosts(text)
    except (ValueError, asyncssh.KeyImportError):
        raise ValueError("it is not in OpenSSH known_hosts format") from None


def import_private_key(data: bytes, what: str) -> asyncssh.SSHKey:
    """``ValueError`` naming ``what`` (never the key) when ``data`` is not an unencrypted private key."""
    try:
        return asyncssh.import_private_key(data)
    except (ValueError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
        raise ValueError(f"{what} is not an unencrypted private key in a format OpenSSH reads") from None


async def session(
    host: Host, settings: SshSettings, username: str, key: asyncssh.SSHKey, key_name: str
) -> Session:
    """``connect`` wrapped in a ``Session``; close it with ``close``."""
    return Session(host, await connect(host, settings, username, key, key_name), settings, username)


class Session:
    """One logged-in connection to one host."""

    def __init__(self, host: Host, conn: asyncssh.SSHClientConnection, settings: SshSettings, who: str) -> None:
        self.host = host
        self.conn = conn
        self.settings = settings
        self.who = who

    async def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(asyncssh.Error, OSError):
            await self.conn.wait_closed()

    async def run(self, command: str) -> None:
        """Runs ``command``; ``HostFailure`` unless it exits 0."""
        where = f"{self.who}@{self.host.address}"
        try:
            result = await asyncio.wait_for(
                self.conn.run(command, check=False, stdin=asyncssh.DEVNULL), self.settings.command_timeout
            )
        except TimeoutError:
            raise HostFailure(
                "HostTimeout", f"the test command did not end within {self.settings.command_timeout:g}s on {where}"
            ) from None
        except (asyncssh.Error, OSError) as e:
            raise HostFailure(
                "SSHError", f"running the test command on {where} failed ({type(e).__name__})"
            ) from None
        if result.exit_status != 0:
            status = result.exit_status if result.exit_status is not None else f"signal {result.exit_signal}"
            raise HostFailure("LoginFailed", f"the test command exited {status} on {where}")

    async def edit(self, change: Callable[[bytes | None], bytes | None]) -> bool:
        """Applies ``change`` to the host's ``authorized_keys``; True when the file was rewritten."""
        path = self.host.authorized_keys_file
        where = f"{path} on {self.host.address}"
        try:
            return await asyncio.wait_for(self._edit(path, change), self.settings.command_timeout)
        except TimeoutError:
            raise HostFailure(
                "HostTimeout", f"editing {where} took longer than {self.settings.command_timeout:g}s"
            ) from None
        except asyncssh.SFTPError as e:
            raise HostFailure(
                "AuthorizedKeysError", f"cannot edit {where} as {self.who}: {_sftp_reason(e)}"
            ) from None
        except (asyncssh.Error, OSError) as e:
            raise HostFailure("SSHError", f"editing {where} failed ({type(e).__name__})") from None

    async def _edit(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bool:
        async with self.conn.start_sftp_client() as sftp:
            try:
                attrs: asyncssh.SFTPAttrs | None = await sftp.stat(path)
            except asyncssh.SFTPNoSuchFile:
                attrs = None
            old: bytes | None = None
            if attrs is not None:
                if attrs.size is not None and attrs.size > MAX_AUTHORIZED_KEYS_BYTES:
                    raise HostFailure(
                        "AuthorizedKeysError", f"{path} on {self.host.address} is larger than 1 MiB; not read"
                    )
                async with sftp.open(path, "rb", encoding=None) as f:
                    data = await f.read()
                old = data if isinstance(data, bytes) else data.encode("utf-8")
            new = change(old)
            if new is None:
                return False
            directory, _sep, base = path.rpartition("/")
            if directory and not await sftp.exists(directory):
                await sftp.makedirs(directory, attrs=asyncssh.SFTPAttrs(permissions=0o700))
            temporary = f"{directory + '/' if directory else ''}.{base}.mso-{secrets.token_hex(6)}"
            try:
                async with sftp.open(
                    temporary, "wb", attrs=asyncssh.SFTPAttrs(permissions=0o600), encoding=None
                ) as f:
                    await f.write(new)
                if attrs is not None:
                    mode = attrs.permissions & 0o7777 if attrs.permissions is not None else 0o600
                    await sftp.chmod(temporary, mode)
                    written = await sftp.stat(temporary)
                    owner = (attrs.uid, attrs.gid)
                    if owner != (written.uid, written.gid) and attrs.uid is not None and attrs.gid is not None:
                        # An admin login of another user (root) keeps the file the user's own, as sshd needs.
                        await sftp.chown(temporary, uid=attrs.uid, gid=attrs.gid)
                await sftp.posix_rename(temporary, path)
            except BaseException:
                with contextlib.suppress(asyncssh.Error, OSError):
                    await sftp.remove(temporary)
                raise
            return True


def _sftp_reason(error: asyncssh.SFTPError) -> str:
    """The SFTP status in words of our own (a server's message text is not repeated)."""
    if isinstance(error, asyncssh.SFTPNoSuchFile):
        return "no such file or directory"
    if isinstance(error, asyncssh.SFTPPermissionDenied):
        return "permission denied"
    if isinstance(error, asyncssh.SFTPOpUnsupported):
        return "the server's SFTP does not support an operation needed (posix-rename@openssh.com)"
    return f"SFTP status {error.code}"


async def connect(
    host: Host, settings: SshSettings, username: str, key: asyncssh.SSHKey, key_name: str
) -> asyncssh.SSHClientConnection:
    """A logged-in connection, with the host key checked against ``settings.known_hosts`` first."""
    where = f"{host.address}"
    try:
        return await asyncssh.connect(
            host.hostname,
            host.port,
            username=username,
            client_keys=[key],
            known_hosts=settings.known_hosts,
            agent_path=None,
            config=None,
            preferred_auth="publickey",
            password=None,
            kbdint_auth=False,
            gss_auth=False,
            host_based_auth=False,
            connect_timeout=settings.connect_timeout,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise HostFailure(
            "HostKeyRejected",
            f"the host key of {where} does not match sshKey.knownHosts; nothing was sent to it",
        ) from None
    except asyncssh.KeyExchangeFailed:
        # Among others: the host offers no host key of a kind knownHosts trusts (a CA-only knownHosts and a
        # host without a certificate). Nothing was authenticated either way.
        raise HostFailure(
            "HostKeyRejected",
            f"{where} offers no host key that sshKey.knownHosts trusts, or no common algorithm; nothing was sent "
            "to it",
        ) from None
    except asyncssh.PermissionDenied:
        raise HostFailure("AuthenticationFailed", f"{username}@{where} refused {key_name}") from None
    except TimeoutError:
        raise HostFailure("HostTimeout", f"no SSH login to {where} within {settings.connect_timeout:g}s") from None
    except asyncssh.DisconnectError as e:
        raise HostFailure("SSHError", f"{where} closed the SSH connection (code {e.code})") from None
    except asyncssh.Error as e:
        raise HostFailure("SSHError", f"SSH to {where} failed ({type(e).__name__})") from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise HostFailure("HostUnreachable", f"cannot connect to {where}: {reason}") from None


def run_on_hosts(
    hosts: Sequence[Host], concurrency: int, action: Callable[[Host], Awaitable[T]]
) -> list[T | HostFailure]:
    """``action`` on every host, at most ``concurrency`` at once; one result or ``HostFailure`` per host."""

    async def main() -> list[T | HostFailure]:
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(host: Host) -> T | HostFailure:
            async with gate:
                try:
                    return await action(host)
                except HostFailure as e:
                    return e

        return list(await asyncio.gather(*(one(h) for h in hosts)))

    return asyncio.run(main())
