"""Reading a data URL's header: media type, parameters skipped (a quoted value may hold ``;``,
``,`` and escaped quotes), base64, where data begins; and whether its base64 data is
base64."""

from __future__ import annotations

import base64

import pytest

from switchpoint.gateway.data_url import (
    MAX_HEADER,
    DataURL,
    base64_problem,
    compact_base64,
    image_type,
    media_type_of,
    parse_data_url,
)


@pytest.mark.parametrize(("url", "read"), [
    ("data:image/png;base64,iVBOR", ("image/png", True)),
    ("DATA:Image/PNG;name=a.png;charset=x;BASE64,iVBOR", ("image/png", True)),
    ("data:image/svg+xml,<svg/>", ("image/svg+xml", False)),
    ("data:image/png;base64=no,AA", ("image/png", False)),
    ("data:,hello", ("", False)),
    ("data:;base64,aGk=", ("", True)),
], ids=["plain", "parameters-and-case", "not-base64", "base64-as-parameter", "no-header",
       "base64-without-type"])
def test_the_header_is_read(url: str, read: tuple[str, bool]) -> None:
    header = parse_data_url(url)
    assert header is not None and (header.media_type, header.base64) == read
    # The data begins after the first comma.
    assert header.data_at == url.find(",") + 1


@pytest.mark.parametrize(("url", "read", "data"), [
    ('data:image/png;name="a;b";base64,iVBOR', ("image/png", True), "iVBOR"),
    ('data:image/png;name="a,b";base64,iVBOR', ("image/png", True), "iVBOR"),
    ('data:image/png;name="x;base64",iVBOR', ("image/png", False), "iVBOR"),
    ('data:image/png;name="say \\"hi\\", ok";base64,iVBOR', ("image/png", True), "iVBOR"),
    ('data:image/png;name="\\\\";base64,iVBOR', ("image/png", True), "iVBOR"),
    ('data:image/png;name="";base64,iVBOR', ("image/png", True), "iVBOR"),
], ids=["semicolon", "comma", "base64-in-quotes", "escaped-quotes", "escaped-backslash",
       "empty"])
def test_a_quoted_parameter_value_is_one_value(url: str, read: tuple[str, bool],
                                               data: str) -> None:
    # (RFC 2397 parameters take RFC 2045 values: a token, or a quoted-string in which ";"
    # and "," are text and a backslash escapes the next character.)
    header = parse_data_url(url)
    assert header is not None and (header.media_type, header.base64) == read
    assert url[header.data_at:] == data


@pytest.mark.parametrize("url", [
    "data:image/png;base64",
    'data:image/png;name="a,b;base64,iVBOR',
    'data:image/png;name="a\\",b;base64,iVBOR',
], ids=["no-comma", "unclosed-quote", "escaped-closing-quote"])
def test_a_header_without_its_comma_has_no_data(url: str) -> None:
    assert parse_data_url(url) == DataURL("", False, -1)


def test_only_data_urls_are_read_and_only_a_bounded_header() -> None:
    assert parse_data_url("https://x.test/a.png") is None
    assert parse_data_url("dat") is None
    long_header = "data:image/png;" + "p=1;" * MAX_HEADER + "base64,AA"
    assert parse_data_url(long_header) == DataURL("", False, -1)
    long_quote = 'data:image/png;name="' + "a" * MAX_HEADER + '";base64,AA'
    assert parse_data_url(long_quote) == DataURL("", False, -1)


@pytest.mark.parametrize("data", ["iVBORw0KGgo=", "aGk=", "aGkh", "AAAA" * 1000])
def test_base64_data_passes(data: str) -> None:
    assert base64_problem(data) is None
    assert compact_base64(data) is data  # (strict data is sent as it came)


# Base64 as clients write it besides strict RFC 4648, which a browser reads as a data URL's
# (the WHATWG forgiving-base64 decode skips whitespace, and padding may be left out).
_PAYLOAD = bytes(range(256)) * 3
WRITTEN = {
    "mime-line-breaks": base64.encodebytes(_PAYLOAD).decode(),  # (76-character lines)
    "crlf-line-breaks": base64.encodebytes(_PAYLOAD).decode().replace("\n", "\r\n"),
    "spaces-and-tabs": " ".join(base64.b64encode(_PAYLOAD).decode()[i:i + 8]
                                for i in range(0, 1024, 8)).replace(" ", "\t", 3),
    "unpadded": base64.b64encode(_PAYLOAD[:-1]).decode().rstrip("="),
    "unpadded-wrapped": base64.encodebytes(_PAYLOAD[:-2]).decode().replace("=", ""),
}


@pytest.mark.parametrize("written", list(WRITTEN))
def test_mime_wrapped_and_unpadded_base64_passes_and_compacts_to_strict(written: str) -> None:
    data = WRITTEN[written]
    assert base64_problem(data) is None
    strict = compact_base64(data)
    decoded = base64.b64decode(strict, validate=True)  # (strict: the Messages API's reading)
    assert decoded == base64.b64decode("".join(data.split()) + "==")
    assert _PAYLOAD.startswith(decoded) and len(decoded) >= len(_PAYLOAD) - 2


@pytest.mark.parametrize(("data", "says"), [
    ("", "is empty"),
    (" \r\n", "whitespace only"),
    ("iVBORw0KGgo=!", "character 12"),
    ("iVBO%2Bw0KGgo=", "character 4"),
    ("iVBORw0_Ggo=", "URL-safe"),
    ("iVBORw0-Ggo=", "character 7"),
    ("iVBORw0KGgo=AAAA", "after its padding"),
    ("aGk==", "padding"),
    ("A", "group of 1 character"),
    ("AAAA\nA", "group of 1 character"),
], ids=["empty", "whitespace", "trailing-junk", "percent-encoded", "url-safe-underscore",
       "url-safe-hyphen", "after-padding", "over-padded", "one-character",
       "one-character-group"])
def test_data_that_is_not_base64_is_named(data: str, says: str) -> None:
    problem = base64_problem(data)
    assert problem is not None and says in problem, problem


def _header(url: str) -> DataURL:
    header = parse_data_url(url)
    assert header is not None
    return header


# The first bytes of an image of each type the APIs take (and of a few they do not).
HEADS = {"image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/png": b"\x89PNG\r\n\x1a\n",
         "image/gif": b"GIF89a\x01\x00", "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 "}
OTHERS = {"bmp": b"BM6\x00\x00\x00", "riff-wave": b"RIFF\x24\x00\x00\x00WAVEfmt ",
          "text": b"hello there"}


@pytest.mark.parametrize("media", list(HEADS))
def test_the_image_type_is_read_from_the_first_bytes(media: str) -> None:
    data = base64.b64encode(HEADS[media] + b"\x00" * 64).decode()
    assert image_type(data) == media
    # A client's label does not change what the bytes are (OpenAI reads the bytes too).
    for label in ("image/png", "image/jpg", "application/octet-stream"):
        url = f"data:{label};base64,{data}"
        assert media_type_of(url, parse_data_url(url)) == media  # type: ignore[arg-type]


@pytest.mark.parametrize("media", list(HEADS))
def test_the_image_type_is_read_through_line_breaks(media: str) -> None:
    data = base64.encodebytes(HEADS[media] + b"\x00" * 64).decode()
    wrapped = "\r\n".join(data[i:i + 5] for i in range(0, len(data), 5))
    assert image_type(wrapped) == media
    url = f"data:image/png;base64,{wrapped}"
    assert media_type_of(url, parse_data_url(url)) == media  # type: ignore[arg-type]


@pytest.mark.parametrize("head", list(OTHERS.values()), ids=list(OTHERS))
def test_other_bytes_keep_the_type_the_header_names(head: bytes) -> None:
    data = base64.b64encode(head).decode()
    assert image_type(data) is None
    url = f"data:image/png;name=x;base64,{data}"
    assert media_type_of(url, parse_data_url(url)) == "image/png"  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["data:image/png,%89PNG", "data:image/png;base64,!!",
                                 "data:image/png;base64,"])
def test_data_that_is_not_readable_base64_keeps_the_type_the_header_names(url: str) -> None:
    assert media_type_of(url, parse_data_url(url)) == "image/png"  # type: ignore[arg-type]
