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
