"""The online-learning benchmark runs end to end on the in-repo sample of RouterBench records
(the real files are not needed): it prints its checkpoint table, the share of the gap closed,
the lowest checkpoint against the static router (with its bootstrap interval), the
within-task figures, the traffic line and the two-tenant table, with every figure in range."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.head_start import HeadStart

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "routerbench-sample.jsonl"


def _online(*args: str) -> Callable[[Path], list[str]]:
    """The command ``online.py ARGS`` on the sample records, run in a folder of its own (with
    its embedding cache): a head start, as it keeps the CPU busy for seconds (see
    tests/head_start.py)."""
    def command(workdir: Path) -> list[str]:
        data = workdir / "data"
        data.mkdir()
        (data / "routerbench-3task.jsonl").symlink_to(SAMPLE)
        return ["env", f"SWITCHPOINT_DATA={data}", f"SWITCHPOINT_BENCH_CACHE={workdir / 'cache'}",
                sys.executable, str(ROOT / "benchmarks" / "online.py"),
                "--datasets", "routerbench-3task", *args]
    return command


def _printed(head_start: HeadStart) -> str:
    """What the benchmark printed (it must succeed)."""
    run = head_start.result(timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.head_start.with_args(_online("--seeds", "2", "--kmeans-seeds", "2", "--tenants"))
def test_the_online_benchmark_prints_its_table(head_start: HeadStart) -> None:
    out = _printed(head_start)
    assert ("2 exploration seeds on each of 2 k-means seeds; outcomes give the served model's "
            "quality and its answer's cost") in out
    progress = head_start.result().stderr  # a line as each run ends, for a run of minutes
    assert re.findall(r"routerbench-3task: run (\d) of 4 \(k-means seed (\d), exploration seed "
                      r"(\d)\) learned; \d+ s so far", progress) == [
        ("1", "0", "0"), ("2", "0", "1"), ("3", "1", "0"), ("4", "1", "1")]
    rows = re.findall(r"^\s+(\d+)\s+(0\.\d{4})\s+(0\.\d{4})\s+(0\.\d{4})\s+(0\.\d{4})\s+"
                      r"(0\.\d{4})\s+(0\.\d{4})$", out, re.MULTILINE)
    assert rows, out  # events, static, two k-means seeds, mean, all labels, full
    events, static, *online, mean, labelled, full = rows[-1]
    assert int(events) == 171  # the stream is the 90% of train after the first tenth
    assert abs(float(mean) - (float(online[0]) + float(online[1])) / 2) <= 1e-4
    assert float(full) > float(static)  # the full fit beats a fit on 19 prompts
    # Every model's label on the whole stream teaches more than one model's outcome per prompt.
    assert float(labelled) > float(static)
    assert re.search(r"closed at the end: -?\d+% of the gap full - static \+0\.\d{4}", out)
    assert re.search(r"lowest checkpoint minus the static router it learned from: [-+]0\.\d{4} "
                     r"\(any run\), [-+]0\.\d{4} \(the mean over runs\)", out)
    # The lowest single checkpoint comes with what the test set's sampling alone makes of it.
    lowest = re.search(r"the lowest checkpoint of any run \(k-means seed [01], exploration seed "
                       r"[01], \d+ events\), ([-+]0\.\d{4}), .* 95% interval \[([-+]0\.\d{4}), "
                       r"([-+]0\.\d{4})\]", out)
    assert lowest, out
    family = re.search(r"as the lowest of (\d+) run checkpoints, family-wise \(Bonferroni\): "
                       r"\[([-+]0\.\d{4}), ([-+]0\.\d{4})\]; the same events with every "
                       r"model's label: [-+]0\.\d{4}", out)
    assert family, out
    assert int(family.group(1)) == 4  # 2 x 2 runs, one checkpoint each
    assert float(family.group(2)) <= float(lowest.group(2))  # wider than the run's own
    low, high = float(lowest.group(2)), float(lowest.group(3))
    assert low <= high
    traffic = re.search(r"learning router \(exploring 30%\) quality (0\.\d+), .* static router "
                        r"on the same prompts (0\.\d+),", out)
    assert traffic, out
    # Spending each task at the best rate for the whole set can only do better than one λ for
    # all: every router's within-task figure is at least its routed AIQ (in brackets).
    within = re.search(r"static-10% (0\.\d{4}) \((0\.\d{4})\), online at the end (0\.\d{4}) "
                       r"\((0\.\d{4})\), full 100% (0\.\d{4}) \((0\.\d{4})\)", out)
    assert within, out
    figures = [float(v) for v in within.groups()]
    for allocated, routed in zip(figures[::2], figures[1::2], strict=True):
        assert allocated >= routed - 1e-4, out
    assert abs(figures[1] - float(static)) <= 1e-4 and abs(figures[5] - float(full)) <= 1e-4
    assert "two tenants by task mix" in out and "tenant-a" in out and "tenant-b" in out


@pytest.mark.head_start.with_args(_online("--seeds", "1", "--kmeans-seeds", "1",
                                         "--quality-only"))
def test_with_quality_only_the_outcomes_do_not_say_what_answers_cost(
        head_start: HeadStart) -> None:
    out = _printed(head_start)
    assert "outcomes give the served model's quality only" in out
    assert re.search(r"closed at the end: -?\d+% of the gap", out), out
