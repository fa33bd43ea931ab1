"""What loads on use: a package's names (the one ``__getattr__`` the packages whose modules
are heavy to import share: the gateway, its providers, governance, ``switchpoint`` itself), and
NumPy where a module only checks whether a value is one of its types."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from types import ModuleType
from typing import Any

_numpy: list[ModuleType] = []  # NumPy, once numpy_if_loaded has seen it loaded


def numpy_if_loaded() -> ModuleType | None:
    """NumPy if some module has imported it, else None: no value can be one of its types
    before then, so a check of a value's type (an array, a NumPy boolean or number) need not
    import it, which every command would pay (some 100 ms) though most hold no array."""
    if _numpy:
        return _numpy[0]
    if "numpy" not in sys.modules:
        return None
    import numpy  # (at once: only waits while another thread is still importing it)

    _numpy.append(numpy)
    return numpy


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
