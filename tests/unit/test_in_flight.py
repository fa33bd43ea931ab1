"""Each tenant's share of model calls in flight: counted by owner, refused past the share
holding nothing, each place given back once."""

from __future__ import annotations

import pytest

from switchpoint.errors import TooManyInFlightError
from switchpoint.gateway.in_flight import InFlight, owner_of, share_of


def test_the_share_is_the_setting_else_a_quarter_of_the_upstream_connections() -> None:
    assert share_of(None, 256) == (64, 192)
    assert share_of(None, 3) == (1, 2)  # at least one call
    assert share_of(5, 256) == (5, None)


def test_a_call_counts_against_its_tenant_else_its_key_else_no_one() -> None:
    assert owner_of("acme", "k1") == owner_of("acme", "k2") == "tenant 'acme'"
    assert owner_of(None, "k1") == "key k1 (of no tenant)"
    assert owner_of(None, None) is None


def test_past_its_share_a_tenant_is_refused_and_another_is_not() -> None:
    calls = InFlight()
    held = [calls.take("tenant 'a'", 2) for _ in range(2)]
    assert all(slot is not None for slot in held)
    with pytest.raises(TooManyInFlightError) as info:
        calls.take("tenant 'a'", 2)
    error = info.value
    assert (error.status, error.code, error.retry_after) == (429, "too_many_in_flight", 1.0)
    assert "tenant 'a' has 2 model calls in flight" in error.message
    assert "raise gateway.max_in_flight_per_tenant" in error.message
    assert calls.held("tenant 'a'") == 2  # the refusal held nothing
    other = calls.take("tenant 'b'", 2)
    assert other is not None and calls.held("tenant 'b'") == 1
    assert calls.take(None, 0) is None  # counted against no one, never refused


def test_a_place_is_given_back_once() -> None:
    calls = InFlight()
    slot = calls.take("tenant 'a'", 1)
    assert slot is not None
    slot.release()
    slot.release()  # (again: nothing)
    assert calls.held("tenant 'a'") == 0
    again = calls.take("tenant 'a'", 1)
    assert again is not None and calls.held("tenant 'a'") == 1


def test_unset_the_share_is_soft_while_a_share_stays_free_for_the_others() -> None:
    share, room = share_of(None, 8)
    assert (share, room) == (2, 6)
    assert share_of(3, 8) == (3, None)  # a share set is a hard cap
    calls = InFlight()
    alone = [calls.take("tenant 'a'", share, room) for _ in range(6)]  # past its share
    assert all(slot is not None for slot in alone) and calls.held("tenant 'a'") == 6
    with pytest.raises(TooManyInFlightError, match="passed only while a quarter stays free"):
        calls.take("tenant 'a'", share, room)  # the last quarter is the others'
    others = [calls.take("tenant 'b'", share, room) for _ in range(2)]
    assert all(slot is not None for slot in others)
    with pytest.raises(TooManyInFlightError):
        calls.take("tenant 'b'", share, room)  # past its own share with no room left
    assert calls.held("tenant 'b'") == 2
    for slot in alone[:3]:
        assert slot is not None
        slot.release()
    assert calls.take("tenant 'b'", share, room) is not None  # room again
