"""Prompt files (``route --input``, ``label``): one prompt per line, or JSONL when the first
non-blank line starts with ``{``. Blank lines are skipped wherever they are; a byte order mark
at the start of the file (as some editors save UTF-8) is not part of the first line. A file
holds at most :data:`MAX_PROMPT_LINES` prompts of at most :data:`MAX_LINE_CHARS` characters a
line: everything is checked before anything is routed or labelled, so it is all held at once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TextIO

BOM = "\ufeff"
MAX_PROMPT_LINES = 1_000_000
MAX_LINE_CHARS = 8 << 20


class PromptFileError(ValueError):
    """A prompt file past its bounds: what is wrong with its line ``line`` (from 1), which
    the message does not name (its caller does, with the file)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def bounded_lines(stream: TextIO) -> Iterator[str]:
    """The lines of ``stream``, none held past :data:`MAX_LINE_CHARS` characters (a longer one
    raises :class:`PromptFileError` once that much of it is read)."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise PromptFileError(f"is over {MAX_LINE_CHARS:,} characters; shorten that "
                                  "prompt", number)
        yield line


def prompt_lines(lines: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    """``(line number from 1, the raw line, whether the file is JSONL)`` for each non-blank
    line; the format is decided by the first non-blank line."""
    jsonl: bool | None = None
    count = 0
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(BOM)
        if not raw.strip():
            continue
        count += 1
        if count > MAX_PROMPT_LINES:
            raise PromptFileError(f"is past the {MAX_PROMPT_LINES:,} prompts a file may "
                                  "hold; split it into smaller files", number)
        if jsonl is None:
            jsonl = raw.lstrip().startswith("{")
        yield number, raw, jsonl
