"""What JSON text can carry that Python's ``json`` reads but the rest of switchpoint cannot use:
an integer too long to convert (more than 4300 digits), an integer too large for a float, a lone
surrogate (an unpaired ``\\ud800``-``\\udfff`` escape, which is not Unicode text), arrays or
objects nested deeper than Python's recursion limit (which ``json`` cannot read at all), and a
key written twice in one object (which ``json`` reads as the last, dropping the first without a
word). Readers of users' files go through these, so each becomes an error naming the line, not
a traceback or a silently different value."""

from __future__ import annotations

import json
import math
import numbers
import re
import sys
from typing import Any, SupportsFloat

from switchpoint._messages import cut, json_quoted

# A surrogate escape in JSON text (paired or not): text without one cannot hold a lone surrogate.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
LONE_SURROGATE = ("holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not "
                  "valid Unicode text")


# The bytes of JSON text that tell its nesting, each as one signed byte: a quote 0 (it opens or
# closes a string, whose brackets open nothing), an opening bracket +1, a closing one -1;
# every other byte deleted.
_STRUCTURE_BYTES = bytes.maketrans(b'"[{]}', b"\x00\x01\x01\xff\xff")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[{]}')


def nests_deeper(text: str | bytes, most: int) -> bool:
    """Whether the arrays and objects of ``text``, JSON already read as valid, nest deeper than
    ``most`` levels (a top-level object or array is one), told without reading it again and at
    C speed: its escapes taken out (a string then holds no quote of its own), its quotes and
    brackets kept, and the brackets outside strings counted in order. Text with at most
    ``most`` brackets in all is told at once."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    elif json.detect_encoding(text) not in ("utf-8", "utf-8-sig"):  # (UTF-16 or -32)
        text = text.decode(json.detect_encoding(text), "surrogatepass").encode(
            "utf-8", "surrogatepass")
    if text.count(b"[") + text.count(b"{") <= most:
        return False
    # (escapes read from the left, as a reader reads them: a backslash's pair first, then an
    # escaped quote; no other escape holds a quote)
    bare = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    import numpy as np  # (here alone: text this deep is rare, and NumPy costs any start 0.1 s)

    marks = np.frombuffer(bare.translate(_STRUCTURE_BYTES, _NOT_STRUCTURE), dtype=np.int8)
    outside = np.cumsum(marks == 0) % 2 == 0  # (a string's own brackets follow an odd count)
    steps = np.where(outside, marks, 0).cumsum(dtype=np.int64)
    return bool(steps.size) and int(steps.max()) > most


class DuplicateKeyError(json.JSONDecodeError):
    """A key written twice in one JSON object (the text is valid JSON, but ambiguous)."""


class UnusableJSONError(json.JSONDecodeError):
    """JSON text that :func:`loads` will not read whole (an integer too long to convert,
    nesting too deep): its message says why, at no one place in the text."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's key/value pairs as a dict (an ``object_pairs_hook``), refusing a key written
    twice with :class:`DuplicateKeyError` naming it."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"the key {cut(json.dumps(key), 80)} is written twice "
                                        "in one object; keep one", "", 0)
            seen.add(key)
    return obj


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """:func:`json.loads`, where an integer too long to convert, arrays and objects nested
    deeper than Python's recursion limit, or a key written twice in one object (unless
    ``object_pairs_hook`` says otherwise: :class:`DuplicateKeyError`) raise
    :class:`json.JSONDecodeError` (its ``msg`` says so), like any other unreadable JSON."""
    kwargs.setdefault("object_pairs_hook", unique_keys)

    def parse_int(digits: str) -> int:
        try:
            return int(digits)
        except ValueError:
            raise UnusableJSONError(f"a number of {len(digits.lstrip('-'))} digits is too "
                                    "long to read", digits, 0) from None

    try:
        return json.loads(text, parse_int=parse_int, **kwargs)
    except RecursionError:
        raise UnusableJSONError("arrays or objects nested too deeply to read", "", 0) from None


def too_long(digits: str) -> bool:
    """Whether the JSON integer ``digits`` has more digits than Python reads (4300 by
    default: ``int()`` refuses more, and reading that many is slow). A number with a fraction
    or an exponent is no integer, however long it is written (``0.000…1`` of 5000 zeros reads
    as a float: too small to be told from 0, not an integer of 5002 digits)."""
    most = sys.get_int_max_str_digits()
    bare = digits.lstrip("-")
    return bool(most) and len(bare) > most and bare.isascii() and bare.isdigit()


def unreadable(exc: json.JSONDecodeError) -> str:
    """What an error from :func:`loads` says of the text: ``not valid JSON (why)``, or for a key
    written twice, which is valid JSON, just that. A syntax error says where it is (``at
    column 13``, or ``at line 2, column 13`` in text of several lines), since a line may be
    megabytes long; a control character written raw inside a string is named, with the escape
    that writes it."""
    if isinstance(exc, DuplicateKeyError):
        return exc.msg
    if isinstance(exc, UnusableJSONError):
        return f"not valid JSON ({exc.msg})"
    where = (f"column {exc.colno:,}" if exc.lineno == 1
             else f"line {exc.lineno:,}, column {exc.colno:,}")
    if exc.msg.startswith("Invalid control character") and exc.pos < len(exc.doc):
        code = ord(exc.doc[exc.pos])
        return (f"not valid JSON (a control character, U+{code:04X}, written as it is inside a "
                f"string at {where}; write it as the escape \\u{code:04x}, or remove it)")
    msg = exc.msg.removesuffix(" at")  # Python's own ends some with "at", its place cut off
    return f"not valid JSON ({msg} at {where})"


def as_float(value: SupportsFloat) -> float:
    """``value`` as a float; an integer too large for one is infinite (so a finiteness check
    refuses it)."""
    try:
        return float(value)
    except OverflowError:  # (by its sign: its digits may be too many even to print)
        negative = (value < 0 if isinstance(value, numbers.Real)
                    else str(value).lstrip().startswith("-"))
        return -math.inf if negative else math.inf


def plain_str(text: str) -> str:
    """The characters ``text`` holds, as a ``str`` itself: a subclass of ``str`` (a NumPy
    string, or one whose ``__len__``, ``__str__``, ``encode``, ``__eq__`` or ``__hash__`` say
    something else) is copied, so the length bounded, the text hashed and the key kept are
    those characters, whatever its methods answer."""
    return text if type(text) is str else str.__str__(text)


def lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_kind(value: object) -> str:
    """What a decoded JSON value is, as a message names it (``null``, ``a list``, ``the
    number 1.5``), its content not shown past a number."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {json_quoted(value)}"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    return "a list" if isinstance(value, list) else "an object"
