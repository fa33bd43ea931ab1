"""The HTTP service: ``POST /v1/route`` and the service shell (health, models, metrics, admin).

Build it with :func:`create_app`; ``switchpoint serve`` runs it on uvicorn.
"""

from __future__ import annotations

from switchpoint.gateway.app import create_app

__all__ = ["create_app"]
