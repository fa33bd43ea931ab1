"""What the SQLite session pins' store holds in memory to answer a new conversation without a
read, from several source trees, each in a process of its own on one file of pins.

Each tree (``LABEL=DIR``, ``DIR`` its ``src`` folder, e.g. a ``git worktree`` of an earlier
commit; ``.`` for this checkout's) opens a ``sessions.db`` holding ``--pins`` pins (UUID session
ids, as clients send, shared by ``--tenants`` tenants in turn), ``--rounds`` times in turn with
the others, and the script prints, per tree, the median time to open it, the bytes the open
store holds per pin (Python allocations still held once it is open, by ``tracemalloc``, in an
open of its own), and the median time of
``get()`` of a session the table holds no pin for (a new conversation's, answered from memory)
over ``--gets`` lookups (each batch of 100 timed whole).

The file is written as this checkout's store writes it (its tenant column and index; a tree
that predates them reads the file all the same): ``--old-file`` writes it as stores did before
pins kept their tenant, which a store that keeps them brings up to date at each open.

Usage: python benchmarks/pins.py now=. before=/tmp/before/src [--pins 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import source_trees


def _make(path: Path, pins: int, tenants: int, old: bool) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    if old:
        db.executescript("""
            CREATE TABLE session_pins (session_id TEXT PRIMARY KEY, model TEXT NOT NULL,
                                       last_used REAL NOT NULL,
                                       failed INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX session_pins_last_used ON session_pins(last_used);""")
    else:
        from switchpoint.gateway.sessions import SQLitePinStore

        db.executescript(SQLitePinStore.SCHEMA + SQLitePinStore.TENANT_INDEX)
    now = time.time()
    db.executemany("INSERT INTO session_pins (session_id, model, last_used, failed) "
                   "VALUES (?, 'm', ?, 0)", ((str(uuid.uuid4()), now) for _ in range(pins)))
    if not old:
        db.execute(f"UPDATE session_pins SET tenant = 't' || (rowid % {tenants})")
    db.commit()
    db.close()


def _child(path: str, gets: int, memory: bool) -> dict[str, float]:
    """One open of the store at ``path`` (in this process): what it took."""
    import tracemalloc

    from switchpoint.gateway.sessions import SQLitePinStore

    if memory:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        store = SQLitePinStore(path, max_entries=10_000_000)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        store.close()
        return {"held": held}
    started = time.perf_counter()
    store = SQLitePinStore(path, max_entries=10_000_000)
    opened = time.perf_counter() - started
    fresh = [str(uuid.uuid4()) for _ in range(gets)]
    took = []  # (per get, timed over batches of 100: the clock's own cost is not counted)
    for start in range(0, gets, 100):
        batch = fresh[start:start + 100]
        t = time.perf_counter_ns()
        for session in batch:
            store.get(session)
        took.append((time.perf_counter_ns() - t) / len(batch))
    store.close()
    return {"open_s": opened, "get_ns": statistics.median(took)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", help="LABEL=DIR, DIR a source tree's src folder")
    parser.add_argument("--pins", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gets", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--old-file", action="store_true",
                        help="write the file as stores did before pins kept their tenant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.gets, args.memory)))
        return
    trees = source_trees(args.trees or ["now=."])
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "sessions.db"
        _make(db, args.pins, args.tenants, args.old_file)

        def run(src: str, memory: bool = False) -> dict[str, float]:
            # (a copy per open: the store may trim or checkpoint the file it opens)
            copy = Path(tmp) / "open.db"
            copy.write_bytes(db.read_bytes())
            env = {**os.environ, "PYTHONPATH": src}
            out = subprocess.run([sys.executable, __file__, "--child", str(copy),
                                  "--gets", str(args.gets), *(["--memory"] if memory else [])],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for side in Path(tmp).glob("open.db*"):
                side.unlink()
            result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
            return result

        held = {label: run(src, memory=True)["held"] for label, src in trees.items()}
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
        for i in range(args.rounds):
            order = list(trees.items())
            for label, src in order if i % 2 == 0 else reversed(order):
                runs[label].append(run(src))
    print(f"{args.pins:,} pins" + (" (a file written before pins kept their tenant)"
                                    if args.old_file else f" of {args.tenants} tenants")
          + f", {args.rounds} rounds, {args.gets:,} gets of new sessions each")
    print(f"{'tree':<12} {'bytes/pin':>10} {'open ms':>9} {'get ns':>8}")
    for label in trees:
        opens = statistics.median(r["open_s"] for r in runs[label]) * 1e3
        gets = statistics.median(r["get_ns"] for r in runs[label])
        print(f"{label:<12} {held[label] / args.pins:>10.0f} {opens:>9.1f} {gets:>8.0f}")


if __name__ == "__main__":
    main()
