"""The operator image, built from the Dockerfile without Docker by ``hack/build-image.sh``.

The script installs what it lacks (buildah, debootstrap) from Debian packages, makes a local Debian bookworm base
with debootstrap (cached), and runs ``buildah bud`` on the Dockerfile with that base. These tests run it (about
30 s with the base cached, 1.5 min without, on overlay storage; vfs takes about twice that) and then look at the
image it left in buildah's store: its configuration, what runs in it as user 65532, and what must not be in it
(pip, a compiler, the build machine's CA certificates). A failed build fails the first test, and every other test
here at setup, with the end of the script's output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import managed_secrets

# The build downloads Debian packages and the wheels; the project's default 600 s timeout is too short for a cold
# build on a slow mirror.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "build-image.sh"
NAME = "managed-secrets-operator"
BUILD_TIMEOUT = 900
UID = "65532"
# Where a build tool or a compiler would live in the image.
BIN_DIRS = ("opt/venv/bin", "usr/local/bin", "usr/bin", "bin", "usr/local/sbin", "usr/sbin", "sbin")
COMPILERS = (
    "gcc",
    "cc",
    "c++",
    "g++",
    "clang",
    "x86_64-linux-gnu-gcc",
    "aarch64-linux-gnu-gcc",
    "ld",
    "as",
    "make",
)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Build:
    returncode: int | None  # None: timed out
    stdout: str
    stderr: str

    def values(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.stdout.splitlines() if "=" in line)

    def require(self) -> tuple[str, str]:
        """The image and storage driver, or the test fails with the end of the script's output."""
        if self.returncode is None:
            pytest.fail(
                f"hack/build-image.sh timed out after {BUILD_TIMEOUT}s; its last lines:\n{tail(self.stderr)}"
            )
        if self.returncode != 0:
            pytest.fail(
                f"hack/build-image.sh exited {self.returncode}; its last lines:\n{tail(self.stderr + self.stdout)}"
            )
        values = self.values()
        if "image" not in values or "storage_driver" not in values:
            pytest.fail(f"hack/build-image.sh printed no image=/storage_driver= lines:\n{tail(self.stdout)}")
        return values["image"], values["storage_driver"]


@pytest.fixture(scope="module")
def build() -> Build:
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return Build(None, _text(exc.stdout), _text(exc.stderr))
    return Build(done.returncode, done.stdout, done.stderr)


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


@dataclass(frozen=True)
class Buildah:
    executable: str
    driver: str

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.executable, "--storage-driver", self.driver, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
        return done


@dataclass(frozen=True)
class Image:
    ref: str
    buildah: Buildah
    container: str
    root: Path  # the container's file system, mounted on this machine

    def run(self, *command: str, user: str = f"{UID}:{UID}") -> subprocess.CompletedProcess[str]:
        return self.buildah(
            "run", "--isolation", "chroot", "--user", user, self.container, "--", *command, check=False
        )


@pytest.fixture(scope="module")
def image(build: Build) -> Iterator[Image]:
    ref, driver = build.require()
    executable = shutil.which("buildah")
    assert executable, "hack/build-image.sh succeeded but buildah is not on PATH"
    buildah = Buildah(executable, driver)
    # `buildah from --name` prints the name, which `buildah containers` shows as CONTAINER NAME.
    container = buildah(
        "from", "--pull=never", "--name", f"mso-image-test-{uuid.uuid4().hex[:8]}", ref
    ).stdout.strip()
    try:
        root = Path(buildah("mount", container).stdout.strip())
        yield Image(ref, buildah, container, root)
    finally:
        buildah("rm", container, check=False)


@pytest.fixture(scope="module")
def config(image: Image) -> dict[str, Any]:
    inspected = json.loads(image.buildah("inspect", "--type", "image", image.ref).stdout)
    return dict(inspected["OCIv1"]["config"])


# --- the build ----------------------------------------------------------------------------------------------


def test_the_script_builds_the_image_named_after_the_package_version(build: Build) -> None:
    ref, driver = build.require()
    version = managed_secrets.__version__
    assert ref == f"localhost/{NAME}:{version}"
    assert driver in {"overlay", "vfs"}
    assert "smoke check passed" in build.stderr, tail(build.stderr)


def test_the_script_leaves_one_image_of_the_name_and_no_working_container(image: Image) -> None:
    listed = image.buildah("images", "--format", "{{.Name}}:{{.Tag}}").stdout.split()
    assert [i for i in listed if i.startswith(f"localhost/{NAME}:")] == [image.ref]
    assert len([i for i in listed if i.startswith(f"localhost/{NAME}-base:")]) == 1, listed
    # The only working container of this image or its base is this module's own.
    rows = image.buildah("containers", "--format", "{{.ImageName}} {{.ContainerName}}").stdout.splitlines()
    ours = [
        row.split()[-1]
        for row in rows
        if row.startswith((f"localhost/{NAME}:", f"localhost/{NAME}-base:"))
        or row.split()[-1].startswith("mso-image-")
    ]
    assert ours == [image.container], rows


# --- the image's configuration ------------------------------------------------------------------------------


def test_the_image_runs_the_operator_as_user_65532(config: dict[str, Any]) -> None:
    assert config.get("User") in {UID, f"{UID}:{UID}", "nonroot", "nonroot:nonroot"}, config.get("User")
    assert config.get("Entrypoint") == [NAME]
    # The local base's CMD must not reach the operator as arguments.
    assert not config.get("Cmd"), config.get("Cmd")
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["HOME"] == "/tmp"
    assert env["USER"] == "nonroot"
    assert set(config.get("ExposedPorts", {})) == {"8080/tcp", "9090/tcp"}
    assert config.get("Labels", {}).get("org.opencontainers.image.title") == NAME


def test_the_operator_starts_as_65532_in_the_image(image: Image) -> None:
    who = image.run("sh", "-c", "id -u; id -g; id -un; python --version")
    assert who.returncode == 0, who.stderr
    uid, gid, name, python = who.stdout.split("\n", 3)[:4]
    assert (uid, gid, name) == (UID, UID, "nonroot")
    major, minor = (int(p) for p in python.split()[1].split(".")[:2])
    assert (major, minor) >= (3, 11), python
    helped = image.run(NAME, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--liveness" in helped.stdout
    imported = image.run("python", "-c", "import managed_secrets.operator.handlers, kopf, cryptography, psycopg")
    assert imported.returncode == 0, imported.stderr


# --- what must not be in it ---------------------------------------------------------------------------------


def test_no_pip_in_the_final_image(image: Image) -> None:
    found = image.run("sh", "-c", "command -v pip pip3 || echo none")
    assert found.stdout.strip() == "none", found.stdout
    assert image.run("python", "-m", "pip", "--version").returncode != 0
    leftovers = [
        str(path.relative_to(image.root))
        for pattern in (
            "opt/venv/lib/python3*/site-packages/pip",
            "opt/venv/lib/python3*/site-packages/setuptools",
            "opt/venv/lib/python3*/site-packages/wheel",
            "usr/lib/python3*/*-packages/pip",
            "usr/local/lib/python3*/site-packages/pip",
            *(f"{d}/pip*" for d in BIN_DIRS),
        )
        for path in image.root.glob(pattern)
    ]
    assert leftovers == []
    assert not list((image.root / "root").glob(".cache/pip")), "a pip cache shipped"


def test_no_compiler_in_the_final_image(image: Image) -> None:
    found = image.run("sh", "-c", "command -v gcc cc c++ g++ clang || echo none")
    assert found.stdout.strip() == "none", found.stdout
    present = [f"{d}/{c}" for d in BIN_DIRS for c in COMPILERS if (image.root / d / c).exists()]
    assert present == []
    assert not list(image.root.glob("usr/lib/gcc/*/*/cc1")), "gcc's compiler proper is in the image"


def test_the_build_machines_certificates_and_pip_config_stay_out_of_the_image(image: Image) -> None:
    # The build mounts this machine's CA bundle and a pip.conf at /etc/xdg/pip for pip; nothing of it is committed.
    assert list((image.root / "etc" / "xdg" / "pip").iterdir()) == []
    assert not (image.root / "etc" / "pip.conf").exists()
    bundle = (image.root / "etc" / "ssl" / "certs" / "ca-certificates.crt").read_text()
    local = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    for cert in local:
        body = "".join(
            line for line in cert.read_text(errors="replace").splitlines() if line and not line.startswith("-----")
        )
        assert body[:200] not in bundle.replace("\n", ""), (
            f"{cert} (trusted only by the build machine) is in the image"
        )
