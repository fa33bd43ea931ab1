"""The failed-try log's line for each sequel a failed try can have: what the line says followed
is what happened (a retry logged as it starts; one never sent says what stopped it); a try its
model's missing API key kept from being sent says no request was sent, as an ERROR."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from switchpoint._log_limit import RateLimitFilter
from switchpoint.errors import MissingApiKey
from switchpoint.gateway.failed_tries import FailedTryLog
from switchpoint.gateway.failover import (
    BUDGET_REFUSED,
    CLIENT_CLOSED,
    Attempt,
    Sequel,
    describe_attempts,
)
from switchpoint.gateway.providers._http import map_transport_error
from switchpoint.gateway.providers._transport import RefusedAddress
from switchpoint.gateway.providers.base import Timeouts
from switchpoint.registration import internal_address, rebound_host


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


def test_a_try_its_missing_key_kept_from_being_sent_says_so_naming_the_variable(
        kept: _Kept) -> None:
    """It said "upstream try 1 failed", a WARNING, though nothing was sent: the configuration
    is at fault, every call to the model failing until the variable is exported."""
    error = MissingApiKey("SP_SOME_KEY", model="a")
    unsent = Attempt("a", 1, error.kind, error=str(error))
    line = _line(kept, unsent, Sequel(next_model="b"))
    assert line == ("ERROR: request r1: no request sent upstream for try 1, a: missing_api_key: "
                    "the API key variable SP_SOME_KEY is not set; export SP_SOME_KEY=<key> or "
                    "point the model's api_key_env at the variable that holds it; failing over "
                    "to b"), line
    # Held to the same five a minute.
    log = FailedTryLog(RateLimitFilter())
    for _ in range(20):
        log("r2", unsent, Sequel())
    assert len(kept.lines) == 5, kept.lines


def test_each_models_failed_tries_are_held_to_their_own_five_a_minute(kept: _Kept) -> None:
    """Every failed try's line was one message: one model's outage used the minute's five
    lines, and another's failures meanwhile showed only as a count."""
    now = [0.0]
    log = FailedTryLog(RateLimitFilter(clock=lambda: now[0]))
    for n in range(20):
        log(f"a{n}", Attempt("a", 1, "server_error", status=500), Sequel(retry_in_s=0))
        log(f"a{n}", Attempt("a", 2, "rate_limited", status=429), Sequel(retry_in_s=1))
    log("b0", Attempt("b", 1, "read_timeout"), Sequel())
    assert [line.split(": ", 2)[1] for line in kept.lines] == (
        ["request a0", "request a0", "request a1", "request a1", "request a2", "request b0"])
    # a's retries' INFO lines and its failures' WARNINGs share its five.
    assert [line.split(":", 1)[0] for line in kept.lines] == (
        ["WARNING", "INFO", "WARNING", "INFO", "WARNING", "WARNING"])
    assert kept.lines[4].endswith("[repeated 5 times; more like this are not logged for up "
                                  "to 60 s]"), kept.lines[4]
    now[0] = 60.0
    log("a20", Attempt("a", 1, "server_error", status=500), Sequel())
    log("b1", Attempt("b", 1, "read_timeout"), Sequel())
    assert kept.lines[-2].endswith("; the request fails [35 more like this were not logged in "
                                   "the previous 60 s]"), kept.lines[-2]
    assert kept.lines[-1].endswith("; the request fails"), kept.lines[-1]


def test_a_connection_refused_for_a_rebound_host_says_what_to_do_within_the_cut(
        kept: _Kept) -> None:
    """A registered model's host name that now resolves to a metadata or link-local address:
    the line, and the failover's summary it is cut as (the client's error), say what happened
    and name the setting that allows it, however long the host name and address."""
    host = ".".join(["h" * 63] * 3) + "." + "d" * 61  # (the longest a host name is: 253)
    what = internal_address("64:ff9b:1:ffff:ffff:ff00:a9fe:a9fe")
    assert what is not None
    refusal = map_transport_error(RefusedAddress(rebound_host(host, what)), model="m",
                                  timeouts=Timeouts())
    attempt = Attempt("m", 1, refusal.kind, error=str(refusal))
    advice = ("m: connect_error: not sent: host now resolves to a metadata/link-local "
              "address; list it in the config, or set gateway.allow_registered_metadata_hosts: "
              "true there and reload")
    assert advice in describe_attempts([attempt]), describe_attempts([attempt])
    assert advice in _line(kept, attempt, Sequel(next_model="b"))
