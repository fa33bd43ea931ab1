"""A data_dir file restored from a backup after a crash: the crashed process left the old
file's ``-wal`` (and ``-shm``) at the path, and SQLite would replay that log into the restored
file, over what the backup holds. Each SQLite file of the service (the logs'
``switchpoint.db``, the keys' ``keys.db``, the session pins' ``sessions.db``) is judged at its
next open by the note of which file and which log were open there: the old log is removed.
A read-only reader (``switchpoint report`` with no service running) leaves it in place, reads
the restored file alone, and says which file it did not read. A log a crash left beside the
file it belongs to holds committed writes: every reader reads it, and an open keeps it.

Real processes, killed with SIGKILL while holding the file open; real SQLite files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from switchpoint._files import file_stamp
from switchpoint.cli import main
from switchpoint.gateway.sessions import SQLitePinStore
from switchpoint.governance.keys import KeySpec, KeyStore, holds_keys
from switchpoint.store import SQLiteStore, moved

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """models:
  - {name: big, input_per_mtok: 10, output_per_mtok: 30}
  - {name: small, input_per_mtok: 0.2, output_per_mtok: 0.6}
data_dir: data
admin_token_env: SP_RESTORE_TEST_ADMIN_UNSET
"""

# Each child writes ``before`` rows, takes a backup (SQLite's backup API: the file as it is),
# writes ``after`` rows (in the open file's -wal alone: no checkpoint runs), says "ready" and
# waits to be killed.
_PRELUDE = """
import sqlite3, sys, time
path = sys.argv[1]
before, after = ([n for n in arg.split(",") if n] for arg in sys.argv[2:4])

def backup():
    src, dst = sqlite3.connect(path), sqlite3.connect(path + ".backup")
    src.backup(dst)
    src.close()
    dst.close()
"""

_WRITERS = {
    "switchpoint.db": _PRELUDE + """
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore

def log(id_):  # a decision and the request it answered
    store.append(DecisionRecord(
        id=id_, ts=time.time(), selected_model="big", cluster_id=1, cost_weight=0.5,
        candidates=["big"], cache_hit=False, routing_ms=0.1, embedding_ms=1.0,
        policy="cluster", weights_id="w1", expected_error=0.1,
        cost_adjusted_score=0.2)).result(timeout=10)
    store.append(RequestRecord(
        id="r" + id_, ts=time.time(), requested_model="auto", status="ok", http_status=200,
        pin_state="fresh", stream=False, latency_ms=100.0, model="big", prompt_tokens=10,
        completion_tokens=10, cost_usd=0.0004, decision_id=id_)).result(timeout=10)

store = SQLiteStore(path).open()
for id_ in before:
    log(id_)
backup()
for id_ in after:
    log(id_)
""",
    "keys.db": _PRELUDE + """
from switchpoint.governance.keys import KeySpec, KeyStore

from pathlib import Path
store = KeyStore(Path(path)).open()
for name in before:
    store.create(KeySpec(tenant="default", name=name))
backup()
for name in after:
    store.create(KeySpec(tenant="default", name=name))
""",
    "sessions.db": _PRELUDE + """
from switchpoint.gateway.sessions import Pin, SQLitePinStore

store = SQLitePinStore(path)
for sid in before:
    store.put(sid, Pin("big", time.time()))
store.flush()
backup()
for sid in after:
    store.put(sid, Pin("big", time.time()))
store.flush()
""",
}


def _crash_after_writing(path: Path, before: Sequence[str], after: Sequence[str]) -> None:
    """Run the writer of ``path``'s kind of file and SIGKILL it once it wrote ``after`` (its
    -wal and -shm stay at the path, as a crash leaves them)."""
    code = _WRITERS[path.name] + 'print("ready", flush=True)\ntime.sleep(60)\n'
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path), ",".join(before), ",".join(after)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", "the writer did not start"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").stat().st_size > 0  # the crash left the log, holding `after`


def _restore_backup(path: Path) -> None:
    """Put the backup in place of the file alone (its side files are left as they are)."""
    os.replace(f"{path}.backup", path)


def _rows(path: Path) -> set[str]:
    """What the file ``path`` holds, opened by its own store (as a start opens it)."""
    if path.name == "switchpoint.db":
        with SQLiteStore(path) as store:
            return {d["id"] for d in store.decisions(limit=100)}
    if path.name == "keys.db":
        with KeyStore(path) as keys:
            return {k.name for k in keys.list() if k.name is not None}
    pins = SQLitePinStore(path)
    try:
        with sqlite3.connect(path) as db:  # (what the store's own connection wrote)
            return {r[0] for r in db.execute("SELECT session_id FROM session_pins")}
    finally:
        pins.close()


def _names(n: int) -> list[str]:
    return [f"n{uuid.uuid4().hex[:8]}" for _ in range(n)]


@pytest.mark.parametrize("name", ["switchpoint.db", "keys.db", "sessions.db"])
def test_a_file_restored_after_a_crash_does_not_take_the_old_files_log(
        tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / name
    before, after = _names(3), _names(4)
    _crash_after_writing(path, before, after)
    _restore_backup(path)
    with caplog.at_level(logging.WARNING):
        assert _rows(path) == set(before)  # the backup's rows: none of the old log's
    assert f"removed {name}-wal, the log of a database file deleted or replaced" in caplog.text
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert _rows(path) == set(before)  # and the next start too


@pytest.mark.parametrize("name", ["switchpoint.db", "keys.db", "sessions.db"])
def test_a_crash_of_the_file_itself_keeps_its_log(tmp_path: Path, name: str) -> None:
    """No restore: the log the crash left holds committed writes, and the next open keeps
    them."""
    path = tmp_path / name
    before, after = _names(2), _names(2)
    _crash_after_writing(path, before, after)
    assert _rows(path) == set(before) | set(after)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    file = tmp_path / "switchpoint.yaml"
    file.write_text(CONFIG, encoding="utf-8")
    return file


def _report_ids(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """How many requests ``switchpoint report cost`` counts (no service running), and what
    it said on stderr."""
    code = main(["report", "cost", "--config", str(config), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return int(json.loads(out)["requests"]), err


def test_a_report_reads_the_restored_file_alone_and_names_the_log_it_did_not_read(
        config: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """``switchpoint report`` with no service running, after a crash and a restore of the
    file alone: it reads what the restored file holds, not the old file's log beside it
    (which it leaves for the next start to remove: a reader changes no file), and says
    so, naming that log and how it goes."""
    path = config.parent / "data" / "switchpoint.db"
    path.parent.mkdir()
    before, after = _names(2), _names(3)
    _crash_after_writing(path, before, after)
    _restore_backup(path)
    wal = Path(f"{path}-wal")
    wal_bytes = wal.read_bytes()
    with caplog.at_level(logging.WARNING):
        decisions, _ = _report_ids(config, capsys)
    assert decisions == len(before)
    assert (f"{path}: not reading switchpoint.db-wal, the log of a database file deleted or "
            "replaced before a crash") in caplog.text
    assert "start the service once" in caplog.text
    assert wal.read_bytes() == wal_bytes  # left as it was: a read changes no file
    assert _rows(path) == set(before)  # the next start removes it
    assert not wal.exists()


def test_a_report_after_a_crash_reads_the_log_the_crash_left(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The crash left the file's own log (no restore): it holds committed decisions, and the
    report counts them."""
    path = config.parent / "data" / "switchpoint.db"
    path.parent.mkdir()
    before, after = _names(2), _names(3)
    _crash_after_writing(path, before, after)
    decisions, err = _report_ids(config, capsys)
    assert decisions == len(before) + len(after)
    assert "not reading" not in err


def test_holds_keys_does_not_take_a_restored_files_old_log_for_its_keys(
        tmp_path: Path) -> None:
    """A restored ``keys.db`` holding no key, beside the log of the file a crash left (which
    made keys): read without changing it, the restored file holds none."""
    path = tmp_path / "keys.db"
    _crash_after_writing(path, [], _names(2))
    _restore_backup(path)
    assert not holds_keys(tmp_path)
    assert Path(f"{path}-wal").exists()  # a read changes no file
    with KeyStore(path) as keys:
        assert keys.list() == []


# A store that holds ``keys.db`` open, as the service does: it makes a key, says "ready" and
# waits (to be killed).
_HOLDER = """
import sys, time
from pathlib import Path
from switchpoint.governance.keys import KeySpec, KeyStore
store = KeyStore(Path(sys.argv[1])).open()
store.create(KeySpec(tenant="default", name=sys.argv[2]))
print("ready", flush=True)
time.sleep(60)
"""



def _the_other_opens(path: Path, name: str = "the-services-key") -> subprocess.Popen[str]:
    """Another process (the service) opens the keys at ``path``, makes a key ``name`` and
    holds them open: returned once it says it is ready (killed if it does not)."""
    other = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), name], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "ready", "the other did not open"
    except BaseException:
        other.kill()
        other.wait()
        raise
    return other

def test_two_stores_opening_a_restored_file_at_once_keep_each_others_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service and ``switchpoint keys create`` open a restored ``keys.db`` at the same
    moment: both judge the crashed file's log beside it stale, the service removes it, opens
    the file and makes a key (in its own new log), and only then does the command remove what
    it judged. It removes nothing of the service's: the service's key is committed, and is
    there after the service is killed."""
    path = tmp_path / "keys.db"
    before = _names(2)
    _crash_after_writing(path, before, _names(2))
    _restore_backup(path)
    judged = moved._stale_note
    holders: list[subprocess.Popen[str]] = []

    def judged_then_the_other_opens(file: str | Path) -> object:
        stale = judged(file)
        if stale is not None and not holders:  # the other store opens right after the look
            holders.append(_the_other_opens(path))
        return stale

    monkeypatch.setattr(moved, "_stale_note", judged_then_the_other_opens)
    try:
        with KeyStore(path) as keys:
            keys.create(KeySpec(tenant="default", name="the-commands-key"))
    finally:
        for holder in holders:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
    assert holders, "the restored file's old log was not judged stale"
    monkeypatch.undo()
    assert _rows(path) == {*before, "the-services-key", "the-commands-key"}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.parametrize("name", ["switchpoint.db", "keys.db", "sessions.db"])
def test_a_note_that_names_no_shm_removes_the_old_log_alone_and_the_restored_file_reads_whole(
        tmp_path: Path, name: str) -> None:
    """A note naming the ``-wal`` alone (as an earlier version wrote it): the old log goes,
    its ``-shm`` stays, and SQLite makes that anew (no connection has it open): the restored
    file reads as the backup holds it, whole."""
    path = tmp_path / name
    before = _names(3)
    _crash_after_writing(path, before, _names(4))
    note = Path(f"{path}{moved.LOG_OWNER}")
    noted = json.loads(note.read_text())
    assert "shm" in noted  # what this version notes
    note.write_text(json.dumps({"db": noted["db"], "wal": noted["wal"]}))
    _restore_backup(path)
    shm = Path(f"{path}-shm")
    assert shm.exists()
    assert _rows(path) == set(before)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert _rows(path) == set(before)


def test_a_file_restored_while_another_store_has_the_old_one_open_takes_none_of_its_log(
        tmp_path: Path) -> None:
    """A restore while the service holds ``keys.db`` open (it has not seen it yet), and a
    ``switchpoint keys create`` then: the service's log and ``-shm`` beside the restored file
    are the old file's (the note names them); the command does not take them for the
    restored file's (it removes them: the service still has them open, by their inodes) and
    reads and writes the restored file alone."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as keys:
        keys.create(KeySpec(tenant="default", name="in-the-backup"))
    shutil.copy(path, f"{path}.backup")
    holder = _the_other_opens(path, "made-after-the-backup")
    try:
        _restore_backup(path)
        with KeyStore(path) as keys:
            keys.create(KeySpec(tenant="default", name="made-after-the-restore"))
        assert holder.poll() is None  # (still holding the old file open)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert _rows(path) == {"in-the-backup", "made-after-the-restore"}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_store_closing_as_another_opens_leaves_the_others_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``switchpoint keys create`` closes ``keys.db`` (its log goes with it) as the service
    opens the file and notes its own log: the command forgets only its own note, so the
    service's stays, and a restore after the service crashed is still judged by it."""
    path = tmp_path / "keys.db"
    before = _names(2)
    with KeyStore(path) as keys:
        for name in before:
            keys.create(KeySpec(tenant="default", name=name))
    shutil.copy(path, f"{path}.backup")
    read = moved._read_note_file
    holders: list[subprocess.Popen[str]] = []

    def read_then_the_other_opens(note: Path) -> object:
        noted = read(note)
        if closing and not holders:  # the service opens right after the command's look
            holders.append(_the_other_opens(path))
        return noted

    monkeypatch.setattr(moved, "_read_note_file", read_then_the_other_opens)
    closing = False
    try:
        keys = KeyStore(path).open()
        keys.create(KeySpec(tenant="default", name="the-commands-key"))
        closing = True
        keys.close()
        assert holders, "the command's close did not look at its note"
        noted = json.loads(Path(f"{path}{moved.LOG_OWNER}").read_text())
        assert tuple(noted["wal"]) == file_stamp(f"{path}-wal")  # the service's, kept
    finally:
        for holder in holders:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
    monkeypatch.undo()
    _restore_backup(path)
    assert _rows(path) == set(before)  # the crashed service's log is not replayed into it
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# A reader (as ``switchpoint report`` reads) of a restored file beside the crashed file's log:
# it begins a scan, says "reading", and ends it once told to, saying what it read.
_READER = """
import json, sys
from switchpoint.store.sqlite import read_only
conn = read_only(sys.argv[1])
try:
    scan = conn.execute("SELECT id FROM decisions ORDER BY rowid")
    first = scan.fetchmany(5)
    print("reading", flush=True)
    sys.stdin.readline()
    rows = len(first) + len(scan.fetchall())
    print(json.dumps({"rows": rows,
                      "check": conn.execute("PRAGMA integrity_check").fetchall()}), flush=True)
except Exception as exc:
    print(json.dumps({"error": str(exc)}), flush=True)
finally:
    conn.close()
"""


def test_a_start_while_a_report_reads_the_restored_file_alone_waits_for_it(
        tmp_path: Path) -> None:
    """A report reads the restored file alone (without SQLite's locks, the log beside it
    being the crashed file's) as the service starts: the start waits until the report is
    done before it writes the file, so the report reads the file whole, as restored (not
    pages half written, which it would call a damaged file), and then the start goes on."""
    path = tmp_path / "switchpoint.db"
    before = _names(50)
    _crash_after_writing(path, before, _names(3))
    _restore_backup(path)
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert reader.stdin is not None and reader.stdout is not None
    started = threading.Event()

    def start_and_write() -> None:  # the service's start, and its first writes
        with SQLiteStore(path):
            started.set()
            with sqlite3.connect(path, isolation_level=None) as db:
                db.execute("PRAGMA busy_timeout=10000")
                columns = [c[1] for c in db.execute("PRAGMA table_info(decisions)")]
                row = list(db.execute("SELECT * FROM decisions LIMIT 1").fetchone())
                db.execute("BEGIN")
                for n in range(3000):
                    row[columns.index("id")] = f"after-the-start-{n}"
                    db.execute(f"INSERT INTO decisions VALUES ({','.join('?' * len(row))})",
                               row)
                db.execute("COMMIT")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()

    try:
        assert reader.stdout.readline().strip() == "reading", "the reader did not start"
        service = threading.Thread(target=start_and_write)
        service.start()
        service.join(timeout=1.5)  # (time to write, were it not waiting)
        waited = not started.is_set()
        reader.stdin.write("go\n")
        reader.stdin.flush()
        read = json.loads(reader.stdout.readline())
        service.join(timeout=60)
    finally:
        reader.kill()
        reader.wait(timeout=10)
    assert read == {"rows": len(before), "check": [["ok"]]}
    assert waited, "the start did not wait for the report"
    assert started.is_set() and not service.is_alive()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM decisions").fetchone()[0] == len(before) + 3000
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_start_waits_for_a_report_that_reads_the_restored_file_alone_a_bounded_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A report that never ends holds up no start for ever: past the wait the start opens the
    file all the same and says so."""
    monkeypatch.setattr(moved, "READER_WAIT_S", 0.5)
    path = tmp_path / "switchpoint.db"
    before = _names(3)
    _crash_after_writing(path, before, _names(2))
    _restore_backup(path)
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "reading", "the reader did not start"
        with caplog.at_level(logging.WARNING):
            assert _rows(path) == set(before)
    finally:
        reader.kill()
        reader.wait(timeout=10)
    assert f"{path}-wal: a reader still reads the file beside it alone" in caplog.text
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
