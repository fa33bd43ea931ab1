"""What an error met on a store's SQLite file means, and what to do about it: a damaged file, a
database that refuses writes (a full disk, a lock held too long), a file of another schema; the
:class:`~switchpoint.errors.StoreError` that says so."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from switchpoint._files import ForeignLinkError, access_problem
from switchpoint._messages import quoted_path
from switchpoint.errors import StoreError
from switchpoint.store.moved import ForeignLinkRead

# SQLite's primary result codes for a database that cannot take a write now, whatever is
# written: a full disk, a lock held too long, an I/O error, a read-only file.
_REFUSALS = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY,
                       sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN,
                       sqlite3.SQLITE_PROTOCOL})


def remedy(exc: BaseException, path: str | Path | None = None) -> str:
    """What to do about ``exc``, an error opening, reading or writing the database ``path`` of
    ``data_dir`` (empty when its message says it): a damaged file (SQLite's ``malformed`` or
    ``not a database``), a lock held too long, or tables missing are not matters of space or
    permissions; a file or directory this process may not use is named, with whose it is and
    what to run (:func:`~switchpoint._files.access_problem`)."""
    if damaged(exc):
        return ("the file is damaged: stop every process using it and restore it from a "
                "backup (or salvage it with `sqlite3 FILE .recover`); moving it away, with its "
                "-wal and -shm files, starts an empty one and loses what it held")
    if isinstance(exc, (NewerSchemaError, UpgradeNeededError, LoneLogError,
                        ForeignLinkError, ForeignLinkRead)):
        return ""  # (its message says what to do)
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return ("another process (the service, or a command beside it) held the file's lock "
                "longer than the wait; try again")
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return ""  # (this process's own misuse, a closed connection say: nothing in data_dir)
    if isinstance(exc, sqlite3.OperationalError) and primary == sqlite3.SQLITE_ERROR:
        # (no such table or column: the file is not what its schema version says)
        return ("the file does not hold what its schema version says (changed by hand or by "
                "another program?): restore it from a backup, or move it away with its -wal "
                "and -shm files to start an empty one")
    problem = access_problem(Path(path)) if path is not None else None
    return problem or "check that data_dir is a writable directory with free space"


class NewerSchemaError(sqlite3.DatabaseError):
    """A database file written by a newer switchpoint (its message says what to do)."""


class UpgradeNeededError(sqlite3.DatabaseError):
    """A database file of an older schema that a reader, which writes nothing, cannot read
    upgraded (see :func:`read_upgraded`; its message says what to do)."""


class LoneLogError(sqlite3.DatabaseError):
    """A database file with its ``-wal`` but no ``-shm`` beside it that a reader, which
    writes nothing, cannot read without making the ``-shm`` (see :func:`read_only`; its
    message says what to do)."""


def damaged(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite finding its file damaged (``malformed``, ``not a database``)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in (sqlite3.SQLITE_CORRUPT,
                                                       sqlite3.SQLITE_NOTADB)


def store_error(path: str | Path, what: str, exc: BaseException, *,
                reason: str | None = None) -> StoreError:
    """The error for ``exc``, met trying to ``what`` (``open the key store``, say) with the
    database at ``path``: what happened, and what to do about it (:func:`remedy`). A damaged
    file is named (by its name alone) in the error's ``reason``, what a client is told, and
    the error is marked ``damaged`` (waiting does not mend it), whether it was met reading or
    writing. ``reason``: what a client is told when the file is not damaged (a write's
    refusal gives the database's words, never a path); by default nothing of the server's."""
    reason = (f"{Path(path).name} in data_dir is damaged ({exc}); the operator must restore "
              "it from a backup" if damaged(exc) else reason)
    hint = remedy(exc, path)
    return StoreError(f"{quoted_path(path)}: cannot {what} ({exc})" + (f"; {hint}" if hint else ""),
                      reason=reason,
                      damaged=damaged(exc))


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing writes (see ``_REFUSALS``), not a bad record
    or statement."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and isinstance(code, int) and (
        code & 0xFF) in _REFUSALS
