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

import logging
import numbers
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from switchpoint._messages import json_quoted
from switchpoint._numbers import checked_number
from switchpoint._pickling import LOCK, RLOCK, RemadeOnLoad, remade
from switchpoint.catalog import MAX_CATALOG_MODELS
from switchpoint.decision import PROMPT_HASH_DIGITS, check_id
from switchpoint.errors import (
    DecisionNotFoundError,
    InvalidInputError,
    UnknownModelError,
)
from switchpoint.learning.checkpoint import CheckpointError, State
from switchpoint.learning.events import (
    FeedbackEvent,
    FeedbackLog,
    check_cost,
    check_quality,
    check_tenant,
    tenant_key,
)
from switchpoint.learning.exploration import Explorer
from switchpoint.learning.memory import MAX_MEMORY_SIZE, DecisionMemory, PendingDecision
from switchpoint.learning.overlay import CardEvidence, Held, Overlay, make_overlay
from switchpoint.policies import Policy

log = logging.getLogger(__name__)

#: Tenants whose posterior policy stays built between their routings (those that routed last);
#: another tenant's is built again from its outcomes when it next routes (the same policy).
BUILT_POSTERIORS = 256

#: Tenants whose evidence (tens of KB each) a router holds in memory by default; see
#: :attr:`LearningSettings.max_tenants`.
MAX_TENANTS = 1024


@dataclass(frozen=True)
class LearningSettings:
    """How a router learns from outcomes.

    ``memory_size``: decisions remembered for outcomes (0 turns learning off; at most
    :data:`~switchpoint.learning.memory.MAX_MEMORY_SIZE`). ``exploration``:
    fraction of decisions sent to another candidate (0 by default; see
    :mod:`~switchpoint.learning.exploration`), drawn with ``seed``. ``novelty_threshold`` and
    ``max_new_clusters``: when the cluster policy opens a new cluster for an unfamiliar prompt
    (see :class:`~switchpoint.learning.overlay.ClusterOverlay`). ``max_tenants``: the tenants
    whose evidence is held in memory at once (None: no bound). Past it, a router with a
    feedback log lets the least recently used tenant's evidence go and rebuilds it from the
    log when that tenant routes or reports again (if the log no longer holds them all, pruned
    or replaced, the tenant begins again from those of its events the log holds, none: the
    global router's estimates, as a restart replaying the log would, with a warning logged);
    a router without one refuses a further tenant's first outcome, since nothing could
    rebuild what it let go.
    """

    memory_size: int = 10_000
    exploration: float = 0.0
    seed: int | None = None
    novelty_threshold: float = 0.4
    max_new_clusters: int | None = None
    max_tenants: int | None = MAX_TENANTS

    def __post_init__(self) -> None:
        def whole(name: str, value: object, *, least: int = 0, none: str = "") -> None:
            # ``none``: what None means where it is taken (empty: None is refused)
            if value is None and none:
                return
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
                    value < least:
                rule = f"a whole number >= {least}" + (f", or None {none}" if none else "")
                raise InvalidInputError(name, f"must be {rule}, got {json_quoted(value)}")

        whole("memory_size", self.memory_size)
        if self.memory_size > MAX_MEMORY_SIZE:
            raise InvalidInputError("memory_size", f"must be at most {MAX_MEMORY_SIZE:,} "
                                                   "decisions, got "
                                                   f"{json_quoted(self.memory_size)}")
        whole("seed", self.seed, none="for a random one")
        whole("max_new_clusters", self.max_new_clusters,
              none="for twice the base policy's clusters")
        whole("max_tenants", self.max_tenants, least=1, none="for no bound")
        rate = checked_number("exploration", self.exploration)
        if rate is None or not 0.0 <= rate <= 1.0:
            raise InvalidInputError("exploration", f"must be a fraction in [0, 1], got "
                                                   f"{json_quoted(self.exploration)}")
        object.__setattr__(self, "exploration", rate)  # a plain float, -0.0 as 0.0
        novelty = checked_number("novelty_threshold", self.novelty_threshold)
        if novelty is None or not -1.0 <= novelty <= 1.0:
            raise InvalidInputError("novelty_threshold", f"must be a cosine in [-1, 1], got "
                                                         f"{json_quoted(self.novelty_threshold)}")
        # Plain Python numbers, whatever NumPy scalars were given (as a saved state keeps them).
        object.__setattr__(self, "novelty_threshold", novelty)
        for name in ("memory_size", "seed", "max_new_clusters", "max_tenants"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, int(value))


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


#: How to have a router in another process when its own cannot be pickled.
BUILD_IN_EACH_PROCESS = ("build the router in each process instead (e.g. load_router(...) in a "
                         "multiprocessing Pool's initializer)")


class Learner(RemadeOnLoad):
    """Learning state of one router (thread-safe; see the module docstring). It pickles (with
    its router, to another process) with what it learned, unless a feedback log or a
    subscriber ties it to this process."""

    _remade = remade(_lock=RLOCK, _reporting=LOCK)

    def _check_picklable(self) -> None:
        if self.log is not None:
            raise TypeError(f"cannot pickle a router that learns into a feedback log "
                            f"({type(self.log).__name__}): a copy in another process would "
                            f"learn outcomes the log never holds; {BUILD_IN_EACH_PROCESS}, or "
                            "pickle one built without feedback_log")
        if self._subscribers or self._forgetting:
            raise TypeError("cannot pickle a router whose outcomes others follow (a "
                            "TenantRouter or a gateway subscribed to its learner): they stay "
                            f"in this process; {BUILD_IN_EACH_PROCESS}")

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
        # Overlays held in memory, least recently used first (see ``max_tenants``).
        self._overlays: OrderedDict[str, Overlay] = OrderedDict()
        self._revisions: dict[str, int] = {}
        self._last_event: dict[str, str] = {}  # each held tenant's last event applied
        # Tenants whose overlay was let go: their revision and last event, to rebuild it from
        # the log (the first ``revision`` of its events there, ending with that event).
        self._evicted: dict[str, tuple[int, str | None]] = {}
        # Tenants whose evidence could not be rebuilt and began again: the revision it began
        # again at (its evidence is the events applied since).
        self._restarted: dict[str, int] = {}
        self._built: OrderedDict[str, None] = OrderedDict()  # posteriors built, oldest first
        self._subscribers: list[Callable[[FeedbackEvent], object]] = []
        # Subscribers that let a tenant go with its overlay: (take an event, forget a tenant).
        self._forgetting: list[tuple[Callable[[FeedbackEvent], object],
                                     Callable[[str], object]]] = []
        self._lock = threading.RLock()
        # Outcomes are logged and learned one at a time, in one order, while routing (which
        # takes only ``_lock``) goes on during a log write.
        self._reporting = threading.Lock()

    def configure(self, settings: LearningSettings) -> None:
        """Apply new settings: the decision memory and the explorer are rebuilt (remembered
        decisions are kept, up to the new ``memory_size``); overlays stay as they are."""
        with self._lock:
            memory = self.memory.resized(settings.memory_size)
            self.settings = settings
            self.memory = memory
            self.explorer = Explorer(settings.exploration, settings.seed)
            self._shrink()

    def add_cards(self, cards: Sequence[str]) -> None:
        """Learn the outcomes of ``cards`` too: models without a profile that joined the
        router's catalog (a table policy's router: see ``Router.register_model``). Each
        tenant's evidence held takes an empty column for each; one this learner already learns
        (registered before, then unregistered) keeps the evidence it has. At most
        :data:`~switchpoint.catalog.MAX_CATALOG_MODELS` in all: past that an
        :class:`InvalidInputError` naming ``cards``, with nothing changed."""
        new = [c for c in dict.fromkeys(cards) if c not in self.cards]
        if not new:
            return
        if len(self.cards) + len(new) > MAX_CATALOG_MODELS:
            raise InvalidInputError(
                "cards", f"this router learns the outcomes of {len(self.cards)} models without "
                f"a profile already (one unregistered keeps its evidence, taken up again if it is "
                f"registered again), and {len(new)} more would pass the {MAX_CATALOG_MODELS} a "
                "router learns in all; register again a model of a name it knows, or build a "
                "new Router")
        with self._reporting, self._lock:
            for overlay in self._overlays.values():
                overlay.add_cards(new)
            self.cards = (*self.cards, *new)

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
            overlay = self._held(tenant)
            if overlay is None:
                return self.base, 0, None
            policy, cards = overlay.posterior(), overlay.card_evidence()
            self._built[tenant] = None
            self._built.move_to_end(tenant)
            while len(self._built) > BUILT_POSTERIORS:
                oldest, _ = self._built.popitem(last=False)
                self._overlays[oldest].forget_posterior()
            return policy, self._revisions[tenant], cards

    def remember(self, entry: PendingDecision, *, restored: bool = False) -> None:
        """Remember ``entry`` for its outcome; ``restored``: read back from a store (see
        :class:`~switchpoint.learning.memory.DecisionMemory`)."""
        self.memory.remember(entry, restored=restored)

    # Outcome side ------------------------------------------------------------------------------

    def report(self, decision_id: str, quality_score: float | None = None,
               success: bool | None = None, *, model: str | None = None,
               tenant: str | None = None, cost: float | None = None) -> OutcomeResult:
        """Learn how a remembered decision went, named by its id or its prompt hash (see
        ``Router.report_outcome``)."""
        decision_id = check_id(decision_id, or_prompt_hash=True)
        quality = check_quality(quality_score, success)
        measured = check_cost(cost)
        entry = self.lookup(decision_id, tenant)
        if entry is None:
            raise DecisionNotFoundError(decision_id, self.memory.capacity,
                                        prompt_hash=len(decision_id) == PROMPT_HASH_DIGITS)
        decision_id = entry.decision_id  # (the one a prompt hash names)
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
                overlay = self._held(entry.tenant)
                if overlay is None:
                    self._check_room(entry.tenant)
            fresh = None
            if overlay is None:
                overlay = fresh = self._new_overlay()
            overlay.check(event)
            if self.log is not None:
                self.log.append(event)  # kept first: what the log refuses is not learned
            previous = self.apply(event, fresh=fresh)
        return OutcomeResult(decision_id, entry.tenant, served, quality, previous is not None,
                             previous, event)

    def lookup(self, decision_id: str, tenant: str | None = None) -> PendingDecision | None:
        """The remembered decision ``decision_id`` names (of ``tenant``, if given): the one of
        that id or, a prompt hash's :data:`~switchpoint.decision.PROMPT_HASH_DIGITS` digits,
        the latest routed on that prompt; None when none is remembered."""
        scope = None if tenant is None else check_tenant(tenant)
        if len(decision_id) == PROMPT_HASH_DIGITS:
            return self.memory.latest(decision_id, scope)
        entry = self.memory.get(decision_id)
        return None if entry is None or (scope is not None and entry.tenant != scope) else entry

    def apply(self, event: FeedbackEvent, *, fresh: Overlay | None = None) -> float | None:
        """Apply one event to its tenant's overlay (created on first use: ``fresh``, if
        given) and tell the subscribers; returns the quality it replaced, if any.
        Deterministic."""
        with self._lock:
            overlay = self._held(event.tenant)
            if overlay is None:
                self._check_room(event.tenant)
                overlay = fresh if fresh is not None else self._new_overlay()
            previous = overlay.apply(event)
            self._overlays[event.tenant] = overlay
            self._overlays.move_to_end(event.tenant)
            self._revisions[event.tenant] = self._revisions.get(event.tenant, 0) + 1
            self._last_event[event.tenant] = event.event_id
            self._shrink()
            for callback in self._subscribers:
                callback(event)
            return previous

    # Bounded memory ----------------------------------------------------------------------------

    def _held(self, tenant: str) -> Overlay | None:
        """``tenant``'s overlay, marked as used last (rebuilt from the log if it was let go);
        None for a tenant that has learned nothing. Call with ``_lock`` held."""
        overlay = self._overlays.get(tenant)
        if overlay is not None:
            self._overlays.move_to_end(tenant)
            return overlay
        if tenant not in self._evicted:
            return None
        overlay, revision = self._rebuilt_or_restarted(tenant)
        last = self._evicted.pop(tenant)[1]
        self._overlays[tenant] = overlay
        self._revisions[tenant] = revision
        if last is not None:
            self._last_event[tenant] = last
        self._shrink()
        return overlay

    @contextmanager
    def holding(self, tenant: str | None) -> Iterator[None]:
        """``tenant``'s evidence held in memory (rebuilt from the log if it was let go) until
        the block ends, so what a subscriber keeps of the tenant (its tenant memory's records)
        is there to read meanwhile: no other tenant's request lets it go (other tenants'
        routing and outcomes wait for the block). Without a log or a bound nothing is let go,
        and nothing waits."""
        if self.log is None or self.settings.max_tenants is None:
            yield
            return
        with self._lock:
            self._held(check_tenant(tenant))
            yield

    def _rebuilt(self, tenant: str, revision: int, last: str | None) -> Overlay | None:
        """The overlay of an evicted tenant from its events in the log (events are logged
        before they are applied, in order): the ones it had applied since it began (or began
        again, see :meth:`_rebuilt_or_restarted`), those ending with its ``last`` event (the
        first ones when that is not known: after a checkpoint was restored); None when the log
        no longer holds them all."""
        overlay = self._new_overlay()
        wanted = revision - self._restarted.get(tenant, 0)
        if not wanted:
            return overlay
        if self.log is None:
            return None
        events: Sequence[FeedbackEvent]
        if last is None:
            events = list(islice(self.log.replay(tenant), wanted))
        else:
            window: deque[FeedbackEvent] = deque(maxlen=wanted)
            for event in self.log.replay(tenant):
                window.append(event)
                if event.event_id == last:
                    break
            else:
                window.clear()  # its last event is gone
            events = window
        if len(events) != wanted:
            return None
        for event in events:
            overlay.apply(event)
            for callback, _ in self._forgetting:
                callback(event)
        return overlay

    def _rebuilt_or_restarted(self, tenant: str) -> tuple[Overlay, int]:
        """An evicted tenant's overlay and revision: rebuilt from the log; or, when the log no
        longer holds every event it was built from (pruned, or another log in its place),
        begun again from the events of the tenant the log still holds (none: the global
        router's estimates), as a restart replaying that log would, at a new revision, so that
        no decision cached from the lost evidence is served; a warning says so. Call with
        ``_lock`` held."""
        revision, last = self._evicted[tenant]
        overlay = self._rebuilt(tenant, revision, last)
        if overlay is not None:
            return overlay, revision
        for _, forget in self._forgetting:
            forget(tenant)
        built_from = revision - self._restarted.get(tenant, 0)
        overlay, kept, last = self._new_overlay(), 0, None
        if self.log is not None:
            for event in self.log.replay(tenant):
                overlay.apply(event)
                for callback, _ in self._forgetting:
                    callback(event)
                kept, last = kept + 1, event.event_id
        restart = revision + 1
        self._restarted[tenant] = restart
        self._evicted[tenant] = (restart + kept, last)
        log.warning(
            "tenant %s: its learned evidence was let go to bound memory (at most %s tenants "
            "held) and the feedback log no longer holds every one of the %d outcome(s) it was "
            "built from; it begins again from the %d the log holds (%s), as a restart would "
            "(keep every event in the feedback log, or raise LearningSettings.max_tenants, to "
            "keep a tenant's evidence whole)",
            json_quoted(tenant), self.settings.max_tenants, built_from, kept,
            "the global router's estimates" if not kept else "and learns on from there")
        return overlay, restart + kept

    def _check_room(self, tenant: str) -> None:
        """Refuse a new tenant's first outcome when the tenants held fill ``max_tenants`` and
        no log could rebuild one let go. Call with ``_lock`` held."""
        limit = self.settings.max_tenants
        if (self.log is None and limit is not None and tenant not in self._evicted
                and len(self._overlays) >= limit):
            raise InvalidInputError(
                "tenant", f"a first outcome for {json_quoted(tenant)} would add a tenant to the "
                          f"{limit} "
                "whose learned evidence this router holds, its most "
                "(LearningSettings.max_tenants, about 72 KB each), and it has no feedback log "
                "to rebuild one it let go from: pass "
                "feedback_log=InMemoryFeedbackLog() (or a durable log) to Router so the least "
                "recently used tenant's evidence can be let go and rebuilt, or raise "
                "max_tenants (None: no bound); nothing was learned")

    def _shrink(self) -> None:
        """Let the least recently used tenants' overlays go while more than ``max_tenants``
        are held (only with a log to rebuild them from). Call with ``_lock`` held."""
        limit = self.settings.max_tenants
        if self.log is None or limit is None:
            return
        while len(self._overlays) > limit:
            tenant, overlay = self._overlays.popitem(last=False)
            overlay.forget_posterior()
            for _, forget in self._forgetting:
                forget(tenant)
            self._built.pop(tenant, None)
            self._evicted[tenant] = (self._revisions.pop(tenant),
                                     self._last_event.pop(tenant, None))

    def replay(self, events: Iterable[FeedbackEvent]) -> int:
        """Rebuild learning state from logged events, in order; returns how many. The events
        are not appended to the log again. ``events`` is an iterable of
        :class:`FeedbackEvent` (what a feedback log's ``replay()`` yields); an item that is
        not one is an :class:`InvalidInputError` naming its position, raised before it is
        applied (the events before it are learned, as a replay stopped there would leave
        them)."""
        if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Iterable):
            raise InvalidInputError("events", "must be an iterable of FeedbackEvent (what a "
                                              "feedback log's replay() returns), got "
                                              f"{type(events).__name__}")
        count = 0
        for event in events:
            if not isinstance(event, FeedbackEvent):
                raise InvalidInputError(
                    f"events[{count}]", f"must be a FeedbackEvent, got {type(event).__name__} "
                    "(read a stored event back with FeedbackEvent.from_dict); "
                    f"the {count} event(s) before it were learned")
            self.apply(event)
            count += 1
        return count

    def state(self) -> State:
        """Every tenant's overlay and revision, as a checkpoint part (see
        :mod:`~switchpoint.learning.checkpoint`), with the revision each tenant that began
        again did so at (``restarted``, 0 for one that never did): its evidence is the events
        since, so that, restored and let go, it is rebuilt from them, not begun again."""
        with self._lock:
            tenants = sorted({*self._overlays, *self._evicted})
            revisions: list[int] = []
            parts = []
            for tenant in tenants:
                overlay = self._overlays.get(tenant)
                if overlay is None:  # let go: rebuilt for the checkpoint, not held again
                    overlay, revision = self._rebuilt_or_restarted(tenant)
                    for _, forget in self._forgetting:
                        forget(tenant)
                else:
                    revision = self._revisions[tenant]
                revisions.append(revision)
                parts.append(overlay.state())
            restarted = [self._restarted.get(tenant, 0) for tenant in tenants]
            state = State({"tenants": tenants, "revisions": revisions,
                           "restarted": restarted})
            for i, part in enumerate(parts):
                state.put(f"overlay{i}", part)
            return state

    def restore(self, state: State) -> None:
        """Take up a :meth:`state` saved by a learner over the same policy and settings, in
        place of whatever this one has learned (nothing changes if it does not fit). A state
        saved without ``restarted`` (before it was kept) restores as if no tenant began
        again."""
        tenants, revisions = state.meta.get("tenants"), state.meta.get("revisions")
        if (not isinstance(tenants, list) or not isinstance(revisions, list)
                or len(tenants) != len(revisions)
                or not all(isinstance(r, int) for r in revisions)):
            raise CheckpointError("the learner's tenants are missing")
        restarted = state.meta.get("restarted", [0] * len(tenants))
        if (not isinstance(restarted, list) or len(restarted) != len(tenants)
                or not all(isinstance(r, int) and not isinstance(r, bool)
                           and 0 <= r <= revision
                           for r, revision in zip(restarted, revisions, strict=True))):
            raise CheckpointError("the learner's restarted revisions do not fit its tenants")
        overlays: OrderedDict[str, Overlay] = OrderedDict()
        for i, tenant in enumerate(tenants):
            overlay = self._new_overlay()
            overlay.restore(state.part(f"overlay{i}"))
            overlays[str(tenant)] = overlay
        with self._lock:
            self._overlays = overlays
            self._built.clear()
            self._revisions = {str(t): int(r) for t, r in zip(tenants, revisions, strict=True)}
            self._last_event.clear()
            self._evicted.clear()
            self._restarted = {str(t): r for t, r in zip(tenants, restarted, strict=True) if r}
            self._shrink()

    def _new_overlay(self) -> Overlay:
        return make_overlay(self.base, novelty_threshold=self.settings.novelty_threshold,
                            max_new_clusters=self.settings.max_new_clusters, cards=self.cards)

    def _check_profile(self, model: str) -> str:
        if model not in self.base.models_:
            raise UnknownModelError("model", [model], list(self.base.models_))
        return model

    def subscribe(self, callback: Callable[[FeedbackEvent], object],
                  forget: Callable[[str], object] | None = None) -> None:
        """Call ``callback(event)`` for every event applied from now on (and replayed). With
        ``forget``, the subscriber keeps per-tenant state that follows the overlays: when a
        tenant's overlay is let go (see ``max_tenants``), ``forget(tenant)`` is called, and
        when it is rebuilt from the log, ``callback`` gets the tenant's events again."""
        with self._lock:
            self._subscribers.append(callback)
            if forget is not None:
                self._forgetting.append((callback, forget))

    # Inspection --------------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        """Every tenant with learned evidence (held in memory or let go to bound it)."""
        with self._lock:
            return sorted({*self._overlays, *self._evicted})

    def held_tenants(self) -> int:
        """How many tenants' evidence is in memory now (at most ``max_tenants``, with a log)."""
        with self._lock:
            return len(self._overlays)

    def overlay(self, tenant: str | None = None) -> Overlay | None:
        with self._lock:
            return self._held(tenant_key(tenant))

    def outcome(self, decision_id: str, tenant: str) -> Held | None:
        """The outcome ``tenant``'s overlay holds for ``decision_id`` (the one a repeat
        replaces: its model, as a profile or a model without one, its quality and the
        measured cost a repeat about that model keeps), or None: held whether or not the
        feedback log still keeps its row."""
        overlay = self.overlay(tenant)
        return None if overlay is None else overlay.outcome(decision_id)

    def n_events(self, tenant: str | None = None) -> int:
        """Events ``tenant``'s overlay applied (repeats included)."""
        overlay = self.overlay(tenant)
        return 0 if overlay is None else overlay.n_events

    def n_outcomes(self, tenant: str | None = None) -> int:
        """Outcomes ``tenant``'s overlay holds (a repeat replaces its decision's outcome)."""
        overlay = self.overlay(tenant)
        return 0 if overlay is None else overlay.n_outcomes

    def counts_of(self, tenant: str | None, models: Collection[str]) -> tuple[int, int] | None:
        """:meth:`n_events` and :meth:`n_outcomes` of ``tenant`` about ``models`` only (the
        profiles outcomes teach, :meth:`Router.outcome_profile`, not catalog names); None
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
