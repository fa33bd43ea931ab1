"""The stats' kept totals as read back: each a whole number in range, or left out and said.

The log keeps its stats as totals that triggers add to as rows are logged and take from as they
are pruned (see :mod:`switchpoint.store.sums`). A total out of range cannot be the sum of
what the log holds: negative, not a whole number (text, or a float: a sum that passed SQLite's
64-bit integers), or that largest integer itself (SQLite holds a value too large for an
integer there, so a cost too large to be real, damaged or misreported, is counted as it). Such
a figure is not given as a number, clamped or wrapped: it is None, and the stats say which and
why in their ``warnings`` (logged too, once per figure and value).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from switchpoint._messages import json_quoted
from switchpoint.catalog import usd

log = logging.getLogger("switchpoint.store")

#: The largest 64-bit integer: where SQLite holds a value too large to count.
MAX_TOTAL = 2**63 - 1


class Totals:
    """Reads the totals of one stats answer of the log at ``path``, gathering a warning for
    each figure out of range (``said``: the warnings already logged, shared by the readers of
    one store, so a polled figure is logged once)."""

    def __init__(self, path: str | Path, said: set[str]) -> None:
        self.name = Path(path).name
        self.said = said
        self.warnings: list[str] = []

    def count(self, value: Any, figure: str) -> int | None:
        """``value`` as a whole number in range, or None (and a warning naming ``figure``)."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_TOTAL:
            return value
        self._out_of_range(value, figure)
        return None

    def usd(self, value: Any, figure: str, per_usd: int) -> float | None:
        """A cost total kept in ``1/per_usd`` dollars, in US dollars (to the places every
        amount of dollars is kept to, :func:`~switchpoint.catalog.usd`), or None."""
        whole = self.count(value, figure)
        return None if whole is None else usd(whole / per_usd)

    def _out_of_range(self, value: Any, figure: str) -> None:
        shown = json_quoted(value, 40)
        warning = (f"{figure}: the total {self.name} keeps is out of range ({shown}), so it is "
                   "left out: the file is damaged, or logged a value too large to be real (a "
                   f"cost from a misreported usage, say); restore {self.name} from a backup "
                   "for figures that add up")
        self.warnings.append(warning)
        if warning not in self.said and len(self.said) < 1000:
            self.said.add(warning)
            log.warning("%s", warning)
