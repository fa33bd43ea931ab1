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
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

from switchpoint._files import (
    Progress,
    brief_lock,
    check_database_writable,
    database_identity,
    locked_file,
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
#: Most bytes the spill file (see ``SQLiteStore.spill_path``) grows to while the database
#: refuses writes; past it less its reserve (see :func:`spill_reserve`),
#: :attr:`SQLiteStore.spill_full` says so (the gateway then turns new requests away rather than
#: take work it could not log).
MAX_SPILL_BYTES = 64 * 1024 * 1024
#: The longest line of the spill file read as a record (bytes): a record's line is a few KiB
#: (see :data:`SPILL_PER_REQUEST`), so a longer one is no record a store wrote (a damaged
#: file), passed over, with a warning naming it, without being held whole.
MAX_SPILL_LINE = 16 * 1024 * 1024
#: Bytes of the spill file kept for one request in flight (its decision, its log entry, its
#: budget rows and its pending decision, as one outage spills them: 3 to 5 KiB with a few
#: models, more with many candidates or a long error), see :func:`spill_reserve`.
SPILL_PER_REQUEST = 16 * 1024


def spill_reserve(limit: int, in_flight: int) -> int:
    """The part of a spill file of ``limit`` bytes kept for the records of requests already
    taken when the rest fills (the gateway takes no new ones from then): room for
    ``in_flight`` requests (the most a server answers at once) at :data:`SPILL_PER_REQUEST`
    each, and never more than half the file (see :func:`spill_shortfall`)."""
    return min(max(in_flight, 0) * SPILL_PER_REQUEST, limit // 2)


def spill_shortfall(limit: int, in_flight: int) -> str | None:
    """Why a spill file of ``limit`` bytes cannot keep a reserve for ``in_flight`` requests
    (see :func:`spill_reserve`), and what to do about it; None when it can."""
    wanted = max(in_flight, 0) * SPILL_PER_REQUEST
    if wanted <= limit // 2:
        return None
    return (f"store.spill_max_mb ({limit / 2**20:g}) keeps room for the records of only "
            f"{limit // 2 // SPILL_PER_REQUEST} request(s) in flight when a long database "
            f"outage fills it, fewer than server.max_connections ({in_flight}): a crash then "
            "could lose what the others logged; raise spill_max_mb to at least "
            f"{2 * wanted / 2**20:g} or lower server.max_connections")


def _no_progress() -> None:
    """What a store serving from data_dir calls as it takes up the spill file: nobody waits
    for it (it holds the data_dir's lock for as long as it serves)."""


#: What writing a record can raise: the database's errors, and a value it cannot hold (a
#: wrong type, an int beyond 64 bits).
WRITE_ERRORS = (sqlite3.Error, ValueError, TypeError, OverflowError)

# The tables whose rows the writer keeps trying (and, at close, keeps in the spill file): the
# logs, the budgets' ledger and the decisions awaiting feedback.
_SPILLABLE = ("decisions", "requests", "spend", "pending")


def behind_newest(table: str) -> str:
    """The SQL expression (one parameter, ``?1``: how many) of the position (``seq``) at and
    before which ``table``'s rows are not among its newest that many (0 when all of them are):
    the rule by which a table keeps its newest rows.

    Exact, counted, not positions: a row written again (``INSERT OR REPLACE``) takes a new
    ``seq`` and leaves a gap, as does a row deleted from the middle, so the newest ``n`` rows
    may reach further back than ``n`` positions. It is the ``n+1``-th newest row's, found by
    stepping ``n`` rows back along the primary key; where the positions from the oldest to the
    newest are no more than ``n``, nor are the rows, and nothing is stepped."""
    return (f"CASE WHEN (SELECT max(seq) FROM {table}) - (SELECT min(seq) FROM {table}) < ?1 "
            f"THEN 0 ELSE coalesce((SELECT seq FROM {table} ORDER BY seq DESC LIMIT 1 OFFSET "
            f"?1), 0) END")


def keep_newest(table: str) -> str:
    """The statement (one parameter: how many) that keeps only the newest rows of ``table``
    (by ``seq``, exactly that many: see :func:`behind_newest`): a table's cap, as earlier
    versions wrote it like a record (the pending table's, before its rows were let go of by
    the tenants' shares and deleted by id: :data:`FORGET_PENDING`). No record writes it now;
    it is kept to read the spill files those versions wrote, where a cap waited where it ran,
    so that rows it dropped are not written again when the file is read (see :func:`_capped`),
    and it runs as it ran. Spill files keep its text: changing it, add the text it had to
    :data:`_EARLIER_CAPS`, so that a file written before is still read as it meant."""
    return f"DELETE FROM {table} WHERE seq <= {behind_newest(table)}"


#: The texts :func:`keep_newest` wrote before (``{table}`` for the table), which a spill file
#: written then holds: each meant the same cap (the table's newest rows, as many as its
#: parameter), so it caps the rows before it as :func:`keep_newest` does, and runs as it does
#: today. The first kept the rows within that many positions of the newest: fewer once a row
#: written again had left a gap.
_EARLIER_CAPS = (
    "DELETE FROM {table} WHERE seq <= (SELECT coalesce(max(seq), 0) FROM {table}) - ?",
)


#: The statement (one parameter: a JSON list of decision ids) that deletes the pending
#: decisions it names: those the rule of the decisions open to feedback let go of (see
#: ``switchpoint.gateway.learning``), written like a record. Refused, it waits, and is kept in
#: the spill file where it ran, as a cap was, so that it deletes the rows it names, written
#: before it in the file or in the database, when the file is read. Spill files keep its
#: text: changing it, keep the text it had read as this one.
FORGET_PENDING = "DELETE FROM pending WHERE decision_id IN (SELECT value FROM json_each(?))"


#: Each text a cap of one of :data:`_SPILLABLE`'s tables is kept in (:func:`keep_newest`,
#: today's or one of :data:`_EARLIER_CAPS`), to its table: made once, as every line of a spill
#: file is looked up in it as the file is read.
_CAPS = {text: table for table in _SPILLABLE
         for text in (keep_newest(table), *(e.format(table=table) for e in _EARLIER_CAPS))}


def _cap_of(insert: str) -> str | None:
    """The table ``insert`` caps, if it is a cap of one of :data:`_SPILLABLE`'s tables (see
    :data:`_CAPS`)."""
    return _CAPS.get(insert)


def _spillable(insert: str) -> bool:
    """Whether ``insert`` adds a row to one of :data:`_SPILLABLE`'s tables, and nothing else,
    or caps one of them (:func:`keep_newest`, :data:`FORGET_PENDING`)."""
    if _cap_of(insert) is not None or insert == FORGET_PENDING:
        return True
    words = insert.split(None, 5)
    head = [w.upper() for w in words[:4]]
    table = (words[2] if head[:2] == ["INSERT", "INTO"] and len(words) > 2 else
             words[4] if head == ["INSERT", "OR", "REPLACE", "INTO"] and len(words) > 4 else None)
    return table in _SPILLABLE and ";" not in insert


def _capped(rows: Sequence[Mapping[str, Any]], progress: Progress) -> set[int]:
    """The indexes of the spill file's ``rows`` whose row a cap later in the file dropped
    (:func:`keep_newest`: only the newest of the table are kept, a row's first column naming
    it, one written again counting as new): written again, it would come back. (A
    :data:`FORGET_PENDING` needs none of it: it runs again where it ran, after the rows it
    names, whose ids it deletes however often it runs.) ``progress`` is called row by row."""
    alive: dict[str, dict[Any, int]] = {}  # table -> first column -> index, oldest first
    dropped: set[int] = set()
    for index, item in enumerate(rows):
        progress()
        insert, row = item.get("insert"), item.get("row")
        if not isinstance(insert, str) or not row:
            continue
        table = _cap_of(insert)
        if table is not None:
            kept = alive.get(table, {})
            keep = row[0] if isinstance(row[0], int) and row[0] >= 0 else len(kept)
            for key in list(kept)[:max(len(kept) - keep, 0)]:
                dropped.add(kept.pop(key))
            continue
        head = _INSERT_HEAD.match(insert)
        if head is not None and isinstance(row[0], str | int | float):
            keys = alive.setdefault(head.group(1), {})
            keys.pop(row[0], None)  # written again: the newest now
            keys[row[0]] = index
    return dropped


def _ends_inside_a_line(path: Path) -> bool:
    """Whether the file at ``path`` ends inside a line (an append cut short)."""
    try:
        with path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _spill_lines(records: Sequence[Record]) -> str:
    """``records`` as spill-file lines: one JSON object each, its INSERT and its row."""
    return "".join(json.dumps({"insert": r.insert, "row": [_to_json(v) for v in r.row()]},
                              separators=(",", ":")) + "\n" for r in records)


def _sync_dir(folder: Path) -> None:
    """Put a file's creation or removal in ``folder`` on disk (where the system allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_INSERT_HEAD = re.compile(r"\s*INSERT\s+(?:OR\s+REPLACE\s+)?INTO\s+(\w+)\s*\(([^)]*)\)",
                          re.IGNORECASE)


def _already_there(conn: sqlite3.Connection, insert: str, values: Sequence[Any]) -> bool:
    """Whether a row just like the one ``insert`` adds with ``values`` is in its table. The
    spend ledger has no key to refuse a second copy: one entry written twice would be charged
    twice."""
    head = _INSERT_HEAD.match(insert)
    if head is None:
        return False
    columns = [c.strip() for c in head.group(2).split(",")]
    if len(columns) != len(values) or not all(c.isidentifier() for c in columns):
        return False
    where = " AND ".join(f"{c} IS NULL" if v is None else f"{c} = ?"
                         for c, v in zip(columns, values, strict=True))
    found = conn.execute(f"SELECT 1 FROM {head.group(1)} WHERE {where} LIMIT 1",
                         [v for v in values if v is not None]).fetchone()
    return found is not None


def _spill_file_lines(fh: BinaryIO) -> Iterator[bytes | None]:
    """The lines of the spill file ``fh``, read one at a time, each at most
    :data:`MAX_SPILL_LINE` bytes: a longer one is None, the rest of it read past in parts of
    that size, never held whole."""
    while raw := fh.readline(MAX_SPILL_LINE + 1):
        if len(raw) <= MAX_SPILL_LINE:
            yield raw
            continue
        while not raw.endswith(b"\n") and (raw := fh.readline(MAX_SPILL_LINE)):
            pass
        yield None


def _spilled_rows(lines: Iterable[bytes | None], progress: Progress
                  ) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a spill file's ``lines`` (read as they come, from the file itself: see
    :func:`_spill_file_lines`, None for one too long to be a record), and the numbers of its
    lines that are not whole records (a write cut short by a crash or a full disk), which are
    passed over: one torn line must not keep the others from being written. ``progress`` is
    called line by line, as each is read: a large file's reading shows it moves on to a
    service starting meanwhile."""
    rows: list[dict[str, Any]] = []
    torn: list[int] = []
    for number, raw in enumerate(lines, 1):
        progress()
        if raw is None:
            torn.append(number)
            continue
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            torn.append(number)
            continue
        if isinstance(item, dict) and "insert" in item and isinstance(item.get("row"), list):
            rows.append(item)
        else:
            torn.append(number)
    return rows, torn


def _to_json(value: Any) -> Any:
    return {"b64": base64.b64encode(value).decode("ascii")} if isinstance(value, bytes) else value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value


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


class SQLiteStore(LogReads):
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
                if (kept and _spillable(insert) and _cap_of(insert) is None
                        and insert != FORGET_PENDING):
                    rows = [row for row in rows if not _already_there(conn, insert, row)]
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

    @property
    def spill_path(self) -> Path:
        """Where records the database refused wait for it to take writes again (beside the
        database): each is added the moment it is kept for retry, so a crash loses none."""
        return self.path.with_name(self.path.name + ".unwritten.jsonl")

    def _journal(self, records: Sequence[Record], *, past_limit: bool = False) -> None:
        """Add ``records`` (those of the log's tables) to :attr:`spill_path`, on disk before
        this returns. If the disk does not take them either (it is full), or the file would
        grow past :attr:`spill_limit` (unless ``past_limit``: at close), they are only in
        memory: logged once, and added again at close."""
        kept = [record for record in records if _spillable(record.insert)]
        if not kept:
            return
        path = self.spill_path
        self._unwritten = True  # whatever happens, the file may hold some of it now
        try:
            lines = _spill_lines(kept)
            new = not path.exists()
            # Under the file's lock: a store taking it up meanwhile (in another process, say)
            # removes it once it is written, so an addition waits for that and makes a new one.
            with locked_file(private_file(path), append=True) as fd:
                assert fd is not None
                if _ends_inside_a_line(path):  # an earlier write cut short: its part stays a
                    lines = "\n" + lines  # line of its own, passed over when read
                size = os.fstat(fd).st_size
                new = new or size == 0
                data = lines.encode("utf-8")
                if not past_limit and size + len(data) > self.spill_limit - self.spill_reserve:
                    self._spill_is_full(size)  # no new requests; those in flight: the reserve
                if not past_limit and size + len(data) > self.spill_limit:
                    self._spill_overflows()
                    return
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            if new:
                _sync_dir(path.parent)
        except (OSError, TypeError, ValueError) as exc:
            disk = isinstance(exc, OSError)
            if self._journal_whole:
                log.error("%s: record(s) the database refused could not be kept in %s either "
                          "(%s): they wait in memory only, and a crash before the database "
                          "takes writes again loses them; %sfree space in data_dir", self.path,
                          path, exc, "the gateway turns new requests away until it does; "
                          if disk and not past_limit else "")
            self._journal_whole = False
            if disk and not past_limit and self.spill_full is None:
                # The disk refuses the file: what a new request would log could not be kept
                # anywhere a crash spares (a record that cannot be written out is its own).
                self.spill_full = (f"the database refuses writes ({self.failing or 'refused'})"
                                   f" and the file keeping what it refused ({path.name}) cannot"
                                   f" be written either ({exc})")

    def _spill_is_full(self, size: int) -> None:
        """The spill file reached ``spill_limit - spill_reserve``: say so (once an outage)."""
        if self.spill_full is not None:
            return
        reserve = (f", of which {self.spill_reserve} bytes are kept for requests in flight"
                   if self.spill_reserve else "")
        self.spill_full = (f"the database has refused writes for a while ({self.failing}) "
                           f"and the file keeping what it refused ({self.spill_path.name}, "
                           f"{size} bytes) is full "
                           f"(store.spill_max_mb: {self.spill_limit / 2**20:g}{reserve})")
        then = ("the records of requests already taken go to the rest of it, and "
                if self.spill_reserve else "records refused from now on wait in memory only, "
                "and ")
        log.error("%s: %s: %sthe gateway turns new requests away until the database takes "
                  "writes again; free space in data_dir, or stop what holds its lock",
                  self.path, self.spill_full, then)

    def _spill_overflows(self) -> None:
        """The spill file cannot take more (:attr:`spill_limit`): what is refused from now on
        waits in memory only (added to the file at close); said once an outage."""
        if not self._journal_whole:
            return
        self._journal_whole = False
        if self.spill_reserve:
            log.error("%s: the spill file %s reached store.spill_max_mb and its reserve for "
                      "requests in flight (%d bytes) is used up: records refused from now on "
                      "wait in memory only, and a crash before the database takes writes "
                      "again loses them; raise store.spill_max_mb", self.path,
                      self.spill_path, self.spill_reserve)

    def _spill(self) -> None:
        """At close: make sure every record still waiting for the database is in
        :attr:`spill_path` (one JSON line each: its INSERT and its row), written at the next
        :meth:`open`. They are there already unless adding them failed (a full disk): then
        they are all added again (one written twice is passed over when read)."""
        kept = [record for record in self._retry if _spillable(record.insert)]
        if self._journal_whole:
            if kept:
                log.warning("%s: %d record(s) the database refused until the store closed are "
                            "kept in %s and will be written when it opens again", self.path,
                            len(kept), self.spill_path)
            return
        self._journal_whole = True
        self._journal(kept, past_limit=True)  # (losing none beats the limit)
        if not self._journal_whole:
            log.error("%s: %d record(s) were not written: the database refused them until the "
                      "store closed, and they could not be kept in %s either", self.path,
                      len(self._retry), self.spill_path)
            return
        log.warning("%s: %d record(s) the database refused until the store closed are kept in "
                    "%s and will be written when it opens again", self.path, len(kept),
                    self.spill_path)

    def _take_up_spilled(self, conn: sqlite3.Connection) -> None:
        """At :meth:`open`: write what :attr:`spill_path` keeps (see :meth:`_write_spilled`);
        if the database refuses them, the writer tries again once it takes writes."""
        self._write_spilled(conn, at_open=True)

    @contextlib.contextmanager
    def _spill_claim(self) -> Iterator[tuple[str | None, Progress]]:
        """For the ``with`` block, whether this store may write and remove :attr:`spill_path`
        (see :meth:`open`): None when it may, else why not; and what to call as the writing
        moves on (a service starting meanwhile waits as long as it does: see
        :func:`~switchpoint._files.brief_lock`)."""
        if self._serving:
            yield None, _no_progress
            return
        with contextlib.ExitStack() as stack:
            try:
                progress = stack.enter_context(brief_lock(self.path.parent, "spill"))
            except OSError as exc:
                yield f"the data_dir's lock cannot be taken ({exc.strerror or exc})", _no_progress
                return
            if progress is None:
                yield "a service serves from this data_dir", _no_progress
            else:
                yield None, progress

    def _leave_spilled(self, why: str) -> None:
        """Leave :attr:`spill_path` to the service, or to the next store that takes it up (its
        records they write), saying so once."""
        self._unwritten = False  # (this store's own records there: written from memory)
        if self._told_waiting:
            return
        self._told_waiting = True
        try:
            with self.spill_path.open("rb") as fh:
                count = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        except OSError:
            return  # (written and removed meanwhile)
        log.warning("%s: %d record(s) wait in %s for the service, or the next store that "
                    "takes the file up, to write them (%s; a store beside it leaves that file "
                    "alone)", self.path, count, self.spill_path.name, why)

    def _write_spilled(self, conn: sqlite3.Connection | None, *, at_open: bool) -> None:
        """:meth:`_take_spilled` when this store may (see :meth:`open`), else leave the file
        to the service."""
        if not self.spill_path.exists():
            self._unwritten, self._journal_whole, self.spill_full = False, True, None
            return
        with self._spill_claim() as (why_not, progress):
            if why_not is None:
                self._take_spilled(conn, at_open=at_open, progress=progress)
            else:
                self._leave_spilled(why_not)

    def _take_spilled(self, conn: sqlite3.Connection | None, *, at_open: bool,
                      progress: Progress) -> None:
        """Write what :attr:`spill_path` keeps (a row already there is passed over), then
        remove the file. At :meth:`open`; and by the writer once every record it kept for
        retry is written (the file may also hold records an earlier start could not write,
        or that were dropped from memory past :data:`MAX_RETRIED`). If the database refuses
        them, they wait there to be tried again. ``conn``: the connection :meth:`open` made
        (the writer's own is taken when not ``at_open``)."""
        path = self.spill_path
        if not path.exists():
            self._unwritten, self._journal_whole, self.spill_full = False, True, None
            return
        written = passed = 0
        torn: list[int] = []
        done: list[tuple[str, list[Any]]] = []  # (for spilled_written)
        try:
            # Under the file's lock, from its reading to its removal: what another store (in
            # another process, say) adds meanwhile waits, and goes to a new file.
            if not at_open:
                conn = self._writable()
            assert conn is not None
            with locked_file(path) as fd:
                if fd is None:  # taken up by another store meanwhile
                    self._unwritten, self._journal_whole, self.spill_full = False, True, None
                    return
                with os.fdopen(os.dup(fd), "rb") as fh:
                    rows, torn = _spilled_rows(_spill_file_lines(fh), progress)
                passed += len(torn)
                written, passed = self._write_rows(conn, rows, passed, progress, done)
                path.unlink()
            _sync_dir(path.parent)
            self.spill_full = None
        except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as exc:
            if conn is not None and conn.in_transaction:
                conn.execute("ROLLBACK")
            if at_open:  # the writer tries them again once the database takes writes
                log.error("%s: the records kept in %s were not written (%s); they wait there, "
                          "to be written once the database takes writes again", self.path, path,
                          exc)
                self._unwritten = True
            elif refused(exc):  # still refusing: tried again after REFUSING_S
                self.failing, self._failed_at = str(exc), time.monotonic()
            else:
                log.error("%s: the records kept in %s were not written (%s); they wait there "
                          "for the next start", self.path, path, exc)
                self._unwritten = False
            return
        self._unwritten, self._journal_whole = False, True
        told = self.spilled_written
        if not at_open and told is not None and done:
            try:
                told(done)
            except Exception:  # (the writer outlives what a reader does with them)
                log.exception("%s: the rows written from %s were not told", self.path, path)
        if torn:
            log.warning("%s: passed over line(s) %s of %s: not whole records (a write cut short "
                        "by a crash or a full disk while they were kept, or a line over %d "
                        "bytes, longer than any record)", self.path,
                        ", ".join(map(str, torn[:10])) + (", ..." if len(torn) > 10 else ""),
                        path, MAX_SPILL_LINE)
        if at_open:
            log.warning("%s: wrote %d record(s) kept at the last close (%d passed over)",
                        self.path, written, passed)
        elif written:
            log.warning("%s: wrote %d more record(s) kept in %s (%d passed over: written "
                        "before)", self.path, written, path, passed)

    def _write_rows(self, conn: sqlite3.Connection, rows: list[dict[str, Any]],
                    passed: int, progress: Progress,
                    done: list[tuple[str, list[Any]]]) -> tuple[int, int]:
        """Write the spill file's ``rows`` on ``conn`` in one transaction (see
        :meth:`_take_spilled`): (how many were written, how many passed over, counting
        ``passed`` already); each INSERT written and :data:`FORGET_PENDING` run is added to
        ``done`` with its values."""
        written = 0
        capped = _capped(rows, progress)
        self._wait_for_lock(conn)
        conn.execute("BEGIN")
        for index, item in enumerate(rows):
            progress()
            insert = item["insert"]
            if not (isinstance(insert, str) and _spillable(insert)) or index in capped:
                passed += 1
                continue
            table = _cap_of(insert)
            if table is not None:  # runs again where it ran, as it runs today: no row counted
                conn.execute(keep_newest(table), item["row"])
                continue
            if insert == FORGET_PENDING:  # (the rows written before the file, named in it)
                conn.execute(insert, item["row"])
                done.append((insert, list(item["row"])))
                continue
            values = [_from_json(v) for v in item["row"]]
            if _already_there(conn, insert, values):  # written before (a crash after
                passed += 1  # writing it, before the file was removed)
                continue
            try:
                conn.execute(insert, values)
                written += 1
                done.append((insert, values))
            except sqlite3.IntegrityError:  # written before (a store closed mid-way)
                passed += 1
        conn.execute("COMMIT")
        return written, passed

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

