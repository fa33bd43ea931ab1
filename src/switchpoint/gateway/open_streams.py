"""The streams a gateway handed out and that have not ended yet, each with the event loop it
runs on: one left unread past its request's deadline is closed, one its synchronous caller let
go of unclosed is closed at once, one whose loop closed under it is settled on the next loop
that hands one out, and closing the gateway (or a service that stops) closes or stops those of
the running loop and settles those left on a loop stopped but not closed (which nothing would
run again), each logged once. The closings under way are held until they end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from switchpoint.gateway.admission import runs_no_more
from switchpoint.gateway.results import ChatStream

log = logging.getLogger("switchpoint.gateway")

#: Why a stream whose event loop closed under it, neither read to its end nor closed, is
#: logged as broken (see :meth:`OpenStreams.forget_closed_loops`).
LOOP_CLOSED = (
    "its event loop closed (an asyncio.run that returned) while it was neither read to its end "
    "nor closed, so nothing could read it on; charged what came, as a stream its client "
    "leaves is: read a stream to its end or close it (await stream.aclose()) before its loop "
    "ends")
#: Why a stream left open on an event loop stopped, not closed, as the gateway closes is
#: logged as broken (see :meth:`OpenStreams.forget_closed_loops`).
LOOP_STOPPED = (
    "the gateway closed while its event loop was stopped, not running (a run_until_complete "
    "that returned, a thread that ended without closing its loop), and it was neither read to "
    "its end nor closed, so nothing could read it on; charged what came, as a stream its "
    "client leaves is: read a stream to its end or close it (await stream.aclose()) before "
    "its loop stops")


class OpenStreams:
    """The open streams of one gateway; ``max_total_s`` reads its requests' deadline (as the
    settings now in force give it)."""

    def __init__(self, max_total_s: Callable[[], float]) -> None:
        self._max_total_s = max_total_s
        # Streams handed out and not yet ended, with the loop each runs on: closing the
        # gateway closes them first, so each is logged (as closed by the client).
        self.open_streams: dict[ChatStream, asyncio.AbstractEventLoop] = {}
        # Closings of streams left unread past their deadline (a task needs a reference).
        self._closing: set[asyncio.Task[None]] = set()

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold ``task``, a closing, until it ends (:meth:`settled` waits for it)."""
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def add(self, stream: ChatStream, left: float | None,
            watches: list[asyncio.TimerHandle]) -> None:
        """Hold ``stream``, handed out on the running loop, until it ends (first settling
        those whose loop closed); ``left``: the seconds to its request's deadline (None:
        none), when it is looked at (:meth:`_expire`; its watch joins ``watches``)."""
        self.forget_closed_loops()
        loop = asyncio.get_running_loop()
        self.open_streams[stream] = loop
        if left is not None:
            watches.append(loop.call_later(max(0.0, left), self._expire, stream, watches))

    def discard(self, stream: ChatStream) -> None:
        """``stream`` ended."""
        self.open_streams.pop(stream, None)

    async def close_all(self, *, stopped: bool = False) -> None:
        """Close the open streams of the running loop, so their requests are logged (and
        settle those whose loop has closed, or, ``stopped``, runs no more)."""
        await asyncio.gather(*self.forget_closed_loops(stopped=stopped),
                             return_exceptions=True)
        loop = asyncio.get_running_loop()
        for stream, on in list(self.open_streams.items()):
            if on is loop:
                try:
                    await stream.aclose()
                except Exception as exc:  # (closing the rest matters more)
                    log.error("a stream left open at close did not close cleanly: %s", exc)
                self.open_streams.pop(stream, None)

    def _expire(self, stream: ChatStream, watches: list[asyncio.TimerHandle]) -> None:
        """The request's deadline ran out on ``stream``, still open: past it a read gets
        nothing more. One nobody reads (its caller kept it, or dropped it, and never closed it;
        over HTTP, a client that stopped reading, so the answer cannot be sent on) is closed
        now, so its upstream connection, its budget reservation and its log entry are not held
        for as long as its event loop runs; it is logged as broken by the deadline, as a read
        under way that meets it is. Such a read meets the deadline itself; the stream is looked
        at again a second later."""
        if stream not in self.open_streams:
            return
        loop = asyncio.get_running_loop()
        if not stream.idle:
            watches.append(loop.call_later(1.0, self._expire, stream, watches))
            return
        why = (f"nothing read it before the request's deadline (gateway.max_total_s: "
               f"{self._max_total_s():g}s) ran out, so the gateway closed it and let its "
               "upstream go; a caller reads a stream to its end within the deadline or closes it "
               "(in Python: await stream.aclose()), or raises gateway.max_total_s")
        log.warning("stream of request %s: %s", stream.switchpoint.request_id, why)
        stream.expire(why)  # at once: no read may begin before it is closed
        self.keep(loop.create_task(self._close_unread(stream)))

    def dropped(self, stream: ChatStream) -> None:
        """A synchronous stream its caller let go of, neither read to its end nor closed (a
        ``for`` loop over it left with ``break``, one never read): closed now, on the loop
        running it, as :meth:`SyncChatStream.close` closes it (logged as closed by the
        client), so its upstream connection and its budget hold are let go at once rather
        than at its deadline, as a generator dropped half-read is closed."""
        if stream not in self.open_streams:
            return
        self.keep(asyncio.get_running_loop().create_task(
            self._close_unread(stream, "a stream its caller let go of unclosed")))

    async def _close_unread(self, stream: ChatStream,
                            what: str = "a stream left unread past its deadline") -> None:
        try:
            await stream.aclose()
        except Exception as exc:  # (what it held is released as far as it can be)
            log.error("%s did not close cleanly: %s", what, exc)
        self.open_streams.pop(stream, None)

    def stop(self, loop: asyncio.AbstractEventLoop, why: str) -> int:
        """Stop the open streams of ``loop`` (see :meth:`Gateway.stop_in_flight
        <switchpoint.gateway.engine.Gateway.stop_in_flight>`), closing those nobody reads;
        how many."""
        ended = 0
        for stream, on in list(self.open_streams.items()):
            if on is not loop:
                continue
            idle = stream.idle
            stream.stop(why)
            ended += 1
            if idle:
                self.keep(loop.create_task(self._close_unread(stream)))
        return ended

    async def settled(self) -> None:
        """Wait for the closings under way."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    def forget_closed_loops(self, *, stopped: bool = False
                            ) -> list[asyncio.Task[None]]:
        """Settle and drop the open streams whose event loop has closed (an ``asyncio.run``
        that returned without finishing or closing its stream): they can never be read on nor
        closed there, so each is logged now, on the running loop, as broken saying so, its
        budget hold settled as for a stream its client left (see :meth:`ChatStream.abandon`);
        kept, they would hold their reservations, and the gateway would grow, stream after
        stream. As the gateway closes (``stopped``), so are those whose loop is stopped, not
        running (:data:`LOOP_STOPPED`): only the closing can end them now. Returns the tasks
        that do so."""
        gone = [s for s, on in list(self.open_streams.items())
                if on.is_closed() or (stopped and runs_no_more(on))]
        if not gone:
            return []
        loop = asyncio.get_running_loop()
        tasks = []
        for stream in gone:
            on = self.open_streams.pop(stream, loop)
            task = loop.create_task(stream.abandon(LOOP_CLOSED if on.is_closed() else LOOP_STOPPED))
            self.keep(task)
            tasks.append(task)
        log.warning("%d stream(s) were left neither finished nor closed when their event loop "
                    "closed (or stopped, as the gateway closed); each is logged as broken and "
                    "its budget hold settled now: close a stream you stop reading (await "
                    "stream.aclose())", len(gone))
        return tasks
