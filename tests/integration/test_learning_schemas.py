"""The learning routes' answers match the schemas the OpenAPI document publishes for them:
a comparison (blind and not, with a model that fails), its scores (with the models revealed),
and the learning status as the admin and as a client key narrowed to some models see it; an
experiment's report (before any decision, then scored) as listed, shown and promoted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import schemathesis

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, feedback, get, learning_server, post
from tests.integration.published_schema import Published

ADMIN = "a" * 32
EXTRA = """auth: keys
admin_token_env: ADMIN_TOKEN
tenants:
  acme: {memory: {k: 10, min_neighbours: 3, min_records: 2}}
"""
ROUTES = {"/v1/router/preferences/compare": "POST", "/v1/router/preferences/score": "POST",
          "/v1/router/status": "GET"}


def test_learning_answers_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXTRA, environ={"ADMIN_TOKEN": ADMIN}) as server:
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        for path, method in ROUTES.items():  # a schema, not the empty one
            ok = document["paths"][path][method.lower()]["responses"]["200"]
            assert ok["content"]["application/json"]["schema"]["$ref"].startswith(
                "#/components/schemas/")
        api = schemathesis.openapi.from_dict(document)

        def valid(path: str, response: httpx.Response) -> dict[str, Any]:
            assert response.status_code == 200, response.text
            api[path][ROUTES[path]].validate_response(response)  # raises when it does not
            body: dict[str, Any] = response.json()
            return body

        made = post(server, "/v1/router/keys", {"tenant": "acme", "models": ["strong", "cheap"]},
                    key=ADMIN)
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        fake.script("cheap", "500", "500", "500", "500")  # every try of it fails
        blind = valid("/v1/router/preferences/compare",
                      post(server, "/v1/router/preferences/compare",
                           {"prompt": math_prompt(1), "models": ["strong", "cheap"]}, key=key))
        assert blind["blind"] is True
        assert sorted(a["error"] is None for a in blind["answers"]) == [False, True]
        answered = next(a["label"] for a in blind["answers"] if a["error"] is None)
        scored = valid("/v1/router/preferences/score",
                       post(server, "/v1/router/preferences/score",
                            {"compare_id": blind["compare_id"], "scores": {answered: 1}},
                            key=key))
        assert {a["model"] for a in scored["answers"]} == {"strong", "cheap"}
        assert scored["memory"]["enabled"] is True

        fake.reset()
        shown = valid("/v1/router/preferences/compare",
                      post(server, "/v1/router/preferences/compare",
                           {"prompt": math_prompt(2), "models": ["strong", "cheap"],
                            "blind": False}, key=key))
        assert {a["model"] for a in shown["answers"]} == {"strong", "cheap"}
        assert all(a["request_id"] and a["latency_ms"] is not None for a in shown["answers"])
        again = valid("/v1/router/preferences/score",
                      post(server, "/v1/router/preferences/score",
                           {"compare_id": shown["compare_id"], "scores": {"strong": 0.9}},
                           key=key))
        assert "answers" not in again and again["scores"][0]["model"] == "strong"

        narrowed = valid("/v1/router/status", get(server, "/v1/router/status", key=key))
        assert narrowed["tenants"]["acme"]["narrowed_to"] == ["cheap", "strong"]
        assert "replayed" not in narrowed
        whole = valid("/v1/router/status", get(server, "/v1/router/status", key=ADMIN))
        assert whole["tenants"]["acme"]["memory"]["examples"] == 2
        assert whole["replayed"] == 0 and whole["feedback_log"]["pruned_rows"] == 0
        # A tenant without a memory: only enabled, false.
        other = valid("/v1/router/status",
                      get(server, "/v1/router/status", key=ADMIN, tenant="default"))
        assert other["tenants"]["default"]["memory"] == {"enabled": False}


EXPERIMENT = """experiments:
  thrift:
    min_n: 2
    tenants: [default]
    arms:
      control: {}
      thrifty: {cost_weight: 5, models: [cheap, strong], weight: 2}
"""


def test_experiment_reports_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        assert published.schema_name("GET", "/v1/router/experiments") == "ExperimentList"
        for method, path in (("GET", "/v1/router/experiments/{name}"),
                             ("POST", "/v1/router/experiments/{name}/promote")):
            assert published.schema_name(method, path) == "ExperimentReport"
        shown = "/v1/router/experiments/{name}"
        empty = published.valid("GET", shown, get(server, "/v1/router/experiments/thrift"))
        assert [a["n"] for a in empty["arms"]] == [0, 0] and empty["winner"] is None
        for s in range(8):
            headers, _ = chat(server, math_prompt(s), session=f"session-{s}")
            r = feedback(server, headers["x-switchpoint-decision-id"], score=0.25 * (s % 3))
            assert r.status_code == 200, r.text
        scored = published.valid("GET", shown, get(server, "/v1/router/experiments/thrift"))
        assert all(a["interval"] is not None for a in scored["arms"]), scored
        promoted = published.valid("POST", "/v1/router/experiments/{name}/promote",
                                   post(server, "/v1/router/experiments/thrift/promote",
                                        {"arm": "thrifty"}))
        assert (promoted["promoted"], promoted["promotion"]) == ("thrifty", "chosen")
        listed = published.valid("GET", "/v1/router/experiments",
                                 get(server, "/v1/router/experiments"))
        assert [e["promoted"] for e in listed["data"]] == ["thrifty"]
        published.each_field_needed(["ExperimentList", "ExperimentReport", "ArmReport"])
