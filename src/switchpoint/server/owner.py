"""One serving process per data directory: an advisory lock (``flock``) on
``data_dir/serve.lock``, taken before any state in it is opened and held until the process ends.

Budgets, rate limits, open reservations and session pins live in the serving process's memory,
rebuilt from ``data_dir`` at its start; a second ``switchpoint serve`` on the same directory
would keep its own, and let every caller spend each budget once per process. So a second one
refuses at once, naming the process that holds the lock. The operating system releases the lock
when its process exits, however it exits, so a crashed service never blocks its restart. The
offline commands (``switchpoint keys``, ``feedback``, ``learn``, ``report``, ``prune``) take no
lock: they work beside a running service, as the README says.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from switchpoint._files import lock_holder
from switchpoint.errors import ServeError

LOCK_FILENAME = "serve.lock"


class DataDirLock:
    """Held while this process serves from ``data_dir``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock, or :class:`~switchpoint.errors.ServeError` when another process
        serves from the same directory (or the lock file cannot be made)."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ServeError(f"{self.path}: cannot make the lock file that keeps a second "
                             f"service off this data_dir ({exc.strerror or exc}); check that "
                             "data_dir is a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            os.close(fd)
            raise ServeError(
                f"another switchpoint service{holder} is serving from data_dir "
                f"{self.data_dir}: two would each enforce every budget and rate limit on their "
                "own, so callers could spend twice; stop it first, or give this one another "
                "data_dir") from None
        except OSError as exc:
            os.close(fd)
            raise ServeError(f"{self.path}: cannot lock it ({exc.strerror or exc}); data_dir "
                             "must be on a file system that supports locks (not every network "
                             "file system does)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let another process serve from ``data_dir`` (the file stays: removing it would let
        a process that opened it meanwhile lock a file no one else sees)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
