"""A gateway's state in ``data_dir``, opened and closed: the directory's lock (taken first
when the gateway serves chat), the request log, the key store and ledger, the session pins,
the learning state, the models registered and the experiments created at run time; for a
gateway that only reads, the same read through read-only connections, nothing made or
written. :class:`StateFiles` is the :class:`~switchpoint.gateway.engine.Gateway`'s; the
gateway's ``open`` answers with it, and its closings end with :meth:`StateFiles.close`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from switchpoint._files import access_problem, private_dir
from switchpoint._messages import quoted_path
from switchpoint._process import check_process
from switchpoint.config import GatewaySettings
from switchpoint.errors import StoreError
from switchpoint.gateway.ab_tests import RuntimeExperiments
from switchpoint.gateway.admission import Admission
from switchpoint.gateway.at_exit import close_at_exit_if_open, closed
from switchpoint.gateway.chat_door import ChatDoor
from switchpoint.gateway.housekeeping import Housekeeping
from switchpoint.gateway.learning import GatewayLearning
from switchpoint.gateway.live import RouterState
from switchpoint.gateway.owner import DataDirLock
from switchpoint.gateway.registered_models import RuntimeModels
from switchpoint.gateway.sessions import SessionPinner, SQLitePinStore
from switchpoint.gateway.swaps import apply_max_keys
from switchpoint.governance.governor import Governor
from switchpoint.store import SQLiteStore
from switchpoint.store.removals import make_again

#: The session pins' file in ``data_dir``.
PINS_FILENAME = "sessions.db"


class StateFilesHost(Protocol):
    """What opening and closing its state reads of its gateway, and marks there: what it
    was made to do (serve chat, only read), its live router's settings, each part that
    holds a file, data_dir's lock and the session pins' file (None while not held), whether
    it is open, was closed after it opened and which process opened it, the parts that
    serve again once it is opened again, and its close (run at exit if still open)."""

    state: RouterState
    store: SQLiteStore | None
    governor: Governor
    pinner: SessionPinner
    learning: GatewayLearning
    models_registered: RuntimeModels
    ab_tests: RuntimeExperiments
    _housekeeping: Housekeeping
    _chat: ChatDoor
    _admission: Admission
    _applied: GatewaySettings
    _serves_chat: bool
    _reads_only: bool
    _owner: DataDirLock | None
    _pins: SQLitePinStore | None
    _opened: bool
    _closed: bool
    _pid: int | None

    def close(self) -> None: ...


class StateFiles:
    """One gateway's (``host``'s) state in ``data_dir``, opened and closed."""

    def __init__(self, host: StateFilesHost) -> None:
        self._host = host

    def open(self) -> None:
        """:meth:`Gateway.open <switchpoint.gateway.engine.Gateway.open>`."""
        host = self._host
        check_process(host._pid, "this Gateway")
        if host._opened:
            return
        path = Path(host.state.settings.data_dir)
        if host._reads_only:
            self._open_to_read(path)
            return
        try:  # the state is its owner's alone: data_dir 0700 when made here, its files 0600
            private_dir(path)
        except OSError as exc:
            hint = (access_problem(path, side_files=())
                    or "check that data_dir is a writable directory with free space")
            raise StoreError(f"{quoted_path(path)}: cannot create the state there ({exc}); "
                             f"{hint}") from None
        if host._serves_chat and host._owner is None:
            # Before any state opens (the store writes what an earlier stop left beside it).
            host._owner = DataDirLock(path).acquire()
        try:
            if host.store is not None:
                host.store.open(serving=host._owner is not None)
                make_again(host.store)  # (what a restored backup lacks: see store.removals)
            # (the key store first: one it refuses to make again leaves no sessions.db made)
            host.governor.open(serving=host._owner is not None)
            host._pins = SQLitePinStore(path / PINS_FILENAME,
                                        max_entries=host._applied.pin_max_sessions)
            host.pinner.store = host._pins
            if host._owner is not None:  # (what serves from data_dir: a reload's rule)
                apply_max_keys(host.governor.keys, host.state.settings.governance.max_keys,
                               when="service started", start=True)
            host.learning.open()
            host.models_registered.open()
            host.ab_tests.open()
        except BaseException:  # (a key store a newer switchpoint wrote, an unreadable file)
            # What opened before the failure closes again, as a stop closes it: no writer or
            # pin thread of a gateway that never opened runs on, holding the files (and making
            # sessions.db again) once data_dir's lock is let go.
            host.learning.close(checkpoint=False)
            self._close_files(store=True)
            raise
        self._opened_now()

    def _open_to_read(self, path: Path) -> None:
        """:meth:`open` for a gateway that ``reads_only``: the store must be there (it is
        read, never made); what was promoted and the run-time experiments are read from it
        as the gateway's reads read it, through read-only connections."""
        host = self._host
        if host.store is not None and not host.store.path.is_file():
            raise StoreError(f"{quoted_path(host.store.path)}: there is no store to read "
                             f"(no service has logged in {quoted_path(path)}); point data_dir "
                             "at the service's")
        host.learning.open()
        host.models_registered.open()
        host.ab_tests.open()
        self._opened_now()

    def _opened_now(self) -> None:
        host = self._host
        host._opened = True
        host._closed = False
        host._housekeeping.reopen()  # (opened again: it housekeeps again)
        host._pid = os.getpid()
        host._chat.reopen()  # (opened again: it serves again)
        host._admission.reopen()
        close_at_exit_if_open(host)

    def _release_data_dir(self) -> None:
        host = self._host
        if host._owner is not None:
            host._owner.release()
            host._owner = None

    def close(self) -> None:
        """The end of a closing: a checkpoint of what was learned (while the store is open),
        the files closed and data_dir's lock let go; a gateway closed after it opened refuses
        work until it is opened again."""
        host = self._host
        closed(host)
        if host._opened:
            host.learning.close()  # a checkpoint of what was learned, while the store is open
            host._closed = True
        self._close_files(store=host._opened)
        host._opened = False

    def _close_files(self, *, store: bool) -> None:
        """Close the key store and ledger, the session pins and (``store``) the log, then let
        go of ``data_dir``."""
        host = self._host
        host.governor.close()
        if host._pins is not None:
            host._pins.close()
            host._pins = None
        if store and host.store is not None:
            host.store.close()
        self._release_data_dir()
