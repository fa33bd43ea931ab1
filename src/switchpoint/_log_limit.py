"""At most a few records of one message a minute: a log kept readable when the same thing
happens thousands of times (a client's malformed requests, an upstream's outage).

:class:`RateLimitFilter` is the one rule, whoever applies it: the service on its log's handler
(:mod:`switchpoint.server.logs`), and a gateway on the lines it writes each failed upstream try
(:mod:`switchpoint.gateway.failed_tries`), in process too, where no handler of the service's
limits them. A record one limit let through is not counted again by another. A record may name
what it repeats per (:func:`repeats_per`, e.g. a gateway's failed tries name their model), so
one thing's repeats do not silence another's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

# Set on a record a limit let through: another limit it meets passes it as it is.
_JUDGED = "switchpoint_repeats_judged"
# Set on a record (through ``extra=``, see :func:`repeats_per`): what its repeats are counted
# per, beside its logger and message, whatever its level.
_PER = "switchpoint_repeats_per"
# The most of a message's first line, and of what it repeats per, a key holds.
_MAX_LINE = 200
_MAX_PER = 256


def repeats_per(name: str) -> Mapping[str, str]:
    """The ``extra=`` of a record whose repeats are counted per ``name`` (a model's, say) and
    not per level: its logger's records of its message naming the same share one limit, at
    every level; others naming another have their own."""
    return {_PER: name}


@dataclass
class _Window:
    start: float
    top: int  # (the most severe level the window let through)
    passed: int = 0
    dropped: int = 0


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records of one message per ``interval`` seconds.

    Records are "the same message" when they share the logger, the level and the first line of
    the unformatted message (so ``unexpected error on %s %s`` counts as one whatever the path,
    and asyncio's multi-line reports by their first line). A message that is a lone ``%s``
    (a text written beforehand: each model's start warning, a reload's note) is its text, so
    different ones are different messages, not repeats of one. The first record let through
    after some were dropped says how many. At most ``max_keys`` messages are tracked (the least
    recently seen are forgotten first), so the filter's own memory is bounded too. A record
    another such filter let through already (a gateway's, before the service's handler) passes
    uncounted: it was judged once.

    A record naming what it repeats per (:func:`repeats_per`: a failed try its model) is
    counted with its logger's records of the same message naming the same (its first 256
    characters), whatever their level: one model's outage uses that model's lines, not
    another's, and its retries' INFO lines and its failures' WARNINGs share one limit. A
    record more severe than every one its window let through passes even past the limit (so
    a model's failures still show once its retries have used the minute's lines): a window
    lets through at most a few more than ``burst``, one for each level it rises to.
    """

    def __init__(self, burst: int = 5, interval: float = 60.0, *, max_keys: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if burst < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be >= 1 and interval > 0")
        self.burst = burst
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self.dropped_total = 0
        self._windows: OrderedDict[tuple[str, int | str, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _JUDGED, False):
            return True
        setattr(record, _JUDGED, True)  # (a record dropped goes no further)
        template = str(record.msg)
        if template == "%s" and isinstance(record.args, tuple) and len(record.args) == 1:
            template = str(record.args[0])  # (written beforehand: the text is the message)
        first_line = template.split("\n", 1)[0][:_MAX_LINE]
        per = getattr(record, _PER, None)
        key: tuple[str, int | str, str] = (
            (record.name, record.levelno, first_line) if per is None
            else (record.name, str(per)[:_MAX_PER], first_line))
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval:
                dropped = window.dropped if window is not None else 0
                self._windows[key] = _Window(start=now, top=record.levelno, passed=1)
                self._windows.move_to_end(key)
                while len(self._windows) > self.max_keys:
                    self._windows.popitem(last=False)
                if dropped:
                    _append(record, f" [{dropped} more like this were not logged in the "
                                    f"previous {self.interval:g} s]")
                return True
            self._windows.move_to_end(key)
            if window.passed >= self.burst and record.levelno > window.top:
                window.top = record.levelno  # (milder lines used the limit: this one shows)
                return True
            if window.passed < self.burst:
                window.passed += 1
                window.top = max(window.top, record.levelno)
                if window.passed == self.burst:
                    _append(record, f" [repeated {self.burst} times; more like this are "
                                    f"not logged for up to {self.interval:g} s]")
                return True
            window.dropped += 1
            self.dropped_total += 1
            return False


def _append(record: logging.LogRecord, note: str) -> None:
    """Add ``note`` to the record's first line (a traceback, if any, stays below)."""
    message = record.getMessage()
    head, sep, rest = message.partition("\n")
    record.msg = head + note + sep + rest
    record.args = None


K = TypeVar("K", bound=Hashable)


class SaidOnce(Generic[K]):
    """What a long-lived object has warned of, so that each thing is said once, not again at
    every reload or registration that leaves it so: an ordered set of keys, bounded, the first
    said forgotten first (and said again should it come back). Safe from several threads."""

    def __init__(self) -> None:
        self._said: OrderedDict[K, None] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, keys: Iterable[K], most: int) -> list[K]:
        """Of ``keys``, those not said yet, now counted as said; at most ``most`` are kept."""
        with self._lock:
            fresh = [key for key in dict.fromkeys(keys) if key not in self._said]
            for key in fresh:
                self._said[key] = None
            while len(self._said) > most:
                self._said.popitem(last=False)
            return fresh

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._said))
