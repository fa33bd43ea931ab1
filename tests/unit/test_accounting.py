"""What one chat request writes to the request log, and tells its caller, without HTTP."""

from __future__ import annotations

import time

import pytest

from switchpoint.catalog import ModelCard
from switchpoint.decision import RoutingDecision
from switchpoint.errors import FailoverError, RateLimited, ServerError
from switchpoint.gateway import accounting
from switchpoint.gateway.capabilities import Needs
from switchpoint.gateway.failover import Attempt, FailoverResult
from switchpoint.gateway.live import Live
from switchpoint.gateway.planning import ChatCall, Plan
from switchpoint.gateway.providers.base import ProviderResponse
from switchpoint.gateway.sessions import PinDecision, PinState
from switchpoint.store import DecisionRecord, RequestRecord

CARD = ModelCard("good", input_per_mtok=10, output_per_mtok=30)


class FakeLive:
    """What accounting reads of the live router."""

    policy = "cluster"
    weights_id = "w-123"


def plan(decision: RoutingDecision | None = None) -> Plan:
    body = {"model": "auto" if decision else "good",
            "messages": [{"role": "user", "content": "hi"}]}
    return Plan(request_id="r1", started=time.perf_counter(), ts=1000.0, call=ChatCall(body),
                body=body, needs=Needs(False, False, 3, "hi"), session="s" * 64,
                pin=PinDecision(PinState.FRESH), routed_model="good", decision=decision)


def live() -> Live:
    return FakeLive()  # type: ignore[return-value]


def answer() -> FailoverResult:
    body = {"id": "x", "model": "good", "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 200}}
    attempts = [Attempt("other", 1, "server_error", 5.0, status=500, error="other: boom"),
                Attempt("good", 1, "ok", 12.0)]
    return FailoverResult("good", CARD, ProviderResponse(body, "good"), attempts, "gpt-x")


def test_an_answer_is_logged_with_its_tokens_and_cost() -> None:
    entry = accounting.answered(plan(), answer(), live())
    record = entry.request
    assert isinstance(record, RequestRecord) and len(entry.records) == 1
    assert (record.status, record.http_status, record.model, record.upstream_model) == (
        "ok", 200, "good", "gpt-x")
    assert (record.prompt_tokens, record.completion_tokens) == (1000, 200)
    # 1000 × $10/M + 200 × $30/M
    assert record.cost_usd == pytest.approx(0.016)
    assert record.models_tried == ["other", "good"] and record.escalated
    assert entry.info.cost_usd == record.cost_usd and entry.info.model == "good"
    assert entry.info.attempts == list(record.attempts)


def test_an_answers_cost_is_kept_to_the_places_dollars_are_kept_to() -> None:
    # 1 × $0.15/M + 2 × $0.60/M comes, in floats, to 1.3499999999999998e-06
    card = ModelCard("good", input_per_mtok=0.15, output_per_mtok=0.6)
    body = {"id": "x", "model": "good", "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    result = FailoverResult("good", card, ProviderResponse(body, "good"),
                            [Attempt("good", 1, "ok", 1.0)], "gpt-x")
    entry = accounting.answered(plan(), result, live())
    assert entry.request.cost_usd == entry.info.cost_usd == 1.35e-06


def test_an_auto_request_also_logs_its_decision() -> None:
    decision = RoutingDecision("good", 0.1, 0.2, {"good": 0.2}, 4, cost_weight=0.5)
    entry = accounting.answered(plan(decision), answer(), live())
    first, second = entry.records
    assert isinstance(first, DecisionRecord) and isinstance(second, RequestRecord)
    assert first.id == decision.decision_id == second.decision_id
    assert (first.policy, first.weights_id, second.cluster_id) == ("cluster", "w-123", 4)
    assert entry.info.decision_id == decision.decision_id


def test_a_failure_is_logged_with_every_attempt_and_unhealthy_skips_said() -> None:
    attempts = [Attempt("good", 0, "circuit_open", retry_after_s=12.0),
                Attempt("other", 1, "rate_limited", 3.0, status=429, error="other: slow down"),
                Attempt("other", 2, "rate_limited", 3.0, status=429, error="other: slow down")]
    exc = FailoverError("no model answered", attempts, RateLimited("slow down", retry_after=5))
    entry = accounting.failed(plan(), exc, live())
    record = entry.request
    assert (record.status, record.http_status, record.error_kind) == ("error", 429,
                                                                      "rate_limited")
    assert record.models_tried == ["other"] and record.cost_usd is None
    assert any("good was skipped as unhealthy" in r for r in record.reasoning)


def test_every_model_passed_over_makes_a_503_with_the_shortest_wait() -> None:
    attempts = [Attempt("good", 0, "circuit_open", retry_after_s=12.0),
                Attempt("other", 0, "circuit_open", retry_after_s=4.5)]
    exc = FailoverError("no model could be called", attempts, None)
    assert (exc.status, exc.code, exc.retry_after) == (503, "no_healthy_model", 4.5)
    entry = accounting.failed(plan(), exc, live())
    assert entry.request.http_status == 503 and entry.request.error_kind == "no_healthy_model"


def test_every_model_passed_over_resting_after_its_upstream_s_rate_limit_makes_a_429() -> None:
    # The request before was told 429 by the upstreams themselves: this one, which calls
    # none of them inside their rests, is told the same, with the shortest wait; one model
    # out for another failure makes it the 503 of no healthy model.
    resting = [Attempt("good", 0, "circuit_open", retry_after_s=12.0, cause="rate_limited"),
               Attempt("other", 0, "circuit_open", retry_after_s=4.5, cause="rate_limited")]
    exc = FailoverError("no model could be called", resting, None)
    assert (exc.status, exc.code, exc.retry_after) == (429, "rate_limited", 4.5)
    entry = accounting.failed(plan(), exc, live())
    assert entry.request.http_status == 429 and entry.request.error_kind == "rate_limited"
    assert any("good was skipped as unhealthy (resting after its upstream's rate limit)" in r
               for r in entry.request.reasoning)
    down = [resting[0], Attempt("other", 0, "circuit_open", retry_after_s=4.5,
                                cause="server_error")]
    exc = FailoverError("no model could be called", down, None)
    assert (exc.status, exc.code, exc.retry_after) == (503, "no_healthy_model", 4.5)


def test_a_request_the_client_abandoned_is_logged_as_closed() -> None:
    tries = [Attempt("good", 1, "server_error", status=500), Attempt("good", 2, "ok")]
    record = accounting.abandoned(plan(), live(), tries).request
    assert (record.status, record.http_status, record.models_tried) == (
        "client_closed", 499, ["good"])


def test_status_follows_the_tries() -> None:
    timeouts = [Attempt("a", 1, "read_timeout"), Attempt("b", 1, "first_token_timeout")]
    assert FailoverError("x", timeouts, ServerError("t")).status == 504
    mixed = [Attempt("a", 1, "read_timeout"), Attempt("b", 1, "server_error")]
    assert FailoverError("x", mixed, ServerError("s")).code == "upstream_failed"
