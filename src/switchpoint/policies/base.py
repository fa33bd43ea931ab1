"""What every routing policy is: an estimator from inputs to per-model expected error and cost.

A policy is shaped like a scikit-learn estimator: hyper-parameters in the constructor, ``fit``
returns ``self``, learned state in attributes ending in ``_``, nothing happens at import. The
constructor only stores its arguments: ``get_params`` and ``set_params`` are derived from its
signature, and the values are checked by ``validate_params`` (called by ``fit``, ``set_params``
and when a policy is rebuilt from a weights package).

Every learned policy here works the same way underneath: it maps an input to a distribution over
*units* (clusters, tiers, neighbouring examples) and reads each model's measured error and cost on
those units from a :class:`ProfileTable`. Units with few labels are shrunk toward a coarser
estimate with an explicit prior strength, never filled silently; ``support`` reports how many
labelled examples stand behind every number.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt

from switchpoint._label_arrays import label_arrays
from switchpoint._messages import got, json_quoted, listed_keys, listed_names, one_of
from switchpoint._numbers import checked_number
from switchpoint.errors import InvalidInputError, NotFittedError, UnknownModelError

Array = npt.NDArray[np.float64]
Requirement = Literal["embedding", "text", "none"]

#: How many answers a unit's expected cost counts as, beyond its labels, against measured
#: costs (:meth:`TablePolicy.with_evidence`): one, so a unit's cost follows what its answers
#: really cost after a few of them.
COST_PRIOR_STRENGTH = 1.0


@dataclass(frozen=True, init=False)
class Inputs:
    """A batch to route: texts, embeddings, or both (aligned by row).

    ``embeddings`` is given as anything numpy reads as a ``(rows, dimension)`` table of
    finite numbers (an array of any float or integer type, nested lists), one row per text
    when both are given, and held as a float32 array; anything else is an
    :class:`InvalidInputError` naming ``embeddings``."""

    texts: list[str] | None
    embeddings: npt.NDArray[np.float32] | None

    def __init__(self, texts: list[str] | None = None,
                 embeddings: npt.ArrayLike | None = None) -> None:
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "embeddings", None if embeddings is None
                           else _embedding_rows(embeddings, texts))

    def __len__(self) -> int:
        if self.embeddings is not None:
            return int(self.embeddings.shape[0])
        return len(self.texts or [])

    def require(self, what: Requirement, policy: str) -> None:
        if what == "embedding" and self.embeddings is None:
            raise InvalidInputError("embedding", f"the {json_quoted(policy)} policy needs an "
                                                 "embedding")
        if what == "text" and self.texts is None:
            raise InvalidInputError(
                "prompt", f"the {json_quoted(policy)} policy reads the prompt text; an embedding "
                          "alone "
                "is not enough. Send the prompt, or use the cluster or knn policy",
            )


def _embedding_rows(embeddings: npt.ArrayLike, texts: list[str] | None
                    ) -> npt.NDArray[np.float32]:
    """``embeddings`` as :class:`Inputs` holds them (see there), or an
    :class:`InvalidInputError` naming ``embeddings``."""
    try:
        given = np.asarray(embeddings)
    except ValueError:  # (ragged nested lists)
        given = np.asarray(None)
    numeric = given.dtype.kind in "iuf"
    if given.ndim != 2 or not numeric:
        had = f"shape {given.shape}" if numeric else f"an array of {given.dtype}"
        raise InvalidInputError("embeddings", f"must be a (rows, dimension) array of "
                                              f"numbers, one row per input; got {had} (one "
                                              "vector is one row: vector[None, :])")
    finite = np.isfinite(given)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise InvalidInputError("embeddings", f"row {row} holds a value that is not finite "
                                              "(NaN or infinity)")
    if texts is not None and len(texts) != given.shape[0]:
        raise InvalidInputError("embeddings", f"has {given.shape[0]} rows for "
                                              f"{len(texts)} texts; give one row per text")
    return given.astype(np.float32, copy=False)


@dataclass
class Estimates:
    """Per-row, per-model predictions: ``error[i, j]`` for model ``models[j]`` on row ``i``.

    ``support`` counts the labelled examples behind each estimate; ``stderr`` (when the policy
    knows it) is the estimate's standard error, from the evidence behind it, and ``pessimism``
    is how many standard errors beyond the best-evidenced candidate's the decision rule charges
    (see :mod:`switchpoint.decision`). ``neighbours`` is set by a policy whose estimate is a
    similarity-weighted mean of the examples nearest the prompt: how many labelled examples
    each estimate averages, while ``support`` is what their similarity makes them worth (the
    sum of their weights, each 1 for an identical prompt).
    """

    models: list[str]
    error: Array
    cost: Array
    support: Array
    unit_ids: npt.NDArray[np.int64]
    unit_kind: str
    unit_probabilities: Array | None = None
    notes: list[str] = field(default_factory=list)
    stderr: Array | None = None
    pessimism: float = 0.0
    neighbours: Array | None = None


@dataclass
class PolicyState:
    """Everything a fitted policy needs to be rebuilt: parameters, shared arrays, profiles."""

    name: str
    params: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]
    profiles: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)


def nan_mean(values: Array, axis: int = 0) -> Array:
    count = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


#: Past this magnitude a value scaled for rounding may be off its exact product by a millionth
#: (a double carries 53 bits): such values are rounded by Python's round, one at a time.
_ROUND_EXACT_LIMIT = float(2**32)
_ROUND_MARGIN = 1e-6


def rounded_floats(values: npt.ArrayLike, digits: int | None, *,
                   nan_as_none: bool) -> list[float | None]:
    """``values`` as a list of Python floats for a JSON document, each
    ``round(float(v), digits)`` (unrounded when ``digits`` is None), NaN as None when
    ``nan_as_none`` (else NaN): the same floats the loop would give, a weights id hashes
    their text, at numpy's speed. The product of a value and ``10**digits`` is itself
    rounded to a double, so it may fall on the other side of a half-way point than the
    exact product Python's round reads: values whose product lies within a millionth of one
    (or is not finite, or too large to tell) are rounded by Python's round instead."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    out: list[float | None]
    if digits is None:
        out = list(flat.tolist())
    else:
        scale = 10.0 ** digits
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = flat * scale
            near_half = np.abs(scaled - np.floor(scaled) - 0.5)
            clear = (near_half > _ROUND_MARGIN) & (np.abs(scaled) < _ROUND_EXACT_LIMIT)
        out = list((np.rint(scaled) / scale).tolist())
        for i in np.flatnonzero(~clear).tolist():
            out[i] = round(float(flat[i]), digits)
    if nan_as_none:
        for i in np.flatnonzero(np.isnan(flat)).tolist():
            out[i] = None
    return out


@dataclass(frozen=True)
class Kept:
    """What a table policy learned from outcomes keeps of the policy it learned on, for one
    model, beyond its tables (see :meth:`TablePolicy.with_evidence`): each unit's expected
    cost (``cost``), the model's mean cost that costs are read against (``mean_cost``: the λ
    scale's reference and, with a priced catalog, what a unit's cost is relative to), the
    labels behind each unit's standard error (``stderr_count``: the labels before the
    outcomes) and one label's variance (``label_variance``). Its tables alone would give
    other numbers: a weights package carries these (profile fields ``expected_cost``,
    ``mean_cost``, ``stderr_count`` and ``label_variance``), so that a policy loaded from it
    estimates what the learned one did. Units past ``cost``'s (clusters grown later) have no
    labels before their outcomes and cost the mean cost."""

    cost: Array
    mean_cost: float
    stderr_count: Array
    label_variance: float

    #: The profile fields that hold it, all present or none.
    FIELDS: ClassVar[tuple[str, ...]] = ("expected_cost", "mean_cost", "stderr_count",
                                         "label_variance")

    def to_profile(self) -> dict[str, Any]:
        return {"expected_cost": [float(c) for c in self.cost], "mean_cost": self.mean_cost,
                "stderr_count": [float(c) for c in self.stderr_count],
                "label_variance": self.label_variance}

    @classmethod
    def from_profile(cls, model: str, profile: Mapping[str, Any], n_units: int) -> Kept | None:
        """The kept estimates a model's profile holds (None: it holds none, as packages that
        are no export of a learned router do); ``ValueError`` naming what does not fit."""
        held = [key for key in cls.FIELDS if key in profile]
        if not held:
            return None
        if len(held) < len(cls.FIELDS):
            missing = [key for key in cls.FIELDS if key not in profile]
            raise ValueError(f"profile of {json_quoted(model)} has {listed_keys(held)} but not "
                             f"{listed_keys(missing)} (what an export of a learned router "
                             "writes together)")
        for key in ("expected_cost", "stderr_count"):
            if len(profile[key]) != n_units:
                raise ValueError(f"profile of {json_quoted(model)} has {len(profile[key])} {key} "
                                 "values "
                                 f"for {n_units} units")
        return cls(cost=np.array(profile["expected_cost"], dtype=np.float64),
                   mean_cost=float(profile["mean_cost"]),
                   stderr_count=np.array(profile["stderr_count"], dtype=np.float64),
                   label_variance=float(profile["label_variance"]))


def evidence_variance(var: float, n: Array, prior_evidence: float | Array) -> Array:
    """The variance of expected errors backed by ``n[u, j]`` labels (or ``n[u]``, one
    model's): ``σ²/(n + s) + σ²/N`` (see :meth:`ProfileTable.variance`)."""
    total = np.maximum(n.sum(axis=0), 1.0)
    return np.asarray(var / np.maximum(n + prior_evidence, 1.0) + var / total)


class ProfileTable:
    """Per-unit, per-model counts and mean error / mean cost (NaN where a unit has no label)."""

    def __init__(self, models: list[str], count: Array, error: Array, cost: Array) -> None:
        self.models = list(models)
        self.count = count
        self.error = error
        self.cost = cost

    @classmethod
    def from_assignments(
        cls, weights: Array, scores: Array, costs: Array, models: list[str]
    ) -> ProfileTable:
        """Aggregate examples into units. ``weights`` is ``(n_examples, n_units)``."""
        labelled = ~np.isnan(scores)
        err = np.where(labelled, 1.0 - np.nan_to_num(scores), 0.0)
        cst = np.where(labelled, np.nan_to_num(costs), 0.0)
        count = weights.T @ labelled.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.where(count > 0, (weights.T @ err) / count, np.nan)
            cost = np.where(count > 0, (weights.T @ cst) / count, np.nan)
        return cls(models, count, error, cost)

    @property
    def n_units(self) -> int:
        return int(self.count.shape[0])

    def global_means(self) -> tuple[Array, Array, Array]:
        total = self.count.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.nansum(self.error * self.count, axis=0) / total
            cst = np.nansum(self.cost * self.count, axis=0) / total
        return err, cst, total

    def shrunk(
        self, prior_error: Array, prior_cost: Array, strength: float | Array
    ) -> tuple[Array, Array]:
        """``(n·mean + strength·prior) / (n + strength)``: few labels lean on the prior.
        ``strength`` is one number, or one per model."""
        n = self.count
        err = np.where(n > 0, self.error, 0.0)
        cst = np.where(n > 0, self.cost, 0.0)
        denom = n + strength
        # No labels and no prior strength: the prior itself (0/0 would poison every estimate).
        with np.errstate(invalid="ignore", divide="ignore"):
            return (
                np.where(denom > 0, (n * err + strength * prior_error) / denom, prior_error),
                np.where(denom > 0, (n * cst + strength * prior_cost) / denom, prior_cost),
            )

    def label_variance(self) -> float:
        """The pooled within-unit variance of one label's error: ``Σ n·e(1−e) / Σ n`` (exact for
        0/1 scores, an upper bound for graded ones); 0.25, the most a 0/1 label can vary, when
        the table is empty."""
        n = np.where(self.count > 0, self.count, 0.0)
        e = np.nan_to_num(self.error)
        total = float(n.sum())
        return float((n * e * (1.0 - e)).sum() / total) if total > 0 else 0.25

    def variance(self, prior_evidence: float | Array) -> Array:
        """Each cell's variance of its expected error: ``σ²/(n + s) + σ²/N``, where σ² is
        :meth:`label_variance`, ``n`` the unit's labels for the model, ``s`` the labels' worth
        of the prior it is shrunk toward, and ``N`` the model's labels overall (how well its
        global level is known). Cells backed by equal evidence get equal variances."""
        return evidence_variance(self.label_variance(), np.where(self.count > 0, self.count, 0.0),
                                 prior_evidence)

    def with_model(self, name: str, count: Array, error: Array, cost: Array) -> ProfileTable:
        models = [*self.models, name]
        return ProfileTable(
            models,
            np.column_stack([self.count, count]),
            np.column_stack([self.error, error]),
            np.column_stack([self.cost, cost]),
        )

    def without_model(self, name: str) -> ProfileTable:
        j = self.models.index(name)
        keep = [i for i in range(len(self.models)) if i != j]
        return ProfileTable(
            [self.models[i] for i in keep],
            self.count[:, keep], self.error[:, keep], self.cost[:, keep],
        )

    def to_profiles(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for j, m in enumerate(self.models):
            out[m] = {
                "count": rounded_floats(self.count[:, j], 6, nan_as_none=False),
                "error": rounded_floats(self.error[:, j], 8, nan_as_none=True),
                "cost": rounded_floats(self.cost[:, j], None, nan_as_none=True),
            }
        return out

    @classmethod
    def from_profiles(cls, models: list[str], profiles: dict[str, dict[str, Any]]) -> ProfileTable:
        def col(key: str, m: str) -> Array:
            return np.array([np.nan if v is None else float(v) for v in profiles[m][key]])

        return cls(
            models,
            np.column_stack([col("count", m) for m in models]),
            np.column_stack([col("error", m) for m in models]),
            np.column_stack([col("cost", m) for m in models]),
        )


class Policy(ABC):
    """The protocol every routing policy implements, and the class a policy of your own
    subclasses.

    The least a policy defines is a ``name`` (what it is registered, fitted, saved and served
    under: :func:`~switchpoint.policies.register_policy`) and one method, ``_estimate(self,
    inputs) -> Estimates``: each model's expected error (and cost) on each row of ``inputs``,
    made with :meth:`estimates`. The rest comes with the class: ``fit`` learns each model's
    mean error ``error_``, mean cost ``cost_`` (USD an answer) and label count ``count_`` from
    the labels (checked as every policy's are), ``add_model`` and ``remove_model`` keep them,
    and a weights package saves and loads every learned attribute (a public name ending in
    ``_``) that is a numpy array of finite numbers, a number, a string or a list of them.
    ``requires`` says what ``_estimate`` reads: ``"embedding"`` (``inputs.embeddings``, the
    default), ``"text"`` (``inputs.texts``) or ``"none"``.

    A policy that learns more defines ``_fit(self, inputs, scores, costs, models)``: it calls
    ``super()._fit(inputs, scores, costs, models)`` first (which checks the labels and learns
    the means; ``np.asarray(scores, dtype=float)`` is then safe), learns what it needs and
    returns ``self``. It defines ``_add_model(self, name, inputs, scores, costs)`` and
    ``_remove_model(self, name)`` too (each calling ``super()`` for the means, which checks
    the name and changes ``models_``), or adding or removing a model is refused, naming the
    missing hook. Each hook works on a copy of the
    policy that no route reads, which the public method then takes whole: a hook may set
    attributes freely, but rebinds an array rather than writing into it. The public methods
    (``fit``, ``estimate``, ``add_model``, ``remove_model``, ``unit_estimate``) are the
    hooks' wrappers: a subclass that defines one of them is refused as it is defined, naming
    the hook to define instead.
    """

    name: ClassVar[str]
    requires: ClassVar[Requirement] = "embedding"
    unit_kind: ClassVar[str] = "unit"
    #: How many times :meth:`set_params` has changed this policy's parameters (what a router
    #: made an answer under: its cached decisions are of one revision).
    params_revision: int = 0

    models_: list[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for public in _WRAPPERS:
            if public in vars(cls):
                raise TypeError(
                    f"{cls.__name__} defines {public}(); a policy defines _{public}() instead "
                    f"(same arguments): {public} runs it on a copy of the policy and takes the "
                    "result whole, so a route beside it never reads a half-changed policy")

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        check_policy_class(cls)
        return super().__new__(cls)

    # Learning and estimating ------------------------------------------------------------------
    #
    # A policy's fitted state changes whole: fit, add_model, remove_model and set_params work on
    # a shallow copy and then take its attributes as one reference (``_publish``), while
    # estimate and unit_estimate read one snapshot of them (``_pinned``). A route running beside
    # a change therefore reads the state before it or after it, never a mix of the two, and
    # takes no lock.

    def fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
            models: list[str]) -> Self:
        """Learn from labelled examples. ``scores``/``costs`` are ``(n, len(models))`` (arrays
        or nested lists; NaN where an example leaves a model unlabelled)."""
        return self._publish(copy.copy(self)._fit(inputs, scores, costs, models))

    def add_model(self, name: str, inputs: Inputs, scores: npt.ArrayLike,
                  costs: npt.ArrayLike) -> Self:
        """Learn a new model from a small labelled set without refitting the rest; returns
        ``self``, changed. It (and :meth:`remove_model`) rebinds the attributes it changes,
        never writing into an array or a container it holds, so a shallow copy
        (``copy.copy``) changed by it leaves the original as it was:
        :func:`switchpoint.training.add_model` relies on that."""
        return self._publish(copy.copy(self)._add_model(name, inputs, scores, costs))

    def remove_model(self, name: str) -> Self:
        """Forget the model ``name``; returns ``self``, changed (see :meth:`add_model`)."""
        return self._publish(copy.copy(self)._remove_model(name))

    def estimate(self, inputs: Inputs) -> Estimates:
        """Expected error and cost of every known model on every input row."""
        return self._pinned()._estimate(inputs)

    def unit_estimate(self, unit_id: int) -> Estimates:
        """Expected error and cost on one unit (a cluster, a tier, an example) itself."""
        return self._pinned()._unit_estimate(unit_id)

    def _publish(self, changed: Policy) -> Self:
        """Take ``changed``'s attributes (a shallow copy of this policy, changed) as this
        policy's, in one step."""
        self.__dict__ = changed.__dict__
        return self

    def _pinned(self) -> Self:
        """This policy as it stands, unchanged by a :meth:`_publish` while it is read. (Not
        ``copy.copy``: a random policy's copy draws from a generator of its own.)"""
        view = object.__new__(type(self))
        view.__dict__ = self.__dict__.copy()
        return view

    @abstractmethod
    def _estimate(self, inputs: Inputs) -> Estimates:
        """:meth:`estimate`, on a snapshot of the policy nothing changes: each model's
        expected error (and cost) on each row of ``inputs`` (see :meth:`estimates`)."""

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        """:meth:`fit`, on a copy of the policy no route reads. By default it checks the
        labels (:func:`check_training_arrays`) and learns each model's mean error
        ``error_``, mean cost ``cost_`` (of the answers that were scored) and label count
        ``count_``; a policy that learns more calls it first, then learns the rest."""
        checked_scores, checked_costs = check_training_arrays(scores, costs, models,
                                                              len(inputs))
        self.models_ = list(models)
        self.error_ = nan_mean(1.0 - checked_scores)
        self.cost_ = nan_mean(checked_costs)
        self.count_ = np.sum(~np.isnan(checked_scores), axis=0).astype(np.float64)
        return self

    def _add_model(self, name: str, inputs: Inputs, scores: npt.ArrayLike,
                   costs: npt.ArrayLike) -> Self:
        """:meth:`add_model`, on a copy of the policy no route reads. By default it learns the
        new model's mean error, mean cost and label count (as :meth:`_fit` does); a policy
        with a :meth:`_fit` of its own defines this too, or adding a model is refused."""
        self._check_own_hook("_add_model", "add a model", "_add_model(self, name, inputs, "
                             "scores, costs)")
        self._check_new_model(name)
        col_scores, col_costs = check_training_arrays(model_column(scores), model_column(costs),
                                                      [name], len(inputs))
        self.models_ = [*self.models_, name]
        self.error_ = np.append(self.error_, nan_mean(1.0 - col_scores))
        self.cost_ = np.append(self.cost_, nan_mean(col_costs))
        self.count_ = np.append(self.count_, float(np.sum(~np.isnan(col_scores))))
        return self

    def _remove_model(self, name: str) -> Self:
        """:meth:`remove_model`, on a copy of the policy no route reads. By default it drops
        the model's means; a policy with a :meth:`_fit` of its own defines this too, or
        removing a model is refused."""
        self._check_own_hook("_remove_model", "remove a model", "_remove_model(self, name)")
        self._check_removable(name)
        keep = [i for i, m in enumerate(self.models_) if m != name]
        self.models_ = [self.models_[i] for i in keep]
        self.error_ = self.error_[keep]
        self.cost_ = self.cost_[keep]
        self.count_ = self.count_[keep]
        return self

    def _check_own_hook(self, hook: str, what: str, signature: str) -> None:
        """Refuse ``hook``'s default, naming it, for a policy whose :meth:`_fit` learns more
        than the default does and which does not define ``hook`` itself."""
        cls = type(self)
        if cls._fit is not Policy._fit and getattr(cls, hook) is getattr(Policy, hook):
            raise InvalidInputError(
                "name", f"the {json_quoted(self.name)} policy learns in a _fit of its own and "
                        f"defines no {hook}, so it cannot {what} without fitting again: fit it "
                        f"again on records that label the models it should know, or define "
                        f"{signature} in {cls.__name__}")

    def estimates(self, inputs: Inputs, error: npt.ArrayLike,
                  cost: npt.ArrayLike | None = None) -> Estimates:
        """What :meth:`_estimate` returns: ``error`` is each model's expected error, in
        ``models_``' order, in [0, 1] (one row per row of ``inputs``, or one row for all
        of them); ``cost`` likewise, each model's expected cost (default: its mean cost
        ``cost_``). The support of each estimate is the model's label count ``count_``.
        Anything else is an :class:`InvalidInputError` naming the policy and the value."""
        self._check_fitted()
        shape = (len(inputs), len(self.models_))
        out: list[Array] = []
        for field_name, value in (("error", error), ("cost", self.cost_ if cost is None
                                                      else cost)):
            try:
                given = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), shape))
            except (ValueError, TypeError):
                raise InvalidInputError(
                    field_name, f"the {json_quoted(self.name)} policy estimated "
                                f"{field_name} of shape {np.shape(value)}; give one value per "
                                f"model, in models_' order: {shape[1]} of them, or a row of "
                                f"them for each of the {shape[0]} inputs") from None
            high = 1.0 if field_name == "error" else math.inf
            if not (np.isfinite(given) & (given >= 0) & (given <= high)).all():
                raise InvalidInputError(
                    field_name, f"the {json_quoted(self.name)} policy estimated {field_name} "
                                f"outside [0, {high:g}] or not finite; an expected "
                                f"{field_name} is a finite number in that range")
            out.append(given)
        return Estimates(models=list(self.models_), error=out[0], cost=out[1],
                         support=np.array(np.broadcast_to(self.count_, shape)),
                         unit_ids=np.zeros(shape[0], dtype=np.int64), unit_kind=self.unit_kind)

    def get_state(self) -> PolicyState:
        """What a weights package holds of this fitted policy. By default its parameters,
        one (empty) profile per model, and each learned attribute (a public name ending in
        ``_``): numpy arrays of finite numbers as arrays, numbers, strings, booleans and lists
        of them as JSON. Anything else is an :class:`InvalidInputError` naming it."""
        self._check_fitted()
        arrays: dict[str, npt.NDArray[Any]] = {}
        learned: dict[str, Any] = {}
        for attr, value in vars(self).items():
            if not _learned_name(attr) or attr == "models_":
                continue
            if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    raise InvalidInputError(attr, f"the {json_quoted(self.name)} policy's "
                                                  f"{attr} holds a NaN or an infinity, which "
                                                  "a weights package does not hold; learn "
                                                  "finite numbers")
                arrays[attr] = value
            elif _plain_json(value):
                learned[attr] = value
            else:
                raise InvalidInputError(
                    attr, f"the {json_quoted(self.name)} policy learned {attr} as a "
                          f"{type(value).__name__}, which a weights package does not hold: "
                          "keep what it learns in numpy arrays, numbers, strings or lists of "
                          f"them, or define get_state and from_state in {type(self).__name__}")
        return PolicyState(name=self.name, params=self.get_params(), arrays=arrays,
                           profiles={m: {} for m in self.models_},
                           meta={LEARNED: learned} if learned else {})

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        """The fitted policy :meth:`get_state` describes (the default reads what the default
        :meth:`get_state` writes); ``ValueError`` naming what does not fit."""
        policy = cls(**state.params)
        policy.models_ = list(state.profiles)
        learned = state.meta.get(LEARNED, {})
        if not isinstance(learned, dict):
            raise ValueError(f"its {json_quoted(LEARNED)} state is no JSON object")
        for attr, value in [*state.arrays.items(), *learned.items()]:
            if not _learned_name(attr) or attr == "models_":
                raise ValueError(f"{json_quoted(attr)} is not the name of a learned "
                                 "attribute (a public name ending in _)")
            setattr(policy, attr, value)
        for attr, high in (("error_", 1.0), ("cost_", math.inf), ("count_", math.inf)):
            # (what every policy learns, and a router reads: one number a model, in range)
            means = state.arrays.get(attr)
            if means is None or means.shape != (len(policy.models_),) or not (
                    (means >= 0) & (means <= high)).all():
                raise ValueError(f"its {attr} is not one number in [0, {high:g}] for each of "
                                 f"its {len(policy.models_)} models")
        return policy

    # Parameters, the scikit-learn way -------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters and their current values."""
        return {name: getattr(self, name) for name in param_names(type(self))}

    def set_params(self, **params: Any) -> Self:
        """Change parameters by name; they are validated, and nothing changes if one is bad.

        A fitted policy keeps what it learned: parameters that only shape estimates (e.g. the
        cluster policy's ``assignment`` or ``prior_strength``) apply at once, parameters that
        shape fitting (e.g. ``n_clusters``) at the next ``fit``. Like :meth:`add_model`, it
        rebinds what it changes and recomputes, never writing into an array it holds, so a
        shallow copy (a :class:`~switchpoint.router.Router`'s own) is left as it was; and it
        changes a copy, taken whole once it is done, so an estimate made meanwhile reads the
        parameters and estimates all before or all after the change.
        """
        check_param_names(type(self), params)
        if not params:
            return self
        changed = copy.copy(self)
        for name, value in params.items():
            setattr(changed, name, value)
        changed.validate_params()
        if hasattr(changed, "models_"):
            # (may refuse a value by what was fitted, as a fixed policy's model it does not know)
            changed._params_changed(set(params))
        changed.params_revision = self.params_revision + 1
        return self._publish(changed)

    def validate_params(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad parameter (default: none)."""
        return None

    def _params_changed(self, names: set[str]) -> None:
        """Hook: a fitted policy's parameters changed (e.g. recompute shrunk estimates, bound
        anew: see :meth:`set_params`)."""
        return None

    @property
    def vector_width(self) -> int | None:
        """The width of the embedding vectors the fitted policy holds (a cluster policy's
        centroids, a knn policy's examples), which its package's ``dimension`` must equal;
        None when it holds none."""
        return None

    # Shared helpers ---------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(...) first")

    def _check_new_model(self, name: object) -> None:
        """For :meth:`add_model`: the policy is fitted and ``name`` is a model it does not
        know; otherwise an error naming ``name``."""
        self._check_fitted()
        if not isinstance(name, str) or not name:
            raise InvalidInputError("name", f"must be a model name{got(name)}")
        if name in self.models_:
            raise InvalidInputError("name", f"model {json_quoted(name)} is already known; remove "
                                            "it first")

    def _check_removable(self, name: object) -> None:
        """For :meth:`remove_model`: the policy is fitted, knows ``name`` and has another model
        to route to; otherwise an error naming ``name``."""
        self._check_fitted()
        if name not in self.models_:
            raise UnknownModelError("name", [str(name)], self.models_)
        if len(self.models_) == 1:
            raise InvalidInputError("name", f"cannot remove {json_quoted(name)}, the only model")

    def _vectors(self, inputs: Inputs) -> npt.NDArray[np.float32]:
        """``inputs``' embeddings, if this policy reads them and they are as wide as the
        vectors it was fitted on (:attr:`vector_width`); otherwise an error naming
        ``embedding``."""
        inputs.require("embedding", self.name)
        assert inputs.embeddings is not None
        width = self.vector_width
        if width is not None and inputs.embeddings.shape[1] != width:
            raise InvalidInputError("embedding", f"has {inputs.embeddings.shape[1]} values; "
                                                 f"this {self.name} policy was fitted on "
                                                 f"{width}-d vectors")
        return inputs.embeddings

    def global_cost(self) -> dict[str, float]:
        """Each model's mean cost over everything it was labelled on (the λ scale's reference)."""
        self._check_fitted()
        return dict(zip(self.models_, self._global_cost_(), strict=True))

    def _global_cost_(self) -> Array:
        return np.asarray(self.cost_)

    def global_error(self) -> dict[str, float]:
        """Each model's mean error over everything it was labelled on."""
        self._check_fitted()
        return dict(zip(self.models_, (float(x) for x in self._global_error_()), strict=True))

    def _global_error_(self) -> Array:
        return np.asarray(self.error_)

    @property
    def n_units(self) -> int:
        """How many units (clusters, tiers, examples) the policy routes over (default: one,
        the whole)."""
        return 1

    @property
    def has_units(self) -> bool:
        """Whether the policy divides prompts into units of its own (clusters, tiers,
        examples: its class defines :attr:`n_units`), or estimates without any (a baseline, a
        policy of one's own with one method), when a decision names no unit of it."""
        return type(self).n_units is not Policy.n_units

    def _unit_estimate(self, unit_id: int) -> Estimates:
        """:meth:`unit_estimate`, on a snapshot of the policy nothing changes (default: the
        models' mean error and cost, on the one unit)."""
        unit_id = self.check_unit(unit_id)
        n = len(self.models_)
        return Estimates(models=list(self.models_), error=np.reshape(self.error_, (1, n)),
                         cost=np.reshape(self.cost_, (1, n)),
                         support=np.reshape(self.count_, (1, n)),
                         unit_ids=np.array([unit_id], dtype=np.int64), unit_kind=self.unit_kind)

    def check_unit(self, unit_id: object, field: str = "unit_id") -> int:
        """``unit_id`` as an ``int``, if this fitted policy has that unit; otherwise an
        :class:`InvalidInputError` naming ``field`` and the ids there are."""
        self._check_fitted()
        n = self.n_units
        if isinstance(unit_id, bool) or not isinstance(unit_id, int | np.integer) or not (
                0 <= int(unit_id) < n):
            raise InvalidInputError(field, f"must be an integer in [0, {n - 1}] (this "
                                           f"{self.name} policy's {self.unit_kind}s), got "
                                           f"{json_quoted(unit_id)}")
        return int(unit_id)

    def describe_unit(self, unit_id: int) -> str:
        return f"{self.unit_kind} {unit_id}"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


#: The key of :attr:`PolicyState.meta` under which :meth:`Policy.get_state` keeps what a policy
#: learned that is no array (numbers, strings and lists of them).
LEARNED = "learned"

#: The public methods that run a policy's hooks (``_fit`` for ``fit``, ...).
_WRAPPERS = ("fit", "estimate", "add_model", "remove_model", "unit_estimate")

#: What each hook a policy class may lack does, for the refusal to make one that lacks it.
_HOOKS = {
    "_estimate": "_estimate(self, inputs) -> Estimates, the one method every policy defines: "
                 "each model's expected error (and cost) on each row of inputs, made with "
                 "self.estimates(inputs, error)",
}


def check_policy_class(cls: type[Policy]) -> None:
    """A :class:`TypeError` naming what the policy class ``cls`` lacks (a hook it must
    define, a ``name``), if it lacks anything."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise TypeError(f"the policy class {cls.__name__} cannot be made: it does not define "
                        f"{'; nor '.join(_hook_help(m) for m in missing)}")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise TypeError(f"the policy class {cls.__name__} has no name; give it one, as "
                        'name = "my-policy" in its body (what it is registered, fitted, saved '
                        "and served under)")


def _hook_help(hook: str) -> str:
    return _HOOKS.get(hook, f"{hook}, which its base class leaves to it")


def _learned_name(attr: str) -> bool:
    """Whether ``attr`` names a learned attribute: public, and ending in ``_``."""
    return attr.isidentifier() and attr.endswith("_") and not attr.startswith("_")


def _plain_json(value: object) -> bool:
    """Whether ``value`` is a finite number, a string, a boolean, None or a list of them."""
    if isinstance(value, list):
        return all(_plain_json(v) and not isinstance(v, list) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


@functools.cache
def param_names(cls: type[Policy]) -> tuple[str, ...]:
    """The names of ``cls``'s constructor parameters, read once from its signature."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in inspect.signature(cls.__init__).parameters.values()
                 if p.name != "self" and p.kind in kinds)


def check_param_names(cls: type[Policy], params: Mapping[str, object]) -> None:
    """Raise :class:`InvalidInputError` naming any of ``params`` that ``cls`` does not take,
    with the parameters it does take."""
    known = param_names(cls)
    unknown = [name for name in params if name not in known]
    if unknown:
        raise InvalidInputError(
            unknown[0], f"the {json_quoted(cls.name)} policy has no parameter(s) "
            f"{listed_names(unknown, quoted=True)}; its parameters are {listed_keys(known)}")


def check_number(name: str, value: object, *, low: float = 0.0, inclusive: bool = True) -> float:
    """``value`` as a float, if it is a finite real number ``>= low`` (``> low`` if not
    ``inclusive``); otherwise an :class:`InvalidInputError` naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        # (kept as given, and written to the weights' JSON: a Decimal would not be)
        raise InvalidInputError(name, f"must be a finite number (a float or an int), got "
                                      f"{json_quoted(value)} (a {type(value).__name__})")
    x = checked_number(name, value)  # (an integer no float holds is told so)
    if x is None or not math.isfinite(x):
        raise InvalidInputError(name, f"must be a finite number{got(value)}")
    if x < low or (not inclusive and x == low):
        raise InvalidInputError(name, f"must be {'>=' if inclusive else '>'} {low:g}, got {x:g}")
    return x


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """``value`` if it is an integer in ``[low, high]``; otherwise an :class:`InvalidInputError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(name, f"must be an integer{got(value)}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidInputError(name, f"must be {bound}{got(value)}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInputError(name, f"must be one of {one_of(choices)}{got(value)}")
    return str(value)


def check_training_arrays(scores: object, costs: object, models: list[str], n: int
                          ) -> tuple[Array, Array]:
    """``scores`` and ``costs`` as float arrays of one row per example and one column per
    model (each in its range, NaN where unlabelled: :func:`label_arrays`), if there is an
    example to learn from and every model has a label; otherwise an
    :class:`InvalidInputError` naming what is wrong."""
    shape = (n, len(models))
    checked = label_arrays(scores, costs, shape, "example")
    if n == 0:
        raise InvalidInputError("records", "no examples to learn from")
    if len(set(models)) != len(models):
        raise InvalidInputError("models", "model names must be unique")
    unlabelled = [m for j, m in enumerate(models) if np.all(np.isnan(checked[0][:, j]))]
    if unlabelled:
        raise InvalidInputError(
            "records", f"{listed_names(unlabelled, quoted=True)} "
            f"{'has' if len(unlabelled) == 1 else 'have'} no labels in these records; label "
            "at least one prompt for each model, or leave the model out",
        )
    return checked


def model_column(values: object) -> object:
    """One model's labels (a flat list or array, or a column) as a column, for
    :func:`check_training_arrays`; anything else as it is, for it to refuse."""
    try:
        given = np.asarray(values)
    except ValueError:
        return values
    return given.reshape(-1, 1) if given.ndim == 1 else given


class TablePolicy(Policy):
    """A policy whose units carry a :class:`ProfileTable` and shrunk per-unit estimates."""

    table_: ProfileTable
    error_: Array
    cost_: Array
    variance_: Array
    global_error_: Array
    global_cost_: Array
    #: Per model, what a policy learned from outcomes keeps of the one it learned on (empty:
    #: every estimate comes from the tables).
    kept_: Mapping[str, Kept] = MappingProxyType({})

    def _global_error_(self) -> Array:
        return np.asarray(self.global_error_)

    def _global_cost_(self) -> Array:
        return np.asarray(self.global_cost_)

    @property
    def n_units(self) -> int:
        return self.table_.n_units

    prior_strength: float

    def _params_changed(self, names: set[str]) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """Recompute the estimates from ``table_`` (after fit, load, add, remove), then take
        what ``kept_`` keeps for its models."""
        self._estimate_table()
        if self.kept_:
            self._take_kept()

    def _estimate_table(self) -> None:
        """The shrunk ``error_`` / ``cost_``, ``variance_`` and global means from ``table_``.
        The default shrinks each unit toward the model's global mean; a unit without labels
        (and ``prior_strength`` 0) reads the global mean rather than 0/0."""
        table = self.table_
        g_err, g_cost, _ = table.global_means()
        with np.errstate(invalid="ignore", divide="ignore"):
            err, cst = table.shrunk(g_err, g_cost, self.prior_strength)
        empty = table.count <= 0
        self.error_ = np.where(empty, g_err, err)
        self.cost_ = np.where(empty, g_cost, cst)
        self.variance_ = table.variance(self.prior_strength)
        self.global_error_, self.global_cost_ = g_err, g_cost

    def _take_kept(self) -> None:
        """Each model ``kept_`` holds costs and varies as it keeps (see :class:`Kept`); the
        others (added since) as their tables say."""
        n_units = self.table_.n_units
        cost, variance = self.cost_.copy(), self.variance_.copy()
        g_cost = np.array(self.global_cost_, dtype=np.float64)
        for j, model in enumerate(self.models_):
            kept = self.kept_.get(model)
            if kept is None:
                continue
            grown = n_units - len(kept.cost)
            cost[:, j] = np.concatenate([kept.cost, np.full(grown, kept.mean_cost)])
            g_cost[j] = kept.mean_cost
            variance[:, j] = evidence_variance(
                kept.label_variance, np.concatenate([kept.stderr_count, np.zeros(grown)]),
                self.prior_strength)
        self.cost_, self.variance_, self.global_cost_ = cost, variance, g_cost

    def _keep(self, cost: Array, mean_cost: Array) -> dict[str, Kept]:
        """What a policy keeps of this one, per model, with expected costs ``cost`` and mean
        costs ``mean_cost``: the labels behind this one's standard errors, and its variance of
        one label."""
        table = self.table_
        count = np.where(table.count > 0, table.count, 0.0)
        var = (table.label_variance() if any(m not in self.kept_ for m in self.models_)
               else 0.0)  # (the tables' variance of one label, for models nothing keeps)
        kept: dict[str, Kept] = {}
        for j, model in enumerate(self.models_):
            mine = self.kept_.get(model)
            if mine is None:
                stderr_count, label_variance = count[:, j], var
            else:
                grown = table.n_units - len(mine.stderr_count)
                stderr_count = np.concatenate([mine.stderr_count, np.zeros(grown)])
                label_variance = mine.label_variance
            kept[model] = Kept(cost[:, j].copy(), float(mean_cost[j]), stderr_count,
                               label_variance)
        return kept

    def _profiles(self) -> dict[str, dict[str, Any]]:
        """The tables' profiles, with what the policy keeps (when it keeps anything): a load
        then estimates as this policy does."""
        profiles = self.table_.to_profiles()
        if self.kept_:
            for model, kept in self._keep(self.cost_, self.global_cost_).items():
                profiles[model].update(kept.to_profile())
        return profiles

    def _read_kept(self, profiles: Mapping[str, Mapping[str, Any]]) -> None:
        """Take up what ``profiles`` keep (:meth:`_profiles`), before :meth:`_refresh`."""
        kept = {m: Kept.from_profile(m, profiles[m], self.table_.n_units) for m in self.models_}
        self.kept_ = {m: k for m, k in kept.items() if k is not None}

    def with_evidence(self, count: Array, error_sum: Array, cost_count: Array | None = None,
                      cost_sum: Array | None = None) -> Self:
        """A copy whose profile tables also count ``count[u, j]`` more labels of model ``j`` on
        unit ``u``, with summed error ``error_sum[u, j]``: the posterior after that evidence,
        shrunk exactly as fitted tables are. The fitted tables are the prior, with their own
        label counts as its strength. The copy keeps this policy's standard errors: the
        pessimism charge guards against thin evidence *in the weights* (an added model, a sparse
        unit), while outcomes move the expected errors.

        Costs move only with measured costs (``cost_count`` answers summing to ``cost_sum``):
        a unit's expected cost is then the mean of its labels' costs, the measured ones and
        :data:`COST_PRIOR_STRENGTH` more at the expected cost before (a unit only outcomes
        reached starts from the model's mean cost). Without them the copy keeps this policy's
        expected costs. The copy records what it keeps of this policy in ``kept_``
        (:class:`Kept`), which its tables alone would not give: a weights package made of it
        carries that, and routes as it does. ``self`` is not changed."""
        self._check_fitted()
        table = self.table_
        shapes = [a.shape for a in (count, error_sum, cost_count, cost_sum) if a is not None]
        if (cost_count is None) != (cost_sum is None) or any(
                shape != table.count.shape for shape in shapes):
            raise InvalidInputError("evidence", f"must be {table.count.shape} arrays (units x "
                                                f"models, cost count and sum together); got "
                                                f"{', '.join(str(sh) for sh in shapes)}")
        n = np.where(table.count > 0, table.count, 0.0)
        total = n + count
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.where(total > 0, (n * np.nan_to_num(table.error) + error_sum) / total,
                             np.nan)
        # A unit only outcomes reached has no measured cost: the model's mean cost stands in.
        cost = np.where(n > 0, table.cost, self.global_cost_[None, :])
        measured = None
        if cost_count is not None and cost_sum is not None and (cost_count > 0).any():
            measured = cost_count > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                cost = np.where(measured, (n * cost + cost_sum) / (n + cost_count), cost)
        posterior = copy.copy(self)
        posterior.table_ = ProfileTable(table.models, total, error,
                                        np.where(total > 0, cost, np.nan))
        posterior._refresh()
        posterior.cost_, posterior.global_cost_ = self.cost_, self.global_cost_
        if measured is not None and cost_count is not None and cost_sum is not None:
            weight = n + COST_PRIOR_STRENGTH
            posterior.cost_ = np.where(measured, (weight * self.cost_ + cost_sum)
                                       / (weight + cost_count), self.cost_)
        posterior.variance_ = self.variance_
        # What the tables alone would not give, kept for a package made of the posterior.
        posterior.kept_ = self._keep(posterior.cost_, self.global_cost_)
        return posterior

    @abstractmethod
    def _unit_weights(self, inputs: Inputs) -> Array:
        """How much each input row belongs to each unit: ``(n_rows, n_units)``."""

    def _learn_prior(self, name: str, weights: Array, scores: Array) -> None:
        """Hook for policies that give an added model a prior of its own (default: none)."""

    def _add_model(self, name: str, inputs: Inputs, scores: npt.ArrayLike,
                   costs: npt.ArrayLike) -> Self:
        self._check_new_model(name)
        col_scores, col_costs = check_training_arrays(model_column(scores), model_column(costs),
                                                      [name], len(inputs))
        weights = self._unit_weights(inputs)
        single = ProfileTable.from_assignments(weights, col_scores, col_costs, [name])
        self._learn_prior(name, weights, col_scores[:, 0])  # sees the known models only
        self.table_ = self.table_.with_model(
            name, single.count[:, 0], single.error[:, 0], single.cost[:, 0]
        )
        self.models_ = [*self.models_, name]
        self._refresh()
        return self

    def _remove_model(self, name: str) -> Self:
        self._check_removable(name)
        self.table_ = self.table_.without_model(name)
        self.models_ = [m for m in self.models_ if m != name]
        self._forget_prior(name)
        self._refresh()
        return self

    def _forget_prior(self, name: str) -> None:
        """Hook: drop whatever :meth:`_learn_prior` kept for a removed model."""

    def _unit_estimate(self, unit_id: int) -> Estimates:
        unit_id = self.check_unit(unit_id)
        rows = slice(unit_id, unit_id + 1)
        return Estimates(
            models=list(self.models_),
            error=self.error_[rows],
            cost=self.cost_[rows],
            support=self.table_.count[rows],
            unit_ids=np.array([unit_id], dtype=np.int64),
            unit_kind=self.unit_kind,
            stderr=np.sqrt(self.variance_[rows]),
            pessimism=float(getattr(self, "pessimism", 0.0)),
        )
