"""Server-sent events: reading an upstream's stream.

Reading follows the WHATWG event-stream rules that matter for LLM APIs: ``data:`` lines of
one event are joined with newlines, ``event:`` names it, lines starting with ``:`` are
comments (keep-alives), and a blank line dispatches the event, unless its data is empty (a bare
``data:``, or an ``event: ping`` with no data: some servers keep a stream alive so). An event
still pending when the body ends is dispatched too (a truncated JSON payload then fails to
parse, which is what we want to notice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from switchpoint.errors import ResponseTooLarge


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str | None = None


class SSEParser:
    """The rules above a line at a time (line endings already stripped): :meth:`feed` answers
    the event a line completes, if any, and :meth:`end` the one still pending when the body
    ends. An event whose ``data:`` lines add up to more than ``max_event_chars`` raises
    :class:`~switchpoint.errors.ResponseTooLarge`."""

    def __init__(self, max_event_chars: int | None = None) -> None:
        self.max_event_chars = max_event_chars
        self._data: list[str] = []
        self._size = 0
        self._event: str | None = None

    def feed(self, raw: str) -> SSEEvent | None:
        line = raw.rstrip("\r\n")
        if not line:
            event = self.end()
            self._data, self._event, self._size = [], None, 0
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._size += len(value) + 1
            if self.max_event_chars is not None and self._size > self.max_event_chars:
                raise ResponseTooLarge(f"an event of the stream is over the limit of "
                                       f"{self.max_event_chars} characters "
                                       "(gateway.max_sse_line_bytes)")
            self._data.append(value)
        elif name == "event":
            self._event = value
        # id: and retry: are irrelevant to chat streams.
        return None

    def end(self) -> SSEEvent | None:
        data = "\n".join(self._data)
        return SSEEvent(data, self._event) if data else None


async def iter_sse(lines: AsyncIterator[str],
                   max_event_chars: int | None = None) -> AsyncIterator[SSEEvent]:
    """Events from the lines of an event-stream body (line endings already stripped). An
    event whose ``data:`` lines add up to more than ``max_event_chars`` raises
    :class:`~switchpoint.errors.ResponseTooLarge`."""
    parser = SSEParser(max_event_chars)
    async for raw in lines:
        event = parser.feed(raw)
        if event is not None:
            yield event
    event = parser.end()
    if event is not None:
        yield event


async def sse_event_batches(batches: AsyncIterator[list[str]],
                            max_event_chars: int | None = None
                            ) -> AsyncIterator[list[SSEEvent]]:
    """:func:`iter_sse` for lines that come a list at a time: the events each list completes,
    as one list (none when it completes none). An event over ``max_event_chars`` raises, once
    the events before it have been handed on."""
    parser = SSEParser(max_event_chars)
    async for lines in batches:
        events: list[SSEEvent] = []
        error: ResponseTooLarge | None = None
        try:
            for raw in lines:
                event = parser.feed(raw)
                if event is not None:
                    events.append(event)
        except ResponseTooLarge as exc:
            error = exc
        if events:
            yield events
        if error is not None:
            raise error
    event = parser.end()
    if event is not None:
        yield [event]
