"""A header's value as its client wrote it.

HTTP carries a header's value as bytes, and the web framework (and h11 under it) reads each
byte as one Latin-1 character, so a value a client wrote in UTF-8, as every client writes text
that is not ASCII, reads garbled: ``évil.com`` as ``Ã©vil.com``, ``٥`` as ``Ù¥``.
:func:`utf8_text` reads such a value's bytes as UTF-8, for a header that carries names (a
model's, a session's); :func:`shown_text` is how an error quotes any header's value: as the
client wrote it, the bytes that are not UTF-8 written as ``\\xff``.
"""

from __future__ import annotations


def utf8_text(value: str) -> str:
    """The header value ``value`` (as the framework reads it, a character per byte) read as
    UTF-8; UnicodeDecodeError when its bytes are not UTF-8."""
    if value.isascii():
        return value
    # (the bytes as sent: Latin-1 maps each to one character, and every character so read
    # back to its byte)
    return value.encode("latin-1").decode("utf-8")


def shown_text(value: str) -> str:
    """The header value ``value`` (as the framework reads it) as an error quotes it: read as
    UTF-8 (:func:`utf8_text`), a byte that is not UTF-8 written as ``\\xff``."""
    try:
        return utf8_text(value)
    except UnicodeEncodeError:  # (not read from bytes: already text)
        return value
    except UnicodeDecodeError:
        return value.encode("latin-1").decode("utf-8", "backslashreplace")
