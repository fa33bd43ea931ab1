"""The kNN policy on synthetic data: neighbour means, shrinkage, partial labels, persistence."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError, NotFittedError
from switchpoint.policies import Inputs, KnnPolicy, PolicyState

DIM = 6


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _examples() -> np.ndarray:
    """Two tight groups around e0 and e1 (5 examples each)."""
    rng = np.random.default_rng(0)
    e = np.eye(DIM)
    a = e[0] + 0.05 * rng.standard_normal((5, DIM))
    b = e[1] + 0.05 * rng.standard_normal((5, DIM))
    return _unit_rows(np.vstack([a, b]))


def _labels() -> tuple[np.ndarray, np.ndarray]:
    # "a" is right on group A only, "b" on group B only; b is cheaper.
    scores = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    costs = np.array([[0.02, 0.001]] * 10)
    return scores, costs


def _fit(**params: float) -> KnnPolicy:
    return KnnPolicy(**params).fit(Inputs(embeddings=_examples()), *_labels(), ["a", "b"])  # type: ignore[arg-type]


def test_fit_and_estimate_shapes() -> None:
    policy = _fit(k=3)
    x = _examples()[[0, 7]]
    est = policy.estimate(Inputs(embeddings=x))
    assert est.models == ["a", "b"]
    assert est.error.shape == est.cost.shape == est.support.shape == (2, 2)
    assert est.unit_kind == "example"
    assert est.unit_ids.tolist() == [0, 7]  # each example's nearest is itself
    assert est.unit_probabilities is None
    assert policy.n_units == 10
    # Near group A, model a is better; near group B, model b is.
    assert est.error[0, 0] < est.error[0, 1]
    assert est.error[1, 1] < est.error[1, 0]
    np.testing.assert_allclose(est.cost[:, 1], 0.001)
    assert policy.global_cost() == pytest.approx({"a": 0.02, "b": 0.001})


def test_one_neighbour_without_prior_is_that_example() -> None:
    policy = _fit(k=1, prior_strength=0.0)
    est = policy.estimate(Inputs(embeddings=_examples()))
    scores, _ = _labels()
    np.testing.assert_allclose(est.error, 1.0 - scores)
    np.testing.assert_allclose(est.support, 1.0, atol=1e-5)  # a perfect match weighs 1


def test_shrinkage_toward_global_mean_by_hand() -> None:
    policy = _fit(k=1, prior_strength=2.0)
    est = policy.estimate(Inputs(embeddings=_examples()[:1]))
    # One neighbour at similarity 1 (weight 1) with error 0 for a, 1 for b; global means 0.5.
    assert est.error[0, 0] == pytest.approx((1 * 0.0 + 2 * 0.5) / 3, rel=1e-5)
    assert est.error[0, 1] == pytest.approx((1 * 1.0 + 2 * 0.5) / 3, rel=1e-5)


def test_extreme_parameters_give_the_limits_they_tend_to() -> None:
    # A prior of 1e308 pseudo-examples made every estimate 0 (the float32 sum of the weights
    # took it for infinity); neighbours too unlike to weigh anything at a high sharpness,
    # without a prior, made every estimate NaN (0/0); both are the global means.
    x = Inputs(embeddings=_examples()[:2])
    prior = _fit(prior_strength=1e308).estimate(x)
    np.testing.assert_allclose(prior.error, 0.5)
    np.testing.assert_allclose(prior.cost, [[0.02, 0.001]] * 2)
    far = Inputs(embeddings=_unit_rows(np.eye(DIM)[5:]))  # (unlike every example)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sharpness in (1000.0, 1e300):
            sharp = _fit(k=10, prior_strength=0.0, sharpness=sharpness).estimate(far)
            np.testing.assert_allclose(sharp.error, 0.5)
            np.testing.assert_allclose(sharp.cost, [[0.02, 0.001]])
            assert np.isfinite(sharp.stderr).all()  # type: ignore[arg-type]


def test_similarity_weighting_by_hand() -> None:
    policy = _fit(k=10, prior_strength=0.0, sharpness=10.0)
    q = _unit_rows(np.array([[1.0, 0.3, 0, 0, 0, 0]]))
    est = policy.estimate(Inputs(embeddings=q))
    sims = (q @ _examples().T)[0].astype(np.float64)
    w = np.exp(10.0 * (sims - 1.0))
    errors_a = 1.0 - _labels()[0][:, 0]
    assert est.error[0, 0] == pytest.approx(float((w * errors_a).sum() / w.sum()), rel=1e-5)
    assert est.support[0, 0] == pytest.approx(float(w.sum()), rel=1e-5)


def _add_partial(policy: KnnPolicy) -> tuple[np.ndarray, np.ndarray]:
    """'new' is labelled on 3 fresh examples near e2 (wrong) and 3 near e3 (right)."""
    rng = np.random.default_rng(1)
    e = np.eye(DIM)
    x = _unit_rows(np.vstack([e[2] + 0.05 * rng.standard_normal((3, DIM)),
                              e[3] + 0.05 * rng.standard_normal((3, DIM))]))
    scores = np.array([0.0] * 3 + [1.0] * 3)
    policy.add_model("new", Inputs(embeddings=x), scores, np.full(6, 0.005))
    return x, scores


def test_model_labelled_on_subset_uses_only_those_neighbours() -> None:
    policy = _fit(k=3, prior_strength=0.0)
    x, _ = _add_partial(policy)
    assert policy.n_units == 16
    e = np.eye(DIM)
    queries = _unit_rows(np.vstack([e[2], e[3], e[0]]))
    est = policy.estimate(Inputs(embeddings=queries))
    j = est.models.index("new")
    # Near e2 its 3 neighbours (among its own labels) are all wrong; near e3 all right.
    assert est.error[0, j] == pytest.approx(1.0)
    assert est.error[1, j] == pytest.approx(0.0)
    # Near e0 none of its labels is close, but the estimate still comes only from them.
    assert 0.0 <= est.error[2, j] <= 1.0
    assert est.support[2, j] < 0.01  # weak evidence: far neighbours weigh little
    np.testing.assert_allclose(est.cost[:, j], 0.005)
    # The other models ignore the new, unlabelled-for-them examples.
    assert np.all(np.isfinite(est.error)) and np.all(np.isfinite(est.cost))
    sims = (queries[2:3] @ x.T)[0].astype(np.float64)
    top = np.argsort(-sims)[:3]
    w = np.exp(10.0 * (sims[top] - 1.0))
    err_new = 1.0 - np.array([0.0] * 3 + [1.0] * 3)
    assert est.error[2, j] == pytest.approx(float((w * err_new[top]).sum() / w.sum()), rel=1e-5)


def test_add_model_leaves_other_models_unchanged_and_remove_restores() -> None:
    policy = _fit(k=3)
    q = _unit_rows(np.random.default_rng(3).standard_normal((5, DIM)))
    before = policy.estimate(Inputs(embeddings=q))
    _add_partial(policy)
    after = policy.estimate(Inputs(embeddings=q))
    assert after.models == ["a", "b", "new"]
    np.testing.assert_allclose(after.error[:, :2], before.error, rtol=1e-6)
    np.testing.assert_allclose(after.cost[:, :2], before.cost, rtol=1e-6)
    np.testing.assert_allclose(after.support[:, :2], before.support, rtol=1e-6)
    policy.remove_model("new")
    assert policy.models_ == ["a", "b"]
    assert policy.n_units == 10  # examples only "new" labelled are dropped
    restored = policy.estimate(Inputs(embeddings=q))
    np.testing.assert_allclose(restored.error, before.error, rtol=1e-6)


def test_model_labelled_on_one_example_uses_only_it() -> None:
    policy = _fit(k=3, prior_strength=0.0)
    policy.error_[:, 1] = np.nan
    policy.cost_[:, 1] = np.nan
    policy.error_[0, 1], policy.cost_[0, 1] = 0.25, 0.004  # a group-A example
    est = policy.estimate(Inputs(embeddings=_examples()[5:8]))  # group-B queries
    np.testing.assert_allclose(est.error[:, 1], 0.25)
    np.testing.assert_allclose(est.cost[:, 1], 0.004)
    assert np.all(est.support[:, 1] < 0.01)  # one distant example: almost no evidence


def test_state_round_trip_gives_identical_estimates() -> None:
    policy = _fit(k=4, prior_strength=1.5, sharpness=8.0)
    _add_partial(policy)
    state = policy.get_state()
    assert state.name == "knn"
    assert set(state.arrays) == {"examples"}
    profiles = json.loads(json.dumps(state.profiles))
    clone = KnnPolicy.from_state(PolicyState(state.name, dict(state.params), dict(state.arrays),
                                             profiles))
    assert clone.get_params() == {"k": 4, "prior_strength": 1.5, "sharpness": 8.0,
                                  "pessimism": 0.0}
    assert clone.models_ == ["a", "b", "new"]
    q = _unit_rows(np.random.default_rng(4).standard_normal((7, DIM)))
    a, b = policy.estimate(Inputs(embeddings=q)), clone.estimate(Inputs(embeddings=q))
    np.testing.assert_allclose(b.error, a.error, atol=1e-6)
    np.testing.assert_allclose(b.cost, a.cost, rtol=1e-12)
    np.testing.assert_allclose(b.support, a.support, rtol=1e-6)
    np.testing.assert_array_equal(b.unit_ids, a.unit_ids)


def test_from_state_rejects_profile_of_wrong_length() -> None:
    state = _fit().get_state()
    profiles = dict(state.profiles)
    profiles["a"] = {"error": profiles["a"]["error"][:-1], "cost": profiles["a"]["cost"][:-1]}
    with pytest.raises(ValueError, match="examples"):
        KnnPolicy.from_state(PolicyState(state.name, state.params, state.arrays, profiles))


def test_best_model_for_example_follows_the_rule() -> None:
    policy = _fit(k=3)
    assert policy.models_[int(np.argmin(policy.unit_estimate(0).error[0]))] == "a"
    assert policy.models_[int(np.argmin(policy.unit_estimate(7).error[0]))] == "b"
    unit = policy.unit_estimate(0)
    assert policy.models_[int(np.argmin(unit.cost[0]))] == "b"  # cheapest


def test_unfitted_and_bad_parameters() -> None:
    with pytest.raises(NotFittedError):
        KnnPolicy().estimate(Inputs(embeddings=_examples()))
    with pytest.raises(InvalidInputError, match="embedding"):
        _fit().estimate(Inputs(texts=["text only"]))
    for params in ({"k": 0}, {"prior_strength": -0.5}, {"sharpness": -1}):
        with pytest.raises(InvalidInputError):
            KnnPolicy(**params).fit(
                Inputs(embeddings=_examples()), *_labels(), ["a", "b"])
