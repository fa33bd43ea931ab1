"""The synchronous methods' bridge to the gateway's async work: an event loop on a daemon
thread of its own (:class:`LoopThread`), which each synchronous call runs its coroutine on and
waits for, and a :class:`~switchpoint.gateway.results.ChatStream` read from synchronous code
(:class:`SyncChatStream`) on that loop. What a call is told when the loop stops under it, or
when it comes as the interpreter exits, is said here too."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from switchpoint.errors import GatewayClosedError, ReentrantCallError, StoreError
from switchpoint.gateway.results import ChatCompletionChunk, ChatStream

log = logging.getLogger("switchpoint.gateway")

# How long a synchronous call interrupted while it waits (Ctrl-C) is given to settle once
# it is cancelled: its hold settled, its log entry written, its upstream let go.
INTERRUPTED_SETTLE_S = 5.0
# How long the synchronous methods' loop waits, as the gateway closes, for the tasks still
# pending on it to end (and again once they are cancelled).
LOOP_DRAIN_S = 2.0
T = TypeVar("T")


class SyncChatStream:
    """A :class:`ChatStream` read from synchronous code (``for chunk in stream``)."""

    def __init__(self, stream: ChatStream, loop: LoopThread,
                 dropped: Callable[[ChatStream], None]) -> None:
        """``dropped``: run on ``loop`` when this is collected with the stream still open."""
        self._stream = stream
        self._loop = loop
        self._dropped = dropped
        self.switchpoint = stream.switchpoint

    def __del__(self) -> None:
        """Let go of unfinished and unclosed (``for chunk in gateway.stream(...)`` left with
        ``break``): the stream is closed on the gateway's loop, without waiting here (this may
        run on any thread, that loop's included), as :meth:`close` would close it."""
        stream = getattr(self, "_stream", None)
        if stream is None or stream.ended or sys.is_finalizing():
            return  # (at exit the gateway closes what is still open)
        with contextlib.suppress(RuntimeError):  # (its loop closed: the gateway closed it)
            self._loop.loop.call_soon_threadsafe(self._dropped, stream)

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        if self._loop.loop.is_closed():  # the gateway closed it (and logged it) as it closed
            raise StoreError("the gateway was closed while this stream was open, so the "
                             "stream was closed there (and logged as closed by the client); "
                             "ask again on an open gateway")
        try:
            return self._loop.run(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Stop reading early and release the upstream."""
        if not self._loop.loop.is_closed():  # (closing the gateway closed it already)
            self._loop.run(self._stream.aclose())

    def __enter__(self) -> SyncChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



#: What a synchronous call is told when the gateway closes under it (see :meth:`LoopThread.run`).
CLOSED_DURING_CALL = (
    "the gateway was closed (Gateway.close, from another thread or at exit) while this call "
    "was under way; it was waited for until its deadline (gateway.max_total_s) and given "
    f"{LOOP_DRAIN_S:g} s more to end, then cancelled (a chat request is "
    "logged as closed by the client, its budget hold settled); close the gateway once its "
    "calls have returned, or make this call on an open gateway")
#: What a synchronous call made as the interpreter finalizes is told (see :meth:`LoopThread.run`).
AT_EXIT = (
    "the interpreter is exiting (past its atexit handlers: its threads, the gateway's own "
    "event loop among them, no longer run), so this synchronous call could only wait for that "
    "loop in vain; nothing was done: make the call before the interpreter exits, before the "
    "script ends or in an atexit handler (one registered after the gateway was opened runs "
    "while it is still open)")
# How often a synchronous call's wait looks whether the loop it waits on has stopped.
_WAIT_TICK_S = 0.5


class LoopThread:
    """An event loop on a daemon thread, for the synchronous methods."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopping = False  # stop() has begun: no call starts on it any more
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name="switchpoint-gateway", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it. Should the wait be interrupted (Ctrl-C's
        KeyboardInterrupt, or another signal handler's exception), the call is cancelled there,
        as a client that leaves cancels its request over HTTP (an upstream call under way let
        go, its budget hold settled, logged once; a stream whose read it was is closed), and
        waited for up to :data:`INTERRUPTED_SETTLE_S` while that is done before the
        interruption goes on: it is not left running with nobody to take its answer. A call
        the loop's :meth:`stop` cancels, or one that comes as it stops, raises
        :class:`~switchpoint.errors.StoreError` saying the gateway was closed during it
        (:data:`CLOSED_DURING_CALL`), not a bare ``CancelledError``, nor waits for ever. One
        made as the interpreter finalizes (from an object's ``__del__`` as its modules are
        torn down), when the loop's thread runs no more, raises
        :class:`~switchpoint.errors.GatewayClosedError` at once (:data:`AT_EXIT`)."""
        if sys.is_finalizing():
            coro.close()
            raise GatewayClosedError(AT_EXIT)
        if self.runs_here():  # (a callback the loop runs)
            coro.close()
            raise ReentrantCallError(
                "a synchronous method of the gateway (route, complete, report_outcome, reading "
                "a stream, ...) was called on the thread of its own event loop (from an "
                "observer's callback, which that loop runs), and would wait for the loop, "
                "which waits for it, for ever; nothing was done: call it from another thread, "
                "or schedule its async form there "
                "(asyncio.get_running_loop().create_task(gateway.aroute(...)))")
        ended = threading.Event()
        started: list[asyncio.Task[T]] = []
        context = contextvars.copy_context()  # (the caller's: whether it was counted in)

        claimed = threading.Lock()  # (by the loop as it starts it, or by a caller gone first)

        def start() -> None:
            if not claimed.acquire(blocking=False):
                return  # (its caller was interrupted before the loop took it up: never begun)
            if self.stopping:  # (closing: it would be cancelled, or never end)
                coro.close()
                ended.set()
                return
            task = self.loop.create_task(coro, context=context)
            task.add_done_callback(lambda _: ended.set())
            started.append(task)

        if self.stopping:
            coro.close()
            raise StoreError(CLOSED_DURING_CALL)
        try:
            self.loop.call_soon_threadsafe(start)
            while not ended.wait(_WAIT_TICK_S):
                if not self.thread.is_alive():  # (the loop stopped before it ended)
                    if claimed.acquire(blocking=False):
                        coro.close()
                    raise StoreError(CLOSED_DURING_CALL)
        except StoreError:
            raise
        except BaseException as exc:
            if claimed.acquire(blocking=False):  # (the loop never took it up: never begun)
                coro.close()
                if isinstance(exc, RuntimeError) and self.loop.is_closed():
                    raise StoreError(CLOSED_DURING_CALL) from None
                raise
            with contextlib.suppress(RuntimeError):  # (a loop closed meanwhile)
                self.loop.call_soon_threadsafe(lambda: started and started[0].cancel())
            ended.wait(INTERRUPTED_SETTLE_S)
            if started and started[0].done() and not started[0].cancelled():
                started[0].exception()  # (it ended first: its error goes with it, unraised)
            started.clear()  # (and what it made is let go of: a stream, closed as dropped)
            raise
        if not started or (started[0].cancelled() and self.stopping):
            raise StoreError(CLOSED_DURING_CALL)
        return started[0].result()

    def runs_here(self) -> bool:
        """This thread is the loop's: a call it runs (an observer's callback) is on it."""
        return threading.current_thread() is self.thread

    def stop(self) -> None:
        """Stop the loop and close it, once the tasks still pending on it (a call another
        thread waits for, a generator's closing, scheduled as it was collected) have ended
        (up to :data:`LOOP_DRAIN_S`, then they are cancelled), and then the async generators
        left open on it are closed. None is destroyed while pending. No call starts on it
        from now on (see :meth:`run`)."""
        self.stopping = True
        try:
            asyncio.run_coroutine_threadsafe(self._drain(), self.loop).result(
                timeout=2 * LOOP_DRAIN_S + 1)
        except Exception as exc:  # (stopped all the same)
            log.error("the gateway's event loop did not wind down cleanly: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    async def _drain(self) -> None:
        # The tasks first, as asyncio.run ends a loop: a generator a call still runs would
        # not close (its call, another thread's, got 'generator didn't stop after athrow()').
        me = asyncio.current_task()
        for cancel in (False, True):
            pending = [t for t in asyncio.all_tasks() if t is not me]
            if not pending:
                break
            for task in pending if cancel else ():
                task.cancel()
            await asyncio.wait(pending, timeout=LOOP_DRAIN_S)
        await self.loop.shutdown_asyncgens()
