"""Each role's message carries only the content-part types OpenAI's Chat Completions API takes
from it (system, developer and tool: text; user: text, image_url, input_audio, file;
assistant: text, refusal), each part with its own field: anything else is refused naming the
path, at both ways in (the bytes of an HTTP body and a Python-built body)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchpoint.errors import InvalidInputError
from switchpoint.gateway.parsing import check_chat_body, parse_chat_body

TEXT = {"type": "text", "text": "hi"}
IMAGE = {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-abc"}}
REFUSAL = {"type": "refusal", "refusal": "I can't."}
CACHE = {"prompt_cache_breakpoint": {"mode": "explicit"}}

# Messages OpenAI takes (each as the openai package's types spell it): they pass as sent.
ACCEPTED: list[list[dict[str, Any]]] = [
    [{"role": "system", "content": [TEXT, {**TEXT, **CACHE}]}, {"role": "user", "content": "x"}],
    [{"role": "developer", "content": [TEXT]}, {"role": "user", "content": [TEXT]}],
    [{"role": "user", "content": [TEXT, IMAGE, AUDIO, FILE]}],
    [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                            "detail": "high"}, **CACHE},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
        {"type": "file", "file": {}}]}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": [TEXT, REFUSAL]}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": [REFUSAL]}],
    [{"role": "user", "content": "x"},
     {"role": "assistant", "content": [], "tool_calls": [
         {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "c1", "content": [TEXT, TEXT]}],
    [{"role": "user", "content": "x"},
     {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
     {"role": "function", "name": "f", "content": [TEXT]}],
    # Keys a part has besides its type and field go upstream as sent.
    [{"role": "user", "content": [{**TEXT, "cache_control": {"type": "ephemeral"}}]}],
]

# (messages, the path the error names, what it says)
REFUSED: list[tuple[list[dict[str, Any]], str, str]] = [
    ([{"role": "system", "content": [IMAGE]}], "messages[0].content[0].type",
     'is "image_url", which a system message does not take: a system message takes "text" '
     "parts only"),
    ([{"role": "developer", "content": [TEXT, REFUSAL]}], "messages[0].content[1].type",
     'a developer message takes "text" parts only'),
    ([{"role": "user", "content": [TEXT, REFUSAL]}], "messages[0].content[1].type",
     'is "refusal", which a user message does not take: a user message takes "text", '
     '"image_url", "input_audio" or "file" parts'),
    ([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}],
     "messages[0].content[0].type", 'is "video_url", which a user message does not take'),
    ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}],
     "messages[0].content[0].type", 'is "input_image", which a user message does not take'),
    ([{"role": "user", "content": [{"type": "Text", "text": "x"}]}],
     "messages[0].content[0].type", 'is "Text", which a user message does not take'),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": [IMAGE]}],
     "messages[1].content[0].type",
     'an assistant message takes "text" or "refusal" parts'),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": [FILE]}],
     "messages[2].content[0].type", 'a tool message takes "text" parts only'),
    ([{"role": "user", "content": "x"}, {"role": "function", "name": "f", "content": [AUDIO]}],
     "messages[1].content[0].type", 'a function message takes "text" parts only'),
    # A known type without its field, or with the field of the wrong type.
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text",
     'is missing; a text part carries its text: {"type": "text", "text": "..."}'),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}],
     "messages[0].content[0].text", "is null; a text part carries its text"),
    ([{"role": "system", "content": [{"type": "text", "text": 5}]}],
     "messages[0].content[0].text", "must be a string, got 5"),
    ([{"role": "user", "content": [TEXT, {"type": "image_url",
                                          "image_url": "https://x.test/a.png"}]}],
     "messages[0].content[1].image_url",
     'must be an object, got "https://x.test/a.png"; an image_url part carries '
     '{"type": "image_url", "image_url": {"url": "..."}}'),
    ([{"role": "user", "content": [{"type": "image_url"}]}],
     "messages[0].content[0].image_url", "is missing; an image_url part carries"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}],
     "messages[0].content[0].image_url.url", "is missing; an image_url part carries"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ["a"]}}]}],
     "messages[0].content[0].image_url.url", "must be a string, got a list"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "SUQz"}}]}],
     "messages[0].content[0].input_audio.format",
     'is missing; an input_audio part carries {"type": "input_audio", "input_audio": '
     '{"data": "<base64>", "format": "wav"}}'),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": None}]}],
     "messages[0].content[0].input_audio", "is null; an input_audio part carries"),
    ([{"role": "user", "content": [{"type": "file", "file": "file-abc"}]}],
     "messages[0].content[0].file", 'must be an object, got "file-abc"'),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "content": [{"type": "refusal", "text": "No."}]}],
     "messages[1].content[0].refusal",
     'is missing; a refusal part carries its text: {"type": "refusal", "refusal": "..."}'),
]


def _refused(body: dict[str, Any]) -> list[InvalidInputError]:
    errors = []
    for door in ("bytes", "python"):
        with pytest.raises(InvalidInputError) as info:
            if door == "bytes":
                parse_chat_body(json.dumps(body).encode())
            else:
                check_chat_body(body)
        errors.append(info.value)
    return errors


@pytest.mark.parametrize("messages", ACCEPTED)
def test_the_parts_openai_takes_pass_as_sent(messages: list[dict[str, Any]]) -> None:
    body = {"model": "auto", "messages": messages}
    sent = json.loads(json.dumps(body))
    assert parse_chat_body(json.dumps(body).encode()) == sent
    assert check_chat_body(body) == sent


@pytest.mark.parametrize(("messages", "path", "says"), REFUSED)
def test_a_part_its_role_does_not_take_or_without_its_field_is_refused_naming_the_path(
        messages: list[dict[str, Any]], path: str, says: str) -> None:
    for error in _refused({"model": "auto", "messages": messages}):
        assert error.field == "messages"
        assert str(error).startswith(f"{path}: ") and says in str(error), str(error)


def test_a_long_unknown_type_is_quoted_short() -> None:
    kind = "x" * 10_000
    for error in _refused({"model": "auto", "messages": [
            {"role": "user", "content": [{"type": kind}]}]}):
        assert len(str(error)) < 400 and 'is "xxx' in str(error) and '…", which' in str(error)


def _image(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [TEXT, {"type": "image_url", "image_url": {"url": url}}]}]


# An image is given as OpenAI takes it, whichever model answers: an http(s) URL, or a data
# URL (whose base64 data, when it says it is base64, is base64).
@pytest.mark.parametrize("url", [
    "https://x.test/cat.png", "HTTP://x.test/cat.png?size=2#top", "http://127.0.0.1:8/a",
    "data:image/png;base64,iVBORw0KGgo=", 'data:image/png;name="a,b";base64,iVBORw0KGgo=',
    "data:image/svg+xml,<svg/>", "data:,",
    # Base64 as a browser reads a data URL's: line breaks and spaces skipped (MIME base64, as
    # base64.encodebytes writes it), padding optional.
    "data:image/png;base64,iVBORw0K\nGgo=\n", "data:image/png;base64,iVBOR w0KGgo=",
    "data:image/png;base64,iVBORw0KGgo", "data:image/png;base64,iVBORw0K\r\nGgo",
    # Hosts and forms a provider fetches: an IDN host, a port, an IPv6 literal, credentials
    # (the provider sends them; an error quoting the URL redacts them), an upper-case scheme.
    "https://bücher.example/katze.png", "https://xn--bcher-kva.example/katze.png",
    "https://x.test:8443/a.png", "http://[2001:db8::1]:8080/a.png",
    "https://user:pass@x.test/a.png", "HTTPS://X.TEST/A.PNG",
])
def test_an_image_given_as_openai_takes_it_passes(url: str) -> None:
    body = {"model": "auto", "messages": _image(url)}
    assert check_chat_body(json.loads(json.dumps(body))) == body
    assert parse_chat_body(json.dumps(body).encode()) == body


@pytest.mark.parametrize(("url", "says"), [
    ("file:///etc/passwd", "uses the file scheme"),
    ("ftp://x.test/cat.png", "uses the ftp scheme"),
    ("FTP://x.test/cat.png", "uses the ftp scheme"),
    ("gopher://x.test/1", "uses the gopher scheme"),
    ("javascript:alert(1)", "uses the javascript scheme"),
    ("cat.png", "has no scheme"),
    ("/tmp/cat.png", "has no scheme"),
    ("https:cat.png", "names no host"),
    ("http:///cat.png", "names no host"),
    ("data:image/png;base64,iVBORw0_Ggo=", 'its base64 data holds "_" at character 7'),
    ("data:image/png;base64,iVBORw0KG", "ends in a group of 1 character"),
    ("data:image/png;base64,", "its base64 data is empty"),
    ('data:image/png;name="a,b;base64,iVBORw0KGgo=', "has no comma ending its header"),
], ids=["file", "ftp", "ftp-upper", "gopher", "javascript", "relative", "path",
        "https-no-host", "http-empty-host", "base64-url-safe", "base64-one-char-group",
        "base64-empty",
        "unclosed-quote"])
def test_an_image_openai_does_not_take_is_refused_naming_the_part(url: str, says: str) -> None:
    for error in _refused({"model": "auto", "messages": [{"role": "user", "content": "x"},
                                                          {"role": "assistant", "content": "y"},
                                                          *_image(url)]}):
        assert error.field == "messages"
        assert str(error).startswith("messages[2].content[1].image_url.url: "), str(error)
        assert says in str(error), str(error)
        # How to give it.
        assert "http(s) URL" in str(error) and "data:image/png;base64," in str(error)


@pytest.mark.parametrize("detail", ["auto", "low", "high", "original"])
def test_an_images_detail_goes_upstream_as_sent(detail: str) -> None:
    # OpenAI takes auto, low and high (and newer models more); which it takes is its rule,
    # so the gateway reads no detail.
    body = {"model": "auto", "messages": [{"role": "user", "content": [TEXT, {
        "type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": detail}}]}]}
    assert parse_chat_body(json.dumps(body).encode()) == body


@pytest.mark.parametrize("url", ["https://user:s3cret-pass@/cat.png",
                                 "cat.png?token=s3cret-pass", "x.test/a.png?api_key=s3cret-pass"])
def test_a_refused_image_url_is_quoted_with_its_credentials_redacted(url: str) -> None:
    for error in _refused({"model": "auto", "messages": _image(url)}):
        assert "s3cret" not in str(error) and "[REDACTED]" in str(error), str(error)


def test_a_refused_image_url_is_quoted_short() -> None:
    url = "file:///" + "x" * 10_000
    for error in _refused({"model": "auto", "messages": _image(url)}):
        assert len(str(error)) < 600, str(error)
