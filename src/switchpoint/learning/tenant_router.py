"""Route for tenants: their own outcome memory first, the global learned router otherwise.

:class:`TenantRouter` wraps a :class:`~switchpoint.router.Router`. Every request is decided by
the router (with the tenant's overlay: the *global learned router* for that tenant); then the
tenant's :class:`~switchpoint.learning.tenant_memory.TenantKnnMemory` may override the choice
where the tenant's own evidence is strong. Outcomes go through the router (one event, applied
to the tenant's overlay and, by subscription, to its memory), so replaying the router's events
rebuilds both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from switchpoint._args import expect
from switchpoint._messages import json_quoted
from switchpoint.catalog import model_names
from switchpoint.decision import RoutingDecision
from switchpoint.embedding import check_embedding, check_prompt
from switchpoint.errors import InvalidInputError
from switchpoint.learning.events import FeedbackEvent, check_tenant
from switchpoint.learning.learner import OutcomeResult
from switchpoint.learning.tenant_memory import Fallback, MemoryChoice, TenantKnnMemory
from switchpoint.router import Router


@dataclass(frozen=True)
class TenantDecision:
    """Which model to call for a tenant's request, and on whose word.

    ``source`` is ``"memory"`` when the tenant's memory chose, ``"router"`` when the request fell
    back to the global learned router (``fallback`` and ``reason`` say why). ``decision`` is the
    router's own decision (scores, explanation, ``decision_id`` for the outcome).
    """

    model: str
    source: Literal["memory", "router"]
    fallback: Fallback | None
    reason: str
    decision: RoutingDecision
    memory: MemoryChoice

    @property
    def decision_id(self) -> str:
        return self.decision.decision_id


class TenantRouter:
    """A router plus per-tenant nearest-neighbour memory (see the module docstring)."""

    def __init__(self, router: Router, memory: TenantKnnMemory | None = None) -> None:
        expect("router", router, Router, "a Router (load_router() or Router(weights))")
        expect("memory", memory, TenantKnnMemory, "a TenantKnnMemory", optional=True)
        if router.policy.requires != "embedding":
            raise InvalidInputError("router", f"the tenant memory compares prompt vectors; the "
                                              f"{json_quoted(router.policy.name)} policy routes "
                                              "on text. "
                                              "Use the cluster or knn policy")
        self.router = router
        self.memory = memory or TenantKnnMemory()
        # The memory lets a tenant go, and takes it up again, with its learned evidence (a
        # router with a feedback log holds at most ``max_tenants`` tenants at once).
        router.learner.subscribe(self._learn, forget=self.memory.forget)

    def route(
        self,
        prompt: str | None = None,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        tenant: str | None = None,
        available_models: Sequence[str] | None = None,
        cost_weight: float | None = None,
        tools: bool = False,
    ) -> TenantDecision:
        """Decide one request for ``tenant`` (None: the deployment's own)."""
        # (read once: the router's decision and the memory's choose among the same list)
        available_models = model_names(available_models, "available_models")
        decision = self.router.route(prompt, available_models, cost_weight,
                                     embedding=embedding, tenant=tenant)
        if embedding is not None:
            vector = check_embedding(embedding, self.router.weights.dimension)
        else:
            vector = self.router.embedder.embed(  # (cached for the tenant: no new work)
                [check_prompt(prompt)], scope=check_tenant(tenant))
        # (those the decision weighed: a model registered since it was made is not among them)
        candidates = [m for m in self.router.check_candidates(available_models)
                      if m in decision.expected_costs]
        # (the scale of those it weighed: a dearer model registered since would rescale them)
        scale = self.router.cost_scale_of(candidates) or 1.0
        costs = {m: decision.expected_costs[m] / scale for m in candidates}
        # The tenant's records are read while it is held: another tenant's request, decided
        # meanwhile, could otherwise let it go (past the router's max_tenants) between the
        # router's decision and this one, and the memory would be found empty.
        with self.router.learner.holding(tenant):
            choice = self.memory.suggest(tenant, vector[0], candidates, costs,
                                         decision.selected_model,
                                         cost_weight=decision.cost_weight, tools=tools)
        if choice.model is None:
            return TenantDecision(decision.selected_model, "router", choice.fallback,
                                  f"global learned router ({choice.fallback}): {choice.reason}",
                                  decision, choice)
        if choice.model != decision.selected_model:
            self.router.learner.memory.set_chosen(decision.decision_id, choice.model,
                                                  decision.expected_costs[choice.model])
        return TenantDecision(choice.model, "memory", None, choice.reason, decision, choice)

    def report_outcome(self, decision_id: str, quality_score: float | None = None,
                       success: bool | None = None, *, model: str | None = None,
                       tenant: str | None = None) -> OutcomeResult:
        """As :meth:`Router.report_outcome` (the memory learns through the same event)."""
        return self.router.report_outcome(decision_id, quality_score, success, model=model,
                                          tenant=tenant)

    def _learn(self, event: FeedbackEvent) -> None:
        if event.embedding is not None:
            self.memory.apply(event)
