"""The outcomes a table overlay holds, one per decision, packed into arrays.

An overlay remembers each outcome it may have to replace (its model, the units and weights it
was learned on, its error, quality, evidence weight and measured cost) so that a repeat for
the same decision can take it back exactly. Tens of thousands of them per tenant made a Python
object each (a dict entry, a record, two small numpy arrays and the id): about 620 bytes an
outcome of ten units. :class:`HeldOutcomes` keeps the same facts in a few flat arrays instead:

- the decision ids' bytes in one buffer (an id of lowercase hexadecimal digits, as the router
  writes them, as the bytes those digits spell: 16 for a 32-digit id), found again through an
  open-addressing table of positions keyed by the bytes' hash;
- each outcome's numbers in one array per field, at its position (oldest first);
- the units (the smallest unsigned integer type that holds every unit so far) and their
  weights (float64: exactly as learned, so that taking an outcome back leaves exactly what was
  there) in one buffer each, in the order of the positions.

A position whose outcome was replaced or let go is dead until the arrays are packed again,
when the room runs out: every live outcome is then copied, in order, to arrays a quarter
larger than they need, which keeps each outcome's cost amortised constant and the room never
more than about a quarter more than what is held.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

_HEX = re.compile("(?:[0-9a-f]{2})+")
_EMPTY, _DEAD = -1, -2  # table entries that hold no position (never one / no longer)
_UNIT_TYPES = (np.uint8, np.uint16, np.uint32, np.int64)
_SLICE = 1 << 16  # values packed at a time
# A held outcomes' arrays, and the views of those read and written one value at a time (see
# HeldOutcomes._view).
_ARRAYS = ("_model", "_kind", "_key_end", "_data_end", "_error", "_quality", "_weight", "_cost",
           "_keys", "_table", "_units", "_weights")
_VIEWS = tuple(f"_v_{name}" for name in ("model", "kind", "key_end", "data_end", "error",
                                          "quality", "weight", "cost", "keys", "table"))


@dataclass(frozen=True)
class Outcome:
    """One held outcome: its model's index, the units it was learned on and their weights,
    its error, quality, evidence weight and the answer's measured cost (None: not reported)."""

    model: int
    units: Ints
    weights: Floats
    error: float
    quality: float
    weight: float
    cost: float | None = None


def _encoded(decision_id: str) -> tuple[bytes, int]:
    """The bytes an id is kept as and how to read them back (1: hexadecimal digits, 0: text)."""
    if _HEX.fullmatch(decision_id):
        return bytes.fromhex(decision_id), 1
    return decision_id.encode("utf-8", "surrogatepass"), 0


def _decoded(key: bytes, kind: int) -> str:
    return key.hex() if kind else key.decode("utf-8", "surrogatepass")


def _spans(starts: Ints, lengths: Ints) -> Ints:
    """The indices of every span ``starts[i]`` to ``starts[i] + lengths[i]``, in order."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(shift, lengths)


def _room(n: int, least: int) -> int:
    """The size of an array holding ``n`` things with room for a quarter more (``least``
    more at the least)."""
    return n + max(least, n // 4)


def _packed(values: npt.NDArray[Any], keep: npt.NDArray[np.bool_] | None, size: int,
            fill: int = 0) -> npt.NDArray[Any]:
    """A new array of ``size``: the ``values`` ``keep`` says (all: None), then ``fill``. Taken
    a slice at a time: ``np.compress`` and a boolean index build the whole selection (or its
    indices) first, which at the largest array (the weights) doubled the memory a pack takes."""
    out = np.empty(size, dtype=values.dtype)
    if keep is None:
        out[:len(values)] = values
        n = len(values)
    else:
        n, values = 0, values[:len(keep)]
        for start in range(0, len(keep), _SLICE):
            kept = values[start:start + _SLICE][keep[start:start + _SLICE]]
            out[n:n + len(kept)] = kept
            n += len(kept)
    out[n:] = fill
    return out


@functools.cache
def _nothing() -> dict[str, Any]:
    """The arrays and views of held outcomes with no room, read-only, shared by all."""
    arrays: dict[str, npt.NDArray[Any]] = {
        "_model": np.zeros(0, dtype=np.int32), "_kind": np.zeros(0, dtype=np.uint8),
        "_key_end": np.zeros(0, dtype=np.int64), "_data_end": np.zeros(0, dtype=np.int64),
        "_keys": np.zeros(0, dtype=np.uint8), "_units": np.zeros(0, dtype=np.uint8),
        "_table": np.full(2, _EMPTY, dtype=np.int32),
        **{name: np.zeros(0) for name in ("_error", "_quality", "_weight", "_cost", "_weights")}}
    for array in arrays.values():
        array.setflags(write=False)
    return {**arrays, **{view: arrays[view.replace("_v_", "_", 1)].data for view in _VIEWS}}


def _unit_type(largest: int) -> type[np.integer]:
    return next(t for t in _UNIT_TYPES if largest <= np.iinfo(t).max)


@dataclass(frozen=True)
class Snapshot:
    """The held outcomes at one moment, oldest first: their ids and each field's values
    (``units`` and ``weights`` built when asked for, from buffers never written again)."""

    ids: list[str]
    model: Ints
    error: Floats
    quality: Floats
    weight: Floats
    cost: Floats  # NaN: not reported
    length: Ints
    units: Callable[[], Ints]
    weights: Callable[[], Floats]


class HeldOutcomes:
    """Outcomes by decision id, oldest first, at most ``capacity`` (the oldest let go past
    it): an ordered mapping packed into arrays (see the module docstring)."""

    __slots__ = ("capacity", "_live", "_head", "_n", "_key_used", "_data_used", "_unit_max",
                 "_last", *_ARRAYS, *_VIEWS)
    _units: npt.NDArray[np.integer]
    _weights: Floats

    def __init__(self, capacity: int) -> None:
        if not 0 < capacity < 2**30:
            raise ValueError(f"capacity must be in 1..{2**30 - 1}, got {capacity}")
        self.capacity = capacity
        self._live = 0
        self._head = 0  # positions before it are dead
        self._n = self._key_used = self._data_used = 0  # positions, key bytes and units used
        self._unit_max = int(np.iinfo(np.uint8).max)
        self._last: tuple[str | None, tuple[bytes, int]] = (None, (b"", 0))
        # No room yet, in arrays every empty one shares (read-only: the first put packs them
        # into arrays of its own), so that a tenant that reports nothing costs next to nothing.
        for name, value in _nothing().items():
            setattr(self, name, value)

    def __len__(self) -> int:
        return self._live

    def __getstate__(self) -> dict[str, Any]:
        # The table is left out: the ids' hashes differ from one process to the next (Python
        # seeds them at random), so a copy that travels to another one makes its own. (The
        # views are made anew with it.)
        return {k: getattr(self, k) for k in self.__slots__
                if k != "_table" and k not in _VIEWS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._repack(0, 0)

    def __contains__(self, decision_id: str) -> bool:
        return self._find(*self._encoded(decision_id))[1] >= 0

    def get(self, decision_id: str) -> Outcome | None:
        """The outcome held for ``decision_id``, or None."""
        p = self._find(*self._encoded(decision_id))[1]
        return None if p < 0 else self._outcome(p)

    def pop(self, decision_id: str) -> Outcome | None:
        """The outcome held for ``decision_id``, which is no longer held, or None."""
        slot, p = self._find(*self._encoded(decision_id))
        if p < 0:
            return None
        outcome = self._outcome(p)
        self._kill(slot, p)
        return outcome

    def put(self, decision_id: str, outcome: Outcome) -> None:
        """Hold ``outcome`` for ``decision_id`` (not held: :meth:`pop` it first) as the newest,
        then let the oldest go past :attr:`capacity`."""
        key, kind = self._encoded(decision_id)
        n_units = len(outcome.units)
        if n_units and (largest := int(outcome.units.max())) > self._unit_max:
            self._units = self._units.astype(_unit_type(largest))
            self._unit_max = int(np.iinfo(self._units.dtype).max)
        n = self._n
        if (n == len(self._v_model) or self._key_used + len(key) > len(self._keys)
                or self._data_used + n_units > len(self._weights)):
            self._repack(len(key), n_units)
            n = self._n
        k0, d0 = self._key_used, self._data_used
        self._v_keys[k0:k0 + len(key)] = key
        self._units[d0:d0 + n_units] = outcome.units
        self._weights[d0:d0 + n_units] = outcome.weights
        self._key_used, self._data_used = k0 + len(key), d0 + n_units
        self._v_key_end[n], self._v_data_end[n] = self._key_used, self._data_used
        self._v_kind[n], self._v_model[n] = kind, outcome.model
        self._v_error[n], self._v_quality[n], self._v_weight[n] = (
            outcome.error, outcome.quality, outcome.weight)
        self._v_cost[n] = math.nan if outcome.cost is None else outcome.cost
        self._n = n + 1
        self._live += 1
        table = self._v_table
        mask = len(table) - 1
        slot = hash(key) & mask
        while table[slot] >= 0:  # (an entry no longer in use is taken again)
            slot = (slot + 1) & mask
        table[slot] = n
        while self._live > self.capacity:
            self._let_oldest_go()

    def snapshot(self) -> Snapshot:
        """The outcomes held now, oldest first (copies: later changes leave it as it is)."""
        live = np.flatnonzero(self._model[:self._n] >= 0)
        key_end, data_end = self._key_end[live], self._data_end[live]
        key_start, data_start = self._starts(live)
        keys, kinds = self._keys, self._kind[live]
        key_len = key_end - key_start
        raw = keys[_spans(key_start, key_len)].tobytes()
        if len(live) and kinds.all() and (key_len == key_len[0]).all():
            # (every id of as many hexadecimal digits, as the router writes them: at once)
            digits, width = raw.hex(), 2 * int(key_len[0])
            ids = [digits[at:at + width] for at in range(0, len(digits), width)]
        else:
            ids, at = [], 0
            for length, kind in zip(key_len.tolist(), kinds.tolist(), strict=True):
                ids.append(_decoded(raw[at:at + length], kind))
                at += length
        length = data_end - data_start
        units, weights = self._units, self._weights  # written again only past their ends
        return Snapshot(ids, self._model[live].astype(np.int64), self._error[live],
                        self._quality[live], self._weight[live], self._cost[live], length,
                        lambda: units[_spans(data_start, length)].astype(np.int64),
                        lambda: weights[_spans(data_start, length)])

    @classmethod
    def of(cls, capacity: int, ids: list[str], model: Ints, error: Floats, quality: Floats,
           weight: Floats, cost: Floats, length: Ints, units: Ints, weights: Floats
           ) -> HeldOutcomes:
        """The outcomes a :meth:`snapshot` held (checked by the caller; an id held twice is a
        ``ValueError``), oldest first. More than ``capacity`` are all held, the oldest let go
        at the next :meth:`put`."""
        if len(set(ids)) != len(ids):
            raise ValueError("an id is held twice")
        held = cls(capacity)
        encoded = [_encoded(i) for i in ids]
        n = len(ids)
        key = b"".join(k for k, _ in encoded)
        if len(units):
            held._units = held._units.astype(_unit_type(int(units.max())))
            held._unit_max = int(np.iinfo(held._units.dtype).max)
        held._pack(n, len(key), int(length.sum()))
        held._keys[:len(key)] = np.frombuffer(key, dtype=np.uint8)
        held._key_end[:n] = np.cumsum([len(k) for k, _ in encoded])
        held._kind[:n] = [k for _, k in encoded]
        held._data_end[:n] = np.cumsum(length)
        held._units[:len(units)] = units
        held._weights[:len(weights)] = weights
        held._model[:n], held._error[:n], held._quality[:n] = model, error, quality
        held._weight[:n], held._cost[:n] = weight, cost
        held._n, held._live = n, n
        held._key_used, held._data_used = len(key), len(units)
        held._index()
        return held

    # Internals --------------------------------------------------------------------------------

    def _encoded(self, decision_id: str) -> tuple[bytes, int]:
        """:func:`_encoded`, remembered for the last id (an event's is looked up three or four
        times: checked, taken back, held)."""
        if decision_id is not self._last[0]:
            self._last = (decision_id, _encoded(decision_id))
        return self._last[1]

    def _outcome(self, p: int) -> Outcome:
        start, end = self._v_data_end[p - 1] if p else 0, self._v_data_end[p]
        cost = self._v_cost[p]
        return Outcome(self._v_model[p], self._units[start:end].astype(np.int64),
                       self._weights[start:end].copy(), self._v_error[p], self._v_quality[p],
                       self._v_weight[p], None if math.isnan(cost) else cost)

    def _key(self, p: int) -> bytes:
        return bytes(self._v_keys[self._v_key_end[p - 1] if p else 0:self._v_key_end[p]])

    def _starts(self, positions: Ints) -> tuple[Ints, Ints]:
        """Where the keys and the data of ``positions`` start."""
        before = positions - 1
        key_start = np.where(positions > 0, self._key_end[before], 0)
        data_start = np.where(positions > 0, self._data_end[before], 0)
        return key_start.astype(np.int64), data_start.astype(np.int64)

    def _find(self, key: bytes, kind: int) -> tuple[int, int]:
        """The table slot and position of the outcome held for ``key`` (-1, -1: none)."""
        table = self._v_table
        mask = len(table) - 1
        slot = hash(key) & mask
        while (p := table[slot]) != _EMPTY:
            if p >= 0 and self._v_kind[p] == kind and self._key(p) == key:
                return slot, p
            slot = (slot + 1) & mask
        return -1, -1

    def _kill(self, slot: int, p: int) -> None:
        self._v_table[slot] = _DEAD
        self._v_model[p] = -1
        self._live -= 1

    def _let_oldest_go(self) -> None:
        while self._v_model[self._head] < 0:
            self._head += 1
        p = self._head
        table = self._v_table
        mask = len(table) - 1
        slot = hash(self._key(p)) & mask
        while table[slot] != p:
            slot = (slot + 1) & mask
        self._kill(slot, p)

    def _view(self) -> None:
        """Views of the arrays that read and write one value at a time as a Python number (a
        numpy array's item is many times slower): made again whenever an array is."""
        self._v_model, self._v_kind = self._model.data, self._kind.data
        self._v_key_end, self._v_data_end = self._key_end.data, self._data_end.data
        self._v_error, self._v_quality, self._v_weight, self._v_cost = (
            cast("memoryview[float]", a.data)
            for a in (self._error, self._quality, self._weight, self._cost))
        self._v_keys, self._v_table = self._keys.data, self._table.data

    def _pack(self, n: int, n_key: int, n_data: int) -> None:
        """Empty arrays for ``n`` outcomes of ``n_key`` key bytes and ``n_data`` units (of the
        units' type so far), with room for more (see :func:`_room`)."""
        cap = _room(n, 8)
        self._model = np.full(cap, -1, dtype=np.int32)
        self._kind = np.zeros(cap, dtype=np.uint8)
        self._key_end = np.zeros(cap, dtype=np.int64)
        self._data_end = np.zeros(cap, dtype=np.int64)
        self._error, self._quality, self._weight, self._cost = (np.zeros(cap) for _ in range(4))
        self._keys = np.zeros(_room(n_key, 128), dtype=np.uint8)
        self._units = np.zeros(_room(n_data, 64), dtype=self._units.dtype)
        self._weights = np.zeros(len(self._units))
        self._new_table(cap)
        self._n = self._key_used = self._data_used = self._head = 0
        self._view()

    def _new_table(self, cap: int) -> None:
        # At most half full, counting dead entries: each position takes one until the next pack.
        self._table = np.full(1 << (2 * cap - 1).bit_length(), _EMPTY, dtype=np.int32)

    def _repack(self, n_key: int, n_data: int) -> None:
        """Pack the live outcomes again, in order, with room for one of ``n_key`` key bytes
        and ``n_data`` units more: one array after the other, each let go once copied, so the
        memory taken on the way is about that of the largest."""
        n = self._n
        alive = self._model[:n] >= 0
        key_len = np.diff(self._key_end[:n], prepend=0)
        data_len = np.diff(self._data_end[:n], prepend=0)
        live = int(alive.sum())
        cap = _room(live, 8)
        self._model = _packed(self._model, alive, cap, -1)
        self._kind = _packed(self._kind, alive, cap)
        self._error, self._quality, self._weight, self._cost = (
            _packed(a, alive, cap) for a in (self._error, self._quality, self._weight,
                                             self._cost))
        self._key_end = _packed(np.cumsum(key_len[alive]), None, cap)
        self._data_end = _packed(np.cumsum(data_len[alive]), None, cap)
        self._key_used = int(self._key_end[live - 1]) if live else 0
        self._data_used = int(self._data_end[live - 1]) if live else 0
        self._keys = _packed(self._keys[:int(key_len.sum())], np.repeat(alive, key_len),
                             _room(self._key_used + n_key, 128))
        data_alive = np.repeat(alive, data_len)
        size = _room(self._data_used + n_data, 64)
        self._units = _packed(self._units[:len(data_alive)], data_alive, size)
        self._weights = _packed(self._weights[:len(data_alive)], data_alive, size)
        self._n, self._head = live, 0
        self._new_table(cap)
        self._index()
        self._view()

    def _index(self) -> None:
        """Enter every position (all live, none entered) into the empty table: each id's
        entry at the first slot free from its hash on, as :meth:`put` would, all at once."""
        n = self._n
        if not n:
            return
        ends = self._key_end[:n].tolist()
        raw = self._keys[:ends[-1]].tobytes()
        mask = len(self._table) - 1
        slot = np.array([hash(raw[a:b]) & mask for a, b in zip([0, *ends[:-1]], ends,
                                                                 strict=True)], dtype=np.int64)
        pending = np.arange(n, dtype=np.int64)
        while len(pending):
            # Each pending id takes its slot if free (the first of those wanting it), or
            # looks at the next one in the next round.
            at = slot[pending]
            free = np.flatnonzero(self._table[at] == _EMPTY)
            taken, first = np.unique(at[free], return_index=True)
            self._table[taken] = pending[free[first]]
            waiting = np.ones(len(pending), dtype=bool)
            waiting[free[first]] = False
            pending = pending[waiting]
            slot[pending] = (slot[pending] + 1) & mask
