"""HEAD on the wire, against `switchpoint serve` (its guarded h11 protocol): an answer to a HEAD
carries headers and no body, so the next request on the same connection reads as its own; a
HEAD without the token gets the GET's 401 and nothing of the body the token guards; a HEAD on
a route that takes no GET is a 405 whose Allow names what it takes; any method a path does not
take is a 405 whose Allow and message name every method the path takes (they named only those
of the first route the router met: DELETE alone for /v1/router/keys/{id}).
"""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.attack.attack_env import Attacked


def _answers(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """Read ``count`` answers off the socket, the last ending where the server closes it:
    (head, everything up to the next answer's status line)."""
    data = b""
    while True:
        chunk = sock.recv(65_536)
        if not chunk:
            break
        data += chunk
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert len(parts) == count, data[:2000]
    out = []
    for part in parts:
        head, _, rest = part.partition(b"\r\n\r\n")
        out.append((head.lower(), rest))
    return out


def test_a_head_answer_carries_no_body_on_a_kept_alive_connection(attacked: Attacked) -> None:
    token = attacked.admin["Authorization"]
    requests = [
        b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # guarded: the GET's 401
        f"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n".encode(),
        b"HEAD /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # large, served whole by GET
        b"HEAD /v1/route HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # POST only
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ]
    with socket.create_connection(("127.0.0.1", attacked.port), timeout=30) as sock:
        sock.sendall(b"".join(requests))
        answers = _answers(sock, len(requests))
    (refused, refused_body), (metrics, metrics_body), (schema, schema_body), \
        (post_only, post_only_body), (health, health_body) = answers
    assert refused.startswith(b"401 ") and refused_body == b""
    assert b"www-authenticate: bearer" in refused
    assert b"switchpoint_" not in refused  # nothing of what the token guards
    assert metrics.startswith(b"200 ") and metrics_body == b""
    assert b"content-type: text/plain" in metrics
    assert schema.startswith(b"200 ") and schema_body == b""
    length = next(int(line.split(b":")[1]) for line in schema.split(b"\r\n")
                  if line.startswith(b"content-length:"))
    assert length > 10_000  # the GET's length, announced, not sent
    assert post_only.startswith(b"405 ") and post_only_body == b""
    assert b"\r\nallow: post" in post_only
    assert health.startswith(b"200 ") and b'"status"' in health_body


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/router/experiments/thrift", "GET, HEAD, DELETE"),
    ("PATCH", "/v1/router/keys/0123456789", "GET, HEAD, DELETE"),
    ("GET", "/v1/router/keys/0123456789/rotate", "POST"),
    ("POST", "/v1/router/status", "GET, HEAD"),
    ("DELETE", "/v1/feedback", "POST"),
    ("TRACE", "/health", "GET, HEAD"),
])
def test_a_method_the_path_does_not_take_names_every_one_it_does(
        attacked: Attacked, method: str, path: str, allowed: str) -> None:
    r = httpx.request(method, attacked.base + path, headers=attacked.admin, timeout=10)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allowed
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert r.json()["error"]["message"].endswith(f"; this path takes {allowed}")
