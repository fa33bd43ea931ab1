"""Session pinning: hard/soft/fresh windows, every escape, re-homing, and the pin stores."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from switchpoint.catalog import Catalog, ModelCard
from switchpoint.errors import GatewayClosedError, InvalidInputError, StoreError
from switchpoint.gateway.capabilities import Needs
from switchpoint.gateway.sessions import (
    MAX_SESSION_ID,
    MemoryPinStore,
    Pin,
    PinDecision,
    PinState,
    SessionPinner,
    SQLitePinStore,
    rehome_target,
    session_key,
)
from switchpoint.learning.events import DEFAULT_TENANT
from tests.fakes.full_disk import FULL, FullDisk

T0 = 1_700_000_000.0


def needs(tokens: int = 100, vision: bool = False, tools: bool = False,
          output: int = 0) -> Needs:
    return Needs(vision=vision, tools=tools, prompt_tokens=tokens, last_user_text="hi",
                 output_tokens=output)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog([
        ModelCard("small", tier="moderate", context_window=8_000, input_per_mtok=0.1,
                  output_per_mtok=0.2),
        ModelCard("other-tier-16k", tier="simple", context_window=16_000, input_per_mtok=0.01,
                  output_per_mtok=0.01),
        ModelCard("same-tier-32k", tier="moderate", context_window=32_000, input_per_mtok=2.0,
                  output_per_mtok=2.0),
        ModelCard("same-tier-32k-cheap", tier="moderate", context_window=32_000,
                  input_per_mtok=1.0, output_per_mtok=1.0),
        ModelCard("same-tier-128k", tier="moderate", context_window=128_000,
                  input_per_mtok=0.5, output_per_mtok=0.5, capabilities=("vision",)),
        ModelCard("eyes", tier="moderate", context_window=8_000, capabilities=("vision",)),
    ])


def pinned(pinner: SessionPinner, model: str, at: float = T0) -> str:
    pinner.record("s1", model, at)
    return "s1"


def test_state_values_are_exactly_the_seed_names() -> None:
    assert {s.value for s in PinState} == {
        "fresh", "hard", "soft", "rehomed_context", "evicted_vision", "evicted_missing_model",
        "evicted_context", "evicted_post_failure", "evicted_capability"}


def test_an_explicit_session_id_is_hashed_and_scoped_to_the_tenant() -> None:
    msgs = [{"role": "user", "content": "hello"}]
    key = session_key(" abc ", msgs)
    assert key == session_key("abc", [{"role": "user", "content": "other"}])
    assert key is not None and len(key) == 64 and "abc" not in key
    assert session_key("abc", msgs, scope="team-a") != session_key("abc", msgs, scope="team-b")


def test_an_oversized_session_id_is_refused() -> None:
    assert session_key("x" * MAX_SESSION_ID, []) is not None
    with pytest.raises(InvalidInputError, match="at most 256"):
        session_key("x" * (MAX_SESSION_ID + 1), [])


def test_the_implicit_key_is_the_first_user_message_within_the_caller_scope() -> None:
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    grown = [*first, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
    key = session_key(None, first, scope="10.0.0.1")
    assert key == session_key(None, grown, scope="10.0.0.1")
    assert key == session_key("  ", first, scope="10.0.0.1")
    # Two unrelated callers opening with the same message are not one conversation.
    assert key != session_key(None, first, scope="10.0.0.2")
    assert key != hashlib.sha1(b"hello").hexdigest()


def test_the_implicit_key_of_list_content_and_of_no_user_message() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                          {"type": "image_url", "image_url": {"url": "u1"}}]}]
    other = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                          {"type": "image_url", "image_url": {"url": "u2"}}]}]
    assert session_key(None, parts) != session_key(None, other)
    assert session_key(None, [{"role": "system", "content": "x"}]) is None


def test_no_pin_is_fresh(catalog: Catalog) -> None:
    d = SessionPinner().decide("nobody", catalog, needs(), T0)
    assert d.state is PinState.FRESH and d.pinned_model is None and d.bonus == {}
    assert SessionPinner().decide(None, catalog, needs(), T0).state is PinState.FRESH


@pytest.mark.parametrize(("age", "state"), [
    (0, PinState.HARD), (300, PinState.HARD), (300.5, PinState.SOFT), (1800, PinState.SOFT),
    (1800.5, PinState.FRESH),
])
def test_windows(catalog: Catalog, age: float, state: PinState) -> None:
    p = SessionPinner(hard_window_s=300, soft_window_s=1800, soft_bonus_weight=0.5)
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(), T0 + age)
    assert d.state is state
    assert d.previous_model == "small"
    assert d.age_s == pytest.approx(age)
    if state is PinState.HARD:
        assert d.pinned_model == "small" and d.bypass_router and d.bonus == {}
    elif state is PinState.SOFT:
        assert d.pinned_model is None and not d.bypass_router
        assert d.bonus == {"small": 0.5}
    else:
        assert d.pinned_model is None and d.bonus == {}


def test_a_hard_window_of_zero_pins_no_request_hard_even_at_once(catalog: Catalog) -> None:
    p = SessionPinner(hard_window_s=0, soft_window_s=1800, soft_bonus_weight=0.5)
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(), T0)  # the same instant as the answer that pinned it
    assert d.state is PinState.SOFT and not d.bypass_router and d.bonus == {"small": 0.5}


def test_a_soft_window_of_zero_turns_pinning_off_even_at_once(catalog: Catalog) -> None:
    p = SessionPinner(hard_window_s=0, soft_window_s=0)
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(), T0)
    assert d.state is PinState.FRESH and d.pinned_model is None and d.bonus == {}


def test_zero_soft_bonus_weight_disables_the_bonus(catalog: Catalog) -> None:
    p = SessionPinner(soft_bonus_weight=0.0)
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(), T0 + 600)
    assert d.state is PinState.SOFT and d.bonus == {}


def test_model_removed_from_the_catalog(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "retired-model")
    d = p.decide(s, catalog, needs(), T0 + 10)
    assert d.state is PinState.EVICTED_MISSING_MODEL and d.pinned_model is None


def test_images_evict_a_pin_without_vision(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "small")
    assert p.decide(s, catalog, needs(vision=True), T0 + 10).state is PinState.EVICTED_VISION
    p.record(s, "eyes", T0 + 20)
    d = p.decide(s, catalog, needs(vision=True), T0 + 30)
    assert d.state is PinState.HARD and d.pinned_model == "eyes"


def test_failure_evicts_until_a_model_answers_again(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "small")
    p.evict_on_failure(s, now=T0 + 5)
    d = p.decide(s, catalog, needs(), T0 + 10)
    assert d.state is PinState.EVICTED_POST_FAILURE and d.pinned_model is None
    assert d.previous_model == "small"
    p.record(s, "same-tier-32k", T0 + 12)
    d = p.decide(s, catalog, needs(), T0 + 20)
    assert d.state is PinState.HARD and d.pinned_model == "same-tier-32k"
    p.evict_on_failure("unknown-session")  # harmless
    p.evict_on_failure(None)


def test_a_failure_of_other_models_keeps_the_pin(catalog: Catalog) -> None:
    # A request that went to other models and failed there evicted the pin all the same.
    p = SessionPinner()
    s = pinned(p, "small")
    p.evict_on_failure(s, now=T0 + 5, failed={"same-tier-32k", "eyes"})
    assert p.decide(s, catalog, needs(), T0 + 10).state is PinState.HARD
    p.evict_on_failure(s, now=T0 + 6, failed={"small", "eyes"})
    assert p.decide(s, catalog, needs(), T0 + 10).state is PinState.EVICTED_POST_FAILURE


def test_a_pin_not_followed_says_which_escape_fired() -> None:
    hard = PinDecision(PinState.HARD, pinned_model="small", previous_model="small", age_s=1.0)
    soft = PinDecision(PinState.SOFT, bonus={"small": 0.5}, previous_model="small")
    rehome = PinDecision(PinState.REHOMED_CONTEXT, pinned_model="big", previous_model="small")
    assert (hard.favoured_model, soft.favoured_model, rehome.favoured_model) == (
        "small", "small", "big")
    assert PinDecision(PinState.EVICTED_VISION, previous_model="small").favoured_model is None
    for pin in (hard, soft):
        assert pin.not_followed().state is PinState.EVICTED_MISSING_MODEL
        assert pin.unavailable().state is PinState.EVICTED_POST_FAILURE
    # A re-home that cannot go to its target: the conversation outgrew the pinned model.
    assert rehome.not_followed().state is PinState.EVICTED_CONTEXT
    assert rehome.unavailable().state is PinState.EVICTED_CONTEXT
    assert rehome.after_failure().state is PinState.EVICTED_POST_FAILURE  # (it was called)
    for changed in (hard.not_followed(), soft.unavailable(), rehome.outgrown()):
        assert changed.pinned_model is None and changed.bonus == {}
        assert changed.previous_model == "small" and changed.favoured_model is None


def test_context_overflow_in_the_hard_window_rehomes_same_tier_closest_cheapest(
        catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(tokens=10_000), T0 + 10)
    # other-tier-16k is closer, but the pinned tier wins; of the two 32k models, the cheaper.
    assert d.state is PinState.REHOMED_CONTEXT
    assert d.pinned_model == "same-tier-32k-cheap" and d.bypass_router


def test_rehome_counts_the_answer_budget_and_respects_vision(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "eyes")
    d = p.decide(s, catalog, needs(tokens=7_000, output=2_000, vision=True), T0 + 10)
    assert d.state is PinState.REHOMED_CONTEXT and d.pinned_model == "same-tier-128k"


def test_rehome_skips_a_model_whose_adapter_cannot_send_the_conversations_parts() -> None:
    small = ModelCard("small", context_window=8_000)
    claude = ModelCard("claude", provider="anthropic", context_window=200_000)
    gpt = ModelCard("gpt", provider="openai", context_window=400_000)
    both = Catalog([small, claude, gpt])
    audio = replace(needs(tokens=10_000), parts=frozenset({("user", "input_audio")}))
    assert rehome_target(both, small, needs(tokens=10_000)) == claude  # (the closer window)
    assert rehome_target(both, small, audio) == gpt


def test_a_pin_whose_adapter_cannot_serve_the_request_is_evicted_for_it() -> None:
    claude = ModelCard("claude", provider="anthropic", context_window=200_000)
    gpt = ModelCard("gpt", provider="openai", context_window=400_000)
    pinner = SessionPinner()
    audio = replace(needs(tokens=10), parts=frozenset({("user", "input_audio")}))
    for model in ("claude", "gpt"):
        sid = pinned(pinner, model)
        for asks, evicted in ((needs(tokens=10), False), (audio, model == "claude"),
                              (replace(needs(tokens=10), answers=2), model == "claude")):
            d = pinner.decide(sid, Catalog([claude, gpt]), asks, now=T0 + 10)
            assert d.state is (PinState.EVICTED_CAPABILITY if evicted else PinState.HARD)
            assert d.previous_model == model and d.pinned_model == (None if evicted else model)
    # Nor is a re-home sent to a model whose adapter gives one answer for several.
    small = ModelCard("small", context_window=8_000)
    assert rehome_target(Catalog([small, claude, gpt]), small,
                         replace(needs(tokens=10_000), answers=2)) == gpt


def test_rehome_falls_back_to_other_tiers_then_evicts(catalog: Catalog) -> None:
    card = catalog["small"]
    only_other = Catalog([card, catalog["other-tier-16k"]])
    target = rehome_target(only_other, card, needs(tokens=10_000))
    assert target is not None and target.name == "other-tier-16k"
    p = SessionPinner()
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(tokens=500_000), T0 + 10)
    assert d.state is PinState.EVICTED_CONTEXT and d.pinned_model is None


def test_context_overflow_in_the_soft_window_evicts(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(tokens=10_000), T0 + 600)
    assert d.state is PinState.EVICTED_CONTEXT and d.bonus == {}


def test_a_pin_evicted_for_length_rehomes_past_the_window_that_refused(
        catalog: Catalog) -> None:
    """The pinned model refused the conversation as too long (the estimate said it fitted):
    in the hard window it moves to the closest larger-context model, as when the estimate
    says it outgrew it; past it, the router chooses, above that window."""
    p = SessionPinner()
    s = pinned(p, "small")
    p.evict_on_failure(s, T0, failed={"small"}, outgrown={"small"})
    d = p.decide(s, catalog, needs(tokens=100), T0 + 10)
    assert d.state is PinState.REHOMED_CONTEXT and d.pinned_model == "same-tier-32k-cheap"
    assert d.previous_model == "small" and d.context_floor == 8_000
    d = p.decide(s, catalog, needs(tokens=100), T0 + 600)
    assert d.state is PinState.EVICTED_CONTEXT and d.pinned_model is None
    assert d.context_floor == 8_000 and d.not_followed().context_floor == 8_000
    # Nothing larger takes it: evicted, the router chooses.
    alone = Catalog([catalog["small"], catalog["eyes"]])
    d = p.decide(s, alone, needs(tokens=100), T0 + 10)
    assert d.state is PinState.EVICTED_CONTEXT and d.context_floor == 8_000
    # A pin that answered since knows of no floor.
    p.record(s, "small", T0 + 20)
    d = p.decide(s, catalog, needs(tokens=100), T0 + 30)
    assert d.state is PinState.HARD and d.context_floor is None


def test_decide_changes_nothing(catalog: Catalog) -> None:
    store = MemoryPinStore()
    p = SessionPinner(store=store)
    s = pinned(p, "small")
    before = store.get(s)
    for tokens in (10, 10_000, 10**6):
        p.decide(s, catalog, needs(tokens=tokens, vision=True), T0 + 10)
    assert store.get(s) == before


def test_active_sessions_and_purge() -> None:
    p = SessionPinner(soft_window_s=1800)
    p.record("old", "a", T0)
    p.record("new", "b", T0 + 2000)
    p.record("failed", "c", T0 + 2000)
    p.evict_on_failure("failed")
    assert p.active_sessions(T0 + 2100) == 1
    assert p.purge(T0 + 2100) == 1
    assert p.store.get("old") is None and p.store.get("new") is not None


def test_memory_store_drops_least_recently_used() -> None:
    store = MemoryPinStore(max_entries=2)
    store.put("a", Pin("m", 1))
    store.put("b", Pin("m", 2))
    store.put("a", Pin("m", 3))
    store.put("c", Pin("m", 4))
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_full_store_lets_the_tenant_holding_the_most_lose_its_least_recently_used_pin(
        kind: str, tmp_path: Path) -> None:
    """One tenant opening sessions without end pushes out its own pins, not another's (whose
    pin is the oldest of all)."""
    store = (MemoryPinStore(max_entries=3) if kind == "memory"
             else SQLitePinStore(tmp_path / "pins.db", max_entries=3))
    store.put("b1", Pin("m", 1, tenant="b"))
    for n in range(1, 5):
        store.put(f"a{n}", Pin("m", 1 + n, tenant="a"))
    if isinstance(store, SQLitePinStore):
        store.flush()
        store.close()
        store = SQLitePinStore(tmp_path / "pins.db", max_entries=3)  # (read from the table)
    try:
        assert store.get("b1") == Pin("m", 1, tenant="b")
        assert [store.get(f"a{n}") is not None for n in range(1, 5)] == [False, False, True, True]
    finally:
        if isinstance(store, SQLitePinStore):
            store.close()


def test_pins_restored_at_a_start_are_shared_as_fairly_by_the_tenants(tmp_path: Path) -> None:
    """The counts of each tenant's pins are read back at a start, so the rule holds across a
    restart, and a cap lowered since the file was written cuts it by the same rule."""
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path, max_entries=3)
    store.put("b1", Pin("m", T0, tenant="b"))
    store.put("a1", Pin("m", T0 + 1, tenant="a"))
    store.put("a2", Pin("m", T0 + 2, tenant="a"))
    store.close()
    store = SQLitePinStore(path, max_entries=3)
    store.put("a3", Pin("m", T0 + 3, tenant="a"))  # (a's oldest goes, not b's older pin)
    store.flush()
    assert store.get("b1") is not None and store.get("a1") is None
    store.close()
    store = SQLitePinStore(path, max_entries=2)  # (a cap lowered since: a holds the most)
    try:
        assert store.get("b1") is not None and store.get("a2") is None
        assert store.get("a3") == Pin("m", T0 + 3, tenant="a")
    finally:
        store.close()


def test_a_pins_file_written_before_pins_kept_their_tenant_is_read_as_the_deployment_s_own(
        tmp_path: Path) -> None:
    path = tmp_path / "pins.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("""
            CREATE TABLE session_pins (session_id TEXT PRIMARY KEY, model TEXT NOT NULL,
                                       last_used REAL NOT NULL,
                                       failed INTEGER NOT NULL DEFAULT 0);""")
        db.executemany("INSERT INTO session_pins VALUES (?, 'm', ?, 0)",
                       [("old1", T0), ("old2", T0 + 1)])
        db.commit()
    store = SQLitePinStore(path, max_entries=3)
    try:
        assert store.get("old1") == Pin("m", T0)  # (tenant "": the deployment's own group)
        store.put("a1", Pin("m", T0 + 2, tenant="a"))
        store.put("a2", Pin("m", T0 + 3, tenant="a"))  # ("" holds the most: its oldest goes)
        store.flush()
        assert store.get("old2") is not None and store.get("a1") is not None
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT session_id FROM session_pins ORDER BY 1").fetchall() == [
            ("a1",), ("a2",), ("old2",)]


def test_pins_written_with_no_tenant_share_the_deployment_s_group_with_its_decisions_name(
        tmp_path: Path) -> None:
    """The deployment's own traffic is one group, named as its decisions are ("default"): a
    pin a file holds as tenant "" (written with no tenant) counts with the pins written under
    that name since, so a full store lets that group's oldest pin go, not another tenant's."""
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path, max_entries=6)
    store.put("old1", Pin("m", T0 + 10, tenant=""))  # (as a version before wrote them)
    store.put("old2", Pin("m", T0 + 11, tenant=""))
    store.close()
    store = SQLitePinStore(path, max_entries=6)
    try:
        assert store.get("old1") == Pin("m", T0 + 10, tenant=DEFAULT_TENANT)
        assert Pin("m", T0).tenant == DEFAULT_TENANT  # (no tenant given: the same group)
        store.put("d1", Pin("m", T0))
        store.put("d2", Pin("m", T0 + 1))
        for n in range(1, 4):
            store.put(f"a{n}", Pin("m", T0 + 20 + n, tenant="a"))  # (a 7th: one must go)
        store.flush()
        # The group holds four, "a" three: the group's least recently used pin went.
        assert store.get("d1") is None and store.get("a1") is not None
    finally:
        store.close()


def test_sqlite_store_survives_a_restart(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path)
    p = SessionPinner(store=store)
    p.record("s1", "small", T0)
    p.record("s2", "eyes", T0)
    p.evict_on_failure("s2")
    p.record("s1", "same-tier-32k", T0 + 1)  # an upsert
    store.close()

    reopened = SessionPinner(store=SQLitePinStore(path))
    assert reopened.store.get("s1") == Pin("same-tier-32k", T0 + 1)
    assert reopened.decide("s1", catalog, needs(), T0 + 10).state is PinState.HARD
    assert reopened.decide("s2", catalog, needs(), T0 + 10).state is PinState.EVICTED_POST_FAILURE
    assert reopened.active_sessions(T0 + 10) == 1
    reopened.store.delete("s1")
    assert reopened.store.get("s1") is None
    assert reopened.purge(T0 + 5000) == 1


@pytest.mark.parametrize("outgrown", [set(), {"small"}])
def test_why_a_pin_was_evicted_survives_a_restart(tmp_path: Path, catalog: Catalog,
                                                  outgrown: set[str]) -> None:
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path)
    p = SessionPinner(store=store)
    p.record("s", "small", T0)
    p.evict_on_failure("s", failed={"small", "large"}, outgrown=outgrown)
    store.close()
    with sqlite3.connect(path) as raw:  # what a version knowing only 0 and 1 reads: "failed"
        (column,) = raw.execute("SELECT failed FROM session_pins").fetchone()
    raw.close()
    assert bool(column) and column == (2 if outgrown else 1)
    again = SQLitePinStore(path)
    reopened = SessionPinner(store=again)
    try:
        pin = again.get("s")
        assert pin == Pin("small", T0, failed=True, outgrown=bool(outgrown))
        # (Outgrown, in the hard window: the conversation moves to a larger-context model.)
        want = PinState.REHOMED_CONTEXT if outgrown else PinState.EVICTED_POST_FAILURE
        assert reopened.decide("s", catalog, needs(), T0 + 10).state is want
        assert reopened.active_sessions(T0 + 10) == 0
    finally:
        again.close()


def test_a_pin_evicted_for_another_model_s_length_is_a_plain_failure(
        catalog: Catalog) -> None:
    p = SessionPinner()
    p.record("s", "small", T0)
    p.evict_on_failure("s", failed={"small", "large"}, outgrown={"large"})
    assert p.decide("s", catalog, needs(), T0 + 1).state is PinState.EVICTED_POST_FAILURE


def test_a_pin_the_sqlite_store_cannot_read_is_a_store_error_naming_the_file(
        tmp_path: Path) -> None:
    path = tmp_path / "pins.db"
    with contextlib.closing(SQLitePinStore(path)) as first:
        first.put("before", Pin("small", T0))
    store = SQLitePinStore(path)
    try:
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE session_pins")  # what a damaged file looks like to a read
        other.close()
        with pytest.raises(StoreError, match="read a session pin") as caught:
            store.get("before")
        assert str(path) in str(caught.value)
    finally:
        store.close()


def traced(store: SQLitePinStore) -> list[tuple[str, str]]:
    """(thread name, statement) of every statement the store's connection runs from now."""
    seen: list[tuple[str, str]] = []
    store._db.set_trace_callback(
        lambda sql: seen.append((threading.current_thread().name, sql.split()[0].upper())))
    return seen


def test_sqlite_store_writes_behind_the_caller(tmp_path: Path) -> None:
    """A put returns before any statement runs; the writer thread commits it; another
    connection sees it once flushed."""
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path)
    seen = traced(store)
    store.put("s1", Pin("small", T0))
    store.put("s1", Pin("big", T0 + 1))  # coalesced with the first if still pending
    store.delete("s2")
    assert store.get("s1") == Pin("big", T0 + 1)  # from memory
    store.flush()
    callers = {name for name, _ in seen}
    assert callers == {"switchpoint-pins"}, seen  # nothing ran on the caller's thread
    assert {"INSERT", "DELETE", "COMMIT"} <= {sql for _, sql in seen}
    with sqlite3.connect(path) as other:
        rows = other.execute("SELECT session_id, model, last_used FROM session_pins").fetchall()
    assert rows == [("s1", "big", T0 + 1)]
    store.close()


def test_sqlite_store_commits_the_changes_of_requests_a_moment_apart_together(
        tmp_path: Path) -> None:
    """Pins changed a millisecond apart (requests at a few hundred a second) gather into a
    few commits, not one commit (and one wake of the writer) each."""
    store = SQLitePinStore(tmp_path / "pins.db")
    seen = traced(store)
    for i in range(40):
        store.put(f"s{i}", Pin("small", T0 + i))
        time.sleep(0.001)
    store.flush()
    assert [sql for _, sql in seen].count("COMMIT") <= 20, seen
    assert all(store.get(f"s{i}") == Pin("small", T0 + i) for i in range(40))
    store.close()


def test_sqlite_store_answers_a_new_session_without_a_read_and_a_pinned_one_once(
        tmp_path: Path) -> None:
    """A session the table holds no pin for (every new conversation) is answered from memory,
    with no statement on the caller's thread (which would wait while the writer commits); a
    pin written before a restart is still read, once."""
    path = tmp_path / "pins.db"
    first = SQLitePinStore(path)
    first.put("before", Pin("small", T0))
    first.put("gone", Pin("small", T0 - 9))
    first.close()
    store = SQLitePinStore(path, cache_entries=2)
    seen = traced(store)

    def reads() -> list[str]:  # (the writer's own look-ups are not reads of a pin)
        return [sql for thread, sql in seen if thread != "switchpoint-pins"]

    assert store.get("new") is None
    assert store.get("before") == Pin("small", T0)
    assert store.get("before") == Pin("small", T0)  # known: not read again
    assert reads() == ["SELECT"], seen
    store.put("new", Pin("small", T0 + 1))
    store.delete("before")
    assert store.purge(T0 - 1) == 1  # ("gone")
    store.put("other", Pin("big", T0 + 2))
    store.put("third", Pin("big", T0 + 3))  # (the memory holds two: "new" is forgotten)
    store.flush()
    seen.clear()
    assert store.get("new") == Pin("small", T0 + 1)  # written, forgotten: read from the table
    assert store.get("before") is None and store.get("gone") is None
    assert [store.get(f"new-{i}") for i in range(50)] == [None] * 50
    assert reads() == ["SELECT"], seen
    store.close()


def test_sqlite_store_past_its_bound_of_ids_reads_until_a_purge_brings_it_under(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session ids kept in memory are bounded (MAX_STORED_IDS): a table holding more is
    read for a session not in memory, a new one too, at open or once it grows past it; a purge
    that brings it under keeps them again."""
    monkeypatch.setattr("switchpoint.gateway.sessions.MAX_STORED_IDS", 2)
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path, cache_entries=1)
    seen = traced(store)

    def reads() -> list[str]:
        return [sql for thread, sql in seen if thread != "switchpoint-pins"]

    for i in range(3):
        store.put(f"s{i}", Pin("small", T0 + i))
    store.flush()
    assert store.get("new") is None and store.get("s0") == Pin("small", T0)
    assert reads() == ["SELECT", "SELECT"], seen  # (past the bound: both read)
    store.close()
    again = SQLitePinStore(path, cache_entries=1)
    seen = traced(again)
    assert again.get("new") is None and again.get("s1") == Pin("small", T0 + 1)
    assert reads() == ["SELECT", "SELECT"], seen
    assert again.purge(T0 + 1) == 1  # ("s0": two left, under the bound again)
    seen.clear()
    assert again.get("new") is None and again.get("s0") is None
    assert again.get("s2") == Pin("small", T0 + 2)
    assert reads() == ["SELECT"], seen  # ("s2" alone)
    again.close()


def test_sqlite_store_holds_a_stored_session_id_in_little_memory(tmp_path: Path) -> None:
    """The ids of the sessions the table holds are kept (to answer a new one without a read)
    in under 110 bytes each once open: their hashes, where the ids themselves took some 140
    (10,000 UUIDs, as clients send them); a stored one is still told from a new one."""
    path = tmp_path / "pins.db"
    ids = [str(uuid.uuid4()) for _ in range(10_000)]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SQLitePinStore.SCHEMA)
        db.executemany("INSERT INTO session_pins (session_id, model, last_used, failed) "
                       "VALUES (?, 'small', ?, 0)",
                       [(i, T0) for i in ids])
        db.commit()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = SQLitePinStore(path)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    try:
        per_id = held / 10_000
        assert per_id < 110, f"{per_id:.0f} bytes per stored session"
        assert store.get(ids[0]) == Pin("small", T0) and store.get(str(uuid.uuid4())) is None
    finally:
        store.close()


def test_sqlite_store_memory_is_bounded_and_the_table_answers_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path, cache_entries=2)
    for i in range(5):
        store.put(f"s{i}", Pin("small", T0 + i))
    assert len(store._known) == 2
    assert store.get("s0") == Pin("small", T0)  # pending or written: never lost
    store.flush()
    assert [store.get(f"s{i}") for i in range(5)] == [Pin("small", T0 + i) for i in range(5)]
    assert len(store._known) == 2
    assert store.count(T0 + 3) == 2 and store.purge(T0 + 3) == 3
    assert store.get("s0") is None and store.get("s4") == Pin("small", T0 + 4)
    store.close()
    # (a request still under way as its gateway closed: the closed error, naming the file)
    with pytest.raises(GatewayClosedError, match=r"pins\.db.*pin store is closed.*start the"):
        store.put("late", Pin("small", T0))


def rows_of(path: Path) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT session_id, last_used FROM session_pins"))


def test_sqlite_store_keeps_its_cap_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    # The file grew by a row per session answered within the pin window, without a bound.
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path, max_entries=3)
    for i in range(3):
        store.put(f"s{i}", Pin("small", T0 + i))
    for n in range(5):  # changes to held pins take no room
        store.put("s0", Pin("small", T0 + 10 + n))
    store.flush()
    assert set(rows_of(path)) == {"s0", "s1", "s2"}
    store.put("s3", Pin("small", T0 + 20))
    store.put("s4", Pin("small", T0 + 21))
    store.flush()
    assert set(rows_of(path)) == {"s0", "s3", "s4"}  # s1 and s2 were used longest ago
    assert store.get("s1") is None and store.get("s2") is None
    assert store.get("s0") == Pin("small", T0 + 14)
    store.delete("s3")
    store.put("s5", Pin("small", T0 + 22))  # the deleted one's room
    store.flush()
    assert set(rows_of(path)) == {"s0", "s4", "s5"}
    store.close()
    # A restart keeps the cap; one lowered since cuts the file to it as it opens.
    again = SQLitePinStore(path, max_entries=3)
    again.put("s6", Pin("small", T0 + 23))
    again.flush()
    assert set(rows_of(path)) == {"s4", "s5", "s6"}
    again.close()
    lower = SQLitePinStore(path, max_entries=1)
    assert set(rows_of(path)) == {"s6"} and lower.get("s5") is None
    # A cap lowered while it runs is applied at the next purge.
    lower.max_entries = 5
    for i in range(7, 10):
        lower.put(f"s{i}", Pin("small", T0 + 20 + i))
    lower.flush()
    lower.max_entries = 2
    assert lower.purge(T0) == 0
    assert set(rows_of(path)) == {"s8", "s9"} and lower.get("s7") is None
    lower.close()
    with pytest.raises(ValueError, match="max_entries"):
        SQLitePinStore(tmp_path / "other.db", max_entries=0)


def test_sqlite_store_under_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path, cache_entries=50)

    def work(t: int) -> None:
        for i in range(300):
            store.put(f"t{t}-{i % 40}", Pin(f"m{t}", T0 + i))
            store.get(f"t{(t + 1) % 4}-{i % 40}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    reopened = SQLitePinStore(path)
    for t in range(4):
        for k in range(40):  # the last write of each key won
            last = max(i for i in range(300) if i % 40 == k)
            assert reopened.get(f"t{t}-{k}") == Pin(f"m{t}", T0 + last)
    reopened.close()


def test_to_dict_is_loggable(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "small")
    d = p.decide(s, catalog, needs(), T0 + 1).to_dict()
    assert d["pin_state"] == "hard" and d["pinned_model"] == "small"


@pytest.mark.parametrize("kwargs", [
    {"hard_window_s": -1}, {"hard_window_s": 100, "soft_window_s": 50},
    {"soft_bonus_weight": -0.1},
])
def test_bad_windows_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SessionPinner(**kwargs)  # type: ignore[arg-type]


def test_needs_may_be_a_plain_mapping(catalog: Catalog) -> None:
    p = SessionPinner()
    s = pinned(p, "small")
    d = p.decide(s, catalog, {"vision": False, "tools": False, "prompt_tokens": 10_000},
                 T0 + 10)
    assert d.state is PinState.REHOMED_CONTEXT
    assert p.decide(s, catalog, {"vision": True, "prompt_tokens": 10},
                    T0 + 10).state is PinState.EVICTED_VISION


def test_pin_changes_the_database_refuses_are_written_once_it_takes_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    monkeypatch.setattr("switchpoint.gateway.sessions.UNWRITTEN_RETRY_S", 0.1)
    path = tmp_path / "pins.db"
    store = SQLitePinStore(path)
    disk = FullDisk(store._db)
    store._db = disk  # type: ignore[assignment]

    def stored() -> list[tuple[str, str]]:
        with sqlite3.connect(path) as other:
            return other.execute("SELECT session_id, model FROM session_pins "
                                 "ORDER BY session_id").fetchall()

    store.put("s1", Pin("small", T0))
    store.put("s2", Pin("big", T0))
    store.flush()  # given up on for now: flush does not wait out the outage
    assert stored() == [] and store.get("s1") == Pin("small", T0)
    assert FULL in caplog.text and "cannot rollback" not in caplog.text
    store.put("s2", Pin("small", T0 + 1))  # a newer change wins over the refused one
    store.flush()
    disk.full = False
    deadline = time.monotonic() + 10
    while stored() != [("s1", "small"), ("s2", "small")]:  # on the timer, no change needed
        assert time.monotonic() < deadline, stored()
        time.sleep(0.05)
    store._db = disk.conn
    store.close()


def test_the_pins_file_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    store = SQLitePinStore(tmp_path / "sessions.db")
    try:
        assert (tmp_path / "sessions.db").stat().st_mode & 0o777 == 0o600
    finally:
        store.close()


def test_a_damaged_pins_file_is_called_damaged_not_short_of_space(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"garbage!" * 512)
    with pytest.raises(StoreError) as caught:
        SQLitePinStore(path)
    message = str(caught.value)
    assert message.startswith(f"{str(path)!r}: cannot open the session pins (file is not a "
                              "database)")
    assert "the file is damaged" in message and "disk has space" not in message


# The pins' file deleted or replaced under the running store --------------------------------

def on_disk(path: Path) -> dict[str, tuple[str, float]]:
    """The pins the file at ``path`` holds, as another process (or a start) reads them."""
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT session_id, model, last_used FROM session_pins").fetchall()
    return {session: (model, used) for session, model, used in rows}


def a_backup(path: Path, pins: dict[str, Pin], *, in_wal: bool = False) -> None:
    """A pins file holding ``pins`` put at ``path`` in one step, as a restore does. ``in_wal``:
    with its own ``-wal`` and ``-shm`` (a copy of all three taken while it was open), its
    pins only in its ``-wal``, not yet in the file itself."""
    made = path.with_name("made.db")
    db = sqlite3.connect(made, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.executescript(SQLitePinStore.SCHEMA)
    db.executemany("INSERT INTO session_pins (session_id, model, last_used, failed, tenant) "
                   "VALUES (?, ?, ?, ?, ?)",
                   [(k, p.model, p.last_used, p.eviction, p.tenant) for k, p in pins.items()])
    suffixes = ("", "-wal", "-shm") if in_wal else ("",)
    if not in_wal:
        db.close()  # its log written into it (and removed)
    for suffix in suffixes:
        shutil.copyfile(f"{made}{suffix}", f"{made}{suffix}.copy")
    if in_wal:
        db.close()
    for suffix in suffixes:
        Path(f"{made}{suffix}.copy").replace(f"{path}{suffix}")
    made.unlink()


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``check`` (a file being made may not have its table yet: not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except sqlite3.Error:
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def looks_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pins' writer looks at its file every 20 ms, not every second."""
    monkeypatch.setattr("switchpoint.gateway.sessions.FILE_CHECK_S", 0.02)


@pytest.mark.usefixtures("looks_often")
@pytest.mark.parametrize("gone", ["all", "alone", "wal", "shm"])
def test_a_pins_file_deleted_under_the_store_is_made_again_with_every_pin(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, gone: str) -> None:
    """The file (with its side files, or alone; or only its ``-wal`` or ``-shm``) deleted
    while the store runs: the pins made before and after are in the file at the path, and the
    side files the old file left are not taken up by the new one."""
    path = tmp_path / "sessions.db"
    store = SQLitePinStore(path)
    store.put("before", Pin("small", T0))
    store.flush()
    names = {"all": ("", "-wal", "-shm"), "alone": ("",), "wal": ("-wal",), "shm": ("-shm",)}
    for suffix in names[gone]:
        Path(f"{path}{suffix}").unlink()
    store.put("after", Pin("big", T0 + 1))
    store.flush()
    # What a crash leaves (and another process reads) once it looked: both, at the path.
    until(lambda: on_disk(path) == {"before": ("small", T0), "after": ("big", T0 + 1)},
          "the pins in the file at the path")
    assert store.get("before") == Pin("small", T0)
    store.put("later", Pin("big", T0 + 2))  # one move, logged once
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.db"]  # no copy left
    assert on_disk(path) == {"before": ("small", T0), "after": ("big", T0 + 1),
                             "later": ("big", T0 + 2)}
    said = "was deleted" if gone in ("all", "alone") else f"had its -{gone} file deleted"
    assert caplog.text.count(said) == 1, caplog.text
    assert "before" not in caplog.text  # no session's key in the log


@pytest.mark.usefixtures("looks_often")
def test_a_pins_file_deleted_while_no_pin_changes_is_made_again_on_its_own(
        tmp_path: Path) -> None:
    """No change comes after the deletion: the store makes the file again within
    FILE_CHECK_S all the same, so a crash then does not lose the pins."""
    path = tmp_path / "sessions.db"
    store = SQLitePinStore(path)
    try:
        store.put("before", Pin("small", T0))
        store.flush()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink()
        until(lambda: path.exists() and "before" in on_disk(path), "the file made again")
    finally:
        store.close()


@pytest.mark.usefixtures("looks_often")
@pytest.mark.parametrize("in_wal", [False, True])
def test_a_pins_file_replaced_under_the_store_is_taken_with_the_live_pins_written_in(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, in_wal: bool) -> None:
    """A backup moved over the file while the store runs (the file alone, its old side
    files left behind; or with its own ``-wal`` and ``-shm``): the store takes it, with what
    it holds, and writes the pins it knows into it, the newer pin of a session kept."""
    path = tmp_path / "sessions.db"
    store = SQLitePinStore(path)
    try:
        store.put("live", Pin("small", T0 + 5))
        store.put("newer-here", Pin("small", T0 + 5))
        store.put("newer-there", Pin("small", T0 + 5))
        assert store.get("restored") is None  # known to have none
        store.flush()
        a_backup(path, {"restored": Pin("eyes", T0), "newer-here": Pin("big", T0),
                        "newer-there": Pin("big", T0 + 9)}, in_wal=in_wal)
        store.put("after", Pin("big", T0 + 6))
        store.flush()
        until(lambda: store.get("restored") == Pin("eyes", T0), "read from the file now there")
        assert store.get("newer-there") == Pin("big", T0 + 9)
    finally:
        store.close()
    assert on_disk(path) == {"live": ("small", T0 + 5), "newer-here": ("small", T0 + 5),
                             "newer-there": ("big", T0 + 9), "restored": ("eyes", T0),
                             "after": ("big", T0 + 6)}
    assert caplog.text.count("sessions.db was replaced while the service ran") == 1


@pytest.mark.usefixtures("looks_often")
def test_a_pins_file_replaced_by_what_is_no_database_keeps_the_pins_until_it_is_fixed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """What cannot be opened at the path: the pins are kept meanwhile (said once, and the
    same file not tried again and again), and go into the file at the path once another is
    put there."""
    monkeypatch.setattr("switchpoint.gateway.sessions.MOVE_RETRY_S", 0.05)
    path = tmp_path / "sessions.db"
    store = SQLitePinStore(path)
    try:
        store.put("before", Pin("small", T0))
        store.flush()
        path.with_name("junk").write_bytes(b"garbage!" * 512)
        path.with_name("junk").replace(path)
        store.put("after", Pin("big", T0 + 1))
        store.flush()
        until(lambda: "file is not a database" in caplog.text, "the move tried")
        time.sleep(0.3)  # tried again meanwhile
        assert caplog.text.count("file is not a database") == 1, caplog.text
        assert store.get("before") == Pin("small", T0)
        store.put("meanwhile", Pin("big", T0 + 2))
        store.flush()
        path.unlink()  # the operator takes it away
        until(lambda: path.exists() and len(on_disk(path)) == 3, "the pins moved in")
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.db"]  # no copy left
    assert on_disk(path) == {"before": ("small", T0), "after": ("big", T0 + 1),
                             "meanwhile": ("big", T0 + 2)}
    assert caplog.text.count("the session pins are kept in the file now at that path") == 1
