"""The ``Via`` header (RFC 9110, section 7.6.3) the gateway sends upstream, naming itself, so
that a service a model's ``base_url`` points back at can tell a request it sent itself
(:mod:`switchpoint.server.loops`).

A request the gateway forwards carries the entries of the ``Via`` it came with, then the
gateway's own (each intermediary appends its own), so that a loop through other services (a
model on service A pointing at service B, whose model points back at A) comes back to A
naming A. The received entries are bounded (:data:`MAX_ENTRIES`, :data:`MAX_CHARS`): a chain
longer than that is a loop or an abuse, and the service refuses it as it refuses a loop.

The HTTP shell passes the received entries in the call
(:attr:`~switchpoint.gateway.planning.ChatCall.via`); the engine makes its tries inside
:func:`forwarding` them, and the provider layer writes the header (:func:`received_via`,
:func:`forwarded_via`): the entries live in a context variable, as the transport runs in the
task that makes the try.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from switchpoint.errors import InvalidInputError

#: The most entries a received ``Via`` may list (the intermediaries a request passed).
MAX_ENTRIES = 16
#: The most characters a received ``Via``'s entries may hold, joined by ``", "``.
MAX_CHARS = 1024

# What no header value sent upstream may hold (httpx sends ASCII): each becomes "?".
_UNSENDABLE = {c: "?" for c in [*range(32), *range(127, 256)]}

_RECEIVED: ContextVar[tuple[str, ...]] = ContextVar("switchpoint_received_via", default=())


def via(name: str) -> str:
    """The ``Via`` header value of a request the gateway called ``name`` sends upstream:
    ``1.1 NAME``."""
    return f"1.1 {name}"


def via_entries(values: Sequence[str]) -> list[str]:
    """The entries the ``Via`` header values ``values`` list, in order, each stripped (``1.1
    a, 1.0 b`` lists ``1.1 a`` and ``1.0 b``; empty ones are left out)."""
    return [entry.strip() for value in values for entry in value.split(",") if entry.strip()]


def via_names(values: Sequence[str]) -> list[str]:
    """The names of the intermediaries the ``Via`` header values ``values`` list, in order
    (each entry's ``received-by``: ``1.1 a, 1.0 b`` lists ``a`` and ``b``)."""
    names = []
    for entry in via_entries(values):
        parts = entry.split()
        if len(parts) >= 2:
            names.append(parts[1])
    return names


def too_long(entries: Sequence[str]) -> str | None:
    """What is past the bound in the received ``Via`` ``entries`` (:data:`MAX_ENTRIES`,
    :data:`MAX_CHARS`), else None."""
    if len(entries) > MAX_ENTRIES:
        return f"lists {len(entries)} intermediaries (at most {MAX_ENTRIES})"
    chars = len(", ".join(entries))
    if chars > MAX_CHARS:
        return f"holds {chars} characters (at most {MAX_CHARS})"
    return None


def check_received(entries: Sequence[str]) -> None:
    """Refuse the received ``Via`` ``entries`` a call to the in-process door forwards when
    they are past the bound (:func:`too_long`): :class:`~switchpoint.errors.InvalidInputError`
    naming ``via``, before anything is planned or called (the HTTP door refused such a header
    as a loop already, a 508: :mod:`switchpoint.server.loops`)."""
    problem = too_long(entries)
    if problem is not None:
        raise InvalidInputError("via", f"{problem}: a chain that long is a loop or an abuse; "
                                       "forward a shorter Via")


@contextmanager
def forwarding(entries: Sequence[str]) -> Iterator[None]:
    """Have the upstream requests made inside the block (in this task) list ``entries``, the
    ``Via`` a forwarded request came with, before the gateway's own (:func:`forwarded_via`)."""
    token = _RECEIVED.set(tuple(entries))
    try:
        yield
    finally:
        _RECEIVED.reset(token)


def received_via() -> tuple[str, ...]:
    """The ``Via`` entries of the request the gateway forwards here (:func:`forwarding`; none
    when it forwards none: its upstream request names the gateway alone)."""
    return _RECEIVED.get()


def forwarded_via(received: Sequence[str], own: str | None) -> str:
    """The ``Via`` of an upstream request forwarding one that came with the entries
    ``received`` (:func:`received_via`; any character that cannot be sent, a ``?``), by the
    gateway that names itself ``own``: the received entries, then its own."""
    return ", ".join([*(entry.translate(_UNSENDABLE) for entry in received),
                      *([own] if own else [])])
