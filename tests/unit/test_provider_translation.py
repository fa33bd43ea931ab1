"""Provider pieces that need no network: error classification, request bodies, the Anthropic
translation both ways, and SSE parsing/encoding."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchpoint.catalog import ModelCard
from switchpoint.errors import (
    AuthError,
    BadRequest,
    ConnectError,
    ContentFiltered,
    ContextLengthExceeded,
    FirstTokenTimeout,
    MalformedResponse,
    MissingApiKey,
    ProviderError,
    RateLimited,
    ReadTimeout,
    ServerError,
    StreamBroken,
    UnsupportedRequest,
)
from switchpoint.gateway.capabilities import SENDS
from switchpoint.gateway.failover import Attempt, FailoverResult, FailoverStream
from switchpoint.gateway.parsing import PART_TYPES, TOO_DEEP
from switchpoint.gateway.providers import Timeouts, is_content_chunk
from switchpoint.gateway.providers.anthropic import (
    AnthropicChunkDecoder,
    anthropic_tool_id,
    from_anthropic_response,
    reported_of,
    to_anthropic_request,
)
from switchpoint.gateway.providers.base import (
    MAX_REPORTED_TOKENS,
    CountedChunk,
    ProviderResponse,
    ReportedSoFar,
    TokenUsage,
    WholeAnswerChunk,
    answer_bytes,
    classify_status,
    parse_retry_after,
    stream_of_answer,
    upstream_json,
    usage_of,
)
from switchpoint.gateway.providers.openai import api_key, rejects_stream_options, upstream_body
from switchpoint.gateway.providers.sse import SSEEvent, iter_sse

pytestmark = pytest.mark.anyio

CLAUDE = ModelCard("claude", provider="anthropic", upstream_model="claude-x-1")


# ---- the error table ---------------------------------------------------------------------

@pytest.mark.parametrize(("error", "retryable", "escalate", "health"), [
    (RateLimited("x"), True, True, True),
    (ServerError("x"), True, True, True),
    (ConnectError("x"), True, True, True),
    (ReadTimeout("x"), True, True, True),
    (FirstTokenTimeout("x"), True, True, True),
    (MalformedResponse("x"), True, True, True),
    (StreamBroken("x"), True, True, True),
    (StreamBroken("x", after_first_byte=True), False, False, True),
    (ContextLengthExceeded("x"), False, True, False),
    (AuthError("x"), False, True, True),
    (MissingApiKey("K"), False, True, False),  # nothing was sent: not the model's health
    (ContentFiltered("x"), False, False, False),
    (BadRequest("x", status=400), False, False, False),
    (BadRequest("x", status=404), False, True, True),
    (UnsupportedRequest("x"), False, True, False),
])
def test_each_error_says_what_to_do(error: ProviderError, retryable: bool, escalate: bool,
                                    health: bool) -> None:
    assert (error.retryable, error.escalate, error.counts_against_health) == (
        retryable, escalate, health)
    assert error.to_openai_error()["error"]["code"] == error.kind


@pytest.mark.parametrize(("status", "body", "cls"), [
    (429, {"error": {"message": "slow", "type": "requests"}}, RateLimited),
    (500, {"error": {"message": "boom"}}, ServerError),
    (503, "<html>down</html>", ServerError),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     ServerError),
    (408, {}, ServerError),
    (401, {"error": {"message": "bad key"}}, AuthError),
    (403, {}, AuthError),
    (400, {"error": {"code": "context_length_exceeded", "message": "too long"}},
     ContextLengthExceeded),
    (400, {"type": "error", "error": {"type": "invalid_request_error",
                                      "message": "prompt is too long: 210000 tokens > 200000"}},
     ContextLengthExceeded),
    (400, {"error": {"code": "content_filter", "message": "filtered"}}, ContentFiltered),
    (400, {"type": "error", "error": {"type": "invalid_request_error",
                                      "message": "Output blocked by content filtering policy"}},
     ContentFiltered),
    (400, {"error": {"message": "temperature must be <= 2"}}, BadRequest),
    (404, {"error": {"message": "model not found"}}, BadRequest),
])
def test_classify_status(status: int, body: object, cls: type[ProviderError]) -> None:
    err = classify_status(status, body, {}, model="m")
    assert type(err) is cls
    assert err.status == status and err.body == body and err.model == "m"


def test_503_with_retry_after_is_a_rate_limit() -> None:
    err = classify_status(503, {}, {"Retry-After": "3"})
    assert isinstance(err, RateLimited) and err.retry_after == 3.0 and err.status == 503


@pytest.mark.parametrize("body", [
    {"error": {"message": "busy", "type": "server_error", "code": "server_error"}},
    {"type": "error", "error": {"type": "api_error", "message": "busy"}},
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
], ids=["openai", "anthropic", "anthropic-overloaded"])
@pytest.mark.parametrize("status", [503, 529])
def test_a_5xx_s_wait_decides_its_kind_in_either_dialect(status: int, body: object) -> None:
    # Its status and headers decide: with a wait it is a rate limit, without one a server error.
    waited = classify_status(status, body, {"retry-after-ms": "1500"})
    assert isinstance(waited, RateLimited) and waited.retry_after == 1.5
    assert waited.status == status
    assert type(classify_status(status, body, {})) is ServerError


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"Retry-After": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    when = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after({"retry-after": when}, now=1_000_000) == pytest.approx(10)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-1"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York", "UTC"])
def test_an_http_date_without_a_zone_is_gmt_whatever_the_process_s_zone(
        zone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry-After's obsolete asctime form and a ``-0000`` zone are GMT, as HTTP says: under
    TZ=Asia/Tokyo they were read as local time, nine hours early (no wait at all), and
    under TZ=America/New_York hours late."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        for when in ("Mon Jan 12 13:46:50 1970", "Mon, 12 Jan 1970 13:46:50 -0000",
                     "Mon, 12 Jan 1970 13:46:50 GMT"):
            assert parse_retry_after({"retry-after": when}, now=1_000_000) == pytest.approx(10)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_timeouts_are_validated() -> None:
    with pytest.raises(ValueError, match="first_token_s"):
        Timeouts(first_token_s=0)


# ---- OpenAI body and key ---------------------------------------------------------------

def test_upstream_body_changes_only_model_and_streaming() -> None:
    card = ModelCard("fast", upstream_model="vendor/fast-1")
    req = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3,
           "response_format": {"type": "json_object"}, "tools": [], "x_custom": [1, 2]}
    body = upstream_body(req, card, stream=False)
    assert body == {**req, "model": "vendor/fast-1"}
    assert req["model"] == "auto"  # not mutated
    streamed = upstream_body({**req, "stream_options": {"other": 1}}, card, stream=True)
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"other": 1, "include_usage": True}
    plain = upstream_body({**req, "stream": True, "stream_options": {}}, ModelCard("n"),
                          stream=False)
    assert plain["stream"] is False and "stream_options" not in plain and plain["model"] == "n"
    # A model that does not accept stream_options gets none, not even the client's own.
    bare = upstream_body({**req, "stream_options": {"include_usage": True}}, card, stream=True,
                         stream_usage=False)
    assert bare["stream"] is True and "stream_options" not in bare


def test_api_key_from_the_named_env_var() -> None:
    assert api_key(ModelCard("a", api_key_env="K"), {"K": "sk-1"}) == "sk-1"
    with pytest.raises(MissingApiKey, match="K_MISSING") as info:
        api_key(ModelCard("a", api_key_env="K_MISSING"), {"K_MISSING": ""})
    assert info.value.env_var == "K_MISSING" and info.value.model == "a"
    assert "export K_MISSING=<key>" in str(info.value)


def test_api_key_defaults_to_the_providers_variable_at_the_providers_url() -> None:
    assert api_key(ModelCard("a"), {"OPENAI_API_KEY": "sk-o"}) == "sk-o"
    with pytest.raises(MissingApiKey, match="MISTRAL_API_KEY"):
        api_key(ModelCard("m", provider="mistral"), {})
    at_home = ModelCard("m", provider="mistral", base_url="https://api.mistral.ai/v1/")
    assert api_key(at_home, {"MISTRAL_API_KEY": "k"}) == "k"
    # A URL of the model's own (a proxy, a local server) gets no key unless one is named ...
    assert api_key(ModelCard("p", base_url="http://127.0.0.1:9/v1"), {"OPENAI_API_KEY": "x"}) \
        is None
    # ... and local servers need none.
    assert api_key(ModelCard("l", provider="ollama"), {}) is None
    assert api_key(ModelCard("v", provider="vllm", api_key_env="VLLM_KEY"), {"VLLM_KEY": "t"}) \
        == "t"


def test_rejecting_stream_options_is_recognised_from_the_error_body() -> None:
    mistral = {"object": "error", "message": {"detail": [{
        "type": "extra_forbidden", "loc": ["body", "stream_options", "include_usage"],
        "msg": "Extra inputs are not permitted"}]}, "type": "invalid_request_error"}
    openai_style = {"error": {"message": "Unrecognized request argument supplied: "
                                         "stream_options", "type": "invalid_request_error"}}
    for status, body in ((422, mistral), (400, openai_style)):
        error = classify_status(status, body, {})
        assert isinstance(error, BadRequest) and rejects_stream_options(error)
    other = classify_status(400, {"error": {"message": "temperature must be <= 2"}}, {})
    assert isinstance(other, BadRequest) and not rejects_stream_options(other)
    assert not rejects_stream_options(BadRequest("stream_options", status=404))


# ---- OpenAI → Anthropic ------------------------------------------------------------------

def test_system_text_images_and_max_tokens() -> None:
    req = {"model": "auto", "temperature": 1.7, "top_p": 0.9, "stop": "END", "user": "u1",
           "response_format": {"type": "json_object"},
           "messages": [
               {"role": "system", "content": "Be brief."},
               {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
               {"role": "user", "content": [
                   {"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                   {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}}]},
           ]}
    body = to_anthropic_request(req, CLAUDE, stream=True)
    assert body["model"] == "claude-x-1"
    assert body["system"] == "Be brief.\n\nNo emoji."
    assert body["max_tokens"] == 4096 and body["stream"] is True
    assert body["temperature"] == 1.0 and body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u1"}
    assert "response_format" not in body
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}}]}]
    assert to_anthropic_request({**req, "max_completion_tokens": 77}, CLAUDE,
                                stream=False)["max_tokens"] == 77


@pytest.mark.parametrize(("url", "media", "data"), [
    ("data:image/png;name=cat.png;base64,iVBOR", "image/png", "iVBOR"),
    ("data:IMAGE/JPEG;charset=binary;BASE64,/9j/4A==", "image/jpeg", "/9j/4A=="),
    ("data:image/webp;base64,UklGR", "image/webp", "UklGR"),
    ('data:image/gif;name="a,b;c";base64,R0lGOD', "image/gif", "R0lGOD=="),  # (padded)
], ids=["name-parameter", "upper-case-and-parameter", "webp", "quoted-parameter"])
def test_every_base64_data_url_of_a_type_anthropic_takes_is_a_base64_block(
        url: str, media: str, data: str) -> None:
    req = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}
    [block] = to_anthropic_request(req, CLAUDE, stream=False)["messages"][0]["content"]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": media,
                                                 "data": data}}


@pytest.mark.parametrize(("url", "says"), [
    ("data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg'/>",
     'an image given as a data URL that is not base64 ("image/svg+xml")'),
    ("data:image/png,%89PNG%0D%0A",
     'an image given as a data URL that is not base64 ("image/png")'),
    ("data:image/bmp;base64,Qk0=", 'an image given as a data URL of type "image/bmp"'),
    # (the request check refuses these first; the adapter never sends them as URL images)
    ("file:///etc/passwd", "url uses the file scheme, which no provider fetches"),
    ("ftp://x.test/a.png", "url uses the ftp scheme, which no provider fetches"),
    ("a.png", "url has no scheme"),
], ids=["svg-text", "percent-encoded", "bmp", "file", "ftp", "no-scheme"])
def test_an_image_anthropic_cannot_take_is_refused_not_sent_as_a_url(
        url: str, says: str) -> None:
    req = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(UnsupportedRequest, match=re.escape(says)):
        to_anthropic_request(req, CLAUDE, stream=False)


def test_tools_tool_choice_and_tool_ids_pass_through() -> None:
    tools: list[dict[str, Any]] = [{"type": "function", "function": {
        "name": "weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    req = {"tools": tools, "tool_choice": "required", "parallel_tool_calls": False, "messages": [
        {"role": "user", "content": "Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": "functions.weather:1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
        {"role": "tool", "tool_call_id": "functions.weather:1",
         "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks"},
    ]}
    body = to_anthropic_request(req, CLAUDE, stream=False)
    assert body["tools"] == [{"name": "weather", "description": "Weather now",
                              "input_schema": tools[0]["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    first, assistant, results = body["messages"]
    assert first == {"role": "user", "content": [{"type": "text", "text": "Paris and Rome?"}]}
    assert assistant["content"][0] == {"type": "text", "text": "Checking."}
    sanitized = anthropic_tool_id("functions.weather:1")
    assert sanitized != "functions.weather:1" and sanitized == anthropic_tool_id(
        "functions.weather:1")
    assert [b["id"] for b in assistant["content"][1:]] == ["call_abc", sanitized]
    assert assistant["content"][1]["input"] == {"city": "Paris"}
    # Both tool results and the next user text share one user turn, ids matching the uses.
    assert results["role"] == "user"
    assert [b.get("tool_use_id") for b in results["content"]] == ["call_abc", sanitized, None]
    assert results["content"][1]["content"] == "rain"
    assert results["content"][2] == {"type": "text", "text": "thanks"}


def test_a_tool_call_id_is_passed_to_anthropic_as_it_is_only_when_all_of_it_is_valid() -> None:
    assert anthropic_tool_id("call_abc-1") == "call_abc-1"
    # A trailing newline is not part of a valid id: it is replaced like any other character.
    sanitized = anthropic_tool_id("call_abc\n")
    assert sanitized.startswith("call_abc_") and "\n" not in sanitized


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
])
def test_tool_choice_forms(choice: object, expected: dict[str, Any]) -> None:
    req = {"tool_choice": choice, "messages": [{"role": "user", "content": "x"}],
           "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert to_anthropic_request(req, CLAUDE, stream=False)["tool_choice"] == expected



def _functions(*names: str) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in names]


@pytest.mark.parametrize(("mode", "expected"), [("auto", "auto"), ("required", "any")])
@pytest.mark.parametrize("listed", [
    [{"type": "function", "function": {"name": "search"}},
     {"type": "function", "function": {"name": "fetch"}}],
    [{"type": "function", "name": "search"}, {"type": "function", "name": "fetch"}],
], ids=["chat-form", "flat-form"])
def test_an_allowed_tools_choice_sends_only_the_tools_it_lists(
        mode: str, expected: str, listed: list[dict[str, Any]]) -> None:
    # OpenAI's allowed_tools: the model may call these tools only (the others stay declared,
    # for the prompt cache). The Messages API has no such choice: it is given those tools.
    req = {"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": False,
           "tools": _functions("lookup", "search", "fetch"),
           "tool_choice": {"type": "allowed_tools",
                           "allowed_tools": {"mode": mode, "tools": listed}}}
    body = to_anthropic_request(req, CLAUDE, stream=False)
    assert [t["name"] for t in body["tools"]] == ["search", "fetch"]
    assert body["tool_choice"] == {"type": expected, "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("allowed", "says"), [
    ({"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]},
     "lists none of the tools the request declares"),
    ({"mode": "sometimes", "tools": []}, 'is not a mode ("auto" or "required")'),
    ({"mode": "auto", "tools": [{"type": "function"}]}, "not a function with a name"),
], ids=["undeclared", "bad-mode", "no-name"])
def test_an_allowed_tools_choice_the_messages_api_cannot_express_is_refused(
        allowed: dict[str, Any], says: str) -> None:
    req = {"messages": [{"role": "user", "content": "x"}], "tools": _functions("lookup"),
           "tool_choice": {"type": "allowed_tools", "allowed_tools": allowed}}
    with pytest.raises(UnsupportedRequest, match=re.escape(says)):
        to_anthropic_request(req, CLAUDE, stream=False)


@pytest.mark.parametrize(("choice", "expected"), [
    (None, {"type": "auto"}), ("auto", {"type": "auto"}), ("none", {"type": "none"}),
    ({"name": "f"}, {"type": "tool", "name": "f"}),
])
def test_legacy_function_call_choice_forms(choice: object, expected: dict[str, Any]) -> None:
    # A legacy answer carries one call: the model is asked for no more.
    req = {"messages": [{"role": "user", "content": "x"}], "function_call": choice,
           "functions": [{"name": "f"}]}
    body = to_anthropic_request(req, CLAUDE, stream=False)
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object",
                                                            "properties": {}}}]
    assert body["tool_choice"] == (expected if expected["type"] == "none"
                                   else {**expected, "disable_parallel_tool_use": True})


def test_each_function_result_answers_the_function_call_before_it() -> None:
    def call(i: int) -> dict[str, Any]:
        return {"role": "assistant", "content": None,
                "function_call": {"name": "f", "arguments": f'{{"i": {i}}}'}}

    req = {"messages": [{"role": "user", "content": "x"}, call(1),
                        {"role": "function", "name": "f", "content": "one"}, call(3),
                        {"role": "function", "name": "f", "content": None}]}
    messages = to_anthropic_request(req, CLAUDE, stream=False)["messages"]
    assert [(m["role"], m["content"][0]["type"]) for m in messages] == [
        ("user", "text"), ("assistant", "tool_use"), ("user", "tool_result"),
        ("assistant", "tool_use"), ("user", "tool_result")]
    assert [(messages[i]["content"][0]["id"], messages[i + 1]["content"][0]) for i in (1, 3)] \
        == [("function_call_1", {"type": "tool_result", "tool_use_id": "function_call_1",
                                 "content": "one"}),
            ("function_call_3", {"type": "tool_result", "tool_use_id": "function_call_3"})]
    assert messages[3]["content"][0]["input"] == {"i": 3}
    with pytest.raises(UnsupportedRequest, match=r"messages\[5\] \(role function\) answers no"):
        to_anthropic_request({"messages": [*req["messages"][:4], req["messages"][2],
                                           req["messages"][2]]}, CLAUDE, stream=False)
    with pytest.raises(UnsupportedRequest, match=r"messages\[1\]\.function_call\.arguments"):
        to_anthropic_request({"messages": [req["messages"][0], {
            "role": "assistant", "function_call": {"name": "f", "arguments": "[1]"}}]},
            CLAUDE, stream=False)


def test_an_assistants_refusal_is_sent_as_its_text_when_it_said_nothing_else() -> None:
    def sent(turn: dict[str, Any]) -> list[Any]:
        req = {"messages": [{"role": "user", "content": "x"}, turn]}
        return list(to_anthropic_request(req, CLAUDE, stream=False)["messages"][1]["content"])

    assert sent({"role": "assistant", "content": None, "refusal": "No."}) == [
        {"type": "text", "text": "No."}]
    assert sent({"role": "assistant", "content": [], "refusal": "No."}) == [
        {"type": "text", "text": "No."}]
    assert sent({"role": "assistant", "content": "Sure.", "refusal": "No."}) == [
        {"type": "text", "text": "Sure."}]
    assert sent({"role": "assistant", "content": [PARTS["refusal"]]}) == [
        {"type": "text", "text": "No."}]


def test_a_legacy_answer_carries_one_function_call() -> None:
    message = {"id": "msg_1", "model": "claude-x-1", "stop_reason": "tool_use",
               "content": [{"type": "tool_use", "id": "toolu_1", "name": "f",
                            "input": {"a": 1}},
                           {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}],
               "usage": {"input_tokens": 10, "output_tokens": 7}}
    choice = from_anthropic_response(message, legacy=True)["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"] == {"role": "assistant", "content": None,
                                 "function_call": {"name": "f", "arguments": '{"a": 1}'}}
    d = AnthropicChunkDecoder("claude", legacy=True)
    events = _events(
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {}}}),
        *[e for i, name in enumerate(("f", "g")) for e in (
            ("content_block_start", {"type": "content_block_start", "index": i,
                                     "content_block": {"type": "tool_use", "id": f"t{i}",
                                                       "name": name, "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                "type": "input_json_delta", "partial_json": '{"a": 1}'}}))],
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
        ("message_stop", {"type": "message_stop"}))
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
              for e in events for c in d.feed(e) if c["choices"]]
    assert deltas[1:] == [({"function_call": {"name": "f", "arguments": ""}}, None),
                          ({"function_call": {"arguments": '{"a": 1}'}}, None),
                          ({}, "function_call")]


@pytest.mark.parametrize("req", [
    {"messages": []},
    {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
    {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": [{"role": "critic", "content": "x"}]},
    {"messages": [{"role": "user", "content": "x"},
                  {"role": "assistant", "content": None, "audio": {"id": "audio_1"}}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "function", "name": "f"}]},
])
def test_untranslatable_requests_raise_unsupported(req: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedRequest):
        to_anthropic_request(req, CLAUDE, stream=False)


# One part of each type the request check takes, as a client writes it.
PARTS: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": "hi"},
    "refusal": {"type": "refusal", "refusal": "No."},
    "image_url": {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
    "input_audio": {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    "file": {"type": "file", "file": {"file_id": "file-abc"}},
}


@pytest.mark.parametrize(("role", "kind"), [(role, kind) for role, kinds in PART_TYPES.items()
                                            for kind in kinds])
def test_the_adapter_sends_exactly_the_parts_the_capability_table_says(role: str,
                                                                        kind: str) -> None:
    # Planning leaves a model out by the table: the adapter must send all it lists, and
    # refuse (before any call) all it does not.
    message: dict[str, Any] = {"role": role, "content": [PARTS[kind]]}
    if role in ("tool", "function"):
        message.update(tool_call_id="c", name="f")
    # (each result answers the call before it)
    call = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}],
            "function_call": {"name": "f"}}
    req = {"messages": [{"role": "user", "content": "q"}, call, message]}
    if kind in SENDS["anthropic"].get(role, ()):
        assert to_anthropic_request(req, CLAUDE, stream=False)["messages"]
    else:
        with pytest.raises(UnsupportedRequest, match="cannot translate"):
            to_anthropic_request(req, CLAUDE, stream=False)
    assert SENDS["openai"] == PART_TYPES  # (sent as written)


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": -5, "completion_tokens": 3}, {"prompt_tokens": 2**64, "completion_tokens": 3},
    {"prompt_tokens": True, "completion_tokens": 3}, {"prompt_tokens": 2.0, "completion_tokens": 3},
    {"prompt_tokens": 5, "completion_tokens": MAX_REPORTED_TOKENS + 1}, {"prompt_tokens": 5}])
def test_usage_that_cannot_be_true_is_not_believed(usage: dict[str, object]) -> None:
    assert TokenUsage.from_openai(usage) is None  # the answer is charged its worst case
    assert TokenUsage.from_openai({"prompt_tokens": 5, "completion_tokens": 0}) == TokenUsage(5, 0)


@pytest.mark.parametrize("usage", [
    {"input_tokens": -5, "output_tokens": 3}, {"input_tokens": 5, "output_tokens": 2**64},
    {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 1.5},
    # a sum that looks fine is still not believed
    {"input_tokens": 10**30, "cache_read_input_tokens": -10**30, "output_tokens": 3},
    # missing or falsy counts are not zero tokens
    {}, {"input_tokens": False, "output_tokens": False}, {"input_tokens": 0.0, "output_tokens": 0},
    {"input_tokens": 5}, {"input_tokens": None, "output_tokens": 3}])
def test_anthropic_usage_that_cannot_be_true_is_not_believed(usage: dict[str, object]) -> None:
    message = {"id": "msg_1", "model": "claude-x-1", "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "hi"}], "usage": usage}
    assert TokenUsage.from_openai(from_anthropic_response(message).get("usage")) is None
    message["usage"] = {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": None}
    assert TokenUsage.from_openai(from_anthropic_response(message)["usage"]) == TokenUsage(5, 3)


def test_anthropic_answer_to_openai_keeps_toolu_ids() -> None:
    message = {"id": "msg_1", "model": "claude-x-1", "stop_reason": "tool_use",
               "content": [{"type": "text", "text": "Let me look."},
                           {"type": "tool_use", "id": "toolu_01ABC", "name": "weather",
                            "input": {"city": "Paris"}}],
               "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}}
    body = from_anthropic_response(message)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_01ABC", "type": "function",
                                                "function": {"name": "weather",
                                                             "arguments": '{"city": "Paris"}'}}]
    assert body["usage"]["prompt_tokens"] == 15 and body["usage"]["completion_tokens"] == 7
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 5}
    with pytest.raises(MalformedResponse):
        from_anthropic_response({"id": "x"})


def _events(*pairs: tuple[str, dict[str, Any]]) -> list[SSEEvent]:
    return [SSEEvent(json.dumps(p), e) for e, p in pairs]


@pytest.mark.parametrize(("start", "delta"), [
    ({}, {}), ({"input_tokens": 5, "output_tokens": 2.7}, {}),
    ({"input_tokens": 5}, {"output_tokens": -1}), ("str", {"output_tokens": 3})])
def test_an_anthropic_stream_whose_usage_cannot_be_true_reports_none(
        start: object, delta: object) -> None:
    d = AnthropicChunkDecoder("claude")
    chunks = [c for e in _events(
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": start}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": delta}),
        ("message_stop", {"type": "message_stop"})) for c in d.feed(e)]
    assert chunks[-1]["usage"] is None  # (none believed: charged an estimate)


def _thinking_stream(start: dict[str, Any], *, stop: bool) -> list[SSEEvent]:
    """A Messages API stream whose message_start reports ``start``, thinking 2 + 40
    characters (and a signature), then answering "Hi there", with a stop reason (``stop``)
    but never its final usage."""
    return _events(
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": start}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "ab"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "x" * 40}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "s" * 50}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Hi there"}}),
        *([("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}})]
          if stop else []),
        ("message_stop", {"type": "message_stop"}))


def test_an_anthropic_stream_carries_what_its_start_reported_and_the_thinking_it_drops(
        ) -> None:
    # message_start's counts (the prompt's, its cache's included, and the output's so far)
    # and the bytes of thinking, which is not relayed, ride on each chunk after them.
    d = AnthropicChunkDecoder("claude")
    start = {"input_tokens": 30, "cache_creation_input_tokens": 5,
             "cache_read_input_tokens": 7, "output_tokens": 9}
    chunks = [c for e in _thinking_stream(start, stop=True) for c in d.feed(e)]
    assert all(isinstance(c, CountedChunk) for c in chunks)
    reported = [c.reported for c in chunks if isinstance(c, CountedChunk)]
    assert reported[0] == ReportedSoFar(42, 9, 0)
    assert reported[1:] == [ReportedSoFar(42, 9, 42)] * (len(chunks) - 1)
    assert [c["choices"][0]["delta"] for c in chunks if c["choices"]] == [
        {"role": "assistant", "content": ""}, {"content": "Hi there"}, {}]
    assert chunks[-1]["usage"] is None
    # A count message_start gives that cannot be true is not believed: the prompt's unknown.
    d = AnthropicChunkDecoder("claude")
    chunks = [c for e in _thinking_stream({"input_tokens": -1, "output_tokens": 2.5},
                                          stop=True) for c in d.feed(e)]
    assert {c.reported for c in chunks if isinstance(c, CountedChunk)} == {
        ReportedSoFar(None, 0, 0), ReportedSoFar(None, 0, 42)}


@pytest.mark.parametrize(("output", "tokens"), [(9, 13), (500, 500)])
async def test_a_whole_stream_without_usage_is_charged_an_estimate_of_what_it_used(
        output: int, tokens: int) -> None:
    # An Anthropic stream finished whole without its final usage: charged the prompt's tokens
    # message_start reported and the answer's estimated from what was relayed and thought
    # (8 + 42 characters, 13 tokens), never fewer than message_start's count of the output,
    # at its prices and never past the worst case.
    card = ModelCard("claude", provider="anthropic", input_per_mtok=1, output_per_mtok=2)
    events = _thinking_stream({"input_tokens": 30, "output_tokens": output}, stop=True)
    d = AnthropicChunkDecoder("claude")
    chunks = [c for e in events for c in d.feed(e)]

    async def nothing() -> AsyncIterator[list[dict[str, Any]]]:
        return
        yield []

    stream = FailoverStream(card, nothing(), chunks, True, [Attempt("claude", 1, "ok")],
                            health=None, client_wants_usage=False, rewrite_model=False,
                            ttft_ms=1.0)
    assert [c async for c in stream]
    assert stream.completed and stream.usage is None
    use = stream.use(prompt_tokens=1000, worst_usd=1.0)
    assert use == (card.price(30, tokens), TokenUsage(30, tokens), True, 8, 42, True, True)
    assert stream.use(1000, worst_usd=1e-6).cost_usd == 1e-6


def test_an_answer_counts_the_utf8_bytes_of_every_choice_text_and_call() -> None:
    # A whole answer's choices, by their message, as a chunk's by their delta: the text, a
    # refusal, each call's arguments, a legacy function_call's; CJK text its 3 bytes a
    # character, a lone surrogate its 3 without raising.
    body = {"choices": [
        {"index": 0, "message": {"role": "assistant", "content": "你好 ok"}},
        {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            {"id": "d", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}},
        {"index": 2, "message": {"role": "assistant", "content": "\ud800",
                                 "refusal": "no", "function_call": {"arguments": "{}"}}}]}
    assert answer_bytes(body, "message") == (6 + 3) + (7 + 2) + (3 + 2 + 2)
    assert answer_bytes(body) == 0  # (no delta: not a chunk)
    chunk = {"choices": [{"index": 0, "delta": {"content": "你好 ok"}}]}
    assert answer_bytes(chunk) == 9


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_an_answer_counts_the_reasoning_a_server_sends_beside_its_text(key: str) -> None:
    # Reasoning an OpenAI-compatible server sends beside the text (DeepSeek's and vLLM's
    # reasoning_content, others' reasoning) is generated and billed: counted, in a whole
    # answer's message and a stream's delta, its UTF-8 bytes; a server sending both fields
    # sends the same text twice, counted once.
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok",
                                                 key: "想 it"}}]}
    assert answer_bytes(body, "message") == 2 + 6
    chunk = {"choices": [{"index": 0, "delta": {"content": None, key: "想 it"}}]}
    assert answer_bytes(chunk) == 6
    both = {"choices": [{"index": 0, "delta": {"reasoning_content": "abc",
                                               "reasoning": "abc"}}]}
    assert answer_bytes(both) == 3
    assert answer_bytes({"choices": [{"index": 0, "delta": {key: None}}]}) == 0


async def test_an_anthropic_stream_s_final_answer_count_is_the_least_it_is_estimated_at(
        ) -> None:
    # The final usage holds a prompt count past belief, so it is not believed and the stream
    # is charged an estimate; the answer's count it gave beside it (500) is believable, and the
    # estimate is never less, as it is never less than message_start's.
    card = ModelCard("claude", provider="anthropic", input_per_mtok=1, output_per_mtok=2)
    d = AnthropicChunkDecoder("claude")
    chunks = [c for e in _events(
        ("message_start", {"type": "message_start", "message": {
            "id": "m", "model": "claude", "usage": {"input_tokens": -1, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi there"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 500}}),
        ("message_stop", {"type": "message_stop"})) for c in d.feed(e)]
    assert chunks[-1]["usage"] is None
    assert isinstance(chunks[-1], CountedChunk)
    assert chunks[-1].reported == ReportedSoFar(None, 500, 0)

    async def nothing() -> AsyncIterator[list[dict[str, Any]]]:
        return
        yield []

    stream = FailoverStream(card, nothing(), chunks, True, [Attempt("claude", 1, "ok")],
                            health=None, client_wants_usage=False, rewrite_model=False,
                            ttft_ms=1.0)
    assert [c async for c in stream]
    assert stream.completed and stream.usage is None
    use = stream.use(prompt_tokens=1000, worst_usd=1.0)
    assert use.estimated and use.usage == TokenUsage(1000, 500)
    assert use.cost_usd == card.price(1000, 500)


def test_an_anthropic_answer_counts_its_redacted_thinking_plain_and_streamed() -> None:
    # A redacted_thinking block is thinking the model generated and is billed for, sent
    # encrypted: counted as its data's bytes, beside the thinking blocks, plain or streamed
    # (where it comes whole in its content_block_start).
    message = {"id": "m", "model": "claude", "stop_reason": "end_turn", "content": [
        {"type": "thinking", "thinking": "想" * 4, "signature": "s"},
        {"type": "redacted_thinking", "data": "EnCrYpTeD" * 3},
        {"type": "text", "text": "hi"}], "usage": {"input_tokens": 30}}
    assert reported_of(message) == ReportedSoFar(30, 0, 12 + 27)
    assert from_anthropic_response(message)["choices"][0]["message"]["content"] == "hi"
    d = AnthropicChunkDecoder("claude")
    chunks = [c for e in _events(
        ("message_start", {"type": "message_start", "message": {
            "id": "m", "model": "claude", "usage": {"input_tokens": 30, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "redacted_thinking",
                                                   "data": "EnCrYpTeD" * 3}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "hi"}}))
        for c in d.feed(e)]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "hi"}]
    assert isinstance(chunks[-1], CountedChunk)
    assert chunks[-1].reported == ReportedSoFar(30, 1, 27)


async def test_an_anthropic_stream_answered_whole_carries_its_prompt_count_and_thinking(
        ) -> None:
    # A stream request the upstream answered with one whole answer: each chunk carries what
    # the answer reported beside its usage (its prompt's tokens, its thinking, redacted
    # included), so a whole answer without usage to believe is estimated as a plain one is.
    card = ModelCard("claude", provider="anthropic", input_per_mtok=1, output_per_mtok=2)
    message = {"id": "m", "model": "claude", "stop_reason": "end_turn", "content": [
        {"type": "thinking", "thinking": "t" * 40, "signature": "s"},
        {"type": "redacted_thinking", "data": "r" * 20},
        {"type": "text", "text": "Hi there"}],
        "usage": {"input_tokens": 30, "output_tokens": -1}}
    chunks = AnthropicChunkDecoder("claude").whole(message)
    assert isinstance(chunks[0], WholeAnswerChunk)
    assert [c.reported for c in chunks if isinstance(c, CountedChunk)] == [
        ReportedSoFar(30, 0, 60)] * len(chunks)

    async def nothing() -> AsyncIterator[list[dict[str, Any]]]:
        return
        yield []

    stream = FailoverStream(card, nothing(), chunks, True, [Attempt("claude", 1, "ok")],
                            health=None, client_wants_usage=False, rewrite_model=False,
                            ttft_ms=1.0)
    assert [c async for c in stream]
    assert stream.whole and stream.usage is None
    use = stream.use(prompt_tokens=1000, worst_usd=1.0)
    # (8 bytes of text relayed and 60 of thinking: 17 tokens; the prompt as reported)
    assert use == (card.price(30, 17), TokenUsage(30, 17), True, 8, 60, True, True)
    # Without anything reported beside it, a whole answer's chunks are as they were.
    plain = stream_of_answer(from_anthropic_response(message))
    assert isinstance(plain[0], WholeAnswerChunk)
    assert not any(isinstance(c, CountedChunk) for c in plain)


@pytest.mark.parametrize(("usage", "prompt", "tokens"), [
    (None, 1000, 20), ({"input_tokens": 30, "output_tokens": -1}, 30, 20),
    ({"input_tokens": -1, "output_tokens": 500}, 1000, 500),
    ({"input_tokens": 30, "output_tokens": 7}, 30, 7)],
    ids=["no-usage", "output-past-belief", "prompt-past-belief", "believed"])
def test_a_plain_anthropic_answer_without_usage_is_charged_its_text_tool_input_and_thinking(
        usage: dict[str, Any] | None, prompt: int, tokens: int) -> None:
    # A Messages API answer without usage to believe: charged its prompt's tokens (as it
    # reported them, when it did so believably, else the gateway's estimate) and the answer's
    # text (6 bytes), its call's input (as arguments, in UTF-8 as OpenAI writes them, not
    # escaped: {"q": "你"}, 12 bytes) and the thinking it generated (the OpenAI body drops:
    # 60 bytes), 78 bytes, 20 tokens, never past its worst case, nor fewer than a believable
    # count of the answer's tokens beside a prompt count past belief; usage it believes, as
    # reported.
    card = ModelCard("claude", provider="anthropic", input_per_mtok=1, output_per_mtok=2)
    message = {"id": "m", "model": "claude", "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "想" * 20, "signature": "s"},
        {"type": "text", "text": "你好"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"q": "你"}}],
        **({"usage": usage} if usage is not None else {})}
    body = from_anthropic_response(message)
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == (
        '{"q": "你"}')
    assert ("usage" in body) == (tokens == 7)
    result = FailoverResult("claude", card, ProviderResponse(body, "claude",
                                                             reported=reported_of(message)),
                            [Attempt("claude", 1, "ok")])
    use = result.use(prompt_tokens=1000, worst_usd=1.0)
    assert use.usage == TokenUsage(prompt, tokens)
    assert use.estimated == ("usage" not in body) and not use.stream
    assert use.prompt_reported == (prompt == 30 and use.estimated)
    assert use.cost_usd == card.price(prompt, tokens)
    if use.estimated:
        assert result.use(1000, worst_usd=1e-6).cost_usd == 1e-6


@pytest.mark.parametrize("message", [
    {"id": "m", "usage": {"input_tokens": 5, "output_tokens": 1}, "content": "x"},
    {"id": ["not", "a", "string"], "model": 3, "usage": [1, 2]}])
def test_an_anthropic_event_that_does_not_read_as_the_api_is_a_broken_stream(
        message: object) -> None:
    d = AnthropicChunkDecoder("claude")
    event = SSEEvent(json.dumps({"type": "content_block_start", "index": "zero",
                                 "content_block": {"type": "tool_use"}}), "content_block_start")
    d.feed(SSEEvent(json.dumps({"type": "message_start", "message": message}),
                    "message_start"))
    with pytest.raises(StreamBroken, match="does not read as the Messages API"):
        d.feed(event)


@pytest.mark.parametrize("text", ['{"usage": {"prompt_tokens": NaN}}', '{"a": Infinity}',
                                  '{"a": -Infinity}', '{"a": 1e400}'])
def test_upstream_json_refuses_numbers_an_answer_cannot_relay(text: str) -> None:
    with pytest.raises(ValueError):
        upstream_json(text)
    assert upstream_json('{"a": 1.5e300, "b": -2}') == {"a": 1.5e300, "b": -2}


def test_anthropic_stream_events_become_openai_chunks() -> None:
    d = AnthropicChunkDecoder("claude")
    events = _events(
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_9", "model": "claude-x-1", "usage": {"input_tokens": 12,
                                                            "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "toolu_7",
                                                   "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a"'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    )
    chunks = [c for e in events for c in d.feed(e)]
    assert d.done
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert not is_content_chunk(chunks[0])
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"] == "toolu_7"
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for c in chunks[2:5])
    assert json.loads(args) == {"a": 1}
    assert chunks[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert chunks[-1]["usage"]["prompt_tokens"] == 12
    assert all(c["id"] == "msg_9" and c["model"] == "claude-x-1" for c in chunks)


def test_anthropic_stream_errors() -> None:
    with pytest.raises(StreamBroken):
        AnthropicChunkDecoder("c").feed(SSEEvent("{not json"))
    overloaded = SSEEvent(json.dumps({"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}), "error")
    with pytest.raises(ServerError):
        AnthropicChunkDecoder("c").feed(overloaded)


# ---- SSE ------------------------------------------------------------------------------------

async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_iter_sse_joins_data_skips_comments_and_flushes_at_eof() -> None:
    events = [e async for e in iter_sse(_lines(
        ": keep-alive", "event: delta", "data: {\"a\":", "data: 1}", "", "", "data: [DONE]"))]
    assert events == [SSEEvent('{"a":\n1}', "delta"), SSEEvent("[DONE]")]


async def test_iter_sse_dispatches_no_event_whose_data_is_empty() -> None:
    # A bare data: line, or an event name with an empty data: line, is a keep-alive: the
    # event-stream rules dispatch no event for it (it was read as a chunk that is not JSON).
    events = [e async for e in iter_sse(_lines(
        "data:", "", "event: ping", "data: ", "", "data: {}", "", "data:"))]
    assert events == [SSEEvent("{}")]


@pytest.mark.parametrize("messages", [
    [{"role": "system", "content": "Be brief."}],
    [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": ""},
     {"role": "assistant", "content": []}],
], ids=["system-only", "only-empty-turns"])
def test_a_conversation_with_no_turn_to_send_is_not_sent_to_anthropic(
        messages: list[dict[str, Any]]) -> None:
    # OpenAI answers a conversation of system messages alone; the Messages API refuses a
    # request without messages, so the model is left out (the next one may answer) rather
    # than sent what it refuses.
    with pytest.raises(UnsupportedRequest, match="no user or assistant message with content"):
        to_anthropic_request({"messages": messages}, CLAUDE, stream=False)


@pytest.mark.parametrize("stop", [["\n\n"], " ", ["END", ""]])
def test_a_stop_sequence_empty_or_whitespace_only_is_not_sent_to_anthropic(
        stop: str | list[str]) -> None:
    # The Messages API refuses such a stop sequence; planning leaves the model out, and the
    # adapter sends no request without it (dropped, the answer would run past the stop).
    with pytest.raises(UnsupportedRequest, match="stop holds a sequence empty or whitespace"):
        to_anthropic_request({"messages": [{"role": "user", "content": "Hi"}], "stop": stop},
                             CLAUDE, stream=False)
    sent = to_anthropic_request({"messages": [{"role": "user", "content": "Hi"}],
                                 "stop": ["\nQ:"]}, CLAUDE, stream=False)
    assert sent["stop_sequences"] == ["\nQ:"]


def test_whitespace_only_text_is_not_sent_to_anthropic() -> None:
    # OpenAI takes text that is whitespace only; the Messages API refuses a text block of it
    # ("text content blocks must contain non-whitespace text"): it is left out, as empty text
    # is (a turn left with nothing is too, and the turns around it merge).
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    req = {"tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        {"role": "system", "content": " \n"},
        {"role": "user", "content": [{"type": "text", "text": "\t"},
                                     {"type": "text", "text": "Hi."}]},
        {"role": "assistant", "content": "  ", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": " "},
        {"role": "user", "content": "\n\n"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": " "}]},
        {"role": "assistant", "content": None, "refusal": "\t"},
        {"role": "user", "content": "Again."}]}
    body = to_anthropic_request(req, CLAUDE, stream=False)
    assert "system" not in body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi."}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1"},
                                     {"type": "text", "text": "Again."}]}]


@pytest.mark.parametrize("messages", [
    [{"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Hi."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " "},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi."}],
], ids=["assistant-first", "after-system-and-a-blank-user-turn"])
def test_a_conversation_opening_with_an_assistant_turn_is_not_sent_to_anthropic(
        messages: list[dict[str, Any]]) -> None:
    # OpenAI takes it; the Messages API refuses it ("first message must use the user role"):
    # planning leaves the model out (capabilities), and the adapter does not send it.
    with pytest.raises(UnsupportedRequest, match="opens with an assistant turn"):
        to_anthropic_request({"messages": messages}, CLAUDE, stream=False)


def test_a_blank_last_user_turn_after_the_assistant_is_not_sent_to_anthropic() -> None:
    # Left out, it would make the assistant's turn the start of the answer, to be continued.
    with pytest.raises(UnsupportedRequest, match="ends with a user message saying nothing"):
        to_anthropic_request({"messages": [
            {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "  "}]}, CLAUDE, stream=False)


def test_a_last_assistant_turn_is_sent_without_its_trailing_whitespace() -> None:
    # A last assistant turn starts the answer: the Messages API refuses it ending in
    # whitespace; an earlier turn is sent as it is.
    body = to_anthropic_request({"messages": [
        {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello \n"},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "My favourite colour is "}]}, CLAUDE, stream=False)
    assert [m["content"][-1]["text"] for m in body["messages"]] == [
        "Hi.", "Hello \n", "Name a colour.", "My favourite colour is"]


@pytest.mark.parametrize(("extra", "says"), [
    ({"tool_choice": True}, 'tool_choice true is not a mode ("auto", "none" or "required"), '
                            "an allowed_tools choice or a function"),
    ({"tool_choice": {"type": "web_search"}},
     'tool_choice {"type": "web_search"} is not a mode ("auto", "none" or "required"), an '
     "allowed_tools choice or a function"),
    ({"functions": [{"name": "f"}], "function_call": "required"},
     'function_call "required" is not a mode ("auto" or "none") or a function')])
def test_a_choice_the_adapter_cannot_send_is_quoted_as_json(extra: dict[str, Any],
                                                            says: str) -> None:
    """The adapter's own refusal (for a caller that skipped the request check) quotes the
    value as the request wrote it, not in Python's spelling (True, 'required')."""
    request = {"messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "f"}}], **extra}
    if "functions" in extra:
        del request["tools"]
    with pytest.raises(UnsupportedRequest, match=re.escape(says)):
        to_anthropic_request(request, CLAUDE, stream=False)


def test_a_role_the_adapter_cannot_send_is_quoted_as_json() -> None:
    with pytest.raises(UnsupportedRequest, match=re.escape('has role "robot" ("system"')):
        to_anthropic_request({"messages": [{"role": "robot", "content": "hi"}]}, CLAUDE,
                             stream=False)


def test_a_whole_answer_is_the_stream_it_would_have_been() -> None:
    """Each choice one chunk (its whole message, tool calls numbered, its finish reason), then
    the usage alone; the first chunk is marked as a whole answer's."""
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
              "choices": [
                  {"index": 0, "finish_reason": "stop",
                   "message": {"role": "assistant", "content": "hi", "refusal": None}},
                  {"index": 1, "finish_reason": "tool_calls",
                   "message": {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "call_a", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}},
                       {"id": "call_b", "type": "function",
                        "function": {"name": "g", "arguments": "{}"}}]}},
                  "not a choice"],
              "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    chunks = stream_of_answer(answer)
    assert isinstance(chunks[0], WholeAnswerChunk)
    assert not any(isinstance(chunk, WholeAnswerChunk) for chunk in chunks[1:])
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["id"] == "chatcmpl-1"
               and chunk["model"] == "m" and chunk["created"] == 7 for chunk in chunks)
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": "stop",
          "logprobs": None}],
        [{"index": 1, "finish_reason": "tool_calls", "logprobs": None, "delta": {
            "role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function",
                 "function": {"name": "f", "arguments": "{}"}},
                {"index": 1, "id": "call_b", "type": "function",
                 "function": {"name": "g", "arguments": "{}"}}]}}],
        []]
    assert chunks[-1]["usage"] == answer["usage"]
    assert usage_of(chunks[-1]) == TokenUsage(3, 2)
    assert all(is_content_chunk(chunk) for chunk in chunks[:2])


def test_a_whole_answer_without_believable_usage_has_no_usage_chunk() -> None:
    answer = {"choices": [{"message": {"content": "hi"}}],
              "usage": {"prompt_tokens": -1, "completion_tokens": 2}}
    chunks = stream_of_answer(answer)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == ["stop"]
    assert "usage" not in chunks[-1] and usage_of(chunks[-1]) is None


def test_upstream_json_reads_a_lone_surrogate_as_the_replacement_character() -> None:
    """Neither UTF-8 nor the request log can write one: it was relayed to a 500."""
    assert upstream_json('{"a": "x\\ud800y", "b\\udfff": ["\\udc00"]}') == {
        "a": "x\ufffdy", "b\ufffd": ["\ufffd"]}
    assert upstream_json(b'{"a": "\xed\xa0\x80"}') == {"a": "\ufffd"}  # (its WTF-8 bytes)
    assert upstream_json('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # (a pair is one)


@pytest.mark.parametrize(("provider", "base", "url"), [
    ("openai-compatible", "https://h/openai/v1?api-version=2024-06-01",
     "https://h/openai/v1/chat/completions?api-version=2024-06-01"),
    ("openai-compatible", "http://127.0.0.1:9/v1/", "http://127.0.0.1:9/v1/chat/completions"),
    ("anthropic", "https://h/v1?api-version=1", "https://h/v1/messages?api-version=1"),
    ("anthropic", "https://h?api-version=1", "https://h/v1/messages?api-version=1"),
])
def test_a_query_of_a_base_url_follows_the_endpoints_path(provider: str, base: str,
                                                          url: str) -> None:
    """A query was followed by the endpoint's path (``/v1?api-version=1/chat/completions``),
    which no upstream answers."""
    from switchpoint.gateway.providers._http import ClientPool
    from switchpoint.gateway.providers.anthropic import AnthropicProvider
    from switchpoint.gateway.providers.openai import OpenAIProvider

    card = ModelCard(name="m", provider=provider, base_url=base)
    adapter = (AnthropicProvider(ClientPool(), env={}) if provider == "anthropic"
               else OpenAIProvider(ClientPool(), env={}))
    assert adapter._target(card, stream=False)[1] == url


def test_an_answer_nested_nearly_as_deep_as_the_reader_goes_is_too_deep_from_any_caller() -> None:
    """An answer nested 970 levels deep was read, or not, by how deep its reader's caller
    already was: read, it was refused as nesting deeper than the limit; not, the reader's
    RecursionError said "maximum recursion depth exceeded" (a streamed chunk's error in the
    request log said that, where a plain answer's named the limit)."""
    deep = "[" * 970 + "]" * 970

    def at_depth(frames: int) -> str:
        if frames:
            return at_depth(frames - 1)
        with pytest.raises(ValueError) as info:
            upstream_json(deep)
        return str(info.value)

    for frames in (0, 60):
        assert at_depth(frames) == f"the answer {TOO_DEEP}"
