"""The request body limit, called as plain ASGI (no server): a body over the limit is a 413 in
the path's error shape, read to its end first; a body within it reaches the app whole."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from switchpoint.server.body_buffer import BodyBuffer
from switchpoint.server.middleware import BodyLimitMiddleware

pytestmark = pytest.mark.anyio


async def call(path: str, chunks: list[bytes], limit: int,
               declared: int | None = None) -> tuple[list[MutableMapping[str, Any]], list[bytes]]:
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
             for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await BodyLimitMiddleware(app, limit=lambda: limit, bodies=BodyBuffer(1 << 30),
                              client=lambda scope: "one")(scope, receive, send)
    return sent, seen


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    sent, seen = await call("/v1/route", [b"ab", b"cd"], limit=4)
    assert seen == [b"abcd"] and sent[0]["status"] == 200


async def test_a_chunked_body_over_the_limit_is_refused_in_the_routing_shape() -> None:
    sent, seen = await call("/v1/route", [b"ab", b"cd", b"e"], limit=4)
    assert seen == [] and sent[0]["status"] == 413
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "request_too_large" and error["param"] == "body"
    assert "limit of 4 bytes" in error["message"] and "type" not in error


async def test_a_declared_length_over_the_limit_is_refused_in_openais_shape() -> None:
    sent, seen = await call("/v1/chat/completions", [b"x" * 10], limit=4, declared=10)
    assert seen == [] and sent[0]["status"] == 413
    error = json.loads(sent[1]["body"])["error"]
    assert error["type"] == "invalid_request_error" and "is 10 bytes" in error["message"]


async def test_the_advice_for_an_oversized_body_fits_its_endpoint() -> None:
    sent, _ = await call("/v1/route", [b"x" * 10], limit=4, declared=10)
    assert "send the end of a long prompt" in json.loads(sent[1]["body"])["error"]["message"]
    sent, _ = await call("/v1/feedback", [b"x" * 10], limit=4, declared=10)
    message = json.loads(sent[1]["body"])["error"]["message"]
    assert sent[0]["status"] == 413 and "Send a smaller body" in message
    assert "prompt" not in message
