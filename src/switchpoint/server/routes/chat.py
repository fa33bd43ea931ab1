"""``POST /v1/chat/completions``: the OpenAI-compatible gateway's HTTP door.

Point any OpenAI client at ``http://HOST:PORT/v1``: ``model: "auto"`` lets the router choose
among the catalog, a catalog name goes to that model (then its ``fallbacks``). This module only
translates: headers and body in (:class:`~switchpoint.gateway.planning.ChatCall`), the
engine's answer out (JSON, or server-sent events), with the ``x-switchpoint-*`` headers saying
how it was chosen. Errors use OpenAI's envelope (:mod:`switchpoint.server.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from switchpoint._messages import json_quoted
from switchpoint._numbers import TOO_SMALL, number_text, too_small
from switchpoint.catalog import usd_figure
from switchpoint.decision import check_cost_weight
from switchpoint.errors import GatewayError, InvalidInputError, SwitchpointError
from switchpoint.gateway.parsing import ChatRequest, listed_models, parse_chat_body
from switchpoint.gateway.planning import ChatCall
from switchpoint.gateway.rendering import render_off_loop
from switchpoint.gateway.results import CallInfo, ChatCompletion, ChatStream
from switchpoint.gateway.via import via_entries
from switchpoint.governance.governor import Principal
from switchpoint.server.auth import CLIENT
from switchpoint.server.context import GatewayRoute, get_service
from switchpoint.server.errors import answer_for, log_store_failure
from switchpoint.server.header_names import COST_WEIGHT, MODELS, SESSION, VIA
from switchpoint.server.header_text import shown_text, utf8_text
from switchpoint.server.queries import ANY_QUERY, once
from switchpoint.server.schemas import CHAT_ERROR_RESPONSES, inlined
from switchpoint.server.streaming import SSEResponse, sse_body

router = APIRouter(route_class=GatewayRoute)

# Characters of the router's reasoning that HTTP headers (latin-1) cannot carry.
_ASCII = str.maketrans({"λ": "lambda", "×": "x", "·": "*", "−": "-", "≤": "<=", "≥": ">=",
                        "—": "-", "–": "-", "’": "'"})
# ASCII control characters, which no header value may hold.
_CONTROLS = str.maketrans({c: " " for c in [*range(32), 127]})

# What writes an answer as JSON (its render), as FastAPI's answers are written.
_JSON = JSONResponse(None)

_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": inlined(ChatRequest.model_json_schema())}}}}
_ANSWER: dict[int | str, dict[str, Any]] = {200: {
    "description": "An OpenAI chat.completion, or with stream: true a text/event-stream of "
                   "chat.completion.chunk events ending in data: [DONE] (or, if the stream "
                   "breaks after it started, in an error event, never a clean end).",
    "content": {"application/json": {}, "text/event-stream": {}}}}


@router.post(
    "/v1/chat/completions",
    tags=["gateway"],
    dependencies=[ANY_QUERY],  # as OpenAI's API: SDKs and proxies add their own
    responses={**_ANSWER, **CHAT_ERROR_RESPONSES},
    openapi_extra=_REQUEST_BODY,
    summary="OpenAI chat completions: route (model \"auto\") or pass through, with failover",
    description="Forwards the request to the chosen model, retrying and escalating along the "
                "fallbacks before the first byte reaches the client. Headers: "
                "x-switchpoint-model (who answered), x-switchpoint-routed-model, "
                "x-switchpoint-cluster, x-switchpoint-expected-error, x-switchpoint-cost, "
                "x-switchpoint-routing-ms, x-switchpoint-pin, x-switchpoint-request-id, "
                "x-switchpoint-decision-id (what POST /v1/feedback names: the routing "
                "decision's id, or for a named model the request id), x-switchpoint-source "
                "and x-switchpoint-memory-fallback (who chose the model: the tenant's memory, "
                "exploration, or the router and why), x-switchpoint-experiment and "
                "x-switchpoint-arm, x-switchpoint-charged (what the caller's budgets "
                "were charged), x-switchpoint-reasoning (why this model: the router's "
                "reasoning, and, when the model that answered is not the one named or, for "
                "\"auto\", routed first, why: what the named model lacks, or how its tries "
                "ended before the request fell back; ASCII, at most 1000 characters). Send "
                "x-session-id to pin a conversation; x-switchpoint-cost-weight overrides λ; "
                "x-switchpoint-models (comma-separated, each model once, no item empty) narrows "
                "the models \"auto\" may choose (beside a named model it must list that "
                "model, and narrows its fallbacks).",
)
async def chat_completions(request: Request, principal: CLIENT) -> Response:
    started = time.perf_counter()
    gateway = get_service(request).gateway
    try:
        call = chat_call(parse_chat_body(await request.body()), request, principal)
        plan, live = await gateway.plan(call, started=started)
        result = await _unless_disconnected(request, gateway.execute(plan, live))
    except SwitchpointError as exc:
        log_store_failure(request, exc)
        info = exc.info if isinstance(exc, GatewayError) else None
        return answer_for(exc).response(openai=True, headers=info_headers(info))
    if result is None:  # the client left; the engine logged it as client_closed
        return Response(status_code=499)
    if isinstance(result, ChatCompletion):
        # (written on a worker thread when large, as it was read: the same bytes either way)
        return Response(await render_off_loop(dict(result), _JSON.render),
                        media_type=_JSON.media_type, headers=info_headers(result.switchpoint))
    return _stream_response(result)


def chat_call(body: dict[str, Any], request: Request,
              principal: Principal | None = None) -> ChatCall:
    """The plain values of one HTTP chat request (``principal``: the client key's caller)."""
    models = _text(request, MODELS)
    host = request.client.host if request.client is not None else None
    return ChatCall(
        body=body,
        session_id=_text(request, SESSION),
        caller=principal.key_id if principal is not None and principal.key_id else host,
        tenant=principal.tenant if principal is not None else None,
        key_id=principal.key_id if principal is not None else None,
        cost_weight=_cost_weight(_once(request, COST_WEIGHT)),
        # (a head is bounded, so is the list it holds)
        models=None if models is None else listed_models(models, MODELS),
        models_field=MODELS, session_field=SESSION,
        # (the intermediaries it passed, which its upstream requests list before this gateway;
        # bounded by the guard that refuses a loop: switchpoint.server.loops)
        via=via_entries(request.headers.getlist(VIA)))


def _once(request: Request, name: str) -> str | None:
    """The header ``name``, which a request gives at most once (:func:`once`)."""
    return once(name, request.headers.getlist(name))


def _text(request: Request, name: str) -> str | None:
    """The header ``name`` (:func:`_once`) that carries names (a model's, a session's): its
    bytes read as UTF-8 (:func:`utf8_text`), as every client writes text that is not ASCII;
    bytes that are not UTF-8 are refused, naming the header."""
    value = _once(request, name)
    if value is None:
        return value
    try:
        return utf8_text(value)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(name, f"is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                      "send names that are not ASCII in UTF-8") from None


def _cost_weight(raw: str | None) -> float | None:
    """The header's λ, a number read as the command line reads one (:func:`number_text`)."""
    if raw is None:
        return None
    value = number_text(raw)
    if value is None:
        shown = json_quoted(shown_text(raw), 40)
        raise InvalidInputError(COST_WEIGHT, f"{shown} {TOO_SMALL}" if too_small(raw)
                                else "must be a number >= 0 in ASCII digits, such as 0.5 or "
                                     f"1e3, got {shown}")
    # Checked here, before planning, so a pinned session (which skips the router) is refused
    # the same bad value as any other request.
    return check_cost_weight(value, COST_WEIGHT, written=raw)


async def _unless_disconnected(request: Request,
                               work: Any) -> ChatCompletion | ChatStream | None:
    """Run ``work``; if the client disconnects first, cancel it (the upstream call with it)."""
    task: asyncio.Task[ChatCompletion | ChatStream] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, SwitchpointError):
        await task
    return None


async def _disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _stream_response(stream: ChatStream) -> SSEResponse:
    headers = info_headers(stream.switchpoint)
    headers["cache-control"] = "no-cache"
    return SSEResponse(sse_body(stream), headers=headers)


def info_headers(info: CallInfo | None) -> dict[str, str]:
    """The ``x-switchpoint-*`` headers for what the engine says about a request."""
    if info is None:
        return {}
    out = {"x-switchpoint-request-id": info.request_id,
           "x-switchpoint-routing-ms": f"{info.planning_ms:.3f}",
           "x-switchpoint-pin": info.pin_state}
    if info.routed_model is not None:
        out["x-switchpoint-routed-model"] = info.routed_model
    if info.model is not None:
        out["x-switchpoint-model"] = info.model
    if info.cost_usd is not None:
        out["x-switchpoint-cost"] = usd_figure(info.cost_usd)
    if info.charged_usd is not None:
        out["x-switchpoint-charged"] = usd_figure(info.charged_usd)
    out["x-switchpoint-decision-id"] = info.decision_id
    d = info.decision
    if d is not None:
        out["x-switchpoint-cluster"] = str(d.cluster_id)
        out["x-switchpoint-expected-error"] = f"{d.expected_error:.6f}"
        out["x-switchpoint-source"] = d.source
        if d.memory_fallback:
            out["x-switchpoint-memory-fallback"] = d.memory_fallback
        if d.experiment:
            out["x-switchpoint-experiment"] = header_text(d.experiment, 100)
            out["x-switchpoint-arm"] = header_text(d.arm, 100)
    if info.reasoning:
        out["x-switchpoint-reasoning"] = header_text(" ".join(info.reasoning))
    return out


def header_text(text: str, limit: int = 1000) -> str:
    """``text`` as a header value: printable ASCII, one line, at most ``limit`` characters
    (a control character, which no header may carry, is a space: the reasoning may quote an
    upstream's error), never ending in a space (cut at ``limit`` after one, a value HTTP
    refuses: the answer was then never sent)."""
    text = " ".join(text.translate(_ASCII).split())
    text = text.encode("ascii", "replace").decode("ascii").translate(_CONTROLS)
    return " ".join(text.split())[:limit].rstrip()
