"""Learned TF-IDF difficulty tiers: the vectorizer, the tier bins and the TfidfPolicy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError, NotFittedError, UnknownModelError
from switchpoint.policies.base import Inputs
from switchpoint.policies.tfidf import (
    SparseRows,
    TfidfPolicy,
    TfidfVectorizer,
    difficulty_tiers,
    tier_names,
    tokenize,
)
from switchpoint.weights import WeightsPackage, load_weights, save_weights

MODELS = ["A", "B", "C"]
MATH = ["integral", "derivative", "calculus", "limit", "series", "eigenvalue", "equation"]
POEM = ["poem", "sonnet", "rhyme", "verse", "stanza", "haiku", "metaphor"]
FILLER = ["please", "write", "explain", "quick", "short", "detailed", "answer", "today"]


def _topics(n: int = 40, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Math prompts: only A is right. Poem prompts: B and C are right, A is wrong.

    Math prompts are therefore harder on average (2/3 of the models fail), so they land in a
    higher difficulty tier than poem prompts.
    """
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    rows: list[list[float]] = []
    for i in range(n):
        topic = MATH if i % 2 == 0 else POEM
        words = rng.choice(topic, 4).tolist() + rng.choice(FILLER, 3).tolist()
        texts.append(" ".join(words))
        rows.append([1.0, 0.0, 0.0] if topic is MATH else [0.0, 1.0, 1.0])
    costs = np.tile([1.0, 2.0, 3.0], (n, 1))
    return texts, np.array(rows), costs


def _fitted(prior_strength: float = 10.0) -> TfidfPolicy:
    texts, scores, costs = _topics()
    policy = TfidfPolicy(prior_strength=prior_strength)
    return policy.fit(Inputs(texts=texts), scores, costs, list(MODELS))


MATH_PROMPT = "compute the integral and the derivative of this equation"
POEM_PROMPT = "write a sonnet poem with a rhyme in every verse"


# Vectorizer -----------------------------------------------------------------------------------


def test_tokenize_words_code_and_numbers() -> None:
    tokens = tokenize("The Quick fox: x == 42; def f() { return a->b }")
    assert "the" not in tokens  # stopword
    assert "quick" in tokens
    assert "==" in tokens and "->" in tokens and "()" in tokens and "{" in tokens
    assert "<num>" in tokens
    assert "def" in tokens and "return" in tokens


def test_vectorizer_min_df_idf_and_normalisation() -> None:
    docs = ["apple banana", "apple cherry", "apple banana banana", "durian"]
    vec = TfidfVectorizer(min_df=2)
    x = vec.fit_transform(docs)
    assert vec.terms_ == ["apple", "banana"]  # cherry and durian occur once
    assert isinstance(x, SparseRows)
    dense = x.toarray()
    assert dense.dtype == np.float32
    assert dense.shape == (4, 2)
    assert np.allclose(np.linalg.norm(dense[:3], axis=1), 1.0)
    assert np.all(dense[3] == 0.0)  # no known term
    # Rarer terms weigh more: banana (df 2) above apple (df 3) in "apple banana".
    assert dense[0, 1] > dense[0, 0]
    assert np.allclose(x.matmul(np.eye(2)), dense, atol=1e-6)


def test_vectorizer_max_features_keeps_most_frequent_terms() -> None:
    docs = ["a1 b2 c3", "a1 b2", "a1 c3", "a1 b2 d4", "d4 zz"]
    vec = TfidfVectorizer(max_features=2, min_df=1).fit(docs)
    assert vec.terms_ == ["a1", "b2"]
    assert vec.transform(["zz"]).toarray().shape == (1, 2)


def test_vectorizer_rejects_bad_params_and_empty_vocabulary() -> None:
    with pytest.raises(InvalidInputError) as info:
        TfidfVectorizer(max_features=0)
    assert info.value.field == "max_features"
    with pytest.raises(InvalidInputError) as info:
        TfidfVectorizer(min_df=2).fit(["one", "two"])
    assert info.value.field == "min_df"


def test_difficulty_tiers_are_quantiles_and_keep_ties_together() -> None:
    assert difficulty_tiers(np.arange(10.0), 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    tiers = difficulty_tiers(np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0]), 5)
    assert len(set(tiers[:4].tolist())) == 1 and len(set(tiers[4:].tolist())) == 1
    assert tiers[0] < tiers[-1]
    assert tier_names(5) == ["trivial", "simple", "moderate", "complex", "expert"]
    assert tier_names(3) == ["trivial", "moderate", "expert"]


# Policy ---------------------------------------------------------------------------------------


def test_learns_to_separate_two_topics() -> None:
    policy = _fitted()
    est = policy.estimate(Inputs(texts=[MATH_PROMPT, POEM_PROMPT]))
    assert est.models == MODELS
    best = [est.models[int(j)] for j in np.argmin(est.error, axis=1)]
    assert best[0] == "A"
    assert best[1] in ("B", "C")
    assert est.error[0, 0] < 0.3 and est.error[0, 1] > 0.7
    assert est.error[1, 0] > 0.7 and est.error[1, 1] < 0.3
    # Math prompts were harder overall, so they sit in a higher learned tier.
    assert est.unit_ids[0] > est.unit_ids[1]


def test_estimate_shapes_probabilities_and_notes() -> None:
    policy = _fitted()
    est = policy.estimate(Inputs(texts=[MATH_PROMPT, POEM_PROMPT, "zzz unknown words"]))
    assert est.error.shape == est.cost.shape == est.support.shape == (3, 3)
    assert est.unit_kind == "tier"
    assert est.unit_ids.dtype == np.int64
    probs = est.unit_probabilities
    assert probs is not None and probs.shape == (3, 5)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(est.unit_ids, np.argmax(probs, axis=1))
    # Empty difficulty bins never receive probability.
    assert np.all(probs[:, ~policy.active_] == 0.0)
    # A prompt with no known term spreads evenly over the learned tiers.
    assert np.allclose(probs[2, policy.active_], 1.0 / policy.active_.sum())
    assert np.allclose(est.cost, [[1.0, 2.0, 3.0]] * 3)
    assert est.notes == []
    single = policy.estimate(Inputs(texts=[MATH_PROMPT]))
    # Tier names are quoted as JSON writes them ("hard"), not as Python's reprs ('hard').
    assert single.notes and re.match(r'tier "\w+" with probability ', single.notes[0])
    assert any("integral" in note or "derivative" in note for note in single.notes)
    # The terms are named as words, as JSON writes them, not as Python's reprs.
    terms = next(note for note in single.notes if note.startswith("terms closest to tier "))
    assert '"' in terms and "'" not in terms.split(": ", 1)[1], terms
    assert re.match(r'terms closest to tier "\w+": "', terms), terms
    # The runners-up too ("other tiers: "easy" 0.20"; they were named bare).
    others = [note for text in (MATH_PROMPT, POEM_PROMPT, "integral poem")
              for note in policy.estimate(Inputs(texts=[text])).notes
              if note.startswith("other tiers: ")]
    assert others and all(re.fullmatch(r'other tiers: "\w+" [0-9.]+(, "\w+" [0-9.]+)?', note)
                          for note in others), others
    assert policy.estimate(Inputs(texts=[])).error.shape == (0, 3)


def test_shrinkage_toward_global_mean() -> None:
    texts, scores, _ = _topics()
    policy = _fitted(prior_strength=10.0)
    global_error = np.nanmean(1.0 - scores, axis=0)
    empty = np.flatnonzero(~policy.active_)
    assert empty.size > 0  # two difficulty values over five bins leave bins empty
    assert np.allclose(policy.global_error_, global_error)
    for t in empty:
        assert np.array_equal(policy.error_[t], policy.global_error_)
        assert np.all(policy.table_.count[t] == 0.0)
    for t in np.flatnonzero(policy.active_):
        n = policy.table_.count[t]
        raw = policy.table_.error[t]
        assert np.allclose(policy.error_[t], (n * raw + 10.0 * global_error) / (n + 10.0))
    assert np.allclose(policy.table_.count.sum(axis=0), len(texts))
    weak = _fitted(prior_strength=1000.0).estimate(Inputs(texts=[MATH_PROMPT]))
    assert np.allclose(weak.error[0], global_error, atol=0.02)


def test_add_and_remove_model() -> None:
    policy = _fitted()
    texts = [MATH_PROMPT, "integral of a series limit", POEM_PROMPT, "haiku stanza metaphor"]
    policy.add_model("D", Inputs(texts=texts), np.array([1.0, 1.0, 0.0, 0.0]), np.full(4, 0.5))
    assert policy.models_ == ["A", "B", "C", "D"]
    est = policy.estimate(Inputs(texts=[MATH_PROMPT, POEM_PROMPT]))
    assert est.error.shape == (2, 4)
    assert est.error[0, 3] < est.error[1, 3]
    assert np.isclose(policy.table_.count[:, 3].sum(), 4.0)
    assert policy.global_cost()["D"] == pytest.approx(0.5)
    with pytest.raises(InvalidInputError):
        policy.add_model("D", Inputs(texts=["x"]), np.array([1.0]), np.array([1.0]))

    kept = policy.estimate(Inputs(texts=[MATH_PROMPT])).error[:, [0, 2, 3]]
    policy.remove_model("B")
    after = policy.estimate(Inputs(texts=[MATH_PROMPT]))
    assert after.models == ["A", "C", "D"]
    assert np.allclose(after.error, kept)
    with pytest.raises(UnknownModelError):
        policy.remove_model("B")


def test_state_round_trip_gives_identical_estimates() -> None:
    import json

    policy = _fitted()
    state = policy.get_state()
    assert state.name == "tfidf"
    assert state.params == policy.get_params()
    json.dumps(state.meta)  # vocabulary is JSON-able
    json.dumps(state.profiles)
    assert state.meta["vocabulary"] == policy.vectorizer_.terms_
    restored = TfidfPolicy.from_state(state)
    texts = [MATH_PROMPT, POEM_PROMPT, "nothing known here", "integral poem"]
    a = policy.estimate(Inputs(texts=texts))
    b = restored.estimate(Inputs(texts=texts))
    assert a.models == b.models
    assert np.array_equal(a.unit_ids, b.unit_ids)
    np.testing.assert_allclose(a.error, b.error, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.cost, b.cost, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.support, b.support, rtol=0, atol=1e-5)
    assert a.unit_probabilities is not None and b.unit_probabilities is not None
    np.testing.assert_array_equal(a.unit_probabilities, b.unit_probabilities)
    assert restored.get_state().profiles == state.profiles


def test_a_fit_with_an_empty_tier_saves_a_package_that_loads(tmp_path: Path) -> None:
    # Two difficulties in five tiers leave three empty: their mean difficulty was NaN, which
    # the package's load refused as no finite number ("re-create it with `switchpoint fit`").
    policy = _fitted()
    assert (policy.tier_sizes_ == 0).sum() == 3
    saved = save_weights(WeightsPackage(policy, "fake/hash-384", 384), tmp_path / "tfidf")
    loaded = load_weights(saved).policy
    assert isinstance(loaded, TfidfPolicy)
    texts = [MATH_PROMPT, POEM_PROMPT]
    np.testing.assert_allclose(loaded.estimate(Inputs(texts=texts)).error,
                               policy.estimate(Inputs(texts=texts)).error, atol=1e-6)


@pytest.mark.parametrize(("change", "said"), [
    (lambda s: s.arrays.update(tier_sizes=np.zeros(5, np.int64)), "no tier holds prompts"),
    (lambda s: s.arrays.update(tier_difficulty=np.zeros(2)),
     "tier_difficulty has shape (2,); expected (5,), one value per tier"),
    (lambda s: s.meta["vocabulary"].__setitem__(1, s.meta["vocabulary"][0]),
     "the vocabulary names a term more than once"),
    (lambda s: s.meta["vocabulary"].__setitem__(0, {"a": 1}),
     "its vocabulary must be a list of terms (strings)"),
])
def test_a_state_it_could_not_route_with_is_refused(change: Any, said: str) -> None:
    # (no tier holding prompts loaded, and every route was a ValueError: a NaN support)
    state = _fitted().get_state()
    change(state)
    with pytest.raises(ValueError, match=re.escape(said)):
        TfidfPolicy.from_state(state)


def test_requires_text() -> None:
    texts, scores, costs = _topics()
    only_embeddings = Inputs(embeddings=np.zeros((len(texts), 4), dtype=np.float32))
    with pytest.raises(InvalidInputError):
        TfidfPolicy().fit(only_embeddings, scores, costs, list(MODELS))
    with pytest.raises(InvalidInputError) as info:
        _fitted().estimate(Inputs(embeddings=np.zeros((1, 4), dtype=np.float32)))
    assert info.value.field == "prompt"


def test_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        TfidfPolicy().estimate(Inputs(texts=["hi"]))


@pytest.mark.parametrize(
    ("param", "value"),
    [("n_tiers", 1), ("n_tiers", 2.5), ("temperature", 0.0), ("temperature", -1.0),
     ("prior_strength", -0.1), ("max_features", 0), ("min_df", 0)],
)
def test_constructor_validates(param: str, value: float) -> None:
    with pytest.raises(InvalidInputError) as info:
        TfidfPolicy(**{param: value}).validate_params()  # type: ignore[arg-type]
    assert info.value.field == param
    with pytest.raises(InvalidInputError) as info:
        TfidfPolicy().set_params(**{param: value})
    assert info.value.field == param


def test_describe_unit_best_model_and_global_cost() -> None:
    policy = _fitted()
    assert policy.describe_unit(3) == 'tier "complex"'
    assert TfidfPolicy(n_tiers=3).describe_unit(1) == 'tier "moderate"'
    math_tier = int(policy.estimate(Inputs(texts=[MATH_PROMPT])).unit_ids[0])
    poem_tier = int(policy.estimate(Inputs(texts=[POEM_PROMPT])).unit_ids[0])
    math_unit, poem_unit = policy.unit_estimate(math_tier), policy.unit_estimate(poem_tier)
    assert policy.models_[int(np.argmin(math_unit.error[0]))] == "A"
    poem_best = np.flatnonzero(np.isclose(poem_unit.error[0], poem_unit.error[0].min()))
    assert "B" in [policy.models_[i] for i in poem_best]
    assert policy.global_cost() == pytest.approx({"A": 1.0, "B": 2.0, "C": 3.0})
