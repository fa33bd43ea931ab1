"""A fake LLM provider speaking both the OpenAI chat API and the Anthropic Messages API.

Run it as its own process, on loopback only::

    python -m tests.fakes.fake_provider --port 8999      # or --port 0: pick a free port
    python tests/fakes/fake_provider.py --port 0
    python tests/fakes/fake_provider.py --ports 19500-19599  # a free port in that range
    python tests/fakes/fake_provider.py --port 0 --lean  # benchmarks: keep no request log

It prints ``FAKE_PROVIDER_READY <port>`` once listening. From tests, use
:class:`FakeProviderProcess` (a context manager that spawns it and waits for that line).

Endpoints
---------
``POST /v1/chat/completions`` (also ``/chat/completions``)  OpenAI, plain and SSE
``POST /v1/messages``                                        Anthropic, plain and SSE
``POST /_script``    ``{"model": "m", "behaviours": ["429:retry_after=1", "ok"]}`` queues
                     behaviours for requests to model ``m`` (the ``model`` the request names);
                     ``{"model": "m", "default": "say:text=0.5"}`` sets what ``m`` does once
                     its queue is empty (``"default": null`` forgets it)
``GET  /_requests``  every request received: path, target (the request line's, query included),
                     lower-cased headers, JSON body, behaviour
``GET  /_connections``  ``{"open": N, "peak": M}``: the client connections open now that
                     carried a model's request, and the most open at once since the last reset
``POST /_reset``     clear the scripts and the request log

Every answer is in the request's dialect: an error is OpenAI's ``{"error": {...}}`` or the
Messages API's ``{"type": "error", "error": {"type", "message"}}`` (its type the one the
Messages API gives the status, or ``code=``), an answer a chat completion or a message, a
stream OpenAI's ``data:`` chunks and ``[DONE]`` or the Messages API's named events
(``event: message_start`` ... ``message_stop``, ``event: error``).

Each request takes the next behaviour queued for its model, else one named in the last user
message as ``[[fake:BEHAVIOUR]]`` (``[[fake:once:BEHAVIOUR]]``: only the first time that message
is seen, ``ok`` after), else its model's default, else ``ok``. A behaviour is ``name`` or
``name:key=value,key=value``:

=================  ===========================================================================
``ok``             a deterministic echo answer with realistic usage; a tool call when the
                   request has tools and the last turn is not a tool result. ``delay=`` before
                   the headers, ``chunk_delay=`` between stream chunks. OpenAI dialect, with
                   ``say`` and ``usage`` too: ``model_pad=N`` N more characters of ``model``,
                   ``nest=N`` a field ``extra`` nested N levels deep in the answer (each chunk),
                   ``finish=`` the finish reason of a text answer (default ``stop``; some
                   upstreams say ``eos`` or ``model_length``), ``type=`` the content-type of
                   a stream (percent-decoded; some label their event stream
                   ``application/json``), ``index=`` the choices' indices, JSON values split
                   by ``;`` (``0;0``, ``1e30``, ``-1``): one choice per index, each alike, in
                   a whole answer and in each chunk of a stream (``index=`` alone: none,
                   ``choices: []`` throughout, usage as usual). ``blank=1``: before each
                   chunk of a stream, a comment (``: keep-alive``) and an event with no
                   data (``event: ping`` and a bare ``data:``), as some servers keep a
                   stream alive; an event-stream reader dispatches no event for either.
                   ``each=1``: each chunk of a stream carries the answer's ``usage`` (when
                   asked for), as servers reporting usage continuously send it (vLLM's
                   ``continuous_usage_stats``). OpenAI dialect, non-streamed: ``close=1``
                   answers with ``Connection: close`` and closes the connection, as an
                   upstream letting each connection go does. Either dialect: ``prompt=`` and
                   ``completion=`` report tokens as ``usage`` does, with any behaviour.
                   Anthropic dialect: ``id_pad=N`` N more characters of the message id;
                   ``noargs=1``: its tool call takes no arguments (``input`` ``{}``; streamed,
                   as the Messages API streams one: a single ``input_json_delta`` of ``""``);
                   ``thinking=N``: a thinking block of N characters (``t``; streamed, 100 a
                   ``thinking_delta``, then its ``signature_delta``) before the answer's block
                   (``after=`` counts the answer's deltas alone, so ``after=0`` breaks
                   once all thinking is sent); ``redacted=N``: a
                   ``redacted_thinking`` block whose ``data`` is N characters (``r``; streamed,
                   whole in its ``content_block_start``) before the answer's block, after any
                   thinking. OpenAI dialect: ``reasoning=N``: N characters (``r``) of
                   reasoning before the answer, as ``reasoning_content`` (``reasoning_key=``
                   names the field otherwise: ``reasoning``), in the message or streamed 100
                   a delta before the answer's chunks (``after=`` counts those alone). Either
                   dialect, non-streamed (and ``whole``): ``nousage=1`` answers without
                   ``usage``
``say``            answer ``text=`` (percent-decoded, so ``%2C`` is a comma; as WTF-8, so
                   ``%ED%A0%80`` is a lone surrogate, sent as ``\\ud800``) instead of the
                   echo, with the same usage rules; e.g. a judge's ``say:text={"score": 0.7}``
``usage``          ``ok``, but reporting ``prompt=`` and ``completion=`` tokens (any numbers,
                   negative, fractional or beyond 64 bits included, a whole one however
                   written: ``1e30`` is sent as the integer 10**30; an upstream that misreports);
                   OpenAI dialect: ``total=`` its ``total_tokens`` (else the sum of the two)
``429``            rate limited; ``retry_after=`` sets ``Retry-After`` (seconds, or an HTTP
                   date percent-decoded: ``%2C`` is a comma), ``retry_after_ms=`` sets
                   ``retry-after-ms``
``500``, ``503``,  that status with the dialect's error body (any 4xx/5xx code works;
``529``, ``401``   ``retry_after=`` and ``retry_after_ms=`` add their headers, as ``429``'s
                   do, in either dialect; ``message=``, percent-decoded as ``say``'s text
                   is, replaces its message)
``reset``          reset the TCP connection (RST) without answering
``hang``           send nothing for ``seconds=`` (default 10), then close
``stall``          send the headers (and, streaming, the first chunk: the role, or
                   ``message_start``, then ``after=`` content chunks, default 0), then
                   nothing for ``seconds=`` (default 10), then close
``cut``            stream ``after=`` content chunks (default 2), then drop the connection
                   mid-body; non-streamed, half the body and then drop
``malformed``      stream ``after=`` chunks (default 1), then ``data: {not json``;
                   non-streamed, a 200 whose body is not JSON
``twice``          ``ok``, but with ``key=`` (``usage``, the default, or OpenAI's ``choices``,
                   the Messages API's ``content``) written twice in one object, the answer's
                   (streamed: each chunk's or message's that has it): first a decoy (1 and 1
                   tokens; text ``DECOY``), then the real one, which a reader keeping the last
                   reads; a key the dialect has not, the fake's 501
``nodone``         a full stream, finish reason included, that ends cleanly without
                   ``[DONE]`` / ``message_stop`` (some real upstreams do); ``seconds=N``:
                   instead of ending, silent for N seconds, then close;
                   non-streamed, ``ok`` (a whole answer has no end marker)
``nofinish``       stream ``after=`` content chunks (default 1), then end the body cleanly: no
                   finish reason, no end marker (an answer cut short); OpenAI dialect,
                   ``done=1``: then the usage chunk (when asked for) and ``[DONE]``, a stream
                   cut short that ends politely; non-streamed, a whole answer whose finish
                   reason (stop reason) is ``null``
``nodelta``        Anthropic dialect, streaming: a whole stream, ``message_stop`` included,
                   without its ``message_delta`` (no stop reason, no final usage); asked of
                   any other request, the fake's 501 saying so (``fake_misuse``)
``reject_stream_options``  OpenAI dialect: a request carrying ``stream_options`` is refused
                   with Mistral's 422 ``extra_forbidden`` naming the field; without it, ``ok``
``sse_error``      stream ``after=`` chunks (default 1), then an error event; non-streamed,
                   that error as the answer (OpenAI's 500 ``server_error``, the Messages
                   API's 529 ``overloaded_error``)
``context_length`` 400 context length exceeded, in the dialect's shape
``content_filter`` 400 content filter, in the dialect's shape
``huge``           a 200 answer of ``mb=`` megabytes (default 200), generated as it is sent:
                   chunked, or with ``length=1`` a declared Content-Length; streaming, the
                   stream's start, that many bytes of content chunks (deltas), then its end
``huge_line``      streaming: the role chunk (the Messages API's ``message_start`` and
                   ``content_block_start``), then one ``data:`` line of ``mb=`` megabytes
                   (default 100) that never ends
``trickle``        the headers, then the answer one byte every ``every=`` seconds (0.5);
                   streaming, the first content chunk at once, then the rest so (``chunks=N``:
                   N more content chunks, the last with finish reason ``stop``; default 50 and
                   none: the Messages API's stream then has no ``message_delta``); noting in
                   the request log (``closed_at``) when the client closes the connection
``echo_auth``      an error ``status=`` (401) whose message quotes the request's
                   ``Authorization`` and ``x-api-key`` headers verbatim (``text=1``: as plain
                   text, not JSON; ``pad=N``: N more characters of message)
``echo_url``       an error ``status=`` (404) whose message quotes the request line's target,
                   query included, and its ``Host`` (``Invalid URL (POST /v1/...?key=...)``,
                   as OpenAI words one), and its ``Authorization`` header
``redirect``       a ``status=`` (307) redirect to ``location=`` (percent-decoded; default
                   ``http://127.0.0.1:9/elsewhere``) whose body is a whole chat completion
                   saying ``REDIRECTED`` (an answer a client must never see)
``error200``       a 200 whose JSON body is an error, streamed or not (``code=``, default
                   ``server_error``, the Messages API's ``api_error``; its message quotes
                   the request's ``Authorization``, the Messages API's ``x-api-key``)
``dense``          a 200 whole answer (``DENSE``) carrying a field ``extra`` of ``mb=``
                   megabytes (default 30) of empty objects, sent gzip-compressed (some 30 KB):
                   an upstream whose small answer costs its reader seconds; ``line=1``, asked
                   for a stream: a stream saying ``DENSE`` whose content event (one ``data:``
                   line) carries that ``extra``, sent plain, then its finish and end marker
``html``           a 200 web page (``text/html``), streamed or not
``whole``          a stream request answered with a whole (not streamed) 200 JSON answer, as
                   an upstream that ignores ``stream`` does; ``prompt=`` and ``completion=``
                   report tokens as ``usage`` does, ``nousage=1`` reports none
``overrun``        a 200 whole answer saying ``OVERRUN`` (streamed or not) whose
                   Content-Length stops short of what is sent: ``text=`` (percent-decoded;
                   default a whole second answer, head and body, saying ``SPILLED``) follows
                   it on the connection, which is kept open for the next request
``bighead``       a 200 whose head carries ``kb=`` kilobytes of headers (default 100), then
                   ``{}``: an upstream flooding its answer's head
``badhead``        send ``head=`` (percent-decoded; default ``HTTP/2 200`` and a blank line)
                   as the answer's head, then close: an upstream answering malformed
``hold``           send nothing for ``seconds=`` (default 10), noting in the request log
                   (``closed_at``) when the client closes the connection
``encoded``        a 200 whole answer saying ``ENCODED`` (streamed or not) in plain bytes, but
                   labelled ``Content-Encoding: coding=`` (percent-decoded; default ``br``): an
                   upstream answering in a coding it was not asked for
``together``       answer (``ok``) only once ``n=`` requests (default 2) asking for it are
                   waiting at once; after ``seconds=`` (default 10) without them, a 500 saying
                   how many came. Proves requests are in flight together, with no clock
=================  ===========================================================================

The Anthropic endpoint validates what the real API insists on (``max_tokens``, alternating
roles starting with ``user``, stop sequences that are not empty or whitespace only, tool ids
matching ``^[a-zA-Z0-9_-]+$``, every ``tool_result`` answering a ``tool_use`` of the previous
turn and coming before any other block of its turn, ``tools`` declared whenever a
``tool_use`` or ``tool_result`` block is sent); the OpenAI endpoint checks that every
``tool`` message answers a ``tool_calls`` id of an earlier
assistant turn. Violations answer 400.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import decimal
import functools
import gzip
import hashlib
import json
import math
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import OrderedDict, defaultdict, deque
from itertools import dropwhile
from pathlib import Path
from typing import Any

READY = "FAKE_PROVIDER_READY"
_ID_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_MAGIC = re.compile(r"\[\[fake:([^\]]+)\]\]")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
           529: "Overloaded"}


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class State:
    def __init__(self) -> None:
        self.queues: dict[str, deque[str]] = defaultdict(deque)
        self.defaults: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.counter = 0
        self.lean = False  # --lean: record no requests (a benchmark must not grow a list)
        self.once_seen: OrderedDict[str, None] = OrderedDict()
        self.together = Meeting()  # (requests waiting for one another)
        self.open_connections = 0  # (those that carried a model's request: /_connections)
        self.peak_connections = 0

    def reset(self) -> None:
        self.queues.clear()
        self.defaults.clear()
        self.requests.clear()
        self.peak_connections = self.open_connections
        self.together.release()
        self.together = Meeting()


class Meeting:
    """The requests waiting for one another (``together``); set once enough have come."""

    def __init__(self) -> None:
        self.came = 0
        self.met = asyncio.Event()

    def release(self) -> None:
        self.met.set()


STATE = State()


def parse_behaviour(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key.strip()] = value.strip()
    return name.strip(), params


def _text_param(params: dict[str, str], key: str, default: str = "") -> str:
    """``params[key]`` percent-decoded, its bytes read as WTF-8: ``%ED%A0%80`` is a lone
    surrogate (U+D800), which the JSON sent then carries as the escape ``\\ud800``, as some
    upstreams write one; a byte no such reading takes (``%FF``) as U+FFFD, so the fake
    answers rather than dropping the connection."""
    raw = urllib.parse.unquote_to_bytes(params.get(key, default))
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def _num(params: dict[str, str], key: str, default: float) -> float:
    return float(params.get(key, default))


def _count(text: str) -> int | float:
    """A token count as the ``usage`` behaviour reports it: a whole number however written
    (``7``, ``-1e9``, ``1e30``) as that integer, sent as JSON writes it whatever its size, so
    an upstream can report usage beyond any bound; any other number (``2.5``) as a float."""
    number = decimal.Decimal(text)
    if number.is_finite() and number == number.to_integral_value():
        return int(number)
    return float(number)


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class Request:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes,
                 target: str = "") -> None:
        self.method, self.path, self.headers, self.raw = method, path, headers, body
        self.target = target or path  # (the request line's, query included)
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return Request(method, path.split("?", 1)[0], headers, body, path)


def head_bytes(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send_body(writer: asyncio.StreamWriter, status: int, content_type: str, data: bytes,
                    headers: dict[str, str] | None = None) -> None:
    writer.write(head_bytes(status, {"content-type": content_type,
                                     "content-length": str(len(data)), **(headers or {})}))
    writer.write(data)
    await writer.drain()


def wait_headers(params: dict[str, str]) -> dict[str, str]:
    """The waits an error status asks for, in either dialect: ``retry_after=`` as
    ``Retry-After`` (percent-decoded: an HTTP date's comma is ``%2C``), ``retry_after_ms=`` as
    ``retry-after-ms``."""
    headers = {}
    if "retry_after" in params:
        headers["retry-after"] = urllib.parse.unquote(params["retry_after"])
    if "retry_after_ms" in params:
        headers["retry-after-ms"] = params["retry_after_ms"]
    return headers


async def send_json(writer: asyncio.StreamWriter, status: int, body: Any,
                    headers: dict[str, str] | None = None) -> None:
    await send_body(writer, status, "application/json", json.dumps(body).encode(), headers)


def reset_connection(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ChunkedWriter:
    """An SSE body in HTTP/1.1 chunked framing, so a clean end and a cut differ on the wire."""

    def __init__(self, writer: asyncio.StreamWriter, delay: float = 0.0,
                 kind: str = "text/event-stream") -> None:
        self.writer, self.delay, self.kind = writer, delay, kind

    async def start(self) -> None:
        self.writer.write(head_bytes(200, {"content-type": self.kind,
                                           "cache-control": "no-cache",
                                           "transfer-encoding": "chunked"}))
        await self.writer.drain()

    async def raw(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()
        if self.delay:
            await asyncio.sleep(self.delay)

    async def data(self, payload: Any, event: str | None = None) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        prefix = f"event: {event}\n" if event else ""
        await self.raw(f"{prefix}data: {text}\n\n".encode())

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


# --------------------------------------------------------------------------------------------
# Deterministic answers
# --------------------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    out.append(str(part.get("text", "")))
                elif part.get("type") == "tool_result":
                    out.append(_text(part.get("content")))
        return " ".join(out)
    return ""


def _chars(messages: list[Any]) -> int:
    return sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict))


class Answer:
    """What the fake says: text or one tool call, plus usage."""

    def __init__(self, model: str, messages: list[Any], tools: list[Any] | None,
                 tool_choice: Any, last_is_tool_result: bool, system: str = "") -> None:
        last_user = ""
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                last_user = _text(m.get("content"))
        self.model = model
        self.last_user = last_user
        self.prompt_tokens: int | float = (math.ceil((_chars(messages) + len(system)) / 4)
                                           + 4 * len(messages))
        self.tool_name: str | None = None
        self.tool_args = ""
        if tools and tool_choice != "none" and not last_is_tool_result:
            first = tools[0]
            self.tool_name = (first.get("function") or {}).get("name") or first.get("name")
            self.tool_args = json.dumps({"query": _MAGIC.sub("", last_user).strip()[:40]})
        clean = _MAGIC.sub("", last_user).strip()
        if last_is_tool_result:
            self.text = f"Echo from {model}: tool said {clean[:60]}".strip()
        else:
            self.text = f"Echo from {model}: {clean[:200]}".strip()
        digest = hashlib.sha1(f"{model}|{last_user}|{len(messages)}".encode()).hexdigest()
        self.reported_completion: int | float | None = None  # the ``usage`` behaviour's
        self.reported_total: int | float | None = None  # (and its total_tokens)
        self.openai_call_id = "call_" + digest[:24]
        self.anthropic_call_id = "toolu_01" + digest[:22]
        self._split_words()

    def say(self, text: str) -> None:
        """Answer ``text`` instead of the echo (the ``say`` behaviour)."""
        self.tool_name = None
        self.text = text
        self._split_words()

    def _split_words(self) -> None:
        self.words = [w + " " for w in self.text.split(" ")]
        self.words[-1] = self.words[-1].rstrip()

    def misreport(self, params: dict[str, str]) -> None:
        """Report ``prompt=`` and ``completion=`` tokens (the ``usage`` behaviour)."""
        if "prompt" in params:
            self.prompt_tokens = _count(params["prompt"])
        self.reported_completion = (_count(params["completion"]) if "completion" in params
                                    else self.completion_tokens)
        if "total" in params:
            self.reported_total = _count(params["total"])

    @property
    def completion_tokens(self) -> int | float:
        if self.reported_completion is not None:
            return self.reported_completion
        return max(1, math.ceil(len(self.tool_args) / 4)) if self.tool_name else len(self.words)

    def usage(self) -> dict[str, int | float]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": (self.prompt_tokens + self.completion_tokens
                                 if self.reported_total is None else self.reported_total)}

    def arg_pieces(self) -> list[str]:
        return [self.tool_args[i:i + 8] for i in range(0, len(self.tool_args), 8)]


# --------------------------------------------------------------------------------------------
# The OpenAI dialect
# --------------------------------------------------------------------------------------------


def openai_error(message: str, typ: str, code: str | None, param: str | None = None
                 ) -> dict[str, Any]:
    return {"error": {"message": message, "type": typ, "param": param, "code": code}}


def openai_image_problem(part: Any, where: str) -> str | None:
    """What OpenAI says of an image part it refuses: one whose URL is neither http(s) nor a
    data URL, or a base64 data URL whose data is not base64 (read as a browser reads a data
    URL: whitespace skipped, padding optional)."""
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    url = str((part.get("image_url") or {}).get("url", ""))
    if url[:5].lower() == "data:":
        header, comma, data = url.partition(",")
        if not comma or (header.lower().endswith(";base64")
                         and not is_base64(forgiving_base64(data))):
            return (f"Invalid '{where}.image_url.url'. Expected a base64-encoded data URL "
                    "with an image MIME type (e.g. "
                    "'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=')")
        return None
    if not is_web_url(url):
        return (f"Invalid '{where}.image_url.url'. Expected a valid URL, but got a value "
                "with an invalid format.")
    return None


def openai_validate(body: dict[str, Any]) -> str | None:
    seen_ids: set[str] = set()
    for i, m in enumerate(body.get("messages") or []):
        for j, part in enumerate(m.get("content") if isinstance(m.get("content"), list) else []):
            if problem := openai_image_problem(part, f"messages[{i}].content[{j}]"):
                return problem
        if m.get("role") == "assistant" and m.get("tool_calls") == []:
            return (f"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with "
                    "minimum length 1, but got an empty array instead.")
        for call in m.get("tool_calls") or []:
            seen_ids.add(call.get("id"))
        if m.get("role") == "tool" and m.get("tool_call_id") not in seen_ids:
            return (f"Invalid parameter: messages[{i}]: 'tool_call_id' "
                    f"{m.get('tool_call_id')!r} does not answer any earlier 'tool_calls' id")
    return None


def nested(levels: int) -> list[Any]:
    """A list nested ``levels`` deep."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def written_twice(obj: dict[str, Any], key: str) -> str:
    """``obj`` as JSON text with ``key`` written twice in it: first a decoy (one prompt and
    one completion token; choices, or the Messages API's content, whose text is ``DECOY``),
    then its own value."""
    value = obj[key]
    if key == "usage":  # (OpenAI's counts, or the Messages API's: each 1, a total 2)
        decoy: Any = {name: 2 if name == "total_tokens" else 1 for name in value}
    elif key == "content":  # (the Messages API's answer)
        decoy = [{"type": "text", "text": "DECOY"}]
    else:
        decoy = [{**c, **{part: {"role": "assistant", "content": "DECOY"}
                          for part in ("message", "delta") if part in c}} for c in value]
    return json.dumps({key: decoy})[:-1] + ", " + json.dumps(obj)[1:]


async def serve_broken_whole(writer: asyncio.StreamWriter, name: str, params: dict[str, str],
                             data: bytes) -> bool:
    """A whole answer's head declaring ``data``'s length, then (``stall``) nothing for
    ``seconds=`` or (``cut``) half of it, and the connection closed."""
    writer.write(head_bytes(200, {"content-type": "application/json",
                                  "content-length": str(len(data))}))
    if name == "cut":
        writer.write(data[: len(data) // 2])
    await writer.drain()
    if name == "cut":
        reset_connection(writer)
    else:
        await asyncio.sleep(_num(params, "seconds", 10))
    return False


async def refuse_behaviour(writer: asyncio.StreamWriter, name: str, meant: str) -> bool:
    """A behaviour asked of a request it cannot act on: a 501 saying so, never an answer as if
    it had acted (a test would pass without the fault it meant to make)."""
    await send_json(writer, 501, {"error": {
        "message": f"fake provider: the behaviour {name!r} acts on {meant} only",
        "type": "fake_misuse", "code": "fake_misuse"}})
    return True


async def serve_openai(req: Request, writer: asyncio.StreamWriter, name: str,
                       params: dict[str, str]) -> bool:
    body = req.json or {}
    model = str(body.get("model"))
    stream = bool(body.get("stream"))
    messages = body.get("messages") or []
    if name == "reject_stream_options":
        if "stream_options" in body:
            await send_json(writer, 422, {"object": "error", "message": {"detail": [{
                "type": "extra_forbidden", "loc": ["body", "stream_options", "include_usage"],
                "msg": "Extra inputs are not permitted", "input": True}]},
                "type": "invalid_request_error", "param": None, "code": None})
            return True
        name = "ok"
    problem = openai_validate(body)
    if problem and name == "ok":
        await send_json(writer, 400, openai_error(problem, "invalid_request_error", None,
                                                  "messages"))
        return True
    if name == "context_length":
        await send_json(writer, 400, openai_error(
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens. Please reduce the length of the messages.",
            "invalid_request_error", "context_length_exceeded", "messages"))
        return True
    if name == "content_filter":
        await send_json(writer, 400, openai_error(
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy.", "invalid_request_error", "content_filter", "prompt"))
        return True
    if name.isdigit():
        status = int(name)
        headers = wait_headers(params)
        kinds = {429: ("rate_limit_exceeded", "requests"), 401: ("invalid_api_key", "auth")}
        code, typ = kinds.get(status, ("server_error", "server_error"))
        said = _text_param(params, "message", f"fake {status}")
        await send_json(writer, status, openai_error(said, typ, code), headers)
        return True
    if name == "sse_error" and not stream:  # (the stream's error event, as a whole answer)
        await send_json(writer, 500, openai_error(
            "The server had an error while processing your request.", "server_error",
            "server_error"))
        return True
    if name == "nodelta":
        return await refuse_behaviour(writer, name, "an Anthropic stream")
    if name == "twice" and params.get("key", "usage") not in ("usage", "choices"):
        return await refuse_behaviour(writer, name, "usage or choices in this dialect")
    last = messages[-1] if messages else {}
    answer = Answer(model, messages, body.get("tools"), body.get("tool_choice"),
                    isinstance(last, dict) and last.get("role") == "tool")
    if name == "say":
        answer.say(_text_param(params, "text"))
    if name in ("usage", "whole") or "prompt" in params or "completion" in params:
        answer.misreport(params)
    model += "x" * int(params.get("model_pad", "0"))  # an upstream naming itself at length
    nest = int(params.get("nest", "0"))  # an upstream answering with a field nested this deep
    extra: dict[str, Any] = {"extra": nested(nest)} if nest else {}
    STATE.counter += 1
    ident = f"chatcmpl-fake-{STATE.counter}"
    created = int(time.time())
    # (an upstream numbering its choices as it likes: out of range, repeated, not a number)
    # (``index=`` alone: none, an answer or chunks of ``choices: []``)
    listed = urllib.parse.unquote(params.get("index", "0"))
    indices = [json.loads(v) for v in listed.split(";")] if listed else []
    # (reasoning some servers send beside the answer: DeepSeek's, vLLM's)
    reasoning = "r" * int(_num(params, "reasoning", 0))
    reasoning_key = params.get("reasoning_key", "reasoning_content")
    if not stream or name == "whole":
        if name == "malformed":
            await send_body(writer, 200, "application/json", b"{not json")
            return True
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        finish: str | None = params.get("finish", "stop")
        if answer.tool_name:
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": answer.openai_call_id, "type": "function",
                "function": {"name": answer.tool_name, "arguments": answer.tool_args}}]}
            finish = "tool_calls"
        if name == "nofinish":  # (an answer cut short: no finish reason)
            finish = None
        if reasoning:
            message[reasoning_key] = reasoning
        full = {"id": ident, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": index, "message": message, "finish_reason": finish,
                             "logprobs": None} for index in indices],
                "usage": answer.usage(), **extra}
        if params.get("nousage") == "1":
            del full["usage"]
        if name in ("stall", "cut"):
            return await serve_broken_whole(writer, name, params, json.dumps(full).encode())
        if name == "twice":
            await send_body(writer, 200, "application/json",
                            written_twice(full, params.get("key", "usage")).encode())
            return True
        close = params.get("close") == "1"  # (an upstream letting the connection go)
        await send_json(writer, 200, full, {"connection": "close"} if close else None)
        return not close

    out = ChunkedWriter(writer, _num(params, "chunk_delay", 0),
                        urllib.parse.unquote(params.get("type", "text/event-stream")))
    await out.start()
    if name == "twice":  # (each chunk that has the key written twice)
        key, send = params.get("key", "usage"), out.data

        async def twice(payload: Any, event: str | None = None) -> None:
            twofold = isinstance(payload, dict) and key in payload
            await send(written_twice(payload, key) if twofold else payload, event)

        out.data = twice  # type: ignore[method-assign]
    if params.get("blank") == "1":  # (a keep-alive before each chunk: no event to dispatch)
        send_data = out.data

        async def after_blank(payload: Any, event: str | None = None) -> None:
            await out.raw(b": keep-alive\n\nevent: ping\ndata:\n\n")
            await send_data(payload, event)

        out.data = after_blank  # type: ignore[method-assign]

    # (``each=1``: the usage in every chunk, as a server reporting it continuously sends it)
    each = params.get("each") == "1" and bool((body.get("stream_options") or {}).get(
        "include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": "fp_fake",
                "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                             "logprobs": None} for index in indices], **extra,
                **({"usage": answer.usage()} if each else {})}

    await out.data(chunk({"role": "assistant", "content": ""}))
    for i in range(0, len(reasoning), 100):
        await out.data(chunk({"content": None, reasoning_key: reasoning[i:i + 100]}))
    if answer.tool_name:
        pieces = [chunk({"tool_calls": [{"index": 0, "id": answer.openai_call_id,
                                         "type": "function",
                                         "function": {"name": answer.tool_name,
                                                      "arguments": ""}}]})]
        pieces += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                   for p in answer.arg_pieces()]
        finish = "tool_calls"
    else:
        pieces = [chunk({"content": w}) for w in answer.words]
        finish = params.get("finish", "stop")
    after = int(_num(params, "after", {"cut": 2, "stall": 0}.get(name, 1)))
    for i, piece in enumerate(pieces):
        if name in ("cut", "malformed", "sse_error", "nofinish", "stall") and i == after:
            break
        await out.data(piece)
    if name == "stall":
        await asyncio.sleep(_num(params, "seconds", 10))
        return False
    if name == "nofinish":
        if params.get("done") == "1":
            if (body.get("stream_options") or {}).get("include_usage"):
                await out.data({**chunk({}), "choices": [], "usage": answer.usage()})
            await out.data("[DONE]")
        await out.end()
        return True
    if name == "cut":
        reset_connection(writer)
        return False
    if name == "malformed":
        await out.raw(b"data: {not json\n\n")
        await out.end()
        return True
    if name == "sse_error":
        await out.data(openai_error("The server had an error while processing your request.",
                                    "server_error", "server_error"), event="error")
        await out.end()
        return True
    await out.data(chunk({}, finish))
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        final = chunk({})
        final["choices"] = []
        final["usage"] = answer.usage()
        await out.data(final)
    if name != "nodone":
        await out.data("[DONE]")
    elif "seconds" in params:  # (then silent, the body not ended, as a hung upstream is)
        await asyncio.sleep(_num(params, "seconds", 10))
        return False
    await out.end()
    return True


# --------------------------------------------------------------------------------------------
# The Anthropic dialect
# --------------------------------------------------------------------------------------------


def anthropic_error(typ: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": typ, "message": message}}


#: The Messages API's error type for each status it answers with.
ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                         403: "permission_error", 404: "not_found_error",
                         413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                         529: "overloaded_error"}


def error_body(anthropic: bool, status: int, message: str, code: str | None = None,
               typ: str | None = None) -> dict[str, Any]:
    """An error in the request's dialect: the Messages API's ``{"type": "error", "error":
    {"type", "message"}}`` (its type ``code``, else the one for ``status``), or OpenAI's
    ``{"error": {"message", "type", "param", "code"}}``."""
    if anthropic:
        return anthropic_error(code or ANTHROPIC_ERROR_TYPES.get(status, "api_error"), message)
    return openai_error(message, typ or code or "server_error", code)


def anthropic_message(model: str, text: str, ident: str = "msg_fake",
                      usage: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """A whole Messages API answer saying ``text``."""
    return {"id": ident, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def anthropic_start(model: str, ident: str = "msg_fake") -> list[tuple[str, dict[str, Any]]]:
    """A Messages API stream's opening events, up to its text block's start."""
    return [("message_start", {"type": "message_start", "message": {
                **anthropic_message(model, "", ident), "content": [], "stop_reason": None}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}})]


def anthropic_delta(text: str) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": text}})


def anthropic_end(output_tokens: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """A Messages API stream's closing events, from its text block's end."""
    return [("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
            ("message_stop", {"type": "message_stop"})]


def anthropic_stream(model: str, text: str, ident: str = "msg_fake") -> str:
    """A whole Messages API stream saying ``text``, as event-stream text."""
    return sse([*anthropic_start(model, ident), anthropic_delta(text), *anthropic_end()])


def sse(events: list[tuple[str, dict[str, Any]]]) -> str:
    """Named events as event-stream text (``event:`` then ``data:``)."""
    return "".join(f"event: {event}\ndata: {json.dumps(data)}\n\n" for event, data in events)


ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def is_base64(data: object) -> bool:
    """Whether ``data`` is standard, padded base64 of some bytes (what both APIs decode)."""
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def forgiving_base64(data: str) -> str:
    """``data`` as a browser reads a data URL's base64 (whitespace skipped, padding optional),
    written strictly: what the fake OpenAI API decodes. (The fake Messages API decodes strict
    base64 only.)"""
    data = "".join(data.split())
    return data if data.endswith("=") else data + "=" * (-len(data) % 4)


def image_type_shown(data: str) -> str | None:
    """The image type (of those the Messages API takes) the first bytes of base64 ``data``
    show, if any (the API compares it with the media type the block declares)."""
    try:
        head = base64.b64decode(data[:16])
    except (binascii.Error, ValueError):
        return None
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"GIF8"):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_web_url(url: object) -> bool:
    """Whether ``url`` is an http(s) URL naming a host (what both APIs fetch an image from)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def anthropic_image_problem(block: Any, where: str) -> str | None:
    """What the Messages API says of an image block it refuses: a base64 one of a media type
    it does not take, whose data is not base64, or whose bytes show another image type than
    the one it declares (bytes that show none are let through), or a URL one whose URL is not
    http(s) (a data URL, a ``file:`` or ``ftp:`` one: it fetches http(s) URLs only)."""
    if not isinstance(block, dict) or block.get("type") != "image":
        return None
    source = block.get("source") or {}
    if source.get("type") == "base64" and source.get("media_type") not in ANTHROPIC_IMAGE_TYPES:
        return (f"{where}.image.source.base64.media_type: Input should be "
                f"{', '.join(repr(t) for t in ANTHROPIC_IMAGE_TYPES)}")
    if source.get("type") == "base64" and not is_base64(source.get("data")):
        return f"{where}.image.source.base64.data: Invalid base64 data"
    shown = image_type_shown(str(source.get("data", "")))
    if source.get("type") == "base64" and shown not in (None, source.get("media_type")):
        return (f"{where}.image.source.base64.data: Image does not match the provided media "
                f"type {source.get('media_type')}")
    if source.get("type") == "url" and not is_web_url(source.get("url")):
        return f"{where}.image.source.url: URL must use the http or https scheme"
    return None


def anthropic_validate(req: Request) -> str | None:
    body = req.json
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not req.headers.get("anthropic-version"):
        return "anthropic-version: header is required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for sequence in body.get("stop_sequences") or []:
        if not str(sequence):
            return "stop_sequences: each stop sequence must be non-empty"
        if not str(sequence).strip():
            return "stop_sequences: each stop sequence must contain non-whitespace"
    if messages[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    if not body.get("tools") and any(
            isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result")
            for m in messages if isinstance(m.get("content"), list) for b in m["content"]):
        return ("Requests which include `tool_use` or `tool_result` blocks must define "
                "tools.")
    previous_tool_uses: set[str] = set()
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1].get("role") == m.get("role"):
            return "messages: roles must alternate between \"user\" and \"assistant\""
        if m.get("content") in ("", [], None) and not (
                i == len(messages) - 1 and m.get("role") == "assistant"):
            return (f"messages.{i}: all messages must have non-empty content except for the "
                    "optional final assistant message")
        blocks = m.get("content") if isinstance(m.get("content"), list) else []
        uses: set[str] = set()
        kinds = [block.get("type") for block in blocks]
        leading = len(kinds) - len(list(dropwhile(lambda k: k == "tool_result", kinds)))
        if "tool_result" in kinds[leading:]:  # (a result after another block of its turn)
            return (f"messages.{i - 1}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {', '.join(sorted(previous_tool_uses))}. Each "
                    f"`tool_use` block must have a corresponding `tool_result` block in the "
                    f"next message.")
        for j, block in enumerate(blocks):
            image = anthropic_image_problem(block, f"messages.{i}.content.{j}")
            if image:
                return image
            if block.get("type") == "text" and block.get("text") == "":
                return "messages: text content blocks must be non-empty"
            if block.get("type") == "tool_use":
                if not _ID_OK.match(str(block.get("id"))):
                    return f"messages.{i}.content.{j}.tool_use.id: String should match pattern"
                uses.add(block["id"])
            if (block.get("type") == "tool_result"
                    and block.get("tool_use_id") not in previous_tool_uses):
                return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each "
                        f"`tool_result` block must have a corresponding `tool_use` block "
                        f"in the previous message.")
        previous_tool_uses = uses
    return None


async def serve_anthropic(req: Request, writer: asyncio.StreamWriter, name: str,
                          params: dict[str, str]) -> bool:
    problem = anthropic_validate(req)
    if problem and name == "ok":
        await send_json(writer, 400, anthropic_error("invalid_request_error", problem))
        return True
    body = req.json or {}
    model = str(body.get("model"))
    stream = bool(body.get("stream"))
    if name == "context_length":
        await send_json(writer, 400, anthropic_error(
            "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"))
        return True
    if name == "content_filter":
        await send_json(writer, 400, anthropic_error(
            "invalid_request_error", "Output blocked by content filtering policy"))
        return True
    if name.isdigit():
        status = int(name)
        headers = wait_headers(params)
        kinds = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error",
                 500: "api_error"}
        await send_json(writer, status,
                        anthropic_error(kinds.get(status, "api_error"),
                                        _text_param(params, "message", f"fake {status}")),
                        headers)
        return True
    if name == "sse_error" and not stream:  # (the stream's error event, as a whole answer)
        await send_json(writer, 529, anthropic_error("overloaded_error", "Overloaded"))
        return True
    if name == "nodelta" and not stream:
        return await refuse_behaviour(writer, name, "a streamed request")
    if name == "twice" and params.get("key", "usage") not in ("usage", "content"):
        return await refuse_behaviour(writer, name, "usage or content in this dialect")
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content")
    last_blocks = content if isinstance(content, list) else []
    last_is_result = any(b.get("type") == "tool_result" for b in last_blocks)
    answer = Answer(model, messages, body.get("tools"),
                    (body.get("tool_choice") or {}).get("type"), last_is_result,
                    str(body.get("system") or ""))
    if params.get("noargs") == "1" and answer.tool_name:
        answer.tool_args = ""
    if name == "say":
        answer.say(_text_param(params, "text"))
    if name in ("usage", "whole") or "prompt" in params or "completion" in params:
        answer.misreport(params)
    STATE.counter += 1
    ident = f"msg_fake{STATE.counter:06d}" + "x" * int(params.get("id_pad", "0"))
    usage = {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}
    if not stream or name == "whole":
        if name == "malformed":
            await send_body(writer, 200, "application/json", b"{not json")
            return True
        if answer.tool_name:
            content = [{"type": "tool_use", "id": answer.anthropic_call_id,
                        "name": answer.tool_name, "input": json.loads(answer.tool_args or "{}")}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": answer.text}]
            stop = "end_turn"
        if redacted := int(_num(params, "redacted", 0)):
            content.insert(0, {"type": "redacted_thinking", "data": "r" * redacted})
        if thought := int(_num(params, "thinking", 0)):
            content.insert(0, {"type": "thinking", "thinking": "t" * thought,
                               "signature": "s" * 50})
        message = {"id": ident, "type": "message", "role": "assistant", "model": model,
                   "content": content, "stop_reason": None if name == "nofinish" else stop,
                   "stop_sequence": None, "usage": usage}
        if params.get("nousage") == "1":
            del message["usage"]
        if name in ("stall", "cut"):
            return await serve_broken_whole(writer, name, params, json.dumps(message).encode())
        if name == "twice":
            await send_body(writer, 200, "application/json",
                            written_twice(message, params.get("key", "usage")).encode())
            return True
        await send_json(writer, 200, message)
        return True

    out = ChunkedWriter(writer, _num(params, "chunk_delay", 0))
    await out.start()
    if name == "twice":  # (each event that has the key written twice)
        key, send = params.get("key", "usage"), out.data

        async def twice(payload: Any, event: str | None = None) -> None:
            inner = payload.get("message", payload) if isinstance(payload, dict) else payload
            if not (isinstance(inner, dict) and key in inner):
                await send(payload, event)
            elif inner is payload:
                await send(written_twice(payload, key), event)
            else:
                await send(json.dumps({**payload, "message": None})[:-len("null}")]
                           + written_twice(inner, key) + "}", event)

        out.data = twice  # type: ignore[method-assign]
    await out.data({"type": "message_start", "message": {
        "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1}}},
        event="message_start")
    events: list[tuple[str, dict[str, Any]]] = []
    thought = int(_num(params, "thinking", 0))
    block = 0  # (the answer's block: after the thinking block, when there is one)
    if thought:
        events.append(("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
        text = "t" * thought
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "thinking_delta",
                                                      "thinking": text[i:i + 100]}})
                   for i in range(0, thought, 100)]
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "signature_delta",
                                                         "signature": "c2lnbmVk"}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        block = 1
    if redacted := int(_num(params, "redacted", 0)):
        events.append(("content_block_start", {
            "type": "content_block_start", "index": block,
            "content_block": {"type": "redacted_thinking", "data": "r" * redacted}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": block}))
        block += 1
    if answer.tool_name:
        events.append(("content_block_start", {
            "type": "content_block_start", "index": block,
            "content_block": {"type": "tool_use", "id": answer.anthropic_call_id,
                              "name": answer.tool_name, "input": {}}}))
        events += [("content_block_delta", {
            "type": "content_block_delta", "index": block,
            "delta": {"type": "input_json_delta", "partial_json": p}})
            for p in answer.arg_pieces() or [""]]
        stop = "tool_use"
    else:
        events.append(("content_block_start", {"type": "content_block_start", "index": block,
                                               "content_block": {"type": "text", "text": ""}}))
        events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": block,
                                            "delta": {"type": "text_delta", "text": w}})
                   for w in answer.words]
        stop = "end_turn"
    events.append(("content_block_stop", {"type": "content_block_stop", "index": block}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": answer.completion_tokens}}))
    if name == "nodelta":
        events.pop()  # (no stop reason, no final usage: message_start's counts alone)
    after = int(_num(params, "after", {"cut": 2, "stall": 0}.get(name, 1)))
    sent_content = 0
    for event, payload in events:
        # (the thinking before the answer's block is sent whole: after=0 breaks after it)
        if name in ("cut", "malformed", "sse_error", "nofinish", "stall") \
                and sent_content == after and payload.get("index", block) >= block:
            break
        await out.data(payload, event=event)
        if event == "content_block_delta" and payload["index"] == block:
            sent_content += 1
    if name == "stall":
        await asyncio.sleep(_num(params, "seconds", 10))
        return False
    if name == "nofinish":
        await out.end()
        return True
    if name == "cut":
        reset_connection(writer)
        return False
    if name == "malformed":
        await out.raw(b"event: content_block_delta\ndata: {not json\n\n")
        await out.end()
        return True
    if name == "sse_error":
        await out.data(anthropic_error("overloaded_error", "Overloaded"), event="error")
        await out.end()
        return True
    if name != "nodone":
        await out.data({"type": "message_stop"}, event="message_stop")
    elif "seconds" in params:  # (then silent, the body not ended, as a hung upstream is)
        await asyncio.sleep(_num(params, "seconds", 10))
        return False
    await out.end()
    return True


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def choose_behaviour(body: Any) -> str:
    model = str((body or {}).get("model"))
    queue = STATE.queues.get(model)
    if queue:
        return queue.popleft()
    for message in reversed((body or {}).get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            text = _text(message.get("content"))
            match = _MAGIC.search(text)
            if match:
                spec = match.group(1)
                if spec.startswith("once:"):
                    return _once(text, spec[len("once:"):])
                return spec
            break
    return STATE.defaults.get(model, "ok")


def _once(text: str, spec: str) -> str:
    """``spec`` the first time this message is seen, ``ok`` after (a retry or another model
    then succeeds)."""
    key = hashlib.sha1(text.encode()).hexdigest()
    if key in STATE.once_seen:
        return "ok"
    STATE.once_seen[key] = None
    while len(STATE.once_seen) > 10_000:
        STATE.once_seen.popitem(last=False)
    return spec


MB = 1 << 20


async def serve_huge(req: Request, writer: asyncio.StreamWriter, params: dict[str, str],
                     stream: bool) -> bool:
    """``mb`` megabytes of answer, made as they are sent (the fake holds 64 KB at a time)."""
    total = int(_num(params, "mb", 200) * MB)
    piece = b"x" * 65_536
    anthropic = req.path == "/v1/messages"
    if stream:
        out = ChunkedWriter(writer)
        await out.start()
        if anthropic:
            await out.raw(sse(anthropic_start("m", "msg_huge")).encode())
            data = sse([anthropic_delta("y" * 60_000)]).encode()
        else:
            data = ('data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":'
                    '[{"index":0,"delta":{"content":"' + "y" * 60_000 + '"},'
                    '"finish_reason":null}]}\n\n').encode()
        sent = 0
        while sent < total:
            await out.raw(data)
            sent += len(data)
        if anthropic:
            await out.raw(sse(anthropic_end()).encode())
        else:
            await out.data({"id": "c", "object": "chat.completion.chunk", "model": "m",
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            await out.data("[DONE]")
        await out.end()
        return True
    if anthropic:
        head, tail = json.dumps(anthropic_message("m", "\0", "msg_huge")).encode().split(
            b"\\u0000")
    else:
        head = b'{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,' \
               b'"message":{"role":"assistant","content":"'
        tail = b'"},"finish_reason":"stop"}]}'
    body_len = len(head) + total + len(tail)
    if params.get("length"):
        writer.write(head_bytes(200, {"content-type": "application/json",
                                      "content-length": str(body_len)}) + head)
        sent = 0
        while sent < total:
            writer.write(piece[: total - sent])
            sent += len(piece)
            await writer.drain()
        writer.write(tail)
        await writer.drain()
        return True
    out = ChunkedWriter(writer)
    writer.write(head_bytes(200, {"content-type": "application/json",
                                  "transfer-encoding": "chunked"}))
    await out.raw(head)
    sent = 0
    while sent < total:
        await out.raw(piece[: total - sent])
        sent += len(piece)
    await out.raw(tail)
    await out.end()
    return True


async def serve_dense(req: Request, writer: asyncio.StreamWriter,
                      params: dict[str, str]) -> bool:
    """A whole answer (either dialect) carrying ``extra``, ``mb=`` megabytes of empty objects,
    gzip-compressed: a thousand times smaller sent than read, and costly to read."""
    model, anthropic = str((req.json or {}).get("model")), req.path == "/v1/messages"
    count = int(_num(params, "mb", 30) * MB) // 3
    if params.get("line") and (req.json or {}).get("stream"):
        out = ChunkedWriter(writer)
        await out.start()
        await out.raw(_dense_stream(model, anthropic, count))
        await out.end()
        return True
    body = _dense_body(model, anthropic, count)
    await send_body(writer, 200, "application/json", body, {"content-encoding": "gzip"})
    return True


@functools.lru_cache(maxsize=4)  # (made once: compressing megabytes takes a while)
def _dense_body(model: str, anthropic: bool, count: int) -> bytes:
    if anthropic:
        answer: dict[str, Any] = anthropic_message(model, "DENSE", "msg_dense")
    else:
        answer = {"id": "chatcmpl-dense", "object": "chat.completion", "model": model,
                  "created": 1, "choices": [{"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": "DENSE"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    head = json.dumps(answer).encode()[:-1]
    return gzip.compress(head + b', "extra": [' + b",".join([b"{}"] * count) + b"]}", 6)


@functools.lru_cache(maxsize=4)
def _dense_stream(model: str, anthropic: bool, count: int) -> bytes:
    """A whole stream saying ``DENSE`` whose content event carries ``extra``, ``count`` empty
    objects, on its one ``data:`` line."""
    extra = b', "extra": [' + b",".join([b"{}"] * count) + b"]}"
    if anthropic:
        event, delta = anthropic_delta("DENSE")
        return (sse(anthropic_start(model, "msg_dense")).encode()
                + f"event: {event}\ndata: ".encode() + json.dumps(delta).encode()[:-1] + extra
                + b"\n\n" + sse(anthropic_end()).encode())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-dense", "object": "chat.completion.chunk", "model": model,
                "created": 1, "choices": [{"index": 0, "delta": delta,
                                           "finish_reason": finish}]}

    def line(data: bytes) -> bytes:
        return b"data: " + data + b"\n\n"

    return (line(json.dumps(chunk({"role": "assistant", "content": ""})).encode())
            + line(json.dumps(chunk({"content": "DENSE"})).encode()[:-1] + extra)
            + line(json.dumps(chunk({}, "stop")).encode()) + line(b"[DONE]"))


async def serve_huge_line(req: Request, writer: asyncio.StreamWriter,
                          params: dict[str, str]) -> bool:
    total = int(_num(params, "mb", 100) * MB)
    out = ChunkedWriter(writer)
    await out.start()
    if req.path == "/v1/messages":
        await out.raw(sse(anthropic_start("m", "msg_huge_line")).encode())
        await out.raw(b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                      b'"index":0,"delta":{"type":"text_delta","text":"')
    else:
        await out.data({"id": "c", "object": "chat.completion.chunk", "model": "m",
                        "choices": [{"index": 0, "delta": {"role": "assistant",
                                                           "content": ""},
                                     "finish_reason": None}]})
        await out.raw(b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"')
    sent = 0
    piece = b"z" * 65_536
    while sent < total:
        await out.raw(piece)
        sent += len(piece)
    return False


async def serve_trickle(req: Request, writer: asyncio.StreamWriter, params: dict[str, str],
                        stream: bool, entry: dict[str, Any]) -> bool:
    """The headers at once, then the answer a byte at a time: never silent for long, slow."""
    every = _num(params, "every", 0.5)
    model = str((req.json or {}).get("model"))
    anthropic = req.path == "/v1/messages"
    if stream and anthropic:
        more = int(_num(params, "chunks", 50))
        delta = sse([anthropic_delta("slow answer")])
        # (``chunks=``: the last ends the message, stop reason and all; else no stop reason)
        ending = (anthropic_end() if "chunks" in params
                  else [anthropic_end()[0], anthropic_end()[2]])
        text = delta * more + sse(ending)
        writer.write(head_bytes(200, {"content-type": "text/event-stream"})
                     + (sse(anthropic_start(model, "msg_trickle")) + delta).encode())
        body = text.encode()
    elif anthropic:
        body = json.dumps(anthropic_message(model, "slow " * 100, "msg_trickle")).encode()
        writer.write(head_bytes(200, {"content-type": "application/json",
                                      "content-length": str(len(body))}))
    elif stream:
        chunk = {"id": "c", "object": "chat.completion.chunk", "model": model,
                 "choices": [{"index": 0, "delta": {"content": "slow answer"},
                              "finish_reason": None}]}
        text = f"data: {json.dumps(chunk)}\n\n" * 50 + "data: [DONE]\n\n"
        if "chunks" in params:
            last = {**chunk, "choices": [{"index": 0, "delta": {"content": "slow answer"},
                                          "finish_reason": "stop"}]}
            text = (f"data: {json.dumps(chunk)}\n\n" * (int(_num(params, "chunks", 1)) - 1)
                    + f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n")
        # The first chunk at once (the stream is committed), the rest a byte at a time.
        writer.write(head_bytes(200, {"content-type": "text/event-stream"})
                     + f"data: {json.dumps(chunk)}\n\n".encode())
        body = text.encode()
    else:
        body = json.dumps({"id": "x", "object": "chat.completion", "model": model,
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant",
                                                    "content": "slow " * 100}}]}).encode()
        writer.write(head_bytes(200, {"content-type": "application/json",
                                      "content-length": str(len(body))}))
    await writer.drain()
    try:
        for i in range(len(body)):
            writer.write(body[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every)
            if writer.is_closing():
                raise ConnectionResetError
    except (ConnectionError, OSError):
        entry["closed_at"] = time.time()
        raise
    return not stream


async def serve_echo_auth(req: Request, writer: asyncio.StreamWriter,
                          params: dict[str, str]) -> bool:
    status = int(_num(params, "status", 401))
    auth = req.headers.get("authorization", "")
    key = req.headers.get("x-api-key", "")
    message = (f"Invalid credentials in request: Authorization: {auth}; x-api-key: {key}; "
               f"headers were {json.dumps(req.headers)}" + "." * int(_num(params, "pad", 0)))
    if params.get("text"):
        data = message.encode()
        writer.write(head_bytes(status, {"content-type": "text/plain",
                                         "content-length": str(len(data))}) + data)
        await writer.drain()
        return True
    echo = {"authorization": auth, "x-api-key": key}
    if req.path == "/v1/messages":
        await send_json(writer, status, {**anthropic_error(
            ANTHROPIC_ERROR_TYPES.get(status, "api_error"), message), "echo": echo})
        return True
    await send_json(writer, status, {"error": {"message": message, "type": "invalid_request",
                                               "code": "invalid_api_key", "param": None,
                                               "echo": echo}})
    return True


async def serve_echo_url(req: Request, writer: asyncio.StreamWriter,
                         params: dict[str, str]) -> bool:
    message = (f"Invalid URL ({req.method} {req.target}) at host "
               f"{req.headers.get('host', '')} with {req.headers.get('authorization', '')}")
    status = int(_num(params, "status", 404))
    await send_json(writer, status, error_body(req.path == "/v1/messages", status, message,
                                               typ="invalid_request_error"))
    return True


async def serve_redirect(req: Request, writer: asyncio.StreamWriter,
                         params: dict[str, str]) -> bool:
    status = int(_num(params, "status", 307))
    location = urllib.parse.unquote(params.get("location", "http://127.0.0.1:9/elsewhere"))
    model = str((req.json or {}).get("model"))
    if req.path == "/v1/messages":
        await send_json(writer, status, anthropic_message(model, "REDIRECTED", "msg_redirected"),
                        {"location": location})
        return True
    await send_json(writer, status, {
        "id": "chatcmpl-redirected", "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "REDIRECTED"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
        {"location": location})
    return True


async def serve_encoded(req: Request, writer: asyncio.StreamWriter,
                        params: dict[str, str], stream: bool) -> bool:
    coding = urllib.parse.unquote(params.get("coding", "br"))
    model = str((req.json or {}).get("model"))
    base = {"id": "chatcmpl-encoded", "created": int(time.time()), "model": model}
    if req.path == "/v1/messages":
        if stream:
            await send_body(writer, 200, "text/event-stream",
                            anthropic_stream(model, "ENCODED", "msg_encoded").encode(),
                            {"content-encoding": coding})
        else:
            await send_json(writer, 200, anthropic_message(model, "ENCODED", "msg_encoded"),
                            {"content-encoding": coding})
        return True
    if stream:
        events = [{**base, "object": "chat.completion.chunk", "choices": [
                      {"index": 0, "delta": {"role": "assistant", "content": "ENCODED"},
                       "finish_reason": None}]},
                  {**base, "object": "chat.completion.chunk", "choices": [
                      {"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        await send_body(writer, 200, "text/event-stream", data.encode(),
                        {"content-encoding": coding})
        return True
    await send_json(writer, 200, {
        **base, "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "ENCODED"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
        {"content-encoding": coding})
    return True


async def serve_overrun(req: Request, writer: asyncio.StreamWriter,
                        params: dict[str, str], stream: bool) -> bool:
    model = str((req.json or {}).get("model"))
    base = {"id": "chatcmpl-overrun", "created": int(time.time()), "model": model}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}

    anthropic = req.path == "/v1/messages"

    def whole(text: str) -> bytes:
        if anthropic:
            return json.dumps(anthropic_message(model, text, "msg_overrun")).encode()
        return json.dumps({**base, "object": "chat.completion", "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text}}], "usage": usage}).encode()

    spilled = whole("SPILLED")
    tail = (urllib.parse.unquote(params["text"]).encode() if "text" in params else
            head_bytes(200, {"content-type": "application/json",
                             "content-length": str(len(spilled))}) + spilled)
    if stream and anthropic:
        data = anthropic_stream(model, "OVERRUN", "msg_overrun").encode()
        kind = "text/event-stream"
    elif stream:
        events = [{**base, "object": "chat.completion.chunk", "choices": [
                      {"index": 0, "delta": {"role": "assistant", "content": "OVERRUN"},
                       "finish_reason": None}]},
                  {**base, "object": "chat.completion.chunk", "choices": [
                      {"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}]
        data = ("".join(f"data: {json.dumps(e)}\n\n" for e in events)
                + "data: [DONE]\n\n").encode()
        kind = "text/event-stream"
    else:
        data, kind = whole("OVERRUN"), "application/json"
    writer.write(head_bytes(200, {"content-type": kind, "content-length": str(len(data))})
                 + data + tail)
    await writer.drain()
    return True


async def serve_hold(reader: asyncio.StreamReader | None, params: dict[str, str],
                     entry: dict[str, Any]) -> bool:
    """Answer nothing; note when the client closes the connection."""
    seconds = _num(params, "seconds", 10)
    if reader is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(seconds):
            while await reader.read(65_536):
                pass
            entry["closed_at"] = time.time()
    return False


async def meet(params: dict[str, str]) -> tuple[int, int]:
    """Wait until ``n`` requests of one meeting are here (or ``seconds`` pass): how many came,
    of how many. The next requests start a new meeting."""
    needed = int(params.get("n", "2"))
    meeting = STATE.together
    meeting.came += 1
    if meeting.came >= needed:
        meeting.release()
        STATE.together = Meeting()
    try:
        async with asyncio.timeout(_num(params, "seconds", 10)):
            await meeting.met.wait()
    except TimeoutError:
        if STATE.together is meeting:  # it failed: the next requests meet afresh
            STATE.together = Meeting()
    return meeting.came, needed


async def dispatch(req: Request, writer: asyncio.StreamWriter,
                   reader: asyncio.StreamReader | None = None) -> bool:
    """Answer one request; False to close the connection afterwards."""
    if req.path == "/_health":
        await send_json(writer, 200, {"ok": True})
        return True
    if req.path == "/_reset" and req.method == "POST":
        STATE.reset()
        await send_json(writer, 200, {"ok": True})
        return True
    if req.path == "/_script" and req.method == "POST":
        body = req.json or {}
        if "default" in body:
            if body["default"] is None:
                STATE.defaults.pop(str(body.get("model")), None)
            else:
                STATE.defaults[str(body.get("model"))] = str(body["default"])
        scripts = body.get("scripts") or {body.get("model"): body.get("behaviours") or []}
        for model, behaviours in scripts.items():
            STATE.queues[str(model)].extend(behaviours)
        await send_json(writer, 200, {"queued": {m: list(q) for m, q in STATE.queues.items()}})
        return True
    if req.path == "/_requests":
        await send_json(writer, 200, STATE.requests)
        return True
    if req.path == "/_connections":
        await send_json(writer, 200, {"open": STATE.open_connections,
                                      "peak": STATE.peak_connections})
        return True
    openai_paths = ("/v1/chat/completions", "/chat/completions")
    if req.method == "POST" and req.path in (*openai_paths, "/v1/messages"):
        spec = choose_behaviour(req.json)
        entry = {"path": req.path, "target": req.target, "headers": req.headers,
                 "body": req.json, "behaviour": spec, "at": time.time()}
        if not STATE.lean:
            STATE.requests.append(entry)
        name, params = parse_behaviour(spec)
        anthropic = req.path == "/v1/messages"
        if "delay" in params:
            await asyncio.sleep(float(params["delay"]))
        if name == "reset":
            reset_connection(writer)
            return False
        if name == "hang":
            await asyncio.sleep(_num(params, "seconds", 10))
            return False
        if name == "hold":
            return await serve_hold(reader, params, entry)
        if name == "together":
            came, needed = await meet(params)
            if came < needed:
                await send_json(writer, 500, error_body(
                    anthropic, 500, f"only {came} of {needed} requests came together",
                    None if anthropic else "server_error"))
                return True
            name = "ok"
        if name == "echo_auth":
            return await serve_echo_auth(req, writer, params)
        if name == "echo_url":
            return await serve_echo_url(req, writer, params)
        if name == "redirect":
            return await serve_redirect(req, writer, params)
        if name == "error200":
            code = params.get("code", "api_error" if anthropic else "server_error")
            key = "x-api-key" if anthropic else "authorization"  # (the key, as it was sent)
            await send_json(writer, 200, error_body(
                anthropic, 500,
                f"fake upstream failure ({req.headers.get(key, '')})", code))
            return True
        if name == "bighead":
            padding = {f"x-pad-{i}": "p" * 1000 for i in range(int(_num(params, "kb", 100)))}
            await send_body(writer, 200, "application/json", b"{}", padding)
            return False
        if name == "badhead":
            head = _text_param(params, "head", "HTTP/2 200%0D%0A%0D%0A")
            writer.write(head.encode("utf-8", "surrogatepass"))
            await writer.drain()
            return False
        if name == "dense":
            return await serve_dense(req, writer, params)
        if name == "html":
            await send_body(writer, 200, "text/html",
                            b"<html><body><h1>Service temporarily down</h1></body></html>")
            return True
        stream = bool((req.json or {}).get("stream"))
        if name == "encoded":
            return await serve_encoded(req, writer, params, stream)
        if name == "overrun":
            return await serve_overrun(req, writer, params, stream)
        if name == "huge":
            return await serve_huge(req, writer, params, stream)
        if name == "huge_line":
            return await serve_huge_line(req, writer, params)
        if name == "trickle":
            return await serve_trickle(req, writer, params, stream, entry)
        if req.path in openai_paths:
            return await serve_openai(req, writer, name, params)
        return await serve_anthropic(req, writer, name, params)
    await send_json(writer, 404, {"error": {"message": f"no route {req.method} {req.path}"}})
    return True


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    counted = False  # (whether it carried a model's request: counted in /_connections)
    try:
        while True:
            req = await read_request(reader)
            if req is None:
                break
            if not counted and not req.path.startswith("/_"):
                counted = True
                STATE.open_connections += 1
                STATE.peak_connections = max(STATE.peak_connections, STATE.open_connections)
            if not await dispatch(req, writer, reader):
                break
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        if counted:
            STATE.open_connections -= 1
        with contextlib.suppress(Exception):
            writer.close()


PORTS_ENV = "SWITCHPOINT_TEST_PORTS"


def port_range(text: str) -> range:
    """``FIRST-LAST`` (or one port) as a range of ports."""
    first, _, last = text.strip().partition("-")
    try:
        ports = range(int(first), int(last or first) + 1)
    except ValueError:
        ports = range(0)
    if not ports or ports.start < 1 or ports.stop > 65_536:
        raise ValueError(f"{text!r} is not a port range: write FIRST-LAST, e.g. 19500-19599")
    return ports


def reserved_ports() -> range | None:
    """The ports ``$SWITCHPOINT_TEST_PORTS`` reserves for tests on this host, if it names any
    (a machine whose users share out port ranges); ``None``: any free port will do."""
    text = os.environ.get(PORTS_ENV, "")
    return port_range(text) if text.strip() else None


async def serve(port: int, ports: range | None = None) -> None:
    """Serve on ``port`` (0: any free one), or on a free one of ``ports``, tried in random
    order so that processes sharing the range seldom reach for the same one."""
    if ports is None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
    else:
        candidates = list(ports)
        random.shuffle(candidates)
        for candidate in candidates:
            try:
                server = await asyncio.start_server(handle, "127.0.0.1", candidate)
                break
            except OSError:
                continue
        else:
            raise SystemExit(f"no free port in {ports.start}-{ports.stop - 1}")
    bound = server.sockets[0].getsockname()[1]
    print(f"{READY} {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A scriptable fake LLM provider (loopback).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--ports", type=port_range, default=None, metavar="FIRST-LAST",
                        help="a free port of this range instead")
    parser.add_argument("--lean", action="store_true",
                        help="keep no log of requests (for benchmarks; /_requests stays empty)")
    args = parser.parse_args(argv)
    STATE.lean = args.lean
    sys.setrecursionlimit(10_000)  # (nest= writes JSON nested nearly 1,000 levels deep)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.ports))


# --------------------------------------------------------------------------------------------
# Driving it from tests
# --------------------------------------------------------------------------------------------


class FakeProviderProcess:
    """Spawn the fake provider in its own process on a free loopback port, which it binds
    itself and reports (one of ``ports``, else of those ``$SWITCHPOINT_TEST_PORTS`` reserves,
    when it names some), or on ``port``; stop it on exit.

    ``url`` is the server root; ``openai_base_url`` is ``url + "/v1"`` (what an OpenAI client
    or a catalog ``base_url`` takes); Anthropic cards take ``url``. ``startup_timeout_s`` only
    bounds a start that hangs (at a load of 14 on two cores, 10 s ran out for the session's
    fake, and each test using it errored).
    """

    def __init__(self, startup_timeout_s: float = 60.0, *, port: int = 0,
                 lean: bool = False, ports: range | None = None) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.port = port
        self.lean = lean
        self.ports = ports  # with port 0: a free one of these (default: the reserved ones)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FakeProviderProcess:
        ports = (self.ports or reserved_ports()) if self.port == 0 else None
        where = (["--ports", f"{ports.start}-{ports.stop - 1}"] if ports is not None
                 else ["--port", str(self.port)])
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *where,
             *(["--lean"] if self.lean else [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY):
                    self.port = int(line.split()[1])
                    return self
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        raise RuntimeError("the fake provider did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> FakeProviderProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def script(self, model: str, *behaviours: str) -> None:
        """Queue behaviours for the next requests to ``model``."""
        self._call("POST", "/_script", {"model": model, "behaviours": list(behaviours)})

    def default(self, model: str, behaviour: str | None) -> None:
        """What ``model`` does once its queue is empty (``None``: the usual ``ok``)."""
        self._call("POST", "/_script", {"model": model, "behaviours": [],
                                        "default": behaviour})

    def requests(self) -> list[dict[str, Any]]:
        """Every request received since the last reset."""
        result: list[dict[str, Any]] = self._call("GET", "/_requests")
        return result

    def connections(self) -> dict[str, int]:
        """The client connections that carried a model's request: ``open`` now, and the
        ``peak`` open at once since the last reset."""
        result: dict[str, int] = self._call("GET", "/_connections")
        return result

    def reset(self) -> None:
        self._call("POST", "/_reset", {})


if __name__ == "__main__":
    main()
