"""Every error switchpoint raises on purpose, in one tree. Each message says what is wrong and how
to fix it::

    SwitchpointError
    ├── InvalidInputError (ValueError)    a bad argument or request field; ``field`` names it
    │   ├── UnknownModelError             a model name the weights or the catalog do not know
    │   └── NoCandidatesError             the filters left no model to choose from
    ├── ConfigError (ValueError)          a configuration value; ``key`` is its path
    ├── WeightsError                      a weights package is missing, corrupt or mismatched
    ├── RecordsError (ValueError)         a line of a routing-records file cannot be used
    ├── LabellingError (ValueError)       labelling cannot start or go on (a prompt line, a
    │                                     model without prices or usage, another run's output)
    ├── JudgeReplyError (ValueError)      a judge's reply is not a score in [0, 1]
    ├── NotFittedError                    a policy was asked to estimate before ``fit``
    ├── DecisionNotFoundError (LookupError)  an outcome for a decision not (or no longer)
    │                                     remembered, or remembered for another tenant
    ├── ServeError                        the server could not start, or its router not load
    ├── StoreError                        a log or state file cannot be opened or written
    │   ├── DataDirInUseError             another process serves from the same data_dir
    │   └── GatewayClosedError            a call made once the gateway began closing, refused
    │                                     before it did anything (over HTTP: shutting down)
    ├── ProcessBoundError (RuntimeError)  a Gateway or store used in a child of os.fork()
    │                                     of the process that opened it
    ├── ChatNotServedError (RuntimeError)  a model call through a Gateway built with
    │                                     serves_chat=False
    ├── ReentrantCallError (RuntimeError)  a Gateway's synchronous method called on the
    │                                     gateway's own event loop (from an observer's
    │                                     callback), where it would wait for itself
    ├── GatewayError                      the service refused a request or could not answer it
    │   ├── AuthenticationError           a missing or wrong token (401)
    │   │   ├── InvalidKeyError               a malformed or unknown client key
    │   │   ├── KeyRevokedError               a revoked client key
    │   │   └── KeyExpiredError               an expired client key
    │   ├── PermissionDeniedError         the key may not do this (a model it may not use) (403)
    │   ├── BudgetExceededError           a budget cannot cover the request (429)
    │   ├── RateLimitExceededError        a key's or tenant's RPM / TPM is used up (429)
    │   ├── TooManyInFlightError          a tenant has as many model calls in flight as it
    │   │                                 may (429)
    │   ├── ModelNotFoundError            neither ``auto`` nor a catalog model
    │   ├── NotFoundError                 a compare or an experiment this service does not
    │   │                                 hold (for the caller's tenant) (404)
    │   ├── ConflictError                 the request cannot be done in the current state,
    │   │                                 e.g. promoting an experiment with no winner (409)
    │   ├── NoCapableModelError           no catalog model can serve the request
    │   ├── NoUpstreamError               no models configured: nowhere to send chat
    │   ├── RouterNotReadyError           the weights are still loading
    │   └── FailoverError                 no candidate answered; every try is listed
    └── ProviderError                     one upstream call failed (failover decides what next)
        ├── RateLimited                   429 (``retry_after`` from ``Retry-After``)
        ├── ServerError                   5xx, 529 overloaded, 408/409
        ├── ConnectError                  refused, reset, DNS, connect timeout
        ├── ReadTimeout                   silence longer than the read timeout
        ├── FirstTokenTimeout             a stream without content in time
        ├── MalformedResponse             a 2xx that is not a chat completion
        │   ├── UnaskedCoding             in a Content-Encoding the gateway did not ask for
        │   └── UnreadableHead            a head no HTTP/1.1 client reads
        ├── ResponseTooLarge              an answer or an SSE line over its size limit
        ├── StreamBroken                  a stream cut, malformed or ended early
        ├── ContextLengthExceeded         the prompt does not fit this model
        ├── AuthError                     401/403
        │   └── MissingApiKey             the key's environment variable is unset
        ├── ContentFiltered               the upstream's content filter refused
        └── BadRequest                    any other 4xx
            └── UnsupportedRequest        the adapter cannot express the request

The input errors also derive from ``ValueError``, so plain ``except ValueError`` code keeps
working. A :class:`GatewayError` carries ``status`` and ``code``, the answer a client of the
HTTP gateway gets for it (the server renders them; nothing here knows HTTP).

What a :class:`ProviderError` means for failover:

==========================  =========  ========  ============================================
error                       retry      escalate  when
==========================  =========  ========  ============================================
:class:`RateLimited`        yes        yes       429 (``retry_after`` from ``Retry-After``)
:class:`ServerError`        yes        yes       5xx, 529 overloaded, 408/409, a 3xx
:class:`ConnectError`       yes        yes       refused, reset, DNS, connect timeout
:class:`ReadTimeout`        yes        yes       no bytes for ``read_s``
:class:`FirstTokenTimeout`  yes        yes       no content within ``first_token_s``
:class:`MalformedResponse`  yes        yes       a 2xx whose body is not a chat completion
:class:`UnaskedCoding`      no         yes       an answer in a coding the gateway did not ask for
:class:`UnreadableHead`     no         yes       a head no HTTP/1.1 client reads
:class:`ResponseTooLarge`   no         yes       an answer or SSE line over its size limit
:class:`StreamBroken`       yes*       yes*      cut, malformed chunk, ended unfinished
:class:`ContextLengthExceeded`  no     yes       the prompt does not fit this model
:class:`AuthError`          no         yes       401/403, or the key's env var is unset
:class:`ContentFiltered`    no         no        the upstream's content filter refused
:class:`BadRequest`         no         404 only  any other 4xx: the request itself is wrong
:class:`UnsupportedRequest` no         yes       the adapter cannot translate the request
==========================  =========  ========  ============================================

StreamBroken retries and escalates only while nothing has reached the client
(``after_first_byte`` false). ``retryable`` means "the same model may succeed if asked again";
``escalate`` means "another model may succeed"; ``counts_against_health`` is false for errors
that are the request's fault, and for :class:`MissingApiKey` (nothing was sent upstream).
"""

# The error names say what happened (RateLimited, StreamBroken, ...), like httpx's ReadTimeout.
# ruff: noqa: N818
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from switchpoint.gateway.failover import Attempt
    from switchpoint.gateway.providers.base import ReportedSoFar


class SwitchpointError(Exception):
    """Base class of every error switchpoint raises on purpose."""


# Core ------------------------------------------------------------------------------------------


class InvalidInputError(SwitchpointError, ValueError):
    """A caller passed something the router cannot use (a bad prompt, λ, embedding, ...).

    ``field`` names the offending argument or request field; a character of it a terminal
    would not show as itself (a control character, a lone surrogate: a mapping's key the
    caller sent is part of some fields) is written as ``\\uXXXX``, so the message prints.
    ``path`` is where in it, as the message begins (``models[2]`` for a list's third item;
    ``field`` itself when the error is about the whole of it).
    """

    def __init__(self, field: str, message: str) -> None:
        from switchpoint._messages import printable  # (it reads this module's errors)

        field = printable(field)
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
        self.path = field


class UnknownModelError(InvalidInputError):
    """A model name that the loaded weights (or catalog) do not know."""

    def __init__(self, field: str, names: list[str], known: list[str]) -> None:
        # The message stays short whatever the caller sent: the first names, each clipped.
        from switchpoint._messages import listed_names  # (it reads this module's errors)

        unknown = listed_names(names, width=_SHOWN_CHARS, quoted=True)
        super().__init__(
            field,
            f"unknown model(s) {unknown}; "
            f"known models are: {listed_names(sorted(known), quoted=True)}",
        )
        self.names = names


_SHOWN_CHARS = 100  # characters of each unknown name an error message shows


class NoCandidatesError(InvalidInputError):
    """The filters left no model to choose from."""


class ConfigError(SwitchpointError, ValueError):
    """A configuration value that cannot be used. ``key`` is its path, e.g. ``cache.size``,
    each character of it a terminal would not show as itself (a control character: a
    mapping's key the file wrote is part of some paths) written as ``\\uXXXX``, as an
    :class:`InvalidInputError`'s field is, so a config file cannot write terminal escapes
    into the message. A part of it (between dots) longer than 100 characters, a key of 100 kB
    the file wrote, is cut to its first characters and ``…``, the parts after it kept
    (``tenants.tttt….cost_weight``); a path longer than 400 characters even so ends with
    ``.…`` where it is cut.

    ``reason`` says what is wrong and how to fix it; ``problem`` what is wrong alone (the
    reason without its advice, when it has some), for a caller that knows the fix better."""

    def __init__(self, key: str, reason: str, *, problem: str | None = None) -> None:
        from switchpoint._messages import shown_key  # (it reads this module's errors)

        key = shown_key(key)
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.problem = reason if problem is None else problem


def _shown_path(path: object) -> str:
    from switchpoint._messages import quoted_path  # (it imports this module)

    return quoted_path(path)


class WeightsError(SwitchpointError):
    """A weights package that cannot be loaded (missing, incomplete, corrupt, larger than
    ``max_weights_bytes``, or not fitting the embedder), or a place a package may not be saved
    to (a file, a directory of other things, the weights bundled with switchpoint). ``path``
    is the package's directory, which the message names first."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{_shown_path(path)}: {message}")
        self.path = path


class RecordsError(SwitchpointError, ValueError):
    """Routing records that cannot be used: a file that cannot be read (missing, a
    directory, not UTF-8), a malformed line, no records at all, a split the records do not
    have, or a model the split a fit reads leaves unlabelled. ``source`` is the file (or
    ``"records"`` for a :class:`~switchpoint.RecordSet` given in Python) and ``line`` the
    number of the line at fault (None when no one line is), both named first in the
    message."""

    def __init__(self, source: object, line: int | None, message: str) -> None:
        where = _shown_path(source) + ("" if line is None else f", line {line}")
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


class LabellingError(SwitchpointError, ValueError):
    """Labelling cannot start or go on: a bad line of the prompts file (``source``, ``line``),
    a model the catalog cannot price, an upstream that reports no token usage, an output file
    left by a different run."""

    def __init__(self, message: str, *, source: object = None, line: int | None = None) -> None:
        where = "" if source is None else (f"{_shown_path(source)}: " if line is None
                                           else f"{_shown_path(source)}, line {line}: ")
        super().__init__(where + message)
        self.source = source
        self.line = line
        self.reason = message


class JudgeReplyError(SwitchpointError, ValueError):
    """A judge's reply is not a score: ``reason`` says why, ``reply`` is what it said."""

    def __init__(self, reason: str, reply: str) -> None:
        super().__init__(f"the judge's reply is not a score: {reason}")
        self.reason = reason
        self.reply = reply


class NotFittedError(SwitchpointError):
    """A policy was asked to estimate before ``fit`` was called."""


class DecisionNotFoundError(SwitchpointError, LookupError):
    """An outcome names a decision this router does not remember (never made here, made for
    another tenant, or too old: only the most recent decisions are kept), by its id or, with
    ``prompt_hash``, by the hash of its prompt. ``field`` names the argument or request field
    that named it."""

    def __init__(self, decision_id: str, capacity: int, *, prompt_hash: bool = False,
                 field: str = "decision_id") -> None:
        from switchpoint._messages import json_quoted  # (it reads this module's errors)

        # (an id a caller made up may be any length; a prompt hash is shown whole)
        shown = json_quoted(decision_id, 70) if prompt_hash else json_quoted(decision_id)
        if prompt_hash:
            message = (f"no remembered decision has prompt hash {shown} for this tenant; "
                       f"outcomes can be reported by prompt hash for the {capacity} "
                       "decisions a router remembers (shared by the tenants: each past its "
                       "share lets go of its oldest), naming the latest decision routed on "
                       "that prompt, with the prompt_hash a decision carried (same tenant)")
        else:
            message = (f"no decision {shown} is remembered for this tenant; outcomes can be "
                       f"reported for the {capacity} decisions a router remembers, shared by "
                       "the tenants (each past its share lets go of its oldest), with the "
                       "decision_id it returned (same tenant)")
        super().__init__(f"{field}: {message}")
        self.decision_id = decision_id
        self.field = field


class ServeError(SwitchpointError):
    """The server could not start or its router could not load."""


class StoreError(SwitchpointError):
    """The store cannot be opened, read or written (path, permissions, disk full, closed, a
    damaged file). ``reason`` is the database's own words, without the store's path (for a
    client); ``damaged`` says trying again does not help (the file itself is damaged, or was
    deleted or replaced under the running store)."""

    def __init__(self, message: str, *, reason: str | None = None,
                 damaged: bool = False) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason
        self.damaged = damaged


class DataDirInUseError(StoreError):
    """Another process (or another gateway of this one) serves from the same ``data_dir``:
    it holds the directory's lock (see :mod:`switchpoint.gateway.owner`). ``serving``: it is a
    service (else a command holding the lock for a moment); ``holder``: `` (pid N)`` of the
    process, when known (else ``""``)."""

    def __init__(self, message: str, *, serving: bool = False, holder: str = "") -> None:
        super().__init__(message)
        self.serving = serving
        self.holder = holder


class GatewayClosedError(StoreError):
    """The gateway is closing, or closed: a call made once closing had begun was refused
    before it did anything (nothing routed, called, logged or learned). Over HTTP the service
    is shutting down: the same request, sent again, reaches it once it is back (or the
    service that takes over)."""


class ProcessBoundError(SwitchpointError, RuntimeError):
    """A :class:`~switchpoint.gateway.Gateway` or its store was used in a child made by
    ``os.fork()`` of the process that opened it: its threads and SQLite connections stayed in
    the parent. Make it after the fork, in each worker."""


class ChatNotServedError(SwitchpointError, RuntimeError):
    """A :class:`~switchpoint.gateway.Gateway` built with ``serves_chat=False`` (what only
    learns or reports beside a running service) was asked to call a model: it holds no lock
    on ``data_dir``, so its budgets and rate limits would be enforced beside the service's,
    each on its own. Nothing was called, held or logged."""


class ReentrantCallError(SwitchpointError, RuntimeError):
    """A synchronous method of a :class:`~switchpoint.gateway.Gateway` (``route``,
    ``complete``, reading a stream, ...) was called on the thread of the gateway's own event
    loop, which runs its synchronous calls: from an observer's callback, say. It would wait
    for that loop, which waits for it, for ever. Nothing was done; call it from another
    thread, or schedule its async form (``aroute``, ``acomplete``) on the running loop."""


class StreamInUseError(SwitchpointError, RuntimeError):
    """A stream (``gateway.stream(...)``, ``await gateway.astream(...)``) was read while
    another read of it was under way: two threads iterating one, or two tasks; or an
    ``astream`` was read on an event loop other than the one that made it while that one
    still runs. A stream has one reader, on its own loop, each chunk read once: nothing was
    read, and the stream goes on. Read it from one thread or task, on the loop that made
    it."""


# The gateway -----------------------------------------------------------------------------------


class GatewayError(SwitchpointError):
    """The service refused a request or could not answer it. ``status`` and ``code`` are what
    a client of the HTTP service receives; ``param`` names the request field at fault, if any;
    ``retry_after`` (seconds) says when trying again may work; ``permanent`` that trying again
    cannot, until the configuration changes (clients are told not to retry)."""

    status: int = 500
    code: str = "gateway_error"
    permanent: bool = False

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        # How far the request got (a CallInfo), when it got as far as planning.
        self.info: Any = None

    @property
    def retry_after(self) -> float | None:
        """Seconds after which trying again may work. A 429 that waiting can mend always
        names one (:func:`wait_to_retry`); a permanent one names none, as no wait helps."""
        if self.status == 429 and not self.permanent:
            return wait_to_retry(self._retry_after)
        return self._retry_after

    @retry_after.setter
    def retry_after(self, seconds: float | None) -> None:
        self._retry_after = seconds


#: The wait a 429 names when none better is known (an upstream's 429 without a readable
#: ``Retry-After`` while no model it could go to is resting): a second.
DEFAULT_RETRY_AFTER_S = 1.0


def wait_to_retry(known: float | None) -> float:
    """The wait a 429 tells its client to take before trying again: the best one known (the
    earliest a model tried or passed over may be tried again, its upstream's ``Retry-After``
    as the health tracker took it or the rest its circuit is in: :func:`retry_after_of`;
    when a limit of the gateway's refused, the time its window or budget has room again),
    else :data:`DEFAULT_RETRY_AFTER_S`."""
    return DEFAULT_RETRY_AFTER_S if known is None else known


class AuthenticationError(GatewayError):
    """The request lacks the bearer token it needs, or carries a wrong one."""

    status = 401
    code = "unauthorized"


class InvalidKeyError(AuthenticationError):
    """A client key that is malformed or that this gateway never issued."""

    code = "invalid_api_key"


class KeyRevokedError(AuthenticationError):
    """A client key that was revoked (or replaced by a rotation whose grace period ended)."""

    code = "key_revoked"


class KeyExpiredError(AuthenticationError):
    """A client key past its expiry date."""

    code = "key_expired"


class PermissionDeniedError(GatewayError):
    """The caller is known but may not do this: a model its key or tenant may not use, or a
    tenant the configuration no longer has."""

    status = 403
    code = "permission_denied"


class BudgetExceededError(GatewayError):
    """A budget (of the key, its tenant, a model, a provider or the whole gateway) cannot cover
    the request's worst-case cost. ``retry_after`` is the time until the budget resets (or a
    second, when in-flight reservations hold the room and may free it); ``budget`` names it."""

    status = 429
    code = "budget_exceeded"

    def __init__(self, message: str, *, budget: str, retry_after: float | None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.budget = budget


class RateLimitExceededError(GatewayError):
    """A key's (or tenant's) requests-per-minute or tokens-per-minute limit is used up;
    ``retry_after`` says when the window has room again."""

    status = 429
    code = "rate_limit_exceeded"


class TooManyInFlightError(GatewayError):
    """The caller's tenant (all its keys together; a key of no tenant, alone) has as many model
    calls in flight as it may (its own ``tenants.<name>.max_in_flight``, else
    ``gateway.max_in_flight_per_tenant``); ``retry_after`` is a second, as one of them may end
    any moment. Nothing was routed or held; the refusal is logged as ``refused``."""

    status = 429
    code = "too_many_in_flight"


class ModelNotFoundError(GatewayError):
    """The request named a model that is neither ``auto`` nor in the catalog."""

    status = 404
    code = "model_not_found"


class NotFoundError(GatewayError):
    """A compare id, an experiment or another named thing this service does not hold (or holds
    for another tenant: the answer is the same, so nothing leaks)."""

    status = 404
    code = "not_found"


class ConflictError(GatewayError):
    """The request is well formed but cannot be done now (e.g. promoting the winner of an
    experiment that has none yet)."""

    status = 409
    code = "conflict"


class NoCapableModelError(GatewayError):
    """No catalog model can serve the request (vision, tools, context window...);
    ``excluded`` maps each model to why it was left out; ``param`` names the request field
    that left them out (messages unless told: None when the reasons are about several)."""

    status = 400
    code = "no_capable_model"

    def __init__(self, message: str, excluded: Mapping[str, Sequence[str]], *,
                 param: str | None = "messages") -> None:
        super().__init__(message, param=param)
        self.excluded = {k: list(v) for k, v in excluded.items()}


class NoUpstreamError(GatewayError):
    """The gateway has no models configured, so nowhere to send a chat request."""

    status = 503
    code = "no_upstream_configured"
    permanent = True


class RouterNotReadyError(GatewayError):
    """The router is still loading its weights (or failed to)."""

    status = 503
    code = "router_not_ready"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=1.0)


class StorageUnavailableError(GatewayError):
    """The store cannot take writes now (its disk is full, or another process holds its
    lock): what must be kept first (feedback, a comparison) is refused, and nothing is
    learned."""

    status = 503
    code = "storage_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=5.0 if retry_after is None else retry_after)


class ServiceStoppingError(GatewayError):
    """The service stopped before the answer was ready: the request was ended by the service
    (logged, its budget hold settled); sent again, it reaches the service that takes over."""

    status = 503
    code = "service_stopped"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=1.0)


class FailoverError(GatewayError):
    """No candidate answered. ``attempts`` lists every try and every model passed over, with
    why; ``last_error`` is the error that ended the search (``None`` when no model was called,
    e.g. every circuit was open). ``status`` and ``code`` follow from them: the upstream's own
    4xx when the request itself was refused (a 400 when the last model's adapter could not
    translate it), 429 when every try was rate limited, 504 when every
    try timed out, 503 when no model could be called, else 502. A request no model could be
    called for because every one passed over rests after its upstream's rate limit is a 429
    as well (``rate_limited``, with the wait): the condition the request before it, which
    called them, was told; a model out of use for other failures makes it a 503."""

    def __init__(self, message: str, attempts: list[Attempt],
                 last_error: ProviderError | None,
                 rests: Mapping[str, float] | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error
        # What was left, as failover gave up, of the rest of each model listed that rests.
        self.rests: dict[str, float] = dict(rests or {})
        self.status, self.code = self._classify()
        # Every model lacked its key: asking again cannot help until the keys are exported.
        self.permanent = bool(attempts) and all(a.outcome == MissingApiKey.kind
                                                for a in attempts)
        if self.status in (429, 503):
            self.retry_after = retry_after_of(attempts, self.rests)

    @property
    def models_tried(self) -> list[str]:
        """The models actually called, in order, each once."""
        return list(dict.fromkeys(a.model for a in self.attempts if not a.skipped))

    @property
    def request_fault(self) -> bool:
        """The request itself was refused (by the upstream, or by the last model's adapter,
        which cannot express it): the client sees that 4xx, not an upstream failure."""
        err = self.last_error
        return err is not None and (not err.escalate or isinstance(
            err, (ContextLengthExceeded, UnsupportedRequest)))

    def _classify(self) -> tuple[int, str]:
        err = self.last_error
        tried = [a for a in self.attempts if not a.skipped]
        if err is None or not tried:
            passed = [a for a in self.attempts if a.skipped]
            if passed and all(a.outcome == "circuit_open" and a.cause == RateLimited.kind
                              for a in passed):
                return 429, RateLimited.kind
            return 503, "no_healthy_model"
        if self.request_fault:
            return err.status or 400, err.kind
        if all(a.outcome == RateLimited.kind for a in tried):
            return 429, RateLimited.kind
        if all(a.outcome in (ReadTimeout.kind, FirstTokenTimeout.kind) for a in tried):
            return 504, "upstream_timeout"
        return 502, "upstream_failed"

    def to_openai_error(self) -> dict[str, Any]:
        """OpenAI's error envelope; a non-escalating upstream 4xx passes through as sent."""
        err = self.last_error
        if err is not None and self.request_fault and isinstance(err.body, Mapping):
            inner = err.body.get("error")
            if isinstance(inner, Mapping):
                return {"error": {"message": str(inner.get("message") or err),
                                  "type": str(inner.get("type") or err.kind),
                                  "param": inner.get("param"),
                                  "code": str(inner.get("code") or err.kind)}}
        kind = ("invalid_request_error" if self.request_fault and self.status < 500
                else "upstream_error" if err is not None else self.code)
        return {"error": {"message": self.message, "type": kind, "param": None,
                          "code": self.code}}


def retry_after_of(attempts: Sequence[Attempt],
                   rests: Mapping[str, float] | None = None) -> float | None:
    """The shortest wait, among the models tried or passed over, until one may be tried
    again; None when none is known. A model's wait is the longer of what its last try that
    named one heard (an upstream's ``Retry-After`` as taken: the model rests that long; what
    was left of the rest of a model passed over) and what was left of its rest as failover
    gave up (``rests``, the health tracker's: it counts the circuit the model's own failures
    opened, as 429s without a ``Retry-After`` do, which no try names)."""
    heard: dict[str, float] = {}
    for a in attempts:
        if a.retry_after_s is not None:
            heard[a.model] = a.retry_after_s
    rests = rests or {}
    waits: list[float] = []
    for model in dict.fromkeys(a.model for a in attempts):
        known = [w for w in (heard.get(model), rests.get(model)) if w is not None]
        if known:
            waits.append(max(known))
    return min(waits) if waits else None


class ProviderError(SwitchpointError):
    """An upstream call failed. Subclasses say whether to retry or escalate.

    ``model`` is the catalog name of the model that failed, ``status`` the upstream HTTP status
    (if one arrived) and ``body`` the upstream's error body (parsed JSON when it was JSON,
    otherwise the text, truncated and with secrets redacted).
    """

    kind: ClassVar[str] = "provider_error"
    _retryable: ClassVar[bool] = False
    _escalate: ClassVar[bool] = False
    _counts_against_health: ClassVar[bool] = True
    _may_have_generated: ClassVar[bool] = False

    def __init__(self, message: str, *, model: str | None = None, status: int | None = None,
                 body: object = None, generated: bool | None = None) -> None:
        where = f"{model}: " if model else ""
        super().__init__(f"{where}{message}")
        self.message = message
        self.model = model
        self.status = status
        self.body = body
        # Overrides the kind's ``may_have_generated`` for this failure (None: the kind's).
        self._generated = generated
        # What a stream that failed before its first content was seen to generate: the
        # reasoning (or thinking) it sent, not relayed, and the prompt count it reported (None:
        # none came; see stream_chunks).
        self.reasoned: ReportedSoFar | None = None

    @property
    def retryable(self) -> bool:
        """The same model may succeed if asked again."""
        return self._retryable

    @property
    def escalate(self) -> bool:
        """Another model may succeed."""
        return self._escalate

    @property
    def counts_against_health(self) -> bool:
        """The failure says something about the model's health (not about the request)."""
        return self._counts_against_health

    @property
    def may_have_generated(self) -> bool:
        """The upstream had the request and may have been generating its answer when the call
        ended (a read or first-token timeout, the request's deadline cutting it, a stream or an
        answer cut part-way, an answer too large): a provider bills what it generated until
        the connection closed. False when nothing was sent (a connect error, a missing key) or
        the upstream answered with an error status (4xx, 5xx, 429), which is not billed."""
        return self._may_have_generated if self._generated is None else self._generated

    def to_openai_error(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` envelope a client of the gateway would see for this error."""
        return {"error": {"message": str(self), "type": self.kind, "code": self.kind,
                          "param": None}}


class RateLimited(ProviderError):
    """429: slow down. ``retry_after`` is the upstream's ``Retry-After`` in seconds, if sent
    (failover takes it as at most its health tracker's ``max_cooldown_s``)."""

    kind = "rate_limited"
    _retryable = True
    _escalate = True

    def __init__(self, message: str, *, retry_after: float | None = None,
                 model: str | None = None, status: int | None = 429,
                 body: object = None) -> None:
        super().__init__(message, model=model, status=status, body=body)
        self.retry_after = retry_after


class ServerError(ProviderError):
    """The upstream failed (5xx, overloaded, 408/409) or redirected (a 3xx, never followed):
    the same request may work later, or another model answer it."""

    kind = "server_error"
    _retryable = True
    _escalate = True


class ConnectError(ProviderError):
    """No usable connection: refused, DNS, connect timeout, the request not sent; or the
    connection lost (reset, closed) after the request was sent and before any response, when
    the model may have been generating (``may_have_generated``: a provider may bill it)."""

    kind = "connect_error"
    _retryable = True
    _escalate = True


class ReadTimeout(ProviderError):
    """The upstream went silent for longer than ``Timeouts.read_s`` (or the request's whole
    deadline ran out while it was still answering)."""

    kind = "read_timeout"
    _retryable = True
    _escalate = True
    _may_have_generated = True  # (not when sending it timed out: nothing was generated)


class DeadlineSpent(ReadTimeout):
    """The request's whole deadline ran out on a model called after other models had used more
    than half of it: the model had much less time than a request of its own gives it, so its
    health is not charged (a model called first, or with at least half the deadline, is)."""

    _counts_against_health = False


class FirstTokenTimeout(ProviderError):
    """A stream produced no content within ``Timeouts.first_token_s``."""

    kind = "first_token_timeout"
    _retryable = True
    _escalate = True
    _may_have_generated = True


class MalformedResponse(ProviderError):
    """A 2xx answer that is not a chat completion (not JSON, no ``choices``, ...), or one
    whose head no HTTP/1.1 client reads (:class:`UnreadableHead`), which is no connection
    lost: the upstream had the whole request, so it may have generated (``may_have_generated``
    says so)."""

    kind = "malformed_response"
    _retryable = True
    _escalate = True


class UnaskedCoding(MalformedResponse):
    """An answer in a ``Content-Encoding`` the gateway did not ask for, left undecoded. The
    same model would answer in it again (its server is set up so); another model may not."""

    _retryable = False


class UnreadableHead(MalformedResponse):
    """An answer whose head no HTTP/1.1 client reads (not HTTP/1.x, a bad status line, an
    invalid ``Content-Length``, a 101 no request asked for). The same model's server would
    answer so again; another model may not. It had the whole request, so it may have
    generated (and billed) an answer."""

    _retryable = False


class ResponseTooLarge(ProviderError):
    """An upstream answer (one line of its stream, or its head: status line and headers) is
    larger than its limit. The same model would send it again; another model may answer
    within the limit."""

    kind = "response_too_large"
    _escalate = True
    _may_have_generated = True


class StreamBroken(ProviderError):
    """A stream failed part-way: cut, a malformed chunk, an error event, or an end before the
    answer finished (neither the end marker nor a ``finish_reason``).

    ``after_first_byte`` says whether some of the answer already reached the client; then
    nothing can be retried or escalated and the client must be told the stream failed.
    ``internal``: the gateway's own code failed on the stream, not the model (its health is not
    charged, and a session pinned to it stays pinned).
    """

    kind = "stream_broken"
    _may_have_generated = True

    def __init__(self, message: str, *, after_first_byte: bool = False,
                 model: str | None = None, status: int | None = None,
                 body: object = None, internal: bool = False) -> None:
        super().__init__(message, model=model, status=status, body=body)
        self.after_first_byte = after_first_byte
        self.internal = internal

    @property
    def retryable(self) -> bool:
        return not self.after_first_byte

    @property
    def escalate(self) -> bool:
        return not self.after_first_byte


class ServiceStopped(StreamBroken):
    """The service stopped while the stream was under way: it was ended by the service (not
    by the upstream, whose health is not charged, nor by the client)."""

    kind = "service_stopped"

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message, model=model, after_first_byte=True)


class ContextLengthExceeded(ProviderError):
    """The prompt (plus ``max_tokens``) does not fit this model; a larger one may take it."""

    kind = "context_length_exceeded"
    _escalate = True
    _counts_against_health = False


class AuthError(ProviderError):
    """The upstream refused our credentials (401/403): another model's provider may not."""

    kind = "auth_error"
    _escalate = True


class MissingApiKey(AuthError):
    """The environment variable that should hold the model's API key is not set, or holds a
    key no request header can carry (``problem`` says why). Nothing was sent upstream: the
    configuration is at fault, not the model's health."""

    kind = "missing_api_key"
    _counts_against_health = False

    def __init__(self, env_var: str, *, model: str | None = None,
                 problem: str | None = None) -> None:
        super().__init__(
            f"the API key variable {env_var} {problem}" if problem is not None else
            f"the API key variable {env_var} is not set; export {env_var}=<key> or point the "
            "model's api_key_env at the variable that holds it",
            model=model)
        self.env_var = env_var


class ContentFiltered(ProviderError):
    """The upstream's content filter refused the request. Not escalated on purpose: routing
    around a safety filter is a policy decision, not a failover."""

    kind = "content_filter"
    _counts_against_health = False


class BadRequest(ProviderError):
    """Any other 4xx: the request is wrong for this upstream. A 404 (the upstream does not
    know the model) escalates; anything else would fail the same way elsewhere."""

    kind = "bad_request"
    _counts_against_health = False

    def __init__(self, message: str, *, status: int = 400, body: object = None,
                 model: str | None = None) -> None:
        super().__init__(message, model=model, status=status, body=body)

    @property
    def escalate(self) -> bool:
        return self.status == 404

    @property
    def counts_against_health(self) -> bool:
        return self.status == 404


class UnsupportedRequest(BadRequest):
    """This provider's API cannot express the request (an adapter's translation failed);
    another model's may, so it escalates, and it says nothing about the model's health."""

    kind = "unsupported_request"

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message, status=400, model=model)

    @property
    def escalate(self) -> bool:
        return True

    @property
    def counts_against_health(self) -> bool:
        return False
