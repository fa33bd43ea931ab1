"""SQLite state in the data directory: WAL mode, one writer thread, group commit.

Every routing decision is appended to the ``decisions`` table (triggers refuse UPDATE and
DELETE). Writes go through a single writer thread: :meth:`SQLiteStore.append` queues a record
and returns a future that resolves once the record is **committed** (``synchronous=FULL``, so
committed means on disk), so a caller that waits for it before answering never acknowledges a
decision a crash could lose. Records that arrive while a commit is running are written together
in the next transaction (group commit), which keeps the cost of durability per request low
under concurrency. Reads open their own connection; WAL lets them run beside the writer.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchpoint.errors import SwitchpointError

SCHEMA_VERSION = 1
# Most records written in one transaction; more wait for the next one.
MAX_BATCH = 512

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE decisions (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        selected_model TEXT NOT NULL,
        cluster_id INTEGER NOT NULL,
        cost_weight REAL NOT NULL,
        candidates TEXT NOT NULL,
        cache_hit INTEGER NOT NULL,
        routing_ms REAL NOT NULL,
        embedding_ms REAL NOT NULL,
        policy TEXT NOT NULL,
        weights_id TEXT NOT NULL,
        expected_error REAL NOT NULL,
        cost_adjusted_score REAL NOT NULL
    );
    CREATE INDEX decisions_ts ON decisions (ts);
    CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
        BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END;
    """,
}

_COLUMNS = ("id", "ts", "selected_model", "cluster_id", "cost_weight", "candidates", "cache_hit",
            "routing_ms", "embedding_ms", "policy", "weights_id", "expected_error",
            "cost_adjusted_score")
_INSERT = (f"INSERT INTO decisions ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")


class StoreError(SwitchpointError):
    """The store cannot be opened or written (path, permissions, disk full, closed)."""


@dataclass(frozen=True)
class DecisionRecord:
    """One routing decision as it is logged."""

    id: str
    ts: float
    selected_model: str
    cluster_id: int
    cost_weight: float
    candidates: Sequence[str]
    cache_hit: bool
    routing_ms: float
    embedding_ms: float
    policy: str
    weights_id: str
    expected_error: float
    cost_adjusted_score: float

    def row(self) -> tuple[Any, ...]:
        return (self.id, self.ts, self.selected_model, self.cluster_id, self.cost_weight,
                json.dumps(list(self.candidates)), int(self.cache_hit), self.routing_ms,
                self.embedding_ms, self.policy, self.weights_id, self.expected_error,
                self.cost_adjusted_score)


_STOP = object()


class SQLiteStore:
    """The append-only decision log in one SQLite file. ``open()`` before use, ``close()`` after.

    ``synchronous`` is SQLite's setting: ``FULL`` (default) survives power loss; ``NORMAL`` in
    WAL mode survives a crash of this process but may lose the last commits on power loss.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    # Lifecycle ---------------------------------------------------------------------------------

    def open(self) -> SQLiteStore:
        """Create the file and schema if needed and start the writer thread."""
        if self._writer is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the SQLite store ({exc}); check that "
                             "data_dir is a writable directory") from None
        self._conn = conn
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="switchpoint-store-writer",
                                        daemon=True)
        self._writer.start()
        return self

    def close(self) -> None:
        """Write what is queued, then stop the writer and close the file."""
        if self._writer is None:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._writer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this switchpoint's {SCHEMA_VERSION}; "
                "upgrade switchpoint or point data_dir elsewhere")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.executescript(f"BEGIN; {_MIGRATIONS[target]} PRAGMA user_version={target}; "
                               "COMMIT;")

    # Writes ------------------------------------------------------------------------------------

    def append(self, record: DecisionRecord) -> Future[None]:
        """Queue ``record``; the future resolves when it is committed (or holds the error)."""
        if self._closed or self._writer is None:
            raise StoreError(f"{self.path}: the store is not open")
        done: Future[None] = Future()
        self._queue.put((record, done))
        return done

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[DecisionRecord, Future[None]]]) -> None:
        assert self._conn is not None
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(_INSERT, [record.row() for record, _ in batch])
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if len(batch) > 1:  # one bad record must not sink the others: write them one by one
                for item in batch:
                    self._commit([item])
                return
            error = StoreError(f"{self.path}: could not write decision {batch[0][0].id}: {exc}")
            batch[0][1].set_exception(error)
            return
        for _, done in batch:
            done.set_result(None)

    # Reads -------------------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)

    def decision_stats(self, weights_id: str | None = None) -> dict[str, Any]:
        """Totals over every logged decision: count, cache hits, by model, by policy, and by
        cluster for ``weights_id`` (cluster ids of different weights are not comparable)."""
        conn = self._read()
        try:
            total, hits = conn.execute(
                "SELECT count(*), coalesce(sum(cache_hit), 0) FROM decisions").fetchone()
            by_model = dict(conn.execute(
                "SELECT selected_model, count(*) FROM decisions GROUP BY selected_model "
                "ORDER BY count(*) DESC, selected_model").fetchall())
            by_policy = dict(conn.execute(
                "SELECT policy, count(*) FROM decisions GROUP BY policy "
                "ORDER BY count(*) DESC, policy").fetchall())
            by_cluster = {str(k): v for k, v in conn.execute(
                "SELECT cluster_id, count(*) FROM decisions WHERE weights_id = ? "
                "GROUP BY cluster_id ORDER BY cluster_id", (weights_id or "",)).fetchall()}
        finally:
            conn.close()
        return {"total": int(total), "cache_hits": int(hits), "by_model": by_model,
                "by_policy": by_policy, "by_cluster": by_cluster}

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent decisions, newest first."""
        conn = self._read()
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM decisions "
                                "ORDER BY rowid DESC LIMIT ?", (limit,)).fetchall()
        finally:
            conn.close()
        out = []
        for row in rows:
            item = dict(row)
            item["candidates"] = json.loads(item["candidates"])
            item["cache_hit"] = bool(item["cache_hit"])
            out.append(item)
        return out
