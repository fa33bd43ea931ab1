"""Parts of the suite that run side by side, one pytest process each (``scripts/test`` runs
three on a machine's two cores): most tests spend their time waiting on the servers and
processes they start, so the parts at once take little more than the longest part.

``pytest --shard I/N`` collects the test files of part ``I`` of ``N`` alone: the others are not
imported (each part rewrites the asserts of its own files, which is most of what collecting the
suite costs). A file stays whole (its module-scoped servers start once), and the files are
dealt out by their recorded durations (``tests/durations.json``, seconds per file): the
longest first, each to the part with the least time so far. A file without a recorded duration
counts as the median one. The files dealt out are those the run's paths name: each file
named, and in each folder named the files pytest collects (``python_files``). The parts cover
every file once, whatever the durations say, so stale figures only cost balance. ``pytest
--record-durations PATH`` writes a run's figures for the files it ran (setup, call and
teardown of each test), merged into those already in ``PATH``.
"""

from __future__ import annotations

import fnmatch
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
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


def files_to_deal(args: Iterable[str], where: Path, root: Path,
               patterns: Sequence[str] = ("test_*.py",)) -> list[str]:
    """The test files a run of pytest with ``args`` (paths or node ids, from ``where``) takes,
    by their paths from ``root`` as node ids spell them: each file named, and in each folder
    named those whose name matches one of ``patterns``, outside folders starting with a dot."""
    found: set[Path] = set()
    for arg in args:
        path = (where / file_of(arg)).resolve()
        if path.is_dir():
            found.update(
                f for f in path.rglob("*.py")
                if any(fnmatch.fnmatch(f.name, p) for p in patterns)
                and not any(part.startswith(".") for part in f.relative_to(path).parts))
        elif path.is_file():
            found.add(path)
    return sorted(
        f.relative_to(root).as_posix() if f.is_relative_to(root) else f.as_posix()
        for f in found)


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
