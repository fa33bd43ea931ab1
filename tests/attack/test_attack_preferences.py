"""Races and repeats on the preference routes: a blind comparison takes one score, however
many arrive at once.

Before: twelve scores of one blind comparison sent together were each taken (six or seven of
them answered 200, each learned and each revealing the models), where one score is all a
blind comparison takes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.attack.attack_env import Attacked


def test_concurrent_scores_of_a_blind_comparison_take_one(attacked: Attacked) -> None:
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        compared = client.post("/v1/router/preferences/compare", json={
            "prompt": "a blind comparison scored twelve times at once",
            "models": ["alpha", "beta"]})
        assert compared.status_code == 200, compared.text
        compare_id = compared.json()["compare_id"]
        before = client.get("/v1/router/status").json()["tenants"]["default"]

    def score(i: int) -> httpx.Response:
        with httpx.Client(base_url=attacked.base, timeout=30) as own:
            return own.post("/v1/router/preferences/score",
                            json={"compare_id": compare_id, "scores": {"A": i / 12}})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(score, range(12)))
    taken = [a for a in answers if a.status_code == 200]
    assert len(taken) == 1, [(a.status_code, a.text[:120]) for a in answers]
    refused = [a for a in answers if a.status_code != 200]
    assert all(a.status_code == 409 and a.json()["error"]["code"] == "conflict"
               for a in refused), [a.text for a in refused]
    with httpx.Client(base_url=attacked.base, timeout=30) as client:
        after = client.get("/v1/router/status").json()["tenants"]["default"]
        # one outcome learned, not one per answer
        assert (after["learned_router"]["events"]
                == before["learned_router"]["events"] + 1), (before, after)
        again = client.post("/v1/router/preferences/score",
                            json={"compare_id": compare_id, "scores": {"A": 1.0}})
        assert again.status_code == 409, again.text
