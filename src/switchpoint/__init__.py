"""switchpoint: for every LLM request, the model that minimises expected error + λ·cost.

The public API, and nothing else::

    from switchpoint import load_router
    router = load_router()                      # the bundled default weights, offline
    decision = router.route("Prove the square root of 2 is irrational.")
    print(decision.selected_model, decision.explain())
"""

from switchpoint._version import __version__
from switchpoint.decision import RoutingDecision, Usage
from switchpoint.errors import (
    InvalidInputError,
    NoCandidatesError,
    NotFittedError,
    RecordsError,
    SwitchpointError,
    UnknownModelError,
    WeightsError,
)
from switchpoint.records import RecordSet, load_records
from switchpoint.router import Router, RoutingStats, load_router
from switchpoint.training import add_model, fit, remove_model
from switchpoint.weights import WeightsPackage, load_weights, save_weights

__all__ = [
    "InvalidInputError",
    "NoCandidatesError",
    "NotFittedError",
    "RecordSet",
    "RecordsError",
    "Router",
    "RoutingDecision",
    "RoutingStats",
    "SwitchpointError",
    "UnknownModelError",
    "Usage",
    "WeightsError",
    "WeightsPackage",
    "__version__",
    "add_model",
    "fit",
    "load_records",
    "load_router",
    "load_weights",
    "remove_model",
    "save_weights",
]
