"""The provider adapters and failover against a real fake-provider process on loopback.

Every fault the gateway must survive gets its own test, for the OpenAI-compatible adapter and
for the Anthropic adapter, plain and streamed, and then through ``call_with_failover``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import pytest

from switchpoint.catalog import ModelCard
from switchpoint.errors import (
    AuthError,
    ConnectError,
    ContentFiltered,
    ContextLengthExceeded,
    FailoverError,
    FirstTokenTimeout,
    MalformedResponse,
    MissingApiKey,
    ProviderError,
    RateLimited,
    ReadTimeout,
    ServerError,
    StreamBroken,
)
from switchpoint.gateway.failover import RetryPolicy, call_with_failover
from switchpoint.gateway.health import HealthConfig, HealthTracker
from switchpoint.gateway.providers import (
    AnthropicProvider,
    ClientPool,
    OpenAIProvider,
    ProviderRegistry,
    Timeouts,
)
from switchpoint.gateway.providers._transport import PooledTransport
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import free_port

pytestmark = pytest.mark.anyio

ENV = {"FAKE_OPENAI_KEY": "sk-openai-test", "FAKE_ANTHROPIC_KEY": "sk-ant-test"}
FAST = Timeouts(connect_s=2.0, read_s=0.6, first_token_s=1.0)
FIRST_TOKEN_FIRST = Timeouts(connect_s=2.0, read_s=3.0, first_token_s=0.5)
QUICK_POLICY = RetryPolicy(max_attempts_per_model=2, backoff_base_s=0.01, backoff_cap_s=0.02)
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    pool = ClientPool()
    yield pool
    await pool.aclose()


@pytest.fixture
def gpt(fake: FakeProviderProcess) -> ModelCard:
    return ModelCard("gpt-fast", base_url=fake.openai_base_url, api_key_env="FAKE_OPENAI_KEY",
                     upstream_model="fake-gpt-1", context_window=8_000,
                     capabilities=("tools",))


@pytest.fixture
def gpt_big(fake: FakeProviderProcess) -> ModelCard:
    return ModelCard("gpt-big", base_url=fake.openai_base_url, api_key_env="FAKE_OPENAI_KEY",
                     context_window=128_000, capabilities=("tools",))


@pytest.fixture
def claude(fake: FakeProviderProcess) -> ModelCard:
    return ModelCard("claude", provider="anthropic", base_url=fake.url,
                     api_key_env="FAKE_ANTHROPIC_KEY", upstream_model="fake-claude-1",
                     capabilities=("tools", "vision"))


@pytest.fixture
def openai_provider(pool: ClientPool) -> OpenAIProvider:
    return OpenAIProvider(pool, env=ENV)


@pytest.fixture
def anthropic_provider(pool: ClientPool) -> AnthropicProvider:
    return AnthropicProvider(pool, env=ENV)


async def collect(stream: AsyncIterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c async for c in stream]


async def collect_until_error(stream: AsyncIterable[dict[str, Any]],
                              ) -> tuple[list[dict[str, Any]], ProviderError]:
    got: list[dict[str, Any]] = []
    with pytest.raises(ProviderError) as info:
        async for c in stream:
            got.append(c)
    return got, info.value


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])


def req(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": USER, **extra}


# =============================================================================================
# OpenAI-compatible adapter
# =============================================================================================


async def test_openai_ok_forwards_the_body_untouched_except_model(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    body = req(temperature=0.2, response_format={"type": "json_object"}, seed=7,
               tools=[{"type": "function", "function": {"name": "lookup"}}], tool_choice="none",
               x_vendor_flag={"keep": True})
    answer = await openai_provider.complete(body, gpt, FAST)
    assert answer.body["choices"][0]["message"]["content"] == "Echo from fake-gpt-1: hello there"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert answer.model == "gpt-fast" and answer.upstream_model == "fake-gpt-1"
    [seen] = fake.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"] == {**body, "model": "fake-gpt-1"}
    assert seen["headers"]["authorization"] == "Bearer sk-openai-test"
    assert body["model"] == "auto"


async def test_openai_stream_asks_for_usage_and_reads_it_from_the_final_chunk(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    chunks = await collect(openai_provider.stream(req(stream=True), gpt, FAST))
    assert text_of(chunks) == "Echo from fake-gpt-1: hello there"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    [seen] = fake.requests()
    assert seen["body"]["stream"] is True
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert seen["headers"]["accept"] == "text/event-stream"


async def test_openai_tool_calls_plain_and_streamed(
        openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    answer = await openai_provider.complete(req(tools=tools), gpt, FAST)
    [call] = answer.body["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["function"]["name"] == "search"
    chunks = await collect(openai_provider.stream(req(tools=tools), gpt, FAST))
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == call["id"]
    assert "".join(tc["function"]["arguments"] for tc in calls) == call["function"]["arguments"]


async def test_card_without_api_key_env_sends_no_key(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider) -> None:
    card = ModelCard("local", base_url=fake.openai_base_url)
    await openai_provider.complete(req(), card, FAST)
    assert "authorization" not in fake.requests()[0]["headers"]


async def test_missing_key_env_var_names_the_variable_and_sends_nothing(
        fake: FakeProviderProcess, pool: ClientPool) -> None:
    card = ModelCard("keyed", base_url=fake.openai_base_url, api_key_env="NOT_SET_ANYWHERE_42")
    provider = OpenAIProvider(pool, env={})
    with pytest.raises(MissingApiKey, match="NOT_SET_ANYWHERE_42"):
        await provider.complete(req(), card, FAST)
    with pytest.raises(MissingApiKey, match="NOT_SET_ANYWHERE_42"):
        await collect(provider.stream(req(), card, FAST))
    assert fake.requests() == []


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_429_with_retry_after(fake: FakeProviderProcess,
                                           openai_provider: OpenAIProvider, gpt: ModelCard,
                                           stream: bool) -> None:
    fake.script("fake-gpt-1", "429:retry_after=2")
    with pytest.raises(RateLimited) as info:
        if stream:
            await collect(openai_provider.stream(req(), gpt, FAST))
        else:
            await openai_provider.complete(req(), gpt, FAST)
    assert info.value.retry_after == 2.0 and info.value.status == 429
    assert info.value.retryable and info.value.escalate


async def test_openai_429_without_retry_after_and_with_retry_after_ms(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "429", "429:retry_after_ms=250")
    with pytest.raises(RateLimited) as info:
        await openai_provider.complete(req(), gpt, FAST)
    assert info.value.retry_after is None
    with pytest.raises(RateLimited) as info:
        await openai_provider.complete(req(), gpt, FAST)
    assert info.value.retry_after == 0.25


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_server_errors(fake: FakeProviderProcess, openai_provider: OpenAIProvider,
                                    gpt: ModelCard, status: int, stream: bool) -> None:
    fake.script("fake-gpt-1", str(status))
    with pytest.raises(ServerError) as info:
        if stream:
            await collect(openai_provider.stream(req(), gpt, FAST))
        else:
            await openai_provider.complete(req(), gpt, FAST)
    assert info.value.status == status and info.value.retryable
    assert info.value.body == {"error": {"message": f"fake {status}", "type": "server_error",
                                         "param": None, "code": "server_error"}}


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_connection_reset(fake: FakeProviderProcess,
                                       openai_provider: OpenAIProvider, gpt: ModelCard,
                                       stream: bool) -> None:
    fake.script("fake-gpt-1", "reset")
    with pytest.raises(ConnectError):
        if stream:
            await collect(openai_provider.stream(req(), gpt, FAST))
        else:
            await openai_provider.complete(req(), gpt, FAST)


async def test_connection_refused_is_a_connect_error(openai_provider: OpenAIProvider) -> None:
    port = free_port()  # free, and nothing listens there
    card = ModelCard("nowhere", base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ConnectError):
        await openai_provider.complete(req(), card, FAST)


async def test_openai_hang_before_headers_is_a_read_timeout(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "hang:seconds=10", "hang:seconds=10")
    started = time.monotonic()
    with pytest.raises(ReadTimeout):
        await openai_provider.complete(req(), gpt, FAST)
    with pytest.raises(ReadTimeout):  # streamed, read_s (0.6) < first_token_s (1.0)
        await collect(openai_provider.stream(req(), gpt, FAST))
    assert time.monotonic() - started < 5  # two 0.6 s read timeouts, not the 10 s hangs


async def test_openai_hang_before_headers_hits_the_first_token_timeout_when_shorter(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "hang:seconds=3")
    with pytest.raises(FirstTokenTimeout):
        await collect(openai_provider.stream(req(), gpt, FIRST_TOKEN_FIRST))


async def test_openai_stall_before_the_first_token(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    """Headers and a role-only chunk arrive, then silence: no content, so no commit."""
    fake.script("fake-gpt-1", "stall:seconds=3", "stall:seconds=3", "stall:seconds=3")
    stream = openai_provider.stream(req(), gpt, FIRST_TOKEN_FIRST)
    got, error = await collect_until_error(stream)
    assert isinstance(error, FirstTokenTimeout) and got == []
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, FirstTokenTimeout) and got == []  # read timeout after headers
    with pytest.raises(ReadTimeout):  # plain: headers, then the body never comes
        await openai_provider.complete(req(), gpt, FAST)


async def test_openai_stream_cut_mid_way(fake: FakeProviderProcess,
                                         openai_provider: OpenAIProvider,
                                         gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "cut:after=2")
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, StreamBroken)
    assert text_of(got) == "Echo from "


async def test_openai_plain_answer_cut_mid_way(fake: FakeProviderProcess,
                                               openai_provider: OpenAIProvider,
                                               gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "cut")
    with pytest.raises(MalformedResponse, match="cut off"):
        await openai_provider.complete(req(), gpt, FAST)


async def test_openai_malformed_chunk(fake: FakeProviderProcess,
                                      openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "malformed:after=1", "malformed:after=0", "malformed")
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, StreamBroken) and "malformed" in str(error)
    assert text_of(got) == "Echo "
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, StreamBroken) and got == []  # before any content: escalatable
    assert error.escalate
    with pytest.raises(MalformedResponse):
        await openai_provider.complete(req(), gpt, FAST)


async def test_openai_stream_ending_after_its_finish_reason_is_complete_without_done(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "nodone")
    got = await collect(openai_provider.stream(req(), gpt, FAST))
    assert text_of(got) == "Echo from fake-gpt-1: hello there"
    assert got[-1]["choices"] == [] and got[-1]["usage"]["completion_tokens"] > 0


async def test_openai_stream_ending_before_its_finish_reason_is_broken(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "nofinish:after=2")
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, StreamBroken) and "before the answer finished" in str(error)
    assert text_of(got) == "Echo from "  # a clean end of the body, yet the answer was cut


async def test_a_model_refusing_stream_options_is_asked_again_without_and_remembered(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", *["reject_stream_options"] * 3)
    got = await collect(openai_provider.stream(req(), gpt, FAST))
    assert text_of(got) == "Echo from fake-gpt-1: hello there"
    assert "gpt-fast" in openai_provider.no_stream_usage
    got = await collect(openai_provider.stream(req(), gpt, FAST))  # remembered: one request
    assert text_of(got) == "Echo from fake-gpt-1: hello there"
    bodies = [r["body"] for r in fake.requests()]
    assert ["stream_options" in b for b in bodies] == [True, False, False]
    assert all(b["stream"] is True for b in bodies)
    # Plain answers never carry the field.
    assert (await openai_provider.complete(req(), gpt, FAST)).body["choices"]
    assert "stream_options" not in fake.requests()[-1]["body"]


async def test_stream_options_is_left_out_for_a_model_that_does_not_take_it(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    card = dataclasses.replace(gpt, stream_usage=False)
    fake.script("fake-gpt-1", "reject_stream_options")
    got = await collect(openai_provider.stream(req(stream_options={"include_usage": True}),
                                               card, FAST))
    assert text_of(got) == "Echo from fake-gpt-1: hello there"
    assert ["stream_options" in r["body"] for r in fake.requests()] == [False]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_context_length_400(fake: FakeProviderProcess,
                                         openai_provider: OpenAIProvider, gpt: ModelCard,
                                         stream: bool) -> None:
    fake.script("fake-gpt-1", "context_length")
    with pytest.raises(ContextLengthExceeded) as info:
        if stream:
            await collect(openai_provider.stream(req(), gpt, FAST))
        else:
            await openai_provider.complete(req(), gpt, FAST)
    assert info.value.status == 400 and info.value.escalate and not info.value.retryable
    assert info.value.body["error"]["code"] == "context_length_exceeded"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_content_filter_400(fake: FakeProviderProcess,
                                         openai_provider: OpenAIProvider, gpt: ModelCard,
                                         stream: bool) -> None:
    fake.script("fake-gpt-1", "content_filter")
    with pytest.raises(ContentFiltered) as info:
        if stream:
            await collect(openai_provider.stream(req(), gpt, FAST))
        else:
            await openai_provider.complete(req(), gpt, FAST)
    assert info.value.status == 400 and not info.value.escalate


async def test_openai_401_is_an_auth_error(fake: FakeProviderProcess,
                                           openai_provider: OpenAIProvider,
                                           gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "401")
    with pytest.raises(AuthError):
        await openai_provider.complete(req(), gpt, FAST)


async def test_openai_error_event_mid_stream_and_before_content(
        fake: FakeProviderProcess, openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    fake.script("fake-gpt-1", "sse_error:after=2", "sse_error:after=0")
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, StreamBroken) and text_of(got) == "Echo from "
    got, error = await collect_until_error(openai_provider.stream(req(), gpt, FAST))
    assert isinstance(error, ServerError) and got == []


async def test_magic_prompt_content_selects_a_behaviour(
        openai_provider: OpenAIProvider, gpt: ModelCard) -> None:
    body = req(messages=[{"role": "user", "content": "hi [[fake:503]]"}])
    with pytest.raises(ServerError):
        await openai_provider.complete(body, gpt, FAST)


async def test_one_pooled_client_per_upstream(pool: ClientPool, openai_provider: OpenAIProvider,
                                              gpt: ModelCard, gpt_big: ModelCard) -> None:
    for _ in range(3):
        await openai_provider.complete(req(), gpt, FAST)
        await openai_provider.complete(req(), gpt_big, FAST)
    assert len(pool) == 1
    # Base URLs of one scheme, host and port share the client, and so its bound of
    # connections, whatever their paths; another port, scheme or host is another upstream.
    shared = pool.get("http://127.0.0.1:8000/v1")
    for same in ("http://127.0.0.1:8000", "HTTP://127.0.0.1:8000/openai/v1/"):
        assert pool.get(same) is shared, same
    assert pool.get("http://Example.test/v1") is pool.get("http://example.test:80/x")
    for other in ("http://127.0.0.1:8001/v1", "https://127.0.0.1:8000/v1",
                  "http://localhost:8000/v1"):
        assert pool.get(other) is not shared, other
    # Spellings of one host share it: a trailing dot, an IPv4 address as a resolver reads it,
    # an IPv6 one however written (one mapping an IPv4 address, as that); a name that resolves
    # to the address (localhost) is not looked up, so it stays another upstream.
    for same in ("http://127.0.0.1.:8000", "http://0x7f.1:8000", "http://2130706433:8000",
                 "http://[::ffff:127.0.0.1]:8000"):
        assert pool.get(same) is shared, same
    assert pool.get("http://[0:0::1]:8000") is pool.get("http://[::1]:8000/v1")
    assert pool.get("http://LOCALHOST.:8000") is pool.get("http://localhost:8000/v1")


async def test_spellings_of_one_address_share_its_bound_of_connections(
        fake: FakeProviderProcess) -> None:
    """Models whose base URLs spell one upstream's address differently (127.0.0.1, 0x7f.1,
    2130706433) hold at most max_connections to it between them, not that many each."""
    pool = ClientPool(max_connections=2, max_keepalive_connections=2)
    provider = OpenAIProvider(pool, env=ENV)
    cards = [ModelCard(f"m{i}", base_url=f"http://{host}:{fake.port}/v1",
                       api_key_env="FAKE_OPENAI_KEY")
             for i, host in enumerate(("127.0.0.1", "0x7f.1", "2130706433"))]
    slow = req(messages=[{"role": "user", "content": "hi [[fake:ok:delay=0.2]]"}])
    fake.reset()
    others = fake.connections()["open"]  # (other tests' pools' idle ones, which only close)
    try:
        await asyncio.gather(*(provider.complete(slow, card, Timeouts(connect_s=2, read_s=5))
                               for card in cards for _ in range(2)))
    finally:
        await pool.aclose()
    assert len(fake.requests()) == 6
    assert fake.connections()["peak"] - others <= 2  # (each spelling held 2 of its own: 6)


async def test_streams_read_to_their_end_marker_leave_the_connection_for_the_next_call(
        gpt: ModelCard, claude: ModelCard) -> None:
    transport = PooledTransport(max_connections=4)
    pool = ClientPool(transport=transport)
    try:
        for provider, card in ((OpenAIProvider(pool, env=ENV), gpt),
                               (AnthropicProvider(pool, env=ENV), claude)):
            pooled = 0
            for _ in range(6):
                chunks = await collect(provider.stream(req(stream=True), card, FAST))
                assert text_of(chunks).endswith(": hello there")
                # When the body's end had arrived with the end marker (nothing is waited for,
                # so on a loaded machine it may come too late), its one connection is idle,
                # pooled; never more than that one.
                idle = sum(len(idle) for idle in transport._idle.values())
                assert idle <= 1
                pooled += idle
            assert pooled >= 1, "no stream left its connection for the next call"
    finally:
        await pool.aclose()


# =============================================================================================
# Anthropic adapter
# =============================================================================================


async def test_anthropic_ok_translates_both_ways(fake: FakeProviderProcess,
                                                 anthropic_provider: AnthropicProvider,
                                                 claude: ModelCard) -> None:
    body = req(messages=[{"role": "system", "content": "Be terse."}, *USER], max_tokens=64,
               temperature=0.5)
    answer = await anthropic_provider.complete(body, claude, FAST)
    message = answer.body["choices"][0]["message"]
    assert message["content"] == "Echo from fake-claude-1: hello there"
    assert answer.body["choices"][0]["finish_reason"] == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    [seen] = fake.requests()
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == "sk-ant-test"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen["headers"]
    assert seen["body"]["system"] == "Be terse."
    assert seen["body"]["max_tokens"] == 64 and seen["body"]["model"] == "fake-claude-1"


async def test_an_anthropic_stream_without_its_final_counts_has_no_usage(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider,
        claude: ModelCard) -> None:
    """A stream ended without its message_delta reports no usage (the answer is charged an
    estimate), not message_start's count of the output before it was written."""
    fake.script("fake-claude-1", "nodelta")
    chunks = await collect(anthropic_provider.stream(req(), claude, FAST))
    assert text_of(chunks) == "Echo from fake-claude-1: hello there"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is None


async def test_anthropic_stream_text_and_usage(anthropic_provider: AnthropicProvider,
                                               claude: ModelCard) -> None:
    chunks = await collect(anthropic_provider.stream(req(), claude, FAST))
    assert text_of(chunks) == "Echo from fake-claude-1: hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-1]["usage"]["prompt_tokens"] > 0


async def test_anthropic_tool_calls_keep_toolu_ids(anthropic_provider: AnthropicProvider,
                                                   claude: ModelCard) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}}}}]
    answer = await anthropic_provider.complete(req(tools=tools), claude, FAST)
    [call] = answer.body["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("toolu_")
    assert answer.body["choices"][0]["finish_reason"] == "tool_calls"
    chunks = await collect(anthropic_provider.stream(req(tools=tools), claude, FAST))
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == call["id"] and calls[0]["function"]["name"] == "search"
    assert "".join(tc["function"]["arguments"] for tc in calls) == call["function"]["arguments"]


@pytest.mark.parametrize("url", ["data:image/png;base64,iVBORw0K",
                                 "data:Image/PNG;name=cat.png;base64,iVBORw0K"],
                         ids=["plain", "with-parameter"])
async def test_anthropic_image_parts_are_accepted(fake: FakeProviderProcess,
                                                  anthropic_provider: AnthropicProvider,
                                                  claude: ModelCard, url: str) -> None:
    content = [{"type": "text", "text": "what is it"},
               {"type": "image_url", "image_url": {"url": url}}]
    answer = await anthropic_provider.complete(
        req(messages=[{"role": "user", "content": content}]), claude, FAST)
    assert answer.body["choices"][0]["message"]["content"]
    block = fake.requests()[0]["body"]["messages"][0]["content"][1]
    assert block["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}


@pytest.mark.parametrize(("source", "says"), [
    ({"type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zy8+"},
     "messages.0.content.0.image.source.base64.media_type: Input should be 'image/jpeg'"),
    ({"type": "url", "url": "data:image/png;name=a.png;base64,iVBOR"},
     "messages.0.content.0.image.source.url: URL must use the http or https scheme"),
], ids=["svg-base64", "data-url-as-url"])
def test_the_fake_messages_api_refuses_images_the_real_one_refuses(
        fake: FakeProviderProcess, source: dict[str, str], says: str) -> None:
    body = {"model": "fake-claude-1", "max_tokens": 16, "messages": [
        {"role": "user", "content": [{"type": "image", "source": source}]}]}
    request = urllib.request.Request(
        fake.url + "/v1/messages", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01",
                 "x-api-key": "k"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    error = json.loads(info.value.read())["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(says)


@pytest.mark.parametrize(("behaviour", "error", "stream"), [
    ("429:retry_after=3", RateLimited, False),
    ("429", RateLimited, True),
    ("529", ServerError, False),
    ("500", ServerError, True),
    ("401", AuthError, False),
    ("reset", ConnectError, False),
    ("reset", ConnectError, True),
    ("context_length", ContextLengthExceeded, False),
    ("context_length", ContextLengthExceeded, True),
    ("content_filter", ContentFiltered, False),
    ("content_filter", ContentFiltered, True),
    ("malformed", MalformedResponse, False),
    ("hang:seconds=3", ReadTimeout, False),
])
async def test_anthropic_faults_before_any_content(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider, claude: ModelCard,
        behaviour: str, error: type[ProviderError], stream: bool) -> None:
    fake.script("fake-claude-1", behaviour)
    with pytest.raises(error) as info:
        if stream:
            await collect(anthropic_provider.stream(req(), claude, FAST))
        else:
            await anthropic_provider.complete(req(), claude, FAST)
    if behaviour.startswith("429:retry_after"):
        assert isinstance(info.value, RateLimited) and info.value.retry_after == 3.0


async def test_an_anthropic_error_in_a_200_is_named_not_read_as_an_answer(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider,
        claude: ModelCard) -> None:
    """A 200 whose JSON is the Messages API's error ({"type": "error", "error": {...}}): the
    plain request's failure names what the upstream said, as an OpenAI one's does (it said the
    answer had no content list); a stream's is the upstream's error, not a malformed answer."""
    fake.script("fake-claude-1", "error200:code=overloaded_error",
                "error200:code=overloaded_error")
    with pytest.raises(MalformedResponse) as plain:
        await anthropic_provider.complete(req(), claude, FAST)
    assert str(plain.value).startswith(
        "claude: the 200 answer is an error, not a completion: fake upstream failure ("), (
        plain.value)
    assert plain.value.status == 200
    with pytest.raises(ServerError) as streamed:
        await collect(anthropic_provider.stream(req(), claude, FAST))
    assert "fake upstream failure" in str(streamed.value), streamed.value


async def test_anthropic_stall_before_the_first_token(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider,
        claude: ModelCard) -> None:
    fake.script("fake-claude-1", "stall:seconds=3")
    got, error = await collect_until_error(anthropic_provider.stream(req(), claude,
                                                                     FIRST_TOKEN_FIRST))
    assert isinstance(error, FirstTokenTimeout) and got == []


@pytest.mark.parametrize(("behaviour", "text"), [
    ("cut:after=2", "Echo from "),
    ("malformed:after=1", "Echo "),
    ("nofinish:after=2", "Echo from "),
    ("sse_error:after=1", "Echo "),
])
async def test_anthropic_stream_breaks_after_content(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider, claude: ModelCard,
        behaviour: str, text: str) -> None:
    fake.script("fake-claude-1", behaviour)
    got, error = await collect_until_error(anthropic_provider.stream(req(), claude, FAST))
    assert isinstance(error, StreamBroken)
    assert text_of(got) == text


async def test_anthropic_stream_ending_after_its_stop_reason_is_complete_without_message_stop(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider,
        claude: ModelCard) -> None:
    # (the usage message_delta brought with the stop reason follows it, as an OpenAI stream's
    # usage chunk does: the answer's reported usage, though message_stop never came)
    fake.script("fake-claude-1", "nodone")
    got = await collect(anthropic_provider.stream(req(), claude, FAST))
    assert text_of(got) == "Echo from fake-claude-1: hello there"
    assert got[-2]["choices"][0]["finish_reason"] == "stop"
    assert got[-1]["choices"] == [] and got[-1]["usage"]["completion_tokens"] > 0


async def test_anthropic_overloaded_event_before_content_is_retryable(
        fake: FakeProviderProcess, anthropic_provider: AnthropicProvider,
        claude: ModelCard) -> None:
    fake.script("fake-claude-1", "sse_error:after=0")
    got, error = await collect_until_error(anthropic_provider.stream(req(), claude, FAST))
    assert isinstance(error, ServerError) and error.retryable and got == []


# =============================================================================================
# Failover against the real process
# =============================================================================================


@pytest.fixture
def registry(pool: ClientPool) -> ProviderRegistry:
    return ProviderRegistry(pool, env=ENV)


async def test_failover_honours_retry_after_on_the_same_model(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard) -> None:
    fake.script("fake-gpt-1", "429:retry_after=0.3", "ok")
    started = time.monotonic()
    result = await call_with_failover(req(), [gpt, gpt_big], registry, timeouts=FAST,
                                      policy=QUICK_POLICY)
    assert time.monotonic() - started >= 0.3
    assert result.model == "gpt-fast" and result.body["model"] == "gpt-fast"
    assert [a.outcome for a in result.attempts] == ["rate_limited", "ok"]
    assert result.attempts[1].waited_s == pytest.approx(0.3)


async def test_failover_escalates_after_server_errors(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard) -> None:
    fake.script("fake-gpt-1", "500", "503")
    result = await call_with_failover(req(), [gpt, gpt_big], registry, timeouts=FAST,
                                      policy=QUICK_POLICY)
    assert result.model == "gpt-big"
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("gpt-fast", "server_error"), ("gpt-fast", "server_error"), ("gpt-big", "ok")]
    assert [r["body"]["model"] for r in fake.requests()] == ["fake-gpt-1", "fake-gpt-1",
                                                              "gpt-big"]


async def test_failover_stream_escalates_on_first_token_timeout_before_any_byte(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        claude: ModelCard) -> None:
    fake.script("fake-gpt-1", "stall:seconds=3", "reset")
    stream = await call_with_failover(req(stream=True), [gpt, claude], registry, stream=True,
                                      timeouts=FIRST_TOKEN_FIRST, policy=QUICK_POLICY)
    assert stream.model == "claude"
    assert [a.outcome for a in stream.attempts] == ["first_token_timeout", "connect_error", "ok"]
    chunks = await collect(stream)
    assert text_of(chunks) == "Echo from fake-claude-1: hello there"
    assert {c["model"] for c in chunks} == {"claude"}
    assert stream.usage is not None and stream.completed


@pytest.mark.parametrize("behaviour", ["malformed:after=0", "sse_error:after=0", "503"])
async def test_failover_stream_escalates_on_early_breakage(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard, behaviour: str) -> None:
    fake.script("fake-gpt-1", behaviour, behaviour)
    stream = await call_with_failover(req(), [gpt, gpt_big], registry, stream=True,
                                      timeouts=FAST, policy=QUICK_POLICY)
    assert stream.model == "gpt-big"
    assert text_of(await collect(stream)) == "Echo from gpt-big: hello there"


@pytest.mark.parametrize("behaviour", ["cut:after=2", "malformed:after=2", "nofinish:after=2",
                                       "sse_error:after=2"])
async def test_failover_stream_never_switches_after_the_first_byte(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard, behaviour: str) -> None:
    health = HealthTracker()
    fake.script("fake-gpt-1", behaviour)
    stream = await call_with_failover(req(), [gpt, gpt_big], registry, stream=True,
                                      timeouts=FAST, policy=QUICK_POLICY, health=health)
    assert stream.model == "gpt-fast"
    got, error = await collect_until_error(stream)
    assert isinstance(error, StreamBroken) and error.after_first_byte
    assert not error.retryable and not error.escalate
    assert text_of(got).startswith("Echo ")
    assert len(fake.requests()) == 1  # no second model was tried
    assert health.snapshot()["models"]["gpt-fast"]["failures"] == 1


async def test_failover_context_length_moves_to_a_larger_model(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard) -> None:
    fake.script("fake-gpt-1", "context_length")
    result = await call_with_failover(req(), [gpt, gpt_big], registry, timeouts=FAST,
                                      policy=QUICK_POLICY)
    assert result.model == "gpt-big" and len(fake.requests()) == 2


async def test_failover_content_filter_stops_with_the_upstream_400(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard) -> None:
    fake.script("fake-gpt-1", "content_filter")
    with pytest.raises(FailoverError) as info:
        await call_with_failover(req(), [gpt, gpt_big], registry, timeouts=FAST,
                                 policy=QUICK_POLICY)
    assert info.value.status == 400
    assert info.value.to_openai_error()["error"]["code"] == "content_filter"
    assert len(fake.requests()) == 1


async def test_failover_gives_up_with_every_attempt_listed(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        claude: ModelCard) -> None:
    fake.script("fake-gpt-1", "500", "reset")
    fake.script("fake-claude-1", "529", "529")
    with pytest.raises(FailoverError) as info:
        await call_with_failover(req(), [gpt, claude], registry, timeouts=FAST,
                                 policy=QUICK_POLICY)
    assert info.value.status == 502
    assert [(a.model, a.outcome) for a in info.value.attempts] == [
        ("gpt-fast", "server_error"), ("gpt-fast", "connect_error"),
        ("claude", "server_error"), ("claude", "server_error")]


async def test_failover_skips_a_model_whose_circuit_is_open(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        gpt_big: ModelCard) -> None:
    health = HealthTracker(HealthConfig(failure_threshold=2, cooldown_s=60))
    fake.script("fake-gpt-1", "500", "500")
    first = await call_with_failover(req(), [gpt, gpt_big], registry, timeouts=FAST,
                                     policy=QUICK_POLICY, health=health)
    assert first.model == "gpt-big"
    assert health.snapshot()["models"]["gpt-fast"]["circuit"] == "open"
    fake.reset()
    second = await call_with_failover(req(), [gpt, gpt_big], registry, timeouts=FAST,
                                      policy=QUICK_POLICY, health=health)
    assert second.model == "gpt-big"
    assert [r["body"]["model"] for r in fake.requests()] == ["gpt-big"]


# ---- tool-call ids across providers ------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}]


def conversation(call_id: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "find cats"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "search", "arguments": '{"query": "cats"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "3 cats found"},
    ]


@pytest.mark.parametrize("call_id", ["call_Xy12abCD34", "functions.search:0"])
async def test_tool_call_ids_survive_an_openai_to_anthropic_switch(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        claude: ModelCard, call_id: str) -> None:
    fake.script("fake-gpt-1", "500", "500")
    body = req(messages=conversation(call_id), tools=TOOLS)
    result = await call_with_failover(body, [gpt, claude], registry, timeouts=FAST,
                                      policy=QUICK_POLICY)
    assert result.model == "claude"
    # The fake Anthropic API accepted it: each tool_result answered the previous tool_use.
    assert result.body["choices"][0]["message"]["content"].startswith("Echo from fake-claude-1")
    sent = fake.requests()[-1]["body"]["messages"]
    tool_use = sent[1]["content"][0]
    tool_result = sent[2]["content"][0]
    assert tool_use["type"] == "tool_use" and tool_result["type"] == "tool_result"
    assert tool_use["id"] == tool_result["tool_use_id"]
    if call_id.startswith("call_"):
        assert tool_use["id"] == call_id  # already valid for Anthropic: unchanged
    # The client's own history is never rewritten.
    assert body["messages"][1]["tool_calls"][0]["id"] == call_id


async def test_tool_call_ids_survive_an_anthropic_to_openai_switch(
        fake: FakeProviderProcess, registry: ProviderRegistry, gpt: ModelCard,
        claude: ModelCard) -> None:
    # Turn 1 on Claude: it asks for a tool; its toolu_ id goes to the client as is.
    first = await call_with_failover(req(messages=[{"role": "user", "content": "find cats"}],
                                         tools=TOOLS), [claude], registry, timeouts=FAST)
    [call] = first.body["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("toolu_")
    # Turn 2: Claude is down, the OpenAI-compatible model continues the same conversation.
    fake.script("fake-claude-1", "529", "529")
    history = [{"role": "user", "content": "find cats"},
               {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": call["id"], "content": "3 cats"}]
    second = await call_with_failover(req(messages=history, tools=TOOLS), [claude, gpt],
                                      registry, timeouts=FAST, policy=QUICK_POLICY)
    assert second.model == "gpt-fast"
    sent = fake.requests()[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call["id"]
    assert sent[2]["tool_call_id"] == call["id"]
    assert "tool said" in second.body["choices"][0]["message"]["content"]
