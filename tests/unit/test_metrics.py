"""The metrics API, read back through the Prometheus text exposition (what a scraper sees)."""

from __future__ import annotations

import ast
import datetime as dt
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from managed_secrets import __version__
from managed_secrets import metrics as metrics_module
from managed_secrets.metrics import (
    OperatorMetrics,
    ReconcileResult,
    RotationResult,
    error_reason,
)
from managed_secrets.metrics_server import start_metrics_server
from managed_secrets.rotation.strategies.generic import GenerateStrategy
from managed_secrets.rotation.strategy import RotationStepFailed
from support.world import NAMESPACE, World, managed_secret


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
        "managed_secrets_status_condition",
        "managed_secrets_last_rotation_timestamp_seconds",
        "managed_secrets_rotation_failures",
        "managed_secrets_projections",
        "managed_secrets_reconcile",
        "managed_secrets_reconcile_duration_seconds",
        "managed_secrets_build_info",
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


# --- the series added for issue 16 ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "managed-secrets-operator"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERTS = CHART / "files" / "alerts.yaml"
DOCS = ROOT / "docs" / "metrics.md"
# A metric name in PromQL or in the docs; the histogram suffixes name the histogram's own series.
METRIC_NAME = re.compile(r"\bmanaged_secrets_[a-z_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
PER_OBJECT = (
    "managed_secrets_status_condition",
    "managed_secrets_next_rotation_timestamp_seconds",
    "managed_secrets_last_rotation_timestamp_seconds",
    "managed_secrets_rotation_failures",
)


def populated() -> OperatorMetrics:
    """An OperatorMetrics (with the runtime collectors) after every kind of observation it takes."""
    m = OperatorMetrics()
    m.observe_conditions(
        "demo", "db", {"Ready": "True", "Projected": "True", "Rotating": "False", "RotationFailed": "False"}
    )
    m.set_next_rotation("demo", "db", T0)
    m.set_last_rotation("demo", "db", T0 - dt.timedelta(days=1))
    m.record_rotation("generate", RotationResult.SUCCEEDED, 0.3, namespace="demo", name="db")
    m.record_rotation("generate", RotationResult.FAILED, namespace="demo", name="api", failures=2)
    m.observe_projection(0.01)
    m.observe_projection(0.02, ok=False)
    m.record_reconcile(ReconcileResult.SUCCEEDED, 0.05)
    m.count_store_error("reconcile", "StoreLost")
    m.count_api_error("reconcile", FakeApiError(500))
    m.set_admission_policy(True)
    m.track_membership(leader=lambda: True, shards=lambda: 4, replicas=lambda: 2)
    m.count_handover("claimed", 4)
    m.track_pending(lambda: 0)
    m.count_kms_request("kmsv2", "decrypt", True)
    m.set_key_service_up("kmsv2", 1)
    m.set_keyring_open(True)
    return m


def exported_names(text: str) -> set[str]:
    """Every series name an exposition offers: its TYPE lines (families without samples count) and samples,
    histogram series folded into the histogram's name."""
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    for family in text_string_to_metric_families(text):
        names.update(HISTOGRAM_SUFFIX.sub("", s.name) for s in family.samples)
    return names


def promql_names(text: str) -> set[str]:
    return {HISTOGRAM_SUFFIX.sub("", n) for n in METRIC_NAME.findall(text)}


def per_object(
    m: OperatorMetrics, namespace: str, name: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The object's samples, without its namespace and name labels."""
    out = {}
    for (series, labels), v in samples(m).items():
        found = dict(labels)
        if found.pop("namespace", None) == namespace and found.pop("name", None) == name:
            out[(series, tuple(sorted(found.items())))] = v
    return out


def test_status_condition_is_one_series_per_status_of_each_alerting_condition(m: OperatorMetrics) -> None:
    m.observe_conditions(
        "a",
        "db",
        {
            "Ready": "True",
            "Projected": "Unknown",
            "RotationFailed": "True",
            "Drifted": "False",
            "SourceWatched": "True",
        },
    )
    series = {
        labels: v
        for (name, labels), v in per_object(m, "a", "db").items()
        if name == "managed_secrets_status_condition"
    }
    assert series == {
        (("condition", "Ready"), ("status", "True")): 1.0,
        (("condition", "Ready"), ("status", "False")): 0.0,
        (("condition", "Projected"), ("status", "True")): 0.0,
        (("condition", "Projected"), ("status", "False")): 0.0,
        (("condition", "Projected"), ("status", "Unknown")): 1.0,
        (("condition", "RotationFailed"), ("status", "True")): 1.0,
        (("condition", "RotationFailed"), ("status", "False")): 0.0,
    }, "only the conditions alerts read, per object; the others are counted by with_condition"
    assert value(m, "managed_secrets_with_condition", condition="Drifted", status="False") == 1
    m.observe_conditions("a", "db", {"Ready": "False"})
    assert (
        value(m, "managed_secrets_status_condition", namespace="a", name="db", condition="Ready", status="False")
        == 1
    )
    assert (
        value(
            m, "managed_secrets_status_condition", namespace="a", name="db", condition="Projected", status="True"
        )
        is None
    )


def test_next_rotation_is_kept_while_rotation_is_enabled_and_no_due_time_is_known(m: OperatorMetrics) -> None:
    m.set_next_rotation("a", "db", T0)
    m.set_next_rotation("a", "db", None, keep=True, fallback=T0 + dt.timedelta(hours=5))
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="a", name="db") == T0.timestamp()
    m.set_next_rotation("a", "db", T0 + dt.timedelta(days=1), keep=True)  # a due time always wins
    assert (
        value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="a", name="db")
        == (T0 + dt.timedelta(days=1)).timestamp()
    )
    m.set_next_rotation("a", "db", None)  # rotation disabled
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="a", name="db") is None
    # Nothing published yet (a restart during a stuck rotation): the rotation's start stands in.
    m.set_next_rotation("a", "new", None, keep=True)
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="a", name="new") is None
    m.set_next_rotation("a", "new", None, keep=True, fallback=T0)
    assert value(m, "managed_secrets_next_rotation_timestamp_seconds", namespace="a", name="new") == T0.timestamp()
    with pytest.raises(ValueError, match="timezone-aware"):
        m.set_next_rotation("a", "db", None, keep=True, fallback=dt.datetime(2030, 1, 1))


def test_last_rotation_takes_a_datetime_or_the_status_text(m: OperatorMetrics) -> None:
    m.set_last_rotation("a", "db", "2030-01-02T03:04:05Z")
    assert value(m, "managed_secrets_last_rotation_timestamp_seconds", namespace="a", name="db") == T0.timestamp()
    m.set_last_rotation("a", "db", None)  # unknown: what is published stays
    m.set_last_rotation("a", "db", "not a time")
    m.set_last_rotation("a", "db", 1234)  # type: ignore[arg-type]  # a status field of another type
    assert value(m, "managed_secrets_last_rotation_timestamp_seconds", namespace="a", name="db") == T0.timestamp()
    later = T0 + dt.timedelta(days=30)
    m.set_last_rotation("a", "db", later)
    assert (
        value(m, "managed_secrets_last_rotation_timestamp_seconds", namespace="a", name="db") == later.timestamp()
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        m.set_last_rotation("a", "db", dt.datetime(2030, 1, 1))


def test_rotation_failures_count_consecutive_failures_per_object(m: OperatorMetrics) -> None:
    m.record_rotation("generate", RotationResult.FAILED, namespace="a", name="db")
    m.record_rotation("generate", RotationResult.FAILED, namespace="a", name="db")
    assert value(m, "managed_secrets_rotation_failures", namespace="a", name="db") == 2
    m.record_rotation(
        "generate", RotationResult.FAILED, namespace="a", name="db", failures=7
    )  # the persisted count
    m.record_rotation("generate", RotationResult.REFUSED, namespace="a", name="db")
    assert value(m, "managed_secrets_rotation_failures", namespace="a", name="db") == 7
    m.record_rotation("generate", RotationResult.SUCCEEDED, 1.0, namespace="a", name="db")
    assert value(m, "managed_secrets_rotation_failures", namespace="a", name="db") == 0
    m.record_rotation("generate", RotationResult.FAILED)  # without an object: only the counter
    assert value(m, "managed_secrets_rotations_total", strategy="generate", result="failed") == 4


def test_forget_removes_every_per_object_series(m: OperatorMetrics) -> None:
    for name in ("db", "api"):
        m.observe_conditions("a", name, {"Ready": "True", "RotationFailed": "True"})
        m.set_next_rotation("a", name, T0)
        m.set_last_rotation("a", name, T0)
        m.record_rotation("generate", RotationResult.FAILED, namespace="a", name=name)
    m.forget("a", "db")
    assert per_object(m, "a", "db") == {}
    assert per_object(m, "a", "api") != {}
    assert value(m, "managed_secrets_objects") == 1
    assert value(m, "managed_secrets_with_condition", condition="RotationFailed", status="True") == 1


def test_ten_thousand_objects_stay_small_and_go_away_with_forget(m: OperatorMetrics) -> None:
    conditions = {"Ready": "True", "Projected": "True", "Rotating": "False", "RotationFailed": "False"}
    keys = [(f"ns-{i % 50}", f"secret-{i:05d}") for i in range(10_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for namespace, name in keys:
            m.observe_conditions(namespace, name, conditions)
            m.set_next_rotation(namespace, name, T0)
            m.set_last_rotation(namespace, name, T0)
            m.record_rotation("generate", "succeeded", namespace=namespace, name=name)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 8_000_000, f"{grown} bytes for 10,000 objects"
    text = m.exposition().decode()
    assert text.count("\nmanaged_secrets_status_condition{") == 80_000
    assert text.count("\nmanaged_secrets_next_rotation_timestamp_seconds{") == 10_000
    assert "\nmanaged_secrets_objects 10000.0\n" in text
    for namespace, name in keys:
        m.forget(namespace, name)
    assert m.tracked_objects() == 0
    text = m.exposition().decode()
    for family in PER_OBJECT:
        assert f"\n{family}{{" not in text, family
        assert f"# TYPE {family} gauge" in text, "an empty family still says what it is"


def test_reconciles_are_counted_and_timed_by_result(m: OperatorMetrics) -> None:
    with m.time_reconcile() as timed:
        timed.ready("True")
    with m.time_reconcile() as timed:
        timed.ready("False")
    with m.time_reconcile() as timed:
        timed.ready(None)
    with pytest.raises(RuntimeError), m.time_reconcile():
        raise RuntimeError("boom")
    for result in ReconcileResult:
        assert value(m, "managed_secrets_reconcile_total", result=result.value) == 1, result
    assert value(m, "managed_secrets_reconcile_duration_seconds_count") == 4


def test_projections_are_counted_by_result(m: OperatorMetrics) -> None:
    with m.time_projection():
        pass
    with pytest.raises(KeyError), m.time_projection():
        raise KeyError("x")
    assert value(m, "managed_secrets_projections_total", result="succeeded") == 1
    assert value(m, "managed_secrets_projections_total", result="failed") == 1


def test_build_info_names_the_version_and_python(m: OperatorMetrics) -> None:
    assert value(m, "managed_secrets_build_info", version=__version__, python=platform.python_version()) == 1


def test_no_created_series_are_exported() -> None:
    m = populated()
    text = m.exposition().decode()
    assert "managed_secrets_rotations_total" in text
    assert not [line for line in text.splitlines() if "_created" in line]


def test_label_values_are_escaped(m: OperatorMetrics) -> None:
    odd = 'a"b\\c\nd'
    m.observe_conditions("ns", odd, {"Ready": "True"})
    assert (
        value(m, "managed_secrets_status_condition", namespace="ns", name=odd, condition="Ready", status="True")
        == 1
    )


def test_http_server_gzips_when_asked_and_serves_only_metrics(m: OperatorMetrics) -> None:
    m.observe_conditions("a", "db", {"Ready": "True"})
    server = start_metrics_server(m, port=0, addr="127.0.0.1")
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/metrics", headers={"Accept-Encoding": "gzip"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - an http URL built here
            assert resp.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(resp.read()).decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        server.close()
    assert 'managed_secrets_status_condition{condition="Ready",name="db",namespace="a",status="True"} 1.0' in body


# --- through the service: what a failing rotation leaves ----------------------------------------------------


def test_a_failing_scheduled_rotation_keeps_its_due_time(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = [0]

    def test(self: GenerateStrategy, ctx: object, pending: object) -> None:
        if failing[0]:
            raise RotationStepFailed("test", "LoginFailed", "the new credentials were refused")

    monkeypatch.setattr(GenerateStrategy, "test", test)
    monkeypatch.setattr(GenerateStrategy, "local_only", False)  # each step is persisted
    world = World()
    world.apply(managed_secret("db", rotation={"enabled": True, "interval": "1h"}))
    world.reconcile("db")
    m = world.metrics

    def series(name: str, **labels: str) -> float | None:
        return value(m, name, namespace=NAMESPACE, name="db", **labels)

    due = series("managed_secrets_next_rotation_timestamp_seconds")
    assert due == (world.clock.now() + dt.timedelta(hours=1)).timestamp()
    assert series("managed_secrets_status_condition", condition="Ready", status="True") == 1
    assert series("managed_secrets_last_rotation_timestamp_seconds") is None, "the first value is no rotation"
    assert value(m, "managed_secrets_reconcile_total", result="succeeded") == 1

    failing[0] = 1
    world.clock.advance(seconds=3601)
    world.reconcile("db")
    assert world.condition("db", "RotationFailed")["status"] == "True"
    assert series("managed_secrets_next_rotation_timestamp_seconds") == due, "kept while the rotation fails"
    assert series("managed_secrets_status_condition", condition="RotationFailed", status="True") == 1
    assert series("managed_secrets_status_condition", condition="Rotating", status="True") == 1
    assert series("managed_secrets_rotation_failures") == 1

    # A restarted operator has published nothing yet: the stuck rotation's start stands in for the due time.
    restarted = World(store=world.store, keyring=world.keyring, cluster=world.cluster, clock=world.clock)
    world.clock.advance(seconds=3600)
    restarted.reconcile("db")
    started = world.record("db").rotation
    assert started is not None
    assert value(
        restarted.metrics, "managed_secrets_next_rotation_timestamp_seconds", namespace=NAMESPACE, name="db"
    ) == (started.started.timestamp())
    assert value(restarted.metrics, "managed_secrets_rotation_failures", namespace=NAMESPACE, name="db") == 2
    # Conditions this pass did not touch are still counted (RotationFailed stays True between attempts).
    assert (
        value(
            restarted.metrics,
            "managed_secrets_status_condition",
            namespace=NAMESPACE,
            name="db",
            condition="RotationFailed",
            status="True",
        )
        == 1
    )

    failing[0] = 0
    world.clock.advance(seconds=7200)
    world.reconcile("db")
    assert world.status("db")["currentVersion"] == "v2"
    assert series("managed_secrets_next_rotation_timestamp_seconds") > due  # type: ignore[operator]
    assert series("managed_secrets_rotation_failures") == 0
    assert (
        series("managed_secrets_last_rotation_timestamp_seconds") == world.record("db").current.created.timestamp()
    )  # type: ignore[union-attr]

    world.edit("db", rotation={"enabled": False})
    world.reconcile("db")
    assert series("managed_secrets_next_rotation_timestamp_seconds") is None, "no schedule, no due time"
    world.delete("db")
    assert per_object(m, NAMESPACE, "db") == {}


# --- docs/metrics.md names every series -----------------------------------------------------------------


def test_docs_name_every_exported_series_and_nothing_else() -> None:
    docs = DOCS.read_text()
    exported = exported_names(populated().exposition().decode())
    assert {
        "managed_secrets_status_condition",
        "managed_secrets_build_info",
        "process_resident_memory_bytes",
    } <= exported
    undocumented = sorted(n for n in exported if f"`{n}`" not in docs)
    assert not undocumented, f"docs/metrics.md does not describe {undocumented}"
    stale = sorted(promql_names(docs) - exported)
    assert not stale, f"docs/metrics.md names series the operator does not export: {stale}"


# --- the dashboard and the alerts ---------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels") or [])

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_dashboard_panel_has_a_datasource_and_a_query() -> None:
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel.get("targets") or []
        assert targets and all(t.get("expr") and t.get("datasource") for t in targets), panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "rotation",
        "overdue",
        "projection",
        "store",
        "api",
        "reconcile",
        "key service",
        "leader",
        "memory",
    ):
        assert topic in titles, topic
    rows = [p for p in dashboard_panels() if p["type"] == "row"]
    assert all(not p.get("targets") for p in rows)


def test_dashboard_and_alerts_use_only_exported_series() -> None:
    exported = exported_names(populated().exposition().decode())
    used = promql_names(DASHBOARD.read_text())
    used_by_alerts = promql_names("\n".join(r["expr"] for r in alert_rules()))
    assert {
        "managed_secrets_status_condition",
        "managed_secrets_next_rotation_timestamp_seconds",
    } <= used_by_alerts
    assert not sorted((used | used_by_alerts) - exported), "names the operator does not export"
    assert "process_resident_memory_bytes" in DASHBOARD.read_text()


def test_every_alert_is_described_and_has_a_runbook_section() -> None:
    docs = DOCS.read_text()
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "ManagedSecretRotationFailing",
        "ManagedSecretRotationOverdue",
        "ManagedSecretProjectionFailing",
        "ManagedSecretsStoreErrors",
        "ManagedSecretsAPIErrors",
        "ManagedSecretsKeyServiceDown",
        "ManagedSecretsOperatorDown",
        "ManagedSecretsNoLeader",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert f'"{rule["alert"]}"' in rule["annotations"]["description"], "names its runbook section"
        assert f"### {rule['alert']}\n" in docs, f"docs/metrics.md has no section for {rule['alert']}"
        assert " ".join(rule["expr"].split()) in " ".join(docs.split()), (
            f"docs/metrics.md shows {rule['alert']}'s expr"
        )


# --- the chart renders them on request -----------------------------------------------------------------


def helm_binary() -> str:
    found = os.environ.get("MSO_HELM") or shutil.which("helm")
    if found:
        return found
    cache = Path(
        os.environ.get("MSO_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "managed-secrets-operator"
    )
    built = sorted(cache.glob("bin/*/helm"))
    if not built:
        pytest.fail("no helm binary: run hack/build-controlplane.sh (make unit does)")
    return str(built[-1])


def render(*options: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [helm_binary(), "template", "r", str(CHART), "-n", "mso", "--kube-version=1.35.0", *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


MINE = {"alert": "Mine", "expr": "vector(1)", "for": "1m"}


def test_chart_renders_the_dashboard_and_the_rules_only_when_asked() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render()}
    assert ("ConfigMap", "r-managed-secrets-operator-dashboard") not in kinds
    assert not [k for k, _name in kinds if k == "PrometheusRule"]

    docs = render(
        "--set", "metrics.dashboard.enabled=true",
        "--set", "metrics.dashboard.namespace=monitoring",
        "--set", "metrics.dashboard.annotations.grafana_folder=Secrets",
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "metrics.prometheusRule.labels.release=prom",
        "--set", "metrics.prometheusRule.runbookBaseURL=https://example.com/docs/metrics.md/",
        "--set-json", f"metrics.prometheusRule.additionalRules={json.dumps([MINE])}",
    )  # fmt: skip
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Secrets"}
    (content,) = dashboard["data"].values()
    assert json.loads(content) == json.loads(DASHBOARD.read_text())

    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "mso" and rule["metadata"]["labels"]["release"] == "prom"
    shipped, extra = rule["spec"]["groups"]
    assert [r["expr"] for r in shipped["rules"]] == [r["expr"] for r in alert_rules()]
    assert [r["alert"] for r in shipped["rules"]] == [r["alert"] for r in alert_rules()]
    assert shipped["rules"][0]["annotations"]["runbook_url"] == (
        "https://example.com/docs/metrics.md#managedsecretrotationfailing"
    )
    assert extra["rules"] == [MINE]

    (plain,) = [d for d in render("--set", "metrics.prometheusRule.enabled=true") if d["kind"] == "PrometheusRule"]
    assert plain["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], "the file as it is"
