"""HTTP plumbing shared by the provider adapters: pooled clients, timeouts, error mapping, and
the streaming loop that waits for the first content chunk before yielding anything.

What an upstream sends is bounded before it is held: an answer by ``max_response_bytes``, a
plain one, whose JSON is read at once, by ``max_plain_answer_bytes`` too (an error body by
:data:`~switchpoint.gateway.providers.base.ERROR_BODY_READ`, the rest unread), a stream line by
``max_sse_line_bytes`` (:func:`bounded_lines`); a compressed answer is only ever in a coding
the transport inflates a bounded read at a time (:data:`ACCEPT_ENCODING`), whose lines are
read a piece at a time, the event loop handed back every few milliseconds
(:data:`HAND_BACK_S`); JSON longer than :data:`OFF_LOOP_BYTES` (an answer, a stream's event)
is read on a worker thread (:func:`read_off_loop`), the loop serving other requests meanwhile;
and the credentials a request carried are redacted from whatever the upstream said about it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.cookiejar
import ipaddress
import re
import time
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import httpx

from switchpoint._messages import cut, json_quoted
from switchpoint._process import ProcessThreads
from switchpoint._redact import header_secrets, redact, redact_value
from switchpoint.errors import (
    ConnectError,
    FirstTokenTimeout,
    MalformedResponse,
    ProviderError,
    ReadTimeout,
    ResponseTooLarge,
    ServerError,
    StreamBroken,
    UnaskedCoding,
    UnreadableHead,
)
from switchpoint.gateway.providers._transport import (
    CHECK_ADDRESSES,
    MAX_HEAD_BYTES,
    NAT64_PREFIXES,
    HeadTooLarge,
    MalformedHead,
    PooledTransport,
    RefusedAddress,
)
from switchpoint.gateway.providers.base import (
    ERROR_BODY_READ,
    FinishedChoices,
    ReportedSoFar,
    Timeouts,
    TokenUsage,
    answer_bytes,
    classify_status,
    classify_stream_error,
    decode_body,
    is_content_chunk,
    upstream_json,
    usage_of,
)
from switchpoint.gateway.providers.sending import note_stream
from switchpoint.gateway.providers.sse import SSEEvent, sse_event_batches
from switchpoint.gateway.via import forwarded_via, received_via
from switchpoint.registration import canonical_host

# The codings upstreams are asked for: those the transport inflates a small read at a time
# (:data:`~switchpoint.gateway.providers._transport.ENCODED_READ_SIZE`), so an answer's size
# limit holds before much is inflated. httpx would also offer ``br`` and ``zstd`` whenever
# brotli or zstandard are installed beside it, and inflate those without our bound.
ACCEPT_ENCODING = "gzip, identity"
_CODINGS = frozenset({"gzip"})

_Read = TypeVar("_Read")
_Text = TypeVar("_Text")


_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=4096)  # (the base URLs of the catalogs served: a few)
def _upstream(base_url: str) -> tuple[str, str, int | None]:
    """The upstream ``base_url`` names: its scheme, host (each spelling of it as one:
    :func:`~switchpoint.registration.canonical_host`) and port (None: the scheme's own)."""
    url = urllib.parse.urlsplit(base_url)
    scheme, port = url.scheme.lower(), url.port
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, canonical_host(url.hostname or ""), port


class ClientPool:
    """One pooled ``httpx.AsyncClient`` per upstream (scheme, host and port), shared by every
    provider and every base URL there (``/v1``, ``/openai/v1``), so that
    ``max_connections`` bounds the connections to the upstream, whatever path each model's
    base URL gives and however it spells the host (``127.0.0.1``, ``0x7f.1``, ``[::1]``,
    ``[0:0::1]``, a trailing dot: :func:`~switchpoint.registration.canonical_host`).

    Own one per application (open it in the app's lifespan, ``await pool.aclose()`` on
    shutdown). Connections belong to an event loop, so each loop that uses the pool gets its
    own clients (the in-process gateway's sync methods run on a loop of their own). A loop's
    clients are closed on it as it ends: ``asyncio.run`` (and ``asyncio.Runner``,
    ``anyio.run``) closes a loop's async generators just before closing the loop, and the pool
    holds one there, started, whose closing closes them. Those of a loop closed some other way
    (``loop.close()`` alone) are dropped when a new one is made. Each client runs on a
    :class:`PooledTransport` (lean keep-alive HTTP/1.1; see
    there why not httpcore's pool); ``transport`` replaces it, for tests (an
    ``httpx.MockTransport``, say).
    """

    def __init__(self, *, max_connections: int = 100, max_keepalive_connections: int = 20,
                 keepalive_expiry_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 via: str | None = None) -> None:
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_keepalive_connections,
                                    keepalive_expiry=keepalive_expiry_s)
        self._transport = transport
        # (the Via header every upstream request carries, naming the gateway that sends it, so
        # a service its own model's base_url points back at can tell the loop: :func:`via`)
        self._headers = {"via": via} if via else None
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        # (each with its transport, when it is the pool's own: see close_refused)
        self._clients: dict[tuple[int, tuple[str, str, int | None]],
                            tuple[asyncio.AbstractEventLoop, httpx.AsyncClient,
                                  PooledTransport | None]] = {}
        # For each loop with clients here: the generator whose closing closes them.
        self._watches: dict[int, tuple[asyncio.AbstractEventLoop,
                                       AsyncGenerator[None, None]]] = {}

    def get(self, base_url: str) -> httpx.AsyncClient:
        """The client for ``base_url``'s upstream on the running event loop (created on first
        use)."""
        loop = asyncio.get_running_loop()
        key = (id(loop), _upstream(base_url))
        entry = self._clients.get(key)
        client = entry[1] if entry is not None and entry[0] is loop else None
        if client is None or client.is_closed:
            self._forget_closed_loops()
            own = None if self._transport is not None else PooledTransport(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_keepalive,
                keepalive_expiry_s=self._keepalive_expiry_s)
            client = _CookielessClient(limits=self._limits, transport=self._transport or own,
                                       follow_redirects=False, trust_env=False,
                                       headers=self._headers)
            self._clients[key] = (loop, client, own)
            self._watch(loop)
        return client

    def __len__(self) -> int:
        return len(self._clients)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Have ``loop``'s clients closed on it as it ends (see the class), once per loop."""
        held = self._watches.get(id(loop))
        if held is not None and held[0] is loop:
            return
        watch = self._until_loop_ends(loop)
        with contextlib.suppress(StopIteration):  # run to its yield now: the loop knows of it
            watch.asend(None).send(None)
        self._watches[id(loop)] = (loop, watch)

    async def _until_loop_ends(self, loop: asyncio.AbstractEventLoop
                               ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            held = self._watches.get(id(loop))
            if held is not None and held[0] is loop:
                del self._watches[id(loop)]
            if not loop.is_closed():
                await self._close_clients_of(loop)

    async def _close_clients_of(self, loop: asyncio.AbstractEventLoop) -> None:
        for key in [k for k, (owner, _, _) in self._clients.items() if owner is loop]:
            _, client, _ = self._clients.pop(key)
            await client.aclose()

    def _forget_closed_loops(self) -> None:
        """Drop the clients of event loops that closed without closing them (a loop closed
        with ``loop.close()`` alone), so they and their connections are freed: they cannot be
        used again, nor closed on their loop."""
        for key in [k for k, (owner, _, _) in self._clients.items() if owner.is_closed()]:
            del self._clients[key]
        for loop_id, (owner, watch) in list(self._watches.items()):
            if owner.is_closed():
                del self._watches[loop_id]
                with contextlib.suppress(StopIteration):  # ended here: its loop cannot run it
                    watch.aclose().send(None)

    def close_refused(self, rules: tuple[ipaddress.IPv6Network, ...]) -> None:
        """Have the idle connections of every loop's clients that the NAT64 prefixes ``rules``
        now refuse closed (a reload that lists others; see
        :meth:`PooledTransport.close_refused`), each on its own loop: callable from any
        thread. A request made before its loop gets to it would not use one either."""
        for loop, _, transport in list(self._clients.values()):
            if transport is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # (a loop closed meanwhile)
                    loop.call_soon_threadsafe(transport.close_refused, rules)

    def close_unchecked(self) -> None:
        """Have the idle connections not checked of every loop's clients closed (a reload that
        has models checked from now on; see :meth:`PooledTransport.close_unchecked`), each on
        its own loop: callable from any thread."""
        for loop, _, transport in list(self._clients.values()):
            if transport is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # (a loop closed meanwhile)
                    loop.call_soon_threadsafe(transport.close_unchecked)

    def shut_down(self, loops: Collection[asyncio.AbstractEventLoop]) -> None:
        """End the connections of the clients of ``loops``, event loops that do not run
        (stopped or closed) whose requests are given up, for their upstreams, from any thread
        (see :meth:`PooledTransport.shut_down`): their sockets are closed later, on their loop
        or as they are collected."""
        for loop, _, transport in list(self._clients.values()):
            if transport is not None and loop in loops and not loop.is_running():
                transport.shut_down()

    async def aclose(self) -> None:
        """Close the clients of the running loop; forget those of loops that are closed."""
        loop = asyncio.get_running_loop()
        held = self._watches.get(id(loop))
        if held is not None and held[0] is loop:
            await held[1].aclose()  # (closes them)
        await self._close_clients_of(loop)
        self._forget_closed_loops()


class _NoCookies(httpx.Cookies):
    """Cookies that stay none: an answer's ``Set-Cookie`` is not read at all (httpx reads
    every answer's through urllib's cookie machinery, a request object and a header copy
    each, only for a jar of no domain to drop it), and the jar keeps none besides."""

    def __init__(self) -> None:
        super().__init__(http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(
            allowed_domains=[])))

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep none of ``response``'s cookies (see the class)."""

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        """Keep no cookie."""


class _CookielessClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that keeps no cookie. One client serves every caller of an
    upstream, so a cookie one answer set would ride along on the next request, whoever's it
    is: its cookies are :class:`_NoCookies`, which no answer and no assignment fills."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        """Keep none of ``cookies`` (see the class)."""


def httpx_timeout(timeouts: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(connect=timeouts.connect_s, read=timeouts.read_s,
                         write=timeouts.write_s, pool=timeouts.pool_s)


def map_transport_error(exc: httpx.HTTPError, *, model: str, timeouts: Timeouts,
                        started: bool = False) -> ProviderError:
    """The :class:`ProviderError` for an httpx exception.

    ``started`` means response bytes had been received, so a failure now breaks a stream.
    """
    name = type(exc).__name__
    detail = redact(str(exc))  # a protocol error may quote what the upstream sent
    if started:
        return StreamBroken(f"the stream failed part-way ({name}: {detail or 'no detail'})",
                            model=model)
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectError(f"connect timed out after {timeouts.connect_s:g}s", model=model)
    if isinstance(exc, httpx.PoolTimeout):
        return ConnectError(f"no pooled connection free within {timeouts.pool_s:g}s",
                            model=model)
    if isinstance(exc, httpx.ReadTimeout):
        return ReadTimeout(f"no response within the read timeout of {timeouts.read_s:g}s",
                           model=model)
    if isinstance(exc, httpx.WriteTimeout):
        return ReadTimeout(f"sending the request timed out after {timeouts.write_s:g}s",
                           model=model, generated=False)
    if isinstance(exc, RefusedAddress):  # (nothing connected: its words are the gateway's)
        return ConnectError(detail, model=model)
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(f"could not connect ({detail or name})", model=model)
    if isinstance(exc, HeadTooLarge):
        # The upstream answered: the connection was not lost. Its answer is not read.
        return ResponseTooLarge(f"the upstream answered with a head (status line and headers) "
                                f"over the limit of {MAX_HEAD_BYTES} bytes; the answer was "
                                "not read", model=model)
    if isinstance(exc, MalformedHead):
        # The upstream answered, malformed: the connection was not lost. The request had been
        # sent whole, so the upstream may have been generating its answer.
        return UnreadableHead(f"the upstream answered malformed ({detail}); the answer was "
                              "not read", model=model, generated=True)
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        # Reading the response's head failed: the request had been sent whole (a failure to
        # send it is a WriteError), so the upstream may have been generating its answer.
        return ConnectError(f"the connection was lost after the request was sent, before a "
                            f"response ({name}: {detail or 'no detail'})", model=model,
                            generated=True)
    if isinstance(exc, httpx.WriteError):
        return ConnectError(f"the connection failed before the request was sent ({name}: "
                            f"{detail or 'no detail'})", model=model)
    if isinstance(exc, httpx.NetworkError):
        return ConnectError(f"the connection failed ({name}: {detail or 'no detail'})",
                            model=model)
    return ServerError(f"transport error ({name}: {detail or 'no detail'})", model=model)


@functools.lru_cache(maxsize=256)
def _parsed_url(url: str) -> httpx.URL:
    """``url`` as httpx reads it, read once: a request's URL is its model's (the catalog's
    base URL and the API's path), and reading one anew (httpx's parser, its checks of each
    part) cost more than any other part of building the request. A URL httpx refuses raises
    each time (a raise is not remembered). An ``httpx.URL`` does not change, so one serves
    every request to it."""
    return httpx.URL(url)


def _request(client: httpx.AsyncClient, url: str, body: Mapping[str, Any],
             headers: Mapping[str, str], timeouts: Timeouts) -> httpx.Request:
    """The POST of ``body`` to ``url``, asking for no coding but :data:`ACCEPT_ENCODING`; its
    connections' addresses checked unless ``timeouts.metadata_hosts`` (see
    :data:`~switchpoint.gateway.providers._transport.CHECK_ADDRESSES`)."""
    request = client.build_request("POST", _parsed_url(url), json=body, headers=dict(headers),
                                   timeout=httpx_timeout(timeouts))
    request.headers["Accept-Encoding"] = ACCEPT_ENCODING
    received = received_via()
    if received:  # (a request the gateway forwards: the Via it came with, then its own)
        request.headers["via"] = forwarded_via(received, request.headers.get("via"))
    if not timeouts.metadata_hosts:
        request.extensions[CHECK_ADDRESSES] = True
        if timeouts.nat64_prefixes:
            request.extensions[NAT64_PREFIXES] = timeouts.nat64_prefixes
    return request


def unasked_coding(response: httpx.Response) -> str | None:
    """The ``Content-Encoding`` of ``response`` when it is not one the gateway asked for (one
    of :data:`ACCEPT_ENCODING`, applied once), else ``None``. Such a body is not read: httpx
    would decode it unbounded (``br``, ``zstd`` with their packages installed; ``gzip`` twice
    over inflates a million-fold) or hand on its bytes as if plain."""
    codings = [c.strip().lower()
               for c in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings or (len(codings) == 1 and codings[0] in _CODINGS):
        return None
    return ", ".join(codings)


async def _refuse_coding(response: httpx.Response, coding: str, *, model: str) -> ProviderError:
    """The failure for an answer in ``coding`` (see :func:`unasked_coding`); its body is left
    unread. An error status is still classified by its status (without its body)."""
    await response.aclose()
    if response.status_code >= 300:
        return classify_status(response.status_code, None, response.headers, model=model)
    return UnaskedCoding(f"the answer is in Content-Encoding {json_quoted(coding, 80)}, which the "
                         f"gateway did not ask for (it asks for {ACCEPT_ENCODING}) and does "
                         "not decode", model=model, status=response.status_code)


async def post_json(client: httpx.AsyncClient, url: str, body: Mapping[str, Any],
                    headers: Mapping[str, str], timeouts: Timeouts, *, model: str,
                    answer: Callable[[dict[str, Any], int], _Read]
                    ) -> tuple[_Read, httpx.Response, float]:
    """POST JSON and return what ``answer`` makes of the decoded 2xx body and the status (the
    adapter's answer, its checks raising), the response and the latency in ms. The body is
    read and ``answer`` called together, on a worker thread for a large body
    (:func:`read_off_loop`).

    Raises the classified :class:`ProviderError` for transport failures, error statuses,
    redirects (never followed: whatever their body says is not an answer) and a 2xx that is not
    a JSON object.
    """
    started = time.perf_counter()
    secrets = header_secrets(headers)
    request = _request(client, url, body, headers, timeouts)
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise map_transport_error(exc, model=model, timeouts=timeouts) from exc
    coding = unasked_coding(response)
    if coding is not None:
        raise await _refuse_coding(response, coding, model=model)
    failed = response.status_code >= 300  # a redirect is not followed
    limit, setting = (ERROR_BODY_READ, "") if failed else timeouts.plain_answer_limit
    try:
        raw = await read_capped(response, limit, model=model, truncate=failed, setting=setting)
    except httpx.ReadTimeout as exc:
        raise ReadTimeout(f"the answer's body stalled for {timeouts.read_s:g}s after its "
                          f"headers", model=model, status=response.status_code,
                          generated=not failed) from exc
    except httpx.HTTPError as exc:
        raise MalformedResponse(f"the answer was cut off part-way ({type(exc).__name__})",
                                model=model, status=response.status_code,
                                generated=not failed) from exc
    finally:
        await response.aclose()
    latency_ms = (time.perf_counter() - started) * 1000.0
    if failed:
        raise classify_status(response.status_code, decode_body(raw, secrets),
                              response.headers, model=model)
    read = await read_off_loop(len(raw), functools.partial(
        _answer_of, secrets=secrets, status=response.status_code, model=model, answer=answer),
        raw)
    return read, response, latency_ms


def _answer_of(raw: bytes, *, secrets: Sequence[str], status: int, model: str,
               answer: Callable[[dict[str, Any], int], _Read]) -> _Read:
    """What ``answer`` makes of the JSON object a ``status`` answer's body ``raw`` holds; a
    :class:`MalformedResponse` saying so when it holds none, carrying the body redacted."""
    try:
        data = upstream_json(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedResponse(f"the {status} answer is not JSON we can relay "
                                f"({cut(str(exc), 200)})", model=model, status=status,
                                body=decode_body(raw, secrets)) from exc
    if not isinstance(data, dict):
        raise MalformedResponse("the answer is not a JSON object", model=model,
                                status=status, body=redact_value(data, secrets))
    return answer(data, status)


async def read_capped(response: httpx.Response, limit: int, *, model: str,
                      truncate: bool = False, chunks: AsyncIterator[bytes] | None = None,
                      setting: str = "gateway.max_response_bytes") -> bytes:
    """The response body, at most ``limit`` bytes: with ``truncate`` the first ``limit`` bytes
    (the rest is not read), else :class:`ResponseTooLarge` naming ``setting`` past it (before
    reading any of it when the declared length is already over). ``chunks``: the body, when
    part of it was read already (see :func:`_opening`). A compressed body is counted as it
    is inflated, the event loop handed back as a stream's lines hand it back (:func:`_paced`):
    a plain answer inflating to megabytes held it until it was whole."""
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"the answer is {int(declared)} bytes, over the limit of {limit} "
                               f"({setting})", model=model, status=response.status_code)
    body = bytearray()
    async for chunk in _paced(chunks if chunks is not None else response.aiter_bytes()):
        body += chunk
        if len(body) > limit:
            if truncate:
                del body[limit:]
                break
            raise ResponseTooLarge(f"the answer is over the limit of {limit} bytes ({setting})",
                                   model=model, status=response.status_code)
    return bytes(body)


async def bounded_lines(chunks: AsyncIterator[bytes], limit: int, *,
                        model: str, total: int | None = None) -> AsyncIterator[str]:
    """The lines of an event-stream body (``\n``, ``\r\n`` or ``\r`` ended, ends stripped),
    none longer than ``limit`` bytes: a longer one raises :class:`ResponseTooLarge` once
    ``limit`` bytes of it are buffered, whatever the upstream sends after; so does a body
    past ``total`` bytes in all. Each byte is looked at once, however finely the upstream
    splits its body (a line sent a byte at a time costs no more than one sent whole)."""
    batches = bounded_line_batches(chunks, limit, model=model, total=total)
    async with contextlib.aclosing(batches):
        async for lines in batches:
            for line in lines:
                yield line


async def bounded_line_batches(chunks: AsyncIterator[bytes], limit: int, *, model: str,
                               total: int | None = None
                               ) -> AsyncGenerator[list[str], None]:
    """:func:`bounded_lines` a list at a time: the lines each piece of the body ends (none
    when it ends none), so that a stream's events go on a read at a time, not a line at a
    time. What is over a bound raises once the lines before it have been handed on."""
    pending = b""
    unended = bytearray()  # a line still without its end, when it spans many reads
    received = 0
    async for chunk in _paced(chunks):
        if not chunk:
            continue
        received += len(chunk)
        if total is not None and received > total:
            raise ResponseTooLarge(f"the stream is over the limit of {total} bytes "
                                   "(gateway.max_response_bytes)", model=model)
        if b"\n" not in chunk and b"\r" not in chunk and not pending.endswith(b"\r"):
            # Still the same line: appended, not split again (each byte is looked at once).
            unended += chunk
            if len(pending) + len(unended) > limit:
                raise _line_too_large(limit, model)
            continue
        if unended:
            pending, unended = pending + unended, bytearray()
        lines = (pending + chunk).splitlines(keepends=True)
        last = lines[-1]
        # An unended line, or one ending in \r (maybe half of \r\n), waits for more bytes.
        pending = lines.pop() if not last.endswith(b"\n") else b""
        ended: list[str] = []
        error: ResponseTooLarge | None = None
        for line in lines:
            line = line.rstrip(b"\r\n")
            if len(line) > limit:
                error = _line_too_large(limit, model)
                break
            ended.append(line.decode("utf-8", "replace"))
        else:
            if len(pending) > limit:
                error = _line_too_large(limit, model)
        if ended:
            yield ended
        if error is not None:
            raise error
    pending += unended
    if pending:
        yield [pending.rstrip(b"\r\n").decode("utf-8", "replace")]


# A body's bytes are made into lines (or gathered, a plain one's) at most LINE_PIECE_BYTES at a
# time, and reading them keeps the event loop at most about HAND_BACK_S before handing it
# back: a compressed body inflates a thousandfold (a 4 KB read, 4 MB of blank lines or
# comments) and a body that has already arrived is read without waiting, so one stream's lines
# held the loop, every other request of the service waiting (its deadline too), for as long as
# they took to read.
LINE_PIECE_BYTES = 16_384
HAND_BACK_S = 0.005

#: JSON longer than this (bytes, or characters of an event's data) is read on a worker thread,
#: not on the event loop (:func:`read_off_loop`): it keeps the loop about as long as
#: :data:`HAND_BACK_S` at most, as a stream's lines do (64 KB of the densest JSON, empty
#: objects, reads in some 5 ms; a plain answer of 4 MiB of them held every other request of
#: the service for 0.3 to 1 s). Nearly every answer and event is shorter, read at once, as
#: ever. An answer's JSON longer than this is written for the client off the loop too
#: (:mod:`switchpoint.gateway.rendering`).
OFF_LOOP_BYTES = 65_536
#: The threads reading it: at most two at once, the others waiting their turn (more would only
#: share the cores, and the GIL with the event loop).
_READERS = ProcessThreads(2, "switchpoint-json")


async def read_off_loop(size: int, read: Callable[[_Text], _Read], text: _Text) -> _Read:
    """``read(text)`` (which raises as it does), ``text`` being ``size`` long: on a worker
    thread when that is over :data:`OFF_LOOP_BYTES`, the event loop free meanwhile, else at
    once. Cancelled, it is not waited for (what it would read is dropped)."""
    if size <= OFF_LOOP_BYTES:
        return read(text)
    return await on_worker(read, text)


async def on_worker(work: Callable[[_Text], _Read], value: _Text) -> _Read:
    """``work(value)`` on a worker thread (of the two that read large JSON), the event loop free
    meanwhile. Cancelled, it is not waited for (what it makes is dropped)."""
    return await asyncio.get_running_loop().run_in_executor(_READERS.get(), work, value)


async def _paced(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` in pieces of at most :data:`LINE_PIECE_BYTES`, the event loop handed back
    (``asyncio.sleep(0)``) before a piece once :data:`HAND_BACK_S` went by since it last was,
    whoever kept it (the lines' reader, the chunks' consumer)."""
    handed_back = time.perf_counter()
    async for chunk in chunks:
        for start in range(0, len(chunk), LINE_PIECE_BYTES):
            if time.perf_counter() - handed_back > HAND_BACK_S:
                await asyncio.sleep(0)
                handed_back = time.perf_counter()
            yield (chunk if len(chunk) <= LINE_PIECE_BYTES
                   else chunk[start:start + LINE_PIECE_BYTES])


def _line_too_large(limit: int, model: str) -> ResponseTooLarge:
    return ResponseTooLarge(f"a line of the stream is over the limit of {limit} bytes "
                            "(gateway.max_sse_line_bytes)", model=model)


async def _noting_stray(batches: AsyncIterator[list[str]],
                        noted: list[str]) -> AsyncIterator[list[str]]:
    """The lines of a body (a list at a time) passed on as they are, noting in ``noted`` the
    first :data:`~switchpoint.gateway.providers.base.ERROR_BODY_READ` characters of those that
    are not event-stream fields (an upstream that answered a stream with JSON or a web page)."""
    room = ERROR_BODY_READ
    async for lines in batches:
        if room > 0:
            for line in lines:
                if room > 0 and line and not line.startswith("data:") \
                        and not _FIELD.match(line):
                    noted.append(line[:room])
                    room -= len(line) + 1
        yield lines


_FIELD = re.compile(r"(data|event|id|retry)?(:|\Z)")


def _not_events(response: httpx.Response, text: str, secrets: Sequence[str],
                model: str) -> ProviderError:
    """The error for a stream whose body held no events, only ``text``: the upstream's error
    when it is one (some answer a stream's failure with a 200 and a JSON error), else a
    malformed answer naming what came instead."""
    body = decode_body(text.encode(), secrets)
    if isinstance(body, Mapping) and body.get("error"):
        return classify_stream_error(body, model=model, whole=True)
    kind = response.headers.get("content-type") or "no content-type"
    return MalformedResponse(f"the {response.status_code} answer to a stream is not an event "
                             f"stream ({cut(kind, 80)}): {json_quoted(redact_value(body), 200)}",
                             model=model, status=response.status_code, body=body)


def _is_json(response: httpx.Response) -> bool:
    """Is ``response`` labelled as JSON (``application/json``, or a ``+json`` type)?"""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/")
                                          and kind.endswith("+json"))


async def _opening(chunks: AsyncIterator[bytes], limit: int
                   ) -> tuple[bytes, AsyncIterator[bytes]]:
    """The opening of a body: its bytes up to the first that is not whitespace (or its end,
    or ``limit`` bytes of whitespace), and the whole body again, those bytes first."""
    head = b""
    while not head.lstrip() and len(head) <= limit:
        chunk = await anext(chunks, None)
        if chunk is None:
            break
        head += chunk

    async def again() -> AsyncIterator[bytes]:
        if head:
            yield head
        async for chunk in chunks:
            yield chunk

    return head, again()


async def _whole_answer(response: httpx.Response, reading: AsyncIterator[bytes],
                        timeouts: Timeouts, decoder: ChunkDecoder, secrets: Sequence[str],
                        model: str) -> list[dict[str, Any]]:
    """The chunks of the whole JSON answer ``response`` holds (``reading``, read to at most
    :attr:`Timeouts.plain_answer_limit` bytes, as a plain answer is), or the error for a JSON
    body that is not one: the upstream's error when it is one, else a malformed answer naming
    what came instead."""
    limit, setting = timeouts.plain_answer_limit
    raw = await read_capped(response, limit, model=model, chunks=reading, setting=setting)
    chunks = await read_off_loop(len(raw), functools.partial(_whole_chunks, decoder=decoder),
                                 raw)
    if not any(is_content_chunk(chunk) for chunk in chunks):
        raise _not_events(response, raw[:ERROR_BODY_READ].decode("utf-8", "replace"),
                          secrets, model)
    return chunks


def _whole_chunks(raw: bytes, *, decoder: ChunkDecoder) -> list[dict[str, Any]]:
    """The chunks ``decoder`` makes of the whole answer ``raw`` (:meth:`ChunkDecoder.whole`);
    none when it is no JSON object, or an upstream's error."""
    try:
        body = upstream_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    return decoder.whole(body) if isinstance(body, Mapping) and not body.get("error") else []


#: How long a stream whose answer is whole (every choice finished, then the usage chunk that
#: comes last, when one was asked for) waits for its end marker (at most the read timeout):
#: past it, the answer is passed on whole, where waiting out the read timeout failed it as
#: broken.
END_MARKER_WAIT_S = 1.0


def _is_final_usage(chunk: Mapping[str, Any]) -> bool:
    """Is ``chunk`` the usage chunk an OpenAI stream ends with (``stream_options.
    include_usage``): no choice, the usage of the whole answer? Only its end marker follows."""
    return not chunk.get("choices") and usage_of(chunk) is not None


def _usage_follows(body: Mapping[str, Any]) -> bool:
    """Does the stream ``body`` asks for end with a usage chunk after every choice finished
    (``stream_options.include_usage``)? An OpenAI-compatible model not asked for it
    (``stream_usage: false``) ends with its last finish; the Messages API's usage comes with
    its stop reason (``message_delta``), the decoder's usage chunk beside the finish."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


class WholeAnswer:
    """Whether a stream's answer is whole, noted chunk by chunk: every choice finished
    (:class:`FinishedChoices`) and, when a usage chunk follows them (:func:`_usage_follows`),
    it came. Only the end marker may follow."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.finished = FinishedChoices()
        self._usage_follows = _usage_follows(body)
        self._usage_came = False

    def note(self, chunk: Mapping[str, Any]) -> None:
        self.finished.note(chunk)
        self._usage_came = self._usage_came or _is_final_usage(chunk)

    @property
    def whole(self) -> bool:
        return self.finished.all and (self._usage_came or not self._usage_follows)


async def _read_rest(events: AsyncIterator[list[SSEEvent]]) -> None:
    """Read what is left of a stream after its end marker, if it has already arrived, and
    drop it: a body read to its end puts the connection back in the pool for the next call.
    Nothing is waited for: when the rest is not there yet (or is malformed), the connection is
    closed as the stream's response closes, as before."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(0):  # fires at the first wait for more bytes
            async for _ in events:
                pass


class ChunkDecoder(Protocol):
    """Turns an upstream's SSE events into OpenAI chunks. ``done`` once its end marker came."""

    done: bool

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        """The chunks for one event (may be none). Raises :class:`ProviderError` for errors."""
        ...

    def whole(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks of a whole answer ``body`` the upstream gave instead of a stream
        (:func:`~switchpoint.gateway.providers.base.stream_of_answer`); none when ``body``
        is not an answer of its dialect."""
        ...

    @property
    def reported(self) -> ReportedSoFar | None:
        """What the upstream reported of the stream's use so far beside its chunks (the
        Messages API's prompt count and thinking), None when nothing."""
        ...


class BeforeContent:
    """What a stream was seen to generate before its first content, tallied as its events are
    decoded: the usage the last chunk that had one reported (``usage``), and the reasoning
    that came (``reasoned``). What its try is charged from when it breaks before any content
    (:meth:`carry`), or is cut off then (the request's deadline, its caller leaving, the
    service stopping: failover reads it from the try's watch, see
    :func:`~switchpoint.gateway.providers.sending.note_stream`)."""

    __slots__ = ("_bytes", "_decoder", "_usage")

    def __init__(self, decoder: ChunkDecoder) -> None:
        self._decoder = decoder
        self._usage: Any = None  # (the raw usage of the last chunk that had one)
        self._bytes = 0  # (bytes of answer in its chunks: an OpenAI-compatible reasoning)

    def add(self, chunks: Sequence[Mapping[str, Any]]) -> None:
        """Tally the chunks one event brought."""
        for chunk in chunks:
            if usage_of(chunk) is not None:
                self._usage = chunk["usage"]
            self._bytes += answer_bytes(chunk)

    @property
    def usage(self) -> TokenUsage | None:
        """The usage the upstream reported in a chunk so far (the last), None when none."""
        return TokenUsage.from_openai(self._usage)

    @property
    def reasoned(self) -> ReportedSoFar | None:
        """What it was seen to generate, reasoning before any content (an OpenAI-compatible
        server's in its chunks, the Messages API's thinking beside them, with the prompt
        count it reported), of which its try is charged the estimate (see
        :func:`~switchpoint.gateway.failover.billed_use`); None when none came."""
        so_far = self._decoder.reported or ReportedSoFar()
        thought = so_far.unrelayed_bytes + self._bytes
        return replace(so_far, unrelayed_bytes=thought) if thought else None

    def carry(self, error: ProviderError) -> None:
        """Give ``error``, which ended the stream before its first content, the usage the
        upstream reported for it: its own (a chunk misnumbering its choices may carry one),
        else that of the last chunk before it that had one, so that its try, which the
        upstream may have generated and billed, is charged what that usage costs rather than
        its model's worst case (see :func:`~switchpoint.gateway.failover.billed_tries`): a
        stream ending with its end marker before any content, cut or ended without one,
        broken by a malformed chunk, silent past the first-token timeout or cut off by the
        request's deadline. Without usage, one that came while the upstream was reasoning is
        given what it was seen to generate (:attr:`ProviderError.reasoned`: the bytes of
        reasoning or thinking that came, and the prompt count the upstream reported), so that
        its try is charged the estimate of them. A failure that generated nothing
        (``may_have_generated`` false) is left as it is."""
        if not error.may_have_generated:
            return
        if isinstance(error.body, Mapping) and usage_of(error.body) is not None:
            return
        if self._usage is not None:
            error.body = {"usage": self._usage}
            return
        error.reasoned = self.reasoned


async def stream_chunks(client: httpx.AsyncClient, url: str, body: Mapping[str, Any],
                        headers: Mapping[str, str], timeouts: Timeouts,
                        decoder: ChunkDecoder, *,
                        model: str) -> AsyncGenerator[list[dict[str, Any]], None]:
    """POST a streamed request and yield its OpenAI chunks, a list at a time (those one read
    of the body brought; never an empty list).

    Nothing is yielded until a content chunk (or the end marker) has arrived; sending, the
    headers and everything before that must fit in ``timeouts.first_token_s`` or
    :class:`FirstTokenTimeout` is raised. Afterwards each read may take ``timeouts.read_s``.
    The stream is complete at the decoder's end marker, or at a clean end of the body once
    every choice has its ``finish_reason`` (some upstreams never send ``[DONE]``; the final
    usage chunk may then be missing), or once its answer is whole (:class:`WholeAnswer`) and
    the upstream stays silent for :data:`END_MARKER_WAIT_S`; any other end is
    :class:`StreamBroken`. An error is
    raised once the chunks before it have been yielded; one before the first content carries
    the usage the upstream reported so far, else the reasoning that came
    (:meth:`BeforeContent.carry`), which its try is charged.
    """
    secrets = header_secrets(headers)
    request = _request(client, url, body, headers, timeouts)
    seen = BeforeContent(decoder)
    note_stream(seen)  # (read by failover should the try be cut off before any content)
    response: httpx.Response | None = None
    # The body's events, a list per read (each layer below passes a read on whole, not an
    # event at a time).
    events: AsyncIterator[list[SSEEvent]] | None = None
    received = False
    whole: list[dict[str, Any]] = []
    answer = WholeAnswer(body)
    try:
        pending: list[dict[str, Any]] = []
        rest: list[SSEEvent] = []  # the events read with the first content, after it
        try:
            try:
                async with asyncio.timeout(timeouts.first_token_s):
                    response = await client.send(request, stream=True)
                    coding = unasked_coding(response)
                    if coding is not None:
                        raise await _refuse_coding(response, coding, model=model)
                    if response.status_code >= 300:  # (a redirect is not followed)
                        raw = await read_capped(response, ERROR_BODY_READ, model=model,
                                                truncate=True)
                        raise classify_status(response.status_code, decode_body(raw, secrets),
                                              response.headers, model=model)
                    received = True
                    limit = timeouts.max_sse_line_bytes
                    reading: AsyncIterator[bytes] = response.aiter_bytes()
                    if _is_json(response):
                        # A whole answer to a stream request (a JSON object): sent on as the
                        # stream it would have been, its usage charged (the upstream has billed
                        # it); or its error. An event stream labelled as JSON is read as one.
                        opening, reading = await _opening(reading, limit)
                        if opening.lstrip()[:1] == b"{":
                            whole = await _whole_answer(response, reading, timeouts, decoder,
                                                        secrets, model)
                    stray: list[str] = []
                    events = sse_event_batches(_noting_stray(
                        bounded_line_batches(reading, limit, model=model,
                                             total=timeouts.max_response_bytes), stray),
                        max_event_chars=limit)
                    content = bool(whole)
                    while not content and not decoder.done:
                        batch = await anext(events, None)
                        if batch is None:
                            if stray:
                                raise _not_events(response, "\n".join(stray), secrets, model)
                            raise StreamBroken("the stream ended before any content", model=model)
                        for at, event in enumerate(batch):
                            chunks = await read_off_loop(len(event.data), decoder.feed, event)
                            pending.extend(chunks)
                            seen.add(chunks)
                            if any(is_content_chunk(c) for c in chunks):
                                content, rest = True, batch[at + 1:]
                                break
                            if decoder.done:
                                break
                    if not content:  # (its end marker came first: no choice, no finish reason)
                        raise StreamBroken("the stream ended with its end marker before any "
                                           "content (no choice, no finish reason)", model=model)
            except TimeoutError as exc:
                raise FirstTokenTimeout(
                    f"no content within the first-token timeout of {timeouts.first_token_s:g}s",
                    model=model) from exc
            except httpx.HTTPError as exc:
                if received and isinstance(exc, httpx.ReadTimeout):
                    raise FirstTokenTimeout(
                        f"the stream went silent for {timeouts.read_s:g}s before any content",
                        model=model) from exc
                raise map_transport_error(exc, model=model, timeouts=timeouts,
                                          started=received) from exc
        except ProviderError as exc:
            seen.carry(exc)
            raise
        if whole:
            yield whole
            return
        if pending:
            for chunk in pending:
                answer.note(chunk)
            yield pending
        assert events is not None
        if decoder.done:
            await _read_rest(events)
            return
        try:
            batch = rest
            while True:
                read: list[dict[str, Any]] = []
                error: Exception | None = None
                try:
                    for event in batch:
                        for chunk in await read_off_loop(len(event.data), decoder.feed,
                                                         event):
                            answer.note(chunk)
                            read.append(chunk)
                        if decoder.done:
                            break
                except Exception as exc:  # (raised once the chunks before it are yielded)
                    error = exc
                if read:
                    yield read
                if error is not None:
                    raise error
                if decoder.done:
                    await _read_rest(events)
                    return
                if answer.whole:
                    # The answer is whole: only its end marker may follow, which an upstream
                    # that stays silent or hangs up instead cannot make it any less whole.
                    try:
                        async with asyncio.timeout(min(timeouts.read_s, END_MARKER_WAIT_S)):
                            following = await anext(events, None)
                    except (TimeoutError, httpx.HTTPError):
                        return
                else:
                    following = await anext(events, None)
                if following is None:
                    break
                batch = following
        except httpx.HTTPError as exc:
            raise map_transport_error(exc, model=model, timeouts=timeouts,
                                      started=True) from exc
        if answer.finished.all:
            return  # a clean end after the last finish_reason: the answer is whole
        raise StreamBroken("the stream ended before the answer finished (no finish_reason, "
                           "no end marker)", model=model)
    finally:
        if events is not None:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if response is not None:
            await response.aclose()
