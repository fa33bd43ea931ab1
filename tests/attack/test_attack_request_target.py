"""What a request's target (the request line's ``/path?query``) hands the app, sent raw as a
client may write it: the scope uvicorn builds from it under ``switchpoint serve``'s guarded
protocol and under uvicorn's own h11 protocol (a program embedding the app), seen by an app
that answers with its scope; what the service's reading of the target makes of it; and how the
service answers it, under either protocol.

A target in absolute form (``GET http://evil.example/v1/models``), which RFC 9112 has servers
accept, names a host, which HTTP has a server take in the ``Host`` header's place. Either
protocol hands the URL on whole, as the path; the app reads it as its path and query, the host
it names as the ``Host``, so the rule of the hosts the service answers to checks it (see
test_attack_hosts.py) and the routes serve its path, whatever server runs the app.

A ``#`` begins a URL's fragment, which clients keep to themselves; one sent raw is handed on as
part of the path or of the query (``?x=1#frag``: x is ``1#frag``). The service refuses such a
target, a 400 naming it, before any route reads it; as it refuses one whose %-escapes are not
UTF-8 (``/v1/models/%FF``), which the web framework read as U+FFFD.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import HTTPProtocolType

from switchpoint.config import load_settings
from switchpoint.server import create_app
from switchpoint.server.errors import is_openai_path
from switchpoint.server.middleware import GuardMiddleware
from switchpoint.server.protocol import ConnectionLimits, guarded_protocol
from switchpoint.server.targets import guard
from tests.attack.attack_env import ADMIN_TOKEN, KEYS, Attacked, chat_body, config_text
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


def _echo_app(read: bool) -> FastAPI:
    app = FastAPI()
    app.add_middleware(_ScopeEcho)
    if read:  # the service's reading of the target, before the echo
        app.add_middleware(GuardMiddleware, rule=guard)
    return app


def _protocol(name: str) -> type[asyncio.Protocol] | HTTPProtocolType:
    """``switchpoint serve``'s guarded protocol, or uvicorn's own h11 (a program embedding the
    app under plain uvicorn)."""
    return guarded_protocol(ConnectionLimits()) if name == "guarded" else "h11"


@pytest.fixture(scope="module", params=["guarded", "plain"])
def echo(request: pytest.FixtureRequest) -> Iterator[ThreadServer]:
    """A scope-echoing app under each protocol: the scope as the protocol builds it."""
    with thread_server(_echo_app(False), ready=False, http=_protocol(request.param)) as server:
        yield server


@pytest.fixture(scope="module", params=["guarded", "plain"])
def read(request: pytest.FixtureRequest) -> Iterator[ThreadServer]:
    """A scope-echoing app under each protocol, behind the service's reading of the target."""
    with thread_server(_echo_app(True), ready=False, http=_protocol(request.param)) as server:
        yield server


@pytest.fixture(scope="module", params=["guarded", "plain"])
def service(request: pytest.FixtureRequest, fake: FakeProviderProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    """The service's app (the attack config, on loopback) under each protocol."""
    root = tmp_path_factory.mktemp("target")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, root / "data"), encoding="utf-8")
    app = create_app(load_settings(config, environ=KEYS), provider_env=KEYS)
    with thread_server(app, http=_protocol(request.param)) as server:
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


def _get(port: int, target: bytes, host: bytes = b"127.0.0.1") -> tuple[bytes, bytes]:
    return _raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: " + host
                + b"\r\nConnection: close\r\n\r\n")


# A target in absolute form -------------------------------------------------------------------


def test_either_protocol_hands_an_absolute_target_whole_to_the_app(echo: ThreadServer) -> None:
    scope = scope_of(echo, b"http://evil.example:8080/v1/models?x=1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "http://evil.example:8080/v1/models", "http://evil.example:8080/v1/models", "x=1")
    assert _hosts(scope) == ["127.0.0.1"]


def test_the_app_reads_an_absolute_target_s_host_as_its_host(read: ThreadServer) -> None:
    # Its path and query, as routes read them; its host in the Host header's place (the
    # header's is dropped).
    scope = scope_of(read, b"http://evil.example:8080/v1/mo%64els?x=1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/v1/models", "/v1/mo%64els", "x=1")
    assert _hosts(scope) == ["evil.example:8080"]
    # HTTP/1.0 needs no Host header: the target's is given.
    assert _hosts(scope_of(read, b"http://evil.example/", None, b"1.0")) == ["evil.example"]
    # A target in origin form is left as it is.
    scope = scope_of(read, b"/v1/models?x=1", b"localhost:1")
    assert (scope["path"], scope["query_string"], _hosts(scope)) == (
        "/v1/models", "x=1", ["localhost:1"])


@pytest.mark.parametrize(("target", "path", "host"), [
    (b"HTTPS://Evil.Example", "/", "Evil.Example"),
    (b"http://evil.example?x=1", "/", "evil.example"),
    (b"http://user@evil.example/health", "/health", "user@evil.example"),
    (b"http://[::1]:8080/health", "/health", "[::1]:8080"),
])
def test_the_host_is_what_comes_before_the_path_or_query(
        read: ThreadServer, target: bytes, path: str, host: str) -> None:
    scope = scope_of(read, target, b"localhost")
    assert scope["raw_path"] == path
    assert _hosts(scope) == [host]


def test_a_fragment_ends_the_host_and_its_hash_is_refused(read: ThreadServer) -> None:
    _refused_target(_get(read.port, b"http://evil.example#/health"), "/#/health")


@pytest.mark.parametrize(("target", "path"), [
    (b"http:///health", "/health"), (b"http://?x=1", "/?x=1"), (b"https://", "/")])
def test_an_absolute_target_without_a_host_is_refused(service: ThreadServer, target: bytes,
                                                      path: str) -> None:
    status, body = _get(service.port, target)
    assert status.startswith(b"HTTP/1.1 400 "), status
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "request-target"), error
    assert error["message"] == (
        f"request-target: the request target {json.dumps(target.decode())} names no host after "
        f"its http:// (a URL needs one); send the path alone, as {json.dumps(path)}, or the "
        "URL with its host")


def test_an_absolute_target_is_served_by_its_path_under_either_protocol(
        service: ThreadServer) -> None:
    # uvicorn's own protocol hands the URL on whole: the app answered it a 404, even for
    # http://127.0.0.1/v1/models, while switchpoint serve served it.
    for target in (b"http://127.0.0.1/v1/models", b"HTTP://localhost:1/v1/models?x=1"):
        status, body = _get(service.port, target, b"evil.example")
        assert status.startswith(b"HTTP/1.1 200 "), (target, status, body)
        assert json.loads(body)["object"] == "list"
    body_sent = b'{"prompt": "hello"}'
    status, body = _raw(service.port, b"POST http://127.0.0.1/v1/route HTTP/1.1\r\n"
                        b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body_sent)}\r\n".encode()
                        + b"Connection: close\r\n\r\n" + body_sent)
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)
    assert json.loads(body)["selected_model"]
    # The host it names is checked by the Host rule, in the envelope of the path it names.
    status, body = _get(service.port, b"http://evil.example:8080/v1/models")
    assert status.startswith(b"HTTP/1.1 403 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["param"], error["type"]) == ("host", "permission_error"), error
    assert 'names the host "evil.example:8080" in its Host header or request target' in (
        error["message"])
    # A hash it holds is refused as one in origin form is.
    _refused_target(_get(service.port, b"http://127.0.0.1/v1/models?#"), "/v1/models?#")
    # The metrics count it by the route it reached.
    metrics = httpx.get(f"{service.base}/metrics",
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).text
    assert 'switchpoint_http_requests_total{route="/v1/route",method="POST",status="200"} 1' in (
        metrics)


# Under a root path (uvicorn --root-path, for an app a proxy serves under a prefix) ------------

ROOT = "/api"


@pytest.fixture(scope="module", params=["guarded", "plain"])
def rooted(request: pytest.FixtureRequest, fake: FakeProviderProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    """The service's app under each protocol, served with the root path :data:`ROOT` (as a
    program serving create_app may serve it: switchpoint serve sets none)."""
    root = tmp_path_factory.mktemp("rooted")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, root / "data"), encoding="utf-8")
    app = create_app(load_settings(config, environ=KEYS), provider_env=KEYS)
    with thread_server(app, http=_protocol(request.param), root_path=ROOT) as server:
        yield server


@pytest.fixture(scope="module", params=["guarded", "plain"])
def rooted_read(request: pytest.FixtureRequest) -> Iterator[ThreadServer]:
    """A scope-echoing app behind the service's reading of the target, with :data:`ROOT`."""
    with thread_server(_echo_app(True), ready=False, http=_protocol(request.param),
                       root_path=ROOT) as server:
        yield server


def test_under_a_root_path_an_absolute_target_is_read_below_it(rooted_read: ThreadServer
                                                               ) -> None:
    # uvicorn puts the root path before the target, a URL too ("/apihttp://..."): the app
    # reads the URL's path below the root path, as it reads a path in origin form.
    scope = scope_of(rooted_read, b"http://evil.example:8080/v1/mo%64els?x=1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/api/v1/models", "/api/v1/mo%64els", "x=1")
    assert _hosts(scope) == ["evil.example:8080"]
    scope = scope_of(rooted_read, b"/v1/models?x=1")
    assert (scope["path"], scope["raw_path"], _hosts(scope)) == (
        "/api/v1/models", "/api/v1/models", ["127.0.0.1"])


def test_under_a_root_path_an_absolute_target_is_served_by_its_path(rooted: ThreadServer
                                                                    ) -> None:
    # It was a 404 (the path "/apihttp://127.0.0.1/v1/models" matched no route).
    for target in (b"http://127.0.0.1/v1/models", b"/v1/models"):
        status, body = _get(rooted.port, target)
        assert status.startswith(b"HTTP/1.1 200 "), (target, status, body)
        assert json.loads(body)["object"] == "list"
    status, body = _get(rooted.port, b"http://evil.example/v1/models")
    assert status.startswith(b"HTTP/1.1 403 "), (status, body)
    assert json.loads(body)["error"]["param"] == "host"
    # A refused target is shown as the client sent it, without the root path.
    status, body = _get(rooted.port, b"http:///v1/models")
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    assert json.loads(body)["error"]["message"].startswith(
        'request-target: the request target "http:///v1/models" names no host'), body
    _refused_target(_get(rooted.port, b"http://127.0.0.1/v1/models?#"), "/v1/models?#")
    _refused_target(_get(rooted.port, b"/v1/models?#"), "/v1/models?#")


def test_a_root_path_a_server_did_not_put_before_the_target_is_left_out() -> None:
    # (as one given to the app alone is: FastAPI(root_path=...) sets it, the path stays bare)
    def scope(raw: bytes, query: bytes = b"") -> dict[str, Any]:
        return {"type": "http", "http_version": "1.1", "path": raw.decode(), "raw_path": raw,
                "query_string": query, "root_path": ROOT, "headers": [(b"host", b"localhost")]}

    read, answer = guard(scope(b"http://127.0.0.1/v1/models"))
    assert answer is None and (read["path"], read["raw_path"]) == ("/v1/models", b"/v1/models")
    _, answer = guard(scope(b"/apiary", b"x#"))  # its start is the root path's, by chance
    assert answer is not None and '"/apiary?x#"' in answer.message, answer


# A "#" in the target -------------------------------------------------------------------------


def test_a_raw_hash_reaches_the_app_in_the_query_or_the_path(echo: ThreadServer) -> None:
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


@pytest.mark.parametrize(("target", "shown"), [
    (b"/v1/models?x=1#frag", "/v1/models?x=1#frag"),
    (b"/v1/models#", "/v1/models#"),
    (b"/v1/models/alpha#x?y=1", "/v1/models/alpha#x?y=1"),
    (b"http://127.0.0.1/v1/models?#", "/v1/models?#")])
def test_a_target_holding_a_hash_is_refused_naming_it(attacked: Attacked, target: bytes,
                                                      shown: str) -> None:
    # OpenAI's envelope on its paths.
    assert _refused_target(_get(attacked.port, target), shown)["type"] == "invalid_request_error"


def test_a_hash_is_refused_on_every_route_before_it_reads_the_request(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    logged = [entry["id"] for entry in attacked.requests()]
    error = _refused_target(_get(attacked.port, b"/health?#x"), "/health?#x")
    assert "type" not in error  # switchpoint's own envelope on its own routes
    # Not even the admin token is asked for first.
    _refused_target(_get(attacked.port, b"/v1/router/status#"), "/v1/router/status#")
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
    status, body = _get(attacked.port, b"/v1/models?x=%23")
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)
    assert json.loads(body)["object"] == "list"
    status, body = _get(attacked.port, b"/v1/models/no%23such")
    assert status.startswith(b"HTTP/1.1 404 "), (status, body)  # the model, not the target
    assert json.loads(body)["error"]["param"] != "request-target"


@pytest.mark.parametrize(("target", "path"), [
    (b"health", "/health"), (b"v1/models?x=1", "/v1/models?x=1"), (b"?x=1", "/?x=1")])
def test_a_target_that_is_neither_a_path_nor_a_url_is_refused_naming_it(
        attacked: Attacked, target: bytes, path: str) -> None:
    # The 404 it got quoted its path with a "/" before it: "GET /health: Not Found".
    logged = [entry["id"] for entry in attacked.requests()]
    status, body = _get(attacked.port, target)
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "request-target"), error
    assert error["message"] == (
        f"request-target: the request target {json.dumps(target.decode())} is neither a path, "
        f'which begins with "/", nor a URL (http://host/path); send the path, as '
        f"{json.dumps(path)}"), error
    assert [entry["id"] for entry in attacked.requests()] == logged
    # The path itself is not refused for its form.
    assert _get(attacked.port, b"/health")[0].startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(("method", "what"), [
    (b"OPTIONS", "asks what the service as a whole takes (OPTIONS *), which it does not answer"),
    (b"GET", "names no path: it is OPTIONS's alone, for the service as a whole, which the "
             "service does not answer")])
def test_the_target_star_is_refused_naming_it_and_where_the_routes_are_listed(
        attacked: Attacked, method: bytes, what: str) -> None:
    # OPTIONS * was answered 404 "OPTIONS /*: Not Found", a path the client never sent.
    status, body = _raw(attacked.port, method + b" * HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Connection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "request-target"), error
    assert error["message"] == (
        f'request-target: the request target "*" {what}. GET /openapi.json lists the routes '
        "and the methods each takes; send the request to a route's path"), error


_UTF8_ADVICE = ("is not UTF-8 text once its %-escapes are read. Write text that is not ASCII as "
                "its UTF-8 bytes, each %-escaped (é as %C3%A9), as browsers and HTTP clients do")


@pytest.mark.parametrize(("target", "param", "named"), [
    (b"/v1/models/%FF", "request-target", 'the path "/v1/models/%FF"'),
    (b"http://127.0.0.1/v1/models/%C3", "request-target", 'the path "/v1/models/%C3"'),
    (b"/v1/router/stats?tenant=%ED%A0%80", "tenant", 'the value "%ED%A0%80"'),
    (b"/v1/models?x=1&%FF=1", "request-target", 'the query parameter name "%FF"'),
    (b"/health?a+b=%E9t%E9", "a b", 'the value "%E9t%E9"'),
    # a name cut and shown printable, as an unknown parameter's is: it was the name whole,
    # its control characters and all
    (b"/health?" + b"n" * 300 + b"=%FF", "n" * 97 + "...", 'the value "%FF"'),
    (b"/health?a%0A%1Bb=%FF", "a\\u000a\\u001bb", 'the value "%FF"')])
def test_a_target_whose_escapes_are_not_utf8_is_refused_naming_it(
        attacked: Attacked, target: bytes, param: str, named: str) -> None:
    # The web framework read each byte that is not UTF-8 as U+FFFD, which the answer quoted
    # ('model: "\ufffd" is not a model of this gateway'), a character the client never sent.
    logged = [entry["id"] for entry in attacked.requests()]
    status, body = _get(attacked.port, target)  # (an admin route: refused before its token)
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", param), error
    assert error["message"] == f"{param}: {named} {_UTF8_ADVICE}", error
    assert "\ufffd" not in error["message"]
    assert [entry["id"] for entry in attacked.requests()] == logged


def test_a_target_whose_escapes_are_utf8_is_read_as_utf8(attacked: Attacked) -> None:
    status, body = _get(attacked.port, b"/v1/models/%C3%A9t%C3%A9?x=%C3%A9")
    assert status.startswith(b"HTTP/1.1 404 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["param"], error["message"].split(" is ")[0]) == ("model", 'model: "été"'), error


@pytest.mark.parametrize("target", [b"/v1%2Frouter%2Fkeys", b"/v1/router%2fstatus",
                                    b"/v1/router/keys/0123456789%2Frevoke",
                                    b"/v1/router/models%2Fx", b"/health%2F"])
def test_a_slash_written_percent_2f_outside_a_model_s_name_is_refused(
        attacked: Attacked, target: bytes) -> None:
    # The framework read %2F as "/": /v1%2Frouter%2Fkeys was served as /v1/router/keys (the
    # admin token given), where a proxy in front reading the escape as part of one segment
    # would not apply its rules of /v1/router/ to it.
    logged = [entry["id"] for entry in attacked.requests()]
    status, body = _raw(attacked.port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer " + ADMIN_TOKEN.encode()
                        + b"\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "request-target"), error
    assert error["message"] == (
        f"request-target: the path {json.dumps(target.decode())} holds a \"/\" written %2F, "
        "which only a name that may hold one takes (after /v1/models/, /v1/router/models/); "
        "write the path's own slashes as /"), error
    assert [entry["id"] for entry in attacked.requests()] == logged
    # A model's name may hold one, as the openai client writes it ("team/x": team%2Fx).
    status, body = _get(attacked.port, b"/v1/models/team%2Fx")
    assert status.startswith(b"HTTP/1.1 404 "), (status, body)
    assert '"team/x" is not a model' in json.loads(body)["error"]["message"]


_PASTED = "sk-proj-0123456789abcdefghijKLMN"  # (an upstream key, shaped as OpenAI's)


@pytest.mark.parametrize(("target", "param"), [
    (f"/v1/models#{_PASTED}".encode(), "request-target"),
    (f"/health?api_key=x{_PASTED}#".encode(), "request-target"),
    (f"http:///v1/models?key={_PASTED}".encode(), "request-target"),
    (f"health?token={_PASTED}".encode(), "request-target"),
    (f"/v1/models/%FF{_PASTED}".encode(), "request-target"),
    (f"/health?{_PASTED}=%FF".encode(), "sk-[REDACTED]")])
def test_a_refused_target_does_not_repeat_a_key_it_holds(attacked: Attacked, target: bytes,
                                                         param: str) -> None:
    # The 404 and the access log redacted such a key; these refusals quoted it whole.
    status, body = _get(attacked.port, target)
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error = json.loads(body)["error"]
    assert error["param"] == param, error
    assert "0123456789abcdef" not in body.decode() and "[REDACTED]" in error["message"], error


def test_the_api_document_lists_the_refusal_on_every_operation(attacked: Attacked) -> None:
    document = httpx.get(f"{attacked.base}/openapi.json", timeout=30).json()
    operations = [(path, method, op) for path, item in document["paths"].items()
                  for method, op in item.items()]
    assert len(operations) > 30
    for path, method, op in operations:
        refused = op["responses"]["400"]
        assert "invalid_request (param request-target)" in refused["description"], (method, path)
        assert "%23" in refused["description"], (method, path)
        assert "neither a path (which begins with /) nor a URL" in refused["description"], (
            method, path)
        assert "or a query parameter's name is not UTF-8" in refused["description"], (
            method, path)
        shape = refused["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert shape == ("ChatErrorResponse" if is_openai_path(path) else "ErrorResponse"), (
            method, path)
    # An operation that takes no input lists it too, beside the query parameter it refuses.
    described = document["paths"]["/health"]["get"]["responses"]["400"]["description"]
    assert described.startswith("invalid_request (param the query parameter's name): the query "
                                "string names a parameter, and the route takes none; send the "
                                "request without a query string. Or invalid_request (param "
                                "request-target): the request target holds a raw \"#\""), (
        described)
