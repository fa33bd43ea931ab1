"""Learning from outcomes over HTTP: feedback, preference comparisons, status, experiments.

- ``POST /v1/feedback``: how an answer went, by the decision id it carried (or the prompt hash
  of its decision: the latest decision of that prompt). A gateway route:
  with ``auth: keys`` it needs the caller's client key, and a key only reaches its own tenant's
  decisions (another tenant's id is a 404, the same as an unknown one). The admin token (when
  the config names ``admin_token_env``) is taken too, for any tenant's decision: the id names
  its tenant, the feedback is that tenant's, and the answer's ``tenant`` says which (as
  ``switchpoint feedback`` does offline).
- ``POST /v1/router/preferences/compare``, ``POST /v1/router/preferences/score`` and
  ``GET /v1/router/status``: per-tenant operations. The caller's tenant is its client key's
  (``auth: keys``), else the deployment's own (``default``); the admin token (when the config
  names ``admin_token_env``) may act for any tenant by naming it (``tenant``), and sees every
  tenant's status. Without an admin token configured these routes are as open as the other
  ``/v1/router/*`` routes.
- ``GET /v1/router/experiments``, ``GET /v1/router/experiments/{name}``,
  ``POST /v1/router/experiments/{name}/promote``, and ``POST /v1/router/experiments`` and
  ``DELETE /v1/router/experiments/{name}`` (create and end an experiment at run time, see
  :meth:`Gateway.create_ab_test <switchpoint.gateway.Gateway.create_ab_test>`): admin routes.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from switchpoint.catalog import COST_UNITS_TEXT, MAX_ANSWER_COST, MAX_MODEL_NAME
from switchpoint.decision import (
    DECISION_ID_PATTERN,
    MAX_DECISION_ID,
    PROMPT_HASH_DIGITS,
    PROMPT_HASH_PATTERN,
)
from switchpoint.errors import InvalidInputError, PermissionDeniedError
from switchpoint.gateway.ab_tests import ARMS, experiment_path
from switchpoint.gateway.preferences import MAX_COMPARE_MODELS
from switchpoint.gateway.via import via_entries
from switchpoint.governance.governor import Principal
from switchpoint.learning.comment import MAX_COMMENT
from switchpoint.learning.config import NAME_RULE
from switchpoint.learning.events import DEFAULT_TENANT
from switchpoint.server.auth import ADMIN, caller_key, is_admin
from switchpoint.server.bodies import parse_body, parse_optional_body, refuses_body
from switchpoint.server.context import GatewayRoute, get_service
from switchpoint.server.header_names import VIA
from switchpoint.server.schemas import (
    ChatErrorResponse,
    CompareResponse,
    ErrorResponse,
    ExperimentList,
    ExperimentReport,
    FeedbackResponse,
    FiniteFloat,
    FiniteNumber,
    ScoreResponse,
    StatusResponse,
    TenantName,
    TenantQuery,
)

router = APIRouter(route_class=GatewayRoute)

_WHY = {400: "Malformed or invalid request (the param names the field).",
        401: "A client key (auth: keys) or the admin token is missing or wrong.",
        403: "The caller may not act for that tenant or use that model.",
        404: "Not found (for this tenant): an unknown, expired or other tenant's id, or a "
             "tenant the configuration does not name (for the status: one neither the "
             "configuration nor the request or feedback log names).",
        409: "Not possible now: the experiment has no winner yet or has ended, its name is "
             "taken, there are as many experiments as there may be, an experiment of the "
             "config is ended in the config, the blind comparison was already scored (its "
             "models revealed), or the decision has taken as many outcomes, or as many "
             "characters of comment between them, as one takes.",
        429: "rate_limit_exceeded: the requests per minute of the key or its tenant are "
             "used up (feedback, a score and a comparison each count as one; Retry-After: "
             "when one is free again); for a comparison also budget_exceeded, a budget or "
             "rate limit refusing its calls.",
        502: "No compared model answered.",
        503: "The router is still loading.",
        504: "Every compared model timed out."}


def _responses(ok: str, *codes: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    model = ChatErrorResponse if openai else ErrorResponse
    out: dict[int | str, dict[str, Any]] = {
        200: {"description": ok, "content": {"application/json": {}}}}
    for code in codes:
        out[code] = {"model": model, "description": _WHY[code]}
    return out

Quality = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]


class FeedbackRequest(BaseModel):
    """How one answer went: ``score`` in [0, 1] or ``success`` (exactly one), about the
    decision ``decision_id`` or ``prompt_hash`` names (exactly one)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"decision_id": "3f2a0c5e8b7d4a1f9e6b2c8d4f0a7e13", "score": 0.8},
        {"decision_id": "3f2a0c5e8b7d4a1f9e6b2c8d4f0a7e13", "success": False,
         "comment": "wrong unit in the answer"},
        {"prompt_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
         "score": 1.0}],
        # (exactly one names the decision: the gateway says so, naming both, when it is not)
        "oneOf": [{"required": ["decision_id"]}, {"required": ["prompt_hash"]}]})

    # (the patterns are the published contract; the gateway checks them, saying what an id
    # and a hash are; the null it may send for the one not given is refused as not given)
    decision_id: StrictStr | None = Field(
        None, min_length=1, max_length=MAX_DECISION_ID, description=(
            "The x-switchpoint-decision-id the answer carried (POST /v1/route: decision_id): "
            "lowercase hexadecimal digits; an id of any other character is a 400. Give it or "
            "prompt_hash (exactly one)."),
        json_schema_extra={"pattern": DECISION_ID_PATTERN})
    prompt_hash: StrictStr | None = Field(
        None, min_length=1, max_length=MAX_DECISION_ID, description=(
            "In place of decision_id: the SHA-256 of the prompt a decision routed on (the "
            "library's decision.prompt_hash, 64 lowercase hexadecimal digits). It names the "
            "latest decision of that prompt the service remembers for the caller's tenant "
            "(the answer's decision_id says which), as a decision id is remembered, across "
            "restarts and reloads; 404 decision_not_found when there is none."),
        json_schema_extra={"pattern": PROMPT_HASH_PATTERN, "minLength": PROMPT_HASH_DIGITS,
                           "maxLength": PROMPT_HASH_DIGITS})
    score: Quality | None = Field(None, description="Quality of the answer, 0 (worst) to 1.")
    success: StrictBool | None = Field(None, description="Whether the answer did the job.")
    model: StrictStr | None = Field(None, min_length=1, max_length=MAX_MODEL_NAME, description=(
        "The model the feedback is about (default: the one that answered)."))
    # (its bound is published; the gateway checks it, by the rule the library's and the
    # command line's comment keep, with what else a comment may not hold)
    comment: StrictStr | None = Field(None, json_schema_extra={"maxLength": MAX_COMMENT})
    cost: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0,
                                 le=MAX_ANSWER_COST)] | None = Field(
        None, description=f"What the answer cost, {COST_UNITS_TEXT} (the answer's cost_unit "
                          "says which): teaches the model's cost on this kind of prompt. With "
                          "catalog prices it may be left out: the gateway's own accounting of "
                          "the answer is used (cost_from says which).")


class CompareRequest(BaseModel):
    """One prompt (or conversation) for several models at once."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "Summarise the attached contract in three bullet points.",
         "models": ["cheap", "good"]}]})

    prompt: StrictStr | None = Field(None, min_length=1)
    messages: list[dict[str, Any]] | None = Field(None, min_length=1)
    models: list[StrictStr] | None = Field(None, min_length=2, max_length=MAX_COMPARE_MODELS,
                                           description="2 to 6 catalog models (default: the "
                                                       "ones the caller may use that auto may "
                                                       "choose, if at most six; a model with "
                                                       "auto: false is compared only when "
                                                       "named).")
    blind: StrictBool = Field(True, description="Hide which model wrote which answer until "
                                                "they are scored.")
    max_tokens: StrictInt | None = Field(None, ge=1, le=1_000_000)
    temperature: FiniteFloat | None = Field(None, ge=0, le=2)
    tenant: TenantName | None = Field(None, description="Act for this tenant (admin token).")


class ScoreRequest(BaseModel):
    """Scores for a comparison's answers, by label (or model, when it is not blind): ties and
    partial scores are fine. A blind comparison takes one score (its answer reveals the
    models); for one that is not blind, a repeat replaces the scores it names."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"compare_id": "9c1e5d7a2b4f4e0c8a6d3b1f7e9c2a40", "scores": {"A": 0.9, "B": 0.4}}]})

    # A bad score names its label (scores.A), as an unknown label is named.
    keyed_fields: ClassVar[frozenset[str]] = frozenset({"scores"})

    # (the pattern is the published contract; the gateway checks it, saying what an id is)
    compare_id: StrictStr = Field(min_length=1, max_length=MAX_DECISION_ID, description=(
        "The compare_id POST /v1/router/preferences/compare answered with: lowercase "
        "hexadecimal digits; an id of any other character is a 400."),
        json_schema_extra={"pattern": DECISION_ID_PATTERN})
    scores: dict[StrictStr, Quality] = Field(min_length=1, max_length=MAX_COMPARE_MODELS)
    tenant: TenantName | None = Field(None, description="Act for this tenant (admin token).")


Strategy = StrictStr | dict[StrictStr, Any]


class ExperimentCreate(BaseModel):
    """An experiment made at run time: two strategies and B's share of the traffic, or arms
    as the config gives them (see Gateway.create_ab_test)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "quality-vs-cost", "strategy_a": "cost_optimized",
         "strategy_b": "quality_first", "split": 0.3},
        {"name": "neighbours", "tenants": ["acme"], "min_n": 50,
         "arms": {"control": {}, "knn": {"policy": "knn", "weight": 0.5}}}]})

    # A bad arm names its path (arms.q.weight), as the experiment's own checks name it.
    keyed_fields: ClassVar[frozenset[str]] = ARMS

    name: StrictStr = Field(description=f"{NAME_RULE}; not the name "
                                        "of another experiment (of the config, or made at run "
                                        "time and kept, running or ended).")
    strategy_a: Strategy | None = Field(None, description=(
        "Arm a: \"cost_optimized\" (the configured routing; the default), \"quality_first\" "
        "(λ 0) or an object of policy, cost_weight and models."))
    strategy_b: Strategy | None = Field(None, description=(
        "Arm b, as strategy_a (default \"quality_first\")."))
    split: FiniteNumber | None = Field(None, description="B's share of the traffic, between "
                                                         "0 and 1, neither included "
                                                         "(default 0.5).")
    arms: dict[StrictStr, dict[StrictStr, Any]] | None = Field(None, description=(
        "Instead of the three above: arms as the config gives them, name: {weight, policy, "
        "cost_weight, models}."))
    tenants: list[StrictStr] | None = Field(None, description="Who takes part (default: every "
                                                              "caller; default is requests "
                                                              "without a tenant).")
    min_n: StrictInt | None = Field(None, description="Scored decisions each arm needs before "
                                                      "a winner is named (default 30).")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arm: StrictStr | None = Field(None, min_length=1, max_length=64, description=(
        "The arm to promote (default: the winner; 409 while there is none)."))


Caller = tuple[Principal | None, bool]


async def caller(request: Request) -> Caller:
    """Who calls a per-tenant operation: ``(None, True)`` for the admin, else the client key's
    principal (None without keys). Raises the 401 of a missing or wrong key, so it runs before
    the body is read: a caller who may not use the route learns nothing of what it checks."""
    settings = get_service(request).gateway.settings
    explicit_admin = settings.admin_token is not None and is_admin(request)
    if explicit_admin or (settings.auth != "keys" and is_admin(request)):
        return None, True
    return await caller_key(request), False


def tenant_caller(request: Request, named: str | None, who: Caller
                  ) -> tuple[Principal | None, bool]:
    """Who a per-tenant operation acts for, and whether the caller is an admin. The admin
    token (a client key is then not needed) may name any configured tenant; a client key acts
    for its own; without keys the deployment's own tenant. ``who``: :func:`caller`'s answer
    (a dependency of each route, so that it runs before the body is read)."""
    gateway = get_service(request).gateway
    settings = gateway.settings
    principal, admin = who
    if admin:
        if named is None or named == DEFAULT_TENANT:
            return None, True
        return gateway.governor.principal(settings, tenant=named), True
    mine = principal.tenant if principal is not None else DEFAULT_TENANT
    if named is not None and named != mine:
        raise PermissionDeniedError("tenant: acting for another tenant needs the admin token; "
                                    "leave tenant out to act for your own", param="tenant")
    return principal, False


@router.post("/v1/feedback", tags=["learning"], response_model=FeedbackResponse,
             responses=_responses("What the outcome did.", 400, 401, 404, 409, 429, 503,
                                  openai=True),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": FeedbackRequest.model_json_schema()}}}},
             summary="Report how an answer went (teaches routing for the decision's tenant)",
             description="decision_id is what the answer carried; prompt_hash (exactly one "
                         "of them) names the latest decision routed on that prompt instead. "
                         "For a routed (auto) answer "
                         "the outcome teaches the tenant's learned router and its memory; for "
                         "a request that named its model it is a quality observation of that "
                         "model (kind: model, teaches_routing: false). A repeat replaces the "
                         "earlier outcome (replaced: true). A client key reaches its own "
                         "tenant's decisions; the admin token any tenant's, the feedback "
                         "going to the decision's own tenant (tenant says which). 404 "
                         "decision_not_found for an unknown, forgotten or (for a client key) "
                         "other tenant's id.")
async def feedback(request: Request, who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
    # The admin's feedback is trusted code's: about any tenant's decision, kept as that
    # tenant's (no principal: the lookup is not scoped to a tenant).
    principal, _ = who
    body = parse_body(FeedbackRequest, await request.body())
    gateway = get_service(request).gateway
    try:
        result = await gateway.areport_outcome(body.decision_id, body.score, body.success,
                                               model=body.model, comment=body.comment,
                                               cost=body.cost, principal=principal,
                                               prompt_hash=body.prompt_hash)
    except InvalidInputError as exc:
        if exc.field != "quality_score":
            raise
        # The library's argument is quality_score (a Python bool); this request's are score
        # and JSON's true/false.
        reason = exc.reason.replace("quality_score", "score").replace("True/False", "true/false")
        raise InvalidInputError("score", reason) from None
    return JSONResponse(result.to_dict())


@router.post("/v1/router/preferences/compare", tags=["learning"], response_model=CompareResponse,
             responses=_responses("Blind-labelled answers and the compare id.", 400, 401,
                                  403, 404, 429, 502, 503, 504),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": CompareRequest.model_json_schema()}}}},
             summary="Ask 2-6 models the same prompt at once; answers come back blind-labelled")
async def compare(request: Request, who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
    body = parse_body(CompareRequest, await request.body())
    principal, _ = tenant_caller(request, body.tenant, who)
    params: dict[str, Any] = {}
    if body.max_tokens is not None:
        params["max_tokens"] = body.max_tokens
    if body.temperature is not None:
        params["temperature"] = body.temperature
    gateway = get_service(request).gateway
    result = await gateway.acompare(body.messages, body.models, prompt=body.prompt,
                                    blind=body.blind, principal=principal, measured=True,
                                    # (bounded by the guard that refuses a loop, as chat's)
                                    via=via_entries(request.headers.getlist(VIA)), **params)
    return JSONResponse(result)


@router.post("/v1/router/preferences/score", tags=["learning"], response_model=ScoreResponse,
             responses=_responses("What the scores taught, models revealed.", 400, 401, 403,
                                  404, 409, 429, 503),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ScoreRequest.model_json_schema()}}}},
             summary="Score a comparison's answers (0..1 each); teaches the tenant's memory")
async def score(request: Request, who: Annotated[Caller, Depends(caller)]) -> JSONResponse:
    body = parse_body(ScoreRequest, await request.body())
    principal, _ = tenant_caller(request, body.tenant, who)
    gateway = get_service(request).gateway
    return JSONResponse(await gateway.ascore(body.compare_id, body.scores,
                                             principal=principal))


@router.get("/v1/router/status", tags=["learning"], response_model=StatusResponse,
            responses=_responses("Per tenant: memory, outcomes, model quality.", 400, 401,
                                 403, 404, 503),
            summary="What each tenant has taught: memory examples, per-model coverage, cold "
                    "or warm, outcomes, feedback per model")
async def status(request: Request, who: Annotated[Caller, Depends(caller)],
                 tenant: TenantQuery = None
                 ) -> JSONResponse:
    # The admin reads any tenant the gateway knows (the config, the request or feedback log:
    # the reports' rule, which learning_status applies), acting for none; a client key its
    # own tenant's (the gateway's rule for a caller); a client without keys the default's.
    gateway = get_service(request).gateway
    principal, admin = who if who[1] else tenant_caller(request, tenant, who)
    if tenant is None and not admin and principal is None:
        tenant = DEFAULT_TENANT
    return JSONResponse(await run_in_threadpool(lambda: gateway.learning_status(
        None if tenant is None else [tenant], principal=principal)))


@router.get("/v1/router/experiments", tags=["learning"], dependencies=ADMIN,
            response_model=ExperimentList,
            responses=_responses("Every experiment's report.", 401, 503),
            summary="The configured experiments and how their arms do")
async def experiments(request: Request) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse({"data": await run_in_threadpool(gateway.experiment_reports)})


@router.post("/v1/router/experiments", tags=["learning"], dependencies=ADMIN,
             status_code=201, response_model=ExperimentReport,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": ExperimentCreate.model_json_schema()}}}},
             responses={201: {"description": "The new experiment's report.",
                              "content": {"application/json": {}}},
                        **{code: {"model": ErrorResponse, "description": _WHY[code]}
                           for code in (400, 401, 409, 503)}},
             summary="Create an experiment at run time (kept across restarts and reloads)")
async def create_experiment(request: Request) -> JSONResponse:
    body = parse_body(ExperimentCreate, await request.body())
    gateway = get_service(request).gateway

    def create() -> dict[str, Any]:
        made = gateway.create_ab_test(body.name, body.strategy_a, body.strategy_b, body.split,
                                      arms=body.arms, tenants=body.tenants, min_n=body.min_n)
        return gateway.experiment_report(made.name)

    report = await run_in_threadpool(create)
    return JSONResponse(report, status_code=201,
                        headers={"Location": experiment_path(body.name)})


@router.delete("/v1/router/experiments/{name}", tags=["learning"], dependencies=ADMIN,
               response_model=ExperimentReport,
               responses=_responses("The ended experiment's report (ended_at set).", 401, 404,
                                    409, 503),
               summary="End an experiment created at run time (its decisions and report "
                       "stay)")
@refuses_body
async def end_experiment(name: str, request: Request) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(gateway.end_ab_test, name))


@router.get("/v1/router/experiments/{name}", tags=["learning"], dependencies=ADMIN,
            response_model=ExperimentReport,
            responses=_responses("Per arm: n, mean quality and 95% interval, mean cost; the "
                                 "winner once there is one.", 401, 404, 503),
            summary="How each arm of an experiment does, and its winner")
async def experiment(name: str, request: Request) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(gateway.experiment_report, name))


@router.post("/v1/router/experiments/{name}/promote", tags=["learning"], dependencies=ADMIN,
             response_model=ExperimentReport,
             responses=_responses("The experiment's report, with its promoted arm.", 400,
                                  401, 404, 409, 503),
             summary="Send all of an experiment's traffic to its winner (or a named arm)")
async def promote(name: str, request: Request) -> JSONResponse:
    body = parse_optional_body(PromoteRequest, await request.body())
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(gateway.promote, name, body.arm))
