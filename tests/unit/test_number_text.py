"""A number written as text (a command-line option's) is ASCII digits with an optional sign,
decimal point and exponent: never what ``float()`` and ``int()`` take besides."""

from __future__ import annotations

import argparse
import math

import pytest

from switchpoint import _options
from switchpoint._numbers import (
    TOO_SMALL,
    integer_text,
    number_text,
    number_with_unit,
    percent_text,
    too_small,
    whole_number_text,
    whole_too_large,
)


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


@pytest.mark.parametrize("text", ["1e-400", "0.1e-323", " 5e-999 "])
def test_a_number_not_0_too_small_for_a_float_is_refused_saying_so(text: str) -> None:
    # Read as 0 it would mean what was not written (a λ of 0 is quality first).
    assert number_text(text) is None and too_small(text)
    with pytest.raises(argparse.ArgumentTypeError) as info:
        _options.COST_WEIGHT(text)
    assert str(info.value) == f'"{text}" {TOO_SMALL}'


@pytest.mark.parametrize(("text", "value"), [("0e-400", 0.0), ("0.000e5", 0.0), ("1e-300", 1e-300),
                                             ("5e-324", 5e-324)])
def test_0_and_the_smallest_numbers_a_float_holds_are_read(text: str, value: float) -> None:
    assert number_text(text) == value and not too_small(text)


def test_an_option_refuses_a_value_quoting_it_as_json_writes_it_with_what_it_takes() -> None:
    # One wording for every number option of the command line: the value as JSON quotes it
    # ("abc", not Python's 'abc'), what the option takes and an example.
    cases = [
        (_options.COST_WEIGHT, "abc", '"abc" is not a number in ASCII digits; give a number '
                                      "from 0 to 10,000 (0 = quality first), such as 0.5"),
        (_options.COST_WEIGHT, "-1", '"-1" is negative; give a number from 0 to 10,000 '
                                     "(0 = quality first)"),
        (_options.COST_WEIGHT, "1e999", '"1e999" is out of range; give a number from 0 to'),
        (_options.COST_WEIGHTS, "0,it's", '"it\'s" is not a number in ASCII digits'),
        (_options.COST_WEIGHTS, " , ", '" , " holds no number; give a comma-separated list '
                                       "such as 0,0.1,1,10"),
        (_options.COST_WEIGHTS, "1, ,2", '"1, ,2" has no number at item 2 of 3'),
        (_options.COUNT, "8.5", '"8.5" is not a whole number; give a whole number, such as 8'),
        # (a whole number past the 100 digits one is read to is told as too large, not as
        # no whole number)
        (_options.COUNT, "9" * 101, '"' + "9" * 57 + '…" is a whole number of more than 100 '
                                    "digits, larger than any value taken here; give a whole "
                                    "number, such as 8"),
        (_options.SCORE, "1.5", '"1.5" is out of range; give a number from 0 to 1 (1 = best)'),
        (_options.COST, "-1", '"-1" is negative; give what the answer cost, a number '
                              "from 0 to 1,000"),
        (_options.NUMBER, "\u0665", '"\u0665" is not a number in ASCII digits; give a '
                                     "number, such as 2.5 or 1e3"),
        (_options.days_option, "0", '"0" is out of range; give a number of days > 0'),
        (_options.port_option, "70000", '"70000" is not a port number (0-65535)'),
        (_options.port_option, "x" * 5000, '"' + "x" * 57 + '…" is not a whole number in ASCII '
                                           "digits; give a port number (0-65535)"),
    ]
    for option, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            option(text)
        assert str(info.value).startswith(message), (text, str(info.value))
    assert _options.COST_WEIGHTS("0, 0.5,1e3") == [0.0, 0.5, 1000.0]
    assert _options.port_option("20400-20401") == range(20400, 20402)
    assert _options.days_option("30") == 30.0 and _options.COUNT("+8") == 8


@pytest.mark.parametrize(("text", "value"), [
    ("8", 8), ("-1", -1), ("1e3", 1000), ("1E3", 1000), ("2.5e3", 2500), ("8.0", 8),
    ("-0.0", 0), ("0e999", 0), ("1e22", 10**22), (" +7 ", 7), ("9" * 100, int("9" * 100)),
    ("1e99", 10**99),
])
def test_a_whole_number_is_read_exactly_written_as_any_number_is(text: str, value: int) -> None:
    got = whole_number_text(text)
    assert got == value and type(got) is int and not whole_too_large(text)


@pytest.mark.parametrize("text", ["2.5", "1e-3", "1e-400", "1_0", "\uff15", "nan", "inf", "",
                                  "1d", "0x10"])
def test_what_is_no_whole_number_is_not_read_as_one(text: str) -> None:
    assert whole_number_text(text) is None and not whole_too_large(text)


@pytest.mark.parametrize("text", ["9" * 101, "1e100", "1e309", "-1e999999999", "9" * 10_000,
                                  "1." + "1" * 200 + "e100"])
def test_a_whole_number_past_100_digits_is_too_large_not_read(text: str) -> None:
    # (Decimal reads an exponent of a billion without making its digits: nothing is slow)
    assert whole_number_text(text) is None and whole_too_large(text)


def test_a_number_with_a_unit_is_told_by_its_number() -> None:
    assert number_with_unit("1d") == "1" and number_with_unit(" -1.5 h ") == "-1.5"
    assert number_with_unit("1") is None and number_with_unit("d") is None
    assert number_with_unit("1_0d") is None


def test_the_odd_numbers_of_every_number_option_are_told_by_one_family_of_wording() -> None:
    """A number below 0 a float holds only as -0.0 (``-1e-400``) is negative where 0 or more
    is taken, as ``-5`` is, not "too small to be told from 0"; an empty value is empty, not
    "not a duration" nor "not a date"; one past the largest a float holds is too large, not
    "not finite"; and a --param of 1e-400 is refused, not taken as the 0 JSON reads."""
    from switchpoint.cli import CliError, _parse_params
    from switchpoint.governance.budgets import parse_budget
    from switchpoint.governance.cli import _grace
    from switchpoint.governance.keys import parse_expiry

    def why(option: object, text: object) -> str:
        with pytest.raises((argparse.ArgumentTypeError, ValueError, CliError)) as info:
            option(text)  # type: ignore[operator]
        return str(info.value)

    assert why(_options.COST_WEIGHT, "-1e-400").startswith('"-1e-400" is negative; give ')
    assert why(_grace, "-1e-400").startswith('"-1e-400" is negative; give 0 to 2,592,000')
    assert why(_grace, "").startswith('"" is empty; give 0 to 2,592,000 seconds')
    assert why(parse_expiry, " ").startswith('expires: " " is empty; give an ISO date')
    assert why(parse_expiry, "-1e-400").startswith('expires: "-1e-400" is negative')
    assert why(parse_budget, "1e400/day") == ('"1e400/day": the amount is too large; it must '
                                              "be at most 1,000,000,000 US dollars")
    for written in ("1e-400", "-1e-400"):
        assert why(_parse_params, [f"prior_strength={written}"]) == (
            f'--param prior_strength: "{written}" {TOO_SMALL}')
    # (-0 is 0, taken; a negative number where negatives are taken is no such refusal)
    assert _options.COST_WEIGHT("-0") == 0.0
    assert why(_options.NUMBER, "-1e-400") == f'"-1e-400" {TOO_SMALL}'


@pytest.mark.parametrize(("fraction", "shown"), [
    (0.218, "21.8%"), (0.0, "0.0%"), (1.0, "100.0%"), (0.5, "50.0%"), (1.25, "125.0%"),
    (2999 / 3000, "99.97%"), (0.00001, "0.001%"), (1.0004, "100.04%"), (-0.0004, "-0.04%"),
    (1e-12, "1.0e-10%")])
def test_a_share_is_shown_to_one_place_but_never_reads_as_none_or_all_when_it_is_not(
        fraction: float, shown: str) -> None:
    assert percent_text(fraction) == shown
