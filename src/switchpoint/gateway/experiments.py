"""Experiments: arms assigned by a hash of the session (or request), so a conversation stays
in its arm, and each arm's report (mean feedback quality with its 95% interval, mean cost, and
a winner once the evidence is there).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchpoint._args import expect
from switchpoint._messages import json_quoted, listed_names
from switchpoint.catalog import usd
from switchpoint.config import Settings
from switchpoint.errors import ConflictError, InvalidInputError, NotFoundError
from switchpoint.learning.config import ArmConfig, ExperimentConfig
from switchpoint.store.learning import LearningReader


@dataclass(frozen=True)
class Assignment:
    """The experiment arm one request was assigned to."""

    experiment: str
    arm: str
    config: ArmConfig


def _unit_interval(*parts: str) -> float:
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class Experiments:
    """The configured experiments, with the arms promoted at run time."""

    def __init__(self, settings: Settings, promoted: Mapping[str, str]) -> None:
        self.settings = settings
        self.promoted = dict(promoted)

    def assign(self, tenant: str, unit: str) -> Assignment | None:
        """The arm for a request of ``tenant`` whose session (or request) is ``unit``: in the
        experiment the tenant takes part in (:func:`joined`), by a hash of the unit (so the
        same session always lands in the same arm); a promoted experiment sends everyone to
        its winner."""
        name = joined(self.settings, tenant)
        if name is None:
            return None
        experiment = self.settings.experiments[name]
        promoted = self.promoted.get(name)
        if promoted in experiment.arms:
            assert promoted is not None
            return Assignment(name, promoted, experiment.arms[promoted])
        total = sum(a.weight for a in experiment.arms.values())
        point = _unit_interval(name, unit) * total
        chosen = list(experiment.arms)[-1]
        for arm, config in experiment.arms.items():
            if point < config.weight:
                chosen = arm
                break
            point -= config.weight
        return Assignment(name, chosen, experiment.arms[chosen])


def joined(settings: Settings, tenant: str) -> str | None:
    """The experiment ``tenant``'s requests take part in: the first enabled one (in the
    config's order) whose scope holds the tenant; None when none does."""
    for name, experiment in settings.experiments.items():
        if experiment.enabled and (experiment.tenants is None or tenant in experiment.tenants):
            return name
    return None


#: How an experiment is made at run time, for the errors that say so.
CREATE_HINT = "create one at run time (Gateway.create_ab_test, POST /v1/router/experiments)"


def check_experiment(settings: Settings, name: object, tenant: str, field: str,
                     ended: Mapping[str, tuple[ExperimentConfig, float]] | None = None) -> str:
    """``name`` as the experiment a request of ``tenant`` takes part in (:func:`joined`);
    else an :class:`~switchpoint.errors.InvalidInputError` naming ``field``, saying why it is
    not (not one of the tenant's, ended, disabled, another taking it first) and what to do.
    An experiment that does not take the tenant is refused as one that does not exist, and
    only the tenant's own experiments are named: a tenant's caller learns nothing of
    another's. ``ended``: the experiments created at run time and since ended, with when."""
    expect(field, name, str, "the name of an experiment of the config (experiments:) or of "
                             "one created at run time")
    assert isinstance(name, str)
    experiment = settings.experiments.get(name)
    shown = json_quoted(name, 100)
    whose = f"tenant {json_quoted(tenant, 100)}'s requests"
    first = joined(settings, tenant)
    if experiment is None and ended and name in ended:
        gone, at = ended[name]
        if gone.tenants is None or tenant in gone.tenants:
            raise InvalidInputError(field, f"experiment {shown}, created at run time, ended at "
                                           f"{when(at)}, so it takes no traffic; "
                                           f"{CREATE_HINT} under another name")
    if experiment is None or (experiment.tenants is not None
                              and tenant not in experiment.tenants):
        if first is None:
            raise InvalidInputError(field, f"no experiment {shown} takes {whose}, which take "
                                           "part in none; leave it out, or add an experiment "
                                           "that holds the tenant under experiments: in the "
                                           f"config, or {CREATE_HINT}")
        raise InvalidInputError(field, f"no experiment {shown} takes {whose}, which take part "
                                       f"in experiment {json_quoted(first, 100)}; name that "
                                       "one, or leave it out")
    if not experiment.enabled:
        raise InvalidInputError(field, f"experiment {shown} is disabled (enabled: false), so "
                                       "it takes no traffic; enable it in the config")
    if first != name:
        taken = json_quoted(first, 100)
        fix = ("change the order or the tenants in the config" if experiment.created_at is None
               else "give the experiments tenants of their own (those created at run time "
                    "come after the config's, in the order they were made)")
        raise InvalidInputError(field, f"{whose} take part in experiment {taken}, listed "
                                       f"before {shown} (a request joins the first enabled "
                                       f"experiment that holds its tenant); name {taken}, or "
                                       f"{fix}")
    return name


def when(ts: float) -> str:
    """A time as the errors about experiments give it: UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (a table to 30, then
    the Cornish-Fisher expansion, accurate to 1e-4)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a success rate (``successes`` of ``n``; a mean score
    times ``n`` gives the widest interval scores in [0, 1] with that mean can have)."""
    if n == 0:
        return 0.0, 1.0
    z = _Z975
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Scores:
    """Scores in [0, 1], summed up as an interval needs them: how many, their sum and sum of
    squares, how many are 1 and how many neither 0 nor 1, the lowest and the highest. Two add
    up to the scores of both (an arm's scores in the log and those of its decisions retention
    pruned, kept as totals)."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    ones: int = 0
    others: int = 0
    low: float | None = None
    high: float | None = None

    @classmethod
    def of_counts(cls, counts: Mapping[float, int]) -> Scores:
        """The scores given as ``{score: how many}`` (exact sums: the same in any order)."""
        scores = {float(q): int(c) for q, c in counts.items() if c > 0}
        if not scores:
            return cls()
        return cls(sum(scores.values()), math.fsum(q * c for q, c in scores.items()),
                   math.fsum(q * q * c for q, c in scores.items()), scores.get(1.0, 0),
                   sum(c for q, c in scores.items() if q not in (0.0, 1.0)),
                   min(scores), max(scores))

    def __add__(self, other: Scores) -> Scores:
        lows = [v for v in (self.low, other.low) if v is not None]
        highs = [v for v in (self.high, other.high) if v is not None]
        return Scores(self.n + other.n, math.fsum((self.total, other.total)),
                      math.fsum((self.squares, other.squares)), self.ones + other.ones,
                      self.others + other.others, min(lows) if lows else None,
                      max(highs) if highs else None)


def interval(qualities: Sequence[float]) -> tuple[float | None, float | None, float | None, str]:
    """(mean, low, high, method) of the scores: see :func:`interval_of_scores`."""
    return interval_of_scores(Scores.of_counts(Counter(float(q) for q in qualities)))


def interval_of_scores(scores: Scores) -> tuple[float | None, float | None, float | None, str]:
    """(mean, low, high, method) of the scores: a Wilson interval when every score is 0 or 1
    (a success rate), else a t-interval on the mean score (clipped to [0, 1]). Scores that are
    all the same show no spread to measure, and a t-interval of width 0 would let two such arms
    name a winner from two scores each: they get the Wilson interval of their mean instead, the
    widest that scores in [0, 1] with that mean allow."""
    n = scores.n
    if n == 0:
        return None, None, None, "none"
    mean = scores.total / n
    if scores.others == 0:
        low, high = wilson(scores.ones, n)
        return mean, low, high, "wilson"
    if n < 2:
        return mean, None, None, "t"
    if scores.low == scores.high:
        low, high = wilson(mean * n, n)
        return mean, low, high, "wilson"
    variance = max(0.0, math.fsum((scores.squares, -scores.total * mean)) / (n - 1))
    half = t_quantile(n - 1) * math.sqrt(variance) / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half), "t"


WINNER_RULE = ("an arm wins when every arm has at least min_n scored decisions and the 95% "
               "interval of its mean quality lies entirely above every other arm's interval "
               "(no overlap); cost is reported, not weighed")


def experiment_of(name: object, settings: Settings,
                  ended: Mapping[str, tuple[ExperimentConfig, float]] | None = None
                  ) -> tuple[ExperimentConfig, float | None]:
    """Experiment ``name``: of ``settings`` (the config's, or created at run time and
    running), else of ``ended`` (created at run time and ended), with when it ended (None
    while it runs). An :class:`InvalidInputError` for a name not a string, a
    :class:`NotFoundError` naming those there are for one of neither."""
    expect("name", name, str, "an experiment's name (a string)")
    assert isinstance(name, str)
    experiment = settings.experiments.get(name)
    if experiment is not None:
        return experiment, None
    if ended and name in ended:
        return ended[name]
    known = [*settings.experiments, *(n for n in ended or () if n not in settings.experiments)]
    raise NotFoundError(f"name: no experiment {json_quoted(name, 100)} is configured "
                        "or was created at run time; there are: "
                        f"{listed_names(known, quoted=True) or 'none'}", param="name")


def check_promotion(experiment: ExperimentConfig, name: str, arm: object) -> None:
    """Refuse promoting ``arm`` of experiment ``name`` (``experiment``) for what the request
    or the config says, before anything is read or waited for: an experiment disabled
    (a 409), an arm not a string nor None (its winner), or none of the experiment's (a 400
    naming them)."""
    shown = json_quoted(name, 100)
    if not experiment.enabled:
        raise ConflictError(f"experiment {shown} is disabled (enabled: false), so it "
                            "takes no traffic to promote an arm for; enable it in the "
                            "config and reload, then promote", param="name")
    if arm is None:
        return
    if not isinstance(arm, str):
        raise InvalidInputError("arm", f"must be the name of an arm of {shown} "
                                       f"({listed_names(experiment.arms, quoted=True)}), "
                                       f"or None for its winner; got {type(arm).__name__}")
    if arm not in experiment.arms:
        raise InvalidInputError("arm", f"{json_quoted(arm, 64)} is not an arm of {shown} "
                                       f"({listed_names(experiment.arms, quoted=True)})")


def experiment_report(name: str, settings: Settings, reader: LearningReader | None,
                      promoted: Mapping[str, tuple[str, str]],
                      ended: Mapping[str, tuple[ExperimentConfig, float]] | None = None
                      ) -> dict[str, Any]:
    """Per arm: decisions, scored decisions, mean quality with its 95% interval, mean cost in
    USD over the answers whose cost is known and how many decisions' cost is unknown;
    and the winner, once the evidence is there (see :data:`WINNER_RULE`). Decisions retention
    pruned count as they stood when pruned (``pruned_decisions`` says how many: the store
    keeps their totals). ``ended``: the experiments created at run time and since ended
    (with when), whose reports are still read."""
    experiment, ended_at = experiment_of(name, settings, ended)
    rows = reader.experiment(name) if reader is not None else {}
    arms: list[dict[str, Any]] = []
    for arm, config in experiment.arms.items():
        row = rows.get(arm, {})
        scores = Scores.of_counts(row.get("quality_counts", {}))
        if row.get("kept_scores"):
            scores += Scores(**row["kept_scores"])
        mean, low, high, method = interval_of_scores(scores)
        arms.append({
            "arm": arm, "weight": config.weight, "policy": config.policy,
            "cost_weight": config.cost_weight, "models": config.models,
            "decisions": int(row.get("decisions", 0)), "n": scores.n,
            "pruned_decisions": int(row.get("pruned_decisions", 0)),
            "mean_quality": None if mean is None else round(mean, 6),
            "interval": None if low is None or high is None else [round(low, 6),
                                                                  round(high, 6)],
            "interval_method": method,
            "mean_cost_usd": None if row.get("mean_cost_usd") is None
            else usd(row["mean_cost_usd"]),
            "cost_unknown_decisions": int(row.get("cost_unknown", 0))})
    winner = None
    enough = all(a["n"] >= experiment.min_n and a["interval"] is not None for a in arms)
    if enough:
        best = max(arms, key=lambda a: a["mean_quality"])
        if all(best["interval"][0] > a["interval"][1] for a in arms if a is not best):
            winner = best["arm"]
    promoted_arm, promotion = promoted.get(name, (None, None))
    if promoted_arm is not None and promoted_arm not in experiment.arms:
        # A reload took the arm away: traffic is split again, whatever the store remembers.
        promotion = (f"not applied: the promoted arm {json_quoted(promoted_arm)} is no longer "
                     f"an arm of {json_quoted(name)}, so its traffic is split among the "
                     "configured arms again (it applies again if an arm of that name comes "
                     "back); promote one of "
                     f"{listed_names(experiment.arms, quoted=True)} to send everyone "
                     "to it")
        promoted_arm = None
    return {"experiment": name, "enabled": experiment.enabled and ended_at is None,
            "created_at": experiment.created_at, "ended_at": ended_at,
            "split": experiment.split,
            "tenants": experiment.tenants, "min_n": experiment.min_n, "arms": arms,
            "winner": winner, "rule": WINNER_RULE,
            "promoted": promoted_arm, "promotion": promotion,
            "intervals": "95%: Wilson for success rates (every score 0 or 1), Student's t "
                         "for mean scores"}
