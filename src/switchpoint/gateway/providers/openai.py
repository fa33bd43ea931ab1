"""Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, OpenRouter, DeepSeek, vLLM,
Ollama, ...).

The request body goes upstream untouched except ``model`` (the card's ``upstream_model``, else
its name) and, for streams, ``stream: true`` plus ``stream_options.include_usage: true`` so the
final chunk carries token usage. The key is read, per call, from the environment variable the
card names in ``api_key_env``; a card without ``api_key_env`` sends no ``Authorization``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from switchpoint.catalog import ModelCard
from switchpoint.errors import MalformedResponse, MissingApiKey, StreamBroken
from switchpoint.gateway.providers._http import ClientPool, post_json, stream_chunks
from switchpoint.gateway.providers.base import (
    ProviderResponse,
    Timeouts,
    classify_stream_error,
    is_content_chunk,
)
from switchpoint.gateway.providers.sse import SSEEvent
from switchpoint.gateway.redact import redact, remember

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def api_key(card: ModelCard, env: Mapping[str, str]) -> str | None:
    """The card's key from ``env``; ``None`` when the card names no variable.

    Raises :class:`MissingApiKey` (naming the variable) when it names one that is unset or empty.
    """
    if not card.api_key_env:
        return None
    key = env.get(card.api_key_env)
    if not key:
        raise MissingApiKey(card.api_key_env, model=card.name)
    remember(key)  # never quoted back from an upstream's answer
    return key


def upstream_body(request: Mapping[str, Any], card: ModelCard, *, stream: bool) -> dict[str, Any]:
    """The body sent upstream: the client's request with only ``model`` and streaming changed."""
    body = dict(request)
    body["model"] = card.upstream_model or card.name
    if stream:
        body["stream"] = True
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, Mapping) else {}),
                                  "include_usage": True}
    else:
        body.pop("stream_options", None)
        if "stream" in body:
            body["stream"] = False
    return body


class OpenAIChunkDecoder:
    """OpenAI SSE events → chunks; ``data: [DONE]`` ends the stream."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self._content_seen = False

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        data = event.data.strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise StreamBroken(f"the upstream sent a malformed chunk: {redact(data[:200])!r}",
                               model=self.model) from exc
        if not isinstance(chunk, dict):
            raise StreamBroken("the upstream sent a chunk that is not an object: "
                               f"{redact(data[:200])!r}", model=self.model)
        if event.event == "error" or chunk.get("error"):
            raise classify_stream_error(chunk, model=self.model,
                                        after_first_byte=self._content_seen)
        self._content_seen = self._content_seen or is_content_chunk(chunk)
        return [chunk]


class OpenAIProvider:
    """The OpenAI-compatible adapter. ``env`` defaults to ``os.environ`` (read at call time)."""

    def __init__(self, pool: ClientPool, *, env: Mapping[str, str] | None = None,
                 default_base_url: str = DEFAULT_BASE_URL) -> None:
        self.pool = pool
        self._env = env
        self.default_base_url = default_base_url

    def _target(self, card: ModelCard, *, stream: bool) -> tuple[str, str, dict[str, str]]:
        base = (card.base_url or self.default_base_url).rstrip("/")
        headers = {"content-type": "application/json",
                   "accept": "text/event-stream" if stream else "application/json"}
        key = api_key(card, os.environ if self._env is None else self._env)
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return base, f"{base}/chat/completions", headers

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        base, url, headers = self._target(card, stream=False)
        data, response, latency_ms = await post_json(
            self.pool.get(base), url, upstream_body(request, card, stream=False), headers,
            timeouts, model=card.name)
        if not isinstance(data.get("choices"), list):
            raise MalformedResponse("the answer has no 'choices' list", model=card.name,
                                    status=response.status_code, body=data)
        return ProviderResponse(body=data, model=card.name, status=response.status_code,
                                headers=dict(response.headers), latency_ms=latency_ms)

    async def stream(self, request: Mapping[str, Any], card: ModelCard,
                     timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        base, url, headers = self._target(card, stream=True)
        chunks = stream_chunks(self.pool.get(base), url, upstream_body(request, card, stream=True),
                               headers, timeouts, OpenAIChunkDecoder(card.name), model=card.name)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
