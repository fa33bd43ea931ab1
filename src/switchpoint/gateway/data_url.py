"""Reading the header of a ``data:`` URL (RFC 2397): its media type, and whether its data is
base64.

``data:[<media type>][;<parameter>=<value>]*[;base64],<data>``: the media type is
case-insensitive (read lower-cased), parameters (``charset``, ``name``, ...) are skipped, and
``;base64`` is the last segment before the comma. Only the header is read, never the data
(a payload is as long as the body that carries it, which is bounded elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

# Characters of header read before the comma: a media type and a few parameters fit; a URL
# whose comma comes later is not a data URL read here.
MAX_HEADER = 1_024
_SCHEME = "data:"


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


def parse_data_url(url: str) -> DataURL | None:
    """The header of ``url`` when it is a data URL (None otherwise)."""
    if not is_data_url(url):
        return None
    comma = url.find(",", len(_SCHEME), len(_SCHEME) + MAX_HEADER)
    if comma < 0:
        return DataURL(media_type="", base64=False, data_at=-1)
    segments = url[len(_SCHEME):comma].split(";")
    media = segments[0].strip().lower()
    base64 = len(segments) > 1 and segments[-1].strip().lower() == "base64"
    return DataURL(media_type=media if "/" in media else "", base64=base64, data_at=comma + 1)
