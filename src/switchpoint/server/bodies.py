"""JSON request bodies of the service's routes (all but the chat gateway's, which
:func:`switchpoint.gateway.parsing.parse_chat_body` reads), validated by their pydantic model.

Read by the handler, after the route's own checks of who calls (an admin route's token, a
client key), so a caller who may not use a route learns nothing of what its body must be. Five
faults are found, and named, as the chat gateway finds them: a key written twice in one object
(JSON readers disagree on which of the two counts, so a filter in front could check one value
while the service acted on the other), an integer of more digits than Python reads, a number
that is not 0 yet a float holds only as 0 (``1e-400``: read as 0, it would mean what the
caller did not write; a header, a query parameter and the command line refuse it alike), each
named by the field that holds it (:func:`~switchpoint.gateway.parsing.unheld_reason`), nesting
deeper than the chat gateway's :data:`~switchpoint.gateway.parsing.MAX_DEPTH` levels
(pydantic's reader called valid JSON past its own limit "not valid JSON (recursion limit
exceeded ...)"), and a lone surrogate (an unpaired ``\\ud800``-``\\udfff`` escape, which is no
text; pydantic's reader calls it a bad escape). Those checks read the text's structure with
Python's reader, without making numbers of its numbers (a number is converted only when its
text could write one a float holds only as 0, and converting an embedding's floats was most of
the time the checks took); pydantic's reader then reads the body into its model and says what
is wrong with any value."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, TypeVar, cast

from fastapi import APIRouter
from fastapi.dependencies.utils import get_typed_signature
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from switchpoint._json import (
    LONE_SURROGATE,
    SURROGATE_ESCAPE,
    DuplicateKeyError,
    lone_surrogate,
    too_long,
    unique_keys,
)
from switchpoint._messages import (
    entry_param,
    invalid_at,
    invalid_from_validation,
    key_path,
    not_finite_reason,
)
from switchpoint._numbers import too_small
from switchpoint.errors import InvalidInputError
from switchpoint.gateway.parsing import (
    TOO_DEEP,
    check_depth,
    unheld_number,
    unheld_reason,
    whole_number_fields,
)
from switchpoint.server.errors import document_refusal, operations, shown_path
from switchpoint.server.head import sent_method

Body = TypeVar("Body", bound=BaseModel)
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some clients write first


class _UnheldError(ValueError):
    """A number no float holds as written: an integer with more digits than Python reads, or
    one that is not 0 yet reads as 0 (``1e-400``)."""


def _number(text: str) -> None:
    """Nothing, or for a number that is not 0 yet reads as 0 (``1e-400``), :class:`_UnheldError`.
    Only text of more than 200 characters or with an exponent of -100 or below can write one
    (a float tells apart numbers down to about 5e-324), so most numbers are not read."""
    e = text.find("e-")
    if e < 0:
        e = text.find("E-")
    if (len(text) > 200 or (e >= 0 and len(text) - e > 4)) and too_small(text):
        raise _UnheldError(text)


def _integer(digits: str) -> None:
    """Nothing, or for an integer too long for Python to read, :class:`_UnheldError`."""
    if too_long(digits):
        raise _UnheldError(digits)


# The structure of a body: its objects (a key written twice refused) and strings, numbers left
# unread.
_STRUCTURE = json.JSONDecoder(object_pairs_hook=unique_keys, parse_float=_number,
                              parse_int=_integer)


def parse_body(model: type[Body], raw: bytes) -> Body:
    """``raw`` as a ``model``; :class:`InvalidInputError` naming the field (``body`` for what
    is wrong with the JSON itself; the entry's path inside a field the model lists in its
    ``keyed_fields``, mappings keyed by the caller's names) otherwise."""
    raw = _utf8(raw)  # as the chat gateway's reader (Python's json) takes it
    _check_text(raw, getattr(model, "keyed_fields", ()), whole_number_fields(model))
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors()), list(model.model_fields),
                                      keyed=getattr(model, "keyed_fields", ())) from None


def parse_optional_body(model: type[Body], raw: bytes) -> Body:
    """``raw`` as a ``model`` (:func:`parse_body`), or the model's defaults when the body says
    nothing (:func:`says_nothing`): a route whose body is optional."""
    return model() if says_nothing(raw) else parse_body(model, raw)


def says_nothing(raw: bytes) -> bool:
    """Whether a body is empty as a route that may take none reads it: no bytes, whitespace
    alone, or a byte order mark (which some clients write first) with nothing but whitespace
    after it, as :func:`parse_body` reads the text after one. Bytes that are no text in the
    encoding they begin in say something (and are refused as such)."""
    try:
        return not _utf8(raw).strip()
    except InvalidInputError:
        return False


def _utf8(raw: bytes) -> bytes:
    """``raw`` in UTF-8, without the one byte order mark it may begin with: JSON text in UTF-16
    or UTF-32 (which JSON allowed before RFC 8259, and the chat gateway's reader takes) is
    re-encoded for pydantic's reader, which reads UTF-8 only (it called such a body "not valid
    JSON (expected value at line 1 column 1)"). A second mark is text, which no JSON begins
    with, as the chat gateway's reader finds: left in, it is refused as not valid JSON."""
    encoding = json.detect_encoding(raw)
    if encoding == "utf-8":
        return raw
    if encoding == "utf-8-sig":
        return raw[len(_BOM):]
    try:
        return raw.decode(encoding).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("body", f"is not valid {encoding.upper()} text ({exc.reason} "
                                        f"at byte {exc.start}); send the JSON as UTF-8") from None


def _check_text(raw: bytes, keyed: Collection[str], whole: Collection[str] = ()) -> None:
    """Raise for a key written twice, nesting deeper than
    :data:`~switchpoint.gateway.parsing.MAX_DEPTH` levels (by the chat gateway's own rule,
    :func:`~switchpoint.gateway.parsing.check_depth`), a number no float holds
    as written (named by its path, as pydantic's reader names a field: :func:`_unheld`) or a
    lone surrogate; a body that is not JSON at all is left to pydantic's reader, which says
    why."""
    try:
        data = _STRUCTURE.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except DuplicateKeyError as exc:
        raise InvalidInputError("body", exc.msg) from None
    except _UnheldError as exc:  # (pydantic's reader: "not valid JSON (number out of range)",
        raise _unheld(raw, str(exc), keyed, whole) from None  # or 1e-400 read as 0)
    except RecursionError:  # (deeper than Python's reader goes, far past MAX_DEPTH)
        raise InvalidInputError("body", TOO_DEEP) from None
    except ValueError:
        return
    if data is None or isinstance(data, float):  # (the body one number, or null)
        _finite_body(raw)
    check_depth(raw, data)
    # Only a body with a surrogate escape can hold a lone surrogate: most bodies skip the walk.
    if SURROGATE_ESCAPE.search(raw) is None:
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


def _finite_body(raw: bytes) -> None:
    """Raise for a body that is one NaN or infinity (``NaN``, ``1e999``), told as a field
    holding one is (:func:`~switchpoint._messages.not_finite_reason`), as the chat gateway's
    reader tells it, not as a body that is no JSON object."""
    try:
        value = float(raw.strip(b" \t\r\n"))
    except ValueError:  # (null)
        return
    if not math.isfinite(value):
        raise InvalidInputError("body", not_finite_reason(value))


def _unheld(raw: bytes, text: str, keyed: Collection[str],
            whole: Collection[str] = ()) -> InvalidInputError:
    """The error for the body ``raw``, which holds the number written ``text`` that no float
    holds as written: naming the field that holds it (its path, the entry's inside a field of
    ``keyed``, as :func:`~switchpoint._messages.invalid_from_validation` names one), read
    anew to find it, told as a field of ``whole`` numbers is (:func:`unheld_reason`); the body,
    when none can be named."""
    found = unheld_number(raw)
    if found is None or not found[0]:
        return InvalidInputError("body", unheld_reason(text))
    loc, text = found
    path = key_path(loc, "body")
    field = loc[0] if isinstance(loc[0], str) else "body"  # (an index: the body is an array)
    return invalid_at(entry_param(field, path, keyed), path,
                      unheld_reason(text, len(loc) == 1 and field in whole))


#: How the API document describes :func:`no_body`'s refusal, for a route that takes no body.
NO_BODY_DOC = ("invalid_request (param body): a body was sent to a route that takes none (an "
               "empty one, or {}, is fine); send the request without one.")


# The mark :func:`refuses_body` leaves on an endpoint (kept by a wrapper that copies its
# attributes, as functools.wraps does), which :func:`document_no_body` reads.
_REFUSES_BODY = "switchpoint_refuses_body"
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Awaitable[Any]])


def refuses_body(endpoint: _Endpoint) -> _Endpoint:
    """The endpoint (an ``async def`` that takes a ``request: Request``) of a route that takes
    no body: it refuses one (:func:`no_body`) before it runs, and the API document lists that
    refusal (:func:`document_no_body`)."""
    signature = get_typed_signature(endpoint)
    name = next((p.name for p in signature.parameters.values() if p.annotation is Request), None)
    if name is None:
        raise TypeError(f"{getattr(endpoint, '__qualname__', endpoint)}: a route that refuses "
                        "a body takes a `request: Request` parameter")

    @functools.wraps(endpoint)
    async def refusing(*args: Any, **values: Any) -> Any:
        await no_body(signature.bind(*args, **values).arguments[name])
        return await endpoint(*args, **values)

    setattr(refusing, _REFUSES_BODY, True)
    return cast("_Endpoint", refusing)


def document_no_body(schema: dict[str, Any], routers: Iterable[APIRouter]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 400 of a body sent to a route that takes none
    (:data:`NO_BODY_DOC`) on each operation of the ``routers``' routes that refuse one
    (:func:`refuses_body`)."""
    refusing = [route for router in routers for route in router.routes
                if getattr(getattr(route, "endpoint", None), _REFUSES_BODY, False)]
    return document_refusal(schema, 400, NO_BODY_DOC, operations=operations(refusing))


async def no_body(request: Request) -> None:
    """Refuse a body on a route that takes none (an empty one, or ``{}``, is fine): ignoring
    it would answer a request that meant something else (``{"weights": ...}`` to a reload) as
    if it had said nothing."""
    raw = await request.body()
    if not says_nothing(raw) and b"".join(raw.removeprefix(_BOM).split()) != b"{}":
        raise InvalidInputError("body", f"{sent_method(request)} {shown_path(request)} takes "
                                        "no body; send the request without one")
