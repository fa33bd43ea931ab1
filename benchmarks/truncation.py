"""Which part of a long prompt to embed: head, tail or head+tail, and how many tokens.

Fits the cluster and knn policies on train with each embedding setting and prints test-split AIQ
and QNC. Usage: python benchmarks/truncation.py [embedder-id ...]
"""

from __future__ import annotations

import sys

import numpy as np
from _common import DATASETS, cached_embeddings, dataset_records

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, qnc, single_model_points
from switchpoint.policies import ClusterPolicy, Inputs, KnnPolicy, Policy

SETTINGS = [
    "all-MiniLM-L6-v2/head-256",
    "all-MiniLM-L6-v2/tail-256",
    "all-MiniLM-L6-v2/head_tail-256",
    "all-MiniLM-L6-v2/tail-128",
    "all-MiniLM-L6-v2/tail-64",
]


def main(settings: list[str]) -> None:
    print(f"{'dataset':<20} {'embedder':<34} {'policy':<8} {'AIQ':>6} {'QNC':>6}")
    print("# cluster: mean AIQ and median QNC over k-means seeds 0-4")
    for name in DATASETS:
        rs = dataset_records(name)
        for eid in settings:
            rs.embeddings = cached_embeddings(name, rs.prompts, eid)
            train, test = rs.split("train"), rs.split("test")
            singles = single_model_points(test.scores, test.costs)
            # k-means depends on its seed: report the mean over five seeds.
            candidates: dict[str, list[Policy]] = {
                "cluster": [ClusterPolicy(random_state=s) for s in range(5)],
                "knn": [KnnPolicy()]}
            for label, policies in candidates.items():
                aiqs, qncs = [], []
                for policy in policies:
                    policy.fit(Inputs(embeddings=train.embeddings), train.scores, train.costs,
                               train.models)
                    est = policy.estimate(Inputs(embeddings=test.embeddings))
                    scale = float(np.max(list(policy.global_cost().values())))
                    pts = sweep(est, test.scores, test.costs, scale)
                    aiqs.append(aiq(pts, singles))
                    qncs.append(qnc(pts, singles))
                print(f"{name:<20} {eid:<34} {label:<8} {np.mean(aiqs):6.3f} "
                      f"{np.median(qncs):6.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or SETTINGS)
