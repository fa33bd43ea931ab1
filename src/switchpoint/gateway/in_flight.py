"""The model calls each tenant has in flight, and its share of them: one tenant's slow calls
cannot take every connection to an upstream from the others.

A chat request (and each answer of a comparison) is in flight from the moment it is planned
until its answer is returned, its stream ends (read to its end, closed by its caller, or cut by
its deadline) or its call fails. It counts against its caller's tenant, all the tenant's keys
together (so a tenant given more keys holds no more), or its key when the key has no tenant; a
call with neither (client keys off, an in-process call given no key or tenant) counts against
no one.

A tenant's share is ``gateway.max_in_flight_per_tenant`` when it is set: a hard cap. Unset,
it is a quarter of ``gateway.max_upstream_connections`` (at least 1), and soft: a tenant past
it may still go on while the calls in flight all told leave a share of the connections free
for the others (so a deployment of one tenant may use three quarters of them). A call past
the cap is refused at once, before anything is routed, held, charged, pinned or logged: a
:class:`~switchpoint.errors.TooManyInFlightError` (429 ``too_many_in_flight``,
``Retry-After: 1``) naming the share and how to raise it. The other tenants' calls go on.
"""

from __future__ import annotations

import threading

from switchpoint.errors import TooManyInFlightError

#: The setting of a tenant's share.
SETTING = "gateway.max_in_flight_per_tenant"
#: By default, a tenant's share is this fraction of gateway.max_upstream_connections.
SHARE_DIVISOR = 4
# (A call ends within gateway.max_total_s; one of the tenant's may end any moment.)
RETRY_AFTER_S = 1.0


def share_of(explicit: int | None, upstream_connections: int) -> tuple[int, int | None]:
    """A tenant's share and the room past it: ``explicit`` (``gateway.max_in_flight_per_tenant``)
    when set, with no room past it; else a quarter of ``upstream_connections``
    (``gateway.max_upstream_connections``), at least 1, past which a tenant may go on while
    the calls in flight all told stay within ``upstream_connections`` less a share."""
    if explicit is not None:
        return explicit, None
    share = max(1, upstream_connections // SHARE_DIVISOR)
    return share, max(share, upstream_connections - share)


def owner_of(tenant: str | None, key_id: str | None) -> str | None:
    """Whom a call counts against: its tenant, else its key, else no one (None)."""
    if tenant is not None:
        return f"tenant {tenant!r}"
    if key_id is not None:
        return f"key {key_id} (of no tenant)"
    return None


class Slot:
    """One call's place in its owner's share, given back once (:meth:`release`; again does
    nothing)."""

    __slots__ = ("_calls", "owner")

    def __init__(self, calls: InFlight, owner: str) -> None:
        self._calls: InFlight | None = calls
        self.owner = owner

    def release(self) -> None:
        calls, self._calls = self._calls, None
        if calls is not None:
            calls.give_back(self.owner)


class InFlight:
    """The calls in flight by owner (only owners with some: bounded by the calls)."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._total = 0  # (the calls in flight counted against someone)
        # (the synchronous methods' loop and the caller's own may plan at the same time)
        self._lock = threading.Lock()

    def held(self, owner: str) -> int:
        """How many calls ``owner`` has in flight."""
        with self._lock:
            return self._held.get(owner, 0)

    def take(self, owner: str | None, share: int, room: int | None = None) -> Slot | None:
        """A place for one more call of ``owner`` (None for a call that counts against no
        one); raises :class:`TooManyInFlightError` when ``owner`` already has ``share`` in
        flight and (``room`` given) the calls in flight all told have reached ``room``,
        holding nothing then."""
        if owner is None:
            return None
        with self._lock:
            held = self._held.get(owner, 0)
            if held >= share and (room is None or self._total >= room):
                raise TooManyInFlightError(
                    f"{owner} has {held} model calls in flight, its share "
                    f"({SETTING}: {share}"
                    + ("" if room is None else "; unset: a quarter of "
                       "gateway.max_upstream_connections, passed only while a quarter stays "
                       "free for the others")
                    + "), so that no tenant holds every connection to an upstream: retry "
                    "once one of them ends (Retry-After), "
                    f"send fewer at once, or raise {SETTING} in the config",
                    retry_after=RETRY_AFTER_S)
            self._held[owner] = held + 1
            self._total += 1
        return Slot(self, owner)

    def give_back(self, owner: str) -> None:
        with self._lock:
            left = self._held.get(owner, 0) - 1
            self._total -= 1
            if left > 0:
                self._held[owner] = left
            else:
                self._held.pop(owner, None)
