"""How an error quotes a value a caller sent: as JSON writes it, cut short, never the
caller's own exception."""

from __future__ import annotations

import pytest

from switchpoint._messages import json_quoted


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(("value", "shown"), [
    ("it's", '"it\'s"'), (True, "true"), (None, "null"), ({"a": [1, 2]}, '{"a": [1, 2]}'),
    ("\x1b[2J", '"\\u001b[2J"'), ("x" * 1_000_000, '"' + "x" * 56 + "..."),
])
def test_a_value_is_quoted_as_json_writes_it(value: object, shown: str) -> None:
    assert json_quoted(value) == shown


def test_a_value_json_cannot_write_is_shown_as_python_shows_it() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    assert json_quoted(cycle) == "[[...]]"
    assert json_quoted(_Unprintable()).startswith("<")
    assert json_quoted(10 ** 5000).startswith("a number of more than")
