"""What the handlers share: the live router, the store, the metrics and the gateway of one app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from switchpoint.gateway.chat import Gateway
from switchpoint.gateway.metrics import Metrics
from switchpoint.gateway.state import RouterState
from switchpoint.store import SQLiteStore


@dataclass
class Service:
    state: RouterState
    store: SQLiteStore
    metrics: Metrics
    gateway: Gateway


def get_service(request: Request) -> Service:
    service = request.app.state.service
    assert isinstance(service, Service)
    return service
