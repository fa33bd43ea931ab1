"""A request's query string names only parameters its route takes, each at most once.

Given twice (``?tenant=a&tenant=b``), which value counts would be anyone's guess: the web
framework reads the last, a proxy or filter in front may check the first, and a request one
of them allowed would be answered for the other. So a repeat is refused, named, as a JSON
body's key written twice is (:mod:`switchpoint.server.bodies`). :func:`single_query` runs
before every route (an app dependency, so before the route's own checks of who calls: the rule
is the same on every route, and the 400 names only what the caller sent, so it tells nothing of
the route). No route takes a list in its query.

A parameter the route does not take is refused too, on switchpoint's own routes (routing,
feedback, health, metrics, the admin routes): answered as if it were not there, a filter that
is not one (``GET /v1/router/stats?tenant=acme``) or a misspelt one (``?windw=1h``) would give
figures the caller did not ask for. The 400 names it and lists the parameters the route takes
(or says it takes none), so that check runs after the route's own checks of who calls (every
dependency of the route: the admin token, the client key), as its body is read after them: a
caller who may not use a route learns nothing of what it takes. :class:`QueryCheckedRoute` is
that rule, for every route of the routers that make their routes with it; the names a route
takes are read from the route itself (its parameters and its dependencies'), so a parameter
added to a route is taken with no list to keep.

The routes of OpenAI's API (``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``) take any parameter and ignore those they do not read, as OpenAI's own
API does: the official SDKs and the proxies in front of them add their own (Azure's
``api-version``, a client's ``default_query``). Such a route carries :data:`ANY_QUERY`.
FastAPI's own pages (``/docs``, ``/redoc``, ``/openapi.json``) are not switchpoint's routes and
are left as they are.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi import Depends, params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params, get_typed_signature
from fastapi.routing import APIRoute
from starlette.requests import Request

from switchpoint._messages import MAX_FIELD, cut, printable
from switchpoint.errors import InvalidInputError
from switchpoint.server.head import sent_method

# The most unknown names one answer quotes.
_SHOWN = 5


def once(name: str, values: Sequence[str]) -> str | None:
    """The one value of the parameter (query or header) ``name``, None when it is absent;
    :class:`InvalidInputError` naming it when it is given more than once."""
    if len(values) > 1:
        raise InvalidInputError(name or "query", f"is given {len(values)} times; send it once")
    return values[0] if values else None


async def single_query(request: Request) -> None:
    """FastAPI dependency: refuse a query string that names a parameter twice."""
    counts = Counter(name for name, _ in request.query_params.multi_items())
    for name, count in counts.items():
        if count > 1:
            once(name, [""] * count)


async def any_query() -> None:
    """The mark of a route that takes query parameters it does not read (see
    :data:`ANY_QUERY`); it checks nothing. (A coroutine: FastAPI would run a plain function
    in its thread pool, a thread hop on every chat request.)"""


ANY_QUERY = Depends(any_query)
"""``dependencies=[ANY_QUERY]`` on a route of OpenAI's API: it ignores a query parameter it
does not read, as OpenAI's API does, instead of refusing it."""


def query_names(dependant: Dependant) -> tuple[str, ...]:
    """The query parameters a route takes, as a request names them (an alias if it has one),
    from its parameters and its dependencies'."""
    names = [getattr(f, "validation_alias", None) or f.alias
             for f in get_flat_params(dependant) if isinstance(f.field_info, params.Query)]
    return tuple(dict.fromkeys(str(n) for n in names))


def takes_any_query(dependant: Dependant) -> bool:
    """Whether the route carries :data:`ANY_QUERY` (itself or in a dependency)."""
    todo = [dependant]
    while todo:
        current = todo.pop()
        if current.call is any_query:
            return True
        todo.extend(current.dependencies)
    return False


def check_known(given: Iterable[str], taken: Sequence[str], method: str, path: str) -> None:
    """Raise :class:`InvalidInputError` naming the first parameter of ``given`` that is not
    in ``taken`` (the route ``method path``'s), listing the ones it takes."""
    unknown = list(dict.fromkeys(name for name in given if name not in taken))
    if not unknown:
        return
    first, *others = (printable(cut(name, MAX_FIELD)) for name in unknown[:_SHOWN])
    nor = ""
    if others:
        more = len(unknown) - _SHOWN
        nor = f" (nor {'is' if len(others) == 1 else 'are'} {', '.join(map(repr, others))}" + (
            f" and {more} more)" if more > 0 else ")")
    where = f"{method} {path}"
    if taken:
        listed = f"it takes {', '.join(taken)}"
        advice = "check its spelling, or leave it out"
    else:
        listed = "it takes none"
        advice = "send the request without a query string"
    raise InvalidInputError(first or "query", f"is not a query parameter of {where}{nor}; "
                                              f"{listed} ({advice})")


class QueryCheckedRoute(APIRoute):
    """A route that refuses a query parameter it does not take (unless it carries
    :data:`ANY_QUERY`), once its dependencies (who calls) have passed: its endpoint checks the
    query string first. The endpoint is an ``async def`` that takes the
    :class:`~starlette.requests.Request`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        request_name = next((p.name for p in get_typed_signature(endpoint).parameters.values()
                             if p.annotation is Request), None)
        if request_name is None or not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{getattr(endpoint, '__qualname__', endpoint)}: a route of a "
                            "QueryCheckedRoute router is an `async def` that takes a "
                            "`request: Request` parameter (its query string is checked)")
        route = self

        @functools.wraps(endpoint)
        async def checked(*args: Any, **values: Any) -> Any:
            if route.taken is not None:
                request: Request = values[request_name]
                check_known(request.query_params.keys(), route.taken, sent_method(request),
                            route.path)
            return await endpoint(*args, **values)

        super().__init__(path, checked, **kwargs)
        self.taken: tuple[str, ...] | None = (
            None if takes_any_query(self.dependant) else query_names(self.dependant))
