"""A catalog model without prices, through a real server and the official ``openai`` client.

What it costs is unknown, not free: its answers carry ``usage.cost: null`` and no
``x-switchpoint-cost``, the request log keeps no cost, and ``/v1/router/stats``, the cost report
and the metrics count its answers apart instead of adding 0. A budget cannot hold what such a
model costs, so a request a budget watches (a key's, its tenant's or the gateway's) never goes
to it: naming it is a 403 that changes no spend, and ``auto`` chooses among the priced models.
A config whose budget could only ever watch such a model is refused at load.

Before: its answers said ``usage.cost: 0.0`` and ``x-switchpoint-cost: 0``, the reports summed
them as free, and a key with a $0.000001 budget could call it without limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.errors import ConfigError
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, GATEWAY, KEYS, client, log_entry, new_key, user
from tests.integration.servers import ThreadServer, thread_server

ADMIN_TOKEN = "admin-secret-token-unpriced"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def catalog(fake: FakeProviderProcess) -> str:
    return f"""models:
  - {{name: cheap, profile: gpt-3.5-turbo-1106, base_url: "{fake.openai_base_url}",
     api_key_env: CHEAP_KEY, input_per_mtok: 0.5, output_per_mtok: 1.5}}
  - {{name: gratis, profile: mistralai/mistral-7b-chat, base_url: "{fake.openai_base_url}",
     api_key_env: CHEAP_KEY}}
"""


GOVERNANCE = """auth: keys
admin_token_env: SP_TEST_ADMIN
tenants:
  spendy: {budgets: [1/day]}
  open: {}
"""


@pytest.fixture(scope="module")
def server(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ThreadServer]:
    root = tmp_path_factory.mktemp("unpriced")
    config = root / "switchpoint.yaml"
    config.write_text(catalog(gw_fake) + f"data_dir: {root / 'data'}\n" + GATEWAY + GOVERNANCE,
                      encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as running:
        yield running



def spent(server: ThreadServer) -> float:
    db = Path(server.service.gateway.settings.data_dir) / "switchpoint.db"
    with sqlite3.connect(db) as conn:
        (total,) = conn.execute("SELECT coalesce(sum(amount_usd), 0) FROM spend "
                                "WHERE kind = 'settle'").fetchone()
    conn.close()
    return float(total)


def test_an_unpriced_answer_says_its_cost_is_unknown_everywhere(server: ThreadServer) -> None:
    key = new_key(server, ADMIN, "open")  # no budget watches it: it may use the unpriced model
    raw = client(server, key).chat.completions.with_raw_response.create(
        model="gratis", messages=user("What is 2 + 2?"))
    answer = raw.parse()
    assert answer.model == "gratis" and answer.usage is not None
    assert answer.usage.total_tokens > 0
    assert answer.usage.model_extra is not None and answer.usage.model_extra["cost"] is None
    assert "x-switchpoint-cost" not in raw.headers
    entry = log_entry(server, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
    assert entry["model"] == "gratis" and entry["prompt_tokens"] > 0
    assert entry["cost_usd"] is None
    stream = client(server, key).chat.completions.create(
        model="gratis", messages=user("Stream it"), stream=True,
        stream_options={"include_usage": True})
    usages = [c.usage for c in stream if c.usage is not None]
    assert len(usages) == 1 and usages[0].model_extra is not None
    assert usages[0].model_extra["cost"] is None
    # A priced model's answer still says what it cost.
    priced = client(server, key).chat.completions.with_raw_response.create(
        model="cheap", messages=user("And 3 + 3?"))
    assert priced.parse().usage.model_extra["cost"] > 0  # type: ignore[union-attr,index]
    assert float(priced.headers["x-switchpoint-cost"]) > 0

    stats = httpx.get(f"{server.base}/v1/router/stats", headers=ADMIN).json()["requests"]
    assert stats["by_model"]["gratis"]["cost_unknown_requests"] >= 2
    assert stats["by_model"]["cheap"]["cost_unknown_requests"] == 0
    assert stats["cost_unknown_requests"] >= 2
    report = httpx.get(f"{server.base}/v1/router/report/cost", params={"tenant": "open"},
                       headers=ADMIN).json()
    assert report["cost_unknown_requests"] == report["by_model"]["gratis"]["requests"] >= 2
    assert report["by_model"]["gratis"]["cost_unknown_requests"] >= 2
    assert report["by_model"]["cheap"]["cost_unknown_requests"] == 0
    # The average is over the answers of known cost (here: the one priced answer's).
    assert report["avg_cost_per_request_usd"] == pytest.approx(report["total_cost_usd"])
    metrics = httpx.get(f"{server.base}/metrics", headers=ADMIN).text
    assert 'switchpoint_chat_cost_unknown_total{model="gratis"}' in metrics


@pytest.mark.parametrize(("tenant", "budget"), [("spendy", None), ("open", "0.000001/day")])
def test_a_budgeted_key_cannot_spend_through_an_unpriced_model(
        server: ThreadServer, tenant: str, budget: str | None) -> None:
    key = new_key(server, ADMIN, tenant, **({"budget": budget} if budget else {}))
    before = spent(server)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client(server, key).chat.completions.create(model="gratis", messages=user("free?"))
    message = info.value.message
    assert '"gratis" has no prices' in message and "input_per_mtok" in message, message
    # auto, narrowed to the unpriced model alone, has nothing to choose: the error names the
    # list that narrowed it, the body's or the header's (the header's when its own names no
    # priced model, whatever the body's adds).
    for body, headers, param in (({"models": ["gratis"]}, {}, "models"),
                                 ({}, {"x-switchpoint-models": "gratis"},
                                  "x-switchpoint-models"),
                                 ({"models": ["gratis", "cheap"]},
                                  {"x-switchpoint-models": "gratis"}, "x-switchpoint-models")):
        with pytest.raises(openai.PermissionDeniedError) as info:
            client(server, key).chat.completions.create(
                model="auto", messages=user("free?"), extra_body=body, extra_headers=headers)
        error = info.value.response.json()["error"]
        assert error["param"] == param, error
        assert error["message"].startswith(f'{param}: "gratis" has no prices'), error
    # Nor the routing API narrowed to it: its error names the field that narrowed it.
    narrowed = httpx.post(f"{server.base}/v1/route",
                          json={"prompt": "free?", "available_models": ["gratis"]},
                          headers={"authorization": f"Bearer {key}"})
    assert narrowed.status_code == 403, narrowed.text
    error = narrowed.json()["error"]
    assert error["param"] == "available_models", error
    assert error["message"].startswith('available_models: "gratis" has no prices'), error
    # The routing API does not choose it either.
    for _ in range(3):
        decision = httpx.post(f"{server.base}/v1/route", json={"prompt": user("hi")[0][
            "content"], "cost_weight": 5}, headers={"authorization": f"Bearer {key}"}).json()
        assert decision["selected_model"] == "cheap", decision
    assert spent(server) == before  # nothing was charged, nothing was called
    if budget is None:
        # auto chooses among the priced models, at any λ (the unpriced one looked free).
        answer = client(server, key).chat.completions.create(
            model="auto", messages=user("Cheapest, please"), max_tokens=16,
            extra_headers={"x-switchpoint-cost-weight": "100"})
        assert answer.model == "cheap"
        assert answer.usage is not None and answer.usage.model_extra is not None
        assert answer.usage.model_extra["cost"] > 0
        assert spent(server) > before
    refused = [e for e in httpx.get(f"{server.base}/v1/router/requests",
                                    params={"limit": 100}, headers=ADMIN).json()["data"]
               if e["status"] == "refused" and e["key_id"] == key[3:13]]
    assert len(refused) == 4 and all(e["charged_usd"] is None for e in refused)


@pytest.mark.parametrize(("extra", "where"), [
    ("budgets: {models: {gratis: [5/day]}}\n", "budgets.models.gratis"),
    ("budgets: {providers: {openai-compatible: [5/day]}}\n",
     "budgets.providers.openai-compatible"),
    ("tenants: {acme: {budgets: [5/day], models: [cheap, gratis]}}\n", "tenants.acme.models[1]"),
])
def test_a_budget_that_could_only_watch_an_unpriced_model_is_refused_at_load(
        gw_fake: FakeProviderProcess, tmp_path: Path, extra: str, where: str) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(catalog(gw_fake) + extra, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert where in str(info.value) and '"gratis" has no prices' in str(info.value)
    assert "0 for a free model" in str(info.value)
