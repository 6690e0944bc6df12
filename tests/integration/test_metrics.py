"""/metrics and the liveness probe of the running operator, and metrics that move with a rotation."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from support import kube
from support.https_endpoint import Call, Endpoint, Reply, value_reply
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    annotate,
    condition,
    create,
    get_ms,
    managed_secret,
    wait_ready,
)

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "managed-secrets-operator"
METRIC_NAME = re.compile(r"\bmanaged_secrets_[a-z_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, series: str, **labels: str) -> float:
    """The value of one series (0 if absent)."""
    found = lookup(text, series, **labels)
    return 0.0 if found is None else found


def lookup(text: str, series: str, **labels: str) -> float | None:
    """The value of one series (None if absent)."""
    for line in text.splitlines():
        if not line.startswith(series + "{") and not line.startswith(series + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def exported(text: str) -> set[str]:
    """Series names the exposition offers: TYPE lines (a family without samples yet counts) and samples."""
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    names.update(
        HISTOGRAM_SUFFIX.sub("", line.split("{")[0].split(" ")[0]) for line in text.splitlines() if line[:1] != "#"
    )
    return names


def promql_names(text: str) -> set[str]:
    return {HISTOGRAM_SUFFIX.sub("", name) for name in METRIC_NAME.findall(text)}


def test_metrics_change_when_a_rotation_happens(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment
) -> None:
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, managed_secret("m", rotation={"enabled": True, "interval": "1h"})
    )
    wait_ready(admin, namespace, "m")
    port = operator.process.metrics_port
    before = scrape(port)
    for series in (
        "managed_secrets_with_condition",
        "managed_secrets_rotations_total",
        "managed_secrets_rotation_duration_seconds",
        "managed_secrets_projection_duration_seconds",
        "managed_secrets_next_rotation_timestamp_seconds",
        "managed_secrets_store_errors_total",
        "managed_secrets_api_errors_total",
    ):
        assert f"# TYPE {series}" in before, series
    next_due = sample(before, "managed_secrets_next_rotation_timestamp_seconds", namespace=namespace, name="m")
    assert next_due > 0
    assert sample(before, "managed_secrets_with_condition", condition="Ready", status="True") >= 1
    succeeded = sample(before, "managed_secrets_rotations_total", strategy="generate", result="succeeded")

    annotate(admin, namespace, "m", {"managedsecrets.io/rotate": "now"})
    kube.eventually(lambda: get_ms(admin, namespace, "m")["status"]["currentVersion"] == "v2", what="v2")
    after = kube.eventually(
        lambda: (
            (t := scrape(port))
            and sample(t, "managed_secrets_rotations_total", strategy="generate", result="succeeded")
            == succeeded + 1
            and t
        ),
        what="the rotation counter to move",
    )
    assert (
        sample(after, "managed_secrets_next_rotation_timestamp_seconds", namespace=namespace, name="m") > next_due
    )
    assert sample(after, "managed_secrets_rotation_duration_seconds_count", strategy="generate") >= 1
    assert sample(after, "managed_secrets_last_rotation_timestamp_seconds", namespace=namespace, name="m") > 0
    assert lookup(after, "managed_secrets_rotation_failures", namespace=namespace, name="m") == 0
    assert sample(after, "managed_secrets_reconcile_total", result="succeeded") >= 1

    # What the chart's dashboard and alerts query is all there (HELP/TYPE alone counts: no observation yet).
    live = exported(after)
    dashboard = promql_names((CHART / "files" / "dashboard.json").read_text())
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rules = promql_names("\n".join(r["expr"] for g in alerts["groups"] for r in g["rules"]))
    assert len(dashboard) > 15 and len(rules) > 5
    assert not sorted((dashboard | rules) - live), "queried but not exported"
    assert not [line for line in after.splitlines() if "_created" in line], "no *_created series"
    assert re.search(r'^managed_secrets_build_info\{python="[0-9.]+",version="[^"]+"\} 1\.0$', after, re.MULTILINE)

    # Deleting the object removes its series.
    client.CustomObjectsApi(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m")
    kube.eventually(
        lambda: f'namespace="{namespace}"' not in scrape(port), what="the deleted object's series to go away"
    )


def test_next_rotation_is_kept_while_a_rotation_fails(
    admin: client.ApiClient, namespace: str, operator: OperatorEnvironment, webhook: tuple[Endpoint, str]
) -> None:
    endpoint, ca = webhook
    created = {"n": 0}
    broken = {"set": False}

    def responder(call: Call) -> Reply:
        if call.document["step"] == "create":
            created["n"] += 1
            return value_reply({"key": f"key-{created['n']}".encode()})
        if call.document["step"] == "set" and broken["set"]:
            return Reply(status=503)
        return Reply()

    endpoint.responder = responder
    create(
        admin,
        namespace,
        managed_secret(
            "hook",
            type="External",
            external={"url": endpoint.url, "caBundle": ca, "timeoutSeconds": 5},
            rotation={"enabled": True, "interval": "1h"},
        ),
    )
    wait_ready(admin, namespace, "hook")
    port = operator.process.metrics_port
    ids = {"namespace": namespace, "name": "hook"}
    due = kube.eventually(
        lambda: lookup(scrape(port), "managed_secrets_next_rotation_timestamp_seconds", **ids), what="a due time"
    )

    broken["set"] = True
    annotate(admin, namespace, "hook", {"managedsecrets.io/rotate": "r1"})
    kube.eventually(
        lambda: condition(get_ms(admin, namespace, "hook"), "RotationFailed").get("status") == "True",
        what="RotationFailed",
    )
    failing = kube.eventually(
        lambda: (
            (t := scrape(port))
            and lookup(t, "managed_secrets_status_condition", condition="RotationFailed", status="True", **ids)
            == 1
            and t
        ),
        what="the failure in the metrics",
    )
    assert lookup(failing, "managed_secrets_next_rotation_timestamp_seconds", **ids) == due, "kept while failing"
    assert (lookup(failing, "managed_secrets_rotation_failures", **ids) or 0) >= 1
    assert lookup(failing, "managed_secrets_status_condition", condition="Rotating", status="True", **ids) == 1
    assert lookup(failing, "managed_secrets_status_condition", condition="Ready", status="True", **ids) == 1

    broken["set"] = False
    kube.eventually(lambda: get_ms(admin, namespace, "hook")["status"]["currentVersion"] == "v2", what="recovery")
    recovered = kube.eventually(
        lambda: (
            (t := scrape(port))
            and lookup(t, "managed_secrets_rotation_failures", **ids) == 0
            and (lookup(t, "managed_secrets_next_rotation_timestamp_seconds", **ids) or 0) > due
            and t
        ),
        what="the metrics to follow the finished rotation",
    )
    assert (
        lookup(recovered, "managed_secrets_status_condition", condition="RotationFailed", status="False", **ids)
        == 1
    )
    assert (lookup(recovered, "managed_secrets_last_rotation_timestamp_seconds", **ids) or 0) > 0


def test_liveness_probe_answers(operator: OperatorEnvironment) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.process.liveness_port}/healthz", timeout=5) as resp:
        assert resp.status == 200
