"""``make dist`` end to end: build the release into a temporary directory and install what it made.

The script behind the target (hack/dist.py) builds every artifact (about 20 s). Then: the plugin's wheel goes
into a fresh venv, where ``kubectl-msecret --help`` runs and nothing of the operator (Kopf, psycopg,
cryptography, ...) is installed; the operator's wheel goes into another, where ``managed-secrets-operator --help``
runs and the plugin came along as its dependency, and the two distributions share no file (the operator
uninstalled, the plugin still runs). The single file runs ``--help`` under the system python3, the wheels and
sdists carry LICENSE, the chart's appVersion is the package version, and the krew manifest and SHA256SUMS name the
files' real digests. pip reaches PyPI as configured on the machine and uses its cache, so the two venvs take
about a minute. One test runs the single file as kubectl's plugin against the suite's control plane and
operator (a rotation and a read); the others need no cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client

import cluster as local_cluster
import managed_secrets
from support import kube
from support.operator import GROUP, PLURAL, OperatorEnvironment, get_ms, managed_secret, wait_ready
from support.operator import VERSION as API_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
VERSION = managed_secrets.__version__
# Distributions that only the operator needs: none may be in the plugin's venv (canonical names).
OPERATOR_ONLY = {
    "kopf",
    "cryptography",
    "psycopg",
    "psycopg-binary",
    "pymysql",
    "jinja2",
    "grpcio",
    "python-pkcs11",
    "prometheus-client",
    "croniter",
    "managed-secrets-operator",
}
OPERATOR_ONLY_MODULES = ("kopf", "psycopg", "cryptography", "pymysql", "jinja2", "grpc", "pkcs11")


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(*command: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{tail(result.stdout + result.stderr)}"
    return result


@dataclass(frozen=True)
class Dist:
    out: Path

    def path(self, name: str) -> Path:
        found = self.out / name
        assert found.is_file(), f"make dist did not write {name}: {sorted(p.name for p in self.out.iterdir())}"
        return found

    @property
    def operator_wheel(self) -> Path:
        return self.path(f"managed_secrets_operator-{VERSION}-py3-none-any.whl")

    @property
    def plugin_wheel(self) -> Path:
        return self.path(f"kubectl_msecret-{VERSION}-py3-none-any.whl")

    @property
    def sdists(self) -> list[Path]:
        return [
            self.path(f"managed_secrets_operator-{VERSION}.tar.gz"),
            self.path(f"kubectl_msecret-{VERSION}.tar.gz"),
        ]

    @property
    def chart(self) -> Path:
        [chart] = self.out.glob("managed-secrets-operator-*.tgz")
        return chart

    @property
    def krew_archive(self) -> Path:
        return self.path(f"kubectl-msecret_{VERSION}.tar.gz")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "dist.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"hack/dist.py exited {result.returncode}:\n{tail(result.stdout + result.stderr)}")
    return Dist(out)


class Venv:
    """A fresh venv without pip of its own: this interpreter's pip installs into it (``pip --python``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        run(sys.executable, "-m", "venv", "--without-pip", path, timeout=120)
        self.python = path / "bin" / "python"

    def pip(self, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "--python",
            self.python,
            *args,
            timeout=timeout,
        )

    def distributions(self) -> set[str]:
        listed = json.loads(self.pip("list", "--format", "json").stdout)
        return {str(d["name"]).lower().replace("_", "-").replace(".", "-") for d in listed}

    def script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        # Outside the test's own venv and cluster: no KUBECONFIG, nothing on PATH but the system's.
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.path), "LANG": "C.UTF-8"}
        return subprocess.run(
            [str(self.path / "bin" / name), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def plugin_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    venv = Venv(tmp_path_factory.mktemp("plugin-venv") / "venv")
    venv.pip("install", "--quiet", dist.plugin_wheel)
    return venv


@pytest.fixture(scope="module")
def operator_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    venv = Venv(tmp_path_factory.mktemp("operator-venv") / "venv")
    # kubectl-msecret==VERSION is not on PyPI: it comes from dist/, everything else from the index.
    venv.pip("install", "--quiet", "--find-links", dist.out, dist.operator_wheel, timeout=900)
    return venv


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


# --- the plugin alone --------------------------------------------------------------------------------------


def test_the_plugin_wheel_alone_runs_kubectl_msecret_help(plugin_venv: Venv) -> None:
    result = plugin_venv.script("kubectl-msecret", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubectl msecret"), result.stdout[:300]


def test_the_plugin_wheel_brings_nothing_of_the_operator(plugin_venv: Venv) -> None:
    installed = plugin_venv.distributions()
    assert {"kubectl-msecret", "kubernetes", "pyyaml"} <= installed
    assert not installed & OPERATOR_ONLY, sorted(installed & OPERATOR_ONLY)
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = run(plugin_venv.python, "-c", probe, *OPERATOR_ONLY_MODULES).stdout.strip()
    assert found == "[]"
    assert not (plugin_venv.path / "bin" / "managed-secrets-operator").exists()


# --- the operator, and both in one venv --------------------------------------------------------------------


def test_the_operator_wheel_runs_managed_secrets_operator_help_and_brings_the_plugin(operator_venv: Venv) -> None:
    result = operator_venv.script("managed-secrets-operator", "--help")
    assert result.returncode == 0, result.stderr
    assert "--liveness" in result.stdout, result.stdout[:300]
    assert {"managed-secrets-operator", "kubectl-msecret", "kopf"} <= operator_venv.distributions()
    assert operator_venv.script("kubectl-msecret", "--help").returncode == 0
    operator_venv.pip("check")


def test_the_two_wheels_share_no_file(dist: Dist) -> None:
    operator, plugin = wheel_files(dist.operator_wheel), wheel_files(dist.plugin_wheel)
    assert not operator & plugin, sorted(operator & plugin)
    assert {"managed_secrets/names.py", "managed_secrets/cli/main.py"} <= plugin
    assert "managed_secrets/__init__.py" in operator and "managed_secrets/__init__.py" not in plugin
    assert not [f for f in operator if f.startswith("managed_secrets/cli/") or f == "managed_secrets/names.py"]


def test_uninstalling_the_operator_leaves_the_plugin_working(dist: Dist, operator_venv: Venv) -> None:
    operator_venv.pip("uninstall", "--yes", "managed-secrets-operator")
    try:
        assert not (operator_venv.path / "bin" / "managed-secrets-operator").exists()
        result = operator_venv.script("kubectl-msecret", "--help")
        assert result.returncode == 0, result.stderr
    finally:
        operator_venv.pip("install", "--quiet", "--no-deps", dist.operator_wheel)
    assert operator_venv.script("managed-secrets-operator", "--help").returncode == 0


# --- the single file for krew ------------------------------------------------------------------------------


def system_python() -> str:
    found = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else shutil.which("python3")
    assert found, "no python3 on this machine"
    return found


@pytest.fixture(scope="module")
def single_file(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("krew")
    with tarfile.open(dist.krew_archive) as t:
        members = {m.name: m for m in t.getmembers()}
        assert set(members) == {"kubectl-msecret", "LICENSE"}
        assert members["kubectl-msecret"].mode & 0o111, oct(members["kubectl-msecret"].mode)
        t.extractall(where, filter="data")
    assert (where / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    yield where / "kubectl-msecret"


def test_the_single_file_runs_help_with_the_system_python(single_file: Path, tmp_path: Path) -> None:
    python = system_python()
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for command in ([python, str(single_file), "--help"], [str(single_file), "--help"]):  # the second: its #! line
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert result.stdout.startswith("usage: kubectl msecret"), result.stdout[:300]
    # The first run unpacked it once into the user's cache.
    assert [p.name for p in (tmp_path / ".cache" / "kubectl-msecret").iterdir() if not p.name.startswith(".")]


def test_kubectl_runs_the_single_file_as_its_plugin_against_the_api_server(
    single_file: Path, admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, kubeconfig: str
) -> None:
    # As krew installs it: the file on PATH, run by kubectl through its #! line with the system python3 (and the
    # Kubernetes client vendored in it, which may be older than the venv's).
    kubectl = str(local_cluster.build_binaries() / "kubectl")
    home = single_file.parent / "home"
    env = {
        "PATH": f"{single_file.parent}:{Path(system_python()).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "KUBECONFIG": kubeconfig,
        "LANG": "C.UTF-8",
    }

    def msecret(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "msecret", *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, API_VERSION, namespace, PLURAL, managed_secret("single-file")
    )
    wait_ready(admin, namespace, "single-file")
    rotated = msecret("rotate", "single-file", "-n", namespace)
    assert rotated.returncode == 0, rotated.stderr
    kube.eventually(
        lambda: get_ms(admin, namespace, "single-file")["status"].get("currentVersion") == "v2", what="v2"
    )
    versions = msecret("versions", "single-file", "-n", namespace, "-o", "json")
    assert versions.returncode == 0, versions.stderr
    assert json.loads(versions.stdout)["name"] == "single-file"
    assert (home / ".cache" / "kubectl-msecret").is_dir()


def test_the_single_file_holds_pure_python_and_nothing_of_the_operator(single_file: Path) -> None:
    with zipfile.ZipFile(single_file) as z:
        names = z.namelist()
    assert (
        "__main__.py" in names and "managed_secrets/cli/main.py" in names and "managed_secrets/names.py" in names
    )
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
    tops = {n.split("/")[0] for n in names}
    assert {"kubernetes", "yaml"} <= tops
    assert not tops & {"kopf", "cryptography", "psycopg", "pymysql", "jinja2", "grpc", "pkcs11"}
    assert not [
        n
        for n in names
        if n.startswith("managed_secrets/") and n.split("/")[1] not in {"cli", "names.py", "__init__.py"}
    ]


# --- LICENSE, versions, checksums --------------------------------------------------------------------------


def test_the_wheels_and_sdists_carry_the_license(dist: Dist) -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    for wheel in (dist.operator_wheel, dist.plugin_wheel):
        with zipfile.ZipFile(wheel) as z:
            [name] = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            assert z.read(name) == license_text
            metadata = z.read(name.replace("licenses/LICENSE", "METADATA")).decode()
            assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    for sdist in dist.sdists:
        with tarfile.open(sdist) as t:
            member = t.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/LICENSE")
            assert member is not None and member.read() == license_text


def test_the_packaged_charts_app_version_is_the_package_version(dist: Dist) -> None:
    with tarfile.open(dist.chart) as t:
        member = t.extractfile("managed-secrets-operator/Chart.yaml")
        assert member is not None
        chart = yaml.safe_load(member.read())
    assert str(chart["appVersion"]) == VERSION
    assert dist.chart.name == f"managed-secrets-operator-{chart['version']}.tgz"
    with zipfile.ZipFile(dist.operator_wheel) as z:
        metadata = z.read(f"managed_secrets_operator-{VERSION}.dist-info/METADATA").decode()
    assert f"Version: {VERSION}\n" in metadata
    assert f"Requires-Dist: kubectl-msecret=={VERSION}\n" in metadata


def test_the_krew_manifest_and_sha256sums_name_the_real_digests(dist: Dist) -> None:
    def sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    manifest = yaml.safe_load(dist.path("msecret.yaml").read_text())
    assert manifest["kind"] == "Plugin" and manifest["spec"]["version"] == f"v{VERSION}"
    for platform in manifest["spec"]["platforms"]:
        assert platform["sha256"] == sha256(dist.krew_archive)
        assert platform["uri"].endswith(f"/{dist.krew_archive.name}")
    lines = dist.path("SHA256SUMS").read_text().splitlines()
    sums = {name: digest for digest, name in (line.split("  ", 1) for line in lines)}
    assert set(sums) == {p.name for p in dist.out.iterdir()} - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert sha256(dist.out / name) == digest, name
