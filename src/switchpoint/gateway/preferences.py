"""Preference comparisons waiting for their scores: bounded per tenant, expiring, and blind
(each answer under a shuffled label).

A blind answer says nothing of its model but its content: no model, latency, cost or request
id (the request log names the model of a request id), a finish reason from OpenAI's own set,
and for an answer that failed a generic reason (:func:`blind_failure`), never the upstream's
words, an error kind only some providers have, or a model's context window. What each answer
really was (:func:`answer_detail`: its request id, finish reason, full failure) is kept with
the comparison and revealed, with every label's model, by the score. Blind is towards the
scorer through the API: the request log, the reports and the metrics (the admin's) record each
compared request as the chat request it is, model, tokens, cost and failure included.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from switchpoint._messages import json_quoted
from switchpoint._redact import clip, redact
from switchpoint.errors import (
    ConflictError,
    ContextLengthExceeded,
    FailoverError,
    GatewayError,
    NoCapableModelError,
    NotFoundError,
)
from switchpoint.gateway.capabilities import too_long
from switchpoint.gateway.results import ChatCompletion
from switchpoint.store.learning import CompareRecord

#: Models one comparison may fan out to.
MAX_COMPARE_MODELS = 6
LABELS = "ABCDEF"
#: The finish reasons of OpenAI's chat API, which every provider's answer can say: a blind
#: answer shows another (``eos``, ``model_length``: an upstream's own) as ``stop``.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
#: Characters kept of a failed answer's reason, which its comparison keeps (in memory and in
#: the store) for the score to reveal.
MAX_FAILURE = 1_024


#: A comparison waiting for its scores (kept in memory, and in the store when there is one).
Compare = CompareRecord


REVEALED = ("compare_id: this blind comparison was scored and its models revealed, so a "
            "score now would not be blind and is not taken; run POST "
            "/v1/router/preferences/compare again to score the models afresh")


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
        self._scoring: set[str] = set()  # blind comparisons a score is being taken for
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

    def claim(self, compare: Compare) -> None:
        """Hold a blind comparison for the one score it takes, until :meth:`release`: a
        score that arrives while another is being taken, or after one revealed the models,
        is a 409 (each would otherwise be learned, and reveal the models, as the first)."""
        with self._lock:
            items = self._tenants.get(compare.tenant)
            held = items.get(compare.compare_id) if items is not None else None
            if compare.revealed is not None or (held is not None and held.revealed is not None):
                raise ConflictError(REVEALED, param="compare_id")
            if compare.compare_id in self._scoring:
                raise ConflictError(
                    "compare_id: this blind comparison is being scored by another request, "
                    "whose answer reveals its models, so this score would not be blind and is "
                    "not taken (if that one is refused, send this again); run POST "
                    "/v1/router/preferences/compare again to score the models afresh",
                    param="compare_id")
            self._scoring.add(compare.compare_id)

    def release(self, compare: Compare) -> None:
        """End :meth:`claim`'s hold (the score was taken and revealed, or refused)."""
        with self._lock:
            self._scoring.discard(compare.compare_id)

    def resize(self, capacity: int, ttl_s: float) -> None:
        """New limits (a reload): each tenant keeps its newest ``capacity`` at once."""
        with self._lock:
            self.capacity, self.ttl_s = capacity, ttl_s
            for items in self._tenants.values():
                while len(items) > capacity:
                    items.popitem(last=False)

    def get(self, compare_id: str, tenant: str) -> Compare:
        """The comparison, if it exists for ``tenant`` and has not expired (else 404);
        ``compare_id`` is one :func:`~switchpoint.decision.check_id` took."""
        now = time.time()
        with self._lock:
            self._expire(now)
            items = self._tenants.get(tenant)
            found = items.get(compare_id) if items is not None else None
        if found is None and self.lookup is not None:
            found = self.lookup(compare_id)
        if found is None or found.tenant != tenant or found.expires <= now:
            raise NotFoundError(f"compare_id: no open comparison {json_quoted(compare_id, 100)} "
                                f"for this tenant (comparisons wait {self.ttl_s:g} s for their "
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


def answer_detail(result: ChatCompletion | Exception) -> dict[str, Any]:
    """What one compared answer really was: its request id, finish reason, and for a failed
    one its error (code and message, redacted and bounded). Shown as is when the comparison is
    not blind; else kept with it until the score reveals it."""
    if isinstance(result, ChatCompletion):
        choice = (result.get("choices") or [{}])[0]
        return {"request_id": result.switchpoint.request_id,
                "finish_reason": choice.get("finish_reason"), "error": None}
    info = getattr(result, "info", None)
    return {"request_id": getattr(info, "request_id", None), "finish_reason": None,
            "error": {"code": str(getattr(result, "code", type(result).__name__)),
                      "message": clip(redact(str(result)), MAX_FAILURE)}}


def blind_detail(result: ChatCompletion | Exception) -> dict[str, Any]:
    """:func:`answer_detail` as a blind answer shows it: no request id, a finish reason of
    OpenAI's own set, a generic failure (:func:`blind_failure`)."""
    if isinstance(result, ChatCompletion):
        reason = answer_detail(result)["finish_reason"]
        return {"request_id": None, "error": None,
                "finish_reason": reason if reason in FINISH_REASONS or reason is None
                else "stop"}
    return {"request_id": None, "finish_reason": None, "error": blind_failure(result)}


def blind_failure(error: Exception) -> dict[str, str]:
    """Why a compared model did not answer, in words any model's failure could have:
    ``refused: too long`` (the conversation is too long for it), ``refused`` (the upstream or
    the gateway refused the request: a content filter, a request it cannot take, a budget),
    ``timed out`` (every try), else ``upstream error``."""
    if isinstance(error, FailoverError):
        if error.request_fault:
            if isinstance(error.last_error, ContextLengthExceeded):
                return {"code": "too_long", "message": "refused: too long"}
            return {"code": "refused", "message": "refused"}
        if error.code == "upstream_timeout":
            return {"code": "timed_out", "message": "timed out"}
        return {"code": "upstream_error", "message": "upstream error"}
    if isinstance(error, NoCapableModelError) and any(
            too_long(reasons) for reasons in error.excluded.values()):
        return {"code": "too_long", "message": "refused: too long"}
    if isinstance(error, GatewayError) and error.status < 500:
        return {"code": "refused", "message": "refused"}
    return {"code": "upstream_error", "message": "upstream error"}
