"""Budgets: ``AMOUNT/PERIOD`` in US dollars, over calendar periods in UTC, and the λ curve.

A budget string is ``50/month``, ``2.5/day``, ``$10/hour`` or ``100/week`` (USD). Periods are
calendar periods in UTC and reset at their boundary: an hour at the top of the hour, a day at
00:00 UTC, a week on Monday 00:00 UTC, a month on the 1st at 00:00 UTC. A budget of 0 refuses
every request that could cost anything.

The λ curve maps the fraction of a budget used (settled spend plus in-flight reservations,
over the limit) to the least cost weight ``auto`` routes with: piecewise linear between its
points, flat before the first and after the last. ``[[0.5, 0], [0.8, 1], [1.0, 5]]`` (the
default) leaves λ alone until half the budget is gone, then raises it to 1 at 80% and to 5 at
the limit; a caller's or tenant's larger λ is never lowered.
"""

from __future__ import annotations

import calendar
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from switchpoint._messages import all_of, json_quoted, one_of, people_number
from switchpoint._numbers import NOT_FINITE_TEXT, not_finite_text, too_small
from switchpoint.catalog import USD_DIGITS
from switchpoint.decision import MAX_COST_WEIGHT

PERIODS = ("hour", "day", "week", "month")
DEFAULT_CURVE: tuple[tuple[float, float], ...] = ((0.5, 0.0), (0.8, 1.0), (1.0, 5.0))
# (an amount of NaN or an infinity, as float() spells one, is read to be told it is not finite)
_BUDGET = re.compile(r"\s*\$?\s*(?P<amount>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|"
                     r"inf(?:inity)?|nan))\s*(?:usd)?\s*/\s*(?P<period>[A-Za-z]+)\s*",
                     re.IGNORECASE)
MAX_BUDGET_USD = 1e9
#: The least budget above 0: a smaller amount the ledger's views show as 0 (:data:`USD_DIGITS`),
#: its spend and what remains of it too, and under 1e-12 its limit check (which allows that much
#: of rounding) does not tell from 0: it would act as a budget of 0 shown as another.
MIN_BUDGET_USD = 10.0 ** -USD_DIGITS
# The most points a λ curve may have: a handful shape any curve, and each request reads it.
MAX_CURVE_POINTS = 100


def _amounts(period: str) -> str:
    """What a budget's amount may be, as a refused one of ``period`` is told."""
    return (f"write 0/{period} for a budget that allows no spend, or an amount from "
            f"{MIN_BUDGET_USD:g} to {people_number(MAX_BUDGET_USD)} US dollars")


def amount_text(amount: float) -> str:
    """A budget's amount in US dollars as every message, report and stored key shows it: the
    shortest decimal that reads back as the same number, written out in digits (``50``,
    ``2.5``, ``1234567.89``, ``0.0000001``), so what was written is never rounded (``:g`` kept
    6 digits: ``1.23457e+06``) and reads back as a budget. An amount under the least budget
    (only a key store made by an earlier version holds one) as Python writes it shortest
    (``1e-12``), not a run of zeros."""
    amount = float(amount)  # (a config's hourly budget may be written as an integer)
    if (amount != 0 and abs(amount) < MIN_BUDGET_USD) or not math.isfinite(amount):
        return repr(amount)
    return f"{Decimal(repr(amount)).normalize():f}"


@dataclass(frozen=True)
class Budget:
    """At most ``limit_usd`` per calendar ``period`` (UTC)."""

    limit_usd: float
    period: str

    def __str__(self) -> str:
        return f"{amount_text(self.limit_usd)}/{self.period}"


def parse_budget(text: str, *, stored: bool = False) -> Budget:
    """``"50/month"`` → ``Budget(50.0, "month")``. Raises ``ValueError`` saying what is wrong:
    the one rule of a budget wherever one is given (the config, a key's, on the command line or
    over HTTP): an amount from 0 (which allows no spend) to :data:`MAX_BUDGET_USD`, none between
    0 and :data:`MIN_BUDGET_USD`. ``stored``: a budget a key store holds, taken as it was when
    the key was made, an amount under the least too (an earlier version took one)."""
    if not isinstance(text, str):
        raise ValueError(f'must be a string such as "50/month", got {json_quoted(text)}')
    return _parse_text(text, stored)


@lru_cache(maxsize=1024)
def _parse_text(text: str, stored: bool = False) -> Budget:
    match = _BUDGET.fullmatch(text)
    if match is None:
        raise ValueError(f"{json_quoted(text)} is not a budget; write AMOUNT/PERIOD in US "
                         f'dollars, e.g. "50/month" or "2.5/day" (the period {one_of(PERIODS)})')
    amount = float(match["amount"]) + 0.0  # "-0/day" is "0/day"
    period = match["period"].lower()
    if period not in PERIODS:
        raise ValueError(f"{json_quoted(text)}: {json_quoted(period)} is not a budget period; "
                         f"use one of {one_of(PERIODS)} (calendar periods in UTC)")
    written = match["amount"]
    if not_finite_text(written):  # (-inf/day too: what is wrong is that it is no number)
        raise ValueError(f"{json_quoted(text)}: the amount {NOT_FINITE_TEXT}; "
                         f"{_amounts(period)}")
    if amount < 0 or (written.startswith("-") and too_small(written)):  # (-1e-400: -0.0)
        raise ValueError(f"{json_quoted(text)}: the amount is negative; {_amounts(period)}")
    if (0 < amount < MIN_BUDGET_USD or (amount == 0 and too_small(written))) \
            and not stored:  # (1e-400 too: a float holds it as 0, which it is not)
        raise ValueError(f"{json_quoted(text)}: the amount is less than the least budget, "
                         f"{MIN_BUDGET_USD:g} US dollars (the ledger shows a smaller one as 0); "
                         f"{_amounts(period)}")
    if not math.isfinite(amount) or amount > MAX_BUDGET_USD:  # (1e400: too large, not NaN)
        raise ValueError(f"{json_quoted(text)}: the amount is too large; it must be at most "
                         f"{people_number(MAX_BUDGET_USD)} US dollars")
    return Budget(amount, period)


def parse_budgets(items: str | Sequence[str] | None, *, stored: bool = False) -> list[Budget]:
    """One budget string or a list of them; one budget per period at most (so at most four).
    ``stored``: a key store's, read as :func:`parse_budget` reads a stored one."""
    if items is None:
        return []
    listed = [items] if isinstance(items, str) else list(items)
    if len(listed) > len(PERIODS):
        raise ValueError(f"{len(listed)} budgets given; give at most {len(PERIODS)}, one per "
                         f"period ({all_of(PERIODS)})")
    budgets = [parse_budget(item, stored=stored) for item in listed]
    periods = [b.period for b in budgets]
    for period in PERIODS:
        if periods.count(period) > 1:
            raise ValueError(f"two budgets per {period} ({', '.join(map(str, budgets))}); give "
                             "at most one per period")
    return budgets


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def period_start(period: str, ts: float) -> float:
    """The start (epoch seconds) of the calendar ``period`` holding ``ts``."""
    t = _utc(ts)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
    elif period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "week":
        start = (t - timedelta(days=t.weekday())).replace(hour=0, minute=0, second=0,
                                                          microsecond=0)
    elif period == "month":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown period {json_quoted(period)}; use one of {one_of(PERIODS)}")
    return start.timestamp()


def period_end(period: str, ts: float) -> float:
    """When the calendar ``period`` holding ``ts`` ends (its budgets reset)."""
    start = _utc(period_start(period, ts))
    if period == "hour":
        end = start + timedelta(hours=1)
    elif period == "day":
        end = start + timedelta(days=1)
    elif period == "week":
        end = start + timedelta(days=7)
    else:
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
    return end.timestamp()


def check_curve(points: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """A λ curve as ``((fraction, λ), ...)``, fractions strictly increasing, all >= 0, each λ
    at most the most a request may route with (``MAX_COST_WEIGHT``), at most
    :data:`MAX_CURVE_POINTS` points."""
    if len(points) > MAX_CURVE_POINTS:
        raise ValueError(f"{len(points)} points given; give at most {MAX_CURVE_POINTS} (the "
                         "curve is linear between them)")
    out: list[tuple[float, float]] = []
    for i, point in enumerate(points):
        if len(point) != 2:
            raise ValueError(f"point {i} must be [fraction_of_budget_used, cost_weight], "
                             f"got {json_quoted(list(point))}")
        fraction, lam = float(point[0]), float(point[1])
        if not (math.isfinite(fraction) and math.isfinite(lam)) or fraction < 0 or lam < 0:
            raise ValueError(f"point {i} ({fraction:g}, {lam:g}) must hold finite numbers >= 0")
        if lam > MAX_COST_WEIGHT:
            raise ValueError(f"point {i}'s cost_weight is {lam:g}; the most a request may route "
                             f"with is {people_number(MAX_COST_WEIGHT)}, so give at most that")
        if out and fraction <= out[-1][0]:
            raise ValueError(f"the fractions must increase (point {i}: {fraction:g} after "
                             f"{out[-1][0]:g})")
        out.append((fraction, lam))
    return tuple(out)


def used_fraction(used: float, limit: float) -> float:
    """How much of a budget of ``limit`` USD ``used`` USD (spent plus held) uses, the one rule
    for every reading of it (the λ curve, the budget views, the alerts, the reports):
    ``used / limit``, past 1 when a charge went over the limit (a request's cost may pass what
    it held); a budget of 0 allows no spend, so it is wholly used from the start: 1.0, whatever
    was spent."""
    return used / limit if limit > 0 else 1.0


def curve_value(curve: Sequence[tuple[float, float]], fraction: float) -> float:
    """The curve's λ at ``fraction`` (linear between points, flat outside them; 0 if empty)."""
    if not curve:
        return 0.0
    if fraction <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if fraction <= x1:
            return y0 + (y1 - y0) * (fraction - x0) / (x1 - x0)
    return curve[-1][1]


def describe_seconds(seconds: float) -> str:
    """``3725`` → ``1 h 2 min``: how long until a reset, for messages."""
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
