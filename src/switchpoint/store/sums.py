"""The sums the logs keep as rows are logged and pruned (the stats' totals, ``stat_counts`` and
``tenant_stat_counts``, and the decisions' expected errors by hour, ``decision_errors``): the SQL
that makes them, their triggers and their backfill (for the migrations), and what their readers
use to read them (one tenant's totals, a window's error sums)."""

from __future__ import annotations

import sqlite3
from typing import Any

from switchpoint.learning.events import DEFAULT_TENANT, check_tenant

# What one logged row adds to the stats' totals (migrations 13 and 16): per dimension, the
# group it counts in and where it counts; the values are (n, cost_nano, cost_unknown, escalated,
# prompt, completion, streams, cache_hits) of the row, given with ROW for NEW or OLD. A cost is
# counted in whole nano-dollars (NANO_PER_USD), so that the totals, added to as rows are
# logged and taken from as they are pruned, stay exactly what a scan of the rows gives: float
# sums drifted, and fell below zero once every row was pruned.
NANO_PER_USD = 1_000_000_000
_REQUEST_VALUES = ("1", f"CAST(round(coalesce(ROW.cost_usd, 0) * {NANO_PER_USD}) AS INTEGER)",
                   "(ROW.cost_usd IS NULL)", "ROW.escalated",
                   "coalesce(ROW.prompt_tokens, 0)", "coalesce(ROW.completion_tokens, 0)",
                   "ROW.stream", "0")
_DECISION_VALUES = ("1", "0", "0", "0", "0", "0", "0", "ROW.cache_hit")
_STAT_GROUPS = {
    "requests": [("requests", "''", "''", "1"),
                 ("request_status", "ROW.status", "''", "1"),
                 ("request_model", "ROW.model", "''", "ROW.model IS NOT NULL"),
                 ("request_pin", "ROW.pin_state", "''", "1")],
    "decisions": [("decisions", "''", "''", "1"),
                  ("decision_model", "ROW.selected_model", "''", "1"),
                  ("decision_policy", "ROW.policy", "''", "1"),
                  ("decision_cluster", "ROW.weights_id", "CAST(ROW.cluster_id AS TEXT)", "1")],
}
_STAT_SUMS = ("n", "cost_nano", "cost_unknown", "escalated", "prompt", "completion", "streams",
              "cache_hits")


# The per-tenant totals (migration 19) count a row under its tenant, ``default`` for a row that
# names none (as :func:`of_tenant` reads them).
_TENANT_OF_ROW = f"coalesce(ROW.tenant, '{DEFAULT_TENANT}')"


def stat_table(*, by_tenant: bool = False) -> str:
    """The table of the stats' totals: one row per dimension and group, every sum an
    integer; ``by_tenant``: ``tenant_stat_counts``, the same per tenant."""
    sums = "".join(f"    {c} INTEGER NOT NULL,\n" for c in _STAT_SUMS)
    if by_tenant:
        return ("CREATE TABLE tenant_stat_counts (\n    tenant TEXT NOT NULL,\n"
                "    dim TEXT NOT NULL,\n    key TEXT NOT NULL,\n"
                f"    sub TEXT NOT NULL,\n{sums}    PRIMARY KEY (tenant, dim, key, sub)\n);\n")
    return ("CREATE TABLE stat_counts (\n    dim TEXT NOT NULL,\n    key TEXT NOT NULL,\n"
            f"    sub TEXT NOT NULL,\n{sums}    PRIMARY KEY (dim, key, sub)\n);\n")


def stat_drop(*, by_tenant: bool = False) -> str:
    """What :func:`stat_table` and :func:`stat_triggers` make, dropped if there."""
    into, suffix = ("tenant_stat_counts", "tenant_") if by_tenant else ("stat_counts", "")
    return "".join(f"DROP TRIGGER IF EXISTS {table}_{suffix}{name};\n" for table in _STAT_GROUPS
                   for name in ("counted", "uncounted")) + f"DROP TABLE IF EXISTS {into};\n"


def stat_triggers(*, by_tenant: bool = False) -> str:
    """The triggers that keep ``stat_counts`` (``by_tenant``: ``tenant_stat_counts``, in
    triggers of their own) as rows are logged (added) and pruned (taken away), in the
    transaction that does it."""
    into, columns, tenant, suffix = (("tenant_stat_counts", "tenant, dim, key, sub",
                                      f"{_TENANT_OF_ROW}, ", "tenant_") if by_tenant
                                     else ("stat_counts", "dim, key, sub", "", ""))
    out = []
    for table, groups in _STAT_GROUPS.items():
        values = _REQUEST_VALUES if table == "requests" else _DECISION_VALUES
        for name, event, row, sign in (("counted", "INSERT", "NEW", ""),
                                       ("uncounted", "DELETE", "OLD", "-")):
            body = []
            for dim, key, sub, where in groups:
                cells = ", ".join(f"{sign}{v}" if v != "0" else "0" for v in values)
                body.append(
                    f"INSERT INTO {into} ({columns}, {', '.join(_STAT_SUMS)}) "
                    f"SELECT {tenant}'{dim}', {key}, {sub}, {cells} WHERE {where} "
                    f"ON CONFLICT ({columns}) DO UPDATE SET "
                    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _STAT_SUMS) + ";")
            out.append(f"CREATE TRIGGER {table}_{suffix}{name} AFTER {event} ON {table} "
                       "BEGIN\n" + "\n".join(body).replace("ROW.", f"{row}.") + "\nEND;")
    return "\n".join(out)


def stat_backfill(*, by_tenant: bool = False) -> str:
    """What the logs already hold, counted into ``stat_counts`` (``by_tenant``: into
    ``tenant_stat_counts``, by tenant) once, for an upgraded file.

    Summed as ``total()`` (a float, exact while a sum stays under 2**53, i.e. $9 million in
    nano-dollars, and within a nano-dollar or two past it), not ``sum()``, which fails the
    whole upgrade with "integer overflow" on a file holding absurd costs (an older version took
    a price of 1e300); such a sum is held at the largest integer instead (as the triggers hold
    one row's cost)."""
    into, tenant = ("tenant_stat_counts", _TENANT_OF_ROW) if by_tenant else ("stat_counts", "")
    out = []
    for table, groups in _STAT_GROUPS.items():
        values = _REQUEST_VALUES if table == "requests" else _DECISION_VALUES
        cells = ", ".join("count(*)" if v == "1" else "0" if v == "0"
                          else f"CAST(total({v}) AS INTEGER)" for v in values)
        for dim, key, sub, where in groups:
            grouped = [e for e in (tenant, key, sub) if e not in ("''", "")]
            by = f" GROUP BY {', '.join(grouped)}" if grouped else ""
            out.append(f"INSERT INTO {into} SELECT {tenant + ', ' if tenant else ''}'{dim}', "
                       f"{key}, {sub}, {cells} FROM {table} WHERE {where}{by};")
    return "\n".join(out).replace("ROW.", "") + "\n"


# The totals, their triggers, and what the logs already hold counted into them.
STAT_COUNTS = stat_table() + stat_triggers() + stat_backfill()


# The decisions' expected errors summed by hour (migration 20), so that the reports' strongest
# model (the lowest mean expected error over the decisions that weighed the most models) reads
# a few rows per hour of its window, not every decision's JSON. Per hour, the number of models
# a decision weighed (its ``width``) and model: the decisions and their errors, summed in whole
# millionths (ERROR_MICRO; the router logs errors to 6 decimals), so that the sums, added to as
# decisions are logged and taken from as they are pruned, stay exact.
ERROR_MICRO = 1_000_000
ERROR_HOUR_S = 3600.0
_ERROR_HOUR = f"CAST(ROW.ts / {ERROR_HOUR_S} AS INTEGER)"
# The decisions summed: those with expected errors as a JSON object (a value json.dumps writes
# but SQLite cannot read, NaN say, leaves its decision out of the sums, never out of the log).
_ERROR_KEPT = ("ROW.expected_errors IS NOT NULL AND json_valid(ROW.expected_errors) "
               "AND json_type(ROW.expected_errors) = 'object'")
_ERROR_ROWS = (f"SELECT {_ERROR_HOUR}, (SELECT count(*) FROM json_each(ROW.expected_errors)), "
               f"e.key, 1, CAST(round(e.value * {ERROR_MICRO}) AS INTEGER) "
               "FROM json_each(ROW.expected_errors) AS e")


def error_totals() -> str:
    """``decision_errors``, its triggers, and what the decisions already hold summed into it."""
    out = ["DROP TRIGGER IF EXISTS decisions_errors_counted;",
           "DROP TRIGGER IF EXISTS decisions_errors_uncounted;",
           "DROP TABLE IF EXISTS decision_errors;",
           "CREATE TABLE decision_errors (\n    hour INTEGER NOT NULL,\n"
           "    width INTEGER NOT NULL,\n    model TEXT NOT NULL,\n    n INTEGER NOT NULL,\n"
           "    micro INTEGER NOT NULL,\n    PRIMARY KEY (hour, width, model)\n);"]
    for name, event, row, sign in (("counted", "INSERT", "NEW", 1),
                                   ("uncounted", "DELETE", "OLD", -1)):
        rows = _ERROR_ROWS.replace("ROW.", f"{row}.")
        if sign < 0:
            rows = rows.replace(", 1, CAST(", ", -1, -CAST(")
        out.append(
            f"CREATE TRIGGER decisions_errors_{name} AFTER {event} ON decisions "
            f"WHEN {_ERROR_KEPT.replace('ROW.', f'{row}.')} BEGIN\n"
            f"INSERT INTO decision_errors (hour, width, model, n, micro) {rows} WHERE true "
            "ON CONFLICT (hour, width, model) DO UPDATE SET n = n + excluded.n, "
            "micro = micro + excluded.micro;\nEND;")
    out.append("INSERT INTO decision_errors (hour, width, model, n, micro) "
               "SELECT hour, width, model, count(*), CAST(total(micro) AS INTEGER) FROM ("
               f"SELECT {_ERROR_HOUR} AS hour, "
               "(SELECT count(*) FROM json_each(ROW.expected_errors)) AS width, e.key AS model, "
               f"CAST(round(e.value * {ERROR_MICRO}) AS INTEGER) AS micro "
               "FROM decisions AS ROW, json_each(ROW.expected_errors) AS e "
               f"WHERE {_ERROR_KEPT}) GROUP BY hour, width, model;")
    return "\n".join(out) + "\n"


def error_sums(conn: sqlite3.Connection, since: float | None, until: float | None
               ) -> dict[int, dict[str, tuple[int, float]]]:
    """The decisions logged in ``[since, until)`` (None, None: all) with expected errors, by the
    number of models each weighed: per model, (decisions, sum of its expected errors). Whole
    hours of the window are read from ``decision_errors``; the decisions of its first and last
    hour (partly in it) one by one."""
    sql = ("SELECT width, model, sum(n), total(micro) FROM ({}) GROUP BY width, model "
           "HAVING sum(n) > 0")
    if since is None or until is None:
        rows = conn.execute(sql.format("SELECT width, model, n, micro FROM decision_errors"))
    else:
        # A whole hour lies strictly between the hours of ``since`` and ``until`` (the hour of
        # a row is monotone in its ts); the rest of the window's rows are read as they are.
        first, last = int(since / ERROR_HOUR_S), int(until / ERROR_HOUR_S)
        hour = _ERROR_HOUR
        edge = (_ERROR_ROWS.replace("FROM json_each(ROW.expected_errors) AS e",
                                    "FROM decisions AS ROW, json_each(ROW.expected_errors) AS e")
                + f" WHERE {_ERROR_KEPT} AND ROW.ts >= ? AND ROW.ts < ? AND {{}}")
        inner = ("SELECT hour, width, model, n, micro FROM decision_errors "
                 "WHERE hour > ? AND hour < ? "
                 "UNION ALL " + edge.format(f"{hour} <= ?") + " UNION ALL "
                 + edge.format(f"{hour} >= ? AND {hour} > ?"))
        head_end = min(until, (first + 1) * ERROR_HOUR_S + 1.0)
        tail_start = max(since, last * ERROR_HOUR_S - 1.0)
        rows = conn.execute(sql.format(inner), (first, last, since, head_end, first,
                                                tail_start, until, last, first))
    out: dict[int, dict[str, tuple[int, float]]] = {}
    for width, model, n, micro in rows:
        out.setdefault(int(width), {})[str(model)] = (int(n), float(micro) / ERROR_MICRO)
    return out


def of_tenant(column: str, tenant: str | None) -> tuple[str, list[Any]]:
    """The SQL condition (`` AND ...``, with its arguments) keeping ``tenant``'s rows of
    ``column``: every row for None; for the deployment's own tenant, ``default``, the rows that
    name no tenant too (requests without a key are its requests)."""
    if tenant is None:
        return "", []
    if tenant == DEFAULT_TENANT:
        return f" AND ({column} = ? OR {column} IS NULL)", [tenant]
    return f" AND {column} = ?", [tenant]


def count_tenant(conn: sqlite3.Connection, tenant: str | None) -> None:
    """For ``tenant`` (None: every tenant, nothing to do), shadow the totals ``stat_counts``
    on the read connection ``conn`` by a temporary table of the same name holding that
    tenant's totals (kept in ``tenant_stat_counts`` as rows are logged and pruned): the readers
    of the totals then give that tenant's figures, at the same cost (the number of groups, not
    of rows).

    A read connection that refuses every write (``query_only``, how a file with no side file
    beside it is read: see :func:`~switchpoint.store.moved.read_only_connection`) refuses the
    temporary table too, so the refusal is lifted for these two statements alone: they write
    the connection's temporary database, never the file."""
    if tenant is None:
        return
    tenant = check_tenant(tenant)
    refusing = conn.execute("PRAGMA query_only").fetchone()[0]
    if refusing:
        conn.execute("PRAGMA query_only=OFF")
    try:
        conn.execute(stat_table().replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
        conn.execute(f"INSERT INTO temp.stat_counts SELECT dim, key, sub, "
                     f"{', '.join(_STAT_SUMS)} FROM main.tenant_stat_counts WHERE tenant = ?",
                     (tenant,))
    finally:
        if refusing:
            conn.execute("PRAGMA query_only=ON")
