"""Unseen models (UniRoute protocol): withhold a third of the models when fitting, then add each
from at most 200 labelled prompts with ``add_model`` (no re-clustering), and compare test AIQ
with full retraining (target: at least 90% of full retraining's gain over the zero router) and
with the router that never heard of the withheld models (adding models must not make it worse).

Three folds (models 0,3,6,.. withheld; then 1,4,7,..; then 2,5,8,..), each with ``--draws``
random sets of labelled prompts (the share moves by ±25 points between draws of 200 on
RouterBench, whose whole learnable gain is 0.03 AIQ), reported per fold and on average. Every
AIQ is measured over the cost range of all the test split's single models, so the router
without the withheld models is on the same scale as the one with them.

``--one-at-a-time`` adds each model alone to a router fitted without it (the mixtral case:
a router of ten models learning an eleventh), ``--draws`` times, and prints with vs without.

``--validate`` chooses the cluster policy's ``added_prior_strength`` and ``pessimism`` the honest
way: three random 80/20 parts of the train split, the same folds and draws, measured on the
held-out fifth of train for each setting; the test split is not read.

Usage: python benchmarks/unseen_models.py [--labels 200] [--draws 4] [--one-at-a-time]
                                          [--pessimism 0,1]
       python benchmarks/unseen_models.py --validate [--strengths 48] [--pessimism 0,0.5,1,2]
"""

from __future__ import annotations

import argparse
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from _common import DATASETS, embedded_records, routed_aiq, validation_parts

from switchpoint.evaluation.metrics import aiq, single_model_points
from switchpoint.policies import ClusterPolicy, Inputs, KnnPolicy, Policy
from switchpoint.records import RecordSet

MakePolicy = Callable[[], Policy]
Setting = dict[str, float]


@dataclass
class Fold:
    """One fold: the router without the withheld models, and with them added (one per draw)."""

    held: list[str]
    without: float
    added: list[float] = field(default_factory=list)

    @property
    def worst_gap(self) -> float:
        """The worst draw's AIQ with the added models minus without them."""
        return min(self.added) - self.without


def add_labels(policy: Policy, train: RecordSet, models: list[str], labels: int,
               rng: np.random.Generator) -> Policy:
    """``policy`` with each of ``models`` added from ``labels`` random train prompts."""
    assert train.embeddings is not None
    for model in models:
        j = train.models.index(model)
        rows = rng.choice(len(train), size=min(labels, len(train)), replace=False)
        policy.add_model(model, Inputs(embeddings=train.embeddings[rows]),
                         train.scores[rows, j], train.costs[rows, j])
    return policy


def fit(make: MakePolicy, rs: RecordSet, models: list[str]) -> Policy:
    part = rs.select_models(models)
    return make().fit(Inputs(embeddings=part.embeddings), part.scores, part.costs, models)


def groups_of(models: list[str], one_at_a_time: bool) -> list[list[str]]:
    return [[m] for m in models] if one_at_a_time else [models[f::3] for f in range(3)]


def fold_results(make: MakePolicy, train: RecordSet, test: RecordSet, labels: int, draws: int,
                 settings: list[Setting], one_at_a_time: bool = False
                 ) -> tuple[float, dict[int, float], dict[int, list[Fold]]]:
    """Zero-router AIQ, and per setting (by index) full retraining's AIQ and the folds."""
    singles = single_model_points(test.scores, test.costs)
    zero = aiq(singles, singles)
    full_policy = fit(make, train, train.models)
    full: dict[int, float] = {}
    folds: dict[int, list[Fold]] = {i: [] for i in range(len(settings))}
    for i, setting in enumerate(settings):
        full[i] = routed_aiq(copy.deepcopy(full_policy).set_params(**setting), test)
    for group_index, held in enumerate(groups_of(train.models, one_at_a_time)):
        kept = [m for m in train.models if m not in held]
        base = fit(make, train, kept)
        runs = {i: Fold(held, routed_aiq(copy.deepcopy(base).set_params(**s), test))
                for i, s in enumerate(settings)}
        for draw in range(draws):
            for i, setting in enumerate(settings):
                rng = np.random.default_rng(1000 * draw + group_index)
                policy = add_labels(copy.deepcopy(base).set_params(**setting), train, held,
                                    labels, rng)
                runs[i].added.append(routed_aiq(policy, test))
        for i in runs:
            folds[i].append(runs[i])
    return zero, full, folds


def share(added: float, zero: float, full: float) -> float:
    return (added - zero) / (full - zero)


def report_test(name: str, rs: RecordSet, labels: int, draws: int, one_at_a_time: bool,
                pessimism: list[float]) -> None:
    train, test = rs.split("train"), rs.split("test")
    runs: list[tuple[str, MakePolicy, Setting]] = [
        (f"cluster k={p:g}" if len(pessimism) > 1 else "cluster", ClusterPolicy,
         {"pessimism": p}) for p in pessimism]
    runs.append(("knn", KnnPolicy, {}))
    for label, make, setting in runs:
        zero, full, folds = fold_results(make, train, test, labels, draws, [setting],
                                         one_at_a_time)
        shares = []
        for index, fold in enumerate(folds[0]):
            added = float(np.mean(fold.added))
            shares.append(share(added, zero, full[0]))
            what = fold.held[0] if one_at_a_time else str(index)
            print(f"{name:<18} {label:<11} {what:<34} {zero:6.3f} {full[0]:6.3f} "
                  f"{fold.without:8.4f} {added:8.4f} {fold.worst_gap:+10.4f} {shares[-1]:7.0%}",
                  flush=True)
        gaps = [f.worst_gap for f in folds[0]]
        mean_gap = float(np.mean([np.mean(f.added) - f.without for f in folds[0]]))
        print(f"{name:<18} {label:<11} {'mean':<34} {'':>6} {'':>6} {'':>8} "
              f"{mean_gap:+8.4f} {min(gaps):+10.4f} {np.mean(shares):7.0%}")


def report_validation(name: str, rs: RecordSet, labels: int, draws: int,
                      settings: list[Setting], one_at_a_time: bool) -> None:
    train_all = rs.split("train")
    shares: dict[int, list[float]] = {i: [] for i in range(len(settings))}
    gaps: dict[int, list[float]] = {i: [] for i in range(len(settings))}
    for train, held in validation_parts(train_all, parts=3, seed=100):
        zero, full, folds = fold_results(ClusterPolicy, train, held, labels, draws, settings,
                                         one_at_a_time)
        for i, runs in folds.items():
            shares[i] += [share(a, zero, full[i]) for f in runs for a in f.added]
            gaps[i] += [a - f.without for f in runs for a in f.added]
    for i, setting in enumerate(settings):
        g = np.array(gaps[i])
        print(f"{name:<18} {setting['added_prior_strength']:>9g} {setting['pessimism']:>9g} "
              f"{np.mean(shares[i]):8.0%} {np.median(shares[i]):8.0%} {g.mean():+9.4f} "
              f"{np.percentile(g, 10):+9.4f} {g.min():+9.4f} {len(g):5d}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--one-at-a-time", action="store_true")
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--strengths", default="48")
    parser.add_argument("--pessimism", default=None,
                        help="cluster pessimism values (validation default 0,0.5,1,2; test: "
                             "the policy default 1, or e.g. 0,1 to print both)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    args = parser.parse_args()
    if args.validate:
        print(f"{'records':<18} {'strength':>9} {'pessimism':>9} {'share':>8} {'median':>8} "
              f"{'with-w/o':>9} {'10th pct':>9} {'worst':>9} {'runs':>5}"
              "  (on a held-out fifth of train)")
    else:
        what = "model added" if args.one_at_a_time else "fold"
        print(f"{'records':<18} {'policy':<11} {what:<34} {'zero':>6} {'full':>6} "
              f"{'without':>8} {'with':>8} {'worst draw':>10} {'share':>7}  (with: mean of "
              f"{args.draws} label draws; worst draw: its AIQ minus without)")
    for name in args.datasets.split(","):
        rs = embedded_records(name)
        if args.validate:
            settings = [{"added_prior_strength": float(s), "pessimism": float(p)}
                        for s, p in itertools.product(args.strengths.split(","),
                                                      (args.pessimism or "0,0.5,1,2").split(","))]
            report_validation(name, rs, args.labels, args.draws, settings, args.one_at_a_time)
        else:
            report_test(name, rs, args.labels, args.draws, args.one_at_a_time,
                        [float(p) for p in (args.pessimism or "1").split(",")])


if __name__ == "__main__":
    main()
