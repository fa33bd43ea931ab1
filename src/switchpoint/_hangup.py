"""``SIGHUP`` while ``switchpoint serve`` starts: noted, not fatal.

Once the service serves, ``SIGHUP`` reloads its config; before that (the weights checked, the
state opened, the port not yet open) its default action would end the process. :func:`defer`,
called as the start begins, notes such a signal instead; :func:`take_pending` tells the
server, once it serves, that one came (it then reloads, so a config changed during the start
is taken up). Kept light: the command installs it before the heavy imports of the server.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_pending = threading.Event()


def _note(signum: int, frame: FrameType | None) -> None:
    _pending.set()


def defer() -> None:
    """Note ``SIGHUP`` from now on instead of dying of it (main thread only: elsewhere, and
    where the platform has no ``SIGHUP``, nothing changes)."""
    if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, _note)


def take_pending() -> bool:
    """Whether a ``SIGHUP`` was noted since :func:`defer` (or the last call); clears it."""
    came = _pending.is_set()
    _pending.clear()
    return came
