"""A web page that points its own name at the service (DNS rebinding): a page at
``http://evil.example:8080`` has the name resolve to 127.0.0.1 once it has loaded, and its
same-origin requests, which carry no ``Origin``, reach the service on loopback. They still name
the page's host in ``Host``: a service on loopback answers such a request a 403 naming it, and
nothing is read, called, logged or learned. A target in absolute form (``GET http://host/path``)
is checked by the host it names, which HTTP has a server take in the header's place.
``localhost`` and IP addresses, on any port, are served (the openai client sends
``Host: 127.0.0.1:PORT``), and so are the names under ``localhost`` (``app.localhost``, which
browsers resolve to loopback themselves) and the names ``server.allowed_hosts`` lists (a proxy
in front that passes the Host on). An HTTP/1.1 request whose ``Host`` is empty names no host,
and one that gives ``Host`` more than once, or lists several hosts in it, names no one host: a
400 naming it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.attack.attack_env import Attacked, chat_body, serving
from tests.attack.test_attack_origins import _gateway_requests
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import refused_start

REBOUND = "evil.example:8080"


def _refused(r: httpx.Response, host: str = REBOUND) -> str:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("permission_denied", "host"), error
    message: str = error["message"]
    assert f"names the host {json.dumps(host)} in its Host header" in message, message
    assert "DNS rebinding" in message and "Reach the service as localhost or 127.0.0.1" in message
    return message


def _raw(port: int, head: bytes) -> tuple[bytes, bytes]:
    """The answer (status line and headers, body) to the request ``head``, on a connection of
    its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    status, _, body = data.partition(b"\r\n\r\n")
    return status, body


def test_a_rebound_page_cannot_read_the_service(attacked: Attacked) -> None:
    # The admin token guards /v1/router/status here; without one (the default) the page read it.
    # The Host is refused first, so the page learns not even that a token is needed.
    for headers in ({"host": REBOUND}, {"host": REBOUND, **attacked.admin}):
        r = httpx.get(f"{attacked.base}/v1/router/status", headers=headers, timeout=30)
        message = _refused(r)
        assert "router" not in r.json() and "policy" not in r.text
    assert "server.allowed_hosts lists (it lists none)" in message
    assert 'add "evil.example" to server.allowed_hosts in the config and restart' in message
    for path in ("/health", "/v1/models", "/metrics", "/openapi.json"):
        _refused(httpx.get(attacked.base + path, headers={"host": REBOUND}, timeout=30))


def test_a_rebound_page_cannot_route_call_or_teach(attacked: Attacked,
                                                   fake: FakeProviderProcess) -> None:
    before = httpx.get(f"{attacked.base}/v1/router/status", headers=attacked.admin,
                       timeout=30).json()
    logged = [entry["id"] for entry in attacked.requests()]
    counted = _gateway_requests(attacked)
    _refused(httpx.post(f"{attacked.base}/v1/route", json={"prompt": "hello"},
                        headers={"host": REBOUND}, timeout=30))
    chat = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("spend for me"),
                      headers={"host": REBOUND}, timeout=30)
    _refused(chat)
    assert chat.json()["error"]["type"] == "permission_error"  # OpenAI's envelope on its path
    _refused(httpx.post(f"{attacked.base}/v1/feedback", json={"decision_id": "d", "score": 0},
                        headers={"host": REBOUND}, timeout=30))
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged
    assert _gateway_requests(attacked) == counted
    after = httpx.get(f"{attacked.base}/v1/router/status", headers=attacked.admin,
                      timeout=30).json()
    assert after == before


@pytest.mark.parametrize("host", [
    "localhost", "localhost:1", "LocalHost:8080", "localhost.:9", "127.0.0.1", "127.0.0.1:65535",
    "127.3.2.1:80", "[::1]", "[::1]:9", "[0:0:0:0:0:0:0:1]:8080",
    # A name under localhost: browsers resolve it to loopback themselves, whatever DNS says.
    "app.localhost", "app.localhost:8080", "A.b.LocalHost.:9",
    # An address is no name a page's owner could point elsewhere: a proxy may pass its own on.
    "203.0.113.5:8443", "[2001:db8::7]"])
def test_loopback_names_and_addresses_are_served_on_any_port(attacked: Attacked,
                                                             host: str) -> None:
    r = httpx.get(f"{attacked.base}/v1/router/status", headers={"host": host, **attacked.admin},
                  timeout=30)
    assert r.status_code == 200, r.text
    routed = httpx.post(f"{attacked.base}/v1/route", json={"prompt": "hello"},
                        headers={"host": host}, timeout=30)
    assert routed.status_code == 200, routed.text


@pytest.mark.parametrize("host", [
    "evil.example", "EVIL.example.:80", "127.0.0.1.evil.example", "localhost.evil.example",
    "localhost:8080.evil.example", "xn--80ak6aa92e.com", "evillocalhost", "evil-localhost:80",
    "app.localhost.evil.example", "localhost.localhost.example"])
def test_a_name_that_is_not_localhost_is_refused(attacked: Attacked, host: str) -> None:
    r = httpx.get(f"{attacked.base}/health", headers={"host": host}, timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["param"] == "host"
    assert json.dumps(host) in r.json()["error"]["message"]


@pytest.mark.parametrize("host", [b"evil.example:http", b"[::1", b"[::1]x", b"a b", b"::1",
                                  # a name under localhost is checked as any other name is
                                  b".localhost", b"a..localhost", b"-a.localhost",
                                  b"x" * 64 + b".localhost:80"])
def test_a_host_header_that_names_no_host_is_refused(attacked: Attacked, host: bytes) -> None:
    status, body = _raw(attacked.port, b"GET /health HTTP/1.1\r\nHost: " + host
                        + b"\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 403 "), status
    message = json.loads(body)["error"]["message"]
    assert "is not a host name or an IP address, with a port or without one" in message
    assert json.dumps(host.decode()) in message


@pytest.mark.parametrize(("target", "host"), [
    (b"http://evil.example:8080/v1/models", "evil.example:8080"),
    (b"HTTPS://Evil.Example/v1/models?x=1", "Evil.Example"),
    (b"http://localhost.evil.example", "localhost.evil.example")])
def test_an_absolute_target_naming_another_host_is_refused(attacked: Attacked, target: bytes,
                                                           host: str) -> None:
    # HTTP has a server take the target's host, not the Host header's: it was served, the
    # host it named dropped unchecked. Over HTTP/1.0 a request needs no Host header at all.
    for version, header in ((b"1.1", b"Host: 127.0.0.1\r\n"), (b"1.0", b"")):
        status, body = _raw(attacked.port, b"GET " + target + b" HTTP/" + version + b"\r\n"
                            + header + b"Connection: close\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 403 "), status
        error = json.loads(body)["error"]
        assert (error["code"], error["param"]) == ("permission_denied", "host"), error
        assert (f"names the host {json.dumps(host)} in its Host header or request target, "
                "which is not localhost") in error["message"], error
        assert "data" not in json.loads(body)


def test_an_absolute_target_is_checked_by_the_host_it_names(attacked: Attacked) -> None:
    # The target's host is served by the one rule, whatever the Host header says.
    for target in (b"http://localhost/health", b"http://app.localhost:1/health",
                   b"http://127.0.0.1:9/health"):
        status, body = _raw(attacked.port, b"GET " + target
                            + b" HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200 "), (target, status, body)
        assert "uptime_seconds" in json.loads(body)


@pytest.mark.parametrize("userinfo", [b"user:sekrit-password-42", b"tok-0123456789abcdef"])
def test_a_host_after_a_user_and_password_is_refused_without_repeating_them(
        attacked: Attacked, userinfo: bytes) -> None:
    # The refusal quoted the URL's user and password (or a token sent as the user) whole, in
    # the answer and so in the client's or a proxy's log of it.
    for head in (b"GET http://" + userinfo + b"@localhost/health HTTP/1.1\r\nHost: 127.0.0.1",
                 b"GET /health HTTP/1.1\r\nHost: " + userinfo + b"@localhost"):
        status, body = _raw(attacked.port, head + b"\r\nConnection: close\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 403 "), status
        assert userinfo.split(b":")[-1] not in body, body
        error = json.loads(body)["error"]
        assert error["param"] == "host", error
        assert ('names "[REDACTED]@localhost" as its host in its Host header or request '
                "target: a user, and perhaps a password (not repeated here), before a "
                "host") in error["message"], error


def test_a_request_without_a_host_is_served(attacked: Attacked) -> None:
    # HTTP/1.0 needs none, and a browser always sends one; an empty one there names none too.
    for head in (b"GET /health HTTP/1.0\r\n\r\n", b"GET /health HTTP/1.0\r\nHost:\r\n\r\n"):
        status, body = _raw(attacked.port, head)
        assert status.startswith(b"HTTP/1.1 200 "), (head, status)
        assert "uptime_seconds" in json.loads(body)


EMPTY_HOST = ("host: the request's Host header is empty, which names no host: HTTP/1.1 requires "
              "the host the service is reached by. Send it, with the port (Host: "
              "127.0.0.1:8080, say; curl and the openai client send it themselves)")


def _no_host(answer: tuple[bytes, bytes]) -> dict[str, Any]:
    status, body = answer
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert (error["code"], error["param"], error["message"]) == (
        "invalid_request", "host", EMPTY_HOST), error
    return error


@pytest.mark.parametrize("host", [b"Host:", b"Host:   ", b"host: \t"])
def test_an_empty_host_on_http_1_1_is_refused(attacked: Attacked, host: bytes) -> None:
    # It was served: HTTP/1.1 requires a Host, and an empty one names nothing to check.
    _no_host(_raw(attacked.port, b"GET /health HTTP/1.1\r\n" + host
                  + b"\r\nConnection: close\r\n\r\n"))


NO_HOST = ("host: the HTTP/1.1 request gives no Host header, which names no host: HTTP/1.1 "
           "requires the host the service is reached by. Send it, with the port (Host: "
           "127.0.0.1:8080, say; curl and the openai client send it themselves)")


@pytest.mark.parametrize("target", [b"/health", b"/v1/models", b"http://127.0.0.1/health"])
def test_no_host_on_http_1_1_is_refused_naming_it_in_the_rule_s_words(attacked: Attacked,
                                                                       target: bytes) -> None:
    # switchpoint serve's h11 refuses it before the app sees it: the 400 said only what h11
    # said ("not a valid HTTP/1.1 request: Missing mandatory Host: header"), param null.
    status, body = _raw(attacked.port, b"GET " + target + b" HTTP/1.1\r\n"
                        b"Connection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error = json.loads(body)["error"]
    assert (error["code"], error["param"], error["message"]) == (
        "invalid_request", "host", NO_HOST), error


def test_an_empty_host_is_refused_on_every_route_before_it_is_read(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    logged = [entry["id"] for entry in attacked.requests()]
    error = _no_host(_raw(attacked.port, b"GET /v1/models HTTP/1.1\r\nHost:\r\n"
                          b"Connection: close\r\n\r\n"))
    assert error["type"] == "invalid_request_error"  # OpenAI's envelope on its paths
    body = json.dumps(chat_body("spend for me")).encode()
    _no_host(_raw(attacked.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost:\r\n"
                  b"Content-Type: application/json\r\nConnection: close\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body))
    _no_host(_raw(attacked.port, b"GET /v1/router/status HTTP/1.1\r\nHost:\r\n"
                  b"Connection: close\r\n\r\n"))  # before the admin token is asked for
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged


def test_an_absolute_target_names_the_host_an_empty_header_does_not(attacked: Attacked) -> None:
    # The target's host is taken in the header's place: the request names one.
    status, body = _raw(attacked.port, b"GET http://127.0.0.1/health HTTP/1.1\r\nHost:\r\n"
                        b"Connection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 "), (status, body)


MANY_HOSTS = ("host: the request gives the Host header more than once; a request names one "
              "host, and which of them it is for would be anyone's guess (a proxy in front may "
              "read another than the service does). Send the one host the service is reached "
              "by, with the port (Host: 127.0.0.1:8080, say; curl and the openai client send "
              "it themselves)")


def listed_hosts(host: str) -> str:
    """What the service answers to a Host header ``host`` that lists several hosts."""
    return (f"host: the request's Host header {json.dumps(host)} lists more than one host (a "
            "comma between them, as a proxy joins a header given more than once); a request "
            "names one host, and which of them it is for would be anyone's guess. Send the one "
            "host the service is reached by, with the port (Host: 127.0.0.1:8080, say; curl "
            "and the openai client send it themselves)")


def _malformed(answer: tuple[bytes, bytes], message: str) -> dict[str, Any]:
    status, body = answer
    assert status.startswith(b"HTTP/1.1 400 "), (status, body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert (error["code"], error["param"], error["message"]) == (
        "invalid_request", "host", message), error
    return error


@pytest.mark.parametrize("hosts", [
    b"Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n",  # the same twice, served names both
    b"Host: localhost\r\nHost: evil.example\r\n",
    b"Host: 127.0.0.1\r\nhost:\r\n",  # an empty one beside
    b"Host: a\r\nHost: b\r\nHost: c\r\n"])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_a_host_given_more_than_once_is_refused_naming_it(attacked: Attacked, hosts: bytes,
                                                          version: bytes) -> None:
    # Which of them the request is for is anyone's guess: a proxy in front may read the first,
    # the service the last. HTTP has a server answer it a 400, in any version.
    for target in (b"/health", b"/v1/models", b"http://127.0.0.1/health"):
        _malformed(_raw(attacked.port, b"GET " + target + b" HTTP/" + version + b"\r\n" + hosts
                        + b"Connection: close\r\n\r\n"), MANY_HOSTS)


@pytest.mark.parametrize("host", ["127.0.0.1, evil.example", "localhost,localhost", "a,", ","])
def test_a_host_listing_several_is_refused_naming_it(attacked: Attacked, host: str) -> None:
    # It was a 403 saying the value was no host name, as if it could be one.
    for version in (b"1.1", b"1.0"):
        _malformed(_raw(attacked.port, b"GET /health HTTP/" + version + b"\r\nHost: "
                        + host.encode() + b"\r\nConnection: close\r\n\r\n"),
                   listed_hosts(host))
    # Beside a target in absolute form too: the header is as malformed.
    _malformed(_raw(attacked.port, b"GET http://127.0.0.1/health HTTP/1.1\r\nHost: "
                    + host.encode() + b"\r\nConnection: close\r\n\r\n"), listed_hosts(host))


def test_a_malformed_host_is_refused_on_every_route_before_it_is_read(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    logged = [entry["id"] for entry in attacked.requests()]
    body = json.dumps(chat_body("spend for me")).encode()
    error = _malformed(_raw(attacked.port, b"POST /v1/chat/completions HTTP/1.1\r\n"
                            b"Host: 127.0.0.1, evil.example\r\nContent-Type: application/json"
                            b"\r\nConnection: close\r\n"
                            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body),
                       listed_hosts("127.0.0.1, evil.example"))
    assert error["type"] == "invalid_request_error"  # OpenAI's envelope on its paths
    _malformed(_raw(attacked.port, b"GET /v1/router/status HTTP/1.1\r\nHost: a, b\r\n"
                    b"Connection: close\r\n\r\n"), listed_hosts("a, b"))  # before the token
    _malformed(_raw(attacked.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1"
                    b"\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body), MANY_HOSTS)
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged


def test_the_openai_client_is_served_by_address_and_by_localhost(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    for base in (attacked.base, f"http://localhost:{attacked.port}"):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0,
                               timeout=30)
        reply = client.chat.completions.create(model="alpha", messages=[
            {"role": "user", "content": "hello"}])
        assert reply.choices[0].message.content
        assert [model.id for model in client.models.list()][:1] == ["auto"]
    assert len(fake.requests()) == 2


def test_the_api_document_lists_the_refusal_on_every_operation(attacked: Attacked) -> None:
    document = httpx.get(f"{attacked.base}/openapi.json", timeout=30).json()
    operations = [(path, method, op) for path, item in document["paths"].items()
                  for method, op in item.items()]
    assert len(operations) > 30
    for path, method, op in operations:
        description = op["responses"]["403"]["description"]
        assert "Host header (or its target, in absolute form" in description, (method, path)
        assert "server.allowed_hosts" in description, (method, path)
        assert ("invalid_request (param host): the HTTP/1.1 request gives no Host header, "
                "or an empty one, naming no host, or the request gives more than one Host "
                "header, or one listing several hosts (a comma between them)"
                in op["responses"]["400"]["description"]), (method, path)


# Names listed: a proxy in front passes its own on ---------------------------------------------

LISTED = "allowed_hosts: [api.internal, Router.Example.COM.]"


@pytest.fixture(scope="module")
def listed(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Attacked]:
    root: Path = tmp_path_factory.mktemp("listed")
    with serving(fake, root, server_lines="\n  " + LISTED) as server:
        yield server
        assert "Traceback" not in server.log_text()
        assert server.server_failures() == 0


@pytest.mark.parametrize("host", [
    "api.internal", "api.internal:443", "router.example.com", "ROUTER.example.com.:8443",
    "localhost:1", "app.localhost:8080", "127.0.0.1", "[::1]:80"])
def test_a_listed_name_is_served_beside_loopback(listed: Attacked, host: str) -> None:
    r = httpx.post(f"{listed.base}/v1/route", json={"prompt": "hello"}, headers={"host": host},
                   timeout=30)
    assert r.status_code == 200, r.text


def test_a_name_not_listed_is_refused_naming_the_list(listed: Attacked) -> None:
    for host in (REBOUND, "api.internal.evil.example", "internal"):
        message = _refused(httpx.get(f"{listed.base}/health", headers={"host": host},
                                     timeout=30), host)
        assert '(it lists "api.internal", "router.example.com")' in message, message


def test_a_reload_checks_the_list_and_keeps_the_one_the_service_started_with(
        listed: Attacked) -> None:
    served = listed.data_dir.parent / "switchpoint.yaml"
    before = served.read_text(encoding="utf-8")
    assert LISTED in before
    try:
        served.write_text(before.replace(LISTED, "allowed_hosts: [api.internal, "
                                                 "'https://evil.example']"), encoding="utf-8")
        r = httpx.post(f"{listed.base}/v1/router/reload", headers=listed.admin, timeout=30)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_config"
        assert error["message"].startswith('server.allowed_hosts[1]: "https://evil.example" is '
                                           "a URL: write evil.example alone"), error
        served.write_text(before.replace(LISTED, "allowed_hosts: [evil.example]"),
                          encoding="utf-8")
        r = httpx.post(f"{listed.base}/v1/router/reload", headers=listed.admin, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["restart_required"] == ["server"]
        # Still the names it started with: a change needs a restart, as the answer says.
        _refused(httpx.get(f"{listed.base}/health", headers={"host": REBOUND}, timeout=30))
        served_still = httpx.get(f"{listed.base}/health", headers={"host": "api.internal"},
                                 timeout=30)
        assert served_still.status_code == 200, served_still.text
    finally:
        served.write_text(before, encoding="utf-8")
        r = httpx.post(f"{listed.base}/v1/router/reload", headers=listed.admin, timeout=30)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(("config", "env"), [
    ("server:\n  allowed_hosts: [api.internal, 'api.internal:8080']\n", {}),
    ("", {"SWITCHPOINT_SERVER__ALLOWED_HOSTS": "[api.internal, 'api.internal:8080']"}),
])
def test_a_listed_name_with_a_port_refuses_the_start(tmp_path: Path, config: str,
                                                     env: dict[str, str]) -> None:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(config, encoding="utf-8")
    code, err = refused_start("--config", path, data_dir=tmp_path / "data", env=env)
    assert code == 2, err
    assert ('server.allowed_hosts[1]: "api.internal:8080" has a port: write api.internal '
            "alone; every port of it is allowed") in err, err
    assert "Traceback" not in err and not (tmp_path / "data").exists()
