"""A number written as text (a command-line option's) is ASCII digits with an optional sign,
decimal point and exponent: never what ``float()`` and ``int()`` take besides."""

from __future__ import annotations

import math

import pytest

from switchpoint._numbers import integer_text, number_text


@pytest.mark.parametrize(("text", "value"), [
    ("0.5", 0.5), ("-2", -2.0), ("+1e-3", 0.001), (".5", 0.5), ("5.", 5.0), (" 7 ", 7.0),
    ("-0", 0.0), ("1E3", 1000.0),
])
def test_a_decimal_number_reads_as_itself(text: str, value: float) -> None:
    got = number_text(text)
    assert got == value and math.copysign(1.0, got) == math.copysign(1.0, value)


@pytest.mark.parametrize("text", ["1_0", "\u0665", "\uff15", "nan", "inf", "-Infinity", "0x1",
                                  "1e", "e3", "", " ", "1 0", "\u00a05"])
def test_what_float_takes_besides_is_no_number(text: str) -> None:
    assert number_text(text) is None and integer_text(text) is None


def test_a_number_too_large_for_a_float_is_infinite_for_the_range_checks() -> None:
    assert number_text("1e999") == math.inf and number_text("-1e999") == -math.inf


def test_a_whole_number_is_digits_alone_and_not_too_many() -> None:
    assert integer_text("8") == 8 and integer_text("-1") == -1 and integer_text("+0") == 0
    assert integer_text("8.0") is None and integer_text("1e3") is None
    assert integer_text("9" * 100) == int("9" * 100) and integer_text("9" * 101) is None
