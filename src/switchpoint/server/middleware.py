"""The request body limit: a body over ``max_request_bytes`` is a 413 ``request_too_large``
(and one sent with a ``Content-Encoding``, which is not decoded, a 415).

The body is read here, whole, when the app first asks for it, and handed to it in one piece,
so the limit holds for chunked bodies as well as declared lengths, and for a request of any
method that carries a body (a ``DELETE`` that reads one to refuse it too). The app asks once
the route has checked who calls (an admin route's token, a client key: see
:mod:`switchpoint.server.auth`), so a caller the route refuses is answered before its body is
read, and holds none of the buffer below. An answer given without the body (that 401, a 404)
goes out at once, with ``Connection: close``, and the body is not read: the connection closes
in stages as a refused body's does (see below).

A body refused (over the limit, sent with a ``Content-Encoding``, or with no room for it in the
buffer below) is answered as soon as that is known, chunked or not: when its declared length,
or the bytes read of it, pass the limit. The answer closes the connection and the rest of the
body is not read: read first (it may be many times the limit), a client that sent part of its
body and then waits for an answer, or sends the rest slowly, would get none until the body
timeout. The connection then closes in stages (:mod:`switchpoint.server.protocol`): this side
ends its stream after the answer, and what the client still sends is dropped unread until it
closes, so the client reads its answer rather than a reset. A client that asked first
(``Expect: 100-continue``) is answered without being invited to send the body by a
``100 Continue``.

The bodies held at once are bounded (:class:`~switchpoint.server.body_buffer.BodyBuffer`:
``server.max_body_buffer_bytes`` in all, a quarter of it per client): each request counts the
bytes it has read until its answer is sent, and one that would pass either bound is a 503
``server_busy`` with ``Retry-After: 1`` (answered at once, as an oversized body is). Without
the bound a thousand connections each sending a body just under the limit held a gigabyte;
without the share one client's slow connections held the whole buffer and every other client
got 503s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchpoint._messages import json_quoted, people_number
from switchpoint.gateway.body_size import PROMPT_ADVICE, too_large
from switchpoint.server.body_buffer import BodyBuffer
from switchpoint.server.errors import ErrorAnswer, document_refusal, is_openai_path, redacted
from switchpoint.server.header_names import (
    CONTENT_ENCODING,
    CONTENT_LENGTH,
    EXPECT,
    TRANSFER_ENCODING,
)
from switchpoint.server.header_text import shown_text
from switchpoint.server.paths import app_path

#: The scope extension by which a server says a connection answered before its request's body
#: ended closes in stages there (``switchpoint serve``'s protocol): the answer, the end of its
#: side of the stream, what the client still sends dropped unread. Without it (the app under
#: another server) the rest of such a body is read, up to :data:`DRAIN_FACTOR` times the
#: limit, and dropped before the answer ends: closed with the body unread, the connection would
#: be reset, and a reset may destroy the answer before the client reads it.
STAGED_CLOSE = "switchpoint.staged_close"
DRAIN_FACTOR = 64
# Where a body is mostly a prompt (the advice for an oversized one differs).
_PROMPT_PATHS = frozenset({"/v1/route", "/v1/chat/completions",
                           "/v1/router/preferences/compare"})
_CLOSE = (b"connection", b"close")
_CONTENT_ENCODING, _CONTENT_LENGTH, _EXPECT, _TRANSFER_ENCODING = (
    name.encode("ascii") for name in (CONTENT_ENCODING, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING))
#: Why a body with a Content-Encoding is refused (415): it is not read, so not held either.
ENCODED = "encoded"
#: The refusals of a body as the API document describes them, for each operation that reads one.
_ENCODED_DOC = ("unsupported_media_type: the body was sent with a Content-Encoding (gzip, br, "
                "...); bodies are read as they are sent, so send it uncompressed, without the "
                "header.")
_TOO_LARGE_DOC = ("request_too_large: the body is over max_request_bytes (in the config); send "
                  "a smaller one.")
_BUSY_DOC = ("server_busy: the bodies being received fill the server's body buffer (or this "
             "client's share of it); retry after Retry-After.")
# The methods whose requests the routes read a body of (to use it, or to refuse one sent to a
# route that takes none): a GET's body is never read, so never refused.
_READ_BODY = frozenset({"post", "put", "patch", "delete"})


class _Refused(Exception):  # noqa: N818 (a signal to the middleware, not an error)
    """The body cannot be held: ``reason`` (``too_large`` or a buffer refusal), with the
    bytes seen so far."""

    def __init__(self, reason: str, size: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.size = size


class _Gone(Exception):  # noqa: N818
    """The client left while its body was being read."""


class BodyLimitMiddleware:
    """``limit``: the body limit now (it follows reloads); ``bodies``: the shared buffer;
    ``client``: who a request's bodies count against (asked when the body is read, after the
    route's own check of who calls)."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int], bodies: BodyBuffer,
                 client: Callable[[Scope], str]) -> None:
        self.app = app
        self.limit = limit
        self.bodies = bodies
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not _has_body(scope):
            try:
                await self.app(scope, _empty_body(receive), send)
            except _Gone:
                return
            return
        request = _Request(self, scope, receive, send)
        try:
            await self.app(scope, request.receive, request.send)
        except _Gone:
            return
        except _Refused as refused:
            request.release()
            if request.started:  # (the app answered, then read: nothing else to say)
                return
            await request.refuse(refused)
        finally:
            request.release()


class _Request:
    """One request's body: read on the app's first ``receive``, held until the answer ends."""

    def __init__(self, middleware: BodyLimitMiddleware, scope: Scope, receive: Receive,
                  send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self._receive = receive
        self._send = send
        self.limit = middleware.limit()
        self.declared = _content_length(scope)
        self.read = False  # the app asked for the body (or answered without it)
        self.asked = False  # the client was asked for it (a 100 Continue, if it waits for one)
        self.ended = not _has_body(scope)  # its body's end was read
        self.started = False
        self.client = ""
        self.held = 0

    async def receive(self) -> Message:
        if self.read:
            return await self._receive()
        self.read = True
        limit = self.limit
        if _content_encoding(self.scope) is not None:
            raise _Refused(ENCODED, 0)
        if self.declared is not None and self.declared > limit:
            raise _Refused("too_large", self.declared)
        bodies = self.middleware.bodies
        self.client = self.middleware.client(self.scope)
        # (one buffer, not a list of the pieces: a body trickled a byte per packet arrives in as
        # many messages, and an object per piece held tens of times the bytes the buffer counts)
        body = bytearray()
        size = 0
        more = True
        while more:
            self.asked = True
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            self.ended = not more
            if size > limit:
                raise _Refused("too_large", size)
            refusal = bodies.take(self.client, len(chunk), limit)
            if refusal is not None:
                raise _Refused(refusal, size)
            self.held += len(chunk)
            body += chunk
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if not self.read:  # answered without the body (a route's 401, a 404): never read,
                self.read = True  # the connection closes in stages once the answer ends
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    headers.append(_CLOSE)
                message = {**message, "headers": headers}
        elif (message["type"] == "http.response.body" and not message.get("more_body", False)
              and self.unread_sent()):
            await self._drained(message)
            return
        await self._send(message)

    def unread_sent(self) -> bool:
        """Whether the client may still be sending a body this server will not close in stages
        over (the app under another server): it has one not read to its end, and it does not
        wait to be asked for it (``Expect: 100-continue``) or was asked."""
        return (not self.ended and STAGED_CLOSE not in (self.scope.get("extensions") or {})
                and (self.asked or not _expects_continue(self.scope)))

    async def _drained(self, last: Message) -> None:
        """Send ``last``, the answer's end, once the rest of the body is read and dropped (at
        most :data:`DRAIN_FACTOR` times the limit): the answer goes out first, its end after."""
        self.ended = True
        await self._send({**last, "more_body": True})
        read = 0
        while read <= self.limit * DRAIN_FACTOR:
            message = await self._receive()
            if message["type"] != "http.request":
                break
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def release(self) -> None:
        """Give back what the body held (its answer has ended, or it was refused)."""
        self.middleware.bodies.give_back(self.client, self.held)
        self.held = 0

    async def refuse(self, refused: _Refused) -> None:
        if refused.reason != ENCODED:  # (the buffer's refusals: its bounds, not the body's form)
            self.middleware.bodies.count_refusal(refused.reason)
        path = app_path(self.scope)
        if refused.reason == ENCODED:
            await _unsupported_encoding(self.send, _content_encoding(self.scope) or "", path)
        elif refused.reason == "too_large":
            await _reject(self.send, refused.size, self.limit, self.declared is not None, path)
        else:
            capacity, share = self.middleware.bodies.bounds(self.limit)
            await _busy(self.send, capacity, share, refused.reason == "client_share", path)


def _content_encoding(scope: Scope) -> str | None:
    """The request's ``Content-Encoding`` when it is one (gzip, br, ...): bodies are read as
    they are sent, so only ``identity`` (or none) reads."""
    for name, value in scope["headers"]:
        if name == _CONTENT_ENCODING:
            encoding = value.decode("latin-1").strip()
            if encoding.lower() not in ("", "identity"):
                return encoding
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == _CONTENT_LENGTH:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _empty_body(receive: Receive) -> Receive:
    """``receive`` for a request without a body: the app's first call (its read of the empty
    body) finds a client that has left as a body's read does (:class:`_Gone`: the request is
    dropped, not a route's error); the calls after it (a route watching for the client to
    leave) pass through."""
    first = True

    async def received() -> Message:
        nonlocal first
        message = await receive()
        if first and message["type"] == "http.disconnect":
            raise _Gone
        first = False
        return message

    return received


def _expects_continue(scope: Scope) -> bool:
    """Whether the client waits for ``100 Continue`` before it sends the body (which reading
    the body would send it)."""
    return any(name == _EXPECT and value.strip().lower() == b"100-continue"
               for name, value in scope["headers"])


def _has_body(scope: Scope) -> bool:
    """Whether the request carries a body (a length over 0, or chunks), whatever its method."""
    declared = _content_length(scope)
    if declared is not None:
        return declared > 0
    return any(name == _TRANSFER_ENCODING for name, _ in scope["headers"])


async def _busy(send: Send, capacity: int, share: int, mine: bool, path: str) -> None:
    if mine:
        message = ("body: this client's request bodies being received total over "
                   f"{people_number(share)} "
                   "bytes, its share of the server's body buffer (a quarter of "
                   "server.max_body_buffer_bytes in the config); retry once some of its "
                   "requests have been answered")
    else:
        message = ("body: the request bodies being received total over "
                   f"{people_number(capacity)} bytes "
                   "(server.max_body_buffer_bytes in the config); retry in a moment")
    await send_error(send, ErrorAnswer(503, "server_busy", message, "body"), path,
                [(b"retry-after", b"1")])


async def _reject(send: Send, size: int, limit: int, exact: bool, path: str) -> None:
    amount = f"is {size} bytes, over" if exact else "is larger than"
    advice = PROMPT_ADVICE if path in _PROMPT_PATHS else "Send a smaller body"
    message = "body: " + too_large(f"the request body {amount}", limit, advice)
    await send_error(send, ErrorAnswer(413, "request_too_large", message, "body"), path, [])


async def _unsupported_encoding(send: Send, encoding: str, path: str) -> None:
    shown = json_quoted(shown_text(encoding), 40)
    message = (f"content-encoding: the body is sent as {shown}; request "
               "bodies are read as they are sent, so send it uncompressed, without the header")
    await send_error(send, ErrorAnswer(415, "unsupported_media_type", message, "content-encoding"),
                path, [])


def document_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the refusals of a body this middleware answers
    (413 ``request_too_large``, 415 ``unsupported_media_type``, 503 ``server_busy``) listed
    for every operation that reads a body (every method but GET), in the shape of that
    operation's other errors (the OpenAI envelope on the OpenAI routes)."""
    for status, doc in ((413, _TOO_LARGE_DOC), (415, _ENCODED_DOC), (503, _BUSY_DOC)):
        document_refusal(schema, status, doc, _READ_BODY)
    return schema


async def send_error(send: Send, answer: ErrorAnswer, path: str,
                extra: list[tuple[bytes, bytes]]) -> None:
    """Send ``answer``, with the headers ``extra``, in the envelope of ``path`` (the path as
    the app reads it: :func:`~switchpoint.server.paths.app_path`), closing the connection; its
    message and param redacted (:func:`~switchpoint.server.errors.redacted`)."""
    answer = redacted(answer)
    payload = json.dumps(answer.openai() if is_openai_path(path) else answer.body(),
                         separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": answer.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": payload})


#: A guard's rule: the request (given its scope) as the app is to read it (its scope, or one the
#: rule made of it) and the answer refusing it, or None to serve it.
Rule = Callable[[Scope], tuple[Scope, ErrorAnswer | None]]


class GuardMiddleware:
    """Refuse a request by ``rule`` before any route reads it, in the shape of the path's
    other errors, or hand the app the request as the rule reads it. The shell of the service's
    rules of a request's target (:mod:`~switchpoint.server.targets`) and of its headers
    (:mod:`~switchpoint.server.origins`, :mod:`~switchpoint.server.hosts`, each made a rule by
    :func:`header_rule`), which keep only their rule."""

    def __init__(self, app: ASGIApp, rule: Rule) -> None:
        self.app = app
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read, refused = self.rule(scope)
        if refused is not None:
            await send_error(send, refused, app_path(read), [])
            return
        try:
            await self.app(read, receive, send)
        finally:  # the route matched, for those outside (the metrics label the request by it)
            if read is not scope and "route" in read:
                scope["route"] = read["route"]


def header_rule(header: str, refuse: Callable[[list[str]], str | None]) -> Rule:
    """The rule refusing a request by the values of its header ``header``: ``refuse`` is given
    every value (none, one, or the several a request repeats it with) and says why the request
    is refused (a 403 ``permission_denied`` whose param is the header), or None to serve it."""
    raw = header.encode("latin-1")

    def rule(scope: Scope) -> tuple[Scope, ErrorAnswer | None]:
        problem = refuse([value.decode("latin-1") for name, value in scope["headers"]
                          if name == raw])
        return scope, None if problem is None else ErrorAnswer(403, "permission_denied",
                                                               problem, header)

    return rule
