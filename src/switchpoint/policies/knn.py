"""Nearest neighbours over labelled examples.

A prompt's expected error for a model is the similarity-weighted mean error of its ``k`` most
similar labelled examples (among those labelled for that model), shrunk toward the model's
global mean with ``prior_strength`` pseudo-examples. Expected cost is estimated the same way.
A new model only needs labels on a few examples: its neighbours are drawn from those.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from switchpoint._limits import DEFAULT_NEIGHBOURS
from switchpoint._messages import json_quoted
from switchpoint.policies.base import (
    Array,
    Estimates,
    Inputs,
    Policy,
    PolicyState,
    check_int,
    check_number,
    check_training_arrays,
    model_column,
    nan_mean,
    rounded_floats,
)


class KnnPolicy(Policy):
    name = "knn"
    requires = "embedding"
    unit_kind = "example"

    #: Per model, the mean cost that costs are read against (the λ scale's reference and,
    #: with a priced catalog, what an estimate's cost is relative to) when it is not the mean
    #: of the examples' costs: a policy learned from outcomes keeps the one it learned on
    #: (profile field ``mean_cost``), as the router that learned it read its costs.
    reference_cost_: Mapping[str, float] = MappingProxyType({})

    def __init__(
        self, k: int = DEFAULT_NEIGHBOURS, prior_strength: float = 2.0, sharpness: float = 10.0,
        pessimism: float = 0.0,
    ) -> None:
        self.k = k
        self.prior_strength = prior_strength
        self.sharpness = sharpness
        self.pessimism = pessimism

    def validate_params(self) -> None:
        check_int("k", self.k, low=1)
        check_number("prior_strength", self.prior_strength)
        check_number("sharpness", self.sharpness)
        check_number("pessimism", self.pessimism)

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        self.validate_params()
        inputs.require("embedding", self.name)
        assert inputs.embeddings is not None
        scores, costs = check_training_arrays(scores, costs, models, len(inputs))
        self.examples_ = inputs.embeddings.astype(np.float32)
        self.error_ = 1.0 - scores.astype(np.float64)
        self.cost_ = costs.astype(np.float64)
        self.models_ = list(models)
        self.reference_cost_ = {}
        return self

    def _global(self) -> tuple[Array, Array]:
        return nan_mean(self.error_), nan_mean(self.cost_)

    def _global_cost_(self) -> Array:
        mean = self._global()[1]
        return np.array([self.reference_cost_.get(m, mean[j])
                         for j, m in enumerate(self.models_)], dtype=np.float64)

    def _estimate(self, inputs: Inputs) -> Estimates:
        self._check_fitted()
        sims = self._vectors(inputs) @ self.examples_.T  # (n, N)
        n, n_ex = sims.shape
        n_models = len(self.models_)
        g_err, g_cost = self._global()
        error = np.empty((n, n_models))
        cost = np.empty((n, n_models))
        support = np.empty((n, n_models))
        neighbours = np.zeros((n, n_models))
        nearest = np.argmax(sims, axis=1).astype(np.int64)
        labelled = ~np.isnan(self.error_)
        full = labelled.all(axis=0)
        k = min(self.k, n_ex)
        rows = np.arange(n)[:, None]
        if full.any():
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n_ex else np.tile(
                np.arange(n_ex), (n, 1))
            w = self._weights(sims[rows, top])  # (n, k)
            for j in np.flatnonzero(full):
                e = self.error_[top, j]
                c = self.cost_[top, j]
                error[:, j], cost[:, j], support[:, j] = self._shrink(w, e, c, g_err[j], g_cost[j])
                neighbours[:, j] = k
        for j in np.flatnonzero(~full):  # models labelled on a subset: neighbours among those
            idx = np.flatnonzero(labelled[:, j])
            if idx.size == 0:
                error[:, j], cost[:, j], support[:, j] = g_err[j], g_cost[j], 0.0
                continue
            kk = min(self.k, idx.size)
            sub = sims[:, idx]
            top = np.argpartition(-sub, kk - 1, axis=1)[:, :kk] if kk < idx.size else np.tile(
                np.arange(idx.size), (n, 1))
            w = self._weights(sub[rows, top])
            ex = idx[top]
            error[:, j], cost[:, j], support[:, j] = self._shrink(
                w, self.error_[ex, j], self.cost_[ex, j], g_err[j], g_cost[j]
            )
            neighbours[:, j] = kk
        return Estimates(
            models=list(self.models_), error=error, cost=cost, support=support,
            unit_ids=nearest, unit_kind=self.unit_kind,
            stderr=self._stderr(support), pessimism=float(self.pessimism),
            neighbours=neighbours,
        )

    def _stderr(self, mass: Array) -> Array:
        """``sqrt(σ²/(m + s) + σ²/N)``: ``m`` the neighbours' similarity mass behind the
        estimate, ``s`` the prior's pseudo-examples, ``N`` the model's labelled examples and
        σ² the pooled variance of one label around its model's mean."""
        labelled = ~np.isnan(self.error_)
        total = labelled.sum(axis=0).astype(np.float64)
        mean = nan_mean(self.error_)
        var = float(np.sum(total * mean * (1.0 - mean)) / max(total.sum(), 1.0)) or 0.25
        return np.sqrt(var / np.maximum(mass + self.prior_strength, 1.0)
                       + var / np.maximum(total, 1.0))

    def _weights(self, sims: npt.NDArray[np.float32]) -> Array:
        """Each neighbour's weight, ``exp(sharpness · (similarity − 1))``: 1 for an identical
        prompt, less the less alike. In float64, of similarities at most 1 (float32's rounding
        can pass 1), so that no sharpness makes a weight NaN or infinite."""
        return np.exp(self.sharpness * (np.minimum(sims.astype(np.float64), 1.0) - 1.0))

    def _shrink(
        self, w: Array, e: Array, c: Array, g_err: float, g_cost: float
    ) -> tuple[Array, Array, Array]:
        # Weights are relative to a perfect match, so `prior_strength` counts pseudo-examples
        # at similarity 1; the effective sample size is the sum of weights.
        # Neighbours too unlike to weigh anything (exp underflows to 0) and no prior strength:
        # the global mean, as a cluster with no labels reads its prior (0/0 was NaN).
        mass = w.sum(axis=1)
        s = self.prior_strength
        denom = mass + s
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.where(denom > 0, ((w * e).sum(axis=1) + s * g_err) / denom, g_err)
            cst = np.where(denom > 0, ((w * c).sum(axis=1) + s * g_cost) / denom, g_cost)
        return err, cst, mass

    def _add_model(self, name: str, inputs: Inputs, scores: npt.ArrayLike,
                   costs: npt.ArrayLike) -> Self:
        self._check_new_model(name)
        vectors = self._vectors(inputs)
        scores, costs = check_training_arrays(model_column(scores), model_column(costs), [name],
                                              len(inputs))
        n_old = self.examples_.shape[0]
        n_new = len(inputs)
        self.examples_ = np.vstack([self.examples_, vectors])
        self.error_ = np.vstack([self.error_, np.full((n_new, self.error_.shape[1]), np.nan)])
        self.cost_ = np.vstack([self.cost_, np.full((n_new, self.cost_.shape[1]), np.nan)])
        new_err = np.full(n_old + n_new, np.nan)
        new_cost = np.full(n_old + n_new, np.nan)
        new_err[n_old:] = 1.0 - scores.reshape(-1)
        new_cost[n_old:] = costs.reshape(-1)
        self.error_ = np.column_stack([self.error_, new_err])
        self.cost_ = np.column_stack([self.cost_, new_cost])
        self.models_ = [*self.models_, name]
        return self

    def _remove_model(self, name: str) -> Self:
        self._check_removable(name)
        j = self.models_.index(name)
        keep = [i for i in range(len(self.models_)) if i != j]
        self.error_ = self.error_[:, keep]
        self.cost_ = self.cost_[:, keep]
        self.models_ = [self.models_[i] for i in keep]
        used = ~np.isnan(self.error_).all(axis=1)  # drop examples no remaining model labels
        self.examples_, self.error_, self.cost_ = (
            self.examples_[used], self.error_[used], self.cost_[used])
        return self

    def get_state(self) -> PolicyState:
        self._check_fitted()
        profiles: dict[str, dict[str, Any]] = {}
        for j, m in enumerate(self.models_):
            profiles[m] = {
                "error": rounded_floats(self.error_[:, j], 6, nan_as_none=True),
                "cost": rounded_floats(self.cost_[:, j], None, nan_as_none=True),
            }
            if np.isfinite(self.reference_cost_.get(m, np.nan)):
                profiles[m]["mean_cost"] = float(self.reference_cost_[m])
        return PolicyState(
            name=self.name, params=self.get_params(),
            arrays={"examples": self.examples_}, profiles=profiles,
        )

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = cls(**state.params)
        policy.examples_ = state.arrays["examples"].astype(np.float32)
        models = list(state.profiles)

        def col(m: str, key: str) -> npt.NDArray[np.float64]:
            values = state.profiles[m][key]
            if len(values) != policy.examples_.shape[0]:
                raise ValueError(
                    f"profile of {json_quoted(m)} has {len(values)} {key} values but there are "
                    f"{policy.examples_.shape[0]} examples"
                )
            return np.array([np.nan if v is None else float(v) for v in values])

        policy.error_ = np.column_stack([col(m, "error") for m in models])
        policy.cost_ = np.column_stack([col(m, "cost") for m in models])
        policy.models_ = models
        policy.reference_cost_ = {m: float(state.profiles[m]["mean_cost"]) for m in models
                                  if "mean_cost" in state.profiles[m]}
        return policy

    @property
    def n_units(self) -> int:
        self._check_fitted()
        return int(self.examples_.shape[0])

    @property
    def vector_width(self) -> int | None:
        examples = getattr(self, "examples_", None)
        return None if examples is None else int(examples.shape[-1])

    def _global_error_(self) -> Array:
        return self._global()[0]

    def _unit_estimate(self, unit_id: int) -> Estimates:
        unit_id = self.check_unit(unit_id)
        return self._estimate(Inputs(embeddings=self.examples_[unit_id : unit_id + 1]))
