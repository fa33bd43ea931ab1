"""The gateways still open as the interpreter exits are closed then (a script that ends, or
calls ``sys.exit``, without closing one): each is held weakly from its opening to its closing,
and the exit hook is registered with the first gateway opened, not on import."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Protocol

log = logging.getLogger("switchpoint.gateway")


class _Closes(Protocol):
    """A gateway, as far as its closing at exit goes."""

    def close(self) -> None: ...


# The gateways open in this process, held weakly: those still open as the interpreter exits are
# closed then (see close_at_exit_if_open).
_STILL_OPEN: weakref.WeakSet[_Closes] = weakref.WeakSet()
_AT_EXIT = threading.Lock()
_at_exit_registered = False


def closed(gateway: _Closes) -> None:
    """``gateway`` closed: nothing is left to close at exit."""
    _STILL_OPEN.discard(gateway)


def close_at_exit_if_open(gateway: _Closes) -> None:
    """Close ``gateway`` as the interpreter exits if it is still open then (a script that ends,
    or calls ``sys.exit``, without closing it): its open streams are logged, its budget holds
    settled, its learning checkpointed and ``data_dir``'s lock released, while its threads
    still run (an exit handler runs before daemon threads are stopped). The hook is registered
    with the first gateway opened, not on import."""
    global _at_exit_registered
    _STILL_OPEN.add(gateway)
    with _AT_EXIT:
        if not _at_exit_registered:
            atexit.register(_close_open_gateways)
            _at_exit_registered = True


def _close_open_gateways() -> None:
    for gateway in list(_STILL_OPEN):
        try:
            gateway.close()
        except Exception as exc:  # (the others are closed still)
            log.error("a Gateway still open at exit did not close cleanly: %s", exc)
