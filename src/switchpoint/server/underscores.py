"""A header the service reads, written with underscores for its dashes (``x_session_id``),
refused.

HTTP takes ``x_session_id`` and ``x-session-id`` for two headers, and so does the service: it
read the first as no header at all. A proxy in front may not: some take underscores for dashes
(as CGI names headers, ``HTTP_X_SESSION_ID``), others drop a header with underscores, so the
proxy and the service would act on different requests (another conversation, another list of
models, another client address, another end of the body). So :func:`guard` answers a request
carrying a header whose name, each ``_`` read as ``-``, is one of
:data:`~switchpoint.server.header_names.READ` a 400
``invalid_request`` naming it and saying to write it with dashes, before any route reads it:
nothing is called, logged or changed. A header with underscores the service does not read
(``x_trace_id``) passes untouched, as every other header does.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from switchpoint.server.errors import ErrorAnswer, document_refusal
from switchpoint.server.header_names import READ

# Each of READ with a dash, by how it is written with underscores for its dashes.
_UNDERSCORED = {name.replace("-", "_").encode("latin-1"): name for name in READ if "-" in name}

#: How the API document describes the refusal, for every operation.
_DOC = ("invalid_request: the request gives a header the service reads with underscores for "
        "its dashes (x_session_id), which it does not read while a proxy in front may read it "
        "as the header; write the header's name with dashes (x-session-id).")


def refusal(sent: str, dashed: str) -> str:
    """Why a request giving the header ``sent``, ``dashed`` with underscores for its dashes,
    is refused."""
    return (f"{sent}: the request gives a header named {sent}, which this service does not "
            f"read, while a proxy in front that takes underscores for dashes reads it as "
            f"{dashed}, which it does, so the two would act on different requests; write it "
            f"{dashed}, with dashes")


def guard(scope: Scope) -> tuple[Scope, ErrorAnswer | None]:
    """The rule (:class:`~switchpoint.server.middleware.GuardMiddleware`'s) refusing a request
    that gives a header the service reads with underscores for any of its dashes
    (:func:`refusal`: a 400 whose param is the name as sent)."""
    for name, _ in scope["headers"]:
        if b"_" in name:
            dashed = _UNDERSCORED.get(name.replace(b"-", b"_").lower())
            if dashed is not None:
                sent = name.decode("latin-1").lower()
                return scope, ErrorAnswer(400, "invalid_request", refusal(sent, dashed), sent)
    return scope, None


def document_underscores(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 400 of a header written with underscores on
    every operation."""
    return document_refusal(schema, 400, _DOC)
