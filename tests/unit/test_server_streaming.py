"""The server's SSE writer: a stream ends with [DONE] only when it really finished."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchpoint.errors import StreamBroken
from switchpoint.server.errors import sse_error
from switchpoint.server.streaming import sse_body

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
