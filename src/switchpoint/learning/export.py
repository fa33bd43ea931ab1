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

from switchpoint.errors import InvalidInputError
from switchpoint.learning.events import check_tenant
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage


def learned_package(router: Router, *, tenant: str | None = None) -> WeightsPackage:
    """The router's weights with ``tenant``'s outcomes folded in (None: the deployment's own)."""
    name = check_tenant(tenant)
    events = router.learner.n_events(name)
    if not events:
        raise InvalidInputError("tenant", f"tenant {name!r} has reported no outcomes; there is "
                                          "nothing to fold into the weights")
    policy, _ = router.learner.policy_for(name)
    provenance = copy.deepcopy(router.weights.provenance)
    provenance.setdefault("learned", []).append({
        "tenant": name, "events": events, "from_weights": router.weights_id,
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    return WeightsPackage(policy=copy.deepcopy(policy), embedder_id=router.weights.embedder_id,
                          dimension=router.weights.dimension, provenance=provenance)


def export_weights(router: Router, path: str | Path, *, tenant: str | None = None
                   ) -> WeightsPackage:
    """Write :func:`learned_package` to ``path`` and return it (with its ``path`` set)."""
    package = learned_package(router, tenant=tenant)
    package.path = package.save(path)
    return package
