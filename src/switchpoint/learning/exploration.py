"""Exploration: now and then, route to another candidate so outcomes teach about it too.

A router only hears how the model it chose did (bandit feedback). With ``rate`` r, a fraction r
of decisions (none by default) goes to a uniformly drawn other candidate instead. Exploration
never applies when the caller named the model (a single candidate), and is reproducible: the
same seed and the same sequence of decisions explore the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from switchpoint.errors import InvalidInputError


class Explorer:
    """Draws which decisions explore, and where to."""

    def __init__(self, rate: float = 0.0, seed: int | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise InvalidInputError("exploration", f"must be a fraction in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def pick(self, candidates: Sequence[str], chosen: str) -> str | None:
        """Another candidate to route to instead of ``chosen``, or None (most of the time)."""
        others = [m for m in candidates if m != chosen]
        if not self.rate or not others:
            return None
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            return others[int(self._rng.integers(len(others)))]
