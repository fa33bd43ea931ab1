"""The config's number, boolean and text fields as pydantic reads them.

The rules are :mod:`switchpoint._numbers`' (a number is never a boolean, ``-0.0`` is ``0.0``, a
boolean is ``true`` or ``false``); this module binds them to pydantic's validators, apart from
those rules so that routing alone (``import switchpoint``, ``switchpoint route``) does not load
pydantic."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from switchpoint._messages import not_text_problem
from switchpoint._numbers import (
    not_a_boolean,
    only_a_boolean,
    unsigned_zero,
)

#: A config field's integer: any integer the field's bounds take, never a boolean.
Integer = Annotated[int, BeforeValidator(not_a_boolean)]
#: A config field's real number: any number the field's bounds take, never a boolean, and
#: ``-0.0`` as ``0.0``.
Real = Annotated[float, BeforeValidator(not_a_boolean), AfterValidator(unsigned_zero)]
#: A config field's boolean: ``true`` or ``false``, never a number nor a string.
Boolean = Annotated[bool, BeforeValidator(only_a_boolean)]


def only_text(value: object) -> object:
    """``value`` unchanged unless it is bytes, which pydantic's lax mode would decode as UTF-8
    text, or a date or a time YAML read from an unquoted one: an error saying
    :func:`~switchpoint._messages.not_text_problem`."""
    problem = not_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A config field's text, and a mapping's key: a ``str`` (a NumPy string is one), never bytes
#: (:func:`only_text`), which a mapping passed in, a card registered in process or YAML's
#: ``!!binary`` may hold, nor a date (YAML's unquoted ``2021-02-28``).
Text = Annotated[str, BeforeValidator(only_text)]
