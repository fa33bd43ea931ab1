"""Prompt files (``route --input``, ``label``): one prompt per line, or JSONL when the first
non-blank line starts with ``{``. Blank lines are skipped wherever they are; a byte order mark
at the start of the file (as some editors save UTF-8) is not part of the first line. A file
holds at most :data:`MAX_PROMPT_LINES` prompts of at most :data:`MAX_LINE_CHARS` characters a
line: everything is checked before anything is routed or labelled, so it is all held at once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TextIO

BOM = "\ufeff"
MAX_PROMPT_LINES = 1_000_000
MAX_LINE_CHARS = 8 << 20
#: The decoding errors a prompt or records file is read with: a byte that is not UTF-8 is
#: read as a lone surrogate, so the line it is on is named (see :func:`not_utf8`) where a
#: strict read would fail on the block of the file it is in, lines ahead of it.
ENCODING_ERRORS = "surrogateescape"
_ESCAPED = re.compile("[\udc80-\udcff]")


class PromptFileError(ValueError):
    """A prompt file past its bounds, or not UTF-8 text: what is wrong with its line ``line``
    (from 1), which the message does not name (its caller does, with the file)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def not_utf8(line: str) -> str | None:
    """Why ``line``, read with :data:`ENCODING_ERRORS`, is not UTF-8 text (naming its first
    byte that is not, and where in the line it is), or None when it is."""
    found = _ESCAPED.search(line)
    if found is None:
        return None
    offset = len(line[:found.start()].encode("utf-8", ENCODING_ERRORS))
    value = ord(line[found.start()]) - 0xDC00
    return (f"is not UTF-8 text (byte 0x{value:02X} at byte {offset + 1} of the line); save "
            "the file as UTF-8")


def bounded_lines(stream: TextIO) -> Iterator[str]:
    """The lines of ``stream``, none held past :data:`MAX_LINE_CHARS` characters (a longer one
    raises :class:`PromptFileError` once that much of it is read), each UTF-8 text (one that
    is not, read with :data:`ENCODING_ERRORS`, raises it too)."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise PromptFileError(f"is over {MAX_LINE_CHARS:,} characters, the most a line "
                                  "may hold; shorten it (in JSONL, whichever field is long: "
                                  "the prompt, a reference, an embedding)", number)
        bad = not_utf8(line)
        if bad is not None:
            raise PromptFileError(bad, number)
        yield line


def blank_file(lines: int) -> str:
    """What a file of ``lines`` lines, each blank, is told when it holds nothing to read."""
    if lines == 0:
        return "the file is empty"
    return f"the file's {lines:,} line{'s are' if lines > 1 else ' is'} blank"


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
