"""Each tenant's share of model calls in flight: decided in one place (the tenant's own, else
the gateway's, else a soft quarter of the upstream connections), counted by owner, refused
past the share holding nothing, each place given back once."""

from __future__ import annotations

import pytest

from switchpoint.config import Settings
from switchpoint.errors import TooManyInFlightError
from switchpoint.gateway.in_flight import InFlight, Share, owner_of, share_of

GATEWAY = "gateway.max_in_flight_per_tenant"
OWN = "tenants.acme.max_in_flight"


def settings(gateway: int | None = None, **tenants: dict[str, int]) -> Settings:
    return Settings(gateway={"max_in_flight_per_tenant": gateway}, tenants=tenants)


def test_the_share_is_the_setting_else_a_quarter_of_the_upstream_connections() -> None:
    assert share_of(settings(), None, 256) == Share(64, 192, GATEWAY)
    assert share_of(settings(), None, 3) == Share(1, 2, GATEWAY)  # at least one call
    assert share_of(settings(5), None, 256) == Share(5, None, GATEWAY)


def test_a_tenant_s_own_share_is_a_hard_cap_in_place_of_the_gateway_s() -> None:
    own = {"acme": {"max_in_flight": 1}, "beta": {}}
    for gateway, upstream in ((None, 256), (5, 256), (None, 2), (1, 1)):
        assert share_of(settings(gateway, **own), "acme", upstream) == Share(1, None, OWN, OWN)
    # Larger than the gateway's share, or than the upstream's connections: still its own.
    assert share_of(settings(5, acme={"max_in_flight": 500}), "acme", 256) == Share(
        500, None, OWN, OWN)
    # Another tenant keeps the gateway's share (told it may have its own), and so does a
    # key of no tenant, or a tenant the config does not hold.
    beta = "tenants.beta.max_in_flight"
    assert share_of(settings(None, **own), "beta", 256) == Share(64, 192, GATEWAY, beta)
    assert share_of(settings(5, **own), "beta", 256) == Share(5, None, GATEWAY, beta)
    assert share_of(settings(5, **own), None, 256) == Share(5, None, GATEWAY)
    assert share_of(settings(None, **own), "gone", 256) == Share(64, 192, GATEWAY)


def test_a_refusal_names_the_setting_the_share_comes_from_and_how_to_raise_it() -> None:
    calls = InFlight()
    own = share_of(settings(8, acme={"max_in_flight": 1}, beta={}), "acme", 256)
    assert calls.take('tenant "acme"', own) is not None
    with pytest.raises(TooManyInFlightError) as info:
        calls.take('tenant "acme"', own)
    assert ('tenant "acme" has 1 model call in flight, its share '
            "(tenants.acme.max_in_flight: 1)") in info.value.message
    assert info.value.message.endswith("raise tenants.acme.max_in_flight in the config")
    gateway = share_of(settings(1, acme={"max_in_flight": 1}, beta={}), "beta", 256)
    assert calls.take('tenant "beta"', gateway) is not None
    with pytest.raises(TooManyInFlightError) as info:
        calls.take('tenant "beta"', gateway)
    assert f"({GATEWAY}: 1)" in info.value.message
    assert info.value.message.endswith(
        f"raise {GATEWAY}, or give the tenant its own, tenants.beta.max_in_flight, in the "
        "config")
    alone = share_of(settings(1), None, 256)
    assert calls.take("key k1 (of no tenant)", alone) is not None
    with pytest.raises(TooManyInFlightError) as info:
        calls.take("key k1 (of no tenant)", alone)
    assert info.value.message.endswith(f"raise {GATEWAY} in the config")
    assert calls.held('tenant "acme"') == calls.held('tenant "beta"') == 1


def test_a_call_counts_against_its_tenant_else_its_key_else_no_one() -> None:
    assert owner_of("acme", "k1") == owner_of("acme", "k2") == 'tenant "acme"'
    assert owner_of(None, "k1") == "key k1 (of no tenant)"
    assert owner_of(None, None) is None


def test_past_its_share_a_tenant_is_refused_and_another_is_not() -> None:
    calls = InFlight()
    held = [calls.take('tenant "a"', Share(2)) for _ in range(2)]
    assert all(slot is not None for slot in held)
    with pytest.raises(TooManyInFlightError) as info:
        calls.take('tenant "a"', Share(2))
    error = info.value
    assert (error.status, error.code, error.retry_after) == (429, "too_many_in_flight", 1.0)
    assert 'tenant "a" has 2 model calls in flight' in error.message
    assert "raise gateway.max_in_flight_per_tenant" in error.message
    assert calls.held('tenant "a"') == 2  # the refusal held nothing
    other = calls.take('tenant "b"', Share(2))
    assert other is not None and calls.held('tenant "b"') == 1
    assert calls.take(None, Share(0)) is None  # counted against no one, never refused


def test_a_place_is_given_back_once() -> None:
    calls = InFlight()
    slot = calls.take('tenant "a"', Share(1))
    assert slot is not None
    slot.release()
    slot.release()  # (again: nothing)
    assert calls.held('tenant "a"') == 0
    again = calls.take('tenant "a"', Share(1))
    assert again is not None and calls.held('tenant "a"') == 1


def test_unset_the_share_is_soft_while_a_share_stays_free_for_the_others() -> None:
    share = share_of(settings(), "a", 8)
    assert (share.calls, share.room) == (2, 6)
    assert share_of(settings(3), "a", 8).room is None  # a share set is a hard cap
    calls = InFlight()
    alone = [calls.take('tenant "a"', share) for _ in range(6)]  # past its share
    assert all(slot is not None for slot in alone) and calls.held('tenant "a"') == 6
    with pytest.raises(TooManyInFlightError, match="passed only while a quarter stays free"):
        calls.take('tenant "a"', share)  # the last quarter is the others'
    others = [calls.take('tenant "b"', share) for _ in range(2)]
    assert all(slot is not None for slot in others)
    with pytest.raises(TooManyInFlightError):
        calls.take('tenant "b"', share)  # past its own share with no room left
    assert calls.held('tenant "b"') == 2
    for slot in alone[:3]:
        assert slot is not None
        slot.release()
    assert calls.take('tenant "b"', share) is not None  # room again
