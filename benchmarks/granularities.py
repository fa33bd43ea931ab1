"""Averaging cluster granularities, judged on validation parts of train (never on test).

Cluster policies with K = 10, 20, 40, 80, 160 and k-means seeds 0-2 are fitted on four fifths
of the train split; their expected errors are averaged (costs from the default policy) and swept
over λ on the held-out fifth. Five random parts; AIQ is the mean, QNC the median.

Usage: python benchmarks/granularities.py   (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import numpy as np
from _common import DATASETS, embedded_records, validation_parts

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, qnc, single_model_points
from switchpoint.policies import ClusterPolicy, Estimates, Inputs
from switchpoint.records import RecordSet

SIZES = (10, 20, 40, 80, 160)
SEEDS = (0, 1, 2)


def estimate(policy: ClusterPolicy, held: RecordSet) -> tuple[np.ndarray, np.ndarray]:
    est = policy.estimate(Inputs(embeddings=held.embeddings))
    order = [est.models.index(m) for m in held.models]
    return est.error[:, order], est.cost[:, order]


def main() -> None:
    print(f"{'records':<18} {'errors from':<32} {'AIQ mean':>9} {'QNC median':>11}  AIQ per part")
    for name in DATASETS:
        rs = embedded_records(name)
        results: dict[str, list[tuple[float, float]]] = {}
        for train, held in validation_parts(rs.split("train")):
            def fit(k: int = 40, seed: int = 0, part: RecordSet = train) -> ClusterPolicy:
                return ClusterPolicy(n_clusters=k, random_state=seed).fit(
                    Inputs(embeddings=part.embeddings), part.scores, part.costs, part.models)

            default = fit()
            default_error, cost = estimate(default, held)
            scale = float(max(default.global_cost().values()))
            errors = {(k, s): estimate(fit(k, s), held)[0] for k in SIZES for s in SEEDS}
            candidates = {
                "cluster K=40 (default)": default_error,
                "average, K=10..160 x 3 seeds": np.mean(list(errors.values()), axis=0),
                "average, K=20..80 x 3 seeds": np.mean(
                    [e for (k, _), e in errors.items() if 20 <= k <= 80], axis=0),
            }
            singles = single_model_points(held.scores, held.costs)
            for label, error in candidates.items():
                est = Estimates(models=list(held.models), error=error, cost=cost,
                                support=np.ones_like(error),
                                unit_ids=np.zeros(len(held), np.int64), unit_kind="cluster")
                points = sweep(est, held.scores, held.costs, scale)
                results.setdefault(label, []).append((aiq(points, singles),
                                                      qnc(points, singles)))
        for label, vals in results.items():
            a = [v[0] for v in vals]
            each = " ".join(f"{x:.3f}" for x in a)
            print(f"{name:<18} {label:<32} {np.mean(a):9.4f} "
                  f"{np.median([v[1] for v in vals]):11.2f}  {each}", flush=True)


if __name__ == "__main__":
    main()
