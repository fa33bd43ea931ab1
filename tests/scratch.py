"""The tests' scratch files in memory, where the machine has a memory file system with room.

Nearly every test writes real SQLite files under ``tmp_path`` (a fresh ``data_dir``, its store,
keys and sessions), and SQLite asks the disk to make each commit durable (``fdatasync``): a
fresh store's schema alone waits on some fourteen of them, 0.07-0.15 s of each start on a busy
disk, with little CPU. The durability a disk gives is none of what the tests check (a crash
they make kills a process, whose writes the kernel keeps), so :func:`use_memory_scratch` points
the test process's temporary folder (``tempfile``, and so pytest's ``tmp_path``), and through
``TMPDIR`` that of the processes the tests start, at a private folder of ``/dev/shm``, where a
sync costs nothing: ``tests/unit/test_store.py`` took 18 s there against 30 s on the disk.

A ``TMPDIR`` already set is kept (``TMPDIR=/tmp pytest`` runs on the disk), and so is the
default where ``/dev/shm`` is not a folder this user may write with :data:`MIN_FREE` bytes free
(a container's default of 64 MB is too small for the suite's few hundred megabytes).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

#: Where a memory file system is mounted on Linux.
MEMORY = Path("/dev/shm")
#: The free space the memory file system must have (the suite writes a few hundred MB).
MIN_FREE = 2 << 30


def _private_folder(parent: Path) -> Path | None:
    """This user's own folder in ``parent`` (made 0711 if need be: other users may pass
    through it to a folder a test opens to them, as the tests that run a command as another
    user do under ``/tmp``, but may neither list nor write it), or None when the name is taken
    by anything else (another user's, a link, a file, a folder others may list or write) or
    cannot be made."""
    folder = parent / f"switchpoint-tests-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o066:
        return None
    if stat.S_IMODE(st.st_mode) != 0o711:
        try:
            folder.chmod(0o711)
        except OSError:
            return None
    return folder


def use_memory_scratch(memory: Path = MEMORY, min_free: int = MIN_FREE) -> Path | None:
    """Make a private folder of ``memory`` this process's temporary folder and its children's
    (``TMPDIR``), when no ``TMPDIR`` is set and ``memory`` has ``min_free`` bytes free; the
    folder, or None where the default stays."""
    if os.environ.get("TMPDIR"):
        return None
    try:
        st = os.statvfs(memory)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < min_free or not os.access(memory, os.W_OK | os.X_OK):
        return None
    folder = _private_folder(memory)
    if folder is None:
        return None
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)  # (gettempdir() keeps the first folder it found)
    return folder
