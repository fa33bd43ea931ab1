"""A number written as text (a command-line option's) is ASCII digits with an optional sign,
decimal point and exponent: never what ``float()`` and ``int()`` take besides."""

from __future__ import annotations

import math

import pytest

from switchpoint._numbers import TOO_SMALL, integer_text, not_a_number, number_text, too_small


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


@pytest.mark.parametrize("text", ["1e-400", "-1e-400", "0.1e-323", " 5e-999 "])
def test_a_number_not_0_too_small_for_a_float_is_refused_saying_so(text: str) -> None:
    # Read as 0 it would mean what was not written (a λ of 0 is quality first).
    assert number_text(text) is None and too_small(text)
    assert not_a_number(text) == TOO_SMALL


@pytest.mark.parametrize(("text", "value"), [("0e-400", 0.0), ("0.000e5", 0.0), ("1e-300", 1e-300),
                                             ("5e-324", 5e-324)])
def test_0_and_the_smallest_numbers_a_float_holds_are_read(text: str, value: float) -> None:
    assert number_text(text) == value and not too_small(text)


def test_what_is_not_a_number_is_told_with_an_example() -> None:
    assert not_a_number("1_0", "0.5") == "is not a number in ASCII digits, such as 0.5"
