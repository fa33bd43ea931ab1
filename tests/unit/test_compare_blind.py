"""What a blind comparison shows of an answer that failed: a generic reason, the same whatever
the upstream or the model said; and of one that answered, a finish reason of OpenAI's own."""

from __future__ import annotations

import pytest

from switchpoint.errors import (
    BadRequest,
    BudgetExceededError,
    ContentFiltered,
    ContextLengthExceeded,
    FailoverError,
    NoCapableModelError,
    ProviderError,
    RateLimited,
    ReadTimeout,
    ServerError,
    UnsupportedRequest,
)
from switchpoint.gateway.failover import Attempt
from switchpoint.gateway.preferences import blind_detail, blind_failure


def failed(model: str, *errors: ProviderError) -> FailoverError:
    attempts = [Attempt(model, i + 1, e.kind, status=e.status, error=str(e))
                for i, e in enumerate(errors)]
    return FailoverError(f"{model}: no model answered: {attempts}", attempts, errors[-1])


CASES = [
    (failed("big", ServerError("HTTP 500 from big-model-v2", model="big", status=500)),
     "upstream_error"),
    (failed("big", RateLimited("HTTP 429: Anthropic overloaded", model="big", status=429)),
     "upstream_error"),
    (failed("big", ServerError("500", model="big", status=500),
            ReadTimeout("no answer within 30 s", model="big")), "upstream_error"),
    (failed("big", ReadTimeout("no answer within 30 s", model="big"),
            ReadTimeout("no answer within 30 s", model="big")), "timed_out"),
    (failed("small", ContextLengthExceeded("This model's maximum context length is 8192",
                                           model="small", status=400)), "too_long"),
    (failed("small", ContentFiltered("Azure OpenAI's content management policy",
                                     model="small", status=400)), "refused"),
    (failed("small", BadRequest("small-v1 does not support temperature", model="small",
                                status=400)), "refused"),
    (failed("claude", UnsupportedRequest("the Anthropic Messages API gives one answer",
                                         model="claude")), "refused"),
    (NoCapableModelError("messages: model 'small' cannot serve this request (small: ~9000 "
                         "prompt tokens exceed its context window of 8192)",
                         {"small": ["~9000 prompt tokens exceed its context window of 8192"]}),
     "too_long"),
    (NoCapableModelError("messages: model 'small' cannot serve this request",
                         {"small": ["the request has images and the model does not list "
                                    '"vision"']}), "refused"),
    (BudgetExceededError("model budget of small ($1/day) is spent", budget="model:small",
                         retry_after=60), "refused"),
    (RuntimeError("small exploded"), "upstream_error"),
]
MESSAGES = {"upstream_error": "upstream error", "timed_out": "timed out",
            "too_long": "refused: too long", "refused": "refused"}


@pytest.mark.parametrize(("error", "code"), CASES)
def test_a_failure_is_told_in_generic_words(error: Exception, code: str) -> None:
    assert blind_failure(error) == {"code": code, "message": MESSAGES[code]}
    shown = blind_detail(error)
    assert shown == {"request_id": None, "finish_reason": None,
                     "error": {"code": code, "message": MESSAGES[code]}}
    for hint in ("big", "small", "claude", "anthropic", "azure", "8192", "429", "500"):
        assert hint not in str(shown).lower()
