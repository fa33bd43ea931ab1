"""A learning reader that cannot open its store file, or set up the connection it opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from switchpoint.errors import StoreError
from switchpoint.store import SQLiteStore
from switchpoint.store import learning as learning_module
from switchpoint.store.learning import LearningReader


def test_a_store_file_that_cannot_be_opened_is_a_store_error_with_what_to_do(
        tmp_path: Path) -> None:
    reader = LearningReader(tmp_path / "absent" / "switchpoint.db")
    with pytest.raises(StoreError) as caught:
        reader.feedback_count()
    message = str(caught.value)
    assert "switchpoint.db" in message and "cannot open it to read" in message
    assert "data_dir" in message  # (the store's hint, as for its other opens)


class _Refusing:
    """A real connection whose set-up statement fails (as a busy or broken file may)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.closed = False

    def execute(self, sql: str, *args: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        self.closed = True
        self.conn.close()


def test_a_connection_whose_set_up_fails_is_closed_and_the_failure_is_a_store_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db")
    store.close()
    opened: list[_Refusing] = []

    def refusing(path: Path, gone: Any = None) -> _Refusing:
        opened.append(_Refusing(sqlite3.connect(path)))
        return opened[-1]

    monkeypatch.setattr(learning_module, "read_store", refusing)
    with pytest.raises(StoreError, match="disk I/O error"):
        LearningReader(store.path).feedback_count()
    assert len(opened) == 1 and opened[0].closed
