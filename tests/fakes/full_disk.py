"""A store whose database refuses writes, as it does on a full disk: its writer's connection
swapped for one whose inserts raise SQLite's own error while the disk is full (or, for
:class:`DamagedFile`, whose changes meet a damaged file)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from switchpoint.store import SQLiteStore

FULL = "database or disk is full"


class FullDisk:
    """A connection whose inserts the database refuses while ``full`` (after ``room`` more
    inserts go through, if given; only statements starting with ``only``, if given), as a full
    disk does."""

    #: The statements refused.
    CHANGES: tuple[str, ...] = ("INSERT", "UPDATE")

    def __init__(self, conn: sqlite3.Connection, room: int = 0, only: str = "") -> None:
        self.conn, self.full, self.room, self.only = conn, True, room, only

    def execute(self, sql: str, *args: object) -> object:
        if (self.full and self.room <= 0 and sql.startswith(self.only)
                and sql.lstrip().upper().startswith(self.CHANGES)):
            raise self._refusal()
        return self.conn.execute(sql, *args)  # type: ignore[arg-type]

    def executemany(self, sql: str, rows: object) -> object:
        if not sql.startswith(self.only):
            return self.conn.executemany(sql, rows)  # type: ignore[arg-type]
        if self.full and self.room <= 0:
            raise self._refusal()
        self.room -= 1
        return self.conn.executemany(sql, rows)  # type: ignore[arg-type]

    @staticmethod
    def _refusal() -> sqlite3.DatabaseError:
        error = sqlite3.OperationalError(FULL)
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        error.sqlite_errorname = "SQLITE_FULL"
        return error

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


#: What SQLite says of a damaged file.
MALFORMED = "database disk image is malformed"


class DamagedFile(FullDisk):
    """A connection whose reads go through while its changes (inserts, updates and deletes)
    meet a damaged file, as when the file is damaged between a change's read and its
    write."""

    CHANGES = ("INSERT", "UPDATE", "DELETE")

    @staticmethod
    def _refusal() -> sqlite3.DatabaseError:
        error = sqlite3.DatabaseError(MALFORMED)
        error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
        error.sqlite_errorname = "SQLITE_CORRUPT"
        return error


@contextmanager
def full_disk(store: SQLiteStore, room: int = 0, only: str = "", *,
              kind: type[FullDisk] = FullDisk) -> Iterator[FullDisk]:
    """Make ``store``'s database refuse writes (after ``room`` inserts; only statements
    starting with ``only``) until the block ends or ``disk.full`` is set to False; its
    connection is given back after. ``kind``: :class:`DamagedFile` for changes that meet a
    damaged file instead."""
    assert store._conn is not None
    disk = kind(store._conn, room, only)
    store._conn = disk  # type: ignore[assignment]
    try:
        yield disk
    finally:
        disk.full = False
        store._conn = disk.conn
