"""The HTTP service: a FastAPI shell over the gateway engine. Build it with :func:`create_app`;
``switchpoint serve`` runs it on uvicorn (:mod:`switchpoint.server.runner`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchpoint._lazy import names_on_use

if TYPE_CHECKING:
    from switchpoint.server.app import create_app

# The app loads on use: a start that is refused (its --host or --port, the exposure of its
# admin routes, an admin token not exported) is refused by modules of this package that need
# no web framework, before FastAPI and the service's schemas load (some 1 s of CPU).
__getattr__ = names_on_use(__name__, {"create_app": "app"})

__all__ = ["create_app"]
