"""The admin routes' guard: ``Authorization: Bearer <token>`` when ``admin_token_env`` is set.

With no ``admin_token_env`` in the config the ``/v1/router/*`` routes stay open (the service
binds to loopback by default). With it, the token is read from that environment variable at
start (and again on reload) and every admin call must carry it; a missing or wrong token is a
401 ``unauthorized`` in the usual error shape, compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from switchpoint.gateway.errors import ApiError
from switchpoint.gateway.service import get_service


def require_admin(request: Request) -> None:
    """FastAPI dependency for the admin routes."""
    state = get_service(request).state
    live = state.peek()
    settings = live.settings if live is not None else state.settings
    token = settings.admin_token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                          token.encode()):
        return
    raise ApiError(401, "unauthorized",
                   "this admin route needs the header `Authorization: Bearer <token>` with the "
                   f"token in ${settings.admin_token_env}",
                   "authorization", {"WWW-Authenticate": "Bearer"})


ADMIN = [Depends(require_admin)]
"""``dependencies=ADMIN`` on a route guards it."""
