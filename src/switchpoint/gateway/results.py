"""What the gateway hands back: OpenAI-shaped answers, and how each was reached.

:class:`ChatCompletion` and :class:`ChatCompletionChunk` are the upstream's answer as a plain
``dict`` (exactly what the HTTP gateway serialises) with attribute access on top, so
``reply.choices[0].message.content`` reads as it does with the ``openai`` client.
``reply.switchpoint`` is a :class:`CallInfo`: who answered, who was routed to, why, the pin,
every attempt, tokens and cost. :class:`ChatStream` is an async iterator of chunks that writes
the request log entry as the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from switchpoint.catalog import usd
from switchpoint.decision import RoutingDecision
from switchpoint.errors import ServiceStopped, StreamBroken, StreamInUseError
from switchpoint.gateway.failover import FailoverStream

log = logging.getLogger("switchpoint.gateway")

# What a read of a stream says once an earlier read of it was cancelled.
CANCELLED_READ = ("a read of this stream was cancelled (its task was cancelled or timed out), "
                  "so the gateway closed the stream there and let its upstream go; ask again "
                  "for a new answer (to wait longer for a chunk, give the read more time "
                  "rather than cancelling it)")


class OpenAIObject(dict[str, Any]):
    """A ``dict`` whose keys also read as attributes, recursively (``obj.choices[0].text``).

    A missing key reads as ``None`` through an attribute (as optional fields do in the
    ``openai`` client's models) and raises ``KeyError`` through ``[]``.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _wrap(self.get(name))

    def to_dict(self) -> dict[str, Any]:
        """A plain-``dict`` copy (JSON-ready)."""
        return dict(self)


class _List(list[Any]):
    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        return _wrap(super().__getitem__(index))

    def __iter__(self) -> Any:
        return (_wrap(v) for v in super().__iter__())


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, OpenAIObject):
        return OpenAIObject(value)
    if isinstance(value, list) and not isinstance(value, _List):
        return _List(value)
    return value


@dataclass
class CallInfo:
    """How one chat request was answered (the ``x-switchpoint-*`` headers say the same)."""

    request_id: str
    requested_model: str
    routed_model: str | None
    model: str | None = None
    upstream_model: str | None = None
    decision: RoutingDecision | None = None
    pin_state: str = "fresh"
    pin: dict[str, Any] = field(default_factory=dict)
    reasoning: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    models_tried: list[str] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    planning_ms: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    key_id: str | None = None
    tenant: str | None = None
    charged_usd: float | None = None  # what the request's budgets were charged

    @property
    def decision_id(self) -> str:
        """The id feedback names this answer by: the routing decision's, or (a named model, a
        hard-pinned session: nothing was routed) the request's own id."""
        return self.decision.decision_id if self.decision is not None else self.request_id

    @property
    def escalated(self) -> bool:
        """More than one model was tried: the first failed and another answered (or
        failed)."""
        return len(self.models_tried) > 1


class ChatCompletion(OpenAIObject):
    """An OpenAI ``chat.completion``; ``switchpoint`` says how it was reached."""

    __slots__ = ("switchpoint",)

    def __init__(self, body: dict[str, Any], info: CallInfo) -> None:
        super().__init__(body)
        self.switchpoint = info


class ChatCompletionChunk(OpenAIObject):
    """One OpenAI ``chat.completion.chunk``."""

    __slots__ = ()


# Writes the stream's log entry: (stream, wait for the commit?) -> awaitable.
StreamLogger = Callable[[FailoverStream, bool], Awaitable[None]]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ChatStream:
    """A committed stream: iterate it (``async for chunk in stream``) once.

    The first content chunk has already arrived from the answering model. The iterator ends
    after the upstream's last chunk, once the request log entry is committed; if the stream
    breaks after it started it raises :class:`~switchpoint.errors.StreamBroken` (logged as
    well). Stop early with :meth:`aclose`: the request is logged as closed by the client.
    A read that is cancelled (its task cancelled, or timed out) closes it so too: what it
    was reading is cut, and any later read raises :class:`~switchpoint.errors.StreamBroken`.
    One left unread past its request's deadline is closed by the gateway (:meth:`expire`).
    ``switchpoint`` (a :class:`CallInfo`) is filled in as the stream goes: tokens and cost once
    the final chunk has arrived; the pin state changes when the model the pin sent the request
    to breaks the stream (it then says ``evicted_post_failure``, as the log does).
    """

    def __init__(self, stream: FailoverStream, info: CallInfo, log: StreamLogger,
                 price_usage: bool, cost_cap: float | None = None) -> None:
        """``cost_cap``: the most the request's budgets may be charged for this model's
        answer (its worst case held); usage priced past it is not believed, so the usage
        chunk says the cap, as the log and the budgets do."""
        self.switchpoint = info
        self._stream = stream
        self._log = log
        self._price_usage = price_usage
        self._cost_cap = cost_cap
        self._iterator: AsyncIterator[list[ChatCompletionChunk]] | None = None
        self._logged = False
        self._reading = False
        self._reader: asyncio.Task[Any] | None = None  # the task reading it, while one does
        self._interrupted = False
        self._expired: StreamBroken | None = None
        # the event loop that made it, which its upstream connection belongs to
        self._loop: asyncio.AbstractEventLoop | None = _running_loop()

    @property
    def model(self) -> str:
        """The catalog model whose answer this stream carries."""
        return self._stream.model

    @property
    def ended(self) -> bool:
        """Whether it has ended (read to its end, broken, closed) and its request is logged."""
        return self._logged

    @property
    def idle(self) -> bool:
        """Whether nobody is reading it now: not begun, or between two chunks."""
        return not self._reading

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return (await self._read(singly=True))[0]

    async def anext_batch(self) -> list[ChatCompletionChunk]:
        """The next chunks, as many as one read of the upstream brought (never none); raises
        ``StopAsyncIteration`` at the end, as ``__anext__`` does. Read a stream either this
        way or with ``async for``, not both."""
        return await self._read(singly=False)

    async def _read(self, *, singly: bool) -> list[ChatCompletionChunk]:
        if self._reading:  # (a second reader: the read under way is left as it is)
            raise StreamInUseError(
                "this stream is being read by another reader (a thread or a task) now; a "
                "stream is read by one reader, each chunk once: read it from one thread or "
                "task")
        made_on = self._loop
        if (made_on is not None and not made_on.is_closed()
                and made_on is not asyncio.get_running_loop()):
            # (its upstream connection belongs to that loop, and awaiting it here would break
            # the stream with asyncio's "attached to a different loop": nothing is read, and
            # the stream stays as it was, to be read on its own loop)
            raise StreamInUseError(
                "this stream was made on another event loop, which still runs, and a stream "
                "is read on the event loop that made it (its upstream connection belongs to "
                "that loop); nothing was read, and the stream goes on: read it on the loop that "
                "made it (in the task that called astream, or by "
                "asyncio.run_coroutine_threadsafe(anext(stream), that_loop) from another "
                "thread), or call gateway.stream(...) for a stream any one thread may read")
        if self._expired is not None:
            raise self._expired
        if self._iterator is None:
            self._iterator = self._iterate(singly)
        self._reading = True
        self._reader = asyncio.current_task()
        try:
            return await anext(self._iterator)
        except asyncio.CancelledError:
            # Interrupted by :meth:`stop`: the read ends as broken.
            reader = self._reader
            if self._interrupted and reader is not None and reader.uncancel() == 0:
                assert self._expired is not None
                raise self._expired from None
            # Its caller gave the read up (its task cancelled, a timeout around it): the
            # answer it was reading is cut and cannot be read on, so the stream is closed now,
            # as an HTTP client that leaves closes it (its upstream let go, its budget hold
            # settled, logged once as closed by the client); a later read says so.
            if self._expired is None:
                self._expired = StreamBroken(CANCELLED_READ, model=self.model,
                                             after_first_byte=True)
            try:
                await self.aclose()
            except Exception as exc:  # (the cancellation is what the caller is told)
                log.error("request %s: a stream whose read was cancelled did not close "
                          "cleanly: %s", self.switchpoint.request_id, exc)
            raise
        finally:
            self._reading = False
            self._reader = None

    async def _iterate(self, singly: bool) -> AsyncIterator[list[ChatCompletionChunk]]:
        stream = self._stream
        try:
            async for chunks in stream.batches(singly=singly):
                ready = []
                for chunk in chunks:
                    if self._price_usage and isinstance(chunk.get("usage"), dict):
                        cost = stream.cost_usd  # None: a model without prices, its cost unknown
                        if cost is not None and self._cost_cap is not None:
                            cost = min(cost, self._cost_cap)
                        chunk["usage"]["cost"] = None if cost is None else usd(cost)
                    ready.append(ChatCompletionChunk(chunk))
                yield ready
        except StreamBroken:
            await self._finish(wait=True)
            raise
        await self._finish(wait=True)

    async def _finish(self, *, wait: bool) -> None:
        if self._logged:
            return
        self._logged = True
        await self._log(self._stream, wait)

    async def aclose(self) -> None:
        """Stop reading (the client left): release the upstream and log what happened."""
        if self._iterator is not None:
            aclose = getattr(self._iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._stream.aclose()
        await self._finish(wait=False)

    async def abandon(self, why: str) -> None:
        """Log it as broken saying ``why``, its budget hold settled, where its event loop has
        closed: its upstream connection went with that loop, so it is not closed (as
        :meth:`aclose` would close it), only forsaken (see
        :meth:`~switchpoint.gateway.failover.FailoverStream.forsake`)."""
        if self._logged:
            return
        self.expire(why)
        self._stream.forsake()
        await self._finish(wait=False)

    def expire(self, why: str) -> None:
        """Give it up for the caller that stopped reading it (only while :attr:`idle`): from
        now on a read raises :class:`~switchpoint.errors.StreamBroken` saying ``why``, and
        :meth:`aclose`, which must follow, logs it as a broken stream (``stream_broken``: the
        gateway, not the client, closed it), with ``why``."""
        self._expired = StreamBroken(why, model=self.model, after_first_byte=True)
        self._stream.closed_because = why

    def stop(self, why: str) -> None:
        """End it now, for a service that stops: a read under way is interrupted, and it and
        any later read raise :class:`~switchpoint.errors.ServiceStopped` saying ``why``;
        :meth:`aclose`, which must follow (an idle stream's closer calls it), logs it as a
        broken stream of kind ``service_stopped``, its budget hold settled as for any stream
        that ended early. A stream whose end is already in hand is left to finish."""
        if self._logged or self._stream.completed:
            return
        self._expired = ServiceStopped(why, model=self.model)
        self._stream.closed_because = why
        self._stream.closed_kind = ServiceStopped.kind
        if self._reader is not None and not self._interrupted:
            self._interrupted = True
            self._reader.cancel()
