"""Ideas for beating the naive routers, each measured the same way (fit on train, AIQ/QNC on test).

Every idea changes one thing against the default cluster policy:

- granularity: K-means with 10..160 clusters (mean over seeds 0-2), and the average of all of
  them (shrinkage across granularities);
- per-model logistic regression on [embedding, log length] (calibrated per-model predictors),
  L2 strength 10 (chosen on a validation tenth of train);
- ensembles of the above with kNN;
- cost: per-prompt cost regressed on prompt length, and the *true* cost as an upper bound on what
  better cost prediction could give.

Usage: python benchmarks/ideas.py   (embeddings are cached by benchmarks/_common.py)
"""

from __future__ import annotations

import numpy as np
from _common import DATASETS, embedded_records

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import Point, aiq, qnc, single_model_points
from switchpoint.policies import ClusterPolicy, Estimates, Inputs, KnnPolicy
from switchpoint.records import RecordSet


def logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 25) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (bias unpenalised)."""
    w = np.zeros(x.shape[1])
    reg = l2 * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def features(rs: RecordSet) -> np.ndarray:
    assert rs.embeddings is not None
    length = np.log1p(np.array([len(p) for p in rs.prompts], dtype=float))[:, None]
    return np.hstack([rs.embeddings, (length - 6.0) / 2.0, np.ones((len(rs), 1))])


def logistic_error(train: RecordSet, test: RecordSet, l2: float = 10.0) -> np.ndarray:
    xtr, xte = features(train), features(test)
    out = np.zeros((len(test), len(train.models)))
    for j in range(len(train.models)):
        seen = ~np.isnan(train.scores[:, j])
        w = logistic(xtr[seen], train.scores[seen, j], l2)
        out[:, j] = 1.0 - 1.0 / (1.0 + np.exp(-(xte @ w)))
    return out


def cost_by_length(train: RecordSet, test: RecordSet) -> np.ndarray:
    ltr = np.array([len(p) for p in train.prompts], dtype=float)
    lte = np.array([len(p) for p in test.prompts], dtype=float)
    out = np.zeros((len(test), len(train.models)))
    for j in range(len(train.models)):
        seen = ~np.isnan(train.costs[:, j])
        a = np.column_stack([np.ones(seen.sum()), ltr[seen]])
        coef, *_ = np.linalg.lstsq(a, train.costs[seen, j], rcond=None)
        out[:, j] = np.maximum(coef[0] + coef[1] * lte, 1e-9)
    return out


def score(error: np.ndarray, cost: np.ndarray, test: RecordSet, scale: float,
          singles: list[Point]) -> tuple[float, float]:
    est = Estimates(models=test.models, error=error, cost=cost, support=np.ones_like(error),
                    unit_ids=np.zeros(len(error), dtype=np.int64), unit_kind="-")
    pts = sweep(est, test.scores, test.costs, scale)
    return aiq(pts, singles), qnc(pts, singles)


def main() -> None:
    print(f"{'records':<18} {'idea':<44} {'AIQ':>6} {'QNC':>6}")
    for name in DATASETS:
        rs = embedded_records(name)
        train, test = rs.split("train"), rs.split("test")
        singles = single_model_points(test.scores, test.costs)
        tr_in, te_in = Inputs(embeddings=train.embeddings), Inputs(embeddings=test.embeddings)

        base = ClusterPolicy().fit(tr_in, train.scores, train.costs, train.models)
        scale = float(max(base.global_cost().values()))

        def row(label: str, error: np.ndarray, cost: np.ndarray, _n: str = name,
                _t: RecordSet = test, _s: float = scale, _p: list[Point] = singles) -> None:
            a, q = score(error, cost, _t, _s, _p)
            print(f"{_n:<18} {label:<44} {a:6.3f} {q:6.2f}", flush=True)

        b = base.estimate(te_in)
        row("cluster K=40 (default)", b.error, b.cost)
        grains = []
        for k in (10, 20, 40, 80, 160):
            ests = [ClusterPolicy(n_clusters=k, random_state=s).fit(
                tr_in, train.scores, train.costs, train.models).estimate(te_in) for s in range(3)]
            grains.extend(ests)
            aiqs = [score(e.error, e.cost, test, scale, singles)[0] for e in ests]
            print(f"{name:<18} {f'cluster K={k} (mean of 3 seeds)':<44} {np.mean(aiqs):6.3f}",
                  flush=True)
        multi_err = np.mean([e.error for e in grains], axis=0)
        multi_cost = np.mean([e.cost for e in grains], axis=0)
        row("average over K=10..160 x 3 seeds", multi_err, multi_cost)
        knn = KnnPolicy().fit(tr_in, train.scores, train.costs, train.models).estimate(te_in)
        row("knn k=25", knn.error, knn.cost)
        lr = logistic_error(train, test)
        row("logistic per model [emb, log len]", lr, b.cost)
        row("ensemble: multi-K + logistic", (multi_err + lr) / 2, multi_cost)
        row("ensemble: multi-K + knn + logistic", (multi_err + knn.error + lr) / 3, multi_cost)
        row("multi-K error, cost regressed on length", multi_err, cost_by_length(train, test))
        row("multi-K error, TRUE cost (upper bound)", multi_err, test.costs)


if __name__ == "__main__":
    main()
