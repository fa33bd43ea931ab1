"""Server-sent events: reading an upstream's stream.

Reading follows the WHATWG event-stream rules that matter for LLM APIs: ``data:`` lines of
one event are joined with newlines, ``event:`` names it, lines starting with ``:`` are
comments (keep-alives), and a blank line dispatches the event. An event still pending when the
body ends is dispatched too (a truncated JSON payload then fails to parse, which is what we
want to notice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from switchpoint.errors import ResponseTooLarge


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str | None = None


async def iter_sse(lines: AsyncIterator[str],
                   max_event_chars: int | None = None) -> AsyncIterator[SSEEvent]:
    """Events from the lines of an event-stream body (line endings already stripped). An
    event whose ``data:`` lines add up to more than ``max_event_chars`` raises
    :class:`~switchpoint.errors.ResponseTooLarge`."""
    data: list[str] = []
    size = 0
    event: str | None = None
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent("\n".join(data), event)
            data, event, size = [], None, 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            size += len(value) + 1
            if max_event_chars is not None and size > max_event_chars:
                raise ResponseTooLarge(f"an event of the stream is over the limit of "
                                       f"{max_event_chars} characters "
                                       "(gateway.max_sse_line_bytes)")
            data.append(value)
        elif name == "event":
            event = value
        # id: and retry: are irrelevant to chat streams.
    if data:
        yield SSEEvent("\n".join(data), event)
