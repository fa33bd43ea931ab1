"""Rule-based complexity tiers: the classifier and the TiersPolicy built on it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError, NotFittedError, UnknownModelError
from switchpoint.policies.base import Inputs
from switchpoint.policies.tiers import TIER_NAMES, TierClassification, TiersPolicy, classify_tier

ARCHITECTURE_REQUEST = """I need you to design the architecture of a distributed, fault-tolerant
rate limiter for our microservices platform. Requirements:

1. It must handle 50k requests per second with p99 latency under 2 ms.
2. It should support multiple regions with eventual consistency.
3. Explain the trade-offs between token bucket and sliding window algorithms.
4. Describe how to handle failover and clock skew.

Here is our current implementation, which does not scale:

```python
import redis

def allow(client: redis.Redis, key: str, limit: int) -> bool:
    count = client.incr(key)
    if count == 1:
        client.expire(key, 60)
    return count <= limit
```

What consistency model should we use? How do we test it under load? Also, what metrics
should we export, and how do we roll this out safely across all regions?
Finally, propose a migration plan from the current implementation.
""" * 2

MODELS = ["cheap", "strong"]


def _training_set() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Trivial greetings where both models are right, long hard requests where only 'strong' is.

    The greetings are 'trivial', the requests 'expert' (complex by length, lifted by structure):
    the three tiers in between get no training example.
    """
    trivial = ["hi", "hello there", "thanks!", "hey", "ok thanks, bye", "good morning"]
    complex_ = [ARCHITECTURE_REQUEST[: 1200 + 50 * i] for i in range(6)]
    texts = trivial + complex_
    scores = np.array([[1.0, 1.0]] * len(trivial) + [[0.0, 1.0]] * len(complex_))
    costs = np.tile([1.0, 10.0], (len(texts), 1))
    return texts, scores, costs


def _fitted(prior_strength: float = 10.0) -> TiersPolicy:
    texts, scores, costs = _training_set()
    return TiersPolicy(prior_strength=prior_strength).fit(
        Inputs(texts=texts), scores, costs, list(MODELS)
    )


# classify_tier --------------------------------------------------------------------------------


def test_greeting_is_trivial() -> None:
    result = classify_tier("hi")
    assert isinstance(result, TierClassification)
    assert result.tier == "trivial"
    assert result.index == 0
    assert result.signals["keyword_matches"]["trivial"] >= 1


def test_long_architecture_request_with_code_is_complex_or_expert() -> None:
    result = classify_tier(ARCHITECTURE_REQUEST)
    assert result.tier in ("complex", "expert")
    assert result.index == TIER_NAMES.index(result.tier)
    assert result.signals["has_code"] is True
    assert result.signals["code_indicators"] >= 2
    assert result.signals["structural_complexity"] >= 3
    assert result.signals["keyword_matches"]["complex"] >= 3


def test_signals_and_evidence_are_present() -> None:
    result = classify_tier("Explain the difference between TCP and UDP.")
    signals = result.signals
    assert signals["length"] == len("Explain the difference between TCP and UDP.")
    assert set(signals["keyword_matches"]) == set(TIER_NAMES)
    assert isinstance(signals["has_code"], bool)
    assert isinstance(signals["code_indicators"], int)
    assert isinstance(signals["structural_complexity"], int)
    assert result.evidence and all(isinstance(e, str) for e in result.evidence)
    assert "chars" in result.evidence[0]


def test_evidence_names_the_keywords_as_words_the_first_four_and_how_many_more() -> None:
    result = classify_tier("Design a scalable, distributed architecture and refactor the "
                           "algorithm for performance")
    line = next(e for e in result.evidence if e.startswith('tier "complex" keywords: '))
    # (sorted; a decision's reasoning reaches a response header, so the list stays short)
    assert line == ('tier "complex" keywords: "algorithm", "architecture", "design", '
                    '"distributed" and 3 more'), line
    assert "'" not in " ".join(result.evidence)


def test_evidence_names_each_tier_as_json_writes_it_as_the_other_notes_do() -> None:
    """The length's tier, the tier of each keyword and a move from one tier to another were
    named bare (→ simple range, complex keywords, from simple to moderate), while the tier a
    decision is given and the TF-IDF policy's tiers are quoted ("simple")."""
    result = classify_tier("Design a scalable, distributed architecture and refactor the "
                           "algorithm for performance")
    evidence = result.evidence
    assert evidence[0] == 'Input length 86 chars → the range of tier "simple"', evidence
    assert 'tier raised from "simple" to "moderate"' in evidence, evidence
    for line in evidence:
        for name in TIER_NAMES:
            assert f"{name} " not in line.replace(f'"{name}"', ""), line


@pytest.mark.parametrize(
    ("length", "tier"),
    [(1, "trivial"), (50, "trivial"), (51, "simple"), (200, "simple"), (201, "moderate"),
     (1000, "moderate"), (1001, "complex"), (3000, "complex"), (3001, "expert")],
)
def test_length_bands_without_other_signals(length: int, tier: str) -> None:
    text = ("lorem ipsum dolor sit amet " * 200)[:length]
    result = classify_tier(text)
    assert result.signals["base_tier"] == tier
    assert result.tier == tier


def test_code_lifts_a_short_prompt_by_one_tier() -> None:
    result = classify_tier("fix: `for i in range(10): print(i)`")
    assert result.signals["has_code"] is True
    assert result.signals["base_tier"] == "trivial"
    assert result.tier == "simple"
    assert any("code" in e for e in result.evidence)


def test_structure_lifts_by_one_tier_at_most() -> None:
    text = (
        "1. Compare Postgres and MySQL?\n2. And Redis?\n3. And Kafka?\n4. And SQS?\n"
        "- cost\n- latency\n- throughput\n- operations\n- security\n"
    )
    result = classify_tier(text)
    base = TIER_NAMES.index(result.signals["base_tier"])
    assert result.signals["structural_complexity"] >= 3
    assert result.index == base + 1


def test_lookup_keywords_lower_a_long_translation_request() -> None:
    text = "Translate into French: " + "the cat sleeps on the warm mat near the window " * 5
    result = classify_tier(text)
    assert result.signals["base_tier"] == "moderate"
    assert result.tier == "simple"


@pytest.mark.parametrize(
    "text", ["", "hi", "What is 2+2?", ARCHITECTURE_REQUEST, "x" * 5000, "é" * 300]
)
def test_confidence_in_unit_interval(text: str) -> None:
    result = classify_tier(text)
    assert 0.0 <= result.confidence <= 1.0
    assert 0 <= result.index < len(TIER_NAMES)


def test_classification_is_fast() -> None:
    text = ("Please explain how a hash map works; compare chaining with open addressing. " * 14)
    text = text[:1024]
    classify_tier(text)
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        classify_tier(text)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 1e-3  # generous bound for slow CI; typically ~0.04 ms


# TiersPolicy ----------------------------------------------------------------------------------


def test_fit_estimate_shapes_and_units() -> None:
    policy = _fitted()
    texts = ["hi", ARCHITECTURE_REQUEST[:1500], "Explain quicksort briefly, please, with care."]
    est = policy.estimate(Inputs(texts=texts))
    assert est.models == MODELS
    assert est.error.shape == (3, 2)
    assert est.cost.shape == (3, 2)
    assert est.support.shape == (3, 2)
    assert est.unit_ids.dtype == np.int64
    assert est.unit_ids.tolist() == [classify_tier(t).index for t in texts]
    assert est.unit_kind == "tier"
    assert est.unit_probabilities is None
    assert est.notes == []


def test_single_row_notes_carry_the_evidence() -> None:
    policy = _fitted()
    est = policy.estimate(Inputs(texts=["hi"]))
    result = classify_tier("hi")
    assert est.notes[0].startswith('tier "trivial"')
    assert est.notes[1:] == result.evidence


def test_tier_profiles_separate_easy_and_hard_prompts() -> None:
    policy = _fitted(prior_strength=1.0)
    est = policy.estimate(Inputs(texts=["hi", ARCHITECTURE_REQUEST[:1500]]))
    cheap, strong = 0, 1
    # Greetings: both models right, so cheap is as good; hard requests: cheap is much worse.
    assert est.error[0, cheap] < 0.2
    assert est.error[1, cheap] > 0.6
    assert est.error[1, strong] < 0.2
    cheap_unit = policy.unit_estimate(0)
    strong_unit = policy.unit_estimate(int(est.unit_ids[1]))
    assert cheap_unit.cost[0, policy.models_.index("cheap")] < cheap_unit.cost[
        0, policy.models_.index("strong")]
    assert policy.models_[int(np.argmin(strong_unit.error[0]))] == "strong"


def test_shrinkage_toward_global_mean() -> None:
    texts, scores, _ = _training_set()
    ids = np.array([classify_tier(t).index for t in texts])
    assert set(ids.tolist()) == {0, 4}
    policy = _fitted(prior_strength=10.0)
    global_error = np.nanmean(1.0 - scores, axis=0)
    # Tiers without a training prompt read exactly the global mean, with support 0.
    assert np.allclose(policy.global_error_, global_error)
    for empty in (1, 2, 3):
        assert np.array_equal(policy.error_[empty], policy.global_error_)
        assert np.all(policy.table_.count[empty] == 0)
        assert np.allclose(policy.cost_[empty], [1.0, 10.0])
    # Populated tiers: (n·mean + 10·global) / (n + 10).
    for tier in (0, 4):
        mask = ids == tier
        n = mask.sum()
        raw = (1.0 - scores[mask]).mean(axis=0)
        assert np.allclose(policy.error_[tier], (n * raw + 10.0 * global_error) / (n + 10.0))
    est = policy.estimate(Inputs(texts=[("lorem ipsum dolor sit amet " * 20)[:500]]))
    assert est.unit_ids.tolist() == [TIER_NAMES.index("moderate")]
    assert est.support.tolist() == [[0.0, 0.0]]
    assert np.array_equal(est.error[0], policy.global_error_)


def test_zero_prior_strength_uses_raw_means_and_global_for_empty_tiers() -> None:
    policy = _fitted(prior_strength=0.0)
    assert np.allclose(policy.error_[0], [0.0, 0.0])
    assert not np.isnan(policy.error_).any()


def test_global_cost() -> None:
    assert _fitted().global_cost() == pytest.approx({"cheap": 1.0, "strong": 10.0})


def test_add_and_remove_model() -> None:
    policy = _fitted()
    texts = ["hello", "hey there", ARCHITECTURE_REQUEST[:1300]]
    policy.add_model(
        "mid", Inputs(texts=texts), np.array([1.0, 1.0, 1.0]), np.array([3.0, 3.0, 3.0])
    )
    assert policy.models_ == ["cheap", "strong", "mid"]
    est = policy.estimate(Inputs(texts=["hi", ARCHITECTURE_REQUEST[:1300]]))
    assert est.error.shape == (2, 3)
    assert est.support[:, 2].tolist() == [2.0, 1.0]
    assert policy.global_cost()["mid"] == pytest.approx(3.0)
    with pytest.raises(InvalidInputError):
        policy.add_model("mid", Inputs(texts=["hi"]), np.array([1.0]), np.array([1.0]))

    before = policy.estimate(Inputs(texts=["hi"])).error[:, [0, 2]]
    policy.remove_model("strong")
    assert policy.models_ == ["cheap", "mid"]
    after = policy.estimate(Inputs(texts=["hi"]))
    assert after.models == ["cheap", "mid"]
    assert np.allclose(after.error, before)
    with pytest.raises(UnknownModelError):
        policy.remove_model("nope")


def test_state_round_trip_gives_identical_estimates() -> None:
    policy = _fitted()
    state = policy.get_state()
    assert state.name == "tiers"
    assert state.arrays == {}
    assert state.params == policy.get_params() == {"prior_strength": 10.0}
    restored = TiersPolicy.from_state(state)
    texts = ["hi", ARCHITECTURE_REQUEST, "Summarize this in one line: the sky is blue today."]
    a = policy.estimate(Inputs(texts=texts))
    b = restored.estimate(Inputs(texts=texts))
    assert a.models == b.models
    assert np.array_equal(a.unit_ids, b.unit_ids)
    np.testing.assert_allclose(a.error, b.error, rtol=0, atol=1e-7)
    np.testing.assert_allclose(a.cost, b.cost, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.support, b.support)
    assert restored.get_state().profiles == state.profiles


def test_requires_text() -> None:
    texts, scores, costs = _training_set()
    only_embeddings = Inputs(embeddings=np.zeros((len(texts), 4), dtype=np.float32))
    with pytest.raises(InvalidInputError):
        TiersPolicy().fit(only_embeddings, scores, costs, list(MODELS))
    policy = _fitted()
    with pytest.raises(InvalidInputError) as info:
        policy.estimate(Inputs(embeddings=np.zeros((1, 4), dtype=np.float32)))
    assert info.value.field == "prompt"


def test_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        TiersPolicy().estimate(Inputs(texts=["hi"]))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_constructor_validates_prior_strength(bad: float) -> None:
    texts, scores, costs = _training_set()
    with pytest.raises(InvalidInputError) as info:
        TiersPolicy(prior_strength=bad).fit(Inputs(texts=texts), scores, costs, list(MODELS))
    assert info.value.field == "prior_strength"


def test_describe_unit_and_repr() -> None:
    policy = _fitted()
    assert policy.describe_unit(3) == 'tier "complex"'
    assert policy.describe_unit(0) == 'tier "trivial"'
    assert repr(TiersPolicy()) == "TiersPolicy(prior_strength=10.0)"


def test_fit_rejects_mismatched_arrays_and_unlabelled_models() -> None:
    texts, scores, costs = _training_set()
    with pytest.raises(InvalidInputError):
        TiersPolicy().fit(Inputs(texts=texts), scores[:-1], costs[:-1], list(MODELS))
    scores = scores.copy()
    scores[:, 1] = np.nan
    with pytest.raises(InvalidInputError):
        TiersPolicy().fit(Inputs(texts=texts), scores, costs, list(MODELS))


def test_models_without_labels_are_named_as_words() -> None:
    # They were named as a Python list (model(s) ['a', 'b'] have no labels ...).
    texts, scores, costs = _training_set()
    scores = np.array(scores, dtype=np.float64)
    scores[:, :2] = np.nan
    with pytest.raises(InvalidInputError) as info:
        TiersPolicy().fit(Inputs(texts=texts), scores, costs, list(MODELS))
    first, second = list(MODELS)[:2]
    assert info.value.field == "records"
    assert str(info.value).startswith(f'records: "{first}", "{second}" have no labels in these '
                                      "records"), str(info.value)
