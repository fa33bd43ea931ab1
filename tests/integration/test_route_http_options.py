"""``POST /v1/route``'s routing options (``prefer_healthy``, ``auto_scale``, ``estimate_tokens``,
``ab_test``) over a real loopback server: each changes the answer as the in-process gateway's
``route`` option of the same name changes its decision (the same gateway answers both doors
here), a bad one is a 400 naming it that routes nothing, and the answers validate against the
published schema.

Math prompts: ``strong`` is right 90% of the time, ``runner`` 75%, ``cheap`` 20%; prices 10 / 5
/ 1 per million tokens, each way (see tests/integration/learning_env.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.decision import RoutingDecision
from switchpoint.errors import InvalidInputError
from switchpoint.gateway import Gateway
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import learning_server, post
from tests.integration.published_schema import Published
from tests.integration.servers import ThreadServer
from tests.integration.test_gateway_route_options import EXPERIMENTS, _degrade, _take_down


@pytest.fixture
def server(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[ThreadServer]:
    with learning_server(fake, tmp_path) as served:
        yield served


@pytest.fixture
def experimenting(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[ThreadServer]:
    """(A request takes part in its tenant's experiment whether it names it or not, its arm
    drawn at random: the other options are shown without one.)"""
    with learning_server(fake, tmp_path, EXPERIMENTS) as served:
        yield served


def _gateway(server: ThreadServer) -> Gateway:
    return server.service.gateway


def _routed(server: ThreadServer, body: dict[str, Any]) -> dict[str, Any]:
    r = post(server, "/v1/route", body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _same(answer: dict[str, Any], decision: RoutingDecision) -> None:
    """The HTTP answer says what the library's decision says."""
    assert answer["selected_model"] == decision.selected_model
    assert answer["cluster_id"] == decision.cluster_id
    assert answer["expected_error"] == pytest.approx(decision.expected_error)
    assert answer["cost_adjusted_score"] == pytest.approx(decision.cost_adjusted_score)
    assert answer["all_scores"] == pytest.approx(decision.all_scores)


def test_each_option_changes_the_answer_as_the_library_door_does(server: ThreadServer
                                                                  ) -> None:
    gateway = _gateway(server)
    prompt = math_prompt(2)
    assert _routed(server, {"prompt": prompt})["selected_model"] == "strong"

    # prefer_healthy: a degraded strong goes after the healthy models.
    _degrade(gateway, "strong")
    assert _routed(server, {"prompt": prompt})["selected_model"] == "strong"
    healthy = _routed(server, {"prompt": prompt, "prefer_healthy": True})
    assert healthy["selected_model"] == "runner"
    assert healthy["cost_adjusted_score"] == healthy["all_scores"]["runner"]
    _same(healthy, gateway.route(prompt, prefer_healthy=True))
    # (a degraded model is still called: auto_scale alone leaves it first)
    kept = _routed(server, {"prompt": prompt, "auto_scale": True})
    assert kept["selected_model"] == "strong"
    _same(kept, gateway.route(prompt, auto_scale=True))

    # auto_scale: strong's circuit open, the first model that can be called.
    _take_down(gateway, "strong")
    assert _routed(server, {"prompt": prompt, "auto_scale": False})["selected_model"] == (
        "strong")
    scaled = _routed(server, {"prompt": prompt, "auto_scale": True})
    assert scaled["selected_model"] == "runner"
    _same(scaled, gateway.route(prompt, auto_scale=True))

    # estimate_tokens: priced at those tokens; a request large enough goes cheap.
    small = _routed(server, {"prompt": prompt, "estimate_tokens": [1000, 500]})
    assert small["selected_model"] == "strong"
    _same(small, gateway.route(prompt, estimate_tokens=(1000, 500)))
    assert small["all_scores"] != _routed(server, {"prompt": prompt})["all_scores"]
    huge = _routed(server, {"prompt": prompt, "estimate_tokens": [1_000_000, 1_000_000]})
    assert huge["selected_model"] == "cheap"
    _same(huge, gateway.route(prompt, estimate_tokens=(1_000_000, 1_000_000)))


def test_ab_test_names_the_experiment_as_the_library_door_does(experimenting: ThreadServer
                                                               ) -> None:
    server, gateway, prompt = experimenting, _gateway(experimenting), math_prompt(2)
    arms = set()
    for i in range(20):
        named = _routed(server, {"prompt": math_prompt(i), "ab_test": "thrift"})
        assert named["experiment"] == "thrift"
        arms.add(named["arm"])
    assert arms == {"control", "thrifty"}
    assert gateway.route(prompt, ab_test="thrift").experiment == "thrift"


@pytest.mark.parametrize(("option", "value"), [
    ("prefer_healthy", "yes"),
    ("prefer_healthy", 1),
    ("auto_scale", None),
    ("estimate_tokens", 100),
    ("estimate_tokens", [100]),
    ("estimate_tokens", [100, 50, 1]),
    ("estimate_tokens", [100, 50.5]),
    ("estimate_tokens", [-1, 50]),
    ("estimate_tokens", [100, 10**9]),
    ("estimate_tokens", [True, 50]),
    ("estimate_tokens", "100,50"),
    ("estimate_tokens", {"input": 100, "output": 50}),
    ("ab_test", "nope"),
    ("ab_test", "paused"),
    ("ab_test", "later"),
    ("ab_test", ""),
    ("ab_test", "x" * 10_000),
    ("ab_test", 3),
])
def test_a_bad_option_is_a_400_naming_it_and_routes_nothing(
        experimenting: ThreadServer, option: str, value: Any) -> None:
    server = experimenting
    r = post(server, "/v1/route", {"prompt": math_prompt(1), option: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == option, error
    assert len(error["message"]) < 600
    assert _gateway(server).stats()["total"] == 0


@pytest.mark.parametrize(("option", "value"), [
    ("estimate_tokens", [-1, 50]),
    ("estimate_tokens", [100, 10**9]),
    ("ab_test", "nope"),
    ("ab_test", "paused"),
    ("ab_test", "later"),
])
def test_the_refusal_is_the_library_doors(experimenting: ThreadServer, option: str,
                                          value: Any) -> None:
    server = experimenting
    with pytest.raises(InvalidInputError) as bad:
        _gateway(server).route(math_prompt(1), **{option: value})
    r = post(server, "/v1/route", {"prompt": math_prompt(1), option: value})
    assert r.status_code == 400, r.text
    assert bad.value.reason in r.json()["error"]["message"]


def test_estimate_tokens_needs_a_priced_catalog(fake: FakeProviderProcess, tmp_path: Path
                                                ) -> None:
    unpriced = ('  - {name: twin, base_url: "{base}", api_key_env: FAKE_KEY, '
                'profile: strong}\n')
    with learning_server(fake, tmp_path, more_models=unpriced) as server:
        r = post(server, "/v1/route", {"prompt": math_prompt(5), "estimate_tokens": [100, 50]})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "estimate_tokens" and "twin" in error["message"]
        assert "input_per_mtok" in error["message"]


def test_answers_with_options_validate_against_the_published_schema(
        experimenting: ThreadServer) -> None:
    server = experimenting
    document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
    published = Published(document)
    request = document["paths"]["/v1/route"]["post"]["requestBody"]
    body = request["content"]["application/json"]["schema"]["properties"]
    assert body["prefer_healthy"]["type"] == body["auto_scale"]["type"] == "boolean"
    assert body["estimate_tokens"]["minItems"] == body["estimate_tokens"]["maxItems"] == 2
    assert body["estimate_tokens"]["items"] == {"type": "integer", "minimum": 0,
                                                "maximum": 100_000_000}
    assert body["ab_test"]["maxLength"] == 64
    _take_down(_gateway(server), "strong")
    answer = published.valid("POST", "/v1/route", post(server, "/v1/route", {
        "prompt": math_prompt(3), "prefer_healthy": True, "auto_scale": True,
        "estimate_tokens": [500, 200], "ab_test": "thrift"}))
    assert answer["selected_model"] != "strong" and answer["experiment"] == "thrift"


def test_a_key_naming_another_tenants_experiment_learns_nothing_of_it(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # globex's key names acme's experiment (and one that does not exist): both are refused
    # alike, naming globex's own experiment only, never acme's experiment, nor acme.
    admin = "a" * 32
    extra = ("auth: keys\nadmin_token_env: ADMIN_TOKEN\ntenants:\n  acme: {}\n  globex: {}\n"
             "experiments:\n  secret-plan:\n    tenants: [acme]\n"
             "    arms: {a: {}, b: {cost_weight: 2}}\n"
             "  open-trial:\n    tenants: [globex]\n    arms: {a: {}, b: {cost_weight: 2}}\n")
    with learning_server(fake, tmp_path, extra, environ={"ADMIN_TOKEN": admin}) as server:
        key = post(server, "/v1/router/keys", {"tenant": "globex"}, key=admin).json()["key"]
        messages = []
        for name in ("secret-plan", "no-such-plan"):
            r = post(server, "/v1/route", {"prompt": math_prompt(1), "ab_test": name}, key=key)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "ab_test"
            assert "open-trial" in error["message"]
            assert "secret-plan" not in error["message"].replace(f'"{name}"', "")
            assert "acme" not in error["message"]
            messages.append(error["message"].replace(name, "NAME"))
        assert messages[0] == messages[1]
        assert _gateway(server).stats()["total"] == 0
        named = post(server, "/v1/route", {"prompt": math_prompt(1), "ab_test": "open-trial"},
                     key=key)
        assert named.status_code == 200 and named.json()["experiment"] == "open-trial"
