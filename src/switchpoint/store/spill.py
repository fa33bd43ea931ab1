"""The spill file: where the records a store's database refused (a full disk, a lock held too
long) wait, one JSON line each, beside the database, until it takes writes again, so that a
crash meanwhile loses none of them. What a line holds and which records may wait there, the
rules by which its caps and deletions run again as they ran, its bound (and the reserve kept for
requests in flight), and :class:`SpillFile`, the part of
:class:`~switchpoint.store.sqlite.SQLiteStore` that adds to the file and takes it up."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from switchpoint._files import Progress, brief_lock, locked_file, private_file, sync_folder
from switchpoint.store.errors import refused
from switchpoint.store.logs import Record

log = logging.getLogger("switchpoint.store")


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
#: ``switchpoint.gateway.open_decisions``), written like a record. Refused, it waits, and is kept in
#: the spill file where it ran, as a cap was, so that it deletes the rows it names, written
#: before it in the file or in the database, when the file is read. Spill files keep its
#: text: changing it, keep the text it had read as this one.
FORGET_PENDING = "DELETE FROM pending WHERE decision_id IN (SELECT value FROM json_each(?))"


#: Each text a cap of one of :data:`_SPILLABLE`'s tables is kept in (:func:`keep_newest`,
#: today's or one of :data:`_EARLIER_CAPS`), to its table: made once, as every line of a spill
#: file is looked up in it as the file is read.
_CAPS = {text: table for table in _SPILLABLE
         for text in (keep_newest(table), *(e.format(table=table) for e in _EARLIER_CAPS))}


def cap_of(insert: str) -> str | None:
    """The table ``insert`` caps, if it is a cap of one of :data:`_SPILLABLE`'s tables (see
    :data:`_CAPS`)."""
    return _CAPS.get(insert)


def spillable(insert: str) -> bool:
    """Whether ``insert`` adds a row to one of :data:`_SPILLABLE`'s tables, and nothing else,
    or caps one of them (:func:`keep_newest`, :data:`FORGET_PENDING`)."""
    if cap_of(insert) is not None or insert == FORGET_PENDING:
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
        table = cap_of(insert)
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


_INSERT_HEAD = re.compile(r"\s*INSERT\s+(?:OR\s+REPLACE\s+)?INTO\s+(\w+)\s*\(([^)]*)\)",
                          re.IGNORECASE)


def already_there(conn: sqlite3.Connection, insert: str, values: Sequence[Any]) -> bool:
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


class SpillFile:
    """What :attr:`spill_path` keeps, for :class:`~switchpoint.store.sqlite.SQLiteStore`:
    the records its writer keeps for retry added to the file at once (and all again at close
    if an addition failed), and the file taken up (its records written, then removed) at
    :meth:`~switchpoint.store.sqlite.SQLiteStore.open` and once the database takes writes
    again, by the one store that may (see :meth:`_spill_claim`)."""

    # (set by SQLiteStore, which says what each is)
    path: Path
    spill_limit: int
    spill_reserve: int
    spill_full: str | None
    failing: str | None
    spilled_written: Callable[[list[tuple[str, list[Any]]]], None] | None
    _failed_at: float
    _retry: deque[Record]
    _unwritten: bool
    _journal_whole: bool
    _serving: bool
    _told_waiting: bool

    if TYPE_CHECKING:
        def _writable(self) -> sqlite3.Connection: ...

        def _wait_for_lock(self, conn: sqlite3.Connection) -> None: ...

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
        kept = [record for record in records if spillable(record.insert)]
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
                sync_folder(path.parent, quiet=True)
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
        kept = [record for record in self._retry if spillable(record.insert)]
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
            sync_folder(path.parent, quiet=True)
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
            if not (isinstance(insert, str) and spillable(insert)) or index in capped:
                passed += 1
                continue
            table = cap_of(insert)
            if table is not None:  # runs again where it ran, as it runs today: no row counted
                conn.execute(keep_newest(table), item["row"])
                continue
            if insert == FORGET_PENDING:  # (the rows written before the file, named in it)
                conn.execute(insert, item["row"])
                done.append((insert, list(item["row"])))
                continue
            values = [_from_json(v) for v in item["row"]]
            if already_there(conn, insert, values):  # written before (a crash after
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
