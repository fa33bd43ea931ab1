"""Another process holding a SQLite database's write lock (``BEGIN IMMEDIATE``), as a backup
tool or a stray ``sqlite3`` shell does, until the context ends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


def short_lock_waits(monkeypatch: pytest.MonkeyPatch, seconds: float = 1.5) -> float:
    """Make the store of a service started after this wait ``seconds`` for a held lock
    (SQLite's busy timeout, 5 s) and count itself refusing for as long after a refused write
    (5 s too), so that a test of what a held lock does spends seconds, not tens of them; the
    behaviour is the same, scaled. Returns ``seconds``."""
    monkeypatch.setattr("switchpoint.store.sqlite.BUSY_MS", int(seconds * 1000))
    monkeypatch.setattr("switchpoint.store.sqlite.REFUSING_S", seconds)
    return seconds
