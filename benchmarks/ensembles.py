"""Ensembles of the shipped policies, judged on validation parts of train (never on test).

Each member policy is fitted with its default settings on four fifths of the train split; the
members' expected errors are averaged (costs come from the cluster policy) and the average is
swept over λ on the held-out fifth. Five random parts; AIQ is the mean, QNC the median.

Usage: python benchmarks/ensembles.py [--parts 5]   (embeddings are cached by _common.py)
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import DATASETS, embedded_records, validation_parts

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, qnc, single_model_points
from switchpoint.policies import Estimates, Inputs, make_policy
from switchpoint.records import RecordSet

MEMBERS = ("cluster", "tfidf", "tiers", "knn")
COMBOS: dict[str, tuple[str, ...]] = {
    "cluster (default)": ("cluster",),
    "tfidf": ("tfidf",),
    "tiers": ("tiers",),
    "knn": ("knn",),
    "cluster + tfidf": ("cluster", "tfidf"),
    "cluster + tiers": ("cluster", "tiers"),
    "cluster + tfidf + tiers": ("cluster", "tfidf", "tiers"),
    "cluster + tfidf + tiers + knn": ("cluster", "tfidf", "tiers", "knn"),
    "cluster + knn": ("cluster", "knn"),
}


def member_estimates(train: RecordSet, held: RecordSet) -> tuple[dict[str, Estimates], float]:
    """Each member's estimates on ``held`` (columns in ``held.models`` order) and the λ scale."""
    fit_on = Inputs(embeddings=train.embeddings, texts=train.prompts)
    out: dict[str, Estimates] = {}
    scale = 1.0
    for name in MEMBERS:
        policy = make_policy(name).fit(fit_on, train.scores, train.costs, train.models)
        est = policy.estimate(Inputs(embeddings=held.embeddings, texts=held.prompts))
        order = [est.models.index(m) for m in held.models]
        est.error, est.cost = est.error[:, order], est.cost[:, order]
        est.models = list(held.models)
        out[name] = est
        if name == "cluster":
            scale = float(max(policy.global_cost().values()))
    return out, scale


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", type=int, default=5)
    args = parser.parse_args()
    print(f"{'records':<18} {'members':<30} {'AIQ mean':>9} {'QNC median':>11}  AIQ per part")
    for dataset in DATASETS:
        rs = embedded_records(dataset)
        train_all = rs.split("train")
        results: dict[str, list[tuple[float, float]]] = {label: [] for label in COMBOS}
        for train, held in validation_parts(train_all, args.parts):
            ests, scale = member_estimates(train, held)
            singles = single_model_points(held.scores, held.costs)
            for label, members in COMBOS.items():
                base = ests["cluster"]
                avg = Estimates(
                    models=base.models,
                    error=np.mean([ests[m].error for m in members], axis=0),
                    cost=base.cost,
                    support=base.support,
                    unit_ids=base.unit_ids,
                    unit_kind=base.unit_kind,
                )
                points = sweep(avg, held.scores, held.costs, scale)
                results[label].append((aiq(points, singles), qnc(points, singles)))
        for label, vals in results.items():
            a = np.array([v[0] for v in vals])
            q = np.array([v[1] for v in vals])
            each = " ".join(f"{x:.3f}" for x in a)
            print(f"{dataset:<18} {label:<30} {a.mean():9.4f} {np.median(q):11.2f}  {each}",
                  flush=True)


if __name__ == "__main__":
    main()
