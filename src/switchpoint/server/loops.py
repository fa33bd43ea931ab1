"""Requests the service sent itself: a model whose ``base_url`` points back at the service.

The gateway names itself in the ``Via`` header of every request it sends upstream
(:attr:`~switchpoint.gateway.engine.Gateway.via_name`, the same across reloads). A model whose
``base_url`` is the service's own address (a copied config, a registration naming the wrong
port) has each of its calls come back in as a new request for that model, which calls it
again: one request held every connection the service takes (``server.max_connections``), each
waiting on the next, and every other caller was refused until the first request's deadline
(``gateway.max_total_s``, two minutes by default) ran out. So :func:`refusal` answers a request
whose ``Via`` names this gateway a 508 ``loop_detected`` naming the header, before any route
reads it: the calling request's try fails at once, and it fails over as from any model that
answered an error. A request the gateway forwards lists the ``Via`` entries it came with before
its own (:mod:`switchpoint.gateway.via`), so a loop through another service (A's model points
at B, B's at A) comes back naming A too; a ``Via`` past its bound (more intermediaries than a
request may pass) is refused the same way.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from switchpoint.gateway.via import MAX_CHARS, MAX_ENTRIES, too_long, via_entries, via_names
from switchpoint.server.errors import ErrorAnswer, document_refusal
from switchpoint.server.header_names import VIA

_VIA = VIA.encode("ascii")

#: How the API document describes the refusal, for every operation.
_DOC = ("loop_detected: the request came from this service itself (its Via header names this "
        "gateway): a model's base_url points back at the service, directly or through another "
        f"service; point it at the model's provider. Also a Via listing more than {MAX_ENTRIES} "
        f"intermediaries or {MAX_CHARS} characters, a chain that long.")


def refusal(values: list[str], name: str) -> ErrorAnswer | None:
    """The answer refusing a request whose ``Via`` header values are ``values`` when they name
    the gateway called ``name`` (it sent the request, or a service it called forwarded it), or
    list more intermediaries than a request may pass (:func:`~switchpoint.gateway.via.too_long`),
    else None."""
    if name in via_names(values):
        return ErrorAnswer(508, "loop_detected", (
            "via: a model's base_url points back at this service, directly or through another "
            "service whose model points here (the request came from its own gateway); point "
            "it at the model's provider"), "via")
    problem = too_long(via_entries(values))
    if problem is None:
        return None
    return ErrorAnswer(508, "loop_detected", (
        f"via: the request passed too many intermediaries (its Via header {problem}): models' "
        "base_urls pointing at each other in a loop, or a header no proxy chain sends; point "
        "each model at its provider, and send a shorter Via"), "via")


def guard(scope: Scope, name: str) -> tuple[Scope, ErrorAnswer | None]:
    """The rule (:class:`~switchpoint.server.middleware.GuardMiddleware`'s) refusing a request
    that came from the gateway called ``name`` (:func:`refusal`)."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == _VIA]
    return scope, refusal(values, name) if values else None


def document_loops(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 508 of a request the service sent itself on
    every operation."""
    return document_refusal(schema, 508, _DOC)
