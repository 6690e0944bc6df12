"""Shell completion: ``kubectl msecret completion bash|zsh|fish``, and kubectl's plugin-completion hook.

kubectl (1.26 and later) completes ``kubectl msecret <TAB>`` by running an executable named
``kubectl_complete-msecret`` with the words after ``msecret`` (the last one the word being completed, maybe
empty), and reads one candidate per line (``candidate<TAB>description``), then an optional ``:<directive>``
line (Cobra's ShellCompDirective: 4 means "no file completion"). ``kubectl_complete`` is that executable;
``kubectl-msecret __complete WORDS...`` answers the same way for the scripts of ``completion``, which complete
the command run on its own (``kubectl-msecret``).

Commands, flags and their fixed values come from the parser; ManagedSecret names (and namespaces, version ids)
from the cluster, with a short timeout, and nothing when it cannot be asked.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from managed_secrets.cli.connection import KubeconfigFiles, connect, finish_connection_args, parse_duration
from managed_secrets.cli.output import as_object
from managed_secrets.cli.parser import COMMANDS, build_parser, subparsers
from managed_secrets.names import API_GROUP, API_VERSION, PLURAL

__all__ = ["complete", "kubectl_complete", "run", "script"]

DIRECTIVE_DEFAULT = 0  # the shell may complete file names
DIRECTIVE_NO_FILES = 4
LOOKUP_TIMEOUT = 3.0  # seconds for a request made while completing
STAGE_LABELS = ("ACSCurrent", "ACSPrevious", "ACSPending")
FILE_FLAGS = {"kubeconfig", "certificate_authority"}
_NAMED = {"rotate": None, "versions": None, "status": None, "rollback": 1, "restore": 1, "label": 1}
"""Commands whose positionals are ManagedSecret names: how many (None: any number)."""


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def _takes_value(action: argparse.Action) -> bool:
    """True when the flag's value is the next word (not for ``--dry-run``, whose value needs ``=``)."""
    return action.nargs is None or (isinstance(action.nargs, int) and action.nargs > 0)


class _Line:
    """The words before the one being completed, read as the parser would."""

    def __init__(self, words: Sequence[str]) -> None:
        self.top = build_parser()
        self.commands = subparsers(self.top)
        self.top_options = _options(self.top)
        self.command: str | None = None
        self.positionals: list[str] = []
        self.values: dict[str, Any] = {}
        self.pending: argparse.Action | None = None  # a flag waiting for its value (the word being completed)
        for word in words:
            self._read(word)

    def options(self) -> dict[str, argparse.Action]:
        found = dict(self.top_options)
        if self.command in self.commands:
            found.update(_options(self.commands[self.command]))
        return found

    def _store(self, action: argparse.Action, value: str) -> None:
        if isinstance(action, argparse._AppendAction):
            self.values.setdefault(action.dest, []).append(value)
        else:
            self.values[action.dest] = value

    def _read(self, word: str) -> None:
        if self.pending is not None:
            self._store(self.pending, word)
            self.pending = None
            return
        if word.startswith("-") and len(word) > 1:
            name, eq, value = word.partition("=")
            action = self.options().get(name)
            if action is None and not word.startswith("--") and len(word) > 2:
                action = self.options().get(word[:2])  # -ndemo
                if action is not None and _takes_value(action):
                    self._store(action, word[2:])
                return
            if action is None:
                return
            if eq:
                self._store(action, value)
            elif _takes_value(action):
                self.pending = action
            else:
                self.values[action.dest] = True
            return
        if self.command is None:
            self.command = word
        else:
            self.positionals.append(word)

    def connection_args(self) -> argparse.Namespace:
        defaults = {a.dest: a.default for a in self.top._actions if a.dest not in ("help", "command")}
        args = argparse.Namespace(**defaults)
        for dest, value in self.values.items():
            if dest in defaults or dest == "as_group_after":  # groups given after the command, too
                setattr(args, dest, value)
        try:
            args.request_timeout = parse_duration(str(args.request_timeout)) or LOOKUP_TIMEOUT
        except ValueError:
            args.request_timeout = LOOKUP_TIMEOUT
        args.request_timeout = min(float(args.request_timeout), LOOKUP_TIMEOUT)
        return finish_connection_args(args)


def _quietly(fn: Any, *args: Any) -> list[str]:
    """Whatever the cluster lookup finds; nothing if it fails in any way (completion never errors)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            found: list[str] = fn(*args)
            return found
    except Exception:  # a failed lookup just offers nothing
        return []


def _names(line: _Line) -> list[str]:
    conn = connect(line.connection_args())
    listing = as_object(
        conn.custom().list_namespaced_custom_object(API_GROUP, API_VERSION, conn.namespace, PLURAL)
    )
    return sorted(str(o["metadata"]["name"]) for o in listing.get("items") or [])


def _versions(line: _Line) -> list[str]:
    if not line.positionals:
        return []
    conn = connect(line.connection_args())
    obj = as_object(
        conn.custom().get_namespaced_custom_object(
            API_GROUP, API_VERSION, conn.namespace, PLURAL, line.positionals[0]
        )
    )
    return [str(v["id"]) for v in (obj.get("status") or {}).get("versions") or []]


def _namespaces(line: _Line) -> list[str]:
    conn = connect(line.connection_args())
    return sorted(str(n.metadata.name) for n in conn.core().list_namespace().items if n.metadata)


def _kubeconfig(line: _Line, what: str) -> list[str]:
    files = KubeconfigFiles(line.values.get("kubeconfig"))
    return sorted({"contexts": files.contexts, "clusters": files.clusters, "users": files.users}[what])


def _values(line: _Line, action: argparse.Action) -> tuple[list[str], int]:
    dest = action.dest
    if action.choices:
        return [str(c) for c in action.choices], DIRECTIVE_NO_FILES
    if dest in FILE_FLAGS:
        return [], DIRECTIVE_DEFAULT
    lookups = {
        "namespace": lambda: _quietly(_namespaces, line),
        "context": lambda: _quietly(_kubeconfig, line, "contexts"),
        "cluster": lambda: _quietly(_kubeconfig, line, "clusters"),
        "user": lambda: _quietly(_kubeconfig, line, "users"),
        "to": lambda: _quietly(_versions, line),
        "operator_namespace": lambda: _quietly(_namespaces, line),
    }
    found = lookups.get(dest)
    return (found() if found else []), DIRECTIVE_NO_FILES


def _flags(line: _Line) -> list[str]:
    visible: list[str] = []
    parsers = [line.top] + ([line.commands[line.command]] if line.command in line.commands else [])
    for parser in parsers:
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                if flag not in visible:
                    visible.append(flag)
    return visible


def complete(words: Sequence[str]) -> tuple[list[str], int]:
    """Candidates for the last of ``words`` (the words after the command name), and the directive."""
    *before, current = list(words) or [""]
    line = _Line(before)
    if line.pending is not None:
        values, directive = _values(line, line.pending)
        return [v for v in values if v.startswith(current)], directive
    if current.startswith("-"):
        name, eq, prefix = current.partition("=")
        if eq:
            action = line.options().get(name)
            if action is None:
                return [], DIRECTIVE_NO_FILES
            values, directive = _values(line, action)
            return [f"{name}={v}" for v in values if v.startswith(prefix)], directive
        return [f for f in _flags(line) if f.startswith(current)], DIRECTIVE_NO_FILES
    if line.command is None:
        return [f"{c}\t{h}" for c, h in COMMANDS.items() if c.startswith(current)], DIRECTIVE_NO_FILES
    command = line.command
    if command == "completion":
        shells = ["bash", "zsh", "fish"] if not line.positionals else []
        return [s for s in shells if s.startswith(current)], DIRECTIVE_NO_FILES
    if command == "label" and len(line.positionals) == 1:
        return [s for s in STAGE_LABELS if s.startswith(current)], DIRECTIVE_NO_FILES
    if command in _NAMED:
        limit = _NAMED[command]
        if limit is not None and len(line.positionals) >= limit:
            return [], DIRECTIVE_NO_FILES
        names = _quietly(_names, line)
        return [n for n in names if n.startswith(current) and n not in line.positionals], DIRECTIVE_NO_FILES
    return [], DIRECTIVE_NO_FILES


def run(words: Sequence[str], out: Any = None) -> int:
    """Prints the candidates for ``words``, one a line, then ``:<directive>``; always exit status 0."""
    out = out or sys.stdout
    candidates, directive = complete(words)
    for candidate in candidates:
        out.write(candidate + "\n")
    out.write(f":{directive}\n")
    return 0


def kubectl_complete(argv: Sequence[str] | None = None) -> int:
    """The ``kubectl_complete-msecret`` executable: kubectl runs it with the words after ``msecret``."""
    return run(sys.argv[1:] if argv is None else argv)


_BASH = r"""# bash completion for kubectl-msecret (kubectl msecret run on its own).
# kubectl itself completes "kubectl msecret ..." through the kubectl_complete-msecret executable.
_kubectl_msecret() {
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -r -a words <<< "$line"
    [[ $line == *[[:space:]] ]] && words+=("")
    local cword=$(( ${#words[@]} - 1 ))
    local out
    out=$("${words[0]}" __complete "${words[@]:1:cword}" 2>/dev/null) || return 0
    local -a lines=()
    local entry
    while IFS= read -r entry; do lines+=("$entry"); done <<< "$out"
    local directive=0 last=$(( ${#lines[@]} - 1 ))
    if (( last >= 0 )) && [[ ${lines[last]} == :* ]]; then
        directive=${lines[last]:1}
        unset "lines[last]"
    fi
    # bash splits words at "=" and ":": drop what it keeps in front of its own current word.
    local full=${words[cword]} here=${COMP_WORDS[COMP_CWORD]} strip=""
    [[ $full == *"$here" ]] && strip=${full%"$here"}
    COMPREPLY=()
    for entry in "${lines[@]}"; do
        entry=${entry%%$'\t'*}
        [[ -n $entry ]] && COMPREPLY+=("${entry#"$strip"}")
    done
    if (( ${#COMPREPLY[@]} == 0 && (directive & 4) == 0 )); then
        mapfile -t COMPREPLY < <(compgen -f -- "$here")
    fi
}
complete -F _kubectl_msecret kubectl-msecret
"""

_ZSH = r"""#compdef kubectl-msecret
# zsh completion for kubectl-msecret (kubectl msecret run on its own).
# kubectl itself completes "kubectl msecret ..." through the kubectl_complete-msecret executable.
_kubectl_msecret() {
    local out directive=0
    local -a lines candidates
    out=$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null) || return 1
    lines=("${(@f)out}")
    if [[ ${lines[-1]} == :* ]]; then
        directive=${lines[-1]#:}
        lines[-1]=()
    fi
    local entry
    for entry in $lines; do
        [[ -n $entry ]] && candidates+=("${entry%%$'\t'*}")
    done
    if (( ${#candidates} == 0 )); then
        (( directive & 4 )) || _files
        return
    fi
    compadd -Q -- $candidates
}
if [[ $funcstack[1] == _kubectl_msecret ]]; then
    _kubectl_msecret "$@"
else
    compdef _kubectl_msecret kubectl-msecret
fi
"""

_FISH = r"""# fish completion for kubectl-msecret (kubectl msecret run on its own).
# kubectl itself completes "kubectl msecret ..." through the kubectl_complete-msecret executable.
function __kubectl_msecret_complete
    set -l tokens (commandline -opc)
    set -l current (commandline -ct)
    set -l program $tokens[1]
    set -e tokens[1]
    set -l out ($program __complete $tokens $current 2>/dev/null)
    or return
    set -l directive 0
    if string match -qr '^:[0-9]+$' -- $out[-1]
        set directive (string sub -s 2 -- $out[-1])
        set -e out[-1]
    end
    if test (count $out) -eq 0; and test (math "bitand($directive, 4)") -eq 0
        __fish_complete_path $current
        return
    end
    printf '%s\n' $out
end
complete -c kubectl-msecret -f -a '(__kubectl_msecret_complete)'
"""

_SCRIPTS: Mapping[str, str] = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def script(shell: str) -> str:
    return _SCRIPTS[shell]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(kubectl_complete())
