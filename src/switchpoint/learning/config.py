"""How the service learns from outcomes (keys of the YAML file)::

    learning:
      memory_size: 10000        # decisions remembered for feedback (also kept in data_dir, so
                                # a restart keeps them answerable); 0: none, learning is off
      exploration: 0.0          # share of `auto` decisions sent to another candidate (off;
                                # 1: all of them, the router's own pick is never served)
      seed: null                # exploration's random seed
      memory: {}                # the deployment's own tenant (requests without one) keeps a
                                # nearest-neighbour memory of its outcomes; omit: none
      compare_ttl_s: 3600       # how long a preference comparison waits for its scores
      max_compares: 1000        # comparisons waiting per tenant (its oldest go first)
    tenants:
      acme:
        memory:                 # this tenant's memory of its own outcomes (omit: none)
          k: 20                 # neighbours consulted
          min_neighbours: 5     # fewer similar outcomes: the learned router decides
          min_similarity: 0.5   # cosine a neighbour needs
          alpha: null           # cost weight of the memory's score (null: the request's λ)
          switch_penalty: 0.02  # what overriding the learned router must win by
          confidence_floor: 0.8 # chance the winner really leads, below which it does not
          min_records: 20       # outcomes before the memory answers at all (cold start)
          max_records: 5000     # outcomes kept; past that the oldest go first
    experiments:
      cheaper:
        tenants: [acme]         # who takes part (omit: every caller; `default` is the
                                # deployment's own traffic)
        min_n: 30               # scored decisions each arm needs before a winner is named
        arms:                   # name: {weight, policy, cost_weight, models}
          control: {}           # the configured routing
          thrifty: {cost_weight: 2.0}
          knn: {policy: knn, models: [cheap, good]}

An arm's ``weight`` is its share of the traffic (relative; 1 by default); ``policy`` routes
with another policy (bundled or under ``policies:``), ``cost_weight`` sets λ (a caller's own
``x-switchpoint-cost-weight`` still wins) and ``models`` narrows the candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from switchpoint._config_numbers import Boolean, Integer, Real, Text
from switchpoint._limits import MAX_MEMORY_SIZE
from switchpoint._messages import json_quoted
from switchpoint._names import MAX_NAME as MAX_NAME
from switchpoint._names import NAME as NAME
from switchpoint._names import NAME_RULE as NAME_RULE
from switchpoint.catalog import MAX_CATALOG_MODELS
from switchpoint.errors import InvalidInputError
from switchpoint.learning.events import MAX_TENANTS

if TYPE_CHECKING:
    from switchpoint.learning.tenant_memory import TenantSettings as MemorySettings

#: The most experiments a config may list: a tenant takes part in one enabled experiment at a
#: time, and each is checked at every reload and reported on with every arm's counts.
MAX_EXPERIMENTS = 100
#: The most arms an experiment may have: each needs its own evidence (min_n) to be judged.
MAX_ARMS = 16
#: The least share of its experiment's traffic an arm may have (its weight over the arms'
#: total): one under it would in practice never be served, so never compared.
MIN_ARM_SHARE = 1e-6


def check_name(value: str, what: str) -> str:
    """``value``, when it is a usable name (:data:`NAME`, the whole of it: a trailing newline
    is no part of a name); else a ``ValueError`` saying what ``what`` may hold."""
    if not NAME.fullmatch(value):
        raise ValueError(f"{what} {json_quoted(value, 80)} must be {NAME_RULE}")
    return value


class MemoryConfig(BaseModel):
    """A tenant's nearest-neighbour memory of its own outcomes (see
    :mod:`switchpoint.learning.tenant_memory`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: Integer = Field(20, ge=1, le=1000)
    min_neighbours: Integer = Field(5, ge=1, le=1000)
    min_similarity: Real = Field(0.5, ge=-1, le=1, allow_inf_nan=False)
    alpha: Real | None = Field(None, ge=0, le=1e4, allow_inf_nan=False)
    switch_penalty: Real = Field(0.02, ge=0, le=1, allow_inf_nan=False)
    confidence_floor: Real = Field(0.8, ge=0, le=1, allow_inf_nan=False)
    min_records: Integer = Field(20, ge=0, le=1_000_000)
    max_records: Integer = Field(5000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _consistent(self) -> MemoryConfig:
        try:  # the rules between settings live with the settings the memory runs on
            self.library()._check_consistent()
        except InvalidInputError as exc:
            raise ValueError(f"{exc.field} {exc.reason}") from None
        return self

    def library(self) -> MemorySettings:
        # (the memory's module, with NumPy, only where a config has a memory: every command
        # that reads a config reads this one)
        from switchpoint.learning.tenant_memory import TenantSettings as MemorySettings

        return MemorySettings(k=self.k, min_neighbours=self.min_neighbours,
                              min_similarity=self.min_similarity, alpha=self.alpha,
                              switch_penalty=self.switch_penalty,
                              confidence_floor=self.confidence_floor,
                              min_records=self.min_records, max_records=self.max_records)


class LearningConfig(BaseModel):
    """The ``learning:`` section (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_size: Integer = Field(10_000, ge=0, le=MAX_MEMORY_SIZE)
    exploration: Real = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    seed: Integer | None = Field(None, ge=0, le=2**63 - 1)
    memory: MemoryConfig | None = None
    compare_ttl_s: Real = Field(3600.0, gt=0, le=30 * 86400, allow_inf_nan=False)
    max_compares: Integer = Field(1000, ge=1, le=100_000)


class ArmConfig(BaseModel):
    """One arm of an experiment: what routing it uses, and its share of the traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: Real = Field(1.0, gt=0, le=1e6, allow_inf_nan=False)
    policy: Text | None = Field(None, min_length=1)
    cost_weight: Real | None = Field(None, ge=0, le=1e4, allow_inf_nan=False)
    # (the catalog's names and auto)
    models: list[Text] | None = Field(None, min_length=1, max_length=MAX_CATALOG_MODELS + 1)


class ExperimentConfig(BaseModel):
    """A named experiment: arms, who takes part, and how much evidence names a winner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: dict[Text, ArmConfig] = Field(min_length=2, max_length=MAX_ARMS)
    tenants: list[Text] | None = Field(None, min_length=1, max_length=MAX_TENANTS)
    min_n: Integer = Field(30, ge=2, le=1_000_000)
    enabled: Boolean = True

    # When it was created at run time (None: the config lists it), and, made of two
    # strategies, B's share of the traffic; see ``created_at`` and ``split``.
    _created_at: float | None = PrivateAttr(default=None)
    _split: float | None = PrivateAttr(default=None)

    @property
    def created_at(self) -> float | None:
        """When this experiment was created at run time (``Gateway.create_ab_test``, ``POST
        /v1/router/experiments``); None for one the config lists."""
        return self._created_at

    @property
    def split(self) -> float | None:
        """B's share of the traffic, for an experiment created at run time of two strategies
        (arms ``a`` and ``b``); else None."""
        return self._split

    def made_at_run_time(self, created_at: float, split: float | None) -> ExperimentConfig:
        """This experiment, marked as created at run time at ``created_at`` (with B's share
        of the traffic, ``split``, when it was made of two strategies)."""
        made = self.model_copy()
        made._created_at = created_at
        made._split = split
        return made

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, value: dict[str, ArmConfig]) -> dict[str, ArmConfig]:
        for name in value:
            check_name(name, "arm name")
        return value

    @field_validator("tenants")
    @classmethod
    def _each_tenant_once(cls, value: list[str] | None) -> list[str] | None:
        seen: set[str] = set()
        for name in value or ():
            if name in seen:
                raise ValueError(f"lists {json_quoted(name, 100)} twice; list each tenant once")
            seen.add(name)
        return value


def check_experiment_names(value: dict[str, ExperimentConfig]) -> dict[str, ExperimentConfig]:
    for name in value:
        check_name(name, "experiment name")
    return value
