"""The evaluation harness on a tiny hand-made record set and a fake embedder."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from switchpoint import training
from switchpoint.errors import InvalidInputError, RecordsError
from switchpoint.evaluation.curves import DEFAULT_LAMBDAS
from switchpoint.evaluation.harness import (
    DEFAULT_POLICIES,
    NO_TASK,
    TASK_LAMBDAS,
    EvaluationReport,
    evaluate,
    score_estimates,
)
from switchpoint.evaluation.metrics import (
    Point,
    aiq,
    oracle_point,
    qnc,
    routed_point,
    shortfall,
    single_model_points,
)
from switchpoint.policies import Estimates, Inputs, Policy
from switchpoint.records import RecordSet, parse_records
from switchpoint.router import Router

COSTS = {"big": 0.01, "mid": 0.002, "small": 0.0001}
ALL_POLICIES = ["cluster", "knn", "tiers", "tfidf", "fixed", "random"]
SMALL_PARAMS: dict[str, dict[str, Any]] = {"cluster": {"n_clusters": 3, "n_coarse": 2},
                                           "knn": {"k": 3}}


def _line(rid: str, prompt: str, task: str, split: str, scores: dict[str, float]) -> str:
    return json.dumps({"id": rid, "prompt": prompt, "task": task, "split": split,
                       "scores": scores, "costs": {m: COSTS[m] for m in scores}})


def make_lines() -> list[str]:
    """Easy arithmetic (the small model gets it right), hard proofs (only big), chat (no task)."""
    lines = []
    for split, n_easy, n_hard, n_chat in (("train", 10, 10, 4), ("test", 6, 6, 3)):
        base = 0 if split == "train" else 100  # test prompts never repeat train ones
        for i in range(n_easy):
            k = base + i
            lines.append(_line(f"{split}-easy-{i}", f"add the numbers {k} and {k + 1} please",
                               "arith", split, {"big": 1.0, "mid": 1.0, "small": 1.0}))
        for i in range(n_hard):
            lines.append(_line(f"{split}-hard-{i}",
                               f"prove the theorem that primes are infinite case {base + i}",
                               "proofs", split,
                               {"big": 1.0, "mid": float(i % 2), "small": 0.0}))
        for i in range(n_chat):
            lines.append(_line(f"{split}-chat-{i}",
                               f"tell me a bedtime story about dragon {base + i}", "", split,
                               {"big": 1.0, "mid": 1.0, "small": 0.0}))
    return lines


@pytest.fixture
def records() -> RecordSet:
    return parse_records(make_lines(), source="hand-made")


@pytest.fixture
def new_embedder(fake_embedder: Any) -> Callable[[], Any]:
    """Fresh fake embedders (each counts its own calls)."""
    return lambda: type(fake_embedder)()


@pytest.fixture
def embedder(new_embedder: Callable[[], Any]) -> Any:
    return new_embedder()


@pytest.fixture
def report(records: RecordSet, embedder: Any) -> EvaluationReport:
    return evaluate(records, policies=ALL_POLICIES, fit_split="train", embedder=embedder,
                    params=SMALL_PARAMS, name="hand-made")


# The report ---------------------------------------------------------------------------------


def test_report_fields(report: EvaluationReport, records: RecordSet) -> None:
    test = records.split("test")
    assert report.records == "hand-made"
    assert (report.fit_split, report.test_split) == ("train", "test")
    assert (report.n_fit, report.n_test) == (24, 15)
    assert report.embedder == "fake/hash-384"
    assert report.lambdas == DEFAULT_LAMBDAS and report.task_lambdas == TASK_LAMBDAS
    # Single models, zero router and oracle come straight from the metrics.
    singles = single_model_points(test.scores, test.costs)
    assert [(m.name, m.cost, m.quality) for m in report.models] == [
        (m, p.cost, p.quality) for m, p in zip(test.models, singles, strict=True)]
    assert report.best_single.name == "big" and report.best_single.quality == 1.0
    assert report.zero_aiq == pytest.approx(aiq(singles, singles))
    assert report.zero_qnc == pytest.approx(1.0)
    assert report.oracle == oracle_point(test.scores, test.costs)
    assert report.oracle_aiq >= max(p.aiq for p in report.policies)
    assert [p.name for p in report.policies] == ALL_POLICIES
    for p in report.policies:
        assert len(p.points) == len(DEFAULT_LAMBDAS)
        assert [pt.cost_weight for pt in p.points] == list(DEFAULT_LAMBDAS)
        raw = [Point(pt.cost, pt.quality) for pt in p.points]
        assert p.aiq == pytest.approx(aiq(raw, singles))
        assert p.gain == pytest.approx(p.aiq - report.zero_aiq)
        assert p.best_quality == max(pt.quality for pt in p.points)
        assert p.qnc == qnc(raw, singles)
        assert p.match_cost == pytest.approx(p.qnc * 0.01) or math.isinf(p.match_cost)
        assert set(p.at_lambda) == set(TASK_LAMBDAS)
        assert p.cost_scale == pytest.approx(0.01)  # the priciest model's mean train cost
        assert p.fit_seconds is not None and p.fit_seconds >= 0
    assert report.policy("cluster").params["n_clusters"] == 3
    assert report.policy("knn").params["k"] == 3


def test_learned_policies_beat_the_zero_router(report: EvaluationReport) -> None:
    # Arithmetic can go to the cheap model, proofs must go to the big one: the embedding and
    # text policies learn that; the fixed model cannot.
    for name in ("cluster", "knn", "tfidf"):
        p = report.policy(name)
        assert p.aiq > report.zero_aiq, name
        assert p.qnc < 1.0, name
        assert p.below_zero_share == 0.0 and p.below_zero_depth == 0.0, name
    fixed = report.policy("fixed")
    assert {(pt.cost, pt.quality) for pt in fixed.points} == {(0.01, 1.0)}


def test_default_policies_are_cluster_and_knn(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    assert DEFAULT_POLICIES == ("cluster", "knn")
    r = evaluate(records, fit_split="train", embedder=new_embedder(), params=SMALL_PARAMS)
    assert [p.name for p in r.policies] == ["cluster", "knn"]
    assert r.records == "records"


def test_per_task_breakdown_sums_to_the_overall_point(report: EvaluationReport,
                                                      records: RecordSet) -> None:
    test = records.split("test")
    assert [t.task for t in report.tasks] == [NO_TASK, "arith", "proofs"]
    assert [t.n for t in report.tasks] == [3, 6, 6]
    assert sum(t.n for t in report.tasks) == report.n_test
    for p in report.policies:
        for lam in TASK_LAMBDAS:
            quality = sum(t.n * t.policies[p.name][lam].quality for t in report.tasks)
            cost = sum(t.n * t.policies[p.name][lam].cost for t in report.tasks)
            assert quality / report.n_test == pytest.approx(p.at_lambda[lam].quality)
            assert cost / report.n_test == pytest.approx(p.at_lambda[lam].cost)
    by_task = {t.task: t for t in report.tasks}
    # On arithmetic every model is right: the best on the task is the cheapest.
    assert by_task["arith"].best_model.name == "small"
    assert by_task["arith"].best_model.quality == 1.0
    assert by_task["proofs"].best_model.name == "big"
    assert by_task[NO_TASK].best_model.name == "mid"
    for t in report.tasks:
        assert t.overall_best.name == "big"
    # The quality-first fixed router spends the big model's cost on every task.
    assert by_task["arith"].policies["fixed"][0.0] == Point(0.01, 1.0)
    rows = [i for i, task in enumerate(test.tasks) if task == "proofs"]
    assert by_task["proofs"].n == len(rows)


def test_embeds_once_and_test_prompts_never_reach_fitting(
    records: RecordSet, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, list[str], list[str]]] = []
    real_fit = training.fit

    def spy(data: RecordSet, policy: str | Policy = "cluster", **kwargs: Any) -> Any:
        seen.append((policy if isinstance(policy, str) else policy.name, list(data.ids),
                     list(data.prompts)))
        return real_fit(data, policy, **kwargs)

    monkeypatch.setattr(training, "fit", spy)
    evaluate(records, policies=ALL_POLICIES, fit_split="train", embedder=embedder,
             params=SMALL_PARAMS)
    test = records.split("test")
    train = records.split("train")
    assert [s[0] for s in seen] == ALL_POLICIES
    for _, ids, prompts in seen:
        assert ids == train.ids
        assert not set(prompts) & set(test.prompts)
    # One embedding pass, of the train and test prompts, shared by every policy.
    assert len(embedder.calls) == 1
    assert sorted(embedder.calls[0]) == sorted(train.prompts + test.prompts)
    assert records.embeddings is None  # the caller's records are not changed


def test_precomputed_embeddings_are_used_as_they_are(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    with_vectors = replace(records, embeddings=emb.embed(records.prompts))
    counting = new_embedder()
    r = evaluate(with_vectors, policies=["cluster"], fit_split="train", embedder=counting,
                 params={"cluster": {"n_clusters": 3}})
    assert counting.calls == []
    fresh = evaluate(records, policies=["cluster"], fit_split="train", embedder=new_embedder(),
                     params={"cluster": {"n_clusters": 3}})
    assert r.policies[0].aiq == pytest.approx(fresh.policies[0].aiq)


def test_text_policies_need_no_embedder(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    r = evaluate(records, policies=["tiers", "fixed"], fit_split="train", embedder=emb)
    assert emb.calls == []
    assert r.embedder is None


# Given weights: the same numbers as the Router itself ---------------------------------------


def test_weights_evaluate_exactly_as_the_router_routes(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    package = training.fit(records, "cluster", split="train", embedder=emb, n_clusters=3,
                           n_coarse=2)
    r = evaluate(records, weights=package, embedder=emb, lambdas=[0.0, 0.05, 0.5, 5.0])
    fitted = evaluate(records, policies=["cluster"], fit_split="train", embedder=emb,
                      params={"cluster": {"n_clusters": 3, "n_coarse": 2}},
                      lambdas=[0.0, 0.05, 0.5, 5.0])
    assert r.fit_split is None and r.n_fit is None
    assert r.policies[0].source.startswith("weights cluster-")
    assert [p.to_dict() for p in r.policies[0].points] == [
        p.to_dict() for p in fitted.policies[0].points]
    router = Router(package, embedder=emb)
    test = records.split("test")
    col = {m: j for j, m in enumerate(test.models)}
    for pt in r.policies[0].points:
        decisions = router.route_batch(test.prompts, cost_weight_override=pt.cost_weight)
        choice = np.array([col[d.selected_model] for d in decisions], dtype=np.int64)
        assert routed_point(choice, test.scores, test.costs) == Point(pt.cost, pt.quality)


def test_weights_with_models_the_records_do_not_label(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    package = training.fit(records, "knn", split="train", embedder=emb, k=3)
    fewer = records.select_models(["big", "small"])
    r = evaluate(fewer, weights=package, embedder=emb)
    assert [m.name for m in r.models] == ["big", "small"]
    assert any('"mid" are' in n and "not labelled" in n for n in r.notes)
    pkg2 = training.fit(fewer, "knn", split="train", embedder=emb, k=3)
    r2 = evaluate(records, weights=pkg2, embedder=emb)
    assert [m.name for m in r2.models] == ["big", "small"]
    assert any("unknown to the weights" in n for n in r2.notes)


def test_a_model_without_a_label_is_never_chosen(new_embedder: Callable[[], Any]) -> None:
    lines = make_lines()
    # The best model (the first column) has no label on one test prompt: neither a policy nor
    # the oracle may pick it there, at any λ.
    obj = json.loads(lines[-1])
    del obj["scores"]["big"], obj["costs"]["big"]
    lines[-1] = json.dumps(obj)
    rs = parse_records(lines)
    r = evaluate(rs, policies=["cluster", "random"], fit_split="train", embedder=new_embedder(),
                 params={"cluster": {"n_clusters": 3}})
    for p in r.policies:
        assert all(math.isfinite(pt.quality) and math.isfinite(pt.cost) for pt in p.points)
    assert math.isfinite(r.oracle_aiq)


def test_score_estimates_matches_evaluate(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    package = training.fit(records, "knn", split="train", embedder=emb, k=3)
    test = records.split("test")
    est: Estimates = package.policy.estimate(
        Inputs(texts=test.prompts, embeddings=emb.embed(test.prompts)))
    scale = max(package.policy.global_cost().values())
    scored = score_estimates(test, {"peer": est}, scale)["peer"]
    r = evaluate(records, weights=package, embedder=emb)
    assert scored.aiq == pytest.approx(r.policies[0].aiq)
    assert scored.qnc == r.policies[0].qnc


# Output -------------------------------------------------------------------------------------


def test_to_dict_is_strict_json(report: EvaluationReport) -> None:
    text = json.dumps(report.to_dict(), allow_nan=False)
    d = json.loads(text)
    assert d["n_test"] == 15 and d["fit_split"] == "train"
    assert [p["name"] for p in d["policies"]] == ALL_POLICIES
    assert d["zero_router"]["aiq"] == pytest.approx(report.zero_aiq)
    assert set(d["policies"][0]["at_cost_weight"]) == {"0", "0.5"}
    assert len(d["policies"][0]["points"]) == len(DEFAULT_LAMBDAS)
    assert [t["task"] for t in d["tasks"]] == [NO_TASK, "arith", "proofs"]
    assert set(d["tasks"][0]["policies"]) == set(ALL_POLICIES)
    fixed = d["policies"][ALL_POLICIES.index("fixed")]["below_zero_router"]
    short = shortfall([Point(0.01, 1.0)], [Point(m.cost, m.quality) for m in report.models])
    assert fixed == {"share_of_cost_range": pytest.approx(short.share),
                     "largest_quality_gap": pytest.approx(short.depth)}
    # QNC "never" is null, not Infinity.
    random = d["policies"][ALL_POLICIES.index("random")]
    if math.isinf(report.policy("random").qnc):
        assert random["qnc"] is None and random["cost_to_match_best_single"] is None


def test_format_table_lists_every_policy_task_and_model(report: EvaluationReport) -> None:
    table = report.format_table()
    lines = table.splitlines()
    for name in ALL_POLICIES:
        assert any(line.startswith(name + " ") for line in lines), name
    for needle in ("zero router", "oracle", "hand-made", "arith", "proofs", NO_TASK,
                   "best on task: big", "all tasks", "λ=0 q", "λ=0.5 q", "small", "mid"):
        assert needle in table, needle
    summary = lines[3:3 + len(ALL_POLICIES) + 3]
    assert len({len(line) for line in summary if line.strip()}) >= 1
    # The summary's AIQ column is aligned: every row's AIQ sits at the header's column.
    header = lines[3]
    end = header.index("AIQ") + len("AIQ")
    for line, p in zip(lines[4:4 + len(ALL_POLICIES)], report.policies, strict=True):
        assert line[end - 5:end] == f"{p.aiq:.3f}"


# Bad input: checked before anything is embedded or fitted -----------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        pytest.param({"fit_split": None}, "give fit_split", id="neither"),
        pytest.param({"policies": ["cluster", "telepathy"]}, 'unknown policy "telepathy"',
                     id="unknown-policy"),
        pytest.param({"policies": []}, "at least one policy", id="no-policies"),
        pytest.param({"policies": ["knn", "knn"]},
                     'policies: "knn" named more than once', id="duplicate"),
        pytest.param({"params": {"tiers": {"prior_strength": 1}}},
                     'params: parameters given for "tiers", which is not among the policies '
                     'evaluated ("cluster", "knn")', id="stray-params"),
        pytest.param({"params": {"cluster": {"n_clusters": 0}}},
                     "params.cluster.n_clusters: must be >= 1, got 0", id="bad-param"),
        pytest.param({"params": {"knn": {"neighbours": 3}}},
                     'params.knn.neighbours: the "knn" policy has no parameter(s) "neighbours"',
                     id="bad-name"),
        pytest.param({"fit_split": "test"}, "measures nothing", id="fit-on-test"),
        pytest.param({"lambdas": [0.1, -1.0]}, "lambdas[1]", id="negative-lambda"),
        pytest.param({"lambdas": []}, "non-empty", id="no-lambdas"),
        pytest.param({"task_lambdas": [math.nan]}, "task_lambdas[0]", id="nan-task-lambda"),
    ],
)
def test_bad_arguments(
    records: RecordSet, kwargs: dict[str, Any], needle: str, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    args: dict[str, Any] = {"policies": ["cluster", "knn"], "fit_split": "train",
                            "embedder": emb, **kwargs}
    with pytest.raises(InvalidInputError, match=None) as exc:
        evaluate(records, **args)
    assert needle in str(exc.value)
    assert emb.calls == []


def test_bad_splits(records: RecordSet, new_embedder: Callable[[], Any]) -> None:
    emb = new_embedder()
    with pytest.raises(RecordsError, match='no records in split "holdout"'):
        evaluate(records, fit_split="train", test_split="holdout", embedder=emb)
    with pytest.raises(RecordsError, match='no records in split "dev"'):
        evaluate(records, fit_split="dev", embedder=emb)
    assert emb.calls == []


def test_weights_and_fitting_are_exclusive(
    records: RecordSet, new_embedder: Callable[[], Any]
) -> None:
    emb = new_embedder()
    package = training.fit(records, "fixed", split="train")
    with pytest.raises(InvalidInputError, match="not both"):
        evaluate(records, weights=package, fit_split="train", embedder=emb)
    with pytest.raises(InvalidInputError, match="only apply when fitting"):
        evaluate(records, weights=package, policies=["knn"], embedder=emb)
    with pytest.raises(InvalidInputError, match="none of the weights' models"):
        evaluate(records.select_models(["mid"]), weights=training.fit(
            records.select_models(["big"]), "fixed", split="train"))


def test_small_records_resplit_run_every_policy(small_records: RecordSet,
                                                fake_embedder: Any) -> None:
    """The first 120 real RouterBench records, split in two, through every policy."""
    rs = replace(small_records, splits=["train" if i % 3 else "test"
                                        for i in range(len(small_records))])
    r = evaluate(rs, policies=ALL_POLICIES, fit_split="train", embedder=fake_embedder,
                 params={"cluster": {"n_clusters": 6}, "knn": {"k": 5}})
    assert r.n_test == 40 and r.n_fit == 80
    assert len(r.models) == 11
    for p in r.policies:
        assert 0.0 < p.aiq <= r.oracle_aiq + 1e-9
    json.dumps(r.to_dict(), allow_nan=False)
