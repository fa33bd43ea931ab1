"""The admin routes' guard: ``Authorization: Bearer <token>`` when ``admin_token_env`` is set.

With no ``admin_token_env`` in the config the ``/v1/router/*`` routes stay open (the service
binds to loopback by default). With it, the token is read from that environment variable at
start (and again on reload) and every admin call must carry it; a missing or wrong token is a
401 ``unauthorized`` in the usual error shape, compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from switchpoint.errors import AuthenticationError
from switchpoint.server.context import get_service


def require_admin(request: Request) -> None:
    """FastAPI dependency for the admin routes."""
    settings = get_service(request).gateway.settings
    token = settings.admin_token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                          token.encode()):
        return
    raise AuthenticationError("this admin route needs the header `Authorization: Bearer "
                              f"<token>` with the token in ${settings.admin_token_env}",
                              param="authorization")


ADMIN = [Depends(require_admin)]
"""``dependencies=ADMIN`` on a route guards it."""
