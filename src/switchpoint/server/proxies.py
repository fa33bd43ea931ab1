"""Who the client is: the peer of the connection, or, behind a listed proxy, the client it names.

Without ``server.trusted_proxies`` (the default) the client is the peer, whatever a request
claims: ``switchpoint serve`` turns uvicorn's own reading of ``X-Forwarded-For`` off (it
believed any process on 127.0.0.1), and :class:`ForwardedClientMiddleware` is not installed.

With proxies listed, a request whose peer is one of them is the client's its
``X-Forwarded-For`` names. The entries (of every such header, in order) are read from the last,
since each proxy appends the address it got the request from; the first address no listed
proxy holds is the client, and what comes before it (which that client wrote itself) is not
read. An entry that is not an IP address (a host name, garbage, an address with a zone; a port
is dropped: ``203.0.113.9:4711``, ``[2001:db8::5]:4711``) stops the walk, and so does a chain
of more than :data:`MAX_HOPS` entries: the client is then the last listed proxy reached, the
nearest address that could be checked. So the client is always an IP address, as
:mod:`ipaddress` writes it (at most 39 characters), whatever a proxy passes on: what the body
buffer counts a request without a credential against, the owner of a conversation sent without
a session id, and what the access log writes (the address alone: the proxy passes on no port).
``X-Forwarded-Proto`` is not read: nothing the service answers depends on the scheme. The
start warns of a listed network holding every address (``0.0.0.0/0``, ``::/0``: a client
connecting directly then names itself any address) and of uvicorn's ``FORWARDED_ALLOW_IPS``
left set (:func:`proxy_warnings`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from switchpoint.config import IPNetwork
from switchpoint.server.header_names import FORWARDED_FOR

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The port of a client a listed proxy names (the proxy passes on none; no connection's peer
#: has port 0): the access log writes such a client as its address alone
#: (:class:`~switchpoint.server.logs.ForwardedClientFilter`).
FORWARDED_PORT = 0
#: The most ``X-Forwarded-For`` entries read, from the last: more than any chain of proxies.
MAX_HOPS = 16
_FORWARDED_FOR = FORWARDED_FOR.encode("ascii")
# The longest entry that can be an address with a port: "[" + 39 + "]:65535".
_MAX_ENTRY = 47


class ForwardedClientMiddleware:
    """Sets a request's client to the one its listed proxies name (see the module)."""

    def __init__(self, app: ASGIApp, proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = forwarded_client(scope, self.proxies)
            if client is not None:
                scope["client"] = (client, FORWARDED_PORT)
        await self.app(scope, receive, send)


def forwarded_client(scope: Scope, proxies: Sequence[IPNetwork]) -> str | None:
    """The client a request's listed proxies name, or None when it is the peer itself (the
    peer is no listed proxy, or passed on no address that could be checked)."""
    peer = scope.get("client")
    address = _address(str(peer[0])) if peer else None
    if address is None or not _listed(address, proxies):
        return None
    values = [value for name, value in scope["headers"] if name == _FORWARDED_FOR]
    if not values:
        return None
    entries = b",".join(values).rsplit(b",", MAX_HOPS)
    client = address
    for raw in reversed(entries[-MAX_HOPS:]):
        hop = _entry(raw)
        if hop is None:
            break
        client = hop
        if not _listed(hop, proxies):
            break
    return None if client == address else str(client)


def proxy_warnings(proxies: Sequence[IPNetwork], environ: Mapping[str, str]) -> list[str]:
    """What to warn of at the start: a listed network holding every address (each peer is taken
    for a proxy, so a client connecting directly names itself any address), and uvicorn's
    ``FORWARDED_ALLOW_IPS`` left set (it is not read: the proxies are the config's to list)."""
    out = [f"server.trusted_proxies lists {network}: every peer is taken for a proxy, so a "
           "client that connects directly can claim any address in X-Forwarded-For (and with "
           "it another client's share of the body buffer and conversations); list the "
           "proxies' own addresses unless every peer truly is a proxy"
           for network in proxies if network.prefixlen == 0]
    if "FORWARDED_ALLOW_IPS" in environ:
        out.append("FORWARDED_ALLOW_IPS is set but not read: the proxies whose X-Forwarded-For "
                   "names the client are listed in server.trusted_proxies (now "
                   + (", ".join(str(n) for n in proxies) or "none: the client is the peer")
                   + ")")
    return out


def _listed(address: Address, proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in proxies)


def _entry(raw: bytes) -> Address | None:
    """The address of one ``X-Forwarded-For`` entry (its port dropped), or None."""
    text = raw.strip()
    if len(text) > _MAX_ENTRY or not text.isascii():
        return None
    host = text.decode("ascii")
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        host, closed, port = host[1:].partition("]")
        if not closed or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
    elif host.count(":") == 1:  # IPv4:port
        host, _, port = host.partition(":")
        if not port.isdigit():
            return None
    return _address(host)


def _address(host: str) -> Address | None:
    """``host`` as an IP address (an IPv4 one mapped into IPv6 as itself), or None: a name,
    garbage, or an address with a zone (``%eth0``)."""
    if "%" in host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
