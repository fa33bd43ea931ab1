"""Service routes: health, the model list, metrics, stats, policy swap and reload.

``GET /health`` answers 200 with ``ready: true`` once the router is loaded and 503 with
``ready: false`` before (or if loading failed), so a load balancer's probe can use the status
alone. The admin routes (``/v1/router/...``) need ``Authorization: Bearer <token>`` when the
config names ``admin_token_env`` (see :mod:`switchpoint.gateway.auth`); without it they are open,
so keep the default loopback bind or put a proxy in front.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from switchpoint._version import __version__
from switchpoint.config import ConfigError
from switchpoint.errors import InvalidInputError, WeightsError
from switchpoint.gateway.auth import ADMIN
from switchpoint.gateway.errors import ApiError
from switchpoint.gateway.schemas import (
    ERROR_RESPONSES,
    HealthResponse,
    ModelList,
    StatsResponse,
    SwapResponse,
)
from switchpoint.gateway.service import get_service
from switchpoint.gateway.state import Live, policy_choices, restart_keys

router = APIRouter()
AUTO_MODEL = "auto"


@router.get("/health", response_model=HealthResponse, tags=["service"],
            responses={503: {"model": HealthResponse, "description": "Not ready yet."}},
            summary="Readiness: 200 when the router is loaded, 503 before")
async def health(request: Request) -> JSONResponse:
    state = get_service(request).state
    live = state.peek()
    status = "ready" if live else ("failed" if state.error else "loading")
    body = HealthResponse(
        status=status, ready=live is not None,
        weights_id=live.weights_id if live else None,
        policy=live.policy if live else None,
        models=live.router.models if live else [],
        uptime_seconds=round(get_service(request).metrics.uptime, 3),
        version=__version__, error=state.error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if live else 503)


@router.get("/v1/models", response_model=ModelList, tags=["service"],
            responses={503: ERROR_RESPONSES[503]},
            summary="The routable models, OpenAI list format, with 'auto' first")
async def models(request: Request) -> dict[str, Any]:
    live = get_service(request).state.live()
    created = int(live.loaded_at)
    data = [{"id": AUTO_MODEL, "object": "model", "created": created, "owned_by": "switchpoint"}]
    configured = live.settings.models is not None
    for card in live.router.catalog.cards:
        data.append({"id": card.name, "object": "model", "created": created,
                     "owned_by": card.provider if configured else "switchpoint"})
    return {"object": "list", "data": data}


@router.get("/metrics", response_class=PlainTextResponse, tags=["service"],
            summary="Prometheus metrics (text exposition format)")
async def metrics(request: Request) -> PlainTextResponse:
    service = get_service(request)
    return PlainTextResponse(service.metrics.render(service.state.ready),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/router/stats", dependencies=ADMIN, response_model=StatsResponse, tags=["admin"],
            summary="Decisions by model, policy and cluster, and the gateway's requests, "
                    "escalations, tokens and cost, from the logs")
async def stats(request: Request) -> dict[str, Any]:
    service = get_service(request)
    live = service.state.peek()
    weights_id = live.weights_id if live else None
    counts = await run_in_threadpool(service.store.decision_stats, weights_id)
    requests = await run_in_threadpool(service.store.request_stats)
    return {**counts, "weights_id": weights_id, "policy": live.policy if live else None,
            "requests": requests}


@router.post("/v1/router/policy/{name}", dependencies=ADMIN, response_model=SwapResponse,
             tags=["admin"],
             responses=ERROR_RESPONSES,
             summary="Swap the routing policy at run time (requests in flight finish on the "
                     "old one)")
async def swap_policy(name: str, request: Request) -> dict[str, Any]:
    state = get_service(request).state
    live = state.live()
    choices = policy_choices(live.settings)
    if name not in choices:
        raise ApiError.invalid("name", f"name: unknown policy {name!r}; choose one of "
                                       f"{', '.join(choices)} (or add it under policies: in "
                                       "the config)")
    old, new, ms = await run_in_threadpool(_guarded, state.swap_policy, name)
    return _swapped(old, new, ms)


@router.post("/v1/router/reload", dependencies=ADMIN, response_model=SwapResponse, tags=["admin"],
             responses=ERROR_RESPONSES,
             summary="Re-read the config file and the weights, then swap them in without "
                     "dropping requests")
async def reload(request: Request) -> dict[str, Any]:
    state = get_service(request).state
    state.live()
    old, new, ms = await run_in_threadpool(_guarded, state.reload)
    return _swapped(old, new, ms)


def _guarded(action: Any, *args: Any) -> tuple[Live, Live, float]:
    """Run a swap; a bad config or bad weights is the caller's 400 and leaves the old router."""
    try:
        result: tuple[Live, Live, float] = action(*args)
    except ConfigError as exc:
        raise ApiError(400, "invalid_config", str(exc), exc.key) from None
    except WeightsError as exc:
        raise ApiError(400, "invalid_config", f"weights: {exc}", "weights") from None
    except InvalidInputError as exc:
        raise ApiError(400, "invalid_config", str(exc), exc.field) from None
    return result


def _swapped(old: Live, new: Live, ms: float) -> dict[str, Any]:
    return {"policy": new.policy, "weights_id": new.weights_id, "models": new.router.models,
            "previous_policy": old.policy, "previous_weights_id": old.weights_id,
            "load_ms": round(ms, 1), "restart_required": restart_keys(old.settings, new.settings)}
