"""The cluster policy on synthetic, well-separated data where every number can be worked out."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError, NotFittedError
from switchpoint.policies import ClusterPolicy, Inputs, PolicyState, make_policy

DIM = 8
PER_GROUP = 10
S = 6.0  # prior strength used throughout


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _centres() -> np.ndarray:
    """Four group centres: 0 and 1 are siblings, 2 and 3 are siblings, the pairs orthogonal."""
    e = np.eye(DIM)
    return np.vstack([_unit(e[0] + 0.5 * e[2]), _unit(e[0] - 0.5 * e[2]),
                      _unit(e[1] + 0.5 * e[3]), _unit(e[1] - 0.5 * e[3])])


def _points(group: int, n: int = PER_GROUP, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 100 * group)
    pts = _centres()[group] + 0.02 * rng.standard_normal((n, DIM))
    return (pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)


def _embeddings() -> np.ndarray:
    return np.vstack([_points(g) for g in range(4)])


# Model "good" is right on groups 0 and 1, "bad" only on group 2; their costs differ.
def _labels() -> tuple[np.ndarray, np.ndarray]:
    n = 4 * PER_GROUP
    scores = np.zeros((n, 2))
    scores[: 2 * PER_GROUP, 0] = 1.0
    scores[2 * PER_GROUP : 3 * PER_GROUP, 1] = 1.0
    costs = np.column_stack([np.full(n, 0.01), np.full(n, 0.001)])
    return scores, costs


def _fit(**params: object) -> ClusterPolicy:
    params.setdefault("assignment", "hard")  # the hand-computed cases below assume hard
    policy = ClusterPolicy(n_clusters=4, n_coarse=2, prior_strength=S, **params)  # type: ignore[arg-type]
    scores, costs = _labels()
    return policy.fit(Inputs(embeddings=_embeddings()), scores, costs, ["good", "bad"])


def _cluster_of(policy: ClusterPolicy, group: int) -> int:
    ids, _ = policy.assign(_centres()[group : group + 1].astype(np.float32))
    return int(ids[0])


@pytest.fixture
def policy() -> ClusterPolicy:
    return _fit()


def test_structure_groups_become_clusters_and_siblings_share_a_parent(
    policy: ClusterPolicy,
) -> None:
    ids = [_cluster_of(policy, g) for g in range(4)]
    assert sorted(ids) == [0, 1, 2, 3]
    for g in range(4):
        got, _ = policy.assign(_points(g, seed=7))
        assert set(got.tolist()) == {ids[g]}
    parent = policy.parent_
    assert parent[ids[0]] == parent[ids[1]]
    assert parent[ids[2]] == parent[ids[3]]
    assert parent[ids[0]] != parent[ids[2]]
    assert policy.n_units == 4
    assert policy.table_.count[:, 0].tolist() == [PER_GROUP] * 4


def test_estimate_shapes_and_values(policy: ClusterPolicy) -> None:
    x = np.vstack([_points(g, n=3, seed=1) for g in range(4)])
    est = policy.estimate(Inputs(embeddings=x))
    assert est.models == ["good", "bad"]
    assert est.error.shape == est.cost.shape == est.support.shape == (12, 2)
    assert est.unit_ids.shape == (12,)
    assert est.unit_kind == "cluster"
    assert est.unit_probabilities is None
    assert np.all((est.error >= 0) & (est.error <= 1))
    np.testing.assert_allclose(est.cost[:, 0], 0.01)
    np.testing.assert_allclose(est.cost[:, 1], 0.001)
    np.testing.assert_array_equal(est.support, PER_GROUP)
    # "good" is better where it was right (groups 0, 1), worse on group 2.
    g0, g2 = est.error[0], est.error[6]
    assert g0[0] < g0[1]
    assert g2[0] > g2[1]


def test_labelled_cluster_shrinks_toward_coarse_then_global(policy: ClusterPolicy) -> None:
    """Hand-computed shrinkage for model 'bad' (error 0 on group 2 only, else 1)."""
    c2, c3 = _cluster_of(policy, 2), _cluster_of(policy, 3)
    g = 30 / 40  # bad's global mean error
    coarse = (20 * 0.5 + S * g) / (20 + S)  # clusters 2 and 3 share a parent, mean error 0.5
    assert policy.error_[c2, 1] == pytest.approx((PER_GROUP * 0.0 + S * coarse) / (PER_GROUP + S))
    assert policy.error_[c3, 1] == pytest.approx((PER_GROUP * 1.0 + S * coarse) / (PER_GROUP + S))
    assert policy.global_cost() == pytest.approx({"good": 0.01, "bad": 0.001})


def _add_new(policy: ClusterPolicy, prior: str = "coarse") -> ClusterPolicy:
    """'new' is labelled only on groups 0 (always right) and 2 (always wrong).

    These hand-computed cases use the coarse-cluster prior for the added model; the
    similarity prior (the default) has its own test below."""
    policy.new_model_prior = prior  # type: ignore[assignment]
    x = np.vstack([_points(0, seed=3), _points(2, seed=3)])
    scores = np.concatenate([np.ones(PER_GROUP), np.zeros(PER_GROUP)])
    costs = np.full(2 * PER_GROUP, 0.003)
    return policy.add_model("new", Inputs(embeddings=x), scores, costs)


def test_cluster_without_labels_gets_exactly_its_coarse_prior(policy: ClusterPolicy) -> None:
    _add_new(policy)
    ids = [_cluster_of(policy, g) for g in range(4)]
    j = policy.models_.index("new")
    assert policy.table_.count[ids[1], j] == 0 and policy.table_.count[ids[3], j] == 0
    g = 0.5  # new's global mean error
    prior_a = (PER_GROUP * 0.0 + S * g) / (PER_GROUP + S)  # 3/16: parent of groups 0, 1
    prior_b = (PER_GROUP * 1.0 + S * g) / (PER_GROUP + S)  # 13/16: parent of groups 2, 3
    est = policy.estimate(Inputs(embeddings=_centres().astype(np.float32)))
    by_group = {grp: est.error[grp, j] for grp in range(4)}
    # Zero labels: exactly the coarse prior, with support 0.
    assert by_group[1] == pytest.approx(prior_a) == pytest.approx(3 / 16)
    assert by_group[3] == pytest.approx(prior_b) == pytest.approx(13 / 16)
    assert est.support[1, j] == 0 and est.support[3, j] == 0
    # Labelled clusters: their own mean shrunk toward that prior.
    assert by_group[0] == pytest.approx((PER_GROUP * 0.0 + S * prior_a) / (PER_GROUP + S))
    assert by_group[2] == pytest.approx((PER_GROUP * 1.0 + S * prior_b) / (PER_GROUP + S))
    assert est.support[0, j] == PER_GROUP and est.support[2, j] == PER_GROUP
    np.testing.assert_allclose(est.cost[:, j], 0.003)  # every cost estimate is the only cost


def test_repeated_prompts_make_no_more_clusters_than_distinct_embeddings() -> None:
    """Records that repeat a few prompts (one asked 10,000 times, say) make one cluster per
    distinct embedding: more clusters than that were copies of one centroid, all but one empty,
    and a soft assignment spread each prompt evenly over the copies (0.025 each of 40), its
    estimate mostly the prior of clusters that held nothing."""
    groups = _centres()[:3].astype(np.float32)
    x = np.repeat(groups, 30, axis=0)
    x[30:60] *= 2.0  # (the same direction at another length is the same prompt)
    n = len(x)
    scores = np.zeros((n, 2))
    scores[:30, 0] = 1.0
    costs = np.column_stack([np.full(n, 0.01), np.full(n, 0.001)])
    policy = ClusterPolicy(n_clusters=40, n_coarse=6, assignment="soft")
    policy.fit(Inputs(embeddings=x), scores, costs, ["good", "bad"])
    assert policy.n_units == 3
    assert sorted(policy.table_.count[:, 0].tolist()) == [30, 30, 30]
    est = policy.estimate(Inputs(embeddings=groups))
    assert est.unit_probabilities is not None
    assert np.all(est.unit_probabilities.max(axis=1) > 0.99)
    assert est.error[0, 0] < 0.1 and est.error[1, 0] > 0.9  # each its own prompt's labels


def test_prompts_the_default_embedder_reads_alike_count_once(minilm: Any) -> None:
    """As docs/how-it-decides.md says: prompts that differ only in letter case or spacing, or
    that end in the same 64 word pieces the default embedder reads, are one embedding, so one
    cluster."""
    tail = " ".join(["the rest of this question says nothing new"] * 12)  # (past 64 pieces)
    spellings = [["What is 2 + 2?", "what is 2 + 2?", "WHAT  is 2 +  2?"],
                 ["Write a haiku about rain.", "write a HAIKU about rain.",
                  "Write a haiku  about rain."],
                 [f"Summarise this: {tail}", f"Translate this: {tail}",
                  f"Proofread this: {tail}"]]
    texts = [text for group in spellings for text in group]
    x = minilm.embed(texts)
    assert len({row.tobytes() for row in x}) == 3
    scores = np.zeros((len(texts), 2))
    scores[:3, 0] = 1.0
    costs = np.column_stack([np.full(len(texts), 0.01), np.full(len(texts), 0.001)])
    policy = ClusterPolicy(n_clusters=9, n_coarse=2, assignment="hard")
    policy.fit(Inputs(embeddings=x), scores, costs, ["good", "bad"])
    assert policy.n_units == 3
    assert sorted(policy.table_.count[:, 0].tolist()) == [3, 3, 3]


def test_single_coarse_cluster_falls_back_to_global_mean() -> None:
    policy = ClusterPolicy(n_clusters=4, n_coarse=1, prior_strength=S, assignment="hard")
    scores, costs = _labels()
    policy.fit(Inputs(embeddings=_embeddings()), scores, costs, ["good", "bad"])
    _add_new(policy)
    j = policy.models_.index("new")
    est = policy.estimate(Inputs(embeddings=_centres().astype(np.float32)))
    assert est.error[1, j] == pytest.approx(0.5)  # the global mean, nothing else
    assert est.error[3, j] == pytest.approx(0.5)
    assert est.support[1, j] == 0


def test_zero_prior_strength_uses_raw_means() -> None:
    raw = ClusterPolicy(n_clusters=4, n_coarse=2, prior_strength=0.0, assignment="hard").fit(
        Inputs(embeddings=_embeddings()), *_labels(), ["good", "bad"])
    est = raw.estimate(Inputs(embeddings=_centres().astype(np.float32)))
    np.testing.assert_allclose(est.error[:, 0], [0, 0, 1, 1])
    np.testing.assert_allclose(est.error[:, 1], [1, 1, 0, 1])


def test_zero_prior_strength_with_an_unlabelled_cluster_stays_finite() -> None:
    """With no prior strength a cluster without labels takes its coarse parent's mean; it must
    not turn into 0/0 = NaN (which, through the assignment matrix, poisoned every row)."""
    policy = ClusterPolicy(n_clusters=4, n_coarse=2, prior_strength=0.0, assignment="hard").fit(
        Inputs(embeddings=_embeddings()), *_labels(), ["good", "bad"])
    _add_new(policy)
    est = policy.estimate(Inputs(embeddings=_centres().astype(np.float32)))
    assert np.all(np.isfinite(est.error)) and np.all(np.isfinite(est.cost))
    np.testing.assert_allclose(est.error[:, 2], [0, 0, 1, 1])  # groups 1, 3 from their parent
    np.testing.assert_allclose(est.cost[:, 2], 0.003)
    np.testing.assert_array_equal(est.support[:, 2], [PER_GROUP, 0, PER_GROUP, 0])


def test_add_model_keeps_centroids_and_other_models(policy: ClusterPolicy) -> None:
    x = _centres().astype(np.float32)
    before = policy.estimate(Inputs(embeddings=x))
    centroids = policy.centroids_.copy()
    coarse = policy.coarse_centroids_.copy()
    parent = policy.parent_.copy()
    _add_new(policy)
    assert policy.models_ == ["good", "bad", "new"]
    np.testing.assert_array_equal(policy.centroids_, centroids)
    np.testing.assert_array_equal(policy.coarse_centroids_, coarse)
    np.testing.assert_array_equal(policy.parent_, parent)
    after = policy.estimate(Inputs(embeddings=x))
    assert after.error.shape == (4, 3)
    np.testing.assert_allclose(after.error[:, :2], before.error)
    np.testing.assert_allclose(after.cost[:, :2], before.cost)
    assert policy.global_cost()["new"] == pytest.approx(0.003)

    policy.remove_model("new")
    assert policy.models_ == ["good", "bad"]
    removed = policy.estimate(Inputs(embeddings=x))
    np.testing.assert_allclose(removed.error, before.error)
    np.testing.assert_array_equal(policy.centroids_, centroids)
    policy.remove_model("good")
    assert policy.estimate(Inputs(embeddings=x)).error.shape == (4, 1)
    np.testing.assert_allclose(policy.estimate(Inputs(embeddings=x)).error[:, 0],
                               before.error[:, 1])


def test_soft_assignment_is_a_probability_mix_of_cluster_estimates(
    policy: ClusterPolicy,
) -> None:
    centroids = policy.centroids_.astype(np.float32)
    hard_per_cluster = policy.estimate(Inputs(embeddings=centroids))
    assert hard_per_cluster.unit_ids.tolist() == [0, 1, 2, 3]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    policy.assignment = "soft"
    policy.temperature = 0.5  # soft enough that several clusters carry weight
    est = policy.estimate(Inputs(embeddings=x))
    p = est.unit_probabilities
    assert p is not None and p.shape == (6, 4)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.all(p.max(axis=1) < 0.999)  # really mixed
    np.testing.assert_array_equal(est.unit_ids, p.argmax(axis=1))
    np.testing.assert_allclose(est.error, p @ hard_per_cluster.error)
    np.testing.assert_allclose(est.cost, p @ hard_per_cluster.cost)
    np.testing.assert_allclose(est.support, p @ hard_per_cluster.support)
    # Softmax over cosine similarity / temperature, worked out independently.
    sims = x.astype(np.float64) @ centroids.T.astype(np.float64)
    expected = np.exp(sims / 0.5) / np.exp(sims / 0.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-5)


def test_state_round_trip_gives_identical_estimates(policy: ClusterPolicy) -> None:
    _add_new(policy)
    state = policy.get_state()
    assert state.name == "cluster"
    assert set(state.arrays) == {"centroids", "coarse_centroids", "parent"}
    # Through JSON, as the weights package stores it.
    profiles = json.loads(json.dumps(state.profiles))
    clone = ClusterPolicy.from_state(PolicyState(state.name, dict(state.params),
                                                 dict(state.arrays), profiles))
    assert clone.models_ == policy.models_
    assert clone.get_params() == policy.get_params()
    x = np.vstack([_points(g, n=2, seed=9) for g in range(4)])
    a, b = policy.estimate(Inputs(embeddings=x)), clone.estimate(Inputs(embeddings=x))
    np.testing.assert_allclose(b.error, a.error, atol=1e-7)
    np.testing.assert_allclose(b.cost, a.cost, rtol=1e-12)
    np.testing.assert_array_equal(b.support, a.support)
    np.testing.assert_array_equal(b.unit_ids, a.unit_ids)


def test_from_state_rejects_mismatched_cluster_count(policy: ClusterPolicy) -> None:
    state = policy.get_state()
    arrays = dict(state.arrays)
    arrays["centroids"] = arrays["centroids"][:3]
    with pytest.raises(ValueError, match="clusters"):
        ClusterPolicy.from_state(PolicyState(state.name, state.params, arrays, state.profiles))


def test_unfitted_and_bad_inputs() -> None:
    with pytest.raises(NotFittedError):
        ClusterPolicy().estimate(Inputs(embeddings=np.ones((1, DIM), np.float32)))
    fitted = _fit()
    with pytest.raises(InvalidInputError, match="embedding"):
        fitted.estimate(Inputs(texts=["no vectors"]))
    with pytest.raises(InvalidInputError):
        fitted.fit(Inputs(embeddings=_embeddings()), np.zeros((3, 2)), np.zeros((3, 2)),
                   ["a", "b"])
    with pytest.raises(InvalidInputError, match="unique"):
        ClusterPolicy(n_clusters=2).fit(Inputs(embeddings=_embeddings()), *_labels(), ["a", "a"])


@pytest.mark.parametrize(
    "params",
    [{"n_clusters": 0}, {"n_coarse": 0}, {"prior_strength": -1}, {"assignment": "fuzzy"},
     {"temperature": 0}],
)
def test_bad_parameters(params: dict[str, object]) -> None:
    policy = ClusterPolicy(**params)  # type: ignore[arg-type]  # stored, not checked, as in sklearn
    with pytest.raises(InvalidInputError) as info:
        policy.fit(Inputs(embeddings=_embeddings()), *_labels(), ["good", "bad"])
    assert info.value.field == next(iter(params))
    with pytest.raises(InvalidInputError):
        ClusterPolicy().set_params(**params)
    with pytest.raises(InvalidInputError):
        make_policy("cluster", **params)


def test_added_prior_strength_is_validated_and_persisted() -> None:
    with pytest.raises(InvalidInputError, match="added_prior_strength"):
        ClusterPolicy().set_params(added_prior_strength=-1)
    scores, costs = _labels()
    policy = ClusterPolicy(n_clusters=4, n_coarse=2, added_prior_strength=5.0)
    policy.fit(Inputs(embeddings=_embeddings()), scores, costs, ["good", "bad"])
    assert ClusterPolicy.from_state(policy.get_state()).added_prior_strength == 5.0


def test_make_policy_by_name() -> None:
    p = make_policy("cluster", n_clusters=3)
    assert isinstance(p, ClusterPolicy) and p.n_clusters == 3
    with pytest.raises(InvalidInputError, match="unknown policy"):
        make_policy("nope")
    with pytest.raises(InvalidInputError, match=r'no parameter\(s\) "colour"; its parameters'):
        make_policy("cluster", colour="red")


def test_added_model_inherits_the_shape_of_a_model_it_resembles() -> None:
    """A new model labelled on two clusters only, where it behaves like "good": on the clusters
    it was never labelled on, its prior follows "good"'s errors rather than one flat mean."""
    scores, costs = _labels()
    policy = ClusterPolicy(n_clusters=4, n_coarse=2, prior_strength=S, similarity_ridge=0.1)
    policy.fit(Inputs(embeddings=_embeddings()), scores, costs, ["good", "bad"])
    good = policy.models_.index("good")
    # Label the twin on groups 0 and 2 only, copying "good"'s outcomes there.
    emb = np.vstack([_points(0, seed=7), _points(2, seed=7)])
    twin = np.concatenate([scores[:PER_GROUP, good], scores[2 * PER_GROUP : 3 * PER_GROUP, good]])
    policy.add_model("twin", Inputs(embeddings=emb), twin, np.full(len(twin), 0.5))
    j = policy.models_.index("twin")
    prior = policy.model_priors_["twin"]
    unseen = [int(c) for c in np.flatnonzero(policy.table_.count[:, j] == 0)]
    assert unseen, "the twin must have clusters without labels"
    c: int | np.integer[Any]
    for c in unseen:
        # its estimate there moves from the twin's flat global mean (0.5) toward good's
        flat_gap = abs(0.5 - policy.error_[c, good])
        assert abs(policy.error_[c, j] - policy.error_[c, good]) < 0.75 * flat_gap
        assert policy.error_[c, j] == pytest.approx(prior[c])
    # where it was labelled: its own mean shrunk toward that prior, with the added-model strength
    a = policy.added_prior_strength
    for c in np.flatnonzero(policy.table_.count[:, j] > 0):
        n, mean = policy.table_.count[c, j], policy.table_.error[c, j]
        assert policy.error_[c, j] == pytest.approx((n * mean + a * prior[c]) / (n + a))
    # persisted with the weights
    again = ClusterPolicy.from_state(policy.get_state())
    assert np.allclose(again.model_priors_["twin"], prior)
    assert np.allclose(again.error_, policy.error_, atol=1e-6)
    policy.remove_model("twin")
    assert "twin" not in policy.model_priors_
