"""Connecting as kubectl does: its connection flags, the kubeconfig files, the selected context's namespace.

The flags are accepted before and after the command (``kubectl msecret -n demo rotate x`` and
``kubectl msecret rotate x -n demo``). The kubeconfig is ``--kubeconfig``, else every file of ``$KUBECONFIG``
(merged as kubectl merges them: the first file to name a context, cluster or user wins, and the first
``current-context`` wins), else ``~/.kube/config``; with none of them, the in-cluster service account. The
namespace is ``-n``, else the namespace of the *selected* context (``--context`` or the current one), else
``default``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import ConfigNode, KubeConfigLoader, KubeConfigMerger
from urllib3._collections import HTTPHeaderDict  # also where urllib3 1.26 has it

from managed_secrets.cli.errors import CliError

__all__ = [
    "Connection",
    "KubeconfigFiles",
    "add_connection_flags",
    "connect",
    "finish_connection_args",
    "parse_duration",
]

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CONNECT_TIMEOUT = 30.0  # seconds, like kubectl's dialer
_SELECTED = "kubectl-msecret"

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``90s``, ``2m``, ``1h30m``, ``500ms``) or a bare number of seconds."""
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return value
    if not raw or _DURATION.sub("", raw):
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 2m, 1h)")
    return sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(raw))


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# --- the flags ---------------------------------------------------------------------------------------------

_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-n", "--namespace"), {"metavar": "NAMESPACE", "help": "the namespace (default: the context's)"}),
    (
        ("--kubeconfig",),
        {"metavar": "FILE", "help": "kubeconfig file (default: every file of $KUBECONFIG, or ~/.kube/config)"},
    ),
    (("--context",), {"metavar": "NAME", "help": "the kubeconfig context (and its namespace) to use"}),
    (("--cluster",), {"metavar": "NAME", "help": "the kubeconfig cluster to use (overrides the context's)"}),
    (("--user",), {"metavar": "NAME", "help": "the kubeconfig user to use (overrides the context's)"}),
    (("-s", "--server"), {"metavar": "URL", "help": "the API server's address"}),
    (("--token",), {"metavar": "TOKEN", "help": "bearer token for the API server"}),
    (("--as",), {"dest": "as_user", "metavar": "USER", "help": "act as this user (impersonation)"}),
    (("--as-uid",), {"metavar": "UID", "help": "act as this UID (impersonation)"}),
    (
        ("--certificate-authority",),
        {"metavar": "FILE", "help": "a CA certificate file to check the server's certificate with"},
    ),
    (("--request-timeout",), {"metavar": "DURATION", "type": _duration_arg, "help": "per request (0: none)"}),
]
_TOP_DEFAULTS: dict[str, Any] = {"request_timeout": 0.0}


def add_connection_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """kubectl's connection flags. On the top-level parser (``top``) they carry the defaults; on a command's
    parser they default to nothing, so a flag given before the command is kept unless given again after it."""
    group = parser.add_argument_group("connection flags (before or after the command)") if top else parser
    hidden: dict[str, Any] = {} if top else {"help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
    for names, options in _FLAGS:
        dest = options.get("dest") or names[-1].lstrip("-").replace("-", "_")
        default = _TOP_DEFAULTS.get(dest)
        group.add_argument(*names, **{"default": default, **options, **hidden})
    group.add_argument(
        "--as-group",
        dest="as_group" if top else "as_group_after",
        action="append",
        metavar="GROUP",
        **({"default": [], "help": "act as a member of this group (repeatable)"} if top else hidden),
    )
    group.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        **({"default": False, "help": "do not check the server's certificate (insecure)"} if top else hidden),
    )


def finish_connection_args(args: argparse.Namespace) -> argparse.Namespace:
    """Joins the groups given before and after the command."""
    args.as_group = [*(getattr(args, "as_group", None) or []), *(getattr(args, "as_group_after", None) or [])]
    if hasattr(args, "as_group_after"):
        del args.as_group_after
    return args


# --- the kubeconfig ------------------------------------------------------------------------------------------


def _value(node: Any) -> dict[str, Any]:
    raw = node.value if isinstance(node, ConfigNode) else node
    return raw if isinstance(raw, dict) else {}


def _path(node: Any) -> str | None:
    return node.path if isinstance(node, ConfigNode) else None


class KubeconfigFiles:
    """The merged kubeconfig files (no network): contexts, clusters, users and the current context."""

    def __init__(self, kubeconfig: str | None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        if kubeconfig:
            if not Path(kubeconfig).expanduser().exists():
                raise CliError(f"stat {kubeconfig}: no such file or directory")
            paths = kubeconfig
        else:
            paths = env.get("KUBECONFIG") or "~/.kube/config"
        self.paths = paths
        try:
            merger = KubeConfigMerger(paths)  # type: ignore[no-untyped-call]
        except (ConfigException, yaml.YAMLError, OSError) as e:
            raise CliError(f"error loading config file {paths!r}: {e}") from None
        merged = merger.config
        self.found = merged is not None
        value = _value(merged) if merged is not None else {}
        self.contexts = {str(_value(n).get("name")): n for n in value.get("contexts") or []}
        self.clusters = {str(_value(n).get("name")): n for n in value.get("clusters") or []}
        self.users = {str(_value(n).get("name")): n for n in value.get("users") or []}
        # kubectl: the first file that sets current-context wins (the client's merger keeps the last one).
        self.current_context = next(
            (
                str(config["current-context"])
                for path in merger.paths
                if isinstance(config := merger.config_files.get(path), dict) and config.get("current-context")
            ),
            "",
        )

    def context(self, name: str) -> dict[str, Any]:
        return dict(_value(self.contexts[name]).get("context") or {})


@dataclass
class Connection:
    api: client.ApiClient
    namespace: str
    context: str | None
    server: str

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.api)


def _service_account_namespace() -> str | None:
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip() or None
    except OSError:
        return None


def _from_kubeconfig(args: argparse.Namespace, files: KubeconfigFiles) -> tuple[client.Configuration, str, str]:
    name = args.context or files.current_context
    if name and name not in files.contexts:
        raise CliError(f'context "{name}" does not exist')
    if not name and not (args.server or args.cluster):
        raise CliError("current-context is not set in the kubeconfig: pass --context, or --server")
    context = files.context(name) if name else {}
    cluster_name = args.cluster or context.get("cluster") or ""
    user_name = args.user or context.get("user") or ""
    cluster_node = files.clusters.get(cluster_name) if cluster_name else None
    if cluster_name and cluster_node is None and not args.server:
        raise CliError(f'cluster "{cluster_name}" does not exist')
    user_node = files.users.get(user_name) if user_name else None
    if args.user and user_node is None:
        raise CliError(f'auth info "{args.user}" does not exist')

    cluster = dict(_value(cluster_node).get("cluster") or {}) if cluster_node is not None else {}
    if args.server:
        cluster["server"] = args.server
    if args.certificate_authority:
        cluster["certificate-authority"] = str(Path(args.certificate_authority).expanduser().resolve())
        cluster.pop("certificate-authority-data", None)
    if args.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
        cluster.pop("certificate-authority", None)
        cluster.pop("certificate-authority-data", None)
    if not cluster.get("server"):
        raise CliError(f'no server found for cluster "{cluster_name}"')
    user = dict(_value(user_node).get("user") or {}) if user_node is not None else {}
    if args.token:
        # --token replaces how the user authenticates (no exec plugin, auth provider or password runs);
        # a client certificate, if any, is still presented.
        keep = ("client-certificate", "client-certificate-data", "client-key", "client-key-data")
        user = {k: v for k, v in user.items() if k in keep} | {"token": args.token}

    selected: dict[str, Any] = {"cluster": "cluster"}
    if user:
        selected["user"] = "user"
    config = ConfigNode(  # type: ignore[no-untyped-call]
        "kubeconfig",
        {
            "current-context": _SELECTED,
            "contexts": [{"name": _SELECTED, "context": selected}],
            # Each entry keeps the path of its file, so relative certificate paths resolve as kubectl does.
            "clusters": [
                ConfigNode(  # type: ignore[no-untyped-call]
                    f"clusters[name={cluster_name}]",
                    {"name": "cluster", "cluster": cluster},
                    _path(cluster_node),
                )
            ],
            "users": [
                ConfigNode(  # type: ignore[no-untyped-call]
                    f"users[name={user_name}]", {"name": "user", "user": user}, _path(user_node)
                )
            ]
            if user
            else [],
        },
    )
    configuration = client.Configuration()
    try:
        loader = KubeConfigLoader(  # type: ignore[no-untyped-call]
            config_dict=config, active_context=_SELECTED, config_base_path=None
        )
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except ConfigException as e:
        raise CliError(str(e)) from None
    namespace = args.namespace or context.get("namespace") or "default"
    return configuration, namespace, name


def _in_cluster(args: argparse.Namespace) -> tuple[client.Configuration, str]:
    from kubernetes.config.incluster_config import load_incluster_config

    configuration = client.Configuration()
    try:
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException as e:
        raise CliError(str(e)) from None
    if args.server:
        configuration.host = args.server.rstrip("/")
    if args.token:
        configuration.api_key = {"BearerToken": f"Bearer {args.token}"}
        configuration.refresh_api_key_hook = None
    if args.certificate_authority:
        configuration.ssl_ca_cert = str(Path(args.certificate_authority).expanduser().resolve())
    if args.insecure_skip_tls_verify:
        configuration.verify_ssl = False
    return configuration, args.namespace or _service_account_namespace() or "default"


def _wrap_requests(api: client.ApiClient, args: argparse.Namespace) -> None:
    """Every request gets the impersonation headers and, unless the call sets its own, the timeouts."""
    rest = api.rest_client
    send: Callable[..., Any] = rest.request
    timeout: float | tuple[float, float | None] = (
        args.request_timeout if args.request_timeout else (CONNECT_TIMEOUT, None)
    )
    impersonate: list[tuple[str, str]] = []
    if args.as_user:
        impersonate.append(("Impersonate-User", args.as_user))
    if args.as_uid:
        impersonate.append(("Impersonate-Uid", args.as_uid))
    impersonate += [("Impersonate-Group", group) for group in args.as_group]

    def request(method: str, url: str, *rest_args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = timeout
        if impersonate:
            headers = HTTPHeaderDict(kwargs.get("headers") or {})
            for header, value in impersonate:
                headers.add(header, value)  # one header line per group, as the API server reads them
            kwargs["headers"] = headers
        return send(method, url, *rest_args, **kwargs)

    setattr(rest, "request", request)  # noqa: B010 - an instance attribute that shadows the method


def connect(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Connection:
    """An API client for the flags in ``args`` and the namespace to work in. Raises ``CliError``."""
    env = os.environ if env is None else env
    files = KubeconfigFiles(args.kubeconfig, env)
    if files.found or args.server or args.context:
        configuration, namespace, context = _from_kubeconfig(args, files)
    elif env.get("KUBERNETES_SERVICE_HOST"):
        configuration, namespace = _in_cluster(args)
        context = ""
    else:
        raise CliError(
            f"no kubeconfig found (looked at {files.paths}): pass --kubeconfig, set KUBECONFIG, or pass --server"
        )
    configuration.retries = 1
    api = client.ApiClient(configuration)
    api.user_agent = "kubectl-msecret"
    _wrap_requests(api, args)
    return Connection(api=api, namespace=namespace, context=context or None, server=str(configuration.host))
