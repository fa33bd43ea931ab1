"""Writing a gateway stream as server-sent events, OpenAI style.

:func:`sse_body` turns a chunk iterator into the bytes of an OpenAI stream. It ends with
``data: [DONE]`` only when the iterator finished cleanly; when it raises, the stream ends with
an error event instead (``event: error`` + ``data: {"error": {...}}``), which the official
``openai`` clients raise as ``openai.APIError``. It never ends a failed stream as if it had
succeeded, and it always closes the iterator (so a client that leaves releases the upstream).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from switchpoint.server.errors import sse_error

DONE = b"data: [DONE]\n\n"


def encode_chunk(chunk: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


async def sse_body(chunks: AsyncIterable[Mapping[str, Any]]) -> AsyncIterator[bytes]:
    """The bytes of an OpenAI stream: each chunk, then ``[DONE]``, or an error event."""
    try:
        async for chunk in chunks:
            yield encode_chunk(chunk)
    except Exception as exc:  # the response has started: report it, never end cleanly
        yield sse_error(exc)
        return
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE
