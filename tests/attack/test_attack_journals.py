"""The journals beside the databases (``switchpoint.removals.jsonl``, ``keys.revocations.jsonl``)
are the service's own files, but a restored backup, a file a crash cut short or a copy from
another machine can hold anything: a start reads them and a removal or a revocation appends
to them. Whatever they hold, a start stays bounded in time and memory and says what it passed
over, a change refused says why at once, and nothing else is written or made again.

Before: a line nested 10,000 deep (a valid JSON value) made every start of a data_dir holding a
registered model fail with a RecursionError and a traceback; a symbolic link in a journal's
place to an empty file (or to none) took the entry into the file it led to (or made one there),
while no start reads through a link, so the removal was lost; a FIFO in a journal's place made
an unregistration (and a key's revocation) wait for a reader for ever, holding the lock every
later removal waits for; 2 MB of lines holding no entry took 155 MB to read; an entry dated
1e308 was made again at that time (an experiment ended in a year no date shows, which
`switchpoint experiments list` failed on).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.store.line_journal import LineJournal
from switchpoint.store.removals import (
    EXPERIMENT,
    MAX_REMOVALS_BYTES,
    MODEL,
    REMOVALS_FILENAME,
    Removal,
    kept_removals,
)
from tests.attack.attack_env import KEYS, Attacked, serving
from tests.fakes.fake_provider import FakeProviderProcess

NESTED = b"[" * 10_000 + b"]" * 10_000


def _card(fake: FakeProviderProcess, name: str) -> dict[str, Any]:
    return {"name": name, "base_url": fake.openai_base_url, "api_key_env": "ALPHA_KEY",
            "input_per_mtok": 0, "output_per_mtok": 0, "tier": "simple"}


def _register(server: Attacked, fake: FakeProviderProcess, name: str) -> None:
    r = httpx.post(f"{server.base}/v1/router/models", json=_card(fake, name),
                   headers=server.admin, timeout=30)
    assert r.status_code == 201, r.text


def _models(server: Attacked) -> list[str]:
    r = httpx.get(f"{server.base}/v1/models", headers=server.admin, timeout=30)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def test_a_start_passes_over_a_journal_line_nested_10000_deep_and_makes_the_rest_again(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with serving(fake, tmp_path) as server:
        _register(server, fake, "doomed")
    with sqlite3.connect(server.data_dir / "switchpoint.db") as db:
        (created,) = db.execute("SELECT created FROM runtime_models WHERE name = 'doomed'"
                                ).fetchone()
    db.close()
    # A backup restored after "doomed" was unregistered, beside a damaged journal.
    removal = Removal(MODEL, "doomed", created, created + 1).line()
    (server.data_dir / REMOVALS_FILENAME).write_bytes(
        NESTED + b"\n" + b'{"model": ' + NESTED + b"}\n" + removal)
    with serving(fake, tmp_path) as server:
        assert "doomed" not in _models(server)  # (its removal, made again)
        log = server.log_text()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert "passed over line(s) 1, 2" in log, log[-3000:]
    assert 'unregistered again model(s) "doomed"' in log, log[-3000:]


def test_a_fifo_in_the_journals_place_refuses_a_removal_and_a_revocation_at_once(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with serving(fake, tmp_path, "tenants:\n  acme: {}\n") as server:
        _register(server, fake, "kept")
        issued = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                            headers=server.admin, timeout=30)
        assert issued.status_code == 201, issued.text
        key_id = issued.json()["id"]
        for name in (REMOVALS_FILENAME, "keys.revocations.jsonl"):
            (server.data_dir / name).unlink(missing_ok=True)
            os.mkfifo(server.data_dir / name, 0o600)  # (no process ever reads it)
        started = time.monotonic()
        r = httpx.delete(f"{server.base}/v1/router/models/kept", headers=server.admin,
                         timeout=20)
        assert r.status_code == 503, r.text
        assert "not a regular file" in r.json()["error"]["message"], r.text
        r = httpx.post(f"{server.base}/v1/router/keys/{key_id}/revoke", headers=server.admin,
                       timeout=20)
        assert r.status_code == 503, r.text
        assert time.monotonic() - started < 10
        assert "keys.revocations.jsonl': cannot keep the revocation" in server.log_text()
        assert "(not a regular file" in server.log_text(), server.log_text()[-3000:]
        # Each refusal is logged with its file and what to do about what is in its place.
        said = server.log_text()
        assert f"{REMOVALS_FILENAME}': cannot keep the" in said, said[-3000:]
        assert said.count("move what is there aside (a new file is made)") == 2, said[-3000:]
        assert "kept" in _models(server)  # (not unregistered: its removal was not kept)
        key = httpx.get(f"{server.base}/v1/router/keys/{key_id}", headers=server.admin,
                        timeout=30).json()
        assert key["revoked_at"] is None, key
        # Once the file is put right, the same changes are made.
        for name in (REMOVALS_FILENAME, "keys.revocations.jsonl"):
            (server.data_dir / name).unlink()
        r = httpx.delete(f"{server.base}/v1/router/models/kept", headers=server.admin,
                         timeout=20)
        assert r.status_code == 200, r.text
        assert [r.name for r in kept_removals(server.data_dir / REMOVALS_FILENAME)] == ["kept"]


def _hostile(path: Path, kind: str) -> None:
    """Fill ``path`` with one of the hostile journals."""
    ok = Removal(MODEL, "m", 1.0, 2.0).line()
    if kind == "1 GB":
        with path.open("wb") as fh:
            fh.truncate(1 << 30)
    elif kind == "one 100 MB line":
        with path.open("wb") as fh:
            fh.write(b"a" * (100 << 20))
    elif kind == "2 MB of tiny lines":
        path.write_bytes(b"{}\n" * (2 * MAX_REMOVALS_BYTES // 3))
    elif kind == "the same name 2 MB over":
        path.write_bytes(ok * (2 * MAX_REMOVALS_BYTES // len(ok)))
    elif kind == "NUL bytes and bad UTF-8":
        path.write_bytes(b"\x00" * 64 + b"\n" + b'{"model":"\xff\xfe","made":1,"at":2}\n'
                         + b"\x00{\x00\"\n" + ok)
    elif kind == "huge numbers, NaN, 1e308":
        path.write_bytes(b'{"model":"m","made":' + b"9" * 5000 + b',"at":2}\n'
                         b'{"model":"m","made":1e400,"at":2}\n'
                         b'{"model":"m","made":NaN,"at":2}\n'
                         b'{"model":"m","made":1e308,"at":1e308}\n')
    elif kind == "a 1 MB name":
        path.write_text(json.dumps({"model": "n" * (1 << 20), "made": 1, "at": 2}) + "\n")
    elif kind == "nested 10,000 deep":
        path.write_bytes(NESTED + b"\n" + b'{"model":' + NESTED + b"}\n" + ok)
    elif kind == "nested 10,000 deep, past its bound":
        path.write_bytes((NESTED + b"\n") * (MAX_REMOVALS_BYTES // len(NESTED) + 1) + ok)
    elif kind == "a symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "a symlink to an empty file":
        (path.parent / "elsewhere").write_bytes(b"")
        path.symlink_to(path.parent / "elsewhere")
    elif kind == "a symlink leading nowhere":
        path.symlink_to(path.parent / "made-through-it")
    elif kind == "a directory":
        path.mkdir()
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "1 GB", "one 100 MB line", "2 MB of tiny lines", "the same name 2 MB over",
    "NUL bytes and bad UTF-8", "huge numbers, NaN, 1e308", "a 1 MB name",
    "nested 10,000 deep", "nested 10,000 deep, past its bound", "a symlink to /dev/zero",
    "a symlink to an empty file", "a symlink leading nowhere", "a directory"])
def test_reading_and_appending_a_hostile_journal_stays_bounded(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / REMOVALS_FILENAME
    _hostile(path, kind)
    journal = LineJournal(path, MAX_REMOVALS_BYTES, "a removal", "none is made again")
    started = time.perf_counter()
    kept = kept_removals(path)
    took = time.perf_counter() - started
    tracemalloc.start()
    try:
        kept_removals(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert took < 5, took
    assert peak < 64 << 20, peak  # (the file is read to twice its bound: 2 MB)
    assert all(len(r.name) <= MAX_REMOVALS_BYTES for r in kept)
    if kind not in ("the same name 2 MB over", "a 1 MB name"):  # (those two are whole)
        assert caplog.records, "a damaged journal is said so"
    line = Removal(MODEL, "new", 3.0, 4.0).line()
    if kind.startswith("a symlink") or kind == "a directory":
        with pytest.raises(OSError):  # (refused: the removal is not made)
            journal.append(line)
        with pytest.raises(OSError):
            journal.take_back(line)
        # (nothing written where a link leads, nor made there)
        assert not (tmp_path / "made-through-it").exists()
        assert not (tmp_path / "elsewhere").exists() or not (tmp_path / "elsewhere").stat(
            ).st_size
        return
    journal.append(line)  # (kept, the file shortened to its bound if need be)
    assert os.stat(path).st_size <= MAX_REMOVALS_BYTES
    assert kept_removals(path)[-1] == Removal(MODEL, "new", 3.0, 4.0)


def test_journal_entries_dated_past_9999_or_before_1970_are_passed_over(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with serving(fake, tmp_path, "tenants:\n  acme: {}\n") as server:
        r = httpx.post(f"{server.base}/v1/router/experiments", headers=server.admin,
                       timeout=30, json={"name": "trial", "strategy_a": "cost_optimized",
                                         "strategy_b": "quality_first"})
        assert r.status_code == 201, r.text
        issued = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                            headers=server.admin, timeout=30)
        assert issued.status_code == 201, issued.text
    key_id = issued.json()["id"]
    created = r.json()["created_at"]
    # A backup restored beside journals whose entries no clock of this system wrote.
    (server.data_dir / REMOVALS_FILENAME).write_bytes(
        Removal(EXPERIMENT, "trial", created, 1e308).line()
        + Removal(EXPERIMENT, "trial", -1.0, created).line())
    (server.data_dir / "keys.revocations.jsonl").write_bytes(
        json.dumps({"id": key_id, "revoked_at": 1e308}).encode() + b"\n"
        + json.dumps({"id": key_id, "revoked_at": -1e12}).encode() + b"\n")
    with serving(fake, tmp_path, "tenants:\n  acme: {}\n") as server:
        trial = httpx.get(f"{server.base}/v1/router/experiments/trial", headers=server.admin,
                          timeout=30).json()
        key = httpx.get(f"{server.base}/v1/router/keys/{key_id}", headers=server.admin,
                        timeout=30).json()
        log = server.log_text()
    assert trial["ended_at"] is None, trial  # (still running: no end was made again)
    assert key["revoked_at"] is None, key
    assert f"{REMOVALS_FILENAME}: passed over line(s) 1, 2" in log, log[-3000:]
    assert "keys.revocations.jsonl: passed over line(s) 1, 2" in log, log[-3000:]
    for command in (["experiments", "list"], ["keys", "list"]):  # (each shows every date)
        shown = subprocess.run(
            [sys.executable, "-m", "switchpoint.cli", *command, "--config",
             str(tmp_path / "switchpoint.yaml")], capture_output=True, text=True, timeout=120,
            env={**os.environ, **KEYS})
        assert shown.returncode == 0, shown.stderr[-3000:]
        assert "Traceback" not in shown.stderr, shown.stderr[-3000:]
