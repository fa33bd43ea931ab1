"""Conversations through the gateway: session pinning and its escapes (F21), tool-call ids that
stay valid when the answering provider changes, and health-aware routing with the circuit
breaker (F20)."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from openai import Stream
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionToolUnionParam,
    ChatCompletionUserMessageParam,
)

from switchpoint.config import load_settings
from switchpoint.learning.events import DEFAULT_TENANT
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    GATEWAY,
    KEYS,
    client,
    config_text,
    log_entry,
    outcomes,
)
from tests.integration.servers import ThreadServer, thread_server

OTHER = "claude-fake-2"
UPSTREAM = {"good": "good", "other": OTHER, "cheap": "cheap", "fresh": "fresh"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
QUALITY_FIRST = {"x-switchpoint-cost-weight": "0"}
PRICE_FIRST = {"x-switchpoint-cost-weight": "1000"}  # `fresh`, the cheapest, wins
TOOLS: list[ChatCompletionToolUnionParam] = [{"type": "function", "function": {
    "name": "lookup", "description": "Look something up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}]


def ask(gw: ThreadServer, messages: list[Any], model: str = "auto",
        headers: dict[str, str] | None = None, key: str = "sk-anything",
        **kw: Any) -> tuple[Any, dict[str, Any]]:
    raw = client(gw, key).chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers or {}, **kw)
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert raw.headers["x-switchpoint-pin"] == entry["pin_state"]
    return raw.parse(), entry


def session() -> dict[str, str]:
    return {"x-session-id": f"s-{uuid.uuid4().hex}"}


def turn(text: str) -> ChatCompletionUserMessageParam:
    return {"role": "user", "content": text}


# Session pinning --------------------------------------------------------------------------------


def test_the_second_turn_stays_on_the_pinned_model(gw: ThreadServer) -> None:
    sid = session()
    first, entry = ask(gw, [turn("Prove Fermat's little theorem.")], headers={**sid,
                                                                               **QUALITY_FIRST})
    pinned = first.model
    assert pinned != "fresh" and entry["pin_state"] == "fresh"
    # (a request with no tenant pins under the deployment's own name, as its decisions have)
    store = gw.service.gateway.pinner.store
    store.flush()  # type: ignore[attr-defined]
    with contextlib.closing(sqlite3.connect(store.path)) as db:  # type: ignore[attr-defined]
        assert {t for (t,) in db.execute("SELECT tenant FROM session_pins")} == {
            DEFAULT_TENANT}
    # Unpinned, the same price-first request goes to `fresh` ...
    control, _ = ask(gw, [turn("And now in one line?")], headers={**session(), **PRICE_FIRST})
    assert control.model == "fresh"
    # ... but the session's second turn stays where its cache is warm (the router is skipped).
    second, entry = ask(gw, [turn("Prove Fermat's little theorem."),
                             {"role": "assistant", "content": first.choices[0].message.content},
                             turn("And now in one line?")], headers={**sid, **PRICE_FIRST})
    assert second.model == pinned
    assert entry["pin_state"] == "hard" and entry["pin"]["pinned_model"] == pinned
    assert entry["pin"]["previous_model"] == pinned and entry["pin"]["age_s"] >= 0
    # The log keeps the session's key (a hash), never the id the client sent.
    assert entry["session_id"] != sid["x-session-id"] and len(entry["session_id"]) == 64
    assert entry["decision_id"] is None


def test_without_a_header_the_session_is_the_first_user_message(gw: ThreadServer) -> None:
    opening = turn(f"Summarise the French revolution {uuid.uuid4().hex}")
    first, entry = ask(gw, [opening], headers=QUALITY_FIRST)
    second, entry2 = ask(gw, [{"role": "system", "content": "Be brief."}, opening,
                              {"role": "assistant", "content": "..."}, turn("Shorter.")],
                         headers=PRICE_FIRST)
    assert second.model == first.model and entry2["pin_state"] == "hard"
    assert entry2["session_id"] == entry["session_id"] and len(entry["session_id"]) == 64


def test_an_image_escapes_a_pin_to_a_model_without_vision(gw: ThreadServer) -> None:
    sid = session()
    first, _ = ask(gw, [turn("Hello")], model="cheap", headers=sid)
    assert first.model == "cheap"
    second, entry = ask(gw, [turn("Hello"), {"role": "assistant", "content": "Hi"},
                             {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                                          IMAGE]}], headers=sid)
    assert entry["pin_state"] == "evicted_vision" and entry["pin"]["previous_model"] == "cheap"
    assert second.model in {"good", "other"}


def test_a_failing_pinned_model_hands_the_session_to_the_model_that_answered(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = session()
    first, _ = ask(gw, [turn("Plan a trip to Rome.")], headers={**sid, **QUALITY_FIRST})
    pinned = first.model
    gw_fake.script(UPSTREAM[pinned], "500", "500")
    second, entry = ask(gw, [turn("Plan a trip to Rome."), turn("Make it cheaper.")],
                        headers=sid)
    assert entry["pin_state"] == "evicted_post_failure" and second.model != pinned
    assert outcomes(entry)[:2] == [(pinned, "server_error"), (pinned, "server_error")]
    third, entry = ask(gw, [turn("Plan a trip to Rome."), turn("And greener?")], headers=sid)
    assert third.model == second.model and entry["pin"]["pinned_model"] == second.model


def test_a_failed_request_evicts_the_pin(gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = session()
    ask(gw, [turn("Write a haiku.")], model="good", headers=sid)
    gw_fake.script("good", "content_filter")
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(model="good", messages=[turn("Write another.")],
                                           extra_headers=sid)
    _, entry = ask(gw, [turn("Write a limerick instead.")], headers=sid)
    assert entry["pin_state"] == "evicted_post_failure"
    assert entry["pin"]["previous_model"] == "good"


def test_a_conversation_that_outgrows_the_pinned_model_is_rehomed(gw: ThreadServer) -> None:
    sid = session()
    first, _ = ask(gw, [turn("Start a long document.")], model="fresh", headers=sid)
    assert first.model == "fresh"  # context window 8000
    long_turn = turn("word " * 10_000)  # ~12.5k tokens: over fresh's 8k, under cheap's 16k
    second, entry = ask(gw, [turn("Start a long document."), long_turn], headers=sid)
    assert entry["pin_state"] == "rehomed_context"
    assert entry["pin"]["pinned_model"] == "cheap"  # the closest larger window
    assert second.model == "cheap" and "fresh" in entry["excluded"]


# Tool calls across providers --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_ids_stay_valid_when_the_provider_changes(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    messages: list[Any] = [turn(f"What is the weather in Oslo? {uuid.uuid4().hex[:6]}")]
    # Turn 1 on the OpenAI-compatible `good`: a tool call with an OpenAI id.
    if stream:
        chunks = list(client(gw).chat.completions.create(model="good", messages=messages,
                                                         tools=TOOLS, stream=True))
        deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        call_id = next(tc.id for tc in deltas if tc.id)
        name = next(tc.function.name for tc in deltas if tc.function and tc.function.name)
        arguments = "".join(tc.function.arguments or "" for tc in deltas if tc.function)
    else:
        answer = client(gw).chat.completions.create(model="good", messages=messages,
                                                    tools=TOOLS)
        [tool_call] = answer.choices[0].message.tool_calls or []
        call = cast(ChatCompletionMessageFunctionToolCall, tool_call)  # TOOLS are functions
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert call_id.startswith("call_") and name == "lookup"
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name,
                                                         "arguments": arguments}}]},
                 {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 C"}]
    # Turn 2: `good` fails, its fallback `other` is Claude: the ids must still pair up there.
    gw_fake.script("good", "500", "500")
    raw = client(gw).chat.completions.with_raw_response.create(
        model="good", messages=messages, tools=TOOLS, stream=stream)
    if stream:
        text = "".join(c.choices[0].delta.content or ""
                       for c in cast(Stream[ChatCompletionChunk], raw.parse()) if c.choices)
    else:
        text = cast(ChatCompletion, raw.parse()).choices[0].message.content or ""
    assert raw.headers["x-switchpoint-model"] == "other"
    assert text.startswith(f"Echo from {OTHER}: tool said")
    sent = gw_fake.requests()[-1]
    assert sent["path"] == "/v1/messages"
    blocks = [b for m in sent["body"]["messages"] for b in m["content"]
              if isinstance(m["content"], list)]
    assert {b["id"] for b in blocks if b["type"] == "tool_use"} == {call_id}
    assert {b["tool_use_id"] for b in blocks if b["type"] == "tool_result"} == {call_id}


def test_an_anthropic_tool_call_id_is_valid_on_an_openai_model(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    messages: list[Any] = [turn(f"Find flights to Lima {uuid.uuid4().hex[:6]}")]
    answer = client(gw).chat.completions.create(model="other", messages=messages, tools=TOOLS)
    [call] = answer.choices[0].message.tool_calls or []
    assert call.id.startswith("toolu_")
    messages += [{"role": "assistant", "content": None,
                  "tool_calls": [call.model_dump(exclude_none=True)]},
                 {"role": "tool", "tool_call_id": call.id, "content": "3 flights"}]
    follow = client(gw).chat.completions.create(model="good", messages=messages, tools=TOOLS)
    assert (follow.choices[0].message.content or "").startswith("Echo from good: tool said")


# Health ------------------------------------------------------------------------------------------


def test_auto_skips_a_model_whose_circuit_is_open(gw: ThreadServer,
                                                  gw_fake: FakeProviderProcess) -> None:
    messages = [turn(f"Derive the quadratic formula {uuid.uuid4().hex[:6]}")]
    _, entry = ask(gw, messages, headers={**session(), **QUALITY_FIRST})
    best = entry["routed_model"]
    health = gw.service.gateway.health
    for _ in range(5):
        health.record_failure(best, "server_error", detail="test")
    snapshot = httpx.get(f"{gw.base}/v1/router/health").json()["models"][best]
    assert snapshot["status"] == "down" and snapshot["circuit"] == "open"
    assert snapshot["retry_in_s"] > 0 and snapshot["recent_errors"][0]["kind"] == "server_error"
    gw_fake.reset()
    answer, entry = ask(gw, messages, headers={**session(), **QUALITY_FIRST})
    assert entry["routed_model"] == best  # the router still ranks it first ...
    assert answer.model != best and best not in entry["models_tried"]  # ... health skips it
    assert UPSTREAM[best] not in [r["body"]["model"] for r in gw_fake.requests()]


def test_a_named_model_with_an_open_circuit_goes_to_its_fallback(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    for _ in range(3):
        gw_fake.script("good", "500", "500")
        answer, entry = ask(gw, [turn(f"ping {uuid.uuid4().hex}")], model="good")
        assert answer.model == "other"
    # The 5th failure in a row opened the circuit: the third request did not retry good.
    assert outcomes(entry) == [("good", "server_error"), ("other", "ok")]
    assert gw.service.gateway.health.state("good") == "open"
    gw_fake.reset()
    answer, entry = ask(gw, [turn(f"ping {uuid.uuid4().hex}")], model="good")
    assert answer.model == "other"
    assert outcomes(entry) == [("good", "circuit_open"), ("other", "ok")]
    assert entry["models_tried"] == ["other"]
    assert [r["body"]["model"] for r in gw_fake.requests()] == [OTHER]  # good never called
    health = httpx.get(f"{gw.base}/v1/router/health").json()["models"]["good"]
    assert health["failures"] == 5 and health["status"] == "down"
    assert health["success_rate"] == 0.0


def test_resetting_health_gives_a_tripped_model_requests_again(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "500", "500", "500", "500", "500")
    for _ in range(3):
        ask(gw, [turn(f"ping {uuid.uuid4().hex}")], model="good")
    assert gw.service.gateway.health.state("good") == "open"
    # The upstream is fixed: the operator need not wait out the cooldown.
    r = httpx.post(f"{gw.base}/v1/router/health/reset")
    assert r.status_code == 200, r.text
    fresh = r.json()["models"]["good"]
    assert fresh["circuit"] == "closed" and fresh["failures"] == 0
    gw_fake.reset()
    answer, entry = ask(gw, [turn(f"ping {uuid.uuid4().hex}")], model="good")
    assert answer.model == "good" and outcomes(entry) == [("good", "ok")]


def test_a_degraded_model_is_ranked_after_healthy_ones(gw: ThreadServer) -> None:
    messages = [turn(f"Write a sonnet about rivers {uuid.uuid4().hex[:6]}")]
    _, entry = ask(gw, messages, headers={**session(), **QUALITY_FIRST})
    best = entry["routed_model"]
    health = gw.service.gateway.health
    health.record_failure(best, "rate_limited", retry_after_s=30)  # degraded, circuit closed
    assert health.status(best) == "degraded"
    answer, entry = ask(gw, messages, headers={**session(), **QUALITY_FIRST})
    assert answer.model != best and entry["models_tried"][0] != best


def test_sessions_db_keeps_at_most_pin_max_sessions_pins_shared_fairly_by_the_tenants(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # sessions.db grew by a row per session answered within the pin window, without a bound;
    # the bound is set by the config and a reload, and shared by the tenants: one tenant's key
    # opening sessions without end pushes out its own pins, never another tenant's.
    import contextlib
    import sqlite3

    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(data), gateway=GATEWAY + "  pin_max_sessions: 2\n")
                      + "auth: keys\ntenants: {acme: {}, globex: {}}\n", encoding="utf-8")

    def pins() -> int:
        server.service.gateway.pinner.store.flush()  # type: ignore[attr-defined]
        with contextlib.closing(sqlite3.connect(data / "sessions.db")) as db:
            return int(db.execute("SELECT COUNT(*) FROM session_pins").fetchone()[0])

    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        acme, globex = (httpx.post(f"{server.base}/v1/router/keys", json={"tenant": tenant},
                                   timeout=30).json()["key"] for tenant in ("acme", "globex"))
        sessions = [session() for _ in range(3)]
        for sid in sessions:
            assert ask(server, [turn("hi")], model="good", headers=sid, key=acme)[1][
                "pin_state"] == "fresh"
        assert pins() == 2
        # The session answered longest ago lost its pin; the latest kept theirs.
        assert ask(server, [turn("hi")], headers=sessions[0], key=acme)[1]["pin_state"] \
            == "fresh"
        assert ask(server, [turn("hi")], headers=sessions[2], key=acme)[1]["pin_state"] \
            == "hard"
        # Another tenant opens as many sessions as the file holds: acme, holding the most,
        # lets its least recently used go first, then globex its own; acme's latest stays.
        for _ in range(2):
            ask(server, [turn("hi")], model="good", headers=session(), key=globex)
        assert pins() == 2
        assert ask(server, [turn("hi")], headers=sessions[2], key=acme)[1]["pin_state"] \
            == "hard"
        config.write_text(config.read_text(encoding="utf-8").replace(
            "pin_max_sessions: 2", "pin_max_sessions: 1"), encoding="utf-8")
        assert httpx.post(f"{server.base}/v1/router/reload", timeout=60).status_code == 200
        ask(server, [turn("hi")], model="good", headers=session(), key=acme)
        assert pins() == 1


def test_the_breakers_window_and_minimum_of_calls_come_from_the_config_and_a_reload(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # Rate rule only (no run of failures opens it), over the last 4 calls once there are 4.
    gateway = GATEWAY + ("  max_attempts_per_model: 1\n  failure_threshold: 100\n"
                         "  error_rate_threshold: 0.5\n  health_window: 4\n"
                         "  health_min_samples: 4\n  health_window_s: 600\n")
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, gateway=gateway), encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        breaker = httpx.get(f"{server.base}/v1/router/health").json()["breaker"]
        assert (breaker["window"], breaker["min_samples"], breaker["window_s"]) == (4, 4, 600)
        gw_fake.script("good", "ok", "ok", "ok", "500", "500")
        answers = [ask(server, [turn(f"ping {uuid.uuid4().hex}")], model="good")[0].model
                   for _ in range(5)]
        assert answers == ["good", "good", "good", "other", "other"]
        # One failure in four calls is under half; the second makes half of the last four
        # (under the defaults, 2 of 5 calls, it would not).
        health = httpx.get(f"{server.base}/v1/router/health").json()["models"]["good"]
        assert health["circuit"] == "open" and health["window_calls"] == 4
        assert (health["successes"], health["failures"]) == (3, 2)
        config.write_text(config.read_text(encoding="utf-8").replace(
            "health_window: 4", "health_window: 8").replace(
            "health_window_s: 600", "health_window_s: 120"), encoding="utf-8")
        assert httpx.post(f"{server.base}/v1/router/reload", timeout=60).status_code == 200
        breaker = httpx.get(f"{server.base}/v1/router/health").json()["breaker"]
        assert (breaker["window"], breaker["min_samples"], breaker["window_s"]) == (8, 4, 120)
        assert server.service.gateway.health.config.window_s == 120
        assert httpx.get(f"{server.base}/v1/router/health").json()["models"]["good"][
            "window_calls"] == 4  # what it had seen is kept
        config.write_text(config.read_text(encoding="utf-8").replace(
            "health_min_samples: 4", "health_min_samples: 9"), encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 400, r.text
        assert "health_min_samples (9) must be <= health_window (8)" in r.text
        breaker = httpx.get(f"{server.base}/v1/router/health").json()["breaker"]
        # The refused reload changed nothing.
        assert (breaker["window"], breaker["min_samples"], breaker["window_s"]) == (8, 4, 120)
