"""``POST /v1/chat/completions`` through a real switchpoint server and the official ``openai``
client (sync, async, streaming): answers through ``auto`` and named models (OpenAI-compatible
and Anthropic upstreams), the headers, passthrough of fields the gateway does not use, the
request log and its accounting, bad requests, capability filters and reload."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    KEYS,
    async_client,
    client,
    config_text,
    log_entry,
    user,
)
from tests.integration.servers import ThreadServer, thread_server

CATALOG = {"good", "other", "cheap", "fresh"}
PRICES = {"good": (10, 30), "other": (8, 24), "cheap": (0.5, 1.5), "fresh": (0.05, 0.1)}
UPSTREAM = {"good": "good", "other": "claude-fake-2", "cheap": "cheap", "fresh": "fresh"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def cost(model: str, prompt: int, completion: int) -> float:
    inp, out = PRICES[model]
    return (prompt * inp + completion * out) / 1e6


# Answers ----------------------------------------------------------------------------------------


def test_auto_answers_and_says_who_answered(gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="auto", messages=user("Prove that the square root of 2 is irrational."))
    completion = raw.parse()
    model = completion.model
    assert model in CATALOG
    assert raw.headers["x-switchpoint-model"] == model
    assert raw.headers["x-switchpoint-routed-model"] == model
    assert int(raw.headers["x-switchpoint-cluster"]) >= 0
    assert 0 <= float(raw.headers["x-switchpoint-expected-error"]) <= 1
    assert float(raw.headers["x-switchpoint-routing-ms"]) > 0
    assert raw.headers["x-switchpoint-pin"] == "fresh"
    text = completion.choices[0].message.content or ""
    assert text.startswith(f"Echo from {UPSTREAM[model]}: Prove that the square root of 2")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["http_status"] == 200
    assert entry["requested_model"] == "auto" and entry["model"] == model
    assert entry["models_tried"] == [model] and entry["escalated"] is False
    assert entry["prompt_tokens"] == usage.prompt_tokens
    assert entry["completion_tokens"] == usage.completion_tokens
    assert entry["cost_usd"] == pytest.approx(cost(model, usage.prompt_tokens,
                                                   usage.completion_tokens))
    assert entry["cluster_id"] == int(raw.headers["x-switchpoint-cluster"])
    assert entry["decision_id"] and entry["reasoning"]
    assert entry["pin_state"] == "fresh" and entry["stream"] is False
    assert entry["latency_ms"] > 0 and entry["ttft_ms"] is None


def test_a_named_model_passes_straight_through_with_its_key(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="good", messages=user("Say hello"))
    completion = raw.parse()
    assert completion.model == "good" and raw.headers["x-switchpoint-model"] == "good"
    assert "x-switchpoint-cluster" not in raw.headers  # not routed
    assert (completion.choices[0].message.content or "").startswith("Echo from good: Say hello")
    [seen] = gw_fake.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {KEYS['GOOD_KEY']}"
    assert seen["body"]["model"] == "good"
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert entry["requested_model"] == "good" and entry["routed_model"] == "good"
    assert entry["decision_id"] is None and entry["upstream_model"] == "good"


def test_a_named_anthropic_model_answers_in_openai_format(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    completion = client(gw).chat.completions.create(model="other", messages=user("Hi Claude"),
                                                    max_tokens=64)
    assert completion.model == "other"
    assert (completion.choices[0].message.content or "").startswith(
        "Echo from claude-fake-2: Hi Claude")
    assert completion.choices[0].finish_reason == "stop"
    [seen] = gw_fake.requests()
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == KEYS["OTHER_KEY"]
    assert seen["body"]["model"] == "claude-fake-2" and seen["body"]["max_tokens"] == 64


def test_streaming_with_usage_requested(gw: ThreadServer) -> None:
    with client(gw).chat.completions.with_streaming_response.create(
            model="good", messages=user("Stream me a story"), stream=True,
            stream_options={"include_usage": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-switchpoint-model"] == "good"
        request_id = response.headers["x-switchpoint-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Echo from good: Stream me a story")
    assert {c.model for c in chunks} == {"good"}
    assert chunks[-1].usage is not None and not chunks[-1].choices
    entry = log_entry(gw, request_id)
    assert entry["status"] == "ok" and entry["stream"] is True
    assert entry["completion_tokens"] == chunks[-1].usage.completion_tokens
    assert entry["cost_usd"] == pytest.approx(cost("good", chunks[-1].usage.prompt_tokens,
                                                   chunks[-1].usage.completion_tokens))
    assert 0 < entry["ttft_ms"] <= entry["latency_ms"]


def test_a_stream_option_the_gateway_cannot_read_is_a_400_from_the_openai_client(
        gw: ThreadServer) -> None:
    # include_usage "yes" was taken as true, and a string stream_options silently replaced.
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(
            model="good", messages=user("Stream"), stream=True,
            extra_body={"stream_options": {"include_usage": "yes"}})
    assert info.value.param == "stream_options"
    assert "stream_options.include_usage: must be true or false" in info.value.message


def test_stream_options_without_a_stream_is_a_400_from_the_openai_client(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # It was dropped: the client asked for a usage chunk that no answer would carry.
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(model="good", messages=user("Not streamed"),
                                           stream_options={"include_usage": True})
    assert info.value.param == "stream_options" and info.value.code == "invalid_request"
    assert ("stream_options: is only allowed when stream is true; send \"stream\": true, or "
            "leave stream_options out") in info.value.message
    assert gw_fake.requests() == []


def test_streaming_without_usage_asked_still_logs_the_tokens(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    with client(gw).chat.completions.with_streaming_response.create(
            model="other", messages=user("Stream without usage"), stream=True) as response:
        request_id = response.headers["x-switchpoint-request-id"]
        chunks = list(response.parse())
    assert all(c.usage is None for c in chunks)  # the client did not ask for it
    assert all(c.choices for c in chunks)
    entry = log_entry(gw, request_id)
    assert entry["prompt_tokens"] > 0 and entry["completion_tokens"] > 0
    assert entry["cost_usd"] > 0 and entry["upstream_model"] == "claude-fake-2"


def test_the_async_client_plain_and_streamed(gw: ThreadServer) -> None:
    async def both() -> tuple[str, str]:
        aclient = async_client(gw)
        plain = await aclient.chat.completions.create(model="auto", messages=user("Async hi"))
        stream = await aclient.chat.completions.create(model="auto", messages=user("Async s"),
                                                       stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await aclient.close()
        return plain.choices[0].message.content or "", text

    plain, streamed = asyncio.run(both())
    assert "Async hi" in plain and "Async s" in streamed


def test_fields_the_gateway_does_not_use_pass_through_untouched(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    tools = [{"type": "function", "function": {
        "name": "lookup", "description": "Look something up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                       "required": ["query"]}}}]
    extra: dict[str, Any] = {
        "temperature": 0.25, "top_p": 0.9, "seed": 7, "user": "u-42", "max_tokens": 321,
        "response_format": {"type": "json_object"}, "tools": tools, "tool_choice": "auto",
        "parallel_tool_calls": False, "metadata": {"team": "search"}, "logit_bias": {"50256": -100},
        "stop": ["\n\n"], "frequency_penalty": 0.1,
    }
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Look up the weather"}],
                 "name": "alice"}]
    client(gw).chat.completions.create(model="good", messages=messages,  # type: ignore[arg-type]
                                       extra_body={"vendor_flag": {"deep": [1, 2.5, None]}},
                                       **extra)
    [seen] = gw_fake.requests()
    body = seen["body"]
    for key, value in {**extra, "vendor_flag": {"deep": [1, 2.5, None]}}.items():
        assert body[key] == value, key
    assert body["messages"] == messages
    assert "stream_options" not in body
    # A stream differs only in asking the upstream for usage.
    gw_fake.reset()
    list(client(gw).chat.completions.create(model="good", messages=messages,  # type: ignore[arg-type]
                                            stream=True, **extra))
    [seen] = gw_fake.requests()
    assert seen["body"]["stream_options"] == {"include_usage": True}
    for key, value in extra.items():
        assert seen["body"][key] == value, key


def test_a_model_without_a_profile_is_routed_by_tier_and_price(gw: ThreadServer) -> None:
    # λ = 1000: price decides, and `fresh` is the cheapest.
    raw = client(gw).chat.completions.with_raw_response.create(
        model="auto", messages=user("What is 2 + 2?"),
        extra_headers={"x-switchpoint-cost-weight": "1000"})
    assert raw.parse().model == "fresh"
    assert "fresh has no learned profile yet" in raw.headers["x-switchpoint-reasoning"]
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert any("fresh has no learned profile yet" in line and "cost comes from its price" in line
               for line in entry["reasoning"])


@pytest.mark.parametrize(("value", "says"), [
    ("-1", "is -1; it must be >= 0"), ("1e5", "is 1e5; it must be at most 10,000"),
    ("-0.50", "is -0.50; it must be >= 0"), ("nan", 'got "nan"'), ("inf", 'got "inf"'),
    ("1_0", 'got "1_0"'),
    ("0x1", 'got "0x1"'), ("1e-400", '"1e-400" is too small a number to be told from 0'),
    ("1e999", "x-switchpoint-cost-weight: is infinity, too large a number (what 1e400, or any "
              "number past about 1.8e308, reads as); send finite numbers only"),
])
def test_cost_weight_header_is_checked(gw: ThreadServer, value: str, says: str) -> None:
    """The header's λ is read as the command line and a query parameter read a number: ASCII
    digits (no 1_0, nan or inf), and a number not 0 a float holds only as 0 is refused, not
    taken as 0 (quality first); the value is quoted as JSON writes it, a number out of range
    as written (-1, not -1.0); one no float holds (1e999) in the words a body's NaN or
    infinity is told in, the header named first."""
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(model="auto", messages=user("hi"),
                                           extra_headers={"x-switchpoint-cost-weight": value})
    assert info.value.param == "x-switchpoint-cost-weight"
    assert says in info.value.message and "'" not in info.value.message, info.value.message


# Errors the gateway itself answers ------------------------------------------------------------


def test_an_unknown_model_is_a_404_listing_the_catalog(gw: ThreadServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(gw).chat.completions.create(model="gpt-9", messages=user("hi"))
    assert info.value.code == "model_not_found" and info.value.param == "model"
    for name in CATALOG:
        assert name in info.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "auto"}, "messages"),
    ({"model": "auto", "messages": "hi"}, "messages"),
    ({"model": "auto", "messages": []}, "messages"),
    ({"model": "auto", "messages": [{"content": "no role"}]}, "messages"),
    ({"model": "auto", "messages": [{"role": 3, "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
     "stream"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": True,
      "stream_options": ["include_usage"]}, "stream_options"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": True,
      "stream_options": {"include_usage": "yes"}}, "stream_options"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": False,
      "stream_options": {"include_usage": True}}, "stream_options"),
    ([1, 2], "body"),
])
def test_malformed_bodies_are_400s_naming_the_field(gw: ThreadServer, body: Any,
                                                    param: str) -> None:
    r = httpx.post(f"{gw.base}/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"].startswith(param)
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"


@pytest.mark.parametrize(("content", "named"), [
    (5, "), got 5"), ({"text": "hi"}, "), got an object"), (True, "), got true"),
    ([1, 2], 'part 0 must be an object with a type, such as {"type": "text", "text": '
             '"..."}, got 1'),
    (["hi"], 'part 0 must be an object with a type, such as {"type": "text", "text": '
             '"..."}, got "hi"'),
    ([{"type": "text", "text": "a"}, {"text": "b"}], "part 1 has no type string")])
def test_a_message_content_not_text_null_or_parts_is_a_400(
        gw: ThreadServer, gw_fake: FakeProviderProcess, content: Any, named: str) -> None:
    """A message's content is a string, null (an assistant turn calling tools) or a list of
    content parts: anything else is refused naming the message, before anything is sent
    upstream or counted."""
    before = httpx.get(f"{gw.base}/v1/router/requests", params={"limit": 1}).json()["data"]
    messages = [*user("first"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": [
                    {"type": "text", "text": "42"}]},
                {"role": "user", "content": content}]
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(model="good", messages=messages)
    assert info.value.param == "messages" and info.value.code == "invalid_request"
    assert "400 - messages[3].content: " in info.value.message
    assert named in info.value.message
    assert gw_fake.requests() == []
    after = httpx.get(f"{gw.base}/v1/router/requests", params={"limit": 1}).json()["data"]
    assert after == before


@pytest.mark.parametrize(("fields", "said"), [
    ({"stop": {"a": 1}}, "stop: must be a string or a list of strings, got an object; send"),
    ({"stop": ["a", ["b"]]}, "stop[1]: must be a string, got a list; send"),
    ({"tools": {"type": "function"}}, "tools: must be a list of tools, got an object; each"),
    ({"tools": [["lookup"]]}, "tools[0]: must be an object, got a list; a function tool"),
    ({"functions": "lookup"}, 'functions: must be a list of functions, got "lookup"; each'),
    ({"tool_choice": ["auto"]}, "tool_choice: must be a string or an object, got a list; send"),
    ({"messages": [{"role": "assistant", "tool_calls": {"id": "call_1"}}]},
     "messages[0].tool_calls: must be a list of tool calls, got an object; each"),
    ({"messages": [{"role": "tool", "content": "42", "tool_call_id": ["call_1"]}]},
     "messages[0].tool_call_id: must be a string, got a list; a tool message"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": [
        "https://x.test/a.png"]}]}]},
     "messages[0].content[0].image_url: must be an object, got a list; an image_url part"),
])
def test_a_chat_field_of_the_wrong_type_says_what_it_got_as_every_field_does(
        gw: ThreadServer, gw_fake: FakeProviderProcess, fields: dict[str, Any],
        said: str) -> None:
    # These checks said "not a list" / "not an object" / "not the string ..." where every
    # other field of the body says ", got a list" (one rule for what a field was sent).
    body = {"model": "good", "messages": user("x"), **fields}
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(**body)
    assert info.value.code == "invalid_request"
    assert f"400 - {said}" in info.value.message, info.value.message
    assert ", not " not in info.value.message
    assert gw_fake.requests() == []
    # The same rule as a field pydantic checks: model sent as a list.
    with pytest.raises(openai.BadRequestError) as model:
        client(gw).chat.completions.create(**{**body, "model": ["good"]})
    assert "model: must be a string, got a list" in model.value.message


def test_message_contents_openai_allows_are_forwarded_as_sent(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    messages = [*user("first"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1",
                 "content": [{"type": "text", "text": "42"}]},
                {"role": "user", "content": [{"type": "text", "text": "and so?"}]}]
    client(gw).chat.completions.create(model="good", messages=messages)
    assert gw_fake.requests()[0]["body"]["messages"] == messages


def test_invalid_json_is_a_400(gw: ThreadServer) -> None:
    for content in (b"{", b""):
        r = httpx.post(f"{gw.base}/v1/chat/completions", content=content)
        assert r.status_code == 400 and r.json()["error"]["param"] == "body"


def test_the_capability_filter_sends_images_to_vision_models(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this? "
                                              + uuid.uuid4().hex}, IMAGE]}]
    # Named: cheap lacks vision, so its fallback good answers without cheap being called.
    raw = client(gw).chat.completions.with_raw_response.create(
        model="cheap", messages=messages)  # type: ignore[arg-type]
    assert raw.parse().model == "good"
    assert [r["body"]["model"] for r in gw_fake.requests()] == ["good"]
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert "vision" in " ".join(entry["excluded"]["cheap"])
    # auto: only the vision models are candidates.
    raw = client(gw).chat.completions.with_raw_response.create(
        model="auto", messages=messages)  # type: ignore[arg-type]
    assert raw.parse().model in {"good", "other"}
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert set(entry["excluded"]) == {"cheap", "fresh"}


def test_nothing_fits_is_a_400_with_each_models_reason(gw: ThreadServer,
                                                       gw_fake: FakeProviderProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(model="auto", messages=user("hi"),
                                           max_tokens=500_000)
    assert info.value.code == "no_capable_model"
    for name in CATALOG:
        assert f"{name}:" in info.value.message
    assert "context window" in info.value.message
    assert gw_fake.requests() == []


# Service routes -------------------------------------------------------------------------------


def test_models_health_and_stats(gw: ThreadServer) -> None:
    models = [m.id for m in client(gw).models.list()]
    assert models[0] == "auto" and set(models[1:]) == CATALOG
    client(gw).chat.completions.create(model="good", messages=user("count me"))
    health = httpx.get(f"{gw.base}/v1/router/health").json()
    assert set(health["models"]) >= CATALOG
    good = health["models"]["good"]
    assert good["status"] == "healthy" and good["circuit"] == "closed"
    assert good["successes"] == 1 and good["latency_ewma_ms"] > 0
    assert health["breaker"]["failure_threshold"] == 5
    stats = httpx.get(f"{gw.base}/v1/router/stats").json()
    assert {"total", "by_model", "by_cluster"} <= set(stats)  # the decision log, as before
    requests = stats["requests"]
    assert requests["total"] >= 1 and requests["ok"] >= 1
    assert requests["by_model"]["good"]["requests"] >= 1 and requests["cost_usd"] > 0


def test_the_request_log_pages_newest_first(gw: ThreadServer) -> None:
    ids = []
    for i in range(3):
        raw = client(gw).chat.completions.with_raw_response.create(
            model="cheap", messages=user(f"page {i}"))
        ids.append(raw.headers["x-switchpoint-request-id"])
    first = httpx.get(f"{gw.base}/v1/router/requests", params={"limit": 2}).json()
    assert [e["id"] for e in first["data"]] == ids[::-1][:2]
    assert first["next_cursor"] == first["data"][-1]["seq"]
    second = httpx.get(f"{gw.base}/v1/router/requests",
                       params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["data"][0]["id"] == ids[0]
    assert all(e["seq"] < first["next_cursor"] for e in second["data"])
    assert httpx.get(f"{gw.base}/v1/router/requests", params={"limit": 0}).status_code == 400


# Reload ------------------------------------------------------------------------------------------


@contextmanager
def reloadable_server(fake: FakeProviderProcess, config: Path) -> Iterator[ThreadServer]:
    """A gateway server of its own, reading ``config`` (written here), which a test may change
    and reload."""
    config.write_text(config_text(fake), encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def test_reload_changes_the_catalog_the_chat_route_uses(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    with reloadable_server(gw_fake, config) as server:
        session = {"x-session-id": f"reload-{uuid.uuid4().hex}"}
        # Pin a session to `fresh`, then take `fresh` out of the catalog and add `newbie`.
        answer = client(server).chat.completions.create(model="fresh", messages=user("one"),
                                                        extra_headers=session)
        assert answer.model == "fresh"
        text = config.read_text(encoding="utf-8")
        text = text.replace("name: fresh,", "name: newbie,")
        config.write_text(text, encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 200, r.text
        assert "newbie" in r.json()["models"] and "fresh" not in r.json()["models"]
        assert client(server).chat.completions.create(
            model="newbie", messages=user("two")).model == "newbie"
        with pytest.raises(openai.NotFoundError):
            client(server).chat.completions.create(model="fresh", messages=user("three"))
        raw = client(server).chat.completions.with_raw_response.create(
            model="auto", messages=user("four"), extra_headers=session)
        assert raw.headers["x-switchpoint-pin"] == "evicted_missing_model"
        entry = log_entry(server, raw.headers["x-switchpoint-request-id"])
        assert entry["pin"]["previous_model"] == "fresh"
        dropped = ("the session's pinned model is no longer in the catalog (a reload or restart "
                   "took it out): the pin was dropped; routed")
        assert entry["pin"]["note"] == dropped and dropped in entry["reasoning"]


def test_a_stream_a_reload_outlives_counts_in_metrics_under_the_model_that_answered_it(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # `fresh` answers a stream; a reload takes `fresh` out of the catalog before it ends. The
    # log names `fresh`; /metrics counted it under "other" (a model of the new catalog, too).
    config = tmp_path / "switchpoint.yaml"
    with reloadable_server(gw_fake, config) as server:
        def counted() -> dict[str, str]:
            text = httpx.get(f"{server.base}/metrics", timeout=10).text
            return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
                    for line in text.splitlines() if line.startswith("switchpoint_chat_")}

        stream = client(server).chat.completions.create(
            model="fresh", stream=True,
            messages=user("one two three four five six [[fake:ok:chunk_delay=0.1]]"))
        next(iter(stream))  # under way
        config.write_text(config_text(gw_fake).replace("name: fresh,", "name: newbie,"),
                          encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 200, r.text
        assert "fresh" not in r.json()["models"]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        deadline = time.monotonic() + 10  # (a stream is logged once its end is sent)
        while not any(n.startswith("switchpoint_chat_requests_total") for n in counted()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = counted()
        assert after.get('switchpoint_chat_requests_total{model="fresh",status="ok"}') == "1"
        assert 'switchpoint_chat_cost_usd_total{model="fresh"}' in after
        assert not any('model="«other»"' in name for name in after)


def test_openapi_documents_the_chat_route(gw: ThreadServer) -> None:
    schema = httpx.get(f"{gw.base}/openapi.json").json()
    op = schema["paths"]["/v1/chat/completions"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"model", "messages"}
    assert "$ref" not in json.dumps(body)
    assert {"400", "404", "429", "502", "503", "504"} <= set(op["responses"])
