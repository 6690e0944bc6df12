"""The ``sshKey.hosts`` rotation against real sshd servers on 127.0.0.1, beside a baseline of the same run.

    python -m bench.ssh_hosts [--hosts 8] [--rotations 3] [--quick]

Each round starts ``--hosts`` sshd servers (tests/support/sshd.py: Debian's sshd, own config and host key,
public-key logins only) and runs the strategy's steps as the rotation engine does (set, test, finish), with no
cluster, at ``concurrency`` 1 and 4. The baseline is what the steps cannot avoid: one bare AsyncSSH login plus
one command per host, done one host after another. Printed: the median wall time per rotation and per step,
the SSH logins a rotation costs (3 per host: set and finish as the admin, test with the new key), and the ratio
over the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.strategies.sshkey import PRIVATE_KEY, SSHKeyStrategy
from managed_secrets.rotation.strategy import RotationContext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.sshd import SshServer, keygen  # noqa: E402  (tests/support, as the integration tests use it)


def spec(servers: list[SshServer], concurrency: int) -> dict[str, Any]:
    return {
        "hosts": [{"address": s.address, "authorizedKeysFile": str(s.authorized_keys)} for s in servers],
        "user": servers[0].user,
        "adminSecretRef": {"name": "admin"},
        "knownHosts": "".join(s.known_hosts_line + "\n" for s in servers),
        "concurrency": concurrency,
    }


def rotations(servers: list[SshServer], admin: bytes, concurrency: int, count: int) -> dict[str, list[float]]:
    """Seconds per step of ``count`` rotations (after a first value), keyed by step and ``rotation``."""
    strategy = SSHKeyStrategy()
    config = spec(servers, concurrency)
    current: tuple[str, SecretValue] | None = None
    times: dict[str, list[float]] = {"set": [], "test": [], "finish": [], "rotation": []}
    for n in range(1, count + 2):
        version = f"v{n}"
        ctx = RotationContext(
            secret_id="bench/ssh",
            version_id=version,
            config=config,
            current=current[1] if current else None,
            current_id=current[0] if current else None,
            read_secret=lambda _name: {PRIVATE_KEY: admin},
        )
        value = strategy.create(ctx)
        started = time.perf_counter()
        steps: list[tuple[str, Callable[[RotationContext, SecretValue], None]]] = [
            ("set", strategy.set),
            ("test", strategy.test),
        ]
        if current is not None:
            steps.append(("finish", strategy.finish))
        for name, step in steps:
            t = time.perf_counter()
            step(ctx, value)
            if current is not None:
                times[name].append(time.perf_counter() - t)
        if current is not None:
            times["rotation"].append(time.perf_counter() - started)
        current = (version, value)
    return times


def baseline(servers: list[SshServer], admin: bytes) -> float:
    """One bare login and ``true`` per host, one host after another."""
    key = asyncssh.import_private_key(admin)

    async def main() -> None:
        for s in servers:
            async with asyncssh.connect(
                "127.0.0.1",
                s.port,
                username=s.user,
                client_keys=[key],
                known_hosts=asyncssh.import_known_hosts(s.known_hosts_line + "\n"),
                agent_path=None,
                config=None,
            ) as conn:
                await conn.run("true", check=True)

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--rotations", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 hosts, 1 rotation (a smoke run)")
    args = parser.parse_args()
    hosts, count = (2, 1) if args.quick else (args.hosts, args.rotations)
    with tempfile.TemporaryDirectory(prefix="mso-bench-ssh-") as tmp:
        root = Path(tmp)
        admin, admin_public = keygen(root / "admin", "bench-admin")
        servers = [SshServer(root / f"host-{i}") for i in range(hosts)]
        try:
            for s in servers:
                s.authorized_keys.write_text(admin_public + "\n")
                s.start()
            bare = statistics.median(baseline(servers, admin) for _ in range(3))
            print(
                f"sshKey.hosts rotation: {hosts} sshd hosts on 127.0.0.1, {count} rotation(s) per setting, "
                "median\n"
            )
            print(f"{'':<34}{'rotation':>10}{'set':>9}{'test':>9}{'finish':>9}   over baseline")
            print(f"{'baseline: 1 login + true per host':<34}{bare:>9.2f}s")
            for concurrency in (1, 4):
                times = rotations(servers, admin, concurrency, count)
                med = {k: statistics.median(v) for k, v in times.items()}
                print(
                    f"{f'rotation, concurrency {concurrency}':<34}{med['rotation']:>9.2f}s{med['set']:>8.2f}s"
                    f"{med['test']:>8.2f}s{med['finish']:>8.2f}s   {med['rotation'] / bare:>6.2f}x"
                )
            print(f"\nSSH logins per rotation: {3 * hosts} (set and finish as the admin, test with the new key)")
        finally:
            for s in servers:
                s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
