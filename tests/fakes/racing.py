"""Two openers at the same moment: the same work started by several threads together."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(work: Callable[[], object], times: int = 2) -> list[object]:
    """What ``work`` returned (or raised) run by ``times`` threads started together."""
    start = threading.Barrier(times)
    seen: list[object] = []

    def run() -> None:
        start.wait()
        try:
            seen.append(work())
        except Exception as exc:  # reported by the caller
            seen.append(exc)

    threads = [threading.Thread(target=run) for _ in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return seen


def while_changing(work: Callable[[], object], change: Callable[[], object],
                   threads: int = 2) -> list[object]:
    """What ``work`` returned (or raised), run over and over by ``threads`` threads while
    another runs ``change`` once, until it is done."""
    stop = threading.Event()
    seen: list[object] = []

    def run() -> None:
        while not stop.is_set():
            try:
                seen.append(work())
            except Exception as exc:  # reported by the caller
                seen.append(exc)

    def changing() -> None:
        try:
            change()
        finally:
            stop.set()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    changer = threading.Thread(target=changing)
    for t in [*workers, changer]:
        t.start()
    for t in [changer, *workers]:
        t.join(timeout=60)
    return seen
