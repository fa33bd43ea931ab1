"""HealthTracker: success rate, latency EWMA, recent errors, status and the circuit breaker."""

from __future__ import annotations

import json
import threading

import pytest

from switchpoint.gateway.health import BreakerState, HealthConfig, HealthStatus, HealthTracker


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tracker(**overrides: object) -> tuple[HealthTracker, Clock]:
    clock = Clock()
    config = HealthConfig(**{"failure_threshold": 3, "cooldown_s": 30.0, "max_cooldown_s": 100.0,
                             "min_samples": 5, "error_rate_threshold": 0.6,
                             **overrides})  # type: ignore[arg-type]
    return HealthTracker(config, clock=clock, wall_clock=lambda: 1.7e9 + clock.now), clock


def test_latency_ewma_and_success_rate() -> None:
    h, _ = tracker(ewma_alpha=0.2)
    h.record_success("a", 100)
    h.record_success("a", 200)
    snap = h.snapshot()["models"]["a"]
    assert snap["latency_ewma_ms"] == pytest.approx(0.2 * 200 + 0.8 * 100)
    assert snap["success_rate"] == 1.0
    h.record_failure("a", "server_error")
    assert h.snapshot()["models"]["a"]["success_rate"] == pytest.approx(2 / 3, abs=1e-4)


def test_status_healthy_degraded_down_by_success_rate() -> None:
    h, _ = tracker(failure_threshold=100, error_rate_threshold=1.0,
                   degraded_success_rate=0.9, down_success_rate=0.5)
    for _ in range(9):
        h.record_success("a", 10)
    h.record_failure("a", "server_error")
    assert h.status("a") is HealthStatus.HEALTHY          # 0.9 is not below 0.9
    h.record_failure("a", "server_error")
    assert h.status("a") is HealthStatus.DEGRADED         # 9/11
    for _ in range(10):
        h.record_failure("a", "server_error")
    assert h.status("a") is HealthStatus.DOWN             # 9/21 < 0.5
    assert h.state("a") is BreakerState.CLOSED            # breaker thresholds were set out of reach


def test_too_few_samples_do_not_degrade() -> None:
    h, _ = tracker(min_samples=5, failure_threshold=10, error_rate_threshold=1.0)
    h.record_failure("a", "server_error")
    assert h.status("a") is HealthStatus.HEALTHY


def test_slow_model_is_degraded() -> None:
    h, _ = tracker(degraded_latency_ms=500)
    h.record_success("a", 2000)
    assert h.status("a") is HealthStatus.DEGRADED
    assert h.rank_penalty("a") == pytest.approx(0.1)


def test_consecutive_failures_open_the_circuit_then_half_open_allows_one_probe() -> None:
    h, clock = tracker()
    for _ in range(2):
        h.record_failure("a", "connect_error")
    assert h.allow("a") and h.state("a") is BreakerState.CLOSED
    h.record_failure("a", "connect_error")
    assert h.state("a") is BreakerState.OPEN
    assert not h.allow("a")
    assert h.status("a") is HealthStatus.DOWN
    clock.advance(29.9)
    assert not h.allow("a")
    clock.advance(0.1)
    assert h.state("a") is BreakerState.HALF_OPEN
    assert h.allow("a") is True        # the probe
    assert h.allow("a") is False       # exactly one
    assert h.status("a") is HealthStatus.DEGRADED
    h.record_success("a", 50)
    assert h.state("a") is BreakerState.CLOSED
    assert h.allow("a") and h.allow("a")
    assert h.status("a") is HealthStatus.HEALTHY


def test_failed_probe_reopens_with_doubled_cooldown_capped() -> None:
    h, clock = tracker(cooldown_s=30.0, max_cooldown_s=100.0)
    for _ in range(3):
        h.record_failure("a", "server_error")
    expected = [60.0, 100.0, 100.0]  # 30 → 60 → 120 capped at 100
    clock.advance(30)
    for cooldown in expected:
        assert h.allow("a")
        h.record_failure("a", "server_error")
        assert h.state("a") is BreakerState.OPEN
        assert h.snapshot()["models"]["a"]["retry_in_s"] == pytest.approx(cooldown)
        clock.advance(cooldown - 0.01)
        assert not h.allow("a")
        clock.advance(0.01)
    assert h.allow("a")
    h.record_success("a", 1)
    # After closing, the next opening starts from the base cooldown again.
    for _ in range(3):
        h.record_failure("a", "server_error")
    assert h.snapshot()["models"]["a"]["retry_in_s"] == pytest.approx(30.0)


def test_error_rate_opens_the_circuit_without_consecutive_failures() -> None:
    h, _ = tracker(failure_threshold=100, error_rate_threshold=0.5, min_samples=4)
    for ok in (True, False, True, False, False):
        if ok:
            h.record_success("a", 1)
        else:
            h.record_failure("a", "server_error")
    assert h.state("a") is BreakerState.OPEN  # 3 of 5 failed, never 3 in a row before


def test_window_forgets_old_outcomes() -> None:
    h, clock = tracker(window_s=60, failure_threshold=100, error_rate_threshold=1.0)
    for _ in range(10):
        h.record_failure("a", "server_error")
    assert h.status("a") is HealthStatus.DOWN
    clock.advance(61)
    h.record_success("a", 1)
    assert h.snapshot()["models"]["a"]["window_calls"] == 1
    assert h.status("a") is HealthStatus.HEALTHY


def test_window_is_bounded_by_count() -> None:
    h, _ = tracker(window=4, min_samples=4)
    for _ in range(10):
        h.record_success("a", 1)
    assert h.snapshot()["models"]["a"]["window_calls"] == 4


def test_recent_errors_are_bounded_newest_first_and_snapshot_is_json() -> None:
    h, clock = tracker(recent_errors=3, failure_threshold=100, error_rate_threshold=1.0)
    for i, kind in enumerate(["a1", "a2", "a3", "a4"]):
        h.record_failure("m", kind, detail=f"detail {i}")
        clock.advance(1)
    snap = h.snapshot()
    json.dumps(snap)
    errors = snap["models"]["m"]["recent_errors"]
    assert [e["kind"] for e in errors] == ["a4", "a3", "a2"]
    assert errors[0]["age_s"] == pytest.approx(1.0)
    assert errors[0]["at"] == pytest.approx(1.7e9 + 1003.0)
    assert snap["models"]["m"]["failures"] == 4


def test_retry_after_blocks_the_model_until_it_runs_out() -> None:
    h, clock = tracker()
    h.record_failure("a", "rate_limited", retry_after_s=5)
    assert not h.allow("a")
    assert h.status("a") is HealthStatus.DEGRADED
    assert h.snapshot()["models"]["a"]["rate_limited_for_s"] == pytest.approx(5)
    clock.advance(5)
    assert h.allow("a")
    assert h.status("a") is HealthStatus.HEALTHY


@pytest.mark.parametrize("asked", [301.0, 86_400.0, 1e30])
def test_a_retry_after_rests_the_model_no_longer_than_max_cooldown(asked: float) -> None:
    # one upstream answer asking for a day (or 1e30 s, a date in year 9999) rested the model
    # for every caller for a day, whatever max_cooldown_s said
    h, clock = tracker(max_cooldown_s=300)
    h.record_failure("a", "rate_limited", retry_after_s=asked)
    assert not h.allow("a")
    assert h.snapshot()["models"]["a"]["rate_limited_for_s"] == pytest.approx(300)
    clock.advance(299)
    assert not h.allow("a")
    clock.advance(1)
    assert h.allow("a")


def test_lost_probe_is_given_up_after_probe_timeout() -> None:
    h, clock = tracker(probe_timeout_s=10)
    for _ in range(3):
        h.record_failure("a", "server_error")
    clock.advance(30)
    assert h.allow("a")
    assert not h.allow("a")
    clock.advance(10)
    assert h.allow("a")  # the first probe never reported back


def test_release_frees_the_probe_slot() -> None:
    h, clock = tracker()
    for _ in range(3):
        h.record_failure("a", "server_error")
    clock.advance(30)
    assert h.allow("a")
    h.release("a")
    assert h.allow("a")


def test_release_frees_only_the_probe_slot_the_request_holds() -> None:
    """A request let through while the circuit was closed (slot 0), or a probe given up on
    after probe_timeout_s, ends with no verdict: the probe in flight keeps its slot."""
    h, clock = tracker(probe_timeout_s=10.0)
    assert h.admit("a") == 0  # closed: let through, no probe slot
    for _ in range(3):
        h.record_failure("a", "server_error")
    clock.advance(30)
    first = h.admit("a")
    assert first is not None and first > 0
    h.release("a", 0)  # the request let through before the circuit opened
    assert h.admit("a") is None  # still one probe
    clock.advance(10)  # the first probe is given up on; a second takes the slot
    second = h.admit("a")
    assert second is not None and second != first
    h.release("a", first)
    assert h.admit("a") is None
    h.release("a", second)
    assert h.admit("a") is not None


def test_rank_penalty_and_order_prefer_healthy_models() -> None:
    h, _ = tracker(degraded_latency_ms=100, degraded_penalty=0.2, down_penalty=5.0)
    h.record_success("slow", 1000)
    for _ in range(3):
        h.record_failure("dead", "connect_error")
    h.record_success("fine", 10)
    assert h.rank_penalty("fine") == 0.0
    assert h.rank_penalty("slow") == pytest.approx(0.2)
    assert h.rank_penalty("dead") == pytest.approx(5.0)
    assert h.order(["dead", "slow", "fine", "new"]) == ["fine", "new", "slow", "dead"]


def test_known_models_appear_in_the_snapshot_before_any_call() -> None:
    h = HealthTracker(models=["a", "b"])
    snap = h.snapshot()["models"]
    assert set(snap) == {"a", "b"}
    assert snap["a"]["status"] == "healthy" and snap["a"]["success_rate"] is None


def test_thread_safety_counts_every_call() -> None:
    h = HealthTracker(HealthConfig(failure_threshold=10**9, error_rate_threshold=1.0))
    def work(i: int) -> None:
        for j in range(500):
            if (i + j) % 2:
                h.record_success("m", j)
            else:
                h.record_failure("m", "server_error")
            h.allow("m")
            h.snapshot()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = h.snapshot()["models"]["m"]
    assert snap["successes"] + snap["failures"] == 8 * 500


def fail(h: HealthTracker, times: int, model: str = "a") -> None:
    for _ in range(times):
        h.record_failure(model, "server_error")


def test_an_error_rate_threshold_of_one_switches_the_rate_rule_off() -> None:
    h, _ = tracker(failure_threshold=8, error_rate_threshold=1.0, min_samples=5)
    fail(h, 7)  # every call of the window failed, 7 of them: not yet failure_threshold in a row
    assert h.state("a") is BreakerState.CLOSED and h.allow("a")
    fail(h, 1)
    assert h.state("a") is BreakerState.OPEN


def test_a_threshold_just_under_one_opens_when_every_call_of_enough_failed() -> None:
    h, _ = tracker(failure_threshold=8, error_rate_threshold=0.99, min_samples=5)
    fail(h, 4)
    assert h.state("a") is BreakerState.CLOSED  # fewer than min_samples calls
    fail(h, 1)
    assert h.state("a") is BreakerState.OPEN


def test_the_rate_rule_opens_at_exactly_its_threshold() -> None:
    h, _ = tracker(failure_threshold=100, error_rate_threshold=0.5, min_samples=4)
    for _ in range(2):
        h.record_success("a", 1)
    fail(h, 1)
    assert h.state("a") is BreakerState.CLOSED  # 1 of 3: too few calls
    fail(h, 1)
    assert h.state("a") is BreakerState.OPEN    # 2 of 4 is 0.5


def test_min_samples_of_one_lets_the_first_failure_open_the_circuit() -> None:
    h, _ = tracker(failure_threshold=100, error_rate_threshold=0.5, min_samples=1)
    h.record_success("a", 1)
    fail(h, 1)
    assert h.state("a") is BreakerState.OPEN  # 1 of 2 failed


def test_a_failure_threshold_of_one_opens_at_the_first_failure_whatever_the_rate() -> None:
    h, _ = tracker(failure_threshold=1, error_rate_threshold=1.0)
    for _ in range(20):
        h.record_success("a", 1)
    fail(h, 1)
    assert h.state("a") is BreakerState.OPEN


def test_equal_cooldowns_never_double() -> None:
    h, clock = tracker(cooldown_s=5.0, max_cooldown_s=5.0)
    fail(h, 3)
    for _ in range(3):
        clock.advance(5.0)
        assert h.allow("a")
        fail(h, 1)
        assert h.snapshot()["models"]["a"]["retry_in_s"] == pytest.approx(5.0)


def test_success_rates_of_zero_and_one_never_and_always_mark_a_model() -> None:
    lenient, _ = tracker(failure_threshold=100, error_rate_threshold=1.0,
                         degraded_success_rate=0.0, down_success_rate=0.0)
    fail(lenient, 20)
    assert lenient.status("a") is HealthStatus.HEALTHY  # no rate is below 0
    strict, _ = tracker(failure_threshold=100, error_rate_threshold=1.0,
                        degraded_success_rate=1.0, down_success_rate=1.0)
    for _ in range(20):
        strict.record_success("a", 1)
    assert strict.status("a") is HealthStatus.HEALTHY
    fail(strict, 1)
    assert strict.status("a") is HealthStatus.DOWN  # 20 of 21 is below 1


def test_an_error_rate_threshold_of_zero_is_refused_saying_what_to_set() -> None:
    with pytest.raises(ValueError, match="failure_threshold to 1"):
        HealthConfig(error_rate_threshold=0.0)


def test_min_samples_a_window_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match=r"min_samples \(6\) must be <= window \(5\)"):
        HealthConfig(window=5, min_samples=6)


@pytest.mark.parametrize("bad", [
    {"window": 0}, {"ewma_alpha": 0}, {"degraded_success_rate": 1.5}, {"cooldown_s": 0},
    {"max_cooldown_s": 1.0, "cooldown_s": 2.0}, {"failure_threshold": 0}, {"min_samples": 0},
    {"error_rate_threshold": 1.5}, {"probe_timeout_s": 0}, {"window_s": 0},
])
def test_bad_config_is_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthConfig(**bad)  # type: ignore[arg-type]


def test_the_gateways_window_and_minimum_of_calls_reach_the_breaker() -> None:
    from switchpoint.config import GatewaySettings
    from switchpoint.gateway.engine import health_config

    def run(g: GatewaySettings, outcomes: str) -> BreakerState:
        h = HealthTracker(health_config(g), clock=Clock())
        for ok in outcomes:
            if ok == "s":
                h.record_success("a", 1)
            else:
                fail(h, 1)
        return h.state("a")

    rate_only = {"failure_threshold": 100, "error_rate_threshold": 0.5}
    # Half of four calls failed: enough calls only when four are asked for.
    assert run(GatewaySettings(**rate_only), "sfsf") is BreakerState.CLOSED  # default: 5
    assert run(GatewaySettings(**rate_only, health_min_samples=4), "sfsf") is BreakerState.OPEN
    # Two failures after twenty successes: half of a window of four, not of fifty.
    assert run(GatewaySettings(**rate_only), "s" * 20 + "ff") is BreakerState.CLOSED
    small = GatewaySettings(**rate_only, health_window=4, health_min_samples=4)
    assert run(small, "s" * 20 + "ff") is BreakerState.OPEN
    assert run(small, "s" * 20 + "f") is BreakerState.CLOSED


def test_the_gateways_time_window_reaches_the_breaker() -> None:
    """``gateway.health_window_s``: calls older than it no longer count toward the rate rule
    (nor the success rate), whatever the window of calls holds."""
    from switchpoint.config import GatewaySettings
    from switchpoint.gateway.engine import health_config

    def run(g: GatewaySettings, gap_s: float) -> BreakerState:
        clock = Clock()
        h = HealthTracker(health_config(g), clock=clock)
        fail(h, 3)  # three failures, then a gap, then two more
        clock.advance(gap_s)
        fail(h, 2)
        return h.state("a")

    rate_only = {"failure_threshold": 100, "error_rate_threshold": 0.5}
    assert GatewaySettings().health_window_s == 300.0
    assert run(GatewaySettings(**rate_only), 100.0) is BreakerState.OPEN  # 5 within 300 s
    short = GatewaySettings(**rate_only, health_window_s=60.0)
    assert health_config(short).window_s == 60.0
    assert run(short, 100.0) is BreakerState.CLOSED  # only 2 calls left in the last 60 s
    assert run(short, 30.0) is BreakerState.OPEN


def test_a_new_window_keeps_each_models_newest_calls_and_errors() -> None:
    h, _ = tracker(failure_threshold=100, error_rate_threshold=1.0, recent_errors=5)
    for _ in range(6):
        h.record_success("a", 1)
    fail(h, 4)
    h.reconfigure(HealthConfig(window=4, min_samples=4, failure_threshold=100,
                               error_rate_threshold=0.5, recent_errors=2))
    snap = h.snapshot()["models"]["a"]
    assert snap["window_calls"] == 4 and snap["success_rate"] == 0.0  # the four failures
    assert len(snap["recent_errors"]) == 2
    assert h.status("a") is HealthStatus.DOWN
    h.record_success("a", 1)
    assert h.snapshot()["models"]["a"]["window_calls"] == 4  # bounded by the new window
    h.reconfigure(HealthConfig(window=10, min_samples=5))
    for _ in range(5):
        h.record_success("a", 1)
    assert h.snapshot()["models"]["a"]["window_calls"] == 9  # and grows to a larger one


def test_the_gateway_config_reaches_the_breaker_with_the_rate_rule_off() -> None:
    from switchpoint.config import GatewaySettings
    from switchpoint.gateway.engine import health_config

    config = health_config(GatewaySettings(failure_threshold=8, error_rate_threshold=1.0))
    h = HealthTracker(config, clock=Clock())
    fail(h, 7)
    assert h.state("a") is BreakerState.CLOSED
    fail(h, 1)
    assert h.state("a") is BreakerState.OPEN
