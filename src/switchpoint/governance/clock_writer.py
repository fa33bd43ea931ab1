"""The key store's latest time, written to disk on a thread of its own.

A lookup that moves the key store's time on (see :meth:`KeyStore.now
<switchpoint.governance.keys.KeyStore.now>`) hands the time here and goes on: the write (a
SQLite commit with ``synchronous=FULL``, so an fsync, or seconds behind a held lock) happens on
this writer's thread, never on the caller's, which in the service is the event loop. A caller
that must not answer before the file holds a time (a key refused for a time the file does not
yet hold, so that the refusal outlasts a crash) waits for it with :meth:`ClockWriter.wait_for`,
off the loop.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

log = logging.getLogger("switchpoint.governance")


class ClockWriter:
    """Writes the highest time handed to :meth:`post` with ``write`` (which raises on a refused
    write), one write at a time, the latest wins. A refused write is logged by ``refused``
    and tried again at the next post."""

    def __init__(self, write: Callable[[float], None],
                 refused: Callable[[Exception], None], name: str) -> None:
        self._write = write
        self._refused = refused
        self._name = name
        self._cond = threading.Condition()
        self._wanted = -math.inf   # the highest time posted
        self._written = -math.inf  # the highest time a write put in the file
        self._tried = -math.inf    # the highest time a finished write tried (taken or not)
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def written(self) -> float:
        """The highest time this writer has put in the file."""
        return self._written

    def post(self, latest: float) -> None:
        """Have ``latest`` written (at once, unless a write is under way: then after it)."""
        with self._cond:
            if self._stopping or latest <= self._wanted:
                return
            self._wanted = latest
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self, latest: float) -> bool:
        """Whether a write of at least ``latest`` was posted and not yet tried (what
        :meth:`wait_for` waits for). Read without the lock: it only turns false, and a post
        made on the caller's thread is seen by it."""
        return self._tried < latest and self._wanted >= latest and not self._stopping

    def wait_for(self, latest: float) -> bool:
        """Block until a write of at least ``latest`` was tried (posted before): whether the
        file took it."""
        with self._cond:
            while self.pending(latest):
                self._cond.wait(1.0)
            return self._written >= latest

    def stop(self) -> None:
        """Finish the write under way (one posted and not begun is left to the caller's own
        last write) and end the thread."""
        with self._cond:
            self._stopping = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._wanted <= self._tried and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                latest = self._wanted
            try:
                self._write(latest)
            except Exception as exc:  # (a refused write: said, and the next post tries again)
                self._refused(exc)
                ok = False
            else:
                ok = True
            with self._cond:
                self._tried = max(self._tried, latest)
                if ok:
                    self._written = max(self._written, latest)
                self._cond.notify_all()
