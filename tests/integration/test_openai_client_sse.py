"""The official ``openai`` client against what the gateway will emit.

A minimal relay (the shape the ``POST /v1/chat/completions`` route will take) runs in a thread
on loopback: it calls ``call_with_failover`` against the fake provider process and writes
``sse_body`` output. The client must see a failover as one clean answer, and a stream that
breaks after its first byte as an ``openai.APIError`` — never as a clean end.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from switchpoint.catalog import ModelCard
from switchpoint.errors import FailoverError
from switchpoint.gateway.failover import RetryPolicy, call_with_failover
from switchpoint.gateway.providers import ClientPool, ProviderRegistry, Timeouts
from switchpoint.server.streaming import sse_body
from tests.fakes.fake_provider import FakeProviderProcess, head_bytes, read_request
from tests.integration.servers import loopback_socket

ENV = {"FAKE_OPENAI_KEY": "sk-openai-test", "FAKE_ANTHROPIC_KEY": "sk-ant-test"}
TIMEOUTS = Timeouts(connect_s=2.0, read_s=1.0, first_token_s=1.0)
POLICY = RetryPolicy(max_attempts_per_model=2, backoff_base_s=0.01, backoff_cap_s=0.02)
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]


class Relay:
    """A tiny OpenAI-compatible endpoint over call_with_failover, in its own event loop."""

    def __init__(self, candidates: list[ModelCard]) -> None:
        self.candidates = candidates
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._loop.run_forever()

    async def _start(self) -> None:
        self.pool = ClientPool()
        self.registry = ProviderRegistry(self.pool, env=ENV)
        self.server = await asyncio.start_server(self._handle, sock=loopback_socket())
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader)
            if request is None:
                return
            body = request.json or {}
            stream = bool(body.get("stream"))
            try:
                result = await call_with_failover(body, self.candidates, self.registry,
                                                  stream=stream, timeouts=TIMEOUTS,
                                                  policy=POLICY)  # type: ignore[call-overload]
            except FailoverError as exc:
                data = json.dumps(exc.to_openai_error()).encode()
                writer.write(head_bytes(exc.status, {
                    "content-type": "application/json", "content-length": str(len(data)),
                    "connection": "close"}) + data)
                await writer.drain()
                return
            headers = {"x-switchpoint-model": result.model, "connection": "close"}
            if not stream:
                data = json.dumps(result.body).encode()
                writer.write(head_bytes(200, {**headers, "content-type": "application/json",
                                              "content-length": str(len(data))}) + data)
                await writer.drain()
                return
            writer.write(head_bytes(200, {**headers, "content-type": "text/event-stream",
                                          "transfer-encoding": "chunked"}))
            async for piece in sse_body(aiter(result)):
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()

    def __enter__(self) -> Relay:
        self._thread.start()
        assert self._ready.wait(10), "relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            await self.pool.aclose()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="module")
def relay(fake: FakeProviderProcess) -> Iterator[Relay]:
    cards = [ModelCard("gpt-fast", base_url=fake.openai_base_url, api_key_env="FAKE_OPENAI_KEY",
                       upstream_model="fake-gpt-1"),
             ModelCard("claude", provider="anthropic", base_url=fake.url,
                       api_key_env="FAKE_ANTHROPIC_KEY", upstream_model="fake-claude-1")]
    with Relay(cards) as server:
        yield server


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-gateway", max_retries=0, timeout=10)


def test_failover_is_invisible_to_a_streaming_client(fake: FakeProviderProcess,
                                                     relay: Relay) -> None:
    fake.script("fake-gpt-1", "503", "reset")
    stream = client(relay.base_url).chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo from fake-claude-1: hello there"
    assert {c.model for c in chunks} == {"claude"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_plain_answer_names_the_model_that_answered(fake: FakeProviderProcess,
                                                    relay: Relay) -> None:
    fake.script("fake-gpt-1", "500", "500")
    raw = client(relay.base_url).chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES)
    assert raw.headers["x-switchpoint-model"] == "claude"
    completion = raw.parse()
    assert completion.model == "claude"
    assert completion.choices[0].message.content == "Echo from fake-claude-1: hello there"


@pytest.mark.parametrize("behaviour", ["cut:after=2", "nofinish:after=2", "malformed:after=2",
                                       "sse_error:after=2"])
def test_a_stream_broken_after_the_first_byte_raises_in_the_sync_client(
        fake: FakeProviderProcess, relay: Relay, behaviour: str) -> None:
    fake.script("fake-gpt-1", behaviour)
    stream = client(relay.base_url).chat.completions.create(model="auto", messages=MESSAGES,
                                                            stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received, "some of the answer had reached the client"
    assert "gpt-fast" in info.value.message
    assert len(fake.requests()) == 1  # no switch after the first byte


def test_a_stream_broken_after_the_first_byte_raises_in_the_async_client(
        fake: FakeProviderProcess, relay: Relay) -> None:
    fake.script("fake-gpt-1", "cut:after=3")

    async def consume() -> list[Any]:
        aclient = openai.AsyncOpenAI(base_url=relay.base_url, api_key="k", max_retries=0,
                                     timeout=10)
        received = []
        stream = await aclient.chat.completions.create(model="auto", messages=MESSAGES,
                                                       stream=True)
        async for chunk in stream:
            received.append(chunk)
        return received

    with pytest.raises(openai.APIError):
        asyncio.run(consume())


def test_without_the_error_event_the_client_would_see_a_clean_end(
        fake: FakeProviderProcess) -> None:
    """Why the error event matters: a stream that just stops, unfinished, looks finished."""
    fake.script("fake-gpt-1", "nofinish:after=2")
    stream = client(fake.openai_base_url).chat.completions.create(
        model="fake-gpt-1", messages=MESSAGES, stream=True)
    assert len(list(stream)) > 0  # no exception: a truncated answer would pass as complete


def test_failover_errors_map_to_openai_exceptions(fake: FakeProviderProcess,
                                                  relay: Relay) -> None:
    fake.script("fake-gpt-1", "content_filter")
    with pytest.raises(openai.BadRequestError) as bad:
        client(relay.base_url).chat.completions.create(model="auto", messages=MESSAGES)
    assert bad.value.code == "content_filter"
    fake.script("fake-gpt-1", "429", "429")
    fake.script("fake-claude-1", "429", "429")
    with pytest.raises(openai.RateLimitError):
        client(relay.base_url).chat.completions.create(model="auto", messages=MESSAGES)
