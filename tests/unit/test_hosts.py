"""The rule of which hosts a service answers to (:mod:`switchpoint.server.hosts`), by the names
a request gives; tests/attack/test_attack_hosts.py tests it on a real server."""

from __future__ import annotations

import json

import pytest

from switchpoint.server.exposure import is_loopback
from switchpoint.server.hosts import refusal, served_name

LISTED = frozenset({"api.internal"})


@pytest.mark.parametrize("host", [
    "localhost", "localhost:8080", "app.localhost", "app.localhost:8080", "A.B.LocalHost.",
    "a-b_c.x.localhost:1", "api.internal:443", "127.0.0.1:9", "[::1]"])
def test_localhost_the_names_under_it_addresses_and_the_listed_names_are_served(
        host: str) -> None:
    assert served_name(host, LISTED)
    assert refusal([host], LISTED) is None


@pytest.mark.parametrize("host", [
    "evil.example", "localhost.evil.example", "app.localhost.evil.example", "evillocalhost",
    "evil-localhost:80", "localhost.localhost.example"])
def test_a_name_elsewhere_is_refused_naming_it(host: str) -> None:
    assert not served_name(host, LISTED)
    message = refusal([host], LISTED)
    assert message is not None
    assert message.startswith(f"host: the request names the host {json.dumps(host)} "), message
    assert "not localhost or a name under it (app.localhost)" in message


@pytest.mark.parametrize("host", [
    ".localhost", "a..localhost", "-a.localhost", "a-.localhost", "x" * 64 + ".localhost",
    "app.localhost:http", "app localhost"])
def test_a_name_under_localhost_is_checked_as_any_name_is(host: str) -> None:
    # Its labels' characters and lengths: what is no host name is refused as one.
    assert not served_name(host, LISTED)
    message = refusal([host], LISTED)
    assert message is not None
    assert "is not a host name or an IP address" in message, message


def test_a_name_under_localhost_long_as_a_name_may_be_is_served() -> None:
    name = ".".join(["a" * 63] * 3) + ".x" * 26 + ".localhost"  # 253 characters in all
    assert len(name) == 253 and served_name(name, LISTED)
    assert not served_name("a" + name, LISTED)  # one past


def test_a_name_under_localhost_is_no_loopback_address_to_listen_on() -> None:
    # The system's resolver may ask DNS for it; only a browser is sure to keep it on loopback.
    assert is_loopback("localhost") and not is_loopback("app.localhost")
