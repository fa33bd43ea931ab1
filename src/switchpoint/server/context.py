"""What the handlers share: the gateway engine of one app and its metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from switchpoint.gateway.engine import Gateway
from switchpoint.gateway.live import RouterState
from switchpoint.server.metrics import Metrics
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
