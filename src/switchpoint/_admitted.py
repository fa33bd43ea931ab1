"""Methods made as one request inside what admits them (a gateway's admission: see
:mod:`switchpoint.gateway.admission`), so closing waits for them and refuses them once begun."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])
#: What admits a method's call, given the object it is called on (None: nothing, it runs as it
#: is).
Admits = Callable[[Any], "AbstractContextManager[None] | None"]


def admitted_by(admits: Admits) -> Callable[[F], F]:
    """Decorate a method so each call runs inside ``admits(self)`` (a context manager counting it
    in, which raises to refuse it), or as it is when that gives None."""
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def inside(self: Any, *args: Any, **kwargs: Any) -> Any:
            admission = admits(self)
            if admission is None:
                return method(self, *args, **kwargs)
            with admission:
                return method(self, *args, **kwargs)

        return cast(F, inside)

    return decorate
