"""Provider health: per-model success rate, latency, recent errors and a circuit breaker.

Per model the tracker keeps the outcomes of the last ``window`` calls (dropping those older than
``window_s``), an exponentially weighted moving average of latency, and the last few errors. From
those it derives a status:

- **down** — the circuit is open (or the success rate is under ``down_success_rate``);
- **degraded** — half-open (being probed), a success rate under ``degraded_success_rate``,
  latency over ``degraded_latency_ms``, or a ``Retry-After`` still running;
- **healthy** — otherwise.

The circuit breaker: *closed* until ``failure_threshold`` consecutive failures, or an error
rate of at least ``error_rate_threshold`` over at least ``min_samples`` calls (a threshold of 1
switches this rate rule off: every call failing is the consecutive rule's to judge, so a
``failure_threshold`` above ``min_samples`` is not cut short by it); then *open* for
``cooldown_s``; then *half-open*, where :meth:`HealthTracker.allow` lets exactly one probe
through. The probe's success closes the circuit (and starts a fresh window); its failure opens
it again for twice as long as last time, up to ``max_cooldown_s``. A probe that ends with no
verdict on the model (the client left, an error inside the gateway) gives its slot back with
:meth:`HealthTracker.release`; one that never reports back at all is given up on after
``probe_timeout_s``, so one lost request cannot wedge a model.

Routing prefers healthy models through :meth:`HealthTracker.rank_penalty` (added to a score
where lower is better) or :meth:`HealthTracker.order` (stable: healthy, degraded, down).

Everything goes through one lock and never awaits, so the tracker is safe to share between
threads and between tasks of one event loop. Time comes from injectable clocks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ERROR_RATE_ZERO = ("error_rate_threshold must be > 0 (0 would open a circuit at any failure "
                   "once enough calls are seen, however many succeeded): set failure_threshold "
                   "to 1 to open it at the first failure, or error_rate_threshold to 1 to leave "
                   "the circuit to failure_threshold alone")


# The most characters of an error's detail kept among a model's recent errors.
MAX_DETAIL_CHARS = 300


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of the tracker. Rates are fractions in [0, 1] (``error_rate_threshold`` in
    (0, 1], where 1 switches the rate rule off); times are seconds."""

    window: int = 50
    window_s: float = 300.0
    ewma_alpha: float = 0.2
    recent_errors: int = 20
    min_samples: int = 5
    degraded_success_rate: float = 0.9
    down_success_rate: float = 0.5
    degraded_latency_ms: float | None = None
    failure_threshold: int = 5
    error_rate_threshold: float = 0.5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    probe_timeout_s: float = 60.0
    degraded_penalty: float = 0.1
    down_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.window < 1 or self.recent_errors < 1 or self.min_samples < 1:
            raise ValueError("window, recent_errors and min_samples must be >= 1")
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must be <= window "
                             f"({self.window}): a window never holds more calls than that")
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError("ewma_alpha must be in (0, 1]")
        for name in ("degraded_success_rate", "down_success_rate", "error_rate_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.error_rate_threshold == 0:
            raise ValueError(ERROR_RATE_ZERO)
        for name in ("window_s", "cooldown_s", "max_cooldown_s", "probe_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be >= cooldown_s")


@dataclass(frozen=True)
class ErrorEvent:
    kind: str
    at: float     # the tracker's clock (monotonic by default)
    wall: float   # seconds since the epoch, for display
    detail: str = ""


@dataclass
class _ModelHealth:
    outcomes: deque[tuple[float, bool]]
    errors: deque[ErrorEvent]
    latency_ewma_ms: float | None = None
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    cooldown: float = 0.0
    reopens: int = 0
    probe_started: float | None = None
    probes: int = 0  # half-open probe slots handed out (the one held now is the last)
    not_before: float = 0.0
    last_success_wall: float | None = None


@dataclass
class HealthTracker:
    """Health of every model the gateway calls. See the module docstring for the rules."""

    config: HealthConfig = field(default_factory=HealthConfig)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    models: Iterable[str] = ()

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _ModelHealth] = {}
        for name in self.models:
            self._get(name)

    # ---- internals (call with the lock held) ----------------------------------------------

    def _get(self, model: str) -> _ModelHealth:
        health = self._models.get(model)
        if health is None:
            health = _ModelHealth(outcomes=deque(maxlen=self.config.window),
                                  errors=deque(maxlen=self.config.recent_errors))
            self._models[model] = health
        return health

    def _window(self, h: _ModelHealth, now: float) -> list[bool]:
        cutoff = now - self.config.window_s
        while h.outcomes and h.outcomes[0][0] < cutoff:
            h.outcomes.popleft()
        return [ok for _, ok in h.outcomes]

    def _refresh(self, h: _ModelHealth, now: float) -> None:
        """Move an open circuit whose cooldown has run out to half-open."""
        if h.state is BreakerState.OPEN and now >= h.opened_at + h.cooldown:
            h.state = BreakerState.HALF_OPEN
            h.probe_started = None

    def _open(self, h: _ModelHealth, now: float) -> None:
        if h.state is BreakerState.HALF_OPEN:
            h.reopens += 1
        else:
            h.reopens = 0
        h.state = BreakerState.OPEN
        h.opened_at = now
        h.cooldown = min(self.config.cooldown_s * 2 ** h.reopens, self.config.max_cooldown_s)
        h.probe_started = None

    def _trips(self, h: _ModelHealth, now: float) -> bool:
        """Do the failures so far open a closed circuit? ``failure_threshold`` in a row, or
        the rate rule (never with an ``error_rate_threshold`` of 1: that switches it off)."""
        if h.consecutive_failures >= self.config.failure_threshold:
            return True
        threshold = self.config.error_rate_threshold
        if threshold >= 1:
            return False
        window = self._window(h, now)
        return (len(window) >= self.config.min_samples
                and 1 - sum(window) / len(window) >= threshold)

    def _status(self, h: _ModelHealth, now: float) -> HealthStatus:
        self._refresh(h, now)
        if h.state is BreakerState.OPEN:
            return HealthStatus.DOWN
        window = self._window(h, now)
        rate = sum(window) / len(window) if window else 1.0
        enough = len(window) >= self.config.min_samples
        if h.state is BreakerState.CLOSED and enough and rate < self.config.down_success_rate:
            return HealthStatus.DOWN
        slow = (self.config.degraded_latency_ms is not None and h.latency_ewma_ms is not None
                and h.latency_ewma_ms > self.config.degraded_latency_ms)
        if (h.state is BreakerState.HALF_OPEN or slow or now < h.not_before
                or (enough and rate < self.config.degraded_success_rate)):
            return HealthStatus.DEGRADED
        return HealthStatus.HEALTHY

    # ---- the API ------------------------------------------------------------------------------

    def reconfigure(self, config: HealthConfig) -> None:
        """Go on under ``config`` (a reload): what each model has seen is kept, its newest
        outcomes and errors up to the new ``window`` and ``recent_errors``."""
        with self._lock:
            self.config = config
            for h in self._models.values():
                h.outcomes = deque(h.outcomes, maxlen=config.window)
                h.errors = deque(h.errors, maxlen=config.recent_errors)

    def allow(self, model: str) -> bool:
        """May a request go to ``model`` now? In half-open, true for exactly one probe."""
        return self.admit(model) is not None

    def admit(self, model: str) -> int | None:
        """:meth:`allow`, saying which slot the request holds: ``None`` refused, ``0`` let
        through with the circuit closed, else the number of the half-open probe slot it took
        (to hand to :meth:`release`)."""
        with self._lock:
            h = self._get(model)
            now = self.clock()
            self._refresh(h, now)
            if now < h.not_before:
                return None
            if h.state is BreakerState.CLOSED:
                return 0
            if h.state is BreakerState.OPEN:
                return None
            stale = (h.probe_started is not None
                     and now - h.probe_started >= self.config.probe_timeout_s)
            if h.probe_started is None or stale:
                h.probe_started = now
                h.probes += 1
                return h.probes
            return None

    def record_success(self, model: str, latency_ms: float | None) -> None:
        """A call to ``model`` succeeded after ``latency_ms`` (None: not measured, so the
        latency average stays as it was)."""
        with self._lock:
            h = self._get(model)
            now = self.clock()
            self._refresh(h, now)
            h.successes += 1
            h.consecutive_failures = 0
            h.last_success_wall = self.wall_clock()
            if latency_ms is not None:
                a = self.config.ewma_alpha
                latency = max(0.0, float(latency_ms))
                h.latency_ewma_ms = (latency if h.latency_ewma_ms is None
                                     else a * latency + (1 - a) * h.latency_ewma_ms)
            if h.state is not BreakerState.CLOSED:
                # The probe (or a straggler) came back fine: close and start a fresh window.
                h.state = BreakerState.CLOSED
                h.reopens = 0
                h.probe_started = None
                h.outcomes.clear()
            h.outcomes.append((now, True))

    def rest_s(self, retry_after_s: float) -> float:
        """How long an upstream's ``Retry-After`` of ``retry_after_s`` keeps its model out of
        use: as asked, but never longer than ``max_cooldown_s``, the longest the operator lets
        any failure keep a model out (one answer asking for a day would rest the model for
        every caller until a reset or a restart)."""
        return min(retry_after_s, self.config.max_cooldown_s)

    def record_failure(self, model: str, kind: str, *, detail: str = "",
                       retry_after_s: float | None = None) -> None:
        """A call to ``model`` failed with an error of ``kind`` (e.g. ``"rate_limited"``).

        ``retry_after_s`` (an upstream's ``Retry-After``) keeps :meth:`allow` false for that
        long (:meth:`rest_s`: at most ``max_cooldown_s``), whatever the circuit says.
        """
        with self._lock:
            h = self._get(model)
            now = self.clock()
            self._refresh(h, now)
            h.failures += 1
            h.consecutive_failures += 1
            h.outcomes.append((now, False))
            h.errors.append(ErrorEvent(kind, now, self.wall_clock(),
                                       detail[:MAX_DETAIL_CHARS]))
            if retry_after_s is not None and retry_after_s > 0:
                h.not_before = max(h.not_before, now + self.rest_s(retry_after_s))
            if h.state is BreakerState.HALF_OPEN or (
                    h.state is BreakerState.CLOSED and self._trips(h, now)):
                self._open(h, now)

    def release(self, model: str, slot: int | None = None) -> None:
        """A request that :meth:`allow` let through ended with no verdict (the client left):
        free the half-open probe slot without counting anything. ``slot`` (what
        :meth:`admit` returned) frees it only when that request holds it: one let through
        before the circuit opened (``0``), or a probe given up on since, frees no other
        request's probe (so no second probe goes out beside it)."""
        with self._lock:
            h = self._get(model)
            if h.state is BreakerState.HALF_OPEN and slot in (None, h.probes):
                h.probe_started = None

    def status(self, model: str) -> HealthStatus:
        with self._lock:
            return self._status(self._get(model), self.clock())

    def state(self, model: str) -> BreakerState:
        with self._lock:
            h = self._get(model)
            self._refresh(h, self.clock())
            return h.state

    def wait_s(self, model: str) -> float | None:
        """Seconds until :meth:`allow` may let a request through to ``model`` again (its
        cooldown or its upstream's ``Retry-After``); ``None`` when it may now."""
        with self._lock:
            h = self._get(model)
            now = self.clock()
            self._refresh(h, now)
            waits = [h.not_before - now]
            if h.state is BreakerState.OPEN:
                waits.append(h.opened_at + h.cooldown - now)
            wait = max(waits)
            return wait if wait > 0 else None

    def last_failure(self, model: str) -> str | None:
        """The kind of ``model``'s latest failure (``"rate_limited"``: what keeps a model its
        upstream rate limited out of use, its ``Retry-After`` or the circuit its 429s opened);
        None when it has had none."""
        with self._lock:
            h = self._get(model)
            return h.errors[-1].kind if h.errors else None

    def latency_ms(self, model: str) -> float | None:
        """``model``'s recent latency (an exponentially weighted mean; time to first token for
        streams), or None before its first success."""
        with self._lock:
            h = self._models.get(model)
            return None if h is None else h.latency_ewma_ms

    def rank_penalty(self, model: str) -> float:
        """What to add to ``model``'s routing score (lower is better): 0 when healthy."""
        status = self.status(model)
        if status is HealthStatus.DOWN:
            return self.config.down_penalty
        if status is HealthStatus.DEGRADED:
            return self.config.degraded_penalty
        return 0.0

    def order(self, models: Sequence[str]) -> list[str]:
        """``models`` reordered healthy first, then degraded, then down (stable otherwise)."""
        rank = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.DOWN: 2}
        statuses = {m: self.status(m) for m in models}
        return sorted(models, key=lambda m: rank[statuses[m]])

    def snapshot(self) -> dict[str, Any]:
        """Every model's health, JSON-able (the body of ``GET /v1/router/health``)."""
        with self._lock:
            now = self.clock()
            wall = self.wall_clock()
            models: dict[str, Any] = {}
            for name in sorted(self._models):
                h = self._models[name]
                status = self._status(h, now)
                window = self._window(h, now)
                retry_in = (h.opened_at + h.cooldown - now
                            if h.state is BreakerState.OPEN else None)
                models[name] = {
                    "status": str(status),
                    "circuit": str(h.state),
                    "success_rate": round(sum(window) / len(window), 4) if window else None,
                    "window_calls": len(window),
                    "latency_ewma_ms": (round(h.latency_ewma_ms, 2)
                                        if h.latency_ewma_ms is not None else None),
                    "successes": h.successes,
                    "failures": h.failures,
                    "consecutive_failures": h.consecutive_failures,
                    "retry_in_s": round(max(0.0, retry_in), 3) if retry_in is not None else None,
                    "rate_limited_for_s": (round(h.not_before - now, 3)
                                           if now < h.not_before else None),
                    "last_success_at": h.last_success_wall,
                    "last_seen": _latest(h.last_success_wall,
                                         h.errors[-1].wall if h.errors else None),
                    "recent_errors": [
                        {"kind": e.kind, "at": e.wall, "age_s": round(now - e.at, 3),
                         "detail": e.detail}
                        for e in reversed(h.errors)
                    ],
                }
            return {"generated_at": wall, "models": models}


def _latest(*times: float | None) -> float | None:
    """The latest of ``times`` that are known (None: none is)."""
    known = [t for t in times if t is not None]
    return max(known) if known else None
