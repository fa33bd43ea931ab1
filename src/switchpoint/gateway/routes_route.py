"""``POST /v1/route``: seed 2's routing decision, no provider call.

The body is parsed and validated by :class:`RouteRequest` (any malformed body is a 400 naming the
field), the router runs on a worker thread (embedding is CPU work that must not hold the event
loop), and the decision is appended to the store; the answer goes out once the record is
committed, so an acknowledged decision survives a crash.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from switchpoint.decision import RoutingDecision
from switchpoint.gateway.accounting import decision_record
from switchpoint.gateway.errors import ApiError, from_validation
from switchpoint.gateway.schemas import ERROR_RESPONSES, RouteRequest, RouteResponse
from switchpoint.gateway.service import get_service
from switchpoint.store import StoreError

log = logging.getLogger("switchpoint.gateway")
router = APIRouter(tags=["routing"])
_FIELDS = list(RouteRequest.model_fields)
_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": RouteRequest.model_json_schema()}}}}


def parse_route_request(body: bytes) -> RouteRequest:
    """Validate a ``/v1/route`` body (JSON whatever the Content-Type says)."""
    try:
        request = RouteRequest.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation(list(exc.errors()), _FIELDS) from None
    if request.prompt is None and request.embedding is None:
        raise ApiError.invalid("prompt", "prompt: give a prompt or an embedding (the body has "
                                         "neither)")
    if request.prompt is not None and request.embedding is not None:
        raise ApiError.invalid("embedding", "embedding: give either a prompt or an embedding, "
                                            "not both")
    return request


def response_body(decision: RoutingDecision) -> dict[str, Any]:
    return {
        "selected_model": decision.selected_model,
        "cluster_id": decision.cluster_id,
        "expected_error": decision.expected_error,
        "cost_adjusted_score": decision.cost_adjusted_score,
        "all_scores": decision.all_scores,
        "cache_hit": decision.cache_hit,
        "usage": {"routing_ms": decision.usage.routing_ms,
                  "embedding_ms": decision.usage.embedding_ms},
        "decision_id": decision.decision_id,
    }


@router.post(
    "/v1/route",
    response_model=RouteResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_REQUEST_BODY,
    summary="Pick the model for a prompt (or a pre-computed embedding)",
    description="Returns the model the router would pick, with every candidate's score. No "
                "provider call is made. The decision is logged (see /v1/router/stats).",
)
async def route(request: Request) -> JSONResponse:
    service = get_service(request)
    body = parse_route_request(await request.body())
    live = service.state.live()
    decision = await run_in_threadpool(
        live.router.route, body.prompt, body.available_models, body.cost_weight,
        embedding=body.embedding)
    try:
        await asyncio.wrap_future(service.store.append(decision_record(decision, live)))
    except StoreError as exc:  # the decision stands; the log and the metric say what was lost
        service.metrics.observe_store_error()
        log.error("decision %s not logged: %s", decision.decision_id, exc)
    service.metrics.observe_decision(decision.selected_model, decision.cache_hit)
    return JSONResponse(response_body(decision))
