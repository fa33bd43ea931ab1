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
