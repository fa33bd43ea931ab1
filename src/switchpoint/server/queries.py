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
FastAPI's own ``/openapi.json`` is not one of switchpoint's routes and is left as it is.

A number a query parameter takes is read from its text as strictly as a command-line option's
or a header's (:func:`~switchpoint._numbers.integer_text`,
:func:`~switchpoint._numbers.number_text`), not as pydantic's lax mode reads it
(``?limit=1_000``, ``?limit=%201`` and ``?limit=1.0`` are not whole numbers as a person writes
one): ASCII digits, nothing around them, and for a number that is not 0, one a float can hold
(``1e-400`` would be read as 0). A route's number parameter carries :data:`WHOLE` or
:data:`NUMBER` after its ``Query(...)`` (so the API document keeps its type and bounds), and
:class:`QueryCheckedRoute` refuses to build a route with one that does not, so no route reads a
number laxly.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import APIRouter, Depends, params
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params, get_typed_signature
from fastapi.routing import APIRoute
from pydantic import BeforeValidator
from starlette.requests import Request

from switchpoint._messages import (
    PAST_FLOATS,
    UNKNOWN_NAME_ADVICE,
    json_quoted,
    listed_keys,
    refuse_unknown,
)
from switchpoint._numbers import (
    TOO_MANY_DIGITS,
    integer_text,
    number_text,
    too_many_digits,
    too_small,
    too_small_why,
)
from switchpoint.errors import InvalidInputError
from switchpoint.server.errors import document_refusal, operations
from switchpoint.server.head import sent_method


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


def _number_text(text: object, whole: bool, accepted: str | None = None) -> object:
    """A query parameter's ``text`` as the number it says (a whole one when ``whole``), or a
    ValueError saying how to write one; a value that is not text (a default) as it is. A
    whole number stays an int where any number is taken, so a range the route's bounds refuse
    quotes it as written (``-1``, not ``-1.0``). Text too small to be told from 0 is told so
    by :func:`~switchpoint._numbers.too_small_why` of ``accepted``."""
    if not isinstance(text, str):
        return text
    shown = json_quoted(text, 40)
    exact = text == text.strip()
    number: int | float | None = None
    if exact:
        number = integer_text(text)
        if number is None and not whole:
            number = number_text(text)
    if isinstance(number, float) and math.isinf(number):  # (400 digits, 1e400)
        raise ValueError(f"must be a finite number, got {shown}, {PAST_FLOATS}")
    if number is not None:
        return number
    if exact and not whole and too_small(text):
        raise ValueError(f"{shown} {too_small_why(accepted)}")
    if exact and whole and too_many_digits(text):
        raise ValueError(f"{TOO_MANY_DIGITS}, got {shown}")
    what = "a whole number" if whole else "a finite number"
    example = "50" if whole else "2.5 or 1e3"
    raise ValueError(f"must be {what} in ASCII digits with nothing around it, such as "
                     f"{example}, got {shown}")


def _whole(text: object) -> object:
    return _number_text(text, whole=True)


def _real(text: object) -> object:
    return _number_text(text, whole=False)


WHOLE = BeforeValidator(_whole)
"""The mark of a query parameter that takes a whole number: ``Annotated[int, Query(...),
WHOLE]`` (after the ``Query``, so the API document keeps its bounds)."""
NUMBER = BeforeValidator(_real)
"""The mark of a query parameter that takes a number: ``Annotated[float, Query(...), NUMBER]``."""


def number_without_0(accepted: str) -> BeforeValidator:
    """The mark of a query parameter that takes a number but not 0 (a window of hours), as
    :data:`NUMBER` is: text too small to be told from 0 (``1e-400``) is told to give
    ``accepted`` (what it takes, in words: ``a number of hours more than 0 ...``), not to
    write 0, which its bounds refuse too."""
    return BeforeValidator(functools.partial(_number_text, whole=False, accepted=accepted))


def _number_mark(mark: object) -> bool:
    """Whether ``mark`` is :data:`WHOLE`, :data:`NUMBER` or a :func:`number_without_0`."""
    if mark is WHOLE or mark is NUMBER:
        return True
    func = getattr(mark, "func", None) if isinstance(mark, BeforeValidator) else None
    return isinstance(func, functools.partial) and func.func is _number_text


def _numeric(annotation: object) -> bool:
    """Whether a parameter of type ``annotation`` holds a number (``int``, ``float``, either
    or None, as ``Annotated`` wraps them)."""
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_numeric(member) for member in get_args(annotation))
    return annotation in (int, float)


def _marked(annotation: object, metadata: Iterable[object]) -> bool:
    """Whether a number's mark (:data:`WHOLE`, :data:`NUMBER`, :func:`number_without_0`) is
    among ``metadata`` or ``annotation``'s."""
    found = list(metadata)
    if get_origin(annotation) is Annotated:
        found += get_args(annotation)[1:]
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_marked(member, found) for member in get_args(annotation))
    return any(_number_mark(mark) for mark in found)


def check_numbers(dependant: Dependant, where: str) -> None:
    """Raise TypeError for a number query parameter of the route (``where``) that does not
    read its text strictly (:data:`WHOLE`, :data:`NUMBER`)."""
    for field in get_flat_params(dependant):
        info = field.field_info
        if (isinstance(info, params.Query) and _numeric(info.annotation)
                and not _marked(info.annotation, info.metadata)):
            raise TypeError(f"{where}: the query parameter {field.alias} takes a number, so "
                            "it reads its text strictly: write Annotated[int, Query(...), "
                            "WHOLE] (or float and NUMBER, from switchpoint.server.queries)")


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


# What to do with a query string sent to a route that takes no query parameter.
_NO_QUERY_ADVICE = "send the request without a query string"


def check_known(given: Iterable[str], taken: Sequence[str], method: str, path: str) -> None:
    """Raise :class:`InvalidInputError` naming the first parameter of ``given`` that is not
    in ``taken`` (the route ``method path``'s), listing the ones it takes."""
    refuse_unknown(given, taken, "query parameter", f"{method} {path}",
                   none_advice=_NO_QUERY_ADVICE)


# How the API document begins to describe :func:`check_known`'s refusal.
_UNKNOWN_DOC = ("invalid_request (param the query parameter's name): the query string names a "
                "parameter")
#: How the API document describes :func:`check_known`'s refusal, for a route that takes no query
#: parameter.
NO_QUERY_DOC = f"{_UNKNOWN_DOC}, and the route takes none; {_NO_QUERY_ADVICE}."


def unknown_query_doc(taken: Sequence[str]) -> str:
    """How the API document describes :func:`check_known`'s refusal, for a route that takes
    the query parameters ``taken`` (:data:`NO_QUERY_DOC` when it takes none), naming them as
    the answer lists them."""
    if not taken:
        return NO_QUERY_DOC
    return (f"{_UNKNOWN_DOC} the route does not take; it takes {listed_keys(taken)} "
            f"({UNKNOWN_NAME_ADVICE}).")


def document_queries(schema: dict[str, Any], routers: Iterable[APIRouter]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 400 of a query parameter the route does not
    take (:func:`unknown_query_doc`, naming those it takes, as its check reads them:
    ``QueryCheckedRoute.taken``) on each operation of the ``routers``' routes that refuse one
    (every :class:`QueryCheckedRoute` but those that take any, :data:`ANY_QUERY`)."""
    for router in routers:
        for route in router.routes:
            if isinstance(route, QueryCheckedRoute) and route.taken is not None:
                document_refusal(schema, 400, unknown_query_doc(route.taken),
                                 operations=operations([route]))
    return schema


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
        check_numbers(self.dependant, f"{'/'.join(sorted(self.methods or ()))} {path}")
        self.taken: tuple[str, ...] | None = (
            None if takes_any_query(self.dependant) else query_names(self.dependant))
