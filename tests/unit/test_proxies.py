"""Who the client is behind listed proxies, for the peers a loopback test cannot be (IPv6,
IPv4 mapped into IPv6); tests/attack/test_attack_forwarded.py tests the rest on a real server."""

from __future__ import annotations

import pytest

from switchpoint.config import ServerSettings
from switchpoint.server.proxies import forwarded_client

PROXIES = ServerSettings(trusted_proxies=["10.0.0.0/8", "fd00::/8"]).proxy_networks


def client(peer: str, *claims: bytes) -> str | None:
    scope = {"type": "http", "client": (peer, 4711),
             "headers": [(b"x-forwarded-for", claim) for claim in claims]}
    return forwarded_client(scope, PROXIES)


@pytest.mark.parametrize(("peer", "claims", "expected"), [
    ("fd00::2", [b"203.0.113.9"], "203.0.113.9"),
    ("::ffff:10.0.0.2", [b"2001:db8::5"], "2001:db8::5"),  # a mapped peer is its IPv4 self
    ("10.0.0.2", [b"::ffff:203.0.113.9"], "203.0.113.9"),
    ("10.0.0.2", [b"203.0.113.9, fd00::7"], "203.0.113.9"),
    ("10.0.0.2", [b"[2001:DB8:0::5]:443"], "2001:db8::5"),  # written one way, whatever came
    ("10.0.0.2", [b"203.0.113.9, ::ffff:10.0.0.3"], "203.0.113.9"),
    ("2001:db8::9", [b"203.0.113.9"], None),  # not a listed proxy: the peer is the client
    ("10.0.0.2", [], None),
    ("10.0.0.2", [b"203.0.113.9, fe80::1%eth0"], None),  # no zone: the proxy is the client
    ("10.0.0.2", [b"203.0.113.9, 10.0.0.3%eth0"], None),
    ("10.0.0.2", [b"203.0.113.9:http"], None),
    ("10.0.0.2", [b"[2001:db8::5]x"], None),
])
def test_the_client_a_listed_proxy_names(peer: str, claims: list[bytes],
                                         expected: str | None) -> None:
    assert client(peer, *claims) == expected


def test_no_proxy_listed_is_the_default() -> None:
    assert ServerSettings().trusted_proxies == [] and ServerSettings().proxy_networks == ()


@pytest.mark.parametrize(("entry", "peer"), [("::ffff:10.1.2.3", "10.1.2.3"),
                                             ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
                                             ("::ffff:10.0.0.0/104", "10.200.0.1")])
def test_a_proxy_listed_as_an_ipv4_address_mapped_into_ipv6_is_that_ipv4_address(
        entry: str, peer: str) -> None:
    """A server on a dual-stack socket sees an IPv4 peer as ``::ffff:a.b.c.d``, and an operator
    may list the proxy so: it is the same proxy as ``a.b.c.d``, not one never matched."""
    proxies = ServerSettings(trusted_proxies=[entry]).proxy_networks
    scope = {"type": "http", "client": (peer, 4711),
             "headers": [(b"x-forwarded-for", b"203.0.113.9")]}
    assert forwarded_client(scope, proxies) == "203.0.113.9"
