"""What an OpenAI client expects of the gateway beyond chat: model lookups, the answer's cost,
candidate lists for ``auto``, OpenAI-shaped 404/405s on gateway paths, and CORS on request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    KEYS,
    client,
    config_text,
    log_entry,
)
from tests.integration.servers import ThreadServer, thread_server


def ask(
    text: str = "Prove that there are infinitely many primes.",
) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": f"{text} [{uuid.uuid4().hex[:8]}]"}]


def test_a_model_is_retrieved_by_id_and_an_unknown_one_is_a_not_found(gw: ThreadServer) -> None:
    api = client(gw)
    good = api.models.retrieve("good")
    assert (good.id, good.object) == ("good", "model")
    assert api.models.retrieve("auto").owned_by == "switchpoint"
    with pytest.raises(openai.NotFoundError) as info:
        api.models.retrieve("gpt-17")
    assert info.value.code == "model_not_found" and "good" in info.value.message


def test_the_answer_carries_its_cost_in_the_body_and_a_header(gw: ThreadServer) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(model="good", messages=ask())
    reply = raw.parse()
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert reply.usage is not None
    cost = reply.usage.model_extra["cost"]  # type: ignore[index]
    # good costs $10/M in and $30/M out.
    expected = (reply.usage.prompt_tokens * 10 + reply.usage.completion_tokens * 30) / 1e6
    assert cost == pytest.approx(expected) == pytest.approx(entry["cost_usd"])
    assert float(raw.headers["x-switchpoint-cost"]) == pytest.approx(expected)


def test_a_stream_that_asks_for_usage_gets_its_cost(gw: ThreadServer) -> None:
    chunks = list(client(gw).chat.completions.create(
        model="good", messages=ask(), stream=True, stream_options={"include_usage": True}))
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].model_extra["cost"] > 0  # type: ignore[index]


def test_auto_chooses_only_among_the_models_a_request_lists(gw: ThreadServer) -> None:
    api = client(gw)
    quality_first = {"x-switchpoint-cost-weight": "0"}
    unrestricted = api.chat.completions.create(model="auto", messages=ask(),
                                               extra_headers=quality_first)
    others = [m for m in ("good", "other", "cheap", "fresh") if m != unrestricted.model]
    by_body = api.chat.completions.create(model="auto", messages=ask(),
                                          extra_headers=quality_first,
                                          extra_body={"models": others[:2]})
    assert by_body.model in others[:2]
    raw = api.chat.completions.with_raw_response.create(
        model="auto", messages=ask(), extra_headers={**quality_first,
                                                     "x-switchpoint-models": others[2]})
    assert raw.parse().model == others[2]
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert entry["routed_model"] == others[2]
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(model="auto", messages=ask(),
                                    extra_body={"models": ["gpt-17"]})
    assert info.value.param == "models" and "gpt-17" in info.value.message


def test_the_gateways_own_field_does_not_reach_the_upstream(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    client(gw).chat.completions.create(model="good", messages=ask(),
                                       extra_body={"models": ["good"]})
    (sent,) = gw_fake.requests()
    assert "models" not in sent["body"]


def test_gateway_paths_answer_404_and_405_in_openais_shape(gw: ThreadServer) -> None:
    wrong_method = httpx.get(f"{gw.base}/v1/chat/completions")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    missing = httpx.post(f"{gw.base}/v1/embeddings", json={})
    assert missing.status_code == 404 and missing.json()["error"]["type"]
    with pytest.raises(openai.NotFoundError):
        client(gw).completions.create(model="good", prompt="legacy completions")
    # Routing and admin paths keep switchpoint's own shape.
    admin = httpx.get(f"{gw.base}/v1/router/nothing-here")
    assert admin.status_code == 404 and "type" not in admin.json()["error"]


@pytest.fixture(scope="module")
def cors_server(gw_fake: FakeProviderProcess,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root: Path = tmp_path_factory.mktemp("cors")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "cors:\n  allow_origins: [https://app.example]\n",
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def test_cors_is_off_by_default(gw: ThreadServer) -> None:
    preflight = httpx.options(f"{gw.base}/v1/chat/completions", headers={
        "origin": "https://app.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origins_only(cors_server: ThreadServer) -> None:
    url = f"{cors_server.base}/v1/chat/completions"
    allowed = httpx.options(url, headers={"origin": "https://app.example",
                                          "access-control-request-method": "POST",
                                          "access-control-request-headers": "authorization"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    stranger = httpx.options(url, headers={"origin": "https://evil.example",
                                           "access-control-request-method": "POST"})
    assert stranger.headers.get("access-control-allow-origin") != "https://evil.example"
    answer = httpx.post(url, headers={"origin": "https://app.example"},
                        json={"model": "good", "messages": ask()}, timeout=15)
    assert answer.status_code == 200
    assert "x-switchpoint-cost" in answer.headers["access-control-expose-headers"]


def test_a_page_of_an_origin_cors_does_not_list_is_refused(
        cors_server: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # Its POST needs no preflight as text/plain, so only the service can keep it from the models.
    gw_fake.reset()
    url = f"{cors_server.base}/v1/chat/completions"
    body = b'{"model": "good", "messages": [{"role": "user", "content": "hi"}]}'
    refused = httpx.post(url, content=body, timeout=15, headers={
        "origin": "https://evil.example", "content-type": "text/plain;charset=UTF-8"})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "permission_denied", "permission_error", "origin")
    assert '"https://evil.example"' in error["message"]
    assert 'cors.allow_origins does not list (it lists "https://app.example")' in error["message"]
    assert gw_fake.requests() == []
    allowed = httpx.post(url, content=body, timeout=15, headers={
        "origin": "https://app.example", "content-type": "text/plain;charset=UTF-8"})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
