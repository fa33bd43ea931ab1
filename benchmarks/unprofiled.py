"""A model the weights have no profile for, learned from its own outcomes: a team adds a model
to its catalog (with its price, without labels) and lets feedback teach the router about it.

Protocol, per record set and for each model ``M`` in turn (``--models`` to choose):

1. Fit the cluster policy on the train split without ``M`` (every other model's labels).
2. Give the router a catalog of every model priced at its mean cost per request in train
   (``M`` too: a team knows its model's price), ``M`` without a profile or tier: its expected
   error starts as the weakest profiled model's, as uncertain as the profiled models disagree.
3. Stream the train split's prompts in a random order through ``Router.route(embedding=..)``
   at λ 0.5 with 30% exploration (which goes to ``M``, the candidate with the least evidence),
   and report ``M``'s quality whenever ``M`` answered (bandit feedback: its labels on the
   prompts it did not answer are never read; other models' outcomes are not reported, since
   the weights already hold their labels on these prompts).
4. At each checkpoint, test AIQ of: the router without ``M`` in its catalog ("without"), the
   router with ``M`` learned so far ("with"), and the cluster policy fitted on train with ``M``
   labelled everywhere ("full", every label of ``M``). Every router decides with its own rule
   (``Router.estimates`` and ``decide`` at each λ), among the models the test split labels,
   and AIQ spans every test model's single-model range, so all three are on one scale.

Adding ``M`` must never make the router worse than without it beyond noise: "with − without"
at every checkpoint, with the 95% interval of that difference over test sets resampled from the
test prompts (a paired bootstrap). With so many comparisons a few fall outside their own 95%
interval by chance: the script counts them, and gives the lowest one's family-wise interval
(Bonferroni, as ``benchmarks/online.py`` does). "share" is (with − without) / (full −
without), the part of full retraining's gain (when there is one) that ``M``'s outcomes alone
won.

``--validate`` runs the same on a random fifth of train held out (fit and stream on the other
four fifths): how the way a model without a profile learns was chosen; the test split is not
read.

Usage: python benchmarks/unprofiled.py [--datasets routerbench-3task] [--models a,b]
                                       [--exploration 0.3] [--seed 0] [--validate]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import DEFAULT_EMBEDDER, choice_interval, embedded_records, validation_parts

from switchpoint.catalog import Catalog, ModelCard
from switchpoint.decision import decide
from switchpoint.evaluation.curves import DEFAULT_LAMBDAS
from switchpoint.evaluation.metrics import aiq, routed_point, single_model_points
from switchpoint.learning import LearningSettings
from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.records import RecordSet
from switchpoint.router import REFERENCE_INPUT_TOKENS, Router
from switchpoint.weights import WeightsPackage

COST_WEIGHT = 0.5
CHECKPOINTS = (100, 250, 500, 1000)
OUTPUT_TOKENS = 256  # the catalog's expected_output_tokens (prices are set per request)


class _NoEmbedder:
    """The prompts arrive as vectors; nothing is embedded."""

    id = DEFAULT_EMBEDDER
    dimension = 384

    def embed(self, texts: object) -> np.ndarray:
        raise RuntimeError("the benchmark routes pre-computed vectors only")


def catalog(train: RecordSet, unprofiled: str | None, drop: str | None = None) -> Catalog:
    """Every model of ``train`` (but ``drop``) priced so that a request of the reference size
    costs its mean cost in train; ``unprofiled`` has no profile."""
    cards = []
    for j, model in enumerate(train.models):
        if model == drop:
            continue
        mean = float(np.nanmean(train.costs[:, j]))
        per_mtok = mean * 1e6 / (REFERENCE_INPUT_TOKENS + OUTPUT_TOKENS)
        cards.append(ModelCard(model, profile=None if model == unprofiled else model,
                               input_per_mtok=per_mtok, output_per_mtok=per_mtok))
    return Catalog(cards, expected_output_tokens=OUTPUT_TOKENS)


def router(policy: ClusterPolicy, cards: Catalog, exploration: float, seed: int) -> Router:
    package = WeightsPackage(policy=policy, embedder_id=DEFAULT_EMBEDDER, dimension=384)
    return Router(package, catalog=cards, embedder=_NoEmbedder(),
                  cost_weight=COST_WEIGHT, cache_size=0,
                  learning=LearningSettings(exploration=exploration, seed=seed,
                                            memory_size=100_000))


def choices(r: Router, test: RecordSet) -> np.ndarray:
    """Per λ and test prompt, the test column of the model ``r`` chooses, by its own rule."""
    est = r.estimates(embeddings=test.embeddings)
    models = [m for m in est.models if m in test.models]
    cols = [est.models.index(m) for m in models]
    stderr = None if est.stderr is None else est.stderr[:, cols]
    labelled = ~np.isnan(test.scores[:, [test.models.index(m) for m in models]])
    picks = [decide(est.error[:, cols], est.cost[:, cols], labelled, lam, r.cost_scale(),
                    stderr=stderr, pessimism=est.pessimism) for lam in DEFAULT_LAMBDAS]
    to_test = np.array([test.models.index(m) for m in models])
    return np.array([to_test[p] for p in picks])


def choices_aiq(picked: np.ndarray, test: RecordSet) -> float:
    points = [routed_point(p, test.scores, test.costs) for p in picked]
    return aiq(points, single_model_points(test.scores, test.costs))


def run(name: str, train: RecordSet, test: RecordSet, models: list[str], exploration: float,
        seed: int) -> None:
    """Print a row per model and checkpoint, then the lowest "with − without" of them all and
    the mean share of full retraining's gain at the end of the stream."""
    assert train.embeddings is not None
    full = ClusterPolicy().fit(Inputs(embeddings=train.embeddings), train.scores, train.costs,
                               train.models)
    full_aiq = choices_aiq(choices(router(full, catalog(train, None), 0.0, seed), test), test)
    order = np.random.default_rng(seed).permutation(len(train))
    marks = [c for c in CHECKPOINTS if c < len(order)] + [len(order)]
    lowest: tuple[float, str, int, float, float, np.ndarray, np.ndarray] | None = None
    shares: list[tuple[str, float]] = []
    compared = beyond = 0
    for model in models:
        t0 = time.perf_counter()
        kept = train.select_models([m for m in train.models if m != model])
        base = ClusterPolicy().fit(Inputs(embeddings=kept.embeddings), kept.scores, kept.costs,
                                   kept.models)
        without = choices(router(base, catalog(train, None, drop=model), 0.0, seed), test)
        without_aiq = choices_aiq(without, test)
        learning = router(base, catalog(train, model), exploration, seed)
        j = train.models.index(model)
        outcomes = 0
        for i, row in enumerate(order, start=1):
            d = learning.route(embedding=train.embeddings[row])
            if d.selected_model == model and np.isfinite(train.scores[row, j]):
                learning.report_outcome(d.decision_id, float(train.scores[row, j]))
                outcomes += 1
            if i in marks:
                with_ = choices(learning, test)
                with_aiq = choices_aiq(with_, test)
                low, high = choice_interval(with_, without, test)
                gain = full_aiq - without_aiq
                compared += 1
                beyond += high < 0
                if lowest is None or with_aiq - without_aiq < lowest[0]:
                    lowest = (with_aiq - without_aiq, model, i, low, high, with_, without)
                if i == len(order) and gain > 0.002:
                    shares.append((model, (with_aiq - without_aiq) / gain))
                share = f"{(with_aiq - without_aiq) / gain:7.0%}" if gain > 0.002 else "      -"
                print(f"{name:<18} {model[:30]:<30} {i:6d} {outcomes:8d} {without_aiq:8.4f} "
                      f"{with_aiq:8.4f} {full_aiq:8.4f} {with_aiq - without_aiq:+9.4f} "
                      f"[{low:+.4f}, {high:+.4f}] {share}", flush=True)
        print(f"{name:<18} {model[:30]:<30} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if lowest is not None:
        diff, model, events, low, high, with_, without = lowest
        wide_low, wide_high = choice_interval(with_, without, test, comparisons=compared)
        print(f"{name}: lowest with − without {diff:+.4f} ({model}, {events} events; 95% "
              f"interval [{low:+.4f}, {high:+.4f}]; as the lowest of {compared} comparisons, "
              f"family-wise [{wide_low:+.4f}, {wide_high:+.4f}]); {beyond} of {compared} "
              "comparisons have their 95% interval below 0")
    if shares:
        print(f"{name}: share of full retraining's gain at the end, where it gains over 0.002: "
              f"mean {np.mean([v for _, v in shares]):.0%} ("
              + ", ".join(f"{m} {v:.0%}" for m, v in shares) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="routerbench-3task")
    parser.add_argument("--models", default=None, help="comma-separated (default: every one)")
    parser.add_argument("--exploration", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate", action="store_true",
                        help="fit and stream on four fifths of train, judge on the other "
                             "fifth (the test split is not read)")
    args = parser.parse_args()
    print(f"{'records':<18} {'model without a profile':<30} {'events':>6} {'outcomes':>8} "
          f"{'without':>8} {'with':>8} {'full':>8} {'with-w/o':>9} {'95% interval':<18} "
          f"{'share':>7}")
    for name in args.datasets.split(","):
        rs = embedded_records(name)
        models = args.models.split(",") if args.models else list(rs.models)
        train, test = (next(validation_parts(rs.split("train"), parts=1)) if args.validate
                       else (rs.split("train"), rs.split("test")))
        run(name, train, test, models, args.exploration, args.seed)


if __name__ == "__main__":
    main()
