"""The model calls each tenant has in flight, and its share of them: one tenant's slow calls
cannot take every connection to an upstream from the others.

A chat request (and each answer of a comparison) is in flight from the moment it is planned
until its answer is returned, its stream ends (read to its end, closed by its caller, or cut by
its deadline) or its call fails. It counts against its caller's tenant, all the tenant's keys
together (so a tenant given more keys holds no more), or its key when the key has no tenant; a
call with neither (client keys off, an in-process call given no key or tenant) counts against
no one.

A tenant's share (:func:`share_of`, the one place it is decided) is its own
``tenants.<name>.max_in_flight`` when the config gives it one: a hard cap, in place of the
gateway-wide share for that tenant alone. Else it is ``gateway.max_in_flight_per_tenant``
when that is set: a hard cap too. Unset, it is a quarter of
``gateway.max_upstream_connections`` (at least 1), and soft: a tenant past it may still go on
while the calls in flight all told leave a share of the connections free for the others (so a
deployment of one tenant may use three quarters of them). A key of no tenant has the
gateway-wide share. The share is read from the live config as each call is planned, so a
reload changes it for the next call (the calls already in flight go on). A call past the cap
is refused at once, before anything is routed, held, charged or pinned: a
:class:`~switchpoint.errors.TooManyInFlightError` (429 ``too_many_in_flight``,
``Retry-After: 1``) naming the share, the setting it comes from and how to raise it, logged
as the governance's refusals are (status ``refused``, by the gateway). The other tenants'
calls go on.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from switchpoint._messages import json_quoted, plural
from switchpoint.errors import TooManyInFlightError

if TYPE_CHECKING:
    from switchpoint.config import Settings

#: The setting of every tenant's share, unless a tenant has its own.
SETTING = "gateway.max_in_flight_per_tenant"
#: By default, a tenant's share is this fraction of gateway.max_upstream_connections.
SHARE_DIVISOR = 4
# (A call ends within gateway.max_total_s; one of the tenant's may end any moment.)
RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class Share:
    """The model calls one owner may have in flight: ``calls``, past which it may go on only
    while the calls in flight all told are fewer than ``room`` (None: a hard cap, never
    passed); ``setting`` is the config key it comes from, ``own`` the tenant's own key when
    the tenant is one of the config's (None for a key of no tenant: it can have none)."""

    calls: int
    room: int | None = None
    setting: str = SETTING
    own: str | None = None

    def how_to_raise(self) -> str:
        """What to change in the config for more."""
        if self.own is None or self.own == self.setting:
            return f"raise {self.setting} in the config"
        return f"raise {self.setting}, or give the tenant its own, {self.own}, in the config"


def share_of(settings: Settings, tenant: str | None, upstream_connections: int) -> Share:
    """``tenant``'s share of the calls in flight under ``settings`` (``tenant`` None: a key
    of no tenant's, or a call's that counts against no one): its own
    ``tenants.<name>.max_in_flight`` when set, a hard cap; else
    ``gateway.max_in_flight_per_tenant`` when set, a hard cap; else a quarter of
    ``upstream_connections`` (``gateway.max_upstream_connections``), at least 1, past which
    it may go on while the calls in flight all told stay within ``upstream_connections``
    less a share."""
    mine = settings.tenants.get(tenant) if tenant is not None else None
    own = None
    if mine is not None:  # (a config's tenant: its name is a checked one, check_tenant's)
        own = f"tenants.{tenant}.max_in_flight"
        if mine.max_in_flight is not None:
            return Share(mine.max_in_flight, None, own, own)
    explicit = settings.gateway.max_in_flight_per_tenant
    if explicit is not None:
        return Share(explicit, None, SETTING, own)
    share = max(1, upstream_connections // SHARE_DIVISOR)
    return Share(share, max(share, upstream_connections - share), SETTING, own)


def owner_of(tenant: str | None, key_id: str | None) -> str | None:
    """Whom a call counts against: its tenant, else its key, else no one (None)."""
    if tenant is not None:
        return f"tenant {json_quoted(tenant)}"
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

    def take(self, owner: str | None, share: Share) -> Slot | None:
        """A place for one more call of ``owner`` (None for a call that counts against no
        one); raises :class:`TooManyInFlightError` when ``owner`` already has ``share.calls``
        in flight and (a soft share) the calls in flight all told have reached its room,
        holding nothing then."""
        if owner is None:
            return None
        with self._lock:
            held = self._held.get(owner, 0)
            if held >= share.calls and (share.room is None or self._total >= share.room):
                raise TooManyInFlightError(
                    f"{owner} has {plural(held, 'model call')} in flight, its share "
                    f"({share.setting}: {share.calls}"
                    + ("" if share.room is None else "; unset: a quarter of "
                       "gateway.max_upstream_connections, passed only while a quarter stays "
                       "free for the others")
                    + "), so that no tenant holds every connection to an upstream: retry "
                    "once one of them ends (Retry-After), "
                    f"send fewer at once, or {share.how_to_raise()}",
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
