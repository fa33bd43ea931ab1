"""What the gateway writes to the request log for one chat request: who was tried and how each
try ended, who answered, the pin state, latency and time to first token, tokens and cost.

Tokens are the upstream's own count (``usage`` of the answer, or of a stream's final chunk,
which the gateway always asks for); cost is those tokens at the answering model's catalog
prices (``input_per_mtok``, ``output_per_mtok``), ``None`` when the upstream reported no usage.
An ``auto`` request's routing decision is also appended to the decision log, as a routing
request's is. The same facts go back to the caller as a :class:`CallInfo`.

Error text is stored redacted (:mod:`switchpoint._redact`) and bounded: at most
:data:`MAX_ATTEMPT_ERROR` characters per try and :data:`MAX_ERROR` for the request, so an
upstream's verbose errors cannot grow the log faster than the traffic does. So is the model an
upstream says answered (:data:`MAX_UPSTREAM_MODEL` characters: a plain answer may be 32 MiB, all
of it a name); the model a refused request named (anything the caller wrote, a key pasted there
included) is stored redacted.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from switchpoint._redact import clip, redact
from switchpoint.catalog import usd_text
from switchpoint.decision import RoutingDecision
from switchpoint.errors import FailoverError, GatewayError, RateLimited, ServiceStoppingError
from switchpoint.gateway.failover import AnswerUse, Attempt, FailoverResult, FailoverStream
from switchpoint.gateway.live import Live
from switchpoint.gateway.planning import ChatCall, Plan, call_session
from switchpoint.gateway.providers import TokenUsage
from switchpoint.gateway.results import CallInfo
from switchpoint.gateway.sessions import PinDecision, PinState
from switchpoint.store import DecisionRecord, RequestRecord
from switchpoint.store.logs import Record

Records = list[Record]
# A request's spend-ledger rows and the amount its budgets were charged (see the governor).
Settlement = tuple[Records, "float | None"]
# Characters of error text kept per attempt, and for a whole request.
MAX_ATTEMPT_ERROR = 2_048
MAX_ERROR = 4_096
# Characters kept of the model an upstream says answered (as long as a name a request may give).
MAX_UPSTREAM_MODEL = 256
#: The error kind of a stream the gateway's own code broke (not the model: its pin stays).
INTERNAL_ERROR = "internal_error"


@dataclass
class Entry:
    """One request's log records, and what the caller is told about it."""

    records: Records
    info: CallInfo

    @property
    def request(self) -> RequestRecord:
        record = self.records[-1]
        assert isinstance(record, RequestRecord)
        return record


def decision_record(decision: RoutingDecision, live: Live, *, key_id: str | None = None,
                    tenant: str | None = None) -> DecisionRecord:
    policy, weights_id = live.policy, live.weights_id
    if decision.arm and live.learning is not None:  # an experiment arm's router may have decided
        policy, weights_id = live.learning.logged_as(decision, policy, weights_id)
    return DecisionRecord(
        id=decision.decision_id, ts=time.time(), selected_model=decision.selected_model,
        cluster_id=decision.cluster_id, cost_weight=decision.cost_weight,
        candidates=list(decision.all_scores), cache_hit=decision.cache_hit,
        routing_ms=decision.usage.routing_ms, embedding_ms=decision.usage.embedding_ms,
        policy=policy, weights_id=weights_id, expected_error=decision.expected_error,
        cost_adjusted_score=decision.cost_adjusted_score, key_id=key_id, tenant=tenant,
        expected_errors=decision.expected_errors or None,
        expected_costs=decision.expected_costs or None, governance=decision.governed,
        source=decision.source, memory_fallback=decision.memory_fallback or None,
        experiment=decision.experiment or None, arm=decision.arm or None,
    )


def info_of(plan: Plan) -> CallInfo:
    """What is known once the request is planned (before any upstream call)."""
    return CallInfo(request_id=plan.request_id, requested_model=plan.requested,
                    routed_model=plan.routed_model, decision=plan.decision,
                    pin_state=str(plan.pin.state), pin=plan.pin_info,
                    reasoning=plan.reasoning, excluded=plan.excluded,
                    planning_ms=round(plan.planning_ms, 3), key_id=plan.call.key_id,
                    tenant=plan.call.tenant)


def _entry(plan: Plan, live: Live, *, status: str, http_status: int, attempts: list[Attempt],
           models_tried: list[str], model: str | None = None,
           upstream_model: str | None = None, usage: TokenUsage | None = None,
           cost_usd: float | None = None, ttft_ms: float | None = None,
           error_kind: str | None = None, error: str | None = None,
           ledger: Settlement | None = None, notes: tuple[str, ...] = ()) -> Entry:
    d = plan.decision
    tried = [a.to_dict() for a in attempts]
    for attempt in tried:
        if attempt["error"]:
            attempt["error"] = clip(redact(attempt["error"]), MAX_ATTEMPT_ERROR)
    if error is not None:
        error = clip(redact(error), MAX_ERROR)
    if upstream_model is not None:
        upstream_model = redact(clip(upstream_model, MAX_UPSTREAM_MODEL) or "")
    reasoning = plan.reasoning + _skipped_notes(attempts) + list(notes)
    latency_ms = round((time.perf_counter() - plan.started) * 1e3, 3)
    ttft = None if ttft_ms is None else round(ttft_ms, 3)
    if ledger is not None and ledger[1] is not None and cost_usd is not None:
        # Usage priced past the budget's hold is not believed (the charge is the hold): the
        # log, the reports and the client's usage.cost say what was charged.
        cost_usd = min(cost_usd, ledger[1])
    request = RequestRecord(
        id=plan.request_id, ts=plan.ts, session_id=plan.session,
        requested_model=plan.requested, routed_model=plan.routed_model, model=model,
        upstream_model=upstream_model, models_tried=models_tried, attempts=tried,
        status=status, http_status=http_status, error_kind=error_kind, error=error,
        escalated=len(models_tried) > 1, pin_state=str(plan.pin.state), pin=plan.pin_info,
        stream=plan.stream, latency_ms=latency_ms, ttft_ms=ttft,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cost_usd=cost_usd,
        cluster_id=d.cluster_id if d else None,
        expected_error=d.expected_error if d else None,
        routing_ms=round(plan.planning_ms, 3),
        decision_id=d.decision_id if d else None,
        reasoning=reasoning,
        excluded=plan.excluded,
        key_id=plan.call.key_id, tenant=plan.call.tenant,
        charged_usd=ledger[1] if ledger is not None else None, purpose=plan.call.purpose)
    info = info_of(plan)
    info.model = model
    info.upstream_model = upstream_model
    info.reasoning = reasoning
    info.attempts = tried
    info.models_tried = list(models_tried)
    info.latency_ms = latency_ms
    info.ttft_ms = ttft
    info.prompt_tokens = request.prompt_tokens
    info.completion_tokens = request.completion_tokens
    info.cost_usd = cost_usd
    info.charged_usd = request.charged_usd
    records: Records = ([decision_record(d, live, key_id=plan.call.key_id,
                                         tenant=plan.call.tenant)] if d is not None else [])
    if ledger is not None:
        records.extend(ledger[0])  # in the same commit as the request, before it
    records.append(request)
    return Entry(records, info)


def _skipped_notes(attempts: list[Attempt]) -> list[str]:
    """Models failover passed over as unhealthy, said in plain words for the log."""
    return [f"{a.model} was skipped as unhealthy ("
            + ("resting after its upstream's rate limit" if a.cause == RateLimited.kind
               else "circuit open") + ")." for a in attempts if a.outcome == "circuit_open"]


def answered(plan: Plan, result: FailoverResult, live: Live,
             ledger: Settlement | None = None, use: AnswerUse | None = None) -> Entry:
    """A plain answer went out. One charged an estimate (``use``, see
    :meth:`FailoverResult.use`) says so, as a stream does (see :func:`streamed`)."""
    return _entry(plan, live, status="ok", http_status=200, attempts=result.attempts,
                  models_tried=result.models_tried, model=result.model,
                  upstream_model=result.upstream_model, usage=result.usage,
                  cost_usd=result.cost_usd, ledger=ledger,
                  notes=((_estimate_note(result.model, "ok", use),)
                         if ledger is not None and use is not None and use.estimated else ()))


def streamed(plan: Plan, stream: FailoverStream, live: Live, ttft_ms: float,
             ledger: Settlement | None = None, use: AnswerUse | None = None) -> Entry:
    """A stream's body ended: whole (``ok``), broken after its first byte (``stream_broken``:
    the client got an error event, or the gateway closed it, unread, at its request's
    deadline, which a read under way meets as a broken stream too) or abandoned by the client
    (``client_closed``). Its pin is the plan's as the stream ended: a pinned model that broke
    the stream did not hold the pin, whatever the headers had said
    (:meth:`Plan.broke_off <switchpoint.gateway.planning.Plan.broke_off>`); one the gateway's
    own code broke is logged with the error kind ``internal_error`` and leaves the pin as it
    was. A stream the upstream answered with one whole answer says so in its reasoning, and
    one charged an estimate (``use``, see :meth:`FailoverStream.use`) says that: its
    ``cost_usd`` and tokens stay unknown (null), as the upstream reported none, and its
    ``charged_usd`` is the estimate."""
    if stream.completed:
        status, kind, error = "ok", None, None
    elif stream.error is not None:
        kind = INTERNAL_ERROR if stream.error.internal else stream.error.kind
        status, error = "stream_broken", str(stream.error)
    elif stream.closed_because is not None:
        status, kind, error = "stream_broken", stream.closed_kind, stream.closed_because
    else:
        status, kind, error = "client_closed", None, "the client closed the stream"
    return _entry(plan, live, status=status, http_status=200, attempts=stream.attempts,
                  models_tried=stream.models_tried, model=stream.model,
                  upstream_model=stream.upstream_model, usage=stream.usage,
                  cost_usd=stream.cost_usd, ttft_ms=ttft_ms, error_kind=kind, error=error,
                  ledger=ledger,
                  notes=((_whole_note(stream.model, stream.usage),) if stream.whole else ())
                  + ((_estimate_note(stream.model, status, use),)
                     if ledger is not None and use is not None and use.estimated else ()))


def _whole_note(model: str, usage: TokenUsage | None) -> str:
    """What the log says of a stream request its upstream answered whole."""
    return (f"{model} answered the stream request with a whole answer, not an event stream; "
            "it was sent on as a stream and " + (
                "its usage charged." if usage is not None else
                "reported no usage to believe, so it is charged as a stream that reports "
                "none is."))


def _estimate_note(model: str, status: str, use: AnswerUse) -> str:
    """What the log says of an answer, plain or streamed, charged an estimate of what it
    used."""
    assert use.usage is not None
    price = ("" if use.cost_usd is None else
             f", {usd_text(use.cost_usd)} at its prices (never past its worst case)")
    if not use.stream:
        ended = "answer came"
    else:
        ended = "stream " + ("ended whole" if status == "ok" else f"ended mid-answer ({status})")
    prompt = ("as the upstream reported it" if use.prompt_reported
              else "the prompt as the gateway estimates it")
    thinking = ("" if not use.unrelayed_bytes else
                f" and the {use.unrelayed_bytes} bytes of thinking, not relayed")
    return (f"Estimated charge: {model}'s {ended} with no usage to believe, so it is charged "
            f"as an estimate of what it used: {use.usage.prompt_tokens} prompt tokens "
            f"({prompt}) and {use.usage.completion_tokens} answer tokens (the "
            f"{use.relayed_bytes} bytes, in UTF-8, of text, reasoning and tool-call arguments "
            f"relayed{thinking}){price}.")


def failed(plan: Plan, exc: FailoverError, live: Live,
           ledger: Settlement | None = None) -> Entry:
    """No model answered (or the upstream refused the request itself)."""
    last = exc.last_error
    return _entry(plan, live, status="error", http_status=exc.status,
                  attempts=exc.attempts, models_tried=exc.models_tried,
                  error_kind=last.kind if last is not None else exc.code,
                  error=str(exc), ledger=ledger)


def refused(call: ChatCall, exc: GatewayError, live: Live, started: float,
            pin: PinDecision | None = None) -> Entry:
    """The request was refused for who asked before any model was called (a model its key
    may not use, a budget, a rate limit, its tenant's share of calls in flight). ``exc.info``
    is set when the request was planned by then (it carries the request id, the routing
    decision and the pin the caller is told); otherwise a request id is made here, and set on
    ``exc`` so the caller is told it too, and the pin reported is ``pin``: what the session's
    pin would have done, read without changing it (``fresh`` when none is given)."""
    return _unplanned(call, exc, live, started, pin, status="refused")


def stopped_unplanned(call: ChatCall, exc: ServiceStoppingError, live: Live, started: float,
                      pin: PinDecision | None = None) -> Entry:
    """The service stopped before the request was planned (it was being routed, or came once
    the service had begun to end what it had in flight): no model was called, no budget
    held. Logged as :func:`stopped` logs one ended later (an ``error`` of kind
    ``service_stopped``); ``pin`` as for :func:`refused`."""
    return _unplanned(call, exc, live, started, pin, status="error")


def abandoned_unplanned(call: ChatCall, live: Live, started: float,
                        pin: PinDecision | None = None, *,
                        why: str = "the client left while the request was being routed, "
                                   "before any model was called") -> Entry:
    """The caller left while the request was being planned (its router still deciding, its
    task cancelled; ``why``: how): logged once as closed by the client, as one that leaves
    later is, with no model, no charge and no decision (the decision made for it is
    forgotten, so no id of it is written for feedback to name); ``pin`` as for
    :func:`refused`."""
    return _unplanned(call, None, live, started, pin, status="client_closed",
                      http_status=499, error_kind="client_closed", error=why)


def _unplanned(call: ChatCall, exc: GatewayError | None, live: Live, started: float,
               pin: PinDecision | None, *, status: str, http_status: int | None = None,
               error_kind: str | None = None, error: str | None = None) -> Entry:
    """A request that ended before it was planned, logged with ``status``: ``exc``'s status,
    code and words, or (no ``exc``) ``http_status``, ``error_kind`` and ``error``; see
    :func:`refused`."""
    peeked = pin if pin is not None else PinDecision(PinState.FRESH)
    info = exc.info if exc is not None and isinstance(exc.info, CallInfo) else CallInfo(
        request_id=uuid.uuid4().hex, requested_model=call.requested, routed_model=None,
        pin_state=str(peeked.state), pin=peeked.to_dict(), key_id=call.key_id,
        tenant=call.tenant)
    latency_ms = round((time.perf_counter() - started) * 1e3, 3)
    info.latency_ms = latency_ms
    if exc is not None:
        exc.info = info
        http_status, error_kind, error = exc.status, exc.code, str(exc)
    assert http_status is not None and error is not None
    d = info.decision
    request = RequestRecord(
        id=info.request_id, ts=time.time(), session_id=call_session(call),
        requested_model=redact(call.requested), routed_model=info.routed_model,
        status=status,
        http_status=http_status, error_kind=error_kind, error=clip(redact(error), MAX_ERROR),
        pin_state=info.pin_state, pin=info.pin, stream=call.stream, latency_ms=latency_ms,
        cluster_id=d.cluster_id if d else None,
        expected_error=d.expected_error if d else None,
        routing_ms=round(info.planning_ms, 3) if d else None,
        decision_id=d.decision_id if d else None, reasoning=list(info.reasoning),
        excluded=info.excluded, key_id=call.key_id, tenant=call.tenant, purpose=call.purpose)
    records: Records = ([decision_record(d, live, key_id=call.key_id, tenant=call.tenant)]
                        if d is not None else [])
    return Entry([*records, request], info)


def abandoned(plan: Plan, live: Live, attempts: list[Attempt],
              ledger: Settlement | None = None, *,
              why: str = "the client closed the connection before the answer was ready"
              ) -> Entry:
    """The client left before a plain answer was ready (``why``: how): the upstream call was
    cancelled."""
    tried = list(dict.fromkeys(a.model for a in attempts if not a.skipped))
    return _entry(plan, live, status="client_closed", http_status=499, attempts=attempts,
                  models_tried=tried, error_kind="client_closed", error=why, ledger=ledger)


def stopped(plan: Plan, live: Live, attempts: list[Attempt], exc: ServiceStoppingError,
            ledger: Settlement | None = None) -> Entry:
    """The service stopped before a plain answer (or a stream's first chunk) was ready: the
    service ended the upstream call."""
    tried = list(dict.fromkeys(a.model for a in attempts if not a.skipped))
    return _entry(plan, live, status="error", http_status=exc.status, attempts=attempts,
                  models_tried=tried, error_kind=exc.code, error=str(exc), ledger=ledger)
