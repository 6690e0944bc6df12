"""Real OpenSSH servers for the ``sshKey.hosts`` tests: Debian's ``sshd`` on 127.0.0.1 with a config of its own.

Each ``SshServer`` has its own directory with an ed25519 host key, an ``sshd_config``, an ``authorized_keys``
file (``AuthorizedKeysFile`` points there, so two servers on one machine are two hosts with two files) and a
log at ``LogLevel VERBOSE`` (it records every authentication attempt, which the tests read). sshd runs as the
user running the tests, so that user is the login user (root in CI: ``PermitRootLogin prohibit-password``).
Only public-key logins are allowed; ``StrictModes`` is off because the files live under /tmp.

``login`` checks a key with the OpenSSH *client* (``ssh -i``), not with the library the operator uses, so a
login the tests count as working is one a real client makes.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def require_openssh() -> None:
    """Fails (never skips) when the OpenSSH server or client is missing."""
    for binary, package in ((SSHD, "openssh-server"), (SSH, "openssh-client"), (SSH_KEYGEN, "openssh-client")):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: install the Debian package {package} (make install does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str = "") -> tuple[bytes, str]:
    """A new ed25519 key pair at ``path`` (and ``path.pub``): the private key and the public line."""
    path.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, timeout=30
    )
    return path.read_bytes(), path.with_suffix(".pub").read_text().strip()


@dataclass
class SshServer:
    directory: Path
    user: str = field(default_factory=getpass.getuser)
    port: int = field(default_factory=free_port)
    host_ca: Path | None = None
    """A CA private key: the host key gets a host certificate signed by it (``HostCertificate``)."""
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        require_openssh()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host_key = self.directory / "host_ed25519"
        if not self.host_key.exists():
            keygen(self.host_key, "host")
        certificate: list[str] = []
        if self.host_ca is not None:
            subprocess.run(
                [SSH_KEYGEN, "-q", "-s", str(self.host_ca), "-I", f"host-{self.port}", "-h", "-n", "127.0.0.1",
                 str(self.host_key.with_suffix(".pub"))],
                check=True,
                timeout=30,
            )  # fmt: skip
            certificate = [f"HostCertificate {self.host_key}-cert.pub"]
        self.authorized_keys = self.directory / "authorized_keys"
        self.log = self.directory / "sshd.log"
        self.config = self.directory / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{self.port}",
                    f"HostKey {self.host_key}",
                    *certificate,
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "LogLevel VERBOSE",
                    "MaxStartups 50:30:100",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        key_type, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {key}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # root sshd's privilege-separation directory
        check = subprocess.run(
            [SSHD, "-t", "-f", str(self.config)], check=False, capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            pytest.fail(f"sshd refused its config: {check.stderr}")
        self.process = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"sshd exited {self.process.returncode}:\n{self.log_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"sshd did not listen on {self.address} within 20s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[str]:
        return self.authorized_keys.read_text().splitlines() if self.authorized_keys.exists() else []

    def login(self, private_key: bytes, tmp: Path, command: str = "true") -> bool:
        """True when the OpenSSH client logs in with ``private_key`` (and only it) and ``command`` exits 0."""
        key_file = tmp / f"login-{time.monotonic_ns()}"
        key_file.write_bytes(private_key)
        key_file.chmod(0o600)
        known = tmp / f"known-{self.port}"
        known.write_text(self.known_hosts_line + "\n")
        try:
            options = [
                "IdentitiesOnly=yes",
                "IdentityAgent=none",
                "BatchMode=yes",
                "PasswordAuthentication=no",
                "StrictHostKeyChecking=yes",
                f"UserKnownHostsFile={known}",
                "ConnectTimeout=10",
            ]
            argv = [SSH, "-F", "none", "-i", str(key_file), "-p", str(self.port)]
            for option in options:
                argv += ["-o", option]
            result = subprocess.run(
                [*argv, f"{self.user}@127.0.0.1", command],
                check=False,
                capture_output=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        finally:
            key_file.unlink(missing_ok=True)
        return result.returncode == 0
