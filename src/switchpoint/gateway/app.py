"""The app factory: ``create_app(settings) -> FastAPI``.

Routes live in small modules (``routes_route``, ``routes_admin``, ``routes_chat`` for the
OpenAI-compatible gateway); this module wires them to one
:class:`~switchpoint.gateway.service.Service` (live router, store, metrics, and the gateway's
upstream client pool, health tracker and session pins), the error handlers and the middleware.
Creating the app does no I/O: the store and the pin store open, and the router starts loading
(on a thread), when the server starts; the upstream connections close when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from switchpoint._version import __version__
from switchpoint.config import Settings
from switchpoint.gateway import errors, routes_admin, routes_chat, routes_route
from switchpoint.gateway.chat import Gateway
from switchpoint.gateway.limits import BodyLimitMiddleware
from switchpoint.gateway.metrics import Metrics, MetricsMiddleware
from switchpoint.gateway.service import Service
from switchpoint.gateway.state import Loader, RouterState
from switchpoint.store import SQLiteStore

DESCRIPTION = """Routes each LLM request to the model minimising expected error + λ·cost.

`POST /v1/route` returns a routing decision (no provider call). `POST /v1/chat/completions` is
an OpenAI-compatible gateway: it routes (`model: "auto"`) or passes through (a catalog name),
forwards to the model's provider, retries and fails over, and logs every request. Errors always
have the shape `{"error": {"code", "message", "param"}}` (the chat route adds OpenAI's `type`):
400 `invalid_request` for a malformed body, 503 `router_not_ready` while the weights load.
"""


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    store: SQLiteStore | None = None,
    provider_env: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the ASGI app. ``loader`` builds routers (default: the bundled/configured weights);
    ``store`` defaults to SQLite in ``settings.data_dir``; ``provider_env`` is where upstream
    API keys are read (default: the process environment, at each call)."""
    state = RouterState(settings, loader)
    store = store or SQLiteStore(settings.db_path, synchronous=settings.store.synchronous)
    metrics = Metrics()
    service = Service(state=state, store=store, metrics=metrics,
                      gateway=Gateway(settings, env=provider_env, metrics=metrics))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.store.open()
        service.gateway.open(settings.data_dir)
        state.start()
        try:
            yield
        finally:
            await service.gateway.aclose()
            service.store.close()

    app = FastAPI(title="switchpoint", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.service = service
    errors.install(app)
    app.include_router(routes_route.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_admin.router)
    app.add_middleware(BodyLimitMiddleware, limit=lambda: state.settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)  # outermost: sees every answer
    return app
