"""The governor's routing rules (budget curve, SLA breaches and adjustments, confidence-gated
escalation, constraints) and its admission (worst case, trimming, output cap), on a scripted
router."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from switchpoint.catalog import Catalog, ModelCard
from switchpoint.config import Settings, load_settings
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    BudgetExceededError,
    InvalidInputError,
    NoCapableModelError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitExceededError,
)
from switchpoint.gateway.parsing import IMAGE_PART_TYPES
from switchpoint.governance.budgets import parse_budgets, period_start
from switchpoint.governance.governor import (
    BASE_PROMPT_TOKENS,
    TOKENS_PER_MESSAGE,
    Governor,
    prompt_bound,
    worst_cost,
)
from switchpoint.governance.ledger import TOTAL, tenant_account

pytestmark = pytest.mark.anyio

# expected error, expected cost (USD) per model; the scale is the dearest model's cost.
ERRORS = {"big": 0.10, "mid": 0.25, "small": 0.45}
COSTS = {"big": 0.010, "mid": 0.002, "small": 0.0002}
CARDS = [ModelCard("big", provider="openai", input_per_mtok=10, output_per_mtok=30,
                   tier="expert", capabilities=("tools",), context_window=100_000),
         ModelCard("mid", provider="anthropic", input_per_mtok=2, output_per_mtok=6,
                   tier="complex", capabilities=("tools",)),
         ModelCard("small", provider="openai", input_per_mtok=0.2, output_per_mtok=0.6,
                   tier="simple")]
CATALOG = Catalog(CARDS)


def scripted(confidence: float = 0.9) -> tuple[Any, list[tuple[list[str], float]]]:
    calls: list[tuple[list[str], float]] = []

    async def route(text: str, allowed: list[str], lam: float | None) -> RoutingDecision:
        lam = 0.5 if lam is None else lam
        calls.append((list(allowed), lam))
        scale = max(COSTS[m] for m in allowed)
        scores = {m: round(ERRORS[m] + lam * COSTS[m] / scale, 6) for m in allowed}
        best = min(scores, key=lambda m: scores[m])
        return RoutingDecision(best, ERRORS[best], scores[best],
                               dict(sorted(scores.items(), key=lambda kv: kv[1])), 0,
                               reasoning=["scripted"], cost_weight=lam, confidence=confidence,
                               expected_cost=COSTS[best],
                               expected_errors={m: ERRORS[m] for m in allowed},
                               expected_costs={m: COSTS[m] for m in allowed})
    return route, calls


def settings(tmp_path: Path, **extra: Any) -> Settings:
    models = [{"name": c.name, "provider": c.provider, "input_per_mtok": c.input_per_mtok,
               "output_per_mtok": c.output_per_mtok, "tier": c.tier,
               "capabilities": list(c.capabilities), "context_window": c.context_window}
              for c in CARDS]
    return load_settings(overrides={"models": models, "data_dir": str(tmp_path), **extra},
                         environ={})


async def route_with(gov: Governor, s: Settings, tenant: str | None = "acme",
                     confidence: float = 0.9, cost_weight: float | None = None
                     ) -> tuple[RoutingDecision, list[tuple[list[str], float]]]:
    route, calls = scripted(confidence)
    policy = gov.policy(s, tenant, None)
    decision = await gov.route(route, "text", list(CATALOG.names), cost_weight,
                               policy=policy, catalog=CATALOG,
                               default_cost_weight=s.cost_weight)
    return decision, calls


async def test_nothing_configured_changes_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert not Governor.governs(s)
    d, calls = await route_with(Governor(s), s, tenant=None)
    assert d.selected_model == "mid" and len(calls) == 1
    assert d.sla_compliant and not d.sla_breaches and not d.escalated
    assert d.budget_pressure is None and d.governed is None


async def test_lambda_rises_along_the_curve_as_the_budget_fills(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"budgets": ["1/day"],
                                             "budget_curve": [[0.5, 0], [0.9, 4]]}})
    gov = Governor(s)
    d, _ = await route_with(gov, s)
    assert d.budget_pressure is None and d.cost_weight == 0.5
    gov.ledger._charge(tenant_account("acme"), 0.8, gov.clock())
    d, calls = await route_with(gov, s)
    assert calls[0][1] == pytest.approx(3.0)  # 0.8 used: 4 × (0.8 - 0.5) / 0.4
    assert d.selected_model == "small"
    assert d.budget_pressure == {"fraction_used": 0.8, "budget": "tenant acme $1/day",
                                 "base_cost_weight": 0.5, "cost_weight": 3.0}
    assert any("λ raised from 0.5 to 3" in r for r in d.reasoning)
    assert "Budget: tenant acme $1/day is 80% used" in d.explain()
    d, calls = await route_with(gov, s, cost_weight=6.0)  # a larger caller λ is kept
    assert calls[0][1] == 6.0 and d.budget_pressure is None


async def test_a_shared_budget_raises_lambda_without_telling_what_others_spent(
        tmp_path: Path) -> None:
    # The pressure note of the gateway's budget said "the gateway $10/day is 80% used" to
    # every caller: what all the others had spent, which a refusal by it never says.
    s = settings(tmp_path, tenants={"acme": {"budgets": ["1/day"],
                                             "budget_curve": [[0.5, 0], [0.9, 4]]}},
                 budgets={"total": ["10/day"]})
    gov = Governor(s)
    gov.ledger._charge("all", 8.0, gov.clock())  # other callers spent $8 of the gateway's $10
    d, calls = await route_with(gov, s)
    assert calls[0][1] == pytest.approx(3.0)  # the curve still applies
    assert d.budget_pressure == {"fraction_used": None, "budget": "the gateway $10/day",
                                 "base_cost_weight": 0.5, "cost_weight": 3.0}
    shown = " ".join(d.reasoning) + d.explain()
    assert "80%" not in shown and "0.8" not in shown, shown
    assert "the gateway $10/day, shared with other callers, is filling" in shown
    # The caller's own budget says how full it is.
    gov.ledger._charge(tenant_account("acme"), 0.9, gov.clock())
    d, _ = await route_with(gov, s)
    assert d.budget_pressure is not None and d.budget_pressure["fraction_used"] == 0.9


async def test_quality_sla_breach_reroutes_among_good_enough_models(tmp_path: Path) -> None:
    s = settings(tmp_path, sla={"min_quality_score": 0.8}, cost_weight=5.0)
    gov = Governor(s)
    d, calls = await route_with(gov, s, tenant=None)
    assert calls[0][0] == ["big", "mid", "small"] and calls[1][0] == ["big"]
    assert d.selected_model == "big" and d.original_model == "small"
    assert d.sla_breaches == ["quality_below_minimum"]
    assert d.sla_adjustments == ["routed_to_higher_quality_model_due_to_quality_sla"]
    assert d.sla_compliant
    assert "SLA: compliant; breaches: quality_below_minimum" in d.explain()


async def test_breach_without_auto_escalation_stands(tmp_path: Path) -> None:
    s = settings(tmp_path, cost_weight=5.0, sla={"min_quality_score": 0.8,
                                                 "auto_escalate_on_breach": False})
    d, calls = await route_with(Governor(s), s, tenant=None)
    assert len(calls) == 1 and d.selected_model == "small"
    assert d.sla_breaches == ["quality_below_minimum"] and not d.sla_adjustments
    assert not d.sla_compliant


async def test_hourly_budget_sla_routes_cheaper(tmp_path: Path) -> None:
    s = settings(tmp_path, sla={"budget_per_hour_usd": 1.0}, cost_weight=0.0)
    gov = Governor(s)
    d, _ = await route_with(gov, s, tenant=None)
    assert d.selected_model == "big" and d.sla_compliant
    gov.ledger._charge(TOTAL, 0.999, gov.clock())
    d, calls = await route_with(gov, s, tenant=None)
    assert calls[1][1] == 10.0
    assert d.sla_breaches == ["budget_exceeded"]
    assert d.sla_adjustments == ["routed_to_cheaper_model_due_to_budget_sla"]
    assert d.selected_model == "small" and d.original_model == "big"
    assert d.sla_compliant  # 0.999 + small's 0.0002 fits the hour's 1.0
    gov.ledger._charge(TOTAL, 0.5, gov.clock())
    d, _ = await route_with(gov, s, tenant=None)
    assert d.selected_model == "small" and not d.sla_compliant  # over, whatever is chosen


async def test_latency_sla_uses_recent_latency(tmp_path: Path) -> None:
    class Health:
        def latency_ms(self, model: str) -> float | None:
            return {"mid": 900.0, "big": 100.0}.get(model)

    s = settings(tmp_path, sla={"max_latency_ms": 500})
    gov = Governor(s, health=Health)
    d, calls = await route_with(gov, s, tenant=None)
    assert d.sla_breaches == ["latency_exceeded"]
    assert sorted(calls[1][0]) == ["big", "small"]  # small has no latency yet: kept
    assert d.selected_model != "mid" and d.sla_compliant


@pytest.mark.parametrize(("strategy", "model", "escalated"),
                         [("always", "big", True), ("ask", "mid", True),
                          ("log_only", "mid", False)])
async def test_confidence_gated_escalation(tmp_path: Path, strategy: str, model: str,
                                           escalated: bool) -> None:
    s = settings(tmp_path, escalation={"low_confidence_threshold": 0.6,
                                       "escalation_model": "big", "strategy": strategy})
    d, _ = await route_with(Governor(s), s, tenant=None, confidence=0.4)
    assert d.selected_model == model and d.escalated is escalated
    assert d.original_confidence == 0.4
    assert d.escalation_reason.startswith("Low confidence 0.40 below threshold 0.60. "
                                          "Original model: mid")
    assert d.escalation_changed_model is (strategy == "always")
    if strategy == "always":
        assert d.expected_error == ERRORS["big"] and d.fallback_models == ["mid", "small"]
        assert "[Escalated from original confidence 40%" in d.explain()
    d, _ = await route_with(Governor(s), s, tenant=None, confidence=0.7)
    assert d.selected_model == "mid" and not d.escalated and not d.escalation_reason


async def test_escalation_defaults_to_the_strongest_allowed_model(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"models": ["mid", "small", "auto"]}},
                 escalation={"low_confidence_threshold": 0.6})
    gov = Governor(s)
    route, _ = scripted(0.3)
    policy = gov.policy(s, "acme", None)
    allowed = gov.narrow(policy, CATALOG, None)
    assert allowed == ["mid", "small"]
    d = await gov.route(route, "t", allowed, 5.0, policy=policy, catalog=CATALOG,
                        default_cost_weight=0.5)
    assert d.selected_model == "mid" and d.original_model == "small" and d.escalated


async def test_constraints_narrow_auto(tmp_path: Path) -> None:
    s = settings(tmp_path, escalation={"min_tier": "complex"})
    d, calls = await route_with(Governor(s), s, tenant=None)
    assert calls[0][0] == ["big", "mid"]
    s = settings(tmp_path, escalation={"prefer_provider": "anthropic"})
    d, calls = await route_with(Governor(s), s, tenant=None)
    assert calls[0][0] == ["mid"] and any("Preferred provider" in r for r in d.reasoning)
    s = settings(tmp_path, escalation={"capability": "vision"})
    with pytest.raises(NoCapableModelError, match='capability "vision"'):
        await route_with(Governor(s), s, tenant=None)


def test_permissions(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"models": ["mid", "small"]},
                                    "beta": {"models": ["auto"]}})
    gov = Governor(s)
    acme = gov.policy(s, "acme", None)
    gov.check_model(acme, "mid", CATALOG)
    with pytest.raises(PermissionDeniedError, match='may not use "big"'):
        gov.check_model(acme, "big", CATALOG)
    with pytest.raises(PermissionDeniedError, match='may not use "auto"'):
        gov.check_model(acme, "auto", CATALOG)
    beta = gov.policy(s, "beta", None)
    gov.check_model(beta, "auto", CATALOG)
    assert gov.narrow(beta, CATALOG, None) is None  # only 'auto': the whole catalog
    with pytest.raises(NotFoundError, match='tenant: "gamma" is not in the config'):
        gov.principal(s, tenant="gamma")


def test_prompt_bound_counts_bytes_images_and_tools() -> None:
    body = {"messages": [{"role": "user", "content": "héllo"},  # 6 bytes
                         {"role": "user", "content": [
                             {"type": "text", "text": "abc"},
                             {"type": "image_url", "image_url": {"url": "data:..."}}]}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    tools = len('[{"type": "function", "function": {"name": "f"}}]')
    assert prompt_bound(body, 100) == BASE_PROMPT_TOKENS + 2 * TOKENS_PER_MESSAGE + 6 + 3 \
        + 100 + tools
    assert worst_cost(CARDS[0], 10**6, 10**6) == pytest.approx((100_000 * 10 + 100_000 * 30)
                                                               / 1e6)


def test_prompt_bound_counts_as_images_only_the_image_parts_the_request_check_takes() -> None:
    # Only image_url parts reach a model (the request check refuses an "image" or an
    # "input_image" part); a part of another type counts its bytes, an image image_tokens.
    for kind in ("image", "input_image", "image_url"):
        part = {"type": kind, kind: {"url": "https://x.test/a.png"}}
        body = {"messages": [{"role": "user", "content": [part]}]}
        counted = (100 if kind in IMAGE_PART_TYPES
                   else len(json.dumps(part).encode()))
        assert prompt_bound(body, 100) == BASE_PROMPT_TOKENS + TOKENS_PER_MESSAGE + counted
    assert {"image_url"} == IMAGE_PART_TYPES


def admit(gov: Governor, s: Settings, tenant: str | None, body: dict[str, Any],
          cards: list[ModelCard] | None = None, require_first: bool = False
          ) -> tuple[Any, list[str], list[str]]:
    notes: list[str] = []
    policy = gov.policy(s, tenant, None)
    ticket, kept = gov.admit(s, policy, list(cards or CARDS), body, key_id=None,
                             tenant=tenant, notes=notes, require_first=require_first)
    return ticket, [c.name for c in kept], notes


def test_admission_sets_an_output_cap_and_reserves_the_worst_case(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    ticket, kept, notes = admit(gov, s, "acme", body)
    assert body["max_tokens"] == 4096 and "max_tokens set to 4096" in notes[0]
    prompt = BASE_PROMPT_TOKENS + TOKENS_PER_MESSAGE + 2
    assert ticket.worst_by_model["big"] == pytest.approx((prompt * 10 + 4096 * 30) / 1e6)
    assert ticket.holds == {"tenant:acme": ticket.worst_by_model["big"]}
    assert kept == ["big", "mid", "small"] and ticket.tokens == prompt + 4096


def test_a_request_for_several_answers_holds_the_output_cap_for_each(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    gov = Governor(s)
    prompt = BASE_PROMPT_TOKENS + TOKENS_PER_MESSAGE + 2
    for n, answers in ((100, 100), (1, 1), (0, 1), (True, 1), (2.5, 1)):
        body: dict[str, Any] = {"model": "auto", "n": n, "max_tokens": 1000,
                                "messages": [{"role": "user", "content": "hi"}]}
        ticket, _, _ = admit(gov, s, "acme", body)
        assert ticket.worst_by_model["big"] == pytest.approx(
            (prompt * 10 + 1000 * answers * 30) / 1e6), n  # the prompt is billed once
        assert ticket.tokens == prompt + 1000 * answers
        _ended(gov, ticket, request_id=f"r{n}")


def test_a_budget_never_holds_an_unpriced_model_as_free(tmp_path: Path) -> None:
    # Its worst case was held as $0, so a budgeted request could reach it (as a fallback,
    # or named) and spend without limit.
    from switchpoint.errors import PermissionDeniedError

    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    gov = Governor(s)
    gratis = ModelCard("gratis", provider="openai")
    body: dict[str, Any] = {"model": "auto", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    ticket, kept, notes = admit(gov, s, "acme", dict(body), cards=[CARDS[2], gratis])
    assert kept == ["small"] and "gratis" not in ticket.worst_by_model
    assert any("No prices" in n and "gratis" in n for n in notes), notes
    _ended(gov, ticket, request_id="r1")
    with pytest.raises(PermissionDeniedError, match='"gratis" has no prices'):
        admit(gov, s, "acme", dict(body), cards=[gratis, CARDS[2]], require_first=True)
    # Where no budget watches the request, it is served (its cost is only unknown).
    ticket, kept, _ = admit(gov, s, None, dict(body), cards=[gratis, CARDS[2]],
                            require_first=True)
    assert kept == ["gratis", "small"]


def test_candidates_that_cannot_fit_are_dropped_not_the_request(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"budgets": ["0.01/day"]}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "auto", "max_tokens": 1000,
                            "messages": [{"role": "user", "content": "hi"}]}
    ticket, kept, notes = admit(gov, s, "acme", body)  # big's worst case is 0.03
    assert kept == ["mid", "small"] and notes[0].startswith("Budget: big (worst case")
    assert ticket.holds["tenant:acme"] == ticket.worst_by_model["mid"]
    with pytest.raises(BudgetExceededError) as info:  # a named model is not swapped
        admit(gov, s, "acme", dict(body), require_first=True)
    assert info.value.code == "budget_exceeded" and info.value.status == 429
    assert "tenant acme" in info.value.budget


def test_model_and_provider_budgets(tmp_path: Path) -> None:
    s = settings(tmp_path, budgets={"models": {"mid": "0.001/day"},
                                    "providers": {"openai": "1/day"}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "auto", "max_tokens": 1000,
                            "messages": [{"role": "user", "content": "hi"}]}
    ticket, kept, notes = admit(gov, s, None, body)
    assert kept == ["big", "small"] and notes[0].startswith("Budget: mid (worst case")
    assert set(ticket.holds) == {"provider:openai"}
    assert ticket.holds["provider:openai"] == ticket.worst_by_model["big"]


def test_a_reservation_reaches_disk_after_half_a_second_whatever_the_wall_clock_did(
        tmp_path: Path) -> None:
    """How long a request has run is read from the monotonic clock: with the wall clock
    stepped back an hour, a request running for half a second has its reservation written
    (it was kept off disk for the hour, so a crash meanwhile charged it nothing); stepped
    forward, one just begun is not written yet."""
    from switchpoint.store import SQLiteStore

    wall, tick = [1_800_001_800.0], [100.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    store = SQLiteStore(s.db_path).open()
    try:
        gov = Governor(s, store=store, clock=lambda: wall[0], monotonic=lambda: tick[0])
        body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]}
        slow, _, _ = admit(gov, s, "acme", dict(body))
        wall[0] -= 3600
        tick[0] += 0.6
        gov.flush()
        assert slow.persisted
        wall[0] += 7200
        fresh, _, _ = admit(gov, s, "acme", dict(body))
        gov.flush()
        assert not fresh.persisted
    finally:
        store.close()


def test_rate_limits_refuse_with_retry_after(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"rpm": 1}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    admit(gov, s, "acme", dict(body))
    with pytest.raises(RateLimitExceededError) as info:
        admit(gov, s, "acme", dict(body))
    assert info.value.code == "rate_limit_exceeded" and 59 <= (info.value.retry_after or 0) <= 60
    with pytest.raises(RateLimitExceededError):
        gov.precheck(gov.policy(s, "acme", None))


def test_only_long_running_reservations_reach_disk(tmp_path: Path) -> None:
    """A request that ends within half a second writes one row, its settlement; one still
    running after that has its reservation written, so a crash leaves it holding until its
    deadline."""
    from switchpoint.governance.ledger import load_state
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    store = SQLiteStore(s.db_path).open()
    gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
    body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    quick, _, _ = admit(gov, s, "acme", dict(body))
    slow, _, _ = admit(gov, s, "acme", dict(body))
    rows, charged = gov.settle(quick, request_id="q", card=CARDS[2], cost_usd=1e-6, tokens=5)
    assert [r.kind for r in rows] == ["settle"] and charged == 1e-6
    for row in rows:
        store.append(row)
    now[0] += 0.6
    gov.flush()
    assert slow.persisted and not quick.persisted
    store.close()  # a crash: the slow request never settles
    spent, live, stale = load_state(s.db_path, now[0])
    assert spent["tenant:acme"]["day"] == {period_start("day", now[0]): pytest.approx(1e-6)}
    assert [r[0] for r in live] == [slow.id] and not stale
    assert live[0][3] == {"tenant:acme": slow.worst_usd}
    spent, live, stale = load_state(s.db_path, slow.expires_at + 1)
    assert not live and [r[0] for r in stale] == [slow.id]


def test_a_tpm_limit_alone_caps_the_output_too(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"tpm": 10_000}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    ticket, _, notes = admit(gov, s, "acme", body)
    assert body["max_tokens"] == 4096 and "a tokens-per-minute limit applies" in notes[0]
    assert ticket.tokens == BASE_PROMPT_TOKENS + TOKENS_PER_MESSAGE + 2 + 4096
    rpm_only = settings(tmp_path, tenants={"acme": {"rpm": 5}})
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    admit(Governor(rpm_only), rpm_only, "acme", body)
    assert "max_tokens" not in body  # no budget, no TPM: nothing to bound


def test_a_refusal_that_waiting_cannot_fix_tells_clients_not_to_retry() -> None:
    from switchpoint.governance.governor import _refusal
    from switchpoint.governance.ledger import Blocked

    for kind in ("tpm", "budget"):
        never = _refusal(Blocked(kind, "key:k", "larger than the whole limit", None))
        later = _refusal(Blocked(kind, "key:k", "the window is full", 3.0))
        assert never.permanent and never.retry_after is None
        assert not later.permanent and later.retry_after == 3.0


def test_a_restart_across_midnight_leaves_yesterday_s_spend_in_yesterday(
        tmp_path: Path) -> None:
    """The ledger is read from the spend table, then restored: a start whose clock passes
    midnight between the two used to put the day's (and, on the 1st, the month's) spend into
    the new period, refusing the tenant's requests all day for money spent the day before."""
    from switchpoint.governance.ledger import LedgerRecord
    from switchpoint.store import SQLiteStore

    midnight = 1_798_761_600.0  # 2027-01-01T00:00:00Z: a new day, week... and month
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day", "100/month"]}})
    with SQLiteStore(s.db_path) as store:
        store.append(LedgerRecord(ts=midnight - 3600, reservation_id="r1", kind="settle",
                                  amount_usd=10.0, request_id="q1", tenant="acme", model="m",
                                  provider="openai")).result()
    ticks = iter([midnight - 0.05])  # the spend table is read just before midnight

    def clock() -> float:
        return next(ticks, midnight + 0.05)  # ... and everything after just past it

    store = SQLiteStore(s.db_path).open()
    try:
        gov = Governor(s, store=store, clock=clock, monotonic=clock)
        gov.open()
        assert gov.ledger.spent(tenant_account("acme"), "day") == 0.0
        assert gov.ledger.spent(tenant_account("acme"), "month") == 0.0
        body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]}
        ticket, _, _ = admit(gov, s, "acme", dict(body))  # the new day's budget is whole
        assert ticket.holds[tenant_account("acme")] > 0
    finally:
        store.close()


def test_a_request_begun_before_midnight_is_charged_in_the_day_and_month_it_began(
        tmp_path: Path) -> None:
    """A stream begun at the old year's last instant and ended after midnight is charged in
    the day and month it began (whose budgets admitted it), by the live ledger and by the
    spend row alike, which is dated when it began: it was charged to the new day, whose
    budget then paid for the old one's request, and a budget could be passed in the period
    that admitted it and in the next."""
    from switchpoint.governance.ledger import load_state
    from switchpoint.store import SQLiteStore

    midnight = 1_798_761_600.0  # 2027-01-01T00:00:00Z: a new day, week, month
    last = midnight - 0.001  # 2026-12-31T23:59:59.999Z
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day", "100/month"]}})
    store = SQLiteStore(s.db_path).open()
    try:
        now = [last]
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]}
        ticket, _, _ = admit(gov, s, "acme", dict(body))
        now[0] = midnight + 5  # it ends in the new year
        rows, charged = gov.settle(ticket, request_id="q", card=CARDS[2], cost_usd=2e-6,
                                   tokens=5)
        assert charged == 2e-6 and [(r.kind, r.ts) for r in rows] == [("settle", last)]
        for row in rows:
            store.append(row).result()
        acme = tenant_account("acme")
        for period in ("day", "month"):
            assert gov.ledger.spent(acme, period, now=last) == charged, period
            assert gov.ledger.spent(acme, period, now=midnight + 5) == 0.0, period
        # The spend table says the same as the live ledger, before midnight and after.
        for when in (last, midnight + 5):
            spent, _, _ = load_state(s.db_path, when)
            for period in ("day", "month"):
                assert sum(spent.get(acme, {}).get(period, {}).values()) == gov.ledger.spent(
                    acme, period, now=when), (when, period)
    finally:
        store.close()


def _ended(gov: Governor, ticket: Any, request_id: str,
           billed: list[ModelCard] | None = None) -> None:
    """Close ``ticket`` as a request that ended with no answer and no log entry closes it:
    its ``billed`` tries charged, the rest released, its rows written."""
    rows, _ = gov.settle(ticket, request_id=request_id, card=None, cost_usd=None, tokens=None,
                         billed=billed or [])
    gov.write_unlogged(rows)


def _closings(db_path: Path) -> dict[str, list[str]]:
    """The rows that closed each reservation of the spend table (settle, release, expire)."""
    import sqlite3

    db = sqlite3.connect(db_path)
    try:
        out: dict[str, list[str]] = {}
        for rid, kind in db.execute("SELECT reservation_id, kind FROM spend ORDER BY rowid"):
            out.setdefault(rid, [])
            if kind != "reserve":
                out[rid].append(kind)
        return out
    finally:
        db.close()


def _crashed_mid_request(tmp_path: Path, *, at: float = 1_800_001_800.0,
                         budget: str = "10/day", overran: bool = False
                         ) -> tuple[Settings, str, Any, list[float]]:
    """A gateway whose tenant ``acme`` has a daily ``budget``, killed while a request made
    ``at`` ran long enough for its reservation to reach disk (and, ``overran``, past its
    deadline, its reservation's expiry written): its settings, the tenant's account, the
    ticket and the clock (a one-item list the tests move)."""
    from switchpoint.store import SQLiteStore

    now = [at]
    s = settings(tmp_path, tenants={"acme": {"budgets": [budget]}})
    acme = tenant_account("acme")
    body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    store = SQLiteStore(s.db_path).open()
    first = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
    ticket, _, _ = admit(first, s, "acme", dict(body))
    now[0] += 1.0
    first.flush()  # the request runs long: its reservation reaches disk
    assert ticket.persisted
    if overran:
        now[0] = ticket.expires_at + 1.0
        first.flush()  # its expiry frees its hold; its request still runs
        assert first.ledger.held(acme) == 0.0 and first.ledger.spent(acme, "day") == 0.0
    store.close()  # ... and the process dies mid-request
    return s, acme, ticket, now


def test_a_reservation_left_open_by_a_crash_is_charged_once_and_the_reports_agree(
        tmp_path: Path) -> None:
    """A reservation on disk when the process died holds its budget after the restart until
    its request's deadline, then is charged what it held (its request had run, so a provider
    may have billed it), and the restarted service writes that charge; a later start charges
    nothing again, and the reports, read from the spend table, say what the live ledger
    says."""
    from switchpoint.governance.ledger import LOOKBACK_S
    from switchpoint.governance.reports import Reports
    from switchpoint.store import SQLiteStore

    s, acme, ticket, now = _crashed_mid_request(tmp_path)

    def reported() -> tuple[float, float, float]:
        """What the reports say of the tenant: held, spent this month (their ledger) and the
        spend the table's rows sum since the crash."""
        reports = Reports.from_settings(s, clock=lambda: now[0])
        return (reports.ledger.held(acme), reports.ledger.spent(acme, "month"),
                reports._recent_spend(acme, ticket.ts, now[0] + 1))

    store = SQLiteStore(s.db_path).open()
    try:
        second = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        second.open()
        assert second.ledger.held(acme) == ticket.worst_usd > 0
        assert reported() == (ticket.worst_usd, 0.0, 0.0)
        now[0] = ticket.expires_at + 1.0  # its request's deadline is past
        second.flush()
        assert second.ledger.held(acme) == 0.0
        assert second.ledger.spent(acme, "day") == ticket.worst_usd
        assert second.ledger.spent(TOTAL, "day") == ticket.worst_usd
        second.close()
    finally:
        store.close()
    assert reported() == (0.0, ticket.worst_usd, ticket.worst_usd)
    assert _closings(s.db_path) == {ticket.id: ["expire_charge"]}
    for later in (60.0, LOOKBACK_S + 3600.0):  # a later start charges nothing again
        now[0] = ticket.expires_at + later
        with SQLiteStore(s.db_path) as store:
            third = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
            third.open()
            assert third.ledger.held(acme) == 0.0
            assert third.ledger.spent(acme, "month") == ticket.worst_usd
            third.close()
        assert reported() == (0.0, ticket.worst_usd, ticket.worst_usd)
        assert _closings(s.db_path) == {ticket.id: ["expire_charge"]}


@pytest.mark.parametrize("down_days", [3.0, 40.0])
def test_a_reservation_left_open_by_a_crash_before_days_of_downtime_is_charged_once(
        tmp_path: Path, down_days: float) -> None:
    """The process died mid-request and the service stayed down longer than a restart looks
    back (LOOKBACK_S): the start still closes that reservation, charging what it held in the
    periods its request began in (the day's budget under way at the start is whole: it does
    not pay for a request of days before), with an ``expire_charge`` row dated
    then saying whose it was (key and tenant), holds nothing for it, and a later start writes
    no second one nor charges it again."""
    import sqlite3

    from switchpoint.governance.ledger import LOOKBACK_S
    from switchpoint.store import SQLiteStore

    s, acme, ticket, now = _crashed_mid_request(tmp_path)  # ... the service down for days
    now[0] = ticket.ts + down_days * 86_400
    assert now[0] - ticket.ts > LOOKBACK_S
    for start in range(2):  # the start after, then one more
        with SQLiteStore(s.db_path) as store:
            gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
            gov.open()
            assert gov.ledger.held(acme) == 0.0 and gov.ledger.open_tickets() == 0
            assert gov.ledger.spent(acme, "day") == 0.0
            if start == 0:  # (a later start reads the periods under way only)
                assert gov.ledger.spent(acme, "day", now=ticket.ts) == ticket.worst_usd
            gov.close()
        assert _closings(s.db_path) == {ticket.id: ["expire_charge"]}
        now[0] += 3600.0
    db = sqlite3.connect(s.db_path)
    try:
        rows = db.execute("SELECT kind, key_id, tenant, expires_at, amount_usd, model, ts "
                          "FROM spend WHERE reservation_id = ? ORDER BY seq", (ticket.id,)
                          ).fetchall()
    finally:
        db.close()
    # (Its request had three candidates: which one ran is not known, so no model is charged.)
    assert rows[1] == ("expire_charge", ticket.key_id, "acme", ticket.expires_at,
                       ticket.worst_usd, None, ticket.ts)
    assert rows[0][1:3] == rows[1][1:3]


@pytest.mark.parametrize(("names", "model", "provider"), [
    (["mid"], "mid", "anthropic"),  # one candidate: its model and provider known
    (["big", "small"], None, "openai"),  # two, of one provider: which model ran is not
    (["big", "mid"], None, None)])
def test_a_crash_s_reservation_charges_the_model_and_provider_its_row_names(
        tmp_path: Path, names: list[str], model: str | None, provider: str | None) -> None:
    """A reservation's row names the model its request may run on when it has one candidate,
    and the provider when its candidates share one: the charge at its expiry after a crash
    goes to their accounts too (their budgets count it), and to none of a model not known."""
    import sqlite3

    from switchpoint.governance.ledger import model_account, provider_account
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}},
                 budgets={"models": {"mid": ["10/day"], "big": ["10/day"]},
                          "providers": {"openai": ["10/day"], "anthropic": ["10/day"]}})
    cards = [c for c in CARDS if c.name in names]
    body: dict[str, Any] = {"model": names[0], "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    with SQLiteStore(s.db_path) as store:
        first = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        ticket, _, _ = admit(first, s, "acme", body, cards=cards, require_first=True)
        now[0] += 1.0
        first.flush()  # its reservation reaches disk; then the process dies
    assert (ticket.model, ticket.provider) == (model, provider)
    now[0] = ticket.expires_at + 1.0
    with SQLiteStore(s.db_path) as store:
        second = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        second.open()
        spent = {account: second.ledger.spent(account, "day") for account in (
            "tenant:acme", TOTAL, *map(model_account, ("mid", "big", "small")),
            *map(provider_account, ("openai", "anthropic")))}
        second.close()
    charged = {account for account, amount in spent.items() if amount}
    assert set(spent.values()) == {0.0, ticket.worst_usd}
    assert charged == {"tenant:acme", TOTAL, *([model_account(model)] if model else []),
                       *([provider_account(provider)] if provider else [])}
    with sqlite3.connect(s.db_path) as db:
        rows = db.execute("SELECT kind, model, provider FROM spend ORDER BY seq").fetchall()
    db.close()
    assert rows == [("reserve", model, provider), ("expire_charge", model, provider)]


def test_a_reservation_an_earlier_version_left_open_further_back_than_a_start_looks_is_expired_once(
        tmp_path: Path) -> None:
    """An earlier version wrote no expiry at a start: a reservation its process left open,
    followed by days of further runs, lies further back than a start looks (LOOKBACK_S before
    the ledger's last row) and stayed open in the table for good. Upgrading the file closes it
    with one ``expire`` row (dated at its expiry, so the window a start reads does not move),
    a release, which charges nothing; the reservations a start does see are left to it (one
    past its deadline charged what it held, though its row, an earlier version's, says no
    amount), a live one still holds, a second start writes nothing more, and the reports say
    what the live ledger says."""
    import sqlite3

    from switchpoint._files import private_file
    from switchpoint.governance.ledger import LOOKBACK_S, LedgerRecord
    from switchpoint.governance.reports import Reports
    from switchpoint.store import SQLiteStore
    from switchpoint.store.migrations import MIGRATIONS
    from switchpoint.store.sqlite import upgrade_schema

    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    acme, budget = tenant_account("acme"), parse_budgets(["10/day"])[0]
    start = 1_800_001_800.0
    last = start + 5 * 86_400  # the ledger's last row: runs went on for days after the crash
    holds = {acme: 0.5, TOTAL: 0.5}

    def reserve(rid: str, ts: float) -> LedgerRecord:
        return LedgerRecord(ts=ts, reservation_id=rid, kind="reserve", key_id="k1",
                            tenant="acme", holds=holds, expires_at=ts + 600.0)

    rows = [reserve("forgotten", start),  # left open by a crash, never expired
            reserve("released", start + 10),
            LedgerRecord(ts=start + 20, reservation_id="released", kind="release",
                         tenant="acme"),
            LedgerRecord(ts=start + 86_400, reservation_id="paid", kind="settle",
                         request_id="r1", tenant="acme", model="mid", provider="anthropic",
                         amount_usd=0.25),
            reserve("recent", last - 3600.0),  # left open by the last run: a start's to expire
            reserve("running", last)]  # its deadline not yet come when the service starts
    # The file as the earlier version left it: its schema, its rows.
    old = sqlite3.connect(private_file(s.db_path))
    try:
        upgrade_schema(old, {n: script for n, script in MIGRATIONS.items() if n <= 17})
        old.executemany(LedgerRecord.insert, [row.row() for row in rows])
        old.commit()
    finally:
        old.close()
    assert rows[0].ts < last - LOOKBACK_S <= rows[4].ts
    now = [last + 60.0]

    def table() -> list[tuple[Any, ...]]:
        db = sqlite3.connect(s.db_path)
        try:
            return db.execute("SELECT ts, reservation_id, kind, key_id, tenant, amount_usd, "
                              "expires_at FROM spend ORDER BY seq").fetchall()
        finally:
            db.close()

    for run in range(2):  # the first start after the upgrade, then one more
        with SQLiteStore(s.db_path) as store:
            gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
            gov.open()
            reports = Reports.from_settings(s, clock=lambda: now[0]).ledger
            assert gov.ledger.held(acme) == 0.5 == reports.held(acme)  # "running" still holds
            assert gov.ledger.status(acme, budget) == reports.status(acme, budget)
            # ("paid", and "recent" charged its hold; not "forgotten", released)
            assert gov.ledger.spent(acme, "month") == 0.75 == reports.spent(acme, "month")
            gov.close()
        assert _closings(s.db_path) == {"forgotten": ["expire"], "released": ["release"],
                                        "paid": ["settle"], "recent": ["expire_charge"],
                                        "running": []}, run
    expire = [row for row in table() if row[1] == "forgotten"][1]
    assert expire == (rows[0].expires_at, "forgotten", "expire", "k1", "acme", 0.0,
                      rows[0].expires_at)
    # (The start's charge of "recent" is dated when it was made: the ledger's last row is
    # still "running"'s.)
    assert [row[0] for row in table() if row[2] == "expire_charge"] == [rows[4].ts]
    assert max(row[0] for row in table()) == last


def test_a_crash_s_reservation_charged_after_midnight_counts_in_the_day_it_was_made(
        tmp_path: Path) -> None:
    """A reservation a crash left open at 23:59, charged at a start after midnight, counts in
    the day its request began, as its settlement would have: the new day's budget is whole
    (it paid for yesterday's request, refusing a request that fits), the budget alert says
    nothing spent today, and the cost report counts the charge in yesterday's window."""
    from switchpoint.governance.reports import Reports
    from switchpoint.store import SQLiteStore

    midnight = 1_800_057_600.0  # 2027-01-16T00:00:00Z
    s, acme, ticket, now = _crashed_mid_request(  # before midnight; one request a day fits
        tmp_path, at=midnight - 60.0, budget="0.0007/day")
    body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    now[0] = midnight + 3600.0  # ... and starts again an hour after it
    with SQLiteStore(s.db_path) as store:
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        gov.open()
        try:
            assert gov.ledger.spent(acme, "day") == 0.0
            assert gov.ledger.spent(acme, "day", now=ticket.ts) == ticket.worst_usd
            today, _, _ = admit(gov, s, "acme", dict(body))  # the new day's budget is whole
            assert today.holds[acme] == ticket.worst_usd
            gov.ledger.release(today)
        finally:
            gov.close()
    assert _closings(s.db_path)[ticket.id] == ["expire_charge"]
    reports = Reports.from_settings(s, clock=lambda: now[0])
    [alert] = reports.check_budget_alert("acme")["budgets"]
    assert (alert["spent_usd"], alert["held_usd"]) == (0.0, 0.0)
    yesterday = reports.cost_report("day", until=midnight)
    assert yesterday["charged_at_expiry_usd"] == pytest.approx(ticket.worst_usd)
    since_midnight = reports.cost_report("day", until=midnight + 86_400 - 1.0)
    assert since_midnight["charged_at_expiry_usd"] == 0.0


def test_a_reservation_that_expired_while_its_request_ran_is_charged_if_a_crash_cuts_it(
        tmp_path: Path) -> None:
    """A reservation whose request overran its deadline frees its hold when it expires, but
    stays open on disk until its request ends: a crash before then leaves it to the next
    start, which charges what it held (a provider may have billed the request), once (it was
    charged nothing: its expiry's row closed it for good)."""
    from switchpoint.store import SQLiteStore

    s, acme, ticket, now = _crashed_mid_request(tmp_path, overran=True)
    assert _closings(s.db_path)[ticket.id] == ["expire_running"]
    for _ in range(2):  # the start after, then one more
        with SQLiteStore(s.db_path) as store:
            gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
            gov.open()
            try:
                assert gov.ledger.spent(acme, "day") == ticket.worst_usd
                assert gov.ledger.held(acme) == 0.0
            finally:
                gov.close()
        assert _closings(s.db_path)[ticket.id] == ["expire_running", "expire_charge"]
        now[0] += 60.0


def test_a_report_beside_the_running_service_holds_a_reservation_its_request_overran(
        tmp_path: Path) -> None:
    """A reservation whose request overran its deadline is open on disk with its expiry
    booked as the request still ran: while the service that made it holds data_dir's lock,
    a report read beside it counts it as held, not charged (its request still runs, and its
    settlement charges what it cost); once no service holds the lock, it is a crash's,
    charged its worst case as the next start charges it."""
    from switchpoint.gateway.owner import DataDirLock
    from switchpoint.governance.reports import Reports

    s, acme, ticket, now = _crashed_mid_request(tmp_path, overran=True)
    assert _closings(s.db_path)[ticket.id] == ["expire_running"]

    def reported() -> tuple[float, float, float]:
        reports = Reports.from_settings(s, clock=lambda: now[0])
        [alert] = reports.check_budget_alert("acme")["budgets"]
        assert (alert["held_usd"], alert["spent_usd"]) == (
            pytest.approx(reports.ledger.held(acme)),
            pytest.approx(reports.ledger.spent(acme, "day")))
        return (reports.ledger.held(acme), reports.ledger.spent(acme, "day"),
                reports.ledger.spent(TOTAL, "day"))

    service = DataDirLock(s.data_dir).acquire()  # the service that made it still serves
    try:
        assert reported() == (ticket.worst_usd, 0.0, 0.0)
        now[0] += 3600.0  # however long its request runs
        assert reported() == (ticket.worst_usd, 0.0, 0.0)
    finally:
        service.release()
    assert reported() == (0.0, ticket.worst_usd, ticket.worst_usd)
    assert _closings(s.db_path)[ticket.id] == ["expire_running"]  # (a report writes nothing)


def test_a_command_beside_the_service_books_no_expiry_of_a_reservation_it_did_not_make(
        tmp_path: Path) -> None:
    """A governor that does not serve (a command that learns beside the service, holding no
    lock) writes no row for the reservations it finds open, past their deadline or reaching
    it while it runs: while the service runs, they are its requests (held, not charged);
    with none running, a crash's, charged in its view alone. A service starting beside it
    charges such a crash's reservation, on disk, once."""
    from switchpoint.gateway.owner import DataDirLock
    from switchpoint.governance.ledger import load_state
    from switchpoint.store import SQLiteStore

    s, acme, ticket, now = _crashed_mid_request(tmp_path)  # its deadline still ahead
    service = DataDirLock(s.data_dir).acquire()  # the service that made it still serves
    store = SQLiteStore(s.db_path).open(serving=False)
    try:
        beside = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        beside.open(serving=False)
        assert beside.ledger.held(acme) == ticket.worst_usd
        now[0] = ticket.expires_at + 1.0  # its deadline passes while the command runs
        beside.flush()
        beside.close()
        assert _closings(s.db_path)[ticket.id] == []
        service.release()  # ... and the service dies with its request: a crash's now
        beside = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        beside.open(serving=False)
        assert (beside.ledger.held(acme), beside.ledger.spent(acme, "day")) == (
            0.0, ticket.worst_usd)  # (charged as the next start charges it)
        assert _closings(s.db_path)[ticket.id] == []
        with SQLiteStore(s.db_path) as its_store:  # a service starts meanwhile
            started = Governor(s, store=its_store, clock=lambda: now[0],
                               monotonic=lambda: now[0])
            started.open()
            assert started.ledger.spent(acme, "day") == ticket.worst_usd
            started.close()
        beside.close()
    finally:
        store.close()
        service.release()
    assert _closings(s.db_path)[ticket.id] == ["expire_charge"]
    spent, live, stale = load_state(s.db_path, now[0])
    assert sum(spent[acme]["day"].values()) == ticket.worst_usd and not live and not stale


def test_a_request_released_after_its_reservation_expired_is_released_once(
        tmp_path: Path) -> None:
    """A reservation that expired (its request overran its deadline) freed its hold then; the
    request's own release later writes the row that closes it on disk, once."""
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    with SQLiteStore(s.db_path) as store:
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        gov.open()
        try:
            ticket, _, _ = admit(gov, s, "acme", dict(body))
            now[0] += 1.0
            gov.flush()
            now[0] = ticket.expires_at + 1.0
            gov.flush()  # the expiry is written as it comes due
            assert gov.ledger.held(tenant_account("acme")) == 0.0
            _ended(gov, ticket, request_id="late")
            _ended(gov, ticket, request_id="late")
            following, _, _ = admit(gov, s, "acme", dict(body))  # (the next admission)
            _ended(gov, following, request_id="next")
        finally:
            gov.close()
    assert _closings(s.db_path)[ticket.id] == ["expire_running", "release"]


def test_a_restart_holds_a_reservation_of_the_longest_deadline_until_it_ends(
        tmp_path: Path) -> None:
    """A request may run a day (gateway.max_total_s at its most): a restart just before its
    deadline still holds its reservation (one that looked back only a day freed it early)."""
    from switchpoint.config import MAX_WAIT_S
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}},
                 gateway={"max_total_s": MAX_WAIT_S})
    body: dict[str, Any] = {"model": "auto", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    with SQLiteStore(s.db_path) as store:
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        ticket, _, _ = admit(gov, s, "acme", dict(body))
        now[0] += 1.0
        gov.flush()  # on disk; then the process dies
    assert ticket.expires_at > ticket.ts + MAX_WAIT_S
    for when, held in ((ticket.expires_at - 1.0, ticket.worst_usd), (ticket.expires_at, 0.0)):
        now[0] = when
        with SQLiteStore(s.db_path) as store:
            again = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
            again.open()
            assert again.ledger.held(tenant_account("acme")) == held, when
            again.close()


def test_a_try_after_a_billed_one_holds_its_worst_case_first_or_is_refused(
        tmp_path: Path) -> None:
    """Each try after one a provider may have billed holds its own worst case more before it
    is sent (on every account the request holds on); one no budget can hold is refused, and
    nothing is held for it."""
    body: dict[str, Any] = {"model": "big", "max_tokens": 1000,
                            "messages": [{"role": "user", "content": "hi"}]}
    probe, _, _ = admit(Governor(settings(tmp_path)), settings(tmp_path, budgets={
        "total": ["1000/day"]}), None, dict(body), cards=CARDS[:2])
    big, mid = probe.worst_by_model["big"], probe.worst_by_model["mid"]
    # Room for two tries of big, or one of big and one of mid; not for three.
    s = settings(tmp_path, tenants={"acme": {"budgets": [f"{2 * big + mid / 2:.10f}/day"]}},
                 budgets={"models": {"mid": "1000/day"}})
    gov = Governor(s)
    account = tenant_account("acme")
    ticket, kept, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:2], require_first=True)
    assert kept == ["big", "mid"] and ticket.holds[account] == pytest.approx(big)
    assert gov.hold_try(ticket, CARDS[0], []) is None  # (the first try: held at admission)
    assert gov.ledger.held(account) == pytest.approx(big)
    assert gov.hold_try(ticket, CARDS[0], [CARDS[0]]) is None  # big again, after big billed
    assert gov.ledger.held(account) == pytest.approx(2 * big)
    assert ticket.held_for_usd == pytest.approx(2 * big)
    refused = gov.hold_try(ticket, CARDS[1], [CARDS[0], CARDS[0]])  # mid: no room left
    assert refused is not None and refused.kind == "budget"
    assert "budget exceeded" in refused.message and "tenant acme" in refused.message
    assert "another try of mid" in refused.message
    assert gov.ledger.held(account) == pytest.approx(2 * big)  # nothing held for it
    assert ticket.holds["model:mid"] == pytest.approx(mid)
    rows, charged = gov.settle(ticket, request_id="r", card=None, cost_usd=None, tokens=None,
                               billed=[CARDS[0], CARDS[0]])
    assert charged == pytest.approx(2 * big) and gov.ledger.held(account) == 0
    assert [r.model for r in rows] == ["big"]


def test_a_reservation_that_held_more_for_a_further_try_is_restored_whole(
        tmp_path: Path) -> None:
    """A reservation already on disk that holds more for a further try writes what it holds
    now: a crash leaves it holding all of it until its deadline."""
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    body: dict[str, Any] = {"model": "big", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    with SQLiteStore(s.db_path) as store:
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        ticket, _, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:1])
        now[0] += 1.0
        gov.flush()  # on disk
        assert ticket.persisted
        assert _reserved(s.db_path) == [{tenant_account("acme"): ticket.worst_usd}]
        assert gov.hold_try(ticket, CARDS[0], [CARDS[0]]) is None
        held = ticket.holds[tenant_account("acme")]
        assert held == pytest.approx(2 * ticket.worst_usd)
        gov.flush()
        assert _reserved(s.db_path, 2)[-1] == {tenant_account("acme"): pytest.approx(held)}
    # The process died with the request under way.
    with SQLiteStore(s.db_path) as store:
        again = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        again.open()
        assert again.ledger.held(tenant_account("acme")) == pytest.approx(held)
        again.close()


def _reserved(db_path: Path, count: int = 1) -> list[dict[str, float]]:
    """What each ``reserve`` row of the spend table holds, once ``count`` are written."""
    import sqlite3
    import time
    from contextlib import closing

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(db_path)) as db:
            rows = db.execute("SELECT holds FROM spend WHERE kind = 'reserve' "
                              "ORDER BY ts").fetchall()
        if len(rows) >= count:
            return [json.loads(h) for (h,) in rows]
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} reservation rows were written")


@pytest.mark.parametrize("step_s", [0.0, -5.0])
def test_a_reservation_held_more_at_the_same_instant_or_a_clock_set_back_is_restored_whole(
        tmp_path: Path, step_s: float) -> None:
    """What a reservation holds after it held more for a further try is its row written last,
    not its row of the latest time: the clock may show the same instant, or have been set back,
    when the further try was held."""
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    body: dict[str, Any] = {"model": "big", "max_tokens": 10,
                            "messages": [{"role": "user", "content": "hi"}]}
    with SQLiteStore(s.db_path) as store:
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        ticket, _, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:1])
        gov.flush(everything=True)  # on disk
        assert ticket.persisted
        assert _reserved(s.db_path) == [{tenant_account("acme"): ticket.worst_usd}]
        now[0] += step_s
        assert gov.hold_try(ticket, CARDS[0], [CARDS[0]]) is None
        held = ticket.holds[tenant_account("acme")]
        assert held == pytest.approx(2 * ticket.worst_usd)
        assert len(_reserved(s.db_path, 2)) == 2
    # The process died with the request under way.
    with SQLiteStore(s.db_path) as store:
        again = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        again.open()
        assert again.ledger.held(tenant_account("acme")) == pytest.approx(held)
        again.close()


def test_a_request_s_end_is_booked_once_even_after_its_reservation_expired(
        tmp_path: Path) -> None:
    """A request whose reservation expired (its hold freed) is charged for the tries a
    provider may have billed when it ends, all the same; a second settlement charges nothing
    more, and a restart counts the charge once."""
    from switchpoint.store import SQLiteStore

    now = [1_800_001_800.0]
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    body: dict[str, Any] = {"model": "big", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    account = tenant_account("acme")
    with SQLiteStore(s.db_path) as store:
        gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        gov.ledger.clock = lambda: now[0]
        gov.open()
        try:
            ticket, _, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:1])
            now[0] += 1.0
            gov.flush()  # (its reservation on disk)
            now[0] = ticket.expires_at + 1.0
            gov.flush()  # its expiry frees its hold
            assert ticket.closed and not ticket.settled
            assert gov.ledger.held(account) == 0.0
            worst = ticket.worst_by_model["big"]
            _ended(gov, ticket, request_id="late", billed=[CARDS[0]])
            assert ticket.settled
            assert gov.ledger.spent(account, "day") == pytest.approx(worst)
            again = gov.settle(ticket, request_id="late", card=CARDS[0], cost_usd=0.001,
                               tokens=10, billed=[CARDS[0]])
            assert again == ([], None)
            _ended(gov, ticket, request_id="late", billed=[CARDS[0]])
            assert gov.ledger.spent(account, "day") == pytest.approx(worst)
        finally:
            gov.close()
    assert _closings(s.db_path)[ticket.id] == ["expire_running", "settle"]
    with SQLiteStore(s.db_path) as store:
        restarted = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
        restarted.open()
        try:
            assert restarted.ledger.spent(account, "day", now[0]) == pytest.approx(worst)
        finally:
            restarted.close()


def test_rate_windows_count_billed_tries_at_their_worst_case_as_budgets_charge_them(
        tmp_path: Path) -> None:
    """A try a provider may have billed with no answer counts the tokens the request was
    admitted for in the TPM windows (as its budget charges its worst case); the answer counts
    the tokens the upstream reported, never past that worst case."""
    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"], "tpm": 1_000_000}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "big", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    ticket, _, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:2], require_first=True)
    assert gov.hold_try(ticket, CARDS[1], [CARDS[0]]) is None
    rows, charged = gov.settle(ticket, request_id="r", card=CARDS[1], cost_usd=0.0001,
                               tokens=40, billed=[CARDS[0]])
    assert [(r.model, r.tokens) for r in rows] == [("big", ticket.tokens), ("mid", 40)]
    assert charged == pytest.approx(ticket.worst_by_model["big"] + 0.0001)
    # What the window holds now: the next request fits beside exactly that, not more.
    used = ticket.tokens + 40
    unknown_usd, unknown_tokens = gov.charge_of(ticket, CARDS[1], None, None)
    assert unknown_usd == pytest.approx(ticket.worst_by_model["mid"])
    assert unknown_tokens == ticket.tokens
    assert gov.charge_of(ticket, CARDS[1], 1e6, 10**9)[1] == ticket.tokens
    tight = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"],
                                                 "tpm": used + ticket.tokens - 1}})
    with pytest.raises(RateLimitExceededError) as info:
        gov.admit(tight, gov.policy(tight, "acme", None), CARDS[:1], dict(body), key_id=None,
                  tenant="acme", notes=[], require_first=True)
    assert f"has used {used} of its" in info.value.message


def test_a_try_after_a_billed_one_holds_its_tokens_in_the_tpm_window_or_is_refused(
        tmp_path: Path) -> None:
    """With a TPM limit and no budget, each try after one a provider may have billed holds
    the tokens the request was admitted for in the window before it is sent; one the window
    cannot take is refused naming the limit, and nothing is held for it. Settlement counts
    each try once, whatever was held for it."""
    body: dict[str, Any] = {"model": "big", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    probe, _, _ = admit(Governor(settings(tmp_path)), settings(
        tmp_path, tenants={"acme": {"tpm": 1_000_000}}), "acme", dict(body), cards=CARDS[:2])
    tokens = probe.tokens
    limit = 2 * tokens + tokens // 2  # room for two tries, not three
    s = settings(tmp_path, tenants={"acme": {"tpm": limit}})
    gov = Governor(s)
    account = tenant_account("acme")
    ticket, kept, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:2], require_first=True)
    assert kept == ["big", "mid"] and ticket.holds == {} and ticket.holds_any
    assert ticket.tokens == tokens and ticket.tokens_held() == {account: tokens}
    assert gov.hold_try(ticket, CARDS[0], []) is None  # (the first try: held at admission)
    assert gov.hold_try(ticket, CARDS[0], [CARDS[0]]) is None  # big again, after big billed
    assert ticket.tokens_held() == {account: 2 * tokens}
    refused = gov.hold_try(ticket, CARDS[1], [CARDS[0], CARDS[0]])  # mid: no room left
    assert refused is not None and refused.kind == "tpm" and refused.account == account
    assert refused.message.startswith(
        f"rate limit exceeded: not sent, as 2 earlier tries a provider may have billed count "
        f"{2 * tokens} tokens at their worst case in the tokens-per-minute window: tenant acme "
        f"has used {2 * tokens} of its {limit} tokens per minute and another try of mid may "
        f"use up to {tokens}; retry in "), refused.message
    assert refused.retry_after is not None and 0 < refused.retry_after <= 60
    assert ticket.tokens_held() == {account: 2 * tokens}  # nothing held for it
    rows, _ = gov.settle(ticket, request_id="r", card=None, cost_usd=None, tokens=None,
                         billed=[CARDS[0], CARDS[0]])
    assert [(r.model, r.tokens) for r in rows] == [("big", 2 * tokens)]
    # The window counts the two billed tries, once each: a request of one more try's tokens
    # does not fit beside them; their answer's tokens alone would have.
    with pytest.raises(RateLimitExceededError) as info:
        gov.admit(s, gov.policy(s, "acme", None), CARDS[:1], dict(body), key_id=None,
                  tenant="acme", notes=[], require_first=True)
    assert f"has used {2 * tokens} of its {limit} tokens" in info.value.message


def test_a_held_try_that_answers_counts_its_reported_tokens_once(tmp_path: Path) -> None:
    """A try held after a billed one and then answered: the window counts the billed try at
    the tokens held for it and the answer at its reported tokens, once each (not what was
    held for the answering try beside them)."""
    s = settings(tmp_path, tenants={"acme": {"tpm": 1_000_000}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "big", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    ticket, _, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:2], require_first=True)
    assert gov.hold_try(ticket, CARDS[1], [CARDS[0]]) is None
    assert ticket.tokens_held() == {tenant_account("acme"): 2 * ticket.tokens}
    gov.settle(ticket, request_id="r", card=CARDS[1], cost_usd=None, tokens=40,
               billed=[CARDS[0]])
    assert ticket.tokens_held() == {tenant_account("acme"): ticket.tokens + 40}
    used = ticket.tokens + 40
    tight = settings(tmp_path, tenants={"acme": {"tpm": used + ticket.tokens - 1}})
    with pytest.raises(RateLimitExceededError) as info:
        gov.admit(tight, gov.policy(tight, "acme", None), CARDS[:1], dict(body), key_id=None,
                  tenant="acme", notes=[], require_first=True)
    assert f"has used {used} of its" in info.value.message


def test_a_ticket_settled_by_two_threads_at_once_is_booked_by_one(tmp_path: Path) -> None:
    """Two settlements of one ticket on threads of their own, the second starting while the
    first works out its charges: one books the request's end (its rows, its charge), the
    other gets no rows, so the spend table is not charged twice for what the budgets in
    memory charged once."""
    import threading

    s = settings(tmp_path, tenants={"acme": {"budgets": ["10/day"]}})
    gov = Governor(s)
    body: dict[str, Any] = {"model": "big", "max_tokens": 100,
                            "messages": [{"role": "user", "content": "hi"}]}
    ticket, _, _ = admit(gov, s, "acme", dict(body), cards=CARDS[:1])
    results: list[tuple[list[Any], float | None]] = []
    real = gov.charge_of
    other: list[threading.Thread] = []

    def settle() -> None:
        results.append(gov.settle(ticket, request_id="r", card=CARDS[0], cost_usd=0.001,
                                  tokens=10))

    def charge_of(*args: Any, **kw: Any) -> tuple[float, int]:
        if not other:  # the first settlement, mid-way: a second one starts on its thread
            other.append(threading.Thread(target=settle))
            other[0].start()
            other[0].join(timeout=0.5)  # (it finishes now unless the first one holds it off)
        return real(*args, **kw)

    gov.charge_of = charge_of  # type: ignore[method-assign]
    settle()
    other[0].join(timeout=10)
    assert not other[0].is_alive()
    assert sorted(len(rows) for rows, _ in results) == [0, 1]
    assert sorted((charged is None) for _, charged in results) == [False, True]
    assert gov.ledger.spent(tenant_account("acme"), "day") == pytest.approx(0.001)


def test_the_models_a_refusal_names_are_listed_bounded(tmp_path: Path) -> None:
    # A refusal listed every model the caller may use (a tenant may name a thousand), and the
    # names it refused or found unpriced by a bound of ten of its own: each list is the first
    # 20 names and how many more, as every message lists names.
    names = [f"m{i:02}" for i in range(30)]
    catalog = Catalog([ModelCard(n, provider="openai") for n in names])
    s = load_settings(overrides={
        "models": [{"name": n, "provider": "openai", "input_per_mtok": 1,
                    "output_per_mtok": 1} for n in names],
        "data_dir": str(tmp_path),
        "tenants": {"acme": {"models": [*names, "auto"]}, "beta": {"budgets": ["10/day"]}}},
        environ={})
    gov = Governor(s)
    acme = gov.policy(s, "acme", None)
    first = ", ".join(f'"{n}"' for n in names[:20])
    with pytest.raises(PermissionDeniedError) as refused:
        gov.check_model(acme, "other", catalog)
    assert str(refused.value).endswith(f"it may use {first} and 11 more"), refused.value
    with pytest.raises(PermissionDeniedError) as refused:
        gov.check_candidates(acme, catalog, "models", [f"x{i:02}" for i in range(25)])
    shown = ", ".join(f'"x{i:02}"' for i in range(20))
    assert f"may not choose {shown} and 5 more; it may choose among {first} and 10 more" in (
        str(refused.value)), refused.value
    with pytest.raises(PermissionDeniedError) as refused:
        gov.narrow(gov.policy(s, "beta", None), catalog, None)  # (none priced here)
    assert f"model: {first} and 10 more have no prices in the catalog" in str(refused.value), (
        refused.value)


def test_a_candidate_list_the_limits_did_not_read_is_refused_never_passed(
        tmp_path: Path) -> None:
    """The check of a caller's candidates for auto returned, passing them, for anything but a
    list or a tuple: a dict or a generator naming a model the caller may not use went by
    unchecked. Each is read by the one rule of a list of model names: a dict, a set or a
    string is refused naming the field (for a caller of any reach), any other iterable is read
    once and checked, and the list checked is what the caller routes by."""
    catalog = Catalog(CARDS)
    s = load_settings(overrides={
        "models": [{"name": c.name, "provider": "openai"} for c in CARDS],
        "data_dir": str(tmp_path),
        "tenants": {"acme": {"models": ["mid", "small", "auto"]}, "open": {}}}, environ={})
    gov = Governor(s)
    acme, anyone = gov.policy(s, "acme", None), gov.policy(s, "open", None)
    for policy in (acme, anyone):
        for names in ({"big": 1}, {"big"}, "big"):
            with pytest.raises(InvalidInputError) as refused:
                gov.check_candidates(policy, catalog, "models", names)
            assert refused.value.field == "models", refused.value
            assert "must be a list of model names" in str(refused.value)
    for listed in ((m for m in ["big"]), iter(["mid", "big"]), ("big",), ["big"]):
        with pytest.raises(PermissionDeniedError, match='may not choose "big"'):
            gov.check_candidates(acme, catalog, "models", listed)
    assert gov.check_candidates(acme, catalog, "models", (m for m in ["small"])) == ["small"]
    assert gov.check_candidates(anyone, catalog, "models", iter(["big"])) == ["big"]
    assert gov.check_candidates(acme, catalog, "models", None) is None


def test_a_budget_leaving_auto_no_priced_model_names_the_list_that_left_none(
        tmp_path: Path) -> None:
    """The caller's list when it alone names no priced model, else the body's ``models``
    (applied after it), else the request's field asking for auto."""
    s = load_settings(overrides={
        "models": [{"name": "paid", "provider": "openai", "input_per_mtok": 1,
                    "output_per_mtok": 1},
                   {"name": "free", "provider": "openai"}],
        "data_dir": str(tmp_path), "tenants": {"beta": {"budgets": ["10/day"]}}}, environ={})
    catalog = s.catalog()
    assert catalog is not None
    gov = Governor(s)
    beta = gov.policy(s, "beta", None)
    for candidates, also, named in ((["free"], None, "models"),
                                    (["free"], ["free", "paid"], "models"),
                                    (["free", "paid"], ["free"], "body"),
                                    (None, ["free"], "body")):
        with pytest.raises(PermissionDeniedError) as refused:
            gov.narrow(beta, catalog, candidates, also=also, candidates_field="models",
                       also_field="body")
        assert refused.value.param == named
        assert str(refused.value).startswith(f'{named}: "free" has no prices'), refused.value
    # Without a name of its own, the caller's list is named as the request's field.
    with pytest.raises(PermissionDeniedError) as refused:
        gov.narrow(beta, catalog, ["free"], field="available_models")
    assert refused.value.param == "available_models"
    assert gov.narrow(beta, catalog, ["free", "paid"], also=["paid"],
                      candidates_field="models") == ["paid"]
