"""The public classes say what they return: no public method or property of ``Router`` or
``Gateway`` is annotated ``Any``, so ``mypy --strict`` checks code built on them (such as
``gateway.router.route_and_execute(...)``, as docs/library.md calls it)."""

from __future__ import annotations

import inspect
import re
import typing

import pytest

import switchpoint.gateway
import switchpoint.gateway.providers
import switchpoint.registration
from switchpoint import Gateway, Router

# (the names the classes' annotations import for the type checker alone: the gateway's and its
# providers' load on use, so each is asked for by name)
_ANNOTATED = {**vars(switchpoint.registration),
              **{name: getattr(package, name)
                 for package in (switchpoint.gateway, switchpoint.gateway.providers)
                 for name in package.__all__}}


def any_returns(cls: type) -> list[str]:
    """The public methods and properties of ``cls`` whose return annotation is ``Any``."""
    found = []
    for name, member in inspect.getmembers(cls):
        function = member.fget if isinstance(member, property) else member
        if name.startswith("_") or not callable(function):
            continue
        hints = typing.get_type_hints(function, localns=_ANNOTATED)
        if hints.get("return") is typing.Any:
            found.append(name)
    return found


@pytest.mark.parametrize("cls", [Router, Gateway])
def test_no_public_member_returns_any(cls: type) -> None:
    assert any_returns(cls) == []


def test_the_gateway_router_is_a_router() -> None:
    hints = typing.get_type_hints(typing.cast(property, Gateway.router).fget)
    assert hints["return"] is Router


def _undocumented(obj: object) -> list[str]:
    """The public names of ``obj`` (an exported function, or a class and the methods and
    properties it defines itself) whose ``help()`` would show no docstring of their own."""
    if not inspect.isclass(obj):
        return [] if inspect.getdoc(obj) else [getattr(obj, "__name__", repr(obj))]
    found = [] if obj.__doc__ else [obj.__name__]
    fields = getattr(obj, "__dataclass_fields__", {})
    for name, member in vars(obj).items():
        if name.startswith("_") or name in fields:  # (a field's default is no method)
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        function = member.fget if isinstance(member, property) else member
        if (callable(function) or isinstance(member, property)) and not getattr(
                function, "__doc__", None):
            found.append(f"{obj.__name__}.{name}")
    return found


PUBLIC = sorted({name: getattr(switchpoint, name) for name in switchpoint.__all__
                 if name != "__version__"}.items()) + sorted(
    {f"gateway.{name}": getattr(switchpoint.gateway, name)
     for name in switchpoint.gateway.__all__}.items())


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_every_public_name_says_what_it_does(name: str, obj: object) -> None:
    """What a newcomer reads with ``help()``: every exported function and class, and each
    public method and property a class defines, has a docstring of its own (``help`` showed
    none for ``Router.stats``, ``WeightsPackage.save``, ``RecordSet.subset``,
    ``Gateway.settings``, the ``Observer``'s callbacks, ...)."""
    assert _undocumented(obj) == []


def _docs(obj: object) -> list[str]:
    """The docstrings ``help(obj)`` shows: its own and those of the public methods and
    properties a class defines."""
    docs = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_") and name != "__init__":
                continue
            function = member.fget if isinstance(member, property) else getattr(
                member, "__func__", member)
            docs.append(getattr(function, "__doc__", None) or "")
    return docs


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_no_public_name_sends_its_reader_to_a_private_module(name: str, obj: object) -> None:
    """A docstring says the behaviour, not where a private helper holds it (ConfigError's
    sent its reader to ``switchpoint._messages.shown_key``)."""
    assert [doc for doc in _docs(obj) if re.search(r"switchpoint(\.\w+)*\._", doc)] == []


def test_a_config_error_cuts_its_key_as_its_docstring_says() -> None:
    """What ConfigError's docstring promises of a long key: a part over 100 characters cut to
    its first ones and "…", the parts after it kept; a path over 400 characters ends ".…"."""
    from switchpoint import ConfigError

    error = ConfigError(f"tenants.{'t' * 100_000}.cost_weight", "must be from 0 to 1")
    assert error.key.startswith("tenants.tttt") and error.key.endswith("….cost_weight")
    assert len(error.key.split(".")[1]) == 100
    long_path = ConfigError(".".join(["x" * 90] * 10), "bad")
    assert long_path.key.endswith(".…") and len(long_path.key) <= 400
