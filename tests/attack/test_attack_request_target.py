"""What a request's target (the request line's ``/path?query``) hands the app, sent raw as a
client may write it: the scope uvicorn builds from it under ``switchpoint serve``'s guarded
protocol and under uvicorn's own h11 protocol (a program embedding the app), seen by an app
that answers with its scope; and how the service answers it.

A target in absolute form (``GET http://evil.example/v1/models``), which RFC 9112 has servers
accept, names a host, which HTTP has a server take in the ``Host`` header's place: under the
guarded protocol it reaches the app as the ``Host``, so the rule of the hosts the service
answers to checks it (see test_attack_hosts.py). uvicorn's own protocol leaves the URL whole in
the path, which no route matches: the app answers it a 404, serving nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from switchpoint.server.protocol import ConnectionLimits, guarded_protocol
from tests.attack.test_attack_hosts import _raw
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
