"""A try a provider may have billed without an answer is charged to the request's budgets.

A try that ended after its request was sent, in a way that says the model may have been
generating (a read timeout mid-answer, the request's deadline cutting a plain call, a stream cut
before its first content), is charged its model's worst case: the prompt and all the answer it
could have written, as held for it. A try the upstream refused with an error status is not
billed, and not charged. Through a real server, the official ``openai`` client with a key that
has a budget, and the fake provider; the ledger and the log read back from SQLite, the worst
cases from the request's own reservation (a model budget on each model holds that model's).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from switchpoint.catalog import text_bytes, text_tokens, usd_text
from switchpoint.config import DB_FILENAME, load_settings
from switchpoint.gateway.capabilities import needs_of
from switchpoint.governance.governor import prompt_bound, worst_cost
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, user
from tests.integration.servers import ThreadServer, thread_server

ADMIN_TOKEN = "admin-secret-token"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# Reads give up after 1 s of silence (a stream, after 1 s without content); the whole request
# after 10 s. The fake answers a try not meant to time out in some tens of milliseconds, ten
# times that on a machine running the suite's four parts on two cores, far within them; a try
# meant to time out gets a silence far longer (a minute), which only the gateway's hanging up
# ends for it, so no try races its window. (Most tests here wait out one such window.)
GATEWAY = """gateway:
  connect_timeout_s: 5
  read_timeout_s: 1
  first_token_timeout_s: 1
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_retry_after_s: 2
  max_total_s: 10
"""
# The request's deadline cutting an answer that never falls silent for a read's window (of
# 30 s): its 1.5 s are many times what a loaded machine takes to send the request upstream.
SHORT_DEADLINE = GATEWAY.replace("read_timeout_s: 1", "read_timeout_s: 30").replace(
    "max_total_s: 10", "max_total_s: 1.5")
GOVERNANCE = """auth: keys
admin_token_env: SP_TEST_ADMIN
tenants:
  acme:
    models: [cheap, good, other]
budgets:
  models: {cheap: 1000/day, good: 1000/day, other: 1000/day}
"""

# Reads that wait as long as a loaded machine may take to bring a second request upstream.
PATIENT = GATEWAY.replace("read_timeout_s: 1", "read_timeout_s: 30").replace(
    "max_total_s: 10", "max_total_s: 60")

# The same callers with no budget anywhere: a key's tokens-per-minute limit alone governs it.
RATED = GOVERNANCE.split("budgets:")[0]


@contextmanager
def _server(fake: FakeProviderProcess, root: Path, governance: str, gateway: str = GATEWAY,
            *, unasked: str | None = None) -> Iterator[ThreadServer]:
    """A service of the test gateway's models, with ``governance`` (and ``gateway``)
    configured; ``unasked``, a model whose streams are not asked for usage
    (``stream_usage: false``)."""
    text = config_text(fake, str(root / "data"), gateway=gateway)
    if unasked is not None:
        line = f"  - {{name: {unasked}, "
        assert line in text
        text = text.replace(line, line + "stream_usage: false, ")
    config = root / "switchpoint.yaml"
    config.write_text(text + governance, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


@pytest.fixture(scope="module")
def gov(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[ThreadServer]:
    with _server(gw_fake, tmp_path_factory.mktemp("billed"), GOVERNANCE) as server:
        yield server


@pytest.fixture(scope="module")
def rated(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ThreadServer]:
    with _server(gw_fake, tmp_path_factory.mktemp("rated"), RATED) as server:
        assert not server.service.gateway.settings.budgets.any
        yield server


@pytest.fixture(scope="module")
def short(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ThreadServer]:
    """A service whose requests' deadline is short (SHORT_DEADLINE); each test makes its own
    key."""
    with _server(gw_fake, tmp_path_factory.mktemp("short"), GOVERNANCE, SHORT_DEADLINE
                 ) as server:
        yield server


@pytest.fixture
def key(gov: ThreadServer) -> dict[str, Any]:
    """A new key of its own, with a budget, and every model's health forgotten."""
    gov.service.gateway.reset_health()
    return _new_key(gov)


def _new_key(server: ThreadServer) -> dict[str, Any]:
    """A new key of tenant acme with a budget of $5 a day."""
    r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme", "budget": "5/day"},
                   headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _read(server: ThreadServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db_path = Path(server.service.gateway.settings.data_dir) / DB_FILENAME
    with closing(sqlite3.connect(db_path)) as db:
        return db.execute(sql, args).fetchall()


def _logged(server: ThreadServer, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = _read(server, "SELECT status, cost_usd, charged_usd, attempts, reasoning "
                             "FROM requests WHERE id = ?", request_id)
        if rows:
            status, cost, charged, attempts, reasoning = rows[0]
            return {"id": request_id, "status": status, "cost": cost, "charged": charged,
                    "attempts": json.loads(attempts), "reasoning": json.loads(reasoning)}
        time.sleep(0.02)
    raise AssertionError(f"request {request_id} is not in the log")


def _worst(server: ThreadServer, fake: FakeProviderProcess, model: str) -> float:
    """``model``'s worst case for the request the fake received last: its prompt's bound and
    the whole output cap, at the catalog's prices."""
    settings = server.service.gateway.settings
    body = fake.requests()[-1]["body"]
    catalog = settings.catalog()
    assert catalog is not None
    return worst_cost(catalog[model],
                      prompt_bound(body, settings.governance.image_tokens), body["max_tokens"])


def _charged(server: ThreadServer, request_id: str) -> dict[str, float]:
    """What the ledger charged ``request_id``, by model."""
    out: dict[str, float] = {}
    for model, amount in _read(server, "SELECT model, amount_usd FROM spend WHERE "
                                       "request_id = ? AND kind = 'settle'", request_id):
        out[model] = out.get(model, 0.0) + amount
    return out


def _spent(server: ThreadServer, key_id: str) -> float:
    rows = _read(server, "SELECT coalesce(sum(amount_usd), 0) FROM spend WHERE key_id = ? "
                         "AND kind = 'settle'", key_id)
    return float(rows[0][0])


def test_a_read_timeout_mid_answer_is_charged_beside_the_answer(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # cheap sends its headers, then nothing: the read times out mid-answer; its retry answers.
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000,
        messages=user("stalls once [[fake:once:stall:seconds=60]]"))
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    worst = {m: _worst(gov, gw_fake, m) for m in ("cheap", "good")}
    assert entry["status"] == "ok" and entry["cost"] > 0
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("read_timeout", pytest.approx(worst["cheap"])), ("ok", None)]
    assert entry["charged"] == pytest.approx(worst["cheap"] + entry["cost"])
    assert _charged(gov, request_id) == {"cheap": pytest.approx(entry["charged"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    assert [note.split(" for 1 try ")[0] for note in entry["reasoning"]
            if "with no answer" in note] == [f"Budget: charged {usd_text(worst['cheap'])}"]


def test_the_deadline_cutting_a_plain_answer_is_charged_the_models_worst_case(
        gw_fake: FakeProviderProcess, short: ThreadServer) -> None:
    # good never falls silent, but its answer takes far longer than the request's deadline.
    short.service.gateway.reset_health()
    _deadline_cut(short, gw_fake)


def _deadline_cut(gov: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    key = _new_key(gov)
    with pytest.raises(openai.APIStatusError) as caught:
        client(gov, key["key"]).chat.completions.create(
            model="good", max_tokens=1000,
            messages=user("very long answer [[fake:trickle:every=0.2]]"))
    request_id = caught.value.response.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    worst = {m: _worst(gov, gw_fake, m) for m in ("cheap", "good")}
    assert entry["status"] == "error" and entry["cost"] is None
    assert [(a["model"], a["outcome"]) for a in entry["attempts"]] == [("good", "read_timeout")]
    assert entry["attempts"][0]["charged_usd"] == pytest.approx(worst["good"])
    assert entry["charged"] == pytest.approx(worst["good"])
    assert _charged(gov, request_id) == {"good": pytest.approx(worst["good"])}
    assert _spent(gov, key["id"]) == pytest.approx(worst["good"])


def test_a_stream_cut_before_its_first_content_is_charged_beside_the_answer(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    stream = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, stream=True,
        messages=user("cut at once [[fake:once:cut:after=0]]"))
    request_id = stream.headers["x-switchpoint-request-id"]
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text
    entry = _logged(gov, request_id)
    worst = {m: _worst(gov, gw_fake, m) for m in ("cheap", "good")}
    assert entry["status"] == "ok" and entry["cost"] > 0
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("stream_broken", pytest.approx(worst["cheap"])), ("ok", None)]
    assert entry["charged"] == pytest.approx(worst["cheap"] + entry["cost"])
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])


def test_tries_the_upstream_refused_are_not_charged(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # cheap answers 500 (an error status: not billed), then its retry answers.
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000,
        messages=user("refused [[fake:once:500]]"))
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("server_error", None), ("ok", None)]
    assert entry["charged"] == pytest.approx(entry["cost"]) and entry["cost"] > 0
    assert _spent(gov, key["id"]) == pytest.approx(entry["cost"])
    assert not any("may have billed" in note for note in entry["reasoning"])


def test_a_stream_answered_whole_is_charged_the_usage_its_upstream_reports(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # cheap ignores stream: true and answers one whole JSON answer of 20 + 500 tokens.
    stream = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, stream=True,
        messages=user("answered whole [[fake:whole:prompt=20,completion=500]]"))
    request_id = stream.headers["x-switchpoint-request-id"]
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text.startswith("Echo from cheap")
    entry = _logged(gov, request_id)
    price = (20 * 0.5 + 500 * 1.5) / 1e6  # cheap's catalog prices per million tokens
    assert entry["status"] == "ok" and entry["cost"] == pytest.approx(price)
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [("ok", None)]
    assert entry["charged"] == pytest.approx(price)
    assert _charged(gov, request_id) == {"cheap": pytest.approx(price)}
    assert _spent(gov, key["id"]) == pytest.approx(price)
    assert any("cheap answered the stream request with a whole answer" in note
               for note in entry["reasoning"])


@pytest.mark.parametrize(("stream", "usage"), [
    (False, "prompt=20,completion=500"), (False, "nousage=1"),
    (True, "prompt=20,completion=500"), (True, "whole prompt=20,completion=500")],
    ids=["plain", "plain-no-usage", "stream", "stream-answered-whole"])
def test_an_answer_holding_no_choice_fails_over_charged_what_it_reports(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess, stream: bool,
        usage: str) -> None:
    # cheap answers a 200 whose choices list is empty (and its usage, or none; streamed, each
    # chunk's, then its usage and [DONE]): it was passed on as ok (streamed, as an empty
    # stream) and charged as an answer. It is a broken answer, as a stream broken before its
    # first content is: its retry answers, and the broken try is charged what the usage it
    # reported costs (the upstream billed it), else its model's worst case. So is a stream
    # request answered with such a whole answer (whole), as a plain answer is.
    behaviour, _, usage = usage.rpartition(" ")
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, stream=stream,
        messages=user(f"no choice [[fake:once:{behaviour or 'usage'}:index=,{usage}]]"))
    parsed = raw.parse()
    if isinstance(parsed, ChatCompletion):
        text, models = parsed.choices[0].message.content or "", {parsed.model}
    else:
        chunks = list(parsed)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        models = {c.model for c in chunks}
    assert text.startswith("Echo from cheap") and models == {"cheap"}
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    reported = (20 * 0.5 + 500 * 1.5) / 1e6  # cheap's catalog prices per million tokens
    broken = reported if usage.startswith("prompt") else _worst(gov, gw_fake, "cheap")
    assert entry["status"] == "ok" and entry["cost"] > 0
    streamed = stream and not behaviour  # (a whole answer is read as a plain one is)
    outcome = "stream_broken" if streamed else "malformed_response"
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        (outcome, pytest.approx(broken)), ("ok", None)]
    assert ("before any content" if streamed else "the answer holds no choice") in (
        entry["attempts"][0]["error"])
    assert entry["charged"] == pytest.approx(broken + entry["cost"])
    assert _charged(gov, request_id) == {"cheap": pytest.approx(entry["charged"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    how = ("each at the usage its upstream reported, else its model's worst case"
           if usage.startswith("prompt") else "each at its model's worst case")
    assert [note.split(" for 1 try ")[0] for note in entry["reasoning"]
            if "with no answer" in note] == [f"Budget: charged {usd_text(broken)}"]
    assert any(f"{how}: cheap #1 {outcome}" in note for note in entry["reasoning"])


def test_a_billed_try_reporting_more_than_its_worst_case_is_charged_and_said_once(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # cheap answers a 200 holding no choice whose usage (100,000 tokens written) is past
    # what the request could use (max_tokens 1000): the try is charged its worst case, and
    # the warning saying so is logged once (it was logged twice: once as the try's charge
    # was noted in the log, again as the budgets were charged).
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    governance = logging.getLogger("switchpoint.governance")
    governance.addHandler(handler)
    try:
        raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
            model="cheap", max_tokens=1000, messages=user(
                "no choice, past its worst case "
                "[[fake:once:usage:index=,prompt=20,completion=16000]]"))
        request_id = raw.headers["x-switchpoint-request-id"]
        entry = _logged(gov, request_id)
    finally:
        governance.removeHandler(handler)
    worst = _worst(gov, gw_fake, "cheap")
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("malformed_response", pytest.approx(worst)), ("ok", None)]
    assert entry["charged"] == pytest.approx(worst + entry["cost"])
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    past = [m for m in said if request_id in m and "reported usage costing" in m]
    assert len(past) == 1, said
    assert "charged the worst case" in past[0]
    # (Its amounts by the one rule of dollars, to the places the ledger keeps.)
    assert f"more than the {usd_text(worst)} worst case held for it" in past[0], past[0]


@pytest.mark.parametrize("usage", ["prompt=20,completion=500", "nousage=1"],
                         ids=["usage", "no-usage"])
@pytest.mark.parametrize(("indices", "says"), [
    ("1e30", "choice 0 has the index 1e+30"), ("0;0", "two choices have the index 0")],
    ids=["out-of-range", "repeated"])
def test_a_plain_answer_misnumbering_its_choices_fails_over_charged_what_it_reports(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess, indices: str,
        says: str, usage: str) -> None:
    # cheap answers a 200 whose choices are misnumbered (an index of 1e30, one repeated): it
    # failed over, its try charged nothing, though the upstream generated and billed it. It
    # is charged as an answer holding no choice is: what the usage it reported costs, else
    # its model's worst case.
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000,
        messages=user(f"misnumbered [[fake:once:usage:index={indices},{usage}]]"))
    completion = raw.parse()
    assert (completion.choices[0].message.content or "").startswith("Echo from cheap")
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    reported = (20 * 0.5 + 500 * 1.5) / 1e6  # cheap's catalog prices per million tokens
    broken = reported if usage.startswith("prompt") else _worst(gov, gw_fake, "cheap")
    assert entry["status"] == "ok" and entry["cost"] > 0
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("malformed_response", pytest.approx(broken)), ("ok", None)]
    assert says in entry["attempts"][0]["error"]
    assert entry["charged"] == pytest.approx(broken + entry["cost"])
    assert _charged(gov, request_id) == {"cheap": pytest.approx(entry["charged"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    assert any("answered with no choice or misnumbered ones" in note
               and "cheap #1 malformed_response" in note for note in entry["reasoning"])


def _streamed_once_then_answered(server: ThreadServer, key: dict[str, Any],
                                 behaviour: str, model: str = "cheap") -> dict[str, Any]:
    """The log entry of a stream request of ``model`` whose first try does ``behaviour``
    (once): it fails over before any content, and its retry answers, its text reaching the
    client."""
    stream = client(server, key["key"]).chat.completions.with_raw_response.create(
        model=model, max_tokens=1000, stream=True,
        messages=user(f"broken before its content [[fake:once:{behaviour}]]"))
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Echo from ") and {c.model for c in chunks} == {model}
    entry = _logged(server, stream.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok" and entry["cost"] > 0
    return entry


@pytest.mark.parametrize("usage", ["each=1,prompt=20,completion=500", "prompt=20,completion=500"],
                         ids=["usage", "no-usage"])
@pytest.mark.parametrize(("indices", "says"), [
    ("1e30", "choice 0 has the index 1e+30"), ("0;0", "two choices have the index 0")],
    ids=["out-of-range", "repeated"])
def test_a_stream_chunk_misnumbering_its_choices_before_any_content_is_charged_its_usage(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess, indices: str,
        says: str, usage: str) -> None:
    # cheap's stream opens with a chunk whose choices are misnumbered, carrying the usage of
    # the answer (each chunk does, as a server reporting usage continuously sends it), or
    # none: it fails over before any content, charged what that usage costs (the upstream
    # billed it, as a plain answer so numbered reports it), else its model's worst case. It
    # was charged the worst case though it reported its usage.
    entry = _streamed_once_then_answered(gov, key, f"usage:index={indices},{usage}")
    reported = (20 * 0.5 + 500 * 1.5) / 1e6  # cheap's catalog prices per million tokens
    assert reported < _worst(gov, gw_fake, "cheap")
    broken = reported if usage.startswith("each") else _worst(gov, gw_fake, "cheap")
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("stream_broken", pytest.approx(broken)), ("ok", None)]
    assert says in entry["attempts"][0]["error"]
    assert entry["charged"] == pytest.approx(broken + entry["cost"])
    assert _charged(gov, entry["id"]) == {"cheap": pytest.approx(entry["charged"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])


@pytest.mark.parametrize(("behaviour", "says"), [
    # choices: [] throughout, then the usage chunk, then a clean end without [DONE]
    ("nodone:index=", "the stream ended before any content"),
    # the opening (role) chunk, carrying the answer's usage, then a clean end: no content,
    # no finish reason, no end marker
    ("nofinish:after=0,each=1", "the stream ended before any content"),
    # the opening chunk, carrying the answer's usage, then silence past the first token's
    # timeout
    ("stall:seconds=60,each=1", "no content within the first-token timeout"),
    # choices: [] throughout, then the usage chunk and [DONE] (charged so already)
    ("usage:index=", "with its end marker before any content")],
    ids=["no-done", "ended-clean", "silent", "done"])
def test_a_stream_broken_before_any_content_is_charged_the_usage_an_earlier_chunk_reported(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess, behaviour: str,
        says: str) -> None:
    # cheap's stream reports its usage in a chunk before any content, then ends, or goes
    # silent, before any content (without [DONE]): it fails over, charged what that usage
    # costs, as a stream ending with [DONE] before any content is. It was charged its worst
    # case.
    entry = _streamed_once_then_answered(gov, key, f"{behaviour},prompt=20,completion=500")
    reported = (20 * 0.5 + 500 * 1.5) / 1e6  # cheap's catalog prices per million tokens
    assert reported < _worst(gov, gw_fake, "cheap")
    outcome = "first_token_timeout" if behaviour.startswith("stall") else "stream_broken"
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        (outcome, pytest.approx(reported)), ("ok", None)]
    assert says in entry["attempts"][0]["error"], entry["attempts"][0]["error"]
    assert entry["charged"] == pytest.approx(reported + entry["cost"])
    assert _charged(gov, entry["id"]) == {"cheap": pytest.approx(entry["charged"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    assert any("each at the usage its upstream reported, else its model's worst case: "
               f"cheap #1 {outcome}" in note for note in entry["reasoning"])


@pytest.mark.parametrize(("model", "behaviour", "thought", "prompt"), [
    ("cheap", "nofinish:after=0,reasoning=250", 250, None),
    ("cheap", "malformed:after=0,reasoning=250,reasoning_key=reasoning", 250, None),
    ("other", "nofinish:after=0,prompt=40,thinking=250", 250, 40),
    ("other", "malformed:after=0,prompt=40,thinking=150,redacted=100", 250, 40)],
    ids=["reasoning-ended", "reasoning-malformed", "thinking-ended", "redacted-malformed"])
def test_a_stream_broken_while_reasoning_is_charged_the_estimate_of_what_it_generated(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess, model: str,
        behaviour: str, thought: int, prompt: int | None) -> None:
    # The first try streams reasoning (an OpenAI-compatible server's reasoning_content or
    # reasoning, an Anthropic thinking or redacted_thinking block), then breaks before any
    # content, without usage; its retry answers. The upstream billed what it generated: the
    # broken try is charged the estimate of the prompt (the count an Anthropic upstream
    # reported at its start) and the reasoning sent, not its model's worst case.
    entry = _streamed_once_then_answered(gov, key, behaviour, model)
    messages = user(f"broken before its content [[fake:once:{behaviour}]]")
    estimate, worst = _bounds(gov, model, messages, "", prompt=prompt, thought=thought)
    assert estimate < worst == pytest.approx(_worst(gov, gw_fake, model))
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("stream_broken", pytest.approx(estimate)), ("ok", None)]
    assert entry["charged"] == pytest.approx(estimate + entry["cost"])
    assert _charged(gov, entry["id"]) == {model: pytest.approx(entry["charged"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    said = (f"{prompt} prompt tokens (as the upstream reported it)" if prompt is not None
            else f"{needs_of({'messages': messages}).prompt_tokens} prompt tokens (the prompt "
                 "as the gateway estimates it)")
    notes = [n for n in entry["reasoning"] if n.startswith("Budget: charged ")]
    assert len(notes) == 1, entry["reasoning"]
    assert ("else the estimate of the reasoning it sent before it broke or was cut off, else "
            f"its model's worst case: {model} #1 stream_broken (estimated: {said} and "
            f"{text_tokens(thought)} answer tokens, for the {thought} bytes, in UTF-8, of "
            f"reasoning it sent before any content, {usd_text(estimate)})") in notes[0], notes[0]


def test_a_stream_cut_while_reasoning_is_charged_what_came_before_the_cut(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # cheap reasons, then its connection is reset before any content: every byte it sent
    # before the reset is read, however late the gateway reads after the reset (it read only
    # part of them, or none, when the reset was seen first), and the try is charged the
    # estimate of all the reasoning, as its note says, below its worst case.
    entry = _streamed_once_then_answered(gov, key, "cut:after=0,reasoning=300")
    messages = user("broken before its content [[fake:once:cut:after=0,reasoning=300]]")
    charged = entry["attempts"][0]["charged_usd"]
    assert entry["attempts"][0]["outcome"] == "stream_broken"
    notes = [n for n in entry["reasoning"] if n.startswith("Budget: charged ")]
    assert len(notes) == 1, entry["reasoning"]
    assert "300 bytes, in UTF-8, of reasoning it sent before any content" in notes[0], notes[0]
    assert charged == pytest.approx(_bounds(gov, "cheap", messages, "", thought=300)[0])
    assert charged < _worst(gov, gw_fake, "cheap")
    assert _spent(gov, key["id"]) == pytest.approx(charged + entry["cost"])


# Reads wait longer than the request's deadline: a stream silent before its content is cut
# off by the deadline (or its caller), not by a read's window. Its 2 s are many times what a
# loaded machine takes to send the request upstream and read the reasoning sent at once.
CUT_OFF = PATIENT.replace("first_token_timeout_s: 1", "first_token_timeout_s: 60").replace(
    "max_total_s: 60", "max_total_s: 2")


@pytest.fixture(scope="module")
def cut_off(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ThreadServer]:
    with _server(gw_fake, tmp_path_factory.mktemp("cut_off"), GOVERNANCE, CUT_OFF) as server:
        yield server


def _logged_of(server: ThreadServer, key_id: str) -> dict[str, Any]:
    """The log entry of the one request of ``key_id`` (its caller, gone, had no header)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = _read(server, "SELECT id FROM requests WHERE key_id = ?", key_id)
        if rows:
            assert len(rows) == 1, rows
            return _logged(server, rows[0][0])
        time.sleep(0.02)
    raise AssertionError(f"no request of key {key_id} is in the log")


def _charged_what_came(server: ThreadServer, fake: FakeProviderProcess, key: dict[str, Any],
                       entry: dict[str, Any], model: str, messages: list[Any], thought: int,
                       prompt: int | None, outcomes: set[str]) -> None:
    """Assert ``entry``'s one try, cut off before any content (``outcomes``: how), was
    charged the estimate of the prompt and the ``thought`` bytes of reasoning its upstream
    sent before it went silent (below its worst case), its budget and ledger alike."""
    estimate, worst = _bounds(server, model, messages, "", prompt=prompt, thought=thought)
    assert estimate < worst == pytest.approx(_worst(server, fake, model))
    [attempt] = entry["attempts"]
    assert attempt["outcome"] in outcomes, entry
    assert attempt["charged_usd"] == pytest.approx(estimate)
    assert entry["cost"] is None and entry["charged"] == pytest.approx(estimate)
    assert _charged(server, entry["id"]) == {model: pytest.approx(estimate)}
    assert _spent(server, key["id"]) == pytest.approx(estimate)
    notes = [n for n in entry["reasoning"] if n.startswith("Budget: charged ")]
    assert len(notes) == 1, entry["reasoning"]
    assert (f"{model} #1 {attempt['outcome']} (estimated: " in notes[0]
            and f"for the {thought} bytes, in UTF-8, of reasoning it sent before any content"
            in notes[0]), notes[0]


@pytest.mark.parametrize(("model", "behaviour", "thought", "prompt"), [
    ("cheap", "stall:after=0,reasoning=300,seconds=60", 300, None),
    ("other", "stall:after=0,prompt=40,thinking=200,redacted=100,seconds=60", 300, 40)],
    ids=["reasoning", "thinking"])
def test_a_stream_the_deadline_cuts_while_reasoning_is_charged_what_came(
        cut_off: ThreadServer, gw_fake: FakeProviderProcess, model: str, behaviour: str,
        thought: int, prompt: int | None) -> None:
    # The upstream sends its reasoning (or thinking) at once, then nothing for a minute: the
    # request's deadline cuts it off before any content. It is charged the estimate of the
    # prompt and the reasoning that came, not its model's worst case.
    key = _new_key(cut_off)
    messages = user(f"reasons, then silence [[fake:{behaviour}]]")
    with pytest.raises(openai.APIStatusError) as caught:
        list(client(cut_off, key["key"]).chat.completions.create(
            model=model, max_tokens=1000, stream=True, messages=messages))
    entry = _logged(cut_off, caught.value.response.headers["x-switchpoint-request-id"])
    assert entry["status"] == "error"
    _charged_what_came(cut_off, gw_fake, key, entry, model, messages, thought, prompt,
                       {"read_timeout"})


def test_a_stream_its_caller_leaves_while_reasoning_is_charged_what_came(
        cut_off: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # The upstream sends its reasoning at once, then nothing for a minute; the client gives
    # up waiting for content after 1 s (before the request's deadline) and hangs up. The try
    # is charged the estimate of the prompt and the reasoning that came, not its model's
    # worst case.
    key = _new_key(cut_off)
    messages = user("reasons, then silence [[fake:stall:after=0,reasoning=300,seconds=60]]")
    with pytest.raises(openai.APITimeoutError):
        list(client(cut_off, key["key"], timeout=1).chat.completions.create(
            model="cheap", max_tokens=1000, stream=True, messages=messages))
    entry = _logged_of(cut_off, key["id"])
    # (logged as closed by the client, unless a loaded machine let the deadline come first)
    assert entry["status"] in {"client_closed", "error"}, entry
    _charged_what_came(cut_off, gw_fake, key, entry, "cheap", messages, 300, None,
                       {"client_closed", "read_timeout"})


def test_each_try_after_a_billed_one_is_held_before_it_is_sent(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # good stalls mid-answer on both its tries; its fallback other answers. The request held
    # the dearest candidate's worst case once (good's); each try after a billed one holds its
    # own worst case more before it is sent, so the budget never holds less than it may owe.
    ledger = gov.service.gateway.governor.ledger
    account = f"key:{key['id']}"
    # other answers only once the test has read what is held while it is called: it waits
    # upstream for a second request asking to meet it, which the test sends to the fake.
    release = user("meets other [[fake:together:n=2,seconds=30]]")
    gw_fake.script("good", "stall:seconds=60", "stall:seconds=60")
    gw_fake.script("claude-fake-2", "together:n=2,seconds=30")
    sent = len(gw_fake.requests())
    answers: dict[str, Any] = {}

    def ask() -> None:
        try:
            answers["raw"] = client(gov, key["key"]).chat.completions.with_raw_response.create(
                model="good", max_tokens=1000, messages=user("stalls"))
        except Exception as exc:  # (reported by the assertions below)
            answers["raw"] = exc

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        deadline = time.monotonic() + 30
        while len(gw_fake.requests()) < sent + 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # (until other's try, held before it was sent, is upstream)
        assert [r["body"]["model"] for r in gw_fake.requests()[sent:]] == [
            "good", "good", "claude-fake-2"]
        held_then = ledger.held(account)
        worst = {m: _worst(gov, gw_fake, m) for m in ("good", "other")}
    finally:
        httpx.post(f"{gw_fake.openai_base_url}/chat/completions", timeout=60,
                   json={"model": "release", "messages": release})
        asking.join()
    raw = answers["raw"]
    assert not isinstance(raw, Exception), raw
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    assert [(a["model"], a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("good", "read_timeout", pytest.approx(worst["good"])),
        ("good", "read_timeout", pytest.approx(worst["good"])), ("other", "ok", None)]
    assert entry["status"] == "ok" and entry["cost"] > 0
    assert entry["charged"] == pytest.approx(2 * worst["good"] + entry["cost"])
    assert _charged(gov, request_id) == {"good": pytest.approx(2 * worst["good"]),
                                         "other": pytest.approx(entry["cost"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])
    # Held while other was called: good's two billed tries and other's worst case.
    assert held_then == pytest.approx(2 * worst["good"] + worst["other"])
    assert ledger.held(account) == 0
    held = [note for note in entry["reasoning"] if note.startswith("Budget: held ")]
    assert [note.split("'")[0] for note in held] == ["Budget: held good", "Budget: held other"]
    assert not any("more than the request held" in note for note in entry["reasoning"])


def test_a_retry_after_a_billed_try_that_reported_its_usage_holds_that_usage_not_its_worst(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # good answers a 200 whose choices are misnumbered, reporting 20 + 10 tokens: a billed
    # try charged what they cost. Its retry then waits for another request to arrive
    # (together). Before the retry, the request holds that try at its reported cost beside
    # the retry's worst case, not at good's worst case twice over: a concurrent request of
    # the same key, whose budget holds two and a half of good's worst cases, is let in and
    # meets the retry. (It was refused, the budget holding three worst cases then.) The
    # retry waits upstream for as long as the second request takes to come: on a service
    # whose reads wait long enough for a loaded machine.
    with _server(gw_fake, tmp_path, GOVERNANCE, PATIENT) as gov:
        _reported_usage_held(gov, gw_fake)


def _reported_usage_held(gov: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gateway = gov.service.gateway
    gateway.reset_health()
    catalog = gateway.settings.catalog()
    assert catalog is not None
    tag = uuid.uuid4().hex[:8]
    first = user(f"misnumbered, then held {tag}")
    second = user(f"meets it {tag} [[fake:together:n=2,seconds=30]]")
    image_tokens = gateway.settings.governance.image_tokens
    worst_of = [worst_cost(catalog["good"], prompt_bound({"messages": m}, image_tokens), 1000)
                for m in (first, second)]
    worst = max(worst_of)
    reported = (20 * 10 + 10 * 30) / 1e6  # good's catalog prices per million tokens
    assert 2 * worst + reported < 2.5 * worst < 3 * min(worst_of)
    r = httpx.post(f"{gov.base}/v1/router/keys", headers=ADMIN, timeout=10,
                   json={"tenant": "acme", "budget": f"{2.5 * worst:.10f}/day"})
    assert r.status_code == 201, r.text
    tight = r.json()
    gw_fake.script("good", "usage:index=1e30,prompt=20,completion=10",
                   "together:n=2,seconds=30")
    answers: dict[str, Any] = {}

    def ask() -> None:
        try:
            answers["first"] = client(gov, tight["key"]).chat.completions.with_raw_response \
                .create(model="good", max_tokens=1000, messages=first)
        except Exception as exc:  # (reported by the assertions below)
            answers["first"] = exc

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        deadline = time.monotonic() + 10
        while len(gw_fake.requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # (until good's retry, held before it was sent, is upstream)
        assert len(gw_fake.requests()) == 2
        met = client(gov, tight["key"]).chat.completions.create(
            model="good", max_tokens=1000, messages=second)
    finally:
        asking.join()
    assert (met.choices[0].message.content or "").startswith("Echo from good")
    raw = answers["first"]
    assert not isinstance(raw, Exception), raw
    entry = _logged(gov, raw.headers["x-switchpoint-request-id"])
    assert [(a["model"], a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("good", "malformed_response", pytest.approx(reported)), ("good", "ok", None)]
    held = [note for note in entry["reasoning"] if note.startswith("Budget: held ")]
    assert len(held) == 1 and held[0].endswith(
        f"({usd_text(worst_of[0] + reported)} held for the request's tries in all)."), held
    assert gateway.governor.ledger.held(f"key:{tight['id']}") == 0


def test_a_try_the_budget_cannot_hold_after_a_billed_one_is_not_sent(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    messages = user(f"stalls {uuid.uuid4().hex[:8]}")
    # What good's and other's worst cases are for this request (it answers at once here).
    client(gov, key["key"]).chat.completions.create(model="good", max_tokens=1000,
                                                    messages=messages)
    worst = {m: _worst(gov, gw_fake, m) for m in ("good", "other")}
    # A key whose budget holds one try of good, but not two, nor one of good and one of other.
    budget = 1.5 * worst["good"]
    assert worst["good"] + worst["other"] > budget
    r = httpx.post(f"{gov.base}/v1/router/keys", headers=ADMIN, timeout=10,
                   json={"tenant": "acme", "budget": f"{budget:.10f}/day"})
    assert r.status_code == 201, r.text
    tight = r.json()
    gw_fake.script("good", "stall:seconds=60", "stall:seconds=60")
    with pytest.raises(openai.APIStatusError) as caught:
        client(gov, tight["key"]).chat.completions.create(model="good", max_tokens=1000,
                                                          messages=messages)
    request_id = caught.value.response.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    # good's first try was billed; nothing more was sent: the budget could hold no other try.
    assert [(a["model"], a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("good", "read_timeout", pytest.approx(worst["good"])),
        ("good", "budget_exceeded", None), ("other", "budget_exceeded", None)]
    assert len(gw_fake.requests()) == 2  # (the one that answered above, and good's first try)
    assert entry["status"] == "error"
    assert entry["charged"] == pytest.approx(worst["good"])
    assert _spent(gov, tight["id"]) == pytest.approx(worst["good"]) and worst["good"] <= budget
    message = caught.value.message
    assert "budget" in message and "read_timeout" in message, message
    assert gov.service.gateway.governor.ledger.held(f"key:{tight['id']}") == 0


@pytest.mark.parametrize(("behaviour", "outcome", "said"), [
    # cheap reads the request, then resets the connection before any response: the model may
    # have been generating (unlike a connection that could not be made).
    ("reset", "connect_error", "the connection was lost after the request was sent"),
    # ... or answers with a head no HTTP/1.1 client reads: it answered (no connection was
    # lost), having had the whole request, so it too may have been generating.
    ("badhead", "malformed_response", 'not an HTTP/1.1 response: "HTTP/2 200"'),
], ids=["connection lost", "malformed head"])
def test_a_try_failed_after_the_request_was_sent_is_charged_beside_the_answer(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess, behaviour: str,
        outcome: str, said: str) -> None:
    # Its retry answers.
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, messages=user(f"sent [[fake:once:{behaviour}]]"))
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(gov, request_id)
    worst = _worst(gov, gw_fake, "cheap")
    assert entry["status"] == "ok" and entry["cost"] > 0
    assert [(a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        (outcome, pytest.approx(worst)), ("ok", None)]
    assert said in entry["attempts"][0]["error"], entry["attempts"][0]
    assert entry["charged"] == pytest.approx(worst + entry["cost"])
    assert _spent(gov, key["id"]) == pytest.approx(entry["charged"])


class _FailsAfterFirst:
    """The provider ``inner``, whose tries after the first fail with an internal error (a bug
    in an adapter, say: not the upstream's doing)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def complete(self, request: Any, card: Any, timeouts: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("an adapter bug")
        return await self.inner.complete(request, card, timeouts)

    def stream(self, request: Any, card: Any, timeouts: Any) -> Any:
        raise AssertionError("not streamed here")


def test_an_internal_error_after_a_billed_try_still_charges_that_try(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cheap stalls mid-answer (its read times out: a try the provider may have billed), then
    # its retry fails inside the gateway: the request ends with no log entry, and the billed
    # try is charged all the same, not released with the rest of the hold.
    gateway = gov.service.gateway
    providers = gateway.providers
    failing = _FailsAfterFirst(providers.openai)
    monkeypatch.setitem(providers.overrides, "cheap", failing)
    tag = uuid.uuid4().hex[:8]
    with pytest.raises(openai.InternalServerError):
        client(gov, key["key"]).with_options(max_retries=0).chat.completions.create(
            model="cheap", max_tokens=1000,
            messages=user(f"stalls once {tag} [[fake:once:stall:seconds=60]]"))
    assert failing.calls == 2
    worst = _worst(gov, gw_fake, "cheap")
    deadline = time.monotonic() + 10
    while _spent(gov, key["id"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # (the row is written lazily)
    assert _spent(gov, key["id"]) == pytest.approx(worst)
    assert gateway.governor.ledger.open_tickets() == 0


def test_an_internal_error_after_an_answer_charges_the_answer_and_closes_its_hold(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The model answered (the provider bills it), then the gateway failed before it settled
    # (a bug after the call): the answer is charged, and the hold does not stay open until its
    # reservation expires.
    gateway = gov.service.gateway

    def broken(*args: Any, **kw: Any) -> None:
        raise RuntimeError("a bug after the call")

    monkeypatch.setattr(gateway.pinner, "record", broken)
    tag = uuid.uuid4().hex[:8]
    with pytest.raises(openai.InternalServerError):
        client(gov, key["key"]).with_options(max_retries=0).chat.completions.create(
            model="cheap", max_tokens=1000, messages=user(f"answered {tag}"))
    assert gateway.governor.ledger.open_tickets() == 0
    deadline = time.monotonic() + 10
    while _spent(gov, key["id"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # (the row is written lazily)
    assert 0 < _spent(gov, key["id"]) <= _worst(gov, gw_fake, "cheap") * (1 + 1e-9)


@pytest.mark.parametrize("kind", ["answered", "failed"])
def test_an_internal_error_making_the_log_entry_still_writes_its_ledger_rows(
        short: ThreadServer, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # The request was settled (the governor booked the answer, or the billed tries of a
    # request no model answered), then making its log entry, which carries the ledger rows to disk,
    # failed (a bug): the rows are written alone, so the spend survives a restart.
    from switchpoint.gateway import accounting

    def broken(*args: Any, **kw: Any) -> None:
        raise RuntimeError("a bug making the entry")

    monkeypatch.setattr(accounting, kind, broken)
    tag = uuid.uuid4().hex[:8]
    # failed: every try of cheap stalls mid-answer until the request's deadline (billed),
    # before it could fail over
    fault = "" if kind == "answered" else " [[fake:stall:seconds=60]]"
    short.service.gateway.reset_health()
    key = _new_key(short)
    with pytest.raises(openai.InternalServerError):
        client(short, key["key"]).with_options(max_retries=0).chat.completions.create(
            model="cheap", max_tokens=1000, messages=user(f"entry {tag}{fault}"))
    assert short.service.gateway.governor.ledger.open_tickets() == 0
    assert _wait_spent(short, key["id"]) > 0


def _wait_spent(server: ThreadServer, key_id: str) -> float:
    deadline = time.monotonic() + 10
    while _spent(server, key_id) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # (the rows of a request with no log entry are written lazily)
    return _spent(server, key_id)


def test_a_billed_try_counts_its_worst_case_tokens_in_the_tpm_window(
        gov: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # cheap stalls mid-answer (a try the provider may have billed), then its retry answers.
    # The key's tokens-per-minute window counts that try at its worst case (the tokens held
    # for it: the prompt's bound and the whole output cap), as its budget charges it, beside
    # the answer's reported tokens; so a second request that would fit beside the answer
    # alone is refused.
    gov.service.gateway.reset_health()
    image_tokens = gov.service.gateway.settings.governance.image_tokens
    first = user("stalls once [[fake:once:stall:seconds=60]]")
    second = user("s" * len("stalls once [[fake:once:stall:seconds=60]]"))
    held = {name: prompt_bound({"messages": m}, image_tokens) + 1000
            for name, m in (("first", first), ("second", second))}
    limit = held["first"] + held["second"]
    r = httpx.post(f"{gov.base}/v1/router/keys", headers=ADMIN, timeout=10,
                   json={"tenant": "acme", "budget": "5/day", "tpm": limit})
    assert r.status_code == 201, r.text
    issued = r.json()
    raw = client(gov, issued["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, messages=first)
    entry = _logged(gov, raw.headers["x-switchpoint-request-id"])
    assert [a["outcome"] for a in entry["attempts"]] == ["read_timeout", "ok"]
    ((prompt, completion),) = _read(gov, "SELECT prompt_tokens, completion_tokens FROM "
                                         "requests WHERE id = ?",
                                    raw.headers["x-switchpoint-request-id"])
    used = held["first"] + prompt + completion
    assert 0 < prompt + completion <= held["first"]
    with pytest.raises(openai.RateLimitError) as caught:
        client(gov, issued["key"]).chat.completions.create(model="cheap", max_tokens=1000,
                                                           messages=second)
    assert f"has used {used} of its {limit} tokens per minute" in caught.value.message


STALLS = "stalls once [[fake:once:stall:seconds=60]]"


def _rated_key(server: ThreadServer, tries: float) -> tuple[dict[str, Any], int, int]:
    """A new key of tenant acme with no budget, whose tokens-per-minute limit takes ``tries``
    tries of a request of :data:`STALLS`'s size at max_tokens 1000; with those tokens (the
    prompt's bound and the output cap) and the limit."""
    server.service.gateway.reset_health()
    image_tokens = server.service.gateway.settings.governance.image_tokens
    held = prompt_bound({"messages": user(STALLS)}, image_tokens) + 1000
    limit = int(tries * held)
    r = httpx.post(f"{server.base}/v1/router/keys", headers=ADMIN, timeout=10,
                   json={"tenant": "acme", "tpm": limit})
    assert r.status_code == 201, r.text
    issued: dict[str, Any] = r.json()
    assert not issued.get("budgets")
    return issued, held, limit


def test_a_retry_the_tpm_window_cannot_take_after_a_billed_try_is_not_sent(
        rated: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # A key with a TPM limit that takes one try of the request, not two, and no budget:
    # cheap stalls mid-answer (a try the provider may have billed, counted at its worst
    # case), so its retry would take the window past the limit: it is not sent, nor are the
    # fallbacks' tries, and the caller is told which limit stopped them.
    issued, held, limit = _rated_key(rated, 1.5)
    with pytest.raises(openai.APIStatusError) as caught:
        client(rated, issued["key"]).chat.completions.create(model="cheap", max_tokens=1000,
                                                             messages=user(STALLS))
    assert len(gw_fake.requests()) == 1  # (cheap's first try alone)
    request_id = caught.value.response.headers["x-switchpoint-request-id"]
    entry = _logged(rated, request_id)
    assert [(a["model"], a["outcome"]) for a in entry["attempts"]] == [
        ("cheap", "read_timeout"), ("cheap", "rate_limit_exceeded"),
        ("good", "rate_limit_exceeded"), ("other", "rate_limit_exceeded")]
    assert caught.value.status_code == 504 and entry["status"] == "error"
    why = ("rate limit exceeded: not sent, as 1 earlier try a provider may have billed counts "
           f"{held} tokens at its worst case in the tokens-per-minute window: key "
           f"{issued['id']} has used {held} of its {limit} tokens per minute and another try "
           f"of cheap may use up to {held}; retry in ")
    message = caught.value.message
    assert "cheap: read_timeout" in message and why in message, message
    refused = [note for note in entry["reasoning"] if note.startswith("Rate limit: ")]
    assert [note.split(": rate limit exceeded")[0] for note in refused] == [
        "Rate limit: cheap not tried", "Rate limit: good not tried",
        "Rate limit: other not tried"]
    assert refused[0].startswith(f"Rate limit: cheap not tried: {why}"), refused[0]
    # The window counts cheap's billed try at its worst case, and nothing for the tries not
    # sent: a request of the same size does not fit beside it.
    with pytest.raises(openai.RateLimitError) as again:
        client(rated, issued["key"]).chat.completions.create(
            model="cheap", max_tokens=1000, messages=user("s" * len(STALLS)))
    assert f"has used {held} of its {limit} tokens per minute" in again.value.message
    assert rated.service.gateway.governor.ledger.open_tickets() == 0


def test_a_retry_the_tpm_window_can_take_is_held_sent_and_counted_once(
        rated: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # The limit takes two tries: cheap's retry after its billed first try is held in the
    # window, sent and answered; the window then counts the billed try at its worst case and
    # the answer at its reported tokens, each once.
    issued, held, limit = _rated_key(rated, 2)
    raw = client(rated, issued["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, messages=user(STALLS))
    request_id = raw.headers["x-switchpoint-request-id"]
    entry = _logged(rated, request_id)
    assert [a["outcome"] for a in entry["attempts"]] == ["read_timeout", "ok"]
    assert len(gw_fake.requests()) == 2
    assert [note for note in entry["reasoning"] if note.startswith("Rate limit: held ")] == [
        f"Rate limit: held cheap's worst case of {held} tokens in the tokens-per-minute "
        f"window of key {issued['id']} before its next try, after 1 try a provider may have "
        f"billed ({2 * held} tokens held for the request's tries in all)."]
    # No budget applies: the billed try's worst case is recorded in the spend ledger, not
    # charged against a budget, and the note says so.
    worst = _worst(rated, gw_fake, "cheap")
    settled = [note for note in entry["reasoning"] if "with no answer" in note]
    assert settled == [
        f"Spend: recorded {usd_text(worst)} in the spend ledger, against no budget (none applies "
        "to "
        "this request), for 1 try a provider may have billed with no answer (timed out, cut "
        "by the deadline or mid-answer, answered with no choice or misnumbered ones, or left "
        "by the caller while under way), each at its model's worst case: cheap #1 "
        "read_timeout."], entry["reasoning"]
    assert not [note for note in entry["reasoning"] if note.startswith("Budget:")]
    assert _charged(rated, request_id)["cheap"] == pytest.approx(entry["charged"])
    ((prompt, completion),) = _read(rated, "SELECT prompt_tokens, completion_tokens FROM "
                                           "requests WHERE id = ?", request_id)
    assert 0 < prompt + completion <= held
    with pytest.raises(openai.RateLimitError) as caught:
        client(rated, issued["key"]).chat.completions.create(
            model="cheap", max_tokens=1000, messages=user("s" * len(STALLS)))
    used = held + prompt + completion
    assert f"has used {used} of its {limit} tokens per minute" in caught.value.message


def test_an_internal_error_committing_a_stream_charges_it_and_closes_its_hold(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cheap's first stream is cut before its first content (billed); its retry's first chunk
    # arrives, then the gateway fails before the stream reaches the caller (a bug in the
    # commit). The answer the provider was generating is charged its worst case (its usage is
    # never known), as is the cut try, and the hold does not stay open until it expires.
    gateway = gov.service.gateway

    def broken(*args: Any, **kw: Any) -> None:
        raise RuntimeError("a bug while committing the stream")

    monkeypatch.setattr(gateway.pinner, "record", broken)
    tag = uuid.uuid4().hex[:8]
    with pytest.raises(openai.InternalServerError):
        for _ in client(gov, key["key"]).chat.completions.create(
                model="cheap", max_tokens=1000, stream=True,
                messages=user(f"cut once {tag} [[fake:once:cut:after=0]]")):
            pass
    assert gateway.governor.ledger.open_tickets() == 0
    assert gateway.governor.ledger.held(f"key:{key['id']}") == 0
    worst = _worst(gov, gw_fake, "cheap")
    assert _wait_spent(gov, key["id"]) == pytest.approx(2 * worst)
    assert gateway.governor.ledger.spent(f"key:{key['id']}", "day") == pytest.approx(2 * worst)


class _ExpiresThenFails(_FailsAfterFirst):
    """As :class:`_FailsAfterFirst`, but the request's reservation has expired (its ledger's
    clock run past its deadline) by the time its second try fails."""

    def __init__(self, inner: Any, gateway: Any) -> None:
        super().__init__(inner)
        self.gateway = gateway

    async def complete(self, request: Any, card: Any, timeouts: Any) -> Any:
        if self.calls >= 1:
            _expire_reservations(self.gateway)
        return await super().complete(request, card, timeouts)


def _expire_reservations(gateway: Any) -> None:
    """Expire every open reservation of ``gateway``: its ledger's clocks (the wall clock and
    the monotonic one its deadlines are timed by) run an hour past now while the governor
    flushes (which expires what is past its deadline)."""
    ledger = gateway.governor.ledger
    real, tick = ledger.clock, ledger.monotonic
    ledger.clock, ledger.monotonic = (lambda: real() + 3600.0), (lambda: tick() + 3600.0)
    try:
        gateway.governor.flush()
    finally:
        ledger.clock, ledger.monotonic = real, tick


def test_a_billed_try_is_charged_when_its_request_ends_after_its_hold_expired(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cheap stalls mid-answer (billed); by its retry the request's reservation has expired,
    # then the retry fails inside the gateway. The billed try is charged all the same, once.
    gateway = gov.service.gateway
    failing = _ExpiresThenFails(gateway.providers.openai, gateway)
    monkeypatch.setitem(gateway.providers.overrides, "cheap", failing)
    tag = uuid.uuid4().hex[:8]
    with pytest.raises(openai.InternalServerError):
        client(gov, key["key"]).chat.completions.create(
            model="cheap", max_tokens=1000,
            messages=user(f"stalls once {tag} [[fake:once:stall:seconds=60]]"))
    assert failing.calls == 2
    worst = _worst(gov, gw_fake, "cheap")
    assert _wait_spent(gov, key["id"]) == pytest.approx(worst)
    assert gateway.governor.ledger.spent(f"key:{key['id']}", "day") == pytest.approx(worst)
    assert gateway.governor.ledger.held(f"key:{key['id']}") == 0
    assert gateway.governor.ledger.open_tickets() == 0


class _ExpiresAfterFirst:
    """The provider ``inner``, with the request's reservation expired (its ledger's clock run
    past its deadline) as its first try ends."""

    def __init__(self, inner: Any, gateway: Any) -> None:
        self.inner = inner
        self.gateway = gateway
        self.calls = 0

    async def complete(self, request: Any, card: Any, timeouts: Any) -> Any:
        self.calls += 1
        try:
            return await self.inner.complete(request, card, timeouts)
        finally:
            if self.calls == 1:
                _expire_reservations(self.gateway)

    def stream(self, request: Any, card: Any, timeouts: Any) -> Any:
        raise AssertionError("not streamed here")


def _sent_unheld_notes(server: ThreadServer, issued: dict[str, Any],
                       monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The notes about cheap's next try of a request of ``issued``'s key whose first try
    stalls mid-answer (billed) and whose reservation has expired by its retry."""
    gateway = server.service.gateway
    expiring = _ExpiresAfterFirst(gateway.providers.openai, gateway)
    monkeypatch.setitem(gateway.providers.overrides, "cheap", expiring)
    tag = uuid.uuid4().hex[:8]
    raw = client(server, issued["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000,
        messages=user(f"stalls once {tag} [[fake:once:stall:seconds=60]]"))
    entry = _logged(server, raw.headers["x-switchpoint-request-id"])
    assert [a["outcome"] for a in entry["attempts"]] == ["read_timeout", "ok"]
    assert expiring.calls == 2
    assert gateway.governor.ledger.open_tickets() == 0
    return [note for note in entry["reasoning"] if "next try" in note]


UNHELD = ("nothing held before cheap's next try, after 1 try a provider may have billed: the "
          "request's reservation expired (it outlived its hold), so the try is sent unheld; "
          "what the tries cost and use is still counted when the request ends.")


def test_a_retry_after_its_reservation_expired_is_sent_unheld_and_says_so(
        rated: ThreadServer, gw_fake: FakeProviderProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # cheap stalls mid-answer (billed), and by its retry the request's reservation has
    # expired: nothing is held for the retry (an expired reservation holds nothing), so the
    # reasoning says the try was sent unheld, not that its tokens were held.
    issued, _, _ = _rated_key(rated, 2)
    notes = _sent_unheld_notes(rated, issued, monkeypatch)
    assert notes == [f"Rate limit: {UNHELD}"], notes


@pytest.mark.parametrize(("tpm", "named"), [(False, "Budget"),
                                             (True, "Budget and rate limit")])
def test_a_retry_after_an_expired_reservation_names_what_it_held(
        gov: ThreadServer, gw_fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch,
        tpm: bool, named: str) -> None:
    # A key with a budget, and with a tokens-per-minute limit too or not: the note about the
    # retry sent unheld names what the expired reservation held (both, when both).
    gov.service.gateway.reset_health()
    held = prompt_bound({"messages": user(STALLS)},
                        gov.service.gateway.settings.governance.image_tokens) + 1000
    r = httpx.post(f"{gov.base}/v1/router/keys", headers=ADMIN, timeout=10,
                   json={"tenant": "acme", "budget": "5/day",
                         **({"tpm": 4 * held} if tpm else {})})
    assert r.status_code == 201, r.text
    notes = _sent_unheld_notes(gov, r.json(), monkeypatch)
    assert notes == [f"{named}: {UNHELD}"], notes


def test_an_anthropic_stream_without_its_final_counts_is_charged_an_estimate(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    """A Messages API stream that ends without its message_delta carries only message_start's
    counts, the output's made before any was written: the answer is charged an estimate of
    what it relayed, at the prompt tokens message_start reported, not that count of the
    output (and, no stop reason having come, it is logged as cut short)."""
    messages = user("no final counts [[fake:nodelta:prompt=40]]")
    request_id, text = _relayed(gov, key, "other", messages)
    assert text.startswith("Echo from claude-fake-2")
    entry = _logged(gov, request_id)
    assert entry["status"] == "stream_broken"
    assert "no finish reason" in entry["attempts"][-1]["error"]
    _charged_an_estimate(gov, key, entry, "other", messages, text, prompt=40)


@pytest.mark.parametrize("code", ["server_error", "insufficient_quota",
                                  "invalid_request_error"])
def test_a_stream_failed_over_from_a_whole_error_to_a_whole_answer_is_charged_the_answer(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess,
        code: str) -> None:
    # good answers the stream request with a whole JSON error (a 200), each try; its
    # fallback other with a whole answer of 20 + 500 tokens. The error is no answer and
    # billed nothing, whatever its code: the request is charged other's answer alone, and
    # holds nothing after. (An error of a code not of an overload was taken for a stream
    # broken before its first chunk, which may have been generated: each try was charged
    # good's worst case.)
    gw_fake.script("good", f"error200:code={code}", f"error200:code={code}")
    gw_fake.script("claude-fake-2", "whole:prompt=20,completion=500")
    stream = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="good", max_tokens=1000, stream=True, messages=user("whole error, then whole"))
    request_id = stream.headers["x-switchpoint-request-id"]
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text.startswith("Echo from claude-fake-2")
    entry = _logged(gov, request_id)
    assert entry["status"] == "ok" and entry["cost"] > 0
    assert [(a["model"], a["outcome"], a.get("charged_usd")) for a in entry["attempts"]] == [
        ("good", "server_error", None), ("good", "server_error", None), ("other", "ok", None)]
    # (the error came whole, in place of the stream: not "mid-stream")
    assert all(str(a.get("error")).startswith("good: upstream error in place of a stream:")
               for a in entry["attempts"][:2]), [a.get("error") for a in entry["attempts"]]
    assert entry["charged"] == pytest.approx(entry["cost"])
    assert _charged(gov, request_id) == {"other": pytest.approx(entry["cost"])}
    assert _spent(gov, key["id"]) == pytest.approx(entry["cost"])
    assert gov.service.gateway.governor.ledger.held(f"key:{key['id']}") == 0
    fell_back, *rest = entry["reasoning"]
    assert fell_back.startswith("the named model good did not answer (server_error: upstream "
                                "error in place of a stream: ")
    assert fell_back.endswith(" x2); its fallback other answered"), fell_back
    assert rest == [
        "other answered the stream request with a whole answer, not an event stream; it was "
        "sent on as a stream and its usage charged."]


# A stream broken after its answer began, or ended whole, without its upstream reporting its
# usage, is charged what it used: an estimate from what it relayed (the prompt's tokens as the
# upstream reported them at the stream's start, else as the gateway estimates them, and the
# tokens of the answer's text and tool-call arguments, and of the thinking the upstream
# generated unrelayed), never past its worst case. It was charged its worst case.


def _reasoning(part: Any) -> str:
    """The reasoning a message or delta relayed beside its text (``reasoning_content``, else
    ``reasoning``: fields the openai client keeps as extras), or ""."""
    extra = part.model_extra or {}
    said = extra.get("reasoning_content")
    said = said if isinstance(said, str) else extra.get("reasoning")
    return said if isinstance(said, str) else ""


def _relayed(server: ThreadServer, key: dict[str, Any], model: str, messages: list[Any], *,
             max_tokens: int = 1000, leave_after: int | None = None,
             tools: list[Any] | None = None) -> tuple[str, str]:
    """(request id, the text, reasoning and tool-call arguments the client got) of a stream
    request of
    ``model`` read until it ends or breaks (or, ``leave_after``, until that many chunks of
    answer came, when the client hangs up)."""
    got: list[str] = []
    pieces = 0
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    with client(server, key["key"]).chat.completions.with_streaming_response.create(
            model=model, max_tokens=max_tokens, stream=True, messages=messages,
            **extra) as response:
        request_id = response.headers["x-switchpoint-request-id"]
        try:
            for chunk in response.parse():
                for choice in chunk.choices:
                    said = [choice.delta.content or "", _reasoning(choice.delta),
                            *(call.function.arguments or "" for call in
                              choice.delta.tool_calls or () if call.function)]
                    got.extend(said)
                    pieces += any(said)
                if leave_after is not None and pieces >= leave_after:
                    break  # (hang up: the response closes its connection)
        except openai.APIError:
            pass  # (the error event that ends a broken stream)
    return request_id, "".join(got)


def _bounds(server: ThreadServer, model: str, messages: list[Any], text: str,
            max_tokens: int = 1000, tools: list[Any] | None = None, *,
            prompt: int | None = None, thought: int = 0) -> tuple[float, float]:
    """(the estimate of an answer that relayed ``text`` for ``messages`` and ``tools``, its
    worst case): the prompt's tokens (``prompt``, as its upstream reported them, else as the
    gateway estimates them) and the tokens of ``text`` and of the ``thought`` bytes of
    thinking not relayed, by the same counter, at ``model``'s prices; the prompt's bound and
    ``max_tokens``."""
    settings = server.service.gateway.settings
    catalog = settings.catalog()
    assert catalog is not None
    card = catalog[model]
    body = {"messages": messages, **({"tools": tools} if tools else {})}
    estimate = card.price(needs_of(body).prompt_tokens if prompt is None else prompt,
                          text_tokens(text_bytes(text) + thought))
    worst = worst_cost(card, prompt_bound(body, settings.governance.image_tokens), max_tokens)
    return estimate, worst


def _charged_an_estimate(server: ThreadServer, key: dict[str, Any], entry: dict[str, Any],
                         model: str, messages: list[Any], text: str,
                         max_tokens: int = 1000, tools: list[Any] | None = None, *,
                         prompt: int | None = None, thought: int = 0) -> float:
    """Assert the request of ``entry`` was charged the estimate of its answer (at most its
    worst case), its budget and ledger alike, and its log says so; returns the charge."""
    estimate, worst = _bounds(server, model, messages, text, max_tokens, tools,
                              prompt=prompt, thought=thought)
    charged = min(estimate, worst)
    assert entry["cost"] is None  # (the upstream's usage is unknown)
    assert entry["charged"] == pytest.approx(charged)
    assert _charged(server, entry["id"]) == {model: pytest.approx(charged)}
    assert _spent(server, key["id"]) == pytest.approx(charged)
    notes = [n for n in entry["reasoning"] if n.startswith("Estimated charge: ")]
    assert len(notes) == 1, entry["reasoning"]
    assert (f"{text_tokens(text_bytes(text) + thought)} answer tokens (the "
            f"{text_bytes(text)} bytes, in UTF-8, of text" in notes[0]), notes[0]
    assert (f"{prompt} prompt tokens (as the upstream reported it)" if prompt is not None
            else " prompt tokens (the prompt as the gateway estimates it)") in notes[0], notes[0]
    assert (f"and the {thought} bytes of thinking, not relayed" in notes[0]) == (
        thought > 0), notes[0]
    assert f"{usd_text(charged)}" in notes[0]
    return charged


@pytest.mark.parametrize(("model", "behaviour", "says"), [
    ("cheap", "cut:after=3", "the stream failed part-way"),
    ("cheap", "stall:after=2,seconds=60", "(ReadTimeout: timed out reading"),
    ("cheap", "nofinish:after=2", "ended before"),
    ("other", "cut:after=3,prompt=40", "the stream failed part-way"),
    ("other", "stall:after=2,seconds=60,prompt=40", "(ReadTimeout: timed out reading")],
    ids=["cut", "stalled", "ended-unfinished", "anthropic-cut", "anthropic-stalled"])
def test_a_stream_broken_mid_answer_without_usage_is_charged_an_estimate_of_what_it_relayed(
        gov: ThreadServer, key: dict[str, Any], model: str, behaviour: str, says: str) -> None:
    # The upstream cuts the answer after some content, goes silent past the read timeout, or
    # ends without a finish reason, having reported no usage. An Anthropic stream reported its
    # prompt's 40 tokens at its start: the estimate takes them, not the gateway's own count.
    messages = user(f"please answer at some length here [[fake:{behaviour}]]")
    request_id, text = _relayed(gov, key, model, messages)
    assert text.startswith("Echo from ")
    entry = _logged(gov, request_id)
    assert entry["status"] == "stream_broken"
    assert says in entry["attempts"][-1]["error"], entry["attempts"][-1]["error"]
    prompt = 40 if model == "other" else None
    estimate, worst = _bounds(gov, model, messages, text, prompt=prompt)
    assert estimate < worst
    if prompt is not None:  # (the upstream's count is not the gateway's)
        assert needs_of({"messages": messages}).prompt_tokens != prompt
    assert _charged_an_estimate(gov, key, entry, model, messages, text,
                                prompt=prompt) == pytest.approx(estimate)


@pytest.mark.parametrize(("thinking", "thought"), [
    ("thinking=2000", 2000), ("redacted=1200", 1200), ("thinking=800,redacted=1200", 2000)],
    ids=["thinking", "redacted", "both"])
def test_an_anthropic_stream_broken_after_thinking_is_charged_the_thinking_too(
        gov: ThreadServer, key: dict[str, Any], thinking: str, thought: int) -> None:
    # other thinks (not relayed: the OpenAI format has no place for it, but the upstream
    # bills it; redacted thinking, sent encrypted, counted as its data's bytes), then its
    # answer is cut after some content: the estimate counts the thinking's tokens as answer
    # tokens, beside the text relayed.
    # (the three pieces of answer sent before the reset all reach the client)
    messages = user(f"think first, then answer [[fake:cut:after=3,prompt=40,{thinking}]]")
    request_id, text = _relayed(gov, key, "other", messages)
    assert text == "Echo from claude-fake-2: ", text
    entry = _logged(gov, request_id)
    assert entry["status"] == "stream_broken"
    estimate, worst = _bounds(gov, "other", messages, text, prompt=40, thought=thought)
    assert _bounds(gov, "other", messages, text, prompt=40)[0] < estimate < worst
    _charged_an_estimate(gov, key, entry, "other", messages, text, prompt=40, thought=thought)


def test_an_anthropic_stream_answered_whole_is_charged_its_reported_prompt_and_thinking(
        gov: ThreadServer, key: dict[str, Any]) -> None:
    # other answers the stream request with one whole answer, its thinking and redacted
    # thinking in it and usage past belief (its output count negative, its prompt's 40
    # believable): charged as the plain answer would be, the prompt at the 40 tokens it
    # reported and the answer's text and 300 bytes of thinking, not the gateway's estimate
    # of the prompt and the text alone.
    messages = user("answered whole [[fake:whole:prompt=40,completion=-1,thinking=200,"
                    "redacted=100]]")
    request_id, text = _relayed(gov, key, "other", messages)
    assert text.startswith("Echo from ") and "t" * 10 not in text and "r" * 10 not in text
    entry = _logged(gov, request_id)
    assert entry["status"] == "ok"
    estimate, worst = _bounds(gov, "other", messages, text, prompt=40, thought=300)
    assert estimate < worst
    assert _charged_an_estimate(gov, key, entry, "other", messages, text, prompt=40,
                                thought=300) == pytest.approx(estimate)
    notes = [n for n in entry["reasoning"] if n.startswith("Estimated charge: ")]
    assert "other's stream ended whole with no usage to believe" in notes[0], notes


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_an_answer_is_charged_the_reasoning_its_server_sent_beside_its_text(
        gov: ThreadServer, key: dict[str, Any], stream: bool, field: str) -> None:
    # cheap reasons (as DeepSeek and vLLM send it, beside the text) before its answer, which
    # reports no usage (plain) or is cut after some content (streamed): the reasoning was
    # generated, billed and relayed, and is counted with the text.
    keyed = "" if field == "reasoning_content" else f",reasoning_key={field}"
    behaviour = ("usage:nousage=1" if not stream else "cut:after=3") + f",reasoning=300{keyed}"
    messages = user(f"reason first, then answer [[fake:{behaviour}]]")
    if stream:
        request_id, said = _relayed(gov, key, "cheap", messages)
        text = said.replace("r" * 300, "", 1)
    else:
        raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
            model="cheap", max_tokens=1000, messages=messages)
        message = raw.parse().choices[0].message
        request_id, text = raw.headers["x-switchpoint-request-id"], message.content or ""
        said = _reasoning(message) + text
    assert said.startswith("r" * 300) and text.startswith("Echo from cheap")
    entry = _logged(gov, request_id)
    assert entry["status"] == ("stream_broken" if stream else "ok")
    estimate, worst = _bounds(gov, "cheap", messages, said)
    assert _bounds(gov, "cheap", messages, text)[0] < estimate < worst
    assert _charged_an_estimate(gov, key, entry, "cheap", messages,
                                said) == pytest.approx(estimate)
    notes = [n for n in entry["reasoning"] if n.startswith("Estimated charge: ")]
    assert "of text, reasoning and tool-call arguments relayed" in notes[0], notes


def test_a_stream_answered_whole_without_usage_is_charged_an_estimate(
        gov: ThreadServer, key: dict[str, Any]) -> None:
    # cheap answers the stream request with one whole answer that reports no usage: the
    # whole answer was relayed, and is charged the estimate of it, not its worst case.
    messages = user("answered whole [[fake:whole:nousage=1]]")
    request_id, text = _relayed(gov, key, "cheap", messages)
    assert text.startswith("Echo from cheap")
    entry = _logged(gov, request_id)
    assert entry["status"] == "ok"
    estimate, worst = _bounds(gov, "cheap", messages, text)
    assert estimate < worst
    assert _charged_an_estimate(gov, key, entry, "cheap", messages, text) == pytest.approx(
        estimate)
    notes = [n for n in entry["reasoning"] if n.startswith("Estimated charge: ")]
    assert "cheap's stream ended whole with no usage to believe" in notes[0], notes


def test_a_tool_call_broken_mid_stream_is_charged_the_arguments_it_relayed(
        gov: ThreadServer, key: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    messages = user("look this up for me please at length [[fake:cut:after=3]]")
    request_id, arguments = _relayed(gov, key, "cheap", messages, tools=tools)
    assert arguments.startswith('{"query": ')
    entry = _logged(gov, request_id)
    assert entry["status"] == "stream_broken"
    _charged_an_estimate(gov, key, entry, "cheap", messages, arguments, tools=tools)


@pytest.mark.parametrize("behaviour", ["cut:after=3", "stall:after=2,seconds=60"])
def test_a_stream_broken_mid_answer_that_reported_usage_is_charged_that_usage(
        gov: ThreadServer, key: dict[str, Any], behaviour: str) -> None:
    # Each chunk carries the answer's usage (a server reporting it continuously), then the
    # stream breaks: charged what that usage costs, not an estimate, nor its worst case.
    messages = user(f"usage in each chunk [[fake:{behaviour},each=1,prompt=20,completion=500]]")
    request_id, text = _relayed(gov, key, "cheap", messages)
    assert text.startswith("Echo from ")
    entry = _logged(gov, request_id)
    reported = (20 * 0.5 + 500 * 1.5) / 1e6  # cheap's catalog prices per million tokens
    estimate, worst = _bounds(gov, "cheap", messages, text)
    assert estimate < reported < worst
    assert entry["status"] == "stream_broken"
    assert entry["cost"] == pytest.approx(reported)
    assert entry["charged"] == pytest.approx(reported)
    assert _charged(gov, request_id) == {"cheap": pytest.approx(reported)}
    assert _spent(gov, key["id"]) == pytest.approx(reported)
    assert not any(n.startswith("Estimated charge") for n in entry["reasoning"])


def test_a_client_that_hangs_up_mid_stream_is_charged_an_estimate_of_what_was_relayed(
        gov: ThreadServer, key: dict[str, Any], gw_fake: FakeProviderProcess) -> None:
    # cheap sends two chunks of answer, then nothing for a minute: the client hangs up once it
    # has them, the gateway having relayed those two and no more.
    messages = user("leave me early please [[fake:stall:after=2,seconds=60]]")
    request_id, text = _relayed(gov, key, "cheap", messages, leave_after=2)
    assert text == "Echo from "
    entry = _logged(gov, request_id)
    # (logged as closed by the client, unless a loaded machine let the read time out first)
    assert entry["status"] == "client_closed" or "ReadTimeout" in str(
        entry["attempts"][-1]["error"]), entry
    _charged_an_estimate(gov, key, entry, "cheap", messages, text)


@pytest.mark.parametrize(("model", "reported"), [
    ("cheap", "prompt=16001,completion=5"), ("other", "prompt=40,completion=200001"),
    ("other", "prompt=200001,completion=5")],
    ids=["prompt-past-window", "anthropic-answer-past-window", "anthropic-prompt-past-window"])
def test_usage_past_the_model_s_context_window_is_not_believed_with_no_budget_either(
        rated: ThreadServer, gw_fake: FakeProviderProcess, model: str, reported: str) -> None:
    # cheap holds 16,000 tokens and other 200,000: an answer reporting more than that was
    # believed (below 10 million), so with no budget to cap it the log, the spend ledger and
    # learning took its price as reported ($0.008 for 1,000 tokens asked of cheap; $4.80 of
    # other). Now it is charged as an answer that reports no usage: an estimate of what it
    # used, below the worst case of the request; an Anthropic prompt count past the window is
    # not what the estimate counts either (the gateway's own estimate of the prompt is).
    issued, _, _ = _rated_key(rated, 1000)
    for stream in (False, True):
        messages = user(f"tell me more [[fake:usage:{reported}]]")
        if stream:
            request_id, text = _relayed(rated, issued, model, messages)
        else:
            raw = client(rated, issued["key"]).chat.completions.with_raw_response.create(
                model=model, max_tokens=1000, messages=messages)
            request_id, text = raw.headers["x-switchpoint-request-id"], "answered"
            # (the client reads none of counts the gateway does not believe, as the log)
            assert raw.parse().usage is None
        assert text
        entry = _logged(rated, request_id)
        assert entry["status"] == "ok" and entry["cost"] is None, entry
        assert _read(rated, "SELECT prompt_tokens, completion_tokens FROM requests WHERE "
                            "id = ?", request_id) == [(None, None)]
        assert 0 < _charged(rated, request_id)[model] < _worst(rated, gw_fake, model), stream
        assert any(n.startswith("Estimated charge: ") for n in entry["reasoning"]), entry


@pytest.mark.parametrize(("model", "behaviour", "prompt", "thought"), [
    ("cheap", "usage:nousage=1", None, 0),
    ("cheap", "usage:prompt=-1,completion=5", None, 0),
    ("cheap", "usage:completion=1e30", None, 0),
    ("other", "usage:nousage=1", None, 0),
    ("other", "usage:prompt=40,completion=-1", 40, 0),
    ("other", "usage:nousage=1,thinking=2000", None, 2000),
    ("other", "usage:nousage=1,thinking=500,redacted=1500", None, 2000)],
    ids=["none", "negative", "huge", "anthropic-none", "anthropic-negative",
         "anthropic-thinking", "anthropic-redacted-thinking"])
def test_a_plain_answer_without_usage_to_believe_is_charged_an_estimate_of_what_it_used(
        gov: ThreadServer, key: dict[str, Any], model: str, behaviour: str,
        prompt: int | None, thought: int) -> None:
    # A plain answer that reports no usage, or usage past belief, is charged as a stream is:
    # the prompt's tokens (as an Anthropic answer reported them believably, else as the
    # gateway estimates them) and its text's, plus the thinking an Anthropic model generated
    # (billed, but the OpenAI answer has no place for it), not its model's worst case.
    messages = user(f"please answer at some length here [[fake:{behaviour}]]")
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model=model, max_tokens=1000, messages=messages)
    text = raw.parse().choices[0].message.content or ""
    assert text.startswith("Echo from ") and "t" * 10 not in text and "r" * 10 not in text
    entry = _logged(gov, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "ok"
    estimate, worst = _bounds(gov, model, messages, text, prompt=prompt, thought=thought)
    assert estimate < worst
    assert _charged_an_estimate(gov, key, entry, model, messages, text, prompt=prompt,
                                thought=thought) == pytest.approx(estimate)
    assert float(raw.headers["x-switchpoint-charged"]) == pytest.approx(estimate)
    notes = [n for n in entry["reasoning"] if n.startswith("Estimated charge: ")]
    assert f"{model}'s answer came with no usage to believe" in notes[0], notes


def test_a_plain_tool_call_without_usage_is_charged_its_arguments(
        gov: ThreadServer, key: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    messages = user("look this up for me please at length [[fake:usage:nousage=1]]")
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="cheap", max_tokens=1000, messages=messages, tools=tools)  # type: ignore[arg-type]
    calls = raw.parse().choices[0].message.tool_calls or []
    arguments = "".join(call.function.arguments for call in calls
                        if call.type == "function")
    assert arguments.startswith('{"query": ')
    entry = _logged(gov, raw.headers["x-switchpoint-request-id"])
    _charged_an_estimate(gov, key, entry, "cheap", messages, arguments, tools=tools)


def test_a_plain_anthropic_tool_call_in_chinese_is_charged_its_arguments_utf8_bytes(
        gov: ThreadServer, key: dict[str, Any]) -> None:
    # other calls a tool with Chinese arguments and reports no usage: its arguments are
    # relayed with their characters as themselves, as OpenAI writes them, and charged their
    # UTF-8 bytes (3 a character), not the 6 of the \uXXXX escapes they were written as; the
    # Chinese tool definition counts its UTF-8 bytes in the prompt too.
    tools = [{"type": "function", "function": {
        "name": "lookup", "description": "查找资料" * 20,
        "parameters": {"type": "object", "properties": {}}}}]
    messages = user("请详细解释量子计算的基本原理 [[fake:usage:nousage=1]]")
    raw = client(gov, key["key"]).chat.completions.with_raw_response.create(
        model="other", max_tokens=1000, messages=messages, tools=tools)  # type: ignore[arg-type]
    calls = raw.parse().choices[0].message.tool_calls or []
    arguments = "".join(call.function.arguments for call in calls
                        if call.type == "function")
    assert json.loads(arguments)["query"].startswith("请详细解释量子计算的基本原理")
    assert "量子" in arguments and text_bytes(arguments) < len(json.dumps(json.loads(arguments)))
    entry = _logged(gov, raw.headers["x-switchpoint-request-id"])
    assert _charged_an_estimate(gov, key, entry, "other", messages, arguments, tools=tools,
                                ) == pytest.approx(_bounds(gov, "other", messages, arguments,
                                                           tools=tools)[0])


def test_a_stream_of_cjk_text_broken_mid_answer_is_charged_its_bytes(
        gov: ThreadServer, key: dict[str, Any]) -> None:
    # A Chinese answer is about a token a character: its estimate counts its UTF-8 bytes (3
    # a character, 4 a token), three times what its characters at 4 a token would be.
    cjk = " ".join(["请详细解释量子计算的基本原理"] * 6)
    messages = user(f"{cjk} [[fake:cut:after=8]]")
    request_id, text = _relayed(gov, key, "cheap", messages)
    assert text.startswith("Echo from cheap: 请详细")
    entry = _logged(gov, request_id)
    assert entry["status"] == "stream_broken"
    estimate, worst = _bounds(gov, "cheap", messages, text)
    assert text_tokens(text_bytes(text)) > 2 * text_tokens(len(text))
    assert _charged_an_estimate(gov, key, entry, "cheap", messages,
                                text) == pytest.approx(min(estimate, worst))


@pytest.fixture(scope="module")
def unasked(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ThreadServer]:
    """A service whose cheap is not asked for usage in its streams (``stream_usage: false``),
    so the fake reports none."""
    with _server(gw_fake, tmp_path_factory.mktemp("unasked"), GOVERNANCE,
                 unasked="cheap") as server:
        yield server


def test_a_whole_stream_of_a_model_not_asked_for_usage_is_charged_an_estimate(
        unasked: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # cheap streams its whole answer, finish reason and [DONE] included, with no usage (it is
    # not asked for any): charged the estimate of what it relayed, as a broken stream is, not
    # its worst case.
    key = _new_key(unasked)
    messages = user("a whole stream with no usage")
    request_id, text = _relayed(unasked, key, "cheap", messages)
    assert text.startswith("Echo from cheap")
    assert "stream_options" not in gw_fake.requests()[-1]["body"]
    entry = _logged(unasked, request_id)
    assert entry["status"] == "ok"
    estimate, worst = _bounds(unasked, "cheap", messages, text)
    assert estimate < worst
    assert _charged_an_estimate(unasked, key, entry, "cheap", messages,
                                text) == pytest.approx(estimate)


@pytest.fixture(scope="module")
def small_answers(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ThreadServer]:
    """A service whose answers are cut at 150,000 bytes (the fake's huge chunks are 60,000
    characters each)."""
    with _server(gw_fake, tmp_path_factory.mktemp("small"), GOVERNANCE,
                 GATEWAY + "  max_response_bytes: 150000\n") as server:
        yield server


@pytest.mark.parametrize("max_tokens", [100_000, 1000], ids=["estimate", "worst-case"])
def test_a_stream_cut_at_its_size_limit_is_charged_its_estimate_never_past_its_worst_case(
        small_answers: ThreadServer, max_tokens: int) -> None:
    # good streams megabytes of answer; the gateway cuts it at its size limit, having relayed
    # what came before. Charged the estimate of that, unless it is past the worst case (an
    # upstream writing past max_tokens), when the worst case is charged.
    key = _new_key(small_answers)
    messages = user("a huge answer [[fake:huge:mb=1]]")
    request_id, text = _relayed(small_answers, key, "good", messages, max_tokens=max_tokens)
    assert text and set(text) == {"y"}
    entry = _logged(small_answers, request_id)
    assert entry["status"] == "stream_broken"
    assert "max_response_bytes" in entry["attempts"][-1]["error"]
    estimate, worst = _bounds(small_answers, "good", messages, text, max_tokens)
    assert (estimate < worst) == (max_tokens == 100_000)
    assert _charged_an_estimate(small_answers, key, entry, "good", messages, text,
                                max_tokens) == pytest.approx(min(estimate, worst))
