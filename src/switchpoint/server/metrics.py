"""Prometheus metrics, written in the text exposition format (version 0.0.4) by hand.

Why not ``prometheus_client``: the service needs a handful of counters and one histogram family,
each owned by one app (several apps can run in one process, as the tests do), and the client's
default global registry would make them process-wide. Forty lines do it without a dependency.

Exposed on ``GET /metrics``:

- ``switchpoint_http_requests_total{route, method, status}``
- ``switchpoint_http_request_duration_seconds{route}`` (histogram)
- ``switchpoint_route_decisions_total{model}`` and ``switchpoint_route_cache_hits_total``
- ``switchpoint_store_errors_total``, ``switchpoint_router_ready``, ``switchpoint_uptime_seconds``
- the gateway (``POST /v1/chat/completions``), one observation per logged request:
  ``switchpoint_chat_requests_total{model, status}`` (``model`` = the model that answered, or
  ``«none»``), ``switchpoint_chat_upstream_attempts_total{model, outcome}`` (``ok`` or the error
  kind of each try), ``switchpoint_chat_escalations_total`` (answered by another model than the
  first tried), ``switchpoint_chat_tokens_total{model, kind}`` (``prompt`` / ``completion``, as
  the upstream reported them), ``switchpoint_chat_cost_usd_total{model}``,
  ``switchpoint_chat_cost_unknown_total{model}`` (answers whose cost is unknown) and
  ``switchpoint_chat_time_to_first_token_seconds`` (histogram, streams)
- the connection guard (``switchpoint serve``): ``switchpoint_http_connections_open``,
  ``switchpoint_http_connections_evicted_total``, ``..._refused_total``,
  ``switchpoint_http_connection_timeouts_total{phase}``,
  ``switchpoint_http_headers_too_large_total``

No client can add series: every label takes a value from a fixed set. ``route`` is a route
template of the app (or ``unmatched``), ``method`` a standard method (or ``other``), ``status`` a
standard HTTP status (or its class, ``4xx``), ``model`` a model of the live catalog or of one a
reload replaced (a request under way as its model left the catalog is counted under it, as the
request log names it; at most :data:`MAX_MODEL_LABELS` names are remembered) (or ``«other»``;
``«none»`` when no model answered: no model name can be either, as a name is visible ASCII),
``outcome`` ``ok``, a skip reason or an error kind of
:mod:`switchpoint.errors` (or ``other``).
"""

from __future__ import annotations

import bisect
import http
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchpoint import errors
from switchpoint.catalog import MAX_CATALOG_MODELS, usd_figure
from switchpoint.decision import RoutingDecision
from switchpoint.gateway import failover
from switchpoint.server.body_buffer import BodyBuffer
from switchpoint.server.paths import app_path
from switchpoint.server.protocol import ConnectionStats
from switchpoint.server.targets import origin_form
from switchpoint.store import RequestRecord

_Family = Callable[[str, str, str], None]
# HTTP methods counted by name; any other (a client may invent one) is counted as "other", so
# no client can add series to the metrics.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: What a request the client abandoned before any answer counts as (nginx's "client closed
#: request"; the gateway answers it too, to a client that left).
CLIENT_CLOSED = 499
#: The ``model`` label of a model outside the names a label may take, and of a request no model
#: answered. A catalog model's name is visible ASCII (``catalog.model_name_problem``), so a model
#: named ``other`` or ``none`` has a series of its own, apart from these.
OTHER_MODEL = "«other»"
NO_MODEL = "«none»"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
KNOWN_STATUSES = frozenset(int(s) for s in http.HTTPStatus)
#: The most model names a ``model`` label takes: the live catalog's and, newest first, those of
#: the catalogs reloads replaced (a catalog holds at most MAX_CATALOG_MODELS).
MAX_MODEL_LABELS = 2 * MAX_CATALOG_MODELS
# Upstream attempt outcomes: "ok", the skip reasons, and every error kind switchpoint defines.
KNOWN_OUTCOMES = frozenset({"ok", failover.CLIENT_CLOSED, *failover.SKIPPED,
                            *(getattr(cls, "kind", "") for cls in vars(errors).values()
                              if isinstance(cls, type)
                              and issubclass(cls, errors.ProviderError))})


def status_label(status: int) -> str:
    """A standard status as itself; anything else as its class (``4xx``), or ``other``."""
    if status in KNOWN_STATUSES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Thread-safe counters and latency histograms for one app.

    ``models`` returns the live catalog's model names, which a ``model`` label may take, as it
    may those :meth:`saw_catalog` was told of (the catalogs that have been live); any other is
    counted as :data:`OTHER_MODEL`. ``connections`` is the connection guard's counts, when the
    app runs under ``switchpoint serve``.
    """

    def __init__(self, models: Callable[[], Collection[str]] | None = None) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.models = models
        # The names of the catalogs that have been live, oldest first (see saw_catalog):
        # replaced whole, so a reader needs no lock.
        self._served: dict[str, None] = {}
        self.connections: ConnectionStats | None = None
        self.bodies: BodyBuffer | None = None  # the request bodies held (the app's)
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self.decisions: Counter[str] = Counter()
        self.cache_hits = 0
        self.store_errors = 0
        self.chat: Counter[tuple[str, str]] = Counter()
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.escalations = 0
        self.tokens: Counter[tuple[str, str]] = Counter()
        self.cost: dict[str, float] = {}
        self.cost_unknown: dict[str, int] = {}
        self._ttft = [0] * (len(BUCKETS) + 1)
        self._ttft_sum = 0.0

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "other"
        with self._lock:
            self.requests[(route, method, status_label(status))] += 1
            counts = self._buckets.setdefault(route, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sums[route] = self._sums.get(route, 0.0) + seconds

    def on_decision(self, decision: RoutingDecision) -> None:
        """Count one routing decision (the routing API's or the gateway's ``auto``)."""
        model = self._model(decision.selected_model)
        with self._lock:
            self.decisions[model] += 1
            self.cache_hits += int(decision.cache_hit)

    def on_store_error(self) -> None:
        with self._lock:
            self.store_errors += 1

    def on_request(self, record: RequestRecord) -> None:
        """Count one gateway request as the request log records it."""
        model = NO_MODEL if record.model is None else self._model(record.model)
        tries = [(self._model(str(a["model"])), _outcome(str(a["outcome"])))
                 for a in record.attempts]
        with self._lock:
            self.chat[(model, record.status)] += 1
            for key in tries:
                self.attempts[key] += 1
            self.escalations += int(record.escalated)
            if record.prompt_tokens is not None:
                self.tokens[(model, "prompt")] += record.prompt_tokens
            if record.completion_tokens is not None:
                self.tokens[(model, "completion")] += record.completion_tokens
            if record.cost_usd is not None:
                self.cost[model] = self.cost.get(model, 0.0) + record.cost_usd
            elif record.model is not None:  # answered, at a cost unknown (not free)
                self.cost_unknown[model] = self.cost_unknown.get(model, 0) + 1
            if record.ttft_ms is not None:
                self._ttft[bisect.bisect_left(BUCKETS, record.ttft_ms / 1e3)] += 1
                self._ttft_sum += record.ttft_ms / 1e3

    def saw_catalog(self, names: Iterable[str]) -> None:
        """Remember the model names of a catalog going live: a request it serves may be counted
        after a reload replaced it, under the model that answered. The newest
        :data:`MAX_MODEL_LABELS` names are kept (a live catalog's are never forgotten)."""
        with self._lock:
            served = dict(self._served)
            for name in names:
                served.pop(name, None)
                served[name] = None
            for name in list(served)[:max(0, len(served) - MAX_MODEL_LABELS)]:
                del served[name]
            self._served = served

    def _model(self, name: str) -> str:
        if self.models is None:
            return name
        return name if name in self._served or name in self.models() else OTHER_MODEL

    def render(self, ready: bool) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("switchpoint_http_requests_total", "counter", "HTTP requests answered.")
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(f"switchpoint_http_requests_total"
                             f"{_labels(route=route, method=method, status=status)} {n}")
            name = "switchpoint_http_request_duration_seconds"
            family(name, "histogram", "Time from request to the end of the response.")
            for route, counts in sorted(self._buckets.items()):
                running = 0
                for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                    running += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f"{name}_bucket{_labels(route=route, le=le)} {running}")
                lines.append(f"{name}_sum{_labels(route=route)} {self._sums[route]:.6f}")
                lines.append(f"{name}_count{_labels(route=route)} {running}")
            family("switchpoint_route_decisions_total", "counter",
                   "Routing decisions by selected model.")
            for model, n in sorted(self.decisions.items()):
                lines.append(f"switchpoint_route_decisions_total{_labels(model=model)} {n}")
            family("switchpoint_route_cache_hits_total", "counter",
                   "Routing decisions served from the decision cache.")
            lines.append(f"switchpoint_route_cache_hits_total {self.cache_hits}")
            family("switchpoint_store_errors_total", "counter",
                   "Log entries (decisions, requests) the store refused when they were "
                   "made; those it refused for a full disk or a held lock are written once "
                   "it takes writes again.")
            lines.append(f"switchpoint_store_errors_total {self.store_errors}")
            self._render_chat(lines, family)
        if self.connections is not None:
            self._render_connections(lines, family, self.connections)
        if self.bodies is not None:
            self._render_bodies(lines, family, self.bodies)
        family("switchpoint_router_ready", "gauge", "1 once the router has loaded.")
        lines.append(f"switchpoint_router_ready {int(ready)}")
        family("switchpoint_uptime_seconds", "gauge", "Seconds since the app started.")
        lines.append(f"switchpoint_uptime_seconds {self.uptime:.3f}")
        return "\n".join(lines) + "\n"


    def _render_chat(self, lines: list[str], family: _Family) -> None:
        family("switchpoint_chat_requests_total", "counter",
               "Gateway requests by answering model and logged status.")
        for (model, status), n in sorted(self.chat.items()):
            labels = _labels(model=model, status=status)
            lines.append(f"switchpoint_chat_requests_total{labels} {n}")
        family("switchpoint_chat_upstream_attempts_total", "counter",
               "Upstream tries by model and outcome (ok or the error kind).")
        for (model, outcome), n in sorted(self.attempts.items()):
            lines.append("switchpoint_chat_upstream_attempts_total"
                         f"{_labels(model=model, outcome=outcome)} {n}")
        family("switchpoint_chat_escalations_total", "counter",
               "Gateway requests that moved to another model after a failure.")
        lines.append(f"switchpoint_chat_escalations_total {self.escalations}")
        family("switchpoint_chat_tokens_total", "counter",
               "Tokens the upstreams reported, by answering model and kind.")
        for (model, kind), n in sorted(self.tokens.items()):
            lines.append(f"switchpoint_chat_tokens_total{_labels(model=model, kind=kind)} {n}")
        family("switchpoint_chat_cost_usd_total", "counter",
               "Cost of answered requests in US dollars, from catalog prices.")
        for model, usd in sorted(self.cost.items()):
            lines.append(f"switchpoint_chat_cost_usd_total{_labels(model=model)} "
                         f"{usd_figure(usd)}")
        family("switchpoint_chat_cost_unknown_total", "counter",
               "Answered requests whose cost is unknown (a model without prices, an upstream "
               "that reported no usage): not in switchpoint_chat_cost_usd_total.")
        for model, n in sorted(self.cost_unknown.items()):
            lines.append(f"switchpoint_chat_cost_unknown_total{_labels(model=model)} {n}")
        name = "switchpoint_chat_time_to_first_token_seconds"
        family(name, "histogram", "Streams: time from request to the first content chunk.")
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), self._ttft, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f"{name}_bucket{_labels(le=le)} {running}")
        lines.append(f"{name}_sum {self._ttft_sum:.6f}")
        lines.append(f"{name}_count {running}")


    @staticmethod
    def _render_connections(lines: list[str], family: _Family,
                            stats: ConnectionStats) -> None:
        family("switchpoint_http_connections_open", "gauge", "Client connections open.")
        lines.append(f"switchpoint_http_connections_open {stats.open}")
        family("switchpoint_http_connections_evicted_total", "counter",
               "Idle connections closed to make room (server.max_connections).")
        lines.append(f"switchpoint_http_connections_evicted_total {stats.evicted}")
        family("switchpoint_http_connections_refused_total", "counter",
               "Connections answered 503: every slot busy.")
        lines.append(f"switchpoint_http_connections_refused_total {stats.refused}")
        family("switchpoint_http_connection_timeouts_total", "counter",
               "Connections closed by a deadline: idle (keep-alive), head, body, write.")
        for phase, n in sorted(stats.timed_out.items()):
            lines.append(f"switchpoint_http_connection_timeouts_total{_labels(phase=phase)} {n}")
        family("switchpoint_http_headers_too_large_total", "counter",
               "Requests refused 431: head over server.max_header_bytes.")
        lines.append(f"switchpoint_http_headers_too_large_total {stats.too_large}")


    @staticmethod
    def _render_bodies(lines: list[str], family: _Family, bodies: BodyBuffer) -> None:
        family("switchpoint_http_request_body_bytes_held", "gauge",
               "Bytes of request bodies held in memory now (server.max_body_buffer_bytes).")
        lines.append(f"switchpoint_http_request_body_bytes_held {bodies.held}")
        family("switchpoint_http_request_bodies_refused_total", "counter",
               "Request bodies refused: too_large (413, over max_request_bytes), buffer_full "
               "(503, the body buffer is full), client_share (503, the client holds its "
               "share of it).")
        for reason in ("buffer_full", "client_share", "too_large"):
            lines.append("switchpoint_http_request_bodies_refused_total"
                         f"{_labels(reason=reason)} {bodies.refused[reason]}")


def _outcome(outcome: str) -> str:
    return outcome if outcome in KNOWN_OUTCOMES else "other"


class MetricsMiddleware:
    """Counts every HTTP request by route template (not raw path) and times it.

    A request the app answered nothing to counts as a 500, unless the client had gone by then
    (it closed the connection, or its body did not arrive in time and the connection guard
    answered 408 itself): that one counts as 499 (status label ``4xx``), as the gateway's own
    answer to a client that left does, and never as a server failure.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: Collection[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        # The app's own route templates, in the order it routes by, each with the pattern of
        # the paths it takes, for a request answered before routing.
        self.templates = tuple((path, compile_path(path)[0]) for path in dict.fromkeys(paths)
                               if path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status: int | None = None
        client_left = False

        async def receive_wrapper() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect":
                client_left = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            if status is None:
                status = CLIENT_CLOSED if client_left else 500
            route = scope.get("route")
            path = getattr(route, "path", None) or self._template(scope)
            self.metrics.observe_request(path, scope["method"], status,
                                         time.perf_counter() - t0)

    def _template(self, scope: Scope) -> str:
        """A request answered without the route in the scope (by the app's own routes, the docs
        and the schema, or before routing: a body over the limit, a client gone, a guard's
        refusal): the template of the first of the app's routes whose pattern takes its path as
        the app reads it (below the root path a server gives the app:
        :func:`~switchpoint.server.paths.app_path`; a target in absolute form,
        ``http://host/path``, by its path: :func:`~switchpoint.server.targets.origin_form`), as
        routing would count it (``/v1/router/keys/{key_id}`` for ``/v1/router/keys/k1``),
        else ``unmatched`` (a label never holds a raw path a client made up)."""
        path = app_path(origin_form(scope)[0])
        app = scope.get("app")
        own = [(getattr(r, "path", None), getattr(r, "path_regex", None))
               for r in getattr(app, "routes", ())]
        for template, pattern in (*self.templates, *own):
            if isinstance(template, str) and isinstance(pattern, re.Pattern) and (
                    pattern.match(path)):
                return template
        return "unmatched"
