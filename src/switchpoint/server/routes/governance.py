"""Admin routes for keys, budgets and reports (``/v1/router/...``, guarded like the others).

Keys: ``POST /v1/router/keys`` makes one (the answer holds the key, shown this once),
``GET /v1/router/keys`` lists them (never a secret), ``GET /v1/router/keys/{id}`` shows one with
its budgets' state, ``POST /v1/router/keys/{id}/revoke`` (or ``DELETE``) revokes it,
``POST /v1/router/keys/{id}/rotate`` gives it a new secret. ``GET /v1/router/tenants`` and
``GET /v1/router/budgets`` show the configured tenants and every budget's state (a page at a
time); ``GET /v1/router/budget/alert`` the budget alert (its budgets a page at a time).
Reports: ``GET /v1/router/report/cost``, ``/report/savings``, ``/report/sla``,
``/report/forecast`` and ``/report/suggest``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from switchpoint._messages import one_of, people_number
from switchpoint.catalog import MAX_MODEL_NAME, MAX_TOKENS
from switchpoint.governance.budgets import MAX_BUDGET_USD, MIN_BUDGET_USD, PERIODS
from switchpoint.governance.keys import MAX_GRACE_S, MAX_KEY_NAME, NAME_SHOWN, KeySpec
from switchpoint.governance.ledger import key_account
from switchpoint.governance.reports import MAX_REQUESTS_PER_HOUR, MAX_SINCE_HOURS, SINCE_HOURS
from switchpoint.governance.settings import MAX_RPM, MAX_TPM
from switchpoint.server.auth import ADMIN
from switchpoint.server.bodies import parse_body, parse_optional_body, refuses_body
from switchpoint.server.context import GatewayRoute, get_service
from switchpoint.server.queries import NUMBER, WHOLE, number_without_0
from switchpoint.server.schemas import (
    ERROR_RESPONSES,
    BudgetAlert,
    BudgetPage,
    CostReport,
    ErrorResponse,
    FiniteFloat,
    ForecastReport,
    IssuedKey,
    KeyPage,
    KeyView,
    KeyWithBudgets,
    SavingsReport,
    SLAReport,
    SuggestionList,
    TenantList,
    TenantName,
    TenantQuery,
    state_unavailable,
)
from switchpoint.store.logs import DEFAULT_PAGE, MAX_PAGE

router = APIRouter(tags=["admin"], dependencies=ADMIN, route_class=GatewayRoute)

_JSON: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON answer.", "content": {"application/json": {}}},
    **ERROR_RESPONSES}
_REPORT: dict[int | str, dict[str, Any]] = {
    **_JSON, 404: {"model": ErrorResponse,
                   "description": "not_found: neither the configuration nor the request or "
                                  "feedback log names this tenant."}}
#: A report of the request log alone, and one that reads keys.db too (its keys' budgets or
#: records).
_LOG_REPORT = {**_REPORT, **state_unavailable("switchpoint.db")}
_KEYS_REPORT = {**_REPORT, **state_unavailable("keys.db", "switchpoint.db")}


_BY_ID: dict[int | str, dict[str, Any]] = {
    **_JSON, 404: {"model": ErrorResponse, "description": "not_found: no key has this id."}}
#: A route of one key that reads keys.db, and one that changes it.
_KEY_READ = {**_BY_ID, **state_unavailable("keys.db")}
_KEY_CHANGE = {**_BY_ID, **state_unavailable("keys.db", writes=True)}
_KEY_LIST: dict[int | str, dict[str, Any]] = {
    **_REPORT, **state_unavailable("keys.db", also=" (or, for a tenant named that holds no key, "
                                                 "the request log)")}
_CREATED: dict[int | str, dict[str, Any]] = {
    201: {"description": "The new key: `key` is the secret, shown this once."},
    **ERROR_RESPONSES, **state_unavailable("keys.db", writes=True),
    409: {"model": ErrorResponse,
          "description": "conflict (param governance.max_keys): the data_dir holds as many live "
                         "keys (neither revoked nor expired) as the config's "
                         "governance.max_keys allows; revoke keys no longer used, or raise "
                         "it."}}


class KeyCreate(BaseModel):
    """A new client key: its tenant (from the config's ``tenants:``) and what narrows it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"tenant": "acme", "budget": ["50/month"], "rpm": 60, "models": ["cheap", "auto"]}]})

    tenant: TenantName
    name: StrictStr | None = Field(
        None, max_length=MAX_KEY_NAME,
        description=f"A label only, shown in {NAME_SHOWN} (a log line names a key by its "
                    "id): two keys may share one, and nothing selects a key by it (every "
                    "route takes the key's id). Not blank, no control, invisible or "
                    "direction-changing character, nothing shaped like a credential.")
    budget: StrictStr | list[StrictStr] | None = Field(
        None, description=f'AMOUNT/PERIOD in USD, e.g. "50/month" (the period '
                          f"{one_of(PERIODS)}): 0 (no spend) or from {MIN_BUDGET_USD:g} to "
                          f"{people_number(MAX_BUDGET_USD)}.")
    rpm: StrictInt | None = Field(None, ge=1, le=MAX_RPM)
    tpm: StrictInt | None = Field(None, ge=1, le=MAX_TPM)
    models: list[StrictStr] | None = Field(None, min_length=1, max_length=256,
                                           description="Models the key may use, each "
                                                       "named as the catalog writes it; "
                                                       "\"auto\" allows routing among "
                                                       "them.")
    cost_weight: StrictFloat | StrictInt | None = Field(None, description="The key's "
                                                                          "default λ.")
    expires: StrictStr | StrictFloat | StrictInt | None = Field(
        None, description="The last day the key works as an ISO date (it expires as that "
                          "day ends, UTC), an exact ISO date-time (UTC unless it names a "
                          "zone), a duration such as 30d, or epoch seconds (a number, "
                          "1.8e9 too).")


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: FiniteFloat | StrictInt = Field(
        0, ge=0, le=MAX_GRACE_S, description="How long the old secret keeps working.")


def _spec(body: KeyCreate) -> KeySpec:
    budgets = [body.budget] if isinstance(body.budget, str) else list(body.budget or [])
    return KeySpec(tenant=body.tenant, name=body.name, budgets=budgets, rpm=body.rpm,
                   tpm=body.tpm, models=body.models, cost_weight=body.cost_weight,
                   expires=body.expires)


def _body_schema(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself (after the admin
    token is checked: see :mod:`switchpoint.server.bodies`)."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


@router.post("/v1/router/keys", status_code=201, responses=_CREATED, response_model=IssuedKey,
             openapi_extra=_body_schema(KeyCreate, required=True),
             summary="Make a client key for a tenant (shown once, stored hashed)")
async def create_key(request: Request) -> JSONResponse:
    body = parse_body(KeyCreate, await request.body())
    gateway = get_service(request).gateway
    settings = gateway.settings
    catalog = [m.name for m in settings.models] if settings.models is not None else None
    tenant = settings.tenants.get(body.tenant) if isinstance(body.tenant, str) else None
    spec = _spec(body).checked(list(settings.tenants), catalog,
                               tenant_models=tenant.models if tenant is not None else None)
    keys = gateway.governor.keys
    issued = await run_in_threadpool(
        lambda: keys.create(spec, max_live=settings.governance.max_keys))
    return JSONResponse(issued.to_dict(keys.now(), settings.tenants), status_code=201)


@router.get("/v1/router/keys", responses=_KEY_LIST, response_model=KeyPage,
            summary="The client keys (never a secret), oldest first, a page at a time")
async def list_keys(request: Request,
                    tenant: TenantQuery = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE,
                                                description="Keys per page."),
                                     WHOLE] = DEFAULT_PAGE,
                    cursor: str | None = Query(None, max_length=64,
                                               description="next_cursor of the previous page."),
                    ) -> JSONResponse:
    gateway = get_service(request).gateway
    records, next_cursor = await run_in_threadpool(gateway.governor.keys.page, tenant, limit,
                                                   cursor)
    if tenant is not None and not records and cursor is None:
        # No key, and a tenant the gateway does not know (a misspelling): a 404 listing the
        # known ones, as the reports answer, not an empty list that reads "it has no keys".
        await run_in_threadpool(gateway.reports.check_tenant, tenant)
    now = gateway.governor.keys.now()
    tenants = gateway.settings.tenants
    return JSONResponse({"data": [r.to_dict(now, tenants) for r in records],
                         "next_cursor": next_cursor})


def _with_budgets(request: Request, record: Any) -> dict[str, Any]:
    from switchpoint.governance.budgets import parse_budgets

    gateway = get_service(request).gateway
    governor = gateway.governor
    ledger = governor.ledger
    out: dict[str, Any] = record.to_dict(governor.keys.now(), gateway.settings.tenants)
    out["budget_status"] = [ledger.status(key_account(record.id), b)
                            for b in parse_budgets(list(record.budgets), stored=True)]
    return out


@router.get("/v1/router/keys/{key_id}", responses=_KEY_READ, response_model=KeyWithBudgets,
            summary="One client key and its budgets' state")
async def show_key(key_id: str, request: Request) -> JSONResponse:
    keys = get_service(request).gateway.governor.keys
    record = await run_in_threadpool(keys.find, key_id)
    return JSONResponse(_with_budgets(request, record))


@router.post("/v1/router/keys/{key_id}/revoke", responses=_KEY_CHANGE, response_model=KeyView,
             summary="Revoke a client key at once")
@refuses_body
async def revoke_key(key_id: str, request: Request) -> JSONResponse:
    return await _revoke(key_id, request)


@router.delete("/v1/router/keys/{key_id}", responses=_KEY_CHANGE, response_model=KeyView,
               summary="Revoke a client key at once (the record stays, for the logs)")
@refuses_body
async def delete_key(key_id: str, request: Request) -> JSONResponse:
    return await _revoke(key_id, request)


async def _revoke(key_id: str, request: Request) -> JSONResponse:
    gateway = get_service(request).gateway
    keys = gateway.governor.keys
    record = await run_in_threadpool(keys.revoke, key_id)
    return JSONResponse(record.to_dict(keys.now(), gateway.settings.tenants))


@router.post("/v1/router/keys/{key_id}/rotate", responses=_KEY_CHANGE, response_model=IssuedKey,
             openapi_extra=_body_schema(KeyRotate, required=False),
             summary="A new secret for a key (same id, budgets and limits); the old one "
                     "works for grace_seconds")
async def rotate_key(key_id: str, request: Request) -> JSONResponse:
    body = parse_optional_body(KeyRotate, await request.body())
    gateway = get_service(request).gateway
    keys = gateway.governor.keys
    grace = float(body.grace_seconds)
    tenants = list(gateway.settings.tenants)  # (a key whose tenant a reload removed: refused)
    issued = await run_in_threadpool(lambda: keys.rotate(key_id, grace, tenants=tenants))
    return JSONResponse(issued.to_dict(keys.now(), tenants))


@router.get("/v1/router/tenants", responses={**_JSON, **state_unavailable()},
            response_model=TenantList,
            summary="The configured tenants and their budgets' state")
async def tenants(request: Request) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(gateway.tenant_status))


BudgetLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Budgets per page."), WHOLE]
BudgetCursor = Annotated[str | None, Query(max_length=64,
                                           description="next_cursor of the previous page.")]


@router.get("/v1/router/budgets", responses={**_JSON, **state_unavailable("keys.db")},
            response_model=BudgetPage,
            summary="Every budget: limit, spent, held by requests in flight, reset time, a "
                    "page at a time")
async def budgets(request: Request, limit: BudgetLimit = DEFAULT_PAGE,
                  cursor: BudgetCursor = None) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(gateway.budget_page, limit, cursor))


@router.get("/v1/router/budget/alert", responses=_KEYS_REPORT, response_model=BudgetAlert,
            summary="Budget alert: ok / warning / critical, projected spend, recommendation; "
                    "the budgets a page at a time")
async def budget_alert(request: Request,
                       tenant: TenantQuery = None,
                       limit: BudgetLimit = DEFAULT_PAGE,
                       cursor: BudgetCursor = None,
                       ) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(
        lambda: gateway.check_budget_alert(tenant, limit=limit, cursor=cursor)))


Period = Annotated[str, Query(pattern="^(day|week|month)$")]


@router.get("/v1/router/report/cost", responses=_KEYS_REPORT,
            response_model=CostReport,
            summary="Requests and cost by model, tenant and key, with savings against a "
                    "comparison model")
async def cost_report(request: Request, period: Period = "day",
                      tenant: TenantQuery = None,
                      comparison_model: Annotated[str | None,
                                                  Query(max_length=MAX_MODEL_NAME)] = None
                      ) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(
        lambda: gateway.cost_report(period, tenant=tenant, comparison_model=comparison_model)))


@router.get("/v1/router/report/savings", responses=_LOG_REPORT,
            response_model=SavingsReport,
            summary="What the logged requests would have cost on a comparison model")
async def savings(request: Request, period: Period = "month",
                  comparison_model: Annotated[str | None, Query(max_length=MAX_MODEL_NAME)] = None,
                  tenant: TenantQuery = None) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(
        lambda: gateway.savings_estimate(comparison_model, period, tenant=tenant)))


@router.get("/v1/router/report/sla", responses=_LOG_REPORT,
            response_model=SLAReport,
            summary="SLA compliance, breaches and adjustments over the last hours")
async def sla_report(request: Request,
                     since_hours: Annotated[float, Query(gt=0, le=MAX_SINCE_HOURS,
                                                         allow_inf_nan=False),
                                           number_without_0(SINCE_HOURS)] = 1.0,
                     tenant: TenantQuery = None
                     ) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(
        lambda: gateway.get_sla_report(since_hours, tenant=tenant)))


@router.get("/v1/router/report/forecast", responses=_LOG_REPORT,
            response_model=ForecastReport,
            summary="Projected spend of a traffic assumption over the logged routing mix")
async def forecast(request: Request,
                   requests_per_hour: Annotated[float, Query(ge=0, le=MAX_REQUESTS_PER_HOUR,
                                                             allow_inf_nan=False), NUMBER],
                   avg_input_tokens: Annotated[float, Query(ge=0, le=MAX_TOKENS,
                                                            allow_inf_nan=False), NUMBER],
                   avg_output_tokens: Annotated[float, Query(ge=0, le=MAX_TOKENS,
                                                             allow_inf_nan=False), NUMBER],
                   tenant: TenantQuery = None
                   ) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(
        lambda: gateway.forecast_cost(requests_per_hour, avg_input_tokens, avg_output_tokens,
                                      tenant=tenant)))


@router.get("/v1/router/report/suggest", responses=_LOG_REPORT,
            response_model=SuggestionList,
            summary="Cost optimisations computed by re-routing the logged traffic offline")
async def suggest(request: Request, period: Period = "week",
                  tenant: TenantQuery = None) -> JSONResponse:
    gateway = get_service(request).gateway
    return JSONResponse(await run_in_threadpool(
        lambda: gateway.suggestion_report(period=period, tenant=tenant)))
