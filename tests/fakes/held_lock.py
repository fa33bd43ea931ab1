"""Another process holding a SQLite database's write lock (``BEGIN IMMEDIATE``), as a backup
tool or a stray ``sqlite3`` shell does, until the context ends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Takes the lock, says so, and holds it until its stdin closes.
_HOLD = ("import sqlite3, sys\n"
         "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "conn.execute('BEGIN IMMEDIATE')\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n")


@contextmanager
def held_lock(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Hold the write lock of the database at ``path`` from another process while inside."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held", "the lock was not taken"
        yield holder
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
