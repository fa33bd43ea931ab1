"""Service routes: health, the model list, metrics; admin: stats, the request log, model health
(and its reset), policy swap and reload, models registered at run time (``POST
/v1/router/models``, ``DELETE /v1/router/models/{name}``: see
:meth:`Gateway.register_model <switchpoint.gateway.Gateway.register_model>`).

``GET /health`` answers 200 with ``ready: true`` once the router is loaded and 503 with
``ready: false`` before (or if loading failed), so a load balancer's probe can use the status
alone; ``disk`` says how many bytes the SQLite files in ``data_dir`` take and how many are free
there. ``GET /v1/router/stats?tenant=NAME`` gives one tenant's figures (the reports' rule says
which tenants exist). The admin routes (``/v1/router/...``) and ``/metrics`` need
``Authorization: Bearer <token>`` when the config names ``admin_token_env`` (see
:mod:`switchpoint.server.auth`); without it they are open, so keep the default loopback bind or
put a proxy in front. With a token, ``/health`` stays open but shows the weights, policy,
models, load error and disk only to a caller that carries it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from switchpoint._version import __version__
from switchpoint.config import ModelEntry
from switchpoint.gateway.live import SWAP_WAIT_S
from switchpoint.server.auth import ADMIN, CLIENT, is_admin
from switchpoint.server.bodies import parse_body, refuses_body
from switchpoint.server.context import GatewayRoute, get_service
from switchpoint.server.queries import ANY_QUERY, WHOLE, QueryCheckedRoute
from switchpoint.server.schemas import (
    CHAT_ERROR_RESPONSES,
    ERROR_RESPONSES,
    DiskUsage,
    ErrorResponse,
    HealthResponse,
    HealthSnapshot,
    ModelDeleted,
    ModelList,
    ModelObject,
    ModelRegistered,
    RequestLogPage,
    StatsResponse,
    SwapResponse,
    TenantQuery,
    inlined,
    state_unavailable,
)
from switchpoint.store.logs import DEFAULT_PAGE, MAX_PAGE
from switchpoint.store.retention import disk_usage

# /health and /metrics read only what stays in memory and on disk, and answer while the
# gateway closes; the rest reach its state (see GatewayRoute).
service = APIRouter(route_class=QueryCheckedRoute)
router = APIRouter(route_class=GatewayRoute)


@service.get("/health", response_model=HealthResponse, tags=["service"],
            responses={503: {"model": HealthResponse, "description": "Not ready yet."}},
            summary="Readiness: 200 when the router is loaded, 503 before")
async def health(request: Request) -> JSONResponse:
    service = get_service(request)
    state = service.state
    live = state.peek()
    status = "ready" if live else ("failed" if state.error else "loading")
    body = HealthResponse(status=status, ready=live is not None,
                          uptime_seconds=round(service.metrics.uptime, 3), version=__version__)
    if not is_admin(request):  # readiness only: the rest is for the operator
        return JSONResponse(body.model_dump(include=set(HealthResponse.READINESS)),
                            status_code=200 if live else 503)
    settings = service.gateway.settings
    body.weights_id = live.weights_id if live else None
    body.policy = live.policy if live else None
    body.models = live.router.models if live else []
    body.error = state.error
    body.disk = DiskUsage(**disk_usage(settings.data_dir),
                          retention_days=settings.store.retention_days)
    return JSONResponse(body.model_dump(), status_code=200 if live else 503)


@router.get("/v1/models", response_model=ModelList, tags=["gateway"], dependencies=[ANY_QUERY],
            responses={503: ERROR_RESPONSES[503]},
            summary="The routable models, OpenAI list format, with \"auto\" first")
async def models(request: Request, principal: CLIENT) -> dict[str, Any]:
    return {"object": "list", "data": get_service(request).gateway.models(principal=principal)}


@router.get("/v1/models/{model_id:path}", response_model=ModelObject, tags=["gateway"],
            dependencies=[ANY_QUERY],
            responses={403: CHAT_ERROR_RESPONSES[403], 404: CHAT_ERROR_RESPONSES[404],
                       503: ERROR_RESPONSES[503]},
            summary="One routable model, OpenAI format")
async def model(model_id: str, request: Request, principal: CLIENT) -> dict[str, Any]:
    return get_service(request).gateway.model(model_id, principal=principal)


@service.get("/metrics", dependencies=ADMIN, response_class=PlainTextResponse, tags=["service"],
            summary="Prometheus metrics (text exposition format)")
async def metrics(request: Request) -> PlainTextResponse:
    service = get_service(request)
    return PlainTextResponse(service.metrics.render(service.state.ready),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/router/stats", dependencies=ADMIN, response_model=StatsResponse, tags=["admin"],
            responses={400: ERROR_RESPONSES[400],
                       404: {"model": ErrorResponse,
                             "description": "not_found: neither the configuration nor the "
                                            "request or feedback log names this tenant."},
                       **state_unavailable("switchpoint.db")},
            summary="Decisions by model, policy and cluster, and the gateway's requests, "
                    "escalations, tokens and cost, from the logs (of one tenant with "
                    "?tenant=)")
async def stats(request: Request, tenant: TenantQuery = None) -> dict[str, Any]:
    # (a misspelt tenant is a 404 listing the known ones, as the reports')
    stats: dict[str, Any] = await run_in_threadpool(get_service(request).gateway.stats, tenant)
    return stats


#: A reload's and a policy swap's refusals: a 503 also when a change made at run time
#: held them past their wait.
_SWAP_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {"model": ErrorResponse, "description": "router_not_ready: the router is still "
                                                 "loading its weights; storage_unavailable: "
                                                 f"it waited its most ({SWAP_WAIT_S:g} s) for "
                                                 "a change made at run time (named) that "
                                                 "waits for data_dir to keep it, or (a "
                                                 "reload) keys.db could not be read (damaged, "
                                                 "or deleted while the service held keys in "
                                                 "it: restore it from a backup); the running "
                                                 "router serves on. Retry-After says when to "
                                                 "try again."}}


@router.post("/v1/router/policy/{name}", dependencies=ADMIN, response_model=SwapResponse,
             tags=["admin"],
             responses=_SWAP_ERRORS,
             summary="Swap the routing policy at run time (requests in flight finish on the "
                     "old one)")
@refuses_body
async def swap_policy(name: str, request: Request) -> dict[str, Any]:
    answer: dict[str, Any] = await run_in_threadpool(get_service(request).gateway.swap_policy,
                                                     name)
    return answer


@router.post("/v1/router/reload", dependencies=ADMIN, response_model=SwapResponse, tags=["admin"],
             responses=_SWAP_ERRORS,
             summary="Re-read the config file and the weights, then swap them in without "
                     "dropping requests")
@refuses_body
async def reload(request: Request) -> dict[str, Any]:
    answer: dict[str, Any] = await run_in_threadpool(get_service(request).gateway.reload)
    return answer


_MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "invalid_request: the card's key at fault "
                                                 "(param), as the config's rules name it."},
    404: {"model": ErrorResponse, "description": "not_found: no model of that name was "
                                                 "registered at run time."},
    409: {"model": ErrorResponse, "description": "conflict: the name is taken (by the config, "
                                                 "or a registered model), as many models are "
                                                 "registered as may be, the config lists no "
                                                 "models:, the model is the config's, or a "
                                                 "live key, a run-time experiment or a "
                                                 "registered model's fallbacks still names "
                                                 "it."}}


@router.post("/v1/router/models", dependencies=ADMIN, status_code=201,
             response_model=ModelRegistered, tags=["admin"],
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": inlined(ModelEntry.model_json_schema())}}}},
             responses={201: {"description": "The model registered, live now.",
                              "content": {"application/json": {}}},
                        **{c: r for c, r in _MODEL_ERRORS.items() if c != 404},
                        # (it writes the model to the request log's database, and waits its
                        # turn for that database's writer)
                        **state_unavailable("switchpoint.db", writes=True, queued=True,
                                            loading=True)},
             summary="Register a model at run time, as a config models: entry writes it "
                     "(live at once, kept across restarts and reloads)")
async def register_model(request: Request) -> JSONResponse:
    card = parse_body(ModelEntry, await request.body())
    answer = await run_in_threadpool(get_service(request).gateway.register_model,
                                     card.model_dump(exclude_unset=True))
    return JSONResponse(answer, status_code=201,
                        headers={"Location": f"/v1/models/{quote(card.name, safe='/')}"})


@router.delete("/v1/router/models/{name:path}", dependencies=ADMIN,
               response_model=ModelDeleted, tags=["admin"],
               # (it reads the client keys, then writes the removal as a registration
               # writes the model)
               responses={**{c: r for c, r in _MODEL_ERRORS.items() if c != 400},
                          **state_unavailable("keys.db", "switchpoint.db",
                                              writes="switchpoint.db", queued=True,
                                              loading=True)},
               summary="Unregister a model registered at run time (requests in flight finish "
                       "on the old router)")
@refuses_body
async def unregister_model(name: str, request: Request) -> dict[str, Any]:
    answer: dict[str, Any] = await run_in_threadpool(
        get_service(request).gateway.unregister_model, name)
    return answer


@router.get("/v1/router/health", dependencies=ADMIN, tags=["admin"],
            response_model=HealthSnapshot,
            summary="Per-model health: status, circuit, success rate, latency, recent errors")
async def model_health(request: Request) -> JSONResponse:
    return JSONResponse(get_service(request).gateway.health_snapshot())


@router.post("/v1/router/health/reset", dependencies=ADMIN, tags=["admin"],
             response_model=HealthSnapshot,
             summary="Forget every model's health (circuits close, waits end); the fresh "
                     "health")
@refuses_body
async def reset_model_health(request: Request) -> JSONResponse:
    """For when an upstream's trouble is fixed (a key rotated, an outage over): its model gets
    requests again now, not after its cooldown or its ``Retry-After``."""
    gateway = get_service(request).gateway
    gateway.reset_health()
    return JSONResponse(gateway.health_snapshot())


@router.get("/v1/router/requests", dependencies=ADMIN, response_model=RequestLogPage,
            tags=["admin"],
            responses={400: ERROR_RESPONSES[400]},
            summary="The request log, newest first, a page at a time")
async def requests(request: Request,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE,
                                               description="Entries per page."),
                                    WHOLE] = DEFAULT_PAGE,
                   cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1,
                                                       description="next_cursor of the "
                                                                   "previous page."),
                                     WHOLE] = None,
                   ) -> JSONResponse:
    store = get_service(request).store
    assert store is not None
    entries, next_cursor = await run_in_threadpool(store.requests, limit, cursor)
    return JSONResponse({"data": entries, "next_cursor": next_cursor})
