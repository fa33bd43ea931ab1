"""The one check of the public API's argument types: a value of the wrong type is an
:class:`~switchpoint.errors.InvalidInputError` naming the argument, the type it takes and the
type it got, raised before anything is read, written or changed (rather than an
``AttributeError`` or ``TypeError`` from deep inside)."""

from __future__ import annotations

import collections.abc
import functools
import inspect
import numbers
import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

from switchpoint._messages import refuse_unknown
from switchpoint.errors import InvalidInputError

F = TypeVar("F", bound=Callable[..., Any])

#: What a path argument takes: a string or any ``os.PathLike`` (``pathlib.Path``).
PATH = (str, os.PathLike)
#: What a callback argument takes: anything callable.
FUNCTION = cast(type, collections.abc.Callable)
#: What a number argument takes: any real number (NumPy's scalars too), never a boolean.
NUMBER = (float, int, cast(type, numbers.Real))  # (the built-ins first: the quick checks)
#: What a whole-number argument takes: any integer (NumPy's too), never a boolean.
INTEGER = (int, cast(type, numbers.Integral))


def expect(field: str, value: object, types: type | tuple[type, ...], what: str, *,
           optional: bool = False) -> None:
    """Raise :class:`InvalidInputError` for ``field`` unless ``value`` is an instance of
    ``types`` (or None, when ``optional``). ``what`` says in words what the argument takes
    (``"a WeightsPackage"``); `` or None`` is added when ``optional``. A boolean is not taken
    for a number (``True`` is no cache size), unless ``types`` names ``bool`` itself. The
    message names the type it got, never the value (which may be a secret)."""
    if value is None and optional:
        return
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, wanted) and (type(value) is not bool or bool in wanted):
        return
    raise InvalidInputError(field, f"must be {what}{' or None' if optional else ''}, "
                                   f"got {'None' if value is None else type(value).__name__}")


def passes_on(target: Callable[..., Any]) -> Callable[[F], F]:
    """A method that passes its ``**kwargs`` on to ``target`` (a method too): a keyword
    argument that is neither one of its own nor a keyword-only one of ``target`` is refused
    before it runs, with :class:`InvalidInputError` naming it and listing the arguments the
    method takes (rather than Python's ``TypeError`` naming ``target``, which its caller never
    called). (``target``'s other arguments are the method's to pass, so it takes none of them
    by keyword.)"""
    if any(p.kind is inspect.Parameter.VAR_KEYWORD
           for p in inspect.signature(target).parameters.values()):
        raise TypeError(f"{target.__qualname__} takes any keyword: there is nothing to check")

    def decorate(method: F) -> F:
        taken = tuple(dict.fromkeys(_named(method) + _named(target, keyword_only=True)))
        where = method.__qualname__

        @functools.wraps(method)
        def checked(*args: Any, **kwargs: Any) -> Any:
            refuse_unknown(kwargs, taken, "argument", where,
                           none_advice="call it without keyword arguments")
            return method(*args, **kwargs)

        return cast(F, checked)

    return decorate


def _named(function: Callable[..., Any], *, keyword_only: bool = False) -> tuple[str, ...]:
    """The arguments a method (past its first, ``self`` or ``cls``) takes by name."""
    kinds = ((inspect.Parameter.KEYWORD_ONLY,) if keyword_only else
             (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return tuple(p.name for p in parameters if p.kind in kinds)
