"""Cost-quality curves: route a labelled test set over a λ sweep and measure what it gets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from switchpoint.decision import decide
from switchpoint.evaluation.metrics import Point, routed_point
from switchpoint.policies import Estimates

Array = npt.NDArray[np.float64]

DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, *[float(x) for x in np.logspace(-3, 3, 73)])


def decide_all(
    error: Array, cost: Array, cost_weight: float, cost_scale: float,
    candidates: npt.NDArray[np.bool_] | None = None, *, stderr: Array | None = None,
    pessimism: float = 0.0,
) -> npt.NDArray[np.int64]:
    """The router's decision rule (:func:`switchpoint.decision.decide`) over every row; all
    models are candidates unless ``candidates`` says otherwise."""
    mask = np.ones(np.shape(error)[-1], dtype=bool) if candidates is None else candidates
    return decide(error, cost, mask, cost_weight, cost_scale, stderr=stderr,
                  pessimism=pessimism)


def sweep(
    est: Estimates,
    scores: Array,
    costs: Array,
    cost_scale: float,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> list[Point]:
    """One ``(mean cost, mean quality)`` point per λ, measured with the true labels."""
    return [routed_point(decide_all(est.error, est.cost, lam, cost_scale, stderr=est.stderr,
                                    pessimism=est.pessimism), scores, costs)
            for lam in lambdas]


def oracle_sweep(scores: Array, costs: Array, lambdas: Sequence[float] = DEFAULT_LAMBDAS
                 ) -> list[Point]:
    """The oracle's curve: per prompt, the true best ``(1 - score) + λ·cost`` choice."""
    scale = float(np.nanmax(np.nanmean(costs, axis=0)))
    # An unlabelled model scores +inf at every λ (an infinite cost would make 0·inf = NaN at
    # λ = 0 and the row's choice arbitrary), so it is never picked while any model is labelled.
    err = np.where(np.isnan(scores), np.inf, 1.0 - scores)
    cst = np.where(np.isnan(costs), 0.0, costs)
    return [routed_point(decide_all(err, cst, lam, scale), scores, costs)
            for lam in (*lambdas, 1e6)]
