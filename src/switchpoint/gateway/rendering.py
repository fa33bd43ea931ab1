"""Writing an answer's JSON as the bytes a client is sent, off the event loop when it is large.

An answer (or a stream's chunk) whose JSON is longer than
:data:`~switchpoint.gateway.providers._http.OFF_LOOP_BYTES` is written on the worker threads
that read it from the upstream, a piece of about that length at a time
(:func:`json_pieces`): one piece is one call of the JSON encoder, which holds the GIL, so the
event loop gets it between pieces and serves other requests meanwhile (4 MiB written in one
call held it some 50 ms, wherever it ran). Shorter JSON, nearly every answer and chunk, is
written at once, as ever, its length counted from the answer up to that threshold and no
further (:func:`json_length`). The bytes are the same either way."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from switchpoint.gateway.providers._http import OFF_LOOP_BYTES, on_worker

#: Writes one JSON value compactly (no spaces: ``,`` between items, ``:`` after a key) as bytes.
Render = Callable[[Any], bytes]

# The least a scalar other than a string takes written as JSON (null, true; a number 1).
_NULLISH = 4


def json_length(value: Any, most: int) -> int:
    """A lower bound of the length of ``value`` written as JSON (the values a JSON reading
    gives: dicts, lists, strings, numbers, booleans, None), counted until it passes ``most``
    (so a large answer costs no more to count than one of ``most``)."""
    length = 0
    stack = [value]
    while stack and length <= most:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            length += len(item) + 2
        elif kind is int or kind is float:
            length += 1
        elif isinstance(item, dict):
            length += 1 + 4 * len(item)  # (braces, quotes, colons and commas)
            if length <= most:  # (else it is not looked into: it is past most already)
                try:
                    keys = sum(map(len, item))
                except TypeError:  # (a key not a string: the keys count none)
                    keys = 0
                length += keys
                if length <= most:
                    stack.extend(item.values())
        elif isinstance(item, list | tuple):
            length += 1 + len(item)  # (brackets and commas)
            if length <= most:
                stack.extend(item)
        elif isinstance(item, str):
            length += len(item) + 2
        elif item is None or item is True or item is False:
            length += _NULLISH
        else:
            length += 1
    return length


def is_large(value: Any) -> bool:
    """Whether ``value``'s JSON is longer than ``OFF_LOOP_BYTES`` (:func:`render_off_loop`
    writes it on a worker thread)."""
    return json_length(value, OFF_LOOP_BYTES) > OFF_LOOP_BYTES


async def render_off_loop(value: Any, render: Render) -> bytes:
    """``render(value)`` (raising as it does): on a worker thread, a piece at a time
    (:func:`json_pieces`), when ``value``'s JSON is longer than ``OFF_LOOP_BYTES``, the event
    loop free meanwhile; else at once."""
    if not is_large(value):
        return render(value)
    return await on_worker(functools.partial(_joined, render=render), value)


def _joined(value: Any, *, render: Render) -> bytes:
    return b"".join(json_pieces(value, render))


def json_pieces(value: Any, render: Render) -> Iterator[bytes]:
    """The bytes ``render(value)`` gives, in pieces: a large dict (string keys) or list one
    member, or run of members, at a time, each run's length about ``OFF_LOOP_BYTES`` (the
    next run's count scaled by the last one's length). A run of small members holding a large
    one is written in one piece."""
    if isinstance(value, dict) and is_large(value) and all(isinstance(k, str) for k in value):
        yield b"{"
        for i, (key, item) in enumerate(value.items()):
            yield (b"," if i else b"") + render(key) + b":"
            yield from json_pieces(item, render)
        yield b"}"
    elif isinstance(value, list | tuple) and is_large(value):
        yield b"["
        yield from _members(value, render)
        yield b"]"
    else:
        yield render(value)


def _members(items: Sequence[Any], render: Render) -> Iterator[bytes]:
    start, count = 0, 1
    while start < len(items):
        comma = b"," if start else b""
        if count == 1 and is_large(items[start]):
            yield comma
            yield from json_pieces(items[start], render)
            start += 1
            continue
        piece = render(list(items[start:start + count]))[1:-1]  # (without its brackets)
        yield comma + piece
        start += count
        count = max(1, min(2 * count, count * OFF_LOOP_BYTES // max(len(piece), 1)))
