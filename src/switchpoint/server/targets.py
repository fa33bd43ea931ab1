"""The request target (the request line's ``/path?query``) as the service reads it: a target in
absolute form taken for its path and the host it names, and one holding a raw ``#`` refused.

A target in absolute form (``GET http://evil.example/v1/models``, as a client of a proxy
writes it), which RFC 9112 has servers accept, names a host, which HTTP has a server take in
the ``Host`` header's place (and the header ignored). :func:`guard` hands the app such a
request as its path and query, the host it names as its ``Host``, so the rule of the hosts the
service answers to (:mod:`~switchpoint.server.hosts`) checks the name the request gives,
wherever it gives it, and the routes read its path; under any server (uvicorn's own protocol
hands the URL on whole, as the path, which no route matches), and below the root path a server
is given (``uvicorn --root-path /api`` puts it before the URL, ``/apihttp://host/path``, as
before a path). One that names no host (``http:///v1/models``) is refused. A refused target is
shown as the client sent it, without that root path, a credential it holds redacted.

A ``#`` begins a URL's fragment, which a client keeps to itself: one sent raw is part of no
path or query, yet the server hands it on as one (``?x=1#frag`` is read as x = ``1#frag``), so
a value would be taken other than as the client meant it. :func:`guard` refuses such a target.

A ``/`` written ``%2F`` is refused outside a route's parameter that may hold one (a model's
name, ``/v1/models/team%2Fx``): the web framework reads it as a ``/``, so ``/v1%2Frouter%2Fkeys``
was served as ``/v1/router/keys``, while a proxy in front reading the escape as part of one
segment (as RFC 3986 has it) takes it for a path its rules of ``/v1/router/`` do not guard.

A path or a query whose %-escapes are not UTF-8 (``/v1/models/%FF``, ``?tenant=%ED%A0%80``) is
refused too, as a header that is not UTF-8 is: the web framework reads each byte that is not
UTF-8 as U+FFFD, so a route was handed (and an error quoted) characters the client never sent.
The path or a parameter's name is refused naming :data:`TARGET`, a parameter's value naming the
parameter.

A target that is neither a path (which begins with ``/``) nor a URL (``GET health``, a hand-
written request's slip) is refused too: no route takes it, and the 404 it got quoted its path
as ``/health``, a route that is there. So is ``*``, the target of ``OPTIONS *``, which asks
what the service as a whole takes (the 404 it got said ``OPTIONS /*: Not Found``): the refusal
points to ``/openapi.json``, which lists the routes and their methods.

Each refusal is a 400 ``invalid_request`` naming :data:`TARGET`, before any route reads the
request (and before its host, origin, credentials or body). A ``#`` in a value is written
``%23``, which passes. Then the request's ``Host`` headers, as sent, name one host, and the
request names it in its target or its ``Host`` (:func:`switchpoint.server.hosts.malformed`: one
given more than once, one listing several hosts, or none or an empty one over HTTP/1.1 is a 400
naming ``host``), wherever the service listens; which names it serves is the host rule's to
say, after this guard.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from starlette.types import Scope

from switchpoint._messages import MAX_FIELD, cut, json_quoted, printable
from switchpoint._redact import redact, redact_url
from switchpoint.server.errors import ErrorAnswer, document_refusal
from switchpoint.server.header_names import HOST
from switchpoint.server.hosts import MALFORMED_DOC, malformed

#: The param of a refused request target: the request line's part, as HTTP names it.
TARGET = "request-target"
#: How the API document describes the refusal, for every operation.
_DOC = ("invalid_request (param request-target): the request target holds a raw \"#\", which "
        "begins a URL's fragment, a part a client keeps to itself (send the target without "
        "it, and write a \"#\" a value holds as %23), or is a URL that names no host "
        "(http:///path: send the path alone, or the URL with its host), or is neither a path "
        "(which begins with /) nor a URL (* too: OPTIONS * is not answered), or its path or a "
        "query parameter's name is not UTF-8 once its %-escapes are read (a query parameter's "
        "value that is not is refused naming the parameter); write text that is not ASCII as "
        "its UTF-8 bytes, each %-escaped. Or its path holds a / written %2F outside a name "
        "that may hold one (a model's): write the path's own slashes as /.")
# The start of a target in absolute form (http://host/path?q): its scheme, in any case.
_ABSOLUTE = re.compile(rb"https?://", re.IGNORECASE)
_HOST = HOST.encode("ascii")


def guard(scope: Scope, slashed: tuple[str, ...] = ()) -> tuple[Scope, ErrorAnswer | None]:
    """The request of ``scope`` as the app reads it (its target in origin form: see
    :func:`origin_form`), and the answer refusing it for its target or for its host's form
    (its Host headers as sent), or None to serve it. ``slashed``: the paths before a route's
    parameter that may hold a ``/`` (a model's name), where alone a path may hold one written
    ``%2F`` (:func:`_encoded_slash`)."""
    sent = [value.decode("latin-1") for name, value in scope["headers"] if name == _HOST]
    root, target = _root_and_target(scope)
    read, problem = _origin_form(scope, root, target)
    if problem is None and b"#" in target:  # (then the target read holds it too)
        problem = refusal(read)
    if problem is None and read is scope and not target.startswith(b"/"):
        problem = _whole_service(scope["method"]) if target == b"*" else _no_path(target)
    if problem is not None:
        return read, ErrorAnswer(400, "invalid_request", problem, TARGET)
    not_utf8 = _not_utf8(_root_and_target(read)[1])
    if not_utf8 is not None:
        return read, ErrorAnswer(400, "invalid_request", not_utf8[1], not_utf8[0])
    problem = _encoded_slash(_root_and_target(read)[1], slashed)
    if problem is not None:
        return read, ErrorAnswer(400, "invalid_request", problem, TARGET)
    # (a target in absolute form, read anew, names the host in the header's place)
    problem = malformed(sent, scope.get("http_version", "1.1"), read is not scope)
    return read, None if problem is None else ErrorAnswer(400, "invalid_request", problem,
                                                          "host")


def origin_form(scope: Scope) -> tuple[Scope, str | None]:
    """``scope`` with a target in absolute form (``http://host/path?q``) as the path and query
    alone, as routes read them (below the root path, when the server gives one, as it gives a
    path in origin form: uvicorn's ``--root-path`` puts it before the URL), and the host it
    names (what comes before the path, the query or a fragment) as its only ``Host``, in place
    of the header's; with why it is refused when it names no host. Any other target is left as
    it is."""
    return _origin_form(scope, *_root_and_target(scope))


def _origin_form(scope: Scope, root: bytes, target: bytes) -> tuple[Scope, str | None]:
    """:func:`origin_form`, given the root path and the target of ``scope``
    (:func:`_root_and_target`)."""
    scheme = _ABSOLUTE.match(target)
    if scheme is None:
        return scope, None
    rest = target[scheme.end():]
    cut_at = min((i for i in (rest.find(b"/"), rest.find(b"?"), rest.find(b"#")) if i >= 0),
                 default=len(rest))
    host, origin = rest[:cut_at], rest[cut_at:]
    if not origin.startswith(b"/"):
        origin = b"/" + origin
    if not host:
        return scope, (f"{TARGET}: the request target {_quoted(target.decode('latin-1'))}"
                       " names no host after its http:// (a URL needs one); send the path "
                       f"alone, as {_quoted(origin.decode('latin-1'))}, or the URL "
                       "with its host")
    path, _, query = origin.partition(b"?")
    raw_path = root + path
    headers = [(name, value) for name, value in scope["headers"] if name != _HOST]
    return {**scope, "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "headers": [(_HOST, host), *headers]}, None


def refusal(scope: Scope) -> str | None:
    """Why the request target of ``scope`` is refused (it holds a raw ``#``), or None."""
    target = _root_and_target(scope)[1]
    if b"#" not in target:
        return None
    return (f"{TARGET}: the request target {_quoted(target.decode('latin-1'))}"
            " holds a \"#\", which begins a URL's fragment: a client keeps the fragment to "
            "itself, so a \"#\" sent is part of no path or query value. Send the target "
            "without the fragment, and write a \"#\" a value holds as %23")


def _no_path(target: bytes) -> str:
    """Why ``target``, neither a path nor a URL (``health``), is refused."""
    sent = target.decode("latin-1")
    return (f"{TARGET}: the request target {_quoted(sent)} is neither a path, which "
            "begins with \"/\", nor a URL (http://host/path); send the path, as "
            f"{_quoted('/' + sent)}")


def _encoded_slash(target: bytes, slashed: tuple[str, ...]) -> str | None:
    """Why ``target`` (a path, then perhaps ``?`` and a query) is refused for a ``/`` written
    ``%2F`` in its path before a parameter that may hold one (a model's name, after one of
    ``slashed``), or None. The web framework reads ``%2F`` as ``/``, so ``/v1%2Frouter%2Fkeys``
    was served as ``/v1/router/keys``, while a proxy in front that reads the escape as part of
    one segment, as RFC 3986 has it, takes it for another path than the one its rules guard."""
    path = target.partition(b"?")[0]
    at = path.lower().find(b"%2f")
    if at < 0 or any(path.startswith(before.encode()) and at >= len(before)
                     for before in slashed):
        return None
    takes = (f"only a name that may hold one takes (after {', '.join(slashed)})" if slashed
             else "no route's path takes")
    return (f"{TARGET}: the path {_shown(path)} holds a \"/\" written %2F, which {takes}; "
            "write the path's own slashes as /")


def _not_utf8(target: bytes) -> tuple[str, str] | None:
    """The param and the message refusing ``target`` (a path, then perhaps ``?`` and a query)
    for its path, a query parameter's name or a query parameter's value that is not UTF-8 once
    its %-escapes are read (as a web framework reads them, it made ``%FF`` a U+FFFD, a
    character the client never sent), or None when each is."""
    path, _, query = target.partition(b"?")
    if _undecodable(path):
        return TARGET, (f"{TARGET}: the path {_shown(path)} is not UTF-8 text once its "
                        f"%-escapes are read. {_UTF8_ADVICE}")
    for field in query.split(b"&") if _undecodable(query) else ():
        name, _, value = field.partition(b"=")
        if _undecodable(name):
            return TARGET, (f"{TARGET}: the query parameter name {_shown(name)} is not UTF-8 "
                            f"text once its %-escapes are read. {_UTF8_ADVICE}")
        if _undecodable(value):
            # (named as an unknown parameter is: cut, and shown as a terminal would print it)
            read = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
            param = printable(cut(redact(read), MAX_FIELD)) or "query"
            return param, (f"{param}: the value {_shown(value)} is not UTF-8 text once its "
                           f"%-escapes are read. {_UTF8_ADVICE}")
    return None


# How to write a path or a query that is not ASCII: what a refusal for its bytes ends with.
_UTF8_ADVICE = ("Write text that is not ASCII as its UTF-8 bytes, each %-escaped (é as %C3%A9), "
                "as browsers and HTTP clients do")


def _undecodable(part: bytes) -> bool:
    """Whether ``part`` of a target (ASCII with %-escapes, as HTTP sends it; or raw bytes, as
    some servers pass them on) is not UTF-8 once its %-escapes are read; checked only when it
    holds a ``%`` or a byte that is not ASCII."""
    if b"%" not in part and part.isascii():
        return False
    try:
        unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _shown(part: bytes) -> str:
    """``part`` of a target as a refusal quotes it: as sent, a byte that is not ASCII written
    as ``\\xff``."""
    return _quoted(part.decode("ascii", "backslashreplace"))


def _quoted(text: str) -> str:
    """``text``, a request target or a part of one, as a refusal quotes it: a credential a
    client put there (a key pasted in the path, ``?api_key=...``, a URL's password) redacted,
    as the access log and a 404 redact it (:func:`~switchpoint._redact.redact_url`), at most
    100 characters."""
    return json_quoted(redact_url(text), 100)


def _whole_service(method: str) -> str:
    """Why a request whose target is ``*`` (which names no path: the service as a whole, what
    ``OPTIONS *`` asks about) is refused."""
    what = ("asks what the service as a whole takes (OPTIONS *), which it does not answer"
            if method == "OPTIONS" else "names no path: it is OPTIONS's alone, for the service "
            "as a whole, which the service does not answer")
    return (f"{TARGET}: the request target \"*\" {what}. GET /openapi.json lists the routes and "
            "the methods each takes; send the request to a route's path")


def _root_and_target(scope: Scope) -> tuple[bytes, bytes]:
    """The root path the server put before the request target of ``scope`` (its raw path, then
    its query after a ``?``), and the target as the client sent it, after that root path."""
    raw_path = scope.get("raw_path")
    path = raw_path if isinstance(raw_path, bytes) else scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    target = path + b"?" + query if query else path
    root = str(scope.get("root_path", "")).encode("utf-8")
    sent = target[len(root):]
    if root and target.startswith(root) and (sent.startswith(b"/") or _ABSOLUTE.match(sent)):
        return root, sent
    return b"", target  # (a server that gives a root path without putting it before the path)


def document_targets(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the 400s of a refused target and of a request
    whose host is malformed on every operation."""
    return document_refusal(document_refusal(schema, 400, _DOC), 400, MALFORMED_DOC)
