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

from switchpoint._files import lock_holder
from switchpoint.errors import LabellingError
from switchpoint.labelling.journal import open_for_writing, refuse_link

LOCK_SUFFIX = ".lock"


def lock_path(out: Path) -> Path:
    """Beside the file ``out`` names, whatever names it (a symbolic link, a relative path):
    two runs writing one file through different names still exclude each other."""
    real = out.resolve()
    return real.with_name(real.name + LOCK_SUFFIX)


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
            refuse_link(self.path, "lock file", self.out)  # never follow one planted here
            fd = open_for_writing(self.path, os.O_RDWR | os.O_NOFOLLOW, source=self.out,
                                  own=True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(fd)
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
        if not _a_lock_file(fd):
            os.close(fd)
            raise LabellingError(f"{self.path} exists and is not a label run's lock file (it "
                                 "holds other text); move it away", source=self.out)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if _still_there(self._fd, self.path):  # while still held: no one can lock it meanwhile
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None




def _a_lock_file(fd: int) -> bool:
    """Whether the file ``fd`` has open is empty or holds only a pid line (a lock file a run
    left, crashing), so emptying it loses nothing of anyone's."""
    head = os.pread(fd, 64, 0)
    return not head.strip() or (len(head) < 64 and head.strip().isdigit())


def _still_there(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file ``fd`` has open."""
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
