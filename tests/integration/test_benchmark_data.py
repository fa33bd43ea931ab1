"""A benchmark that needs the full record sets, run without them, exits with a message saying
where it looked and how to point it at them, not with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["quality.py", "validation.py", "latency.py"])
def test_a_benchmark_without_its_records_says_how_to_find_them(tmp_path: Path,
                                                                script: str) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    env = {**os.environ, "SWITCHPOINT_DATA": str(empty),
           "SWITCHPOINT_BENCH_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, script], cwd=ROOT / "benchmarks", env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    assert f"{empty / 'routerbench-3task.jsonl'} not found" in run.stderr
    assert "set SWITCHPOINT_DATA to the folder that holds them" in run.stderr
