#!/usr/bin/env python3
"""A real, local Kubernetes control plane for tests and demos: etcd, kube-apiserver, kube-controller-manager.

No Docker, no kind: the binaries are built from Go modules by ``hack/build-controlplane.sh`` (or taken from
``KUBEBUILDER_ASSETS``) and started on loopback with RBAC on, service-account signing keys, a client CA and an
admin kubeconfig. There is no scheduler and no kubelet, so Pods stay Pending; Deployments still get their
ReplicaSets, and the garbage collector and namespace controller run.

Secrets are encrypted at rest (unless ``--no-kms``): a KMS v2 plugin (``managed_secrets.kms.plugin``) over a
SoftHSM2 token in DIR/kms (set up by ``hack/softhsm.py``; token ``apiserver``, key ``apiserver-kek-1``) is
kube-apiserver's first encryption provider, ``identity`` its second (so data written without KMS still
reads). cluster.json's ``kms`` entry says where the socket, the token, the PIN file and the plugin's call
counts are.

    python3 hack/cluster.py up     [--dir DIR] [--no-kms]   start (or reuse) a control plane; prints the kubeconfig
    python3 hack/cluster.py down   [--dir DIR]   stop it and remove its state
    python3 hack/cluster.py status [--dir DIR]   exit 0 if it answers

Importing this module needs only the standard library and ``cryptography``, so the test suite can import it
too; with KMS on, ``up`` also needs grpcio and python-pkcs11 (for the plugin, run with this interpreter) and
the Debian package softhsm2.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
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

# Secrets at rest: KMS v2 through the plugin first; identity last, so anything stored unencrypted still reads.
KMS_PROVIDER = "softhsm"
KMS_TOKEN_LABEL = "apiserver"
KMS_KEY_LABEL = "apiserver-kek-1"
ENCRYPTION_CONFIG = """apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: {name}
          endpoint: unix://{socket}
          timeout: 3s
      - identity: {{}}
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


def _start(state: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    logf = (state / "logs" / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
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


def _kms_ok(socket_path: Path, key_label: str) -> bool:
    """The plugin answers a Status call, healthy, with the expected key id."""
    try:
        from managed_secrets.kms.kmsv2 import KmsV2Key
    except ImportError:  # run by an interpreter without the package installed: the work tree's copy
        sys.path.insert(0, str(ROOT / "src"))
        from managed_secrets.kms.kmsv2 import KmsV2Key

    key = KmsV2Key(str(socket_path), timeout_seconds=2)
    try:
        return key.current_key_id() == key_label
    finally:
        key.close()


def _softhsm() -> Any:
    if str(HACK) not in sys.path:
        sys.path.insert(0, str(HACK))
    import softhsm  # hack/softhsm.py

    return softhsm


def _start_kms(state: Path) -> tuple[dict[str, str], int]:
    """A SoftHSM2 token with one key in state/kms and the KMS v2 plugin over it (not waited for)."""
    softhsm = _softhsm()
    kms_dir = state / "kms"
    conf = softhsm.init_token(
        kms_dir,
        token_label=KMS_TOKEN_LABEL,
        pin=secrets.token_hex(8),
        so_pin=secrets.token_hex(8),
        key_label=KMS_KEY_LABEL,
        python=sys.executable,
    )
    info = {
        "providerName": KMS_PROVIDER,
        "socket": str(kms_dir / "kms.sock"),
        "softhsmDir": str(kms_dir),
        "softhsmConf": str(conf),
        "library": softhsm.library(),
        "tokenLabel": KMS_TOKEN_LABEL,
        "keyLabel": KMS_KEY_LABEL,
        "pinFile": str(softhsm.pin_path(kms_dir)),
        "stats": str(kms_dir / "stats.json"),
        "encryptionConfig": str(state / "encryption-config.yaml"),
    }
    env = {**os.environ, **softhsm.environment(kms_dir)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    pid = _start(
        state,
        "kms-plugin",
        [
            sys.executable,
            "-m",
            "managed_secrets.kms.plugin",
            f"--listen={info['socket']}",
            f"--library={info['library']}",
            f"--token-label={KMS_TOKEN_LABEL}",
            f"--pin-file={info['pinFile']}",
            f"--key-label={KMS_KEY_LABEL}",
            f"--stats-file={info['stats']}",
        ],
        env=env,
    )
    config = Path(info["encryptionConfig"])
    config.write_text(ENCRYPTION_CONFIG.format(name=KMS_PROVIDER, socket=info["socket"]))
    config.chmod(0o600)
    return info, pid


def _processes(data: dict[str, Any]) -> tuple[str, ...]:
    names = ("etcd", "kube-apiserver", "kube-controller-manager")
    return (*names, "kms-plugin") if data.get("kms") else names


def running(state_dir: Path = DEFAULT_DIR) -> Cluster | None:
    """The control plane in ``state_dir`` if all its processes live and the API server is ready."""
    info = state_dir / "cluster.json"
    if not info.exists():
        return None
    data = json.loads(info.read_text())
    for name in _processes(data):
        pidf = state_dir / "pids" / f"{name}.pid"
        if not pidf.exists() or not _alive(int(pidf.read_text())):
            return None
    try:
        if not _https_ok(data["server"] + "/readyz", state_dir):
            return None
    except Exception:
        return None
    return Cluster(state_dir=state_dir, server=data["server"])


def up(state_dir: Path = DEFAULT_DIR, kms: bool = True) -> Cluster:
    """Starts a control plane in ``state_dir``, or returns the one already running there.

    With ``kms`` (the default) Secrets are encrypted at rest through the KMS v2 plugin over a SoftHSM2 token.
    """
    existing = running(state_dir)
    if existing:
        has_kms = "kms" in json.loads((state_dir / "cluster.json").read_text())
        note = "" if has_kms == kms else f" (KMS {'on' if has_kms else 'off'}: run down first to change that)"
        log(f"reusing the control plane at {existing.server}{note}")
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
    # The plugin starts beside etcd; kube-apiserver needs it answering before it starts.
    kms_info, kms_pid = _start_kms(state_dir) if kms else (None, 0)

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
    encryption: list[str] = []
    if kms_info:
        socket_path = Path(kms_info["socket"])
        _wait(state_dir, "kms-plugin", kms_pid, lambda: _kms_ok(socket_path, KMS_KEY_LABEL), 30)
        encryption = [f"--encryption-provider-config={kms_info['encryptionConfig']}"]

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
            *encryption,
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
    data: dict[str, Any] = {"server": server, "etcd": etcd_url, "bin": str(bin_dir)}
    if kms_info:
        data["kms"] = kms_info
    (state_dir / "cluster.json").write_text(json.dumps(data))
    at_rest = f"; Secrets encrypted at rest by KMS v2 ({KMS_PROVIDER})" if kms_info else ""
    log(f"control plane ready at {server} in {time.monotonic() - started:.1f}s{at_rest}")
    return Cluster(state_dir=state_dir, server=server)


def up_with_retries(state_dir: Path = DEFAULT_DIR, attempts: int = 3, kms: bool = True) -> Cluster:
    """``up``, tried again when a port picked as free was taken before a component could bind it."""
    for attempt in range(1, attempts + 1):
        try:
            return up(state_dir, kms=kms)
        except RuntimeError as e:
            if "address already in use" not in str(e) or attempt == attempts:
                raise
            log(f"a port was taken meanwhile; starting again ({attempt}/{attempts})")
    raise AssertionError("unreachable")


def down(state_dir: Path = DEFAULT_DIR, *, quiet: bool = False) -> None:
    """Stops the processes started in ``state_dir`` (controller manager first) and removes the state."""
    pids = state_dir / "pids"
    for name in ("kube-controller-manager", "kube-apiserver", "kms-plugin", "etcd"):
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
    parser.add_argument(
        "--no-kms", dest="kms", action="store_false", help="up: store Secrets unencrypted (no KMS v2 plugin)"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_binaries())
    elif args.command == "up":
        print(up_with_retries(args.dir, kms=args.kms).kubeconfig)
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
