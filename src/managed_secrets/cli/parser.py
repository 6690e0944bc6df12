"""The command line of ``kubectl msecret``: commands, their flags, and kubectl's connection flags.

Kept apart from the commands themselves so that shell completion reads the same definitions.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from managed_secrets.cli.connection import add_connection_flags, finish_connection_args, parse_duration
from managed_secrets.cli.output import FORMATS
from managed_secrets.names import DEFAULT_KEYRING_SECRET

__all__ = ["COMMANDS", "PROG", "CommandParser", "build_parser", "parse", "subparsers"]

PROG = "kubectl msecret"

DESCRIPTION = """\
Drive ManagedSecrets from kubectl. Every command talks to the API server only: it writes the annotations the
operator acts on and reads status; it never reads or prints a secret value.

  kubectl msecret rotate NAME [--wait]   rotate now (a new request id each call)
  kubectl msecret rollback NAME [--to V] move ACSCurrent back (default: to the ACSPrevious version)
  kubectl msecret label NAME LABEL --to V
                                         move (or add) a stage label, e.g. a custom label on a Generic secret
  kubectl msecret restore NAME           restore the versions of a deleted ManagedSecret of that name
  kubectl msecret rotate-kek             new primary key-encryption key; every version is re-wrapped
  kubectl msecret versions [NAME...]     versions and their stage labels
  kubectl msecret status [NAME...]       conditions, current/pending version, next rotation
  kubectl msecret completion SHELL       a shell completion script (bash, zsh, fish)

Connection flags (-n, --context, --kubeconfig, ...) go before or after the command, as with kubectl.
Exit status: 0 done, 1 failed, 124 timed out (rotate --wait).
"""

COMMANDS: dict[str, str] = {
    "rotate": "rotate now",
    "rollback": "move ACSCurrent back",
    "label": "move a stage label to a version",
    "restore": "restore a deleted ManagedSecret's versions",
    "rotate-kek": "add a new primary key-encryption key and re-wrap every version",
    "versions": "list versions and stage labels",
    "status": "conditions and rotation times",
    "completion": "print a shell completion script",
}

_EPILOG = "Connection flags (-n, --context, --kubeconfig, ...): see 'kubectl msecret --help'."


class CommandParser(argparse.ArgumentParser):
    """kubectl's way with a bad command line: ``error: ...``, a pointer to --help, exit status 1."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\nSee '{self.prog} --help' for usage.\n")
        raise SystemExit(1)


def _timeout(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        nargs="?",
        const="client",
        default="none",
        choices=("none", "client", "server"),
        help="client: print what would be written; server: have the API server check the write, not persist it",
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="table", choices=FORMATS, help="output format")


def _listing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--selector", default=None, help="label selector, e.g. app=db,tier!=web")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (ignores -n)")


def build_parser() -> CommandParser:
    top = CommandParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_connection_flags(top, top=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=COMMANDS[name], prog=f"{PROG} {name}", allow_abbrev=False, epilog=_EPILOG, **kw
        )
        add_connection_flags(p, top=False)
        return p

    r = command("rotate")
    r.add_argument("names", nargs="*", metavar="NAME", help="ManagedSecrets to rotate")
    r.add_argument("--all", action="store_true", help="every ManagedSecret in the namespace")
    _listing(r)
    r.add_argument("--request-id", default=None, help="idempotency key (default: a new random id)")
    r.add_argument("--wait", action="store_true", help="wait until the rotation has finished (or failed)")
    r.add_argument(
        "--timeout",
        type=_timeout,
        default=300.0,
        metavar="DURATION",
        help="how long --wait waits, e.g. 60s, 2m (default 5m); then exit status 124",
    )
    _dry_run(r)

    b = command("rollback")
    b.add_argument("name")
    b.add_argument("--to", default=None, help="version id (default: the ACSPrevious version)")
    _dry_run(b)

    lab = command("label")
    lab.add_argument("name")
    lab.add_argument("label")
    lab.add_argument("--to", required=True, help="version id")
    _dry_run(lab)

    res = command("restore")
    res.add_argument("name")
    _dry_run(res)

    k = command("rotate-kek")
    k.add_argument(
        "--operator-namespace",
        default=None,
        help="the operator's namespace (default: $MSO_NAMESPACE, else found from the operator's member Leases)",
    )
    k.add_argument(
        "--keyring-secret", default=None, help=f"the keyring Secret (default: {DEFAULT_KEYRING_SECRET})"
    )
    _dry_run(k)

    v = command("versions")
    v.add_argument("names", nargs="*", metavar="NAME", help="ManagedSecrets (default: all in the namespace)")
    _listing(v)
    _output(v)

    s = command("status")
    s.add_argument("names", nargs="*", metavar="NAME", help="ManagedSecrets (default: all in the namespace)")
    _listing(s)
    _output(s)

    c = command("completion")
    c.add_argument("shell", choices=("bash", "zsh", "fish"))
    return top


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    return finish_connection_args(args)
