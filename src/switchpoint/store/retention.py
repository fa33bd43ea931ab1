"""Retention for the logs: delete entries older than a cutoff, give the space back, and say how
much disk the data directory takes.

:func:`prune` is what ``switchpoint prune`` runs, and what the service runs hourly when the
config sets ``store.retention_days``. It deletes in short batches (so a service writing at the
same time waits milliseconds, not the whole prune), each appending the cutoff to the ``prunes``
table in the same transaction (the triggers then allow deleting rows older than it, and only
those; a reader sees a prune and the rows it deleted gone together; the table keeps its newest
``PRUNES_KEPT`` rows and the one with the latest cutoff, so it stays small), then returns the
freed pages to the file system: ``PRAGMA incremental_vacuum`` on a store created with
incremental auto-vacuum (every store this version creates; also when this prune deleted nothing
but the file holds free pages, which a prune killed before this step leaves), a full ``VACUUM``
on an older one when ``full_vacuum`` allows it (it rewrites the file and holds the write lock
meanwhile), and a WAL checkpoint that truncates the ``-wal`` file. Rows that are kept are never
changed.

The spend ledger is pruned by the same cutoff, except the rows the budgets still read: a short
retention keeps the calendar month under way and the week before it (see :func:`ledger_cutoff`),
so a restart after a prune counts every budget's spend as before it.

The feedback log is pruned by the same cutoff too, but only of the rows the learning checkpoint
beside the store already holds (see :func:`feedback_bound`): a start takes up the checkpoint and
replays only the rows after it, so nothing learned from a pruned row is lost, after a crash
either. Without a checkpoint of this log nothing of it is pruned. A service's own retention
prunes only by a checkpoint of the learning it runs (its key), and no row past what it has
learned itself: the checkpoint may be another process's (a Python program's gateway serving
no chat writes one), holding rows the service has not taken up yet. ``switchpoint prune``, which
loads no weights, prunes by whatever checkpoint is there, and only while no service serves
from the data directory (it holds the directory's lock meanwhile, so none starts): beside a
running service, which may not have learned every row that checkpoint holds and would write
its own over it, the feedback log is left to that service's retention. A checkpoint that no
longer fits (other weights or learning settings) is passed over at the next start and the rows
kept are replayed, so what was learned from pruned ones is then not learned again (export the
learned weights with ``switchpoint learn --export`` first to keep it in them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchpoint._files import (
    CHECKPOINT_FILENAME,
    SERVE_LOCK,
    SQLITE_SIDE_FILES,
    Progress,
    brief_lock,
    read_small,
    served,
    side_file,
    sync_folder,
    write_atomically,
)
from switchpoint._limits import MAX_RETENTION_DAYS as MAX_RETENTION_DAYS
from switchpoint._messages import json_quoted, people_number, quoted_path
from switchpoint.errors import StoreError
from switchpoint.store.errors import store_error
from switchpoint.store.migrations import LEDGER_KEEP_S, LEDGER_TABLE, LOG_TABLES, PRUNES_KEPT
from switchpoint.store.reading import Gone, read_only, read_store, still_there
from switchpoint.store.spill import behind_newest
from switchpoint.store.sqlite import INCREMENTAL, SQLiteStore

log = logging.getLogger("switchpoint.store")
SECONDS_PER_DAY = 86_400.0
#: The learning table retention prunes, of the rows a checkpoint holds only.
FEEDBACK_TABLE = "feedback"
# Rows deleted per transaction.
BATCH = 2_000
# A request's row and a feedback row stay while the decision they belong to is logged: its
# deletion reads them (an experiment's kept totals), and a decision may be left older than
# they are (a prune stopped at its bound, or a request planned just before its decision).
# ``{decisions}`` is the decisions that stay: all of them, or in a dry run those the prune
# keeps.
_DECISION_KEPT = "decision_id IN (SELECT id FROM decisions{decisions})"
_NOT_WITH_DECISION = f" AND (decision_id IS NULL OR NOT {_DECISION_KEPT})"
# The files of the data directory counted as its state: the databases, the learning checkpoint.
_DB_SUFFIXES = (".db", ".db-wal", ".db-shm")
_STATE_FILES = frozenset({CHECKPOINT_FILENAME})


@dataclass(frozen=True)
class PruneReport:
    """What a prune did (or, with ``dry_run``, would do)."""

    cutoff: float
    deleted: dict[str, int]
    bytes_before: int
    bytes_after: int
    dry_run: bool
    complete: bool  # False: it stopped at max_rows with older rows left
    vacuum: str  # "incremental", "full", "none" (the file keeps its free pages) or "dry-run"
    feedback_kept: str | None = None  # why no feedback row was pruned, if for a reason to say
    # The bytes the write-ahead log (the -wal file) held when the prune checkpointed it into
    # the database and truncated it: what a prune that deleted nothing and vacuumed nothing
    # still changes of the sizes (the -shm goes too when no other connection has the file).
    wal_checkpointed: int = 0
    # Seconds the clock read past the newest entry logged, when more than the retention's
    # window (see :func:`held_cutoff`); None: the clock was not that far ahead.
    clock_ahead: float | None = None
    # Whether ``cutoff`` was then taken back to the window before that entry (a prune given
    # ``hold``); else every entry older than the cutoff asked for went.
    held: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "deleted": dict(self.deleted),
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "dry_run": self.dry_run, "complete": self.complete, "vacuum": self.vacuum,
                "wal_checkpointed": self.wal_checkpointed, "feedback_kept": self.feedback_kept,
                "clock_ahead": self.clock_ahead, "held": self.held}

    def clock_note(self, days: float) -> str | None:
        """What the operator is told when the clock read further past the newest entry logged
        than the retention of ``days`` keeps (None: it did not): that the prune kept the
        window before that entry, and what to check."""
        if self.clock_ahead is None:
            return None
        ahead = (f"the clock reads {self.clock_ahead / SECONDS_PER_DAY:,.1f} days past the "
                 f"newest entry logged, more than the {days:g} days the retention keeps")
        if not self.held:
            return (f"{ahead}: every entry older than {days:g} days by the clock "
                    f"{'would go' if self.dry_run else 'went'}, as asked; if the clock jumped "
                    "ahead, set it right (store.retention_days, by which the service prunes, "
                    "keeps the entries logged in that many days before the newest)")
        return (f"{ahead}: the prune {'would keep' if self.dry_run else 'kept'} the entries "
                f"logged in the {days:g} days before that entry rather than deleting all of "
                "them; if the clock jumped ahead, set it right (entries logged meanwhile carry "
                "its time); if nothing was logged for that long, the older entries go once "
                "new ones are logged, or at once with switchpoint prune --older-than DAYS")


#: Why ``switchpoint prune`` beside a running service leaves the feedback log alone.
BESIDE_SERVICE = ("a service is serving from this data_dir: its feedback log is left to that "
                  "service's own retention (store.retention_days), which prunes only what it "
                  "has learned (a checkpoint here may hold outcomes it has not taken up yet, "
                  "and it would write its own over it); to prune feedback from here, stop the "
                  "service first")


#: What a retention may be, in words (for the messages that refuse one).
RETENTION_DAYS = f"a number of days > 0 and at most {people_number(MAX_RETENTION_DAYS)}"


def retention_ok(days: float) -> bool:
    """Whether ``days`` is a retention :func:`cutoff_for` takes: finite, > 0, at most
    :data:`MAX_RETENTION_DAYS` (NaN, infinity and a negative age are not)."""
    return 0 < days <= MAX_RETENTION_DAYS


def cutoff_for(days: float, now: float | None = None) -> float:
    """The timestamp ``days`` before ``now``; ``days`` must be :func:`retention_ok`."""
    if not retention_ok(days):
        raise ValueError(f"the retention must be {RETENTION_DAYS}, got {json_quoted(days)}")
    return (time.time() if now is None else now) - days * SECONDS_PER_DAY


def ledger_cutoff(cutoff: float, now: float | None = None) -> float:
    """What a prune at ``cutoff`` may delete of the spend ledger: its rows older than
    ``cutoff`` and than a week before the calendar month of ``now`` (UTC) began. The budgets
    read the settled spend of the periods under way (the longest a month, or a week that began
    in the month before) and the reservations of the last day; the ledger's trigger refuses
    deleting anything newer."""
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    month = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    return min(cutoff, month - LEDGER_KEEP_S)


def db_bytes(path: Path) -> int:
    """The size of a SQLite database with its ``-wal`` and ``-shm`` files."""
    return sum(_size(file) for file in (path, *(side_file(path, suffix)
                                               for suffix in SQLITE_SIDE_FILES)))


def _size(file: Path) -> int:
    """``file``'s size in bytes (0: there is none)."""
    try:
        return os.stat(file).st_size
    except OSError:
        return 0


def disk_usage(data_dir: str | Path) -> dict[str, Any]:
    """Bytes taken by the state in ``data_dir`` (the databases and the learning checkpoint)
    and bytes free on its file system."""
    folder = Path(data_dir)
    used = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if (entry.name.endswith(_DB_SUFFIXES) or entry.name in _STATE_FILES) and (
                        entry.is_file()):
                    used += entry.stat().st_size
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    return {"data_dir": str(folder), "db_bytes": used, "free_bytes": free}


#: How far past the newest entry logged the clock must read before a held prune measures its
#: window from that entry: a jump worth holding for is one of days; a window shorter than
#: this (or a pause of the traffic shorter than it) is pruned by the clock, as configured.
HELD_AFTER_S = 86_400.0


def held_cutoff(file: Path, cutoff: float, now: float) -> tuple[float, float | None]:
    """The cutoff a held prune at ``cutoff`` goes by at ``now``, and how far the clock reads
    past the newest entry logged when that is more than the window (``now - cutoff``) the
    retention keeps and more than :data:`HELD_AFTER_S` (else None). A wall clock that jumped
    ahead (an NTP step, a virtual machine resumed with a wrong clock) makes every entry look
    older than the window, and an
    unattended prune would delete the whole log at once (every decision and request, and
    every feedback row the learning checkpoint holds, leaving that file the only copy of what
    was learned): held, the window is never measured past the newest entry of the decisions,
    requests and feedback logs, so a prune keeps at least the entries logged in the window
    before it. A store with no entry, or one that cannot be read (the prune then says why),
    keeps ``cutoff``."""
    window = now - cutoff
    try:
        with _reading(file) as (conn, tables):
            # (each by its index on ts; the feedback log, appended in time order, by its
            # last row)
            found = [conn.execute("SELECT ts FROM feedback ORDER BY seq DESC LIMIT 1"
                                  if t == FEEDBACK_TABLE else f"SELECT max(ts) FROM {t}"
                                  ).fetchone() for t in (*LOG_TABLES, FEEDBACK_TABLE)
                     if t in tables]
    except sqlite3.Error:
        return cutoff, None
    stamps = [float(row[0]) for row in found if row is not None and row[0] is not None]
    if not stamps:
        return cutoff, None
    newest = max(stamps)
    if now - newest <= max(window, HELD_AFTER_S):
        return cutoff, None
    return newest - window, now - newest


#: A step of the wall clock between two prunes of a service (beyond the time its clock since
#: boot, :func:`since_boot`, says passed) that its retention leaves out: past what a clock
#: slews or a busy machine delays, and well under a day.
CLOCK_STEP_S = 60.0


#: The file in data_dir where a service's :class:`RetentionClock` keeps what it read last and
#: what it leaves out, so that a restart goes on from there.
RETENTION_CLOCK_FILENAME = "retention.clock"
# Most bytes a reading kept in RETENTION_CLOCK_FILENAME takes (it takes some 200).
_MAX_CLOCK_BYTES = 1024
#: Where Linux names the boot the clocks since boot count from (which a restart of the service
#: keeps, and a reboot changes).
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# The clock since boot that counts a machine's sleep (Linux's), where the platform has one.
_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def since_boot() -> float:
    """Seconds since this boot, the machine's sleep (suspend) counted: ``CLOCK_BOOTTIME``
    where the platform has it (Linux), else the monotonic clock, which may not count a sleep
    (then, after one, entries stay that much longer, never less)."""
    if _BOOTTIME is not None:
        with contextlib.suppress(OSError):  # (a kernel without it)
            return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


def boot_id() -> str | None:
    """The id of this boot of the machine (None where the system does not say)."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


class RetentionClock:
    """The time a service's retention goes by: the wall clock, less the steps it took ahead
    between two of the service's prunes that its clock since boot did not (an NTP step, a
    virtual machine resumed with a wrong clock). The clock since boot (:func:`since_boot`)
    counts a machine's sleep, so a wall clock that moved on over a suspend took no step.
    Entries logged after a step carry the clock's new time, so :func:`held_cutoff`, which
    measures from the newest entry, no longer sees it: left out here, the entries logged
    before it are pruned once the time that really passed makes them as old as the
    retention, not all at the next prune. A step back (the clock set right again) takes back
    what was left out, never more. Read with a data_dir, it keeps its last reading and what
    it leaves out in :data:`RETENTION_CLOCK_FILENAME` there, and a restart goes on from it:
    on the same boot (the clock since boot counting on) a step taken while the service was
    stopped is seen too; after a reboot, what was left out stays left out, less any step
    back the clock took below the time it read last (so entries stay up to the time the
    machine was down longer, never less). The file keeps the monotonic clock's reading too
    (``monotonic``), which versions before this one went by: a file one of them wrote is
    taken up by it on the same boot, and one this wrote by them. Where the platform has no
    clock counting a sleep, after one, entries stay that much longer, never less."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 since_boot: Callable[[], float] = since_boot,
                 boot: Callable[[], str | None] = boot_id,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._since_boot = since_boot
        self._boot = boot
        self._monotonic = monotonic
        self._last: tuple[float, float] | None = None
        self._loaded = False
        #: Seconds of the clock's steps ahead left out.
        self.left_out = 0.0

    def read(self, data_dir: Path | None = None) -> tuple[float, float | None]:
        """The time to prune by, and the step the wall clock took since the last read beyond
        the time that passed (seconds, ahead > 0; None: none past :data:`CLOCK_STEP_S`).
        ``data_dir``: where the last reading is kept for a restart (see the class)."""
        wall, booted, mono = self._wall(), self._since_boot(), self._monotonic()
        boot = self._boot()
        step = None
        if self._last is None and data_dir is not None and not self._loaded:
            self._loaded = True
            step = self._go_on_from(data_dir / RETENTION_CLOCK_FILENAME, wall, booted, mono,
                                    boot)
        elif self._last is not None:
            moved = (wall - self._last[0]) - (booted - self._last[1])
            if abs(moved) > CLOCK_STEP_S:
                step = moved
                self.left_out = max(0.0, self.left_out + moved)
        self._last = (wall, booted)
        if data_dir is not None:
            self._keep(data_dir / RETENTION_CLOCK_FILENAME, wall, booted, mono, boot)
        return wall - self.left_out, step

    def _go_on_from(self, path: Path, wall: float, booted: float, mono: float,
                    boot: str | None) -> float | None:
        """Take up the reading a run before this one kept at ``path`` (see the class): the
        step since, as :meth:`read` says it, and the days it leaves out said. A file that is
        missing is a start from the clock; so is one no reading could be (damaged, or put
        there by hand: not a reading's JSON, a time or a clock not finite, steps left out
        that take the time before 1970, this boot's clock read ahead of itself), saying so."""
        data = read_small(path, _MAX_CLOCK_BYTES)
        if data is None and not (path.exists() or path.is_symlink()):
            return None
        try:
            kept: Any = json.loads(data or b"")
            then_wall, then_mono = float(kept["wall"]), float(kept["monotonic"])
            left_out, then_boot = float(kept["left_out"]), kept["boot"]
            # (the clock since boot; in a file an older version wrote, the monotonic one)
            then, now = ((float(kept["boottime"]), booted) if "boottime" in kept
                         else (then_mono, mono))
        except (ValueError, TypeError, KeyError):
            then_wall = then = now = left_out = math.nan  # (said below)
            then_boot = None
        same_boot = boot is not None and then_boot == boot  # (the clock since boot counted on)
        if not (all(math.isfinite(v) for v in (then_wall, then, left_out))
                and 0.0 <= left_out < then_wall and not (same_boot and then > now)):
            log.warning("%s: not a reading this wrote (a damaged file, or one put there by "
                        "hand); the retention goes by the clock", path)
            return None
        self.left_out = left_out
        # (rebooted: only a step back below the time read last is known)
        moved = (wall - then_wall) - (now - then) if same_boot else min(0.0, wall - then_wall)
        if abs(moved) > CLOCK_STEP_S:
            self.left_out = max(0.0, self.left_out + moved)
            return moved  # (said by the caller, with what is left out)
        if self.left_out > CLOCK_STEP_S:
            log.warning("retention: %s leaves out %.2f days of steps of the clock ahead, taken "
                        "before this start (entries logged before them are pruned that much "
                        "later); if the clock has been right all along (the file is another "
                        "machine's, or restored), stop the service and remove the file",
                        path, self.left_out / SECONDS_PER_DAY)
        return None

    def _keep(self, path: Path, wall: float, booted: float, mono: float,
              boot: str | None) -> None:
        """Keep this reading at ``path`` for the next run (a failure is said, and the next
        restart goes by the clock): the clock since boot's, and the monotonic clock's for a
        version before this one."""
        line = json.dumps({"boot": boot, "wall": wall, "boottime": booted, "monotonic": mono,
                           "left_out": self.left_out})
        try:
            write_atomically(path, lambda fh: fh.write(line.encode("ascii")), 0o600,
                             state=True)
        except OSError as exc:
            log.warning("%s: cannot keep the retention's clock there (%s): a restart goes by "
                        "the clock", path, exc.strerror or exc)


def feedback_bound(file: Path, cutoff: float, gone: Gone | None = None,
                   checkpoint_key: str | None = None) -> int | None:
    """The log position of the feedback log below which its rows may be pruned at
    ``cutoff``: the one the learning checkpoint beside the store at ``file`` holds, when it was
    made from this log (its event is there; the row there stays, since a start checks it) and,
    given ``checkpoint_key``, for the learning that key names (a service passes its own: a
    checkpoint of other weights or learning settings, which its next start passes over, holds
    nothing it could take up), or
    the first row not older than the cutoff, if that comes first. So what goes is always the
    start of the log, as weights exported from it name it (the rows they folded in, up to a
    position: none of those is left to be learned again). None: nothing of the feedback log
    may go (no checkpoint, an unreadable one, or one of another log). The data directory is
    synced first, so that the checkpoint read here is the one a start after a crash finds (its
    rename durable), never an older one. Without a checkpoint file nothing is read, and
    the checkpoint's reader (with NumPy, which reads its archive) is not loaded."""
    checkpoint = file.with_name(CHECKPOINT_FILENAME)
    if not os.path.exists(checkpoint):  # (nor one that cannot be looked at)
        return None
    from switchpoint.learning.checkpoint import checkpoint_position

    position = checkpoint_position(checkpoint, checkpoint_key)
    if position is None:
        return None
    sync_folder(file.parent, quiet=True)
    seq, event_id = position
    try:
        conn = read_only(file, gone)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            row = conn.execute("SELECT event_id FROM feedback WHERE seq = ?", (seq,)).fetchone()
            newer = conn.execute("SELECT seq FROM feedback WHERE ts >= ? ORDER BY seq LIMIT 1",
                                 (cutoff,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise store_error(file, "read it to find what the learning checkpoint holds",
                          exc) from None
    if row is None or row[0] != event_id:
        return None
    return seq if newer is None else min(seq, int(newer[0]))


def prune(path: str | Path, cutoff: float, *, dry_run: bool = False,
          max_rows: int | None = None, full_vacuum: bool = True,
          upgrade: bool = True, gone: Gone | None = None,
          checkpoint_key: str | None = None, learned_through: int | None = None,
          hold: bool = False, now: float | None = None) -> PruneReport:
    """Delete the log entries of the store at ``path`` older than ``cutoff`` (seconds since the
    epoch); at most ``max_rows`` per table when given. ``upgrade`` first brings an older schema
    up to date (a running service has done it) and, unless ``dry_run``, writes what the spill
    file beside the store keeps when no service runs, so that its records older than the cutoff
    are pruned with the rest, not written back later. ``gone``: the store writing ``path``
    beside this prune (a service's own retention), whose file deleted or replaced since is
    not touched (see :func:`~switchpoint.store.reading.still_there`). ``checkpoint_key``: the
    learning whose checkpoint alone lets feedback go (see :func:`feedback_bound`).
    ``learned_through``: given by the service serving from the data directory (its own
    retention), the log position it has learned every feedback row up to: no row past it is
    pruned. Without it, feedback rows are pruned only while no service serves from the data
    directory, whose lock is held meanwhile (a service starting waits for it); beside one they
    all stay, and :attr:`PruneReport.feedback_kept` says why. ``hold`` (a retention that runs
    unattended, by ``store.retention_days``): when the clock reads further past the newest
    entry logged than the window ``cutoff`` keeps, the window is measured back from that entry
    instead (see :func:`held_cutoff`), so a clock that jumped ahead does not delete the whole
    log in one pass; :attr:`PruneReport.clock_ahead` says how far ahead it read, held or not.
    ``now``: the time the retention goes by, when not the wall clock's (a service's
    :class:`RetentionClock`; never later than the wall clock). Raises :class:`StoreError`."""
    file = Path(path)
    wall = time.time()
    now = wall if now is None else min(now, wall)
    ahead = cutoff - wall
    if ahead > 0:
        raise StoreError(f"{quoted_path(file)}: the cutoff is {ahead:.3f} s in the future; a "
                         "prune deletes "
                         "only entries already logged (give an age > 0)")
    still_there(file, gone)
    if not file.is_file():
        raise StoreError(f"{quoted_path(file)}: no store there (check --config / data_dir)")
    held, clock_ahead = held_cutoff(file, cutoff, now)
    if hold:
        cutoff = held
    hold = hold and clock_ahead is not None
    cutoffs = {**{t: cutoff for t in LOG_TABLES}, LEDGER_TABLE: ledger_cutoff(cutoff, now)}
    before = db_bytes(file)
    if dry_run:
        kept = BESIDE_SERVICE if learned_through is None and served(file.parent) else None
        below = None if kept is not None else _learned_below(
            _feedback_bound_if_kept(file, cutoff, gone, checkpoint_key), learned_through)
        return PruneReport(cutoff, _count_older(file, {**cutoffs, FEEDBACK_TABLE: cutoff},
                                                below),
                           before, before, True, True, "dry-run", kept,
                           clock_ahead=clock_ahead, held=hold)
    if upgrade:
        SQLiteStore(file).upgrade(take_up=True)
        before = db_bytes(file)
    try:
        conn = sqlite3.connect(file, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise StoreError(f"{quoted_path(file)}: cannot open the store ({exc})") from None
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        deleted = {table: _delete_older(conn, table, older_than, max_rows)
                   for table, older_than in cutoffs.items()}
        deleted[FEEDBACK_TABLE], kept = _prune_feedback(conn, file, cutoff, max_rows, gone,
                                                        checkpoint_key, learned_through)
        complete = max_rows is None or all(n < max_rows for n in deleted.values())
        vacuum = _vacuum(conn, full_vacuum, any(deleted.values()))
        wal = _size(side_file(file, "-wal"))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal -= _size(side_file(file, "-wal"))
    except sqlite3.Error as exc:
        raise StoreError(f"{quoted_path(file)}: the prune failed ({exc}); entries deleted "
                         "before the "
                         "failure stay deleted, the rest are untouched") from None
    finally:
        conn.close()
    return PruneReport(cutoff, deleted, before, db_bytes(file), False, complete, vacuum, kept,
                       max(0, wal), clock_ahead, hold)


def _learned_below(below: int | None, learned_through: int | None) -> int | None:
    """The feedback log position below which rows may go: ``below`` (see
    :func:`feedback_bound`), and not past ``learned_through`` (the row there stays: a
    checkpoint the service writes next may end at it)."""
    if below is None or learned_through is None:
        return below
    return min(below, learned_through)


def _prune_feedback(conn: sqlite3.Connection, file: Path, cutoff: float,
                    max_rows: int | None, gone: Gone | None, checkpoint_key: str | None,
                    learned_through: int | None) -> tuple[int, str | None]:
    """Prune the feedback log (see :func:`prune`): the rows deleted, and why none were when
    a service serving from the data directory keeps them."""
    if learned_through is not None:  # the service's own retention: it holds the lock
        below = _before_kept_decision(conn, _learned_below(
            feedback_bound(file, cutoff, gone, checkpoint_key), learned_through))
        return (0 if below is None
                else _delete_older(conn, FEEDBACK_TABLE, cutoff, max_rows, below=below)), None
    try:
        with brief_lock(file.parent, "prune") as progress:
            if progress is None:
                return 0, BESIDE_SERVICE
            below = _before_kept_decision(conn, feedback_bound(file, cutoff, gone,
                                                               checkpoint_key))
            if below is None:
                return 0, None  # no checkpoint of this log holds its rows: they all stay
            return _delete_older(conn, FEEDBACK_TABLE, cutoff, max_rows, below=below,
                                 progress=progress), None
    except OSError as exc:
        raise StoreError(f"{file.parent / SERVE_LOCK}: cannot take the data_dir's lock to "
                         f"prune the feedback log ({exc.strerror or exc}); the other entries "
                         "older than the cutoff were deleted and the feedback log left as it "
                         "was: run the prune again once the lock can be taken") from None


def _before_kept_decision(conn: sqlite3.Connection, below: int | None, decisions: str = "",
                          *args: Any) -> int | None:
    """The feedback log position below which rows may go: ``below``, and not past the first
    row of a decision still logged (of ``decisions``, a condition on the decisions table with
    its ``args``; none: every decision logged). The log is pruned from its start, so that row
    and every one after it stay until that decision goes."""
    if below is None:
        return None
    row = conn.execute(f"SELECT min(seq) FROM feedback WHERE seq < ? AND "
                       f"{_DECISION_KEPT.format(decisions=decisions)}",
                       (below, *args)).fetchone()
    return below if row is None or row[0] is None else min(below, int(row[0]))


def _feedback_bound_if_kept(file: Path, cutoff: float, gone: Gone | None,
                            checkpoint_key: str | None) -> int | None:
    """:func:`feedback_bound` for a dry run: a store too old to hold a feedback log (or one
    whose triggers do not let a prune take its rows yet) has none to prune."""
    try:
        return feedback_bound(file, cutoff, gone, checkpoint_key)
    except StoreError:
        return None


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[tuple[sqlite3.Connection, set[str]]]:
    """A read-only connection to the store ``file`` (waiting out a writer's lock) and the
    tables it holds, closed after the block."""
    conn = read_store(file)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        yield conn, {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def _count_older(file: Path, cutoffs: dict[str, float], below: int | None) -> dict[str, int]:
    """What a prune at ``cutoffs`` (by table) would delete from ``file`` as it is now, read
    on a read-only connection: a dry run changes no file (no schema upgrade, no spill file
    taken up); a table an older schema lacks holds nothing to delete, and the feedback log
    nothing below log position ``below`` (None: nothing at all)."""
    try:
        with _reading(file) as (conn, tables):
            out = {}
            for t, c in cutoffs.items():
                if t not in tables or (t == FEEDBACK_TABLE and below is None):
                    out[t] = 0
                    continue
                kept = " WHERE ts >= ?"  # (the decisions the prune keeps)
                args: tuple[float | int | None, ...]
                if t == FEEDBACK_TABLE:
                    below = _before_kept_decision(conn, below, kept, cutoffs["decisions"])
                    bound, args = " AND seq < ?", (below,)
                elif t == "requests":
                    bound = _NOT_WITH_DECISION.format(decisions=kept)
                    args = (cutoffs["decisions"],)
                else:
                    bound, args = "", ()
                out[t] = int(conn.execute(f"SELECT count(*) FROM {t} WHERE ts < ?{bound}",
                                          (c, *args)).fetchone()[0])
            return out
    except sqlite3.Error as exc:
        raise store_error(file, "read it to count what a prune would delete", exc) from None


def _delete_older(conn: sqlite3.Connection, table: str, cutoff: float,
                  max_rows: int | None, below: int | None = None,
                  progress: Progress | None = None) -> int:
    """Delete ``table``'s rows older than ``cutoff`` (and, with ``below``, before that log
    position), oldest first, in batches; at most ``max_rows``. ``progress`` is called after
    each batch (a lock held meanwhile shows it moves on)."""
    # (the feedback log by its log position: its primary key, the order it was written in)
    bound, order = ("", "ts") if below is None else (" AND seq < ?", "seq")
    if table == "requests":
        bound = _NOT_WITH_DECISION.format(decisions="")
    total = 0
    while max_rows is None or total < max_rows:
        size = BATCH if max_rows is None else min(BATCH, max_rows - total)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Each batch notes the cutoff with its deletions (the triggers then allow them), so
            # a reader that saw the prunes saw every row they deleted gone (see
            # LearningReader.experiment); a batch that deletes nothing notes nothing.
            conn.execute("INSERT INTO prunes (ts, cutoff) VALUES (?, ?)", (time.time(), cutoff))
            n = conn.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                             f"WHERE ts < ?{bound} ORDER BY {order} LIMIT ?)",
                             (cutoff, *(() if below is None else (below,)), size)).rowcount
            if n:
                _fold_prunes(conn)
            conn.execute("COMMIT" if n else "ROLLBACK")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        total += n
        if progress is not None:
            progress()
        if n < size:
            break
    return total


def _fold_prunes(conn: sqlite3.Connection) -> None:
    """Delete the prunes behind the newest PRUNES_KEPT (exactly that many, counted, as a
    table's cap keeps its newest rows: see :func:`behind_newest`), except the one with the
    latest cutoff (the last of them on a tie): the triggers read only that cutoff, and a
    reader watching for prunes only the newest seq, so both stay as they were."""
    conn.execute(
        f"DELETE FROM prunes WHERE seq <= {behind_newest('prunes')} "
        "AND seq <> (SELECT seq FROM prunes ORDER BY cutoff DESC, seq DESC LIMIT 1)",
        (PRUNES_KEPT,))


def _vacuum(conn: sqlite3.Connection, full: bool, deleted: bool) -> str:
    """Give free pages back to the file system: after deletions, and on an incremental store
    whenever it holds some (a prune killed between its deletions and this step left them)."""
    mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
    if mode == INCREMENTAL:
        if not deleted and not int(conn.execute("PRAGMA freelist_count").fetchone()[0]):
            return "none"
        # It frees one page per step of the statement: executescript steps it to the end.
        conn.executescript("PRAGMA incremental_vacuum;")
        return "incremental"
    if not full or not deleted:
        return "none"
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # VACUUM converts the file, once
    conn.execute("VACUUM")
    return "full"
