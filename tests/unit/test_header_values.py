"""The gateway's own header values are ones HTTP carries, whatever text they are made from."""

from __future__ import annotations

import h11
import pytest

from switchpoint.server.routes.chat import header_text


def _sent(value: str) -> None:
    # (h11 refuses a value HTTP cannot carry: a control character, a space at either end)
    h11.Response(status_code=200, headers=[("x-switchpoint-reasoning", value)])


@pytest.mark.parametrize("limit", [5, 6, 7, 999, 1000])
def test_a_value_cut_at_its_limit_after_a_space_does_not_end_in_one(limit: int) -> None:
    # a reasoning long enough to be cut, whose cut falls just after a space: the value sent
    # ended in that space, which h11 refused, so the answer was never sent (the client read a
    # dropped connection)
    words = "word " * 400
    for start in range(6):
        value = header_text(words[start:], limit)
        assert value == value.strip() and len(value) <= limit
        _sent(value)


def test_control_characters_and_non_ascii_are_carried_as_spaces_and_replacements() -> None:
    value = header_text("  upstream said:\n\tbad\x00key é \u2028end  ")
    assert value == "upstream said: bad key ? end"
    _sent(value)
