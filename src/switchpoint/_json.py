"""What JSON text can carry that Python's ``json`` reads but the rest of switchpoint cannot use:
an integer too long to convert (more than 4300 digits), an integer too large for a float, a lone
surrogate (an unpaired ``\\ud800``-``\\udfff`` escape, which is not Unicode text), and arrays or
objects nested deeper than Python's recursion limit (which ``json`` cannot read at all). Readers
of users' files go through these, so each becomes an error naming the line, not a traceback."""

from __future__ import annotations

import json
import math
from typing import Any, SupportsFloat

LONE_SURROGATE = ("holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not "
                  "valid Unicode text")


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """:func:`json.loads`, where an integer too long to convert, or arrays and objects nested
    deeper than Python's recursion limit, raise :class:`json.JSONDecodeError` (its ``msg``
    says so), like any other unreadable JSON."""
    def parse_int(digits: str) -> int:
        try:
            return int(digits)
        except ValueError:
            raise json.JSONDecodeError(f"a number of {len(digits.lstrip('-'))} digits is too "
                                       "long to read", digits, 0) from None

    try:
        return json.loads(text, parse_int=parse_int, **kwargs)
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply to read", "", 0) from None


def as_float(value: SupportsFloat) -> float:
    """``value`` as a float; an integer too large for one is infinite (so a finiteness check
    refuses it)."""
    try:
        return float(value)
    except OverflowError:
        return -math.inf if str(value).lstrip().startswith("-") else math.inf


def shown_number(value: object) -> str:
    """``value`` as an error message shows it: an integer too large for a float by its
    length (not its thousands of digits), anything else as written."""
    if isinstance(value, int) and not isinstance(value, bool) and not math.isfinite(
            as_float(value)):
        return f"a number of {len(str(abs(value)))} digits"
    return repr(value)


def lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
