"""The gateway's logic, free of any web framework: plan who answers a chat request (routing,
capabilities, session pins, health), call them with retries and failover, and log it.

:class:`Gateway` is the engine; the HTTP server (:mod:`switchpoint.server`) and Python code
(``Gateway.from_config(...).complete(messages)``) are its two doors.
"""

from __future__ import annotations

from switchpoint.gateway.engine import Gateway, Observer, SyncChatStream
from switchpoint.gateway.planning import ChatCall, Plan, Planner
from switchpoint.gateway.results import CallInfo, ChatCompletion, ChatCompletionChunk, ChatStream

__all__ = ["CallInfo", "ChatCall", "ChatCompletion", "ChatCompletionChunk", "ChatStream",
           "Gateway", "Observer", "Plan", "Planner", "SyncChatStream"]
