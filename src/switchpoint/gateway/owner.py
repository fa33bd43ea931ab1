"""One process serving from a data directory at a time: an advisory lock (``flock``) on
``data_dir/serve.lock``, taken before any state in it is opened and held until it is closed.

Budgets, rate limits, open reservations and session pins live in the memory of the process that
calls models through ``data_dir``, rebuilt from it at its start. Two such processes (two
``switchpoint serve``, or a service and a :class:`~switchpoint.gateway.Gateway` in Python code
or a ``switchpoint label`` run beside it) would each keep their own, and let every caller spend
each budget once per process. So whichever comes second is refused at once, naming the process
that holds the lock (a store holding it for a moment with no service running, to write what the
spill file beside the database keeps, or ``switchpoint prune`` pruning the feedback log, is
waited for instead, as long as it shows progress: see :func:`~switchpoint._files.brief_lock`).
The lock is per opening: two gateways in one process exclude each other too. The operating
system releases it when its process exits, however it exits, so a crashed service never blocks
its restart. What only reads or learns offline (``switchpoint keys``, ``feedback``, ``learn``,
``report``, ``prune``, and a gateway built with ``serves_chat=False``) takes no lock: it works
beside a running service, as docs/deployment.md says (its store leaves the spill file to the
service, see :meth:`~switchpoint.store.SQLiteStore.open`, and ``prune`` its feedback log, see
:mod:`switchpoint.store.retention`). ``switchpoint experiments end``, ``models unregister`` and
``keys clock --reset`` take the lock while they write, and are refused while a service holds
it: it keeps in memory what they change (see :func:`lock_while_stopped`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from switchpoint import _files
from switchpoint._files import (
    SERVE_LOCK,
    NotALockFileError,
    access_problem,
    brief_purpose,
    file_identity,
    held_briefly,
    lock_holder,
    open_identity,
    open_lock,
    take_lock,
)
from switchpoint._messages import quoted_path
from switchpoint.errors import DataDirInUseError, StoreError

log = logging.getLogger("switchpoint.gateway")
LOCK_FILENAME = SERVE_LOCK

# The lock files this process holds (by device and inode), with the pid that took each (a child
# made by fork inherits the table, not the locks' ownership): a refusal tells an opening that
# another gateway of this very process holds the directory, what a program can mend itself.
_HELD_HERE: dict[tuple[int, int], int] = {}
_HELD_LOCK = threading.Lock()


def _held_here(fd: int) -> bool:
    with _HELD_LOCK:
        return _HELD_HERE.get(open_identity(fd)) == os.getpid()


class DataDirLock:
    """Held while this process serves (calls models, spends budgets) from ``data_dir``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILENAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirLock:
        """Take the lock, or :class:`~switchpoint.errors.DataDirInUseError` when another
        process (or another gateway of this one) serves from the same directory
        (:class:`~switchpoint.errors.StoreError` when the lock file cannot be made)."""
        if self._fd is not None:
            return self
        try:
            fd = open_lock(self.path)
        except NotALockFileError as exc:
            raise StoreError(f"{quoted_path(self.path)}: cannot lock it, {exc.strerror}") from None
        except OSError as exc:
            hint = (access_problem(self.path, side_files=())
                    or "check that data_dir is a writable directory")
            raise StoreError(f"{quoted_path(self.path)}: cannot make the lock file that keeps a "
                             f"second service off this data_dir ({exc.strerror or exc}); "
                             f"{hint}") from None
        started = time.monotonic()
        try:
            taken = take_lock(fd)  # (a store writing the spill file: waited for)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{quoted_path(self.path)}: cannot lock it "
                             f"({exc.strerror or exc}); data_dir "
                             "must be on a file system that supports locks (not every network "
                             "file system does)") from None
        if not taken:
            holder = lock_holder(fd)
            stalled = held_briefly(fd)
            purpose = brief_purpose(fd)
            here = _held_here(fd)
            os.close(fd)
            waited = time.monotonic() - started
            if stalled and waited >= _files.BRIEF_WAIT_MAX_S:
                raise DataDirInUseError(
                    f"a switchpoint command{holder} holds data_dir "
                    f"{quoted_path(self.data_dir)}'s lock {purpose}, and was still "
                    f"at it after {_files.BRIEF_WAIT_MAX_S:g} s, the most a start waits (it "
                    "showed progress); start again once it is done (or stop it: nothing is "
                    "lost, what it did not get to stays as it was)", holder=holder)
            if stalled:
                raise DataDirInUseError(
                    f"a switchpoint command{holder} holds data_dir "
                    f"{quoted_path(self.data_dir)}'s lock {purpose}, and showed "
                    f"no progress for {_files.BRIEF_HOLD_S:g} s; start again once it is done "
                    "(or stop it: nothing is lost, what it did not get to stays as it was)",
                    holder=holder)
            if here:
                raise DataDirInUseError(
                    f"a Gateway of this process{holder} is serving from data_dir "
                    f"{quoted_path(self.data_dir)} already (it holds the directory until it is "
                    "closed): two would each enforce every budget and rate limit on their own, "
                    "so callers could spend twice; use that one, or close it first "
                    "(gateway.close(), or the end of its with block), or give this one another "
                    "data_dir", serving=True, holder=holder)
            raise DataDirInUseError(
                f"another switchpoint process{holder} is serving from data_dir "
                f"{quoted_path(self.data_dir)} (`switchpoint serve`, or a Gateway or "
                "`switchpoint label` "
                "calling models through it): two would each enforce every budget and rate "
                "limit on their own, so callers could spend twice; stop it first, or give this "
                "one another data_dir", serving=True, holder=holder)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # (a full disk, say: the lock goes with the descriptor)
            os.close(fd)
            raise StoreError(f"{quoted_path(self.path)}: cannot write this process's id into it "
                             f"({exc.strerror or exc}); check that data_dir's disk has room "
                             "and takes writes") from None
        self._fd = fd
        with _HELD_LOCK:
            _HELD_HERE[open_identity(fd)] = os.getpid()
        return self

    def keep(self) -> None:
        """Take the lock again if the file at :attr:`path` is no longer the one held (deleted,
        or data_dir restored from a backup while this process served): a lock on a file no
        one else sees keeps no second service off. Logged; when another process has locked
        the new file already, that is logged as an error, and this one holds what it held."""
        if self._fd is None:
            return
        if file_identity(self.path) == open_identity(self._fd):
            return
        old, self._fd = self._fd, None
        try:
            self.acquire()
        except DataDirInUseError as exc:
            self._fd = old
            log.error("%s was removed or replaced while this service ran, and %s", self.path,
                      str(exc).replace("another switchpoint process", "another process",
                                       1))
            return
        except StoreError as exc:
            self._fd = old
            log.error("%s was removed or replaced while this service ran and cannot be made "
                      "again (%s): a second service on data_dir would not be kept off", self.path,
                      exc)
            return
        _forget(old)
        os.close(old)
        log.warning("%s was removed or replaced while this service ran; it is locked again, "
                    "keeping a second service off data_dir", self.path)

    def release(self) -> None:
        """Let another process serve from ``data_dir`` (the file stays: removing it would let
        a process that opened it meanwhile lock a file no one else sees)."""
        if self._fd is None:
            return
        _forget(self._fd)
        os.close(self._fd)
        self._fd = None


def _forget(fd: int) -> None:
    """The lock ``fd`` holds is let go: no longer held here."""
    with _HELD_LOCK:
        identity = open_identity(fd)
        if _HELD_HERE.get(identity) == os.getpid():
            del _HELD_HERE[identity]


def lock_while_stopped(data_dir: str | Path, held: str) -> DataDirLock:
    """``data_dir``'s lock, taken by a command that writes there what a service keeps in
    memory; while a service serves from it, a :class:`~switchpoint.errors.DataDirInUseError`
    naming it and saying ``held`` (what it holds in memory, where a write here would not reach,
    and how to change it through the service instead)."""
    try:
        return DataDirLock(data_dir).acquire()
    except DataDirInUseError as exc:
        if not exc.serving:
            raise
        raise DataDirInUseError(
            f"a switchpoint service{exc.holder} is serving from data_dir "
            f"{quoted_path(data_dir)}, {held}", serving=True, holder=exc.holder) from None
