"""Preference comparisons waiting for their scores: bounded per tenant, expiring, and blind
(each answer under a shuffled label).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from switchpoint.errors import NotFoundError
from switchpoint.gateway.feedback_log import MAX_DECISION_ID
from switchpoint.store.learning import CompareRecord

#: Models one comparison may fan out to.
MAX_COMPARE_MODELS = 6
LABELS = "ABCDEF"


#: A comparison waiting for its scores (kept in memory, and in the store when there is one).
Compare = CompareRecord


class Compares:
    """Comparisons waiting for scores: at most ``capacity`` per tenant (its oldest go first),
    each for ``ttl_s`` seconds. One not in memory (a restart since) is looked up with
    ``lookup`` (the store). Thread-safe."""

    def __init__(self, capacity: int = 1000, ttl_s: float = 3600.0,
                 lookup: Callable[[str], Compare | None] | None = None) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.lookup = lookup
        self._tenants: dict[str, OrderedDict[str, Compare]] = {}  # each oldest first
        self._lock = threading.Lock()

    def put(self, compare: Compare) -> None:
        with self._lock:
            self._expire(time.time())
            items = self._tenants.setdefault(compare.tenant, OrderedDict())
            items[compare.compare_id] = compare
            while len(items) > self.capacity:
                items.popitem(last=False)

    def reveal(self, compare: Compare, ts: float) -> Compare:
        """``compare`` with its models revealed at ``ts`` (kept so, where it is still held)."""
        revealed = dataclasses.replace(compare, revealed=ts)
        with self._lock:
            items = self._tenants.get(compare.tenant)
            if items is not None and compare.compare_id in items:
                items[compare.compare_id] = revealed  # (its place among the oldest stays)
        return revealed

    def resize(self, capacity: int, ttl_s: float) -> None:
        """New limits (a reload): each tenant keeps its newest ``capacity`` at once."""
        with self._lock:
            self.capacity, self.ttl_s = capacity, ttl_s
            for items in self._tenants.values():
                while len(items) > capacity:
                    items.popitem(last=False)

    def get(self, compare_id: object, tenant: str) -> Compare:
        """The comparison, if it exists for ``tenant`` and has not expired (else 404)."""
        now = time.time()
        with self._lock:
            self._expire(now)
            items = self._tenants.get(tenant)
            found = (items.get(compare_id) if items is not None and isinstance(compare_id, str)
                     else None)
        if (found is None and self.lookup is not None and isinstance(compare_id, str)
                and 0 < len(compare_id) <= MAX_DECISION_ID):
            found = self.lookup(compare_id)
        if found is None or found.tenant != tenant or found.expires <= now:
            raise NotFoundError(f"compare_id: no open comparison {str(compare_id)[:100]!r} for "
                                f"this tenant (comparisons wait {self.ttl_s:g} s for their "
                                "scores); run POST /v1/router/preferences/compare again",
                                param="compare_id")
        return found

    def _expire(self, now: float) -> None:
        for tenant, items in list(self._tenants.items()):
            while items and next(iter(items.values())).expires <= now:
                items.popitem(last=False)
            if not items:
                del self._tenants[tenant]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(items) for items in self._tenants.values())

def shuffled_labels(models: Sequence[str]) -> dict[str, str]:
    """Blind labels A, B, ... for ``models`` in a random order; ``answer-A``, ... when a
    model's own name is a label, so that a score's key never names one thing as a label and
    another as a model (which would also give away who wrote what)."""
    order = list(models)
    random.SystemRandom().shuffle(order)
    prefix = ""
    while set(models) & {prefix + label for label in LABELS[:len(order)]}:
        prefix += "answer-"
    return {prefix + LABELS[i]: m for i, m in enumerate(order)}
