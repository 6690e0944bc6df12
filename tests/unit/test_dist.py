"""The release's packaging, without building it (tests/integration/test_dist.py builds it and installs it).

One version (``managed_secrets.__version__``, which pyproject.toml reads and the chart's appVersion repeats); the
split into the operator's and the plugin's distributions as hack/dist.py stages them; the CLI's imports, which
decide whether the plugin's distribution is enough to run it; the krew manifest template; the pure-Python wheel
made of a platform wheel; the single file's bootstrap, on a tiny archive.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import dist  # hack/dist.py; tests/conftest.py puts hack/ on the path
import pytest
import yaml

import managed_secrets

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "src" / "managed_secrets" / "cli"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The operator's dependencies the plugin must never need (top-level import names).
OPERATOR_ONLY_IMPORTS = {
    "kopf",
    "cryptography",
    "jinja2",
    "prometheus_client",
    "croniter",
    "psycopg",
    "pymysql",
    "pkcs11",
    "grpc",
    "google",
}


# --- one version -------------------------------------------------------------------------------------------


def test_the_version_is_written_once_in_the_package() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "managed_secrets.__version__"}
    assert dist.package_version() == managed_secrets.__version__


def test_the_charts_app_version_is_the_package_version() -> None:
    # Chart.yaml is what `helm install charts/...` reads, so it holds the version itself; this keeps it equal.
    assert str(dist.chart_metadata()["appVersion"]) == managed_secrets.__version__


def test_a_different_app_version_stops_the_build_naming_both() -> None:
    with pytest.raises(dist.DistError, match=r"appVersion is '9\.9\.9'.*is '0\.1\.0'"):
        dist.check_chart_app_version("0.1.0", {"appVersion": "9.9.9"})


def test_the_license_is_the_apache_license_and_declared_as_a_license_file() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


# --- the split ---------------------------------------------------------------------------------------------


def test_the_plugin_depends_on_the_operators_own_kubernetes_and_pyyaml_specifiers() -> None:
    requirements = dist.plugin_requirements(PYPROJECT)
    assert [dist.requirement_name(r) for r in requirements] == ["kubernetes", "pyyaml"]
    assert set(requirements) <= set(PYPROJECT["project"]["dependencies"])


def test_every_plugin_script_points_at_a_function_that_exists() -> None:
    scripts = dist.plugin_scripts(PYPROJECT)
    assert scripts["kubectl-msecret"] == "managed_secrets.cli.main:main"
    for name, target in scripts.items():
        module, function = target.split(":")
        path = ROOT / "src" / Path(*module.split(".")).with_suffix(".py")
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert function in defined, f"the script {name} points at {target}, which {path.name} does not define"


def test_the_release_pyproject_moves_the_plugin_scripts_out_and_requires_the_plugin() -> None:
    text = dist.release_pyproject((ROOT / "pyproject.toml").read_text(), "1.2.3")
    released = tomllib.loads(text)
    moved = dist.plugin_scripts(PYPROJECT)
    assert released["project"]["scripts"] == {
        k: v for k, v in PYPROJECT["project"]["scripts"].items() if k not in moved
    }
    assert released["project"]["dependencies"] == ["kubectl-msecret==1.2.3", *PYPROJECT["project"]["dependencies"]]
    # Nothing else changes.
    original = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for table in (released, original):
        del table["project"]["scripts"], table["project"]["dependencies"]
    assert released == original


def test_the_release_pyproject_also_moves_a_quoted_completion_script() -> None:
    text = """[project]
name = "x"
dependencies = [
  "kubernetes>=31",
  "pyyaml>=6",
]
[project.scripts]
op = "managed_secrets.operator.main:main"
kubectl-msecret = "managed_secrets.cli.main:main"  # the plugin
"kubectl_complete-msecret" = "managed_secrets.cli.main:complete"
"""
    released = tomllib.loads(dist.release_pyproject(text, "2.0.0"))
    assert released["project"]["scripts"] == {"op": "managed_secrets.operator.main:main"}
    assert released["project"]["dependencies"] == ["kubectl-msecret==2.0.0", "kubernetes>=31", "pyyaml>=6"]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_plugin_stage_holds_names_and_cli_and_what_its_pyproject_reads(tmp_path: Path) -> None:
    stage = dist.stage_plugin(tmp_path / "plugin", "1.2.3", PYPROJECT)
    sources = {f for f in _files(stage) if f.startswith("src/")}
    assert sources == {"src/managed_secrets/names.py"} | {
        f"src/managed_secrets/cli/{p.relative_to(CLI).as_posix()}"
        for p in CLI.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert "src/managed_secrets/__init__.py" not in sources
    assert (stage / "VERSION").read_text() == "1.2.3\n"
    assert (stage / "requirements.txt").read_text().split() == dist.plugin_requirements(PYPROJECT)
    assert "kubectl-msecret = managed_secrets.cli.main:main" in (stage / "entry_points.txt").read_text()
    assert (stage / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    # The plugin's pyproject reads exactly the files the stage writes.
    plugin = tomllib.loads((stage / "pyproject.toml").read_text())
    assert plugin["project"]["name"] == "kubectl-msecret"
    assert set(plugin["project"]["dynamic"]) == {"version", "dependencies", "scripts"}
    assert plugin["tool"]["setuptools"]["dynamic"] == {
        "version": {"file": "VERSION"},
        "dependencies": {"file": ["requirements.txt"]},
        "entry-points": {"file": "entry_points.txt"},
    }
    assert plugin["project"]["license-files"] == ["LICENSE"]
    assert plugin["project"]["requires-python"] == PYPROJECT["project"]["requires-python"]


def test_the_operator_stage_leaves_names_and_cli_to_the_plugin(tmp_path: Path) -> None:
    stage = dist.stage_operator(tmp_path / "operator", "1.2.3")
    files = _files(stage)
    assert {"pyproject.toml", "README.md", "LICENSE", "src/managed_secrets/__init__.py"} <= files
    assert not [
        f for f in files if f.startswith("src/managed_secrets/cli/") or f == "src/managed_secrets/names.py"
    ]
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f]
    assert (
        "kubectl-msecret==1.2.3"
        in tomllib.loads((stage / "pyproject.toml").read_text())["project"]["dependencies"]
    )


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside managed_secrets.cli
                found.add("managed_secrets.cli")
            elif node.module and node.module != "__future__":
                found.add(node.module)
    return found


def test_the_cli_imports_only_names_its_own_modules_and_no_operator_dependency() -> None:
    # The plugin's distribution ships managed_secrets.names and managed_secrets.cli only.
    for path in [*CLI.rglob("*.py"), ROOT / "src" / "managed_secrets" / "names.py"]:
        for module in _imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)} imports {module}"
            if top == "managed_secrets":
                assert module == "managed_secrets.names" or module.split(".")[:2] == ["managed_secrets", "cli"], (
                    where
                )
            else:
                assert top not in OPERATOR_ONLY_IMPORTS, where


# --- the krew manifest -------------------------------------------------------------------------------------


def test_the_krew_manifest_is_filled_with_version_archive_and_sha256() -> None:
    sha = "0123456789" * 6 + "abcd"
    text = dist.krew_manifest(
        dist.KREW_TEMPLATE.read_text(), "1.2.3", sha, dist.DEFAULT_URL_BASE, dist.DEFAULT_HOMEPAGE
    )
    manifest = yaml.safe_load(text)
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "msecret"
    spec = manifest["spec"]
    assert spec["version"] == "v1.2.3"
    assert spec["shortDescription"]
    oses = {v for p in spec["platforms"] for e in p["selector"]["matchExpressions"] for v in e["values"]}
    assert oses == {"linux", "darwin"}
    for platform in spec["platforms"]:
        assert platform["sha256"] == sha  # a string, even when it looks like a number
        assert platform["uri"].endswith("/v1.2.3/kubectl-msecret_1.2.3.tar.gz")
        assert platform["bin"] == "kubectl-msecret"
        assert {f["from"] for f in platform["files"]} == {"kubectl-msecret", "LICENSE"}
    assert "$" not in text


def test_the_krew_manifest_takes_a_release_url_base() -> None:
    text = dist.krew_manifest(
        dist.KREW_TEMPLATE.read_text(), "1.2.3", "ab" * 32, "https://dl.example.com/v${VERSION}", "https://x.test"
    )
    platform = yaml.safe_load(text)["spec"]["platforms"][0]
    assert platform["uri"] == "https://dl.example.com/v1.2.3/kubectl-msecret_1.2.3.tar.gz"


def test_an_unknown_placeholder_in_the_krew_template_is_refused() -> None:
    with pytest.raises(dist.DistError, match="placeholder"):
        dist.krew_manifest("spec: {version: v${VERSION}, x: ${OTHER}}", "1", "ab", "u", "h")


# --- the single file ---------------------------------------------------------------------------------------


def test_a_pure_wheel_is_the_platform_wheel_without_its_extension(tmp_path: Path) -> None:
    platform = tmp_path / "fake_pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(platform, "w") as z:
        z.writestr("fake_pkg/__init__.py", "X = 1\n")
        z.writestr("fake_pkg/_speedups.cpython-311-x86_64-linux-gnu.so", b"\x7fELF")
        z.writestr("fake_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-pkg\nVersion: 1.0\n")
        z.writestr("fake_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311\n")
        z.writestr("fake_pkg-1.0.dist-info/RECORD", "stale\n")
    out = tmp_path / "out"
    out.mkdir()
    pure = dist.pure_wheel(platform, out)
    assert pure.name == "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(pure) as z:
        names = set(z.namelist())
        assert names == {
            "fake_pkg/__init__.py",
            "fake_pkg-1.0.dist-info/METADATA",
            "fake_pkg-1.0.dist-info/WHEEL",
            "fake_pkg-1.0.dist-info/RECORD",
        }
        assert "Tag: py3-none-any" in z.read("fake_pkg-1.0.dist-info/WHEEL").decode()
        record = dict(line.split(",", 1) for line in z.read("fake_pkg-1.0.dist-info/RECORD").decode().split())
        data = z.read("fake_pkg/__init__.py")
        assert record["fake_pkg/__init__.py"] == f"{dist.record_hash(data)},{len(data)}"
        assert record["fake_pkg-1.0.dist-info/RECORD"] == ","


def _tiny_app(tmp_path: Path, exit_code: int) -> Path:
    tree = tmp_path / "tree"
    (tree / "managed_secrets" / "cli").mkdir(parents=True)
    (tree / "managed_secrets" / "__init__.py").write_text("")
    (tree / "managed_secrets" / "cli" / "__init__.py").write_text("")
    (tree / "managed_secrets" / "cli" / "main.py").write_text(
        "import sys\n\ndef main():\n    print('ran from', __file__)\n"
        f"    print('args', sys.argv[1:])\n    return {exit_code}\n"
    )
    app = tmp_path / "kubectl-msecret"
    dist.write_zipapp(tree, app, 1_700_000_000)
    return app


def _run(app: Path, cache: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECTL_MSECRET_CACHE", "XDG_CACHE_HOME"}}
    if cache is not None:
        env["KUBECTL_MSECRET_CACHE"] = cache
    return subprocess.run(
        [sys.executable, str(app), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_the_single_file_unpacks_once_per_build_and_passes_arguments_and_exit_code(tmp_path: Path) -> None:
    app = _tiny_app(tmp_path, exit_code=3)
    assert app.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert app.stat().st_mode & 0o111
    cache = tmp_path / "cache"
    (cache / ".0123456789abcdef.stale").mkdir(parents=True)  # another run's, too recent to remove
    (cache / "0000000000000000").mkdir()  # an older build
    first = _run(app, str(cache), "status", "-n", "demo")
    assert first.returncode == 3, first.stderr
    assert "args ['status', '-n', 'demo']" in first.stdout
    builds = [p.name for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(builds) == 1 and builds[0] != "0000000000000000", builds
    assert f"ran from {cache / builds[0]}" in first.stdout
    assert (cache / builds[0] / ".complete").is_file()
    assert not (cache / builds[0] / "__main__.py").exists()
    assert (cache / ".0123456789abcdef.stale").is_dir()
    second = _run(app, str(cache))
    assert second.returncode == 3 and f"ran from {cache / builds[0]}" in second.stdout


def test_the_single_file_runs_from_the_archive_without_a_usable_cache(tmp_path: Path) -> None:
    app = _tiny_app(tmp_path, exit_code=0)
    unset = _run(app, "")
    assert unset.returncode == 0 and f"ran from {app}/managed_secrets" in unset.stdout, unset.stderr
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    unwritable = _run(app, str(blocked / "cache"))
    assert unwritable.returncode == 0 and f"ran from {app}/managed_secrets" in unwritable.stdout, unwritable.stderr


def test_the_single_file_and_its_tarball_are_reproducible(tmp_path: Path) -> None:
    first, second = _tiny_app(tmp_path / "a", 0), _tiny_app(tmp_path / "b", 0)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    tarballs = []
    for app in (first, second):
        target = app.parent / "plugin.tar.gz"
        dist.write_tarball(target, [("kubectl-msecret", app, 0o755), ("LICENSE", ROOT / "LICENSE", 0o644)], 1)
        tarballs.append(target.read_bytes())
    assert tarballs[0] == tarballs[1]
    with tarfile.open(fileobj=io.BytesIO(tarballs[0])) as t:
        assert [(m.name, m.mode, m.uid) for m in t.getmembers()] == [
            ("kubectl-msecret", 0o755, 0),
            ("LICENSE", 0o644, 0),
        ]


def test_the_bootstrap_gets_the_build_id() -> None:
    assert b'BUILD_ID = "feedface"\n' in dist.bootstrap("feedface")
