"""The request body limit: a body over ``max_request_bytes`` is a 413 ``request_too_large``.

The body is read here, whole, before the app sees it (and replayed to it), so the limit holds
for chunked bodies as well as declared lengths. An oversized body is read to its end (up to
:data:`DRAIN_FACTOR` times the limit) before the answer goes out, so the client, which is still
sending, receives the 413 instead of a reset connection; a client that asked first
(``Expect: 100-continue``) and declared a length over the limit is sending nothing yet, so it is
answered the 413 at once, not invited to send the body by a ``100 Continue``.
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
    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        chunks: list[bytes] = []
        size = 0
        more = True
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
                chunks.append(chunk)
        if size > limit:
            if not (declared is not None and _expects_continue(scope)):
                await _drain(receive, more, limit * DRAIN_FACTOR)
            await _reject(send, size, limit, declared is not None, scope["path"])
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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


async def _reject(send: Send, size: int, limit: int, exact: bool, path: str) -> None:
    amount = f"is {size} bytes, over" if exact else "is larger than"
    message = (f"body: the request body {amount} the limit of {limit} bytes "
               "(max_request_bytes in the config). ")
    message += ("A prompt or embedding that large cannot be routed: send the end of a long "
                "prompt (the router reads only its last part)" if path in _PROMPT_PATHS
                else "Send a smaller body")
    openai = is_openai_path(path)
    answer = ErrorAnswer(413, "request_too_large", message, "body")
    payload = json.dumps(answer.openai() if openai else answer.body()).encode()
    await send({"type": "http.response.start", "status": answer.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
