"""Parts of the suite that run side by side, one pytest process each (``scripts/test`` runs
two on a machine's two cores): most tests spend their time waiting on the servers and
processes they start, so two halves at once take little more than the longer half.

``pytest --shard I/N`` keeps the test files of part ``I`` of ``N`` and deselects the rest. A
file stays whole (its module-scoped servers start once), and the files are dealt out by their
recorded durations (``tests/durations.json``, seconds per file): the longest first, each to the
part with the least time so far. A file without a recorded duration counts as the median one.
The parts cover every file once, whatever the durations say, so stale figures only cost
balance. ``pytest --record-durations PATH`` writes a run's figures for the files it ran
(setup, call and teardown of each test), merged into those already in ``PATH``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

DURATIONS = Path(__file__).with_name("durations.json")


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` as ``(I, N)``, with ``1 <= I <= N``."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = 0, 0
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: write I/N with 1 <= I <= N, e.g. 1/2")
    return i, n


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    """Seconds per test file, by its path from the repository root; empty without the file."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(name): float(seconds) for name, seconds in loaded.items()}


def assign(files: Sequence[str], durations: Mapping[str, float], count: int) -> dict[str, int]:
    """Each file's part, 1 to ``count``: the longest file first, each to the part with the
    least time so far (among equals, the one with the fewest files, then the lowest-numbered).
    A file without a recorded duration weighs the median of those recorded. Deterministic in
    its arguments."""
    typical = statistics.median(durations.values()) if durations else 1.0
    weight = {name: durations.get(name, typical) for name in files}
    load = [0.0] * count
    held = [0] * count
    part: dict[str, int] = {}
    for name in sorted(set(files), key=lambda f: (-weight[f], f)):
        lightest = min(range(count), key=lambda k: (load[k], held[k], k))
        part[name] = lightest + 1
        load[lightest] += weight[name]
        held[lightest] += 1
    return part


def file_of(nodeid: str) -> str:
    """The file part of a test's node id (``tests/unit/test_x.py::test_y[1]``)."""
    return nodeid.split("::", 1)[0]


def merge_durations(path: Path, seconds: Mapping[str, float]) -> None:
    """Write ``seconds`` (per file) into ``path`` over the figures already there, sorted, and
    atomically (a reader never meets half a file)."""
    merged = {**read_durations(path), **{name: round(s, 2) for name, s in seconds.items()}}
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n",
                       encoding="utf-8")
    scratch.replace(path)
