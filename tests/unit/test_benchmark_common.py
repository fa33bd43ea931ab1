"""The benchmarks' shared timing rules: a call timed alone, the median of repeated calls with
their spread, and the nearest-rank percentile every latency table reads its p99 by."""

from __future__ import annotations

import importlib
import random
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def common() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("_common")  # the benchmarks' folder, not a package
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_a_spread_is_the_median_the_least_and_the_most(common: ModuleType) -> None:
    spread = common.Spread.of(iter([3.0, 1.0, 10.0, 2.0]))
    assert (spread.median, spread.least, spread.most) == (2.5, 1.0, 10.0)
    with pytest.raises(ValueError, match="at least once"):
        common.Spread.of([])


def test_timed_gives_the_seconds_of_one_call_and_what_it_returned(common: ModuleType) -> None:
    def nap() -> str:
        time.sleep(0.01)
        return "done"

    seconds, result = common.timed(nap)
    assert result == "done"
    assert seconds >= 0.01


def test_median_time_calls_the_function_repeats_times_and_keeps_the_last_answer(
        common: ModuleType) -> None:
    naps = iter([0.02, 0.0, 0.01])
    calls: list[int] = []

    def nap() -> int:
        time.sleep(next(naps))
        calls.append(len(calls))
        return len(calls)

    timing = common.median_time(nap, 3)
    assert calls == [0, 1, 2]
    assert timing.result == 3
    spread = timing.seconds
    assert 0.0 <= spread.least <= spread.median <= spread.most
    assert spread.median >= 0.01 and spread.most >= 0.02
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        common.median_time(nap, 0)


def test_percentile_reads_the_nearest_rank_as_the_tables_always_did(
        common: ModuleType) -> None:
    rng = random.Random(0)
    for n in (1, 2, 3, 10, 99, 100, 101, 257):
        values = [rng.random() for _ in range(n)]
        ordered = sorted(values)
        # the rule the latency tables read their p99 by, and the feedback table's (below)
        assert common.percentile(values, 0.99) == ordered[min(n - 1, round(0.99 * (n - 1)))]
        assert common.percentile(values, 0.99, round_down=True) == \
            ordered[int(0.99 * (n - 1))]
    eleven = [float(v) for v in range(10, -1, -1)]  # 0..10, unsorted: position 9.7
    assert common.percentile(eleven, 0.97) == 10.0
    assert common.percentile(eleven, 0.97, round_down=True) == 9.0
    assert common.percentile(eleven, 0.0) == 0.0 and common.percentile(eleven, 1.0) == 10.0
    with pytest.raises(ValueError, match="no values"):
        common.percentile([], 0.5)
    with pytest.raises(ValueError, match="from 0 to 1, got 99"):
        common.percentile(eleven, 99)
