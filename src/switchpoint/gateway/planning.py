"""Who may answer one chat request, and in which order.

::

    ChatCall ─► model check ─► needs, session, pin ─► candidates ───────────────────► Plan
                (404 unknown)                         named: the model, then its fallbacks
                                                        (those the candidate list holds)
                                                      auto: the router's ranking − pin bonus
                                                        + health penalty; a hard pin first
                                                      then the capability filter and the
                                                      healthy-first order

:class:`ChatCall` holds the plain values of one request (the checked body, the session id, who is
calling, λ, a candidate list); :class:`Planner` turns it into a :class:`Plan`. The ranking rule
itself, :func:`rank_auto`, is a pure function. Nothing here knows HTTP.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from switchpoint._messages import cut, json_quoted, listed_names
from switchpoint._redact import redact
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    GatewayClosedError,
    GatewayError,
    InvalidInputError,
    ModelNotFoundError,
    NoCandidatesError,
    NoCapableModelError,
    UnknownModelError,
)
from switchpoint.gateway.capabilities import Needs, common_field, filter_candidates, needs_of
from switchpoint.gateway.failover import (
    Attempt,
    describe_attempts,
    failed_models,
    fallback_chain,
    outgrown_models,
)
from switchpoint.gateway.health import BreakerState, HealthStatus, HealthTracker
from switchpoint.gateway.in_flight import Slot
from switchpoint.gateway.parsing import AUTO_MODEL, upstream_body
from switchpoint.gateway.sessions import PinDecision, PinState, SessionPinner, session_key

#: The most characters a note says of why the answering model is not the one named (or
#: routed first): the reasons it was left out, or how its tries ended.
MAX_PASSED_OVER = 400
# Routes one text among some models at some λ (the live router's ``route``, run off the loop).
RouteFn = Callable[[str, list[str], float | None], Awaitable[RoutingDecision]]


@dataclass(frozen=True)
class ChatCall:
    """One chat request, as plain values.

    ``body`` is the checked request body (see :mod:`switchpoint.gateway.parsing`);
    ``session_id`` the client's own conversation id, if it sent one; ``caller`` who is calling
    (a client key's id, else the client's address), which scopes conversations known only by
    their first message; ``tenant`` the caller's tenant, which scopes explicit session ids;
    ``cost_weight`` overrides λ for ``auto``; ``models`` narrows the models ``auto`` may choose
    (the body's own ``models`` field does the same; both given, both apply), and beside a named
    model must list it and narrows its fallbacks; ``decision`` is a
    routing decision already made for this request (``auto`` then follows its ranking instead
    of routing again); ``exact`` asks for the named model alone, without its fallbacks (an
    answer from that model or an error: what labelling and comparisons need).
    ``key_id`` is the client key the caller authenticated with (its limits and budgets
    apply). ``purpose``: ``compare`` for one answer of a preference comparison (logged so;
    feedback cannot name it). ``models_field`` and ``session_field`` are what the caller
    called ``models`` and ``session_id``, which errors about them name: the arguments' names
    in-process (the defaults); the HTTP shell names the headers they came in. ``pool``: the
    models the caller may use (its key's and tenant's; None: any): a named model's fallbacks
    outside it are left out, and neither tried nor named to the caller (nor in an error).
    ``via``: the entries of the ``Via`` header the request came with (the intermediaries it
    passed; at most :data:`~switchpoint.gateway.via.MAX_ENTRIES` of them and
    :data:`~switchpoint.gateway.via.MAX_CHARS` characters), which its upstream requests list
    before the gateway's own (:mod:`switchpoint.gateway.via`).
    """

    body: dict[str, Any]
    session_id: str | None = None
    caller: str | None = None
    tenant: str | None = None
    cost_weight: float | None = None
    models: Sequence[str] | None = None
    decision: RoutingDecision | None = None
    exact: bool = False
    key_id: str | None = None
    purpose: str | None = None
    models_field: str = "models"
    session_field: str = "session_id"
    pool: Sequence[str] | None = None
    via: Sequence[str] = ()

    @property
    def requested(self) -> str:
        """The body's ``model``: ``auto``, or the catalog model the call names."""
        return str(self.body["model"])

    @property
    def models_named(self) -> str:
        """The call's candidate list as a message names it beside the body's ``models``: by
        its field (the header ``x-switchpoint-models``), or, in process, where the argument is
        called ``models`` as the body's field is, as the models argument."""
        return "the models argument" if self.models_field == "models" else self.models_field

    @property
    def candidate_lists(self) -> list[tuple[str, Sequence[str]]]:
        """The candidate lists the call gives, each beside the field it came in, in the order
        they apply: its own (the models argument, the header), then the body's ``models``."""
        body_models = self.body.get("models")
        return [(name, listed) for name, listed in ((self.models_field, self.models),
                                                    ("models", body_models))
                if listed is not None]

    @property
    def stream(self) -> bool:
        """Whether the call asks for a streamed answer (the body's ``stream``)."""
        return bool(self.body.get("stream"))


def call_session(call: ChatCall) -> str | None:
    """The key of the conversation ``call`` belongs to (see :func:`session_key`): its own
    session id within its tenant, else its first user message within its caller."""
    scope = call.tenant if call.session_id else call.caller
    return session_key(call.session_id, call.body["messages"], scope=scope,
                       field=call.session_field)


@dataclass
class Plan:
    """Who may answer one request, in which order, and why."""

    request_id: str
    started: float  # perf_counter at the start of the request
    ts: float
    call: ChatCall
    body: dict[str, Any]  # what goes upstream
    needs: Needs
    session: str | None
    pin: PinDecision
    cards: list[ModelCard] = field(default_factory=list)
    routed_model: str | None = None
    decision: RoutingDecision | None = None
    excluded: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    planning_ms: float = 0.0
    ticket: Any = None  # the budget reservation, once admitted (see switchpoint.governance)
    # The error it was ended with before its call began (the service stopped; the gateway
    # closed while its event loop was stopped; its loop closed, or its deadline ran out,
    # before it was executed): it is logged, and executing it raises it.
    stopped: GatewayError | GatewayClosedError | None = None
    pin_note: str | None = None  # why the pin is not what the session's windows said
    # Its place among its tenant's calls in flight (None: counted against no one), held until
    # its answer is returned, its stream ends or its call fails.
    slot: Slot | None = None
    # What counts it out of the requests inside the gateway, which closing waits for (see
    # switchpoint.gateway.admission), once its answer is returned, its stream has ended or
    # its call failed, its log entry queued; a second call does nothing.
    leave: Callable[[], None] = field(default=lambda: None, repr=False)

    def release_slot(self) -> None:
        """Give its place among its tenant's calls in flight back (once)."""
        if self.slot is not None:
            self.slot.release()

    def unpin(self, pin: PinDecision, note: str) -> None:
        """The pin turned out not to choose this request's model: ``pin`` is what it did
        instead, ``note`` (which the reasoning and the log's pin keep) why."""
        self.pin = pin
        self.pin_note = note
        self.notes.append(note)

    @property
    def pin_role(self) -> str:
        """What the model the pin sends the request to is, in a note: the pinned model, or
        the target of its re-home (the pinned model itself is not named: another key of the
        tenant may have pinned the session to a model this caller may not use)."""
        return "the conversation's re-home target" if self.pin.rehoming else "pinned model"

    def admitted(self, kept: list[ModelCard]) -> None:
        """The governance kept only ``kept`` of the candidates (a budget may leave some out):
        a pin whose model it left out was not followed."""
        favoured = self.pin.favoured_model
        before, self.cards = self.cards, kept
        if (favoured is None or not kept or all(c.name != favoured for c in before)
                or any(c.name == favoured for c in kept)):
            return
        self.unpin(self.pin.not_followed(), f"{self.pin_role} {favoured} was left out of the "
                                            f"candidates by a budget; {self.cards[0].name} "
                                            "leads")

    def answered_by(self, model: str, attempts: Sequence[Attempt]) -> None:
        """``model`` answered: when the pin had put another model first (a hard pin's model,
        or the soft pin's where it ranked first) that one did not answer, so the pin did not
        hold: ``evicted_post_failure`` (``evicted_context`` when it refused the conversation as
        too long for it), the session moving to ``model``."""
        self._note_passed_over(model, attempts)
        favoured = self.pin.favoured_model
        if favoured is None or favoured == model or not self.cards:
            return
        if self.cards[0].name != favoured:
            return  # (soft: the router ranked another model first; the bonus was all it did)
        self._not_held(favoured, attempts, f"{model} answered")

    def _note_passed_over(self, model: str, attempts: Sequence[Attempt]) -> None:
        """Note (in the reasoning, which the log and the ``x-switchpoint-reasoning`` header
        carry) why ``model``, which answered, is not the model the request named, or for
        ``auto`` the first of its candidates: the named model was left out for what it lacks
        (:attr:`excluded`), or it did not answer and how each of its tries ended
        (:func:`~switchpoint.gateway.failover.describe_attempts`: the request fell back).
        Nothing when the pin's note says it already (the pin had sent the request there)."""
        named = self.requested != AUTO_MODEL
        wanted = self.requested if named else self.cards[0].name if self.cards else model
        if wanted == model:
            return
        if ((self.pin.favoured_model == wanted and self.cards and self.cards[0].name == wanted)
                or (self.pin_note is not None and f" {wanted} " in f" {self.pin_note} ")):
            return
        reasons = self.excluded.get(wanted)
        if reasons:
            why = f"cannot serve this request ({'; '.join(reasons)})"
        else:
            tried = describe_attempts([a for a in attempts if a.model == wanted])
            # (what an upstream said, redacted as the log's attempts are)
            why = f"did not answer ({redact(tried.removeprefix(f'{wanted}: ')) or 'not called'})"
        who = (f"the named model {wanted}" if named
               else f"{wanted}, first of the routed candidates,")
        self.notes.append(f"{who} {cut(why, MAX_PASSED_OVER)}; "
                          f"{'its fallback ' if named else ''}{model} answered")

    def unanswered(self, attempts: Sequence[Attempt]) -> None:
        """No model answered (every one failed, the upstream refused the request, or the
        caller left first): when the model the pin sent the request to or favoured is among
        those that failed (:func:`~switchpoint.gateway.failover.failed_models`), the pin did
        not hold: ``evicted_post_failure`` (``evicted_context`` when it refused the
        conversation as too long for it: :func:`~switchpoint.gateway.failover.outgrown_models`),
        as the session's stored pin, which remembers which, says from now on
        (:meth:`SessionPinner.evict_on_failure
        <switchpoint.gateway.sessions.SessionPinner.evict_on_failure>`)."""
        favoured = self.pin.favoured_model
        if favoured is None or favoured not in failed_models(attempts):
            return
        self._not_held(favoured, attempts, "no model answered")

    def broke_off(self, model: str) -> None:
        """``model``'s stream broke after the answer had started, its headers (the pin's state
        among them) already sent: when the pin had sent the request to it (a hard pin's model,
        a re-home's target, the soft pin's where it ranked first), the pin did not hold after
        all. The request is ``evicted_post_failure``, as the session's stored pin says from now
        on (:meth:`SessionPinner.evict_on_failure
        <switchpoint.gateway.sessions.SessionPinner.evict_on_failure>`); the note keeps what
        the headers had said."""
        favoured = self.pin.favoured_model
        if favoured != model or not self.cards or self.cards[0].name != favoured:
            return
        said = self.pin.state
        self.unpin(self.pin.after_failure(),
                   f"{self.pin_role} {model} broke its stream after the answer had started; "
                   f"the response's headers, sent before, said {said}")

    def _not_held(self, favoured: str, attempts: Sequence[Attempt], then: str) -> None:
        outcomes = list(dict.fromkeys(a.outcome for a in attempts if a.model == favoured))
        pin = (self.pin.outgrown() if favoured in outgrown_models(attempts)
               else self.pin.after_failure())
        self.unpin(pin, f"{self.pin_role} {favoured} did not answer "
                        f"({', '.join(outcomes) or 'not called'}); {then}")

    @property
    def stream(self) -> bool:
        """Whether its call asks for a streamed answer (:attr:`ChatCall.stream`)."""
        return self.call.stream

    @property
    def requested(self) -> str:
        """The model its call names, or ``auto`` (:attr:`ChatCall.requested`)."""
        return self.call.requested

    @property
    def pin_info(self) -> dict[str, Any]:
        """What the session's pin did, as logged (and why it differs from what its windows
        said, under ``note``)."""
        info = self.pin.to_dict()
        if self.pin_note is not None:
            info["note"] = self.pin_note
        return info

    @property
    def reasoning(self) -> list[str]:
        """The router's reasoning (for ``auto``), then what the gateway did about it."""
        return [*(self.decision.reasoning if self.decision else []), *self.notes]


def rank_auto(scores: Mapping[str, float], *, bonus: Mapping[str, float] | None = None,
              health: HealthTracker | None = None) -> list[str]:
    """``auto``'s order: each model's routing score (lower is better) minus its session pin
    bonus, plus its health penalty when ``health`` is given; ties keep the router's order.
    Then, with ``health``, healthy models first, degraded next, down last."""
    bonus = bonus or {}
    position = {m: i for i, m in enumerate(scores)}

    def adjusted(model: str) -> tuple[float, int]:
        score = scores[model] - bonus.get(model, 0.0)
        if health is not None:
            score += health.rank_penalty(model)
        return score, position[model]

    order = sorted(scores, key=adjusted)
    return health.order(order) if health is not None else order


def auto_order(decision: RoutingDecision, *, bonus: Mapping[str, float] | None = None,
               health: HealthTracker | None = None) -> list[str]:
    """The order ``auto`` tries ``decision``'s candidates in: :func:`rank_auto`, then the
    model an escalation, exploration or the tenant's memory chose itself first (it leads)."""
    order = rank_auto(decision.all_scores, bonus=bonus, health=health)
    if decision.overrides_scores and decision.selected_model in order:
        order.remove(decision.selected_model)
        order.insert(0, decision.selected_model)
    return order


def unhealthy_note(health: HealthTracker, chosen: str, first: str) -> str | None:
    """Why ``first`` leads instead of the routed ``chosen``: ``chosen`` is not healthy (None
    when it is)."""
    status = health.status(chosen)
    if status is HealthStatus.HEALTHY:
        return None
    return f"{chosen} is {status} (GET /v1/router/health): ranked after {first}."


def unavailable(health: HealthTracker, model: str) -> str | None:
    """Why a call to ``model`` would be skipped now (its circuit is open, or its upstream asked
    callers to wait), with when to retry; None when it may be called."""
    wait = health.wait_s(model)
    if wait is None:
        return None
    why = ("its circuit is open" if health.state(model) is BreakerState.OPEN
           else "its upstream asked callers to wait")
    return f"{why}; retry in {math.ceil(wait)} s"


def healthy_choice(decision: RoutingDecision, health: HealthTracker, *, prefer_healthy: bool,
                   auto_scale: bool) -> RoutingDecision:
    """``decision`` as the model ``auto`` would send its request to first: with
    ``prefer_healthy``, its candidates in ``auto``'s health-aware order (:func:`auto_order`:
    degraded and down models after healthy ones); with ``auto_scale``, the models a call would
    skip now (:func:`unavailable`) after the others, so the decision names the first that
    can be called and its fallbacks after it. When every model would be skipped, the order
    stands. The reasoning says what moved."""
    if not (prefer_healthy or auto_scale):
        return decision
    routed = decision.selected_model
    order = auto_order(decision, health=health if prefer_healthy else None)
    notes: list[str] = []
    if prefer_healthy and order and order[0] != routed:
        note = unhealthy_note(health, routed, order[0])
        if note is not None:
            notes.append(note)
    if auto_scale:
        skipped = {m: why for m in order if (why := unavailable(health, m)) is not None}
        if skipped and len(skipped) < len(order):
            first = next(m for m in order if m not in skipped)
            ahead = order[:order.index(first)]
            if ahead:
                notes.append("; ".join(f"{m} is unavailable ({skipped[m]})" for m in ahead)
                             + f": {first} is called first, the others after it.")
            order = [m for m in order if m not in skipped] + list(skipped)
    if not order or (order[0] == routed and order[1:] == decision.fallback_models):
        return decision
    if order[0] == routed:
        return replace(decision, fallback_models=order[1:])
    return decision.reselected(order[0], order[1:],
                               " ".join(notes) or f"{order[0]} leads {routed} in auto's order.")


class Planner:
    """Plans requests against the live catalog with the gateway's health and session pins.

    ``prefer_healthy`` ranks degraded and down models last for ``auto`` (a named model keeps its
    fallback order: the client chose it).
    """

    def __init__(self, health: HealthTracker, pinner: SessionPinner, *,
                 prefer_healthy: bool = True) -> None:
        self.health = health
        self.pinner = pinner
        self.prefer_healthy = prefer_healthy

    async def plan(self, call: ChatCall, catalog: Catalog, route: RouteFn, *,
                   started: float | None = None) -> Plan:
        """The candidates for ``call``, best first.

        Raises :class:`~switchpoint.errors.ModelNotFoundError` for an unknown model,
        :class:`~switchpoint.errors.NoCapableModelError` when no catalog model can serve the
        request, and :class:`~switchpoint.errors.InvalidInputError` for a bad candidate list or
        session id.
        """
        started = time.perf_counter() if started is None else started
        requested = call.requested
        if call.exact and requested == AUTO_MODEL:
            raise InvalidInputError("model", 'an exact call names a catalog model, not "auto"')
        if requested != AUTO_MODEL and requested not in catalog:
            raise ModelNotFoundError(
                f"model: {json_quoted(requested, 200)} is not a model of this gateway; use "
                f'"auto" or one of {listed_names(catalog.names, quoted=True)} '
                "(GET /v1/models)", param="model")
        now = time.time()
        needs = needs_of(call.body)
        session = call_session(call)
        pin = self.pinner.decide(session, catalog, needs, now)
        if requested == AUTO_MODEL and pin.context_floor:
            # The pinned model refused this conversation as too long: ``auto`` chooses none
            # that small (a named model is sent where it is named, and may refuse it).
            needs = replace(needs, context_floor=pin.context_floor)
        plan = Plan(request_id=uuid.uuid4().hex, started=started, ts=now, call=call,
                    body=upstream_body(call.body), needs=needs, session=session, pin=pin)
        if pin.state is PinState.EVICTED_MISSING_MODEL:
            # (Before planning only a model gone from the catalog says so.) Not named: another
            # key of the tenant may have pinned the session to it.
            plan.unpin(pin, "the session's pinned model is no longer in the catalog (a reload "
                            "or restart took it out): the pin was dropped; "
                            + ("routed" if requested == AUTO_MODEL
                               else "the request goes to the model it names"))
        if requested != AUTO_MODEL:
            lists = _named_within(call, catalog)
            chain = ([requested] if call.exact
                     else [c.name for c in fallback_chain(catalog, requested)])
            if call.pool is not None:
                kept = [chain[0], *(n for n in chain[1:] if n in call.pool)]
                if len(kept) < len(chain):
                    # (they could be another tenant's: not named)
                    plan.notes.append("Fallbacks this key may not use are left out.")
                chain = kept
            unlisted = [n for n in chain[1:] if any(n not in listed for _, listed in lists)]
            if unlisted:  # (models the caller may use: it may see them named)
                plan.notes.append("Fallbacks the request's candidate list leaves out are left "
                                  f"out ({listed_names(unlisted, quoted=True)}).")
                chain = [n for n in chain if n not in unlisted]
            allowed, plan.excluded = filter_candidates(catalog, chain, needs)
            if not allowed:
                raise _nothing_fits(plan.excluded, f"model {json_quoted(requested, 200)} and its "
                                                   "fallbacks cannot")
            plan.routed_model = requested
            plan.cards = [catalog[n] for n in allowed]
            self._pin_for_named(plan)
        else:
            await self._plan_auto(plan, catalog, route)
        plan.planning_ms = (time.perf_counter() - started) * 1e3
        return plan

    async def _plan_auto(self, plan: Plan, catalog: Catalog, route: RouteFn) -> None:
        names = self._candidates(plan.call, catalog)
        allowed, plan.excluded = filter_candidates(catalog, names, plan.needs)
        if not allowed and plan.needs.context_floor:
            # No model larger than the one that refused the conversation may take it: the
            # client may have cut it short since; the upstreams judge it.
            plan.needs = replace(plan.needs, context_floor=0)
            allowed, plan.excluded = filter_candidates(catalog, names, plan.needs)
        if not allowed:
            what = ("no catalog model can" if names == catalog.routed
                    else f"{listed_names(names, quoted=True)} cannot")
            raise _nothing_fits(plan.excluded, what)
        health = self.health if self.prefer_healthy else None
        favoured = plan.pin.favoured_model  # (hard: where it sends; soft: whom it lifts)
        if favoured is not None and favoured not in allowed:
            if favoured in names:
                reasons = "; ".join(plan.excluded.get(favoured, []))
                note = (f"{plan.pin_role} {favoured} cannot serve this request ({reasons}); "
                        "routed")
            else:
                # Another caller of the tenant (a key allowed more models) pinned the session
                # to a model this request may not choose: the caller is not told its name.
                whose = ("the conversation's re-home target" if plan.pin.rehoming
                         else "the session's pinned model")
                note = f"{whose} is not among this request's candidates; routed"
            plan.unpin(plan.pin.not_followed(), note)
        elif favoured is not None and (why := unavailable(self.health, favoured)) is not None:
            # A call to it would be skipped: the pin cannot hold, the router chooses.
            plan.unpin(plan.pin.unavailable(), f"{plan.pin_role} {favoured} is unavailable "
                                               f"({why}); routed")
        pinned = plan.pin.pinned_model
        if pinned is not None:
            # Hard pin (or a re-home): the router is skipped; the pinned model's fallbacks and
            # then the other models follow, healthy first, in case it fails.
            plan.routed_model = pinned
            chain = [c.name for c in fallback_chain(catalog, pinned) if c.name in allowed]
            rest = [n for n in allowed if n not in chain]
            order = chain + (health.order(rest) if health is not None else rest)
            if plan.call.decision is not None:
                # The caller routed already (route_and_execute): the pin still leads, and the
                # answer keeps the decision it came with, saying whose choice the pin overrode.
                plan.decision = _within(plan.call.decision, allowed)
                chosen = plan.decision.selected_model
                if chosen != pinned:
                    plan.notes.append(f"the session is pinned to {pinned}: it answers, not "
                                      f"the decision's {chosen}")
        else:
            decision = plan.call.decision
            if decision is None:
                decision = await route(routing_text(plan.body, plan.needs), allowed,
                                       plan.call.cost_weight)
            else:
                decision = _within(decision, allowed)
            plan.decision = decision
            plan.routed_model = decision.selected_model
            order = auto_order(decision, bonus=plan.pin.bonus, health=health)
            self._note_unhealthy(plan, order)
        favoured = plan.pin.favoured_model
        if favoured is not None and favoured not in order:
            # (A decision made elsewhere, over other models than the soft pin's.)
            plan.unpin(plan.pin.not_followed(), f"{plan.pin_role} {favoured} is not among the "
                                                "routing decision's models; routed")
        plan.cards = [catalog[n] for n in order]

    @staticmethod
    def _pin_for_named(plan: Plan) -> None:
        """A request that names its model goes there (then to its fallbacks), not where the pin
        says: the pin stands only when it would have sent the request to that model too."""
        favoured = plan.pin.favoured_model
        if favoured is None:
            return
        requested = plan.requested
        if favoured == requested and plan.cards[0].name == requested:
            plan.pin = replace(plan.pin, bonus={})  # (nothing was ranked: no bonus was given)
        elif favoured == requested:
            reasons = "; ".join(plan.excluded.get(requested, []))
            plan.unpin(plan.pin.not_followed(), f"{plan.pin_role} {requested} cannot serve "
                                                f"this request ({reasons}); its fallbacks "
                                                "answer")
        else:
            # The pinned model is not named: it may be one this caller may not use (another key
            # of the tenant pinned the session), so it is not named here.
            plan.unpin(plan.pin.not_followed(), f"the request named its model ({requested}):"
                                                   " the session's pin was not followed")

    def _candidates(self, call: ChatCall, catalog: Catalog) -> list[str]:
        """The models ``auto`` may choose (not one with ``auto: false``, which a request must
        name as its model), narrowed by the call's candidate list and the body's ``models``."""
        names = catalog.routed
        within_name = "the models auto may choose"
        for field_name, listed in call.candidate_lists:
            _check_known(field_name, listed, catalog)
            keep = set(listed)
            narrowed = [n for n in names if n in keep]
            if not narrowed:
                raise NoCandidatesError(field_name, catalog.leaves_no_model(
                    listed, names, within_name))
            names = narrowed
            within_name = f"the models auto may choose that {call.models_named} lists"
        return names

    def _note_unhealthy(self, plan: Plan, order: list[str]) -> None:
        chosen = plan.routed_model
        if chosen is None or not order or order[0] == chosen or not self.prefer_healthy:
            return
        note = unhealthy_note(self.health, chosen, order[0])
        if note is not None:
            plan.notes.append(note)


def _check_known(field_name: str, listed: Sequence[str], catalog: Catalog) -> None:
    """An :class:`~switchpoint.errors.UnknownModelError` naming ``field_name`` when the
    candidate list ``listed`` names a model the catalog does not hold."""
    unknown = [m for m in listed if m not in catalog]
    if unknown:
        raise UnknownModelError(field_name, unknown, catalog.names)


def _named_within(call: ChatCall, catalog: Catalog) -> list[tuple[str, Sequence[str]]]:
    """The candidate lists of ``call``, which names its model, each checked as ``auto``'s are
    (:func:`_check_known`) and holding the model named: a caller that asks for a model its own
    list leaves out asked for two things at once, so that is refused (a
    :class:`~switchpoint.errors.NoCandidatesError` naming the list) rather than one of them
    ignored. The model's fallbacks are then held to the lists too."""
    requested = call.requested
    lists = call.candidate_lists
    for field_name, listed in lists:
        _check_known(field_name, listed, catalog)
        if requested not in listed:
            shown = json_quoted(requested, 200)
            raise NoCandidatesError(
                field_name, f"lists {listed_names(listed, quoted=True)} but not {shown}, the "
                            f"model the request names: add {shown} to it, ask for model "
                            f'"auto" to route among the models it lists, or leave {field_name} '
                            f"out to call {shown} and its fallbacks")
    return lists


def _within(decision: RoutingDecision, allowed: Sequence[str]) -> RoutingDecision:
    """A decision made elsewhere, narrowed to the models that can serve this request (its
    scores and its fallbacks alike)."""
    unknown = [m for m in decision.all_scores if m not in allowed]
    if not unknown:
        return decision
    scores = {m: s for m, s in decision.all_scores.items() if m in allowed}
    if not scores:
        raise InvalidInputError("decision", "none of the decision's models "
                                            f"({listed_names(decision.all_scores, quoted=True)})"
                                            " can serve this request through this gateway")
    return replace(decision, all_scores=scores,
                   fallback_models=[m for m in decision.fallback_models if m in scores])


def routing_text(body: Mapping[str, Any], needs: Needs) -> str:
    """What ``auto`` routes on: the last user turn; else all the conversation's text."""
    text = needs.last_user_text.strip()
    if text:
        return text
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text")) for p in content
                         if isinstance(p, Mapping) and p.get("text"))
    return "\n".join(parts).strip() or "(no text: an image or tool turn)"


def _nothing_fits(excluded: Mapping[str, Sequence[str]], what: str) -> NoCapableModelError:
    """``what``: who cannot serve the request, with its verb ("no catalog model can", "model
    'x' and its fallbacks cannot")."""
    reasons = "; ".join(f"{m}: {', '.join(r)}" for m, r in excluded.items())
    param = common_field(excluded)
    return NoCapableModelError(
        f"{param + ': ' if param else ''}{what} serve this request ({reasons}); add a model "
        "with the capability or context window it needs to the catalog", excluded, param=param)
