"""Which ``Host`` an app answers, by where it is served (``create_app(listen_host=...)``, as
``switchpoint serve --host`` builds it) and ``server.allowed_hosts``. Each app is served on
loopback here, whatever address it was built for: what is tested is the app's rule.

On loopback (the default) only ``localhost`` (and the names under it), IP addresses and the
names listed are served; beyond it (a service that then needs credentials, or was told to
serve without) any Host is served, as before the guard, until ``server.allowed_hosts`` lists
names; ``*`` serves any. Wherever it is served, a request that names no one host (an empty
``Host`` over HTTP/1.1, ``Host`` given twice, or listing several) is a 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import HTTPProtocolType

from switchpoint.config import load_settings
from switchpoint.server import create_app
from switchpoint.server.hosts import NO_HOST
from switchpoint.server.protocol import ConnectionLimits, guarded_protocol
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text
from tests.integration.servers import ThreadServer, thread_server

REBOUND = "evil.example:8080"


# The header a test request sends for :class:`_HostlessServer` to hand it on without a Host.
HOSTLESS = b"x-test-hostless"


class _HostlessServer:
    """The app as a server whose parser requires no ``Host`` of an HTTP/1.1 request would run
    it: a request sending :data:`HOSTLESS` is handed on without its ``Host`` headers (uvicorn's
    h11, which serves the app here, refuses such a request itself, so it must be sent one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == HOSTLESS for name, _ in scope["headers"]):
            scope = {**scope, "headers": [(name, value) for name, value in scope["headers"]
                                          if name not in (b"host", HOSTLESS)]}
        await self.app(scope, receive, send)


@contextmanager
def served(fake: FakeProviderProcess, root: Path, allowed: str | None = None,
           listen_host: str | None = None,
           http: type[asyncio.Protocol] | HTTPProtocolType = "auto",
           hostless: bool = False) -> Iterator[ThreadServer]:
    """A server of the gateway's config, ``allowed`` as its ``server.allowed_hosts`` (YAML),
    its app built for ``listen_host`` (None: create_app's default), under uvicorn's protocol
    ``http`` (``switchpoint serve``'s guarded one, or uvicorn's own); ``hostless``: run as a
    server that passes a request on without a Host would (:class:`_HostlessServer`)."""
    config = root / "switchpoint.yaml"
    extra = "" if allowed is None else f"server:\n  allowed_hosts: {allowed}\n"
    config.write_text(config_text(fake) + extra, encoding="utf-8")
    settings = load_settings(config, environ={})
    app = (create_app(settings, loader=FACTORY, provider_env=KEYS) if listen_host is None
           else create_app(settings, loader=FACTORY, provider_env=KEYS, listen_host=listen_host))
    if hostless:
        app.add_middleware(_HostlessServer)  # (outermost: before any part of the app)
    with thread_server(app, http=http) as server:
        yield server


def _status(server: ThreadServer, host: str) -> int:
    return httpx.get(f"{server.base}/v1/router/status", headers={"host": host},
                     timeout=30).status_code


def _documents_the_refusal(server: ThreadServer) -> bool:
    document = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
    return "Host header" in document["paths"]["/v1/route"]["post"]["responses"]["403"][
        "description"]


def test_an_app_built_without_an_address_guards_as_on_loopback(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    with served(gw_fake, tmp_path) as server:
        assert _status(server, REBOUND) == 403
        assert _status(server, f"localhost:{server.port}") == 200
        assert _documents_the_refusal(server)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.10", "router.internal"])
def test_beyond_loopback_any_host_is_served_until_names_are_listed(
        gw_fake: FakeProviderProcess, tmp_path: Path, address: str) -> None:
    with served(gw_fake, tmp_path, listen_host=address) as server:
        assert _status(server, REBOUND) == 200
        assert not _documents_the_refusal(server)


def test_beyond_loopback_the_listed_names_are_enforced(gw_fake: FakeProviderProcess,
                                                       tmp_path: Path) -> None:
    # A proxy in front that passes the client's Host on: its name is listed.
    with served(gw_fake, tmp_path, "[router.example.com]", listen_host="0.0.0.0") as server:
        refused = httpx.get(f"{server.base}/v1/router/status", headers={"host": REBOUND},
                            timeout=30)
        assert refused.status_code == 403, refused.text
        assert '(it lists "router.example.com")' in refused.json()["error"]["message"]
        assert _status(server, "router.example.com") == 200
        assert _status(server, "router.example.com:443") == 200
        assert _status(server, "localhost:8080") == 200  # a check on the machine itself
        assert _status(server, "app.localhost:8080") == 200
        assert _status(server, "10.1.2.3:8080") == 200  # a probe by the pod's address
        assert _documents_the_refusal(server)
        # The openai client names the address it connects to.
        reply = client(server).chat.completions.create(
            model="good", messages=[{"role": "user", "content": "hello"}])
        assert reply.choices[0].message.content


def test_under_uvicorn_s_own_protocol_an_absolute_target_is_read_as_the_app_reads_it(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # uvicorn's protocol hands the URL on whole, as the path (which no route matched: a 404
    # even for http://127.0.0.1/v1/models); the app serves its path, checking the host it names.
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake), encoding="utf-8")
    app = create_app(load_settings(config, environ={}), loader=FACTORY, provider_env=KEYS)
    with thread_server(app, http="h11") as server:
        for target, status in ((b"http://evil.example/v1/models", b"403"),
                               (b"http://127.0.0.1/v1/models", b"200")):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(b"GET " + target
                             + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65_536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer
            assert (b'"object":"list"' in answer) is (status == b"200"), answer


@pytest.mark.parametrize(("allowed", "listen_host"), [
    (None, None), (None, "0.0.0.0"), ("['*']", None), ("[api.internal]", "0.0.0.0")])
def test_an_empty_host_on_http_1_1_is_refused_wherever_the_app_is_served(
        gw_fake: FakeProviderProcess, tmp_path: Path, allowed: str | None,
        listen_host: str | None) -> None:
    # HTTP/1.1 requires a Host, and an empty one names none, whether or not the names are
    # checked (beyond loopback with none listed, or with *, they are not): it was served.
    with served(gw_fake, tmp_path, allowed, listen_host) as server:
        for version, status in ((b"1.1", b"400"), (b"1.0", b"200")):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(b"GET /v1/models HTTP/" + version
                             + b"\r\nHost:\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65_536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            if status == b"400":
                assert (body["error"]["param"], body["error"]["type"]) == (
                    "host", "invalid_request_error"), body
            else:
                assert body["object"] == "list", body


def _answer(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    return answer


@pytest.mark.parametrize(("allowed", "listen_host"), [
    (None, None), (None, "0.0.0.0"), ("['*']", None), ("[api.internal]", "0.0.0.0")])
def test_no_host_on_http_1_1_is_refused_whatever_server_hands_it_on(
        gw_fake: FakeProviderProcess, tmp_path: Path, allowed: str | None,
        listen_host: str | None) -> None:
    # HTTP/1.1 requires a Host: only switchpoint serve's h11 refused a request giving none, and
    # a server handing it on had it served, wherever the app listened and whatever it checked.
    with served(gw_fake, tmp_path, allowed, listen_host, hostless=True) as server:
        for target, version, status in ((b"/v1/models", b"1.1", b"400"),
                                        (b"/v1/models", b"1.0", b"200"),
                                        (b"http://127.0.0.1/v1/models", b"1.1", b"200")):
            answer = _answer(server.port, b"GET " + target + b" HTTP/" + version
                             + b"\r\nHost: 127.0.0.1\r\n" + HOSTLESS
                             + b": 1\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), (target, version, answer)
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            if status == b"200":  # HTTP/1.0 needs none; an absolute target names the host
                assert body["object"] == "list", body
                continue
            error = body["error"]  # in OpenAI's envelope, on its path
            assert (error["code"], error["param"], error["type"]) == (
                "invalid_request", "host", "invalid_request_error"), error
            assert error["message"] == NO_HOST, error
        # The service's own envelope on its own routes, before the body is read.
        answer = _answer(server.port, b"POST /v1/route HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         + HOSTLESS + b": 1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"error": {
            "code": "invalid_request", "message": NO_HOST, "param": "host"}}
        # /openapi.json lists the refusal on every operation.
        document = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
        for path, item in document["paths"].items():
            for method, operation in item.items():
                assert ("invalid_request (param host): the HTTP/1.1 request gives no Host "
                        "header, or an empty one" in operation["responses"]["400"][
                            "description"]), (method, path)
        assert _status(server, "127.0.0.1") == 200


@pytest.mark.parametrize("protocol", ["guarded", "plain"])
@pytest.mark.parametrize(("allowed", "listen_host"), [
    (None, None), (None, "0.0.0.0"), ("['*']", None), ("[api.internal]", "0.0.0.0")])
def test_a_host_given_twice_or_listing_several_is_refused_wherever_the_app_is_served(
        gw_fake: FakeProviderProcess, tmp_path: Path, allowed: str | None,
        listen_host: str | None, protocol: str) -> None:
    # A request names one host. One listing several was served where the names are not
    # checked (beyond loopback with none listed, or with *), and a 403 where they are.
    http: type[asyncio.Protocol] | HTTPProtocolType = (
        guarded_protocol(ConnectionLimits()) if protocol == "guarded" else "h11")
    with served(gw_fake, tmp_path, allowed, listen_host, http=http) as server:
        for version in (b"1.1", b"1.0"):
            answer = _answer(server.port, b"GET /v1/models HTTP/" + version
                             + b"\r\nHost: 127.0.0.1, evil.example\r\nConnection: close"
                             b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
            assert (error["param"], error["type"]) == ("host", "invalid_request_error"), error
            assert error["message"].startswith('host: the request\'s Host header "127.0.0.1, '
                                               'evil.example" lists more than one host'), error
            # Given twice, h11 refuses it before the app: switchpoint serve's protocol in the
            # app's words, plain uvicorn in its own.
            answer = _answer(server.port, b"GET /v1/models HTTP/" + version
                             + b"\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
                             b"Connection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            body = answer.partition(b"\r\n\r\n")[2]
            if protocol == "guarded":
                error = json.loads(body)["error"]
                assert (error["code"], error["param"]) == ("invalid_request", "host"), error
                assert error["message"].startswith("host: the request gives the Host header "
                                                   "more than once"), error
            else:
                assert body == b"Invalid HTTP request received.", body
        assert _status(server, "127.0.0.1") == 200


@pytest.mark.parametrize("listen_host", [None, "0.0.0.0"])
def test_a_star_serves_any_host(gw_fake: FakeProviderProcess, tmp_path: Path,
                                listen_host: str | None) -> None:
    with served(gw_fake, tmp_path, "['*']", listen_host) as server:
        assert _status(server, REBOUND) == 200
        assert not _documents_the_refusal(server)
