"""``POST /v1/chat/completions`` (the OpenAI-compatible gateway), ``GET /v1/router/health`` and
``GET /v1/router/requests`` (the request log).

Point any OpenAI client at ``http://HOST:PORT/v1``: ``model: "auto"`` lets the router choose
among the catalog, a catalog name goes to that model (then its ``fallbacks``). The answer's
``model`` is the catalog model that answered; the ``x-switchpoint-*`` headers say how it was
chosen. Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``: 400
for a malformed body, 404 ``model_not_found`` for an unknown model, and, when no upstream
answers, the status :class:`~switchpoint.retry.FailoverError` picks (an upstream's own 4xx as
sent, 429 with ``Retry-After``, 502, 503 or 504).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from switchpoint.gateway.auth import ADMIN
from switchpoint.gateway.chat import ChatError, parse_chat_request
from switchpoint.gateway.errors import ApiError
from switchpoint.gateway.schemas import (
    CHAT_ERROR_RESPONSES,
    ERROR_RESPONSES,
    ChatRequest,
    RequestLogPage,
)
from switchpoint.gateway.service import get_service

router = APIRouter()


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references inlined (they would not resolve
    inside the OpenAPI document, where the schema is embedded as is)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.removeprefix("#/$defs/")]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inlined(ChatRequest.model_json_schema())}}}}
_ANSWER: dict[int | str, dict[str, Any]] = {200: {
    "description": "An OpenAI chat.completion, or with stream: true a text/event-stream of "
                   "chat.completion.chunk events ending in data: [DONE] (or, if the stream "
                   "breaks after it started, in an error event, never a clean end).",
    "content": {"application/json": {}, "text/event-stream": {}}}}


@router.post(
    "/v1/chat/completions",
    tags=["gateway"],
    responses={**_ANSWER, **CHAT_ERROR_RESPONSES},
    openapi_extra=_REQUEST_BODY,
    summary="OpenAI chat completions: route (model 'auto') or pass through, with failover",
    description="Forwards the request to the chosen model, retrying and escalating along the "
                "fallbacks before the first byte reaches the client. Headers: "
                "x-switchpoint-model (who answered), x-switchpoint-routed-model, "
                "x-switchpoint-cluster, x-switchpoint-expected-error, "
                "x-switchpoint-routing-ms, x-switchpoint-pin, x-switchpoint-request-id. "
                "Send x-session-id to pin a conversation; x-switchpoint-cost-weight overrides λ.",
)
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    service = get_service(request)
    try:
        body = parse_chat_request(await request.body())
        live = service.state.live()
        gateway = service.gateway
        gateway.apply(live.settings.gateway)
        plan = await gateway.plan(body, request.headers, live, started)
    except ChatError as exc:
        return exc.response()
    except ApiError as exc:  # router not ready: the same answer in OpenAI's envelope
        return ChatError(exc.status, exc.code, exc.message, exc.param, "service_unavailable"
                         if exc.status == 503 else "invalid_request_error",
                         exc.headers).response()
    return await gateway.forward(plan, service.store, live)


@router.get("/v1/router/health", dependencies=ADMIN, tags=["admin"],
            summary="Per-model health: status, circuit, success rate, latency, recent errors")
async def health(request: Request) -> dict[str, Any]:
    service = get_service(request)
    live = service.state.peek()
    return service.gateway.health_snapshot(live.router.catalog if live else None)


@router.get("/v1/router/requests", dependencies=ADMIN, response_model=RequestLogPage,
            tags=["admin"],
            responses={400: ERROR_RESPONSES[400]},
            summary="The request log, newest first, a page at a time")
async def requests(request: Request,
                   limit: int = Query(50, ge=1, le=500, description="Entries per page."),
                   cursor: int | None = Query(None, ge=0,
                                              description="next_cursor of the previous page."),
                   ) -> JSONResponse:
    service = get_service(request)
    entries, next_cursor = await run_in_threadpool(service.store.requests, limit, cursor)
    return JSONResponse({"data": entries, "next_cursor": next_cursor})
