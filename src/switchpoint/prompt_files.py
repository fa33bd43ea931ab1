"""Prompt files (``route --input``, ``label``): one prompt per line, or JSONL when the first
non-blank line starts with ``{``. Blank lines are skipped wherever they are; a byte order mark
at the start of the file (as some editors save UTF-8) is not part of the first line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

BOM = "\ufeff"


def prompt_lines(lines: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    """``(line number from 1, the raw line, whether the file is JSONL)`` for each non-blank
    line; the format is decided by the first non-blank line."""
    jsonl: bool | None = None
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(BOM)
        if not raw.strip():
            continue
        if jsonl is None:
            jsonl = raw.lstrip().startswith("{")
        yield number, raw, jsonl
