"""Unseen models (UniRoute protocol): withhold a third of the models when fitting, then add each
from at most 200 labelled prompts with ``add_model`` (no re-clustering), and compare test AIQ
with full retraining. Target: at least 90% of full retraining's gain over the zero router.

Three folds (models 0,3,6,.. withheld; then 1,4,7,..; then 2,5,8,..), reported per fold and
on average. Usage: python benchmarks/unseen_models.py [--labels 200]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import DATASETS, cached_embeddings

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, single_model_points
from switchpoint.policies import ClusterPolicy, Inputs, KnnPolicy, Policy
from switchpoint.records import RecordSet, load_records

EMBEDDER = "all-MiniLM-L6-v2/tail-64"


def test_aiq(policy: Policy, test: RecordSet) -> float:
    est = policy.estimate(Inputs(embeddings=test.embeddings))
    order = [est.models.index(m) for m in test.models]
    est.error, est.cost = est.error[:, order], est.cost[:, order]
    scale = float(max(policy.global_cost().values()))
    singles = single_model_points(test.scores, test.costs)
    return aiq(sweep(est, test.scores, test.costs, scale), singles)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--labels", type=int, default=200)
    args = parser.parse_args()
    print(f"{'records':<18} {'policy':<8} {'fold':<5} {'zero':>6} {'full':>6} {'added':>6} "
          f"{'share of gain':>14}")
    for name, path in DATASETS.items():
        rs = load_records(path)
        rs.embeddings = cached_embeddings(name, rs.prompts, EMBEDDER)
        train, test = rs.split("train"), rs.split("test")
        singles = single_model_points(test.scores, test.costs)
        zero = aiq(singles, singles)
        rng = np.random.default_rng(0)
        for make in (ClusterPolicy, KnnPolicy):
            shares = []
            full = make().fit(Inputs(embeddings=train.embeddings), train.scores, train.costs,
                              train.models)
            full_aiq = test_aiq(full, test)
            for fold in range(3):
                held = train.models[fold::3]
                kept = [m for m in train.models if m not in held]
                base = train.select_models(kept)
                policy = make().fit(Inputs(embeddings=base.embeddings), base.scores, base.costs,
                                    kept)
                for model in held:
                    j = train.models.index(model)
                    rows = rng.choice(len(train), size=min(args.labels, len(train)),
                                      replace=False)
                    assert train.embeddings is not None
                    policy.add_model(model, Inputs(embeddings=train.embeddings[rows]),
                                     train.scores[rows, j], train.costs[rows, j])
                added = test_aiq(policy, test)
                share = (added - zero) / (full_aiq - zero)
                shares.append(share)
                print(f"{name:<18} {make.name:<8} {fold:<5} {zero:6.3f} {full_aiq:6.3f} "
                      f"{added:6.3f} {share:14.0%}", flush=True)
            print(f"{name:<18} {make.name:<8} {'mean':<5} {'':>6} {'':>6} {'':>6} "
                  f"{np.mean(shares):14.0%}")


if __name__ == "__main__":
    main()
