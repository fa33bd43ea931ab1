"""Routing quality: every switchpoint policy beside its peers on the test split of both record sets.

Usage: python benchmarks/quality.py

Every router is fitted (where it learns) on the ``train`` split and measured on ``test`` with the
same metrics (``switchpoint.evaluation``): AIQ, QNC, the best quality it reaches, and its AIQ gain
over the zero router (the best single model for each budget). Embeddings: the library default,
all-MiniLM-L6-v2 on the last 64 word pieces, computed once per machine (``_common``).

Peers:

- **antaris-router** (keyword/length tier classifier, v1 ``Router``), run in ``.venv-peers`` with
  its default classification rules. Its five tiers must be mapped to this data's models; the
  rule used here, generous to it: take the models on the *train* split's single-model frontier
  (no other model is both at most as expensive and at least as good), sorted by mean train cost,
  and send tier ``t`` (trivial = 0 ... expert = 4) to frontier model
  ``round(t * (F - 1) / 4)`` of the ``F``. Each tier is served by exactly one model, so the
  peer's own decision (the tier) fixes the model. That is one operating point. It has no λ; the
  nearest knob is to shift every tier by ``s`` frontier models (clipped at both ends) for
  ``s = -(F-1) .. F-1``, whose points give the "tier shifts" row.
- **OpenTracy-style K-means**: 100 plain (Euclidean, Lloyd) K-means clusters, each model's raw
  mean error and cost per cluster, a cluster with no training prompt filled with the model's
  global mean. Implemented here as a tiny baseline (not in the library).
- **kNN, k = 25** is switchpoint's own ``knn`` policy (its default k).

Reference rows are the figures published in ``../shared/data/README.md`` (int8 MiniLM on the last
256 tokens; K-means with 25 clusters), for comparison only.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
from _common import DATASETS, ROOT, cached_embeddings, dataset_records

from switchpoint.evaluation.harness import EvaluationReport, evaluate, score_estimates
from switchpoint.evaluation.metrics import Point, aiq, qnc, routed_point, single_model_points
from switchpoint.policies import Estimates
from switchpoint.records import RecordSet
from switchpoint.training import DEFAULT_EMBEDDER_ID

PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
TIERS = ["trivial", "simple", "moderate", "complex", "expert"]
POLICIES = ["cluster", "knn", "tiers", "tfidf", "fixed", "random"]
CLUSTER_SEEDS = range(5)

# ../shared/data/README.md, "Reference figures": (AIQ, QNC) per record set.
REFERENCE = {
    "zero router (README)": {"routerbench-3task": (0.823, 1.00),
                             "llmrouter-14task": (0.567, 1.00)},
    "K-means 25, shrunk to global mean (README)": {"routerbench-3task": (0.850, math.inf),
                                                   "llmrouter-14task": (0.599, 0.49)},
    "kNN k=25 (README)": {"routerbench-3task": (0.848, math.inf),
                          "llmrouter-14task": (0.586, 0.54)},
    "oracle (README)": {"routerbench-3task": (0.974, math.nan),
                        "llmrouter-14task": (0.744, math.nan)},
}

# Runs inside .venv-peers: antaris-router's own Router, one placeholder model per tier, so the
# decision it returns is the tier it classified the prompt into. Prompts on stdin, tiers on stdout.
ANTARIS_SCRIPT = r"""
import json, os, sys, tempfile
from antaris_router import Config, Router, __version__
TIERS = ["trivial", "simple", "moderate", "complex", "expert"]
rules = Config().get_classification_rules()          # its default keyword/length rules
models = [{"name": f"tier-{t}", "provider": "bench", "cost_per_1k_input": float(i),
           "cost_per_1k_output": float(i), "capabilities": ["text"], "max_tokens": 10**7,
           "tier": [t]} for i, t in enumerate(TIERS)]
d = tempfile.mkdtemp()
with open(os.path.join(d, "config.json"), "w") as fh:
    json.dump({"models": models, "classification_rules": rules}, fh)
router = Router(config_path=d, enable_cost_tracking=False)
tiers = []
for prompt in json.load(sys.stdin):
    decision = router.route(prompt)
    assert decision.model == f"tier-{decision.tier}", (decision.model, decision.tier)
    tiers.append(decision.tier)
json.dump({"version": __version__, "tiers": tiers}, sys.stdout)
"""


@dataclass
class Row:
    aiq: float
    qnc: float
    best_quality: float
    gain: float


def antaris_tiers(prompts: list[str]) -> tuple[str, list[str]]:
    """antaris-router's tier for every prompt (run in its own venv)."""
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"{PEERS_PYTHON} not found: run scripts/setup-peers first")
    with tempfile.TemporaryDirectory() as cwd:  # it may write state files to the cwd
        proc = subprocess.run([str(PEERS_PYTHON), "-c", ANTARIS_SCRIPT], input=json.dumps(prompts),
                              capture_output=True, text=True, check=True, cwd=cwd)
    out = json.loads(proc.stdout)
    return str(out["version"]), list(out["tiers"])


def frontier(train: RecordSet) -> list[int]:
    """Models no other model beats on train at no more cost, sorted by mean train cost."""
    pts = single_model_points(train.scores, train.costs)
    keep = [j for j, p in enumerate(pts)
            if not any((q.cost <= p.cost and q.quality > p.quality)
                       or (q.cost < p.cost and q.quality >= p.quality) for q in pts)]
    return sorted(keep, key=lambda j: pts[j].cost)


def antaris_rows(train: RecordSet, test: RecordSet, singles: list[Point], zero: float
                 ) -> tuple[Row, Row, list[str]]:
    version, tiers = antaris_tiers(test.prompts)
    level = np.array([TIERS.index(t) for t in tiers])
    front = frontier(train)
    f = len(front)
    base = np.array([round(t * (f - 1) / 4) for t in range(5)])
    points: dict[int, Point] = {}
    for shift in range(-(f - 1), f):
        choice = np.array(front)[np.clip(base + shift, 0, f - 1)][level].astype(np.int64)
        points[shift] = routed_point(choice, test.scores, test.costs)
    one = points[0]
    single_row = Row(aiq([one], singles), qnc([one], singles), one.quality,
                     aiq([one], singles) - zero)
    allp = list(points.values())
    shift_row = Row(aiq(allp, singles), qnc(allp, singles), max(p.quality for p in allp),
                    aiq(allp, singles) - zero)
    counts = {t: tiers.count(t) for t in TIERS}
    mapping = ", ".join(f"{t}->{test.models[front[int(b)]]}" for t, b in zip(TIERS, base,
                                                                             strict=True))
    info = [f"antaris-router {version}: tiers on test {counts}",
            f"  mapping (train frontier, {f} models): {mapping}",
            f"  as mapped: cost ${one.cost * 1000:.3g}/1k prompts, quality {one.quality:.3f}; "
            f"tier shifts {-(f - 1)}..{f - 1} give {len(allp)} points"]
    return single_row, shift_row, info


def lloyd_kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Plain Euclidean K-means (random data points as seeds); may leave clusters empty."""
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), size=k, replace=False)].astype(np.float64)
    for _ in range(iters):
        labels = nearest(x, centroids)
        for c in range(k):
            members = x[labels == c]
            if len(members):
                centroids[c] = members.mean(axis=0)
    return centroids


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (x.astype(np.float64) ** 2).sum(1)[:, None] - 2 * x @ centroids.T \
        + (centroids ** 2).sum(1)[None, :]
    return np.argmin(d, axis=1)


def opentracy_kmeans(train: RecordSet, test: RecordSet, k: int = 100) -> tuple[Estimates, float,
                                                                             int]:
    assert train.embeddings is not None and test.embeddings is not None
    centroids = lloyd_kmeans(train.embeddings, k)
    labels = nearest(train.embeddings, centroids)
    err = 1.0 - train.scores
    g_err, g_cost = np.nanmean(err, axis=0), np.nanmean(train.costs, axis=0)
    c_err = np.tile(g_err, (k, 1))
    c_cost = np.tile(g_cost, (k, 1))
    empty = 0
    for c in range(k):
        rows = labels == c
        if rows.any():  # raw per-cluster means, no shrinkage
            c_err[c] = np.nanmean(err[rows], axis=0)
            c_cost[c] = np.nanmean(train.costs[rows], axis=0)
        else:
            empty += 1  # silently the global mean, as the peer does
    t = nearest(test.embeddings, centroids)
    n = len(test)
    est = Estimates(models=list(train.models), error=c_err[t], cost=c_cost[t],
                    support=np.ones((n, len(train.models))), unit_ids=t.astype(np.int64),
                    unit_kind="cluster")
    return est, float(g_cost.max()), empty


def row(report: EvaluationReport, name: str) -> Row:
    p = report.policy(name)
    return Row(p.aiq, p.qnc, p.best_quality, p.gain)


def measure(name: str) -> tuple[dict[str, Row], list[str]]:
    rs = dataset_records(name)
    rs.embeddings = cached_embeddings(name, rs.prompts, DEFAULT_EMBEDDER_ID)
    train, test = rs.split("train"), rs.split("test")

    def run(policies: list[str], params: dict[str, dict[str, object]] | None = None
            ) -> EvaluationReport:
        return evaluate(rs, policies=policies, params=params, fit_split="train",
                        embedder=DEFAULT_EMBEDDER_ID, name=name)

    main = run(POLICIES)
    hard = run(["cluster"], {"cluster": {"assignment": "hard"}})
    seeds = [run(["cluster"], {"cluster": {"random_state": s}}).policy("cluster").aiq
             for s in CLUSTER_SEEDS]
    singles = single_model_points(test.scores, test.costs)
    zero = main.zero_aiq
    rows = {
        "switchpoint cluster (default: soft)": row(main, "cluster"),
        "switchpoint cluster (hard assignment)": row(hard, "cluster"),
        "switchpoint knn (k=25)": row(main, "knn"),
        "switchpoint tiers": row(main, "tiers"),
        "switchpoint tfidf": row(main, "tfidf"),
        "switchpoint fixed (best single on train)": row(main, "fixed"),
        "switchpoint random": row(main, "random"),
    }
    one, shifts, info = antaris_rows(train, test, singles, zero)
    rows["antaris-router, tiers as mapped (1 point)"] = one
    rows["antaris-router, tier shifts"] = shifts
    est, scale, empty = opentracy_kmeans(train, test)
    ot = score_estimates(test, {"ot": est}, scale)["ot"]
    rows["OpenTracy-style K-means 100, raw means"] = Row(ot.aiq, ot.qnc, ot.best_quality, ot.gain)
    rows["zero router (best single per budget)"] = Row(zero, main.zero_qnc,
                                                      main.best_single.quality, 0.0)
    rows["oracle"] = Row(main.oracle_aiq, main.oracle_qnc, main.oracle.quality,
                         main.oracle_aiq - zero)
    info.append(f"OpenTracy-style K-means: {empty} of 100 clusters empty on train "
                "(filled with the global mean)")
    info.append(f"cluster (default) AIQ over k-means seeds {CLUSTER_SEEDS.start}-"
                f"{CLUSTER_SEEDS.stop - 1}: mean {np.mean(seeds):.3f}, "
                f"min {min(seeds):.3f}, max {max(seeds):.3f}")
    return rows, info


def fmt(r: Row | None) -> str:
    if r is None:
        return f"{'':>6} {'':>5} {'':>6} {'':>6}"
    q = "inf" if math.isinf(r.qnc) else ("" if math.isnan(r.qnc) else f"{r.qnc:.2f}")
    b = "" if math.isnan(r.best_quality) else f"{r.best_quality:.3f}"
    g = "" if math.isnan(r.gain) else f"{r.gain:+.3f}"
    return f"{r.aiq:6.3f} {q:>5} {b:>6} {g:>6}"


def main() -> None:
    names = list(DATASETS)
    results = {}
    infos = {}
    for name in names:
        results[name], infos[name] = measure(name)
    labels = list(results[names[0]])
    width = max(len(x) for x in [*labels, *REFERENCE]) + 2
    col = f"{'AIQ':>6} {'QNC':>5} {'best q':>6} {'gain':>6}"
    print(f"# test splits, fitted on train; embedder {DEFAULT_EMBEDDER_ID}; gain = AIQ minus "
          "the zero router's")
    print(f"{'':<{width}}" + "   ".join(f"{n:<27}" for n in names))
    print(f"{'router':<{width}}" + "   ".join(col for _ in names))
    for label in labels:
        print(f"{label:<{width}}" + "   ".join(fmt(results[n][label]) for n in names))
    print("# reference figures from ../shared/data/README.md (int8 MiniLM, last 256 tokens)")
    for label, by_set in REFERENCE.items():
        cells = []
        for n in names:
            a, q = by_set[n]
            zero = REFERENCE["zero router (README)"][n][0]
            cells.append(fmt(Row(a, q, math.nan, a - zero)))
        print(f"{label:<{width}}" + "   ".join(cells))
    for n in names:
        print(f"# {n}:")
        for line in infos[n]:
            print(f"#   {line}")


if __name__ == "__main__":
    main()
