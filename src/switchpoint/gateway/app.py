"""The app factory: ``create_app(settings) -> FastAPI``.

Routes live in small modules (``routes_route``, ``routes_admin``; the OpenAI-compatible gateway
adds its own); this module wires them to one :class:`~switchpoint.gateway.service.Service`
(live router, store, metrics), the error handlers and the middleware. Creating the app does no
I/O: the store opens and the router starts loading (on a thread) when the server starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from switchpoint._version import __version__
from switchpoint.config import Settings
from switchpoint.gateway import errors, routes_admin, routes_route
from switchpoint.gateway.limits import BodyLimitMiddleware
from switchpoint.gateway.metrics import Metrics, MetricsMiddleware
from switchpoint.gateway.service import Service
from switchpoint.gateway.state import Loader, RouterState
from switchpoint.store import SQLiteStore

DESCRIPTION = """Routes each LLM request to the model minimising expected error + λ·cost.

`POST /v1/route` returns a routing decision (no provider call). Errors always have the shape
`{"error": {"code", "message", "param"}}`: 400 `invalid_request` for a malformed body, 503
`router_not_ready` while the weights load.
"""


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    store: SQLiteStore | None = None,
) -> FastAPI:
    """Build the ASGI app. ``loader`` builds routers (default: the bundled/configured weights);
    ``store`` defaults to SQLite in ``settings.data_dir``."""
    state = RouterState(settings, loader)
    store = store or SQLiteStore(settings.db_path, synchronous=settings.store.synchronous)
    service = Service(state=state, store=store, metrics=Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.store.open()
        state.start()
        try:
            yield
        finally:
            service.store.close()

    app = FastAPI(title="switchpoint", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.service = service
    errors.install(app)
    app.include_router(routes_route.router)
    app.include_router(routes_admin.router)
    app.add_middleware(BodyLimitMiddleware, limit=lambda: state.settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)  # outermost: sees every answer
    return app
