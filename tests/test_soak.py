"""The soak script's short version: 60 s, 200 viewers, a camera flapping every 20 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_one_minute_soak_has_no_errors(tmp_path: Path) -> None:
    report_file = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            "--duration",
            "60",
            "--viewers",
            "200",
            "--flap",
            "20",
            "--out",
            str(report_file),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(result.stdout.splitlines()[-1] if result.stdout else result.stderr[-2000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["errors"] == 0 and report["invalid_frames_at_viewers"] == 0
    assert report["camera_connects"] >= 2  # it flapped and came back
    assert report["frames_delivered_to_viewers"] > 0
