"""Cost-quality metrics for routers (RouterBench's AIQ, UniRoute's QNC).

A router swept over λ gives points ``(mean cost, mean quality)``. Because a router can mix two
operating points by routing a fraction of traffic with each, what it achieves is the upper
concave hull of its points. The cheapest single model is always available to mix with, so it
joins the hull (this is what lets a router be compared at budgets below its own cheapest point).

- AIQ: the mean of the hull's quality over the single models' cost range ``[c_min, c_max]``,
  i.e. the area under the hull divided by the range. Beyond the hull's last point the quality
  stays flat (a router need not spend more).
- QNC: the least cost at which the hull reaches the best single model's quality, as a fraction
  of that model's cost; ``inf`` if it never does.
- The zero router is the hull of the single models alone; the oracle picks, per prompt, the
  cheapest model with the best score.
- Shortfall: where a router does worse than the zero router (the best single model, or mix of
  two, for each budget): the share of the cost range over which its hull lies below the zero
  router's, and the deepest dip. A router that is right to be unsure has none.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Point:
    cost: float
    quality: float


def upper_hull(points: Sequence[Point]) -> list[Point]:
    """The non-decreasing upper concave hull of the points, sorted by cost."""
    pts = sorted({(p.cost, p.quality) for p in points})
    # For equal costs keep only the best quality.
    best: dict[float, float] = {}
    for c, q in pts:
        best[c] = max(q, best.get(c, -math.inf))
    ordered = sorted(best.items())
    hull: list[tuple[float, float]] = []
    for c, q in ordered:
        if hull and q <= hull[-1][1]:
            continue  # costs more, no better: never on a non-decreasing frontier
        while len(hull) >= 2:
            (c1, q1), (c2, q2) = hull[-2], hull[-1]
            # Drop the middle point if it lies on or below the chord from c1 to c.
            if (q2 - q1) * (c - c1) <= (q - q1) * (c2 - c1):
                hull.pop()
            else:
                break
        hull.append((c, q))
    return [Point(c, q) for c, q in hull]


def hull_quality(hull: Sequence[Point], cost: float) -> float:
    """Quality the hull reaches at ``cost`` (NaN left of its first point, flat past its last)."""
    if not hull or cost < hull[0].cost:
        return math.nan
    for a, b in itertools.pairwise(hull):
        if cost <= b.cost:
            if b.cost == a.cost:
                return b.quality
            return a.quality + (b.quality - a.quality) * (cost - a.cost) / (b.cost - a.cost)
    return hull[-1].quality


def area_mean(hull: Sequence[Point], lo: float, hi: float) -> float:
    """Mean of the hull's quality over ``[lo, hi]`` (exact for a piecewise-linear hull)."""
    if hi <= lo:
        return hull_quality(hull, lo)
    xs = [lo, hi] + [p.cost for p in hull if lo < p.cost < hi]
    xs = sorted(set(xs))
    total = 0.0
    for a, b in itertools.pairwise(xs):
        qa, qb = hull_quality(hull, a), hull_quality(hull, b)
        if math.isnan(qa) or math.isnan(qb):
            raise ValueError("the hull does not cover the cost range; add the cheapest model")
        total += 0.5 * (qa + qb) * (b - a)
    return total / (hi - lo)


def single_model_points(scores: Array, costs: Array) -> list[Point]:
    return [
        Point(float(np.nanmean(costs[:, j])), float(np.nanmean(scores[:, j])))
        for j in range(scores.shape[1])
    ]


def aiq(router_points: Sequence[Point], single_points: Sequence[Point]) -> float:
    """RouterBench's average improvement in quality over the single models' cost range."""
    lo = min(p.cost for p in single_points)
    hi = max(p.cost for p in single_points)
    cheapest = min(single_points, key=lambda p: (p.cost, -p.quality))
    return area_mean(upper_hull([*router_points, cheapest]), lo, hi)


def qnc(router_points: Sequence[Point], single_points: Sequence[Point]) -> float:
    """Least cost (fraction of the best single model's cost) that matches its quality."""
    best = max(single_points, key=lambda p: (p.quality, -p.cost))
    cheapest = min(single_points, key=lambda p: (p.cost, -p.quality))
    hull = upper_hull([*router_points, cheapest])
    target = best.quality - 1e-12
    for a, b in itertools.pairwise(hull):
        if b.quality >= target:
            if a.quality >= target:
                return a.cost / best.cost
            t = (target - a.quality) / (b.quality - a.quality)
            return (a.cost + t * (b.cost - a.cost)) / best.cost
    if hull and hull[0].quality >= target:
        return hull[0].cost / best.cost
    return math.inf


@dataclass(frozen=True)
class Shortfall:
    share: float  # fraction of [c_min, c_max] where the router's hull < the zero router's
    depth: float  # the largest quality gap there (0 if none)


def shortfall(router_points: Sequence[Point], single_points: Sequence[Point]) -> Shortfall:
    """Where the router's hull lies below the zero router's over the single models' cost range
    (exact: both hulls are piecewise linear, so the gap is linear between their corners)."""
    lo = min(p.cost for p in single_points)
    hi = max(p.cost for p in single_points)
    cheapest = min(single_points, key=lambda p: (p.cost, -p.quality))
    ours = upper_hull([*router_points, cheapest])
    zero = upper_hull(single_points)
    if hi <= lo:
        gap = hull_quality(ours, lo) - hull_quality(zero, lo)
        return Shortfall(1.0 if gap < -1e-12 else 0.0, max(0.0, -gap))
    xs = sorted({lo, hi, *(p.cost for p in [*ours, *zero] if lo < p.cost < hi)})
    gaps = [hull_quality(ours, x) - hull_quality(zero, x) for x in xs]
    below = 0.0
    for (a, b), (ga, gb) in zip(itertools.pairwise(xs), itertools.pairwise(gaps), strict=True):
        if ga < -1e-12 and gb < -1e-12:
            below += b - a
        elif ga < -1e-12 or gb < -1e-12:  # crosses zero once inside [a, b]
            neg, pos = (ga, gb) if ga < gb else (gb, ga)
            below += (b - a) * (-neg) / (pos - neg)
    return Shortfall(below / (hi - lo), max(0.0, -min(gaps)))


def oracle_point(scores: Array, costs: Array) -> Point:
    """Per prompt, the cheapest model among those with the highest score."""
    filled_s = np.where(np.isnan(scores), -np.inf, scores)
    filled_c = np.where(np.isnan(costs), np.inf, costs)
    best = filled_s.max(axis=1, keepdims=True)
    masked_cost = np.where(filled_s >= best, filled_c, np.inf)
    pick = np.argmin(masked_cost, axis=1)
    rows = np.arange(len(pick))
    return Point(float(filled_c[rows, pick].mean()), float(filled_s[rows, pick].mean()))


def routed_point(choice: npt.NDArray[np.int64], scores: Array, costs: Array) -> Point:
    rows = np.arange(len(choice))
    return Point(float(np.mean(costs[rows, choice])), float(np.mean(scores[rows, choice])))
