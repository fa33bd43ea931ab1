"""The one way a command shows an instant to a person: ``2026-12-07 13:57:19``, in UTC, to the
second (what a key's expiry needs: it ends at that second), the same for every time a table or
a message of the command line shows (and a latency one way: :func:`latency_text`). JSON
answers keep their own numbers and ISO strings."""

from __future__ import annotations

from datetime import UTC, datetime

#: The latest instant a date can show: the last second of 9999 (UTC).
LATEST = 253_402_300_799.0


def when_text(ts: float) -> str:
    """``ts`` (epoch seconds) as a person reads it: the date and time in UTC, to the second,
    without the zone (the table's header or the message says UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def latency_text(ms: float) -> str:
    """A latency in milliseconds as a person reads it: to a tenth of a millisecond, its
    thousands grouped (``1,234.5 ms``), the one rule of every latency a command shows."""
    return f"{ms:,.1f} ms"
