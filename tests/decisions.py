"""A decision record of its own id, for the tests that only need one to store, spill or find."""

from __future__ import annotations

import time
import uuid

from switchpoint.store import DecisionRecord


def a_decision(ts: float | None = None) -> DecisionRecord:
    """A decision for model ``a`` (of ``a`` and ``b``) of a new id, made at ``ts`` (now by
    default)."""
    return DecisionRecord(
        id=uuid.uuid4().hex, ts=time.time() if ts is None else ts, selected_model="a",
        cluster_id=1, cost_weight=0.5, candidates=["a", "b"], cache_hit=False, routing_ms=0.2,
        embedding_ms=3.0, policy="cluster", weights_id="w1", expected_error=0.1,
        cost_adjusted_score=0.2)
