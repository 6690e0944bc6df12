"""`kubectl msecret` command lines: connection flags before or after the command, durations, usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from managed_secrets.cli.connection import parse_duration
from managed_secrets.cli.main import main
from managed_secrets.cli.parser import parse


@pytest.fixture(autouse=True)
def no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "demo", "rotate", "app-db"],
        ["rotate", "app-db", "-n", "demo"],
        ["rotate", "-n", "demo", "app-db"],
        ["--namespace=demo", "rotate", "app-db"],
        ["rotate", "app-db", "--namespace", "demo"],
        ["-ndemo", "rotate", "app-db"],
    ],
)
def test_namespace_before_or_after_the_command(argv: list[str]) -> None:
    args = parse(argv)
    assert (args.command, args.names, args.namespace) == ("rotate", ["app-db"], "demo")


def test_every_connection_flag_in_both_positions() -> None:
    flags = [
        "--kubeconfig=/k",
        "--context=prod",
        "--cluster=c",
        "--user=u",
        "--server=https://h:6443",
        "--token=t",
        "--as=alice",
        "--as-uid=42",
        "--certificate-authority=/ca.pem",
        "--insecure-skip-tls-verify",
        "--request-timeout=5s",
    ]
    want = {
        "kubeconfig": "/k",
        "context": "prod",
        "cluster": "c",
        "user": "u",
        "server": "https://h:6443",
        "token": "t",
        "as_user": "alice",
        "as_uid": "42",
        "certificate_authority": "/ca.pem",
        "insecure_skip_tls_verify": True,
        "request_timeout": 5.0,
    }
    for argv in ([*flags, "status"], ["status", *flags], ["versions", "x", *flags]):
        args = vars(parse(argv))
        assert {k: args[k] for k in want} == want, argv
    short = parse(["-s", "https://h", "status"])
    assert short.server == "https://h"


def test_defaults_when_no_flag_is_given() -> None:
    args = parse(["status"])
    assert args.namespace is None and args.context is None and args.kubeconfig is None
    assert args.as_group == [] and args.insecure_skip_tls_verify is False and args.request_timeout == 0
    assert args.output == "table" and args.names == [] and not args.all_namespaces


def test_a_flag_after_the_command_wins_and_groups_add_up() -> None:
    args = parse(["-n", "one", "--as-group", "a", "status", "-n", "two", "--as-group", "b", "--as-group", "c"])
    assert args.namespace == "two"
    assert args.as_group == ["a", "b", "c"]
    assert not hasattr(args, "as_group_after")


def test_command_flags() -> None:
    args = parse(["rotate", "a", "b", "--wait", "--timeout", "2m", "--request-id", "r1"])
    assert (args.names, args.wait, args.timeout, args.request_id, args.dry_run) == (
        ["a", "b"],
        True,
        120,
        "r1",
        "none",
    )
    assert parse(["rotate", "a"]).timeout == 300
    assert parse(["rotate", "--all", "-A"]).all and parse(["rotate", "-l", "app=x"]).selector == "app=x"
    assert parse(["rotate", "a", "--dry-run"]).dry_run == "client"
    assert parse(["rotate", "a", "--dry-run=server"]).dry_run == "server"
    assert parse(["rollback", "a", "--to", "v3", "--dry-run=client"]).to == "v3"
    assert parse(["label", "a", "Mine", "--to", "v2"]).label == "Mine"
    assert parse(["status", "-o", "json", "-A", "-l", "t=x"]).output == "json"
    assert parse(["versions", "a", "-oyaml"]).output == "yaml"
    assert parse(["status", "--output=name"]).output == "name"
    assert parse(["rotate-kek", "--operator-namespace", "ops"]).operator_namespace == "ops"
    assert parse(["completion", "zsh"]).shell == "zsh"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5), ("90", 90), ("1.5s", 1.5), ("0", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "-1", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["rotate", "a", "--timeout", "soon"], "invalid duration"),
        (["status", "-o", "xml"], "invalid choice: 'xml'"),
        (["--bogus", "status"], "unrecognized arguments: --bogus"),
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: COMMAND"),
        (["rotate", "a", "--dry-run=maybe"], "invalid choice: 'maybe'"),
        (["status", "--names"], "unrecognized arguments: --names"),  # no abbreviations, as kubectl
    ],
)
def test_usage_errors_exit_1_with_one_error_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err
    assert "See 'kubectl msecret" in err and "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "before or after the command" in capsys.readouterr().out
    assert main(["rotate", "--help"]) == 0
    assert "--wait" in capsys.readouterr().out


def test_writes_refuse_wait_with_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate", "x", "--wait", "--dry-run=client", "-s", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.strip() == "error: --wait cannot be used with --dry-run"


def test_names_and_selectors_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate", "x", "-l", "a=b", "-s", "http://127.0.0.1:9"]) == 1
    assert "name cannot be provided" in capsys.readouterr().err
    assert main(["rotate", "-s", "http://127.0.0.1:9"]) == 1
    assert "you must name a ManagedSecret, or pass --all or -l SELECTOR" in capsys.readouterr().err
