"""How an error quotes a value a caller sent: as JSON writes it, cut short, never the
caller's own exception."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

import switchpoint._messages as messages
from switchpoint._messages import (
    all_of,
    got,
    json_quoted,
    one_of,
    past_floats,
    plain_number,
    reason,
)
from switchpoint.catalog import TIERS, Catalog, ModelCard
from switchpoint.errors import InvalidInputError
from switchpoint.governance.budgets import PERIODS, parse_budget
from switchpoint.governance.reports import REPORT_PERIODS
from switchpoint.known_providers import KNOWN_PROVIDERS
from switchpoint.policies import POLICIES, policy_class


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(("value", "shown"), [
    ("it's", '"it\'s"'), (True, "true"), (None, "null"), ({"a": [1, 2]}, '{"a": [1, 2]}'),
    ("\x1b[2J", '"\\u001b[2J"'), ("x" * 1_000_000, '"' + "x" * 57 + '…"'),
])
def test_a_value_is_quoted_as_json_writes_it(value: object, shown: str) -> None:
    assert json_quoted(value) == shown


def test_a_value_json_cannot_write_is_shown_as_python_shows_it() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    assert json_quoted(cycle) == "[[...]]"
    assert json_quoted(_Unprintable()).startswith("<")
    assert json_quoted(10 ** 5000).startswith("a number of more than")


@pytest.mark.parametrize("text", ["x" * 61, "\x1b" * 100, 'a"' * 100, "é" * 100,
                                  "ab\\" * 50, "x" * 59 + "\x1b"])
def test_a_long_string_is_cut_within_its_quotes_never_in_an_escape(text: str) -> None:
    """A string cut short still reads as one: its quotes close it, the cut is marked inside
    them, the bound holds, and what is kept is the string's start, each character written
    whole (never half of \\u001b or \\")."""
    shown = json_quoted(text)
    assert len(shown) <= 60 and shown.startswith('"') and shown.endswith('…"'), shown
    kept = json.loads(shown)
    assert kept.endswith("…") and text.startswith(kept[:-1]) and len(kept) > 1, shown


def test_a_string_that_fits_is_not_cut() -> None:
    assert json_quoted("x" * 58) == '"' + "x" * 58 + '"'
    assert json_quoted("x" * 80, 100) == '"' + "x" * 80 + '"'


def test_a_value_of_a_million_items_is_made_printable_only_as_far_as_it_is_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal quoting a list of a million items scanned every character of its JSON for
    ones a terminal would not show (seconds of work for a message of 60 characters); only
    what is shown is scanned, and escaped as before."""
    scanned: list[int] = []
    real = messages.printable

    def spy(text: str) -> str:
        scanned.append(len(text))
        return real(text)

    monkeypatch.setattr(messages, "printable", spy)
    shown = json_quoted(["\x1b", *["x"] * 1_000_000])
    assert shown.startswith('["\\u001b", "x", "x"') and shown.endswith("...")
    assert len(shown) <= 60 and max(scanned) <= 61, scanned
    assert json_quoted({"a": "\x1b"}) == '{"a": "\\u001b"}'


def test_a_number_is_shown_as_given_in_plain_terms_by_the_one_rule() -> None:
    """A NumPy scalar or a Decimal was shown as its repr (np.float64(1.5)) or as a JSON
    string ("1.5"), an infinity as JSON's Infinity (what 1e400 reads as in Python): each
    message helper now shows the number given, an infinity as too large."""
    for value, shown in [(np.float64(1.5), "1.5"), (np.float32(0.1), "0.1"), (np.int64(3), "3"),
                         (Decimal("1.5"), "1.5"), (Fraction(1, 3), "1/3"), (-0.5, "-0.5"),
                         (20000.0, "20000.0"), (float("nan"), "NaN"), (Decimal("sNaN"), "NaN")]:
        assert plain_number(value) == json_quoted(value) == shown, value
        assert got(value) == f", got {shown}"
    infinite = ("infinity, too large a number (what 1e400, or any number past about 1.8e308, "
                "reads as)")
    assert json_quoted(1e400) == got(np.float64("inf"))[6:] == infinite
    assert json_quoted(Decimal("-Infinity")).startswith("-infinity, too large a negative number")
    assert past_floats(10**400) == ("must be a finite number, got an integer of 401 digits, "
                                    "past the largest a number holds (about 1.8e308)")
    assert plain_number(Decimal("1e400")) == ("1E+400, past the largest a number holds (about "
                                              "1.8e308)")
    assert plain_number(True) is None and plain_number("1") is None and json_quoted(True) == "true"


def test_the_values_a_message_offers_are_quoted_as_json_writes_them() -> None:
    assert one_of(("day", "week", "month")) == '"day", "week" or "month"'
    assert one_of(("auto",)) == '"auto"' and one_of(()) == ""
    assert all_of(("text", "image_url")) == '"text" and "image_url"'
    assert one_of(["it's", "\x1b"]) == '"it\'s" or "\\u001b"'


def test_a_fixed_set_of_choices_reads_as_pydantic_writes_its_own() -> None:
    """The code's own checks offered their choices unquoted (``hour, day, week, month``)
    beside pydantic's, which the HTTP service shows quoted (``"day", "week" or "month"``)."""

    class Report(BaseModel):
        period: Literal["day", "week", "month"]

    with pytest.raises(ValidationError) as info:
        Report(period="year")
    assert reason(info.value.errors()[0]) == (
        f'must be one of {one_of(REPORT_PERIODS)}, got "year"')


@pytest.mark.parametrize(("refuse", "choices"), [
    (lambda: parse_budget("5/year"), one_of(PERIODS)),
    (lambda: Catalog([ModelCard("a", tier="godlike")]), one_of(TIERS)),
    (lambda: Catalog([ModelCard(name="a", provider="mistrall")]), one_of(KNOWN_PROVIDERS)),
    (lambda: policy_class("telepathy"), one_of(sorted(POLICIES))),
], ids=["budget-period", "tier", "provider", "policy"])
def test_a_refusal_offers_its_fixed_choices_quoted(refuse: Callable[[], object],
                                                   choices: str) -> None:
    with pytest.raises((ValueError, InvalidInputError)) as refused:
        refuse()
    assert choices.startswith('"') and choices in str(refused.value), str(refused.value)


@pytest.mark.parametrize("before", range(40, 62))
def test_a_key_straddling_a_quotes_cut_is_redacted_before_the_cut(before: int) -> None:
    """A value quoted cut short whose cut falls inside an ``sk-`` key shows none of the key:
    redacted after the cut, what was left of it (``sk-A1b2C``) was too short for the key's
    pattern, and its first characters were shown."""
    from switchpoint._messages import cut, json_quoted, quoted
    from switchpoint._redact import redact

    key = "sk-" + "A1b2C3d4E5" * 6
    value = "m" * (before - 1) + "," + key  # (the key starts at character `before`)
    for shown in (json_quoted(value), quoted(value), cut(value),
                  json_quoted(["m" * (before - 6), key]), json_quoted(value, before + 5)):
        assert "A1b" not in redact(shown), shown
        assert len(shown) <= 80
