"""What the gateway tells an operator of its models' health, and what it is told: every
catalog model's health with the circuit breaker's thresholds, one model's, and how a call the
caller made itself, outside the gateway, went (fed to the same tracker the gateway's own tries
feed). :class:`HealthViews` is the :class:`~switchpoint.gateway.engine.Gateway`'s; the
gateway's ``health_snapshot``, ``get_provider_health`` and ``record_provider_event`` answer
with it."""

from __future__ import annotations

from typing import Any, Protocol

from switchpoint._args import expect
from switchpoint._messages import json_quoted, one_of
from switchpoint._numbers import checked_number
from switchpoint._process import check_process
from switchpoint._redact import redact
from switchpoint.catalog import Catalog
from switchpoint.errors import InvalidInputError, UnknownModelError
from switchpoint.gateway.health import MAX_DETAIL_CHARS, HealthTracker
from switchpoint.gateway.live import RouterState
from switchpoint.gateway.planning import Planner

# What record_provider_event takes: how a call the caller made itself went.
HEALTH_EVENTS = ("success", "error", "timeout")
# The longest call record_provider_event takes (a day, in milliseconds).
MAX_EVENT_LATENCY_MS = 86_400_000.0


class HealthHost(Protocol):
    """What the health views read of their gateway, each time they need it: its health (made
    again as it is reset), its planner and live router, and the process that opened it."""

    state: RouterState
    health: HealthTracker
    planner: Planner
    _pid: int | None


class HealthViews:
    """The health of one gateway's (``host``'s) models, shown and told."""

    def __init__(self, host: HealthHost) -> None:
        self._host = host

    def snapshot(self) -> dict[str, Any]:
        """:meth:`Gateway.health_snapshot
        <switchpoint.gateway.engine.Gateway.health_snapshot>`."""
        live = self._host.state.peek()
        catalog: Catalog | None = live.router.catalog if live is not None else None
        for name in catalog.names if catalog is not None else ():
            self._host.health.status(name)  # lists models never called yet as healthy
        snapshot = self._host.health.snapshot()
        config = self._host.health.config
        snapshot["breaker"] = {"failure_threshold": config.failure_threshold,
                               "error_rate_threshold": config.error_rate_threshold,
                               "min_samples": config.min_samples, "window": config.window,
                               "window_s": config.window_s,
                               "cooldown_s": config.cooldown_s,
                               "max_cooldown_s": config.max_cooldown_s}
        snapshot["prefer_healthy"] = self._host.planner.prefer_healthy
        return snapshot

    def provider_health(self, model: str) -> dict[str, Any]:
        """:meth:`Gateway.get_provider_health
        <switchpoint.gateway.engine.Gateway.get_provider_health>`."""
        check_process(self._host._pid, "this Gateway")
        expect("model", model, str, "a model name (a string)")
        snapshot = self.snapshot()
        entry = snapshot["models"].get(model)
        if entry is None:
            raise UnknownModelError("model", [model], sorted(snapshot["models"]))
        return {"model": model, **entry, "avg_latency_ms": entry["latency_ewma_ms"]}

    def record_event(self, model: str, event: str, latency_ms: float | None = None,
                     details: str | None = None) -> None:
        """:meth:`Gateway.record_provider_event
        <switchpoint.gateway.engine.Gateway.record_provider_event>`."""
        check_process(self._host._pid, "this Gateway")
        expect("model", model, str, "a model name (a string)")
        catalog = self._host.state.live().router.catalog
        if model not in catalog:
            raise UnknownModelError("model", [model], list(catalog.names))
        expect("event", event, str, f"one of {one_of(HEALTH_EVENTS)}")
        if event not in HEALTH_EVENTS:
            raise InvalidInputError("event", f"must be one of {one_of(HEALTH_EVENTS)}, got "
                                             f"{json_quoted(event, 40)}")
        if latency_ms is not None:
            if event != "success":
                raise InvalidInputError("latency_ms", "is recorded for a success only; leave "
                                                      f"it out when event is {json_quoted(event)}")
            latency = checked_number("latency_ms", latency_ms)
            if latency is None or not 0 <= latency <= MAX_EVENT_LATENCY_MS:
                raise InvalidInputError(
                    "latency_ms", f"must be a number of milliseconds from 0 to "
                                  f"{MAX_EVENT_LATENCY_MS:.0f} (a day), got "
                                  f"{json_quoted(latency_ms, 40)}")
            latency_ms = latency
        if details is not None:
            if event == "success":
                raise InvalidInputError("details", "is recorded for an error or a timeout "
                                                   "only; leave it out when event is "
                                                   '"success"')
            expect("details", details, str, "a string (what went wrong)")
            if len(details) > MAX_DETAIL_CHARS:
                raise InvalidInputError("details", f"must be at most {MAX_DETAIL_CHARS} "
                                                   f"characters, got {len(details)}: say what "
                                                   "went wrong in short (rate_limited)")
        if event == "success":
            self._host.health.record_success(model, latency_ms)
        else:
            self._host.health.record_failure(model, event, detail=redact(details or ""))
