"""What the library takes as a number from Python callers: ``int`` and ``float`` and NumPy's
scalars (``np.float32(0.5)``, ``np.int64(1)``), never a boolean (``True`` is not a score). An
integer too large for a float is infinite, so range checks refuse it with their own message
instead of an ``OverflowError``. Negative zero is zero: every number taken here (a score, a
cost, a λ, a rate) is a magnitude, and ``-0.0`` would be echoed, stored and shown as such."""

from __future__ import annotations

import numbers
from typing import Annotated

import numpy as np
from pydantic import BeforeValidator

from switchpoint._json import as_float


def real_number(value: object) -> float | None:
    """``value`` as a float, or None when it is not a real number (or is a boolean)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    return as_float(value) + 0.0  # -0.0 + 0.0 is 0.0


def boolean(value: object) -> bool | None:
    """``value`` as a bool when it is one (Python's or NumPy's), else None."""
    return bool(value) if isinstance(value, bool | np.bool_) else None


def not_a_boolean(value: object) -> object:
    """``value`` unchanged, unless it is a boolean: a config's number is never ``true``
    (YAML's ``true``/``yes`` would otherwise be taken for 1)."""
    if isinstance(value, bool | np.bool_):
        raise ValueError("must be a number, not a boolean (true/false)")
    return value


#: A config field's integer: any integer the field's bounds take, never a boolean.
Integer = Annotated[int, BeforeValidator(not_a_boolean)]
#: A config field's real number: any number the field's bounds take, never a boolean.
Real = Annotated[float, BeforeValidator(not_a_boolean)]
