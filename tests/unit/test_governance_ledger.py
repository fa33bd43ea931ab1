"""The spend ledger: reservations all or nothing, settlement, release, expiry, rate windows,
concurrency, and rebuilding from the ``spend`` table after a restart or a crash."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from switchpoint.errors import StoreError
from switchpoint.governance.budgets import PERIODS, Budget, period_end, period_start
from switchpoint.governance.ledger import (
    CHARGED_ROWS,
    EXPIRE_CHARGE,
    TOTAL,
    Blocked,
    Ledger,
    LedgerRecord,
    Limits,
    OpenReservation,
    Ticket,
    load_state,
    rebuild,
    settle_accounts,
)
from switchpoint.store import SQLiteStore

T0 = 1_800_001_800.0  # 2027-01-15T08:30:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reserve(ledger: Ledger, amount: float, budgets: dict[str, list[Budget]], *,
            accounts: tuple[str, ...] = ("tenant:a",), tokens: int = 10,
            limits: tuple[Limits, ...] = (), ttl: float = 60.0) -> Ticket | Blocked:
    return ledger.reserve(holds={a: amount for a in accounts}, budgets=budgets,
                          worst_by_model={"m": amount}, tokens=tokens, limits=limits,
                          ttl_s=ttl)


def test_exactly_n_reservations_fit_a_budget_of_n_times_the_amount() -> None:
    ledger = Ledger(Clock())
    budgets = {"tenant:a": [Budget(0.3, "day")]}
    tickets = [reserve(ledger, 0.1, budgets) for _ in range(4)]
    assert [isinstance(t, Ticket) for t in tickets] == [True, True, True, False]
    blocked = tickets[3]
    assert isinstance(blocked, Blocked) and blocked.kind == "budget"
    assert "requests in flight hold" in blocked.message and blocked.retry_after == 1.0
    assert ledger.held("tenant:a") == pytest.approx(0.3)


def test_settling_charges_the_real_cost_and_frees_the_rest() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    budgets = {"tenant:a": [Budget(0.3, "day")]}
    first = reserve(ledger, 0.2, budgets)
    assert isinstance(first, Ticket)
    assert isinstance(reserve(ledger, 0.2, budgets), Blocked)
    ledger.settle(first, charged_usd=0.05, accounts=["tenant:a", TOTAL], tokens=None)
    assert ledger.spent("tenant:a", "day") == pytest.approx(0.05)
    assert ledger.spent(TOTAL, "month") == pytest.approx(0.05)
    assert ledger.held("tenant:a") == 0.0
    second = reserve(ledger, 0.25, budgets)
    assert isinstance(second, Ticket)
    ledger.release(second)
    assert ledger.spent("tenant:a", "day") == pytest.approx(0.05)
    spent_out = reserve(ledger, 0.26, budgets)
    assert isinstance(spent_out, Blocked)
    assert "resets in" in spent_out.message
    assert spent_out.retry_after == pytest.approx(period_end("day", T0) - T0)


def test_a_request_dearer_than_the_whole_budget_is_told_so() -> None:
    blocked = reserve(Ledger(Clock()), 2.0, {"tenant:a": [Budget(1.0, "day")]})
    assert isinstance(blocked, Blocked) and blocked.retry_after is None
    assert "more than tenant a's whole budget" in blocked.message


def test_reservations_are_all_or_nothing() -> None:
    ledger = Ledger(Clock())
    budgets = {"tenant:a": [Budget(1.0, "day")], "key:k": [Budget(0.1, "day")]}
    blocked = reserve(ledger, 0.2, budgets, accounts=("tenant:a", "key:k"))
    assert isinstance(blocked, Blocked) and blocked.account == "key:k"
    assert ledger.held("tenant:a") == 0.0 and ledger.open_tickets() == 0


def test_periods_reset_at_their_calendar_boundary() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    budgets = {"tenant:a": [Budget(0.1, "hour"), Budget(0.15, "day")]}
    t = reserve(ledger, 0.1, budgets)
    assert isinstance(t, Ticket)
    ledger.settle(t, charged_usd=0.1, accounts=["tenant:a"], tokens=None)
    assert isinstance(reserve(ledger, 0.01, budgets), Blocked)  # the hour is spent
    clock.now = period_end("hour", T0) + 1
    t = reserve(ledger, 0.05, budgets)
    assert isinstance(t, Ticket)  # new hour; the day still has 0.05
    ledger.settle(t, charged_usd=0.05, accounts=["tenant:a"], tokens=None)
    assert isinstance(reserve(ledger, 0.01, budgets), Blocked)  # the day is spent
    clock.now = period_end("day", T0) + 1
    assert isinstance(reserve(ledger, 0.1, budgets), Ticket)


def test_rpm_and_tpm_windows() -> None:
    clock = Clock()
    ledger = Ledger(clock, monotonic=clock)
    limits = (Limits("key:k", rpm=2, tpm=100),)
    a = reserve(ledger, 0.0, {}, tokens=60, limits=limits)
    assert isinstance(a, Ticket)
    tpm = reserve(ledger, 0.0, {}, tokens=60, limits=limits)
    assert isinstance(tpm, Blocked) and tpm.kind == "tpm"
    ledger.settle(a, charged_usd=0.0, accounts=[], tokens=20)  # used 20 of the 60 reserved
    b = reserve(ledger, 0.0, {}, tokens=60, limits=limits)
    assert isinstance(b, Ticket)
    clock.now += 10
    rpm = reserve(ledger, 0.0, {}, tokens=1, limits=limits)
    assert isinstance(rpm, Blocked) and rpm.kind == "rpm"
    assert rpm.retry_after == pytest.approx(50.0)
    assert isinstance(ledger.check_rate(limits), Blocked)
    clock.now += 50.01
    assert ledger.check_rate(limits) is None
    too_big = reserve(ledger, 0.0, {}, tokens=500, limits=limits)
    assert isinstance(too_big, Blocked) and too_big.retry_after is None


def test_a_wall_clock_step_neither_locks_a_rate_window_nor_empties_it() -> None:
    """The rate windows are timed by the monotonic clock: the wall clock stepped back an hour
    leaves a key locked out for the rest of its minute, not for the hour (it was), and stepped
    forward an hour lets no second minute's requests or tokens through before the first's
    age out."""
    wall, tick = Clock(), Clock(100.0)
    ledger = Ledger(wall, monotonic=tick)
    limits = (Limits("key:k", rpm=2, tpm=100),)
    assert isinstance(reserve(ledger, 0.0, {}, tokens=40, limits=limits), Ticket)
    tick.now += 20
    assert isinstance(reserve(ledger, 0.0, {}, tokens=40, limits=limits), Ticket)
    wall.now -= 3600  # stepped back
    tick.now += 1
    back = reserve(ledger, 0.0, {}, tokens=1, limits=limits)
    assert isinstance(back, Blocked) and back.kind == "rpm"
    assert back.retry_after == pytest.approx(39.0) and "retry in 39 s" in back.message
    assert isinstance(ledger.count_request(limits), Blocked)
    wall.now += 7200  # stepped forward
    for blocked in (reserve(ledger, 0.0, {}, tokens=1, limits=limits),
                    ledger.check_rate(limits), ledger.count_request(limits)):
        assert isinstance(blocked, Blocked) and blocked.kind == "rpm"
    tick.now += 39.01  # the first request's minute is over, whatever the wall clock did
    assert ledger.check_rate(limits) is None
    tpm = reserve(ledger, 0.0, {}, tokens=70, limits=limits)
    assert isinstance(tpm, Blocked) and tpm.kind == "tpm"  # the second's 40 tokens still count
    assert tpm.retry_after == pytest.approx(19.99)
    assert isinstance(reserve(ledger, 0.0, {}, tokens=60, limits=limits), Ticket)


def test_expired_reservations_release_their_hold() -> None:
    clock = Clock()
    ledger = Ledger(clock, monotonic=clock)
    budgets = {"tenant:a": [Budget(0.1, "day")]}
    t = reserve(ledger, 0.1, budgets, ttl=30)
    assert isinstance(t, Ticket)
    clock.now += 31
    assert isinstance(reserve(ledger, 0.1, budgets), Ticket)
    assert [x.id for x in ledger.take_expired()] == [t.id]
    # A late settlement is still booked (the money was spent), once.
    assert ledger.settle(t, charged_usd=0.01, accounts=["tenant:a"], tokens=None) is False
    assert ledger.spent("tenant:a", "day") == pytest.approx(0.01)


def test_a_reservation_in_flight_expires_by_the_monotonic_clock_not_a_wall_clock_step() -> None:
    """The wall clock stepped forward an hour frees no hold of a request still in flight (it
    expired them all, and the budget they held was spent a second time); stepped back an
    hour, it keeps none past its deadline. Its expiry is dated by the wall clock."""
    wall, tick = Clock(), Clock(100.0)
    ledger = Ledger(wall, monotonic=tick)
    budgets = {"tenant:a": [Budget(1.0, "day")]}
    running = reserve(ledger, 0.6, budgets, ttl=30)
    assert isinstance(running, Ticket)
    wall.now += 3600  # stepped forward, within the day
    refused = reserve(ledger, 0.6, budgets)
    assert isinstance(refused, Blocked) and "requests in flight hold $0.600000" in refused.message
    assert ledger.held("tenant:a") == pytest.approx(0.6) and not ledger.take_expired()
    ledger.settle(running, charged_usd=0.5, accounts=["tenant:a"], tokens=None)
    assert isinstance(reserve(ledger, 0.6, budgets), Blocked)  # $0.5 spent: no room for $0.6
    wall.now -= 7200  # stepped back
    late = reserve(ledger, 0.4, budgets, ttl=30)
    assert isinstance(late, Ticket) and late.expires_at == wall.now + 30  # (on disk)
    tick.now += 29.9
    assert ledger.held("tenant:a") == pytest.approx(0.4)
    tick.now += 0.2  # its deadline, an hour before the wall clock reaches its expiry
    assert ledger.held("tenant:a") == 0.0
    assert [(t.id, t.expired_at) for t in ledger.take_expired()] == [(late.id, wall.now)]


def test_no_overspend_under_thread_concurrency() -> None:
    ledger = Ledger()
    budgets = {"tenant:a": [Budget(1.0, "day")]}
    admitted: list[Ticket] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            t = reserve(ledger, 0.013, budgets)
            if isinstance(t, Ticket):
                ledger.settle(t, charged_usd=0.01, accounts=["tenant:a"], tokens=None)
                with lock:
                    admitted.append(t)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    spent = ledger.spent("tenant:a", "day")
    assert spent <= 1.0 + 1e-9
    assert spent == pytest.approx(0.01 * len(admitted))
    assert len(admitted) == 99  # 99 × 0.01 + 0.013 > 1.0 > 98 × 0.01 + 0.013


def test_the_ledger_is_rebuilt_from_the_spend_table(tmp_path: Path) -> None:
    db = tmp_path / "switchpoint.db"
    now = T0
    with SQLiteStore(db) as store:
        for rid, kind, amount in [("r1", "reserve", 0.5), ("r1", "settle", 0.2),
                                  ("r2", "reserve", 0.4), ("r2", "release", 0.0),
                                  ("r3", "reserve", 0.3),   # open, still within its deadline
                                  ("r4", "reserve", 0.7)]:  # open, past its deadline
            expires = now + (100 if rid == "r3" else -5)
            holds = {"tenant:a": amount} if kind == "reserve" else None
            store.append(LedgerRecord(ts=now - 10, reservation_id=rid, kind=kind,
                                      amount_usd=amount, tenant="a", key_id="k1",
                                      model="m" if kind == "settle" else None,
                                      provider="openai" if kind == "settle" else None,
                                      holds=holds, expires_at=expires)).result()
        store.append(LedgerRecord(ts=now - 40 * 86400, reservation_id="old", kind="settle",
                                  amount_usd=9.0, tenant="a")).result()
    spent, live, stale = load_state(db, now)
    assert spent["tenant:a"] == {p: {period_start(p, now): 0.2} for p in PERIODS}
    for account in ("key:k1", "model:m", "provider:openai", TOTAL):
        assert spent[account] == spent["tenant:a"], account
    assert [(r[0], r[3]) for r in live] == [("r3", {"tenant:a": 0.3})]
    assert [r[0] for r in stale] == ["r4"]
    ledger = Ledger(Clock(now))
    ledger.restore(spent, live)
    assert ledger.spent("tenant:a", "day") == pytest.approx(0.2)
    assert ledger.held("tenant:a") == pytest.approx(0.3)
    assert settle_accounts("k1", "a", "m", "openai") == [TOTAL, "key:k1", "tenant:a",
                                                        "model:m", "provider:openai"]



def test_spend_dated_in_a_later_period_counts_there_when_the_clock_stepped_back(
        tmp_path: Path) -> None:
    """Spend booked before the clock was stepped back across a period's end is dated in the
    later period: rebuilt after the step, it is not counted in the period under way (whose
    budget would pay for it), and it is counted in its own period when that comes (not
    forgotten, which let that period's budget be spent twice); the periods under way keep
    their own spend whatever number of later ones there are."""
    db = tmp_path / "switchpoint.db"
    tomorrow = period_end("day", T0)  # (T0 is a Friday: the next day is in the same week)
    later = [tomorrow + 3600 * h + 60 for h in range(3)]  # three hours of the next day
    with SQLiteStore(db) as store:
        store.append(LedgerRecord(ts=T0 - 60, reservation_id="today", kind="settle",
                                  amount_usd=0.1, tenant="a")).result()
        for i, ts in enumerate(later):
            store.append(LedgerRecord(ts=ts, reservation_id=f"later{i}", kind="settle",
                                      amount_usd=1.0, tenant="a")).result()
    clock = Clock(T0)  # the clock went back to the day before those rows, and it restarts
    ledger = Ledger(clock, monotonic=clock)
    spent, live, stale = load_state(db, clock.now)
    ledger.restore(spent, [*live, *stale])
    for period in PERIODS:
        assert ledger.spent("tenant:a", period) == pytest.approx(
            0.1 if period in ("hour", "day") else 3.1), period
    # Today's budget has today's room: tomorrow's spend is not in it.
    ticket = reserve(ledger, 0.85, {"tenant:a": [Budget(1.0, "day")]})
    assert isinstance(ticket, Ticket)
    ledger.settle(ticket, charged_usd=0.05, accounts=["tenant:a"], tokens=None)
    assert ledger.spent("tenant:a", "hour") == pytest.approx(0.15)
    assert ledger.spent("tenant:a", "day") == pytest.approx(0.15)
    for at, hour in [(later[0], 1.0), (later[1], 1.0), (later[2], 1.0),
                     (later[2] + 3600, 0.0)]:
        clock.now = at  # tomorrow comes: its spend is there
        assert ledger.spent("tenant:a", "hour") == pytest.approx(hour), at
        assert ledger.spent("tenant:a", "day") == pytest.approx(3.0), at
        assert ledger.spent("tenant:a", "week") == pytest.approx(3.15), at
    blocked = reserve(ledger, 0.1, {"tenant:a": [Budget(3.0, "day")]})
    assert isinstance(blocked, Blocked) and "has spent $3.000000" in blocked.message


def test_spend_dated_years_ahead_is_read_a_month_at_a_time_and_counts_as_before(
        tmp_path: Path) -> None:
    """A clock once set years ahead left spend dated years ahead: a start holds the spend
    dated within the month after the one under way, not an entry for every hour of years of
    it, and reads the rest as the clock comes to it, so that every period's spend, read at
    any instant as the clock moves on, is the spend the table dates in it; a crash's
    reservation dated ahead, charged at its expiry and written, is counted once."""
    db = tmp_path / "switchpoint.db"
    who = [("k1", "a", "m", "p"), (None, "b", None, None)]
    rows = [(T0 - 60, 0.5, 0), (T0 + 3600, 0.25, 1), (period_end("month", T0) + 7200, 1.0, 0)]
    rows += [(T0 + 40 * 86400 + i * 5 * 3600 + 17, 0.01 * (1 + i % 7), i % 2)
             for i in range(5000)]  # every 5 hours for nearly three years
    orphan_at = T0 + 400 * 86400 + 1800
    with SQLiteStore(db) as store:
        store.append(LedgerRecord(ts=orphan_at, reservation_id="ahead", kind="reserve",
                                  amount_usd=0.3, key_id="k1", tenant="a",
                                  holds={"key:k1": 0.3}, expires_at=orphan_at + 60)).result()
    conn = sqlite3.connect(db)
    conn.executemany(LedgerRecord.insert, [
        LedgerRecord(ts=ts, reservation_id=f"r{i}", kind="settle", amount_usd=usd,
                     key_id=who[w][0], tenant=who[w][1], model=who[w][2],
                     provider=who[w][3]).row() for i, (ts, usd, w) in enumerate(rows)])
    conn.commit()
    conn.close()
    clock = Clock(T0)
    ledger = Ledger(clock, monotonic=clock)
    rebuild(ledger, db, serving=True)
    hourly = max(len(by_period.get("hour", {})) for by_period in ledger._spent.values())
    assert hourly <= 2 * 31 * 24  # (it held one for each of the 5,000 hours ahead)

    def expected(account: str, period: str, at: float, extra: float = 0.0) -> float:
        start, end = period_start(period, at), period_end(period, at)
        return sum(usd for ts, usd, w in rows if start <= ts < end
                   and account in settle_accounts(*who[w])) + (
            extra if account in ("all", "key:k1", "tenant:a") and start <= orphan_at < end
            else 0.0)

    accounts = ["all", "key:k1", "tenant:a", "tenant:b", "model:m", "provider:p"]
    probes = [T0, T0 + 3600, period_end("month", T0) + 7300, T0 + 45 * 86400,
              T0 + 100 * 86400 + 5, T0 + 300 * 86400]
    for at in probes:
        clock.now = at
        for account in accounts:
            for period in PERIODS:
                assert ledger.spent(account, period) == pytest.approx(
                    expected(account, period, at)), (at, account, period)
        status = ledger.status("tenant:a", Budget(100.0, "week"))
        assert status["spent_usd"] == pytest.approx(expected("tenant:a", "week", at))
    clock.now = orphan_at + 61  # the crash's reservation expires, charged what it held
    (expired,) = ledger.take_expired()
    assert expired.id == "ahead" and expired.charged_usd == pytest.approx(0.3)
    with SQLiteStore(db) as store:  # (its row, as the governor writes it)
        store.append(LedgerRecord(ts=orphan_at, reservation_id="ahead", kind=EXPIRE_CHARGE,
                                  amount_usd=0.3, key_id="k1", tenant="a")).result()
    for at in [orphan_at + 61, orphan_at + 20 * 86400, T0 + 1000 * 86400]:
        clock.now = at
        for account in accounts:
            for period in PERIODS:
                assert ledger.spent(account, period) == pytest.approx(
                    expected(account, period, at, 0.3)), (at, account, period)


def test_a_reservation_a_crash_left_open_is_charged_what_it_held_when_it_expires() -> None:
    """A reservation read from disk (its request ran in a process that stopped) holds until
    its deadline, then is charged what its request's tries were held for (its row's amount):
    to the gateway, its key and tenant, and to its model and provider when its row names
    them; one its row names no model for charges no model. One of this process that expires
    is released (its request's settlement books what it cost)."""
    clock = Clock()
    ledger = Ledger(clock, monotonic=clock)
    ledger.restore({}, [
        OpenReservation("one", T0 - 10, T0 + 5, {"key:k1": 0.3, "model:m": 0.3}, "k1", "a",
                        0.4, "m", "openai"),
        OpenReservation("several", T0 - 10, T0 + 5, {"tenant:a": 0.2}, None, "a", 0.2)])
    own = reserve(ledger, 0.1, {}, ttl=5)
    assert isinstance(own, Ticket)
    assert ledger.held("key:k1") == 0.3 and ledger.spent("key:k1", "day") == 0.0
    clock.now += 6
    expired = {t.id: t for t in ledger.take_expired()}
    assert set(expired) == {"one", "several", own.id}
    assert expired["one"].charged_usd == 0.4 and expired["one"].expired_at == clock.now
    assert expired["several"].charged_usd == 0.2 and expired[own.id].charged_usd is None
    assert ledger.held("key:k1") == 0.0 == ledger.held("tenant:a")
    for account, spent in [("key:k1", 0.4), ("model:m", 0.4), ("provider:openai", 0.4),
                           ("tenant:a", 0.6), (TOTAL, 0.6)]:
        assert ledger.spent(account, "day") == pytest.approx(spent), account
    assert not ledger.take_expired()  # charged once
    # Its request is in no process: nothing settles it (were one to try, nothing more books).
    assert ledger.settle(expired["one"], charged_usd=1.0, accounts=[TOTAL], tokens=None) is False
    assert ledger.spent(TOTAL, "day") == pytest.approx(0.6)


def test_expiries_that_charged_are_spend_when_rebuilt_and_old_expiries_are_releases(
        tmp_path: Path) -> None:
    """Rebuilt from the ``spend`` table, an ``expire_charge`` row is spend of the accounts it
    names, and closes its reservation: a second start charges it no more. An ``expire`` row
    (as earlier versions wrote for a crash's reservation, or a release at expiry now) still
    reads as a release: nothing spent. A reservation's row gives what a charge at its expiry
    would be, and its model and provider when it names them."""
    db = tmp_path / "switchpoint.db"
    now = T0
    rows = [LedgerRecord(ts=now - 60, reservation_id=rid, kind="reserve", amount_usd=amount,
                         key_id="k1", tenant="a", model=model, provider=provider,
                         holds={"tenant:a": amount}, expires_at=now + expiry)
            for rid, amount, model, provider, expiry in [
                ("old", 0.5, None, None, -30), ("charged", 0.25, "m", "openai", -30),
                ("open", 0.125, "m", "openai", 100)]]
    rows += [LedgerRecord(ts=now - 30, reservation_id="old", kind="expire", key_id="k1",
                          tenant="a", expires_at=now - 30),
             LedgerRecord(ts=now - 30, reservation_id="charged", kind="expire_charge",
                          amount_usd=0.25, key_id="k1", tenant="a", model="m",
                          provider="openai", expires_at=now - 30)]
    with SQLiteStore(db) as store:
        for row in rows:
            store.append(row).result()
    spent, live, stale = load_state(db, now)
    assert not stale  # both closed
    for account in ("key:k1", "tenant:a", "model:m", "provider:openai", TOTAL):
        assert spent[account] == {p: {period_start(p, now): 0.25} for p in PERIODS}
    assert live == [OpenReservation("open", now - 60, now + 100, {"tenant:a": 0.125}, "k1",
                                    "a", 0.125, "m", "openai")]
    with sqlite3.connect(db) as conn:
        charged = conn.execute(f"SELECT sum(amount_usd) FROM spend WHERE {CHARGED_ROWS}"
                               ).fetchone()[0]
    conn.close()
    assert charged == 0.25


def test_a_damaged_spend_table_is_a_store_error_that_says_what_to_do(tmp_path: Path) -> None:
    """A damaged page (not the file's header) is found only when the ledger reads it, as the
    service starts: one clear error naming the file, not a traceback."""
    db = tmp_path / "switchpoint.db"
    with SQLiteStore(db) as store:
        for i in range(200):
            store.append(LedgerRecord(ts=T0, reservation_id=f"r{i}", kind="settle",
                                      amount_usd=0.01, tenant="a")).result()
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'spend'"
                            ).fetchone()[0]
    conn.close()
    with db.open("r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)
    with pytest.raises(StoreError) as caught:
        load_state(db, T0)
    message = str(caught.value)
    assert message.startswith(f"{str(db)!r}: cannot read the budgets' spend ledger (")
    assert "the file is damaged" in message and "restore it from a backup" in message


def test_a_budget_shared_with_other_callers_does_not_tell_what_they_spent() -> None:
    ledger = Ledger(Clock())
    budgets = {TOTAL: [Budget(0.3, "day")], "tenant:a": [Budget(0.3, "day")]}
    spent = reserve(ledger, 0.2, budgets, accounts=(TOTAL,))
    assert isinstance(spent, Ticket)
    ledger.settle(spent, charged_usd=0.2, accounts=[TOTAL, "tenant:a"], tokens=None)
    shared = reserve(ledger, 0.2, budgets, accounts=(TOTAL,))
    assert isinstance(shared, Blocked) and "resets in" in shared.message
    assert "0.2" not in shared.message.split("may cost")[0]  # no spend figure
    assert "the gateway's $0.3/day budget has no room left" in shared.message
    own = reserve(ledger, 0.2, budgets, accounts=("tenant:a",))
    assert isinstance(own, Blocked) and "tenant a has spent $0.200000" in own.message


def test_spend_of_a_period_survives_the_clock_stepping_back_into_it() -> None:
    """The clock steps back across a period's end (an NTP step, a VM restored from a
    snapshot): what was spent in the period it steps back into still counts (the ledger kept
    one period's spend per budget, so the step back found nothing spent and let the caller
    spend the whole budget again), and a request begun just before the end, settled after
    one begun just after, loses the new period's spend neither."""
    midnight = period_end("day", T0)
    clock = Clock(midnight - 60)
    ledger = Ledger(clock)
    budgets = {"tenant:a": [Budget(10.0, "day")]}
    before = reserve(ledger, 6.0, budgets)
    assert isinstance(before, Ticket)
    ledger.settle(before, charged_usd=6.0, accounts=("tenant:a",), tokens=10)
    clock.now = midnight + 60  # the next day
    after = reserve(ledger, 2.0, budgets)
    assert isinstance(after, Ticket)
    ledger.settle(after, charged_usd=2.0, accounts=("tenant:a",), tokens=10)
    clock.now = midnight - 0.001  # stepped back: a request begins before midnight
    late = reserve(ledger, 1.0, budgets)
    assert isinstance(late, Ticket)
    clock.now = midnight + 90  # ... and ends after it: it counts in the day it began
    ledger.settle(late, charged_usd=1.0, accounts=("tenant:a",), tokens=10)
    assert ledger.spent("tenant:a", "day") == pytest.approx(2.0)
    clock.now = midnight - 30  # stepped back into the first day
    assert ledger.spent("tenant:a", "day") == pytest.approx(7.0)
    refused = reserve(ledger, 5.0, budgets)
    assert isinstance(refused, Blocked) and refused.kind == "budget"
    clock.now = midnight + 120
    assert ledger.spent("tenant:a", "day") == pytest.approx(2.0)


def test_a_charge_dated_in_a_later_period_never_drops_the_spend_of_the_period_under_way(
) -> None:
    """Charges dated in later periods (requests reserved while the clock was ahead and
    settled after it was set right; a crash's reservation from that time, charged at its
    expiry) are kept until their periods come, and never push out the spend of the period
    under way: it was the oldest period kept at or before theirs, and went, so the budget let
    through its whole amount again."""
    clock = Clock(T0)
    ledger = Ledger(clock, monotonic=Clock(0.0))  # (the requests run for no time)
    budgets = {"tenant:a": [Budget(1.0, period) for period in PERIODS]}
    now = reserve(ledger, 0.5, budgets)
    assert isinstance(now, Ticket)
    ledger.settle(now, charged_usd=0.5, accounts=["tenant:a"], tokens=None)
    ahead = [T0 + 40 * 86400, T0 + 80 * 86400]  # (each in another hour, day, week, month)
    tickets = []
    for at in ahead:
        clock.now = at  # the clock was ahead as they were reserved
        ticket = reserve(ledger, 0.25, budgets)
        assert isinstance(ticket, Ticket)
        tickets.append(ticket)
    clock.now = T0 + 60  # ... and is set right as they run
    orphan_at = T0 + 120 * 86400
    ledger.restore({}, [OpenReservation("ahead", orphan_at, T0 + 90, {"tenant:a": 0.25},
                                        None, "a", 0.25)])
    for ticket in tickets:
        ledger.settle(ticket, charged_usd=0.25, accounts=["tenant:a"], tokens=None)
    clock.now = T0 + 120  # the crash's reservation expires, charged what it held
    (expired,) = ledger.take_expired()
    assert expired.id == "ahead" and expired.charged_usd == 0.25
    for period in PERIODS:
        assert ledger.spent("tenant:a", period) == pytest.approx(0.5), period
    blocked = reserve(ledger, 0.6, budgets)
    assert isinstance(blocked, Blocked) and "has spent $0.500000" in blocked.message
    # Each later charge counts in its own periods when they come.
    for at in [*ahead, orphan_at]:
        clock.now = at + 1
        for period in PERIODS:
            assert ledger.spent("tenant:a", period) == pytest.approx(0.25), (at, period)


def test_a_budgets_used_fraction_is_one_rule_for_the_curve_and_the_status() -> None:
    """A budget of 0 allows no spend, so it is wholly used from the start, in the status the
    budget views show (it said 0.0 there, while the λ curve read 1.0) as for the curve; a
    charge past a budget reads past 1 in both."""
    ledger = Ledger(Clock())
    zero, small = Budget(0.0, "day"), Budget(0.1, "day")
    assert ledger.status("key:z", zero)["used_fraction"] == 1.0
    assert ledger.most_used_budget({"key:z": [zero]}) == (1.0, "key:z", zero)
    free = reserve(ledger, 0.0, {"key:z": [zero]}, accounts=("key:z",))
    assert isinstance(free, Ticket)  # (a request that costs nothing passes a budget of 0)
    ledger.settle(free, charged_usd=0.0, accounts=["key:z"], tokens=None)
    assert ledger.status("key:z", zero)["used_fraction"] == 1.0
    held = reserve(ledger, 0.1, {"tenant:a": [small]})
    assert isinstance(held, Ticket)
    ledger.settle(held, charged_usd=0.15, accounts=["tenant:a"], tokens=None)
    assert ledger.status("tenant:a", small)["used_fraction"] == pytest.approx(1.5)
    most = ledger.most_used_budget({"tenant:a": [small]})
    assert most is not None
    fraction, account, _ = most
    assert fraction == pytest.approx(1.5) and account == "tenant:a"
    assert ledger.most_used_budget({}) is None
