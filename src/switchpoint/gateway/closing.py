"""Closing a gateway: new requests refused, its open streams closed (each logged as closed by
the client), the requests under way waited for up to their deadline, what is left on event
loops that run no more settled, the upstream connections closed, the housekeeping under way
finished, the synchronous methods' loop stopped, then its state in ``data_dir`` closed.
:class:`Closing` is the :class:`~switchpoint.gateway.engine.Gateway`'s; the gateway's
``aclose`` and ``close`` answer with it."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Protocol

import anyio.to_thread

from switchpoint._process import in_other_process
from switchpoint.errors import ReentrantCallError
from switchpoint.gateway.admission import Admission, running_loop
from switchpoint.gateway.chat_door import ChatDoor
from switchpoint.gateway.housekeeping import Housekeeping
from switchpoint.gateway.open_streams import OpenStreams
from switchpoint.gateway.state_files import StateFiles
from switchpoint.gateway.sync_bridge import LoopThread

if TYPE_CHECKING:
    from switchpoint.gateway.providers import ProviderRegistry

log = logging.getLogger("switchpoint.gateway")


class ClosingHost(Protocol):
    """What closing reads of its gateway, and lets go of there: the process that opened it,
    its admission, open streams, chat door, housekeeping, upstream adapters (None until
    made), the synchronous methods' loop (None until made; made here when a loop stopped
    left requests to settle), its state in ``data_dir``, and how long closing waits for the
    requests under way."""

    _pid: int | None
    _admission: Admission
    _streams: OpenStreams
    _chat: ChatDoor
    _housekeeping: Housekeeping
    _providers: ProviderRegistry | None
    _sync: LoopThread | None
    _state_files: StateFiles

    def _sync_loop(self) -> LoopThread: ...
    def _drain_s(self) -> float: ...


class Closing:
    """The closing of one gateway (``host``)."""

    def __init__(self, host: ClosingHost) -> None:
        self._host = host
        # Held through close(): a second caller (another thread) waits for the first's closing,
        # then finds nothing left to close.
        self._close_lock = threading.Lock()

    async def aclose(self) -> None:
        """:meth:`Gateway.aclose <switchpoint.gateway.engine.Gateway.aclose>`."""
        host = self._host
        if in_other_process(host._pid):
            return
        host._admission.shut()
        await host._streams.close_all()
        self._left_inside(await host._admission.adrain(host._drain_s(),
                                                       but=self._sync_loops()))
        await host._chat.close_stopped()
        await self._close_pool()
        await host._housekeeping.done()
        if host._sync is not None:  # what the synchronous methods opened, on their own loop
            sync = host._sync
            for step in (host._chat.close_stopped, self._close_pool):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(step(), sync.loop))
            host._sync = None
            await anyio.to_thread.run_sync(sync.stop)
        host._state_files.close()

    def close(self) -> None:
        """:meth:`Gateway.close <switchpoint.gateway.engine.Gateway.close>`."""
        host = self._host
        if in_other_process(host._pid):
            return
        if host._sync is not None and host._sync.runs_here():
            raise ReentrantCallError(
                "close() was called on the thread of the gateway's own event loop (from an "
                "observer's callback, which that loop runs, inside the call it tells of), and "
                "would wait for that call, which waits for it, then stop the loop under it; "
                "nothing was closed: close the gateway once the call has returned, or from "
                "another thread")
        host._admission.shut()
        with self._close_lock:
            self._left_inside(host._admission.drain(host._drain_s(),
                                                    but=(running_loop(), *self._sync_loops())))
            if host._chat.left_on_stopped_loops():
                host._sync_loop()  # (a loop of its own settles what is left on loops stopped)
            if host._sync is not None:  # (its streams' requests logged, as closed by the client)
                host._sync.run(host._chat.close_stopped())
                host._sync.run(self._close_pool())
                host._sync.stop()
                host._sync = None
            future = host._housekeeping.take()
            if future is not None:
                future.result()
            host._state_files.close()

    async def _close_pool(self) -> None:
        """Close the upstream connections of the running loop, if any were made."""
        if self._host._providers is not None:
            await self._host._providers.pool.aclose()

    def _sync_loops(self) -> tuple[asyncio.AbstractEventLoop, ...]:
        """The synchronous methods' loop, if it runs: what is counted in there is a part of a
        synchronous call (counted on its caller's thread) or a stream it returned, which
        closing closes there itself."""
        sync = self._host._sync
        return (sync.loop,) if sync is not None else ()

    @staticmethod
    def _left_inside(left: int) -> None:
        if left:
            log.warning("closing: %d request(s) still under way after gateway.max_total_s "
                        "(the longest a request may take) go on over a closed gateway: what "
                        "they would log or teach now is refused", left)
