"""Planning who answers a chat request, without HTTP: the ranking rule (pin bonus, health
penalty), named and auto plans, candidate lists, capability filters and the notes it leaves."""

from __future__ import annotations

import pytest

from switchpoint.catalog import Catalog, ModelCard
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NoCandidatesError,
    NoCapableModelError,
    UnknownModelError,
)
from switchpoint.gateway.failover import Attempt
from switchpoint.gateway.health import HealthConfig, HealthTracker
from switchpoint.gateway.planning import ChatCall, Plan, Planner, rank_auto
from switchpoint.gateway.sessions import SessionPinner

pytestmark = pytest.mark.anyio

SCORES = {"a": 0.30, "b": 0.35, "c": 0.50}


def tracker() -> HealthTracker:
    return HealthTracker(config=HealthConfig(failure_threshold=2, cooldown_s=60))


def test_rank_auto_keeps_the_routers_order_without_bonus_or_health() -> None:
    assert rank_auto(SCORES) == ["a", "b", "c"]


def test_a_pin_bonus_lifts_a_model_by_exactly_its_amount() -> None:
    assert rank_auto(SCORES, bonus={"b": 0.04}) == ["a", "b", "c"]  # 0.31 > 0.30
    assert rank_auto(SCORES, bonus={"b": 0.06}) == ["b", "a", "c"]  # 0.29 < 0.30
    # A tie (c: 0.50 - 0.20 = a's 0.30) keeps the router's order between the two.
    assert rank_auto(SCORES, bonus={"c": 0.2}) == ["a", "c", "b"]


def test_health_ranks_degraded_and_down_models_last() -> None:
    health = tracker()
    assert rank_auto(SCORES, health=health) == ["a", "b", "c"]
    health.record_failure("a", "server_error")
    health.record_failure("a", "server_error")  # two in a row: a's circuit opens, a is down
    assert rank_auto(SCORES, health=health) == ["b", "c", "a"]
    # A pin bonus does not lift a down model above healthy ones.
    assert rank_auto(SCORES, bonus={"a": 1.0}, health=health)[-1] == "a"


def catalog() -> Catalog:
    return Catalog([
        ModelCard("a", profile="a", base_url="http://x/v1", input_per_mtok=1, output_per_mtok=2,
                  context_window=8_000, fallbacks=("b",)),
        ModelCard("b", profile="b", base_url="http://x/v1", input_per_mtok=1, output_per_mtok=2,
                  context_window=32_000, capabilities=("vision",)),
        ModelCard("c", profile="c", base_url="http://x/v1", input_per_mtok=1, output_per_mtok=2,
                  context_window=128_000, capabilities=("tools",)),
    ])


def body(model: str = "auto", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}


class FakeRoute:
    """Stands in for the live router: scores the allowed models in a fixed order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], float | None]] = []

    async def __call__(self, text: str, allowed: list[str],
                       cost_weight: float | None) -> RoutingDecision:
        self.calls.append((text, allowed, cost_weight))
        scores = {m: SCORES[m] for m in allowed}
        best = min(scores, key=scores.__getitem__)
        return RoutingDecision(best, scores[best], scores[best], scores, 0,
                               reasoning=["fixed scores"])


def planner(health: HealthTracker | None = None) -> Planner:
    return Planner(health or tracker(), SessionPinner())


async def test_a_named_model_plans_its_fallback_chain_without_routing() -> None:
    route = FakeRoute()
    plan = await planner().plan(ChatCall(body("a")), catalog(), route)
    assert [c.name for c in plan.cards] == ["a", "b"] and plan.routed_model == "a"
    assert plan.decision is None and route.calls == []


async def test_auto_routes_on_the_last_user_turn_among_capable_models() -> None:
    route = FakeRoute()
    tools = body(tools=[{"type": "function", "function": {"name": "f"}}])
    plan = await planner().plan(ChatCall(tools, cost_weight=0.7), catalog(), route)
    assert route.calls == [("hello there", ["c"], 0.7)]
    assert [c.name for c in plan.cards] == ["c"] and plan.excluded.keys() == {"a", "b"}


async def test_auto_narrowed_by_the_candidate_lists() -> None:
    route = FakeRoute()
    plan = await planner().plan(ChatCall(body(models=["b", "c"]), models=["c", "a"]),
                                catalog(), route)
    assert route.calls[0][1] == ["c"] and [c.name for c in plan.cards] == ["c"]
    assert "models" not in plan.body  # the gateway's own field never goes upstream
    with pytest.raises(UnknownModelError) as unknown:
        await planner().plan(ChatCall(body(models=["zz"])), catalog(), route)
    assert unknown.value.field == "models"
    # Lists that do not overlap are refused as the router refuses them, names quoted; in
    # process, where the argument and the body's field are both called models, the argument
    # is named as one ("that models lists" did not say which).
    with pytest.raises(NoCandidatesError) as disjoint:
        await planner().plan(ChatCall(body(models=["a"]), models=["b"]), catalog(), route)
    assert disjoint.value.field == "models"
    assert str(disjoint.value) == ('models: none of "a" is in the models auto may choose that '
                                   'the models argument lists ("b"); list one of those')


async def test_candidates_routing_never_picks_are_named_as_the_router_names_them() -> None:
    """A candidate list naming only models with auto: false was refused in words of its own,
    the names unquoted; it reads as the router's refusal, each name as JSON writes it."""
    kept_out = Catalog([*catalog().cards, ModelCard("d, e", profile="a", auto=False)])
    route = FakeRoute()
    never = ('"d, e" is never chosen by routing (auto: false in the catalog: served only when '
             'a request names it as its model)')
    with pytest.raises(NoCandidatesError) as only:
        await planner().plan(ChatCall(body(), models=["d, e"],
                                      models_field="x-switchpoint-models"), kept_out, route)
    assert only.value.field == "x-switchpoint-models"
    assert str(only.value) == f"x-switchpoint-models: {never}; list a model routing may choose"
    with pytest.raises(NoCandidatesError) as mixed:
        await planner().plan(ChatCall(body(models=["c", "d, e"]), models=["a", "b"],
                                      models_field="x-switchpoint-models"), kept_out, route)
    assert str(mixed.value) == (
        'models: none of "c" is in the models auto may choose that x-switchpoint-models lists '
        f'("a", "b"), and {never}; list one of those')
    assert route.calls == []


async def test_unknown_models_and_impossible_requests_are_refused() -> None:
    with pytest.raises(ModelNotFoundError) as missing:
        await planner().plan(ChatCall(body("nope")), catalog(), FakeRoute())
    assert missing.value.status == 404 and missing.value.param == "model"
    image = {"model": "a", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:x"}}]}]}
    plan = await planner().plan(ChatCall(image), catalog(), FakeRoute())
    assert [c.name for c in plan.cards] == ["b"]  # a lacks vision; its fallback has it
    with pytest.raises(NoCapableModelError) as none:
        await planner().plan(ChatCall({**image, "model": "c"}), catalog(), FakeRoute())
    assert "vision" in str(none.value) and none.value.excluded == {
        "c": ['the request has images and the model does not list "vision"']}


async def test_an_unhealthy_choice_is_ranked_last_and_said_so() -> None:
    health = tracker()
    health.record_failure("a", "server_error")
    health.record_failure("a", "server_error")
    plan = await planner(health).plan(ChatCall(body()), catalog(), FakeRoute())
    assert plan.routed_model == "a" and [c.name for c in plan.cards] == ["b", "c", "a"]
    assert any("a is down" in note for note in plan.reasoning)


async def test_a_hard_pin_skips_the_router_and_a_soft_pin_adds_its_bonus() -> None:
    pins = SessionPinner(hard_window_s=60, soft_window_s=600, soft_bonus_weight=0.06)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)
    hard = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert hard.pin.state == "hard" and hard.cards[0].name == "b" and len(route.calls) == 1
    pins.record(first.session, "b", first.ts - 120)  # past the hard window: soft
    soft = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert soft.pin.state == "soft" and [c.name for c in soft.cards][:2] == ["b", "a"]
    # Another caller's conversation with the same first message is not pinned.
    other = await plan_of.plan(ChatCall(body(), caller="10.0.0.9"), catalog(), route)
    assert other.pin.state == "fresh"


async def test_a_hard_pin_that_cannot_be_followed_says_why_not_hard() -> None:
    # The pin state said "hard" though the router chose another model.
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)
    tools = body(tools=[{"type": "function", "function": {"name": "f"}}])
    unfit = await plan_of.plan(ChatCall(tools, session_id="s1"), catalog(), route)
    assert unfit.pin.state == "evicted_missing_model" and unfit.routed_model == "c"
    assert unfit.pin_info["pinned_model"] is None and unfit.pin_info["previous_model"] == "b"
    assert unfit.pin_info["note"].startswith("pinned model b cannot serve this request")
    narrowed = await plan_of.plan(ChatCall(body(), session_id="s1", models=["a", "c"]),
                                  catalog(), route)
    assert narrowed.pin.state == "evicted_missing_model" and narrowed.routed_model == "a"
    followed = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert followed.pin.state == "hard" and followed.routed_model == "b"


async def test_a_soft_pin_whose_model_cannot_take_the_request_says_why_not_soft() -> None:
    # The pin state said "soft" though its model could not be chosen at all.
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts - 120)
    tools = body(tools=[{"type": "function", "function": {"name": "f"}}])
    unfit = await plan_of.plan(ChatCall(tools, session_id="s1"), catalog(), route)
    assert unfit.pin.state == "evicted_missing_model" and unfit.pin.bonus == {}
    assert unfit.pin_info["previous_model"] == "b" and unfit.routed_model == "c"
    assert unfit.pin_info["note"].startswith("pinned model b cannot serve this request")
    narrowed = await plan_of.plan(ChatCall(body(), session_id="s1", models=["a", "c"]),
                                  catalog(), route)
    assert narrowed.pin.state == "evicted_missing_model" and narrowed.pin.bonus == {}
    assert narrowed.pin_info["note"] == ("the session's pinned model is not among this "
                                         "request's candidates; routed")
    # A decision made elsewhere, over models that leave the pinned one out.
    made = RoutingDecision("c", 0.5, 0.5, {"c": 0.5, "a": 0.6}, 0)
    elsewhere = await plan_of.plan(ChatCall(body(), session_id="s1", decision=made),
                                   catalog(), route)
    assert [c.name for c in elsewhere.cards] == ["c", "a"]
    assert elsewhere.pin.state == "evicted_missing_model" and elsewhere.pin.bonus == {}
    assert elsewhere.pin_info["note"] == ("pinned model b is not among the routing decision's "
                                          "models; routed")
    followed = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert followed.pin.state == "soft" and followed.pin.bonus == {"b": 0.5}


async def test_a_pin_to_a_model_whose_circuit_is_open_is_evicted_and_routed() -> None:
    # The pin state said "hard" (or "soft") while its model was skipped unhealthy.
    health = tracker()
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(health, pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)
    health.record_failure("b", "server_error")
    health.record_failure("b", "server_error")  # two in a row: b's circuit opens
    for age in (0, 120):  # hard, then soft
        pins.record(first.session, "b", first.ts - age)
        calls = len(route.calls)
        plan = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
        assert plan.pin.state == "evicted_post_failure" and plan.pin.bonus == {}
        assert plan.pin_info["previous_model"] == "b" and plan.pin_info["pinned_model"] is None
        assert plan.pin_info["note"].startswith("pinned model b is unavailable (its circuit is "
                                                "open; retry in ")
        assert len(route.calls) == calls + 1 and plan.routed_model == "a"  # the router chose
    # Asked to wait by its upstream (a 429 with Retry-After), the circuit still closed: the same.
    plan_of.health = health = tracker()
    health.record_failure("b", "rate_limited", retry_after_s=30)
    plan = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert plan.pin.state == "evicted_post_failure"
    assert "its upstream asked callers to wait" in plan.pin_info["note"]
    plan_of.health = tracker()
    plan = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert plan.pin.state == "soft"


async def test_a_pinned_model_that_does_not_answer_leaves_the_pin_evicted() -> None:
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)
    hard = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    hard.answered_by("b", [Attempt("b", 1, "ok")])
    assert hard.pin.state == "hard" and "note" not in hard.pin_info
    hard.answered_by("a", [Attempt("b", 1, "server_error"), Attempt("b", 2, "server_error"),
                           Attempt("a", 1, "ok")])
    assert hard.pin.state == "evicted_post_failure" and hard.pin.pinned_model is None
    assert hard.pin_info["note"] == "pinned model b did not answer (server_error); a answered"
    too_long = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    too_long.answered_by("c", [Attempt("b", 1, "context_length_exceeded"),
                               Attempt("c", 1, "ok")])
    assert too_long.pin.state == "evicted_context"
    # Soft: the pin's model lost the ranking (a leads); another answering is still soft.
    pins.record(first.session, "b", first.ts - 120)
    soft = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    soft.cards = [soft.cards[1], soft.cards[0], *soft.cards[2:]]  # (as a weaker bonus would)
    assert soft.cards[0].name == "a"
    soft.answered_by("c", [Attempt("a", 1, "server_error"), Attempt("c", 1, "ok")])
    assert soft.pin.state == "soft" and soft.pin.bonus == {"b": 0.5}


async def test_a_stream_the_pinned_model_breaks_leaves_the_pin_evicted() -> None:
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)
    hard = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    hard.broke_off("a")  # (not the model the pin sent it to: no word on the pin)
    assert hard.pin.state == "hard"
    hard.broke_off("b")
    assert hard.pin.state == "evicted_post_failure" and hard.pin.previous_model == "b"
    assert hard.pin_info["note"] == ("pinned model b broke its stream after the answer had "
                                     "started; the response's headers, sent before, said hard")
    fresh = await plan_of.plan(ChatCall(body(), session_id="s2"), catalog(), route)
    fresh.broke_off(fresh.cards[0].name)
    assert fresh.pin.state == "fresh"


async def test_auto_never_chooses_a_model_no_larger_than_one_that_refused_the_talk() -> None:
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts - 120)  # (the soft window: the router chooses)
    pins.evict_on_failure(first.session, failed={"b"}, outgrown={"b"})
    plan = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    assert plan.pin.state == "evicted_context" and plan.needs.context_floor == 32_000
    assert [c.name for c in plan.cards] == ["c"] and route.calls[-1][1] == ["c"]
    assert "refused the conversation as too long" in plan.excluded["a"][0]
    # A named model goes where it is named (it may refuse the conversation again).
    named = await plan_of.plan(ChatCall(body("b"), session_id="s1"), catalog(), route)
    assert named.cards[0].name == "b" and named.needs.context_floor == 0
    # None larger: the upstreams judge (the client may have cut the conversation short).
    small = Catalog([catalog()["a"], catalog()["b"]])
    plan = await plan_of.plan(ChatCall(body(), session_id="s1"), small, route)
    assert plan.needs.context_floor == 0 and {c.name for c in plan.cards} == {"a", "b"}


async def test_a_request_no_model_answers_blames_the_pin_only_if_its_model_failed() -> None:
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)

    async def hard() -> Plan:
        plan = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
        assert plan.pin.state == "hard"
        return plan

    failed = await hard()
    failed.unanswered([Attempt("b", 1, "server_error"), Attempt("b", 2, "server_error"),
                       Attempt("a", 1, "read_timeout")])
    assert failed.pin.state == "evicted_post_failure" and failed.pin.pinned_model is None
    assert failed.pin_info["note"] == ("pinned model b did not answer (server_error); no model "
                                       "answered")
    too_long = await hard()
    too_long.unanswered([Attempt("b", 1, "context_length_exceeded")])
    assert too_long.pin.state == "evicted_context"
    # The caller left: while the pinned model was being called (or waited for) no verdict ...
    for under_way in ([Attempt("b", 1, "client_closed")],
                      [Attempt("b", 1, "server_error"), Attempt("b", 2, "client_closed")]):
        left = await hard()
        left.unanswered(under_way)
        assert left.pin.state == "hard" and "note" not in left.pin_info
    # ... but once failover had moved past it, it had failed.
    left = await hard()
    left.unanswered([Attempt("b", 1, "server_error"), Attempt("b", 2, "server_error"),
                     Attempt("a", 1, "client_closed")])
    assert left.pin.state == "evicted_post_failure"


async def test_a_named_model_keeps_the_pin_only_where_the_pin_would_have_sent_it() -> None:
    # A request naming another model than the hard pin's still said "hard".
    pins = SessionPinner(hard_window_s=60, soft_window_s=600)
    plan_of = Planner(tracker(), pins)
    route = FakeRoute()
    first = await plan_of.plan(ChatCall(body(), session_id="s1"), catalog(), route)
    pins.record(first.session, "b", first.ts)
    same = await plan_of.plan(ChatCall(body("b"), session_id="s1"), catalog(), route)
    assert same.pin.state == "hard" and same.pin.pinned_model == "b"
    assert "note" not in same.pin_info
    other = await plan_of.plan(ChatCall(body("c"), session_id="s1"), catalog(), route)
    assert other.pin.state == "evicted_missing_model" and other.cards[0].name == "c"
    assert other.pin_info["previous_model"] == "b" and other.pin_info["pinned_model"] is None
    assert other.pin_info["note"] == ("the request named its model (c): the session's pin "
                                      "was not followed")
    assert other.reasoning[-1] == other.pin_info["note"]
    # In the soft window no score was adjusted: naming the pinned model gives it no bonus.
    pins.record(first.session, "b", first.ts - 120)
    soft = await plan_of.plan(ChatCall(body("b"), session_id="s1"), catalog(), route)
    assert soft.pin.state == "soft" and soft.pin.bonus == {}
    soft_other = await plan_of.plan(ChatCall(body("a"), session_id="s1"), catalog(), route)
    assert soft_other.pin.state == "evicted_missing_model" and soft_other.pin.bonus == {}
    # A conversation outgrowing the pinned model is re-homed only when it names the new home.
    pins.record(first.session, "a", first.ts)
    long = body(messages=[{"role": "user", "content": "hello there"},
                          {"role": "user", "content": "word " * 10_000}])
    home = await plan_of.plan(ChatCall({**long, "model": "b"}, session_id="s1"), catalog(),
                              route)
    assert home.pin.state == "rehomed_context" and home.pin.pinned_model == "b"
    for named in ("a", "c"):  # (a is too small: its fallback b answers, not as the pin's)
        elsewhere = await plan_of.plan(ChatCall({**long, "model": named}, session_id="s1"),
                                       catalog(), route)
        assert elsewhere.pin.state == "evicted_context" and elsewhere.pin.pinned_model is None
    assert route.calls == [route.calls[0]]  # a named model is never routed
    # Naming the pinned model, which cannot serve the request: its fallback answers.
    toolless = Catalog([
        ModelCard("x", profile="a", base_url="http://x/v1", fallbacks=("y",)),
        ModelCard("y", profile="b", base_url="http://x/v1", capabilities=("tools",)),
    ])
    pins.record(first.session, "x", first.ts)
    tools = body("x", tools=[{"type": "function", "function": {"name": "f"}}])
    unfit = await plan_of.plan(ChatCall(tools, session_id="s1"), toolless, route)
    assert [c.name for c in unfit.cards] == ["y"]
    assert unfit.pin.state == "evicted_missing_model" and unfit.pin.previous_model == "x"
    assert unfit.pin_info["note"].startswith("pinned model x cannot serve this request (")
    assert unfit.pin_info["note"].endswith("); its fallbacks answer")


async def test_a_decision_made_elsewhere_is_followed_not_recomputed() -> None:
    route = FakeRoute()
    made = RoutingDecision("c", 0.5, 0.5, {"c": 0.5, "a": 0.6, "b": 0.7}, 0)
    plan = await planner().plan(ChatCall(body(), decision=made), catalog(), route)
    assert route.calls == [] and [c.name for c in plan.cards] == ["c", "a", "b"]
    # Narrowed to the request's models, its fallbacks are narrowed with its scores.
    made = RoutingDecision("c", 0.5, 0.5, {"c": 0.5, "a": 0.6, "b": 0.7}, 0,
                           fallback_models=["a", "b"])
    plan = await planner().plan(ChatCall(body(), decision=made, models=["c", "b"]), catalog(),
                                route)
    assert plan.decision is not None and plan.decision.fallback_models == ["b"]
    assert [c.name for c in plan.cards] == ["c", "b"]


async def test_a_decision_made_elsewhere_over_other_models_is_refused_naming_them() -> None:
    """A decision none of whose models can serve the request is refused listing its models
    as every message lists names: as JSON writes them, the first 20 and how many more (they
    were joined unquoted and whole, a name holding ", " read as two)."""
    elsewhere = {"x, y": 0.1, **{f"m{i}": 0.5 + i / 100 for i in range(21)}}
    made = RoutingDecision("x, y", 0.1, 0.1, elsewhere, 0)
    with pytest.raises(InvalidInputError) as refused:
        await planner().plan(ChatCall(body(), decision=made), catalog(), FakeRoute())
    assert refused.value.field == "decision"
    shown = ", ".join(f'"m{i}"' for i in range(19))
    assert str(refused.value) == (f'decision: none of the decision\'s models ("x, y", {shown} '
                                  "and 2 more) can serve this request through this gateway")


async def test_an_exact_call_plans_the_named_model_alone() -> None:
    plan = await planner().plan(ChatCall(body("a"), exact=True), catalog(), FakeRoute())
    assert [c.name for c in plan.cards] == ["a"]
    with pytest.raises(InvalidInputError):
        await planner().plan(ChatCall(body(), exact=True), catalog(), FakeRoute())


TOOL = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(("model", "extra", "param"), [
    # Every model is left out by one field: the error names it.
    ("a", {"tools": [TOOL]}, "tools"),
    ("a", {"functions": [{"name": "f"}]}, "functions"),
    ("b", {"messages": [{"role": "user", "content": "x"}, {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}, "messages"),
    ("c", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]}, "messages"),
    ("a", {"messages": [{"role": "user", "content": "x" * 200_000}]}, "messages"),
    # Several fields (tools for one model, images for another): none is named alone.
    ("a", {"tools": [TOOL], "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]}, None),
], ids=["tools", "functions", "history-tools", "images", "too-long", "several"])
async def test_nothing_fits_names_the_field_that_left_every_model_out(
        model: str, extra: dict[str, object], param: str | None) -> None:
    with pytest.raises(NoCapableModelError) as none:
        await planner().plan(ChatCall({**body(model), **extra}), catalog(), FakeRoute())
    assert none.value.param == param and none.value.code == "no_capable_model"
    assert str(none.value).startswith(f"{param}: " if param else f"model \"{model}\"")
