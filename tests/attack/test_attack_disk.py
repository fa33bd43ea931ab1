"""What a client sends cannot fill the disk: session ids are bounded and hashed, expired pins
are purged, the logs have a retention (``store.retention_days``, ``switchpoint prune``) that
keeps the append-only guarantee for what it keeps, and ``/health`` says how much disk the data
takes.

Before: a 60 KB ``x-session-id`` was accepted and kept forever; pins were never purged; the
logs grew without bound and nothing said how big they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.gateway.engine import PINS_FILENAME, Gateway
from switchpoint.governance.ledger import LedgerRecord, load_state
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore, retention
from switchpoint.store.retention import cutoff_for, db_bytes
from tests.attack.attack_env import PIN_SOFT_S, Attacked, chat_body
from tests.command_line import run_refused_option

DAY = 86_400.0


def pins(attacked: Attacked) -> list[tuple[str, ...]]:
    with sqlite3.connect(attacked.data_dir / PINS_FILENAME) as db:
        return db.execute("SELECT session_id FROM session_pins").fetchall()


def test_session_ids_are_bounded_and_stored_hashed(attacked: Attacked) -> None:
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi", "beta"),
                   headers={"x-session-id": "s" * 300}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "x-session-id"
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi", "beta"),
                   headers={"x-session-id": "s" * 60_000}, timeout=10)
    assert r.status_code == 431  # over server.max_header_bytes: refused before the app
    raw = "conversation-" + "q" * 200
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi", "beta"),
                   headers={"x-session-id": raw}, timeout=10)
    assert r.status_code == 200
    entry = attacked.entry(r.headers["x-switchpoint-request-id"])
    assert re.fullmatch(r"[0-9a-f]{64}", entry["session_id"])
    stored = b"".join(p.read_bytes() for p in attacked.data_dir.iterdir() if p.is_file())
    assert raw.encode() not in stored



@pytest.mark.parametrize(("stream", "pad"), [(False, 4_000_000), (True, 500_000)])
def test_the_model_an_upstream_names_is_stored_bounded(attacked: Attacked, stream: bool,
                                                       pad: int) -> None:
    # The answer names its model with megabytes of text (within max_plain_answer_bytes and
    # max_sse_line_bytes): it used to be stored whole in the request log, every request.
    before = db_bytes(attacked.data_dir)
    ids = []
    for _ in range(3):
        r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=30, json=chat_body(
            f"[[fake:ok:model_pad={pad}]] hi", "beta", stream=stream))
        assert r.status_code == 200, r.text[:300]
        assert r.json()["model"] == "beta" if not stream else "data:" in r.text
        ids.append(r.headers["x-switchpoint-request-id"])
    for request_id in ids:
        upstream = attacked.entry(request_id)["upstream_model"]
        assert upstream.startswith("betaxxx") and len(upstream) < 400, len(upstream)
    assert db_bytes(attacked.data_dir) - before < 1_000_000

def test_expired_pins_are_purged(attacked: Attacked) -> None:
    # The pins are looked at after each request, each before it can expire: how many are
    # stored at once at the end depends on how fast the requests went (on a loaded host the
    # first had expired, and were purged, before the last were answered).
    before = set(pins(attacked))
    stored: set[tuple[str, ...]] = set()
    with httpx.Client(base_url=attacked.base, timeout=10) as client:
        for i in range(40):
            r = client.post("/v1/chat/completions", json=chat_body("hi", "beta"),
                            headers={"x-session-id": f"purge-me-{i}"})
            assert r.status_code == 200
            stored.update(pins(attacked))
        assert len(stored - before) >= 20  # (the writer commits them behind the answers)
        time.sleep(PIN_SOFT_S + 0.4)
        # Requests drive the purge (off the request path); the expired pins go.
        deadline = time.monotonic() + 30
        while len(pins(attacked)) > 1 and time.monotonic() < deadline:
            client.post("/v1/chat/completions", json=chat_body("hi", "beta"))
            time.sleep(0.2)
    assert len(pins(attacked)) <= 1


def test_health_reports_the_disk_to_the_operator(attacked: Attacked) -> None:
    assert "disk" not in httpx.get(f"{attacked.base}/health", timeout=10).json()
    disk = httpx.get(f"{attacked.base}/health", headers=attacked.admin, timeout=10).json()["disk"]
    assert disk["data_dir"] == str(attacked.data_dir)
    expected = sum(p.stat().st_size for p in attacked.data_dir.iterdir()
                   if p.name.endswith((".db", ".db-wal", ".db-shm")))
    assert disk["db_bytes"] > 0 and abs(disk["db_bytes"] - expected) < 1 << 20
    assert disk["free_bytes"] > 0 and disk["retention_days"] is None


# Retention ---------------------------------------------------------------------------------------


def fill(path: Path, n_old: int, n_new: int, age_days: float) -> list[str]:
    """``n_old`` decisions and requests ``age_days`` old and ``n_new`` of today; the new ids."""
    now = time.time()
    new_ids = []
    with SQLiteStore(path, synchronous="normal") as store:
        futures = []
        for i in range(n_old + n_new):
            ts = now - age_days * DAY if i < n_old else now - 60
            rid = uuid.uuid4().hex
            if i >= n_old:
                new_ids.append(rid)
            futures.append(store.append(DecisionRecord(
                id=rid, ts=ts, selected_model="m", cluster_id=1, cost_weight=0.5,
                candidates=["m"] * 20, cache_hit=False, routing_ms=1.0, embedding_ms=1.0,
                policy="cluster", weights_id="w", expected_error=0.1,
                cost_adjusted_score=0.2)))
            futures.append(store.append(RequestRecord(
                id=rid, ts=ts, requested_model="auto", status="error", http_status=502,
                pin_state="fresh", stream=False, latency_ms=1.0, error="e" * 600,
                reasoning=["r" * 200])))
        for f in futures:
            f.result(timeout=60)
    return new_ids


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
                for t in ("decisions", "requests")}


def test_prune_deletes_only_old_entries_and_the_file_shrinks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    new_ids = fill(db, n_old=6000, n_new=50, age_days=40)
    kept_before = {t: [r for r in v if r[0] in new_ids or r[1] in new_ids]
                   for t, v in rows(db).items()}
    # A dry run counts and changes nothing.
    assert main(["prune", "--data-dir", str(data), "--older-than", "30", "--dry-run",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted"] == {"decisions": 6000, "requests": 6000, "spend": 0,
                                 "feedback": 0}
    assert report["dry_run"]
    assert len(rows(db)["requests"]) == 6050
    size_before = db_bytes(db)
    assert main(["prune", "--data-dir", str(data), "--older-than", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted"] == {"decisions": 6000, "requests": 6000, "spend": 0,
                                 "feedback": 0}
    assert report["vacuum"] == "incremental"
    after = rows(db)
    assert after == kept_before  # what is kept is byte for byte what was there
    assert db_bytes(db) < size_before / 4
    # What is kept stays append-only: no update, no delete, not even by a later prune's cutoff
    # in the future.
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM requests")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE decisions SET selected_model = 'x'")
    prunes = conn.execute("SELECT count(*) FROM prunes").fetchone()[0]
    with pytest.raises(sqlite3.DatabaseError, match="in the future"):
        conn.execute("INSERT INTO prunes (ts, cutoff) VALUES (?, ?)",
                     (time.time(), time.time() + DAY))
    assert conn.execute("SELECT count(*) FROM prunes").fetchone()[0] == prunes
    conn.close()


def test_a_prune_killed_before_giving_the_space_back_gives_it_back_on_the_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    new_ids = fill(db, n_old=3000, n_new=50, age_days=40)
    full = db_bytes(db)
    pid = os.fork()
    if pid == 0:  # a prune SIGKILLed between its last deletion and giving the space back
        try:
            monkeypatch.setattr(retention, "_vacuum",
                                lambda *_: os.kill(os.getpid(), signal.SIGKILL))
            retention.prune(db, cutoff_for(30))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert {r[0] for r in rows(db)["decisions"]} == set(new_ids)  # its deletions were kept
    assert db_bytes(db) > full / 2  # but not the space they freed
    assert main(["prune", "--data-dir", str(data), "--older-than", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted"] == {"decisions": 0, "requests": 0, "spend": 0,
                                 "feedback": 0}
    assert report["vacuum"] == "incremental"
    assert db_bytes(db) < full / 4


def test_prune_bounds_the_spend_ledger_and_keeps_what_the_budgets_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Every governed request adds a spend row; a prune deleted the logs but never those, so
    # the ledger grew for as long as the service ran, whatever the retention.
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    now = time.time()
    month = datetime.fromtimestamp(now, UTC).replace(day=1, hour=0, minute=0, second=0,
                                                     microsecond=0).timestamp()
    ages = {"year": now - 400 * DAY, "two-months": now - 60 * DAY,
            "last-week-of-last-month": month - 3 * DAY, "this-month": month + 60,
            "a-minute-ago": now - 60}
    with SQLiteStore(db, synchronous="normal") as store:
        for name, ts in ages.items():
            for i in range(500):
                store.append(LedgerRecord(ts=ts, reservation_id=f"{name}-{i}", kind="settle",
                                          amount_usd=0.001, request_id=f"{name}-{i}",
                                          key_id="k1", tenant="acme", model="m",
                                          provider="openai")).result(timeout=30)
    before = load_state(db, now)
    assert main(["prune", "--data-dir", str(data), "--older-than", "1", "--dry-run",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["spend"] == 1000
    size = db_bytes(db)
    # A day's retention: the logs go back a day, the ledger to the week before the month.
    assert main(["prune", "--data-dir", str(data), "--older-than", "1", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["deleted"] == {"decisions": 0, "requests": 0,
                                                "spend": 1000, "feedback": 0}
    assert "1000 spend ledger entries" in out.err
    assert db_bytes(db) < size
    with sqlite3.connect(db) as conn:
        kept = {r[0].rsplit("-", 1)[0] for r in conn.execute(
            "SELECT reservation_id FROM spend")}
        assert kept == {"last-week-of-last-month", "this-month", "a-minute-ago"}
        # What the budgets read is as before the prune, and stays append-only.
        assert load_state(db, now) == before
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM spend")
    with SQLiteStore(db, synchronous="normal"):
        pass  # the store opens on the pruned file


def test_prune_needs_a_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(tmp_path / "switchpoint.db", 1, 1, 40)
    assert main(["prune", "--data-dir", str(tmp_path)]) == 2
    assert "--older-than DAYS, or set store.retention_days" in capsys.readouterr().err
    code, _, err = run_refused_option(  # (argparse: --older-than's type refuses it)
        ["prune", "--data-dir", tmp_path, "--older-than", "-3"], capsys)
    assert code == 2
    assert 'argument --older-than: "-3" is negative' in err


def _service_keeping_7_days(db: Path) -> Gateway:
    """A gateway opened on ``db`` (its folder the data_dir) whose store.retention_days is 7;
    close it."""
    settings = load_settings(None, overrides={"data_dir": str(db.parent),
                                              "store": {"retention_days": 7}}, environ={})
    gateway = Gateway(settings, store=SQLiteStore(db))
    gateway.open()
    return gateway


def _housekeep(gateway: Gateway) -> None:
    """Run the housekeeping every request starts (due at start, hourly after) to its end."""

    async def housekeeping() -> None:
        gateway._housekeeping.maintain()
        await gateway._housekeeping.done()

    asyncio.run(housekeeping())


def test_the_service_applies_retention_days(tmp_path: Path) -> None:
    db = tmp_path / "switchpoint.db"
    new_ids = fill(db, n_old=300, n_new=5, age_days=10)
    gateway = _service_keeping_7_days(db)
    _housekeep(gateway)
    gateway.close()
    kept = rows(db)
    assert sorted(r[1] for r in kept["requests"]) == sorted(new_ids)
    assert sorted(r[0] for r in kept["decisions"]) == sorted(new_ids)


def test_the_services_retention_leaves_out_a_step_of_the_clock_ahead_while_it_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The clock steps 100 days ahead between two of a running service's prunes (an NTP
    step, a machine resumed with a wrong clock), and the service logs on meanwhile: its
    entries from before the step are all older than its 7 days by the clock, and the newest
    entry no longer tells, yet they stay (as old as the time that really passed makes them),
    and it warns; those older than 7 days before the step still go. (The clock before the step
    read 100 days behind this machine's, which the entries logged then carry.)"""
    db = tmp_path / "switchpoint.db"
    fill(db, n_old=5, n_new=0, age_days=110)  # older than the 7 days before the step
    fill(db, n_old=5, n_new=0, age_days=100)  # logged just before the step
    before = [r[0] for r in rows(db)["decisions"]][5:]
    gateway = _service_keeping_7_days(db)
    behind = [100 * DAY]
    gateway._housekeeping._retention_clock = retention.RetentionClock(
        wall=lambda: time.time() - behind[0])
    try:
        gateway._housekeeping.run(False, 7)  # before the step
        assert [r[0] for r in rows(db)["decisions"]] == before
        behind[0] = 0.0  # the step
        after = fill(db, n_old=0, n_new=5, age_days=0)  # (logged since, a minute old)
        with caplog.at_level("WARNING", logger="switchpoint"):
            gateway._housekeeping.run(False, 7)
    finally:
        gateway.close()
    assert [r[0] for r in rows(db)["decisions"]] == before + after
    assert "the clock stepped ahead 100.00 days since the last prune" in caplog.text


def test_the_services_retention_goes_on_leaving_out_a_step_of_the_clock_across_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The clock steps 100 days ahead while the service is stopped, and the restarted service
    logs on: the entries from before the step stay (the retention goes on from the reading
    it kept, the machine not rebooted), where all went at the first prune after the restart,
    the newest entry no longer telling; those older than 7 days before the step still go.
    Set right again (and restarted), the retention goes by the clock: what it stamped ahead
    stays until it gets there, the rest goes as it grows old. (The clock before the step read
    100 days behind this machine's, which the entries logged then carry.)"""
    db = tmp_path / "switchpoint.db"
    fill(db, n_old=5, n_new=0, age_days=110)  # older than the 7 days before the step
    fill(db, n_old=5, n_new=0, age_days=100)  # logged just before the step
    before = [r[0] for r in rows(db)["decisions"]][5:]
    behind, passed = [100 * DAY], [0.0]

    def a_service_runs_retention() -> None:
        gateway = _service_keeping_7_days(db)
        gateway._housekeeping._retention_clock = retention.RetentionClock(
            wall=lambda: time.time() - behind[0],
            since_boot=lambda: retention.since_boot() + passed[0])
        try:
            gateway._housekeeping.run(False, 7)
        finally:
            gateway.close()

    a_service_runs_retention()  # before the step
    assert [r[0] for r in rows(db)["decisions"]] == before
    behind[0] = 0.0  # the step, the service stopped
    after = fill(db, n_old=0, n_new=5, age_days=0)  # (logged since, a minute old)
    with caplog.at_level("WARNING", logger="switchpoint"):
        a_service_runs_retention()
    assert [r[0] for r in rows(db)["decisions"]] == before + after
    assert "the clock stepped ahead 100.00 days since the last prune" in caplog.text
    behind[0] = 100 * DAY  # set right
    a_service_runs_retention()
    assert [r[0] for r in rows(db)["decisions"]] == before + after
    behind[0], passed[0] = 92 * DAY, 8 * DAY  # 8 days on
    a_service_runs_retention()
    assert [r[0] for r in rows(db)["decisions"]] == after


def test_the_services_retention_leaves_a_file_put_under_it_alone(tmp_path: Path) -> None:
    """``switchpoint.db`` replaced under the service (a restore while it runs): its hourly
    retention prune must not open the file now at the path (with the old file's -wal and -shm
    still there, its own connection would take them as the new file's log) nor delete the
    restored file's entries; the service says the file was replaced, and a restart opens it."""
    db = tmp_path / "switchpoint.db"
    fill(db, n_old=50, n_new=5, age_days=10)
    backup = tmp_path / "backup.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    gateway = _service_keeping_7_days(db)
    try:
        os.replace(backup, db)  # within the second before the store looks
        assert gateway.store is not None and gateway.store.gone() == "was replaced"
        _housekeep(gateway)
    finally:
        gateway.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 55
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 55
    finally:
        conn.close()


def _files_of(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir())}


def test_a_dry_run_prune_changes_no_file_of_data_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dry run counts: no schema upgrade, no note written, no file written, made or
    removed (here a store closed cleanly, so with its note and no -wal)."""
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    fill(db, n_old=20, n_new=5, age_days=40)
    before = _files_of(data)
    assert main(["prune", "--data-dir", str(data), "--older-than", "30", "--dry-run",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["deleted"]["requests"] == 20
    assert _files_of(data) == before
