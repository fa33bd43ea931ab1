"""The HTTP/1.1 connection guard: uvicorn's h11 protocol with the limits uvicorn lacks.

uvicorn bounds nothing a client controls before its app runs: a connection that sends nothing,
or its request a byte at a time, is kept forever (its keep-alive timer only runs between
requests and is reset by every byte), and every accepted socket is kept however many there are.
:func:`guarded_protocol` builds a protocol class (``uvicorn.Config(http=...)``) that adds, per
server:

- **a connection cap** (``max_connections``): a connection past the cap closes the one that has
  been idle the longest (waiting between requests, or still sending its request head), the way
  nginx frees keep-alive connections when it runs out; when every connection is busy with a
  request, the newcomer is answered 503 and closed. So a flood of silent sockets cannot lock
  out ``GET /health`` or anyone else: each new connection pushes the oldest silent one out.
- **a deadline per phase** of a connection, armed when the phase starts and never extended by
  the bytes that trickle in: the request head must arrive whole within ``header_timeout_s`` (of
  the connection's start, or of the first byte of a later request), the body within
  ``body_timeout_s`` of the head (else a 408 and the connection closes), an idle keep-alive
  connection lasts ``keep_alive_timeout_s``, and a client that reads none of its answer for
  ``write_timeout_s`` is cut off. While the app handles a request no deadline of this layer
  applies (the gateway's own, ``gateway.max_total_s``, does).
- **a head size limit** (``max_header_bytes``, request line plus headers): a longer head is a
  431, whether it trickles in or arrives in one packet. A chunked body's chunk-size lines and
  trailer are bounded by it too (each is read whole before what follows): a longer one is a
  400 naming the chunk-size line.
- **a staged close** of a connection answered before its request's body ended (a body refused
  as soon as it passed a limit, an answer given without reading it: a 401, a 404): the answer
  is followed by the end of this side's stream, and what the client still sends is dropped
  unread until it closes its side, the body's deadline passes or :data:`LINGER_BYTES` have
  been dropped; closed at once, the connection would be reset, and the reset may destroy the
  answer before the client reads it.
- **one framing per request**: a request giving both Content-Length and Transfer-Encoding is a
  400 and its connection closes (a proxy in front reading the other framing would take the
  bytes after it for another request); any malformed request's 400 says what was wrong (one
  giving the ``Host`` header more than once, or an HTTP/1.1 one giving none, in the words of
  the app's own rule of a request's host, naming ``host``:
  :func:`switchpoint.server.hosts.malformed`); an HTTP/1.0 request framed with
  ``Transfer-Encoding``, which HTTP/1.0 does not have, is one too (RFC 9112 §6.1).
- **chunks worth reading**: reading a chunk costs h11 about as much as reading tens of kilobytes
  of a body sent whole, so a body of one-byte chunks held the event loop (every connection's)
  for seconds. Past its first :data:`FREE_CHUNKS` chunks, a chunked body may have one chunk
  for each :data:`MIN_CHUNK_BYTES` bytes of it; one with more is a 400 saying so, and its
  connection closes.
- **one line per header**: a header line folded into the one before it (a line beginning with
  a space or tab: obsolete line folding), which h11 would join to it while a proxy in front
  may read it as a header of its own, is a 400 saying so, and its connection closes.
- **the versions it speaks**: a request line naming another HTTP version than 1.1 or 1.0
  (``HTTP/1.2``, ``HTTP/2.0``, which h11 reads and answered as 1.1) is a 505 naming
  ``http-version``.

A target in absolute form (``GET http://host/path``) is handed on whole, as uvicorn's own
protocol hands it: the app reads it, whatever server runs it (:mod:`switchpoint.server.targets`).

What is closed, evicted or refused is counted in :class:`ConnectionStats` (``GET /metrics``),
not logged one line per connection.

What uvicorn offers is used where it fits: ``timeout_keep_alive`` (the same keep-alive
timeout), ``h11_max_incomplete_event_size`` (the head limit while a head is incomplete) and
``backlog``. Its ``limit_concurrency`` is not: it counts idle connections too and answers 503
to every request once they reach the limit, so a few hundred silent sockets would lock out
``/health`` instead of being pushed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from h11._receivebuffer import ReceiveBuffer
from uvicorn.protocols.http.h11_impl import H11Protocol

from switchpoint.server.hosts import MANY_HOSTS, NO_HOST
from switchpoint.server.middleware import STAGED_CLOSE

_IDLE = "idle"  # between requests (keep-alive)
_HEAD = "head"  # reading a request's line and headers
_BODY = "body"  # reading a request's body
_BUSY = "busy"  # the app is answering


LINGER_BYTES = 64 << 20  # what a connection closing in stages drops unread before it closes
FREE_CHUNKS = 1_000  # the chunks any chunked body may have, however small
MIN_CHUNK_BYTES = 64  # past them, a chunk for each this many bytes of the body


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold (see ``server:`` in the config)."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    write_timeout_s: float = 60.0
    max_header_bytes: int = 16_384


@dataclass
class ConnectionStats:
    """Counts of what the guard did, for the metrics."""

    open: int = 0
    evicted: int = 0  # idle connections closed to make room for a new one
    refused: int = 0  # new connections answered 503: every slot busy
    timed_out: dict[str, int] = field(default_factory=lambda: {_IDLE: 0, _HEAD: 0, _BODY: 0,
                                                               "write": 0})
    too_large: int = 0  # request heads over max_header_bytes (431)


class _Registry:
    """The open connections of one server; the evictable ones (idle or reading a head) in the
    order they became so, oldest first; the app they serve, announcing the staged close."""

    def __init__(self, limits: ConnectionLimits, stats: ConnectionStats) -> None:
        self.limits = limits
        self.stats = stats
        self.evictable: dict[GuardedH11Protocol, None] = {}
        self.app: Any = None  # the server's app, and the same announcing the staged close
        self.announcing: Any = None

    def announced(self, app: Any) -> Any:
        """``app``, each HTTP request's scope telling it (the extension :data:`STAGED_CLOSE`)
        that a connection answered before its body ended closes in stages here, so the body
        limit need not read the rest of a body it refuses."""
        if app is not self.app:
            async def announcing(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    scope["extensions"] = {**(scope.get("extensions") or {}), STAGED_CLOSE: {}}
                await app(scope, receive, send)

            self.app, self.announcing = app, announcing
        return self.announcing


def _raw_error(status: int, reason: str, code: str, message: str,
               param: str | None = None) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "param": param}},
                      separators=(",", ":")).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


# What h11 says of a request giving the Host header more than once, or of an HTTP/1.1 one giving
# none, which it refuses before the app sees them: answered in the words of the rule of a
# request's host (hosts.malformed), naming host.
_H11_HOST_ERRORS = {"Found multiple Host: headers": MANY_HOSTS,
                    "Missing mandatory Host: header": NO_HOST}

# A request framed both ways: a proxy in front that reads the length and this server, which
# would read the chunks, disagree on where the request ends, so the bytes after it could be
# taken as another request (request smuggling). RFC 9112 lets a server refuse it; it must
# close the connection either way.
_BOTH_FRAMINGS = ("the request gives both Content-Length and Transfer-Encoding, which "
                  "disagree on where its body ends; send one of them")


# The HTTP versions a request line may name: h11 reads any digit.digit (HTTP/1.2, HTTP/2.0) and
# answers it as 1.1, a version the client did not ask for (RFC 9110 §6.2 has a server answer 505
# to a major version it does not speak).
_VERSIONS = (b"1.0", b"1.1")
# The param of a refused version: the request line's part, as HTTP names it.
_VERSION = "http-version"


def _unspoken(version: bytes) -> str:
    """Why a request naming HTTP ``version`` (not 1.0 nor 1.1) is refused."""
    return (f"{_VERSION}: the request line names HTTP/{version.decode('ascii')}, which this "
            "server does not speak; send the request as HTTP/1.1 (HTTP/1.0 is read too)")


# An HTTP/1.0 request framed with Transfer-Encoding, which HTTP/1.0 does not have: a proxy of
# HTTP/1.0 in front would not read the chunks, so where the request ends is in doubt. RFC 9112
# §6.1 has a server take its framing as faulty, and close the connection.
_CHUNKED_1_0 = ("transfer-encoding: an HTTP/1.0 request gives Transfer-Encoding, which HTTP/1.0 "
                "does not have, so where its body ends is in doubt; send it with Content-Length, "
                "or send the request as HTTP/1.1")


def _small_chunks(chunks: int, size: int) -> str:
    """Why a chunked body whose ``chunks``-th chunk starts after ``size`` bytes is refused."""
    return (f"the request body comes in chunks too small to read: {chunks} chunks for its first "
            f"{size} bytes, where past {FREE_CHUNKS} chunks a body may have one for each "
            f"{MIN_CHUNK_BYTES} bytes (each chunk costs the server as much to read as many "
            "bytes do); send it in larger chunks, or with Content-Length")


def _long_chunk_line(limit: int) -> str:
    """Why a chunked body whose chunk-size line (or trailer) runs past ``limit`` bytes is
    refused: h11 reads each whole before it reads on, so it is bounded as a head is."""
    return (f"a chunk-size line of the request body (a chunk's size in hex and its "
            f"extensions), or the trailer after its last chunk, is over {limit} bytes "
            "(server.max_header_bytes); send each chunk's size without extensions, or raise "
            "server.max_header_bytes")


# A header line beginning with a space or tab, which continues the line before it (obsolete line
# folding): h11 joins the two, but a proxy in front may read the line as a header of its own, or
# drop it, so the two would act on different headers (an Authorization, a Transfer-Encoding).
# RFC 9112 §5.2 has a server refuse it, or join it as h11 does; refused, it is told at once.
_FOLDED = ("a header line begins with a space or tab, continuing the line before it (obsolete "
           "line folding, RFC 9112 section 5.2); send each header on one line")


class _UnfoldedLines(ReceiveBuffer):
    """h11's receive buffer, refusing a request head, or a chunked body's trailer, that folds a
    header line (:data:`_FOLDED`)."""

    def maybe_extract_lines(self) -> list[bytearray] | None:
        lines = super().maybe_extract_lines()
        # (a head's first line is the request line, which h11 refuses beginning so)
        if lines is not None and any(line.startswith((b" ", b"\t")) for line in lines[1:]):
            raise h11.RemoteProtocolError(_FOLDED, error_status_hint=400)
        return lines


class _Connection(h11.Connection):
    """h11's connection, refusing a request head over ``max_head`` bytes even when it arrives
    whole (h11 itself only bounds a head that is still incomplete, and calls a chunk-size line
    over the same bound a 431 too: here a 400 naming it), and a request that gives
    both a Content-Length and a Transfer-Encoding (h11 would read the chunks and keep the
    connection open). ``error_reason`` keeps what was wrong, for the 400 to say (uvicorn's
    own says only "Invalid HTTP request received."), and ``error_param`` what it names, when
    a rule of the app's says it in its own words (a ``Host`` given more than once, or none
    over HTTP/1.1). A header line folded into the one before it is refused too
    (:class:`_UnfoldedLines`)."""

    def __init__(self, max_head: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self._receive_buffer = _UnfoldedLines()
        self.max_head = max_head
        self.error_status: int | None = None
        self.error_reason: str | None = None  # what the 400 says, when this layer knows
        self.error_param: str | None = None
        self.chunks = 0  # the chunks of the request's body so far, and the bytes before them
        self.chunked_bytes = 0

    def next_event(self) -> Any:
        in_body = self.their_state is h11.SEND_BODY
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            # What h11 found wrong, without the bytes it quotes (a header line may hold a key).
            self.error_reason = str(exc).split(": bytearray(", 1)[0][:200] or None
            if self.error_reason in _H11_HOST_ERRORS:
                self.error_param, self.error_reason = "host", _H11_HOST_ERRORS[self.error_reason]
            elif in_body and self.error_status == 431:
                # (h11 bounds any incomplete line by the head's limit, and calls it a 431)
                self.error_status, self.error_reason = 400, _long_chunk_line(self.max_head)
            raise
        if type(event) is h11.Data:
            if event.chunk_start:
                self.chunks += 1
                if self.chunks > FREE_CHUNKS + self.chunked_bytes // MIN_CHUNK_BYTES:
                    self.error_reason = _small_chunks(self.chunks, self.chunked_bytes)
                    raise h11.RemoteProtocolError(self.error_reason, error_status_hint=400)
            self.chunked_bytes += len(event.data)
        elif type(event) is h11.Request:
            self.chunks = self.chunked_bytes = 0
            size = len(event.method) + len(event.target) + 12 + sum(
                len(name) + len(value) + 4 for name, value in event.headers)
            if size > self.max_head:
                self.error_status = 431
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            if event.http_version not in _VERSIONS:
                self.error_status, self.error_param = 505, _VERSION
                self.error_reason = _unspoken(event.http_version)
                raise h11.RemoteProtocolError(self.error_reason, error_status_hint=505)
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self.error_reason = _BOTH_FRAMINGS
                raise h11.RemoteProtocolError(_BOTH_FRAMINGS, error_status_hint=400)
            if event.http_version == b"1.0" and b"transfer-encoding" in names:
                self.error_param, self.error_reason = "transfer-encoding", _CHUNKED_1_0
                raise h11.RemoteProtocolError(_CHUNKED_1_0, error_status_hint=400)
        return event


class _CoalescingTransport:
    """A connection's transport whose writes made in one turn of the event loop go out as one
    write at the end of it: an answer's head, its body and its end (or a stream's last events
    and its end) cost one system call instead of one each. Closing sends what is pending
    first, then asks ``linger`` whether the protocol closes the connection in stages itself;
    aborting drops what is pending. Everything else is the transport's own."""

    __slots__ = ("_linger", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 linger: Callable[[], bool]) -> None:
        self._transport = transport
        self._loop = loop
        self._linger = linger
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        if not self._linger():
            self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, phase deadlines and a head size limit.
    Use :func:`guarded_protocol` to make one for a server."""

    _registry: _Registry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self._registry.announced(self.app)
        limits = self._registry.limits
        self.conn = _Connection(limits.max_header_bytes)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._counted = False
        self._lingering = False
        self._dropped = 0  # bytes of a refused body dropped unread while lingering

    # Connections -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(  # type: ignore[arg-type]
            transport, self.loop, self._linger))
        registry = self._registry
        stats = registry.stats
        if stats.open >= registry.limits.max_connections:
            victim = next(iter(registry.evictable), None)
            if victim is None:
                stats.refused += 1
                transport.write(_raw_error(503, "Service Unavailable", "too_many_connections",
                                           "the server is at its connection limit "
                                           "(server.max_connections); try again shortly"))
                transport.close()
                return
            stats.evicted += 1
            victim._close_quietly()
        stats.open += 1
        self._counted = True
        # A new connection must send its first request head within header_timeout_s.
        self._enter(_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        registry = self._registry
        registry.evictable.pop(self, None)
        if self._counted:
            self._counted = False
            registry.stats.open -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # (the rest of a body answered without it: dropped unread)
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:  # (the client had its answer long ago)
                self._close_quietly()
            return
        super().data_received(data)
        self._update(received=bool(data))

    def _linger(self) -> bool:
        """Close in stages a connection whose answer is complete while its client may still be
        sending the request's body (a body refused as soon as it passed a limit, or an answer
        given without reading it): the answer is followed by the end of this side's stream,
        and what the client still sends is dropped unread until it closes its side, or the
        body's deadline passes. Closed at once, with those bytes unread, the connection would
        be reset, and a reset may destroy the answer before the client reads it (RFC 9112
        §9.6). True when it lingers so."""
        transport = self.transport
        if (self._lingering or self.cycle is None or not self.cycle.response_complete
                or self.conn.their_state is not h11.SEND_BODY or transport.is_closing()
                or not transport.can_write_eof()):
            return False
        self._lingering = True
        transport.write_eof()
        self.flow.resume_reading()
        if self._timer is None:  # (the body's deadline ends it; it is armed in the body)
            self._timer = self.loop.call_later(self._registry.limits.body_timeout_s,
                                               self._close_quietly)
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._lingering:  # (it ends with the client's close or the body's deadline)
            self._unset_keepalive_if_required()
        self._update(received=False)

    def send_400_response(self, msg: str) -> None:
        self._cancel_timers()
        conn: _Connection = self.conn  # type: ignore[assignment]
        if conn.error_status == 431:
            self._registry.stats.too_large += 1
            limit = self._registry.limits.max_header_bytes
            self.transport.write(_raw_error(
                431, "Request Header Fields Too Large", "headers_too_large",
                f"the request line and headers exceed {limit} bytes "
                "(server.max_header_bytes); send smaller headers"))
        elif conn.error_status == 505 and conn.error_reason is not None:
            self.transport.write(_raw_error(505, "HTTP Version Not Supported",
                                            "http_version_not_supported", conn.error_reason,
                                            conn.error_param))
        elif conn.error_param is not None and conn.error_reason is not None:
            self.transport.write(_raw_error(400, "Bad Request", "invalid_request",
                                            conn.error_reason, conn.error_param))
        else:
            reason = conn.error_reason or msg
            self.transport.write(_raw_error(400, "Bad Request", "invalid_request",
                                            f"not a valid HTTP/1.1 request: {reason}"))
        self.transport.close()

    # Phases ------------------------------------------------------------------------------------

    def _update(self, *, received: bool) -> None:
        """Work out the connection's phase after h11 has seen new bytes (``received``) or an
        answer ended."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Waiting for a request: bytes of it have come (now, earlier, or pipelined behind
            # the answer that just ended), or none yet. Bytes are only copied in the last case.
            waiting = received or self._phase == _HEAD or bool(self.conn.trailing_data[0])
            self._enter(_HEAD if waiting else _IDLE)
        elif state is h11.SEND_BODY:
            self._enter(_BODY)
        else:
            self._enter(_BUSY)

    def _enter(self, phase: str) -> None:
        """Start ``phase`` and its deadline; staying in a phase keeps its deadline."""
        if phase == self._phase:
            return
        self._phase = phase
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        limits = self._registry.limits
        evictable = self._registry.evictable
        if phase in (_IDLE, _HEAD):
            if self not in evictable:
                evictable[self] = None
        else:
            evictable.pop(self, None)
        seconds = {_IDLE: limits.keep_alive_timeout_s, _HEAD: limits.header_timeout_s,
                   _BODY: limits.body_timeout_s}.get(phase)
        if seconds is not None:
            self._timer = self.loop.call_later(seconds, self._expired, phase)

    def _expired(self, phase: str) -> None:
        self._timer = None
        if self.transport.is_closing() or phase != self._phase:
            return
        if self._lingering:  # (answered: the client had its answer, and stopped sending)
            self._close_quietly()
            return
        self._registry.stats.timed_out[phase] += 1
        answered = self.cycle is not None and self.cycle.response_started
        if (phase == _IDLE or (phase == _HEAD and not self.conn.trailing_data[0])
                or (phase == _BODY and answered)):  # (the app answered without the body)
            self._close_quietly()
            return
        limits = self._registry.limits
        if phase == _HEAD:
            message = (f"the request head did not arrive within {limits.header_timeout_s:g} s "
                       "(server.header_timeout_s)")
        else:
            message = (f"the request body did not arrive within {limits.body_timeout_s:g} s "
                       "(server.body_timeout_s)")
            cycle = self.cycle
            if cycle is not None:  # the app stops waiting for the body and answers nothing
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport.write(_raw_error(408, "Request Timeout", "request_timeout", message))
        self.transport.close()

    def _close_quietly(self) -> None:
        self._cancel_timers()
        self._registry.evictable.pop(self, None)
        if not self.transport.is_closing():
            if self.conn.our_state not in (h11.ERROR, h11.CLOSED):
                with contextlib.suppress(h11.LocalProtocolError):
                    self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._write_timer = None

    # A client that stops reading ------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._registry.limits.write_timeout_s,
                                                     self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        self._registry.stats.timed_out["write"] += 1
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.flow.resume_writing()  # release the app's pending send; it sees the disconnect
        self.transport.abort()


def guarded_protocol(limits: ConnectionLimits,
                     stats: ConnectionStats | None = None) -> type[GuardedH11Protocol]:
    """A protocol class for one server (``uvicorn.Config(http=...)``): its connections share
    ``limits`` and report to ``stats``."""
    registry = _Registry(limits, stats if stats is not None else ConnectionStats())
    return type("SwitchpointH11Protocol", (GuardedH11Protocol,), {"_registry": registry})
