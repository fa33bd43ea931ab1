"""The rule of which hosts a service answers to (:mod:`switchpoint.server.hosts`), by the names
a request gives, and of a request naming no one host; tests/attack/test_attack_hosts.py tests
them on a real server."""

from __future__ import annotations

import json

import pytest

from switchpoint.server.exposure import is_loopback
from switchpoint.server.hosts import MANY_HOSTS, NO_HOST, malformed, refusal, served_name
from switchpoint.server.targets import guard

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


def test_a_host_is_answered_by_the_names_each_service_lists_however_often_it_comes() -> None:
    # (the answer for a host is remembered: by the names listed too, and as often as asked)
    for _ in range(3):
        assert refusal(["api.internal:443"], LISTED) is None
        assert refusal(["api.internal:443"], frozenset()) is not None
        assert refusal(["api.internal:443", "evil.example"], LISTED) is not None
    long_name = "a" * 300 + ".localhost"  # past what is remembered: still read, and refused
    assert refusal([long_name], LISTED) == refusal([long_name], LISTED) is not None


def test_a_name_under_localhost_is_no_loopback_address_to_listen_on() -> None:
    # The system's resolver may ask DNS for it; only a browser is sure to keep it on loopback.
    assert is_loopback("localhost") and not is_loopback("app.localhost")


def _scope(target: bytes, hosts: list[bytes], version: str = "1.1") -> dict[str, object]:
    path, _, query = target.partition(b"?")
    return {"type": "http", "http_version": version, "method": "GET", "path": path.decode(),
            "raw_path": path, "query_string": query,
            "headers": [(b"host", host) for host in hosts] + [(b"accept", b"*/*")]}


@pytest.mark.parametrize("hosts", [[b"127.0.0.1", b"127.0.0.1"], [b"localhost", b""],
                                   [b"a", b"b", b"c"]])
@pytest.mark.parametrize("target", [b"/health", b"http://127.0.0.1/health"])
def test_a_host_given_more_than_once_is_refused_whatever_server_passes_it_on(
        hosts: list[bytes], target: bytes) -> None:
    # uvicorn's h11 refuses it before the app; a server that hands it on meets the app's rule.
    for version in ("1.1", "1.0"):
        _, answer = guard(_scope(target, hosts, version))
        assert answer is not None
        assert (answer.status, answer.code, answer.param) == (400, "invalid_request", "host")
        assert answer.message == MANY_HOSTS
    assert malformed([host.decode() for host in hosts], "1.1") == MANY_HOSTS


def test_one_host_or_none_is_well_formed() -> None:
    assert malformed(["127.0.0.1:8080"], "1.1") is None
    assert malformed([], "1.0") is None  # HTTP/1.0 needs none
    assert malformed([], "1.1", in_target=True) is None  # the target names it
    assert malformed([""], "1.0") is None  # HTTP/1.0: taken as none
    assert malformed([""], "1.1", in_target=True) is None  # the target names it
    message = malformed([""], "1.1")
    assert message is not None and message.startswith("host: the request's Host header is empty")
    # The target's host, in the header's place, is the one the request is read with.
    read, answer = guard(_scope(b"http://127.0.0.1/health", [b""]))
    assert answer is None
    assert [value for name, value in read["headers"] if name == b"host"] == [b"127.0.0.1"]


@pytest.mark.parametrize("target", [b"/health", b"/v1/models?x=1"])
def test_no_host_over_http_1_1_is_refused_whatever_server_passes_it_on(target: bytes) -> None:
    # switchpoint serve's h11 refuses it before the app; a server that hands it on meets the
    # app's rule, in the same words.
    assert malformed([], "1.1") == NO_HOST
    _, answer = guard(_scope(target, []))
    assert answer is not None
    assert (answer.status, answer.code, answer.param, answer.message) == (
        400, "invalid_request", "host", NO_HOST)
    # HTTP/1.0 needs none; a target in absolute form names the host in the header's place.
    assert guard(_scope(target, [], "1.0"))[1] is None
    read, answer = guard(_scope(b"http://127.0.0.1" + target, []))
    assert answer is None
    assert [value for name, value in read["headers"] if name == b"host"] == [b"127.0.0.1"]


def test_the_host_rule_checks_every_host_it_is_given() -> None:
    # (the target's guard refuses more than one first: none passes unchecked even so)
    assert refusal(["localhost", "evil.example"], LISTED) is not None
    assert refusal(["localhost", ""], LISTED) is None
