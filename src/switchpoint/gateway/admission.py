"""Who is inside the gateway: each request counts itself in as it passes the open check and
out once it has ended (its log entry queued, what it taught kept), and closing waits for it.

::

    a request ─► enter ─► route, call, log, learn ─► leave
    closing   ─► shut (a request that comes now is refused) ─► drain (those inside end)
              ─► the log, pins, learning and keys close

So a request that passed its open check as the gateway closed either ends before the state it
uses is closed, its rows written and its outcome learned, or, coming once closing has begun, is
refused with the closed error before it does anything. A request is whatever reaches that
state: a route, a chat request, feedback, a comparison, an experiment's change, and a read (a
report, the stats, the learning status, an experiment's report, the budgets), each counted by
the gateway's method; over HTTP, each route that reaches it, from its key check to its answer
(the server's routes count themselves in); a synchronous call, on its caller's thread before
the gateway's own loop takes it up (its task carries the mark). A part of a request already
inside (a comparison's calls, the route an HTTP request makes, the rest of a stream its route
returned) is counted too but never refused, so closing never refuses part of a request it let
in, and waits for a part that outlasts it. Closing waits at most a bound (a request's own
deadline); what is still inside then is named in the log, and meets the closed state's own
clear errors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, cast

log = logging.getLogger("switchpoint.gateway")
# The request whose part runs, set while a request counted in runs (its tasks and worker
# threads inherit it): None outside any.
_INSIDE: ContextVar[object | None] = ContextVar("switchpoint_admitted", default=None)
# How often a drain looks again (a loop that stops or closes with a request inside tells no
# one).
_TICK_S = 0.05

Loop = asyncio.AbstractEventLoop | None
F = TypeVar("F", bound=Callable[..., Any])


def running_loop() -> Loop:
    """The running event loop, or None on a thread that runs none."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Admission:
    """The requests inside a gateway, by the event loop each runs on (None: a thread's)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # Each request inside, by its loop: a mark of its own, so one a closing let go of
        # (see _not_waited_for) counts out no other as it ends after all, with the mark of
        # the request it is a part of (None: none), so a count counts what callers made.
        self._inside: dict[Loop, dict[object, object | None]] = {}
        self._shut = False

    @property
    def is_shut(self) -> bool:
        """Whether closing has begun (until :meth:`reopen`): no request enters."""
        return self._shut

    def enter(self, refuse: Callable[[], Exception]) -> Callable[[], None]:
        """Count a request in, or raise ``refuse()`` once closing has begun; returns what
        counts it out, to call once it has ended (a second call does nothing). A part of a
        request already inside is counted too, never refused: closing waits for it as well,
        should it outlast its request (a stream's answer, read after its route returned)."""
        return self._enter(refuse)[1]

    def _enter(self, refuse: Callable[[], Exception]
               ) -> tuple[object, Callable[[], None]]:
        """:meth:`enter`, and the request's mark."""
        loop = running_loop()
        mark = object()
        part_of = _INSIDE.get()
        with self._cond:
            if self._shut and part_of is None:
                raise refuse()
            self._inside.setdefault(loop, {})[mark] = part_of

        def leave() -> None:
            with self._cond:
                inside = self._inside.get(loop)
                if inside is None or mark not in inside:
                    return  # (left already, or let go of by a closing)
                del inside[mark]
                if not inside:
                    del self._inside[loop]
                self._cond.notify_all()

        return mark, leave

    @contextmanager
    def admitted(self, refuse: Callable[[], Exception]) -> Iterator[None]:
        """:meth:`enter` for the block's length; what it calls counts as inside, a part of
        it."""
        mark, leave = self._enter(refuse)
        try:
            with self.within(mark):
                yield
        finally:
            leave()

    @staticmethod
    @contextmanager
    def within(part_of: object | None = None) -> Iterator[None]:
        """The block as a part of a request already counted in (``part_of``, the mark of the
        one :meth:`admitted` counts; by default, the request the running code is a part of,
        if any): what it calls, on its tasks and worker threads too, is let in while closing,
        never refused, and counted as a part of that request, not as one of its own."""
        token = _INSIDE.set(part_of if part_of is not None else _INSIDE.get() or object())
        try:
            yield
        finally:
            _INSIDE.reset(token)

    def shut(self) -> None:
        """Closing begins: from now until :meth:`reopen`, :meth:`enter` refuses."""
        with self._cond:
            self._shut = True

    def reopen(self) -> None:
        with self._cond:
            self._shut = False

    def inside(self, *, but: Collection[Loop] = ()) -> int:
        """How many requests are inside that can still end: not those of the loops in ``but``
        (one the caller blocks, one whose requests it ends itself), nor of a loop closed with
        them inside."""
        with self._cond:
            return self._count(but)

    def _count(self, but: Collection[Loop], stuck: Collection[Loop] = ()) -> int:
        return _requests({mark: part_of for loop, marks in self._inside.items()
                          if loop is None or (loop not in but and loop not in stuck
                                              and not loop.is_closed())
                          for mark, part_of in marks.items()})

    def _stuck(self, since: dict[Loop, float]) -> set[Loop]:
        """The loops with requests inside that run them no more: closed (at once: a closed
        loop never runs again), or seen stopped at every look for a tick or more (a loop
        between two ``run_until_complete`` is stopped a moment): ``since`` holds when each was
        first seen so (this look updates it)."""
        now = time.monotonic()
        stopped = {loop for loop in self._inside if loop is not None and runs_no_more(loop)}
        for loop in set(since) - stopped:
            del since[loop]
        for loop in stopped:
            since.setdefault(loop, now)
        return {loop for loop in stopped
                if loop.is_closed() or now - since[loop] >= _TICK_S}

    def drain(self, timeout: float, *, but: Collection[Loop] = ()) -> int:
        """Wait until no request that can end is inside (see :meth:`inside`), for at most
        ``timeout`` seconds; returns how many are still inside (the requests callers made: a
        part of one inside with it, such as a comparison's call, is counted within it). A loop
        closed, or seen stopped (not running) at every look for a tick or more, runs nothing
        while closing waits: its requests (a stream left open by a ``run_until_complete`` that
        returned, on a thread gone; a comparison on a loop closed under it) are not waited
        for, since only the closing can end them (see :func:`runs_no_more`): they are let go
        of, each counted out now (its own end, should its loop run again, counts out nothing
        more), so a later closing neither waits for nor warns of them again."""
        deadline = time.monotonic() + timeout
        since: dict[Loop, float] = {}
        with self._cond:
            while True:
                stuck = self._stuck(since)
                left = self._count(but, stuck)
                wait = deadline - time.monotonic()
                if not left or wait <= 0:
                    self._not_waited_for(but, stuck)
                    return left
                self._cond.wait(min(wait, _TICK_S))

    async def adrain(self, timeout: float, *, but: Collection[Loop] = ()) -> int:
        """:meth:`drain` from the running loop, whose own requests go on meanwhile."""
        deadline = time.monotonic() + timeout
        since: dict[Loop, float] = {}
        while True:
            with self._cond:
                stuck = self._stuck(since)
                left = self._count(but, stuck)
                if not left or time.monotonic() >= deadline:
                    self._not_waited_for(but, stuck)
                    return left
            await asyncio.sleep(_TICK_S)

    def _not_waited_for(self, but: Collection[Loop], stuck: Collection[Loop]) -> None:
        """Say how many requests a drain left on stopped loops, and let go of them (under the
        lock): closing settles what they hold (see :meth:`ChatDoor.close_stopped
        <switchpoint.gateway.chat_door.ChatDoor.close_stopped>`), and nothing else would
        count them out."""
        gone: dict[object, object | None] = {}
        for loop in stuck:
            if loop not in but:
                gone.update(self._inside.pop(loop, {}))
        n = _requests(gone)
        if n:
            log.warning("closing: %d request(s) on an event loop stopped or closed, not running "
                        "(a run_until_complete that returned, a thread that ended without "
                        "closing its loop, a loop closed with them under way), were not waited "
                        "for, since nothing runs them: a stream "
                        "among them is logged as broken now, a call waiting for its answer, or "
                        "one still being routed or planned, as closed by the client, each with "
                        "its budget hold settled; end what you start on a loop before it "
                        "stops", n)


def _requests(inside: dict[object, object | None]) -> int:
    """How many requests callers made are among ``inside`` (each mark with the mark of the
    request it is a part of): a part of one among them (a comparison's call) counts within
    it; one whose request is not among them (a stream's answer, read after its route
    returned) counts as one."""
    return sum(1 for part_of in inside.values() if part_of is None or part_of not in inside)


def runs_no_more(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` runs nothing now: closed, or stopped (a ``run_until_complete`` that
    returned, a thread that ended without closing its loop). As a gateway closes, what is left
    open on such a loop (a stream neither read to its end nor closed) can be ended only by
    the closing itself, on a loop that runs."""
    return loop.is_closed() or not loop.is_running()


class _Admits(Protocol):
    """What counts a request in (the gateway's :meth:`admitted`)."""

    def admitted(self) -> AbstractContextManager[None]: ...


def one_request(method: F) -> F:
    """An async method of the gateway as one request inside it (see
    :meth:`Admission.admitted`): refused once closing has begun, waited for by it."""
    @functools.wraps(method)
    async def inside(self: _Admits, *args: Any, **kwargs: Any) -> Any:
        with self.admitted():
            return await method(self, *args, **kwargs)

    return cast(F, inside)


def one_sync_request(method: F) -> F:
    """:func:`one_request` for a method that runs on its caller's thread."""
    @functools.wraps(method)
    def inside(self: _Admits, *args: Any, **kwargs: Any) -> Any:
        with self.admitted():
            return method(self, *args, **kwargs)

    return cast(F, inside)
