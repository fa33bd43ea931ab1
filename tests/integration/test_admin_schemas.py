"""The admin routes' answers match the schemas the OpenAPI document publishes for them, each
field of which some answer needs: the models' health (before any call, then with a model
failing, one whose circuit is open and one an upstream's Retry-After keeps out) and its
reset."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, get, learning_server, post
from tests.integration.published_schema import Published


def test_model_health_and_its_reset_validate_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        assert published.schema_name("GET", "/v1/router/health") == "HealthSnapshot"
        assert published.schema_name("POST", "/v1/router/health/reset") == "HealthSnapshot"
        fresh = published.valid("GET", "/v1/router/health", get(server, "/v1/router/health"))
        assert set(fresh["models"]) == {"strong", "runner", "cheap"}
        assert fresh["models"]["cheap"]["success_rate"] is None

        fake.script("cheap", *["500"] * 6)  # its circuit opens at the 5th failure in a row
        fake.script("strong", "429:retry_after=30")  # kept out 30 s, not waited for

        def ask(model: str, n: int) -> int:
            return post(server, "/v1/chat/completions", {
                "model": model, "messages": [{"role": "user", "content": math_prompt(n)}]}
                        ).status_code

        assert [ask("cheap", n) for n in range(3)] == [502, 502, 502]  # two tries each
        assert ask("strong", 3) == 429
        chat(server, math_prompt(4), model="runner")
        tried = published.valid("GET", "/v1/router/health", get(server, "/v1/router/health"))
        cheap, strong = tried["models"]["cheap"], tried["models"]["strong"]
        assert cheap["circuit"] == "open" and cheap["retry_in_s"] > 0
        assert cheap["recent_errors"][0]["kind"] == "server_error"
        assert strong["rate_limited_for_s"] > 0
        assert tried["models"]["runner"]["latency_ewma_ms"] is not None

        reset = published.valid("POST", "/v1/router/health/reset",
                                post(server, "/v1/router/health/reset"))
        assert reset["models"]["cheap"]["circuit"] == "closed"
        published.each_field_needed(["HealthSnapshot", "ModelHealth", "HealthError",
                                     "BreakerSettings"])
