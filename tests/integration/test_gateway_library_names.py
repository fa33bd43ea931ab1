"""The in-process gateway's health, quality and analytics methods: ``get_provider_health``,
``record_provider_event``, ``record_sla_quality``, ``get_analytics`` and ``Router.explain``,
over a real gateway (SQLite logs in ``tmp_path``) whose models are served by the fake provider.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.catalog import TIERS
from switchpoint.errors import (
    GatewayClosedError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    UnknownModelError,
)
from switchpoint.gateway import Gateway
from switchpoint.router import Router
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt, poem_prompt
from tests.integration.learning_env import KEYS, learning_server, loader, settings_for

# A model routed by its tier (no learned profile), so the tiers of the chosen models are
# not all unknown.
QUICK = ('  - {name: quick, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 0.5, '
         'output_per_mtok: 0.5, tier: simple}\n')


@pytest.fixture
def gateway(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(settings_for(fake, tmp_path, more_models=QUICK), loader=loader,
                 env=KEYS) as gw:
        gw.start()
        yield gw


def _without_ages(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` without its errors' ``age_s``, which grows between two reads."""
    return {**entry, "recent_errors": [{k: v for k, v in e.items() if k != "age_s"}
                                       for e in entry["recent_errors"]]}


def test_provider_health_is_the_http_answer_for_one_model(fake: FakeProviderProcess,
                                                          tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        gateway = server.service.gateway
        gateway.record_provider_event("strong", "success", latency_ms=240.0)
        gateway.record_provider_event("strong", event="error", details="rate_limited")
        gateway.record_provider_event("strong", "timeout")
        health = gateway.get_provider_health("strong")
        http = httpx.get(f"{server.base}/v1/router/health", timeout=15).json()
        assert _without_ages(health) == _without_ages(
            {"model": "strong", **http["models"]["strong"],
             "avg_latency_ms": http["models"]["strong"]["latency_ewma_ms"]})
        assert (health["status"], health["successes"], health["failures"]) == (
            "healthy", 1, 2)
        assert health["avg_latency_ms"] == 240.0
        assert [(e["kind"], e["detail"]) for e in health["recent_errors"]] == [
            ("timeout", ""), ("error", "rate_limited")]
        assert health["last_seen"] == health["recent_errors"][0]["at"]
        gateway.record_provider_event("strong", "error",
                                      details="401: Authorization: Bearer sk-secret1234567890")
        shown = gateway.get_provider_health("strong")["recent_errors"][0]["detail"]
        assert "sk-secret" not in shown and "[REDACTED]" in shown
        assert health["last_seen"] >= health["last_success_at"]
        never = gateway.get_provider_health("cheap")  # in the catalog, never called
        assert (never["status"], never["success_rate"], never["last_seen"]) == (
            "healthy", None, None)
        with pytest.raises(UnknownModelError) as unknown:
            gateway.get_provider_health("nope")
        assert unknown.value.field == "model" and "strong" in str(unknown.value)


def test_reported_failures_route_auto_around_the_model(gateway: Gateway) -> None:
    prompt = math_prompt(3)
    assert gateway.route(prompt).selected_model == "strong"
    for _ in range(5):  # failure_threshold in a row opens its circuit
        gateway.record_provider_event("strong", "timeout", details="no answer in 30 s")
    health = gateway.get_provider_health("strong")
    assert (health["status"], health["circuit"]) == ("down", "open")
    reply = gateway.complete([{"role": "user", "content": prompt}])
    answered = reply.switchpoint.model
    assert answered is not None and answered != "strong"
    assert gateway.get_provider_health(answered)["successes"] == 1
    # A success reported for it closes the circuit again, as the gateway's own would.
    gateway.record_provider_event("strong", "success")
    health = gateway.get_provider_health("strong")
    assert (health["circuit"], health["latency_ewma_ms"]) == ("closed", None)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"model": "nope", "event": "success"}, "model"),
    ({"model": 3, "event": "success"}, "model"),
    ({"model": "strong", "event": "crash"}, "event"),
    ({"model": "strong", "event": None}, "event"),
    ({"model": "strong", "event": "success", "latency_ms": -1.0}, "latency_ms"),
    ({"model": "strong", "event": "success", "latency_ms": math.nan}, "latency_ms"),
    ({"model": "strong", "event": "success", "latency_ms": math.inf}, "latency_ms"),
    ({"model": "strong", "event": "success", "latency_ms": 1e12}, "latency_ms"),
    ({"model": "strong", "event": "success", "latency_ms": "12"}, "latency_ms"),
    ({"model": "strong", "event": "success", "latency_ms": True}, "latency_ms"),
    ({"model": "strong", "event": "error", "latency_ms": 12.0}, "latency_ms"),
    ({"model": "strong", "event": "error", "details": "x" * 301}, "details"),
    ({"model": "strong", "event": "error", "details": 404}, "details"),
    ({"model": "strong", "event": "success", "details": "fine"}, "details"),
])
def test_a_bad_provider_event_is_refused_naming_it_and_records_nothing(
        gateway: Gateway, kwargs: dict[str, Any], field: str) -> None:
    before = gateway.health_snapshot()["models"]
    with pytest.raises(InvalidInputError) as bad:
        gateway.record_provider_event(**kwargs)
    assert bad.value.field == field
    assert len(str(bad.value)) < 600
    assert gateway.health_snapshot()["models"] == before


def test_a_provider_event_refused_quotes_the_events_it_takes(gateway: Gateway) -> None:
    with pytest.raises(InvalidInputError) as bad:
        gateway.record_provider_event("strong", "crash")
    assert str(bad.value) == 'event: must be one of "success", "error" or "timeout", got "crash"'
    with pytest.raises(InvalidInputError) as bad:
        gateway.record_provider_event("strong", "success", details="fine")
    assert str(bad.value).endswith('leave it out when event is "success"')


def test_a_closed_gateway_refuses_to_read_or_change_its_models_health(
        gateway: Gateway) -> None:
    """Once closed, a gateway refuses its health calls as it refuses every other call, saying
    it is closed: a reported event and a reset changed its health (a reset closing circuits
    the gateway, started again, would then route to), and a read answered as if it served."""
    gateway.record_provider_event("strong", "error", details="rate_limited")
    gateway.close()
    calls: list[Callable[[], object]] = [
        lambda: gateway.record_provider_event("strong", "success", latency_ms=10.0),
        lambda: gateway.record_provider_event("strong", "timeout"),
        gateway.reset_health, gateway.health_snapshot,
        lambda: gateway.get_provider_health("strong")]
    for call in calls:
        with pytest.raises(GatewayClosedError, match="the gateway is closed"):
            call()
    gateway.start()  # (open again: what it knew is as it was)
    health = gateway.get_provider_health("strong")
    assert (health["successes"], health["failures"], health["latency_ewma_ms"]) == (
        0, 1, None)
    assert [e["detail"] for e in health["recent_errors"]] == ["rate_limited"]


def test_an_sla_quality_score_is_an_outcome_of_its_decision(gateway: Gateway) -> None:
    reply = gateway.complete([{"role": "user", "content": math_prompt(5)}])
    info = reply.switchpoint
    assert info.model is not None
    with pytest.raises(InvalidInputError) as bad:
        gateway.record_sla_quality(info.model, 0.85)
    assert bad.value.field == "decision_id" and "decision.decision_id" in str(bad.value)
    scores: list[Any] = [1.5, -0.1, math.nan, None, "0.5"]
    for score in scores:
        with pytest.raises(InvalidInputError) as bad:
            gateway.record_sla_quality(info.model, score, decision_id=info.decision_id)
        assert bad.value.field == "score"
    with pytest.raises(InvalidInputError) as bad:
        gateway.record_sla_quality("nope", 0.85, decision_id=info.decision_id)
    assert bad.value.field == "model"
    assert gateway.learning_status()["tenants"].get("default", {}).get("feedback", {}) == {}
    assert gateway.router.learner.n_outcomes("default") == 0

    result = gateway.record_sla_quality(info.model, 0.85, decision_id=info.decision_id)
    assert (result.kind, result.teaches_routing) == ("decision", True)
    assert (result.outcome.model, result.outcome.quality) == (info.model, 0.85)
    assert gateway.router.learner.n_outcomes("default") == 1
    assert gateway.learning_status()["tenants"]["default"]["feedback"] == {
        info.model: {"n": 1, "mean_quality": 0.85}}


def test_analytics_are_the_stats_feedback_and_savings_figures(gateway: Gateway) -> None:
    empty = gateway.get_analytics()
    assert empty == {"total_routed": 0, "tier_distribution": {}, "avg_quality": None,
                     "model_usage": {}, "cost_savings": 0.0, "tenant": None}
    replies = [gateway.complete([{"role": "user", "content": p}])
               for p in (math_prompt(1), math_prompt(2), poem_prompt(1), poem_prompt(2))]
    gateway.route(poem_prompt(3), available_models=["quick", "cheap"], cost_weight=5.0)
    for reply, score in zip(replies[:2], (1.0, 0.5), strict=True):
        gateway.report_outcome(reply.switchpoint.decision_id, score)
    analytics = gateway.get_analytics()
    stats = gateway.stats()
    assert analytics["total_routed"] == stats["total"] == 5
    assert analytics["model_usage"] == stats["by_model"]
    assert sum(analytics["model_usage"].values()) == 5
    catalog = gateway.router.catalog
    assert analytics["tier_distribution"] == _by_tier(analytics["model_usage"], catalog)
    assert set(analytics["tier_distribution"]) <= {*TIERS, "none"}
    assert analytics["model_usage"]["quick"] == analytics["tier_distribution"]["simple"] >= 1
    assert analytics["avg_quality"] == 0.75
    savings = gateway.savings_estimate()
    assert analytics["cost_savings"] == savings["savings_usd"]
    assert savings["requests"] == 4 and analytics["cost_savings"] >= 0
    # One tenant's alone: the default tenant here is every request.
    assert gateway.get_analytics(tenant="default") == {**analytics, "tenant": "default"}
    with pytest.raises(NotFoundError) as unknown:
        gateway.get_analytics(tenant="nobody")
    assert '"nobody"' in str(unknown.value) and 'known: "default"' in str(unknown.value)


def _by_tier(usage: dict[str, int], catalog: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for model, n in usage.items():
        tier = catalog[model].tier or "none"
        out[tier] = out.get(tier, 0) + n
    return out


def test_stats_over_http_are_the_gateways(fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        gateway = server.service.gateway
        gateway.complete([{"role": "user", "content": math_prompt(7)}])
        http = httpx.get(f"{server.base}/v1/router/stats", timeout=15).json()
        assert http == gateway.stats()
        assert http["total"] == 1 and http["requests"]["ok"] == 1


def test_a_gateway_without_a_log_has_no_analytics(fake: FakeProviderProcess,
                                                  tmp_path: Path) -> None:
    with Gateway(settings_for(fake, tmp_path), loader=loader, env=KEYS, store=False) as gw:
        gw.start()
        with pytest.raises(StoreError, match="keeps no request or decision log") as none:
            gw.get_analytics()
        assert "store=False" in str(none.value)


def test_router_explain_is_the_decisions_own(gateway: Gateway) -> None:
    decision = gateway.route(math_prompt(9))
    text = Router.explain(decision)
    assert text == gateway.router.explain(decision) == decision.explain()
    assert text.startswith(f"Model selected: {decision.selected_model}")
    with pytest.raises(InvalidInputError) as bad:
        gateway.router.explain("strong")  # type: ignore[arg-type]
    assert bad.value.field == "decision"
