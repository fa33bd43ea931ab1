"""The configuration of keys, tenants, budgets, SLAs and escalation (keys of the YAML file)::

    auth: keys                      # none (default) | keys: /v1/chat/completions, /v1/route and
                                    # /v1/models need `Authorization: Bearer sp-...`
    allow_unauthenticated: false    # true: serve a non-loopback address without keys anyway
    tenants:                        # who keys belong to (keys are made at run time, tenants here)
      acme:
        models: [cheap, good, auto] # what its keys may use ("auto": routing among the others)
        cost_weight: 0.3            # its default λ
        budgets: [100/month, 10/day]
        rpm: 600                    # requests per minute, all its keys together (<= 10 million)
        tpm: 200000                 # tokens per minute (worst case reserved, actual settled;
                                    # <= 10 billion)
        max_in_flight: 16           # model calls in flight, all its keys together: a hard cap
                                    # in place of gateway.max_in_flight_per_tenant (<= 1 million)
        budget_curve: [[0.5, 0], [0.8, 1], [1.0, 5]]   # fraction of budget used -> least λ
        sla: {max_latency_ms: 3000, min_quality_score: 0.7}
        escalation: {low_confidence_threshold: 0.6, escalation_model: good}
        memory: {k: 20, min_records: 20}  # its own memory of outcomes (see learning.config)
    budgets:                        # budgets that are not a tenant's or a key's
      total: 1000/month             # the whole gateway
      models: {good: 50/day}
      providers: {anthropic: 300/month}
    sla:                            # the default SLA (a tenant's own replaces it)
      max_latency_ms: 5000
      budget_per_hour_usd: 5
      min_quality_score: 0.6
      auto_escalate_on_breach: true
    escalation:                     # the default confidence-gated escalation and constraints
      low_confidence_threshold: 0.0 # 0 = never escalate
      escalation_model: null        # null: the strongest model the request may use
      strategy: always              # always | log_only | ask
      min_tier: null                # auto only routes to models of this tier or above
      capability: null              # auto only routes to models with this capability
      prefer_provider: null         # auto routes among this provider's models when it has any
    governance:
      max_output_tokens: 4096       # the output cap set on budgeted requests that name none
      image_tokens: 2000            # prompt tokens reserved per image
      warning_threshold: 0.8        # budget alerts warn from this fraction used
      reservation_grace_s: 30       # a crash's reservation holds until its request's deadline
                                    # (gateway.max_total_s) plus this, then is charged (1-3600)
      max_keys: 10000               # live client keys (neither revoked nor expired) at most
                                    # (1 to 1 million): past it a new key is refused (409)

:func:`exposure_problem` says whether a configuration is safe to serve beyond loopback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from switchpoint._config_numbers import Boolean, Integer, Real, Text
from switchpoint._limits import MAX_RPM as MAX_RPM
from switchpoint._limits import MAX_TPM as MAX_TPM
from switchpoint._messages import json_quoted
from switchpoint.catalog import MAX_CATALOG_MODELS, MAX_TOKENS, Capability, Tier
from switchpoint.governance.budgets import MAX_BUDGET_USD, check_curve, parse_budgets
from switchpoint.learning.config import MemoryConfig
from switchpoint.learning.events import DEFAULT_TENANT, tenant_name_problem

#: The live client keys (neither revoked nor expired) a data_dir holds at most by default
#: (``governance.max_keys``), and the most that setting may allow.
DEFAULT_MAX_KEYS = 10_000
MOST_MAX_KEYS = 1_000_000

if TYPE_CHECKING:
    pass

# The most model calls in flight a tenant's share may be (gateway.max_in_flight_per_tenant, a
# tenant's own max_in_flight): far beyond the connections any one gateway holds.
MAX_IN_FLIGHT = 1_000_000
Strategy = Literal["always", "log_only", "ask"]


def _budget_list(value: Any) -> list[str]:
    if value is None:
        return []
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list):
        raise ValueError("must be a budget such as '50/month' or a list of them")
    parse_budgets(listed)
    return [str(v) for v in listed]


#: The budgets of a model or a provider: one budget, or a list of them (see :func:`_budget_list`).
_Budgets = Annotated[list[Text], BeforeValidator(_budget_list)]


class SLASettings(BaseModel):
    """Service levels ``auto`` routes for; each decision reports compliance, breaches and
    adjustments. With ``auto_escalate_on_breach`` a breach re-routes: among models fast enough
    (their recent latency), good enough (expected quality = 1 - expected error), and, when the
    hour's spend is over ``budget_per_hour_usd``, at a higher λ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_latency_ms: Real | None = Field(None, gt=0, allow_inf_nan=False)
    budget_per_hour_usd: Real | None = Field(None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    min_quality_score: Real | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    auto_escalate_on_breach: Boolean = True

    @field_validator("budget_per_hour_usd")
    @classmethod
    def _some_budget(cls, value: float | None) -> float | None:
        if value == 0:
            raise ValueError("must be > 0 (0 would count every request that costs anything "
                             "as over budget); leave it out for no hourly budget")
        return value


class EscalationSettings(BaseModel):
    """Confidence-gated escalation and the constraints ``auto`` routes under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low_confidence_threshold: Real = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    escalation_model: Text | None = Field(None, min_length=1)
    strategy: Strategy = "always"
    min_tier: Tier | None = None
    capability: Capability | None = None
    prefer_provider: Text | None = Field(None, min_length=1)


class TenantSettings(BaseModel):
    """One tenant: what its keys may use, its default λ, budgets, limits and service levels,
    and its memory of its own outcomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[Text] | None = Field(None, min_length=1, max_length=MAX_CATALOG_MODELS + 1)
    cost_weight: Real | None = Field(None, ge=0, le=1e4, allow_inf_nan=False)
    budgets: list[Text] = Field(default_factory=list)
    rpm: Integer | None = Field(None, ge=1, le=MAX_RPM)
    tpm: Integer | None = Field(None, ge=1, le=MAX_TPM)
    # Its share of the model calls in flight (see switchpoint.gateway.in_flight).
    max_in_flight: Integer | None = Field(None, ge=1, le=MAX_IN_FLIGHT)
    budget_curve: list[list[Real]] | None = None
    sla: SLASettings | None = None
    escalation: EscalationSettings | None = None
    memory: MemoryConfig | None = None

    @field_validator("budgets", mode="before")
    @classmethod
    def _budgets(cls, value: Any) -> list[str]:
        return _budget_list(value)

    @field_validator("budget_curve")
    @classmethod
    def _curve(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is not None:
            check_curve(value)
        return value

    @property
    def curve(self) -> tuple[tuple[float, float], ...] | None:
        """The λ curve (None: the default curve; empty: none)."""
        return None if self.budget_curve is None else check_curve(self.budget_curve)


class BudgetSettings(BaseModel):
    """Budgets that belong to no tenant or key: the whole gateway's, a model's, a provider's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: list[Text] = Field(default_factory=list)
    # (a key is a name, read by the rule of every mapping's key the config keys by names: a
    # date, a number or bytes is refused, never turned into text)
    models: dict[Text, _Budgets] = Field(default_factory=dict, max_length=MAX_CATALOG_MODELS)
    providers: dict[Text, _Budgets] = Field(default_factory=dict, max_length=MAX_CATALOG_MODELS)

    @field_validator("total", mode="before")
    @classmethod
    def _total(cls, value: Any) -> list[str]:
        return _budget_list(value)

    @field_validator("models", "providers", mode="before")
    @classmethod
    def _each(cls, value: Any) -> dict[Any, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must map names to budgets, e.g. {good: 50/day}")
        return value

    @property
    def any(self) -> bool:
        return bool(self.total or self.models or self.providers)


class GovernanceSettings(BaseModel):
    """Knobs of reservations and alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_output_tokens: Integer = Field(4096, ge=1, le=MAX_TOKENS)
    output_cap_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    image_tokens: Integer = Field(2000, ge=0, le=1_000_000)
    warning_threshold: Real = Field(0.8, gt=0, le=1, allow_inf_nan=False)
    # How long past its request's deadline a reservation holds: a crash's is charged then, and
    # a running request's hold is freed then (its settlement still charges it). At least a
    # second, so a request ending at its deadline settles before its hold lapses; at most an
    # hour, well inside how far back a start looks for open reservations.
    reservation_grace_s: Real = Field(30.0, ge=1, le=3600, allow_inf_nan=False)
    # The live client keys (neither revoked nor expired) data_dir's key store may hold: past
    # it, making a key is refused until one is revoked (or this raised).
    max_keys: Integer = Field(DEFAULT_MAX_KEYS, ge=1, le=MOST_MAX_KEYS)


def check_tenant_names(tenants: dict[str, TenantSettings]) -> dict[str, TenantSettings]:
    """The config's tenants, once every name is usable."""
    for name in tenants:
        problem = tenant_name_problem(name)
        if problem is not None:
            raise ValueError(f"tenant name {json_quoted(name, 80)} {problem}")
        if name == DEFAULT_TENANT:
            raise ValueError(f"tenant name {json_quoted(name)} is taken by the requests that name "
                             "no tenant (their feedback, memory and status go under it), so a "
                             "tenant of that name would govern some of them and not others; "
                             "give it another name (the deployment's own traffic is governed "
                             "by budgets.total and learning.memory)")
    return tenants
