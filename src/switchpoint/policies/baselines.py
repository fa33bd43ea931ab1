"""Baselines to measure against: one fixed model, or a uniformly random one."""

from __future__ import annotations

import copy
from typing import Self

import numpy as np
import numpy.typing as npt

from switchpoint._messages import json_quoted, listed_names
from switchpoint.errors import InvalidInputError
from switchpoint.policies.base import (
    Array,
    Estimates,
    Inputs,
    Policy,
    PolicyState,
    check_int,
)

# Added to every other model's expected error so the fixed model wins at any λ the decision rule
# can express (normalised costs are at most 1 per unit of λ; λ is capped far below this).
_FIXED_PENALTY = 1e6


def _one_number(state: PolicyState, model: str, key: str) -> float:
    """The one number a baseline's profile of ``model`` holds under ``key`` (it has one unit,
    and fitting labels every model: a null, no label, would be routed on as NaN)."""
    values = state.profiles[model][key]
    if len(values) != 1 or values[0] is None:
        raise ValueError(f"the profile of {json_quoted(model)} holds {json_quoted(values, 80)} "
                         f"as {json_quoted(key)}; a {state.name} policy's profile holds one "
                         "number there, the model's mean over all its labels")
    return float(values[0])


class _GlobalMeans(Policy):
    """Shared state for baselines: each model's global mean error and cost (what every
    policy learns by default: :meth:`Policy._fit`)."""

    requires = "none"
    unit_kind = "global"

    def _add_model(self, name: str, inputs: Inputs, scores: npt.ArrayLike,
                   costs: npt.ArrayLike) -> Self:
        return super()._add_model(name, inputs, scores, costs)  # (the means are all it keeps)

    def _remove_model(self, name: str) -> Self:
        return super()._remove_model(name)

    def get_state(self) -> PolicyState:
        self._check_fitted()
        profiles = {
            m: {"count": [float(self.count_[j])], "error": [float(self.error_[j])],
                "cost": [float(self.cost_[j])]}
            for j, m in enumerate(self.models_)
        }
        return PolicyState(name=self.name, params=self.get_params(), arrays={}, profiles=profiles)

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = cls(**state.params)
        policy.models_ = list(state.profiles)
        policy.error_, policy.cost_, policy.count_ = (
            np.array([_one_number(state, m, key) for m in policy.models_], float)
            for key in ("error", "cost", "count"))
        return policy

    def _unit_estimate(self, unit_id: int) -> Estimates:
        self.check_unit(unit_id)
        return self.estimate(Inputs(texts=[""]))

    def _rows(self, n: int, error: Array) -> Estimates:
        return Estimates(
            models=list(self.models_), error=error,
            cost=np.tile(self.cost_, (n, 1)), support=np.tile(self.count_, (n, 1)),
            unit_ids=np.zeros(n, dtype=np.int64), unit_kind=self.unit_kind,
        )


class FixedPolicy(_GlobalMeans):
    """Always the same model (the rest are ranked behind it by their global error)."""

    name = "fixed"

    def __init__(self, model: str | None = None) -> None:
        self.model = model

    def validate_params(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise InvalidInputError("model", "must be a model name or None; got "
                                             f"{json_quoted(self.model)}")

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        self.validate_params()
        super()._fit(inputs, scores, costs, models)
        self._choose_model()
        return self

    def _choose_model(self) -> None:
        """``model_``: the named model, or by default the best single model it was fitted on."""
        if self.model is None:
            self.model_ = self.models_[int(np.nanargmin(self.error_))]
        elif self.model not in self.models_:
            raise InvalidInputError("model", f"{json_quoted(self.model)} is not among "
                                             f"{listed_names(self.models_, quoted=True)}")
        else:
            self.model_ = self.model

    def _params_changed(self, names: set[str]) -> None:
        self._choose_model()

    def get_state(self) -> PolicyState:
        state = super().get_state()
        state.meta["model"] = self.model_
        return state

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = super().from_state(state)
        chosen = state.meta.get("model")
        if chosen is None or policy.model is not None:
            policy._choose_model()
        elif chosen not in policy.models_:
            raise ValueError(f"the fixed model {json_quoted(chosen)} has no profile")
        else:
            policy.model_ = str(chosen)
        return policy

    def _remove_model(self, name: str) -> Self:
        if name == getattr(self, "model_", None):
            raise InvalidInputError("name", f"{json_quoted(name)} is the fixed policy's model; "
                                            "fit the "
                                            "policy with another model first")
        return super()._remove_model(name)

    def _estimate(self, inputs: Inputs) -> Estimates:
        self._check_fitted()
        error = self.error_ + np.where(np.array(self.models_) == self.model_, 0.0, _FIXED_PENALTY)
        return self._rows(len(inputs), np.tile(error, (len(inputs), 1)))


class RandomPolicy(_GlobalMeans):
    """A uniformly random model per request (seeded, so runs repeat)."""

    name = "random"

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def validate_params(self) -> None:
        check_int("random_state", self.random_state, low=0)

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        self.validate_params()
        super()._fit(inputs, scores, costs, models)
        self.rng_ = np.random.default_rng(self.random_state)
        return self

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = super().from_state(state)
        policy.rng_ = np.random.default_rng(policy.random_state)
        return policy

    def _params_changed(self, names: set[str]) -> None:
        self.rng_ = np.random.default_rng(self.random_state)

    def __copy__(self) -> Self:
        """A copy drawing from a generator of its own, at this one's state: a package changed
        from this one (add_model, remove_model) draws nothing from this one's routers' draws."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        if hasattr(self, "rng_"):
            twin.rng_ = copy.deepcopy(self.rng_)
        return twin

    def _estimate(self, inputs: Inputs) -> Estimates:
        self._check_fitted()
        n = len(inputs)
        noise = self.rng_.random((n, len(self.models_))) * _FIXED_PENALTY
        return self._rows(n, noise)
