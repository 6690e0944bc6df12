"""Shell completion of `kubectl msecret`: the words offered, kubectl's plugin hook, and the shell scripts."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from managed_secrets.cli.completion import complete, kubectl_complete, run, script
from managed_secrets.cli.main import main

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Contexts whose cluster does not answer: completion must still offer what it knows, and never fail."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [{"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "dev", "context": {"cluster": "nowhere", "user": "me", "namespace": "d"}},
                    {"name": "prod", "context": {"cluster": "nowhere", "user": "me", "namespace": "p"}},
                ],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def words(line: list[str]) -> list[str]:
    return [c.split("\t")[0] for c in complete(line)[0]]


def test_commands() -> None:
    assert words([""]) == [
        "rotate",
        "rollback",
        "label",
        "restore",
        "rotate-kek",
        "versions",
        "status",
        "completion",
    ]
    assert words(["rot"]) == ["rotate", "rotate-kek"]
    assert words(["-n", "demo", "--context", "prod", "st"]) == ["status"]
    assert complete(["rot"])[0][0] == "rotate\trotate now"


def test_flags_of_the_command_and_the_connection() -> None:
    assert words(["rotate", "--w"]) == ["--wait"]
    assert set(words(["rotate", "x", "--"])) >= {"--wait", "--timeout", "--dry-run", "--context", "--namespace"}
    assert "--output" in words(["status", "-"]) and "--output" not in words(["rotate", "-"])
    assert words(["--con"]) == ["--context"]


def test_flag_values() -> None:
    assert words(["status", "-o", ""]) == ["table", "json", "yaml", "name"]
    assert words(["status", "--output=j"]) == ["--output=json"]
    assert words(["rotate", "x", "--dry-run="]) == ["--dry-run=none", "--dry-run=client", "--dry-run=server"]
    assert words(["--context", ""]) == ["dev", "prod"]
    assert words(["status", "--context", "p"]) == ["prod"]
    assert words(["--user", ""]) == ["me"] and words(["--cluster", ""]) == ["nowhere"]
    assert words(["label", "x", ""]) == ["ACSCurrent", "ACSPrevious", "ACSPending"]
    assert words(["completion", ""]) == ["bash", "zsh", "fish"]


def test_file_flags_let_the_shell_complete_files() -> None:
    assert complete(["--kubeconfig", ""]) == ([], 0)
    assert complete(["status", "--certificate-authority", ""]) == ([], 0)
    assert complete(["status", "-o", ""])[1] == 4


def test_names_from_an_unreachable_cluster_are_none_quickly() -> None:
    started = time.monotonic()
    assert complete(["rotate", ""]) == ([], 4)
    assert complete(["rollback", "x", "--to", ""]) == ([], 4)
    assert time.monotonic() - started < 10


def test_output_format_for_kubectl() -> None:
    out = io.StringIO()
    assert run(["status", "-o", "y"], out) == 0
    assert out.getvalue() == "yaml\n:4\n"
    assert main(["__complete", "rollb"]) == 0


def test_kubectl_complete_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert kubectl_complete(["completion", "f"]) == 0
    assert capsys.readouterr().out == "fish\n:4\n"


def test_completion_command_prints_the_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    for shell, marker in (("bash", "complete -F _kubectl_msecret"), ("zsh", "#compdef"), ("fish", "complete -c")):
        assert main(["completion", shell]) == 0
        out = capsys.readouterr().out
        assert marker in out and "__complete" in out


def _bash_complete(line: str, bash_words: list[str]) -> list[str]:
    """Runs the bash script's completion function for a command line, as bash would."""
    program = f"""
source <({BIN}/kubectl-msecret completion bash)
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(repr(w) for w in bash_words)})
COMP_CWORD={len(bash_words) - 1}
_kubectl_msecret
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60, check=True)
    return [w for w in done.stdout.splitlines() if w]


def test_the_bash_script_completes() -> None:
    assert (BIN / "kubectl-msecret").exists(), "the console script is not installed (make install)"
    assert _bash_complete("kubectl-msecret rot", ["kubectl-msecret", "rot"]) == ["rotate", "rotate-kek"]
    assert _bash_complete("kubectl-msecret --context ", ["kubectl-msecret", "--context", ""]) == ["dev", "prod"]
    # bash splits "--output=js" at "=": the reply replaces only what follows it.
    assert _bash_complete(
        "kubectl-msecret status --output=js", ["kubectl-msecret", "status", "--output", "=", "js"]
    ) == ["json"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_scripts_parse(shell: str, tmp_path: Path) -> None:
    # make install installs zsh and fish (hack/install-debian-packages.sh): a missing shell is a failure.
    assert shutil.which(shell), f"{shell} is not installed"
    path = tmp_path / f"completion.{shell}"
    path.write_text(script(shell))
    check = [shell, "--no-execute", str(path)] if shell == "fish" else [shell, "-n", str(path)]
    subprocess.run(check, check=True, capture_output=True, timeout=60)
