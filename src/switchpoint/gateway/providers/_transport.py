"""A lean HTTP/1.1 transport for httpx: pooled keep-alive connections on asyncio streams.

Why not httpx's default (httpcore): its pool re-checks every pooled connection (a ``poll``
system call and a ``getpeername`` each) whenever a request starts or ends, so with the 64+
connections a busy gateway keeps to one upstream, the pool's bookkeeping cost more CPU than the
rest of the request put together (``benchmarks/gateway.py``). This transport keeps idle
connections in a LIFO list per origin and decides whether one is still usable from the state
asyncio already tracks (closing, EOF seen, error seen), without a system call.

It speaks just what LLM APIs need: one request per connection at a time, ``Content-Length``,
chunked or read-to-close bodies, streamed to the caller as they arrive (those that came before
the upstream reset the connection too, before the reset is raised), TLS for ``https``. A
pooled connection the upstream hangs up on before any byte of an answer (it let the idle
connection go as the request went out) sends the request again, once, on a fresh connection.
Timeouts come from the request (``connect``, ``read`` per read, ``write``, ``pool``) and every
failure is raised as the httpx exception httpx's own transport would raise, so callers (and
:func:`switchpoint.gateway.providers._http.map_transport_error`) cannot tell the difference.

A request marked :data:`CHECK_ADDRESSES` (a model registered at run time, which may not send
its requests to a link-local or cloud metadata address) has its idle connections kept apart
from the others' (within the one bound of connections to the upstream, which both count
against), and each new one looks the host name up itself, refuses (:class:`RefusedAddress`)
when any address it resolves to is such an address, and connects to an address it checked:
the name's owner cannot point it there between the check and the connection (DNS rebinding).
TLS still verifies the host name, and sends it (SNI). A pooled connection is reused unchecked
(it goes where it was checked to go) while the request's NAT64 prefixes are those it passed:
once a reload lists others, it is closed, not used, when an address its name resolved to as it
was checked no longer passes, as a new connection would be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

import httpx

from switchpoint._messages import json_quoted
from switchpoint.gateway.providers.sending import note_connecting, note_sent, note_unsent
from switchpoint.registration import canonical_host, internal_address, rebound_host

# (scheme, host, port, and whether its connections' addresses are checked: see CHECK_ADDRESSES;
# the host as each of its spellings is: canonical_host)
_Origin = tuple[str, str, int, bool]
# (scheme, host, port: an upstream, whose connections, checked and not, share one bound)
_Upstream = tuple[str, str, int]
#: The request extension that marks a request whose connections may not go to a link-local or
#: cloud metadata address (true): each new one resolves the host name and checks every address
#: it gets (:func:`~switchpoint.registration.internal_address`) before connecting to one.
CHECK_ADDRESSES = "switchpoint.check_addresses"
#: The request extension giving, beside :data:`CHECK_ADDRESSES`, the network's own NAT64
#: prefixes (a tuple of :class:`ipaddress.IPv6Network`, the config's
#: ``gateway.nat64_prefixes``): an address under one is judged by the IPv4 address it carries.
NAT64_PREFIXES = "switchpoint.nat64_prefixes"
_AddrInfo = tuple[int, int, int, str, Any]  # (what getaddrinfo gives for one address)
MAX_HEAD_BYTES = 65_536
READ_SIZE = 65_536
# Bytes read at a time of a compressed body: httpx inflates each read whole, and deflate
# inflates up to about 1000 times, so a read of READ_SIZE could become 64 MB at once.
ENCODED_READ_SIZE = 4_096
_HEX = b"0123456789abcdefABCDEF"


class _Unanswered(httpx.RemoteProtocolError):
    """The upstream closed the connection before any byte of an answer."""


class HeadTooLarge(httpx.RemoteProtocolError):
    """The upstream answered, but the head of its answer (status line and headers, and those of
    the interim 1xx answers before it) is over :data:`MAX_HEAD_BYTES`: the rest is not read."""


class MalformedHead(httpx.RemoteProtocolError):
    """The upstream answered, but its answer's head is not one an HTTP/1.1 client can read (not
    HTTP/1.x, a bad status line, an invalid ``Content-Length``, a 101 no request asked for):
    the connection was not lost, and the request had been sent whole."""


class RefusedAddress(httpx.ConnectError):
    """The request's host name resolves (as it connects) to a link-local or cloud metadata
    address its request may not go to (see :data:`CHECK_ADDRESSES`): nothing was connected."""


class _Reader(asyncio.StreamReader):
    """asyncio's stream reader, but a connection lost with an error (the upstream reset it)
    raises that error only once every byte that arrived before it has been read. asyncio's
    raises it at the next read, dropping the bytes it holds: a stream whose upstream sent its
    last events and then reset the connection lost them whenever the event loop saw the reset
    before the gateway had read them (the kernel hands on every byte that came before a
    reset; a reader busy relaying the previous piece was enough)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._lost: Exception | None = None

    def set_exception(self, exc: Exception) -> None:
        self._lost = exc
        self.feed_eof()  # (the bytes held are read as they would be before an end)

    def exception(self) -> Exception | None:
        return self._lost

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        if not data and n and self._lost is not None:
            raise self._lost
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:  # type: ignore[override]
        try:
            return await super().readuntil(separator)
        except asyncio.IncompleteReadError:
            if self._lost is not None:
                raise self._lost from None
            raise


async def _open(host: str, port: int, context: ssl.SSLContext | None,
                addresses: Sequence[_AddrInfo] | None = None
                ) -> tuple[_Reader, asyncio.StreamWriter]:
    """``asyncio.open_connection``, reading with a :class:`_Reader`; to the first of
    ``addresses`` that answers when given (as :func:`checked_addresses` gives them), the TLS
    of ``host`` all the same."""
    loop = asyncio.get_running_loop()
    reader = _Reader(MAX_HEAD_BYTES, loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    server_hostname = host if context else None
    if addresses is None:
        transport, _ = await loop.create_connection(
            lambda: protocol, host, port, ssl=context, server_hostname=server_hostname)
    else:
        sock = await _connected(loop, addresses)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, sock=sock, ssl=context, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


#: How a host name is looked up as a checked connection is made: the event loop's resolver
#: (the system's, in a thread), which a test may stand in for.
Resolve = Callable[[str, int], Awaitable[Sequence[_AddrInfo]]]


async def _loop_resolve(host: str, port: int) -> Sequence[_AddrInfo]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return await asyncio.get_running_loop().getaddrinfo(host, port,
                                                            type=socket.SOCK_STREAM)
    # (an address written as one is its own: asked of no resolver, as create_connection
    # asks none, which spares a thread's round trip)
    if address.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


async def checked_addresses(host: str, port: int, resolve: Resolve = _loop_resolve,
                            nat64: Collection[ipaddress.IPv6Network] = ()) -> list[_AddrInfo]:
    """``host``'s addresses for a connection to ``port``, as ``resolve`` gives them, each
    checked: an address written as one is its own. Raises :class:`RefusedAddress` (without a
    request: the caller's to attach) when any is link-local or a cloud metadata service's
    (one under a NAT64 prefix of ``nat64``, the network's own, judged by the IPv4 address it
    carries), so the name cannot pass by also naming a good one; an :class:`OSError` when
    none is found."""
    found: list[_AddrInfo] = list(await resolve(host, port))
    if not found:
        raise OSError(f"the host name {host} resolved to no address")
    for info in found:
        what = internal_address(str(info[4][0]), nat64)
        if what is not None:
            raise RefusedAddress(rebound_host(host, what))
    return found


async def _connected(loop: asyncio.AbstractEventLoop, addresses: Sequence[_AddrInfo]
                     ) -> socket.socket:
    """A socket connected to the first of ``addresses`` that takes the connection, tried in
    their order as ``create_connection`` tries a name's; its errors as it raises them."""
    errors: list[OSError] = []
    for family, kind, proto, _, where in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, where)
            return sock
        except OSError as exc:
            sock.close()
            errors.append(exc)
        except BaseException:
            sock.close()
            raise
    if len({str(exc) for exc in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


class _Connection:
    __slots__ = ("__weakref__", "addresses", "idle_since", "reader", "rules", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 addresses: tuple[str, ...] = (),
                 rules: tuple[ipaddress.IPv6Network, ...] = ()) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        # A checked connection's: the addresses its host name resolved to when it was checked
        # (the one connected to among them), and the NAT64 prefixes they last passed under.
        self.addresses = addresses
        self.rules = rules

    def passes(self, rules: tuple[ipaddress.IPv6Network, ...]) -> bool:
        """Whether a checked connection may still be used under the NAT64 prefixes ``rules``
        (a reload may list new ones): each address its name resolved to when it was checked
        passes them, as a new connection's must (:func:`checked_addresses`); false when none
        is known."""
        if rules != self.rules:
            if not self.addresses or any(internal_address(a, rules) is not None
                                         for a in self.addresses):
                return False
            self.rules = rules
        return True

    def usable(self) -> bool:
        """Still open, as far as the event loop knows (no system call), and holding no byte
        unread: bytes past an answer's end (a Content-Length shorter than what was sent) or
        sent while idle would be read as the next request's answer, another caller's."""
        return not (self.writer.is_closing() or self.reader.at_eof()
                    or self.reader.exception() is not None
                    or getattr(self.reader, "_buffer", None))  # (asyncio's unread bytes)

    def close(self) -> None:
        self.writer.close()

    def shut_down(self) -> None:
        """End the connection for its upstream (both ways) without closing its socket: safe
        from any thread while its event loop does not run (closing the socket there would free
        its descriptor under that loop's selector); the loop, or the socket's collection,
        closes it later."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # (ended already)
                sock.shutdown(socket.SHUT_RDWR)


def _close_refused(idle: list[_Connection], rules: tuple[ipaddress.IPv6Network, ...]) -> None:
    """Close the connections of ``idle`` (checked ones) that no longer pass under ``rules``,
    and leave the others there."""
    keep = []
    for conn in idle:
        if conn.passes(rules):
            keep.append(conn)
        else:
            conn.close()
    idle[:] = keep


def _other_kind(origin: _Origin) -> _Origin:
    """The same upstream, its connections checked where ``origin``'s are not, or not where
    they are."""
    scheme, host, port, checked = origin
    return scheme, host, port, not checked


def _timeout(request: httpx.Request, name: str) -> float | None:
    value = (request.extensions.get("timeout") or {}).get(name)
    return float(value) if value is not None else None


class _Slots:
    """The connections to one upstream that requests hold at once, checked and not together
    (at most ``size``); ``busy``: how many are held."""

    __slots__ = ("busy", "free")

    def __init__(self, size: int) -> None:
        self.free = asyncio.Semaphore(size)
        self.busy = 0

    def locked(self) -> bool:
        """Whether a request would have to wait for a slot (none is free)."""
        return self.free.locked()

    async def acquire(self) -> None:
        await self.free.acquire()
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        self.free.release()


class PooledTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio, at most ``max_connections`` open per origin (its
    scheme, host and port, the host's spellings as one: ``127.0.0.1``, ``0x7f.1``, a trailing
    dot, :func:`~switchpoint.registration.canonical_host`; connections checked and not, see
    :data:`CHECK_ADDRESSES`, count together: an idle one of one kind is closed to make room for
    a new one of the other), at most ``max_keepalive_connections`` of them kept idle for up to
    ``keepalive_expiry_s``."""

    def __init__(self, *, max_connections: int = 100, max_keepalive_connections: int = 20,
                 keepalive_expiry_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None,
                 resolve: Resolve = _loop_resolve) -> None:
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive_connections
        self.keepalive_expiry_s = keepalive_expiry_s
        self._ssl = ssl_context
        self._resolve = resolve  # (a checked connection's look-up: see CHECK_ADDRESSES)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._slots: dict[_Upstream, _Slots] = {}
        self._closed = False
        # Every connection made, busy or idle, while it lives (see shut_down).
        self._made: weakref.WeakSet[_Connection] = weakref.WeakSet()

    # Connections -------------------------------------------------------------------------------

    def _checkout(self, origin: _Origin, rules: tuple[ipaddress.IPv6Network, ...]
                  ) -> _Connection | None:
        """An idle connection to ``origin`` still usable (open, not expired), checked ones'
        under the request's NAT64 prefixes ``rules``: when they are not the ones the idle
        connections last passed (a reload listed others), each that no longer passes is
        closed (:meth:`_Connection.passes`), so none is used again."""
        idle = self._idle.get(origin)
        checked = origin[3]
        if checked and idle and idle[-1].rules != rules:
            _close_refused(idle, rules)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if (conn.usable() and now - conn.idle_since < self.keepalive_expiry_s
                    and (not checked or conn.passes(rules))):
                return conn
            conn.close()
        return None

    def close_refused(self, rules: tuple[ipaddress.IPv6Network, ...]) -> None:
        """Close the idle checked connections that no longer pass under the NAT64 prefixes
        ``rules`` (a reload listed others: :meth:`_Connection.passes`); on the transport's
        event loop."""
        for origin, idle in self._idle.items():
            if origin[3]:
                _close_refused(idle, rules)

    def close_unchecked(self) -> None:
        """Close the idle connections not checked (see :data:`CHECK_ADDRESSES`): a reload that
        has models checked from now on (``gateway.allow_registered_metadata_hosts`` turned
        off) leaves none open that no check passed, wherever it goes; on the transport's event
        loop. (A checked request never uses one either: the two kinds are kept apart.)"""
        for origin, idle in self._idle.items():
            if not origin[3]:
                while idle:
                    idle.pop().close()

    def _checkin(self, origin: _Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        other = self._idle.get(_other_kind(origin)) or ()
        if (self._closed or len(idle) + len(other) >= self.max_keepalive
                or not conn.usable()):
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def _make_room(self, origin: _Origin) -> None:
        """Before a new connection to ``origin``'s upstream, close the idle ones (the other
        kind's first, the longest idle first) that would leave more than ``max_connections``
        open with it: each request holding a slot has, or is making, one of its own, and a
        connection checked and one not never serve each other's requests."""
        slots = self._slots[origin[:3]]
        for idle in (self._idle.get(_other_kind(origin)), self._idle.get(origin)):
            while idle and slots.busy + self._idle_count(origin) > self.max_connections:
                idle.pop(0).close()

    def _idle_count(self, origin: _Origin) -> int:
        return sum(len(self._idle.get(kind) or ()) for kind in (origin, _other_kind(origin)))

    async def _connect(self, request: httpx.Request, origin: _Origin) -> _Connection:
        scheme, _, port, checked = origin
        host = request.url.host  # (as the request spells it: connected to as it names it)
        self._make_room(origin)
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        rules = request.extensions.get(NAT64_PREFIXES, ())
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                addresses = (await checked_addresses(host, port, self._resolve, rules)
                             if checked else None)
                reader, writer = await _open(host, port, context, addresses)
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except RefusedAddress as exc:
            raise RefusedAddress(str(exc), request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        conn = (_Connection(reader, writer) if addresses is None else
                _Connection(reader, writer, tuple(str(info[4][0]) for info in addresses), rules))
        self._made.add(conn)
        return conn

    # Requests ----------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        note_connecting()
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, canonical_host(url.host), port,
                  request.extensions.get(CHECK_ADDRESSES) is True)
        slots = self._slots.get(origin[:3])
        if slots is None:
            slots = self._slots[origin[:3]] = _Slots(self.max_connections)
        try:
            if slots.locked():  # (a free slot is taken at once: no wait to time)
                async with asyncio.timeout(_timeout(request, "pool")):
                    await slots.acquire()
            else:
                await slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free in the pool", request=request) from None
        conn: _Connection | None = None
        try:
            conn = self._checkout(origin, request.extensions.get(NAT64_PREFIXES, ()))
            pooled = conn is not None
            if conn is None:
                conn = await self._connect(request, origin)
            body = await request.aread()
            head = self._head(request, body)
            try:
                status, reason, headers, framing, persistent = await self._exchange(
                    request, conn, head, body)
            except _Unanswered:
                if not pooled:
                    raise
                # The upstream hung up on a pooled connection before any byte of an answer: as
                # one does that lets an idle connection go just as it is reused (one that read
                # the request answers it, short of a crash). Taken as not sent, and sent again,
                # once, on a fresh connection (a fresh one hung up on is a protocol error).
                conn.close()
                conn = None
                note_unsent()
                conn = await self._connect(request, origin)
                status, reason, headers, framing, persistent = await self._exchange(
                    request, conn, head, body)
        except BaseException:
            if conn is not None:
                conn.close()
            slots.release()
            raise
        keep = framing != "close" and persistent
        encoded = any(k.lower() == b"content-encoding"
                      and v.strip().lower() not in (b"", b"identity") for k, v in headers)
        stream = _Body(self, origin, conn, slots, request, framing, keep,
                       ENCODED_READ_SIZE if encoded else READ_SIZE)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    async def _exchange(self, request: httpx.Request, conn: _Connection, head: bytes,
                        body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], Any, bool]:
        """Send the request on ``conn`` and read the answer's head (see :meth:`_read_head`)."""
        note_sent()  # (from here the bytes may reach the upstream, even if cancelled)
        try:
            async with asyncio.timeout(_timeout(request, "write")):
                conn.writer.write(head + body if len(body) < 65_536 else head)
                if len(body) >= 65_536:
                    conn.writer.write(body)
                await conn.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        return await self._read_head(request, conn)

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        target = request.url.raw_path or b"/"
        lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
        has_length = False
        for name, value in request.headers.raw:
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
            if lower == b"transfer-encoding":
                continue  # the body is always sent whole, with its length
            lines.append(name + b": " + value)
        if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _read_head(self, request: httpx.Request, conn: _Connection) -> tuple[
            int, bytes, list[tuple[bytes, bytes]], Any, bool]:
        """Status, reason, headers, framing, and whether the connection may serve another
        request (HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with ``keep-alive``)."""
        raw = b""  # (the last head read: an interim one, when the upstream hangs up after it)
        heads = 0  # (bytes of the heads read, interim ones too: they share MAX_HEAD_BYTES)
        try:
            async with asyncio.timeout(_timeout(request, "read")):
                while True:
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
                    heads += len(raw)
                    if heads > MAX_HEAD_BYTES:  # (interim answers without end, one after another)
                        raise HeadTooLarge(f"the response's interim answers are over the limit "
                                           f"of {MAX_HEAD_BYTES} bytes", request=request)
                    status, reason, headers = _parse_head(raw, request)
                    http10 = raw.startswith(b"HTTP/1.0 ")
                    if status == 101:  # (no request here asks to switch protocols)
                        raise MalformedHead(
                            "the upstream answered 101 Switching Protocols, which no request "
                            "asked for", request=request)
                    if not 100 <= status < 200:
                        break  # skip interim 1xx answers
        except TimeoutError:
            raise httpx.ReadTimeout("timed out waiting for the response",
                                    request=request) from None
        except asyncio.IncompleteReadError as exc:
            error = (_Unanswered if not exc.partial and not raw
                     else httpx.RemoteProtocolError)
            raise error("Server disconnected without sending a response.",
                        request=request) from None
        except asyncio.LimitOverrunError:
            raise HeadTooLarge(f"the response head is over the limit of {MAX_HEAD_BYTES} bytes",
                               request=request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        framing: Any
        chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower()
                      for k, v in headers)
        # Each Content-Length, a list's items each: they must agree (RFC 9112 6.3), else which
        # one frames the body is a guess another reader of the connection may not share.
        lengths = {item.strip() for k, v in headers if k.lower() == b"content-length"
                   for item in v.split(b",")}
        if request.method == "HEAD" or status in (204, 304):
            framing = 0
        elif chunked:
            framing = "chunked"
        elif lengths:
            if len(lengths) > 1:
                raise MalformedHead("Content-Length given more than once, differing",
                                    request=request)
            value = lengths.pop()
            if not value.isdigit():  # (int() would take "-5", "+5" and "1_0")
                raise MalformedHead("invalid Content-Length", request=request)
            framing = int(value)
        else:
            framing = "close"
        connection = b",".join(v.lower() for k, v in headers if k.lower() == b"connection")
        tokens = {t.strip() for t in connection.split(b",")}
        persistent = b"keep-alive" in tokens if http10 else b"close" not in tokens
        if chunked and lengths:  # (framed two ways: the connection is not used again)
            persistent = False
        return status, reason, headers, framing, persistent

    def shut_down(self) -> None:
        """End every connection still open, busy or idle, for its upstream (see
        :meth:`_Connection.shut_down`), from any thread while the transport's event loop does
        not run (stopped, not closed): a request under way there, which nothing will read on,
        lets its upstream go now (a provider stops generating an answer once its connection
        ends), where its socket stayed open until the loop ran again or was collected. A read
        there, should the loop run again, finds the connection ended."""
        for conn in list(self._made):
            if not conn.writer.is_closing():
                conn.shut_down()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _shown(line: bytes) -> str:
    """A line of an upstream's head as an error quotes it: its first 80 bytes, each byte one
    character (Latin-1, so none fails to decode), quoted as JSON writes them."""
    return json_quoted(line[:80].decode("latin-1"), 80)


def _parse_head(raw: bytes, request: httpx.Request) -> tuple[int, bytes, list[tuple[bytes,
                                                                                     bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise MalformedHead(f"not an HTTP/1.1 response: {_shown(lines[0])}", request=request)
    try:
        status = int(parts[1])
    except ValueError:
        raise MalformedHead(f"bad status line: {_shown(lines[0])}", request=request) from None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return status, parts[2] if len(parts) > 2 else b"", headers


class _Body(httpx.AsyncByteStream):
    """A response body read as it arrives; the connection goes back to the pool once the body
    has been read to its end, and is closed if the reader stops early. It is read
    ``read_size`` bytes at a time at most."""

    def __init__(self, transport: PooledTransport, origin: _Origin, conn: _Connection,
                 slots: _Slots, request: httpx.Request, framing: Any,
                 keep: bool, read_size: int = READ_SIZE) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Connection | None = conn
        self._slots = slots
        self._request = request
        self._framing = framing
        self._keep = keep
        self._read_s = _timeout(request, "read")
        self._read_size = read_size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        request = self._request
        reader = conn.reader
        try:
            if self._framing == "chunked":
                async for data in self._chunked(reader):
                    yield data
            elif self._framing == "close":
                self._keep = False
                while True:
                    data = await self._read(reader.read(self._read_size))
                    if not data:
                        break
                    yield data
            else:
                remaining = int(self._framing)
                while remaining > 0:
                    data = await self._read(reader.read(min(self._read_size, remaining)))
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body",
                            request=request)
                    remaining -= len(data)
                    yield data
        except BaseException:
            self._finish(reusable=False)
            raise
        self._finish(reusable=self._keep)

    async def _chunked(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        """The payload of a chunked body. Each read takes whatever has arrived (at most the
        read size), and all the chunk data in it is handed on as one piece: a burst of small
        chunks, as a stream's events come, is one piece and one read, not two reads per chunk.
        A chunk is never held whole: its declared size is the upstream's word and may be
        anything, so what has arrived of it is handed on as it comes. The framing is checked:
        a size is hex digits, a chunk ends where its size says, a size line and the trailers
        are at most :data:`MAX_HEAD_BYTES`, and bytes past the body's end close the connection
        rather than being read as the next answer."""
        request = self._request
        buf = b""
        pos = 0
        remaining = -1  # bytes of the current chunk still to come; -1: its size line is next
        trailers = -1  # bytes of trailers read so far; -1: not in the trailers yet
        while True:
            out: list[bytes] = []
            while True:
                if remaining > 0:
                    take = buf[pos:pos + remaining]
                    if not take:
                        break
                    out.append(take)
                    pos += len(take)
                    remaining -= len(take)
                    continue
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD_BYTES:
                        raise httpx.RemoteProtocolError("a chunk's size line is too large",
                                                        request=request)
                    break
                line, pos = buf[pos:end], end + 2
                if trailers >= 0:
                    if not line:  # the blank line after the trailers ends the body
                        if out:
                            yield b"".join(out)
                        self._keep = self._keep and pos == len(buf)
                        return
                    trailers += len(line) + 2
                    if trailers > MAX_HEAD_BYTES:
                        raise httpx.RemoteProtocolError(
                            "the trailers after the body are too large", request=request)
                elif remaining == 0:
                    remaining = -1  # the CRLF that closes a chunk's data
                    if line:
                        raise httpx.RemoteProtocolError("a chunk does not end where its size "
                                                        "says", request=request)
                else:
                    digits = line.split(b";", 1)[0].strip()
                    if not digits or digits.strip(_HEX):
                        raise httpx.RemoteProtocolError("malformed chunk size",
                                                        request=request)
                    remaining = int(digits, 16)
                    if remaining == 0:
                        trailers = 0
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
            data = await self._read(reader.read(self._read_size))
            if not data:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body",
                    request=request)
            buf = buf[pos:] + data
            pos = 0

    async def _read(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._read_s):
                return await awaitable
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the response",
                                    request=self._request) from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body",
                request=self._request) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("a chunk header is too large",
                                            request=self._request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__,
                                  request=self._request) from exc

    def _finish(self, *, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if reusable:
            self._transport._checkin(self._origin, conn)
        else:
            conn.close()
        self._slots.release()

    async def aclose(self) -> None:
        self._finish(reusable=False)  # a no-op once the body was read to its end
