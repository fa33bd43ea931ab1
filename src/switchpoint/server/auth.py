"""The guards: the admin token for ``/v1/router/*`` and ``/metrics``, client keys for the
gateway's routes.

Admin: with no ``admin_token_env`` in the config the ``/v1/router/*`` routes and ``/metrics``
stay open (the service binds to loopback by default). With it, the token is read from that
environment variable at start (and again on reload) and every admin call must carry it; a
missing or wrong token is a 401 ``unauthorized`` in the usual error shape, compared in constant
time. ``/health`` stays open for probes, but without the token it says only whether the
router is ready (:func:`is_admin`). Settings whose variable holds no usable token are never
served (:func:`~switchpoint.server.exposure.check_admin_token`): the token guards these routes
alone, so the rest of switchpoint (the in-process gateway, the commands that serve nothing)
takes such a config as it is.

Clients: with ``auth: keys`` in the config, ``/v1/chat/completions``, ``/v1/route`` and
``/v1/models`` need ``Authorization: Bearer sp-...`` (a key from ``switchpoint keys create``):
:func:`client_principal` resolves it to the caller's key id and tenant, or answers 401
(``invalid_api_key``, ``key_revoked``, ``key_expired``) or 403.

Routes check who calls before they read the body (the body is read when a route first asks
for it, see :mod:`switchpoint.server.middleware`), so a caller without a valid credential is
answered 401 without the server holding its body. Who a request was accepted as (a client
key's tenant, the admin token) is what its body counts against in the server's body buffer
(:func:`body_owner`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from switchpoint._messages import json_quoted
from switchpoint.errors import AuthenticationError, InvalidKeyError
from switchpoint.governance.governor import Governor, Principal
from switchpoint.governance.keys import has_key_shape
from switchpoint.server.context import get_service
from switchpoint.server.errors import error_content
from switchpoint.server.header_names import AUTHORIZATION


def authorization(request: Request, *, strict: bool = True) -> tuple[str, str]:
    """The scheme and credential of the request's one ``Authorization`` header (empty when it
    sends none). Sent more than once it names no caller (which one counts is what a proxy in
    front and the service could read differently): :class:`AuthenticationError` naming it, or
    with ``strict=False`` no credential."""
    values = request.headers.getlist(AUTHORIZATION)
    if len(values) > 1:
        if not strict:
            return "", ""
        raise AuthenticationError(f"authorization: the header is given {len(values)} times; "
                                  "send one Authorization header carrying one credential",
                                  param="authorization")
    scheme, _, given = (values[0] if values else "").partition(" ")
    return scheme, given


# The schemes an Authorization header may name that a refusal quotes (those IANA registers,
# and those some APIs take for a key): any other word could be a credential sent in the
# scheme's place, and is not quoted.
_SCHEMES = frozenset(scheme.lower() for scheme in (
    "Basic", "Digest", "DPoP", "GNAP", "HOBA", "Mutual", "Negotiate", "NTLM", "OAuth",
    "PrivateToken", "SCRAM-SHA-1", "SCRAM-SHA-256", "vapid", "Concealed", "Token", "ApiKey",
    "Api-Key", "Key", "AWS4-HMAC-SHA256"))


def scheme_problem(scheme: str, credential: str, send: str) -> str | None:
    """Why the ``Authorization`` header of ``scheme`` and ``credential`` (:func:`authorization`)
    carries no credential these guards read, or None: the credential comes after ``Bearer``,
    and ``Basic`` (or another scheme) is not read, so a valid key sent with it was told the
    gateway "needs a client key". ``send`` is what to send instead (``Bearer sp-...``). The
    credential is never quoted, nor a scheme that could be one."""
    if not scheme or scheme.lower() == "bearer":
        return None
    if not credential.strip():  # (one word: a credential without its scheme, most likely)
        what = "names no scheme before its credential"
    elif scheme.lower() in _SCHEMES:
        what = f"names the scheme {json_quoted(scheme)}"
    else:
        what = "names an unknown scheme"
    return (f"authorization: the header {what}; a credential is read only after the Bearer "
            f"scheme: send `Authorization: {send}`")


def is_admin(request: Request) -> bool:
    """The request may see what the admin routes show: no admin token is configured, or it
    carries the right one (in its one ``Authorization`` header)."""
    settings = get_service(request).gateway.settings
    if settings.admin_token_env is None:
        return True
    token = settings.admin_token
    if token is None:  # (refused at start and on reload: never served; shut, not open)
        return False
    scheme, given = authorization(request, strict=False)
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                          token.encode()):
        request.scope[_CALLER] = "admin"
        return True
    return False


async def require_admin(request: Request) -> None:
    """FastAPI dependency for the admin routes (and ``/metrics``). A coroutine, as every
    dependency here is: FastAPI runs a plain function in its thread pool."""
    if is_admin(request):
        return
    scheme, given = authorization(request)  # (a header sent twice is told so)
    settings = get_service(request).gateway.settings
    needs = ("this admin route needs the header `Authorization: Bearer <token>` with the "
             f"token in ${settings.admin_token_env}")
    wrong = scheme_problem(scheme, given, "Bearer <token>")
    if wrong is not None:
        needs = f"{wrong}, with the token in ${settings.admin_token_env}"
    if scheme.lower() == "bearer" and has_key_shape(given):
        # The mix-up the other way round (see client_principal): say which credential it is.
        needs += (", not a client key (sp-...): a client key opens the routes that act for "
                  "its tenant (chat, routing, models, feedback, comparisons, the learning "
                  "status), not the admin routes nor /metrics")
    raise AuthenticationError(needs, param="authorization")


ADMIN = [Depends(require_admin)]
"""``dependencies=ADMIN`` on a route guards it."""


def client_principal(request: Request, *, wait: bool = True) -> Principal | None:
    """Who calls a gateway route: None when client keys are off, else the key's principal
    (raises :class:`AuthenticationError` for a missing, malformed, unknown, revoked or expired
    key; with ``wait=False`` before the key store's file holds the time of the refusal, see
    :meth:`Governor.authenticate`)."""
    gateway = get_service(request).gateway
    settings = gateway.settings
    if not Governor.keys_required(settings):
        return None
    scheme, token = authorization(request)
    wrong = scheme_problem(scheme, token, "Bearer sp-...")
    if wrong is not None:
        raise AuthenticationError(f"{wrong}, a key `switchpoint keys create` made",
                                  param="authorization")
    if settings.admin_token is not None and is_admin(request):
        # The usual mix-up of an operator: say which credential this route takes.
        raise InvalidKeyError("this is the admin token, which guards /v1/router/* and "
                              "/metrics and may give feedback on any tenant's decision; chat "
                              "and routing take a client key (`Authorization: Bearer "
                              "sp-...`, made by `switchpoint keys create`): the key of the "
                              "tenant the request is for", param="authorization")
    principal = gateway.governor.authenticate(token if scheme.lower() == "bearer" else None,
                                              settings, wait=wait)
    # A tenant's keys share one share of the body buffer: a tenant given more keys would
    # otherwise hold more of it, all of it with four, and every other tenant would be refused.
    request.scope[_CALLER] = (f"tenant {principal.tenant}" if principal.tenant is not None
                              else f"key {principal.key_id}")
    return principal


async def caller_key(request: Request) -> Principal | None:
    """:func:`client_principal` on the event loop: a key refused for a time the key store's
    file does not hold yet is answered once the file holds it (so the refusal outlasts a
    crash), that write waited for off the loop."""
    try:
        return client_principal(request, wait=False)
    except AuthenticationError:
        keys = get_service(request).gateway.governor.keys
        if keys.refusals_pending():  # (else nothing to wait for: no trip to a thread)
            await run_in_threadpool(keys.hold_refusals)
        raise


async def client(request: Request) -> Principal | None:
    """:func:`caller_key` as a route's dependency (``Depends(client)``), so that the key is
    checked before the route reads its query string and its body."""
    return await caller_key(request)


CLIENT = Annotated[Principal | None, Depends(client)]
"""A route's parameter ``principal: CLIENT``: who calls it (:func:`client`)."""


_CALLER = "switchpoint.caller"  # (in the request's scope: who it was accepted as)


def body_owner(scope: Scope) -> str:
    """Who a request's body counts against in the body buffer: who the route accepted it as
    (a client key's tenant, or the key's id when it has none; the admin token), else the
    client's address (see
    :mod:`switchpoint.server.proxies`: behind a proxy not listed in ``server.trusted_proxies``,
    every such caller is one)."""
    caller = scope.get(_CALLER)
    if isinstance(caller, str):
        return caller
    peer = scope.get("client")
    return f"address {peer[0]}" if peer else "address unknown"


_ADMIN_401 = ("unauthorized: the config names admin_token_env and the request does not carry "
              "`Authorization: Bearer <the token in that variable>` (in one header).")
_CLIENT_401 = ("With client keys (auth: keys): the key is missing, malformed or unknown "
               "(unauthorized, invalid_api_key), revoked (key_revoked) or expired "
               "(key_expired); send `Authorization: Bearer sp-...`, a key `switchpoint keys "
               "create` made.")


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def document_guards(schema: dict[str, Any], routers: Iterable[APIRouter]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 401 of the guard each of the ``routers``'
    routes has: the admin token's (:data:`ADMIN`) or a client key's (:data:`CLIENT`), in the
    shape of the operation's other errors, where the route does not describe its 401 itself.
    The guards are read from the routes' dependencies, so a route is documented as it is
    guarded."""
    paths = schema.get("paths", {})
    for route in (route for router in routers for route in router.routes):
        if not isinstance(route, APIRoute) or route.path_format not in paths:
            continue
        calls = set(_calls(route.dependant))
        doc = (_CLIENT_401 if client in calls else _ADMIN_401 if require_admin in calls
               else None)
        if doc is None:
            continue
        for method in route.methods or ():
            operation = paths[route.path_format].get(method.lower())
            if isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault(
                    "401", {"description": doc, "content": error_content(route.path_format)})
    return schema
