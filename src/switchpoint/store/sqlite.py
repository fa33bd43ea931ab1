"""SQLite state in the data directory: WAL mode, one writer thread, group commit.

Every routing decision is appended to the ``decisions`` table and every chat request the
gateway answers (or fails) to the ``requests`` table; triggers refuse UPDATE on both, and
DELETE of any row but those older than a retention cutoff recorded in the ``prunes`` table
(itself changed only by a prune, which keeps its newest rows and the latest cutoff; see
:mod:`switchpoint.store.retention`): rows leave only by age, oldest first, and a row that is
kept is never changed.
Writes go through a single writer thread: :meth:`SQLiteStore.append` queues a record and returns
a future that resolves once the record is **committed** (``synchronous=FULL``, so committed means
on disk), so a caller that waits for it before answering never acknowledges a
decision a crash could lose. Records that arrive while a commit is running are written together
in the next transaction (group commit), which keeps the cost of durability per request low
under concurrency. Reads open their own connection; WAL lets them run beside the writer.

:class:`SQLiteStore` is the writer, composed with the parts that stand alone, each in its own
module (every public name of which is importable from here too): the schema's migrations
(:mod:`~switchpoint.store.migrations`), setting a file up for writing
(:mod:`~switchpoint.store.schema`), reading one without writing beside it
(:mod:`~switchpoint.store.reading`), what an error on it means (:mod:`~switchpoint.store.errors`),
the logs' records and reads (:mod:`~switchpoint.store.logs`), the sums the logs keep
(:mod:`~switchpoint.store.sums`) and the spill file (:mod:`~switchpoint.store.spill`).
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from switchpoint._files import (
    check_database_writable,
    database_identity,
    private_dir,
    private_file,
)
from switchpoint._messages import json_quoted, quoted_path
from switchpoint._process import check_process, in_other_process
from switchpoint.errors import StoreError
from switchpoint.store.errors import LoneLogError as LoneLogError
from switchpoint.store.errors import NewerSchemaError as NewerSchemaError
from switchpoint.store.errors import UpgradeNeededError as UpgradeNeededError
from switchpoint.store.errors import damaged as damaged
from switchpoint.store.errors import refused as refused
from switchpoint.store.errors import remedy as remedy
from switchpoint.store.errors import store_error as store_error
from switchpoint.store.logs import DEFAULT_PAGE as DEFAULT_PAGE
from switchpoint.store.logs import MAX_PAGE as MAX_PAGE
from switchpoint.store.logs import DecisionRecord as DecisionRecord
from switchpoint.store.logs import LogReads
from switchpoint.store.logs import Record as Record
from switchpoint.store.logs import RequestRecord as RequestRecord
from switchpoint.store.migrations import ENDED_KEPT as ENDED_KEPT
from switchpoint.store.migrations import LEDGER_KEEP_S as LEDGER_KEEP_S
from switchpoint.store.migrations import LEDGER_LOOKBACK_S as LEDGER_LOOKBACK_S
from switchpoint.store.migrations import LEDGER_TABLE as LEDGER_TABLE
from switchpoint.store.migrations import LOG_TABLES as LOG_TABLES
from switchpoint.store.migrations import MIGRATIONS
from switchpoint.store.migrations import PROMOTIONS_KEPT as PROMOTIONS_KEPT
from switchpoint.store.migrations import PRUNES_KEPT as PRUNES_KEPT
from switchpoint.store.migrations import SCHEMA_VERSION as SCHEMA_VERSION
from switchpoint.store.moved import (
    Files,
    close_moved,
    forget_log_owner,
    how_it_left,
    opened_for_writing,
)
from switchpoint.store.reading import LONE_COPIES_KEPT as LONE_COPIES_KEPT
from switchpoint.store.reading import MAX_UPGRADE_COPY_BYTES as MAX_UPGRADE_COPY_BYTES
from switchpoint.store.reading import NEWER_HINT as NEWER_HINT
from switchpoint.store.reading import Gone as Gone
from switchpoint.store.reading import read_only as read_only
from switchpoint.store.reading import read_store as read_store
from switchpoint.store.reading import read_upgraded as read_upgraded
from switchpoint.store.reading import still_there as still_there
from switchpoint.store.schema import BUSY_MS as BUSY_MS
from switchpoint.store.schema import require_json as require_json
from switchpoint.store.schema import schema_version
from switchpoint.store.schema import upgrade_schema as upgrade_schema
from switchpoint.store.schema import wal_mode as wal_mode
from switchpoint.store.spill import FORGET_PENDING as FORGET_PENDING
from switchpoint.store.spill import MAX_SPILL_BYTES as MAX_SPILL_BYTES
from switchpoint.store.spill import MAX_SPILL_LINE as MAX_SPILL_LINE
from switchpoint.store.spill import SPILL_PER_REQUEST as SPILL_PER_REQUEST
from switchpoint.store.spill import (
    SpillFile,
    already_there,
    cap_of,
    spillable,
)
from switchpoint.store.spill import behind_newest as behind_newest
from switchpoint.store.spill import keep_newest as keep_newest
from switchpoint.store.spill import spill_reserve as spill_reserve
from switchpoint.store.spill import spill_shortfall as spill_shortfall
from switchpoint.store.sums import ERROR_HOUR_S as ERROR_HOUR_S
from switchpoint.store.sums import ERROR_MICRO as ERROR_MICRO
from switchpoint.store.sums import NANO_PER_USD as NANO_PER_USD
from switchpoint.store.sums import error_sums as error_sums
from switchpoint.store.sums import of_tenant as of_tenant

log = logging.getLogger("switchpoint.store")
#: What ``PRAGMA auto_vacuum`` reads on a file that frees its pages on demand (every store this
#: version makes: see ``retention``).
INCREMENTAL = 2
# Most records written in one transaction; more wait for the next one.
MAX_BATCH = 512
# How long lazy records (see append_lazy) wait for a record that needs a commit, to share it.
LAZY_WAIT_S = 0.05
#: How often (seconds) the writer, idle, looks whether the file it has open (or its -wal or
#: -shm) is still at its path (a write looks before each transaction).
FILE_CHECK_S = 1.0
#: After the database refuses a write (a full disk, a lock held too long), how long the store
#: is taken to be refusing still (seconds): what must be kept is turned away at once meanwhile,
#: and tried again after.
REFUSING_S = 5.0
#: How long it waits instead while the database refuses writes (see
#: :attr:`SQLiteStore.failing`: refused, and nothing written since): the next write only
#: finds out whether the lock is free again, so that what must be kept now (feedback, a
#: comparison) is refused in a moment rather than after :data:`BUSY_MS` each time.
PROBE_BUSY_MS = 250
#: Records nobody waits for (see ``append_lazy``) that the database refused wait to be tried
#: again, up to this many (past it the oldest is dropped, and logged).
MAX_RETRIED = 10_000


#: What writing a record can raise: the database's errors, and a value it cannot hold (a
#: wrong type, an int beyond 64 bits).
WRITE_ERRORS = (sqlite3.Error, ValueError, TypeError, OverflowError)


def _probe(conn: sqlite3.Connection, path: Path, skip: Sequence[str] = ()) -> None:
    """Read the first and the last entry of every table and index of the database: the pages
    from each one's root to its ends, where appends go, so a damaged one (SQLite finds damage
    only when it reads it) refuses the open with the file named, rather than failing every
    append and every read of the log while the service says it is ready. It reads a few
    pages per table, whatever the database's size; damage deeper inside is found by the read
    that meets it (:meth:`SQLiteStore.requests` and the others say so with the file)."""
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    for table in (t for t in tables if t not in skip):
        try:
            for order in ("ASC", "DESC"):
                conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid {order} LIMIT 1'
                             ).fetchall()
            for index in conn.execute(f'PRAGMA index_list("{table}")').fetchall():
                columns = conn.execute(f'PRAGMA index_info("{index[1]}")').fetchall()
                if not columns or columns[0][2] is None:  # on an expression: not here
                    continue
                for order in ("ASC", "DESC"):
                    conn.execute(f'SELECT "{columns[0][2]}" FROM "{table}" INDEXED BY '
                                 f'"{index[1]}" ORDER BY "{columns[0][2]}" {order} LIMIT 1'
                                 ).fetchall()
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            raise store_error(path, f"read its {table} table", exc) from None


_STOP = object()


class FileGoneError(sqlite3.OperationalError):
    """The database file the store has open (or its ``-wal`` or ``-shm``) is no longer at its
    path (deleted or replaced while the store ran): a write would go to a file no later start
    reads (or to a log no other connection sees), so the database
    counts as refusing writes (what is refused waits in the spill file) until a restart opens
    the file now at the path."""

    sqlite_errorcode = sqlite3.SQLITE_CANTOPEN
    sqlite_errorname = "SQLITE_CANTOPEN"


# What the writer takes: a record, the future its appender waits on (None: nobody waits), and
# whether a refused write of it is tried again later.
_Item = tuple[Record, "Future[None] | None", bool]


def _what(record: Record) -> str:
    """What ``record`` is, in an error's words."""
    return {DecisionRecord: "decision", RequestRecord: "request"}.get(
        type(record), getattr(record, "what", "ledger entry"))


class SQLiteStore(SpillFile, LogReads):
    """The append-only decision log in one SQLite file. ``open()`` before use, ``close()`` after.

    ``synchronous`` is SQLite's setting: ``FULL`` (default) survives power loss; ``NORMAL`` in
    WAL mode survives a crash of this process but may lose the last commits on power loss.
    ``spill_limit`` bounds the spill file (see :attr:`spill_full`), of which ``spill_reserve``
    bytes are kept for the records of requests in flight when the rest fills (see
    :func:`spill_reserve`); ``logs=False`` for a store that does not append to the logs (see
    :attr:`logs`).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 spill_limit: int = MAX_SPILL_BYTES, spill_reserve: int = 0,
                 logs: bool = True) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got "
                             f"{json_quoted(synchronous)}")
        if isinstance(spill_limit, bool) or not isinstance(spill_limit, int) or spill_limit < 1:
            raise ValueError(f"spill_limit must be a positive number of bytes, got "
                             f"{json_quoted(spill_limit)}")
        if (isinstance(spill_reserve, bool) or not isinstance(spill_reserve, int)
                or not 0 <= spill_reserve < spill_limit):
            raise ValueError(f"spill_reserve must be a number of bytes from 0 to below "
                             f"spill_limit ({spill_limit}), got {json_quoted(spill_reserve)}")
        #: Most bytes :attr:`spill_path` grows to during an outage (see :attr:`spill_full`).
        self.spill_limit = spill_limit
        #: Of :attr:`spill_limit`, the bytes kept for the records of requests already taken
        #: when the rest fills: :attr:`spill_full` is set once the file reaches
        #: ``spill_limit - spill_reserve``, and records still go to the file up to the limit.
        self.spill_reserve = spill_reserve
        #: Set once the spill file reached ``spill_limit - spill_reserve``, or the disk refused
        #: it a write (a full disk, a file-size limit), until what it holds is written: why the
        #: database refuses writes, and that the file is full or cannot be written (the gateway
        #: takes no new requests meanwhile). Records refused past :attr:`spill_limit` wait in
        #: memory only (added to the file at close, past its limit).
        self.spill_full: str | None = None
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        #: Whether this store appends to the logs (:data:`LOG_TABLES`): only then does a damaged
        #: log table refuse :meth:`open` (every append would fail). A tool that only learns or
        #: reports opens beside one; a read that meets the damage names the file.
        self.logs = logs
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lazy: deque[_Item] = deque()
        # Lazy records the database refused, oldest first, to be tried again.
        self._retry: deque[Record] = deque(maxlen=MAX_RETRIED)
        self._dropped = 0  # of them, how many went past MAX_RETRIED
        # Whether the spill file (see spill_path) may hold records not known to be written:
        # every record kept for retry is added to it at once, so a crash loses none of them.
        self._unwritten = False
        # Whether every record kept for retry reached the spill file (an append can fail on a
        # full disk: close then adds them all again).
        self._journal_whole = True
        self._writer: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None  # the process that opened it (see switchpoint._process)
        self._closed = False
        #: Why the last commit failed when the database itself refused it (a full disk, a
        #: lock held too long), until one succeeds; None while writes go through.
        self.failing: str | None = None
        self._failed_at = 0.0
        self._busy_ms = BUSY_MS  # the writer's connection's busy_timeout
        # The files opened (the database, its -wal and -shm: see _writable); once one left its
        # path, how (the writer let go of the file then), until the next open.
        self._files: Files = ()
        self._left: str | None = None
        # The warnings of totals out of range already logged (see switchpoint.store.totals).
        self._said: set[str] = set()
        self._next_look = 0.0  # when the writer, idle, looks at the files next
        #: Called by the writer with the rows of :attr:`spill_path` it wrote once open (each
        #: an INSERT written, or a :data:`FORGET_PENDING` run, with its values, in the file's
        #: order), after their commit: rows a reader of the tables that read them at the start
        #: missed (those written at :meth:`open` come before any such read). None: no one asks.
        self.spilled_written: Callable[[list[tuple[str, list[Any]]]], None] | None = None
        self._serving = False  # see open()
        self._told_waiting = False  # said that the spill file waits for the service

    # Lifecycle ---------------------------------------------------------------------------------

    def open(self, *, serving: bool = False) -> SQLiteStore:
        """Create the file and schema if needed and start the writer thread.

        ``serving``: this process serves from the database's folder and holds its lock
        (:data:`~switchpoint._files.SERVE_LOCK`, see :mod:`switchpoint.gateway.owner`). Only
        such a store writes what :attr:`spill_path` keeps while it runs: the service appends
        to that file while its database refuses writes, and holds the same records in memory.
        Any other store leaves the file alone while a service runs (saying so once), and with
        none running writes it while holding that lock itself (see
        :func:`~switchpoint._files.brief_lock`; another store doing so is waited for). Adding
        to the file and taking it up hold the file's own lock
        (:func:`~switchpoint._files.locked_file`), so that nothing added between a take-up's
        reading and its removal of the file is lost."""
        check_process(self._pid, "this store")
        if self._writer is not None:
            return self
        self._serving = serving
        try:
            conn = self._schema()
            self._busy_ms = BUSY_MS
            _probe(conn, self.path, skip=() if self.logs else LOG_TABLES)
            self._files, self._left = database_identity(self.path), None
            self._take_up_spilled(conn)
        except (OSError, sqlite3.Error) as exc:
            raise store_error(self.path, "open the SQLite store", exc) from None
        self._conn = conn
        self._closed = False
        self._pid = os.getpid()
        self._writer = threading.Thread(target=self._write_loop, name="switchpoint-store-writer",
                                        daemon=True)
        self._writer.start()
        return self

    def _schema(self) -> sqlite3.Connection:
        """A connection to the file, made if need be, with the schema up to date."""
        # Its owner's alone (it holds prompts' vectors and feedback comments): a new file is
        # 0600 (SQLite's -wal and -shm take its mode), a new data_dir 0700.
        private_file(private_dir(self.path.parent) / self.path.name)
        return opened_for_writing(self.path, self._connect)

    def _connect(self) -> sqlite3.Connection:
        """A connection to the file in WAL mode, with the schema up to date."""
        # (nothing below writes to a file already set up: a file it may not write is named now)
        check_database_writable(self.path)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            # A file of a newer schema is refused before anything is set on it (the journal
            # and vacuum modes below write to its header).
            schema_version(conn, max(MIGRATIONS), NEWER_HINT)
            # A new file frees the pages of pruned rows back to the disk on demand (it must be
            # set before the first table exists); an older file, made without it, converts at
            # its next VACUUM. Set only where it is not yet: setting it on a file that has it
            # rewrites the header, so every opening changed the file.
            if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != INCREMENTAL:
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            wal_mode(conn)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            require_json(conn, self.path)
            upgrade_schema(conn, MIGRATIONS, newer=NEWER_HINT)
        except BaseException:
            conn.close()
            raise
        return conn

    def upgrade(self, *, take_up: bool = False) -> None:
        """Bring the file's schema up to date and check its tables as :meth:`open` does,
        without starting the writer (a tool that writes the file itself, such as ``switchpoint
        prune``). ``take_up``: also write what :attr:`spill_path` keeps, when no service runs
        (one running holds the same records in memory and writes them itself once the
        database takes writes again: see :meth:`open` for which store writes it)."""
        try:
            conn = self._schema()
            try:
                _probe(conn, self.path, skip=() if self.logs else LOG_TABLES)
                if take_up:
                    self._files, self._left = database_identity(self.path), None
                    self._write_spilled(conn, at_open=True)
            finally:
                conn.close()
                forget_log_owner(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise store_error(self.path, "open the SQLite store", exc) from None

    def refusing(self) -> tuple[str, float] | None:
        """Why the database refused a write less than :data:`REFUSING_S` ago (and the seconds
        left of that), while no write has gone through since; None otherwise."""
        failing = self.failing
        left = REFUSING_S - (time.monotonic() - self._failed_at)
        return None if failing is None or left <= 0 else (failing, left)

    @property
    def is_open(self) -> bool:
        """Whether appends are taken (opened, not closed)."""
        return self._writer is not None and not self._closed

    def close(self) -> None:
        """Write what is queued, then stop the writer and close the file (in a child of
        ``os.fork()``, nothing: they are the parent's)."""
        if self._writer is None or in_other_process(self._pid):
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._writer = None
        left = self.gone()
        if left is not None:
            self._let_go(left)
        elif self._conn is not None:
            self._conn.close()
            self._conn = None
            forget_log_owner(self.path)

    def __enter__(self) -> SQLiteStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Writes ------------------------------------------------------------------------------------

    def append(self, record: Record, *, keep_trying: bool = False) -> Future[None]:
        """Queue ``record``; the future resolves when it is committed (or holds the error).
        With ``keep_trying``, a record the database refuses (a full disk) is also kept to be
        written once it takes writes again, as lazy records are (for a log entry: written
        late rather than never; not for what must be learned only if kept now)."""
        check_process(self._pid, "this store")
        if self._closed or self._writer is None:
            raise StoreError(f"{quoted_path(self.path)}: the store is not open")
        done: Future[None] = Future()
        # Queued means it will be written: a caller that stops waiting (a client that left)
        # cannot cancel it, and the writer can always resolve it.
        done.set_running_or_notify_cancel()
        self._queue.put((record, done, keep_trying))
        return done

    def append_lazy(self, record: Record) -> None:
        """Queue ``record`` without waking the writer: it is committed with the next record
        appended by :meth:`append` (in append order), or within :data:`LAZY_WAIT_S`, so it
        costs no commit, fsync or thread switch of its own. For records nobody waits for (a
        budget reservation, any record of a log entry but its last). One the database refuses
        (a full disk) is tried again once it takes writes; one it cannot take is logged."""
        check_process(self._pid, "this store")
        if self._closed or self._writer is None:
            raise StoreError(f"{quoted_path(self.path)}: the store is not open")
        self._lazy.append((record, None, True))

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            try:
                # Wakes every LAZY_WAIT_S while idle: lazy records never signal.
                first = self._queue.get(timeout=LAZY_WAIT_S)
            except queue.Empty:
                first = None
            # Lazy records appended before the item just taken come first (append order).
            batch: list[Any] = []
            while self._lazy and len(batch) < MAX_BATCH:
                batch.append(self._lazy.popleft())
            if first is not None:
                batch.append(first)
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
                while self._lazy:
                    batch.append(self._lazy.popleft())
            try:
                if batch:
                    self._commit(batch)
                if (self._retry or self._unwritten) and (stop or self.refusing() is None):
                    self._commit_retried()
                if not batch and not stop:
                    self._look_at_file()
            except Exception as exc:  # the writer must outlive any one batch
                log.exception("%s: the writer failed a batch", self.path)
                for _, done, _ in batch:
                    if done is not None and not done.done():
                        done.set_exception(StoreError(f"{quoted_path(self.path)}: the write failed "
                                                      f"({type(exc).__name__}: {exc})"))
        if self._retry:
            self._spill()

    def _transaction(self, records: Sequence[Record], *, kept: bool = False) -> None:
        """Insert ``records`` in one transaction (rolled back if it fails, then raised).
        ``kept``: records that waited in the spill file too, which another store may have
        written meanwhile (one taking the file up with no service running): a row already
        there is passed over, as when the file is taken up."""
        by_table: dict[str, list[tuple[Any, ...]]] = {}
        try:
            for record in records:
                by_table.setdefault(record.insert, []).append(record.row())
            conn = self._writable()
            self._wait_for_lock(conn)
            conn.execute("BEGIN")
            for insert, rows in by_table.items():
                if (kept and spillable(insert) and cap_of(insert) is None
                        and insert != FORGET_PENDING):
                    rows = [row for row in rows if not already_there(conn, insert, row)]
                conn.executemany(insert, rows)
            conn.execute("COMMIT")
        except Exception as exc:  # whatever failed, the next transaction starts clean
            if refused(exc):
                self.failing, self._failed_at = str(exc), time.monotonic()
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        # Only rows stored say the database takes writes again (a prune that deletes nothing
        # needs no space, and goes through on a full disk).
        if self.failing is not None and any(
                record.insert.lstrip()[:6].upper() == "INSERT" for record in records):
            dropped = (f"; {self._dropped} record(s) that waited were dropped meanwhile "
                       f"(more than {MAX_RETRIED} waited)" if self._dropped else "")
            log.warning("%s: writes go through again%s", self.path, dropped)
            self._dropped = 0
            self.failing = None

    def _writable(self) -> sqlite3.Connection:
        """The writer's connection, or :class:`FileGoneError` when the file opened (or its
        ``-wal`` or ``-shm``) is no longer at :attr:`path` (deleted, or replaced by a restore
        or a move): the writer's commits would go to a file no later start reads (or to a log
        no other connection, nor a start after a crash, sees), and be lost with it. The first
        time, the writer lets go of the file (see :meth:`_let_go`). Three stats (a few
        microseconds, against a commit's fsync)."""
        left = self.gone()
        if left is not None:
            self._let_go(left)
        if self._conn is None:
            raise FileGoneError(
                f"{self.path.name} {self._left} while the service ran; what it logs waits in "
                f"{self.spill_path.name} until a restart opens the file now at {self.path}")
        return self._conn

    def _look_at_file(self) -> None:
        """While the writer is idle, let go of the file (see :meth:`_let_go`) once one of its
        files left its path: looked at every :data:`FILE_CHECK_S`, so that the old file's log
        is gone from the path within that time, not replayed into a file put there by a start
        after a crash."""
        now = time.monotonic()
        if self._conn is None or now < self._next_look:
            return
        self._next_look = now + FILE_CHECK_S
        left = self.gone()
        if left is not None:
            self._let_go(left)

    def _let_go(self, left: str) -> None:
        """The file opened (or its ``-wal`` or ``-shm``) ``left`` its path: the writer's
        connection writes its log into the file it has open, wherever that went, and is
        closed, and the old file's side files left at the path are removed, so that the next
        start does not replay that log into the file it finds there (see
        :func:`~switchpoint.store.moved.close_moved`); a restore's own are kept. From then on
        the database refuses writes (:class:`FileGoneError`) until a restart. Logged once."""
        if self._conn is None:
            return
        conn, self._conn, self._left = self._conn, None, left
        try:
            close_moved(conn, self.path, self._files)
        except OSError as exc:
            log.error("%s %s while the service ran, and the old file's -wal and -shm left at "
                      "that path could not be removed (%s): remove them before the restart, "
                      "or it takes them as the log of the file then there", self.path, left,
                      exc.strerror or exc)
        log.error("%s %s while the service ran; what it logs waits in %s: restore the file "
                  "(or leave it gone to start an empty one), then restart the service",
                  self.path, left, self.spill_path.name)

    def gone(self) -> str | None:
        """How the file opened left its path (``was deleted``, ``was replaced``, ``had its
        -wal file deleted or replaced``; see :func:`~switchpoint.store.moved.how_it_left`), or
        None while it is still there with its side files (or none was opened)."""
        if self._left is not None:
            return self._left
        if not self._files:
            return None
        return how_it_left(self._files, database_identity(self.path))

    def _wait_for_lock(self, conn: sqlite3.Connection) -> None:
        """Set how long the next write on ``conn`` waits for a lock another connection holds:
        :data:`BUSY_MS`, or :data:`PROBE_BUSY_MS` while the database refuses writes."""
        busy = BUSY_MS if self.failing is None else PROBE_BUSY_MS
        if busy != self._busy_ms:
            conn.execute(f"PRAGMA busy_timeout={busy}")
            self._busy_ms = busy

    def _commit(self, batch: list[_Item], *, kept_before: bool = False) -> None:
        """Commit ``batch`` in one transaction, or one by one if a record of it is bad. A lazy
        record (or one appended to keep trying) that the database itself refused (a full
        disk, a lock held too long) waits to be tried again (see :meth:`_commit_retried`),
        and is added to the spill file at once (unless ``kept_before``: it is there already);
        while it refuses (see :meth:`refusing`), such records wait at once, without waiting
        out the lock again one after the other."""
        if self.refusing() is not None and any(keep for _, _, keep in batch):
            # The database refused a moment ago: what may wait does so at once rather than
            # wait out the lock again (it is tried again with the retried records).
            waiting = [item for item in batch if item[2]]
            self._refused(waiting, self.failing or "", kept_before=kept_before)
            batch = [item for item in batch if not item[2]]
            if not batch:
                return
        try:
            self._transaction([record for record, _, _ in batch])
        except WRITE_ERRORS as exc:
            if refused(exc):  # the database, not a record: each one alone would wait again
                self._refused(batch, str(exc), kept_before=kept_before)
                return
            if len(batch) > 1:  # one bad record must not sink the others: write them one by one
                for item in batch:
                    self._commit([item], kept_before=kept_before)
                return
            record, done, _ = batch[0]
            # (a damaged file is said so, by the one rule: waiting does not mend it)
            error = store_error(self.path, f"write {_what(record)} {record.id}", exc,
                                reason=str(exc))
            if done is not None:
                done.set_exception(error)
            else:  # (one message however many records: a flood of them is counted as one)
                log.error("%s: could not write %s %s: %s", quoted_path(self.path),
                          _what(record), record.id, exc)
            return
        for _, done, _ in batch:
            if done is not None:
                done.set_result(None)

    def _refused(self, batch: list[_Item], reason: str, *, kept_before: bool = False) -> None:
        """``batch`` refused by the database itself (a full disk, a lock held too long): the
        records that may wait are kept for retry (see :meth:`_keep_for_retry`), the others'
        appenders told."""
        for record, done, keep in batch:
            if keep:
                self._keep_for_retry(record, kept_before=kept_before)
            if done is not None:
                done.set_exception(StoreError(
                    f"{quoted_path(self.path)}: could not write {_what(record)} {record.id}: "
                    f"{reason}"
                    + (" (kept: it is written once the database takes writes again)"
                       if keep else ""), reason=reason))


    def _keep_for_retry(self, record: Record, *, kept_before: bool = False) -> None:
        if len(self._retry) == self._retry.maxlen:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.error("%s: %d record(s) not written so far (the oldest of more than %d "
                          "that wait for the database to take writes again)", self.path,
                          self._dropped, MAX_RETRIED)
        if not kept_before:  # on disk first, so that what waits in memory is always there too
            self._journal([record])
        self._retry.append(record)

    def _commit_retried(self) -> None:
        """Write the lazy records refused writes left, oldest first, in batches, once a
        write went through or :data:`REFUSING_S` passed (then one batch tries the database
        again: refused, it goes back to wait). Once none waits, what :attr:`spill_path`
        still holds is written (most of it passed over: written just now) and it is
        removed."""
        while self._retry:
            part = [self._retry.popleft() for _ in range(min(MAX_BATCH, len(self._retry)))]
            try:
                self._transaction(part, kept=True)
            except WRITE_ERRORS as exc:
                if refused(exc):  # still refusing: they wait (room: the writer alone adds)
                    self._retry.extendleft(reversed(part))
                    return
                self._commit([(record, None, True) for record in part], kept_before=True)
        if self._unwritten:
            self._write_spilled(self._conn, at_open=False)

