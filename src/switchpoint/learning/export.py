"""Fold what a router learned from outcomes into a new weights package.

Learning never changes the weights a router loaded: outcomes live in per-tenant overlays. This
is the explicit step that makes them part of the shared weights — a new package whose tables
count the outcomes as labels (and hold any clusters the outcomes opened), ready to load, ship,
or fit on. ``switchpoint learn --export DIR`` calls :func:`export_weights`.
"""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path

from switchpoint._messages import json_quoted, listed_names
from switchpoint.errors import InvalidInputError
from switchpoint.learning.events import check_tenant
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage, with_entry


def learned_package(router: Router, *, tenant: str | None = None,
                    through: tuple[int, str] | None = None) -> WeightsPackage:
    """The router's weights with ``tenant``'s outcomes folded in (None: the deployment's own).
    ``through``: the feedback log position (and the event there) those outcomes were read up
    to, recorded so that a service replaying that log over the new weights does not count them
    twice."""
    name = check_tenant(tenant)
    outcomes = router.learner.n_outcomes(name)
    if not outcomes:
        others = [t for t in router.learner.tenants() if router.learner.n_outcomes(t)]
        where = (f"; tenants with outcomes: {listed_names(others, quoted=True)} (name one with "
                 "--tenant)"
                 if others else "; report how answers went by their decision id first "
                                "(POST /v1/feedback, switchpoint feedback or report_outcome)")
        raise InvalidInputError("tenant", f"tenant {json_quoted(name)} has reported no outcomes; "
                                          "there is "
                                          f"nothing to fold into the weights{where}")
    overlay = router.learner.overlay(name)
    if overlay is not None and not overlay.profiled_evidence:
        cards = router.learner.view(name)[2]
        models = listed_names((n for c, n in enumerate(cards.names) if cards.count[:, c].any()),
                              quoted=True) if cards is not None else "none"
        raise InvalidInputError(
            "tenant", f"the {outcomes} outcome(s) of tenant {json_quoted(name)} are all of "
                      "models without "
            f"a learned profile ({models}), which weights hold only as profiles, so there is "
            "nothing to fold in; label those models (switchpoint label, then add-model) to "
            "give them profiles (routing goes on learning from these outcomes meanwhile)")
    policy, _ = router.learner.policy_for(name)
    not_folded = overlay.n_card_outcomes if overlay is not None else 0
    learned: dict[str, object] = {
        "tenant": name, "outcomes": outcomes - not_folded, "events": router.learner.n_events(name),
        "from_weights": router.weights_id,
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if not_folded:
        learned["not_folded"] = {"outcomes": not_folded, "why": "of models without a learned "
                                 "profile, which weights hold only as profiles"}
    if through is not None:
        learned.update(through_seq=through[0], through_event=through[1])
    provenance = with_entry(router.weights.provenance, "learned", learned)
    return WeightsPackage(policy=copy.deepcopy(policy), embedder_id=router.weights.embedder_id,
                          dimension=router.weights.dimension, provenance=provenance)


def export_weights(router: Router, path: str | Path, *, tenant: str | None = None,
                   through: tuple[int, str] | None = None) -> WeightsPackage:
    """Write :func:`learned_package` to ``path`` and return it (with its ``path`` set)."""
    package = learned_package(router, tenant=tenant, through=through)
    package.path = package.save(path)
    return package
