"""What one tenant's stats cost over a busy log, and what keeping them costs the writes.

A store is filled with ``--rows`` decisions and as many requests (each request with its
decision) over ``--tenants`` tenants (every fifth row naming none: the ``default`` tenant's).
Then, on that file:

1. ``decision_stats`` / ``request_stats``, unfiltered and for one tenant (read from the totals
   the log keeps, per tenant too), and ``Reports.cost_report`` / ``routing_mix`` for one
   tenant, and the reports' strongest model (read from the hourly sums of expected errors the
   log keeps, and, the peer, from every decision's JSON, as before them): median of
   ``--repeats`` runs;
2. the other ways to read one tenant's figures: a scan of its rows grouped as the totals are
   (how the stats read them before the log kept them per tenant), without and with an index
   on ``decisions (tenant, ts)`` (``requests`` has one on ``(tenant, ts)`` already);
3. the writes, with the per-tenant totals and the hourly error sums kept, without the error
   sums, and without either (the schemas before): records appended through
   :class:`SQLiteStore` one request at a time (a decision and its request per commit, as the
   gateway logs them, ``synchronous=NORMAL`` so that the disk's fsync does not hide the rows'
   cost), and in batches of 1,000 (the rows' CPU cost alone); each the median of
   ``--repeats`` rounds taken in turn on the copies of the file;
4. the file's size, with and without the per-tenant totals and the error sums, and with the
   index.

Usage: python benchmarks/tenant_stats.py [--rows 200000] [--tenants 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

from _common import median_time

from switchpoint.config import load_settings
from switchpoint.governance.reports import Reports
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore

NOW = 1_800_000_000.0
WEEK = 7 * 86_400.0
MODELS = ["model-a", "model-b", "model-c"]
INDEX = "CREATE INDEX IF NOT EXISTS decisions_tenant ON decisions (tenant, ts)"
# What the per-tenant totals add to the schema (dropped: the schema before them).
DROP_ERROR_SUMS = ("DROP TRIGGER decisions_errors_counted; "
                   "DROP TRIGGER decisions_errors_uncounted; DROP TABLE decision_errors;")
DROP_TENANT_TOTALS = ("DROP TRIGGER requests_tenant_counted; "
                      "DROP TRIGGER requests_tenant_uncounted; "
                      "DROP TRIGGER decisions_tenant_counted; "
                      "DROP TRIGGER decisions_tenant_uncounted; DROP TABLE tenant_stat_counts;")
# One tenant's figures by a scan of its rows, grouped as the totals are.
SCANS = {
    "decisions": ["SELECT count(*), total(cache_hit) FROM decisions WHERE tenant = ?",
                  "SELECT selected_model, count(*) FROM decisions WHERE tenant = ? GROUP BY 1",
                  "SELECT policy, count(*) FROM decisions WHERE tenant = ? GROUP BY 1",
                  "SELECT weights_id, cluster_id, count(*) FROM decisions WHERE tenant = ? "
                  "GROUP BY 1, 2"],
    "requests": ["SELECT count(*), total(escalated), total(prompt_tokens), "
                 "total(completion_tokens), total(cost_usd), total(stream) FROM requests "
                 "WHERE tenant = ?",
                 "SELECT status, count(*) FROM requests WHERE tenant = ? GROUP BY 1",
                 "SELECT model, count(*), total(cost_usd), total(cost_usd IS NULL) "
                 "FROM requests WHERE tenant = ? GROUP BY 1",
                 "SELECT pin_state, count(*) FROM requests WHERE tenant = ? GROUP BY 1"],
}


def records(ids: Iterator[int], n: int, tenants: list[str], rng: random.Random) -> Iterator[
        tuple[DecisionRecord, RequestRecord]]:
    """``n`` answered requests of the last week, each with its routing decision."""
    for _, i in zip(range(n), ids, strict=False):
        ts = NOW - rng.random() * WEEK
        tenant = None if i % 5 == 0 else tenants[i % len(tenants)]
        model = rng.choice(MODELS)
        errors = {m: round(rng.random(), 4) for m in MODELS}
        yield (DecisionRecord(
            id=f"d{i}", ts=ts, selected_model=model, cluster_id=i % 16, cost_weight=0.5,
            candidates=MODELS, cache_hit=False, routing_ms=1.0, embedding_ms=1.0,
            policy="cluster", weights_id="w", expected_error=errors[model],
            cost_adjusted_score=0.0, key_id=f"k{i % 20}", tenant=tenant, expected_errors=errors,
            expected_costs={m: 0.001 for m in MODELS}),
            RequestRecord(
            id=f"r{i}", ts=ts, requested_model="auto", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=100.0, model=model, prompt_tokens=500,
            completion_tokens=200, cost_usd=0.001, decision_id=f"d{i}", key_id=f"k{i % 20}",
            tenant=tenant, charged_usd=0.001))


def insert(conn: sqlite3.Connection, pairs: list[tuple[DecisionRecord, RequestRecord]]) -> None:
    conn.executemany(DecisionRecord.insert, [d.row() for d, _ in pairs])
    conn.executemany(RequestRecord.insert, [r.row() for _, r in pairs])
    conn.commit()


def fill(db: Path, n: int, tenants: list[str], ids: Iterator[int]) -> None:
    SQLiteStore(db).open().close()  # the schema
    conn = sqlite3.connect(db)
    rng = random.Random(0)
    for start in range(0, n, 10_000):
        insert(conn, list(records(ids, min(10_000, n - start), tenants, rng)))
    conn.execute("VACUUM")
    conn.close()


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Milliseconds of ``fn``'s median call of ``repeats``."""
    return median_time(fn, repeats).seconds.median * 1000


def appended(db: Path, pairs: list[tuple[DecisionRecord, RequestRecord]]) -> float:
    """Requests/s appended one per commit through the store, as the gateway logs them."""
    store = SQLiteStore(db, synchronous="NORMAL").open()
    try:
        began = time.perf_counter()
        for d, r in pairs:
            store.append_lazy(d)
            store.append(r).result()
        return len(pairs) / (time.perf_counter() - began)
    finally:
        store.close()


def batched(db: Path, pairs: list[tuple[DecisionRecord, RequestRecord]]) -> float:
    """Requests/s inserted 1,000 per commit."""
    conn = sqlite3.connect(db)
    try:
        began = time.perf_counter()
        for k in range(0, len(pairs), 1000):
            insert(conn, pairs[k:k + 1000])
        return len(pairs) / (time.perf_counter() - began)
    finally:
        conn.close()


def scan(db: Path, table: str, tenant: str) -> None:
    conn = sqlite3.connect(db)
    try:
        for sql in SCANS[table]:
            conn.execute(sql, (tenant,)).fetchall()
    finally:
        conn.close()


def size_mb(db: Path) -> float:
    conn = sqlite3.connect(db)
    conn.execute("VACUUM")
    conn.close()
    return db.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--writes", type=int, default=1000,
                        help="requests appended one per commit in each round (and ten times "
                             "as many in batches)")
    args = parser.parse_args()
    tenants = [f"tenant-{j}" for j in range(args.tenants)]
    tenant = tenants[0]
    ids = count()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        kept = tmp / "switchpoint.db"
        fill(kept, args.rows, tenants, ids)
        unsummed = tmp / "unsummed.db"
        shutil.copy(kept, unsummed)
        conn = sqlite3.connect(unsummed)
        conn.executescript(DROP_ERROR_SUMS)
        conn.close()
        before = tmp / "before.db"
        shutil.copy(unsummed, before)
        conn = sqlite3.connect(before)
        conn.executescript(DROP_TENANT_TOTALS)
        conn.close()
        indexed = tmp / "indexed.db"
        shutil.copy(before, indexed)
        conn = sqlite3.connect(indexed)
        conn.execute(INDEX)
        conn.commit()
        conn.close()
        sizes = {"now": size_mb(kept), "without the error sums": size_mb(unsummed),
                 "without either": size_mb(before),
                 "without either + index": size_mb(indexed)}
        print(f"{args.rows} decisions and requests over {args.tenants} tenants (+ default)")

        store = SQLiteStore(kept)
        settings = load_settings(overrides={"data_dir": str(tmp), "models": [
            {"name": m, "input_per_mtok": 1.0 + j, "output_per_mtok": 3.0 + j}
            for j, m in enumerate(MODELS)]}, environ={})
        reports = Reports(kept, settings, clock=lambda: NOW)
        scanned = Reports(unsummed, settings, clock=lambda: NOW)
        assert reports.strongest_model(NOW - WEEK, NOW) == scanned.strongest_model(
            NOW - WEEK, NOW)
        r = args.repeats
        reads = {
            "decision_stats, all": timed(lambda: store.decision_stats("w"), r),
            "decision_stats, one tenant": timed(
                lambda: store.decision_stats("w", tenant=tenant), r),
            "decision_stats, default": timed(
                lambda: store.decision_stats("w", tenant="default"), r),
            "request_stats, all": timed(lambda: store.request_stats(), r),
            "request_stats, one tenant": timed(lambda: store.request_stats(tenant=tenant), r),
            "request_stats, default": timed(lambda: store.request_stats(tenant="default"), r),
            "one tenant's decisions, scanned": timed(
                lambda: scan(before, "decisions", tenant), r),
            "... with decisions (tenant, ts) indexed": timed(
                lambda: scan(indexed, "decisions", tenant), r),
            "one tenant's requests, scanned (indexed)": timed(
                lambda: scan(before, "requests", tenant), r),
            "strongest model, week (hourly sums)": timed(
                lambda: reports.strongest_model(NOW - WEEK, NOW), r),
            "... each decision's JSON read (before)": timed(
                lambda: scanned.strongest_model(NOW - WEEK, NOW), r),
            "report cost, week, one tenant": timed(
                lambda: reports.cost_report("week", tenant=tenant), r),
            "... before (each decision's JSON read)": timed(
                lambda: scanned.cost_report("week", tenant=tenant), r),
            "... comparison_model given": timed(
                lambda: reports.cost_report("week", tenant=tenant,
                                            comparison_model=MODELS[0]), r),
            "routing_mix, week, one tenant": timed(
                lambda: reports.routing_mix("week", tenant=tenant), r),
        }
        for label, ms in reads.items():
            print(f"  {label:44} {ms:9.1f} ms")

        rng = random.Random(1)
        variants = {"now": kept, "without the error sums": unsummed, "without either": before}
        rounds: dict[str, dict[str, list[float]]] = {
            v: {"one per commit": [], "1000 per commit": []} for v in variants}
        for _ in range(r):
            single = list(records(ids, args.writes, tenants, rng))
            many = list(records(ids, 10 * args.writes, tenants, rng))
            for variant, db in variants.items():
                rounds[variant]["one per commit"].append(appended(db, single))
                rounds[variant]["1000 per commit"].append(batched(db, many))
        print(f"  {'requests/s (median of rounds)':44} {'one/commit':>10} {'1000/commit':>11} "
              f"{'file MB':>8}")
        for variant, figures in rounds.items():
            print(f"  {variant:44} {statistics.median(figures['one per commit']):10.0f} "
                  f"{statistics.median(figures['1000 per commit']):11.0f} "
                  f"{sizes[variant]:8.1f}")
        print(f"  {'without either + index':44} {'':10} {'':11} "
              f"{sizes['without either + index']:8.1f}")


if __name__ == "__main__":
    main()
