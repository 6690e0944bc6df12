#!/usr/bin/env python3
"""A real, local Kubernetes control plane for tests and demos: etcd, kube-apiserver, kube-controller-manager.

No Docker, no kind: the binaries are built from Go modules by ``hack/build-controlplane.sh`` (or taken from
``KUBEBUILDER_ASSETS``) and started on loopback with RBAC on, service-account signing keys, a client CA and an
admin kubeconfig. There is no scheduler and no kubelet, so Pods stay Pending; Deployments still get their
ReplicaSets, and the garbage collector and namespace controller run.

    python3 hack/cluster.py up     [--dir DIR]   start (or reuse) a control plane; prints the kubeconfig path
    python3 hack/cluster.py down   [--dir DIR]   stop it and remove its state
    python3 hack/cluster.py status [--dir DIR]   exit 0 if it answers

Only the standard library and ``cryptography`` are needed, so the test suite can import this module too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
DEFAULT_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", "/tmp/managed-secrets-cluster"))  # noqa: S108
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    # Fills the built-in view/edit/admin ClusterRoles from the roles that aggregate into them (ours do).
    "clusterrole-aggregation-controller",
)

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  # Watches of ManagedSecrets too (few and long-lived), so a test can see a watch end and reconnect.
  - level: Metadata
    verbs: ["watch"]
    resources: [{group: "managedsecrets.io", resources: ["managedsecrets"]}]
  # Reads by ServiceAccounts (the operator's among them), so a test can count the requests a failing object
  # costs, and see that every list and watch of Secrets carries a selector.
  - level: Metadata
    verbs: ["get"]
    userGroups: ["system:serviceaccounts"]
  - level: Metadata
    verbs: ["list", "watch"]
    resources: [{group: "", resources: ["secrets"]}]
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


@dataclass(frozen=True)
class Cluster:
    """A running control plane: where its state lives and how to reach it."""

    state_dir: Path
    server: str

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"


def log(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


def build_binaries() -> Path:
    """Runs the build script (a no-op when cached) and returns the directory holding the binaries."""
    out = subprocess.run(
        ["bash", str(HACK / "build-controlplane.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- PKI -------------------------------------------------------------------------------------------------


def _write_pki(pki: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=365)

    def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    def write(fname: str, data: bytes) -> None:
        path = pki / fname
        path.write_bytes(data)
        path.chmod(0o600)

    ca_key, ca_cert = ca("managed-secrets-local-ca")
    write("ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    serving_key, serving_cert = leaf(
        ca_key,
        ca_cert,
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ],
    )
    write("apiserver.crt", serving_cert.public_bytes(serialization.Encoding.PEM))
    write("apiserver.key", pem_key(serving_key))

    client_ca_key, client_ca_cert = ca("managed-secrets-local-client-ca")
    write("client-ca.crt", client_ca_cert.public_bytes(serialization.Encoding.PEM))
    admin_key, admin_cert = leaf(
        client_ca_key, client_ca_cert, name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH
    )
    write("admin.crt", admin_cert.public_bytes(serialization.Encoding.PEM))
    write("admin.key", pem_key(admin_key))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write("sa.key", pem_key(sa_key))
    write(
        "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _write_kubeconfig(state: Path, server: str) -> None:
    pki = state / "pki"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    path = state / "admin.kubeconfig"
    # JSON is valid YAML, so kubectl and the Python client read it as a kubeconfig.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


# --- processes -------------------------------------------------------------------------------------------


def _start(state: Path, name: str, argv: list[str]) -> int:
    logf = (state / "logs" / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    (state / "pids" / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it has exited.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def _wait(state: Path, name: str, pid: int, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            tail = (state / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{tail}")
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{name} did not become ready in {timeout:.0f}s (see {state / 'logs' / name}.log)")


def _https_ok(url: str, state: Path) -> bool:
    pki = state / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310 - https on loopback
        return bool(resp.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback etcd health
        return bool(resp.status == 200)


def running(state_dir: Path = DEFAULT_DIR) -> Cluster | None:
    """The control plane in ``state_dir`` if all its processes live and the API server is ready."""
    info = state_dir / "cluster.json"
    if not info.exists():
        return None
    data = json.loads(info.read_text())
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        pidf = state_dir / "pids" / f"{name}.pid"
        if not pidf.exists() or not _alive(int(pidf.read_text())):
            return None
    try:
        if not _https_ok(data["server"] + "/readyz", state_dir):
            return None
    except Exception:
        return None
    return Cluster(state_dir=state_dir, server=data["server"])


def up(state_dir: Path = DEFAULT_DIR) -> Cluster:
    """Starts a control plane in ``state_dir``, or returns the one already running there."""
    existing = running(state_dir)
    if existing:
        log(f"reusing the control plane at {existing.server}")
        return existing
    down(state_dir, quiet=True)
    started = time.monotonic()
    bin_dir = build_binaries()
    for sub in ("pki", "logs", "pids", "etcd"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    _write_pki(state_dir / "pki")
    pki = state_dir / "pki"
    # Every write request is recorded (metadata only, never bodies), so tests can count an operator's writes.
    (state_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)

    etcd_url = f"http://127.0.0.1:{free_port()}"
    etcd_pid = _start(
        state_dir,
        "etcd",
        [
            str(bin_dir / "etcd"),
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            "--listen-peer-urls=http://127.0.0.1:0",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
    )
    _wait(state_dir, "etcd", etcd_pid, lambda: _http_ok(etcd_url + "/health"), 60)

    port = free_port()
    server = f"https://127.0.0.1:{port}"
    api_pid = _start(
        state_dir,
        "kube-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer={server}/",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--audit-policy-file={state_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={state_dir / 'logs' / 'audit.log'}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            "--v=1",
        ],
    )
    _write_kubeconfig(state_dir, server)
    _wait(state_dir, "kube-apiserver", api_pid, lambda: _https_ok(server + "/readyz", state_dir), 120)

    kcm_pid = _start(
        state_dir,
        "kube-controller-manager",
        [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={state_dir / 'admin.kubeconfig'}",
            "--leader-elect=false",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--concurrent-gc-syncs=50",
            "--secure-port=0",
            "--v=1",
        ],
    )
    time.sleep(1)
    if not _alive(kcm_pid):
        tail = (state_dir / "logs" / "kube-controller-manager.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"kube-controller-manager exited during start-up:\n{tail}")
    (state_dir / "cluster.json").write_text(json.dumps({"server": server, "etcd": etcd_url, "bin": str(bin_dir)}))
    log(f"control plane ready at {server} in {time.monotonic() - started:.1f}s")
    return Cluster(state_dir=state_dir, server=server)


def up_with_retries(state_dir: Path = DEFAULT_DIR, attempts: int = 3) -> Cluster:
    """``up``, tried again when a port picked as free was taken before a component could bind it."""
    for attempt in range(1, attempts + 1):
        try:
            return up(state_dir)
        except RuntimeError as e:
            if "address already in use" not in str(e) or attempt == attempts:
                raise
            log(f"a port was taken meanwhile; starting again ({attempt}/{attempts})")
    raise AssertionError("unreachable")


def down(state_dir: Path = DEFAULT_DIR, *, quiet: bool = False) -> None:
    """Stops the processes started in ``state_dir`` (controller manager first) and removes the state."""
    pids = state_dir / "pids"
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        pidf = pids / f"{name}.pid"
        if not pidf.exists():
            continue
        pid = int(pidf.read_text())
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        if not quiet:
            log(f"stopped {name}")
    if state_dir.exists() and (state_dir / "pki").exists():
        import shutil

        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status", "build"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (%(default)s)")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_binaries())
    elif args.command == "up":
        print(up_with_retries(args.dir).kubeconfig)
    elif args.command == "down":
        down(args.dir)
    elif args.command == "status":
        cluster = running(args.dir)
        if not cluster:
            print("not running")
            return 1
        print(f"running at {cluster.server}; KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
