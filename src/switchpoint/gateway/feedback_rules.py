"""What one piece of feedback did (:class:`FeedbackResult`), and the rules that say what it may
teach: the cost an answer's own accounting teaches (:func:`answer_cost`), the tenant and the
model an outcome must name to be kept (:func:`check_configured`, :func:`check_listed`), which
models' outcomes teach routing (:func:`learnable`), and what an outcome's answer says of the one
it replaced. :class:`~switchpoint.gateway.learning.GatewayLearning` applies them to each
report."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from switchpoint._messages import json_quoted, listed_names
from switchpoint.catalog import cost_figure, usd_text
from switchpoint.config import Settings
from switchpoint.errors import ConflictError, InvalidInputError
from switchpoint.learning.events import DEFAULT_TENANT, check_cost
from switchpoint.learning.learner import OutcomeResult
from switchpoint.learning.overlay import Held
from switchpoint.router import Router

log = logging.getLogger("switchpoint.gateway")
NO_ANSWER = ("this request got no answer from any model, so there is no answer to score; "
             "name the model the feedback is about")


@dataclass(frozen=True)
class FeedbackResult:
    """What one piece of feedback did. ``kind``: ``decision`` (on a routing decision: it
    teaches routing) or ``model`` (on a request that named its model: a quality observation of
    that model only)."""

    outcome: OutcomeResult
    kind: str
    teaches_routing: bool
    note: str = ""
    commits: tuple[Future[None], ...] = field(default=(), compare=False, repr=False)
    cost: float | None = None  # what the answer cost, as the feedback said or as it was priced
    # "feedback", "answer" (the gateway's own accounting) or "kept" (a repeat without a cost
    # keeps the one taken before)
    cost_from: str | None = None
    # what a cost is in: "usd" where the router's catalog prices every model, else "weights"
    # (the weights' cost units: see catalog.COST_UNITS)
    cost_unit: str = "usd"

    def __getstate__(self) -> dict[str, Any]:
        # A copy (pickled, deep-copied) holds what the feedback did, not the writes it waited
        # on: those belong to this process's store (a future holds a lock no pickle takes).
        return {**self.__dict__, "commits": ()}

    def to_dict(self) -> dict[str, Any]:
        out = self.outcome.to_dict()
        out.update(kind=self.kind, teaches_routing=self.teaches_routing,
                   cost=None if self.cost is None else cost_figure(self.cost, self.cost_unit),
                   cost_from=self.cost_from,
                   cost_unit=self.cost_unit)
        if self.note:
            out["note"] = self.note
        return out


def answer_cost(router: Router, model: str, cost: float | None, prompt_tokens: int | None
                ) -> float | None:
    """What the gateway's own accounting of an answer (``cost`` USD, None: not priced)
    teaches, in the weights' units (see ``Router.learnable_cost``); None when it teaches
    nothing. Only a router whose catalog prices every model learns from it: without prices
    there is no flat price to read it against. One far beyond the model's prices for the
    prompt is left out with a warning, not refused: the caller did not give it. Nor does
    the answer of a model a reload took out of the catalog: its prices went with it."""
    if cost is None or not router.catalog.all_priced or model not in router.catalog:
        return None
    try:
        return router.learnable_cost(model, check_cost(cost) or 0.0, prompt_tokens)
    except InvalidInputError:
        log.warning("an answer of %s priced at %s was not learned as its cost: beyond "
                    "what its catalog prices make of the prompt", model, usd_text(cost))
        return None


#: Why an outcome for a decision the live policy cannot read teaches no routing.
UNREADABLE = ("this decision was made by a policy that read the prompt another way (its "
              "vector, or its text, which is not kept), and the live policy cannot read it "
              "from what was kept, so this outcome is kept as a quality observation of its "
              "model and does not teach routing")


def check_configured(settings: Settings, tenant: str, config_read: bool = True) -> None:
    """409 when ``tenant`` (a decision's own) is no longer in the configuration (a reload
    removed it): its keys are turned away, and an outcome would teach a tenant that no longer
    routes; the deployment's own traffic (:data:`DEFAULT_TENANT`) is always there. Read from
    no config (``config_read=False``, see :func:`check_listed`), no tenant is configured: the
    refusal says to give the config the decision was served under."""
    if tenant == DEFAULT_TENANT or tenant in settings.tenants:
        return
    if not config_read:
        raise InvalidInputError("config", (
            f"this decision was made for tenant {json_quoted(tenant)}, and no config was read, "
            "so no tenant is configured and its outcome would teach nothing; give the config "
            "the decision was served under; nothing was kept"))
    known = listed_names(settings.tenants, quoted=True) or "none"
    raise ConflictError(f"decision_id: this decision was made for tenant {json_quoted(tenant)}, "
                        f"which is no longer in the configuration (tenants: {known}), so its "
                        "outcomes teach nothing; restore the tenant to the config and reload "
                        "to send them; nothing was learned", param="decision_id")


def check_listed(model: str, router: Router, config_read: bool) -> None:
    """Refuse, changing nothing, feedback on a decision answered by ``model`` that ``router``'s
    catalog does not hold when the gateway's settings were read from no config
    (``config_read=False``: a command given a data_dir alone, whose catalog is the weights' own
    models): the config the decision was served under would hold it, and there the outcome
    teaches routing, where here it would be kept as a quality observation teaching none. A
    gateway on its config keeps it as that observation (a reload took the model out)."""
    if config_read or model in router.models:
        return
    raise InvalidInputError("config", (
        f"{json_quoted(model, 100)}, the model that answered this decision, is not in the "
        "catalog read, and no config was read (the catalog is the weights' own models), so the "
        "outcome would teach no routing; give the config the decision was served under; "
        "nothing was kept"))


def learnable(router: Router, model: str) -> bool:
    """Whether outcomes of catalog model ``model`` can teach ``router`` (it has a profile, or
    the router's policy learns the outcomes of models without one)."""
    return model in router.models and router.outcome_profile(model) is not None


def still_held(router: Router, decision_id: str, tenant: str) -> str:
    """What a quality observation's note adds when ``router`` holds an outcome for the
    decision: an observation replaces the decision's last outcome in the feedback figures per
    model (its ``replaced`` and ``previous_quality`` say so), never the one the router
    learned, which goes on teaching routing."""
    held = router.learner.outcome(decision_id, tenant)
    if held is None:
        return ""
    return (f"; the learned router keeps this decision's outcome about {held.model} (quality "
            f"{held.quality:g}), which teaches its routing still: an observation takes the "
            "place of the decision's last outcome in the feedback figures per model only")


def last_replaced(outcome: OutcomeResult, last: float | None, held: Held | None
                   ) -> tuple[OutcomeResult, str]:
    """A routing outcome's answer and note: its ``replaced`` and ``previous_quality`` speak
    of the decision's last outcome, as a quality observation's do: ``last``, the latest the
    feedback log keeps (a quality observation of another model, it may be), or, once
    retention pruned them all, the one the learned router held (``held``). When the learned
    router's outcome it took the place of was another, the note says which."""
    if last is None:
        return outcome, ""
    result = replace(outcome, replaced=True, previous_quality=last)
    if held is None or held.quality == last:
        return result, ""
    return result, (f"this outcome takes the place of the decision's last outcome (quality "
                    f"{last:g}) in the feedback figures per model, and of the learned "
                    f"router's outcome about {held.model} (quality {held.quality:g}) in its "
                    "routing")
