"""The keys', budgets' and feedback's answers match the schemas the OpenAPI document publishes
for them: a key made (with its secret), listed, shown with its budgets' state, given a new
secret, revoked and deleted; the budgets' page; feedback on a routed answer, on an answer of a
named model, and a repeat. A key's name is published as the label it is, shown where it is
shown (it said logs, which name a key by its id alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import schemathesis

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, learning_server, post

ADMIN = "a" * 32
EXTRA = """auth: keys
admin_token_env: ADMIN_TOKEN
tenants:
  acme: {budgets: [50/month]}
budgets:
  total: [100/day]
"""
SCHEMAS = {("POST", "/v1/router/keys"): "IssuedKey", ("GET", "/v1/router/keys"): "KeyPage",
           ("GET", "/v1/router/keys/{key_id}"): "KeyWithBudgets",
           ("POST", "/v1/router/keys/{key_id}/rotate"): "IssuedKey",
           ("POST", "/v1/router/keys/{key_id}/revoke"): "KeyView",
           ("DELETE", "/v1/router/keys/{key_id}"): "KeyView",
           ("GET", "/v1/router/budgets"): "BudgetPage",
           ("POST", "/v1/feedback"): "FeedbackResponse"}


def test_keys_budgets_and_feedback_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXTRA, environ={"ADMIN_TOKEN": ADMIN}) as server:
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        # A key's name is a label only, said where it is shown (no log line shows it).
        about = document["paths"]["/v1/router/keys"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["properties"]["name"]["description"]
        assert about.startswith("A label only, shown in `switchpoint keys list`"), about
        assert "two keys may share one" in about and "keys_affected" in about, about
        assert "logs" not in about, about
        for (method, path), name in SCHEMAS.items():  # a schema, not the empty one
            answers = document["paths"][path][method.lower()]["responses"]
            ok = answers["201" if path == "/v1/router/keys" and method == "POST" else "200"]
            assert ok["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{name}"}
            assert document["components"]["schemas"][name]["additionalProperties"] is False
        api = schemathesis.openapi.from_dict(document)
        admin = {"authorization": f"Bearer {ADMIN}"}

        def valid(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
            assert response.status_code in (200, 201), response.text
            api[path][method].validate_response(response)  # raises when it does not
            body: dict[str, Any] = response.json()
            return body

        def call(method: str, path: str, real: str, **kwargs: Any) -> dict[str, Any]:
            return valid(method, path, httpx.request(method, f"{server.base}{real}",
                                                     headers=admin, timeout=15, **kwargs))

        made = call("POST", "/v1/router/keys", "/v1/router/keys",
                    json={"tenant": "acme", "name": "ci", "budget": ["5/day", "20/month"],
                          "rpm": 100, "models": ["strong", "cheap", "auto"], "expires": "30d"})
        assert made["key"].startswith("sp-") and made["status"] == "active"
        plain = call("POST", "/v1/router/keys", "/v1/router/keys", json={"tenant": "acme"})
        assert plain["models"] is None and plain["budgets"] == []
        key = made["key"]

        # Feedback on a routed answer, a repeat of it, and on an answer of a named model.
        decision = chat(server, math_prompt(1), key=key)[0]["x-switchpoint-decision-id"]
        first = valid("POST", "/v1/feedback",
                      post(server, "/v1/feedback", {"decision_id": decision, "score": 0.5},
                           key=key))
        assert first["kind"] == "decision" and first["replaced"] is False
        assert first["cost_from"] == "answer" and first["cost"] > 0
        again = valid("POST", "/v1/feedback",
                      post(server, "/v1/feedback", {"decision_id": decision, "success": True,
                                                    "comment": "right after all"}, key=key))
        assert again["replaced"] is True and again["previous_quality"] == 0.5
        named = chat(server, math_prompt(2), key=key, model="cheap")[0]
        model = valid("POST", "/v1/feedback",
                      post(server, "/v1/feedback",
                           {"decision_id": named["x-switchpoint-decision-id"], "score": 1},
                           key=key))
        assert model["kind"] == "model" and model["teaches_routing"] is False

        listed = call("GET", "/v1/router/keys", "/v1/router/keys", params={"limit": 1})
        assert [k["id"] for k in listed["data"]] == [made["id"]] and listed["next_cursor"]
        shown = call("GET", "/v1/router/keys/{key_id}", f"/v1/router/keys/{made['id']}")
        assert [b["budget"] for b in shown["budget_status"]] == ["5/day", "20/month"]
        assert shown["budget_status"][0]["spent_usd"] > 0
        budgets = call("GET", "/v1/router/budgets", "/v1/router/budgets")
        assert [b["account"] for b in budgets["data"]] == [
            "all", "tenant:acme", f"key:{made['id']}", f"key:{made['id']}"]
        rotated = call("POST", "/v1/router/keys/{key_id}/rotate",
                       f"/v1/router/keys/{made['id']}/rotate", json={"grace_seconds": 60})
        assert rotated["key"] != key and len(rotated["previous_secrets"]) == 1
        revoked = call("POST", "/v1/router/keys/{key_id}/revoke",
                       f"/v1/router/keys/{made['id']}/revoke")
        assert revoked["status"] == "revoked" and "key" not in revoked
        deleted = call("DELETE", "/v1/router/keys/{key_id}", f"/v1/router/keys/{plain['id']}")
        assert deleted["status"] == "revoked"

        budgets = call("GET", "/v1/router/budgets", "/v1/router/budgets")
        assert [b["account"] for b in budgets["data"]] == ["all", "tenant:acme"]  # (the
        # revoked keys' are gone)
