"""``POST /v1/route``: the routing decision for a prompt, no provider call.

The body is validated by :class:`RouteRequest` (any malformed body is a 400 naming the field);
the engine routes on a worker thread (embedding is CPU work that must not hold the event loop)
and answers once the decision's log entry is committed, so an acknowledged decision survives a
crash.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from switchpoint.decision import GOVERNANCE_FIELDS, LEARNING_FIELDS, ROUTE_FIELDS
from switchpoint.errors import InvalidInputError
from switchpoint.governance.governor import Governor
from switchpoint.server.auth import CLIENT
from switchpoint.server.bodies import parse_body
from switchpoint.server.context import GatewayRoute, get_service
from switchpoint.server.header_names import COST_WEIGHT, MODELS
from switchpoint.server.schemas import ROUTE_ERROR_RESPONSES, RouteRequest, RouteResponse

router = APIRouter(tags=["routing"], route_class=GatewayRoute)
# The chat door's headers whose value this route takes as a body field: refused, naming the
# field, not ignored (a decision made with another λ or other models than the caller meant).
_IN_THE_BODY = {COST_WEIGHT: "cost_weight", MODELS: "available_models"}
_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": RouteRequest.model_json_schema()}}}}


@router.post(
    "/v1/route",
    response_model=RouteResponse,
    responses=ROUTE_ERROR_RESPONSES,
    openapi_extra=_REQUEST_BODY,
    summary="Pick the model for a prompt (or a pre-computed embedding)",
    description="Returns the model the router would pick, with every candidate's score. No "
                "provider call is made. The decision is logged (see /v1/router/stats). With "
                "client keys (auth: keys) it needs Authorization: Bearer sp-...; with "
                "governance configured the answer adds the SLA, escalation and budget "
                "fields; with a tenant memory, an experiment or exploration configured, "
                "source, memory_fallback, experiment and arm. POST /v1/feedback with its "
                "decision_id (or, for a decision routed on a prompt, its prompt_hash) teaches "
                "the router. λ and the candidates are given in the body "
                "(cost_weight, available_models): the chat route's x-switchpoint-cost-weight "
                "and x-switchpoint-models headers are a 400 here. prefer_healthy, "
                "auto_scale, estimate_tokens and ab_test are the in-process gateway's "
                "route() options, with the same meaning.",
)
async def route(request: Request, principal: CLIENT) -> JSONResponse:
    for header, field in _IN_THE_BODY.items():
        if header in request.headers:
            raise InvalidInputError(header, f"is read by POST /v1/chat/completions (for "
                                            f"clients that cannot add body fields); POST "
                                            f"/v1/route takes it in its body: send "
                                            f'"{field}" in the JSON body instead')
    body = parse_body(RouteRequest, await request.body())  # JSON whatever its Content-Type
    decision = await get_service(request).gateway.aroute(
        body.prompt, body.available_models, body.cost_weight, embedding=body.embedding,
        principal=principal, measured=True, prefer_healthy=body.prefer_healthy,
        auto_scale=body.auto_scale, estimate_tokens=body.estimate_tokens, ab_test=body.ab_test)
    gateway = get_service(request).gateway
    answer = decision.to_dict(ROUTE_FIELDS)
    if decision.prompt_hash:  # (routed on a prompt, not on an embedding alone)
        answer["prompt_hash"] = decision.prompt_hash
    fields: tuple[str, ...] = ()
    if Governor.governs(gateway.settings):
        fields += GOVERNANCE_FIELDS
    learning = gateway.state.live().learning
    if learning is not None and learning.configured:
        fields += LEARNING_FIELDS
    if fields:
        answer.update(decision.to_dict(fields))
    return JSONResponse(answer)
