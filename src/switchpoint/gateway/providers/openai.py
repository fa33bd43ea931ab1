"""Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, Mistral, Groq, DeepSeek,
OpenRouter, vLLM, Ollama, ...; see :mod:`switchpoint.known_providers`).

The request body goes upstream untouched except ``model`` (the card's ``upstream_model``, else
its name) and, for streams, ``stream: true`` plus, where the model accepts it
(:func:`~switchpoint.known_providers.stream_usage_of`), ``stream_options.include_usage: true``
so the final chunk carries token usage; where it does not, ``stream_options`` is left out. A
model that answers the field with the tell-tale 400/422 (an error naming ``stream_options``) is
asked again at once without it, and is not asked with it again while the process lives.

The URL is the card's ``base_url``, else its provider's. The key is read, per call, from the
variable :func:`~switchpoint.known_providers.api_key_env_of` names (``api_key_env``, else the
provider's usual one); a card that names none sends no ``Authorization``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from switchpoint._messages import cut, json_quoted
from switchpoint._redact import remember
from switchpoint.catalog import ModelCard
from switchpoint.errors import (
    BadRequest,
    MalformedResponse,
    MissingApiKey,
    StreamBroken,
    UnsupportedRequest,
)
from switchpoint.gateway.parsing import answers_asked
from switchpoint.gateway.providers._http import ClientPool, post_json, stream_chunks
from switchpoint.gateway.providers.base import (
    ProviderResponse,
    ReportedSoFar,
    Timeouts,
    answered_error,
    choices_problem,
    chunks_of,
    classify_stream_error,
    is_content_chunk,
    shown_data,
    stream_of_answer,
    upstream_json,
)
from switchpoint.gateway.providers.sse import SSEEvent
from switchpoint.known_providers import (
    KNOWN_PROVIDERS,
    api_key_env_of,
    api_key_problem,
    base_url_of,
    stream_usage_of,
)

log = logging.getLogger("switchpoint.gateway")

DEFAULT_BASE_URL = KNOWN_PROVIDERS["openai"].base_url


def api_key(card: ModelCard, env: Mapping[str, str]) -> str | None:
    """The card's key from ``env``, without the whitespace around it (a secret file's last
    newline); ``None`` when the card needs none (see
    :func:`~switchpoint.known_providers.api_key_env_of`).

    Raises :class:`MissingApiKey` (naming the variable) when the variable is unset or empty,
    or holds a key no request header can carry
    (:func:`~switchpoint.known_providers.api_key_problem`).
    """
    var = api_key_env_of(card)
    if var is None:
        return None
    raw = env.get(var)
    if raw:
        remember(raw)  # never quoted back from an upstream's answer
    key = (raw or "").strip()
    if not key:
        raise MissingApiKey(var, model=card.name)
    problem = api_key_problem(key)
    if problem is not None:
        raise MissingApiKey(var, model=card.name, problem=problem)
    remember(key)
    return key


def target_url(card: ModelCard, default: str | None = None) -> str:
    """The card's base URL without a trailing slash (``default`` when neither the card nor its
    provider has one). Raises :class:`UnsupportedRequest` when there is none at all."""
    base = base_url_of(card) or default
    if base is None:
        raise UnsupportedRequest(f"no base_url: provider {json_quoted(card.provider)} has no "
                                 "default URL; set the model's base_url", model=card.name)
    return base.rstrip("/")


def endpoint_url(base: str, path: str) -> str:
    """``base`` (a model's URL, :func:`target_url`) with ``path`` added to its path and its
    query kept after them: ``https://host/openai/v1?api-version=2024-06-01`` asks
    ``https://host/openai/v1/chat/completions?api-version=2024-06-01``."""
    if "?" not in base and "#" not in base:
        return f"{base}{path}"
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + path,
                                                  fragment=""))


def upstream_body(request: Mapping[str, Any], card: ModelCard, *, stream: bool,
                  stream_usage: bool = True) -> dict[str, Any]:
    """The body sent upstream: the client's request with only ``model`` and streaming changed.

    With ``stream_usage`` a stream asks for ``stream_options.include_usage``; without it the
    body carries no ``stream_options`` at all (the model does not accept the field).
    """
    body = dict(request)
    body["model"] = card.upstream_model or card.name
    if stream:
        body["stream"] = True
        options = body.get("stream_options")
        if stream_usage:
            body["stream_options"] = {**(options if isinstance(options, Mapping) else {}),
                                      "include_usage": True}
        else:
            body.pop("stream_options", None)
    else:
        body.pop("stream_options", None)
        if "stream" in body:
            body["stream"] = False
    return body


def rejects_stream_options(error: BadRequest) -> bool:
    """Is ``error`` an upstream refusing the ``stream_options`` field (a 400 or 422 whose body
    names it: OpenAI's "Unrecognized request argument", pydantic's "extra_forbidden", ...)?"""
    if error.status not in (400, 422):
        return False
    body = error.body
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return "stream_options" in f"{text} {error.message}".lower()


class OpenAIChunkDecoder:
    """OpenAI SSE events → chunks; ``data: [DONE]`` ends the stream. ``answers``: how many
    the request asked for (its ``n``), which its chunks' choices number."""

    # (its reasoning comes in its chunks: nothing is reported beside them)
    reported: ReportedSoFar | None = None

    def __init__(self, model: str, answers: int = 1) -> None:
        self.model = model
        self.answers = answers
        self.done = False
        self._content_seen = False

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        data = event.data.strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = upstream_json(data)
        except (ValueError, RecursionError) as exc:
            raise StreamBroken(f"the upstream sent a malformed chunk ({cut(str(exc), 200)}): "
                               f"{shown_data(data)}", model=self.model) from exc
        if not isinstance(chunk, dict):
            raise StreamBroken("the upstream sent a chunk that is not an object: "
                               f"{shown_data(data)}", model=self.model)
        if event.event == "error" or chunk.get("error"):
            raise classify_stream_error(chunk, model=self.model,
                                        after_first_byte=self._content_seen)
        problem = choices_problem(chunk.get("choices"), self.answers, whole=False)
        if problem is not None:
            # (It carries the chunk, whose usage, when it reports one, its try is charged.)
            raise StreamBroken(f"the upstream sent a malformed chunk ({problem}): "
                               f"{shown_data(data)}", model=self.model, body=chunk,
                               after_first_byte=self._content_seen)
        self._content_seen = self._content_seen or is_content_chunk(chunk)
        return [chunk]

    def whole(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(body.get("choices"), list):
            return []
        check_choices(body, self.answers, model=self.model)
        return stream_of_answer(body)


def check_choices(body: Mapping[str, Any], answers: int, *, model: str,
                  status: int | None = None) -> None:
    """Refuse a whole answer whose choices do not number the ``answers`` asked for
    (:func:`~switchpoint.gateway.providers.base.choices_problem`: an index of ``1e30``, one
    repeated), or that holds none (an empty ``choices`` list): a :class:`MalformedResponse`,
    which fails over as any malformed answer does. Either is a broken answer the upstream
    generated and may have billed, so its try is charged as one that broke before its first
    content is, at the usage it reports when it reports one."""
    choices = body.get("choices")
    if isinstance(choices, list) and not choices:
        # (A 200 the upstream generated and may have billed: its try is charged as a stream
        # that broke before its first content is, at its usage when it reports one.)
        raise MalformedResponse("the answer holds no choice (its 'choices' list is empty), so "
                                "there is no answer to pass on", model=model, status=status,
                                body=dict(body), generated=True)
    problem = choices_problem(choices, answers, whole=True)
    if problem is not None:
        raise MalformedResponse(f"the answer's choices are malformed: {problem}", model=model,
                                status=status, body=dict(body), generated=True)


def checked_answer(data: dict[str, Any], status: int, *, answers: int,
                   model: str) -> dict[str, Any]:
    """The ``status`` answer ``data`` when it is a chat completion whose choices number the
    ``answers`` asked for (:func:`check_choices`); else the error saying what it is (an
    upstream's error in its place, or a body without a ``choices`` list)."""
    if not isinstance(data.get("choices"), list):
        raise answered_error(data, status, model=model) or (
            MalformedResponse("the answer has no 'choices' list", model=model, status=status,
                              body=data))
    check_choices(data, answers, model=model, status=status)
    return data


class OpenAIProvider:
    """The OpenAI-compatible adapter. ``env`` defaults to ``os.environ`` (read at call time);
    ``default_base_url`` serves cards whose provider has no URL of its own (none by default).

    ``no_stream_usage`` holds the models that refused ``stream_options`` (for this process).
    """

    def __init__(self, pool: ClientPool, *, env: Mapping[str, str] | None = None,
                 default_base_url: str | None = None) -> None:
        self.pool = pool
        self._env = env
        self.default_base_url = default_base_url
        self.no_stream_usage: set[str] = set()

    def _target(self, card: ModelCard, *, stream: bool) -> tuple[str, str, dict[str, str]]:
        base = target_url(card, self.default_base_url)
        headers = {"content-type": "application/json",
                   "accept": "text/event-stream" if stream else "application/json"}
        key = api_key(card, os.environ if self._env is None else self._env)
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return base, endpoint_url(base, "/chat/completions"), headers

    def stream_usage(self, card: ModelCard) -> bool:
        """Whether a stream to ``card`` asks for ``stream_options.include_usage``."""
        return stream_usage_of(card) and card.name not in self.no_stream_usage

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        base, url, headers = self._target(card, stream=False)
        data, response, latency_ms = await post_json(
            self.pool.get(base), url, upstream_body(request, card, stream=False), headers,
            timeouts, model=card.name, answer=functools.partial(
                checked_answer, answers=answers_asked(request), model=card.name))
        return ProviderResponse(body=data, model=card.name, status=response.status_code,
                                headers=dict(response.headers), latency_ms=latency_ms)

    def stream(self, request: Mapping[str, Any], card: ModelCard,
               timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        return chunks_of(self.stream_batches(request, card, timeouts))

    async def stream_batches(self, request: Mapping[str, Any], card: ModelCard,
                             timeouts: Timeouts) -> AsyncGenerator[list[dict[str, Any]], None]:
        usage = self.stream_usage(card)
        started = False
        first = self._stream(request, card, timeouts, usage=usage)
        async with aclosing(first):
            try:
                async for chunks in first:
                    started = True
                    yield chunks
                return
            except BadRequest as exc:
                if started or not usage or not rejects_stream_options(exc):
                    raise
        # The model refused stream_options: ask again without it, and never again with it.
        self.no_stream_usage.add(card.name)
        log.warning("model %s refused stream_options.include_usage; streaming to it without "
                    "the field from now on (set stream_usage: false in its catalog entry to "
                    "skip the first try)", card.name)
        again = self._stream(request, card, timeouts, usage=False)
        async with aclosing(again):
            async for chunks in again:
                yield chunks

    def _stream(self, request: Mapping[str, Any], card: ModelCard, timeouts: Timeouts, *,
                usage: bool) -> AsyncGenerator[list[dict[str, Any]], None]:
        base, url, headers = self._target(card, stream=True)
        body = upstream_body(request, card, stream=True, stream_usage=usage)
        return stream_chunks(self.pool.get(base), url, body, headers, timeouts,
                             OpenAIChunkDecoder(card.name, answers_asked(request)),
                             model=card.name)
