"""What every provider adapter promises, and the errors it may raise.

A :class:`Provider` turns an OpenAI chat request into a call to one upstream model (a
:class:`~switchpoint.catalog.ModelCard`) and gives back an OpenAI ``chat.completion`` body, or a
stream of OpenAI ``chat.completion.chunk`` dicts, whatever the upstream speaks.

Every failure is a :class:`~switchpoint.errors.ProviderError` subclass that says what went wrong
and whether to retry or escalate (the table is in :mod:`switchpoint.errors`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Protocol, TypeGuard, runtime_checkable

from switchpoint._json import DuplicateKeyError, nests_deeper, unique_keys
from switchpoint._messages import SECRET_REACH, cut, got, json_quoted
from switchpoint._redact import redact, redact_url, redact_value
from switchpoint.catalog import ModelCard, text_bytes
from switchpoint.errors import (
    AuthError,
    BadRequest,
    ContentFiltered,
    ContextLengthExceeded,
    MalformedResponse,
    ProviderError,
    RateLimited,
    ServerError,
    StreamBroken,
)
from switchpoint.gateway.parsing import MAX_DEPTH, TOO_DEEP

# Bytes of an upstream error body kept on the exception (enough for any JSON error envelope),
# and read: as much again as a secret reaches past them, so a key the cut would split is found
# whole and redacted before the cut (see decode_body).
MAX_ERROR_BODY = 16_384
ERROR_BODY_READ = MAX_ERROR_BODY + SECRET_REACH
# Characters of the upstream's own error message quoted in a ProviderError's message.
MAX_ERROR_MESSAGE = 500


@dataclass(frozen=True)
class Timeouts:
    """How long one upstream call may take, in seconds.

    ``connect_s`` bounds opening the TCP/TLS connection; ``read_s`` bounds any silence while
    waiting for headers or the next bytes; ``first_token_s`` bounds, for streams, the time from
    sending the request to the first chunk that carries content (text, a tool call or a
    finish reason). ``write_s`` and ``pool_s`` bound sending the body and waiting for a pooled
    connection. The sizes bound what one call may hold or relay: a whole answer, streamed or
    not (``max_response_bytes``), a plain (not streamed) answer as it is read, inflated, before
    its JSON is read at once (``max_plain_answer_bytes``, and ``max_response_bytes`` when it
    is the smaller: :attr:`plain_answer_limit`), and one line of a stream
    (``max_sse_line_bytes``); past them the call fails with
    :class:`~switchpoint.errors.ResponseTooLarge`. ``metadata_hosts``
    bounds where it may connect: false (a model registered at run time while the config's
    ``gateway.allow_registered_metadata_hosts`` is false), each new connection looks the host
    name up itself, within ``connect_s``, is refused (a connect error, nothing sent) when an
    address it resolves to is link-local or a cloud metadata service's
    (:func:`~switchpoint.registration.internal_address`), and goes to an address it checked;
    ``nat64_prefixes`` (the config's ``gateway.nat64_prefixes``) are the network's own NAT64
    prefixes, an address under which is judged by the IPv4 address it carries.
    """

    connect_s: float = 5.0
    read_s: float = 60.0
    first_token_s: float = 30.0
    write_s: float = 10.0
    pool_s: float = 10.0
    max_response_bytes: int = 32 << 20
    max_sse_line_bytes: int = 1 << 20
    max_plain_answer_bytes: int = 4 << 20
    metadata_hosts: bool = True
    nat64_prefixes: tuple[ipaddress.IPv6Network, ...] = ()

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "first_token_s", "write_s", "pool_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Timeouts.{name} must be a finite number > 0{got(value)}")
        for name in ("max_response_bytes", "max_sse_line_bytes", "max_plain_answer_bytes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"Timeouts.{name} must be an integer > 0{got(value)}")
        if not isinstance(self.metadata_hosts, bool):
            raise ValueError(f"Timeouts.metadata_hosts must be true or false"
                             f"{got(self.metadata_hosts)}")
        if not (isinstance(self.nat64_prefixes, tuple) and all(
                isinstance(p, ipaddress.IPv6Network) for p in self.nat64_prefixes)):
            raise ValueError(f"Timeouts.nat64_prefixes must be a tuple of ipaddress."
                             f"IPv6Network{got(self.nat64_prefixes)}")

    @property
    def plain_answer_limit(self) -> tuple[int, str]:
        """The bound of a plain answer's bytes (read whole, then its JSON read at once, which
        holds the event loop), and the setting that sets it."""
        if self.max_plain_answer_bytes <= self.max_response_bytes:
            return self.max_plain_answer_bytes, "gateway.max_plain_answer_bytes"
        return self.max_response_bytes, "gateway.max_response_bytes"


@dataclass(frozen=True)
class TokenUsage:
    """Token counts reported by the upstream (OpenAI names)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}

    @classmethod
    def from_openai(cls, usage: object) -> TokenUsage | None:
        """Read an OpenAI ``usage`` object; ``None`` if it is missing or not one: counts that
        are not whole numbers from 0 to :data:`MAX_REPORTED_TOKENS` are an upstream's error,
        and an answer whose usage is unknown is charged an estimate of what it used."""
        if not isinstance(usage, Mapping):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not (is_token_count(prompt) and is_token_count(completion)):
            return None
        return cls(prompt, completion)


#: The most tokens an upstream may report for one side of one answer (beyond any context
#: window): a larger, negative or fractional count is not believed.
MAX_REPORTED_TOKENS = 10_000_000


def is_token_count(value: object) -> TypeGuard[int]:
    return (isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value <= MAX_REPORTED_TOKENS)


def believed(usage: TokenUsage | None, card: ModelCard, answers: int = 1
             ) -> TokenUsage | None:
    """``usage`` when ``card``'s model could have used it, else None (not believed: the
    answer is charged an estimate of what it used, never past its worst case): a prompt of
    no more tokens than its context window holds, and no more answer tokens than
    ``answers`` answers each filling that window (what the worst case held for such a
    request counts: see :func:`~switchpoint.governance.governor.worst_cost`). A model without
    a context window is held to :data:`MAX_REPORTED_TOKENS` alone."""
    window = card.context_window
    if usage is None or window is None:
        return usage
    if usage.prompt_tokens > window or usage.completion_tokens > window * max(answers, 1):
        return None
    return usage


def shown_usage(body: dict[str, Any], counted: TokenUsage | None) -> bool:
    """Make the ``usage`` of an answer or of a stream's chunk, ``body``, the one the gateway
    counted (``counted``: what :func:`believed` made of it), so a client reads no count the
    gateway does not believe: believed, the upstream's object stays as it sent it (its
    details too; the gateway sets its ``cost``), but a ``total_tokens`` that is no whole number
    from 0 to twice :data:`MAX_REPORTED_TOKENS` is written as the sum of the two counts; not
    believed (``10**30``, which a client holding counts in 64 bits cannot read, ``-2.5``, more
    than the model could have used), it is taken out, as nothing of it is believed: the
    answer is charged an estimate and logged with its tokens unknown. False when it took one
    out; true otherwise (no usage, or a ``null`` one, is left as it is)."""
    usage = body.get("usage")
    if usage is None:
        return True
    if counted is None:
        del body["usage"]
        return False
    total = usage.get("total_tokens")
    if not (isinstance(total, int) and not isinstance(total, bool)
            and 0 <= total <= 2 * MAX_REPORTED_TOKENS):
        usage["total_tokens"] = counted.total_tokens
    return True


def usage_of(chunk: Mapping[str, Any]) -> TokenUsage | None:
    """The usage a chunk or response body carries, if any (the final chunk of a stream)."""
    return TokenUsage.from_openai(chunk.get("usage"))


def is_content_chunk(chunk: Mapping[str, Any]) -> bool:
    """True when a chunk carries something the client will see as an answer.

    A role-only opening chunk (``{"role": "assistant", "content": ""}``) is not content; text,
    a refusal, a tool call or a finish reason is.
    """
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, Mapping) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("refusal")
            or delta.get("function_call")
        ):
            return True
    return False


_PLAIN_DELTA = frozenset({"role", "content"})


def answer_bytes(chunk: Mapping[str, Any], part: str = "delta") -> int:
    """How many bytes of answer (:func:`~switchpoint.catalog.text_bytes`) a chunk carries over
    its choices' ``delta`` (``part``: ``"message"`` for a whole answer's): the text
    (``content``, ``refusal``), the reasoning some servers send beside it, billed as answer
    (``reasoning_content``, as DeepSeek and vLLM name it, else ``reasoning``, as others do:
    one of them, as a server sending both sends the same text twice), and the arguments of
    the tool calls (``tool_calls``, a legacy ``function_call``). What an answer without usage
    to believe is estimated to have written from (see
    :func:`~switchpoint.gateway.failover.answer_use`)."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return 0
    total = 0
    for choice in choices:
        delta = choice.get(part) if isinstance(choice, Mapping) else None
        if not isinstance(delta, Mapping):
            continue
        content = delta.get("content")
        if isinstance(content, str):
            total += len(content) if content.isascii() else text_bytes(content)
        if delta.keys() <= _PLAIN_DELTA:  # (the usual piece: no refusal, no call)
            continue
        calls = delta.get("tool_calls")
        functions = [call.get("function") for call in calls if isinstance(call, Mapping)] \
            if isinstance(calls, list) else []
        functions.append(delta.get("function_call"))
        reasoning = delta.get("reasoning_content")
        if not isinstance(reasoning, str):
            reasoning = delta.get("reasoning")
        texts = [delta.get("refusal"), reasoning,
                 *(f.get("arguments") for f in functions if isinstance(f, Mapping))]
        total += sum(text_bytes(text) for text in texts if isinstance(text, str))
    return total


def choices_problem(choices: object, answers: int, *, whole: bool) -> str | None:
    """Why the ``choices`` of an upstream's whole answer (``whole``) or of one chunk of its
    stream do not number the ``answers`` the request asked for (its ``n``), or None: each
    choice's ``index`` is a whole number from 0 to ``answers`` - 1, no two of one answer or
    chunk alike (a chunk of a stream carries a piece of each answer it names). A choice without
    an index is numbered by its place in a whole answer, 0 in a chunk; one that is not an
    object is left to the rules of what it holds."""
    if not isinstance(choices, list):
        return None
    seen: set[int] = set()
    for at, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            continue
        index = choice.get("index", at if whole else 0)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < answers:
            numbered = "0" if answers == 1 else f"0 to {answers - 1}"
            return (f"choice {at} has the index {json_quoted(index, 40)}, where the request "
                    f"asked for {answers} answer{'s' if answers > 1 else ''}, numbered "
                    f"{numbered}")
        if index in seen:
            return f"two choices have the index {index}, where each answer is numbered once"
        seen.add(index)
    return None


@dataclass(frozen=True)
class ReportedSoFar:
    """What an upstream reported of a stream's use before its end, beside the answer it
    relays: ``prompt_tokens``, the prompt's exact count (None: not reported);
    ``completion_tokens``, the least the answer has been counted at; ``unrelayed_bytes``, the
    bytes (:func:`~switchpoint.catalog.text_bytes`) it generated that are not relayed (the
    Messages API's thinking), billed all the same. What an answer that ends without its usage
    to believe is estimated from, beside the bytes it relayed."""

    prompt_tokens: int | None = None
    completion_tokens: int = 0
    unrelayed_bytes: int = 0


class CountedChunk(dict[str, Any]):
    """A chunk as any other on the wire, carrying what its upstream has reported of the
    stream's use so far (``reported``, :class:`ReportedSoFar`), counted up to it."""

    def __init__(self, chunk: Mapping[str, Any], reported: ReportedSoFar) -> None:
        super().__init__(chunk)
        self.reported = reported


class WholeAnswerChunk(dict[str, Any]):
    """The first chunk of a stream made from a whole answer: an upstream asked for a stream
    answered with one complete JSON answer instead (see :func:`stream_of_answer`). It is a
    chunk as any other on the wire; the gateway notes in its request log that the answer came
    whole."""


class _CountedWholeAnswerChunk(CountedChunk, WholeAnswerChunk):
    """The first chunk of a stream made from a whole answer, carrying what its upstream
    reported beside its usage."""


def stream_of_answer(answer: Mapping[str, Any], reported: ReportedSoFar | None = None
                     ) -> list[dict[str, Any]]:
    """A whole OpenAI ``chat.completion`` as the chunks a stream of it would have held: per
    choice, one chunk carrying its whole message (role, text, refusal, tool calls, each call
    numbered by ``index``) and its ``finish_reason`` (``stop`` when it gives none: the answer
    is whole), then a final chunk of no choices
    carrying the answer's ``usage`` when it has one. The first chunk is a
    :class:`WholeAnswerChunk`. With ``reported`` (what the upstream reported of its use beside
    that usage: the Messages API's prompt count and thinking), each chunk is a
    :class:`CountedChunk` carrying it, as a stream's would. What ``answer`` is not (a choice
    that is not an object) is left out; its usage is read, bounded, as a stream's is
    (:func:`usage_of`)."""
    head: dict[str, Any] = {"object": "chat.completion.chunk"}
    for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
        if name in answer:
            head[name] = answer[name]
    chunks: list[dict[str, Any]] = []
    choices = answer.get("choices")
    for at, choice in enumerate(choices if isinstance(choices, list) else ()):
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        message = message if isinstance(message, Mapping) else {}
        delta: dict[str, Any] = {"role": message.get("role") or "assistant"}
        for name, value in message.items():
            if name == "tool_calls" and isinstance(value, list):
                value = [{"index": i, **call} if isinstance(call, Mapping) else call
                         for i, call in enumerate(value)]
            if name != "role" and (value is not None or name == "content"):
                delta[name] = value
        index = choice.get("index", at)
        chunks.append({**head, "choices": [{
            "index": index if isinstance(index, int) else at, "delta": delta,
            "finish_reason": choice.get("finish_reason") or "stop",
            "logprobs": choice.get("logprobs")}]})
    if usage_of(answer) is not None:
        chunks.append({**head, "choices": [], "usage": answer["usage"]})
    if reported is not None:
        chunks = [CountedChunk(chunk, reported) for chunk in chunks]
    if chunks:
        chunks[0] = (WholeAnswerChunk(chunks[0]) if reported is None
                     else _CountedWholeAnswerChunk(chunks[0], reported))
    return chunks


class FinishedChoices:
    """Which choices of a stream have their ``finish_reason``, noted chunk by chunk: the
    answer is whole once each choice that appeared has one (``all``)."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.done: set[int] = set()

    def note(self, chunk: Mapping[str, Any]) -> None:
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, Mapping):
                index = choice.get("index", 0)
                index = index if isinstance(index, int) else 0
                self.open.add(index)
                if choice.get("finish_reason"):
                    self.done.add(index)

    @property
    def all(self) -> bool:
        return bool(self.open) and self.open <= self.done


@dataclass
class ProviderResponse:
    """A finished, non-streamed answer in OpenAI ``chat.completion`` shape; ``reported``,
    what its upstream reported of its use beside the body's usage (the Messages API's prompt
    count and the thinking it generated, which the body does not carry), if anything."""

    body: dict[str, Any]
    model: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0
    reported: ReportedSoFar | None = None

    @property
    def usage(self) -> TokenUsage | None:
        return usage_of(self.body)

    @property
    def upstream_model(self) -> str | None:
        value = self.body.get("model")
        return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------
# Classifying upstream failures
# --------------------------------------------------------------------------------------------

_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context length",
                    "context window", "prompt is too long", "too many tokens",
                    "string_above_max_length", "reduce the length")
_FILTER_MARKERS = ("content_filter", "content_policy", "content management policy",
                   "content filtering policy", "responsibleaipolicyviolation", "safety system")


#: The longest wait an upstream's ``Retry-After`` is taken at (a day): a longer one (a
#: hostile or broken upstream's 10**9 seconds, a date in the year 9999) would keep its model out
#: of service until a restart and be handed on to clients as is.
MAX_RETRY_AFTER_S = 86_400.0


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date,
    in GMT whatever zone the process runs in, its obsolete forms without a zone too), at most
    :data:`MAX_RETRY_AFTER_S`; ``None`` when neither is there or readable."""
    seconds = _retry_after(headers, now)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_S)


def _retry_after(headers: Mapping[str, str], now: float | None) -> float | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # (-0000, or asctime's form: an HTTP date is always GMT)
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        raise ValueError(f"{digits[:40]} is beyond a floating-point number")
    return value


# Built once: ``json.loads`` with hooks builds a decoder per call, which costs as much as the
# decoding of a stream's small events.
_UPSTREAM_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite,
                                     object_pairs_hook=unique_keys)


def upstream_json(text: str | bytes) -> Any:
    """An upstream's JSON, strictly: ``NaN``, ``Infinity`` and numbers beyond a float (which
    Python's reader takes, but an answer relayed to a client cannot hold) raise ValueError, as
    any other unreadable JSON does, and so does a key written twice in one object (read as
    the last, an answer's ``usage`` or ``choices`` written twice would be accounted by one and
    read by a client that keeps the first by the other), and nesting deeper than a request
    body may
    (:data:`~switchpoint.gateway.parsing.MAX_DEPTH` levels): an answer nested nearly as deep as
    Python's reader goes is read, but cannot be written again to the client. Bytes are read as
    ``json.loads`` reads them (UTF-8, -16 or -32, told apart as it does).

    A lone surrogate (an unpaired ``\\ud800``-``\\udfff`` escape, or its bytes), which is
    not Unicode text and which neither an answer written as UTF-8 nor the request log can
    hold, is read as U+FFFD, the replacement character, in a string or a key, as a browser
    reads one: the answer is relayed and logged, that character in its place."""
    if isinstance(text, str):
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        source = text
    else:
        source = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        try:
            value = _UPSTREAM_DECODER.decode(source)
        except RecursionError:  # (nested nearly as deep as the reader goes, from this caller)
            raise ValueError(f"the answer {TOO_DEEP}") from None
        if nests_deeper(source, MAX_DEPTH):  # (told by its brackets: the answer is not walked)
            raise ValueError(f"the answer {TOO_DEEP}")
        if _MAY_HOLD_SURROGATE.search(source):  # (most answers hold none, and skip the walk)
            value = _replaced_surrogates(value)
    except DuplicateKeyError as exc:  # (its message names the key; it is at no one place)
        raise ValueError(exc.msg) from None
    return value


# What JSON text holding a lone surrogate holds: an escape of one, or one read from its bytes.
_MAY_HOLD_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|[\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _replaced_surrogates(value: Any) -> Any:
    """``value`` with each surrogate left in its strings and keys (a pair of escapes is read as
    the one character it writes, so any left is lone) replaced by U+FFFD; ``value`` nests at
    most :data:`~switchpoint.gateway.parsing.MAX_DEPTH` levels (checked before)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        # (two keys told apart only by their lone surrogates are one key now: refused too)
        return unique_keys([(_SURROGATE.sub("\ufffd", key), _replaced_surrogates(item))
                            for key, item in value.items()])
    if isinstance(value, list):
        return [_replaced_surrogates(item) for item in value]
    return value


def shown_data(data: str) -> str:
    """What an error quotes of an event's ``data`` (a malformed chunk): its first 200
    characters, redacted before the cut (a key across it is found whole, see
    :data:`~switchpoint._messages.SECRET_REACH`)."""
    return json_quoted(redact(data[:200 + SECRET_REACH]), 200)


def decode_body(raw: bytes, secrets: Sequence[str] = ()) -> object:
    """An upstream body as JSON when it is JSON, else as text, with secrets redacted
    (``secrets``: the credentials the request carried; see :mod:`switchpoint._redact`). A body
    over :data:`MAX_ERROR_BODY` bytes (read to :data:`ERROR_BODY_READ`) is text cut to that
    many characters once redacted, so a key it held across the cut leaves no part of it."""
    if len(raw) > MAX_ERROR_BODY:
        return redact(raw[:ERROR_BODY_READ].decode("utf-8", "replace"), secrets)[
            :MAX_ERROR_BODY]
    try:
        body: object = upstream_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = raw.decode("utf-8", "replace")
    return redact_value(body, secrets)


def _error_fields(body: object) -> tuple[str, str]:
    """(code/type text, message) from an OpenAI or Anthropic error envelope, lower-cased."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            code = " ".join(str(err.get(k) or "") for k in ("code", "type", "param"))
            message = str(err.get("message") or "")
            inner = err.get("innererror")
            if isinstance(inner, Mapping):
                code += " " + str(inner.get("code") or "")
            return code.lower(), message.lower()
        if isinstance(err, str):
            return "", err.lower()
        return "", json.dumps(body).lower()
    return "", str(body).lower()


def error_message(body: object, default: str) -> str:
    """The upstream's own message, for humans (redacted, at most
    :data:`MAX_ERROR_MESSAGE` characters), or ``default``."""
    text = default
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and err.get("message"):
            text = str(err["message"])
        elif isinstance(err, str) and err:
            text = err
    elif isinstance(body, str) and body.strip():
        text = body.strip()
    return redact(text[:MAX_ERROR_MESSAGE + SECRET_REACH])[:MAX_ERROR_MESSAGE]


def answered_error(data: Mapping[str, Any], status: int, *,
                   model: str) -> MalformedResponse | None:
    """The error for a 2xx answer to a plain request whose JSON is an upstream's error in
    place of an answer (OpenAI's ``{"error": {...}}``, the Messages API's ``{"type": "error",
    "error": {...}}``), naming what the upstream said; None for any other body."""
    if not data.get("error"):
        return None
    return MalformedResponse(f"the {status} answer is an error, not a completion: "
                             f"{error_message(data, 'no message')}", model=model,
                             status=status, body=data)


def classify_status(status: int, body: object, headers: Mapping[str, str], *,
                    model: str | None = None) -> ProviderError:
    """The :class:`ProviderError` for an upstream HTTP error status or redirect and its body
    (secrets in the body are redacted, if :func:`decode_body` has not already)."""
    body = redact_value(body)
    code, message = _error_fields(body)
    text = f"{code} {message}"
    human = error_message(body, f"HTTP {status}")
    if 300 <= status < 400:
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        to = f" to {json_quoted(cut(redact_url(location), 200), 200)}" if location else ""
        return ServerError(f"the upstream answered {status}, a redirect{to}, which is not "
                           "followed: set the model's base_url to the URL that answers",
                           model=model, status=status, body=body)
    if status == 429:
        return RateLimited(f"rate limited (429): {human}",
                           retry_after=parse_retry_after(headers), model=model, body=body)
    if status in (401, 403):
        return AuthError(f"the upstream refused the credentials ({status}): {human}",
                         model=model, status=status, body=body)
    if 400 <= status < 500 and status not in (408, 409):
        if any(marker in text for marker in _CONTEXT_MARKERS):
            return ContextLengthExceeded(f"context length exceeded ({status}): {human}",
                                         model=model, status=status, body=body)
        if any(marker in text for marker in _FILTER_MARKERS):
            return ContentFiltered(f"blocked by the upstream's content filter ({status}): "
                                   f"{human}", model=model, status=status, body=body)
        return BadRequest(f"the upstream rejected the request ({status}): {human}",
                          status=status, body=body, model=model)
    retry_after = parse_retry_after(headers)
    error = ServerError(f"upstream error ({status}): {human}", model=model, status=status,
                        body=body)
    if retry_after is not None:
        # A 503 with Retry-After is a rate limit in all but name.
        return RateLimited(f"upstream unavailable ({status}): {human}", retry_after=retry_after,
                           model=model, status=status, body=body)
    return error


def classify_stream_error(payload: Mapping[str, Any], *, model: str | None = None,
                          after_first_byte: bool = False, whole: bool = False) -> ProviderError:
    """The error for an in-stream error event (``{"error": {...}}``) from an upstream, or
    (``whole``) for a JSON error it answered a stream request with in place of a stream.

    Before the first content chunk, overload and rate-limit events classify like their HTTP
    statuses so they can be retried; anything else is a broken stream, but for a whole error
    an upstream error (which no stream began: nothing was generated, so no provider billed it,
    as for an error status). Secrets in the payload are redacted.
    """
    payload = redact_value(payload)
    code, message = _error_fields(payload)
    where = "in place of a stream" if whole else "mid-stream"
    sent = ("the upstream answered the stream request with an error" if whole
            else "the upstream sent an error event")
    human = error_message(payload, sent)
    if not after_first_byte:
        if "rate_limit" in code:
            return RateLimited(f"rate limited {where}: {human}", model=model, body=payload)
        if "overloaded" in code or "api_error" in code or "server_error" in code:
            return ServerError(f"upstream error {where}: {human}", model=model,
                               body=payload)
        if any(marker in f"{code} {message}" for marker in _CONTEXT_MARKERS):
            return ContextLengthExceeded(f"context length exceeded: {human}", model=model,
                                         body=payload)
        if whole:
            return ServerError(f"upstream error {where}: {human}", model=model, body=payload)
    return StreamBroken(f"{sent}: {human}", model=model,
                        body=payload, after_first_byte=after_first_byte)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Provider(Protocol):
    """One upstream API dialect. Implementations must not mutate ``request``."""

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        """Send a non-streamed request; the answer as an OpenAI ``chat.completion``."""
        ...

    def stream(self, request: Mapping[str, Any], card: ModelCard,
               timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        """Send a streamed request; OpenAI ``chat.completion.chunk`` dicts.

        The iterator yields nothing until the first content chunk has arrived (so a
        :class:`FirstTokenTimeout` or an early failure surfaces before anything is yielded),
        ends after the upstream's end marker (or a clean end once every choice has finished),
        and raises :class:`StreamBroken` otherwise.
        The final chunk carries ``usage`` when the upstream reports it. Close it with
        ``aclose()`` (or :func:`contextlib.aclosing`) when abandoning it early.

        An adapter may also have ``stream_batches``, with the same arguments: the same
        chunks as lists (those one read of the upstream brought, none empty), which the
        gateway then reads instead, a list at a time.
        """
        ...


async def chunks_of(batches: AsyncGenerator[list[dict[str, Any]], None]
                    ) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a stream read a list at a time (``stream_batches``), one by one."""
    async with aclosing(batches):
        async for batch in batches:
            for chunk in batch:
                yield chunk
