"""What the tenants' fair shares cost the tables that keep them, from several source trees,
each in a process of its own: the in-memory session pin store's ``put`` and ``get`` per call and
its bytes per pin (Python allocations it holds, by ``tracemalloc``: once filled with ``--pins``
new sessions, then after as many puts again of held ones), with one tenant and with ten; the
learning memory's ``remember()`` at its default size; the SQLite pin store's ``put``.

CPU time (``time.process_time``), the median of ``--rounds`` runs; a put of a full store is half
puts again of held sessions, half new ones (each letting one go).

Usage: python benchmarks/fair_tables.py now=. before=/tmp/before/src [--pins 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from _common import source_trees


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def _child(n: int, rounds: int) -> dict[str, Any]:
    """Every figure, from the tree on this process's path."""
    from switchpoint.gateway.sessions import MemoryPinStore, Pin, SQLitePinStore
    from switchpoint.learning.memory import DecisionMemory, PendingDecision

    tenanted = "tenant" in inspect.signature(Pin).parameters  # (trees before pins kept theirs)

    def pin(tenant: str) -> Pin:
        return Pin("m", 1.0, tenant=tenant) if tenanted else Pin("m", 1.0)

    def per_op(started: float, ops: int) -> float:
        return (time.process_time() - started) / ops * 1e6

    out: dict[str, Any] = {}
    for tenants in (1, 10):
        keys = _ids(n)
        pins = [pin(f"t{i % tenants}") for i in range(n)]
        fills, puts, gets = [], [], []
        for _ in range(rounds):
            store = MemoryPinStore(n)
            t = time.process_time()
            for key, p in zip(keys, pins, strict=True):
                store.put(key, p)
            fills.append(per_op(t, n))
            new = _ids(n // 2)
            t = time.process_time()
            for i in range(n // 2):
                store.put(keys[(i * 7919) % n], pins[i])
                store.put(new[i], pins[i])
            puts.append(per_op(t, n))
            t = time.process_time()
            for key in keys:
                store.get(key)
            gets.append(per_op(t, n))
        rng = random.Random(1)
        again = [rng.randrange(n) for _ in range(n)]
        again_pins = [pin(f"t{i % tenants}") for i in again]
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        store = MemoryPinStore(n)
        for key, p in zip(keys, pins, strict=True):
            store.put(key, p)
        filled = tracemalloc.get_traced_memory()[0] - base
        for i, p in zip(again, again_pins, strict=True):
            store.put(keys[i], p)
        churned = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out[f"pins{tenants}"] = {
            "fill_us": statistics.median(fills), "put_us": statistics.median(puts),
            "get_us": statistics.median(gets), "bytes": filled / n, "bytes_again": churned / n}
    capacity = DecisionMemory().capacity
    took = []
    for _ in range(rounds):
        entries = [PendingDecision(k, "t0", "m", ("m",)) for k in _ids(3 * capacity)]
        memory = DecisionMemory()
        t = time.process_time()
        for entry in entries:
            memory.remember(entry)
        took.append(per_op(t, len(entries)))
    out["remember_us"] = statistics.median(took)
    took = []
    for _ in range(max(1, rounds // 2)):
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SQLitePinStore(Path(tmp) / "sessions.db", max_entries=n)
            keys = _ids(n)
            pins = [pin(f"t{i % 10}") for i in range(n)]
            t = time.process_time()
            for key, p in zip(keys, pins, strict=True):
                sqlite.put(key, p)
            took.append(per_op(t, n))
            sqlite.close()
    out["sqlite_put_us"] = statistics.median(took)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", help="LABEL=DIR, DIR a source tree's src folder")
    parser.add_argument("--pins", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.pins, args.rounds)))
        return
    trees = source_trees(args.trees or ["now=."])
    print(f"{args.pins:,} pins, median of {args.rounds} runs, CPU µs per call; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'tree':<10} {'tenants':>7} {'fill':>6} {'put':>6} {'get':>6} {'B/pin':>6} "
          f"{'again':>6} {'remember':>9} {'sqlite put':>11}")
    for label, src in trees.items():
        env = {**os.environ, "PYTHONPATH": src}
        got = json.loads(subprocess.run(
            [sys.executable, __file__, "--child", "--pins", str(args.pins),
             "--rounds", str(args.rounds)],
            env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        for tenants in (1, 10):
            row = got[f"pins{tenants}"]
            print(f"{label:<10} {tenants:>7} {row['fill_us']:>6.2f} {row['put_us']:>6.2f} "
                  f"{row['get_us']:>6.2f} {row['bytes']:>6.0f} {row['bytes_again']:>6.0f} "
                  f"{got['remember_us']:>9.2f} {got['sqlite_put_us']:>11.2f}")


if __name__ == "__main__":
    main()
