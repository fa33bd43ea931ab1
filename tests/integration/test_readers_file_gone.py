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
