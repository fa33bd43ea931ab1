"""What the store could not keep: the 503 that says so and what that left behind, and a
change written and waited for until the store's writer settles it."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from switchpoint.errors import StorageUnavailableError, StoreError
from switchpoint.store import SQLiteStore
from switchpoint.store.logs import Record
from switchpoint.store.removals import Removal, journaled
from switchpoint.store.sqlite import REFUSING_S

#: The most changes that wait at once for one store's writer to settle them, in
#: :func:`written` or for the lock of a :func:`turn` (held by a change that waits there):
#: past it (a writer stuck on a disk that does not answer its fsync), a change is refused
#: before it is queued, not queued behind them with one more caller waiting.
MAX_WAITING = 32

_waiting: weakref.WeakKeyDictionary[SQLiteStore, int] = weakref.WeakKeyDictionary()
_waiting_lock = threading.Lock()
# The stores the running thread's change is counted for already (its turn, then its write).
_counted_here = threading.local()


def not_kept(what: str, reason: object, *, then: str, retry_after: float | None = None,
             store: SQLiteStore | None = None) -> StorageUnavailableError:
    """The 503 for something the store could not keep (a full disk, a lock held too long),
    saying what that left behind (``then``); a :class:`StoreError` is told by the database's
    words alone (not the store's path). A damaged file (the store's ``damaged``) is said so,
    as the service answers a damaged file met reading it: waiting does not mend it, so no
    ``Retry-After`` and clients are told not to retry (``x-should-retry: false``). So is the
    file of ``store`` (the store that refused) deleted or replaced while the service ran: only
    a restart opens the file now at its path."""
    left = None if store is None else store.gone()
    if left is not None and store is not None:
        error = StorageUnavailableError(
            f"{what} could not be kept ({store.path.name} in data_dir {left} while the service "
            f"ran; waiting does not mend it: the operator must restart the service, which "
            f"opens the file now there) ({then})")
        error.retry_after, error.permanent = None, True
        return error
    if isinstance(reason, StoreError) and reason.damaged:
        error = StorageUnavailableError(f"{what} could not be kept ({reason.reason}); waiting "
                                        f"does not mend it ({then})")
        error.retry_after, error.permanent = None, True
        return error
    if isinstance(reason, StoreError):
        reason = reason.reason
    return StorageUnavailableError(f"{what} could not be kept ({reason}); free space in "
                                   f"data_dir, or stop what holds its lock, then try again "
                                   f"({then})", retry_after=retry_after)


def written(store: SQLiteStore | None, record: Record, what: str, then: str, *,
            removal: Removal | None = None) -> None:
    """Write ``record``, a change made at run time (a model registered, an experiment made
    or ended, a comparison revealed, a promotion), and wait until the store's writer says
    how it went, so that what is in memory changes exactly when data_dir does (the caller
    changes it once this returns): memory and a restart never disagree, and the answer says
    what happened. There is no bound of its own to give up at: the writer settles every
    record it is given (one waiting for a lock another process holds fails after SQLite's
    busy timeout), and a write given up on while still queued would land after its answer
    said it failed. Refused, the :class:`~switchpoint.errors.StorageUnavailableError` (503)
    of what could not be kept (``what``), saying that ``then``. Without a store (nothing is
    kept), it returns at once.

    What waits is bounded instead: with :data:`MAX_WAITING` changes already waiting for
    ``store``'s writer (one stuck in a write the disk does not finish), ``record`` is not
    queued and the 503 says so (``then``), to be tried again once those are settled; each
    change queued is still written and waited for. A change written under a lock other
    changes wait for takes that lock with :func:`turn`, so those waiting for it count too.

    ``removal`` (a model unregistered, an experiment ended) is kept beside the store first
    (:func:`~switchpoint.store.removals.journaled`), so that a restored older backup does not
    bring it back, and taken out again when the store refuses ``record``."""
    if store is None:
        return
    with _counted(store, what, then):
        try:
            with journaled(store, removal) if removal is not None else nullcontext():
                store.append(record).result()
        except StoreError as exc:
            raise not_kept(what, exc, then=then, store=store) from None


@contextmanager
def turn(store: SQLiteStore | None, lock: AbstractContextManager[Any], what: str,
         then: str) -> Iterator[None]:
    """Hold ``lock``, the lock of changes made one at a time (a registration, an
    experiment's, a promotion) under which one is written (:func:`written`), counted among
    the changes that wait for ``store``'s writer from before it waits for ``lock``: behind
    one stuck in its write, the others wait for the lock, and past :data:`MAX_WAITING` the
    next is refused at once with the 503 :func:`written` answers (``what``, ``then``),
    rather than queued on the lock without limit. A change counted once (a turn taken
    inside another, the write under it) is not counted again. Without a store (nothing is
    kept, nothing waits for a writer), only ``lock`` is taken."""
    if store is None:
        with lock:
            yield
        return
    with _counted(store, what, then), lock:
        yield


@contextmanager
def _counted(store: SQLiteStore, what: str, then: str) -> Iterator[None]:
    """Count the running thread's change among those waiting for ``store``'s writer while
    it lasts, refusing it (503) when :data:`MAX_WAITING` already wait; once only, however
    many turns and writes of the change nest."""
    mine: list[SQLiteStore] = _counted_here.__dict__.setdefault("stores", [])
    if any(held is store for held in mine):
        yield
        return
    with _waiting_lock:
        queued = _waiting.get(store, 0)
        if queued >= MAX_WAITING:
            raise StorageUnavailableError(
                f"{what} could not be kept: {queued} changes already wait for the store's "
                "writer to settle them (a burst of changes sent at once, a disk slow to "
                "finish its writes, or a lock another process holds); try again once they "
                f"are settled ({then})",
                retry_after=REFUSING_S)
        _waiting[store] = queued + 1
    mine.append(store)
    try:
        yield
    finally:
        mine.remove(store)
        with _waiting_lock:
            _waiting[store] -= 1


def waiting(store: SQLiteStore) -> int:
    """How many changes wait for ``store``'s writer now, in :func:`written` or for the lock
    of a :func:`turn`."""
    with _waiting_lock:
        return _waiting.get(store, 0)


__all__ = ["MAX_WAITING", "not_kept", "turn", "waiting", "written"]
