"""The committed RouterBench sample: its layout, which the tests and the README rely on, and (with
the full records present) that every line is a verbatim line of the full file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from switchpoint.records import load_records
from tests.data.build_sample import LAYOUT, OUT, select

MAX_BYTES = 1_000_000


def test_sample_is_small_and_valid_records() -> None:
    assert OUT.stat().st_size < MAX_BYTES
    records = load_records(OUT)
    assert len(records) == sum(count for _, _, count in LAYOUT) == 370
    assert len(records.models) == 11
    assert Counter(records.splits) == {"test": 180, "train": 190}
    assert set(records.tasks) == {"arc-challenge", "mbpp", "winogrande"}


def test_sample_starts_with_the_block_the_tests_read() -> None:
    # conftest's small_lines: the first 120 lines, all ARC-Challenge in the test split.
    assert LAYOUT[0] == ("arc-challenge", "test", 120)
    with OUT.open(encoding="utf-8") as fh:
        first = [json.loads(next(fh)) for _ in range(120)]
    assert {(r["task"], r["split"]) for r in first} == {("arc-challenge", "test")}
    assert first[0]["id"] == "arc-challenge.test.1"


def test_sample_is_a_verbatim_subset_of_the_full_file(shared_data: Path) -> None:
    with (shared_data / "routerbench-3task.jsonl").open(encoding="utf-8") as fh:
        expected = select(fh.readlines())
    assert OUT.read_text(encoding="utf-8") == "".join(expected)
