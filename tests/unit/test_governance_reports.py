"""Reports from a seeded log, every figure recomputed here by hand from the seed."""

from __future__ import annotations

import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint._messages import too_long
from switchpoint.catalog import usd_text
from switchpoint.config import Settings, load_settings
from switchpoint.errors import InvalidInputError, NotFoundError
from switchpoint.governance.budgets import period_end
from switchpoint.governance.keys import KEYS_FILENAME, KeyStore
from switchpoint.governance.ledger import TOTAL, Ledger, LedgerRecord, rebuild
from switchpoint.governance.reports import Reports
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore

T0 = 1_800_001_800.0  # 2027-01-15T08:30:00Z
HOUR, DAY = 3600.0, 86400.0
PRICES = {"big": (10.0, 30.0), "mid": (2.0, 6.0), "small": (0.2, 0.6)}
ERR = {"big": 0.10, "mid": 0.25, "small": 0.45}
# The router's per-request cost estimates (the reference request: 500 in, 200 out).
EST = {m: (500 * i + 200 * o) / 1e6 for m, (i, o) in PRICES.items()}


def price(model: str, pt: int, ct: int) -> float:
    i, o = PRICES[model]
    return (pt * i + ct * o) / 1e6


def settings(tmp_path: Path) -> Settings:
    return load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"acme": {"budgets": ["0.04/day"]},
                    "beta": {"budgets": ["0.0005/day"], "sla": {"max_latency_ms": 100}}},
        "sla": {"max_latency_ms": 1000, "budget_per_hour_usd": 0.1}}, environ={})


# (id, seconds before T0, model, tenant, key, prompt, completion, latency, decision λ, governance)
REQUESTS: list[tuple[Any, ...]] = [
    ("r1", 600, "big", "acme", "k1", 1000, 500, 500.0, 0.0, None),
    ("r2", 2 * HOUR, "mid", "acme", "k1", 2000, 1000, 1500.0, 0.5,
     {"sla_compliant": True, "sla_breaches": ["budget_exceeded"],
      "sla_adjustments": ["routed_to_cheaper_model_due_to_budget_sla"],
      "original_model": "big"}),
    ("r3", 3 * HOUR, "small", "beta", "k2", 1000, 1000, 200.0, 5.0,
     {"sla_compliant": False, "sla_breaches": ["quality_below_minimum"],
      "sla_adjustments": []}),
    ("r4", 1000, "mid", None, None, 500, 100, 50.0, None, None),    # a named model: no decision
    ("r5", 4 * HOUR, None, "acme", "k1", None, None, 3000.0, None, None),  # failed
    ("r6", 8 * DAY, "big", "acme", "k1", 1000, 1000, 400.0, None, None),  # last month only
]


def pruned_at(data_dir: Path, when: float) -> None:
    """A key store in ``data_dir`` that holds no key, its ended keys pruned at ``when`` (so in
    use after their requests: it is the one they were made in)."""
    with KeyStore(data_dir / KEYS_FILENAME, clock=lambda: when) as keys:
        keys.prune(None, 1)


@pytest.fixture
def reports(tmp_path: Path) -> Reports:
    s = settings(tmp_path)
    with SQLiteStore(s.db_path) as store:
        for rid, ago, model, tenant, key, pt, ct, latency, lam, gov in REQUESTS:
            ts = T0 - ago
            decision_id = None
            if lam is not None:
                decision_id = f"d{rid}"
                store.append(DecisionRecord(
                    id=decision_id, ts=ts, selected_model=model, cluster_id=0,
                    cost_weight=lam, candidates=list(ERR), cache_hit=False, routing_ms=1.0,
                    embedding_ms=1.0, policy="cluster", weights_id="w",
                    expected_error=ERR[model], cost_adjusted_score=0.0, key_id=key,
                    tenant=tenant, expected_errors=ERR, expected_costs=EST,
                    governance=gov)).result()
            cost = price(model, pt, ct) if model else None
            store.append(RequestRecord(
                id=rid, ts=ts, requested_model="auto" if lam is not None else "mid",
                status="ok" if model else "error", http_status=200 if model else 502,
                pin_state="fresh", stream=False, latency_ms=latency, model=model,
                prompt_tokens=pt, completion_tokens=ct, cost_usd=cost, decision_id=decision_id,
                key_id=key, tenant=tenant, charged_usd=cost)).result()
            if model:
                store.append(LedgerRecord(ts=ts, reservation_id=f"t{rid}", kind="settle",
                                          amount_usd=cost or 0.0, request_id=rid, key_id=key,
                                          tenant=tenant, model=model,
                                          provider="openai")).result()
    # The key store k1 and k2 were made in, which no longer holds them (pruned since).
    pruned_at(tmp_path, T0)
    return Reports.from_settings(s, clock=lambda: T0)


def test_cost_report_by_model_tenant_and_key(reports: Reports) -> None:
    r1, r2, r3, r4 = (price("big", 1000, 500), price("mid", 2000, 1000),
                      price("small", 1000, 1000), price("mid", 500, 100))
    assert (r1, r2, r3, r4) == pytest.approx((0.025, 0.01, 0.0008, 0.0016))
    day = reports.cost_report("day")
    assert (day["requests"], day["answered"]) == (5, 4)
    assert day["total_cost_usd"] == pytest.approx(r1 + r2 + r3 + r4)
    assert day["avg_cost_per_request_usd"] == pytest.approx((r1 + r2 + r3 + r4) / 4)
    assert day["prompt_tokens"] == 4500 and day["completion_tokens"] == 2600
    assert day["by_model"] == {
        "big": {"requests": 1, "cost_usd": pytest.approx(r1), "prompt_tokens": 1000,
                "completion_tokens": 500, "cost_unknown_requests": 0},
        "mid": {"requests": 2, "cost_usd": pytest.approx(r2 + r4), "prompt_tokens": 2500,
                "completion_tokens": 1100, "cost_unknown_requests": 0},
        "small": {"requests": 1, "cost_usd": pytest.approx(r3), "prompt_tokens": 1000,
                  "completion_tokens": 1000, "cost_unknown_requests": 0}}
    assert list(day["by_model"]) == ["big", "mid", "small"]  # dearest first
    assert day["by_tenant"] == {
        "acme": {"requests": 3, "cost_usd": pytest.approx(r1 + r2), "cost_unknown_requests": 0},
        "default": {"requests": 1, "cost_usd": pytest.approx(r4), "cost_unknown_requests": 0},
        "beta": {"requests": 1, "cost_usd": pytest.approx(r3), "cost_unknown_requests": 0}}
    assert day["by_key"]["k1"] == {"requests": 3, "cost_usd": pytest.approx(r1 + r2),
                                   "cost_unknown_requests": 0}
    assert day["cost_unknown_requests"] == 0
    month = reports.cost_report("month")
    assert month["requests"] == 6
    assert month["total_cost_usd"] == pytest.approx(r1 + r2 + r3 + r4 + price("big", 1000, 1000))
    assert reports.cost_report("week", tenant="beta")["total_cost_usd"] == pytest.approx(r3)
    # The deployment's own tenant, 'default', holds the requests that name no tenant (r4).
    own = reports.cost_report("day", tenant="default")
    assert (own["requests"], own["total_cost_usd"]) == (1, pytest.approx(r4))
    assert reports.logged_tenants() == ["acme", "beta", "default"]
    with pytest.raises(InvalidInputError, match='"fortnight" is not a report period'):
        reports.cost_report("fortnight")


def test_savings_against_the_strongest_model_on_the_same_tokens(reports: Reports) -> None:
    s = reports.cost_report("day")["savings"]
    assert s["comparison_model"] == "big" and "lowest mean expected error" in s["basis"]
    compared = (price("big", 1000, 500) + price("big", 2000, 1000) + price("big", 1000, 1000)
                + price("big", 500, 100))
    actual = 0.025 + 0.01 + 0.0008 + 0.0016
    assert s["requests"] == 4
    assert s["comparison_cost_usd"] == pytest.approx(compared)
    assert s["savings_usd"] == pytest.approx(compared - actual)
    assert s["savings_pct"] == pytest.approx((compared - actual) / compared, abs=1e-6)
    mid = reports.savings_estimate("mid", "day")
    assert mid["comparison_cost_usd"] == pytest.approx(
        price("mid", 1000, 500) + price("mid", 2000, 1000) + price("mid", 1000, 1000)
        + price("mid", 500, 100))
    with pytest.raises(InvalidInputError, match='"gpt-9" is not a catalog model'):
        reports.savings_estimate("gpt-9")


def test_decisions_narrowed_to_a_few_models_do_not_pick_the_comparison(
        reports: Reports, tmp_path: Path) -> None:
    """Requests narrowed to one model (a key limited to it, x-switchpoint-models) weighed only
    it: the strongest model is still judged on the decisions that weighed them all."""
    with SQLiteStore(settings(tmp_path).db_path) as store:
        for i in range(3):
            store.append(DecisionRecord(
                id=f"narrow{i}", ts=T0 - 60, selected_model="small", cluster_id=0,
                cost_weight=0.5, candidates=["small"], cache_hit=False, routing_ms=1.0,
                embedding_ms=1.0, policy="cluster", weights_id="w", expected_error=0.45,
                cost_adjusted_score=0.0, expected_errors={"small": 0.45},
                expected_costs={"small": EST["small"]})).result()
    model, why = reports.strongest_model()
    assert model == "big" and "over 3 logged decisions" in why


def test_without_decisions_the_comparison_is_the_dearest_model_auto_may_choose(
        tmp_path: Path) -> None:
    """With no decision logged the comparison model used to be the dearest of the catalog,
    which may be an ``auto: false`` judge no routed request could have gone to."""
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": "judge", "input_per_mtok": 50.0, "output_per_mtok": 150.0,
                    "auto": False},
                   *({"name": m, "input_per_mtok": i, "output_per_mtok": o}
                     for m, (i, o) in PRICES.items())]}, environ={})
    model, why = Reports.from_settings(s, clock=lambda: T0).strongest_model()
    assert model == "big" and why == "the dearest model auto may choose (no decisions logged)"


def test_forecast_over_the_logged_mix(reports: Reports) -> None:
    f = reports.forecast_cost(1000, 500, 200)
    assert f["mix_basis"] == "answered requests of the last week"
    shares = {"big": 0.25, "mid": 0.5, "small": 0.25}
    hourly = sum(1000 * shares[m] * price(m, 500, 200) for m in shares)
    assert hourly == pytest.approx(3.905)
    assert f["hourly_cost_usd"] == pytest.approx(hourly)
    assert f["daily_cost_usd"] == pytest.approx(hourly * 24)
    assert f["monthly_cost_usd"] == pytest.approx(hourly * 24 * 30)
    assert f["unpriced_models"] == [] and f["unpriced_requests_pct"] == 0
    assert f["breakdown_by_model"]["mid"] == {
        "requests_pct": 0.5, "cost_per_request_usd": pytest.approx(0.0022),
        "hourly_cost_usd": pytest.approx(1.1)}
    saving = 1000 * 24 * 0.25 * 0.10 * (price("big", 500, 200) - price("small", 500, 200))
    assert f"would save about {usd_text(saving)}/day" in f["optimization_tip"]
    assert f["optimization_tip"].startswith("big carries 70% of the projected spend")
    # It points to the suggestions report by the names of the command and of the method.
    assert "`switchpoint report suggest` or get_cost_optimizations()" in f["optimization_tip"]
    with pytest.raises(InvalidInputError, match="requests_per_hour"):
        reports.forecast_cost(-1, 500, 200)


def test_a_forecast_takes_any_real_number_and_names_a_huge_one_bounded(
        reports: Reports) -> None:
    # NumPy's scalars are numbers as everywhere in the library; an integer too large for a
    # float, or for repr, is refused naming the argument, not an OverflowError or ValueError.
    scalars: list[Any] = [np.int64(1000), np.float32(500), np.int32(200)]
    same = reports.forecast_cost(*scalars)
    assert same["hourly_cost_usd"] == reports.forecast_cost(1000, 500, 200)["hourly_cost_usd"]
    for huge in (10**400, 10**5000):
        with pytest.raises(InvalidInputError) as info:
            reports.forecast_cost(huge, 500, 200)
        assert info.value.field == "requests_per_hour" and len(str(info.value)) < 300
    with pytest.raises(InvalidInputError, match="avg_input_tokens"):
        reports.forecast_cost(1000, True, 200)


def test_a_model_without_prices_is_forecast_as_unknown_not_free(reports: Reports) -> None:
    from switchpoint.catalog import Catalog, ModelCard

    catalog = Catalog([ModelCard("big", input_per_mtok=10, output_per_mtok=30),
                       ModelCard("mid"),
                       ModelCard("small", input_per_mtok=0.2, output_per_mtok=0.6)])
    unpriced = Reports(reports.db_path, reports.settings, catalog=catalog, clock=reports.clock)
    f = unpriced.forecast_cost(1000, 500, 200)
    assert f["unpriced_models"] == ["mid"] and f["unpriced_requests_pct"] == 0.5
    assert f["breakdown_by_model"]["mid"] == {"requests_pct": 0.5, "cost_per_request_usd": None,
                                              "hourly_cost_usd": None}
    assert f["hourly_cost_usd"] == pytest.approx(
        1000 * 0.25 * (price("big", 500, 200) + price("small", 500, 200)))
    assert f["optimization_tip"].startswith("big carries")


def test_the_forecast_tip_moves_traffic_only_to_a_model_routing_may_choose(
        reports: Reports) -> None:
    # A cheaper judge (auto: false) was named as where to send a tenth of the traffic.
    from switchpoint.catalog import Catalog, ModelCard

    catalog = Catalog([*(ModelCard(m, input_per_mtok=i, output_per_mtok=o)
                         for m, (i, o) in PRICES.items()),
                       ModelCard("judge", input_per_mtok=0.01, output_per_mtok=0.01,
                                 auto=False)])
    judged = Reports(reports.db_path, reports.settings, catalog=catalog, clock=reports.clock)
    tip = judged.forecast_cost(1000, 500, 200)["optimization_tip"]
    assert "to small would save" in tip and "judge" not in tip, tip


def test_what_if_re_routes_the_logged_decisions(reports: Reports) -> None:
    tokens = {"r1": (1000, 500), "r2": (2000, 1000), "r3": (1000, 1000)}
    actual = price("big", 1000, 500) + price("mid", 2000, 1000) + price("small", 1000, 1000)
    quality = (0.9 + 0.75 + 0.55) / 3
    everyone_big = reports.what_if(cost_weight=0.0)
    assert everyone_big["requests"] == 3 and everyone_big["models"] == {"big": 3}
    assert everyone_big["actual_spend_usd"] == pytest.approx(actual)
    assert everyone_big["spend_usd"] == pytest.approx(sum(price("big", *t)
                                                          for t in tokens.values()))
    assert everyone_big["quality_delta"] == pytest.approx(0.9 - quality, abs=1e-6)
    # Uniform λ: big below 0.1875, mid up to 1.111, small above (scale = big's 0.011).
    assert reports.what_if(cost_weight=0.5)["models"] == {"mid": 3}
    cheap = reports.what_if(cost_weight=5.0)
    assert cheap["models"] == {"small": 3}
    assert cheap["spend_usd"] == pytest.approx(sum(price("small", *t) for t in tokens.values()))
    # Without big, each decision keeps its own λ but the scale becomes mid's 0.0022:
    # r1 (λ 0) mid; r2 (λ 0.5: mid 0.75, small 0.5) small; r3 small.
    no_big = reports.what_if(without=["big"])
    assert no_big["models"] == {"small": 2, "mid": 1}
    assert no_big["spend_usd"] == pytest.approx(price("mid", 1000, 500)
                                                + price("small", 2000, 1000)
                                                + price("small", 1000, 1000))


def test_suggestions_are_computed_from_the_log(reports: Reports) -> None:
    items = reports.get_cost_optimizations()
    assert len(items) == 1
    item = items[0]
    assert item["kind"] == "cost_weight" and item["what_if"]["cost_weight"] == 0.2
    assert item["suggestion"].startswith("Set cost_weight to 0.2")
    # The λ values the traffic ran at (r1, r2, r3), not their median alone.
    assert "(logged traffic ran at λ 0, 0.5 and 5)" in item["suggestion"], item["suggestion"]
    actual = 0.025 + 0.01 + 0.0008
    everyone_mid = price("mid", 1000, 500) + price("mid", 2000, 1000) + price("mid", 1000, 1000)
    assert item["estimated_savings_usd_per_day"] == pytest.approx((actual - everyone_mid) / 7)
    assert item["what_if"]["quality_delta"] == pytest.approx(0.75 - (0.9 + 0.75 + 0.55) / 3,
                                                             abs=1e-6)
    assert "expected quality +0.017" in item["tradeoff"]
    # Accepting a larger quality loss makes everyone-small (λ >= 1.5) the cheapest.
    loose = reports.get_cost_optimizations(max_quality_loss=0.5)
    assert loose[0]["what_if"]["models"] == {"small": 3}
    # The report of them (the HTTP route's body) counts the requests re-routed; no note
    # beside suggestions.
    assert reports.suggestion_report() == {"data": items, "routed_requests": 3, "note": None}


@pytest.mark.parametrize("tokens", [
    "100,50", (100,), (100, 50, 10), (100.5, 50), (True, 50), (100, -1), (100, 10**9),
    {"input": 100, "output": 50}])
def test_suggestions_and_what_if_refuse_token_counts_that_are_not_two_whole_numbers(
        reports: Reports, tokens: Any) -> None:
    for call in (lambda: reports.get_cost_optimizations(tokens),
                 lambda: reports.what_if(estimate_tokens=tokens)):
        with pytest.raises(InvalidInputError) as bad:
            call()
        assert bad.value.field == "estimate_tokens"
        assert "two whole numbers of tokens, input then output" in str(bad.value)
    # Two whole numbers (a list too) price every logged request at them.
    priced = reports.what_if(cost_weight=0.0, estimate_tokens=[100, 50])
    assert priced["spend_usd"] == pytest.approx(3 * price("big", 100, 50))


def test_sla_report(reports: Reports) -> None:
    r = reports.get_sla_report(24)
    # Latency: r2 (1500 > 1000), r3 (200 > beta's own 100), r5 (3000 > 1000).
    assert r["total_requests"] == 5
    assert r["breaches"] == {"latency": 3, "cost": 1, "quality": 1}
    assert r["compliance_rate"] == pytest.approx(2 / 5)  # r1 and r4
    assert r["adjustments_made"] == 1
    assert r["cost_savings_usd"] == pytest.approx(price("big", 2000, 1000)
                                                  - price("mid", 2000, 1000))
    assert r["avg_latency_ms"] == pytest.approx((500 + 1500 + 200 + 50 + 3000) / 5)
    assert r["budget_utilization"] == pytest.approx((0.025 + 0.0016) / 0.1)  # r1, r4
    one = reports.get_sla_report(1)
    assert one["total_requests"] == 2 and one["compliance_rate"] == 1.0
    # Each refused window is told the one range, 0 out of it ("must be a finite number >= 0,
    # got -1" took 0), and an infinity said as what it is read from (it was "got inf").
    for hours, shown in ((0, "0"), (-1, "-1"), (1e400, "infinity, too large a number"),
                         (math.nan, "NaN"), (8785, "8785"), ("1", '"1"')):
        with pytest.raises(InvalidInputError) as caught:
            reports.get_sla_report(hours)  # type: ignore[arg-type]
        assert str(caught.value).startswith(
            "since_hours: must be a number of hours more than 0 and at most 8,784 (366 days), "
            f"got {shown}"), caught.value
    # A Decimal that is not 0 but a float holds only as 0 is told so, with the range: it was
    # advised to "write 0", which is refused too.
    with pytest.raises(InvalidInputError) as tiny:
        reports.get_sla_report(Decimal("1e-400"))  # type: ignore[arg-type]
    assert str(tiny.value) == (
        "since_hours: 1E-400 is too small a number to be told from 0; give a number of hours "
        "more than 0 and at most 8,784 (366 days)")


def test_the_sla_report_and_the_alert_read_the_hour_the_sla_budget_watches(
        reports: Reports) -> None:
    # acme has no SLA of its own: the default SLA's $0.1/hour watches the whole gateway's
    # spend this hour, as routing checks it (r1 of acme, r4 of no tenant: 0.0266). The SLA
    # report said acme's own last 60 minutes (0.025: 0.25), the alert the gateway's (0.266).
    sla = reports.get_sla_report(1, tenant="acme")
    alert = reports.check_budget_alert("acme")
    assert sla["budget_account"] == alert["hourly_account"] == "the gateway"
    assert sla["budget_utilization"] == pytest.approx(0.266)
    assert alert["utilization"] == pytest.approx(0.266)
    everyone = reports.get_sla_report(1)
    assert everyone["budget_utilization"] == pytest.approx(0.266)
    # beta's own SLA has no hourly budget: its own account, nothing to utilise.
    beta = reports.get_sla_report(24, tenant="beta")
    assert beta["budget_account"] == "tenant beta" and beta["budget_utilization"] is None


def test_an_hour_over_its_sla_budget_with_no_budget_listed_is_recommended_as_such(
        tmp_path: Path) -> None:
    """Only the SLA's hourly budget is critical (no budget is listed): the recommendation
    says the hour has reached it and what that does, not that spend nears a budget."""
    s = load_settings(overrides={
        "data_dir": str(tmp_path), "sla": {"budget_per_hour_usd": 0.01},
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()]}, environ={})
    with SQLiteStore(s.db_path) as store:
        store.append(RequestRecord(
            id="a", ts=T0 - 600, requested_model="big", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=10.0, model="big",
            prompt_tokens=1000, completion_tokens=500,
            cost_usd=price("big", 1000, 500))).result()
    alert = Reports.from_settings(s, clock=lambda: T0).check_budget_alert()
    assert (alert["status"], alert["hourly_status"], alert["budgets"]) == (
        "critical", "critical", [])
    assert "nearing" not in alert["recommendation"]
    assert (f"this hour's spend {usd_text(price('big', 1000, 500))} has reached the SLA's "
            "$0.01/hour budget") in alert["recommendation"], alert["recommendation"]
    assert "sla.budget_per_hour_usd" in alert["recommendation"]


def test_budget_alert_without_budgets_reads_the_hours_spend_from_the_request_log(
        tmp_path: Path) -> None:
    """Without a budget or an hourly SLA budget nothing is settled in the ledger: the hour's
    spend is then what the request log says the answers cost, not zero."""
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()]}, environ={})
    with SQLiteStore(s.db_path) as store:
        for rid, ago, model, pt, ct in [("a", 600, "big", 1000, 500),
                                        ("b", 1000, "mid", 500, 100),
                                        ("c", HOUR, "big", 1000, 1000)]:  # the hour before
            store.append(RequestRecord(
                id=rid, ts=T0 - ago, requested_model=model, status="ok", http_status=200,
                pin_state="fresh", stream=False, latency_ms=10.0, model=model,
                prompt_tokens=pt, completion_tokens=ct, cost_usd=price(model, pt, ct))).result()
        # An answer of unknown cost is counted apart, not summed as free; a failed request,
        # which nobody answered, is neither.
        answers: list[tuple[str, str | None]] = [("unpriced", "big"), ("failed", None)]
        for rid, answered_by in answers:
            store.append(RequestRecord(
                id=rid, ts=T0 - 300, requested_model="big",
                status="ok" if answered_by else "error",
                http_status=200 if answered_by else 502, pin_state="fresh", stream=False,
                latency_ms=10.0, model=answered_by, cost_usd=None)).result()
    alert = Reports.from_settings(s, clock=lambda: T0).check_budget_alert()
    assert alert["hourly_spend_usd"] == pytest.approx(0.025 + 0.0016)
    assert alert["hourly_cost_unknown_requests"] == 1
    sla = Reports.from_settings(s, clock=lambda: T0).get_sla_report()
    assert sla["budget_cost_unknown_requests"] == 1  # the same hour, the same answers
    # The last 15 minutes (a only) run at 0.025 per 900 s, with 1800 s of the hour to go.
    assert alert["projected_hourly_usd"] == pytest.approx(0.0266 + 0.025 / 900 * 1800)
    assert (alert["status"], alert["budget_usd"], alert["budgets"]) == ("ok", None, [])


def test_budget_alert(reports: Reports) -> None:
    alert = reports.check_budget_alert()
    # This hour (08:00 to 08:30): r1 at 08:20 and r4 at 08:13 settled 0.0266; the last 15
    # minutes (r1 only) run at 0.025 per 900 s, with 1800 s of the hour to go.
    assert alert["hourly_spend_usd"] == pytest.approx(0.0266)
    assert alert["hourly_cost_unknown_requests"] == 0  # the ledger's sum: nothing left out
    assert alert["projected_hourly_usd"] == pytest.approx(0.0266 + 0.025 / 900 * 1800)
    assert alert["utilization"] == pytest.approx(0.266) and alert["hourly_status"] == "ok"
    budgets = {b["account"]: b for b in alert["budgets"]}
    acme, beta = budgets["tenant:acme"], budgets["tenant:beta"]
    assert acme["spent_usd"] == pytest.approx(0.035) and acme["status"] == "warning"
    assert acme["utilization"] == pytest.approx(0.035 / 0.04)
    assert beta["spent_usd"] == pytest.approx(0.0008) and beta["status"] == "critical"
    assert alert["status"] == "critical"
    assert "tenant beta has used 160% of its $0.0005/day budget" in alert["recommendation"]
    acme_only = reports.check_budget_alert("acme")
    assert [b["account"] for b in acme_only["budgets"]] == ["tenant:acme"]
    assert acme_only["status"] == "warning"
    assert "spend is nearing a budget" in acme_only["recommendation"]
    # (the projection by the one rule of dollars, never rounded to 4 places for showing)
    assert (f"(projected {usd_text(acme_only['projected_hourly_usd'])} this hour"
            in acme_only["recommendation"]), acme_only["recommendation"]


def test_a_tenant_only_the_log_names_is_reported_and_one_nobody_names_is_refused(
        reports: Reports, tmp_path: Path) -> None:
    from switchpoint.errors import NotFoundError

    # 'beta' was removed from the config; its requests are still in the log.
    s = load_settings(overrides={"data_dir": str(tmp_path), "models": settings(tmp_path).models,
                                 "tenants": {"acme": {}}}, environ={})
    removed = Reports.from_settings(s, clock=lambda: T0)
    assert removed.cost_report("week", tenant="beta")["total_cost_usd"] == pytest.approx(
        price("small", 1000, 1000))
    assert removed.get_sla_report(24, tenant="beta")["total_requests"] == 1
    assert removed.check_budget_alert("beta")["tenant"] == "beta"  # the same rule as above
    pasted = "sp-0123456789_" + "s3cr3t" * 7
    for report in (lambda t: removed.cost_report("day", tenant=t),
                   lambda t: removed.savings_estimate(period="day", tenant=t),
                   lambda t: removed.get_sla_report(1, tenant=t),
                   lambda t: removed.forecast_cost(1, 1, 1, tenant=t),
                   lambda t: removed.get_cost_optimizations(tenant=t),
                   removed.check_budget_alert):
        for unknown in ("gamma", pasted):
            with pytest.raises(NotFoundError) as info:
                report(unknown)
            message = str(info.value)
            assert info.value.param == "tenant" and len(message) < 300, message
            assert "s3cr3t" not in message
            assert message.endswith('known: "acme", "beta", "default" (default: requests without '
                                    "a tenant)"), message
        with pytest.raises(InvalidInputError) as bad:  # (no tenant's name: longer than any)
            report("x" * 5000)
        assert bad.value.field == "tenant" and too_long(64, 5000) in str(bad.value)
        assert len(str(bad.value)) < 300


def test_many_logged_lambdas_are_named_by_their_range() -> None:
    from switchpoint.governance.reports import _lambdas

    assert _lambdas([0.5, 0.5]) == "λ 0.5"
    assert _lambdas([2.0, 0.0, 2.0]) == "λ 0 and 2"
    assert _lambdas([0.0, 0.1, 0.2, 0.5, 2.0, 0.1]) == "λ 0 to 2 (5 values)"


def test_a_budget_alert_just_after_a_reset_projects_at_the_recent_rate(tmp_path: Path) -> None:
    """Seven seconds after midnight (a new day, a new hour), the rate of spend is that of the
    last quarter of the period, across the reset: measured from the period's start alone,
    one request of those seconds was extrapolated over the whole day and every budget warned
    at every reset."""
    midnight = 1_800_057_600.0  # 2027-01-16T00:00:00Z
    now = midnight + 7
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"acme": {"budgets": ["1/day"],
                             "sla": {"budget_per_hour_usd": 0.1}}}}, environ={})

    def settle(store: SQLiteStore, rid: str, ts: float) -> None:
        store.append(LedgerRecord(ts=ts, reservation_id=rid, kind="settle", amount_usd=0.001,
                                  request_id=rid, tenant="acme", model="small",
                                  provider="openai")).result()

    with SQLiteStore(s.db_path) as store:
        settle(store, "new-day", midnight + 5)
    # A deployment whose log began two seconds ago: its spend is a rate over five minutes.
    young = Reports.from_settings(s, clock=lambda: now).check_budget_alert("acme")
    assert young["budgets"][0]["projected_usd"] == pytest.approx(
        0.001 + 0.001 / 300 * (DAY - 7))
    assert young["budgets"][0]["projection_low_confidence"] is True
    with SQLiteStore(s.db_path) as store:
        for i in range(1, 73):  # $0.001 every ten minutes for the twelve hours before
            settle(store, f"old-{i}", midnight - 600 * i)
    alert = Reports.from_settings(s, clock=lambda: now).check_budget_alert("acme")
    day = alert["budgets"][0]
    assert (day["budget"], day["spent_usd"]) == ("1/day", pytest.approx(0.001))
    # The last six hours: 35 requests before midnight and one after, $0.036 in 21,600 s.
    assert day["projected_usd"] == pytest.approx(0.001 + 0.036 / 21_600 * (DAY - 7))
    assert day["status"] == "ok"
    assert (day["projection_window_seconds"], day["projection_low_confidence"]) == (21_600,
                                                                                    False)
    # The hour: the last 15 minutes hold 23:50 and 00:00:05.
    assert alert["projected_hourly_usd"] == pytest.approx(0.001 + 0.002 / 900 * (HOUR - 7))
    assert alert["projection_window_seconds"] == 900
    assert alert["projection_low_confidence"] is False
    assert (alert["hourly_status"], alert["status"]) == ("ok", "ok")


def test_what_if_over_many_requests_picks_as_the_rule_does_for_each(tmp_path: Path) -> None:
    """A week of traffic is re-routed as arrays, a group of requests at a time: every request
    still gets the model the rule picks for it alone (the lowest expected error + λ·cost,
    ties to the cheaper, then the first named), and is priced as it would be alone."""
    import random

    rng = random.Random(7)
    s = settings(tmp_path)
    names = list(PRICES)
    expected: list[tuple[str, dict[str, float], dict[str, float], float, int, int]] = []
    with SQLiteStore(s.db_path, synchronous="normal") as store:
        for i in range(600):
            pool = rng.sample(names, rng.choice([1, 2, 3]))
            errors = {m: rng.choice([0.1, 0.25, 0.45]) for m in pool}  # many exact ties
            costs = {m: rng.choice([EST[m], EST["mid"]]) for m in pool}
            lam = rng.choice([0.0, 0.5, 2.0])
            model = rng.choice(pool)
            pt, ct = rng.randrange(1, 3000), rng.randrange(1, 1000)
            expected.append((model, errors, costs, lam, pt, ct))
            store.append(DecisionRecord(
                id=f"d{i}", ts=T0 - 60 - i, selected_model=model, cluster_id=0,
                cost_weight=lam, candidates=pool, cache_hit=False, routing_ms=1.0,
                embedding_ms=1.0, policy="cluster", weights_id="w", expected_error=errors[model],
                cost_adjusted_score=0.0, expected_errors=errors, expected_costs=costs))
            store.append(RequestRecord(
                id=f"r{i}", ts=T0 - 60 - i, requested_model="auto", status="ok",
                http_status=200, pin_state="fresh", stream=False, latency_ms=5.0, model=model,
                prompt_tokens=pt, completion_tokens=ct, cost_usd=None if i % 5 == 0 else
                price(model, pt, ct), decision_id=f"d{i}")).result()
    reports = Reports.from_settings(s, clock=lambda: T0)

    def one_by_one(lam: float | None, without: list[str]) -> tuple[dict[str, int], float,
                                                                      float, float]:
        picks: dict[str, int] = {}
        spend = quality = actual = 0.0
        for model, errors, costs, own, pt, ct in expected:
            pool = [m for m in errors if m not in without]
            if not pool:
                continue
            scale = reports.cost_scale(sorted(pool))
            rate = own if lam is None else lam
            pick = min(pool, key=lambda m: (errors[m] + rate * costs[m] / scale, costs[m]))
            picks[pick] = picks.get(pick, 0) + 1
            spend += price(pick, pt, ct)
            actual += price(model, pt, ct)
            quality += 1 - errors[pick]
        return picks, spend, actual, quality

    weights: list[tuple[float | None, list[str]]] = [
        (0.0, []), (0.5, []), (5.0, []), (None, []), (None, ["big"]), (0.5, ["mid", "small"])]
    for weight, without in weights:
        got = reports.what_if(cost_weight=weight, without=without, period="day")
        picks, spend, actual, quality = one_by_one(weight, without)
        assert got["models"] == picks
        assert got["requests"] == sum(picks.values())
        assert got["requests"] + got["unservable_requests"] == len(expected)
        assert got["spend_usd"] == pytest.approx(spend)
        assert got["actual_spend_usd"] == pytest.approx(actual)
        assert got["expected_quality"] == pytest.approx(quality / got["requests"], abs=1e-6)


def test_reports_read_the_log_a_row_at_a_time(tmp_path: Path) -> None:
    """The cost report, the savings, the what-ifs and the SLA report hold a few numbers per
    pool, model or request, not the window's rows: a month of a busy log used to be read whole
    into memory (about 1.3 KB a request)."""
    import tracemalloc

    s = settings(tmp_path)
    n = 12_000
    with SQLiteStore(s.db_path, synchronous="normal") as store:
        futures = []
        for i in range(n):
            model = list(PRICES)[i % 3]
            ts = T0 - 60 - i * 10
            futures.append(store.append(DecisionRecord(
                id=f"d{i}", ts=ts, selected_model=model, cluster_id=0, cost_weight=0.5,
                candidates=list(ERR), cache_hit=False, routing_ms=1.0, embedding_ms=1.0,
                policy="cluster", weights_id="w", expected_error=ERR[model],
                cost_adjusted_score=0.0, key_id=f"k{i % 7}", tenant="acme",
                expected_errors=ERR, expected_costs=EST)))
            futures.append(store.append(RequestRecord(
                id=f"r{i}", ts=ts, requested_model="auto", status="ok", http_status=200,
                pin_state="fresh", stream=False, latency_ms=5.0, model=model,
                prompt_tokens=500, completion_tokens=200, cost_usd=price(model, 500, 200),
                decision_id=f"d{i}", key_id=f"k{i % 7}", tenant="acme",
                charged_usd=price(model, 500, 200))))
        for f in futures:
            f.result(timeout=60)
    pruned_at(tmp_path, T0)  # (the keys' store, their records pruned)
    reports = Reports.from_settings(s, clock=lambda: T0)
    tracemalloc.start()
    try:
        cost = reports.cost_report("month")
        savings = reports.savings_estimate()
        suggestions = reports.get_cost_optimizations(period="month")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        sla = reports.get_sla_report(since_hours=24 * 30)
        sla_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cost["requests"] == cost["answered"] == n
    assert cost["by_model"]["big"]["requests"] == n // 3 and len(cost["by_key"]) == 7
    assert savings["comparison_model"] == "big" and savings["requests"] == n
    assert savings["comparison_cost_usd"] == pytest.approx(n * price("big", 500, 200))
    assert suggestions  # (the log's λ 0.5 is not the cheapest)
    assert sla["total_requests"] == n and sla["avg_latency_ms"] == 5.0
    # Read whole, the rows took about 13 MiB; what the reports hold is the pools' arrays (8
    # bytes per model and request for the what-ifs, about 3 MiB here).
    assert peak < 6 << 20, f"{peak / 2**20:.1f} MiB"
    # The SLA report keeps a latency a request (8 bytes); read whole, about 3 MiB here.
    assert sla_peak < 1 << 20, f"{sla_peak / 2**20:.1f} MiB"


def _strongest_by_hand(rows: list[tuple[float, dict[str, float]]], since: float, until: float,
                       catalog: set[str]) -> tuple[str, float, int]:
    """The strongest model straight from its definition: over the window's decisions that
    weighed the most models, the catalog model every one weighed with the lowest mean."""
    kept = [e for ts, e in rows if since <= ts < until]
    widest = max(len(e) for e in kept)
    kept = [e for e in kept if len(e) == widest]
    counts = {m: sum(m in e for e in kept) for e in kept for m in e}
    seen = max(counts.values())
    means = {m: sum(e[m] for e in kept if m in e) / seen for m, n in counts.items()
             if n == seen and m in catalog}
    best = min(means, key=lambda m: (means[m], m))
    return best, means[best], seen


def test_the_strongest_model_is_read_from_hourly_sums_not_from_every_decision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decisions over three days, some narrowed, some naming a model gone from the catalog, a
    few pruned: the strongest model of any window (whole hours and the hours it cuts into) is
    the one its definition picks, with the same mean and count, read from the hourly sums the
    log keeps as decisions are logged and pruned, not by parsing each decision's JSON."""
    import random

    import switchpoint.governance.reports as reports_module
    from switchpoint.store import retention

    s = settings(tmp_path)
    now = time.time() - 60.0  # (a prune deletes only what is already past)
    rng = random.Random(7)
    rows: list[tuple[float, dict[str, float]]] = []
    with SQLiteStore(s.db_path, synchronous="normal") as store:  # (durability is not tested)
        for i in range(2000):
            ts = now - rng.random() * 3 * DAY
            pool = (["big", "mid", "small", "gone"] if i % 7 else ["small"])
            errors = {m: round(rng.random(), 6) for m in pool}
            rows.append((ts, errors))
            store.append(DecisionRecord(
                id=f"x{i}", ts=ts, selected_model=pool[0], cluster_id=0, cost_weight=0.5,
                candidates=pool, cache_hit=False, routing_ms=1.0, embedding_ms=1.0,
                policy="cluster", weights_id="w", expected_error=errors[pool[0]],
                cost_adjusted_score=0.0, expected_errors=errors,
                expected_costs={m: 0.001 for m in pool})).result()
    # Prune the oldest decisions (as retention does): the sums give them back.
    cutoff = sorted(ts for ts, _ in rows)[50]
    assert retention.prune(s.db_path, cutoff).deleted["decisions"] == 50
    rows = [(ts, e) for ts, e in rows if ts >= cutoff]

    class NoParsing:
        @staticmethod
        def loads(_: str) -> None:
            raise AssertionError("a decision's JSON was parsed in Python")

    monkeypatch.setattr(reports_module, "json", NoParsing)
    reports = Reports.from_settings(s, clock=lambda: now)
    windows = [(now - DAY, now), (now - 2 * DAY - 123.4, now - 7.5), (now - 1800.0, now - 60.0),
               (now - 5 * DAY, now + HOUR), (now - 3 * HOUR - 1234.5, now - 2 * HOUR - 10.0)]
    for since, until in windows:
        best, mean, seen = _strongest_by_hand(rows, since, until, set(PRICES))
        model, why = reports.strongest_model(since, until)
        assert (model, why) == (best, f"lowest mean expected error ({mean:.3f}) over {seen} "
                                      "logged decisions")
    best, mean, seen = _strongest_by_hand(rows, 0.0, now + DAY, set(PRICES))
    assert reports.strongest_model() == (
        best, f"lowest mean expected error ({mean:.3f}) over {seen} logged decisions")
    assert reports.cost_report("day")["savings"]["comparison_model"] == _strongest_by_hand(
        rows, now - DAY, now, set(PRICES))[0]
    # A log from before the hourly sums: read one decision at a time until a switchpoint of
    # this version opens it, which sums what it holds.
    monkeypatch.undo()
    import sqlite3
    conn = sqlite3.connect(s.db_path)
    conn.executescript("DROP TRIGGER decisions_errors_counted; "
                       "DROP TRIGGER decisions_errors_uncounted; DROP TABLE decision_errors; "
                       "DROP INDEX pending_prompt; DROP INDEX pending_tenant_prompt; "
                       "ALTER TABLE pending DROP COLUMN prompt_hash; "  # (what 24 added)
                       "DROP TABLE runtime_models; "  # (what 25 added)
                       "PRAGMA user_version = 19;")
    conn.close()
    since, until = windows[1]
    best, mean, seen = _strongest_by_hand(rows, since, until, set(PRICES))
    expected = (best, f"lowest mean expected error ({mean:.3f}) over {seen} logged decisions")
    assert reports.strongest_model(since, until) == expected
    SQLiteStore(s.db_path).open().close()
    monkeypatch.setattr(reports_module, "json", NoParsing)
    assert reports.strongest_model(since, until) == expected


def test_a_decision_whose_errors_sqlite_cannot_read_is_logged_and_left_out_of_the_sums(
        tmp_path: Path) -> None:
    """An expected error json.dumps writes but SQLite's JSON cannot read (NaN) never costs the
    decision its place in the log; the strongest model is judged on the others."""
    import math

    s = settings(tmp_path)
    with SQLiteStore(s.db_path) as store:
        for i, errors in enumerate(({"big": math.nan, "mid": 0.2, "small": 0.3},
                                    {"big": 0.4, "mid": 0.2, "small": 0.3})):
            store.append(DecisionRecord(
                id=f"nan{i}", ts=T0 - 60, selected_model="mid", cluster_id=0, cost_weight=0.5,
                candidates=list(errors), cache_hit=False, routing_ms=1.0, embedding_ms=1.0,
                policy="cluster", weights_id="w", expected_error=0.2, cost_adjusted_score=0.0,
                expected_errors=errors, expected_costs=EST)).result()
        assert store.decision_stats("w")["total"] == 2
    model, why = Reports.from_settings(s, clock=lambda: T0).strongest_model(T0 - HOUR, T0)
    assert (model, why) == ("mid", "lowest mean expected error (0.200) over 1 logged decisions")


def test_a_forecast_whose_whole_mix_is_of_unknown_cost_does_not_say_it_is_zero(
        reports: Reports) -> None:
    # Every model of the mix unpriced (or gone from the catalog): the tip said "nothing to
    # save: the projected spend is zero", of a spend nobody could project.
    from switchpoint.catalog import Catalog, ModelCard

    catalog = Catalog([ModelCard("other", input_per_mtok=1, output_per_mtok=2)])
    gone = Reports(reports.db_path, reports.settings, catalog=catalog, clock=reports.clock)
    f = gone.forecast_cost(1000, 500, 200)
    assert f["removed_requests_pct"] == 1.0 and f["hourly_cost_usd"] is None
    assert f["daily_cost_usd"] is None and f["monthly_cost_usd"] is None
    assert "zero" not in f["optimization_tip"], f["optimization_tip"]
    assert f["optimization_tip"].startswith("nothing to project: "), f["optimization_tip"]


def test_a_forecast_names_models_gone_from_the_catalog_apart_from_unpriced_ones(
        reports: Reports) -> None:
    # A model a reload took out of the catalog was listed under unpriced_models, as if adding
    # prices to it would let it be forecast: it is gone, and its share of the mix will go to
    # the models there are.
    from switchpoint.catalog import Catalog, ModelCard

    catalog = Catalog([ModelCard("big", input_per_mtok=10, output_per_mtok=30),
                       ModelCard("mid")])  # small: gone
    mixed = Reports(reports.db_path, reports.settings, catalog=catalog, clock=reports.clock)
    f = mixed.forecast_cost(1000, 500, 200)
    assert f["unpriced_models"] == ["mid"] and f["unpriced_requests_pct"] == 0.5
    assert f["removed_models"] == ["small"] and f["removed_requests_pct"] == 0.25
    assert f["breakdown_by_model"]["small"] == {"requests_pct": 0.25,
                                                "cost_per_request_usd": None,
                                                "hourly_cost_usd": None}
    assert f["hourly_cost_usd"] == pytest.approx(1000 * 0.25 * price("big", 500, 200))
    # Every model of the mix of unknown cost: the tip says which is which.
    only_mid = Catalog([ModelCard("mid")])
    tip = Reports(reports.db_path, reports.settings, catalog=only_mid,
                  clock=reports.clock).forecast_cost(1000, 500, 200)["optimization_tip"]
    assert tip == ('nothing to project: the catalog has no prices for "mid" (give it '
                   'input_per_mtok and output_per_mtok), and it no longer holds "big", "small" '
                   "(the mix logged with them will change as the gateway routes over the "
                   "current catalog: forecast again once it has)"), tip
    gone = Reports(reports.db_path, reports.settings,
                   catalog=Catalog([ModelCard("other", input_per_mtok=1, output_per_mtok=2)]),
                   clock=reports.clock).forecast_cost(1000, 500, 200)
    assert gone["unpriced_models"] == [] and gone["unpriced_requests_pct"] == 0
    assert sorted(gone["removed_models"]) == ["big", "mid", "small"]
    assert gone["removed_requests_pct"] == 1.0
    assert "no prices" not in gone["optimization_tip"], gone["optimization_tip"]
    assert gone["optimization_tip"].startswith(
        'nothing to project: the catalog no longer holds "big", "mid", "small"'), (
        gone["optimization_tip"])


def test_a_budget_alert_in_a_deployments_first_seconds_projects_over_five_minutes(
        tmp_path: Path) -> None:
    """A second and a half after the first request, $0.49 of spend was extrapolated over the
    rest of the hour as $0.33 a second (over $1,000 an hour): a rate is measured over
    at least five minutes, the seconds before the logs begin counting as no spend, and the
    alert says the projection rests on a log younger than that."""
    start = T0 - 1.5
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"acme": {"budgets": ["100/day"], "sla": {"budget_per_hour_usd": 50}}}},
        environ={})
    with SQLiteStore(s.db_path) as store:
        store.append(LedgerRecord(ts=start, reservation_id="first", kind="settle",
                                  amount_usd=0.49, request_id="first", tenant="acme",
                                  model="big", provider="openai")).result()
    alert = Reports.from_settings(s, clock=lambda: T0).check_budget_alert("acme")
    to_go = HOUR - 1800  # T0 is 08:30
    assert alert["projected_hourly_usd"] == pytest.approx(0.49 + 0.49 / 300 * to_go)
    assert alert["projected_hourly_usd"] < 5, alert  # not 0.49 / 1.5 * to_go, about $588
    assert alert["projection_window_seconds"] == 300
    assert alert["projection_low_confidence"] is True
    day = alert["budgets"][0]
    assert day["projected_usd"] == pytest.approx(0.49 + 0.49 / 300 * (DAY - 8.5 * HOUR))
    assert (day["projection_window_seconds"], day["projection_low_confidence"]) == (300, True)
    # The projection passes no budget here: the status is the spend's, not a false alarm.
    assert (alert["hourly_status"], day["status"], alert["status"]) == ("ok", "ok", "ok")
    # Five minutes on, the rate is over the logs themselves, and says so.
    later = Reports.from_settings(s, clock=lambda: start + 400).check_budget_alert("acme")
    assert later["projection_window_seconds"] == pytest.approx(400)
    assert later["projection_low_confidence"] is False


def test_a_budget_alert_over_many_keys_reads_the_ledger_a_few_times(tmp_path: Path) -> None:
    """Each key's budget is projected from its own recent spend, and the ledger is read a few
    times for them all: the alert opened the log once per budget (3,000 keys with four budgets
    each took 23 s of the service's time)."""
    from switchpoint.governance.keys import KeySpec, KeyStore

    now = T0
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"acme": {}, "beta": {}}}, environ={})
    with KeyStore.in_dir(tmp_path) as keys:
        made = [keys.create(KeySpec(tenant="acme" if i % 2 else "beta",
                                    budgets=("1/day", "1/hour"))).record.id
                for i in range(300)]
    spenders = {made[1]: 0.006, made[2]: 0.003, made[299]: 0.009}
    with SQLiteStore(s.db_path) as store:
        store.append(LedgerRecord(ts=now - 2 * DAY, reservation_id="old", kind="settle",
                                  amount_usd=0.5, request_id="old", tenant="beta",
                                  model="small", provider="openai")).result()
        for key_id, usd in spenders.items():
            store.append(LedgerRecord(ts=now - 600, reservation_id=key_id, kind="settle",
                                      amount_usd=usd, request_id=key_id, key_id=key_id,
                                      tenant="acme", model="small",
                                      provider="openai")).result()

    class Counting(Reports):
        reads = 0

        def _read(self) -> Any:
            Counting.reads += 1
            return super()._read()

    reports = Counting.from_settings(s, clock=lambda: now)
    alert = reports.check_budget_alert()
    assert len(alert["budgets"]) == 600
    assert Counting.reads < 10
    day_end = 1_800_057_600.0  # (T0 is 08:30 on the day that ends then)
    for b in alert["budgets"]:
        key_id = b["account"].removeprefix("key:")
        usd = spenders.get(key_id, 0.0)
        if b["period"] == "day":  # the last quarter of a day: six hours
            assert b["projected_usd"] == pytest.approx(
                b["spent_usd"] + usd / (DAY / 4) * (day_end - now)), b
        else:  # the last quarter of an hour: 900 s, with 1800 s of it to go
            assert b["projected_usd"] == pytest.approx(b["spent_usd"] + usd / 900 * 1800), b
    # One tenant's alert names its keys' budgets alone, the same way.
    acme = Counting.from_settings(s, clock=lambda: now).check_budget_alert("acme")
    assert {b["account"] for b in acme["budgets"]} == {
        f"key:{k}" for i, k in enumerate(made) if i % 2}
    assert [b["projected_usd"] > 0 for b in acme["budgets"]].count(True) == 4  # 1 and 299


def test_after_a_clock_step_back_the_reports_count_each_charge_in_its_own_period(
        tmp_path: Path) -> None:
    """Charges booked before the clock was stepped back are dated later than now: those dated
    later in the hour under way count in the hour's spend the alert and the SLA report give,
    as the ledger routing checks counts them (they read the hour up to now, and said less);
    none dated after a period's end counts in it, in the reports or the ledger; the cost
    report sums what is dated in its window, no later."""
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"acme": {"budgets": ["1/day"]}},
        "sla": {"budget_per_hour_usd": 0.1}}, environ={})
    day_end = period_end("day", T0)
    charges = [("before", T0 - 600, 0.01),          # 08:20, before now
               ("later-this-hour", T0 + 600, 0.02),  # 08:40, booked before the step back
               ("next-hour", T0 + HOUR, 0.04),      # 09:30, the same day
               ("tomorrow", day_end + 60, 0.08)]
    with SQLiteStore(s.db_path) as store:
        for rid, ts, usd in charges:
            store.append(RequestRecord(
                id=rid, ts=ts, requested_model="small", status="ok", http_status=200,
                pin_state="fresh", stream=False, latency_ms=10.0, model="small",
                prompt_tokens=1, completion_tokens=1, cost_usd=usd, tenant="acme",
                charged_usd=usd)).result()
            store.append(LedgerRecord(ts=ts, reservation_id=rid, kind="settle",
                                      amount_usd=usd, request_id=rid, tenant="acme",
                                      model="small", provider="openai")).result()
    # The service's start, with the clock at T0, rebuilds the ledger routing checks.
    live = Ledger(lambda: T0)
    rebuild(live, s.db_path, serving=True)
    assert live.spent(TOTAL, "hour") == pytest.approx(0.03)
    assert live.spent("tenant:acme", "day") == pytest.approx(0.07)
    reports = Reports.from_settings(s, clock=lambda: T0)
    alert = reports.check_budget_alert()
    assert alert["hourly_spend_usd"] == pytest.approx(0.03)
    assert alert["utilization"] == pytest.approx(0.3)
    assert alert["budgets"][0]["account"] == "tenant:acme"
    assert alert["budgets"][0]["spent_usd"] == pytest.approx(0.07)
    assert reports.get_sla_report(1)["budget_utilization"] == pytest.approx(0.3)
    # The cost report's day ends now, or at its until.
    assert reports.cost_report("day")["charged_usd"] == pytest.approx(0.01)
    hour_end = period_end("hour", T0)
    assert reports.cost_report("day", until=hour_end)["charged_usd"] == pytest.approx(0.03)
    # Without a budget nothing is settled: the hour is read from the request log alike.
    bare = load_settings(overrides={"data_dir": str(tmp_path / "bare"), "models": s.models},
                         environ={})
    with SQLiteStore(bare.db_path) as store:
        for rid, ts, usd in charges:
            store.append(RequestRecord(
                id=rid, ts=ts, requested_model="small", status="ok", http_status=200,
                pin_state="fresh", stream=False, latency_ms=10.0, model="small",
                prompt_tokens=1, completion_tokens=1, cost_usd=usd)).result()
    from_log = Reports.from_settings(bare, clock=lambda: T0).check_budget_alert()
    assert from_log["hourly_spend_usd"] == pytest.approx(0.03)
    assert from_log["hourly_cost_unknown_requests"] == 0


def test_a_budget_of_0_is_wholly_used_and_alerts_only_once_something_is_spent(
        tmp_path: Path) -> None:
    """A budget of 0 blocks all spend on purpose: its utilization is 1.0 (it read 0.0 while
    the λ curve read 1.0) and its alert is ok while nothing is spent against it (it warned
    for ever, projected spend of 0 'reaching' its limit of 0), critical once something is."""
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"shut": {"budgets": ["0/day"]}}}, environ={})
    alert = Reports.from_settings(s, clock=lambda: T0).check_budget_alert("shut")
    [shut] = alert["budgets"]
    assert (shut["budget"], shut["utilization"], shut["used_fraction"]) == ("0/day", 1.0, 1.0)
    assert (shut["status"], alert["status"]) == ("ok", "ok"), alert
    assert alert["recommendation"] == "spend is within every budget; nothing to do"
    with SQLiteStore(s.db_path) as store:  # (spent before the budget was lowered to 0)
        store.append(LedgerRecord(ts=T0 - 60, reservation_id="r", kind="settle",
                                  amount_usd=0.001, request_id="r", tenant="shut",
                                  model="small", provider="openai")).result()
    alert = Reports.from_settings(s, clock=lambda: T0).check_budget_alert("shut")
    [shut] = alert["budgets"]
    assert (shut["utilization"], shut["status"], alert["status"]) == (1.0, "critical",
                                                                      "critical")
    # A reset allows it no spend either: the way out is raising it, not waiting.
    assert alert["recommendation"] == (
        "tenant shut's $0/day budget allows no spend, yet $0.001000 was spent or held against "
        "it this period: every request that may cost anything is refused (429 "
        "budget_exceeded), now and after the budget resets alike; raise the budget to allow "
        "spend, or leave it at 0 to keep tenant shut from spending")
    assert "until it resets" not in alert["recommendation"]


def test_a_budget_of_0_that_recent_spend_would_reach_says_a_reset_allows_none_either(
        tmp_path: Path) -> None:
    """Spent just before its period began, a budget of 0 warns; its recommendation does not
    speak of nearing a budget or of levers that slow its filling: it allows no spend."""
    s = load_settings(overrides={
        "data_dir": str(tmp_path),
        "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                   for m, (i, o) in PRICES.items()],
        "tenants": {"shut": {"budgets": ["0/hour"]}}}, environ={})
    top = T0 + 1800  # (09:00:00, an hour's start)
    with SQLiteStore(s.db_path) as store:
        store.append(LedgerRecord(ts=top - 300, reservation_id="r", kind="settle",
                                  amount_usd=0.001, request_id="r", tenant="shut",
                                  model="small", provider="openai")).result()
    alert = Reports.from_settings(s, clock=lambda: top).check_budget_alert("shut")
    [shut] = alert["budgets"]
    assert (shut["spent_usd"], shut["status"], alert["status"]) == (0, "warning", "warning")
    assert alert["hourly_status"] == "ok"
    assert alert["recommendation"].startswith(
        "tenant shut's $0/hour budget allows no spend, yet at the recent rate of spend "
        f"{usd_text(shut['projected_usd'])} would go against it by the period's end: every request "
        "that may cost anything is refused (429 budget_exceeded), now and after the budget "
        "resets alike; raise the budget to allow spend"), alert["recommendation"]
    assert "nearing" not in alert["recommendation"]


def test_an_alerts_level_is_one_rule_for_every_budget_and_the_hourly_one() -> None:
    from switchpoint.governance.reports import alert_level

    assert [alert_level(used, 1.0, used, 0.8) for used in (0.0, 0.79, 0.8, 1.0, 1.5)] == [
        "ok", "ok", "warning", "critical", "critical"]
    assert alert_level(0.1, 1.0, 1.0, 0.8) == "warning"  # projected to reach it
    assert [alert_level(0.0, 0.0, 0.0, 0.8), alert_level(0.0, 0.0, 0.01, 0.8),
            alert_level(0.01, 0.0, 0.01, 0.8)] == ["ok", "warning", "critical"]


def test_a_forecast_lists_the_models_of_unknown_cost_bounded(tmp_path: Path) -> None:
    # The tip listed at most ten models it could not price, by a rule of its own: it lists
    # them as every message lists names, the first 20 and how many more.
    from switchpoint.catalog import Catalog, ModelCard

    s = settings(tmp_path)
    with SQLiteStore(s.db_path) as store:
        for i in range(25):
            store.append(RequestRecord(
                id=f"r{i}", ts=T0 - 60, requested_model=f"gone-{i:02}", status="ok",
                http_status=200, pin_state="fresh", stream=False, latency_ms=10.0,
                model=f"gone-{i:02}", prompt_tokens=10, completion_tokens=10)).result()
    catalog = Catalog([ModelCard("other", input_per_mtok=1, output_per_mtok=2)])
    tip = Reports(s.db_path, s, catalog=catalog, clock=lambda: T0).forecast_cost(
        10, 100, 100)["optimization_tip"]
    shown = ", ".join(f'"gone-{i:02}"' for i in range(20))
    assert tip.startswith(f"nothing to project: the catalog no longer holds {shown} and 5 "
                          "more (the mix logged with them will change"), tip


def test_an_unknown_tenant_lists_the_known_ones_bounded(tmp_path: Path) -> None:
    s = load_settings(overrides={"data_dir": str(tmp_path),
                                 "tenants": {f"t{i:02}": {} for i in range(30)}}, environ={})
    SQLiteStore(s.db_path).close()
    with pytest.raises(NotFoundError) as info:
        Reports.from_settings(s, clock=lambda: T0).check_tenant("nobody")
    shown = ", ".join(['"default"', *(f'"t{i:02}"' for i in range(19))])
    assert str(info.value).endswith(f"known: {shown} and 11 more (default: requests without "
                                    "a tenant)"), str(info.value)
