"""The HTTP service: a FastAPI shell over the gateway engine. Build it with :func:`create_app`;
``switchpoint serve`` runs it on uvicorn (:mod:`switchpoint.server.runner`)."""

from __future__ import annotations

from switchpoint.server.app import create_app

__all__ = ["create_app"]
