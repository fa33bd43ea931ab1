"""Requests for a host the service does not answer to: only names ``server.allowed_hosts``
lists, besides ``localhost``, the names under it and IP addresses (DNS rebinding).

A web page at ``http://evil.example:8080`` can make its own name resolve to ``127.0.0.1`` a
moment after it has loaded (DNS rebinding). Its requests then reach the service on loopback as
the browser's same-origin requests, with no ``Origin`` header for
:mod:`switchpoint.server.origins` to refuse, and the page reads the answers: the status, the
reports, the models, the request log where no admin token guards it. The browser still names
the page's host in the ``Host`` header. So :func:`refusal` answers a request whose
``Host`` (or target in absolute form, ``http://host/path``, whose host HTTP has a server take
in the header's place) names neither ``localhost`` nor a name under it (``app.localhost``:
browsers resolve those to loopback themselves, whatever DNS says) nor an IP address (any port:
a rebinding needs a name the page's owner controls, which an address is not) nor a name
``server.allowed_hosts`` lists (``*``: any) a 403 ``permission_denied`` naming it and how to
allow it, before any route reads it: nothing is called, logged, learned or changed. A request
without a ``Host`` (HTTP/1.0) comes from no browser, and is served.

A request names one host: one that gives the ``Host`` header more than once, or a ``Host``
listing several (a comma between them, as a proxy joins a header given more than once), leaves
which host it is for to whoever reads it (a proxy in front may take one, the service another),
and an HTTP/1.1 request, which requires a ``Host``, names none without one or with an empty
one. No rule can check such a host, so the request is refused wherever the service listens,
whether or not it checks the names, and whatever server runs the app (:func:`malformed`: a 400
``invalid_request`` naming ``host``, which the request target's guard in
:mod:`switchpoint.server.targets` answers before anything else reads the request;
``switchpoint serve``'s protocol, whose h11 refuses a header given more than once, and an
HTTP/1.1 request without a ``Host``, before the app sees them, answers them in the same words,
:data:`MANY_HOSTS` and :data:`NO_HOST`). An HTTP/1.0 request without a ``Host``, or with an
empty one, names none and is served, as is one whose target, in absolute form, names the host
in the header's place.

The guard is on where :func:`guards_hosts` says: a service listening on loopback
(``switchpoint serve``'s default) always; one listening beyond it (which then needs
credentials, or was told to serve without them) only when ``server.allowed_hosts`` lists names,
such as the one a proxy in front passes on in the ``Host`` header; never with ``*``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from switchpoint._messages import json_quoted, listed_names
from switchpoint._redact import MASK
from switchpoint.config import host_name
from switchpoint.server.errors import document_refusal
from switchpoint.server.exposure import is_loopback
from switchpoint.server.header_text import shown_text

#: How the API document describes the refusal, for every operation.
_DOC = ("permission_denied: the request's Host header (or its target, in absolute form: "
        "http://host/path) names a host the service does not answer to (not localhost or a "
        "name under it, an IP address, nor a name server.allowed_hosts lists), as a web page "
        "whose name was pointed at this machine would; reach the service as localhost or "
        "127.0.0.1, or list the name in server.allowed_hosts.")
#: How the API document describes the refusal of a request whose host is malformed, for every
#: operation.
MALFORMED_DOC = ("invalid_request (param host): the HTTP/1.1 request gives no Host header, "
                 "or an empty one, naming no host, or the request gives more than one Host "
                 "header, or one listing several hosts (a comma between them); send the one "
                 "host the service is reached by (Host: 127.0.0.1:8080).")
# How to send the host, which each refusal of a malformed one ends with.
_WITH_PORT = ("with the port (Host: 127.0.0.1:8080, say; curl and the openai client send it "
              "themselves)")
_SEND_ONE = f"Send the one host the service is reached by, {_WITH_PORT}"
#: Why an HTTP/1.1 request giving no Host header is refused (param ``host``): by the app, or by
#: the server before the app sees it (``switchpoint serve``'s protocol), in the same words.
NO_HOST = ("host: the HTTP/1.1 request gives no Host header, which names no host: HTTP/1.1 "
           f"requires the host the service is reached by. Send it, {_WITH_PORT}")
#: Why a request giving the Host header more than once is refused (param ``host``).
MANY_HOSTS = ("host: the request gives the Host header more than once; a request names one "
              "host, and which of them it is for would be anyone's guess (a proxy in front may "
              f"read another than the service does). {_SEND_ONE}")
# Where a request names its host: the Host header, or the target in absolute form
# (http://host/path), whose host a server takes in the header's place (see
# switchpoint.server.targets, which hands it on as the Host).
_WHERE = "in its Host header or request target"
# A port, after the host: what a Host header may end with.
_PORT = re.compile(r"(?::[0-9]{0,5})?")
# The names under localhost (app.localhost): reserved for loopback, a browser resolves them to
# it itself, so no page can point one elsewhere. (Not a loopback name to listen on: the
# system's resolver may ask DNS for them.)
_UNDER_LOCALHOST = ".localhost"
# The longest Host header whose answer is remembered (a name of 253 characters, a port, an
# IPv6 address in brackets): a longer one, served by no rule, is read each time.
_REMEMBERED_HOST = 300


def guards_hosts(listen_host: str, allowed: Iterable[str]) -> bool:
    """Whether a service listening on ``listen_host`` with ``server.allowed_hosts`` of
    ``allowed`` checks each request's ``Host``: on loopback unless ``*`` is listed, and
    beyond it when names are listed (but ``*``)."""
    listed = frozenset(allowed)
    return "*" not in listed and (bool(listed) or is_loopback(listen_host))


def served_name(host: str, allowed: frozenset[str]) -> bool:
    """A request naming ``host`` (a Host header's value) is served: its name is
    ``localhost`` (or another loopback name), a name under ``localhost``, an IP address, or one
    of ``allowed``."""
    name = _name(host)
    if name is None:
        return False
    if name in allowed or is_loopback(name) or name.endswith(_UNDER_LOCALHOST):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _served(host: str, allowed: frozenset[str]) -> bool:
    """:func:`served_name`, remembered: a service is reached by the same few Host values, and
    reading one (its name, its port, whether it is an IP address, three times over) cost more
    than the rest of a request's headers' rules."""
    return served_name(host, allowed)


def malformed(hosts: list[str], http_version: str, in_target: bool = False) -> str | None:
    """Why a request of HTTP ``http_version`` whose Host headers are ``hosts`` (as sent) is
    refused for its host's form, or None: more than one header, or one listing several hosts (a
    comma), in any version; over HTTP/1.1, no header or an empty one, unless the request names
    its host in its target instead (``in_target``: a target in absolute form)."""
    if len(hosts) > 1:
        return MANY_HOSTS
    if hosts and "," in hosts[0]:
        shown = _shown(hosts[0])
        return (f"host: the request's Host header {shown} lists more than one host (a comma "
                "between them, as a proxy joins a header given more than once); a request "
                f"names one host, and which of them it is for would be anyone's guess. {_SEND_ONE}")
    if http_version != "1.1" or in_target or hosts not in ([], [""]):
        return None
    if not hosts:
        return NO_HOST
    return ("host: the request's Host header is empty, which names no host: HTTP/1.1 requires "
            f"the host the service is reached by. Send it, {_WITH_PORT}")


def refusal(hosts: list[str], allowed: frozenset[str]) -> str | None:
    """Why a request whose Host headers are ``hosts`` is refused, or None when it is served
    (it has none, or each it has is empty or one :func:`served_name` serves; a request giving
    more than one is refused before, by :func:`malformed`)."""
    refused = [host for host in hosts if host and not (
        _served(host, allowed) if len(host) <= _REMEMBERED_HOST else served_name(host, allowed))]
    if not refused:
        return None
    host = refused[0]
    name = _name(host)
    lists = ("lists none" if not allowed
             else "lists " + listed_names(sorted(allowed), most=5, quoted=True))
    shown = _shown(host)
    if name is None and "@" in host:
        what = (f"host: the request names {shown} as its host {_WHERE}: a user, and perhaps "
                "a password (not repeated here), before a host, which a request's host does "
                "not carry (send a credential in the Authorization header)")
        allow = ""
    elif name is None:
        what = (f"host: the request names {shown} as its host {_WHERE}, "
                "which is not a host name or an IP address, with a port or without one "
                "(host[:port])")
        allow = ""
    else:
        what = (f"host: the request names the host {shown} {_WHERE}, which "
                "is not localhost or a name under it (app.localhost), an IP address, nor a "
                f"name server.allowed_hosts lists (it {lists})")
        allow = (f"; if the name is yours (a proxy in front that passes the Host on, say), add "
                 f"{json_quoted(name, 100)} to server.allowed_hosts in the config and restart")
    return (f"{what}, so it is refused: a web page may point a name of its own at this machine "
            "(DNS rebinding) to read and call the service. Reach the service as localhost or "
            f"127.0.0.1{allow}")


def _shown(host: str) -> str:
    """A Host header's value ``host`` as a refusal quotes it (:func:`shown_text`), what comes
    before an ``@`` masked: a URL's user and password (``http://user:password@host/``, a target
    in absolute form, whose host is read as the header's), which the answer, and the client's
    or a proxy's log of it, must not repeat."""
    _, at, rest = host.rpartition("@")
    return json_quoted(shown_text(f"{MASK}@{rest}" if at else host), 100)


def _name(host: str) -> str | None:
    """The host a Host header's value names (as :func:`~switchpoint.config.host_name` writes
    it, without the port), or None when the value is no ``host[:port]``."""
    if host.startswith("["):  # an IPv6 address, in brackets, then perhaps a port
        end = host.find("]") + 1
        name, port = (host[:end], host[end:]) if end else (host, "")
    else:
        name, colon, port = host.partition(":")
        port = colon + port
    if not _PORT.fullmatch(port):
        return None
    return host_name(name)


def document_hosts(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 403 of a refused Host on every operation."""
    return document_refusal(schema, 403, _DOC)
