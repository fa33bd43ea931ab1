"""What a policy takes from a Python caller, as a scikit-learn estimator does: labels in range
with their costs, embeddings as rows of finite numbers as wide as it was fitted on, arrays or
lists alike; what it refuses is named, and refusing changes nothing it learned."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from switchpoint.errors import InvalidInputError, UnknownModelError
from switchpoint.policies import POLICIES, FixedPolicy, Inputs, Policy, make_policy

MODELS = ["a", "b"]
N = 24


def _vectors(n: int, width: int = 16, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _inputs(n: int = N) -> Inputs:
    texts = [f"write python code to sort list number {i % 5}" if i % 2 else
             f"what is the capital of country number {i % 5}" for i in range(n)]
    return Inputs(texts=texts, embeddings=_vectors(n))


def _labels() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(1)
    return rng.uniform(size=(N, 2)), rng.uniform(0.001, 0.01, size=(N, 2))


def _fitted(name: str) -> Policy:
    scores, costs = _labels()
    return make_policy(name).fit(_inputs(), scores, costs, MODELS)


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize(("field", "table", "value", "said"), [
    ("scores", 0, 7.0, "holds 7 (row 3, column 1), outside [0, 1]"),
    ("scores", 0, np.inf, "holds inf (row 3, column 1), outside [0, 1]"),
    ("costs", 1, -1.0, "holds -1 (row 3, column 1), outside [0, 1000]"),
    ("costs", 1, np.inf, "holds inf (row 3, column 1), outside [0, 1000]"),
    ("costs", 1, np.nan, "is NaN at row 3, column 1, where scores labels the model"),
], ids=["a score of 7", "an infinite score", "a negative cost", "an infinite cost",
        "a score without its cost"])
def test_labels_out_of_range_are_refused_naming_the_cell_and_the_fitted_state_stays(
        name: str, field: str, table: int, value: float, said: str) -> None:
    # They were fitted: a score of inf made an expected error of -inf, which every route
    # chose; a cost left NaN beside its score was learned as free (or NaN, by knn).
    policy = _fitted(name)
    before = policy.get_state().profiles
    labels = [np.array(t) for t in _labels()]
    labels[table][3, 1] = value
    with pytest.raises(InvalidInputError) as info:
        policy.fit(_inputs(), labels[0], labels[1], ["c", "d"])
    assert info.value.field == field and said in info.value.reason, info.value
    assert policy.models_ == MODELS
    assert policy.get_state().profiles == before


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_cost_without_its_score_is_no_label_and_is_not_read(name: str) -> None:
    # The baselines' and knn's mean costs read it: a model's cost was then a mean over other
    # answers than its error, some never judged.
    scores, costs = _labels()
    scores[1:, 1] = np.nan  # (each model needs one label)
    unread = costs.copy()
    unread[1:, 1] = np.nan
    learned = make_policy(name).fit(_inputs(), scores, unread, MODELS)
    policy = make_policy(name).fit(_inputs(), scores, np.where(np.isnan(scores), 900.0, costs),
                                   MODELS)
    assert policy.global_cost() == learned.global_cost()
    np.testing.assert_array_equal(policy.estimate(_inputs(4)).cost,
                                  learned.estimate(_inputs(4)).cost)
    added = make_policy(name).fit(_inputs(), scores[:, :1], costs[:, :1], MODELS[:1])
    added.add_model("b", _inputs(), scores[:, 1], np.where(np.isnan(scores[:, 1]), 900.0,
                                                           costs[:, 1]))
    assert added.global_cost()["b"] == learned.global_cost()["b"]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_lists_and_float64_are_taken_as_arrays_are(name: str) -> None:
    # Lists were an AttributeError ('list' object has no attribute 'shape').
    scores, costs = _labels()
    inputs = _inputs()
    assert inputs.embeddings is not None
    as_arrays = make_policy(name).fit(inputs, scores, costs, MODELS).estimate(_inputs(4))
    as_lists = make_policy(name).fit(
        Inputs(texts=inputs.texts, embeddings=inputs.embeddings.astype(np.float64).tolist()),
        scores.tolist(), costs.tolist(), MODELS).estimate(_inputs(4))
    np.testing.assert_allclose(as_lists.error, as_arrays.error, rtol=1e-6)
    np.testing.assert_allclose(as_lists.cost, as_arrays.cost, rtol=1e-6)


def test_labels_that_are_no_numbers_are_refused_naming_the_table() -> None:
    scores, costs = _labels()
    with pytest.raises(InvalidInputError, match=r"^scores: must hold numbers"):
        make_policy("knn").fit(_inputs(), scores.astype(str), costs, MODELS)
    with pytest.raises(InvalidInputError, match=r"^costs: has shape \(24, 1\); it must be "
                                                r"\(24, 2\): one row per example"):
        make_policy("knn").fit(_inputs(), scores, costs[:, :1], MODELS)


@pytest.mark.parametrize(("embeddings", "texts", "said"), [
    (np.array([[0.6, np.nan], [0.6, 0.8]]), None,
     "row 0 holds a value that is not finite (NaN or infinity)"),
    (np.array([0.6, 0.8]), None, "got shape (2,) (one vector is one row: vector[None, :])"),
    (np.array([["0.6", "0.8"]]), None, "got an array of <U3"),
    (np.array([[0.6, 0.8]]), ["one", "two"], "has 1 rows for 2 texts; give one row per text"),
], ids=["a NaN", "one flat vector", "text", "fewer rows than texts"])
def test_embeddings_that_are_no_rows_of_finite_numbers_are_refused(
        embeddings: npt.NDArray[np.float64], texts: list[str] | None, said: str) -> None:
    # A NaN row was routed on NaN errors (or fitted: "Probabilities contain NaN"), a flat
    # vector an AxisError, and rows not matching the texts were taken.
    with pytest.raises(InvalidInputError) as info:
        Inputs(texts=texts, embeddings=embeddings)
    assert info.value.field == "embeddings" and said in info.value.reason, info.value


def test_embeddings_are_kept_as_float32_rows() -> None:
    inputs = Inputs(embeddings=[[0.6, 0.8]])
    assert inputs.embeddings is not None and inputs.embeddings.dtype == np.float32
    assert len(inputs) == 1


@pytest.mark.parametrize("name", ["cluster", "knn"])
def test_vectors_of_another_width_than_fitted_are_refused_naming_both(name: str) -> None:
    # They were NumPy's matmul error about a core dimension.
    policy = _fitted(name)
    with pytest.raises(InvalidInputError) as info:
        policy.estimate(Inputs(embeddings=_vectors(2, width=10)))
    assert info.value.field == "embedding"
    assert info.value.reason == f"has 10 values; this {name} policy was fitted on 16-d vectors"
    labels = np.ones(2), np.full(2, 0.01)
    with pytest.raises(InvalidInputError, match="has 10 values"):
        policy.add_model("c", Inputs(embeddings=_vectors(2, width=10)), *labels)
    assert policy.models_ == MODELS


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_adding_a_known_model_or_removing_an_unknown_or_the_last_is_refused(name: str) -> None:
    # knn and the baselines added a second column of the same name; they and knn removed an
    # unknown name silently (or with list.index's ValueError), and the last model too.
    policy = _fitted(name)
    inputs = _inputs()
    with pytest.raises(InvalidInputError, match=r'^name: model "a" is already known'):
        policy.add_model("a", inputs, np.ones(N), np.full(N, 0.01))
    with pytest.raises(UnknownModelError, match='"zzz"'):
        policy.remove_model("zzz")
    assert policy.models_ == MODELS
    ones, cents = list(np.ones(N)), list(np.full(N, 0.01))  # (lists too)
    policy.add_model("c", inputs, ones, cents)
    assert policy.models_ == [*MODELS, "c"]
    if name != "fixed":  # (its model can never go)
        policy.remove_model("a").remove_model("b")
        with pytest.raises(InvalidInputError, match=r'^name: cannot remove "c", the only model'):
            policy.remove_model("c")
        assert policy.models_ == ["c"]


def test_a_fixed_model_the_fitted_policy_does_not_know_changes_nothing() -> None:
    # set_params kept the refused model: get_params said "x" while it routed to "b".
    policy = _fitted("fixed")
    assert isinstance(policy, FixedPolicy)
    chosen = policy.model_
    with pytest.raises(InvalidInputError, match=r'^model: "x" is not among "a", "b"$'):
        policy.set_params(model="x")
    assert policy.get_params() == {"model": None} and policy.model_ == chosen
    assert policy.set_params(model="a").model_ == "a"
