"""The service served below a root path (``uvicorn --root-path /sp``, as a program serving
``create_app`` behind a proxy that adds a prefix serves it) answers as it does without one: the
path its routes match is the one after the root path, and so is the path everything else a
request's path decides reads: the envelope of its errors (OpenAI's on the OpenAI routes,
whether a route, the error handlers or a middleware refusing it before any route answers), the
route template ``/metrics`` counts a request refused before routing under, and the advice of a
413 for a body over ``max_request_bytes``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.gateway.body_size import PROMPT_ADVICE
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text, user
from tests.integration.servers import ThreadServer, thread_server

ROOT = "/sp"
LIMIT = 4096
TOO_LARGE = "x" * (2 * LIMIT)


@pytest.fixture(scope="module")
def rooted(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ThreadServer]:
    """The gateway (the fake provider behind its catalog), served below :data:`ROOT`."""
    root: Path = tmp_path_factory.mktemp("rooted")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, str(root / "data")) + f"max_request_bytes: {LIMIT}\n",
                      encoding="utf-8")
    app = create_app(load_settings(config, environ={}), loader=FACTORY, provider_env=KEYS)
    with thread_server(app, root_path=ROOT) as server:
        yield server


def _client(server: ThreadServer, headers: Mapping[str, str] | None = None) -> openai.OpenAI:
    """The official client (sending ``headers`` too), as a proxy in front passes its requests
    on: without the root path, which uvicorn puts before the path it hands the app."""
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything",
                         max_retries=0, timeout=30, default_headers=headers)


def test_the_openai_routes_are_served_below_the_root_path(rooted: ThreadServer) -> None:
    answer = _client(rooted).chat.completions.create(model="auto", messages=user("hello"))
    assert answer.choices[0].message.content


def test_an_openai_route_s_errors_are_in_openai_s_envelope_below_a_root_path(
        rooted: ThreadServer) -> None:
    client = _client(rooted)
    # A route's own error (an unknown model), through the app's error handlers.
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert (missing.value.type, missing.value.code) == ("invalid_request_error",
                                                        "model_not_found"), missing.value.body
    # A body the route refuses.
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="auto", messages=[])
    assert (bad.value.type, bad.value.code) == ("invalid_request_error", "invalid_request"), (
        bad.value.body)
    # A path no route takes (the router's 404) on the gateway's paths.
    with pytest.raises(openai.NotFoundError) as unrouted:
        client.get("/no/such/path", cast_to=object)
    assert unrouted.value.type == "invalid_request_error", unrouted.value.body
    # A page's origin, refused by the guard before any route.
    with pytest.raises(openai.PermissionDeniedError) as origin:
        _client(rooted, {"Origin": "https://evil.example"}).models.list()
    assert (origin.value.type, origin.value.param) == ("permission_error", "origin"), (
        origin.value.body)
    # A body over max_request_bytes, refused by the body limit before any route.
    with pytest.raises(openai.APIStatusError) as large:
        client.chat.completions.create(model="auto", messages=user(TOO_LARGE))
    assert large.value.status_code == 413
    assert (large.value.type, large.value.param) == ("invalid_request_error", "body"), (
        large.value.body)
    # The service's own routes keep their envelope (no "type").
    for refused in (httpx.post(f"{rooted.base}/v1/route", json={}, timeout=30),
                    httpx.get(f"{rooted.base}/v1/router/no-such", timeout=30)):
        assert refused.status_code in (400, 404), refused.text
        assert set(refused.json()["error"]) == {"code", "message", "param"}, refused.text


def test_a_413_below_a_root_path_gives_the_advice_of_the_route_s_own_limit(
        rooted: ThreadServer) -> None:
    # A prompt's route says how to send a long prompt; another route asks for a smaller body.
    for path, advice in (("/v1/route", PROMPT_ADVICE),
                         ("/v1/router/preferences/compare", PROMPT_ADVICE),
                         ("/v1/feedback", "Send a smaller body")):
        answer = httpx.post(f"{rooted.base}{path}", json={"prompt": TOO_LARGE},
                            timeout=30)
        assert answer.status_code == 413, (path, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["param"]) == ("request_too_large", "body"), error
        assert advice in error["message"], (path, error["message"])
    with pytest.raises(openai.APIStatusError) as large:
        _client(rooted).chat.completions.create(model="auto", messages=user(TOO_LARGE))
    assert PROMPT_ADVICE in large.value.message, large.value.message


def test_metrics_count_a_request_refused_before_routing_under_its_route_below_a_root_path(
        rooted: ThreadServer) -> None:
    # Refused for its host (a name the service does not answer to) and for its origin, by the
    # guards before any route: counted as the served request is, under the route's template.
    for headers in ({"Host": "evil.example"}, {"Origin": "https://evil.example"}):
        refused = httpx.get(f"{rooted.base}/v1/models/good", headers=headers, timeout=30)
        assert refused.status_code == 403, refused.text
    assert httpx.get(f"{rooted.base}/v1/models/good", timeout=30).status_code == 200
    metrics = httpx.get(f"{rooted.base}/metrics", timeout=30).text
    template = 'route="/v1/models/{model_id:path}",method="GET"'
    assert f"switchpoint_http_requests_total{{{template},status=\"403\"}} 2" in metrics, (
        [line for line in metrics.splitlines() if "http_requests_total" in line])
    assert f"switchpoint_http_requests_total{{{template},status=\"200\"}} 1" in metrics
