"""Release artifacts: ``make dist`` (``python hack/dist.py --out dist``).

Everything is built from this source tree, through staging directories in a temporary directory (nothing is
copied into the repository), into the output directory:

- ``managed_secrets_operator-V.tar.gz`` and ``-V-py3-none-any.whl``: the operator; requires ``kubectl-msecret==V``;
- ``kubectl_msecret-V.tar.gz`` and ``-V-py3-none-any.whl``: the kubectl plugin alone (``kubernetes``, ``pyyaml``);
- ``managed-secrets-operator-<chart version>.tgz``: ``helm package charts/managed-secrets-operator``;
- ``kubectl-msecret_V.tar.gz``: the single-file plugin (a Python zip application) and LICENSE, for krew;
- ``msecret.yaml``: ``packaging/krew/msecret.yaml`` with the version and that archive's sha256;
- ``SHA256SUMS``: for ``sha256sum -c SHA256SUMS``.

One version: ``managed_secrets.__version__``. pyproject.toml reads it (``[tool.setuptools.dynamic]``), the plugin's
staging directory gets it as its VERSION file, and the build stops unless the chart's ``appVersion`` equals it
(Chart.yaml stays the file ``helm install charts/...`` reads, so it is checked rather than rewritten here).

The split. The repository's pyproject.toml describes the whole package, which is what ``pip install -e .`` (the
development venv), the Dockerfile and every test install. For the release it is split in two distributions
whose files never overlap, so that both in one environment install and uninstall cleanly:

- ``kubectl-msecret`` (packaging/kubectl-msecret/pyproject.toml): ``managed_secrets/names.py`` and
  ``managed_secrets/cli/``, no ``managed_secrets/__init__.py`` (alone, ``managed_secrets`` is a namespace
  package), the scripts of pyproject.toml that point into ``managed_secrets.cli``, and as dependencies the
  repository's own specifiers of ``kubernetes`` and ``pyyaml``;
- ``managed-secrets-operator``: the repository's pyproject.toml with those scripts removed and
  ``kubectl-msecret==V`` added to its dependencies, and its sources without ``names.py`` and ``cli/``.

The single file. ``pip install --target`` resolves the plugin wheel's dependencies for "any platform, pure Python,
Python 3.11" (so the newest ``kubernetes`` within the range whose whole closure is pure Python: 37 needs
pydantic-core, which is compiled only); PyYAML has no pure wheel, so one is made from its platform wheel without
the C extension (PyYAML falls back to its pure-Python parser). The tree is zipped with a bootstrap
(packaging/kubectl-msecret/zipapp_main.py) behind a ``#!/usr/bin/env python3`` line. File dates in the zip, the
tar and the wheels are the last commit's (or ``SOURCE_DATE_EPOCH``), so the same tree and the same resolved
dependencies give the same wheels, krew archive and manifest, byte for byte (not the sdists, nor helm's .tgz).
"""

from __future__ import annotations

import argparse
import ast
import base64
import gzip
import hashlib
import io
import os
import re
import shutil
import string
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CHART = ROOT / "charts" / "managed-secrets-operator"
PLUGIN_PACKAGING = ROOT / "packaging" / "kubectl-msecret"
KREW_TEMPLATE = ROOT / "packaging" / "krew" / "msecret.yaml"

OPERATOR = "managed-secrets-operator"
PLUGIN = "kubectl-msecret"
# The distributions the plugin may depend on: pyproject.toml's specifiers for them are copied.
PLUGIN_DEPENDENCIES = ("kubernetes", "pyyaml")
# What the plugin's distribution ships from src/: the CLI package and the shared names.
PLUGIN_SOURCES = ("managed_secrets/names.py", "managed_secrets/cli")
# The Python the single file is resolved for: the oldest the project supports.
ZIPAPP_PYTHON = "3.11"
SHEBANG = b"#!/usr/bin/env python3\n"
# Placeholders of packaging/krew/msecret.yaml that a release replaces (--url-base, --homepage).
DEFAULT_URL_BASE = "https://example.invalid/managed-secrets-operator/releases/download/v${VERSION}"
DEFAULT_HOMEPAGE = "https://example.invalid/managed-secrets-operator"
EXTENSION_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# What a previous run left in the output directory: removed first, and nothing else is touched.
OUR_ARTIFACTS = (
    "managed_secrets_operator-*",
    "kubectl_msecret-*",
    f"{OPERATOR}-*.tgz",
    f"{PLUGIN}_*.tar.gz",
    "msecret.yaml",
    "SHA256SUMS",
)


class DistError(Exception):
    """A check of the release failed; the message says which."""


def say(message: str) -> None:
    print(f"dist: {message}", file=sys.stderr, flush=True)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise DistError(f"cannot read a distribution name in the requirement {requirement!r}")
    return canonical(match.group(1))


# --- the one version ---------------------------------------------------------------------------------------


def package_version(src: Path = SRC) -> str:
    """``managed_secrets.__version__``, read without importing the package (as setuptools' ``attr`` does)."""
    tree = ast.parse((src / "managed_secrets" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, str) and value:
                return value
    raise DistError("src/managed_secrets/__init__.py sets no __version__ string")


def chart_metadata(chart: Path = CHART) -> dict[str, Any]:
    data = yaml.safe_load((chart / "Chart.yaml").read_text())
    if not isinstance(data, dict):
        raise DistError(f"{chart / 'Chart.yaml'} is not a mapping")
    return data


def check_chart_app_version(version: str, chart: Mapping[str, Any]) -> None:
    if str(chart.get("appVersion")) != version:
        raise DistError(
            f"Chart.yaml's appVersion is {chart.get('appVersion')!r} but the package version "
            f"(src/managed_secrets/__init__.py) is {version!r}: set appVersion: {version!r} in Chart.yaml"
        )


# --- the split ---------------------------------------------------------------------------------------------


def load_pyproject(path: Path = ROOT / "pyproject.toml") -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def plugin_scripts(pyproject: Mapping[str, Any]) -> dict[str, str]:
    """The scripts that run the kubectl plugin: every one whose target is in managed_secrets.cli."""
    scripts: dict[str, str] = dict(pyproject["project"].get("scripts", {}))
    found = {
        name: target
        for name, target in scripts.items()
        if target.split(":")[0] == "managed_secrets.cli" or target.startswith("managed_secrets.cli.")
    }
    if PLUGIN not in found:
        raise DistError(f"pyproject.toml has no {PLUGIN} script pointing into managed_secrets.cli")
    return found


def plugin_requirements(pyproject: Mapping[str, Any]) -> list[str]:
    """The operator's own specifiers of the plugin's dependencies, in the order of PLUGIN_DEPENDENCIES."""
    by_name = {requirement_name(r): r for r in pyproject["project"]["dependencies"]}
    missing = [n for n in PLUGIN_DEPENDENCIES if n not in by_name]
    if missing:
        raise DistError(f"pyproject.toml's dependencies do not name {', '.join(missing)}")
    return [by_name[n] for n in PLUGIN_DEPENDENCIES]


def entry_points_text(scripts: Mapping[str, str]) -> str:
    lines = ["[console_scripts]"] + [f"{name} = {target}" for name, target in sorted(scripts.items())]
    return "\n".join(lines) + "\n"


def release_pyproject(text: str, version: str) -> str:
    """The operator's pyproject.toml for the release: the plugin's scripts out, ``kubectl-msecret==V`` in.

    A text edit (comments and layout stay), checked by parsing the result.
    """
    before = tomllib.loads(text)
    moved = plugin_scripts(before)
    for name, target in moved.items():
        line = re.compile(
            rf'^[ \t]*(?:{re.escape(name)}|"{re.escape(name)}")[ \t]*=[ \t]*"{re.escape(target)}"[ \t]*(?:#.*)?\n',
            re.MULTILINE,
        )
        text, count = line.subn("", text)
        if count != 1:
            raise DistError(f"pyproject.toml: expected one line for the script {name}, found {count}")
    requirement = f"{PLUGIN}=={version}"
    opening = re.compile(r"^dependencies[ \t]*=[ \t]*\[[ \t]*\n", re.MULTILINE)
    comment = "  # names.py, cli/ and the kubectl-msecret script are in the plugin's distribution (hack/dist.py)\n"
    text, count = opening.subn(lambda m: f'{m.group(0)}{comment}  "{requirement}",\n', text, count=1)
    if count != 1:
        raise DistError("pyproject.toml: no 'dependencies = [' line to add the plugin's distribution to")
    after = tomllib.loads(text)
    expected_scripts = {k: v for k, v in before["project"].get("scripts", {}).items() if k not in moved}
    if after["project"].get("scripts", {}) != expected_scripts:
        raise DistError("pyproject.toml: removing the plugin's scripts changed other scripts")
    if after["project"]["dependencies"] != [requirement, *before["project"]["dependencies"]]:
        raise DistError("pyproject.toml: adding the plugin's distribution changed other dependencies")
    return text


def stage_operator(stage: Path, version: str) -> Path:
    stage.mkdir(parents=True)
    for name in ("README.md", "LICENSE"):
        shutil.copy2(ROOT / name, stage / name)
    (stage / "pyproject.toml").write_text(release_pyproject((ROOT / "pyproject.toml").read_text(), version))
    shutil.copytree(SRC, stage / "src", ignore=IGNORED)
    for relative in PLUGIN_SOURCES:
        path = stage / "src" / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return stage


def stage_plugin(stage: Path, version: str, pyproject: Mapping[str, Any]) -> Path:
    stage.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PLUGIN_PACKAGING / name, stage / name)
    shutil.copy2(ROOT / "LICENSE", stage / "LICENSE")
    (stage / "VERSION").write_text(version + "\n")
    (stage / "requirements.txt").write_text("\n".join(plugin_requirements(pyproject)) + "\n")
    (stage / "entry_points.txt").write_text(entry_points_text(plugin_scripts(pyproject)))
    for relative in PLUGIN_SOURCES:
        source, target = SRC / relative, stage / "src" / relative
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return stage


def run(command: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise DistError(f"{what} failed (exit {result.returncode}):\n{tail}")
    say(f"{what} in {time.monotonic() - started:.1f}s")
    return result


def build_distribution(stage: Path, out: Path, what: str) -> None:
    """sdist, then the wheel from that sdist (python -m build), so the sdist is known to be complete."""
    try:
        import build  # noqa: F401
    except ImportError as exc:
        raise DistError(
            "the 'build' package is missing: make install (pip install -e '.[dev]') brings it"
        ) from exc
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date())}  # the wheels' file dates
    run([sys.executable, "-m", "build", "--outdir", str(out), str(stage)], f"built {what}", env=env)


# --- checks of the built distributions ---------------------------------------------------------------------


def wheel_metadata(wheel: Path) -> tuple[set[str], list[str]]:
    """The wheel's files outside its .dist-info, and its Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in z.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    files = {n for n in names if ".dist-info/" not in n and not n.endswith("/")}
    return files, requires


def check_distributions(out: Path, version: str) -> None:
    operator_wheel = out / f"managed_secrets_operator-{version}-py3-none-any.whl"
    plugin_wheel = out / f"kubectl_msecret-{version}-py3-none-any.whl"
    license_text = (ROOT / "LICENSE").read_bytes()
    for wheel in (operator_wheel, plugin_wheel):
        with zipfile.ZipFile(wheel) as z:
            licenses = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            if len(licenses) != 1 or z.read(licenses[0]) != license_text:
                raise DistError(f"{wheel.name} does not carry LICENSE in its .dist-info/licenses/")
    for sdist in (out / f"managed_secrets_operator-{version}.tar.gz", out / f"kubectl_msecret-{version}.tar.gz"):
        with tarfile.open(sdist) as t:
            member = t.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/LICENSE")
            if member is None or member.read() != license_text:
                raise DistError(f"{sdist.name} does not carry LICENSE")
    operator_files, operator_requires = wheel_metadata(operator_wheel)
    plugin_files, plugin_requires = wheel_metadata(plugin_wheel)
    if shared := operator_files & plugin_files:
        raise DistError(f"both wheels ship {sorted(shared)}")
    if "managed_secrets/__init__.py" in plugin_files or not plugin_files >= {"managed_secrets/names.py"}:
        raise DistError(
            f"{plugin_wheel.name} must ship managed_secrets/names.py and no managed_secrets/__init__.py"
        )
    if f"{PLUGIN}=={version}" not in operator_requires:
        raise DistError(f"{operator_wheel.name} does not require {PLUGIN}=={version}: {operator_requires}")
    if sorted(requirement_name(r) for r in plugin_requires) != sorted(PLUGIN_DEPENDENCIES):
        raise DistError(f"{plugin_wheel.name} requires {plugin_requires}, expected only {PLUGIN_DEPENDENCIES}")


# --- the chart ---------------------------------------------------------------------------------------------


def helm_binary() -> str:
    if given := os.environ.get("HELM"):
        return given
    if found := shutil.which("helm"):
        return found
    # The pinned helm that the tests use (built once, cached; the script prints its directory last).
    out = run(["bash", str(ROOT / "hack" / "build-controlplane.sh")], "found helm (hack/build-controlplane.sh)")
    return str(Path(out.stdout.strip().splitlines()[-1]) / "helm")


def package_chart(out: Path, version: str) -> Path:
    chart = chart_metadata()
    target = out / f"{OPERATOR}-{chart['version']}.tgz"
    run(
        [helm_binary(), "package", str(CHART), "--destination", str(out)], f"packaged the chart {chart['version']}"
    )
    if not target.is_file():
        raise DistError(f"helm package did not write {target}")
    with tarfile.open(target) as t:
        member = t.extractfile(f"{chart['name']}/Chart.yaml")
        packaged = yaml.safe_load(member.read()) if member else {}
    check_chart_app_version(version, packaged)
    return target


# --- the single file ---------------------------------------------------------------------------------------


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pure_wheel(platform_wheel: Path, directory: Path) -> Path:
    """A py3-none-any copy of a platform wheel without its extension modules (for PyYAML, which has no pure wheel
    and falls back to its pure-Python implementation when its C extension is missing)."""
    name, wheel_version = platform_wheel.name.split("-")[:2]
    target = directory / f"{name}-{wheel_version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(platform_wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        record_name = ""
        for info in source.infolist():
            entry = info.filename
            if entry.endswith("/") or entry.endswith(EXTENSION_SUFFIXES):
                continue
            if entry.endswith(".dist-info/RECORD"):
                record_name = entry
                continue
            data = source.read(entry)
            if entry.endswith(".dist-info/WHEEL"):
                data = b"Wheel-Version: 1.0\nGenerator: hack/dist.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            wheel.writestr(entry, data)
            records.append(f"{entry},{record_hash(data)},{len(data)}")
        if not record_name:
            raise DistError(f"{platform_wheel.name} has no RECORD")
        wheel.writestr(record_name, "\n".join([*records, f"{record_name},,"]) + "\n")
    return target


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def vendor_tree(plugin_wheel: Path, pyproject: Mapping[str, Any], work: Path, version: str) -> Path:
    """The plugin and its dependencies as pure Python in one directory: the single file's contents."""
    wheelhouse, tree = work / "wheelhouse", work / "zipapp"
    wheelhouse.mkdir()
    yaml_spec = plugin_requirements(pyproject)[PLUGIN_DEPENDENCIES.index("pyyaml")]
    download = work / "download"
    run(
        pip("download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(download), yaml_spec),
        f"downloaded a PyYAML wheel ({yaml_spec})",
    )
    for downloaded in download.glob("*.whl"):
        pure_wheel(downloaded, wheelhouse)
    result = run(
        pip("install", "--no-compile", "--target", str(tree), "--only-binary=:all:", "--platform", "any",
            "--implementation", "py", "--abi", "none", "--python-version", ZIPAPP_PYTHON,
            "--find-links", str(wheelhouse), str(plugin_wheel)),
        f"resolved the plugin's dependencies as pure Python {ZIPAPP_PYTHON}",
    )  # fmt: skip
    installed = re.findall(r"Successfully installed (.*)", result.stdout)
    say(f"vendored: {installed[-1] if installed else '?'}")
    shutil.rmtree(tree / "bin", ignore_errors=True)
    for cache in list(tree.rglob("__pycache__")):
        shutil.rmtree(cache)
    # pip's records of this install (direct_url.json names the wheel's path): the archive is no environment pip
    # manages, and they would make each build's digest differ.
    for record in [*tree.glob("*.dist-info/RECORD"), *tree.glob("*.dist-info/direct_url.json")]:
        record.unlink()
    compiled = [str(p.relative_to(tree)) for p in tree.rglob("*") if p.name.endswith(EXTENSION_SUFFIXES)]
    if compiled:
        raise DistError(f"the single file would hold compiled code: {compiled[:5]}")
    # zipimport has no namespace packages: a regular package for the archive alone.
    (tree / "managed_secrets" / "__init__.py").write_text(
        f'"""managed-secrets-operator\'s kubectl plugin, as a single file."""\n\n__version__ = "{version}"\n'
    )
    return tree


def source_date() -> int:
    if given := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(given)
    out = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return int(out) if out.isdigit() else 315532800  # 1980-01-01, the earliest date a zip can hold


def zipapp_entries(tree: Path) -> list[tuple[str, bytes]]:
    return [
        (path.relative_to(tree).as_posix(), path.read_bytes())
        for path in sorted(tree.rglob("*"), key=lambda p: p.relative_to(tree).as_posix())
        if path.is_file()
    ]


def build_id(entries: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, data in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def bootstrap(identity: str) -> bytes:
    text = (PLUGIN_PACKAGING / "zipapp_main.py").read_text()
    marker = 'BUILD_ID = "dev"\n'
    if text.count(marker) != 1:
        raise DistError(f"packaging/kubectl-msecret/zipapp_main.py must set {marker.strip()} exactly once")
    return text.replace(marker, f'BUILD_ID = "{identity}"\n').encode()


def write_zipapp(tree: Path, target: Path, when: int) -> str:
    entries = zipapp_entries(tree)
    identity = build_id(entries)
    date = time.gmtime(max(when, 315532800))[:6]
    with target.open("wb") as raw:
        raw.write(SHEBANG)
        with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in [("__main__.py", bootstrap(identity)), *entries]:
                info = zipfile.ZipInfo(name, date_time=date)  # type: ignore[arg-type]
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o100644 << 16
                z.writestr(info, data)
    target.chmod(0o755)
    return identity


def write_tarball(target: Path, members: Iterable[tuple[str, Path, int]], when: int) -> None:
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=when) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name, path, mode in members:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, when
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    target.write_bytes(raw.getvalue())


# --- the krew manifest -------------------------------------------------------------------------------------


def krew_manifest(template: str, version: str, sha256: str, url_base: str, homepage: str) -> str:
    values = {"VERSION": version, "SHA256": sha256}
    values["URL_BASE"] = string.Template(url_base).substitute(values)
    values["HOMEPAGE"] = string.Template(homepage).substitute(values)
    try:
        text = string.Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise DistError(f"packaging/krew/msecret.yaml: unknown placeholder {exc}") from exc
    manifest = yaml.safe_load(text)
    spec = manifest.get("spec", {}) if isinstance(manifest, dict) else {}
    platforms = spec.get("platforms") or []
    if (
        manifest.get("apiVersion") != "krew.googlecontainertools.github.com/v1alpha2"
        or manifest.get("kind") != "Plugin"
        or spec.get("version") != f"v{version}"
        or not platforms
        or any(p.get("sha256") != sha256 or p.get("bin") != PLUGIN for p in platforms)
    ):
        raise DistError("packaging/krew/msecret.yaml does not fill into a krew Plugin for this archive")
    return text


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the whole ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifacts:
    version: str
    operator_wheel: Path
    operator_sdist: Path
    plugin_wheel: Path
    plugin_sdist: Path
    chart: Path
    zipapp_tarball: Path
    krew_manifest: Path
    checksums: Path

    def files(self) -> list[Path]:
        return [
            self.operator_sdist,
            self.operator_wheel,
            self.plugin_sdist,
            self.plugin_wheel,
            self.chart,
            self.zipapp_tarball,
            self.krew_manifest,
        ]


def clean_output(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for pattern in OUR_ARTIFACTS:
        for old in out.glob(pattern):
            if old.is_file():
                old.unlink()


def build_all(
    out: Path, work: Path, url_base: str = DEFAULT_URL_BASE, homepage: str = DEFAULT_HOMEPAGE
) -> Artifacts:
    started = time.monotonic()
    version = package_version()
    check_chart_app_version(version, chart_metadata())
    pyproject = load_pyproject()
    say(f"version {version} (src/managed_secrets/__init__.py), output {out}")
    clean_output(out)

    build_distribution(stage_plugin(work / PLUGIN, version, pyproject), out, f"{PLUGIN} {version} (sdist, wheel)")
    build_distribution(stage_operator(work / OPERATOR, version), out, f"{OPERATOR} {version} (sdist, wheel)")
    check_distributions(out, version)
    chart = package_chart(out, version)

    plugin_wheel = out / f"kubectl_msecret-{version}-py3-none-any.whl"
    when = source_date()
    single = work / "single" / PLUGIN
    single.parent.mkdir()
    identity = write_zipapp(vendor_tree(plugin_wheel, pyproject, work, version), single, when)
    tarball = out / f"{PLUGIN}_{version}.tar.gz"
    write_tarball(tarball, [(PLUGIN, single, 0o755), ("LICENSE", ROOT / "LICENSE", 0o644)], when)
    say(f"wrote the single-file plugin (build {identity}, {single.stat().st_size / 1e6:.1f} MB)")

    manifest = out / "msecret.yaml"
    manifest.write_text(krew_manifest(KREW_TEMPLATE.read_text(), version, sha256_of(tarball), url_base, homepage))
    artifacts = Artifacts(
        version=version,
        operator_wheel=out / f"managed_secrets_operator-{version}-py3-none-any.whl",
        operator_sdist=out / f"managed_secrets_operator-{version}.tar.gz",
        plugin_wheel=plugin_wheel,
        plugin_sdist=out / f"kubectl_msecret-{version}.tar.gz",
        chart=chart,
        zipapp_tarball=tarball,
        krew_manifest=manifest,
        checksums=out / "SHA256SUMS",
    )
    artifacts.checksums.write_text("".join(f"{sha256_of(p)}  {p.name}\n" for p in artifacts.files()))
    for path in [*artifacts.files(), artifacts.checksums]:
        say(f"  {path.name:55} {path.stat().st_size / 1024:9.1f} KiB")
    say(f"done in {time.monotonic() - started:.0f}s")
    return artifacts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default: dist/)")
    parser.add_argument(
        "--url-base",
        default=os.environ.get("DIST_URL_BASE") or DEFAULT_URL_BASE,
        help="where the release's files will be downloaded from, for the krew manifest "
        "(${VERSION} is replaced; default: a placeholder; env DIST_URL_BASE)",
    )
    parser.add_argument(
        "--homepage",
        default=os.environ.get("DIST_HOMEPAGE") or DEFAULT_HOMEPAGE,
        help="the krew manifest's homepage (default: a placeholder; env DIST_HOMEPAGE)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mso-dist-") as work:
        try:
            build_all(args.out.resolve(), Path(work), args.url_base, args.homepage)
        except DistError as exc:
            say(f"FAILED: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
