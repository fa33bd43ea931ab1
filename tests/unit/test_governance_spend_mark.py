"""The spend mark: spend made after a backup of switchpoint.db was taken still counts against the
budgets once that backup is restored."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from switchpoint.config import Settings
from switchpoint.errors import BudgetExceededError
from switchpoint.governance.budgets import parse_budget, period_start
from switchpoint.governance.governor import Governor
from switchpoint.governance.keys import KeySpec
from switchpoint.governance.ledger import CARRY, TOTAL, key_account, tenant_account
from switchpoint.governance.reports import Reports
from switchpoint.governance.spend_mark import SPEND_MARK_FILENAME, Mark, read_marks
from switchpoint.store import SQLiteStore
from tests.integration.servers import until
from tests.unit.test_governance_governor import CARDS, admit, settings
from tests.unit.test_store import _backup

AT = 1_800_001_800.0  # 2027-01-15T08:30:00Z
ACME = tenant_account("acme")
# A request on the small model that may cost up to $0.0060032 (its worst case).
BODY: dict[str, Any] = {"model": "small", "max_tokens": 10_000,
                        "messages": [{"role": "user", "content": "hi"}]}


def _spend(gov: Governor, s: Settings, store: SQLiteStore, cost: float, request_id: str,
           key_id: str | None = None) -> None:
    """One request of tenant acme (with the key ``key_id``) that cost ``cost``, its rows
    written."""
    policy = gov.policy(s, "acme", key_id)
    ticket, _ = gov.admit(s, policy, list(CARDS), dict(BODY), key_id=key_id, tenant="acme",
                          notes=[], require_first=False)
    rows, _ = gov.settle(ticket, request_id=request_id, card=CARDS[2], cost_usd=cost, tokens=5)
    for row in rows:
        store.append(row).result()


def _restore(backup: Path, db: Path) -> None:
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(backup.read_bytes())


def _started(s: Settings) -> tuple[Governor, SQLiteStore]:
    store = SQLiteStore(s.db_path).open()
    gov = Governor(s, store=store, clock=lambda: AT, monotonic=lambda: AT)
    gov.open()
    return gov, store


def _stopped(gov: Governor, store: SQLiteStore) -> None:
    gov.close()
    store.close()


def _month_at_start(s: Settings) -> tuple[float, float]:
    """What tenant acme and the gateway have spent this month as a start sees it."""
    gov, store = _started(s)
    try:
        return gov.ledger.spent(ACME, "month"), gov.ledger.spent(TOTAL, "month")
    finally:
        _stopped(gov, store)


def _spent_then_restored(tmp_path: Path, *, stop: bool = True
                         ) -> tuple[Settings, Path]:
    """Tenant acme (0.02/month; the gateway 1/month) spends 0.005, a backup is taken, it
    spends 0.01 more (the service stopped gracefully with ``stop``, else killed before any
    mark), and the backup is put back: the settings and the backup."""
    s = settings(tmp_path / "data", tenants={"acme": {"budgets": ["0.02/month"]}},
                 budgets={"total": ["1/month"]})
    gov, store = _started(s)
    _spend(gov, s, store, 0.005, "q1")
    backup = tmp_path / "backup.db"
    _backup(Path(s.db_path), backup)
    _spend(gov, s, store, 0.005, "q2")
    _spend(gov, s, store, 0.005, "q3")
    if stop:
        _stopped(gov, store)
    else:
        gov._stop.set()  # (the process dies: nothing more runs)
        store.close()
    _restore(backup, Path(s.db_path))
    return s, backup


def test_spend_since_a_restored_backup_still_counts_against_the_budget(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The tenant had spent 0.015 of 0.02 when the backup holding 0.005 was restored: the
    start counts the 0.01 again, so the budget refuses a request that may cost 0.006 as it did
    before the restore; it gave the spend back (such a request was admitted)."""
    s, _ = _spent_then_restored(tmp_path)
    with caplog.at_level(logging.WARNING, "switchpoint.governance"):
        gov, store = _started(s)
    try:
        assert gov.ledger.spent(ACME, "month") == pytest.approx(0.015)
        assert gov.ledger.spent(TOTAL, "month") == pytest.approx(0.015)
        with pytest.raises(BudgetExceededError):
            admit(gov, s, "acme", dict(BODY))
        warned = [r.getMessage() for r in caplog.records if "carried over" in r.getMessage()]
        assert len(warned) == 1
        assert "tenant acme $0.010000 this month" in warned[0]
        assert "the gateway $0.010000 this month" in warned[0]
    finally:
        _stopped(gov, store)
    # The carry is a row of its own, which the next start and the reports read as spend,
    # counted once (the gateway's total beside the tenant's, not twice).
    db = sqlite3.connect(s.db_path)
    try:
        rows = db.execute("SELECT tenant, amount_usd FROM spend WHERE kind = ?",
                          (CARRY,)).fetchall()
    finally:
        db.close()
    assert sorted(rows, key=str) == [("acme", pytest.approx(0.01)),
                                     (None, pytest.approx(0.01))]
    assert _month_at_start(s) == pytest.approx((0.015, 0.015))
    alerts = Reports(s.db_path, s, clock=lambda: AT)._recent_spends(
        [(ACME, period_start("month", AT), AT + 1), (TOTAL, period_start("month", AT), AT + 1)])
    assert alerts == [pytest.approx(0.015), pytest.approx(0.015)]


def test_a_log_as_new_as_the_mark_counts_nothing_twice(tmp_path: Path) -> None:
    s = settings(tmp_path, tenants={"acme": {"budgets": ["0.02/month"]}})
    gov, store = _started(s)
    _spend(gov, s, store, 0.004, "q1")
    _stopped(gov, store)
    [mark] = read_marks(tmp_path / SPEND_MARK_FILENAME)
    assert mark == Mark(ACME, "month", period_start("month", AT), mark.spent_usd)
    assert mark.spent_usd == pytest.approx(0.004)
    gov, store = _started(s)
    try:
        assert gov.ledger.spent(ACME, "month") == pytest.approx(0.004)
    finally:
        _stopped(gov, store)
    db = sqlite3.connect(s.db_path)
    try:
        assert db.execute("SELECT count(*) FROM spend WHERE kind = ?", (CARRY,)).fetchone() == (0,)
    finally:
        db.close()


def test_a_crash_before_the_first_mark_carries_nothing(tmp_path: Path) -> None:
    """No mark was written (killed within the interval of the start): the spend since the
    backup is lost, as the docs say; nothing is made up."""
    s, _ = _spent_then_restored(tmp_path, stop=False)
    assert not (Path(s.data_dir) / SPEND_MARK_FILENAME).exists()
    gov, store = _started(s)
    try:
        assert gov.ledger.spent(ACME, "month") == pytest.approx(0.005)
    finally:
        _stopped(gov, store)


def test_a_damaged_mark_is_refused_by_line_and_a_past_period_s_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s, _ = _spent_then_restored(tmp_path)
    path = Path(s.data_dir) / SPEND_MARK_FILENAME
    month = period_start("month", AT)
    good = path.read_text()
    path.write_text(
        "not json\n"
        f'{{"account":"tenant:acme","period":"month","start":{month},"spent_usd":-5}}\n'
        f'{{"account":"tenant:acme","period":"month","start":{month},"spent_usd":1e999}}\n'
        f'{{"account":"all","period":"month","start":{month - 86400 * 31},"spent_usd":9}}\n'
        + good)
    with caplog.at_level(logging.WARNING, "switchpoint.governance"):
        # The good line still carries; the bad ones and the past month's carry nothing.
        assert _month_at_start(s) == pytest.approx((0.015, 0.015))
    refused = [r.getMessage() for r in caplog.records if "hold no spend mark" in r.getMessage()]
    assert len(refused) == 1
    for line in ("line 1: it is not JSON", "line 2: its spend", "line 3: its spend"):
        assert line in refused[0]
    assert "line 4" not in refused[0]


def test_the_running_service_writes_the_mark_from_its_background_thread(tmp_path: Path) -> None:
    """Not only a graceful stop: the ledger's thread writes the mark while the service runs,
    so a crash loses at most the interval's spend."""
    s = settings(tmp_path, tenants={"acme": {"budgets": ["0.02/month"]}})
    gov, store = _started(s)
    _spend(gov, s, store, 0.004, "q1")
    gov._stop.set()  # (killed: no stop writes a mark)
    store.close()
    path = tmp_path / SPEND_MARK_FILENAME
    path.unlink(missing_ok=True)
    gov, store = _started(s)
    try:
        until(lambda: [m.spent_usd for m in read_marks(path)] == [pytest.approx(0.004)],
              "the running service wrote the spend it holds to the mark")
    finally:
        _stopped(gov, store)


def test_a_gateway_without_budgets_makes_no_mark(tmp_path: Path) -> None:
    s = settings(tmp_path)
    gov, store = _started(s)
    _stopped(gov, store)
    assert not (tmp_path / SPEND_MARK_FILENAME).exists()


def test_an_account_s_day_and_month_each_get_back_what_they_lost_once(tmp_path: Path) -> None:
    """Lost since the backup: 0.002 earlier this month and 0.004 today. The day's carry counts
    in the month too, so the month is carried only what it lacks beside it (0.002): each ends
    with what its mark says, not the month 0.004 more."""
    s = settings(tmp_path / "data", tenants={"acme": {"budgets": ["0.02/day", "0.5/month"]}})
    now = [AT - 5 * 86400]
    store = SQLiteStore(s.db_path).open()
    gov = Governor(s, store=store, clock=lambda: now[0], monotonic=lambda: now[0])
    gov.open()
    _spend(gov, s, store, 0.001, "q1")
    _backup(Path(s.db_path), tmp_path / "backup.db")
    now[0] = AT - 3 * 86400
    _spend(gov, s, store, 0.002, "q2")
    now[0] = AT
    _spend(gov, s, store, 0.004, "q3")
    _stopped(gov, store)
    _restore(tmp_path / "backup.db", Path(s.db_path))
    gov, store = _started(s)
    try:
        assert gov.ledger.spent(ACME, "day") == pytest.approx(0.004)
        assert gov.ledger.spent(ACME, "month") == pytest.approx(0.007)
    finally:
        _stopped(gov, store)


def test_a_key_s_budget_gets_back_what_it_spent_since_the_backup(tmp_path: Path) -> None:
    """With client keys, each key's budget has its line in the mark (read from keys.db by the
    ledger's thread, not by a request) and its spend since the backup is carried, to the key
    alone."""
    s = settings(tmp_path / "data", auth="keys", tenants={"acme": {}})
    gov, store = _started(s)
    key = gov.keys.create(KeySpec(tenant="acme", budgets=["0.02/month"])).record.id
    _spend(gov, s, store, 0.005, "q1", key)
    _backup(Path(s.db_path), tmp_path / "backup.db")
    _spend(gov, s, store, 0.005, "q2", key)
    _stopped(gov, store)
    _restore(tmp_path / "backup.db", Path(s.db_path))
    gov, store = _started(s)
    try:
        assert gov.ledger.spent(key_account(key), "month") == pytest.approx(0.01)
        assert gov.ledger.spent(ACME, "month") == pytest.approx(0.005)  # (no budget, no line)
    finally:
        _stopped(gov, store)


def test_a_report_before_the_start_shows_the_spend_the_start_will_carry_and_writes_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A command that only reads (``switchpoint report``, ``keys show``) shows the restored
    database as the next start leaves it, saying so, and books nothing: the start does."""
    s, _ = _spent_then_restored(tmp_path)
    with caplog.at_level(logging.WARNING, "switchpoint.governance"):
        status = Reports.from_settings(s, clock=lambda: AT).ledger.status(
            ACME, parse_budget("0.02/month"))
    assert status["spent_usd"] == pytest.approx(0.015)
    assert any("shown counted again" in r.getMessage() for r in caplog.records)
    db = sqlite3.connect(s.db_path)
    try:
        assert db.execute("SELECT count(*) FROM spend WHERE kind = ?", (CARRY,)).fetchone() == (0,)
    finally:
        db.close()
