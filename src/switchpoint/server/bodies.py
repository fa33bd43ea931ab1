"""JSON request bodies of the service's routes (all but the chat gateway's, which
:func:`switchpoint.gateway.parsing.parse_chat_body` reads), validated by their pydantic model.

Read by the handler, after the route's own checks of who calls (an admin route's token, a
client key), so a caller who may not use a route learns nothing of what its body must be. Two
faults are found, and named, as the chat gateway finds them: a key written twice in one object
(JSON readers disagree on which of the two counts, so a filter in front could check one value
while the service acted on the other), and a lone surrogate (an unpaired ``\\ud800``-``\\udfff``
escape, which is no text; pydantic's reader calls it a bad escape)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from switchpoint._json import (
    LONE_SURROGATE,
    SURROGATE_ESCAPE,
    DuplicateKeyError,
    loads,
    lone_surrogate,
)
from switchpoint._messages import invalid_from_validation
from switchpoint.errors import InvalidInputError

Body = TypeVar("Body", bound=BaseModel)
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some clients write first


def parse_body(model: type[Body], raw: bytes) -> Body:
    """``raw`` as a ``model``; :class:`InvalidInputError` naming the field (``body`` for what
    is wrong with the JSON itself) otherwise."""
    raw = raw.removeprefix(_BOM)  # as the chat gateway's reader (Python's json) takes it
    _check_text(raw)
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors()), list(model.model_fields)) from None


def _check_text(raw: bytes) -> None:
    """Raise for a key written twice or a lone surrogate; a body that is not JSON at all is
    left to pydantic's reader, which says why."""
    try:
        data = loads(raw)
    except DuplicateKeyError as exc:
        raise InvalidInputError("body", exc.msg) from None
    except (ValueError, RecursionError):
        return
    if not SURROGATE_ESCAPE.search(raw):  # (a body with none skips the walk)
        return
    stack: list[tuple[object, str]] = [(data, "body")]
    while stack:
        node, field = stack.pop()
        if isinstance(node, str):
            if lone_surrogate(node):
                raise InvalidInputError(field, LONE_SURROGATE)
        elif isinstance(node, dict):
            for key, value in node.items():
                if lone_surrogate(key):
                    raise InvalidInputError(field, f"has a key that {LONE_SURROGATE}")
                stack.append((value, key if node is data else field))
        elif isinstance(node, list):
            stack.extend((item, field) for item in node)


async def no_body(request: Request) -> None:
    """Refuse a body on a route that takes none (an empty one, or ``{}``, is fine): ignoring
    it would answer a request that meant something else (``{"weights": ...}`` to a reload) as
    if it had said nothing."""
    raw = (await request.body()).strip().removeprefix(_BOM)
    if raw and b"".join(raw.split()) != b"{}":
        raise InvalidInputError("body", f"{request.method} {request.url.path} takes no body; "
                                        "send the request without one")
