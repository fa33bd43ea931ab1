"""The routes' JSON bodies (server/bodies.py): the checks Python's reader makes (a key written
twice, a lone surrogate) read the text's structure only; pydantic's reader makes the values."""

from __future__ import annotations

import json

import pytest

from switchpoint._json import not_finite
from switchpoint.errors import InvalidInputError
from switchpoint.gateway.parsing import parse_chat_body
from switchpoint.server.bodies import parse_body
from switchpoint.server.schemas import RouteRequest


def refusal(raw: bytes) -> tuple[str, str]:
    with pytest.raises(InvalidInputError) as caught:
        parse_body(RouteRequest, raw)
    return caught.value.field, str(caught.value)


def test_numbers_are_read_by_the_model_exactly() -> None:
    vector = [0.1, -2.5e-7, 3, 1e308, -0.0]
    body = parse_body(RouteRequest, json.dumps({"embedding": vector, "cost_weight": 2}).encode())
    assert body.embedding == vector and body.cost_weight == 2.0


def test_a_key_written_twice_is_named_wherever_it_is() -> None:
    assert refusal(b'{"prompt": "a", "prompt": "b"}') == (
        "body", 'body: the key "prompt" is written twice in one object; keep one')
    field, message = refusal(b'{"prompt": "a", "embedding": [1, {"x": 1, "x": 2.5}]}')
    assert field == "body" and '"x" is written twice' in message


def test_a_lone_surrogate_is_named_by_its_field() -> None:
    field, message = refusal(b'{"prompt": "a\\ud800", "cost_weight": 1.5}')
    assert field == "prompt" and "lone surrogate" in message


def test_a_number_too_long_to_read_is_told_as_the_chat_gateway_tells_it() -> None:
    # Python cannot make an int of it (nor pydantic's reader, which called the body "not valid
    # JSON (number out of range ...)"): said as the chat gateway says it, whatever else the
    # body holds.
    digits = b"9" * 5000
    for raw in (b'{"prompt": "a", "cost_weight": ' + digits + b"}",
                b'{"prompt": "a", "cost_weight": ' + digits + b', "prompt": "b"}'):
        field, message = refusal(raw)
        assert field == "body" and message == f"body: {not_finite(digits.decode())}", message
    chat = b'{"model": "auto", "messages": [], "seed": ' + digits + b"}"
    with pytest.raises(InvalidInputError) as caught:
        parse_chat_body(chat)
    assert str(caught.value) == message


def test_non_finite_numbers_still_reach_the_models_check() -> None:
    for literal in (b"NaN", b"Infinity", b"1e999"):
        field, message = refusal(b'{"embedding": [1, ' + literal + b"]}")
        assert field == "embedding" and "finite" in message, message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-32-le", "utf-32-be"])
def test_json_in_utf16_or_utf32_is_read_as_the_chat_gateway_reads_it(encoding: str) -> None:
    # It was refused as "not valid JSON (expected value at line 1 column 1)", which the chat
    # gateway's reader (Python's json) took.
    text = '{"prompt": "caf\u00e9 \U0001f600", "cost_weight": 0.5}'
    body = parse_body(RouteRequest, text.encode(encoding))
    assert (body.prompt, body.cost_weight) == ("caf\u00e9 \U0001f600", 0.5)
    # The checks read it too: a key written twice, a lone surrogate escape.
    assert "written twice" in refusal('{"prompt": "a", "prompt": "b"}'.encode(encoding))[1]
    assert refusal('{"prompt": "a\\ud800"}'.encode(encoding))[0] == "prompt"


def test_text_that_is_not_what_its_bytes_say_is_named_with_how_to_fix_it() -> None:
    # A lone surrogate code unit, which UTF-16 cannot decode.
    raw = '{"prompt": "a'.encode("utf-16-le") + b"\x00\xd8" + '"}'.encode("utf-16-le")
    field, message = refusal(raw)
    assert field == "body" and "is not valid UTF-16-LE text" in message, message
    assert "send the JSON as UTF-8" in message
