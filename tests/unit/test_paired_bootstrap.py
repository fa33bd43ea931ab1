"""The benchmarks' paired bootstrap of an AIQ difference: a router against itself differs by
nothing on every resample, and against another router the interval holds the difference
measured on the whole test set."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.records import load_records

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "routerbench-sample.jsonl"


@pytest.fixture(scope="module")
def common() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        _common = importlib.import_module("_common")  # the benchmarks' folder, not a package
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return _common


def test_the_interval_holds_the_measured_difference(common: ModuleType) -> None:
    rs = load_records(SAMPLE)
    rs.embeddings = np.random.default_rng(0).normal(size=(len(rs), 16)).astype(np.float32)
    rs.embeddings /= np.linalg.norm(rs.embeddings, axis=1, keepdims=True)
    train, test = rs.split("train"), rs.split("test")

    def fit(n: int, seed: int) -> ClusterPolicy:
        return ClusterPolicy(n_clusters=n, random_state=seed).fit(
            Inputs(embeddings=train.embeddings), train.scores, train.costs, train.models)

    a, b = fit(8, 0), fit(2, 1)
    assert common.paired_aiq_interval(a, a, test, resamples=50) == (0.0, 0.0)
    low, high = common.paired_aiq_interval(a, b, test, resamples=400, seed=3)
    measured = common.routed_aiq(a, test) - common.routed_aiq(b, test)
    assert low < high
    assert low <= measured <= high
    # The same seed draws the same test sets.
    assert common.paired_aiq_interval(a, b, test, resamples=400, seed=3) == (low, high)
    # One of 288 comparisons: a family-wise interval, wider, around the same difference.
    wide_low, wide_high = common.paired_aiq_interval(a, b, test, resamples=400, seed=3,
                                                     comparisons=288)
    assert wide_low < low and high < wide_high
    assert common.paired_aiq_interval(a, a, test, resamples=50, comparisons=288) == (0.0, 0.0)
    with pytest.raises(ValueError, match="comparisons"):
        common.paired_aiq_interval(a, b, test, comparisons=0)
