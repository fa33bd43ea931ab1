"""What a decision says about its session pin matches what happened: the ``x-switchpoint-pin``
header, the request log's ``pin_state``, the session's stored pin and the model that answered
agree, plain and streamed, for a named model, a narrowed candidate list, a pinned model that
cannot serve the request or fails, in the hard and the soft window."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint import Gateway
from switchpoint.config import load_settings
from switchpoint.errors import StreamBroken
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    KEYS,
    client,
    config_text,
    log_entry,
    outcomes,
)
from tests.integration.servers import ThreadServer, thread_server

UPSTREAM = {"good": "good", "other": "claude-fake-2", "cheap": "cheap", "fresh": "fresh"}
QUALITY_FIRST = {"x-switchpoint-cost-weight": "0"}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]
# Every pin is past its hard window at once: the soft window's bonus is all it gets.
SOFT_ONLY = """gateway:
  connect_timeout_s: 1
  read_timeout_s: 0.5
  first_token_timeout_s: 0.5
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_total_s: 10
  pin_hard_window_s: 0
  pin_soft_window_s: 1800
  pin_soft_bonus: 0.5
"""


@pytest.fixture(scope="module")
def soft(gw_fake: FakeProviderProcess,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root: Path = tmp_path_factory.mktemp("soft-pins")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, data_dir=str(root / "data"), gateway=SOFT_ONLY),
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


@pytest.fixture(autouse=True)
def _healthy(request: pytest.FixtureRequest) -> None:
    if "soft" in request.fixturenames:
        request.getfixturevalue("soft").service.gateway.reset_health()


def ask(server: ThreadServer, text: str, sid: str, model: str = "auto", stream: bool = False,
        headers: dict[str, str] | None = None, **kw: Any) -> tuple[dict[str, str],
                                                                   dict[str, Any]]:
    """One request of session ``sid``: its headers and its log entry (which must agree)."""
    raw = client(server).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], stream=stream,
        extra_headers={"x-session-id": sid, **(headers or {})}, **kw)
    raw.http_response.read()
    entry = log_entry(server, raw.headers["x-switchpoint-request-id"])
    assert raw.headers["x-switchpoint-pin"] == entry["pin_state"]
    assert raw.headers["x-switchpoint-model"] == entry["model"]
    return dict(raw.headers), entry


def stored(server: ThreadServer, entry: dict[str, Any]) -> str | None:
    """The model the session's stored pin names now."""
    pin = server.service.gateway.pinner.store.get(entry["session_id"])
    return None if pin is None else pin.model


def new_session() -> str:
    return f"pin-{uuid.uuid4().hex}"


# A named model in the hard window -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_named_model_is_not_reported_as_the_hard_pin(gw: ThreadServer, stream: bool) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    headers, entry = ask(gw, "Now you.", sid, model="fresh", stream=stream)
    assert headers["x-switchpoint-model"] == "fresh"
    assert headers["x-switchpoint-pin"] == "evicted_missing_model"  # it said "hard"
    assert entry["pin"]["pinned_model"] is None and entry["pin"]["previous_model"] == "cheap"
    assert "named its model" in headers["x-switchpoint-reasoning"]
    # The pin moved to the model that answered: the next auto turn is hard-pinned there.
    assert stored(gw, entry) == "fresh"
    headers, entry = ask(gw, "And again.", sid, stream=stream, headers=QUALITY_FIRST)
    assert headers["x-switchpoint-pin"] == "hard" and headers["x-switchpoint-model"] == "fresh"


def test_naming_the_pinned_model_itself_is_the_hard_pin(gw: ThreadServer) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    headers, entry = ask(gw, "Still you.", sid, model="cheap")
    assert headers["x-switchpoint-pin"] == "hard" and entry["pin"]["pinned_model"] == "cheap"
    assert headers["x-switchpoint-model"] == "cheap"


def test_a_narrowed_candidate_list_leaving_the_pin_out_is_not_hard(gw: ThreadServer) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    headers, entry = ask(gw, "Pick among these.", sid,
                         headers={"x-switchpoint-models": "good,other"})
    assert headers["x-switchpoint-model"] in {"good", "other"}
    assert headers["x-switchpoint-pin"] == "evicted_missing_model"
    assert entry["pin"]["previous_model"] == "cheap" and stored(gw, entry) == entry["model"]



AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("content", "extra"), [
    ([{"type": "text", "text": "Hear this."}, AUDIO], {}),
    ("Two takes, please.", {"n": 2}),
], ids=["audio-part", "two-answers"])
def test_a_pinned_model_whose_adapter_cannot_send_the_request_is_evicted_for_it(
        gw: ThreadServer, gw_fake: FakeProviderProcess, content: Any, extra: dict[str, Any],
        stream: bool) -> None:
    # other (the Anthropic Messages adapter) sends no audio part and gives one answer: the
    # pin to it says so, not that the model is missing (it is in the catalog, and named).
    sid = new_session()
    ask(gw, "Hello there.", sid, model="other")
    raw = client(gw).chat.completions.with_raw_response.create(
        model="auto", stream=stream, extra_headers={"x-session-id": sid, **QUALITY_FIRST},
        messages=[{"role": "user", "content": "Hello there."},
                  {"role": "assistant", "content": "Hi."}, {"role": "user", "content": content}],
        **extra)
    raw.http_response.read()
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert raw.headers["x-switchpoint-pin"] == entry["pin_state"] == "evicted_capability"
    assert entry["pin"]["previous_model"] == "other" and entry["pin"]["pinned_model"] is None
    assert entry["model"] != "other" and "other" in entry["excluded"]
    assert [r["body"]["model"] for r in gw_fake.requests()[1:]] == [UPSTREAM[entry["model"]]]
    # The session moves to the model that answered, hard-pinned there.
    assert stored(gw, entry) == entry["model"]
    headers, _ = ask(gw, "And now?", sid, headers=QUALITY_FIRST)
    assert headers["x-switchpoint-pin"] == "hard"
    assert headers["x-switchpoint-model"] == entry["model"]


# A pinned model that fails, or is known to be failing ------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_hard_pinned_model_that_fails_over_reports_the_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "500", "500")
    headers, entry = ask(gw, "Again please.", sid, stream=stream)
    assert outcomes(entry)[:2] == [("cheap", "server_error"), ("cheap", "server_error")]
    assert headers["x-switchpoint-model"] != "cheap"
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"  # it said "hard"
    assert entry["pin"]["previous_model"] == "cheap" and entry["pin"]["pinned_model"] is None
    assert "pinned model cheap did not answer" in headers["x-switchpoint-reasoning"]
    # The session now belongs to the model that answered.
    assert stored(gw, entry) == entry["model"]
    headers, _ = ask(gw, "Once more.", sid, stream=stream)
    assert headers["x-switchpoint-pin"] == "hard"
    assert headers["x-switchpoint-model"] == entry["model"]


def test_a_pinned_model_too_small_for_the_conversation_reports_evicted_context(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "context_length")  # (its upstream counts tokens its own way)
    headers, entry = ask(gw, "A long one.", sid)
    assert outcomes(entry)[0] == ("cheap", "context_length_exceeded")
    assert headers["x-switchpoint-pin"] == "evicted_context"
    assert headers["x-switchpoint-model"] != "cheap" and stored(gw, entry) == entry["model"]
    # The model that took the longer conversation holds the session now: the next turn is
    # hard-pinned there (an answer, not a failure, is what the stored pin remembers).
    pin = stored_pin(gw, entry)
    assert pin is not None and not pin.failed and not pin.outgrown
    headers, _ = ask(gw, "And a longer one still.", sid)
    assert headers["x-switchpoint-pin"] == "hard"
    assert headers["x-switchpoint-model"] == entry["model"]


def test_a_hard_pinned_model_with_an_open_circuit_is_routed_around(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    for _ in range(5):
        gw.service.gateway.health.record_failure("cheap", "server_error", detail="test")
    assert gw.service.gateway.health.state("cheap") == "open"
    gw_fake.reset()
    headers, entry = ask(gw, "Again please.", sid, headers=QUALITY_FIRST)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    assert headers["x-switchpoint-model"] != "cheap" and "cheap" not in entry["models_tried"]
    assert entry["decision_id"] is not None  # the router chose
    assert "pinned model cheap is unavailable" in headers["x-switchpoint-reasoning"]
    assert stored(gw, entry) == entry["model"]
    assert "cheap" not in [r["body"]["model"] for r in gw_fake.requests()]


# A conversation that outgrew its pinned model ---------------------------------------------------


LONG = "word " * 10_000  # ~12.5k tokens: over fresh's 8k window, under cheap's 16k


def test_a_re_home_that_cannot_go_to_its_target_reports_evicted_context(
        gw: ThreadServer) -> None:
    health = gw.service.gateway.health
    for cannot in ("left out", "circuit open"):
        sid = new_session()
        ask(gw, "Start a long document.", sid, model="fresh")
        extra: dict[str, str] = {}
        if cannot == "left out":
            extra = {"x-switchpoint-models": "good,other"}
        else:
            for _ in range(5):
                health.record_failure("cheap", "server_error", detail="test")
        headers, entry = ask(gw, LONG, sid, headers=extra)
        assert headers["x-switchpoint-model"] in {"good", "other"}, cannot
        assert headers["x-switchpoint-pin"] == "evicted_context", cannot  # not a re-home
        assert entry["pin"]["previous_model"] == "fresh" and entry["pin"]["pinned_model"] is None
        assert ("the conversation's re-home target is not among this request's candidates"
                if cannot == "left out" else "the conversation's re-home target cheap is "
                "unavailable") in headers["x-switchpoint-reasoning"], cannot
        assert stored(gw, entry) == entry["model"]


# The soft window ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_soft_pin_whose_model_lacks_tools_is_not_soft(soft: ThreadServer,
                                                       stream: bool) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    headers, entry = ask(soft, "Look it up.", sid, tools=TOOLS, stream=stream)
    assert headers["x-switchpoint-model"] != "fresh"
    assert headers["x-switchpoint-pin"] == "evicted_missing_model"  # it said "soft"
    assert entry["pin"]["bonus"] == {} and entry["pin"]["previous_model"] == "fresh"
    assert "pinned model fresh cannot serve this request" in headers["x-switchpoint-reasoning"]


def test_a_soft_pin_left_out_by_the_candidate_list_is_not_soft(soft: ThreadServer) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    headers, entry = ask(soft, "Pick among these.", sid,
                         headers={"x-switchpoint-models": "good,other"})
    assert headers["x-switchpoint-pin"] == "evicted_missing_model"
    assert entry["pin"]["bonus"] == {} and stored(soft, entry) == entry["model"]


def test_a_soft_pin_with_an_open_circuit_is_not_soft(soft: ThreadServer) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    for _ in range(5):
        soft.service.gateway.health.record_failure("fresh", "server_error", detail="test")
    headers, entry = ask(soft, "Again please.", sid)
    assert headers["x-switchpoint-model"] != "fresh"
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"  # it said "soft"
    assert entry["pin"]["bonus"] == {} and entry["pin"]["previous_model"] == "fresh"


@pytest.mark.parametrize("stream", [False, True])
def test_a_soft_pinned_model_ranked_first_that_fails_is_not_soft(
        soft: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    gw_fake.script("fresh", "500", "500")
    headers, entry = ask(soft, "Hello there, again.", sid, stream=stream,
                         headers={"x-switchpoint-cost-weight": "1000"})
    assert entry["models_tried"][0] == "fresh" and headers["x-switchpoint-model"] != "fresh"
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"  # it said "soft"
    assert entry["pin"]["bonus"] == {} and stored(soft, entry) == entry["model"]


def test_a_named_model_in_the_soft_window_is_not_soft(soft: ThreadServer) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    headers, entry = ask(soft, "Now you.", sid, model="cheap")
    assert headers["x-switchpoint-pin"] == "evicted_missing_model"
    assert entry["pin"]["bonus"] == {} and stored(soft, entry) == "cheap"


def test_a_soft_pin_that_wins_and_answers_is_soft(soft: ThreadServer) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    headers, entry = ask(soft, "Hello there, again.", sid,
                         headers={"x-switchpoint-cost-weight": "1000"})
    assert headers["x-switchpoint-pin"] == "soft" and headers["x-switchpoint-model"] == "fresh"
    assert entry["pin"]["bonus"] == {"fresh": 0.5}


# A failed request ------------------------------------------------------------------------------


def test_a_failed_request_blames_only_a_pinned_model_that_failed(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    # A request naming another model fails there (a refusal no fallback would change) ...
    gw_fake.script("fresh", "content_filter")
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(
            model="fresh", messages=[{"role": "user", "content": "Something else."}],
            extra_headers={"x-session-id": sid})
    # ... which says nothing about the pinned model: the session is still hard-pinned to it.
    headers, entry = ask(gw, "Back to you.", sid)
    assert headers["x-switchpoint-pin"] == "hard" and headers["x-switchpoint-model"] == "cheap"
    # The pinned model failing is another matter.
    gw_fake.script("cheap", "content_filter")
    with pytest.raises(openai.BadRequestError):
        client(gw).chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "And this?"}],
            extra_headers={"x-session-id": sid})
    headers, entry = ask(gw, "Still there?", sid)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    assert entry["pin"]["previous_model"] == "cheap"


# A budget that leaves the pinned model out ------------------------------------------------------


@pytest.fixture(scope="module")
def budgeted(gw_fake: FakeProviderProcess,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root: Path = tmp_path_factory.mktemp("budgeted-pins")
    config = root / "switchpoint.yaml"
    text = config_text(gw_fake, data_dir=str(root / "data"))
    config.write_text(text + "budgets:\n  models: {cheap: 0.001/day}\n", encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
def test_a_pinned_model_a_budget_leaves_out_is_not_hard(budgeted: ThreadServer,
                                                        stream: bool) -> None:
    sid = new_session()
    ask(budgeted, "Hello there.", sid, model="cheap", max_tokens=10)
    # cheap's worst case for 8000 output tokens is past its budget: the request goes elsewhere.
    headers, entry = ask(budgeted, "A long answer, please.", sid, max_tokens=8000,
                         stream=stream)
    assert headers["x-switchpoint-model"] != "cheap" and "cheap" not in entry["models_tried"]
    assert headers["x-switchpoint-pin"] == "evicted_missing_model"  # it said "hard"
    assert "pinned model cheap was left out" in headers["x-switchpoint-reasoning"]
    assert entry["pin"]["previous_model"] == "cheap" and stored(budgeted, entry) == entry["model"]


# No model answers -------------------------------------------------------------------------------


EVERY_UPSTREAM = ("good", "claude-fake-2", "cheap", "fresh")  # (the catalog's upstream names)


def fail_everywhere(fake: FakeProviderProcess, behaviour: str = "500") -> None:
    for upstream in EVERY_UPSTREAM:
        fake.default(upstream, behaviour)


def ask_failing(server: ThreadServer, text: str, sid: str, stream: bool = False,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str],
                                                                dict[str, Any]]:
    """One request of session ``sid`` that no model answers: its status, headers and log
    entry (whose pin must agree with the headers')."""
    with pytest.raises(openai.APIStatusError) as failed:
        client(server).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": text}], stream=stream,
            extra_headers={"x-session-id": sid, **(headers or {})})
    response = failed.value.response
    entry = log_entry(server, response.headers["x-switchpoint-request-id"])
    assert response.headers["x-switchpoint-pin"] == entry["pin_state"]
    assert entry["status"] == "error" and entry["model"] is None
    return response.status_code, dict(response.headers), entry


def stored_pin(server: ThreadServer, entry: dict[str, Any]) -> Any:
    return server.service.gateway.pinner.store.get(entry["session_id"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_hard_pinned_request_no_model_answers_reports_the_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    fail_everywhere(gw_fake)
    status, headers, entry = ask_failing(gw, "Again please.", sid, stream=stream)
    assert status == 502 and entry["models_tried"][0] == "cheap"
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"  # it said "hard"
    assert entry["pin"]["previous_model"] == "cheap" and entry["pin"]["pinned_model"] is None
    assert "pinned model cheap did not answer" in headers["x-switchpoint-reasoning"]
    pin = stored_pin(gw, entry)
    assert pin is not None and pin.model == "cheap" and pin.failed
    # The next turn says the same of the session, and the router chooses.
    gw_fake.reset()
    headers, entry = ask(gw, "Once more.", sid, stream=stream)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    assert entry["decision_id"] is not None and stored(gw, entry) == entry["model"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_conversation_no_model_takes_as_too_long_stays_evicted_context(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "context_length")  # the pinned model refuses it as too long
    fail_everywhere(gw_fake)  # and every other model fails
    status, headers, entry = ask_failing(gw, "A long one.", sid, stream=stream)
    assert status >= 400 and entry["models_tried"][0] == "cheap"
    assert outcomes(entry)[0] == ("cheap", "context_length_exceeded")
    assert headers["x-switchpoint-pin"] == "evicted_context"
    pin = stored_pin(gw, entry)
    assert pin is not None and pin.model == "cheap" and pin.failed and pin.outgrown
    # The conversation only grows: the next turn says why the pin went, not "it failed", and
    # (in the hard window) moves it to a larger-context model.
    gw_fake.reset()
    headers, entry = ask(gw, "A longer one.", sid, stream=stream)
    assert headers["x-switchpoint-pin"] == "rehomed_context"
    assert entry["pin"]["previous_model"] == "cheap" and entry["decision_id"] is None
    assert stored(gw, entry) == entry["model"] != "cheap"


def test_a_pin_evicted_for_a_failure_after_one_for_length_says_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # Which one the stored pin says is the latest: a 500 after an answer is a failure.
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "context_length")
    fail_everywhere(gw_fake)
    ask_failing(gw, "A long one.", sid)
    gw_fake.reset()
    ask(gw, "Hello there.", sid, model="cheap")  # answered: pinned to cheap again
    fail_everywhere(gw_fake)
    _, headers, entry = ask_failing(gw, "Again please.", sid)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    pin = stored_pin(gw, entry)
    assert pin.failed and not pin.outgrown
    gw_fake.reset()
    headers, _ = ask(gw, "Once more.", sid)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"


def test_a_hard_pinned_request_every_model_times_out_reports_the_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    fail_everywhere(gw_fake, "hang:seconds=2")
    status, headers, entry = ask_failing(gw, "Again please.", sid)
    assert status == 504 and entry["models_tried"][0] == "cheap"
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    assert stored_pin(gw, entry).failed


@pytest.mark.parametrize("stream", [False, True])
def test_a_soft_pinned_request_no_model_answers_reports_the_failure(
        soft: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    sid = new_session()
    ask(soft, "Hello there.", sid, model="fresh")
    fail_everywhere(gw_fake)
    status, headers, entry = ask_failing(soft, "Hello there, again.", sid, stream=stream,
                                         headers={"x-switchpoint-cost-weight": "1000"})
    assert status == 502 and entry["models_tried"][0] == "fresh"
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"  # it said "soft"
    assert entry["pin"]["bonus"] == {} and entry["pin"]["previous_model"] == "fresh"
    assert stored_pin(soft, entry).failed


def test_a_pinned_model_the_upstream_refuses_the_request_for_reports_the_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "content_filter")  # a refusal no fallback would change
    status, headers, entry = ask_failing(gw, "Something the filter dislikes.", sid)
    assert status == 400 and entry["models_tried"] == ["cheap"]
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"  # it said "hard"
    assert stored_pin(gw, entry).failed


# The client leaves ------------------------------------------------------------------------------


def session_entry(server: ThreadServer, session_key: str, status: str,
                  timeout: float = 10.0) -> dict[str, Any]:
    """The newest log entry of ``session_key`` with ``status``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in httpx.get(f"{server.base}/v1/router/requests",
                               params={"limit": 20}).json()["data"]:
            if entry["session_id"] == session_key and entry["status"] == status:
                return dict(entry)
        time.sleep(0.05)
    raise AssertionError(f"no {status} entry of the session")


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_after_the_pinned_model_failed_reports_the_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    sid = new_session()
    _, first = ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "500", "500")
    gw_fake.default("good", "hold:seconds=5")  # (cheap's fallback, called next)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gw.base}/v1/chat/completions", timeout=0.5,
                   headers={"x-session-id": sid},
                   json={"model": "auto", "stream": stream,
                         "messages": [{"role": "user", "content": "Again please."}]})
    entry = session_entry(gw, first["session_id"], "client_closed")
    assert outcomes(entry)[:2] == [("cheap", "server_error"), ("cheap", "server_error")]
    assert entry["pin_state"] == "evicted_post_failure"  # it said "hard"
    assert entry["pin"]["previous_model"] == "cheap"
    pin = stored_pin(gw, entry)
    assert pin is not None and pin.model == "cheap" and pin.failed
    assert ("good", "client_closed") in outcomes(entry)  # (called when the client left)



def test_a_client_that_leaves_mid_stream_keeps_what_the_header_said(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """The stream's headers said the pin's state before the client left: the log says the
    same, and the session stays with the model that was answering."""
    for cheap_fails in (False, True):
        sid = new_session()
        _, first = ask(gw, "Hello there.", sid, model="cheap")
        if cheap_fails:
            gw_fake.script("cheap", "500", "500")
        slow = "ok:chunk_delay=0.2"
        gw_fake.default("cheap", slow)
        gw_fake.default("good", slow)
        with httpx.stream("POST", f"{gw.base}/v1/chat/completions",
                          headers={"x-session-id": sid},
                          json={"model": "auto", "stream": True, "messages": [
                              {"role": "user", "content": "Tell me a long story."}]}) as r:
            said = (r.headers["x-switchpoint-pin"], r.headers["x-switchpoint-model"])
            next(r.iter_lines())
        entry = session_entry(gw, first["session_id"], "client_closed")
        assert (entry["pin_state"], entry["model"]) == said
        assert said == (("evicted_post_failure", "good") if cheap_fails else ("hard", "cheap"))
        pin = stored_pin(gw, entry)
        assert pin is not None and pin.model == said[1] and not pin.failed
        gw_fake.reset()


# The pinned model breaks its stream after the first byte ----------------------------------------


def pin_counts(server: ThreadServer) -> dict[str, int]:
    """The request log's counts by pin state (GET /v1/router/stats)."""
    stats = httpx.get(f"{server.base}/v1/router/stats").json()["requests"]
    return dict(stats["by_pin_state"])


def test_a_pinned_model_that_breaks_its_stream_is_logged_as_the_failure_it_was(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """Its headers, sent with the first byte, said ``hard``; the log, which keeps what
    happened, says the pinned model failed (``evicted_post_failure``, saying what the headers
    had said), as the session's stored pin and the request counts do, and the next turn."""
    sid = new_session()
    _, first = ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "cut:after=2")
    counts = pin_counts(gw)
    raw = client(gw).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Tell me more."}], stream=True,
        extra_headers={"x-session-id": sid})
    assert raw.headers["x-switchpoint-pin"] == "hard"
    assert raw.headers["x-switchpoint-model"] == "cheap"
    with pytest.raises(openai.APIError):
        for _ in raw.parse():
            pass
    entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
    assert entry["status"] == "stream_broken" and entry["model"] == "cheap"
    assert entry["pin_state"] == "evicted_post_failure"
    assert entry["pin"]["previous_model"] == "cheap" and entry["pin"]["pinned_model"] is None
    assert "pinned model cheap broke its stream after the answer had started" in \
        entry["pin"]["note"]
    assert "headers, sent before, said hard" in entry["pin"]["note"]
    assert entry["pin"]["note"] in entry["reasoning"]
    pin = stored_pin(gw, entry)
    assert pin is not None and pin.model == "cheap" and pin.failed and not pin.outgrown
    after = pin_counts(gw)
    assert after.get("evicted_post_failure", 0) == counts.get("evicted_post_failure", 0) + 1
    assert after.get("hard", 0) == counts.get("hard", 0)
    # The next turn says the same, and the router chooses.
    headers, entry = ask(gw, "Try again.", sid)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    assert entry["pin"]["previous_model"] == "cheap" and entry["decision_id"] is not None
    assert stored(gw, entry) == entry["model"]
    assert first["session_id"] == entry["session_id"]


def test_a_plain_answer_the_pinned_model_cuts_short_reports_the_failure(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """Not streamed, nothing has gone out when the pinned model's answer breaks: another model
    answers, and the headers, the log and the stored pin all say the pin did not hold."""
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "cut", "cut")
    headers, entry = ask(gw, "Tell me more.", sid)
    assert headers["x-switchpoint-pin"] == "evicted_post_failure"
    assert headers["x-switchpoint-model"] != "cheap"
    assert outcomes(entry)[0][0] == "cheap" and outcomes(entry)[0][1] != "ok"
    assert stored(gw, entry) == entry["model"] and not stored_pin(gw, entry).failed


def test_in_process_a_pinned_model_that_breaks_its_stream_is_logged_as_the_failure(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The in-process door: the stream's info said ``hard`` as it began; once it broke, the
    info the caller holds, the log and the stored pin say the pinned model failed."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, data_dir=str(tmp_path / "data")), encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        opening = {"role": "user", "content": "Hello there."}
        gateway.complete([opening], model="cheap", session_id="story")
        gw_fake.script("cheap", "cut:after=2")
        stream = gateway.stream([opening, {"role": "user", "content": "Tell me more."}],
                                session_id="story")
        info = stream.switchpoint
        assert (info.pin_state, info.model) == ("hard", "cheap")
        with pytest.raises(StreamBroken):
            for _ in stream:
                pass
        assert info.pin_state == "evicted_post_failure"
        assert info.pin["previous_model"] == "cheap" and "said hard" in info.pin["note"]
        assert gateway.store is not None
        [entry] = [e for e in gateway.store.requests(20, None)[0] if e["id"] == info.request_id]
        assert (entry["status"], entry["pin_state"]) == ("stream_broken", "evicted_post_failure")
        assert entry["pin"] == info.pin
        pin = gateway.pinner.store.get(entry["session_id"])
        assert pin is not None and pin.model == "cheap" and pin.failed
        again = gateway.complete([opening, {"role": "user", "content": "Try again."}],
                                 session_id="story")
        assert again.switchpoint.pin_state == "evicted_post_failure"


# A conversation that outgrows a small-context pinned model moves for good -----------------------


WINDOWS = {"fresh": 8000, "cheap": 16000, "good": 128000, "other": 200000}


def ask_turns(server: ThreadServer, turns: list[str], sid: str, stream: bool = False,
              model: str = "auto") -> tuple[dict[str, str], dict[str, Any]]:
    """``ask``, with the whole conversation so far (each turn a user message)."""
    raw = client(server).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": t} for t in turns], stream=stream,
        extra_headers={"x-session-id": sid})
    raw.http_response.read()
    entry = log_entry(server, raw.headers["x-switchpoint-request-id"])
    assert raw.headers["x-switchpoint-pin"] == entry["pin_state"]
    assert raw.headers["x-switchpoint-model"] == entry["model"]
    return dict(raw.headers), entry


@pytest.mark.parametrize("stream", [False, True])
def test_a_conversation_that_outgrows_its_pinned_model_moves_and_stays(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    """Pinned to ``fresh`` (8k), the turn that no longer fits goes to a model whose window
    (the catalog's) holds it, the session is pinned there, and later turns stay there."""
    sid = new_session()
    turns = ["Start a long document."]
    headers, _ = ask_turns(gw, turns, sid, stream=stream, model="fresh")
    assert headers["x-switchpoint-model"] == "fresh"
    turns.append(LONG)
    headers, entry = ask_turns(gw, turns, sid, stream=stream)
    assert headers["x-switchpoint-pin"] == "rehomed_context"
    moved = headers["x-switchpoint-model"]
    assert WINDOWS[moved] > WINDOWS["fresh"] and "fresh" in entry["excluded"]
    assert stored(gw, entry) == moved
    for more in ("Go on.", "And the end?"):
        turns.append(more)
        headers, entry = ask_turns(gw, turns, sid, stream=stream)
        assert (headers["x-switchpoint-pin"], headers["x-switchpoint-model"]) == ("hard", moved)
        assert stored(gw, entry) == moved
    assert "fresh" not in [r["body"]["model"] for r in gw_fake.requests()[1:]]


@pytest.mark.parametrize("stream", [False, True])
def test_a_pin_evicted_for_length_moves_the_session_to_a_larger_context_model(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    """The pinned model refused the conversation as too long (its upstream counts tokens its
    own way: the catalog's estimate said it fitted) and no model answered. The next turn, in
    the hard window, is re-homed to a model with a larger window than the one that refused it,
    not routed back to it or to a smaller one; the session stays there."""
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "context_length")
    fail_everywhere(gw_fake)
    _, headers, entry = ask_failing(gw, "A long one.", sid, stream=stream)
    assert headers["x-switchpoint-pin"] == "evicted_context"
    pin = stored_pin(gw, entry)
    assert pin is not None and pin.model == "cheap" and pin.failed and pin.outgrown
    gw_fake.reset()
    headers, entry = ask(gw, "A longer one.", sid, stream=stream)
    moved = headers["x-switchpoint-model"]
    assert headers["x-switchpoint-pin"] == "rehomed_context"
    assert entry["pin"]["previous_model"] == "cheap" and entry["pin"]["pinned_model"] == moved
    assert WINDOWS[moved] > WINDOWS["cheap"]
    assert [r["body"]["model"] for r in gw_fake.requests()] == [UPSTREAM[moved]]
    assert stored(gw, entry) == moved and not stored_pin(gw, entry).failed
    headers, entry = ask(gw, "And longer still.", sid, stream=stream)
    assert (headers["x-switchpoint-pin"], headers["x-switchpoint-model"]) == ("hard", moved)


def test_a_pin_evicted_for_length_in_the_soft_window_routes_among_larger_models(
        soft: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """Past the hard window the router chooses, but not among the models no larger than the
    one that refused the conversation: they would refuse it too."""
    sid = new_session()
    ask(soft, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "context_length")
    fail_everywhere(gw_fake)
    ask_failing(soft, "A long one.", sid)
    gw_fake.reset()
    # Cost-first, the router would take the cheapest model that fits the estimate.
    headers, entry = ask(soft, "A longer one.", sid, headers={"x-switchpoint-cost-weight": "1"})
    assert headers["x-switchpoint-pin"] == "evicted_context"
    assert WINDOWS[headers["x-switchpoint-model"]] > WINDOWS["cheap"]
    assert {"cheap", "fresh"} <= set(entry["excluded"])
    assert "refused the conversation as too long" in entry["excluded"]["cheap"][0]
    # Answered: the session is the answering model's now, and no longer outgrown.
    pin = stored_pin(soft, entry)
    assert pin.model == headers["x-switchpoint-model"] and not pin.failed


def test_a_re_home_target_that_refuses_the_conversation_as_too_long_is_moved_on_from(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """The re-home's target refused the conversation as too long too, and no model answered:
    the next turn moves it to a model larger than the target, not to the target again (which
    would refuse it again, turn after turn, for the rest of the hard window)."""
    sid = new_session()
    ask(gw, "Hello there.", sid, model="cheap")
    gw_fake.script("cheap", "context_length")
    fail_everywhere(gw_fake)
    ask_failing(gw, "A long one.", sid)
    fail_everywhere(gw_fake, "context_length")  # every model refuses it as too long now
    _, headers, entry = ask_failing(gw, "A longer one.", sid)
    target = entry["models_tried"][0]  # (the re-home's target)
    assert headers["x-switchpoint-pin"] == "evicted_context" and WINDOWS[target] > 16000
    pin = stored_pin(gw, entry)
    assert pin.model == target and pin.failed and pin.outgrown
    gw_fake.reset()
    headers, entry = ask(gw, "And longer still.", sid)
    moved = headers["x-switchpoint-model"]
    assert WINDOWS[moved] > WINDOWS[target], (target, moved, headers["x-switchpoint-pin"])
    assert headers["x-switchpoint-pin"] == "rehomed_context"
    assert [r["body"]["model"] for r in gw_fake.requests()] == [UPSTREAM[moved]]
