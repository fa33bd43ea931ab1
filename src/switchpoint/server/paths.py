"""The path a request is for as the app reads it: below the root path a server gives the app.

An app mounted under a prefix (``uvicorn --root-path /sp``, or a server setting the ASGI
scope's ``root_path``) is handed the whole path the client sent (``/sp/v1/route``), the root
path first, and routes by what follows it (``/v1/route``). Whatever else a request's path
decides (the envelope of its errors, the route template it is counted under, the advice of a
refused body) reads :func:`app_path`, the path its route is matched by, so the app answers the
same below a root path as without one.
"""

from __future__ import annotations

from starlette.types import Scope


def app_path(scope: Scope) -> str:
    """The path of the request of ``scope`` as the app's routes match it: its ``path`` without
    the ``root_path`` before it (``/v1/route`` for ``/sp/v1/route`` below ``/sp``), as
    Starlette's routing reads it; the path as it is when the root path is not before it (a
    server that gives the app a root path without putting it before the path), or is followed
    by no ``/`` (``/spam`` below ``/sp``); empty when it is the root path alone."""
    path = str(scope["path"])
    root = str(scope.get("root_path", ""))
    if not root or not path.startswith(root):
        return path
    below = path[len(root):]
    return below if not below or below.startswith("/") else path
