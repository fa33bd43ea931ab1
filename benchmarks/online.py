"""Online learning from outcomes: a router fitted on a tenth of train learns from live traffic.

Protocol, per record set:

1. Fit the cluster policy on the first 10% of the train split in file order (the static-10%
   router). The train split is stored task by task, so that tenth holds only the first task(s):
   the rest of the stream brings traffic the router has never seen.
2. Replay the remaining 90% of train, in order, as live traffic through the library:
   ``Router.route(embedding=..)`` at the router's default λ (0.5), then
   ``Router.report_outcome(decision_id, quality, cost=cost)`` with the quality of the model
   *served* only (bandit feedback: the other models' labels are never read) and what its answer
   cost, as a gateway measures for every answer it serves (``--quality-only`` leaves the cost
   out, so only the weights' costs are known). Exploration: 30% of decisions go
   to the other candidate with the least evidence behind its estimate for the prompt
   (``LearningSettings(exploration=0.3, seed=..)``).
3. Every 500 events, AIQ on the test split of the learned router (the deployment's posterior,
   decided with the harness's rule, as ``switchpoint eval`` would).
4. What the stream's own traffic got while the router learned and explored (mean quality, cost
   and their score at the live λ), beside what the static router would have served it.

The static fit is made with k-means seeds 0-2 (``--kmeans-seeds``), and every exploration seed
learns from each of them. One k-means seed alone moves the static-10% router's test AIQ by up to
0.011 (seed 0 is the best of six on RouterBench test): judged against one lucky static fit,
learning looks worse than it is, and against an unlucky one, better. Each learning router is
compared with the static router it started from.

Printed beside it, from the same run: the static-10% routers (their mean), "all labels" (the
same overlay fed every model's label on the events so far: what the traffic teaches with full
information, so a dip the learning routers share with it is the traffic's, not the bandit
feedback's) and the full-information fit on 100% of train (every model's label on every
prompt; the mean over k-means seeds 0-2). "Closed" is the share of the gap between them that
the online routers have closed, on average, at the end of the stream. The lowest checkpoint of
any run against its static router comes with the 95% interval of that difference over test sets
resampled from the test prompts (a paired bootstrap): how much of it the test set's sampling
alone could make. As the lowest of every run's every checkpoint it is also given the
family-wise interval over all of them (Bonferroni): with many runs, some fall outside their
own 95% interval by chance.
Then where a router's AIQ is lost: the AIQ its choices within each task would reach if every
task's prompts were spent on at the rate best for the whole set (see ``allocated_aiq``),
beside its routed AIQ. The gap between the two is what its error estimates' scale across tasks
costs: whether an upgrade to a dearer model on one task's prompts is weighed on the same scale
as on another's.

Two tenants (``--tenants``): train is split by task mix (each task has a home tenant, which
gets 80% of the task's prompts; the other tenant the rest), the stream is reported per tenant,
and each tenant's test prompts (a test prompt without a task label takes the task of its nearest
train prompt) are routed by: the static global router; the global router
learned from all traffic pooled; the tenant's own overlay; its overlay plus its
nearest-neighbour memory.

``--validate`` runs the same protocol with a random fifth of train held out as the evaluation
set instead of test (how the settings above were chosen; the test split is not read).

Usage: python benchmarks/online.py [--seeds 3] [--kmeans-seeds 3] [--tenants] [--validate]
       [--quality-only]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from _common import (
    DATASETS,
    DEFAULT_EMBEDDER,
    embedded_records,
    paired_aiq_interval,
    routed_aiq,
    routed_choices,
)

from switchpoint.decision import decide
from switchpoint.evaluation.curves import DEFAULT_LAMBDAS
from switchpoint.evaluation.metrics import (
    Point,
    aiq,
    area_mean,
    routed_point,
    single_model_points,
    upper_hull,
)
from switchpoint.learning import LearningSettings
from switchpoint.learning.events import FeedbackEvent
from switchpoint.learning.overlay import ClusterOverlay
from switchpoint.learning.tenant_memory import TenantKnnMemory
from switchpoint.learning.tenant_router import TenantRouter
from switchpoint.policies import ClusterPolicy, Inputs, Policy
from switchpoint.records import RecordSet
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage

CHECKPOINT = 500
EXPLORATION = 0.3
LIVE_COST_WEIGHT = 0.5


class _NoEmbedder:
    """The stream arrives as vectors; nothing is embedded."""

    id = DEFAULT_EMBEDDER
    dimension = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("the benchmark routes pre-computed vectors only")


def fit_cluster(rs: RecordSet, kmeans_seed: int = 0) -> ClusterPolicy:
    return ClusterPolicy(random_state=kmeans_seed).fit(Inputs(embeddings=rs.embeddings),
                                                       rs.scores, rs.costs, rs.models)


SETTINGS: dict[str, float] = {"exploration": EXPLORATION, "novelty_threshold": 0.4}
#: Whether outcomes say what the served answer cost (``--quality-only``: they do not).
REVEAL_COST = {"cost": True}


def make_router(policy: Policy, seed: int) -> Router:
    package = WeightsPackage(policy=policy, embedder_id=DEFAULT_EMBEDDER, dimension=384)
    return Router(package, embedder=_NoEmbedder(), cost_weight=LIVE_COST_WEIGHT, cache_size=0,
                  learning=LearningSettings(seed=seed, exploration=SETTINGS["exploration"],
                                            novelty_threshold=SETTINGS["novelty_threshold"]))


def stream(router: Router, live: RecordSet, tenants: Sequence[str | None] | None = None,
           on_checkpoint: Callable[[int], None] | None = None) -> np.ndarray:
    """Route every prompt of ``live`` in order and report the served model's quality (and what
    its answer cost, unless ``--quality-only``); returns the index of the model served for
    each prompt."""
    assert live.embeddings is not None
    served = np.empty(len(live), dtype=np.int64)
    for i in range(len(live)):
        tenant = None if tenants is None else tenants[i]
        d = router.route(embedding=live.embeddings[i], tenant=tenant)
        served[i] = live.models.index(d.selected_model)
        cost = float(live.costs[i, served[i]]) if REVEAL_COST["cost"] else None
        router.report_outcome(d.decision_id, float(live.scores[i, served[i]]),
                              cost=cost if cost is not None and np.isfinite(cost) else None)
        if on_checkpoint and ((i + 1) % CHECKPOINT == 0 or i + 1 == len(live)):
            on_checkpoint(i + 1)
    return served


def labelled_curve(policy: ClusterPolicy, live: RecordSet, test: RecordSet) -> dict[int, float]:
    """Test AIQ at each checkpoint of the same overlay fed *every* model's label (and cost) on
    the events so far: what the same traffic teaches with full information. Beside a learning
    router's curve it splits a dip into what the traffic itself says (this curve dips too) and
    what learning from one model's outcome per prompt adds to it."""
    assert live.embeddings is not None
    overlay = ClusterOverlay(policy, novelty_threshold=SETTINGS["novelty_threshold"])
    curve: dict[int, float] = {}
    for i in range(len(live)):
        vector = tuple(float(v) for v in live.embeddings[i])
        for j, model in enumerate(live.models):
            quality, cost = live.scores[i, j], live.costs[i, j]
            if np.isfinite(quality):
                overlay.apply(FeedbackEvent(
                    decision_id=f"{i}/{j}", model=model, quality=float(quality),
                    embedding=vector, measured_cost=float(cost)
                    if REVEAL_COST["cost"] and np.isfinite(cost) else None))
        if (i + 1) % CHECKPOINT == 0 or i + 1 == len(live):
            curve[i + 1] = routed_aiq(overlay.posterior(), test)
    return curve


def cost_scale(policy: Policy, models: Sequence[str]) -> float:
    """What λ = 1 weighs as one unit of error: the dearest model's mean cost (the router's rule
    without catalog prices)."""
    return float(max(policy.global_cost()[m] for m in models))


def traffic(live: RecordSet, served: np.ndarray, scale: float) -> tuple[float, float, float]:
    """What the stream's own traffic got: mean quality, mean cost and their score at the live
    λ (quality − λ·cost/scale, the router's own trade-off)."""
    rows = np.arange(len(live))
    quality = float(np.nanmean(live.scores[rows, served]))
    cost = float(np.nanmean(live.costs[rows, served]))
    return quality, cost, quality - LIVE_COST_WEIGHT * cost / scale


def test_tasks(train: RecordSet, test: RecordSet) -> list[str]:
    """Each test prompt's task (llmrouter's test split has no task labels: a prompt takes the
    task of its nearest train prompt)."""
    if all(test.tasks):
        return list(test.tasks)
    assert test.embeddings is not None and train.embeddings is not None
    nearest = np.argmax(test.embeddings @ train.embeddings.T, axis=1)
    return [train.tasks[i] for i in nearest]


def allocated_aiq(policy: Policy, test: RecordSet, tasks: Sequence[str]) -> float:
    """Test AIQ if every task's prompts were routed at the rate best for the whole set: each
    task's own frontier (its routed points over every λ), the frontiers' segments spent in
    order of quality bought per dollar. Beside the routed AIQ it splits what a router loses
    into its choices within each task and how it weighs an upgrade to a dearer model on one
    task's prompts against another's (whether its errors are on one scale across tasks)."""
    choices, scores, costs = routed_choices(policy, test)
    labels = np.asarray(tasks)
    start = Point(0.0, 0.0)
    segments: list[tuple[float, float, float]] = []  # (slope, Δcost, Δquality), weighted
    for task in dict.fromkeys(tasks):
        rows = np.flatnonzero(labels == task)
        share = len(rows) / len(test)
        hull = upper_hull([routed_point(c[rows], scores[rows], costs[rows])
                           for c in choices.values()])
        start = Point(start.cost + share * hull[0].cost, start.quality + share * hull[0].quality)
        segments += [((b.quality - a.quality) / (b.cost - a.cost), share * (b.cost - a.cost),
                      share * (b.quality - a.quality)) for a, b in itertools.pairwise(hull)]
    frontier = [start]
    for _, dc, dq in sorted(segments, key=lambda s: -s[0]):
        frontier.append(Point(frontier[-1].cost + dc, frontier[-1].quality + dq))
    singles = single_model_points(test.scores, test.costs)
    cheapest = min(singles, key=lambda p: (p.cost, -p.quality))
    return area_mean(upper_hull([*frontier, cheapest]), min(p.cost for p in singles),
                     max(p.cost for p in singles))


def online_run(name: str, train: RecordSet, test: RecordSet, seeds: int,
               kmeans_seeds: int = 3) -> None:
    n_fit = len(train) // 10
    first, live = train.subset(np.arange(n_fit)), train.subset(np.arange(n_fit, len(train)))
    statics = [fit_cluster(first, k) for k in range(kmeans_seeds)]
    static_aiq = [routed_aiq(p, test) for p in statics]
    static = float(np.mean(static_aiq))
    full_policies = [fit_cluster(train, k) for k in range(3)]
    fulls = [routed_aiq(p, test) for p in full_policies]
    full = float(np.mean(fulls))
    tasks = test_tasks(train, test)
    allocated: list[float] = []  # each learning router's, at the end of the stream
    print(f"\n{name}: static-10% fitted on {n_fit} prompts ({', '.join(dict.fromkeys(first.tasks))}"
          f"), stream of {len(live)}; test {len(test)} prompts; {seeds} exploration seeds on "
          f"each of {kmeans_seeds} k-means seeds; outcomes give the served model's quality"
          + (" and its answer's cost" if REVEAL_COST["cost"] else " only"))
    print(f"{'events':>7} {'static-10%':>10} " + " ".join(f"{'k-means ' + str(k):>10}"
                                                         for k in range(kmeans_seeds))
          + f" {'mean':>8} {'all labels':>10} {'full 100%':>9}")
    # curves[k][seed][events]: test AIQ of the router learning on k-means seed k's static fit.
    curves: list[list[dict[int, float]]] = []
    served: list[tuple[float, float, float]] = []
    scale = cost_scale(statics[0], live.models)
    # The lowest checkpoint of any run against its static router: (difference, learned
    # policy, k-means seed, exploration seed, events).
    lowest: list[tuple[float, Policy, int, int, int]] = []
    t0 = time.perf_counter()
    for k, policy in enumerate(statics):
        runs: list[dict[int, float]] = []
        for seed in range(seeds):
            router = make_router(policy, seed)
            curve: dict[int, float] = {}

            def checkpoint(events: int, r: Router = router, c: dict[int, float] = curve,
                           k: int = k, seed: int = seed) -> None:
                learned = r.learner.policy_for("default")[0]
                c[events] = routed_aiq(learned, test)
                if not lowest or c[events] - static_aiq[k] < lowest[0][0]:
                    lowest[:] = [(c[events] - static_aiq[k], learned, k, seed, events)]

            served.append(traffic(live, stream(router, live, on_checkpoint=checkpoint), scale))
            runs.append(curve)
            allocated.append(allocated_aiq(router.learner.policy_for("default")[0], test, tasks))
            done = k * seeds + seed + 1
            print(f"  {name}: run {done} of {kmeans_seeds * seeds} (k-means seed {k}, "
                  f"exploration seed {seed}) learned; {time.perf_counter() - t0:.0f} s so far",
                  file=sys.stderr, flush=True)
        curves.append(runs)
    checkpoints = list(curves[0][0])
    labelled = [labelled_curve(p, live, test) for p in statics]
    for events in checkpoints:
        per_k = [float(np.mean([run[events] for run in runs])) for runs in curves]
        print(f"{events:>7} {static:10.4f} " + " ".join(f"{v:10.4f}" for v in per_k)
              + f" {np.mean(per_k):8.4f} {np.mean([c[events] for c in labelled]):10.4f}"
              f" {full:9.4f}")
    end = checkpoints[-1]
    ends = [run[end] for runs in curves for run in runs]
    # Each learning router against the static router it started from.
    worst, worst_policy, worst_k, worst_seed, worst_events = lowest[0]
    low, high = paired_aiq_interval(worst_policy, statics[worst_k], test)
    # It is the lowest of every run's every checkpoint: judged as one of that many.
    family = len(checkpoints) * sum(len(runs) for runs in curves)
    family_low, family_high = paired_aiq_interval(worst_policy, statics[worst_k], test,
                                                  comparisons=family)
    mean_worst = min(float(np.mean([run[e] - static_aiq[k] for k, runs in enumerate(curves)
                                    for run in runs])) for e in checkpoints)
    gap = full - static
    closed = [(float(np.mean([run[end] for run in runs])) - static_aiq[k]) / (full - static_aiq[k])
              for k, runs in enumerate(curves)]
    print(f"static-10% by k-means seed: {', '.join(f'{v:.4f}' for v in static_aiq)}; full 100% "
          f"by k-means seed: {', '.join(f'{f:.4f}' for f in fulls)} (their means are the "
          f"columns); online at the end: {np.mean(ends):.4f}")
    print(f"closed at the end: {(np.mean(ends) - static) / gap:.0%} of the gap full - static "
          f"{gap:+.4f} (by k-means seed: " + ", ".join(f"{c:.0%}" for c in closed)
          + f"); lowest checkpoint minus the static router it learned from: {worst:+.4f} (any "
          f"run), {mean_worst:+.4f} (the mean over runs); "
          f"{(time.perf_counter() - t0) / (seeds * kmeans_seeds):.0f} s per run")
    print(f"the lowest checkpoint of any run (k-means seed {worst_k}, exploration seed "
          f"{worst_seed}, {worst_events} events), {worst:+.4f}, against what this test set's "
          f"sampling alone makes of the same two routers: 95% interval [{low:+.4f}, {high:+.4f}] "
          f"(paired bootstrap over the test prompts); as the lowest of {family} run "
          f"checkpoints, family-wise (Bonferroni): [{family_low:+.4f}, {family_high:+.4f}]; the "
          f"same events with every model's label: "
          f"{labelled[worst_k][worst_events] - static_aiq[worst_k]:+.4f}")
    static_allocated = np.mean([allocated_aiq(p, test, tasks) for p in statics])
    full_allocated = np.mean([allocated_aiq(p, test, tasks) for p in full_policies])
    print(f"each task's prompts spent at the best rate for the whole set (the routers' choices "
          f"within each task alone; routed AIQ in brackets): static-10% {static_allocated:.4f} "
          f"({static:.4f}), online at the end {np.mean(allocated):.4f} ({np.mean(ends):.4f}), "
          f"full 100% {full_allocated:.4f} ({full:.4f})")
    fixed = np.mean([traffic(live, policy_choices(p, live)(LIVE_COST_WEIGHT), scale)
                     for p in statics], axis=0)
    q, c, score = np.mean(served, axis=0)
    print(f"the stream's own traffic at λ {LIVE_COST_WEIGHT}: learning router (exploring "
          f"{SETTINGS['exploration']:.0%}) quality {q:.4f}, cost {c * 1e3:.4f} m$/prompt, score "
          f"{score:+.4f}; the static router on the same prompts {fixed[0]:.4f}, "
          f"{fixed[1] * 1e3:.4f} m$/prompt, score {fixed[2]:+.4f}")


# Two tenants ------------------------------------------------------------------------------------


def tenant_of_tasks(tasks: Sequence[str], seed: int = 0) -> np.ndarray:
    """Each task's home tenant alternates over the sorted tasks; a prompt goes to its task's
    home tenant with probability 0.8."""
    order = sorted(set(tasks))
    home = np.array([order.index(t) % 2 for t in tasks])
    flip = np.random.default_rng(seed).random(len(tasks)) >= 0.8
    return np.where(flip, 1 - home, home)


def tenant_aiq(choices: Callable[[float], np.ndarray], sub: RecordSet,
               singles: list) -> float:  # type: ignore[type-arg]
    points = [routed_point(choices(lam), sub.scores, sub.costs) for lam in DEFAULT_LAMBDAS]
    return aiq(points, singles)


def policy_choices(policy: Policy, sub: RecordSet) -> Callable[[float], np.ndarray]:
    est = policy.estimate(Inputs(embeddings=sub.embeddings))
    cols = [est.models.index(m) for m in sub.models]
    scale = cost_scale(policy, sub.models)
    err, cost = est.error[:, cols], est.cost[:, cols]
    se = None if est.stderr is None else est.stderr[:, cols]
    every = np.ones(len(sub.models), dtype=bool)
    return lambda lam: decide(err, cost, every, lam, scale, stderr=se, pessimism=est.pessimism)


def memory_choices(tr: TenantRouter, tenant: str, sub: RecordSet
                   ) -> Callable[[float], np.ndarray]:
    """The tenant router's choices: its memory where it answers, else its learned router."""
    assert sub.embeddings is not None
    vectors = sub.embeddings
    policy = tr.router.learner.policy_for(tenant)[0]
    routed = policy_choices(policy, sub)
    est = policy.estimate(Inputs(embeddings=sub.embeddings))
    cols = [est.models.index(m) for m in sub.models]
    scale = tr.router.cost_scale()
    costs = est.cost[:, cols] / scale

    def choose(lam: float) -> np.ndarray:
        base = routed(lam)
        out = base.copy()
        for i in range(len(sub)):
            norm = dict(zip(sub.models, costs[i], strict=True))
            choice = tr.memory.suggest(tenant, vectors[i], sub.models, norm,
                                       sub.models[base[i]], cost_weight=lam)
            if choice.model is not None:
                out[i] = sub.models.index(choice.model)
        return out

    return choose


def tenant_run(name: str, train: RecordSet, test: RecordSet) -> None:
    n_fit = len(train) // 10
    first, live = train.subset(np.arange(n_fit)), train.subset(np.arange(n_fit, len(train)))
    static_policy = fit_cluster(first)
    owners = tenant_of_tasks(train.tasks)[n_fit:]
    names = ["tenant-a", "tenant-b"]
    order = sorted(set(train.tasks))
    test_home = np.array([order.index(t) % 2 for t in test_tasks(train, test)])
    test_owner = np.where(np.random.default_rng(1).random(len(test)) >= 0.8, 1 - test_home,
                          test_home)
    pooled = make_router(static_policy, seed=0)
    stream(pooled, live)
    per_tenant = TenantRouter(make_router(static_policy, seed=0), TenantKnnMemory())
    stream(per_tenant.router, live, tenants=[names[o] for o in owners])
    print(f"\n{name}: two tenants by task mix (stream: {np.bincount(owners).tolist()} events, "
          f"test: {np.bincount(test_owner).tolist()} prompts)")
    print(f"{'tenant':<9} {'static global':>13} {'global learned (pooled)':>23} "
          f"{'own overlay':>11} {'overlay + memory':>16} {'memory answers':>14}")
    for t, tenant in enumerate(names):
        sub = test.subset(np.flatnonzero(test_owner == t))
        singles = single_model_points(sub.scores, sub.costs)
        row = [
            tenant_aiq(policy_choices(static_policy, sub), sub, singles),
            tenant_aiq(policy_choices(pooled.learner.policy_for("default")[0], sub), sub,
                       singles),
            tenant_aiq(policy_choices(per_tenant.router.learner.policy_for(tenant)[0], sub),
                       sub, singles),
            tenant_aiq(memory_choices(per_tenant, tenant, sub), sub, singles),
        ]
        answered = _memory_share(per_tenant, tenant, sub)
        print(f"{tenant:<9} {row[0]:13.4f} {row[1]:23.4f} {row[2]:11.4f} {row[3]:16.4f} "
              f"{answered:14.0%}")


def _memory_share(tr: TenantRouter, tenant: str, sub: RecordSet) -> float:
    """Share of the tenant's test prompts the memory answers at the live λ."""
    assert sub.embeddings is not None
    policy = tr.router.learner.policy_for(tenant)[0]
    est = policy.estimate(Inputs(embeddings=sub.embeddings))
    costs = est.cost / tr.router.cost_scale()
    answered = 0
    for i in range(len(sub)):
        norm = dict(zip(est.models, costs[i], strict=True))
        incumbent = est.models[int(np.argmin(est.error[i] + LIVE_COST_WEIGHT * costs[i]))]
        choice = tr.memory.suggest(tenant, sub.embeddings[i], est.models, norm, incumbent,
                                   cost_weight=LIVE_COST_WEIGHT)
        answered += choice.model is not None
    return answered / max(len(sub), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="exploration seeds")
    parser.add_argument("--kmeans-seeds", type=int, default=3,
                        help="static fits (k-means seeds 0..N-1), each learned from by every "
                             "exploration seed")
    parser.add_argument("--tenants", action="store_true", help="also the two-tenant run")
    parser.add_argument("--validate", action="store_true",
                        help="evaluate on a held-out fifth of train instead of test")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--exploration", type=float, default=EXPLORATION)
    parser.add_argument("--novelty", type=float, default=0.4)
    parser.add_argument("--quality-only", action="store_true",
                        help="outcomes give the served model's quality only, not its cost")
    args = parser.parse_args()
    SETTINGS.update(exploration=args.exploration, novelty_threshold=args.novelty)
    REVEAL_COST["cost"] = not args.quality_only
    for name in args.datasets.split(","):
        rs = embedded_records(name)
        train, test = rs.split("train"), rs.split("test")
        if args.validate:
            keep = np.random.default_rng(7).random(len(train)) < 0.8
            train, test = train.subset(np.flatnonzero(keep)), train.subset(
                np.flatnonzero(~keep))
        online_run(name, train, test, args.seeds, args.kmeans_seeds)
        if args.tenants:
            tenant_run(name, train, test)


if __name__ == "__main__":
    main()
