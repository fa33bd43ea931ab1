"""Writing a gateway stream as server-sent events, OpenAI style.

:func:`sse_body` turns a chunk iterator into the bytes of an OpenAI stream. It ends with
``data: [DONE]`` only when the iterator finished cleanly; when it raises, the stream ends with
an error event instead (``event: error`` + ``data: {"error": {...}}``), which the official
``openai`` clients raise as ``openai.APIError``. It never ends a failed stream as if it had
succeeded, and it always closes the iterator (so a client that leaves releases the upstream).

The chunks are read by a task of their own, at most :data:`READ_AHEAD` ahead of the client,
and every chunk already read when the client's connection is next written goes out in that one
write: an upstream that sends a burst of chunks costs one write to the client, not one per
chunk, and a slow one still has each chunk sent as soon as it arrives. :class:`SSEResponse`
sends the answer's head together with the stream's first events (already in hand when the
stream is answered), not in a write of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from switchpoint.gateway.rendering import is_large, render_off_loop
from switchpoint.server.errors import sse_error

DONE = b"data: [DONE]\n\n"
READ_AHEAD = 64  # chunks read, and held, ahead of what the client has been sent
_ENCODER = json.JSONEncoder(separators=(",", ":"))
# The same encoding, without what ``JSONEncoder.encode`` builds again for every call (a
# chunk, read from the upstream's JSON, holds no reference cycle to look for).
_ENCODE = (None if c_make_encoder is None else
           c_make_encoder(None, _ENCODER.default, encode_basestring_ascii, None, ":", ",",
                          False, False, True))
# The readers of streams still running (a task needs a reference until it ends).
_READERS: set[asyncio.Task[None]] = set()


class SSEResponse(StreamingResponse):
    """A ``text/event-stream`` answer whose head is sent with the body's first piece (so they
    leave in one write), then each piece as it comes."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As Starlette's: the answer is streamed while the client's leaving is listened for;
        a client that leaves ends it (the body iterator is closed) with no error, and an
        error of either is raised. The listening is one task beside the stream, not the task
        group Starlette builds for every answer (most of what answering a short stream cost
        beyond its events)."""
        task = asyncio.current_task()
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if scope["type"] != "http" or task is None \
                or tuple(map(int, spec.split("."))) >= (2, 4):
            await super().__call__(scope, receive, send)
            return
        listener = asyncio.get_running_loop().create_task(_cancel_when_left(receive, task))
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not listener.done() or listener.cancelled() or task.uncancel() > 0:
                raise  # (cancelled by another, or by another too)
            error = listener.exception()
            if error is not None:
                raise error from None
        else:
            if listener.done() and not listener.cancelled():
                task.uncancel()  # (it left as the answer ended: its cancel came to nothing)
                error = listener.exception()
                if error is not None:
                    raise error
        finally:
            if not listener.done():
                listener.cancel()
        if self.background is not None:
            await self.background()

    async def stream_response(self, send: Send) -> None:
        pieces = aiter(self.body_iterator)
        first = await anext(pieces, b"")
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        if first:
            await send({"type": "http.response.body", "body": _bytes(first, self.charset),
                        "more_body": True})
        async for piece in pieces:
            await send({"type": "http.response.body", "body": _bytes(piece, self.charset),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_when_left(receive: Receive, task: asyncio.Task[Any]) -> None:
    """Wait until the client leaves (or ``receive`` fails), then cancel ``task``."""
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    except asyncio.CancelledError:
        raise  # (the answer ended first)
    except BaseException:
        task.cancel()
        raise
    task.cancel()


def _bytes(piece: str | bytes | memoryview, charset: str) -> bytes | memoryview:
    return piece.encode(charset) if isinstance(piece, str) else piece


def encode_chunk(chunk: Mapping[str, Any]) -> bytes:
    return b"data: " + chunk_json(chunk) + b"\n\n"


def chunk_json(value: Any) -> bytes:
    """``value`` (a chunk, or a part of one) as the JSON a stream carries."""
    text = _ENCODER.encode(value) if _ENCODE is None else "".join(_ENCODE(value, 0))
    return text.encode()


async def sse_body(chunks: AsyncIterable[Mapping[str, Any]]) -> AsyncGenerator[bytes, None]:
    """The bytes of an OpenAI stream: each chunk, then ``[DONE]``, or an error event."""
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(READ_AHEAD)
    reader = asyncio.get_running_loop().create_task(_read(chunks, queue))
    _READERS.add(reader)
    reader.add_done_callback(_READERS.discard)
    try:
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            body = b"".join(item for item in items if isinstance(item, bytes))
            if body:
                yield body
            end = items[-1]  # the reader's last item, None or an exception, ends the queue
            if end is None:
                return
            if isinstance(end, Exception):
                raise end
    finally:
        # The client left (or the writer failed): stop reading; the reader closes the
        # iterator, which releases the upstream and logs how the request ended.
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _batches(chunks: AsyncIterable[Mapping[str, Any]]
                   ) -> AsyncIterator[Sequence[Mapping[str, Any]]]:
    """The chunks a list at a time where the iterator gives them so (a gateway stream: those
    one read of the upstream brought), else one by one."""
    anext_batch = getattr(chunks, "anext_batch", None)
    if anext_batch is None:
        async for chunk in chunks:
            yield (chunk,)
        return
    while True:
        try:
            batch = await anext_batch()
        except StopAsyncIteration:
            return
        yield batch


async def _read(chunks: AsyncIterable[Mapping[str, Any]],
                queue: asyncio.Queue[bytes | Exception | None]) -> None:
    """Every chunk of ``chunks`` encoded into ``queue``, then ``[DONE]`` or the error event,
    then ``None``. The iterator is closed however this ends, before the end goes in the queue;
    if closing it fails, that exception goes in instead (the writer raises it)."""
    tail = DONE
    try:
        try:
            async for batch in _batches(chunks):
                for chunk in batch:
                    # (a large chunk made bytes on a worker thread, as it was read)
                    encoded = (b"data: " + await render_off_loop(chunk, chunk_json) + b"\n\n"
                               if is_large(chunk) else encode_chunk(chunk))
                    if queue.full():
                        await queue.put(encoded)
                    else:  # (no coroutine for a put that cannot wait)
                        queue.put_nowait(encoded)
        except Exception as exc:  # the response has started: report it, never end cleanly
            tail = sse_error(exc)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
    except Exception as exc:
        await queue.put(exc)
        return
    await queue.put(tail)
    await queue.put(None)
