"""A policy of one's own: one class with one method (``_estimate``), registered by name, then
fitted, routed with, evaluated, saved and loaded as the built-in ones are; what it lacks, or a
public method it overrides, is refused naming the hook to define."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt
import pytest

import switchpoint.policies as policies
from switchpoint.errors import InvalidInputError, WeightsError
from switchpoint.evaluation.harness import evaluate
from switchpoint.policies import Estimates, Inputs, Policy, make_policy, register_policy
from switchpoint.records import RecordSet, parse_records
from switchpoint.router import Router
from switchpoint.training import add_model, fit, remove_model
from switchpoint.weights import load_weights
from tests.conftest import SAMPLE, SMALL_SPLIT


class CheapestGood(Policy):
    """The cheapest model whose mean score on the fit records is at least ``threshold``."""

    name = "cheapest-good"
    requires = "none"

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold

    def _estimate(self, inputs: Inputs) -> Estimates:
        good = 1.0 - self.error_ >= self.threshold
        return self.estimates(inputs, np.where(good, 0.0, 1.0))


class KeywordRule(Policy):
    """Prompts holding a keyword are routed by the models' mean errors on such prompts."""

    name = "keyword-rule"
    requires = "text"

    def __init__(self, keyword: str = "which") -> None:
        self.keyword = keyword

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        super()._fit(inputs, scores, costs, models)
        table = np.asarray(scores, dtype=float)
        coded = np.array([self.keyword in t.lower() for t in inputs.texts or []])
        self.keyword_error_ = 1.0 - np.nan_to_num(np.nanmean(table[coded], axis=0), nan=0.0)
        self.keyword_prompts_ = int(coded.sum())
        return self

    def _estimate(self, inputs: Inputs) -> Estimates:
        coded = np.array([[self.keyword in t.lower()] for t in inputs.texts or []])
        return self.estimates(inputs, np.where(coded, self.keyword_error_, self.error_))


class GrowingKeywordRule(KeywordRule):
    """A keyword rule that learns a model added to it, and forgets one removed."""

    name = "growing-keyword-rule"

    def _add_model(self, name: str, inputs: Inputs, scores: npt.ArrayLike,
                   costs: npt.ArrayLike) -> Self:
        super()._add_model(name, inputs, scores, costs)
        self.keyword_error_ = np.append(self.keyword_error_, self.error_[-1])
        return self

    def _remove_model(self, name: str) -> Self:
        keep = [m != name for m in self.models_]
        super()._remove_model(name)
        self.keyword_error_ = self.keyword_error_[keep]
        return self


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type[Policy]]]:
    """A registry of this test's own, the process's left as it was."""
    mine: dict[str, type[Policy]] = {}
    monkeypatch.setattr(policies, "_registered", mine)
    yield mine


def _cheapest_good(records: RecordSet, threshold: float) -> str:
    """The answer worked out from the records themselves."""
    mean_score = np.nanmean(records.scores, axis=0)
    mean_cost = np.nanmean(np.where(np.isnan(records.scores), np.nan, records.costs), axis=0)
    good = [j for j in range(len(records.models)) if mean_score[j] >= threshold]
    return records.models[min(good, key=lambda j: mean_cost[j])]


def test_a_policy_of_one_method_fits_routes_saves_and_loads_by_its_name(
        registry: dict[str, type[Policy]], small_records: RecordSet, tmp_path: Path) -> None:
    assert register_policy(CheapestGood) is CheapestGood
    package = fit(small_records, policy="cheapest-good", split=SMALL_SPLIT, threshold=0.75)
    expected = _cheapest_good(small_records, 0.75)
    router = Router(package)
    decisions = router.route_batch(["What is 2 + 2?", "Prove Fermat's little theorem."])
    assert {d.selected_model for d in decisions} == {expected}
    assert decisions[0].policy == "cheapest-good"

    package.save(tmp_path / "w")
    loaded = load_weights(tmp_path / "w")
    assert type(loaded.policy) is CheapestGood and loaded.policy.get_params() == {
        "threshold": 0.75}
    assert loaded.weights_id == package.weights_id
    assert Router(loaded).route("What is 2 + 2?").selected_model == expected

    # Adding and removing a model keep the means the one method reads.
    labels = [json.dumps({"prompt": p, "scores": {"newcomer": 1}, "costs": {"newcomer": 0}})
              for p in ("What is 2 + 2?", "Name a prime.")]
    added = add_model(loaded, "newcomer", parse_records(labels, source=tmp_path / "labels"))
    assert Router(added).route("What is 2 + 2?").selected_model == "newcomer"
    assert remove_model(added, "newcomer").weights_id == package.weights_id


def test_a_policy_learning_in_a_fit_of_its_own_keeps_it_across_a_save_and_names_missing_hooks(
        registry: dict[str, type[Policy]], small_records: RecordSet, tmp_path: Path) -> None:
    register_policy(KeywordRule)
    package = fit(small_records, policy="keyword-rule", split=SMALL_SPLIT)
    rule = package.policy
    assert isinstance(rule, KeywordRule) and rule.keyword_prompts_ > 0
    package.save(tmp_path / "w")
    loaded = load_weights(tmp_path / "w").policy
    assert isinstance(loaded, KeywordRule) and loaded.keyword_prompts_ == rule.keyword_prompts_
    np.testing.assert_array_equal(loaded.keyword_error_, rule.keyword_error_)
    prompts = Inputs(texts=["Which colour is the sky?", "Name a colour."])
    np.testing.assert_array_equal(loaded.estimate(prompts).error, rule.estimate(prompts).error)

    before = rule.get_state()
    with pytest.raises(InvalidInputError) as info:
        rule.add_model("newcomer", Inputs(texts=["a"]), [1.0], [0.0])
    assert "defines no _add_model" in info.value.reason
    assert "_add_model(self, name, inputs, scores, costs)" in info.value.reason
    with pytest.raises(InvalidInputError, match="defines no _remove_model"):
        rule.remove_model(rule.models_[0])
    after = rule.get_state()  # (what it learned, as it was)
    assert list(after.profiles) == list(before.profiles) and after.meta == before.meta
    for name, array in before.arrays.items():
        np.testing.assert_array_equal(after.arrays[name], array)

    growing = GrowingKeywordRule().fit(Inputs(texts=list(small_records.prompts)),
                                       small_records.scores, small_records.costs,
                                       list(small_records.models))
    growing.add_model("newcomer", Inputs(texts=["Which is it?"]), [1.0], [0.0])
    assert growing.estimate(prompts).error[:, -1].tolist() == [0.0, 0.0]
    growing.remove_model(growing.models_[0])
    assert len(growing.keyword_error_) == len(growing.models_) == len(small_records.models)


def test_a_policy_lacking_its_one_method_or_overriding_a_public_one_is_refused_naming_the_hook(
        registry: dict[str, type[Policy]]) -> None:
    class Unfinished(Policy):
        name = "unfinished"

    with pytest.raises(TypeError) as info:
        Unfinished()  # type: ignore[abstract]
    assert "does not define _estimate(self, inputs) -> Estimates" in str(info.value)
    with pytest.raises(TypeError, match="_estimate"):
        register_policy(Unfinished)
    assert registry == {}

    with pytest.raises(TypeError) as info:
        class Overriding(Policy):
            name = "overriding"

            def fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
                    models: list[str]) -> Self:
                return self

    assert "defines fit(); a policy defines _fit() instead" in str(info.value)

    class Nameless(CheapestGood):
        name = ""

    with pytest.raises(TypeError, match='has no name; give it one, as name = "my-policy"'):
        Nameless()


def test_registration_refuses_a_built_in_name_a_taken_one_and_one_no_url_could_hold(
        registry: dict[str, type[Policy]]) -> None:
    register_policy(CheapestGood)
    register_policy(CheapestGood)  # (again: nothing changes)
    assert policies.policy_class("cheapest-good") is CheapestGood
    assert "cheapest-good" in policies.policy_names()
    assert make_policy("cheapest-good", threshold=0.9).get_params() == {"threshold": 0.9}

    class Cluster(CheapestGood):
        name = "cluster"

    class Twin(CheapestGood):
        name = "cheapest-good"

    class Spaced(CheapestGood):
        name = "cheapest good"

    for cls, says in ((Cluster, "is the name of a built-in policy"),
                      (Twin, r"is already registered, to \S*test_policy_extension\."
                             "CheapestGood"),
                      (Spaced, "a policy's name is 1-64 letters")):
        with pytest.raises(InvalidInputError, match=says):
            register_policy(cls)
    with pytest.raises(InvalidInputError, match="must be a class that subclasses"):
        register_policy(dict)  # type: ignore[type-var]
    assert registry == {"cheapest-good": CheapestGood}


def test_the_evaluation_harness_measures_a_registered_policy(
        registry: dict[str, type[Policy]]) -> None:
    register_policy(CheapestGood)
    report = evaluate(SAMPLE, policies=["cheapest-good"], fit_split="train",
                      params={"cheapest-good": {"threshold": 0.8}})
    assert [p.name for p in report.policies] == ["cheapest-good"]
    assert 0.0 < report.policy("cheapest-good").aiq <= report.oracle_aiq


def test_a_policy_without_units_explains_a_decision_naming_no_unit_of_it(
        registry: dict[str, type[Policy]], small_records: RecordSet) -> None:
    """Where its estimate comes from, as the built-in ones name their cluster or tier."""
    register_policy(CheapestGood)
    package = fit(small_records, policy="cheapest-good", split=SMALL_SPLIT)
    decision = Router(package).route("What is 2 + 2?")
    assert decision.reasoning[0] == ('Estimated by the "cheapest-good" policy, which divides '
                                     "prompts into no units (clusters, tiers or examples).")
    assert decision.basis == "cheapest-good policy"
    assert "Unit 0" not in decision.explain() and "unit 0" not in decision.explain()
    assert not package.policy.has_units and make_policy("tiers").has_units


def test_estimates_refuse_what_is_no_error_per_model(small_records: RecordSet) -> None:
    policy = CheapestGood().fit(Inputs(texts=list(small_records.prompts)), small_records.scores,
                                small_records.costs, list(small_records.models))
    rows = Inputs(texts=["a", "b"])
    assert policy.estimates(rows, np.zeros(len(policy.models_))).error.shape == (
        2, len(policy.models_))
    with pytest.raises(InvalidInputError, match="give one value per model"):
        policy.estimates(rows, [0.5, 0.5])
    with pytest.raises(InvalidInputError, match=r"error outside \[0, 1\] or not finite"):
        policy.estimates(rows, np.full(len(policy.models_), np.nan))


def test_what_a_policy_of_ones_own_learned_tells_its_packages_apart_and_a_damaged_one_is_refused(
        registry: dict[str, type[Policy]], small_records: RecordSet, tmp_path: Path) -> None:
    register_policy(KeywordRule)
    package = fit(small_records, policy="keyword-rule", split=SMALL_SPLIT)
    policy = copy.copy(package.policy)
    assert isinstance(policy, KeywordRule)
    policy.keyword_prompts_ += 1  # (a number it learned, kept as JSON beside its arrays)
    assert replace(package, policy=policy).weights_id != package.weights_id

    package.save(tmp_path / "w")
    manifest_path = tmp_path / "w" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    rel = manifest["arrays"]["error_"]
    buffer = io.BytesIO()
    np.save(buffer, np.full(3, 0.5))  # three models' errors, for eleven models
    (tmp_path / "w" / rel).write_bytes(buffer.getvalue())
    manifest["files"][rel] = hashlib.sha256(buffer.getvalue()).hexdigest()
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(WeightsError, match=r"its error_ is not one number in \[0, 1\] for each "
                                           r"of its 11 models"):
        load_weights(tmp_path / "w")


def test_fit_and_evaluate_take_an_unfitted_instance_and_fit_a_copy_of_it(
        registry: dict[str, type[Policy]], small_records: RecordSet) -> None:
    """As a scikit-learn estimator is given: its hyper-parameters travel with the instance,
    which is left unfitted, as it was; its class need not be registered to be fitted."""
    mine = CheapestGood(threshold=0.75)
    package = fit(small_records, mine, split=SMALL_SPLIT)
    assert package.policy is not mine and package.policy.get_params() == {"threshold": 0.75}
    assert not hasattr(mine, "models_") and mine.get_params() == {"threshold": 0.75}
    decision = Router(package).route("What is 2 + 2?")
    assert decision.selected_model == _cheapest_good(small_records, 0.75)

    given = CheapestGood(threshold=0.8)
    report = evaluate(SAMPLE, policies=[given, "fixed"], fit_split="train")
    assert [p.name for p in report.policies] == ["cheapest-good", "fixed"]
    assert report.policy("cheapest-good").params == {"threshold": 0.8}
    assert not hasattr(given, "models_")
    register_policy(CheapestGood)  # (the same fit by name measures the same)
    by_name = evaluate(SAMPLE, policies=["cheapest-good"], fit_split="train",
                       params={"cheapest-good": {"threshold": 0.8}})
    assert by_name.policy("cheapest-good").aiq == report.policy("cheapest-good").aiq


def test_a_fitted_instance_parameters_beside_one_and_what_is_no_policy_are_refused(
        small_records: RecordSet) -> None:
    fitted = fit(small_records, CheapestGood(), split=SMALL_SPLIT).policy
    with pytest.raises(InvalidInputError, match=r"^policy: CheapestGood is fitted already "
                                                r"\(on \d+ models\); give an unfitted one"):
        fit(small_records, fitted, split=SMALL_SPLIT)
    with pytest.raises(InvalidInputError, match=r"^threshold: is a parameter given beside the "
                                                r"instance CheapestGood, which carries its own"):
        fit(small_records, CheapestGood(), split=SMALL_SPLIT, threshold=0.5)
    with pytest.raises(InvalidInputError, match=r"^policy: is the class CheapestGood; give an "
                                                r"instance of it, carrying its parameters"):
        fit(small_records, CheapestGood, split=SMALL_SPLIT)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^policies\[1\]: CheapestGood is fitted "
                                                "already"):
        evaluate(SAMPLE, policies=["fixed", fitted], fit_split="train")
    with pytest.raises(InvalidInputError, match=r'^params.cheapest-good: gives parameters of '
                                                r'"cheapest-good", which policies\[0\] gives '
                                                "as the instance CheapestGood"):
        evaluate(SAMPLE, policies=[CheapestGood()], fit_split="train",
                 params={"cheapest-good": {"threshold": 0.5}})
    with pytest.raises(InvalidInputError, match=r"^policies\[0\]: must be a policy's name or "
                                                "an unfitted Policy instance"):
        evaluate(SAMPLE, policies=[0.5], fit_split="train")  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r'^policies\[2\]: is "cheapest-good" with the '
                                                r"same parameters as policies\[0\]"):
        evaluate(SAMPLE, policies=[CheapestGood(0.5), CheapestGood(0.9), CheapestGood(0.5)],
                 fit_split="train")
    with pytest.raises(InvalidInputError, match=r'^policies: "fixed" named more than once: '
                                                r"name each policy once \(to compare "
                                                "parameters, give instances"):
        evaluate(SAMPLE, policies=["fixed", CheapestGood(), "fixed"], fit_split="train")


def test_instances_of_one_class_are_compared_in_one_report_by_what_they_differ_in() -> None:
    report = evaluate(SAMPLE, policies=[CheapestGood(0.5), CheapestGood(threshold=0.7),
                                        "fixed"], fit_split="train")
    assert [p.name for p in report.policies] == [
        "cheapest-good(threshold=0.5)", "cheapest-good(threshold=0.7)", "fixed"]
    low, high = (report.policy(f"cheapest-good(threshold={t})") for t in (0.5, 0.7))
    assert low.params == {"threshold": 0.5} and high.params == {"threshold": 0.7}
    alone = evaluate(SAMPLE, policies=[CheapestGood(0.7)], fit_split="train")
    assert high.aiq == alone.policy("cheapest-good").aiq  # (each fitted on its own)
    assert low.aiq != high.aiq
