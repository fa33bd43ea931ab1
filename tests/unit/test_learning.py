"""Learning from outcomes: report_outcome, overlays, tenants, exploration, replay, export."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from switchpoint.catalog import Catalog, ModelCard, estimate_tokens
from switchpoint.decision import ROUTE_FIELDS, hash_prompt
from switchpoint.errors import (
    DecisionNotFoundError,
    InvalidInputError,
    UnknownModelError,
)
from switchpoint.learning import (
    ClusterOverlay,
    FeedbackEvent,
    InMemoryFeedbackLog,
    KnnOverlay,
    LearningSettings,
)
from switchpoint.learning.checkpoint import (
    Checkpoint,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from switchpoint.learning.config import LearningConfig
from switchpoint.learning.exploration import Explorer
from switchpoint.learning.export import export_weights
from switchpoint.learning.memory import MAX_MEMORY_SIZE, DecisionMemory, PendingDecision
from switchpoint.learning.overlay import make_overlay
from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.records import RecordSet
from switchpoint.router import Router
from switchpoint.training import fit
from switchpoint.weights import WeightsPackage, load_weights
from tests.conftest import FakeEmbedder
from tests.fakes.two_kinds import math_prompt, poem_prompt, two_kinds_package


@pytest.fixture
def package(fake_embedder) -> WeightsPackage:  # type: ignore[no-untyped-def]
    return two_kinds_package(fake_embedder)


def _router(package: WeightsPackage, fake_embedder, **kw) -> Router:  # type: ignore[no-untyped-def]
    return Router(package, embedder=fake_embedder, cost_weight=0.1, **kw)


def _math_error(router: Router, tenant: str | None = None) -> float:
    return router.route(math_prompt(9999), tenant=tenant,
                        cost_weight_override=0).expected_errors["strong"]


# report_outcome: what it accepts -----------------------------------------------------------


def test_report_outcome_returns_what_it_learned(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    d = router.route(math_prompt(1))
    result = router.report_outcome(d.decision_id, quality_score=0.25)
    assert (result.decision_id, result.tenant, result.model) == (d.decision_id, "default",
                                                                  "strong")
    assert result.quality == 0.25 and not result.replaced and result.previous_quality is None
    assert result.event.embedding is not None and len(result.event.embedding) == 384
    assert json.loads(json.dumps(result.to_dict()))["replaced"] is False
    assert router.report_outcome(router.route(math_prompt(2)).decision_id,
                                 success=True).quality == 1.0


def test_a_tenant_that_learned_routes_under_the_router_s_policy_changed_since(  # type: ignore[no-untyped-def]
        package, fake_embedder) -> None:
    # A tenant's learned policy kept the parameters it was first built under: after
    # router.policy.set_params(...) the others routed with the change and that tenant without.
    changed = {"prior_strength": 1000.0, "assignment": "hard"}
    routers = [_router(package, fake_embedder, cache_size=0) for _ in range(2)]
    routers[1].policy.set_params(**changed)
    for router in routers:
        for i in range(3):
            router.report_outcome(router.route(math_prompt(i), tenant="acme").decision_id, 0.0)
    before = _math_error(routers[0], "acme")
    routers[0].policy.set_params(**changed)
    assert _math_error(routers[0], "acme") == _math_error(routers[1], "acme") != before
    assert routers[0].learner.view("acme")[0].get_params() == routers[1].policy.get_params()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"quality_score": math.nan}, "quality_score"), ({"quality_score": 1.5}, "quality_score"),
     ({"quality_score": -0.1}, "quality_score"), ({"quality_score": True}, "quality_score"),
     ({"quality_score": "0.5"}, "quality_score"), ({}, "quality_score"),
     ({"quality_score": 0.5, "success": True}, "quality_score"), ({"success": 1}, "success")],
)
def test_report_outcome_rejects_bad_quality(package, fake_embedder, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    d = router.route(math_prompt(1))
    with pytest.raises(InvalidInputError) as info:
        router.report_outcome(d.decision_id, **kwargs)
    assert info.value.field == field
    assert router.learner.n_events() == 0  # nothing learned from a bad report


def test_unknown_decisions_wrong_tenant_and_unknown_models(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    with pytest.raises(DecisionNotFoundError, match=f"no decision \"{'0' * 32}\""):
        router.report_outcome("0" * 32, 1.0)
    d = router.route(math_prompt(1), tenant="acme")
    with pytest.raises(DecisionNotFoundError):  # another tenant cannot report on it
        router.report_outcome(d.decision_id, 1.0, tenant="globex")
    with pytest.raises(UnknownModelError):
        router.report_outcome(d.decision_id, 1.0, model="gpt-99")
    assert router.report_outcome(d.decision_id, 1.0, tenant="acme").tenant == "acme"


def test_memory_is_bounded(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder, learning=LearningSettings(memory_size=3),
                     cache_size=0)
    ids = [router.route(math_prompt(i)).decision_id for i in range(5)]
    with pytest.raises(DecisionNotFoundError, match="for the 3 decisions a router remembers"):
        router.report_outcome(ids[0], 1.0)
    assert router.report_outcome(ids[-1], 1.0).decision_id == ids[-1]


def test_a_repeat_replaces_the_earlier_score(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    twice = _router(package, fake_embedder)
    once = _router(package, fake_embedder)
    for i in range(20):
        a, b = twice.route(math_prompt(i)), once.route(math_prompt(i))
        twice.report_outcome(a.decision_id, 1.0)
        second = twice.report_outcome(a.decision_id, 0.0)
        assert second.replaced and second.previous_quality == 1.0
        once.report_outcome(b.decision_id, 0.0)
    assert _math_error(twice) == pytest.approx(_math_error(once), abs=1e-9)


def test_a_cached_decision_can_be_reported_too(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    first = router.route(math_prompt(1))
    hit = router.route(math_prompt(1))
    assert hit.cache_hit and hit.decision_id != first.decision_id
    assert router.report_outcome(hit.decision_id, 0.0).model == "strong"
    # Learning changes the tenant's revision, so the next route is estimated afresh.
    assert not router.route(math_prompt(1)).cache_hit


def test_outcomes_for_another_model_than_the_chosen_one(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    before = router.route(math_prompt(0), cost_weight_override=0).expected_errors["cheap"]
    for i in range(30):
        d = router.route(math_prompt(i))
        assert router.report_outcome(d.decision_id, 1.0, model="cheap").model == "cheap"
    after = router.route(math_prompt(0), cost_weight_override=0).expected_errors["cheap"]
    assert after < before - 0.05


# Measured costs ------------------------------------------------------------------------------


def _math_cost(router: Router, model: str = "strong") -> float:
    return router.route(math_prompt(9999), cost_weight_override=0).expected_costs[model]


def test_measured_costs_teach_what_a_model_costs_on_a_kind_of_prompt(package, fake_embedder,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:
    router = _router(package, fake_embedder)
    quality_only = _router(package, fake_embedder)
    before = _math_cost(router)
    dear = 10 * before
    for i in range(30):
        d = router.route(math_prompt(i))
        router.report_outcome(d.decision_id, 0.8, model="strong", cost=dear)
        e = quality_only.route(math_prompt(i))
        quality_only.report_outcome(e.decision_id, 0.8, model="strong")
    after = _math_cost(router)
    assert before * 2 < after < dear  # moved most of the way, the fitted labels still count
    assert _math_cost(quality_only) == before  # a quality alone says nothing of the cost
    assert _math_cost(router, "cheap") == _math_cost(quality_only, "cheap")  # only its model
    assert _math_error(router) == _math_error(quality_only)  # the cost teaches no error
    # An export keeps it: the measured costs are the units' costs in the new weights.
    export_weights(router, tmp_path / "learned")
    assert _math_cost(_router(load_weights(tmp_path / "learned"), fake_embedder)) > before * 2


@pytest.mark.parametrize("cost", [-0.01, math.nan, math.inf, "0.1", True, 1e308, 1000.5])
def test_a_bad_cost_is_refused_and_teaches_nothing(package, fake_embedder, cost) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    d = router.route(math_prompt(1))
    with pytest.raises(InvalidInputError) as info:
        router.report_outcome(d.decision_id, 0.5, cost=cost)
    assert info.value.field == "cost"
    assert router.learner.n_events() == 0


def test_a_priced_router_learns_how_much_dearer_than_its_flat_price_answers_run(
        package: WeightsPackage, fake_embedder: FakeEmbedder) -> None:
    def catalog() -> Catalog:
        return Catalog([ModelCard("cheap", profile="cheap", input_per_mtok=0.1,
                                  output_per_mtok=0.2),
                        ModelCard("strong", profile="strong", input_per_mtok=5,
                                  output_per_mtok=15)])
    router = _router(package, fake_embedder, catalog=catalog())
    quality_only = _router(package, fake_embedder, catalog=catalog())
    before = _math_cost(router)
    card = router.catalog["strong"]
    for i in range(30):
        prompt = math_prompt(i)
        d, e = router.route(prompt), quality_only.route(prompt)
        flat = card.price(estimate_tokens(prompt), router.catalog.expected_output_tokens)
        outcome = router.report_outcome(d.decision_id, 0.8, model="strong", cost=4 * flat)
        quality_only.report_outcome(e.decision_id, 0.8, model="strong")
        # Kept in the weights' units: four times the profile's mean cost (its flat price's
        # share), whatever the catalog charges.
        mean = router.policy.global_cost()["strong"]
        assert outcome.event.measured_cost == pytest.approx(4 * mean, rel=1e-9)
    after = _math_cost(router)
    four_times = 4 * card.price(estimate_tokens(math_prompt(9999)),
                                router.catalog.expected_output_tokens)
    # Toward four times its flat price, weighed against the 150 labels the weights hold there.
    assert 1.3 * before < after < four_times
    assert _math_cost(quality_only) == before
    assert _math_cost(router, "cheap") == _math_cost(quality_only, "cheap")
    assert _math_error(router) == _math_error(quality_only)
    # A bad cost is refused and changes nothing; so is one far beyond the model's prices for
    # the prompt (a mistake of units or of the catalog).
    d = router.route(math_prompt(100))
    for bad, words in ((-1, ">= 0"), (5000 * four_times, "times what strong's prices make")):
        with pytest.raises(InvalidInputError, match=words) as info:
            router.report_outcome(d.decision_id, 0.5, model="strong", cost=bad)
        assert info.value.field == "cost" and _math_cost(router) == after
    assert router.learner.n_events() == 30


def test_a_repeat_without_a_cost_keeps_the_cost_reported_before(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    twice = _router(package, fake_embedder)
    once = _router(package, fake_embedder)
    dear = 10 * _math_cost(once)
    for i in range(10):
        a, b = twice.route(math_prompt(i)), once.route(math_prompt(i))
        twice.report_outcome(a.decision_id, 1.0, model="strong", cost=dear)
        assert twice.report_outcome(a.decision_id, 0.0, model="strong").event.measured_cost \
            is None
        once.report_outcome(b.decision_id, 0.0, model="strong", cost=dear)
    assert _math_cost(twice) == pytest.approx(_math_cost(once), rel=1e-12)
    assert _math_error(twice) == pytest.approx(_math_error(once), abs=1e-9)
    # About another model, the earlier answer's cost is not that model's.
    c = twice.route(math_prompt(50))
    twice.report_outcome(c.decision_id, 1.0, model="strong", cost=dear)
    twice.report_outcome(c.decision_id, 1.0, model="cheap")
    d = once.route(math_prompt(50))
    once.report_outcome(d.decision_id, 1.0, model="cheap")
    assert _math_cost(twice, "cheap") == _math_cost(once, "cheap")
    assert _math_cost(twice) == pytest.approx(_math_cost(once), rel=1e-12)


def test_the_knn_overlay_takes_a_neighbours_measured_cost(fake_embedder) -> None:  # type: ignore[no-untyped-def]
    package = two_kinds_package(fake_embedder, policy="knn")
    overlay = KnnOverlay(package.policy)  # type: ignore[arg-type]
    vector = fake_embedder.embed([math_prompt(1)])[0]
    event = _event(vector, "strong", 0.9, "k1")
    overlay.apply(FeedbackEvent(**{**event.__dict__, "cost": 0.5, "measured_cost": 2.0}))
    overlay.apply(FeedbackEvent(**{**event.__dict__, "cost": 0.5, "quality": 0.1}))  # repeat
    posterior = overlay.posterior()
    assert posterior.cost_[-1, package.policy.models_.index("strong")] == 2.0


@pytest.mark.parametrize("policy", ["cluster", "knn"])
def test_an_overlay_counts_events_and_outcomes_by_model_across_a_checkpoint(
        fake_embedder: FakeEmbedder, policy: str) -> None:
    package = two_kinds_package(fake_embedder, policy=policy)
    overlay = make_overlay(package.policy)
    vector = fake_embedder.embed([math_prompt(1)])[0]
    overlay.apply(_event(vector, "strong", 0.9, "d1"))
    overlay.apply(_event(vector, "cheap", 0.5, "d2"))
    overlay.apply(_event(vector, "cheap", 0.1, "d1"))  # d1 again, now about cheap
    split = ({"strong": 1, "cheap": 2}, {"cheap": 2})
    assert overlay.counts_by_model() == split
    assert (overlay.n_events, overlay.n_outcomes) == (3, 2)
    again = make_overlay(package.policy)
    again.restore(overlay.state())
    assert again.counts_by_model() == split
    # A checkpoint written before the split was kept: the split is not known, the totals are.
    old = overlay.state()
    for name in ("model_events", "model_outcomes"):
        del old.meta[name]
    again.restore(old)
    assert again.counts_by_model() is None and (again.n_events, again.n_outcomes) == (3, 2)
    bad = overlay.state()
    bad.meta["model_events"] = {"strong": -1}
    with pytest.raises(CheckpointError, match="counts of events by model"):
        again.restore(bad)


# Tenants -------------------------------------------------------------------------------------


def test_tenants_are_isolated(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    base = _math_error(router)
    for i in range(40):
        d = router.route(math_prompt(i), tenant="acme")
        router.report_outcome(d.decision_id, 0.0)
    assert _math_error(router, "acme") > base + 0.05
    assert _math_error(router) == pytest.approx(base)  # the deployment's own: untouched
    assert _math_error(router, "globex") == pytest.approx(base)
    assert router.learner.tenants() == ["acme"]
    assert router.learner.n_events("acme") == 40 and router.learner.n_events() == 0
    with pytest.raises(InvalidInputError):
        router.route(math_prompt(1), tenant="")


# Exploration ---------------------------------------------------------------------------------


def test_exploration_is_seeded_and_respects_a_named_model(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    def picks(rate: float, seed: int) -> list[str]:
        r = _router(package, fake_embedder, learning=LearningSettings(exploration=rate,
                                                                      seed=seed))
        return [r.route(math_prompt(i)).selected_model for i in range(200)]

    assert picks(0.0, 1) == ["strong"] * 200  # off by default
    explored = picks(0.3, 7)
    assert explored == picks(0.3, 7)  # reproducible
    share = sum(m != "strong" for m in explored) / 200
    assert 0.2 < share < 0.4
    assert set(explored) == {"strong", "runner", "cheap"}
    r = _router(package, fake_embedder, learning=LearningSettings(exploration=1.0, seed=0))
    d = r.route(math_prompt(1))
    assert d.selected_model != "strong" and "Exploring" in d.reasoning[-1]
    assert r.report_outcome(d.decision_id, 1.0).model == d.selected_model
    for i in range(20):  # one named model: never explored away from it
        assert r.route(math_prompt(i), available_models=["strong"]).selected_model == "strong"
    with pytest.raises(InvalidInputError) as info:
        _router(package, fake_embedder, learning=LearningSettings(exploration=1.5))
    assert info.value.field == "exploration"



def test_each_tenant_explores_from_its_own_stream(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    """Which of a tenant's decisions explore, and where to, does not depend on how much other
    tenants send (one tenant could otherwise steer another's exploration, or read its traffic
    from its own); each tenant's stream is the seed's and its name's, the same in every run."""
    def served(router: Router, tenant: str, prompts: range) -> list[tuple[str, str]]:
        return [(d.selected_model, d.source) for d in
                (router.route(math_prompt(i), tenant=tenant) for i in prompts)]

    def make() -> Router:
        return _router(package, fake_embedder,
                       learning=LearningSettings(exploration=0.3, seed=7))

    alone = served(make(), "beta", range(60))
    assert 5 < sum(source == "exploration" for _, source in alone) < 40  # the rate's share
    mixed = make()
    interleaved = []
    for i in range(60):
        served(mixed, "acme", range(100 + 3 * i, 100 + 3 * i + i % 4))  # 0-3 of acme's
        interleaved += served(mixed, "beta", range(i, i + 1))
    assert interleaved == alone
    assert served(make(), "acme", range(60)) == served(make(), "acme", range(60))
    assert served(make(), "acme", range(60)) != alone  # a stream of its own, not a copy


def test_exploration_aims_at_the_least_evidenced_candidate(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    explorer = Explorer(1.0, seed=3)
    models = ["strong", "runner", "cheap"]
    picks = {explorer.pick(models, "strong", [50.0, 9.0, 2.0]) for _ in range(50)}
    assert picks == {"cheap"}  # the least-known other candidate, not a uniform draw
    ties = {explorer.pick(models, "strong", [50.0, 2.0, 2.0]) for _ in range(50)}
    assert ties == {"runner", "cheap"}  # ties drawn at random
    with pytest.raises(ValueError, match="evidence has 2 entries for 3 candidates"):
        explorer.pick(models, "strong", [1.0, 2.0])
    # Through the router: outcomes for the explored model raise its evidence on those prompts,
    # so exploration moves on to the next least-known one.
    r = _router(package, fake_embedder, learning=LearningSettings(exploration=1.0, seed=0))
    counts = {"runner": 0, "cheap": 0}
    for i in range(40):
        d = r.route(math_prompt(i))
        counts[d.selected_model] += 1
        r.report_outcome(d.decision_id, 0.5)
    assert min(counts.values()) >= 15, counts  # balanced, not left to chance


# report_outcome by prompt hash --------------------------------------------------------------


def test_a_decision_carries_the_sha256_of_the_prompt_it_routed_on(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    prompt = math_prompt(1) + " \u00e9"
    first = router.route(prompt)
    assert first.prompt_hash == hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    hit = router.route(prompt)
    assert hit.cache_hit and hit.prompt_hash == first.prompt_hash
    batch = router.route_batch([prompt, poem_prompt(1)], cost_weights=[0.0, 1.0])
    assert [d.prompt_hash for d in batch] == [first.prompt_hash, hash_prompt(poem_prompt(1))] * 2
    assert "prompt_hash" in first.to_dict()  # a library field, as policy and basis are
    assert "prompt_hash" not in first.to_dict(ROUTE_FIELDS)  # (the service adds it after them)
    vector = fake_embedder.embed([prompt])[0]
    assert router.route(embedding=vector).prompt_hash == ""  # no prompt: no hash


@pytest.mark.parametrize("bad", ["A" * 64, "0" * 63, "x", 5])
def test_a_decision_refuses_a_prompt_hash_of_another_shape(package, fake_embedder, bad) -> None:  # type: ignore[no-untyped-def]
    d = _router(package, fake_embedder).route(math_prompt(1))
    with pytest.raises(InvalidInputError) as info:
        dataclasses.replace(d, prompt_hash=bad)
    assert info.value.field == "prompt_hash"


def test_an_outcome_by_prompt_hash_is_learned_as_the_latest_decision_of_that_prompt(  # type: ignore[no-untyped-def]
        package, fake_embedder) -> None:
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, feedback_log=log, cache_size=0)
    first, latest = router.route(math_prompt(1)), router.route(math_prompt(1))
    assert first.prompt_hash == latest.prompt_hash and first.decision_id != latest.decision_id
    result = router.report_outcome(first.prompt_hash, 0.0)
    assert result.decision_id == latest.decision_id  # the latest of the two
    assert (result.model, result.tenant, result.quality) == ("strong", "default", 0.0)
    [event] = log.replay()
    assert event.decision_id == latest.decision_id  # logged as that decision's
    assert router.learner.n_events() == 1
    # The same as reporting by its id: a repeat by id replaces it.
    again = router.report_outcome(latest.decision_id, 1.0)
    assert again.replaced and again.previous_quality == 0.0
    by_id = _router(package, fake_embedder, cache_size=0)
    by_id.report_outcome(by_id.route(math_prompt(1)).decision_id, 1.0)
    assert _math_error(router) == pytest.approx(_math_error(by_id), abs=1e-12)


def test_a_prompt_hash_names_the_latest_decision_of_a_given_tenant(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    acme = router.route(math_prompt(1), tenant="acme")
    globex = router.route(math_prompt(1), tenant="globex")
    assert router.report_outcome(acme.prompt_hash, 1.0, tenant="acme").decision_id == \
        acme.decision_id
    with pytest.raises(DecisionNotFoundError, match="no remembered decision has prompt hash"):
        router.report_outcome(acme.prompt_hash, 1.0, tenant="initech")
    # Without a tenant: the latest of any tenant's, learned as that tenant's.
    result = router.report_outcome(acme.prompt_hash, 0.5)
    assert (result.decision_id, result.tenant) == (globex.decision_id, "globex")
    assert router.learner.n_events("acme") == 1 and router.learner.n_events("globex") == 1


def test_an_unknown_or_forgotten_prompt_hash_is_not_found_and_learns_nothing(  # type: ignore[no-untyped-def]
        package, fake_embedder) -> None:
    router = _router(package, fake_embedder, learning=LearningSettings(memory_size=2),
                     cache_size=0)
    gone = router.route(math_prompt(1))
    router.route(math_prompt(2))
    router.route(math_prompt(3))  # the first leaves the memory, and its prompt's hash with it
    unknown = hash_prompt("never routed")
    for missing in (gone.prompt_hash, unknown):
        with pytest.raises(DecisionNotFoundError) as info:
            router.report_outcome(missing, 1.0)
        assert str(info.value).startswith(f'decision_id: no remembered decision has prompt '
                                          f'hash "{missing}"'), info.value
        assert "for the 2 decisions a router remembers" in str(info.value)
    assert router.learner.n_events() == 0
    assert router.learner.memory.latest(gone.prompt_hash) is None
    assert len(router.learner.memory._latest) == 4  # two prompts, by hash and by tenant


@pytest.mark.parametrize(("sent", "says"), [
    ("0ff", "is 3 characters, neither a decision id (32) nor a prompt hash (64)"),
    ("0" * 33, "is 33 characters, neither"), ("a" * 2**20, "is 1048576 characters, neither"),
    ("A" * 64, 'holds "A" (character 1), which no decision id or prompt hash holds'),
    ("", "must be a decision id or prompt hash, got an empty string")])
def test_an_outcome_naming_neither_shape_is_refused_naming_both(  # type: ignore[no-untyped-def]
        package, fake_embedder, sent: str, says: str) -> None:
    router = _router(package, fake_embedder)
    router.route(math_prompt(1))
    with pytest.raises(InvalidInputError) as info:
        router.report_outcome(sent, 1.0)
    assert info.value.field == "decision_id"
    assert says in str(info.value) and "a prompt hash the 64 digits" in str(info.value)
    assert len(str(info.value)) < 400 and router.learner.n_events() == 0


def test_a_prompt_hash_index_follows_copies_and_a_smaller_memory(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    """A cached decision served again is remembered as a copy (an alias), which the hash then
    names; a memory rebuilt smaller keeps the index of the entries it keeps only."""
    router = _router(package, fake_embedder)
    first = router.route(math_prompt(1))
    hit = router.route(math_prompt(1))
    assert hit.cache_hit
    assert router.report_outcome(first.prompt_hash, 1.0).decision_id == hit.decision_id
    others = [router.route(math_prompt(i)) for i in (2, 3)]
    router.learner.configure(LearningSettings(memory_size=2))
    assert router.learner.memory.latest(first.prompt_hash) is None
    assert [router.learner.memory.latest(d.prompt_hash).decision_id  # type: ignore[union-attr]
            for d in others] == [d.decision_id for d in others]



def test_a_decision_read_back_from_a_store_keeps_its_hash_but_not_its_prompts_index() -> None:
    """An entry remembered ``restored`` (made before the router went live) is not named by its
    prompt's hash, which a store answers for: the latest decision of the prompt may be another
    one the store keeps. A copy of it (a decision made now) is named, and a memory rebuilt
    keeps each entry as it was."""
    def entry(decision_id: str, created: float) -> PendingDecision:
        return PendingDecision(decision_id=decision_id, tenant="acme", chosen="a",
                               candidates=("a", "b"), created=created, prompt_hash="f" * 64)

    memory = DecisionMemory(4)
    memory.remember(entry("old", 1.0), restored=True)
    assert memory.get("old") is not None and memory.get("old").prompt_hash == "f" * 64  # type: ignore[union-attr]
    assert memory.latest("f" * 64) is None and memory.latest("f" * 64, "acme") is None
    memory.remember(entry("made", 5.0))
    memory.remember(entry("old", 1.0), restored=True)  # read back again: the index stays
    assert memory.latest("f" * 64, "acme").decision_id == "made"  # type: ignore[union-attr]
    rebuilt = memory.resized(3)
    assert [e.decision_id for e in rebuilt.entries()] == ["made", "old"]
    assert rebuilt.latest("f" * 64).decision_id == "made"  # type: ignore[union-attr]
    assert rebuilt.alias("copy", "old")  # a decision made now, a copy of the one read back
    assert rebuilt.latest("f" * 64, "acme").decision_id == "copy"  # type: ignore[union-attr]
    alone = DecisionMemory(2)
    alone.remember(entry("old", 1.0), restored=True)
    alone.remember(entry("old", 1.0))  # remembered as made here: named by its hash
    assert alone.latest("f" * 64).decision_id == "old"  # type: ignore[union-attr]
    assert alone.resized(2).latest("f" * 64).decision_id == "old"  # type: ignore[union-attr]


def test_a_full_memory_lets_go_of_the_oldest_decision_of_the_tenant_holding_the_most() -> None:
    def entry(decision_id: str, tenant: str) -> PendingDecision:
        return PendingDecision(decision_id=decision_id, tenant=tenant, chosen="a",
                               candidates=("a", "b"))

    memory = DecisionMemory(4)
    memory.remember(entry("a1", "acme"))
    memory.remember(entry("a2", "acme"))
    for n in range(50):
        memory.remember(entry(f"g{n}", "globex"))
    assert [e.decision_id for e in memory.entries()] == ["a1", "a2", "g48", "g49"]
    memory.remember(entry("a3", "acme"))  # acme holds the most now: its oldest goes
    assert [e.decision_id for e in memory.entries()] == ["a2", "g48", "g49", "a3"]
    memory.remember(entry("g48", "acme"))  # an id remembered again, for another tenant
    memory.remember(entry("i1", "initech"))
    assert [e.decision_id for e in memory.entries()] == ["g49", "a3", "g48", "i1"]
    assert memory.alias("a4", "a3")  # the copy and its refreshed source, acme's newest
    assert [e.decision_id for e in memory.entries()] == ["g49", "i1", "a3", "a4"]
    alone = DecisionMemory(3)
    for n in range(5):
        alone.remember(entry(f"d{n}", "acme"))
    assert [e.decision_id for e in alone.entries()] == ["d2", "d3", "d4"]  # oldest first
    assert [e.decision_id for e in memory.resized(2).entries()] == ["i1", "a4"]


# Events, replay, the log ---------------------------------------------------------------------


def test_events_round_trip_and_the_log_replays_by_tenant(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, feedback_log=log)
    for i, tenant in enumerate(["a", "b", "a"]):
        router.report_outcome(router.route(math_prompt(i), tenant=tenant).decision_id, 0.5)
    events = list(log.replay())
    assert [e.tenant for e in events] == ["a", "b", "a"]
    assert [e.tenant for e in log.replay("a")] == ["a", "a"]
    back = FeedbackEvent.from_dict(json.loads(json.dumps(events[0].to_dict())))
    assert back == events[0]
    costed = FeedbackEvent(**{**events[0].__dict__, "measured_cost": 0.0125})
    assert FeedbackEvent.from_dict(json.loads(json.dumps(costed.to_dict()))) == costed
    with pytest.raises(InvalidInputError, match="not a feedback event"):
        FeedbackEvent.from_dict({"model": "x"})


@pytest.mark.parametrize(("events", "field"), [
    (5, "events"), ("events.jsonl", "events"), ({"tenant": "a"}, "events"),
    ([{"tenant": "a", "model": "x"}], "events[0]")])
def test_a_replay_of_what_is_no_event_is_refused_naming_it(  # type: ignore[no-untyped-def]
        package, fake_embedder, events: object, field: str) -> None:
    rebuilt = _router(package, fake_embedder)
    with pytest.raises(InvalidInputError) as info:
        rebuilt.learner.replay(events)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "FeedbackEvent" in str(info.value)
    assert rebuilt.learner.state().meta["tenants"] == []  # nothing learned


def test_a_replay_stops_before_the_first_item_that_is_no_event(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, feedback_log=log)
    router.report_outcome(router.route(math_prompt(0), tenant="a").decision_id, 0.5)
    [event] = log.replay()
    rebuilt = _router(package, fake_embedder)
    with pytest.raises(InvalidInputError, match="1 event") as info:
        rebuilt.learner.replay([event, event.to_dict()])  # type: ignore[list-item]
    assert info.value.field == "events[1]"
    assert rebuilt.learner.state().meta["tenants"] == ["a"]  # the event before it, as it says


def test_replay_in_order_gives_the_same_posterior(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, feedback_log=log)
    rng = np.random.default_rng(3)
    for i in range(60):
        prompt = math_prompt(i) if i % 2 else f"an entirely new topic number {i} about ships"
        d = router.route(prompt, tenant=["x", "y"][i % 2])
        # (a third by prompt hash: logged as the decision it names, replayed as any other)
        router.report_outcome(d.prompt_hash if i % 3 == 0 else d.decision_id,
                              float(rng.random()))
    rebuilt = _router(package, fake_embedder)
    assert rebuilt.learner.replay(log.replay()) == 60
    probe = Inputs(embeddings=fake_embedder.embed([math_prompt(500), "new topic about ships"]))
    for tenant in ("x", "y"):
        a = router.learner.policy_for(tenant)[0].estimate(probe)
        b = rebuilt.learner.policy_for(tenant)[0].estimate(probe)
        np.testing.assert_array_equal(a.error, b.error)
        np.testing.assert_array_equal(a.unit_probabilities, b.unit_probabilities)


# Overlays ------------------------------------------------------------------------------------


def _event(vector: np.ndarray, model: str, quality: float, did: str) -> FeedbackEvent:
    return FeedbackEvent(decision_id=did, model=model, quality=quality,
                         embedding=tuple(float(v) for v in vector))


def test_cluster_overlay_opens_a_cluster_for_unfamiliar_prompts(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    base = package.policy
    assert isinstance(base, ClusterPolicy)
    overlay = ClusterOverlay(base, novelty_threshold=0.4, max_new_clusters=1)
    ships = fake_embedder.embed([f"sail the galleon across stormy seas voyage {i}"
                                 for i in range(40)])
    assert float((ships @ base.centroids_.T).max()) < 0.4
    for i, v in enumerate(ships):
        overlay.apply(_event(v, "strong", 0.0, f"s{i}"))
        overlay.apply(_event(v, "cheap", 1.0, f"c{i}"))
    assert overlay.n_new_clusters == 1  # then the cap: later ones join it
    posterior = overlay.posterior()
    assert posterior.n_units == base.n_units + 1
    est = posterior.estimate(Inputs(embeddings=ships[:1]))
    assert int(est.unit_ids[0]) == base.n_units
    strong, runner, cheap = est.error[0]
    assert cheap < strong
    # Runner was never tried there: it starts from what the fitted clusters estimate at the
    # new cluster's centre, shifted up because the cluster proved harder than that for strong
    # (failing) more than easier for cheap.
    centre = cast(ClusterPolicy, posterior).centroids_[-1:]
    anchor = base.estimate(Inputs(embeddings=centre)).error[0]
    assert runner > anchor[1] + 0.02
    assert base.n_units == 2  # the fitted policy is untouched


def test_outcomes_in_grown_clusters_rebuild_the_posterior_only_when_asked(
        package: WeightsPackage, fake_embedder: FakeEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaying a long log must not rebuild the cluster tables once per event."""
    base = cast(ClusterPolicy, package.policy)
    overlay = ClusterOverlay(base, novelty_threshold=0.4, max_new_clusters=2)
    rebuilt = []
    original = ClusterPolicy.with_clusters
    monkeypatch.setattr(ClusterPolicy, "with_clusters",
                        # append's None makes ``or`` go on to the original
                        lambda self, c: rebuilt.append(len(c))  # type: ignore[func-returns-value]
                        or original(self, c))
    ships = fake_embedder.embed([f"sail the galleon across stormy seas voyage {i}"
                                 for i in range(30)])
    for i, v in enumerate(ships):
        overlay.apply(_event(v, "cheap" if i % 2 else "strong", 1.0, f"e{i}"))
    assert overlay.n_new_clusters >= 1 and rebuilt == []
    posterior = overlay.posterior()
    assert rebuilt == [overlay.n_new_clusters]
    assert posterior.n_units == base.n_units + overlay.n_new_clusters
    np.testing.assert_array_equal(cast(ClusterPolicy, posterior).centroids_, overlay._centroids)


def test_a_grown_clusters_prior_rescales_the_gaps_its_outcomes_show(package) -> None:  # type: ignore[no-untyped-def]
    """Outcomes showing the strong model ahead by more than the anchor says widen every gap,
    so an unmeasured model's prior moves with the shared shift only."""
    from switchpoint.policies.base import ProfileTable

    base = package.policy
    anchor = np.array([[0.2, 0.4, 0.6]])
    count = np.array([[200.0, 0.0, 200.0]])
    table = ProfileTable(["strong", "runner", "cheap"], count,
                         np.array([[0.0, np.nan, 1.0]]), np.full((1, 3), 0.001))
    prior = base._difficulty_prior(table, anchor)[0]
    # Weighted ridge fit of the gaps (-0.2, +0.4) on the anchor's spread (-0.2, +0.2):
    # δ = 40 / (400 + 6), β = 24 / (16 + 24). A shift alone (β = 0) would leave strong above
    # its anchor; the widened gap puts it below.
    delta, beta = 40 / 406, 24 / 40
    np.testing.assert_allclose(prior, [0.2 + delta - 0.2 * beta, 0.4 + delta,
                                       0.6 + delta + 0.2 * beta])
    assert prior[0] < anchor[0, 0] < anchor[0, 0] + delta
    # No outcomes: the anchor itself.
    empty = ProfileTable(["strong", "runner", "cheap"], np.zeros((1, 3)),
                         np.full((1, 3), np.nan), np.full((1, 3), np.nan))
    np.testing.assert_allclose(base._difficulty_prior(empty, anchor), anchor)


def test_a_grown_cluster_without_outcomes_routes_as_the_fitted_clusters_do(package) -> None:  # type: ignore[no-untyped-def]
    base = package.policy
    rng = np.random.default_rng(0)
    centre = rng.standard_normal((1, 384)).astype(np.float32)
    centre /= np.linalg.norm(centre)
    grown = base.with_clusters(centre)
    assert grown.n_units == base.n_units + 1 and grown.parent_[-1] == -1
    np.testing.assert_allclose(grown.error_[-1], base.estimate(Inputs(embeddings=centre)).error[0],
                               atol=1e-6)
    np.testing.assert_allclose(grown.error_[:-1], base.error_)


def test_knn_overlay_adds_the_prompt_as_a_neighbour(fake_embedder) -> None:  # type: ignore[no-untyped-def]
    package = two_kinds_package(fake_embedder, policy="knn")
    overlay = KnnOverlay(package.policy)  # type: ignore[arg-type]
    x = fake_embedder.embed([math_prompt(1)])
    before = package.policy.estimate(Inputs(embeddings=x)).error[0, 2]
    for i in range(15):
        overlay.apply(_event(fake_embedder.embed([math_prompt(100 + i)])[0], "cheap", 1.0,
                             f"d{i}"))
    after = overlay.posterior().estimate(Inputs(embeddings=x))
    assert after.error[0, 2] < before - 0.1
    assert overlay.posterior().n_units == package.policy.n_units + 15
    assert overlay.apply(_event(fake_embedder.embed([math_prompt(100)])[0], "cheap", 0.0,
                                "d0")) == 1.0  # replaced
    assert overlay.posterior().n_units == package.policy.n_units + 15


def test_text_policies_learn_from_the_units_their_decisions_used(
    small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    package = fit(small_records, policy="tiers", split="test", embedder=fake_embedder)
    router = Router(package, embedder=fake_embedder, cost_weight=0.0)
    prompt = "What is the capital of France?"
    before = router.route(prompt)
    for i in range(40):
        d = router.route(f"{prompt} ({i})")
        router.report_outcome(d.decision_id, 0.0, model=before.selected_model)
    after = router.route(prompt)
    assert after.expected_errors[before.selected_model] > before.expected_errors[
        before.selected_model] + 0.05


def test_fixed_policy_does_not_learn(small_records: RecordSet, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    package = fit(small_records, policy="fixed", split="test", embedder=fake_embedder)
    log = InMemoryFeedbackLog()
    router = Router(package, embedder=fake_embedder, feedback_log=log)
    d = router.route("hello")
    with pytest.raises(InvalidInputError, match="does not learn from outcomes"):
        router.report_outcome(d.decision_id, 1.0)
    assert len(log) == 0  # what cannot be learned is not logged either


# Export --------------------------------------------------------------------------------------


def test_export_folds_the_overlay_into_new_weights(package, fake_embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    with pytest.raises(InvalidInputError, match="nothing to fold"):
        export_weights(router, tmp_path / "none")
    for i in range(60):
        d = router.route(math_prompt(i))
        router.report_outcome(d.decision_id, 0.0, model="strong")
    for i in range(5):
        router.report_outcome(router.route(f"ships and sails on the sea {i}").decision_id, 1.0)
    learned = _math_error(router)
    # A tenant with nothing to export is refused, naming the tenants that have outcomes.
    router.report_outcome(router.route(math_prompt(0), tenant="acme").decision_id, 1.0)
    with pytest.raises(InvalidInputError, match="nothing to fold") as info:
        export_weights(router, tmp_path / "none", tenant="zeta")
    assert 'tenants with outcomes: "acme", "default" (name one with --tenant)' in str(info.value)
    exported = export_weights(router, tmp_path / "learned")
    assert exported.path == tmp_path / "learned"
    loaded = load_weights(tmp_path / "learned")
    fresh = _router(loaded, fake_embedder)
    assert _math_error(fresh) == pytest.approx(learned, abs=0.01)
    assert fresh.route(math_prompt(1)).selected_model == router.route(
        math_prompt(1)).selected_model
    assert loaded.provenance["learned"][0]["events"] == 65
    assert loaded.policy.n_units == package.policy.n_units + router.learner.overlay().n_new_clusters  # type: ignore[union-attr]
    assert package.policy.n_units == 2  # the router's own weights are unchanged


# What the library takes, and what it refuses without learning anything -----------------------


def test_numpy_numbers_are_numbers_and_huge_ones_are_refused(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    # (NumPy scalars are not the annotated types, but callers pass them.)
    d = router.route(math_prompt(1), cost_weight_override=np.float32(0.5))  # type: ignore[arg-type]
    assert router.report_outcome(d.decision_id, np.float32(0.25),  # type: ignore[arg-type]
                                 cost=np.int64(3)).quality == 0.25  # type: ignore[arg-type]
    assert router.report_outcome(d.decision_id,
                                 success=np.bool_(True)).quality == 1.0  # type: ignore[arg-type]
    events = router.learner.n_events()
    for kwargs, field in (({"quality_score": 10**400}, "quality_score"),
                          ({"quality_score": 0.5, "cost": 10**400}, "cost"),
                          ({"quality_score": np.bool_(True)}, "quality_score")):
        with pytest.raises(InvalidInputError) as info:
            router.report_outcome(d.decision_id, **kwargs)
        assert info.value.field == field
    with pytest.raises(InvalidInputError) as info:
        router.route(math_prompt(1), cost_weight_override=10**400)
    assert info.value.field == "cost_weight_override"
    assert router.learner.n_events() == events


@pytest.mark.parametrize("kwargs, field", [
    ({"seed": "abc"}, "seed"), ({"seed": -1}, "seed"), ({"memory_size": 1.5}, "memory_size"),
    ({"memory_size": -1}, "memory_size"), ({"max_new_clusters": "x"}, "max_new_clusters"),
    ({"exploration": 2}, "exploration"), ({"novelty_threshold": "high"}, "novelty_threshold"),
    ({"max_tenants": 0}, "max_tenants"), ({"max_tenants": -1}, "max_tenants"),
    ({"max_tenants": "many"}, "max_tenants"), ({"memory_size": MAX_MEMORY_SIZE + 1}, "memory_size"),
])
def test_learning_settings_name_what_is_wrong(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        LearningSettings(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_bad_max_tenants_hears_the_one_rule_it_takes() -> None:
    for value in ("5", 0, -1, 2.0):
        with pytest.raises(InvalidInputError) as info:
            LearningSettings(max_tenants=value)  # type: ignore[arg-type]
        assert str(info.value) == (f"max_tenants: must be a whole number >= 1, or None for no "
                                   f"bound, got {json.dumps(value)}")
    assert LearningSettings(max_tenants=1).max_tenants == 1
    assert LearningSettings(max_tenants=None).max_tenants is None
    with pytest.raises(InvalidInputError) as info:
        LearningSettings(memory_size=None)  # type: ignore[arg-type]
    assert str(info.value) == "memory_size: must be a whole number >= 0, got null"


def test_learning_settings_take_what_the_config_takes() -> None:
    # The library took any memory_size, the config at most MAX_MEMORY_SIZE: one bound now.
    assert LearningSettings(memory_size=MAX_MEMORY_SIZE).memory_size == MAX_MEMORY_SIZE
    assert LearningConfig(memory_size=MAX_MEMORY_SIZE).memory_size == MAX_MEMORY_SIZE
    with pytest.raises(ValueError, match="memory_size"):
        LearningConfig(memory_size=MAX_MEMORY_SIZE + 1)
    # A rate given as NumPy's float, or as -0.0, is kept as the plain float it is.
    for given, kept in ((np.float64(0.1), "0.1"), (np.float32(0.5), "0.5"), (-0.0, "0.0")):
        rate = LearningSettings(exploration=given).exploration  # type: ignore[arg-type]
        assert type(rate) is float and repr(rate) == kept, (given, rate)


def test_learning_settings_keep_plain_python_numbers_for_numpy_scalars() -> None:
    settings = LearningSettings(memory_size=np.int64(50), seed=np.int32(3),  # type: ignore[arg-type]
                                max_new_clusters=np.uint16(7), max_tenants=np.int64(9),  # type: ignore[arg-type]
                                novelty_threshold=np.float32(0.5))  # type: ignore[arg-type]
    for name, value in (("memory_size", 50), ("seed", 3), ("max_new_clusters", 7),
                        ("max_tenants", 9), ("novelty_threshold", 0.5)):
        kept = getattr(settings, name)
        assert type(kept) is type(value) and kept == value, (name, kept)


def test_a_decision_served_from_the_cache_always_takes_feedback(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder, learning=LearningSettings(memory_size=3))
    router.route(math_prompt(1))
    for i in range(3):  # the first decision leaves the memory; its cache entry stays
        router.route(math_prompt(100 + i))
    again = router.route(math_prompt(1))
    assert not again.cache_hit  # decided afresh, so remembered
    served = router.route(math_prompt(1))  # a cache hit on a decision still remembered
    assert served.cache_hit
    assert router.report_outcome(again.decision_id, 1.0).quality == 1.0
    assert router.report_outcome(served.decision_id, 0.0).replaced is False


def test_an_export_counts_outcomes_not_repeats(package, fake_embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    d = router.route(math_prompt(1))
    for q in (0.1, 0.2, 0.3):
        router.report_outcome(d.decision_id, q)
    learned = export_weights(router, tmp_path / "w").provenance["learned"][-1]
    assert (learned["outcomes"], learned["events"]) == (1, 3)


class _RefusingLog(InMemoryFeedbackLog):
    """A feedback log that cannot keep anything while ``refusing``."""

    refusing = True

    def append(self, event: FeedbackEvent) -> None:
        if self.refusing:
            raise OSError("No space left on device")
        super().append(event)


def test_an_outcome_its_log_cannot_keep_is_not_learned(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    log = _RefusingLog()
    router = _router(package, fake_embedder, feedback_log=log)
    decision = router.route(math_prompt(1), tenant="a")
    before = _math_error(router, "a")
    with pytest.raises(OSError, match="No space"):
        router.report_outcome(decision.decision_id, 0.0)
    assert router.learner.n_events("a") == 0 and _math_error(router, "a") == before
    log.refusing = False
    taken = router.report_outcome(decision.decision_id, 0.0)
    assert taken.replaced is False and len(log) == 1 and router.learner.n_events("a") == 1


# Models without a profile --------------------------------------------------------------------


def _with_newcomers(package: WeightsPackage, fake_embedder: FakeEmbedder, **kw: object
                    ) -> Router:
    """The two kinds' models priced, with ``peer`` (of strong's tier) and ``tiny`` (no tier)
    that the weights have no profile for."""
    catalog = Catalog([
        ModelCard("strong", profile="strong", input_per_mtok=10, output_per_mtok=10,
                  tier="complex"),
        ModelCard("runner", profile="runner", input_per_mtok=5, output_per_mtok=5,
                  tier="complex"),
        ModelCard("cheap", profile="cheap", input_per_mtok=1, output_per_mtok=1, tier="simple"),
        ModelCard("peer", input_per_mtok=0.5, output_per_mtok=0.5, tier="complex"),
        ModelCard("tiny", input_per_mtok=0.01, output_per_mtok=0.01)])
    return Router(package, embedder=fake_embedder, catalog=catalog, cost_weight=0.5,
                  **kw)  # type: ignore[arg-type]


def _teach(router: Router, model: str, quality: float, n: int, tenant: str | None = None,
           offset: int = 0) -> None:
    for i in range(n):
        d = router.route(math_prompt(offset + i), tenant=tenant)
        router.report_outcome(d.decision_id, quality, model=model, tenant=tenant)


def test_outcomes_of_a_model_without_a_profile_move_its_tier_prior(
        package: WeightsPackage, fake_embedder: FakeEmbedder) -> None:
    """Sixty failures of the unprofiled model that wins math on price move math to a measured
    model; sixty successes of the untiered one that loses it win it back, for that tenant
    only, on that kind of prompt only, and a replay of the log gives the same estimates."""
    log = InMemoryFeedbackLog()
    router = _with_newcomers(package, fake_embedder, feedback_log=log)
    before = router.route(math_prompt(900), tenant="a")
    poem_before = router.route(poem_prompt(900), tenant="a").expected_errors
    assert before.selected_model == "peer" and "no labelled examples for peer" in (
        before.evidence[0])
    _teach(router, "peer", 0.0, 60, tenant="a")
    after = router.route(math_prompt(900), tenant="a")
    assert after.selected_model != "peer", after.all_scores
    assert after.expected_errors["peer"] > before.expected_errors["peer"] + 0.3
    assert router.route(math_prompt(900), tenant="b").selected_model == "peer"  # isolated
    poem_after = router.route(poem_prompt(900), tenant="a").expected_errors
    assert poem_after["peer"] == pytest.approx(poem_before["peer"], abs=0.05)

    pair = ["cheap", "tiny"]
    assert router.route(math_prompt(901), available_models=pair,
                        tenant="a").selected_model == "cheap"
    _teach(router, "tiny", 1.0, 60, tenant="a", offset=200)
    won = router.route(math_prompt(901), available_models=pair, tenant="a")
    assert won.selected_model == "tiny", won.all_scores
    assert "moved by" in won.evidence[0]
    assert "Its own outcomes on prompts like this one" in " ".join(won.reasoning)
    assert "Its own outcomes" not in " ".join(before.reasoning)

    rebuilt = _with_newcomers(package, fake_embedder)
    assert rebuilt.learner.replay(log.replay()) == 120
    again = rebuilt.route(math_prompt(901), available_models=pair, tenant="a")
    assert again.expected_errors == won.expected_errors
    restored = _with_newcomers(package, fake_embedder)
    restored.learner.restore(router.learner.state())
    assert restored.route(math_prompt(901), available_models=pair,
                          tenant="a").expected_errors == won.expected_errors


def test_the_tier_prior_of_a_model_without_a_profile_counts_as_at_most_ten_outcomes(
        package: WeightsPackage, fake_embedder: FakeEmbedder) -> None:
    """``peer``'s prior (strong's and runner's mean, both well measured) is more certain than
    ten outcomes could be, so it counts as ten: one failure moves it a tenth of the way (in
    precision: 4 against 40) toward an error of 1, and a second as far again."""
    router = _with_newcomers(package, fake_embedder)
    e0 = router.route(math_prompt(901)).expected_errors["peer"]
    _teach(router, "peer", 0.0, 1)
    e1 = router.route(math_prompt(901)).expected_errors["peer"]
    assert e1 == pytest.approx((40 * e0 + 4) / 44, abs=0.01)
    _teach(router, "peer", 0.0, 1, offset=50)
    assert router.route(math_prompt(901)).expected_errors["peer"] == pytest.approx(
        (40 * e0 + 8) / 48, abs=0.01)


def test_a_success_of_a_model_without_a_profile_does_not_cost_it_its_traffic(
        package: WeightsPackage, fake_embedder: FakeEmbedder) -> None:
    """``peer``'s prior is more certain than ten outcomes: counting it as ten lets outcomes
    move the estimate, but must not widen the uncertainty the cluster policy's pessimism
    charges, or one success would make it score worse, on the prompt taught and every other."""
    router = _with_newcomers(package, fake_embedder)
    prompts = [math_prompt(901), poem_prompt(901)]
    before = [router.route(p) for p in prompts]
    assert [d.selected_model for d in before] == ["peer", "peer"]
    _teach(router, "peer", 1.0, 1)
    after = [router.route(p) for p in prompts]
    assert [d.selected_model for d in after] == ["peer", "peer"], [d.all_scores for d in after]
    for b, a in zip(before, after, strict=True):
        assert a.all_scores["peer"] <= b.all_scores["peer"] + 1e-9
    j = router.models.index("peer")
    taught, untaught = (router.estimates(prompts, tenant=t).stderr for t in (None, "other"))
    assert taught is not None and untaught is not None
    assert (taught[:, j] <= untaught[:, j] + 1e-12).all()


def test_an_export_of_only_outcomes_of_models_without_a_profile_is_refused(
        package: WeightsPackage, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """New weights hold profiles only: a tenant whose outcomes are all of ``tiny`` has
    nothing to fold in, and an export must not claim to have folded them; one outcome of a
    profiled model more, and the export goes through."""
    router = _with_newcomers(package, fake_embedder)
    _teach(router, "tiny", 1.0, 5, tenant="a")
    with pytest.raises(InvalidInputError, match=r"all of models without a learned profile "
                                                r'\("tiny"\).*add-model') as info:
        export_weights(router, tmp_path / "w", tenant="a")
    assert info.value.field == "tenant" and not (tmp_path / "w").exists()
    _teach(router, "cheap", 0.0, 1, tenant="a", offset=100)
    learned = export_weights(router, tmp_path / "w", tenant="a").provenance["learned"][-1]
    assert learned["tenant"] == "a"
    assert (learned["outcomes"], learned["not_folded"]["outcomes"]) == (1, 5)


def test_the_outcomes_an_export_folds_leave_out_those_of_models_without_a_profile(
        package: WeightsPackage, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """A repeat that moves a decision's outcome from ``tiny`` to a profiled model moves it
    into the count an export folds; the count survives a checkpoint."""
    router = _with_newcomers(package, fake_embedder)
    decisions = [router.route(math_prompt(i)) for i in range(4)]
    for d in decisions:
        router.report_outcome(d.decision_id, 1.0, model="tiny")
    router.report_outcome(decisions[0].decision_id, 0.0, model="cheap")  # replaces tiny's
    overlay = router.learner.overlay(None)
    assert overlay is not None and (overlay.n_outcomes, overlay.n_card_outcomes) == (4, 3)
    restored = _with_newcomers(package, fake_embedder)
    restored.learner.restore(router.learner.state())
    learned = export_weights(restored, tmp_path / "w").provenance["learned"][-1]
    assert (learned["outcomes"], learned["not_folded"]["outcomes"]) == (1, 3)


def test_a_model_without_a_profile_learns_nothing_under_a_policy_without_units(
        fake_embedder: FakeEmbedder) -> None:
    knn = _with_newcomers(two_kinds_package(fake_embedder, "knn"), fake_embedder)
    d = knn.route(math_prompt(1))
    with pytest.raises(InvalidInputError, match="learns only its profiled models") as info:
        knn.report_outcome(d.decision_id, 0.0, model="tiny")
    assert info.value.field == "model" and knn.learner.n_outcomes("default") == 0


def test_estimates_of_no_prompts_are_empty_whatever_the_policy_reads(
        package: WeightsPackage, fake_embedder: FakeEmbedder) -> None:
    """As route_batch([]) is []: a policy that reads vectors was refused, saying it needs an
    embedding, for an empty batch a text policy answers with no rows."""
    router = _with_newcomers(package, fake_embedder)
    est = router.estimates([], tenant="a")
    assert est.error.shape == est.cost.shape == (0, len(router.models))
    assert router.route_batch([]) == []


def test_estimates_are_what_routing_decides_from_and_remember_nothing(
        package: WeightsPackage, fake_embedder: FakeEmbedder) -> None:
    router = _with_newcomers(package, fake_embedder)
    _teach(router, "tiny", 1.0, 5, tenant="a")
    prompts = [math_prompt(950), poem_prompt(950)]
    remembered = len(router.learner.memory)
    est = router.estimates(prompts, tenant="a")
    assert est.models == router.models and len(router.learner.memory) == remembered
    for row, prompt in enumerate(prompts):
        d = router.route(prompt, tenant="a")
        for j, model in enumerate(router.models):
            assert d.expected_errors[model] == pytest.approx(est.error[row, j], abs=1e-6)
    assert router.estimates(prompts).error[0, router.models.index("tiny")] != pytest.approx(
        est.error[0, router.models.index("tiny")])  # the deployment's own learned nothing


def test_only_the_tenants_that_routed_last_keep_their_posterior_built(  # type: ignore[no-untyped-def]
        package, fake_embedder, monkeypatch) -> None:
    """Past BUILT_POSTERIORS tenants, the posterior of the one that routed longest ago is
    dropped: its evidence stays, and its next routing builds the same policy again."""
    from switchpoint.learning import learner

    monkeypatch.setattr(learner, "BUILT_POSTERIORS", 3)
    router = _router(package, fake_embedder)
    tenants = [f"user-{i}" for i in range(8)]
    learned = {}
    for i, tenant in enumerate(tenants):
        for j in range(5):
            d = router.route(math_prompt(10 * i + j), tenant=tenant)
            router.report_outcome(d.decision_id, 0.1 * (i % 4))
        learned[tenant] = _math_error(router, tenant)
        assert built(router, tenants) == tenants[max(0, i - 2):i + 1]
    router.cache.clear()
    for tenant in tenants:  # built again from the evidence kept: what it learned before
        assert _math_error(router, tenant) == pytest.approx(learned[tenant], abs=1e-12)
        assert router.learner.n_outcomes(tenant) == 5
    assert built(router, tenants) == tenants[-3:]


def built(router: Router, tenants: list[str]) -> list[str]:
    """The tenants whose posterior is built now."""
    return [t for t in tenants
            if getattr(router.learner.overlay(t), "_cached", None) is not None]


# How many tenants' evidence a router holds ---------------------------------------------------


def _teach_tenants(router: Router, tenants: list[str]) -> dict[str, float]:
    """Five outcomes for each tenant (its own quality); what each then estimates."""
    learned = {}
    for i, tenant in enumerate(tenants):
        for j in range(5):
            d = router.route(math_prompt(10 * i + j), tenant=tenant)
            router.report_outcome(d.decision_id, 0.1 * (i % 5))
        learned[tenant] = _math_error(router, tenant)
    return learned


def test_a_library_router_holds_a_bounded_number_of_tenants_by_default() -> None:
    assert LearningSettings().max_tenants is not None
    assert 0 < LearningSettings().max_tenants <= 10_000  # type: ignore[operator]


def test_past_max_tenants_a_router_with_a_log_lets_the_least_recent_go_and_rebuilds_it(  # type: ignore[no-untyped-def]
        package, fake_embedder) -> None:
    """Any tenant string a caller passes adds evidence; past ``max_tenants`` the least recently
    used tenant's is let go and rebuilt from the log when it comes back, as it was."""
    tenants = [f"user-{i}" for i in range(8)]
    unbounded = _teach_tenants(_router(package, fake_embedder,
                                       learning=LearningSettings(max_tenants=None)), tenants)
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, learning=LearningSettings(max_tenants=3),
                     feedback_log=log)
    learned = _teach_tenants(router, tenants)
    assert router.learner.held_tenants() == 3
    assert router.learner.tenants() == sorted(tenants)  # none forgotten
    router.cache.clear()
    for tenant in tenants:  # each rebuilt from the log: what it learned, as if never let go
        assert _math_error(router, tenant) == pytest.approx(learned[tenant], abs=1e-12)
        assert learned[tenant] == pytest.approx(unbounded[tenant], abs=1e-12)
        assert router.learner.n_outcomes(tenant) == 5
        assert router.learner.held_tenants() <= 3
    assert len(log) == 40  # rebuilding appends nothing
    # A repeat for a decision of a tenant that was let go replaces its earlier outcome.
    first = next(e for e in log.replay("user-0"))
    result = router.report_outcome(first.decision_id, 1.0, tenant="user-0")
    assert result.replaced and result.previous_quality == pytest.approx(0.0)
    assert router.learner.n_outcomes("user-0") == 5 and router.learner.n_events("user-0") == 6


def test_past_max_tenants_a_router_without_a_log_refuses_a_new_tenant_and_learns_nothing(  # type: ignore[no-untyped-def]
        package, fake_embedder) -> None:
    router = _router(package, fake_embedder, learning=LearningSettings(max_tenants=2))
    _teach_tenants(router, ["a", "b"])
    base = _math_error(router, "c")
    d = router.route(math_prompt(77), tenant="c")
    with pytest.raises(InvalidInputError) as info:
        router.report_outcome(d.decision_id, 0.0)
    assert info.value.field == "tenant" and "feedback_log" in str(info.value)
    assert "max_tenants" in str(info.value)
    assert router.learner.tenants() == ["a", "b"] and router.learner.n_events("c") == 0
    assert _math_error(router, "c") == pytest.approx(base)
    d = router.route(math_prompt(78), tenant="a")  # the tenants held still learn
    router.report_outcome(d.decision_id, 1.0)
    assert router.learner.n_events("a") == 6


def test_a_replay_and_a_checkpoint_past_max_tenants_hold_every_tenant(  # type: ignore[no-untyped-def]
        package, fake_embedder) -> None:
    tenants = [f"user-{i}" for i in range(6)]
    log = InMemoryFeedbackLog()
    learned = _teach_tenants(_router(package, fake_embedder, feedback_log=log), tenants)
    rebuilt = _router(package, fake_embedder, learning=LearningSettings(max_tenants=2),
                      feedback_log=InMemoryFeedbackLog(log.replay()))
    assert rebuilt.learner.replay(log.replay()) == 30
    assert rebuilt.learner.held_tenants() == 2
    state = rebuilt.learner.state()  # every tenant, the ones let go too
    restored = _router(package, fake_embedder, learning=LearningSettings(max_tenants=None))
    restored.learner.restore(state)
    for tenant in tenants:
        assert _math_error(rebuilt, tenant) == pytest.approx(learned[tenant], abs=1e-12)
        assert _math_error(restored, tenant) == pytest.approx(learned[tenant], abs=1e-12)


def test_an_outcome_prints_readably_without_the_prompts_vector(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    d = router.route(math_prompt(1), tenant="acme")
    result = router.report_outcome(d.decision_id, 0.5)
    assert result.event.embedding is not None and len(result.event.embedding) > 100
    shown = repr(result)
    assert d.decision_id in shown and "quality=0.5" in shown and "tenant='acme'" in shown
    assert len(shown) < 1000, shown


def test_a_tenant_let_go_whose_events_left_the_log_begins_again_from_what_it_holds(  # type: ignore[no-untyped-def]
        package, fake_embedder, caplog) -> None:
    """Past ``max_tenants`` a tenant's evidence is let go to be rebuilt from the log; if the log
    no longer holds all its events (pruned, or another log swapped in), the tenant routes on
    (no error), its evidence begun again from the events the log holds, as a restart replaying
    that log would (none: the global router's estimates), with a warning; what it learns from
    then on is rebuilt like any tenant's."""
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, learning=LearningSettings(max_tenants=2),
                     feedback_log=log)
    base = _math_error(router, "user-0")

    def replayed(events: list[FeedbackEvent]) -> float:
        """What a router that replays ``events`` estimates for user-0 (a restart would)."""
        fresh = _router(package, fake_embedder, learning=LearningSettings(max_tenants=None))
        fresh.learner.replay(events)
        return _math_error(fresh, "user-0")

    _teach_tenants(router, ["user-0", "user-1", "user-2"])  # user-0 let go
    assert router.learner.held_tenants() == 2
    older = list(log.replay("user-0"))
    log._events = [e for e in log._events if e not in older[:2]]  # its oldest events pruned
    router.cache.clear()
    with caplog.at_level("WARNING", logger="switchpoint.learning.learner"):
        d = router.route(math_prompt(91), tenant="user-0")  # no StoreError
        assert _math_error(router, "user-0") == pytest.approx(replayed(older[2:]), abs=1e-12)
        router.route(math_prompt(92), tenant="user-0")
    warned = [r.getMessage() for r in caplog.records if "user-0" in r.getMessage()]
    assert len(warned) == 1 and "feedback log" in warned[0]
    assert "5 outcome(s)" in warned[0] and "the 3 the log holds" in warned[0]
    assert router.learner.n_outcomes("user-0") == 3
    # It learns on; let go again, it is rebuilt from the log as any tenant.
    router.report_outcome(d.decision_id, 0.0)
    relearned = _math_error(router, "user-0")
    now = list(log.replay("user-0"))
    assert relearned == pytest.approx(replayed(now), abs=1e-12)
    _teach_tenants(router, ["user-3", "user-4"])  # user-0 let go again
    assert "user-0" in router.learner.tenants() and router.learner.held_tenants() == 2
    router.cache.clear()
    assert _math_error(router, "user-0") == pytest.approx(relearned, abs=1e-12)
    assert router.learner.n_outcomes("user-0") == 4
    # Its log swapped for one without its events: it begins again from the global router's.
    _teach_tenants(router, ["user-5", "user-6"])  # user-0 let go again
    log._events = [e for e in log._events if e.tenant != "user-0"]
    router.cache.clear()
    with caplog.at_level("WARNING", logger="switchpoint.learning.learner"):
        assert _math_error(router, "user-0") == pytest.approx(base, abs=1e-12)
    assert router.learner.n_outcomes("user-0") == 0
    state = router.learner.state()  # a checkpoint holds every tenant
    assert "user-0" in state.meta["tenants"]


def _began_again(package, fake_embedder, caplog  # type: ignore[no-untyped-def]
                 ) -> tuple[InMemoryFeedbackLog, Router]:
    """A bounded router whose user-0, let go, began again from the 3 of its 5 events its log
    kept (warned once), then learned one more outcome."""
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, learning=LearningSettings(max_tenants=2),
                     feedback_log=log)
    _teach_tenants(router, ["user-0", "user-1", "user-2"])  # user-0 let go
    older = list(log.replay("user-0"))
    log._events = [e for e in log._events if e not in older[:2]]  # its oldest events pruned
    router.cache.clear()
    with caplog.at_level("WARNING", logger="switchpoint.learning.learner"):
        d = router.route(math_prompt(91), tenant="user-0")
    assert len([r for r in caplog.records if "begins again" in r.getMessage()]) == 1
    router.report_outcome(d.decision_id, 0.0)
    assert router.learner.n_outcomes("user-0") == 4
    return log, router


def test_a_tenant_that_began_again_restored_and_let_go_is_rebuilt_without_a_warning(  # type: ignore[no-untyped-def]
        package, fake_embedder, caplog, tmp_path) -> None:
    """A tenant that began again carries a revision larger than its events in the log; its
    checkpoint says where it began again, so a bounded learner that restores it, lets it go
    and rebuilds it rebuilds the same evidence from the log, with no second warning."""
    log, router = _began_again(package, fake_embedder, caplog)
    learned = _math_error(router, "user-0")
    path = tmp_path / "learning.checkpoint"
    write_checkpoint(path, Checkpoint("k", len(log), "e", router.learner.state()))
    state = read_checkpoint(path, "k").state
    caplog.clear()
    restored = _router(package, fake_embedder, learning=LearningSettings(max_tenants=2),
                       feedback_log=log)
    restored.learner.restore(state)
    _teach_tenants(restored, ["user-3", "user-4"])  # user-0 let go
    assert "user-0" in restored.learner.tenants() and restored.learner.held_tenants() == 2
    with caplog.at_level("WARNING", logger="switchpoint.learning.learner"):
        assert _math_error(restored, "user-0") == pytest.approx(learned, abs=1e-12)
    assert not [r for r in caplog.records if "begins again" in r.getMessage()]
    assert restored.learner.n_outcomes("user-0") == 4
    _, revision = router.learner.policy_for("user-0")
    assert restored.learner.policy_for("user-0")[1] == revision


def test_a_checkpoint_saved_before_restarts_were_kept_still_restores(  # type: ignore[no-untyped-def]
        package, fake_embedder, caplog) -> None:
    """A learner's state without ``restarted`` (saved before it was kept) restores as before:
    as if no tenant began again (such a tenant, let go, begins again once more, as it did);
    one whose ``restarted`` does not fit its tenants is refused, and nothing changes."""
    log, router = _began_again(package, fake_embedder, caplog)
    learned = _math_error(router, "user-0")
    state = router.learner.state()
    for bad in (["x"] * 3, [0], [10**6] * 3, True):
        broken = router.learner.state()
        broken.meta["restarted"] = bad
        with pytest.raises(CheckpointError, match="restarted"):
            router.learner.restore(broken)
    assert _math_error(router, "user-0") == pytest.approx(learned, abs=1e-12)
    del state.meta["restarted"]
    restored = _router(package, fake_embedder, learning=LearningSettings(max_tenants=None),
                       feedback_log=log)
    restored.learner.restore(state)
    assert _math_error(restored, "user-0") == pytest.approx(learned, abs=1e-12)
    assert restored.learner.n_outcomes("user-0") == 4
