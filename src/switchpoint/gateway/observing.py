"""What a gateway tells its observer, and the rule that an observer's failure is not the
gateway's.

An :class:`Observer` is the caller's code (the server's Prometheus metrics are one): a callback
that raises is logged, as a few lines a minute for each callback (the rule of
:class:`~switchpoint._log_limit.RateLimitFilter`), and the gateway goes on as if it had returned:
the request it told of is logged, charged and answered, the decision routed, where the error
would otherwise end that call after its upstream had answered (and been paid), the answer lost
and nothing logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from switchpoint._log_limit import RateLimitFilter, repeats_per
from switchpoint.decision import RoutingDecision
from switchpoint.store.logs import RequestRecord

log = logging.getLogger("switchpoint.gateway")

# The one message of every such line (the log's limit counts its repeats by it, per callback).
MESSAGE = "the gateway's observer raised %s in %s; the gateway went on without it"


@runtime_checkable
class Observer(Protocol):
    """Told what the gateway did (the server's Prometheus metrics are one). Its methods run
    on the gateway's event loop, so each must return quickly and must not call the gateway's
    synchronous methods (that raises :class:`~switchpoint.errors.ReentrantCallError`). One
    that raises is logged and changes nothing the gateway does."""

    def on_request(self, record: RequestRecord) -> None:
        """A chat request's log record, as it is written: every request the log keeps
        (answered, failed, or refused by a budget or a rate limit)."""

    def on_decision(self, decision: RoutingDecision) -> None:
        """A prompt was routed (by :meth:`Gateway.route` or for a chat request)."""

    def on_store_error(self) -> None:
        """A decision or a request could not be written to the log (it stands; the log
        says so)."""


class Told:
    """Tells ``observer`` (None: nobody) what happened, each callback's error logged and kept
    from the gateway's work."""

    def __init__(self, observer: Observer | None, repeats: RateLimitFilter | None = None
                 ) -> None:
        self.observer = observer
        self.repeats = RateLimitFilter() if repeats is None else repeats

    def request(self, record: RequestRecord) -> None:
        if self.observer is not None:
            self._call("on_request", lambda o: o.on_request(record))

    def decision(self, decision: RoutingDecision) -> None:
        if self.observer is not None:
            self._call("on_decision", lambda o: o.on_decision(decision))

    def store_error(self) -> None:
        if self.observer is not None:
            self._call("on_store_error", lambda o: o.on_store_error())

    def _call(self, name: str, callback: Callable[[Observer], object]) -> None:
        assert self.observer is not None
        try:
            callback(self.observer)
        except Exception as exc:  # (KeyboardInterrupt, SystemExit: not the observer's alone)
            fn, lno, func, _ = log.findCaller()
            record = log.makeRecord(log.name, logging.ERROR, fn, lno, MESSAGE,
                                    (type(exc).__name__, name),
                                    (type(exc), exc, exc.__traceback__), func,
                                    repeats_per(name))
            if self.repeats.filter(record):
                log.handle(record)
