"""The one check of the public API's argument types: a value of the wrong type is an
:class:`~switchpoint.errors.InvalidInputError` naming the argument, the type it takes and the
type it got, raised before anything is read, written or changed (rather than an
``AttributeError`` or ``TypeError`` from deep inside)."""

from __future__ import annotations

import collections.abc
import numbers
import os
from typing import cast

from switchpoint.errors import InvalidInputError

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
