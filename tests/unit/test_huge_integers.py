"""An integer too large for a float, even one with more digits than Python prints, is an
infinite number to the range checks and is shown by its length, never an exception."""

from __future__ import annotations

import math
import sys

import pytest

from switchpoint._json import as_float
from switchpoint._messages import PAST_FLOATS, plain_number
from switchpoint._numbers import real_number


@pytest.mark.parametrize("digits", [400, sys.get_int_max_str_digits() + 10])
def test_a_huge_integer_is_infinite_with_its_sign(digits: int) -> None:
    huge = 10 ** (digits - 1)
    assert as_float(huge) == math.inf and as_float(-huge) == -math.inf
    assert real_number(huge) == math.inf and real_number(-huge) == -math.inf
    shown = plain_number(huge)
    assert shown is not None and shown.endswith(f", {PAST_FLOATS}") and len(shown) < 120
    if digits <= sys.get_int_max_str_digits():
        assert shown == f"an integer of {digits} digits, {PAST_FLOATS}"
    else:
        assert shown.startswith("a number of more than ")
