"""The request body limit, called as plain ASGI: a body over the limit is a 413 in the path's
error shape, answered once the limit is passed, the rest of the body unread where the server
closes such a connection in stages (``switchpoint serve``'s), read and dropped after the answer
under another server; a body within it reaches the app whole."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from switchpoint.server.body_buffer import BodyBuffer
from switchpoint.server.middleware import DRAIN_FACTOR, STAGED_CLOSE, BodyLimitMiddleware

pytestmark = pytest.mark.anyio
left: list[dict[str, Any]] = []


async def call(path: str, chunks: list[bytes], limit: int, declared: int | None = None,
               reads: bool = True, extra: tuple[tuple[bytes, bytes], ...] = (),
               staged: bool = True) -> tuple[list[MutableMapping[str, Any]], list[bytes]]:
    """The messages the middleware sent, and the bodies the app read (``reads``: whether it
    asks for its body before answering; ``staged``: whether the server says it closes a
    connection answered before its body ended in stages); the messages of the body nobody
    read are in ``left``."""
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if reads:
            message = await receive()
            seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200 if reads else 401,
                    "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
             for i, c in enumerate(chunks)]
    left[:] = queue

    async def receive() -> dict[str, Any]:
        message = queue.pop(0) if queue else {"type": "http.disconnect"}
        left[:] = queue
        return message

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"transfer-encoding", b"chunked") if declared is None
               else (b"content-length", str(declared).encode()), *extra]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
             "extensions": {STAGED_CLOSE: {}} if staged else {}}
    await BodyLimitMiddleware(app, limit=lambda: limit, bodies=BodyBuffer(1 << 30),
                              client=lambda scope: "one")(scope, receive, send)
    return sent, seen


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    sent, seen = await call("/v1/route", [b"ab", b"cd"], limit=4)
    assert seen == [b"abcd"] and sent[0]["status"] == 200


async def test_a_chunked_body_over_the_limit_is_refused_in_the_routing_shape() -> None:
    sent, seen = await call("/v1/route", [b"ab", b"cd", b"e", b"fg", b"hi"], limit=4)
    assert seen == [] and sent[0]["status"] == 413
    assert [m["body"] for m in left] == [b"fg", b"hi"]  # answered once past the limit
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "request_too_large" and error["param"] == "body"
    assert "limit of 4 bytes" in error["message"] and "type" not in error


async def test_under_another_server_the_rest_of_a_refused_body_is_read_after_the_answer(
        ) -> None:
    # Without a staged close, closing with the body unread would reset the connection, and a
    # reset may destroy the answer before the client reads it: the answer goes out, then the
    # rest of the body is read (up to DRAIN_FACTOR times the limit) and dropped, then its end.
    sent, seen = await call("/v1/route", [b"ab", b"cd", b"e", b"fg", b"hi"], limit=4,
                            staged=False)
    assert seen == [] and sent[0]["status"] == 413 and left == []
    assert sent[1]["more_body"] is True and json.loads(sent[1]["body"])["error"]["param"] == "body"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    # An answer given without the body (a 401) likewise; a body far over the cap is left.
    sent, _ = await call("/v1/route", [b"x" * 10] * (DRAIN_FACTOR + 2), limit=10,
                         reads=False, staged=False)
    assert sent[0]["status"] == 401 and sent[1]["more_body"] is True and len(left) == 1
    # A client waiting to be asked for its body (Expect: 100-continue) sends none: not read.
    sent, _ = await call("/v1/route", [b"ab", b"cd"], limit=1, declared=4, staged=False,
                         extra=((b"expect", b"100-continue"),))
    assert sent[0]["status"] == 413 and len(left) == 2 and len(sent) == 2


async def test_a_declared_length_over_the_limit_is_refused_in_openais_shape() -> None:
    sent, seen = await call("/v1/chat/completions", [b"x" * 10], limit=4, declared=10)
    assert seen == [] and sent[0]["status"] == 413
    assert len(left) == 1  # answered by its length: none of it read
    error = json.loads(sent[1]["body"])["error"]
    assert error["type"] == "invalid_request_error" and "is 10 bytes" in error["message"]


async def test_the_advice_for_an_oversized_body_fits_its_endpoint() -> None:
    sent, _ = await call("/v1/route", [b"x" * 10], limit=4, declared=10)
    assert "send the end of a long prompt" in json.loads(sent[1]["body"])["error"]["message"]
    sent, _ = await call("/v1/feedback", [b"x" * 10], limit=4, declared=10)
    message = json.loads(sent[1]["body"])["error"]["message"]
    assert sent[0]["status"] == 413 and "Send a smaller body" in message
    assert "prompt" not in message


async def test_an_answer_without_the_body_goes_out_at_once_leaving_the_body_unread() -> None:
    # (a route's 401: the caller may still be sending; the connection closes in stages, so it
    # reads its answer rather than a reset: the protocol's part, see test_attack_connections)
    sent, seen = await call("/v1/route", [b"ab", b"cd", b"ef"], limit=4, reads=False)
    assert seen == [] and sent[0]["status"] == 401
    assert (b"connection", b"close") in sent[0]["headers"]
    assert sent[1:] == [{"type": "http.response.body", "body": b"ok"}]
    assert len(left) == 3  # none of it read: not even the part within the limit


async def test_a_client_waiting_for_continue_is_answered_without_being_asked() -> None:
    sent, _ = await call("/v1/route", [b"ab"], limit=4, declared=2, reads=False,
                         extra=((b"expect", b"100-continue"),))
    assert sent[0]["status"] == 401 and len(left) == 1  # nothing read: no 100 Continue


async def test_a_request_without_a_body_keeps_its_connection() -> None:
    sent, _ = await call("/v1/router/keys/k/revoke", [b""], limit=4, declared=0, reads=False)
    assert sent[0]["headers"] == [] and sent[1]["body"] == b"ok"


def test_one_client_holds_at_most_its_share_of_the_buffer() -> None:
    bodies = BodyBuffer(8 << 20)
    limit = 1 << 20
    assert bodies.bounds(limit) == (8 << 20, 2 << 20)  # a quarter
    assert bodies.bounds(4 << 20) == (8 << 20, 4 << 20)  # at least one body
    assert bodies.bounds(16 << 20) == (16 << 20, 16 << 20)  # the buffer holds one body
    assert bodies.take("a", 2 << 20, limit) is None
    assert bodies.take("a", 1, limit) == "client_share"
    assert bodies.take("b", 2 << 20, limit) is None
    assert bodies.take("c", 2 << 20, limit) is None
    assert bodies.take("d", (2 << 20) - 1, limit) is None
    assert bodies.take("e", 2, limit) == "buffer_full"
    assert bodies.held == (8 << 20) - 1
    bodies.give_back("a", 2 << 20)
    assert bodies.take("a", 1, limit) is None and bodies.take("e", 2, limit) is None
    for client, size in (("a", 1), ("b", 2 << 20), ("c", 2 << 20), ("d", (2 << 20) - 1),
                         ("e", 2)):
        bodies.give_back(client, size)
    assert bodies.held == 0 and not bodies._by_client


async def test_a_body_in_many_small_pieces_takes_the_memory_of_its_bytes() -> None:
    """A body trickled a byte per packet arrives as that many messages: what is held while it
    is read, and handed to the app, is its bytes (as the buffer counts them), not an object per
    piece (tens of bytes each: such a body held tens of times its size)."""
    import tracemalloc

    pieces = 100_000
    sizes: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        sizes.append(len(message["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": bytes([32 + sent % 64]),
                "more_body": sent < pieces}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    scope = {"type": "http", "method": "POST", "path": "/v1/route",
             "headers": [(b"transfer-encoding", b"chunked")]}
    middleware = BodyLimitMiddleware(app, limit=lambda: 1 << 20, bodies=BodyBuffer(1 << 30),
                                     client=lambda scope: "one")
    tracemalloc.start()
    try:
        await middleware(scope, receive, send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == [pieces]
    assert peak < 4 * pieces, peak
