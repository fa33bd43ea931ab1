"""Feedback survives ``kill -9`` and a reload: ``switchpoint serve`` as a user runs it (a
subprocess, bundled weights, the real MiniLM embedder), feedback over HTTP (by decision id and
by prompt hash), a crash right after it was acknowledged, a restart, a reload."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import config_text
from tests.integration.learning_env import scored, serve
from tests.integration.servers import ProcessServer

PROMPT = "Prove that the square root of 2 is irrational, step by step."
UNSCORED = "What is the capital of France?"



def _chat(server: ProcessServer, prompt: str, model: str = "auto") -> Any:
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything", max_retries=0,
                           timeout=30)
    # Among the models with a learned profile (``fresh`` has none: its outcomes are quality
    # observations only).
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-switchpoint-models": "good,cheap,other"}).headers



def _by_hash(server: ProcessServer, prompt: str, score: float) -> dict[str, Any]:
    """``POST /v1/feedback`` naming the latest decision of ``prompt`` by its hash (the SHA-256
    of the chat's user turn), which must be taken: its answer."""
    body = {"prompt_hash": hashlib.sha256(prompt.encode()).hexdigest(), "score": score}
    r = httpx.post(f"{server.base}/v1/feedback", json=body, timeout=30)
    assert r.status_code == 200, r.text
    taken: dict[str, Any] = r.json()
    return taken


def _events(server: ProcessServer) -> int:
    status = httpx.get(f"{server.base}/v1/router/status", timeout=30).json()
    return int(status["tenants"].get("default", {}).get("learned_router", {}).get("events", 0))


def _scores(server: ProcessServer) -> dict[str, float]:
    body = httpx.post(f"{server.base}/v1/route", json={"prompt": PROMPT, "cost_weight": 0},
                      timeout=30).json()
    scores: dict[str, float] = body["all_scores"]
    return scores


def test_feedback_survives_kill_9_a_restart_and_a_reload(gw_fake: FakeProviderProcess,
                                                         tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(data)), encoding="utf-8")
    with serve(config, data) as server:
        before = _scores(server)
        routed = _chat(server, PROMPT)
        decision, model = routed["x-switchpoint-decision-id"], routed["x-switchpoint-model"]
        assert scored(server, decision, 0.0)["kind"] == "decision"
        learned = _scores(server)
        assert learned[model] > before[model]  # quality 0 raised the model's expected error
        unscored = _chat(server, UNSCORED)["x-switchpoint-decision-id"]
        named = _chat(server, "Say hello.", model="cheap")["x-switchpoint-decision-id"]
        assert scored(server, named, 0.4)["kind"] == "model"
        server.kill()  # a crash right after the acknowledgements

    with serve(config, data) as server:
        assert _events(server) == 1
        assert _scores(server) == learned  # the same lesson, replayed exactly
        again = scored(server, decision, 1.0)
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
        # Decided before the crash, scored after by its prompt's hash, as by its id.
        first = _by_hash(server, UNSCORED, 0.5)
        assert (first["decision_id"], first["replaced"], first["kind"],
                first["teaches_routing"]) == (unscored, False, "decision", True)
        repeat = scored(server, named, 0.6)
        assert (repeat["replaced"], repeat["previous_quality"]) == (True, 0.4)
        relearned = _scores(server)
        reload = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert reload.status_code == 200, reload.text
        assert _events(server) == 3
        assert _scores(server) == relearned
        third = scored(server, decision, 0.25)
        assert (third["replaced"], third["previous_quality"]) == (True, 1.0)
        fourth = _by_hash(server, UNSCORED, 0.75)  # made before the crash, found after a reload
        assert (fourth["decision_id"], fourth["replaced"], fourth["previous_quality"]) == (
            unscored, True, 0.5)
        final = _scores(server)
        server.kill()

    server = serve(config, data)
    try:
        assert _events(server) == 5
        assert _scores(server) == final
    finally:
        server.terminate()
