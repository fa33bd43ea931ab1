"""A small weights package with two kinds of prompts, for learning tests (fake embedder).

Math prompts: ``strong`` is right 90% of the time, ``runner`` 75%, ``cheap`` 20%. Poems: every
model 90%. Costs 10 / 5 / 1. 150 labelled prompts of each kind, two clusters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from switchpoint.policies import ClusterPolicy, Inputs, KnnPolicy, Policy
from switchpoint.policies.tiers import TiersPolicy
from switchpoint.weights import WeightsPackage

MODELS = ["strong", "runner", "cheap"]
N_PER_KIND = 150


def math_prompt(i: int) -> str:
    return (f"compute the definite integral of the polynomial function over the interval "
            f"and simplify the exact result case {i} variant {i * 7 % 13}")


def poem_prompt(i: int) -> str:
    return (f"write a short rhyming poem about the quiet autumn forest at dusk with falling "
            f"leaves verse {i} mood {i * 5 % 11}")


def labels() -> tuple[list[str], np.ndarray, np.ndarray]:
    prompts = [math_prompt(i) for i in range(N_PER_KIND)] + [
        poem_prompt(i) for i in range(N_PER_KIND)]
    rng = np.random.default_rng(0)
    scores = np.zeros((len(prompts), 3))
    for j, p in enumerate([0.9, 0.75, 0.2]):
        scores[:N_PER_KIND, j] = rng.permutation(np.arange(N_PER_KIND) < p * N_PER_KIND)
    scores[N_PER_KIND:] = rng.random((N_PER_KIND, 3)) < 0.9
    costs = np.tile([10.0, 5.0, 1.0], (len(prompts), 1))
    return prompts, scores, costs


def two_kinds_package(embedder: Any, policy: str = "cluster") -> WeightsPackage:
    """The labels fitted by ``policy``: cluster, knn (on vectors) or tiers (on the text)."""
    prompts, scores, costs = labels()
    if policy == "tiers":
        model: Policy = TiersPolicy().fit(Inputs(texts=prompts), scores, costs, MODELS)
        return WeightsPackage(policy=model, embedder_id=embedder.id,
                              dimension=embedder.dimension)
    model = ClusterPolicy(n_clusters=2, n_coarse=1) if policy == "cluster" else KnnPolicy(k=10)
    model.fit(Inputs(embeddings=embedder.embed(prompts)), scores, costs, MODELS)
    return WeightsPackage(policy=model, embedder_id=embedder.id, dimension=embedder.dimension)
