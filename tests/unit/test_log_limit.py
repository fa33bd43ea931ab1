"""The log's repeat rule counted per what a record names: every failed try's line is one
message, so one model's outage used the minute's five lines and another model's failures
showed only as a count; and a retry's INFO lines had five a minute more beside the WARNINGs."""

from __future__ import annotations

import logging

from switchpoint._log_limit import RateLimitFilter, SaidOnce, repeats_per

LOG = logging.getLogger("switchpoint.test.per")
MESSAGE = "request %s: upstream try %d failed"


def _record(per: str | None, level: int = logging.WARNING, n: int = 0) -> logging.LogRecord:
    return LOG.makeRecord(LOG.name, level, __file__, 1, MESSAGE, (f"r{n}", 1), None,
                          extra=None if per is None else repeats_per(per))


def test_records_naming_different_things_have_a_limit_each() -> None:
    now = [0.0]
    limiter = RateLimitFilter(burst=5, interval=60, clock=lambda: now[0])
    passed_a = [limiter.filter(_record("a", n=n)) for n in range(50)]
    assert sum(passed_a) == 5
    # b's first failures show though a's outage used a's lines.
    firsts = [_record("b", n=n) for n in range(3)]
    assert all(limiter.filter(r) for r in firsts)
    assert not any("more like this" in r.getMessage() for r in firsts)
    assert sum(limiter.filter(_record("b", n=n)) for n in range(10)) == 2
    # Each window's count of those not logged is its own.
    now[0] = 60.0
    late_a, late_b = _record("a"), _record("b")
    assert limiter.filter(late_a) and limiter.filter(late_b)
    assert "[45 more like this were not logged in the previous 60 s]" in late_a.getMessage()
    assert "[8 more like this were not logged in the previous 60 s]" in late_b.getMessage()
    assert limiter.dropped_total == 45 + 8
    # A record naming nothing is counted apart, by its level, as before.
    plain = [limiter.filter(_record(None, n=n)) for n in range(10)]
    assert sum(plain) == 5


def test_one_things_levels_share_its_limit_a_more_severe_line_still_shows() -> None:
    limiter = RateLimitFilter(burst=5, interval=60, clock=lambda: 0.0)
    infos = [_record("a", logging.INFO, n) for n in range(5)]
    assert all(limiter.filter(r) for r in infos)
    assert infos[4].getMessage().endswith("[repeated 5 times; more like this are not logged "
                                          "for up to 60 s]")
    assert not limiter.filter(_record("a", logging.INFO))
    # The model's first WARNING past its retries' lines shows; the next is within the limit.
    warning = _record("a", logging.WARNING)
    assert limiter.filter(warning) and "more like this" not in warning.getMessage()
    assert not limiter.filter(_record("a", logging.WARNING))
    assert not limiter.filter(_record("a", logging.INFO))
    assert limiter.filter(_record("a", logging.ERROR))
    assert not limiter.filter(_record("a", logging.ERROR))
    # Five of one model's lines a minute at every level together, not five of each level.
    mixed = RateLimitFilter(burst=5, interval=60, clock=lambda: 0.0)
    levels = [logging.WARNING, logging.INFO] * 10
    assert sum(mixed.filter(_record("b", level, n)) for n, level in enumerate(levels)) == 5


def test_what_a_record_repeats_per_is_bounded_in_the_key() -> None:
    limiter = RateLimitFilter(burst=1, interval=60, max_keys=4, clock=lambda: 0.0)
    # Names alike in their first 256 characters are one; each key is bounded, so is their number.
    assert limiter.filter(_record("m" * 256 + "x"))
    assert not limiter.filter(_record("m" * 256 + "y"))
    for n in range(100):
        assert limiter.filter(_record(f"model-{n}" + "z" * 10_000))
    assert len(limiter._windows) == 4
    assert all(len(str(key[1])) <= 256 for key in limiter._windows)


def test_what_was_said_is_said_once_and_the_first_said_is_forgotten_first() -> None:
    said: SaidOnce[str] = SaidOnce()
    assert said.new(["a", "b", "a"], most=3) == ["a", "b"]
    assert said.new(["b", "c"], most=3) == ["c"]
    assert said.new(["d"], most=3) == ["d"] and list(said) == ["b", "c", "d"]
    assert said.new(["a", "d"], most=3) == ["a"]  # (forgotten, so said again)
    assert list(said) == ["c", "d", "a"]
