"""The spend mark: what each budget's account had spent in its period under way, kept beside
``switchpoint.db`` so that restoring an older backup of it does not give the spend since back.

Budgets count the spend rows of ``switchpoint.db``; a backup of it lacks the spend made after it
was taken. So the service writes :data:`SPEND_MARK_FILENAME` in ``data_dir`` now and then from
its ledger's background thread (at most every :data:`MARK_INTERVAL_S`, and only when a figure
moved) and at a graceful stop, never on a request's path: one line per configured budget's
account and period, the period under way's start and the spend the ledger holds for it. The
file is written whole to a temporary file, synced and renamed in place, so a crash leaves the
old mark or the new one; it holds one line per configured budget, no more. At a start, where
the database holds less for an account's period under way than the mark, the difference is
booked again as a ``carry`` row of the spend ledger (see
:data:`~switchpoint.governance.ledger.CARRY`). Spend made after the last mark and before a
crash is not in it: at most :data:`MARK_INTERVAL_S` of spend is lost to a restore after a
crash, none after a graceful stop. A mark of a period that ended is passed over; a line that
holds no plausible mark (damaged, negative, not finite) is refused with a warning naming it.
Account names and amounts are kept, never a secret.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from switchpoint._files import read_small, write_atomically
from switchpoint._messages import quoted_path
from switchpoint.catalog import usd_text
from switchpoint.governance.budgets import MAX_BUDGET_USD, PERIODS, period_start
from switchpoint.governance.ledger import Ledger, describe_account

log = logging.getLogger("switchpoint.governance")

#: The file in ``data_dir`` that keeps the spend of each budget's period under way (see the
#: module's docstring). A backup of ``switchpoint.db`` does not hold it; leave it in place
#: when restoring.
SPEND_MARK_FILENAME = "switchpoint.spend-mark.jsonl"
#: How often, at most, the running service writes the mark.
MARK_INTERVAL_S = 5.0
#: Most bytes a mark is read from (some 300,000 budgets): a larger file is passed over.
MAX_MARK_BYTES = 32 * 1024 * 1024
#: The most a mark may say an account spent in a period: far past any budget, so a figure
#: beyond it is a damaged line, not spend.
MAX_MARK_USD = MAX_BUDGET_USD * 1000
# The longest account name a line may hold (a key's id, a model's name: well within it).
_MAX_ACCOUNT = 2048
_ACCOUNT_KINDS = ("key:", "tenant:", "model:", "provider:")


class Mark(NamedTuple):
    """``account`` had spent ``spent_usd`` in the ``period`` that began at ``start``."""

    account: str
    period: str
    start: float
    spent_usd: float

    def line(self) -> bytes:
        item = {"account": self.account, "period": self.period, "start": self.start,
                "spent_usd": self.spent_usd}
        return json.dumps(item, separators=(",", ":")).encode() + b"\n"


def mark_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / SPEND_MARK_FILENAME


def write_marks(path: Path, marks: Iterable[Mark]) -> None:
    """Write ``marks`` to ``path`` whole or not at all (temporary file, fsync, rename)."""
    data = b"".join(mark.line() for mark in marks)

    def fill(fh: IO[bytes]) -> None:
        fh.write(data)

    write_atomically(path, fill, 0o600, state=True)


def _parsed(line: bytes) -> Mark | str:
    """The mark ``line`` holds, or what is wrong with it."""
    try:
        item = json.loads(line)
    except ValueError:
        return "it is not JSON"
    if not isinstance(item, dict):
        return "it is not a JSON object"
    account, period = item.get("account"), item.get("period")
    start, spent = item.get("start"), item.get("spent_usd")
    if not isinstance(account, str) or not 0 < len(account) <= _MAX_ACCOUNT or not (
            account == "all" or account.startswith(_ACCOUNT_KINDS)):
        return "its account is not one a budget watches"
    if period not in PERIODS:
        return "its period is not one of " + ", ".join(PERIODS)
    if isinstance(start, bool) or not isinstance(start, int | float) or not math.isfinite(
            start) or period_start(period, float(start)) != float(start):
        return "its start is not the start of a period"
    if isinstance(spent, bool) or not isinstance(spent, int | float) or not math.isfinite(
            spent) or not 0 <= spent <= MAX_MARK_USD:
        return f"its spend is not an amount from 0 to {MAX_MARK_USD:g} US dollars"
    return Mark(account, period, float(start), float(spent))


def read_marks(path: Path) -> list[Mark]:
    """The marks of ``path`` (none when there is no file); a file too large to be one, and
    each line that holds no plausible mark, passed over with a warning naming it."""
    if not path.exists():
        return []
    data = read_small(path, MAX_MARK_BYTES)
    if data is None:
        log.warning("%s could not be read as a spend mark (not a regular file, unreadable, or "
                    "larger than %d bytes): spend since a restored backup of switchpoint.db "
                    "is not counted again; remove the file, the service writes it again",
                    quoted_path(path), MAX_MARK_BYTES)
        return []
    marks: list[Mark] = []
    refused: list[str] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parsed = _parsed(line)
        if isinstance(parsed, Mark):
            marks.append(parsed)
        else:
            refused.append(f"line {number}: {parsed}")
    if refused:
        shown = "; ".join(refused[:10]) + (f"; and {len(refused) - 10} more"
                                           if len(refused) > 10 else "")
        log.warning("%s: %d line(s) hold no spend mark and are passed over (%s); the service "
                    "writes the file whole again within %g s", quoted_path(path),
                    len(refused), shown, MARK_INTERVAL_S)
    return marks


def current(marks: Sequence[Mark], now: float) -> list[Mark]:
    """The marks of the periods under way at ``now`` (one per account and period: the
    largest, should a file repeat one)."""
    kept: dict[tuple[str, str], Mark] = {}
    for mark in marks:
        if mark.start != period_start(mark.period, now):
            continue
        key = (mark.account, mark.period)
        if key not in kept or mark.spent_usd > kept[key].spent_usd:
            kept[key] = mark
    return list(kept.values())


def carry_over(ledger: Ledger, path: Path, now: float) -> list[tuple[Mark, float]]:
    """Charge ``ledger``, in memory, what each mark of ``path`` for a period under way at
    ``now`` holds more than the ledger (each to its account alone, dated at its period's
    start: see :meth:`Ledger.carry <switchpoint.governance.ledger.Ledger.carry>`), and return
    each mark carried with the amount."""
    # An account's periods from the one begun last: each carry is dated at its period's
    # start, so it counts in every period of the account begun by then (whose spend so far
    # holds what was lost since) and in none begun later; what a period lacks once those begun
    # after it are carried was lost between its start and theirs. So each period ends with
    # what its mark says, none more (a week begun last month beside a month).
    carried: list[tuple[Mark, float]] = []
    for mark in sorted(current(read_marks(path), now), key=lambda m: (m.account, -m.start)):
        lacking = mark.spent_usd - ledger.spent(mark.account, mark.period, now)
        if lacking > max(1e-12, mark.spent_usd * 1e-9):
            ledger.carry(mark.account, lacking, mark.start)
            carried.append((mark, lacking))
    return carried


def carried_text(carried: Sequence[tuple[Mark, float]]) -> str:
    """``tenant acme $0.010000 this month; ...``: what :func:`carry_over` carried."""
    return "; ".join(f"{describe_account(mark.account)} {usd_text(amount)} this {mark.period}"
                     for mark, amount in carried)
