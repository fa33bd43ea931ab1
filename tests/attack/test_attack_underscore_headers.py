"""A header the service reads, written with underscores for dashes (``x_session_id``).

The service read such a header as no header at all, while a proxy in front that takes
underscores for dashes (CGI-style, as some do) reads it as the header, or the reverse: the two
acted on different requests (another model list, another conversation, another body length).
Now a request carrying one is a 400 naming it and saying to write it with dashes, before any
route reads it: nothing is called, logged or changed. Other headers with underscores pass.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.attack.attack_env import Attacked, chat_body
from tests.fakes.fake_provider import FakeProviderProcess


def _exchange(attacked: Attacked, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send one request over a raw socket (``Connection: close``); its answer's head and
    body."""
    with socket.create_connection(("127.0.0.1", attacked.port), timeout=30) as sock:
        sock.sendall(head + b"Host: 127.0.0.1\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    answer_head, _, answer_body = data.partition(b"\r\n\r\n")
    return answer_head, answer_body


CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(("sent", "dashed"), [
    ("x_switchpoint_models", "x-switchpoint-models"),
    ("X_Session_Id", "x-session-id"),
    ("x-switchpoint_cost_weight", "x-switchpoint-cost-weight"),
    ("x_forwarded_for", "x-forwarded-for"),
    ("transfer_encoding", "transfer-encoding")])
def test_a_header_the_service_reads_written_with_underscores_is_refused(
        attacked: Attacked, fake: FakeProviderProcess, sent: str, dashed: str) -> None:
    logged = [entry["id"] for entry in attacked.requests()]
    secret = "sk-live-0123456789abcdefghijklmnop"
    head, body = _exchange(attacked, CHAT + f"{sent}: beta, {secret}\r\n".encode(),
                           json.dumps(chat_body("hello", "alpha")).encode())
    assert head.startswith(b"HTTP/1.1 400 "), head + body
    error = json.loads(body)["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "invalid_request", sent.lower(), "invalid_request_error"), error
    assert f"write it {dashed}" in error["message"], error["message"]
    assert secret.encode() not in body  # (the value is never quoted)
    assert fake.requests() == []  # nothing called
    assert [entry["id"] for entry in attacked.requests()] == logged  # nothing logged


def test_the_same_header_with_dashes_is_read_and_other_underscores_pass(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    chat = json.dumps(chat_body("hello", "alpha")).encode()
    # With dashes the header is read: alpha is not among the models it lists.
    head, body = _exchange(attacked, CHAT + b"x-switchpoint-models: beta\r\n", chat)
    assert head.startswith(b"HTTP/1.1 400 "), head + body
    assert json.loads(body)["error"]["param"] == "x-switchpoint-models"
    # A header the service does not read passes, underscores and all (x-api-key is not one).
    head, body = _exchange(attacked, CHAT + b"x_trace_id: 7\r\nx_api_key: k\r\n", chat)
    assert head.startswith(b"HTTP/1.1 200 "), head + body
    assert len(fake.requests()) == 1
    head, body = _exchange(attacked, b"GET /health HTTP/1.1\r\nmy_header: 1\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head + body
