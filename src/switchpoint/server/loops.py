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
answered an error.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from switchpoint.gateway.via import via_names
from switchpoint.server.errors import ErrorAnswer, document_refusal

#: How the API document describes the refusal, for every operation.
_DOC = ("loop_detected: the request came from this service itself (its Via header names this "
        "gateway): a model's base_url points back at the service; point it at the model's "
        "provider.")


def refusal(values: list[str], name: str) -> ErrorAnswer | None:
    """The answer refusing a request whose ``Via`` header values are ``values`` when they name
    the gateway called ``name``, else None."""
    if name not in via_names(values):
        return None
    return ErrorAnswer(508, "loop_detected", (
        "via: a model's base_url points back at this service (the request came from its own "
        "gateway); point it at the model's provider"), "via")


def guard(scope: Scope, name: str) -> tuple[Scope, ErrorAnswer | None]:
    """The rule (:class:`~switchpoint.server.middleware.GuardMiddleware`'s) refusing a request
    that came from the gateway called ``name`` (:func:`refusal`)."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == b"via"]
    return scope, refusal(values, name) if values else None


def document_loops(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 508 of a request the service sent itself on
    every operation."""
    return document_refusal(schema, 508, _DOC)
