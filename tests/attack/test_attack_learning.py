"""Hostile bodies on the learning endpoints (feedback, preference compare and score, status,
experiments): random JSON, and random values in each field of otherwise valid bodies. Every one
is answered below 500, with an error body, and nothing is logged as a server failure."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.attack.attack_env import Attacked

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)

VALID: dict[str, dict[str, Any]] = {
    "/v1/feedback": {"decision_id": "0" * 32, "score": 0.5, "model": "alpha",
                     "comment": "ok"},
    "/v1/router/preferences/compare": {"messages": [{"role": "user", "content": "hi"}],
                                       "models": ["alpha", "beta"], "max_tokens": 8},
    "/v1/router/preferences/score": {"compare_id": "0" * 32, "scores": {"A": 1.0}},
}

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def render(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def check(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code in (502, 503, 504), (r.request.url, r.text)
    if r.status_code >= 400:
        assert "error" in r.json(), r.text


@FUZZ
@given(value=VALUES)
def test_random_json_on_the_learning_endpoints(attacked: Attacked, value: object) -> None:
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        for path in VALID:
            check(client.post(path, content=render(value),
                              headers={"content-type": "application/json"}))


@FUZZ
@given(path=st.sampled_from(sorted(VALID)), data=st.data())
def test_each_field_replaced_by_a_random_value(attacked: Attacked, path: str,
                                                data: st.DataObject) -> None:
    body = dict(VALID[path])
    field = data.draw(st.sampled_from(sorted(body)))
    body[field] = data.draw(VALUES)
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        check(client.post(path, content=render(body),
                          headers={"content-type": "application/json"}))


@FUZZ
@given(name=st.text(max_size=300), tenant=st.text(max_size=300))
def test_random_names_in_paths_and_queries(attacked: Attacked, name: str, tenant: str) -> None:
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        path = "/v1/router/experiments/" + (quote(name, safe="") or "x")
        check(client.get(path))
        check(client.post(path + "/promote"))
        check(client.get("/v1/router/status", params={"tenant": tenant}))


def test_the_endpoints_under_attack_are_live(attacked: Attacked) -> None:
    """The fuzzed endpoints work: the fuzzing reaches them, not a 404 for all."""
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        compared = client.post("/v1/router/preferences/compare",
                               json=VALID["/v1/router/preferences/compare"])
        assert compared.status_code == 200, compared.text
        answers = compared.json()
        scored = client.post("/v1/router/preferences/score", json={
            "compare_id": answers["compare_id"],
            "scores": {answers["answers"][0]["label"]: 1.0}})
        assert scored.status_code == 200, scored.text
        unknown = client.post("/v1/feedback", json=VALID["/v1/feedback"])
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "decision_not_found"
        assert client.get("/v1/router/status").status_code == 200


def test_negative_zero_is_taken_as_zero(attacked: Attacked) -> None:
    # A score or a cost of -0.0 was taken as it came: answered, kept in the feedback log and
    # shown as "-0.0".
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        routed = client.post("/v1/route", json={"prompt": "negative zero, once"})
        assert routed.status_code == 200, routed.text
        r = client.post("/v1/feedback", headers={"content-type": "application/json"},
                        content=b'{"decision_id": "%s", "score": -0.0, "cost": -0.0}'
                        % routed.json()["decision_id"].encode())
        assert r.status_code == 200, r.text
        assert '"quality":0.0' in r.text and '"cost":0.0' in r.text, r.text
        assert "-0" not in r.text
        compared = client.post("/v1/router/preferences/compare",
                               json=VALID["/v1/router/preferences/compare"]).json()
        label = compared["answers"][0]["label"]
        scored = client.post("/v1/router/preferences/score",
                             headers={"content-type": "application/json"},
                             content=b'{"compare_id": "%s", "scores": {"%s": -0.0}}'
                             % (compared["compare_id"].encode(), label.encode()))
        assert scored.status_code == 200, scored.text
        assert '"quality":0.0' in scored.text and "-0" not in scored.text, scored.text
