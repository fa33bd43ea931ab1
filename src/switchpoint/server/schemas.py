"""The wire contract: pydantic models the handlers use and the OpenAPI schema is built from.

``RouteRequest`` / ``RouteResponse`` are the ``POST /v1/route`` body and answer, key for key
(the request adds the routing options the in-process gateway's ``route`` takes; the response
adds ``decision_id``, which names the decision in the log, and, when governance or learning is
configured, what they did to the decision).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from fastapi import Query
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from switchpoint._messages import MAX_LISTED, one_of
from switchpoint.catalog import COST_UNITS, MAX_TOKENS
from switchpoint.decision import MAX_COST_WEIGHT
from switchpoint.errors import GatewayError
from switchpoint.gateway.kept import MAX_WAITING
from switchpoint.gateway.parsing import MAX_MODELS, ModelName
from switchpoint.governance.reload_check import MAX_NAMED
from switchpoint.governance.settings import SLASettings, TenantSettings
from switchpoint.learning.config import MAX_NAME
from switchpoint.learning.events import MAX_TENANT_NAME
from switchpoint.learning.tenant_memory import Fallback


def _as_sent(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A number checked as a float is, then kept as the caller sent it: an integer stays one,
    so a range checked past the body (a λ, a split) quotes what was sent (``-1``, not
    ``-1.0``)."""
    number = handler(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else number


FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: A JSON number whose range is checked past the body (by the rule it shares with the library),
#: kept as sent: an integer stays one (never true or a string); never NaN nor infinite (refused
#: here in the words every request door uses). A range the body's model states itself (``ge``,
#: ``le``) quotes the value as sent anyway.
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False),
                         WrapValidator(_as_sent)]
#: The ``?tenant=`` of the routes that take one: a tenant's name (never empty), or all of them.
TenantQuery = Annotated[str | None, Query(min_length=1, max_length=MAX_TENANT_NAME,
                                          description="A configured tenant's name.")]
#: A tenant's name in a body: never empty, bounded as at every door (what else is wrong with
#: it, the gateway's logic says by the one rule it keeps).
TenantName = Annotated[str, Field(min_length=1, max_length=MAX_TENANT_NAME)]


#: Every model here builds its validator and serializer when first used (an answer sent, a
#: body read, the API document made), not as the module loads: a service that starts builds
#: none of them until it needs it (FastAPI's fields of them wait too), and most it never needs.
LAZY = ConfigDict(defer_build=True)
#: An answer that holds what its model lists and nothing else: the schema says so
#: (additionalProperties false).
CLOSED = ConfigDict(extra="forbid", defer_build=True)


class RouteRequest(BaseModel):
    """Exactly one of ``prompt`` or ``embedding``; the other fields are optional."""

    model_config = ConfigDict(
        extra="forbid", defer_build=True,
        json_schema_extra={"examples": [
            {"prompt": "Prove the square root of 2 is irrational.", "cost_weight": 0.5},
        ]},
    )

    prompt: StrictStr | None = Field(
        None, min_length=1, description="The user text. Required unless embedding is supplied.")
    embedding: list[FiniteFloat] | None = Field(
        None, description="A pre-computed vector (384-d all-MiniLM-L6-v2 for the default "
                          "weights). Skips the embedder.")
    available_models: list[ModelName] | None = Field(
        None, min_length=1, max_length=MAX_MODELS,
        description="Restrict candidates to this subset (at most 64 names, as a chat request's "
                    "models). If omitted, all registered models.")
    # The range is documented here and checked where every λ is, by the decision rule; a NaN
    # or an infinity is refused here, as any number of a body is that must be finite.
    cost_weight: FiniteNumber | None = Field(
        None, description="Override λ for this call. 0.0 = quality-first; 1.0+ = cheap-first.",
        json_schema_extra={"minimum": 0, "maximum": MAX_COST_WEIGHT})
    # The options below mean what the in-process gateway's route() options mean; their ranges
    # are documented here and checked there, one rule for both doors.
    prefer_healthy: Annotated[bool, Field(strict=True)] = Field(
        False, description="Name the model a chat request for model \"auto\" would be sent "
                           "to first: the candidates ranked with the gateway's health (see "
                           "/v1/router/health), degraded and down models after healthy ones. "
                           "Without it the decision is the router's alone, whatever the "
                           "health.")
    auto_scale: Annotated[bool, Field(strict=True)] = Field(
        False, description="Move the models a call would skip now (an open circuit, a "
                           "Retry-After running) behind the others, so the decision names the "
                           "first model that can be called; with every model skipped the "
                           "order stands.")
    estimate_tokens: list[Annotated[int, Field(strict=True)]] | None = Field(
        None, description="[input_tokens, output_tokens]: price the request at those tokens "
                          "with the catalog's prices (the scores weigh those costs, so a "
                          "large enough request goes to a cheaper model) instead of its "
                          "UTF-8 bytes / 4 and the expected output. A catalog without prices "
                          "for every model refuses it.",
        json_schema_extra={"minItems": 2, "maxItems": 2,
                           "items": {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS}})
    ab_test: StrictStr | None = Field(
        None, description="The experiment (experiments: in the config) this request is "
                          "routed in; the answer's experiment and arm say where it went. A "
                          "request takes part in its tenant's experiment anyway; naming one "
                          "that would not take it (not configured, disabled, not the caller's "
                          "tenant's, or another listed before it takes that tenant) is a 400.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_NAME})


class RouteUsage(BaseModel):
    model_config = CLOSED

    routing_ms: float = Field(description="Wall time spent in routing logic.")
    embedding_ms: float = Field(description="Time spent embedding the prompt (0 if an embedding "
                                            "was supplied or the decision was cached).")


class BudgetPressure(BaseModel):
    """The budget whose use raised λ, and by how much."""

    model_config = CLOSED

    fraction_used: float | None = Field(description="How much of it is used; null for a "
                                                    "budget shared with other callers, such "
                                                    "as the gateway's (what they spent is not "
                                                    "shown).")
    budget: str = Field(description="Whose budget and its amount, in words (e.g. tenant acme "
                                    "$50/month).")
    base_cost_weight: float = Field(description="The λ before the budget raised it.")
    cost_weight: float = Field(description="The λ the budget curve gives at that use.")


class RouteResponse(BaseModel):
    """The routing answer: the first eight fields always; ``prompt_hash`` when it routed on
    a prompt; the others when what they tell of is configured, absent otherwise."""

    model_config = CLOSED

    selected_model: str = Field(description="The model that minimises error + λ·cost.")
    cluster_id: int = Field(description="Which cluster (or tier, or unit) the prompt landed in.")
    expected_error: float = Field(description="Predicted error rate of selected_model there.")
    cost_adjusted_score: float = Field(description="The minimised score: error + λ·cost.")
    all_scores: dict[str, float] = Field(description="Score of every candidate considered.")
    cache_hit: bool = Field(description="Whether this call's decision came from the cache.")
    usage: RouteUsage
    decision_id: str = Field(description="Names this decision in the decision log.")
    # Present when the decision was routed on a prompt (not on an embedding alone):
    prompt_hash: str | None = Field(
        None, description="The SHA-256 of the text the decision routed on, 64 lowercase "
                          "hexadecimal digits (the same prompt, the same hash): POST "
                          "/v1/feedback takes it in place of decision_id, naming the latest "
                          "decision routed on that prompt. Absent for a decision routed on an "
                          "embedding alone.")
    # Present when keys, tenants, budgets, an SLA or escalation are configured:
    cost_weight: float | None = Field(None, description="The λ the decision was made with "
                                                        "(after any budget or SLA "
                                                        "adjustment).")
    confidence: float | None = Field(None, description="Chance the selected model really "
                                                       "scores below the runner-up.")
    escalated: bool | None = Field(None, description="A low confidence changed the model "
                                                     '(strategy "always") or asks to '
                                                     '(strategy "ask").')
    original_confidence: float | None = Field(None, description="The confidence before the "
                                                                "escalation.")
    escalation_reason: str | None = Field(None, description='Why escalation triggered ("" '
                                                            "when it did not).")
    sla_compliant: bool | None = Field(None, description="Whether the decision meets every "
                                                         "SLA in force.")
    sla_breaches: list[str] | None = Field(None, description="SLA constraints the first "
                                                             "choice broke: latency_exceeded, "
                                                             "budget_exceeded, "
                                                             "quality_below_minimum.")
    sla_adjustments: list[str] | None = Field(None, description="What routing did about "
                                                                "them.")
    budget_pressure: BudgetPressure | None = Field(
        None, description="When a budget nearing its limit raised λ (null when none did).")
    # Present when a tenant memory, an experiment or exploration is configured:
    source: Literal["router", "memory", "exploration"] | None = Field(
        None, description="Who chose selected_model: the learned router, the tenant's memory "
                          "of its own outcomes, or exploration.")
    memory_fallback: str | None = Field(None, description="Why the tenant's memory left the "
                                                          "choice to the router: "
                                                          + one_of(f.value for f in Fallback)
                                                          + ' ("" when it chose or there is '
                                                            "none).")
    experiment: str | None = Field(None, description="The experiment the request was "
                                                     'assigned to ("" when none).')
    arm: str | None = Field(None, description='Its arm ("" when none).')


#: The codes the server answers with itself (the others are its errors' own: see
#: :func:`error_codes`).
SERVER_CODES = ("invalid_request", "invalid_config", "decision_not_found", "not_found",
                "method_not_allowed", "request_too_large", "unsupported_media_type",
                "server_busy", "storage_unavailable", "service_closing", "internal_error")


def error_codes() -> list[str]:
    """Every ``code`` an error answer of the service may carry: the server's own and each
    :class:`~switchpoint.errors.GatewayError`'s (the chat route's failover adds the upstream's
    outcome, in OpenAI's envelope)."""
    codes = dict.fromkeys(SERVER_CODES)
    kinds: list[type[GatewayError]] = [GatewayError]
    while kinds:
        kind = kinds.pop()
        kinds.extend(kind.__subclasses__())
        if kind is not GatewayError and "code" in vars(kind):
            codes[kind.code] = None
    return sorted(codes)


class ErrorDetail(BaseModel):
    model_config = LAZY

    code: str = Field(description=f"One of {one_of(error_codes())}; the message says what "
                                  "is wrong.")
    message: str = Field(description="What is wrong and how to fix it.")
    param: str | None = Field(None, description="The request field (or config key) at fault.")


class ErrorResponse(BaseModel):
    model_config = LAZY

    error: ErrorDetail


class DiskUsage(BaseModel):
    model_config = LAZY

    data_dir: str
    db_bytes: int = Field(description="Bytes of the state files in data_dir: the SQLite files "
                                      "(logs, pins) and the learning checkpoint.")
    free_bytes: int | None = Field(description="Bytes free on data_dir's file system.")
    retention_days: float | None = Field(
        description="Log entries older than this are deleted (null: kept forever).")


class HealthResponse(BaseModel):
    """Readiness. With an admin token configured, the fields after ``version`` are shown only
    to a caller that carries it."""

    model_config = LAZY

    status: Literal["ready", "loading", "failed"]
    ready: bool
    uptime_seconds: float
    version: str
    weights_id: str | None = None
    policy: str | None = None
    models: list[str] | None = None
    error: str | None = None
    disk: DiskUsage | None = None

    READINESS: ClassVar[tuple[str, ...]] = ("status", "ready", "uptime_seconds", "version")
    """The fields anyone may see."""


class ModelObject(BaseModel):
    model_config = LAZY

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds, the same across reloads and "
                                     "registrations: a registered model's registration, else "
                                     "when this process first served the name.")
    owned_by: str


class ModelList(BaseModel):
    model_config = LAZY

    object: Literal["list"] = "list"
    data: list[ModelObject]


class ChatErrorDetail(BaseModel):
    model_config = LAZY

    message: str
    type: str
    code: str | None
    param: str | None = None


class ChatErrorResponse(BaseModel):
    """The OpenAI error envelope (``code``, ``message`` and ``param`` as everywhere else, plus
    OpenAI's ``type``)."""

    model_config = LAZY

    error: ChatErrorDetail


CHAT_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ChatErrorResponse, "description": "Malformed request, or no model in the "
                                                     "catalog can serve it (the message says "
                                                     "why for each); an upstream's own 4xx "
                                                     "(content filter, context length) as sent."},
    404: {"model": ChatErrorResponse, "description": "model_not_found: not \"auto\" nor a "
                                                     "catalog model."},
    403: {"model": ChatErrorResponse, "description": "permission_denied (client keys): the key "
                                                     "may not use the model named, or one "
                                                     "named among the models auto may "
                                                     "choose."},
    429: {"model": ChatErrorResponse, "description": "Every candidate was rate limited "
                                                     "(Retry-After: the shortest wait known, an "
                                                     "upstream's or until a candidate leaves "
                                                     "its rest or open circuit, else 1); "
                                                     "or budget_exceeded, rate_limit_exceeded: "
                                                     "a budget or rate limit of the key, its "
                                                     "tenant or the gateway refused the "
                                                     "request (Retry-After: when it resets; "
                                                     "none, with x-should-retry: false, when "
                                                     "no wait helps); "
                                                     "or too_many_in_flight: the key's tenant "
                                                     "has its share of model calls in flight "
                                                     "(its tenants.<name>.max_in_flight, else "
                                                     "gateway.max_in_flight_per_tenant; "
                                                     "Retry-After: 1)."},
    502: {"model": ChatErrorResponse, "description": "No candidate answered."},
    503: {"model": ChatErrorResponse, "description": "Every candidate's circuit is open, or "
                                                     "the router is still loading."},
    504: {"model": ChatErrorResponse, "description": "Every candidate timed out."},
}


# (each figure of the stats is a total the log keeps, which a damaged file can hold out of range)
_OUT_OF_RANGE = ("The figures whose total in the file is out of range (negative, not a whole "
                 "number, or too large: a damaged file, a cost too large to be real), each "
                 "null, and why; empty when every figure adds up.")


class ModelRequestStats(BaseModel):
    model_config = LAZY

    requests: int | None
    cost_usd: float | None = Field(description="The summed cost of its answers of known cost.")
    cost_unknown_requests: int | None = Field(
        description="Its answers whose cost is unknown (a model without prices, an upstream "
                    "that reported no usage): not in cost_usd, and not free.")


class RequestStats(BaseModel):
    model_config = LAZY

    total: int | None = Field(description="Chat requests logged, all time.")
    ok: int | None
    refused: int | None = Field(description="Requests refused for who asked before any model "
                                            "was called (a model the key may not use, a "
                                            "budget, a rate limit, the tenant's share of "
                                            "calls in flight).")
    errors: int | None = Field(description="Requests that did not end with a whole answer, "
                                           "other than refusals.")
    escalations: int | None = Field(description="Requests answered (or failed) after more than "
                                                "one model was tried.")
    streams: int | None
    by_status: dict[str, int | None]
    by_model: dict[str, ModelRequestStats] = Field(
        description="Per answering model: requests and cost_usd.")
    by_pin_state: dict[str, int | None]
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None = Field(description="The summed cost of the answers of known cost.")
    cost_unknown_requests: int | None = Field(description="Answers whose cost is unknown (see "
                                                          "by_model).")
    warnings: list[str] = Field([], description=_OUT_OF_RANGE)


class StatsResponse(BaseModel):
    model_config = LAZY

    total: int | None = Field(description="Decisions logged, all time (the log survives "
                                          "restarts).")
    cache_hits: int | None
    by_model: dict[str, int | None]
    by_policy: dict[str, int | None]
    by_cluster: dict[str, int | None] = Field(description="Decisions per cluster under the "
                                                          "live weights (ids of other weights "
                                                          "differ).")
    weights_id: str | None
    policy: str | None
    tenant: str | None = Field(None, description="The tenant the figures are of (?tenant=: its "
                                                 'decisions and requests alone; "default" '
                                                 "counts those without a tenant); null: every "
                                                 "tenant's.")
    requests: RequestStats | None = Field(
        None, description="The gateway's request log (POST /v1/chat/completions): counts, "
                          "escalations, tokens and cost.")
    warnings: list[str] = Field([], description=_OUT_OF_RANGE)


class LoggedAttempt(BaseModel):
    """One try of one model, as logged (the last two fields only when they have a value, and
    not in entries an earlier switchpoint wrote)."""

    model_config = CLOSED

    model: str
    attempt: int = Field(description="Its number among the tries of this model, from 1 (0: "
                                        "passed over as its circuit was open or its context "
                                        "too small).")
    outcome: str = Field(description="ok, the error's kind, why the model was passed over "
                                     "without a call (circuit_open, context_too_small, ...), "
                                     "or client_closed.")
    latency_ms: float
    waited_s: float = Field(description="The backoff waited before it.")
    status: int | None = Field(description="The upstream's HTTP status, when it sent one.")
    error: str | None = Field(description="What went wrong (redacted, bounded).")
    retry_after_s: float | None = Field(None, description="The wait the upstream asked for "
                                                          "(Retry-After), or how long a model "
                                                          "passed over as unhealthy stays "
                                                          "out.")
    charged_usd: float | None = Field(None, description="What the budgets were charged for a "
                                                        "try the provider may have billed "
                                                        "without an answer.")


class LoggedPin(BaseModel):
    """What the session pin said for the request. Entries an earlier switchpoint wrote for a
    request refused before it was planned hold none of these fields."""

    model_config = CLOSED

    pin_state: str | None = None
    pinned_model: str | None = Field(None, description="The model the pin sent the request "
                                                       "to (hard, rehomed_context).")
    bonus: dict[str, float] | None = Field(None, description="What a soft pin took off each "
                                                             "model's routing score.")
    previous_model: str | None = Field(None, description="The model the session was pinned "
                                                         "to.")
    age_s: float | None = Field(None, description="Seconds since the pin was last used.")
    note: str | None = Field(None, description="Why the pin is not what the session's "
                                               "windows said.")


class RequestEntry(BaseModel):
    """One chat request through the gateway, as logged: every field is there (null when it
    does not apply, or when the switchpoint that logged it did not yet log it)."""

    model_config = CLOSED

    seq: int = Field(description="Its position in the log (what ?cursor= counts).")
    id: str = Field(description="The request id the client was told (x-switchpoint-request-id).")
    ts: float = Field(description="When it was logged (epoch seconds).")
    session_id: str | None = Field(description="The conversation it belongs to (a hash).")
    requested_model: str
    routed_model: str | None = Field(description="What auto chose (null: a named model, or "
                                                 "not routed).")
    model: str | None = Field(description="The model that answered (null: none did).")
    upstream_model: str | None = Field(description="The model name the upstream reported.")
    models_tried: list[str]
    attempts: list[LoggedAttempt] = Field(description="Every try, in order.")
    status: str = Field(description="ok, error, refused, stream_broken or client_closed.")
    http_status: int
    error_kind: str | None
    error: str | None = Field(description="What went wrong (redacted, bounded).")
    escalated: bool = Field(description="Whether more than one model was tried.")
    pin_state: str
    pin: LoggedPin
    stream: bool
    latency_ms: float
    ttft_ms: float | None = Field(description="Time to the first token of a stream.")
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None = Field(description="Null: unknown (a model without prices, an "
                                                "upstream that reported no usage).")
    cluster_id: int | None
    expected_error: float | None
    routing_ms: float | None
    decision_id: str | None = Field(description="Its routing decision, which POST "
                                                "/v1/feedback takes.")
    reasoning: list[str]
    excluded: dict[str, list[str]] = Field(description="Models the request's needs left out, "
                                                       "each with its reasons.")
    key_id: str | None = Field(description="The client key that asked.")
    tenant: str | None
    charged_usd: float | None = Field(description="What its budgets were charged (null: no "
                                                  "budget ledger ran).")
    purpose: str | None = Field(description="compare for an answer of a preference "
                                            "comparison.")


class RequestLogPage(BaseModel):
    model_config = CLOSED

    data: list[RequestEntry] = Field(description="Request log entries, newest first.")
    next_cursor: int | None = Field(description="Pass as ?cursor= for the next (older) page; "
                                                "null on the last page.")


class BudgetStatus(BaseModel):
    """One budget's state in its current period."""

    model_config = CLOSED

    account: str = Field(description="Whose budget: all (the gateway's), key:ID, "
                                     "tenant:NAME, model:NAME or provider:NAME.")
    budget: str = Field(description="AMOUNT/PERIOD, as configured.")
    limit_usd: float
    period: Literal["hour", "day", "week", "month"]
    spent_usd: float = Field(description="Charged in this period.")
    held_usd: float = Field(description="Held by requests in flight.")
    remaining_usd: float = Field(description="limit_usd - spent_usd - held_usd, at least 0.")
    used_fraction: float = Field(description="(spent_usd + held_usd) / limit_usd, past 1 when "
                                             "spend went over it; 1 for a budget of 0 (it "
                                             "allows no spend).")
    period_start: float = Field(description="When this period began (epoch seconds, UTC).")
    resets_at: float = Field(description="When the next one begins (epoch seconds, UTC); a "
                                         "budget of 0 allows no spend in it either.")


class TenantView(TenantSettings):
    """A configured tenant, every setting as the config gives it (null or empty when unset),
    and its budgets' state."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True,
                              json_schema_serialization_defaults_required=True)

    budget_status: list[BudgetStatus] = Field(description="Each of the tenant's own budgets' "
                                                           "state (its keys' are theirs).")


class TenantList(BaseModel):
    model_config = CLOSED

    data: dict[str, TenantView] = Field(description="Each configured tenant by name.")


class BudgetAlertEntry(BudgetStatus):
    """One budget's state, with its projection and its level."""

    utilization: float = Field(description="used_fraction: (spent_usd + held_usd) / "
                                           "limit_usd, 1 for a budget of 0.")
    projected_usd: float = Field(description="spent_usd plus the recent rate of spend until "
                                             "the period ends.")
    projection_window_seconds: float = Field(description="The recent span that rate is "
                                                         "measured over (a quarter of the "
                                                         "period, or less in a young log).")
    projection_low_confidence: bool = Field(description="Whether the log is younger than the "
                                                        "shortest window a rate is read over.")
    status: Literal["ok", "warning", "critical"] = Field(
        description="critical: used up; warning: past the warning threshold or projected "
                    "over the limit.")
    resets_in: str = Field(description="Until the period ends, in words (e.g. 1 h 2 min). "
                                       "A budget of 0 allows no spend in the next period "
                                       "either: its reset frees nothing.")


class BudgetAlert(BaseModel):
    """The hourly SLA budget's spend and every budget's state (a page of them); the status and
    the recommendation weigh them all."""

    model_config = CLOSED

    status: Literal["ok", "warning", "critical"] = Field(description="The worst of "
                                                                     "hourly_status and every "
                                                                     "budget's.")
    tenant: str | None = Field(description="?tenant=, or null for the whole gateway.")
    hourly_spend_usd: float = Field(description="This calendar hour's spend of the account "
                                                "the hourly SLA budget watches.")
    hourly_cost_unknown_requests: int = Field(description="This hour's answers of unknown "
                                                          "cost the spend could not sum.")
    hourly_account: str = Field(description="Whose spend that is, in words (the gateway, "
                                            "tenant NAME).")
    budget_usd: float | None = Field(description="The SLA's budget_per_hour_usd; null: none.")
    utilization: float | None = Field(description="hourly_spend_usd / budget_usd; null "
                                                  "without one.")
    projected_hourly_usd: float = Field(description="The hour's spend projected to its end.")
    projection_window_seconds: float
    projection_low_confidence: bool
    hourly_status: Literal["ok", "warning", "critical"]
    budgets: list[BudgetAlertEntry] = Field(description="A page of the budgets: the config's, "
                                                        "then the client keys'.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on "
                                                "the last page.")
    recommendation: str = Field(description="What to do, in words.")


class PreviousSecret(BaseModel):
    model_config = CLOSED

    rotated_at: float = Field(description="When a rotation replaced it (epoch seconds).")
    valid_until: float = Field(description="When it stops working (epoch seconds).")


class KeyView(BaseModel):
    """A client key as the admin sees it: everything but its secret and hashes."""

    model_config = CLOSED

    id: str
    tenant: str
    tenant_removed: bool = Field(description="Whether the config no longer lists its tenant "
                                             "(a reload removed it): the gateway refuses the "
                                             "key, and rotates it no more, though its status "
                                             "may be active; add the tenant back under "
                                             "tenants: and reload, or revoke the key.")
    name: str | None
    status: Literal["active", "revoked", "expired"]
    created_at: float = Field(description="Epoch seconds, as the other times.")
    expires_at: float | None
    revoked_at: float | None
    rotated_at: float | None = Field(description="The latest rotation's time.")
    previous_valid_until: float | None = Field(description="When the secret the latest "
                                                           "rotation replaced stops working.")
    previous_secrets: list[PreviousSecret] = Field(description="The replaced secrets that "
                                                               "still work.")
    budgets: list[str] = Field(description="AMOUNT/PERIOD, each.")
    rpm: int | None
    tpm: int | None
    models: list[str] | None = Field(description="The models it may use (null: its "
                                                 "tenant's).")
    cost_weight: float | None


class IssuedKey(KeyView):
    """A key just made or given a new secret: ``key`` is the secret, shown this once."""

    key: str = Field(description="The secret (Authorization: Bearer <key>), shown this once.")


class KeyWithBudgets(KeyView):
    budget_status: list[BudgetStatus] = Field(description="Each of its budgets' state.")


class KeyPage(BaseModel):
    model_config = CLOSED

    data: list[KeyView] = Field(description="Client keys, oldest first (never a secret).")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on "
                                                "the last page.")


class BudgetPage(BaseModel):
    model_config = CLOSED

    data: list[BudgetStatus] = Field(description="Budgets' state: the config's, then the "
                                                   "client keys' in the order they were made.")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on "
                                                "the last page.")


class KeyAffected(BaseModel):
    """A live key and what a reloaded config took from it."""

    model_config = CLOSED

    key_id: str
    name: str | None
    tenant: str
    tenant_removed: bool = Field(description="Whether the new config no longer lists its "
                                             "tenant.")
    models_removed: list[str] = Field(description="Models it (or its tenant) named that it "
                                                  f"can no longer use, the first {MAX_LISTED} "
                                                  "of them (models_removed_count says how "
                                                  "many in all).")
    models_removed_count: int = Field(description="How many models it can no longer use, "
                                                  "listed in models_removed or not.")


class SwapResponse(BaseModel):
    model_config = CLOSED

    policy: str
    weights_id: str
    models: list[str]
    previous_policy: str
    previous_weights_id: str
    load_ms: float
    restart_required: list[str] = Field(
        default_factory=list,
        description="Changed settings that apply only after a restart (e.g. data_dir).")
    unprofiled_models: list[str] = Field(
        default_factory=list,
        description="Catalog models auto may choose that the new weights have no learned "
                    "profile for: they are "
                    "routed by tier and price alone until labelled (switchpoint label, "
                    f"add-model). The first {MAX_LISTED} of them (unprofiled_models_count "
                    "says how many in all).")
    unprofiled_models_count: int = Field(
        0, description="How many catalog models the new weights have no learned profile "
                       "for, listed in unprofiled_models or not.")
    note: str | None = Field(
        None, description="What the new weights leave unprofiled, in words (null when they "
                          "profile every catalog model).")
    keys_affected: list[KeyAffected] = Field(
        default_factory=list,
        description="After a config reload: the live keys this reload leaves short of "
                    "something they had before it: whose tenant the new config no longer "
                    "lists, or that can no longer use a model they (or their tenant) named "
                    "which they could use under the old config (a key already short of a "
                    f"model is not named again), the first {MAX_NAMED} of them "
                    "(keys_affected_count says how many in all). "
                    "The keys stay; this is a warning.")
    keys_affected_count: int = Field(
        0, description="How many live keys the config reload affected, listed in "
                       "keys_affected or not.")
    keys_note: str | None = Field(
        None, description="keys_affected in words (null when no key lost anything).")


class _Unprofiled(BaseModel):
    model_config = LAZY

    unprofiled_models: list[str] = Field(
        description="Catalog models auto may choose that the live weights have no learned "
                    "profile for, now: routed by tier and price alone until labelled "
                    f"(switchpoint label, add-model). The first {MAX_LISTED} of them.")
    unprofiled_models_count: int = Field(
        description="How many catalog models the live weights have no learned profile for.")
    note: str | None = Field(
        description="unprofiled_models in words (null when the weights profile every "
                    "catalog model).")


class ModelRegistered(_Unprofiled):
    """A model registered at run time, as the model list shows it."""

    model_config = CLOSED

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When it was registered (Unix seconds, whole), as the "
                                     "model list gives it.")
    owned_by: str = Field(description="Its provider.")
    registered_at: float = Field(description="When it was registered (Unix seconds).")


class ModelDeleted(_Unprofiled):
    """A model registered at run time, unregistered (as OpenAI answers a model's deletion)."""

    model_config = CLOSED

    id: str
    object: Literal["model"] = "model"
    deleted: bool


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "Malformed or invalid request."},
    503: {"model": ErrorResponse, "description": "The router is still loading its weights."},
}

#: The state files of data_dir an admin route may read, each as a 503 names it: (the file, what
#: else is refused as its damage is, what may hold its lock beside the service).
_STATE_FILES: dict[str, tuple[str, str, str]] = {
    "keys.db": ("keys.db", "a keys.db deleted while the service held keys in it",
                "a `switchpoint keys` command"),
    "switchpoint.db": ("switchpoint.db (the request and feedback log)",
                       "a switchpoint.db deleted or replaced while the service ran (which a "
                       "restart mends)", "a `switchpoint` command"),
}
_CLOSING = "service_closing: the service is shutting down and did nothing (Retry-After: 1)."


def state_unavailable(*files: str, writes: bool | str = False, also: str = "",
                      queued: bool = False, loading: bool = False
                      ) -> dict[int | str, dict[str, Any]]:
    """The published 503 of an admin route, as it means there: the state ``files`` it reads
    in data_dir (``keys.db``, ``switchpoint.db``) could not be read (and, ``writes``,
    written: True, each; a file's name, that one alone, as a removal of a model reads keys.db
    and writes switchpoint.db), said as the service answers it (see
    :func:`switchpoint.server.errors.answer_for`), ``also`` any other store the route reads;
    ``queued``, a change refused before it waits for switchpoint.db's writer, as many as may
    wait already waiting (see :func:`switchpoint.gateway.kept.turn`); or the service is
    shutting down, which alone answers 503 on a route that reads no file (the budgets' state
    is kept in memory); and, ``loading``, on a route that needs the loaded router (a change
    of the catalog), the router still loading its weights or failed to load. Without
    ``loading``, the description says the route never waits for the router."""
    loads = (" router_not_ready: the router is still loading its weights, or failed to load "
             "(Retry-After: 1; GET /health says when it is ready)." if loading else "")
    if not files:
        return {503: {"model": ErrorResponse, "description": (
            f"{_CLOSING}{loads} Nothing else answers 503 here: the route reads no file (the "
            "budgets' state is kept in memory)"
            f"{'' if loading else ' and never waits for the router'}.")}}
    named = [_STATE_FILES[f] for f in files]
    done = ["read or written" if writes is True or writes == f else "read" for f in files]
    if len(set(done)) == 1:
        failed = f"{' or '.join(what for what, _, _ in named)} in data_dir{also} could not be " \
                 f"{done[0]}"
    else:  # (each file as it is used: none is said to be written that is only read)
        failed = ", or ".join(
            f"{what}{f' in data_dir{also}' if i == 0 else ''} could not be {verb}"
            for i, ((what, _, _), verb) in enumerate(zip(named, done, strict=True)))
    disk = (f", or data_dir's disk is full or {'the file' if writes is True else writes} "
            "read-only" if writes else "")
    if queued:
        disk += (f", or {MAX_WAITING} changes (a burst sent at once, or behind a disk slow "
                 "to finish its writes) already wait for switchpoint.db's writer")
    holders = named[0][2] if len(named) == 1 else "a `switchpoint` command"
    gone = " and ".join(g for _, g, _ in named)
    return {503: {"model": ErrorResponse, "description": (
        f"storage_unavailable: {failed}: it is damaged (x-should-retry: false: waiting does "
        f"not mend it; the operator must restore it from a backup; so "
        f"{'are' if len(named) > 1 else 'is'} {gone}), or another process ({holders}) held "
        f"its lock past the wait{disk} (Retry-After: when to try again). {_CLOSING}{loads}")}}


ROUTE_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorResponse, "description": "permission_denied (client keys): the key may "
                                                 "not ask for routing (its models lack auto), "
                                                 "or available_models names a model it may "
                                                 "not use."},
    429: {"model": ErrorResponse, "description": "rate_limit_exceeded: the requests per minute "
                                                 "of the key or its tenant are used up "
                                                 "(Retry-After: when one is free again)."},
}


def inlined(schema: dict[str, Any]) -> dict[str, Any]:
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


# Learning: preference comparisons and the learning status -------------------------------------

class AnswerError(BaseModel):
    model_config = CLOSED

    code: str
    message: str = Field(description="Why it did not answer (redacted, bounded); a blind "
                                     "answer's says only what any model's failure could say.")


class ComparedAnswer(BaseModel):
    model_config = CLOSED

    label: str = Field(description="A, B, ... in a random order.")
    model: str | None = Field(description="The model that gave it; null when blind (the score "
                                          "reveals it).")
    content: str | None = Field(description="The answer's text; null when the model did not "
                                            "answer.")
    request_id: str | None = Field(description="Its request in the log; null when blind.")
    finish_reason: str | None
    error: AnswerError | None = Field(description="Why the model did not answer; null when it "
                                                  "did.")
    latency_ms: float | None = Field(description="Null when blind or unanswered.")
    cost_usd: float | None = Field(description="Null when blind, unanswered or unpriced.")


class CompareResponse(BaseModel):
    model_config = CLOSED

    compare_id: str = Field(description="What POST /v1/router/preferences/score takes.")
    tenant: str
    expires_at: float = Field(description="When the comparison can no longer be scored (epoch "
                                          "seconds).")
    blind: bool
    answers: list[ComparedAnswer]


class MemorySettingsView(BaseModel):
    model_config = CLOSED

    k: int
    min_neighbours: int
    min_similarity: float
    alpha: float | None
    switch_penalty: float
    confidence_floor: float
    min_records: int
    max_records: int


class MemoryStatus(BaseModel):
    """A tenant's memory: only ``enabled`` (false) when the tenant has none."""

    model_config = CLOSED

    enabled: bool
    examples: int | None = Field(None, description="Outcomes it holds.")
    cold: bool | None = Field(None, description="True until it holds warm_at outcomes: until "
                                                "then it does not route.")
    warm_at: int | None = None
    progress: float | None = Field(None, description="examples / warm_at, at most 1.")
    models: dict[str, int] | None = Field(None, description="Outcomes it holds per model.")
    settings: MemorySettingsView | None = None


class LearnedScore(BaseModel):
    model_config = CLOSED

    label: str
    model: str
    quality: float
    replaced: bool = Field(description="Whether it replaced an earlier score of this answer.")
    previous_quality: float | None
    teaches_routing: bool
    teaches_memory: bool


class RevealedAnswer(BaseModel):
    """A blind comparison's answer as it really was (fields after ``model`` absent for a
    comparison kept before the gateway kept them)."""

    model_config = CLOSED

    label: str
    model: str
    request_id: str | None = None
    finish_reason: str | None = None
    error: AnswerError | None = None


class ScoreResponse(BaseModel):
    model_config = CLOSED

    compare_id: str
    tenant: str
    scores: list[LearnedScore] = Field(description="What each score taught.")
    answers: list[RevealedAnswer] | None = Field(
        None, description="Every label's model and what its answer really was: present for "
                          "a blind comparison alone.")
    memory: MemoryStatus = Field(description="The tenant's memory after the scores.")


class LearnedRouterCounts(BaseModel):
    model_config = CLOSED

    events: int | None = Field(description="Outcomes learned (null: not known by model for a "
                                           "key narrowed to some models).")
    outcomes: int | None


class ModelQuality(BaseModel):
    model_config = CLOSED

    n: int
    mean_quality: float


class FeedbackLogKept(BaseModel):
    model_config = CLOSED

    pruned: bool = Field(description="Whether retention deleted feedback rows (still learned, "
                                     "no longer counted in feedback); for a client key, rows "
                                     "of its own tenant.")
    kept_since: float | None = Field(description="Time of the oldest row kept (for a client "
                                                 "key: of its tenant's rows; null: none).")
    first_kept: int | None = Field(None, description="Admin only: the oldest row's position.")
    pruned_rows: int | None = Field(None, description="Admin only: rows pruned before it.")


class TenantLearning(BaseModel):
    model_config = CLOSED

    memory: MemoryStatus
    learned_router: LearnedRouterCounts
    feedback: dict[str, ModelQuality] = Field(description="Per model: the outcomes the "
                                                          "feedback log keeps and their mean "
                                                          "quality.")
    feedback_log: FeedbackLogKept | None = Field(
        None, description="What of the tenant's own feedback rows the log keeps: whether "
                          "retention pruned some (its learned router still holds them; "
                          "feedback no longer counts them) and the time of its oldest kept, "
                          "as the status's feedback_log says to its keys; absent without a "
                          "store.")
    narrowed_to: list[str] | None = Field(None, description="For a key limited to some "
                                                            "models, or a tenant the admin "
                                                            "names (?tenant=) whose config "
                                                            "lists its models: those the "
                                                            "figures count.")


class StatusResponse(BaseModel):
    model_config = CLOSED

    tenants: dict[str, TenantLearning]
    exploration: float
    memory_size: int
    experiments: list[str] = Field(description="The experiments (of the caller's tenant, for "
                                               "a client key).")
    feedback_log: FeedbackLogKept | None = Field(description="Null without a store.")
    replayed: int | None = Field(None, description="Admin only: feedback rows replayed at "
                                                   "start.")
    from_checkpoint: int | None = Field(None, description="Admin only: outcomes restored from "
                                                          "the learning checkpoint.")


class FeedbackResponse(BaseModel):
    """What one piece of feedback did."""

    model_config = CLOSED

    decision_id: str
    tenant: str = Field(description="The tenant whose outcome it is (the decision's).")
    model: str = Field(description="The model it is about.")
    quality: float = Field(description="The outcome learned, 0 to 1 (success: 1 or 0).")
    replaced: bool = Field(description="Whether it replaced an earlier outcome of this "
                                       "decision and model.")
    previous_quality: float | None
    event_id: str
    kind: Literal["decision", "model"] = Field(
        description="decision: a routed answer's, which teaches routing; model: a request "
                    "that named its model, a quality observation of that model.")
    teaches_routing: bool
    cost: float | None = Field(description="What the answer cost (in cost_unit), as the "
                                           "feedback said or as the gateway priced it; null: "
                                           "unknown.")
    cost_from: Literal["feedback", "answer", "kept"] | None = Field(
        description="Where cost comes from: the feedback, the gateway's accounting of the "
                    "answer, or the earlier outcome's (a repeat without a cost).")
    cost_unit: Literal["usd", "weights"] = Field(
        description=f"What cost is in: usd ({COST_UNITS['usd']}) when the catalog prices every "
                    f"model, else weights ({COST_UNITS['weights']}: US dollars for the "
                    "bundled weights).")
    note: str | None = Field(None, description="Why it teaches less than it might (absent "
                                               "when it teaches all it can).")


# Admin: model health --------------------------------------------------------------------------

class HealthError(BaseModel):
    model_config = CLOSED

    kind: str = Field(description="The failure's kind, as a request log entry's error_kind.")
    at: float = Field(description="When it happened (epoch seconds).")
    age_s: float = Field(description="Seconds since.")
    detail: str = Field(description="What the upstream said (redacted, at most 300 "
                                    "characters).")


class ModelHealth(BaseModel):
    model_config = CLOSED

    status: Literal["healthy", "degraded", "down"]
    circuit: Literal["closed", "open", "half_open"]
    success_rate: float | None = Field(description="Over the window's calls; null before any.")
    window_calls: int = Field(description="Calls in the window (the last breaker.window "
                                          "within breaker.window_s).")
    latency_ewma_ms: float | None = Field(description="Exponentially weighted mean latency of "
                                                      "its successes (time to first token for "
                                                      "streams); null before any.")
    successes: int = Field(description="Since the start or the last reset.")
    failures: int
    consecutive_failures: int
    retry_in_s: float | None = Field(description="While the circuit is open: seconds until a "
                                                 "probe may go.")
    rate_limited_for_s: float | None = Field(description="Seconds an upstream's Retry-After "
                                                         "still keeps it out.")
    last_success_at: float | None = Field(description="Epoch seconds; null before any.")
    last_seen: float | None = Field(description="Its latest success or failure (epoch "
                                                "seconds); null before any.")
    recent_errors: list[HealthError] = Field(description="Newest first.")


class BreakerSettings(BaseModel):
    model_config = CLOSED

    failure_threshold: int = Field(description="Failures in a row that open a circuit.")
    error_rate_threshold: float = Field(description="An error rate over min_samples calls "
                                                    "that opens it (1: never the rate).")
    min_samples: int
    window: int = Field(description="Calls the success rate is over.")
    window_s: float = Field(description="Seconds the success rate is over.")
    cooldown_s: float = Field(description="How long an opened circuit stays open, doubling "
                                          "at each failed probe.")
    max_cooldown_s: float


class HealthSnapshot(BaseModel):
    """Every catalog model's health (and any other model called since), the breaker's
    thresholds and whether auto ranks degraded and down models last."""

    model_config = CLOSED

    generated_at: float = Field(description="Epoch seconds.")
    models: dict[str, ModelHealth]
    breaker: BreakerSettings
    prefer_healthy: bool


# Learning: experiments ------------------------------------------------------------------------

class ArmReport(BaseModel):
    """One arm: its settings as configured, and how it does."""

    model_config = CLOSED

    arm: str
    weight: float = Field(description="Its share of the traffic, against the others'.")
    policy: str | None = Field(description="Its policy (null: the live one).")
    cost_weight: float | None = Field(description="Its λ (null: the usual one).")
    models: list[str] | None = Field(description="The models it routes among (null: all).")
    decisions: int = Field(description="Decisions it made.")
    n: int = Field(description="Of them, those scored by feedback.")
    pruned_decisions: int = Field(description="Decisions retention pruned, counted as they "
                                              "stood then.")
    mean_quality: float | None = Field(description="Null before any score.")
    interval: list[float] | None = Field(description="95% interval of mean_quality, [low, "
                                                     "high]; null until it can be measured.")
    interval_method: Literal["none", "wilson", "t"]
    mean_cost_usd: float | None = Field(description="Over the answers whose cost is known.")
    cost_unknown_decisions: int


class ExperimentReport(BaseModel):
    """How each arm of an experiment does, its winner and its promotion."""

    model_config = CLOSED

    experiment: str
    enabled: bool = Field(description="Whether it takes traffic (false: disabled in the "
                                      "config, or ended).")
    created_at: float | None = Field(description="When it was created at run time (POST "
                                                 "/v1/router/experiments; null: the config's).")
    ended_at: float | None = Field(description="When it was ended (DELETE "
                                               "/v1/router/experiments/{name}; null: it runs, "
                                               "or it is the config's).")
    split: float | None = Field(description="B's share of the traffic, for one created at run "
                                            "time of two strategies (arms a and b); else null.")
    tenants: list[str] | None = Field(description="Who takes part (null: every tenant).")
    min_n: int = Field(description="Scored decisions each arm needs before one can win.")
    arms: list[ArmReport]
    winner: str | None = Field(description="Null until the evidence names one (see rule).")
    rule: str = Field(description="How a winner is named, in words.")
    promoted: str | None = Field(description="The arm all traffic goes to (null: split).")
    promotion: str | None = Field(description="Why: winner or chosen; or why the promotion "
                                              "kept does not apply.")
    intervals: str = Field(description="How the intervals are computed, in words.")
    feedback_log: FeedbackLogKept | None = Field(description="What of the feedback log the "
                                                             "figures cover; null without a "
                                                             "store.")


class ExperimentList(BaseModel):
    model_config = CLOSED

    data: list[ExperimentReport] = Field(description="Each experiment's report: the config's, "
                                                     "those created at run time and running, "
                                                     "then those ended.")


# Admin: cost, savings, SLA, forecast and suggestion reports ------------------------------------

class SavingsReport(BaseModel):
    """What the window's answered requests cost against what they would have cost on one
    comparison model, priced on the same tokens."""

    model_config = CLOSED

    comparison_model: str | None = Field(description="The model priced against (null: none "
                                                     "fits, see basis).")
    basis: str = Field(description="Why that model, in words (given, the strongest logged, "
                                   "the dearest auto may choose).")
    requests: int = Field(description="Answered requests priced both ways.")
    unpriced_requests: int = Field(description="Answered requests one of the two prices "
                                               "could not price (left out of the sums).")
    actual_cost_usd: float
    comparison_cost_usd: float
    savings_usd: float = Field(description="comparison_cost_usd - actual_cost_usd.")
    savings_pct: float = Field(description="savings_usd / comparison_cost_usd (0 when that "
                                           "is 0).")


class CostShare(BaseModel):
    """The requests of one tenant or key, and what they cost."""

    model_config = CLOSED

    requests: int
    cost_usd: float = Field(description="The summed cost of its answers of known cost.")
    cost_unknown_requests: int = Field(description="Its answers whose cost is unknown (a model "
                                                   "without prices, an upstream that reported "
                                                   "no usage): not in cost_usd, and not free.")


class ModelCost(CostShare):
    """The requests one model answered, what they cost and their tokens."""

    prompt_tokens: int
    completion_tokens: int


class CostReport(BaseModel):
    """Requests and cost over the last period by answering model, tenant and key, with the
    savings against a comparison model."""

    model_config = CLOSED

    period: Literal["day", "week", "month"] = Field(description="24 h, 7 d or 30 d up to "
                                                                "until.")
    since: float = Field(description="The window's start (epoch seconds).")
    until: float = Field(description="Its end (epoch seconds).")
    tenant: str | None = Field(description="?tenant=, or null for every tenant.")
    requests: int = Field(description="Chat requests logged in the window.")
    answered: int = Field(description="Of them, those a model answered.")
    total_cost_usd: float = Field(description="The summed cost of the answers of known cost.")
    cost_unknown_requests: int = Field(description="Answers whose cost is unknown (see "
                                                   "by_model).")
    charged_usd: float = Field(description="What budgets were charged: the requests' charges "
                                           "and charged_at_expiry_usd.")
    charged_at_expiry_usd: float = Field(description="Charged for reservations a stop or "
                                                     "crash left open, at their expiry.")
    prompt_tokens: int
    completion_tokens: int
    avg_cost_per_request_usd: float = Field(description="Over the answers of known cost (0: "
                                                        "none).")
    by_model: dict[str, ModelCost] = Field(description="Per answering model, dearest first.")
    by_tenant: dict[str, CostShare] = Field(description='Per tenant ("default": requests '
                                                        "without one), dearest first.")
    by_key: dict[str, CostShare] = Field(description='Per client key id ("(none)": requests '
                                                     "without a key), dearest first.")
    pruned_keys: list[str] = Field(description="The ids of by_key whose records keys.db no "
                                               "longer holds, sorted: revoked or expired keys "
                                               "pruned since (see store.retention_days and "
                                               "governance.max_keys); their spend stays "
                                               "reported under the id.")
    savings: SavingsReport


class SLABreaches(BaseModel):
    model_config = CLOSED

    latency: int = Field(description="Requests slower than max_latency_ms.")
    cost: int = Field(description="Decisions made with the hour's SLA budget spent.")
    quality: int = Field(description="Decisions whose choice fell below min_quality_score.")


class SLAView(SLASettings):
    """An SLA as in force, every setting given (null when unset)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True,
                              json_schema_serialization_defaults_required=True)


class SLAReport(BaseModel):
    """SLA compliance of the chat requests of the last hours, each against its tenant's SLA
    (its own, else the default)."""

    model_config = CLOSED

    since: float = Field(description="The window's start (epoch seconds).")
    until: float = Field(description="Its end (epoch seconds).")
    tenant: str | None = Field(description="?tenant=, or null for every tenant.")
    sla: SLAView | None = Field(description="The SLA in force for tenant (null: none).")
    budget_account: str = Field(description="Whose spend the hourly SLA budget watches, in "
                                            "words.")
    budget_cost_unknown_requests: int = Field(description="This hour's answers of unknown "
                                                          "cost that spend could not sum.")
    total_requests: int
    compliance_rate: float = Field(description="The share of requests that met their SLA (1 "
                                               "with none).")
    breaches: SLABreaches
    adjustments_made: int = Field(description="Requests routing adjusted to meet an SLA.")
    cost_savings_usd: float = Field(description="What the budget adjustments saved, priced "
                                                "on the requests' tokens.")
    avg_latency_ms: float | None = Field(description="Null without requests.")
    budget_utilization: float | None = Field(description="This hour's spend / "
                                                         "budget_per_hour_usd; null without "
                                                         "one.")


class ModelForecast(BaseModel):
    model_config = CLOSED

    requests_pct: float = Field(description="Its share of the requests, 0 to 1.")
    cost_per_request_usd: float | None = Field(description="Null: the model has no prices or "
                                                           "is gone from the catalog.")
    hourly_cost_usd: float | None


class ForecastReport(BaseModel):
    """Projected spend of a traffic assumption, split over the models as the logged routing mix
    splits them."""

    model_config = CLOSED

    requests_per_hour: float
    avg_input_tokens: float
    avg_output_tokens: float
    mix_basis: str = Field(description="What the mix was read from, in words.")
    hourly_cost_usd: float | None = Field(description="Of the priced models' shares alone; "
                                                      "null when no model of the mix is "
                                                      "priced (the spend is unknown).")
    unpriced_models: list[str] = Field(description="Catalog models of the mix without prices "
                                                   "(not projected as free).")
    unpriced_requests_pct: float
    removed_models: list[str] = Field(description="Models of the mix gone from the catalog.")
    removed_requests_pct: float
    daily_cost_usd: float | None
    monthly_cost_usd: float | None = Field(description="30 days.")
    breakdown_by_model: dict[str, ModelForecast]
    optimization_tip: str


class WhatIf(BaseModel):
    """The logged auto traffic re-routed offline: spend and expected quality against what
    happened."""

    model_config = CLOSED

    cost_weight: float | None = Field(description="The λ re-routed at (null: each decision's "
                                                  "own).")
    without: list[str] = Field(description="The models taken out of the pool.")
    requests: int = Field(description="Requests re-routed.")
    unservable_requests: int = Field(description="Requests none of the pool left could take.")
    since: float
    until: float
    actual_spend_usd: float
    spend_usd: float
    spend_delta_usd: float
    spend_delta_pct: float | None = Field(description="Null: a spend where there was none.")
    spend_delta_usd_per_day: float
    actual_expected_quality: float | None = Field(description="Null without requests.")
    expected_quality: float | None
    quality_delta: float | None
    models: dict[str, int] = Field(description="Requests per model the re-routing picks.")


class Suggestion(BaseModel):
    model_config = CLOSED

    suggestion: str = Field(description="What to change, in words.")
    kind: Literal["cost_weight", "pool"]
    estimated_savings_usd_per_day: float = Field(description="Negative: it costs more (to "
                                                             "buy quality).")
    tradeoff: str = Field(description="Its expected quality and spend, in words.")
    what_if: WhatIf


class SuggestionList(BaseModel):
    model_config = CLOSED

    data: list[Suggestion] = Field(description="Most saved first; empty without logged auto "
                                               "traffic to re-route, or when no other λ or "
                                               "pool saves money over it (see note).")
    routed_requests: int = Field(description="The answered auto requests of the period the "
                                             "suggestions re-routed.")
    note: str | None = Field(description="Why data is empty, in words: no answered auto "
                                         "request was logged in the period, or none of the "
                                         "other λ and pools saves money over them (null "
                                         "beside suggestions).")
