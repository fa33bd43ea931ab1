"""The server's SSE writer: a stream ends with [DONE] only when it really finished."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchpoint.errors import StreamBroken
from switchpoint.server.errors import sse_error
from switchpoint.server.streaming import SSEResponse, sse_body

pytestmark = pytest.mark.anyio


async def test_sse_body_ends_with_done_or_an_error_event() -> None:
    async def good() -> AsyncIterator[dict[str, Any]]:
        yield {"x": 1}

    async def bad() -> AsyncIterator[dict[str, Any]]:
        yield {"x": 1}
        raise StreamBroken("cut", after_first_byte=True)

    async def buggy() -> AsyncIterator[dict[str, Any]]:
        yield {"x": 1}
        raise RuntimeError("bug")

    ok = b"".join([b async for b in sse_body(good())])
    assert ok == b'data: {"x":1}\n\ndata: [DONE]\n\n'
    broken = b"".join([b async for b in sse_body(bad())])
    assert broken.startswith(b'data: {"x":1}\n\nevent: error\ndata: {"error":')
    assert b"[DONE]" not in broken and b"stream_broken" in broken
    assert b"[DONE]" not in b"".join([b async for b in sse_body(buggy())])
    event = sse_error(StreamBroken("cut", model="m", after_first_byte=True))
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert json.loads(event.split(b"data: ", 1)[1])["error"]["code"] == "stream_broken"


async def test_chunks_ready_together_go_out_in_one_write_and_late_ones_alone() -> None:
    async def burst_then_late() -> AsyncIterator[dict[str, Any]]:
        for n in range(3):
            yield {"n": n}  # already here: one write
        await asyncio.sleep(0.01)
        yield {"n": 3}  # came later: a write of its own, before the end

    writes = [b async for b in sse_body(burst_then_late())]
    assert writes[0] == b'data: {"n":0}\n\ndata: {"n":1}\n\ndata: {"n":2}\n\n'
    assert writes[1:] == [b'data: {"n":3}\n\ndata: [DONE]\n\n']


async def test_a_client_leaving_mid_stream_closes_the_chunks() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                yield {"x": 1}
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    body = sse_body(endless())
    assert (await anext(body)).startswith(b'data: {"x":1}\n\n')
    await body.aclose()  # what the server does when the client goes away
    await asyncio.wait_for(closed.wait(), 1)
    assert closed.is_set()


async def test_a_failure_closing_the_chunks_ends_the_body_with_it_not_done() -> None:
    class Unclosable:
        def __aiter__(self) -> Unclosable:
            self.sent = False
            return self

        async def __anext__(self) -> dict[str, Any]:
            if self.sent:
                raise StopAsyncIteration
            self.sent = True
            return {"x": 1}

        async def aclose(self) -> None:
            raise RuntimeError("close failed")

    got: list[bytes] = []
    with pytest.raises(RuntimeError, match="close failed"):
        async for piece in sse_body(Unclosable()):
            got.append(piece)
    assert got == [b'data: {"x":1}\n\n']


async def test_the_head_goes_out_with_the_first_events_then_each_piece_then_the_end() -> None:
    seen: list[str] = []

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            seen.append(f"made {piece!r}")
            yield piece

    async def send(message: dict[str, Any]) -> None:
        seen.append(f"{message['type']} {message.get('body', b'')!r}")

    response = SSEResponse(pieces(), headers={"cache-control": "no-cache"})
    await response.stream_response(send)  # type: ignore[arg-type]
    assert seen == ["made b'data: 1\\n\\n'",  # the first piece is in hand before the head
                    "http.response.start b''", "http.response.body b'data: 1\\n\\n'",
                    "made b'data: 2\\n\\n'", "http.response.body b'data: 2\\n\\n'",
                    "http.response.body b''"]
    assert (b"content-type", b"text/event-stream; charset=utf-8") in response.raw_headers
