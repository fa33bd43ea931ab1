"""The routing door: one prompt (or embedding) routed with the live router as its caller
(its allowed models, λ, budget curve, SLA, escalation and experiment), ranked by the gateway's
health when asked, and logged. :class:`RoutingDoor` is the
:class:`~switchpoint.gateway.engine.Gateway`'s; what it reads of the gateway is
:class:`RoutingHost`. The gateway's ``aroute``, ``route`` and ``check_size`` answer with it;
the chat door decides through the same ``_assign``, ``_decide`` and ``_policy``."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio.to_thread
import numpy as np

import switchpoint.gateway.accounting as accounting
from switchpoint._args import expect
from switchpoint.catalog import model_names
from switchpoint.config import Settings
from switchpoint.decision import RoutingDecision, check_cost_weight
from switchpoint.errors import StoreError, UnknownModelError
from switchpoint.gateway.ab_tests import ABTest, RuntimeExperiments
from switchpoint.gateway.body_size import PROMPT_ADVICE, check_body_size
from switchpoint.gateway.experiments import Assignment, check_experiment
from switchpoint.gateway.health import HealthTracker
from switchpoint.gateway.housekeeping import Housekeeping
from switchpoint.gateway.learning import GatewayLearning
from switchpoint.gateway.live import Live, RouterState
from switchpoint.gateway.observing import Told
from switchpoint.gateway.planning import healthy_choice
from switchpoint.governance.governor import Governor, Policy, Principal
from switchpoint.learning.events import check_tenant
from switchpoint.router import check_route_input
from switchpoint.store import SQLiteStore

log = logging.getLogger("switchpoint.gateway")

# How to send less than a chat request over max_request_bytes.
_SMALLER_CHAT = "Send fewer or shorter messages"


class Deciding(Protocol):
    """How a gateway decides where a request goes, which the routing and the chat door both
    look up on it (where a test may replace them): the room left to log it, what governs its
    caller, its experiment arm and the decision itself."""

    def _check_log_room(self) -> None: ...
    def _policy(self, settings: Settings, tenant: str | None,
                key_id: str | None) -> Policy | None: ...
    def _assign(self, live: Live, tenant: str | None, unit: str) -> Assignment | None: ...
    def _decide(self, live: Live, text: str | None, allowed: Sequence[str] | None,
                lam: float | None, *, tenant: str | None, tools: bool = False,
                assignment: Assignment | None = None,
                embedding: Sequence[float] | np.ndarray | None = None,
                estimate_tokens: tuple[int, int] | None = None) -> RoutingDecision: ...


class RoutingHost(Deciding, Protocol):
    """What the routing door reads of its gateway, each time it needs it: its parts (its
    health is made again as it is reset), the settings in force, and how it decides."""

    state: RouterState
    store: SQLiteStore | None
    governor: Governor
    learning: GatewayLearning
    ab_tests: RuntimeExperiments
    health: HealthTracker

    @property
    def settings(self) -> Settings: ...


class RoutingDoor:
    """Routes and logs the routing requests of one gateway (``host``)."""

    def __init__(self, host: RoutingHost, *, told: Told, housekeeping: Housekeeping) -> None:
        self._host = host
        self.state = host.state
        self.store = host.store
        self.governor = host.governor
        self.learning = host.learning
        self.ab_tests = host.ab_tests
        self._told = told
        self._housekeeping = housekeeping

    async def route(self, prompt: str | None = None,
                    available_models: Sequence[str] | None = None,
                    cost_weight: float | None = None, *,
                    embedding: Sequence[float] | np.ndarray | None = None,
                    key: str | None = None, tenant: str | None = None,
                    principal: Principal | None = None, measured: bool = False,
                    prefer_healthy: bool = False, auto_scale: bool = False,
                    estimate_tokens: Sequence[int] | None = None,
                    ab_test: str | ABTest | None = None) -> RoutingDecision:
        """:meth:`Gateway.aroute <switchpoint.gateway.engine.Gateway.aroute>`."""
        check_route_input(prompt, embedding)
        # (a list from here on: a tenant's or a key's limits read the list the router routes by)
        available_models = model_names(available_models, "available_models")
        if not measured:
            self.check_size({"prompt": prompt, "embedding": embedding, "cost_weight": cost_weight,
                             "available_models": available_models}, route=True)
        if cost_weight is not None:
            cost_weight = check_cost_weight(cost_weight, "cost_weight")
        expect("prefer_healthy", prefer_healthy, bool, "True or False")
        expect("auto_scale", auto_scale, bool, "True or False")
        live = self.state.live()
        tokens = live.router.check_estimate_tokens(estimate_tokens)
        self._host._check_log_room()
        self._housekeeping.maintain()
        settings = live.settings
        if principal is None:
            principal = await self.governor.aprincipal(settings, key=key, tenant=tenant)
        who = principal or Principal()
        if isinstance(ab_test, ABTest):
            ab_test = self.ab_tests.current(ab_test)
        if ab_test is not None:
            ab_test = check_experiment(settings, ab_test, check_tenant(who.tenant), "ab_test",
                                       self.ab_tests.ended)
        policy = self._host._policy(settings, who.tenant, who.key_id)
        assignment = self._host._assign(live, who.tenant, uuid.uuid4().hex)
        if cost_weight is None and assignment is not None:
            cost_weight = assignment.config.cost_weight

        async def base(_text: str, allowed: list[str] | None,
                       lam: float | None) -> RoutingDecision:
            return await anyio.to_thread.run_sync(lambda: made.made(self._host._decide(
                live, prompt, allowed, lam, tenant=who.tenant, assignment=assignment,
                embedding=embedding, estimate_tokens=tokens)))

        # (a decision made for a call cancelled before it is kept is forgotten again)
        with self.learning.made_for_a_call(live) as made:
            if policy is None:
                decision = await base("", available_models, cost_weight)
            else:
                catalog = live.router.catalog
                # (a route asks for "auto" among available_models: its errors name that field)
                self.governor.check_model(policy, "auto", catalog, field="available_models")
                self.governor.check_candidates(policy, catalog, "available_models",
                                               available_models)
                if available_models is not None:
                    try:
                        live.router.check_candidates(available_models)  # unknown names: a 400
                    except UnknownModelError as exc:
                        raise self.governor.unknown_model(policy, catalog, exc, "auto") from None
                allowed = self.governor.narrow(policy, catalog, available_models,
                                               field="available_models")
                self.governor.count_route(policy)
                decision = await self.governor.route(
                    base, "", allowed if allowed is not None else list(catalog.names),
                    cost_weight if cost_weight is not None else policy.cost_weight,
                    policy=policy, catalog=catalog, default_cost_weight=live.router.cost_weight)
            if prefer_healthy or auto_scale:
                decision = healthy_choice(decision, self._host.health,
                                          prefer_healthy=prefer_healthy, auto_scale=auto_scale)
            # (kept naming the model the decision names: feedback on it teaches that one)
            self.learning.keep_pending(live, decision)
            made.let_go(kept=decision)
        if self.store is not None:
            try:
                await asyncio.wrap_future(
                    self.store.append(accounting.decision_record(
                        decision, live, key_id=who.key_id, tenant=who.tenant),
                        keep_trying=True))
            except StoreError as exc:  # the decision stands; the log and the metric say so
                self._told.store_error()
                log.error("decision %s not logged: %s", decision.decision_id, exc)
        self._told.decision(decision)
        return decision

    def check_size(self, fields: Mapping[str, Any], *, route: bool = False) -> None:
        """Refuse a request whose body, as the HTTP door would receive it, is over
        ``max_request_bytes``, as that door does: an
        :class:`~switchpoint.errors.InvalidInputError` naming the argument that holds the most
        of it and the limit. ``fields`` are the request's arguments by name (None: left out);
        ``route``: a routing request (a long prompt gets the advice to send its end)."""
        expect("fields", fields, Mapping, "a mapping of argument names to values")
        fields = {name: value.tolist() if isinstance(value, np.ndarray) else value
                  for name, value in fields.items() if value is not None}
        check_body_size(fields, self._host.settings.max_request_bytes,
                        PROMPT_ADVICE if route else _SMALLER_CHAT)

    @staticmethod
    def assign(live: Live, tenant: str | None, unit: str) -> Assignment | None:
        """The experiment arm of a request of ``tenant`` whose session (or request) is
        ``unit``, if an experiment takes it."""
        if live.learning is None or not live.settings.experiments:
            return None
        return live.learning.experiments.assign(check_tenant(tenant), unit)

    @staticmethod
    def decide(live: Live, text: str | None, allowed: Sequence[str] | None,
               lam: float | None, *, tenant: str | None, tools: bool = False,
               assignment: Assignment | None = None,
               embedding: Sequence[float] | np.ndarray | None = None,
               estimate_tokens: tuple[int, int] | None = None) -> RoutingDecision:
        """One routing decision on the snapshot ``live`` (on a worker thread)."""
        if live.learning is None:
            return live.router.route(text, allowed, lam, embedding=embedding, tenant=tenant,
                                     estimate_tokens=estimate_tokens)
        return live.learning.decide(text, allowed, lam, tenant=tenant, tools=tools,
                                    assignment=assignment, embedding=embedding,
                                    estimate_tokens=estimate_tokens)

    def policy(self, settings: Settings, tenant: str | None,
               key_id: str | None) -> Policy | None:
        """What governs a caller, or None when nothing governs anyone (the fast path)."""
        if tenant is None and key_id is None and not Governor.governs(settings):
            return None
        return self.governor.policy(settings, tenant, key_id)
