"""Per-tenant nearest-neighbour memory: scoring, fallbacks to the learned router, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError
from switchpoint.learning import FeedbackEvent, InMemoryFeedbackLog
from switchpoint.learning.tenant_memory import (
    Fallback,
    MemoryChoice,
    TenantKnnMemory,
    TenantSettings,
)
from switchpoint.learning.tenant_router import TenantRouter
from switchpoint.router import Router
from tests.fakes.two_kinds import math_prompt, two_kinds_package

DIM = 8
COSTS = {"a": 1.0, "b": 0.2, "c": 0.0}


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _near(seed: int, centre: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _unit(np.eye(DIM)[centre] + 0.05 * rng.standard_normal(DIM))


def _event(i: int, model: str, quality: float, tenant: str = "t", centre: int = 0
           ) -> FeedbackEvent:
    return FeedbackEvent(decision_id=f"{tenant}-{i}", model=model, quality=quality,
                         tenant=tenant, embedding=tuple(float(x) for x in _near(i, centre)))


def _memory(**settings: object) -> TenantKnnMemory:
    defaults: dict[str, object] = {"k": 10, "min_neighbours": 4, "min_similarity": 0.5,
                                   "min_records": 6, "confidence_floor": 0.8,
                                   "switch_penalty": 0.02}
    return TenantKnnMemory(TenantSettings(**{**defaults, **settings}))  # type: ignore[arg-type]


def _suggest(memory: TenantKnnMemory, tenant: str = "t", incumbent: str = "a",
             cost_weight: float = 0.0, tools: bool = False, centre: int = 0) -> MemoryChoice:
    return memory.suggest(tenant, _near(999, centre), ["a", "b", "c"], COSTS, incumbent,
                          cost_weight=cost_weight, tools=tools)


def _teach(memory: TenantKnnMemory, per_model: dict[str, list[float]], tenant: str = "t",
           centre: int = 0) -> None:
    i = 0
    for model, qualities in per_model.items():
        for q in qualities:
            memory.apply(_event(1000 * centre + i, model, q, tenant, centre))
            i += 1


def test_scores_are_mean_quality_minus_alpha_cost_minus_switch_penalty() -> None:
    memory = _memory()
    _teach(memory, {"a": [1, 1, 0, 1, 1], "b": [1, 1, 1, 1, 1]})
    choice = _suggest(memory, cost_weight=0.5)
    assert choice.scores["a"] == pytest.approx(0.8 - 0.5 * 1.0)          # the incumbent
    assert choice.scores["b"] == pytest.approx(1.0 - 0.5 * 0.2 - 0.02)   # a switch
    assert "c" not in choice.scores  # no outcomes among the neighbours: not scored
    assert choice.model == "b" and choice.fallback is None and choice.neighbours == 10
    assert 0.8 <= choice.confidence <= 1.0


def test_cold_start_sparse_neighbourhood_and_tools_fall_back() -> None:
    memory = _memory()
    assert _suggest(memory).fallback is Fallback.COLD_START
    _teach(memory, {"b": [1, 1, 1]})
    cold = _suggest(memory)
    assert cold.fallback is Fallback.COLD_START and "3 outcome(s)" in cold.reason
    _teach(memory, {"a": [1, 1, 1]}, centre=3)  # six in all, but elsewhere
    sparse = _suggest(memory)
    assert sparse.fallback is Fallback.SPARSE_NEIGHBOURHOOD and sparse.model is None
    assert sparse.neighbours == 3
    assert _suggest(memory, tools=True).fallback is Fallback.TOOL_REQUEST


def test_low_confidence_falls_back() -> None:
    memory = _memory()
    _teach(memory, {"a": [1, 0, 1, 0, 1], "b": [1, 0, 1, 1, 0]})  # a coin toss
    choice = _suggest(memory)
    assert choice.fallback is Fallback.LOW_CONFIDENCE and choice.model is None
    assert "below the floor" in choice.reason
    one = _memory()
    _teach(one, {"b": [1] * 8})  # only one model tried: nothing to compare
    assert _suggest(one).fallback is Fallback.LOW_CONFIDENCE


def test_the_switch_penalty_keeps_the_incumbent_on_a_tie() -> None:
    memory = _memory(confidence_floor=0.0)
    _teach(memory, {"a": [1] * 5, "b": [1] * 5})
    assert _suggest(memory, incumbent="a").model == "a"
    assert _suggest(memory, incumbent="b").model == "b"


def test_tenants_are_isolated_and_have_their_own_settings() -> None:
    memory = _memory()
    _teach(memory, {"a": [0] * 5, "b": [1] * 5}, tenant="x")
    assert _suggest(memory, tenant="x").model == "b"
    assert _suggest(memory, tenant="y").fallback is Fallback.COLD_START
    memory.configure("y", TenantSettings(k=3, min_neighbours=2, min_records=2,
                                         confidence_floor=0.0, alpha=10.0))
    _teach(memory, {"a": [1, 1], "b": [1, 1]}, tenant="y")
    choice = _suggest(memory, tenant="y", cost_weight=0.0)
    assert choice.neighbours == 3 and choice.model == "b"  # alpha 10: the cheaper
    assert memory.settings_for("x").k == 10
    with pytest.raises(InvalidInputError) as info:
        memory.configure("z", TenantSettings(k=2, min_neighbours=3))
    assert info.value.field == "min_neighbours"


def test_each_tenant_is_capped_and_the_oldest_go_first() -> None:
    memory = _memory(max_records=6, min_records=1, min_neighbours=1, k=6,
                     confidence_floor=0.0)
    _teach(memory, {"a": [0] * 6})
    assert memory.size("t") == 6
    _teach_later = [memory.apply(_event(100 + i, "b", 1.0)) for i in range(4)]
    assert _teach_later == [None] * 4
    assert memory.size("t") == 6
    choice = _suggest(memory)
    assert choice.scores["b"] == pytest.approx(1.0 - 0.02)
    # Only the two newest "a" outcomes remain.
    assert choice.scores["a"] == pytest.approx(0.0)
    assert memory.apply(_event(100, "b", 0.0)) == 1.0  # a repeat replaces
    assert memory.size("t") == 6


# The tenant router: memory first, the global learned router otherwise ----------------------


@pytest.fixture
def tenant_router(fake_embedder) -> TenantRouter:  # type: ignore[no-untyped-def]
    router = Router(two_kinds_package(fake_embedder), embedder=fake_embedder, cost_weight=0.1,
                    feedback_log=InMemoryFeedbackLog())
    return TenantRouter(router, TenantKnnMemory(TenantSettings(
        k=15, min_neighbours=5, min_records=10, min_similarity=0.5, confidence_floor=0.9)))


def test_falls_back_to_the_global_learned_router_with_a_reason(tenant_router) -> None:  # type: ignore[no-untyped-def]
    d = tenant_router.route(math_prompt(1), tenant="acme")
    assert d.source == "router" and d.fallback is Fallback.COLD_START
    assert d.model == d.decision.selected_model == "strong"
    assert d.reason.startswith("global learned router (cold_start)")
    tools = tenant_router.route(math_prompt(1), tenant="acme", tools=True)
    assert tools.fallback is Fallback.TOOL_REQUEST


def test_a_generator_of_candidates_is_read_once_for_the_router_and_the_memory(  # type: ignore[no-untyped-def]
        tenant_router) -> None:
    """The router's decision read a generator of candidates to its end, and the memory's
    choice then found none ("is empty"); a dict was taken as its keys. A generator is read
    once, the list both choose among; a dict is refused naming available_models."""
    d = tenant_router.route(math_prompt(1), tenant="acme",
                            available_models=(m for m in ["cheap", "runner"]))
    assert d.model in ("cheap", "runner") and set(d.decision.all_scores) == {"cheap", "runner"}
    with pytest.raises(InvalidInputError) as refused:
        tenant_router.route(math_prompt(1), tenant="acme", available_models={"strong": 1})
    assert refused.value.field == "available_models" and "got dict" in str(refused.value)


def test_a_tenants_outcomes_teach_its_memory_only(tenant_router, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    for i in range(30):  # acme finds runner as good as strong on its math, for half the price
        d = tenant_router.route(math_prompt(i), tenant="acme")
        model = "runner" if i % 2 else "strong"
        tenant_router.report_outcome(d.decision_id, 1.0, model=model)
    assert tenant_router.memory.size("acme") == 30
    d = tenant_router.route(math_prompt(100), tenant="acme", cost_weight=1.0)
    assert d.source == "memory" and d.model == "runner" and d.fallback is None
    # The outcome of this decision is learned for the model the memory chose.
    assert tenant_router.report_outcome(d.decision_id, 1.0).model == "runner"
    other = tenant_router.route(math_prompt(100), tenant="globex", cost_weight=1.0)
    assert other.source == "router" and other.fallback is Fallback.COLD_START
    # Replaying the router's events rebuilds the memory too.
    log = tenant_router.router.learner.log
    fresh = TenantRouter(Router(two_kinds_package(fake_embedder), embedder=fake_embedder,
                                cost_weight=0.1), TenantKnnMemory(tenant_router.memory.default))
    fresh.router.learner.replay(log.replay())
    assert fresh.memory.size("acme") == 31
    again = fresh.route(math_prompt(100), tenant="acme", cost_weight=1.0)
    assert (again.source, again.model) == ("memory", "runner")


def test_needs_an_embedding_policy(small_records, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    from switchpoint.training import fit

    router = Router(fit(small_records, policy="tiers", split="test", embedder=fake_embedder),
                    embedder=fake_embedder)
    with pytest.raises(InvalidInputError, match="routes on text"):
        TenantRouter(router)


@pytest.mark.parametrize(("args", "field"), [((5,), "router"), (("weights",), "router"),
                                             (("ROUTER", {"k": 3}), "memory")])
def test_a_wrong_type_is_refused_naming_the_argument(fake_embedder, args: tuple[object, ...],  # type: ignore[no-untyped-def]
                                                     field: str) -> None:
    router = Router(two_kinds_package(fake_embedder), embedder=fake_embedder)
    args = tuple(router if a == "ROUTER" else a for a in args)
    with pytest.raises(InvalidInputError) as info:
        TenantRouter(*args)  # type: ignore[arg-type]
    assert info.value.field == field and str(info.value).startswith(f"{field}: must be ")
    assert router.learner._subscribers == []  # not subscribed to the router's outcomes


def test_a_tenants_records_grow_with_its_outcomes_up_to_its_cap_across_a_checkpoint() -> None:
    """A tenant with one outcome holds room for a few, not for max_records: the room doubles
    as outcomes come, up to the cap (then the oldest go first), and a memory restored from a
    checkpoint holds the same records and goes on the same way."""
    from switchpoint.learning.tenant_memory import INITIAL_RECORDS

    cap = 3 * INITIAL_RECORDS
    memory = _memory(max_records=cap, min_records=1, min_neighbours=1, k=cap,
                     confidence_floor=0.0)
    for t in range(50):  # many tenants, one outcome each
        memory.apply(_event(t, "a", 0.5, tenant=f"user-{t}"))
    assert all(memory._records[f"user-{t}"].quality.size == INITIAL_RECORDS for t in range(50))
    for i in range(2 * INITIAL_RECORDS + 5):
        memory.apply(_event(1000 + i, "a", 0.0))
    assert memory._records["t"].quality.size == cap  # 64, 128, then the cap
    state = memory.state()
    restored = _memory(max_records=cap, min_records=1, min_neighbours=1, k=cap,
                       confidence_floor=0.0)
    restored.restore(state, DIM)
    for m in (memory, restored):
        assert m.size("t") == 2 * INITIAL_RECORDS + 5 and m.size("user-7") == 1
        for i in range(cap):  # past the cap: the oldest go first
            m.apply(_event(5000 + i, "b", 1.0))
        assert m.size("t") == cap and m.coverage("t") == {"b": cap}
        assert m._records["t"].quality.size == cap
    assert _suggest(memory).scores == _suggest(restored).scores


def test_a_tenant_memory_lets_tenants_go_with_the_router_and_takes_them_up_again(  # type: ignore[no-untyped-def]
        fake_embedder) -> None:
    """Past the router's max_tenants, the least recently used tenant's memory goes with its
    learned evidence and comes back from the log, as it was, when the tenant routes again."""
    from switchpoint.learning import LearningSettings

    def teach(tenant_router: TenantRouter, tenants: list[str]) -> None:
        for n, tenant in enumerate(tenants):
            for i in range(12):
                d = tenant_router.route(math_prompt(i + 100 * n), tenant=tenant)
                model = "runner" if (i + n) % 2 else "strong"
                tenant_router.report_outcome(d.decision_id, 1.0, model=model)

    settings = TenantSettings(k=15, min_neighbours=5, min_records=10, min_similarity=0.5,
                              confidence_floor=0.9)
    tenants = [f"user-{n}" for n in range(5)]
    bounded = TenantRouter(Router(two_kinds_package(fake_embedder), embedder=fake_embedder,
                                  cost_weight=0.1, feedback_log=InMemoryFeedbackLog(),
                                  learning=LearningSettings(max_tenants=2)),
                           TenantKnnMemory(settings))
    unbounded = TenantRouter(Router(two_kinds_package(fake_embedder), embedder=fake_embedder,
                                    cost_weight=0.1, learning=LearningSettings(max_tenants=None)),
                             TenantKnnMemory(settings))
    teach(bounded, tenants)
    teach(unbounded, tenants)
    assert bounded.memory.held_tenants() == 2 and unbounded.memory.held_tenants() == 5
    sources = []
    for tenant in tenants:
        got = bounded.route(math_prompt(999), tenant=tenant, cost_weight=1.0)
        sources.append(got.source)
        want = unbounded.route(math_prompt(999), tenant=tenant, cost_weight=1.0)
        assert (got.source, got.model, got.fallback) == (want.source, want.model, want.fallback)
        assert got.memory.scores == pytest.approx(want.memory.scores)
        assert bounded.memory.size(tenant) == 12
        assert bounded.memory.held_tenants() <= 2
    assert "memory" in sources  # the memories rebuilt answer, not only fall back


def test_a_tenant_let_go_while_its_request_is_decided_is_answered_by_its_memory(  # type: ignore[no-untyped-def]
        fake_embedder) -> None:
    """Past max_tenants, another tenant's request decided between the router's decision and
    the memory's (another thread's) lets the first tenant go: its memory is still read as it
    was, not found empty."""
    from switchpoint.learning import LearningSettings

    settings = TenantSettings(k=15, min_neighbours=5, min_records=10, min_similarity=0.5,
                              confidence_floor=0.9)
    bounded = TenantRouter(Router(two_kinds_package(fake_embedder), embedder=fake_embedder,
                                  cost_weight=0.1, feedback_log=InMemoryFeedbackLog(),
                                  learning=LearningSettings(max_tenants=1)),
                           TenantKnnMemory(settings))
    for i in range(12):
        d = bounded.route(math_prompt(i), tenant="acme")
        bounded.report_outcome(d.decision_id, 1.0, model="runner" if i % 2 else "strong")
    d = bounded.route(math_prompt(50), tenant="other")
    bounded.report_outcome(d.decision_id, 1.0)
    alone = bounded.route(math_prompt(999), tenant="acme", cost_weight=1.0)
    assert alone.source == "memory", alone.reason
    route = bounded.router.route

    def meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        decision = route(*args, **kwargs)
        route(math_prompt(51), tenant="other")  # (lets acme go)
        return decision

    bounded.router.route = meanwhile  # type: ignore[method-assign]
    raced = bounded.route(math_prompt(999), tenant="acme", cost_weight=1.0)
    assert (raced.source, raced.model) == (alone.source, alone.model), raced.reason
    assert raced.memory.scores == pytest.approx(alone.memory.scores)
