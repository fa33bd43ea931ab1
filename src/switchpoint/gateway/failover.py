"""Failover: retry a model with jittered backoff, then escalate along a candidate list.

:func:`call_with_failover` walks an ordered list of catalog cards (a named model's
:func:`fallback_chain`, or the router's ranking for ``model: "auto"``). Per model it makes up to
``RetryPolicy.max_attempts_per_model`` attempts while the error is *retryable*, sleeping a
full-jitter exponential backoff (``uniform(0, min(cap, base·2ⁿ))``) or exactly the upstream's
``Retry-After`` when it sent one. A ``Retry-After`` longer than ``max_retry_after_s`` is not
waited out: the model is left for the next one (and the health tracker keeps it closed for that
long). An error that may *escalate* moves on to the next candidate; one that may not (a plain
400, a content-filter refusal) stops at once with the upstream's answer. Candidates whose
circuit breaker is open are skipped, and after a context-length refusal so are the candidates
whose ``context_window`` is no larger than the refusing model's (they would refuse too): the
request escalates to a larger-context model.

Streams (``stream=True``) are *committed* only once the first content chunk has arrived: until
then every failure (an error status, a reset, a first-token timeout, a cut or malformed stream)
can retry or escalate, and nothing has been sent to the client. The returned
:class:`FailoverStream` then yields that chunk and the rest; a failure after that is raised as
:class:`~switchpoint.errors.StreamBroken` with ``after_first_byte=True`` and must end the
client's stream with an error event.

The whole request, streams included, gives up after ``RetryPolicy.max_total_s``: the deadline
is enforced while an upstream is answering, not only between tries, so an upstream that trickles
bytes cannot hold a request past it.

Every attempt, failed or not, and every model passed over (with why) is listed in ``attempts``
for the request log and for the error the client gets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple, overload

from switchpoint._messages import listed_names
from switchpoint.catalog import Catalog, ModelCard, text_tokens, usd
from switchpoint.errors import (
    ContextLengthExceeded,
    DeadlineSpent,
    FailoverError,
    ProviderError,
    RateLimited,
    ReadTimeout,
    StreamBroken,
)
from switchpoint.gateway.health import BreakerState, HealthTracker
from switchpoint.gateway.parsing import answers_asked
from switchpoint.gateway.providers.base import (
    CountedChunk,
    FinishedChoices,
    Provider,
    ProviderResponse,
    ReportedSoFar,
    Timeouts,
    TokenUsage,
    WholeAnswerChunk,
    answer_bytes,
    believed,
    is_content_chunk,
    shown_usage,
    usage_of,
)
from switchpoint.gateway.providers.sending import SendWatch, watching_send

ProviderFor = Callable[[ModelCard], Provider]
TimeoutsFor = Timeouts | Callable[[ModelCard], Timeouts]


class NotSent(NamedTuple):
    """Why a try may not be sent (see :data:`BeforeTry`): the outcome its attempt records
    (:data:`BUDGET_REFUSED` or :data:`RATE_REFUSED`) and the reason."""

    outcome: str
    why: str


# Asked before each try of a model, with the tries so far: None to send it, or why it may not
# be sent (the request's budget cannot hold it, or a tokens-per-minute window cannot take it;
# see Governor.hold_try).
BeforeTry = Callable[[ModelCard, Sequence["Attempt"]], NotSent | None]

log = logging.getLogger("switchpoint.gateway")


@dataclass(frozen=True)
class Sequel:
    """What followed a failed try: the same model tried again after ``retry_in_s`` seconds
    (told as that try starts), the request failed over to ``next_model``, or (neither) the
    request failed. ``not_retried``: the retry waited for was not sent, and why (the outcome
    of what stopped it: :data:`BUDGET_REFUSED`, :data:`RATE_REFUSED`, or
    :data:`CLIENT_CLOSED` when the client left during the wait, which nothing follows)."""

    retry_in_s: float | None = None
    next_model: str | None = None
    not_retried: str | None = None


# Told of each failed try (its Attempt) once what follows it is known (see call_with_failover).
OnFailedTry = Callable[["Attempt", Sequel], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Times in seconds."""

    max_attempts_per_model: int = 2
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 4.0
    max_retry_after_s: float = 10.0
    max_total_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts_per_model < 1:
            raise ValueError("max_attempts_per_model must be >= 1")
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("backoff and retry-after limits must be >= 0")
        if self.max_total_s <= 0:
            raise ValueError("max_total_s must be > 0")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full-jitter backoff before retry number ``retry`` (1 for the first retry)."""
        return rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (retry - 1)))


# A try not sent because the request's budget could not hold it, or a tokens-per-minute
# window of its caller could not take it (see BeforeTry).
BUDGET_REFUSED = "budget_exceeded"
RATE_REFUSED = "rate_limit_exceeded"
NOT_SENT = frozenset({BUDGET_REFUSED, RATE_REFUSED})
# Outcomes of candidates that were passed over without a call.
SKIPPED = frozenset({"circuit_open", "context_too_small", *NOT_SENT})
# The outcome of the try under way (or waited for) when the caller left: no verdict on it.
CLIENT_CLOSED = "client_closed"
# A stream's deadline timer is moved only when a read finds the deadline, by the stream's clock,
# earlier than the timer by more than this (a clock that is not the event loop's): the two
# clocks read a moment apart differ by far less.
_DEADLINE_SLACK_S = 1e-3


@dataclass
class UnderWay:
    """The try a call has under way, for a caller that must end the call without it running
    on (its event loop stopped): ``left`` gives the try as the caller leaving now would record
    it (a :data:`CLIENT_CLOSED` try, billed if its request may have been sent); None between
    tries."""

    left: Callable[[], Attempt] | None = None


@dataclass
class Attempt:
    """One try of one model. ``outcome`` is ``"ok"``, an error kind, (for a candidate passed
    over without a call) ``"circuit_open"``, ``"context_too_small"`` or one of :data:`NOT_SENT`,
    or ``"client_closed"`` (the try under way, or waited for, when the caller left).
    ``retry_after_s``: the wait the upstream asked for with ``Retry-After`` (a 429, or a 503
    that sent one; taken as a day at most, and as the health tracker's ``max_cooldown_s`` at
    most when there is one: the model is out of use that long), or for a model passed over as
    unhealthy, how long
    it stays out; the request log's entry keeps it (only when there is one).
    ``begun`` is False for a try that was only waited for (the caller left between two
    tries): nothing was sent for it.
    ``billed``: the try ended after its request was sent and before an answer, in a way that
    says the model may have generated (see :func:`billed_tries`); ``usage``, for such a try,
    what the upstream reported it used (a whole answer holding no choice, or misnumbered ones,
    reports it; a stream broken before its first content may have, in a chunk before it
    broke), None when unknown; ``reasoned``, for a stream broken or cut off (the deadline,
    the caller leaving, a stop) before its first content without usage, what it was seen to
    generate (the reasoning or thinking that came, and the prompt count the upstream
    reported; None: nothing came); ``charged_usd`` is what the request's budgets were
    charged for it, once settled. ``cause``, for a model passed over as unhealthy, the kind
    of the failure that keeps it out (``"rate_limited"``: it rests after its upstream's rate
    limit)."""

    model: str
    attempt: int
    outcome: str
    latency_ms: float = 0.0
    waited_s: float = 0.0
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    begun: bool = True
    billed: bool = False
    charged_usd: float | None = None
    usage: TokenUsage | None = None
    reasoned: ReportedSoFar | None = None
    cause: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def skipped(self) -> bool:
        return self.outcome in SKIPPED

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "attempt": self.attempt, "outcome": self.outcome,
               "latency_ms": round(self.latency_ms, 2), "waited_s": round(self.waited_s, 3),
               "status": self.status, "error": self.error}
        if self.retry_after_s is not None:
            out["retry_after_s"] = round(self.retry_after_s, 3)
        if self.charged_usd is not None:
            out["charged_usd"] = usd(self.charged_usd)
        return out


def failed_models(attempts: Sequence[Attempt]) -> set[str]:
    """The models of ``attempts`` that failed: called and failed, or passed over as unhealthy
    or too small; not the one being tried when the caller left (:data:`CLIENT_CLOSED`: it may
    yet have answered), nor one passed over because the budget or a rate window could not
    hold its try (the model is not at fault)."""
    left = {a.model for a in attempts if a.outcome == CLIENT_CLOSED}
    return {a.model for a in attempts
            if not a.ok and a.outcome not in NOT_SENT and a.model not in left}


def billed_tries(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The tries of ``attempts`` that a provider may have billed without an answer: each
    ended after its request was sent, in a way that says the model may have been generating
    (a read or first-token timeout, the request's deadline cutting it, a stream or an answer
    cut part-way, an answer too large, an answer holding no choice or misnumbered ones (an
    index of ``1e30``, one repeated); or the caller leaving while it was under way). A
    provider bills what it generated until the connection closed, so each is charged what its
    usage costs when the upstream reported one (``usage``: such an answer may), else the
    estimate of the reasoning it was seen to generate before it broke or was cut off
    (``reasoned``), else its model's worst case (see :func:`billed_use`). (So is a
    connection lost after the request was sent, before any response.) Not billed: a try
    that failed, or was cut by the deadline or left by the caller, before its request was
    sent (connecting, waiting for a connection, a missing key), one the upstream refused
    with an error status (4xx, 5xx, 429), a candidate passed over, a try only waited for
    when the caller left. (A committed stream's own end is charged with its answer: its
    usage, else an estimate from what it relayed; see :meth:`FailoverStream.use`.)"""
    return [a for a in attempts if a.billed]


def _reported(error: ProviderError) -> TokenUsage | None:
    """The usage the upstream reported for a try that failed with ``error`` after it may have
    generated (a whole answer holding no choice, or misnumbered ones, carries it; so does a
    stream broken before its first content that reported it, see
    :func:`~switchpoint.gateway.providers._http.stream_chunks`): what it billed, None when
    unknown (then its model's worst case is charged)."""
    if not error.may_have_generated or not isinstance(error.body, Mapping):
        return None
    return usage_of(error.body)


def outgrown_models(attempts: Sequence[Attempt]) -> set[str]:
    """The models of ``attempts`` that refused the conversation as too long for them (a
    larger model may take it; the same one never will, as a conversation only grows)."""
    return {a.model for a in attempts if a.outcome == ContextLengthExceeded.kind}


def describe_attempts(attempts: Sequence[Attempt]) -> str:
    """Every model tried or passed over and why, in order: ``a: server_error (HTTP 500) x2;
    b: skipped, circuit open (retry in 12 s)``."""
    parts: list[str] = []
    by_model: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_model.setdefault(a.model, []).append(a)
    for model, tries in by_model.items():
        reasons: list[str] = []
        for a in tries:
            if a.outcome == "circuit_open":
                wait = (f" (retry in {a.retry_after_s:.0f} s)"
                        if a.retry_after_s is not None else "")
                reasons.append(f"skipped, resting after its upstream's rate limit{wait}"
                               if a.cause == RateLimited.kind
                               else f"skipped as unhealthy, circuit open{wait}")
            elif a.skipped:
                reasons.append(f"skipped, {a.error or a.outcome}")
            elif a.ok:
                reasons.append("ok")
            else:
                status = f" (HTTP {a.status})" if a.status is not None else ""
                detail = _short(a.error)
                reasons.append(f"{a.outcome}{status}{': ' + detail if detail else ''}")
        counted: dict[str, int] = {}
        for r in reasons:
            counted[r] = counted.get(r, 0) + 1
        parts.append(f"{model}: " + ", ".join(r if n == 1 else f"{r} x{n}"
                                              for r, n in counted.items()))
    return "; ".join(parts)


def _short(error: str | None, limit: int = 160) -> str:
    if not error:
        return ""
    # The attempt's error repeats the model name ("good: ..."); the summary already has it.
    text = error.split(": ", 1)[1] if ": " in error[:80] else error
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cost(card: ModelCard, usage: TokenUsage | None) -> float | None:
    """What ``usage`` cost on ``card`` (USD, to the places every amount of dollars is kept
    to: :func:`~switchpoint.catalog.usd`), or None when that is unknown: no usage, or a model
    without prices (whose cost is not 0, only unknown)."""
    if usage is None or not card.priced:
        return None
    return usd(card.price(usage.prompt_tokens, usage.completion_tokens))


def billed_use(attempt: Attempt, card: ModelCard, prompt_tokens: int,
               worst_usd: float | None) -> AnswerUse:
    """What ``attempt``, a try of ``card`` a provider may have billed with no answer, is
    charged at: the usage its upstream reported (:attr:`Attempt.usage`); else, for a stream
    broken or cut off while its upstream was still reasoning, before any content, the
    estimate of what it was seen to generate (:attr:`Attempt.reasoned`), by the rule an answer's is
    (:func:`answer_use`: ``prompt_tokens`` unless the upstream reported the prompt's count,
    never past ``worst_usd``); else unknown (cost and usage None): its worst case."""
    if attempt.usage is None and attempt.reasoned is None:
        return AnswerUse(None, None)
    return answer_use(card, attempt.usage, prompt_tokens, 0, worst_usd, attempt.reasoned,
                      stream=True)


def _tried(attempts: Sequence[Attempt]) -> list[str]:
    """The models actually called, in order, each once."""
    return list(dict.fromkeys(a.model for a in attempts if not a.skipped))


@dataclass
class FailoverResult:
    """A non-streamed answer: the model that gave it, the OpenAI body, every attempt."""

    model: str
    card: ModelCard
    response: ProviderResponse
    attempts: list[Attempt]
    upstream_model: str | None = None
    answers: int = 1  # how many the request asked for (its n)

    @property
    def body(self) -> dict[str, Any]:
        return self.response.body

    @property
    def usage(self) -> TokenUsage | None:
        """The usage the upstream reported, when its model could have used it (see
        :func:`~switchpoint.gateway.providers.base.believed`)."""
        return believed(self.response.usage, self.card, self.answers)

    @property
    def cost_usd(self) -> float | None:
        """The answer's price from the catalog card and the upstream's usage (None: unknown,
        for an answer without usage or of a model without prices)."""
        return _cost(self.card, self.usage)

    def use(self, prompt_tokens: int, worst_usd: float | None) -> AnswerUse:
        """What the answer is charged at (:func:`answer_use`): its usage, else an estimate
        from its text and tool-call arguments (each choice's) and what its upstream reported
        beside them (the Messages API's prompt count and thinking)."""
        return answer_use(self.card, self.usage, prompt_tokens,
                          answer_bytes(self.body, "message"), worst_usd,
                          self.response.reported, stream=False)

    @property
    def models_tried(self) -> list[str]:
        return _tried(self.attempts)


class AnswerUse(NamedTuple):
    """What an answer, plain or streamed, is charged at (see :func:`answer_use`): its cost in
    USD and its tokens (None: unknown, its worst case), and ``estimated``: worked out from
    what it wrote, the upstream having reported no usage to believe; ``relayed_bytes``, the
    bytes of answer (:func:`~switchpoint.catalog.text_bytes`) relayed; ``unrelayed_bytes``,
    those the upstream reported it generated but the gateway does not relay (thinking);
    ``prompt_reported``: whether its prompt tokens are the upstream's own count, not the
    gateway's estimate; ``stream``: whether the answer was streamed."""

    cost_usd: float | None
    usage: TokenUsage | None
    estimated: bool = False
    relayed_bytes: int = 0
    unrelayed_bytes: int = 0
    prompt_reported: bool = False
    stream: bool = True


def answer_use(card: ModelCard, usage: TokenUsage | None, prompt_tokens: int,
               relayed_bytes: int, worst_usd: float | None,
               reported: ReportedSoFar | None = None, *, stream: bool) -> AnswerUse:
    """What an answer of ``card`` is charged at, plain or streamed, whole or broken: the
    ``usage`` the upstream reported (one it believes: see
    :meth:`~switchpoint.gateway.providers.base.TokenUsage.from_openai` and
    :func:`~switchpoint.gateway.providers.base.believed`); else an estimate of
    what it used, as the upstream bills what it generated: the prompt's tokens (those the
    upstream ``reported``, else ``prompt_tokens``, as the gateway estimates a prompt's) and
    the answer's (the tokens of the ``relayed_bytes`` of text and tool-call arguments and of
    what the upstream generated unrelayed, by :func:`~switchpoint.catalog.text_tokens`, never
    fewer than it reported), at its model's prices, never past ``worst_usd`` (its worst case;
    None: none held); a model without prices has no cost to estimate, so it is charged its
    worst case. The one rule for what an answer costs."""
    if usage is not None:
        return AnswerUse(_cost(card, usage), usage, relayed_bytes=relayed_bytes,
                         stream=stream)
    reported = reported or ReportedSoFar()
    # (counts past what the model's context window holds are not believed: see believed)
    window = card.context_window
    if window is not None and reported.prompt_tokens is not None \
            and reported.prompt_tokens > window:
        reported = replace(reported, prompt_tokens=None)
    answer = max(text_tokens(relayed_bytes + reported.unrelayed_bytes),
                 reported.completion_tokens if window is None
                 or reported.completion_tokens <= window else 0)
    usage = TokenUsage(prompt_tokens if reported.prompt_tokens is None
                       else reported.prompt_tokens, answer)
    cost = _cost(card, usage)
    if cost is not None and worst_usd is not None:
        cost = min(cost, worst_usd)
    return AnswerUse(cost, usage, estimated=True, relayed_bytes=relayed_bytes,
                     unrelayed_bytes=reported.unrelayed_bytes,
                     prompt_reported=reported.prompt_tokens is not None, stream=stream)


def wants_usage(request: Mapping[str, Any]) -> bool:
    """Did the client ask for usage in its stream (``stream_options.include_usage``)?"""
    options = request.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


class FailoverStream:
    """A stream committed to one model: its first content chunk has arrived, none has been
    sent. Iterate it once; close it (``aclose``) if you stop early.

    ``usage`` is filled from the upstream's final chunk (always requested upstream); that chunk
    reaches the client only if the client asked for it with ``stream_options.include_usage``.
    """

    def __init__(self, card: ModelCard, chunks: AsyncIterator[list[dict[str, Any]]],
                 buffered: list[dict[str, Any]], ended: bool, attempts: list[Attempt],
                 *, health: HealthTracker | None, client_wants_usage: bool,
                 rewrite_model: bool, ttft_ms: float, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic, slot: int | None = None,
                 shared_deadline: bool = False, answers: int = 1) -> None:
        self.card = card
        self.answers = answers  # how many the request asked for (its n)
        self.model = card.name
        self.attempts = attempts
        self.ttft_ms = ttft_ms
        self.usage: TokenUsage | None = None
        # Bytes of answer (text, tool-call arguments; catalog.text_bytes) read from the
        # upstream and relayed.
        self.relayed_bytes = 0
        # What the upstream reported of its use before its final usage (an Anthropic stream's
        # prompt tokens and thinking), if it did.
        self.reported: ReportedSoFar | None = None
        self.upstream_model: str | None = None
        self.finish_reason: str | None = None
        # Whether the upstream answered the stream request with one whole answer, sent on as
        # a stream (see stream_of_answer).
        self.whole = False
        self._finished = FinishedChoices()
        self.error: StreamBroken | None = None
        self.completed = False
        # Why the gateway closed it (its request's deadline ran out, unread; the service
        # stopped): then it is logged as broken, as ``closed_kind``, not as closed by the
        # client.
        self.closed_because: str | None = None
        self.closed_kind: str = StreamBroken.kind
        self._chunks = chunks
        self._buffered = buffered
        self._ended = ended
        self._health = health
        self._slot = slot
        self._client_wants_usage = client_wants_usage
        self._rewrite_model = rewrite_model
        self._iterator: AsyncIterator[list[dict[str, Any]]] | None = None
        self._one_by_one: AsyncIterator[dict[str, Any]] | None = None
        self._verdict = False
        self._deadline = deadline
        self._clock = clock
        # Whether the deadline cutting it off is not charged to its health (see _had_less).
        self._shared_deadline = shared_deadline
        # One timer for the whole stream (not one per read): when it fires during a read, it
        # cancels the task reading (``_reader``), whose read then ends with the deadline's error.
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._timer_fired = False

    @property
    def models_tried(self) -> list[str]:
        return _tried(self.attempts)

    @property
    def cost_usd(self) -> float | None:
        """The price so far from the usage in the final chunk (None until it has arrived, and
        for a model without prices)."""
        return _cost(self.card, self.usage)

    def use(self, prompt_tokens: int, worst_usd: float | None) -> AnswerUse:
        """What the stream is charged at once it has ended (:func:`answer_use`): the usage
        the upstream reported (its last chunk's that had one), whole or not; else (a stream
        broken after its first content, cut by the deadline or a stop, left by its client,
        or one that ended whole without reporting any) an estimate from what it relayed and
        what the upstream reported as it went (an Anthropic stream's prompt count at its
        start, and its thinking)."""
        return answer_use(self.card, self.usage, prompt_tokens, self.relayed_bytes,
                          worst_usd, self.reported, stream=True)

    def seconds_left(self) -> float | None:
        """How long until the request's deadline runs out (``None``: it has none); past it,
        a read gets nothing more, only the deadline's error."""
        return None if self._deadline is None else self._deadline - self._clock()

    def _prepare(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        self.whole = self.whole or isinstance(chunk, WholeAnswerChunk)
        usage = believed(usage_of(chunk), self.card, self.answers)
        if usage is not None:
            self.usage = usage
        self.relayed_bytes += answer_bytes(chunk)
        if isinstance(chunk, CountedChunk):
            self.reported = chunk.reported
        self._finished.note(chunk)
        for choice in chunk.get("choices") or []:
            if isinstance(choice, Mapping) and choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if self.upstream_model is None and isinstance(chunk.get("model"), str):
            self.upstream_model = chunk["model"]
        if self._rewrite_model:
            chunk["model"] = self.model
        if not shown_usage(chunk, usage) and not chunk.get("choices"):
            return None  # (its usage, not believed, was all it carried)
        if "usage" in chunk and not self._client_wants_usage:
            if not chunk.get("choices"):
                return None
            del chunk["usage"]
        return chunk

    async def _iterate(self, singly: bool) -> AsyncIterator[list[dict[str, Any]]]:
        try:
            chunks, self._buffered = self._buffered, []
            upstream = None if self._ended else aiter(self._chunks)
            read = False  # (whether ``chunks`` came from a read, each timed by the deadline)
            while True:
                ready: list[dict[str, Any]] = []
                error: Exception | None = None
                try:
                    for at, chunk in enumerate(chunks):
                        if at and read and self._deadline is not None \
                                and self._clock() >= self._deadline:
                            raise self._deadline_ran_out()
                        prepared = self._prepare(chunk)
                        if prepared is None:
                            continue
                        if singly:
                            yield [prepared]
                            continue
                        ready.append(prepared)
                        if isinstance(prepared.get("usage"), dict):
                            # (its price is read from the stream's usage before the next)
                            yield ready
                            ready = []
                except Exception as exc:  # (raised once the chunks before it are yielded)
                    error = exc
                if ready:
                    yield ready
                if error is not None:
                    raise error
                if upstream is None:
                    break
                try:
                    chunks = await self._next(upstream)
                except StopAsyncIteration:
                    break
                read = True
        except ProviderError as exc:
            self._verdict = True
            broken = StreamBroken(f"the stream from {self.model} failed after the answer had "
                                  f"started: {exc.message}", model=self.model,
                                  status=exc.status, body=exc.body, after_first_byte=True)
            self.error = broken
            self.attempts.append(Attempt(self.model, self.attempts[-1].attempt,
                                         StreamBroken.kind, status=exc.status, error=str(exc)))
            if not exc.counts_against_health:  # (the deadline, spent by models before it)
                _no_verdict(self._health, self.model, self._slot)
            elif self._health is not None:
                self._health.record_failure(self.model, StreamBroken.kind, detail=str(exc))
            raise broken from exc
        except Exception as exc:
            # Not the upstream's doing (a chunk our code could not handle, a bug): the client
            # is told the stream failed, the log says so, the model's health is not charged.
            self._verdict = True
            log.exception("stream from %s failed inside the gateway", self.model)
            broken = StreamBroken(f"the stream from {self.model} failed inside the gateway "
                                  f"after the answer had started ({type(exc).__name__}: {exc})",
                                  model=self.model, after_first_byte=True, internal=True)
            self.error = broken
            self.attempts.append(Attempt(self.model, self.attempts[-1].attempt,
                                         StreamBroken.kind, error=str(broken)))
            _no_verdict(self._health, self.model, self._slot)
            raise broken from exc
        else:
            self._verdict = True
            if self._finished.all:
                self.completed = True
                if self._health is not None:
                    self._health.record_success(self.model, self.ttft_ms)
            else:
                self._ended_unfinished()
        finally:
            if not self._verdict:
                # The client went away mid-answer: the model was delivering, count it as fine.
                self._verdict = True
                if self._health is not None:
                    self._health.record_success(self.model, self.ttft_ms)
            self._unwatch()
            await _aclose(self._chunks)

    def _ended_unfinished(self) -> None:
        """The upstream ended the stream with its end marker (``[DONE]``, ``message_stop``)
        while a choice had no finish reason: it cut the answer short and closed politely. The
        client has the stream as it was sent; the request is logged as a broken stream, not a
        whole answer, and the model's health counts a failure, not a success."""
        unfinished = sorted(self._finished.open - self._finished.done)
        which = ("the answer" if unfinished in ([], [0])
                 else f"choice {', '.join(map(str, unfinished))}")
        broken = StreamBroken(f"the stream from {self.model} ended with its end marker "
                              f"([DONE] or message_stop) but no finish reason for {which}: "
                              "the upstream cut the answer short (the client got it as sent)",
                              model=self.model, after_first_byte=True)
        self.error = broken
        self.attempts.append(Attempt(self.model, self.attempts[-1].attempt, StreamBroken.kind,
                                     error=str(broken)))
        if self._health is not None:
            self._health.record_failure(self.model, StreamBroken.kind, detail=str(broken))

    async def _next(self, upstream: AsyncIterator[list[dict[str, Any]]]
                    ) -> list[dict[str, Any]]:
        """The upstream's next chunks, within what is left of the request's deadline."""
        if self._deadline is None:
            return await anext(upstream)
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise self._deadline_ran_out()
        task = asyncio.current_task()
        if task is None:  # (not in a task: nothing a timer could cancel)
            try:
                async with asyncio.timeout(remaining):
                    return await anext(upstream)
            except TimeoutError:
                raise self._deadline_ran_out() from None
        self._watch(remaining)
        cancelling = task.cancelling()
        self._reader = task
        try:
            return await anext(upstream)
        except asyncio.CancelledError:
            if self._timer_fired and self._reader is task and task.uncancel() <= cancelling:
                raise self._deadline_ran_out() from None
            raise
        finally:
            self._reader = None

    def _watch(self, remaining: float) -> None:
        """Set the stream's deadline timer ``remaining`` seconds from now, unless one is set
        already for then (or earlier)."""
        loop = asyncio.get_running_loop()
        at = loop.time() + remaining
        timer = self._timer
        if timer is not None:
            if at >= timer.when() - _DEADLINE_SLACK_S:
                return
            timer.cancel()
        self._timer = loop.call_at(at, self._deadline_fired)

    def _deadline_fired(self) -> None:
        self._timer = None
        if self._reader is not None and not self._timer_fired:
            self._timer_fired = True
            self._reader.cancel()

    def _deadline_ran_out(self) -> ProviderError:
        kind = DeadlineSpent if self._shared_deadline else ReadTimeout
        return kind("the request's deadline (gateway.max_total_s) ran out while the "
                    "answer was streaming", model=self.model)

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def batches(self, *, singly: bool = False) -> AsyncIterator[list[dict[str, Any]]]:
        """Iterate it (once) a list at a time: the chunks one read of the upstream brought
        (a list ends after a chunk carrying usage, so :attr:`cost_usd` is its price while it is
        the last one handed on). With ``singly``, lists of one chunk, each taken from the
        upstream, timed and prepared only when asked for, as ``async for`` reads them."""
        if self._iterator is None:
            self._iterator = self._iterate(singly)
        return self._iterator

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        if self._one_by_one is None:
            self._one_by_one = self._each()
        return self._one_by_one

    async def _each(self) -> AsyncIterator[dict[str, Any]]:
        async for chunks in self.batches(singly=True):
            for chunk in chunks:
                yield chunk

    def forsake(self) -> None:
        """Give it up where its event loop has closed, so :meth:`aclose` cannot run (nothing on
        that loop can): its deadline's timer stopped and the model judged neither way, as for
        a stream its client leaves."""
        self._unwatch()
        if not self._verdict:
            self._verdict = True
            _no_verdict(self._health, self.model, self._slot)

    async def aclose(self) -> None:
        """Stop early (or without reading) and release the upstream connection. Idempotent."""
        self._unwatch()
        if self._one_by_one is not None:
            await _aclose(self._one_by_one)
        if self._iterator is not None:
            await _aclose(self._iterator)
        await _aclose(self._chunks)
        if not self._verdict:
            self._verdict = True
            _no_verdict(self._health, self.model, self._slot)  # never read


def _no_verdict(health: HealthTracker | None, model: str, slot: int | None) -> None:
    """A call to ``model`` ended in a way that says nothing about the model (the client left,
    an error inside the gateway, a refusal that is the request's fault): judge it neither
    healthy nor failed, and give back the half-open probe slot the call held, so that the next
    request probes the model (not one after ``probe_timeout_s``). ``slot`` is the one the call
    was let through with (:meth:`HealthTracker.admit`): a call let through before the circuit
    opened frees no other request's probe slot."""
    if health is not None:
        health.release(model, 0 if slot is None else slot)


async def _aclose(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def fallback_chain(catalog: Catalog, name: str) -> list[ModelCard]:
    """``name`` and then its ``fallbacks``, depth first, each model once."""
    order: list[ModelCard] = []
    seen: set[str] = set()

    def visit(model: str) -> None:
        if model in seen or model not in catalog:
            return
        seen.add(model)
        card = catalog[model]
        order.append(card)
        for fallback in card.fallbacks:
            visit(fallback)

    visit(name)
    return order


async def _open_stream(provider: Provider, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> tuple[AsyncIterator[list[dict[str, Any]]],
                                                    list[dict[str, Any]], bool]:
    """Start a stream and read up to its first content chunk (or its end): the upstream's
    chunks a list at a time (see :meth:`~switchpoint.gateway.providers.base.Provider.stream`),
    those read so far, and whether it ended."""
    batches = getattr(provider, "stream_batches", None)
    chunks = (_singly(provider.stream(request, card, timeouts)) if batches is None
              else batches(request, card, timeouts))
    buffered: list[dict[str, Any]] = []
    ended = True
    try:
        async for batch in chunks:
            buffered.extend(batch)
            if any(is_content_chunk(chunk) for chunk in batch):
                ended = False
                break
    except BaseException:
        await _aclose(chunks)
        raise
    return chunks, buffered, ended


async def _singly(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    """An adapter's stream read one chunk at a time, as lists of one."""
    try:
        async for chunk in chunks:
            yield [chunk]
    finally:
        await _aclose(chunks)


@overload
async def call_with_failover(
    request: Mapping[str, Any], candidates: Sequence[ModelCard], providers: ProviderFor, *,
    stream: Literal[False] = False, policy: RetryPolicy | None = None,
    timeouts: TimeoutsFor | None = None, health: HealthTracker | None = None,
    rewrite_model: bool = True, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
    attempts: list[Attempt] | None = None, before_try: BeforeTry | None = None,
    on_failed_try: OnFailedTry | None = None, under_way: UnderWay | None = None,
) -> FailoverResult: ...


@overload
async def call_with_failover(
    request: Mapping[str, Any], candidates: Sequence[ModelCard], providers: ProviderFor, *,
    stream: Literal[True], policy: RetryPolicy | None = None,
    timeouts: TimeoutsFor | None = None, health: HealthTracker | None = None,
    rewrite_model: bool = True, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
    attempts: list[Attempt] | None = None, before_try: BeforeTry | None = None,
    on_failed_try: OnFailedTry | None = None, under_way: UnderWay | None = None,
) -> FailoverStream: ...


async def call_with_failover(
    request: Mapping[str, Any], candidates: Sequence[ModelCard], providers: ProviderFor, *,
    stream: bool = False, policy: RetryPolicy | None = None,
    timeouts: TimeoutsFor | None = None, health: HealthTracker | None = None,
    rewrite_model: bool = True, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
    attempts: list[Attempt] | None = None, before_try: BeforeTry | None = None,
    on_failed_try: OnFailedTry | None = None, under_way: UnderWay | None = None,
) -> FailoverResult | FailoverStream:
    """Answer ``request`` with the first of ``candidates`` that can, retrying and escalating.

    ``providers`` gives the adapter for a card (a :class:`ProviderRegistry`
    fits). ``timeouts`` is one :class:`Timeouts` or a function of the card. With
    ``rewrite_model`` the answer's ``model`` field is the catalog name of the model that
    answered. ``health`` (optional) is consulted before each model and told every outcome.
    ``sleep``, ``rng`` and ``clock`` are injectable for tests. ``attempts``, when given, is the
    list every try is appended to (so a caller that cancels the call still knows them).
    ``before_try`` (optional; see :data:`BeforeTry`) is asked before each try is sent: a try it
    refuses is not sent, the model is passed over (``budget_exceeded`` or
    ``rate_limit_exceeded``, with why) and failover goes on to the next candidate.
    ``on_failed_try`` (optional) is told of each try that failed, once what follows it is
    known (:class:`Sequel`: a retry, the next model called, or the request's failure); a try
    that answered is not told of. ``under_way`` (optional) holds the try under way, as the
    caller leaving now would record it (see :class:`UnderWay`).

    Returns a :class:`FailoverResult` (or, with ``stream=True``, a committed
    :class:`FailoverStream`); raises :class:`FailoverError` when no candidate answers.
    """
    if not candidates:
        raise FailoverError("no candidate models to call", [], None)
    policy = policy or RetryPolicy()
    deadline = clock() + policy.max_total_s
    attempts = [] if attempts is None else attempts
    last_error: ProviderError | None = None
    # After a context-length refusal: the refusing model's window; smaller ones are skipped.
    context_floor: int | None = None
    # The failed try whose sequel is not known yet: its retry starting, the next model called,
    # or the request's failure (see on_failed_try); and what stopped the retry it waited for.
    unsettled: list[Attempt] = []
    not_retried: list[str] = []

    def settle(sequel: Sequel) -> None:
        if unsettled and on_failed_try is not None:
            if not_retried:
                sequel = replace(sequel, not_retried=not_retried[-1])
            on_failed_try(unsettled.pop(), sequel)
        unsettled.clear()
        not_retried.clear()

    def timeouts_for(card: ModelCard) -> Timeouts:
        if timeouts is None:
            return Timeouts()
        return timeouts(card) if callable(timeouts) else timeouts

    for card in candidates:
        # (Before asking the breaker: a model passed over takes no half-open probe slot.)
        if (context_floor is not None and card.context_window is not None
                and card.context_window <= context_floor):
            attempts.append(Attempt(card.name, 0, "context_too_small",
                                    error=f"context window {card.context_window} is no larger "
                                          f"than the {context_floor} that was exceeded"))
            continue
        slot = None if health is None else health.admit(card.name)
        if health is not None and slot is None:
            cause = health.last_failure(card.name)
            attempts.append(Attempt(card.name, 0, "circuit_open",
                                    error=("resting after its upstream's rate limit"
                                           if cause == RateLimited.kind else
                                           "circuit breaker open or Retry-After running"),
                                    retry_after_s=health.wait_s(card.name), cause=cause))
            continue
        try:
            provider = providers(card)
        except BaseException:
            _no_verdict(health, card.name, slot)
            raise
        waited = 0.0
        shared = _had_less(attempts, card.name, deadline - clock(), policy)
        for number in range(1, policy.max_attempts_per_model + 1):
            started = time.perf_counter()
            remaining = deadline - clock()
            if before_try is not None and remaining > 0:
                refused = before_try(card, attempts)
                if refused is not None:
                    _no_verdict(health, card.name, slot)
                    attempts.append(Attempt(card.name, number, refused.outcome,
                                            error=refused.why, begun=False))
                    if number > 1:  # (the retry its failed try waited for)
                        not_retried.append(refused.outcome)
                    break
            # The try before failed: this is its retry, after the wait, or the next model.
            settle(Sequel(retry_in_s=waited) if number > 1 else Sequel(next_model=card.name))
            watch = SendWatch()  # (replaced as the try begins; bound for the handlers below)
            try:
                if remaining <= 0:
                    raise _deadline_error(policy, card, shared, sent=False)
                with watching_send() as watch:
                    if under_way is not None:
                        under_way.left = functools.partial(_left, request, card, number,
                                                           started, waited, watch)
                    try:
                        async with _within(remaining, policy, card, shared, watch):
                            if stream:
                                chunks, buffered, ended = await _open_stream(
                                    provider, request, card, timeouts_for(card))
                            else:
                                response = await provider.complete(request, card,
                                                                   timeouts_for(card))
                    finally:  # (the try has ended: its attempt is recorded as it ended)
                        if under_way is not None:
                            under_way.left = None
            except asyncio.CancelledError:
                _no_verdict(health, card.name, slot)  # the client left
                attempts.append(_left(request, card, number, started, waited, watch))
                raise
            except ProviderError as exc:
                latency = (time.perf_counter() - started) * 1000.0
                exc.model = exc.model or card.name
                last_error = exc
                retry_after = None
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    # (the wait the model is out, which the client hears)
                    retry_after = exc.retry_after = (exc.retry_after if health is None
                                                     else health.rest_s(exc.retry_after))
                failed = Attempt(card.name, number, exc.kind, latency, waited, exc.status,
                                 str(exc), retry_after_s=retry_after,
                                 billed=exc.may_have_generated,
                                 usage=believed(_reported(exc), card, answers_asked(request)),
                                 reasoned=exc.reasoned if exc.may_have_generated else None)
                attempts.append(failed)
                unsettled.append(failed)
                if health is not None:
                    if exc.counts_against_health:
                        health.record_failure(card.name, exc.kind, detail=str(exc),
                                              retry_after_s=retry_after)
                    else:
                        _no_verdict(health, card.name, slot)
                if not exc.retryable and not exc.escalate:
                    settle(Sequel())
                    raise _no_answer(attempts, exc, health) from exc
                if isinstance(exc, ContextLengthExceeded) and card.context_window is not None:
                    context_floor = max(context_floor or 0, card.context_window)
                if not exc.retryable or number == policy.max_attempts_per_model:
                    break
                if retry_after is not None and retry_after > policy.max_retry_after_s:
                    break
                wait = (retry_after if retry_after is not None
                        else policy.backoff(number, rng or random.Random()))
                if clock() + wait > deadline:
                    break
                if health is not None and health.state(card.name) is not BreakerState.CLOSED:
                    break
                slept_from = time.perf_counter()
                try:
                    await sleep(wait)
                except asyncio.CancelledError:  # (before its next try: how long it waited)
                    settle(Sequel(not_retried=CLIENT_CLOSED))
                    slept = min(wait, time.perf_counter() - slept_from)
                    attempts.append(Attempt(card.name, number + 1, CLIENT_CLOSED, 0.0, slept,
                                            begun=False))
                    raise
                waited = wait
                continue
            except BaseException:
                # Not the upstream's doing (a bug in an adapter, an internal error): no verdict
                # on the model, and a half-open probe slot it held is free for the next request.
                _no_verdict(health, card.name, slot)
                raise
            latency = (time.perf_counter() - started) * 1000.0
            attempts.append(Attempt(card.name, number, "ok", latency, waited))
            if stream:
                return FailoverStream(card, chunks, buffered, ended, attempts, health=health,
                                      client_wants_usage=wants_usage(request),
                                      rewrite_model=rewrite_model, ttft_ms=latency,
                                      deadline=deadline, clock=clock, slot=slot,
                                      shared_deadline=shared, answers=answers_asked(request))
            if health is not None:
                health.record_success(card.name, latency)
            upstream_model = response.upstream_model
            if rewrite_model:
                response.body["model"] = card.name
            shown_usage(response.body, believed(response.usage, card, answers_asked(request)))
            return FailoverResult(card.name, card, response, attempts, upstream_model,
                                  answers_asked(request))
        if last_error is not None and not last_error.escalate:
            settle(Sequel())
            raise _no_answer(attempts, last_error, health) from last_error
        if clock() >= deadline:
            break
    settle(Sequel())
    raise _no_answer(attempts, last_error, health, candidates)


def _no_answer(attempts: list[Attempt], last_error: ProviderError | None,
               health: HealthTracker | None,
               candidates: Sequence[ModelCard] = ()) -> FailoverError:
    """The error of a failover no model answered, with what is left of the rest of each model
    tried or passed over: a model whose own failures opened its circuit (429s that named no
    wait) is out that long, which none of its tries says."""
    rests: dict[str, float] = {}
    if health is not None:
        for model in dict.fromkeys(a.model for a in attempts):
            wait = health.wait_s(model)
            if wait is not None:
                rests[model] = wait
    return FailoverError(_gave_up(attempts, candidates), attempts, last_error, rests)


def _gave_up(attempts: Sequence[Attempt], candidates: Sequence[ModelCard] = ()) -> str:
    """The client's message when no model answered: every model tried or passed over, why."""
    called = [a for a in attempts if not a.skipped]
    listed = {a.model for a in attempts}
    untried = [c.name for c in candidates if c.name not in listed]
    if not called:
        head = "no model could be called"
    else:
        head = (f"no model answered ({len(called)} attempt(s) on "
                f"{len(_tried(attempts))} model(s))")
    tail = (f"; not tried before the deadline: {listed_names(untried, quoted=True)}"
            if untried else "")
    return f"{head}: {describe_attempts(attempts)}{tail}"


def none_answered(names: Sequence[str], errors: Sequence[Exception]) -> Exception:
    """The error of a fan-out (a comparison) none of whose models ``names`` answered
    (``errors``, aligned): one :class:`FailoverError` naming every model and why, classified
    over all of their attempts (so it does not depend on their order). When they are not all
    upstream failures (a refusal before any call, the same for every model) the first."""
    failed = [e for e in errors if isinstance(e, FailoverError)]
    if len(failed) != len(errors):
        return errors[0]
    parts = "; ".join(f"{name}: {e.message}" for name, e in zip(names, failed, strict=True))
    # The upstream's own refusal of the request decides the answer only if every model's did.
    faults = [e.last_error for e in failed if e.request_fault]
    others = [e.last_error for e in failed if not e.request_fault and e.last_error is not None]
    last = (faults[-1] if faults and not others else others[-1] if others else None)
    merged = FailoverError(f"none of the compared models answered: {parts}",
                           [a for e in failed for a in e.attempts], last,
                           {m: w for e in failed for m, w in e.rests.items()})
    merged.info = failed[0].info
    return merged


def _deadline_error(policy: RetryPolicy, card: ModelCard, shared: bool,
                    sent: bool = True) -> ReadTimeout:
    """The request's deadline ran out on ``card``'s call: charged to its health unless
    ``shared`` (see :func:`_had_less`); ``sent`` False when it ran out before the call
    began (nothing was sent, nothing can be billed)."""
    kind = DeadlineSpent if shared else ReadTimeout
    return kind(f"the request's deadline of {policy.max_total_s:g}s (gateway.max_total_s) ran "
                "out" + (" after other models had used more than half of it" if shared else ""),
                model=card.name, generated=sent)


def _left(request: Mapping[str, Any], card: ModelCard, number: int, started: float,
          waited: float, watch: SendWatch) -> Attempt:
    """The try of ``card`` (its ``number``th, begun at ``started`` after ``waited`` seconds)
    as the caller leaving now records it: billed only if its request may have reached the
    upstream (``watch``), at what its stream was seen to generate before any content, when
    it was a stream."""
    seen = watch.stream
    return Attempt(card.name, number, CLIENT_CLOSED, (time.perf_counter() - started) * 1000.0,
                   waited, billed=watch.maybe_sent,
                   usage=None if seen is None else believed(seen.usage, card,
                                                            answers_asked(request)),
                   reasoned=None if seen is None else seen.reasoned)


def _had_less(attempts: Sequence[Attempt], model: str, left_s: float,
              policy: RetryPolicy) -> bool:
    """Whether ``model``, with ``left_s`` of the request's deadline left when it is first
    called, is spared the deadline's verdict should it cut it off: other models were called
    (not passed over) before it and used more than half of the deadline. A model that had at
    least half of it is charged as one called first is, so that one which hangs every time
    it comes after a model failing at once still opens its circuit."""
    return (left_s < policy.max_total_s / 2
            and any(a.model != model and a.begun and not a.skipped for a in attempts))


@asynccontextmanager
async def _within(seconds: float, policy: RetryPolicy, card: ModelCard,
                  shared: bool, watch: SendWatch) -> AsyncIterator[None]:
    """Bound one upstream call by what is left of the request's deadline (billed when it
    cuts the call off only if the call's request may have been sent: see ``watch``; a stream
    cut off before any content, at what it was seen to generate)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        error = _deadline_error(policy, card, shared, sent=watch.maybe_sent)
        if watch.stream is not None:
            watch.stream.carry(error)
        raise error from None
