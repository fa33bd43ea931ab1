"""The checkpoint benchmark runs end to end in a clone alone (random prompt vectors when the
records are absent): it fills a feedback log, times both kinds of start, and checks that the
checkpoint's start learned exactly what the whole log's replay did."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkpoint_benchmark_times_both_starts(tmp_path: Path) -> None:
    env = {**os.environ, "SWITCHPOINT_DATA": str(tmp_path / "no-records"),
           "SWITCHPOINT_BENCH_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "checkpoint.py", "--events", "300", "--tail", "30", "--repeats", "1"],
        cwd=ROOT / "benchmarks", env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "filled the feedback log with 300 outcomes" in out and "random vectors" in out
    full = re.search(r"whole log replayed \(300 events\)\s+(\d+\.\d+)", out)
    taken = re.search(r"checkpoint \+ 30 events after it\s+(\d+\.\d+)", out)
    assert full and taken, out
    assert float(full.group(1)) > 0 and float(taken.group(1)) > 0
    assert re.search(r"checkpoint: \d+\.\d MB, written at the graceful stop", out)
    assert "the learned state is identical" in out
    assert re.search(r"feedback waits for a checkpoint's snapshot only, not for the writing: "
                     r"\d+ ms \(median of \d+ checkpoints\)", out)
