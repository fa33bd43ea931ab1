"""The request body limit: a body over ``max_request_bytes`` is a 413 ``request_too_large``.

The body is read here, whole, before the app sees it (and replayed to it), so the limit holds
for chunked bodies as well as declared lengths. An oversized body is read to its end (up to
:data:`DRAIN_FACTOR` times the limit) before the answer goes out, so the client, which is still
sending, receives the 413 instead of a reset connection; a client that asked first
(``Expect: 100-continue``) and declared a length over the limit is sending nothing yet, so it is
answered the 413 at once, not invited to send the body by a ``100 Continue``.

The bodies held at once, across every connection, are bounded too (``server.max_body_buffer_bytes``,
or one ``max_request_bytes`` if that is more): each request counts the bytes it has read until
its answer is sent, and one that would pass the bound is a 503 ``server_busy`` with
``Retry-After: 1`` (its body read to its end and dropped, like an oversized one's). Without it,
a thousand connections each sending a body just under the limit held a gigabyte.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchpoint.server.errors import ErrorAnswer, is_openai_path

DRAIN_FACTOR = 64
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# Where a body is mostly a prompt (the advice for an oversized one differs).
_PROMPT_PATHS = frozenset({"/v1/route", "/v1/chat/completions",
                           "/v1/router/preferences/compare"})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: Callable[[], int], buffer: int) -> None:
        self.app = app
        self.limit = limit
        self.buffer = buffer  # the bytes of bodies held at once, across requests
        self.held = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        held = 0
        try:
            limit = self.limit()
            buffer = max(self.buffer, limit)
            declared = _content_length(scope)
            chunks: list[bytes] = []
            size = 0
            more = True
            busy = False
            if declared is not None and declared > limit:
                size = declared
            else:
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    more = bool(message.get("more_body", False))
                    if size > limit:
                        break
                    if self.held + len(chunk) > buffer:
                        busy = True
                        break
                    self.held += len(chunk)
                    held += len(chunk)
                    chunks.append(chunk)
            if size > limit or busy:
                chunks.clear()
                self.held -= held
                held = 0
                if not (declared is not None and _expects_continue(scope)):
                    await _drain(receive, more, limit * DRAIN_FACTOR)
                if busy:
                    await _busy(send, buffer, scope["path"])
                else:
                    await _reject(send, size, limit, declared is not None, scope["path"])
                return
            body = b"".join(chunks)
            chunks.clear()
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.held -= held


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _expects_continue(scope: Scope) -> bool:
    """Whether the client waits for ``100 Continue`` before it sends the body (which reading
    the body would send it)."""
    return any(name == b"expect" and value.strip().lower() == b"100-continue"
               for name, value in scope["headers"])


async def _drain(receive: Receive, more: bool, cap: int) -> None:
    read = 0
    while more and read <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        more = bool(message.get("more_body", False))


async def _busy(send: Send, buffer: int, path: str) -> None:
    message = (f"body: the request bodies being received total over {buffer} bytes "
               "(server.max_body_buffer_bytes in the config); retry in a moment")
    await _send(send, ErrorAnswer(503, "server_busy", message, "body"), path,
                [(b"retry-after", b"1")])


async def _reject(send: Send, size: int, limit: int, exact: bool, path: str) -> None:
    amount = f"is {size} bytes, over" if exact else "is larger than"
    message = (f"body: the request body {amount} the limit of {limit} bytes "
               "(max_request_bytes in the config). ")
    message += ("A prompt or embedding that large cannot be routed: send the end of a long "
                "prompt (the router reads only its last part)" if path in _PROMPT_PATHS
                else "Send a smaller body")
    await _send(send, ErrorAnswer(413, "request_too_large", message, "body"), path, [])


async def _send(send: Send, answer: ErrorAnswer, path: str,
                extra: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(answer.openai() if is_openai_path(path) else answer.body()).encode()
    await send({"type": "http.response.start", "status": answer.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": payload})
