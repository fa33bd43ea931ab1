"""What one live snapshot learns with: its router, its experiment arms' routers, its tenants'
memories and the experiments (:class:`LiveLearning`), which decides an ``auto`` request (the
learned router, then the tenant's memory), learns each event, replays the feedback log, and
saves and takes up its state for a learning checkpoint. The
:class:`~switchpoint.gateway.learning.GatewayLearning` gives each snapshot one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from switchpoint._messages import json_quoted, listed_names
from switchpoint.config import Settings
from switchpoint.decision import RoutingDecision
from switchpoint.errors import SwitchpointError
from switchpoint.gateway.experiments import Assignment, Experiments
from switchpoint.learning.checkpoint import CheckpointError, State
from switchpoint.learning.events import DEFAULT_TENANT, FeedbackEvent, check_tenant
from switchpoint.learning.memory import PendingDecision
from switchpoint.learning.tenant_memory import TenantKnnMemory
from switchpoint.router import Router
from switchpoint.store.learning import LoggedFeedback, PendingRecord


@dataclass(frozen=True)
class Applied:
    """What one event did: the quality it replaced, and whether the routers learned it."""

    previous: float | None
    routers: int
    memory: bool
    in_weights: int = 0  # of ``routers``: those whose weights held it already (an export)


class LiveLearning:
    """What one live snapshot learns with: its router, its experiment arms' routers (one per
    policy an arm names), its tenants' memories, the experiments."""

    def __init__(self, router: Router, settings: Settings, arms: Mapping[str, Router],
                 experiments: Experiments) -> None:
        self.router = router
        self.settings = settings
        self.arm_routers = dict(arms)
        self.experiments = experiments
        configs = {name: t.memory.library() for name, t in settings.tenants.items()
                   if t.memory is not None}
        if settings.learning.memory is not None:
            configs[DEFAULT_TENANT] = settings.learning.memory.library()
        self.memory_tenants = frozenset(configs)
        self.memory = TenantKnnMemory(tenants=configs)
        self.replayed = 0  # events taken up from the log as this snapshot went live
        self.skipped = 0
        self.in_weights = 0  # of those replayed: held by the weights already (an export)
        self.restored = 0  # of them, how many came from a checkpoint
        self.events = 0  # events learned in all (taken up, then live)
        self.checkpointed = 0  # of them, how many the newest checkpoint holds
        self.tried = 0  # events learned when a checkpoint was last tried
        # The log position up to which this state is the fold of every row: rows past it are
        # this process's own, or it has not learned them yet (see ``GatewayLearning._take_up``).
        self.covered = 0
        # Per router (by id) and tenant: the log position through which that router's weights
        # already hold the tenant's outcomes (exported from this log), so a replay skips them.
        self.folded: dict[tuple[int, str], int] = {}
        # The log position up to which this state took up none of the rows but those of the
        # decisions feedback named since (a gateway that does not replay the log: see
        # ``GatewayLearning.replays``); 0 when it took up the log.
        self.passed_over = 0

    @property
    def configured(self) -> bool:
        """Whether anything here changes decisions (memories, experiments, exploration): the
        routing answer then carries the learning fields."""
        return bool(self.memory_tenants or self.settings.experiments
                    or self.settings.learning.exploration)

    def routers(self) -> list[Router]:
        out = [self.router]
        for router in self.arm_routers.values():
            if all(router is not r for r in out):
                out.append(router)
        return out

    def router_for(self, assignment: Assignment | None) -> Router:
        if assignment is None or assignment.config.policy is None:
            return self.router
        return self.arm_routers.get(assignment.config.policy, self.router)

    # Deciding --------------------------------------------------------------------------------

    def decide(self, text: str | None, allowed: Sequence[str] | None, cost_weight: float | None,
               *, tenant: str | None, tools: bool = False,
               assignment: Assignment | None = None,
               embedding: Sequence[float] | npt.NDArray[np.float32] | None = None,
               estimate_tokens: tuple[int, int] | None = None) -> RoutingDecision:
        """Route one request: the (arm's) learned router for the tenant, then the tenant's
        memory if it has one. Runs on a worker thread (embedding is CPU work)."""
        name = check_tenant(tenant)
        router = self.router_for(assignment)
        notes: list[str] = []
        if assignment is not None:
            notes.append(_arm_note(assignment, cost_weight, allowed))
            arm_models = assignment.config.models
            if arm_models:
                narrowed = [m for m in (allowed if allowed is not None else arm_models)
                            if m in arm_models]
                if narrowed:
                    allowed = narrowed
                else:
                    notes.append("None of the arm's models may serve this request; its other "
                                 "settings apply.")
        decision = router.route(text, allowed, cost_weight, embedding=embedding, tenant=name,
                                estimate_tokens=estimate_tokens)
        if assignment is not None:
            decision = replace(decision, experiment=assignment.experiment, arm=assignment.arm,
                               reasoning=[*decision.reasoning, *notes])
        if name in self.memory_tenants:
            decision = self._consult_memory(router, decision, name, text, embedding, tools)
        return decision

    def _consult_memory(self, router: Router, decision: RoutingDecision, tenant: str,
                        text: str | None, embedding: Any, tools: bool) -> RoutingDecision:
        if decision.source == "exploration":
            return replace(decision, reasoning=[
                *decision.reasoning, "Tenant memory not consulted: this decision explores."])
        if router.weights.dimension != self.router.weights.dimension:
            return replace(decision, reasoning=[
                *decision.reasoning, "Tenant memory not consulted: this arm's router embeds "
                                     "prompts differently from the memory's."])
        if embedding is not None:
            vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        else:
            # (cached: routing embedded it for this tenant)
            vector = router.embedder.embed([text or ""], scope=tenant)[0]
        candidates = list(decision.all_scores)
        scale = router.cost_scale(candidates) or 1.0
        costs = {m: decision.expected_costs.get(m, 0.0) / scale for m in candidates}
        choice = self.memory.suggest(tenant, vector, candidates, costs, decision.selected_model,
                                     cost_weight=decision.cost_weight, tools=tools)
        if choice.model is None:
            assert choice.fallback is not None
            return replace(decision, source="router", memory_fallback=str(choice.fallback),
                           reasoning=[*decision.reasoning,
                                      f"Tenant memory fell back to the learned router "
                                      f"({choice.fallback}): {choice.reason}."])
        chosen = choice.model
        note = f"Tenant memory: {choice.reason}."
        if chosen == decision.selected_model:
            return replace(decision, source="memory", memory_fallback="",
                           reasoning=[*decision.reasoning, note])
        router.learner.memory.set_chosen(decision.decision_id, chosen,
                                         decision.expected_costs.get(chosen))
        rest = [m for m in decision.all_scores if m != chosen]
        return replace(
            decision, selected_model=chosen, source="memory", memory_fallback="",
            expected_error=decision.expected_errors.get(chosen, decision.expected_error),
            cost_adjusted_score=decision.all_scores[chosen],
            expected_cost=decision.expected_costs.get(chosen, decision.expected_cost),
            fallback_models=rest,
            reasoning=[*decision.reasoning, f"{note} It overrides the learned router's "
                                            f"{decision.selected_model}."])

    def logged_as(self, decision: RoutingDecision, policy: str, weights_id: str
                  ) -> tuple[str, str]:
        """The policy and weights a decision is logged under: an experiment arm's router's,
        when one decided it."""
        for name, router in self.arm_routers.items():
            if router is not self.router and router.learner.memory.get(
                    decision.decision_id) is not None:
                return name, router.weights_id
        return policy, weights_id

    def pending(self, decision: RoutingDecision) -> PendingRecord | None:
        """What feedback on ``decision`` will need, to keep in the store: its remembered entry,
        made to name the model the decision names first (see :meth:`follow`)."""
        for router in self.routers():
            entry = router.learner.memory.get(decision.decision_id)
            if entry is not None:
                return PendingRecord(self._followed(router, entry, decision), router.weights_id)
        return None

    def follow(self, decision: RoutingDecision) -> None:
        """Feedback on ``decision`` that names no model teaches the model the decision names:
        when the governance re-targeted the router's choice under the same decision id
        (confidence-gated escalation), the remembered entry still names the router's pick,
        and would credit the escalation model's outcome to it."""
        for router in self.routers():
            entry = router.learner.memory.get(decision.decision_id)
            if entry is not None:
                self._followed(router, entry, decision)
                return

    @staticmethod
    def _followed(router: Router, entry: PendingDecision, decision: RoutingDecision
                  ) -> PendingDecision:
        model = decision.selected_model
        if entry.chosen == model:
            return entry
        cost = decision.expected_costs.get(model)
        router.learner.memory.set_chosen(decision.decision_id, model, cost)
        return replace(entry, chosen=model, expected_cost=cost)

    def outcome_inputs(self, text: str, tenant: str
                       ) -> tuple[npt.NDArray[np.float32], tuple[tuple[int, float], ...] | None]:
        """The prompt's vector and the units of the learned router it falls in (what an
        outcome for it teaches with), computed as routing would."""
        router = self.router
        vector = router.embedder.embed([text], scope=check_tenant(tenant))
        policy, _ = router.learner.policy_for(tenant)
        inputs, _ = router.prepare([text], vector if router.policy.requires == "embedding"
                                   else None)
        try:
            est = policy.estimate(inputs)
        except SwitchpointError:
            return vector[0], None
        if est.unit_probabilities is not None:
            p = est.unit_probabilities[0]
            units = tuple((int(u), float(p[u])) for u in np.flatnonzero(p >= 1e-4))
        else:
            units = ((int(est.unit_ids[0]), 1.0),)
        return vector[0], units

    # Learning --------------------------------------------------------------------------------

    def learn(self, event: FeedbackEvent, weights_id: str | None, *,
              skip: Router | None = None, seq: int | None = None) -> Applied:
        """Apply one event to every router of the snapshot (but ``skip``, which already has it)
        and to its tenant's memory. An event made under other weights is applied by its
        vector alone (its units belong to those weights), its measured cost rebased to the
        router's cost units (see ``Router.rebased_cost``); a router that cannot learn it (a
        model it has no profile for, a policy that learns from units it lacks) passes, and so
        does one whose weights already hold it (a replayed row at log position ``seq`` that
        an export folded in: see ``folded``)."""
        previous: float | None = None
        routers = in_weights = 0
        source = next((r for r in self.routers() if r.weights_id == weights_id), None)
        for router in self.routers():
            if router is skip:
                routers += 1
                continue
            if (seq is not None and seq <= self.folded.get((id(router), event.tenant), 0)
                    and event.model in router.policy.models_):
                routers += 1  # its weights hold it already (not a model without a profile's)
                in_weights += 1
                continue
            own = event if weights_id == router.weights_id else replace(
                event, units=None, measured_cost=None if event.measured_cost is None
                else router.rebased_cost(event.model, event.measured_cost, source))
            try:
                before = router.learner.apply(own)
            except SwitchpointError:
                continue
            routers += 1
            if previous is None:
                previous = before
        remembered = False
        if event.tenant in self.memory_tenants and event.embedding is not None and (
                len(event.embedding) == self.router.weights.dimension):
            before = self.memory.apply(replace(event, model=event.served_model))
            remembered = True
            if previous is None:
                previous = before
        if routers or remembered:
            self.events += 1
        return Applied(previous, routers, remembered, in_weights)

    def replay(self, rows: Iterator[LoggedFeedback]) -> None:
        """Rebuild the learning state from the log, in order (quality observations of named
        models teach no router and are passed over)."""
        for row in rows:
            if row.kind == "model":
                continue
            applied = self.learn(row.event, row.weights_id, seq=row.seq)
            if applied.routers or applied.memory:
                self.replayed += 1
                # Held by every router's weights (a tenant memory may still take it up).
                if applied.routers and applied.in_weights == applied.routers:
                    self.in_weights += 1
            else:
                self.skipped += 1

    # Checkpoints -----------------------------------------------------------------------------

    def checkpoint_key(self) -> str:
        """What this state's fold depends on besides the events: each router's weights and
        overlay settings, each memory's settings (see :mod:`switchpoint.learning.checkpoint`)."""
        parts = {"routers": [[r.weights_id, r.learner.settings.novelty_threshold,
                              r.learner.settings.max_new_clusters] for r in self.routers()],
                 "memory": {t: asdict(self.memory.settings_for(t))
                            for t in sorted(self.memory_tenants)},
                 "dimension": self.router.weights.dimension}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def state(self) -> State:
        """Everything learned: every router's learner and the tenants' memories."""
        state = State({"events": self.events, "skipped": self.skipped,
                       "in_weights": self.in_weights,
                       "routers": [r.weights_id for r in self.routers()]})
        for i, router in enumerate(self.routers()):
            state.put(f"router{i}", router.learner.state())
        state.put("memory", self.memory.state())
        return state

    def restore(self, state: State) -> None:
        """Take up a :meth:`state` saved under the same :meth:`checkpoint_key` (a fresh
        snapshot: nothing learned yet). If it does not fit, :class:`CheckpointError`, and
        nothing is learned."""
        routers = self.routers()
        events, skipped = state.meta.get("events"), state.meta.get("skipped")
        if state.meta.get("routers") != [r.weights_id for r in routers] or not (
                isinstance(events, int) and isinstance(skipped, int)):
            raise CheckpointError("made for other routers")
        try:
            for i, router in enumerate(routers):
                router.learner.restore(state.part(f"router{i}"))
            self.memory.restore(state.part("memory"), self.router.weights.dimension)
        except CheckpointError:
            empty = State({"tenants": [], "revisions": []})
            for router in routers:
                router.learner.restore(empty)
            self.memory.restore(State({"models": [], "tenants": [], "capacity": [], "ids": []}),
                                self.router.weights.dimension)
            raise
        self.events = self.replayed = self.restored = self.checkpointed = self.tried = events
        self.skipped = skipped
        # (a checkpoint written before it was kept: as many as it says, none)
        in_weights = state.meta.get("in_weights", 0)
        self.in_weights = (in_weights if isinstance(in_weights, int)
                           and not isinstance(in_weights, bool) and 0 <= in_weights <= events
                           else 0)

    # Inspection ------------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        names = set(self.memory_tenants) | set(self.router.learner.tenants())
        return sorted(names)

    def memory_status(self, tenant: str) -> dict[str, Any]:
        if tenant not in self.memory_tenants:
            return {"enabled": False}
        settings = self.memory.settings_for(tenant)
        examples = self.memory.size(tenant)
        warm_at = max(settings.min_records, 1)
        return {"enabled": True, "examples": examples, "cold": examples < warm_at,
                "warm_at": warm_at, "progress": round(min(1.0, examples / warm_at), 4),
                "models": self.memory.coverage(tenant),
                "settings": {"k": settings.k, "min_neighbours": settings.min_neighbours,
                             "min_similarity": settings.min_similarity,
                             "alpha": settings.alpha, "switch_penalty": settings.switch_penalty,
                             "confidence_floor": settings.confidence_floor,
                             "min_records": settings.min_records,
                             "max_records": settings.max_records}}


def _arm_note(assignment: Assignment, used: float | None,
              allowed: Sequence[str] | None = None) -> str:
    """What the arm sets, as it applied (``used``: the λ the request was routed at). Of the
    arm's models it names those among the request's candidates ``allowed`` (None: all): a
    caller limited to some models is told of no others."""
    config = assignment.config
    lam = "" if config.cost_weight is None else f"λ {config.cost_weight:g}" + (
        f", overridden by the request's λ {used:g}"
        if used is not None and used != config.cost_weight else "")
    shown = [m for m in config.models or () if allowed is None or m in allowed]
    parts = [f"policy {config.policy}" if config.policy else "", lam,
             f"models {listed_names(shown, quoted=True)}" if shown else ""]
    what = ", ".join(p for p in parts if p) or "the configured routing"
    return (f"Experiment {json_quoted(assignment.experiment)}, arm "
            f"{json_quoted(assignment.arm)} ({what}).")
