"""The bound on a request's size, one rule for both doors: a request whose body is over
``max_request_bytes`` is refused before anything is done with it.

The HTTP door counts the bytes of a body as it reads them (:mod:`switchpoint.server.middleware`
answers a 413). The in-process door (``Gateway.complete``, ``stream``, ``route``, ...) has no
bytes to count, so :func:`check_body_size` measures the body the HTTP door would have received
for the same call: its fields written as compact JSON in UTF-8, the shortest body any client
could send for them. A call over the limit is an
:class:`~switchpoint.errors.InvalidInputError` naming the argument that holds most of it,
before it is logged, charged or sent: what one door refuses, the other refuses too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from switchpoint._numbers import numpy_scalar
from switchpoint.errors import InvalidInputError

#: The setting that bounds a request's body, at both doors.
SETTING = "max_request_bytes"
# A long list (of messages, say) is measured this many items at a time, so one far over the
# limit is refused once the part measured passes it, not after all of it is written out.
_CHUNK = 1024
#: What a request over the limit is told to do, at either door, when it is mostly a prompt.
PROMPT_ADVICE = ("A prompt or embedding that large cannot be routed: send the end of a long "
                  "prompt (the router reads only its last part)")


def too_large(what: str, limit: int, advice: str) -> str:
    """The reason a request over ``limit`` is refused: ``what`` is what was over it, with its
    size ("the request body is 2000000 bytes, over"), then ``advice``."""
    return f"{what} the limit of {limit} bytes ({SETTING} in the config). {advice}"


def check_body_size(body: Mapping[str, Any], limit: int, advice: str) -> None:
    """Refuse ``body`` (a request's fields as Python values, each named by the argument that
    gave it) when, written as the JSON body the HTTP door would receive, it is over ``limit``
    bytes: an :class:`InvalidInputError` naming the field holding the most bytes, with
    ``advice`` (how to send less) and how to raise the limit. A value JSON cannot hold is
    measured as its text (whether it may be sent at all is for the checks of the body to
    say)."""
    total = 2 + max(len(body) - 1, 0)  # the braces, the commas between fields
    sizes: dict[str, int] = {}
    cut: set[str] = set()  # the fields measured only in part
    for name, value in body.items():
        size, whole = _json_bytes(value, max(limit - total, 0))
        sizes[name] = _dumped(name) + 1 + size  # "name":value
        total += sizes[name]
        if not whole:
            cut.add(name)
    if total <= limit:
        return
    field = max(sizes, key=lambda name: sizes[name])
    raise InvalidInputError(field, too_large(
        f"the request, as the JSON body the HTTP door would receive, is "
        f"{'at least ' if cut else ''}{total} bytes ({field} holds "
        f"{'at least ' if field in cut else ''}{sizes[field]} of them), over", limit,
        f"{advice}, or raise {SETTING} in the config (at most 1 GiB)"))


def _json_bytes(value: object, room: int) -> tuple[int, bool]:
    """How many bytes ``value`` takes as compact JSON in UTF-8, and whether that is all of it:
    a long list is measured a part at a time, and once the parts pass ``room`` what they took
    so far is answered (a string, however long, is written out at once: that is quick)."""
    if isinstance(value, (list, tuple)) and len(value) > _CHUNK:
        total = 1  # the opening bracket
        for start in range(0, len(value), _CHUNK):  # (each part's items, and one comma or
            total += _dumped(list(value[start:start + _CHUNK])) - 1  # the closing bracket)
            if total > room and start + _CHUNK < len(value):
                return total, False
        return total, True
    return _dumped(value), True


def _dumped(value: object) -> int:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_text)
    except (ValueError, RecursionError):  # (a circular or too deep value: the checks of the
        return 0                          # body refuse it, naming where)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _text(value: object) -> object:
    """A value JSON cannot hold, as it is measured: a NumPy number as the number it holds (as
    the body is sent), else its ``str``, or its type's name when that raises (the checks of
    the body refuse it anyway, naming the field)."""
    scalar = numpy_scalar(value)
    if scalar is not None:
        return scalar
    try:
        return str(value)
    except Exception:  # (whatever a caller's __str__ raises)
        return type(value).__name__
