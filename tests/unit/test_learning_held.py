"""Held outcomes: an overlay's outcomes by decision, packed into arrays, behave as an ordered
mapping bounded to its capacity, and cost a small, fixed number of bytes each."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import tracemalloc
import uuid
from collections import OrderedDict

import numpy as np
import pytest

from switchpoint.learning import overlay as overlay_module
from switchpoint.learning.checkpoint import CheckpointError
from switchpoint.learning.events import FeedbackEvent
from switchpoint.learning.held import HeldOutcomes, Outcome
from switchpoint.learning.overlay import ClusterOverlay
from switchpoint.policies import ClusterPolicy
from switchpoint.weights import load_weights


def _outcome(rng: np.random.Generator, largest_unit: int) -> Outcome:
    n = int(rng.integers(0, 6))
    units = rng.choice(largest_unit + 1, size=min(n, largest_unit + 1), replace=False)
    return Outcome(int(rng.integers(0, 5)), units.astype(np.int64), rng.random(len(units)),
                   float(rng.random()), float(rng.random()), float(rng.random() * 3),
                   None if rng.random() < 0.5 else float(rng.random()))


def _same(a: Outcome | None, b: Outcome | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert (a.model, a.error, a.quality, a.weight, a.cost) == (
            b.model, b.error, b.quality, b.weight, b.cost)
        assert a.units.dtype == np.int64 and np.array_equal(a.units, b.units)
        assert a.weights.tobytes() == b.weights.tobytes()


def test_held_outcomes_keep_an_ordered_dicts_order_repeats_and_bound() -> None:
    """Random puts, repeats, pops and lookups against an OrderedDict bounded the same way, over
    ids of every shape (hexadecimal digits, odd, upper-case, text, empty) and units that
    outgrow each integer type; snapshots and what is rebuilt from them agree with it."""
    rng = np.random.default_rng(7)
    ids = ([uuid.UUID(int=int(i) * 7919).hex for i in range(40)]
           + ["abc", "ABCD", "0a", "", "s1", "d\u00e9cision", "\ud800x", "00", "0000"])
    held, expected = HeldOutcomes(capacity=25), OrderedDict[str, Outcome]()
    largest = 200
    for step in range(3000):
        if step == 1000:
            largest = 70_000  # past uint16
        if step == 2000:
            largest = 2**33  # past uint32
        decision = ids[int(rng.integers(len(ids)))]
        action = rng.random()
        if action < 0.6:
            _same(held.pop(decision), expected.pop(decision, None))
            outcome = _outcome(rng, largest)
            held.put(decision, outcome)
            expected[decision] = outcome
            while len(expected) > 25:
                expected.popitem(last=False)
        elif action < 0.7:
            _same(held.pop(decision), expected.pop(decision, None))
        else:
            _same(held.get(decision), expected.get(decision))
            assert (decision in held) == (decision in expected)
        assert len(held) == len(expected)
        if step % 250 == 0 or step == 2999:
            snap = held.snapshot()
            assert snap.ids == list(expected)
            again = HeldOutcomes.of(25, snap.ids, snap.model, snap.error, snap.quality,
                                    snap.weight, snap.cost, snap.length, snap.units(),
                                    snap.weights())
            for i, decision in enumerate(snap.ids):
                _same(again.get(decision), expected[decision])
                assert snap.model[i] == expected[decision].model
    with pytest.raises(ValueError, match="held twice"):
        HeldOutcomes.of(5, ["a", "a"], np.zeros(2, dtype=np.int64), *(np.zeros(2),) * 4,
                        np.zeros(2, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))


def test_a_snapshot_stays_as_it_was_while_outcomes_come_and_go() -> None:
    held = HeldOutcomes(capacity=3)
    for i in range(3):
        held.put(f"{i:02x}", Outcome(i, np.array([i, 9]), np.array([0.5, 0.25]), 0.1, 0.9, 1.0))
    snap = held.snapshot()
    for i in range(3, 200):  # repacked many times over, the snapshot's outcomes all let go
        held.pop("01")
        held.put(f"{i:04x}", Outcome(1, np.array([7]), np.array([1.0]), 0.2, 0.8, 1.0))
    assert snap.ids == ["00", "01", "02"] and snap.model.tolist() == [0, 1, 2]
    assert snap.units().tolist() == [0, 9, 1, 9, 2, 9]
    assert snap.weights().tolist() == [0.5, 0.25] * 3
    assert list(held.snapshot().ids) == ["00c5", "00c6", "00c7"]


def _event(i: int, did: str, units: tuple[tuple[int, float], ...]) -> FeedbackEvent:
    return FeedbackEvent(decision_id=did, model=f"m{i}", quality=0.5, units=units)


def test_an_overlay_lets_its_oldest_outcome_go_past_its_bound_and_a_repeat_renews_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    policy = load_weights().policy
    assert isinstance(policy, ClusterPolicy)
    monkeypatch.setattr(overlay_module, "REPLACEABLE_OUTCOMES", 3)
    overlay = ClusterOverlay(policy)
    model = policy.models_[0]

    def report(did: str, quality: float) -> float | None:
        return overlay.apply(FeedbackEvent(decision_id=did, model=model, quality=quality,
                                           units=((1, 0.75), (4, 0.25))))

    for did in ("aa", "bb", "cc"):
        assert report(did, 0.5) is None
    assert report("aa", 0.25) == 0.5  # replaced, and now the newest
    assert report("dd", 0.5) is None  # past the bound: bb, the oldest, is let go
    assert overlay.outcome("bb") is None and overlay.outcome("aa") is not None
    assert report("bb", 0.5) is None  # learned as a new outcome (cc let go)
    assert overlay.state().meta["seen"] == ["aa", "dd", "bb"]
    assert (overlay.n_events, overlay.n_outcomes) == (6, 5)
    again = ClusterOverlay(policy)
    again.restore(overlay.state())
    assert again.apply(FeedbackEvent(decision_id="aa", model=model, quality=1.0,
                                     units=((1, 0.75), (4, 0.25)))) == 0.25
    assert again.state().meta["seen"] == ["dd", "bb", "aa"]
    twice = overlay.state()
    twice.meta["seen"] = ["aa", "dd", "aa"]
    with pytest.raises(CheckpointError, match="remembers a decision twice"):
        ClusterOverlay(policy).restore(twice)


def test_an_overlay_holds_an_outcome_of_ten_units_in_a_few_hundred_bytes() -> None:
    """Held as a record, two numpy arrays, an ordered dict's entry and its id an outcome took
    about 620 bytes; packed, about 200 (the bound leaves room)."""
    policy = load_weights().policy
    assert isinstance(policy, ClusterPolicy)
    overlay = ClusterOverlay(policy)
    rng = np.random.default_rng(0)
    n = 2000
    events = []
    for i in range(n):
        units = np.sort(rng.choice(policy.n_units, size=10, replace=False))
        weights = rng.dirichlet(np.ones(10))
        events.append(FeedbackEvent(
            decision_id=uuid.UUID(int=int(rng.integers(2**63)) << 64 | i).hex,
            model=policy.models_[i % len(policy.models_)], quality=float(rng.random()),
            units=tuple(zip(units.tolist(), weights.tolist(), strict=True)),
            measured_cost=float(rng.random()) * 1e-3 if i % 2 else None))
    overlay.apply(events[0])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events[1:]:
            overlay.apply(event)
        gc.collect()
        per_outcome = (tracemalloc.get_traced_memory()[0] - before) / (n - 1)
    finally:
        tracemalloc.stop()
    assert overlay.n_outcomes == n
    assert per_outcome < 300, f"{per_outcome:.0f} bytes per outcome held"


_UNPICKLED = """
import pickle, sys
held = pickle.loads(sys.stdin.buffer.read())
print([held.get(i).model for i in ("00ff", "text id", "abc")], len(held))
"""


def test_held_outcomes_pickled_to_a_process_of_another_hash_seed_are_found_there() -> None:
    held = HeldOutcomes(capacity=10)
    for i, did in enumerate(["0a0a", "00ff", "text id", "abc"]):
        held.put(did, Outcome(i, np.array([i]), np.array([0.5]), 0.5, 0.5, 1.0))
    held.pop("00ff")
    held.put("00ff", Outcome(7, np.array([1]), np.array([1.0]), 0.5, 0.5, 1.0))
    found = subprocess.run([sys.executable, "-c", _UNPICKLED], input=pickle.dumps(held),
                           capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert found.stdout.decode() == "[7, 2, 3] 4\n"


def test_held_outcomes_with_none_yet_hold_no_room_and_take_outcomes_after_a_copy() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        empty = [HeldOutcomes(capacity=100) for _ in range(100)]
        each = (tracemalloc.get_traced_memory()[0] - before) / len(empty)
    finally:
        tracemalloc.stop()
    assert each < 1000, f"{each:.0f} bytes an empty one"  # (arrays and views of its own: 9 KB)
    copy = pickle.loads(pickle.dumps(empty[0]))
    copy.put("ab", Outcome(1, np.array([3]), np.array([1.0]), 0.5, 0.5, 1.0))
    assert len(copy) == 1 and len(empty[0]) == 0 and "ab" not in empty[1]
