"""Cost-quality metrics on small cases computed by hand."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest

from switchpoint.evaluation.curves import decide_all, oracle_sweep, sweep
from switchpoint.evaluation.metrics import (
    Point,
    aiq,
    area_mean,
    hull_quality,
    oracle_point,
    qnc,
    routed_point,
    shortfall,
    single_model_points,
    upper_hull,
)
from switchpoint.policies import Estimates

CHEAP = Point(1.0, 0.5)
PRICEY = Point(3.0, 0.9)
SINGLES = [CHEAP, PRICEY]


# upper_hull --------------------------------------------------------------------------------


def test_upper_hull_drops_points_below_the_chord() -> None:
    # (2, 0.6) lies below the chord from (1, 0.5) to (3, 0.9), which is 0.7 at cost 2.
    hull = upper_hull([Point(3, 0.9), Point(2, 0.6), Point(1, 0.5)])
    assert hull == [Point(1, 0.5), Point(3, 0.9)]


def test_upper_hull_keeps_points_above_the_chord() -> None:
    hull = upper_hull([Point(1, 0.5), Point(2, 0.8), Point(3, 0.9)])
    assert hull == [Point(1, 0.5), Point(2, 0.8), Point(3, 0.9)]


def test_upper_hull_drops_point_on_the_chord() -> None:
    # Exactly on the chord (dyadic numbers, no rounding): it adds nothing and is dropped.
    assert upper_hull([Point(0, 0.0), Point(1, 0.25), Point(2, 0.5)]) == [
        Point(0, 0.0), Point(2, 0.5)]


def test_upper_hull_is_non_decreasing_and_dedupes_costs() -> None:
    hull = upper_hull([Point(1, 0.4), Point(1, 0.5), Point(3, 0.9), Point(4, 0.8),
                       Point(5, 0.9), Point(1, 0.5)])
    assert hull == [Point(1, 0.5), Point(3, 0.9)]
    assert upper_hull([]) == []
    assert upper_hull([Point(2, 0.3)]) == [Point(2, 0.3)]


# hull_quality / area_mean ------------------------------------------------------------------


def test_hull_quality_interpolates_and_is_flat_past_the_end() -> None:
    hull = [Point(1, 0.5), Point(3, 0.9)]
    assert math.isnan(hull_quality(hull, 0.5))
    assert hull_quality(hull, 1.0) == pytest.approx(0.5)
    assert hull_quality(hull, 2.0) == pytest.approx(0.7)
    assert hull_quality(hull, 2.5) == pytest.approx(0.8)
    assert hull_quality(hull, 3.0) == pytest.approx(0.9)
    assert hull_quality(hull, 100.0) == pytest.approx(0.9)
    assert math.isnan(hull_quality([], 1.0))


def test_area_mean_exact_for_piecewise_linear() -> None:
    hull = [Point(0, 0.0), Point(2, 1.0)]
    # [0, 2]: triangle of area 1; [2, 4]: flat at 1, area 2 -> mean 3/4.
    assert area_mean(hull, 0.0, 4.0) == pytest.approx(0.75)
    assert area_mean(hull, 0.0, 2.0) == pytest.approx(0.5)
    assert area_mean(hull, 1.0, 2.0) == pytest.approx(0.75)
    # A kink inside the range is integrated exactly: (0,0)-(1,1)-(3,1) over [0,3] = (0.5+2)/3.
    assert area_mean([Point(0, 0), Point(1, 1), Point(3, 1)], 0, 3) == pytest.approx(2.5 / 3)


def test_area_mean_degenerate_range_and_uncovered_range() -> None:
    hull = [Point(1, 0.5), Point(3, 0.9)]
    assert area_mean(hull, 2.0, 2.0) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="cheapest"):
        area_mean(hull, 0.0, 3.0)


# aiq ---------------------------------------------------------------------------------------


def test_aiq_of_zero_router_is_mean_of_the_single_model_chord() -> None:
    assert aiq(SINGLES, SINGLES) == pytest.approx(0.7)


def test_aiq_of_a_better_router() -> None:
    # Hull (1, .5) - (2, .9), then flat at .9 to cost 3: (0.7·1 + 0.9·1) / 2 = 0.8.
    assert aiq([Point(2, 0.9)], SINGLES) == pytest.approx(0.8)


def test_aiq_router_points_alone_are_joined_by_the_cheapest_model() -> None:
    # No router points: only the cheapest model is available -> flat 0.5.
    assert aiq([], SINGLES) == pytest.approx(0.5)
    # A router point more expensive than every model is ignored left of its cost: the chord
    # from (1, .5) to (4, 1.1) is .7 at cost 2 and .9 at cost 3, mean over [1, 3] = .7.
    assert aiq([Point(4, 1.1)], SINGLES) == pytest.approx(0.7)


def test_aiq_router_worse_than_single_models() -> None:
    # A router point below the cheapest model's quality never enters the hull.
    assert aiq([Point(1.5, 0.4)], SINGLES) == pytest.approx(0.5)


# qnc ---------------------------------------------------------------------------------------


def test_qnc_zero_router_is_one() -> None:
    assert qnc(SINGLES, SINGLES) == pytest.approx(1.0)


def test_qnc_half_cost() -> None:
    assert qnc([Point(1.5, 0.9)], SINGLES) == pytest.approx(0.5)


def test_qnc_interpolates_between_hull_points() -> None:
    # Hull (1, .5) - (2, 1.0): quality .9 is reached at cost 1 + 0.8 = 1.8 -> 1.8 / 3.
    assert qnc([Point(2, 1.0)], SINGLES) == pytest.approx(0.6)


def test_qnc_never_is_inf() -> None:
    assert qnc([Point(2, 0.6), Point(2.5, 0.85)], SINGLES) == math.inf


def test_qnc_when_cheapest_model_is_also_best() -> None:
    singles = [Point(1, 0.9), Point(3, 0.5)]
    assert qnc([], singles) == pytest.approx(1.0)
    assert qnc([Point(0.5, 0.95)], singles) == pytest.approx(0.5)


# shortfall -----------------------------------------------------------------------------------


def test_shortfall_none_for_the_zero_router_or_a_better_one() -> None:
    for points in (SINGLES, [Point(2, 0.9)]):
        s = shortfall(points, SINGLES)
        assert s.share == 0.0 and s.depth == 0.0


def test_shortfall_of_a_router_that_stops_short() -> None:
    # Hull (1, .5) - (2, .8), flat .8 to cost 3; zero router .5 + .2·(c - 1): the router is
    # ahead until the lines cross at c = 2.5, then behind by up to .9 - .8 = .1 at c = 3.
    s = shortfall([Point(2, 0.8)], SINGLES)
    assert s.share == pytest.approx(0.25)
    assert s.depth == pytest.approx(0.1)


def test_shortfall_with_nothing_but_the_cheapest_model() -> None:
    # Flat .5 against the chord to (3, .9): behind over the whole range, by .4 at the end.
    s = shortfall([], SINGLES)
    assert s.share == pytest.approx(1.0)
    assert s.depth == pytest.approx(0.4)


# oracle / single models / routed points ------------------------------------------------------


def test_oracle_point_picks_cheapest_best_model() -> None:
    scores = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    costs = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    # Row 0: tie at 1 -> cost 1. Row 1: model 1, cost 2. Row 2: tie at 0 -> cost 1.
    p = oracle_point(scores, costs)
    assert p.cost == pytest.approx(4 / 3)
    assert p.quality == pytest.approx(2 / 3)


def test_oracle_point_ignores_unlabelled_models() -> None:
    scores = np.array([[np.nan, 0.5], [1.0, np.nan]])
    costs = np.array([[0.1, 2.0], [3.0, np.nan]])
    p = oracle_point(scores, costs)
    assert p.cost == pytest.approx(2.5)
    assert p.quality == pytest.approx(0.75)


def test_single_model_points_and_routed_point() -> None:
    scores = np.array([[1.0, 0.0], [0.5, np.nan], [0.0, 1.0]])
    costs = np.array([[2.0, 0.1], [4.0, np.nan], [6.0, 0.3]])
    a, b = single_model_points(scores, costs)
    assert (a.cost, a.quality) == pytest.approx((4.0, 0.5))
    assert (b.cost, b.quality) == pytest.approx((0.2, 0.5))
    r = routed_point(np.array([1, 0, 1]), scores, costs)
    assert (r.cost, r.quality) == pytest.approx(((0.1 + 4.0 + 0.3) / 3, 1.5 / 3))


# curves ------------------------------------------------------------------------------------


def test_decide_all_ties_to_cheaper_and_trades_off() -> None:
    error = np.array([[0.2, 0.2], [0.1, 0.5], [0.1, 0.5]])
    cost = np.array([[2.0, 1.0], [4.0, 1.0], [4.0, 1.0]])
    assert decide_all(error, cost, 0.0, 4.0).tolist() == [1, 0, 0]
    # λ = 1, scale 4: row 1 -> 0.1 + 1 = 1.1 vs 0.5 + 0.25 = 0.75 -> the cheap model.
    assert decide_all(error, cost, 1.0, 4.0).tolist() == [1, 1, 1]
    # Exact tie in the total score (0.25 + 0.5 = 0.5 + 0.25): the cheaper model wins.
    tie = decide_all(np.array([[0.25, 0.5]]), np.array([[2.0, 1.0]]), 1.0, 4.0)
    assert tie.tolist() == [1]


def approx(expected: float) -> float:
    """``pytest.approx``, typed as the float it stands in for in a ``Point``."""
    return cast(float, pytest.approx(expected))


def test_sweep_traces_from_quality_to_cheapness() -> None:
    scores = np.array([[1.0, 0.0], [1.0, 1.0]])
    costs = np.array([[1.0, 0.1], [1.0, 0.1]])
    est = Estimates(models=["big", "small"], error=np.array([[0.0, 1.0], [0.0, 0.0]]),
                    cost=costs.copy(), support=np.ones((2, 2)),
                    unit_ids=np.zeros(2, np.int64), unit_kind="cluster")
    pts = sweep(est, scores, costs, cost_scale=1.0, lambdas=[0.0, 1000.0])
    # λ = 0: row 0 big, row 1 tie -> small. λ huge: small everywhere.
    assert pts[0] == Point(approx(0.55), approx(1.0))
    assert pts[1] == Point(approx(0.1), approx(0.5))
    oracle = oracle_sweep(scores, costs, lambdas=[0.0])
    assert oracle[0] == Point(approx(0.55), approx(1.0))
    assert oracle[-1] == Point(approx(0.1), approx(0.5))  # the 1e6 end
