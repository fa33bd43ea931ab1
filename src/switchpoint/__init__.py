"""switchpoint: for every LLM request, the model that minimises expected error + λ·cost.

The public API, and nothing else::

    from switchpoint import load_router
    router = load_router()                      # the bundled default weights, offline
    decision = router.route("Prove the square root of 2 is irrational.")
    print(decision.selected_model, decision.explain())

    from switchpoint import Gateway             # route, call the model, fail over, log
    gateway = Gateway.from_config("switchpoint.yaml")
    reply = gateway.complete([{"role": "user", "content": "Hi"}])
"""

import logging
from typing import TYPE_CHECKING

from switchpoint._lazy import names_on_use
from switchpoint._version import __version__
from switchpoint.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    DecisionNotFoundError,
    FailoverError,
    GatewayError,
    InvalidInputError,
    ModelNotFoundError,
    NoCandidatesError,
    NoCapableModelError,
    NotFittedError,
    PermissionDeniedError,
    ProviderError,
    RateLimitExceededError,
    RecordsError,
    StorageUnavailableError,
    SwitchpointError,
    TooManyInFlightError,
    UnknownModelError,
    WeightsError,
)

# A library's log prints nothing until the program using it configures logging (Python's
# last resort printed its warnings to stderr); the commands print them themselves (see
# switchpoint._log_stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from switchpoint.decision import RoutingDecision, Usage
    from switchpoint.gateway import Gateway
    from switchpoint.records import RecordSet, load_records
    from switchpoint.router import Router, RoutingStats, load_router
    from switchpoint.training import add_model, fit, remove_model
    from switchpoint.weights import WeightsPackage, load_weights, save_weights

# The names beside the errors load on use: routing brings NumPy and the policies, the gateway
# its HTTP client, and a command (each imports this package first) needs neither for its
# --help, nor for the keys, reports and feedback that hold no array.
_LAZY = {"RoutingDecision": "decision", "Usage": "decision", "Gateway": "gateway",
         "RecordSet": "records", "load_records": "records",
         "Router": "router", "RoutingStats": "router", "load_router": "router",
         "add_model": "training", "fit": "training", "remove_model": "training",
         "WeightsPackage": "weights", "load_weights": "weights", "save_weights": "weights"}

__getattr__ = names_on_use(__name__, _LAZY)

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigError",
    "DecisionNotFoundError",
    "FailoverError",
    "Gateway",
    "GatewayError",
    "InvalidInputError",
    "ModelNotFoundError",
    "NoCandidatesError",
    "NoCapableModelError",
    "NotFittedError",
    "PermissionDeniedError",
    "ProviderError",
    "RateLimitExceededError",
    "RecordSet",
    "RecordsError",
    "Router",
    "RoutingDecision",
    "RoutingStats",
    "StorageUnavailableError",
    "SwitchpointError",
    "TooManyInFlightError",
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
