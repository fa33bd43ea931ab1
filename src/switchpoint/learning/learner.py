"""The learner a router carries: remembered decisions, per-tenant overlays, the feedback log.

``Router.route`` asks the learner which policy to estimate with for a tenant (the fitted one, or
its posterior after that tenant's outcomes) and remembers each decision; ``Router.report_outcome``
hands an outcome to :meth:`Learner.report`, which turns it into a
:class:`~switchpoint.learning.events.FeedbackEvent`, appends it to the log (an outcome the log
cannot keep is not learned), then applies it to the tenant's overlay only (tenants never see
each other's outcomes) and tells subscribers (e.g. a tenant memory). :meth:`Learner.replay`
rebuilds the same state from logged events.
"""

from __future__ import annotations

import numbers
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from switchpoint._numbers import real_number
from switchpoint.errors import DecisionNotFoundError, InvalidInputError, UnknownModelError
from switchpoint.learning.checkpoint import CheckpointError, State
from switchpoint.learning.events import (
    FeedbackEvent,
    FeedbackLog,
    check_cost,
    check_quality,
    check_tenant,
)
from switchpoint.learning.exploration import Explorer
from switchpoint.learning.memory import DecisionMemory, PendingDecision
from switchpoint.learning.overlay import CardEvidence, Overlay, make_overlay
from switchpoint.policies import Policy

#: Tenants whose posterior policy stays built between their routings (those that routed last);
#: another tenant's is built again from its outcomes when it next routes (the same policy).
BUILT_POSTERIORS = 256


@dataclass(frozen=True)
class LearningSettings:
    """How a router learns from outcomes.

    ``memory_size``: decisions remembered for outcomes (0 turns learning off). ``exploration``:
    fraction of decisions sent to another candidate (0 by default; see
    :mod:`~switchpoint.learning.exploration`), drawn with ``seed``. ``novelty_threshold`` and
    ``max_new_clusters``: when the cluster policy opens a new cluster for an unfamiliar prompt
    (see :class:`~switchpoint.learning.overlay.ClusterOverlay`).
    """

    memory_size: int = 10_000
    exploration: float = 0.0
    seed: int | None = None
    novelty_threshold: float = 0.4
    max_new_clusters: int | None = None

    def __post_init__(self) -> None:
        def whole(name: str, value: object, *, none: bool = False) -> None:
            if value is None and none:
                return
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise InvalidInputError(name, f"must be a whole number >= 0, got {value!r}")

        whole("memory_size", self.memory_size)
        whole("seed", self.seed, none=True)
        whole("max_new_clusters", self.max_new_clusters, none=True)
        rate = real_number(self.exploration)
        if rate is None or not 0.0 <= rate <= 1.0:
            raise InvalidInputError("exploration", f"must be a fraction in [0, 1], got "
                                                   f"{self.exploration!r}")
        novelty = real_number(self.novelty_threshold)
        if novelty is None or not -1.0 <= novelty <= 1.0:
            raise InvalidInputError("novelty_threshold", f"must be a cosine in [-1, 1], got "
                                                         f"{self.novelty_threshold!r}")


@dataclass(frozen=True)
class OutcomeResult:
    """What an outcome did: the event learned from, and whether it replaced an earlier one."""

    decision_id: str
    tenant: str
    model: str
    quality: float
    replaced: bool
    previous_quality: float | None
    event: FeedbackEvent

    def to_dict(self) -> dict[str, object]:
        return {"decision_id": self.decision_id, "tenant": self.tenant, "model": self.model,
                "quality": self.quality, "replaced": self.replaced,
                "previous_quality": self.previous_quality, "event_id": self.event.event_id}


class Learner:
    """Learning state of one router (thread-safe; see the module docstring)."""

    def __init__(self, policy: Policy, settings: LearningSettings | None = None, *,
                 log: FeedbackLog | None = None,
                 resolve: Callable[[str], str] | None = None,
                 cards: Sequence[str] = ()) -> None:
        self.base = policy
        self._resolve = resolve or self._check_profile
        self.cards = tuple(cards)  # models without a profile whose outcomes are learned too
        self.settings = settings or LearningSettings()
        self.memory = DecisionMemory(self.settings.memory_size)
        self.explorer = Explorer(self.settings.exploration, self.settings.seed)
        self.log = log
        self._overlays: dict[str, Overlay] = {}
        self._revisions: dict[str, int] = {}
        self._built: OrderedDict[str, None] = OrderedDict()  # posteriors built, oldest first
        self._subscribers: list[Callable[[FeedbackEvent], object]] = []
        self._lock = threading.RLock()
        # Outcomes are logged and learned one at a time, in one order, while routing (which
        # takes only ``_lock``) goes on during a log write.
        self._reporting = threading.Lock()

    def configure(self, settings: LearningSettings) -> None:
        """Apply new settings: the decision memory and the explorer are rebuilt (remembered
        decisions are kept, up to the new ``memory_size``); overlays stay as they are."""
        with self._lock:
            memory = DecisionMemory(settings.memory_size)
            for entry in self.memory.entries():
                memory.remember(entry)
            self.settings = settings
            self.memory = memory
            self.explorer = Explorer(settings.exploration, settings.seed)

    # Routing side -----------------------------------------------------------------------------

    def policy_for(self, tenant: str) -> tuple[Policy, int]:
        """The policy to estimate with for ``tenant`` and its revision (which changes with
        every outcome the tenant reports, so cached decisions go stale)."""
        policy, revision, _ = self.view(tenant)
        return policy, revision

    def view(self, tenant: str) -> tuple[Policy, int, CardEvidence | None]:
        """:meth:`policy_for`, with the outcomes of models without a profile learned from the
        same events (None: none)."""
        with self._lock:
            overlay = self._overlays.get(tenant)
            if overlay is None:
                return self.base, 0, None
            policy, cards = overlay.posterior(), overlay.card_evidence()
            self._built[tenant] = None
            self._built.move_to_end(tenant)
            while len(self._built) > BUILT_POSTERIORS:
                oldest, _ = self._built.popitem(last=False)
                self._overlays[oldest].forget_posterior()
            return policy, self._revisions[tenant], cards

    def remember(self, entry: PendingDecision) -> None:
        self.memory.remember(entry)

    # Outcome side ------------------------------------------------------------------------------

    def report(self, decision_id: str, quality_score: float | None = None,
               success: bool | None = None, *, model: str | None = None,
               tenant: str | None = None, cost: float | None = None) -> OutcomeResult:
        """Learn how a remembered decision went (see ``Router.report_outcome``)."""
        if not isinstance(decision_id, str) or not decision_id:
            raise InvalidInputError("decision_id", "must be the decision_id a route returned")
        quality = check_quality(quality_score, success)
        measured = check_cost(cost)
        entry = self.memory.get(decision_id)
        if entry is None or (tenant is not None and check_tenant(tenant) != entry.tenant):
            raise DecisionNotFoundError(decision_id, self.memory.capacity)
        served = entry.chosen if model is None else model
        profile = self._resolve(served)
        event = FeedbackEvent(
            decision_id=decision_id, model=profile, quality=quality, tenant=entry.tenant,
            embedding=None if entry.embedding is None else tuple(
                entry.embedding.reshape(-1).tolist()),
            units=entry.units, chosen=entry.chosen,
            cost=entry.expected_cost if served == entry.chosen else None,
            served=served if served != profile else None, measured_cost=measured)
        with self._reporting:
            with self._lock:
                overlay = self._overlays.get(entry.tenant)
            fresh = None
            if overlay is None:
                overlay = fresh = self._new_overlay()
            overlay.check(event)
            if self.log is not None:
                self.log.append(event)  # kept first: what the log refuses is not learned
            previous = self.apply(event, fresh=fresh)
        return OutcomeResult(decision_id, entry.tenant, served, quality, previous is not None,
                             previous, event)

    def apply(self, event: FeedbackEvent, *, fresh: Overlay | None = None) -> float | None:
        """Apply one event to its tenant's overlay (created on first use: ``fresh``, if
        given) and tell the subscribers; returns the quality it replaced, if any.
        Deterministic."""
        with self._lock:
            overlay = self._overlays.get(event.tenant)
            if overlay is None:
                overlay = fresh if fresh is not None else self._new_overlay()
            previous = overlay.apply(event)
            self._overlays[event.tenant] = overlay
            self._revisions[event.tenant] = self._revisions.get(event.tenant, 0) + 1
            for callback in self._subscribers:
                callback(event)
            return previous

    def replay(self, events: Iterable[FeedbackEvent]) -> int:
        """Rebuild learning state from logged events, in order; returns how many. The events
        are not appended to the log again."""
        count = 0
        for event in events:
            self.apply(event)
            count += 1
        return count

    def state(self) -> State:
        """Every tenant's overlay and revision, as a checkpoint part (see
        :mod:`~switchpoint.learning.checkpoint`)."""
        with self._lock:
            tenants = sorted(self._overlays)
            state = State({"tenants": tenants,
                           "revisions": [self._revisions[t] for t in tenants]})
            for i, tenant in enumerate(tenants):
                state.put(f"overlay{i}", self._overlays[tenant].state())
            return state

    def restore(self, state: State) -> None:
        """Take up a :meth:`state` saved by a learner over the same policy and settings, in
        place of whatever this one has learned (nothing changes if it does not fit)."""
        tenants, revisions = state.meta.get("tenants"), state.meta.get("revisions")
        if (not isinstance(tenants, list) or not isinstance(revisions, list)
                or len(tenants) != len(revisions)
                or not all(isinstance(r, int) for r in revisions)):
            raise CheckpointError("the learner's tenants are missing")
        overlays: dict[str, Overlay] = {}
        for i, tenant in enumerate(tenants):
            overlay = self._new_overlay()
            overlay.restore(state.part(f"overlay{i}"))
            overlays[str(tenant)] = overlay
        with self._lock:
            self._overlays = overlays
            self._built.clear()
            self._revisions = {str(t): int(r) for t, r in zip(tenants, revisions, strict=True)}

    def _new_overlay(self) -> Overlay:
        return make_overlay(self.base, novelty_threshold=self.settings.novelty_threshold,
                            max_new_clusters=self.settings.max_new_clusters, cards=self.cards)

    def _check_profile(self, model: str) -> str:
        if model not in self.base.models_:
            raise UnknownModelError("model", [model], list(self.base.models_))
        return model

    def subscribe(self, callback: Callable[[FeedbackEvent], object]) -> None:
        """Call ``callback(event)`` for every event applied from now on (and replayed)."""
        with self._lock:
            self._subscribers.append(callback)

    # Inspection --------------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        with self._lock:
            return sorted(self._overlays)

    def overlay(self, tenant: str | None = None) -> Overlay | None:
        with self._lock:
            return self._overlays.get(check_tenant(tenant))

    def n_events(self, tenant: str | None = None) -> int:
        """Events ``tenant``'s overlay applied (repeats included)."""
        overlay = self.overlay(tenant)
        return 0 if overlay is None else overlay.n_events

    def n_outcomes(self, tenant: str | None = None) -> int:
        """Outcomes ``tenant``'s overlay holds (a repeat replaces its decision's outcome)."""
        overlay = self.overlay(tenant)
        return 0 if overlay is None else overlay.n_outcomes

    def counts_of(self, tenant: str | None, models: Collection[str]) -> tuple[int, int] | None:
        """:meth:`n_events` and :meth:`n_outcomes` of ``tenant`` about ``models`` only; None
        when the split by model is not known (learned before a restore from a checkpoint that
        did not keep it)."""
        overlay = self.overlay(tenant)
        if overlay is None:
            return 0, 0
        split = overlay.counts_by_model()
        if split is None:
            return None
        events, outcomes = split
        return (sum(n for m, n in events.items() if m in models),
                sum(n for m, n in outcomes.items() if m in models))
