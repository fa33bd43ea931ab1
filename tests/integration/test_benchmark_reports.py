"""The reports benchmark runs end to end in a clone alone: it fills a log, times report
suggest against the same what-ifs computed a request at a time, and checks both pick the same
models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_reports_benchmark_times_suggest_beside_its_peer() -> None:
    run = subprocess.run(
        [sys.executable, "reports.py", "--requests", "2000", "--models", "3", "--repeats", "1"],
        cwd=ROOT / "benchmarks", env=dict(os.environ), capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "filled the log with 2000 answered auto requests over 3 models" in out
    for row in ("report suggest (arrays, as switchpoint runs)",
                "the same what-ifs a request at a time (peer)",
                "report cost, month, with savings"):
        found = re.search(re.escape(row) + r"\s+(\d+\.\d+)\s+(\d+\.\d+)", out)
        assert found and float(found.group(1)) > 0, out
        # (The cost report reads a row at a time: its peak may round to 0.0 MiB.)
        assert float(found.group(2)) > 0 or row.startswith("report cost"), out
    assert "both pick the same models for every request: yes" in out
