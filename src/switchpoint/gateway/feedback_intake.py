"""Feedback intake: how one decision (or one named-model request) went, named by its decision
id, its request id or its prompt's hash, checked whole before anything is learned, then learned
by the router that remembers the decision (and the snapshot's others, and the tenant's memory)
once the feedback log keeps it, or kept as a quality observation of the model that answered
where it cannot teach routing; with the streams under way, whose request ids take feedback
before their log entries are written. :class:`FeedbackIntake` is the
:class:`~switchpoint.gateway.learning.GatewayLearning`'s, which answers ``report``,
``stream_started`` and ``stream_ended`` with it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from switchpoint._messages import json_quoted, listed_names
from switchpoint.catalog import cost_unit_of
from switchpoint.decision import RoutingDecision, check_id
from switchpoint.errors import DecisionNotFoundError, InvalidInputError
from switchpoint.gateway.feedback_log import NOTE, NOTHING_LEARNED, Note, ServiceFeedbackLog
from switchpoint.gateway.feedback_rules import (
    NO_ANSWER,
    UNREADABLE,
    FeedbackResult,
    answer_cost,
    check_configured,
    check_listed,
    last_replaced,
    learnable,
    still_held,
)
from switchpoint.gateway.learning_checkpoints import LearningCheckpoints
from switchpoint.gateway.live import RouterState
from switchpoint.gateway.live_learning import LiveLearning
from switchpoint.gateway.open_decisions import MAX_PROMPT_ROWS, OpenDecisions
from switchpoint.learning.comment import check_comment
from switchpoint.learning.events import (
    DEFAULT_TENANT,
    FeedbackEvent,
    check_cost,
    check_quality,
    check_tenant,
)
from switchpoint.learning.learner import OutcomeResult
from switchpoint.learning.memory import PendingDecision
from switchpoint.router import Router
from switchpoint.store.learning import LearningReader

#: Streams under way whose request ids take feedback before they end (the oldest go past it).
MAX_STREAMS = 10_000


class IntakeHost(Protocol):
    """What feedback intake reads of its gateway's learning: the router state and the
    feedback log, the decisions open to feedback, the checkpoints, the check that the
    store takes writes, and the take-up of the rows another process logged."""

    state: RouterState
    log: ServiceFeedbackLog
    open_decisions: OpenDecisions
    checkpointer: LearningCheckpoints

    def check_writable(self, what: str, then: str = NOTHING_LEARNED) -> None: ...

    def _taking_up(self, learning: LiveLearning) -> Callable[[FeedbackEvent], None]: ...

    def _take_up_decision(self, learning: LiveLearning, router: Router, decision_id: str,
                          tenant: str) -> None: ...


class FeedbackIntake:
    """The feedback one gateway's learning (``host``'s) takes."""

    def __init__(self, host: IntakeHost) -> None:
        self._host = host
        self.state = host.state
        self.log = host.log
        self.open_decisions = host.open_decisions
        self.checkpointer = host.checkpointer
        self._counter_lock = threading.Lock()
        # Streams under way, by request id: what feedback on that id needs until the stream
        # ends and its log entry is written (oldest first, at most MAX_STREAMS).
        self._streams: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def reader(self) -> LearningReader | None:
        return self.log.reader

    def stream_started(self, request_id: str, decision: RoutingDecision | None,
                       tenant: str | None, model: str) -> None:
        """:meth:`GatewayLearning.stream_started
        <switchpoint.gateway.learning.GatewayLearning.stream_started>`."""
        with self._counter_lock:
            self._streams[request_id] = {
                "decision_id": None if decision is None else decision.decision_id,
                "tenant": tenant or DEFAULT_TENANT, "model": model, "purpose": None,
                "prompt_tokens": None}
            while len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)

    def stream_ended(self, request_id: str) -> None:
        """:meth:`GatewayLearning.stream_ended
        <switchpoint.gateway.learning.GatewayLearning.stream_ended>`."""
        with self._counter_lock:
            self._streams.pop(request_id, None)

    def _request(self, request_id: str) -> dict[str, Any] | None:
        """A logged gateway request (see ``LearningReader.request``), or a stream still
        under way."""
        with self._counter_lock:
            streaming = self._streams.get(request_id)
        if streaming is not None:
            return dict(streaming)
        return self.reader.request(request_id) if self.reader is not None else None

    def report(self, decision_id: object = None, quality_score: object = None,
               success: object = None, *, model: object = None, tenant: str | None = None,
               key_id: str | None = None, comment: object = None,
               cost: object = None, teachable: Callable[[str], None] | None = None,
               prompt_hash: object = None, config_read: bool = True) -> FeedbackResult:
        """:meth:`GatewayLearning.report
        <switchpoint.gateway.learning.GatewayLearning.report>`."""
        self._host.check_writable("the feedback")
        if (decision_id is None) == (prompt_hash is None):
            both = decision_id is not None
            raise InvalidInputError(
                "prompt_hash" if both else "decision_id",
                ("give decision_id or prompt_hash, not both" if both else
                 "is needed, or prompt_hash in its place (exactly one)")
                + ": decision_id is the id the answer carried (x-switchpoint-decision-id), "
                "prompt_hash the SHA-256 of the prompt a decision routed on (its prompt_hash), "
                "which names the latest decision of that prompt")
        if prompt_hash is not None:
            prompt_hash = check_id(prompt_hash, "prompt_hash")
        else:
            decision_id = check_id(decision_id)
        quality = check_quality(quality_score, success)
        comment = check_comment(comment)
        scope = None if tenant is None else check_tenant(tenant)
        if model is not None and not isinstance(model, str):
            raise InvalidInputError("model", "must be a model name (a string)")
        if prompt_hash is not None:
            decision_id = self._latest_of(prompt_hash, scope)
        assert isinstance(decision_id, str)
        self._check_not_refused(decision_id, scope)
        note = Note(kind="decision", key_id=key_id, comment=comment)
        token = NOTE.set(note)
        try:
            with self.state.guard:
                live = self.state.live()
                learning: LiveLearning | None = live.learning
                router = live.router
                if learning is not None:
                    note.kept = self._host._taking_up(learning)
                measured = check_cost(cost)
                cost_from = None if measured is None else "feedback"
                if model is not None and model not in router.models:
                    raise InvalidInputError("model", f"{json_quoted(model, 100)} is not a model "
                                                     f"of this gateway; use one of "
                                                     f"{listed_names(router.models, quoted=True)}")
                # (counted for the caller's tenant only: another's decision is not found)
                logged = self.log.check_repeats(decision_id, scope, "this decision",
                                                comment=comment)
                found = (self.open_decisions.find(learning, decision_id)
                         if learning is not None else None)
                if found is not None and (scope is None or found[1].tenant == scope):
                    owner, entry = found
                    check_configured(live.settings, entry.tenant, config_read)
                    self.log.flush()  # the outcomes before this one, even a moment ago
                    assert learning is not None
                    self._host._take_up_decision(learning, owner, decision_id, entry.tenant)
                    served, measured, cost_from = self._served(
                        decision_id, model, entry, owner, measured,
                        teaches=True, config_read=config_read, teachable=teachable)
                    if learnable(owner, served):
                        # (the decision's last outcome, which a quality observation may be)
                        last = (self.log.latest_quality(decision_id, entry.tenant) if logged
                                else None)
                        held = owner.learner.outcome(decision_id, entry.tenant)
                        outcome = owner.report_outcome(decision_id, quality, model=served,
                                                       tenant=entry.tenant, cost=measured)
                        assert learning is not None
                        learning.learn(outcome.event, owner.weights_id, skip=owner)
                        self.checkpointer.when_due(learning)
                        outcome, learned_note = last_replaced(outcome, last, held)
                        return FeedbackResult(outcome, "decision", True, learned_note,
                                              commits=tuple(note.commits), cost=measured,
                                              cost_from=cost_from,
                                              cost_unit=cost_unit_of(owner.catalog))
                    why = (f"{served} has no learned profile in these weights"
                           if served in owner.models else
                           f"{served} is not in this gateway's catalog (a reload took it "
                           "out, or the config read is not the one it was served under)")
                    return self._observe(decision_id, served, quality, measured,
                                         entry.tenant, note,
                                         f"{why}, so this outcome is kept as a quality "
                                         "observation of it and does not teach routing"
                                         + still_held(owner, decision_id, entry.tenant),
                                         cost_from, router, entry.prompt_tokens)
                stored = (self.open_decisions.kept_open(decision_id, router.learner.memory.capacity)
                          if found is None and learning is not None else None)
                if stored is not None and (scope is None or stored[0].tenant == scope):
                    # Made by a policy the live one cannot read it for (vectors against text).
                    entry = stored[0]
                    check_configured(live.settings, entry.tenant, config_read)
                    served, measured, cost_from = self._served(
                        decision_id, model, entry, router, measured,
                        teaches=False, config_read=config_read, teachable=teachable)
                    return self._observe(decision_id, served, quality, measured, entry.tenant,
                                         note, UNREADABLE, cost_from, router,
                                         entry.prompt_tokens)
                request = self._request(decision_id)
                routed = None if request is None else request["decision_id"]
                owner_tenant = None if request is None else (request["tenant"] or
                                                             DEFAULT_TENANT)
                if request is None or (scope is not None and owner_tenant != scope):
                    capacity = router.learner.memory.capacity
                    raise DecisionNotFoundError(decision_id, capacity)
                if request["purpose"] == "compare":
                    raise InvalidInputError("decision_id", "names one answer of a preference "
                                            "comparison: score it with POST /v1/router/"
                                            "preferences/score (by its compare_id), not as "
                                            "feedback")
                if routed and routed != decision_id and learning is not None and (
                        self.open_decisions.find(learning, routed) is not None):
                    # The request id of a routed request: the feedback is its decision's.
                    NOTE.reset(token)
                    token = NOTE.set(Note())
                    return self.report(routed, quality_score, success, model=model,
                                       tenant=tenant, key_id=key_id, comment=comment,
                                       cost=cost, teachable=teachable, config_read=config_read)
                assert owner_tenant is not None
                check_configured(live.settings, owner_tenant, config_read)
                served = model if isinstance(model, str) else request["model"]
                if served is None:
                    raise InvalidInputError("model", NO_ANSWER)
                if teachable is not None:
                    teachable(str(served))
                tokens = request["prompt_tokens"]
                answered = request.get("cost_usd")  # (None: a stream still under way)
                if measured is None and (priced := _priced(
                        router, str(served), (request["model"], answered), tokens)) is not None:
                    measured, cost_from = priced, "answer"
                return self._observe(decision_id, str(served), quality, measured,
                                     owner_tenant, note,
                                     "a request that named its model (or followed a session "
                                     "pin) was not routed, so this outcome is kept as a "
                                     "quality observation of the model and does not teach "
                                     "routing", cost_from, router,
                                     None if tokens is None else int(tokens))
        finally:
            NOTE.reset(token)

    def _served(self, decision_id: str, model: object, entry: PendingDecision,
                router: Router, measured: float | None, *,
                teaches: bool, config_read: bool, teachable: Callable[[str], None] | None
                ) -> tuple[str, float | None, str | None]:
        """The model feedback on ``entry`` (decision ``decision_id``, which ``router`` judges)
        is about: ``model`` as named, else the one that answered its request, else the one it
        chose (refused when its request got no answer from any model); checked listed and
        passed to ``teachable``. With it, the cost the outcome teaches and where it came from:
        the feedback's own (``measured``), else none where an outcome that teaches ``router``
        (``teaches``) keeps the one an earlier outcome about that model gave (``kept``), else
        what the gateway's own accounting priced the answer at (``answer``)."""
        answer = self._answer(decision_id)
        if model is None and answer is not None and answer[0] is None:
            raise InvalidInputError("model", NO_ANSWER)
        served = model if isinstance(model, str) else (
            answer[0] if answer is not None and answer[0] is not None else entry.chosen)
        check_listed(served, router, config_read)
        if teachable is not None:
            teachable(served)
        if measured is not None:
            return served, measured, "feedback"
        if teaches and self._kept_cost(router, decision_id, entry.tenant, served):
            return served, None, "kept"
        priced = _priced(router, served, answer, entry.prompt_tokens)
        return served, priced, None if priced is None else "answer"

    def _latest_of(self, prompt_hash: str, tenant: str | None) -> str:
        """The id of the latest decision routed on the prompt of ``prompt_hash``
        (``tenant``'s; None: any tenant's) that takes feedback: the latest the live routers
        made, else (none since the last start or reload, or none they still remember) the
        latest the store keeps among the decisions its ids are taken for (see
        :meth:`OpenDecisions.holds`); else a :class:`DecisionNotFoundError` naming
        ``prompt_hash``. The decision id found is then taken as any other."""
        with self.state.guard:
            live = self.state.live()
            learning: LiveLearning | None = live.learning
            routers = [] if learning is None else learning.routers()
            found = [entry for router in routers
                     if (entry := router.learner.memory.latest(prompt_hash, tenant)) is not None]
            if found:
                return max(found, key=lambda entry: entry.created).decision_id
            capacity = live.router.learner.memory.capacity
            stored = (self.reader.latest_pending(
                prompt_hash, tenant, held=lambda found: self.open_decisions.holds(found, capacity),
                rows=MAX_PROMPT_ROWS) if learning is not None and self.reader is not None
                else None)
            if stored is None:
                raise DecisionNotFoundError(prompt_hash, capacity, prompt_hash=True,
                                            field="prompt_hash")
            return stored

    def _check_not_refused(self, answer_id: str, tenant: str | None) -> None:
        """A request refused for who asked (see
        :func:`~switchpoint.gateway.accounting.refused`) got no answer: there is nothing to
        score."""
        kind = self.reader.refusal(answer_id, tenant) if self.reader is not None else None
        if kind is not None:
            raise InvalidInputError("decision_id", f"{answer_id} names a request refused "
                                                   f"({kind}) before any model answered it: "
                                                   "there is no answer to score")

    def _answer(self, decision_id: str) -> tuple[str | None, float | None] | None:
        """The model that answered a decision's request, and what its answer cost (see
        ``LearningReader.answer``); for a stream still under way, whose log entry is written
        when it ends, the model it streams from, its cost not known yet (a reload or a policy
        swap since it began left no remembered decision naming that model: the one read back
        from the store names the router's choice)."""
        with self._counter_lock:
            for stream in reversed(self._streams.values()):
                if stream["decision_id"] == decision_id:
                    return str(stream["model"]), None
        return self.reader.answer(decision_id) if self.reader is not None else None

    def _kept_cost(self, router: Router, decision_id: str, tenant: str, model: str) -> bool:
        """Whether an outcome about catalog model ``model`` without a cost keeps one taken
        before: ``router``'s learned state says so, whether or not the feedback log still keeps
        the row it came from (retention prunes the rows a checkpoint holds); or a row another
        process logged, not taken up yet, gave it (taken up before this outcome is learned).
        False for a model whose outcomes ``router`` does not learn."""
        profile = router.outcome_profile(model) if model in router.models else None
        if profile is None:
            return False
        held = router.learner.outcome(decision_id, tenant)
        if held is not None and held.model == profile and held.cost is not None:
            return True
        return self.reader is not None and self.reader.kept_cost(decision_id, tenant,
                                                                 model) is not None

    def _observe(self, decision_id: str, model: str, quality: float, cost: float | None,
                 tenant: str, note: Note, why: str, cost_from: str | None, router: Router,
                 prompt_tokens: int | None) -> FeedbackResult:
        """Log a quality observation of ``model``, which teaches no router. Its ``replaced``
        and ``previous_quality`` say what it takes the place of where it counts, the status's
        feedback figures per model: the decision's last outcome the log keeps, whichever
        model that was about (an outcome a router learned stays learned; the note says so)."""
        if cost is not None and model in router.models:
            router.learnable_cost(model, cost, prompt_tokens)  # refuses one beyond its prices
        self.log.flush()  # the previous outcome, even one a moment ago
        previous = self.log.latest_quality(decision_id, tenant)
        event = FeedbackEvent(decision_id=decision_id, model=model, quality=quality,
                              tenant=tenant, served=None, measured_cost=cost)
        future = self.log.append(event, "model", weights_id=None, key_id=note.key_id,
                                 comment=note.comment)
        outcome = OutcomeResult(decision_id, tenant, model, quality, previous is not None,
                                previous, event)
        return FeedbackResult(outcome, "model", False, why, (future,), cost, cost_from,
                              cost_unit_of(router.catalog))


def _priced(router: Router, model: str, answer: tuple[object, float | None] | None,
            prompt_tokens: int | None) -> float | None:
    """What the gateway's own accounting priced ``answer`` (the model that answered, and its
    cost in USD) at, where that model is ``model`` and its cost teaches ``router`` (see
    :func:`answer_cost`); else None."""
    if answer is None or answer[0] != model or answer[1] is None:
        return None
    if answer_cost(router, model, answer[1], prompt_tokens) is None:
        return None
    return float(answer[1])
