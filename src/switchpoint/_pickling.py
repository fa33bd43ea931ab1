"""Objects that travel by pickle (to a ``multiprocessing`` worker) without their runtime parts:
a lock, a loaded ONNX session. Each is left out of the pickle and made anew on arrival."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar


def _none() -> None:
    return None


#: Makers of what is left out: a fresh lock, or None for what is loaded again when first used.
LOCK: Callable[[], object] = threading.Lock
RLOCK: Callable[[], object] = threading.RLock
LAZY: Callable[[], object] = _none


def remade(**makers: Callable[[], object]) -> Mapping[str, Callable[[], object]]:
    """A class's ``_remade``: each attribute left out of its pickle, with its maker."""
    return MappingProxyType(makers)


class RemadeOnLoad:
    """A mixin: pickled without the attributes named in ``_remade`` (:func:`remade`), which
    unpickling sets anew from their makers (:data:`LOCK`, :data:`RLOCK`, :data:`LAZY`). A
    subclass that cannot travel in some state says so from :meth:`_check_picklable`."""

    _remade: ClassVar[Mapping[str, Callable[[], object]]] = remade()

    def _check_picklable(self) -> None:
        """Raise :class:`TypeError` saying why this object cannot be pickled as it stands."""

    def __getstate__(self) -> dict[str, Any]:
        self._check_picklable()
        state = dict(self.__dict__)
        for name in self._remade:
            state.pop(name, None)
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)
        for name, make in self._remade.items():
            setattr(self, name, make())
