"""``switchpoint.db.wal-owner``: the note of which database file and which ``-wal`` a store
last opened, judged at the next open. Whatever is at that path (a damaged, huge, deeply nested
or hostile note, a FIFO) must neither stop nor hang a start, nor remove a log the note does
not truly name; the note itself is its owner's alone."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from switchpoint._files import file_stamp
from switchpoint.gateway.sessions import SQLitePinStore
from switchpoint.governance.keys import KeyStore
from switchpoint.store import SQLiteStore
from switchpoint.store.moved import LOG_OWNER, drop_stale_log

#: Connections left open to the end of the run, as a process killed leaves them: their -wal
#: stays at the path, holding their commits.
_KEPT: list[sqlite3.Connection] = []


def _crashed(path: Path) -> None:
    """``path`` in WAL mode with a committed row in its ``-wal`` alone, as a crash leaves it
    (the connection is never closed: its process died)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (42)")
    _KEPT.append(conn)


@pytest.mark.parametrize("content", [
    b"[" * 100_000,                     # nested past Python's recursion limit
    b'{"db": ' + b"[" * 50_000 + b"]",  # the same, inside a field
    b'{"db": "abc", "wal": 5}',        # the wrong shapes
    b'{"db": [1, 2], "wal": [1, 2], "x": "' + b"y" * (4 << 20) + b'"}',  # huge
    b"\xff\xfe not text",
])
def test_a_damaged_note_is_ignored_and_the_log_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.db"
    _crashed(path)
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    Path(f"{path}{LOG_OWNER}").write_bytes(content)
    assert drop_stale_log(path) == []
    assert wal.exists()


def test_a_fifo_at_the_note_does_not_hang_a_start(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    os.mkfifo(f"{path}{LOG_OWNER}")
    code = ("import sys; from switchpoint.store.moved import drop_stale_log; "
            "print(drop_stale_log(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_store_opening_a_damaged_note_starts_and_writes_a_good_one(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    note = Path(f"{path}{LOG_OWNER}")
    note.write_bytes(b"[" * 100_000)
    with SQLiteStore(path) as store:
        assert store.decisions(limit=1) == []
        noted = json.loads(note.read_text())
        assert tuple(noted["db"]) == file_stamp(path)
        assert tuple(noted["wal"]) == file_stamp(f"{path}-wal")
        assert stat.S_IMODE(note.stat().st_mode) == 0o600


def test_a_restore_with_its_own_log_and_a_crash_of_the_noted_file_keep_their_logs(
        tmp_path: Path) -> None:
    """What the note must not remove: the noted file's own log after a crash (no deletion),
    and a log a restore (``cp -a`` of the file and its ``-wal``) brought with its file."""
    path = tmp_path / "s.db"
    with SQLiteStore(path):
        pass
    _crashed(tmp_path / "other.db")
    # the noted file, crashed: its log stays
    note = Path(f"{path}{LOG_OWNER}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE extra (x)")
    _KEPT.append(conn)
    SQLiteStore(path).upgrade()  # notes this file and this -wal
    assert note.exists()
    assert drop_stale_log(path) == []
    # a restore bringing its own -wal (copied: new files, new inodes)
    for suffix in ("", "-wal", "-shm"):
        shutil.copy2(tmp_path / f"other.db{suffix}", f"{path}{suffix}.new")
    for suffix in ("", "-wal", "-shm"):
        os.replace(f"{path}{suffix}.new", f"{path}{suffix}")
    assert drop_stale_log(path) == []
    assert Path(f"{path}-wal").exists()


def test_a_clean_close_forgets_the_note_of_a_log_gone(tmp_path: Path) -> None:
    """Once the log noted is gone from the path (a clean close checkpoints and removes it),
    the note goes too: where the system does not say when a file was made, a later log given
    the freed inode number (a restore's own -wal) would otherwise pass for the noted one and
    be removed. A note naming a log still there (another store has the file open) is kept."""
    path = tmp_path / "s.db"
    note = Path(f"{path}{LOG_OWNER}")
    other = SQLiteStore(path).open()
    try:
        with SQLiteStore(path):
            assert note.exists()
        assert note.exists()  # the log is still there: the other store's
    finally:
        other.close()
    assert not Path(f"{path}-wal").exists()
    assert not note.exists()
    SQLiteStore(path).upgrade()  # (as switchpoint prune does)
    assert not note.exists()


def test_every_store_notes_its_log_while_open_and_forgets_it_at_a_clean_close(
        tmp_path: Path) -> None:
    """The key store and the session pins note their file's log as the logs' store does."""
    keys_path, pins_path = tmp_path / "keys.db", tmp_path / "sessions.db"
    keys = KeyStore(keys_path).open()
    pins = SQLitePinStore(pins_path)
    try:
        for path in (keys_path, pins_path):
            noted = json.loads(Path(f"{path}{LOG_OWNER}").read_text())
            assert tuple(noted["db"]) == file_stamp(path)
            assert tuple(noted["wal"]) == file_stamp(f"{path}-wal")
            assert tuple(noted["shm"]) == file_stamp(f"{path}-shm")
    finally:
        keys.close()
        pins.close()
    for path in (keys_path, pins_path):
        assert not Path(f"{path}-wal").exists()
        assert not Path(f"{path}{LOG_OWNER}").exists()


def test_a_log_set_aside_by_a_start_killed_before_it_removed_it_goes_at_the_next(
        tmp_path: Path) -> None:
    """A start sets the old log aside, judges it and removes it: one killed in between leaves
    it aside under a name saying its pid, which the next removal of a stale log clears."""
    path = tmp_path / "s.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    aside = tmp_path / f".s.db-wal.{dead}.0badf00d.tmp"
    aside.write_bytes(b"the old log, set aside")
    _crashed(path)
    with SQLiteStore(path):  # (its note, and a -wal of its own)
        pass
    assert aside.exists()  # no stale log: nothing looked for
    _crashed(tmp_path / "other.db")
    os.replace(tmp_path / "other.db", path)  # another file, a stale log beside it
    noted = json.loads(Path(f"{path}{LOG_OWNER}").read_text())
    assert tuple(noted["wal"]) == file_stamp(f"{path}-wal")
    assert drop_stale_log(path) == [Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert not aside.exists()
