"""The fake provider itself: every failure it offers acts in each dialect it speaks (OpenAI's
chat completions, Anthropic's messages), streamed and not, or says it cannot. A behaviour
silently answered as ``ok`` would let a test pass without the fault it meant to make."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from tests.fakes.fake_provider import FakeProviderProcess

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
}


def _no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise KeyError("twice")
    return dict(pairs)


def _parse(data: bytes | str) -> Any:
    return json.loads(data, object_pairs_hook=_no_twice)


def _whole(data: bytes) -> str:
    try:
        body = _parse(data)
    except KeyError:
        return "twice"
    except ValueError:
        return "malformed"
    if "error" in body:
        return "error"
    ends = [c.get("finish_reason") for c in body.get("choices", [])] or [body.get("stop_reason")]
    return "ok" if all(ends) else "no finish"


def _stream(data: bytes) -> str:
    events = [line[len("data:"):].strip() for line in data.decode().split("\n")
              if line.startswith("data:")]
    finished = ended = False
    for text in events:
        if text == "[DONE]":
            ended = True
            continue
        try:
            event = _parse(text)
        except KeyError:
            return "twice"
        except ValueError:
            return "malformed"
        if "error" in event:
            return "error event"
        finished |= any(c.get("finish_reason") for c in event.get("choices", []))
        finished |= bool((event.get("delta") or {}).get("stop_reason"))
        ended |= event.get("type") == "message_stop"
    return "no finish" if not finished else "ok" if ended else "no end"


def outcome(fake: FakeProviderProcess, dialect: str, stream: bool, behaviour: str) -> str:
    """What the fake answers a request naming ``behaviour`` in its prompt: ``no answer`` (the
    connection closed before a head), ``cut`` (a body short of what its framing promised),
    an error status, ``whole`` (a stream asked, a whole answer given), or what the 200 body
    shows otherwise: ``ok``, ``twice`` (a key written twice), ``malformed``, ``error`` (an
    error in a 200), ``error event``, ``no finish`` (no finish or stop reason), ``no end`` (a
    finished stream without its end marker)."""
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
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), headers)
        try:
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return "no answer"
        try:
            data = response.read()
        except (http.client.IncompleteRead, ConnectionResetError):
            return "cut"
    finally:
        connection.close()
    if response.status != 200:
        error = json.loads(data)
        if response.status != 501:  # (the fake's own refusal; any other is the dialect's)
            assert (error.get("type") == "error") == (dialect == "anthropic"), error
        return str(response.status)
    if response.getheader("content-type") == "application/json":
        said = _whole(data)
        return "whole" if stream and said == "ok" else said
    return _stream(data)


@pytest.mark.parametrize("behaviour", list(ACTS))
@pytest.mark.parametrize(("dialect", "stream"), MODES, ids=MODE_IDS)
def test_each_behaviour_acts_in_each_dialect_streamed_and_not(
        fake: FakeProviderProcess, dialect: str, stream: bool, behaviour: str) -> None:
    expected = ACTS[behaviour][MODES.index((dialect, stream))]
    assert outcome(fake, dialect, stream, behaviour) == expected
