"""Schemathesis against the live OpenAPI schema with client keys on (``auth: keys``) and an
admin token: every route is called by each kind of caller, so the guards' refusals are answered
and checked against the document as the answers are: no credential (401), the admin token on a
client route and a client key on an admin route (401), a key that may use one model alone (403
for any other), a key whose rate is used up (429) and one whose budget is smaller than any
request (429). Besides the generated requests, each refusal a caller is certain to meet is
asked for once with a request that must draw it. The upstreams are the fake provider, so a
valid chat request is answered.

Valid requests only (the invalid ones are the auth-off run's, tests/integration/
test_service_schema.py): a few examples per route and caller, to keep it to seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import learning_server
from tests.integration.servers import ThreadServer
from tests.integration.test_service_schema import OPERATIONS

ADMIN = "t" * 32
EXTRA = """auth: keys
admin_token_env: ADMIN_TOKEN
tenants:
  acme: {budgets: [50/month]}
experiments:
  thrift:
    min_n: 2
    arms:
      control: {}
      thrifty: {cost_weight: 5}
"""
# Who calls: the header each caller sends (None: none), made once the server is up.
CALLERS = ("nobody", "admin", "key", "narrow", "rated", "broke")
EXAMPLES = {"/v1/route": 6, "/v1/chat/completions": 6, "/v1/feedback": 4,
            "/v1/router/preferences/compare": 3}
CASES = [(m, p, who) for m, p in OPERATIONS for who in CALLERS]
# The routes a client key calls, and those a key or the admin token calls (the admin routes are
# the others but /health, which is open).
CLIENT = {"/v1/route", "/v1/chat/completions", "/v1/models", "/v1/models/{model_id}"}
EITHER = {"/v1/feedback", "/v1/router/preferences/compare", "/v1/router/preferences/score",
          "/v1/router/status"}
# A request to each route that names the model the narrow key may not use.
DEFINITE: dict[str, dict[str, Any]] = {
    "/v1/route": {"body": {"prompt": "hi", "available_models": ["strong"]}},
    "/v1/chat/completions": {"body": {"model": "strong", "max_tokens": 5,
                                      "messages": [{"role": "user", "content": "hi"}]}},
    "/v1/router/preferences/compare": {"body": {"prompt": "hi", "models": ["strong", "runner"]}},
    "/v1/feedback": {"body": {"decision_id": "0", "score": 1}},
    "/v1/router/preferences/score": {"body": {"compare_id": "0", "scores": {"A": 1}}},
    "/v1/router/report/forecast": {"query": {"requests_per_hour": 1, "avg_input_tokens": 1,
                                             "avg_output_tokens": 1}},
}
PARAMETERS = {"model_id": "cheap", "key_id": "0123456789", "name": "thrift"}


def refusal(path: str, who: str) -> int | None:
    """The status a caller is certainly refused with on a route (None: it may be let in)."""
    if path == "/health" or (who == "key" and path in CLIENT | EITHER) or (
            who == "admin" and path not in CLIENT):
        return None  # (open, or a caller the route takes)
    if who == "nobody" or who == "admin" or (path not in CLIENT | EITHER):
        return 401  # (the admin token on a client route, a client key on an admin route)
    if who == "narrow" and path in ("/v1/route", "/v1/chat/completions",
                                    "/v1/router/preferences/compare"):
        return 403
    if who == "rated" and path in ("/v1/route", "/v1/chat/completions", "/v1/feedback",
                                   "/v1/router/preferences/compare",
                                   "/v1/router/preferences/score"):
        return 429
    if who == "broke" and path in ("/v1/chat/completions", "/v1/router/preferences/compare"):
        return 429
    return None


@pytest.fixture(scope="module")
def keyed(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[ThreadServer, dict[str, str | None]]]:
    root = tmp_path_factory.mktemp("schema-keys")
    with learning_server(fake, root, EXTRA, environ={"ADMIN_TOKEN": ADMIN}) as server:
        admin = {"authorization": f"Bearer {ADMIN}"}

        def key(**body: Any) -> str:
            made = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme", **body},
                              headers=admin, timeout=15)
            assert made.status_code == 201, made.text
            secret: str = made.json()["key"]
            return secret

        rated = key(rpm=1)
        used = httpx.post(f"{server.base}/v1/route", json={"prompt": "use the minute up"},
                          headers={"authorization": f"Bearer {rated}"}, timeout=15)
        assert used.status_code == 200, used.text
        headers: dict[str, str | None] = {
            "nobody": None, "admin": ADMIN, "key": key(), "narrow": key(models=["cheap"]),
            "rated": rated, "broke": key(budget="0.0000001/day")}
        yield server, headers


@pytest.fixture(scope="module")
def keyed_schema(keyed: tuple[ThreadServer, dict[str, str | None]]) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{keyed[0].base}/openapi.json")


@pytest.mark.parametrize(("method", "path", "who"), CASES,
                         ids=[f"{m} {p} {who}" for m, p, who in CASES])
def test_every_caller_is_answered_as_the_schema_says(
        keyed_schema: BaseSchema, keyed: tuple[ThreadServer, dict[str, str | None]],
        method: str, path: str, who: str) -> None:
    server, credentials = keyed
    credential = credentials[who]
    headers = {} if credential is None else {"authorization": f"Bearer {credential}"}
    strategy = keyed_schema[path][method].as_strategy(generation_mode=GenerationMode.POSITIVE)
    seen: set[int] = set()

    @given(case=strategy)
    @settings(max_examples=EXAMPLES.get(path, 2), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(
            base_url=server.base, headers=headers, timeout=30,
            excluded_checks=[schemathesis.checks.positive_data_acceptance])
        assert response.status_code < 500 or response.status_code in (502, 503, 504), (
            response.status_code, response.text)
        seen.add(response.status_code)

    check()
    assert seen, "no request was made"
    refused = refusal(path, who)
    if refused is None:
        return
    operation = keyed_schema[path][method]
    names = {p.name for p in operation.path_parameters}
    case = operation.Case(path_parameters={n: PARAMETERS[n] for n in names} or None,
                          headers=headers, **DEFINITE.get(path, {}))
    response = case.call_and_validate(
        base_url=server.base, timeout=30,
        excluded_checks=[schemathesis.checks.positive_data_acceptance])
    assert response.status_code == refused, (response.status_code, response.text)
