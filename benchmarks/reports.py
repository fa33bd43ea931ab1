"""How long the what-if reports take over a busy log, and how much memory they hold: ``report
suggest`` (the λ sweep and the pools without each model) and ``report cost`` with its savings.

A data_dir's request and decision logs are filled with ``--requests`` answered ``auto``
requests of the last week (``--models`` priced models, each decision's expected errors and
costs drawn at random, λ from a few values). Then, over the same log, in the same process:

1. ``Reports.get_cost_optimizations`` as switchpoint runs it (the requests read a row at a time
   into arrays, each what-if a few numpy operations per pool), against the same what-ifs
   computed a request at a time in Python over the whole window read into memory (how the
   report ran before), checking that both pick the same models;
2. ``Reports.cost_report("month")`` with its savings.

Times are the median of ``--repeats`` runs; memory is the peak of Python's allocations
(``tracemalloc``, in a run of its own), which does not count SQLite's page cache.

Usage: python benchmarks/reports.py [--requests 200000] [--models 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import median_time

from switchpoint.config import load_settings
from switchpoint.governance.keys import KEYS_FILENAME, KeyStore
from switchpoint.governance.reports import SWEEP, Reports
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore

NOW = 1_800_000_000.0
WEEK = 7 * 86_400.0


def fill(db: Path, n: int, models: list[str], prices: dict[str, tuple[float, float]]) -> None:
    """``n`` answered ``auto`` requests of the last week, each with its routing decision."""
    SQLiteStore(db).open().close()  # the schema
    rng = random.Random(0)
    conn = sqlite3.connect(db)
    batch_d: list[tuple[Any, ...]] = []
    batch_r: list[tuple[Any, ...]] = []
    for i in range(n):
        ts = NOW - rng.random() * WEEK
        errors = {m: round(rng.random(), 4) for m in models}
        costs = {m: (500 * prices[m][0] + 200 * prices[m][1]) / 1e6 for m in models}
        model = min(models, key=lambda m: errors[m])
        pt, ct = rng.randrange(50, 3000), rng.randrange(20, 800)
        cost = (pt * prices[model][0] + ct * prices[model][1]) / 1e6
        batch_d.append(DecisionRecord(
            id=f"d{i}", ts=ts, selected_model=model, cluster_id=0,
            cost_weight=rng.choice([0.0, 0.5, 1.0]), candidates=models, cache_hit=False,
            routing_ms=1.0, embedding_ms=1.0, policy="cluster", weights_id="w",
            expected_error=errors[model], cost_adjusted_score=0.0, key_id=f"k{i % 20}",
            tenant="acme", expected_errors=errors, expected_costs=costs).row())
        batch_r.append(RequestRecord(
            id=f"r{i}", ts=ts, requested_model="auto", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=100.0, model=model, prompt_tokens=pt,
            completion_tokens=ct, cost_usd=cost, decision_id=f"d{i}", key_id=f"k{i % 20}",
            tenant="acme", charged_usd=cost).row())
        if len(batch_d) == 10_000 or i == n - 1:
            conn.executemany(DecisionRecord.insert, batch_d)
            conn.executemany(RequestRecord.insert, batch_r)
            conn.commit()
            batch_d, batch_r = [], []
    conn.close()


def per_request(reports: Reports, db: Path) -> list[dict[str, int]]:
    """The same what-ifs a request at a time over the window read whole (the peer): the models
    picked by each λ of the sweep and by each pool without one model."""
    conn = sqlite3.connect(db)
    rows = [(model, json.loads(e), json.loads(c), lam) for model, e, c, lam in conn.execute(
        "SELECT r.model, d.expected_errors, d.expected_costs, d.cost_weight FROM requests r "
        "JOIN decisions d ON d.id = r.decision_id WHERE r.ts >= ? AND r.ts < ?",
        (NOW - WEEK, NOW)).fetchall()]
    conn.close()
    scales: dict[tuple[str, ...], float] = {}
    out = []
    pool = sorted({m for _, errors, _, _ in rows for m in errors})
    runs: list[tuple[float | None, list[str]]] = [(lam, []) for lam in SWEEP]
    runs += [(None, [m]) for m in pool]
    for weight, without in runs:
        picks: dict[str, int] = {}
        for _, errors, costs, own in rows:
            names = [m for m in errors if m not in without]
            key = tuple(sorted(names))
            if key not in scales:
                scales[key] = reports.cost_scale(list(key)) or 1.0
            lam = float(own or 0.0) if weight is None else weight
            pick = min(names, key=lambda m: (errors[m] + lam * costs[m] / scales[key],
                                             costs[m]))
            picks[pick] = picks.get(pick, 0) + 1
        out.append(picks)
    return out


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    models = [f"model-{j}" for j in range(args.models)]
    prices = {m: (0.1 * 2 ** j, 0.3 * 2 ** j) for j, m in enumerate(models)}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides={
            "data_dir": tmp, "models": [{"name": m, "input_per_mtok": i, "output_per_mtok": o}
                                        for m, (i, o) in prices.items()]}, environ={})
        start = time.perf_counter()
        fill(settings.db_path, args.requests, models, prices)
        print(f"filled the log with {args.requests} answered auto requests over {args.models} "
              f"models in {time.perf_counter() - start:.1f} s")
        # (the key store the logged keys were made in, which no longer holds them, pruned at
        # NOW, after their requests: a report refuses a data_dir whose log names keys and that
        # holds no keys.db, or one that was never in use since they were logged)
        with KeyStore(Path(tmp) / KEYS_FILENAME, clock=lambda: NOW) as keys:
            keys.prune(None, 1)
        reports = Reports.from_settings(settings, clock=lambda: NOW)

        def arrays() -> list[dict[str, int]]:
            routed = reports._routed(NOW - WEEK, NOW, None, None)
            w = [reports._what_if(routed, lam, (), NOW - WEEK, NOW) for lam in SWEEP]
            w += [reports._what_if(routed, None, [m], NOW - WEEK, NOW) for m in models]
            return [x["models"] for x in w]

        suggest_s = median_time(reports.get_cost_optimizations, args.repeats).seconds.median
        peer_timing = median_time(lambda: per_request(reports, settings.db_path), args.repeats)
        peer_s, peer = peer_timing.seconds.median, peer_timing.result
        same = arrays() == peer
        cost_timing = median_time(lambda: reports.cost_report("month"), args.repeats)
        cost_s, cost = cost_timing.seconds.median, cost_timing.result
        suggest_mb = peak_mb(reports.get_cost_optimizations)
        peer_mb = peak_mb(lambda: per_request(reports, settings.db_path))
        cost_mb = peak_mb(lambda: reports.cost_report("month"))
        assert cost["requests"] == args.requests
        print(f"{'':44} {'time (s)':>9} {'peak MiB':>9}")
        print(f"{'report suggest (arrays, as switchpoint runs)':44} {suggest_s:9.2f} "
              f"{suggest_mb:9.1f}")
        print(f"{'the same what-ifs a request at a time (peer)':44} {peer_s:9.2f} "
              f"{peer_mb:9.1f}")
        print(f"{'report cost, month, with savings':44} {cost_s:9.2f} {cost_mb:9.1f}")
        print("both pick the same models for every request: " + ("yes" if same else "NO"))
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
