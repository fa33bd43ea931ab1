"""Exploration: now and then, route to another candidate so outcomes teach about it too.

A router only hears how the model it chose did (bandit feedback). With ``rate`` r, a fraction r
of decisions (none by default) goes to another candidate instead: the one whose estimate for
this prompt has the least evidence behind it (labelled examples from the weights plus outcomes
learned; ties drawn at random), or a uniformly drawn one when the evidence is not known.
Aiming at the least-known model spreads outcomes over every model of a prompt's neighbourhood
instead of piling them on the few a uniform draw happens to repeat: replaying the records'
train splits as live traffic, it closed more of the gap to full information and never dipped
below the router that does not learn (``benchmarks/online.py``). Exploration never applies when
the caller named the model (a single candidate), and is reproducible: the same seed and the same
sequence of decisions explore the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from switchpoint._pickling import LOCK, RemadeOnLoad, remade
from switchpoint.errors import InvalidInputError

#: Evidence within this many labels of the least counts as a tie.
EVIDENCE_TIE = 1e-6


class Explorer(RemadeOnLoad):
    """Draws which decisions explore, and where to."""

    _remade = remade(_lock=LOCK)

    def __init__(self, rate: float = 0.0, seed: int | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise InvalidInputError("exploration", f"must be a fraction in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def pick(self, candidates: Sequence[str], chosen: str,
             evidence: Sequence[float] | None = None) -> str | None:
        """Another candidate to route to instead of ``chosen``, or None (most of the time).

        ``evidence``, aligned with ``candidates``: how many labels stand behind each one's
        estimate for this prompt; the least-evidenced other candidate is explored."""
        others = [i for i, m in enumerate(candidates) if m != chosen]
        if not self.rate or not others:
            return None
        if evidence is not None and len(evidence) != len(candidates):
            raise ValueError(f"evidence has {len(evidence)} entries for {len(candidates)} "
                             "candidates")
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            if evidence is not None:
                least = min(evidence[i] for i in others)
                others = [i for i in others if evidence[i] <= least + EVIDENCE_TIE]
            return candidates[others[int(self._rng.integers(len(others)))]]
