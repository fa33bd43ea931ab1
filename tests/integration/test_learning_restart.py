"""Feedback survives ``kill -9`` and a reload: ``switchpoint serve`` as a user runs it (a
subprocess, bundled weights, the real MiniLM embedder), feedback over HTTP, a crash right
after it was acknowledged, a restart, a reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import config_text
from tests.integration.learning_env import scored, serve
from tests.integration.servers import ProcessServer

PROMPT = "Prove that the square root of 2 is irrational, step by step."



def _chat(server: ProcessServer, prompt: str, model: str = "auto") -> Any:
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything", max_retries=0,
                           timeout=30)
    # Among the models with a learned profile (``fresh`` has none: its outcomes are quality
    # observations only).
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-switchpoint-models": "good,cheap,other"}).headers



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
        unscored = _chat(server, "What is the capital of France?")["x-switchpoint-decision-id"]
        named = _chat(server, "Say hello.", model="cheap")["x-switchpoint-decision-id"]
        assert scored(server, named, 0.4)["kind"] == "model"
        server.kill()  # a crash right after the acknowledgements

    with serve(config, data) as server:
        assert _events(server) == 1
        assert _scores(server) == learned  # the same lesson, replayed exactly
        again = scored(server, decision, 1.0)
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
        first = scored(server, unscored, 0.5)  # decided before the crash, scored after
        assert (first["replaced"], first["kind"]) == (False, "decision")
        repeat = scored(server, named, 0.6)
        assert (repeat["replaced"], repeat["previous_quality"]) == (True, 0.4)
        relearned = _scores(server)
        reload = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert reload.status_code == 200, reload.text
        assert _events(server) == 3
        assert _scores(server) == relearned
        third = scored(server, decision, 0.25)
        assert (third["replaced"], third["previous_quality"]) == (True, 1.0)
        final = _scores(server)
        server.kill()

    server = serve(config, data)
    try:
        assert _events(server) == 4
        assert _scores(server) == final
    finally:
        server.terminate()
