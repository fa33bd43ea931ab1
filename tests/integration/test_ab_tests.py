"""Experiments created at run time in process: ``Gateway.create_ab_test`` makes one of two
strategies (or of arms, as the config gives them), routed in by its object or its name, with
its share of the traffic; ``end_ab_test`` ends it, keeping its decisions and report; it is kept
in ``data_dir`` across a restart and a reload; the config's rules refuse a bad one, and nothing
changes then. A real gateway (SQLite in ``tmp_path``) over the fake provider.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint.config import Settings, load_settings
from switchpoint.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from switchpoint.gateway import Gateway
from switchpoint.gateway import live as live_module
from switchpoint.gateway.ab_tests import ABTest
from switchpoint.gateway.live import RouterFactory
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage, default_weights_path, load_weights
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import (
    KEYS,
    counting_loader,
    settings_for,
    started_gateway,
)

CONFIG = """tenants:
  acme: {}
  globex: {models: [cheap, runner, auto]}
experiments:
  thrift:
    tenants: [acme]
    arms:
      control: {}
      thrifty: {cost_weight: 5}
"""


@pytest.fixture
def settings(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    return settings_for(fake, tmp_path, CONFIG)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    with started_gateway(settings) as gw:
        yield gw


def _rows(gateway: Gateway) -> list[tuple[Any, ...]]:
    with sqlite3.connect(gateway.settings.db_path) as db:
        return db.execute("SELECT name, ended FROM runtime_experiments ORDER BY seq").fetchall()


def test_an_ab_test_made_at_run_time_routes_by_its_object_or_name_and_ends_keeping_its_report(
        gateway: Gateway) -> None:
    test = gateway.create_ab_test("quality-vs-cost", split=0.3)
    assert isinstance(test, ABTest)
    assert (test.name, test.split, test.tenants, test.min_n) == ("quality-vs-cost", 0.3, None,
                                                                 30)
    assert test.arms["a"].cost_weight is None and test.arms["b"].cost_weight == 0.0
    assert list(gateway.settings.experiments) == ["thrift", "quality-vs-cost"]
    decisions = [gateway.route(math_prompt(i), ab_test=test if i % 2 else test.name)
                 for i in range(400)]
    assert {d.experiment for d in decisions} == {"quality-vs-cost"}
    arms = Counter(d.arm for d in decisions)
    assert set(arms) == {"a", "b"} and abs(arms["b"] / 400 - 0.3) < 0.08, arms
    for d in decisions:  # a: the configured routing (λ 0.1); b: quality first (λ 0)
        assert d.cost_weight == (0.0 if d.arm == "b" else 0.1)
    # A request takes part without naming it; another tenant's experiment is not this one.
    assert gateway.route(math_prompt(1)).experiment == "quality-vs-cost"
    assert gateway.route(math_prompt(1), tenant="acme").experiment == "thrift"
    report = gateway.experiment_report("quality-vs-cost")
    counted = {a["arm"]: a["decisions"] for a in report["arms"]}
    assert sum(counted.values()) == 401 and counted["b"] >= arms["b"], counted
    assert report["created_at"] == test.created_at and report["ended_at"] is None
    assert report["split"] == 0.3 and report["enabled"]
    assert [a["weight"] for a in report["arms"]] == [0.7, 0.3]

    ended = gateway.end_ab_test(test)
    assert ended["ended_at"] is not None and not ended["enabled"]
    assert sum(a["decisions"] for a in ended["arms"]) == 401
    assert gateway.route(math_prompt(2)).experiment == ""
    with pytest.raises(InvalidInputError, match="ended at") as refused:
        gateway.route(math_prompt(2), ab_test="quality-vs-cost")
    assert refused.value.field == "ab_test" and "create one at run time" in str(refused.value)
    with pytest.raises(InvalidInputError, match="ended at"):
        gateway.route(math_prompt(2), ab_test=test)
    assert gateway.experiment_report("quality-vs-cost")["ended_at"] == ended["ended_at"]
    assert [r["experiment"] for r in gateway.experiment_reports()] == ["thrift",
                                                                      "quality-vs-cost"]
    # Its name stays taken; it cannot be ended twice nor promoted; a config one is ended there.
    with pytest.raises(ConflictError, match="stays taken"):
        gateway.create_ab_test("quality-vs-cost")
    with pytest.raises(ConflictError, match="ended already"):
        gateway.end_ab_test("quality-vs-cost")
    with pytest.raises(ConflictError, match="has ended"):
        gateway.promote("quality-vs-cost", "a")
    with pytest.raises(ConflictError, match="is in the config") as config_one:
        gateway.end_ab_test("thrift")
    assert config_one.value.param == "name"
    with pytest.raises(NotFoundError):
        gateway.end_ab_test("never-made")


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The weights packages read from now on (a load's, and each of ``policies:``)."""
    read: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> WeightsPackage:
        read.append(args)
        return load_weights(*args, **kwargs)

    monkeypatch.setattr(live_module, "load_weights", counted)
    return read


def _arm(gateway: Gateway, policy: str) -> Router | None:
    learning = gateway.state.live().learning
    assert learning is not None
    return learning.arm_routers.get(policy)


KNN = f"policies: {{knn: '{default_weights_path('knn')}'}}\n"


def test_creating_ending_and_promoting_an_experiment_copy_the_live_routers_and_load_none(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The new snapshot's router is a copy of the live one, and an arm's router on another
    # policy a copy of the one an arm of that policy held, running or since ended; the
    # policies: packages are checked as the start read them. Each loaded and read anew.
    settings = settings_for(fake, tmp_path, CONFIG + KNN)
    loads, counted = counting_loader()
    read = _reads(monkeypatch)
    with Gateway(settings, loader=counted, env=KEYS) as gateway:
        gateway.start()
        gateway.create_ab_test("first", arms={"x": {}, "y": {"policy": "knn"}},
                               tenants=["globex"])
        held = _arm(gateway, "knn")  # (no arm had knn yet: the test's own loader made it)
        assert loads[-1] == "knn" and held is not None
        gateway.end_ab_test("first")
        old, started, reads = gateway.router, len(loads), len(read)
        made = gateway.create_ab_test("second", arms={"x": {}, "y": {"policy": "knn"}},
                                      tenants=["globex"])
        assert (len(loads), len(read)) == (started, reads), (loads, read)
        arm = _arm(gateway, "knn")
        assert arm is not None and arm is not held and arm.weights_id == held.weights_id
        assert gateway.router is not old and gateway.router.weights_id == old.weights_id
        assert gateway.promote("second", "y")["promoted"] == "y"
        decision = gateway.route(math_prompt(1), tenant="globex")
        assert (decision.experiment, decision.arm) == ("second", "y")
        gateway.report_outcome(decision.decision_id, 0.9, tenant="globex")
        assert arm.learner.n_events("globex") == 1
        gateway.create_ab_test("third", strategy_b={"cost_weight": 2})
        copied = _arm(gateway, "knn")  # (a copy of the running arm's, which took up the log)
        assert copied not in (None, arm) and copied.learner.n_events("globex") == 1
        gateway.end_ab_test(made)
        gateway.end_ab_test("third")
        assert (len(loads), len(read)) == (started, reads), (loads, read)
        assert _arm(gateway, "knn") is None
        assert list(gateway.settings.experiments) == ["thrift"]
        gateway.reload()  # (a reload reads them all again)
        assert len(loads) > started and len(read) > reads


def test_an_arm_on_a_policy_no_arm_held_is_made_of_its_package_as_the_start_read_it(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The service's own loader makes it of the policies: package the start read and checked,
    # not read again; it was loaded, and every policies: package read again.
    settings = settings_for(fake, tmp_path, CONFIG + KNN)
    read = _reads(monkeypatch)
    with Gateway(settings, loader=RouterFactory(warm=False), env=KEYS) as gateway:
        gateway.start()
        reads = len(read)
        gateway.create_ab_test("neighbours", arms={"x": {}, "y": {"policy": "knn"}})
        assert len(read) == reads, read
        arm = _arm(gateway, "knn")
        assert arm is not None and arm.weights.path == Path(default_weights_path("knn"))
        assert arm.catalog.names == ["strong", "runner", "cheap"]
        gateway.end_ab_test("neighbours")
        assert len(read) == reads, read


def test_a_decision_reads_its_arm_as_ab_variant_as_tiered_routers_name_it(
        gateway: Gateway) -> None:
    """``decision.ab_variant`` is "a" or "b" in an A/B test made at run time, "" outside any
    experiment: the arm, by the name tiered routers give it, neither a field of its own nor
    a key of the decision's dict."""
    outside = gateway.route(math_prompt(0))
    assert (outside.experiment, outside.arm, outside.ab_variant) == ("", "", "")
    test = gateway.create_ab_test("quality-vs-cost", split=0.5)
    decisions = [gateway.route(math_prompt(i), ab_test=test) for i in range(40)]
    assert {d.ab_variant for d in decisions} == {"a", "b"}
    for d in decisions:
        assert d.ab_variant == d.arm and d.experiment == "quality-vs-cost"
        assert d.cost_weight == (0.0 if d.ab_variant == "b" else 0.1)  # b: quality first
        assert "ab_variant" not in d.to_dict()
    with pytest.raises(AttributeError):
        decisions[0].ab_variant = "b"  # type: ignore[misc]
    assert gateway.route(math_prompt(1), tenant="acme").ab_variant in ("control", "thrifty")


def test_split_is_honoured_over_many_sessions_and_a_session_stays_in_its_arm(
        gateway: Gateway) -> None:
    gateway.create_ab_test("sessions", strategy_a="quality_first",
                           strategy_b={"cost_weight": 3.0, "models": ["cheap", "runner"]},
                           split=0.2, min_n=5)
    learning = gateway.state.live().learning
    assert learning is not None
    assigned = [learning.experiments.assign("default", f"session-{i}") for i in range(5000)]
    shares = Counter(a.arm for a in assigned if a is not None)
    assert abs(shares["b"] / 5000 - 0.2) < 0.025, shares
    again = learning.experiments.assign("default", "session-7")
    assert again is not None and assigned[7] is not None and again.arm == assigned[7].arm
    routed = [gateway.route(math_prompt(i)) for i in range(60)]
    for d in routed:
        assert d.selected_model in (("cheap", "runner") if d.arm == "b" else ("strong",))


def test_a_run_time_experiment_survives_a_restart_and_a_reload_and_a_reload_naming_it_is_refused(
        settings: Settings) -> None:
    with started_gateway(settings) as gateway:
        gateway.create_ab_test("kept", tenants=["globex"], strategy_b={"models": ["cheap"]})
        gateway.create_ab_test("after", arms={"x": {}, "y": {"cost_weight": 2, "weight": 3}})
        ids = {gateway.route(math_prompt(i), tenant="globex").decision_id for i in range(10)}
        assert len(ids) == 10
        gateway.state.reload()
        assert list(gateway.settings.experiments) == ["thrift", "kept", "after"]
        gateway.end_ab_test("after")
    with started_gateway(settings) as gateway:
        assert list(gateway.settings.experiments) == ["thrift", "kept"]
        report = gateway.experiment_report("kept")
        assert sum(a["decisions"] for a in report["arms"]) == 10
        assert report["tenants"] == ["globex"] and report["ended_at"] is None
        assert gateway.experiment_report("after")["ended_at"] is not None
        assert gateway.route(math_prompt(1), tenant="globex", ab_test="kept").arm in ("a", "b")
        # A reload whose config lists an experiment of its name is refused, naming it; the
        # running config and the run-time experiment stay.
        path = settings.source_path
        assert path is not None
        text = path.read_text(encoding="utf-8")
        path.write_text(text + "  kept:\n    arms: {p: {}, q: {cost_weight: 1}}\n",
                        encoding="utf-8")
        with pytest.raises(ConfigError, match="created at run time") as refused:
            gateway.state.reload()
        assert refused.value.key == "experiments.kept" and "DELETE" in str(refused.value)
        # So is one that takes away what it names (globex).
        path.write_text(text.replace("  globex: {models: [cheap, runner, auto]}\n", ""),
                        encoding="utf-8")
        with pytest.raises(ConfigError, match="was created at run time") as gone:
            gateway.state.reload()
        assert gone.value.key == "experiments.kept.tenants[0]"
        assert gateway.experiment_report("kept")["ended_at"] is None
        assert list(gateway.settings.experiments) == ["thrift", "kept"]
        assert _rows(gateway)[:2] == [("kept", None), ("after", _rows(gateway)[1][1])]
    # A start on a config listing an experiment of its name is refused the same way.
    path.write_text(text + "  kept:\n    arms: {p: {}, q: {cost_weight: 1}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="created at run time") as at_start:
        started_gateway(load_settings(path, environ={}))
    assert at_start.value.key == "experiments.kept"



def test_an_ended_run_time_experiment_is_kept_for_good_by_listing_its_name_in_the_config(
        settings: Settings) -> None:
    """Once it has ended, the config may take the name (to keep the experiment for good): the
    config's experiment carries on from its decisions, and is the one its name reports."""
    with started_gateway(settings) as gateway:
        gateway.create_ab_test("kept", tenants=["globex"], strategy_b={"cost_weight": 2})
        for i in range(6):
            gateway.route(math_prompt(i), tenant="globex")
        gateway.end_ab_test("kept")
        path = settings.source_path
        assert path is not None
        path.write_text(path.read_text(encoding="utf-8") + (
            "  kept:\n    tenants: [globex]\n    arms: {a: {}, b: {cost_weight: 2}}\n"),
            encoding="utf-8")
        gateway.state.reload()
        report = gateway.experiment_report("kept")
        assert report["created_at"] is None and report["ended_at"] is None
        assert sum(a["decisions"] for a in report["arms"]) == 6
        assert [r["experiment"] for r in gateway.experiment_reports()].count("kept") == 1
        assert gateway.route(math_prompt(9), tenant="globex", ab_test="kept").arm in ("a", "b")


@pytest.mark.parametrize(("kwargs", "field", "says"), [
    ({"name": "bad name"}, "name", "letters, digits"),
    ({"name": 7}, "name", "a string"),
    ({"name": "thrift"}, "name", "is in the config"),
    ({"split": 0}, "split", "neither included"),
    ({"split": 1.0}, "split", "at 1, A none"),
    ({"split": 1}, "split", "got 1:"),
    ({"split": 1.5}, "split", "neither included"),
    ({"split": math.nan}, "split", "neither included"),
    ({"split": "0.5"}, "split", "must be a number"),
    ({"split": True}, "split", "must be a number"),
    ({"strategy_b": "fastest"}, "strategy_b", "unknown strategy"),
    ({"strategy_b": {"weight": 2}}, "strategy_b", "not an arm setting"),
    ({"strategy_b": {"w\x1b[2J": 2}}, "strategy_b", "strategy_b.w\\u001b[2J: is not an arm"),
    ({"strategy_b": {"cost_weight": -1}}, "strategy_b", ">= 0"),
    ({"strategy_a": {"policy": "nope"}}, "strategy_a", "neither a bundled policy"),
    ({"strategy_b": {"models": ["nope"]}}, "strategy_b", "not a model in the catalog"),
    ({"strategy_b": {"models": ["strong"]}, "tenants": ["globex"]}, "strategy_b",
     "may use none of"),
    ({"strategy_b": 3}, "strategy_b", "got int"),
    ({"strategy_b": ""}, "strategy_b", 'unknown strategy ""'),
    ({"strategy_a": 0}, "strategy_a", "got int"),
    ({"strategy_a": []}, "strategy_a", "got list"),
    ({"strategy_a": np.array([0.5, 0.5])}, "strategy_a", "got ndarray"),
    ({"tenants": ["nobody"]}, "tenants", "not a tenant of this config"),
    ({"tenants": "acme"}, "tenants", "list"),
    ({"tenants": ["acme"]}, "tenants", "would get no traffic"),
    ({"min_n": 1}, "min_n", ">= 2"),
    ({"arms": {"x": {}}}, "arms", "at least 2"),
    ({"arms": {"x": {}, "y": {}}, "split": 0.4}, "arms", "not both"),
    ({"arms": {"x": {}, "y": {"colour": 1}}}, "arms.y.colour", "not a known key"),
    ({"arms": {"x": {}, "bad name": {}}}, "arms", "letters, digits"),
    ({"arms": {"x": {}, "y": {"weight": 5e-324}}}, "arms.y.weight",
     'arms.y.weight: arm "y" would get 4.94066e-324 of the experiment\'s traffic'),
    ({"split": 1e-300}, "split", 'split: arm "b" would get 1e-300 of the experiment\'s'),
    ({"split": 1 - 2 ** -53}, "split", 'split: arm "a" would get 1.11022e-16 of the'),
])
def test_a_bad_ab_test_is_refused_naming_its_argument_and_nothing_is_made(
        gateway: Gateway, kwargs: dict[str, Any], field: str, says: str) -> None:
    kwargs = {"name": "made", **kwargs}
    before = list(gateway.settings.experiments)
    with pytest.raises((InvalidInputError, ConflictError)) as refused:
        gateway.create_ab_test(**kwargs)
    error = refused.value
    named = error.field if isinstance(error, InvalidInputError) else getattr(error, "param", "")
    assert named == field and says in str(error), str(error)
    assert len(str(error)) < 700
    assert list(gateway.settings.experiments) == before and _rows(gateway) == []
    assert gateway.route(math_prompt(1)).experiment == ""


def test_an_empty_strategy_is_the_configured_routing_not_the_default_strategy(
        gateway: Gateway) -> None:
    """A strategy given as {} (no setting changed) is the configured routing; it was taken
    as one left out, so an empty strategy_b was quality_first (λ 0), and "", 0 or [] as a
    strategy made the default one (an array, NumPy's ValueError)."""
    test = gateway.create_ab_test("plain", strategy_a={"cost_weight": 0.0}, strategy_b={})
    assert test.arms["a"].cost_weight == 0.0 and test.arms["b"].cost_weight is None
    arms = {d.arm: d.cost_weight for d in (gateway.route(math_prompt(i), ab_test=test)
                                           for i in range(60))}
    assert arms == {"a": 0.0, "b": 0.1}  # b: the configured λ


def test_a_name_made_at_run_time_is_taken_and_the_experiments_are_bounded(
        gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    import switchpoint.gateway.ab_tests as ab_tests

    gateway.create_ab_test("one", tenants=["globex"])
    with pytest.raises(ConflictError, match="was created at run time already"):
        gateway.create_ab_test("one", tenants=["default"])
    monkeypatch.setattr(ab_tests, "MAX_EXPERIMENTS", 2)
    with pytest.raises(ConflictError, match="the most there may be") as full:
        gateway.create_ab_test("two", tenants=["default"])
    assert full.value.param == "name"
    assert [r[0] for r in _rows(gateway)] == ["one"]


def test_another_tenants_experiment_running_or_ended_is_refused_as_one_that_does_not_exist(
        gateway: Gateway) -> None:
    """A tenant naming a run-time experiment of another tenant learns neither that it exists
    nor that it ended: the refusal reads as for a name never made."""
    gateway.create_ab_test("home-only", tenants=["default"], split=0.5)
    never = "no experiment \"never-made\" takes tenant \"globex\"'s requests"
    with pytest.raises(InvalidInputError) as unknown:
        gateway.route(math_prompt(3), tenant="globex", ab_test="never-made")
    assert never in str(unknown.value)
    for ended in (False, True):
        if ended:
            gateway.end_ab_test("home-only")
        with pytest.raises(InvalidInputError) as refused:
            gateway.route(math_prompt(3), tenant="globex", ab_test="home-only")
        message = str(refused.value)
        assert "no experiment \"home-only\" takes tenant \"globex\"'s requests" in message
        assert "default" not in message and "ended" not in message
    with pytest.raises(InvalidInputError, match="ended at"):
        gateway.route(math_prompt(3), ab_test="home-only")


def test_a_name_whose_decisions_are_logged_is_not_made_again_at_run_time(
        settings: Settings) -> None:
    """A config experiment a reload dropped left its decisions under its name; an experiment
    created at run time under that name read them in its report as its own, before any
    request took part in it. It is refused, and nothing is made."""
    with started_gateway(settings) as gateway:
        for i in range(12):
            assert gateway.route(math_prompt(i), tenant="acme").experiment == "thrift"
        path = settings.source_path
        assert path is not None
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("  thrift:\n    tenants: [acme]\n", "  later:\n"
                                     "    enabled: false\n    tenants: [acme]\n"),
                        encoding="utf-8")
        gateway.state.reload()
        assert list(gateway.settings.experiments) == ["later"]
        with pytest.raises(ConflictError) as refused:
            gateway.create_ab_test("thrift", tenants=["acme"])
        assert refused.value.param == "name"
        assert '12 decisions of an earlier experiment "thrift"' in str(refused.value)
        assert "pick another name" in str(refused.value)
        assert _rows(gateway) == [] and list(gateway.settings.experiments) == ["later"]
        test = gateway.create_ab_test("thrift-2", tenants=["acme"])
        assert all(a["decisions"] == 0
                   for a in gateway.experiment_report(test.name)["arms"])
