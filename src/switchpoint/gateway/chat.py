"""The OpenAI-compatible gateway: one chat request from its body to a logged answer.

::

    body ─► check ─► needs, session, pin ─► candidates ─────────────► call_with_failover ─► answer
                                            named: the model, then      (retries, Retry-After,
                                              its fallbacks             escalation, circuit
                                            auto: the router's ranking   breakers; a stream is
                                              − pin bonus + health       committed at its first
                                              penalty; a hard pin first  content chunk)
                                            then the capability filter
                                            and healthy-first order

:class:`Gateway` holds what lives as long as the app (the upstream client pool, the provider
adapters, the health tracker and the session pinner); :meth:`Gateway.plan` decides who may
answer a request and in which order; :meth:`Gateway.forward` calls them and returns the
response, writing the request log entry (:mod:`switchpoint.gateway.accounting`) once the answer
is known: before a plain answer goes out, when a stream's body ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from switchpoint.capabilities import Needs, filter_candidates, needs_of
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.config import GatewaySettings, Settings
from switchpoint.decision import RoutingDecision, check_cost_weight
from switchpoint.errors import InvalidInputError
from switchpoint.gateway import accounting
from switchpoint.gateway.errors import ApiError, from_validation
from switchpoint.gateway.metrics import Metrics
from switchpoint.gateway.schemas import ChatRequest
from switchpoint.gateway.state import Live
from switchpoint.health import HealthConfig, HealthTracker
from switchpoint.providers import ClientPool, ProviderRegistry, Timeouts, sse_body
from switchpoint.providers.sse import DONE
from switchpoint.retry import (
    FailoverError,
    FailoverResult,
    FailoverStream,
    RetryPolicy,
    call_with_failover,
    fallback_chain,
)
from switchpoint.sessions import PinDecision, SessionPinner, SQLitePinStore, session_id
from switchpoint.store import RequestRecord, SQLiteStore, StoreError

log = logging.getLogger("switchpoint.gateway")

AUTO_MODEL = "auto"
COST_WEIGHT_HEADER = "x-switchpoint-cost-weight"
PINS_FILENAME = "sessions.db"
_FIELDS = list(ChatRequest.model_fields)
# Characters of the router's reasoning that HTTP headers (latin-1) cannot carry.
_ASCII = str.maketrans({"λ": "lambda", "×": "x", "·": "*", "−": "-", "≤": "<=", "≥": ">=",
                        "—": "-", "–": "-", "’": "'"})


class ChatError(ApiError):
    """An error answer of the chat route, in OpenAI's envelope (``type`` beside ``code``)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, message, param, headers)
        self.kind = kind

    def response(self, extra_headers: Mapping[str, str] | None = None) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}
        return JSONResponse(body, status_code=self.status,
                            headers={**(self.headers or {}), **(extra_headers or {})})


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """The request body as sent (a dict), once ``model``, ``messages`` and ``stream`` check out.

    The dict is what goes upstream: nothing in it is converted or dropped.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        if not raw.strip():
            raise ChatError(400, "invalid_request", 'body: is empty; send a JSON object such '
                                                    'as {"model": "auto", "messages": [...]}',
                            "body") from None
        raise ChatError(400, "invalid_request", f"body: is not valid JSON ({exc})",
                        "body") from None
    try:
        ChatRequest.model_validate(data)
    except ValidationError as exc:
        err = from_validation(list(exc.errors()), _FIELDS)
        raise ChatError(err.status, err.code, err.message, err.param) from None
    assert isinstance(data, dict)
    return data


@dataclass
class Plan:
    """Who may answer one request, in which order, and why."""

    request_id: str
    started: float  # perf_counter at the start of the request
    ts: float
    body: dict[str, Any]
    stream: bool
    requested: str
    session: str | None
    needs: Needs
    pin: PinDecision
    cards: list[ModelCard]
    routed_model: str | None
    decision: RoutingDecision | None = None
    excluded: dict[str, list[str]] = field(default_factory=dict)
    pin_note: str | None = None
    planning_ms: float = 0.0

    @property
    def pin_info(self) -> dict[str, Any]:
        info = self.pin.to_dict()
        if self.pin_note:
            info["note"] = self.pin_note
        return info

    def headers(self) -> dict[str, str]:
        """The x-switchpoint-* headers every answer carries."""
        out = {"x-switchpoint-request-id": self.request_id,
               "x-switchpoint-routing-ms": f"{self.planning_ms:.3f}",
               "x-switchpoint-pin": str(self.pin.state)}
        if self.routed_model is not None:
            out["x-switchpoint-routed-model"] = self.routed_model
        d = self.decision
        if d is not None:
            out["x-switchpoint-cluster"] = str(d.cluster_id)
            out["x-switchpoint-expected-error"] = f"{d.expected_error:.6f}"
            out["x-switchpoint-reasoning"] = header_text(" ".join(d.reasoning))
        return out


def header_text(text: str, limit: int = 1000) -> str:
    """``text`` as a header value: ASCII, one line, at most ``limit`` characters."""
    text = " ".join(text.translate(_ASCII).split())
    return text.encode("ascii", "replace").decode("ascii")[:limit]


class Gateway:
    """The parts of the gateway that live as long as the app.

    ``env`` is where providers read API keys (default: the process environment, at call time);
    ``metrics``, when given, counts every logged request (``GET /metrics``).
    Open it with :meth:`open` in the app's lifespan and :meth:`aclose` it on shutdown.
    """

    def __init__(self, settings: Settings, *, env: Mapping[str, str] | None = None,
                 metrics: Metrics | None = None) -> None:
        g = settings.gateway
        self.metrics = metrics
        self.pool = ClientPool(max_connections=g.max_upstream_connections,
                               max_keepalive_connections=g.max_upstream_connections)
        self.registry = ProviderRegistry(self.pool, env=env)
        self.health = HealthTracker(config=health_config(g))
        self.pinner = SessionPinner(g.pin_hard_window_s, g.pin_soft_window_s, g.pin_soft_bonus)
        self._pins: SQLitePinStore | None = None
        self._applied: GatewaySettings = g
        self.timeouts = timeouts_of(g)
        self.policy = retry_policy(g)

    # Lifecycle ---------------------------------------------------------------------------------

    def open(self, data_dir: str | Path) -> None:
        """Keep session pins in ``data_dir``/sessions.db, so they survive a restart."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self._pins = SQLitePinStore(path / PINS_FILENAME)
        self.pinner.store = self._pins

    async def aclose(self) -> None:
        await self.pool.aclose()
        if self._pins is not None:
            self._pins.close()
            self._pins = None

    def apply(self, settings: GatewaySettings) -> None:
        """Take up new gateway settings (after a reload): timeouts, retries, health thresholds
        and pin windows change at once; health history and pins are kept."""
        if settings is self._applied or settings == self._applied:
            self._applied = settings
            return
        self.timeouts = timeouts_of(settings)
        self.policy = retry_policy(settings)
        self.health.config = health_config(settings)
        self.pinner.hard_window_s = settings.pin_hard_window_s
        self.pinner.soft_window_s = settings.pin_soft_window_s
        self.pinner.soft_bonus_weight = settings.pin_soft_bonus
        self._applied = settings

    def health_snapshot(self, catalog: Catalog | None) -> dict[str, Any]:
        """``GET /v1/router/health``: every catalog model (and any model called since)."""
        for name in catalog.names if catalog is not None else ():
            self.health.status(name)  # lists models never called yet as healthy
        snapshot = self.health.snapshot()
        config = self.health.config
        snapshot["breaker"] = {"failure_threshold": config.failure_threshold,
                               "error_rate_threshold": config.error_rate_threshold,
                               "cooldown_s": config.cooldown_s,
                               "max_cooldown_s": config.max_cooldown_s}
        snapshot["prefer_healthy"] = self._applied.prefer_healthy
        return snapshot

    # Deciding who answers ----------------------------------------------------------------------

    async def plan(self, body: dict[str, Any], headers: Mapping[str, str], live: Live,
                   started: float) -> Plan:
        """The candidates for ``body``, best first. Raises :class:`ChatError` (404 for an
        unknown model, 400 when no catalog model can serve the request)."""
        catalog = live.router.catalog
        requested = str(body["model"])
        if requested != AUTO_MODEL and requested not in catalog:
            raise ChatError(404, "model_not_found",
                            f"model: {requested!r} is not a model of this gateway; use 'auto' "
                            f"or one of {', '.join(catalog.names)} (GET /v1/models)", "model")
        now = time.time()
        needs = needs_of(body)
        session = session_id(headers, body["messages"])
        pin = self.pinner.decide(session, catalog, needs, now)
        plan = Plan(request_id=uuid.uuid4().hex, started=started, ts=now, body=body,
                    stream=bool(body.get("stream")), requested=requested, session=session,
                    needs=needs, pin=pin, cards=[], routed_model=None)
        if requested != AUTO_MODEL:
            chain = [c.name for c in fallback_chain(catalog, requested)]
            allowed, plan.excluded = filter_candidates(catalog, chain, needs)
            if not allowed:
                raise self._nothing_fits(plan.excluded, f"model {requested!r} and its fallbacks")
            plan.routed_model = requested
            plan.cards = [catalog[n] for n in allowed]
        else:
            await self._plan_auto(plan, catalog, live, headers)
        plan.planning_ms = (time.perf_counter() - started) * 1e3
        return plan

    async def _plan_auto(self, plan: Plan, catalog: Catalog, live: Live,
                         headers: Mapping[str, str]) -> None:
        allowed, plan.excluded = filter_candidates(catalog, catalog.names, plan.needs)
        if not allowed:
            raise self._nothing_fits(plan.excluded, "any catalog model")
        prefer_healthy = self._applied.prefer_healthy
        pinned = plan.pin.pinned_model
        if pinned is not None and pinned not in allowed:
            reasons = "; ".join(plan.excluded.get(pinned, ["it is not in the catalog"]))
            plan.pin_note = f"pinned model {pinned} cannot serve this request ({reasons}); routed"
            pinned = None
        if pinned is not None:
            # Hard pin (or a re-home): the router is skipped; the pinned model's fallbacks and
            # then the other models follow, healthy first, in case it fails.
            plan.routed_model = pinned
            chain = [c.name for c in fallback_chain(catalog, pinned) if c.name in allowed]
            rest = [n for n in allowed if n not in chain]
            order = chain + (self.health.order(rest) if prefer_healthy else rest)
        else:
            decision = await run_in_threadpool(
                live.router.route, routing_text(plan.body, plan.needs), allowed,
                cost_weight_of(headers))
            plan.decision = decision
            plan.routed_model = decision.selected_model
            bonus = plan.pin.bonus
            position = {m: i for i, m in enumerate(decision.all_scores)}

            def adjusted(model: str) -> tuple[float, int]:
                score = decision.all_scores[model] - bonus.get(model, 0.0)
                if prefer_healthy:
                    score += self.health.rank_penalty(model)
                return score, position[model]

            order = sorted(decision.all_scores, key=adjusted)
            if prefer_healthy:
                order = self.health.order(order)
        plan.cards = [catalog[n] for n in order]

    @staticmethod
    def _nothing_fits(excluded: Mapping[str, Sequence[str]], what: str) -> ChatError:
        reasons = "; ".join(f"{m}: {', '.join(r)}" for m, r in excluded.items())
        return ChatError(400, "no_capable_model",
                         f"messages: {what} cannot serve this request ({reasons}); add a model "
                         "with the capability or context window it needs to the catalog",
                         "messages")

    # Calling upstream --------------------------------------------------------------------------

    async def forward(self, plan: Plan, store: SQLiteStore, live: Live) -> Response:
        """Call the candidates; the answer (or the error) for the client. Logs the request."""
        try:
            result = await call_with_failover(
                plan.body, plan.cards, self.registry, stream=plan.stream,  # type: ignore[call-overload]
                policy=self.policy, timeouts=self.timeouts, health=self.health)
        except FailoverError as exc:
            self.pinner.evict_on_failure(plan.session)
            headers = plan.headers()
            if exc.retry_after is not None:
                headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
            record = accounting.failed(plan, exc, live)
            await self._write(store, record, wait=True)
            return JSONResponse(exc.to_openai_error(), status_code=exc.status_code,
                                headers=headers)
        if isinstance(result, FailoverStream):
            return self._stream(plan, result, store, live)
        assert isinstance(result, FailoverResult)
        self.pinner.record(plan.session, result.model, time.time())
        await self._write(store, accounting.answered(plan, result, live), wait=True)
        headers = plan.headers()
        headers["x-switchpoint-model"] = result.model
        return JSONResponse(result.body, headers=headers)

    def _stream(self, plan: Plan, stream: FailoverStream, store: SQLiteStore,
                live: Live) -> StreamingResponse:
        # Committed: the first content chunk is in hand and nothing has reached the client.
        ttft_ms = (time.perf_counter() - plan.started) * 1e3
        self.pinner.record(plan.session, stream.model, time.time())
        headers = plan.headers()
        headers["x-switchpoint-model"] = stream.model
        headers["cache-control"] = "no-cache"

        def finish() -> accounting.Records:
            if stream.error is not None:
                self.pinner.evict_on_failure(plan.session)
            return accounting.streamed(plan, stream, live, ttft_ms)

        async def body() -> AsyncIterator[bytes]:
            logged = False
            try:
                async for piece in sse_body(aiter(stream)):
                    if piece is DONE or piece.startswith(b"event: error"):
                        # The stream's last bytes wait for its log entry to be committed, so a
                        # stream the client saw end is in the log, as a plain answer is.
                        logged = True
                        await self._write(store, finish(), wait=True)
                    yield piece
            finally:
                if not logged:  # the client left mid-answer: log it, nobody is waiting
                    await self._write(store, finish(), wait=False)

        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    async def _write(self, store: SQLiteStore, records: accounting.Records, *,
                     wait: bool) -> None:
        if self.metrics is not None:
            for record in records:
                if isinstance(record, RequestRecord):
                    self.metrics.observe_chat(record)
        try:
            futures = [store.append(r) for r in records]
            if wait and futures:
                await asyncio.wrap_future(futures[-1])  # one writer, in order: the last is last
        except StoreError as exc:
            log.error("request %s not logged: %s", records[-1].id if records else "?", exc)


def routing_text(body: Mapping[str, Any], needs: Needs) -> str:
    """What ``auto`` routes on: the last user turn; else all the conversation's text."""
    text = needs.last_user_text.strip()
    if text:
        return text
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text")) for p in content
                         if isinstance(p, Mapping) and p.get("text"))
    return "\n".join(parts).strip() or "(no text: an image or tool turn)"


def cost_weight_of(headers: Mapping[str, str]) -> float | None:
    """λ for this request from the ``x-switchpoint-cost-weight`` header (None: the default)."""
    raw = headers.get(COST_WEIGHT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ChatError(400, "invalid_request", f"{COST_WEIGHT_HEADER}: must be a number >= 0, "
                                                f"got {raw!r}", COST_WEIGHT_HEADER) from None
    try:
        return check_cost_weight(value, COST_WEIGHT_HEADER)
    except InvalidInputError as exc:
        raise ChatError(400, "invalid_request", str(exc), COST_WEIGHT_HEADER) from None


def timeouts_of(g: GatewaySettings) -> Timeouts:
    return Timeouts(connect_s=g.connect_timeout_s, read_s=g.read_timeout_s,
                    first_token_s=g.first_token_timeout_s)


def retry_policy(g: GatewaySettings) -> RetryPolicy:
    return RetryPolicy(max_attempts_per_model=g.max_attempts_per_model,
                       backoff_base_s=g.backoff_base_s, backoff_cap_s=g.backoff_cap_s,
                       max_retry_after_s=g.max_retry_after_s, max_total_s=g.max_total_s)


def health_config(g: GatewaySettings) -> HealthConfig:
    return HealthConfig(failure_threshold=g.failure_threshold,
                        error_rate_threshold=g.error_rate_threshold, cooldown_s=g.cooldown_s,
                        max_cooldown_s=g.max_cooldown_s,
                        degraded_latency_ms=g.degraded_latency_ms)


__all__ = ["AUTO_MODEL", "ChatError", "Gateway", "Plan", "parse_chat_request"]
