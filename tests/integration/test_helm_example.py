"""examples/helm-chart: a ManagedSecret shipped in a Helm chart, its template delimited by [[ ]] so that Helm
renders only its own {{ }}. ``helm template`` renders it, the real API server takes it (server-side apply), and
the operator projects the DATABASE_URL with the generated username and password, at each rotation.

Also here: what Helm does with Jinja's blocks, comments and the escaping alternative (the README's claims), and
the API server's own refusal of unusable delimiters, by field path.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import cluster as local_cluster
from managed_secrets.names import ROTATE_ANNOTATION
from support import kube
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    annotate,
    get_ms,
    install_crd,
    managed_secret,
    secret_data,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CHART = ROOT / "examples" / "helm-chart"
DELIMITERS_PATH = "spec.target.template.delimiters"


@functools.cache
def tools() -> Path:
    """The directory with helm and kubectl (the cached control-plane build)."""
    return local_cluster.build_binaries()


def run(tool: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(tools() / tool), *args], input=stdin, capture_output=True, text=True, timeout=180, check=False
    )
    if check:
        assert done.returncode == 0, f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def served(admin: client.ApiClient) -> client.CustomObjectsApi:
    """The CRD of this tree, served with its delimiters field (a replaced CRD's schema reaches every handler a
    little after Established; until then the field would be pruned)."""
    install_crd(admin)
    api = client.CustomObjectsApi(admin)
    probe = kube.create_namespace(admin, "helm-example-probe")
    body = managed_secret("probe", target={"template": {"delimiters": {"left": "[[", "right": "]]"}}})
    try:
        kube.eventually(
            lambda: api.create_namespaced_custom_object(GROUP, VERSION, probe, PLURAL, body, dry_run="All")[
                "spec"
            ]["target"]["template"].get("delimiters"),
            what="ManagedSecrets to be served with spec.target.template.delimiters",
        )
    finally:
        kube.delete_namespace(admin, probe)
    return api


def test_the_example_chart_lints_and_renders_one_managed_secret() -> None:
    run("helm", "lint", "--strict", str(EXAMPLE_CHART))
    rendered = run("helm", "template", "app-db", str(EXAMPLE_CHART), "-n", "demo").stdout
    (ms,) = documents(rendered)
    assert (ms["kind"], ms["metadata"]["name"], ms["metadata"]["namespace"]) == ("ManagedSecret", "app-db", "demo")
    template = ms["spec"]["target"]["template"]
    assert template["delimiters"] == {"left": "[[", "right": "]]"}
    # Helm filled in its own values and left the operator's variables as they are.
    assert template["data"] == {"DATABASE_URL": "postgresql://[[ username ]]:[[ password ]]@postgres:5432/app"}
    assert ms["spec"]["generate"] == {
        "keys": [{"name": "password", "length": 32, "excludePunctuation": True}],
        "static": {"username": "app"},
    }
    # The values name the object, its namespace and its keys.
    custom = run(
        "helm",
        "template",
        "r",
        str(EXAMPLE_CHART),
        "-n",
        "demo",
        "--set",
        "name=billing-db,namespace=billing,targetName=billing-db-creds,static.username=billing",
        "--set",
        "database.host=pg.billing.svc,database.name=billing",
    ).stdout
    (other,) = documents(custom)
    assert (other["metadata"]["name"], other["metadata"]["namespace"]) == ("billing-db", "billing")
    assert other["spec"]["target"]["name"] == "billing-db-creds"
    assert other["spec"]["generate"]["static"] == {"username": "billing"}
    assert other["spec"]["target"]["template"]["data"]["DATABASE_URL"] == (
        "postgresql://[[ username ]]:[[ password ]]@pg.billing.svc:5432/billing"
    )


def test_helm_renders_the_chart_and_the_operator_projects_the_url(
    admin: client.ApiClient,
    kubeconfig: str,
    operator: OperatorEnvironment,
    served: client.CustomObjectsApi,
    namespace: str,
) -> None:
    host = f"postgres.{namespace}.svc"
    rendered = run(
        "helm", "template", "app-db", str(EXAMPLE_CHART), "-n", namespace, "--set", f"database.host={host}"
    ).stdout
    # As a user would: helm template ... | kubectl apply --server-side -f -
    applied = run(
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        "apply",
        "--server-side",
        "--field-manager=helm-example",
        "-f",
        "-",
        stdin=rendered,
    ).stdout
    assert "managedsecret.managedsecrets.io/app-db serverside-applied" in applied
    stored = get_ms(admin, namespace, "app-db")
    assert stored["spec"]["target"]["template"]["delimiters"] == {"left": "[[", "right": "]]"}

    obj = wait_ready(admin, namespace, "app-db")
    assert obj["status"]["currentVersion"] == "v1"
    data = secret_data(admin, namespace, "app-db")
    assert data["username"] == b"app"
    password = data["password"].decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert data["DATABASE_URL"].decode() == f"postgresql://app:{password}@{host}:5432/app"

    # A rotation renders the URL again with the new password.
    annotate(admin, namespace, "app-db", {ROTATE_ANNOTATION: "helm-example-r1"})

    def rotated() -> dict[str, bytes] | None:
        now = secret_data(admin, namespace, "app-db")
        return now if now["password"] != data["password"] else None

    after = wait_until(rotated, timeout=60, what="the projected Secret to hold the rotated password")
    assert after["DATABASE_URL"].decode() == f"postgresql://app:{after['password'].decode()}@{host}:5432/app"
    assert "[[" not in after["DATABASE_URL"].decode()


def test_helm_leaves_jinja_blocks_and_comments_alone_and_the_escapes_work(tmp_path: Path) -> None:
    """What the README says: with [[ ]] only variables need other delimiters; {% %} and {# #} are Helm text.
    With the default {{ }} each variable must be escaped for Helm (either way), or Helm fails."""
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    lines = {
        "blocks": "{% if password %}[[ password ]]{% else %}none{% endif %}{# a comment #}",
        "quoted": '{{ "{{" }} username {{ "}}" }}',
        "raw": "{{`{{ username }}`}}",
    }
    (chart / "templates" / "probe.yaml").write_text("".join(f"{k}: '{v}'\n" for k, v in lines.items()))
    got = yaml.safe_load(run("helm", "template", "p", str(chart)).stdout)
    assert got == {
        "blocks": "{% if password %}[[ password ]]{% else %}none{% endif %}{# a comment #}",
        "quoted": "{{ username }}",
        "raw": "{{ username }}",
    }
    (chart / "templates" / "probe.yaml").write_text('url: "postgresql://{{ username }}:{{ password }}@db/app"\n')
    failed = run("helm", "template", "p", str(chart), check=False)
    assert failed.returncode != 0 and 'function "username" not defined' in failed.stderr


def causes_of(error: ApiException) -> list[tuple[str, str]]:
    """(field, message) of each cause in a 422 answer, without the note that CEL rules were skipped."""
    details = json.loads(error.body).get("details") or {}
    causes = [(c.get("field", ""), c.get("message", "")) for c in details.get("causes", [])]
    return [c for c in causes if "validation rules were not checked" not in c[1]]


REFUSED = {
    "same-left-and-right": ({"left": "[[", "right": "[["}, ".right", "must differ"),
    "empty": ({"left": "", "right": "]]"}, ".left", "at least 2 chars long"),
    "one-character": ({"left": "[[", "right": "]"}, ".right", "at least 2 chars long"),
    "too-long": ({"left": "[[[[[[[[[", "right": "]]"}, ".left", "may not be more than 8"),
    "whitespace-only": ({"left": "  ", "right": "]]"}, ".left", "must be made of the punctuation characters"),
    "a-space-inside": ({"left": "[[", "right": "] ]"}, ".right", "must be made of the punctuation characters"),
    "letters": ({"left": "<a", "right": "a>"}, ".left", "must be made of the punctuation characters"),
    "jinja-block": ({"left": "{%", "right": "]]"}, ".left", "must not contain {%, %}, {# or #}"),
    "jinja-comment-end": ({"left": "[[", "right": "-#}"}, ".right", "must not contain {%, %}, {# or #}"),
    "half-a-pair": ({"left": "[["}, ".right", "Required value"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_the_api_server_refuses_unusable_delimiters_by_field_path(
    served: client.CustomObjectsApi, namespace: str, case: tuple[dict[str, str], str, str]
) -> None:
    delimiters, field, says = case
    body = managed_secret("bad", target={"template": {"data": {"A": "x"}, "delimiters": delimiters}})
    with pytest.raises(ApiException) as refused:
        served.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
    assert refused.value.status == 422, refused.value.body
    causes = causes_of(refused.value)
    assert any(f == DELIMITERS_PATH + field and says in m for f, m in causes), causes


@pytest.mark.parametrize(
    "delimiters",
    [{"left": "[[", "right": "]]"}, {"left": "<<", "right": ">>"}, {"left": "${", "right": "}$"}],
    ids=["square", "angle", "dollar"],
)
def test_the_api_server_accepts_usable_delimiters(
    served: client.CustomObjectsApi, namespace: str, delimiters: dict[str, str]
) -> None:
    body = managed_secret("good", target={"template": {"data": {"A": "x"}, "delimiters": delimiters}})
    created = served.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
    assert created["spec"]["target"]["template"]["delimiters"] == delimiters
