"""The spill file (where a store keeps the records its database refused) between real
processes with no service running: a command taking it up and another appending to it at the
same moment lose nothing, and ``switchpoint prune`` takes it up before it prunes."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from switchpoint.gateway.owner import DataDirLock
from switchpoint.store import SQLiteStore
from switchpoint.store.spill import _spill_lines
from tests.command_line import run
from tests.decisions import a_decision

ROOT = Path(__file__).resolve().parents[2]

_RECORD = """
import time
from switchpoint.store import DecisionRecord

def record(id_):
    return DecisionRecord(id=id_, ts=time.time(), selected_model="a", cluster_id=1,
                          cost_weight=0.5, candidates=["a"], cache_hit=False, routing_ms=0.1,
                          embedding_ms=1.0, policy="cluster", weights_id="w1",
                          expected_error=0.1, cost_adjusted_score=0.2)
"""

# A command opening the store with no service running: it takes the spill file up, and is
# held (between its reading of the file and its writing of the records) until ``go`` exists.
_TAKER = """
import sys, time
from pathlib import Path
from switchpoint.store import SQLiteStore
from switchpoint.store import spill as store_spill

path, go = sys.argv[1], Path(sys.argv[2])
read = store_spill._spilled_rows

def held(text, progress):
    rows = read(text, progress)
    print("reading", flush=True)
    while not go.exists():
        time.sleep(0.02)
    return rows

store_spill._spilled_rows = held
with SQLiteStore(path):
    pass
print("done", flush=True)
"""

# Another command, opened before the take-up, whose database refuses writes (a full disk) once
# ``append`` exists: what it logs then is kept in the spill file, and it crashes (killed once
# it says so).
_APPENDER = _RECORD + """
import sys
from pathlib import Path
from switchpoint.store import SQLiteStore
from tests.fakes.full_disk import full_disk

path, id_, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
store = SQLiteStore(path).open()
print("open", flush=True)
while not go.exists():
    time.sleep(0.02)
with full_disk(store):
    store.append_lazy(record(id_))
    while not store._retry:
        time.sleep(0.01)
    print("kept", flush=True)
    time.sleep(60)  # killed here
"""


def _spawn(script: str, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """``script`` run by Python in a process of its own, and a queue of the lines it prints."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _said(lines: queue.Queue[str], what: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            if lines.get(timeout=left) == what:
                return True
        except queue.Empty:
            return False
    return False


def _ids(db: Path) -> set[str]:
    with SQLiteStore(db) as store:
        return {d["id"] for d in store.decisions(limit=100)}


def test_a_record_kept_while_another_command_takes_the_spill_file_up_is_not_lost(
        tmp_path: Path) -> None:
    """One command takes up the spill file while another, whose database refuses writes,
    adds a record to it and then crashes: the taker removed the file with that record in it
    (added after it read the file), so it was neither written nor kept anywhere. Now adding
    to the file waits for a take-up under way, and the record is there for the next."""
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    with SQLiteStore(db) as store:  # the schema, as a first start makes it
        spill = store.spill_path
    waiting = [a_decision() for _ in range(2)]
    go, append = tmp_path / "go", tmp_path / "append"
    late = uuid.uuid4().hex
    appender, appender_says = _spawn(_APPENDER, str(db), late, str(append))
    taker = None
    try:
        assert _said(appender_says, "open", 30)
        spill.write_text(_spill_lines(waiting), encoding="utf-8")  # as an outage left it
        taker, taker_says = _spawn(_TAKER, str(db), str(go))
        assert _said(taker_says, "reading", 30)
        append.touch()
        kept = _said(appender_says, "kept", 3)  # (at once, or once the take-up is done)
        go.touch()
        assert _said(taker_says, "done", 30)
        assert taker.wait(timeout=30) == 0
        assert kept or _said(appender_says, "kept", 30)
    finally:
        go.touch()
        append.touch()
        for proc in (taker, appender):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
    assert {r.id for r in waiting} | {late} <= _ids(db)
    assert not spill.exists()


def test_prune_takes_up_the_spill_file_first_unless_a_service_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``switchpoint prune`` with no service running writes what the spill file keeps, then
    prunes (a kept record older than the cutoff is pruned with the rest, not written back
    later); with a service running it leaves the file to the service. (The prune beside the
    service runs in a process of its own: this one holds the service's lock.)"""
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    with SQLiteStore(db) as store:
        spill = store.spill_path
    old, recent = a_decision(ts=time.time() - 90 * 86400), a_decision()
    spill.write_text(_spill_lines([old, recent]), encoding="utf-8")
    prune = [str(Path(sys.executable).with_name("switchpoint")), "prune", "--older-than", "30",
             "--data-dir", str(data)]
    env = dict(os.environ)
    service = DataDirLock(data).acquire()  # a service serving from data_dir
    try:
        done = subprocess.run(prune, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert spill.read_text(encoding="utf-8") == _spill_lines([old, recent])
        assert "2 record(s) wait in" in done.stderr, done.stderr
    finally:
        service.release()
    code, _, err = run(prune[1:], capsys)
    assert code == 0, err
    assert not spill.exists(), err
    assert "deleted 1 decisions" in err, err
    assert _ids(db) == {recent.id}
