"""One labelling run at a time per output: an advisory lock (``flock``) on ``OUT.lock``, taken
before anything of ``OUT`` is read and held until the run ends.

A second run of the same command refuses at once, naming the process that holds the lock,
rather than asking (and paying for) every answer again and writing duplicate records. The
operating system releases the lock when its process exits, however it exits, so a crashed run
never blocks the next one; a run that ends normally removes the file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from switchpoint.errors import LabellingError
from switchpoint.labelling.journal import open_for_writing

LOCK_SUFFIX = ".lock"


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + LOCK_SUFFIX)


class OutputLock:
    """Held while a run may read or write ``out`` (a context manager)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = lock_path(out)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or :class:`~switchpoint.errors.LabellingError` when another process
        holds it."""
        while True:
            fd = open_for_writing(self.path, os.O_RDWR, source=self.out)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LabellingError(
                    f"another label run is writing {self.out}{holder}; wait for it to finish, "
                    "or write to another --out") from None
            except OSError as exc:
                os.close(fd)
                raise LabellingError(f"cannot lock {self.path} (so that no other run writes "
                                     f"it at the same time): {exc.strerror or exc}",
                                     source=self.out) from None
            if _still_there(fd, self.path):
                break
            os.close(fd)  # the run that held it removed it as we opened it: lock a new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: no one can lock a file going away
        os.close(self._fd)
        self._fd = None


def _holder(fd: int) -> str:
    """`` (pid N)`` of the process that holds the lock, when it has written it."""
    try:
        pid = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _still_there(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file ``fd`` has open."""
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
