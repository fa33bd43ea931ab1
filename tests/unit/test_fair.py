"""The fair-share rule's tables against a plain reference over random operation sequences: the
same entry goes, in the same order, whatever was put, put again, moved or let go before."""

from __future__ import annotations

import random
from dataclasses import dataclass
from operator import attrgetter

import pytest

from switchpoint._fair import FairMap, FairShares, Shares


class ReferenceShares:
    """The rule as written: the tenant holding the most gives one up, among those holding as
    many the one that came to hold that many first (a counter stamps each change)."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.since: dict[str, int] = {}
        self.clock = 0

    def add(self, tenant: str, count: int = 1) -> None:
        self.count[tenant] = self.count.get(tenant, 0) + count
        self.clock += 1
        self.since[tenant] = self.clock

    def remove(self, tenant: str) -> None:
        self.count[tenant] -= 1
        self.clock += 1
        self.since[tenant] = self.clock
        if not self.count[tenant]:
            del self.count[tenant], self.since[tenant]

    def first(self) -> str:
        most = max(self.count.values())
        return min((t for t, n in self.count.items() if n == most), key=self.since.__getitem__)


class ReferenceMap:
    """Every key with its tenant in one list, oldest put first; the one that goes is the
    first of the tenant :class:`ReferenceShares` names."""

    def __init__(self) -> None:
        self.order: list[tuple[str, str]] = []
        self.shares = ReferenceShares()

    def put(self, key: str, tenant: str) -> None:
        held = next((t for k, t in self.order if k == key), None)
        if held is not None:
            self.order.remove((key, held))
            if held != tenant:
                self.shares.remove(held)
                self.shares.add(tenant)
        else:
            self.shares.add(tenant)
        self.order.append((key, tenant))

    def discard(self, key: str) -> None:
        held = next((t for k, t in self.order if k == key), None)
        if held is not None:
            self.order.remove((key, held))
            self.shares.remove(held)

    def pop(self) -> str:
        tenant = self.shares.first()
        key = next(k for k, t in self.order if t == tenant)
        self.discard(key)
        return key


@dataclass(frozen=True)
class Held:
    tenant: str


@pytest.mark.parametrize(("seed", "puts"), [(0, 0.6), (1, 0.6), (2, 0.9), (3, 0.9)])
def test_fair_tables_let_go_of_what_the_reference_does(seed: int, puts: float) -> None:
    # (mostly puts: keys put again and again, their tenants' orders rebuilt without the
    # places they left behind)
    rng = random.Random(seed)
    tenants = [f"t{i}" for i in range(rng.choice((1, 3, 6)))]
    keys = [f"k{i}" for i in range(rng.choice((8, 40, 150)))]
    values = {t: Held(t) for t in tenants}  # (one object put again and again, as a caller may)
    reference, shares, fair = ReferenceMap(), FairShares(), FairMap(attrgetter("tenant"))

    def fair_value(key: str, tenant: str) -> Held:
        value = fair.get(key)
        assert value is not None and value.tenant == tenant
        return value

    for _ in range(3_000):
        roll = rng.random()
        if roll < puts:
            key, tenant = rng.choice(keys), rng.choice(tenants)
            reference.put(key, tenant)
            shares.track(key, tenant)
            fair.put(key, values[tenant] if rng.random() < 0.5 else Held(tenant))
        elif roll < puts + (1 - puts) / 2:
            key = rng.choice(keys)
            reference.discard(key)
            shares.discard(key)
            fair.discard(key)
        elif reference.order:
            tenant = reference.shares.first()
            gone = reference.pop()
            assert shares.pop() == gone
            held = fair_value(gone, tenant)
            assert fair.pop() == (gone, held)
        assert len(shares) == len(fair) == len(reference.order)
        assert dict(fair.items()).keys() == {k for k, _ in reference.order}
        assert {k: v.tenant for k, v in fair.items()} == dict(reference.order)
    while reference.order:  # (what is left goes in the reference's order too)
        gone = reference.pop()
        assert shares.pop() == gone == fair.pop()[0]


def test_shares_name_the_tenant_the_reference_does() -> None:
    rng = random.Random(7)
    shares, reference = Shares(), ReferenceShares()
    for _ in range(3_000):
        tenant = f"t{rng.randrange(5)}"
        roll = rng.random()
        if roll < 0.3 and reference.count:  # (one more for it, one less for the first)
            reference.add(tenant)
            gives = reference.first()
            reference.remove(gives)
            assert shares.take_one(tenant) == gives
        elif roll < 0.6 or not reference.count.get(tenant):
            count = rng.choice((1, 1, 1, 3))
            shares.add(tenant, count)
            reference.add(tenant, count)
        else:
            shares.remove(tenant)
            reference.remove(tenant)
        assert len(shares) == sum(reference.count.values())
        assert shares.held(tenant) == reference.count.get(tenant, 0)
        if reference.count:
            assert shares.first() == reference.first()


@pytest.mark.parametrize(("seed", "tenants", "even"),
                         [(0, 1, True), (1, 2, False), (2, 5, False), (3, 4, True), (4, 8, True)])
def test_a_bounded_fair_map_keeps_what_the_reference_does(
        seed: int, tenants: int, even: bool) -> None:
    # (a full map: a new key of a tenant holding the most takes its oldest's place)
    rng = random.Random(seed)
    limit = rng.choice((5, 30))
    weights = [1 if even else 2**i for i in range(tenants)]  # (or one tenant adding the most)
    reference, fair, shares = ReferenceMap(), FairMap(attrgetter("tenant")), FairShares()
    for _ in range(3_000):
        key = f"k{rng.randrange(3 * limit)}"
        if rng.random() < 0.9:
            tenant = f"t{rng.choices(range(tenants), weights)[0]}"
            reference.put(key, tenant)
            went = [reference.pop() for _ in range(len(reference.order) - limit)]
            assert list(fair.put_within(key, Held(tenant), limit)) == went
            assert list(shares.track_within(key, tenant, limit)) == went
        else:
            reference.discard(key)
            fair.discard(key)
            shares.discard(key)
        assert {k: v.tenant for k, v in fair.items()} == dict(reference.order)
        # (a tenant that holds none keeps no order of its keys)
        assert fair._order.keys() == {t for _, t in reference.order}
    while reference.order:
        assert fair.pop()[0] == reference.pop()
