"""What stays in the process that opened it: a :class:`~switchpoint.gateway.Gateway` and its
store (their event loop thread, store writer thread, SQLite connections and ``data_dir``
lock). A child made by ``os.fork()`` (gunicorn's ``--preload``, ``multiprocessing``'s ``fork``
start method) holds a copy of such an object without its threads, and SQLite connections must
not cross a fork: a call there would wait for ever on a thread that is not there, or write
through the parent's connection. So the copy refuses, saying to make it after the fork."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from switchpoint.errors import ProcessBoundError


def in_other_process(opened_in: int | None) -> bool:
    """Whether this is not the process ``opened_in`` (a pid; None: not opened yet)."""
    return opened_in is not None and opened_in != os.getpid()


def check_process(opened_in: int | None, what: str) -> None:
    """Refuse ``what`` (as "a Gateway") outside the process that opened it."""
    if in_other_process(opened_in):
        raise ProcessBoundError(
            f"{what} was opened in process {opened_in}, and this is process {os.getpid()}, "
            "a child made by os.fork(): its threads, SQLite connections and data_dir lock stay "
            "in the parent, so it cannot be used here; make it after the fork, in each "
            "worker (gunicorn without --preload or in its post_fork hook, a multiprocessing "
            "Pool's initializer or the spawn start method)")


class ProcessThreads:
    """A pool of at most ``workers`` threads named ``name``, this process's own: made at its
    first use, and made anew in a child of a fork, which has none of its parent's threads."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers = workers
        self._name = name
        self._made: tuple[int, ThreadPoolExecutor] | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        """This process's pool."""
        with self._lock:
            if self._made is None or self._made[0] != os.getpid():
                self._made = (os.getpid(), ThreadPoolExecutor(
                    max_workers=self._workers, thread_name_prefix=self._name))
            return self._made[1]
