"""Hyper-parameters chosen on a validation part of train, never on test.

Three random 80/20 splits of each file's train split; fit on the 80%, AIQ on the 20%. Compares
the cluster policy's hard and soft assignment (and two soft temperatures) and prints the mean.
Usage: python benchmarks/validation.py
"""

from __future__ import annotations

import numpy as np
from _common import DATASETS, cached_embeddings, dataset_records

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, single_model_points
from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.policies.cluster import Assignment

CANDIDATES: tuple[tuple[Assignment, float], ...] = (("hard", 0.05), ("soft", 0.05),
                                                   ("soft", 0.1))


def main() -> None:
    print(f"{'records':<18} {'assignment':<10} {'temperature':>11} {'validation AIQ':>15}")
    for name in DATASETS:
        rs = dataset_records(name)
        rs.embeddings = cached_embeddings(name, rs.prompts, "all-MiniLM-L6-v2/tail-64")
        train = rs.split("train")
        rng = np.random.default_rng(0)
        scores: dict[tuple[str, float], list[float]] = {c: [] for c in CANDIDATES}
        for _ in range(3):
            perm = rng.permutation(len(train))
            cut = int(0.8 * len(train))
            fit_part, val = train.subset(perm[:cut]), train.subset(perm[cut:])
            singles = single_model_points(val.scores, val.costs)
            for assignment, temperature in CANDIDATES:
                policy = ClusterPolicy(assignment=assignment, temperature=temperature).fit(
                    Inputs(embeddings=fit_part.embeddings), fit_part.scores, fit_part.costs,
                    fit_part.models)
                est = policy.estimate(Inputs(embeddings=val.embeddings))
                scale = float(max(policy.global_cost().values()))
                scores[(assignment, temperature)].append(
                    aiq(sweep(est, val.scores, val.costs, scale), singles))
        for (kind, temp), values in scores.items():
            print(f"{name:<18} {kind:<10} {temp:>11} {np.mean(values):15.4f}")


if __name__ == "__main__":
    main()
