"""The gateway's logic, free of any web framework: plan who answers a chat request (routing,
capabilities, session pins, health), call them with retries and failover, and log it.

:class:`Gateway` is the engine; the HTTP server (:mod:`switchpoint.server`) and Python code
(``Gateway.from_config(...).complete(messages)``) are its two doors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchpoint._lazy import names_on_use

if TYPE_CHECKING:
    from switchpoint.gateway.engine import Gateway
    from switchpoint.gateway.observing import Observer
    from switchpoint.gateway.planning import ChatCall, Plan, Planner
    from switchpoint.gateway.results import (
        CallInfo,
        ChatCompletion,
        ChatCompletionChunk,
        ChatStream,
    )
    from switchpoint.gateway.sync_bridge import SyncChatStream

# Every name loads on use: the commands that read the state a service keeps (models list,
# experiments list, label's checks) import a module of this package or two, and the engine
# would bring the whole gateway with them.
_LAZY = {"Gateway": "engine", "Observer": "observing", "SyncChatStream": "sync_bridge",
         "ChatCall": "planning", "Plan": "planning", "Planner": "planning",
         "CallInfo": "results", "ChatCompletion": "results",
         "ChatCompletionChunk": "results", "ChatStream": "results"}


__getattr__ = names_on_use(__name__, _LAZY)


__all__ = ["CallInfo", "ChatCall", "ChatCompletion", "ChatCompletionChunk", "ChatStream",
           "Gateway", "Observer", "Plan", "Planner", "SyncChatStream"]
