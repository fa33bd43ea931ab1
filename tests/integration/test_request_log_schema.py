"""The request log's pages (GET /v1/router/requests) match the schema the OpenAPI document
publishes for them, each field of which some entry needs: an answer after a try cut part-way
(charged its worst case), a model an upstream's Retry-After keeps out, an answer in a
session, a stream. (Entries an older switchpoint wrote are checked in test_upgrade.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, get, learning_server, post
from tests.integration.published_schema import Published

BUDGETED = """budgets:
  total: [100/day]
"""
PAGE = "/v1/router/requests"


def test_the_request_log_validates_against_the_published_schema(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, BUDGETED) as server:
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        assert published.schema_name("GET", PAGE) == "RequestLogPage"
        empty = published.valid("GET", PAGE, get(server, PAGE))
        assert empty == {"data": [], "next_cursor": None}

        fake.script("cheap", "cut")  # half an answer, then the connection drops: billed
        cut = post(server, "/v1/chat/completions", {
            "model": "cheap", "messages": [{"role": "user", "content": math_prompt(1)}]})
        assert cut.status_code == 200, cut.text
        fake.script("strong", "429:retry_after=30")
        assert post(server, "/v1/chat/completions", {
            "model": "strong", "messages": [{"role": "user", "content": math_prompt(2)}]}
                    ).status_code == 429
        chat(server, math_prompt(3), session="s-1")
        assert list(chat(server, math_prompt(4), session="s-1", stream=True)[1])

        entries: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = published.valid("GET", PAGE, get(server, PAGE, **params))
            entries += page["data"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert len(entries) == 4 and entries[0]["stream"] is True
        first, second = entries[3]["attempts"], entries[2]["attempts"]
        assert first[0]["outcome"] != "ok" and first[0]["charged_usd"] > 0
        assert second[0]["retry_after_s"] == 30
        assert entries[0]["pin"]["pin_state"] == entries[0]["pin_state"]
        # (a pin's note says why a named model's pin is not what the windows said: rare)
        published.each_field_needed(["RequestLogPage", "RequestEntry", "LoggedAttempt",
                                     "LoggedPin"], optional=["LoggedPin.note"])
