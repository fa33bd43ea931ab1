"""HEAD for every GET route: the answer a GET would get, headers and status, without its body.

FastAPI, unlike Starlette's own routes, registers GET alone, so an uptime probe or a link
checker sending ``HEAD /health`` got a 405. :class:`HeadMiddleware` hands a HEAD request whose
path a GET route serves to the app as that GET (its dependencies, the admin token among them,
run as for GET) and drops the body from the answer; the headers, ``Content-Length`` included,
are the GET's (RFC 9110 §9.3.2). A HEAD on a path no GET route serves is left to the router
(a 405 naming the methods the path takes). The schema is untouched: HEAD is implied by GET.
What the app says of the request (an error naming ``HEAD /path``, a log line) names the method
the client sent: :func:`sent_method`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The scope key holding the method a request handed to the app as another was sent with.
_SENT_AS = "switchpoint.sent_method"


def sent_method(request: Request) -> str:
    """The method the client sent: ``HEAD`` for a HEAD answered as its GET."""
    return str(request.scope.get(_SENT_AS, request.method))


class HeadMiddleware:
    """Answer ``HEAD`` like ``GET`` without a body, for the paths a GET route serves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not _served_by_get(scope):
            await self.app(scope, receive, send)
            return

        async def bodiless(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        as_get = {**scope, "method": "GET", _SENT_AS: "HEAD"}
        try:
            await self.app(as_get, receive, bodiless)
        finally:  # the route matched, for those outside (the metrics label the request by it)
            if "route" in as_get:
                scope["route"] = as_get["route"]


def _served_by_get(scope: Scope) -> bool:
    """Whether no route takes this HEAD itself and a route takes the same path as a GET."""
    routes = getattr(scope.get("app"), "routes", ())
    as_get = {**scope, "method": "GET"}
    if any(route.matches(scope)[0] is Match.FULL for route in routes):
        return False
    return any(route.matches(as_get)[0] is Match.FULL for route in routes)
