"""The HTTP request counter, called as plain ASGI (no server): what a request counts as when
the app answers, fails, or is left by its client before answering."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from switchpoint.catalog import model_name_problem
from switchpoint.server.metrics import NO_MODEL, OTHER_MODEL, Metrics, MetricsMiddleware
from switchpoint.store import RequestRecord

pytestmark = pytest.mark.anyio

Message = MutableMapping[str, Any]


async def count(app: Any, messages: list[Message], fails: bool = False,
                paths: tuple[str, ...] = ()) -> dict[tuple[str, str, str], int]:
    """Run one POST through the middleware in front of ``app`` (which raises if ``fails``);
    the request counts after."""
    metrics = Metrics()
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/v1/route", "headers": []}
    if fails:
        with pytest.raises(RuntimeError, match="boom"):
            await MetricsMiddleware(app, metrics, paths)(scope, receive, send)
    else:
        await MetricsMiddleware(app, metrics, paths)(scope, receive, send)
    return dict(metrics.requests)


async def test_an_answer_counts_as_its_status() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    body = {"type": "http.request", "body": b"{}", "more_body": False}
    assert await count(app, [body]) == {("unmatched", "POST", "200"): 1}


async def test_a_client_that_left_before_any_answer_is_not_a_server_failure() -> None:
    # The client hung up (or the connection guard answered 408 to a body that never came):
    # the app saw the disconnect and answered nothing.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    partial = {"type": "http.request", "body": b'{"prompt": "', "more_body": True}
    assert await count(app, [partial]) == {("unmatched", "POST", "4xx"): 1}


async def test_an_app_that_fails_without_answering_is_a_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("boom")

    body = {"type": "http.request", "body": b"{}", "more_body": False}
    assert await count(app, [body], fails=True) == {("unmatched", "POST", "500"): 1}


async def test_a_request_answered_before_routing_counts_under_its_route() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    partial = {"type": "http.request", "body": b'{"prompt": "', "more_body": True}
    counted = await count(app, [partial], paths=("/v1/route", "/v1/models/{model_id}"))
    assert counted == {("/v1/route", "POST", "4xx"): 1}


def test_every_outcome_failover_records_is_counted_under_its_own_name() -> None:
    # A try not sent for a budget or a tokens-per-minute window was counted as "other".
    from switchpoint.gateway import failover
    from switchpoint.server.metrics import _outcome

    for outcome in ("ok", failover.CLIENT_CLOSED, *failover.SKIPPED, "read_timeout"):
        assert _outcome(outcome) == outcome
    assert {"budget_exceeded", "rate_limit_exceeded"} <= failover.SKIPPED
    assert _outcome("made_up") == "other"


def test_model_labels_remember_replaced_catalogs_up_to_a_bound() -> None:
    from switchpoint.server.metrics import MAX_MODEL_LABELS

    live = {"now-a", "now-b"}
    metrics = Metrics(models=lambda: live)
    metrics.saw_catalog([f"old-{i}" for i in range(MAX_MODEL_LABELS)])
    metrics.saw_catalog(["now-a", "now-b"])  # a reload: the newest catalog
    assert metrics._model("now-a") == "now-a"
    assert metrics._model(f"old-{MAX_MODEL_LABELS - 1}") == f"old-{MAX_MODEL_LABELS - 1}"
    assert metrics._model("old-0") == OTHER_MODEL and metrics._model("old-1") == OTHER_MODEL
    assert len(metrics._served) == MAX_MODEL_LABELS
    assert metrics._model("made-up") == OTHER_MODEL



def test_a_models_cost_total_is_given_to_the_places_dollars_are_kept_to() -> None:
    # A cheap model's answers cost less than a nano-dollar each: given to 9 places, the
    # total read 0.000000000 while it was spent, and 0.5000000004 read 0.500000000.
    metrics = Metrics(models=lambda: {"cheap", "dear"})
    for model, cost in (("cheap", 3e-10), ("cheap", 1e-10), ("dear", 0.5), ("dear", 4e-10)):
        metrics.on_request(RequestRecord(
            id="r", ts=0.0, requested_model="auto", status="ok", http_status=200,
            pin_state="none", stream=False, latency_ms=1.0, model=model, prompt_tokens=1,
            cost_usd=cost))
    lines = set(metrics.render(ready=True).splitlines())
    assert 'switchpoint_chat_cost_usd_total{model="cheap"} 0.0000000004' in lines
    assert 'switchpoint_chat_cost_usd_total{model="dear"} 0.5000000004' in lines


def test_models_named_other_and_none_keep_series_apart_from_the_sentinels() -> None:
    # A catalog model named "other" was credited with the tokens and cost of models outside the
    # catalog, and one named "none" with the requests no model answered.
    metrics = Metrics(models=lambda: {"other", "none"})

    def record(model: str | None, tokens: int, cost: float | None) -> RequestRecord:
        return RequestRecord(id="r", ts=0.0, requested_model="auto", status="ok" if model else
                             "refused", http_status=200 if model else 403, pin_state="none",
                             stream=False, latency_ms=1.0, model=model,
                             prompt_tokens=tokens if model else None,
                             cost_usd=cost if model else None)

    metrics.on_request(record("other", 10, 0.5))
    metrics.on_request(record("none", 20, 0.25))
    metrics.on_request(record("gone", 1000, 9.0))  # a model outside the names a label takes
    metrics.on_request(record(None, 0, None))
    lines = set(metrics.render(ready=True).splitlines())
    assert 'switchpoint_chat_tokens_total{model="other",kind="prompt"} 10' in lines
    assert 'switchpoint_chat_tokens_total{model="none",kind="prompt"} 20' in lines
    assert f'switchpoint_chat_tokens_total{{model="{OTHER_MODEL}",kind="prompt"}} 1000' in lines
    assert 'switchpoint_chat_requests_total{model="none",status="ok"} 1' in lines
    assert f'switchpoint_chat_requests_total{{model="{NO_MODEL}",status="refused"}} 1' in lines
    assert 'switchpoint_chat_cost_usd_total{model="other"} 0.5' in lines
    assert f'switchpoint_chat_cost_usd_total{{model="{OTHER_MODEL}"}} 9' in lines
    for sentinel in (OTHER_MODEL, NO_MODEL):  # no catalog model can take a sentinel's name
        assert model_name_problem(sentinel) is not None
