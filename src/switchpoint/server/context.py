"""What the handlers share: the gateway engine of one app and its metrics, and the class of
the routes that reach the gateway's state (:class:`GatewayRoute`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import Response

from switchpoint.gateway.engine import Gateway
from switchpoint.gateway.live import RouterState
from switchpoint.server.metrics import Metrics
from switchpoint.server.queries import QueryCheckedRoute
from switchpoint.store import SQLiteStore


@dataclass
class Service:
    gateway: Gateway
    metrics: Metrics

    @property
    def state(self) -> RouterState:
        return self.gateway.state

    @property
    def store(self) -> SQLiteStore | None:
        return self.gateway.store


def get_service(request: Request) -> Service:
    service = request.app.state.service
    assert isinstance(service, Service)
    return service


class GatewayRoute(QueryCheckedRoute):
    """A route that reaches the gateway's state (its log, the key store, the learning, the
    budgets), through the gateway's methods or not (the key check, the keys, the request
    log): each request to it, from its guard to its answer, is one request inside the
    gateway (:meth:`Gateway.admitted <switchpoint.gateway.engine.Gateway.admitted>`). Once
    closing has begun it is refused with the closed error a chat request gets, before its
    guard reads a key; one let in before is waited for by closing. (The rest of a stream's
    answer, sent after, is counted by the gateway until it ends.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def inside(request: Request) -> Response:
            with get_service(request).gateway.admitted():
                return await handle(request)

        return inside
