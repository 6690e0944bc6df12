"""/metrics and the liveness probe of the running operator, and metrics that move with a rotation."""

from __future__ import annotations

import re
import urllib.request

import pytest
from kubernetes import client

from support import kube
from support.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorEnvironment,
    annotate,
    get_ms,
    managed_secret,
    wait_ready,
)

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, series: str, **labels: str) -> float:
    """The value of one series (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(series + "{") and not line.startswith(series + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


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


def test_liveness_probe_answers(operator: OperatorEnvironment) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.process.liveness_port}/healthz", timeout=5) as resp:
        assert resp.status == 200
