"""What a request's target (the request line's ``/path?query``) hands the app, sent raw as a
client may write it: the scope uvicorn builds from it under ``switchpoint serve``'s guarded
protocol and under uvicorn's own h11 protocol (a program embedding the app), seen by an app
that answers with its scope; and how the service answers it.

A target in absolute form (``GET http://evil.example/v1/models``), which RFC 9112 has servers
accept, names a host, which HTTP has a server take in the ``Host`` header's place: under the
guarded protocol it reaches the app as the ``Host``, so the rule of the hosts the service
answers to checks it (see test_attack_hosts.py). uvicorn's own protocol leaves the URL whole in
the path, which no route matches: the app answers it a 404, serving nothing.

A ``#`` begins a URL's fragment, which clients keep to themselves; one sent raw is handed on as
part of the path or of the query (``?x=1#frag``: x is ``1#frag``). The service refuses such a
target, a 400 naming it, before any route reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from switchpoint.server.errors import is_openai_path
from switchpoint.server.protocol import ConnectionLimits, guarded_protocol
from tests.attack.attack_env import Attacked, chat_body
from tests.attack.test_attack_hosts import _raw
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import ThreadServer, thread_server


class _ScopeEcho:
    """Answers every request with what its scope holds of the request line and headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = json.dumps({
            "path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[name.decode("latin-1"), value.decode("latin-1")]
                        for name, value in scope["headers"]]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _echo_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(_ScopeEcho)
    return app


@pytest.fixture(scope="module")
def guarded() -> Iterator[ThreadServer]:
    """A scope-echoing app under the guarded protocol, as ``switchpoint serve`` runs it."""
    with thread_server(_echo_app(), ready=False,
                       http=guarded_protocol(ConnectionLimits())) as server:
        yield server


@pytest.fixture(scope="module")
def plain() -> Iterator[ThreadServer]:
    """A scope-echoing app under uvicorn's own h11 protocol."""
    with thread_server(_echo_app(), ready=False, http="h11") as server:
        yield server


def _hosts(scope: dict[str, Any]) -> list[str]:
    return [value for name, value in scope["headers"] if name == "host"]


def scope_of(server: ThreadServer, target: bytes, host: bytes | None = b"127.0.0.1",
             version: bytes = b"1.1") -> dict[str, Any]:
    """The scope the app is given for ``GET target`` (with ``Host: host``, unless None)."""
    head = b"GET " + target + b" HTTP/" + version + b"\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    status, body = _raw(server.port, head + b"Connection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)
    scope: dict[str, Any] = json.loads(body)
    return scope


def test_an_absolute_target_s_host_reaches_the_app_as_its_host(guarded: ThreadServer) -> None:
    # Routed by its path, its host in the Host header's place (the header's is dropped).
    scope = scope_of(guarded, b"http://evil.example:8080/v1/models?x=1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/v1/models", "/v1/models", "x=1")
    assert _hosts(scope) == ["evil.example:8080"]
    # HTTP/1.0 needs no Host header: the target's is given.
    assert _hosts(scope_of(guarded, b"http://evil.example/", None, b"1.0")) == ["evil.example"]


def test_uvicorn_s_own_protocol_keeps_an_absolute_target_whole_in_the_path(
        plain: ThreadServer) -> None:
    # No route matches such a path (the service answers it a 404: test_attack_hosts.py).
    scope = scope_of(plain, b"http://evil.example:8080/v1/models?x=1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "http://evil.example:8080/v1/models", "http://evil.example:8080/v1/models", "x=1")
    assert _hosts(scope) == ["127.0.0.1"]


@pytest.mark.parametrize(("target", "path", "host"), [
    (b"HTTPS://Evil.Example", "/", "Evil.Example"),
    (b"http://evil.example?x=1", "/", "evil.example"),
    (b"http://user@evil.example/health", "/health", "user@evil.example"),
    (b"http://[::1]:8080/health", "/health", "[::1]:8080"),
    # A fragment ends the host too (and the target's "#" is the app's to refuse).
    (b"http://evil.example#/health", "/#/health", "evil.example"),
])
def test_the_host_is_what_comes_before_the_path_query_or_fragment(
        guarded: ThreadServer, target: bytes, path: str, host: str) -> None:
    scope = scope_of(guarded, target, b"localhost")
    assert scope["raw_path"] == path
    assert _hosts(scope) == [host]


@pytest.mark.parametrize("target", [b"http:///health", b"http://?x=1", b"https://"])
def test_an_absolute_target_without_a_host_is_refused(guarded: ThreadServer,
                                                      target: bytes) -> None:
    status, body = _raw(guarded.port, b"GET " + target
                        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), status
    assert json.loads(body)["error"]["message"] == (
        "not a valid HTTP/1.1 request: the request target names no host after its http:// "
        "(a URL needs one); send the path alone, as /v1/models, or the URL with its host")


# A "#" in the target -------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["guarded", "plain"])
def test_a_raw_hash_reaches_the_app_in_the_query_or_the_path(request: pytest.FixtureRequest,
                                                             server: str) -> None:
    echo: ThreadServer = request.getfixturevalue(server)
    scope = scope_of(echo, b"/v1/models?x=1#frag")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/v1/models", "/v1/models", "x=1#frag")
    scope = scope_of(echo, b"/v1/models#frag")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/v1/models#frag", "/v1/models#frag", "")
    # Written %23, it stays so in raw_path and the query string (the path is decoded).
    scope = scope_of(echo, b"/v1/mo%23dels?a=%23")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/v1/mo#dels", "/v1/mo%23dels", "a=%23")


def _refused_target(answer: tuple[bytes, bytes], target: str) -> dict[str, Any]:
    status, body = answer
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "request-target"), error
    assert error["message"] == (
        f"request-target: the request target {json.dumps(target)} holds a \"#\", which begins "
        "a URL's fragment: a client keeps the fragment to itself, so a \"#\" sent is part of "
        "no path or query value. Send the target without the fragment, and write a \"#\" a "
        "value holds as %23"), error
    return error


def _get(attacked: Attacked, target: bytes) -> tuple[bytes, bytes]:
    return _raw(attacked.port, b"GET " + target
                + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize(("target", "shown"), [
    (b"/v1/models?x=1#frag", "/v1/models?x=1#frag"),
    (b"/v1/models#", "/v1/models#"),
    (b"/v1/models/alpha#x?y=1", "/v1/models/alpha#x?y=1"),
    (b"http://127.0.0.1/v1/models?#", "/v1/models?#")])
def test_a_target_holding_a_hash_is_refused_naming_it(attacked: Attacked, target: bytes,
                                                      shown: str) -> None:
    # OpenAI's envelope on its paths.
    assert _refused_target(_get(attacked, target), shown)["type"] == "invalid_request_error"


def test_a_hash_is_refused_on_every_route_before_it_reads_the_request(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    logged = [entry["id"] for entry in attacked.requests()]
    error = _refused_target(_get(attacked, b"/health?#x"), "/health?#x")
    assert "type" not in error  # switchpoint's own envelope on its own routes
    # Not even the admin token is asked for first.
    _refused_target(_get(attacked, b"/v1/router/status#"), "/v1/router/status#")
    body = json.dumps(chat_body("spend for me")).encode()
    answer = _raw(attacked.port, b"POST /v1/chat/completions#x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nConnection: close\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    _refused_target(answer, "/v1/chat/completions#x")
    answer = _raw(attacked.port, b"POST /v1/route?tenant=a#b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: 17\r\n\r\n{\"prompt\": \"hi\"}")
    _refused_target(answer, "/v1/route?tenant=a#b")
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged


def test_a_hash_written_as_percent_23_is_served(attacked: Attacked) -> None:
    status, body = _get(attacked, b"/v1/models?x=%23")
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)
    assert json.loads(body)["object"] == "list"
    status, body = _get(attacked, b"/v1/models/no%23such")
    assert status.startswith(b"HTTP/1.1 404 "), (status, body)  # the model, not the target
    assert json.loads(body)["error"]["param"] != "request-target"


def test_the_api_document_lists_the_refusal_on_every_operation(attacked: Attacked) -> None:
    document = httpx.get(f"{attacked.base}/openapi.json", timeout=30).json()
    operations = [(path, method, op) for path, item in document["paths"].items()
                  for method, op in item.items()]
    assert len(operations) > 30
    for path, method, op in operations:
        refused = op["responses"]["400"]
        assert "invalid_request (param request-target)" in refused["description"], (method, path)
        assert "%23" in refused["description"], (method, path)
        shape = refused["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert shape == ("ChatErrorResponse" if is_openai_path(path) else "ErrorResponse"), (
            method, path)
    # An operation that takes no input lists it too, the one 400 it answers.
    assert document["paths"]["/health"]["get"]["responses"]["400"]["description"].startswith(
        "invalid_request (param request-target): the request target holds a raw \"#\"")
