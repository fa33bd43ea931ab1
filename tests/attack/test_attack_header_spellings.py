"""How many, how big and how spelt the headers with underscores a client sends may be, through
every door that reads them: the routing API, the chat route, the official openai client's
extra headers. A header the service reads, spelt with underscores for any of its dashes, is a
400 naming it whatever else the request carries (its dashed spelling too: neither wins, so a
proxy in front and the service never act on different values); one it does not read passes,
and the header section stays bounded by ``server.max_header_bytes``.

Evidence: each of these held when this wave's refusal was attacked.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.attack.attack_env import LIMITS, Attacked, chat_body
from tests.attack.test_attack_underscore_headers import CHAT, _exchange
from tests.fakes.fake_provider import FakeProviderProcess

ROUTE = b"POST /v1/route HTTP/1.1\r\nContent-Type: application/json\r\n"


def _chat() -> bytes:
    return json.dumps(chat_body("hello", "alpha")).encode()


def _route() -> bytes:
    return json.dumps({"prompt": "hello"}).encode()


def _refused(head: bytes, body: bytes, sent: str) -> None:
    assert head.startswith(b"HTTP/1.1 400 "), head + body
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", sent), error


@pytest.mark.parametrize(("line", "body"), [(CHAT, _chat()), (ROUTE, _route())])
def test_both_spellings_at_once_are_refused_in_either_order(
        attacked: Attacked, fake: FakeProviderProcess, line: bytes, body: bytes) -> None:
    for headers in (b"x-session-id: a\r\nx_session_id: b\r\n",
                    b"x_session_id: b\r\nx-session-id: a\r\n"):
        _refused(*_exchange(attacked, line + headers, body), "x_session_id")
    # Mixed case, and dashes and underscores mixed in one name.
    for sent in (b"X_SeSsIoN-Id", b"x-SWITCHPOINT_models", b"X-Forwarded_For"):
        _refused(*_exchange(attacked, line + sent + b": beta\r\n", body),
                 sent.decode().lower())
    assert fake.requests() == []


def test_many_underscore_headers_the_service_does_not_read_pass_and_one_it_reads_is_found(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    many = b"".join(b"x_%d: 1\r\n" % i for i in range(600))  # (within max_header_bytes)
    head, body = _exchange(attacked, CHAT + many, _chat())
    assert head.startswith(b"HTTP/1.1 200 "), head + body
    head, body = _exchange(attacked, CHAT + many + b"x_switchpoint_cost_weight: 1\r\n",
                           _chat())
    _refused(head, body, "x_switchpoint_cost_weight")
    assert len(fake.requests()) == 1  # (the first alone was called)


@pytest.mark.parametrize("headers", [
    b"".join(b"x_%d: 1\r\n" % i for i in range(1000)),  # a thousand
    b"x_session_id: " + b"s" * 65_536 + b"\r\n",  # one of 64 KB
    b"x_trace_id: " + b"s" * 65_536 + b"\r\n"])
def test_a_header_section_past_its_bound_is_refused_before_the_app(
        attacked: Attacked, fake: FakeProviderProcess, headers: bytes) -> None:
    assert len(headers) > LIMITS["max_header_bytes"]
    head, _ = _exchange(attacked, CHAT + headers, _chat())
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert fake.requests() == []


def test_the_openai_clients_extra_headers_are_read_or_refused_by_their_spelling(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    client = openai.OpenAI(base_url=f"{attacked.base}/v1", api_key="unused", max_retries=0,
                           timeout=30)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hello"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="alpha", messages=messages,
                                       extra_headers={"x_switchpoint_models": "beta"})
    assert refused.value.param == "x_switchpoint_models"
    assert "write it x-switchpoint-models, with dashes" in refused.value.message
    assert fake.requests() == []
    answer = client.chat.completions.create(model="auto", messages=messages,
                                            extra_headers={"x-switchpoint-models": "beta",
                                                           "x_request_tag": "7"})
    assert answer.model == "beta"  # (the dashed header read; the other passed)
