"""The in-process gateway's routing options: ``route(prefer_healthy=, auto_scale=,
estimate_tokens=, ab_test=)``, over a real gateway (SQLite logs in ``tmp_path``) whose models
are served by the fake provider.

Math prompts: ``strong`` is right 90% of the time, ``runner`` 75%, ``cheap`` 20%; prices 10 / 5
/ 1 per million tokens, each way (see tests/integration/learning_env.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchpoint.errors import InvalidInputError, PermissionDeniedError
from switchpoint.gateway import Gateway
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import KEYS, loader, settings_for

EXPERIMENTS = """tenants:
  acme: {}
  globex: {}
experiments:
  thrift:
    tenants: [default, acme]
    arms:
      control: {}
      thrifty: {cost_weight: 5}
  later:
    tenants: [acme, globex]
    arms: {a: {}, b: {cost_weight: 2}}
  paused:
    enabled: false
    arms: {a: {}, b: {cost_weight: 2}}
"""


@pytest.fixture
def gateway(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(settings_for(fake, tmp_path), loader=loader, env=KEYS) as gw:
        gw.start()
        yield gw


@pytest.fixture
def experimenting(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(settings_for(fake, tmp_path, EXPERIMENTS), loader=loader, env=KEYS) as gw:
        gw.start()
        yield gw


def _degrade(gateway: Gateway, model: str) -> None:
    """Eight successes and two failures: degraded (80% < 90%), its circuit still closed."""
    for i in range(10):
        if i in (3, 7):
            gateway.record_provider_event(model, "error", details="rate_limited")
        else:
            gateway.record_provider_event(model, "success", latency_ms=100.0)


def _take_down(gateway: Gateway, model: str) -> None:
    """Five failures in a row: down, its circuit open."""
    for _ in range(5):
        gateway.record_provider_event(model, "timeout")


def test_routing_ignores_health_unless_asked(gateway: Gateway) -> None:
    prompt = math_prompt(1)
    _take_down(gateway, "strong")
    plain = gateway.route(prompt)
    assert plain.selected_model == "strong"
    assert gateway.route(prompt, prefer_healthy=False, auto_scale=False).selected_model == (
        "strong")


def test_prefer_healthy_names_the_model_a_chat_request_is_sent_to(gateway: Gateway) -> None:
    prompt = math_prompt(2)
    _degrade(gateway, "strong")
    assert gateway.get_provider_health("strong")["status"] == "degraded"
    decision = gateway.route(prompt, prefer_healthy=True)
    assert decision.selected_model == "runner"
    assert decision.fallback_models == ["cheap", "strong"]  # healthy first, then degraded
    assert decision.expected_cost == decision.expected_costs["runner"]
    assert decision.cost_adjusted_score == decision.all_scores["runner"]
    assert any("strong is degraded" in r and "ranked after runner" in r
               for r in decision.reasoning), decision.reasoning
    # The chat door's auto ranks the same way: it is answered by the model the decision names.
    reply = gateway.complete([{"role": "user", "content": prompt}])
    assert reply.switchpoint.model == "runner"
    assert any("strong is degraded" in r for r in reply.switchpoint.reasoning)
    # Feedback on the decision teaches the model it names.
    result = gateway.report_outcome(decision.decision_id, 0.8)
    assert result.outcome is not None and result.outcome.model == "runner"
    # A degraded model is still called: auto_scale alone leaves it first.
    assert gateway.route(prompt, auto_scale=True).selected_model == "strong"


def test_auto_scale_skips_a_model_whose_circuit_is_open(gateway: Gateway) -> None:
    prompt = math_prompt(3)
    assert gateway.route(prompt, auto_scale=True).selected_model == "strong"
    _take_down(gateway, "strong")
    decision = gateway.route(prompt, auto_scale=True)
    assert decision.selected_model == "runner"
    assert decision.fallback_models == ["cheap", "strong"]
    assert any("strong is unavailable (its circuit is open; retry in" in r
               for r in decision.reasoning), decision.reasoning
    both = gateway.route(prompt, prefer_healthy=True, auto_scale=True)
    assert (both.selected_model, both.fallback_models) == ("runner", ["cheap", "strong"])
    # Every model down: the order stands, the router's choice first.
    for model in ("runner", "cheap"):
        _take_down(gateway, model)
    everyone = gateway.route(prompt, auto_scale=True)
    assert everyone.selected_model == "strong"


def _costs(decision: Any) -> dict[str, float]:
    return {m: round(c, 12) for m, c in decision.expected_costs.items()}


def test_estimate_tokens_prices_the_decision_at_those_tokens(gateway: Gateway) -> None:
    prompt = math_prompt(4)
    a = gateway.route(prompt, estimate_tokens=(1000, 500))
    # Every model's cost is its price on 1,500 tokens (input and output are priced alike here)
    # times the same factor the router prices any request by: the ratios are the prices'.
    assert _costs(a) == _costs(gateway.route(prompt, estimate_tokens=[1500, 0]))
    assert _costs(a) == _costs(gateway.route(prompt, estimate_tokens=(0, 1500)))
    doubled = gateway.route(prompt, estimate_tokens=(2000, 1000))
    assert doubled.expected_costs == pytest.approx({m: 2 * c for m, c in
                                                   a.expected_costs.items()})
    assert a.expected_cost == a.expected_costs[a.selected_model]
    assert a.expected_costs != gateway.route(prompt).expected_costs  # (not characters / 4)
    # They are the costs the decision weighs: a request a thousand times larger goes cheap.
    assert a.selected_model == "strong"
    huge = gateway.route(prompt, estimate_tokens=(1_000_000, 1_000_000))
    assert huge.selected_model == "cheap"
    assert huge.expected_costs == pytest.approx({m: c * 2_000_000 / 1500 for m, c in
                                                 a.expected_costs.items()})


def test_estimate_tokens_needs_a_priced_catalog(fake: FakeProviderProcess,
                                                tmp_path: Path) -> None:
    unpriced = ('  - {name: twin, base_url: "{base}", api_key_env: FAKE_KEY, '
                'profile: strong}\n')
    with Gateway(settings_for(fake, tmp_path, more_models=unpriced), loader=loader,
                 env=KEYS) as gw:
        gw.start()
        with pytest.raises(InvalidInputError) as bad:
            gw.route(math_prompt(5), estimate_tokens=(100, 50))
        assert bad.value.field == "estimate_tokens"
        assert "twin" in str(bad.value) and "input_per_mtok" in str(bad.value)
        assert gw.stats()["total"] == 0
        assert gw.route(math_prompt(5)).selected_model in ("strong", "twin", "runner", "cheap")


def test_ab_test_names_the_experiment_the_request_is_routed_in(experimenting: Gateway
                                                               ) -> None:
    gateway = experimenting
    arms = set()
    for i in range(40):
        decision = gateway.route(math_prompt(i), ab_test="thrift")
        assert decision.experiment == "thrift"
        arms.add(decision.arm)
    assert arms == {"control", "thrifty"}
    assert gateway.route(math_prompt(1), tenant="acme", ab_test="thrift").experiment == "thrift"
    report = gateway.experiment_report("thrift")
    assert sum(a["decisions"] for a in report["arms"]) == 41
    # A promoted arm takes every request, named or not.
    gateway.promote("thrift", "thrifty")
    assert {gateway.route(math_prompt(i), ab_test="thrift").arm for i in range(5)} == {
        "thrifty"}


@pytest.mark.parametrize(("tenant", "name", "says"), [
    (None, "nope", 'no experiment "nope" takes tenant "default"\'s requests, which take part '
                   'in experiment "thrift"'),
    (None, "paused", "disabled"),
    (None, "later", 'no experiment "later" takes tenant "default"\'s requests, which take '
                    'part in experiment "thrift"'),
    ("globex", "thrift", 'no experiment "thrift" takes tenant "globex"\'s requests, which take '
                         'part in experiment "later"'),
    ("acme", "later", 'take part in experiment "thrift", listed before "later"'),
    (None, 3, "must be the name of an experiment"),
])
def test_an_experiment_that_would_not_take_the_request_is_refused(
        experimenting: Gateway, tenant: str | None, name: Any, says: str) -> None:
    gateway = experimenting
    with pytest.raises(InvalidInputError) as bad:
        gateway.route(math_prompt(1), tenant=tenant, ab_test=name)
    assert bad.value.field == "ab_test"
    assert says in str(bad.value), str(bad.value)
    assert gateway.stats()["total"] == 0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prefer_healthy": "yes"}, "prefer_healthy"),
    ({"prefer_healthy": 1}, "prefer_healthy"),
    ({"auto_scale": None}, "auto_scale"),
    ({"estimate_tokens": 100}, "estimate_tokens"),
    ({"estimate_tokens": (100,)}, "estimate_tokens"),
    ({"estimate_tokens": (100, 50.5)}, "estimate_tokens"),
    ({"estimate_tokens": (-1, 50)}, "estimate_tokens"),
    ({"estimate_tokens": (100, 10**9)}, "estimate_tokens"),
    ({"estimate_tokens": (True, 50)}, "estimate_tokens"),
    ({"estimate_tokens": "100,50"}, "estimate_tokens"),
])
def test_a_bad_routing_option_is_refused_naming_it_and_routes_nothing(
        gateway: Gateway, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as bad:
        gateway.route(math_prompt(1), **kwargs)
    assert bad.value.field == field
    assert len(str(bad.value)) < 600
    assert gateway.stats()["total"] == 0


LIMITED = """tenants:
  acme: {}
  globex: {models: [cheap, runner, auto]}
"""


@pytest.mark.parametrize("kind", [set, frozenset])
def test_a_set_of_candidates_is_refused_before_a_tenants_limits_would_miss_it(
        fake: FakeProviderProcess, tmp_path: Path, kind: type) -> None:
    """A set of available_models was routed by: the limits of a tenant held to some models
    read a list alone, so a set naming a model it may not use ({"strong"}) was routed to it.
    It is refused at the door, naming available_models and saying to pass a list, and
    nothing is routed or logged; the same name in a list is the 403 it always was."""
    with Gateway(settings_for(fake, tmp_path, LIMITED), loader=loader, env=KEYS) as gateway:
        gateway.start()
        with pytest.raises(InvalidInputError) as refused:
            gateway.route(math_prompt(1), available_models=kind({"strong"}), tenant="globex")
        assert refused.value.field == "available_models"
        assert "pass a list, in the order you prefer" in str(refused.value)
        with pytest.raises(InvalidInputError):
            gateway.route(math_prompt(1), available_models=kind({"cheap", "runner"}))
        assert gateway.stats()["total"] == 0
        with pytest.raises(PermissionDeniedError, match='may not choose "strong"'):
            gateway.route(math_prompt(1), available_models=["strong"], tenant="globex")
        # (any other iterable of names is read once, as the list the limits check)
        with pytest.raises(PermissionDeniedError, match='may not choose "strong"'):
            gateway.route(math_prompt(1), tenant="globex",
                          available_models=(m for m in ["strong"]))  # type: ignore[arg-type]
        chosen = gateway.route(math_prompt(1), available_models=["cheap", "runner"],
                               tenant="globex")
        assert chosen.selected_model in ("cheap", "runner")


def test_a_dict_of_candidates_is_refused_and_a_generator_held_to_a_tenants_limits(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A dict of available_models was taken as its keys: it is refused at the door, naming
    available_models and saying to pass a list, and nothing is routed or logged. A generator
    is read once, as the list a tenant's limits check and the router routes by: it can name
    no model the tenant may not use, and within them it narrows the choice."""
    with Gateway(settings_for(fake, tmp_path, LIMITED), loader=loader, env=KEYS) as gateway:
        gateway.start()
        for tenant in ("globex", None):
            with pytest.raises(InvalidInputError) as refused:
                gateway.route(math_prompt(1), tenant=tenant,
                              available_models={"strong": 1})  # type: ignore[arg-type]
            assert refused.value.field == "available_models"
            assert "got dict (a mapping); pass a list of the names" in str(refused.value)
        assert gateway.stats()["total"] == 0
        with pytest.raises(PermissionDeniedError, match='may not choose "strong"'):
            gateway.route(math_prompt(1), tenant="globex",
                          available_models=(m for m in ["runner", "strong"]))  # type: ignore[arg-type]
        chosen = gateway.route(math_prompt(1), tenant="globex",
                               available_models=(m for m in ["runner"]))  # type: ignore[arg-type]
        assert chosen.selected_model == "runner"
