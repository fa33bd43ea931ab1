"""The read connections a learning reader beside a running store keeps between reads."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from switchpoint.errors import StoreError
from switchpoint.store import SQLiteStore
from switchpoint.store import learning as learning_module
from switchpoint.store.learning import KEPT_CONNECTIONS, LearningReader
from switchpoint.store.sqlite import read_store


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[sqlite3.Connection]:
    """Every connection the readers open, in order."""
    connections: list[sqlite3.Connection] = []

    def counting(path: Path, gone: Any = None) -> sqlite3.Connection:
        connections.append(read_store(path, gone))
        return connections[-1]

    monkeypatch.setattr(learning_module, "read_store", counting)
    return connections


def _checkpoint_busy(path: Path) -> int:
    """Whether a full checkpoint of the file's log is held back by a reader (1) or not (0)."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
    finally:
        conn.close()


def test_beside_a_store_reads_share_a_kept_connection_and_hold_no_read_open(
        tmp_path: Path, opened: list[sqlite3.Connection]) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db").open()
    try:
        reader = LearningReader(store.path, store.gone)
        for _ in range(20):
            assert reader.feedback_count() == 0
            assert reader.outcomes("d-1") == 0
            assert list(reader.feedback()) == []
            # (reads in a transaction of their own: one snapshot of the log)
            assert reader.quality_by_model() == {}
            assert reader.experiment("absent") == {}
        assert len(opened) == 1
        # Kept between reads, yet holding no read: a checkpoint of the log is not held back.
        assert _checkpoint_busy(store.path) == 0
        reader.close()
        assert reader.feedback_count() == 0
        assert reader.feedback_count() == 0
        assert len(opened) == 3  # after close, each read opens (and closes) its own
    finally:
        store.close()


def test_readers_at_once_keep_at_most_a_few_connections(
        tmp_path: Path, opened: list[sqlite3.Connection]) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db").open()
    try:
        reader = LearningReader(store.path, store.gone)
        feeds = [reader.feedback(batch=1) for _ in range(KEPT_CONNECTIONS + 3)]
        for feed in feeds:  # (each read's connection is in use until the next is opened)
            assert list(feed) == []
        before = len(opened)
        for _ in range(KEPT_CONNECTIONS + 3):
            reader.feedback_count()
        assert len(opened) == before  # every later read took a kept connection
    finally:
        store.close()


def test_a_kept_connection_is_not_used_once_the_store_file_was_replaced(
        tmp_path: Path, opened: list[sqlite3.Connection]) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db").open()
    other = SQLiteStore(tmp_path / "other.db").open()
    other.close()
    try:
        reader = LearningReader(store.path, store.gone)
        assert reader.feedback_count() == 0
        os.replace(other.path, store.path)
        with pytest.raises(StoreError, match="was replaced"):
            reader.feedback_count()
        with pytest.raises(sqlite3.ProgrammingError):  # the kept one was closed
            opened[0].execute("SELECT 1")
        with pytest.raises(StoreError, match="was replaced"):
            reader.feedback_count()
    finally:
        store.close()


def test_a_reader_without_a_store_beside_it_keeps_no_connection(
        tmp_path: Path, opened: list[sqlite3.Connection]) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db").open()
    store.close()
    reader = LearningReader(store.path)  # (a command run alone: another process may replace it)
    for _ in range(3):
        assert reader.feedback_count() == 0
    assert len(opened) == 3
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
