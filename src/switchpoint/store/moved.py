"""A SQLite database in WAL mode whose file, ``-wal`` or ``-shm`` left its path (deleted, or
replaced by a restore or a move) while a connection was open on it: how it left, and letting
go of it without leaving its log at the path for the next file there to take as its own.

SQLite leaves a file's side files at the path when the file itself was deleted or moved (it
touches no path whose file is no longer its own), and a connection opened there later takes a
``-wal`` it finds as the new file's: it replays the old file's last commits into a restored
backup (over what the backup holds). Nothing in a ``-wal`` ties it to its file, so a start
cannot tell such a log from the one a crash left (which holds committed writes): it must go
when the file is seen to leave, while the old file's side files are still known by their
inodes; and for a crash before that, a note beside the file (see :func:`note_log_owner`),
which every store writing a database opens it with (:func:`opened_for_writing`) and a reader
heeds (:func:`read_only_connection`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from switchpoint._files import (
    SQLITE_SIDE_FILES,
    FileId,
    clear_leftovers,
    file_identity,
    file_stamp,
    foreign_link,
    may_write,
    read_small,
    side_file,
    temporary_name,
    write_atomically,
)

Files = tuple[FileId | None, ...]

log = logging.getLogger("switchpoint.store")

#: The suffix of the file beside a database that says which database file, and which
#: ``-wal``, a store last opened there (see :func:`note_log_owner`).
LOG_OWNER = ".wal-owner"


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


def _owner_file(path: str | Path) -> Path:
    return side_file(path, LOG_OWNER)


def note_log_owner(path: str | Path) -> None:
    """Note (beside it, see :data:`LOG_OWNER`) which file the database ``path`` is and which
    its ``-wal`` and ``-shm`` are, once a store has opened it: a crash leaves them at the path
    for :func:`drop_stale_log` to judge at the next open. Noting nothing (no ``-wal``, or the
    note cannot be written) removes an older note, which would misjudge."""
    owner = _owner_file(path)
    db, wal = file_stamp(path), file_stamp(side_file(path, "-wal"))
    shm = file_stamp(side_file(path, "-shm"))
    try:
        if db is None or wal is None:
            raise OSError("nothing to note")
        text = json.dumps({"db": db, "wal": wal, **({} if shm is None else {"shm": shm})})
        write_atomically(owner, lambda fh: fh.write(text.encode()), mode=0o600, state=True)
    except OSError:
        with contextlib.suppress(OSError):
            owner.unlink(missing_ok=True)


#: Most bytes a note (see :func:`note_log_owner`) holds: three stamps of four numbers each.
MAX_NOTE_BYTES = 1024


def _stamp(value: object) -> tuple[int, ...] | None:
    """``value`` as a :func:`~switchpoint._files.file_stamp` (two to four integers), or None."""
    if (isinstance(value, list) and 2 <= len(value) <= 4
            and all(type(n) is int for n in value)):
        return tuple(value)
    return None


class _Note(NamedTuple):
    """The stamps (see :func:`~switchpoint._files.file_stamp`) a note names: the database
    file, its ``-wal``, and its ``-shm`` (None when the note names none)."""

    db: tuple[int, ...]
    wal: tuple[int, ...]
    shm: tuple[int, ...] | None


def _read_note(path: str | Path) -> _Note | None:
    """The stamps the note beside ``path`` names, or None when there is none that reads as
    one (missing, too big, not a regular file, or damaged): a note not understood removes
    nothing."""
    return _read_note_file(_owner_file(path))


def _read_note_file(note: Path) -> _Note | None:
    """The stamps the note ``note`` names (see :func:`_read_note`)."""
    data = read_small(note, MAX_NOTE_BYTES)
    if data is None:
        return None
    try:
        noted = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(noted, dict):
        return None
    db, wal = _stamp(noted.get("db")), _stamp(noted.get("wal"))
    return None if db is None or wal is None else _Note(db, wal, _stamp(noted.get("shm")))


def stale_log(path: str | Path) -> Path | None:
    """The ``-wal`` of the database ``path`` when it is the log a store noted (see
    :func:`note_log_owner`) for another database file than the one now at the path (the
    noted file was deleted or replaced, and a crash came before the store saw it): SQLite
    would replay it into the file now there. None for any other log (or none): one another
    file brought (a restore of the file with its ``-wal``), or made since, or the log of the
    noted file itself (what a crash left: committed writes)."""
    return side_file(path, "-wal") if _stale_note(path) is not None else None


def _stale_note(path: str | Path) -> _Note | None:
    """The note beside the database ``path`` when the ``-wal`` there is a :func:`stale_log`
    (else None)."""
    found = file_stamp(side_file(path, "-wal"))
    noted = None if found is None else _read_note(path)  # (no log: no note to read)
    if noted is None or found != noted.wal or file_stamp(path) == noted.db:
        return None
    return noted


def drop_stale_log(path: str | Path) -> list[Path]:
    """Before a store opens the database ``path`` to write it: remove its ``-wal`` when that
    log is a :func:`stale_log`, with the ``-shm`` the note names beside it (a process still
    open on the old file uses it; one no connection has open, SQLite makes anew) and the note
    itself, and say so. Only those very files go: another store opening the file at the same
    time may have removed them already and made its own, which it is writing. The removed
    files. :class:`OSError` when one cannot be removed."""
    noted = _stale_note(path)  # (what it names goes, whatever note another store writes since)
    if noted is None:
        return []
    removed = []
    for suffix, stamp in (("-wal", noted.wal), ("-shm", noted.shm)):
        side = side_file(path, suffix)
        if stamp is not None and _remove_if(side, stamp, readers=suffix == "-wal"):
            removed.append(side)
            log.warning("%s: removed %s, the log of a database file deleted or replaced "
                        "before a crash (SQLite would have replayed it into the file now "
                        "there)", path, side.name)
    if removed and _read_note(path) == noted:  # (it names files no longer there)
        with contextlib.suppress(OSError):
            _owner_file(path).unlink(missing_ok=True)
    return removed


def _remove_if(side: Path, stamp: tuple[int, ...], *, readers: bool) -> bool:
    """Remove the file ``side`` when it is the one ``stamp`` names (see
    :func:`~switchpoint._files.file_stamp`), judged once it is set aside, so that no other
    file put at the path meanwhile is removed (such a one is put back); ``readers``: once the
    readers holding it are done (see :func:`_wait_for_readers`). Whether it was.
    :class:`OSError` when it cannot be."""
    with contextlib.suppress(OSError):  # (what one killed before it removed it left aside)
        clear_leftovers(side)
    hidden = temporary_name(side)
    try:
        os.rename(side, hidden)
    except FileNotFoundError:
        return False
    try:
        if file_stamp(hidden) == stamp:
            if readers:
                _wait_for_readers(hidden, side)
            return True
        os.link(hidden, side)  # (another's: back at the path, unless yet another is there)
        return False
    finally:
        hidden.unlink(missing_ok=True)


#: Longest a store opening a file waits for readers reading it alone (see
#: :func:`read_only_connection`) before it writes it all the same.
READER_WAIT_S = 30.0


def _wait_for_readers(log_file: Path, name: Path) -> None:
    """Wait (at most :data:`READER_WAIT_S`) until no reader holds the stale log ``log_file``
    (set aside from ``name``; see :func:`read_only_connection`): each reads the file without
    its locks, so it would read pages half written once a store writes them."""
    try:
        fd = os.open(log_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        deadline = time.monotonic() + READER_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("%s: a reader still reads the file beside it alone after %.0f "
                                "s; writing it all the same (that reader may find it damaged: "
                                "run it again)", name, READER_WAIT_S)
                    return
                time.sleep(0.05)
            except OSError:
                return
    finally:
        os.close(fd)


#: The stale logs a reader already named (see :func:`read_only_connection`), so each is said once.
_SAID: set[tuple[str, tuple[int, ...] | None]] = set()
_MAX_SAID = 64


class _Held:
    """A file descriptor held (with its lock) until :meth:`release`; releasing twice is once."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class _ReadingAlone(sqlite3.Connection):
    """A read-only connection reading a file alone (``immutable``) beside a stale log it
    holds a shared lock on until closed (or collected)."""

    held: _Held | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.held is not None:
                self.held.release()


def _hold_stale_log(path: str | Path) -> tuple[int, Path] | None:
    """A descriptor of the database ``path``'s ``-wal``, shared-locked, when it is a
    :func:`stale_log` still at the path once locked (a store opening the file sets it aside
    before it waits for such locks: see :func:`_wait_for_readers`), with that log; else None."""
    noted = _stale_note(path)
    if noted is None:
        return None
    log_file = side_file(path, "-wal")
    try:
        fd = os.open(log_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == noted.wal[:2] and file_stamp(log_file) == noted.wal:
            return fd, log_file
    except OSError:
        pass
    os.close(fd)
    return None


class ForeignLinkRead(sqlite3.DatabaseError):
    """A database a reader would open through a symbolic link another user made, or into
    another user's file (:func:`~switchpoint._files.foreign_link`): what it would read is that
    user's, not the service's. Its message says so and what to do."""


def read_only_connection(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to the database ``path``, usable from any thread. When its
    ``-wal`` is a :func:`stale_log` (a restore after a crash, with no store opened since),
    the file is read alone, as SQLite reads a file it may not change (``immutable``): the old
    file's commits are not taken for this one's, and a reader changes no file, so the log is
    left for the next store opening the file to remove (which waits until such readers are
    closed: they read without SQLite's locks); a warning (once) names it.
    :class:`sqlite3.Error` when it cannot be opened.

    A file with no ``-wal`` or ``-shm`` beside it (as a clean stop leaves it) is opened as
    SQLite's other connections open it, set to refuse every write (``query_only``): a
    connection SQLite opened read-only leaves the side files its reading made when it closes
    last, so a report run with the service stopped left both beside the store; this one, the
    last to close, removes them, and the file is as it was. Beside another connection (a
    service starting meanwhile) it reads as any reader does, and the side files stay theirs.
    Such a file this process may not write (mode 444, a read-only mount) SQLite opens
    read-only all the same, and its side files, made with the file's mode, would stay beside
    it (a service started once the file is writable again would find them unwritable): with
    no log to read, it is read alone (``immutable``), and nothing is made beside it."""
    problem = foreign_link(Path(path))
    if problem is not None:
        raise ForeignLinkRead(problem)
    base = Path(path).resolve().as_uri()
    uri = f"{base}?mode=ro"
    held = _hold_stale_log(path)
    if held is None:
        if any(side_file(path, suffix).exists() for suffix in SQLITE_SIDE_FILES):
            return sqlite3.connect(uri, uri=True, check_same_thread=False)
        if not may_write(path):
            return sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
        conn = sqlite3.connect(f"{base}?mode=rw", uri=True, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn
    fd, stale = held
    lock = _Held(fd)
    try:
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False,
                               factory=_ReadingAlone)
    except BaseException:
        lock.release()
        raise
    conn.held = lock
    weakref.finalize(conn, lock.release)
    said = (str(stale), file_stamp(stale))
    if said not in _SAID:
        if len(_SAID) >= _MAX_SAID:
            _SAID.clear()
        _SAID.add(said)
        log.warning("%s: not reading %s, the log of a database file deleted or replaced "
                    "before a crash (it holds none of this file's writes); start the service "
                    "once (or run a command that writes the file) to remove it", path,
                    stale.name)
    return conn


def opened_for_writing(path: str | Path, connect: Callable[[], sqlite3.Connection]
                       ) -> sqlite3.Connection:
    """``connect()`` (a connection to the database ``path``, set in WAL mode and used by it)
    with the log of another file first removed (see :func:`drop_stale_log`), and this file's
    log noted once it is open (see :func:`note_log_owner`): what every store writing a
    database in WAL mode opens it with, and :func:`forget_log_owner` once it closed it."""
    drop_stale_log(path)
    check_header_read(path)
    conn = connect()
    note_log_owner(path)
    return conn


#: What the first bytes of every SQLite database file say.
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_header_read(path: str | Path) -> None:
    """Nothing, unless the database ``path`` begins with no SQLite header (overwritten, say)
    and has its own ``-wal`` beside it that holds no newer copy of its first page: then the
    :class:`sqlite3.DatabaseError` reading it meets (``file is not a database``), before a
    connection that may write it is opened. SQLite, closing the last connection of a file in
    WAL mode, copies the log into the file and removes the log and its ``-shm``, even when
    the file was refused as no database: a write refused for the damage would change the
    damaged file and take its log away. A log holding that page reads (the file is whole: the
    log's copy is the one read, and it mends the header at the next checkpoint). Read by a
    read-only connection, which never copies a log into its file."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(_SQLITE_HEADER))
    except OSError:
        return  # (no file yet, or one the connection names the fault of)
    if not head or head == _SQLITE_HEADER or not side_file(path, "-wal").exists():
        return
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        pass  # (not the file's damage, a lock say: the writing connection meets it, as before)
    finally:
        conn.close()


def forget_log_owner(path: str | Path) -> None:
    """Once a store closed the database ``path``: remove the note (see
    :func:`note_log_owner`) when the log it names is no longer at the path (a clean close
    checkpoints and removes it), so that a later log given that freed inode number (where the
    system does not say when a file was made) is not taken for it. A note naming a log still
    there (another store has the file open) is kept, and so is one another store opening the
    file writes meanwhile: the note is judged once set aside, and put back unless it goes."""
    if _read_note(path) is None:  # (none, or none understood: left as it is)
        return
    owner = _owner_file(path)
    hidden = temporary_name(owner)
    try:
        os.rename(owner, hidden)
    except OSError:
        return
    try:
        noted = _read_note_file(hidden)
        if noted is None or file_stamp(side_file(path, "-wal")) == noted.wal:
            os.link(hidden, owner)  # (unless another store wrote a newer one meanwhile)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            hidden.unlink(missing_ok=True)
