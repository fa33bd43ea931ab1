"""The admin routes' answers match the schemas the OpenAPI document publishes for them, each
field of which some answer needs: the models' health (before any call, then with a model
failing, one whose circuit is open and one an upstream's Retry-After keeps out) and its
reset; the tenants (one with every setting, one with hardly any), the budget alert (quiet,
then critical, a page at a time), the budget pressure of a routing answer (of the caller's own
budget, and of one shared) and the keys a reload affects; the reset's refusal of a body, as
published."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from switchpoint._messages import one_of
from switchpoint.learning.tenant_memory import Fallback
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, get, learning_server, post
from tests.integration.published_schema import Published

# A value quoted as Python writes it ('always', ''), not as JSON does ("always", "").
_PYTHON_QUOTED = re.compile(r"(?<!\w)'[^'\s]*'(?!\w)")


def _descriptions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from _descriptions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _descriptions(item)


def test_model_health_and_its_reset_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        assert published.schema_name("GET", "/v1/router/health") == "HealthSnapshot"
        assert published.schema_name("POST", "/v1/router/health/reset") == "HealthSnapshot"
        fresh = published.valid("GET", "/v1/router/health", get(server, "/v1/router/health"))
        assert set(fresh["models"]) == {"strong", "runner", "cheap"}
        assert fresh["models"]["cheap"]["success_rate"] is None

        fake.script("cheap", *["500"] * 6)  # its circuit opens at the 5th failure in a row
        fake.script("strong", "429:retry_after=30")  # kept out 30 s, not waited for

        def ask(model: str, n: int) -> int:
            return post(server, "/v1/chat/completions", {
                "model": model, "messages": [{"role": "user", "content": math_prompt(n)}]}
                        ).status_code

        assert [ask("cheap", n) for n in range(3)] == [502, 502, 502]  # two tries each
        assert ask("strong", 3) == 429
        chat(server, math_prompt(4), model="runner")
        tried = published.valid("GET", "/v1/router/health", get(server, "/v1/router/health"))
        cheap, strong = tried["models"]["cheap"], tried["models"]["strong"]
        assert cheap["circuit"] == "open" and cheap["retry_in_s"] > 0
        assert cheap["recent_errors"][0]["kind"] == "server_error"
        assert strong["rate_limited_for_s"] > 0
        assert tried["models"]["runner"]["latency_ewma_ms"] is not None

        reset = published.valid("POST", "/v1/router/health/reset",
                                post(server, "/v1/router/health/reset"))
        assert reset["models"]["cheap"]["circuit"] == "closed"
        published.each_field_needed(["HealthSnapshot", "ModelHealth", "HealthError",
                                     "BreakerSettings"])


def test_a_body_sent_to_the_health_reset_is_refused_as_it_publishes_and_resets_nothing(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # It takes no body, as the other routes that take none: one that means something
    # ({"model": "cheap"}, as if it reset one model) is a 400, not answered as if unsaid.
    with learning_server(fake, tmp_path, extra="max_request_bytes: 1024\n") as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        described = published.document["paths"]["/v1/router/health/reset"]["post"][
            "responses"]
        assert described["400"]["description"].startswith(
            "invalid_request (param body): a body was sent to a route that takes none (an "
            "empty one, or {}, is fine)"), described["400"]
        assert "request_too_large" in described["413"]["description"]
        fake.script("cheap", *["500"] * 6)  # its circuit opens at the 5th failure in a row
        for n in range(3):
            assert post(server, "/v1/chat/completions", {"model": "cheap", "messages": [
                {"role": "user", "content": math_prompt(n)}]}).status_code == 502
        url = f"{server.base}/v1/router/health/reset"
        for body in (b'{"model": "cheap"}', b"not json", b"[]"):
            error = published.valid("POST", "/v1/router/health/reset",
                                    httpx.post(url, content=body, timeout=15), 400)["error"]
            assert (error["code"], error["param"]) == ("invalid_request", "body"), error
            assert error["message"] == ("body: POST /v1/router/health/reset takes no body; "
                                        "send the request without one"), error
        error = published.valid("POST", "/v1/router/health/reset",
                                httpx.post(url, content=b"{" + b" " * 2048 + b"}", timeout=15),
                                413)["error"]
        assert (error["code"], error["param"]) == ("request_too_large", "body"), error
        health = get(server, "/v1/router/health").json()
        assert health["models"]["cheap"]["circuit"] == "open"  # nothing was reset
        for body in (b"", b"{}", b" \r\n"):
            reset = published.valid("POST", "/v1/router/health/reset",
                                    httpx.post(url, content=body, timeout=15))
            assert reset["models"]["cheap"]["circuit"] == "closed"


NO_BODY = ("invalid_request (param body): a body was sent to a route that takes none (an empty "
           "one, or {}, is fine); send the request without one.")
NO_QUERY = ("invalid_request (param the query parameter's name): the query string names a "
            "parameter, and the route takes none; send the request without a query string.")


def test_the_routes_that_take_no_body_or_no_query_publish_their_refusal(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # A body sent to a route that takes none and a query parameter sent to a route that takes
    # none are each a 400 naming what was sent; the document said only "Malformed or invalid
    # request" (or, for /health, nothing of a query parameter).
    with learning_server(fake, tmp_path) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        paths = published.document["paths"]

        def described(method: str, path: str) -> str:
            description: str = paths[path][method]["responses"]["400"]["description"]
            return description

        for method, path in (("post", "/v1/router/reload"), ("post", "/v1/router/policy/{name}"),
                             ("post", "/v1/router/keys/{key_id}/revoke"),
                             ("delete", "/v1/router/keys/{key_id}"),
                             ("delete", "/v1/router/experiments/{name}"),
                             ("post", "/v1/router/health/reset")):
            assert NO_BODY in described(method, path), (method, path)
            assert NO_QUERY in described(method, path), (method, path)
        for path in ("/health", "/metrics", "/v1/router/health", "/v1/router/experiments"):
            assert NO_QUERY in described("get", path), path
            assert NO_BODY not in described("get", path), path
        # Not on a route that takes a body or a query parameter, nor on OpenAI's, which take any.
        for method, path in (("post", "/v1/route"), ("get", "/v1/router/requests"),
                             ("post", "/v1/router/experiments/{name}/promote"),
                             ("get", "/v1/models"), ("post", "/v1/chat/completions")):
            assert NO_BODY not in described(method, path), (method, path)
        for method, path in (("get", "/v1/router/requests"), ("get", "/v1/models"),
                             ("post", "/v1/chat/completions")):
            assert NO_QUERY not in described(method, path), (method, path)
        # As answered.
        error = published.valid("GET", "/health", httpx.get(f"{server.base}/health?x=1",
                                                              timeout=15), 400)["error"]
        assert (error["code"], error["param"]) == ("invalid_request", "x"), error
        for method, path, url in (("POST", "/v1/router/reload", "/v1/router/reload"),
                                  ("DELETE", "/v1/router/experiments/{name}",
                                   "/v1/router/experiments/ab1")):
            answer = httpx.request(method, f"{server.base}{url}", content=b'{"weights": "w"}',
                                   timeout=15)
            error = published.valid(method, path, answer, 400)["error"]
            assert (error["code"], error["param"]) == ("invalid_request", "body"), error


ADMIN = "a" * 32
TENANTS = """auth: keys
admin_token_env: ADMIN_TOKEN
tenants:
  acme: {models: [strong, cheap, auto], cost_weight: 0.2, budgets: [50/month],
         rpm: 100, tpm: 100000, budget_curve: [[0.5, 2.0]],
         sla: {max_latency_ms: 5000, budget_per_hour_usd: 0.000001},
         escalation: {low_confidence_threshold: 0.1}, memory: {k: 10}}
  bare: {budget_curve: [[0.5, 2.0]]}
budgets:
  total: [100/day]
"""


def test_tenants_and_the_budget_alert_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, TENANTS, environ={"ADMIN_TOKEN": ADMIN}) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        assert published.schema_name("GET", "/v1/router/tenants") == "TenantList"
        assert published.schema_name("GET", "/v1/router/budget/alert") == "BudgetAlert"
        quiet = published.valid("GET", "/v1/router/budget/alert",
                                get(server, "/v1/router/budget/alert", ADMIN))
        assert quiet["status"] == "ok" and quiet["budget_usd"] is None
        made = post(server, "/v1/router/keys", {"tenant": "acme", "budget": "5/day"},
                    ADMIN)
        assert made.status_code == 201, made.text
        chat(server, math_prompt(1), key=made.json()["key"], model="cheap")

        tenants = published.valid("GET", "/v1/router/tenants",
                                  get(server, "/v1/router/tenants", ADMIN))["data"]
        assert tenants["bare"]["sla"] is None and tenants["bare"]["budget_status"] == []
        assert tenants["acme"]["budget_status"][0]["spent_usd"] > 0
        first = published.valid("GET", "/v1/router/budget/alert",
                                get(server, "/v1/router/budget/alert", ADMIN, tenant="acme",
                                    limit=2))
        assert first["status"] == "critical" and first["utilization"] > 1
        assert first["next_cursor"] is not None and len(first["budgets"]) == 2
        last = published.valid("GET", "/v1/router/budget/alert",
                               get(server, "/v1/router/budget/alert", ADMIN, tenant="acme",
                                   cursor=first["next_cursor"]))
        assert [b["account"] for b in last["budgets"]] == [f"key:{made.json()['id']}"]

        # The budget curve raises λ to 2 at any use: of acme's key's own budget, and of the
        # gateway's, shared with other callers, for a key of bare (which has none).
        bare = post(server, "/v1/router/keys", {"tenant": "bare"}, ADMIN).json()
        own = published.valid("POST", "/v1/route", post(server, "/v1/route", {
            "prompt": math_prompt(5)}, made.json()["key"]))
        assert own["budget_pressure"]["fraction_used"] > 0
        assert own["budget_pressure"]["cost_weight"] == 2
        shared = published.valid("POST", "/v1/route", post(server, "/v1/route", {
            "prompt": math_prompt(5)}, bare["key"]))
        assert shared["budget_pressure"]["fraction_used"] is None

        config = tmp_path / "switchpoint.yaml"
        config.write_text(config.read_text(encoding="utf-8").replace(
            "acme: {models: [strong, cheap, auto]", "acme: {models: [strong, auto]").replace(
            "  bare: {budget_curve: [[0.5, 2.0]]}\n", ""), encoding="utf-8")
        reloaded = published.valid("POST", "/v1/router/reload",
                                   post(server, "/v1/router/reload", None, ADMIN))
        affected = {k["key_id"]: k for k in reloaded["keys_affected"]}
        assert affected[made.json()["id"]]["models_removed"] == ["cheap"]
        assert affected[made.json()["id"]]["models_removed_count"] == 1
        assert affected[bare["id"]]["tenant_removed"] is True
        published.each_field_needed(["TenantList", "TenantView", "BudgetStatus", "BudgetAlert",
                                     "BudgetAlertEntry", "BudgetPressure", "KeyAffected"])


# The operations that take any query parameter, as OpenAI's API does.
ANY_QUERY = {("/v1/chat/completions", "post"), ("/v1/models", "get"),
             ("/v1/models/{model_id}", "get")}


def test_every_route_publishes_the_query_parameters_it_takes(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # A route that takes query parameters listed an unknown one's 400 only as a generic
    # "Invalid request"; it now names those it takes, as the answer does.
    with learning_server(fake, tmp_path) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        paths = published.document["paths"]
        for path, takes in (("/v1/router/requests", '"limit", "cursor"'),
                            ("/v1/router/keys", '"tenant", "limit", "cursor"'),
                            ("/v1/router/report/sla", '"since_hours", "tenant"'),
                            ("/v1/router/stats", '"tenant"')):
            described = paths[path]["get"]["responses"]["400"]["description"]
            assert ("invalid_request (param the query parameter's name): the query string "
                    f"names a parameter the route does not take; it takes {takes} (check its "
                    "spelling, or leave it out).") in described, (path, described)
            assert NO_QUERY not in described, path
            answer = httpx.get(f"{server.base}{path}", params={"windw": "1h"}, timeout=15)
            error = published.valid("GET", path, answer, 400)["error"]
            assert (error["code"], error["param"]) == ("invalid_request", "windw"), error
            assert f"; it takes {takes} (" in error["message"], error
        # Every operation but OpenAI's lists the refusal, once.
        listed = 0
        for path, item in paths.items():
            for method, operation in item.items():
                described = operation["responses"]["400"]["description"]
                count = described.count("invalid_request (param the query parameter's name)")
                assert count == (0 if (path, method) in ANY_QUERY else 1), (method, path)
                listed += count
        assert listed > 30


def test_the_published_descriptions_quote_the_values_they_name_as_json_writes_them(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """They quoted a strategy, a tenant or an empty reason as Python writes it ('always',
    'default', ''), and listed the error codes and a fallback's reasons unquoted, beside the
    answers' own messages, which quote the values they offer as JSON does."""
    with learning_server(fake, tmp_path) as server:
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
    described = list(_descriptions(document))
    assert [d for d in described if _PYTHON_QUOTED.search(d)] == []
    properties = {name: schema.get("properties", {})
                  for name, schema in document["components"]["schemas"].items()}
    code = properties["ErrorDetail"]["code"]["description"]
    assert code.startswith('One of "budget_exceeded", ') and '"invalid_request", ' in code
    routed = properties["RouteResponse"]
    assert one_of(f.value for f in Fallback) in routed["memory_fallback"]["description"]
    escalated = routed["escalated"]["description"]
    assert '(strategy "always")' in escalated and '(strategy "ask")' in escalated
