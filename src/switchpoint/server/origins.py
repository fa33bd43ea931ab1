"""Requests a web page sent: only from the origins ``cors.allow_origins`` lists.

A browser lets any page it shows send a request to any address, the service's on loopback
too: a form's POST, or a ``fetch`` whose body is ``text/plain`` or has no type, goes out
without asking the service first (no CORS preflight), and the service reads a body as JSON
whatever its ``Content-Type``. Without ``auth: keys`` and an admin token (the defaults, on
loopback) a page the operator merely visits could so call the paid upstream models, give
feedback that teaches the router, swap its policy or reload it, though it never reads the
answer. Browsers name the page's origin in the ``Origin`` header (programs such as curl and
the openai client send none), so :func:`refusal` answers a request carrying
one the config does not allow a 403 ``permission_denied`` naming it, before any route reads
it: nothing is called, learned or changed. An allowed origin's requests pass, its CORS
preflights answered by Starlette's ``CORSMiddleware`` outside this one.
"""

from __future__ import annotations

from typing import Any

from switchpoint._messages import json_quoted, listed_names
from switchpoint.server.errors import document_refusal
from switchpoint.server.header_text import shown_text

#: How the API document describes the refusal, for every operation.
_DOC = ("permission_denied: the request came from a web page (it carries an Origin header) "
        "whose origin cors.allow_origins does not list; add the page's origin there if the "
        "page is yours.")


def refusal(origins: list[str], allowed: frozenset[str]) -> str | None:
    """Why a request whose Origin headers are ``origins`` is refused, or None when it is
    served: it names no origin (a program's), or one ``allowed`` lists (``*``: any)."""
    if "*" in allowed or not origins or (len(origins) == 1 and origins[0] in allowed):
        return None
    if len(origins) > 1:
        return (f"origin: the header is given {len(origins)} times; a browser sends one, "
                "naming the page the request comes from")
    lists = ("lists " + listed_names(sorted(allowed), most=5, quoted=True) if allowed
             else "lists none: CORS is off")
    shown = json_quoted(shown_text(origins[0]), 100)
    return (f"origin: the request comes from a web page of {shown}, "
            f"an origin cors.allow_origins does not list (it {lists}), so it is refused: a "
            "page open in a browser may not call the models, teach the router or change the "
            "service. If the page is yours, add its origin to cors.allow_origins and restart; "
            "a program other than a browser sends no Origin header")


def document_origins(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 403 of a refused origin on every operation."""
    return document_refusal(schema, 403, _DOC)
