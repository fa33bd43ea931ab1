"""The decision rule (error + λ·cost/scale, ties to the cheaper model) and RoutingDecision."""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from switchpoint.decision import (
    MAX_COST_WEIGHT,
    ROUTE_FIELDS,
    RoutingDecision,
    Usage,
    check_cost_weight,
    choose,
    scores_dict,
)
from switchpoint.errors import InvalidInputError

ERROR = np.array([0.1, 0.3, 0.5])
COST = np.array([10.0, 2.0, 1.0])
ALL = np.ones(3, dtype=bool)


def test_lambda_zero_is_quality_first() -> None:
    c = choose(ERROR, COST, ALL, 0.0, 10.0)
    assert c.index == 0
    np.testing.assert_allclose(c.scores, ERROR)
    assert c.order.tolist() == [0, 1, 2]


def test_picks_lowest_error_plus_scaled_cost() -> None:
    # scores: 0.1 + 1.0 = 1.1, 0.3 + 0.2 = 0.5, 0.5 + 0.1 = 0.6
    c = choose(ERROR, COST, ALL, 1.0, 10.0)
    assert c.index == 1
    np.testing.assert_allclose(c.scores, [1.1, 0.5, 0.6])
    assert c.order.tolist() == [1, 2, 0]


def test_cost_scale_normalises_lambda() -> None:
    # The same λ with costs in other units (x1000) and a matching scale gives the same choice.
    a = choose(ERROR, COST, ALL, 1.0, 10.0)
    b = choose(ERROR, COST * 1000, ALL, 1.0, 10_000.0)
    assert a.index == b.index
    np.testing.assert_allclose(a.scores, b.scores)


def test_non_positive_scale_falls_back_to_one() -> None:
    c = choose(ERROR, COST, ALL, 0.01, 0.0)
    np.testing.assert_allclose(c.scores, ERROR + 0.01 * COST)


def test_large_lambda_picks_cheapest() -> None:
    assert choose(ERROR, COST, ALL, 100.0, 10.0).index == 2
    assert choose(ERROR, COST, ALL, MAX_COST_WEIGHT, 10.0).index == 2


def test_exact_tie_goes_to_cheaper_model() -> None:
    # Equal error at λ = 0: the cheaper model (index 1) wins whatever the input order.
    both = np.ones(2, bool)
    assert choose(np.array([0.25, 0.25]), np.array([5.0, 1.0]), both, 0.0, 5.0).index == 1
    assert choose(np.array([0.25, 0.25]), np.array([1.0, 5.0]), both, 0.0, 5.0).index == 0
    # Equal total score (0.5 + 0.25 = 0.25 + 0.5, exact in binary): the cheaper one wins.
    c = choose(np.array([0.25, 0.5]), np.array([2.0, 1.0]), np.ones(2, bool), 1.0, 4.0)
    assert c.scores[0] == c.scores[1]
    assert c.index == 1


def test_candidates_mask_is_respected() -> None:
    mask = np.array([False, True, True])
    c = choose(ERROR, COST, mask, 0.0, 10.0)
    assert c.index == 1
    assert c.order.tolist() == [1, 2]  # the excluded model is not even a fallback
    only = choose(ERROR, COST, np.array([True, False, False]), 100.0, 10.0)
    assert only.index == 0
    assert only.confidence == 1.0  # no runner-up


def test_empty_mask_raises() -> None:
    with pytest.raises(InvalidInputError) as info:
        choose(ERROR, COST, np.zeros(3, bool), 0.0, 10.0)
    assert info.value.field == "available_models"


def test_confidence_grows_with_margin_and_support() -> None:
    close = choose(np.array([0.30, 0.31]), np.array([1.0, 1.0]), np.ones(2, bool), 0.0, 1.0,
                   support=np.array([5.0, 5.0]))
    far = choose(np.array([0.10, 0.60]), np.array([1.0, 1.0]), np.ones(2, bool), 0.0, 1.0,
                 support=np.array([5.0, 5.0]))
    far_more = choose(np.array([0.10, 0.60]), np.array([1.0, 1.0]), np.ones(2, bool), 0.0, 1.0,
                      support=np.array([500.0, 500.0]))
    for c in (close, far, far_more):
        assert 0.5 <= c.confidence <= 1.0
    assert close.confidence < far.confidence < far_more.confidence
    no_support = choose(np.array([0.3, 0.3]), np.array([1.0, 1.0]), np.ones(2, bool), 0.0, 1.0)
    assert no_support.confidence == pytest.approx(0.5)


def test_scores_dict_follows_order_and_rounds() -> None:
    d = scores_dict(["a", "b", "c"], np.array([0.1234567891, 0.5, 0.2]), np.array([0, 2, 1]))
    assert list(d) == ["a", "c", "b"]
    assert d["a"] == 0.123457


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 10, MAX_COST_WEIGHT, np.float64(2.5)])
def test_check_cost_weight_accepts(value: float) -> None:
    out = check_cost_weight(value)
    assert out == float(value)
    assert isinstance(out, float)


@pytest.mark.parametrize(
    ("value", "needle"),
    [(-0.1, ">= 0"), (-1, ">= 0"), (float("nan"), "NaN"), (float("-inf"), "finite numbers only"),
     (float("inf"), "finite numbers only"), (MAX_COST_WEIGHT * 1.01, "at most"), (True, "number"),
     (False, "number"), ("0.5", "number"), (None, "number"), ([1.0], "number")],
)
def test_check_cost_weight_rejects(value: object, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_cost_weight(value, "lam")
    assert info.value.field == "lam"
    assert needle in str(info.value)


def _decision(**overrides: object) -> RoutingDecision:
    fields: dict[str, object] = {
        "selected_model": "small", "cluster_id": 3, "expected_error": 0.2,
        "cost_adjusted_score": 0.25, "all_scores": {"small": 0.25, "big": 0.4},
        "cache_hit": False, "usage": Usage(routing_ms=0.5, embedding_ms=3.0),
        "expected_cost": 0.0001, "cost_weight": 0.5, "confidence": 0.8,
        "fallback_models": ["big"], "cluster_probabilities": [0.0, 0.25, 0.0, 0.75],
        "reasoning": ["Cluster 3 of the 'cluster' policy.", "small has the lowest score."],
        "evidence": ["40 labelled examples behind small's estimate"],
        "policy": "cluster", "basis": "cluster policy, cluster 3",
        "expected_errors": {"small": 0.2, "big": 0.1},
        "expected_costs": {"small": 0.0001, "big": 0.003},
    }
    fields.update(overrides)
    return RoutingDecision(**fields)  # type: ignore[arg-type]


def test_to_dict_is_json_serialisable() -> None:
    d = _decision()
    out = d.to_dict()
    round_trip = json.loads(json.dumps(out))
    assert round_trip["selected_model"] == "small"
    assert round_trip["usage"] == {"routing_ms": 0.5, "embedding_ms": 3.0}
    assert round_trip["cluster_probabilities"] == [0.0, 0.25, 0.0, 0.75]
    assert round_trip["all_scores"] == {"small": 0.25, "big": 0.4}
    assert round_trip["fallback_models"] == ["big"]
    for key in ("selected_model", "cluster_id", "expected_error", "cost_adjusted_score",
                "all_scores", "cache_hit", "usage", "confidence", "reasoning", "decision_id"):
        assert key in round_trip
    assert isinstance(d.cluster_probabilities, np.ndarray)  # the decision keeps its array
    assert _decision(cluster_probabilities=None).to_dict()["cluster_probabilities"] is None


def test_to_dict_gives_costs_to_the_places_dollars_are_kept_and_the_decision_keeps_them_exact(
        ) -> None:
    exact = 0.0000031 + 0.00000155  # 4.6499999999999995e-06
    d = _decision(expected_cost=exact, expected_costs={"small": exact, "big": 1 / 3})
    text = json.dumps(d.to_dict())
    assert '"expected_cost": 4.65e-06' in text, text
    assert '"expected_costs": {"small": 4.65e-06, "big": 0.3333333333}' in text, text
    assert d.expected_cost == exact and d.expected_costs["big"] == 1 / 3


def test_a_decision_is_built_from_its_public_fields_in_the_usual_order() -> None:
    d = RoutingDecision("small", 0.2, 0.25, {"small": 0.25, "big": 0.4}, 3,
                        np.array([0.1, 0.0, 0.0, 0.9]),
                        "one sentence of reasoning")  # type: ignore[arg-type]  # a str is taken as one
    assert d.selected_model == "small" and d.cluster_id == 3 and d.expected_error == 0.2
    assert d.reasoning == ["one sentence of reasoning"]
    assert d.cache_hit is False and d.usage == Usage(0.0, 0.0) and d.decision_id
    assert RoutingDecision("m", 0.1, 0.1, {"m": 0.1}, 0).cluster_probabilities is None


def test_to_dict_of_chosen_fields_is_the_routing_answer() -> None:
    out = _decision().to_dict(ROUTE_FIELDS)
    assert list(out) == list(ROUTE_FIELDS)
    assert out["usage"] == {"routing_ms": 0.5, "embedding_ms": 3.0}


def test_a_decision_equals_its_copy_and_differs_from_another_by_its_distribution() -> None:
    """A decision compared with a copy of itself (pickled, as a worker returns it, or
    deep-copied) raised NumPy's ValueError, its cluster distribution an array."""
    d = _decision()
    assert pickle.loads(pickle.dumps(d)) == d and copy.deepcopy(d) == d
    assert d != replace(d, cluster_probabilities=np.array([0.0, 0.75, 0.0, 0.25]))
    assert d != replace(d, cluster_probabilities=None) and d != replace(d, cluster_id=4)
    assert replace(d, cluster_probabilities=None) == replace(d, cluster_probabilities=None)
    assert d != "small" and d in [copy.deepcopy(d)]
    with pytest.raises(TypeError):
        hash(d)  # (unhashable, as a dataclass that compares by value is)


def test_decision_ids_are_unique() -> None:
    assert _decision().decision_id != _decision().decision_id


def test_explain_names_the_cost_unit_it_is_given() -> None:
    """Given the router's unit, the account says which one its cost is in, where it named
    both and when each applies (what `switchpoint route --explain` printed for the bundled
    weights)."""
    line = next(line for line in _decision().explain(cost_unit="usd").splitlines()
                if line.startswith("Estimated cost:"))
    assert line.startswith("Estimated cost: 0.000100 per request, in US dollars (λ"), line
    line = next(line for line in _decision().explain(cost_unit="weights").splitlines()
                if line.startswith("Estimated cost:"))
    assert line.startswith("Estimated cost: 0.000100 per request, in the weights' cost units "
                           "(US dollars for the bundled weights) (λ"), line
    # Of weights that are not the bundled ones, their records' units, claiming no dollars.
    line = next(line for line in _decision().explain(
        cost_unit="weights", bundled_weights=False).splitlines()
        if line.startswith("Estimated cost:"))
    assert line.startswith("Estimated cost: 0.000100 per request, in the weights' cost units "
                           "(the units the records it was fitted on gave its costs in) (λ"), line
    with pytest.raises(InvalidInputError, match='cost_unit: must be one of "usd" or "weights"'):
        _decision().explain(cost_unit="eur")


def test_explain_has_every_section() -> None:
    text = _decision().explain()
    lines = text.splitlines()
    for section in ("Model selected", "Basis", "Reasoning", "Estimated cost", "Evidence",
                    "Alternatives considered"):
        assert sum(line.startswith(section + ":") for line in lines) == 1, section
    assert lines[0] == "Model selected: small (confidence: 80%)"
    assert "cluster policy, cluster 3" in text
    # (its units are not known to be dollars: catalog prices make them so, the weights' own may
    # not be; its places are the dollars' rule, never rounded for showing)
    assert ("Estimated cost: 0.000100 per request, in US dollars when the catalog prices every "
            "model, else in the weights' cost units") in text
    assert "$" not in next(line for line in lines if line.startswith("Estimated cost:"))
    tiny = _decision(expected_cost=0.00000145, expected_costs={"small": 0.00000145,
                                                               "big": 0.003}).explain()
    assert "Estimated cost: 0.00000145 per request" in tiny
    assert "40 labelled examples" in text
    # big: error 0.1 vs 0.2 -> more accurate by 10.0 percentage points (a difference of
    # rates: "by 10.0%" read as a tenth of 20%), 0.003 / 0.0001 = 30x the cost
    alt = next(line for line in lines if line.startswith("Alternatives considered:"))
    assert "big (score 0.4000, more accurate by 10.0 percentage points, 30x cost)" in alt
    worse = _decision(expected_errors={"small": 0.2, "big": 0.255}).explain()
    assert "big (score 0.4000, less accurate by 5.5 percentage points, 30x cost)" in worse
    assert "%," not in worse.splitlines()[-1]


def test_explain_without_alternatives_says_none() -> None:
    text = _decision(fallback_models=[], evidence=[]).explain()
    assert "Alternatives considered: none" in text
    assert text.splitlines()[0].startswith("Model selected: small")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("field", "value", "named", "message"), [
    ("expected_error", NAN, "expected_error", "must be a finite number >= 0, got NaN"),
    ("expected_error", -0.5, "expected_error", "must be a finite number >= 0, got -0.5"),
    ("cost_adjusted_score", INF, "cost_adjusted_score",
     "must be a finite number, got infinity, too large a number"),
    ("all_scores", {"small": NAN, "big": 0.4}, 'all_scores["small"]', "must be a finite number"),
    ("all_scores", {"small": "0.25", "big": 0.4}, 'all_scores["small"]', "got str"),
    ("all_scores", {("small",): 0.25, "big": 0.4}, "all_scores", "a key of type tuple"),
    ("cluster_probabilities", [0.5, NAN], "cluster_probabilities[1]",
     "must be a number from 0 to 1, got NaN"),
    ("cluster_probabilities", [1.5, -0.5], "cluster_probabilities[0]", "got 1.5"),
    ("cluster_probabilities", np.array([[0.5], [0.5]]), "cluster_probabilities",
     "not a flat list of numbers"),
    ("cluster_probabilities", np.array(["x"]), "cluster_probabilities",
     "not a flat list of numbers"),
    # (a unit's index, from 0: a negative one named no unit, and one past 2**63 - 1 was kept
    # until the request log, an SQLite integer, could not store it)
    ("cluster_id", -1, "cluster_id", "a whole number from 0 to 9223372036854775807, got -1"),
    ("cluster_id", np.int64(-3), "cluster_id", "got -3"),
    ("cluster_id", 2**63, "cluster_id", "got 9223372036854775808"),
    ("confidence", 1.5, "confidence", "must be a number from 0 to 1, got 1.5"),
    ("original_confidence", NAN, "original_confidence", "got NaN"),
    ("expected_cost", -1.0, "expected_cost", "must be a finite number >= 0, got -1.0"),
    ("expected_cost", INF, "expected_cost", "got infinity"),
    ("cost_weight", -1.0, "cost_weight", "must be a number from 0 to 10,000"),
    ("fallback_models", ["nowhere"], "fallback_models",
     'names "nowhere", which all_scores does not score'),
    ("fallback_models", "big", "fallback_models", "must be a list of model names, got str"),
    ("reasoning", ["fine", 1], "reasoning[1]", "must be a string, got int"),
    ("evidence", [None], "evidence[0]", "must be a string, got None"),
    ("sla_breaches", [3], "sla_breaches[0]", "must be a string"),
    ("expected_errors", {"small": NAN}, 'expected_errors["small"]', "got NaN"),
    ("expected_costs", {"small": -1.0}, 'expected_costs["small"]', "got -1.0"),
    ("decision_id", 5, "decision_id", "must be a string, got int"),
    ("cache_hit", 1, "cache_hit", "must be True or False, got int"),
    ("budget_pressure", {"fraction_used": "half", "budget": "$5/day"},
     'budget_pressure["fraction_used"]', "got str"),
    ("budget_pressure", [0.5], "budget_pressure", "must be a dict"),
])
def test_a_decision_refuses_a_value_its_json_or_explanation_could_not_take(
        field: str, value: object, named: str, message: str) -> None:
    # Each of these was taken, and broke later: to_dict() wrote NaN or Infinity (no strict
    # JSON reader takes them) or a key JSON cannot write, explain() raised (KeyError for a
    # fallback without a score, TypeError joining a sentence that is not a string) or read
    # "confidence: 150%".
    with pytest.raises(InvalidInputError) as info:
        _decision(**{field: value})
    assert info.value.field == named
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("value", [NAN, -1.0, INF])
def test_usage_refuses_a_time_that_is_not_a_finite_number_from_0(value: float) -> None:
    with pytest.raises(InvalidInputError) as info:
        Usage(routing_ms=value)
    assert info.value.field == "routing_ms"
    with pytest.raises(InvalidInputError) as info:
        Usage(embedding_ms=value)
    assert str(info.value).startswith("embedding_ms: must be a finite number of milliseconds")


def test_a_decision_within_its_ranges_writes_strict_json_and_explains_itself() -> None:
    d = _decision(confidence=1.0, expected_cost=0.0, cost_weight=MAX_COST_WEIGHT,
                  cluster_probabilities=[0, 1], budget_pressure={
                      "fraction_used": 1.2, "budget": "$5/day", "base_cost_weight": 0.5,
                      "cost_weight": 2.0})
    assert json.loads(json.dumps(d.to_dict(), allow_nan=False))["cluster_probabilities"] == [
        0.0, 1.0]
    assert "Budget: $5/day is 120% used" in d.explain()


def test_a_decision_of_numpy_and_other_numbers_keeps_python_numbers_json_writes() -> None:
    """A decision built of NumPy scalars (what a policy's arrays hold: np.float32, np.int64),
    or a Fraction kept them as given, and to_dict()'s answer failed in json.dumps
    (Object of type float32 is not JSON serializable): each is kept as the Python number it
    is, the check of its range unchanged."""
    from fractions import Fraction

    d = _decision(expected_error=np.float32(0.25), cost_adjusted_score=np.float64(-0.5),
                  all_scores={"small": np.float32(0.25), "big": Fraction(2, 5)},
                  cluster_id=np.int64(2), expected_cost=Fraction(1, 1000),
                  cost_weight=np.int64(1), confidence=np.float16(0.5),
                  original_confidence=np.float32(0.5),
                  expected_errors={"small": np.float32(0.25), "big": 0.5},
                  expected_costs={"small": np.float64(0.0001), "big": np.int32(0)},
                  usage=Usage(np.float32(0.5), np.int64(3)),  # type: ignore[arg-type]
                  budget_pressure={"fraction_used": np.float32(0.5), "budget": "$5/day",
                                   "base_cost_weight": np.float32(0.5),
                                   "cost_weight": np.int64(1)})
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert (out["expected_error"], out["cost_adjusted_score"], out["cluster_id"]) == (
        0.25, -0.5, 2)
    assert out["all_scores"] == {"small": 0.25, "big": 0.4}
    assert (out["expected_cost"], out["cost_weight"], out["confidence"]) == (0.001, 1.0, 0.5)
    assert out["expected_errors"] == {"small": 0.25, "big": 0.5}
    assert out["expected_costs"] == {"small": 0.0001, "big": 0.0}
    assert out["usage"] == {"routing_ms": 0.5, "embedding_ms": 3.0}
    assert out["budget_pressure"] == {"fraction_used": 0.5, "budget": "$5/day",
                                      "base_cost_weight": 0.5, "cost_weight": 1.0}
    assert type(d.cluster_id) is int and type(d.expected_error) is float
    assert all(type(x) is float for x in d.all_scores.values())
    assert "Budget: $5/day is 50% used" in d.explain()
    # (a dict of floats is kept as given; one holding another number is copied, not changed)
    scores = {"small": 0.25, "big": 0.4}
    assert _decision(all_scores=scores).all_scores is scores
    given = {"small": np.float32(0.25), "big": 0.4}
    assert _decision(all_scores=given).all_scores == {"small": 0.25, "big": 0.4}
    assert type(given["small"]) is np.float32
    with pytest.raises(InvalidInputError) as refused:  # (the range is checked as before)
        _decision(confidence=np.float32(1.5))
    assert str(refused.value).startswith("confidence: must be a number from 0 to 1, got ")


def test_a_decision_reads_its_arm_as_ab_variant() -> None:
    """``ab_variant`` is the arm ("" when the decision was routed in no experiment): a
    property, not a field a decision is built or written with."""
    assert _decision().ab_variant == ""
    d = _decision(experiment="quality-vs-cost", arm="b")
    assert d.ab_variant == "b" and replace(d, arm="a").ab_variant == "a"
    assert "ab_variant" not in d.to_dict() and "ab_variant" not in json.dumps(d.to_dict())
    with pytest.raises(TypeError):
        RoutingDecision("m", 0.1, 0.1, {"m": 0.1}, 0, ab_variant="a")  # type: ignore[call-arg]


def test_a_decision_of_decimals_keeps_the_floats_nearest_them_and_refuses_one_no_float_holds(
        ) -> None:
    """A Decimal, which every number check of the library door takes, was refused by a
    decision ("must be a finite number >= 0, got Decimal"): each is kept as the float nearest
    it, so to_dict() is JSON json.dumps writes; one no float holds is refused saying so."""
    d = _decision(expected_error=Decimal("0.2"), cost_adjusted_score=Decimal("-0.25"),
                  all_scores={"small": Decimal("0.25"), "big": 0.4},
                  expected_cost=Decimal("0.0001"), cost_weight=Decimal("2"),
                  confidence=Decimal("0.8"), original_confidence=Decimal("0"),
                  expected_errors={"small": Decimal("0.2"), "big": 0.1},
                  expected_costs={"small": Decimal("1E-4"), "big": 0.003},
                  usage=Usage(Decimal("0.5"), Decimal(3)),  # type: ignore[arg-type]
                  budget_pressure={"fraction_used": Decimal("0.5"), "budget": "$5/day",
                                   "base_cost_weight": Decimal("0.5"),
                                   "cost_weight": Decimal("2")})
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert (out["expected_error"], out["cost_adjusted_score"], out["expected_cost"]) == (
        0.2, -0.25, 0.0001)
    assert (out["cost_weight"], out["confidence"], out["original_confidence"]) == (2.0, 0.8, 0.0)
    assert out["all_scores"] == {"small": 0.25, "big": 0.4}
    assert out["expected_errors"] == {"small": 0.2, "big": 0.1}
    assert out["expected_costs"] == {"small": 0.0001, "big": 0.003}
    assert out["usage"] == {"routing_ms": 0.5, "embedding_ms": 3.0}
    assert out["budget_pressure"] == {"fraction_used": 0.5, "budget": "$5/day",
                                      "base_cost_weight": 0.5, "cost_weight": 2.0}
    assert type(d.expected_error) is float and type(d.all_scores["small"]) is float
    assert "(confidence: 80%)" in d.explain()
    with pytest.raises(InvalidInputError) as past:
        _decision(expected_cost=Decimal("1e400"))
    assert str(past.value) == ("expected_cost: must be a finite number, got 1E+400, past the "
                               "largest a number holds (about 1.8e308)")
    with pytest.raises(InvalidInputError) as tiny:
        _decision(expected_cost=Decimal("1e-400"))
    assert str(tiny.value).startswith("expected_cost: 1E-400 is too small a number")
    with pytest.raises(InvalidInputError) as over:
        _decision(confidence=Decimal("1.5"))
    assert str(over.value).startswith("confidence: must be a number from 0 to 1, got ")


def test_a_number_refused_is_shown_in_plain_terms_not_as_a_repr_nor_as_json_infinity() -> None:
    """A λ of 1e400 (infinity, as Python reads it) said "is Infinity", and a NumPy scalar or
    a Decimal out of range was shown as its repr (np.float64(1.5), Decimal('NaN')): each is
    now the number given, an infinity named as too large, by the one rule for a number in a
    message."""
    with pytest.raises(InvalidInputError) as too_large:
        check_cost_weight(1e400)
    assert str(too_large.value) == (
        "cost_weight: is infinity, too large a number (what 1e400, or any number past about "
        "1.8e308, reads as); send finite numbers only")
    with pytest.raises(InvalidInputError) as negative:
        check_cost_weight(-1e400, "lam")
    assert str(negative.value).startswith("lam: is -infinity, too large a negative number (what "
                                          "-1e400, or any number below about -1.8e308, reads as)")
    with pytest.raises(InvalidInputError) as numpy_lambda:
        check_cost_weight(np.float32(2e4))
    assert str(numpy_lambda.value) == "cost_weight: is 20000.0; it must be at most 10,000"
    for value, shown in [(np.float64(1.5), "1.5"), (np.float32(1.5), "1.5"), (np.int64(2), "2"),
                         (Decimal("NaN"), "NaN"), (np.float64("nan"), "NaN")]:
        with pytest.raises(InvalidInputError) as refused:
            _decision(confidence=value)
        assert str(refused.value) == f"confidence: must be a number from 0 to 1, got {shown}"
    with pytest.raises(InvalidInputError) as infinite:
        _decision(expected_cost=np.float64("inf"))
    assert str(infinite.value) == (
        "expected_cost: must be a finite number >= 0, got infinity, too large a number (what "
        "1e400, or any number past about 1.8e308, reads as)")


def test_a_decisions_repr_stays_a_few_lines_among_a_thousand_models() -> None:
    """A decision among 1,000 models, with a distribution over 1,000 clusters and a megabyte
    of reasoning, shows every field but only the first entries of each collection and the
    start of each text (its repr was hundreds of KB: a notebook cell flooded)."""
    names = [f"model-{j:04d}" for j in range(1000)]
    scores = {name: j / 1000 for j, name in enumerate(names)}
    decision = RoutingDecision(names[0], 0.0, 0.0, scores, 7, np.full(1000, 0.001),
                               ["x" * 2**20], fallback_models=names[1:], expected_errors=scores,
                               expected_costs=scores, prompt_hash="a" * 64)
    shown = repr(decision)
    assert len(shown) < 4000, len(shown)
    assert shown.startswith("RoutingDecision(selected_model='model-0000', expected_error=0.0, "
                            "cost_adjusted_score=0.0, all_scores={'model-0000': 0.0, ")
    assert shown.count("... 988 more") == 4  # (the three dicts and the distribution)
    assert "... 987 more" in shown  # (the 999 fallbacks)
    assert "cluster_id=7, cluster_probabilities=array([0.001, " in shown
    assert "'xxx" in shown and "x" * 300 not in shown
    assert f"prompt_hash='{'a' * 64}')" in shown  # (the last field, whole)
    small = RoutingDecision("a", 0.1, 0.2, {"a": 0.2, "b": 0.3}, 0, fallback_models=["b"])
    assert repr(small).startswith("RoutingDecision(selected_model='a', expected_error=0.1, "
                                  "cost_adjusted_score=0.2, all_scores={'a': 0.2, 'b': 0.3}, "
                                  "cluster_id=0, cluster_probabilities=None, reasoning=[], ")
