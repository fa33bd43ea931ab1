"""Cost governance from the real request log: cost reports, savings, forecasts, suggestions, the
SLA report and budget alerts.

Everything here reads the SQLite log the gateway writes (``requests``, ``decisions`` and the
``spend`` ledger), so the figures are what happened, not estimates, except where a figure is a
what-if and says so:

- :meth:`Reports.cost_report` sums the upstream-reported cost (tokens at catalog prices) of the
  requests of the last day (24 h), week (7 d) or month (30 d), by model, tenant and key. An
  answer whose cost is unknown (its model has no prices, its upstream reported no usage) is
  not summed as free: ``cost_unknown_requests`` counts those, and the average is over the
  others.
- :meth:`Reports.savings_estimate` prices the same requests' tokens at a comparison model
  (default: the strongest model of the pool: the lowest mean expected error over the logged
  decisions, else the dearest that ``auto`` may choose).
- :meth:`Reports.forecast_cost` projects a traffic assumption over the routing mix logged in
  the last week.
- :meth:`Reports.get_cost_optimizations` re-routes the logged traffic offline at other λ and
  over pools without each model, and reports the spend and expected-quality deltas. It needs no
  prompts: every ``auto`` decision logs each candidate's expected error and cost (numbers only,
  a few per model; no text, no embedding), and each request its token counts. A what-if answer
  is priced on the request's real tokens; its quality is the router's expected quality
  (1 - expected error) of the model it would have picked.
- :meth:`Reports.get_sla_report` and :meth:`Reports.check_budget_alert` measure the SLAs and
  budgets of the configuration in force against the log and the ledger.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import statistics
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from switchpoint._admitted import admitted_by
from switchpoint._files import served
from switchpoint._limits import MAX_REQUESTS_PER_HOUR as MAX_REQUESTS_PER_HOUR
from switchpoint._limits import MAX_SINCE_HOURS as MAX_SINCE_HOURS
from switchpoint._limits import SINCE_HOURS as SINCE_HOURS
from switchpoint._messages import json_quoted, listed_names, one_of, people_number, plural
from switchpoint._numbers import checked_number
from switchpoint.catalog import (
    MAX_TOKENS,
    Catalog,
    ModelCard,
    check_token_counts,
    usd,
    usd_text,
)
from switchpoint.config import Settings
from switchpoint.errors import InvalidInputError, NotFoundError
from switchpoint.governance.budget_list import (
    budget_position,
    check_limit,
    listed_budgets,
    page_of,
)
from switchpoint.governance.budgets import (
    Budget,
    amount_text,
    describe_seconds,
    period_end,
    period_start,
    used_fraction,
)
from switchpoint.governance.keys import KeyStore, logged_keys
from switchpoint.governance.ledger import (
    CHARGED_ROWS,
    EXPIRE_CHARGE,
    TOTAL,
    TOTAL_ROWS,
    Ledger,
    describe_account,
    rebuild,
    tenant_account,
)
from switchpoint.governance.settings import SLASettings
from switchpoint.governance.spend_mark import carried_text, carry_over, mark_path
from switchpoint.learning.events import DEFAULT_TENANT, check_tenant
from switchpoint.store.errors import store_error
from switchpoint.store.reading import Gone, read_store, still_there
from switchpoint.store.sums import ERROR_MICRO, error_sums, of_tenant

log = logging.getLogger("switchpoint.governance")

REPORT_PERIODS = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
SWEEP = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
# A what-if whose expected quality falls by at most this much counts as "no real loss".
QUALITY_TOLERANCE = 0.01
NONE = "(none)"
# How much of a tenant's name an error quotes.
MAX_TENANT_SHOWN = 66


# The reference prompt the router prices a request at to set the λ scale (see router.py).
REFERENCE_INPUT_TOKENS = 500
# The shortest window (seconds) a budget alert measures a rate of spend over, when its span
# is longer. A rate needs several answers to mean anything, and one answer can take a minute:
# measured over a deployment's first seconds, one request was extrapolated over the hour as
# if it came every few seconds. Five minutes is a third of the hour's 15-minute span, so a
# real burn still shows in the projection within five minutes of a start.
MIN_RATE_WINDOW = 300.0

# A public read of the logs, made as one request inside whatever ``admitted`` (given to
# :class:`Reports`) counts (a gateway's: closing waits for it, and refuses it once begun).
_counted = admitted_by(lambda reports: reports.admitted())


class RateWindow(NamedTuple):
    """The window a rate of spend is measured over (:meth:`Reports._trailing`): its length,
    and whether the logs began within it, shorter than :data:`MIN_RATE_WINDOW` ago (then the
    seconds before them count as no spend, and the projection is a low-confidence one)."""

    seconds: float
    low_confidence: bool

    def fields(self) -> dict[str, Any]:
        """As an alert reports it."""
        return {"projection_window_seconds": round(self.seconds, 3),
                "projection_low_confidence": self.low_confidence}


class _Group:
    """The logged requests whose decisions weighed the same models (in the same order), as
    arrays with one column per model: what re-routing them needs, a few numbers a request
    (no dictionary each), so a week of traffic is re-routed at every λ in one pass of numpy
    per λ rather than one of Python per request."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.n = 0
        self._errors: array[float] = array("d")
        self._costs: array[float] = array("d")
        self._lams: array[float] = array("d")
        self._tokens: array[float] = array("d")  # prompt, completion (NaN: unknown)
        self._base: array[float] = array("d")    # what the answer cost, or its price
        self._quality: array[float] = array("d")  # 1 - the answering model's expected error

    def add(self, errors: Mapping[str, float], costs: Mapping[str, float], lam: float,
            tokens: tuple[float, float], base: float, quality: float) -> None:
        self.n += 1
        self._errors.extend(float(errors[m]) for m in self.names)
        self._costs.extend(float(costs.get(m, 0.0)) for m in self.names)
        self._lams.append(lam)
        self._tokens.extend(tokens)
        self._base.append(base)
        self._quality.append(quality)

    def freeze(self, reports: Reports) -> None:
        # (NumPy here and in what-if alone: the cost, SLA and budget reports compute none)
        import numpy as np

        k = len(self.names)
        self.errors = np.frombuffer(self._errors, dtype=np.float64).reshape(self.n, k)
        self.costs = np.frombuffer(self._costs, dtype=np.float64).reshape(self.n, k)
        self.lams = np.frombuffer(self._lams, dtype=np.float64)
        tokens = np.frombuffer(self._tokens, dtype=np.float64).reshape(self.n, 2)
        self.base = np.frombuffer(self._base, dtype=np.float64)
        self.quality = np.frombuffer(self._quality, dtype=np.float64)
        # What each model would have cost: its catalog price on the request's tokens, else the
        # router's estimate.
        self.spend = self.costs.copy()
        known = ~np.isnan(tokens).any(axis=1)
        for j, name in enumerate(self.names):
            card = reports.card(name)
            if card is not None and card.priced:
                assert card.input_per_mtok is not None and card.output_per_mtok is not None
                priced = (tokens[:, 0] * card.input_per_mtok
                          + tokens[:, 1] * card.output_per_mtok) / 1e6
                self.spend[:, j] = np.where(known, priced, self.costs[:, j])


def _routed_where(tenant: str | None) -> tuple[str, list[Any]]:
    """The logged ``auto`` requests a what-if re-routes, as SQL over ``requests r`` joined to
    ``decisions d`` (its first two arguments, the window's start and end, are the caller's):
    answered, with their decisions' estimates, of ``tenant`` (None: every tenant)."""
    where = ("r.ts >= ? AND r.ts < ? AND r.model IS NOT NULL AND d.expected_errors IS NOT "
             "NULL AND d.expected_costs IS NOT NULL")
    clause, more = of_tenant("r.tenant", tenant)
    return where + clause, list(more)


class _Routed:
    """The logged ``auto`` requests a what-if re-routes, grouped by the models they weighed."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], _Group] = {}
        self.lambdas: set[float] = set()
        self.models: set[str] = set()

    def __len__(self) -> int:
        return sum(g.n for g in self.groups.values())


class _Savings:
    """What answered requests cost against what they would have cost on one comparison model
    priced on the same tokens, added up a request at a time."""

    def __init__(self, reports: Reports, comparison: str | None, basis: str) -> None:
        self.reports, self.comparison, self.basis = reports, comparison, basis
        self.requests = self.unpriced = 0
        self.actual = self.compared = 0.0

    def add(self, model: str | None, pt: int | None, ct: int | None,
            cost: float | None) -> None:
        if model is None or self.comparison is None:
            return
        priced = self.reports._price(self.comparison, pt, ct)
        if priced is None or cost is None:
            self.unpriced += 1
            return
        self.requests += 1
        self.actual += float(cost)
        self.compared += priced

    def report(self) -> dict[str, Any]:
        compared, actual = self.compared, self.actual
        return {"comparison_model": self.comparison, "basis": self.basis,
                "requests": self.requests, "unpriced_requests": self.unpriced,
                "actual_cost_usd": usd(actual), "comparison_cost_usd": usd(compared),
                "savings_usd": usd(compared - actual),
                "savings_pct": round((compared - actual) / compared, 6) if compared else 0.0}


def _period_seconds(period: str) -> float:
    if not isinstance(period, str) or period not in REPORT_PERIODS:
        raise InvalidInputError("period", f"{json_quoted(period)} is not a report period; use "
                                          f"one of {one_of(REPORT_PERIODS)}")
    return REPORT_PERIODS[period]



def _number(value: object, name: str, *, integer: bool = False,
            at_most: float | None = None) -> float:
    x = checked_number(name, value)  # (NumPy's scalars, a Decimal too)
    if x is None:
        raise InvalidInputError(name, f"must be a number >= 0, got {json_quoted(value)}")
    # (an infinity said so, not "inf": see json_quoted; past the most when there is one)
    shown = f"{x:g}" if math.isfinite(x) else json_quoted(x)
    if at_most is not None and x > at_most:
        raise InvalidInputError(name, f"must be at most {people_number(at_most)}, got {shown}")
    if not math.isfinite(x) or x < 0:
        raise InvalidInputError(name, f"must be a finite number >= 0, got {shown}")
    if integer and not x.is_integer():
        raise InvalidInputError(name, f"must be a whole number of tokens, got {x:g}")
    return x


def alert_level(used: float, limit: float, projected: float, threshold: float) -> str:
    """A budget alert's level for a budget of ``limit`` USD with ``used`` USD spent (and
    held) and ``projected`` by the period's end: ``critical`` at or over the limit,
    ``warning`` from ``threshold`` of it or when projected to reach it, else ``ok``. A budget
    of 0 blocks all spend on purpose: wholly used from the start, it is doing its job, not
    nearing a refusal nobody expects, so it is ``ok`` while nothing is spent against it
    (``critical`` once something is, ``warning`` when the recent rate says something would
    be), not a standing alarm beside every budget of 0."""
    if limit <= 0:
        return "critical" if used > 0 else "warning" if projected > 0 else "ok"
    fraction = used_fraction(used, limit)
    return ("critical" if fraction >= 1.0 else
            "warning" if fraction >= threshold or projected >= limit else "ok")


class Reports:
    """Reports over one data directory's log, for one configuration.

    ``db_path`` is the request log (``switchpoint.db``); ``settings`` gives the catalog (prices),
    tenants, budgets and SLAs; ``ledger`` the live spend ledger (a gateway's; default: rebuilt
    from the log); ``keys`` the key store (for keys' budgets); ``cost_scale`` the router's λ
    scale for a pool (default: from catalog prices, as the router computes it); ``gone`` the
    store writing ``db_path`` beside these reports (its ``gone``: a file deleted or replaced
    under it is not read, see :func:`~switchpoint.store.reading.still_there`); ``admitted``
    what each public read runs inside (a gateway's reports: one request inside the gateway,
    see :meth:`Gateway.admitted <switchpoint.gateway.engine.Gateway.admitted>`, so closing
    waits for a read under way and refuses one once begun; default: nothing).
    """

    def __init__(self, db_path: str | Path, settings: Settings, *,
                 catalog: Catalog | None = None, ledger: Ledger | None = None,
                 keys: KeyStore | None = None,
                 cost_scale: Callable[[Sequence[str]], float] | None = None,
                 clock: Callable[[], float] = time.time, gone: Gone | None = None,
                 admitted: Callable[[], AbstractContextManager[object]] = nullcontext,
                 ) -> None:
        self.db_path = Path(db_path)
        self.admitted = admitted
        self.gone = gone
        self.settings = settings
        self.catalog = catalog if catalog is not None else settings.catalog()
        self._ledger = ledger
        self.keys = keys
        self._cost_scale = cost_scale
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Reports:
        return cls(settings.db_path, settings,
                   keys=KeyStore.in_dir(settings.data_dir, reads_only=True), **kwargs)

    # Plumbing ----------------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection | None:
        """A read-only connection to the log, None when there is none yet (see
        :func:`~switchpoint.store.reading.read_store`: a file of a newer schema is refused)."""
        still_there(self.db_path, self.gone)
        if not self.db_path.exists():
            return None
        try:
            return read_store(self.db_path, self.gone)
        except sqlite3.DatabaseError as exc:
            raise store_error(self.db_path, "read the request and decision logs", exc) from None

    @_counted
    def logged_tenants(self) -> list[str]:
        """The tenants the request log and the feedback log name (``default`` for requests
        that name none)."""
        rows = self._query("SELECT DISTINCT coalesce(tenant, ?) FROM requests", [DEFAULT_TENANT])
        if self._has_table("feedback"):
            rows += self._query("SELECT DISTINCT tenant FROM feedback")
        return sorted({str(name) for (name,) in rows})

    def _has_table(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                [name]))

    @_counted
    def unknown_tenant(self, tenant: str | None, field: str = "tenant") -> str | None:
        """Why ``tenant`` is unknown, or None when it is known: every tenant (None),
        ``default`` (the requests without a tenant), a tenant of the configuration and one the
        request log or the feedback log names (a tenant since removed from the config keeps
        its history; one that only routes and gives feedback has taught something). The one
        rule for every place that takes a tenant to report on (the reports, the budget alert,
        ``GET /v1/router/status``, ``learn --export``): a misspelt tenant would otherwise be
        answered as having spent and taught nothing, or with the whole gateway's figures. The
        reason quotes the name cut short and redacted (a key pasted where the tenant goes is
        not repeated) and lists the known tenants. A ``tenant`` that is no tenant's name
        (:func:`~switchpoint.learning.events.check_tenant`) raises
        :class:`~switchpoint.errors.InvalidInputError` naming ``field``."""
        if tenant is not None:
            check_tenant(tenant, field)
        if tenant is None or tenant == DEFAULT_TENANT or tenant in self.settings.tenants:
            return None
        if self._query("SELECT 1 FROM requests WHERE tenant = ? LIMIT 1", [tenant]):
            return None
        if self._has_table("feedback") and self._query(
                "SELECT 1 FROM feedback WHERE tenant = ? LIMIT 1", [tenant]):
            return None
        from switchpoint._redact import redact

        known = sorted({*self.settings.tenants, *self.logged_tenants(), DEFAULT_TENANT})
        shown = listed_names(known, width=MAX_TENANT_SHOWN, quoted=True)
        return (f"{json_quoted(redact(tenant), MAX_TENANT_SHOWN)} is neither a tenant of the "
                f"config nor one the request or feedback log names; known: {shown} (default: "
                "requests without a tenant)")

    @_counted
    def check_tenant(self, tenant: str | None) -> None:
        """Refuse a ``tenant`` there is nothing to report on (see :meth:`unknown_tenant`) with
        a :class:`NotFoundError` naming the known ones."""
        reason = self.unknown_tenant(tenant)
        if reason is not None:
            raise NotFoundError(f"tenant: {reason}", param="tenant")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._rows(sql, args))

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of ``sql``, a row at a time (a month of requests is not held whole)."""
        conn = self._read()
        if conn is None:
            return
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "requests" not in tables:
                return
            yield from conn.execute(sql, args)
        except sqlite3.DatabaseError as exc:  # a damaged page, a lock held too long
            raise store_error(self.db_path, "read the request and decision logs", exc) from None
        finally:
            conn.close()

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            ledger = Ledger(self.clock)
            # (A reservation a crash left open past its deadline is charged, as the next
            # start of the service charges it; one whose request a running service still
            # runs is held: see Ledger.restore.)
            rebuild(ledger, self.db_path, self.gone, serving=False)
            if not served(self.db_path.parent):  # (a service carried it at its start)
                mark = mark_path(self.db_path.parent)
                carried = carry_over(ledger, mark, self.clock())
                if carried:
                    log.warning("switchpoint.db holds less spend than the spend mark %s kept "
                                "(an older backup restored?): shown counted again, as the "
                                "next start of the service counts it: %s", mark,
                                carried_text(carried))
            self._ledger = ledger
        return self._ledger

    def card(self, name: str) -> ModelCard | None:
        return self.catalog.get(name) if self.catalog is not None else None

    def _price(self, model: str, prompt: int | None, completion: int | None) -> float | None:
        card = self.card(model)
        if card is None or not card.priced or prompt is None or completion is None:
            return None
        return card.price(prompt, completion)

    def cost_scale(self, pool: Sequence[str]) -> float:
        if self._cost_scale is not None:
            return float(self._cost_scale(pool))
        if self.catalog is None or not all(self.catalog.get(m) is not None
                                           and self.catalog[m].priced for m in pool):
            raise InvalidInputError("models", "the catalog lacks prices for some models; "
                                              "what-if routing needs every model's price")
        out = self.catalog.expected_output_tokens
        return max(self.catalog[m].price(REFERENCE_INPUT_TOKENS, out) for m in pool)

    def _gone(self, model: str) -> bool:
        """Whether logged traffic names a model the catalog no longer has (a reload took it
        out): what-if routing re-routes among the models there are, never to it."""
        return self.catalog is not None and model not in self.catalog

    def _window(self, period: str, until: float | None) -> tuple[float, float]:
        end = self.clock() if until is None else float(until)
        return end - _period_seconds(period), end

    # Cost --------------------------------------------------------------------------------------

    def _requests(self, since: float, until: float, tenant: str | None = None
                  ) -> Iterator[tuple[Any, ...]]:
        clause, more = of_tenant("tenant", tenant)
        where = "ts >= ? AND ts < ?" + clause
        args: list[Any] = [since, until, *more]
        return self._rows(
            "SELECT model, tenant, key_id, prompt_tokens, completion_tokens, cost_usd, "
            f"charged_usd, status, latency_ms, decision_id, ts FROM requests WHERE {where}",
            args)

    def _expiry_charges(self, since: float, until: float, tenant: str | None = None
                        ) -> float:
        """What reservations a stop or crash left open were charged at their expiry in the
        window (``expire_charge`` rows of the spend ledger: no request carries them)."""
        clause, more = of_tenant("tenant", tenant)
        for (amount,) in self._rows(
                "SELECT coalesce(sum(amount_usd), 0) FROM spend "
                f"WHERE kind = '{EXPIRE_CHARGE}' AND ts >= ? AND ts < ?{clause}",
                [since, until, *more]):
            return float(amount)
        return 0.0

    @_counted
    def cost_report(self, period: str = "day", *, until: float | None = None,
                    tenant: str | None = None,
                    comparison_model: str | None = None) -> dict[str, Any]:
        """Requests and cost over the last ``period`` (day, week, month: 24 h, 7 d, 30 d) by
        answering model, tenant and key, with the savings against ``comparison_model``.
        ``charged_usd`` is what budgets were charged: the requests' charges and those of
        reservations a stop or crash left open, charged at their expiry
        (``charged_at_expiry_usd``)."""
        self.check_tenant(tenant)
        since, end = self._window(period, until)
        savings = _Savings(self, *self._comparison(comparison_model, since, end))
        by_model: dict[str, dict[str, Any]] = {}
        by_tenant: dict[str, dict[str, Any]] = {}
        by_key: dict[str, dict[str, Any]] = {}
        total = charged = 0.0
        requests = answered = prompt = completion = unknown = 0
        for model, row_tenant, key_id, pt, ct, cost, charge, *_ in self._requests(
                since, end, tenant):
            requests += 1
            savings.add(model, pt, ct, cost)
            # An answer whose cost is unknown (a model without prices, an upstream that
            # reported no usage) is counted apart, never summed as free.
            missing = model is not None and cost is None
            cost = float(cost or 0.0)
            total += cost
            unknown += missing
            charged += float(charge or 0.0)
            prompt += int(pt or 0)
            completion += int(ct or 0)
            # Requests that name no tenant are the deployment's own tenant's, as elsewhere.
            for table, name in ((by_tenant, row_tenant or DEFAULT_TENANT),
                                (by_key, key_id or NONE)):
                entry = table.setdefault(name, {"requests": 0, "cost_usd": 0.0,
                                                "cost_unknown_requests": 0})
                entry["requests"] += 1
                entry["cost_usd"] += cost
                entry["cost_unknown_requests"] += missing
            if model is not None:
                answered += 1
                entry = by_model.setdefault(model, {"requests": 0, "cost_usd": 0.0,
                                                    "cost_unknown_requests": 0,
                                                    "prompt_tokens": 0, "completion_tokens": 0})
                entry["requests"] += 1
                entry["cost_usd"] += cost
                entry["cost_unknown_requests"] += missing
                entry["prompt_tokens"] += int(pt or 0)
                entry["completion_tokens"] += int(ct or 0)
        for table in (by_model, by_tenant, by_key):
            for entry in table.values():
                entry["cost_usd"] = usd(entry["cost_usd"])
        known = answered - unknown
        at_expiry = self._expiry_charges(since, end, tenant)
        charged += at_expiry
        report: dict[str, Any] = {
            "period": period, "since": since, "until": end, "tenant": tenant,
            "requests": requests, "answered": answered, "total_cost_usd": usd(total),
            "cost_unknown_requests": unknown,
            "charged_usd": usd(charged), "charged_at_expiry_usd": usd(at_expiry),
            "prompt_tokens": prompt, "completion_tokens": completion,
            "avg_cost_per_request_usd": usd(total / known) if known else 0.0,
            "by_model": _sorted(by_model), "by_tenant": _sorted(by_tenant),
            "by_key": _sorted(by_key), "pruned_keys": self._pruned_keys(by_key)}
        report["savings"] = savings.report()
        return report

    def _keys_readable(self, what: str) -> None:
        """Nothing when the keys can be read to ``what`` (or there is no key store); else the
        key store's refusal, by the one rule of what the log names
        (:func:`~switchpoint.governance.keys.logged_keys`: its requests, decisions, spend
        ledger and feedback), whatever tenant asks (a keys.db lost is lost for every tenant's
        keys): no keys.db while the log names keys made in it (see
        :meth:`~switchpoint.governance.keys.KeyStore.missing`; a key named only in the spend
        ledger, its requests pruned, counts too), or one that lacks keys the log names since
        it was last in use (see
        :meth:`~switchpoint.governance.keys.KeyStore.check_in_use`)."""
        if self.keys is None:
            return
        if self.keys.path.is_file():
            self.keys.check_in_use(partial(logged_keys, self.db_path), what)
            return
        self.keys.missing(what, logged_keys(self.db_path))

    def _pruned_keys(self, ids: Iterable[str]) -> list[str]:
        """The key ids of ``ids`` whose records keys.db no longer holds (a revoked or expired
        key's record is pruned once it ended longer ago than the retention, or past
        governance.max_keys ended keys), sorted: their spend is still reported under the id."""
        named = sorted(i for i in ids if i != NONE)
        if self.keys is None:
            return []
        held = self.keys.held(named)
        pruned = [i for i in named if i not in held]
        if pruned:  # (unless keys.db is not the one those keys were made in)
            self._keys_readable("read the keys")
        return pruned

    @_counted
    def savings_estimate(self, comparison_model: str | None = None, period: str = "month", *,
                         until: float | None = None,
                         tenant: str | None = None) -> dict[str, Any]:
        """What the last ``period``'s answered requests would have cost on
        ``comparison_model`` (priced on the same tokens), against what they cost."""
        self.check_tenant(tenant)
        since, end = self._window(period, until)
        savings = _Savings(self, *self._comparison(comparison_model, since, end))
        for model, _tenant, _key, pt, ct, cost, *_ in self._requests(since, end, tenant):
            savings.add(model, pt, ct, cost)
        return savings.report()

    @_counted
    def strongest_model(self, since: float | None = None,
                        until: float | None = None) -> tuple[str | None, str]:
        """(model, why): the lowest mean expected error over the logged decisions, else the
        dearest catalog model that ``auto`` may choose (not an ``auto: false`` one)."""
        if self.catalog is not None:
            best = self._least_expected_error(since, until)
            if best is not None:
                return best
        if self.catalog is not None and self.catalog.all_priced:
            out = self.catalog.expected_output_tokens
            # Among the models auto may choose: an ``auto: false`` model (a judge, say) is
            # one no routed request could have gone to.
            dearest = max((c for c in self.catalog.cards if c.auto),
                          key=lambda c: c.price(REFERENCE_INPUT_TOKENS, out))
            return dearest.name, "the dearest model auto may choose (no decisions logged)"
        return None, "no decisions logged and the catalog is not priced"

    def _least_expected_error(self, since: float | None, until: float | None
                              ) -> tuple[str, str] | None:
        """The catalog model of lowest mean expected error over the logged decisions of the
        window, and why; None when none fits. Compared on the same prompts: the decisions that
        weighed the most models (a request narrowed to a few models says nothing of the
        others), among the models every one of those weighed. Read from the hourly sums the
        log keeps (see :func:`~switchpoint.store.sums.error_sums`)."""
        assert self.catalog is not None
        if self._has_table("decision_errors"):
            conn = self._read()
            if conn is None:
                return None
            try:
                sums = error_sums(conn, since, until)
            except sqlite3.DatabaseError as exc:
                raise store_error(self.db_path, "read the decision log", exc) from None
            finally:
                conn.close()
        else:  # a log no switchpoint of this version has opened yet: its decisions, one by one
            sums = self._scanned_error_sums(since, until)
        if not sums:
            return None
        widest = sums[max(sums)]
        seen = max(n for n, _ in widest.values())
        full = {m: total / n for m, (n, total) in widest.items()
                if n == seen and m in self.catalog}
        if not full:
            return None
        best = min(full, key=lambda m: (full[m], m))
        return best, f"lowest mean expected error ({full[best]:.3f}) over {seen} logged decisions"

    def _scanned_error_sums(self, since: float | None, until: float | None
                            ) -> dict[int, dict[str, tuple[int, float]]]:
        """:func:`~switchpoint.store.sums.error_sums`, read from every decision's JSON."""
        args: list[Any] = []
        where = "expected_errors IS NOT NULL"
        if since is not None and until is not None:
            where += " AND ts >= ? AND ts < ?"
            args = [since, until]
        sums: dict[int, dict[str, list[float]]] = {}
        for (raw,) in self._rows(f"SELECT expected_errors FROM decisions WHERE {where}", args):
            errors = json.loads(raw)
            by_model = sums.setdefault(len(errors), {})
            for model, err in errors.items():
                entry = by_model.setdefault(model, [0, 0.0])
                entry[0] += 1
                entry[1] += round(float(err) * ERROR_MICRO)
        return {width: {m: (int(n), total / ERROR_MICRO) for m, (n, total) in by_model.items()}
                for width, by_model in sums.items()}

    def _comparison(self, comparison: str | None, since: float, until: float
                    ) -> tuple[str | None, str]:
        """The model savings are priced against, and why it: ``comparison`` (a catalog model)
        or the strongest over the window's decisions."""
        if comparison is None:
            return self.strongest_model(since, until)
        if self.card(comparison) is None:
            names = (listed_names(self.catalog.names, quoted=True) if self.catalog is not None
                     else "none")
            raise InvalidInputError("comparison_model", f"{json_quoted(comparison)} is not a "
                                                        f"catalog model ({names})")
        return comparison, "given"

    # Forecast ----------------------------------------------------------------------------------

    @_counted
    def routing_mix(self, period: str = "week", *, until: float | None = None,
                    tenant: str | None = None) -> tuple[dict[str, float], str]:
        """Share of requests by answering model over the last ``period`` (else by the
        decisions' selected model): (mix, basis)."""
        self.check_tenant(tenant)
        since, end = self._window(period, until)
        counts: dict[str, int] = {}
        for model, *_ in self._requests(since, end, tenant):
            if model is not None:
                counts[model] = counts.get(model, 0) + 1
        basis = f"answered requests of the last {period}"
        if not counts:
            clause, more = of_tenant("tenant", tenant or None)
            where = "ts >= ? AND ts < ?" + clause
            args = [since, end, *more]
            for (model,) in self._query(f"SELECT selected_model FROM decisions WHERE {where}",
                                        args):
                counts[model] = counts.get(model, 0) + 1
            basis = f"routing decisions of the last {period}"
        total = sum(counts.values())
        return {m: n / total for m, n in sorted(counts.items(), key=lambda kv: -kv[1])}, basis

    @_counted
    def forecast_cost(self, requests_per_hour: float, avg_input_tokens: float,
                      avg_output_tokens: float, *, period: str = "week",
                      until: float | None = None, tenant: str | None = None) -> dict[str, Any]:
        """Projected spend of ``requests_per_hour`` requests of that size, split over the
        models as the logged routing mix splits them. The share of a model of unknown cost is
        named, not projected as free: ``unpriced_models`` (in the catalog, without prices)
        apart from ``removed_models`` (gone from the catalog); with no model of the mix
        priced, the hourly, daily and monthly spend are unknown (``None``)."""
        rph = _number(requests_per_hour, "requests_per_hour", at_most=MAX_REQUESTS_PER_HOUR)
        tin = _number(avg_input_tokens, "avg_input_tokens", at_most=MAX_TOKENS)
        tout = _number(avg_output_tokens, "avg_output_tokens", at_most=MAX_TOKENS)
        mix, basis = self.routing_mix(period, until=until, tenant=tenant)
        if not mix:
            raise InvalidInputError("routing_mix", f"nothing was logged in the last {period}: "
                                                   "the routing mix is unknown; forecast once "
                                                   "the gateway has served traffic")
        breakdown: dict[str, dict[str, float | None]] = {}
        hourly = 0.0
        unpriced: list[str] = []
        removed: list[str] = []
        for model, share in mix.items():
            card = self.card(model)
            if card is None or not card.priced:
                # Its cost is unknown: not projected as free; the forecast names it and its
                # share instead, apart when it is gone from the catalog (no price given to
                # it would make it answer again).
                (removed if self._gone(model) else unpriced).append(model)
                breakdown[model] = {"requests_pct": round(share, 6),
                                    "cost_per_request_usd": None, "hourly_cost_usd": None}
                continue
            per = card.price(tin, tout)
            cost = rph * share * per
            hourly += cost
            breakdown[model] = {"requests_pct": round(share, 6),
                                "cost_per_request_usd": usd(per),
                                "hourly_cost_usd": usd(cost)}
        # No model of the mix priced: the spend is unknown (null, as a model's own share is),
        # not a projection of zero.
        known = len(unpriced) + len(removed) < len(mix)
        forecast: dict[str, Any] = {
            "requests_per_hour": rph, "avg_input_tokens": tin, "avg_output_tokens": tout,
            "mix_basis": basis, "hourly_cost_usd": usd(hourly) if known else None,
            "unpriced_models": unpriced,
            "unpriced_requests_pct": round(sum(mix[m] for m in unpriced), 6),
            "removed_models": removed,
            "removed_requests_pct": round(sum(mix[m] for m in removed), 6),
            "daily_cost_usd": usd(hourly * 24) if known else None,
            "monthly_cost_usd": usd(hourly * 24 * 30) if known else None,
            "breakdown_by_model": breakdown}
        forecast["optimization_tip"] = self._forecast_tip(breakdown, hourly, rph, tin, tout,
                                                          unpriced, removed)
        return forecast

    def _forecast_tip(self, breakdown: Mapping[str, Mapping[str, float | None]], hourly: float,
                      rph: float, tin: float, tout: float, unpriced: Sequence[str],
                      removed: Sequence[str]) -> str:
        """Where the projected money goes, and what moving a tenth of it would save; with no
        model of the mix priced, why: which have no prices, which are gone from the
        catalog."""
        spend = {m: v["hourly_cost_usd"] for m, v in breakdown.items()
                 if v["hourly_cost_usd"] is not None}
        if not spend and self.catalog is None:
            return ("nothing to project: no catalog was given, so no model has a price; give "
                    "the config whose models: list prices them (input_per_mtok and "
                    "output_per_mtok)")
        if not spend:
            why = []
            if unpriced:
                one = len(unpriced) == 1
                why.append("the catalog has no prices for "
                           f"{listed_names(sorted(unpriced), quoted=True)} "
                           f"(give {'it' if one else 'them'} input_per_mtok and "
                           "output_per_mtok)")
            if removed:
                why.append(f"{'it' if unpriced else 'the catalog'} no longer holds "
                           f"{listed_names(sorted(removed), quoted=True)} (the mix logged with "
                           f"{'it' if len(removed) == 1 else 'them'} will change as the gateway "
                           "routes over the current catalog: forecast again once it has)")
            return "nothing to project: " + ", and ".join(why)
        if hourly <= 0:
            return "nothing to save: the projected spend is zero"
        top = max(spend, key=lambda m: spend[m] or 0.0)
        share = (spend[top] or 0.0) / hourly
        # A model routing never chooses (auto: false: a judge, a grader) cannot take traffic.
        priced = ([c for c in self.catalog.cards if c.priced and c.auto]
                  if self.catalog is not None else [])
        cheapest = min(priced, key=lambda c: c.price(tin, tout), default=None)
        top_card = self.card(top)
        if cheapest is None or top_card is None or cheapest.name == top:
            return (f"{top} carries {share:.0%} of the projected spend and is already the "
                    "cheapest model for requests of this size")
        delta = top_card.price(tin, tout) - cheapest.price(tin, tout)
        per_day = rph * 24 * (breakdown[top]["requests_pct"] or 0.0) * 0.10 * delta
        return (f"{top} carries {share:.0%} of the projected spend; routing 10% of its "
                f"requests to {cheapest.name} would save about {usd_text(per_day)}/day (the "
                "suggestions report, `switchpoint report suggest` or get_cost_optimizations(), "
                "says what a higher cost_weight saves and costs in expected quality)")

    # What-if routing ---------------------------------------------------------------------------

    @_counted
    def _routed(self, since: float, until: float, tenant: str | None,
                tokens: tuple[int, int] | None) -> _Routed:
        """The answered ``auto`` requests between ``since`` and ``until`` with their decisions'
        estimates, priced on their own tokens (or on ``tokens`` = (input, output) for each),
        read a row at a time into arrays."""
        where, more = _routed_where(tenant)
        out = _Routed()
        conn = self._read()
        if conn is None:
            return out
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "requests" not in tables:
                return out
            cursor = conn.execute(
                "SELECT r.model, d.selected_model, r.prompt_tokens, r.completion_tokens, "
                "r.cost_usd, d.expected_errors, d.expected_costs, d.cost_weight FROM requests r "
                f"JOIN decisions d ON d.id = r.decision_id WHERE {where}",
                [since, until, *more])
            for model, selected, pt, ct, cost, raw_errors, raw_costs, lam in cursor:
                errors, costs = json.loads(raw_errors), json.loads(raw_costs)
                names = tuple(errors)
                group = out.groups.get(names)
                if group is None:
                    group = out.groups[names] = _Group(names)
                    out.models.update(names)
                lam = float(lam or 0.0)
                out.lambdas.add(lam)
                pt, ct = tokens if tokens is not None else (pt, ct)
                priced = self._price(model, pt, ct)
                base = (float(cost) if cost is not None and tokens is None else
                        priced if priced is not None else float(costs.get(model, 0.0)))
                group.add(errors, costs, lam,
                          (math.nan if pt is None else float(pt),
                           math.nan if ct is None else float(ct)), base,
                          1.0 - float(errors.get(model, errors.get(selected or "", 0.0))))
        except sqlite3.DatabaseError as exc:
            raise store_error(self.db_path, "read the request and decision logs", exc) from None
        finally:
            conn.close()
        for group in out.groups.values():
            group.freeze(self)
        return out

    @_counted
    def what_if(self, *, cost_weight: float | None = None, without: Sequence[str] = (),
                period: str = "week", until: float | None = None, tenant: str | None = None,
                estimate_tokens: Sequence[int] | None = None) -> dict[str, Any]:
        """The logged ``auto`` traffic of the last ``period`` re-routed at ``cost_weight``
        (None: each decision's own λ) over the pool without ``without``: spend and expected
        quality, against what happened. Priced on each request's real tokens (or on
        ``estimate_tokens`` = (input, output) for every request)."""
        tokens = None if estimate_tokens is None else check_token_counts(estimate_tokens)
        since, end = self._window(period, until)
        routed = self._routed(since, end, tenant, tokens)
        return self._what_if(routed, cost_weight, without, since, end)

    def _what_if(self, routed: _Routed, cost_weight: float | None, without: Sequence[str],
                 since: float, until: float) -> dict[str, Any]:
        import numpy as np

        scales: dict[tuple[str, ...], float] = {}
        actual_spend = alt_spend = actual_quality = alt_quality = 0.0
        counted = unservable = 0
        picks: dict[str, int] = {}
        for names, group in routed.groups.items():
            keep = [j for j, m in enumerate(names) if m not in without and not self._gone(m)]
            if not keep:
                unservable += group.n
                continue
            pool = tuple(sorted(names[j] for j in keep))
            scale = scales.get(pool)
            if scale is None:
                scale = scales[pool] = self.cost_scale(list(pool)) or 1.0
            errors, costs = group.errors[:, keep], group.costs[:, keep]
            lam = (np.full(group.n, cost_weight) if cost_weight is not None
                   else group.lams)[:, None]
            # The lowest expected error + λ·cost, ties to the cheaper, then the first named.
            score = errors + lam * costs / scale
            tied = score == score.min(axis=1)[:, None]
            pick = np.argmin(np.where(tied, costs, np.inf), axis=1)
            rows = np.arange(group.n)
            counted += group.n
            for j, n in zip(*np.unique(pick, return_counts=True), strict=True):
                name = names[keep[int(j)]]
                picks[name] = picks.get(name, 0) + int(n)
            actual_spend += float(group.base.sum())
            alt_spend += float(group.spend[:, keep][rows, pick].sum())
            actual_quality += float(group.quality.sum())
            alt_quality += float((1.0 - errors[rows, pick]).sum())
        days = max(until - since, 1.0) / 86400.0
        return {
            "cost_weight": cost_weight, "without": list(without), "requests": counted,
            "unservable_requests": unservable, "since": since, "until": until,
            "actual_spend_usd": usd(actual_spend), "spend_usd": usd(alt_spend),
            "spend_delta_usd": usd(alt_spend - actual_spend),
            # A share of no spend is none (null), unless there is still none to share.
            "spend_delta_pct": round((alt_spend - actual_spend) / actual_spend, 6)
            if actual_spend else (0.0 if not alt_spend else None),
            "spend_delta_usd_per_day": usd((alt_spend - actual_spend) / days),
            "actual_expected_quality": round(actual_quality / counted, 6) if counted else None,
            "expected_quality": round(alt_quality / counted, 6) if counted else None,
            "quality_delta": round((alt_quality - actual_quality) / counted, 6)
            if counted else None,
            "models": dict(sorted(picks.items(), key=lambda kv: -kv[1]))}

    @_counted
    def get_cost_optimizations(self, estimate_tokens: Sequence[int] | None = None, *,
                               period: str = "week", until: float | None = None,
                               tenant: str | None = None,
                               max_quality_loss: float = QUALITY_TOLERANCE
                               ) -> list[dict[str, Any]]:
        """Suggestions computed from the log: the λ that saves the most while losing at most
        ``max_quality_loss`` expected quality, a λ that buys quality cheaply, and models whose
        removal from the pool saves money at no real loss. Each item: ``suggestion``,
        ``estimated_savings_usd_per_day``, ``tradeoff`` and the what-if figures behind it.
        :meth:`suggestion_report` says why when there is none."""
        return self._optimizations(estimate_tokens, period, until, tenant, max_quality_loss)[0]

    @_counted
    def suggestion_report(self, estimate_tokens: Sequence[int] | None = None, *,
                          period: str = "week", until: float | None = None,
                          tenant: str | None = None,
                          max_quality_loss: float = QUALITY_TOLERANCE) -> dict[str, Any]:
        """The suggestions of :meth:`get_cost_optimizations` (``data``), how many answered
        ``auto`` requests of the window they re-routed (``routed_requests``) and, with none to
        make, why in words (``note``: no such request was logged, or none of the other λ and
        pools saves money over them; null beside suggestions): the body of ``GET
        /v1/router/report/suggest`` and what ``switchpoint report suggest`` prints."""
        items, routed = self._optimizations(estimate_tokens, period, until, tenant,
                                            max_quality_loss)
        note = None
        if not items and not routed:
            note = (f"no answered auto request was logged in the last {period} (the "
                    "suggestions re-route the logged auto traffic); ask again once the gateway "
                    "has routed some")
        elif not items:
            note = (f"over the {plural(routed, 'answered auto request')} of the last {period}, "
                    "no other λ or pool saves money without losing expected quality")
        return {"data": items, "routed_requests": routed, "note": note}

    def _optimizations(self, estimate_tokens: Sequence[int] | None, period: str,
                       until: float | None, tenant: str | None, max_quality_loss: float
                       ) -> tuple[list[dict[str, Any]], int]:
        """The suggestions, and how many logged requests they were computed over."""
        self.check_tenant(tenant)
        max_quality_loss = _number(max_quality_loss, "max_quality_loss", at_most=1.0)
        tokens = None if estimate_tokens is None else check_token_counts(estimate_tokens)
        since, end = self._window(period, until)
        routed = self._routed(since, end, tenant, tokens)
        if not len(routed):
            return [], 0
        ran_at = _lambdas(routed.lambdas)
        out: list[dict[str, Any]] = []
        sweep = [self._what_if(routed, lam, (), since, end) for lam in SWEEP]
        cheaper = [w for w in sweep if w["spend_delta_usd"] < 0
                   and (w["quality_delta"] or 0.0) >= -max_quality_loss]
        if cheaper:
            best = min(cheaper, key=lambda w: w["spend_delta_usd"])
            out.append(self._suggestion(
                best, f"Set cost_weight to {best['cost_weight']:g} (logged traffic ran at "
                      f"{ran_at}): auto would pick {_mix(best['models'])}", "cost_weight"))
        # Buying quality: a λ whose answers are better by more than the tolerance for at most
        # 10% more spend (one that also saves money is the suggestion above already).
        better = [w for w in sweep if (w["quality_delta"] or 0.0) > max_quality_loss
                  and w["spend_delta_pct"] is not None and 0 <= w["spend_delta_pct"] <= 0.10]
        if better:
            best = max(better, key=lambda w: w["quality_delta"] or 0.0)
            out.append(self._suggestion(
                best, f"Lower cost_weight to {best['cost_weight']:g}: expected quality "
                      f"+{best['quality_delta']:.3f} for {best['spend_delta_pct']:+.1%} spend",
                "cost_weight"))
        pool = sorted(m for m in routed.models if not self._gone(m))
        if len(pool) > 1:
            for model in pool:
                w = self._what_if(routed, None, [model], since, end)
                if (w["requests"] and w["spend_delta_usd"] < 0
                        and (w["quality_delta"] or 0.0) >= -max_quality_loss):
                    out.append(self._suggestion(
                        w, f"Remove {model} from the pool auto chooses from (or from the "
                           f"tenants' models): its requests would go to "
                           f"{_mix(w['models'])}", "pool"))
        out.sort(key=lambda item: -item["estimated_savings_usd_per_day"])
        return out, len(routed)

    @staticmethod
    def _suggestion(w: Mapping[str, Any], text: str, kind: str) -> dict[str, Any]:
        quality = w["quality_delta"] or 0.0
        share = w["spend_delta_pct"]
        spend = (f"{share:+.1%}" if share is not None
                 else f"+{usd_text(w['spend_delta_usd'])} where there was none")
        tradeoff = (f"expected quality {quality:+.3f} (from {w['actual_expected_quality']:.3f} "
                    f"to {w['expected_quality']:.3f}); spend {spend} over "
                    f"{w['requests']} logged requests")
        return {"suggestion": text, "kind": kind,
                "estimated_savings_usd_per_day": usd(-w["spend_delta_usd_per_day"]),
                "tradeoff": tradeoff, "what_if": dict(w)}

    # SLA ---------------------------------------------------------------------------------------

    def sla_for(self, tenant: str | None) -> SLASettings | None:
        t = self.settings.tenants.get(tenant) if tenant is not None else None
        if t is not None and t.sla is not None:
            return t.sla
        return self.settings.sla

    def _sla_hour(self, tenant: str | None, now: float) -> tuple[str, float, int]:
        """(account, spend, answers of unknown cost) that the hourly SLA budget governing
        ``tenant``'s requests watches in the calendar hour of ``now``, as routing checks it: the
        tenant's own spend when its own SLA applies, else the whole gateway's (the default SLA's
        budget is the gateway's). The SLA report and the budget alert both read it, so they say
        the same. The count is of answers the spend could not sum (see :meth:`_spent`). It is
        all the spend dated in that hour, as in the ledger routing reads: after the clock was
        stepped back, spend dated later in the hour counts, and spend dated in a later hour
        does not."""
        own = tenant is not None and self.sla_for(tenant) is not self.settings.sla
        account = tenant_account(tenant) if own and tenant is not None else TOTAL
        spent, unknown = self._spent(account, tenant if own else None,
                                     period_start("hour", now), period_end("hour", now))
        return account, spent, unknown

    @_counted
    def get_sla_report(self, since_hours: float = 1.0, *, tenant: str | None = None,
                       until: float | None = None) -> dict[str, Any]:
        """SLA compliance of the chat requests of the last ``since_hours``, measured against
        the SLA in force for each request's tenant (its own, else the default)."""
        self.check_tenant(tenant)
        # (NumPy's scalars, a Decimal too)
        hours = checked_number("since_hours", since_hours, SINCE_HOURS)
        if hours is None or not 0 < hours <= MAX_SINCE_HOURS:  # (NaN, infinity too)
            shown = (json_quoted(since_hours) if hours is None
                     else f"{hours:g}" if math.isfinite(hours) else json_quoted(hours))
            raise InvalidInputError("since_hours", f"must be {SINCE_HOURS}, got {shown}")
        end = self.clock() if until is None else float(until)
        since = end - hours * 3600.0
        clause, more = of_tenant("r.tenant", tenant)
        where = "r.ts >= ? AND r.ts < ?" + clause
        args: list[Any] = [since, end, *more]
        rows = self._rows(
            "SELECT r.tenant, r.latency_ms, r.model, r.prompt_tokens, r.completion_tokens, "
            f"d.governance FROM requests r LEFT JOIN decisions d ON d.id = r.decision_id "
            f"WHERE {where}", args)
        breaches = {"latency": 0, "cost": 0, "quality": 0}
        compliant = adjusted = 0
        savings = 0.0
        latencies: array[float] = array("d")
        for row_tenant, latency, model, pt, ct, raw in rows:
            sla = self.sla_for(row_tenant)
            governance = json.loads(raw) if raw else {}
            ok = bool(governance.get("sla_compliant", True))
            listed = governance.get("sla_breaches") or []
            latencies.append(float(latency))
            if sla is not None and sla.max_latency_ms is not None and latency > sla.max_latency_ms:
                breaches["latency"] += 1
                ok = False
            if "budget_exceeded" in listed:
                breaches["cost"] += 1
            if "quality_below_minimum" in listed:
                breaches["quality"] += 1
            adjustments = governance.get("sla_adjustments") or []
            if adjustments:
                adjusted += 1
                original = governance.get("original_model")
                if ("routed_to_cheaper_model_due_to_budget_sla" in adjustments and original
                        and model):
                    before = self._price(original, pt, ct)
                    after = self._price(model, pt, ct)
                    if before is not None and after is not None:
                        savings += before - after
            compliant += ok
        sla = self.sla_for(tenant)
        hourly = None
        account, spent, unknown = self._sla_hour(tenant, end)
        if sla is not None and sla.budget_per_hour_usd is not None:
            hourly = round(used_fraction(spent, sla.budget_per_hour_usd), 6)
        total = len(latencies)
        return {"since": since, "until": end, "tenant": tenant,
                "sla": sla.model_dump() if sla is not None else None,
                "budget_account": describe_account(account),
                "budget_cost_unknown_requests": unknown,
                "total_requests": total,
                "compliance_rate": round(compliant / total, 6) if total else 1.0,
                "breaches": breaches, "adjustments_made": adjusted,
                "cost_savings_usd": usd(savings),
                "avg_latency_ms": round(statistics.fmean(latencies), 3) if latencies else None,
                "budget_utilization": hourly}

    # Budgets -----------------------------------------------------------------------------------

    def _recent_spend(self, account: str, since: float, until: float) -> float:
        """Settled spend of ``account`` between ``since`` and ``until``, from the ledger rows."""
        return self._recent_spends([(account, since, until)])[0]

    def _recent_spends(self, wanted: Sequence[tuple[str, float, float]]) -> list[float]:
        """Settled spend of each ``(account, since, until)`` of ``wanted``, from the ledger
        rows: one connection, and one query per kind of account and window (summed by account,
        ``GROUP BY``), so a budget alert over thousands of keys' budgets reads the ledger a
        few times, not once per budget."""
        groups: dict[tuple[str, float, float], dict[str, float]] = {}
        for account, since, until in wanted:
            groups.setdefault((account.partition(":")[0], since, until), {})
        conn = self._read() if groups else None
        if conn is None:
            return [0.0] * len(wanted)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "spend" not in tables:
                return [0.0] * len(wanted)
            for (kind, since, until), sums in groups.items():
                where = f"{CHARGED_ROWS} AND ts >= ? AND ts < ?"
                if kind == TOTAL:
                    rows = conn.execute(f"SELECT '', coalesce(sum(amount_usd), 0) FROM spend "
                                        f"WHERE {TOTAL_ROWS} AND ts >= ? AND ts < ?",
                                        (since, until))
                else:
                    column = _ACCOUNT_COLUMNS[kind]
                    rows = conn.execute(f"SELECT {column}, sum(amount_usd) FROM spend WHERE "
                                        f"{where} AND {column} IS NOT NULL GROUP BY {column}",
                                        (since, until))
                sums.update((str(name), float(total or 0.0)) for name, total in rows)
        except sqlite3.DatabaseError as exc:  # a damaged page, a lock held too long
            raise store_error(self.db_path, "read the spend ledger", exc) from None
        finally:
            conn.close()
        spends = []
        for account, since, until in wanted:
            kind, _, name = account.partition(":")
            spends.append(groups[(kind, since, until)].get("" if account == TOTAL else name,
                                                           0.0))
        return spends

    def _settled(self, account: str, since: float, until: float) -> tuple[float, int]:
        """Settled spend of ``account`` between ``since`` and ``until`` and how many ledger
        rows it sums (none without a ledger)."""
        column, _, name = account.partition(":")
        where = f"{TOTAL_ROWS if account == TOTAL else CHARGED_ROWS} AND ts >= ? AND ts < ?"
        args: list[Any] = [since, until]
        if account != TOTAL:
            where += f" AND {_ACCOUNT_COLUMNS[column]} = ?"
            args.append(name)
        conn = self._read()
        if conn is None:
            return 0.0, 0
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "spend" not in tables:
                return 0.0, 0
            total, rows = conn.execute(f"SELECT coalesce(sum(amount_usd), 0), count(*) FROM "
                                       f"spend WHERE {where}", args).fetchone()
        finally:
            conn.close()
        return float(total), int(rows)

    def _spent(self, account: str, tenant: str | None, since: float,
               until: float) -> tuple[float, int]:
        """What ``account`` spent between ``since`` and ``until``, and how many answers of
        unknown cost that leaves out: the ledger's settled spend (none left out), or, when the
        ledger settled none of it (only what a budget or an hourly SLA budget watches is
        settled there), the cost the request log recorded (of ``tenant``'s requests, if
        given), where an answer whose cost is unknown (a model without prices, an upstream
        that reported no usage) is counted apart, not summed as free."""
        spent, rows = self._settled(account, since, until)
        if rows:
            return spent, 0
        clause, more = of_tenant("tenant", tenant)
        total, unknown = 0.0, 0
        for model, cost in self._query(
                "SELECT model, cost_usd FROM requests WHERE ts >= ? AND ts < ?" + clause,
                [since, until, *more]):
            total += float(cost or 0.0)
            unknown += model is not None and cost is None
        return total, unknown

    def _log_start(self) -> float | None:
        """When the oldest entry the logs keep (a request, a spend ledger row) was written."""
        tables = {name for (name,) in self._query(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = self._query(" UNION ALL ".join(f"SELECT min(ts) FROM {t}" for t in (
            "requests", "spend") if t in tables) or "SELECT NULL")
        return min((float(ts) for (ts,) in rows if ts is not None), default=None)

    @staticmethod
    def _trailing(now: float, span: float, log_start: float | None) -> RateWindow:
        """The window a rate of spend is measured over: the last ``span`` seconds, whichever
        periods they fall in (measured from a period's start, the spend of its first seconds
        would be extrapolated over all of it, and every budget would warn just after it
        resets), but not from before the logs begin (a deployment younger than ``span``),
        and never shorter than :data:`MIN_RATE_WINDOW` (or ``span``, if shorter): in a
        deployment's first minutes the seconds before its logs begin count as no spend, and
        the window says its projection rests on a log younger than that."""
        floor = min(span, MIN_RATE_WINDOW)
        logged = span if log_start is None else now - log_start
        return RateWindow(max(min(span, logged), floor), logged < floor)

    @_counted
    def budget_alert(self, account: str, budget: Budget,
                     log_start: float | None = None) -> dict[str, Any]:
        """One budget: spent, held, utilization, projected spend at the period's end (at the
        rate of the last quarter of a period, ``log_start`` being when the logs begin),
        status."""
        return self.budget_alerts([(account, budget)], log_start)[0]

    @_counted
    def budget_alerts(self, budgets: Sequence[tuple[str, Budget]],
                      log_start: float | None = None) -> list[dict[str, Any]]:
        """:meth:`budget_alert` of each ``(account, budget)``, the ledger read once for all."""
        now = self.clock()
        threshold = self.settings.governance.warning_threshold
        shapes = []
        for _, budget in budgets:
            start, end = period_start(budget.period, now), period_end(budget.period, now)
            shapes.append((end, self._trailing(now, (end - start) / 4, log_start)))
        recent = self._recent_spends([(account, now - window.seconds, now + 1e-6)
                                      for (account, _), (_, window) in zip(budgets, shapes,
                                                                           strict=True)])
        alerts = []
        for (account, budget), (end, window), spent_recently in zip(budgets, shapes, recent,
                                                                    strict=True):
            status = self.ledger.status(account, budget)
            rate = spent_recently / window.seconds
            used = status["spent_usd"] + status["held_usd"]
            projected = status["spent_usd"] + rate * max(end - now, 0.0)
            utilization = used_fraction(used, budget.limit_usd)
            level = alert_level(used, budget.limit_usd, projected, threshold)
            alerts.append({**status, "utilization": round(utilization, 6),
                           "projected_usd": usd(projected), **window.fields(), "status": level,
                           "resets_in": describe_seconds(end - now)})
        return alerts

    @_counted
    def check_budget_alert(self, tenant: str | None = None, *, limit: int | None = None,
                           cursor: str | None = None) -> dict[str, Any]:
        """The hour's spend against the SLA's ``budget_per_hour_usd`` (the tenant's SLA, else
        the default; ``hourly_cost_unknown_requests`` counts the hour's answers of unknown cost
        it could not sum, when it is read from the request log because the ledger has none of
        it), every configured budget's state (with ``tenant``, the gateway's, the tenant's and
        its keys'), the worst status of them all (ok / warning / critical) and a
        recommendation computed from the log. ``budgets`` holds ``limit`` of them at most
        (None: all) after ``cursor`` (see :mod:`~switchpoint.governance.budget_list`), and
        ``next_cursor`` the next page's cursor (None on the last); the status and the
        recommendation are of them all, whichever the page. An unknown ``tenant`` (see
        :meth:`unknown_tenant`) is a :class:`NotFoundError`: a misspelt tenant would
        otherwise be reported ``ok`` with the whole gateway's spend, for ever; a bad
        ``limit`` or ``cursor`` an :class:`InvalidInputError` naming it."""
        limit = check_limit(limit)
        after = budget_position(cursor)
        self.check_tenant(tenant)
        now = self.clock()
        sla = self.sla_for(tenant)
        account, spent, unknown = self._sla_hour(tenant, now)
        own = account != TOTAL
        hour_end = period_end("hour", now)
        log_start = self._log_start()
        window = self._trailing(now, 900.0, log_start)
        rate = self._spent(account, tenant if own else None, now - window.seconds,
                           now + 1e-6)[0] / window.seconds
        projected = spent + rate * (hour_end - now)
        budget = sla.budget_per_hour_usd if sla is not None else None
        threshold = self.settings.governance.warning_threshold
        levels = {"ok": 0, "warning": 1, "critical": 2}
        utilization = None
        hourly_status = "ok"
        if budget is not None:
            utilization = used_fraction(spent, budget)
            hourly_status = alert_level(spent, budget, projected, threshold)
        self._keys_readable("read the keys' budgets")
        listed = listed_budgets(self.settings, self.keys, tenant)
        budgets = self.budget_alerts([(entry.account, entry.budget) for entry in listed],
                                     log_start)
        worst = max([hourly_status, *(b["status"] for b in budgets)], key=levels.__getitem__)
        recommendation = self._recommend(worst, hourly_status, budgets, budget, spent, projected,
                                         tenant)
        by_position = {entry.position: alert for entry, alert in zip(listed, budgets,
                                                                     strict=True)}
        page, next_cursor = page_of(listed, after, limit)
        return {"status": worst, "tenant": tenant, "hourly_spend_usd": usd(spent),
                "hourly_cost_unknown_requests": unknown,
                "hourly_account": describe_account(account),
                "budget_usd": budget,
                "utilization": round(utilization, 6) if utilization is not None else None,
                "projected_hourly_usd": usd(projected), **window.fields(),
                "hourly_status": hourly_status,
                "budgets": [by_position[entry.position] for entry in page],
                "next_cursor": next_cursor,
                "recommendation": recommendation}

    def _recommend(self, worst: str, hourly_status: str, budgets: Sequence[Mapping[str, Any]],
                   hourly_budget: float | None, spent: float, projected: float,
                   tenant: str | None) -> str:
        if worst == "ok":
            return "spend is within every budget; nothing to do"
        over = [b for b in budgets if b["status"] == "critical"]
        if over:
            b = over[0]
            if b["limit_usd"] <= 0:
                return _shut(b, f"{usd_text(b['spent_usd'] + b['held_usd'])} was spent or held "
                                "against it this period")
            return (f"{describe_account(b['account'])} has used {b['utilization']:.0%} of its "
                    f"${b['budget']} budget: requests that do not fit are "
                    f"refused (429 budget_exceeded) until it resets in {b['resets_in']}; raise "
                    "the budget or lower the traffic")
        if hourly_status == "critical" and hourly_budget is not None:
            return (f"this hour's spend {usd_text(spent)} has reached the SLA's "
                    f"${amount_text(hourly_budget)}/hour budget: auto requests are routed as "
                    "breaching it (at a higher λ with auto_escalate_on_breach) until the hour "
                    "ends; lower the traffic or raise sla.budget_per_hour_usd")
        # A budget of 0 warns only when the recent rate of spend would spend against it: it
        # is nearing nothing, so the levers for a budget that fills do not apply to it.
        nearing = [b for b in budgets if b["status"] == "warning"]
        if hourly_status == "ok" and nearing and all(b["limit_usd"] <= 0 for b in nearing):
            b = nearing[0]
            return _shut(b, "at the recent rate of spend "
                            f"{usd_text(b['projected_usd'])} would go against it by the "
                            "period's end")
        try:
            suggestions = self.get_cost_optimizations(period="day", tenant=tenant)
        except InvalidInputError:
            suggestions = []
        lever = next((s for s in suggestions if s["kind"] == "cost_weight"), None)
        if lever is not None:
            return (f"spend is nearing a budget (projected {usd_text(projected)} this hour"
                    + (f" against ${amount_text(hourly_budget)}" if hourly_budget is not None
                       else "")
                    + f"); {lever['suggestion'][0].lower()}{lever['suggestion'][1:]}, which "
                    f"would have saved {usd_text(lever['estimated_savings_usd_per_day'])}/day over "
                    f"the last day ({lever['tradeoff']})")
        return (f"spend is nearing a budget (projected {usd_text(projected)} this hour"
                + (f" against ${amount_text(hourly_budget)}" if hourly_budget is not None
                   else "")
                + "); the tenants' budget curves raise λ as budgets fill; lower the traffic or "
                  "raise the budget")


def _shut(alert: Mapping[str, Any], seen: str) -> str:
    """The recommendation for a budget of 0 that alerts (``seen``: what spend it saw): it
    allows no spend, in this period or after a reset, so only raising it allows any."""
    who = describe_account(alert["account"])
    return (f"{who}'s $0/{alert['period']} budget allows no spend, yet {seen}: every request "
            "that may cost anything is refused (429 budget_exceeded), now and after the budget "
            f"resets alike; raise the budget to allow spend, or leave it at 0 to keep {who} "
            "from spending")


_ACCOUNT_COLUMNS = {"key": "key_id", "tenant": "tenant", "model": "model",
                    "provider": "provider"}


def _lambdas(values: Iterable[float], most: int = 4) -> str:
    """The λ values logged traffic ran at, as a suggestion names them: ``λ 0.5``, ``λ 0 and
    2``, ``λ 0, 0.5 and 2``; more than ``most`` distinct values as their range."""
    seen = sorted(set(values))
    if len(seen) > most:
        return f"λ {seen[0]:g} to {seen[-1]:g} ({len(seen)} values)"
    shown = [f"{v:g}" for v in seen]
    return "λ " + (shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}")


def _sorted(table: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {k: dict(v) for k, v in sorted(table.items(),
                                          key=lambda kv: (-kv[1]["cost_usd"], kv[0]))}


def _mix(models: Mapping[str, int]) -> str:
    total = sum(models.values()) or 1
    return ", ".join(f"{m} {n / total:.0%}" for m, n in models.items())
