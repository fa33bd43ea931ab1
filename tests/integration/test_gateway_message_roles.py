"""Each message carries what its role needs, and only the content-part types its role takes
(each part with its own field), as OpenAI's Chat Completions API requires: a message that
falls short is refused with a 400 naming the field, at both doors (HTTP with the official
``openai`` client, and in-process), before anything is routed, reserved, logged, pinned or
sent upstream. What OpenAI takes (an assistant turn carrying only tool calls, a refusal or
audio; tool-call round trips, plain and streamed; every part type each role takes) still goes
through as sent."""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionContentPartImageParam,
    ChatCompletionContentPartInputAudioParam,
    ChatCompletionContentPartRefusalParam,
    ChatCompletionContentPartTextParam,
    ChatCompletionMessageParam,
)
from openai.types.chat.chat_completion_content_part_param import File

from switchpoint.config import DB_FILENAME, load_settings
from switchpoint.errors import InvalidInputError
from switchpoint.gateway import Gateway
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, log_entry
from tests.integration.servers import ThreadServer, thread_server

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
# A budget on every model the tests call: each request they make holds a reservation.
BUDGETS = "budgets: {models: {good: 50/day, cheap: 50/day, fresh: 50/day, other: 50/day}}\n"


def opening() -> list[Any]:
    """A system message and a first user message unique to the test (so its session is new)."""
    return [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Look it up. [{uuid.uuid4().hex[:8]}]"}]


# (the messages after the opening, the field the error names, what it says)
REFUSED: list[tuple[list[dict[str, Any]], str, str]] = [
    ([{"role": "user"}], "messages[2].content", "is missing; a user message needs content"),
    ([{"role": "user", "content": None}], "messages[2].content",
     "is null; a user message needs content: send its text as a string"),
    ([{"role": "developer"}], "messages[2].content", "a developer message needs content"),
    ([{"role": "system", "content": None}], "messages[2].content",
     "a system message needs content"),
    ([{"role": "assistant"}, {"role": "user", "content": "and?"}], "messages[2].content",
     "an assistant message needs content unless it carries tool_calls"),
    ([{"role": "assistant", "content": None, "tool_calls": []},
      {"role": "user", "content": "and?"}], "messages[2].content",
     "is null; an assistant message needs content unless it carries tool_calls (or "
     "function_call, refusal, audio) (an empty tool_calls list carries none)"),
    ([{"role": "assistant", "content": None, "tool_calls": None, "refusal": None,
       "function_call": None, "audio": None}], "messages[2].content",
     "is null; an assistant message needs content"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "content": "42"}], "messages[3].tool_call_id",
     "is missing; a tool message names the tool call it answers: send the id"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": 1, "content": "42"}], "messages[3].tool_call_id",
     "must be a string, got 1"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "call_1"}], "messages[3].content",
     "is missing; a tool message needs content"),
    ([{"role": "assistant", "content": None, "function_call": {"name": "lookup",
                                                               "arguments": "{}"}},
      {"role": "function", "content": "42"}], "messages[3].name",
     "is missing; a function message names the function"),
    # Content parts the role does not take, or without their field.
    ([{"role": "developer", "content": [{"type": "image_url",
                                         "image_url": {"url": "https://x.test/a.png"}}]}],
     "messages[2].content[0].type", 'is "image_url", which a developer message does not '
     'take: a developer message takes "text" parts only'),
    ([{"role": "user", "content": [{"type": "text", "text": "see"},
                                   {"type": "video_url", "video_url": {"url": "x"}}]}],
     "messages[2].content[1].type", 'is "video_url", which a user message does not take: a '
     'user message takes "text", "image_url", "input_audio" or "file" parts'),
    ([{"role": "assistant", "content": [{"type": "input_audio", "input_audio": {
        "data": "SUQz", "format": "mp3"}}]}, {"role": "user", "content": "and?"}],
     "messages[2].content[0].type", 'an assistant message takes "text" or "refusal" parts'),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}],
     "messages[2].content[0].image_url.url", "is missing; an image_url part carries"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text"}]}],
     "messages[3].content[0].text", "is missing; a text part carries its text"),
    # An assistant's calls, as OpenAI's schema has them.
    ([{"role": "assistant", "content": None, "function_call": "lookup"}],
     "messages[2].function_call", 'must be an object, got "lookup"; a '
     'function_call is written {"name": "...", "arguments": "{...}"}'),
    ([{"role": "assistant", "content": None, "function_call": {"name": "lookup"}}],
     "messages[2].function_call.arguments", "is missing; a function_call is written"),
    ([{"role": "assistant", "content": None, "function_call": {"name": 1, "arguments": "{}"}}],
     "messages[2].function_call.name", "must be a string, got 1"),
    ([{"role": "assistant", "content": None, "tool_calls": CALL}],
     "messages[2].tool_calls", "must be a list of tool calls, got an object"),
    ([{"role": "assistant", "content": None, "tool_calls": ["call_1"]}],
     "messages[2].tool_calls[0]", 'must be an object, got "call_1"; a tool call '
     'is written {"id": "call_...", "type": "function", "function": {"name": "...", '
     '"arguments": "{...}"}}'),
    ([{"role": "assistant", "content": None, "tool_calls": [{**CALL, "id": None}]}],
     "messages[2].tool_calls[0].id", "is null; a tool call is written"),
    ([{"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": "fn"}]}],
     "messages[2].tool_calls[0].type", 'is "fn"; a tool call\'s type is function (or custom)'),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function"}]}],
     "messages[2].tool_calls[0].function", "is missing; a tool call is written"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"arguments": "{}"}}]}],
     "messages[2].tool_calls[0].function.name", "is missing; a tool call is written"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        CALL, {**CALL, "id": "call_2", "function": {"name": "lookup", "arguments": {}}}]}],
     "messages[2].tool_calls[1].function.arguments",
     "must be a string, got an object; a tool call is written"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "custom", "custom": {"name": "grep"}}]}],
     "messages[2].tool_calls[0].custom.input", 'is missing; a custom tool call is written '
     '{"id": "call_...", "type": "custom", "custom": {"name": "...", "input": "..."}}'),
    # The names of the tools the history calls or answers, held to a declared tool's bounds.
    ([{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
     "messages[2].tool_calls[0].function.name",
     'is ""; a tool\'s name is a string of 1 to 256 characters'),
    ([{"role": "assistant", "content": None, "function_call": {"name": "lookup",
                                                               "arguments": "{}"}},
      {"role": "function", "name": "x" * 300, "content": "42"}], "messages[3].name",
     "a tool's name is a string of 1 to 256 characters"),
    # An author's name OpenAI's API refuses.
    ([{"role": "user", "content": "and?", "name": "Ann Smith"}], "messages[2].name",
     'is "Ann Smith"; a message\'s name (its author\'s, such as ann or agent_2) is a string'),
    # Calls on a message that is not the assistant's: a malformed field, not a use of tools.
    ([{"role": "user", "content": "and?", "tool_calls": "nonsense"}], "messages[2].tool_calls",
     "a user message carries no tool calls: only assistant messages do"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "call_1", "content": "42", "tool_calls": [CALL]}],
     "messages[3].tool_calls", "a tool message carries no tool calls: only assistant messages"),
    ([{"role": "user", "content": "and?", "function_call": {"name": "lookup",
                                                             "arguments": "{}"}}],
     "messages[2].function_call", "a user message carries no function_call: only assistant"),
    # An image URL no model is sent.
    ([{"role": "user", "content": [{"type": "text", "text": "see"}, {
        "type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
     "messages[2].content[1].image_url.url", "uses the file scheme, which no provider fetches; "
     "an image is given by an http(s) URL or by a data URL such as data:image/png;base64,"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64,iVBORw0K-Ggo="}}]}],
     "messages[2].content[0].image_url.url",
     'is a data URL: its base64 data holds "-" at character 8 of its data, which is not base64 '
     "(URL-safe base64 writes - and _"),
]
IDS = ["user-missing", "user-null", "developer", "system-null", "assistant-bare",
       "assistant-empty-tool-calls",
       "assistant-all-null", "tool-no-id", "tool-id-number", "tool-no-content",
       "function-no-name", "developer-image-part", "user-unknown-part",
       "assistant-audio-part", "image-part-no-url", "tool-text-part-no-text",
       "function-call-string", "function-call-no-arguments", "function-call-name-number",
       "tool-calls-object", "tool-call-string", "tool-call-id-null", "tool-call-type",
       "tool-call-no-function", "tool-call-no-name", "tool-call-arguments-object",
       "custom-tool-call-no-input", "tool-call-empty-name", "function-result-long-name",
       "user-name-with-a-space",
       "user-tool-calls", "tool-tool-calls",
       "user-function-call", "image-file-url", "image-bad-base64"]


@pytest.fixture(scope="module")
def budgeted(gw_fake: FakeProviderProcess,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root: Path = tmp_path_factory.mktemp("roles")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, data_dir=str(root / "data")) + BUDGETS,
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def rows(data_dir: Path) -> dict[str, int]:
    """How many rows the request log, the decision log and the spend ledger hold, read from
    the SQLite file itself."""
    with sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True) as db:
        return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("requests", "decisions", "spend")}


def data_dir(server: ThreadServer) -> Path:
    return Path(server.service.gateway.settings.data_dir)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("tail", "field", "says"), REFUSED, ids=IDS)
def test_a_message_missing_what_its_role_needs_is_a_400_and_changes_nothing(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, tail: list[dict[str, Any]],
        field: str, says: str, stream: bool) -> None:
    gateway = budgeted.service.gateway
    sid = f"roles-{uuid.uuid4().hex}"
    head = opening()
    # A pinned session, whose pin the refused request must not touch.
    answered = client(budgeted).chat.completions.with_raw_response.create(
        model="cheap", messages=head, extra_headers={"x-session-id": sid})
    entry = log_entry(budgeted, answered.headers["x-switchpoint-request-id"])
    pin = gateway.pinner.store.get(entry["session_id"])
    assert pin is not None and pin.model == "cheap"
    before, budgets, sent = rows(data_dir(budgeted)), gateway.budget_status(), gw_fake.requests()
    messages: list[Any] = [*head, *tail]
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(
            model="auto", messages=messages, tools=TOOLS, stream=stream,  # type: ignore[arg-type]
            extra_headers={"x-session-id": sid})
    error = info.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert error["message"].startswith(f"{field}: ") and says in error["message"], error
    # Nothing was routed, reserved, logged, pinned or sent.
    assert rows(data_dir(budgeted)) == before
    assert gateway.budget_status() == budgets and gateway.governor.ledger.open_tickets() == 0
    assert gateway.pinner.store.get(entry["session_id"]) == pin
    assert gw_fake.requests() == sent


@pytest.mark.parametrize(("tail", "field", "says"), REFUSED, ids=IDS)
def test_the_in_process_door_refuses_the_same_messages(
        gw_fake: FakeProviderProcess, tmp_path: Path, tail: list[dict[str, Any]], field: str,
        says: str) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, data_dir=str(tmp_path / "data")) + BUDGETS,
                      encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        gateway.complete(opening(), model="cheap")  # (the files exist, and hold a request)
        before = rows(tmp_path / "data")
        for call in (gateway.complete, gateway.stream):
            with pytest.raises(InvalidInputError) as info:
                call([*opening(), *tail], tools=TOOLS)
            assert info.value.field == "messages"
            assert str(info.value).startswith(f"{field}: ") and says in str(info.value)
        assert gateway.governor.ledger.open_tickets() == 0
    assert rows(tmp_path / "data") == before


# What OpenAI takes goes through, as sent -----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_tool_call_round_trip_with_the_clients_own_message_goes_through(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    messages: list[Any] = opening()
    answer = client(budgeted).chat.completions.create(model="good", messages=messages,
                                                      tools=TOOLS)  # type: ignore[arg-type]
    reply = answer.choices[0].message
    assert reply.content is None and reply.tool_calls  # a turn of tool calls alone
    # As the client's users write it: the answer's own message object, then the result.
    messages += [reply, {"role": "tool", "tool_call_id": reply.tool_calls[0].id,
                         "content": "Sunny, 21 C"}]
    again = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=messages, tools=TOOLS, stream=stream)  # type: ignore[arg-type]
    again.http_response.read()
    assert again.http_response.status_code == 200
    entry = log_entry(budgeted, again.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["model"] == "good"
    sent = gw_fake.requests()[-1]["body"]["messages"]
    assert sent[2]["role"] == "assistant" and sent[2]["tool_calls"][0]["id"] == \
        reply.tool_calls[0].id
    assert sent[3] == messages[3]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_messages_openai_takes_without_text_are_forwarded_as_sent(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    tail: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": None, "audio": {"id": "audio_1"}},
        {"role": "user", "content": []},
        {"role": "assistant", "content": None,
         "function_call": {"name": "lookup", "arguments": "{}"}},
        {"role": "function", "name": "lookup", "content": None},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": None, "function_call": None, "tool_calls": [
            {"id": "call_c", "type": "custom", "custom": {"name": "grep", "input": "todo"}},
            {"id": "call_2", "type": "function", "function": {"name": "lookup",
                                                              "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_c", "content": "3 hits"},
        {"role": "tool", "tool_call_id": "call_2", "content": "none"},
        {"role": "user", "content": "So?", "name": "J@ck"},
    ]
    messages: list[Any] = [*opening(), *tail]
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=messages, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == messages


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_every_part_type_each_role_takes_is_forwarded_as_sent(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # Each built with the openai package's own part types, as its users write them.
    text: ChatCompletionContentPartTextParam = {"type": "text", "text": "Look at these."}
    image: ChatCompletionContentPartImageParam = {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                           "detail": "low"}}
    audio: ChatCompletionContentPartInputAudioParam = {
        "type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    pdf: File = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                                          "filename": "a.pdf"}}
    refusal: ChatCompletionContentPartRefusalParam = {"type": "refusal", "refusal": "No."}
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": [text]},
        {"role": "developer", "content": [text, text]},
        {"role": "user", "content": [text, image, audio, pdf,
                                     {"type": "file", "file": {"file_id": "file-abc"}}]},
        {"role": "assistant", "content": [text, refusal], "tool_calls": [CALL]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": "call_1", "content": [text]},
        {"role": "user", "content": f"So? [{uuid.uuid4().hex[:8]}]"},
    ]
    before = rows(data_dir(budgeted))["requests"]
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=messages, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == messages
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["model"] == "good"
    assert rows(data_dir(budgeted))["requests"] == before + 1


# Parts a model's adapter cannot send ----------------------------------------------------------

AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
# (the part, the role of the message carrying it, what the Anthropic adapter sends there)
UNSENDABLE = [
    (AUDIO, "user", '"text" and "image_url" parts in user messages'),
    ({"type": "file", "file": {"file_id": "file-abc"}}, "user",
     '"text" and "image_url" parts in user messages'),
]


def _carrying(part: dict[str, Any], role: str) -> list[Any]:
    return [*opening(), {"role": role, "content": [{"type": "text", "text": "Here."}, part]},
            {"role": "user", "content": "So?"}]


def _spend(server: ThreadServer) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{data_dir(server) / DB_FILENAME}?mode=ro", uri=True) as db:
        return db.execute("SELECT * FROM spend").fetchall()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("part", "role", "sends"), UNSENDABLE, ids=["audio", "file"])
def test_a_part_a_models_adapter_cannot_send_is_refused_for_it_before_anything_is_held(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, part: dict[str, Any], role: str,
        sends: str, stream: bool) -> None:
    # other is served through the Anthropic Messages adapter, which cannot send these parts:
    # such a request was planned onto it, held against its budget, and refused by the
    # adapter only when the call began.
    gateway = budgeted.service.gateway
    kind = part["type"]
    says = (f'other: the request has "{kind}" parts in {role} messages, which the Anthropic '
            f"adapter cannot send (it sends {sends})")
    before, spent = rows(data_dir(budgeted)), _spend(budgeted)
    for named in ({"model": "other"}, {"model": "auto", "extra_body": {"models": ["other"]}}):
        with pytest.raises(openai.BadRequestError) as info:
            client(budgeted).chat.completions.create(
                messages=_carrying(part, role), stream=stream, **named)
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "no_capable_model", error
        assert error["param"] == "messages" and says in error["message"], error
    assert gw_fake.requests() == []
    assert _spend(budgeted) == spent and gateway.governor.ledger.open_tickets() == 0
    assert rows(data_dir(budgeted))["spend"] == before["spend"]
    # Among other candidates, auto leaves other out, saying why, and another model answers.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="auto", messages=_carrying(part, role), stream=stream,
        extra_body={"models": ["other", "good"]})
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] == "good" and says.removeprefix("other: ") in entry["excluded"]["other"]
    assert [r["body"]["model"] for r in gw_fake.requests()] == ["good"]


# Refusals and legacy function calls, through the Anthropic adapter ---------------------------

OTHER = "claude-fake-2"  # the upstream name of the catalog model `other`
LOOKUP = {"name": "lookup", "description": "Look a thing up.",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}


def _to_other(server: ThreadServer, messages: list[Any], stream: bool,
              **kw: Any) -> dict[str, Any]:
    """Send ``messages`` to other (the Anthropic adapter): the answer, read as the client
    reads it (a stream's deltas put together), once it is logged as other's."""
    raw = client(server).chat.completions.with_raw_response.create(
        model="other", messages=messages, stream=stream, **kw)
    request_id = raw.headers["x-switchpoint-request-id"]
    answer: dict[str, Any] = {"content": None, "finish_reason": None}
    parsed = raw.parse()
    if isinstance(parsed, ChatCompletion):
        choice = parsed.choices[0]
        answer.update(choice.message.model_dump(), finish_reason=choice.finish_reason)
    else:
        for chunk in parsed:
            for c in chunk.choices:
                delta = c.delta.model_dump(exclude_none=True)
                if delta.get("content"):
                    answer["content"] = (answer["content"] or "") + delta["content"]
                for key in ("function_call", "tool_calls"):
                    if key in delta:
                        got = answer.setdefault(key, {"name": None, "arguments": ""}
                                                if key == "function_call" else [])
                        if key == "function_call":
                            got["name"] = delta[key].get("name") or got["name"]
                            got["arguments"] += delta[key].get("arguments") or ""
                        else:
                            got.extend(delta[key])
                answer["finish_reason"] = c.finish_reason or answer["finish_reason"]
    entry = log_entry(server, request_id)
    assert entry["status"] == "ok" and entry["model"] == "other", entry
    assert server.service.gateway.governor.ledger.open_tickets() == 0
    return answer


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("result", ["Sunny, 21 C", None], ids=["result", "null-result"])
def test_a_legacy_function_call_round_trip_goes_to_an_anthropic_model_as_tool_use(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool,
        result: str | None) -> None:
    # The legacy client declares functions; the answer's call comes back as function_call
    # (one call, finish reason function_call), as OpenAI gives it.
    messages: list[Any] = opening()
    answer = _to_other(budgeted, messages, stream, functions=[LOOKUP])
    sent = gw_fake.requests()[-1]["body"]
    assert sent["tools"] == [{"name": "lookup", "description": "Look a thing up.",
                              "input_schema": LOOKUP["parameters"]}]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    call = answer["function_call"]
    assert call["name"] == "lookup" and isinstance(json.loads(call["arguments"]), dict)
    assert answer["finish_reason"] == "function_call" and not answer.get("tool_calls")
    # Its turn and the function's result (null content too) go back as the client writes
    # them: Claude gets a tool_use and the tool_result answering it (the fake refuses a
    # result answering no tool_use of the turn before).
    messages += [{"role": "assistant", "content": None, "function_call": call},
                 {"role": "function", "name": "lookup", "content": result}]
    answer = _to_other(budgeted, messages, stream, functions=[LOOKUP],
                          function_call={"name": "lookup"})
    sent = gw_fake.requests()[-1]["body"]
    assert sent["tool_choice"] == {"type": "tool", "name": "lookup",
                                   "disable_parallel_tool_use": True}
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "function_call_2",
                                           "name": "lookup",
                                           "input": json.loads(call["arguments"])}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "function_call_2",
                                      **({"content": result} if result else {})}]}]
    assert answer["content"] and answer["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("legacy", [False, True], ids=["tools", "functions"])
def test_a_call_without_arguments_from_an_anthropic_model_has_the_arguments_an_empty_object(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool,
        legacy: bool) -> None:
    # The Messages API streams a call that takes no arguments as one input_json_delta of ""
    # (its input is {}): put together, the streamed arguments were "", which is not the JSON
    # object OpenAI's arguments always are (json.loads fails), where the plain answer's were
    # "{}".
    gw_fake.script(OTHER, "ok:noargs=1")
    fields: dict[str, Any] = ({"functions": [LOOKUP]} if legacy
                              else {"tools": [{"type": "function", "function": LOOKUP}]})
    answer = _to_other(budgeted, opening(), stream, **fields)
    if legacy:
        call = answer["function_call"]
    else:  # (a stream's deltas are put together as a client does)
        [call] = [{"name": d["function"]["name"], "arguments": "".join(
            p["function"].get("arguments") or "" for p in answer["tool_calls"])}
            for d in answer["tool_calls"] if d.get("id")]
    assert call == {"name": "lookup", "arguments": "{}"}
    assert answer["finish_reason"] == ("function_call" if legacy else "tool_calls")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_legacy_function_call_turn_goes_to_an_anthropic_model_that_uses_tools(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # A conversation that called functions the legacy way, now declaring tools (its answer
    # would call them as tool_calls).
    messages: list[Any] = [
        *opening(),
        {"role": "assistant", "content": None,
         "function_call": {"name": "lookup", "arguments": '{"q": "rain"}'}},
        {"role": "function", "name": "lookup", "content": "No rain."},
        {"role": "user", "content": "And tomorrow?"}]
    answer = _to_other(budgeted, messages, stream, tools=TOOLS)
    sent = gw_fake.requests()[-1]["body"]
    assert sent["messages"][1:3] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "function_call_2",
                                           "name": "lookup", "input": {"q": "rain"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "function_call_2", "content": "No rain."},
            {"type": "text", "text": "And tomorrow?"}]}]
    assert sent["tools"] == [{"name": "lookup", "input_schema": LOOKUP["parameters"]}]
    assert "tool_choice" not in sent
    assert answer["content"] and answer["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("turn", [
    {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    {"role": "assistant", "content": [{"type": "text", "text": "Well."},
                                      {"type": "refusal", "refusal": "I can't help with that."}]},
], ids=["refusal-field", "refusal-part"])
def test_an_assistants_refusal_reaches_an_anthropic_model_as_its_text(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool,
        turn: dict[str, Any]) -> None:
    # The refusal is what the assistant said: the turn is not lost (nor the request refused).
    head = opening()
    _to_other(budgeted, [*head, turn, {"role": "user", "content": "Why not?"}], stream)
    said = [{"type": "text", "text": "Well."}] if turn["content"] else []
    assert gw_fake.requests()[-1]["body"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": head[1]["content"]}]},
        {"role": "assistant", "content": [*said, {"type": "text",
                                                  "text": "I can't help with that."}]},
        {"role": "user", "content": [{"type": "text", "text": "Why not?"}]}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("turn", "says"), [
    ({"role": "function", "name": "lookup", "content": "42"},
     "has a function message answering no function_call before it, and the Anthropic Messages "
     "API takes a tool result only as the answer to its call"),
    ({"role": "function", "name": "lookup", "content": None},
     "has a function message answering no function_call before it"),
    ({"role": "assistant", "content": None, "audio": {"id": "audio_abc"}},
     "has an assistant message standing for an earlier audio answer (audio), which the Anthropic "
     "Messages API cannot refer to"),
    ({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_c", "type": "custom", "custom": {"name": "grep", "input": "rain"}}]},
     "declares or calls a custom tool (type custom), and the Anthropic Messages API takes "
     "function tools only"),
    ({"role": "user", "content": [{"type": "text", "text": "Look."}, {
        "type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}]},
     'has an image given as a data URL that is not base64 ("image/svg+xml"), and the Anthropic '
     'Messages API takes images as base64 data URLs of "image/jpeg"'),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/bmp;name=a.bmp;base64,Qk0="}}]},
     'has an image given as a data URL of type "image/bmp", and the Anthropic Messages API'),
], ids=["function-result", "null-function-result", "audio-answer", "custom-tool-call",
       "svg-image", "bmp-image"])
def test_a_turn_the_anthropic_adapter_cannot_send_leaves_its_model_out_holding_nothing(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool,
        turn: dict[str, Any], says: str) -> None:
    # The Messages API takes a tool result only as the answer to its call, and cannot look
    # up OpenAI's audio answers: such a request was held against budgets and refused once
    # its call began (a function result), or sent without the turn (an audio answer).
    gateway = budgeted.service.gateway
    messages = [*opening(), turn, {"role": "user", "content": "So?"}]
    says = f"other: the request {says}"
    before, spent = rows(data_dir(budgeted)), _spend(budgeted)
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(model="other", messages=messages,
                                                 stream=stream)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert says in error["message"], error
    assert gw_fake.requests() == [] and gateway.governor.ledger.open_tickets() == 0
    assert _spend(budgeted) == spent and rows(data_dir(budgeted)) == before
    # Another model takes it as sent.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=stream, extra_body={"models": ["other", "good"]})
    raw.http_response.read()
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] == "good"
    assert says.removeprefix("other: ") in entry["excluded"]["other"][0]
    assert gw_fake.requests()[-1]["body"]["messages"] == messages


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("stop", "shown"), [
    (["\n\n"], '"\\n\\n"'), (" ", '" "'), (["END", "", "\t"], '"", "\\t"'),
], ids=["blank-line", "space", "empty-in-list"])
def test_a_stop_sequence_the_messages_api_refuses_leaves_its_model_out_holding_nothing(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool,
        stop: str | list[str], shown: str) -> None:
    # OpenAI takes a stop sequence of whitespace (a blank line is a usual one); the Messages
    # API refuses one empty or whitespace only with a 400, as the fake does: the request was
    # held against budgets, sent, and refused, where another model would have answered it.
    gateway = budgeted.service.gateway
    messages = opening()
    before, spent = rows(data_dir(budgeted)), _spend(budgeted)
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(model="other", messages=messages,
                                                 stream=stream, stop=stop)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == "stop"
    assert (f"other: the request's stop holds a sequence empty or whitespace only ({shown}), "
            "and the Anthropic Messages API takes stop sequences with something besides "
            "whitespace only") in error["message"], error
    assert gw_fake.requests() == [] and gateway.governor.ledger.open_tickets() == 0
    assert _spend(budgeted) == spent and rows(data_dir(budgeted)) == before
    # auto routes it to a model that takes it, with its stop as sent.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=stream, stop=stop,
        extra_body={"models": ["other", "good"]})
    raw.http_response.read()
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] == "good" and "stop holds" in entry["excluded"]["other"][0]
    assert gw_fake.requests()[-1]["body"]["stop"] == stop
    # A stop sequence with something besides whitespace goes to the Messages API.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="other", messages=messages, stream=stream, stop=["\n\nEND", "Q:"])
    raw.http_response.read()
    assert log_entry(budgeted, raw.headers["x-switchpoint-request-id"])["model"] == "other"
    assert gw_fake.requests()[-1]["body"]["stop_sequences"] == ["\n\nEND", "Q:"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_request_for_log_probabilities_leaves_the_messages_api_out_holding_nothing(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # The Messages API gives no log probabilities: the request was sent without the field,
    # and its client got logprobs null with no error, as it would get one choice for n > 1.
    gateway = budgeted.service.gateway
    messages = opening()
    before, spent = rows(data_dir(budgeted)), _spend(budgeted)
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(model="other", messages=messages,
                                                 stream=stream, logprobs=True, top_logprobs=2)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == "logprobs"
    assert ("other: the request asks for the answer's log probabilities (logprobs) and the "
            "Anthropic Messages API gives none") in error["message"], error
    assert gw_fake.requests() == [] and gateway.governor.ledger.open_tickets() == 0
    assert _spend(budgeted) == spent and rows(data_dir(budgeted)) == before
    # auto routes it to a model that gives them, asked as sent.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=stream, logprobs=True, top_logprobs=2,
        extra_body={"models": ["other", "good"]})
    raw.http_response.read()
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] == "good" and "(logprobs)" in entry["excluded"]["other"][0]
    sent = gw_fake.requests()[-1]["body"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    # logprobs false asks for none: the Messages API may answer.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="other", messages=messages, stream=stream, logprobs=False)
    raw.http_response.read()
    assert log_entry(budgeted, raw.headers["x-switchpoint-request-id"])["model"] == "other"
    assert gw_fake.requests()[-1]["path"] == "/v1/messages"


def test_a_request_for_a_json_answer_leaves_the_messages_api_out_holding_nothing(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # The Messages API has no response_format: the request was sent without it, and its
    # client, parsing JSON, got free text with no error.
    gateway = budgeted.service.gateway
    messages = opening()
    before, spent = rows(data_dir(budgeted)), _spend(budgeted)
    schema: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    formats: list[Any] = [{"type": "json_object"}, schema]
    for response_format in formats:
        with pytest.raises(openai.BadRequestError) as info:
            client(budgeted).chat.completions.create(model="other", messages=messages,
                                                     response_format=response_format)
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "no_capable_model", error
        assert error["param"] == "response_format"
        assert (f"other: the request asks for a {response_format['type']} answer "
                "(response_format) and the Anthropic Messages API takes no response_format"
                ) in error["message"], error
    assert gw_fake.requests() == [] and gateway.governor.ledger.open_tickets() == 0
    assert _spend(budgeted) == spent and rows(data_dir(budgeted)) == before
    # auto routes it to a model that takes it, asked as sent.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="auto", messages=messages, response_format=schema,
        extra_body={"models": ["other", "good"]})
    raw.http_response.read()
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] == "good" and "(response_format)" in entry["excluded"]["other"][0]
    assert gw_fake.requests()[-1]["body"]["response_format"] == schema
    # A text answer is what the Messages API gives: it may answer (the field is not sent).
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="other", messages=messages, response_format={"type": "text"})
    raw.http_response.read()
    assert log_entry(budgeted, raw.headers["x-switchpoint-request-id"])["model"] == "other"
    sent = gw_fake.requests()[-1]
    assert sent["path"] == "/v1/messages" and "response_format" not in sent["body"]


# A conversation that called tools, continued without offering tools this turn.
HISTORIES: list[tuple[list[dict[str, Any]], list[str]]] = [
    ([{"role": "assistant", "content": None, "tool_calls": [
        CALL, {**CALL, "id": "call_2", "function": {"name": "weather",
                                                   "arguments": '{"city": "Oslo"}'}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "42"},
      {"role": "tool", "tool_call_id": "call_2", "content": "Sunny"}], ["lookup", "weather"]),
    ([{"role": "assistant", "content": None,
       "function_call": {"name": "lookup", "arguments": '{"q": "rain"}'}},
      {"role": "function", "name": "lookup", "content": "No rain."}], ["lookup"]),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("history", "names"), HISTORIES, ids=["tool-calls", "function-call"])
def test_a_history_of_tool_calls_without_tools_this_turn_reaches_an_anthropic_model(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool,
        history: list[dict[str, Any]], names: list[str]) -> None:
    # The Messages API refuses tool_use / tool_result blocks in a request declaring no tools
    # (as the fake does): the tools the history called are declared, and none may be called.
    messages: list[Any] = [*opening(), *history, {"role": "user", "content": "Sum it up."}]
    answer = _to_other(budgeted, messages, stream)
    sent = gw_fake.requests()[-1]["body"]
    assert sent["tools"] == [{"name": n, "input_schema": {"type": "object"}} for n in names]
    assert sent["tool_choice"] == {"type": "none"}
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"] * len(names)
    assert [b["type"] for b in sent["messages"][2]["content"]] == \
        ["tool_result"] * len(names) + ["text"]
    assert answer["content"] and answer["finish_reason"] == "stop"
    assert not answer.get("tool_calls") and not answer.get("function_call")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_user_message_between_a_tool_call_and_its_results_follows_them_to_anthropic(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # The user's text and the results make one user turn; the Messages API wants the
    # tool_result blocks first in it (as the fake does), in the order they were given.
    second = {**CALL, "id": "call_2"}
    messages: list[Any] = [
        *opening(),
        {"role": "assistant", "content": None, "tool_calls": [CALL, second]},
        {"role": "user", "content": "Hurry up."},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": [{"type": "text", "text": "And?"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "43"}]
    answer = _to_other(budgeted, messages, stream, tools=TOOLS)
    assert gw_fake.requests()[-1]["body"]["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "42"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "43"},
        {"type": "text", "text": "Hurry up."}, {"type": "text", "text": "And?"}]}
    assert answer["content"] and answer["finish_reason"] == "stop"


# Images: the URLs OpenAI takes, on every wire --------------------------------------------------

PNG = "iVBORw0KGgo="
# (an image URL no model is sent, what the error says of it): refused whichever model is
# asked, before anything is held or sent (an OpenAI-compatible upstream was sent it as it
# came, and the Anthropic adapter sent it on as a URL image or as base64 data, each refused
# upstream after the hold).
UNFETCHABLE: list[tuple[str, str]] = [
    ("file:///home/me/cat.png", "uses the file scheme, which no provider fetches"),
    ("ftp://x.test/cat.png", "uses the ftp scheme, which no provider fetches"),
    ("cat.png", 'has no scheme ("cat.png")'),
    ("https:///cat.png", "names no host"),
    (f"data:image/png;base64,{PNG[:4]}_{PNG[4:]}",
     'is a data URL: its base64 data holds "_" at character 4 of its data, which is not '
     "base64"),
    (f"data:image/png;base64,{PNG[:-3]}", "is a data URL: its base64 data ends in a group of "
                                          "1 character"),
    ("data:image/png;base64,", "is a data URL: its base64 data is empty"),
    ('data:image/png;name="cat,png;base64,' + PNG,
     "is a data URL that has no comma ending its header"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["other", "good"], ids=["anthropic", "openai"])
@pytest.mark.parametrize(("url", "says"), UNFETCHABLE,
                         ids=["file", "ftp", "relative", "no-host", "base64-url-safe",
                              "base64-one-char-group", "base64-empty", "unclosed-quote"])
def test_an_image_no_model_is_sent_is_a_400_naming_the_part_on_every_wire(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, url: str, says: str, model: str,
        stream: bool) -> None:
    gateway = budgeted.service.gateway
    messages = [*opening(), {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]
    before, spent = rows(data_dir(budgeted)), _spend(budgeted)
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(model=model, messages=messages,
                                                 stream=stream)
    error = info.value.body
    assert isinstance(error, dict), error
    assert error["type"] == "invalid_request_error" and error["param"] == "messages", error
    assert error["message"].startswith(f"messages[2].content[1].image_url.url: {says}"), error
    assert "http(s) URL or by a data URL such as data:image/png;base64," in error["message"]
    assert gw_fake.requests() == [] and gateway.governor.ledger.open_tickets() == 0
    assert _spend(budgeted) == spent and rows(data_dir(budgeted)) == before


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("url", "media_type"), [
    (f'data:image/png;name="cat,1.png";base64,{PNG}', "image/png"),
    (f'data:image/png;name="a;b \\"c\\"";base64,{PNG}', "image/png"),
    ("HTTPS://x.test/cat.png?a=1;b=2,3", None),
], ids=["quoted-comma", "quoted-semicolon-and-quotes", "https"])
def test_an_image_with_quoted_parameters_reaches_an_anthropic_model_as_its_base64_data(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, url: str,
        media_type: str | None, stream: bool) -> None:
    # A quoted parameter value is one value, whatever it holds: the header ends at the
    # first comma outside quotes (one inside ended it, and the model was left out as given
    # an image that is not base64).
    messages = [*opening(), {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]
    answer = _to_other(budgeted, messages, stream)
    assert answer["content"] and answer["finish_reason"] == "stop"
    block = gw_fake.requests()[-1]["body"]["messages"][0]["content"][-1]
    source = ({"type": "base64", "media_type": media_type, "data": PNG} if media_type
              else {"type": "url", "url": url})
    assert block == {"type": "image", "source": source}


JPEG = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00").decode()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("label", ["image/png", "image/jpg", "application/octet-stream"])
def test_an_image_reaches_an_anthropic_model_as_the_type_its_bytes_show(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, label: str,
        stream: bool) -> None:
    # OpenAI reads a JPEG labelled image/png (or image/jpg, which is no media type) as the
    # JPEG it is; the Messages API refuses a block whose bytes are not of the type it
    # declares (as the fake does), and takes four types only: the block says image/jpeg.
    url = f"data:{label};base64,{JPEG}"
    messages = [*opening(), {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]
    answer = _to_other(budgeted, messages, stream)
    assert answer["content"] and answer["finish_reason"] == "stop"
    block = gw_fake.requests()[-1]["body"]["messages"][0]["content"][-1]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                 "data": JPEG}}
    # An OpenAI-compatible upstream is sent the URL as it came.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=messages, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == messages


# Base64 image data as clients write it besides strict RFC 4648 (which OpenAI, reading a data
# URL as a browser does, takes): MIME lines (base64.encodebytes), CRLF lines, no padding.
_JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00" + bytes(range(101))  # (padded)
LOOSE_BASE64 = {
    "mime-lines": base64.encodebytes(_JPEG_BYTES).decode(),
    "crlf-lines": base64.encodebytes(_JPEG_BYTES).decode().replace("\n", "\r\n"),
    "unpadded": base64.b64encode(_JPEG_BYTES).decode().rstrip("="),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("written", list(LOOSE_BASE64))
def test_line_broken_or_unpadded_base64_reaches_each_wire_as_it_takes_it(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, written: str,
        stream: bool) -> None:
    # Not refused: the Messages API (which decodes strict base64 only, as the fake does) is
    # sent it compacted, an OpenAI-compatible upstream as it came.
    data = LOOSE_BASE64[written]
    assert data != base64.b64encode(_JPEG_BYTES).decode()
    messages = [*opening(), {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}]}]
    answer = _to_other(budgeted, messages, stream)
    assert answer["content"] and answer["finish_reason"] == "stop"
    block = gw_fake.requests()[-1]["body"]["messages"][0]["content"][-1]
    assert block == {"type": "image", "source": {
        "type": "base64", "media_type": "image/jpeg",
        "data": base64.b64encode(_JPEG_BYTES).decode()}}
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=messages, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == messages


# A conversation that called a tool this turn does not offer.
STALE_CALL = {"id": "call_w", "type": "function",
              "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["other", "good"], ids=["anthropic", "openai"])
def test_a_history_calling_a_tool_not_offered_this_turn_reaches_either_wire_as_it_is(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, model: str,
        stream: bool) -> None:
    # OpenAI and the Messages API both take a history whose calls name tools the request no
    # longer offers (the Messages API wants tools declared, not every name the history
    # calls): the history goes as it is, and only the tools offered are declared, so the
    # model may call only those.
    messages: list[Any] = [
        *opening(), {"role": "assistant", "content": None, "tool_calls": [STALE_CALL]},
        {"role": "tool", "tool_call_id": "call_w", "content": "Sunny"},
        {"role": "user", "content": "Now look up the forecast."}]
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model=model, messages=messages, tools=TOOLS, stream=stream)  # type: ignore[arg-type]
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["model"] == model, entry
    sent = gw_fake.requests()[-1]["body"]
    if model == "good":
        assert sent["messages"] == messages and sent["tools"] == TOOLS
        return
    assert [t["name"] for t in sent["tools"]] == ["lookup"] and "tool_choice" not in sent
    assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": "call_w",
                                               "name": "weather", "input": {"city": "Oslo"}}]
    assert sent["messages"][2]["content"][0] == {"type": "tool_result",
                                                 "tool_use_id": "call_w", "content": "Sunny"}


# Tools OpenAI refuses, refused here whichever model would answer: (the request's tool fields,
# the param, the path the error names, what it says).
REFUSED_TOOLS: list[tuple[dict[str, Any], str, str, str]] = [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice", "tool_choice.function.name",
     'is "x", which is not a function the request declares in tools ("lookup"); name one of '
     'them, or send "auto", "none" or "required"'),
    ({"tools": [*TOOLS, {"type": "function", "function": {"name": ""}}]},
     "tools", "tools[1].function.name",
     'is ""; a tool\'s name is a string of 1 to 256 characters'),
    ({"tools": [*TOOLS, {"type": "custom", "custom": {"name": "x" * 257}}]},
     "tools", "tools[1].custom.name", "a tool's name is a string of 1 to 256 characters"),
    # (an allowed_tools choice listing undeclared tools was refused by the Anthropic adapter
    # alone, after the hold, and sent as it was to the others)
    ({"tools": TOOLS, "tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "search"}}]}}},
     "tool_choice", "tool_choice.allowed_tools.tools[0].function.name",
     'is "search", which is not a function the request declares in tools ("lookup")'),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["auto", "other", "good"])
@pytest.mark.parametrize(("fields", "param", "path", "says"), REFUSED_TOOLS,
                         ids=["undeclared-choice", "empty-name", "custom-long-name",
                              "undeclared-allowed"])
def test_a_tool_openai_refuses_is_a_400_naming_it_before_anything_is_held(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, fields: dict[str, Any],
        param: str, path: str, says: str, model: str, stream: bool) -> None:
    # The choice of an undeclared tool went upstream (OpenAI refuses it with a 400), after the
    # request was routed and held against budgets; a name the APIs refuse did the same.
    gateway = budgeted.service.gateway
    before, budgets, sent = rows(data_dir(budgeted)), gateway.budget_status(), gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(
            model=model, messages=opening(), stream=stream, **fields)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert error["message"].startswith(f"{path}: ") and says in error["message"], error
    assert rows(data_dir(budgeted)) == before
    assert gateway.budget_status() == budgets and gateway.governor.ledger.open_tickets() == 0
    assert gw_fake.requests() == sent


@pytest.mark.parametrize(("fields", "param", "path", "says"), REFUSED_TOOLS,
                         ids=["undeclared-choice", "empty-name", "custom-long-name",
                              "undeclared-allowed"])
def test_the_in_process_door_refuses_the_same_tools(
        gw_fake: FakeProviderProcess, tmp_path: Path, fields: dict[str, Any], param: str,
        path: str, says: str) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, data_dir=str(tmp_path / "data")) + BUDGETS,
                      encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        gateway.complete(opening(), model="cheap")  # (the files exist, and hold a request)
        before = rows(tmp_path / "data")
        for call in (gateway.complete, gateway.stream):
            with pytest.raises(InvalidInputError) as info:
                call(opening(), **fields)
            assert info.value.field == param
            assert str(info.value).startswith(f"{path}: ") and says in str(info.value)
        assert gateway.governor.ledger.open_tickets() == 0
    assert rows(tmp_path / "data") == before


# A model behind OpenAI's own API (its provider's rule on tool names applies; the fake stands
# in for its URL).
OPENAI_API_LINE = """  - {{name: oai, provider: openai, profile: gpt-4-1106-preview,
     base_url: "{url}", api_key_env: CHEAP_KEY, input_per_mtok: 1, output_per_mtok: 2,
     context_window: 128000, capabilities: [tools, vision]}}
"""
# MCP-style dotted tool names, which local and other OpenAI-compatible servers take and
# OpenAI's and Anthropic's APIs refuse.
DOTTED_TOOLS = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}
    for name in ("github.search_issues", "files.read")]


@pytest.fixture(scope="module")
def with_openai_api(gw_fake: FakeProviderProcess,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root: Path = tmp_path_factory.mktemp("openai-api")
    config = root / "switchpoint.yaml"
    text = config_text(gw_fake, data_dir=str(root / "data")).replace(
        "data_dir:", OPENAI_API_LINE.format(url=gw_fake.openai_base_url) + "data_dir:", 1)
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_dotted_tool_names_reach_an_openai_compatible_model_and_leave_out_the_apis_refusing_them(
        with_openai_api: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # A dotted name was a 400 whichever model would answer: an OpenAI-compatible upstream
    # (a local server, an MCP client's usual one) takes it, so only the models of the APIs that
    # refuse it are left out.
    choice = {"type": "function", "function": {"name": "files.read"}}
    messages: list[Any] = [
        *opening(),
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "github.search_issues", "arguments": '{"query": "bug"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "No issues.", "tool_calls": []},
        {"role": "user", "content": "Read the file.", "tool_calls": []}]
    raw = client(with_openai_api).chat.completions.with_raw_response.create(  # type: ignore
        model="good", messages=messages, tools=DOTTED_TOOLS, tool_choice=choice, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    sent = gw_fake.requests()[-1]["body"]
    assert sent["tools"] == DOTTED_TOOLS and sent["tool_choice"] == choice
    assert sent["messages"] == messages
    # auto chooses among the models that take the names.
    raw = client(with_openai_api).chat.completions.with_raw_response.create(
        model="auto", messages=messages, tools=DOTTED_TOOLS,  # type: ignore[arg-type]
        stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    entry = log_entry(with_openai_api, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] in ("good", "cheap"), entry
    # Named, a model whose API refuses them is a 400 saying why, before anything is sent.
    for model, api in (("oai", "OpenAI's API"), ("other", "the Anthropic Messages API")):
        before = gw_fake.requests()
        with pytest.raises(openai.BadRequestError) as info:
            client(with_openai_api).chat.completions.create(
                model=model, messages=messages, tools=DOTTED_TOOLS,  # type: ignore[arg-type]
                stream=stream)
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "no_capable_model", error
        assert ('a tool named "files.read", "github.search_issues", and '
                f"{api} takes tool names of 1 to") in error["message"], error
        # (what to do: the name, or the model, not the catalog's capabilities)
        assert ("rename the tool, or name a model whose API takes the name"
                in error["message"]), error
        assert gw_fake.requests() == before


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_function_results_dotted_name_leaves_out_openais_api_only(
        with_openai_api: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # A function message naming its function "fs.read" went to OpenAI's API, which refuses a
    # message's name outside its rule with a 400, after the hold. The Messages API is not sent
    # the name (a result answers its call), and OpenAI-compatible servers take it. A tool
    # message's name is no field of OpenAI's tool message: it goes to every model as sent.
    call = {"role": "assistant", "content": None,
            "function_call": {"name": "fs_read", "arguments": "{}"}}
    messages: list[Any] = [*opening(), call,
                           {"role": "function", "name": "fs.read", "content": "No file."}]
    functions = [{"name": "fs_read", "parameters": {"type": "object"}}]
    for model in ("good", "other"):
        raw = client(with_openai_api).chat.completions.with_raw_response.create(
            model=model, messages=messages, functions=functions,  # type: ignore
            stream=stream)
        raw.http_response.read()
        assert raw.http_response.status_code == 200
        sent = gw_fake.requests()[-1]["body"]
        if model == "good":
            assert sent["messages"] == messages
        else:
            assert sent["messages"][-1]["content"][0]["type"] == "tool_result", sent
            assert "fs.read" not in json.dumps(sent["messages"][-1]), sent
    before = gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(with_openai_api).chat.completions.create(
            model="oai", messages=messages, functions=functions,  # type: ignore
            stream=stream)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert ('answers a tool named "fs.read", and OpenAI\'s API takes tool names of 1 to 64'
            in error["message"]), error
    assert gw_fake.requests() == before
    tool_turns: list[Any] = [*opening(), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "fs_read",
                                                          "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "fs.read", "content": "No file."}]
    raw = client(with_openai_api).chat.completions.with_raw_response.create(
        model="oai", messages=tool_turns, stream=stream,
        tools=[{"type": "function", "function": {"name": "fs_read"}}])
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == tool_turns


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_more_stop_sequences_than_openais_api_takes_leave_out_its_models_only(
        with_openai_api: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # OpenAI's API takes at most 4 stop sequences: a request with more, to a model of the
    # openai provider, was sent, and its 400 reached the client after the hold, where auto
    # could have chosen a model that takes them. OpenAI-compatible servers differ: they get
    # the request as sent.
    stop = ["\n\n", "END", "Q:", "###", "</answer>"]
    messages = opening()
    before = gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(with_openai_api).chat.completions.create(model="oai", messages=messages,
                                                        stream=stream, stop=stop)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == "stop"
    assert ("oai: the request's stop holds 5 sequences, and OpenAI's API takes at most 4 "
            "(send 4 or fewer, or name a model of another provider)") in error["message"], error
    assert gw_fake.requests() == before
    # auto routes it to a model that takes them, with its stop as sent.
    raw = client(with_openai_api).chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=stream, stop=stop,
        extra_body={"models": ["oai", "good"]})
    raw.http_response.read()
    entry = log_entry(with_openai_api, raw.headers["x-switchpoint-request-id"])
    assert entry["model"] == "good", entry
    assert "stop holds 5 sequences" in entry["excluded"]["oai"][0]
    assert gw_fake.requests()[-1]["body"]["stop"] == stop
    # Four go to OpenAI's API.
    raw = client(with_openai_api).chat.completions.with_raw_response.create(
        model="oai", messages=messages, stream=stream, stop=stop[:4])
    raw.http_response.read()
    assert log_entry(with_openai_api, raw.headers["x-switchpoint-request-id"])["model"] == "oai"
    assert gw_fake.requests()[-1]["body"]["stop"] == stop[:4]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("model", "fields", "param"), [
    ("oai", {"tools": DOTTED_TOOLS}, "tools"),
    ("oai", {"tool_choice": "none"}, "tool_choice"),
    ("other", {"n": 2}, "n"),
    ("oai", {"tools": [], "parallel_tool_calls": False}, None),
], ids=["dotted-tools", "choice-without-tools", "n", "several"])
def test_no_capable_model_names_the_field_that_left_the_models_out(
        with_openai_api: ThreadServer, gw_fake: FakeProviderProcess, model: str,
        fields: dict[str, Any], param: str | None, stream: bool) -> None:
    # The error named messages whatever left the models out (a tool's name, n, ...).
    before = gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(with_openai_api).chat.completions.create(
            model=model, messages=opening(), stream=stream, **fields)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == param, error
    assert error["message"].startswith(f"{param}: " if param else f'model "{model}"'), error
    assert gw_fake.requests() == before


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_fields_without_tools_go_where_they_are_taken_not_to_openais_api(
        with_openai_api: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # Clients send parallel_tool_calls (or tool_choice) on requests with no tools, and an
    # empty tools list: OpenAI's API refuses them with a 400 (after the hold, had they been
    # sent), other OpenAI-compatible servers take them.
    fields: dict[str, Any] = {"tools": [], "tool_choice": "none", "parallel_tool_calls": False}
    messages = opening()
    raw = client(with_openai_api).chat.completions.with_raw_response.create(
        model="good", messages=messages, stream=stream, **fields)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    sent = gw_fake.requests()[-1]["body"]
    assert {k: sent.get(k) for k in fields} == fields
    before = gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(with_openai_api).chat.completions.create(
            model="oai", messages=messages, stream=stream, **fields)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    for what in ("an empty tools list", "tool_choice without tools",
                 "parallel_tool_calls without tools"):
        assert f"the request has {what}, which OpenAI's API refuses" in error["message"], error
    assert gw_fake.requests() == before


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["other", "good"], ids=["anthropic", "openai"])
def test_an_allowed_tools_choice_reaches_either_wire(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, model: str,
        stream: bool) -> None:
    # OpenAI's allowed_tools choice (the model may call the tools it lists only) was refused
    # by the Anthropic adapter as a choice it cannot express, after the hold: it is given
    # the listed tools only; an OpenAI-compatible upstream gets the choice as sent.
    tools = [*TOOLS, {"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    choice = {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "search"}}]}}
    raw = client(budgeted).chat.completions.with_raw_response.create(  # type: ignore
        model=model, messages=opening(), tools=tools, tool_choice=choice,
        parallel_tool_calls=True, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["model"] == model, entry
    sent = gw_fake.requests()[-1]["body"]
    if model == "good":
        assert sent["tools"] == tools and sent["tool_choice"] == choice
        return
    assert [t["name"] for t in sent["tools"]] == ["search"]
    assert sent["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_choice_of_a_declared_tool_reaches_the_model_as_sent(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    choice = {"type": "function", "function": {"name": "lookup"}}
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=opening(), tools=TOOLS, tool_choice=choice,  # type: ignore
        stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    sent = gw_fake.requests()[-1]["body"]
    assert sent["tool_choice"] == choice and sent["tools"] == TOOLS


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_system_messages_alone_are_not_sent_to_an_anthropic_model(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # OpenAI answers a conversation of system messages alone; the Messages API refuses a
    # request with no messages, so the Anthropic model is left out: the caller is told why.
    messages = [{"role": "system", "content": f"Say hello. [{uuid.uuid4().hex[:8]}]"}]
    before = len(gw_fake.requests())
    with pytest.raises(openai.APIStatusError) as info:
        client(budgeted).chat.completions.create(
            model="other", messages=messages, stream=stream)  # type: ignore[arg-type]
    error = info.value.body
    assert info.value.status_code == 400 and isinstance(error, dict), error
    assert error["code"] == "no_capable_model" and error["param"] == "messages", error
    assert "no user or assistant turn with something in it" in error["message"], error
    assert gw_fake.requests()[before:] == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_empty_text_parts_are_not_sent_to_an_anthropic_model(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # OpenAI takes a text part with no text; the Messages API refuses an empty text block: the
    # part is left out (a turn left with nothing is too, and the turns around it merge).
    tag = uuid.uuid4().hex[:8]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": ""},
                                     {"type": "text", "text": f"Hi. [{tag}]"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]},
        {"role": "assistant", "content": None, "refusal": ""},
        {"role": "user", "content": "Again."}]
    _to_other(budgeted, messages, stream)
    assert gw_fake.requests()[-1]["body"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": f"Hi. [{tag}]"},
                                     {"type": "text", "text": "Again."}]}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_whitespace_only_text_is_not_sent_to_an_anthropic_model(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # OpenAI takes text that is whitespace only; the Messages API refuses a text block of it
    # with a 400 (after the hold): it is left out, as empty text is, and a last assistant
    # turn (the start of the answer) loses its trailing whitespace, which it refuses there.
    tag = uuid.uuid4().hex[:8]
    messages = [
        {"role": "system", "content": " \n"},
        {"role": "user", "content": [{"type": "text", "text": "\t"},
                                     {"type": "text", "text": f"Hi. [{tag}]"}]},
        {"role": "assistant", "content": "  "},
        {"role": "assistant", "content": None, "refusal": "\n"},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Well, "}]
    _to_other(budgeted, messages, stream)
    sent = gw_fake.requests()[-1]["body"]
    assert "system" not in sent
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": f"Hi. [{tag}]"},
                                     {"type": "text", "text": "Again."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Well,"}]}]


def test_a_blank_last_user_turn_after_the_assistant_leaves_an_anthropic_model_out(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # A client sending an empty message to get the model to go on: OpenAI answers it; the
    # Messages API refuses blank text, and without it would continue the assistant's turn as
    # the start of its answer. The Anthropic model is left out before anything is held.
    messages: list[Any] = [
        {"role": "user", "content": f"Tell me a story. [{uuid.uuid4().hex[:8]}]"},
        {"role": "assistant", "content": "Once upon a time"},
        {"role": "user", "content": "  "}]
    raw = client(budgeted).chat.completions.with_raw_response.create(model="good",
                                                                      messages=messages)
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == messages
    gateway = budgeted.service.gateway
    before, budgets, sent = rows(data_dir(budgeted)), gateway.budget_status(), gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(model="other", messages=messages)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == "messages", error
    assert "ends with a user message saying nothing (blank text)" in error["message"], error
    assert rows(data_dir(budgeted)) == before
    assert gateway.budget_status() == budgets and gateway.governor.ledger.open_tickets() == 0
    assert gw_fake.requests() == sent


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_conversation_opening_with_the_assistant_leaves_an_anthropic_model_out(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # A chat UI's greeting opens the conversation: OpenAI takes it, the Messages API refuses a
    # conversation whose first turn is the assistant's ("first message must use the user
    # role"), after the hold. The Anthropic model is left out, saying why; the others take it.
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": f"Look it up. [{uuid.uuid4().hex[:8]}]"}]
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", messages=messages, stream=stream)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == messages
    gateway = budgeted.service.gateway
    before, budgets, sent = rows(data_dir(budgeted)), gateway.budget_status(), gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(
            model="other", messages=messages, stream=stream)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == "messages", error
    assert ("the conversation opens with an assistant turn (system and developer messages "
            "aside), and the Anthropic Messages API takes a conversation opening with a user "
            "turn only") in error["message"], error
    assert rows(data_dir(budgeted)) == before
    assert gateway.budget_status() == budgets and gateway.governor.ledger.open_tickets() == 0
    assert gw_fake.requests() == sent
    # auto chooses among the others.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="auto", messages=messages, stream=stream)
    raw.http_response.read()
    entry = log_entry(budgeted, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["model"] != "other", entry
    assert "other" in entry["excluded"], entry


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("fields", "param", "says"), [
    ({"messages": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": " \n"}]}, "messages",
     "the conversation has no user or assistant turn with something in it (system and "
     "developer messages aside, blank text left out), and the Anthropic Messages API takes no "
     "request without one"),
    ({"tools": [*TOOLS, {"type": "web_search"}]}, "tools",
     'the request declares or allows a tool of type "web_search", and the Anthropic adapter '
     "sends function tools only"),
    ({"tools": TOOLS, "tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "lookup"}},
                                  {"type": "mcp", "server_label": "docs"}]}}}, "tool_choice",
     'the request declares or allows a tool of type "mcp", and the Anthropic adapter sends '
     "function tools only"),
], ids=["blank-conversation", "built-in-tool", "allowed-mcp"])
def test_what_the_anthropic_adapter_cannot_send_leaves_its_model_out_before_the_hold(
        budgeted: ThreadServer, gw_fake: FakeProviderProcess, fields: dict[str, Any],
        param: str, says: str, stream: bool) -> None:
    # OpenAI takes whitespace-only text and tools of other types; the Anthropic adapter left
    # the conversation empty, or had nothing to translate the tool to, and refused the request
    # at send time, after the hold. The model is left out, saying why, naming the field.
    request = {"messages": opening(), **fields}
    gateway = budgeted.service.gateway
    before, budgets, sent = rows(data_dir(budgeted)), gateway.budget_status(), gw_fake.requests()
    with pytest.raises(openai.BadRequestError) as info:
        client(budgeted).chat.completions.create(model="other", stream=stream, **request)
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "no_capable_model", error
    assert error["param"] == param, error
    assert says in error["message"], error
    assert rows(data_dir(budgeted)) == before
    assert gateway.budget_status() == budgets and gateway.governor.ledger.open_tickets() == 0
    assert gw_fake.requests() == sent
    # An OpenAI-compatible model takes the request as sent.
    raw = client(budgeted).chat.completions.with_raw_response.create(
        model="good", stream=stream, **request)
    raw.http_response.read()
    assert raw.http_response.status_code == 200
    assert gw_fake.requests()[-1]["body"]["messages"] == request["messages"]


@pytest.fixture(scope="module")
def falling_back(gw_fake: FakeProviderProcess,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    """The gateway with budgets, and other (the Anthropic adapter) falling back to cheap."""
    root: Path = tmp_path_factory.mktemp("roles-fallback")
    text = config_text(gw_fake, data_dir=str(root / "data"))
    anthropic = "capabilities: [tools, vision]}\n  - {name: cheap"
    assert anthropic in text
    text = text.replace(anthropic, "capabilities: [tools, vision], fallbacks: [cheap]}\n"
                                   "  - {name: cheap")
    config = root / "switchpoint.yaml"
    config.write_text(text + BUDGETS, encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_system_messages_alone_go_to_the_fallback_of_an_anthropic_model_charging_it_alone(
        falling_back: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # The Anthropic model is not sent a conversation it refuses: its fallback answers, the
    # model's health takes no verdict (the refusal is the adapter's, not the provider's), and
    # the budget is charged for the answer alone.
    messages = [{"role": "system", "content": f"Say hello. [{uuid.uuid4().hex[:8]}]"}]
    gateway = falling_back.service.gateway
    before = len(gw_fake.requests())
    raw = client(falling_back).chat.completions.with_raw_response.create(
        model="other", messages=messages, stream=stream)  # type: ignore[arg-type]
    parsed = raw.parse()
    if stream:
        assert [chunk for chunk in parsed]
    entry = log_entry(falling_back, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["model"] == "cheap", entry
    sent = gw_fake.requests()[before:]
    assert [r["path"] for r in sent] == ["/v1/chat/completions"], sent
    health = gateway.health.snapshot().get("other", {})
    assert health.get("failures", 0) == 0 and health.get("circuit", "closed") == "closed", health
    assert gateway.governor.ledger.open_tickets() == 0
    with sqlite3.connect(f"file:{data_dir(falling_back) / DB_FILENAME}?mode=ro", uri=True) as db:
        charged = db.execute("SELECT kind, model FROM spend WHERE request_id = ? "
                             "AND amount_usd > 0", (entry["id"],)).fetchall()
    assert charged == [("settle", "cheap")], charged
