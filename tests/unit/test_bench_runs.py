"""The benchmark suite still runs (it measures speed; this only keeps it from rotting)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_prints_every_row_with_a_ratio() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [line for line in out.splitlines() if " ratio " in line]
    assert len(rows) == 5
    assert all(line.rstrip().endswith("x") for line in rows)


def test_cluster_benchmark_arguments_size_the_run() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.cluster import FULL, QUICK, parse_args

    assert parse_args([])[0] == FULL
    assert FULL.replicas == QUICK.replicas == 1
    sizes, _ = parse_args(["--quick", "--replicas", "3", "--objects", "10"])
    assert (sizes.replicas, sizes.objects, sizes.rotations) == (3, 10, min(QUICK.rotations, 10))
    with pytest.raises(SystemExit):
        parse_args(["--replicas", "0"])


def test_cluster_benchmark_kms_option_and_its_figures(tmp_path: Path) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from collections import Counter

    from bench.cluster import NO_KMS, Figure, by_operation, calls_delta, figure_line, parse_args
    from bench.probes import kms_requests, read_plugin_stats

    from managed_secrets.metrics import OperatorMetrics

    assert parse_args([])[1].kms == "none"
    assert parse_args(["--kms", "kmsv2"])[1].kms == "kmsv2"
    assert parse_args(["--quick", "--kms", "pkcs11"])[1].kms == "pkcs11"
    with pytest.raises(SystemExit):
        parse_args(["--kms", "vault"])

    # The operator's counter, as its /metrics serves it, read by operation and result.
    metrics = OperatorMetrics(runtime_collectors=False)
    assert kms_requests(metrics.exposition().decode()) == Counter()
    for operation, ok in (("status", True), ("status", True), ("decrypt", True), ("encrypt", False)):
        metrics.count_kms_request("kmsv2", operation, ok)
    calls = kms_requests(metrics.exposition().decode())
    assert calls == Counter({("status", "ok"): 2, ("decrypt", "ok"): 1, ("encrypt", "error"): 1})
    assert by_operation(calls) == "status 2, encrypt 1 (1 not ok), decrypt 1"

    # The plugin's stats file, keyed the same way; a stretch is the difference of two readings.
    stats = tmp_path / "stats.json"
    assert read_plugin_stats(stats) == Counter()
    stats.write_text('{"Status": {"ok": 3, "unhealthy": 1}, "Decrypt": {"ok": 2}}\n')
    before = read_plugin_stats(stats)
    assert before == Counter({("status", "ok"): 3, ("status", "unhealthy"): 1, ("decrypt", "ok"): 2})
    stats.write_text('{"Status": {"ok": 5, "unhealthy": 1}, "Decrypt": {"ok": 3}, "Encrypt": {"ok": 1}}\n')
    delta = calls_delta(read_plugin_stats(stats), before)
    assert delta == Counter({("status", "ok"): 2, ("decrypt", "ok"): 1, ("encrypt", "ok"): 1})
    assert by_operation(delta) == "status 2, encrypt 1, decrypt 1"

    # Beside the run without a key service (0 calls: no ratio), and beside the one decrypt expected.
    line = figure_line(Figure("7", "operator KMS calls per cold start", 3, "calls", NO_KMS, 0, "status 2"))
    assert "3 calls" in line and "0 calls" in line and "ratio       -" in line
    assert line.endswith("(status 2)")
    line = figure_line(Figure("7", "operator KMS decrypts per cold start", 1, "calls", "the seal", 1))
    assert line.endswith("ratio    1.00x")


def test_ssh_hosts_benchmark_runs_against_real_sshd() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ssh_hosts", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("rotation, concurrency")]
    assert len(rows) == 2 and all(line.rstrip().endswith("x") for line in rows)
    assert "SSH logins per rotation: 6" in out
