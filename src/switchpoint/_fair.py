"""The one rule by which a table the tenants share lets an entry go when it is full: the tenant
that holds the most gives up its oldest (among tenants holding as many, the one that came to
hold that many first), so a tenant adding entries in any number pushes out only its own once it
holds more than another; with a tenant alone, its oldest goes first.

:class:`Shares` counts what each tenant holds and says which tenant gives one up; a table that
orders its entries itself (a database, by when each was last used) asks it alone.
:class:`FairShares` keeps the keys too, each tenant's oldest first, and says which key goes.
The learning memory and the table of decisions open to feedback let their decisions go by it
(``switchpoint.learning.memory``, ``switchpoint.gateway.learning``), and the session pins theirs
(``switchpoint.gateway.sessions``). It imports nothing of the package, so the core and the
gateway share it without depending on one another. Neither class is thread-safe: its owner
guards it."""

from __future__ import annotations

from collections import OrderedDict


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
        self._count[tenant] = before + count
        self._total += count
        self._moved(tenant, before, before + count)

    def remove(self, tenant: str) -> None:
        """``tenant`` holds one entry less (it must hold one)."""
        before = self._count[tenant]
        if before == 1:
            del self._count[tenant]
        else:
            self._count[tenant] = before - 1
        self._total -= 1
        self._moved(tenant, before, before - 1)

    def first(self) -> str:
        """The tenant that gives up an entry first (there must be one): the one holding the
        most, among those holding as many the one that came to hold that many first."""
        return next(iter(self._holding[self._most]))

    def _moved(self, tenant: str, before: int, after: int) -> None:
        """``tenant`` now holds ``after`` entries, where it held ``before`` (more, or one
        less)."""
        if before:
            holding = self._holding[before]
            del holding[tenant]
            if not holding:
                del self._holding[before]
        if after:
            others = self._holding.get(after)
            if others is None:
                self._holding[after] = {tenant: None}
            else:
                others[tenant] = None
        if after > self._most:
            self._most = after
        elif before == self._most and before not in self._holding:
            self._most = after  # (it held the most, alone: now one less, or none at all)


class FairShares:
    """Which keys are held by which tenant, each tenant's oldest first, and the key that goes
    when there are too many: the oldest of the tenant :class:`Shares` says gives one up."""

    def __init__(self) -> None:
        self._tenant_of: dict[str, str] = {}
        self._of_tenant: dict[str, OrderedDict[str, None]] = {}
        self._shares = Shares()

    def __len__(self) -> int:
        return len(self._tenant_of)

    def __contains__(self, key: object) -> bool:
        return key in self._tenant_of

    def track(self, key: str, tenant: str) -> None:
        """Count ``key`` as ``tenant``'s newest (again, if it was held: as another tenant's,
        it is that one's no more)."""
        held_by = self._tenant_of.get(key)
        if held_by is not None and held_by != tenant:
            self.discard(key)
            held_by = None
        ids = self._of_tenant.get(tenant)
        if ids is None:
            ids = self._of_tenant[tenant] = OrderedDict()
        elif held_by is not None:
            ids.move_to_end(key)
            return
        ids[key] = None
        self._tenant_of[key] = tenant
        self._shares.add(tenant)

    def discard(self, key: str) -> None:
        """Stop counting ``key`` (nothing, when it is not held)."""
        tenant = self._tenant_of.pop(key, None)
        if tenant is None:
            return
        ids = self._of_tenant[tenant]
        del ids[key]
        self._shares.remove(tenant)
        if not ids:
            del self._of_tenant[tenant]

    def pop(self) -> str:
        """Let go of the key that goes first (see the class), and return it."""
        key = next(iter(self._of_tenant[self._shares.first()]))
        self.discard(key)
        return key
