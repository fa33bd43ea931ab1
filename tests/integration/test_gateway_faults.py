"""Every upstream fault the issue lists, through the gateway: for each, what the official
``openai`` client sees (one clean answer from a retry or a fallback, or the right exception;
after the first byte, an ``APIError`` and never a clean end) and what the request log records.

The fake provider is scripted per upstream model: ``good`` (OpenAI-compatible, falls back to
``other``) and ``claude-fake-2`` (``other``, the Anthropic Messages API). Each model is tried at
most twice (``max_attempts_per_model`` 2); timeouts are 0.5 s.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.responses import JSONResponse

from switchpoint.gateway.providers._http import OFF_LOOP_BYTES
from switchpoint.server import streaming as streaming_module
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    GATEWAY,
    async_client,
    client,
    gateway_server,
    log_entry,
    outcomes,
)
from tests.integration.servers import ThreadServer, until

OTHER = "claude-fake-2"  # the upstream name of the catalog model `other`


def user(text: str = "Tell me about failover") -> list[Any]:
    return [{"role": "user", "content": f"{text} [{uuid.uuid4().hex[:8]}]"}]


def plain(gw: ThreadServer, model: str = "good", **kw: Any) -> tuple[Any, dict[str, Any]]:
    """A plain request: (the parsed completion, its request log entry)."""
    raw = client(gw).chat.completions.with_raw_response.create(model=model, messages=user(),
                                                               **kw)
    return raw.parse(), log_entry(gw, raw.headers["x-switchpoint-request-id"])


def streamed(gw: ThreadServer, model: str = "good") -> tuple[str, set[str], dict[str, Any]]:
    """A streamed request read to its end: (text, chunk models, log entry)."""
    with client(gw).chat.completions.with_streaming_response.create(
            model=model, messages=user(), stream=True) as response:
        request_id = response.headers["x-switchpoint-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, {c.model for c in chunks}, log_entry(gw, request_id)


def answered(gw: ThreadServer, streaming: bool) -> tuple[str, dict[str, Any]]:
    """A request to ``good``, streamed (read to its end) or plain: (its text, log entry)."""
    if streaming:
        text, _, entry = streamed(gw)
        return text, entry
    completion, entry = plain(gw)
    return completion.choices[0].message.content or "", entry


def broken_stream(gw: ThreadServer, model: str = "good") -> tuple[list[Any], openai.APIError,
                                                                  dict[str, Any]]:
    """A stream that must fail after its first byte: (chunks received, the error, log)."""
    received: list[Any] = []
    with client(gw).chat.completions.with_streaming_response.create(
            model=model, messages=user(), stream=True) as response:
        request_id = response.headers["x-switchpoint-request-id"]
        with pytest.raises(openai.APIError) as info:
            for chunk in response.parse():
                received.append(chunk)
    return received, info.value, log_entry(gw, request_id)


def upstream_models(fake: FakeProviderProcess) -> list[str]:
    return [r["body"]["model"] for r in fake.requests()]


# Rate limits -----------------------------------------------------------------------------------


def test_429_with_retry_after_waits_exactly_and_retries_the_same_model(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "429:retry_after=0.4")
    t0 = time.perf_counter()
    completion, entry = plain(gw)
    assert time.perf_counter() - t0 >= 0.4
    assert completion.model == "good"
    assert outcomes(entry) == [("good", "rate_limited"), ("good", "ok")]
    assert entry["attempts"][1]["waited_s"] == pytest.approx(0.4)
    # The wait the upstream asked for is in its try's entry (it was not kept at all).
    assert entry["attempts"][0]["retry_after_s"] == pytest.approx(0.4)
    assert "retry_after_s" not in entry["attempts"][1]
    assert entry["status"] == "ok" and entry["escalated"] is False


def test_429_without_retry_after_backs_off_then_escalates(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "429", "429")
    completion, entry = plain(gw)
    assert completion.model == "other"
    assert (completion.choices[0].message.content or "").startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "rate_limited"), ("good", "rate_limited"),
                               ("other", "ok")]
    assert 0 <= entry["attempts"][1]["waited_s"] <= 0.02  # jittered backoff, capped
    assert entry["models_tried"] == ["good", "other"] and entry["escalated"] is True


def test_429_everywhere_is_a_rate_limit_error_with_retry_after(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # Retry-After 5 s is over max_retry_after_s (2 s): not waited out, each model is left.
    gw_fake.script("good", "429:retry_after=5")
    gw_fake.script(OTHER, "429:retry_after=5")
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="good", messages=user())
    assert info.value.response.headers["retry-after"] == "5"
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert entry["status"] == "error" and entry["http_status"] == 429
    assert entry["error_kind"] == "rate_limited" and entry["model"] is None
    assert outcomes(entry) == [("good", "rate_limited"), ("other", "rate_limited")]


def test_429_everywhere_without_retry_after_still_says_when_to_retry(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # No upstream said how long, and no model rests: the client is told a second.
    gw_fake.script("good", "429", "429")
    gw_fake.script(OTHER, "429", "429")
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="good", messages=user())
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.code == "rate_limited"
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert outcomes(entry) == [("good", "rate_limited"), ("good", "rate_limited"),
                               ("other", "rate_limited"), ("other", "rate_limited")]
    assert all("retry_after_s" not in a for a in entry["attempts"])


def test_429_beside_a_resting_model_says_what_is_left_of_its_rest(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # other asks for 60 s: it rests that long, and its client hears so.
    gw_fake.script(OTHER, "429:retry_after=60")
    with pytest.raises(openai.RateLimitError) as first:
        client(gw).chat.completions.create(model="other", messages=user())
    assert first.value.response.headers["retry-after"] == "60"
    # good is rate limited without a Retry-After and its fallback other still rests: the
    # earliest a model may be asked again is when other's rest ends.
    gw_fake.script("good", "429", "429")
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="good", messages=user())
    assert 50 < int(info.value.response.headers["retry-after"]) <= 60
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert outcomes(entry) == [("good", "rate_limited"), ("good", "rate_limited"),
                               ("other", "circuit_open")]
    assert len(gw_fake.requests()) == 3  # other was not called again


def test_a_503_with_retry_after_ms_is_a_rate_limit_in_either_dialect(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """The same upstream 503 asking for a wait in milliseconds, from an OpenAI-compatible model
    (fresh) and from one behind the Messages API (other): logged alike and resting its model
    alike."""
    seen = {}
    for model, upstream in (("fresh", "fresh"), ("other", OTHER)):
        # 60 s is over max_retry_after_s: not waited out, and neither model has a fallback.
        gw_fake.script(upstream, "503:retry_after_ms=60000")
        with pytest.raises(openai.RateLimitError) as info:
            client(gw).chat.completions.create(model=model, messages=user())
        headers = info.value.response.headers
        entry = log_entry(gw, headers["x-switchpoint-request-id"])
        health = httpx.get(f"{gw.base}/v1/router/health", timeout=15).json()["models"][model]
        rest = health["rate_limited_for_s"]
        assert rest is not None and 50 < rest <= 60, health
        seen[model] = (headers["retry-after"], entry["error_kind"],
                       [(a["outcome"], a["status"], a["retry_after_s"])
                        for a in entry["attempts"]],
                       [e["kind"] for e in health["recent_errors"]],
                       health["consecutive_failures"], health["circuit"])
    assert seen["fresh"] == seen["other"] == (
        "60", "rate_limited", [("rate_limited", 503, 60.0)], ["rate_limited"], 1, "closed")


# Server errors and broken connections ----------------------------------------------------------


def test_500_twice_escalates_to_the_fallback(gw: ThreadServer,
                                             gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "500", "500")
    completion, entry = plain(gw)
    assert completion.model == "other"
    assert outcomes(entry) == [("good", "server_error"), ("good", "server_error"),
                               ("other", "ok")]
    assert entry["attempts"][0]["status"] == 500
    assert upstream_models(gw_fake) == ["good", "good", OTHER]


def metrics(gw: ThreadServer) -> dict[str, float]:
    """``GET /metrics`` as ``{'name{labels}': value}``."""
    text = httpx.get(f"{gw.base}/metrics").text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_count_tries_escalations_tokens_and_cost_as_the_log_does(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    before = metrics(gw)
    gw_fake.script("good", "500", "500")
    completion, entry = plain(gw)
    text, _, streamed_entry = streamed(gw)
    after = metrics(gw)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    tries = "switchpoint_chat_upstream_attempts_total"
    assert completion.model == "other" and text
    assert delta(tries + '{model="good",outcome="server_error"}') == 2
    assert delta(tries + '{model="other",outcome="ok"}') == 1
    assert delta(tries + '{model="good",outcome="ok"}') == 1
    assert delta("switchpoint_chat_escalations_total") == 1
    assert delta('switchpoint_chat_requests_total{model="other",status="ok"}') == 1
    assert delta('switchpoint_chat_requests_total{model="good",status="ok"}') == 1
    for e in (entry, streamed_entry):
        model = e["model"]
        assert delta(f'switchpoint_chat_tokens_total{{model="{model}",kind="completion"}}') \
            == e["completion_tokens"] > 0
        assert delta(f'switchpoint_chat_cost_usd_total{{model="{model}"}}') \
            == pytest.approx(e["cost_usd"], abs=1e-9)
    assert delta("switchpoint_chat_time_to_first_token_seconds_count") == 1  # the stream
    assert delta('switchpoint_http_requests_total{route="/v1/chat/completions",method="POST",'
                 'status="200"}') == 2


def test_503_once_is_retried_on_the_same_model(gw: ThreadServer,
                                               gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "503")
    completion, entry = plain(gw)
    assert completion.model == "good"
    assert outcomes(entry) == [("good", "server_error"), ("good", "ok")]
    assert entry["attempts"][0]["status"] == 503


def test_a_503_s_retry_after_is_in_its_try_s_log_entry(gw: ThreadServer,
                                                      gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "503:retry_after=0.2")
    completion, entry = plain(gw)
    assert completion.model == "good"
    assert outcomes(entry) == [("good", "rate_limited"), ("good", "ok")]
    first = entry["attempts"][0]
    assert first["status"] == 503 and first["retry_after_s"] == pytest.approx(0.2)
    assert entry["attempts"][1]["waited_s"] == pytest.approx(0.2)


def test_500_everywhere_is_a_502(gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "500", "500")
    gw_fake.script(OTHER, "503", "503")
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(model="good", messages=user())
    assert info.value.status_code == 502
    assert info.value.code == "upstream_failed"
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert entry["status"] == "error" and entry["http_status"] == 502
    assert entry["models_tried"] == ["good", "other"] and len(entry["attempts"]) == 4


@pytest.mark.parametrize("stream", [False, True])
def test_connection_reset_escalates(gw: ThreadServer, gw_fake: FakeProviderProcess,
                                    stream: bool) -> None:
    gw_fake.script("good", "reset", "reset")
    if stream:
        text, models, entry = streamed(gw)
        assert text.startswith(f"Echo from {OTHER}") and models == {"other"}
    else:
        completion, entry = plain(gw)
        assert completion.model == "other"
    assert outcomes(entry) == [("good", "connect_error"), ("good", "connect_error"),
                               ("other", "ok")]
    assert entry["status"] == "ok"


# Timeouts ---------------------------------------------------------------------------------------


def test_hang_before_headers_times_out_and_escalates(gw: ThreadServer,
                                                     gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "hang:seconds=10", "hang:seconds=10")
    t0 = time.perf_counter()
    completion, entry = plain(gw)
    assert time.perf_counter() - t0 < 5  # two 0.5 s read timeouts, not the 10 s hang
    assert completion.model == "other"
    assert outcomes(entry) == [("good", "read_timeout"), ("good", "read_timeout"),
                               ("other", "ok")]


def test_hang_before_headers_of_a_stream_is_a_first_token_timeout(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "hang:seconds=2", "hang:seconds=2")
    text, models, entry = streamed(gw)
    assert models == {"other"} and text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "first_token_timeout"),
                               ("good", "first_token_timeout"), ("other", "ok")]
    assert entry["ttft_ms"] >= 1000  # two 0.5 s first-token timeouts came first


def test_stall_before_the_first_token_escalates(gw: ThreadServer,
                                                gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "stall:seconds=2", "stall:seconds=2")
    text, models, entry = streamed(gw)
    assert models == {"other"} and text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "first_token_timeout"),
                               ("good", "first_token_timeout"), ("other", "ok")]


def test_a_stalled_plain_answer_times_out_and_escalates(gw: ThreadServer,
                                                        gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "stall:seconds=2", "stall:seconds=2")
    completion, entry = plain(gw)
    assert completion.model == "other"
    assert [o for _, o in outcomes(entry)] == ["read_timeout", "read_timeout", "ok"]


def test_timeouts_everywhere_are_a_504(gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "hang:seconds=1", "hang:seconds=1")
    gw_fake.script(OTHER, "hang:seconds=1", "hang:seconds=1")
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(model="good", messages=user())
    assert info.value.status_code == 504
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert entry["error_kind"] == "read_timeout" and entry["http_status"] == 504


# Streams that break after the first byte ------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["cut:after=2", "malformed:after=2", "nofinish:after=2"])
def test_a_stream_broken_after_the_first_byte_raises_and_is_logged(
        gw: ThreadServer, gw_fake: FakeProviderProcess, behaviour: str) -> None:
    gw_fake.script("good", behaviour)
    received, error, entry = broken_stream(gw)
    # every piece of the answer sent before the break reaches the client (before a reset
    # too, however late the gateway reads), then the error
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "Echo from ", text
    assert "good" in error.message
    assert upstream_models(gw_fake) == ["good"]  # no switch once the client has bytes
    assert entry["status"] == "stream_broken" and entry["error_kind"] == "stream_broken"
    assert entry["models_tried"] == ["good"] and entry["model"] == "good"
    assert outcomes(entry) == [("good", "ok"), ("good", "stream_broken")]


def test_a_stream_cut_short_with_a_clean_end_is_not_a_clean_end_for_the_client(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "nofinish:after=2")
    received, error, entry = broken_stream(gw)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "Echo from "
    assert "before the answer finished" in error.message
    assert entry["status"] == "stream_broken"


def test_a_stream_cut_short_that_ends_with_done_reaches_the_client_and_is_logged_broken(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """An upstream that ends the stream with ``[DONE]`` while no choice had a finish reason
    cut its answer short: the client gets the stream as it was sent, to its clean end, and the
    log says the stream broke (not ``ok``), charged to the model's health, not a success."""
    gw_fake.script("good", "nofinish:after=2,done=1")
    text, models, entry = streamed(gw)
    assert text == "Echo from " and models == {"good"}
    assert entry["status"] == "stream_broken" and entry["error_kind"] == "stream_broken"
    assert "[DONE]" in entry["error"] and "finish reason" in entry["error"]
    assert outcomes(entry) == [("good", "ok"), ("good", "stream_broken")]
    assert entry["completion_tokens"] > 0  # (its usage came before [DONE])
    health = httpx.get(f"{gw.base}/v1/router/health").json()["models"]["good"]
    assert health["failures"] == 1 and health["successes"] == 0, health


def test_a_stream_that_ends_after_its_finish_reason_without_done_is_complete(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "nodone")
    text, models, entry = streamed(gw)
    assert text.startswith("Echo from good: Tell me about failover") and models == {"good"}
    assert entry["status"] == "ok" and outcomes(entry) == [("good", "ok")]
    assert entry["completion_tokens"] > 0  # the usage chunk came before the missing [DONE]


def test_a_whole_stream_whose_upstream_then_goes_silent_without_done_is_complete(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # Every choice finished and the final usage chunk came; then silence, the body never ended.
    # Waiting out the read timeout for [DONE] failed the whole answer as broken.
    gw_fake.script("good", "nodone:seconds=5")
    started = time.monotonic()
    text, models, entry = streamed(gw)
    assert time.monotonic() - started < 3
    assert text.startswith("Echo from good: Tell me about failover") and models == {"good"}
    assert entry["status"] == "ok" and outcomes(entry) == [("good", "ok")]
    assert entry["completion_tokens"] > 0


def test_an_anthropic_stream_silent_after_its_stop_reason_without_message_stop_is_complete(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # message_delta brought the stop reason and the final usage; only message_stop may follow.
    # Waiting out the read timeout for it failed the whole answer as broken.
    gw_fake.script(OTHER, "nodone:seconds=5")
    text, _, entry = streamed(gw, "other")
    assert text.startswith(f"Echo from {OTHER}: Tell me about failover")
    assert entry["status"] == "ok" and outcomes(entry) == [("other", "ok")]
    assert entry["completion_tokens"] > 0


def test_a_stream_kept_alive_with_comments_and_events_without_data_is_whole(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # Before each chunk a comment, and an event (event: ping) whose data: line holds nothing:
    # an event-stream reader dispatches neither. The empty one broke the stream after its
    # first chunk, as a chunk that was not JSON.
    gw_fake.script("good", "ok:blank=1")
    text, models, entry = streamed(gw)
    assert text.startswith("Echo from good: Tell me about failover") and models == {"good"}
    assert entry["status"] == "ok" and outcomes(entry) == [("good", "ok")]
    assert entry["completion_tokens"] > 0  # the usage chunk, after a blank event too


def test_a_cut_stream_raises_in_the_async_client(gw: ThreadServer,
                                                 gw_fake: FakeProviderProcess) -> None:
    gw_fake.script(OTHER, "cut:after=3")

    async def consume() -> list[Any]:
        aclient = async_client(gw)
        received = []
        try:
            stream = await aclient.chat.completions.create(model="other", messages=user(),
                                                           stream=True)
            async for chunk in stream:
                received.append(chunk)
        finally:
            await aclient.close()
        return received

    with pytest.raises(openai.APIError):
        asyncio.run(consume())


def test_a_malformed_chunk_before_any_content_fails_over(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "malformed:after=0", "malformed:after=0")
    text, models, entry = streamed(gw)
    assert models == {"other"} and text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "stream_broken"), ("good", "stream_broken"),
                               ("other", "ok")]
    assert entry["status"] == "ok"


def test_a_malformed_plain_answer_is_retried(gw: ThreadServer,
                                             gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "malformed")
    completion, entry = plain(gw)
    assert completion.model == "good"
    assert outcomes(entry) == [("good", "malformed_response"), ("good", "ok")]


@pytest.mark.parametrize("key", ["usage", "choices"])
def test_a_plain_answer_with_a_key_written_twice_is_malformed_and_retried(
        gw: ThreadServer, gw_fake: FakeProviderProcess, key: str) -> None:
    """An answer whose ``usage`` (or ``choices``) is written twice, a decoy first: it was
    read as the last one, so the gateway accounted one usage while a client keeping the
    first read another. Now it is a malformed answer naming the key, retried as one is; the
    client reads the answer of the retry, whose usage is the one logged."""
    gw_fake.script("good", f"twice:key={key}")
    completion, entry = plain(gw)
    assert completion.model == "good"
    assert "DECOY" not in completion.choices[0].message.content
    assert outcomes(entry) == [("good", "malformed_response"), ("good", "ok")]
    said = entry["attempts"][0]["error"]
    assert f'the key "{key}" is written twice in one object' in said, said
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (
        completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert completion.usage.completion_tokens > 1  # (not the decoy's)


def test_a_chunk_with_a_key_written_twice_before_any_content_fails_over(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """A stream each of whose chunks writes ``choices`` twice is broken at its first chunk
    (it was relayed as the last one), so the request fails over, as for any malformed
    chunk; no decoy reaches the client."""
    gw_fake.script("good", "twice:key=choices", "twice:key=choices")
    text, models, entry = streamed(gw)
    assert models == {"other"} and text.startswith(f"Echo from {OTHER}")
    assert "DECOY" not in text
    assert outcomes(entry) == [("good", "stream_broken"), ("good", "stream_broken"),
                               ("other", "ok")]


def test_answers_with_a_key_written_twice_everywhere_are_an_upstream_error(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """Each try of ``good`` answers with ``usage``, then ``choices``, written twice, and its
    fallback fails too: the client gets the gateway's 502, nothing relayed as an answer, and
    the log names the key of each malformed answer."""
    gw_fake.script("good", "twice", "twice:key=choices")
    gw_fake.script(OTHER, "503", "503")
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(model="good", messages=user())
    assert info.value.status_code == 502
    assert info.value.code == "upstream_failed"
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert entry["status"] == "error" and entry["http_status"] == 502
    said = info.value.message
    assert 'the key "usage" is written twice in one object' in said, said
    assert 'the key "choices" is written twice in one object' in said, said
    assert [a["outcome"] for a in entry["attempts"][:2]] == ["malformed_response"] * 2
    for attempt, key in zip(entry["attempts"], ("usage", "choices"), strict=False):
        assert f'the key "{key}" is written twice in one object' in attempt["error"], attempt


# Refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_escalates_to_a_larger_context_model(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    gw_fake.script("good", "context_length")  # good: 128k; its fallback other: 200k
    if stream:
        _, models, entry = streamed(gw)
        assert models == {"other"}
    else:
        completion, entry = plain(gw)
        assert completion.model == "other"
    assert outcomes(entry) == [("good", "context_length_exceeded"), ("other", "ok")]
    assert entry["attempts"][0]["status"] == 400


def test_context_length_skips_models_that_are_no_larger(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # cheap (16k) → good (128k) → other (200k): good refuses too, then other answers.
    gw_fake.script("cheap", "context_length")
    gw_fake.script("good", "context_length")
    completion, entry = plain(gw, model="cheap")
    assert completion.model == "other"
    assert outcomes(entry) == [("cheap", "context_length_exceeded"),
                               ("good", "context_length_exceeded"), ("other", "ok")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_content_filter_refusal_is_not_escalated(gw: ThreadServer,
                                                   gw_fake: FakeProviderProcess,
                                                   stream: bool) -> None:
    gw_fake.script("good", "content_filter")
    with pytest.raises(openai.BadRequestError) as info:
        client(gw).chat.completions.create(model="good", messages=user(), stream=stream)
    assert info.value.code == "content_filter"
    assert "content" in info.value.message.lower()
    assert upstream_models(gw_fake) == ["good"]
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert entry["status"] == "error" and entry["http_status"] == 400
    assert entry["error_kind"] == "content_filter" and entry["models_tried"] == ["good"]


def test_failover_for_auto_goes_to_the_next_best_model(gw: ThreadServer,
                                                       gw_fake: FakeProviderProcess) -> None:
    messages = user("Explain quantum tunnelling")  # the same text: the same ranking

    def ask() -> tuple[Any, dict[str, Any]]:
        headers = {"x-switchpoint-cost-weight": "0", "x-session-id": uuid.uuid4().hex}
        raw = client(gw).chat.completions.with_raw_response.create(
            model="auto", messages=messages, extra_headers=headers)
        return raw.parse(), log_entry(gw, raw.headers["x-switchpoint-request-id"])

    _, entry = ask()
    first = entry["routed_model"]
    upstream = {"good": "good", "other": OTHER, "cheap": "cheap", "fresh": "fresh"}
    gw_fake.script(upstream[first], "500", "500")
    completion, entry = ask()
    assert entry["routed_model"] == first
    assert entry["models_tried"][0] == first and completion.model != first
    assert entry["escalated"] is True and entry["status"] == "ok"


def test_a_client_that_leaves_mid_stream_is_logged_as_such(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "ok:chunk_delay=0.1")
    with httpx.stream("POST", f"{gw.base}/v1/chat/completions", timeout=10, json={
            "model": "good", "stream": True, "messages": user("a long answer please")}) as r:
        request_id = r.headers["x-switchpoint-request-id"]
        next(r.iter_bytes())  # the first event, then hang up
    entry = log_entry(gw, request_id)
    assert entry["status"] == "client_closed" and entry["model"] == "good"
    assert gw.service.gateway.health.status("good") == "healthy"


@pytest.mark.parametrize("streaming", [False, True])
def test_a_redirect_is_not_an_answer_and_fails_over_naming_it(
        gw: ThreadServer, gw_fake: FakeProviderProcess, streaming: bool) -> None:
    """A 3xx is not followed, and the answer its body holds never reaches the client."""
    gw_fake.script("good", "redirect:location=http%3A//elsewhere.example/v1",
                   "redirect:status=302")
    text, entry = answered(gw, streaming)
    assert "REDIRECTED" not in text and text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "server_error"), ("good", "server_error"),
                               ("other", "ok")]
    first = entry["attempts"][0]
    assert first["status"] == 307
    assert 'redirect to "http://elsewhere.example/v1", which is not followed' in str(first)
    assert "base_url" in str(first)
    assert [r["path"] for r in gw_fake.requests()] == ["/v1/chat/completions",
                                                       "/v1/chat/completions", "/v1/messages"]


@pytest.mark.parametrize(("behaviour", "named"), [
    ("error200", "fake upstream failure"), ("html", "not an event stream (text/html)")])
def test_a_stream_answered_without_events_fails_over_naming_what_came(
        gw: ThreadServer, gw_fake: FakeProviderProcess, behaviour: str, named: str) -> None:
    """A 200 to a stream request holding a JSON error or a web page, not events: the attempt
    names what the upstream said (its key redacted), and another model answers."""
    gw_fake.script("good", behaviour, behaviour)
    text, _, entry = streamed(gw)
    assert text.startswith(f"Echo from {OTHER}")
    assert [model for model, _ in outcomes(entry)] == ["good", "good", "other"]
    first = str(entry["attempts"][0])
    assert named in first
    key = gw_fake.requests()[0]["headers"]["authorization"].removeprefix("Bearer ")
    assert key and key not in first


def test_a_plain_answer_that_is_a_json_error_fails_over_naming_what_the_upstream_said(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """A 200 to a plain request whose JSON is an error: the attempt names what the upstream
    said (its key redacted), as a stream's does, and another model answers. It said only that
    the answer had no choices list, so a quota or a key gone wrong upstream read as a bug."""
    gw_fake.script("good", "error200:code=insufficient_quota", "error200")
    completion, entry = plain(gw)
    assert completion.model == "other"
    assert outcomes(entry) == [("good", "malformed_response"), ("good", "malformed_response"),
                               ("other", "ok")]
    first = entry["attempts"][0]
    assert first["error"].startswith("good: the 200 answer is an error, not a completion: "
                                     "fake upstream failure"), first
    key = gw_fake.requests()[0]["headers"]["authorization"].removeprefix("Bearer ")
    assert key and key not in str(first)
    assert first.get("charged_usd") is None


def test_an_anthropic_models_json_error_in_a_200_is_named_as_what_the_upstream_said(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """A 200 to a plain request whose JSON is the Messages API's error ({"type": "error",
    "error": {...}}): the failure names what the upstream said (its key redacted), as an
    OpenAI model's does; it said only that the answer had no content list."""
    gw_fake.script(OTHER, "error200", "error200")
    with pytest.raises(openai.InternalServerError) as caught:
        plain(gw, "other")
    said = str(caught.value)
    assert ("other: malformed_response (HTTP 200): the 200 answer is an error, not a "
            "completion: fake upstream failure ([REDACTED])") in said, said
    key = gw_fake.requests()[0]["headers"]["x-api-key"]
    assert key and key not in said


@pytest.mark.parametrize(("model", "upstream"), [("good", "good"), ("other", OTHER)])
def test_a_stream_answered_whole_reaches_the_client_as_a_stream_and_is_logged(
        gw: ThreadServer, gw_fake: FakeProviderProcess, model: str, upstream: str) -> None:
    """An upstream that ignores ``stream: true`` and sends one whole JSON answer: the client
    reads it as a stream (its text, a finish reason and, asked for, the usage), the log keeps
    the tokens the answer's usage reports and its price, and says the answer came whole."""
    gw_fake.script(upstream, "whole:prompt=1200,completion=30")
    with client(gw).chat.completions.with_streaming_response.create(
            model=model, messages=user(), stream=True,
            stream_options={"include_usage": True}) as response:
        request_id = response.headers["x-switchpoint-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(f"Echo from {upstream}")
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens) == (1200, 30)
    assert {c.model for c in chunks} == {model}
    entry = log_entry(gw, request_id)
    assert entry["status"] == "ok" and entry["stream"] is True
    assert outcomes(entry) == [(model, "ok")]
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (1200, 30)
    prices = {"good": (10, 30), "other": (8, 24)}[model]
    assert entry["cost_usd"] == pytest.approx((1200 * prices[0] + 30 * prices[1]) / 1e6)
    assert [note for note in entry["reasoning"] if "whole answer" in note] == [
        f"{model} answered the stream request with a whole answer, not an event stream; it "
        "was sent on as a stream and its usage charged."]
    assert [r["body"]["stream"] for r in gw_fake.requests()] == [True]


@pytest.mark.parametrize(("indices", "says"), [
    ("1e30", "choice 0 has the index 1e+30"), ("-1", "choice 0 has the index -1"),
    ("0;0", "two choices have the index 0"), ("1", "choice 0 has the index 1, where the "
                                                   "request asked for 1 answer, numbered 0"),
    ("%220%22", 'choice 0 has the index "0"'), ("true", "choice 0 has the index true"),
])
@pytest.mark.parametrize("kind", ["whole", "ok", "stream"])
def test_an_answer_numbering_its_choices_out_of_the_request_s_n_is_malformed_and_fails_over(
        gw: ThreadServer, gw_fake: FakeProviderProcess, indices: str, says: str,
        kind: str) -> None:
    """A choice's index is a whole number from 0 to n - 1 (n: the request's, 1 by default),
    each once: an upstream's answer that numbers them otherwise (1e30, -1, "0", a repeat) is
    malformed, in a whole answer, a whole answer to a stream request and a stream's chunk
    alike, and fails over as any malformed answer does; the log says why."""
    behaviour = f"{'ok' if kind == 'stream' else kind}:index={indices}"
    gw_fake.script("good", behaviour, behaviour)
    if kind == "ok":
        completion, entry = plain(gw)
        text, models = completion.choices[0].message.content or "", {completion.model}
    else:
        text, models, entry = streamed(gw)
    assert text.startswith(f"Echo from {OTHER}") and models == {"other"}
    kinds = {"whole": "malformed_response", "ok": "malformed_response",
             "stream": "stream_broken"}
    assert outcomes(entry) == [("good", kinds[kind]), ("good", kinds[kind]), ("other", "ok")]
    assert entry["status"] == "ok"
    assert says in str(entry["attempts"][0]), entry["attempts"][0]


@pytest.mark.parametrize("kind", ["whole", "ok", "stream"])
def test_an_answer_holding_no_choice_is_broken_and_fails_over(
        gw: ThreadServer, gw_fake: FakeProviderProcess, kind: str) -> None:
    """An upstream's 200 whose choices list is empty (every chunk's, for a stream, which
    then ends with [DONE]) holds no answer: a plain one reached the client as ``ok`` with no
    choice, a stream as an empty stream logged broken. Each is a broken answer, tried again
    and failed over to the fallback, whose answer the client gets."""
    behaviour = f"{'ok' if kind == 'stream' else kind}:index="
    gw_fake.script("good", behaviour, behaviour)
    if kind == "ok":
        completion, entry = plain(gw)
        text, models = completion.choices[0].message.content or "", {completion.model}
    else:
        text, models, entry = streamed(gw)
    assert text.startswith(f"Echo from {OTHER}") and models == {"other"}
    kinds = {"whole": "malformed_response", "ok": "malformed_response",
             "stream": "stream_broken"}
    assert outcomes(entry) == [("good", kinds[kind]), ("good", kinds[kind]), ("other", "ok")]
    assert entry["status"] == "ok"
    says = ("the stream ended with its end marker before any content" if kind == "stream"
            else "the answer holds no choice")
    assert says in str(entry["attempts"][0]), entry["attempts"][0]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_answer_holding_no_choice_from_every_model_is_the_usual_error(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # (other's upstream, behind the Messages API, is told to fail as well)
    gw_fake.script("good", "ok:index=", "ok:index=")
    gw_fake.script("claude-fake-2", "500", "500")
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).with_options(max_retries=0).chat.completions.create(
            model="good", messages=user(), stream=stream)
    assert info.value.status_code == 502, info.value
    assert "good: " in info.value.message and "x2" in info.value.message, info.value.message


def test_an_answer_of_as_many_choices_as_the_request_asked_for_is_passed_on(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.script("good", "ok:index=0;1", "whole:index=1")
    completion, entry = plain(gw, n=2)
    assert [c.index for c in completion.choices] == [0, 1] and completion.model == "good"
    assert outcomes(entry) == [("good", "ok")]
    with client(gw).chat.completions.with_streaming_response.create(
            model="good", messages=user(), stream=True, n=2) as response:
        chunks = list(response.parse())
    assert [c.choices[0].index for c in chunks if c.choices] == [1]
    assert {c.model for c in chunks} == {"good"}


@pytest.mark.parametrize("misreport", ["completion=-5", "prompt=99999999999", "nousage=1"])
def test_a_stream_answered_whole_with_usage_not_believed_logs_no_tokens(
        gw: ThreadServer, gw_fake: FakeProviderProcess, misreport: str) -> None:
    """The usage of a whole answer to a stream is read as a stream's: counts out of bounds,
    or none, are not believed, and the answer still reaches the client."""
    gw_fake.script("good", f"whole:{misreport}")
    text, models, entry = streamed(gw)
    assert text.startswith("Echo from good") and models == {"good"}
    assert entry["status"] == "ok" and outcomes(entry) == [("good", "ok")]
    assert entry["prompt_tokens"] is None and entry["cost_usd"] is None
    assert [note for note in entry["reasoning"] if "whole answer" in note] == [
        "good answered the stream request with a whole answer, not an event stream; it was "
        "sent on as a stream and reported no usage to believe, so it is charged as a stream "
        "that reports none is."]


@pytest.mark.parametrize("kind", ["application/json", "application/json%3B charset=utf-8"])
def test_an_event_stream_labelled_as_json_is_read_as_a_stream(
        gw: ThreadServer, gw_fake: FakeProviderProcess, kind: str) -> None:
    """An upstream that labels its event stream ``application/json`` is streamed as before
    (it was read as one whole answer, refused as none, and failed over)."""
    gw_fake.script("good", f"ok:type={kind}")
    text, models, entry = streamed(gw)
    assert text.startswith("Echo from good") and models == {"good"}
    assert entry["status"] == "ok" and outcomes(entry) == [("good", "ok")]
    assert entry["prompt_tokens"] is not None and entry["cost_usd"] is not None
    assert not [note for note in entry["reasoning"] if "whole answer" in note]


_INFLATED: list[bytes] = []


class _Inflated:
    """Stands in for the decoder httpx uses when brotli is installed: notes every use."""

    def decode(self, data: bytes) -> bytes:
        _INFLATED.append(data)
        return data

    def flush(self) -> bytes:
        return b""


@pytest.mark.parametrize("brotli", [False, True], ids=["without-brotli", "with-brotli"])
@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip"])
@pytest.mark.parametrize("streaming", [False, True])
def test_an_answer_in_a_coding_not_asked_for_fails_over_undecoded(
        gw: ThreadServer, gw_fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch,
        brotli: bool, coding: str, streaming: bool) -> None:
    """The gateway asks upstreams for gzip or no coding, the codings it inflates a bounded
    read at a time. An answer in another coding (or in gzip twice over) is a failure naming
    the coding, and another model answers: it is never decoded, whether or not a decoder for
    it happens to be installed beside httpx. The model is not asked again: it would answer
    in the same coding."""
    _INFLATED.clear()
    if brotli:
        from httpx import _decoders
        monkeypatch.setitem(_decoders.SUPPORTED_DECODERS, "br", _Inflated)
        monkeypatch.setitem(_decoders.SUPPORTED_DECODERS, "zstd", _Inflated)
    spec = "encoded:coding=" + coding.replace(",", "%2C")
    gw_fake.script("good", spec, spec)
    text, entry = answered(gw, streaming)
    assert "ENCODED" not in text and text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "malformed_response"), ("other", "ok")]
    assert f'Content-Encoding "{coding}"' in str(entry["attempts"][0])
    assert _INFLATED == []
    assert {r["headers"].get("accept-encoding") for r in gw_fake.requests()} == {
        "gzip, identity"}


@pytest.mark.parametrize("streaming", [False, True])
def test_an_answer_whose_head_is_too_large_fails_over_named_so(
        gw: ThreadServer, gw_fake: FakeProviderProcess, streaming: bool) -> None:
    """An upstream whose answer's head (status line and headers) is over the gateway's
    bound answered: its try is ``response_too_large`` saying so, not a connection lost, and
    another model answers. The model is not asked again: it would answer so again."""
    gw_fake.script("good", "bighead", "bighead")
    text, entry = answered(gw, streaming)
    assert text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry) == [("good", "response_too_large"), ("other", "ok")]
    said = str(entry["attempts"][0])
    assert "head (status line and headers) over the limit of 65536 bytes" in said, said
    assert "connection was lost" not in said
    assert upstream_models(gw_fake).count("good") == 1


@pytest.mark.parametrize("streaming", [False, True])
def test_a_whole_answer_inflating_past_the_plain_answer_bound_fails_over_unread(
        patient_gw: ThreadServer, gw_fake: FakeProviderProcess, streaming: bool) -> None:
    """A whole (not streamed) answer's JSON is read at once, holding the gateway's event loop
    and every other request: 5 MiB of empty objects, sent gzip-compressed as some 10 KB, is
    refused as it is inflated past ``gateway.max_plain_answer_bytes`` (4 MiB), before its JSON
    is read, and another model answers (at 32 MiB such an answer held /health for seconds).
    (On the patient gateway: inflating 5 MiB, the loop handed back every 5 ms, outlasts the
    test world's 0.5 s read timeout on a loaded host.)"""
    gw_fake.script("good", "dense:mb=5", "dense:mb=5")
    text, entry = answered(patient_gw, streaming)
    assert text.startswith(f"Echo from {OTHER}")
    assert outcomes(entry)[-1] == ("other", "ok")
    assert {outcome for model, outcome in outcomes(entry) if model == "good"} == {
        "response_too_large"}
    said = str(entry["attempts"][0])
    assert "over the limit of 4194304 bytes (gateway.max_plain_answer_bytes)" in said, said


# The longest /health may wait while a dense answer is read. Read on the event loop, a plain
# one held it 0.6 to 1.4 s on a loaded two-core host (load average 5 to 8), a stream's line
# 0.15 to 0.6 s (tests/unit/test_upstream_limits.py tells where each is read, whatever the
# load); read off it, /health waits 0.06 to 0.15 s there.
HEALTH_WHILE_DENSE_S = 0.3


def worst_health_while(gw: ThreadServer, call: Callable[[], object]) -> tuple[float, int]:
    """``call()`` made while another thread asks ``gw``'s /health every 10 ms: the longest
    one of those took (seconds), and how many were asked."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=gw.base, timeout=30) as health:
            health.get("/health")  # (its connection open before the call)
            while not done.is_set():
                started = time.perf_counter()
                assert health.get("/health").status_code == 200
                latencies.append(time.perf_counter() - started)
                done.wait(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        until(lambda: len(latencies) >= 3, "/health has answered")
        call()
    finally:
        done.set()
        poller.join()
    return max(latencies), len(latencies)


@pytest.fixture(scope="module")
def patient_gw(gw_fake: FakeProviderProcess,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    """A gateway like ``gw`` whose read timeouts are 8 s: the fake takes a while to make a dense
    answer, and the first-token timeout counts the reading of the first content's event."""
    patient = GATEWAY.replace(": 0.5\n", ": 8\n")
    assert patient.count(": 8\n") == 2, patient
    with gateway_server(gw_fake, tmp_path_factory.mktemp("patient"), patient) as server:
        yield server


@pytest.mark.parametrize("streaming", [False, True])
def test_a_dense_answer_is_read_while_the_service_answers_others(
        patient_gw: ThreadServer, gw_fake: FakeProviderProcess, streaming: bool) -> None:
    """An answer as large as the gateway takes of the densest JSON (empty objects): a plain
    one of 3.9 MiB, under ``gateway.max_plain_answer_bytes``, or a stream whose content event
    is a line of 0.95 MiB, under ``gateway.max_sse_line_bytes``. Its JSON is read on a worker
    thread: /health, asked every 10 ms meanwhile, keeps answering, where it waited as long as
    the reading held the event loop (up to a second and more on a loaded host). (The answer
    is read as bytes: the client parsing it would hold this process, the server's too.)"""
    gw_fake.script("good", "dense:line=1,mb=0.95" if streaming else "dense:mb=3.9")
    answers: list[httpx.Response] = []

    def ask() -> None:
        answers.append(httpx.post(f"{patient_gw.base}/v1/chat/completions", timeout=30, json={
            "model": "good", "messages": user(), "stream": streaming}))

    worst, polls = worst_health_while(patient_gw, ask)
    [answer] = answers
    assert answer.status_code == 200 and b'"DENSE"' in answer.content[:2000], answer.content[:300]
    entry = log_entry(patient_gw, answer.headers["x-switchpoint-request-id"])
    assert outcomes(entry) == [("good", "ok")], entry
    assert worst < HEALTH_WHILE_DENSE_S, f"/health took {worst:.3f} s ({polls} asked)"


@pytest.mark.parametrize("streaming", [False, True])
def test_a_dense_answer_is_written_to_the_client_off_the_event_loop(
        patient_gw: ThreadServer, gw_fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch,
        streaming: bool) -> None:
    """The dense answer of 3.9 MiB (or a stream's dense chunk of 0.95 MiB) is written as the
    bytes the client is sent on a worker thread, a piece at a time, as it was read, where it
    was written on the event loop in one go, every other request waiting (some 50 ms for the
    plain one); a short answer's (or chunk's) on the loop, at once. The client reads the same
    bytes either way: the JSON as written in one go, its Content-Length."""
    made: list[tuple[int, str]] = []  # (a piece's length, the thread that wrote it)
    if streaming:
        json_of = streaming_module.chunk_json

        def chunk_json(value: Any) -> bytes:
            made.append((len(data := json_of(value)), threading.current_thread().name))
            return data

        monkeypatch.setattr(streaming_module, "chunk_json", chunk_json)
    else:
        render = JSONResponse.render

        def json_render(self: JSONResponse, content: Any) -> bytes:
            made.append((len(data := render(self, content)), threading.current_thread().name))
            return data

        monkeypatch.setattr(JSONResponse, "render", json_render)
    gw_fake.script("good", "dense:line=1,mb=0.95" if streaming else "dense:mb=3.9")
    dense = httpx.post(f"{patient_gw.base}/v1/chat/completions", timeout=30, json={
        "model": "good", "messages": user(), "stream": streaming})
    assert dense.status_code == 200 and b'"DENSE"' in dense.content[:2000], dense.content[:300]
    if not streaming:
        assert dense.content == json.dumps(dense.json(), ensure_ascii=False,
                                           separators=(",", ":")).encode()
        assert dense.headers["content-length"] == str(len(dense.content))
    on_workers = sum(size for size, thread in made if thread.startswith("switchpoint-json"))
    on_loop = [size for size, thread in made if not thread.startswith("switchpoint-json")]
    assert on_workers > 900_000 and max(on_loop, default=0) < OFF_LOOP_BYTES, made[:20]
    made.clear()
    short = httpx.post(f"{patient_gw.base}/v1/chat/completions", timeout=30, json={
        "model": "good", "messages": user(), "stream": streaming})
    assert short.status_code == 200 and b"Echo" in short.content, short.content[:300]
    assert made and not any(t.startswith("switchpoint-json") for _, t in made), made


@pytest.mark.parametrize("streaming", [False, True])
def test_bytes_past_an_answers_content_length_reach_no_later_request(
        gw: ThreadServer, gw_fake: FakeProviderProcess, streaming: bool) -> None:
    """An upstream sends more than its Content-Length said: the answer ends where the length
    says, and what followed (here a whole second answer) is not read as the answer to the next
    request on that connection, which may be another client's: it goes out on a fresh one."""
    gw_fake.script("fresh", "overrun")
    if streaming:
        text, _, entry = streamed(gw, "fresh")
    else:
        completion, entry = plain(gw, "fresh")
        text = completion.choices[0].message.content or ""
    assert text == "OVERRUN" and outcomes(entry) == [("fresh", "ok")]
    completion, entry = plain(gw, "fresh")
    assert (completion.choices[0].message.content or "").startswith("Echo from fresh")
    assert outcomes(entry) == [("fresh", "ok")]
    assert len(gw_fake.requests()) == 2


@pytest.mark.parametrize("retry_after", [
    "retry_after=1000000000", "retry_after_ms=1e300",
    "retry_after=Fri%2C 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_of_years_is_taken_as_max_cooldown(
        gw: ThreadServer, gw_fake: FakeProviderProcess, retry_after: str) -> None:
    """An upstream's Retry-After of 31 years (in seconds, milliseconds or a date) keeps its
    model out for max_cooldown_s at most, the longest the operator lets a failure keep a model
    out, and the client hears that wait: one such answer kept the model out for a day, for
    every caller, until a reset or a restart."""
    most = gw.service.gateway.health.config.max_cooldown_s
    assert most < 86_400
    gw_fake.script("fresh", f"429:{retry_after}")
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="fresh", messages=user())
    assert info.value.response.headers["retry-after"] == f"{most:.0f}"
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert outcomes(entry) == [("fresh", "rate_limited")]
    assert entry["attempts"][0]["retry_after_s"] == most  # as taken
    wait = gw.service.gateway.health.wait_s("fresh")
    assert wait is not None and most - 60 < wait <= most
    # Inside that rest the model is not called: a 429 as the request that met the upstream's
    # was (not a 503, an outage to a client's code and an operator's alerts), carrying what
    # is left of it.
    with pytest.raises(openai.RateLimitError) as again:
        client(gw).chat.completions.create(model="fresh", messages=user())
    assert again.value.status_code == 429 and again.value.code == "rate_limited"
    assert most - 60 < int(again.value.response.headers["retry-after"]) <= most
    assert "resting after its upstream's rate limit" in again.value.message
    assert len(gw_fake.requests()) == 1


def test_a_429_counts_the_rest_its_own_429s_opened(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    """A model whose 429s name no wait opens its circuit after enough of them: the 429 that
    opened it tells its client to wait out the cooldown, not a second after which the retry
    met a refusal naming that cooldown."""
    health = gw.service.gateway.health
    gw_fake.default("fresh", "429")  # (every call, none naming a wait)
    heard: list[int] = []
    while health.state("fresh") == "closed":
        assert len(heard) < health.config.failure_threshold, "the circuit never opened"
        with pytest.raises(openai.RateLimitError) as info:
            client(gw).chat.completions.create(model="fresh", messages=user())
        heard.append(int(info.value.response.headers["retry-after"]))
    cooldown = health.config.cooldown_s
    assert cooldown > 2 and heard[:-1] == [1] * (len(heard) - 1)
    assert cooldown / 2 < heard[-1] <= cooldown
    entry = log_entry(gw, info.value.response.headers["x-switchpoint-request-id"])
    assert {outcome for _, outcome in outcomes(entry)} == {"rate_limited"}
    assert all("retry_after_s" not in a for a in entry["attempts"])  # (no upstream named one)
    called = len(gw_fake.requests())
    # The retry within that wait is not called: its 429 names no longer a wait (what is left).
    with pytest.raises(openai.RateLimitError) as again:
        client(gw).chat.completions.create(model="fresh", messages=user())
    assert again.value.status_code == 429 and again.value.code == "rate_limited"
    assert 1 <= int(again.value.response.headers["retry-after"]) <= heard[-1]
    entry = log_entry(gw, again.value.response.headers["x-switchpoint-request-id"])
    assert (entry["http_status"], entry["error_kind"]) == (429, "rate_limited")
    assert len(gw_fake.requests()) == called


def _answered(gw: ThreadServer, stream: bool, **kw: Any) -> tuple[str, str, dict[str, Any]]:
    """A request read to its end: (the model that answered, its x-switchpoint-reasoning
    header, its request log entry)."""
    raw = client(gw).chat.completions.with_raw_response.create(stream=stream, **kw)
    parsed = raw.parse()
    model = ({c.model for c in parsed} if stream else {parsed.model}).pop()  # type: ignore
    reasoning = raw.headers.get("x-switchpoint-reasoning", "")
    return model, reasoning, log_entry(gw, raw.headers["x-switchpoint-request-id"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_reasoning_header_says_why_a_named_model_fell_back(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # Only the log's attempts said why: the header was sent only when a session pin broke.
    gw_fake.script("good", "500", "500")
    model, reasoning, entry = _answered(gw, stream, model="good", messages=user())
    assert model == "other" and outcomes(entry)[-1] == ("other", "ok")
    assert ("the named model good did not answer (server_error (HTTP 500): upstream error "
            "(500): fake 500 x2); its fallback other answered") in reasoning, reasoning
    assert reasoning in " ".join(entry["reasoning"])
    # (/openapi.json says what the header holds)
    document = httpx.get(f"{gw.base}/openapi.json", timeout=15).json()
    described = document["paths"]["/v1/chat/completions"]["post"]["description"]
    assert "x-switchpoint-reasoning (why this model" in described
    assert "how its tries ended before the request fell back" in described
    # The named model answering: nothing to say.
    model, reasoning, _ = _answered(gw, stream, model="good", messages=user())
    assert model == "good" and "named model" not in reasoning


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_reasoning_header_says_what_a_named_model_skipped_lacks(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}]
    model, reasoning, entry = _answered(gw, stream, model="cheap", messages=messages)
    assert model == "good" and "cheap" in entry["excluded"]
    assert ('the named model cheap cannot serve this request (the request has images and the '
            'model does not list "vision"); its fallback good answered') in reasoning, reasoning


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_reasoning_header_says_why_autos_first_candidate_did_not_answer(
        gw: ThreadServer, gw_fake: FakeProviderProcess, stream: bool) -> None:
    # (each request a session of its own: the same text is routed alike, and pins nothing)
    messages = user("Explain how a hash map works.")
    pool: dict[str, Any] = {"extra_body": {"models": ["good", "other"]}}
    first, reasoning, _ = _answered(gw, stream, model="auto", messages=messages,
                                    extra_headers={"x-session-id": uuid.uuid4().hex}, **pool)
    assert "first of the routed candidates" not in reasoning
    gw_fake.script("good" if first == "good" else OTHER, "500", "500")
    model, reasoning, entry = _answered(gw, stream, model="auto", messages=messages,
                                        extra_headers={"x-session-id": uuid.uuid4().hex}, **pool)
    assert model != first and entry["routed_model"] == first
    assert (f"{first}, first of the routed candidates, did not answer (server_error (HTTP "
            f"500)") in reasoning, reasoning
    assert reasoning.endswith(f"; {model} answered"), reasoning


def test_the_reasoning_header_says_what_the_upstream_said_redacted(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # good's upstream refuses the key, quoting it: the header names the refusal, not the key.
    gw_fake.script("good", "echo_auth")
    model, reasoning, entry = _answered(gw, False, model="good", messages=user())
    assert model == "other", entry["attempts"]
    assert "the named model good did not answer (auth_error (HTTP 401)" in reasoning, reasoning
    assert "sk-good-test" not in reasoning and "sk-good-test" not in str(entry["reasoning"])


def test_the_reasoning_header_carries_an_upstream_error_holding_control_characters(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # The upstream's words reach the header now: a control character (which no header value
    # may hold) is a space, and the answer goes out as the fallback gave it.
    gw_fake.script("good", "500:message=bad%01thing%7Fhere%00", "500:message=bad%01thing")
    model, reasoning, entry = _answered(gw, False, model="good", messages=user())
    assert model == "other", entry["attempts"]
    assert "bad thing here" in reasoning, reasoning
    assert all(32 <= ord(c) < 127 for c in reasoning), repr(reasoning)
