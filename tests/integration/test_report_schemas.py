"""The reports' answers match the schemas the OpenAPI document publishes for them, each field of
which some answer needs: the cost report and the savings (of every tenant, and of one), the
SLA report (of a tenant with its own SLA, and of the gateway, which has none), the forecast
(with a model of the mix that has no prices) and the suggestions (none before any traffic,
then those the logged traffic gives). Each report, budget, tenant and stats route publishes
the 503 it answers: the files it reads (the request log, keys.db) unusable, or the service
closing; never the router still loading its weights, which none of them waits for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt, poem_prompt
from tests.integration.learning_env import chat, get, learning_server, post
from tests.integration.published_schema import Published

ADMIN = "a" * 32
EXTRA = """auth: keys
admin_token_env: ADMIN_TOKEN
tenants:
  acme: {budgets: [50/month], sla: {max_latency_ms: 5000, budget_per_hour_usd: 1000}}
  lab: {rpm: 1000}
"""
# A model without prices, which auto never picks: its share of the mix has no cost.
UNPRICED = ('  - {name: free, profile: cheap, base_url: "{base}", api_key_env: FAKE_KEY,\n'
            '     auto: false}\n')
SCHEMAS = {"cost": "CostReport", "savings": "SavingsReport", "sla": "SLAReport",
           "forecast": "ForecastReport", "suggest": "SuggestionList"}
FORECAST = {"requests_per_hour": 100, "avg_input_tokens": 500, "avg_output_tokens": 200}
# Each route's published 503 begins with the files it reads (None: it reads none).
UNAVAILABLE = {"/v1/router/tenants": None, "/v1/router/budgets": "keys.db in",
               "/v1/router/budget/alert": "keys.db or switchpoint.db",
               "/v1/router/report/cost": "keys.db or switchpoint.db",
               **{f"/v1/router/report/{name}": "switchpoint.db (the request and feedback log) in"
                  for name in ("savings", "sla", "forecast", "suggest")},
               "/v1/router/stats": "switchpoint.db (the request and feedback log) in"}


def test_the_reports_validate_against_the_published_schema_and_publish_their_503(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXTRA, environ={"ADMIN_TOKEN": ADMIN},
                         more_models=UNPRICED) as server:
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        for path, files in UNAVAILABLE.items():
            about = document["paths"][path]["get"]["responses"]["503"]["description"]
            assert "loading" not in about and "service_closing: the service is shutting down" \
                in about, (path, about)
            if files is None:
                assert about.startswith("service_closing") and "reads no file" in about, about
            else:
                assert about.startswith(f"storage_unavailable: {files}"), (path, about)
                assert "damaged (x-should-retry: false" in about and "written" not in about
        published = Published(document)
        for name, schema in SCHEMAS.items():
            assert published.schema_name("GET", f"/v1/router/report/{name}") == schema

        def report(name: str, **params: object) -> dict[str, Any]:
            path = f"/v1/router/report/{name}"
            return published.valid("GET", path, get(server, path, ADMIN, **params))

        # An empty list says why, without changing data for a client that reads only it.
        assert report("suggest") == {
            "data": [], "routed_requests": 0,
            "note": "no answered auto request was logged in the last week (the suggestions "
                    "re-route the logged auto traffic); ask again once the gateway has routed "
                    "some"}
        made = post(server, "/v1/router/keys", {"tenant": "acme", "cost_weight": 0}, ADMIN)
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        for n in range(6):
            chat(server, math_prompt(n), key=key)
            chat(server, poem_prompt(n), key=key)
        lab = post(server, "/v1/router/keys", {"tenant": "lab"}, ADMIN).json()["key"]
        chat(server, math_prompt(7), key=lab, model="free")  # (no budget watches lab)

        every = report("cost", period="week")
        assert every["requests"] == 13 and every["cost_unknown_requests"] == 1
        assert every["by_model"]["free"]["cost_unknown_requests"] == 1
        assert set(every["by_tenant"]) == {"acme", "lab"}
        acme = report("cost", tenant="acme", comparison_model="cheap")
        assert acme["savings"]["basis"] == "given" and acme["savings"]["savings_usd"] < 0
        savings = report("savings")
        assert savings["comparison_model"] == "strong" and savings["unpriced_requests"] == 1
        own = report("sla", tenant="acme")
        assert own["sla"]["max_latency_ms"] == 5000 and own["sla"]["min_quality_score"] is None
        assert own["total_requests"] == 12 and own["budget_utilization"] is not None
        gateway = report("sla")
        assert gateway["sla"] is None and gateway["budget_utilization"] is None
        forecast = report("forecast", **FORECAST)
        assert forecast["unpriced_models"] == ["free"]
        assert forecast["breakdown_by_model"]["free"]["hourly_cost_usd"] is None
        # The key routed at λ 0: a higher λ sends the poems to cheap at little loss.
        suggested = report("suggest")
        assert [s["kind"] for s in suggested["data"]] == ["cost_weight"]
        assert suggested["routed_requests"] == 12 and suggested["note"] is None
        # The lab tenant asked a named model alone: nothing to re-route, and it says so.
        over_lab = report("suggest", tenant="lab", period="day")
        assert (over_lab["data"], over_lab["routed_requests"]) == ([], 0), over_lab
        assert over_lab["note"].startswith("no answered auto request was logged in the last day")
        published.each_field_needed([*SCHEMAS.values(), "CostShare", "ModelCost", "SLABreaches",
                                     "SLAView", "ModelForecast", "Suggestion", "WhatIf"])
