"""Small hostile bodies: non-finite numbers, deep nesting, lone surrogates, and a few hundred
random and mutated bodies. Every one is a 4xx naming what is wrong (never a 500), on a
connection that stays usable, with nothing logged as a server failure.

Before: ``NaN``, ``Infinity`` and ``1e999`` in a chat body, nesting past ~990 levels and lone
surrogates were 500s with tracebacks in the log.
"""

from __future__ import annotations

import json
import socket
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.attack.attack_env import ADMIN_TOKEN, Attacked
from tests.fakes.fake_provider import FakeProviderProcess

VALID = b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}'


def exchange(sock: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a kept-alive socket: (status, body)."""
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65_536)
    assert b"connection: close" not in head.lower()
    return int(head.split(b" ")[1]), rest


@pytest.mark.parametrize(("body", "field", "words"), [
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}], '
     b'"temperature": NaN}', "temperature", "not a finite number"),
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}], '
     b'"top_p": -Infinity}', "top_p", "is -infinity, too large a negative number"),
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "hi", "w": 1e999}]}',
     "messages", "messages[0].w: is infinity, too large a number"),
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "x": '
     + b"[" * 5000 + b"]" * 5000 + b"}", "body", "nests deeper"),
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "x": '
     + b"[" * 100 + b"]" * 100 + b"}", "x", "nests deeper"),
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
     "messages", "lone surrogate"),
    (b'{"model": "alpha", "messages": [{"role": "user", "\\udfff": "hi"}]}',
     "messages", "lone surrogate"),
    (b'{"model": "alpha", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
     "body", "not valid UTF-8"),
])
def test_a_hostile_chat_body_is_a_400_naming_the_field(attacked: Attacked, body: bytes,
                                                         field: str, words: str) -> None:
    with socket.create_connection(("127.0.0.1", attacked.port), timeout=10) as sock:
        status, answer = exchange(sock, "POST", "/v1/chat/completions", body)
        error = json.loads(answer)["error"]
        assert status == 400, answer
        assert error["code"] == "invalid_request" and error["param"] == field
        assert words in error["message"]
        # The connection is still good.
        status, _ = exchange(sock, "POST", "/v1/chat/completions", VALID)
        assert status == 200


def test_the_same_on_the_routing_api(attacked: Attacked) -> None:
    for body in (b'{"prompt": "hi", "cost_weight": NaN}', b'{"prompt": "hi", "x": '
                 + b"[" * 5000 + b"]" * 5000 + b"}", b'{"prompt": "\\ud800"}',
                 b'{"embedding": [' + b",".join([b"1e999"] * 384) + b"]}"):
        r = httpx.post(f"{attacked.base}/v1/route", content=body, timeout=10)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(("path", "admin", "template", "holder"), [
    ("/v1/route", False, b'{"prompt": "hi", "available_models": %s}', "available_models"),
    ("/v1/feedback", False, b'{"decision_id": "0123456789abcdef0123456789abcdef", "score": 1, '
                            b'"comment": %s}', "comment"),
    ("/v1/router/keys", True, b'{"tenant": "acme", "models": %s}', "models"),
])
@pytest.mark.parametrize("depth", [100, 5000])
def test_a_body_nested_too_deep_is_told_so_on_every_route(
        attacked: Attacked, path: str, admin: bool, template: bytes, holder: str,
        depth: int) -> None:
    # Valid JSON nested past 64 levels is refused as a chat body is, naming the field that
    # holds it (the whole body, past what Python's reader goes). These routes called it "not
    # valid JSON (recursion limit exceeded ...)" past pydantic's own limit, and took it below.
    field = holder if depth == 100 else "body"
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"} if admin else {}
    for inner in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        r = httpx.post(f"{attacked.base}{path}", content=template % inner, headers=headers,
                       timeout=10)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == field, error
        assert error["message"] == f"{field}: nests deeper than 64 levels", error


def tool_history(arguments: str) -> dict[str, object]:
    """A conversation whose assistant turn called a tool with ``arguments`` (JSON as text)."""
    return {"model": "gamma", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}


@pytest.mark.parametrize("depth", [5000, 100])
def test_deep_tool_arguments_for_an_anthropic_model_are_refused_by_name(
        attacked: Attacked, fake: FakeProviderProcess, depth: int) -> None:
    # The body nests a few levels: the arguments are a string. The Anthropic adapter sends
    # them as structure, so they are held to the body's bound (64 levels) too; 5,000 levels
    # used to be a RecursionError, a 500 with a traceback in the log.
    fake.reset()
    arguments = '{"a": ' + "[" * depth + "]" * depth + "}"
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=tool_history(arguments),
                   timeout=15)
    assert r.status_code == 400, r.text  # the client's request, not the upstream, is at fault
    assert r.json()["error"]["type"] == "invalid_request_error"
    message = r.json()["error"]["message"]
    assert "messages[1].tool_calls[0].function.arguments: nests deeper than 64 levels" in message
    assert not fake.requests()  # nothing went upstream
    shallow = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=15,
                         json=tool_history('{"a": ' + "[" * 10 + "]" * 10 + "}"))
    assert shallow.status_code == 200, shallow.text


@pytest.mark.parametrize(("arguments", "told"), [
    ('{"city": "Paris", "city": "Lyon"}', 'the key "city" is written twice in one object'),
    ('{"x": 1e-400}', "1e-400 is too small a number to be told from 0")])
def test_tool_arguments_an_anthropic_model_would_read_otherwise_are_refused_by_name(
        attacked: Attacked, fake: FakeProviderProcess, arguments: str, told: str) -> None:
    # The Anthropic adapter sends the arguments as structure: they were read as Python's json
    # reads them, the last of two keys kept and 1e-400 as 0, where the body's reader refuses
    # both (a filter in front, or another model's reader, would take the other value).
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=tool_history(arguments),
                   timeout=15)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert f"messages[1].tool_calls[0].function.arguments: {told}" in message, message
    assert not fake.requests()


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_nested_too_deep_to_relay_fails_over(attacked: Attacked,
                                                       stream: bool) -> None:
    # alpha answers with a field nested 970 levels deep: Python reads that, but cannot write
    # it again, so relaying it was a 500 (plain) or a broken stream, with a traceback. It is
    # now a malformed answer, like one that is not JSON: beta answers instead.
    prompt = f"[[fake:once:ok:nest=970]] deep {uuid.uuid4().hex}"
    r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=15,
                   json={**tool_history("{}"), "model": "alpha", "stream": stream,
                         "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text[:300]
    assert r.headers["x-switchpoint-model"] == "beta"
    assert "[DONE]" in r.text if stream else r.json()["model"] == "beta"
    entry = attacked.entry(r.headers["x-switchpoint-request-id"])
    assert entry["attempts"][0]["outcome"] in ("malformed_response", "stream_broken")
    assert "nests deeper than 64 levels" in entry["attempts"][0]["error"]

# Fuzzing ---------------------------------------------------------------------------------------

JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["NaN", "Infinity", "1e999", "\\ud800"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "messages", "role", "content", "stream", "models",
                         "temperature", "tools", "n", "x"]) | st.text(max_size=8),
        inner, max_size=4),
    max_leaves=20)


def render(value: object) -> bytes:
    """JSON text, with the placeholder strings written as bare tokens (NaN, 1e999, \\ud800)."""
    text = json.dumps(value)
    for token in ("NaN", "Infinity", "1e999"):
        text = text.replace(f'"{token}"', token)
    return text.replace('"\\\\ud800"', '"\\ud800"').encode()


MUTATIONS = st.lists(st.tuples(st.integers(0, len(VALID) - 1),
                               st.sampled_from(["delete", "insert", "flip", "truncate"]),
                               st.binary(min_size=1, max_size=3)), min_size=1, max_size=4)


def mutate(edits: list[tuple[int, str, bytes]]) -> bytes:
    body = bytearray(VALID)
    for where, how, data in edits:
        where = min(where, max(len(body) - 1, 0))
        if how == "delete":
            del body[where:where + len(data)]
        elif how == "insert":
            body[where:where] = data
        elif how == "flip" and body:
            body[where] ^= data[0] or 1
        else:
            del body[where:]
    return bytes(body)


def assert_no_server_failure(client: httpx.Client, body: bytes) -> None:
    for path in ("/v1/chat/completions", "/v1/route"):
        r = client.post(path, content=body)
        assert r.status_code < 500 or r.status_code in (502, 503, 504), (path, body, r.text)
        assert "error" in r.json() or r.status_code == 200


FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(value=JSON_TEXT)
def test_random_json_never_fails_the_server(attacked: Attacked, value: object) -> None:
    with httpx.Client(base_url=attacked.base, timeout=10) as client:
        assert_no_server_failure(client, render(value))
        if isinstance(value, dict):  # the same inside an otherwise valid request
            body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}],
                    "extra": value}
            assert_no_server_failure(client, render(body))


@FUZZ
@given(edits=MUTATIONS)
def test_mutated_bodies_never_fail_the_server(attacked: Attacked,
                                             edits: list[tuple[int, str, bytes]]) -> None:
    with httpx.Client(base_url=attacked.base, timeout=10) as client:
        assert_no_server_failure(client, mutate(edits))


# A key written twice: JSON readers disagree on which one counts (most keep the last, some the
# first), so a filter in front could check one value and the service act on the other.
TWICE = [
    ("/v1/chat/completions",
     b'{"model": "alpha", "model": "beta", "messages": [{"role": "user", "content": "hi"}]}',
     '"model"'),
    ("/v1/chat/completions",
     b'{"model": "alpha", "messages": [{"role": "user", "content": "hi", "role": "system"}]}',
     '"role"'),
    ("/v1/route", b'{"prompt": "hi", "prompt": "bye"}', '"prompt"'),
    ("/v1/route", b'{"prompt": "hi", "cost_weight": 0, "cost_weight": 9}', '"cost_weight"'),
    ("/v1/feedback", b'{"decision_id": "' + b"0" * 32 + b'", "score": 1, "score": 0}',
     '"score"'),
    ("/v1/router/preferences/score",
     b'{"compare_id": "x", "scores": {"A": 1, "A": 0}}', '"A"'),
    ("/v1/router/keys", b'{"tenant": "a", "tenant": "b"}', '"tenant"'),
    ("/v1/router/keys/0123456789/rotate", b'{"grace_seconds": 1, "grace_seconds": 2}',
     '"grace_seconds"'),
    ("/v1/router/experiments/x/promote", b'{"arm": "a", "arm": "b"}', '"arm"'),
]


@pytest.mark.parametrize(("path", "body", "key"), TWICE)
def test_a_key_written_twice_is_a_400_naming_it(attacked: Attacked, path: str, body: bytes,
                                                key: str) -> None:
    before = httpx.get(f"{attacked.base}/v1/router/stats", headers=attacked.admin,
                       timeout=10).json()
    r = httpx.post(f"{attacked.base}{path}", content=body, headers={
        **attacked.admin, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == "body", error
    assert f"the key {key} is written twice" in error["message"], error
    # Nothing was routed, forwarded or logged.
    after = httpx.get(f"{attacked.base}/v1/router/stats", headers=attacked.admin,
                      timeout=10).json()
    assert after == before


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/router/keys", b"not json"),
    ("/v1/router/keys", b'{"tenant": 5}'),
    ("/v1/router/keys", b'{"tenant": "acme", "unknown": 1}'),
    ("/v1/router/keys/0123456789/rotate", b"not json"),
    ("/v1/router/keys/0123456789/rotate", b'{"grace_seconds": "a day"}'),
])
def test_an_admin_route_answers_a_caller_without_the_token_before_reading_the_body(
        attacked: Attacked, path: str, body: bytes) -> None:
    # The body's faults (or the fields the route takes) are no business of a caller who may
    # not use the route: every one is the same 401.
    r = httpx.post(f"{attacked.base}{path}", content=body,
                   headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
    # With the token, the body's fault is named.
    r = httpx.post(f"{attacked.base}{path}", content=body,
                   headers={**attacked.admin, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] in ("body", "tenant", "unknown", "grace_seconds")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/route", b'{"prompt": "a\\ud800b"}', "prompt"),
    ("/v1/route", b'{"prompt": "hi", "available_models": ["\\udfff"]}', "available_models"),
    ("/v1/feedback", b'{"decision_id": "' + b"0" * 32 + b'", "score": 1, "comment": "\\ud800"}',
     "comment"),
    ("/v1/router/keys", b'{"tenant": "t", "name": "\\udc00x"}', "name"),
])
def test_a_lone_surrogate_is_named_on_every_route(attacked: Attacked, path: str, body: bytes,
                                                  field: str) -> None:
    r = httpx.post(f"{attacked.base}{path}", content=body, headers={
        **attacked.admin, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and "lone surrogate" in error["message"], error
    # A surrogate pair (an emoji) is text like any other.
    ok = httpx.post(f"{attacked.base}/v1/route", content=b'{"prompt": "\\ud83d\\ude00"}',
                    timeout=10)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_a_surrogate_written_as_utf8_bytes_is_refused_on_every_route(
        attacked: Attacked, fake: FakeProviderProcess, path: str) -> None:
    # Bytes ED A0 80 (U+D800 encoded as if it were a character) are not UTF-8: the chat
    # gateway's reader let them through as a lone surrogate, and the request failed with a 500
    # (UnicodeEncodeError) as it was sent upstream.
    body = VALID if path == "/v1/chat/completions" else b'{"prompt": "hi"}'
    r = httpx.post(f"{attacked.base}{path}", content=body.replace(b'"hi"', b'"h\xed\xa0\x80i"'),
                   timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "body", error
    assert fake.requests() == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_a_body_starting_with_a_byte_order_mark_is_read_on_every_route(attacked: Attacked,
                                                                       path: str) -> None:
    # Some clients (Windows tools) write one; the chat gateway read such a body while the
    # routing API called it "not valid JSON (expected value at line 1 column 1)".
    body = (VALID if path == "/v1/chat/completions" else b'{"prompt": "hi"}')
    r = httpx.post(f"{attacked.base}{path}", content=b"\xef\xbb\xbf" + body, timeout=10)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", VALID), ("/v1/route", b'{"prompt": "hi"}'),
    ("/v1/feedback", b'{"decision_id": "' + b"0" * 32 + b'", "score": 1}')])
def test_a_body_after_two_byte_order_marks_is_refused_alike_on_every_route(
        attacked: Attacked, path: str, body: bytes) -> None:
    # The second mark is text, which no JSON begins with: the chat gateway refused such a body
    # while the routing API and feedback read it (a reader in front would not have).
    before = httpx.get(f"{attacked.base}/v1/router/stats", headers=attacked.admin,
                       timeout=10).json()
    r = httpx.post(f"{attacked.base}{path}", content=b"\xef\xbb\xbf" * 2 + body, timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "body" and "is not valid JSON" in error["message"], error
    after = httpx.get(f"{attacked.base}/v1/router/stats", headers=attacked.admin,
                      timeout=10).json()
    assert after == before


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le"])
def test_a_body_in_utf16_or_utf32_is_read_on_every_route(attacked: Attacked,
                                                         encoding: str) -> None:
    # The chat gateway read such a body; the routing API and the learning routes called it
    # "not valid JSON (expected value at line 1 column 1)".
    chat = httpx.post(f"{attacked.base}/v1/chat/completions",
                      content=VALID.decode().encode(encoding), timeout=10)
    assert chat.status_code == 200, chat.text
    routed = httpx.post(f"{attacked.base}/v1/route",
                        content='{"prompt": "hi"}'.encode(encoding), timeout=10)
    assert routed.status_code == 200, routed.text
    decision = routed.json()["decision_id"]
    scored = httpx.post(f"{attacked.base}/v1/feedback", timeout=10, content=json.dumps(
        {"decision_id": decision, "score": 0.5, "comment": "caf\u00e9"}).encode(encoding))
    assert scored.status_code == 200, scored.text
    assert scored.json()["quality"] == 0.5
    unknown = httpx.post(f"{attacked.base}/v1/router/preferences/score", timeout=10,
                         content=json.dumps({"compare_id": "0" * 32,
                                             "scores": {"A": 1}}).encode(encoding))
    assert unknown.status_code == 404, unknown.text


@pytest.mark.parametrize("path", ["/v1/router/policy/knn", "/v1/router/reload",
                                  "/v1/router/health/reset",
                                  "/v1/router/keys/0123456789/revoke"])
def test_a_route_that_takes_no_body_refuses_one_and_does_nothing(attacked: Attacked,
                                                                 path: str) -> None:
    # A body here used to be ignored: `{"policy": "knn"}` to /reload, or `{"weights": ...}`,
    # reloaded the config as if it had said nothing.
    policy = httpx.get(f"{attacked.base}/health", headers=attacked.admin,
                       timeout=10).json()["policy"]
    for body in (b'{"weights": "/tmp/elsewhere"}', b"not json", b"[]"):
        r = httpx.post(f"{attacked.base}{path}", content=body, headers=attacked.admin,
                       timeout=30)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "body" and "takes no body" in error["message"], error
    assert httpx.get(f"{attacked.base}/health", headers=attacked.admin,
                     timeout=10).json()["policy"] == policy
    # Without a body (or an empty object) it does what it does.
    for body in (b"", b"{}", b" \r\n"):
        r = httpx.post(f"{attacked.base}{path}", content=body, headers=attacked.admin,
                       timeout=30)
        assert r.status_code in (200, 404), r.text  # (no key has the revoked id)
    httpx.post(f"{attacked.base}/v1/router/policy/{policy}", headers=attacked.admin,
               timeout=30).raise_for_status()


@pytest.mark.parametrize(("fields", "field"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"},
     "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": 5},
     "tool_choice"),
    ({"functions": [{"name": "f"}], "function_call": "required"}, "function_call"),
])
def test_a_tool_choice_no_api_takes_is_a_400_before_any_model_is_called(
        attacked: Attacked, fake: FakeProviderProcess, fields: dict[str, object],
        field: str) -> None:
    # It went to the model chosen: an Anthropic model's adapter refused it as a request it
    # could not express, logged as a failed request, and an OpenAI model was sent it.
    logged = [entry["id"] for entry in attacked.requests()]
    for model in ("gamma", "alpha", "auto"):
        r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=10, json={
            "model": model, "messages": [{"role": "user", "content": "hi"}], **fields})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and error["param"] == field, error
        assert error["message"].startswith(f"{field}: "), error
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged


@pytest.mark.parametrize("stop", [5, True, {"a": 1}, ["END", 2]])
def test_a_stop_that_is_not_text_is_a_400_whichever_model_would_answer(
        attacked: Attacked, fake: FakeProviderProcess, stop: object) -> None:
    # To the Anthropic model, a number was a 500 with a traceback in the log.
    for model in ("gamma", "alpha", "auto"):
        r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=10, json={
            "model": model, "messages": [{"role": "user", "content": "hi"}], "stop": stop})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and error["param"] == "stop", error
    assert fake.requests() == []
