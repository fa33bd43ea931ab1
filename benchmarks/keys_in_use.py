"""How long the check that keys.db is the file in use takes over a busy request log
(:meth:`~switchpoint.governance.keys.KeyStore.check_in_use`, run before a start with keys, ``keys
create``, the reports and a service's first use of its keys open the file).

A data_dir's request log is filled with ``--requests`` requests of the last week, each of one of
``--keys`` keys, and a keys.db is made that holds them. Then, in the same process, the median of
``--repeats`` checks of:

1. the file in use (its latest time now): the log's range after it is empty;
2. an older backup of it (its latest time two days ago, lacking the keys made since): refused;
3. an empty file put in its place: refused, the whole log read.

Usage: python benchmarks/keys_in_use.py [--requests 300000] [--keys 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from _common import median_time

from switchpoint.errors import StoreError
from switchpoint.governance.keys import KEYS_FILENAME, KeySpec, KeyStore, logged_keys
from switchpoint.store import RequestRecord, SQLiteStore

NOW = time.time()
WEEK = 7 * 86_400.0


def fill(db: Path, n: int, ids: list[str]) -> None:
    """``n`` requests of the last week, each of one of the keys ``ids`` (the first half made
    over two days ago, the rest since)."""
    SQLiteStore(db).open().close()  # the schema
    rng = random.Random(0)
    conn = sqlite3.connect(db)
    batch = []
    half = len(ids) // 2
    start = NOW - WEEK
    for i in range(n):  # (logged in the order of their time, as a service logs them)
        ts = start + WEEK * i / n
        late = ts > NOW - 2 * 86_400.0
        key = ids[rng.randrange(len(ids))] if late else ids[rng.randrange(half)]
        batch.append(RequestRecord(
            id=f"r{i}", ts=ts, requested_model="auto", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=100.0, model="m", key_id=key,
            tenant="acme").row())
        if len(batch) == 10_000 or i == n - 1:
            conn.executemany(RequestRecord.insert, batch)
            conn.commit()
            batch = []
    conn.close()


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, str]:
    """Seconds of ``fn``'s median call of ``repeats``, and whether its last call was taken or
    refused (a StoreError, timed too)."""

    def attempt() -> str:
        try:
            fn()
        except StoreError:
            return "refused"
        return "taken"

    timing = median_time(attempt, repeats)
    return timing.seconds.median, timing.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        path = data / KEYS_FILENAME
        older = data / "older.db"
        with KeyStore(path) as keys:
            ids = [keys.create(KeySpec(tenant="acme")).record.id for _ in range(args.keys)]
        fill(data / "switchpoint.db", args.requests, ids)
        with sqlite3.connect(path) as src, sqlite3.connect(older) as dst:
            src.backup(dst)
            dst.execute("DELETE FROM keys WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(ids[len(ids) // 2:]),))
            dst.execute("UPDATE clock SET latest = ?", (NOW - 2 * 86_400,))
        src.close()
        dst.close()
        empty = data / "empty.db"
        empty.write_bytes(b"")
        logged = partial(logged_keys, data / "switchpoint.db")
        print(f"{args.requests:,} requests of {args.keys} keys over a week")
        print(f"{'keys.db checked':40} {'median (ms)':>12} {'outcome':>9}")
        for name, file in [("the file in use", path), ("an older backup (two days)", older),
                           ("an empty file", empty)]:
            seconds, outcome = timed(partial(KeyStore(file).check_in_use, logged),
                                     args.repeats)
            print(f"{name:40} {seconds * 1e3:12.1f} {outcome:>9}")


if __name__ == "__main__":
    main()
