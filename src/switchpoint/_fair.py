"""The one rule by which a table the tenants share lets an entry go when it is full: the tenant
that holds the most gives up its oldest (among tenants holding as many, the one that came to
hold that many first), so a tenant adding entries in any number pushes out only its own once it
holds more than another; with a tenant alone, its oldest goes first.

:class:`Shares` counts what each tenant holds and says which tenant gives one up; a table that
orders its entries itself (a database, by when each was last used) asks it alone.
:class:`FairMap` holds the entries too (a key's value, and the tenant it is held for read from
the value), each tenant's oldest first, and says which goes: the session pins keep theirs in one
(``switchpoint.gateway.sessions``). :class:`FairShares` is a :class:`FairMap` of keys alone
(a key's value is its tenant): the table of decisions open to feedback lets its decisions go by
it (``switchpoint.gateway.open_decisions``), and the learning memory by such a map of its own
(``switchpoint.learning.memory``).

Each tenant's keys are kept in the order they were last put, in a deque: putting a key again
appends it again, and the earlier place it held (or the one a key let go of held) is left
behind, counted as stale for that key, and skipped when it comes first; a tenant's deque is
rebuilt without its stale places once they outnumber its keys. A key costs a dict entry and a
deque slot (some 60 bytes, under 130 with stale places at their most), where a dict entry and
an ordered dict's (some 145 bytes) were needed. It imports nothing of the package, so the core
and the gateway share it without depending on one another. No class here is thread-safe: its
owner guards it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, ItemsView, Iterator, Sequence
from typing import Generic, TypeVar

V = TypeVar("V")
_ABSENT = object()


class Shares:
    """How many entries each tenant holds, and which tenant gives one up first when there are
    too many (see the module)."""

    def __init__(self) -> None:
        # each tenant's count, and the tenants by how many they hold (each count's tenants in
        # the order they came to hold it), with the most held
        self._count: dict[str, int] = {}
        self._holding: dict[int, dict[str, None]] = {}
        self._most = 0
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def held(self, tenant: str) -> int:
        """How many entries ``tenant`` holds."""
        return self._count.get(tenant, 0)

    def add(self, tenant: str, count: int = 1) -> None:
        """``tenant`` holds ``count`` more entries (as if added one by one)."""
        before = self._count.get(tenant, 0)
        after = self._count[tenant] = before + count
        self._total += count
        holding = self._holding
        if before:
            at = holding[before]
            del at[tenant]
            if not at:
                del holding[before]
        if after:
            holding.setdefault(after, {})[tenant] = None
        if after > self._most:
            self._most = after

    def remove(self, tenant: str) -> None:
        """``tenant`` holds one entry less (it must hold one)."""
        before = self._count[tenant]
        after = before - 1
        if after:
            self._count[tenant] = after
        else:
            del self._count[tenant]
        self._total -= 1
        holding = self._holding
        at = holding[before]
        del at[tenant]
        if not at:
            del holding[before]
            if before == self._most:
                self._most = after  # (it held the most, alone: now one less, or none at all)
        if after:
            holding.setdefault(after, {})[tenant] = None

    def first(self) -> str:
        """The tenant that gives up an entry first (there must be one): the one holding the
        most, among those holding as many the one that came to hold that many first."""
        return next(iter(self._holding[self._most]))

    def take_one(self, tenant: str) -> str:
        """``tenant`` holds one more entry, then the tenant that gives one up first (see
        :meth:`first`) one less, as :meth:`add` then :meth:`remove` would leave them (there
        must be one held); returns the tenant that gave one up. Where that is ``tenant``
        itself (it held the most), the counts are as they were and it comes last among the
        tenants holding as many."""
        count = self._count
        holding = self._holding
        most = self._most
        bucket = holding[most]
        before = count.get(tenant, 0)
        if before == most:
            if len(bucket) > 1:
                del bucket[tenant]
                bucket[tenant] = None
            return tenant
        gives = next(iter(bucket))  # (not ``tenant``, which holds fewer)
        after = count[tenant] = before + 1
        if before:
            was = holding[before]
            del was[tenant]
            if not was:
                del holding[before]
        at = holding.get(after)
        if at is None:
            holding[after] = {tenant: None}
        else:
            at[tenant] = None
        del bucket[gives]
        if not bucket:
            del holding[most]
            self._most = most - 1  # (``tenant`` holds fewer than ``most`` still)
        less = most - 1
        if less:
            count[gives] = less
            at = holding.get(less)
            if at is None:
                holding[less] = {gives: None}
            else:
                at[gives] = None
        else:
            del count[gives]
        return gives


class FairMap(Generic[V]):
    """A map of keys to values, each held for the tenant ``tenant_of(value)`` names (the value
    itself, when no ``tenant_of`` is given), each tenant's keys in the order they were last
    put, and the entry that goes when there are too many: the oldest of the tenant
    :class:`Shares` says gives one up. :attr:`held` is the map itself, to read (not to
    change)."""

    def __init__(self, tenant_of: Callable[[V], str] | None = None) -> None:
        self.held: dict[str, V] = {}
        self._tenant_of = tenant_of
        # each tenant's keys, oldest first, with the stale places left behind, and how many
        # stale places each key has in it (always before its live one, if it has one)
        self._order: dict[str, deque[str]] = {}
        self._stale: dict[str, dict[str, int]] = {}
        self._shares = Shares()
        self._count = self._shares._count  # (read here, each tenant's held, kept by Shares)

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, key: object) -> bool:
        return key in self.held

    def __iter__(self) -> Iterator[str]:
        return iter(self.held)

    def items(self) -> ItemsView[str, V]:
        return self.held.items()

    def get(self, key: str) -> V | None:
        return self.held.get(key)

    def put(self, key: str, value: V) -> None:
        """Hold ``value`` at ``key``, as its tenant's newest (again, if it was held: as another
        tenant's, it is that one's no more)."""
        tenant_of = self._tenant_of
        tenant: str = value if tenant_of is None else tenant_of(value)  # type: ignore[assignment]
        old = self.held.get(key, _ABSENT)
        self.held[key] = value
        if old is _ABSENT:
            self._shares.add(tenant)
        else:
            was: str = old if tenant_of is None else tenant_of(old)  # type: ignore[assignment,arg-type]
            if was != tenant:
                self._left(was, key)
                self._shares.add(tenant)
            else:
                stale = self._stale[tenant]
                stale[key] = stale.get(key, 0) + 1
        order = self._order.get(tenant)
        if order is None:
            self._order[tenant] = deque((key,))
            self._stale[tenant] = {}
            return
        order.append(key)
        if len(order) > 2 * self._count[tenant] + 32:
            self._compact(tenant)

    def put_within(self, key: str, value: V, limit: int) -> Sequence[str]:
        """:meth:`put`, then :meth:`pop` while more than ``limit`` (at least 1) are held; the
        keys that went, in the order they went.

        The same, faster, where a new key takes a full map past ``limit``: its tenant holds
        one more and the tenant that gives one up one less in one step
        (:meth:`Shares.take_one`), and that tenant's oldest goes; where that is the new key's
        tenant (it holds the most: a tenant alone, the one adding the most, or one of those
        holding as many), the counts are untouched."""
        held = self.held
        if len(held) == limit and key not in held:
            tenant_of = self._tenant_of
            tenant: str = value if tenant_of is None else tenant_of(value)  # type: ignore[assignment]
            count = self._count.get(tenant)
            shares = self._shares
            held[key] = value
            if count == shares._most:  # (as Shares.take_one would leave it, without the call)
                bucket = shares._holding[count]
                if len(bucket) > 1:
                    del bucket[tenant]
                    bucket[tenant] = None
                order = self._order[tenant]
                order.append(key)
                gone = self._oldest(tenant, order)[0]
                if len(order) > 2 * count + 32:
                    self._compact(tenant)
                return (gone,)
            gives = shares.take_one(tenant)  # (another tenant, holding the most)
            orders = self._order
            gone = self._oldest(gives, orders[gives])[0]
            if gives not in self._count:
                del orders[gives], self._stale[gives]
            mine = orders.get(tenant)
            if mine is None:
                orders[tenant] = deque((key,))
                self._stale[tenant] = {}
            else:
                mine.append(key)
                if len(mine) > 2 * self._count[tenant] + 32:
                    self._compact(tenant)
            return (gone,)
        self.put(key, value)
        if len(held) <= limit:
            return ()
        return [self.pop()[0] for _ in range(len(held) - limit)]

    def discard(self, key: str) -> None:
        """Let go of ``key`` (nothing, when it is not held)."""
        old = self.held.pop(key, _ABSENT)
        if old is not _ABSENT:
            tenant_of = self._tenant_of
            self._left(old if tenant_of is None else tenant_of(old), key)  # type: ignore[arg-type]

    def pop(self) -> tuple[str, V]:
        """Let go of the entry that goes first (see the class), and return it."""
        tenant = self._shares.first()
        key, value = self._oldest(tenant, self._order[tenant])
        self._shares.remove(tenant)
        if tenant not in self._count:
            del self._order[tenant], self._stale[tenant]
        return key, value

    def _oldest(self, tenant: str, order: deque[str]) -> tuple[str, V]:
        """Take ``tenant``'s oldest key out of its ``order`` and the map (its count is the
        caller's to change)."""
        stale = self._stale[tenant]
        while True:
            key = order.popleft()
            places = stale.get(key)
            if not places:
                return key, self.held.pop(key)
            if places == 1:
                del stale[key]
            else:
                stale[key] = places - 1

    def _left(self, tenant: str, key: str) -> None:
        """``key`` is ``tenant``'s no more: its place in the tenant's order is stale."""
        self._shares.remove(tenant)
        held = self._count.get(tenant)
        if held is None:
            del self._order[tenant], self._stale[tenant]
            return
        stale = self._stale[tenant]
        stale[key] = stale.get(key, 0) + 1
        if len(self._order[tenant]) > 2 * held + 32:
            self._compact(tenant)

    def _compact(self, tenant: str) -> None:
        """Rebuild ``tenant``'s order without its stale places."""
        stale = self._stale[tenant]
        kept: deque[str] = deque()
        for key in self._order[tenant]:
            places = stale.get(key)
            if places:
                stale[key] = places - 1
            else:
                kept.append(key)
        self._order[tenant] = kept
        self._stale[tenant] = {}


class FairShares:
    """Which keys are held by which tenant, each tenant's oldest first, and the key that goes
    when there are too many: the oldest of the tenant :class:`Shares` says gives one up (a
    :class:`FairMap` whose values are the keys' tenants)."""

    def __init__(self) -> None:
        self._map: FairMap[str] = FairMap()

    def __len__(self) -> int:
        return len(self._map.held)

    def __contains__(self, key: object) -> bool:
        return key in self._map.held

    def track(self, key: str, tenant: str) -> None:
        """Count ``key`` as ``tenant``'s newest (again, if it was held: as another tenant's,
        it is that one's no more)."""
        self._map.put(key, tenant)

    def track_within(self, key: str, tenant: str, limit: int) -> Sequence[str]:
        """:meth:`track`, then :meth:`pop` while more than ``limit`` (at least 1) are held;
        the keys that went, in the order they went (:meth:`FairMap.put_within`: faster, where a
        new key takes a full table past ``limit``)."""
        return self._map.put_within(key, tenant, limit)

    def discard(self, key: str) -> None:
        """Stop counting ``key`` (nothing, when it is not held)."""
        self._map.discard(key)

    def pop(self) -> str:
        """Let go of the key that goes first (see the class), and return it."""
        return self._map.pop()[0]
