"""The body buffer under attack: slow connections each holding a body just under the limit.

One client (a credential, else an address) may hold at most its share of
``server.max_body_buffer_bytes`` (a quarter of it, 1 MiB here, or one ``max_request_bytes``),
so its slow bodies cannot starve the others; and on a service that needs a key, a caller
without a valid one is answered 401 before its body is read, so it holds none of the buffer.

The clients come from distinct loopback addresses (127.0.0.2, 127.0.0.3, ...): on 127.0.0.1
alone every caller without a credential is one client. The services here wait
:data:`BODY_TIMEOUT_S` for a body, not the attack config's 1 s: a held body must stay held
while the test checks what it holds, however busy the machine (one that timed out gives its
share back, and the attacker's next body would be taken).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.attack.attack_env import Attacked, serving
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import until

SIZE = (1 << 20) - 1000  # a body just under max_request_bytes (1 MiB), less its last byte
ROUTE_BODY = b'{"prompt": "hi"}' + b" " * (SIZE - 100)


def head(path: str = "/v1/route", length: int = SIZE + 1, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


@contextmanager
def holding(port: int, source: str, count: int, *extra: str) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that each send all of a body but its last byte,
    and wait (the server holds what it read until the body is whole, or refuses it)."""
    held = [connect(port, source) for _ in range(count)]
    try:
        for sock in held:
            sock.sendall(head("/v1/route", SIZE + 1, *extra) + b" " * SIZE)
        time.sleep(0.3)
        yield held
    finally:
        for sock in held:
            sock.close()


def metric(server: Attacked, line: str) -> int:
    text = httpx.get(f"{server.base}/metrics", headers=server.admin, timeout=10).text
    for row in text.splitlines():
        if row.startswith(line + " "):
            return int(float(row.rsplit(" ", 1)[1]))
    raise AssertionError(f"{line} is not in /metrics")


HELD = "switchpoint_http_request_body_bytes_held"
SHARE = 'switchpoint_http_request_bodies_refused_total{reason="client_share"}'
FULL = 'switchpoint_http_request_bodies_refused_total{reason="buffer_full"}'


def route_from(server: Attacked, source: str, body: bytes = ROUTE_BODY,
               key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.post(f"{server.base}/v1/route", content=body, headers=headers)


def taken_in(server: Attacked, held: int, refused: int) -> None:
    """Wait until ``server`` holds ``held`` bytes of bodies at least and has refused
    ``refused`` for a client's share in all: the bodies just sent are read in (a loaded host
    had not read all of one 0.3 s after it was sent)."""
    until(lambda: metric(server, HELD) >= held and metric(server, SHARE) >= refused,
          f"{held} bytes of bodies are held and {refused} refused for a client's share",
          timeout=30)


def wait_released(server: Attacked) -> None:
    deadline = time.monotonic() + 30
    while metric(server, HELD) and time.monotonic() < deadline:
        time.sleep(0.05)


BODY_TIMEOUT_S = 30.0
PATIENT = {"body_timeout_s": BODY_TIMEOUT_S}


# A service without keys: a client is its address --------------------------------------------

@pytest.fixture(scope="module")
def attacked(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Attacked]:
    """The attack service (in place of the session's), waiting :data:`BODY_TIMEOUT_S` for a
    body; checked after each test as the session's is (``conftest._independent``)."""
    with serving(fake, tmp_path_factory.mktemp("patient"), limits=PATIENT) as server:
        yield server


def test_one_address_cannot_take_the_whole_buffer(attacked: Attacked) -> None:
    wait_released(attacked)
    refused = metric(attacked, SHARE)
    with holding(attacked.port, "127.0.0.2", 4):
        # The first body is held (its share: 1 MiB); the others are refused, not held.
        taken_in(attacked, SIZE, refused + 3)
        assert SIZE <= metric(attacked, HELD) <= 1 << 20
        assert metric(attacked, SHARE) == refused + 3
        # Another client is served, a body of the largest size included (it used to be a
        # 503 server_busy for as long as the attacker's bodies took to time out).
        for _ in range(3):
            r = route_from(attacked, "127.0.0.3")
            assert r.status_code == 200, r.text[:300]
        # The attacker's next body is refused for its share, with what to do.
        r = route_from(attacked, "127.0.0.2")
        assert r.status_code == 503, r.text[:300]
        assert r.json()["error"]["code"] == "server_busy"
        assert "this client's request bodies" in r.json()["error"]["message"]
        assert r.headers["retry-after"] == "1"
    wait_released(attacked)
    assert route_from(attacked, "127.0.0.2").status_code == 200


# A service with client keys: a client is its key's tenant; no key, no body held ---------------

@pytest.fixture(scope="module")
def keyed(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Attacked]:
    root: Path = tmp_path_factory.mktemp("keyed")
    with serving(fake, root, "auth: keys\ntenants:\n  acme: {}\n  rival: {}\n",
                 limits=PATIENT) as server:
        yield server
        assert "Traceback" not in server.log_text()
        assert server.server_failures() == 0


def new_key(server: Attacked, tenant: str = "acme") -> str:
    r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": tenant},
                   headers=server.admin, timeout=10)
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


def read_answer(sock: socket.socket) -> bytes:
    """What the server sent until it closed the connection (a reset is an error)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


CALLERS = {
    "no key": [],
    "not a bearer token": ["Authorization: Basic dXNlcjpwYXNz"],
    "malformed key": ["Authorization: Bearer sp-nonsense"],
    "unknown key": ["Authorization: Bearer sp-0123456789_" + "A" * 43],
}


@pytest.mark.parametrize("path", ["/v1/route", "/v1/chat/completions", "/v1/feedback",
                                  "/v1/router/keys"])
@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_caller_without_a_valid_credential_is_refused_before_its_body(
        keyed: Attacked, path: str, caller: str) -> None:
    wait_released(keyed)
    with connect(keyed.port) as sock:
        sock.sendall(head(path, SIZE + 1, *CALLERS[caller]))
        # The 401 comes before a byte of the body is sent, and nothing is held for it.
        sock.settimeout(3)
        early = sock.recv(65536)
        assert early.startswith(b"HTTP/1.1 401"), early[:300]
        assert b"connection: close" in early.lower()
        assert metric(keyed, HELD) == 0
        # The client, still sending, gets to the end of its body and reads the answer whole
        # (the body is read and dropped: no reset).
        sock.sendall(b" " * (SIZE + 1))
        answer = early + read_answer(sock)
    assert answer.count(b"HTTP/1.1") == 1 and answer.endswith(b"}"), answer[-300:]
    assert b"authorization" in answer  # the param the error names


def test_a_caller_that_waits_for_continue_is_not_asked_for_its_body(keyed: Attacked) -> None:
    with connect(keyed.port) as sock:
        sock.sendall(head("/v1/route", SIZE + 1, "Expect: 100-continue"))
        sock.settimeout(3)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]  # no 100 Continue first


def test_callers_without_keys_hold_nothing_and_keys_are_served(keyed: Attacked) -> None:
    key = new_key(keyed)
    wait_released(keyed)
    with holding(keyed.port, "127.0.0.2", 20) as held:
        assert metric(keyed, HELD) == 0
        for sock in held:
            assert sock.recv(65536).startswith(b"HTTP/1.1 401")
        r = route_from(keyed, "127.0.0.2", key=key)
        assert r.status_code == 200, r.text[:300]


def test_one_tenant_cannot_take_the_whole_buffer(keyed: Attacked) -> None:
    """A tenant's keys share its one share, so a tenant given four keys (each a quarter, once)
    cannot hold the whole buffer and refuse every other tenant."""
    mine, also_mine, theirs = new_key(keyed), new_key(keyed), new_key(keyed, "rival")
    wait_released(keyed)
    refused = metric(keyed, SHARE)
    full = metric(keyed, FULL)
    # The attacker holds its tenant's share (from one address or many, with one key or more:
    # the tenant is the client).
    with holding(keyed.port, "127.0.0.2", 2, f"Authorization: Bearer {mine}"), \
            holding(keyed.port, "127.0.0.3", 2, f"Authorization: Bearer {also_mine}"):
        assert SIZE <= metric(keyed, HELD) <= 1 << 20
        assert metric(keyed, SHARE) == refused + 3
        r = route_from(keyed, "127.0.0.2", key=theirs)  # the same address, another tenant
        assert r.status_code == 200, r.text[:300]
    assert metric(keyed, FULL) == full


def test_a_client_invited_to_send_its_body_reads_the_refusal_whole(attacked: Attacked) -> None:
    """A client that waited for ``100 Continue`` was asked for its body: refused for its share
    once it sends it, it gets to the end of its body and reads the 503 (no reset)."""
    wait_released(attacked)
    # (its share is held by a slow body from the same address)
    with holding(attacked.port, "127.0.0.4", 1), connect(attacked.port, "127.0.0.4") as sock:
        sock.sendall(head("/v1/route", SIZE, "Expect: 100-continue"))
        sock.settimeout(3)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b" " * SIZE)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
    assert answer.count(b"HTTP/1.1") == 1 and b"this client's request bodies" in answer
    wait_released(attacked)


@pytest.mark.parametrize("framing", ["length", "chunks"])
def test_a_body_is_held_to_the_limit_whatever_the_method(keyed: Attacked, framing: str) -> None:
    """DELETE of a key takes no body, and reads one to refuse it: a body over the limit is a
    413 read no further than a POST's, and the key is not revoked."""
    key_id = httpx.post(f"{keyed.base}/v1/router/keys", json={"tenant": "acme"},
                        headers=keyed.admin, timeout=10).json()["id"]
    body = b" " * (3 << 20)
    content = body if framing == "length" else iter([body[:1 << 20]] * 3)
    r = httpx.request("DELETE", f"{keyed.base}/v1/router/keys/{key_id}", content=content,
                      headers=keyed.admin, timeout=10)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "request_too_large"
    record = httpx.get(f"{keyed.base}/v1/router/keys/{key_id}", headers=keyed.admin,
                       timeout=10).json()
    assert record["revoked_at"] is None
    wait_released(keyed)
    # A body within the limit is read as a POST's is, and refused for what it says.
    r = httpx.request("DELETE", f"{keyed.base}/v1/router/keys/{key_id}", content=b'{"x": 1}',
                      headers=keyed.admin, timeout=10)
    assert r.status_code == 400 and "takes no body" in r.json()["error"]["message"]
    wait_released(keyed)


@pytest.mark.parametrize("path", ["/v1/route", "/v1/router/health/reset"])
def test_a_client_gone_before_its_empty_body_is_read_fails_nothing(attacked: Attacked,
                                                                   path: str) -> None:
    """A request with an empty body (Content-Length: 0) whose client closes at once is dropped
    as one with a body is, not an unexpected error (a traceback in the log)."""
    logged = attacked.log_path.stat().st_size
    for _ in range(5):
        with connect(attacked.port) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                         f"{attacked.admin['Authorization'][7:]}\r\nContent-Length: 0\r\n\r\n"
                         .encode())
    time.sleep(0.5)
    assert httpx.get(f"{attacked.base}/health", timeout=10).status_code == 200
    with attacked.log_path.open("rb") as fh:
        fh.seek(logged)
        new_log = fh.read().decode("utf-8", errors="replace")
    assert "ClientDisconnect" not in new_log and "unexpected error" not in new_log, new_log
