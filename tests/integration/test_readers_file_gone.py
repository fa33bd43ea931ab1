"""The service's readers of its request log (the reports, the learning reads behind feedback
and status) beside its writer, when ``switchpoint.db`` is deleted or replaced under it: they
say so, as the writer does, rather than reading nothing, a missing file, or the file put there
(which the service no longer writes)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import chat, feedback, get, learning_server


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_readers_of_a_log_deleted_or_replaced_under_the_service_say_so(
        fake: FakeProviderProcess, tmp_path: Path, how: str) -> None:
    with learning_server(fake, tmp_path) as server:
        headers, _ = chat(server, "What is 2 + 2?")
        decision = headers["x-switchpoint-decision-id"]
        assert get(server, "/v1/router/report/cost").json()["requests"] == 1
        db = tmp_path / "data" / "switchpoint.db"
        backup = tmp_path / "backup.db"
        src, dst = sqlite3.connect(db), sqlite3.connect(backup)
        src.backup(dst)  # (the decision is in it: the file put there knows it)
        src.close()
        dst.close()
        if how == "deleted":
            db.unlink()
        else:
            os.replace(backup, db)  # the old -wal and -shm stay at the path a moment
        said = f"switchpoint.db in data_dir was {how}"
        for answer in (get(server, "/v1/router/report/cost"),
                       get(server, "/v1/router/report/sla"),
                       feedback(server, decision, score=1)):
            assert answer.status_code == 503, (answer.request.url, answer.text)
            message = answer.json()["error"]["message"]
            assert said in message and "restart" in message, message
            assert str(tmp_path) not in message, message


def test_a_file_replaced_between_the_check_and_the_open_is_not_read(tmp_path: Path) -> None:
    """The file replaced just after a reader checked it, before its connection opened the
    path: the reader must not read the file put there (beside the old file's -wal and -shm,
    which the service's writer still uses: it would read a mix of both files), but say it
    was replaced."""
    from switchpoint.errors import StoreError
    from switchpoint.store import SQLiteStore
    from switchpoint.store.sqlite import read_only

    db = tmp_path / "switchpoint.db"
    backup = tmp_path / "backup.db"
    conn = sqlite3.connect(backup)
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    with SQLiteStore(db) as store:
        calls = 0

        def gone_racing() -> str | None:
            nonlocal calls
            calls += 1
            if calls == 1:  # the check passes; the restore lands right after it
                left = store.gone()
                os.replace(backup, db)
                return left
            return store.gone()

        with pytest.raises(StoreError, match="was replaced"):
            read_only(db, gone_racing).close()
        assert calls == 2
