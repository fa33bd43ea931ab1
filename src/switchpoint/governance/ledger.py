"""The spend ledger: budgets enforced by reservation, and RPM / TPM windows.

Before a request is forwarded its worst-case cost is *reserved* on every account a budget
watches (the key, its tenant, the whole gateway; the candidate models and their providers, each
its own worst case), all or nothing, under one lock: the reservation is refused if any budget's
settled spend in its current period plus what in-flight requests hold plus this request's worst
case would pass the limit. When the request ends the reservation is *settled* to what it really
cost (charged to the answering model and provider and to the key, tenant and total; a try a
provider may have billed with no answer is charged to its own model and provider) or
*released* (no answer and no such try, nothing charged). A try after one a provider may have
billed first holds its own worst case more, in USD and in tokens (:meth:`Ledger.extend`,
checked as a reservation is), or is not sent. So settled spend never passes a limit, whatever
the concurrency, as long as the worst case bounds the real cost (see the governor for how it
is computed).

Accounts are named ``all``, ``key:<id>``, ``tenant:<name>``, ``model:<name>`` and
``provider:<name>``; spend is kept per account and calendar period (UTC; see
:mod:`~switchpoint.governance.budgets`). A request's charges count in the periods under way
when its reservation was made (:attr:`Ticket.charged_at`, the instant its ``settle`` and
``expire_charge`` rows carry), however late they are booked: a stream started at 23:59:59
and ended after midnight, or a reservation a crash left open and charged at the next start
days later, counts in the day it began, as the request log dates it and as providers bill a
request. That is the period whose budget admitted it (its worst case was checked against
that period's spend), so settled spend stays within each period's budget; counted when
booked, it would pass a budget that reset meanwhile, and a new day's budget would pay for
yesterday's requests.

Durability: settlements, and the reservations of requests still running after
:data:`PERSIST_AFTER_S` (with their releases and expiries), are rows of the ``spend`` table in
the request log's SQLite file, appended by the log's writer; a settlement is committed in the
same transaction as the request's log entry, so the ledger never disagrees with the log (the
charges of expiries, below, have no log entry: no request ended). (A request that ends sooner
writes its settlement: one row per model charged, most often one.) On start the ledger is
rebuilt from those rows, each counted in the periods it is dated in: a row dated in a later
period than the one under way (booked before the wall clock was stepped back across the
period's end) counts there when that period comes, not in the one under way (whose budget would
pay for it, and the later period's once more). The ledger holds such later spend through the end
of the month after the one under way (:func:`reach`); spend dated further ahead (a clock once set
years ahead) is read from the table a month at a time, as the clock comes within that reach of
it, so a start reads, and memory holds, two months of it at most, not an entry for every hour
of years of it. A reservation still open when the process died
(its request has no log entry and no known cost) keeps holding its amount until its request's
deadline (``gateway.max_total_s`` after it was made, plus ``governance.reservation_grace_s``,
30 s unless set), then is *charged* what it held and recorded as ``expire_charge`` (at the
start, if that deadline passed while the service was down, however long; in the periods its
request began in): a deadline on disk is read by the wall clock, the only one that outlives
the process. Its request had run at least :data:`PERSIST_AFTER_S` (that is when a reservation
reaches disk) and was cut by a stop or crash, so a provider may have billed it: by the rule
for a try a provider may have billed with no answer, it is charged its worst case, the most the
reservation held
(:attr:`Ticket.held_for_usd`: its reserve row's amount), to the gateway's total and the key and
tenant it was held for, and to a model's and provider's accounts only when its row names them:
a reservation records its model when its request had one candidate, and its provider when all
its candidates shared one; one of several candidates records none (which of them ran is
unknown, and none is charged in its place), nor does one an earlier version wrote. So settled
spend stays within a budget after a crash too. A crash never leaks budget for longer than that
deadline. (The requests of the last half second before a crash hold nothing after it, and are
charged nothing.) A reservation of the running process expires, and reaches disk, when its
request has run that long by the monotonic clock (a wall clock stepped forward freed the holds
of every request in flight, which then spent past the budgets their holds had kept for them;
one stepped back kept a long request's reservation off disk, where a crash would find it, for
as long as the step). One that expires is released (``expire_running``): its request is still
in this process, and its settlement charges what it cost, after the expiry too. That row frees
its hold but does not close it on disk: its request's ``settle`` or ``release`` row does (a
release is written after an expiry too), so one whose request a crash then cut is read at the
next start as a crash's reservation past its deadline, and charged as one. A reader beside a
running service (``switchpoint report``, which holds no lock) cannot tell such a reservation
from a crash's by its rows alone, so it asks whether a service holds ``data_dir``'s lock
(:func:`~switchpoint._files.serving`): while one does, the reservation is that service's
request still running (a service charges those a crash left as it starts), and is counted as
held, what it held, not charged; only with no service running is it a crash's, charged as the
next start will charge it (see :meth:`Ledger.restore`). Such a reader, or a command that learns
beside the service, writes no row for a reservation it did not make (see :func:`rebuild`): a
crash's is charged on disk by the next start of a service alone, once. ``expire`` rows (an
earlier version's, for a crash's reservations and its own alike) were releases, and read as
such: only ``settle``, ``expire_charge`` and ``carry`` rows are spend (:data:`CHARGED_ROWS`).
Earlier versions wrote no expiry at a start: the reservations they left open further back than
a start looks are closed (released), once, when the store upgrades the file. A ``carry`` row
(:data:`CARRY`) books again, at a start, the spend a restored backup of the database lacks and
the spend mark beside it kept (see :mod:`~switchpoint.governance.spend_mark`); it charges the
one account it names, dated at the start of the period it was lost in.

Rate limits are sliding 60-second windows kept in memory only (a restart forgets the last
minute), timed by a monotonic clock, not the wall clock the periods are read from: a wall
clock stepped back (an NTP step, a VM restored) locks no key out until it catches up (it did,
for as long as the step), and one stepped forward ages no request out of its window early
(a full window's burst again at once). RPM counts requests; TPM reserves the request's
worst-case tokens (and a further try's, as of when it is held) and settles them to what the
request's tries count, by the rule its budgets are charged by: the answer's tokens as the
upstream reported them (never past the worst case; the worst case when unknown), and each try
a provider may have billed with no answer its worst case; each window counts them once,
whatever it held for them.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from switchpoint._files import served
from switchpoint.catalog import usd, usd_text
from switchpoint.governance.budgets import (
    PERIODS,
    Budget,
    describe_seconds,
    period_end,
    period_start,
    used_fraction,
)
from switchpoint.store.errors import store_error
from switchpoint.store.migrations import LEDGER_LOOKBACK_S
from switchpoint.store.reading import Gone, read_store, still_there

TOTAL = "all"
WINDOW_S = 60.0
# A reservation is written to disk once its request has run this long (see the governor).
PERSIST_AFTER_S = 0.5
# How far back a restart looks for reservations that may still be open (see
# LEDGER_LOOKBACK_S: the store's upgrade closes those an earlier version left further back).
LOOKBACK_S = LEDGER_LOOKBACK_S
# Relative slack when comparing money, so a budget that covers exactly N requests admits N.
_EPS = 1e-9

#: The kind of the row that closes a reservation left open by a stop or crash, charging it.
EXPIRE_CHARGE = "expire_charge"
#: The kind of the row that frees the hold of a reservation whose request still runs in this
#: process when its deadline passes; it leaves the reservation open on disk until its request
#: ends (see the module's docstring). Every other row but its ``reserve`` closes it.
EXPIRE_RUNNING = "expire_running"
#: The kind of the row that books again, at a start, spend a restored backup of the database
#: lacks and the spend mark kept (see :mod:`~switchpoint.governance.spend_mark`): it charges
#: the one account it names (its key, tenant, model or provider; none: the gateway's total),
#: not the gateway's total beside it, and is no request's cost.
CARRY = "carry"
#: The ``spend`` rows that are spend (charged to their accounts), as SQL: the settlements, the
#: expiries that charged (an ``expire`` row releases: charges nothing) and the carried spend.
CHARGED_ROWS = f"kind IN ('settle', '{EXPIRE_CHARGE}', '{CARRY}')"
#: The ``spend`` rows charged to the gateway's total, as SQL: all that are spend but a carry
#: row naming another account.
TOTAL_ROWS = (f"{CHARGED_ROWS} AND NOT (kind = '{CARRY}' AND "
              "coalesce(key_id, tenant, model, provider) IS NOT NULL)")

_SPEND_COLUMNS = ("ts", "reservation_id", "kind", "request_id", "key_id", "tenant", "model",
                  "provider", "amount_usd", "tokens", "holds", "expires_at")


@dataclass(slots=True)
class LedgerRecord:
    """One row of the ``spend`` table: ``reserve``, ``settle``, ``release``,
    ``expire_running`` (a hold freed at expiry, its request still running), ``expire`` (an
    earlier version's release at expiry) or ``expire_charge`` (a charge at expiry: see the
    module's docstring).
    A ``reserve`` row names the one model (and provider) its request may run on, when there is
    one."""

    ts: float
    reservation_id: str
    kind: str
    amount_usd: float = 0.0
    request_id: str | None = None
    key_id: str | None = None
    tenant: str | None = None
    model: str | None = None
    provider: str | None = None
    tokens: int | None = None
    holds: Mapping[str, float] | None = None
    expires_at: float | None = None

    insert: ClassVar[str] = (f"INSERT INTO spend ({', '.join(_SPEND_COLUMNS)}) "
                             f"VALUES ({', '.join('?' for _ in _SPEND_COLUMNS)})")

    @property
    def id(self) -> str:
        return f"{self.kind} {self.reservation_id}"

    def row(self) -> tuple[Any, ...]:
        return (self.ts, self.reservation_id, self.kind, self.request_id, self.key_id,
                self.tenant, self.model, self.provider, self.amount_usd, self.tokens,
                None if self.holds is None else json.dumps(dict(self.holds)),
                self.expires_at)


def key_account(key_id: str) -> str:
    return f"key:{key_id}"


def tenant_account(tenant: str) -> str:
    return f"tenant:{tenant}"


def is_callers_own(account: str) -> bool:
    """Whether ``account`` is one caller's own (a key's, a tenant's), not shared with others
    (the gateway's total, a model's, a provider's)."""
    return account.startswith((key_account(""), tenant_account("")))


def model_account(model: str) -> str:
    return f"model:{model}"


def provider_account(provider: str) -> str:
    return f"provider:{provider}"


def describe_account(account: str) -> str:
    """``tenant:acme`` → ``tenant acme``; ``all`` → ``the gateway``."""
    if account == TOTAL:
        return "the gateway"
    kind, _, name = account.partition(":")
    return f"{kind} {name}"


class OpenReservation(NamedTuple):
    """A reservation the ``spend`` table holds open (its ``reserve`` row, no closing row)."""

    id: str
    ts: float
    expires_at: float
    holds: dict[str, float]
    key_id: str | None = None
    tenant: str | None = None
    amount_usd: float = 0.0  # what its request's tries were held for in all (its worst case)
    model: str | None = None  # the one model it was held for, when its row names one
    provider: str | None = None  # the one provider, likewise
    # Its expiry was booked while its request still ran (an ``expire_running`` row).
    expired_running: bool = False


@dataclass
class Blocked:
    """Why a reservation was refused."""

    kind: str  # "budget", "rpm", "tpm"
    account: str
    message: str
    retry_after: float | None
    budget: Budget | None = None


@dataclass
class Ticket:
    """An open reservation: what it holds, on which accounts, until when."""

    id: str
    ts: float
    expires_at: float
    holds: dict[str, float]
    worst_by_model: dict[str, float]
    tokens: int
    key_id: str | None = None
    tenant: str | None = None
    # TPM window entries: (account, [monotonic ts, tokens, still in the window]); an account's
    # first is the request's, each later one a further try's (see Ledger.extend).
    rate_entries: list[tuple[str, list[float]]] = field(default_factory=list)
    # The tokens-per-minute limits of the windows it counts in, by account (to check what it
    # holds more: see extend).
    tpm: Mapping[str, int] = field(default_factory=dict)
    closed: bool = False
    charged_usd: float | None = None
    persisted: bool = False  # its reserve row was written
    # The budgets of the accounts it holds on (to check what it holds more: see extend).
    budgets: Mapping[str, Sequence[Budget]] = field(default_factory=dict)
    # What its tries have been held for, in all, once a try followed one a provider may have
    # billed (0 until then: the request's worst case covers its first try).
    cover_usd: float = 0.0
    # The one model and provider its request may run on, when it has one (its rows say so).
    model: str | None = None
    provider: str | None = None
    # Read from disk at a start: its request ran in a process that stopped, so its expiry
    # charges what it held (see the module's docstring).
    orphan: bool = False
    # When it expired (the instant its expiry was booked at).
    expired_at: float | None = None
    # When it was made and when it expires by the ledger's monotonic clock (a reservation of
    # this process; None for one read from disk, whose expiry is judged by the wall clock).
    started: float | None = None
    deadline: float | None = None

    @property
    def charged_at(self) -> float:
        """The instant its request's charges count at, whenever they are booked (its
        settlement, or the charge at its expiry of one a crash left open): when it was
        reserved, so they count in the periods whose budgets admitted it (see the module's
        docstring)."""
        return self.ts

    @property
    def accounts(self) -> list[str]:
        """The accounts a charge of it goes to when no answer says which model ran: the
        gateway's total, its key's and tenant's, and its model's and provider's when it has
        one."""
        return settle_accounts(self.key_id, self.tenant, self.model, self.provider)

    @property
    def worst_usd(self) -> float:
        return max(self.worst_by_model.values(), default=0.0)

    @property
    def holds_any(self) -> bool:
        """Whether a budget or a TPM window holds anything for it."""
        return bool(self.holds or self.rate_entries)

    def tokens_held(self) -> dict[str, int]:
        """The tokens it holds in each TPM window it counts in (the request's, and each
        further try's once held: see :meth:`Ledger.extend`)."""
        held: dict[str, int] = {}
        for account, entry in self.rate_entries:
            held[account] = held.get(account, 0) + int(entry[1])
        return held

    @property
    def settled(self) -> bool:
        """Whether its request's end was booked (settled or released), which happens once:
        a ticket its expiry closed first is not settled until its request ends."""
        return self.charged_usd is not None

    @property
    def held_for_usd(self) -> float:
        """What the request's tries may cost in all without passing what it holds: its worst
        case, or more once further tries were held (:meth:`Ledger.extend`)."""
        return max(self.worst_usd, self.cover_usd)

    def __lt__(self, other: Ticket) -> bool:
        return self.expires_at < other.expires_at


class _Window:
    """A sliding 60-second window of amounts (1 per request, or tokens)."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[list[float]] = deque()
        self.total = 0.0

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - WINDOW_S:
            entry = self.entries.popleft()
            self.total -= entry[1]
            entry[2] = 0.0
        if not self.entries:
            self.total = 0.0

    def retry_after(self, now: float, needed: float, limit: float) -> float:
        """Seconds until ``needed`` more fits under ``limit`` (as entries age out)."""
        excess = self.total + needed - limit
        for ts, amount, _ in self.entries:
            excess -= amount
            if excess <= 0:
                return max(0.0, ts + WINDOW_S - now)
        return WINDOW_S


@dataclass(frozen=True)
class Limits:
    """One account's rate limits."""

    account: str
    rpm: int | None = None
    tpm: int | None = None


#: Periods of each budget whose settled spend the ledger keeps (the one under way and those
#: before it), for settlements and clock steps that land in an earlier one; later periods'
#: spend (dated there before the clock was stepped back) is kept until they come and go.
KEPT_PERIODS = 3

#: Settled spend by account, period and the period's start (epoch seconds).
Spent = dict[str, dict[str, dict[float, float]]]

#: Settled spend dated later, summed by the hour it is dated in: (the hour's start, whom it
#: charges: key id, tenant, model, provider and whether it is carried (see
#: :func:`row_accounts`), its amount).
LaterRow = tuple[float, tuple[Any, ...], float]
#: Reads the spend dated in [since, until) but that of the given reservations (see
#: :func:`read_later`).
ReadLater = Callable[[float, float, Collection[str]], list[LaterRow]]


def reach(now: float) -> float:
    """The instant through which a ledger at ``now`` holds the spend dated later than the
    periods under way: the end of the calendar month after the one under way (past the end
    of every period under way, a week's too)."""
    return period_end("month", period_end("month", now))


class Ledger:
    """Spend per account and period, in-flight reservations, and the rate windows."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``clock`` dates periods, reservations and their expiries (the wall clock: they
        outlive the process); ``monotonic`` times the rate windows (see the module's
        docstring)."""
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        # Settled spend by account, period and the period's start: the last few periods of
        # each, so that a settlement stamped in the period before, or a clock stepped back
        # into it, counts in that period and leaves the one under way whole.
        self._spent: Spent = {}
        self._held: dict[str, float] = {}
        self._open: dict[str, Ticket] = {}
        # The reservations read from disk by their expiry (wall clock), those of this process
        # by their deadline (monotonic clock).
        self._expiring: list[Ticket] = []
        self._running: list[tuple[float, str, Ticket]] = []
        self._bounds: dict[str, tuple[float, float]] = {}
        self._rpm: dict[str, _Window] = {}
        self._tpm: dict[str, _Window] = {}
        self.expired: list[Ticket] = []
        # Spend dated past the periods under way is held through _later_until, and read from
        # the spend table (by _read_later, set by restore) as the clock comes within reach of
        # what lies further ahead; _later_month: the month under way when that was last looked
        # at. Reservations charged here at an instant past _later_until (a crash's, dated
        # ahead) by their id and that instant: their rows are not read there again.
        self._read_later: ReadLater | None = None
        self._later_until = math.inf
        self._later_month: float | None = None
        self._charged_later: dict[str, float] = {}

    # Periods -----------------------------------------------------------------------------------

    def _bucket(self, period: str, now: float) -> float:
        bounds = self._bounds.get(period)
        if bounds is None or not bounds[0] <= now < bounds[1]:
            bounds = (period_start(period, now), period_end(period, now))
            self._bounds[period] = bounds
        return bounds[0]

    def _spent_now(self, account: str, period: str, now: float) -> float:
        self._catch_up(now)
        buckets = self._spent.get(account)
        if buckets is None:
            return 0.0
        return buckets.get(period, {}).get(self._bucket(period, now), 0.0)

    def _starts(self, ts: float) -> dict[str, float]:
        """The start of each period holding ``ts`` (the cached bounds of the periods under
        way are kept: an earlier instant's are computed, not cached)."""
        starts = {}
        for period in PERIODS:
            bounds = self._bounds.get(period)
            starts[period] = (bounds[0] if bounds is not None and bounds[0] <= ts < bounds[1]
                              else period_start(period, ts))
        return starts

    def _catch_up(self, now: float) -> None:
        """Read the spend dated within :func:`reach` of ``now`` that is not held yet (once a
        month: see :meth:`restore`), into the periods under way at ``now`` and later ones
        (spend dated in periods that ended before them, skipped by a clock stepped forward
        past them, is not read)."""
        if self._read_later is None:
            return
        month = self._bucket("month", now)
        if month == self._later_month:
            return
        until = reach(now)
        if until > self._later_until:
            starts = self._starts(now)
            since = max(self._later_until, min(starts.values()))
            for at, who, amount in self._read_later(since, until, list(self._charged_later)):
                for period, start in self._starts(at).items():
                    if start < starts[period]:
                        continue
                    for account in row_accounts(*who):
                        by_start = self._spent.setdefault(account, {}).setdefault(period, {})
                        by_start[start] = by_start.get(start, 0.0) + float(amount or 0.0)
            self._later_until = until
            self._charged_later = {rid: at for rid, at in self._charged_later.items()
                                   if at >= until}
        self._later_month = month

    def _charged(self, ticket: Ticket) -> None:
        """Note that ``ticket``'s charges were booked here, at an instant whose spend is
        read from the spend table later (see :meth:`_catch_up`) if past what is held."""
        if ticket.charged_at >= self._later_until:
            self._charged_later[ticket.id] = ticket.charged_at

    def _charge(self, account: str, amount: float, at: float, now: float | None = None
                ) -> None:
        """Add ``amount`` to ``account``'s spend in the periods holding the instant ``at``,
        booked at ``now`` (by default ``at``)."""
        now = at if now is None else now
        buckets = self._spent.setdefault(account, {})
        for period, start in self._starts(at).items():
            by_start = buckets.setdefault(period, {})
            by_start[start] = by_start.get(start, 0.0) + amount
            # (The oldest goes, of the periods up to the one under way and the one charged;
            # a later period's, dated there before a clock step back, stays until its period
            # comes and goes, and the one under way stays whatever is charged later.)
            kept = [s for s in by_start if s <= min(start, self._bucket(period, now))]
            if len(kept) > KEPT_PERIODS:
                del by_start[min(kept)]

    # Reading -----------------------------------------------------------------------------------

    def spent(self, account: str, period: str, now: float | None = None) -> float:
        """Settled spend of ``account`` in the current ``period``."""
        with self._lock:
            return self._spent_now(account, period, self.clock() if now is None else now)

    def held(self, account: str) -> float:
        """What in-flight requests hold on ``account``."""
        with self._lock:
            self._expire(self.clock())
            return self._held.get(account, 0.0)

    def most_used_budget(self, budgets: Mapping[str, Sequence[Budget]]
                         ) -> tuple[float, str, Budget] | None:
        """The most used budget among ``budgets`` (each read by
        :func:`~switchpoint.governance.budgets.used_fraction`, spent plus held over its limit):
        (fraction, account, budget), or None when there is none."""
        now = self.clock()
        best: tuple[float, str, Budget] | None = None
        with self._lock:
            self._expire(now)  # (a hold past its deadline no longer counts)
            for account, listed in budgets.items():
                for budget in listed:
                    used = self._spent_now(account, budget.period, now) + self._held.get(
                        account, 0.0)
                    fraction = used_fraction(used, budget.limit_usd)
                    if best is None or fraction > best[0]:
                        best = (fraction, account, budget)
        return best

    def status(self, account: str, budget: Budget) -> dict[str, Any]:
        """One budget's state, JSON-ready."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            spent = self._spent_now(account, budget.period, now)
            held = self._held.get(account, 0.0)
            self._bucket(budget.period, now)
            start, resets = self._bounds[budget.period]
        return {"account": account, "budget": str(budget), "limit_usd": budget.limit_usd,
                "period": budget.period, "spent_usd": usd(spent),
                "held_usd": usd(held),
                "remaining_usd": usd(max(0.0, budget.limit_usd - spent - held)),
                "used_fraction": round(used_fraction(spent + held, budget.limit_usd), 6),
                "period_start": start, "resets_at": resets}

    def open_tickets(self) -> int:
        with self._lock:
            return len(self._open)

    # Admission ---------------------------------------------------------------------------------

    def reserve(self, *, holds: Mapping[str, float], budgets: Mapping[str, Sequence[Budget]],
                worst_by_model: Mapping[str, float], tokens: int, limits: Sequence[Limits],
                ttl_s: float, key_id: str | None = None, tenant: str | None = None,
                model: str | None = None, provider: str | None = None) -> Ticket | Blocked:
        """Reserve ``holds`` (USD per account) and one request of ``tokens`` on every rate
        window of ``limits``, all or nothing (``model`` and ``provider``: the one its request
        may run on, if one). Returns the open :class:`Ticket`, or why not."""
        with self._lock:
            now, tick = self.clock(), self.monotonic()
            self._catch_up(now)  # (before its charges may be booked, dated now)
            self._expire(now)
            for limit in limits:
                blocked = self._check_rate(limit, tokens, tick)
                if blocked is not None:
                    return blocked
            for account, amount in holds.items():
                for budget in budgets.get(account, ()):
                    blocked = self._check_budget(account, budget, amount, now)
                    if blocked is not None:
                        return blocked
            ticket = Ticket(id=os.urandom(12).hex(), ts=now, expires_at=now + ttl_s,
                            started=tick, deadline=tick + ttl_s,
                            holds=dict(holds), worst_by_model=dict(worst_by_model),
                            tokens=tokens, key_id=key_id, tenant=tenant, model=model,
                            provider=provider,
                            budgets={a: tuple(budgets.get(a, ())) for a in holds},
                            tpm={lim.account: lim.tpm for lim in limits if lim.tpm is not None})
            for account, amount in holds.items():
                self._held[account] = self._held.get(account, 0.0) + amount
            for limit in limits:
                if limit.rpm is not None:
                    window = self._rpm.setdefault(limit.account, _Window())
                    window.entries.append([tick, 1.0, 1.0])
                    window.total += 1.0
                if limit.tpm is not None:
                    self._count_tokens(ticket, limit.account, tokens, tick)
            self._open[ticket.id] = ticket
            heapq.heappush(self._running, (tick + ttl_s, ticket.id, ticket))
            return ticket

    def extend(self, ticket: Ticket, more: Mapping[str, float],
               tokens: Mapping[str, int] | None = None, *, what: str = "this request"
               ) -> Blocked | None:
        """Hold ``more`` (USD per account, each one ``ticket`` holds on) and ``tokens`` (per
        TPM window it counts in: an entry of their own, as of now) for ``ticket``, all or
        nothing, checked against the budgets and TPM limits it was admitted under. Returns why
        not (a window's naming ``what`` it holds them for), or None (held; nothing to do for a
        ticket already closed: its request is over)."""
        tokens = tokens or {}
        with self._lock:
            now, tick = self.clock(), self.monotonic()
            self._expire(now)
            if ticket.closed:
                return None
            for account, amount in tokens.items():
                blocked = self._check_rate(Limits(account, None, ticket.tpm[account]), amount,
                                           tick, what)
                if blocked is not None:
                    return blocked
            for account, usd in more.items():
                for budget in ticket.budgets.get(account, ()):
                    blocked = self._check_budget(account, budget, usd, now)
                    if blocked is not None:
                        return blocked
            for account, usd in more.items():
                ticket.holds[account] = ticket.holds.get(account, 0.0) + usd
                self._held[account] = self._held.get(account, 0.0) + usd
            for account, amount in tokens.items():
                self._count_tokens(ticket, account, amount, tick)
            return None

    def check_rate(self, limits: Sequence[Limits]) -> Blocked | None:
        """Whether one more request would pass the RPM windows now (nothing is reserved): a
        cheap early refusal before a request is routed."""
        with self._lock:
            tick = self.monotonic()
            for limit in limits:
                blocked = self._check_rate(Limits(limit.account, limit.rpm, None), 0, tick)
                if blocked is not None:
                    return blocked
        return None

    def count_request(self, limits: Sequence[Limits]) -> Blocked | None:
        """Count one request on the RPM windows of ``limits`` (a routing request: nothing to
        reserve), or say why not."""
        with self._lock:
            tick = self.monotonic()
            rpm_only = [Limits(lim.account, lim.rpm, None) for lim in limits]
            for limit in rpm_only:
                blocked = self._check_rate(limit, 0, tick)
                if blocked is not None:
                    return blocked
            for limit in rpm_only:
                if limit.rpm is not None:
                    window = self._rpm.setdefault(limit.account, _Window())
                    window.entries.append([tick, 1.0, 1.0])
                    window.total += 1.0
        return None

    def _check_rate(self, limit: Limits, tokens: int, now: float,
                    what: str = "this request") -> Blocked | None:
        """Why one more request of ``tokens`` would pass ``limit``'s windows at ``now`` (by
        the monotonic clock; a full TPM window names what it would hold them for: ``what``),
        or None."""
        who = describe_account(limit.account)
        if limit.rpm is not None:
            window = self._rpm.setdefault(limit.account, _Window())
            window.prune(now)
            if window.total + 1 > limit.rpm:
                wait = window.retry_after(now, 1, limit.rpm)
                return Blocked("rpm", limit.account,
                               f"{who} has made its {limit.rpm} requests of the last minute "
                               f"(rpm limit); retry in {max(1, round(wait))} s", wait)
        if limit.tpm is not None:
            window = self._tpm.setdefault(limit.account, _Window())
            window.prune(now)
            if tokens > limit.tpm:
                return Blocked("tpm", limit.account,
                               f"this request may use up to {tokens} tokens (prompt bound plus "
                               f"the output cap), more than {who}'s limit of {limit.tpm} tokens "
                               "per minute; send a smaller max_tokens or a shorter prompt",
                               None)
            if window.total + tokens > limit.tpm:
                wait = window.retry_after(now, tokens, limit.tpm)
                return Blocked("tpm", limit.account,
                               f"{who} has used {window.total:.0f} of its {limit.tpm} tokens "
                               f"per minute and {what} may use up to {tokens}; retry in "
                               f"{max(1, round(wait))} s", wait)
        return None

    def _count_tokens(self, ticket: Ticket, account: str, tokens: int, now: float) -> None:
        """Count ``tokens`` of ``ticket`` in ``account``'s TPM window as of ``now`` (by the
        monotonic clock)."""
        window = self._tpm.setdefault(account, _Window())
        entry = [now, float(tokens), 1.0]
        window.entries.append(entry)
        window.total += tokens
        ticket.rate_entries.append((account, entry))

    def _check_budget(self, account: str, budget: Budget, amount: float,
                      now: float) -> Blocked | None:
        spent = self._spent_now(account, budget.period, now)
        held = self._held.get(account, 0.0)
        limit = budget.limit_usd
        if spent + held + amount <= limit * (1 + _EPS) + 1e-12:
            return None
        who = describe_account(account)
        self._bucket(budget.period, now)
        resets = self._bounds[budget.period][1]

        if limit == 0:  # (a budget of 0 blocks all spend: no smaller request fits)
            return Blocked("budget", account,
                           f"{who}'s budget of $0/{budget.period} allows no spend and this "
                           f"request may cost up to {usd_text(amount)} (its worst case); only a "
                           "request that costs nothing passes it (raise the budget to spend)",
                           None, budget)
        if amount > limit * (1 + _EPS) + 1e-12:
            return Blocked("budget", account,
                           f"this request may cost up to {usd_text(amount)} (its worst case), more "
                           f"than {who}'s whole budget of ${budget}; send a "
                           "smaller max_tokens or a shorter prompt", None, budget)
        # A budget shared with other callers (the gateway's, a model's, a provider's) says
        # nothing of what they spent.
        shared = not is_callers_own(account)
        if spent + amount > limit * (1 + _EPS) + 1e-12:
            wait = resets - now
            used = (f"{who}'s ${budget} budget has no room left for it"
                    if shared else f"{who} has spent {usd_text(spent)} of its "
                                   f"${budget} budget")
            return Blocked("budget", account,
                           f"{used} and this request may cost up to {usd_text(amount)}; the budget "
                           f"resets in {describe_seconds(wait)} (periods are calendar periods "
                           "in UTC)", wait, budget)
        used = (f"{who}'s ${budget} budget is held by requests in flight"
                if shared else f"{who} has spent {usd_text(spent)} of its ${budget} "
                               f"budget and requests in flight hold "
                               f"{usd_text(held)} more")
        return Blocked("budget", account,
                       f"{used}; this request may cost up to {usd_text(amount)}; retry once they "
                       "finish", 1.0, budget)

    # Closing -----------------------------------------------------------------------------------

    def settle(self, ticket: Ticket, *, charged_usd: float = 0.0, accounts: Iterable[str] = (),
               tokens: int | None,
               charges: Sequence[tuple[float, Iterable[str]]] = ()) -> bool:
        """Charge ``charged_usd`` to ``accounts`` (and each of ``charges``, an amount and its
        accounts: a request charged for tries of several models) and release the ticket's
        holds; its TPM windows count ``tokens`` in place of what they held for it (None: keep
        what they hold). False if it was already closed: expired, in which case the charge is
        still booked, or settled, in which case nothing more is (a request's end is booked
        once). The charges count in the periods of :attr:`Ticket.charged_at` (the instant the
        settlement's rows carry), not of now."""
        with self._lock:
            if ticket.settled:
                return False
            was_open = self._close(ticket)
            self._charged(ticket)
            now = self.clock()
            for amount, charged in [(charged_usd, accounts), *charges]:
                for account in charged:
                    self._charge(account, amount, ticket.charged_at, now)
            if tokens is not None:
                # Each window counts ``tokens`` once: its entries in order, each up to what it
                # held (a further try's follows those a provider may have billed, counted at
                # the worst case held for them), the last the rest.
                left = {account: float(tokens) for account, _ in ticket.rate_entries}
                last = {account: entry for account, entry in ticket.rate_entries}
                for account, entry in ticket.rate_entries:
                    counted = (left[account] if entry is last[account]
                               else min(entry[1], left[account]))
                    left[account] -= counted
                    delta = counted - entry[1]
                    entry[1] = counted
                    if entry[2]:  # still counted in its window
                        self._tpm[account].total += delta
            ticket.charged_usd = charged_usd + sum(amount for amount, _ in charges)
            return was_open

    def release(self, ticket: Ticket, *, tokens: int | None = 0) -> bool:
        """Release the ticket's holds, charging nothing (and its TPM entries to ``tokens``)."""
        return self.settle(ticket, charged_usd=0.0, accounts=(), tokens=tokens)

    def _close(self, ticket: Ticket) -> bool:
        if ticket.closed:
            return False
        ticket.closed = True
        self._open.pop(ticket.id, None)
        for account, amount in ticket.holds.items():
            left = self._held.get(account, 0.0) - amount
            if left <= 1e-15:
                self._held.pop(account, None)
            else:
                self._held[account] = left
        return True

    def _expire(self, now: float) -> None:
        """Close the tickets whose deadline passed: one a stop or crash left open (an orphan,
        read from disk) when its expiry is past by ``now`` (the wall clock), and is charged
        what it held, to :attr:`Ticket.accounts`; one of this process when its deadline is
        past by the monotonic clock, and is released (its request's settlement charges it)."""
        due: list[Ticket] = []
        while self._expiring and self._expiring[0].expires_at <= now:
            due.append(heapq.heappop(self._expiring))
        tick = self.monotonic()
        while self._running and self._running[0][0] <= tick:
            due.append(heapq.heappop(self._running)[2])
        for ticket in due:
            if not ticket.closed:
                self._close(ticket)
                ticket.expired_at = now
                if ticket.orphan and ticket.held_for_usd > 0:  # (nothing held: released)
                    owed = ticket.held_for_usd
                    self._charged(ticket)
                    for account in ticket.accounts:
                        self._charge(account, owed, ticket.charged_at, now)
                    ticket.charged_usd = owed
                self.expired.append(ticket)

    def carry(self, account: str, amount: float, at: float) -> None:
        """Charge ``amount`` to ``account`` alone in the periods holding ``at`` (a ``carry``
        row's charge: see :data:`CARRY`)."""
        with self._lock:
            self._charge(account, amount, at, self.clock())

    def take_expired(self) -> list[Ticket]:
        """Tickets that expired since the last call (for the ``expire_running`` and
        ``expire_charge`` rows: an orphan's ``charged_usd`` says what it was charged)."""
        with self._lock:
            self._expire(self.clock())
            out, self.expired = self.expired, []
            return out

    # Restoring ---------------------------------------------------------------------------------

    def restore(self, spent: Mapping[str, Mapping[str, Mapping[float, float]]],
                outstanding: Iterable[OpenReservation], *,
                service_running: bool = False, later: ReadLater | None = None,
                later_until: float = math.inf) -> None:
        """Load what the ``spend`` table says (see :func:`load_state`): settled spend by
        account, period and the period's start (each counts in the period it is dated in, a
        later one's when it comes), and the reservations still open. A restored reservation
        is on disk already (its expiry is written when it comes; one past its deadline
        expires at the next look) and is an orphan: its expiry charges what it held; one this
        ledger holds open already is not held twice. ``service_running``: this ledger is a
        reader's beside the service serving from the same ``data_dir`` (it holds the lock); a
        reservation whose expiry the service booked as its request still ran is then that
        request's, in flight, and is held, never expiring here, rather than charged as a
        crash's (see the module's docstring). The service itself passes False: what it finds
        open at its start, a crash left. ``spent`` holds the spend dated before
        ``later_until``; ``later`` reads what is dated after it, as the clock comes within
        :func:`reach` of it (None: there is none to read)."""
        with self._lock:
            self._read_later, self._later_until = later, later_until
            self._later_month = None
            for account, by_period in spent.items():
                buckets = self._spent.setdefault(account, {})
                for period, by_start in by_period.items():
                    for start, amount in by_start.items():
                        buckets.setdefault(period, {})[float(start)] = float(amount)
            for row in outstanding:
                if row.id in self._open:
                    continue
                # (What its tries were held for: its row's amount, never less than it held on
                # an account.)
                cover = max(row.amount_usd, *row.holds.values(), 0.0)
                running = service_running and row.expired_running
                ticket = Ticket(id=row.id, ts=row.ts,
                                expires_at=math.inf if running else row.expires_at,
                                holds=dict(row.holds), worst_by_model={}, tokens=0,
                                key_id=row.key_id, tenant=row.tenant, cover_usd=cover,
                                model=row.model, provider=row.provider, persisted=True,
                                orphan=not running)
                for account, amount in row.holds.items():
                    self._held[account] = self._held.get(account, 0.0) + amount
                self._open[row.id] = ticket
                heapq.heappush(self._expiring, ticket)


def rebuild(ledger: Ledger, db_path: str | Path, gone: Gone | None = None, *,
            serving: bool) -> tuple[list[OpenReservation], list[OpenReservation]]:
    """Restore ``ledger`` from the ``spend`` table of ``db_path`` as of its clock's now, and
    return the reservations it found open (not yet expired, and past their expiry: see
    :func:`load_state`). ``serving``: whoever rebuilds it serves from ``data_dir`` (holds its
    lock), so what it finds open a crash left; else it only reads beside whatever serves (a
    report, a command that learns), and a reservation whose request the service still runs
    is held, not charged (see :meth:`Ledger.restore`)."""
    now = ledger.clock()
    until = reach(now)
    spent, live, stale = load_state(db_path, now, gone, until=until)
    ledger.restore(spent, [*live, *stale],
                   service_running=not serving and served(Path(db_path).parent),
                   later=partial(read_later, db_path, gone=gone), later_until=until)
    return live, stale


def read_later(db_path: str | Path, since: float, until: float, exclude: Collection[str] = (),
               *, gone: Gone | None = None) -> list[LaterRow]:
    """The settled spend the ``spend`` table of ``db_path`` dates in [``since``, ``until``)
    (instants on the hour), but that of the reservations ``exclude`` names, summed by the hour
    it is dated in and whom it charges."""
    path = Path(db_path)
    still_there(path, gone)
    if not path.exists():
        return []
    try:
        conn = read_store(path, gone)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            return _later_rows(conn, since, until, exclude) if "spend" in tables else []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise store_error(path, "read the budgets' spend ledger", exc) from None


def _later_rows(conn: sqlite3.Connection, since: float, until: float,
                exclude: Collection[str] = ()) -> list[LaterRow]:
    skip = f" AND reservation_id NOT IN ({', '.join('?' for _ in exclude)})" if exclude else ""
    return [(float(hour) * 3600.0, tuple(who), float(amount or 0.0)) for hour, *who, amount in
            conn.execute(
                "SELECT CAST(ts / 3600 AS INTEGER) AS hour, key_id, tenant, model, provider, "
                f"kind = '{CARRY}' AS carry, sum(amount_usd) FROM spend WHERE {CHARGED_ROWS} "
                f"AND ts >= ? AND ts < ?{skip} "
                "GROUP BY hour, key_id, tenant, model, provider, carry",
                (since, until, *exclude))]


def load_state(db_path: str | Path, now: float | None = None, gone: Gone | None = None, *,
               until: float | None = None
               ) -> tuple[Spent, list[OpenReservation], list[OpenReservation]]:
    """What the ``spend`` table of ``db_path`` says: (settled spend by account, period and the
    period's start, from its ``settle`` and ``expire_charge`` rows: in the periods under way
    at ``now``, and in later ones for rows dated after them and before ``until``, by default
    :func:`reach` of ``now`` (see :func:`read_later` for those after it); reservations still
    open and not yet expired; reservations open but past their expiry: those a run that
    stopped mid-request left, however long ago, which :meth:`Ledger.restore` charges as they
    expire). ``gone``:
    the store writing ``db_path`` beside this read (see
    :func:`~switchpoint.store.reading.still_there`)."""
    now = time.time() if now is None else now
    path = Path(db_path)
    still_there(path, gone)
    if not path.exists():
        return {}, [], []
    try:
        return _read_state(path, now, reach(now) if until is None else until, gone)
    except sqlite3.Error as exc:
        raise store_error(path, "read the budgets' spend ledger", exc) from None


def _read_state(path: Path, now: float, until: float, gone: Gone | None
                ) -> tuple[Spent, list[OpenReservation], list[OpenReservation]]:
    conn = read_store(path, gone)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "spend" not in tables:
            return {}, [], []
        spent: Spent = {}

        def count(who: tuple[Any, ...], period: str, start: float, amount: Any) -> None:
            for account in row_accounts(*who):
                by_start = spent.setdefault(account, {}).setdefault(period, {})
                by_start[start] = by_start.get(start, 0.0) + float(amount or 0.0)

        ends = {period: period_end(period, now) for period in PERIODS}
        for period in PERIODS:
            start = period_start(period, now)
            for *who, amount in conn.execute(
                    f"SELECT key_id, tenant, model, provider, kind = '{CARRY}', "
                    f"sum(amount_usd) FROM spend WHERE {CHARGED_ROWS} AND ts >= ? AND ts < ? "
                    f"GROUP BY key_id, tenant, model, provider, kind = '{CARRY}'",
                    (start, ends[period])):
                count(tuple(who), period, start, amount)
        # Spend dated after the periods under way (booked before the clock was stepped back
        # across a period's end) counts in the periods it is dated in, when they come: summed
        # by the hour it is dated in (every period starts on an hour, UTC); up to ``until``.
        for at, who, amount in _later_rows(conn, ends["hour"], until):
            for period in PERIODS:
                if at >= ends[period]:
                    count(who, period, period_start(period, at), amount)
        # Reservations made LOOKBACK_S before the ledger's last row (or before now, when
        # that is earlier) are past any request deadline of the run that wrote it, and were
        # closed by it or by the start after the run they were made in: only later ones can
        # still hold budget or need their expiry recorded (an index read, not a scan of the
        # months of rows the ledger keeps).
        (last,) = conn.execute("SELECT max(ts) FROM spend").fetchone()
        since = min(now, float(last) if last is not None else now) - LOOKBACK_S
        # (A reservation that held more for a further try has a row written after its first
        # saying all it holds. What a reservation holds only grows: its row holding the most
        # is its latest, whatever time the clock showed, or order the rows reached the file.)
        # (Its first row's instant is when it was made: its charges count then.)
        latest: dict[str, tuple[float, tuple[Any, ...]]] = {}
        first: dict[str, float] = {}
        for row in conn.execute(
                "SELECT reservation_id, ts, expires_at, holds, key_id, tenant, amount_usd, "
                "model, provider FROM spend WHERE ts >= ? AND kind = 'reserve' ORDER BY rowid",
                (since,)):
            total = sum(float(v) for v in json.loads(row[3] or "{}").values())
            if row[0] not in latest or total >= latest[row[0]][0]:
                latest[row[0]] = (total, row)
            first[row[0]] = min(first.get(row[0], row[1]), row[1])
        reserved = [(row[0], first[row[0]], *row[2:]) for _, row in latest.values()]
        # (The rows that close a reservation, and those that booked its expiry as its
        # request still ran: see Ledger.restore. Only those of the reservations read, chosen
        # by SQLite: not every settlement since, years of them when the clock was once set
        # ahead, each read into Python to be dropped.)
        closed: set[str] = set()
        running: set[str] = set()
        for rid, kind in conn.execute(
                "SELECT reservation_id, kind FROM spend WHERE ts >= ? AND kind != 'reserve' "
                "AND reservation_id IN (SELECT reservation_id FROM spend WHERE ts >= ? "
                "AND kind = 'reserve')", (since, since)):
            (running if kind == EXPIRE_RUNNING else closed).add(rid)
        open_rows = [row for row in reserved if row[0] not in closed]
    finally:
        conn.close()
    live: list[OpenReservation] = []
    stale: list[OpenReservation] = []
    for rid, ts, expires_at, holds, key_id, tenant, amount, model, provider in open_rows:
        expiry = float(expires_at if expires_at is not None else ts)
        (live if expiry > now else stale).append(
            OpenReservation(rid, float(ts), expiry, json.loads(holds or "{}"), key_id, tenant,
                            float(amount or 0.0), model, provider, rid in running))
    return spent, live, stale


def row_accounts(key_id: str | None, tenant: str | None, model: str | None,
                 provider: str | None, carry: Any = False) -> list[str]:
    """The accounts one charged row of the ``spend`` table charges: a settlement's or an
    expiry's (:func:`settle_accounts`), or a ``carry`` row's one account."""
    if not carry:
        return settle_accounts(key_id, tenant, model, provider)
    if key_id:
        return [key_account(key_id)]
    if tenant:
        return [tenant_account(tenant)]
    if model:
        return [model_account(model)]
    return [provider_account(provider)] if provider else [TOTAL]


def carry_record(account: str, amount: float, at: float) -> LedgerRecord:
    """The ``carry`` row that charges ``amount`` to ``account`` alone, dated ``at``."""
    kind, _, name = account.partition(":")
    return LedgerRecord(ts=at, reservation_id=f"carry-{os.urandom(12).hex()}", kind=CARRY,
                        amount_usd=amount, key_id=name if kind == "key" else None,
                        tenant=name if kind == "tenant" else None,
                        model=name if kind == "model" else None,
                        provider=name if kind == "provider" else None)


def settle_accounts(key_id: str | None, tenant: str | None, model: str | None,
                    provider: str | None) -> list[str]:
    """The accounts one settled request (or one charge of it) is charged to."""
    accounts = [TOTAL]
    if key_id:
        accounts.append(key_account(key_id))
    if tenant:
        accounts.append(tenant_account(tenant))
    if model:
        accounts.append(model_account(model))
    if provider:
        accounts.append(provider_account(provider))
    return accounts
