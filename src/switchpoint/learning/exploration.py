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

Each tenant draws from its own stream, so one tenant's traffic never changes which of another's
decisions explore (a tenant could otherwise steer, or read, another's exploration by how much it
sends). The deployment's own tenant draws the seed's stream, as a router without tenants always
has; every other tenant a stream of the seed and its name, the same from run to run.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from switchpoint._messages import json_quoted
from switchpoint._pickling import LOCK, RemadeOnLoad, remade
from switchpoint.errors import InvalidInputError
from switchpoint.learning.events import DEFAULT_TENANT, MAX_TENANTS

#: Evidence within this many labels of the least counts as a tie.
EVIDENCE_TIE = 1e-6
#: The most tenants' streams held at once, the least recently drawn from let go first (a
#: tenant whose stream was let go starts it again from its beginning).
MAX_STREAMS = MAX_TENANTS


def tenant_stream(seed: int | None, tenant: str) -> np.random.Generator:
    """``tenant``'s exploration stream: the seed's own for the deployment's tenant, else one
    drawn from the seed and the tenant's name (fresh entropy for either without a seed)."""
    if tenant == DEFAULT_TENANT or seed is None:
        return np.random.default_rng(seed)
    digest = hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).digest()
    key = tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


class Explorer(RemadeOnLoad):
    """Draws which decisions explore, and where to."""

    _remade = remade(_lock=LOCK)

    def __init__(self, rate: float = 0.0, seed: int | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise InvalidInputError("exploration",
                                    f"must be a fraction in [0, 1], got {json_quoted(rate)}")
        self.rate = float(rate)
        self.seed = seed
        self._streams: OrderedDict[str, np.random.Generator] = OrderedDict()
        self._lock = threading.Lock()

    def _stream(self, tenant: str) -> np.random.Generator:
        """``tenant``'s stream (the caller holds the lock)."""
        rng = self._streams.get(tenant)
        if rng is None:
            rng = self._streams[tenant] = tenant_stream(self.seed, tenant)
            while len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(tenant)
        return rng

    def pick(self, candidates: Sequence[str], chosen: str,
             evidence: Sequence[float] | None = None,
             tenant: str = DEFAULT_TENANT) -> str | None:
        """Another candidate to route to instead of ``chosen``, or None (most of the time),
        drawn from ``tenant``'s own stream.

        ``evidence``, aligned with ``candidates``: how many labels stand behind each one's
        estimate for this prompt; the least-evidenced other candidate is explored."""
        others = [i for i, m in enumerate(candidates) if m != chosen]
        if not self.rate or not others:
            return None
        if evidence is not None and len(evidence) != len(candidates):
            raise ValueError(f"evidence has {len(evidence)} entries for {len(candidates)} "
                             "candidates")
        with self._lock:
            rng = self._stream(tenant)
            if rng.random() >= self.rate:
                return None
            if evidence is not None:
                least = min(evidence[i] for i in others)
                others = [i for i in others if evidence[i] <= least + EVIDENCE_TIE]
            return candidates[others[int(rng.integers(len(others)))]]
