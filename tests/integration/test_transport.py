"""The lean HTTP/1.1 transport under the provider adapters, against the fake provider process:
keep-alive reuse, a pool slot freed by a body closed early, and httpx's exceptions."""

from __future__ import annotations

import asyncio
import gc
import gzip
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.errors import (
    ConnectError,
    ProviderError,
    ResponseTooLarge,
    StreamBroken,
    UnreadableHead,
)
from switchpoint.gateway.providers._http import ClientPool, post_json, read_capped, stream_chunks
from switchpoint.gateway.providers._transport import (
    CHECK_ADDRESSES,
    NAT64_PREFIXES,
    HeadTooLarge,
    PooledTransport,
    RefusedAddress,
    checked_addresses,
)
from switchpoint.gateway.providers.base import Timeouts
from switchpoint.gateway.providers.openai import OpenAIChunkDecoder
from switchpoint.gateway.providers.sending import watching_send
from tests.fakes.fake_provider import FakeProviderProcess, reset_connection
from tests.integration.servers import loopback_socket
from tests.unit.test_router_register_model import (
    CARRYING_ELSEWHERE,
    CARRYING_INTERNAL,
    NAT64_OWN,
)

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


def test_connections_are_kept_alive_and_reused(fake: FakeProviderProcess) -> None:
    async def run() -> tuple[int, list[str]]:
        transport = PooledTransport(max_connections=4)
        async with httpx.AsyncClient(transport=transport) as client:
            texts = []
            for _ in range(5):
                r = await client.post(f"{fake.openai_base_url}/chat/completions", json=BODY)
                texts.append(r.json()["choices"][0]["message"]["content"])
            stream = {**BODY, "stream": True}
            async with client.stream("POST", f"{fake.openai_base_url}/chat/completions",
                                     json=stream) as r:
                lines = [line async for line in r.aiter_lines() if line]
            texts.append(lines[-1])
            idle = sum(len(v) for v in transport._idle.values())
        return idle, texts

    idle, texts = asyncio.run(run())
    assert idle == 1  # one connection served all six requests
    assert texts[:5] == ["Echo from m: hello there"] * 5 and texts[5] == "data: [DONE]"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_a_pool_used_from_loop_after_loop_keeps_no_client_of_a_closed_one(
        fake: FakeProviderProcess) -> None:
    """Each ``asyncio.run`` is a loop of its own: a loop's clients (and connections) are
    closed on it as it ends, and those of a loop closed without that (``loop.close()`` alone)
    are dropped when the next loop asks, so a library calling the gateway that way for days
    holds one client per upstream at most, not one per call, and no socket per call."""
    pool = ClientPool()
    url = f"{fake.openai_base_url}/chat/completions"

    async def ask() -> str:
        r = await pool.get(fake.openai_base_url).post(url, json=BODY)
        return str(r.json()["choices"][0]["message"]["content"])

    def open_files() -> int:
        gc.collect()  # a dropped connection's socket is closed when it is collected
        return len(os.listdir("/proc/self/fd"))

    for _ in range(3):
        assert asyncio.run(ask()) == "Echo from m: hello there"
    before = open_files()
    for _ in range(40):
        assert asyncio.run(ask()) == "Echo from m: hello there"
        assert len(pool) == 0  # closed as its loop ended
    assert open_files() <= before + 1
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(ask()) == "Echo from m: hello there"
    loop.close()  # (its async generators not closed first, as asyncio.run closes them)
    assert len(pool) == 1
    assert asyncio.run(ask()) == "Echo from m: hello there"  # dropped as this one asks
    assert len(pool) == 0

    async def close() -> None:
        await pool.aclose()

    asyncio.run(close())
    assert len(pool) == 0


def test_a_body_closed_early_frees_its_slot(fake: FakeProviderProcess) -> None:
    async def run() -> int:
        transport = PooledTransport(max_connections=1)
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            fake.script("m", "ok:chunk_delay=0.05")
            async with client.stream("POST", f"{fake.openai_base_url}/chat/completions",
                                     json={**BODY, "stream": True}) as r:
                async for _ in r.aiter_bytes():
                    break  # leave mid-body: the connection is closed, not pooled
            r2 = await client.post(f"{fake.openai_base_url}/chat/completions", json=BODY)
            return r2.status_code

    assert asyncio.run(run()) == 200


def test_a_request_waiting_for_a_busy_pool_gives_up_after_its_pool_timeout(
        fake: FakeProviderProcess) -> None:
    async def run() -> float:
        transport = PooledTransport(max_connections=1)
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            fake.script("m", "ok:chunk_delay=0.05")
            async with client.stream("POST", f"{fake.openai_base_url}/chat/completions",
                                     json={**BODY, "stream": True}):  # holds the one slot
                started = time.monotonic()
                with pytest.raises(httpx.PoolTimeout):
                    await client.post(f"{fake.openai_base_url}/chat/completions", json=BODY,
                                      timeout=httpx.Timeout(2, pool=0.2))
                return time.monotonic() - started

    assert 0.15 < asyncio.run(run()) < 1.5


@pytest.mark.parametrize(("behaviour", "error"), [
    ("reset", httpx.RemoteProtocolError), ("hang:seconds=2", httpx.ReadTimeout),
    ("cut", httpx.RemoteProtocolError)])
def test_failures_are_httpx_exceptions(fake: FakeProviderProcess, behaviour: str,
                                       error: type[Exception]) -> None:
    async def run() -> None:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=0.5) as client:
            fake.script("m", behaviour)
            r = await client.post(f"{fake.openai_base_url}/chat/completions", json=BODY)
            await r.aread()

    with pytest.raises((error, httpx.ReadError)):
        asyncio.run(run())


def test_a_refused_connection_is_a_connect_error() -> None:
    async def run() -> None:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=1) as client:
            await client.post("http://127.0.0.1:9/v1/chat/completions", json=BODY)

    with pytest.raises(httpx.ConnectError):
        asyncio.run(run())


class RawUpstream:
    """An upstream on loopback that answers every request with ``head`` and then the parts of
    ``body`` as they are queued (``None`` closes the connection)."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.parts: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, sock=loopback_socket())
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.head)
        while (part := await self.parts.get()) is not None:
            writer.write(part)
            await writer.drain()
        writer.close()


def test_a_chunk_declared_huge_is_passed_on_as_it_arrives() -> None:
    """The upstream declares a chunk of 64 GiB: what has arrived of it is passed on (and so
    counted against the caller's limits) at once, not held until the whole chunk is in."""
    async def run() -> bytes:
        upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"1000000000\r\n")
        async with upstream as url, httpx.AsyncClient(transport=PooledTransport(),
                                                      timeout=3) as client:
            upstream.parts.put_nowait(b"x" * 200_000)
            async with client.stream("POST", url, json=BODY) as r:
                first = await anext(r.aiter_bytes())
            upstream.parts.put_nowait(None)
            return first

    first = asyncio.run(run())
    assert first and set(first) == {ord("x")}


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello world\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
    + b"X-Trailer: " + b"y" * 70_000 + b"\r\n" * 2,
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 2\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 2\r\n\r\nhello",
])
def test_a_body_framed_wrongly_is_a_protocol_error(head: bytes) -> None:
    async def run() -> None:
        upstream = RawUpstream(head)
        async with upstream as url, httpx.AsyncClient(transport=PooledTransport(),
                                                      timeout=3) as client:
            upstream.parts.put_nowait(None)
            r = await client.post(url, json=BODY)
            await r.aread()

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(run())


def test_a_compressed_body_is_inflated_a_little_at_a_time() -> None:
    """A gzip body that inflates 1000-fold (256 MiB of zeros): refused at the caller's limit
    with no more than a few megabytes inflated at once (a 64 KiB read inflated to 64 MiB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()

    async def run() -> int:
        upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Content-Encoding: gzip\r\n"
                               b"Content-Length: " + str(len(bomb)).encode() + b"\r\n\r\n")
        async with upstream as url, httpx.AsyncClient(transport=PooledTransport(),
                                                      timeout=3) as client:
            upstream.parts.put_nowait(bomb)
            upstream.parts.put_nowait(None)
            async with client.stream("POST", url, json=BODY) as r:
                tracemalloc.start()
                try:
                    with pytest.raises(ResponseTooLarge):
                        await read_capped(r, 1 << 20, model="m")
                    return tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()

    peak = asyncio.run(run())
    assert peak < 16 << 20, f"{peak >> 20} MiB held at once"


def gzip_upstream(packed: bytes, kind: str) -> RawUpstream:
    """An upstream answering ``packed``, a gzip body of the content-type ``kind``, queued
    whole at once."""
    upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind.encode()
                           + b"\r\nContent-Encoding: gzip\r\nContent-Length: "
                           + str(len(packed)).encode() + b"\r\n\r\n")
    upstream.parts.put_nowait(packed)
    return upstream


class Turns:
    """How many times the event loop ran a task that hands it back at once, from
    :meth:`start` to :meth:`stop`."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._turn())

    async def _turn(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    def stop(self) -> int:
        assert self._task is not None, "the turns were never started"
        self._task.cancel()
        return self.count


def test_a_compressed_stream_of_blank_lines_hands_the_event_loop_back_as_it_is_read() -> None:
    """A stream whose first chunk is followed by a gzip body of 1 KB inflating to 1 MB of
    blank lines (inflated 4 MB a read and already arrived, so read without waiting): the event
    loop runs other tasks while its lines are read, not only once the stream has ended."""
    first = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
    packed = gzip.compress(first + b"\n" * (1 << 20), 9)

    async def run() -> tuple[int, list[list[dict[str, Any]]]]:
        upstream = gzip_upstream(packed, "text/event-stream")
        turns = Turns()
        async with upstream as url, httpx.AsyncClient(transport=PooledTransport()) as client:
            got: list[list[dict[str, Any]]] = []
            with pytest.raises(StreamBroken, match="before the answer finished"):
                async for chunks in stream_chunks(client, url, BODY, {}, Timeouts(),
                                                  OpenAIChunkDecoder("m"), model="m"):
                    if not got:  # (the turns are counted from the blank lines' start)
                        turns.start()
                    got.append(chunks)
            ticks = turns.stop()
            upstream.parts.put_nowait(None)
            return ticks, got

    ticks, got = asyncio.run(run())
    assert [c["choices"][0]["delta"] for batch in got for c in batch] == [{"content": "hi"}]
    assert ticks >= 10, f"the loop ran {ticks} times while 1 MB of blank lines was read"


def test_a_compressed_answer_hands_the_event_loop_back_as_it_is_inflated() -> None:
    """A plain answer's gzip body of some 32 KB inflating to 32 MiB, already arrived (so read
    without waiting): the event loop runs other tasks while it is inflated and gathered, as
    a stream's lines are read, where it was held until the whole body was in."""
    size = 32 << 20
    packed = gzip.compress(bytes(size), 9)

    async def run() -> tuple[int, int]:
        upstream = gzip_upstream(packed, "application/json")
        upstream.parts.put_nowait(None)
        turns = Turns()
        async with (upstream as url,
                    httpx.AsyncClient(transport=PooledTransport()) as client,
                    client.stream("POST", url, json=BODY) as r):
            pieces = r.aiter_bytes()
            first = await anext(pieces)  # (the whole body has arrived by then)
            turns.start()
            await asyncio.sleep(0)  # (the turns started: counted from 0)
            turns.count = 0
            body = await read_capped(r, size, model="m", chunks=_again(first, pieces))
            return len(body), turns.stop()

    read, ticks = asyncio.run(run())
    assert read == size
    assert ticks >= 2, f"the loop ran {ticks} times while 32 MiB was inflated"


async def _again(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A body read from ``rest``, ``first`` (its first piece, already read) first."""
    yield first
    async for chunk in rest:
        yield chunk


def test_a_finished_stream_not_asked_for_usage_whose_upstream_goes_silent_is_whole(
        fake: FakeProviderProcess) -> None:
    """A model not asked for usage (``stream_usage: false``: no ``stream_options``) ends with
    its last finish: then only [DONE] may follow, and an upstream silent instead is waited
    for a second, not the read timeout (5 s here), as one asked is after its usage chunk."""
    fake.script("m", "nodone:seconds=8")
    body = {**BODY, "stream": True}

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(transport=PooledTransport()) as client:
            return [chunk async for chunks in stream_chunks(
                client, fake.openai_base_url + "/chat/completions", body, {},
                Timeouts(read_s=5.0), OpenAIChunkDecoder("m"), model="m") for chunk in chunks]

    started = time.monotonic()
    chunks = asyncio.run(run())
    assert time.monotonic() - started < 3
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert not any("usage" in c and not c["choices"] for c in chunks)


def test_a_gzip_answer_is_still_taken_and_only_gzip_is_asked_for() -> None:
    """The one coding the gateway asks for is read as before: gzip, inflated a read at a
    time, with ``Accept-Encoding: gzip, identity`` on the request whatever httpx offers."""
    answer = {"id": "c", "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": "zipped"}}]}
    packed = gzip.compress(json.dumps(answer).encode())
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Encoding: gzip\r\nContent-Length: "
                     + str(len(packed)).encode() + b"\r\n\r\n" + packed)
        await writer.drain()
        writer.close()

    async def run() -> dict[str, object]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(transport=PooledTransport()) as client:
                data, _, _ = await post_json(client, f"http://127.0.0.1:{port}/v1/x", BODY,
                                             {"accept-encoding": "br, zstd"}, Timeouts(),
                                             model="m", answer=lambda data, _: data)
                return data
        finally:
            server.close()

    assert asyncio.run(run()) == answer
    lines = heads[0].lower().split(b"\r\n")
    assert [line for line in lines if line.startswith(b"accept-encoding:")] == [
        b"accept-encoding: gzip, identity"]


@pytest.mark.parametrize(("head", "kept"), [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0),
    (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", 1),
    (b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 2\r\n\r\nok", 0),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 1),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", 0),
])
def test_only_a_persistent_connection_is_pooled(head: bytes, kept: int) -> None:
    """An HTTP/1.0 answer closes its connection unless it says keep-alive: it is not pooled,
    so the next request does not meet a connection the upstream is closing. Nor is one whose
    answer is framed both chunked and by a length (read chunked, as HTTP/1.1 says)."""
    async def run() -> tuple[bytes, int]:
        transport = PooledTransport()
        upstream = RawUpstream(head)
        async with upstream as url, httpx.AsyncClient(transport=transport,
                                                      timeout=3) as client:
            r = await client.post(url, json=BODY)
            kept = sum(len(v) for v in transport._idle.values())
            upstream.parts.put_nowait(None)  # (the upstream holds the connection till now)
            return r.content, kept

    assert asyncio.run(run()) == (b"ok", kept)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def _scripted(writes: list[bytes], close: bool = False) -> tuple[asyncio.Server, str]:
    """A loopback server answering every request with ``writes``, each sent on its own after a
    short pause (so each arrives as a read of its own); with ``close`` it then hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            for data in writes:
                writer.write(data)
                await writer.drain()
                await asyncio.sleep(0.02)
            if close:
                break
        writer.close()

    server = await asyncio.start_server(answer, sock=loopback_socket())
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


async def _pieces(writes: list[bytes]) -> tuple[list[bytes], int]:
    """The pieces a streamed GET's body came in, and the connections left idle after it."""
    server, url = await _scripted(writes)
    transport = PooledTransport()
    try:
        async with httpx.AsyncClient(transport=transport, timeout=2) as client:
            async with client.stream("GET", url) as r:
                pieces = [piece async for piece in r.aiter_raw()]
            return pieces, sum(len(v) for v in transport._idle.values())
    finally:
        server.close()
        await server.wait_closed()


def test_chunks_that_arrive_together_are_one_piece_and_a_split_chunk_comes_as_it_arrives(
        ) -> None:
    burst = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in (b"data: 1\n\n", b"data: 2\n\n"))
    pieces, idle = asyncio.run(_pieces([
        HEAD + burst,  # two chunks in one read: one piece
        b"13\r\ndata: first half",  # a chunk of 19 bytes, split over two reads
        b" 3\n\r\n0\r\nx-trailer: y\r\n\r\n"]))
    assert pieces == [b"data: 1\n\ndata: 2\n\n", b"data: first half", b" 3\n"]
    assert idle == 1  # read to its end (trailers included): kept for the next request


@pytest.mark.parametrize(("tail", "error"), [
    (b"zz\r\n", "malformed chunk size"),
    (b"3\r\nabcdef\r\n", "a chunk does not end where its size says"),
    (b"3\r\nab", "peer closed connection without sending complete message body"),
    (b"1" * 70_000, "size line is too large")])
def test_a_malformed_chunked_body_is_a_protocol_error(tail: bytes, error: str) -> None:
    async def run() -> None:
        server, url = await _scripted([HEAD + b"4\r\nokay\r\n" + tail], close=True)
        try:
            async with httpx.AsyncClient(transport=PooledTransport(), timeout=2) as client, \
                    client.stream("GET", url) as r:
                async for _ in r.aiter_raw():
                    pass
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(httpx.RemoteProtocolError, match=error):
        asyncio.run(run())


def test_bytes_past_the_end_of_a_chunked_body_close_its_connection() -> None:
    pieces, idle = asyncio.run(_pieces([HEAD + b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"]))
    assert pieces == [b"ok"]
    assert idle == 0  # what followed the body would be read as the next answer: not reused


def test_bytes_past_a_content_length_close_its_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    pieces, idle = asyncio.run(_pieces([head + b"okHTTP/1.1 200 OK\r\n"]))
    assert pieces == [b"ok"]
    assert idle == 0  # what followed the body would be read as the next answer: not reused
    pieces, idle = asyncio.run(_pieces([head + b"ok"]))
    assert (pieces, idle) == ([b"ok"], 1)


async def _read_past_a_reset(head: bytes, rest: list[bytes]) -> tuple[bytes, Exception]:
    """The body a streamed GET got, and the error that ended it, from an upstream that sends
    ``head`` and a first piece, then (once that has been read) ``rest`` and resets the
    connection; the rest is read only once the event loop has seen the reset."""
    first_read = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        await first_read.wait()
        for data in rest:
            writer.write(data)
            await writer.drain()
        reset_connection(writer)

    server = await asyncio.start_server(answer, sock=loopback_socket())
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=10) as client:
            async with client.stream("GET", url) as r:
                body: Any = getattr(r.stream, "_stream", r.stream)  # (httpx's wrapper, if any)
                reader = body._conn.reader
                pieces = r.aiter_raw()
                got = await anext(pieces)
                first_read.set()
                async with asyncio.timeout(10):
                    while reader.exception() is None:  # (the reset, seen; the rest unread)
                        await asyncio.sleep(0.01)
                with pytest.raises(httpx.ReadError) as info:
                    async for piece in pieces:
                        got += piece
            return got, info.value
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("head", "first", "rest"), [
    (HEAD, b"9\r\ndata: 1\n\n\r\n", [b"9\r\ndata: 2\n\n\r\n", b"9\r\ndata: 3\n\n\r\n"]),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"data: 1\n\n",
     [b"data: 2\n\n", b"data: 3\n\n"]),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", b"data: 1\n\n",
     [b"data: 2\n\n", b"data: 3\n\n"])], ids=["chunked", "read to close", "length"])
def test_what_came_before_a_reset_is_read_before_the_reset_is_raised(
        head: bytes, first: bytes, rest: list[bytes]) -> None:
    """An upstream that sends the rest of its answer and resets the connection: every byte
    that arrived before the reset is handed on, then the reset is a read error. The kernel
    keeps them for the reader; asyncio's reader dropped what it held unread when it saw the
    reset, so how much of a stream reached the client varied with when the gateway read."""
    got, error = asyncio.run(_read_past_a_reset(head + first, rest))
    assert got == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    assert isinstance(error.__cause__, ConnectionResetError), repr(error.__cause__)


def test_a_cookie_an_upstream_sets_rides_along_with_no_later_request() -> None:
    """One pooled client serves every caller of an upstream: a cookie one answer set (or one
    assigned to the client) must not be sent with the next request, which may be another
    tenant's."""
    from switchpoint.gateway.providers._http import ClientPool

    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
                         b"set-cookie: tenant=alice; Path=/\r\n\r\nok")
            await writer.drain()
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(answer, sock=loopback_socket())
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        pool = ClientPool()
        try:
            client = pool.get(url)
            for _ in range(2):
                assert (await client.get(url + "/v1/models")).text == "ok"
            assert not client.cookies
            client.cookies = {"tenant": "bob"}  # (nor does one assigned ride along)
            assert (await client.get(url + "/v1/models")).text == "ok"
            assert not client.cookies
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(run())
    assert len(heads) == 3
    assert all(b"cookie:" not in head.lower().replace(b"set-cookie", b"") for head in heads)


async def _closing_pooled(answered: int, interim: bool = False
                          ) -> tuple[asyncio.Server, str, list[int]]:
    """A loopback server that answers the first request on a connection (keeping it open) and
    hangs up on the next one unanswered, as an upstream closing an idle keep-alive connection
    just as it is reused does; it answers ``answered`` requests in all, then hangs up on every
    request (after an interim ``100 Continue`` with ``interim``). Also returns the number of
    requests each connection read."""
    reads: list[int] = []
    total = [0]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reads.append(0)
        index = len(reads) - 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")]
                await reader.readexactly(length[0] if length else 0)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            reads[index] += 1
            if reads[index] > 1 or total[0] >= answered:
                if interim:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                break
            total[0] += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, sock=loopback_socket())
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/", reads


def test_a_pooled_connection_closed_unanswered_is_tried_once_more_on_a_fresh_one() -> None:
    """A pooled connection the upstream hangs up on before any byte of an answer (it had let
    the idle connection go as it was reused) costs the request nothing: it is sent again, once,
    on a fresh connection, and the try counts as sent only there."""
    async def run() -> tuple[list[bytes], list[int], list[bool | None]]:
        server, url, reads = await _closing_pooled(answered=2)
        transport = PooledTransport()
        sent: list[bool | None] = []
        try:
            async with httpx.AsyncClient(transport=transport, timeout=3) as client:
                bodies = []
                for _ in range(2):
                    with watching_send() as watch:
                        bodies.append((await client.post(url, json=BODY)).content)
                    sent.append(watch.sent)
                return bodies, reads, sent
        finally:
            server.close()
            await server.wait_closed()

    bodies, reads, sent = asyncio.run(run())
    assert bodies == [b"ok", b"ok"]
    assert reads == [2, 1]  # the pooled connection took the second request, then a fresh one
    assert sent == [True, True]


def test_a_fresh_connection_closed_unanswered_is_not_tried_again() -> None:
    """Only a pooled connection is tried again: a fresh connection hung up on before any
    answer (the upstream had the request, and may have been generating) is a protocol error,
    as is the second hang-up of a pooled connection's request sent again."""
    async def run() -> tuple[list[str], list[int]]:
        server, url, reads = await _closing_pooled(answered=1)
        transport = PooledTransport()
        errors = []
        try:
            async with httpx.AsyncClient(transport=transport, timeout=3) as client:
                assert (await client.post(url, json=BODY)).content == b"ok"
                for _ in range(2):
                    try:
                        await client.post(url, json=BODY)
                    except httpx.RemoteProtocolError as exc:
                        errors.append(str(exc))
                return errors, reads
        finally:
            server.close()
            await server.wait_closed()

    errors, reads = asyncio.run(run())
    assert len(errors) == 2 and all("without sending a response" in e for e in errors)
    # the pooled connection's request, sent again once on a fresh one; then one fresh try
    assert reads == [2, 1, 1]


def test_interim_answers_share_the_head_s_size_limit() -> None:
    """An upstream sending interim answers one after another (``100 Continue``, 3,000 of them,
    75 KB) is refused as a head over its limit, where their count had no bound but the read
    timeout, every one of them parsed till it ran out."""
    async def run() -> bytes:
        upstream = RawUpstream(b"HTTP/1.1 100 Continue\r\n\r\n" * 3000
                               + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        async with upstream as url, httpx.AsyncClient(transport=PooledTransport(),
                                                      timeout=3) as client:
            try:
                return (await client.post(url, json=BODY)).content
            finally:
                upstream.parts.put_nowait(None)

    with pytest.raises(HeadTooLarge, match="interim answers are over the limit of 65536"):
        asyncio.run(run())


def test_a_pooled_connection_hung_up_on_after_an_interim_answer_is_not_tried_again() -> None:
    """An upstream that answered something (an interim ``100 Continue``) before it hung up had
    the request: the try is a protocol error, not sent again."""
    async def run() -> tuple[list[str], list[int]]:
        server, url, reads = await _closing_pooled(answered=1, interim=True)
        transport = PooledTransport()
        errors = []
        try:
            async with httpx.AsyncClient(transport=transport, timeout=3) as client:
                assert (await client.post(url, json=BODY)).content == b"ok"
                try:
                    await client.post(url, json=BODY)
                except httpx.RemoteProtocolError as exc:
                    errors.append(str(exc))
                return errors, reads
        finally:
            server.close()
            await server.wait_closed()

    errors, reads = asyncio.run(run())
    assert errors == ["Server disconnected without sending a response."]
    assert reads == [2]


def test_an_unasked_switch_of_protocols_is_a_protocol_error_not_an_answer() -> None:
    """No request here asks to switch protocols: a 101 is not an answer whose body is read as
    the completion (an interim 100 Continue is still skipped)."""
    async def run() -> None:
        server, url = await _scripted([
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n{\"choices\": []}"])
        try:
            async with httpx.AsyncClient(transport=PooledTransport(), timeout=2) as client:
                with pytest.raises(httpx.RemoteProtocolError, match="101 Switching Protocols"):
                    await client.get(url)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(run())


async def _posted(writes: list[bytes]) -> ProviderError:
    """What post_json raises for an upstream that answers ``writes`` and hangs up."""
    server, url = await _scripted(writes, close=True)
    try:
        async with httpx.AsyncClient(transport=PooledTransport(), timeout=2) as client:
            with pytest.raises(ProviderError) as info:
                await post_json(client, url, BODY, {}, Timeouts(), model="m",
                                answer=lambda data, _: data)
            return info.value
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("head", "said"), [
    (b"HTTP/2 200\r\ncontent-type: application/json\r\n\r\n{}",
     'not an HTTP/1.1 response: "HTTP/2 200"'),
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 'not an HTTP/1.1 response: "SSH-2.0-OpenSSH_9.6"'),
    (b"HTTP/1.1 OK 200\r\n\r\n", 'bad status line: "HTTP/1.1 OK 200"'),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n{}", "invalid Content-Length"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
     "101 Switching Protocols, which no request asked for"),
])
def test_an_upstream_that_answered_malformed_is_a_malformed_answer_not_a_lost_connection(
        head: bytes, said: str) -> None:
    """An upstream that answered with a head no HTTP/1.1 client reads answered: its try is a
    malformed answer naming what was wrong, not a connection lost. It had the request whole,
    so it may have generated (and is charged as such)."""
    error = asyncio.run(_posted([head]))
    assert type(error) is UnreadableHead and error.kind == "malformed_response"
    assert said in str(error) and "the answer was not read" in str(error), str(error)
    assert "connection was lost" not in str(error)
    # (the same server would answer so again: another model is tried, not this one again)
    assert error.may_have_generated and not error.retryable and error.escalate


@pytest.mark.parametrize("writes", [[], [b"HTTP/1.1 200 OK\r\nContent-Ty"]],
                         ids=["nothing", "part of a head"])
def test_an_upstream_that_hung_up_before_its_answer_is_a_lost_connection(
        writes: list[bytes]) -> None:
    """Closed without a whole head (nothing, or part of one): the connection was lost after
    the request was sent, which may have been generating, as before."""
    error = asyncio.run(_posted(writes))
    assert type(error) is ConnectError and error.kind == "connect_error"
    assert "the connection was lost after the request was sent" in str(error), str(error)
    assert "Server disconnected without sending a response." in str(error)
    assert error.may_have_generated


def _found(*hosts: str, port: int = 443) -> list[tuple[Any, ...]]:
    """What getaddrinfo gives for ``hosts`` (a name's addresses), each at ``port``."""
    return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (h, port, 0, 0)) if ":" in h
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (h, port)) for h in hosts]


def _resolver(*hosts: str, port: int | None = None, asked: list[str] | None = None) -> Any:
    async def resolve(host: str, wanted: int) -> list[tuple[Any, ...]]:
        if asked is not None:
            asked.append(host)
        return _found(*hosts, port=wanted if port is None else port)
    return resolve


@pytest.mark.parametrize(("found", "shown"), [
    (["169.254.169.254"], "a cloud metadata service's address (169.254.169.254)"),
    (["169.254.10.20"], "a link-local address (169.254.10.20)"),
    (["fe80::5%eth0"], "a link-local address (fe80::5)"),
    (["fd00:ec2::254"], "a cloud metadata service's address (fd00:ec2::254)"),
    (["100.100.100.200"], "a cloud metadata service's address (100.100.100.200)"),
    (["::ffff:169.254.169.254"], "a cloud metadata service's address (169.254.169.254)"),
    (["::ffff:169.254.3.4"], "a link-local address (169.254.3.4)"),
    # (a name that also points at good addresses passes no better: any one is enough)
    (["10.1.2.3", "2001:db8::1", "169.254.169.254"], "address (169.254.169.254)"),
    (["::ffff:10.0.0.1", "fe80::1"], "a link-local address (fe80::1)"),
], ids=["metadata", "link-local", "ipv6-link-local", "ipv6-metadata", "alibaba",
        "ipv4-mapped-metadata", "ipv4-mapped-link-local", "mix", "mix-ipv6"])
def test_a_checked_connection_refuses_a_name_resolving_to_a_link_local_or_metadata_address(
        found: list[str], shown: str) -> None:
    with pytest.raises(RefusedAddress) as caught:
        asyncio.run(checked_addresses("api.example.test", 443, _resolver(*found)))
    said = str(caught.value)
    assert said.startswith("not sent: host now resolves to a metadata/link-local address; "
                           "list it in the config, or set gateway.allow_registered_metadata_"
                           "hosts: true there and reload (api.example.test resolves to "), said
    assert shown in said and "gateway.allow_registered_metadata_hosts is false, so a model " \
           "registered at run time may not connect there" in said, said


def test_a_checked_connection_refuses_a_name_resolving_to_an_address_carrying_such_a_one(
        ) -> None:
    # A NAT64, 6to4, IPv4-compatible or Teredo address reaches the IPv4 address it carries
    # through a translator or tunnel on the way: it is judged by that one.
    for address, shown in CARRYING_INTERNAL:
        with pytest.raises(RefusedAddress) as caught:
            asyncio.run(checked_addresses("api.example.test", 443, _resolver(address)))
        assert shown in str(caught.value), (address, str(caught.value))
    found = asyncio.run(checked_addresses("v6.example.test", 80,
                                          _resolver(*CARRYING_ELSEWHERE)))
    assert [info[4][0] for info in found] == CARRYING_ELSEWHERE


def test_a_checked_connection_judges_an_address_under_the_network_s_own_nat64_prefix(
        ) -> None:
    """A prefix the request gives (the config's gateway.nat64_prefixes) is read at its
    length, as the translator reads it: the connection is refused before it is made; without
    it, the same address is one like any other (a connection there is attempted)."""
    for prefix, address in NAT64_OWN:
        own = (ipaddress.IPv6Network(prefix),)
        with pytest.raises(RefusedAddress) as caught:
            asyncio.run(checked_addresses("api.example.test", 443, _resolver(address), own))
        assert f"(169.254.169.254, carried by {address})" in str(caught.value), prefix
        assert asyncio.run(checked_addresses("api.example.test", 443, _resolver(address)))

    async def send(extensions: dict[str, Any]) -> BaseException:
        transport = PooledTransport(resolve=_resolver(NAT64_OWN[0][1], port=9))
        async with httpx.AsyncClient(transport=transport, timeout=0.2) as client:
            request = client.build_request("GET", "http://api.example.test/v1",
                                           extensions=extensions)
            with pytest.raises(httpx.TransportError) as caught:  # (a timeout, unchecked)
                await client.send(request)
            return caught.value

    own = (ipaddress.IPv6Network(NAT64_OWN[0][0]),)
    refused = asyncio.run(send({CHECK_ADDRESSES: True, NAT64_PREFIXES: own}))
    assert isinstance(refused, RefusedAddress) and "169.254.169.254" in str(refused)
    assert not isinstance(asyncio.run(send({CHECK_ADDRESSES: True})), RefusedAddress)


def test_a_pooled_checked_connection_is_not_reused_once_the_request_s_prefixes_refuse_it(
        ) -> None:
    """A checked connection pooled while its name's addresses passed is closed, not reused,
    by the first request whose NAT64 prefixes (a reload's) refuse one of them: the request is
    refused as a new connection is, and the upstream took the first request alone."""
    prefix, carrying = NAT64_OWN[0]
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                requests.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> BaseException:
        server = await asyncio.start_server(handle, sock=loopback_socket())
        port = server.sockets[0].getsockname()[1]
        transport = PooledTransport(resolve=_resolver("127.0.0.1", carrying, port=port))
        try:
            async with httpx.AsyncClient(transport=transport, timeout=3) as client:
                async def get(rules: tuple[ipaddress.IPv6Network, ...]) -> httpx.Response:
                    return await client.send(client.build_request(
                        "GET", "http://api.example.test/v1",
                        extensions={CHECK_ADDRESSES: True, NAT64_PREFIXES: rules}))

                assert (await get(())).text == "ok"
                with pytest.raises(RefusedAddress) as caught:
                    await get((ipaddress.IPv6Network(prefix),))
                return caught.value
        finally:
            server.close()
            await server.wait_closed()

    refused = asyncio.run(run())
    assert f"(169.254.169.254, carried by {carrying})" in str(refused)
    assert len(requests) == 1, requests


def test_a_checked_connection_takes_a_name_s_other_addresses_in_their_order() -> None:
    # Loopback and private networks are where teams run model servers; 100.64/10 is no
    # metadata service's (100.100.100.200 is).
    good = ["10.1.2.3", "127.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", "100.64.0.1", "::1"]
    found = asyncio.run(checked_addresses("vllm.example.test", 8000, _resolver(*good)))
    assert [info[4] for info in found] == [info[4] for info in _found(*good, port=8000)]
    with pytest.raises(OSError, match="resolved to no address"):
        asyncio.run(checked_addresses("nowhere.test", 80, _resolver()))
    # An address written as one is its own (no resolver is asked), checked as any.
    assert [info[4] for info in asyncio.run(checked_addresses("10.1.2.3", 80))] == [
        ("10.1.2.3", 80)]
    assert [info[4] for info in asyncio.run(checked_addresses("2001:db8::1", 80))] == [
        ("2001:db8::1", 80, 0, 0)]
    with pytest.raises(RefusedAddress, match=r"\(169\.254\.169\.254 resolves to a cloud"):
        asyncio.run(checked_addresses("169.254.169.254", 80))


def test_connections_checked_and_not_to_one_upstream_count_together_against_its_bound(
        ) -> None:
    """At most max_connections open to an upstream, its requests' connections checked (a
    model registered at run time) and not (the config's) together: each waits its turn for a
    slot, and an idle connection of the other kind is closed to make room for a new one.
    The upstream counts the connections open as each request reaches it (once a closed
    one's end has reached it too)."""
    seen: list[int] = []
    open_now = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now
        open_now += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(0.05)
                seen.append(open_now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()
        finally:
            open_now -= 1

    async def run() -> list[list[int]]:
        server = await asyncio.start_server(handle, sock=loopback_socket())
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        transport = PooledTransport(max_connections=2, max_keepalive_connections=2,
                                    resolve=_resolver("127.0.0.1"))
        peaks = []
        try:
            async with httpx.AsyncClient(transport=transport, timeout=3) as client:
                async def get(checked: bool) -> str:
                    extensions = {CHECK_ADDRESSES: True} if checked else {}
                    request = client.build_request("GET", url, extensions=extensions)
                    return (await client.send(request)).text

                for kinds in ([True, False] * 3, [False] * 2, [True] * 2, [False] * 2):
                    seen.clear()
                    texts = await asyncio.gather(*(get(kind) for kind in kinds))
                    assert texts == ["ok"] * len(kinds)
                    peaks.append(seen[:])
        finally:
            server.close()
            await server.wait_closed()
        return peaks

    peaks = asyncio.run(run())
    # (together, then the idle ones of the other kind making room for each kind in turn)
    assert [max(peak) for peak in peaks] == [2, 2, 2, 2], peaks


def _certificate(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for host ``name``, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_a_checked_connection_goes_where_it_checked_with_the_host_name_s_tls(
        tmp_path: Path) -> None:
    """The name is looked up by the transport (once per new connection: a pooled one is
    reused), the connection goes to the address it checked, and TLS verifies the certificate
    against the URL's host name and sends it (SNI), as a connection by name does. Connections
    checked and not are pooled apart: one made unchecked never serves a checked request."""
    cert, key = _certificate(tmp_path, "upstream.test")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    sni: list[str | None] = []
    served.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    trusted = ssl.create_default_context(cafile=str(cert))
    asked: list[str] = []
    accepted: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append("tls" if writer.get_extra_info("ssl_object") else "plain")
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # (the client let it go; or the test ended)

    async def run() -> tuple[list[str], str, int]:
        tls = await asyncio.start_server(handle, sock=loopback_socket(), ssl=served)
        plain = await asyncio.start_server(handle, sock=loopback_socket())
        port = tls.sockets[0].getsockname()[1]
        plain_url = f"http://127.0.0.1:{plain.sockets[0].getsockname()[1]}/"
        transport = PooledTransport(ssl_context=trusted,
                                    resolve=_resolver("127.0.0.1", asked=asked))
        try:
            async with httpx.AsyncClient(transport=transport, timeout=3) as client:
                async def get(url: str, checked: bool = True) -> str:
                    extensions = {CHECK_ADDRESSES: True} if checked else {}
                    request = client.build_request("GET", url, extensions=extensions)
                    return (await client.send(request)).text

                texts = [await get(f"https://upstream.test:{port}/v1") for _ in range(2)]
                texts += [await get(plain_url, checked=False), await get(plain_url)]
                with pytest.raises(httpx.ConnectError) as wrong:
                    await get(f"https://elsewhere.test:{port}/v1")  # (not the certificate's)
                return texts, str(wrong.value), len(transport._idle)
        finally:
            for server in (tls, plain):
                server.close()
                await server.wait_closed()

    texts, wrong, origins = asyncio.run(run())
    assert texts == ["ok"] * 4
    assert asked == ["upstream.test", "127.0.0.1", "elsewhere.test"]  # (each new connection)
    assert sni == ["upstream.test", "elsewhere.test"]
    assert "certificate verify failed" in wrong and "elsewhere.test" in wrong, wrong
    # one TLS connection served both requests (the other name's failed its handshake), and
    # two plain ones: checked and not, kept apart
    assert sorted(accepted) == ["plain", "plain", "tls"] and origins == 3
