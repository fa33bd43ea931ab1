"""Objects that travel by pickle (to a ``multiprocessing`` worker) without their runtime parts:
a lock, a loaded ONNX session. Each is left out of the pickle and made anew on arrival.

A process made by ``os.fork()`` (gunicorn's ``--preload``, ``multiprocessing``'s ``fork``
start method) is a copy too, though no pickle is made: it holds each lock as the forking moment
left it, and a lock another thread held then (a router's embedding model loading on its
warm-up thread, a route under way) would stay held in the child for good, since that thread
is not copied. So the child makes every such object's locks anew, as unpickling does; what is
loaded stays loaded (an ONNX session works in the child), and what was still loading when the
process forked is loaded again on first use."""

from __future__ import annotations

import os
import threading
import weakref
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
    subclass that cannot travel in some state says so from :meth:`_check_picklable`. In a
    child of ``os.fork()`` its locks are made anew (see the module docstring)."""

    _remade: ClassVar[Mapping[str, Callable[[], object]]] = remade()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        if any(make in _LOCKS for make in cls._remade.values()):
            _track(self)
        return self

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


_LOCKS = (LOCK, RLOCK)
# The objects alive whose ``_remade`` names a lock: a child of a fork makes those anew.
_with_locks: weakref.WeakSet[RemadeOnLoad] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hooked = False


def _track(obj: RemadeOnLoad) -> None:
    """Remember ``obj`` for a fork's child; the hook is registered with the first (not at
    import: importing switchpoint changes nothing in the process)."""
    global _hooked
    with _hook_lock:
        if not _hooked and hasattr(os, "register_at_fork"):  # (Windows has no fork)
            os.register_at_fork(after_in_child=_remake_locks_in_child)
        _hooked = True
        _with_locks.add(obj)


def _remake_locks_in_child() -> None:
    global _hook_lock
    _hook_lock = threading.Lock()  # (a thread of the parent may have held it)
    for obj in list(_with_locks):
        for name, make in obj._remade.items():
            if make in _LOCKS:
                setattr(obj, name, make())

