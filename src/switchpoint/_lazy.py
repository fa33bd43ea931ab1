"""A package's names loaded on use: the one ``__getattr__`` the packages whose modules are
heavy to import (the gateway, its providers, governance) share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def names_on_use(package: str, modules: Mapping[str, str],
                 aliases: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``modules`` read from the module
    of ``package`` it maps to, as it is first asked for (under the name ``aliases`` gives it
    there, if any); any other name an :class:`AttributeError`, as Python's own."""
    renamed = dict(aliases or {})

    def attribute(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), renamed.get(name, name))

    return attribute
