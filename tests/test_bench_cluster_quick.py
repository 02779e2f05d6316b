"""The cluster benchmark's smoke run (``bench/cluster.py --quick``): one daemon and two on
real Redis and PostgreSQL, and one failover, end to end (speed never fails it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cluster_benchmark_quick_run_reports_numbers(tmp_path: Path) -> None:
    servers.redis_binary()  # fails, or skips where allowed, without the servers
    if servers.postgres_bindir() is None:
        servers.missing("PostgreSQL")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cluster.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    modes = {run["mode"]: run for run in report["runs"]}
    assert set(modes) == {"one", "two"}, result.stdout[-3000:]
    for run in modes.values():
        assert "error" not in run, run
        assert run["camera_frames"] > 0 and run["share_worst"] is not None
    assert modes["two"]["redis_added_ms"]
    assert [r["signal"] for r in report["failover"]] == ["SIGTERM"]
    assert "gap_s" in report["failover"][0], report["failover"]
    assert (tmp_path / "results.md").read_text().startswith("# CamProxy cluster benchmark")
