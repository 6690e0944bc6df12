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

    python3 hack/cluster.py up     [--dir DIR] [--no-kms] [--with-node]
                                                  start (or reuse) a control plane; prints the kubeconfig
    python3 hack/cluster.py down   [--dir DIR]   stop it and remove its state
    python3 hack/cluster.py status [--dir DIR]   exit 0 if it answers

With ``--with-node`` (``up(state_dir, node=True)``, root only) a real node joins: containerd (CRI), runc,
CNI bridge networking, a kubelet registered as ``mso-node`` and kube-scheduler (built by
``hack/build-node.sh``), so Pods really run and mount Secrets; see "the node" below for what it changes.

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


# --- the node (up --with-node) ---------------------------------------------------------------------------
#
# A real node beside the control plane, for tests where Pods must run (Secrets mounted as volumes, in-cluster
# clients). Everything is built by hack/build-node.sh (kubelet and kube-scheduler of the same release as the
# control plane, containerd 2.x with its runc shim and ctr, the CNI plugins, a pause program) except runc
# (Debian's). Root only. What it sets up, all under DIR/node unless said otherwise:
#
# - containerd with its root, state, socket and CNI configuration in DIR/node/containerd; cgroupfs (cgroup
#   v1 here), the overlayfs snapshotter (native where overlayfs cannot be mounted on DIR's file system), the
#   sandbox image localhost/mso-pause:<v> and the test image localhost/mso-busybox:<v> imported from the OCI
#   archives the build made (nothing is ever pulled: Pods must use those, or other imported images, with
#   imagePullPolicy Never or IfNotPresent). Containers' oom_score_adj is kept at or above containerd's own
#   (restrict_oom_score_adj): these VMs drop CAP_SYS_RESOURCE, so runc could not set the sandbox's -998.
# - Pod networking: the CNI bridge plugin on the Linux bridge mso0 (10.88.0.1/16, host-local IPAM, portmap),
#   made here before any Pod so the kubelet can use 10.88.0.1 as the node IP. Host-wide names, so one node per
#   machine.
# - In-cluster clients: there is no kube-proxy. The `kubernetes` Service's ClusterIP, 10.0.0.1:443 (already in
#   the API server certificate's SANs), is DNATed to the API server on 127.0.0.1 by the nat chain MSO-NODE
#   (jumped to from PREROUTING and OUTPUT), with route_localnet on mso0 so Pod traffic may be sent to loopback.
#   The API server stays bound to 127.0.0.1 only. KUBERNETES_SERVICE_HOST/PORT are set by the kubelet as usual.
# - The API server, with a node only: the ServiceAccount admission plugin is on (Pods get the projected
#   service-account token volume) and the controller manager also runs the root-ca-certificate-publisher (the
#   kube-root-ca.crt ConfigMap that volume needs) and the node-lifecycle controller (it removes the not-ready
#   taint the kubelet registers the node with); the API server reaches kubelets by InternalIP with the admin
#   client certificate (for logs, exec).
# - The kubelet: node mso-node, node IP 10.88.0.1, its API on 10.88.0.1:<free port> with a self-signed
#   certificate; authentication by client certificates of the cluster's client CA only (anonymous and webhook
#   off), authorization AlwaysAllow (a local test node). Its kubeconfig is the admin one (system:masters):
#   simplest, and fine here since the API server's Node authorizer is not on anyway. cgroup v1 allowed
#   (failCgroupV1: false), swap allowed, eviction thresholds relaxed, image GC off, no static Pods, no cluster
#   DNS (Pods get DIR/node/resolv.conf, a copy of this machine's nameservers). Secret and ConfigMap volumes use
#   the kubelet's defaults: configMapAndSecretChangeDetectionStrategy Watch, syncFrequency 1m. The Secret
#   itself is watched, but a Pod's volumes are only rewritten at its next periodic sync (every 1m to 1m30s,
#   jittered), so a changed Secret reaches a mounted file within 0 to ~90 s (measured: 0.8 s to 90 s).
# - kube-scheduler with the admin kubeconfig, no leader election.
#
# `down` deletes every Pod (so the kubelet tears sandboxes down through CNI), stops the scheduler, kubelet and
# containerd, kills leftover shims of this containerd, unmounts what is mounted under DIR, removes mso0, the
# MSO-NODE chain, the chains the kubelet adds to this machine's iptables (KUBE-FIREWALL and its canaries) and
# the kubelet's cgroups.

NODE_NAME = "mso-node"
NODE_PROCESSES = ("containerd", "kubelet", "kube-scheduler")
NODE_CONTROLLERS = (
    # The kube-root-ca.crt ConfigMap of every namespace, which the service-account token volume projects.
    "root-ca-certificate-publisher-controller",
    # Removes the node.kubernetes.io/not-ready taint the kubelet registers the node with, once it is Ready.
    "node-lifecycle-controller",
)
POD_CIDR = "10.88.0.0/16"
NODE_BRIDGE = "mso0"
NODE_IP = "10.88.0.1"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the first address of --service-cluster-ip-range
NAT_CHAIN = "MSO-NODE"
CNI_NETWORK = "mso-pods"

CONTAINERD_CONFIG = """version = 3
root = "{root}"
state = "{state}"
temp = "{temp}"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{root}/opt"

  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "{snapshotter}"
    # Nothing can be pulled here: images are imported by hack/cluster.py.
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "{pause_image}"

  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    disable_apparmor = true
    # No CAP_SYS_RESOURCE here (these VMs drop it): runc cannot set a negative oom_score_adj (sandboxes get
    # -998), so keep every container's at or above containerd's own.
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    netns_mounts_under_state_dir = true
    enable_cdi = false

    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = "{runc}"
          Root = "{state}/runc"
          SystemdCgroup = false

    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["{cni_bin}"]
      conf_dir = "{cni_conf}"
      max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""

KUBELET_CONFIG = """apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines run cgroup v1, which kubelet 1.35 refuses unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
imageServiceEndpoint: unix://{socket}
address: {node_ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {client_ca}}}
# A local test node: any holder of a client certificate of the cluster's client CA may use the kubelet API.
authorization: {{mode: AlwaysAllow}}
# No static Pods (staticPodPath unset), no cluster DNS.
clusterDomain: cluster.local
clusterDNS: []
resolvConf: {resolv_conf}
podLogsDir: {pod_logs}
failSwapOn: false
memorySwap: {{}}
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
# The imported images can never be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
serializeImagePulls: false
# Left at their defaults on purpose (tests/node measures what they give):
#   syncFrequency: 1m
#   configMapAndSecretChangeDetectionStrategy: Watch
"""


def _build_node_binaries() -> Path:
    """Runs hack/build-node.sh (a no-op when cached) and returns the directory holding the node's binaries."""
    out = subprocess.run(["bash", str(HACK / "build-node.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _run(argv: list[str], *, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs a command; stdout is its result (ctr prints a cgroup v1 deprecation warning on stderr)."""
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0 and (check or not quiet):
        output = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
        if check:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}): {output}")
        log(f"{' '.join(argv)}: exit {proc.returncode}: {output}")
    return proc


def _node_preflight() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("up --with-node must run as root (containerd, runc, CNI and iptables need it)")
    import shutil

    for tool in ("ip", "iptables", "iptables-save", "mount", "umount"):
        if not shutil.which(tool):
            raise RuntimeError(f"up --with-node needs {tool} on PATH")
    if Path(f"/sys/class/net/{NODE_BRIDGE}").exists():
        raise RuntimeError(
            f"the bridge {NODE_BRIDGE} exists already: another cluster with a node runs on this machine "
            f"(run `hack/cluster.py down --dir DIR` for it), or a previous one was not stopped "
            f"(`ip link del {NODE_BRIDGE}`)"
        )


def _node_apiserver_args(pki: Path) -> list[str]:
    return [
        # The ServiceAccount admission plugin stays on: Pods get their projected service-account token.
        f"--kubelet-client-certificate={pki / 'admin.crt'}",
        f"--kubelet-client-key={pki / 'admin.key'}",
        # The node's hostname (mso-node) does not resolve; its InternalIP does.
        "--kubelet-preferred-address-types=InternalIP",
    ]


def _overlay_works(where: Path) -> bool:
    """Can overlayfs be mounted on the file system holding ``where`` (not so on overlayfs itself)?"""
    probe = where / "overlay-probe"
    for sub in ("lower", "upper", "work", "merged"):
        (probe / sub).mkdir(parents=True, exist_ok=True)
    (probe / "lower" / "file").write_text("probe")
    merged = probe / "merged"
    opts = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
    mount = _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=False, quiet=True)
    ok = mount.returncode == 0
    if ok:
        ok = (merged / "file").read_text() == "probe"
        _run(["umount", str(merged)], check=False)
    import shutil

    if not os.path.ismount(merged):
        shutil.rmtree(probe, ignore_errors=True)
    return ok


def _ctr(node_bin: Path, socket_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([str(node_bin / "ctr"), f"--address={socket_path}", "--namespace=k8s.io", *args], check=check)


def _kube_get(server: str, state: Path, path: str) -> Any:
    pki = state / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(server + path, context=ctx, timeout=5) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def _node_ready(server: str, state: Path) -> bool:
    node = _kube_get(server, state, f"/api/v1/nodes/{NODE_NAME}")
    conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    # Schedulable too: the node lifecycle controller has removed the not-ready taint the kubelet registers with.
    taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
    return conditions.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints


def _setup_pod_network(api_port: int) -> None:
    """The bridge (so the node IP exists before any Pod) and the DNAT of the `kubernetes` Service."""
    _run(["ip", "link", "add", NODE_BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", NODE_BRIDGE])
    _run(["ip", "link", "set", NODE_BRIDGE, "up"])
    # Pod traffic DNATed to 127.0.0.1 is dropped as martian unless the interface it arrives on allows it.
    Path(f"/proc/sys/net/ipv4/conf/{NODE_BRIDGE}/route_localnet").write_text("1")
    _run(["iptables", "-w", "-t", "nat", "-N", NAT_CHAIN])
    _run(
        [
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            NAT_CHAIN,
            "-d",
            f"{SERVICE_IP}/32",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-m",
            "comment",
            "--comment",
            "managed-secrets local node: kubernetes Service",
            "-j",
            "DNAT",
            "--to-destination",
            f"127.0.0.1:{api_port}",
        ]
    )
    for hook in ("PREROUTING", "OUTPUT"):
        _run(["iptables", "-w", "-t", "nat", "-I", hook, "-j", NAT_CHAIN])


KUBELET_CHAINS = (
    ("filter", "KUBE-FIREWALL"),
    ("mangle", "KUBE-IPTABLES-HINT"),
    ("nat", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-KUBELET-CANARY"),
    ("filter", "KUBE-KUBELET-CANARY"),
)


def _delete_jumps(cmd: str, table: str, hook: str, chain: str) -> None:
    """Deletes every ``-j chain`` rule of ``hook`` (there may be more than one after an interrupted run)."""
    for _ in range(20):
        if _run([cmd, "-w", "-t", table, "-D", hook, "-j", chain], check=False, quiet=True).returncode != 0:
            return


def _teardown_pod_network(quiet: bool) -> None:
    for hook in ("PREROUTING", "OUTPUT"):
        _delete_jumps("iptables", "nat", hook, NAT_CHAIN)
    _run(["iptables", "-w", "-t", "nat", "-F", NAT_CHAIN], check=False, quiet=True)
    _run(["iptables", "-w", "-t", "nat", "-X", NAT_CHAIN], check=False, quiet=True)
    # Rules the CNI plugins may have left for Pods that were never torn down (portmap, bridge), by network name.
    saved = _run(["iptables-save", "-t", "nat"], check=False, quiet=True).stdout
    chains = set()
    for line in saved.splitlines():
        if line.startswith("-A ") and CNI_NETWORK in line:
            parts = line.split()
            if "-j" in parts:
                target = parts[parts.index("-j") + 1]
                if target.startswith("CNI-"):
                    chains.add(target)
            _run(["iptables", "-w", "-t", "nat", "-D", *parts[1:]], check=False, quiet=True)
    for chain in chains:
        _run(["iptables", "-w", "-t", "nat", "-F", chain], check=False, quiet=True)
        _run(["iptables", "-w", "-t", "nat", "-X", chain], check=False, quiet=True)
    # What the kubelet adds to this machine's iptables: its canary chains (to notice a firewall reload), the
    # hint chain, and KUBE-FIREWALL (drops connections to 127.0.0.0/8 from elsewhere unless DNATed, which is
    # why the kubernetes Service DNAT above still passes). One node per machine, so they are ours.
    for cmd in ("iptables", "ip6tables"):
        for hook in ("INPUT", "OUTPUT"):
            _delete_jumps(cmd, "filter", hook, "KUBE-FIREWALL")
        for table, chain in KUBELET_CHAINS:
            _run([cmd, "-w", "-t", table, "-F", chain], check=False, quiet=True)
            _run([cmd, "-w", "-t", table, "-X", chain], check=False, quiet=True)
    if Path(f"/sys/class/net/{NODE_BRIDGE}").exists():
        _run(["ip", "link", "del", NODE_BRIDGE], check=False, quiet=quiet)


def _start_node(state: Path, server: str, api_port: int, node_bin: Path) -> dict[str, Any]:
    """containerd, the Pod network, the kubelet (waited for until the node is Ready) and kube-scheduler."""
    started = time.monotonic()
    pki = state / "pki"
    node_dir = state / "node"
    build = json.loads((node_bin / "node.json").read_text())
    dirs = {name: node_dir / name for name in ("containerd", "cni-conf", "cni-ipam", "kubelet", "pod-logs")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    ctrd = dirs["containerd"]
    socket_path = ctrd / "containerd.sock"
    if len(str(socket_path)) > 100:
        raise RuntimeError(f"the state directory is too long for a unix socket path: {socket_path}")
    snapshotter = "overlayfs" if _overlay_works(ctrd) else "native"
    (ctrd / "config.toml").write_text(
        CONTAINERD_CONFIG.format(
            root=ctrd / "root",
            state=ctrd / "state",
            temp=ctrd / "tmp",
            socket=socket_path,
            snapshotter=snapshotter,
            pause_image=build["pauseImage"],
            runc=build["runc"],
            cni_bin=node_bin / "cni",
            cni_conf=dirs["cni-conf"],
        )
    )
    conflist = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": NODE_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(dirs["cni-ipam"]),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (dirs["cni-conf"] / "10-mso-pods.conflist").write_text(json.dumps(conflist, indent=2))
    _setup_pod_network(api_port)

    env = {**os.environ, "PATH": os.pathsep.join((str(node_bin), os.environ.get("PATH", "/usr/sbin:/usr/bin")))}
    env["TMPDIR"] = str(ctrd / "tmp")
    (ctrd / "tmp").mkdir(exist_ok=True)
    ctrd_pid = _start(
        state, "containerd", [str(node_bin / "containerd"), f"--config={ctrd / 'config.toml'}"], env=env
    )
    _wait(state, "containerd", ctrd_pid, lambda: _ctr(node_bin, socket_path, "version").returncode == 0, 60)
    images = []
    for key in ("pause", "busybox"):
        archive = build[f"{key}Archive"]
        _ctr(node_bin, socket_path, "images", "import", f"--snapshotter={snapshotter}", archive)
        images.append(build[f"{key}Image"])
    listed = _ctr(node_bin, socket_path, "images", "ls", "-q").stdout.split()
    missing = [i for i in images if i not in listed]
    if missing:
        raise RuntimeError(f"images not in containerd after import: {missing}; it has: {listed}")

    nameservers = (
        [line for line in Path("/etc/resolv.conf").read_text().splitlines() if line.startswith("nameserver")]
        if Path("/etc/resolv.conf").exists()
        else []
    )
    resolv = node_dir / "resolv.conf"
    resolv.write_text("\n".join(nameservers or ["nameserver 127.0.0.1"]) + "\n")
    kubelet_port, healthz_port = free_port(), free_port()
    kubelet_config = node_dir / "kubelet-config.yaml"
    kubelet_config.write_text(
        KUBELET_CONFIG.format(
            socket=socket_path,
            node_ip=NODE_IP,
            port=kubelet_port,
            healthz_port=healthz_port,
            client_ca=pki / "client-ca.crt",
            resolv_conf=resolv,
            pod_logs=dirs["pod-logs"],
        )
    )
    kubelet_pid = _start(
        state,
        "kubelet",
        [
            str(node_bin / "kubelet"),
            f"--config={kubelet_config}",
            # The admin kubeconfig (system:masters): the simplest identity for a local test node.
            f"--kubeconfig={state / 'admin.kubeconfig'}",
            f"--root-dir={dirs['kubelet']}",
            f"--cert-dir={dirs['kubelet'] / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ],
        env=env,
    )
    sched_pid = _start(
        state,
        "kube-scheduler",
        [
            str(node_bin / "kube-scheduler"),
            f"--kubeconfig={state / 'admin.kubeconfig'}",
            f"--authentication-kubeconfig={state / 'admin.kubeconfig'}",
            f"--authorization-kubeconfig={state / 'admin.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ],
    )
    _wait(state, "kubelet", kubelet_pid, lambda: _node_ready(server, state), 120)
    time.sleep(0.5)
    if not _alive(sched_pid):
        tail = (state / "logs" / "kube-scheduler.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"kube-scheduler exited during start-up:\n{tail}")
    log(
        f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s (containerd {build['containerd']}, "
        f"snapshotter {snapshotter}, pods {POD_CIDR} on {NODE_BRIDGE})"
    )
    return {
        "name": NODE_NAME,
        "ip": NODE_IP,
        "podCIDR": POD_CIDR,
        "bridge": NODE_BRIDGE,
        "natChain": NAT_CHAIN,
        "kubeletPort": kubelet_port,
        "containerdSocket": str(socket_path),
        "snapshotter": snapshotter,
        "bin": str(node_bin),
        "images": {"pause": build["pauseImage"], "busybox": build["busyboxImage"]},
        "versions": {k: build[k] for k in ("kubernetes", "containerd", "cniPlugins")},
    }


def node_ctr(state_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ctr ARGS`` against the node's containerd (namespace k8s.io, the CRI's) in ``state_dir``."""
    node = json.loads((state_dir / "cluster.json").read_text()).get("node") or {}
    if not node.get("bin") or not node.get("containerdSocket"):
        raise RuntimeError(f"no node runs in {state_dir} (start it with up --with-node)")
    return _ctr(Path(node["bin"]), Path(node["containerdSocket"]), *args, check=check)


def import_image(state_dir: Path, archive: Path | str, ref: str) -> None:
    """Imports the OCI archive ``archive`` (e.g. from ``buildah push IMAGE oci-archive:FILE:REF``) into the
    node's containerd, unpacked for the CRI's snapshotter, as the pause and busybox images are at start.

    Pods then use ``ref`` with imagePullPolicy Never (or IfNotPresent): nothing can be pulled here.
    """
    node = json.loads((state_dir / "cluster.json").read_text()).get("node") or {}
    node_ctr(state_dir, "images", "import", f"--snapshotter={node.get('snapshotter', 'overlayfs')}", str(archive))
    listed = node_ctr(state_dir, "images", "ls", "-q").stdout.split()
    if ref not in listed:
        raise RuntimeError(f"{ref} is not in containerd after importing {archive}; it has: {listed}")


def _stop_pid(state: Path, name: str, quiet: bool, timeout: float = 15) -> None:
    pidf = state / "pids" / f"{name}.pid"
    if not pidf.exists():
        return
    pid = int(pidf.read_text())
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if not quiet:
            log(f"stopped {name}")
    pidf.unlink(missing_ok=True)


def _shim_pids(socket_path: Path) -> list[int]:
    """The runc shims this containerd started (they outlive it): their command lines name its socket."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket_path).encode() in argv:
            found.append(int(proc.name))
    return found


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target.startswith(prefix):
            out.append(target)
    return out


def _stop_node(state: Path, quiet: bool = False) -> None:
    """Stops the node: Pods first (so the kubelet tears their sandboxes down), then kubelet, containerd."""
    data = json.loads((state / "cluster.json").read_text()) if (state / "cluster.json").exists() else {}
    node = data.get("node") or {}
    server = data.get("server")
    socket_path = state / "node" / "containerd" / "containerd.sock"
    node_bin = Path(node["bin"]) if node.get("bin") else None
    kubelet_pidf = state / "pids" / "kubelet.pid"
    if server and kubelet_pidf.exists() and _alive(int(kubelet_pidf.read_text())) and node_bin:
        kubectl = Path(data["bin"]) / "kubectl"
        _run(
            [
                str(kubectl),
                f"--kubeconfig={state / 'admin.kubeconfig'}",
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=1",
                "--wait=false",
            ],
            check=False,
            quiet=True,
        )
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            tasks = _ctr(node_bin, socket_path, "tasks", "ls", "-q", check=False)
            if tasks.returncode != 0 or not tasks.stdout.split():
                break
            time.sleep(0.5)
    _stop_pid(state, "kube-scheduler", quiet)
    _stop_pid(state, "kubelet", quiet)
    if node_bin and (state / "pids" / "containerd.pid").exists():
        tasks = _ctr(node_bin, socket_path, "tasks", "ls", "-q", check=False)
        for task in tasks.stdout.split() if tasks.returncode == 0 else []:
            _ctr(node_bin, socket_path, "tasks", "kill", "--signal=SIGKILL", task, check=False)
            _ctr(node_bin, socket_path, "tasks", "delete", "--force", task, check=False)
    _stop_pid(state, "containerd", quiet)
    for pid in _shim_pids(socket_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Secret and token volumes (tmpfs), container root file systems, shm, network namespaces: innermost first.
    for target in sorted(_mounts_under(state), key=len, reverse=True):
        _run(["umount", "-l", target], check=False, quiet=quiet)
    _teardown_pod_network(quiet)
    # The kubelet's cgroups (kubepods, its QoS classes), innermost first; busy ones stay.
    for controller in Path("/sys/fs/cgroup").glob("*/kubepods*"):
        for d in sorted(
            (p for p in controller.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            controller.rmdir()


def _processes(data: dict[str, Any]) -> tuple[str, ...]:
    names: tuple[str, ...] = ("etcd", "kube-apiserver", "kube-controller-manager")
    if data.get("kms"):
        names = (*names, "kms-plugin")
    if data.get("node"):
        names = (*names, *NODE_PROCESSES)
    return names


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


def up(state_dir: Path = DEFAULT_DIR, kms: bool = True, node: bool = False) -> Cluster:
    """Starts a control plane in ``state_dir``, or returns the one already running there.

    With ``kms`` (the default) Secrets are encrypted at rest through the KMS v2 plugin over a SoftHSM2 token.
    With ``node`` a kubelet (node ``mso-node``, containerd, CNI bridge) and kube-scheduler run too.
    """
    existing = running(state_dir)
    if existing:
        found = json.loads((state_dir / "cluster.json").read_text())
        has_kms, has_node = "kms" in found, "node" in found
        note = "" if has_kms == kms else f" (KMS {'on' if has_kms else 'off'}: run down first to change that)"
        if node and not has_node:
            note += " (without a node: run down first to add one)"
        log(f"reusing the control plane at {existing.server}{note}")
        return existing
    down(state_dir, quiet=True)
    started = time.monotonic()
    bin_dir = build_binaries()
    node_bin = _build_node_binaries() if node else None
    if node:
        _node_preflight()
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
            *(_node_apiserver_args(pki) if node else ["--disable-admission-plugins=ServiceAccount"]),
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
            f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if node else ()))}",
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
    if node_bin:
        # Written before the node starts, so that `down` cleans up after a node that failed half-way.
        data["node"] = {"name": NODE_NAME, "starting": True}
        (state_dir / "cluster.json").write_text(json.dumps(data))
        data["node"] = _start_node(state_dir, server, port, node_bin)
    (state_dir / "cluster.json").write_text(json.dumps(data))
    at_rest = f"; Secrets encrypted at rest by KMS v2 ({KMS_PROVIDER})" if kms_info else ""
    with_node = f"; node {NODE_NAME} Ready" if node_bin else ""
    log(f"control plane ready at {server} in {time.monotonic() - started:.1f}s{at_rest}{with_node}")
    return Cluster(state_dir=state_dir, server=server)


def up_with_retries(
    state_dir: Path = DEFAULT_DIR, attempts: int = 3, kms: bool = True, node: bool = False
) -> Cluster:
    """``up``, tried again when a port picked as free was taken before a component could bind it."""
    for attempt in range(1, attempts + 1):
        try:
            return up(state_dir, kms=kms, node=node)
        except RuntimeError as e:
            if "address already in use" not in str(e) or attempt == attempts:
                raise
            log(f"a port was taken meanwhile; starting again ({attempt}/{attempts})")
    raise AssertionError("unreachable")


def down(state_dir: Path = DEFAULT_DIR, *, quiet: bool = False) -> None:
    """Stops the processes started in ``state_dir`` (controller manager first) and removes the state."""
    pids = state_dir / "pids"
    if (pids / "containerd.pid").exists() or (pids / "kubelet.pid").exists():
        _stop_node(state_dir, quiet=quiet)
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
    parser.add_argument(
        "--with-node",
        dest="node",
        action="store_true",
        help=f"up: also run a real node ({NODE_NAME}: containerd, CNI bridge, kubelet) and kube-scheduler (root)",
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_binaries())
        if args.node:
            print(_build_node_binaries())
    elif args.command == "up":
        print(up_with_retries(args.dir, kms=args.kms, node=args.node).kubeconfig)
    elif args.command == "down":
        down(args.dir)
    elif args.command == "status":
        cluster = running(args.dir)
        if not cluster:
            print("not running")
            return 1
        node = json.loads((args.dir / "cluster.json").read_text()).get("node")
        with_node = f"; node {node['name']} (pods {node['podCIDR']})" if node else ""
        print(f"running at {cluster.server}; KUBECONFIG={cluster.kubeconfig}{with_node}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
