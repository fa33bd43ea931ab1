"""The benchmark of a model without a profile learned from its own outcomes runs end to end on
the in-repo sample of RouterBench records: a row per checkpoint with the router without the
model, with it, and fully retrained, the difference with its bootstrap interval."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "routerbench-sample.jsonl"


def test_the_unprofiled_benchmark_prints_a_row_per_checkpoint(tmp_path: Path,
                                                            bench_cache: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "routerbench-3task.jsonl").symlink_to(SAMPLE)
    env = {**os.environ, "SWITCHPOINT_DATA": str(data),
           "SWITCHPOINT_BENCH_CACHE": str(bench_cache)}
    model = "mistralai/mixtral-8x7b-chat"
    run = subprocess.run(
        [sys.executable, "unprofiled.py", "--models", model], cwd=ROOT / "benchmarks",
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    number = r"(0\.\d{4})"
    rows = re.findall(rf"^routerbench-3task\s+{re.escape(model)}\s+(\d+)\s+(\d+)\s+{number}\s+"
                      rf"{number}\s+{number}\s+([+-]\d\.\d{{4}})\s+\[([+-]\d\.\d{{4}}), "
                      rf"([+-]\d\.\d{{4}})\]", run.stdout, re.MULTILINE)
    assert len(rows) >= 2, run.stdout
    outcomes = [int(r[1]) for r in rows]
    assert outcomes == sorted(outcomes) and outcomes[-1] > 0  # exploration reaches it
    for events, _, without, with_, _, diff, low, high in rows:
        assert int(events) > 0
        assert abs(float(with_) - float(without) - float(diff)) < 2e-4
        assert float(low) <= float(high)
