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
