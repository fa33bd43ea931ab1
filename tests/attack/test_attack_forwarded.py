"""Who the client is, with and without a proxy in front: a client cannot claim an address.

Without ``server.trusted_proxies`` the client is the peer of the connection, whatever it says in
``X-Forwarded-For``: a local process that claimed a new address per request escaped its share
of the body buffer, and owned a new conversation each time (a request without a session id is
its address's). With the proxies listed, a request they pass on is the client's they name (the
nearest address no listed proxy holds); what they pass that is not an address, or a chain
longer than any proxy path, is not believed past the last proxy that could be checked: a client
is always an IP address, short and plain, wherever it shows (the access log, the body buffer).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from switchpoint.server.proxies import MAX_HOPS
from tests.attack.attack_env import Attacked, chat_body, serving
from tests.attack.test_attack_body_buffer import (
    HELD,
    PATIENT,
    SHARE,
    SIZE,
    connect,
    head,
    metric,
    taken_in,
    wait_released,
)
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import refused_start

CLAIMED = "203.0.113.9"
OTHER = "198.51.100.7"


def hold_claiming(stack: ExitStack, port: int, source: str, claims: list[str]) -> None:
    """One connection from ``source`` per claim, each sending all of a body but its last byte
    with that ``X-Forwarded-For`` (closed when ``stack`` closes)."""
    held = [stack.enter_context(connect(port, source)) for _ in claims]
    for sock, claim in zip(held, claims, strict=True):
        sock.sendall(head("/v1/route", SIZE + 1, f"X-Forwarded-For: {claim}") + b" " * SIZE)
    time.sleep(0.3)


def pin_of(server: Attacked, text: str, claim: str | None, source: str = "127.0.0.1") -> str:
    """The pin state of a chat request whose first message is ``text`` (no session id: the
    conversation is its client's), sent from ``source`` claiming ``claim``."""
    headers = {"x-forwarded-for": claim} if claim else {}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        r = client.post(f"{server.base}/v1/chat/completions", headers=headers,
                        json=chat_body(text, model="auto"))
    assert r.status_code == 200, r.text[:300]
    return r.headers["x-switchpoint-pin"]


# (uvicorn writes a peer as host:port, an IPv6 host without brackets; a client a listed proxy
# named as its address alone: the proxy passed on no port)
ACCESS = re.compile(r'INFO: +(\S*) - "GET /health\?n=(\w+) HTTP/1.1"')


def peer(host: str) -> re.Pattern[str]:
    """How the access log writes a peer at ``host``: with the port it connected from."""
    return re.compile(re.escape(host) + r":[1-9]\d*")


def client_of(server: Attacked, source: str, *claims: bytes) -> str:
    """Who the access log says sent a request from ``source`` with an ``X-Forwarded-For``
    header per claim (as raw bytes: a proxy may pass on any), as it says it."""
    tag = uuid.uuid4().hex
    lines = [f"GET /health?n={tag} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close",
             *(b"X-Forwarded-For: " + claim for claim in claims)]
    with connect(server.port, source) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 ")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in server.log_text().splitlines():
            match = ACCESS.search(line)
            if match and match[2] == tag:
                return match[1]
        time.sleep(0.05)
    raise AssertionError(f"request {tag} is not in the access log")


# No proxy listed (the default): the peer is the client -----------------------------------------

@pytest.fixture(scope="module")
def attacked(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Attacked]:
    """The attack service (in place of the session's) waiting as long for a body as
    test_attack_body_buffer.py's: a body held must stay held while the test checks what it
    holds, however busy the host (with the attack config's 1 s it can time out, and be given
    back, before a loaded host has checked it); checked after each test as the session's is
    (``conftest._independent``)."""
    with serving(fake, tmp_path_factory.mktemp("unproxied"), limits=PATIENT) as server:
        yield server


def test_a_claimed_address_does_not_escape_the_share(attacked: Attacked) -> None:
    wait_released(attacked)
    refused = metric(attacked, SHARE)
    with ExitStack() as stack:
        # Four slow bodies from loopback, each claiming an address of its own: one client.
        hold_claiming(stack, attacked.port, "127.0.0.1",
                      [f"203.0.113.{n}" for n in range(1, 5)])
        taken_in(attacked, SIZE, refused + 3)
        assert SIZE <= metric(attacked, HELD) <= 1 << 20
        assert metric(attacked, SHARE) == refused + 3
    wait_released(attacked)


def test_a_claimed_address_owns_no_conversation(attacked: Attacked) -> None:
    text = f"who am I [{uuid.uuid4().hex[:8]}]"
    assert pin_of(attacked, text, CLAIMED) == "fresh"
    # The same conversation from the same peer, claiming another address: still its own.
    assert pin_of(attacked, text, OTHER) != "fresh"


# Proxies listed: the address they pass on is the client ----------------------------------------

@pytest.fixture(scope="module")
def proxied(fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Attacked]:
    """The service behind a proxy on 127.0.0.2 and proxies in 127.0.1.0/24, with its access
    log on (uvicorn's line per request, the client first), waiting as long for a body as the
    service above."""
    root: Path = tmp_path_factory.mktemp("proxied")
    with serving(fake, root, server_lines="\n  trusted_proxies: [127.0.0.2, 127.0.1.0/24]",
                 flags=("--access-log",), limits=PATIENT) as server:
        yield server
        assert "Traceback" not in server.log_text()
        assert server.server_failures() == 0


def test_a_listed_proxy_names_the_client(proxied: Attacked) -> None:
    assert client_of(proxied, "127.0.0.2", CLAIMED.encode()) == CLAIMED
    assert peer("127.0.0.2").fullmatch(client_of(proxied, "127.0.0.2"))  # the proxy itself
    # A chain of listed proxies: the nearest address none holds is the client; what the
    # client put first itself (a claim of its own) is not believed.
    chain = f"{OTHER}, {CLAIMED}, 127.0.0.2".encode()
    assert client_of(proxied, "127.0.1.5", chain) == CLAIMED
    assert client_of(proxied, "127.0.1.5", f"{OTHER}, {CLAIMED}".encode(),
                     b"127.0.0.2") == CLAIMED  # (the same, in two headers)
    assert client_of(proxied, "127.0.0.2", b"[2001:db8::5]:4711") == "2001:db8::5"
    assert client_of(proxied, "127.0.0.2", b"203.0.113.9:4711") == CLAIMED


def test_a_peer_not_listed_names_no_one(proxied: Attacked) -> None:
    assert peer("127.0.0.1").fullmatch(client_of(proxied, "127.0.0.1", CLAIMED.encode()))
    assert peer("127.0.0.3").fullmatch(client_of(proxied, "127.0.0.3", CLAIMED.encode()))


@pytest.mark.parametrize("claim", [
    b"not-an-address", b"", b" , ", b"203.0.113.9 203.0.113.10", b"x" * 6000,
    b"\xe9\x9b[31mforged", b"203.0.113.9%eth0", b"fe80::1%" + b"e" * 4000, b"unix:/run/x",
    b"[2001:db8::5", b"2001:db8::5]:80"])
def test_what_is_not_an_address_is_not_believed(proxied: Attacked, claim: bytes) -> None:
    # Not an address where the proxy's own entry should be: the proxy is the client.
    assert peer("127.0.0.2").fullmatch(client_of(proxied, "127.0.0.2", claim))
    # Not an address behind a listed proxy's entry: that proxy is the client.
    assert client_of(proxied, "127.0.1.5", claim + b", 127.0.0.2") == "127.0.0.2"


def test_a_chain_longer_than_any_proxy_path_is_not_followed(proxied: Attacked) -> None:
    hops = [f"127.0.1.{n % 250 + 1}" for n in range(400)]  # (the head fits max_header_bytes)
    claimed = ", ".join([CLAIMED, *hops]).encode()
    # The walk stops MAX_HOPS entries back, at a listed proxy: the claim behind is not reached.
    assert client_of(proxied, "127.0.1.5", claimed) == hops[-MAX_HOPS]
    # A chain within the bound is followed to its client.
    within = ", ".join([CLAIMED, *hops[-(MAX_HOPS - 1):]]).encode()
    assert client_of(proxied, "127.0.1.5", within) == CLAIMED


def test_each_client_a_proxy_names_has_its_share(proxied: Attacked) -> None:
    wait_released(proxied)
    refused = metric(proxied, SHARE)
    with ExitStack() as stack:
        # Three clients behind one proxy, each a slow body: three shares, nothing refused.
        hold_claiming(stack, proxied.port, "127.0.0.2", [f"203.0.113.{n}" for n in range(1, 4)])
        taken_in(proxied, 3 * SIZE, refused)
        assert metric(proxied, HELD) >= 3 * SIZE
        assert metric(proxied, SHARE) == refused
        # One of them, again: past its share.
        hold_claiming(stack, proxied.port, "127.0.0.2", ["203.0.113.1"])
        taken_in(proxied, 3 * SIZE, refused + 1)
        assert metric(proxied, SHARE) == refused + 1
    wait_released(proxied)


def test_each_client_a_proxy_names_owns_its_conversations(proxied: Attacked) -> None:
    text = f"who am I [{uuid.uuid4().hex[:8]}]"
    assert pin_of(proxied, text, CLAIMED, source="127.0.0.2") == "fresh"
    assert pin_of(proxied, text, OTHER, source="127.0.0.2") == "fresh"  # another client's
    assert pin_of(proxied, text, CLAIMED, source="127.0.0.2") != "fresh"


def test_a_reload_keeps_the_proxies_the_service_started_with(proxied: Attacked) -> None:
    served = proxied.data_dir.parent / "switchpoint.yaml"
    before = served.read_text(encoding="utf-8")
    listed = "trusted_proxies: [127.0.0.2, 127.0.1.0/24]"
    assert listed in before
    try:
        served.write_text(before.replace(listed, "trusted_proxies: [nginx]"), encoding="utf-8")
        r = httpx.post(f"{proxied.base}/v1/router/reload", headers=proxied.admin, timeout=30)
        assert r.status_code == 400, r.text
        assert ('server.trusted_proxies[0]: "nginx" is not an IP address'
                in r.json()["error"]["message"]), r.text
        served.write_text(before.replace(listed, "trusted_proxies: []"), encoding="utf-8")
        r = httpx.post(f"{proxied.base}/v1/router/reload", headers=proxied.admin, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["restart_required"] == ["server"]
        # Still the proxies it started with: a change needs a restart, as the answer says.
        assert client_of(proxied, "127.0.0.2", CLAIMED.encode()) == CLAIMED
    finally:
        served.write_text(before, encoding="utf-8")


@pytest.mark.parametrize(("config", "env"), [
    ("server:\n  trusted_proxies: [127.0.0.1, proxy.internal]\n", {}),
    ("", {"SWITCHPOINT_SERVER__TRUSTED_PROXIES": "[127.0.0.1, proxy.internal]"}),
])
def test_a_proxy_that_is_no_address_refuses_the_start(tmp_path: Path, config: str,
                                                      env: dict[str, str]) -> None:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(config, encoding="utf-8")
    code, err = refused_start("--config", path, data_dir=tmp_path / "data", env=env)
    assert code == 2, err
    assert ('server.trusted_proxies[1]: "proxy.internal" is not an IP address or a network: '
            "write an address (10.0.0.5, ::1) or a network in CIDR notation") in err, err
    assert "Traceback" not in err and not (tmp_path / "data").exists()


def test_a_proxy_list_that_trusts_every_peer_or_uvicorns_setting_left_set_is_warned_of(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``0.0.0.0/0`` (or ``::/0``) takes every peer for a proxy, so a client connecting directly
    claims any address: the start says so. ``FORWARDED_ALLOW_IPS``, which uvicorn read and
    ``switchpoint serve`` no longer does, is said to be ignored, naming the key to set."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1,10.0.0.1")
    with serving(fake, tmp_path, server_lines="\n  trusted_proxies: [0.0.0.0/0, 10.0.0.0/8]",
                 flags=("--access-log",)) as server:
        assert client_of(server, "127.0.0.1", CLAIMED.encode()) == CLAIMED  # (as listed)
        text = server.log_text()
    assert "0.0.0.0/0" in text and "any address" in text, text
    assert "FORWARDED_ALLOW_IPS" in text and "server.trusted_proxies" in text, text
