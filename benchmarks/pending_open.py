"""What the decisions open to feedback cost on the feedback path and on the writer: a
``pending`` table of ``--rows`` rows (two tenants, one of them flooding: one row in 50 is the
other's), ``learning.memory_size`` as many.

Measured in the same process, side by side:

- the lookup of a decision a feedback names, by the rule the table kept before (the row, if
  among the newest ``memory_size`` rows of all tenants, read in SQL: :data:`_AMONG_NEWEST`,
  the condition the reader used) and by the fair rule (whether the tenants' shares hold it,
  ``OpenDecisions.holds``, then the row), the row read alike, for a decision at the bound
  (the worst case of the rule before) and for the newest one;
- the prune the writer runs every 256 writes: the newest ``memory_size`` rows kept (the cap
  the writer ran before, ``keep_newest("pending")``), against the 256 rows let go of deleted
  by id (``PendingForget``);
- the read of the table's ids and tenants at the first need after a start (once).

Usage: python benchmarks/pending_open.py [--rows 10000 100000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import functools
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import median_time

#: The rule the pending table was read by before (two parameters: how many newest rows, and
#: one less): the row at hand (``pending``) is among the newest that many, found without
#: counting them (within that many positions of the newest, else whether the that-many-th row
#: after it exists).
_AMONG_NEWEST = ("(pending.seq > (SELECT max(seq) FROM pending) - ? OR NOT EXISTS (SELECT 1 "
                 "FROM pending later WHERE later.seq > pending.seq ORDER BY later.seq LIMIT 1 "
                 "OFFSET ?))")


def _filled(path: Path, rows: int) -> None:
    """A store at ``path`` whose pending table holds ``rows`` rows (and 255 past them, as
    just before a prune), ``a...`` of tenant acme (one in 50), ``g...`` of globex."""
    from switchpoint.store import SQLiteStore

    SQLiteStore(path).open().close()
    vector = bytes(768)
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO pending (decision_id, ts, tenant, chosen, candidates, embedding, "
            "weights_id, prompt_hash) VALUES (?, 0, ?, 'cheap', '[\"cheap\"]', ?, 'w', ?)",
            ((f"{'a' if n % 50 == 0 else 'g'}{n:031d}", "acme" if n % 50 == 0 else "globex",
              vector, f"{n:064x}") for n in range(rows + 255)))


def measure(rows: int, repeat: int) -> dict[str, float]:
    from switchpoint.gateway.open_decisions import OpenDecisions
    from switchpoint.store import SQLiteStore
    from switchpoint.store.learning import (
        _PENDING_COLUMNS,
        LearningReader,
        PendingForget,
    )
    from switchpoint.store.sqlite import keep_newest

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "switchpoint.db"
        _filled(path, rows)
        store = SQLiteStore(path).open()  # (its reader keeps its connections, as a service's)
        reader = LearningReader(path, store.gone)
        state: Any = SimpleNamespace()  # (the read names its capacity: no settings read)
        feedback_log: Any = SimpleNamespace(reader=reader)
        fake = OpenDecisions(state, store, feedback_log)
        t0 = time.perf_counter()
        fake.holds("x", rows)  # the first need: the table read
        out = {"read_ms": (time.perf_counter() - t0) * 1e3}
        # (held by both rules: the oldest globex row the rule before keeps, and the newest)
        at_bound = next(f"g{n:031d}" for n in range(255, rows) if n % 50
                        and fake.holds(f"g{n:031d}", rows))
        newest = f"g{rows + 254:031d}"
        read = f"SELECT {', '.join(_PENDING_COLUMNS)} FROM pending WHERE decision_id = ?"

        def before(decision_id: str) -> object:  # (the row's read, as the reader's, either way)
            return reader._one(f"{read} AND {_AMONG_NEWEST}", (decision_id, rows, rows - 1))

        def fair(decision_id: str) -> object:
            return fake.holds(decision_id, rows) and reader._one(read, (decision_id,))

        for label, decision_id in (("bound", at_bound), ("newest", newest)):
            out[f"before_{label}_us"] = median_time(functools.partial(before, decision_id),
                                                    repeat).seconds.median * 1e6
            out[f"after_{label}_us"] = median_time(functools.partial(fair, decision_id),
                                                   repeat).seconds.median * 1e6
        let_go = tuple(fake._let_go[:256])

        def timed(insert: str, row: tuple[Any, ...]) -> float:
            with sqlite3.connect(path) as conn:
                conn.execute("BEGIN")
                t0 = time.perf_counter()
                conn.execute(insert, row)
                spent = time.perf_counter() - t0
                conn.rollback()
            return spent * 1e3

        assert len(let_go) == 255 and all(reader.pending(d) for d in (at_bound, newest))
        out["prune_before_ms"] = statistics.median(
            timed(keep_newest("pending"), (rows,)) for _ in range(5))
        out["prune_after_ms"] = statistics.median(
            timed(PendingForget.insert, PendingForget(let_go).row()) for _ in range(5))
        reader.close()
        store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    print(f"{'rows':>8} {'lookup at the bound us':>24} {'lookup newest us':>18} "
          f"{'prune ms':>16} {'first read ms':>14}")
    print(f"{'':>8} {'before / fair':>24} {'before / fair':>18} {'before / fair':>16}")
    for rows in args.rows:
        r = measure(rows, args.repeat)
        print(f"{rows:>8} {r['before_bound_us']:>11.0f} / {r['after_bound_us']:<10.0f} "
              f"{r['before_newest_us']:>7.0f} / {r['after_newest_us']:<8.0f} "
              f"{r['prune_before_ms']:>6.2f} / {r['prune_after_ms']:<7.2f} "
              f"{r['read_ms']:>14.1f}")


if __name__ == "__main__":
    main()
