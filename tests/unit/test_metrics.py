"""The metrics API, read back through the Prometheus text exposition (what a scraper sees)."""

from __future__ import annotations

import ast
import datetime as dt
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from managed_secrets import metrics as metrics_module
from managed_secrets.metrics import OperatorMetrics, RotationResult, error_reason, start_metrics_server


def samples(m: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (sample name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: OperatorMetrics, sample: str, **labels: str) -> float | None:
    return samples(m).get((sample, tuple(sorted(labels.items()))))


@pytest.fixture
def m() -> OperatorMetrics:
    return OperatorMetrics(runtime_collectors=False)


def test_condition_gauge_counts_each_object_once(m: OperatorMetrics) -> None:
    m.observe_conditions("a", "one", {"Ready": "True", "Projected": "True"})
    m.observe_conditions("a", "two", {"Ready": "True"})
    m.observe_conditions("b", "one", {"Ready": "False"})
    assert value(m, "managed_secrets_with_condition", condition="Ready", status="True") == 2
    assert value(m, "managed_secrets_with_condition", condition="Ready", status="False") == 1
    assert value(m, "managed_secrets_with_condition", condition="Projected", status="True") == 1

    m.observe_conditions("a", "two", {"Ready": "False"})  # a transition moves the object between series
    m.observe_conditions("a", "two", {"Ready": "False"})  # repeating the same status changes nothing
    assert value(m, "managed_secrets_with_condition", condition="Ready", status="True") == 1
    assert value(m, "managed_secrets_with_condition", condition="Ready", status="False") == 2

    m.forget("a", "one")
    m.forget("a", "never-seen")  # forgetting an unknown object is harmless
    assert value(m, "managed_secrets_with_condition", condition="Ready", status="True") == 0
    assert value(m, "managed_secrets_with_condition", condition="Projected", status="True") == 0
    assert value(m, "managed_secrets_with_condition", condition="Ready", status="False") == 2


def test_rotations_are_counted_by_strategy_and_result(m: OperatorMetrics) -> None:
    m.record_rotation("Generic", RotationResult.SUCCEEDED, 1.5)
    m.record_rotation("Generic", RotationResult.FAILED)
    m.record_rotation("Database", "refused")
    assert value(m, "managed_secrets_rotations_total", strategy="Generic", result="succeeded") == 1
    assert value(m, "managed_secrets_rotations_total", strategy="Generic", result="failed") == 1
    assert value(m, "managed_secrets_rotations_total", strategy="Database", result="refused") == 1
    # Only attempts with a duration go into the histogram.
    assert value(m, "managed_secrets_rotation_duration_seconds_count", strategy="Generic") == 1
    assert value(m, "managed_secrets_rotation_duration_seconds_sum", strategy="Generic") == 1.5
    assert value(m, "managed_secrets_rotation_duration_seconds_bucket", strategy="Generic", le="2.5") == 1
    assert value(m, "managed_secrets_rotation_duration_seconds_bucket", strategy="Generic", le="1.0") == 0


def test_time_rotation_records_success_and_failure(m: OperatorMetrics) -> None:
    with m.time_rotation("SSHKey"):
        pass
    with pytest.raises(RuntimeError), m.time_rotation("SSHKey"):
        raise RuntimeError("boom")
    assert value(m, "managed_secrets_rotations_total", strategy="SSHKey", result="succeeded") == 1
    assert value(m, "managed_secrets_rotations_total", strategy="SSHKey", result="failed") == 1
    assert value(m, "managed_secrets_rotation_duration_seconds_count", strategy="SSHKey") == 1


def test_next_rotation_timestamp_can_be_set_and_removed(m: OperatorMetrics) -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    m.set_next_rotation("demo", "db", when)
    m.set_next_rotation("demo", "api", when + dt.timedelta(hours=1))
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="demo", name="db") == (
        when.timestamp()
    )
    m.remove_next_rotation("demo", "db")
    m.remove_next_rotation("demo", "db")  # removing twice is harmless
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="demo", name="db") is None
    m.set_next_rotation("demo", "api", None)  # None = rotation disabled: the series goes away
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="demo", name="api") is None
    with pytest.raises(ValueError, match="timezone-aware"):
        m.set_next_rotation("demo", "db", dt.datetime(2030, 1, 1))  # a naive time


def test_forget_also_removes_the_next_rotation_series(m: OperatorMetrics) -> None:
    m.observe_conditions("demo", "db", {"Ready": "True"})
    m.set_next_rotation("demo", "db", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    m.forget("demo", "db")
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="demo", name="db") is None


def test_projection_duration_is_recorded_even_when_it_fails(m: OperatorMetrics) -> None:
    m.observe_projection(0.02)
    with pytest.raises(KeyError), m.time_projection():
        raise KeyError("x")
    assert value(m, "managed_secrets_projection_duration_seconds_count") == 2
    assert value(m, "managed_secrets_projection_duration_seconds_bucket", le="0.025") == 2


class FakeApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_errors_are_counted_by_operation_and_reason(m: OperatorMetrics) -> None:
    m.count_store_error("write", "Forbidden")
    m.count_store_error("write", FakeApiError(403))
    m.count_api_error("create_secret", FakeApiError(409))
    m.count_api_error("patch_status", TimeoutError())
    assert value(m, "managed_secrets_store_errors_total", operation="write", reason="Forbidden") == 1
    assert value(m, "managed_secrets_store_errors_total", operation="write", reason="403") == 1
    assert value(m, "managed_secrets_api_errors_total", operation="create_secret", reason="409") == 1
    assert value(m, "managed_secrets_api_errors_total", operation="patch_status", reason="TimeoutError") == 1


def test_error_reason() -> None:
    assert error_reason(FakeApiError(404)) == "404"
    assert error_reason(ValueError("secret text never becomes a label")) == "ValueError"


def test_every_family_has_help_text_and_the_prefix(m: OperatorMetrics) -> None:
    families = list(text_string_to_metric_families(m.exposition().decode()))
    names = {f.name for f in families}
    assert {
        "managed_secrets_with_condition",
        "managed_secrets_rotations",
        "managed_secrets_rotation_duration_seconds",
        "managed_secrets_projection_duration_seconds",
        "managed_secrets_next_rotation_timestamp_seconds",
        "managed_secrets_store_errors",
        "managed_secrets_api_errors",
    } <= names
    for family in families:
        assert family.name.startswith("managed_secrets_")
        assert family.documentation


def test_instances_do_not_share_state() -> None:
    one, two = OperatorMetrics(), OperatorMetrics()  # no "duplicated timeseries" error either
    one.record_rotation("Generic", "succeeded")
    assert value(one, "managed_secrets_rotations_total", strategy="Generic", result="succeeded") == 1
    assert value(two, "managed_secrets_rotations_total", strategy="Generic", result="succeeded") is None
    # The default instance also exposes the process collectors (memory, CPU, open file descriptors).
    assert b"process_resident_memory_bytes" in one.exposition()


def test_http_server_serves_the_exposition(m: OperatorMetrics) -> None:
    m.record_rotation("External", "succeeded", 3.0)
    server = start_metrics_server(m, port=0, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
            content_type = resp.headers["Content-Type"]
    finally:
        server.close()
    assert content_type.startswith("text/plain")
    assert 'managed_secrets_rotations_total{result="succeeded",strategy="External"} 1.0' in body


def test_module_knows_nothing_of_kopf_or_kubernetes() -> None:
    tree = ast.parse(Path(metrics_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"kopf", "kubernetes"}
