"""What a reload that takes a model out of the catalog leaves behind: decisions it answered,
comparisons it took part in and logged traffic that names it. Each is still answered (an
outcome kept, a report computed over the models that remain), never a 500.

Before: feedback on an answer of a model the reload removed failed with a 500
(``ValueError: 'alpha' is not in list``) while pricing the answer against the catalog, and the
suggestions report (re-routing the week's logged traffic) was a 400 about an
``available_models`` nobody sent, for as long as the log held a decision that weighed it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.attack.attack_env import Attacked, chat_body, serving
from tests.fakes.fake_provider import FakeProviderProcess


def drop_alpha(server: Attacked) -> None:
    """Reload the served config without the catalog model ``alpha``."""
    served = server.data_dir.parent / "switchpoint.yaml"
    lines = served.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("  - {name: alpha"))
    del lines[start:start + 2]  # (its entry spans two lines)
    served.write_text("".join(lines), encoding="utf-8")
    r = httpx.post(f"{server.base}/v1/router/reload", headers=server.admin, timeout=30)
    assert r.status_code == 200, r.text
    assert "alpha" not in r.json()["models"], r.text


def test_feedback_on_an_answer_of_a_model_a_reload_removed(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with serving(fake, tmp_path) as server, httpx.Client(base_url=server.base,
                                                          timeout=30) as client:
        routed = client.post("/v1/chat/completions", json=chat_body("which model?", "auto"),
                             headers={"x-switchpoint-models": "alpha"})
        assert routed.status_code == 200, routed.text
        assert routed.headers["x-switchpoint-model"] == "alpha"
        decision_id = routed.headers["x-switchpoint-decision-id"]
        drop_alpha(server)
        for who in ({}, server.admin):
            r = client.post("/v1/feedback", json={"decision_id": decision_id, "score": 0.7},
                            headers=who)
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "alpha" and r.json()["quality"] == 0.7
        failures = [line for line in client.get("/metrics", headers=server.admin).text
                    .splitlines() if 'status="500"' in line]
        assert not failures, failures
        assert "Traceback" not in server.log_text()


def test_suggestions_over_traffic_that_weighed_a_removed_model(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with serving(fake, tmp_path) as server, httpx.Client(base_url=server.base,
                                                          timeout=30) as client:
        for i in range(6):
            routed = client.post("/v1/chat/completions",
                                 json=chat_body(f"route me {i}", "auto"))
            assert routed.status_code == 200, routed.text
        before = client.get("/v1/router/report/suggest", headers=server.admin)
        assert before.status_code == 200, before.text
        drop_alpha(server)
        after = client.get("/v1/router/report/suggest", headers=server.admin)
        assert after.status_code == 200, after.text
        # (no suggestion names the model that is gone, nor sends traffic to it)
        assert "alpha" not in after.text, after.text
