"""A per-tenant nearest-neighbour memory of outcomes, consulted before the learned router.

Each tenant keeps its own vectors: every outcome it reports is one record (prompt vector, model,
quality). For a new request the memory finds the tenant's ``k`` most similar records (cosine at
least ``min_similarity``) and scores each candidate model that has records among them::

    score(m) = mean quality of m on the neighbours − α · normalised cost(m) − switch penalty

where the switch penalty applies to every model but the one the global learned router chose (so
the memory overrides the router only when the tenant's own evidence is clearly better) and the
cost is normalised as the router normalises it for λ. ``α`` is the tenant's own cost weight, or
the request's λ when the tenant sets none.

The memory answers only when it should; otherwise the request falls back to the **global learned
router** (never simply to a requested model), and the answer says which fallback and why:

- ``cold_start``: the tenant has fewer than ``min_records`` outcomes;
- ``sparse_neighbourhood``: fewer than ``min_neighbours`` records are similar enough;
- ``low_confidence``: fewer than two candidates have neighbours, or the chance that the winner
  really beats the runner-up (normal approximation on the neighbours' qualities) is below
  ``confidence_floor``;
- ``tool_request``: the request uses tools, which past outcomes do not speak for.

Tenants are isolated: a tenant's records are only ever read for that tenant. Each tenant holds at
most ``max_records`` records; past that the oldest go first. A second outcome for the same
decision replaces the first.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from switchpoint._messages import json_quoted
from switchpoint._pickling import LOCK, RemadeOnLoad, remade
from switchpoint.errors import InvalidInputError
from switchpoint.learning.checkpoint import CheckpointError, State
from switchpoint.learning.events import FeedbackEvent, check_tenant, tenant_key
from switchpoint.policies.base import check_int, check_number


class Fallback(StrEnum):
    """Why the memory left a request to the global learned router."""

    COLD_START = "cold_start"
    SPARSE_NEIGHBOURHOOD = "sparse_neighbourhood"
    LOW_CONFIDENCE = "low_confidence"
    TOOL_REQUEST = "tool_request"


@dataclass(frozen=True)
class TenantSettings:
    """One tenant's memory settings (see the module docstring)."""

    k: int = 20
    min_neighbours: int = 5
    min_similarity: float = 0.5
    alpha: float | None = None
    switch_penalty: float = 0.02
    confidence_floor: float = 0.8
    min_records: int = 20
    max_records: int = 5000

    def validate(self) -> TenantSettings:
        check_int("k", self.k, low=1)
        check_int("min_neighbours", self.min_neighbours, low=1)
        check_number("min_similarity", self.min_similarity, low=-1.0)
        if self.alpha is not None:
            check_number("alpha", self.alpha)
        check_number("switch_penalty", self.switch_penalty)
        check_number("confidence_floor", self.confidence_floor)
        check_int("min_records", self.min_records, low=0)
        check_int("max_records", self.max_records, low=1)
        self._check_consistent()
        return self

    def _check_consistent(self) -> None:
        """The rules between settings (the config checks them here too): ``field (value)
        must be ...``, so that the config's error reads the same."""
        if self.min_neighbours > self.k:
            raise InvalidInputError("min_neighbours", f"({self.min_neighbours}) must be <= k "
                                                      f"({self.k}): more than k neighbours "
                                                      "can provide")
        for name, value, then in (("min_records", self.min_records, "cold_start"),
                                  ("min_neighbours", self.min_neighbours,
                                   "sparse_neighbourhood")):
            if value > self.max_records:
                raise InvalidInputError(name, f"({value}) must be <= max_records "
                                              f"({self.max_records}): the memory keeps at most "
                                              "max_records outcomes, so it would never answer "
                                              f"(always {then})")


@dataclass(frozen=True)
class MemoryChoice:
    """The memory's answer for one request: a model, or the fallback and why."""

    model: str | None
    fallback: Fallback | None
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    neighbours: int = 0
    confidence: float = 0.0


#: Records a tenant's arrays hold at first; they double as records come, up to ``max_records``.
INITIAL_RECORDS = 64


class _TenantRecords:
    """One tenant's records in a ring of at most ``capacity``: vectors, model ids, qualities,
    decision ids. The arrays grow (doubling) as records come, so a tenant with few outcomes
    holds little whatever its ``max_records``."""

    def __init__(self, capacity: int, dimension: int, allocated: int | None = None) -> None:
        self.capacity = capacity
        size = min(capacity, INITIAL_RECORDS) if allocated is None else allocated
        self.vectors = np.zeros((size, dimension), dtype=np.float32)
        self.model = np.zeros(size, dtype=np.int64)
        self.quality = np.zeros(size)
        self.slots: OrderedDict[str, int] = OrderedDict()  # decision id -> slot, oldest first
        self.free: list[int] = []  # slots below next_slot that hold no record
        self.next_slot = 0  # slots from here on were never used

    def put(self, decision_id: str, vector: npt.NDArray[np.float32], model: int,
            quality: float) -> float | None:
        previous = None
        slot = self.slots.pop(decision_id, None)
        if slot is not None:
            previous = float(self.quality[slot])
        elif self.free:
            slot = self.free.pop()
        elif self.next_slot < self.capacity:
            slot = self.next_slot
            self.next_slot += 1
            if slot >= len(self.quality):
                self._grow(min(self.capacity, max(2 * len(self.quality), INITIAL_RECORDS)))
        else:
            _, slot = self.slots.popitem(last=False)  # evict the oldest
        self.vectors[slot], self.model[slot], self.quality[slot] = vector, model, quality
        self.slots[decision_id] = slot
        return previous

    def _grow(self, size: int) -> None:
        n = len(self.quality)
        vectors = np.zeros((size, self.vectors.shape[1]), dtype=np.float32)
        model, quality = np.zeros(size, dtype=np.int64), np.zeros(size)
        vectors[:n], model[:n], quality[:n] = self.vectors, self.model, self.quality
        self.vectors, self.model, self.quality = vectors, model, quality

    def unused(self) -> list[int]:
        """Every slot that holds no record (as a checkpoint keeps them)."""
        return [*range(self.capacity - 1, self.next_slot - 1, -1), *self.free]

    def take_unused(self, free: Sequence[int]) -> None:
        """Take up a checkpoint's unused slots: those past the highest slot in use were never
        used (the arrays need not hold them)."""
        top = max(self.slots.values(), default=-1) + 1
        self.free = [s for s in free if s < top]
        self.next_slot = top

    def used(self) -> npt.NDArray[np.int64]:
        return np.fromiter(self.slots.values(), dtype=np.int64, count=len(self.slots))


class TenantKnnMemory(RemadeOnLoad):
    """Per-tenant outcome memory (see the module docstring). Thread-safe."""

    _remade = remade(_lock=LOCK)

    def __init__(self, settings: TenantSettings | None = None,
                 tenants: Mapping[str, TenantSettings] | None = None) -> None:
        self.default = (settings or TenantSettings()).validate()
        self._settings = {check_tenant(t): s.validate() for t, s in (tenants or {}).items()}
        self._records: dict[str, _TenantRecords] = {}
        self._models: dict[str, int] = {}
        self._names: list[str] = []
        self._lock = threading.Lock()

    def settings_for(self, tenant: str | None) -> TenantSettings:
        return self._settings.get(tenant_key(tenant), self.default)

    def configure(self, tenant: str, settings: TenantSettings) -> None:
        """Set one tenant's settings; ``max_records`` applies from the tenant's first outcome,
        so set it before."""
        with self._lock:
            self._settings[check_tenant(tenant)] = settings.validate()

    def forget(self, tenant: str) -> None:
        """Let ``tenant``'s records go (its settings stay); its next outcome starts afresh."""
        with self._lock:
            self._records.pop(tenant, None)

    def held_tenants(self) -> int:
        """How many tenants' records are in memory now."""
        with self._lock:
            return len(self._records)

    def size(self, tenant: str | None) -> int:
        records = self._records.get(tenant_key(tenant))
        return 0 if records is None else len(records.slots)

    def coverage(self, tenant: str | None) -> dict[str, int]:
        """How many of the tenant's records each model has (models with none are left out)."""
        with self._lock:
            records = self._records.get(tenant_key(tenant))
            if records is None or not records.slots:
                return {}
            ids, counts = np.unique(records.model[records.used()], return_counts=True)
            names = list(self._names)
        return {names[int(i)]: int(n) for i, n in zip(ids, counts, strict=True)}

    def apply(self, event: FeedbackEvent) -> float | None:
        """Remember one outcome for its tenant; returns the quality it replaced, if any."""
        x = event.vector()
        if x is None:
            raise InvalidInputError("event", "the tenant memory needs the prompt's vector")
        with self._lock:
            records = self._records.get(event.tenant)
            if records is None:
                capacity = self.settings_for(event.tenant).max_records
                records = _TenantRecords(capacity, x.shape[1])
                self._records[event.tenant] = records
            if event.model not in self._models:
                self._models[event.model] = len(self._names)
                self._names.append(event.model)
            return records.put(event.decision_id, x[0], self._models[event.model],
                               event.quality)

    def state(self) -> State:
        """Every tenant's records, as a checkpoint part (see
        :mod:`~switchpoint.learning.checkpoint`)."""
        with self._lock:
            tenants = sorted(self._records)
            state = State({"models": list(self._names), "tenants": tenants,
                           "capacity": [self._records[t].capacity for t in tenants],
                           "ids": [list(self._records[t].slots) for t in tenants]})
            for i, tenant in enumerate(tenants):
                records = self._records[tenant]
                slots = records.used()
                state.arrays.update({
                    f"{i}.slots": slots, f"{i}.free": np.array(records.unused(), dtype=np.int64),
                    f"{i}.vectors": records.vectors[slots].copy(),
                    f"{i}.model": records.model[slots].copy(),
                    f"{i}.quality": records.quality[slots].copy()})
            return state

    def restore(self, state: State, dimension: int) -> None:
        """Take up a :meth:`state` saved by a memory with the same tenants' settings, in place
        of what this one holds (nothing changes if it does not fit); ``dimension``: the prompt
        vectors' length."""
        meta = state.meta
        names, tenants = meta.get("models"), meta.get("tenants")
        capacities, ids = meta.get("capacity"), meta.get("ids")
        if not (isinstance(names, list) and isinstance(tenants, list)
                and isinstance(capacities, list) and isinstance(ids, list)
                and len(tenants) == len(capacities) == len(ids)):
            raise CheckpointError("the memory's tenants are missing")
        restored: dict[str, _TenantRecords] = {}
        for i, tenant in enumerate(tenants):
            capacity = self.settings_for(str(tenant)).max_records
            if capacities[i] != capacity:
                raise CheckpointError(f"tenant {json_quoted(tenant)} kept "
                                      f"{json_quoted(capacities[i])} records; its memory now "
                                      f"keeps {capacity}")
            n = len(ids[i])
            slots = state.array(f"{i}.slots", dtype=np.int64, shape=(n,))
            free = state.array(f"{i}.free", dtype=np.int64, shape=(capacity - n,))
            model = state.array(f"{i}.model", dtype=np.int64, shape=(n,))
            taken = np.concatenate([slots, free])
            if len(np.unique(taken)) != capacity or (capacity and (
                    taken.min() < 0 or taken.max() >= capacity)):
                raise CheckpointError(f"tenant {json_quoted(tenant)}'s record slots do not add up")
            if n and (model.min() < 0 or model.max() >= len(names)):
                raise CheckpointError(f"tenant {json_quoted(tenant)}'s records name unknown models")
            records = _TenantRecords(capacity, dimension,
                                     allocated=int(slots.max()) + 1 if n else 0)
            records.vectors[slots] = state.array(f"{i}.vectors", dtype=np.float32,
                                                 shape=(n, dimension))
            records.model[slots] = model
            records.quality[slots] = state.array(f"{i}.quality", dtype=np.float64, shape=(n,))
            records.slots = OrderedDict(zip((str(d) for d in ids[i]), (int(s) for s in slots),
                                            strict=True))
            records.take_unused([int(s) for s in free])
            restored[str(tenant)] = records
        with self._lock:
            self._records = restored
            self._names = [str(m) for m in names]
            self._models = {m: j for j, m in enumerate(self._names)}

    def suggest(
        self,
        tenant: str | None,
        embedding: npt.NDArray[np.float32],
        candidates: Sequence[str],
        normalised_costs: Mapping[str, float],
        incumbent: str,
        *,
        cost_weight: float,
        tools: bool = False,
    ) -> MemoryChoice:
        """Score ``candidates`` for one request from the tenant's own neighbours, or say why
        the global router (whose choice is ``incumbent``) should decide instead."""
        name = check_tenant(tenant)
        settings = self.settings_for(name)
        if tools:
            return MemoryChoice(None, Fallback.TOOL_REQUEST, "the request uses tools; past "
                                "outcomes do not say which model handles them")
        with self._lock:
            records = self._records.get(name)
            n = 0 if records is None else len(records.slots)
            if records is None or n < max(settings.min_records, 1):
                return MemoryChoice(None, Fallback.COLD_START, f"{n} outcome(s) remembered for "
                                    f"this tenant; the memory answers from "
                                    f"{max(settings.min_records, 1)}")
            slots = records.used()
            vectors = records.vectors[slots]
            model_ids = records.model[slots]
            qualities = records.quality[slots]
            names = list(self._names)
        sims = vectors @ np.asarray(embedding, dtype=np.float32).reshape(-1)
        order = np.argsort(-sims, kind="stable")[: settings.k]
        near = order[sims[order] >= settings.min_similarity]
        if len(near) < settings.min_neighbours:
            return MemoryChoice(None, Fallback.SPARSE_NEIGHBOURHOOD, f"{len(near)} remembered "
                                f"prompt(s) are at least {settings.min_similarity:g} similar; "
                                f"the memory needs {settings.min_neighbours}", neighbours=len(near))
        alpha = settings.alpha if settings.alpha is not None else cost_weight
        stats: dict[str, tuple[float, int]] = {}
        for model in candidates:
            if model not in names:
                continue
            mine = qualities[near][model_ids[near] == names.index(model)]
            if len(mine):
                stats[model] = (float(mine.mean()), len(mine))
        scores = {m: q - alpha * normalised_costs[m]
                  - (0.0 if m == incumbent else settings.switch_penalty)
                  for m, (q, _) in stats.items()}
        if len(scores) < 2:
            return MemoryChoice(None, Fallback.LOW_CONFIDENCE, "fewer than two candidates have "
                                "outcomes among the neighbours, so the memory cannot compare",
                                scores, len(near))
        ranked = sorted(scores, key=lambda m: (-scores[m], normalised_costs[m]))
        best, second = ranked[0], ranked[1]
        confidence = _beats(scores[best] - scores[second], stats[best], stats[second])
        if confidence < settings.confidence_floor:
            return MemoryChoice(None, Fallback.LOW_CONFIDENCE, f"{best} leads {second} by "
                                f"{scores[best] - scores[second]:.3f} on {len(near)} neighbours: "
                                f"confidence {confidence:.2f} is below the floor "
                                f"{settings.confidence_floor:g}", scores, len(near), confidence)
        return MemoryChoice(best, None, f"{best} scores best on {len(near)} similar outcomes of "
                            f"this tenant (confidence {confidence:.2f})", scores, len(near),
                            confidence)



def _beats(margin: float, a: tuple[float, int], b: tuple[float, int]) -> float:
    """P(the winner really leads), a normal approximation on the neighbours' mean qualities."""
    var = 0.0
    for q, n in (a, b):
        p = min(max(q, 0.05), 0.95)
        var += p * (1.0 - p) / n
    return 0.5 * (1.0 + math.erf(margin / math.sqrt(2.0 * var)))
