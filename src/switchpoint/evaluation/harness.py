"""The evaluation harness: fit policies on one split, route another over a λ sweep, report.

:func:`evaluate` answers "how well does this router trade cost for quality on held-out prompts?"
the same way for every policy:

1. Fit each requested policy on ``fit_split`` with :func:`switchpoint.training.fit` (or take a
   fitted :class:`~switchpoint.weights.WeightsPackage`). The prompts of the fit and test splits
   are embedded **once**, and the same vectors serve every policy and the test split.
2. Estimate every test prompt once per policy and decide it at every λ of the sweep with the
   router's own decision rule (:func:`switchpoint.decision.decide`, vectorised; ties to the
   cheaper model), costs divided by the largest global mean cost among the candidate models,
   exactly as :class:`~switchpoint.router.Router` does.
3. Measure each λ's ``(mean cost, mean quality)`` with the true labels and summarise the curve:
   AIQ, QNC, the best quality reached, the cost of matching the best single model; beside them
   the zero router (the hull of the single models), every single model, and the oracle.
4. Break the result down per task at two reference λ (``task_lambdas``, by default λ = 0,
   quality first, and λ = 0.5, the router's default): each policy's quality and cost on the
   task's prompts beside the best single model on that task. Task rows are means over the task's
   prompts, so the ``n``-weighted sum of the task rows is the policy's overall point.

A model a test prompt has no label for is never chosen for it (the oracle does the same).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from switchpoint import training
from switchpoint._messages import json_quoted, listed_names, printable
from switchpoint._progress import ProgressFn, step
from switchpoint.decision import check_cost_weight, decide
from switchpoint.embedding import Embedder, embed_in_steps, embedder_from_id
from switchpoint.errors import InvalidInputError, RecordsError
from switchpoint.evaluation.curves import DEFAULT_LAMBDAS, oracle_sweep
from switchpoint.evaluation.metrics import (
    Point,
    aiq,
    oracle_point,
    qnc,
    routed_point,
    shortfall,
    single_model_points,
    upper_hull,
)
from switchpoint.policies import Estimates, Inputs, Policy, new_policy
from switchpoint.records import RecordSet, load_records
from switchpoint.weights import WeightsPackage

Array = npt.NDArray[np.float64]

#: Policies fitted when none are named: the library default (cluster) and knn.
DEFAULT_POLICIES: tuple[str, ...] = ("cluster", "knn")
#: λ of the per-task breakdown: 0 (quality first) and 0.5 (the Router's default).
TASK_LAMBDAS: tuple[float, ...] = (0.0, 0.5)
NO_TASK = "(none)"


def _num(x: float) -> float | None:
    """A float for JSON: ``None`` stands for infinity or NaN (e.g. QNC "never")."""
    return float(x) if math.isfinite(x) else None


def _lam_key(lam: float) -> str:
    return f"{lam:g}"


@dataclass(frozen=True)
class SweepPoint:
    """What routing the test split at one λ achieved: mean cost (USD) and mean quality."""

    cost_weight: float
    cost: float
    quality: float

    def to_dict(self) -> dict[str, float]:
        return {"cost_weight": self.cost_weight, "cost": self.cost, "quality": self.quality}


@dataclass(frozen=True)
class ModelResult:
    """One single model on the test split."""

    name: str
    cost: float
    quality: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cost": self.cost, "quality": self.quality}


@dataclass
class PolicyResult:
    """One policy's cost-quality curve on the test split and what it adds up to."""

    name: str
    params: dict[str, Any]
    source: str
    aiq: float
    qnc: float
    gain: float
    best_quality: float
    best_quality_cost: float
    match_cost: float
    cost_scale: float
    points: list[SweepPoint]
    hull: list[Point]
    at_lambda: dict[float, Point]
    below_zero_share: float = 0.0
    below_zero_depth: float = 0.0
    fit_seconds: float | None = None
    estimate_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "source": self.source,
            "aiq": self.aiq,
            "qnc": _num(self.qnc),
            "gain_over_zero_router": self.gain,
            "best_quality": self.best_quality,
            "best_quality_cost": self.best_quality_cost,
            "cost_to_match_best_single": _num(self.match_cost),
            "cost_scale": self.cost_scale,
            "below_zero_router": {"share_of_cost_range": self.below_zero_share,
                                  "largest_quality_gap": self.below_zero_depth},
            "at_cost_weight": {
                _lam_key(lam): {"cost": p.cost, "quality": p.quality}
                for lam, p in self.at_lambda.items()
            },
            "points": [p.to_dict() for p in self.points],
            "hull": [{"cost": p.cost, "quality": p.quality} for p in self.hull],
            "fit_seconds": self.fit_seconds,
            "estimate_seconds": self.estimate_seconds,
        }


@dataclass
class TaskResult:
    """One task's prompts: the best single model on them and each policy at the reference λ."""

    task: str
    n: int
    best_model: ModelResult
    overall_best: ModelResult
    policies: dict[str, dict[float, Point]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": self.n,
            "best_model": self.best_model.to_dict(),
            "overall_best_model": self.overall_best.to_dict(),
            "policies": {
                name: {_lam_key(lam): {"cost": p.cost, "quality": p.quality}
                       for lam, p in by_lam.items()}
                for name, by_lam in self.policies.items()
            },
        }


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate` measured; ``to_dict`` for JSON, ``format_table`` for people."""

    records: str
    test_split: str
    fit_split: str | None
    n_fit: int | None
    n_test: int
    embedder: str | None
    models: list[ModelResult]
    best_single: ModelResult
    zero_aiq: float
    zero_qnc: float
    zero_hull: list[Point]
    oracle_aiq: float
    oracle_qnc: float
    oracle: Point
    oracle_curve: list[Point]
    policies: list[PolicyResult]
    tasks: list[TaskResult]
    task_lambdas: tuple[float, ...]
    lambdas: tuple[float, ...]
    embed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cost_range(self) -> tuple[float, float]:
        costs = [m.cost for m in self.models]
        return min(costs), max(costs)

    def policy(self, name: str) -> PolicyResult:
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.cost_range
        return {
            "records": self.records,
            "test_split": self.test_split,
            "fit_split": self.fit_split,
            "n_fit": self.n_fit,
            "n_test": self.n_test,
            "embedder": self.embedder,
            "cost_range": [lo, hi],
            "lambdas": list(self.lambdas),
            "task_cost_weights": list(self.task_lambdas),
            "models": [m.to_dict() for m in self.models],
            "best_single_model": self.best_single.to_dict(),
            "zero_router": {"aiq": self.zero_aiq, "qnc": _num(self.zero_qnc),
                            "hull": [{"cost": p.cost, "quality": p.quality}
                                     for p in self.zero_hull]},
            "oracle": {"aiq": self.oracle_aiq, "qnc": _num(self.oracle_qnc),
                       "cost": self.oracle.cost, "quality": self.oracle.quality,
                       "curve": [{"cost": p.cost, "quality": p.quality}
                                 for p in self.oracle_curve]},
            "policies": [p.to_dict() for p in self.policies],
            "tasks": [t.to_dict() for t in self.tasks],
            "embed_seconds": self.embed_seconds,
            "notes": list(self.notes),
        }

    def format_table(self) -> str:
        """An aligned plain-text report: summary, single models, per-task breakdown."""
        return "\n".join(_format(self))


# Formatting -------------------------------------------------------------------------------------


def _k(cost: float) -> str:
    """Dollars per 1,000 prompts, 3 significant digits."""
    return "never" if not math.isfinite(cost) else f"{cost * 1000:#.3g}"


def _q(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3f}"


def _qnc(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.2f}"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns aligned: the first ``left`` columns flush left, the rest flush right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if i < left else c.rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _format(r: EvaluationReport) -> list[str]:
    fitted = (f"fitted on {json_quoted(r.fit_split)} ({r.n_fit} prompts)" if r.fit_split is not None
              else "given weights")
    lo, hi = r.cost_range
    best = r.best_single
    out = [
        f"{r.records}: {fitted}, tested on {json_quoted(r.test_split)} ({r.n_test} prompts), "
        f"{len(r.models)} models, embedder {r.embedder or '-'}",
        f"best single model: {best.name}, quality {best.quality:.3f} at "
        f"${best.cost * 1000:.3g} per 1k prompts; AIQ averages over ${lo * 1000:.3g}-"
        f"${hi * 1000:.3g} per 1k",
        "",
    ]
    header = ["router", "AIQ", "gain", "QNC", "best q", "$/1k at best q", "$/1k to match best",
              "below zero"]
    rows = []
    for p in r.policies:
        below = "-" if p.below_zero_share == 0 else (
            f"{p.below_zero_share:.0%} by {p.below_zero_depth:.3f}")
        rows.append([p.name, _q(p.aiq), f"{p.gain:+.3f}", _qnc(p.qnc), _q(p.best_quality),
                     _k(p.best_quality_cost), _k(p.match_cost), below])
    rows.append(["zero router (best model per budget)", _q(r.zero_aiq), "+0.000",
                 _qnc(r.zero_qnc), _q(best.quality), _k(best.cost),
                 _k(r.zero_qnc * best.cost), "-"])
    rows.append(["oracle", _q(r.oracle_aiq), f"{r.oracle_aiq - r.zero_aiq:+.3f}",
                 _qnc(r.oracle_qnc), _q(r.oracle.quality), _k(r.oracle.cost),
                 _k(r.oracle_qnc * best.cost), "-"])
    out += _table(header, rows)
    out += ["", "AIQ: mean quality of the cost-quality hull over the single models' cost range; "
                "gain: AIQ minus the zero router's;",
            "QNC: least cost, as a fraction of the best single model's, reaching its quality "
            "(inf = never). Costs in $ per 1,000 prompts.",
            "below zero: share of the cost range where the router's hull is under the zero "
            "router's, and by how much quality at most (- = nowhere).", ""]
    out.append(f"single models on {json_quoted(r.test_split)}:")
    out += _table(["model", "quality", "$/1k"],
                  [[m.name, _q(m.quality), _k(m.cost)]
                   for m in sorted(r.models, key=lambda m: m.cost)])
    out.append("")
    lam_cols = [f"λ={lam:g}" for lam in r.task_lambdas]
    out.append("per task: mean quality / $ per 1k prompts at " + ", ".join(
        f"λ = {lam:g}" for lam in r.task_lambdas) + " (a single model is the same at every λ)")
    header = ["task", "n", "who", *[c for lc in lam_cols for c in (f"{lc} q", f"{lc} $/1k")]]
    rows = []

    def cells(points: Sequence[Point]) -> list[str]:
        return [c for p in points for c in (_q(p.quality), _k(p.cost))]

    n_l = len(r.task_lambdas)
    for t in r.tasks:
        rows.append([printable(t.task), str(t.n), f"best on task: {t.best_model.name}",
                     *cells([Point(t.best_model.cost, t.best_model.quality)] * n_l)])
        rows.append(["", "", f"best overall: {t.overall_best.name}",
                     *cells([Point(t.overall_best.cost, t.overall_best.quality)] * n_l)])
        for name, by_lam in t.policies.items():
            rows.append(["", "", name, *cells([by_lam[lam] for lam in r.task_lambdas])])
    rows.append(["all tasks", str(r.n_test), f"best overall: {best.name}",
                 *cells([Point(best.cost, best.quality)] * n_l)])
    for p in r.policies:
        rows.append(["", "", p.name, *cells([p.at_lambda[lam] for lam in r.task_lambdas])])
    out += _table(header, rows, left=3)
    if r.notes:
        out += ["", *(f"note: {n}" for n in r.notes)]
    return out


# Evaluation -------------------------------------------------------------------------------------


def _check_lambdas(values: Sequence[float] | npt.NDArray[Any], name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)) or (
            len(values) == 0):
        raise InvalidInputError(name, "give a non-empty list of cost weights >= 0")
    return tuple(check_cost_weight(float(v) if isinstance(v, np.floating) else v,
                                   f"{name}[{i}]") for i, v in enumerate(values))


def _best(points: Sequence[ModelResult]) -> ModelResult:
    return max(points, key=lambda m: (m.quality, -m.cost))


def _task_label(task: str) -> str:
    return task or NO_TASK


def _resolve_embedder(embedder: Embedder | str | None, default_id: str) -> Embedder:
    if embedder is None or isinstance(embedder, str):
        return embedder_from_id(embedder or default_id)
    return embedder


def _check_policies(
    policies: Sequence[str | Policy] | None, params: dict[str, dict[str, Any]] | None
) -> list[tuple[str, Policy]]:
    """The unfitted policies ``evaluate`` fits, each with the name the report gives it: each
    named one made with its ``params``, each instance copied
    (:func:`~switchpoint.policies.new_policy`); a bad one, or parameters of none of them,
    refused naming it. Policies of one name given more than once (instances of one class with
    other parameters) are told apart by the parameters they differ in: ``knn(k=5)``."""
    if isinstance(policies, (str, Policy)):
        raise InvalidInputError("policies", "give a list of policies (names or unfitted "
                                            "Policy instances), e.g. ['cluster']")
    given = list(DEFAULT_POLICIES if policies is None else policies)
    if not given:
        raise InvalidInputError("policies", "name at least one policy to fit")
    for i, policy in enumerate(given):
        if not isinstance(policy, (str, Policy)):
            raise InvalidInputError(f"policies[{i}]", "must be a policy's name or an unfitted "
                                                      "Policy instance such as KnnPolicy(k=20), "
                                                      f"got {type(policy).__name__}")
    names = [p if isinstance(p, str) else p.name for p in given]
    dupes = sorted({n for n in names if names.count(n) > 1})
    named_twice = [n for n in dupes if sum(p == n for p in given) > 1]
    if named_twice:
        raise InvalidInputError("policies", f"{listed_names(named_twice, quoted=True)} named "
                                            "more than once: name each policy once (to compare "
                                            "parameters, give instances: [KnnPolicy(k=5), "
                                            "KnnPolicy(k=20)])")
    params = dict(params or {})
    stray = sorted(set(params) - set(names))
    if stray:
        raise InvalidInputError(
            "params", f"parameters given for {listed_names(stray, quoted=True)}, which "
            f"{'is' if len(stray) == 1 else 'are'} not among the policies evaluated "
            f"({listed_names(names, quoted=True)}); give parameters of those, or evaluate "
            f"{'that policy' if len(stray) == 1 else 'those policies'} too")
    made: list[Policy] = []
    for i, (name, policy) in enumerate(zip(names, given, strict=True)):
        own = params.get(name, {})
        if isinstance(policy, Policy) and own:
            raise InvalidInputError(f"params.{name}", (
                f"gives parameters of {json_quoted(name)}, which policies[{i}] gives as the "
                f"instance {type(policy).__name__}, carrying its own; give them to its "
                f"constructor, or name the policy ({json_quoted(name)}) in policies"))
        try:
            made.append(new_policy(policy, own, field=f"policies[{i}]"))
        except InvalidInputError as exc:
            if exc.field not in own:
                raise
            # (which policy's parameter: several policies may take one of that name)
            raise InvalidInputError(f"params.{name}.{exc.field}", exc.reason) from None
    labels = list(names)
    for name in dupes:
        rows = [i for i, n in enumerate(names) if n == name]
        settings = [made[i].get_params() for i in rows]
        keys = sorted({k for p in settings for k in p})
        differ = [k for k in keys if any(p.get(k) != settings[0].get(k) for p in settings)]
        for i, j in itertools.combinations(rows, 2):
            if made[i].get_params() == made[j].get_params():
                raise InvalidInputError(f"policies[{j}]", (
                    f"is {json_quoted(name)} with the same parameters as policies[{i}]; give "
                    "each policy once (instances of one class measure the parameters they "
                    "differ in)"))
        for i, setting in zip(rows, settings, strict=True):
            labels[i] = f"{name}({', '.join(f'{k}={setting.get(k)!r}' for k in differ)})"
    return list(zip(labels, made, strict=True))


def _missing_split(source: str, data: RecordSet, split: str, role: str,
                   flag: str) -> RecordsError:
    """The refusal of records without the split ``evaluate`` would ``role``, saying how to
    give it one."""
    present = sorted({s for s in data.splits if s is not None})
    if present:
        other = "fit on" if role == "measure on" else "measure on"
        fix = (f"splits present: {listed_names(present, quoted=True)}; name the split "
               f"to {role} with {flag} "
               f"({flag[2:].replace('-', '_')}= in Python), another than the one to {other}")
    else:
        fix = ('no record has a "split" field; give each record one, such as "train" or '
               '"test" (a hash of the prompt keeps repeated prompts on one side, as the '
               "conversion of RouterBench in docs/file-formats.md does)")
    return RecordsError(source, None, f"no records in split {json_quoted(split)}, which eval "
                                      f"would {role}; {fix}")


def evaluate(
    records: RecordSet | str | Path,
    *,
    policies: Sequence[str | Policy] | None = None,
    weights: WeightsPackage | None = None,
    fit_split: str | None = None,
    test_split: str = "test",
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    embedder: Embedder | str | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    task_lambdas: Sequence[float] = TASK_LAMBDAS,
    name: str | None = None,
    progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Fit ``policies`` on ``fit_split`` (or take ``weights``) and evaluate on ``test_split``.

    ``records`` is a path or a :class:`RecordSet`; when its ``embeddings`` are set they are used
    as they are (e.g. cached vectors) and nothing is embedded. ``policies`` lists policies by
    name, or as unfitted instances carrying their parameters, as scikit-learn estimators are
    given (``[KnnPolicy(k=20), "cluster"]``; a copy of each is fitted, the instance left as it
    was; a fitted one is refused), each policy once; instances of one class with other
    parameters are compared side by side, named by what they differ in (``knn(k=5)``,
    ``knn(k=20)``). ``params`` holds the constructor
    parameters of the policies named, by policy name, e.g. ``{"cluster": {"n_clusters": 25}}``.
    ``embedder`` defaults to the library's default for fitting and to the weights' own for
    ``weights``. Nothing is fitted or embedded until every argument has been checked.
    ``progress(stage, done, total)`` hears about the embedding and each fit (see
    :mod:`switchpoint._progress`).
    """
    lams = _check_lambdas(lambdas, "lambdas")
    t_lams = _check_lambdas(task_lambdas, "task_lambdas")
    if weights is not None and fit_split is not None:
        raise InvalidInputError("weights", "give either weights to evaluate or fit_split to fit "
                                           "policies on, not both")
    if weights is None and fit_split is None:
        raise InvalidInputError("fit_split", "give fit_split (e.g. 'train') to fit policies, or "
                                             "weights to evaluate")
    if weights is not None and (policies is not None or params):
        raise InvalidInputError("policies", "policies and params only apply when fitting; the "
                                            "weights already hold a fitted policy")
    if fit_split is not None and fit_split == test_split:
        raise InvalidInputError("fit_split", f"is the test split {json_quoted(test_split)}; "
                                             "fitting on the prompts you test on measures "
                                             "nothing: fit on another split, such as train")
    fitting: list[tuple[str, Policy]] = []
    if weights is None:
        fitting = _check_policies(policies, params)

    label = name or (Path(records).name if isinstance(records, (str, Path)) else "records")
    data = load_records(records) if isinstance(records, (str, Path)) else records
    source = str(records) if isinstance(records, (str, Path)) else "records"
    test_rows = [i for i, s in enumerate(data.splits) if s == test_split]
    if not test_rows:
        raise _missing_split(source, data, test_split, "measure on", "--test-split")
    fit_rows = [] if fit_split is None else [i for i, s in enumerate(data.splits)
                                             if s == fit_split]
    if fit_split is not None and not fit_rows:
        raise _missing_split(source, data, fit_split, "fit on", "--fit-split")
    if fit_split is not None:  # (before anything is embedded)
        data.subset(fit_rows).check_labelled(source, fit_split)
    notes: list[str] = []
    data = data.subset(fit_rows + test_rows)

    # Which models can be routed to and measured.
    if weights is not None:
        candidates = [m for m in weights.models if m in data.models]
        if not candidates:
            raise InvalidInputError(
                "weights", "none of the weights' models "
                f"({listed_names(weights.models, quoted=True)}) is labelled in {label}; its "
                f"models are {listed_names(data.models, quoted=True)}")
        unlabelled = [m for m in weights.models if m not in data.models]
        if unlabelled:
            notes.append(f"{listed_names(unlabelled, quoted=True)}"
                         " are in the weights but not labelled in the records; "
                         "routed without them")
        extra = [m for m in data.models if m not in weights.models]
        if extra:
            notes.append(f"{listed_names(extra, quoted=True)}"
                         " are labelled in the records but unknown to the weights; "
                         "left out of the single models and the oracle too")
        data = data.select_models(candidates)
        split = weights.provenance.get("split")
        if split == test_split and weights.provenance.get("records"):
            notes.append(f"these weights were fitted on split {json_quoted(split)} of "
                         f"{weights.provenance['records']}: if that is this file, the test "
                         "prompts leaked into fitting")

    # Embed the fit and test prompts once, shared by every policy.
    requires = ({weights.policy.requires} if weights is not None
                else {p.requires for _, p in fitting})
    emb: Embedder | None = None
    embedder_id: str | None = None
    if weights is not None:
        if "embedding" in requires:
            embedder_id = weights.embedder_id
            if data.embeddings is None:
                emb = _resolve_embedder(embedder, weights.embedder_id)
                if emb.dimension != weights.dimension:
                    raise InvalidInputError(
                        "embedder", f"produces {emb.dimension}-d vectors but the weights "
                        f"expect {weights.dimension}-d ({weights.embedder_id})")
    else:
        emb = _resolve_embedder(embedder, training.DEFAULT_EMBEDDER_ID)
        embedder_id = emb.id if "embedding" in requires else None
    if data.embeddings is not None and "embedding" in requires:
        if embedder is not None:
            embedder_id = embedder if isinstance(embedder, str) else embedder.id
        elif weights is None:
            embedder_id = "pre-computed"
        if weights is not None and data.embeddings.shape[1] != weights.dimension:
            raise InvalidInputError(
                "records", f"the pre-computed embeddings are {data.embeddings.shape[1]}-d but "
                f"the weights expect {weights.dimension}-d ({weights.embedder_id})")
    embed_seconds = 0.0
    if "embedding" in requires and data.embeddings is None:
        assert emb is not None
        stage = (f"embedding {len(data)} prompts ({len(fit_rows)} {fit_split or ''} + "
                 f"{len(test_rows)} {test_split}) with {emb.id}".replace("  ", " "))
        t0 = time.perf_counter()
        data.embeddings = np.asarray(embed_in_steps(emb, list(data.prompts), progress, stage),
                                     dtype=np.float32)
        embed_seconds = time.perf_counter() - t0

    test = data.split(test_split)
    train = data.split(fit_split) if fit_split is not None else None
    if train is not None:
        shared = len(set(train.prompts) & set(test.prompts))
        if shared:
            notes.append(f"{shared} prompt text(s) appear in both {json_quoted(fit_split)} "
                         f"and {json_quoted(test_split)}")
    # A prompt with no label for any candidate cannot be measured.
    labelled = ~np.all(np.isnan(test.scores), axis=1)
    if not labelled.all():
        notes.append(f"{int((~labelled).sum())} test prompt(s) label none of the candidate "
                     "models; left out")
        test = test.subset(np.flatnonzero(labelled))
        if len(test) == 0:
            raise InvalidInputError("records", f"no test prompt labels any of "
                                               f"{listed_names(data.models, quoted=True)}")

    ctx = _TestContext(test, lams, t_lams)
    results: list[PolicyResult] = []
    if weights is not None:
        pol = weights.policy
        results.append(ctx.score(
            pol.name, pol, pol.get_params(),
            f"weights {weights.weights_id}" + (f" ({weights.path})" if weights.path else ""),
            None))
    else:
        assert train is not None
        for pname, unfitted in fitting:
            t0 = time.perf_counter()
            with step(progress, f"fitting {json_quoted(pname)} on {len(train)} {fit_split} "
                                "prompts"):
                package = training.fit(train, policy=unfitted, split=fit_split, embedder=emb)
            fit_s = time.perf_counter() - t0
            results.append(ctx.score(pname, package.policy, package.policy.get_params(),
                                     f"fitted on {json_quoted(fit_split)}", fit_s))
    return ctx.report(label, test_split, fit_split, None if train is None else len(train),
                      embedder_id, results, embed_seconds, notes)


class _TestContext:
    """The test split, its single models, zero router and oracle; scores a policy against it."""

    def __init__(self, test: RecordSet, lambdas: tuple[float, ...],
                 task_lambdas: tuple[float, ...]) -> None:
        self.test = test
        self.lambdas = lambdas
        self.task_lambdas = task_lambdas
        pts = single_model_points(test.scores, test.costs)
        self.single_points = pts
        self.models = [ModelResult(m, p.cost, p.quality)
                       for m, p in zip(test.models, pts, strict=True)]
        self.best = _best(self.models)
        self.zero_aiq = aiq(pts, pts)
        tasks = np.array([_task_label(t) for t in test.tasks])
        self.task_rows = {t: np.flatnonzero(tasks == t) for t in sorted(set(tasks.tolist()))}
        # Each scored policy's choices at the task λ, for the per-task breakdown.
        self.choices: list[tuple[str, dict[float, npt.NDArray[np.int64]]]] = []

    def score(self, name: str, policy: Policy, params: dict[str, Any], source: str,
              fit_seconds: float | None) -> PolicyResult:
        test = self.test
        t0 = time.perf_counter()
        est = policy.estimate(Inputs(texts=list(test.prompts), embeddings=test.embeddings))
        est_s = time.perf_counter() - t0
        scale = _cost_scale(policy, test.models)
        return self.score_choices(
            name, _estimates_rule(est, test.models, scale, _labelled(test)),
            params=params, source=source, cost_scale=scale, fit_seconds=fit_seconds,
            estimate_seconds=est_s)

    def score_choices(
        self, name: str, choose: Callable[[float], npt.NDArray[np.int64]], *,
        params: dict[str, Any], source: str, cost_scale: float, fit_seconds: float | None,
        estimate_seconds: float,
    ) -> PolicyResult:
        test = self.test
        points: list[SweepPoint] = []
        for lam in self.lambdas:
            p = routed_point(choose(lam), test.scores, test.costs)
            points.append(SweepPoint(lam, p.cost, p.quality))
        raw = [Point(p.cost, p.quality) for p in points]
        singles = self.single_points
        cheapest = min(singles, key=lambda p: (p.cost, -p.quality))
        q = qnc(raw, singles)
        top = max(points, key=lambda p: (p.quality, -p.cost))
        at: dict[float, Point] = {}
        chosen: dict[float, npt.NDArray[np.int64]] = {}
        for lam in self.task_lambdas:
            chosen[lam] = choose(lam)
            at[lam] = routed_point(chosen[lam], test.scores, test.costs)
        score = aiq(raw, singles)
        short = shortfall(raw, singles)
        result = PolicyResult(
            name=name, params=params, source=source, aiq=score, qnc=q,
            gain=score - self.zero_aiq, best_quality=top.quality, best_quality_cost=top.cost,
            match_cost=q * self.best.cost, cost_scale=cost_scale, points=points,
            hull=upper_hull([*raw, cheapest]), at_lambda=at, below_zero_share=short.share,
            below_zero_depth=short.depth, fit_seconds=fit_seconds,
            estimate_seconds=estimate_seconds)
        self.choices.append((name, chosen))
        return result

    def report(self, label: str, test_split: str, fit_split: str | None, n_fit: int | None,
               embedder_id: str | None, results: list[PolicyResult], embed_seconds: float,
               notes: list[str]) -> EvaluationReport:
        test = self.test
        singles = self.single_points
        curve = oracle_sweep(test.scores, test.costs, self.lambdas)
        o_point = oracle_point(test.scores, test.costs)
        tasks: list[TaskResult] = []
        for task, rows in self.task_rows.items():
            sub_s, sub_c = test.scores[rows], test.costs[rows]
            pts = single_model_points(sub_s, sub_c)
            on_task = [ModelResult(m, p.cost, p.quality)
                       for m, p in zip(test.models, pts, strict=True)
                       if not (math.isnan(p.cost) or math.isnan(p.quality))]
            j = test.models.index(self.best.name)
            overall = ModelResult(self.best.name, pts[j].cost, pts[j].quality)
            by_policy = {
                pname: {lam: routed_point(choice[rows], sub_s, sub_c)
                        for lam, choice in choices.items()}
                for pname, choices in self.choices
            }
            tasks.append(TaskResult(task, len(rows), _best(on_task), overall, by_policy))
        return EvaluationReport(
            records=label, test_split=test_split, fit_split=fit_split, n_fit=n_fit,
            n_test=len(test), embedder=embedder_id, models=self.models, best_single=self.best,
            zero_aiq=self.zero_aiq, zero_qnc=qnc(singles, singles),
            zero_hull=upper_hull(singles), oracle_aiq=aiq(curve, singles),
            oracle_qnc=qnc(curve, singles), oracle=o_point, oracle_curve=upper_hull(curve),
            policies=results, tasks=tasks, task_lambdas=self.task_lambdas,
            lambdas=self.lambdas, embed_seconds=embed_seconds, notes=notes)


def _labelled(test: RecordSet) -> npt.NDArray[np.bool_]:
    """The candidates of each test prompt: a model the prompt has no label for is never picked
    (the oracle is held to the same)."""
    return np.asarray(~np.isnan(test.scores))


def _cost_scale(policy: Policy, models: Sequence[str]) -> float:
    """The λ scale, as the Router sets it: the largest global mean cost among ``models``."""
    g_cost = policy.global_cost()
    return float(max(g_cost[m] for m in models))


def _estimates_rule(
    est: Estimates, models: Sequence[str], cost_scale: float, candidates: npt.NDArray[np.bool_]
) -> Callable[[float], npt.NDArray[np.int64]]:
    """The router's own decision rule (:func:`switchpoint.decision.decide`) on ``est``'s
    columns for ``models``, at any λ: indices into ``models``."""
    cols = [est.models.index(m) for m in models]
    error = np.asarray(est.error, dtype=np.float64)[:, cols]
    cost = np.asarray(est.cost, dtype=np.float64)[:, cols]
    stderr = None if est.stderr is None else np.asarray(est.stderr, dtype=np.float64)[:, cols]
    return lambda lam: decide(error, cost, candidates, lam, cost_scale, stderr=stderr,
                              pessimism=est.pessimism)


def route_choices(
    policy: Policy, inputs: Inputs, models: Sequence[str], candidates: npt.NDArray[np.bool_],
    lambdas: Sequence[float],
) -> dict[float, npt.NDArray[np.int64]]:
    """What the harness chooses for every row of ``inputs`` at each λ: indices into ``models``
    (a subset or reordering of the policy's models; ``candidates`` is ``(len(models),)`` or one
    row per input)."""
    rule = _estimates_rule(policy.estimate(inputs), models, _cost_scale(policy, models),
                           candidates)
    return {float(lam): rule(float(lam)) for lam in lambdas}


def score_estimates(
    test: RecordSet,
    named: dict[str, Estimates],
    cost_scale: float,
    *,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
) -> dict[str, PolicyResult]:
    """Score estimates made outside :func:`evaluate` (e.g. a peer's) on ``test`` the same way.

    ``named`` maps a label to estimates for every row of ``test``; ``cost_scale`` divides costs
    in the decision rule (the Router uses the largest global mean cost of the candidates).
    """
    ctx = _TestContext(test, _check_lambdas(lambdas, "lambdas"), TASK_LAMBDAS)
    out: dict[str, PolicyResult] = {}
    for label, est in named.items():
        out[label] = ctx.score_choices(
            label, _estimates_rule(est, test.models, cost_scale, _labelled(test)), params={},
            source="estimates", cost_scale=cost_scale, fit_seconds=None, estimate_seconds=0.0)
    return out
