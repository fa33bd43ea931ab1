"""The spill file is the service's: a store opened beside a running service (a CLI command on
the same data_dir) leaves it alone; with no service running, a store takes it up under the
data_dir's lock, so that a service starting meanwhile waits."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from switchpoint._files import Progress, brief_lock
from switchpoint.errors import DataDirInUseError, StoreError
from switchpoint.gateway.owner import DataDirLock
from switchpoint.store import DecisionRecord, SQLiteStore
from switchpoint.store import spill as store_spill
from switchpoint.store.spill import _spill_lines
from tests.decisions import a_decision
from tests.fakes.full_disk import full_disk


def _spill(path: Path, records: list[DecisionRecord]) -> None:
    """Add ``records`` to the spill file as a service whose database refuses writes does."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(_spill_lines(records))


def _ids_of(store: SQLiteStore) -> set[str]:
    """Every decision id the store's file holds, read from the file itself; the store closed."""
    store.close()
    with closing(sqlite3.connect(store.path)) as db:
        return {str(row[0]) for row in db.execute("SELECT id FROM decisions")}


def _ids(store: SQLiteStore) -> set[str]:
    return {d["id"] for d in store.decisions(limit=100)}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    with SQLiteStore(folder / "switchpoint.db"):  # the schema, as a first start makes it
        pass
    return folder


def test_a_store_beside_the_service_leaves_its_spill_file_alone(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    db = data_dir / "switchpoint.db"
    service = DataDirLock(data_dir).acquire()  # the service serving from data_dir
    try:
        spill = SQLiteStore(db).spill_path
        waiting = [a_decision() for _ in range(3)]
        _spill(spill, waiting)
        late = a_decision()  # what the service appends while the other store is open
        appended: list[DecisionRecord] = []
        read = store_spill._spilled_rows

        def service_appends() -> None:
            if not appended:
                _spill(spill, [late])
                appended.append(late)

        def read_then_service_appends(lines: Iterable[bytes], progress: Progress) -> object:
            rows = read(lines, progress)
            service_appends()  # between its read and its removal of the file
            return rows

        monkeypatch.setattr(store_spill, "_spilled_rows", read_then_service_appends)
        with SQLiteStore(db) as beside:  # e.g. `switchpoint feedback` / `report`
            service_appends()  # (if it did not read the file)
            assert _ids(beside) == set()  # wrote none of the service's records
        text = spill.read_text(encoding="utf-8")
        assert all(r.id in text for r in [*waiting, late])  # all still there for the service
        assert "3 record(s) wait in" in caplog.text and "for the service" in caplog.text
        # The service (holding the lock) takes it up at its start: nothing lost, none twice.
        monkeypatch.setattr(store_spill, "_spilled_rows", read)
        with SQLiteStore(db).open(serving=True) as owner:
            assert _ids(owner) == {r.id for r in [*waiting, late]}
            assert len(owner.decisions(limit=100)) == 4
        assert not spill.exists()
    finally:
        service.release()


def test_with_no_service_a_store_takes_up_the_spill_file_under_the_lock(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    waiting = [a_decision() for _ in range(2)]
    _spill(spill, waiting)
    read = store_spill._spilled_rows
    started: list[object] = []

    def read_while_a_service_starts(lines: Iterable[bytes], progress: Progress) -> object:
        # A service starting now waits for the take-up instead of being refused.
        thread = threading.Thread(target=lambda: started.append(
            _acquire(data_dir)))
        thread.start()
        time.sleep(0.3)
        assert not started  # it waits: the lock is held for the take-up
        started.append(thread)
        return read(lines, progress)

    monkeypatch.setattr(store_spill, "_spilled_rows", read_while_a_service_starts)
    with SQLiteStore(db) as after_a_crash:  # e.g. `switchpoint prune` with no service
        assert _ids(after_a_crash) == {r.id for r in waiting}
    assert not spill.exists()
    thread = started[0]
    assert isinstance(thread, threading.Thread)
    thread.join(timeout=10)
    lock = started[1]
    assert isinstance(lock, DataDirLock) and lock.held  # the service started once it was done
    lock.release()


def _acquire(data_dir: Path) -> DataDirLock | DataDirInUseError:
    try:
        return DataDirLock(data_dir).acquire()
    except DataDirInUseError as exc:
        return exc


def test_a_store_beside_the_service_writes_its_own_refused_records_and_leaves_the_file(
        data_dir: Path) -> None:
    db = data_dir / "switchpoint.db"
    service = DataDirLock(data_dir).acquire()
    try:
        spill = SQLiteStore(db).spill_path
        theirs = [a_decision()]
        _spill(spill, theirs)  # the service's, waiting
        with SQLiteStore(db) as beside, full_disk(beside) as disk:
            mine = a_decision()
            beside.append_lazy(mine)  # refused: kept for retry, and added to the file too
            deadline = time.monotonic() + 10
            while not beside._retry:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            disk.full = False
            beside.append(a_decision()).result(timeout=10)  # writes go through again
            while beside._retry or mine.id not in _ids(beside):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert theirs[0].id not in _ids(beside)
        text = spill.read_text(encoding="utf-8")
        assert theirs[0].id in text and mine.id in text  # left to the service (passed over)
        with SQLiteStore(db).open(serving=True) as owner:
            assert theirs[0].id in _ids(owner)
            assert [d["id"] for d in owner.decisions(limit=100)].count(mine.id) == 1
        assert not spill.exists()
    finally:
        service.release()


def test_with_no_service_a_store_waits_for_another_taking_the_spill_file_up(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two commands at once with no service running: the second waits for the first to be
    done with the spill file (rather than taking it for a service and leaving the file), then
    writes what was added meanwhile."""
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    added = [a_decision(), a_decision()]
    opened: list[set[str]] = []
    with brief_lock(data_dir, "spill") as held:  # the first command, taking the file up
        assert held
        _spill(spill, added[:1])
        second = threading.Thread(target=lambda: opened.append(_ids(SQLiteStore(db).open())))
        second.start()
        time.sleep(0.3)
        assert not opened  # it waits
        _spill(spill, added[1:])  # (added while the first held it)
    second.join(timeout=30)
    assert opened == [{r.id for r in added}]
    assert not spill.exists()
    assert "for the service" not in caplog.text


def _command_taking_up(db: Path) -> tuple[threading.Thread, list[set[str]]]:
    """A command opening ``db`` on a thread, once it holds its data_dir's lock briefly (taking
    up the spill file); the list gets the ids the store then holds. Join the thread."""
    opened: list[set[str]] = []
    command = threading.Thread(target=lambda: opened.append(_ids_of(SQLiteStore(db).open())))
    command.start()
    lock = db.parent / "serve.lock"
    deadline = time.monotonic() + 30
    while b"briefly" not in (lock.read_bytes() if lock.exists() else b""):
        assert time.monotonic() < deadline, "the command never took the lock"
        time.sleep(0.001)
    return command, opened


def test_a_service_starting_waits_for_a_take_up_as_long_as_it_moves(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command taking up a spill file longer than a service starting waits for a holder
    showing no progress: the service waits on while the take-up moves, then starts."""
    monkeypatch.setattr("switchpoint._files.BRIEF_TICK_S", 0.02)
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    added = [a_decision() for _ in range(80_000)]
    written = time.monotonic()
    _spill(spill, added)
    # The bound on a holder showing no progress (30 s) scaled down to the time this process
    # took to write the spill file, a second at least: the take-up, several times longer,
    # lasts past it however busy the host, and its pauses do not (at a load of 16 on two
    # cores the file took 12 s to write, the take-up 92 s, and a pause in it 2.6 s, so a
    # bound of one second named the command).
    hold = max(1.0, time.monotonic() - written)
    monkeypatch.setattr("switchpoint._files.BRIEF_HOLD_S", hold)
    command, opened = _command_taking_up(db)
    started = time.monotonic()
    service = DataDirLock(data_dir).acquire()  # waits, past the bound
    try:
        waited = time.monotonic() - started
        command.join(timeout=60)
        assert opened and opened[0] == {r.id for r in added}
        assert not spill.exists()
        assert waited > hold
    finally:
        service.release()


class _SlowFile:
    """A file read from a slow disk: each line (read alone, or with the rest at once) takes
    ``delay`` seconds."""

    def __init__(self, real: Any, delay: float) -> None:
        self.real, self.delay = real, delay

    def __enter__(self) -> _SlowFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()

    def read(self, *args: Any) -> Any:
        text = self.real.read(*args)
        time.sleep(self.delay * text.count("\n" if isinstance(text, str) else b"\n"))
        return text

    def readline(self, *args: Any) -> Any:
        time.sleep(self.delay)
        return self.real.readline(*args)

    def __iter__(self) -> Iterator[Any]:
        for line in self.real:
            time.sleep(self.delay)
            yield line


class _SlowRows(list[Any]):
    """The spill file's rows, gone over by a slow host: ``delay`` seconds a row."""

    delay = 0.0

    def __iter__(self) -> Iterator[Any]:
        for row in super().__iter__():
            time.sleep(self.delay)
            yield row


def test_a_take_up_marks_progress_while_it_reads_the_file_and_finds_what_caps_dropped(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a slow disk and host, reading a large spill file and finding the rows its caps
    dropped each last longer than a service starting waits for a holder showing no progress:
    the take-up marks progress through both, so the service waits for it, then starts."""
    import os

    hold, delay, count = 0.3, 0.003, 200  # each phase: about 0.6 s, twice the bound
    monkeypatch.setattr("switchpoint._files.BRIEF_HOLD_S", hold)
    monkeypatch.setattr("switchpoint._files.BRIEF_TICK_S", 0.01)
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    added = [a_decision() for _ in range(count)]
    _spill(spill, added)
    spill_inode = spill.stat().st_ino
    fdopen, capped = os.fdopen, store_spill._capped

    def slow_disk(fd: int, *args: Any, **kwargs: Any) -> Any:
        opened = fdopen(fd, *args, **kwargs)
        return _SlowFile(opened, delay) if os.fstat(fd).st_ino == spill_inode else opened

    def slow_host(rows: list[Any], *args: Any) -> set[int]:
        slow = _SlowRows(rows)
        slow.delay = delay
        return capped(slow, *args)

    monkeypatch.setattr(os, "fdopen", slow_disk)
    monkeypatch.setattr(store_spill, "_capped", slow_host)
    command, opened = _command_taking_up(db)
    started = time.monotonic()
    try:
        service = DataDirLock(data_dir).acquire()  # waits, past the bound
    finally:
        command.join(timeout=60)
    try:
        assert time.monotonic() - started > 2 * hold
        assert opened and opened[0] == {r.id for r in added}
        assert not spill.exists()
    finally:
        service.release()


def test_a_spill_file_line_too_long_for_a_record_is_passed_over_unheld_and_named(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A line of the spill file longer than any record (a damaged file: 8 MiB here, the bound
    lowered to 64 KiB) is read past in parts, never held whole, and passed over with a
    warning naming the file and the line; the records before and after it are written."""
    import tracemalloc

    monkeypatch.setattr(store_spill, "MAX_SPILL_LINE", 64 * 1024, raising=False)
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    first, last = a_decision(), a_decision()
    _spill(spill, [first])
    with spill.open("a", encoding="utf-8") as fh:
        fh.write('{"insert": "INSERT INTO decisions (id) VALUES (?)", "row": ["')
        fh.write("x" * (8 << 20) + '"]}\n')
    _spill(spill, [last])
    tracemalloc.start()
    try:
        with caplog.at_level("WARNING", logger="switchpoint"):
            store = SQLiteStore(db).open()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _ids_of(store) == {first.id, last.id}
    assert not spill.exists()
    assert peak < 2 << 20, peak
    assert f"passed over line(s) 2 of {spill}" in caplog.text, caplog.text
    assert "a line over 65536 bytes" in caplog.text, caplog.text


@pytest.mark.parametrize(("purpose", "said"), [
    ("spill", "lock to write the records the spill file beside the database keeps"),
    ("prune", "lock to prune the feedback log"),
])
def test_a_brief_holder_showing_no_progress_is_waited_for_a_while_then_named(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, purpose: str, said: str) -> None:
    """The refusal names what the command holds the lock for: taking up the spill file, or
    ``switchpoint prune`` pruning the feedback log."""
    monkeypatch.setattr("switchpoint._files.BRIEF_HOLD_S", 0.3)
    with brief_lock(data_dir, purpose) as progress:  # held, and stuck
        assert progress is not None
        started = time.monotonic()
        with pytest.raises(DataDirInUseError) as caught:
            DataDirLock(data_dir).acquire()
        assert time.monotonic() - started >= 0.3
        # another brief holder waits, then says why
        with pytest.raises(OSError) as beside, brief_lock(data_dir, "spill"):
            pass
    message = str(caught.value)
    assert said in message and "no progress for 0.3 s" in message, message
    assert said.removeprefix("lock ") in str(beside.value), beside.value
    DataDirLock(data_dir).acquire().release()  # (let go of: a service starts)


def test_a_brief_holder_moving_on_for_ever_is_waited_for_no_longer_than_a_bound(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose take-up keeps marking progress and never ends (a loop, or a file
    without end) keeps a service starting waiting no longer than the overall bound; the
    refusal says the command was still at it."""
    monkeypatch.setattr("switchpoint._files.BRIEF_HOLD_S", 0.3)
    monkeypatch.setattr("switchpoint._files.BRIEF_TICK_S", 0.01)
    monkeypatch.setattr("switchpoint._files.BRIEF_WAIT_MAX_S", 1.0)
    stop = threading.Event()
    with brief_lock(data_dir, "spill") as progress:  # held, and moving on
        assert progress is not None
        mark = progress

        def move() -> None:
            until = time.monotonic() + 6  # (bounds the test before the bound existed)
            while not stop.is_set() and time.monotonic() < until:
                mark()
                time.sleep(0.005)

        mover = threading.Thread(target=move)
        mover.start()
        started = time.monotonic()
        try:
            with pytest.raises(DataDirInUseError) as caught:
                DataDirLock(data_dir).acquire()
            waited = time.monotonic() - started
        finally:
            stop.set()
            mover.join()
    assert 1.0 <= waited < 3.0, waited
    message = str(caught.value)
    assert "spill file" in message and "still" in message and "1 s" in message, message
    DataDirLock(data_dir).acquire().release()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_serve_lock_that_is_no_regular_file_is_a_clear_error(
        data_dir: Path, kind: str) -> None:
    """``serve.lock`` made a FIFO or a directory (a damaged data_dir): a service starting is
    refused naming the file, that it is not a regular file, and what to do; a store taking up
    the spill file leaves it to the next start instead of failing."""
    import os

    lock = data_dir / "serve.lock"
    lock.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(StoreError) as caught:
        DataDirLock(data_dir).acquire()
    message = str(caught.value)
    assert str(lock) in message and "not a regular file" in message, message
    assert "remove it" in message, message
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    _spill(spill, [a_decision()])
    with SQLiteStore(db) as store:  # opens, leaving the file (the lock cannot be taken)
        assert store.path == db
    assert spill.exists()


def test_a_service_that_cannot_write_its_id_into_the_lock_file_lets_go_of_the_lock(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refusing the few bytes of the service's id (full) as it takes the lock: the
    start is a StoreError saying so, and the lock is let go of, so that the next start (in
    this process too) takes it once the disk has room."""
    import errno
    import os

    real = os.ftruncate

    def full(fd: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "ftruncate", full)
    with pytest.raises(StoreError) as caught:
        DataDirLock(data_dir).acquire()
    monkeypatch.setattr(os, "ftruncate", real)
    assert "No space left on device" in str(caught.value)
    assert "serve.lock" in str(caught.value)
    DataDirLock(data_dir).acquire().release()


def test_a_brief_holder_that_has_not_marked_the_lock_yet_is_not_taken_for_a_service(
        data_dir: Path) -> None:
    """A command that has just taken the lock still shows what the last holder wrote there
    (a service gone: its pid alone) until it writes its mark: a service starting at that
    moment waits for it as for any brief holder, instead of being refused as a second
    service."""
    import fcntl
    import os

    lock = data_dir / "serve.lock"
    lock.write_text("999999\n")  # what a service that stopped left
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the command's lock, its mark not written yet

    def mark_then_let_go() -> None:
        time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} briefly 0\n".encode())
        time.sleep(0.2)
        os.close(fd)

    command = threading.Thread(target=mark_then_let_go)
    command.start()
    try:
        DataDirLock(data_dir).acquire().release()
    finally:
        command.join()


def test_a_store_leaving_the_spill_file_to_a_stalled_command_says_so_not_a_service(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """No service runs, and another command holding the lock to take up the spill file shows
    no progress: a store opening leaves the file after the wait, saying a command holds the
    lock (naming it) rather than that a service serves from the data_dir."""
    import os

    monkeypatch.setattr("switchpoint._files.BRIEF_HOLD_S", 0.3)
    db = data_dir / "switchpoint.db"
    spill = SQLiteStore(db).spill_path
    with brief_lock(data_dir, "spill") as progress:  # held, and stuck
        assert progress is not None
        _spill(spill, [a_decision()])
        with SQLiteStore(db):
            pass
    assert spill.exists()
    assert "a service serves" not in caplog.text, caplog.text
    assert f"pid {os.getpid()}" in caplog.text and "no progress" in caplog.text, caplog.text
