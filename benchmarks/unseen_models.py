"""Unseen models (UniRoute protocol): withhold a third of the models when fitting, then add each
from at most 200 labelled prompts with ``add_model`` (no re-clustering), and compare test AIQ
with full retraining. Target: at least 90% of full retraining's gain over the zero router.

Three folds (models 0,3,6,.. withheld; then 1,4,7,..; then 2,5,8,..), each with ``--draws``
random sets of labelled prompts (the share moves by ±25 points between draws of 200 on
RouterBench, whose whole learnable gain is 0.03 AIQ), reported per fold and on average.

``--validate`` chooses the cluster policy's ``added_prior_strength`` the honest way instead:
three random 80/20 parts of the train split, the same folds and draws, shares measured on the
held-out fifth of train for each strength in ``--strengths``; the test split is not read.

Usage: python benchmarks/unseen_models.py [--labels 200] [--draws 4]
       python benchmarks/unseen_models.py --validate [--strengths 3,6,12,24,48,96]
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import numpy as np
from _common import DATASETS, embedded_records, validation_parts

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, single_model_points
from switchpoint.policies import ClusterPolicy, Inputs, KnnPolicy, Policy
from switchpoint.records import RecordSet

MakePolicy = Callable[[], Policy]


def test_aiq(policy: Policy, test: RecordSet) -> float:
    est = policy.estimate(Inputs(embeddings=test.embeddings))
    order = [est.models.index(m) for m in test.models]
    est.error, est.cost = est.error[:, order], est.cost[:, order]
    scale = float(max(policy.global_cost().values()))
    singles = single_model_points(test.scores, test.costs)
    return aiq(sweep(est, test.scores, test.costs, scale), singles)


def fold_results(make: MakePolicy, train: RecordSet, test: RecordSet, labels: int,
                 draws: int) -> tuple[float, float, list[list[float]]]:
    """Zero-router AIQ, full-retraining AIQ, and per fold the AIQ of each label draw."""
    singles = single_model_points(test.scores, test.costs)
    zero = aiq(singles, singles)
    full = make().fit(Inputs(embeddings=train.embeddings), train.scores, train.costs,
                      train.models)
    assert train.embeddings is not None
    per_fold = []
    for fold in range(3):
        held = train.models[fold::3]
        kept = [m for m in train.models if m not in held]
        base = train.select_models(kept)
        added = []
        for draw in range(draws):
            rng = np.random.default_rng(1000 * draw + fold)
            policy = make().fit(Inputs(embeddings=base.embeddings), base.scores, base.costs,
                                kept)
            for model in held:
                j = train.models.index(model)
                rows = rng.choice(len(train), size=min(labels, len(train)), replace=False)
                policy.add_model(model, Inputs(embeddings=train.embeddings[rows]),
                                 train.scores[rows, j], train.costs[rows, j])
            added.append(test_aiq(policy, test))
        per_fold.append(added)
    return zero, test_aiq(full, test), per_fold


def report_test(name: str, rs: RecordSet, labels: int, draws: int) -> None:
    train, test = rs.split("train"), rs.split("test")
    makers: dict[str, MakePolicy] = {"cluster": ClusterPolicy, "knn": KnnPolicy}
    for label, make in makers.items():
        zero, full, per_fold = fold_results(make, train, test, labels, draws)
        shares = []
        for fold, added in enumerate(per_fold):
            share = (np.mean(added) - zero) / (full - zero)
            shares.append(share)
            print(f"{name:<18} {label:<8} {fold:<5} {zero:6.3f} {full:6.3f} "
                  f"{np.mean(added):6.3f} {share:14.0%}", flush=True)
        print(f"{name:<18} {label:<8} {'mean':<5} {'':>6} {'':>6} {'':>6} "
              f"{np.mean(shares):14.0%}")


def report_validation(name: str, rs: RecordSet, labels: int, draws: int,
                      strengths: list[float]) -> None:
    train_all = rs.split("train")
    shares: dict[float, list[float]] = {s: [] for s in strengths}
    for train, held in validation_parts(train_all, parts=3, seed=100):
        for s in strengths:
            make = functools.partial(ClusterPolicy, added_prior_strength=s)
            zero, full, per_fold = fold_results(make, train, held, labels, draws)
            shares[s] += [(a - zero) / (full - zero) for added in per_fold for a in added]
    for s, values in shares.items():
        print(f"{name:<18} {s:>9g} {np.mean(values):8.0%} {np.median(values):8.0%} "
              f"{len(values):5d}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--strengths", default="3,6,12,24,48,96")
    args = parser.parse_args()
    if args.validate:
        print(f"{'records':<18} {'strength':>9} {'mean':>8} {'median':>8} {'runs':>5}"
              "  (share of gain on a held-out fifth of train)")
    else:
        print(f"{'records':<18} {'policy':<8} {'fold':<5} {'zero':>6} {'full':>6} "
              f"{'added':>6} {'share of gain':>14}  (added: mean of {args.draws} label draws)")
    for name in DATASETS:
        rs = embedded_records(name)
        if args.validate:
            strengths = [float(x) for x in args.strengths.split(",")]
            report_validation(name, rs, args.labels, args.draws, strengths)
        else:
            report_test(name, rs, args.labels, args.draws)


if __name__ == "__main__":
    main()
