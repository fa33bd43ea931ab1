"""The routing answer and a policy swap's or reload's answer match the schemas the OpenAPI
document publishes for them, each field of which some answer needs: a routing answer of a
service that governs nothing and learns nothing (its first eight fields, and the prompt's
hash), and of one with keys, tenants and an experiment (every field); a policy swap, and a
reload."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import learning_server, post
from tests.integration.published_schema import Published

ADMIN = "a" * 32
GOVERNED = """auth: keys
admin_token_env: ADMIN_TOKEN
tenants:
  acme: {budgets: [50/month]}
experiments:
  thrift:
    arms:
      control: {}
      thrifty: {cost_weight: 5}
"""
# The seed contract's fields, and the log's name for the decision.
ALWAYS = {"selected_model", "cluster_id", "expected_error", "cost_adjusted_score", "all_scores",
          "cache_hit", "usage", "decision_id"}


def test_routing_answers_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path / "plain") as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        assert published.schema_name("POST", "/v1/route") == "RouteResponse"
        plain = published.valid("POST", "/v1/route",
                                post(server, "/v1/route", {"prompt": math_prompt(1),
                                                           "cost_weight": 0.5}))
        assert set(plain) == ALWAYS | {"prompt_hash"}
        assert set(plain["usage"]) == {"routing_ms", "embedding_ms"}
        again = published.valid("POST", "/v1/route",
                                post(server, "/v1/route", {"prompt": math_prompt(1),
                                                           "cost_weight": 0.5}))
        assert again["cache_hit"] is True

    with learning_server(fake, tmp_path / "governed", GOVERNED,
                         environ={"ADMIN_TOKEN": ADMIN}) as server:
        made = post(server, "/v1/router/keys", {"tenant": "acme"}, ADMIN)
        assert made.status_code == 201, made.text
        governed = published.valid("POST", "/v1/route",
                                   post(server, "/v1/route", {"prompt": math_prompt(2)},
                                        made.json()["key"]))
        assert set(governed) > ALWAYS and governed["experiment"] == "thrift"
        assert governed["source"] == "router" and governed["budget_pressure"] is None  # (no curve)

        assert published.schema_name("POST", "/v1/router/policy/{name}") == "SwapResponse"
        assert published.schema_name("POST", "/v1/router/reload") == "SwapResponse"
        swapped = published.valid("POST", "/v1/router/policy/{name}",
                                  post(server, "/v1/router/policy/knn", None, ADMIN))
        assert (swapped["previous_policy"], swapped["policy"]) == ("cluster", "knn")
        reloaded = published.valid("POST", "/v1/router/reload",
                                   post(server, "/v1/router/reload", None, ADMIN))
        assert reloaded["keys_affected"] == [] and reloaded["keys_note"] is None
        published.each_field_needed(["RouteResponse", "RouteUsage", "SwapResponse"])
