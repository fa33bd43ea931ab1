"""The parts of a gateway its ``gateway:`` settings make: its upstream timeouts, its retry
policy and its health tracker's config, made as it is built and again when a reload changes
those settings."""

from __future__ import annotations

from switchpoint.config import GatewaySettings
from switchpoint.gateway.failover import RetryPolicy
from switchpoint.gateway.health import HealthConfig
from switchpoint.gateway.providers.base import Timeouts


def timeouts_of(g: GatewaySettings) -> Timeouts:
    """The timeouts and size bounds of each upstream call."""
    return Timeouts(connect_s=g.connect_timeout_s, read_s=g.read_timeout_s,
                    first_token_s=g.first_token_timeout_s,
                    max_response_bytes=g.max_response_bytes,
                    max_sse_line_bytes=g.max_sse_line_bytes,
                    max_plain_answer_bytes=g.max_plain_answer_bytes)


def retry_policy(g: GatewaySettings) -> RetryPolicy:
    """How a request retries and fails over, and its deadline."""
    return RetryPolicy(max_attempts_per_model=g.max_attempts_per_model,
                       backoff_base_s=g.backoff_base_s, backoff_cap_s=g.backoff_cap_s,
                       max_retry_after_s=g.max_retry_after_s, max_total_s=g.max_total_s)


def health_config(g: GatewaySettings) -> HealthConfig:
    """The health tracker's window and circuit breaker."""
    return HealthConfig(window=g.health_window, window_s=g.health_window_s,
                        min_samples=g.health_min_samples,
                        failure_threshold=g.failure_threshold,
                        error_rate_threshold=g.error_rate_threshold, cooldown_s=g.cooldown_s,
                        max_cooldown_s=g.max_cooldown_s,
                        degraded_latency_ms=g.degraded_latency_ms)
