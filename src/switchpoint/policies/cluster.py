"""Learned cluster profiles (UniRoute style): K-means over embeddings, per-cluster model profiles.

Each prompt lands in one of ``n_clusters`` clusters (or, with soft assignment, a distribution over
them). Each model has, per cluster, a measured mean error and mean cost. Clusters with few labels
are shrunk toward their coarse parent cluster (a second K-means over the centroids), which is in
turn shrunk toward the model's global mean: ``(n·mean + s·prior) / (n + s)`` with ``s`` =
``prior_strength``. Nothing is filled silently: ``support`` says how many labels stand behind each
estimate and the decision's explanation quotes it.

A new model is added from a small labelled set by assigning those prompts to the existing
clusters (no re-clustering). Its prior is a ridge map from the known models' cluster errors to
its own (``new_model_prior="similarity"``), and its sparse per-cluster means are shrunk toward
that prior with ``added_prior_strength`` (48, chosen on validation parts of train: a prior fitted
on all of a model's labels is worth more than a handful of labels in one cluster).

Every estimate carries its standard error, ``sqrt(σ²/(n + s) + σ²/N)`` (σ² the pooled variance of
one label, ``n`` the cluster's labels for the model, ``s`` = ``prior_strength``, ``N`` the model's
labels overall). An added model's stronger pull toward its prior steadies its mean but is not
evidence, so its standard errors stay large until it has labels. The decision rule charges
``pessimism`` (1, chosen on validation parts of train) times the standard error beyond the
best-evidenced candidate's: models backed by equal evidence compare exactly as before, while a
model known from 200 labels must look better by a margin to be chosen (without it, adding such
a model could make the router worse than it was without the model).

Outcome feedback (:mod:`switchpoint.learning`) can grow the policy: clusters opened for
unfamiliar prompts have no coarse parent (``parent`` -1); their prior is the fitted clusters'
estimate at their centre, shifted by how much harder than that the cluster has been for the
models tried on it and with its gaps between models rescaled by what they showed, and it weighs
``GROWN_PRIOR_STRENGTH`` labels against each model's outcomes.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from switchpoint._limits import DEFAULT_CLUSTERS
from switchpoint.policies.base import (
    Array,
    Estimates,
    Inputs,
    PolicyState,
    ProfileTable,
    TablePolicy,
    check_choice,
    check_int,
    check_number,
    check_training_arrays,
    rounded_floats,
)
from switchpoint.policies.kmeans import spherical_kmeans

Assignment = Literal["hard", "soft"]

#: How many labels' worth a grown cluster's prior (the fitted clusters' estimate at its centre,
#: shifted by the cluster's difficulty) weighs against the outcomes of each model there. Set
#: on validation parts of train (``benchmarks/online.py --validate``): at the fitted clusters'
#: 6, one lucky or unlucky outcome of a model in a young cluster could reorder the models for
#: a whole new kind of traffic and drop the learning router below the one that does not learn;
#: 24 kept every checkpoint at or above it while closing as much of the gap.
GROWN_PRIOR_STRENGTH = 24.0
#: How many labels' worth of evidence it takes to stretch or shrink the gaps between models a
#: grown cluster inherits from its anchor (the ridge on ``β`` in ``_difficulty_prior``). Set on
#: validation parts of train like the strength above: 24 closed 67% of the gap to full
#: information on RouterBench over 24 exploration seeds, against 59% with the gaps kept as they
#: were inherited and 66% / 63% / 61% at 12 / 48 / 100.
GROWN_GAP_RIDGE = 24.0


def _softmax(logits: Array) -> Array:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ClusterPolicy(TablePolicy):
    name = "cluster"
    requires = "embedding"
    unit_kind = "cluster"

    def __init__(
        self,
        n_clusters: int = DEFAULT_CLUSTERS,
        n_coarse: int = 6,
        prior_strength: float = 6.0,
        assignment: Assignment = "soft",
        temperature: float = 0.05,
        random_state: int = 0,
        similarity_ridge: float = 1.0,
        new_model_prior: Literal["similarity", "coarse"] = "similarity",
        added_prior_strength: float = 48.0,
        pessimism: float = 1.0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_coarse = n_coarse
        self.prior_strength = prior_strength
        self.assignment = assignment
        self.temperature = temperature
        self.random_state = random_state
        self.similarity_ridge = similarity_ridge
        self.new_model_prior = new_model_prior
        self.added_prior_strength = added_prior_strength
        self.pessimism = pessimism

    def validate_params(self) -> None:
        check_int("n_clusters", self.n_clusters, low=1)
        check_int("n_coarse", self.n_coarse, low=1)
        check_number("prior_strength", self.prior_strength)
        check_choice("assignment", self.assignment, ("hard", "soft"))
        check_number("temperature", self.temperature, inclusive=False)
        check_int("random_state", self.random_state, low=0)
        check_number("similarity_ridge", self.similarity_ridge)
        check_choice("new_model_prior", self.new_model_prior, ("similarity", "coarse"))
        check_number("added_prior_strength", self.added_prior_strength)
        check_number("pessimism", self.pessimism)

    # Fitting ---------------------------------------------------------------------------------

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        self.validate_params()
        inputs.require("embedding", self.name)
        assert inputs.embeddings is not None
        scores, costs = check_training_arrays(scores, costs, models, len(inputs))
        centroids, labels = spherical_kmeans(
            inputs.embeddings, self.n_clusters, seed=self.random_state
        )
        self.centroids_ = centroids
        k = centroids.shape[0]
        coarse, parent = spherical_kmeans(
            centroids, min(self.n_coarse, k), seed=self.random_state
        )
        self.coarse_centroids_ = coarse
        self.parent_ = parent
        onehot = np.zeros((len(labels), k))
        onehot[np.arange(len(labels)), labels] = 1.0
        self.table_ = ProfileTable.from_assignments(onehot, scores, costs, list(models))
        self.models_ = list(models)
        self.model_priors_: dict[str, Array] = {}
        self.kept_ = {}
        self._refresh()
        return self

    def _estimate_table(self) -> None:
        """The shrunk estimates from the raw table (after fit, load, add, remove)."""
        table = self.table_
        g_err, g_cost, _ = table.global_means()
        parent = self.parent_
        rooted = parent >= 0
        n_coarse = int(parent.max()) + 1 if rooted.any() else 0
        up = np.zeros((table.n_units, n_coarse))
        up[np.flatnonzero(rooted), parent[rooted]] = 1.0
        coarse_count = up.T @ table.count
        with np.errstate(invalid="ignore", divide="ignore"):
            c_err = (up.T @ np.nan_to_num(table.error * table.count)) / coarse_count
            c_cost = (up.T @ np.nan_to_num(table.cost * table.count)) / coarse_count
        s = self.prior_strength
        c_err = np.where(coarse_count > 0, c_err, 0.0)
        c_cost = np.where(coarse_count > 0, c_cost, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            c_err = np.where(coarse_count + s > 0,
                             (coarse_count * c_err + s * g_err) / (coarse_count + s), g_err)
            c_cost = np.where(coarse_count + s > 0,
                              (coarse_count * c_cost + s * g_cost) / (coarse_count + s), g_cost)
        safe = np.where(rooted, parent, 0)
        prior_err = c_err[safe] if n_coarse else np.tile(g_err, (table.n_units, 1))
        prior_cost = np.where(rooted[:, None], c_cost[safe] if n_coarse else 0.0, g_cost)
        strength = np.full(len(table.models), s)
        for name, prior in self.model_priors_.items():
            if name in table.models:  # an added model: its own similarity-based prior
                j = table.models.index(name)
                prior_err[: len(prior), j] = prior
                strength[j] = self.added_prior_strength
        self.error_, self.cost_ = table.shrunk(prior_err, prior_cost, strength)
        if not rooted.all():  # clusters grown from outcomes: anchored on the fitted ones
            grown = ~rooted
            anchor = self._anchor(grown)
            sub = ProfileTable(table.models, table.count[grown], table.error[grown],
                               table.cost[grown])
            err, _ = sub.shrunk(self._difficulty_prior(sub, anchor), prior_cost[grown],
                                GROWN_PRIOR_STRENGTH)
            self.error_ = self.error_.copy()
            self.error_[grown] = err
        # An added model's stronger pull toward its own prior steadies its mean; it is not
        # evidence, so every model's prior counts as `prior_strength` labels in the variance.
        self.variance_ = table.variance(s)
        self.global_error_, self.global_cost_ = g_err, g_cost

    def _anchor(self, grown: npt.NDArray[np.bool_]) -> Array:
        """What the fitted clusters alone estimate at each grown cluster's centre (their own
        assignment of the centre): a grown cluster starts where routing stood before it."""
        fitted = ~grown
        sims = self.centroids_[grown].astype(np.float64) @ self.centroids_[fitted].T
        if self.assignment == "soft":
            weights = _softmax(sims / self.temperature)
        else:
            weights = np.zeros(sims.shape)
            weights[np.arange(len(sims)), np.argmax(sims, axis=1)] = 1.0
        return np.asarray(weights @ self.error_[fitted])

    def _difficulty_prior(self, table: ProfileTable, anchor: Array) -> Array:
        """The prior of clusters grown from outcomes: the fitted clusters' estimate at their
        centre (the anchor ``a``), shifted by how much harder than that the cluster has been
        (``δ``) and with the anchor's gaps between models stretched or shrunk (``β``):
        ``a + δ + β·(a − mean(a))``. ``(δ, β)`` is the least-squares fit of the measured gaps
        ``mean − a`` weighted by each model's label count, with ridge ``prior_strength`` on
        ``δ`` and ``GROWN_GAP_RIDGE`` on ``β``. One model failing there moves every model's
        prior, and the strong model winning by more than the anchor says widens every gap:
        that is what lets a cluster learned from bandit outcomes (one model's result per
        prompt) compare models it has barely seen, and weigh its prompts' upgrade to a dearer
        model against other clusters' on the same scale."""
        n = np.where(table.count > 0, table.count, 0.0)
        gap = np.where(n > 0, np.nan_to_num(table.error) - anchor, 0.0)
        z = anchor - anchor.mean(axis=1, keepdims=True)
        s0 = n.sum(axis=1) + self.prior_strength
        s1 = (n * z).sum(axis=1)
        s2 = (n * z * z).sum(axis=1) + GROWN_GAP_RIDGE
        b0, b1 = (n * gap).sum(axis=1), (n * z * gap).sum(axis=1)
        det = s0 * s2 - s1 * s1  # > 0 unless nothing was measured and prior_strength is 0
        safe = np.where(det > 0, det, 1.0)
        delta = np.where(det > 0, (s2 * b0 - s1 * b1) / safe, 0.0)
        beta = np.where(det > 0, (s0 * b1 - s1 * b0) / safe, 0.0)
        return np.asarray(np.clip(anchor + delta[:, None] + beta[:, None] * z, 0.0, 1.0))

    def with_clusters(self, centroids: npt.NDArray[np.float32]) -> Self:
        """A copy with ``centroids`` appended as new clusters without labels and without a
        coarse parent (their prior is the anchored, difficulty-shifted one); ``self`` is kept."""
        self._check_fitted()
        extra = np.asarray(centroids, dtype=np.float32).reshape(-1, self.centroids_.shape[1])
        k = extra.shape[0]
        grown = copy.copy(self)
        grown.centroids_ = np.vstack([self.centroids_, extra])
        grown.parent_ = np.concatenate([self.parent_, np.full(k, -1, dtype=np.int64)])
        t = self.table_
        m = len(t.models)
        grown.table_ = ProfileTable(t.models, np.vstack([t.count, np.zeros((k, m))]),
                                    np.vstack([t.error, np.full((k, m), np.nan)]),
                                    np.vstack([t.cost, np.full((k, m), np.nan)]))
        grown._refresh()
        return grown

    # Estimating ------------------------------------------------------------------------------

    def assign(self, embeddings: npt.NDArray[np.float32],
               centroids: npt.NDArray[np.float32] | None = None
               ) -> tuple[npt.NDArray[np.int64], Array]:
        """Cluster ids and the cluster weight matrix for each row (over ``centroids``, the
        policy's own by default: an overlay growing clusters assigns over its own)."""
        centres = self.centroids_ if centroids is None else centroids
        sims = embeddings.astype(np.float32) @ centres.T
        ids = np.argmax(sims, axis=1).astype(np.int64)
        if self.assignment == "soft":
            return ids, _softmax(sims.astype(np.float64) / self.temperature)
        weights = np.zeros(sims.shape)
        weights[np.arange(len(ids)), ids] = 1.0
        return ids, weights

    def _estimate(self, inputs: Inputs) -> Estimates:
        self._check_fitted()
        ids, weights = self.assign(self._vectors(inputs))
        return Estimates(
            models=list(self.models_),
            error=weights @ self.error_,
            cost=weights @ self.cost_,
            support=weights @ self.table_.count,
            unit_ids=ids,
            unit_kind=self.unit_kind,
            unit_probabilities=weights if self.assignment == "soft" else None,
            stderr=np.sqrt(weights @ self.variance_),
            pessimism=float(self.pessimism),
        )

    @property
    def n_units(self) -> int:
        self._check_fitted()
        return int(self.centroids_.shape[0])

    @property
    def vector_width(self) -> int | None:
        centroids = getattr(self, "centroids_", None)
        return None if centroids is None else int(centroids.shape[-1])

    # Models ----------------------------------------------------------------------------------

    def _unit_weights(self, inputs: Inputs) -> Array:
        """An added model's labels go to each prompt's nearest cluster (hard), whatever the
        routing assignment: a small labelled set should not be smeared across clusters."""
        ids, _ = self.assign(self._vectors(inputs))
        onehot = np.zeros((len(ids), self.n_units))
        onehot[np.arange(len(ids)), ids] = 1.0
        return onehot

    def _learn_prior(self, name: str, weights: Array, scores: Array) -> None:
        if self.new_model_prior == "similarity":
            ids = np.argmax(weights, axis=1).astype(np.int64)
            self.model_priors_ = {**self.model_priors_,
                                  name: self._similarity_prior(ids, scores)}

    def _forget_prior(self, name: str) -> None:
        self.model_priors_ = {k: v for k, v in self.model_priors_.items() if k != name}

    def _similarity_prior(self, ids: npt.NDArray[np.int64], scores: Array) -> Array:
        """A new model's per-cluster error before its own labels: a ridge regression of its
        observed errors on the known models' cluster errors where it was labelled. A model
        that fails where gpt-4 fails inherits gpt-4's shape across the clusters it has not
        been seen on, instead of one flat global mean (collaborative filtering, UniRoute's
        "models as vectors" idea with a learned map)."""
        seen = ~np.isnan(scores)
        y = 1.0 - scores[seen]
        known = self.error_[ids[seen]]  # (n_labelled, n_known_models)
        if y.size < 2:
            return np.full(self.n_units, float(y.mean()) if y.size else 0.5)
        mean_x, mean_y = known.mean(axis=0), float(y.mean())
        xc = known - mean_x
        gram = xc.T @ xc + self.similarity_ridge * np.eye(known.shape[1])
        w = np.linalg.solve(gram, xc.T @ (y - mean_y))
        return np.clip(mean_y + (self.error_ - mean_x) @ w, 0.0, 1.0)

    # Persistence -----------------------------------------------------------------------------

    def get_state(self) -> PolicyState:
        self._check_fitted()
        return PolicyState(
            name=self.name,
            params=self.get_params(),
            arrays={
                "centroids": self.centroids_,
                "coarse_centroids": self.coarse_centroids_,
                "parent": self.parent_,
            },
            profiles=self._profiles_with_priors(),
        )

    def _profiles_with_priors(self) -> dict[str, dict[str, Any]]:
        profiles = self._profiles()
        for name, prior in self.model_priors_.items():
            profiles[name]["prior_error"] = rounded_floats(prior, 8, nan_as_none=False)
        return profiles

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = cls(**state.params)
        policy.centroids_ = state.arrays["centroids"].astype(np.float32)
        policy.coarse_centroids_ = state.arrays["coarse_centroids"].astype(np.float32)
        parent = state.arrays["parent"]
        if parent.dtype.kind not in "iu":
            raise ValueError(f"parent holds values of type {parent.dtype}; it holds each "
                             "cluster's coarse cluster by its index, a whole number")
        policy.parent_ = parent.astype(np.int64)
        if policy.parent_.shape != (policy.centroids_.shape[0],) or (
                policy.parent_.max(initial=-1) >= policy.coarse_centroids_.shape[0]) or (
                policy.parent_.min(initial=-1) < -1):
            raise ValueError(f"parent holds {policy.parent_.shape} entries for "
                             f"{policy.centroids_.shape[0]} clusters and "
                             f"{policy.coarse_centroids_.shape[0]} coarse clusters, each an "
                             f"index from 0 to {policy.coarse_centroids_.shape[0] - 1} (-1: "
                             "a cluster learned later, of no coarse cluster)")
        if policy.parent_.size and (policy.parent_ == -1).all():
            raise ValueError("parent holds -1 (a cluster learned later) for every cluster; the "
                             "clusters a fit makes each belong to a coarse cluster, by its index, "
                             "and a cluster learned later is placed by its likeness to them")
        models = list(state.profiles)
        policy.table_ = ProfileTable.from_profiles(models, state.profiles)
        if policy.table_.n_units != policy.centroids_.shape[0]:
            raise ValueError(
                f"profiles have {policy.table_.n_units} clusters but centroids have "
                f"{policy.centroids_.shape[0]}"
            )
        policy.models_ = models
        policy.model_priors_ = {
            m: np.asarray(state.profiles[m]["prior_error"], dtype=np.float64)
            for m in models if "prior_error" in state.profiles[m]
        }
        policy._read_kept(state.profiles)
        policy._refresh()
        return policy
