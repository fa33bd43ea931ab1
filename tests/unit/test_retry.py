"""call_with_failover's decisions with in-process scripted providers (no network, no sleeping):
backoff, Retry-After, escalation, stopping, circuit breakers, commit-before-first-byte."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from switchpoint.catalog import Catalog, ModelCard
from switchpoint.errors import (
    DEFAULT_RETRY_AFTER_S,
    BadRequest,
    ContentFiltered,
    ContextLengthExceeded,
    FailoverError,
    FirstTokenTimeout,
    ProviderError,
    RateLimited,
    ReadTimeout,
    ServerError,
    StreamBroken,
)
from switchpoint.gateway.failover import RetryPolicy, call_with_failover, fallback_chain
from switchpoint.gateway.health import BreakerState, HealthConfig, HealthTracker
from switchpoint.gateway.providers import ProviderResponse, Timeouts

pytestmark = pytest.mark.anyio


Step = ProviderError | str  # an error to raise, or "ok", or "break-after-first"


def chunk(model: str, content: str | None = None, finish: str | None = None,
          usage: bool = False) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    c: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        c["choices"] = []
        c["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return c


class Scripted:
    """A provider whose every call takes the next step of its model's script."""

    def __init__(self, scripts: dict[str, list[Step]]) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.calls: list[str] = []
        self.closed = 0

    def _next(self, card: ModelCard) -> Step:
        self.calls.append(card.name)
        script = self.scripts.get(card.name) or ["ok"]
        return script.pop(0) if len(script) > 1 else script[0]

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        step = self._next(card)
        if isinstance(step, ProviderError):
            raise step
        return ProviderResponse(
            body={"model": f"upstream-{card.name}", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
            model=card.name)

    async def stream(self, request: Mapping[str, Any], card: ModelCard,
                     timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        step = self._next(card)
        try:
            yield chunk("up", "")  # role-only opening chunk: not content
            if isinstance(step, ProviderError):
                raise step
            yield chunk("up", "Hel")
            if step == "break-after-first":
                raise StreamBroken("cut", model=card.name)
            if step == "bug-after-first":
                raise KeyError("choices")  # not the upstream's doing: our own failure
            yield chunk("up", "lo")
            yield chunk("up", None, "stop")
            yield chunk("up", usage=True)
        finally:
            self.closed += 1


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


CARDS = [ModelCard("a"), ModelCard("b"), ModelCard("c")]
REQ = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


async def run(provider: Scripted, *, stream: bool = False, cards: list[ModelCard] = CARDS,
              **kw: Any) -> Any:
    sleeps = kw.pop("sleeps", Sleeps())
    # stream is a plain bool here, which neither overload takes; run returns Any either way
    return await call_with_failover(  # type: ignore[call-overload]
        {**REQ, **kw.pop("req", {})}, cards, lambda _: provider,
        stream=stream, sleep=sleeps, rng=random.Random(7), **kw)


async def test_success_first_try_reports_the_catalog_model() -> None:
    p = Scripted({})
    result = await run(p)
    assert result.model == "a" and result.body["model"] == "a"
    assert result.upstream_model == "upstream-a"
    assert [a.outcome for a in result.attempts] == ["ok"]
    assert result.usage.prompt_tokens == 3


async def test_retry_then_success_on_the_same_model_with_jittered_backoff() -> None:
    p = Scripted({"a": [ServerError("500"), ServerError("500"), "ok"]})
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts_per_model=3, backoff_base_s=0.5, backoff_cap_s=0.8)
    result = await run(p, policy=policy, sleeps=sleeps)
    assert result.model == "a" and p.calls == ["a", "a", "a"]
    assert len(sleeps.calls) == 2
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 0.8  # min(cap, base·2ⁿ)
    assert [a.outcome for a in result.attempts] == ["server_error", "server_error", "ok"]
    assert result.attempts[2].waited_s == sleeps.calls[1]


async def test_retry_after_is_honoured_exactly() -> None:
    p = Scripted({"a": [RateLimited("429", retry_after=1.5), "ok"]})
    sleeps = Sleeps()
    result = await run(p, sleeps=sleeps)
    assert sleeps.calls == [1.5] and result.model == "a"


async def test_long_retry_after_escalates_instead_of_waiting() -> None:
    p = Scripted({"a": [RateLimited("429", retry_after=60)]})
    sleeps = Sleeps()
    health = HealthTracker()
    result = await run(p, sleeps=sleeps, health=health,
                       policy=RetryPolicy(max_retry_after_s=10))
    assert sleeps.calls == [] and result.model == "b" and p.calls == ["a", "b"]
    assert not health.allow("a")  # kept out for the Retry-After


async def test_escalates_after_retries_are_spent() -> None:
    p = Scripted({"a": [ServerError("500")], "b": [ReadTimeout("slow")]})
    result = await run(p)
    assert result.model == "c"
    assert p.calls == ["a", "a", "b", "b", "c"]
    assert result.models_tried == ["a", "b", "c"]


async def test_context_length_escalates_without_retrying() -> None:
    p = Scripted({"a": [ContextLengthExceeded("too long", status=400)]})
    result = await run(p)
    assert p.calls == ["a", "b"] and result.model == "b"


@pytest.mark.parametrize("error", [
    ContentFiltered("filtered", status=400, body={"error": {"message": "filtered by policy",
                                                            "type": "invalid_request_error",
                                                            "code": "content_filter"}}),
    BadRequest("bad", status=422, body={"error": {"message": "bad temperature"}}),
])
async def test_request_errors_stop_at_once_with_the_upstream_answer(error: ProviderError) -> None:
    p = Scripted({"a": [error]})
    with pytest.raises(FailoverError) as info:
        await run(p)
    assert p.calls == ["a"]
    assert info.value.status == error.status
    body = info.value.to_openai_error()["error"]
    assert body["message"] == error.body["error"]["message"]  # type: ignore[index]


async def test_all_rate_limited_is_a_429_with_retry_after() -> None:
    p = Scripted({n: [RateLimited("429", retry_after=30)] for n in "abc"})
    with pytest.raises(FailoverError) as info:
        await run(p)
    assert info.value.status == 429 and info.value.retry_after == 30
    assert info.value.models_tried == ["a", "b", "c"]


async def test_all_rate_limited_without_retry_after_still_names_a_wait() -> None:
    # No upstream said how long, and no model rests: the client is told a second.
    p = Scripted({n: [RateLimited("429")] for n in "abc"})
    with pytest.raises(FailoverError) as info:
        await run(p)
    assert info.value.status == 429 and info.value.retry_after == DEFAULT_RETRY_AFTER_S == 1.0


async def test_all_rate_limited_names_the_shortest_wait_any_model_asked_for() -> None:
    # The last model said nothing; another asked for 20 s, another 45 s (over max_retry_after_s,
    # so neither is waited out): the earliest a model may be asked again is 20 s away.
    p = Scripted({"a": [RateLimited("429", retry_after=45)],
                  "b": [RateLimited("429", retry_after=20)], "c": [RateLimited("429")]})
    with pytest.raises(FailoverError) as info:
        await run(p, policy=RetryPolicy(max_retry_after_s=10))
    assert info.value.status == 429 and info.value.retry_after == 20


async def test_a_429_beside_a_resting_model_names_what_is_left_of_its_rest() -> None:
    now = [1000.0]
    health = HealthTracker(clock=lambda: now[0])
    health.record_failure("b", "rate_limited", retry_after_s=90)
    now[0] += 30  # b rests 60 s more
    p = Scripted({"a": [RateLimited("429")], "c": [RateLimited("429")]})
    with pytest.raises(FailoverError) as info:
        await run(p, health=health)
    assert [(a.model, a.outcome) for a in info.value.attempts if a.attempt <= 1] == [
        ("a", "rate_limited"), ("b", "circuit_open"), ("c", "rate_limited")]
    assert info.value.status == 429 and info.value.retry_after == 60


async def test_a_429_names_the_rest_its_own_429s_opened() -> None:
    # No upstream named a wait, but a's 429s opened its circuit and b's (each its second in a
    # row) did too: neither may be asked again before its cooldown ends, so neither in 1 s.
    now = [1000.0]
    health = HealthTracker(HealthConfig(failure_threshold=2, cooldown_s=40),
                           clock=lambda: now[0])
    p = Scripted({"a": [RateLimited("429")], "b": [RateLimited("429")]})
    with pytest.raises(FailoverError) as info:
        await run(p, cards=CARDS[:2], health=health)
    assert [(a.model, a.outcome) for a in info.value.attempts] == [
        ("a", "rate_limited"), ("a", "rate_limited"), ("b", "rate_limited"),
        ("b", "rate_limited")]
    assert all(a.retry_after_s is None for a in info.value.attempts)  # (no try named one)
    assert health.state("a") is health.state("b") is BreakerState.OPEN
    assert info.value.status == 429 and info.value.retry_after == 40
    # The next request passes both over, and its 429 (both rest after their upstreams' rate
    # limits, as the first was told) names the same wait.
    with pytest.raises(FailoverError) as again:
        await run(p, cards=CARDS[:2], health=health)
    assert again.value.status == 429 and again.value.retry_after == 40
    assert again.value.code == "rate_limited"


async def test_a_429_names_the_shortest_of_each_models_longest_wait() -> None:
    # a asked for 3 s twice (waited out once) and its two 429s opened its circuit for 40 s;
    # b asked for 25 s (not waited out) and rests that long: b may be asked again first.
    now = [1000.0]
    health = HealthTracker(HealthConfig(failure_threshold=2, cooldown_s=40),
                           clock=lambda: now[0])
    p = Scripted({"a": [RateLimited("429", retry_after=3)],
                  "b": [RateLimited("429", retry_after=25)]})
    with pytest.raises(FailoverError) as info:
        await run(p, cards=CARDS[:2], health=health, policy=RetryPolicy(max_retry_after_s=10))
    assert [(a.model, a.retry_after_s) for a in info.value.attempts] == [
        ("a", 3), ("a", 3), ("b", 25)]  # (as each upstream asked)
    assert health.state("a") is BreakerState.OPEN and health.state("b") is BreakerState.CLOSED
    assert info.value.status == 429 and info.value.retry_after == 25


async def test_all_timing_out_is_a_504_and_mixed_failures_a_502() -> None:
    p = Scripted({n: [ReadTimeout("slow")] for n in "abc"})
    with pytest.raises(FailoverError) as info:
        await run(p)
    assert info.value.status == 504
    p = Scripted({"a": [ReadTimeout("slow")], "b": [ServerError("x")], "c": [ServerError("x")]})
    with pytest.raises(FailoverError) as info:
        await run(p)
    assert info.value.status == 502
    assert info.value.to_openai_error()["error"]["code"] == "upstream_failed"
    assert len(info.value.attempts) == 6


async def test_open_circuits_are_skipped_and_all_open_is_503() -> None:
    health = HealthTracker(HealthConfig(failure_threshold=1))
    health.record_failure("a", "server_error")
    p = Scripted({})
    result = await run(p, health=health)
    assert result.model == "b" and p.calls == ["b"]
    assert result.attempts[0].outcome == "circuit_open"
    for name in "bc":
        health.record_failure(name, "server_error")
    with pytest.raises(FailoverError) as info:
        await run(Scripted({}), health=health)
    assert info.value.status == 503 and info.value.last_error is None


async def test_a_failure_that_opens_the_circuit_stops_retrying_that_model() -> None:
    health = HealthTracker(HealthConfig(failure_threshold=1))
    p = Scripted({"a": [ServerError("x")]})
    result = await run(p, health=health, policy=RetryPolicy(max_attempts_per_model=3))
    assert p.calls == ["a", "b"] and result.model == "b"
    assert health.snapshot()["models"]["b"]["successes"] == 1


async def test_total_deadline_stops_retries() -> None:
    p = Scripted({"a": [ServerError("x")], "b": [ServerError("x")]})
    t = [0.0]

    def clock() -> float:
        t[0] += 1.0
        return t[0]

    with pytest.raises(FailoverError):
        await run(p, clock=clock, policy=RetryPolicy(max_total_s=2.5, backoff_cap_s=0.1))
    assert len(p.calls) < 5


async def test_no_candidates() -> None:
    with pytest.raises(FailoverError) as info:
        await run(Scripted({}), cards=[])
    assert info.value.status == 503


def test_fallback_chain_is_depth_first_without_repeats() -> None:
    catalog = Catalog([ModelCard("a", fallbacks=("b", "c")), ModelCard("b", fallbacks=("d", "a")),
                       ModelCard("c", fallbacks=("d",)), ModelCard("d")])
    assert [c.name for c in fallback_chain(catalog, "a")] == ["a", "b", "d", "c"]
    assert fallback_chain(catalog, "ghost") == []


# ---- streams -------------------------------------------------------------------------------

async def test_stream_commits_after_the_first_content_chunk() -> None:
    p = Scripted({"a": [FirstTokenTimeout("slow")], "b": ["ok"]})
    stream = await run(p, stream=True, policy=RetryPolicy(max_attempts_per_model=1))
    assert stream.model == "b" and p.calls == ["a", "b"]
    chunks = [c async for c in stream]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello"
    assert all(c["model"] == "b" for c in chunks)
    assert stream.completed and stream.finish_reason == "stop"
    assert stream.usage is not None and stream.usage.total_tokens == 5
    assert all(c["choices"] for c in chunks)  # the usage chunk was not asked for
    assert p.closed == 2


async def test_stream_usage_chunk_reaches_a_client_that_asked() -> None:
    p = Scripted({})
    stream = await run(p, stream=True, req={"stream_options": {"include_usage": True}})
    chunks = [c async for c in stream]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


async def test_stream_failure_after_the_first_byte_is_not_escalated() -> None:
    health = HealthTracker()
    p = Scripted({"a": ["break-after-first"]})
    stream = await run(p, stream=True, health=health)
    got = []
    with pytest.raises(StreamBroken) as info:
        async for c in stream:
            got.append(c)
    assert info.value.after_first_byte and not info.value.escalate
    assert p.calls == ["a"]
    assert len(got) == 2  # the opening chunk and "Hel"
    assert stream.error is info.value and not stream.completed
    assert [a.outcome for a in stream.attempts] == ["ok", "stream_broken"]
    assert health.snapshot()["models"]["a"]["failures"] == 1


async def test_an_unexpected_error_mid_stream_is_a_broken_stream_not_a_clean_end() -> None:
    """Anything but a ProviderError after the first byte (a bug, a chunk we cannot handle)
    still reaches the client as a failure and the log as one; the model is not charged."""
    health = HealthTracker()
    p = Scripted({"a": ["bug-after-first"]})
    stream = await run(p, stream=True, health=health)
    got = []
    with pytest.raises(StreamBroken) as info:
        async for c in stream:
            got.append(c)
    assert info.value.after_first_byte
    assert "failed inside the gateway" in str(info.value) and "KeyError" in str(info.value)
    assert len(got) == 2 and not stream.completed and stream.error is info.value
    assert [a.outcome for a in stream.attempts] == ["ok", "stream_broken"]
    model = health.snapshot()["models"]["a"]
    assert model["failures"] == 0 and model["successes"] == 0
    assert p.closed == 1


async def test_stream_closed_early_releases_the_upstream() -> None:
    p = Scripted({})
    stream = await run(p, stream=True)
    async for _ in stream:
        break
    await stream.aclose()
    assert p.closed == 1


async def test_cost_comes_from_catalog_prices_and_upstream_usage() -> None:
    priced = [ModelCard("a", input_per_mtok=1.0, output_per_mtok=2.0)]
    result = await run(Scripted({}), cards=priced)
    assert result.cost_usd == pytest.approx((3 * 1.0 + 1 * 2.0) / 1e6)
    stream = await run(Scripted({}), cards=priced, stream=True)
    assert stream.cost_usd is None  # the usage chunk has not arrived yet
    [c async for c in stream]
    assert stream.cost_usd == pytest.approx((3 * 1.0 + 2 * 2.0) / 1e6)


async def test_a_cancelled_call_frees_the_half_open_probe() -> None:
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown_s=0.01))
    health.record_failure("a", "server_error")
    await asyncio.sleep(0.02)  # the circuit is half-open now

    class Hanging(Scripted):
        async def complete(self, request: Mapping[str, Any], card: ModelCard,
                           timeouts: Timeouts) -> ProviderResponse:
            await asyncio.sleep(10)
            raise AssertionError("unreachable")

    task = asyncio.ensure_future(run(Hanging({}), health=health))
    await asyncio.sleep(0.01)
    assert not health.allow("a")  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.allow("a")  # released


async def test_context_too_long_for_every_candidate_is_the_upstream_400() -> None:
    body = {"error": {"message": "maximum context length is 8192", "type": "invalid_request_error",
                      "code": "context_length_exceeded", "param": "messages"}}
    p = Scripted({n: [ContextLengthExceeded("too long", status=400, body=body)] for n in "abc"})
    with pytest.raises(FailoverError) as info:
        await run(p)
    assert p.calls == ["a", "b", "c"]
    assert info.value.status == 400
    assert info.value.to_openai_error() == body


async def test_context_length_skips_candidates_no_larger_than_the_refusing_model() -> None:
    cards = [ModelCard("a", context_window=8_000), ModelCard("b", context_window=8_000),
             ModelCard("c", context_window=4_000), ModelCard("d"),
             ModelCard("e", context_window=32_000)]
    p = Scripted({"a": [ContextLengthExceeded("too long", status=400)],
                  "d": [ContextLengthExceeded("too long", status=400)]})
    result = await run(p, cards=cards)
    assert p.calls == ["a", "d", "e"] and result.model == "e"
    assert [x.outcome for x in result.attempts] == [
        "context_length_exceeded", "context_too_small", "context_too_small",
        "context_length_exceeded", "ok"]
    assert result.models_tried == ["a", "d", "e"]


async def test_a_stream_closed_before_reading_releases_upstream_and_probe() -> None:
    p = Scripted({})
    stream = await run(p, stream=True)
    aiter(stream)  # an iterator that never started
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert p.closed == 1


class Buggy(Scripted):
    """A provider adapter with a bug: a plain call, or the opening of a stream, raises an
    error that is not the upstream's."""

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        self.calls.append(card.name)
        raise RuntimeError("a bug in the adapter")

    async def stream(self, request: Mapping[str, Any], card: ModelCard,
                     timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(card.name)
        raise RuntimeError("a bug in the adapter")
        yield {}  # (an async generator)


def half_open(*models: str) -> HealthTracker:
    """A tracker whose ``models`` have their circuits half-open: the next call is the probe."""
    clock = [0.0]
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown_s=10.0),
                           clock=lambda: clock[0])
    for model in models:
        health.record_failure(model, "server_error")
    clock[0] += 10.0
    for model in models:
        assert health.state(model) is BreakerState.HALF_OPEN
    return health


def probe_is_free(health: HealthTracker, model: str) -> bool:
    """Whether ``model``'s probe slot is free (taking it, and leaving the tracker as it was:
    no verdict either way)."""
    before = health.snapshot()["models"][model]
    free = health.allow(model)
    health.release(model)
    after = health.snapshot()["models"][model]
    assert (after["successes"], after["failures"]) == (before["successes"], before["failures"])
    return free


@pytest.mark.parametrize("stream", [False, True])
async def test_a_probe_failing_inside_the_gateway_frees_the_probe_without_a_verdict(
        stream: bool) -> None:
    """A probe of a half-open model that fails with an error not the upstream's (a bug in an
    adapter) gives the slot back, the model judged neither healthy nor failed: the next
    request probes it, not one after the probe timeout."""
    health = half_open("a")
    with pytest.raises(RuntimeError, match="a bug in the adapter"):
        await run(Buggy({}), stream=stream, health=health, cards=[ModelCard("a")])
    assert health.state("a") is BreakerState.HALF_OPEN
    model = health.snapshot()["models"]["a"]
    assert (model["successes"], model["failures"]) == (0, 1)
    assert probe_is_free(health, "a")


async def test_a_probe_whose_adapter_cannot_be_had_frees_the_probe() -> None:
    health = half_open("a")

    def no_adapter(card: ModelCard) -> Any:
        raise LookupError(f"no adapter for {card.name}")

    with pytest.raises(LookupError, match="no adapter for a"):
        await call_with_failover(REQ, [ModelCard("a")], no_adapter, health=health)
    assert probe_is_free(health, "a")


async def test_a_half_open_model_skipped_as_too_small_keeps_its_probe_free() -> None:
    """A model passed over for its context window (after a larger one's refusal) was never
    called: its probe slot stays free."""
    health = half_open("b")
    cards = [ModelCard("a", context_window=8_000), ModelCard("b", context_window=4_000),
             ModelCard("c")]
    p = Scripted({"a": [ContextLengthExceeded("too long", status=400)]})
    result = await run(p, cards=cards, health=health)
    assert result.model == "c" and p.calls == ["a", "c"]
    assert [x.outcome for x in result.attempts] == [
        "context_length_exceeded", "context_too_small", "ok"]
    assert probe_is_free(health, "b")


async def test_a_probe_stream_failing_inside_the_gateway_mid_answer_frees_the_probe() -> None:
    health = half_open("a")
    stream = await run(Scripted({"a": ["bug-after-first"]}), stream=True, health=health,
                       cards=[ModelCard("a")])
    with pytest.raises(StreamBroken, match="failed inside the gateway"):
        [c async for c in stream]
    await stream.aclose()
    assert health.state("a") is BreakerState.HALF_OPEN
    assert probe_is_free(health, "a")


async def test_a_probe_stream_cancelled_mid_answer_leaves_no_probe_held() -> None:
    """The client leaving while a probe's answer streams: the model was delivering, so the
    probe counts as a success (the circuit closes); nothing is left holding the slot."""
    health = half_open("a")

    class Slow(Scripted):
        async def stream(self, request: Mapping[str, Any], card: ModelCard,
                         timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
            self.calls.append(card.name)
            yield chunk("up", "Hel")
            await asyncio.sleep(10)
            yield chunk("up", "lo")

    stream = await run(Slow({}), stream=True, health=health, cards=[ModelCard("a")])
    read: list[dict[str, Any]] = []

    async def consume() -> None:
        async for c in stream:
            read.append(c)

    task = asyncio.ensure_future(consume())
    while not read:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert health.state("a") is BreakerState.CLOSED
    assert health.snapshot()["models"]["a"]["successes"] == 1
    assert health.allow("a") and health.allow("a")


async def test_a_probe_stream_cancelled_before_its_first_chunk_frees_the_probe() -> None:
    """The client leaving while a probe's stream has not begun (nothing delivered yet): no
    verdict on the model, and the slot is free for the next request."""
    health = half_open("a")

    class Waiting(Scripted):
        async def stream(self, request: Mapping[str, Any], card: ModelCard,
                         timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
            self.calls.append(card.name)
            yield chunk("up", "")  # the role chunk: not content
            await asyncio.sleep(10)
            yield chunk("up", "late")

    p = Waiting({})
    task = asyncio.ensure_future(run(p, stream=True, health=health, cards=[ModelCard("a")]))
    while not p.calls:
        await asyncio.sleep(0.001)
    assert not health.allow("a")  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.state("a") is BreakerState.HALF_OPEN
    assert probe_is_free(health, "a")


class Slow(Scripted):
    """Each model answers its script's step after ``delays[model]`` seconds."""

    def __init__(self, scripts: dict[str, list[Step]], delays: dict[str, float]) -> None:
        super().__init__(scripts)
        self.delays = delays

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        await asyncio.sleep(self.delays.get(card.name, 0.0))
        return await super().complete(request, card, timeouts)

    async def stream(self, request: Mapping[str, Any], card: ModelCard,
                     timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        async for c in super().stream(request, card, timeouts):
            await asyncio.sleep(self.delays.get(card.name, 0.0))
            yield c


@pytest.mark.parametrize("stream", [False, True])
async def test_the_deadline_spent_by_earlier_models_is_not_charged_to_the_last_ones_health(
        stream: bool) -> None:
    """A model called after others used most of the request's deadline, and cut off by it, is
    judged neither way; a model called first, with the whole deadline, and as slow, is charged."""
    policy = RetryPolicy(max_total_s=0.3, max_attempts_per_model=1)
    # a fails after using most of the deadline; b is cut off by what is left.
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown_s=60))
    slow = Slow({"a": [ServerError("500")]}, {"a": 0.25, "b": 0.2})
    with pytest.raises(FailoverError) as info:
        result = await run(slow, stream=stream, cards=CARDS[:2], policy=policy, health=health)
        async for _ in result:  # (a stream: b's answer is cut while it streams)
            pass
    assert health.state("a") is BreakerState.OPEN  # its own failure
    assert health.state("b") is BreakerState.CLOSED, info.value  # the deadline's, not b's
    assert "after other models had used more than half of it" in str(info.value)
    # b alone, as slow, had the whole deadline: charged.
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown_s=60))
    with pytest.raises((FailoverError, StreamBroken)):
        result = await run(Slow({}, {"b": 0.4}), stream=stream, cards=CARDS[1:2],
                           policy=policy, health=health)
        async for _ in result:
            pass
    assert health.state("b") is BreakerState.OPEN


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hung_model_after_one_that_failed_fast_is_charged_the_deadline(
        stream: bool) -> None:
    """A model called after another that failed at once, cut off by the request's deadline, had
    most of it: charged as a model called first would be, so a model that hangs every time it
    comes second in the chain still opens its circuit."""
    policy = RetryPolicy(max_total_s=0.3, max_attempts_per_model=1)
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown_s=60))
    hung = Slow({"a": [ServerError("500")]}, {"b": 5.0})
    with pytest.raises(FailoverError) as info:
        result = await run(hung, stream=stream, cards=CARDS[:2], policy=policy, health=health)
        async for _ in result:
            pass
    assert health.state("a") is BreakerState.OPEN
    assert health.state("b") is BreakerState.OPEN, info.value
    assert "after other models had used" not in str(info.value)


class Trickle(Scripted):
    """Streams a chunk of content every ``every`` seconds, without end."""

    def __init__(self, scripts: dict[str, list[Step]], every: float) -> None:
        super().__init__(scripts)
        self.every = every

    async def stream(self, request: Mapping[str, Any], card: ModelCard,
                     timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        step = self._next(card)
        if isinstance(step, ProviderError):
            raise step
        while True:
            yield chunk("up", "x")
            await asyncio.sleep(self.every)


async def test_a_model_trickling_its_stream_after_one_that_failed_fast_is_charged() -> None:
    """A stream whose model had most of the deadline (the model before it failed at once) and
    is cut off by it while streaming is charged to its health."""
    policy = RetryPolicy(max_total_s=0.3, max_attempts_per_model=1)
    health = HealthTracker(HealthConfig(failure_threshold=1, cooldown_s=60))
    with pytest.raises(StreamBroken):
        result = await run(Trickle({"a": [ServerError("500")]}, 0.02), stream=True,
                           cards=CARDS[:2], policy=policy, health=health)
        async for _ in result:
            pass
    assert health.state("b") is BreakerState.OPEN


def test_only_failures_after_the_request_was_sent_say_the_model_may_have_generated() -> None:
    # A provider bills what it generated until the connection closed: the budget is charged
    # for these tries (see billed_tries), not for failures nothing was generated in.
    import httpx

    from switchpoint.gateway.failover import Attempt, billed_tries
    from switchpoint.gateway.providers._http import map_transport_error

    timeouts = Timeouts()

    def mapped(exc: httpx.HTTPError, started: bool = False) -> bool:
        return map_transport_error(exc, model="a", timeouts=timeouts,
                                   started=started).may_have_generated

    assert mapped(httpx.ReadTimeout("silent"))  # waiting for the answer
    assert mapped(httpx.ReadError("cut"), started=True)  # a stream cut part-way
    # Sent, then lost before the response's head: the upstream had the whole request.
    assert mapped(httpx.ReadError("reset by peer"))
    assert mapped(httpx.RemoteProtocolError("Server disconnected without sending a response."))
    assert not mapped(httpx.WriteError("broken pipe"))  # never wholly sent
    assert not mapped(httpx.PoolTimeout("no free connection"))
    assert not mapped(httpx.WriteTimeout("slow send"))  # never wholly sent
    assert not mapped(httpx.ConnectError("refused"))
    assert not mapped(httpx.ConnectTimeout("no route"))
    assert FirstTokenTimeout("late").may_have_generated
    assert StreamBroken("ended before any content").may_have_generated
    for refused in (ServerError("500", status=500), RateLimited("429", status=429),
                    BadRequest("400"), ContentFiltered("no"), ContextLengthExceeded("long")):
        assert not refused.may_have_generated, refused
    tries = [Attempt("a", 1, "read_timeout", billed=True), Attempt("a", 2, "server_error"),
             Attempt("b", 1, "ok")]
    assert billed_tries(tries) == tries[:1]


async def test_the_deadline_run_out_before_a_call_began_is_not_billed() -> None:
    # The deadline cutting a call under way may leave it billed; one that ran out before the
    # next try began (here, while the call waited to retry) sent nothing.
    clock = [0.0]

    class Failing:
        async def complete(self, request: Mapping[str, Any], card: ModelCard,
                           timeouts: Timeouts) -> ProviderResponse:
            raise ServerError("busy", model=card.name, status=500)

    async def sleep(seconds: float) -> None:
        clock[0] += 100.0  # (the wait outlived the deadline)

    with pytest.raises(FailoverError) as caught:
        await call_with_failover({"messages": []}, [ModelCard(name="a")],
                                 lambda card: Failing(),  # type: ignore[arg-type,return-value]
                                 policy=RetryPolicy(max_attempts_per_model=2, max_total_s=15),
                                 clock=lambda: clock[0], sleep=sleep)
    assert [(a.outcome, a.billed) for a in caught.value.attempts] == [
        ("server_error", False), ("read_timeout", False)]


class Connecting(Scripted):
    """A provider whose transport says it is connecting (and, with ``sends``, that it sent the
    request), then waits ``seconds`` for an answer."""

    def __init__(self, seconds: float, sends: bool) -> None:
        super().__init__({})
        self.seconds = seconds
        self.sends = sends

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        from switchpoint.gateway.providers.sending import note_connecting, note_sent

        note_connecting()
        if self.sends:
            note_sent()
        await asyncio.sleep(self.seconds)
        raise AssertionError("the try should have been cut off")


@pytest.mark.parametrize("sends", [False, True])
async def test_a_try_cut_off_before_its_request_was_sent_is_not_billed(sends: bool) -> None:
    # The deadline, or the caller leaving, ends a try still connecting: nothing was sent, so
    # nothing can be billed. Once the request was sent, the model may have been generating.
    from switchpoint.gateway.failover import CLIENT_CLOSED, Attempt

    policy = RetryPolicy(max_total_s=0.05, max_attempts_per_model=1)
    with pytest.raises(FailoverError) as caught:
        await run(Connecting(5, sends), cards=CARDS[:1], policy=policy)
    assert [(a.outcome, a.billed) for a in caught.value.attempts] == [("read_timeout", sends)]
    attempts: list[Attempt] = []
    task = asyncio.ensure_future(run(Connecting(5, sends), cards=CARDS[:1], attempts=attempts))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(a.outcome, a.billed) for a in attempts] == [(CLIENT_CLOSED, sends)]


async def test_a_try_refused_before_it_is_sent_passes_its_model_over() -> None:
    # Asked before each try: a refused one is not sent; failover goes on to the next model,
    # and a model passed over so is not counted as failed.
    from switchpoint.gateway.failover import (
        BUDGET_REFUSED,
        NotSent,
        billed_tries,
        failed_models,
    )

    asked: list[tuple[str, int]] = []

    def before(card: ModelCard, attempts: Any) -> NotSent | None:
        asked.append((card.name, len(attempts)))
        return (NotSent(BUDGET_REFUSED, "budget exceeded: no room")
                if billed_tries(attempts) and card.name == "a" else None)

    p = Scripted({"a": [ReadTimeout("silent", model="a")]})
    health = HealthTracker(HealthConfig(failure_threshold=5))
    result = await run(p, health=health, before_try=before)
    assert p.calls == ["a", "b"] and result.model == "b"
    assert asked == [("a", 0), ("a", 1), ("b", 2)]
    assert [(a.model, a.outcome, a.billed) for a in result.attempts] == [
        ("a", "read_timeout", True), ("a", "budget_exceeded", False), ("b", "ok", False)]
    assert result.attempts[1].error == "budget exceeded: no room"
    assert failed_models(result.attempts) == {"a"}  # (for its read timeout)
    assert result.models_tried == ["a", "b"]


async def test_a_failed_try_is_told_of_its_retry_as_it_starts_or_of_what_stopped_it() -> None:
    # Told of a retry before its wait, the log said "retrying" of a retry a budget then refused,
    # or the client's leaving during the wait cancelled: nothing said it was never sent.
    from switchpoint.gateway.failover import (
        BUDGET_REFUSED,
        CLIENT_CLOSED,
        Attempt,
        NotSent,
        Sequel,
    )

    events: list[str] = []

    def told(attempt: Attempt, sequel: Sequel) -> None:
        events.append(f"told {attempt.model}#{attempt.attempt} {sequel}")

    class Noted(Sleeps):
        async def __call__(self, seconds: float) -> None:
            events.append(f"slept {seconds}")

    # A retry sent: told as it starts, once the wait is over.
    p = Scripted({"a": [ServerError("500"), "ok"]})
    await run(p, sleeps=Noted(), on_failed_try=told)
    assert events[0].startswith("slept "), events
    assert events[1] == (f"told a#1 Sequel(retry_in_s={events[0].split()[1]}, next_model=None, "
                         "not_retried=None)"), events
    # A retry a budget refused: what stopped it, then the next model.
    events.clear()

    def before(card: ModelCard, attempts: Any) -> NotSent | None:
        return NotSent(BUDGET_REFUSED, "budget exceeded") if len(attempts) == 1 else None

    p = Scripted({"a": [ServerError("500")]})
    result = await run(p, sleeps=Noted(), before_try=before, on_failed_try=told)
    assert result.model == "b" and p.calls == ["a", "b"]
    assert events[1:] == ["told a#1 Sequel(retry_in_s=None, next_model='b', "
                          f"not_retried='{BUDGET_REFUSED}')"], events
    # The client leaving during the wait: said so.
    events.clear()

    async def leave(seconds: float) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run(Scripted({"a": [ServerError("500")]}), sleeps=leave, on_failed_try=told)
    assert events == ["told a#1 Sequel(retry_in_s=None, next_model=None, "
                      f"not_retried='{CLIENT_CLOSED}')"], events


def _sse(events: Sequence[tuple[str | None, Any]]) -> bytes:
    return b"".join((f"event: {name}\n" if name else "").encode()
                    + f"data: {json.dumps(data)}\n\n".encode() for name, data in events)


# What an upstream sends before its content while it reasons: an OpenAI-compatible server's
# role chunk and 300 bytes of reasoning_content; a Messages API stream's message_start
# (reporting 40 prompt tokens) and 300 characters of thinking. Then it falls silent.
_OPENAI_REASONING = _sse([(None, chunk("up", ""))] + [
    (None, {**chunk("up"), "choices": [{"index": 0, "delta": {"reasoning_content": "r" * 100},
                                        "finish_reason": None}]}) for _ in range(3)])
_ANTHROPIC_THINKING = _sse([
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "up", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 40, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": ""}})] + [
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "t" * 100}})
    for _ in range(3)])


class Reasoning(Scripted):
    """A provider whose stream, read by the gateway's own stream reader, sends ``sent`` (what
    an upstream sends while it reasons) and then nothing: ``silent`` is set once the reader
    has taken all of it and waits for more."""

    def __init__(self, sent: bytes, anthropic: bool) -> None:
        super().__init__({})
        self.sent = sent
        self.anthropic = anthropic
        self.silent = asyncio.Event()

    async def stream_batches(self, request: Mapping[str, Any], card: ModelCard,
                             timeouts: Timeouts) -> AsyncIterator[list[dict[str, Any]]]:
        from switchpoint.gateway.providers._http import stream_chunks
        from switchpoint.gateway.providers.anthropic import AnthropicChunkDecoder
        from switchpoint.gateway.providers.openai import OpenAIChunkDecoder

        async def body() -> AsyncIterator[bytes]:
            yield self.sent
            self.silent.set()  # (asked for more: what came before is decoded)
            await asyncio.Event().wait()
            yield b""

        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=body())

        decoder = (AnthropicChunkDecoder(card.name) if self.anthropic
                   else OpenAIChunkDecoder(card.name))
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            async for batch in stream_chunks(client, "http://upstream/v1", {}, {}, timeouts,
                                             decoder, model=card.name):
                yield batch


@pytest.mark.parametrize("anthropic", [False, True], ids=["reasoning", "thinking"])
async def test_a_stream_stopped_while_reasoning_is_charged_the_estimate_of_what_came(
        anthropic: bool) -> None:
    # The service stopping (or the caller leaving) cancels the call while its upstream is
    # still reasoning, before any content: the try records what came, the reasoning's bytes
    # and the prompt count reported, and is charged the estimate of them by the one rule of
    # a billed try, never past its worst case.
    from switchpoint.gateway.failover import CLIENT_CLOSED, Attempt, answer_use, billed_use
    from switchpoint.gateway.providers.base import ReportedSoFar

    card = ModelCard("a", input_per_mtok=1.0, output_per_mtok=10.0)
    provider = Reasoning(_ANTHROPIC_THINKING if anthropic else _OPENAI_REASONING, anthropic)
    attempts: list[Attempt] = []
    task = asyncio.ensure_future(run(provider, stream=True, cards=[card], attempts=attempts))
    await provider.silent.wait()
    task.cancel()  # (as Gateway.stop_in_flight ends a call in flight)
    with pytest.raises(asyncio.CancelledError):
        await task
    [attempt] = attempts
    came = ReportedSoFar(40, 1, 300) if anthropic else ReportedSoFar(unrelayed_bytes=300)
    assert (attempt.outcome, attempt.billed, attempt.usage, attempt.reasoned) == (
        CLIENT_CLOSED, True, None, came)
    use = billed_use(attempt, card, 12, 1.0)
    assert use == answer_use(card, None, 12, 0, 1.0, came, stream=True)
    assert use.estimated and use.usage is not None and use.cost_usd is not None
    assert use.usage.prompt_tokens == (40 if anthropic else 12)
    assert use.cost_usd == pytest.approx(card.price(use.usage.prompt_tokens,
                                                    use.usage.completion_tokens))
    assert use.usage.completion_tokens > 0 and use.cost_usd < 1.0
    # Never past the worst case held for it.
    assert billed_use(attempt, card, 12, 1e-9).cost_usd == 1e-9
