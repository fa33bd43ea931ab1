"""A learned cluster map: K-means in a supervised projection of the embedding (a lead, not adopted).

The default clusters the raw MiniLM embedding, so clusters follow topic. Here a ridge regression
from the embedding to every model's score is fitted on train; the top ``rank`` directions of its
fitted values (reduced-rank regression) span a space where prompts that the same models get
right lie close (each direction scaled to unit variance); the cluster policy then runs in that
space (soft assignment, temperature 0.2).
``avg`` averages that policy's expected errors with the default cluster policy's.

Judged first on validation parts of train (five random 80/20 parts: AIQ mean, QNC median), then,
for the record, once on the test split. Usage: python benchmarks/supervised_map.py
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import numpy.typing as npt
from _common import DATASETS, embedded_records, validation_parts

from switchpoint.evaluation.curves import sweep
from switchpoint.evaluation.metrics import aiq, qnc, single_model_points
from switchpoint.policies import ClusterPolicy, Estimates, Inputs
from switchpoint.records import RecordSet


class SupervisedMapCluster(ClusterPolicy):
    """The cluster policy over ``normalise((x - mean) @ P)``, P from reduced-rank ridge."""

    def __init__(self, rank: int = 8, ridge: float = 1000.0, **kwargs: Any) -> None:
        kwargs.setdefault("temperature", 0.2)
        super().__init__(**kwargs)
        self.rank, self.ridge = rank, ridge

    def _project(self, x: np.ndarray) -> np.ndarray:
        z = (x.astype(np.float64) - self.mean_) @ self.map_
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(
            np.float32)

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        assert inputs.embeddings is not None
        x = inputs.embeddings.astype(np.float64)
        given = np.asarray(scores, dtype=np.float64)
        y = np.where(np.isnan(given), np.nanmean(given, axis=0), given)
        self.mean_ = x.mean(axis=0)
        xc, yc = x - self.mean_, y - y.mean(axis=0)
        w = np.linalg.solve(xc.T @ xc + self.ridge * np.eye(x.shape[1]), xc.T @ yc)
        _, _, vt = np.linalg.svd(xc @ w, full_matrices=False)
        self.map_ = w @ vt[: self.rank].T
        # each direction scaled to unit variance on train, so no one direction dominates
        self.map_ /= np.linalg.norm(xc @ self.map_, axis=0, keepdims=True) / np.sqrt(len(x))
        return super()._fit(Inputs(embeddings=self._project(x)), scores, costs, models)

    def _estimate(self, inputs: Inputs) -> Estimates:
        assert inputs.embeddings is not None
        return super()._estimate(Inputs(embeddings=self._project(inputs.embeddings)))


def estimates(train: RecordSet, held: RecordSet) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                          float]:
    errors, cost, scale = {}, np.zeros(0), 1.0
    for label, policy in (("cluster (default)", ClusterPolicy()),
                          ("supervised map", SupervisedMapCluster())):
        policy.fit(Inputs(embeddings=train.embeddings), train.scores, train.costs, train.models)
        est = policy.estimate(Inputs(embeddings=held.embeddings))
        order = [est.models.index(m) for m in held.models]
        errors[label] = est.error[:, order]
        if label == "cluster (default)":
            cost = est.cost[:, order]
            scale = float(max(policy.global_cost().values()))
    errors["avg of both"] = (errors["cluster (default)"] + errors["supervised map"]) / 2
    return errors, cost, scale


def scored(train: RecordSet, held: RecordSet) -> dict[str, tuple[float, float]]:
    errors, cost, scale = estimates(train, held)
    singles = single_model_points(held.scores, held.costs)
    out = {}
    for label, error in errors.items():
        est = Estimates(models=list(held.models), error=error, cost=cost,
                        support=np.ones_like(error), unit_ids=np.zeros(len(held), np.int64),
                        unit_kind="cluster")
        points = sweep(est, held.scores, held.costs, scale)
        out[label] = (aiq(points, singles), qnc(points, singles))
    return out


def main() -> None:
    print(f"{'records':<18} {'policy':<18} {'validation AIQ / QNC':>21} {'test AIQ / QNC':>16}")
    for name in DATASETS:
        rs = embedded_records(name)
        train_all = rs.split("train")
        parts = [scored(train, held) for train, held in validation_parts(train_all)]
        test = scored(train_all, rs.split("test"))
        for label in test:
            a = np.mean([p[label][0] for p in parts])
            q = np.median([p[label][1] for p in parts])
            print(f"{name:<18} {label:<18} {a:13.4f} / {q:4.2f} {test[label][0]:9.4f} / "
                  f"{test[label][1]:4.2f}", flush=True)


if __name__ == "__main__":
    main()
