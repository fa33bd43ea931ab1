"""Chat bodies are read as strictly as routing requests: bad input is a 400 naming the field."""

from __future__ import annotations

import json

import pytest

from switchpoint.errors import InvalidInputError
from switchpoint.gateway.parsing import (
    MAX_DEPTH,
    check_chat_body,
    parse_chat_body,
    stop_sequences,
    upstream_body,
)

GOOD = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}


def test_a_good_body_comes_back_as_sent() -> None:
    assert parse_chat_body(json.dumps(GOOD).encode()) == GOOD


@pytest.mark.parametrize("raw, field, needle", [
    (b"", "body", "is empty"),
    (b"{not json", "body", "not valid JSON"),
    (b"{\"model\": \"\xff\"}", "body", "UTF-8"),
    (b'{"model": "auto", "messages": [], "temperature": NaN}', "temperature",
     "temperature: is NaN, not a finite number; send finite numbers only"),
    (b'{"model": "auto", "messages": [], "temperature": Infinity}', "temperature", "inf"),
    # 1e999 was "is inf" here and "is infinity, too large a number ..." on a routing body.
    (b'{"model": "auto", "messages": [], "temperature": 1e999}', "temperature",
     "temperature: is infinity, too large a number (what 1e400, or any number past about "
     "1.8e308, reads as); send finite numbers only"),
    (b'{"model": "auto", "messages": [], "temperature": -1e999}', "temperature",
     "temperature: is -infinity, too large a negative number (what -1e400"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model", "string"),
    (b'{"model": "auto", "messages": []}', "messages", "empty"),
    (b'{"model": "auto", "messages": [{"content": "x"}]}', "messages", "required"),
    (b'{"model": "auto", "messages": [{"role": "bogus", "content": "x"}]}', "messages",
     'messages[0].role: must be one of "system", "developer", "user", "assistant", "tool" or '
     '"function", got "bogus"'),
    (b'{"model": "auto", "messages": [{"role": 3, "content": "x"}]}', "messages", "role"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "stream": "yes"}', "stream",
     "true or false"),
    (b'[1, 2]', "body", "JSON object"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "n": 3.0}', "n",
     "n: must be an integer, got 3.0"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "n": "3"}', "n", "must be an integer"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "n": 0}', "n", ">= 1"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "n": 129}', "n", "<= 128"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": -1}', "max_tokens",
     "max_tokens: must be >= 1, got -1"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": 0}', "max_tokens",
     ">= 1"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": 1.5}', "max_tokens",
     "must be an integer, got 1.5"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": "100"}', "max_tokens",
     "must be an integer"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": true}', "max_tokens",
     "must be an integer"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": 1e30}', "max_tokens",
     "must be an integer"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_tokens": 9223372036854775808}',
     "max_tokens", "must be <= 100,000,000"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_completion_tokens": -5}',
     "max_completion_tokens", ">= 1, got -5"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "max_completion_tokens": 2.5}',
     "max_completion_tokens", "must be an integer"),
    # stream_options was replaced when not an object, and "yes" counted as true.
    (b'{"model": "auto", "messages": [{"role": "user"}], "stream": true, '
     b'"stream_options": "yes"}', "stream_options", "stream_options: must be a mapping"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "stream": true, '
     b'"stream_options": [{"include_usage": true}]}', "stream_options", "must be a mapping"),
    (b'{"model": "auto", "messages": [{"role": "user"}], "stream": true, '
     b'"stream_options": {"include_usage": "yes"}}', "stream_options",
     "stream_options.include_usage: must be true or false, got \"yes\""),
    (b'{"model": "auto", "messages": [{"role": "user"}], "stream": true, '
     b'"stream_options": {"include_usage": 1}}', "stream_options",
     "stream_options.include_usage: must be true or false, got 1"),
    # A stop that is not text: OpenAI refuses it, and the Anthropic adapter failed on a number
    # (a 500).
    (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stop": 5}', "stop",
     "stop: must be a string or a list of strings, got 5; send a string"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stop": true}', "stop",
     "stop: must be a string or a list of strings, got true"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stop": {"a": 1}}',
     "stop", "stop: must be a string or a list of strings, got an object"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stop": ["a", 2]}',
     "stop", "stop[1]: must be a string, got 2"),
])
def test_bad_bodies_name_their_field(raw: bytes, field: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_chat_body(raw)
    assert info.value.field == field and needle.lower() in str(info.value).lower()


def test_stream_options_that_check_out_go_upstream_as_sent() -> None:
    for options in (None, {}, {"include_usage": False}, {"include_usage": True, "other": 1}):
        body = {**GOOD, "stream": True, "stream_options": options}
        assert parse_chat_body(json.dumps(body).encode()) == body


def test_a_stop_of_text_goes_upstream_as_sent() -> None:
    for stop in (None, "END", ["\n\n", "END"], [], ["a"] * 10):
        body = {**GOOD, "stop": stop}
        assert parse_chat_body(json.dumps(body).encode()) == body
        assert check_chat_body(body) == body


def test_output_caps_and_null_go_upstream_as_sent() -> None:
    for cap in ({"max_tokens": 1}, {"max_tokens": None}, {"max_completion_tokens": 4096}):
        assert parse_chat_body(json.dumps({**GOOD, **cap}).encode()) == {**GOOD, **cap}


def test_deep_nesting_is_refused_before_it_can_hurt() -> None:
    for depth in (MAX_DEPTH + 1, 990, 5000):
        raw = ('{"model": "auto", "messages": [{"role": "user", "content": "x"}], "x": '
               + "[" * depth + "]" * depth + "}").encode()
        with pytest.raises(InvalidInputError, match="deeper"):
            parse_chat_body(raw)


def test_lone_surrogates_are_refused_and_pairs_accepted() -> None:
    lone = b'{"model": "auto", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    with pytest.raises(InvalidInputError, match="surrogate") as info:
        parse_chat_body(lone)
    assert info.value.field == "messages"
    pair = b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    assert parse_chat_body(pair)["messages"][0]["content"] == "\N{GRINNING FACE}"


def test_python_built_bodies_get_the_same_checks() -> None:
    with pytest.raises(InvalidInputError, match="not a finite number"):
        check_chat_body({**GOOD, "temperature": float("nan")})
    with pytest.raises(InvalidInputError) as info:
        check_chat_body({**GOOD, "models": []})
    assert info.value.field == "models"


def test_the_gateways_own_fields_never_go_upstream() -> None:
    body = {**GOOD, "models": ["a", "b"]}
    assert upstream_body(body) == GOOD and body["models"] == ["a", "b"]


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize("messages, path, needle", [
    ([{"role": "user"}], "messages[0].content", "is missing; a user message needs content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
      {"role": "user", "content": None}], "messages[2].content", "is null"),
    ([{"role": "system"}, {"role": "user", "content": "x"}], "messages[0].content",
     "a system message needs content"),
    ([{"role": "developer", "content": None}], "messages[0].content", "developer message"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": None}],
     "messages[1].content", "unless it carries tool_calls"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [_CALL]},
      {"role": "tool", "content": None, "tool_call_id": "call_1"}], "messages[2].content",
     "a tool message needs content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [_CALL]},
      {"role": "tool", "content": "1", "tool_call_id": None}], "messages[2].tool_call_id",
     "is null; a tool message names the tool call it answers"),
    ([{"role": "user", "content": "x"}, {"role": "function", "content": "1", "name": 3}],
     "messages[1].name", "must be a string, got 3"),
    # An author's name (system, developer, user, assistant): what OpenAI's API refuses in it.
    ([{"role": "user", "content": "x", "name": "Ann Smith"}], "messages[0].name",
     'is "Ann Smith"; a message\'s name (its author\'s, such as ann or agent_2) is a string of '
     "1 to 256 characters without whitespace or any of < | \\ / >, as OpenAI's API takes it"),
    ([{"role": "system", "content": "x", "name": ""}, {"role": "user", "content": "x"}],
     "messages[0].name", 'is ""; a message\'s name'),
    ([{"role": "developer", "content": "x", "name": "ops\n"}, {"role": "user", "content": "x"}],
     "messages[0].name", 'is "ops\\n"; a message\'s name'),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "name": "a/b"}],
     "messages[1].name", 'is "a/b"; a message\'s name'),
    ([{"role": "user", "content": "x", "name": "<|im_start|>"}], "messages[0].name",
     "a message's name"),
    ([{"role": "user", "content": "x", "name": "n" * 257}], "messages[0].name",
     "1 to 256 characters"),
    ([{"role": "user", "content": "x", "name": 7}], "messages[0].name",
     "must be a string, got 7; a message's name"),
])
def test_a_message_without_what_its_role_needs_is_refused_naming_the_field(
        messages: list[dict[str, object]], path: str, needle: str) -> None:
    body = {"model": "auto", "messages": messages}
    for door in ("bytes", "python"):
        with pytest.raises(InvalidInputError) as info:
            if door == "bytes":
                parse_chat_body(json.dumps(body).encode())
            else:
                check_chat_body(body)
        assert info.value.field == "messages"
        assert str(info.value).startswith(f"{path}: ") and needle in str(info.value)


def test_author_names_openai_takes_pass_as_sent() -> None:
    # Any script, punctuation other than < | \\ / >, up to 256 characters; null is no name;
    # a tool message's name is no field of OpenAI's and goes upstream unread.
    messages = [
        {"role": "system", "content": "x", "name": "ops"},
        {"role": "developer", "content": "x", "name": "policy.v2"},
        {"role": "user", "content": "x", "name": "J@ck"},
        {"role": "assistant", "content": "y", "name": "استاذ"},
        {"role": "user", "content": "x", "name": "n" * 256},
        {"role": "user", "content": "x", "name": None},
        {"role": "assistant", "tool_calls": [_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42", "name": "any name"},
        {"role": "user", "content": "and?"}]
    body = {"model": "auto", "messages": messages}
    assert check_chat_body(body) == body
    assert parse_chat_body(json.dumps(body).encode()) == body


def test_messages_openai_takes_without_text_pass() -> None:
    messages = [
        {"role": "system", "content": ""}, {"role": "user", "content": []},
        {"role": "assistant", "content": None, "tool_calls": [_CALL], "refusal": None},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "assistant", "refusal": "No."},
        {"role": "assistant", "content": None, "audio": {"id": "audio_1"}},
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]}]
    body = {"model": "auto", "messages": messages}
    assert check_chat_body(body) == body


def test_the_choices_of_a_field_are_listed_as_json_writes_them() -> None:
    from typing import Literal

    from pydantic import BaseModel, ValidationError

    from switchpoint._messages import reason

    class Choice(BaseModel):
        value: Literal["a", "it's", "x or y", 3, True, None]

    with pytest.raises(ValidationError) as info:
        Choice(value="z")
    assert reason(info.value.errors()[0]) == (
        'must be one of "a", "it\'s", "x or y", 3, true or null, got "z"')
    # A list that does not read back as values is given as it came.
    assert reason({"type": "literal_error", "ctx": {"expected": "a, b"}, "input": "z"}) == (
        'must be one of a, b, got "z"')


@pytest.mark.parametrize(("stop", "sequences"), [
    ("END", ["END"]), ("", []), (None, []), ([], []), (["\n\n", "", "Q:"], ["\n\n", "", "Q:"])],
    ids=["string", "empty-string", "null", "empty-list", "list"])
def test_a_requests_stop_reads_as_its_stop_sequences(stop: object,
                                                     sequences: list[str]) -> None:
    # One reading of stop for every rule that counts or sends its sequences: a string is one
    # (an empty string alone none), a list its items, null none; so is a body naming none.
    body = check_chat_body({**GOOD, "stop": stop})
    assert stop_sequences(body) == sequences
    assert stop_sequences(GOOD) == []
