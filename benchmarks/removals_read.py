"""Reading a restored database as the next start leaves it, with a full removals journal
beside it (``switchpoint.removals.jsonl``, 1 MiB of some 10,000 removals): ``switchpoint
models list --json`` run in this process, and one reader's ``runtime_models()``.

Each is measured three ways in the same process, in turn: with the journal's removals held
from an earlier read (the file unchanged since), with nothing held (as in a fresh process:
``models list`` parses the journal once where it parsed it at each of its three reads), and
with an empty journal beside the database (the floor). 20 models are registered in the
database; the journal removes none of them, so all of it is read.

Usage: python benchmarks/removals_read.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import median_time

from switchpoint.cli import main
from switchpoint.store import SQLiteStore, removals
from switchpoint.store.learning import LearningReader, RuntimeModelRecord
from switchpoint.store.removals import MAX_REMOVALS_BYTES, MODEL, REMOVALS_FILENAME, Removal

CONFIG = """models:
  - {name: strong, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 10, output_per_mtok: 10}
  - {name: cheap, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 1, output_per_mtok: 1}
data_dir: DATA
"""


def full_journal() -> bytes:
    """Removals of names none registered, up to the journal's bound."""
    out: list[bytes] = []
    size, i = 0, 0
    while True:
        line = Removal(MODEL, f"gone-{i:06d}-" + "x" * 50, 100.0, 200.0).line()
        if size + len(line) > MAX_REMOVALS_BYTES - 100:
            return b"".join(out)
        out.append(line)
        size += len(line)
        i += 1


def run(repeats: int) -> None:
    logging.disable(logging.WARNING)  # (a journal naming no registered model says nothing)
    tmp = Path(tempfile.mkdtemp(prefix="sp-removals-"))
    data = tmp / "data"
    data.mkdir()
    config = tmp / "switchpoint.yaml"
    config.write_text(CONFIG.replace("DATA", str(data)), encoding="utf-8")
    db = data / "switchpoint.db"
    with SQLiteStore(db, logs=False).open() as store:
        for i in range(20):
            store.append(RuntimeModelRecord(f"model-{i}", 1000.0, "{}")).result()
    journal = data / REMOVALS_FILENAME
    full = full_journal()

    def models_list() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            if main(["models", "list", "--json", "--config", str(config)]) != 0:
                raise SystemExit("switchpoint models list failed")

    reader = LearningReader(db)

    def fresh(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            removals._read.clear()  # (nothing held: a fresh process)
            return fn()
        return call

    print(f"journal: {len(full):,} bytes; median (least..most) ms of {repeats} calls")
    print(f"{'read':<28}{'held':>22}{'nothing held':>22}{'empty journal':>22}")
    for name, fn in (("models list --json", models_list),
                     ("reader.runtime_models()", reader.runtime_models)):
        figures = []
        for content, call in ((full, fn), (full, fresh(fn)), (b"", fn)):
            journal.write_bytes(content)
            call()  # (warmed)
            s = median_time(call, repeats).seconds
            figures.append(f"{s.median * 1000:.1f} ({s.least * 1000:.1f}..{s.most * 1000:.1f})")
        print(f"{name:<28}" + "".join(f"{f:>22}" for f in figures))
    reader.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    run(parser.parse_args().repeats)
