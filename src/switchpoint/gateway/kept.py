"""What the store could not keep: the 503 that says so and what that left behind, and a
change written and waited for until the store's writer settles it."""

from __future__ import annotations

from switchpoint.errors import StorageUnavailableError, StoreError
from switchpoint.store import SQLiteStore
from switchpoint.store.sqlite import Record


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
    kept), it returns at once."""
    if store is None:
        return
    try:
        store.append(record).result()
    except StoreError as exc:
        raise not_kept(what, exc, then=then) from None


__all__ = ["not_kept", "written"]
