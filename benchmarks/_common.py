"""Shared helpers for the benchmark scripts: where the records live, cached embeddings,
validation parts of a train split, test AIQ with the router's decision rule, and how a call is
timed and repeated timings are summed up."""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Generic, TypeVar

import numpy as np

from switchpoint.evaluation.curves import DEFAULT_LAMBDAS
from switchpoint.evaluation.harness import route_choices
from switchpoint.evaluation.metrics import Point, aiq, routed_point, single_model_points
from switchpoint.policies import Inputs, Policy
from switchpoint.records import RecordSet, load_records

ROOT = Path(__file__).resolve().parent.parent
# ONNX Runtime 1.32 sends telemetry from Linux too, read from this variable once, at its first
# import: switchpoint sets it itself; set here, it also reaches the peers a benchmark starts
# (OpenTracy's engine and Python package load ONNX Runtime), so no run reaches the network.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
DATA = Path(os.environ.get("SWITCHPOINT_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(
    os.environ.get("SWITCHPOINT_BENCH_CACHE", Path.home() / ".cache" / "switchpoint-bench")
)
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2/tail-64"
DATASETS = {
    "routerbench-3task": DATA / "routerbench-3task.jsonl",
    "llmrouter-14task": DATA / "llmrouter-14task.jsonl",
}
T = TypeVar("T")


@dataclass(frozen=True)
class Spread:
    """Repeated figures of one measurement told as their median, the least and the most."""

    median: float
    least: float
    most: float

    @classmethod
    def of(cls, figures: Iterable[float]) -> Spread:
        """The median, least and most of ``figures`` (at least one)."""
        values = list(figures)
        if not values:
            raise ValueError("no figures to sum up: measure at least once (repeats >= 1)")
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class Timing(Generic[T]):
    """The seconds repeated calls of one function took, and what its last call returned."""

    seconds: Spread
    result: T


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds one call of ``fn`` took (``time.perf_counter``), and what it returned."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def median_time(fn: Callable[[], T], repeats: int) -> Timing[T]:
    """``fn`` called ``repeats`` times in a row, each call timed alone: the median, least and
    most seconds of a call, and what the last call returned."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    seconds: list[float] = []
    for _ in range(repeats):
        took, result = timed(fn)
        seconds.append(took)
    return Timing(Spread.of(seconds), result)


def percentile(values: Sequence[float], q: float, *, round_down: bool = False) -> float:
    """The value at quantile ``q`` (0 to 1) of ``values`` by nearest rank: the one at position
    ``q * (len - 1)`` of them sorted, rounded to the nearest position (``round_down``: the
    position below it, as the feedback benchmark has always read its p99)."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be from 0 to 1, got {q}")
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    return ordered[min(len(ordered) - 1, math.floor(at) if round_down else round(at))]


def source_trees(specs: list[str]) -> dict[str, str]:
    """Source trees to measure side by side, each given as ``LABEL=DIR`` (DIR: a src folder
    holding the switchpoint package; ``.``: this checkout's): their folders by label."""
    trees: dict[str, str] = {}
    for spec in specs:
        label, sep, src = spec.partition("=")
        if not sep or not label or not src:
            raise SystemExit(f"{spec!r}: give each tree as LABEL=DIR (DIR: its src folder)")
        path = ROOT / "src" if src == "." else Path(src).resolve()
        if not (path / "switchpoint" / "__init__.py").is_file():
            raise SystemExit(f"{spec!r}: {path} holds no switchpoint package")
        trees[label] = str(path)
    return trees


def dataset_records(name: str) -> RecordSet:
    """The records of ``DATASETS[name]``; when the file is missing, exit saying where the
    benchmarks look for the full record sets and how to point them elsewhere."""
    path = DATASETS[name]
    if not path.is_file():
        names = " and ".join(p.name for p in DATASETS.values())
        raise SystemExit(
            f"{Path(sys.argv[0]).name}: {path} not found. The benchmarks read the full record "
            f"sets ({names}) from the folder $SWITCHPOINT_DATA names (default ../shared/data "
            "beside the repository): set SWITCHPOINT_DATA to the folder that holds them "
            "(docs/file-formats.md, 'Where routing records come from', shows how to make them)")
    return load_records(path)


def cached_embeddings(dataset: str, prompts: list[str], embedder_id: str) -> np.ndarray:
    """Embed ``prompts`` with the embedder ``embedder_id`` once; later calls read the cache."""
    from switchpoint.embedding import embedder_from_id
    from switchpoint.embedding.minilm_graph import BUILD_VERSION

    digest = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()[:12]
    # The default MiniLM runs as the fused int8 network; its build version keys the cache too.
    runtime = f"int8v{BUILD_VERSION}" if not embedder_id.startswith("st:") else "st"
    path = CACHE / f"{dataset}-{embedder_id.replace('/', '_')}-{runtime}-{digest}.npy"
    if path.exists():
        return np.load(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    embedder = embedder_from_id(embedder_id)
    t0 = time.perf_counter()
    vectors = embedder.embed(prompts)
    print(f"# embedded {len(prompts)} prompts of {dataset} with {embedder_id} in "
          f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
    np.save(path, vectors)
    return vectors


def embedded_records(dataset: str, embedder_id: str = DEFAULT_EMBEDDER) -> RecordSet:
    """The records of ``DATASETS[dataset]`` with every prompt's (cached) embedding attached."""
    records = dataset_records(dataset)
    records.embeddings = cached_embeddings(dataset, records.prompts, embedder_id)
    return records


def validation_parts(train: RecordSet, parts: int = 5, seed: int = 200
                     ) -> Iterator[tuple[RecordSet, RecordSet]]:
    """Random 80/20 splits of a train split (fit on the four fifths, judge on the fifth), so
    settings are chosen without reading the test split. Part ``i`` uses seed ``seed + i``."""
    for part in range(parts):
        perm = np.random.default_rng(seed + part).permutation(len(train))
        cut = int(0.8 * len(perm))
        yield train.subset(perm[:cut]), train.subset(perm[cut:])


def routed_choices(policy: Policy, test: RecordSet, lambdas: Sequence[float] = DEFAULT_LAMBDAS
                   ) -> tuple[dict[float, np.ndarray], np.ndarray, np.ndarray]:
    """What ``policy`` chooses for every prompt of ``test`` at each λ with the router's own
    decision rule (the harness's ``route_choices``), among the policy's models that ``test``
    labels; with the scores and costs of those models (the columns the choices index)."""
    models = [m for m in test.models if m in policy.models_]
    cols = [test.models.index(m) for m in models]
    scores, costs = test.scores[:, cols], test.costs[:, cols]
    choices = route_choices(policy, Inputs(texts=list(test.prompts), embeddings=test.embeddings),
                            models, ~np.isnan(scores), lambdas)
    return choices, scores, costs


def policy_choices(policy: Policy, test: RecordSet,
                   lambdas: Sequence[float] = DEFAULT_LAMBDAS) -> np.ndarray:
    """``(len(lambdas), len(test))``: the test column of the model ``policy`` chooses for each
    prompt at each λ (see :func:`routed_choices`)."""
    choices, _, _ = routed_choices(policy, test, lambdas)
    cols = np.array([test.models.index(m) for m in test.models if m in policy.models_])
    return np.array([cols[choices[float(lam)]] for lam in lambdas])


def paired_aiq_interval(a: Policy, b: Policy, test: RecordSet, resamples: int = 1000,
                        seed: int = 0, lambdas: Sequence[float] = DEFAULT_LAMBDAS,
                        comparisons: int = 1) -> tuple[float, float]:
    """The 95% interval of ``routed_aiq(a) - routed_aiq(b)`` over test sets drawn from
    ``test``'s prompts with replacement (see :func:`choice_interval`)."""
    return choice_interval(policy_choices(a, test, lambdas), policy_choices(b, test, lambdas),
                           test, resamples, seed, comparisons)


def choice_interval(a: np.ndarray, b: np.ndarray, test: RecordSet, resamples: int = 1000,
                    seed: int = 0, comparisons: int = 1) -> tuple[float, float]:
    """The 95% interval of the AIQ of choices ``a`` minus that of ``b`` (each
    ``(n_lambdas, len(test))`` test columns, as :func:`policy_choices` gives) over test sets
    drawn from ``test``'s prompts with replacement, the same draw for both (a paired
    bootstrap): how large a difference between two routers this test set's sampling alone
    can make.

    ``comparisons`` > 1: the pair is one of that many compared (the lowest of many runs and
    checkpoints, say), and the interval is family-wise, Bonferroni's: each comparison at
    ``1 - 0.05 / comparisons``, from the resampled differences' mean and spread (a normal
    interval: a thousand resamples cannot place such a far percentile)."""
    if comparisons < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons}")
    rows = np.arange(len(test))

    def points(cost: np.ndarray, quality: np.ndarray, idx: np.ndarray) -> list[Point]:
        return [Point(float(c), float(q)) for c, q in
                zip(cost[:, idx].mean(axis=1), quality[:, idx].mean(axis=1), strict=True)]

    cost_a, quality_a = test.costs[rows, a], test.scores[rows, a]
    cost_b, quality_b = test.costs[rows, b], test.scores[rows, b]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(len(test), size=len(test))
        singles = single_model_points(test.scores[idx], test.costs[idx])
        diffs.append(aiq(points(cost_a, quality_a, idx), singles)
                     - aiq(points(cost_b, quality_b, idx), singles))
    if comparisons == 1:
        low, high = np.percentile(diffs, [2.5, 97.5])
        return float(low), float(high)
    z = NormalDist().inv_cdf(1.0 - 0.025 / comparisons)
    centre, spread = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    return centre - z * spread, centre + z * spread


def routed_aiq(policy: Policy, test: RecordSet, lambdas: Sequence[float] = DEFAULT_LAMBDAS
               ) -> float:
    """Test AIQ of ``policy`` with the router's own decision rule (see :func:`routed_choices`).
    The AIQ range is always the single models of *all* of ``test``'s models, so a router that
    knows fewer models is measured on the same scale as one that knows more."""
    choices, scores, costs = routed_choices(policy, test, lambdas)
    points = [routed_point(choices[float(lam)], scores, costs) for lam in lambdas]
    return aiq(points, single_model_points(test.scores, test.costs))
