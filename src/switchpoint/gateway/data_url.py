"""Reading a ``data:`` URL (RFC 2397): its media type, whether its data is base64, where its
data begins, whether base64 data is base64, and which image type its first bytes show.

``data:[<media type>][;<parameter>=<value>]*[;base64],<data>``: the media type is
case-insensitive (read lower-cased), parameters (``charset``, ``name``, ...) are skipped, and
``;base64`` is the last segment before the comma that ends the header. A parameter's value is
a token or an RFC 2045 quoted-string (``name="a;b,c"``), in which ``;`` and ``,`` are text and
a backslash escapes the next character: the header ends at the first comma outside quotes.
Only the header is read by :func:`parse_data_url`, never the data (a payload is as long as the
body that carries it, which is bounded elsewhere); :func:`base64_problem` reads the data.

Base64 data is read as a browser reads a data URL's (the WHATWG "forgiving-base64 decode"):
ASCII whitespace is skipped (MIME base64, as ``base64.encodebytes`` writes it, breaks lines
every 76 characters) and the padding may be left out. :func:`compact_base64` writes such data
as strict RFC 4648 base64, for an API that decodes only that.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from switchpoint._messages import json_quoted

# Characters of header read before the comma: a media type and a few parameters fit; a URL
# whose comma comes later is not a data URL read here.
MAX_HEADER = 1_024
_SCHEME = "data:"
# How base64 data is written (RFC 4648's alphabet, padded to a multiple of four characters).
BASE64_WRITTEN = ("standard base64: A-Z, a-z, 0-9, + and / (not URL-safe - and _), = padding "
                  "at the end only; line breaks and spaces are skipped")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\t\n\f\r ]")
# ASCII whitespace, which a reader of base64 data skips.
_SPACES = "\t\n\f\r "
_WHITESPACE = re.compile(r"[\t\n\f\r ]+")
# Characters of data read to tell an image's type: 16 characters of base64 (12 bytes) once
# whitespace is skipped, with room for a few line breaks.
_HEAD = 64


@dataclass(frozen=True)
class DataURL:
    """A data URL's header: ``media_type`` lower-cased, without parameters ("" when the URL
    names none or none could be read), ``base64`` whether its data is base64, ``data_at``
    where in the URL its data begins (-1 when the header has no comma: no data can be read)."""

    media_type: str
    base64: bool
    data_at: int


def is_data_url(url: str) -> bool:
    """Whether ``url`` is a ``data:`` URL (the scheme is case-insensitive)."""
    return url[:len(_SCHEME)].lower() == _SCHEME


def _header_segments(url: str) -> tuple[list[str], int] | None:
    """The ``;``-separated segments of a data URL's header (quoted values kept whole) and the
    index of the comma ending it, or None when no comma outside quotes ends it within
    :data:`MAX_HEADER` characters."""
    segments: list[str] = []
    start = i = len(_SCHEME)
    end = min(len(url), len(_SCHEME) + MAX_HEADER)
    quoted = False
    while i < end:
        char = url[i]
        if quoted:
            if char == "\\":
                i += 1  # (the escaped character is text, a quote included)
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in ";,":
            segments.append(url[start:i])
            start = i + 1
            if char == ",":
                return segments, i
        i += 1
    return None


def parse_data_url(url: str) -> DataURL | None:
    """The header of ``url`` when it is a data URL (None otherwise)."""
    if not is_data_url(url):
        return None
    read = _header_segments(url)
    if read is None:
        return DataURL(media_type="", base64=False, data_at=-1)
    segments, comma = read
    media = segments[0].strip().lower()
    base64 = len(segments) > 1 and segments[-1].strip().lower() == "base64"
    return DataURL(media_type=media if "/" in media else "", base64=base64, data_at=comma + 1)


# The first bytes of each image type the APIs take (WebP: a RIFF file whose form is WEBP),
# as (media type, offset, bytes).
_SIGNATURES = (("image/jpeg", 0, b"\xff\xd8\xff"), ("image/png", 0, b"\x89PNG"),
               ("image/gif", 0, b"GIF8"), ("image/webp", 8, b"WEBP"))


def image_type(data: str) -> str | None:
    """The media type of the image whose base64 data begins ``data`` (jpeg, png, gif or webp),
    read from its first bytes alone (whitespace skipped); None when they are none of these."""
    try:
        head = binascii.a2b_base64(_WHITESPACE.sub("", data[:_HEAD])[:16])
    except binascii.Error:
        return None
    for media, at, signature in _SIGNATURES:
        if head[at:at + len(signature)] == signature and (at == 0 or head[:4] == b"RIFF"):
            return media
    return None


def media_type_of(url: str, header: DataURL) -> str:
    """The media type of the data of ``url`` (whose header is ``header``): the image type its
    first bytes show when it is base64 data of one (a client may label a JPEG image/png, or
    image/jpg), else the type its header names."""
    if header.base64 and header.data_at >= 0:
        return image_type(url[header.data_at:header.data_at + _HEAD]) or header.media_type
    return header.media_type


def _strict(data: str) -> str:
    """``data`` without whitespace and padded to whole groups of 4 (it may still not be
    base64: a group of 1 character, padding inside, a character of no alphabet)."""
    for space in _SPACES:  # (a fast scan each, and a copy only for the ones found)
        if space in data:
            data = data.replace(space, "")
    if len(data) % 4 in (2, 3) and not data.endswith("="):
        data += "=" * (-len(data) % 4)
    return data


def base64_problem(data: str) -> str | None:
    """What is wrong with ``data`` as base64 data (:data:`BASE64_WRITTEN`: whitespace skipped,
    padding optional), as what the data is (None when it is base64 of some bytes)."""
    try:
        binascii.a2b_base64(data, strict_mode=True)
        return None if data else "is empty"
    except binascii.Error:
        pass  # (most data is strict base64, and this finds it fast)
    compact = _strict(data)
    if not compact:
        return "is empty" if not data else "is whitespace only"
    try:
        binascii.a2b_base64(compact, strict_mode=True)
        return None
    except binascii.Error:
        pass
    odd = _NOT_BASE64.search(data)
    if odd is not None:
        url_safe = (" (URL-safe base64 writes - and _ where standard base64 writes + and /)"
                    if odd.group() in "-_" else "")
        return (f"holds {json_quoted(odd.group())} at character {odd.start()} of its data, "
                f"which is not base64{url_safe}")
    padding = compact.find("=")
    if padding >= 0 and compact[padding:].strip("=") != "":
        return "has data after its padding"
    if "=" in data:
        return "has = padding that does not end a group of 4 characters"
    return ("ends in a group of 1 character, which is no whole byte (base64 writes bytes in "
            "groups of 2 to 4 characters)")


def compact_base64(data: str) -> str:
    """Base64 ``data`` (:func:`base64_problem` finds nothing wrong) as strict RFC 4648 base64:
    whitespace removed, padded to whole groups of 4. Data already strict is returned as is."""
    return _strict(data)
