"""The decision log and the request log: what a row of each holds as the writer appends it
(:class:`DecisionRecord`, :class:`RequestRecord`, and :class:`Record`, what every record the
writer takes offers), and how they are read back (:class:`LogReads`: the newest decisions, a page
of the request log, the stats from the totals the logs keep)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from switchpoint.store.errors import store_error
from switchpoint.store.reading import read_only
from switchpoint.store.sums import NANO_PER_USD, count_tenant
from switchpoint.store.totals import Totals

_COLUMNS = ("id", "ts", "selected_model", "cluster_id", "cost_weight", "candidates", "cache_hit",
            "routing_ms", "embedding_ms", "policy", "weights_id", "expected_error",
            "cost_adjusted_score", "key_id", "tenant", "expected_errors", "expected_costs",
            "governance", "source", "memory_fallback", "experiment", "arm")
_DECISION_JSON = ("candidates", "expected_errors", "expected_costs", "governance")


def _insert(table: str, columns: Sequence[str]) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})")


_INSERT = _insert("decisions", _COLUMNS)
_REQUEST_COLUMNS = (
    "id", "ts", "session_id", "requested_model", "routed_model", "model", "upstream_model",
    "models_tried", "attempts", "status", "http_status", "error_kind", "error", "escalated",
    "pin_state", "pin", "stream", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "cost_usd", "cluster_id", "expected_error", "routing_ms", "decision_id", "reasoning",
    "excluded", "key_id", "tenant", "charged_usd", "purpose")
_JSON_COLUMNS = ("models_tried", "attempts", "pin", "reasoning", "excluded")
_BOOL_COLUMNS = ("escalated", "stream")
_INSERT_REQUEST = _insert("requests", _REQUEST_COLUMNS)
# The entries one page of an admin list (the request log, the keys) holds when the caller
# names no limit, and the most it may hold.
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class DecisionRecord:
    """One routing decision as it is logged.

    ``expected_errors`` / ``expected_costs`` are every candidate's estimates (numbers only, no
    prompt text): enough to re-route the logged traffic offline at another λ or over another
    pool. ``governance`` holds what governance did (SLA breaches and adjustments, the model
    before them, escalation, budget pressure); ``key_id`` and ``tenant`` say who asked.
    ``source`` says who chose the model (router, memory, exploration), ``memory_fallback`` why
    a tenant's memory left it to the router, ``experiment`` / ``arm`` the experiment arm.
    """

    id: str
    ts: float
    selected_model: str
    cluster_id: int
    cost_weight: float
    candidates: Sequence[str]
    cache_hit: bool
    routing_ms: float
    embedding_ms: float
    policy: str
    weights_id: str
    expected_error: float
    cost_adjusted_score: float
    key_id: str | None = None
    tenant: str | None = None
    expected_errors: Mapping[str, float] | None = None
    expected_costs: Mapping[str, float] | None = None
    governance: Mapping[str, Any] | None = None
    source: str | None = None
    memory_fallback: str | None = None
    experiment: str | None = None
    arm: str | None = None

    insert: ClassVar[str] = _INSERT

    def row(self) -> tuple[Any, ...]:
        return (self.id, self.ts, self.selected_model, self.cluster_id, self.cost_weight,
                json.dumps(list(self.candidates)), int(self.cache_hit), self.routing_ms,
                self.embedding_ms, self.policy, self.weights_id, self.expected_error,
                self.cost_adjusted_score, self.key_id, self.tenant,
                _json_or_none(self.expected_errors), _json_or_none(self.expected_costs),
                _json_or_none(self.governance), self.source, self.memory_fallback,
                self.experiment, self.arm)


def _json_or_none(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), separators=(",", ":"))


@dataclass(frozen=True)
class RequestRecord:
    """One chat request through the gateway, as it is logged (see ``requests`` in the schema).

    ``status`` is ``ok`` (a whole answer reached the client), ``error`` (no model answered, or
    the upstream refused the request itself), ``refused`` (refused for who asked before any
    model was called: a model the key may not use, a budget, a rate limit, the tenant's share
    of calls in flight),
    ``stream_broken`` (a stream failed after its first byte: the client got an error event; or
    the upstream ended it with its end marker before a finish reason, cut short, and the client
    got it as sent; or the gateway closed it at its request's deadline, unread or stalled on a
    client that stopped reading; or the service stopped mid-answer, ``error_kind``
    ``service_stopped``) or
    ``client_closed`` (the client left mid-answer). A plain request the service stopped
    before its answer was ready is an ``error`` of kind ``service_stopped``.
    ``attempts`` lists every try (model, attempt, outcome, status, latency, wait, error;
    ``retry_after_s``, when there is one: the ``Retry-After`` the upstream sent, as taken,
    or how long a model passed over as unhealthy stays out);
    ``pin`` is the session pin decision; ``excluded`` maps models the capability filter left
    out to its reasons. ``key_id`` and ``tenant`` say who asked (a client key, its tenant);
    ``charged_usd`` is what the request's budgets were charged when it settled (its cost from
    usage, an estimate of what it used when the usage is unknown, or its reservation when
    that cost is unknown; None when no budget ledger runs).
    ``purpose`` is ``compare`` for one answer of a preference comparison, else None.
    """

    id: str
    ts: float
    requested_model: str
    status: str
    http_status: int
    pin_state: str
    stream: bool
    latency_ms: float
    session_id: str | None = None
    routed_model: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    models_tried: Sequence[str] = ()
    attempts: Sequence[Mapping[str, Any]] = ()
    error_kind: str | None = None
    error: str | None = None
    escalated: bool = False
    pin: Mapping[str, Any] = field(default_factory=dict)
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    cluster_id: int | None = None
    expected_error: float | None = None
    routing_ms: float | None = None
    decision_id: str | None = None
    reasoning: Sequence[str] = ()
    excluded: Mapping[str, Sequence[str]] = field(default_factory=dict)
    key_id: str | None = None
    tenant: str | None = None
    charged_usd: float | None = None
    purpose: str | None = None

    insert: ClassVar[str] = _INSERT_REQUEST

    def row(self) -> tuple[Any, ...]:
        values = []
        for column in _REQUEST_COLUMNS:
            value = getattr(self, column)
            if column in _JSON_COLUMNS:
                value = json.dumps(value if isinstance(value, Mapping) else list(value),
                                   separators=(",", ":"), default=str)
            elif column in _BOOL_COLUMNS:
                value = int(value)
            values.append(value)
        return tuple(values)


class Record(Protocol):
    """Anything the writer appends: its INSERT statement and its row."""

    insert: ClassVar[str]

    @property
    def id(self) -> str: ...

    def row(self) -> tuple[Any, ...]: ...


def _counts(totals: Totals, figure: str, rows: Iterable[tuple[Any, Any]]
            ) -> dict[str, int | None]:
    """``{name: count}`` from the ``(name, count)`` rows of the totals of ``figure``: None for
    a count out of range (said: see :class:`Totals`)."""
    return {str(name): totals.count(n, f"{figure}.{name}") for name, n in rows}


class LogReads:
    """The reads of the decision log and of the request log, a part of
    :class:`~switchpoint.store.sqlite.SQLiteStore`: each opens its own read-only connection to
    the file the store opened (:attr:`path`), which WAL lets run beside the writer."""

    # (set by SQLiteStore, which says what each is)
    path: Path
    _said: set[str]

    if TYPE_CHECKING:
        def gone(self) -> str | None: ...

    # Reads -------------------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        """A read-only connection to the file opened (see :func:`read_only`: one deleted or
        replaced since is not read)."""
        try:
            return read_only(self.path, self.gone)
        except sqlite3.DatabaseError as exc:
            raise store_error(self.path, "open it to read", exc) from None

    def decision_stats(self, weights_id: str | None = None, *,
                       tenant: str | None = None) -> dict[str, Any]:
        """Totals over every logged decision: count, cache hits, by model, by policy, and by
        cluster for ``weights_id`` (cluster ids of different weights are not comparable);
        ``tenant``: over that tenant's decisions alone (``default``: those that name no tenant
        too).

        Read from the totals the log keeps as rows are logged and pruned: the cost is the
        number of models, policies and clusters, not of decisions (for one tenant too: the log
        keeps each tenant's totals as well). A total out of range (a damaged file) is None, and
        ``warnings`` says which (see
        :mod:`~switchpoint.store.totals`)."""
        totals = Totals(self.path, self._said)
        conn = self._read()
        try:
            count_tenant(conn, tenant)
            row = conn.execute("SELECT n, cache_hits FROM stat_counts "
                               "WHERE dim = 'decisions'").fetchone()
            total, hits = row if row is not None else (0, 0)
            by_model = _counts(totals, "by_model", conn.execute(
                "SELECT key, n FROM stat_counts WHERE dim = 'decision_model' AND n != 0 "
                "ORDER BY n DESC, key"))
            by_policy = _counts(totals, "by_policy", conn.execute(
                "SELECT key, n FROM stat_counts WHERE dim = 'decision_policy' AND n != 0 "
                "ORDER BY n DESC, key"))
            by_cluster = _counts(totals, "by_cluster", conn.execute(
                "SELECT CAST(sub AS INTEGER) AS cluster, n FROM stat_counts "
                "WHERE dim = 'decision_cluster' AND key = ? AND n != 0 ORDER BY cluster",
                (weights_id or "",)))
        except sqlite3.DatabaseError as exc:  # a damaged page, a lock held too long
            raise store_error(self.path, "read the decision log", exc) from None
        finally:
            conn.close()
        return {"total": totals.count(total, "total"),
                "cache_hits": totals.count(hits, "cache_hits"), "by_model": by_model,
                "by_policy": by_policy, "by_cluster": by_cluster, "warnings": totals.warnings}

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent decisions, newest first."""
        conn = self._read()
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM decisions "
                                "ORDER BY rowid DESC LIMIT ?", (limit,)).fetchall()
        except sqlite3.DatabaseError as exc:  # a damaged page, a lock held too long
            raise store_error(self.path, "read the decision log", exc) from None
        finally:
            conn.close()
        out = []
        for row in rows:
            item = dict(row)
            for column in _DECISION_JSON:
                if item[column] is not None:
                    item[column] = json.loads(item[column])
            item["cache_hit"] = bool(item["cache_hit"])
            out.append(item)
        return out

    # The request log -----------------------------------------------------------------------

    def requests(self, limit: int = DEFAULT_PAGE, cursor: int | None = None) -> tuple[
            list[dict[str, Any]], int | None]:
        """A page of the request log, newest first: (entries, next cursor or None).

        ``cursor`` is the ``seq`` below which to continue (the previous page's next cursor);
        entries appended meanwhile never shift a page, unlike an offset.
        """
        limit = max(1, min(int(limit), MAX_PAGE))
        conn = self._read()
        conn.row_factory = sqlite3.Row
        try:
            where, args = ("WHERE seq < ?", (cursor,)) if cursor is not None else ("", ())
            rows = conn.execute(f"SELECT seq, {', '.join(_REQUEST_COLUMNS)} FROM requests "
                                f"{where} ORDER BY seq DESC LIMIT ?",
                                (*args, limit + 1)).fetchall()
        except sqlite3.DatabaseError as exc:  # a damaged page, a lock held too long
            raise store_error(self.path, "read the request log", exc) from None
        finally:
            conn.close()
        more = len(rows) > limit
        out = []
        for row in rows[:limit]:
            item = dict(row)
            for column in _JSON_COLUMNS:
                item[column] = json.loads(item[column])
            for column in _BOOL_COLUMNS:
                item[column] = bool(item[column])
            out.append(item)
        return out, (out[-1]["seq"] if more and out else None)

    def request_stats(self, *, tenant: str | None = None) -> dict[str, Any]:
        """Totals over the whole request log: counts by status (``errors`` are the requests
        neither answered nor refused by the governance), escalations, tokens, cost, and
        requests and cost by answering model and by pin state; ``tenant``: over that tenant's
        requests alone (``default``: those that name no tenant too).

        Read from the totals the log keeps as rows are logged and pruned (the same figures a
        scan would give): the cost is the number of models, statuses and pin states, not of
        requests (for one tenant too: the log keeps each tenant's totals as well). A total out
        of range (a damaged file, a cost too large to be real) is None, and ``warnings`` says
        which (see :mod:`~switchpoint.store.totals`)."""
        totals = Totals(self.path, self._said)
        conn = self._read()
        try:
            count_tenant(conn, tenant)
            row = conn.execute(
                "SELECT n, escalated, prompt, completion, cost_nano, streams FROM stat_counts "
                "WHERE dim = 'requests'").fetchone()
            total, escalations, prompt, completion, cost, streams = (
                row if row is not None else (0, 0, 0, 0, 0, 0))
            by_status = _counts(totals, "by_status", conn.execute(
                "SELECT key, n FROM stat_counts WHERE dim = 'request_status' AND n != 0 "
                "ORDER BY n DESC, key"))
            # An answer of unknown cost (a model without prices, no usage reported) is counted
            # apart: the sums leave it out, and it is not free.
            per_model = conn.execute(
                "SELECT key, n, cost_nano, cost_unknown FROM stat_counts "
                "WHERE dim = 'request_model' AND n != 0 ORDER BY n DESC, key").fetchall()
            by_pin = _counts(totals, "by_pin_state", conn.execute(
                "SELECT key, n FROM stat_counts WHERE dim = 'request_pin' AND n != 0 "
                "ORDER BY n DESC, key"))
        except sqlite3.DatabaseError as exc:  # a damaged page, a lock held too long
            raise store_error(self.path, "read the request log", exc) from None
        finally:
            conn.close()
        # A count is an int; a cost is a float even when no request had a price (SUM of 0).
        by_model: dict[str, dict[str, Any]] = {}
        for m, n, c, u in per_model:
            at = f"by_model.{m}"
            by_model[str(m)] = {"requests": totals.count(n, f"{at}.requests"),
                                "cost_usd": totals.usd(c, f"{at}.cost_usd", NANO_PER_USD),
                                "cost_unknown_requests": totals.count(
                                    u, f"{at}.cost_unknown_requests")}
        total = totals.count(total, "total")
        ok, refused = by_status.get("ok", 0), by_status.get("refused", 0)
        unknown = [m["cost_unknown_requests"] for m in by_model.values()]
        return {"total": total, "ok": ok, "refused": refused,
                "errors": (None if total is None or ok is None or refused is None
                           else total - ok - refused),
                "escalations": totals.count(escalations, "escalations"),
                "streams": totals.count(streams, "streams"),
                "by_status": by_status, "by_model": by_model, "by_pin_state": by_pin,
                "prompt_tokens": totals.count(prompt, "prompt_tokens"),
                "completion_tokens": totals.count(completion, "completion_tokens"),
                "cost_usd": totals.usd(cost, "cost_usd", NANO_PER_USD),
                "cost_unknown_requests": None if None in unknown else sum(
                    u for u in unknown if u is not None),
                "warnings": totals.warnings}
