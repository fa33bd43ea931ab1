"""The Router and the evaluation harness choose with one decision rule, ties included."""

from __future__ import annotations

import numpy as np

from switchpoint.decision import decide
from switchpoint.evaluation.harness import route_choices
from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.records import RecordSet
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage
from tests.conftest import FakeEmbedder

LAMBDAS = (0.0, 0.05, 0.3, 1.0, 4.0, 50.0)
ADDED = "zero-one-ai/Yi-34B-Chat"


def _vectors(records: RecordSet, fake_embedder) -> np.ndarray:  # type: ignore[no-untyped-def]
    extra = [f"{p} Answer briefly, variant {i}." for i, p in enumerate(records.prompts[:40])]
    return np.asarray(fake_embedder.embed([*records.prompts, *extra]), dtype=np.float32)


def test_router_and_harness_choose_the_same_models(
    tiny_package: WeightsPackage, small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    router = Router(tiny_package, embedder=fake_embedder, cache_size=0)
    vectors = _vectors(small_records, fake_embedder)
    models = router.models
    everyone = np.ones(len(models), dtype=bool)
    harness = route_choices(router.policy, Inputs(embeddings=vectors), models, everyone, LAMBDAS)
    batch = router.route_batch(embeddings=vectors, cost_weights=LAMBDAS)
    n = len(vectors)
    chosen_models: set[str] = set()
    for k, lam in enumerate(LAMBDAS):
        expected = [models[j] for j in harness[lam]]
        assert [d.selected_model for d in batch[k * n:(k + 1) * n]] == expected
        # One prompt at a time too (a different matrix shape for the soft assignment).
        for i in range(0, n, 7):
            d = router.route(embedding=vectors[i], cost_weight_override=lam)
            assert d.selected_model == expected[i], (lam, i)
        chosen_models.update(expected)
    assert len(chosen_models) >= 3  # the λ sweep really moves between models


def test_same_choices_within_a_candidate_subset(
    tiny_package: WeightsPackage, small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    router = Router(tiny_package, embedder=fake_embedder, cache_size=0)
    subset = ["claude-v2", "mistralai/mixtral-8x7b-chat", "meta/llama-2-70b-chat"]
    vectors = _vectors(small_records, fake_embedder)[:60]
    # The harness sees only the subset's columns; the router masks the rest.
    harness = route_choices(router.policy, Inputs(embeddings=vectors), subset,
                            np.ones(len(subset), dtype=bool), LAMBDAS)
    for lam in LAMBDAS:
        got = [d.selected_model for d in router.route_batch(
            embeddings=vectors, available_models=subset, cost_weight_override=lam)]
        assert got == [subset[j] for j in harness[lam]]


def test_ties_go_to_the_cheaper_model_in_both() -> None:
    """Two models with identical labels but different prices tie on error at λ = 0."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = (rng.random(30) > 0.4).astype(float)
    scores = np.column_stack([q, q, np.zeros(30)])
    costs = np.column_stack([np.full(30, 2.0), np.full(30, 1.0), np.full(30, 0.1)])
    policy = ClusterPolicy(n_clusters=3, n_coarse=1, assignment="hard").fit(
        Inputs(embeddings=x), scores, costs, ["dear", "cheap", "bad"])
    est = policy.estimate(Inputs(embeddings=x))
    np.testing.assert_array_equal(est.error[:, 0], est.error[:, 1])
    choices = route_choices(policy, Inputs(embeddings=x), ["dear", "cheap", "bad"],
                            np.ones(3, dtype=bool), [0.0])[0.0]
    assert set(choices.tolist()) == {1}
    # The same numbers through the router's one-row rule.
    for i in range(5):
        assert decide(est.error[i], est.cost[i], np.ones(3, dtype=bool), 0.0, 2.0)[0] == 1


def test_pessimism_is_applied_identically(
    small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    """A package with a model added from a handful of labels (so the standard errors differ
    between models), with and without a pessimism charge: the router and the harness agree
    either way, and the charge does move choices away from the thinly evidenced model."""
    vectors = _vectors(small_records, fake_embedder)
    keep = [m for m in small_records.models if m != ADDED]
    j = small_records.models.index(ADDED)
    cols = [small_records.models.index(m) for m in keep]
    rows = np.arange(0, 120, 6)
    added_share = {}
    for pessimism in (0.0, 2.0):
        policy = ClusterPolicy(n_clusters=6, pessimism=pessimism)
        policy.fit(Inputs(embeddings=vectors[:120]), small_records.scores[:, cols],
                   small_records.costs[:, cols], keep)
        policy.add_model(ADDED, Inputs(embeddings=vectors[rows]),
                         small_records.scores[rows, j], small_records.costs[rows, j])
        router = Router(WeightsPackage(policy=policy, embedder_id=fake_embedder.id,
                                       dimension=fake_embedder.dimension),
                        embedder=fake_embedder, cache_size=0)
        models = router.models
        harness = route_choices(policy, Inputs(embeddings=vectors), models,
                                np.ones(len(models), dtype=bool), LAMBDAS)
        batch = router.route_batch(embeddings=vectors, cost_weights=LAMBDAS)
        n = len(vectors)
        for k, lam in enumerate(LAMBDAS):
            assert [d.selected_model for d in batch[k * n:(k + 1) * n]] == [
                models[i] for i in harness[lam]]
        added_share[pessimism] = np.mean([d.selected_model == ADDED for d in batch])
    assert added_share[2.0] < added_share[0.0]
