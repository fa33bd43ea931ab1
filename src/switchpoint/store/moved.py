"""A SQLite database in WAL mode whose file, ``-wal`` or ``-shm`` left its path (deleted, or
replaced by a restore or a move) while a connection was open on it: how it left, and letting
go of it without leaving its log at the path for the next file there to take as its own.

SQLite leaves a file's side files at the path when the file itself was deleted or moved (it
touches no path whose file is no longer its own), and a connection opened there later takes a
``-wal`` it finds as the new file's: it replays the old file's last commits into a restored
backup (over what the backup holds). Nothing in a ``-wal`` ties it to its file, so a start
cannot tell such a log from the one a crash left (which holds committed writes): it must go
when the file is seen to leave, while the old file's side files are still known by their
inodes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from switchpoint._files import (
    SQLITE_SIDE_FILES,
    FileId,
    file_identity,
    side_file,
    temporary_name,
)

Files = tuple[FileId | None, ...]


def how_it_left(opened: Files, seen: Files) -> str | None:
    """How the database whose files were ``opened`` (its
    :func:`~switchpoint._files.database_identity` when a connection opened it) left its path,
    ``seen`` those at the path now: ``was deleted``, ``was replaced``, ``had its -wal file
    deleted or replaced`` (for a log); None while they are the same."""
    if seen == opened:
        return None
    if seen[0] is None:
        return "was deleted"
    if seen[0] != opened[0]:
        return "was replaced"
    side = [suffix for suffix, was, now in zip(SQLITE_SIDE_FILES, opened[1:], seen[1:],
                                               strict=True) if now != was]
    return f"had its {' and '.join(side)} file deleted or replaced"


def close_moved(conn: sqlite3.Connection, path: str | Path, opened: Files) -> None:
    """Close ``conn``, open on the database ``path`` with the files ``opened``, of which one
    at least is no longer at the path. Its log is first written into the file it has open,
    wherever that went: a file moved away keeps every commit, and a file still at the path
    whose ``-wal`` was deleted gets what that log held. Closing a connection to a file still at
    the path removes the side files there: those another file brought (a restore of all three)
    or another connection made are set aside meanwhile and put back. Then
    :func:`remove_stale_side_files`. :class:`OSError` when a stale side file cannot be removed
    (the connection is closed all the same)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    aside: list[tuple[Path, Path]] = []
    try:
        for suffix, was in zip(SQLITE_SIDE_FILES, opened[1:], strict=True):
            side = side_file(path, suffix)
            now = file_identity(side)
            if now is not None and now != was:
                with contextlib.suppress(OSError):
                    hidden = temporary_name(side)
                    os.rename(side, hidden)
                    aside.append((hidden, side))
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        for hidden, side in aside:
            with contextlib.suppress(OSError):
                os.rename(hidden, side)
    remove_stale_side_files(path, opened)


def remove_stale_side_files(path: str | Path, opened: Files) -> None:
    """Remove the side files of the database file ``opened`` (see :func:`how_it_left`) still
    at the path when that file is no longer there (deleted or replaced): the next connection
    to the path would replay that log into the file there. Side files a restore brought, or
    those of a file still at the path (another connection may use them), are kept.
    :class:`OSError` when one cannot be removed."""
    if not opened or file_identity(path) == opened[0]:
        return
    for suffix, was in zip(SQLITE_SIDE_FILES, opened[1:], strict=True):
        side = side_file(path, suffix)
        if was is not None and file_identity(side) == was:
            side.unlink(missing_ok=True)
