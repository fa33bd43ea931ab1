"""The failed-try log's line for each sequel a failed try can have: what the line says followed
is what happened (a retry logged as it starts; one never sent says what stopped it)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from switchpoint._log_limit import RateLimitFilter
from switchpoint.gateway.failed_tries import FailedTryLog
from switchpoint.gateway.failover import BUDGET_REFUSED, CLIENT_CLOSED, Attempt, Sequel


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


@pytest.fixture
def kept() -> Iterator[_Kept]:
    handler = _Kept()
    logger = logging.getLogger("switchpoint.gateway")
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def _line(kept: _Kept, attempt: Attempt, sequel: Sequel) -> str:
    FailedTryLog(RateLimitFilter())("r1", attempt, sequel)
    return kept.lines.pop()


def test_each_sequel_says_what_followed(kept: _Kept) -> None:
    failed = Attempt("a", 1, "server_error", status=500, error="boom")
    limited = Attempt("a", 1, "rate_limited", status=429, error="slow down")
    assert _line(kept, failed, Sequel(retry_in_s=0.25)).endswith("; retrying a after 0.25 s")
    assert _line(kept, limited, Sequel(retry_in_s=1.0)).startswith("INFO: request r1: ")
    refused = _line(kept, failed, Sequel(next_model="b", not_retried=BUDGET_REFUSED))
    assert refused.startswith("WARNING: request r1: upstream try 1 failed, a: server_error")
    assert refused.endswith(f"; its retry was not sent ({BUDGET_REFUSED}), failing over to b")
    assert _line(kept, failed, Sequel(not_retried=BUDGET_REFUSED)).endswith(
        f"; its retry was not sent ({BUDGET_REFUSED}), the request fails")
    left = _line(kept, limited, Sequel(not_retried=CLIENT_CLOSED))
    assert left.startswith("WARNING: ") and left.endswith("; the client left before its retry")
