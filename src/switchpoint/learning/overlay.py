"""Overlays: outcome evidence on top of a fitted policy, applied one event at a time.

An overlay never changes the policy it starts from (the weights package): it keeps the evidence
of the outcomes applied to it and builds, when asked, the *posterior* policy — the fitted one
updated by that evidence. Applying the same events in the same order gives the same posterior,
so an overlay can always be rebuilt from a :class:`~switchpoint.learning.events.FeedbackLog`.

- :class:`TableOverlay` (tiers, tfidf; the base of the cluster overlay): each outcome is one
  more label of its model on the units the prompt fell in, by the weights the decision used. The
  fitted tables are the prior, with their label counts as its strength. An outcome that says
  what the answer cost (``measured_cost``) teaches that model's cost on those units the same
  way (see :meth:`~switchpoint.policies.base.TablePolicy.with_evidence`). Outcomes of the
  catalog models the weights have no profile for (``cards``) are kept on the same units, apart
  from the posterior: :meth:`~TableOverlay.card_evidence` gives them to the router, which
  moves such a model's tier prior by them.
- :class:`ClusterOverlay`: the same on clusters, assigned from the prompt's vector with the
  policy's own (soft) assignment; a prompt unlike every cluster (cosine to the nearest below
  ``novelty_threshold``) opens a new cluster, and later prompts nearest to it move its centre
  (an online mean). New clusters have no coarse parent: their prior is the fitted clusters'
  estimate at their centre, shifted by how hard the cluster has been for the models tried there.
- :class:`KnnOverlay`: each outcome is one more labelled neighbour (for its model only), at
  its measured cost if it has one, else the decision's expected cost.

A later outcome for the same decision replaces the earlier one. An overlay's :meth:`state` is
what it has applied (a :mod:`~switchpoint.learning.checkpoint` part); a fresh overlay over the
same fitted policy that takes it up (:meth:`restore`) is the same as one that applied the
events.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from switchpoint._messages import json_quoted, listed_names
from switchpoint.errors import InvalidInputError, UnknownModelError
from switchpoint.learning.checkpoint import CheckpointError, State
from switchpoint.learning.events import FeedbackEvent
from switchpoint.learning.held import HeldOutcomes
from switchpoint.learning.held import Outcome as _Evidence
from switchpoint.policies import ClusterPolicy, KnnPolicy, Policy
from switchpoint.policies.base import Array, TablePolicy

#: How many decisions' outcomes an overlay remembers, to replace one reported again.
REPLACEABLE_OUTCOMES = 100_000
#: Soft-assignment weights below this are dropped from an outcome's evidence.
MIN_UNIT_WEIGHT = 1e-4


class Overlay(Protocol):
    """Outcome evidence over one fitted policy."""

    @property
    def n_events(self) -> int: ...

    @property
    def n_outcomes(self) -> int: ...

    def counts_by_model(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """:attr:`n_events` and :attr:`n_outcomes` split by model (models with none left
        out); None when not known (restored from a checkpoint that did not keep them)."""

    @property
    def n_card_outcomes(self) -> int:
        """Of :attr:`n_outcomes`, those of models without a learned profile."""

    @property
    def profiled_evidence(self) -> bool:
        """Whether an outcome of a model the weights have a profile for is held (what new
        weights can fold in; outcomes of models without one are not)."""

    def check(self, event: FeedbackEvent) -> None:
        """Raise what :meth:`apply` would raise for ``event``, changing nothing (so that an
        event is logged only if it can be learned)."""

    def apply(self, event: FeedbackEvent) -> float | None:
        """Learn from ``event``; returns the quality it replaced (a repeat for the same
        decision), else None."""

    def outcome(self, decision_id: str) -> Held | None:
        """The outcome held for ``decision_id`` (the one a repeat replaces), or None."""

    def posterior(self) -> Policy:
        """The fitted policy updated by every outcome applied so far."""

    def card_evidence(self) -> CardEvidence | None:
        """The outcomes of models without a profile so far, on the posterior's units (None:
        none)."""

    def add_cards(self, cards: Sequence[str]) -> None:
        """Learn the outcomes of ``cards`` too, models without a profile that joined the
        catalog since (a table policy's overlay; another's learns none)."""

    def forget_posterior(self) -> None:
        """Free the posterior built last (and what was built with it); the next
        :meth:`posterior` builds it again from the same evidence: the same policy."""

    def state(self) -> State:
        """Everything applied so far, as a checkpoint part (copies)."""

    def restore(self, state: State) -> None:
        """Take up a :meth:`state` of an overlay over the same fitted policy, as if its events
        had been applied to this fresh one (:class:`CheckpointError` if it does not fit)."""


@dataclass(frozen=True)
class CardEvidence:
    """Outcomes of models without a learned profile, per unit of the posterior: ``count[u, c]``
    outcomes (soft-assignment weights summed) of ``names[c]`` on unit ``u``, with summed error
    ``error[u, c]``. A snapshot: later outcomes do not change it."""

    names: tuple[str, ...]
    count: Array
    error: Array


@dataclass(frozen=True)
class Held:
    """An outcome an overlay holds for a decision: its model, quality and the measured cost a
    repeat about the same model without one keeps (None: none; under the knn policy, which
    keeps a cost for every outcome, also when that cost was the decision's estimate)."""

    model: str
    quality: float
    cost: float | None


class _OverlayBase:
    """What every overlay shares: the fitted policy, its models, the count of outcomes applied
    and the posterior, built when first asked for after an outcome."""

    def __init__(self, base: Policy) -> None:
        base._check_fitted()
        self.base = base
        self.models = list(base.models_)
        self._events = 0
        self._replaced = 0
        # Per model: events applied and outcomes held (None: not known, see counts_by_model).
        self._by_model: tuple[Counter[str], Counter[str]] | None = (Counter(), Counter())
        self._cached: Policy | None = base
        # The base's parameters the posterior was built under: a change to them
        # (router.policy.set_params) builds it again, under the new ones.
        self._built_under = base.params_revision

    @property
    def n_events(self) -> int:
        return self._events

    @property
    def n_outcomes(self) -> int:
        """Outcomes learned: the events applied less those a later one replaced (the knn
        overlay's oldest examples past its cap are counted, though no longer held)."""
        return self._events - self._replaced

    def counts_by_model(self) -> tuple[dict[str, int], dict[str, int]] | None:
        if self._by_model is None:
            return None
        events, outcomes = self._by_model
        return ({m: n for m, n in events.items() if n},
                {m: n for m, n in outcomes.items() if n})

    @property
    def n_card_outcomes(self) -> int:
        """Of :attr:`n_outcomes`, those of models without a learned profile (which new weights
        cannot fold in: they hold models only as profiles)."""
        return 0

    @property
    def profiled_evidence(self) -> bool:
        return self.n_outcomes > self.n_card_outcomes

    def posterior(self) -> Policy:
        if self._built_under != self.base.params_revision:
            self.forget_posterior()
            self._built_under = self.base.params_revision
        if self._cached is None:
            self._cached = self._build()
        return self._cached

    def card_evidence(self) -> CardEvidence | None:
        return None

    def add_cards(self, cards: Sequence[str]) -> None:
        if cards:
            raise InvalidInputError("cards", f"the {json_quoted(self.base.name)} policy learns "
                                             "only its profiled models' outcomes")

    def forget_posterior(self) -> None:
        self._cached = None

    def _build(self) -> Policy:
        raise NotImplementedError

    def check(self, event: FeedbackEvent) -> None:
        self._model_index(event)

    def _model_index(self, event: FeedbackEvent) -> int:
        if event.model not in self.models:
            raise UnknownModelError("model", [event.model], self.models)
        return self.models.index(event.model)

    def _applied(self, model: int, previous: int | None) -> None:
        """Count an event about ``self.models[model]`` (``previous``: the model of the outcome
        it replaced, if it replaced one)."""
        self._events += 1
        self._replaced += previous is not None
        if self._by_model is not None:
            events, outcomes = self._by_model
            events[self.models[model]] += 1
            outcomes[self.models[model]] += 1
            if previous is not None:
                outcomes[self.models[previous]] -= 1
        self._cached = None

    def _counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = {"events": self._events, "replaced": self._replaced}
        if self._by_model is not None:
            events, outcomes = self.counts_by_model() or ({}, {})
            counts.update(model_events=events, model_outcomes=outcomes)
        return counts

    def _restore_counts(self, state: State) -> None:
        counts = [state.meta.get(k) for k in ("events", "replaced")]
        if not all(isinstance(c, int) and c >= 0 for c in counts):
            raise CheckpointError("the overlay's counts of events are missing")
        self._events, self._replaced = int(counts[0] or 0), int(counts[1] or 0)
        split = [state.meta.get(k) for k in ("model_events", "model_outcomes")]
        if split == [None, None]:  # a checkpoint written before they were kept
            self._by_model = None
            return
        if not all(isinstance(c, dict) and all(
                isinstance(m, str) and isinstance(n, int) and not isinstance(n, bool) and n > 0
                for m, n in c.items()) for c in split):
            raise CheckpointError("the overlay's counts of events by model are not counts")
        self._by_model = (Counter(split[0]), Counter(split[1]))


def _check_cards(cards: Sequence[str], models: Sequence[str]) -> None:
    """Refuse ``cards`` (models without a profile whose outcomes an overlay learns too) that
    repeat a name, among them or of ``models`` (those it learns already)."""
    clash = sorted(set(cards) & set(models))
    if clash or len(set(cards)) != len(cards):
        raise InvalidInputError("cards", f"must be new, distinct models without a profile; "
                                         f"{clash or list(cards)} repeat a name")


class TableOverlay(_OverlayBase):
    """Outcomes as extra labels in a table policy's units (see the module docstring)."""

    base: TablePolicy
    _kind = "table"

    def __init__(self, base: TablePolicy, *, cards: Sequence[str] = ()) -> None:
        super().__init__(base)
        _check_cards(cards, self.models)
        self.cards = tuple(cards)
        self.models = [*self.models, *self.cards]  # a card's evidence: the columns after
        shape = (base.table_.count.shape[0], len(self.models))
        self._count = np.zeros(shape)
        self._error = np.zeros(shape)
        self._cost_count = np.zeros(shape)
        self._cost_sum = np.zeros(shape)
        self._seen = HeldOutcomes(REPLACEABLE_OUTCOMES)
        self._cards_cached: CardEvidence | None = None
        self._card_outcomes = 0

    @property
    def n_card_outcomes(self) -> int:
        return self._card_outcomes

    def card_evidence(self) -> CardEvidence | None:
        self.posterior()  # built together, from the same outcomes
        return self._cards_cached

    def forget_posterior(self) -> None:
        self._cached = self._cards_cached = None

    def add_cards(self, cards: Sequence[str]) -> None:
        """Learn the outcomes of ``cards`` too (models without a profile that joined the
        catalog since, none of them this overlay's): each takes an empty column after the
        others, so the evidence held stays where it is."""
        _check_cards(cards, self.models)
        extra = np.zeros((self._count.shape[0], len(cards)))
        self._count = np.hstack([self._count, extra])
        self._error = np.hstack([self._error, extra])
        self._cost_count = np.hstack([self._cost_count, extra])
        self._cost_sum = np.hstack([self._cost_sum, extra])
        self.cards = (*self.cards, *cards)
        self.models = [*self.models, *cards]
        self.forget_posterior()

    def check(self, event: FeedbackEvent) -> None:
        self._model_index(event)
        if event.decision_id not in self._seen:  # (a repeat reuses its units)
            self._check_units(event)

    def _check_units(self, event: FeedbackEvent) -> None:
        self._units(event)

    def outcome(self, decision_id: str) -> Held | None:
        held = self._seen.get(decision_id)
        return None if held is None else Held(self.models[held.model], held.quality,
                                              held.cost)

    def apply(self, event: FeedbackEvent) -> float | None:
        self.check(event)
        j = self._model_index(event)
        previous = self._seen.pop(event.decision_id)
        if previous is not None:
            self._add(previous, -1.0)
            units, weights = previous.units, previous.weights  # the same prompt: same units
        else:
            units, weights = self._units(event)
        # A repeat about the same model without a cost keeps the one reported before.
        cost = event.measured_cost if event.measured_cost is not None else (
            previous.cost if previous is not None and previous.model == j else None)
        evidence = _Evidence(j, units, weights, 1.0 - event.quality, event.quality,
                             event.weight, cost)
        self._add(evidence, 1.0)
        card = len(self.base.models_)  # the first card's column
        self._card_outcomes += (j >= card) - (previous is not None and previous.model >= card)
        self._seen.put(event.decision_id, evidence)
        self._applied(j, None if previous is None else previous.model)
        return None if previous is None else previous.quality

    def state(self) -> State:
        # The units and weights of the remembered evidence are gathered from this snapshot
        # when the checkpoint is written (see checkpoint's module docstring).
        seen = self._seen.snapshot()
        units, weights = seen.units, seen.weights
        return State({"kind": self._kind, **self._counts(), "seen": seen.ids,
                      "cards": list(self.cards), "card_outcomes": self._card_outcomes}, {
            "count": self._count.copy(), "error": self._error.copy(),
            "cost_count": self._cost_count.copy(), "cost_sum": self._cost_sum.copy(),
            "seen_model": seen.model, "seen_error": seen.error, "seen_quality": seen.quality,
            "seen_weight": seen.weight, "seen_cost": seen.cost, "seen_length": seen.length,
            # Unit ids fit 32 bits (a quarter of the file is these): read back as int64.
            "seen_units": lambda: units().astype(np.int32),
            "seen_weights": weights,
        })

    def restore(self, state: State) -> None:
        if state.meta.get("kind") != self._kind:
            raise CheckpointError(f"a {json_quoted(state.meta.get('kind'))} overlay's state "
                                  f"cannot restore a '{self._kind}' overlay")
        if state.meta.get("cards", []) != list(self.cards):
            raise CheckpointError(f"the state learned the models without a profile "
                                  f"{_names(state.meta.get('cards', []))}; this overlay's are "
                                  f"{_names(list(self.cards))}")
        rows = self._restore_units(state)
        m = len(self.models)
        count = state.array("count", dtype=np.float64, shape=(rows, m))
        error = state.array("error", dtype=np.float64, shape=(rows, m))
        cost_count = state.array("cost_count", dtype=np.float64, shape=(rows, m))
        cost_sum = state.array("cost_sum", dtype=np.float64, shape=(rows, m))
        ids = state.meta.get("seen")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CheckpointError("the overlay's remembered decisions are not a list of ids")
        n = len(ids)
        model = state.array("seen_model", dtype=np.int64, shape=(n,))
        err = state.array("seen_error", dtype=np.float64, shape=(n,))
        quality = state.array("seen_quality", dtype=np.float64, shape=(n,))
        weight = state.array("seen_weight", dtype=np.float64, shape=(n,))
        cost = state.array("seen_cost", dtype=np.float64, shape=(n,))
        length = state.array("seen_length", dtype=np.int64, shape=(n,))
        total = int(length.sum()) if n else 0
        units = state.array("seen_units", dtype=np.int64, shape=(total,))
        weights = state.array("seen_weights", dtype=np.float64, shape=(total,))
        if n and (length.min() < 0 or model.min() < 0 or model.max() >= m):
            raise CheckpointError("the overlay's remembered decisions name unknown models")
        if total and (units.min() < 0 or units.max() >= rows):
            raise CheckpointError("the overlay's remembered decisions name unknown units")
        try:
            self._seen = HeldOutcomes.of(REPLACEABLE_OUTCOMES, ids, model, err, quality, weight,
                                         cost, length, units, weights)
        except ValueError:
            raise CheckpointError("the overlay remembers a decision twice") from None
        self._count, self._error = count.copy(), error.copy()
        self._cost_count, self._cost_sum = cost_count.copy(), cost_sum.copy()
        self._restore_counts(state)
        card_outcomes = state.meta.get("card_outcomes", None if self.cards else 0)
        if not isinstance(card_outcomes, int) or not 0 <= card_outcomes <= self.n_outcomes:
            raise CheckpointError("the overlay's count of outcomes of models without a profile "
                                  "is missing (a checkpoint from an earlier version)")
        self._card_outcomes = card_outcomes
        self._cached = None

    # Internals --------------------------------------------------------------------------------

    def _build(self) -> Policy:
        return self._with_evidence(self.base)

    def _with_evidence(self, structure: TablePolicy) -> Policy:
        """``structure`` (the fitted policy, with any grown units) updated by the profiled
        models' evidence; the cards' evidence is snapshotted beside it."""
        m = len(self.base.models_)
        self._cards_cached = (CardEvidence(self.cards, self._count[:, m:].copy(),
                                           self._error[:, m:].copy())
                              if self.cards and self._count[:, m:].any() else None)
        return structure.with_evidence(self._count[:, :m], self._error[:, :m],
                                       self._cost_count[:, :m], self._cost_sum[:, :m])

    def _add(self, e: _Evidence, sign: float) -> None:
        cells = (e.units, np.full(len(e.units), e.model))
        _add_cells(self._count, self._error, cells, sign * e.weight * e.weights, e.error)
        if e.cost is not None:
            _add_cells(self._cost_count, self._cost_sum, cells, sign * e.weight * e.weights,
                       e.cost)

    def _restore_units(self, state: State) -> int:
        """Take up the units a state added (none for a table) and return how many there are."""
        return int(self.base.table_.count.shape[0])

    def _units(self, event: FeedbackEvent) -> tuple[npt.NDArray[np.int64], Array]:
        if not event.units:
            raise InvalidInputError(
                "event", f"the {json_quoted(self.base.name)} policy learns from the units a "
                         "decision used, "
                "and this event names none; record decisions with the router that made them")
        units = np.array([u for u, _ in event.units], dtype=np.int64)
        weights = np.array([w for _, w in event.units], dtype=np.float64)
        n_units = len(self._count)
        if units.min() < 0 or units.max() >= n_units:
            raise InvalidInputError("event", f"names units outside 0..{n_units - 1}")
        return units, weights


class ClusterOverlay(TableOverlay):
    """Outcomes on clusters, with new clusters for prompts unlike any (module docstring)."""

    base: ClusterPolicy
    _kind = "cluster"

    def __init__(self, base: ClusterPolicy, *, novelty_threshold: float = 0.4,
                 max_new_clusters: int | None = None, cards: Sequence[str] = ()) -> None:
        super().__init__(base, cards=cards)
        if not -1.0 <= novelty_threshold <= 1.0:
            raise InvalidInputError("novelty_threshold", f"must be a cosine in [-1, 1], got "
                                                         f"{novelty_threshold}")
        self.novelty_threshold = float(novelty_threshold)
        self.max_new_clusters = (2 * base.n_units if max_new_clusters is None
                                 else int(max_new_clusters))
        if self.max_new_clusters < 0:
            raise InvalidInputError("max_new_clusters", "must be >= 0")
        self._sums: list[npt.NDArray[np.float64]] = []  # member sums of the new clusters
        # Every centre, fitted then grown: what outcomes are assigned over. The posterior's
        # tables are rebuilt from it only when asked for (a replay asks once, at the end).
        self._centroids: npt.NDArray[np.float32] = base.centroids_

    @property
    def n_new_clusters(self) -> int:
        return len(self._sums)

    def state(self) -> State:
        state = super().state()
        d = self.base.centroids_.shape[1]
        state.arrays["sums"] = (np.array(self._sums) if self._sums
                                else np.zeros((0, d), dtype=np.float64))
        state.arrays["centroids"] = self._centroids.copy()
        return state

    def _restore_units(self, state: State) -> int:
        n_base, d = self.base.centroids_.shape
        sums = state.array("sums", dtype=np.float64, shape=(None, d))
        if len(sums) > self.max_new_clusters:
            raise CheckpointError(f"the state grew {len(sums)} clusters; this overlay opens at "
                                  f"most {self.max_new_clusters}")
        centroids = state.array("centroids", dtype=np.float32, shape=(n_base + len(sums), d))
        self._sums = [row.copy() for row in sums]
        self._centroids = centroids.copy()
        return n_base + len(sums)

    def new_centroids(self) -> npt.NDArray[np.float32]:
        if not self._sums:
            return np.zeros((0, self.base.centroids_.shape[1]), dtype=np.float32)
        return _normalised(np.array(self._sums))

    def _check_units(self, event: FeedbackEvent) -> None:
        x = event.vector()
        if x is None:
            super()._units(event)
        elif x.shape[1] != self.base.centroids_.shape[1]:
            raise InvalidInputError("event", f"holds a {x.shape[1]}-d vector; the clusters are "
                                             f"{self.base.centroids_.shape[1]}-d")

    def _units(self, event: FeedbackEvent) -> tuple[npt.NDArray[np.int64], Array]:
        x = event.vector()
        if x is None:
            return super()._units(event)
        sims = (x @ self._centroids.T)[0]
        nearest = int(np.argmax(sims))
        n_base = self.base.n_units
        if sims[nearest] < self.novelty_threshold and len(self._sums) < self.max_new_clusters:
            self._sums.append(x[0].astype(np.float64))
            row = np.zeros((1, len(self.models)))
            self._count = np.vstack([self._count, row])
            self._error = np.vstack([self._error, row])
            self._cost_count = np.vstack([self._cost_count, row])
            self._cost_sum = np.vstack([self._cost_sum, row])
            self._centroids = np.vstack([self._centroids, _normalised(self._sums[-1][None])])
        elif nearest >= n_base:
            grown = self._sums[nearest - n_base] + x[0]
            self._sums[nearest - n_base] = grown
            self._centroids[nearest] = _normalised(grown[None])[0]  # our own copy (vstack)
        _, weights = self.base.assign(x, self._centroids)
        units = np.flatnonzero(weights[0] >= MIN_UNIT_WEIGHT).astype(np.int64)
        return units, weights[0, units]

    def _build(self) -> Policy:
        return self._with_evidence(self.base.with_clusters(self.new_centroids())
                                   if self._sums else self.base)


def _names(value: object) -> str:
    """Model names a checkpoint holds (or an overlay's own), as a message lists them: each
    quoted as JSON writes it, ``none`` for none, or the value so if it is not a list of names."""
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return listed_names(value, quoted=True) or "none"
    return json_quoted(value)


def _add_cells(count: Array, total: Array, cells: tuple[npt.NDArray[np.int64], ...],
               weight: Array, value: float) -> None:
    """Add (or, with negative weights, take back) ``value`` at ``cells`` by ``weight``.
    Taking back what was added leaves rounding dust; a cell back at zero is exactly zero."""
    count[cells] += weight
    total[cells] += weight * value
    dust = np.abs(count[cells]) < 1e-9
    count[cells] = np.where(dust, 0.0, count[cells])
    total[cells] = np.where(dust, 0.0, total[cells])


def _normalised(sums: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Cluster centres from their members' summed vectors: unit length, float32."""
    norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return (sums / norms).astype(np.float32)


class KnnOverlay(_OverlayBase):
    """Outcomes as extra labelled neighbours (for the reported model only)."""

    base: KnnPolicy

    def __init__(self, base: KnnPolicy, *, max_examples: int = 100_000) -> None:
        super().__init__(base)
        self.max_examples = int(max_examples)
        # Each decision's example: its vector, model, error, cost and whether that cost was
        # measured (given with an outcome, or kept from one that was), not the decision's
        # estimate; None: not known (restored from a checkpoint that did not keep it).
        self._rows: OrderedDict[str, tuple[npt.NDArray[np.float32], int, float, float,
                                           bool | None]] = OrderedDict()
        self._mean_cost = base.global_cost()

    def check(self, event: FeedbackEvent) -> None:
        self._model_index(event)
        x = event.vector()
        if x is None:
            raise InvalidInputError("event", "the 'knn' policy learns from the prompt's vector, "
                                             "and this event has none")
        if x.shape[1] != self.base.examples_.shape[1]:
            raise InvalidInputError("event", f"holds a {x.shape[1]}-d vector; the examples "
                                             f"are {self.base.examples_.shape[1]}-d")

    def outcome(self, decision_id: str) -> Held | None:
        """Its cost only when measured (or not known to be an estimate): an estimated one is
        kept by a repeat too, but no one gave it."""
        held = self._rows.get(decision_id)
        return None if held is None else Held(self.models[held[1]], 1.0 - held[2],
                                              None if held[4] is False else held[3])

    def apply(self, event: FeedbackEvent) -> float | None:
        self.check(event)
        j = self._model_index(event)
        x = event.vector()
        assert x is not None
        previous = self._rows.pop(event.decision_id, None)
        # A repeat about the same model without a measured cost keeps the cost it had (and
        # whether that was measured).
        cost: float
        measured: bool | None
        if event.measured_cost is not None:
            cost, measured = event.measured_cost, True
        elif previous is not None and previous[1] == j:
            cost, measured = previous[3], previous[4]
        elif event.cost is not None:
            cost, measured = event.cost, False
        else:
            cost, measured = float(self._mean_cost[event.model]), False
        self._rows[event.decision_id] = (x[0], j, 1.0 - event.quality, cost, measured)
        while len(self._rows) > self.max_examples:
            self._rows.popitem(last=False)
        self._applied(j, None if previous is None else previous[1])
        return None if previous is None else 1.0 - previous[2]

    def state(self) -> State:
        # Rows are never changed once made: their arrays are built from this snapshot when the
        # checkpoint is written (see checkpoint's module docstring).
        rows = list(self._rows.values())
        d = self.base.examples_.shape[1]
        return State({"kind": "knn", **self._counts(), "seen": list(self._rows)}, {
            "vectors": lambda: (np.array([r[0] for r in rows], dtype=np.float32) if rows
                                else np.zeros((0, d), dtype=np.float32)),
            "model": lambda: np.array([r[1] for r in rows], dtype=np.int64),
            "error": lambda: np.array([r[2] for r in rows], dtype=np.float64),
            "cost": lambda: np.array([r[3] for r in rows], dtype=np.float64),
            # 1 measured, 0 estimated, -1 not known
            "measured": lambda: np.array([-1 if r[4] is None else int(r[4]) for r in rows],
                                         dtype=np.int8),
        })

    def restore(self, state: State) -> None:
        if state.meta.get("kind") != "knn":
            raise CheckpointError(f"a {json_quoted(state.meta.get('kind'))} overlay's state "
                                  "cannot restore a 'knn' overlay")
        ids = state.meta.get("seen")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CheckpointError("the overlay's examples are not a list of decision ids")
        n, d = len(ids), self.base.examples_.shape[1]
        vectors = state.array("vectors", dtype=np.float32, shape=(n, d))
        model = state.array("model", dtype=np.int64, shape=(n,))
        error = state.array("error", dtype=np.float64, shape=(n,))
        cost = state.array("cost", dtype=np.float64, shape=(n,))
        # (not kept by checkpoints written before it was: not known)
        measured = (state.array("measured", dtype=np.int8, shape=(n,))
                    if "measured" in state.arrays else np.full(n, -1, dtype=np.int8))
        if n and (model.min() < 0 or model.max() >= len(self.models)):
            raise CheckpointError("the overlay's examples name unknown models")
        if n and (measured.min() < -1 or measured.max() > 1):
            raise CheckpointError("the overlay's examples say whether their cost was measured "
                                  "with a value other than 1, 0 or -1")
        self._rows = OrderedDict(
            (ids[i], (vectors[i].copy(), int(model[i]), float(error[i]), float(cost[i]),
                      None if measured[i] < 0 else bool(measured[i]))) for i in range(n))
        self._restore_counts(state)
        self._cached = None

    def _build(self) -> Policy:
        if not self._rows:
            return self.base
        rows = list(self._rows.values())
        m = len(self.models)
        error = np.full((len(rows), m), np.nan)
        cost = np.full((len(rows), m), np.nan)
        for i, (_, j, e, c, _) in enumerate(rows):
            error[i, j], cost[i, j] = e, c
        posterior = copy.copy(self.base)
        posterior.examples_ = np.vstack([self.base.examples_, np.array([r[0] for r in rows])])
        posterior.error_ = np.vstack([self.base.error_, error])
        posterior.cost_ = np.vstack([self.base.cost_, cost])
        # Costs are still read against the fitted policy's mean costs (the router's), not
        # against the means the outcomes moved: a package made of the posterior says so.
        posterior.reference_cost_ = self._mean_cost
        return posterior


def make_overlay(policy: Policy, *, novelty_threshold: float = 0.4,
                 max_new_clusters: int | None = None, cards: Sequence[str] = ()) -> Overlay:
    """The overlay that learns outcomes for ``policy``'s kind (and, for a table policy, of the
    ``cards``: models without a profile in it)."""
    if isinstance(policy, ClusterPolicy):
        return ClusterOverlay(policy, novelty_threshold=novelty_threshold,
                              max_new_clusters=max_new_clusters, cards=cards)
    if isinstance(policy, TablePolicy):
        return TableOverlay(policy, cards=cards)
    if isinstance(policy, KnnPolicy):
        return KnnOverlay(policy)
    raise InvalidInputError("policy", f"the {json_quoted(policy.name)} policy does not learn "
                                      "from outcomes; "
                                      "use the cluster, knn, tiers or tfidf policy")
