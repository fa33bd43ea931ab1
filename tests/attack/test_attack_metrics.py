"""No client can add series to ``/metrics``: 10,000 requests with invented methods, paths,
models and statuses leave it the size it was.

Before: 100k requests with invented HTTP methods made 100k series.
"""

from __future__ import annotations

import re
import socket

import httpx

from switchpoint.server.metrics import NO_MODEL, OTHER_MODEL
from tests.attack.attack_env import Attacked, chat_body


def pipelined(port: int, requests: list[bytes]) -> int:
    """Send ``requests`` down one connection, 500 at a time; how many answers came back."""
    answered = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start in range(0, len(requests), 500):
            batch = requests[start:start + 500]
            sock.sendall(b"".join(batch))
            tail = b""  # the last bytes of the previous read: a status line may straddle two
            got = 0
            while got < len(batch):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return answered + got
                got += (tail + chunk).count(b"HTTP/1.1 ")
                tail = chunk[-8:]
            answered += got
    return answered


def series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_invented_methods_and_paths_add_no_series(attacked: Attacked) -> None:
    before = series(httpx.get(f"{attacked.base}/metrics", headers=attacked.admin, timeout=10).text)
    methods = [f"XM{i} /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for i in range(10_000)]
    assert pipelined(attacked.port, methods) == 10_000
    paths = [f"GET /invented/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for i in range(1000)]
    assert pipelined(attacked.port, paths) == 1000
    text = httpx.get(f"{attacked.base}/metrics", headers=attacked.admin, timeout=10).text
    after = series(text)
    assert "XM1" not in text and "/invented" not in text
    assert ('switchpoint_http_requests_total{route="/health",method="other",status="405"} '
            in text)
    assert 'route="unmatched",method="GET",status="404"' in text
    # A handful of new series (other/405, unmatched/404 and their latency buckets), not 11,000.
    assert len(after) - len(before) < 40
    assert len(text) < 64_000
    # The app's own fixed routes (the API schema) are counted under their path.
    assert httpx.get(f"{attacked.base}/openapi.json", timeout=10).status_code == 200
    text = httpx.get(f"{attacked.base}/metrics", headers=attacked.admin, timeout=10).text
    assert 'route="/openapi.json",method="GET",status="200"' in text


def test_model_labels_are_catalog_names(attacked: Attacked) -> None:
    with httpx.Client(base_url=attacked.base, timeout=10) as client:
        for i in range(50):  # unknown models are refused before anything is counted by model
            r = client.post("/v1/chat/completions", json=chat_body("hi", f"invented-{i}"))
            assert r.status_code == 404
        r = client.post("/v1/chat/completions", json=chat_body("hi", "beta"))
        assert r.status_code == 200
        text = client.get("/metrics", headers=attacked.admin).text
    assert "invented-" not in text
    models = set(re.findall(r'model="([^"]*)"', text))
    assert models <= {"alpha", "beta", "gamma", "solo", NO_MODEL, OTHER_MODEL}, models


def _count(attacked: Attacked, labels: str) -> int:
    """The count of ``switchpoint_http_requests_total{labels}`` now (0 before the first)."""
    text = httpx.get(f"{attacked.base}/metrics", headers=attacked.admin, timeout=10).text
    found = re.search(rf"^switchpoint_http_requests_total\{{{re.escape(labels)}\}} (\d+)$", text,
                      re.MULTILINE)
    return int(found.group(1)) if found else 0


def test_a_refused_request_is_counted_under_its_route_whatever_its_target_s_form(
        attacked: Attacked) -> None:
    # A target in absolute form a guard refused was counted as unmatched; the one served was
    # counted under its route, as an origin-form one is, refused or served.
    refused = 'route="/v1/models",method="GET",status="403"'
    unmatched = 'route="unmatched",method="GET",status="403"'
    before = _count(attacked, refused), _count(attacked, unmatched)
    heads = [b"GET http://evil.example:8080/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n",
             b"GET HTTP://evil.example/v1/models?x=1 HTTP/1.0\r\n",
             b"GET /v1/models HTTP/1.1\r\nHost: evil.example:8080\r\n",
             b"GET http://127.0.0.1/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Origin: http://evil.example\r\n"]  # the Origin rule's refusal
    for head in heads:
        with socket.create_connection(("127.0.0.1", attacked.port), timeout=30) as sock:
            sock.sendall(head + b"Connection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65_536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 403 "), (head, answer)
    assert (_count(attacked, refused), _count(attacked, unmatched)) == (
        before[0] + len(heads), before[1])
    # A target refused for itself (a raw "#" in its query) is counted as one in origin form is.
    target_refused = 'route="/v1/models",method="GET",status="400"'
    counted = _count(attacked, target_refused)
    for target in (b"http://127.0.0.1/v1/models?#", b"/v1/models?#"):
        with socket.create_connection(("127.0.0.1", attacked.port), timeout=30) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Connection: close\r\n\r\n")
            assert sock.recv(65_536).startswith(b"HTTP/1.1 400 ")
    assert _count(attacked, target_refused) == counted + 2


def _answer(attacked: Attacked, head: bytes) -> bytes:
    """The status line of the answer to ``head``, sent on a connection of its own."""
    with socket.create_connection(("127.0.0.1", attacked.port), timeout=30) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_refused_request_on_a_route_with_a_parameter_is_counted_under_its_template(
        attacked: Attacked) -> None:
    # It was counted as unmatched: only the routes without a parameter were looked up.
    cases = [  # (the request head, its status, the route it is counted under)
        (b"GET /v1/models/alpha HTTP/1.1\r\nHost: evil.example\r\n", 403,
         "/v1/models/{model_id:path}"),
        (b"GET http://evil.example/v1/models/a/b HTTP/1.1\r\nHost: 127.0.0.1\r\n", 403,
         "/v1/models/{model_id:path}"),
        (b"DELETE /v1/router/experiments/ab1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
         b"Origin: http://evil.example\r\n", 403, "/v1/router/experiments/{name}"),
        (b"GET /v1/router/experiments/ab1?# HTTP/1.1\r\nHost: 127.0.0.1\r\n", 400,
         "/v1/router/experiments/{name}"),
        (b"POST /v1/router/keys/k1/revoke HTTP/1.1\r\nHost:\r\n", 400,
         "/v1/router/keys/{key_id}/revoke")]
    unmatched = [f'route="unmatched",method="{method}",status="{status}"'
                 for method, status in (("GET", 403), ("DELETE", 403), ("GET", 400),
                                        ("POST", 400))]
    before = [_count(attacked, labels) for labels in unmatched]
    for head, status, route in cases:
        method = head.split(b" ", 1)[0].decode()
        labels = f'route="{route}",method="{method}",status="{status}"'
        counted = _count(attacked, labels)
        assert _answer(attacked, head).startswith(f"HTTP/1.1 {status} ".encode()), head
        assert _count(attacked, labels) == counted + 1, (head, labels)
    assert [_count(attacked, labels) for labels in unmatched] == before
    # A path no route takes is still unmatched, not a template's.
    assert _answer(attacked, b"GET /v1/models HTTP/1.1\r\nHost: evil.example\r\n").startswith(
        b"HTTP/1.1 403 ")
    assert _answer(attacked, b"GET /v1/nothing/x HTTP/1.1\r\nHost: evil.example\r\n"
                   ).startswith(b"HTTP/1.1 403 ")
    assert _count(attacked, unmatched[0]) == before[0] + 1
