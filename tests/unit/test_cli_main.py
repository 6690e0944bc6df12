"""`kubectl msecret` end to end against a stand-in API server: output formats, writes, errors, exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from managed_secrets.cli.main import main

PREFIX = "/apis/managedsecrets.io/v1alpha1"


def managed_secret(name: str, namespace: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "managedsecrets.io/v1alpha1",
        "kind": "ManagedSecret",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "labels": {"app": name}},
        "spec": {"type": "Generic", "generate": {"keys": [{"name": "password"}]}},
        "status": {
            "currentVersion": "v2",
            "previousVersion": "v1",
            "nextVersion": 3,
            "versions": [
                {"id": "v1", "stages": ["ACSPrevious"], "created": "2026-01-01T00:00:00Z"},
                {"id": "v2", "stages": ["ACSCurrent"], "created": "2026-01-02T00:00:00Z"},
            ],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready", "message": "version v2 is current"},
                {"type": "RotationFailed", "status": "False", "reason": "NoFailure", "message": "ok"},
            ],
            **status,
        },
    }


def status_error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    """Paths (prefixes) answered 403."""
    leases: list[dict[str, Any]] = field(default_factory=list)
    watch_events: list[dict[str, Any]] = field(default_factory=list)
    """What a watch of a ManagedSecret streams (then it ends)."""
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def answer(self, request: Request) -> tuple[int, Any]:
        for prefix in self.forbidden:
            if request.path.startswith(prefix):
                return 403, status_error(403, "Forbidden", f"forbidden: {request.method} {request.path}")
        parts = request.path.strip("/").split("/")
        if request.path.startswith("/apis/coordination.k8s.io/v1/leases"):
            return 200, {"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1", "items": self.leases}
        if request.path.startswith("/api/v1/namespaces/") and "secrets" in parts:
            namespace, name = parts[3], parts[5]
            return 200, {"kind": "PartialObjectMetadata", "metadata": {"name": name, "namespace": namespace}}
        if request.path == f"{PREFIX}/managedsecrets":
            return 200, {"kind": "ManagedSecretList", "items": list(self.objects.values())}
        if request.path.startswith(f"{PREFIX}/namespaces/"):
            namespace = parts[4]
            if len(parts) == 6:
                items = [o for (ns, _), o in self.objects.items() if ns == namespace]
                selector = request.query.get("labelSelector", [""])[0]
                if selector:
                    key, _, value = selector.partition("=")
                    items = [o for o in items if o["metadata"]["labels"].get(key) == value]
                return 200, {"kind": "ManagedSecretList", "items": items}
            name = parts[6]
            obj = self.objects.get((namespace, name))
            if obj is None:
                return 404, status_error(404, "NotFound", f'managedsecrets.managedsecrets.io "{name}" not found')
            if request.method == "PATCH" and not request.query.get("dryRun"):
                obj["metadata"].setdefault("annotations", {}).update(request.body["metadata"]["annotations"])
                obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            return 200, obj
        return 404, status_error(404, "NotFound", "the server could not find the requested resource")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        url = urlparse(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(
            self.command,
            url.path,
            parse_qs(url.query),
            {k.lower(): v for k, v in self.headers.items()},
            json.loads(raw) if raw else None,
        )
        fake = self.server.fake
        fake.requests.append(request)
        if request.query.get("watch") == ["true"]:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            for event in fake.watch_events:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()
            time.sleep(min(1.0, float(request.query.get("timeoutSeconds", ["1"])[0])))
            return
        code, body = fake.answer(request)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApi


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeApi(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def kubeconfig(api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two contexts on the stand-in server, each with its namespace; dev is current."""
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [
                    {"name": "dev", "context": {"cluster": "fake", "user": "me", "namespace": "dev-ns"}},
                    {"name": "prod", "context": {"cluster": "fake", "user": "me", "namespace": "prod-ns"}},
                ],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("MSO_NAMESPACE", raising=False)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_parses_holds_metadata_only_and_uses_the_context_namespace(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.objects[("dev-ns", "db")] = managed_secret("db", "dev-ns")
    api.objects[("prod-ns", "db")] = managed_secret("db", "prod-ns", currentVersion="v7")
    code, out, _ = run(capsys, "status", "db", "-o", "json", "--context", "prod")
    assert code == 0
    doc = json.loads(out)
    assert (doc["name"], doc["namespace"], doc["currentVersion"], doc["ready"]) == ("db", "prod-ns", "v7", "True")
    assert "data" not in out and "spec" not in doc
    listing = json.loads(run(capsys, "status", "-o", "json")[1])
    assert [(i["namespace"], i["name"]) for i in listing["items"]] == [("dev-ns", "db")]
    assert api.requests[-1].headers["authorization"] == "Bearer t0ken"


def test_status_table_and_name_output(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    api.objects[("prod-ns", "b")] = managed_secret("b", "prod-ns", rotation={"step": "set", "versionId": "v3"})
    code, out, _ = run(capsys, "status", "a")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "CURRENT", "PENDING", "NEXT-ROTATION", "READY", "REASON"]
    assert "Ready=True (Ready)" in out
    code, out, _ = run(capsys, "status", "-A")
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["NAMESPACE", "NAME"],
        ["dev-ns", "a"],
        ["prod-ns", "b"],
    ]
    assert api.requests[-1].path == f"{PREFIX}/managedsecrets"
    assert run(capsys, "status", "-o", "name")[1] == "managedsecret.managedsecrets.io/a\n"
    code, out, err = run(capsys, "status", "-n", "empty")
    assert (code, out, err) == (0, "", "No resources found in empty namespace.\n")


def test_versions_outputs(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    out = run(capsys, "versions", "a")[1]
    assert [line.split() for line in out.splitlines()] == [
        ["VERSION", "STAGES", "CREATED"],
        ["v1", "ACSPrevious", "2026-01-01T00:00:00Z"],
        ["v2", "ACSCurrent", "2026-01-02T00:00:00Z"],
    ]
    doc = yaml.safe_load(run(capsys, "versions", "a", "-o", "yaml")[1])
    assert doc["versions"][1] == {"id": "v2", "stages": ["ACSCurrent"], "created": "2026-01-02T00:00:00Z"}
    listing = json.loads(run(capsys, "versions", "-l", "app=a", "-o", "json")[1])
    assert [v["id"] for v in listing["items"][0]["versions"]] == ["v1", "v2"]
    assert api.requests[-1].query["labelSelector"] == ["app=a"]
    out = run(capsys, "versions")[1]
    assert out.splitlines()[0].split() == ["NAME", "VERSION", "STAGES", "CREATED"]


def test_not_found_is_one_kubectl_line(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["rotate", "x"], ["status", "x"], ["versions", "x", "-o", "json"], ["rollback", "x"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, ""), argv
        assert err == 'Error from server (NotFound): managedsecrets.managedsecrets.io "x" not found\n', argv


def test_forbidden_names_the_verb_and_resource(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forbidden.add(f"{PREFIX}/namespaces/dev-ns")
    code, _, err = run(capsys, "rotate", "x")
    assert code == 1
    assert err == f"Error from server (Forbidden): forbidden: PATCH {PREFIX}/namespaces/dev-ns/managedsecrets/x\n"


def test_unreachable_server_and_missing_context_exit_1_without_traceback(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c"}}],
            }
        )
    )
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(config), "HOME": str(tmp_path)}
    for argv, first in (
        (["status"], "Unable to connect to the server: "),
        (["rotate", "x", "--wait"], "Unable to connect to the server: "),
        (["status", "--context", "nope"], 'error: context "nope" does not exist'),
        (["rotate", "x", "--kubeconfig", str(tmp_path / "gone")], "error: stat "),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "managed_secrets.cli.main", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, (argv, done.stderr)
        assert done.stderr.startswith(first), (argv, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stdout == ""


def test_rotate_writes_the_annotation_and_dry_runs(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    code, out, _ = run(capsys, "rotate", "a", "--request-id", "r1")
    assert code == 0 and out == "managedsecret/a rotation requested (request id r1)\n"
    patch = api.requests[-1]
    assert (patch.method, patch.body) == (
        "PATCH",
        {"metadata": {"annotations": {"managedsecrets.io/rotate": "r1"}}},
    )
    assert patch.headers["content-type"] == "application/merge-patch+json"

    count = len(api.requests)
    code, out, _ = run(capsys, "rotate", "a", "--dry-run=client", "--request-id", "r2")
    assert code == 0 and len(api.requests) == count, "a client dry run sends nothing"
    assert '"managedsecrets.io/rotate":"r2"' in out and out.endswith("(dry run)\n")

    code, out, _ = run(capsys, "rotate", "a", "--dry-run=server", "--request-id", "r3")
    assert code == 0 and out.endswith("(server dry run)\n")
    assert api.requests[-1].query["dryRun"] == ["All"]
    assert api.objects[("dev-ns", "a")]["metadata"]["annotations"]["managedsecrets.io/rotate"] == "r1"


def test_rotate_by_selector_and_all(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b", "c"):
        api.objects[("dev-ns", name)] = managed_secret(name, "dev-ns")
    code, out, _ = run(capsys, "rotate", "-l", "app=b")
    assert code == 0 and out.startswith("managedsecret/b rotation requested")
    assert [r.path.rsplit("/", 1)[-1] for r in api.requests if r.method == "PATCH"] == ["b"]
    code, out, _ = run(capsys, "rotate", "--all")
    assert code == 0 and len(out.splitlines()) == 3
    code, _, err = run(capsys, "rotate", "-l", "app=none")
    assert code == 1 and err == "error: no ManagedSecrets found in namespace dev-ns for app=none\n"


def test_rollback_and_label(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    code, out, _ = run(capsys, "rollback", "a")
    assert code == 0 and "ACSCurrent -> v1 requested" in out
    moved = json.loads(api.requests[-1].body["metadata"]["annotations"]["managedsecrets.io/move-stage"])
    assert (moved["label"], moved["version"]) == ("ACSCurrent", "v1")
    code, out, _ = run(capsys, "label", "a", "Mine", "--to", "v2", "--dry-run=client")
    assert code == 0 and "move-stage" in out and out.endswith("(dry run)\n")
    api.objects[("dev-ns", "a")]["status"]["previousVersion"] = None
    code, _, err = run(capsys, "rollback", "a")
    assert code == 1 and err == "error: managedsecret/a has no ACSPrevious version to roll back to\n"


def test_rotate_kek_finds_the_operator_namespace_and_reads_metadata_only(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.leases = [{"metadata": {"name": "managed-secrets-member-x", "namespace": "ops"}}]
    code, out, _ = run(capsys, "rotate-kek")
    assert code == 0 and "namespace ops" in out
    lease_query, patch = api.requests[-2:]
    assert lease_query.query["labelSelector"] == ["managedsecrets.io/member=true"]
    assert patch.path == "/api/v1/namespaces/ops/secrets/managed-secrets-keyring"
    assert "as=PartialObjectMetadata" in patch.headers["accept"]
    assert patch.headers["authorization"] == "Bearer t0ken"
    assert list(patch.body["metadata"]["annotations"]) == ["managedsecrets.io/rotate-kek"]

    run(capsys, "rotate-kek", "--operator-namespace", "elsewhere", "--dry-run=server")
    assert api.requests[-1].path.startswith("/api/v1/namespaces/elsewhere/secrets/")
    assert api.requests[-1].query["dryRun"] == ["All"]
    monkeypatch.setenv("MSO_NAMESPACE", "from-env")
    assert "namespace from-env" in run(capsys, "rotate-kek", "--dry-run=client")[1]


def test_rotate_kek_without_a_way_to_find_the_namespace(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forbidden |= {"/apis/coordination.k8s.io", "/api/v1/secrets"}
    code, _, err = run(capsys, "rotate-kek")
    assert code == 1
    assert err == (
        "error: cannot find the operator's namespace (cannot list Leases or Secrets in all namespaces): "
        "pass --operator-namespace NAMESPACE (or set MSO_NAMESPACE)\n"
    )
    api.forbidden.clear()
    api.leases = [{"metadata": {"namespace": n}} for n in ("a", "b")]
    code, _, err = run(capsys, "rotate-kek")
    assert code == 1 and "several namespaces (a, b)" in err


def _event(obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": "MODIFIED", "object": obj}


def test_rotate_wait_follows_the_watch_to_success(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    flight = managed_secret("a", "dev-ns", rotation={"requestId": "r1", "versionId": "v3", "step": "set"})
    done = managed_secret("a", "dev-ns", currentVersion="v3", previousVersion="v2", nextVersion=4)
    api.watch_events = [_event(flight), _event(done)]
    code, out, err = run(capsys, "rotate", "a", "--request-id", "r1", "--wait", "--timeout", "20s")
    assert code == 0 and err == "", "no progress lines when stderr is not a terminal"
    assert out.splitlines() == [
        "managedsecret/a rotation requested (request id r1)",
        "managedsecret/a rotated: v3 is ACSCurrent",
    ]
    watch = next(r for r in api.requests if r.query.get("watch"))
    assert watch.query["fieldSelector"] == ["metadata.name=a"] and watch.query["resourceVersion"] == ["2"]


def test_rotate_wait_failure_exits_1(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    failed = managed_secret(
        "a",
        "dev-ns",
        rotation={"requestId": "r1", "versionId": "v3", "step": "set", "attempts": 1, "lastError": "HTTP 503"},
    )
    failed["status"]["conditions"][1] = {"type": "RotationFailed", "status": "True", "reason": "WebhookRejected"}
    api.watch_events = [_event(failed)]
    code, out, err = run(capsys, "rotate", "a", "--request-id", "r1", "--wait")
    assert code == 1 and out == "managedsecret/a rotation requested (request id r1)\n"
    assert err.startswith("error: managedsecret/a: rotation to v3 failed at step set (WebhookRejected): HTTP 503")


def test_rotate_wait_times_out_with_124(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    api.watch_events = [
        _event(managed_secret("a", "dev-ns", rotation={"requestId": "r1", "versionId": "v3", "step": "set"}))
    ]
    started = time.monotonic()
    code, _, err = run(capsys, "rotate", "a", "--request-id", "r1", "--wait", "--timeout", "2s")
    assert code == 124
    assert time.monotonic() - started < 10
    assert err == "error: timed out waiting for the rotation of managedsecret/a (rotating to v3: step set)\n"


def test_completion_offers_names_versions_and_namespaces_from_the_cluster(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from managed_secrets.cli.completion import complete

    for namespace, name in (("dev-ns", "app-db"), ("dev-ns", "app-api"), ("prod-ns", "billing")):
        api.objects[(namespace, name)] = managed_secret(name, namespace)
    assert complete(["rotate", "app-"]) == (["app-api", "app-db"], 4)
    assert complete(["rotate", "app-db", ""]) == (["app-api"], 4), "a name given already is not offered again"
    assert complete(["--context", "prod", "status", ""]) == (["billing"], 4)
    assert complete(["status", "-n", "prod-ns", "b"]) == (["billing"], 4)
    assert complete(["rollback", "app-db", "--to", ""]) == (["v1", "v2"], 4)
    assert complete(["rollback", "app-db", ""]) == ([], 4), "rollback takes one name"


def test_rotate_wait_prints_the_steps_to_a_terminal(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.objects[("dev-ns", "a")] = managed_secret("a", "dev-ns")
    steps = [
        managed_secret("a", "dev-ns", rotation={"requestId": "r1", "versionId": "v3", "step": step})
        for step in ("set", "test", "finish")
    ]
    done = managed_secret("a", "dev-ns", currentVersion="v3", nextVersion=4)
    api.watch_events = [*map(_event, steps), _event(done)]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run(capsys, "rotate", "a", "--request-id", "r1", "--wait")
    assert code == 0 and out.splitlines()[-1] == "managedsecret/a rotated: v3 is ACSCurrent"
    assert err.splitlines() == [f"managedsecret/a: rotating to v3: step {s}" for s in ("set", "test", "finish")]


def test_status_shows_each_ssh_host(api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [
        {"host": "bastion-1:22", "versionId": "v3", "step": "finish", "state": "Current", "message": "holds v3"},
        {
            "host": "bastion-2:22",
            "versionId": "v3",
            "step": "set",
            "state": "Failed",
            "message": "HostUnreachable",
        },
    ]
    api.objects[("dev-ns", "k")] = managed_secret("k", "dev-ns", hosts=hosts)
    out = run(capsys, "status", "k")[1]
    assert "  host bastion-1:22: Current v3 (step finish): holds v3" in out.splitlines()
    assert "  host bastion-2:22: Failed v3 (step set): HostUnreachable" in out.splitlines()
    assert json.loads(run(capsys, "status", "k", "-o", "json")[1])["hosts"] == hosts
    api.objects[("dev-ns", "plain")] = managed_secret("plain", "dev-ns")
    assert "hosts" not in json.loads(run(capsys, "status", "plain", "-o", "json")[1])
