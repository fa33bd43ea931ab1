"""One line in the service's log for each upstream try that failed, so an operator watching the
log during an outage sees what the request log and the client's error say.

Each line names the request, the model, the try, the error's kind (``server_error``,
``read_timeout``, ``rate_limited``, ...), its HTTP status when there was one, the reason
(redacted, and cut as the request log's failover reasons are: :func:`describe_attempts`) and
what followed: a retry (logged as the retry starts, after its wait), the next model, or the
request's failure; or, when the retry waited for was not sent, what stopped it (a budget's or a
rate limit's refusal, then the next model or the request's failure; the client leaving during
the wait). A try that failed over, or failed the request, is a WARNING; a 429 retried (after
the wait its upstream asked for) is INFO, as the upstream's own flow control at work rather
than a fault. A try that answered logs nothing.

A try never sent because its model's API key variable is not set (or holds no key a request
header can carry) is no upstream's failure but the configuration's: its line says no request
was sent, naming the variable (never its value) and what mends it, as an ERROR.

The lines of each kind share one message, repeated per model: each gateway lets five a minute
of each message and model through, at every level together, and counts the rest
(:class:`~switchpoint._log_limit.RateLimitFilter`, the rule the service's log applies to every
message; a line more severe than those a minute let through still shows): an outage of
thousands of failed tries does not flood the log, in the service nor in a program using a
:class:`~switchpoint.gateway.Gateway` in process, where no handler of the service's limits
what Python prints on stderr, and one model's outage does not hide another's failures.
"""

from __future__ import annotations

import logging

from switchpoint._log_limit import RateLimitFilter, repeats_per
from switchpoint._messages import printable
from switchpoint._redact import redact
from switchpoint.errors import MissingApiKey, RateLimited
from switchpoint.gateway.failover import CLIENT_CLOSED, Attempt, Sequel, describe_attempts

log = logging.getLogger("switchpoint.gateway")

# The one message of every such line (the log filter counts its repeats by it), and that of a
# try its model's missing API key kept from being sent.
MESSAGE = "request %s: upstream try %d failed, %s; %s"
NOT_SENT = "request %s: no request sent upstream for try %d, %s; %s"


class FailedTryLog:
    """The log of one gateway's failed tries: ``log(request_id, attempt, sequel)`` logs
    ``attempt``, a try of request ``request_id`` that failed, with what followed it, unless
    ``repeats`` (five lines of a message a minute for each model unless told) holds it
    back."""

    def __init__(self, repeats: RateLimitFilter | None = None) -> None:
        self.repeats = RateLimitFilter() if repeats is None else repeats

    def __call__(self, request_id: str, attempt: Attempt, sequel: Sequel) -> None:
        retried = sequel.retry_in_s is not None
        unsent = attempt.outcome == MissingApiKey.kind  # (the configuration's fault)
        level = (logging.ERROR if unsent
                 else logging.INFO if retried and attempt.outcome == RateLimited.kind
                 else logging.WARNING)
        if not log.isEnabledFor(level):
            return
        if retried:
            then = f"retrying {attempt.model} after {sequel.retry_in_s:.3g} s"
        elif sequel.not_retried == CLIENT_CLOSED:
            then = "the client left before its retry"
        elif sequel.next_model is not None:
            then = f"failing over to {sequel.next_model}"
        else:
            then = "the request fails"
        if sequel.not_retried is not None and sequel.not_retried != CLIENT_CLOSED:
            then = f"its retry was not sent ({sequel.not_retried}), {then}"
        fn, lno, func, _ = log.findCaller()
        record = log.makeRecord(log.name, level, fn, lno, NOT_SENT if unsent else MESSAGE,
                                (request_id, attempt.attempt,
                                 printable(redact(describe_attempts([attempt]))), then),
                                None, func, repeats_per(attempt.model))
        if self.repeats.filter(record):
            log.handle(record)
