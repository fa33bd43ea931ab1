"""Text an upstream sends that is not Unicode: a lone surrogate (an unpaired ``\\ud800``
escape) in a whole answer, a stream, an error's message or a comparison's answer. Python's
JSON reader takes one, but neither UTF-8 nor the request log can write it: the answer was a 500
with a traceback, and the request went unlogged. It is read as U+FFFD, as a browser reads one."""

from __future__ import annotations

import json

import httpx

from tests.attack.attack_env import Attacked, chat_body

# A lone surrogate, as the fake's percent-decoding writes it (WTF-8 bytes of U+D800).
LONE = "%ED%A0%80"


def test_an_answer_holding_a_lone_surrogate_is_relayed_and_logged(attacked: Attacked) -> None:
    r = httpx.post(f"{attacked.base}/v1/chat/completions",
                   json=chat_body(f"hi [[fake:say:text=half{LONE}way]]", "solo"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "half\ufffdway"
    entry = attacked.entry(r.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok", entry


def test_a_stream_holding_a_lone_surrogate_is_relayed_and_logged(attacked: Attacked) -> None:
    with httpx.stream("POST", f"{attacked.base}/v1/chat/completions",
                      json=chat_body(f"hi [[fake:say:text=half{LONE}way]]", "solo",
                                     stream=True), timeout=10) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
        request_id = r.headers["x-switchpoint-request-id"]
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in lines)
    assert text.strip() == "half\ufffdway", lines
    assert attacked.entry(request_id)["status"] == "ok"


def test_an_upstream_error_whose_message_holds_one_is_told_and_logged(
        attacked: Attacked) -> None:
    for dialect in ("solo", "gamma"):  # (gamma: the Messages API)
        r = httpx.post(f"{attacked.base}/v1/chat/completions",
                       json=chat_body(f"hi [[fake:400:message=bad{LONE}thing]]", dialect),
                       timeout=10)
        assert r.status_code == 400, r.text
        assert "bad\ufffdthing" in r.json()["error"]["message"], r.text
        entry = attacked.entry(r.headers["x-switchpoint-request-id"])
        assert entry["status"] != "ok", entry


def test_a_comparison_whose_answer_holds_one_is_answered(attacked: Attacked) -> None:
    r = httpx.post(f"{attacked.base}/v1/router/preferences/compare",
                   json={"prompt": f"hi [[fake:say:text=half{LONE}way]]",
                         "models": ["solo", "beta"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert [a["content"] for a in r.json()["answers"]] == ["half\ufffdway"] * 2
