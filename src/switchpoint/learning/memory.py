"""The decisions a router still remembers, so an outcome reported later can be learned from."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from switchpoint._fair import FairMap
from switchpoint._limits import MAX_MEMORY_SIZE as MAX_MEMORY_SIZE  # (re-exported)
from switchpoint._messages import json_quoted
from switchpoint._pickling import LOCK, RemadeOnLoad, remade

if TYPE_CHECKING:  # (a decision's vector is NumPy's, made by whoever routed it)
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class PendingDecision:
    """What learning needs from one decision: the prompt's vector (or its routing units), the
    candidates, the model chosen, the tenant it was routed for, and (a router whose catalog
    prices requests) the prompt's tokens as it priced them, so a measured cost can be read
    against the price it was estimated from, and the prompt's hash (``prompt_hash``: its
    SHA-256, '' for a decision routed from an embedding alone), by which an outcome may name
    it."""

    decision_id: str
    tenant: str
    chosen: str
    candidates: tuple[str, ...]
    embedding: npt.NDArray[np.float32] | None = None
    units: tuple[tuple[int, float], ...] | None = None
    expected_cost: float | None = None
    created: float = field(default_factory=time.time)
    prompt_tokens: int | None = None
    prompt_hash: str = ""


class DecisionMemory(RemadeOnLoad):
    """A bounded map ``decision_id → PendingDecision``, shared fairly by the tenants
    (:class:`~switchpoint._fair.FairMap`). Thread-safe.

    It holds at most ``capacity`` decisions; past it, the oldest decision of the tenant that
    holds the most goes (among tenants holding as many, the one that came to hold that many
    first), so one tenant's decisions, routed in any number, push out only its own once it
    holds more than another, never leaving another fewer than an equal share: with a tenant
    alone, the oldest goes first. An outcome for a decision that has left (or never was here)
    is reported as not found. Beside them, an index of prompt hashes: the
    most recently remembered decision of each prompt, and of each tenant's prompt
    (:meth:`latest`), which goes with that entry. (The entry it names is the last of its
    prompt's in the memory's order, a copy made by :meth:`alias` coming after its source, so
    none of that prompt is left when it goes.) An entry remembered ``restored`` (read back
    from a store, made before the router went live) keeps its hash but is not indexed: an
    index names only the latest decision of the router's own, and the store, which knows
    every decision kept, answers for the others.
    """

    _remade = remade(_lock=LOCK)

    def __init__(self, capacity: int = 10_000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be an integer >= 0, got {json_quoted(capacity)}")
        self.capacity = capacity
        self._entries: OrderedDict[str, PendingDecision] = OrderedDict()
        # who holds which (each decision's tenant), by the rule that says which goes when the
        # memory is full
        self._shares: FairMap[str] = FairMap()
        # prompt hash (any tenant's) or (tenant, prompt hash) → the latest decision id of it
        self._latest: dict[str | tuple[str, str], str] = {}
        # the ids of the entries remembered ``restored`` (left out of the index)
        self._restored: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, entry: PendingDecision, *, restored: bool = False) -> None:
        """Remember ``entry`` as the newest; ``restored``: read back from a store, left out
        of the prompt hash index (see the class)."""
        if not self.capacity:
            return
        with self._lock:
            earlier = self._entries.get(entry.decision_id)
            if earlier is not None:
                self._unindex(earlier)
            self._entries[entry.decision_id] = entry
            self._entries.move_to_end(entry.decision_id)
            went = self._shares.put_within(entry.decision_id, entry.tenant, self.capacity)
            if restored:
                self._restored.add(entry.decision_id)
            else:
                self._restored.discard(entry.decision_id)
                if entry.prompt_hash:
                    self._latest[entry.prompt_hash] = entry.decision_id
                    self._latest[entry.tenant, entry.prompt_hash] = entry.decision_id
            for gone_id in went:
                gone = self._entries.pop(gone_id)
                self._unindex(gone)
                self._restored.discard(gone_id)

    def _reindex(self, prompt_hash: str, tenant: str) -> None:
        """Index the latest decision of ``prompt_hash`` remembered (of any tenant's, and of
        ``tenant``'s) where none is indexed. Call with ``_lock`` held."""
        for key in (prompt_hash, (tenant, prompt_hash)):
            if key in self._latest:
                continue
            latest = next((e.decision_id for e in reversed(self._entries.values())
                           if e.prompt_hash == prompt_hash
                           and e.decision_id not in self._restored
                           and (isinstance(key, str) or e.tenant == tenant)), None)
            if latest is not None:
                self._latest[key] = latest

    def _unindex(self, entry: PendingDecision) -> None:
        """Take ``entry`` out of the prompt hash index, where it is the latest of its prompt.
        Call with ``_lock`` held."""
        if not entry.prompt_hash:
            return
        for key in (entry.prompt_hash, (entry.tenant, entry.prompt_hash)):
            if self._latest.get(key) == entry.decision_id:
                del self._latest[key]

    def latest(self, prompt_hash: str, tenant: str | None = None) -> PendingDecision | None:
        """The most recently remembered decision whose prompt has ``prompt_hash`` (of
        ``tenant``, if given), or None."""
        key: str | tuple[str, str] = prompt_hash if tenant is None else (tenant, prompt_hash)
        with self._lock:
            decision_id = self._latest.get(key)
            return None if decision_id is None else self._entries.get(decision_id)

    def alias(self, decision_id: str, source_id: str, chosen: str | None = None,
              expected_cost: float | None = None) -> bool:
        """Remember ``decision_id`` as a copy of ``source_id`` (a cached decision served again,
        or one sent to ``chosen`` instead); refreshes the source too. False if it is gone."""
        with self._lock:
            source = self._entries.get(source_id)
            if source is None:
                return False
            self._entries.move_to_end(source_id)
            self._shares.put(source_id, source.tenant)
        moved = chosen is not None and chosen != source.chosen
        self.remember(replace(source, decision_id=decision_id,
                              chosen=chosen if moved and chosen else source.chosen,
                              expected_cost=expected_cost if moved else source.expected_cost,
                              created=time.time()))
        return True

    def get(self, decision_id: str) -> PendingDecision | None:
        with self._lock:
            return self._entries.get(decision_id)

    def is_restored(self, decision_id: str) -> bool:
        """Whether ``decision_id`` is remembered ``restored`` (read back from a store, which
        says how long it stays open to feedback: see the class)."""
        with self._lock:
            return decision_id in self._restored

    def forget(self, decision_id: str) -> bool:
        """Let go of ``decision_id`` (one made for a call that did not return it: no outcome
        can name it); its prompt's hash then names the latest other decision of that prompt
        remembered, as if it had never been made. False if it is not remembered."""
        with self._lock:
            entry = self._entries.pop(decision_id, None)
            if entry is None:
                return False
            self._shares.discard(decision_id)
            self._restored.discard(decision_id)
            self._unindex(entry)
            if entry.prompt_hash:
                self._reindex(entry.prompt_hash, entry.tenant)
            return True

    def set_chosen(self, decision_id: str, model: str, expected_cost: float | None) -> bool:
        """Record that another model served the decision (e.g. a tenant memory overrode the
        router's choice). False if the decision is not remembered."""
        with self._lock:
            entry = self._entries.get(decision_id)
            if entry is None:
                return False
            self._entries[decision_id] = replace(entry, chosen=model,
                                                 expected_cost=expected_cost)
            return True

    def resized(self, capacity: int) -> DecisionMemory:
        """A memory of ``capacity`` holding this one's entries (the newest of them, when it is
        smaller), each remembered as it was here (restored or not)."""
        memory = DecisionMemory(capacity)
        with self._lock:
            kept = [(entry, entry.decision_id in self._restored)
                    for entry in self._entries.values()]
        for entry, restored in kept:
            memory.remember(entry, restored=restored)
        return memory

    def entries(self) -> list[PendingDecision]:
        """Every remembered decision, oldest first."""
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
