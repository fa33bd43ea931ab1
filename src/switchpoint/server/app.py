"""The app factory: ``create_app(settings) -> FastAPI``, a thin shell over one gateway engine.

Routes live in ``routes/`` (``route``: the routing API; ``chat``: the OpenAI-compatible
gateway; ``admin``: health, models, metrics, stats, logs, policy swap, reload; ``governance``:
client keys, budgets and cost / SLA reports; ``learning``: feedback, preference comparisons,
tenants' learning status, experiments). They share one
:class:`~switchpoint.gateway.engine.Gateway` (the live router, the request log, the upstream
client pool, health and session pins) and the app's :class:`~switchpoint.server.metrics.Metrics`.
Creating the app does no I/O: the store and the pins open, and the router starts loading on a
thread, when the server starts; the upstream connections close when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from switchpoint._version import __version__
from switchpoint.config import Settings
from switchpoint.gateway.engine import Gateway
from switchpoint.gateway.live import Loader
from switchpoint.server.auth import body_owner, document_guards
from switchpoint.server.bodies import document_no_body
from switchpoint.server.body_buffer import BodyBuffer
from switchpoint.server.context import Service
from switchpoint.server.errors import document_errors
from switchpoint.server.errors import install as install_error_handlers
from switchpoint.server.exposure import check_admin_token
from switchpoint.server.head import HeadMiddleware
from switchpoint.server.header_names import HOST, ORIGIN
from switchpoint.server.hosts import document_hosts, guards_hosts
from switchpoint.server.hosts import refusal as host_refusal
from switchpoint.server.loops import document_loops
from switchpoint.server.loops import guard as loop_guard
from switchpoint.server.metrics import Metrics, MetricsMiddleware
from switchpoint.server.middleware import (
    BodyLimitMiddleware,
    GuardMiddleware,
    document_bodies,
    header_rule,
)
from switchpoint.server.origins import document_origins
from switchpoint.server.origins import refusal as origin_refusal
from switchpoint.server.proxies import ForwardedClientMiddleware
from switchpoint.server.queries import document_queries, single_query
from switchpoint.server.routes import admin, chat, governance, learning, route
from switchpoint.server.targets import document_targets
from switchpoint.server.targets import guard as target_guard
from switchpoint.server.underscores import document_underscores
from switchpoint.server.underscores import guard as underscore_guard
from switchpoint.server.warm import warm as warm_app
from switchpoint.store import SQLiteStore

# The answer headers a browser page may read (with CORS on).
EXPOSED_HEADERS = ["x-switchpoint-model", "x-switchpoint-routed-model", "x-switchpoint-cost",
                   "x-switchpoint-request-id", "x-switchpoint-decision-id", "x-switchpoint-pin",
                   "x-switchpoint-reasoning", "x-switchpoint-source",
                   "x-switchpoint-memory-fallback", "x-switchpoint-experiment",
                   "x-switchpoint-arm", "retry-after"]

DESCRIPTION = """Routes each LLM request to the model minimising expected error + λ·cost.

`POST /v1/route` returns a routing decision (no provider call). `POST /v1/chat/completions` is
an OpenAI-compatible gateway: it routes (`model: "auto"`) or passes through (a catalog name),
forwards to the model's provider, retries and fails over, and logs every request. Errors have
the shape `{"error": {"code", "message", "param"}}` (the gateway's routes use OpenAI's
envelope, which adds `type`): 400 `invalid_request` for a malformed body, 503
`router_not_ready` while the weights load.
"""


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    store: SQLiteStore | None = None,
    provider_env: Mapping[str, str] | None = None,
    listen_host: str = "127.0.0.1",
    warm: bool = False,
) -> FastAPI:
    """Build the ASGI app. ``loader`` builds routers (default: the bundled/configured weights);
    ``store`` defaults to SQLite in ``settings.data_dir``; ``provider_env`` is where upstream
    API keys are read (default: the process environment, at each call). Raises
    :class:`~switchpoint.errors.ConfigError` when the settings name an admin token that was
    not exported (:func:`~switchpoint.server.exposure.check_admin_token`), as a reload does.

    ``listen_host`` is the address the app is served on: on loopback (the default) it answers
    only requests whose ``Host`` is ``localhost``, an IP address or a name
    ``server.allowed_hosts`` lists, and beyond it so once that setting lists names (see
    :mod:`switchpoint.server.hosts`); pass the address a server runs it on (``0.0.0.0``), or
    have a test client send ``Host: localhost``.

    The app reads ``X-Forwarded-For`` itself, from ``server.trusted_proxies`` alone (see
    :mod:`switchpoint.server.proxies`): a server running it must not (uvicorn:
    ``proxy_headers=False``, as ``switchpoint serve`` sets it), or the client is who uvicorn
    believes.

    ``warm``: build, while the weights load, what the first requests would otherwise build
    (:mod:`switchpoint.server.warm`), as ``switchpoint serve`` does."""
    check_admin_token(settings)
    cached: list[Any] = [None, frozenset()]  # [the live router seen last, its names]
    allowed_hosts = settings.server.allowed_hosts
    host_guard = guards_hosts(listen_host, allowed_hosts)

    def model_names() -> frozenset[str]:
        """The live catalog's model names, which a metric's ``model`` label takes (as it takes
        those of the catalogs that were live before: :meth:`Metrics.saw_catalog`)."""
        live = gateway.state.peek()
        if live is not cached[0]:
            cached[:] = [live, frozenset(live.router.catalog.names) if live else frozenset()]
        names: frozenset[str] = cached[1]
        return names

    metrics = Metrics(models=model_names)
    metrics.bodies = BodyBuffer(settings.server.max_body_buffer_bytes)
    gateway = Gateway(settings, loader=loader, store=store, env=provider_env, observer=metrics)
    gateway.state.vets.append(check_admin_token)
    gateway.state.on_swap(lambda live: metrics.saw_catalog(live.router.catalog.names))
    service = Service(gateway=gateway, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.start(background=True)
        if warm:  # (while the weights load)
            await warm_app(app)
        try:
            yield
        finally:
            await gateway.aclose()

    # No redirect for a path with a slash too many: Starlette's would send a 307 to the host
    # the client's Host header names; the 404 says which route was meant instead.
    # No /docs nor /redoc: FastAPI's pages load their scripts and styles from a CDN, and the
    # service reaches no network a client did not ask for (an operator offline got a blank
    # page); the document they show is GET /openapi.json, which any OpenAPI viewer opens.
    app = FastAPI(title="switchpoint", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, redirect_slashes=False, docs_url=None, redoc_url=None,
                  dependencies=[Depends(single_query)])  # a query names each once
    app.state.service = service
    install_error_handlers(app)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        """The API document, with the errors the handlers and the middleware answer."""
        if app.openapi_schema is None:
            routes = document_queries(document_no_body(document_errors(generate()), routers),
                                      routers)
            schema = document_underscores(document_targets(document_loops(document_origins(
                document_guards(document_bodies(routes), routers)))))
            app.openapi_schema = document_hosts(schema) if host_guard else schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    routers = (route.router, chat.router, admin.service, admin.router, governance.router,
               learning.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(HeadMiddleware)  # innermost: HEAD is routed as GET, answered bodiless
    # A page's request from an origin the config does not allow is refused unread (the body
    # limit outside it leaves the body unread, and the connection closes in stages); an
    # allowed origin's CORS preflight is answered outside it, by CORSMiddleware.
    app.add_middleware(GuardMiddleware, rule=partial(loop_guard, name=gateway.via_name))
    app.add_middleware(GuardMiddleware, rule=header_rule(ORIGIN, partial(
        origin_refusal, allowed=frozenset(settings.cors.allow_origins))))
    if host_guard:  # a request naming a host the service does not answer to, before its origin
        app.add_middleware(GuardMiddleware, rule=header_rule(HOST, partial(
            host_refusal, allowed=frozenset(allowed_hosts))))
    app.add_middleware(BodyLimitMiddleware,
                       limit=lambda: gateway.settings.max_request_bytes,
                       bodies=metrics.bodies, client=body_owner)
    cors = settings.cors
    if cors.allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors.allow_origins,
                           allow_methods=["GET", "POST"], allow_headers=cors.allow_headers,
                           expose_headers=EXPOSED_HEADERS, max_age=cors.max_age_s)
    paths = [str(getattr(r, "path", "")) for router in routers for r in router.routes]
    # A header the service reads, written with underscores for its dashes, which a proxy in
    # front may read as the header: refused before anything reads the request's headers.
    app.add_middleware(GuardMiddleware, rule=underscore_guard)
    # The target as the app reads it (a URL's path, its host as the Host), before its headers
    # and body: whatever server runs the app (uvicorn's own protocol hands the URL on whole);
    # a "/" written %2F only in a parameter that may hold one (a model's name).
    app.add_middleware(GuardMiddleware, rule=partial(target_guard, slashed=tuple(
        path.split("{", 1)[0] for path in paths if ":path}" in path)))
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=paths)  # sees every answer
    if settings.server.trusted_proxies:  # outermost: every other part sees the client it names
        app.add_middleware(ForwardedClientMiddleware, proxies=settings.server.proxy_networks)
    return app
