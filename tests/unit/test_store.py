"""The SQLite decision log: append-only, committed before the future resolves, group commit
under concurrency, stats that survive reopening."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from switchpoint.catalog import usd
from switchpoint.errors import InvalidInputError, StoreError
from switchpoint.governance.ledger import LedgerRecord
from switchpoint.learning.memory import PendingDecision
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore
from switchpoint.store.learning import PendingForget, PendingRecord
from switchpoint.store.sqlite import SCHEMA_VERSION, Record
from tests.fakes.full_disk import FULL, DamagedFile, full_disk
from tests.fakes.racing import at_once

#: Undoes what the schema gained since 23 (a column and its indexes; the registered models'
#: table), which a file made to be of an older schema by hand must not hold: the upgrade adds
#: it.
_SINCE_23 = ("DROP INDEX pending_prompt; DROP INDEX pending_tenant_prompt; "
             "ALTER TABLE pending DROP COLUMN prompt_hash; DROP TABLE runtime_models; ")


def record(model: str = "a", cluster: int = 1, cache_hit: bool = False,
           weights_id: str = "w1") -> DecisionRecord:
    return DecisionRecord(
        id=uuid.uuid4().hex, ts=time.time(), selected_model=model, cluster_id=cluster,
        cost_weight=0.5, candidates=[model, "b"], cache_hit=cache_hit, routing_ms=0.2,
        embedding_ms=3.0, policy="cluster", weights_id=weights_id, expected_error=0.1,
        cost_adjusted_score=0.2)


def test_append_commits_before_the_future_resolves(tmp_path: Path) -> None:
    path = tmp_path / "state" / "switchpoint.db"
    with SQLiteStore(path) as store:
        rec = record()
        store.append(rec).result(timeout=10)
        # Another connection sees it at once: it is committed, not merely queued.
        with sqlite3.connect(path) as other:
            row = other.execute("SELECT selected_model, candidates, cache_hit FROM decisions "
                                "WHERE id = ?", (rec.id,)).fetchone()
        assert row == ("a", '["a", "b"]', 0)
        assert store.decisions(limit=5)[0]["id"] == rec.id
        assert store.decisions(limit=5)[0]["candidates"] == ["a", "b"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_stats_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        for rec in (record("a", 1), record("a", 2, cache_hit=True), record("b", 1),
                    record("c", 7, weights_id="w2")):
            store.append(rec).result()
    with SQLiteStore(path) as store:
        stats = store.decision_stats("w1")
    assert stats == {"total": 4, "cache_hits": 1, "by_model": {"a": 2, "b": 1, "c": 1},
                     "by_policy": {"cluster": 4}, "by_cluster": {"1": 2, "2": 1}, "warnings": []}


def test_concurrent_appends_are_all_written(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db", synchronous="normal").open()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            futures = [store.append(record(f"m{n}")) for _ in range(50)]
            for f in futures:
                f.result(timeout=30)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert not errors
    with SQLiteStore(tmp_path / "switchpoint.db") as again:
        stats = again.decision_stats()
    assert stats["total"] == 400 and stats["by_model"] == {f"m{n}": 50 for n in range(8)}


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db").open()
    futures = [store.append(record()) for _ in range(100)]
    store.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(StoreError, match="not open"):
        store.append(record())


def test_the_log_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        store.append(record()).result()
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE decisions SET selected_model = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM decisions")


def test_a_failed_write_is_reported_on_its_future(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        rec = record()
        store.append(rec).result()
        with pytest.raises(StoreError, match="cannot write") as err:
            store.append(rec).result()  # the same id twice violates the primary key
        assert not err.value.damaged and "UNIQUE" in (err.value.reason or "")
        store.append(record()).result()  # and the writer carries on


def test_a_write_that_meets_a_damaged_file_says_it_is_damaged(tmp_path: Path) -> None:
    # (by the one rule the reads and the key store go by: waiting does not mend it, so
    # the client is told not to try again, and the file is named)
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        store.append(record()).result()
        with full_disk(store, kind=DamagedFile), pytest.raises(StoreError) as err:
            store.append(record()).result()
        assert err.value.damaged
        assert err.value.reason == ("switchpoint.db in data_dir is damaged (database disk "
                                    "image is malformed); the operator must restore it from "
                                    "a backup")
        store.append(record()).result()  # and the writer carries on


def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(StoreError, match="data_dir"):
        SQLiteStore(blocker / "switchpoint.db").open()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "switchpoint.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer") as info:
        SQLiteStore(path).open()
    # What to do is said once, and is not about space or permissions.
    assert "upgrade switchpoint" in str(info.value) and "writable" not in str(info.value)


def test_a_newer_schema_is_refused_before_its_header_is_written(tmp_path: Path) -> None:
    # Refused, the file was still set to WAL and incremental vacuum first, header bytes that
    # the newer version owns.
    path = tmp_path / "switchpoint.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(path).open()
    assert path.read_bytes() == before


def test_opening_a_store_for_writing_and_closing_it_without_a_write_leaves_its_file_as_it_was(
        tmp_path: Path) -> None:
    """Each opening set the file's incremental vacuum again, which SQLite writes into the
    header (its change counter) whether or not it changed: a command that wrote nothing
    changed the file all the same."""
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        store.append(record()).result()
    before = path.read_bytes()
    with SQLiteStore(path):
        pass
    SQLiteStore(path).upgrade(take_up=True)  # (what `switchpoint prune` opens it with)
    assert path.read_bytes() == before  # the header (its first 100 bytes) too
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # (incremental)


def test_an_older_store_without_incremental_vacuum_is_converted_by_a_full_prune_as_before(
        tmp_path: Path) -> None:
    """A file made before stores freed their pages on demand is opened as it is (a VACUUM
    is needed to convert it); a prune that may vacuum it whole converts it."""
    from switchpoint.store.retention import prune

    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        store.append(replace(record(), ts=time.time() - 86_400)).result()
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA auto_vacuum=NONE")
        db.execute("VACUUM")  # (as an older version made it)
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    before = path.read_bytes()
    with SQLiteStore(path):
        pass
    assert path.read_bytes() == before
    assert prune(path, time.time() - 3600).vacuum == "full"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    before = path.read_bytes()
    with SQLiteStore(path):
        pass
    assert path.read_bytes() == before


def test_the_readers_beside_the_store_refuse_a_newer_schema_as_the_store_does(
        tmp_path: Path) -> None:
    """A file an upgraded switchpoint wrote is not read by an older one: the reports, the
    spend ledger, a prune's dry run and the learning tables' reader (`switchpoint experiments
    list`) refuse it, saying what to do, rather than answer from tables whose rows they may
    read wrong; a file of this schema is read as before."""
    from switchpoint.config import Settings
    from switchpoint.governance.ledger import load_state
    from switchpoint.governance.reports import Reports
    from switchpoint.store.learning import LearningReader
    from switchpoint.store.retention import prune

    path = tmp_path / "switchpoint.db"
    SQLiteStore(path).open().close()
    reports = Reports(path, Settings(data_dir=str(tmp_path)))
    assert reports.cost_report("day")["requests"] == 0
    assert LearningReader(path).runtime_experiments() == []
    before = path.read_bytes()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for read in (lambda: reports.cost_report("day"), lambda: load_state(path),
                 lambda: prune(path, time.time(), dry_run=True),
                 lambda: LearningReader(path).runtime_experiments()):
        with pytest.raises(StoreError) as info:
            read()
        message = str(info.value)
        assert f"schema version {SCHEMA_VERSION + 1} is newer than this switchpoint's " \
            f"{SCHEMA_VERSION}; upgrade switchpoint" in message, message
    with sqlite3.connect(path) as db:  # (nothing but the version changed the file)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    assert path.read_bytes() == before



def test_a_misuse_inside_this_process_is_not_blamed_on_data_dir(tmp_path: Path) -> None:
    from switchpoint.store.sqlite import store_error

    conn = sqlite3.connect(tmp_path / "switchpoint.db")
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError) as info:
        conn.execute("SELECT 1")
    said = str(store_error(tmp_path / "switchpoint.db", "read the log", info.value))
    assert said.endswith("(Cannot operate on a closed database.)"), said


def test_one_bad_record_does_not_sink_its_batch(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        first = record()
        store.append(first).result()
        batch = [(rec, Future[None](), True) for rec in (record(), first, record())]
        # what the writer does with records that arrived together
        store._commit(cast("list[tuple[Record, Future[None] | None, bool]]", batch))
        outcomes = [done.exception() for _, done, _ in batch]
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], StoreError)
        assert store.decision_stats()["total"] == 3


def test_a_value_the_database_cannot_hold_fails_its_record_alone(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        huge = replace(request(), prompt_tokens=2**64)  # beyond SQLite's 64-bit integers
        done = [store.append(rec) for rec in (request(), huge, request())]
        assert isinstance(done[1].exception(timeout=5), StoreError)
        assert done[0].result(timeout=5) is None and done[2].result(timeout=5) is None
        store.append(request()).result(timeout=5)  # no transaction left open behind it
        assert store.request_stats()["total"] == 3


def request(status: str = "ok", model: str | None = "m", cost: float | None = 0.001,
            tried: tuple[str, ...] = ("m",)) -> RequestRecord:
    return RequestRecord(
        id=uuid.uuid4().hex, ts=time.time(), requested_model="auto", status=status,
        http_status=200 if status == "ok" else 502, pin_state="fresh", stream=False,
        latency_ms=12.5, model=model, models_tried=list(tried),
        attempts=[{"model": m, "outcome": "ok"} for m in tried], escalated=len(tried) > 1,
        pin={"pin_state": "fresh"}, prompt_tokens=10, completion_tokens=5, cost_usd=cost,
        reasoning=["because"], excluded={"x": ["no vision"]})


def test_a_cost_total_below_a_cent_millionth_keeps_its_places(tmp_path: Path) -> None:
    """The totals are kept in nano-dollars and read back to the places every amount of dollars
    is kept to: two requests of $0.000000003 total $0.000000006, where eight places made it
    $0.00000001 and one of them $0."""
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        for rec in (request(cost=3e-9), request(cost=3e-9, model="n")):
            store.append(rec).result()
        stats = store.request_stats()
    assert stats["cost_usd"] == 6e-9 and stats["by_model"]["n"]["cost_usd"] == 3e-9


def test_a_total_out_of_range_is_left_out_with_a_warning_not_clamped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cost too large to be real (a damaged row, a misreported usage) was counted as the
    largest 64-bit integer, and the stats said $9.2 billion; a total edited or damaged in the
    file (negative, text) was shown, hidden, or failed the read. Such a figure is now None
    (null), and the stats say which and why; the figures that are fine are given."""
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        for rec in (request(), replace(request(), cost_usd=1e300), request(model="n")):
            store.append(rec).result()
        for decision in (record("a"), record("b"), record("b")):
            store.append(decision).result()
        with caplog.at_level("WARNING", logger="switchpoint.store"):
            stats = store.request_stats()
        assert stats["total"] == 3 and stats["ok"] == 3 and stats["prompt_tokens"] == 30
        assert stats["cost_usd"] is None and stats["by_model"]["m"]["cost_usd"] is None
        assert stats["by_model"]["n"]["cost_usd"] == 0.001
        assert stats["warnings"] and all("out of range" in w and "switchpoint.db" in w
                                         for w in stats["warnings"])
        assert any(w.startswith("cost_usd:") for w in stats["warnings"])
        assert any(w.startswith("by_model.m.cost_usd:") for w in stats["warnings"])
        assert "out of range" in caplog.text
        db = sqlite3.connect(path)
        db.execute("UPDATE stat_counts SET n = -7 WHERE dim = 'requests'")
        db.execute("UPDATE stat_counts SET n = 'garbage' WHERE dim = 'request_pin'")
        db.execute("UPDATE stat_counts SET n = -1 WHERE dim = 'decision_model' AND key = 'a'")
        db.commit()
        db.close()
        damaged = store.request_stats()
        assert damaged["total"] is None and damaged["errors"] is None and damaged["ok"] == 3
        assert damaged["by_pin_state"] == {"fresh": None}
        assert any(w.startswith("total:") for w in damaged["warnings"])
        assert any(w.startswith("by_pin_state.fresh:") for w in damaged["warnings"])
        decisions = store.decision_stats("w1")
        assert decisions["total"] == 3 and decisions["by_model"] == {"b": 2, "a": None}
        assert [w.split(":")[0] for w in decisions["warnings"]] == ["by_model.a"]
        fine = SQLiteStore(tmp_path / "fine.db")
        with fine:
            fine.append(request()).result()
            assert fine.request_stats()["warnings"] == []
            assert fine.decision_stats()["warnings"] == []


def test_the_request_log_pages_newest_first_and_totals(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        records = [request(), request(tried=("a", "m")), request("error", None, None, ("a",)),
                   request(model="n", tried=("n",))]
        for rec in records:
            store.append(rec).result()
        page, cursor = store.requests(limit=3)
        assert [e["id"] for e in page] == [r.id for r in records[::-1][:3]]
        assert page[0]["models_tried"] == ["n"] and page[0]["excluded"] == {"x": ["no vision"]}
        assert page[0]["stream"] is False and page[1]["escalated"] is False
        last, end = store.requests(limit=3, cursor=cursor)
        assert [e["id"] for e in last] == [records[0].id] and end is None
        stats = store.request_stats()
    assert stats["total"] == 4 and stats["ok"] == 3 and stats["errors"] == 1
    assert stats["escalations"] == 1 and stats["cost_usd"] == pytest.approx(0.003)
    assert stats["by_model"] == {"m": {"requests": 2, "cost_usd": 0.002,
                                       "cost_unknown_requests": 0},
                                 "n": {"requests": 1, "cost_usd": 0.001,
                                       "cost_unknown_requests": 0}}
    assert stats["cost_unknown_requests"] == 0
    assert stats["prompt_tokens"] == 40 and stats["by_pin_state"] == {"fresh": 4}


def test_the_request_log_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        store.append(request()).result()
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE requests SET status = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM requests")


def test_a_version_1_store_gains_the_request_log_and_keeps_its_decisions(
        tmp_path: Path) -> None:
    path = tmp_path / "switchpoint.db"
    from switchpoint.store.logs import _COLUMNS
    from switchpoint.store.migrations import MIGRATIONS
    from switchpoint.store.sqlite import SCHEMA_VERSION

    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(f"BEGIN; {MIGRATIONS[1]} PRAGMA user_version=1; COMMIT;")
    rec = record()
    v1 = _COLUMNS[:13]  # the columns of version 1
    old.execute(f"INSERT INTO decisions ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})",
                rec.row()[:13])
    old.close()
    with SQLiteStore(path) as store:
        assert store.decisions()[0]["id"] == rec.id
        assert store.decisions()[0]["tenant"] is None
        store.append(request()).result()
        assert store.request_stats()["total"] == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_version_22_store_gains_the_run_time_experiments_in_place_and_keeps_what_it_held(
        tmp_path: Path) -> None:
    """A store of schema 22 (what the previous switchpoint wrote) is upgraded in place when it
    opens: its rows stay as they were, it takes run-time experiments, and the previous
    switchpoint then refuses the file, saying what to do, as any older one refuses a newer
    file."""
    from switchpoint.store.learning import (
        LearningReader,
        PromotionRecord,
        RuntimeExperimentEnd,
        RuntimeExperimentRecord,
    )
    from switchpoint.store.migrations import MIGRATIONS
    from switchpoint.store.sqlite import (
        ENDED_KEPT,
        NEWER_HINT,
        NewerSchemaError,
        upgrade_schema,
    )

    path = tmp_path / "switchpoint.db"
    previous = {n: script for n, script in MIGRATIONS.items() if n <= 22}
    old = sqlite3.connect(path, isolation_level=None)
    upgrade_schema(old, previous)
    rec = replace(record(), experiment="thrift", arm="control")
    old.execute(rec.insert, rec.row())
    old.execute(PromotionRecord.insert, PromotionRecord(1.0, "thrift", "control", "chosen").row())
    tables = [t for (t,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    before = {t: old.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    assert old.execute("PRAGMA user_version").fetchone()[0] == 22
    assert "runtime_experiments" not in tables
    old.close()
    with SQLiteStore(path) as store:
        store.append(RuntimeExperimentRecord("made", 5.0, '{"arms": {}}', 0.25)).result()
        reader = LearningReader(path)
        assert [(e.name, e.created, e.experiment, e.split, e.ended)
                for e in reader.runtime_experiments()] == [("made", 5.0, {"arms": {}}, 0.25,
                                                            None)]
        store.append(RuntimeExperimentEnd("made", 6.0)).result()
        assert reader.runtime_experiments()[0].ended == 6.0
        assert reader.promotions() == {"thrift": ("control", 1.0, "chosen")}
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for table, rows in before.items():  # (sqlite_sequence gains the new table's row)
            now = db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            assert now[:len(rows)] == rows, table
        # The previous switchpoint refuses the upgraded file, and leaves it as it is.
        with pytest.raises(NewerSchemaError, match=f"schema version {SCHEMA_VERSION} is newer "
                                                   "than this switchpoint's 22; upgrade "
                                                   "switchpoint"):
            upgrade_schema(db, previous, newer=NEWER_HINT)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # A row changes only as its experiment ends, once; a running one is never deleted.
        db.execute(RuntimeExperimentRecord.insert, ("running", 7.0, "{}", None))
        for sql in ("UPDATE runtime_experiments SET ended = 9 WHERE name = 'made'",
                    "UPDATE runtime_experiments SET experiment = '{}' WHERE name = 'running'",
                    "DELETE FROM runtime_experiments WHERE name = 'running'",
                    "DELETE FROM runtime_experiments WHERE name = 'made'"):
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(sql)
        # The newest ENDED_KEPT ended ones are kept; an older one goes as another ends.
        for i in range(ENDED_KEPT):
            db.execute(RuntimeExperimentRecord.insert, (f"e{i}", 10.0 + i, "{}", None))
            db.execute(RuntimeExperimentEnd.insert, (20.0 + i, f"e{i}"))
        names = [n for (n,) in db.execute("SELECT name FROM runtime_experiments ORDER BY seq")]
        assert names == ["running", *(f"e{i}" for i in range(ENDED_KEPT))]
    finally:
        db.close()



def test_a_version_23_store_gains_prompt_hashes_for_its_pending_decisions_and_keeps_its_rows(
        tmp_path: Path) -> None:
    """A store of schema 23 (what the previous switchpoint wrote) is upgraded in place when it
    opens: its pending decisions stay as they were, without a prompt hash (their ids are still
    found, their hashes not), the ones kept since carry theirs, and the newest of a prompt
    (of one tenant, of any) is read from an index; the previous switchpoint then refuses the
    file, saying what to do, as any older one refuses a newer file."""
    from switchpoint.store.learning import LearningReader
    from switchpoint.store.migrations import MIGRATIONS
    from switchpoint.store.sqlite import NEWER_HINT, NewerSchemaError, upgrade_schema

    path = tmp_path / "switchpoint.db"
    previous = {n: script for n, script in MIGRATIONS.items() if n <= 23}
    old = sqlite3.connect(path, isolation_level=None)
    upgrade_schema(old, previous)
    old.execute(record().insert, record().row())
    columns = ("decision_id", "ts", "tenant", "chosen", "candidates", "embedding", "units",
               "expected_cost", "weights_id", "prompt_tokens")  # (the pending row of schema 23)
    old.execute(f"INSERT INTO pending ({', '.join(columns)}) VALUES "
                f"({', '.join('?' for _ in columns)})",
                ("before", 1.0, "acme", "a", '["a", "b"]', None, None, None, "w1", 12))
    tables = [t for (t,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    before = {t: old.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    assert old.execute("PRAGMA user_version").fetchone()[0] == 23
    assert "prompt_hash" not in [c[1] for c in old.execute("PRAGMA table_info(pending)")]
    old.close()
    hashed = "ab" * 32

    def pending(decision_id: str, tenant: str) -> PendingRecord:
        return PendingRecord(PendingDecision(decision_id=decision_id, tenant=tenant, chosen="a",
                                             candidates=("a", "b"), prompt_hash=hashed), "w1")

    with SQLiteStore(path) as store:
        for decision_id, tenant in (("acme1", "acme"), ("globex1", "globex"), ("acme2", "acme"),
                                    ("globex2", "globex")):
            store.append(pending(decision_id, tenant)).result()
        reader = LearningReader(path)
        kept = reader.pending("before")
        assert kept is not None and (kept[0].prompt_hash, kept[0].prompt_tokens) == ("", 12)
        assert reader.pending("acme2")[0].prompt_hash == hashed  # type: ignore[index]
        assert reader.latest_pending(hashed) == "globex2"
        assert reader.latest_pending(hashed, "acme") == "acme2"
        assert reader.latest_pending(hashed, "initech") is None
        # (with held, the first of the prompt's newest rows it says is open, newest first)
        assert reader.latest_pending(hashed, "acme", held=lambda d: d != "acme2",
                                     rows=2) == "acme1"
        assert reader.latest_pending(hashed, "acme", held=lambda d: d != "acme2") is None
        assert reader.latest_pending(hashed, held=lambda d: True, rows=4) == "globex2"
        assert reader.latest_pending("cd" * 32) is None
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for table, rows in before.items():  # (a column added since comes after the old ones)
            if table != "sqlite_sequence":  # (which counts the rows written since)
                now = db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                assert [row[:len(was)] for row, was in zip(now[:len(rows)], rows, strict=True)
                        ] == rows, table
        assert db.execute("SELECT prompt_hash FROM pending WHERE decision_id = 'before'"
                          ).fetchone() == (None,)
        # The newest row of a prompt is found in an index, in its order: no scan, no sort.
        for where in ("prompt_hash = ?", "prompt_hash = ? AND tenant = ?"):
            plan = " ".join(str(step[3]) for step in db.execute(
                f"EXPLAIN QUERY PLAN SELECT decision_id FROM pending WHERE {where} "
                "ORDER BY seq DESC LIMIT 1", (hashed, "acme")[:where.count("?")]))
            assert "USING INDEX pending_" in plan and "SCAN" not in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        # The previous switchpoint refuses the upgraded file, and leaves it as it is.
        with pytest.raises(NewerSchemaError, match=f"schema version {SCHEMA_VERSION} is newer "
                                                   "than this switchpoint's 23; upgrade "
                                                   "switchpoint"):
            upgrade_schema(db, previous, newer=NEWER_HINT)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()



def test_a_version_24_store_gains_the_registered_models_table_and_keeps_its_rows(
        tmp_path: Path) -> None:
    """A store of schema 24 (what the previous switchpoint wrote) is upgraded in place when it
    opens: its rows stay as they were, and it keeps the models registered at run time, one row
    each in the order they were registered, deleted as each is unregistered and never
    changed; the previous switchpoint then refuses the file, saying what to do."""
    from switchpoint.store.learning import (
        LearningReader,
        RuntimeModelRecord,
        RuntimeModelRemoval,
    )
    from switchpoint.store.migrations import MIGRATIONS
    from switchpoint.store.sqlite import NEWER_HINT, NewerSchemaError, upgrade_schema

    path = tmp_path / "switchpoint.db"
    previous = {n: script for n, script in MIGRATIONS.items() if n <= 24}
    old = sqlite3.connect(path, isolation_level=None)
    upgrade_schema(old, previous)
    old.execute(record().insert, record().row())
    tables = [t for (t,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    before = {t: old.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    assert old.execute("PRAGMA user_version").fetchone()[0] == 24
    assert "runtime_models" not in tables
    assert LearningReader(path).runtime_models() == []  # (read as none, not refused)
    old.close()
    with SQLiteStore(path) as store:
        for i, name in enumerate(("free", "team/spare", "third")):
            store.append(RuntimeModelRecord(name, 5.0 + i, f'{{"name": "{name}"}}')).result()
        store.append(RuntimeModelRemoval("team/spare")).result()
        reader = LearningReader(path)
        assert [(m.name, m.created, m.card) for m in reader.runtime_models()] == [
            ("free", 5.0, {"name": "free"}), ("third", 7.0, {"name": "third"})]
        with pytest.raises(StoreError, match=r"UNIQUE constraint failed: runtime_models\.name"):
            store.append(RuntimeModelRecord("free", 9.0, "{}")).result()  # (registered once)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 25
        for table, rows in before.items():
            if table != "sqlite_sequence":  # (which counts the rows written since)
                assert db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() == rows
        with pytest.raises(sqlite3.IntegrityError, match="never changed"):
            db.execute("UPDATE runtime_models SET card = '{}' WHERE name = 'free'")
        # The previous switchpoint refuses the upgraded file, and leaves it as it is.
        with pytest.raises(NewerSchemaError, match="schema version 25 is newer than this "
                                                   "switchpoint's 24; upgrade switchpoint"):
            upgrade_schema(db, previous, newer=NEWER_HINT)
        assert db.execute("PRAGMA user_version").fetchone()[0] == 25
    finally:
        db.close()

def _numbers(tree: object, path: str = "") -> list[tuple[str, object]]:
    """Every number in a nested stats dict, with its path (``by_model.m.requests``)."""
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in _numbers(v, f"{path}.{k}".lstrip("."))]
    return [(path, tree)] if isinstance(tree, (int, float)) else []


def test_stats_counts_are_ints_and_costs_floats(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        rec: DecisionRecord | RequestRecord
        for rec in (record("a", 1), record("a", 2, cache_hit=True)):
            store.append(rec).result()
        for rec in (request(), request(tried=("a", "m")), request(model="free", cost=None),
                    request("error", None, None, ("a",))):
            store.append(rec).result()
        decisions, requests = store.decision_stats("w1"), store.request_stats()
    numbers = _numbers(decisions) + _numbers(requests)
    costs = [(p, v) for p, v in numbers if p.endswith("cost_usd")]
    counts = [(p, v) for p, v in numbers if not p.endswith("cost_usd")]
    assert counts and all(type(v) is int for _, v in counts), counts
    assert all(type(v) is float for _, v in costs), costs
    # Its cost unknown, the answer is counted apart: not summed as free.
    assert requests["by_model"]["free"] == {"requests": 1, "cost_usd": 0.0,
                                            "cost_unknown_requests": 1}
    assert requests["cost_unknown_requests"] == 1
    assert requests["by_model"]["m"]["requests"] == 2 and requests["escalations"] == 1


def test_lazy_records_share_the_next_commit_or_land_soon(tmp_path: Path) -> None:
    from switchpoint.store.sqlite import LAZY_WAIT_S

    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        lazy = record()
        store.append_lazy(lazy)
        last = request()
        store.append(last).result()
        # Committed with the record appended after it, in the same transaction.
        assert store.decisions()[0]["id"] == lazy.id
        alone = record()
        store.append_lazy(alone)
        deadline = time.monotonic() + 10 * LAZY_WAIT_S + 1
        while store.decisions()[0]["id"] != alone.id:
            assert time.monotonic() < deadline, "a lazy record alone was never written"
            time.sleep(0.01)
        final = record()
        store.append_lazy(final)
    with SQLiteStore(path) as store:  # closing writes what is still queued
        assert store.decisions()[0]["id"] == final.id


def test_the_store_says_while_the_database_refuses_its_writes(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store, full_disk(store) as disk:
        with pytest.raises(StoreError, match=FULL):
            store.append(record()).result(timeout=10)
        assert store.failing == FULL
        refusing = store.refusing()
        assert refusing is not None and refusing[0] == FULL and 0 < refusing[1] <= 5
        disk.full = False
        store.append(record()).result(timeout=10)
        assert store.failing is None and store.refusing() is None


def test_records_nobody_waits_for_are_written_once_the_database_takes_writes_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        with full_disk(store) as disk:
            lazy = [record() for _ in range(3)]
            for r in lazy:
                store.append_lazy(r)
            with pytest.raises(StoreError, match=FULL):  # the commit they rode on is refused
                store.append(record()).result(timeout=10)
            disk.full = False
            kept = record()
            store.append(kept).result(timeout=10)  # a write goes through: they follow it
            deadline = time.monotonic() + 10
            while len(store.decisions()) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert {d["id"] for d in store.decisions()} == {kept.id, *(r.id for r in lazy)}
        # A record appended to keep trying: its appender hears of the refusal, and it is
        # written later all the same; a plain one is not.
        with full_disk(store) as disk:
            late, never = record(), record()
            with pytest.raises(StoreError, match="kept: it is written once") as info:
                store.append(late, keep_trying=True).result(timeout=10)
            assert info.value.reason == FULL and str(tmp_path) in str(info.value)
            with pytest.raises(StoreError, match=FULL):
                store.append(never).result(timeout=10)
            disk.full = False
            store.append(record()).result(timeout=10)
            deadline = time.monotonic() + 10
            while late.id not in {d["id"] for d in store.decisions()}:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert never.id not in {d["id"] for d in store.decisions()}
        # Past the refusing window the database is tried again even with nothing else to write.
        monkeypatch.setattr("switchpoint.store.sqlite.REFUSING_S", 0.2)
        with full_disk(store) as disk:
            late = record()
            store.append_lazy(late)
            time.sleep(0.3)  # refused at least once
            assert late.id not in {d["id"] for d in store.decisions()}
            disk.full = False
            deadline = time.monotonic() + 10
            while late.id not in {d["id"] for d in store.decisions()}:
                assert time.monotonic() < deadline
                time.sleep(0.05)


@dataclass(frozen=True)
class _BadStatement:
    """A record whose statement names a column the table lacks (SQLite's plain error)."""

    id: str = "bad"
    insert: ClassVar[str] = "INSERT INTO decisions (no_such_column) VALUES (?)"

    def row(self) -> tuple[Any, ...]:
        return (1,)


def test_a_record_the_database_cannot_take_is_not_tried_again(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.append_lazy(_BadStatement())
        good = record()
        store.append(good).result(timeout=10)  # its batch mate is written
        assert store.failing is None and store.refusing() is None and not store._retry
        assert [d["id"] for d in store.decisions()] == [good.id]


def test_a_prune_that_goes_through_on_a_full_disk_does_not_say_writes_resumed(
        tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store, full_disk(store, only="INSERT") as disk:
        with pytest.raises(StoreError, match=FULL):  # (deletes need no space)
            store.append(record()).result(timeout=10)
        store.append(PendingForget(("d0",))).result(timeout=10)
        assert store.failing == FULL
        disk.full = False
        store.append(record()).result(timeout=10)
        assert store.failing is None


def test_a_store_file_others_may_read_is_kept_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path):
        pass
    assert path.stat().st_mode & 0o777 == 0o600  # made private
    caplog.clear()
    with SQLiteStore(path):
        pass
    assert "read by other users" not in caplog.text
    path.chmod(0o644)  # one made before, or by hand
    with SQLiteStore(path):
        pass
    assert path.stat().st_mode & 0o777 == 0o644  # its mode is the owner's to choose
    assert "can be read by other users (mode 644)" in caplog.text and "chmod 600" in caplog.text


def test_records_still_refused_at_close_are_kept_beside_the_database_and_written_at_open(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path).open()
    waiting = [record() for _ in range(3)]
    logged = request()
    with full_disk(store):
        for r in waiting:
            store.append_lazy(r)
        with pytest.raises(StoreError, match="kept: it is written once"):
            store.append(logged, keep_trying=True).result(timeout=10)
        store.close()  # the disk is still full: they cannot be written before it stops
    spill = store.spill_path
    assert spill.exists() and spill.stat().st_mode & 0o777 == 0o600
    assert "will be written when it opens again" in caplog.text
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    # A line that is not a log row, and a row twice (a store that closed mid-way), are passed
    # over.
    first = spill.read_text(encoding="utf-8").splitlines()[0]
    with spill.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"insert": "INSERT INTO keys (id) VALUES (?)", "row": ["x"]}) + "\n")
        fh.write(first + "\n")
    with SQLiteStore(path) as reopened:
        assert {d["id"] for d in reopened.decisions()} == {r.id for r in waiting}
        assert [e["id"] for e in reopened.requests(limit=5)[0]] == [logged.id]
    assert not spill.exists() and "wrote 4 record(s) kept at the last close (2 passed over)" \
        in caplog.text
    with SQLiteStore(path) as again:  # nothing is written twice
        assert len(again.decisions()) == 3


def test_a_torn_line_in_the_spill_file_keeps_none_of_the_others_from_being_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash or a full disk can cut an append to the spill file short: the records around
    the torn line are still written, the next spill starts a line of its own, and the torn
    one is passed over, by line number."""
    path = tmp_path / "s.db"
    first, second = [record() for _ in range(2)], [record() for _ in range(2)]
    store = SQLiteStore(path).open()
    with full_disk(store):
        for r in first:
            store.append_lazy(r)
        store.close()
    spill = store.spill_path
    whole = spill.read_text(encoding="utf-8")
    spill.write_text(whole + whole.splitlines()[0][:40], encoding="utf-8")  # cut short
    store = SQLiteStore(path)
    store._take_up_spilled = lambda conn: None  # type: ignore[method-assign]
    store.open()  # (a start that does not get as far as writing them)
    with full_disk(store):
        for r in second:
            store.append_lazy(r)
        store.close()
    assert len(spill.read_text(encoding="utf-8").splitlines()) == 5
    with SQLiteStore(path) as reopened:
        assert {d["id"] for d in reopened.decisions()} == {r.id for r in first + second}
    assert not spill.exists()
    assert f"passed over line(s) 3 of {spill}: not whole records" in caplog.text
    assert "wrote 4 record(s) kept at the last close (1 passed over)" in caplog.text


_CRASHING_WRITER = """
import json, sys, time
from switchpoint.governance.ledger import LedgerRecord
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore
from tests.fakes.full_disk import full_disk

path, ids = sys.argv[1], json.loads(sys.argv[2])
store = SQLiteStore(path).open()
with full_disk(store):
    for id_ in ids["decisions"]:
        store.append_lazy(DecisionRecord(
            id=id_, ts=time.time(), selected_model="a", cluster_id=1, cost_weight=0.5,
            candidates=["a"], cache_hit=False, routing_ms=0.1, embedding_ms=1.0,
            policy="cluster", weights_id="w1", expected_error=0.1, cost_adjusted_score=0.2))
    store.append_lazy(LedgerRecord(ts=time.time(), reservation_id=ids["spend"], kind="reserve",
                                   amount_usd=0.25))
    done = store.append(RequestRecord(
        id=ids["request"], ts=time.time(), requested_model="auto", status="ok", http_status=200,
        pin_state="fresh", stream=False, latency_ms=1.0), keep_trying=True)
    try:
        done.result(timeout=10)
    except Exception:
        pass
    while len(store._retry) < len(ids["decisions"]) + 2:
        time.sleep(0.01)
    print("kept", flush=True)
    time.sleep(60)  # killed here, the database still refusing
"""


def test_records_waiting_for_a_refusing_database_survive_a_crash(tmp_path: Path) -> None:
    """Records the database refused wait in memory to be tried again; a crash (SIGKILL)
    during the outage must not lose them: they are on disk beside the database the moment
    they are kept, and written at the next open."""
    path = tmp_path / "s.db"
    ids = {"decisions": [uuid.uuid4().hex for _ in range(3)], "request": uuid.uuid4().hex,
           "spend": uuid.uuid4().hex}
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(path), json.dumps(ids)], cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "kept", "the writer did not keep its records"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    with SQLiteStore(path) as reopened:
        assert {d["id"] for d in reopened.decisions()} == set(ids["decisions"])
        assert [e["id"] for e in reopened.requests()[0]] == [ids["request"]]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT reservation_id FROM spend").fetchall() == [(ids["spend"],)]
    assert not SQLiteStore(path).spill_path.exists()


def test_kept_records_leave_the_spill_file_once_the_database_takes_writes_again(
        tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        with full_disk(store) as disk:
            late = record()
            store.append_lazy(late)
            deadline = time.monotonic() + 10
            while not store._retry:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert late.id in store.spill_path.read_text(encoding="utf-8")
            disk.full = False
            store.append(record()).result(timeout=10)  # writes go through again
            while store.spill_path.exists():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert late.id in {d["id"] for d in store.decisions()}


def test_a_ledger_entry_written_before_a_crash_is_not_charged_twice_from_the_spill_file(
        tmp_path: Path) -> None:
    """The writer writes what it kept, then removes the spill file: a crash in between
    leaves entries in the file that are in the database too. The spend ledger has no key to
    refuse a second copy; an entry just like one there is passed over."""
    path = tmp_path / "s.db"
    written = LedgerRecord(ts=time.time(), reservation_id="r1", kind="reserve", amount_usd=0.5)
    fresh = replace(written, kind="settle", amount_usd=0.4)
    with SQLiteStore(path) as store:
        store.append(written).result(timeout=10)
        spill = store.spill_path
    spill.write_text("".join(json.dumps({"insert": r.insert, "row": list(r.row())}) + "\n"
                             for r in (written, written, fresh)), encoding="utf-8")
    with SQLiteStore(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT kind, amount_usd FROM spend ORDER BY seq").fetchall() == [
            ("reserve", 0.5), ("settle", 0.4)]


def test_kept_records_the_spill_file_refused_too_are_added_again_at_close(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the spill file may refuse them as well: that is logged once, they wait
    in memory, and close adds them all again; one written twice is written once at open."""
    path = tmp_path / "s.db"
    waiting = [record() for _ in range(2)]
    store = SQLiteStore(path).open()

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with full_disk(store):
        monkeypatch.setattr("switchpoint.store.sqlite.os.fsync", no_space)
        for r in waiting:
            store.append_lazy(r)
        _wait_retried(store, len(waiting))
        assert caplog.text.count("could not be kept in") == 1
        assert "a crash before the database takes writes again loses them" in caplog.text
        monkeypatch.undo()  # the disk has room for the spill file again, not the database
        store.close()
    assert "will be written when it opens again" in caplog.text
    with SQLiteStore(path) as reopened:
        assert sorted(d["id"] for d in reopened.decisions()) == sorted(r.id for r in waiting)


def _wait_retried(store: SQLiteStore, count: int) -> None:
    """Wait (up to 10 s) until ``count`` records the database refused wait to be tried again."""
    deadline = time.monotonic() + 10
    while len(store._retry) < count:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _pending(decision_id: str, created: float | None = None) -> PendingRecord:
    return PendingRecord(PendingDecision(
        decision_id=decision_id, tenant="default", chosen="a", candidates=("a", "b"),
        created=time.time() if created is None else created), "w1")


def test_pending_rows_let_go_of_do_not_come_back_from_the_spill_file(tmp_path: Path) -> None:
    """The decisions let go of are deleted by id (the rule of the decisions open to feedback,
    shared by the tenants): refused, that deletion waits with the rows in the spill file, and
    the rows it names, in the file or in the database before it, stay deleted when the file is
    written, at a start too."""
    path = tmp_path / "s.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with SQLiteStore(path) as store:
            store.append(_pending("d0")).result()  # in the database before the outage
            assert store._conn is not None
            store._conn.execute("PRAGMA busy_timeout=20")  # (a lock is refused within 20 ms)
            holder.execute("BEGIN EXCLUSIVE")  # another process holds the database's lock
            for decision_id in ("p0", "p1", "p2"):
                store.append_lazy(_pending(decision_id))
            store.append_lazy(PendingForget(("d0", "p1")))
            store.append_lazy(_pending("p3"))
            _wait_retried(store, 5)
        # (closed while refused: the records wait in the spill file)
        spilled = store.spill_path.read_text(encoding="utf-8")
    finally:
        holder.close()
    assert [json.loads(line)["insert"] == PendingForget.insert
            for line in spilled.splitlines()] == [False] * 3 + [True, False]
    with SQLiteStore(path):  # the next start writes the file
        pass
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT decision_id FROM pending ORDER BY seq")] == [
            "p0", "p2", "p3"]


#: The pending cap as a spill file written before the cap counted rows holds it: it deleted
#: the rows that many positions behind the newest, fewer than that many once a decision
#: written again had left a gap.
_POSITIONAL_PENDING_CAP = ("DELETE FROM pending WHERE seq <= "
                           "(SELECT coalesce(max(seq), 0) FROM pending) - ?")


#: The pending cap as spill files written by the versions that capped the pending table by
#: counting its newest rows hold it (:func:`keep_newest`'s text).
_PENDING_CAP = (
    'DELETE FROM pending WHERE seq <= CASE WHEN (SELECT max(seq) FROM pending) - (SEL'
    'ECT min(seq) FROM pending) < ?1 THEN 0 ELSE coalesce((SELECT seq FROM pending OR'
    'DER BY seq DESC LIMIT 1 OFFSET ?1), 0) END'
)


@pytest.mark.parametrize("cap", [_POSITIONAL_PENDING_CAP, _PENDING_CAP],
                         ids=["positional", "counted"])
def test_a_spill_file_holding_the_cap_as_it_was_written_before_caps_its_rows_exactly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, cap: str) -> None:
    """A spill file an earlier version wrote holds the pending cap (no record writes one now:
    the rows let go of are deleted by id), in the positional form it had first or the counted
    one it had last: read, it still drops the file's rows before it past the cap, and runs as
    the cap runs now, keeping exactly the newest decisions (the positional form would have
    kept two of the three here, a decision written again having left a gap among them); the
    rows it dropped do not come back at the next start."""
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        for decision_id in ("d0", "d1"):  # written before the outage
            store.append(_pending(decision_id)).result()
        spill = store.spill_path
    at = time.time()
    spilled = [_pending(f"p{i}", created=at + i) for i in range(4)]
    again = _pending("p3", created=at + 10)  # written again: a new position, a gap
    last = _pending("p4", created=at + 11)
    lines = [json.dumps({"insert": r.insert, "row": list(r.row())}, separators=(",", ":"))
             for r in [*spilled, again]]
    lines.append(json.dumps({"insert": cap, "row": [3]},
                            separators=(",", ":")))
    lines.append(json.dumps({"insert": last.insert, "row": list(last.row())},
                            separators=(",", ":")))
    spill.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with SQLiteStore(path):
        pass
    assert not spill.exists()
    # p0 was dropped by the cap where it ran (passed over, not written); d0 and d1, in the
    # database before, are pruned; p1, p2 and p3 (written again) are the newest three.
    assert "wrote 5 record(s) kept at the last close (1 passed over)" in caplog.text
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT decision_id FROM pending ORDER BY seq")] == [
            "p1", "p2", "p3", "p4"]
        assert db.execute("SELECT ts FROM pending WHERE decision_id = 'p3'").fetchone() == (
            at + 10,)
    with SQLiteStore(path):  # nothing left to bring them back at the next start either
        pass
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT decision_id FROM pending ORDER BY seq")] == [
            "p1", "p2", "p3", "p4"]


def test_the_cap_keeps_the_text_spill_files_hold() -> None:
    """Spill files keep the cap's text and are read by it: a change to it must list the text
    it had among the earlier caps, or files written before would no longer be capped."""
    from switchpoint.store.spill import _CAPS, keep_newest
    assert keep_newest("pending") == _PENDING_CAP, (
        "keep_newest's text changed: add the text it had to _EARLIER_CAPS, then update this")
    assert _CAPS[_PENDING_CAP] == "pending" and _CAPS[_POSITIONAL_PENDING_CAP] == "pending"


def test_the_spill_file_stops_at_its_limit_and_what_it_could_not_take_is_still_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A long outage cannot grow the spill file past ``spill_limit``: past it the store says
    so (``spill_full``, for the gateway to turn new work away), what it refused meanwhile
    waits in memory, is added at close past the limit, and nothing is lost."""
    path = tmp_path / "s.db"
    waiting = [record() for _ in range(12)]
    store = SQLiteStore(path, spill_limit=2048).open()
    with full_disk(store):
        for r in waiting:
            store.append_lazy(r)
        _wait_retried(store, len(waiting))
        assert store.spill_path.stat().st_size <= 2048
        assert store.spill_full is not None and FULL in store.spill_full
        assert "s.db.unwritten.jsonl" in store.spill_full and "spill_max_mb" in store.spill_full
        assert caplog.text.count("the gateway turns new requests away") == 1
        store.close()  # still refused: every one is kept, past the limit
    with SQLiteStore(path) as reopened:
        assert {d["id"] for d in reopened.decisions(limit=100)} == {r.id for r in waiting}
        assert reopened.spill_full is None and not reopened.spill_path.exists()


def test_the_spill_files_reserve_takes_what_comes_after_it_says_it_is_full(
        tmp_path: Path) -> None:
    """With a reserve, ``spill_full`` (the gateway's signal to take no new requests) is set
    once the file reaches its limit less the reserve, and what arrives after (the records of
    requests already taken) still goes to the file, on disk at once, up to the limit."""
    store = SQLiteStore(tmp_path / "s.db", spill_limit=4096, spill_reserve=2048).open()
    try:
        with full_disk(store):
            count = 0
            while store.spill_full is None:
                assert count < 50, "the spill file never filled"
                store.append_lazy(record())
                count += 1
                _wait_retried(store, count)
            assert store.spill_path.stat().st_size <= 4096 - 2048 + 400  # (one record past)
            assert "of which 2048 bytes are kept for requests in flight" in store.spill_full
            late = [record() for _ in range(3)]  # in flight when the door closed
            for r in late:
                store.append_lazy(r)
            _wait_retried(store, count + len(late))
            text = store.spill_path.read_text(encoding="utf-8")
            assert all(r.id in text for r in late)  # on disk, not in memory only
            assert store.spill_path.stat().st_size <= 4096
    finally:
        store.close()
    for bad in (4096, -1, True):
        with pytest.raises(ValueError, match="spill_reserve"):
            SQLiteStore(tmp_path / "t.db", spill_limit=4096, spill_reserve=bad)


def test_the_spill_reserve_holds_one_request_per_connection_within_half_the_file() -> None:
    from switchpoint.store.sqlite import SPILL_PER_REQUEST, spill_reserve, spill_shortfall

    limit = 64 * 2**20
    assert spill_reserve(limit, 1000) == 1000 * SPILL_PER_REQUEST
    assert spill_shortfall(limit, 1000) is None
    assert spill_reserve(limit, 10_000) == limit // 2
    problem = spill_shortfall(limit, 10_000)
    assert problem is not None and "server.max_connections (10000)" in problem
    assert "raise spill_max_mb" in problem


def test_a_full_spill_file_clears_once_the_database_takes_writes_again(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db", spill_limit=1024) as store:
        waiting = [record() for _ in range(6)]
        with full_disk(store) as disk:
            for r in waiting:
                store.append_lazy(r)
            deadline = time.monotonic() + 10
            while store.spill_full is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            disk.full = False
            store.append(record()).result(timeout=10)  # a write goes through again
            while store.spill_full is not None or store.spill_path.exists():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert {r.id for r in waiting} <= {d["id"] for d in store.decisions(limit=100)}


def test_a_prune_beside_a_running_store_charges_its_kept_records_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``switchpoint prune`` beside a running store that is no service (a command holding no
    lock): the prune writes the spill file and removes it, while that store still holds the
    same records in memory and writes them once the database takes writes again. A spend
    entry, which no key refuses twice, was charged twice; now the store passes over what is
    already there, as a take-up of the file does."""
    from switchpoint.store.retention import prune
    from tests.fakes.held_lock import short_lock_waits

    short_lock_waits(monkeypatch)  # the store tries its records again 1.5 s after, not 5 s
    path = tmp_path / "s.db"
    kept = [LedgerRecord(ts=time.time(), reservation_id=f"r{i}", kind="reserve",
                         amount_usd=0.5) for i in range(2)]
    with SQLiteStore(path) as store:
        assert store._conn is not None
        store._conn.execute("PRAGMA busy_timeout=20")  # (a lock is refused within 20 ms)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
        try:
            store.append_lazy(kept[0])
            refused = store.append(kept[1], keep_trying=True)
            assert isinstance(refused.exception(timeout=10), StoreError)
            assert store.spill_path.exists()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        prune(path, time.time() - 86_400)  # before the store tries its records again
        deadline = time.monotonic() + 30
        while store.failing is not None or store.spill_path.exists():
            assert time.monotonic() < deadline, "the store never wrote what it kept"
            time.sleep(0.05)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT reservation_id FROM spend ORDER BY seq").fetchall() == [
            ("r0",), ("r1",)]


def test_two_openers_of_an_old_store_at_once_both_open_it_upgraded(tmp_path: Path) -> None:
    """The CLI and the service open a store of the first schema at the same moment: one
    upgrades it, the other waits for that and finds it up to date; neither fails, and what the
    file held is still there."""
    from switchpoint.store.logs import _COLUMNS
    from switchpoint.store.migrations import MIGRATIONS
    from switchpoint.store.sqlite import SCHEMA_VERSION

    v1 = _COLUMNS[:13]  # the columns of version 1
    for attempt in range(25):
        path = tmp_path / f"{attempt}" / "switchpoint.db"
        path.parent.mkdir(mode=0o700)
        old = sqlite3.connect(path, isolation_level=None)
        old.executescript(f"BEGIN; {MIGRATIONS[1]} PRAGMA user_version=1; COMMIT;")
        rec = record()
        old.execute(f"INSERT INTO decisions ({', '.join(v1)}) "
                    f"VALUES ({', '.join('?' * len(v1))})", rec.row()[:13])
        old.close()
        path.chmod(0o600)
        seen = at_once(partial(_decision_ids, path))
        assert seen == [[rec.id], [rec.id]], (attempt, seen)
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION



def _decision_ids(path: Path) -> list[str]:
    with SQLiteStore(path) as store:
        return [d["id"] for d in store.decisions()]


def _scanned(path: Path, tenant: str | None = None) -> dict[str, Any]:
    """The stats' figures as a scan of every logged row (``tenant``: of that tenant's rows)
    gives them."""
    from switchpoint.store.sqlite import of_tenant

    where, args = of_tenant("tenant", tenant)
    where = "1" + where
    db = sqlite3.connect(path)
    try:
        return {
            "requests": db.execute(
                "SELECT count(*), coalesce(sum(escalated), 0), coalesce(sum(prompt_tokens), 0),"
                " coalesce(sum(cost_usd IS NULL AND model IS NOT NULL), 0) FROM requests "
                f"WHERE {where}", args).fetchone(),
            "by_status": dict(db.execute(
                f"SELECT status, count(*) FROM requests WHERE {where} GROUP BY 1", args)),
            "by_model": dict(db.execute(
                f"SELECT model, count(*) FROM requests WHERE model IS NOT NULL AND {where} "
                "GROUP BY 1", args)),
            "decisions": db.execute(
                f"SELECT count(*), coalesce(sum(cache_hit), 0) FROM decisions WHERE {where}",
                args).fetchone(),
            "by_selected": dict(db.execute(
                f"SELECT selected_model, count(*) FROM decisions WHERE {where} GROUP BY 1",
                args)),
            "by_cluster": {str(k): v for k, v in db.execute(
                "SELECT cluster_id, count(*) FROM decisions WHERE weights_id = 'w1' "
                f"AND {where} GROUP BY 1", args)},
            "cost": _usd_of(db.execute(f"SELECT model, cost_usd FROM requests WHERE {where}",
                                       args).fetchall())}
    finally:
        db.close()


def _usd_of(rows: list[tuple[str | None, float | None]]) -> dict[str | None, float]:
    """The logged costs summed in whole nano-dollars, by model (None: all), in dollars."""
    nano: dict[str | None, int] = {None: 0}
    for model, cost in rows:
        nano[None] += _nano(cost)
        if model is not None:
            nano[model] = nano.get(model, 0) + _nano(cost)
    return {m: usd(v / 1e9) for m, v in nano.items()}


def _reported(store: SQLiteStore, tenant: str | None = None) -> dict[str, Any]:
    r, d = store.request_stats(tenant=tenant), store.decision_stats("w1", tenant=tenant)
    return {"requests": (r["total"], r["escalations"], r["prompt_tokens"],
                         r["cost_unknown_requests"]),
            "by_status": r["by_status"],
            "by_model": {m: v["requests"] for m, v in r["by_model"].items()},
            "decisions": (d["total"], d["cache_hits"]), "by_selected": d["by_model"],
            "by_cluster": d["by_cluster"],
            "cost": {None: r["cost_usd"],
                     **{m: v["cost_usd"] for m, v in r["by_model"].items()}}}


def test_stats_give_what_a_scan_gives_as_rows_are_logged_pruned_and_upgraded(
        tmp_path: Path) -> None:
    from switchpoint.store.retention import prune

    path = tmp_path / "switchpoint.db"
    old = time.time() - 7 * 86_400
    with SQLiteStore(path) as store:
        for n in range(30):
            ts = old if n % 3 == 0 else time.time()
            store.append(replace(request(("ok", "error", "refused")[n % 3],
                                         model=None if n % 5 == 0 else f"m{n % 4}",
                                         cost=None if n % 7 == 0 else 0.1 / (n + 3) + n,
                                         tried=("a", "m") if n % 2 else ("m",)), ts=ts)).result()
            store.append(replace(record(f"m{n % 3}", cluster=n % 4, cache_hit=n % 2 == 0,
                                        weights_id="w1" if n % 6 else "w2"), ts=ts)).result()
        assert _reported(store) == _scanned(path) and _reported(store)["requests"][0] == 30
    report = prune(path, time.time() - 86_400)
    assert report.deleted["requests"] == 10 and report.deleted["decisions"] == 10
    with SQLiteStore(path) as store:
        assert _reported(store) == _scanned(path) and _reported(store)["requests"][0] == 20
        assert store.request_stats()["by_status"] == {"error": 10, "refused": 10}
    # A file written before the totals were kept gains them from its rows when it opens.
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE stat_counts; DROP TRIGGER requests_counted; "
                     "DROP TRIGGER requests_uncounted; DROP TRIGGER decisions_counted; "
                     "DROP TRIGGER decisions_uncounted; ALTER TABLE compares DROP COLUMN "
                     "details; " + _SINCE_23  # (what later versions added)
                     + "PRAGMA user_version = 12;")
    db.close()
    with SQLiteStore(path) as store:
        assert _reported(store) == _scanned(path) and _reported(store)["decisions"][0] == 20
    # A file whose totals were kept with float costs (drifted from the rows) has them made
    # again, exact, when it opens.
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE stat_counts; DROP TRIGGER requests_counted; "
                     "DROP TRIGGER requests_uncounted; DROP TRIGGER decisions_counted; "
                     "DROP TRIGGER decisions_uncounted; ALTER TABLE compares DROP COLUMN "
                     "details; "
                     "CREATE TABLE stat_counts (dim TEXT NOT NULL, key TEXT NOT NULL, "
                     "sub TEXT NOT NULL, n INTEGER NOT NULL, cost REAL NOT NULL, "
                     "cost_unknown INTEGER NOT NULL, escalated INTEGER NOT NULL, "
                     "prompt INTEGER NOT NULL, completion INTEGER NOT NULL, "
                     "streams INTEGER NOT NULL, cache_hits INTEGER NOT NULL, "
                     "PRIMARY KEY (dim, key, sub)); "
                     "INSERT INTO stat_counts VALUES ('requests', '', '', 3, -2.3e-9, 0, 0, 0, "
                     "0, 0, 0); " + _SINCE_23 + "PRAGMA user_version = 15;")
    db.close()
    with SQLiteStore(path) as store:
        assert _reported(store) == _scanned(path) and _reported(store)["requests"][0] == 20


def test_one_tenants_stats_are_kept_as_rows_are_logged_pruned_and_upgraded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's stats are totals the log keeps per tenant as rows are logged and pruned
    (reading them reads neither log), the figures a scan of its rows gives; a file of an
    earlier schema counts its rows into them once when it opens."""
    from switchpoint.store.retention import prune

    path = tmp_path / "switchpoint.db"
    old = time.time() - 7 * 86_400
    tenants = ("acme", None, "default", "zeta", "acme")
    with SQLiteStore(path) as store:
        for n in range(40):
            ts = old if n % 3 == 0 else time.time()
            tenant = tenants[n % 5]
            store.append(replace(request(("ok", "error", "refused")[n % 3],
                                         model=None if n % 4 == 0 else f"m{n % 3}",
                                         cost=None if n % 7 == 0 else 0.1 / (n + 3) + n),
                                 ts=ts, tenant=tenant)).result()
            store.append(replace(record(f"m{n % 2}", cluster=n % 4, cache_hit=n % 2 == 0,
                                        weights_id="w1" if n % 6 else "w2"),
                                 ts=ts, tenant=tenant)).result()
        statements: list[str] = []
        reader = SQLiteStore._read

        def traced(self: SQLiteStore) -> sqlite3.Connection:
            conn = reader(self)
            conn.set_trace_callback(statements.append)
            return conn

        monkeypatch.setattr(SQLiteStore, "_read", traced)
        for tenant in ("acme", "default", "zeta", "nobody"):
            assert _reported(store, tenant) == _scanned(path, tenant), tenant
        assert _reported(store, "acme")["requests"][0] == 16
        monkeypatch.undo()
        read = [s for s in statements if " FROM requests" in s or " FROM decisions" in s]
        assert statements and not read, read
    prune(path, time.time() - 86_400)
    with SQLiteStore(path) as store:
        assert _reported(store, "acme")["requests"][0] == 10
        for tenant in ("acme", "default", "zeta"):
            assert _reported(store, tenant) == _scanned(path, tenant), tenant
    # A file of the schema before the totals were kept per tenant counts its rows into them.
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE tenant_stat_counts; DROP TRIGGER requests_tenant_counted; "
                     "DROP TRIGGER requests_tenant_uncounted; "
                     "DROP TRIGGER decisions_tenant_counted; "
                     "DROP TRIGGER decisions_tenant_uncounted; " + _SINCE_23
                     + "PRAGMA user_version = 18;")
    db.close()
    with SQLiteStore(path) as store:
        for tenant in ("acme", "default", "zeta"):
            assert _reported(store, tenant) == _scanned(path, tenant), tenant
        assert _reported(store) == _scanned(path)


def test_the_stats_of_one_tenant_are_those_of_its_rows(tmp_path: Path) -> None:
    """With ``tenant``, the stats count that tenant's logged rows alone, as the totals count
    every row (``default``: the rows that name no tenant too); the tenants' figures add up to
    the whole log's. A tenant name is checked as everywhere (non-empty, bounded)."""
    tenants = ("acme", "zeta", None, "default")
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        for n in range(24):
            tenant = tenants[n % 4]
            store.append(replace(request(("ok", "error", "refused")[n % 3],
                                         model=None if n % 5 == 0 else f"m{n % 3}",
                                         cost=None if n % 7 == 0 else 0.01 * n),
                                 tenant=tenant)).result()
            if n % 2:  # a decision for every other request
                store.append(replace(record(f"m{n % 3}", cluster=n % 4, cache_hit=n % 3 == 0),
                                     tenant=tenant)).result()
        whole_r, whole_d = store.request_stats(), store.decision_stats("w1")
        parts = {t: (store.request_stats(tenant=t), store.decision_stats("w1", tenant=t))
                 for t in ("acme", "zeta", "default")}
        with pytest.raises(InvalidInputError):
            store.request_stats(tenant=" ")
        with pytest.raises(InvalidInputError):
            store.decision_stats(tenant="x" * 201)
        assert store.request_stats(tenant="nobody")["total"] == 0
    assert [parts[t][0]["total"] for t in parts] == [6, 6, 12]
    assert [parts[t][1]["total"] for t in parts] == [0, 6, 6]  # odd n: zeta and None/default
    for name in ("total", "ok", "refused", "errors", "escalations", "prompt_tokens",
                 "cost_unknown_requests"):
        assert sum(p[0][name] for p in parts.values()) == whole_r[name], name
    assert round(sum(p[0]["cost_usd"] for p in parts.values()), 9) == whole_r["cost_usd"]
    for model, figures in whole_r["by_model"].items():
        assert sum(p[0]["by_model"].get(model, {}).get("requests", 0)
                   for p in parts.values()) == figures["requests"], model
    for name in ("total", "cache_hits"):
        assert sum(p[1][name] for p in parts.values()) == whole_d[name], name
    for field in ("by_model", "by_cluster", "by_policy"):
        for key, count in whole_d[field].items():
            assert sum(p[1][field].get(key, 0) for p in parts.values()) == count, (field, key)


def _nano(cost: float | None) -> int:
    """A logged cost in the unit the stats keep totals in: whole nano-dollars (half away from
    zero, as SQLite rounds)."""
    from decimal import ROUND_HALF_UP, Decimal

    return 0 if cost is None else int(Decimal(cost * 1e9).quantize(Decimal(1), ROUND_HALF_UP))


def test_one_tenants_stats_read_a_stopped_stores_file_and_leave_it_as_it_was(
        tmp_path: Path) -> None:
    """A store not opened reads one tenant's stats from a file with no side file beside it
    (as a stopped service leaves it), as the store that wrote them does, and leaves the
    folder as it found it: no -wal or -shm, the file's bytes unchanged. The reading
    connection refuses writes; the tenant's totals go in a temporary table of its own."""
    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        for n in range(6):
            tenant = ("acme", None)[n % 2]
            store.append(replace(request("ok", model="m1", cost=0.01), tenant=tenant)).result()
            store.append(replace(record("m1", cluster=n % 2), tenant=tenant)).result()
        written = {t: _reported(store, t) for t in ("acme", "default")}
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert list(before) == ["switchpoint.db"]
    reader = SQLiteStore(path)
    read = {t: _reported(reader, t) for t in ("acme", "default")}
    assert read == written
    assert read["acme"]["decisions"] == (3, 0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _copied_but_the_shm(store: SQLiteStore, folder: Path) -> None:
    """``store``'s file and its -wal copied into ``folder`` as they are while it runs, the
    -shm left out (as a copy of a running service's data_dir, or a crash that took the
    -shm, leaves them)."""
    folder.mkdir()
    for suffix in ("", "-wal"):
        (folder / (store.path.name + suffix)).write_bytes(
            Path(f"{store.path}{suffix}").read_bytes())


def test_a_store_with_its_log_and_no_shm_is_read_with_the_log_and_nothing_made_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped store's file with its -wal beside it and no -shm: SQLite, reading it even
    read-only (``mode=ro``), made a -shm in data_dir and left it there. The stats read what
    the log holds, the folder keeps the same files with the same bytes; past the bound on
    what is copied into memory to read it so, reading is refused saying why and what to do,
    and still nothing is made beside it."""
    from switchpoint.store import reading

    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        for n in range(4):
            store.append(request("ok", model=f"m{n % 2}", cost=0.01)).result()
            store.append(record("m1", cluster=n % 2)).result()
        written = _reported(store)
        copy = tmp_path / "copy"
        _copied_but_the_shm(store, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    assert sorted(before) == ["switchpoint.db", "switchpoint.db-wal"]
    alone = sqlite3.connect(f"{(copy / 'switchpoint.db').as_uri()}?mode=ro&immutable=1",
                            uri=True)
    try:  # (the file alone holds none of the rows: they are in the log)
        assert alone.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        alone.close()
    reader = SQLiteStore(copy / "switchpoint.db")
    assert _reported(reader) == written
    assert written["requests"][0] == 4
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    monkeypatch.setattr(reading, "MAX_UPGRADE_COPY_BYTES", 1024)
    with pytest.raises(StoreError) as refused:
        reader.request_stats()
    said = str(refused.value)
    assert "its -wal holds writes not yet in the file and no -shm is beside it" in said, said
    assert ("start the service once (or run a command that writes the file) to take the log "
            "into the file, then run this command again") in said, said
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before



def test_a_store_with_its_log_and_no_shm_is_copied_once_while_neither_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read of a file with a lone log copied the file and its log into memory again (a
    report of a 62 MiB copy spent 2 s of its 3 s so): the copy is kept while neither file
    changes and its readers share it; a file changed since is copied again, and read as it
    is now."""
    from switchpoint.store import reading

    copies: list[object] = []
    read_copied = reading._read_copied

    def counted(*args: Any) -> Any:
        copies.append(args[0])
        return read_copied(*args)

    monkeypatch.setattr(reading, "_read_copied", counted)
    with SQLiteStore(tmp_path / "switchpoint.db") as store:
        store.append(request("ok", model="m0", cost=0.01)).result()
        copy = tmp_path / "copy"
        _copied_but_the_shm(store, copy)
        store.append(request("ok", model="m1", cost=0.01)).result()
        later = tmp_path / "later"
        _copied_but_the_shm(store, later)
    reader = SQLiteStore(copy / "switchpoint.db")
    assert [reader.request_stats()["total"] for _ in range(3)] == [1, 1, 1]
    assert len(copies) == 1, copies
    for suffix in ("", "-wal"):  # (the file and its log replaced by later ones)
        (later / f"switchpoint.db{suffix}").replace(copy / f"switchpoint.db{suffix}")
    assert reader.request_stats()["total"] == 2
    assert len(copies) == 2, copies
    assert sorted(p.name for p in copy.iterdir()) == ["switchpoint.db", "switchpoint.db-wal"]

def test_cost_totals_stay_exact_through_many_odd_costs_logged_and_pruned(
        tmp_path: Path) -> None:
    """The stats' cost totals are kept as each row is logged (added) and pruned (taken away):
    kept as float sums they drifted from what a scan of the log gives, and went below zero
    once everything was pruned. Kept in whole nano-dollars they equal a scan exactly."""
    import math
    import random

    from switchpoint.store.retention import prune

    rng = random.Random(7)
    path = tmp_path / "switchpoint.db"
    day = 86_400.0
    waves = 4
    logged: list[tuple[float, str, float | None]] = []  # (ts, model, cost)
    with SQLiteStore(path, synchronous="normal") as store:  # (durability is not tested)
        for n in range(800):
            wave = n % waves  # wave w is w + 1 days old: each prune takes one wave
            ts = time.time() - (wave + 1) * day - 60
            magnitude = 10.0 ** rng.randint(-9, 5)  # nano-dollars to a hundred thousand
            cost = None if n % 11 == 0 else rng.random() * magnitude + rng.random() / 3
            model = f"m{n % 3}"
            logged.append((ts, model, cost))
            store.append(replace(request(model=model, cost=cost), ts=ts)).result()

    def scanned(kept: list[tuple[float, str, float | None]]) -> tuple[float, dict[str, float]]:
        by_model: dict[str, int] = {}
        for _, model, cost in kept:
            by_model[model] = by_model.get(model, 0) + _nano(cost)
        total = sum(by_model.values())
        return (usd(total / 1e9),
                {m: usd(v / 1e9) for m, v in by_model.items()})

    for wave in range(waves, -1, -1):  # first as logged, then pruned a wave at a time
        cutoff = time.time() - (wave + 1) * day + 30 if wave < waves else 0.0
        if wave < waves:
            assert prune(path, cutoff).deleted["requests"] == 200
        kept = [row for row in logged if row[0] >= cutoff]
        with SQLiteStore(path) as store:
            stats = store.request_stats()
        total, by_model = scanned(kept)
        assert stats["total"] == len(kept)
        assert stats["cost_usd"] == total, (wave, stats["cost_usd"], total)
        assert {m: v["cost_usd"] for m, v in stats["by_model"].items()} == by_model, wave
        # ... and within half a nano-dollar per request of the costs' exact sum.
        exact = math.fsum(c for _, _, c in kept if c is not None)
        assert abs(stats["cost_usd"] - exact) <= 0.5e-9 * len(kept) + 0.5e-8
    assert stats["total"] == 0 and stats["by_model"] == {}
    assert stats["cost_usd"] == 0.0 and math.copysign(1.0, stats["cost_usd"]) == 1.0
    db = sqlite3.connect(path)
    try:  # nothing is left in the kept totals either, not even a rounding error
        assert db.execute("SELECT count(*) FROM stat_counts WHERE dim LIKE 'request%' AND "
                          "(n != 0 OR cost_nano != 0)").fetchone() == (0,)
    finally:
        db.close()


def test_prunes_keep_their_newest_rows_and_the_latest_cutoff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchpoint.store import retention
    from switchpoint.store.sqlite import PRUNES_KEPT

    monkeypatch.setattr(retention, "BATCH", 1)  # one prune row per deleted row
    path = tmp_path / "switchpoint.db"
    day = 86_400.0
    with SQLiteStore(path) as store:
        for _ in range(100):
            store.append(replace(request(), ts=time.time() - 2 * day)).result()
    late = time.time() - day
    assert retention.prune(path, late).deleted["requests"] == 100
    with SQLiteStore(path) as store:  # rows older than an earlier cutoff, pruned later
        for _ in range(100):
            store.append(replace(request(), ts=time.time() - 10 * day)).result()
        kept = store.append(replace(request(), ts=time.time() - day / 2))
        kept.result()
    assert retention.prune(path, time.time() - 5 * day).deleted["requests"] == 100
    db = sqlite3.connect(path)
    try:
        count, latest, newest = db.execute(
            "SELECT count(*), max(cutoff), max(seq) FROM prunes").fetchone()
        assert count == PRUNES_KEPT + 1 and latest == late and newest >= 200
        # The triggers still read the latest cutoff: a row newer than it stays.
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM requests WHERE ts > ?", (late,))
        with pytest.raises(sqlite3.IntegrityError, match="latest cutoff stay"):
            db.execute("DELETE FROM prunes WHERE cutoff = ?", (late,))
        with pytest.raises(sqlite3.IntegrityError, match="latest cutoff stay"):
            db.execute("DELETE FROM prunes WHERE seq = ?", (newest,))
    finally:
        db.close()


def test_prunes_keep_exactly_their_newest_rows_where_positions_left_gaps(
        tmp_path: Path) -> None:
    """The prunes table keeps its newest PRUNES_KEPT rows counted, not those within as many
    positions of the newest (fewer where rows between were deleted), and the one with the
    latest cutoff behind them."""
    from switchpoint.store import retention
    from switchpoint.store.sqlite import PRUNES_KEPT

    path = tmp_path / "switchpoint.db"
    day = 86_400.0
    now = time.time()
    with SQLiteStore(path) as store:
        store.append(replace(request(), ts=now - 6 * day)).result()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for i in range(PRUNES_KEPT + 40):  # the third holds the latest cutoff
            cutoff = now - 2 * day if i == 2 else now - 10 * day + i
            db.execute("INSERT INTO prunes (ts, cutoff) VALUES (?, ?)", (now - day, cutoff))
        seqs = [seq for (seq,) in db.execute("SELECT seq FROM prunes ORDER BY seq")]
        latest = seqs[2]
        gaps = seqs[-50:-1:3]  # among the newest positions, not the newest row
        db.executemany("DELETE FROM prunes WHERE seq = ?", [(seq,) for seq in gaps])
        left = [seq for seq in seqs if seq not in gaps]
    finally:
        db.close()
    assert retention.prune(path, now - 5 * day).deleted["requests"] == 1
    db = sqlite3.connect(path)
    try:
        kept = [seq for (seq,) in db.execute("SELECT seq FROM prunes ORDER BY seq")]
        newest = max(kept)
        assert newest > max(left)  # the prune's own row
        assert kept == [latest, *[*left, newest][-PRUNES_KEPT:]]
        assert db.execute("SELECT max(cutoff) FROM prunes").fetchone() == (now - 2 * day,)
    finally:
        db.close()


def test_a_prune_takes_a_cutoff_less_than_a_second_old_and_refuses_one_ahead(
        tmp_path: Path) -> None:
    from switchpoint.store.retention import prune

    path = tmp_path / "switchpoint.db"
    with SQLiteStore(path) as store:
        store.append(request()).result()
    deleted = 0
    for _ in range(20):  # (whole-second clocks refused most of these as "in the future")
        deleted += prune(path, time.time() - 0.01).deleted["requests"]
        time.sleep(0.02)
    assert deleted == 1
    with pytest.raises(StoreError, match=r"cutoff is \d+\.\d+ s in the future.*age > 0"):
        prune(path, time.time() + 5)
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="cannot be in the future"):
            db.execute("INSERT INTO prunes (ts, cutoff) VALUES (?, ?)",
                       (time.time(), time.time() + 1))
    finally:
        db.close()


def test_an_older_file_holding_absurd_costs_still_opens_and_gives_its_stats(
        tmp_path: Path) -> None:
    """Costs an older version could log (a price of 1e300 per million tokens, an infinite one)
    overflow whole nano-dollar totals: the file still opens (its totals counted once), the
    stats are read, and its rows can still be logged beside and pruned."""
    from switchpoint.store.retention import prune

    path = tmp_path / "switchpoint.db"
    old = time.time() - 7 * 86_400
    with SQLiteStore(path) as store:
        for cost in (1e300, 1e300, float("inf")):
            store.append(replace(request(cost=cost), ts=old)).result()
        store.append(request(cost=0.25)).result()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE stat_counts; DROP TRIGGER requests_counted; "
                     "DROP TRIGGER requests_uncounted; DROP TRIGGER decisions_counted; "
                     "DROP TRIGGER decisions_uncounted; ALTER TABLE compares DROP COLUMN "
                     "details; " + _SINCE_23 + "PRAGMA user_version = 15;")
    db.close()
    with SQLiteStore(path) as store:
        stats = store.request_stats()
        assert stats["total"] == 4 and stats["prompt_tokens"] == 40
        # Out of range: not a clamped $9.2 billion (nor wrapped round to a negative sum), but
        # no figure, and a warning saying why.
        assert stats["cost_usd"] is None
        assert [w.split(":")[0] for w in stats["warnings"]] == ["by_model.m.cost_usd",
                                                                "cost_usd"]
        store.append(request(cost=0.5)).result()
        assert store.request_stats()["total"] == 5
    assert prune(path, time.time() - 86_400).deleted["requests"] == 3
    with SQLiteStore(path) as store:
        stats = store.request_stats()
        assert stats["total"] == 2 and stats["prompt_tokens"] == 20


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_the_store_loses_nothing_logged_after(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    """The file removed (``rm``) or replaced (a backup moved over it) while the store runs:
    its commits went on into the file no longer at the path, answered as written and lost
    with it at the next start. Now the store counts as refusing writes, says why and that a
    restart is needed, and what it logs waits in the spill file, written by that restart."""
    path = tmp_path / "s.db"
    before, after = record(), record()
    store = SQLiteStore(path).open()
    try:
        store.append(before).result(timeout=10)
        backup = tmp_path / "backup.db"
        src, dst = sqlite3.connect(path), sqlite3.connect(backup)
        src.backup(dst)  # (a backup in rollback-journal mode: one file, all in it)
        src.close()
        dst.close()
        for name in ("s.db", "s.db-wal", "s.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        if how == "replaced":
            os.replace(backup, path)
        with pytest.raises(StoreError, match=f"s.db was {how}"):
            store.append(after, keep_trying=True).result(timeout=10)
        assert store.failing is not None and "restart" in store.failing
        assert after.id in store.spill_path.read_text(encoding="utf-8")
        assert "then restart the service" in caplog.text
    finally:
        store.close()
    with SQLiteStore(path) as reopened:
        ids = {d["id"] for d in reopened.decisions(limit=10)}
    assert after.id in ids and (how == "deleted") == (before.id not in ids)


def test_a_sqlite_without_json_functions_is_refused_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hourly sums are kept by triggers that read JSON: a SQLite without its JSON functions
    would fail every write, so the store refuses to open on one and says what to do. (Such a
    build is stood in for by denying the functions to the connection.)"""
    real_connect = sqlite3.connect

    def without_json(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_authorizer(lambda action, _, name, *__: sqlite3.SQLITE_DENY
                            if action == sqlite3.SQLITE_FUNCTION and str(name).startswith("json")
                            else sqlite3.SQLITE_OK)
        return conn

    monkeypatch.setattr("switchpoint.store.sqlite.sqlite3.connect", without_json)
    store = SQLiteStore(tmp_path / "switchpoint.db")
    with pytest.raises(StoreError, match=r"built without its JSON functions.*SQLite 3\.38"):
        store.open()
    monkeypatch.undo()
    with SQLiteStore(tmp_path / "switchpoint.db") as store:  # a full SQLite opens it
        store.append(record()).result()
        assert store.decision_stats()["total"] == 1


def _backup(path: Path, to: Path) -> None:
    """A copy of the database ``path`` as it is now, in one file (SQLite's backup API)."""
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.mark.parametrize("how", ["replaced", "deleted_then_restored", "replaced_with_its_log",
                                 "replaced_then_stopped"])
def test_the_log_of_a_database_file_gone_under_the_store_is_not_replayed_into_the_next(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    """``s.db`` replaced alone (a backup moved over it) or deleted alone while the store runs
    leaves the old file's ``-wal`` and ``-shm`` at the path: SQLite took that log as the next
    file's own and replayed the old file's last commits into the backup put there, over what
    the backup holds. The store now lets go of the old file and removes its side files; a
    restore's own ``-wal`` is kept (also at a stop that comes before any write)."""
    path = tmp_path / "s.db"
    before, middle, after = record(), record(), record()
    store = SQLiteStore(path).open()
    try:
        store.append(before).result(timeout=10)
        _backup(path, tmp_path / "backup.db")
        store.append(middle).result(timeout=10)  # in the -wal only: no checkpoint yet
        assert Path(f"{path}-wal").stat().st_size > 0
        backup = tmp_path / "backup.db"
        restored_log = None
        if how == "replaced_with_its_log":  # a backup with a -wal of its own, moved over all
            kept = SQLiteStore(backup).open()
            restored_log = record()
            kept.append(restored_log).result(timeout=10)
            for suffix in ("", "-wal", "-shm"):
                os.link(f"{backup}{suffix}", tmp_path / f"copy{suffix}")
            kept.close()  # (checkpoints and removes its own: the links keep the files)
            for suffix in ("", "-wal", "-shm"):
                os.replace(tmp_path / f"copy{suffix}", f"{path}{suffix}")
        elif how.startswith("replaced"):
            os.replace(backup, path)  # the old -wal and -shm stay at the path
        else:
            path.unlink()
        if how != "replaced_then_stopped":
            with pytest.raises(StoreError, match=r"s\.db was (replaced|deleted)"):
                store.append(after, keep_trying=True).result(timeout=10)
        if how == "deleted_then_restored":
            os.replace(backup, path)
    finally:
        store.close()
    with SQLiteStore(path) as reopened:
        ids = {d["id"] for d in reopened.decisions(limit=10)}
    expected = {before.id} | ({after.id} if how != "replaced_then_stopped" else set()) | (
        {restored_log.id} if restored_log else set())
    assert ids == expected, (ids, middle.id)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.parametrize("side", ["-wal", "-shm"])
def test_a_wal_or_shm_deleted_under_the_store_is_said_so_and_loses_nothing(
        tmp_path: Path, side: str, caplog: pytest.LogCaptureFixture) -> None:
    """``s.db-wal`` (or ``-shm``) deleted alone while the store runs: its commits went on
    into a log no other connection (nor a start after a crash) sees. Now the store takes it as
    it takes the file deleted: it writes the log it has into the file, refuses writes, says
    so and that a restart is needed, and what it logs waits in the spill file."""
    path = tmp_path / "s.db"
    before, after = record(), record()
    store = SQLiteStore(path).open()
    try:
        store.append(before).result(timeout=10)
        Path(f"{path}{side}").unlink()
        with pytest.raises(StoreError, match=f"s.db had its {side} file deleted"):
            store.append(after, keep_trying=True).result(timeout=10)
        assert store.failing is not None and "restart" in store.failing
        assert after.id in store.spill_path.read_text(encoding="utf-8")
        with sqlite3.connect(path) as db:  # another connection sees what was written
            assert db.execute("SELECT id FROM decisions").fetchall() == [(before.id,)]
    finally:
        store.close()
    with SQLiteStore(path) as reopened:
        assert {d["id"] for d in reopened.decisions(limit=10)} == {before.id, after.id}


_WAL_DELETED_WRITER = """
import sys, time
from pathlib import Path
from switchpoint.store import DecisionRecord, SQLiteStore

path, ids, how = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
store = SQLiteStore(path).open()

def record(id_):
    return DecisionRecord(id=id_, ts=time.time(), selected_model="a", cluster_id=1,
                          cost_weight=0.5, candidates=["a"], cache_hit=False, routing_ms=0.1,
                          embedding_ms=1.0, policy="cluster", weights_id="w1",
                          expected_error=0.1, cost_adjusted_score=0.2)

store.append(record(ids[0])).result(timeout=10)
if how == "wal":
    Path(path + "-wal").unlink()
    try:
        store.append(record(ids[1]), keep_trying=True).result(timeout=10)
    except Exception:
        pass
elif how == "deleted_then_crash":  # a backup taken now; then the file deleted alone
    import sqlite3
    src, dst = sqlite3.connect(path), sqlite3.connect(path + ".backup")
    src.backup(dst)
    src.close()
    dst.close()
    store.append(record(ids[1])).result(timeout=10)  # in the old file's log alone
else:  # a backup taken now, moved over the file alone while the store is idle
    import sqlite3
    src, dst = sqlite3.connect(path), sqlite3.connect(path + ".backup")
    src.backup(dst)
    src.close()
    dst.close()
    store.append(record(ids[1])).result(timeout=10)  # in the old file's log alone
print("ready", flush=True)
time.sleep(60)  # killed here
"""


@pytest.mark.parametrize("how", ["wal", "replaced_idle", "deleted_then_crash"])
def test_a_file_of_the_store_gone_before_a_crash_loses_nothing_and_replays_nothing(
        tmp_path: Path, how: str) -> None:
    """A crash (SIGKILL) after ``s.db-wal`` was deleted: what was committed after (and before,
    not yet checkpointed) was in that deleted log, lost. Or after ``s.db`` was replaced alone
    while the store was idle: the old log was replayed into the file put there. Now the
    first is refused and kept in the spill file, written at the next open; and the old log
    is removed within a second of the file's leaving, before any write. Or after ``s.db`` was
    deleted alone, the crash coming before the store looked, and the old file then restored
    alone: the deleted file's log was replayed into it; now the next open removes that log
    (the store noted which file it belonged to)."""
    path = tmp_path / "s.db"
    ids = [uuid.uuid4().hex for _ in range(2)]
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _WAL_DELETED_WRITER, str(path), ",".join(ids), how], cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", "the writer did not start"
        if how == "replaced_idle":
            os.replace(f"{path}.backup", path)
            deadline = time.monotonic() + 5
            while Path(f"{path}-wal").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        elif how == "deleted_then_crash":  # a crash before the store sees it (within 1 s)
            path.unlink()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    if how == "deleted_then_crash":
        assert Path(f"{path}-wal").exists()  # the deleted file's log, still at the path
        os.replace(f"{path}.backup", path)  # the old file restored alone
    with SQLiteStore(path) as reopened:
        ids_now = {d["id"] for d in reopened.decisions(limit=10)}
    assert ids_now == (set(ids) if how == "wal" else {ids[0]})
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_the_stores_settings_refused_quote_the_value_as_json_writes_it(tmp_path: Path) -> None:
    from switchpoint.gateway.sessions import SQLitePinStore
    from switchpoint.learning.events import FeedbackEvent
    from switchpoint.learning.memory import DecisionMemory
    from switchpoint.store.learning import feedback_record
    from switchpoint.store.retention import cutoff_for

    path = tmp_path / "switchpoint.db"
    with pytest.raises(ValueError, match=r'^synchronous must be FULL, NORMAL or EXTRA, got "x"$'):
        SQLiteStore(path, synchronous="x")
    with pytest.raises(ValueError, match=r"spill_limit must be .*, got true$"):
        SQLiteStore(path, spill_limit=True)
    with pytest.raises(ValueError, match=r'spill_reserve must be .*, got "1"$'):
        SQLiteStore(path, spill_reserve=cast(int, "1"))
    with pytest.raises(ValueError, match=r'^synchronous must be .* or OFF, got "x\\u001b"$'):
        SQLitePinStore(tmp_path / "sessions.db", synchronous="x\x1b")
    with pytest.raises(ValueError, match=r'capacity must be an integer >= 0, got "3"$'):
        DecisionMemory(capacity=cast(int, "3"))
    with pytest.raises(ValueError, match=r"retention must be .*, got -1$"):
        cutoff_for(-1)
    event = FeedbackEvent(decision_id="d", model="m", quality=1.0)
    with pytest.raises(ValueError, match=r'^kind must be one of "decision", .*"[a-z]+", got "x"$'):
        feedback_record(event, "x", weights_id=None)
    assert not path.exists() and not (tmp_path / "sessions.db").exists()
