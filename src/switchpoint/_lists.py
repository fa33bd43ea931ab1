"""The one reading of a comma-separated list, wherever one is given as text: every command
line option that takes one (``--models``, ``--budget``, ``--cost-weights``), the
``x-switchpoint-models`` request header, and the library's ``models`` given as a string. It
imports only the messages' helpers, so the core, the gateway and the command line read a list
by the same rule without depending on one another."""

from __future__ import annotations

from switchpoint._messages import json_quoted


def comma_items(text: str, noun: str, example: str, leave_out: str = "", *,
                none_ok: bool = False) -> list[str]:
    """``text``, a comma-separated list, as its items, the spaces around each dropped
    (``a, b``, as people type a list). An empty item (``a,,b``, a comma at an end) is refused
    naming its place, counted from 1, never dropped unsaid; a list of none (``""``, ``,``) is
    refused as holding no ``noun``, or with ``none_ok`` given back empty, for the caller to
    refuse as it refuses an empty list. A refusal is a :class:`ValueError` quoting ``text``
    and saying how to write it (``example``; ``leave_out`` goes on after it, saying what
    leaving the list out does); the caller names the option, header or argument."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        if none_ok:
            return []
        raise ValueError(f"{json_quoted(text)} holds no {noun}; give a comma-separated list "
                         f"such as {example}{leave_out}")
    for place, part in enumerate(parts, 1):
        if not part:
            raise ValueError(f"{json_quoted(text)} has no {noun} at item {place} of "
                             f"{len(parts)}: write one {noun} between commas, such as {example}")
    return parts
