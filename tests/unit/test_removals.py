"""The journal of removals beside ``switchpoint.db`` (``switchpoint.removals.jsonl``): what
it keeps, what an opening makes again from it (and what it leaves alone), a damaged line, its
bound, a removal the database refuses, and a process killed between the journal and the
database. Real SQLite files in ``tmp_path``."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from switchpoint.errors import StoreError
from switchpoint.store import SQLiteStore, removals
from switchpoint.store.learning import (
    LearningReader,
    RuntimeExperimentEnd,
    RuntimeExperimentRecord,
    RuntimeModelRecord,
    RuntimeModelRemoval,
)
from switchpoint.store.line_journal import LineJournal
from switchpoint.store.removals import (
    EXPERIMENT,
    MODEL,
    Removal,
    journaled,
    kept_removals,
    make_again,
    removals_path,
)
from switchpoint.store.sqlite import ENDED_KEPT


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "switchpoint.db", logs=False).open() as opened:
        yield opened


def register(store: SQLiteStore, name: str, at: float) -> None:
    store.append(RuntimeModelRecord(name, at, "{}")).result()


def create(store: SQLiteStore, name: str, at: float) -> None:
    store.append(RuntimeExperimentRecord(name, at, "{}", None)).result()


def models(store: SQLiteStore) -> list[str]:
    with sqlite3.connect(store.path) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM runtime_models ORDER BY seq")]
    conn.close()
    return names


def experiments(store: SQLiteStore) -> dict[str, float | None]:
    with sqlite3.connect(store.path) as conn:
        rows = dict(conn.execute("SELECT name, ended FROM runtime_experiments ORDER BY seq"))
    conn.close()
    return rows


def unregister(store: SQLiteStore, name: str, made: float, at: float) -> None:
    with journaled(store, Removal(MODEL, name, made, at)):
        store.append(RuntimeModelRemoval(name)).result()


def end(store: SQLiteStore, name: str, made: float, at: float) -> None:
    with journaled(store, Removal(EXPERIMENT, name, made, at)):
        store.append(RuntimeExperimentEnd(name, at)).result()


def made_again(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "a backup restored" in r.getMessage()]


def test_each_removal_is_kept_before_the_database_takes_it_and_an_opening_lacking_none_says_nothing(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    register(store, "free", 100.0)
    create(store, "trial", 100.0)
    unregister(store, "free", 100.0, 200.0)
    end(store, "trial", 100.0, 210.0)
    assert kept_removals(removals_path(store)) == [Removal(MODEL, "free", 100.0, 200.0),
                                                   Removal(EXPERIMENT, "trial", 100.0, 210.0)]
    assert os.stat(removals_path(store)).st_mode & 0o777 == 0o600
    with caplog.at_level(logging.WARNING):
        make_again(store)  # (the database holds them: nothing to make)
    assert made_again(caplog) == []
    assert models(store) == [] and experiments(store) == {"trial": 210.0}


def test_an_opening_makes_again_what_the_database_lacks_and_leaves_what_came_after_alone(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    # A restored backup: the rows as they were before the removals the journal keeps.
    register(store, "free", 100.0)     # the one removed since: goes again
    register(store, "older", 50.0)     # registered before the one removed: goes again
    register(store, "again", 300.0)    # registered again after its removal: stays
    register(store, "back", 150.0)     # ... with the clock set back below the removal: stays
    register(store, "other", 100.0)    # never removed: stays
    create(store, "trial", 100.0)      # the one ended since: ended again, at that end
    create(store, "later", 400.0)      # made after an end of its name: stays
    path = removals_path(store)
    path.write_bytes(b"".join(r.line() for r in (
        Removal(MODEL, "free", 100.0, 200.0), Removal(MODEL, "older", 90.0, 95.0),
        Removal(MODEL, "again", 90.0, 250.0), Removal(MODEL, "back", 100.0, 200.0),
        Removal(EXPERIMENT, "trial", 100.0, 210.0), Removal(EXPERIMENT, "later", 100.0, 220.0))))
    with caplog.at_level(logging.WARNING):
        make_again(store)
    assert models(store) == ["again", "back", "other"]
    assert experiments(store) == {"trial": 210.0, "later": None}
    warned = made_again(caplog)
    assert len(warned) == 1 and 'model(s) "free", "older"' in warned[0]
    assert 'experiment(s) "trial"' in warned[0] and "spend since" in warned[0], warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_again(store)  # (made once: the next opening finds nothing to make)
    assert made_again(caplog) == []


def test_a_reader_reads_a_restored_database_as_the_next_opening_leaves_it_writing_nothing(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    register(store, "free", 100.0)     # removed since: not read
    register(store, "again", 300.0)    # registered again after its removal: read
    for i in range(ENDED_KEPT + 1):    # the oldest ended one goes as the newest ends again
        create(store, f"e{i}", 100.0 + i)
    for i in range(ENDED_KEPT):
        store.append(RuntimeExperimentEnd(f"e{i}", 150.0)).result()
    create(store, "later", 400.0)      # made after an end of its name: read running
    removals_path(store).write_bytes(b"".join(r.line() for r in (
        Removal(MODEL, "free", 100.0, 200.0), Removal(MODEL, "again", 90.0, 250.0),
        Removal(EXPERIMENT, f"e{ENDED_KEPT}", 500.0, 210.0),
        Removal(EXPERIMENT, "later", 100.0, 220.0))))
    reader = LearningReader(store.path)
    with caplog.at_level(logging.WARNING):
        read = reader.runtime_models(), reader.runtime_experiments()
    assert [m.name for m in read[0]] == ["again"]
    assert len(made_again(caplog)) == 1  # (said once for both reads)
    assert experiments(store)[f"e{ENDED_KEPT}"] is None  # (nothing written)
    make_again(store)
    assert read == (reader.runtime_models(as_kept=True), reader.runtime_experiments(as_kept=True))
    assert "e0" not in [e.name for e in read[1]] and read[1][-1].ended is None


def test_a_damaged_line_is_passed_over_by_number_and_the_others_are_made_again(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    register(store, "free", 100.0)
    register(store, "spare", 100.0)
    removals_path(store).write_bytes(
        Removal(MODEL, "free", 100.0, 200.0).line() + b'{"model": 3, "made": 1, "at": 1}\n'
        + b"\x00garbage\n" + b'{"model":"x","experiment":"y","made":1,"at":1}\n'
        + b'{"model":"z","made":1,"at":"NaN"}\n'
        + Removal(MODEL, "spare", 100.0, 200.0).line()[:-9])  # (a last line cut short)
    with caplog.at_level(logging.WARNING):
        make_again(store)
    assert models(store) == ["spare"]
    damaged = [r.getMessage() for r in caplog.records if "passed over" in r.getMessage()]
    assert len(damaged) == 1 and "line(s) 2, 3, 4, 5, 6:" in damaged[0], damaged
    unregister(store, "spare", 100.0, 300.0)  # (appended on a line of its own, readable)
    assert kept_removals(removals_path(store))[-1] == Removal(MODEL, "spare", 100.0, 300.0)


def test_past_its_bound_the_journal_keeps_the_newest_removal_of_each_name_then_the_newer_half(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(removals, "MAX_REMOVALS_BYTES", 2000)
    path = removals_path(store)
    for i in range(100):  # one name removed again and again: folded into its newest
        with journaled(store, Removal(MODEL, "same", float(i), float(i))):
            pass
        assert path.stat().st_size <= 2000
    kept = kept_removals(path)
    assert Removal(MODEL, "same", 99.0, 99.0) in kept
    assert sum(1 for r in kept if r.name == "same") < 100
    for i in range(200):  # names each removed once: the older half let go
        with journaled(store, Removal(EXPERIMENT, f"e{i:03}", 0.0, 1000.0 + i)):
            pass
        assert path.stat().st_size <= 2000
    kept = kept_removals(path)
    assert kept[-1] == Removal(EXPERIMENT, "e199", 0.0, 1199.0)
    assert Removal(EXPERIMENT, "e000", 0.0, 1000.0) not in kept
    assert [r.at for r in kept] == sorted(r.at for r in kept)  # (the order kept)
    assert not list(path.parent.glob(f"{path.name}.*"))  # (no temporary file left)


def test_a_removal_the_database_refuses_is_taken_back_out_of_the_journal(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    register(store, "free", 100.0)
    unregister(store, "kept", 100.0, 150.0)  # (one before it, which stays)
    before = removals_path(store).read_bytes()

    def refused(record: object, **_: object) -> Future[None]:
        done: Future[None] = Future()
        done.set_exception(StoreError("database or disk is full"))
        return done

    monkeypatch.setattr(store, "append", refused)
    with pytest.raises(StoreError, match="disk is full"):
        unregister(store, "free", 100.0, 200.0)
    assert removals_path(store).read_bytes() == before
    monkeypatch.undo()
    make_again(store)  # (the refused removal is not made by a later opening)
    assert models(store) == ["free"]


def test_a_removal_the_journal_cannot_keep_is_refused_naming_the_file_and_changes_nothing(
        store: SQLiteStore) -> None:
    register(store, "free", 100.0)
    removals_path(store).mkdir()  # (a path no file can be appended to)
    with pytest.raises(StoreError, match=r"switchpoint\.removals\.jsonl.*cannot keep the "
                                         r"unregistration of model \"free\".*it was not "
                                         r"unregistered"):
        unregister(store, "free", 100.0, 200.0)
    assert models(store) == ["free"]


def _killed_between(db: str, name: str, at: float) -> None:
    """A process that keeps a removal in the journal and dies before the database has it."""
    with SQLiteStore(db, logs=False).open() as store, \
            journaled(store, Removal(MODEL, name, 100.0, at)):
        os._exit(9)


def test_a_process_killed_between_the_journal_and_the_database_leaves_a_harmless_entry(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    register(store, "free", 100.0)
    register(store, "gone", 100.0)
    unregister(store, "gone", 100.0, 150.0)  # (in both: an opening has nothing of it to make)
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_between, args=(str(store.path), "free", 200.0))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    assert kept_removals(removals_path(store))[-1] == Removal(MODEL, "free", 100.0, 200.0)
    assert models(store) == ["free"]
    # The next opening makes the removal asked for, once (idempotent: the database holds
    # nothing later of its name), and says nothing of the one the database has.
    with caplog.at_level(logging.WARNING):
        make_again(store)
        make_again(store)
    assert models(store) == []
    warned = made_again(caplog)
    assert len(warned) == 1 and '"free"' in warned[0] and '"gone"' not in warned[0], warned


def test_a_journal_that_cannot_be_read_is_said_so(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    register(store, "free", 100.0)
    monkeypatch.setattr(removals, "MAX_REMOVALS_BYTES", 100)
    removals_path(store).write_bytes(Removal(MODEL, "free", 100.0, 200.0).line() * 10)
    with caplog.at_level(logging.WARNING):
        make_again(store)
    assert models(store) == ["free"]  # (nothing read, nothing made)
    assert any("cannot be read" in r.getMessage() for r in caplog.records)


def test_a_line_holding_two_removals_is_passed_over_named_and_the_others_are_made_again(
        store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged line holding two JSON values joined by a comma is passed over, named, and
    the removals on the other lines are made, where the opening failed on it."""
    register(store, "free", 100.0)
    register(store, "spare", 100.0)
    joined = Removal(MODEL, "spare", 100.0, 200.0).line().rstrip(b"\n") + b","
    removals_path(store).write_bytes(joined + Removal(MODEL, "spare", 100.0, 200.0).line()
                                     + Removal(MODEL, "free", 100.0, 200.0).line())
    with caplog.at_level(logging.WARNING):
        make_again(store)
    assert models(store) == ["spare"]
    assert any("passed over line(s) 1:" in r.getMessage() for r in caplog.records)


def test_a_journal_past_twice_its_bound_keeps_its_newest_removals_when_it_is_shortened(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal grown past twice its bound (a bound lowered, lines added by hand) is
    shortened to its newest removals and the new one, where it was taken for an empty one
    and every removal it kept was lost."""
    monkeypatch.setattr(removals, "MAX_REMOVALS_BYTES", 2000)
    path = removals_path(store)
    path.write_bytes(b"".join(Removal(MODEL, f"m{i:03}", 0.0, float(i)).line()
                              for i in range(200)))
    assert path.stat().st_size > 4000
    unregister(store, "free", 100.0, 500.0)
    kept = kept_removals(path)
    assert kept[-1] == Removal(MODEL, "free", 100.0, 500.0)
    assert Removal(MODEL, "m199", 0.0, 199.0) in kept and len(kept) > 2
    assert path.stat().st_size <= 2000


def test_an_unchanged_journal_is_parsed_once_and_each_change_is_seen_at_the_next_read(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of a journal unchanged since the last parse it again no more (each reader of a
    restored database read all of it, every time, some 130 ms for a full one); an append, a
    rewrite renamed in its place and an edit in place keeping its size and modification time
    are each seen at the next read."""
    parsed: list[Path] = []
    read = LineJournal.read

    def counted(self: LineJournal, parse: Any) -> Any:
        parsed.append(self.path)
        return read(self, parse)

    monkeypatch.setattr(LineJournal, "read", counted)
    path = removals_path(store)
    path.write_bytes(Removal(MODEL, "free", 100.0, 200.0).line())
    register(store, "free", 100.0)
    reader = LearningReader(store.path)
    try:
        for _ in range(3):
            assert reader.runtime_models() == []
        assert kept_removals(path) == [Removal(MODEL, "free", 100.0, 200.0)]
        assert len(parsed) == 1
        with journaled(store, Removal(MODEL, "spare", 100.0, 300.0)):  # an append
            pass
        assert [r.name for r in kept_removals(path)] == ["free", "spare"]
        assert len(parsed) == 2
        renamed = path.with_name("renamed")  # a rewrite renamed in its place, as old
        renamed.write_bytes(Removal(MODEL, "fret", 100.0, 200.0).line()
                            + Removal(MODEL, "spare", 100.0, 300.0).line())
        before = path.stat()
        os.utime(renamed, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(renamed, path)
        assert [r.name for r in kept_removals(path)] == ["fret", "spare"]
        assert [m.name for m in reader.runtime_models()] == ["free"]
        before = path.stat()  # an edit in place of the same size, its time put back
        path.write_bytes(path.read_bytes().replace(b"fret", b"free"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert [r.name for r in kept_removals(path)] == ["free", "spare"]
        assert reader.runtime_models() == []
        assert len(parsed) == 4
    finally:
        reader.close()
