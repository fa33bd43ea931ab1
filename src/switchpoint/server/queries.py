"""A request's query string and headers name each parameter at most once.

Given twice (``?tenant=a&tenant=b``), which value counts would be anyone's guess: the web
framework reads the last, a proxy or filter in front may check the first, and a request one
of them allowed would be answered for the other. So a repeat is refused, named, as a JSON
body's key written twice is (:mod:`switchpoint.server.bodies`).

:func:`single_query` runs before every route (an app dependency, so before the route's own
checks of who calls: the rule is the same on every route, and the 400 names only what the
caller sent, so it tells nothing of the route). A parameter a route does not read is ignored,
as it always was, but not when it is given twice: no route takes a list in its query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from starlette.requests import Request

from switchpoint.errors import InvalidInputError


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
