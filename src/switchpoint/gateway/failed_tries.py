"""One line in the service's log for each upstream try that failed, so an operator watching the
log during an outage sees what the request log and the client's error say.

Each line names the request, the model, the try, the error's kind (``server_error``,
``read_timeout``, ``rate_limited``, ...), its HTTP status when there was one, the reason
(redacted, and cut as the request log's failover reasons are: :func:`describe_attempts`) and
what followed: a retry, the next model, or the request's failure. A try that failed over, or
failed the request, is a WARNING; a 429 retried (after the wait its upstream asked for) is
INFO, as the upstream's own flow control at work rather than a fault. A try that answered logs
nothing.

All lines share one message, so the service's log filter
(:class:`~switchpoint.server.logs.RateLimitFilter`) lets five a minute of each level through
and counts the rest: an outage of thousands of failed tries does not flood the log.
"""

from __future__ import annotations

import logging

from switchpoint._messages import printable
from switchpoint._redact import redact
from switchpoint.errors import RateLimited
from switchpoint.gateway.failover import Attempt, Sequel, describe_attempts

log = logging.getLogger("switchpoint.gateway")

# The one message of every such line (the log filter counts its repeats by it).
MESSAGE = "request %s: upstream try %d failed, %s; %s"


def log_failed_try(request_id: str, attempt: Attempt, sequel: Sequel) -> None:
    """Log ``attempt``, a try of request ``request_id`` that failed, with what followed it."""
    retried = sequel.retry_in_s is not None
    level = logging.INFO if retried and attempt.outcome == RateLimited.kind else logging.WARNING
    if not log.isEnabledFor(level):
        return
    if retried:
        then = f"retrying {attempt.model} in {sequel.retry_in_s:.3g} s"
    elif sequel.next_model is not None:
        then = f"failing over to {sequel.next_model}"
    else:
        then = "the request fails"
    log.log(level, MESSAGE, request_id, attempt.attempt,
            printable(redact(describe_attempts([attempt]))), then)
