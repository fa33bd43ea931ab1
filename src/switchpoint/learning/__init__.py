"""Learning from outcomes: routers that get better from how their decisions went.

- :mod:`~switchpoint.learning.events`: :class:`FeedbackEvent`, the replayable record of an
  outcome, and the :class:`FeedbackLog` protocol a store implements.
- :mod:`~switchpoint.learning.overlay`: per-policy overlays that turn events into a posterior
  policy (the weights package is the prior).
- :mod:`~switchpoint.learning.learner`: what a :class:`~switchpoint.router.Router` carries:
  remembered decisions, one overlay per tenant, exploration, the log.
- :mod:`~switchpoint.learning.tenant_memory`: a per-tenant nearest-neighbour memory of outcomes
  that can override the learned router where a tenant's own evidence is strong.
- :mod:`~switchpoint.learning.checkpoint`: learning state saved whole, so a start replays only
  the events after it.
- :mod:`~switchpoint.learning.export`: fold a tenant's overlay into a new weights package.
"""

from typing import TYPE_CHECKING

from switchpoint._lazy import names_on_use

if TYPE_CHECKING:
    from switchpoint.learning.events import (
        DEFAULT_TENANT,
        FeedbackEvent,
        FeedbackLog,
        InMemoryFeedbackLog,
    )
    from switchpoint.learning.learner import Learner, LearningSettings, OutcomeResult
    from switchpoint.learning.overlay import ClusterOverlay, KnnOverlay, Overlay, TableOverlay

# Every name loads on use (and NumPy with them): the command line's parser builds the
# learning commands from switchpoint.learning.cli, and every command builds it.
_LAZY = {"DEFAULT_TENANT": "events", "FeedbackEvent": "events", "FeedbackLog": "events",
         "InMemoryFeedbackLog": "events", "Learner": "learner", "LearningSettings": "learner",
         "OutcomeResult": "learner", "ClusterOverlay": "overlay", "KnnOverlay": "overlay",
         "Overlay": "overlay", "TableOverlay": "overlay"}
__getattr__ = names_on_use(__name__, _LAZY)

__all__ = [
    "DEFAULT_TENANT",
    "ClusterOverlay",
    "FeedbackEvent",
    "FeedbackLog",
    "InMemoryFeedbackLog",
    "KnnOverlay",
    "Learner",
    "LearningSettings",
    "OutcomeResult",
    "Overlay",
    "TableOverlay",
]
