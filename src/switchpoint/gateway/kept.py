"""What the store could not keep: the 503 that says so and what that left behind, and a
change written and waited for until the store's writer settles it."""

from __future__ import annotations

import threading
import weakref

from switchpoint.errors import StorageUnavailableError, StoreError
from switchpoint.store import SQLiteStore
from switchpoint.store.sqlite import REFUSING_S, Record

#: The most changes that wait in :func:`written` at once for one store's writer to settle
#: them: past it (a writer stuck on a disk that does not answer its fsync), a change is
#: refused before it is queued, not queued behind them with one more caller waiting.
MAX_WAITING = 32

_waiting: weakref.WeakKeyDictionary[SQLiteStore, int] = weakref.WeakKeyDictionary()
_waiting_lock = threading.Lock()


def not_kept(what: str, reason: object, *, then: str,
             retry_after: float | None = None) -> StorageUnavailableError:
    """The 503 for something the store could not keep (a full disk, a lock held too long),
    saying what that left behind (``then``); a :class:`StoreError` is told by the database's
    words alone (not the store's path)."""
    if isinstance(reason, StoreError):
        reason = reason.reason
    return StorageUnavailableError(f"{what} could not be kept ({reason}); free space in "
                                   f"data_dir, or stop what holds its lock, then try again "
                                   f"({then})", retry_after=retry_after)


def written(store: SQLiteStore | None, record: Record, what: str, then: str) -> None:
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
    change queued is still written and waited for."""
    if store is None:
        return
    with _waiting_lock:
        queued = _waiting.get(store, 0)
        if queued >= MAX_WAITING:
            raise StorageUnavailableError(
                f"{what} could not be kept: {queued} changes already wait for the store's "
                "writer to settle them (a disk that does not finish its writes, or a lock "
                f"another process holds); try again once they are settled ({then})",
                retry_after=REFUSING_S)
        _waiting[store] = queued + 1
    try:
        store.append(record).result()
    except StoreError as exc:
        raise not_kept(what, exc, then=then) from None
    finally:
        with _waiting_lock:
            _waiting[store] -= 1


def waiting(store: SQLiteStore) -> int:
    """How many changes wait in :func:`written` for ``store``'s writer now."""
    with _waiting_lock:
        return _waiting.get(store, 0)


__all__ = ["MAX_WAITING", "not_kept", "waiting", "written"]
