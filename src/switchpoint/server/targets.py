"""Requests whose target (the request line's ``/path?query``) the service does not read as
sent: one holding a raw ``#``.

A ``#`` begins a URL's fragment, which a client keeps to itself: one sent raw is part of no
path or query, yet the server hands it on as one (``?x=1#frag`` is read as x = ``1#frag``), so
a value would be taken other than as the client meant it. :func:`guard` answers such a request
a 400 ``invalid_request`` naming :data:`TARGET`, before any route reads it (and before its
host, origin, credentials or body). A ``#`` in a value is written ``%23``, which passes.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from switchpoint._messages import json_quoted
from switchpoint.server.errors import ErrorAnswer, document_refusal

#: The param of a refused request target: the request line's part, as HTTP names it.
TARGET = "request-target"
#: How the API document describes the refusal, for every operation.
_DOC = ("invalid_request (param request-target): the request target holds a raw \"#\", which "
        "begins a URL's fragment, a part a client keeps to itself; send the target without "
        "it, and write a \"#\" a value holds as %23.")


def guard(scope: Scope) -> ErrorAnswer | None:
    """The answer refusing the request of ``scope`` for its target, or None to serve it."""
    problem = refusal(scope)
    return None if problem is None else ErrorAnswer(400, "invalid_request", problem, TARGET)


def refusal(scope: Scope) -> str | None:
    """Why the request target of ``scope`` is refused (it holds a raw ``#``), or None."""
    raw_path = scope.get("raw_path")
    path = raw_path if isinstance(raw_path, bytes) else scope["path"].encode("utf-8")
    query = scope.get("query_string", b"")
    if b"#" not in path and b"#" not in query:
        return None
    target = (path + b"?" + query if query else path).decode("latin-1")
    return (f"{TARGET}: the request target {json_quoted(target, 100)} holds a \"#\", which "
            "begins a URL's fragment: a client keeps the fragment to itself, so a \"#\" sent is "
            "part of no path or query value. Send the target without the fragment, and write a "
            "\"#\" a value holds as %23")


def document_targets(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 400 of a refused target on every operation."""
    return document_refusal(schema, 400, _DOC)
