"""Server-sent events: reading an upstream's stream and writing the gateway's.

Reading follows the WHATWG event-stream rules that matter for LLM APIs: ``data:`` lines of
one event are joined with newlines, ``event:`` names it, lines starting with ``:`` are
comments (keep-alives), and a blank line dispatches the event. An event still pending when the
body ends is dispatched too (a truncated JSON payload then fails to parse, which is what we
want to notice).

Writing: :func:`sse_body` turns a chunk iterator into the bytes of an OpenAI-style stream. It
ends with ``data: [DONE]`` only when the iterator finished cleanly; when it raises, the stream
ends with an error event instead (``event: error`` + ``data: {"error": {...}}``), which the
official ``openai`` clients raise as ``openai.APIError``. It never ends a failed stream as if
it had succeeded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from switchpoint.providers.base import ProviderError

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str | None = None


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Events from the lines of an event-stream body (line endings already stripped)."""
    data: list[str] = []
    event: str | None = None
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent("\n".join(data), event)
            data, event = [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        # id: and retry: are irrelevant to chat streams.
    if data:
        yield SSEEvent("\n".join(data), event)


def encode_chunk(chunk: Mapping[str, Any]) -> bytes:
    """One ``data:`` event holding a chunk."""
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def encode_error(error: ProviderError | Mapping[str, Any]) -> bytes:
    """An error event the ``openai`` clients raise on (``openai.APIError``)."""
    payload = error.to_openai_error() if isinstance(error, ProviderError) else dict(error)
    if "error" not in payload:
        payload = {"error": payload}
    return b"event: error\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def sse_body(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The bytes of an OpenAI stream: each chunk, then ``[DONE]``, or an error event on failure.

    A :class:`~switchpoint.providers.base.ProviderError` from ``chunks`` becomes its own error
    event; any other exception becomes a generic ``stream_broken`` error event (and is not
    re-raised, since the response has already started). The iterator is always closed.
    """
    try:
        async for chunk in chunks:
            yield encode_chunk(chunk)
    except ProviderError as exc:
        yield encode_error(exc)
        return
    except Exception as exc:  # the response has started: report, never end cleanly
        yield encode_error({"error": {"message": f"the stream failed: {type(exc).__name__}",
                                      "type": "stream_broken", "code": "stream_broken",
                                      "param": None}})
        return
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE
