"""``kubectl msecret``: drive ManagedSecrets from kubectl (installed as ``kubectl-msecret``).

    kubectl msecret rotate NAME            rotate now (a new request id each call)
    kubectl msecret rollback NAME [--to V] move ACSCurrent back (default: to the ACSPrevious version)
    kubectl msecret label NAME LABEL --to V
                                           move (or add) a stage label, e.g. a custom label on a Generic secret
    kubectl msecret restore NAME           restore the versions of a deleted ManagedSecret of that name
    kubectl msecret rotate-kek             new primary key-encryption key; every version is re-wrapped
    kubectl msecret versions NAME          list versions and their stage labels
    kubectl msecret status [NAME]          conditions, current/next rotation (all ManagedSecrets if no NAME)

Every command talks to the API server only: it writes annotations the operator acts on, and reads status.
It never reads or prints a secret value.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from managed_secrets.names import API_GROUP as GROUP
from managed_secrets.names import API_VERSION as VERSION
from managed_secrets.names import (
    DEFAULT_KEYRING_SECRET,
    DEFAULT_OPERATOR_NAMESPACE,
    PLURAL,
    ROTATE_KEK_ANNOTATION,
    StageMoveRequest,
)
from managed_secrets.names import MOVE_STAGE_ANNOTATION as MOVE_STAGE
from managed_secrets.names import RESTORE_ANNOTATION as RESTORE
from managed_secrets.names import ROTATE_ANNOTATION as ROTATE


def _api(args: argparse.Namespace) -> tuple[client.CustomObjectsApi, str]:
    config.load_kube_config(config_file=args.kubeconfig, context=args.context)  # type: ignore[no-untyped-call]
    namespace = args.namespace
    if not namespace:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(), namespace


def _get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def _annotate(api: client.CustomObjectsApi, namespace: str, name: str, annotations: dict[str, str]) -> None:
    api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": annotations}}
    )


def cmd_rotate(args: argparse.Namespace) -> int:
    api, ns = _api(args)
    request = args.request_id or f"cli-{uuid.uuid4().hex[:12]}"
    _annotate(api, ns, args.name, {ROTATE: request})
    print(f"managedsecret/{args.name} rotation requested (request id {request})")
    return 0


def _move(args: argparse.Namespace, label: str, version: str) -> int:
    api, ns = _api(args)
    request = StageMoveRequest(label=label, version=version, id=f"cli-{uuid.uuid4().hex[:12]}")
    _annotate(api, ns, args.name, {MOVE_STAGE: request.encode()})
    print(f"managedsecret/{args.name} {label} -> {version} requested (request id {request.id})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    target = args.to
    if not target:
        api, ns = _api(args)
        target = (_get(api, ns, args.name).get("status") or {}).get("previousVersion")
        if not target:
            print(f"managedsecret/{args.name} has no ACSPrevious version to roll back to", file=sys.stderr)
            return 1
    return _move(args, "ACSCurrent", target)


def cmd_label(args: argparse.Namespace) -> int:
    return _move(args, args.label, args.to)


def cmd_restore(args: argparse.Namespace) -> int:
    api, ns = _api(args)
    _annotate(api, ns, args.name, {RESTORE: "true"})
    print(f"managedsecret/{args.name} restore requested")
    return 0


def cmd_rotate_kek(args: argparse.Namespace) -> int:
    config.load_kube_config(config_file=args.kubeconfig, context=args.context)  # type: ignore[no-untyped-call]
    request = f"cli-{uuid.uuid4().hex[:12]}"
    client.CoreV1Api().patch_namespaced_secret(
        args.keyring_secret,
        args.operator_namespace,
        {"metadata": {"annotations": {ROTATE_KEK_ANNOTATION: request}}},
    )
    print(f"key-encryption key rotation requested (request id {request})")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    api, ns = _api(args)
    status = _get(api, ns, args.name).get("status") or {}
    rows = [("VERSION", "STAGES", "CREATED")]
    for v in status.get("versions") or []:
        rows.append((v["id"], ",".join(v.get("stages") or []) or "-", v.get("created", "")))
    _table(rows)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    api, ns = _api(args)
    if args.name:
        items = [_get(api, ns, args.name)]
    else:
        listing: dict[str, Any] = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)  # type: ignore[assignment]
        items = listing["items"]
    rows = [("NAME", "CURRENT", "PENDING", "NEXT-ROTATION", "READY", "REASON")]
    for obj in items:
        status = obj.get("status") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        rows.append(
            (
                obj["metadata"]["name"],
                status.get("currentVersion") or "-",
                status.get("pendingVersion") or "-",
                status.get("nextRotationTime") or "-",
                ready.get("status", "Unknown"),
                ready.get("reason", ""),
            )
        )
    _table(rows)
    if args.name:
        for c in (items[0].get("status") or {}).get("conditions") or []:
            print(f"  {c['type']}={c['status']} ({c.get('reason', '')}): {c.get('message', '')}")
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    common.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    common.add_argument("--context", default=None, help="kubeconfig context")
    p = argparse.ArgumentParser(
        prog="kubectl msecret", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    def subcommand(name: str, **kw: Any) -> argparse.ArgumentParser:
        return add(name, parents=[common], **kw)

    r = subcommand("rotate", help="rotate now")
    r.add_argument("name")
    r.add_argument("--request-id", default=None, help="idempotency key (default: a new random id)")
    r.set_defaults(run=cmd_rotate)
    b = subcommand("rollback", help="move ACSCurrent back")
    b.add_argument("name")
    b.add_argument("--to", default=None, help="version id (default: the ACSPrevious version)")
    b.set_defaults(run=cmd_rollback)
    lab = subcommand("label", help="move a stage label to a version")
    lab.add_argument("name")
    lab.add_argument("label")
    lab.add_argument("--to", required=True)
    lab.set_defaults(run=cmd_label)
    res = subcommand("restore", help="restore a deleted ManagedSecret's versions")
    res.add_argument("name")
    res.set_defaults(run=cmd_restore)
    k = subcommand("rotate-kek", help="add a new primary key-encryption key and re-wrap every version")
    k.add_argument("--operator-namespace", default=DEFAULT_OPERATOR_NAMESPACE)
    k.add_argument("--keyring-secret", default=DEFAULT_KEYRING_SECRET)
    k.set_defaults(run=cmd_rotate_kek)
    v = subcommand("versions", help="list versions and stage labels")
    v.add_argument("name")
    v.set_defaults(run=cmd_versions)
    s = subcommand("status", help="conditions and rotation times")
    s.add_argument("name", nargs="?")
    s.set_defaults(run=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ApiException as e:
        print(f"error: HTTP {e.status} {e.reason}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
