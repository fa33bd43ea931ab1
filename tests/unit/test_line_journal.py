"""The line journal kept beside a database (``switchpoint.store.line_journal``): its append
ends a cut last line, its bound folds then halves, its take-back takes a whole line only, and
its reading names the lines it passes over. Real files in ``tmp_path``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from switchpoint.store.line_journal import LineJournal, line_of


def journal(path: Path, max_bytes: int = 10_000) -> LineJournal:
    return LineJournal(path, max_bytes, "a number", "no number it keeps is used",
                       lambda lines: [raw for raw in lines if b'"n":0' not in raw])


def numbers(path: Path) -> list[int]:
    return journal(path).read(lambda item: item.get("n") if isinstance(item, dict) else None)


def test_an_entry_appended_after_a_cut_line_is_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(line_of({"n": 1}) + line_of({"n": 2})[:-3])
    journal(path).append(line_of({"n": 3}))
    assert path.read_bytes().splitlines()[-1] == b'{"n":3}'
    assert numbers(path) == [1, 3]


def test_past_its_bound_the_fold_goes_first_then_the_older_half(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    for n in [0] * 10 + list(range(1, 40)):
        journal(path, 300).append(line_of({"n": n}))
        assert path.stat().st_size <= 300
    kept = numbers(path)
    assert 0 not in kept and kept[-1] == 39 and kept == sorted(kept)
    assert not list(tmp_path.glob("j.jsonl.*"))  # (no temporary file left)


def test_take_back_takes_the_last_whole_line_only(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    line = line_of({"n": 7})
    path.write_bytes(b"junk" + line + line_of({"n": 8}) + line + line_of({"n": 9}))
    journal(path).take_back(line)
    assert path.read_bytes() == b"junk" + line + line_of({"n": 8}) + line_of({"n": 9})
    path.write_bytes(b"junk" + line)
    journal(path).take_back(line)  # (no line of its own: left)
    assert path.read_bytes() == b"junk" + line


def test_lines_that_hold_no_entry_are_named_and_empty_ones_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(line_of({"n": 1}) + b"\n" + b"{oops\n" + line_of({"m": 2})
                     + json.dumps({"n": 4}).encode() + b"," + line_of({"n": 5}))
    with caplog.at_level(logging.WARNING):
        assert numbers(path) == [1]
    assert "j.jsonl: passed over line(s) 3, 4, 5: not a number (a damaged file)" in caplog.text
