"""Deference to the zero router: keep the best single model for the budget unless unsure.

For each λ, the zero router's choice is the model with the lowest *global* ``error + λ·cost``
(what the best single model for that budget would do). The cluster policy overrides it on a
prompt only when its own best choice scores at least ``delta`` lower there; ``delta = 0`` is the
plain decision rule. Judged on validation parts of train (five random 80/20 parts; AIQ mean,
QNC median over parts), never on test.

Usage: python benchmarks/deference.py
"""

from __future__ import annotations

import numpy as np
from _common import DATASETS, embedded_records, validation_parts

from switchpoint.evaluation.curves import DEFAULT_LAMBDAS
from switchpoint.evaluation.metrics import aiq, qnc, routed_point, single_model_points
from switchpoint.policies import ClusterPolicy, Inputs

DELTAS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)


def decide(error: np.ndarray, cost: np.ndarray, global_error: np.ndarray,
           global_cost: np.ndarray, lam: float, scale: float, delta: float) -> np.ndarray:
    score = error + lam * cost / scale
    tied = score <= score.min(axis=1, keepdims=True) + 1e-12
    pick = np.argmin(np.where(tied, cost, np.inf), axis=1)
    zero = int(np.argmin(global_error + lam * global_cost / scale + 1e-12 * global_cost))
    unsure = score[np.arange(len(pick)), pick] > score[:, zero] - delta
    return np.where(unsure, zero, pick)


def main() -> None:
    print(f"{'records':<18} {'delta':>6} {'AIQ mean':>9} {'QNC median':>11}  (validation)")
    for name in DATASETS:
        rs = embedded_records(name)
        train_all = rs.split("train")
        results: dict[float, list[tuple[float, float]]] = {d: [] for d in DELTAS}
        for train, held in validation_parts(train_all):
            policy = ClusterPolicy().fit(Inputs(embeddings=train.embeddings), train.scores,
                                         train.costs, train.models)
            est = policy.estimate(Inputs(embeddings=held.embeddings))
            order = [est.models.index(m) for m in held.models]
            error, cost = est.error[:, order], est.cost[:, order]
            g_err = np.array([policy.global_error()[m] for m in held.models])
            g_cost = np.array([policy.global_cost()[m] for m in held.models])
            scale = float(g_cost.max())
            singles = single_model_points(held.scores, held.costs)
            for delta in DELTAS:
                points = [routed_point(decide(error, cost, g_err, g_cost, lam, scale, delta),
                                       held.scores, held.costs) for lam in DEFAULT_LAMBDAS]
                results[delta].append((aiq(points, singles), qnc(points, singles)))
        for delta, vals in results.items():
            a = np.mean([v[0] for v in vals])
            q = np.median([v[1] for v in vals])
            print(f"{name:<18} {delta:>6g} {a:9.4f} {q:11.2f}", flush=True)


if __name__ == "__main__":
    main()
