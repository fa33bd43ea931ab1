"""Whether a try's request has left the gateway, and what its stream was seen to generate
before any content: told by the transport, read by failover.

A provider can bill only a request it received. Failover watches each try
(:func:`watching_send`); the transport says when it starts on a request (:func:`note_connecting`:
waiting for a pooled connection, connecting) and when it hands the request's bytes to the
connection (:func:`note_sent`). A try that ends (its caller leaves, the request's deadline runs
out) while it is still connecting sent nothing a provider could bill. An adapter whose
transport says nothing is taken as having sent its request. A stream tells the watch what it
tallies before its first content (:func:`note_stream`): a try cut off then (its caller leaves,
the deadline runs out, the service stops) is charged from what came, as one that broke is.

The watch lives in a context variable: the transport runs in the task that makes the try.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchpoint.gateway.providers._http import BeforeContent


class SendWatch:
    """One try's send state: ``sent`` is None while no transport said anything (taken as sent),
    False while the transport connects (or waits for a connection), True once the request's
    bytes were handed to the connection; ``stream``, what the try's stream was seen to
    generate before its first content (None: no stream began)."""

    __slots__ = ("sent", "stream")

    def __init__(self) -> None:
        self.sent: bool | None = None
        self.stream: BeforeContent | None = None

    @property
    def maybe_sent(self) -> bool:
        """Whether the upstream may have the request (False only while still connecting)."""
        return self.sent is not False


_WATCH: ContextVar[SendWatch | None] = ContextVar("switchpoint_send_watch", default=None)


@contextmanager
def watching_send() -> Iterator[SendWatch]:
    """Watch the try made inside the block (in this task)."""
    watch = SendWatch()
    token = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(token)


def note_connecting() -> None:
    """The transport starts on a request: nothing is sent yet (unless an earlier request of
    the same try was)."""
    watch = _WATCH.get()
    if watch is not None and watch.sent is None:
        watch.sent = False


def note_sent() -> None:
    """The transport hands the request's bytes to the connection: the upstream may have it."""
    watch = _WATCH.get()
    if watch is not None:
        watch.sent = True


def note_unsent() -> None:
    """The request's bytes did not reach the upstream after all (it had closed the pooled
    connection they went to): the transport connects again to send them."""
    watch = _WATCH.get()
    if watch is not None:
        watch.sent = False


def note_stream(seen: BeforeContent) -> None:
    """The try's stream begins: ``seen`` tallies what it generates before its first content
    (a later stream of the same try, sent again, replaces it)."""
    watch = _WATCH.get()
    if watch is not None:
        watch.stream = seen
