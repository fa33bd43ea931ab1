"""A web page the operator has open, sending requests to the service on loopback: a browser
sends a form's POST, or a ``fetch`` whose body is ``text/plain`` or has no type, to any address
without asking first (no CORS preflight), and the service reads such a body as JSON. Without
client keys (the attacked service has none, as a default config) the page called the paid
models and taught the router; now a request carrying an ``Origin`` the config does not allow
is a 403 naming it, and nothing is called, logged or learned. A program (no Origin header)
is served as before.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.attack.attack_env import Attacked, chat_body
from tests.fakes.fake_provider import FakeProviderProcess

PAGE = "https://evil.example"
# What a page's fetch() or form sends without a preflight: a CORS-safelisted type, or none.
PAGE_TYPES = ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None)


def _from_page(attacked: Attacked, path: str, body: object, content_type: str | None,
               origin: str = PAGE) -> httpx.Response:
    headers = {"origin": origin}
    if content_type is not None:
        headers["content-type"] = content_type
    return httpx.post(attacked.base + path, content=json.dumps(body).encode(),
                      headers=headers, timeout=30)


def _refused(r: httpx.Response, origin: str = PAGE) -> str:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("permission_denied", "origin"), error
    assert json.dumps(origin) in error["message"] and "cors.allow_origins" in error["message"]
    message: str = error["message"]
    return message


def _gateway_requests(attacked: Attacked) -> int:
    text = httpx.get(f"{attacked.base}/metrics", headers=attacked.admin, timeout=10).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("switchpoint_chat_requests_total{"))


@pytest.mark.parametrize("content_type", PAGE_TYPES)
def test_a_page_cannot_call_the_models(attacked: Attacked, fake: FakeProviderProcess,
                                       content_type: str | None) -> None:
    logged = [entry["id"] for entry in attacked.requests()]
    counted = _gateway_requests(attacked)
    r = _from_page(attacked, "/v1/chat/completions", chat_body("spend for me"), content_type)
    message = _refused(r)
    assert r.json()["error"]["type"] == "permission_error"  # OpenAI's envelope on its path
    assert "lists none: CORS is off" in message and "add its origin" in message
    assert fake.requests() == []  # no upstream called
    assert [entry["id"] for entry in attacked.requests()] == logged  # nothing logged
    assert _gateway_requests(attacked) == counted
    # A program, which sends no Origin, is served the same body.
    served = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=30,
                        content=json.dumps(chat_body("spend for me")).encode(),
                        headers={"content-type": content_type or "application/json"})
    assert served.status_code == 200, served.text
    assert len(fake.requests()) == 1
    assert _gateway_requests(attacked) == counted + 1  # (the count is read after the answer)


def test_a_page_cannot_teach_the_router(attacked: Attacked) -> None:
    decision = httpx.post(f"{attacked.base}/v1/route", json={"prompt": "hello"}, timeout=30)
    assert decision.status_code == 200, decision.text
    decision_id = decision.json()["decision_id"]
    before = httpx.get(f"{attacked.base}/v1/router/status", headers=attacked.admin,
                       timeout=30).json()
    for content_type in PAGE_TYPES:
        _refused(_from_page(attacked, "/v1/feedback",
                            {"decision_id": decision_id, "score": 0.0}, content_type))
        _refused(_from_page(attacked, "/v1/route", {"prompt": "hello"}, content_type))
    after = httpx.get(f"{attacked.base}/v1/router/status", headers=attacked.admin,
                      timeout=30).json()
    assert after == before
    # The decision is still open to the feedback a program sends.
    taken = httpx.post(f"{attacked.base}/v1/feedback", timeout=30,
                       json={"decision_id": decision_id, "score": 1.0})
    assert taken.status_code == 200 and taken.json()["replaced"] is False, taken.text


@pytest.mark.parametrize("origin", ["null", "http://127.0.0.1:1", "http://localhost"])
def test_any_page_is_refused_while_cors_is_off(attacked: Attacked, origin: str) -> None:
    # A sandboxed page or a file says "null"; another port of this machine is another origin.
    r = httpx.get(f"{attacked.base}/health", headers={"origin": origin}, timeout=10)
    _refused(r, origin)
    assert "uptime_seconds" not in r.text


def test_two_origin_headers_are_refused(attacked: Attacked) -> None:
    with socket.create_connection(("127.0.0.1", attacked.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://a.example\r\n"
                     b"Origin: http://b.example\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 "), data
    assert b"the header is given 2 times" in body


@pytest.mark.parametrize(("origin", "shown"), [
    ("https://user:sekrit-password-42@evil.example", "https://user:[REDACTED]@evil.example"),
    ("https://tok-0123456789abcdef@evil.example", "https://[REDACTED]@evil.example")])
def test_an_origin_carrying_a_password_is_refused_without_repeating_it(
        attacked: Attacked, origin: str, shown: str) -> None:
    # The refusal quoted it whole, in the answer and so in the client's or a proxy's log of it.
    r = httpx.get(f"{attacked.base}/health", headers={"origin": origin}, timeout=30)
    assert r.status_code == 403, r.text
    assert origin.split("@")[0][-12:] not in r.text
    assert f"a web page of {json.dumps(shown)}" in r.json()["error"]["message"]


def test_the_api_document_lists_the_refusal_on_every_operation(attacked: Attacked) -> None:
    document = httpx.get(f"{attacked.base}/openapi.json", timeout=30).json()
    operations = [(path, method, op) for path, item in document["paths"].items()
                  for method, op in item.items()]
    assert len(operations) > 30
    for path, method, op in operations:
        refused = op["responses"]["403"]
        assert "Origin header" in refused["description"], (method, path)
        shape = refused["content"]["application/json"]["schema"]["$ref"]
        assert shape.endswith("ChatErrorResponse" if path.startswith(
            ("/v1/chat", "/v1/models", "/v1/feedback")) else "/ErrorResponse"), (path, shape)
