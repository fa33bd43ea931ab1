"""Another process holding a SQLite database's write lock (``BEGIN IMMEDIATE``), as a backup
tool or a stray ``sqlite3`` shell does, until the context ends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from switchpoint.gateway.kept import waiting
from switchpoint.store import SQLiteStore

T = TypeVar("T")

# Takes the lock, says so, and holds it until its stdin closes.
_HOLD = ("import sqlite3, sys\n"
         "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "conn.execute('BEGIN IMMEDIATE')\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n")


@contextmanager
def held_lock(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Hold the write lock of the database at ``path`` from another process while inside."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held", "the lock was not taken"
        yield holder
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


def short_lock_waits(monkeypatch: pytest.MonkeyPatch, seconds: float = 1.5) -> float:
    """Make the store of a service started after this wait ``seconds`` for a held lock
    (SQLite's busy timeout, 5 s) and count itself refusing for as long after a refused write
    (5 s too), so that a test of what a held lock does spends seconds, not tens of them; the
    behaviour is the same, scaled. Returns ``seconds``."""
    monkeypatch.setattr("switchpoint.store.sqlite.BUSY_MS", int(seconds * 1000))
    monkeypatch.setattr("switchpoint.store.sqlite.REFUSING_S", seconds)
    return seconds


def until_writable(store: SQLiteStore, within: float = 30.0) -> None:
    """Wait until ``store`` takes writes again: after a write the database refused, it refuses
    the next at once for a while (see :func:`short_lock_waits`)."""
    deadline = time.monotonic() + within
    while store.refusing() is not None:
        assert time.monotonic() < deadline, "the store kept refusing"
        time.sleep(0.05)


def sent_while_held(path: Path, send: Callable[[], T], meanwhile: Callable[[], object]) -> T:
    """What ``send`` returns, called (on another thread) while another process holds the
    write lock of the database at ``path`` (for longer than the store waits: see
    :func:`short_lock_waits`): it must not have answered a second on, when ``meanwhile``
    checks what shows while it waits; then the lock is let go and its answer waited for."""
    with ThreadPoolExecutor(1) as pool:
        with held_lock(path):
            answer = pool.submit(send)
            done, _ = wait([answer], timeout=1.0)
            assert not done, "answered while the write was held"
            meanwhile()
        return answer.result(timeout=60)


def refused_unkept(response: httpx.Response, what: str, then: str) -> None:
    """``response`` is the 503 of a change the store could not keep while the lock was held:
    Retry-After, ``storage_unavailable``, naming ``what`` could not be kept and saying
    ``then`` (what did not happen)."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    error = response.json()["error"]
    assert error["code"] == "storage_unavailable", error
    assert f"{what} could not be kept (database is locked)" in error["message"], error
    assert f"({then})" in error["message"], error


def queued_while_held(path: Path, store: SQLiteStore, sends: Sequence[Callable[[], T]],
                      meanwhile: Callable[[], object]) -> list[T]:
    """What each of ``sends`` returns, each called on a thread of its own while another
    process holds the write lock of the database at ``path`` (for longer than the store
    waits: see :func:`short_lock_waits`): once all of them wait for ``store``'s writer (one
    in its write, the others for the lock of the change it makes), ``meanwhile`` checks what
    shows; none must have answered by then. Then the lock is let go and every answer waited
    for."""
    with ThreadPoolExecutor(len(sends)) as pool:
        with held_lock(path):
            answers = [pool.submit(send) for send in sends]
            deadline = time.monotonic() + 30
            while waiting(store) < len(sends):
                assert time.monotonic() < deadline, (
                    f"{waiting(store)} of the {len(sends)} changes sent wait for the writer")
                time.sleep(0.01)
            meanwhile()
            assert not any(answer.done() for answer in answers), "answered while held"
        return [answer.result(timeout=60) for answer in answers]


def refused_as_too_many(response: httpx.Response, what: str, then: str, queued: int) -> None:
    """``response`` is the 503 of a change refused at once, not queued, because ``queued``
    changes already wait for the store's writer: Retry-After, ``storage_unavailable``,
    naming ``what`` could not be kept, how many wait, and saying ``then``."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    error = response.json()["error"]
    assert error["code"] == "storage_unavailable", error
    assert error["message"].startswith(
        f"{what} could not be kept: {queued} changes already wait for the store's writer to "
        "settle them"), error
    assert f"try again once they are settled ({then})" in error["message"], error
