"""Deadlines hold while an upstream is answering, and a client that leaves takes its upstream
call with it.

Before: an upstream trickling a byte every 0.5 s (never silent for the read timeout) got a 40 s
answer through ``max_total_s: 30``.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import httpx

from switchpoint.store import DecisionRecord, SQLiteStore
from tests.attack.attack_env import MAX_TOTAL_S, Attacked, chat_body
from tests.fakes.fake_provider import FakeProviderProcess


def test_a_trickling_upstream_cannot_hold_a_request_past_max_total_s(
        attacked: Attacked) -> None:
    started = time.monotonic()
    r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=30,
                   json=chat_body("[[fake:trickle:every=0.2]] slowly", "beta"))
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert "gateway.max_total_s" in r.json()["error"]["message"]
    assert elapsed < MAX_TOTAL_S + 1.5


def test_a_trickling_stream_ends_with_an_error_at_the_deadline(attacked: Attacked) -> None:
    started = time.monotonic()
    with httpx.stream("POST", f"{attacked.base}/v1/chat/completions", timeout=30,
                      json=chat_body("[[fake:trickle:every=0.2]] slowly", "beta",
                                     stream=True)) as r:
        lines = list(r.iter_lines())
    elapsed = time.monotonic() - started
    assert r.status_code == 200  # committed on the first chunk
    assert "event: error" in lines and "data: [DONE]" not in lines
    assert any("max_total_s" in line for line in lines)
    assert elapsed < MAX_TOTAL_S + 1.5
    entry = attacked.entry(r.headers["x-switchpoint-request-id"])
    assert entry["status"] == "stream_broken"


def test_a_client_that_leaves_cancels_the_upstream_call(attacked: Attacked,
                                                        fake: FakeProviderProcess) -> None:
    fake.reset()
    body = (b'{"model": "beta", "messages": [{"role": "user", '
            b'"content": "[[fake:hold:seconds=10]] wait"}]}')
    sock = socket.create_connection(("127.0.0.1", attacked.port), timeout=5)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 5
    while not fake.requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = time.time()
    sock.close()
    # The fake sees its connection dropped at once, not when it would have answered.
    closed_at = None
    while time.monotonic() < deadline + 2 and closed_at is None:
        time.sleep(0.05)
        closed_at = fake.requests()[0].get("closed_at")
    assert closed_at is not None and closed_at - left < 1.0
    # And the request log says the client left.
    entry = None
    while time.monotonic() < deadline + 4 and entry is None:
        entry = next((e for e in attacked.requests(5) if e["status"] == "client_closed"
                      and e["ts"] >= left - 5), None)
        time.sleep(0.05)
    assert entry is not None
    assert entry["error_kind"] == "client_closed" and entry["http_status"] == 499


def test_clients_that_leave_while_their_entry_commits_cannot_stop_the_log(
        attacked: Attacked, tmp_path: Path) -> None:
    # The store: a caller that stops waiting used to cancel the entry's future, and the writer
    # thread died resolving it; every later request then waited forever for its log entry.
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        for _ in range(20):
            store.append(decision()).cancel()
        store.append(decision()).result(timeout=5)
    # The service: clients that hang up right after asking, racing their own commits.
    body = chat_body("[[fake:ok]] bye", "beta")
    raw = json.dumps(body).encode()
    for _ in range(60):
        with socket.create_connection(("127.0.0.1", attacked.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(raw)).encode()
                         + b"\r\n\r\n" + raw)
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200
    assert attacked.entry(r.headers["x-switchpoint-request-id"])["status"] == "ok"
    assert "Exception in thread" not in attacked.log_text()


def decision() -> DecisionRecord:
    return DecisionRecord(id=uuid.uuid4().hex, ts=time.time(), selected_model="m", cluster_id=1,
                          cost_weight=0.5, candidates=["m"], cache_hit=False, routing_ms=1.0,
                          embedding_ms=1.0, policy="cluster", weights_id="w",
                          expected_error=0.1, cost_adjusted_score=0.2)
