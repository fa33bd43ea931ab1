"""Feedback events: the one record learning state is rebuilt from.

Every outcome a router learns from becomes a :class:`FeedbackEvent` holding everything needed to
apply it again: which decision, tenant and model, the quality, the prompt's vector (or, for
policies that read text, the units it fell in), the evidence weight and a timestamp. Learning
state is a deterministic fold over events in order, so a service appends events to its store
and replays them on restart or reload; a :class:`FeedbackLog` is that store's protocol, and
:class:`InMemoryFeedbackLog` the in-process one.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from switchpoint._json import plain_str
from switchpoint._limits import MAX_TENANTS as MAX_TENANTS
from switchpoint._messages import json_quoted, too_long
from switchpoint._names import MAX_NAME, NAME, NAME_RULE
from switchpoint._numbers import boolean, checked_number
from switchpoint._pickling import LOCK, RemadeOnLoad, remade
from switchpoint._redact import redact
from switchpoint.catalog import MAX_ANSWER_COST

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
from switchpoint.errors import InvalidInputError

#: The deployment's own tenant: what ``tenant=None`` means everywhere.
DEFAULT_TENANT = "default"
#: The longest tenant name a door takes (the config, HTTP, the command line, a key, a
#: ``Gateway``'s or a ``Router``'s ``tenant=``): the config's names' bound.
MAX_TENANT_NAME = MAX_NAME


def tenant_name_problem(name: str) -> str | None:
    """Why ``name`` is no tenant's name (past :data:`MAX_TENANT_NAME` characters, or not of
    :data:`~switchpoint._names.NAME_RULE`), or None when it is one."""
    if len(name) > MAX_TENANT_NAME:
        return too_long(MAX_TENANT_NAME, len(name))
    return None if NAME.fullmatch(name) else f"must be {NAME_RULE}"


def check_tenant(tenant: object, field_name: str = "tenant") -> str:
    """The one rule for a tenant's name, at every door that takes one: ``None`` → the default
    tenant; otherwise a name :func:`tenant_name_problem` finds nothing wrong with. The bound
    is for new input: what a store already holds under a longer name (written by an older
    version) is read and replayed as it is (see :func:`tenant_key`)."""
    if tenant is None:
        return DEFAULT_TENANT
    if not isinstance(tenant, str) or not tenant.strip():
        raise InvalidInputError(field_name, f"must be a non-empty tenant name or None (the "
                                            f"deployment's own), got {json_quoted(tenant)}")
    tenant = plain_str(tenant)  # (its own characters checked and kept, whatever it says)
    problem = tenant_name_problem(tenant)
    if problem is not None:
        # (quoted redacted: a key pasted where the tenant goes is not repeated)
        raise InvalidInputError(field_name, f"{json_quoted(redact(tenant), 40)} {problem}")
    return tenant


def tenant_key(tenant: str | None) -> str:
    """The tenant a stored row or a reader names (``None``: the default tenant), taken as it
    is: a name a store holds was checked when it was written, by the rule of its day."""
    return DEFAULT_TENANT if tenant is None else tenant


def check_quality(quality_score: object, success: object) -> float:
    """Exactly one of a quality score in ``[0, 1]`` or a success flag, as a quality."""
    if (quality_score is None) == (success is None):
        raise InvalidInputError("quality_score", "give exactly one of quality_score (0..1) or "
                                                 "success (True/False)")
    if success is not None:
        flag = boolean(success)
        if flag is None:
            raise InvalidInputError("success", f"must be True or False, got {json_quoted(success)}")
        return 1.0 if flag else 0.0
    q = checked_number("quality_score", quality_score)
    if q is None:
        raise InvalidInputError("quality_score", f"must be a number in [0, 1], got "
                                                 f"{json_quoted(quality_score)}")
    if math.isnan(q):
        raise InvalidInputError("quality_score", "is NaN; give a number in [0, 1]")
    if not 0.0 <= q <= 1.0:
        raise InvalidInputError("quality_score", f"is {q}; it must be in [0, 1] (1 = best)")
    return q




def check_cost(cost: object) -> float | None:
    """What an answer cost, if reported: a finite number in ``[0, MAX_ANSWER_COST]`` (or
    None)."""
    if cost is None:
        return None
    value = checked_number("cost", cost)
    if value is None:
        raise InvalidInputError("cost", f"must be a number >= 0 (what the answer cost), got "
                                        f"{json_quoted(cost)}")
    if not math.isfinite(value) or value < 0.0:
        raise InvalidInputError("cost", f"is {value}; give what the answer cost, a finite "
                                        "number >= 0")
    if value > MAX_ANSWER_COST:
        raise InvalidInputError("cost", f"is {value:g}; one answer costs at most "
                                        f"{MAX_ANSWER_COST:g} (USD): check the units")
    return value


@dataclass(frozen=True)
class FeedbackEvent:
    """One outcome of one decision, self-contained for replay.

    ``embedding`` is the prompt's vector (what embedding policies learn from); ``units`` the
    routing units and their weights the decision used (what text policies learn from).
    ``weight`` scales the evidence (1 = one labelled prompt). A later event with the same
    ``decision_id`` and tenant replaces an earlier one. ``model`` is the learned profile the
    outcome teaches; ``served`` the catalog model that answered, when that name differs (a
    gateway's catalog maps its own names onto profiles). ``cost`` is the decision's expected
    cost of the model it chose; ``measured_cost``, when known (reported by the caller, or the
    gateway's own accounting of the answer), what the answer really cost, in the weights' cost
    units (see ``Router.learnable_cost``), which teaches the cost of the prompt's units.
    """

    decision_id: str
    model: str
    quality: float
    tenant: str = DEFAULT_TENANT
    # Left out of repr(): hundreds of numbers that would bury the fields a reader looks for.
    embedding: tuple[float, ...] | None = field(default=None, repr=False)
    units: tuple[tuple[int, float], ...] | None = field(default=None, repr=False)
    chosen: str | None = None
    cost: float | None = None
    weight: float = 1.0
    timestamp: float = field(default_factory=time.time)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    served: str | None = None
    measured_cost: float | None = None

    @property
    def served_model(self) -> str:
        """The catalog model that answered (the profile's own name when none was given)."""
        return self.served or self.model

    def vector(self) -> npt.NDArray[np.float32] | None:
        """The embedding as a ``(1, d)`` float32 row (exactly the vector that was routed)."""
        if self.embedding is None:
            return None
        import numpy as np  # (here alone: the commands that read events use no array)

        return np.asarray(self.embedding, dtype=np.float32).reshape(1, -1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back exactly (floats round-trip)."""
        return {
            "event_id": self.event_id, "decision_id": self.decision_id, "tenant": self.tenant,
            "model": self.model, "quality": self.quality, "chosen": self.chosen,
            "cost": self.cost, "weight": self.weight, "timestamp": self.timestamp,
            "embedding": None if self.embedding is None else list(self.embedding),
            "units": None if self.units is None else [list(u) for u in self.units],
            "served": self.served, "measured_cost": self.measured_cost,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedbackEvent:
        try:
            embedding = data.get("embedding")
            units = data.get("units")
            return cls(
                decision_id=str(data["decision_id"]), model=str(data["model"]),
                quality=float(data["quality"]), tenant=str(data.get("tenant", DEFAULT_TENANT)),
                embedding=None if embedding is None else tuple(float(x) for x in embedding),
                units=None if units is None else tuple((int(u), float(w)) for u, w in units),
                chosen=data.get("chosen"),
                cost=None if data.get("cost") is None else float(data["cost"]),
                weight=float(data.get("weight", 1.0)), timestamp=float(data["timestamp"]),
                event_id=str(data["event_id"]),
                served=None if data.get("served") is None else str(data["served"]),
                measured_cost=(None if data.get("measured_cost") is None
                               else float(data["measured_cost"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError("event", f"is not a feedback event ({json_quoted(exc)}); it "
                                             "needs "
                                             "decision_id, model, quality, timestamp and "
                                             "event_id") from None


@runtime_checkable
class FeedbackLog(Protocol):
    """Where feedback events are kept so learning state can be rebuilt: append in order,
    replay in the same order (all tenants, or one). ``append`` returns once the event is kept
    and raises if it cannot be: the event is then not learned."""

    def append(self, event: FeedbackEvent) -> None: ...

    def replay(self, tenant: str | None = None) -> Iterator[FeedbackEvent]: ...


class InMemoryFeedbackLog(RemadeOnLoad):
    """A :class:`FeedbackLog` in a list (thread-safe). A service uses its durable store."""

    _remade = remade(_lock=LOCK)

    def __init__(self, events: Iterable[FeedbackEvent] = ()) -> None:
        self._events: list[FeedbackEvent] = list(events)
        self._lock = threading.Lock()

    def append(self, event: FeedbackEvent) -> None:
        with self._lock:
            self._events.append(event)

    def replay(self, tenant: str | None = None) -> Iterator[FeedbackEvent]:
        with self._lock:
            events = list(self._events)
        return iter([e for e in events if tenant is None or e.tenant == tenant])

    def __len__(self) -> int:
        return len(self._events)
