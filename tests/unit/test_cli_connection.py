"""How `kubectl msecret` picks its cluster, credentials and namespace from the kubeconfig and the flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from managed_secrets.cli.connection import KubeconfigFiles, connect
from managed_secrets.cli.errors import CliError
from managed_secrets.cli.parser import parse


def kubeconfig(path: Path, *, current: str | None, contexts: dict[str, dict[str, str]], **extra: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                **({"current-context": current} if current is not None else {}),
                "clusters": extra.get(
                    "clusters",
                    [
                        {"name": "dev-cluster", "cluster": {"server": "https://dev.example:6443"}},
                        {"name": "prod-cluster", "cluster": {"server": "https://prod.example:6443"}},
                    ],
                ),
                "users": extra.get("users", [{"name": "me", "user": {"token": "dev-token"}}]),
                "contexts": [{"name": name, "context": ctx} for name, ctx in contexts.items()],
            }
        )
    )
    return path


TWO = {
    "dev": {"cluster": "dev-cluster", "user": "me", "namespace": "dev-ns"},
    "prod": {"cluster": "prod-cluster", "user": "me", "namespace": "prod-ns"},
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"KUBECONFIG": str(kubeconfig(tmp_path / "config", current="dev", contexts=TWO))}


def test_the_current_context_gives_server_and_namespace(env: dict[str, str]) -> None:
    conn = connect(parse(["status"]), env)
    assert (conn.context, conn.server, conn.namespace) == ("dev", "https://dev.example:6443", "dev-ns")
    assert conn.api.configuration.api_key["BearerToken"] == "Bearer dev-token"


@pytest.mark.parametrize("argv", [["--context", "prod", "rotate", "x"], ["rotate", "x", "--context", "prod"]])
def test_context_selects_that_contexts_namespace(env: dict[str, str], argv: list[str]) -> None:
    conn = connect(parse(argv), env)
    assert (conn.context, conn.server, conn.namespace) == ("prod", "https://prod.example:6443", "prod-ns")


def test_namespace_flag_beats_the_context(env: dict[str, str]) -> None:
    assert connect(parse(["status", "--context", "prod", "-n", "other"]), env).namespace == "other"


def test_a_context_without_namespace_means_default(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "c", current="bare", contexts={"bare": {"cluster": "dev-cluster", "user": "me"}})
    assert connect(parse(["status"]), {"KUBECONFIG": str(path)}).namespace == "default"


def test_missing_context(env: dict[str, str]) -> None:
    with pytest.raises(CliError, match=r'^context "nope" does not exist$'):
        connect(parse(["status", "--context", "nope"]), env)


def test_missing_kubeconfig_file(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no such file or directory"):
        connect(parse(["status", "--kubeconfig", str(tmp_path / "gone")]), {})
    with pytest.raises(CliError, match="no kubeconfig found"):
        connect(parse(["status"]), {"KUBECONFIG": str(tmp_path / "gone")})


def test_missing_user_and_cluster(env: dict[str, str]) -> None:
    with pytest.raises(CliError, match='auth info "ghost" does not exist'):
        connect(parse(["status", "--user", "ghost"]), env)
    with pytest.raises(CliError, match='cluster "ghost" does not exist'):
        connect(parse(["status", "--cluster", "ghost"]), env)


def test_kubeconfig_with_several_files_merges_as_kubectl(tmp_path: Path) -> None:
    first = kubeconfig(
        tmp_path / "a",
        current="prod",
        contexts={"prod": TWO["prod"]},
        clusters=[{"name": "prod-cluster", "cluster": {"server": "https://prod.example:6443"}}],
    )
    second = kubeconfig(
        tmp_path / "b",
        current="dev",
        contexts={"dev": TWO["dev"], "prod": {"cluster": "dev-cluster", "namespace": "shadowed"}},
        clusters=[{"name": "dev-cluster", "cluster": {"server": "https://dev.example:6443"}}],
    )
    env = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}"}
    files = KubeconfigFiles(None, env)
    assert sorted(files.contexts) == ["dev", "prod"]
    assert files.current_context == "prod", "the first file that sets current-context wins"
    conn = connect(parse(["status"]), env)
    assert (conn.namespace, conn.server) == ("prod-ns", "https://prod.example:6443"), "first definition wins"
    other = connect(parse(["status", "--context", "dev"]), env)
    assert (other.namespace, other.server) == ("dev-ns", "https://dev.example:6443")


def test_kubeconfig_flag_is_one_file(env: dict[str, str], tmp_path: Path) -> None:
    single = kubeconfig(tmp_path / "single", current="prod", contexts={"prod": TWO["prod"]})
    conn = connect(parse(["status", "--kubeconfig", str(single)]), env)
    assert conn.context == "prod"


def test_server_token_and_tls_overrides(env: dict[str, str], tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a connection is made\n")
    args = parse(
        ["status", "--server", "https://other:6443", "--token", "flag-token", "--certificate-authority", str(ca)]
    )
    configuration = connect(args, env).api.configuration
    assert configuration.host == "https://other:6443"
    assert configuration.api_key["BearerToken"] == "Bearer flag-token"
    assert configuration.ssl_ca_cert == str(ca.resolve())
    insecure = connect(parse(["status", "--insecure-skip-tls-verify"]), env).api.configuration
    assert insecure.verify_ssl is False


def test_token_replaces_an_exec_plugin(tmp_path: Path) -> None:
    never = tmp_path / "never-run"
    path = kubeconfig(
        tmp_path / "c",
        current="dev",
        contexts={"dev": TWO["dev"]},
        users=[
            {
                "name": "me",
                "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": f"touch {never}"}},
            }
        ],
    )
    conn = connect(parse(["status", "--token", "t"]), {"KUBECONFIG": str(path)})
    assert conn.api.configuration.api_key["BearerToken"] == "Bearer t"
    assert not never.exists()


def test_server_without_any_kubeconfig(tmp_path: Path) -> None:
    conn = connect(parse(["status", "-s", "http://127.0.0.1:8080"]), {"KUBECONFIG": str(tmp_path / "none")})
    assert (conn.server, conn.namespace, conn.context) == ("http://127.0.0.1:8080", "default", None)


def test_relative_certificate_paths_resolve_from_their_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x\n")
    path = kubeconfig(
        tmp_path / "c",
        current="dev",
        contexts={"dev": TWO["dev"]},
        clusters=[
            {
                "name": "dev-cluster",
                "cluster": {"server": "https://dev.example:6443", "certificate-authority": "certs/ca.pem"},
            }
        ],
    )
    conn = connect(parse(["status"]), {"KUBECONFIG": str(path)})
    assert conn.api.configuration.ssl_ca_cert == str(tmp_path / "certs" / "ca.pem")
