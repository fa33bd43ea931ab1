"""The fake provider itself: every failure it offers acts in each dialect it speaks (OpenAI's
chat completions, Anthropic's messages), streamed and not, or says it cannot, and answers in
that dialect's shapes (its errors, answers and stream events). A behaviour silently answered
as ``ok``, or in the other dialect's shape, would let a test pass without the fault it meant
to make."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

import pytest

from tests.fakes.fake_provider import FakeProviderProcess, _text_param

MODES = [("openai", False), ("openai", True), ("anthropic", False), ("anthropic", True)]
MODE_IDS = ["openai", "openai-stream", "anthropic", "anthropic-stream"]

# What each behaviour does, mode by mode (in MODES' order): see ``outcome``.
ACTS: dict[str, tuple[str, str, str, str]] = {
    "ok": ("ok", "ok", "ok", "ok"),
    "429": ("429", "429", "429", "429"),
    "529": ("529", "529", "529", "529"),
    "context_length": ("400", "400", "400", "400"),
    "content_filter": ("400", "400", "400", "400"),
    "reset": ("no answer",) * 4,
    "hang:seconds=0": ("no answer",) * 4,
    "stall:seconds=0": ("cut",) * 4,
    "cut": ("cut",) * 4,
    "malformed": ("malformed",) * 4,
    "twice": ("twice",) * 4,
    "twice:key=choices": ("twice", "twice", "501", "501"),  # (OpenAI's key)
    "twice:key=content": ("501", "501", "twice", "twice"),  # (the Messages API's key)
    "nodone": ("ok", "no end", "ok", "no end"),
    "nofinish": ("no finish",) * 4,
    "nodelta": ("501", "501", "501", "no finish"),
    "sse_error": ("500", "error event", "529", "error event"),
    "whole": ("ok", "whole", "ok", "whole"),
    "error200": ("error",) * 4,
    "error200:code=insufficient_quota": ("error",) * 4,
    "together:n=1": ("ok",) * 4,
    "echo_auth": ("401",) * 4,
    "echo_auth:status=500": ("500",) * 4,
    "echo_url": ("404",) * 4,
    "redirect": ("307",) * 4,  # (its body a whole answer in the dialect's shape)
    "html": ("html",) * 4,
    "encoded": ("ok",) * 4,
    "overrun": ("ok",) * 4,  # (what follows the declared length is left unread)
    "huge:mb=1": ("ok",) * 4,
    "huge:mb=1,length=1": ("ok",) * 4,
    "huge_line:mb=1": ("cut",) * 4,
    "trickle:every=0": ("ok", "no finish", "ok", "no finish"),
    "trickle:every=0,chunks=3": ("ok",) * 4,
    "hold:seconds=0": ("no answer",) * 4,
}

#: What each 200 answer behaviour says, where it says something of its own.
SAYS = {"encoded": "ENCODED", "overrun": "OVERRUN", "redirect": "REDIRECTED"}


def _no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise KeyError("twice")
    return dict(pairs)


def _parse(data: bytes | str) -> Any:
    return json.loads(data, object_pairs_hook=_no_twice)


def _error(dialect: str, body: Any) -> None:
    """``body`` is an error in ``dialect``'s shape: the Messages API's ``{"type": "error",
    "error": {"type", "message"}}``, OpenAI's ``{"error": {"message", "type", ...}}``."""
    inner = body.get("error") if isinstance(body, dict) else None
    assert isinstance(inner, dict) and isinstance(inner.get("message"), str), body
    assert isinstance(inner.get("type"), str), body
    assert (body.get("type") == "error") == (dialect == "anthropic"), body


def _text(dialect: str, answer: dict[str, Any]) -> str:
    """What a whole answer says, checked to be in ``dialect``'s shape."""
    if dialect == "anthropic":
        assert answer.get("type") == "message" and answer.get("role") == "assistant", answer
        assert set(answer["usage"]) >= {"input_tokens", "output_tokens"}, answer
        return "".join(b.get("text", "") for b in answer["content"])
    assert answer.get("object") == "chat.completion" and "choices" in answer, answer
    return "".join(c["message"].get("content") or "" for c in answer["choices"])


def _whole(dialect: str, data: bytes, said: list[str]) -> str:
    try:
        body = _parse(data)
    except KeyError:
        return "twice"
    except ValueError:
        return "malformed"
    if "error" in body:
        _error(dialect, body)
        return "error"
    said.append(_text(dialect, body))
    ends = [c.get("finish_reason") for c in body.get("choices", [])] or [body.get("stop_reason")]
    return "ok" if all(ends) else "no finish"


def _events(data: bytes) -> list[tuple[str | None, str]]:
    """The events of an event stream whose end has come (name, data), comments and events
    without data skipped."""
    events = []
    for block in re.split(r"\n\n", data.decode(errors="replace"))[:-1]:
        lines = block.split("\n")
        names = [line[len("event:"):].strip() for line in lines if line.startswith("event:")]
        texts = [line[len("data:"):].strip() for line in lines if line.startswith("data:")]
        if any(texts):
            events.append((names[-1] if names else None, "\n".join(texts)))
    return events


def _stream(dialect: str, data: bytes, said: list[str]) -> str:
    finished = ended = False
    for name, text in _events(data):
        if text == "[DONE]":
            assert dialect == "openai" and name is None, "[DONE] in a Messages API stream"
            ended = True
            continue
        try:
            event = _parse(text)
        except KeyError:
            return "twice"
        except ValueError:
            return "malformed"
        if dialect == "anthropic":  # (each event named as its data's type says)
            assert name is not None and name == event.get("type"), (name, event)
        else:
            assert name in (None, "error"), name
        if "error" in event:
            _error(dialect, event)
            return "error event"
        if dialect == "openai":
            assert event.get("object") == "chat.completion.chunk", event
            said += [c["delta"].get("content") or "" for c in event["choices"]]
        else:
            said.append(event.get("delta", {}).get("text", ""))
        finished |= any(c.get("finish_reason") for c in event.get("choices", []))
        finished |= bool((event.get("delta") or {}).get("stop_reason"))
        ended |= event.get("type") == "message_stop"
    return "no finish" if not finished else "ok" if ended else "no end"


def outcome(fake: FakeProviderProcess, dialect: str, stream: bool, behaviour: str) -> str:
    """What the fake answers a request naming ``behaviour`` in its prompt: ``no answer`` (the
    connection closed before a head), ``cut`` (a body short of what its framing promised),
    an error status, ``whole`` (a stream asked, a whole answer given), ``html`` (a web page),
    or what the 200 body shows otherwise: ``ok``, ``twice`` (a key written twice),
    ``malformed``, ``error`` (an error in a 200), ``error event``, ``no finish`` (no finish or
    stop reason), ``no end`` (a finished stream without its end marker). Each error, answer
    and event is checked to be in the dialect's shape, and an answer to say what its
    behaviour says (:data:`SAYS`)."""
    prompt = f"hello [[fake:{behaviour}]]"
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    headers = {"content-type": "application/json"}
    if dialect == "openai":
        path, body["model"] = "/v1/chat/completions", "fake-gpt-1"
        if stream:
            body["stream_options"] = {"include_usage": True}
    else:
        path, body["model"], body["max_tokens"] = "/v1/messages", "fake-claude-1", 16
        headers["anthropic-version"] = "2023-06-01"
    body["stream"] = stream
    said: list[str] = []
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), headers)
        try:
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return "no answer"
        kind = response.getheader("content-type")
        try:
            data = response.read()
        except http.client.IncompleteRead as cut:
            if kind == "text/event-stream":  # (what came before the cut, in its shape)
                _stream(dialect, cut.partial, said)
            return "cut"
        except ConnectionResetError:
            return "cut"
    finally:
        connection.close()
    if kind == "text/html":
        return "html"
    if response.status != 200:
        answer = json.loads(data)
        if "error" not in answer:  # (a redirect's body)
            said.append(_text(dialect, answer))
        elif response.status != 501:  # (the fake's own refusal; any other is the dialect's)
            _error(dialect, answer)
        result = str(response.status)
    elif kind == "application/json":
        result = _whole(dialect, data, said)
        result = "whole" if stream and result == "ok" else result
    else:
        result = _stream(dialect, data, said)
    name = behaviour.partition(":")[0]
    if name in SAYS:
        assert "".join(said) == SAYS[name], said
    return result


@pytest.mark.parametrize("behaviour", list(ACTS))
@pytest.mark.parametrize(("dialect", "stream"), MODES, ids=MODE_IDS)
def test_each_behaviour_acts_in_each_dialect_streamed_and_not(
        fake: FakeProviderProcess, dialect: str, stream: bool, behaviour: str) -> None:
    expected = ACTS[behaviour][MODES.index((dialect, stream))]
    assert outcome(fake, dialect, stream, behaviour) == expected


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("after", [0, 2])
def test_a_stream_stalls_after_the_content_it_is_told(
        fake: FakeProviderProcess, dialect: str, after: int) -> None:
    # stall:after=N streams N content chunks (none by default) before its silence and cut.
    body: dict[str, Any] = {"stream": True, "messages": [
        {"role": "user", "content": f"one two three four [[fake:stall:seconds=0,after={after}]]"}]}
    headers = {"content-type": "application/json"}
    if dialect == "openai":
        path, body["model"] = "/v1/chat/completions", "fake-gpt-1"
    else:
        path, body["model"], body["max_tokens"] = "/v1/messages", "fake-claude-1", 16
        headers["anthropic-version"] = "2023-06-01"
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
    finally:
        connection.close()
    events = [json.loads(line[len("data:"):]) for line in cut.value.partial.decode().split("\n")
              if line.startswith("data:")]
    texts = [(c["choices"][0]["delta"].get("content") if dialect == "openai"
              else (c.get("delta") or {}).get("text")) for c in events]
    assert [t for t in texts if t] == ["Echo ", "from "][:after]


@pytest.mark.parametrize("behaviour", ["ok:thinking=250", "stall:seconds=0,after=1,thinking=250"])
def test_an_anthropic_stream_thinks_before_its_answer_when_told(
        fake: FakeProviderProcess, behaviour: str) -> None:
    # thinking=N streams a thinking block of N characters (and its signature) before the
    # answer's block; after= counts the answer's deltas alone.
    body = {"stream": True, "model": "fake-claude-1", "max_tokens": 16, "messages": [
        {"role": "user", "content": f"one two three four [[fake:{behaviour}]]"}]}
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        connection.request("POST", "/v1/messages", json.dumps(body), {
            "content-type": "application/json", "anthropic-version": "2023-06-01"})
        response = connection.getresponse()
        try:
            data = response.read()
        except http.client.IncompleteRead as short:
            data = short.partial
    finally:
        connection.close()
    events = [json.loads(line[len("data:"):]) for line in data.decode().split("\n")
              if line.startswith("data:")]
    starts = [(e["index"], e["content_block"]["type"]) for e in events
              if e["type"] == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text")]
    deltas = [(e["index"], e["delta"]["type"], e["delta"].get("thinking") or
               e["delta"].get("text")) for e in events if e["type"] == "content_block_delta"]
    thought = [d for d in deltas if d[1] == "thinking_delta"]
    assert all(index == 0 for index, _, _ in thought)
    assert "".join(text for _, _, text in thought) == "t" * 250
    assert [d[:2] for d in deltas if d[1] == "signature_delta"] == [(0, "signature_delta")]
    texts = [text for index, kind, text in deltas if kind == "text_delta" and index == 1]
    cut = behaviour.startswith("stall")
    assert texts[:1] == ["Echo "] and (len(texts) == 1) == cut
    assert (events[-1]["type"] == "message_stop") != cut


def _post(fake: FakeProviderProcess, path: str, body: dict[str, Any]) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), {
            "content-type": "application/json", "anthropic-version": "2023-06-01"})
        return connection.getresponse().read()
    finally:
        connection.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_anthropic_answer_holds_redacted_thinking_when_told(
        fake: FakeProviderProcess, stream: bool) -> None:
    # redacted=N: a redacted_thinking block of N characters of data, after any thinking and
    # before the answer's block (streamed whole in its content_block_start).
    data = _post(fake, "/v1/messages", {
        "stream": stream, "model": "fake-claude-1", "max_tokens": 16, "messages": [
            {"role": "user", "content": "one two [[fake:ok:thinking=10,redacted=30]]"}]})
    if stream:
        events = [json.loads(line[len("data:"):]) for line in data.decode().split("\n")
                  if line.startswith("data:")]
        blocks = [(e["index"], e["content_block"]) for e in events
                  if e["type"] == "content_block_start"]
        assert [(i, b["type"]) for i, b in blocks] == [
            (0, "thinking"), (1, "redacted_thinking"), (2, "text")]
        assert blocks[1][1]["data"] == "r" * 30
        assert {e["index"] for e in events if e["type"] == "content_block_delta"
                and e["delta"]["type"] == "text_delta"} == {2}
    else:
        content = json.loads(data)["content"]
        assert [b["type"] for b in content] == ["thinking", "redacted_thinking", "text"]
        assert content[1]["data"] == "r" * 30


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_an_openai_answer_reasons_before_its_answer_when_told(
        fake: FakeProviderProcess, stream: bool, key: str) -> None:
    # reasoning=N: N characters of reasoning (reasoning_content, or reasoning_key=) in the
    # message, or streamed 100 a delta before the answer's chunks.
    keyed = "" if key == "reasoning_content" else f",reasoning_key={key}"
    data = _post(fake, "/v1/chat/completions", {
        "stream": stream, "model": "fake-gpt-1", "messages": [
            {"role": "user", "content": f"one two [[fake:ok:reasoning=250{keyed}]]"}]})
    if stream:
        deltas = [json.loads(line[len("data:"):])["choices"][0]["delta"]
                  for line in data.decode().split("\n")
                  if line.startswith("data:") and line != "data: [DONE]"
                  and json.loads(line[len("data:"):])["choices"]]
        reasoned = [d[key] for d in deltas if key in d]
        assert reasoned == ["r" * 100, "r" * 100, "r" * 50]
        first = next(i for i, d in enumerate(deltas) if d.get("content"))
        assert all(key not in d for d in deltas[first:])
    else:
        message = json.loads(data)["choices"][0]["message"]
        assert message[key] == "r" * 250 and message["content"].startswith("Echo ")


def test_a_text_parameter_reads_wtf8_and_replaces_a_byte_it_cannot() -> None:
    # (a byte no WTF-8 reading takes, %FF, raised in the fake, which dropped the connection
    # rather than answering)
    assert _text_param({"text": "a%2Cb"}, "text") == "a,b"
    assert _text_param({"text": "%ED%A0%80"}, "text") == "\ud800"
    assert _text_param({"text": "a%FFb"}, "text") == "a\ufffdb"
