"""The routes' JSON bodies (server/bodies.py): the checks Python's reader makes (a key written
twice, a lone surrogate) read the text's structure only; pydantic's reader makes the values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchpoint._json import nests_deeper
from switchpoint.errors import InvalidInputError
from switchpoint.gateway.parsing import parse_chat_body
from switchpoint.server.bodies import parse_body
from switchpoint.server.routes.governance import KeyCreate
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


def test_a_number_too_long_to_read_is_named_by_its_field_as_the_chat_gateway_names_it() -> None:
    # Python cannot make an int of it (nor pydantic's reader, which called the body "not valid
    # JSON (number out of range ...)"): named by its field, as an integer of 401 digits is,
    # whatever else the body holds; it was "body: holds a number of 5000 digits".
    digits = b"9" * 5000
    told = ("cost_weight: must be a finite number, got an integer of 5000 digits, past the "
            "largest a number holds (about 1.8e308)")
    for raw in (b'{"prompt": "a", "cost_weight": ' + digits + b"}",
                b'{"prompt": "a", "cost_weight": ' + digits + b', "prompt": "b"}'):
        assert refusal(raw) == ("cost_weight", told)
    field, message = refusal(b'{"embedding": [1, -' + digits + b"]}")
    assert (field, message) == ("embedding", "embedding[1]: " + told.split(": ", 1)[1])
    chat = b'{"model": "auto", "messages": [], "seed": ' + digits + b"}"
    with pytest.raises(InvalidInputError) as caught:
        parse_chat_body(chat)
    assert (caught.value.field, str(caught.value)) == ("seed", told.replace("cost_weight",
                                                                            "seed"))
    # The body itself a number: nothing else to name.
    assert refusal(digits) == ("body", "body: " + told.split(": ", 1)[1])


TOO_SMALL = "is too small a number to be told from 0; write 0, or a number of at least 1e-300"


@pytest.mark.parametrize("literal", [b"1e-400", b"-1E-400", b"0.5e-330", b"1e-0400",
                                     b"0." + b"0" * 400 + b"1"])
def test_a_number_a_float_holds_only_as_0_is_named_by_its_field(literal: bytes) -> None:
    # It was read as 0 (a cost_weight of 0 is quality first), where a header, a query
    # parameter and the command line refuse it.
    shown = literal.decode() if len(literal) <= 40 else literal[:37].decode() + "..."
    assert refusal(b'{"prompt": "a", "cost_weight": ' + literal + b"}") == (
        "cost_weight", f"cost_weight: {shown} {TOO_SMALL}")
    assert refusal(b'{"embedding": [0.5, ' + literal + b"]}") == (
        "embedding", f"embedding[1]: {shown} {TOO_SMALL}")
    chat = (b'{"model": "auto", "messages": [{"role": "user", "content": "hi", "x": ['
            + literal + b"]}]}")
    with pytest.raises(InvalidInputError) as caught:
        parse_chat_body(chat)
    assert (caught.value.field, str(caught.value)) == (
        "messages", f"messages[0].x[0]: {shown} {TOO_SMALL}")
    assert refusal(literal) == ("body", f"body: {shown} {TOO_SMALL}")


def test_a_number_a_float_holds_only_as_0_in_a_whole_number_field_is_told_it_is_no_integer(
        ) -> None:
    # It was told to "write 0, or a number of at least 1e-300", which such a field refuses too
    # (max_tokens, rpm: from 1), where 1.0 there is told "must be an integer, got 1.0".
    for field in ("max_tokens", "n", "seed"):
        with pytest.raises(InvalidInputError) as caught:
            parse_chat_body(b'{"model": "auto", "messages": [{"role": "user", "content": '
                            b'"hi"}], "' + field.encode() + b'": 1e-400}')
        assert (caught.value.field, str(caught.value)) == (
            field, f"{field}: must be an integer, got 1e-400")
    with pytest.raises(InvalidInputError) as caught:
        parse_body(KeyCreate, b'{"tenant": "acme", "rpm": 1e-400}')
    assert (caught.value.field, str(caught.value)) == ("rpm", "rpm: must be an integer, got 1e-400")
    # A field that takes any number (or an entry of one) is told as before.
    with pytest.raises(InvalidInputError) as caught:
        parse_body(KeyCreate, b'{"tenant": "acme", "cost_weight": 1e-400}')
    assert str(caught.value) == f"cost_weight: 1e-400 {TOO_SMALL}"


@pytest.mark.parametrize("literal", [b"0", b"0.0", b"-0e-400", b"0e999", b"1e-300", b"1e-99",
                                     b"4.9e-324", b"1.5e-05", b"1" + b"0" * 300 + b"e-600"])
def test_a_number_a_float_tells_from_0_or_0_itself_is_read(literal: bytes) -> None:
    body = parse_body(RouteRequest, b'{"prompt": "a", "cost_weight": ' + literal + b"}")
    assert body.cost_weight == float(literal)
    chat = parse_chat_body(b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], '
                           b'"temperature": ' + literal + b"}")
    assert chat["temperature"] == float(literal)


@pytest.mark.parametrize(("literal", "words"), [
    (b"1e999", "is infinity, too large a number (what 1e400, or any number past about "
               "1.8e308, reads as)"),
    (b"-1e999", "is -infinity, too large a negative number (what -1e400, or any number below "
                "about -1.8e308, reads as)"),
    (b"NaN", "is NaN, not a finite number"), (b" Infinity ", "is infinity, too large")])
def test_a_body_that_is_a_nan_or_an_infinity_is_told_so_as_a_field_holding_one(
        literal: bytes, words: str) -> None:
    # The chat gateway said "body: holds the number 1e999, which is not finite", where a field
    # says this; the routing door that the body must be a JSON object.
    chat = b'{"model": "auto", "messages": [], "temperature": ' + literal
    field, message = refusal(literal)
    assert field == "body" and message.startswith(f"body: {words}"), message
    assert message.endswith("; send finite numbers only"), message
    for raw, field in ((literal, "body"), (chat + b"}", "temperature"), (chat, "body")):
        with pytest.raises(InvalidInputError) as caught:
            parse_chat_body(raw)
        assert caught.value.field == field
        assert str(caught.value).startswith(f"{field}: {words}"), str(caught.value)


@pytest.mark.parametrize(("raw", "path"), [
    (b"[1e999]", "body[0]"), (b"[1, [NaN]]", "body[1][0]"), (b'[{"a": -1e999}]', "body[0].a")])
def test_a_body_that_is_an_array_is_named_body_before_the_index_of_what_it_holds(
        raw: bytes, path: str) -> None:
    # It was "[0]: is infinity, ...", where a body that is 1e999 is "body: is infinity, ...".
    with pytest.raises(InvalidInputError) as caught:
        parse_chat_body(raw)
    assert caught.value.field == "body"
    assert str(caught.value).startswith(f"{path}: is "), str(caught.value)
    assert str(caught.value).endswith("; send finite numbers only"), str(caught.value)
    # The routing door, of a number no float holds, alike (its param was "0").
    assert refusal(b"[1, 1e-400]") == ("body", f"body[1]: 1e-400 {TOO_SMALL}")


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


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# Text whose brackets, quotes and backslashes could be taken for structure.
_TRICKY = st.text(alphabet=['"', "\\", "[", "]", "{", "}", "a", "é", "\n", "\ud800"],
                  max_size=8)
_VALUES = st.recursive(st.none() | st.integers() | _TRICKY,
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_TRICKY, inner, max_size=3), max_leaves=40)


@given(_VALUES, st.sampled_from(["utf-8", "utf-16", "utf-32", "str"]), st.booleans())
def test_the_depth_of_json_text_is_told_by_its_brackets_outside_strings(
        value: object, encoding: str, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    written: str | bytes = text if encoding == "str" else text.encode(encoding, "surrogatepass")
    depth = _depth(value)
    for most in range(max(depth - 2, 0), depth + 2):
        assert nests_deeper(written, most) == (depth > most), (text, most)


def test_a_long_conversation_is_not_walked_to_check_its_depth(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A chat body of an agent's 200 turns (hundreds of objects and lists, far more brackets than
    # the 64 levels a body may nest) was walked value by value on every request; its text tells
    # its depth. One past the bound is still refused, naming the field that holds it.
    from switchpoint.gateway import parsing
    from switchpoint.server import bodies

    turns: list[dict[str, object]] = [{"role": "user", "content": "[[[{{{ look it up"}]
    for i in range(100):
        turns.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {
                "name": "find", "arguments": json.dumps({"q": [[i]], "deep": "[" * 70})}}]})
        turns.append({"role": "tool", "tool_call_id": f"c{i}", "content": "{" * 70})
    raw = json.dumps({"model": "auto", "messages": turns}).encode()
    assert raw.count(b"[") + raw.count(b"{") > 64 * 10

    def walked(*args: object, **kwargs: object) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(parsing, "_check_values", walked)
    monkeypatch.setattr(parsing, "_deep_field", walked)
    assert len(parse_chat_body(raw)["messages"]) == 201
    bodies._check_text(raw, ())
    monkeypatch.undo()
    nested: object = [[[[[[[[]]]]]]]]
    for _ in range(60):
        nested = {"a": nested}
    deep = {"model": "auto", "messages": turns, "metadata": nested}
    with pytest.raises(InvalidInputError) as caught:
        parse_chat_body(json.dumps(deep).encode())
    assert str(caught.value) == "metadata: nests deeper than 64 levels"
    with pytest.raises(InvalidInputError) as caught:
        bodies._check_text(json.dumps(deep).encode(), ())
    assert str(caught.value) == "metadata: nests deeper than 64 levels"
