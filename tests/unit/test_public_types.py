"""The public classes say what they return: no public method or property of ``Router`` or
``Gateway`` is annotated ``Any``, so ``mypy --strict`` checks code built on them (such as
``gateway.router.route_and_execute(...)``, as the README calls it)."""

from __future__ import annotations

import inspect
import typing

import pytest

import switchpoint.gateway
from switchpoint import Gateway, Router


def any_returns(cls: type) -> list[str]:
    """The public methods and properties of ``cls`` whose return annotation is ``Any``."""
    found = []
    for name, member in inspect.getmembers(cls):
        function = member.fget if isinstance(member, property) else member
        if name.startswith("_") or not callable(function):
            continue
        hints = typing.get_type_hints(function, localns=vars(switchpoint.gateway))
        if hints.get("return") is typing.Any:
            found.append(name)
    return found


@pytest.mark.parametrize("cls", [Router, Gateway])
def test_no_public_member_returns_any(cls: type) -> None:
    assert any_returns(cls) == []


def test_the_gateway_router_is_a_router() -> None:
    hints = typing.get_type_hints(typing.cast(property, Gateway.router).fget)
    assert hints["return"] is Router
