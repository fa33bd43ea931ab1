"""What a feedback's comment may hold: the one check of a comment, wherever it enters (the
HTTP route, the library, the command line, which checks it before sending it to a service).
Light to import: the command line's start does not pay for the gateway."""

from __future__ import annotations

import re

from switchpoint._json import LONE_SURROGATE, lone_surrogate
from switchpoint._messages import too_long
from switchpoint._redact import redact
from switchpoint.errors import InvalidInputError

#: Longest feedback comment kept (characters).
MAX_COMMENT = 2000


def check_comment(comment: object, name: str = "comment") -> str | None:
    """The comment to keep with a feedback (None: none), with anything shaped like a secret
    redacted, since it is stored and shown back.

    A comment is a note a person writes: several lines, tabs and any script, right-to-left
    ones included, are kept as written. Control characters other than newline and tab (an
    escape sequence, a carriage return that lets a line overwrite itself; one before a
    newline, as a browser's form sends it, is fine) and the characters that override or
    isolate the direction of text (U+202A-U+202E, U+2066-U+2069, which make it display in
    another order than it reads) are refused, naming the field and the character: no person
    types them into a note, they could make what a log, a report or a terminal shows differ
    from what was said, and refusing them here, where the comment enters, keeps every
    place that prints one free of escaping it (rather than each having to). ``name`` is what
    a refusal names (``--comment`` on the command line)."""
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise InvalidInputError(name, "must be a string")
    if len(comment) > MAX_COMMENT:
        raise InvalidInputError(name, too_long(MAX_COMMENT, len(comment)))
    if lone_surrogate(comment):
        raise InvalidInputError(name, LONE_SURROGATE)
    found = _UNWRITTEN.search(comment)
    if found is not None:
        char = found.group()
        raise InvalidInputError(name, f"holds U+{ord(char):04X} (character "
                                      f"{found.start() + 1}): a comment may hold newlines "
                                      "and tabs, but no other control character and no "
                                      "character that overrides the direction of text "
                                      "(U+202A-U+202E, U+2066-U+2069); remove it")
    return redact(comment)


# What a comment may not hold (see check_comment): control characters but tab and newline (a
# carriage return only before a newline), and the bidirectional overrides and isolates.
_UNWRITTEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
                        "|\r(?!\n)")
