"""What learning from outcomes keeps in the SQLite store.

- ``feedback``: the feedback log, append-only but for retention, which prunes rows older than its
  cutoff that the learning checkpoint already holds (see :mod:`switchpoint.store.retention`;
  the trigger refuses deleting a newer row). One row per outcome: a
  :class:`~switchpoint.learning.events.FeedbackEvent` (its prompt vector as float32 bytes, so it
  replays exactly) with its ``kind`` (``decision``: feedback on a routing decision;
  ``preference``: a score given to a compared answer; ``model``: feedback on a request that
  named its model, which tracks that model's quality but cannot teach routing), the weights it
  was learned under, the caller's key and an optional comment. Replayed in order on every
  start and reload (after the checkpoint, when one fits).
- ``pending``: what learning needs from each recent routing decision (the prompt's vector as
  float16, the units it fell in, the candidates, the model chosen, the prompt's hash), so
  feedback for a decision made before a restart still teaches, named by its id or by its
  prompt's hash (a row kept before the store kept hashes has none). Bounded: the gateway keeps
  ``learning.memory_size`` rows open to feedback, shared by the tenants as a router's memory
  shares its decisions, and deletes the rows it let go of (:class:`PendingForget`) as new ones
  arrive (see ``switchpoint.gateway.open_decisions``).
- ``promotions``: experiments whose winning arm was promoted (append-only but for the oldest
  past each experiment's newest ``PROMOTIONS_KEPT``, which go as a new one is written; the
  last one wins).
- ``runtime_experiments``: the experiments created at run time (not in the config), one row
  each in the order they were made, holding the experiment as the config would write it (JSON)
  and, for one made of two strategies, B's share of the traffic; a row changes only as its
  experiment ends (once), and ended ones past the newest ``ENDED_KEPT`` go as another one ends.
- ``runtime_models``: the models registered at run time (beside the config's ``models:``), one
  row each in the order they were registered, holding the model as the config would write it
  (JSON); a row never changes, and is deleted as its model is unregistered.
- ``experiment_kept``: per experiment and arm, the totals of its decisions retention pruned,
  added by a trigger as each is deleted (see the store's migration 22), which an experiment's
  report adds to what the logs still hold.
- ``compares``: preference comparisons waiting for their scores (the blind labels, the models
  that answered, the prompt's vector as float32 and its units, each answer's request id, finish
  reason and failure, revealed by the score; never the prompt or the answers' content),
  so scores sent after a restart still teach. Bounded like ``pending``; expired ones are
  refused on read and pruned with it.

Writes go through the store's writer (:meth:`SQLiteStore.append` / ``append_lazy``); reads
use read-only connections of their own (beside a running store, a few are kept open for the
next reads: opening one costs about a millisecond, most of a feedback's time).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from switchpoint._json import loads, unreadable
from switchpoint._messages import json_quoted, one_of
from switchpoint.learning.events import DEFAULT_TENANT, FeedbackEvent
from switchpoint.learning.memory import PendingDecision
from switchpoint.store.errors import damaged, store_error
from switchpoint.store.migrations import ENDED_KEPT
from switchpoint.store.reading import Gone, read_store, still_there
from switchpoint.store.spill import FORGET_PENDING

log = logging.getLogger("switchpoint.store")

if TYPE_CHECKING:  # (NumPy is imported where a vector is written or read: the commands that
    # list what the state holds, models list and experiments list, read none)
    import numpy as np
    import numpy.typing as npt

    from switchpoint.store.removals import Enforced

#: Read connections a reader beside a running store keeps open between reads, at most.
KEPT_CONNECTIONS = 4

FEEDBACK_KINDS = ("decision", "preference", "model")
_FEEDBACK_COLUMNS = ("event_id", "ts", "kind", "tenant", "decision_id", "model", "served",
                     "quality", "weight", "chosen", "cost", "embedding", "units", "weights_id",
                     "key_id", "comment", "measured_cost")
_PENDING_COLUMNS = ("decision_id", "ts", "tenant", "chosen", "candidates", "embedding", "units",
                    "expected_cost", "weights_id", "prompt_tokens", "prompt_hash")
_COMPARE_COLUMNS = ("compare_id", "ts", "expires", "tenant", "labels", "answered", "embedding",
                    "units", "weights_id", "costs", "blind", "revealed", "details")


def _units_json(units: tuple[tuple[int, float], ...] | None) -> str | None:
    return None if units is None else json.dumps([[u, w] for u, w in units])


def _units_of(raw: str | None) -> tuple[tuple[int, float], ...] | None:
    return None if raw is None else tuple((int(u), float(w)) for u, w in json.loads(raw))


@dataclass(frozen=True)
class FeedbackRecord:
    """One row of the feedback log."""

    event: FeedbackEvent
    kind: str
    weights_id: str | None = None
    key_id: str | None = None
    comment: str | None = None

    insert: ClassVar[str] = (f"INSERT INTO feedback ({', '.join(_FEEDBACK_COLUMNS)}) VALUES "
                             f"({', '.join('?' for _ in _FEEDBACK_COLUMNS)})")
    what: ClassVar[str] = "feedback event"

    @property
    def id(self) -> str:
        return self.event.event_id

    def row(self) -> tuple[Any, ...]:
        e = self.event
        import numpy as np

        vector = None if e.embedding is None else np.asarray(e.embedding,
                                                              dtype=np.float32).tobytes()
        return (e.event_id, e.timestamp, self.kind, e.tenant, e.decision_id, e.model, e.served,
                e.quality, e.weight, e.chosen, e.cost, vector, _units_json(e.units),
                self.weights_id, self.key_id, self.comment, e.measured_cost)


@dataclass(frozen=True)
class PendingRecord:
    """One decision still open to feedback (its vector kept as float16: half the bytes, and
    cosine to the original above 0.9999)."""

    entry: PendingDecision
    weights_id: str

    insert: ClassVar[str] = (f"INSERT OR REPLACE INTO pending ({', '.join(_PENDING_COLUMNS)}) "
                             f"VALUES ({', '.join('?' for _ in _PENDING_COLUMNS)})")
    what: ClassVar[str] = "pending decision"

    @property
    def id(self) -> str:
        return self.entry.decision_id

    def row(self) -> tuple[Any, ...]:
        e = self.entry
        import numpy as np

        vector = None if e.embedding is None else np.asarray(
            e.embedding, dtype=np.float32).reshape(-1).astype(np.float16).tobytes()
        return (e.decision_id, e.created, e.tenant, e.chosen, json.dumps(list(e.candidates)),
                vector, _units_json(e.units), e.expected_cost, self.weights_id, e.prompt_tokens,
                e.prompt_hash or None)


@dataclass(frozen=True)
class PendingForget:
    """Deletes the pending decisions named (those the rule of the decisions open to feedback
    let go of: see ``switchpoint.gateway.open_decisions``), written like a record, by the writer, in
    the same transaction as the records around it: one look-up of the table's index of ids
    each. Refused, it waits in the spill file with the rows, and runs again where it ran when
    the file is written."""

    decision_ids: tuple[str, ...]

    insert: ClassVar[str] = FORGET_PENDING
    what: ClassVar[str] = "pending decisions let go of"

    @property
    def id(self) -> str:
        return f"forget-{len(self.decision_ids)}"

    def row(self) -> tuple[Any, ...]:
        return (json.dumps(list(self.decision_ids)),)


@dataclass(frozen=True)
class CompareRecord:
    """A preference comparison waiting for its scores: ``labels`` maps each blind label to its
    model; ``answered`` are the models whose call succeeded; ``costs`` what each answer cost,
    in the weights' cost units, where the catalog priced it (a score teaches it too)."""

    compare_id: str
    tenant: str
    labels: dict[str, str]
    answered: frozenset[str]
    embedding: npt.NDArray[np.float32]
    units: tuple[tuple[int, float], ...] | None
    weights_id: str
    created: float
    expires: float
    costs: Mapping[str, float] = field(default_factory=dict)
    #: Whether the answers came back without their models' names.
    blind: bool = True
    #: When a score revealed the models of a blind comparison (None: not yet).
    revealed: float | None = None
    #: What each model's answer really was (request id, finish reason, failure), by model:
    #: what a blind answer does not show until the score reveals it (empty: kept before
    #: comparisons kept it).
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    insert: ClassVar[str] = (f"INSERT OR REPLACE INTO compares ({', '.join(_COMPARE_COLUMNS)}) "
                             f"VALUES ({', '.join('?' for _ in _COMPARE_COLUMNS)})")
    what: ClassVar[str] = "comparison"

    @property
    def id(self) -> str:
        return self.compare_id

    def row(self) -> tuple[Any, ...]:
        import numpy as np

        vector = np.asarray(self.embedding, dtype=np.float32).reshape(-1).tobytes()
        return (self.compare_id, self.created, self.expires, self.tenant,
                json.dumps(self.labels), json.dumps(sorted(self.answered)), vector,
                _units_json(self.units), self.weights_id, json.dumps(dict(self.costs)),
                int(self.blind), self.revealed, json.dumps(dict(self.details)))

    def model_of(self, key: str) -> str | None:
        """The model a score's key names: a blind label, or the model itself."""
        if key in self.labels:
            return self.labels[key]
        return key if key in self.labels.values() else None


@dataclass(frozen=True)
class CompareReveal:
    """A blind comparison's models revealed by a score at ``ts``: it takes no other score."""

    compare_id: str
    ts: float

    insert: ClassVar[str] = "UPDATE compares SET revealed = ? WHERE compare_id = ?"
    what: ClassVar[str] = "comparison's reveal"

    @property
    def id(self) -> str:
        return f"reveal-{self.compare_id}"

    def row(self) -> tuple[Any, ...]:
        return (self.ts, self.compare_id)


@dataclass(frozen=True)
class ComparePrune:
    """Keeps only each tenant's newest ``keep`` comparisons and drops those expired by
    ``now``."""

    keep: int
    now: float

    # (each tenant's rows ranked newest first in one pass, not counted row by row)
    insert: ClassVar[str] = ("DELETE FROM compares WHERE expires <= ? OR seq IN (SELECT seq "
                             "FROM (SELECT seq, row_number() OVER (PARTITION BY tenant ORDER "
                             "BY seq DESC) AS newer FROM compares) WHERE newer > ?)")
    what: ClassVar[str] = "comparison prune"

    @property
    def id(self) -> str:
        return f"prune-compares-{self.keep}"

    def row(self) -> tuple[Any, ...]:
        return (self.now, self.keep)


@dataclass(frozen=True)
class PromotionRecord:
    """An experiment's arm promoted to all of its traffic."""

    ts: float
    experiment: str
    arm: str
    reason: str

    insert: ClassVar[str] = ("INSERT INTO promotions (ts, experiment, arm, reason) "
                             "VALUES (?, ?, ?, ?)")
    what: ClassVar[str] = "promotion"

    @property
    def id(self) -> str:
        return f"{self.experiment}:{self.arm}"

    def row(self) -> tuple[Any, ...]:
        return (self.ts, self.experiment, self.arm, self.reason)


@dataclass(frozen=True)
class RuntimeExperimentRecord:
    """An experiment created at run time: its name, when, the experiment as the config would
    write it (JSON) and, made of two strategies, B's share of the traffic."""

    name: str
    created: float
    experiment: str
    split: float | None

    insert: ClassVar[str] = ("INSERT INTO runtime_experiments (name, created, experiment, "
                             "split) VALUES (?, ?, ?, ?)")
    what: ClassVar[str] = "run-time experiment"

    @property
    def id(self) -> str:
        return self.name

    def row(self) -> tuple[Any, ...]:
        return (self.name, self.created, self.experiment, self.split)


@dataclass(frozen=True)
class RuntimeExperimentEnd:
    """A run-time experiment ended (its row kept, with when)."""

    name: str
    ended: float

    insert: ClassVar[str] = ("UPDATE runtime_experiments SET ended = ? "
                             "WHERE name = ? AND ended IS NULL")
    what: ClassVar[str] = "run-time experiment's end"

    @property
    def id(self) -> str:
        return self.name

    def row(self) -> tuple[Any, ...]:
        return (self.ended, self.name)


@dataclass(frozen=True)
class RuntimeModelRecord:
    """A model registered at run time: its name, when, and the model as the config's
    ``models:`` would write it (JSON)."""

    name: str
    created: float
    card: str

    insert: ClassVar[str] = "INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)"
    what: ClassVar[str] = "registered model"

    @property
    def id(self) -> str:
        return self.name

    def row(self) -> tuple[Any, ...]:
        return (self.name, self.created, self.card)


@dataclass(frozen=True)
class RuntimeModelRemoval:
    """A model registered at run time unregistered (its row goes)."""

    name: str

    insert: ClassVar[str] = "DELETE FROM runtime_models WHERE name = ?"
    what: ClassVar[str] = "registered model's removal"

    @property
    def id(self) -> str:
        return self.name

    def row(self) -> tuple[Any, ...]:
        return (self.name,)


@dataclass(frozen=True)
class StoredModel:
    """A row of ``runtime_models`` read back: its ``card`` as its JSON reads, or None with
    ``problem`` saying why when it cannot be read (not JSON; a time that is no number)."""

    name: str
    created: float
    card: Any
    problem: str | None = None


@dataclass(frozen=True)
class StoredExperiment:
    """A row of ``runtime_experiments`` read back: its ``experiment`` as its JSON reads, or
    None with ``problem`` saying why when it cannot be read (not JSON; a time or a split that
    is no number). ``ended`` None: running (one whose end is no number is read as ended at
    0, since the store takes no second end)."""

    name: str
    created: float
    experiment: Any
    split: float | None
    ended: float | None
    problem: str | None = None


@dataclass(frozen=True)
class LoggedFeedback:
    """A feedback row read back: the event and what it was recorded with."""

    seq: int
    event: FeedbackEvent
    kind: str
    weights_id: str | None


@dataclass
class _QualityTally:
    """Per (tenant, model): how many decisions' latest outcomes are about it and their summed
    quality, over the feedback log up to ``seq`` (the event there: ``event_id``), with the
    store's prunes then (a count and the last one's seq)."""

    counts: dict[tuple[str, str], tuple[int, float]]
    seq: int = 0
    event_id: str = ""
    pruned: tuple[int, ...] = ()

    def add(self, tenant: str, model: str, quality: float, n: int) -> None:
        count, total = self.counts.get((tenant, model), (0, 0.0))
        self.counts[(tenant, model)] = (count + n, 0.0 if count + n == 0 else total + quality)


def _damage_named(path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """``exc`` met reading the store at ``path``: a damaged file is named, with what to do
    (see :func:`~switchpoint.store.errors.store_error`); anything else is raised as it is."""
    return store_error(path, "read it", exc) if damaged(exc) else exc


@dataclass
class _ArmTally:
    """One arm's decisions: their rows with requests (``rows``), the costs summed over those
    that have one, and how many decisions' latest outcomes have each quality."""

    rows: int = 0
    cost_sum: float = 0.0
    cost_n: int = 0
    qualities: Counter[float] = field(default_factory=Counter)

    def add_rows(self, rows: int, cost_sum: float, cost_n: int) -> None:
        self.rows += rows
        self.cost_n += cost_n
        self.cost_sum = 0.0 if self.cost_n == 0 else self.cost_sum + cost_sum


#: The columns of an arm's kept totals (``experiment_kept``): what its decisions retention
#: pruned added as they went (their rows, their answers' cost, and the moments of their
#: latest outcomes' qualities: see the store's migration 22).
KEPT_COLUMNS = ("decisions", "cost_sum", "cost_n", "n", "total", "squares", "ones", "others",
                "low", "high")


@dataclass
class _ExperimentTally:
    """An experiment's arms over the log up to: the decision at ``decisions`` (a rowid; its id
    ``decision_id``), the request at ``requests`` and the outcome at ``feedback`` (its event
    ``feedback_id``), with the store's prunes then (a count and the last one's seq), and the
    arms' kept totals of the decisions pruned (``kept``: read with the log, changed only by a
    prune)."""

    pruned: tuple[int, ...] = ()
    arms: dict[str, _ArmTally] = field(default_factory=dict)
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: int = 0
    decision_id: str = ""
    requests: int = 0
    feedback: int = 0
    feedback_id: str = ""

    def arm(self, name: str) -> _ArmTally:
        return self.arms.setdefault(name, _ArmTally())


def _kept(conn: sqlite3.Connection, name: str) -> dict[str, dict[str, Any]]:
    """Experiment ``name``'s kept totals by arm (none in a store too old to keep them)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                    "name = 'experiment_kept'").fetchone() is None:
        return {}
    rows = conn.execute(f"SELECT arm, {', '.join(KEPT_COLUMNS)} FROM experiment_kept "
                        "WHERE experiment = ?", (name,)).fetchall()
    return {str(arm): dict(zip(KEPT_COLUMNS, values, strict=True)) for arm, *values in rows}


class LearningReader:
    """Reads the learning tables of one store file, on read-only connections. ``gone``: the
    store beside it that writes the file (its ``gone``), whose file deleted or replaced since is
    not read (see :func:`~switchpoint.store.reading.still_there`). Beside such a store, up to
    :data:`KEPT_CONNECTIONS` connections stay open between reads (each checked with ``gone``
    before it is used again, and outside any transaction, so it holds back no checkpoint or
    vacuum of the store's) until :meth:`close`; alone (a command run on a data_dir, where
    another process may replace the file), each read opens its own."""

    def __init__(self, path: str | Path, gone: Gone | None = None) -> None:
        self.path = Path(path)
        self.gone = gone
        self._tally: _QualityTally | None = None
        self._experiments: dict[str, _ExperimentTally] = {}
        self._tally_lock = threading.Lock()
        self._kept: deque[sqlite3.Connection] = deque()
        self._kept_lock = threading.Lock()
        self._closed = False
        self._said: str | None = None  # (what removals a restored backup lacks, last said)

    def close(self) -> None:
        """Close the connections kept between reads; reads after it open their own."""
        with self._kept_lock:
            self._closed = True
        self._drop_kept()

    def _drop_kept(self) -> None:
        with self._kept_lock:
            kept, self._kept = list(self._kept), deque()
        for conn in kept:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        """A read-only connection to the store file, waiting on its lock; a file that cannot
        be opened (one a newer switchpoint wrote, or one whose folder takes no -shm, without
        which SQLite reads no file in WAL mode) is a :class:`StoreError` saying what to do
        (see :func:`~switchpoint.store.errors.store_error`), met here rather than at the first
        read, which would raise it bare."""
        try:
            conn = read_store(self.path, self.gone)
        except sqlite3.Error as exc:
            raise store_error(self.path, "open it to read", exc) from None
        try:
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(self.path, "open it to read", exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for one read: a kept one (once ``gone`` says the store's file is still
        the one it reads; else the kept ones are closed and the read refused, as a new
        connection's would be), or a new one. Afterwards it is kept for the next read, out of
        any transaction, when the read went well and there is room; else closed."""
        conn = None
        if self.gone is not None:
            with self._kept_lock:
                conn = self._kept.pop() if self._kept else None
            if conn is not None:
                try:
                    still_there(self.path, self.gone)
                except BaseException:
                    conn.close()
                    self._drop_kept()
                    raise
        if conn is None:
            conn = self._connect()
        kept = False
        try:
            yield conn
            # (a connection reading a stale log alone is another kind, never kept)
            if self.gone is not None and type(conn) is sqlite3.Connection:
                if conn.in_transaction:
                    conn.rollback()
                with self._kept_lock:
                    if not self._closed and len(self._kept) < KEPT_CONNECTIONS:
                        self._kept.append(conn)
                        kept = True
        finally:
            if not kept:
                conn.close()

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row ``sql`` reads, or None."""
        with self._reading() as conn:
            try:
                cursor = conn.execute(sql, args)
                row: tuple[Any, ...] | None = cursor.fetchone()
                cursor.close()  # (its statement done: no read left open)
            except sqlite3.DatabaseError as exc:
                raise _damage_named(self.path, exc) from None
        return row

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row ``sql`` reads."""
        with self._reading() as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _damage_named(self.path, exc) from None

    def feedback(self, tenant: str | None = None, after: int = 0,
                 batch: int = 2000) -> Iterator[LoggedFeedback]:
        """Every feedback row in log order (of one tenant, if given), read in batches."""
        where = "seq > ?" + (" AND tenant = ?" if tenant is not None else "")
        last = after
        while True:
            rows = self._all(
                f"SELECT seq, {', '.join(_FEEDBACK_COLUMNS)} FROM feedback WHERE {where} "
                "ORDER BY seq LIMIT ?", (last, *((tenant,) if tenant is not None else ()), batch))
            for row in rows:
                yield _logged(row)
            if len(rows) < batch:
                return
            last = int(rows[-1][0])

    def decision_feedback(self, decision_id: str, tenant: str,
                          through: int) -> list[LoggedFeedback]:
        """The feedback rows of ``decision_id`` (of ``tenant``) up to log position ``through``,
        in log order: a few (a decision takes at most ``MAX_OUTCOMES`` of
        :mod:`switchpoint.gateway.feedback_log`), read by the log's index of decisions."""
        return [_logged(row) for row in self._all(
            f"SELECT seq, {', '.join(_FEEDBACK_COLUMNS)} FROM feedback WHERE decision_id = ? "
            "AND tenant = ? AND seq <= ? ORDER BY seq", (decision_id, tenant, through))]

    def event_id_at(self, seq: int) -> str | None:
        """The id of the event at log position ``seq`` (None: no such row)."""
        row = self._one("SELECT event_id FROM feedback WHERE seq = ?", (seq,))
        return None if row is None else str(row[0])

    def feedback_count(self, after: int = 0) -> int:
        """How many feedback rows the log holds after log position ``after``."""
        row = self._one("SELECT COUNT(*) FROM feedback WHERE seq > ?", (after,))
        return 0 if row is None else int(row[0])

    def feedback_kinds(self, tenant: str, after: int = 0) -> dict[str, int]:
        """How many feedback rows of ``tenant`` the log holds after log position ``after``,
        by kind (``decision``, ``preference``, ``model``)."""
        rows = self._all("SELECT kind, COUNT(*) FROM feedback WHERE tenant = ? AND seq > ? "
                         "GROUP BY kind ORDER BY kind", (tenant, after))
        return {str(kind): int(n) for kind, n in rows}

    def first_feedback(self) -> int | None:
        """The log position of the oldest feedback row kept (None: the log is empty); past 1,
        retention pruned the rows before it."""
        kept = self.first_kept()
        return None if kept is None else kept[0]

    def first_kept(self, tenant: str | None = None) -> tuple[int, float] | None:
        """The log position and time (epoch seconds) of the oldest feedback row kept, of
        ``tenant``'s rows if given (None: no such row). Positions are given in order and only
        retention deletes rows, the oldest first: the whole log's position less one is how
        many rows it pruned."""
        if tenant is None:
            row = self._one("SELECT seq, ts FROM feedback ORDER BY seq LIMIT 1", ())
        else:
            row = self._one("SELECT seq, ts FROM feedback WHERE tenant = ? ORDER BY seq "
                            "LIMIT 1", (tenant,))
        return None if row is None else (int(row[0]), float(row[1]))

    def last_feedback(self) -> tuple[int, str] | None:
        """The log position and event id of the newest feedback row (None: the log is empty)."""
        row = self._one("SELECT seq, event_id FROM feedback ORDER BY seq DESC LIMIT 1", ())
        return None if row is None else (int(row[0]), str(row[1]))

    def pending(self, decision_id: str) -> tuple[PendingDecision, str] | None:
        """A decision the pending table keeps, with the weights it was made under (whether it
        is still open to feedback is the gateway's to say: rows it let go of wait for a
        prune)."""
        row = self._one(f"SELECT {', '.join(_PENDING_COLUMNS)} FROM pending "
                        "WHERE decision_id = ?", (decision_id,))
        if row is None:
            return None
        (did, ts, tenant, chosen, candidates, vector, units, cost, weights_id, tokens,
         hashed) = row
        import numpy as np

        embedding = None if vector is None else np.frombuffer(
            vector, dtype=np.float16).astype(np.float32)
        entry = PendingDecision(decision_id=did, tenant=tenant, chosen=chosen,
                                candidates=tuple(json.loads(candidates)), embedding=embedding,
                                units=_units_of(units), expected_cost=cost, created=ts,
                                prompt_tokens=None if tokens is None else int(tokens),
                                prompt_hash=hashed or "")
        return entry, str(weights_id)

    def pending_tenants(self) -> list[tuple[str, str]]:
        """Every pending decision's id and tenant, in the order they were written (oldest
        first): what the rule of the decisions open to feedback is read from at a start."""
        return [(str(d), str(t)) for d, t in
                self._all("SELECT decision_id, tenant FROM pending ORDER BY seq")]

    def latest_pending(self, prompt_hash: str, tenant: str | None = None, *,
                       held: Callable[[str], bool] | None = None, rows: int = 1) -> str | None:
        """The id of the latest decision the pending table keeps that routed on the prompt of
        ``prompt_hash`` (of ``tenant``; None: of any tenant); with ``held``, the first of the
        prompt's newest ``rows`` rows it says is open to feedback (rows it let go of wait for
        a prune); None when there is none (a row kept before the store kept hashes has none).
        Read from the table's index of prompts, the newest row of the prompt first."""
        of_tenant = "" if tenant is None else " AND tenant = ?"
        for (found,) in self._all(
                f"SELECT decision_id FROM pending WHERE prompt_hash = ?{of_tenant} "
                "ORDER BY seq DESC LIMIT ?",
                (prompt_hash, *(() if tenant is None else (tenant,)),
                 1 if held is None else rows)):
            if held is None or held(str(found)):
                return str(found)
        return None

    def compare(self, compare_id: str, newest: int | None = None) -> CompareRecord | None:
        """A comparison still waiting for scores (expired or not: the caller decides); with
        ``newest``, only if it is among the ``newest`` comparisons its tenant made."""
        row = self._one(f"SELECT {', '.join(_COMPARE_COLUMNS)} FROM compares "
                        "WHERE compare_id = ? AND (? IS NULL OR (SELECT count(*) FROM compares "
                        "later WHERE later.tenant = compares.tenant AND "
                        "later.seq > compares.seq) < ?)",
                        (compare_id, newest, newest))
        if row is None:
            return None
        (cid, ts, expires, tenant, labels, answered, vector, units, weights_id, costs, blind,
         revealed, details) = row
        import numpy as np

        return CompareRecord(compare_id=cid, tenant=tenant, labels=dict(json.loads(labels)),
                             answered=frozenset(json.loads(answered)),
                             embedding=np.frombuffer(vector, dtype=np.float32).copy(),
                             units=_units_of(units), weights_id=str(weights_id), created=ts,
                             expires=expires,
                             costs={str(m): float(c) for m, c in json.loads(costs or "{}").items()},
                             blind=blind is None or bool(blind),
                             revealed=None if revealed is None else float(revealed),
                             details=dict(json.loads(details or "{}")))

    def request(self, request_id: str) -> dict[str, Any] | None:
        """A logged gateway request: who answered it, for whom, under which decision."""
        row = self._one("SELECT id, model, requested_model, tenant, key_id, decision_id, "
                        "status, cost_usd, prompt_tokens, purpose FROM requests WHERE id = ?",
                        (request_id,))
        if row is None:
            return None
        keys = ("id", "model", "requested_model", "tenant", "key_id", "decision_id", "status",
                "cost_usd", "prompt_tokens", "purpose")
        return dict(zip(keys, row, strict=True))

    def answer(self, decision_id: str) -> tuple[str | None, float | None] | None:
        """The model that answered the (last answered) request a routing decision led to, and
        what its answer cost (None when it was not priced); ``(None, None)`` when its requests
        got no answer from any model; None when no gateway request was made for it (a
        decision of the routing API)."""
        row = self._one("SELECT model, cost_usd FROM requests WHERE decision_id = ? "
                        "ORDER BY model IS NOT NULL DESC, seq DESC LIMIT 1", (decision_id,))
        if row is None:
            return None
        if row[0] is None:
            return None, None
        return str(row[0]), None if row[1] is None else float(row[1])

    def refusal(self, answer_id: str, tenant: str | None = None) -> str | None:
        """Why the request ``answer_id`` names (its request id, or the routing decision made
        for it) of ``tenant`` (None: any) was refused for who asked (logged as ``refused``):
        its error kind, or None when no such request was refused."""
        row = self._one("SELECT error_kind FROM requests WHERE (id = ? OR decision_id = ?) "
                        "AND status = 'refused' AND (? IS NULL OR coalesce(tenant, ?) = ?) "
                        "LIMIT 1", (answer_id, answer_id, tenant, DEFAULT_TENANT, tenant))
        return None if row is None else str(row[0])

    def decision_arm(self, decision_id: str) -> tuple[str, str] | None:
        """The experiment and arm a logged decision was assigned to, if any."""
        row = self._one("SELECT experiment, arm FROM decisions WHERE id = ?", (decision_id,))
        if row is None or row[0] is None:
            return None
        return str(row[0]), str(row[1])

    def kept_cost(self, decision_id: str, tenant: str, model: str) -> float | None:
        """The measured cost a new outcome about ``model`` without one keeps: the last one
        given since the decision's outcomes were last about another model (in the weights'
        units)."""
        rows = self._all("SELECT coalesce(served, model), measured_cost FROM feedback "
                         "WHERE decision_id = ? AND tenant = ? ORDER BY seq DESC LIMIT 1000",
                         (decision_id, tenant))
        for about, cost in rows:
            if about != model:
                return None
            if cost is not None:
                return float(cost)
        return None

    def outcomes(self, decision_id: str, tenant: str | None = None) -> int:
        """How many outcomes the log holds for ``decision_id`` (of ``tenant``; None: any)."""
        row = self._one("SELECT count(*) FROM feedback WHERE decision_id = ? AND (? IS NULL OR "
                        "tenant = ?)", (decision_id, tenant, tenant))
        return 0 if row is None else int(row[0])

    def comment_chars(self, decision_id: str, tenant: str | None = None) -> int:
        """How many characters of comment the log's outcomes for ``decision_id`` (of
        ``tenant``; None: any) hold between them."""
        row = self._one("SELECT coalesce(sum(length(comment)), 0) FROM feedback WHERE "
                        "decision_id = ? AND (? IS NULL OR tenant = ?)",
                        (decision_id, tenant, tenant))
        return 0 if row is None else int(row[0])

    def latest_quality(self, decision_id: str, tenant: str) -> float | None:
        """The quality last reported for ``decision_id`` (a repeat replaces it)."""
        row = self._one("SELECT quality FROM feedback WHERE decision_id = ? AND tenant = ? "
                        "ORDER BY seq DESC LIMIT 1", (decision_id, tenant))
        return None if row is None else float(row[0])

    def quality_by_model(self, tenant: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """``{tenant: {model: {n, mean_quality}}}`` over the latest outcome of each decision
        (``model``: the catalog model that answered). Kept as a running tally: a call reads
        only the outcomes logged since the one before (and, for a repeat among them, the
        outcome it replaces), so its cost does not grow with the log."""
        with self._tally_lock:
            tally = self._tally = self._tally_read(self._tally)
            counts = dict(tally.counts)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (t, model), (n, total) in sorted(counts.items()):
            if n > 0 and (tenant is None or t == tenant):
                out.setdefault(t, {})[model] = {"n": n, "mean_quality": round(total / n, 6)}
        return out

    def _tally_read(self, tally: _QualityTally | None) -> _QualityTally:
        """``tally`` brought up to the end of the log (read whole the first time, after a
        prune, or when the log is not the one it was read from)."""
        with self._reading() as conn:
            conn.execute("BEGIN")  # one snapshot of the log for the whole read
            pruned = tuple(conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM prunes"
                                        ).fetchone())
            if tally is not None and (tally.pruned != pruned or (tally.seq and conn.execute(
                    "SELECT event_id FROM feedback WHERE seq = ?",
                    (tally.seq,)).fetchone() != (tally.event_id,))):
                tally = None  # pruned since, or another log (a replaced file): read it whole
            if tally is None:
                rows = conn.execute(
                    "SELECT tenant, coalesce(served, model), count(*), sum(quality) "
                    "FROM feedback f JOIN (SELECT max(seq) AS seq FROM feedback "
                    "GROUP BY decision_id, tenant) latest USING (seq) "
                    "GROUP BY tenant, coalesce(served, model)").fetchall()
                tally = _QualityTally({(str(t), str(m)): (int(n), float(q))
                                       for t, m, n, q in rows}, pruned=pruned)
                last = conn.execute("SELECT seq, event_id FROM feedback "
                                    "ORDER BY seq DESC LIMIT 1").fetchone()
                if last is not None:
                    tally.seq, tally.event_id = int(last[0]), str(last[1])
                return tally
            latest: dict[tuple[str, str], tuple[str, float]] = {}  # among the new rows
            for seq, event_id, t, decision_id, model, quality in conn.execute(
                    "SELECT seq, event_id, tenant, decision_id, coalesce(served, model), quality "
                    "FROM feedback WHERE seq > ? ORDER BY seq", (tally.seq,)):
                key = (str(t), str(decision_id))
                replaced = latest.get(key)
                if replaced is None:
                    row = conn.execute(
                        "SELECT coalesce(served, model), quality FROM feedback "
                        "WHERE decision_id = ? AND tenant = ? AND seq <= ? "
                        "ORDER BY seq DESC LIMIT 1", (decision_id, t, tally.seq)).fetchone()
                    replaced = None if row is None else (str(row[0]), float(row[1]))
                if replaced is not None:
                    tally.add(key[0], replaced[0], -replaced[1], -1)
                tally.add(key[0], str(model), float(quality), 1)
                latest[key] = (str(model), float(quality))
                tally.seq, tally.event_id = int(seq), str(event_id)
            return tally

    def experiment(self, name: str) -> dict[str, dict[str, Any]]:
        """Per arm of experiment ``name``: decisions, their mean cost in USD over the answers
        whose cost is known (``cost_unknown`` counts the others: an unpriced answer, or a
        decision no answer followed; a decision's expected cost is not a price, since an
        unpriced catalog gives it in the weights' units, so it is never averaged in), the latest
        quality reported for each scored decision, as ``quality_counts`` ``{quality: how
        many}``. Kept as a running tally per experiment, like :meth:`quality_by_model`: a call
        reads only the decisions, requests and outcomes logged since the one before."""
        with self._tally_lock:
            tally = self._experiments[name] = self._experiment_read(
                name, self._experiments.get(name))
            arms = {arm: (a.rows, a.cost_sum, a.cost_n, dict(a.qualities))
                    for arm, a in tally.arms.items()}
            kept = {arm: dict(totals) for arm, totals in tally.kept.items()}
        out: dict[str, dict[str, Any]] = {}
        for arm in sorted(set(arms) | set(kept)):
            rows, cost_sum, cost_n, qualities = arms.get(arm, (0, 0.0, 0, {}))
            pruned = kept.get(arm)
            if pruned is not None:
                rows += int(pruned["decisions"])
                cost_sum += float(pruned["cost_sum"])
                cost_n += int(pruned["cost_n"])
            out[arm] = {"decisions": rows,
                        "mean_cost_usd": cost_sum / cost_n if cost_n else None,
                        "cost_unknown": rows - cost_n,
                        "quality_counts": {q: c for q, c in sorted(qualities.items()) if c > 0},
                        "kept_scores": None if pruned is None else {
                            k: pruned[k] for k in ("n", "total", "squares", "ones", "others",
                                                   "low", "high")},
                        "pruned_decisions": 0 if pruned is None else int(pruned["decisions"])}
        return out

    def _experiment_read(self, name: str, tally: _ExperimentTally | None) -> _ExperimentTally:
        """``tally`` brought up to the end of the log (read whole the first time, after a
        prune, or when the log is not the one it was read from)."""
        with self._reading() as conn:
            try:
                conn.execute("BEGIN")  # one snapshot of the log for the whole read
                pruned = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM prunes"
                                      ).fetchone()
                marks = conn.execute(
                    "SELECT (SELECT coalesce(max(rowid), 0) FROM decisions), "
                    "(SELECT coalesce(max(seq), 0) FROM requests), "
                    "(SELECT coalesce(max(seq), 0) FROM feedback)").fetchone()
                if tally is not None and (
                        tuple(pruned) != tally.pruned
                        or (tally.feedback and conn.execute(
                            "SELECT event_id FROM feedback WHERE seq = ?",
                            (tally.feedback,)).fetchone() != (tally.feedback_id,))
                        or (tally.decisions and conn.execute(
                            "SELECT id FROM decisions WHERE rowid = ?",
                            (tally.decisions,)).fetchone() != (tally.decision_id,))):
                    tally = None  # pruned since, or another log (a replaced file): read it whole
                if tally is None:
                    tally = _ExperimentTally(pruned=tuple(pruned), kept=_kept(conn, name))
                old = tally
                d0, r0, f0 = old.decisions, old.requests, old.feedback
                d1, r1, f1 = (int(m) for m in marks)
                # The decisions new since: each with its requests (one row each, or one without).
                for arm, rows, cost_sum, cost_n in conn.execute(
                        "SELECT d.arm, count(*), sum(r.cost_usd), count(r.cost_usd) "
                        "FROM decisions d "
                        "LEFT JOIN requests r ON r.decision_id = d.id AND r.seq <= ? "
                        "WHERE +d.experiment = ? AND d.rowid > ? AND d.rowid <= ? GROUP BY d.arm",
                        (r1, name, d0, d1)):
                    old.arm(str(arm)).add_rows(int(rows), cost_sum or 0.0, int(cost_n))
                # (read whole, the latest outcomes are grouped at once; else looked up for each)
                latest_sql = (
                    "SELECT d.arm, f.quality FROM feedback f JOIN (SELECT max(seq) AS seq FROM "
                    "feedback WHERE seq <= :f1 GROUP BY decision_id, tenant) latest USING (seq) "
                    "JOIN decisions d ON d.id = f.decision_id WHERE d.experiment = :name"
                    if d0 == 0 else
                    "SELECT d.arm, f.quality FROM decisions d JOIN feedback f "
                    "ON f.decision_id = d.id WHERE +d.experiment = :name AND d.rowid > :d0 "
                    "AND d.rowid <= :d1 AND f.seq = (SELECT max(seq) FROM feedback g WHERE "
                    "g.decision_id = f.decision_id AND g.tenant = f.tenant AND g.seq <= :f1)")
                for arm, quality in conn.execute(latest_sql,
                                                 {"name": name, "d0": d0, "d1": d1, "f1": f1}):
                    old.arm(str(arm)).qualities[float(quality)] += 1
                # The requests new since about decisions counted before (CROSS JOIN: read from the
                # new rows, not from the experiment's decisions): the first one takes the place of
                # the decision's row without a request.
                firsts: set[str] = set()
                for decision_id, arm, answered, before in conn.execute(
                        "SELECT d.id, d.arm, r.cost_usd, EXISTS (SELECT 1 FROM requests "
                        "p WHERE p.decision_id = d.id AND p.seq <= ?) FROM requests r "
                        "CROSS JOIN decisions d ON d.id = r.decision_id "
                        "WHERE r.seq > ? AND r.seq <= ? "
                        "AND d.experiment = ? AND d.rowid <= ? ORDER BY r.seq",
                        (r0, r0, r1, name, d0)):
                    tallied = old.arm(str(arm))
                    if not before and decision_id not in firsts:
                        firsts.add(decision_id)
                        tallied.add_rows(-1, 0.0, 0)  # (a decision without an answer: no cost)
                    tallied.add_rows(1, answered or 0.0, int(answered is not None))
                # The outcomes new since about decisions counted before: each replaces the one
                # before it of its decision.
                latest: dict[tuple[str, str], float] = {}
                for tenant, decision_id, arm, quality in conn.execute(
                        "SELECT f.tenant, f.decision_id, d.arm, f.quality FROM feedback f "
                        "CROSS JOIN decisions d ON d.id = f.decision_id "
                        "WHERE f.seq > ? AND f.seq <= ? "
                        "AND d.experiment = ? AND d.rowid <= ? ORDER BY f.seq",
                        (f0, f1, name, d0)):
                    key = (str(tenant), str(decision_id))
                    replaced = latest.get(key)
                    if replaced is None:
                        row = conn.execute(
                            "SELECT quality FROM feedback WHERE decision_id = ? AND tenant = ? "
                            "AND seq <= ? ORDER BY seq DESC LIMIT 1", (*key[::-1], f0)).fetchone()
                        replaced = None if row is None else float(row[0])
                    qualities = old.arm(str(arm)).qualities
                    if replaced is not None:
                        qualities[replaced] -= 1
                        if not qualities[replaced]:  # a score no decision holds now: forgotten
                            del qualities[replaced]
                    qualities[float(quality)] += 1
                    latest[key] = float(quality)
                old.decisions, old.requests, old.feedback = d1, r1, f1
                old.decision_id, old.feedback_id = (str(v or "") for v in conn.execute(
                    "SELECT (SELECT id FROM decisions WHERE rowid = ?), "
                    "(SELECT event_id FROM feedback WHERE seq = ?)", (d1, f1)).fetchone())
                return old
            except sqlite3.DatabaseError as exc:
                raise _damage_named(self.path, exc) from None

    def runtime_experiments(self, *, as_kept: bool = False) -> list[StoredExperiment]:
        """The experiments created at run time the store keeps, running and ended, in the
        order they were made (none in a store too old to keep them), as the next opening for
        writing leaves them: one the removals beside the file end that it holds running (a
        backup restored) is read ended, at that end's time, and the oldest ended ones past the
        newest ``ENDED_KEPT`` are not read, saying so (see :meth:`_enforced`). ``as_kept``: as
        the file holds them."""
        if not self._all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                         "name = 'runtime_experiments'"):
            return []
        rows = [_stored_experiment(*row) for row in self._all(
            "SELECT name, created, experiment, split, ended FROM runtime_experiments "
            "ORDER BY seq")]
        if as_kept:
            return rows
        ended = self._enforced(self.runtime_models(as_kept=True), rows).ended
        if not ended:
            return rows
        rows = [replace(row, ended=ended[row.name])
                if row.ended is None and row.name in ended else row for row in rows]
        # (an end deletes the ended rows past the newest ENDED_KEPT: the store's trigger)
        past = set([i for i, row in enumerate(rows) if row.ended is not None][:-ENDED_KEPT])
        return [row for i, row in enumerate(rows) if i not in past]

    def runtime_models(self, *, as_kept: bool = False) -> list[StoredModel]:
        """The models registered at run time the store keeps, in the order they were
        registered (none in a store too old to keep them), as the next opening for writing
        leaves them: without one the removals beside the file unregister (a backup
        restored), saying so (see :meth:`_enforced`). ``as_kept``: as the file holds them."""
        if not self._all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                         "name = 'runtime_models'"):
            return []
        rows = [_stored_model(name, created, card) for name, created, card in self._all(
            "SELECT name, created, card FROM runtime_models ORDER BY seq")]
        if as_kept:
            return rows
        gone = self._enforced(rows, self.runtime_experiments(as_kept=True)).gone
        return [row for row in rows if row.name not in gone]

    def _enforced(self, models: list[StoredModel], experiments: list[StoredExperiment]
                  ) -> Enforced:
        """What the removals kept beside the file take away of ``models`` and the running
        ``experiments`` it holds (see :func:`~switchpoint.store.removals.as_enforced`): none
        once an opening for writing made them; after a backup restored, those the next one
        makes, said once for as long as the same are read (a warning naming them)."""
        from switchpoint.store.removals import as_enforced  # (here: it imports this module)

        enforced = as_enforced(self.path, {m.name: m.created for m in models},
                               {e.name: e.created for e in experiments if e.ended is None})
        if enforced.warning is not None and enforced.warning != self._said:
            log.warning("%s", enforced.warning)
        self._said = enforced.warning
        return enforced

    def promotions(self) -> dict[str, tuple[str, float, str]]:
        """``{experiment: (arm, when, reason)}``: the last promotion of each experiment."""
        rows = self._all("SELECT experiment, arm, ts, reason FROM promotions ORDER BY seq")
        return {str(e): (str(a), float(ts), str(r)) for e, a, ts, r in rows}


def _stored_model(name: object, created: object, card: object) -> StoredModel:
    """A row of ``runtime_models`` as :class:`StoredModel` reads it: one that cannot be read
    (its card not JSON, its time no number) is returned flagged, not raised, so that the
    others are still read and it can be listed and removed."""
    when = _number(created)
    if when is None:
        return StoredModel(str(name), 0.0, None, _not_number("created", created))
    parsed, problem = _kept_json("card", card)
    return StoredModel(str(name), when, parsed, problem)


def _stored_experiment(name: object, created: object, experiment: object, split: object,
                       ended: object) -> StoredExperiment:
    """A row of ``runtime_experiments`` as :class:`StoredExperiment` reads it: one that
    cannot be read (its experiment not JSON, its time or split no number) is returned
    flagged, not raised, as :func:`_stored_model` returns a model's."""
    problems = [_not_number(column, value) for column, value in
                (("created", created), ("split", split), ("ended", ended))
                if value is not None and _number(value) is None]
    parsed, problem = _kept_json("experiment", experiment)
    if problem is not None:
        problems.append(problem)
    return StoredExperiment(str(name), _number(created) or 0.0, None if problems else parsed,
                            _number(split), None if ended is None else _number(ended) or 0.0,
                            "; ".join(problems) or None)


def _number(value: object) -> float | None:
    """A kept row's ``value`` as a float, or None when it is no number (SQLite may hold text
    or bytes in any column)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _not_number(column: str, value: object) -> str:
    what = "a share of the traffic" if column == "split" else "a time in seconds"
    return f"{column}: {json_quoted(value)} is not {what}"


def _kept_json(column: str, text: object) -> tuple[Any, str | None]:
    """A kept row's JSON ``text`` (column ``column``) read, or None and why it cannot be."""
    try:
        return loads(text.decode("utf-8") if isinstance(text, bytes) else str(text)), None
    except UnicodeDecodeError:
        return None, f"{column}: is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"{column}: is {unreadable(exc)}"


def _logged(row: tuple[Any, ...]) -> LoggedFeedback:
    (seq, event_id, ts, kind, tenant, decision_id, model, served, quality, weight, chosen, cost,
     vector, units, weights_id, _key_id, _comment, measured_cost) = row
    import numpy as np

    embedding = None if vector is None else tuple(np.frombuffer(vector, dtype=np.float32).tolist())
    event = FeedbackEvent(decision_id=decision_id, model=model, quality=float(quality),
                          tenant=tenant, embedding=embedding, units=_units_of(units),
                          chosen=chosen, cost=cost, weight=float(weight), timestamp=float(ts),
                          event_id=event_id, served=served,
                          measured_cost=None if measured_cost is None else float(measured_cost))
    return LoggedFeedback(int(seq), event, str(kind), weights_id)


def feedback_record(event: FeedbackEvent, kind: str, *, weights_id: str | None,
                    key_id: str | None = None, comment: str | None = None) -> FeedbackRecord:
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"kind must be one of {one_of(FEEDBACK_KINDS)}, got "
                         f"{json_quoted(kind)}")
    return FeedbackRecord(event, kind, weights_id, key_id, comment)


__all__ = ["FEEDBACK_KINDS", "FeedbackRecord", "LearningReader", "LoggedFeedback",
           "PendingForget", "PendingRecord", "PromotionRecord",
           "RuntimeExperimentEnd", "RuntimeExperimentRecord", "RuntimeModelRecord",
           "RuntimeModelRemoval",
           "StoredExperiment", "StoredModel", "feedback_record"]
