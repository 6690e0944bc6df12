"""``kubectl msecret``: drive ManagedSecrets from kubectl (installed as ``kubectl-msecret``).

    kubectl msecret rotate NAME... [--wait [--timeout 5m]]   rotate now (a new request id each call)
    kubectl msecret rotate --all | -l SELECTOR [-A]          rotate every (selected) ManagedSecret
    kubectl msecret rollback NAME [--to V]                   move ACSCurrent back (default: to ACSPrevious)
    kubectl msecret label NAME LABEL --to V                  move (or add) a stage label
    kubectl msecret restore NAME                             restore the versions of a deleted ManagedSecret
    kubectl msecret rotate-kek [--operator-namespace NS]     new primary key-encryption key; re-wraps all
    kubectl msecret versions [NAME...] [-l SEL] [-A] [-o table|json|yaml|name]
    kubectl msecret status [NAME...] [-l SEL] [-A] [-o table|json|yaml|name]
    kubectl msecret completion bash|zsh|fish

Every command talks to the API server only: it writes annotations the operator acts on, and reads status.
It never reads or prints a secret value. Writes take ``--dry-run=client|server``. kubectl's connection
flags (``-n``, ``--context``, ``--kubeconfig``, ``--server``, ``--token``, ``--as``, ...) go before or after
the command. Errors are printed as kubectl prints them; exit status 0 done, 1 failed, 124 timed out.

This module (and the rest of ``managed_secrets.cli``) imports nothing of the operator but
``managed_secrets.names``: the plugin ships on its own, without Kopf, cryptography or database drivers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from managed_secrets.cli import output
from managed_secrets.cli.completion import run as run_completion
from managed_secrets.cli.completion import script as completion_script
from managed_secrets.cli.connection import Connection, connect
from managed_secrets.cli.errors import EXIT_FAILED, EXIT_TIMEOUT, CliError, describe
from managed_secrets.cli.parser import parse
from managed_secrets.cli.secrets_metadata import find_operator_namespace, patch_secret_metadata
from managed_secrets.cli.waiting import RotationTracker, Verdict, follow
from managed_secrets.names import API_GROUP as GROUP
from managed_secrets.names import API_VERSION as VERSION
from managed_secrets.names import (
    DEFAULT_KEYRING_SECRET,
    PLURAL,
    ROTATE_KEK_ANNOTATION,
    StageMoveRequest,
)
from managed_secrets.names import MOVE_STAGE_ANNOTATION as MOVE_STAGE
from managed_secrets.names import RESTORE_ANNOTATION as RESTORE
from managed_secrets.names import ROTATE_ANNOTATION as ROTATE

__all__ = ["main"]

Target = tuple[str, str]  # (namespace, name)


def _request_id() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


def _say(line: str) -> None:
    """A progress line: on stderr, and only when a person is watching it."""
    if sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)


def _get(conn: Connection, namespace: str, name: str) -> dict[str, Any]:
    return output.as_object(conn.custom().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def _list(conn: Connection, args: argparse.Namespace) -> list[dict[str, Any]]:
    selector = {"label_selector": args.selector} if args.selector else {}
    api = conn.custom()
    if args.all_namespaces:
        listing = output.as_object(api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **selector))
    else:
        listing = output.as_object(
            api.list_namespaced_custom_object(GROUP, VERSION, conn.namespace, PLURAL, **selector)
        )
    items: list[dict[str, Any]] = listing.get("items") or []
    return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def _annotate(
    conn: Connection, namespace: str, name: str, annotations: dict[str, str], dry_run: str
) -> dict[str, Any] | None:
    """Writes the annotations (a merge patch); prints the patch instead for ``--dry-run=client``."""
    body = {"metadata": {"annotations": annotations}}
    if dry_run == "client":
        print(
            f"would patch {output.RESOURCE}/{name} in namespace {namespace}: "
            + json.dumps(body, separators=(",", ":"))
        )
        return None
    server = "All" if dry_run == "server" else None
    return output.as_object(
        conn.custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body, dry_run=server)
    )


def _suffix(dry_run: str) -> str:
    return {"client": " (dry run)", "server": " (server dry run)"}.get(dry_run, "")


def _report(errors: list[BaseException]) -> int:
    for error in errors:
        print(describe(error), file=sys.stderr)
    return EXIT_FAILED if errors else 0


# --- writes --------------------------------------------------------------------------------------------------


def _rotate_targets(conn: Connection, args: argparse.Namespace) -> list[Target]:
    if args.names and (args.all or args.selector):
        raise CliError("name cannot be provided when --all or a selector (-l) is given")
    if args.names:
        if args.all_namespaces:
            raise CliError("a name cannot be given with -A/--all-namespaces: use -n")
        return [(conn.namespace, n) for n in args.names]
    if not (args.all or args.selector):
        raise CliError("you must name a ManagedSecret, or pass --all or -l SELECTOR")
    items = _list(conn, args)
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {conn.namespace}"
        raise CliError(f"no ManagedSecrets found in {where}" + (f" for {args.selector}" if args.selector else ""))
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]


def cmd_rotate(args: argparse.Namespace, conn: Connection) -> int:
    if args.wait and args.dry_run != "none":
        raise CliError("--wait cannot be used with --dry-run")
    request = args.request_id or _request_id()
    deadline = time.monotonic() + args.timeout
    started: list[tuple[str, RotationTracker, str | None]] = []
    errors: list[BaseException] = []
    for namespace, name in _rotate_targets(conn, args):
        try:
            before = _get(conn, namespace, name) if args.wait else None
            written = _annotate(conn, namespace, name, {ROTATE: request}, args.dry_run)
        except ApiException as e:
            errors.append(e)
            continue
        print(f"managedsecret/{name} rotation requested (request id {request}){_suffix(args.dry_run)}")
        if args.wait:
            rv = ((written or {}).get("metadata") or {}).get("resourceVersion")
            started.append((namespace, RotationTracker(name, request, before), rv))
    code = _report(errors)
    timed_out = False
    for namespace, tracker, rv in started:
        verdict: Verdict | None = tracker.initial()
        if verdict is None:
            try:
                verdict = follow(conn, namespace, tracker, resource_version=rv, deadline=deadline, say=_say)
            except ApiException as e:
                print(describe(e), file=sys.stderr)
                code = EXIT_FAILED
                continue
        if verdict is None:
            timed_out = True
            print(f"error: {tracker.timed_out()}", file=sys.stderr)
        elif verdict.code == 0:
            print(verdict.message)
        else:
            print(f"error: {verdict.message}", file=sys.stderr)
            code = EXIT_FAILED
    return code or (EXIT_TIMEOUT if timed_out else 0)


def _move(args: argparse.Namespace, conn: Connection, label: str, version: str) -> int:
    request = StageMoveRequest(label=label, version=version, id=_request_id())
    _annotate(conn, conn.namespace, args.name, {MOVE_STAGE: request.encode()}, args.dry_run)
    done = f"requested (request id {request.id}){_suffix(args.dry_run)}"
    print(f"managedsecret/{args.name} {label} -> {version} {done}")
    return 0


def cmd_rollback(args: argparse.Namespace, conn: Connection) -> int:
    target = args.to
    if not target:
        target = output.status_of(_get(conn, conn.namespace, args.name)).get("previousVersion")
        if not target:
            raise CliError(f"managedsecret/{args.name} has no ACSPrevious version to roll back to")
    return _move(args, conn, "ACSCurrent", target)


def cmd_label(args: argparse.Namespace, conn: Connection) -> int:
    return _move(args, conn, args.label, args.to)


def cmd_restore(args: argparse.Namespace, conn: Connection) -> int:
    _annotate(conn, conn.namespace, args.name, {RESTORE: "true"}, args.dry_run)
    print(f"managedsecret/{args.name} restore requested{_suffix(args.dry_run)}")
    return 0


def cmd_rotate_kek(args: argparse.Namespace, conn: Connection) -> int:
    namespace = args.operator_namespace or os.environ.get("MSO_NAMESPACE") or find_operator_namespace(conn)
    secret = args.keyring_secret or os.environ.get("MSO_KEYRING_SECRET") or DEFAULT_KEYRING_SECRET
    request = _request_id()
    body = {"metadata": {"annotations": {ROTATE_KEK_ANNOTATION: request}}}
    if args.dry_run == "client":
        print(f"would patch secret/{secret} in namespace {namespace}: " + json.dumps(body, separators=(",", ":")))
    else:
        patch_secret_metadata(conn, namespace, secret, body, dry_run=args.dry_run == "server")
    print(
        f"key-encryption key rotation requested (request id {request}; keyring secret/{secret} in namespace "
        f"{namespace}){_suffix(args.dry_run)}"
    )
    return 0


# --- reads ---------------------------------------------------------------------------------------------------


def _read(conn: Connection, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[BaseException]]:
    if args.names and (args.selector or args.all_namespaces):
        raise CliError("a name cannot be given with a selector (-l) or -A/--all-namespaces")
    if not args.names:
        items = _list(conn, args)
        if not items and args.output in ("table", "name"):
            where = "" if args.all_namespaces else f" in {conn.namespace} namespace"
            print(f"No resources found{where}.", file=sys.stderr)
        return items, []
    found: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    for name in args.names:
        try:
            found.append(_get(conn, conn.namespace, name))
        except ApiException as e:
            if e.status != 404:
                raise
            errors.append(e)
    return found, errors


def _show(
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    errors: list[BaseException],
    document: Callable[[dict[str, Any]], dict[str, Any]],
    table: Callable[[list[dict[str, Any]]], None],
) -> int:
    single = len(args.names) == 1
    if args.output in ("json", "yaml"):
        if items or not single:
            output.emit([document(o) for o in items], args.output, single=single)
    elif args.output == "name":
        for obj in items:
            print(output.resource_name(obj))
    elif items:
        table(items)
    return _report(errors)


def cmd_versions(args: argparse.Namespace, conn: Connection) -> int:
    items, errors = _read(conn, args)

    def table(objs: list[dict[str, Any]]) -> None:
        many = len(args.names) != 1
        head = (["NAMESPACE"] if args.all_namespaces else []) + (["NAME"] if many else [])
        rows: list[Sequence[str]] = [(*head, "VERSION", "STAGES", "CREATED")]
        for obj in objs:
            meta = obj["metadata"]
            who = ([meta.get("namespace", "")] if args.all_namespaces else []) + ([meta["name"]] if many else [])
            for v in output.status_of(obj).get("versions") or []:
                rows.append((*who, v["id"], ",".join(v.get("stages") or []) or "-", v.get("created", "")))
        output.print_table(rows)

    return _show(args, items, errors, output.versions_of, table)


def cmd_status(args: argparse.Namespace, conn: Connection) -> int:
    items, errors = _read(conn, args)

    def table(objs: list[dict[str, Any]]) -> None:
        head = ["NAMESPACE"] if args.all_namespaces else []
        rows: list[Sequence[str]] = [(*head, "NAME", "CURRENT", "PENDING", "NEXT-ROTATION", "READY", "REASON")]
        for obj in objs:
            status = output.status_of(obj)
            ready = output.condition(status, "Ready")
            rows.append(
                (
                    *([obj["metadata"].get("namespace", "")] if args.all_namespaces else []),
                    obj["metadata"]["name"],
                    status.get("currentVersion") or "-",
                    status.get("pendingVersion") or "-",
                    status.get("nextRotationTime") or "-",
                    ready.get("status", "Unknown"),
                    ready.get("reason", ""),
                )
            )
        output.print_table(rows)
        if len(args.names) == 1 and len(objs) == 1:
            status = output.status_of(objs[0])
            for c in status.get("conditions") or []:
                print(f"  {c['type']}={c['status']} ({c.get('reason', '')}): {c.get('message', '')}")
            rotation = status.get("rotation")
            if rotation:
                line = f"  rotation: to {rotation.get('versionId')}, next step {rotation.get('step')}"
                if rotation.get("attempts"):
                    line += f", {rotation['attempts']} failed attempt(s): {rotation.get('lastError') or ''}"
                print(line.rstrip(": "))
            for host in status.get("hosts") or []:
                print(
                    f"  host {host.get('host')}: {host.get('state')} {host.get('versionId')} "
                    f"(step {host.get('step')}): {host.get('message') or ''}".rstrip(": ")
                )

    return _show(args, items, errors, output.summary, table)


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Connection], int]] = {
    "rotate": cmd_rotate,
    "rollback": cmd_rollback,
    "label": cmd_label,
    "restore": cmd_restore,
    "rotate-kek": cmd_rotate_kek,
    "versions": cmd_versions,
    "status": cmd_status,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:
        return run_completion(argv[1:])
    try:
        args = parse(argv)
    except SystemExit as e:  # --help, or a bad command line (already reported)
        return e.code if isinstance(e.code, int) else EXIT_FAILED
    if args.command == "completion":
        return cmd_completion(args)
    try:
        return COMMANDS[args.command](args, connect(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # every failure is one kubectl-style line, never a traceback
        if os.environ.get("MSECRET_DEBUG"):
            raise
        print(describe(e), file=sys.stderr)
        return e.code if isinstance(e, CliError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
