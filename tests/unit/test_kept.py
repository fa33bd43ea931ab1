"""A change written and waited for (:func:`switchpoint.gateway.kept.written`) while the store's
writer is stuck (a disk that does not finish an fsync): at most ``MAX_WAITING`` callers wait,
the next is refused at once with a 503 saying why and what to do, and nothing queued is lost:
once the writer goes on, every change that waited is in the file, the refused one is not.

A real SQLite store; its writer is held inside its transaction, as a stuck fsync holds it."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from switchpoint.errors import StorageUnavailableError
from switchpoint.gateway import kept
from switchpoint.gateway.kept import turn, waiting, written
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import PromotionRecord
from switchpoint.store.sqlite import Record


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _promotions(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT experiment FROM promotions"))
    finally:
        conn.close()


def test_changes_waiting_for_a_stuck_writer_are_bounded_and_none_waiting_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept, "MAX_WAITING", 4)  # (the bound's rule, not its size, is tested)
    path = tmp_path / "switchpoint.db"
    store = SQLiteStore(path).open()
    stuck, inside = threading.Event(), threading.Event()
    transaction = store._transaction

    def held(records: Sequence[Record], **kwargs: Any) -> None:
        inside.set()
        stuck.wait()
        transaction(records, **kwargs)

    errors: list[BaseException] = []

    def change(name: str) -> None:
        try:
            written(store, PromotionRecord(time.time(), name, "a", "chosen"),
                    "the promotion", "nothing was promoted")
        except BaseException as exc:  # (told below)
            errors.append(exc)

    monkeypatch.setattr(store, "_transaction", held)
    threads = [threading.Thread(target=change, args=(f"e{n}",)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        _until(lambda: inside.is_set() and waiting(store) == 4,
               "four changes wait for the stuck writer")
        with pytest.raises(StorageUnavailableError) as refused:
            written(store, PromotionRecord(time.time(), "late", "a", "chosen"),
                    "the promotion", "nothing was promoted")
        said = str(refused.value)
        assert said.startswith("the promotion could not be kept: 4 changes already wait for "
                               "the store's writer to settle them"), said
        assert "try again once they are settled (nothing was promoted)" in said, said
        assert refused.value.status == 503
        assert refused.value.retry_after is not None and refused.value.retry_after > 0
        assert waiting(store) == 4  # (the refused one was never queued)
        assert all(thread.is_alive() for thread in threads)  # (still waiting: not given up)
    finally:
        stuck.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert waiting(store) == 0
    written(store, PromotionRecord(time.time(), "after", "a", "chosen"),
            "the promotion", "nothing was promoted")  # (taken again once they are settled)
    store.close()
    assert _promotions(path) == ["after", "e0", "e1", "e2", "e3"]



def test_changes_waiting_their_turn_behind_a_stuck_write_count_towards_the_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Changes made one at a time under a lock, each written under it: behind one stuck in
    # its write, the others wait for the lock, counted once each (their turn and their write
    # are one change); past the bound, the next is refused before it waits for the lock.
    monkeypatch.setattr(kept, "MAX_WAITING", 3)
    path = tmp_path / "switchpoint.db"
    store = SQLiteStore(path).open()
    stuck = threading.Event()
    transaction = store._transaction

    def held(records: Sequence[Record], **kwargs: Any) -> None:
        stuck.wait()
        transaction(records, **kwargs)

    lock = threading.Lock()
    errors: list[BaseException] = []

    def change(name: str) -> None:
        try:
            with turn(store, lock, "the promotion", "nothing was promoted"), \
                    turn(store, contextlib.nullcontext(), "the promotion",
                         "nothing was promoted"):
                written(store, PromotionRecord(time.time(), name, "a", "chosen"),
                        "the promotion", "nothing was promoted")
        except BaseException as exc:  # (told below)
            errors.append(exc)

    monkeypatch.setattr(store, "_transaction", held)
    threads = [threading.Thread(target=change, args=(f"e{n}",)) for n in range(3)]
    try:
        for thread in threads:
            thread.start()
        _until(lambda: waiting(store) == 3, "three changes wait, two of them for the lock")
        with pytest.raises(StorageUnavailableError) as refused, \
                turn(store, lock, "the promotion", "nothing was promoted"):
            pass
        said = str(refused.value)
        assert said.startswith("the promotion could not be kept: 3 changes already wait for "
                               "the store's writer to settle them"), said
        assert "try again once they are settled (nothing was promoted)" in said, said
        assert waiting(store) == 3 and all(thread.is_alive() for thread in threads)
    finally:
        stuck.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert waiting(store) == 0 and not lock.locked()
    store.close()
    assert _promotions(path) == ["e0", "e1", "e2"]


def test_a_change_the_store_finds_damaged_is_said_so_and_not_to_be_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A write meeting a damaged file (SQLite's "malformed") is no matter of space or a lock:
    # the 503 says the file is damaged, with no Retry-After and x-should-retry: false, as a
    # damaged file met reading it is answered.
    from switchpoint.server.errors import answer_for

    store = SQLiteStore(tmp_path / "switchpoint.db").open()

    def malformed(records: Sequence[Record], **kwargs: Any) -> None:
        exc = sqlite3.DatabaseError("database disk image is malformed")
        exc.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
        raise exc

    monkeypatch.setattr(store, "_transaction", malformed)
    try:
        with pytest.raises(StorageUnavailableError) as refused:
            written(store, PromotionRecord(time.time(), "x", "a", "chosen"), "the model",
                    "nothing was registered")
    finally:
        store.close()
    answer = answer_for(refused.value)
    assert (answer.status, answer.code, answer.headers) == (
        503, "storage_unavailable", {"x-should-retry": "false"}), answer
    assert answer.message.startswith("the model could not be kept (switchpoint.db in data_dir "
                                     "is damaged (database disk image is malformed); the "
                                     "operator must restore it from a backup)"), answer.message
    assert "(nothing was registered)" in answer.message and "free space" not in answer.message
