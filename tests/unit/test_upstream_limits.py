"""What an upstream sends, bounded and scrubbed: stream lines and events, answer sizes, and the
redaction of credentials from upstream text."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest

from switchpoint._redact import MASK, header_secrets, redact, remember
from switchpoint.errors import MalformedResponse, ProviderError, ResponseTooLarge
from switchpoint.gateway.providers import ClientPool, Timeouts, _http, anthropic, openai
from switchpoint.gateway.providers._http import (
    OFF_LOOP_BYTES,
    bounded_lines,
    post_json,
    stream_chunks,
)
from switchpoint.gateway.providers.base import (
    MAX_ERROR_BODY,
    classify_status,
    decode_body,
    upstream_json,
)
from switchpoint.gateway.providers.openai import OpenAIChunkDecoder
from switchpoint.gateway.providers.sse import SSEEvent, iter_sse


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def lines(*parts: bytes, limit: int = 100) -> list[str]:
    async def collect() -> list[str]:
        return [line async for line in bounded_lines(chunks_of(*parts), limit, model="m")]

    return asyncio.run(collect())


def test_lines_split_anywhere_and_every_line_ending_counts() -> None:
    assert lines(b"data: a\r", b"\ndata: b\n\nda", b"ta: c\rdata: d") == [
        "data: a", "data: b", "", "data: c", "data: d"]
    assert lines(b"caf\xc3", b"\xa9\n") == ["café"]  # a character split across reads


@pytest.mark.parametrize("parts", [(b"x" * 101 + b"\n",), (b"x" * 60, b"x" * 60),
                                   tuple(b"y" * 10 for _ in range(50))])
def test_a_line_over_the_limit_is_too_large(parts: tuple[bytes, ...]) -> None:
    with pytest.raises(ResponseTooLarge, match="max_sse_line_bytes"):
        lines(*parts)


def test_an_event_of_many_lines_over_the_limit_is_too_large() -> None:
    async def events() -> None:
        source = bounded_lines(chunks_of(*(b"data: " + b"z" * 50 + b"\n"
                                           for _ in range(100))), 100, model="m")
        async for _ in iter_sse(source, max_event_chars=1000):
            pass

    with pytest.raises(ResponseTooLarge):
        asyncio.run(events())


def answer(body: bytes, status: int = 200, length: bool = True,
           kind: str | None = None) -> httpx.MockTransport:
    """A stand-in upstream answering ``body`` 4 KB a read (``kind``: its content-type)."""
    def handler(request: httpx.Request) -> httpx.Response:
        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096]

        headers = {"content-length": str(len(body))} if length else {}
        if kind is not None:
            headers["content-type"] = kind
        return httpx.Response(status, headers=headers, content=stream())

    return httpx.MockTransport(handler)


def _post_once(pool: ClientPool, headers: dict[str, str],
               timeouts: Timeouts | None = None) -> None:
    """One ``post_json`` through ``pool`` to a stand-in upstream, the pool closed after it."""
    async def call() -> None:
        try:
            await post_json(pool.get("http://up"), "http://up/x", {}, headers,
                            timeouts or Timeouts(), model="m", answer=lambda data, _: data)
        finally:
            await pool.aclose()

    asyncio.run(call())


@pytest.mark.parametrize("length", [True, False])
def test_an_answer_over_max_response_bytes_is_refused(length: bool) -> None:
    pool = ClientPool(transport=answer(b'{"choices": ["' + b"x" * 50_000 + b'"]}',
                                       length=length))
    timeouts = Timeouts(max_response_bytes=10_000)

    with pytest.raises(ResponseTooLarge, match="max_response_bytes") as info:
        _post_once(pool, {}, timeouts)
    assert info.value.escalate and not info.value.retryable


def test_an_error_body_is_read_to_16_kb_and_scrubbed_of_the_key_sent() -> None:
    key = "plain-key-without-a-prefix"
    body = (b'{"error": {"message": "bad key ' + key.encode() + b' ' + b"." * 100_000
            + b'"}}')
    pool = ClientPool(transport=answer(body, status=401))

    with pytest.raises(ProviderError) as info:
        _post_once(pool, {"x-api-key": key})
    assert info.value.kind == "auth_error"
    assert key not in str(info.value) and key not in repr(info.value.body)
    assert len(str(info.value)) < 1000


def _leaked(key: str, text: str) -> bool:
    """Does ``text`` hold 6 or more characters of ``key`` from its start (a part of it)?"""
    return key[:6] in text


@pytest.mark.parametrize("before_cut", [7, 15])
def test_a_key_an_error_body_holds_across_its_16_kb_cut_leaves_no_part_of_it(
        before_cut: int) -> None:
    # The body was cut at 16 KB and then redacted: the key's start, before the cut, no
    # longer read as the key.
    key = "plain-key-no-prefix-0731"
    start = b'{"error": {"message": "bad key '
    body = (start + b"." * (MAX_ERROR_BODY - len(start) - before_cut) + key.encode()
            + b'", "type": "auth"}}')
    pool = ClientPool(transport=answer(body, status=401))

    with pytest.raises(ProviderError) as info:
        _post_once(pool, {"x-api-key": key})
    assert isinstance(info.value.body, str) and len(info.value.body) == MAX_ERROR_BODY
    assert not _leaked(key, info.value.body) and not _leaked(key, str(info.value))


def test_a_key_a_malformed_chunk_holds_across_what_its_error_quotes_leaves_no_part_of_it(
        ) -> None:
    key = "plain-key-no-prefix-0732"
    remember(key)
    data = '{"choices": "' + "x" * 170 + key + '"'
    with pytest.raises(ProviderError) as info:
        OpenAIChunkDecoder("m").feed(SSEEvent(data))
    assert not _leaked(key, str(info.value))


@pytest.mark.parametrize(("text", "gone"), [
    ("Authorization: Bearer abcdefgh12345678 rejected", "abcdefgh12345678"),
    ('{"x-api-key": "k3y-v4lue-0000"}', "k3y-v4lue-0000"),
    ("Incorrect API key provided: sk-proj-AbC123xyz987", "AbC123xyz987"),
    ("key sk-ant-api03-QQQQQQQQQQQQ invalid", "QQQQQQQQQQQQ"),
    ("password=hunter2hunter2&user=x", "hunter2hunter2"),
    ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("GET /v1/router/keys/sp-3f9a1c0b7e_" + "Q" * 43, "Q" * 43),
    # glued to what stands before it (a pasted key after an id, or a stray letter)
    ("id: 'xsp-3f9a1c0b7e_" + "R" * 43 + "' is not a key id", "R" * 12),
    ("3f9a1c0b7esp-3f9a1c0b7e_" + "S" * 43, "S" * 12),
    # a key glued to the text before it as keys are really written: a scheme with its space
    # left out, an escape of a text quoted as JSON, a percent-encoded character
    ("401: Bearersk-proj-AbC123xyz987 rejected", "AbC123xyz987"),
    ("401: bearergsk_" + "G" * 20 + " rejected", "G" * 20),
    ('{"message": "line one\\nsk-proj-AbC123xyz987"}', "AbC123xyz987"),
    ('"cols\\tAKIAABCDEFGHIJKLMNOP"', "AKIAABCDEFGHIJKLMNOP"),
    ('"\\u0022sk-ant-api03-QQQQQQQQQQQQ\\u0022"', "QQQQQQQQQQQQ"),
    ("body=auth%3Dsk-proj-AbC123xyz987%26x%3D1", "AbC123xyz987"),
    ("cannot reach https://admin:s3cretpassw0rd@example.com:8080/v1", "s3cretpassw0rd"),
    # a token as a URL's user, with no password or an empty one (curl's -u token:)
    ("cannot reach https://tk8Fd3Jw5Zp1@example.com/v1", "tk8Fd3Jw5Zp1"),
    ("cannot reach https://tk8Fd3Jw5Zp1:@example.com/v1", "tk8Fd3Jw5Zp1"),
])
def test_credential_shapes_are_redacted(text: str, gone: str) -> None:
    cleaned = redact(text)
    assert gone not in cleaned and MASK in cleaned


@pytest.mark.parametrize("text", [
    "a risk-assessment of task-specific, disk-backed models",
    "ask-me-anything, flask-sqlalchemy and a mask-wearing xsk-proj-AbC123xyz987",
    "Bearerskiing-holidays, a thf_" + "a" * 20 + " and a 5AIza" + "b" * 30,
])
def test_a_key_prefix_inside_a_word_is_not_redacted(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(("url", "secrets", "shown"), [
    ("https://tk8Fd3Jw5Zp1@llm.example/v1", ["tk8Fd3Jw5Zp1"], "https://[REDACTED]@llm.example/v1"),
    # an empty password leaves the user the credential, as curl's -u token: sends it
    ("https://tk8Fd3Jw5Zp1:@llm.example/v1", ["tk8Fd3Jw5Zp1"],
     "https://[REDACTED]:@llm.example/v1"),
    ("https://bob:hunter2hunter2@llm.example/v1", ["hunter2hunter2"],
     "https://bob:[REDACTED]@llm.example/v1"),
])
def test_a_base_urls_credential_is_found_and_masked(url: str, secrets: list[str],
                                                    shown: str) -> None:
    from switchpoint._redact import redact_url, url_secrets

    assert url_secrets(url) == secrets
    assert redact_url(url) == shown
    assert redact(f"cannot reach {url}") == f"cannot reach {shown}"


def test_known_secrets_and_sent_headers_are_redacted_everywhere_in_a_body() -> None:
    remember("remembered-secret-value")
    body = decode_body(b'{"error": {"message": "remembered-secret-value and hdr-secret-1234",'
                       b' "nested": ["hdr-secret-1234"]}}', ["hdr-secret-1234"])
    assert "secret" not in str(body).replace("[REDACTED]", "")
    error = classify_status(400, {"error": {"message": "Bearer zzzzzzzzzzzz"}}, {})
    assert "zzzzzzzzzzzz" not in str(error) and "zzzzzzzzzzzz" not in str(error.body)
    assert header_secrets({"Authorization": "Bearer tok-123456789", "x-api-key": "abc",
                           "accept": "json"}) == ["tok-123456789"]


def test_ordinary_text_is_left_alone() -> None:
    for text in ("This model's maximum context length is 8192 tokens.", "token expired",
                 "the sk- prefix", "rate limited: retry in 3 s",
                 "see https://example.com:8080/v1/docs"):
        assert redact(text) == text


@pytest.mark.parametrize(("url", "gone"), [
    ("/v1/router/keys/sp-3f9a1c0b7e%5F" + "Q" * 43, "Q" * 43),  # the key's _ encoded
    ("/v1/models?api%5Fkey=k3y-v4lue-0000", "k3y-v4lue-0000"),
    ("/v1/models?k=sp-3f9a1c0b7e%255F" + "R" * 43, "R" * 43),  # encoded twice
    ("/v1/x?note=url%2Dremembered%2Dsecret", "secret"),
    ("/v1/x?t=Bearer+abcdefgh12345678", "abcdefgh12345678"),
    ("/v1/x?q=%0Aforged%20sk%2Dproj%2DAbC123xyz987", "AbC123xyz987"),
])
def test_the_access_log_redacts_percent_encoded_secrets(url: str, gone: str) -> None:
    # A key or token percent-encoded in a path or query matched no pattern and was logged.
    import logging

    from switchpoint.server.logs import RedactFilter

    remember("url-remembered-secret")
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", url, "1.1",
                                                           200), None)
    assert RedactFilter().filter(record)
    line = record.getMessage()
    assert gone not in line and MASK in line, line
    assert "\n" not in line, line  # an encoded line end stays encoded: one line


def test_switchpoint_s_own_log_handler_redacts_messages_and_tracebacks() -> None:
    # Its records were written with a plain formatter: a secret a call site did not redact
    # (in an exception's message, in its traceback) reached stderr.
    import logging
    import sys

    from switchpoint.server.runner import _configure_logging

    logger = logging.getLogger("switchpoint")
    level = logger.level
    try:
        handler = _configure_logging("warning")
    finally:
        logger.setLevel(level)
    key = "sk-proj-" + "K" * 40
    try:
        raise RuntimeError(f"upstream said: invalid key {key}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("switchpoint.gateway", logging.ERROR, __file__, 1,
                               "calling %s with Authorization: Bearer %s failed",
                               ("gpt-x", "tok" + "T" * 30), exc_info)
    line = handler.format(record)
    assert "K" * 40 not in line and "T" * 30 not in line, line
    assert "Traceback" in line and "RuntimeError: upstream said: invalid key sk-" + MASK in line
    assert line.startswith("ERROR:     calling gpt-x with Authorization: Bearer " + MASK)
    plain = logging.LogRecord("switchpoint.gateway", logging.WARNING, __file__, 1,
                              "model %s answered 503", ("gpt-x",), None)
    assert handler.format(plain) == "WARNING:     model gpt-x answered 503"


@pytest.mark.parametrize("text", [
    "WARNING:     upstream gpt-x failed for request 3f2a: server_error (HTTP 503)",
    "x-api-key: k3y-v4lue-0000", "API_KEY=abcd1234", "Token abcdefgh12345678",
    "pa\u017f\u017fword=hunter2hunter2",  # long s: an ignore-case pattern's s
    "api_\u212aey=abcd1234",  # Kelvin sign: its k
    "Author\u0130zation: abcdefgh12345",  # dotted I (lowered, two characters): its i
    "author\u0131zation: abcdefgh12345",  # dotless i
    "\u0130\u0131 secret: v4lue-of-it", "https://u:p4ss@host/x", "aws AKIAABCDEFGHIJKLMNOP",
    "hf_" + "a" * 20, "eyJabcdefghijk.abcdefghijkl.sig", "github_pat_" + "b" * 22,
])
def test_the_words_a_pattern_needs_never_skip_a_match(text: str) -> None:
    # A pattern runs only on text holding one of its words: the result is what running
    # every pattern gives.
    from switchpoint import _redact as module

    full = text
    for pattern, replacement, _ in module._PATTERNS:
        full = pattern.sub(replacement, full)
    assert redact(text) == full


def test_a_url_without_a_secret_is_logged_as_sent() -> None:
    from switchpoint._redact import MAX_URL, redact_url

    for url in ("/v1/x?q=hello%20world&a=1+2", "/v1/models/gpt%2D4o", "/v1/x?p=%25%25"):
        assert redact_url(url) == url
    cut = redact_url("/v1/x?q=" + "a" * (2 * MAX_URL))
    assert len(cut) < MAX_URL + 100 and cut.endswith("more characters not shown]")


def test_line_ends_split_across_reads_are_read_once() -> None:
    assert lines(b"a\r", b"\r", b"\n", b"b\r", b"c") == ["a", "", "b", "c"]
    assert lines(b"\r", b"\n\n", b"\r\r\n") == ["", "", "", ""]
    assert lines(b"x\r\ny", b"\n\r") == ["x", "y", ""]


def test_a_line_sent_a_byte_at_a_time_costs_no_more_than_one_sent_whole() -> None:
    """Half a megabyte, one byte per read (an upstream's chunked body can split it so): each
    byte is looked at once (rescanning what is pending on each read took a minute here).
    The time is this process's CPU time, which other processes on a loaded host do not add
    to (at a load of 16 on two cores the wall clock read 18 s)."""
    size = 512 * 1024

    async def collect() -> tuple[list[str], float]:
        started = time.process_time()
        got = [line async for line in bounded_lines(
            chunks_of(*[b"x"] * size, b"\n"), 1 << 20, model="m")]
        return got, time.process_time() - started

    got, seconds = asyncio.run(collect())
    assert got == ["x" * size]
    assert seconds < 10, f"{seconds:.1f} s of CPU to read {size} one-byte reads"


# An answer's JSON past OFF_LOOP_BYTES of empty objects, the densest JSON (some 90 KB, read in
# some 8 ms): read on the event loop, it held every other request of the service meanwhile.
_EXTRA = b', "extra": [' + b",".join([b"{}"] * 30_000) + b"]}"
_ANSWER = (b'{"id": "c", "choices": [{"index": 0, "finish_reason": "stop", "message": '
           b'{"role": "assistant", "content": "DENSE"}}]')


def _read_where(monkeypatch: pytest.MonkeyPatch, body: bytes,
                adapter: Callable[[dict[str, Any], int], object] = lambda data, _: data
                ) -> tuple[object, list[bool]]:
    """What ``post_json`` makes of the 200 answer ``body`` with the adapter's ``answer``
    function ``adapter`` (its answer, or the error it raises), and whether its JSON, then
    ``adapter`` (when it got that far), was read on the event loop's thread."""
    threads: list[int] = []

    def noted_json(text: str | bytes) -> object:
        threads.append(threading.get_ident())
        return upstream_json(text)

    def noted_answer(data: dict[str, Any], status: int) -> object:
        threads.append(threading.get_ident())
        return adapter(data, status)

    monkeypatch.setattr(_http, "upstream_json", noted_json)
    pool = ClientPool(transport=answer(body))

    async def call() -> tuple[object, int]:
        loop_thread = threading.get_ident()
        try:
            read, _, _ = await post_json(pool.get("http://up"), "http://up/x", {},
                                         {"x-api-key": "plain-key-of-the-caller"}, Timeouts(),
                                         model="m", answer=noted_answer)
            return read, loop_thread
        except ProviderError as exc:
            return exc, loop_thread
        finally:
            await pool.aclose()

    got, loop_thread = asyncio.run(call())
    return got, [thread == loop_thread for thread in threads]


def test_an_answer_past_off_loop_bytes_is_read_off_the_event_loop_and_checked_as_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain answer longer than OFF_LOOP_BYTES is read, and made the adapter's answer, on a
    worker thread, the event loop free meanwhile; a shorter one at once, on the loop. What
    the reading refuses it still refuses, as it did on the loop: a key written twice, a body
    that is no JSON object (its credentials redacted), nesting past the bound, choices that
    do not number the answers asked for."""
    assert len(_ANSWER + _EXTRA) > OFF_LOOP_BYTES
    checked = functools.partial(openai.checked_answer, answers=1, model="m")
    data, on_loop = _read_where(monkeypatch, _ANSWER + _EXTRA, checked)
    assert isinstance(data, dict) and len(data["extra"]) == 30_000
    assert on_loop == [False, False]
    data, on_loop = _read_where(monkeypatch, _ANSWER + b"}", checked)
    assert isinstance(data, dict) and data["choices"][0]["message"]["content"] == "DENSE"
    assert on_loop == [True, True]

    error, on_loop = _read_where(monkeypatch, b'{"id": "c", "choices": []' + _EXTRA, checked)
    assert isinstance(error, MalformedResponse) and on_loop == [False, False]
    assert "the answer holds no choice" in str(error), error
    twice = _ANSWER + b', "usage": {}, "usage": {}' + _EXTRA
    error, on_loop = _read_where(monkeypatch, twice)
    assert isinstance(error, MalformedResponse) and on_loop == [False]
    assert 'the key "usage" is written twice' in str(error), error
    listed = b'["plain-key-of-the-caller", ' + _EXTRA[len(b', "extra": ['):-1]
    error, on_loop = _read_where(monkeypatch, listed)
    assert isinstance(error, MalformedResponse) and on_loop == [False]
    assert "not a JSON object" in str(error) and isinstance(error.body, list)
    assert error.body[0] == MASK and len(error.body) == 30_001
    for depth in (200, 5000):  # (past the bound; past what Python's reader goes to)
        deep = (_ANSWER + b', "deep": ' + b"[" * depth + b"]" * depth + _EXTRA)
        error, on_loop = _read_where(monkeypatch, deep)
        assert isinstance(error, MalformedResponse) and on_loop == [False]
        assert "the answer nests deeper than 64 levels" in str(error), error


def test_a_messages_answer_of_many_blocks_is_made_an_openai_one_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Messages API answer of 30,000 empty content blocks besides its text (a walk of each
    to make its OpenAI answer and tell what it reports: 1.3 s for 4 MiB of them, where it held
    the event loop) is read and made one on a worker thread."""
    message = (b'{"id": "msg", "type": "message", "role": "assistant", "model": "c", '
               b'"stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 2}, '
               b'"content": [{"type": "text", "text": "DENSE"}, '
               + _EXTRA[len(b', "extra": ['):])
    made, on_loop = _read_where(monkeypatch, message, functools.partial(
        anthropic.openai_answer, legacy=False, model="m"))
    assert on_loop == [False, False]
    assert isinstance(made, tuple)
    answer, reported = made
    assert answer["choices"][0]["message"]["content"] == "DENSE"
    assert answer["usage"]["prompt_tokens"] == 3 and reported.prompt_tokens == 3


def test_a_stream_event_past_off_loop_bytes_is_read_off_the_event_loop() -> None:
    """A stream's event whose data is longer than OFF_LOOP_BYTES is read on a worker thread,
    the event loop free meanwhile (a line of 1 MiB of empty objects held it 0.1 to 0.4 s);
    the others at once, on the loop. Its chunk is passed on as read (a lone surrogate as
    U+FFFD, as ever)."""
    def data(delta: bytes, extra: bytes = b"}") -> bytes:
        return (b'data: {"id": "c", "choices": [{"index": 0, "delta": ' + delta
                + b', "finish_reason": null}]' + extra + b"\n\n")

    body = (data(b'{"role": "assistant", "content": ""}')
            + data(b'{"content": "DENSE \\ud800"}', _EXTRA)
            + b'data: {"id": "c", "choices": [{"index": 0, "delta": {}, '
              b'"finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
    fed: list[tuple[int, int]] = []

    class Noting(OpenAIChunkDecoder):
        def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
            fed.append((len(event.data), threading.get_ident()))
            return super().feed(event)

    async def run() -> tuple[list[dict[str, Any]], int]:
        loop_thread = threading.get_ident()
        async with httpx.AsyncClient(transport=answer(body)) as client:
            return [chunk async for chunks in stream_chunks(
                client, "http://up/x", {"stream": True}, {}, Timeouts(), Noting("m"),
                model="m") for chunk in chunks], loop_thread

    chunks, loop_thread = asyncio.run(run())
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == [
        "", "DENSE \ufffd", None]
    assert len(chunks[1]["extra"]) == 30_000
    assert [(size > OFF_LOOP_BYTES, thread == loop_thread) for size, thread in fed] == [
        (False, True), (True, False), (False, True), (False, True)]


def test_a_whole_answer_to_a_stream_past_off_loop_bytes_is_read_off_the_event_loop() -> None:
    """A stream request answered with a whole JSON answer (as an upstream ignoring ``stream``
    does) longer than OFF_LOOP_BYTES is read, and made the stream's chunks, on a worker
    thread; its chunks are those of the answer, as ever."""
    made: list[int] = []

    class Noting(OpenAIChunkDecoder):
        def whole(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
            made.append(threading.get_ident())
            return super().whole(body)

    async def run() -> tuple[list[dict[str, Any]], int]:
        transport = answer(_ANSWER + _EXTRA, kind="application/json")
        async with httpx.AsyncClient(transport=transport) as client:
            return [chunk async for chunks in stream_chunks(
                client, "http://up/x", {"stream": True}, {}, Timeouts(), Noting("m"),
                model="m") for chunk in chunks], threading.get_ident()

    chunks, loop_thread = asyncio.run(run())
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c.get("choices")) == "DENSE"
    assert len(made) == 1 and made[0] != loop_thread
