"""The governor: who is calling, what they may use, what they may spend, and how ``auto`` bends.

The engine asks it, per request:

1. :meth:`Governor.authenticate` (the HTTP door, when ``auth: keys``): a bearer key becomes a
   :class:`Principal` (key id, tenant); the in-process door may name a key or a tenant itself.
2. :meth:`Governor.check_model` and :meth:`Governor.check_candidates`: a model, or a
   candidate for ``auto``, outside what the key and its tenant may use is a 403 (naming only
   what they may use, whether the name exists or not); :meth:`Governor.narrow` gives ``auto``
   the models it may choose, and their default λ applies unless the caller gave one.
3. :meth:`Governor.route` wraps ``auto``'s routing: the escalation constraints (``min_tier``,
   ``capability``, ``prefer_provider``) narrow the candidates; λ rises along the tenant's budget
   curve as its budgets fill; the SLA is checked and, on a breach, routing adjusts; a low
   confidence escalates. The decision says all of it (fields and reasoning).
4. :meth:`Governor.admit`: rate limits and budgets, by reservation of the worst case (429
   ``rate_limit_exceeded`` / ``budget_exceeded`` with ``Retry-After`` otherwise).
5. :meth:`Governor.hold_try` before a try that follows one a provider may have billed (its
   budgets and TPM windows hold that try too, or it is not sent).
6. :meth:`Governor.settle` when the request ends (once; :meth:`Governor.write_unlogged` writes
   its rows when no log entry carries them).

The worst case of a request on one model is ``prompt bound × input price + output cap ×
output price``. The prompt bound counts every byte of the prompt's text as a token (a
byte-level BPE token covers at least one byte), plus :data:`TOKENS_PER_MESSAGE` per message,
``governance.image_tokens`` per image and the bytes of the tools' JSON, capped by the model's
context window. The output cap is the request's ``max_tokens`` / ``max_completion_tokens``
(the larger when it names both: an upstream honours one or the other);
a budgeted request that names none gets ``governance.max_output_tokens`` set (and says so),
so the upstream cannot write past what was reserved. Failover may move a request to a pricier
model, so the key's, tenant's and gateway's budgets hold the worst case over every candidate
(those that cannot fit are dropped from the candidates first, and the request says so); each
candidate model's and provider's own budgets hold that model's worst case.

A model without prices costs an unknown amount, which no budget can hold: a caller a budget
watches may not name one (:meth:`Governor.check_priced`), ``auto`` chooses among the priced
models (:meth:`Governor.narrow`), and admission leaves unpriced fallbacks out.

Settlement charges the cost from the upstream's usage (plain answers as they arrive, streams
as they end; an answer without usage to believe, an estimate of what it used: see
:func:`~switchpoint.gateway.failover.answer_use`); when the cost is unknown (a model without
prices) it charges the answering model's worst case, and each try a provider
may have billed without an answer its model's worst case (:meth:`Governor.charge_of`); the TPM
windows count the same tries by the same rule, in tokens (the reported ones, else those the
request was admitted for). Before a try that follows such a try, :meth:`Governor.hold_try`
holds what the request may then owe, by the same rule, on its budgets and in its TPM windows
alike (a key or tenant under a TPM limit and no budget too: a failover cannot send more tokens
than its limit takes), or refuses the try, which is not sent; settlement counts each try once,
whatever was held for it. A request that got no answer (and no such try) releases its
reservation. A request's end is booked once, even after its reservation expired. A
reservation a stop or crash left open on disk is charged what it held when it expires (see
:mod:`~switchpoint.governance.ledger`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio.to_thread

from switchpoint._messages import json_quoted, listed_names
from switchpoint.catalog import TIERS, Catalog, ModelCard, model_names, usd_text
from switchpoint.config import Settings
from switchpoint.decision import RoutingDecision, without_prior_names
from switchpoint.errors import (
    AuthenticationError,
    BudgetExceededError,
    InvalidInputError,
    ModelNotFoundError,
    NoCapableModelError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitExceededError,
    StoreError,
    UnknownModelError,
)
from switchpoint.governance.budget_list import budget_page, listed_budgets
from switchpoint.governance.budgets import (
    DEFAULT_CURVE,
    Budget,
    curve_value,
    parse_budgets,
    period_start,
)
from switchpoint.governance.keys import KeyRecord, KeyStore, logged_keys
from switchpoint.governance.ledger import (
    EXPIRE_CHARGE,
    EXPIRE_RUNNING,
    PERSIST_AFTER_S,
    TOTAL,
    Blocked,
    Ledger,
    LedgerRecord,
    Limits,
    Ticket,
    carry_record,
    describe_account,
    is_callers_own,
    key_account,
    model_account,
    provider_account,
    rebuild,
    settle_accounts,
    tenant_account,
)
from switchpoint.governance.settings import EscalationSettings, SLASettings
from switchpoint.governance.spend_mark import (
    MARK_INTERVAL_S,
    Mark,
    carried_text,
    carry_over,
    mark_path,
    write_marks,
)
from switchpoint.learning.events import MAX_TENANT_NAME, check_tenant

log = logging.getLogger("switchpoint.governance")

# Chat templates add a few tokens per message (role markers) and a few to prime the answer.
TOKENS_PER_MESSAGE = 6
BASE_PROMPT_TOKENS = 8
# λ used when the SLA's hourly budget is breached and auto_escalate_on_breach is on.
SLA_BUDGET_COST_WEIGHT = 10.0
AUTO = "auto"

RouteFn = Callable[[str, list[str], float | None], Awaitable[RoutingDecision]]
#: A try a provider may have billed with no answer, whose upstream reported its use: its
#: model's card, what it cost (USD) and its tokens, as reported (None: unknown), or as
#: :meth:`Governor.charge_of` worked them out (which charges them as they are).
BilledTry = tuple[ModelCard, float | None, int | None]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a client key's id and its tenant (either may be None in-process)."""

    key_id: str | None = None
    tenant: str | None = None


@dataclass(frozen=True)
class Policy:
    """Everything that governs one caller, resolved from the config and its key."""

    tenant: str | None
    key: KeyRecord | None
    models: tuple[str, ...] | None  # allowed names ('auto' included when routing is)
    # The catalog models 'auto' may choose: what every list that names models allows (a list
    # of 'auto' alone restricts nothing here); None: all
    pool: tuple[str, ...] | None
    cost_weight: float | None
    budgets: Mapping[str, tuple[Budget, ...]]  # the key's, tenant's and gateway's
    limits: tuple[Limits, ...]
    curve: tuple[tuple[float, float], ...]
    sla: SLASettings | None
    escalation: EscalationSettings
    sla_account: str = TOTAL  # whose hourly spend the SLA's budget_per_hour_usd watches

    @property
    def budgeted(self) -> bool:
        return any(self.budgets.values())

    @property
    def who(self) -> str:
        """The caller as an error names it: its key, or the tenant it acts for."""
        if self.key is not None or self.tenant is None:
            return "this key"
        return f"tenant {json_quoted(self.tenant, MAX_TENANT_NAME)}"


def prompt_bound(body: Mapping[str, Any], image_tokens: int) -> int:
    """An upper bound on the prompt tokens of ``body`` (see the module docstring); a part of
    a type the request check takes as an image counts ``image_tokens``."""
    # (Imported here: the gateway's package imports this module.)
    from switchpoint.gateway.parsing import IMAGE_PART_TYPES

    total = BASE_PROMPT_TOKENS
    for message in body.get("messages") or ():
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, Mapping):
            continue
        for key, value in message.items():
            if key == "content":
                total += _content_bytes(value, image_tokens, IMAGE_PART_TYPES)
            elif key != "role":
                total += _bytes(value)
    for key in ("tools", "functions", "response_format", "tool_choice"):
        if key in body:
            total += _bytes(body[key])
    return total


def _bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
    import json

    return len(json.dumps(value, default=str).encode("utf-8", "replace"))


def _content_bytes(content: object, image_tokens: int, images: frozenset[str]) -> int:
    if isinstance(content, str) or not isinstance(content, list):
        return _bytes(content) if content is not None else 0
    total = 0
    for part in content:
        if isinstance(part, Mapping):
            kind = part.get("type")
            if kind == "text":
                total += _bytes(part.get("text") or "")
            elif kind in images:
                total += image_tokens
            else:
                total += _bytes(part)
        else:
            total += _bytes(part)
    return total


def choices(body: Mapping[str, Any]) -> int:
    """How many answers the request asks for (``n``; 1 unless it names a whole number above
    1): each may write up to the output cap, and the upstream bills every one."""
    value = body.get("n")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def worst_cost(card: ModelCard, prompt_tokens: int, output_tokens: int,
               answers: int = 1) -> float:
    """The worst case of one request on ``card`` (USD; 0 for an unpriced model, which a
    request a budget watches never goes to): the prompt once, and up to ``output_tokens`` for
    each of its ``answers``."""
    if card.context_window is not None:
        prompt_tokens = min(prompt_tokens, card.context_window)
        output_tokens = min(output_tokens, card.context_window)
    return card.price(prompt_tokens, output_tokens * answers)


class Governor:
    """Keys, tenants, budgets, rate limits, SLAs and escalation for one gateway."""

    def __init__(self, settings: Settings, *, store: Any = None,
                 health: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 settings_of: Callable[[], Settings] | None = None) -> None:
        """``store`` is the request log (its ``spend`` table holds the ledger; None: in memory
        only); ``health`` returns the health tracker whose latencies the SLA reads; ``clock``
        and ``monotonic`` are the ledger's (see :class:`Ledger`); ``settings_of`` returns the
        live settings, whose budgets the spend mark keeps (None: ``settings`` throughout)."""
        self.keys = KeyStore.in_dir(settings.data_dir)
        # Every keyed request reads the key store: one that cannot open stops the start.
        self._keys_at_open = self.keys_required(settings)
        self.ledger = Ledger(clock, monotonic)
        self.store = store
        self.health = health
        self.clock = clock
        self._policies: dict[tuple[int, str | None, KeyRecord | None],
                             tuple[Settings, Policy]] = {}
        self._opened = False
        # Whether this process serves from data_dir: it books the expiries of what it finds
        # open (see open).
        self._serving = True
        # Reservations not yet on disk, oldest first (written once their request runs long).
        self._unwritten: deque[tuple[Ticket, LedgerRecord]] = deque()
        # Held while a reservation's row is written, and while one is closed without a charge
        # (released, expired) and asked whether its row was: so that each reservation on disk
        # gets its closing row, whichever thread gets there first.
        self._persisting = threading.Lock()
        # Held while a request's end is booked (from asking whether it was to the ledger rows
        # it returns), so that of two settlements of one ticket (threads of their own) one
        # books it and returns its rows, and the other returns none.
        self._booking = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        # The spend mark (see governance.spend_mark): the live settings whose budgets it keeps,
        # its file, what was last written to it and when (by the monotonic clock), and whether
        # a write failed since the last that did not (warned of once).
        self._settings_of = settings_of or (lambda: settings)
        self._mark_path = mark_path(settings.data_dir)
        self._marked: list[Mark] | None = None
        self._marked_at = -math.inf
        self._mark_failed = False

    # Lifecycle ---------------------------------------------------------------------------------

    def open(self, *, serving: bool = True) -> None:
        """Rebuild the ledger from the spend table, and open the key store when client keys
        are on (else it opens on first use: a gateway without keys makes no file); one
        missing while the request log names keys made in it is refused, not made again,
        empty (see :meth:`KeyStore.missing`).
        ``serving``: this process serves from ``data_dir`` (it holds its lock), so the
        reservations it finds open a crash left, and it charges and writes their expiries;
        otherwise (a command that learns or reports beside whatever serves) it writes no row
        for a reservation it did not make: one a service still runs is held (see
        :meth:`Ledger.restore`), and a crash's is charged, on disk, by the next service's
        start alone, once, however many such commands ran meanwhile. Idempotent."""
        if self._opened:
            return
        if self.store is not None:  # (a keys.db lost beside a log naming its keys: refused)
            path = self.store.path
            self.keys.logged = partial(logged_keys, path)
        if self._keys_at_open:
            self.keys.open()
        self._serving = serving
        if self.store is not None:
            live, stale = rebuild(self.ledger, self.store.path, self.store.gone,
                                  serving=serving)
            if serving and stale:
                log.warning("%d budget reservation(s) from a previous run were still open past "
                            "their request deadline (the process stopped mid-request); "
                            "charged them what they held", len(stale))
            if serving and live:
                log.warning("%d budget reservation(s) from a previous run are still open; they "
                            "hold their amount until their request deadline, then are charged "
                            "it", len(live))
            self._write_expired()  # (those past their deadline, now)
            if serving:
                self._carry_over()
            self._stop.clear()
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="switchpoint-ledger-flush")
            self._flusher.start()
        self._opened = True

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
            self._flusher = None
        self.flush(everything=True)
        if self._opened:
            self.write_mark()
        self.keys.close()
        self._opened = False

    def _flush_loop(self) -> None:
        while not self._stop.wait(PERSIST_AFTER_S / 2):
            self.flush()
            if time.monotonic() - self._marked_at >= MARK_INTERVAL_S:
                self.write_mark()

    # The spend mark ----------------------------------------------------------------------------

    def _marks(self) -> list[Mark]:
        """The spend the ledger holds for each configured budget's account in its period
        under way (one per account and period)."""
        settings = self._settings_of()
        keys = self.keys if self.keys_required(settings) else None
        now = self.clock()
        marks: dict[tuple[str, str], Mark] = {}
        for entry in listed_budgets(settings, keys):
            account, period = entry.account, entry.budget.period
            if (account, period) not in marks:
                marks[(account, period)] = Mark(account, period, period_start(period, now),
                                                self.ledger.spent(account, period, now))
        return list(marks.values())

    def write_mark(self) -> None:
        """Write the spend mark when this process serves from ``data_dir`` with a request log
        and a figure moved since the last write (see :mod:`~switchpoint.governance.spend_mark`);
        a failure is logged (once until a write succeeds) and tried again later."""
        if self.store is None or not self._serving:
            return
        self._marked_at = time.monotonic()
        try:
            marks = self._marks()
            if marks == self._marked or (not marks and self._marked is None
                                         and not self._mark_path.exists()):
                self._marked = marks  # (no budget, no file: none is made)
                return
            write_marks(self._mark_path, marks)
        except (OSError, StoreError) as exc:
            if not self._mark_failed:
                log.warning("the spend mark %s was not written (tried again every %g s; "
                            "until it is, a restored backup of switchpoint.db gives back the "
                            "spend made since): %s", self._mark_path, MARK_INTERVAL_S, exc)
            self._mark_failed = True
            return
        self._marked, self._mark_failed = marks, False

    def _carry_over(self) -> None:
        """Book again, as ``carry`` rows, the spend of each budget's period under way that
        the spend mark holds and the database lacks (a backup of it restored), with one
        warning naming the accounts and amounts."""
        carried = carry_over(self.ledger, self._mark_path, self.clock())
        for mark, amount in carried:
            self._append(carry_record(mark.account, amount, mark.start))
        if carried:
            log.warning("switchpoint.db holds less spend than the spend mark %s kept for the "
                        "periods under way (an older backup restored?): counted again, as "
                        "carried over from before the restore: %s", self._mark_path,
                        carried_text(carried))

    def flush(self, *, everything: bool = False) -> None:
        """Write the reservations whose requests have run :data:`PERSIST_AFTER_S` (all still
        open ones with ``everything``), forgetting those already settled, and the expiries
        that came due (so the spend table closes a reservation as the live ledger releases
        it, not at the next admission)."""
        tick = self.ledger.monotonic()  # (how long a request has run: see the ledger)
        while self._unwritten:
            ticket, record = self._unwritten[0]
            if (not ticket.closed and not everything and ticket.started is not None
                    and tick - ticket.started < PERSIST_AFTER_S):
                break
            self._unwritten.popleft()
            with self._persisting:
                if not ticket.closed:
                    ticket.persisted = True
                    self._append(record)
        self._write_expired()

    # Who ---------------------------------------------------------------------------------------

    @staticmethod
    def keys_required(settings: Settings) -> bool:
        return settings.auth == "keys"

    @staticmethod
    def active(settings: Settings) -> bool:
        """Whether any budget, limit or SLA needs the ledger (nothing runs otherwise)."""
        return _flags(settings)[0]

    @staticmethod
    def governs(settings: Settings) -> bool:
        """Whether anything governs requests at all (else the engine skips the governor)."""
        return _flags(settings)[1]

    def authenticate(self, token: str | None, settings: Settings, *,
                     wait: bool = True) -> Principal:
        """The principal of a presented key (raises the matching 401/403 otherwise). With
        ``wait=False`` (on an event loop) a refusal does not wait for the key store's file:
        the caller calls :meth:`KeyStore.hold_refusals
        <switchpoint.governance.keys.KeyStore.hold_refusals>` off the loop before answering."""
        if token is None or not token.strip():
            raise AuthenticationError("this gateway needs a client key: send the header "
                                      "`Authorization: Bearer sp-...` (an openai client's "
                                      "api_key); `switchpoint keys create` makes one",
                                      param="authorization")
        record = self.keys.verify(token.strip(), wait=wait)
        self._tenant_settings(settings, record.tenant, record.id)
        return Principal(record.id, record.tenant)

    def principal(self, settings: Settings, *, key: str | None = None,
                  tenant: str | None = None, wait: bool = True) -> Principal | None:
        """The in-process door's caller: a key (verified like a bearer key), a tenant (trusted:
        the code runs with the gateway), both (they must agree) or neither. ``wait`` as for
        :meth:`authenticate` (on an event loop, :meth:`aprincipal`)."""
        if key is None and tenant is None:
            return None
        if key is not None and not isinstance(key, str):
            raise InvalidInputError("key", f"must be a client key (a string), got "
                                           f"{type(key).__name__}")
        if tenant is not None and not isinstance(tenant, str):
            raise InvalidInputError("tenant", f"must be a tenant name (a string) or None, got "
                                              f"{type(tenant).__name__}")
        if tenant is not None:
            check_tenant(tenant)
        if key is not None:
            who = self.authenticate(key, settings, wait=wait)
            if tenant is not None and tenant != who.tenant:
                raise InvalidInputError("tenant", "the key belongs to tenant "
                                                  f"{json_quoted(who.tenant)}, "
                                                  f"not {json_quoted(tenant)}")
            return who
        assert tenant is not None
        self._tenant_settings(settings, tenant, None)
        return Principal(None, tenant)

    async def aprincipal(self, settings: Settings, *, key: str | None = None,
                         tenant: str | None = None) -> Principal | None:
        """:meth:`principal` on an event loop: a key refused for a time the key store's file
        does not hold yet is refused once the file holds it, that write waited for off the
        loop (which goes on meanwhile)."""
        try:
            return self.principal(settings, key=key, tenant=tenant, wait=False)
        except AuthenticationError:
            if self.keys.refusals_pending():
                await anyio.to_thread.run_sync(self.keys.hold_refusals)
            raise

    def _tenant_settings(self, settings: Settings, tenant: str, key_id: str | None) -> Any:
        t = settings.tenants.get(tenant)
        if t is None:
            known = f"(tenants: {listed_names(settings.tenants, quoted=True) or 'none'})"
            if key_id is None:  # a tenant named by the caller: there is no such tenant
                raise NotFoundError(f"tenant: {json_quoted(tenant, 100)} is not in the "
                                    f"configuration {known}", param="tenant")
            raise PermissionDeniedError(f"key {key_id}'s tenant {json_quoted(tenant)} is not in "
                                        "the "
                                        f"configuration {known}", param="tenant")
        return t

    # Policy ------------------------------------------------------------------------------------

    def policy(self, settings: Settings, tenant: str | None, key_id: str | None) -> Policy:
        """What governs a caller (cached per config and key version)."""
        record = self.keys.cached(key_id) if key_id is not None else None
        cache_key = (id(settings), tenant, record)
        cached = self._policies.get(cache_key)
        if cached is not None and cached[0] is settings:  # (an id may be reused)
            return cached[1]
        t = settings.tenants.get(tenant) if tenant is not None else None
        if tenant is not None and t is None:
            self._tenant_settings(settings, tenant, key_id)
        models: tuple[str, ...] | None = None
        pool: tuple[str, ...] | None = None
        for listed in (t.models if t is not None else None,
                       record.models if record is not None else None):
            if listed is None:
                continue
            models = tuple(listed) if models is None else tuple(m for m in models
                                                                if m in listed)
            named = [m for m in listed if m != AUTO]
            if named:
                pool = tuple(named) if pool is None else tuple(m for m in pool if m in named)
        budgets: dict[str, tuple[Budget, ...]] = {}
        limits: list[Limits] = []
        if record is not None:
            budgets[key_account(record.id)] = tuple(parse_budgets(list(record.budgets),
                                                                  stored=True))
            if record.rpm or record.tpm:
                limits.append(Limits(key_account(record.id), record.rpm, record.tpm))
        if t is not None and tenant is not None:
            budgets[tenant_account(tenant)] = tuple(parse_budgets(t.budgets))
            if t.rpm or t.tpm:
                limits.append(Limits(tenant_account(tenant), t.rpm, t.tpm))
        total = tuple(parse_budgets(settings.budgets.total))
        if total:
            budgets[TOTAL] = total
        cost_weight = (record.cost_weight if record is not None and record.cost_weight
                       is not None else (t.cost_weight if t is not None else None))
        curve = DEFAULT_CURVE if t is None or t.curve is None else t.curve
        own_sla = t is not None and t.sla is not None and tenant is not None
        policy = Policy(tenant=tenant, key=record, models=models, pool=pool,
                        cost_weight=cost_weight,
                        budgets={a: b for a, b in budgets.items() if b},
                        limits=tuple(limits), curve=curve,
                        sla=(t.sla if t is not None and t.sla is not None else settings.sla),
                        escalation=(t.escalation if t is not None and t.escalation is not None
                                    else settings.escalation),
                        sla_account=tenant_account(tenant) if own_sla and tenant else TOTAL)
        if len(self._policies) > 4096:
            self._policies.clear()
        self._policies[cache_key] = (settings, policy)
        return policy

    # Shaping -----------------------------------------------------------------------------------

    def allowed_names(self, policy: Policy, catalog: Catalog) -> list[str] | None:
        """The catalog models ``auto`` may choose for this caller (None: all)."""
        if policy.pool is None:
            return None  # no list names a model ('auto' alone: routing among the catalog)
        return [m for m in policy.pool if m in catalog]

    def nameable(self, policy: Policy, catalog: Catalog) -> list[str]:
        """The catalog models the caller may ask for by name."""
        return [m for m in catalog.names if policy.models is None or m in policy.models]

    def visible(self, policy: Policy | None, catalog: Catalog) -> list[str]:
        """The catalog models a caller may use, by name or through ``auto``: all that an
        error may name to it (a key limited to some models is not told of the others)."""
        if policy is None:
            return list(catalog.names)
        pool = self.allowed_names(policy, catalog)
        return [m for m in catalog.names if _reaches(policy, m, catalog, pool)]

    def unknown_model(self, policy: Policy | None, catalog: Catalog,
                      exc: UnknownModelError | ModelNotFoundError, requested: str
                      ) -> UnknownModelError | ModelNotFoundError:
        """``exc`` (names the catalog does not know; ``requested``: the model the request
        named) as the caller may see it: naming only the models it may use."""
        if policy is None or policy.models is None:
            return exc
        shown = self.visible(policy, catalog)
        if isinstance(exc, UnknownModelError):
            return UnknownModelError(exc.field, exc.names, shown)
        return ModelNotFoundError(f"model: {json_quoted(requested, 200)} is not in this gateway's "
                                  f"catalog; {policy.who} may use "
                                  f"{listed_names(shown, quoted=True) or 'none'}",
                                  param="model")

    def check_model(self, policy: Policy, requested: str, catalog: Catalog, *,
                    field: str = "model") -> None:
        """403 unless the caller may use ``requested`` (named by the request's ``field``)."""
        refused = self._refusal(policy, requested, catalog, field)
        if refused is not None:
            raise refused

    def may_ask(self, policy: Policy, requested: str, catalog: Catalog) -> bool:
        """Whether :meth:`check_model` lets the caller ask for ``requested`` (``auto`` too):
        a model list shows it only what a request naming it may use."""
        return self._refusal(policy, requested, catalog, "model") is None

    def _refusal(self, policy: Policy, requested: str, catalog: Catalog,
                 field: str) -> PermissionDeniedError | None:
        """Why the caller may not use ``requested`` (None: it may): :meth:`check_model`'s."""
        if policy.models is None:
            return None
        if not policy.models:
            # A key's models and its tenant's no longer meet (a reload narrowed the tenant):
            # say so, naming only the key's own models, rather than list none.
            own = policy.key.models if policy.key is not None else None
            return PermissionDeniedError(
                f"{field}: {policy.who} may use no model: "
                + (f"its models ({listed_names(own, quoted=True)}) are none of its tenant's "
                   "any more (the "
                   "configuration changed); " if own else "")
                + "ask the operator for a key of the models its tenant may use now",
                param=field)
        if requested == AUTO:
            if AUTO not in policy.models:
                return PermissionDeniedError(
                    f'{field}: {policy.who} may not use "auto" (routing); it may use '
                    f"{listed_names(policy.models, quoted=True)}", param=field)
            names = self.allowed_names(policy, catalog)
            if names is not None and not names:
                return PermissionDeniedError(
                    f"{field}: none of the models {policy.who} may use is in the catalog any more "
                    f"({listed_names((m for m in policy.models if m != AUTO), quoted=True)}), "
                    "so \"auto\" has "
                    "nothing to route to; ask the operator", param=field)
            return None
        if requested not in policy.models:
            return PermissionDeniedError(
                f"{field}: {policy.who} may not use {json_quoted(str(requested), 100)}; it may "
                f"use {listed_names(policy.models, quoted=True)}", param=field)
        return None

    def _reacher(self, policy: Policy, catalog: Catalog) -> Callable[[str], bool]:
        """:meth:`reaches` for one request (the caller's pool worked out once)."""
        pool = self.allowed_names(policy, catalog)
        return lambda model: _reaches(policy, model, catalog, pool)

    def reaches(self, policy: Policy, model: str, catalog: Catalog) -> bool:
        """Whether the caller may use ``model``, by name or through ``auto``."""
        return _reaches(policy, model, catalog, self.allowed_names(policy, catalog))

    def check_reachable(self, policy: Policy, model: str, catalog: Catalog) -> None:
        """403 unless the caller may use ``model``, by name or through ``auto``."""
        if not self.reaches(policy, model, catalog):
            self.check_model(policy, model, catalog)

    def check_candidates(self, policy: Policy, catalog: Catalog, field: str,
                         names: object) -> list[str] | None:
        """``names``, a caller's list of candidates for ``auto`` (``field``; None: none given),
        as the list it checked, which the caller routes by: an
        :class:`~switchpoint.errors.InvalidInputError` when it is no list of names (a set, a
        mapping, a string: see :func:`~switchpoint.catalog.model_names`; any other iterable is
        read once), and a 403 when it names a model ``auto`` may not choose for the caller: an
        unknown name and a forbidden one alike, so that a key limited to some models cannot
        tell which other names exist. (A key whose ``auto`` reaches the whole catalog is told
        of unknown names as anyone is.)"""
        listed = model_names(names, field)
        pool = self.allowed_names(policy, catalog)
        if pool is None or listed is None:
            return listed
        bad = [n for n in listed if n not in pool]
        if bad:
            shown = listed_names((str(n) for n in bad), quoted=True)
            raise PermissionDeniedError(
                f"{field}: the routing of {policy.who} may not choose {shown}; it may choose among "
                f"{listed_names(pool, quoted=True) or 'none'}", param=field)
        return listed

    def check_teachable(self, policy: Policy, model: str, catalog: Catalog) -> None:
        """403 unless the caller may teach its tenant about ``model``'s answers: one it
        reaches. The message does not name ``model`` (the caller did not: it answered a
        request of another key of the tenant, or it is behind a blind label)."""
        if not self.reaches(policy, model, catalog):
            raise PermissionDeniedError(
                f"this is about an answer of a model {policy.who} may not use, so it cannot "
                "teach it; it may use "
                f"{listed_names(self.visible(policy, catalog), quoted=True) or 'none'}",
                param="model")

    def narrow(self, policy: Policy, catalog: Catalog, candidates: Sequence[str] | None, *,
               also: object = None, field: str = "model", candidates_field: str | None = None,
               also_field: str = "models") -> list[str] | None:
        """What ``auto`` may choose for the caller: ``candidates`` (a caller's list, already
        passed by :meth:`check_candidates`; None: every model it may use). A caller a budget
        watches chooses among the models with prices only (see :meth:`check_priced`); a 403
        when that leaves none of those its lists (``candidates`` and ``also``, the body's
        ``models``, applied after it) name, naming the list that left none as the caller
        called it: ``candidates_field`` when ``candidates`` alone names no priced model,
        else ``also_field``; ``field`` (the request's field asking for ``auto``) when no list
        given did (``candidates_field`` None: ``candidates`` is named ``field`` too)."""
        allowed = self.allowed_names(policy, catalog)
        names = (list(candidates) if candidates is not None
                 else None if allowed is None else list(allowed))
        if not policy.budgeted or catalog.all_priced:
            return names
        base = names if names is not None else catalog.routed
        pool = base
        if isinstance(also, Sequence) and not isinstance(also, str):
            pool = [m for m in base if m in also]

        def unpriced(models: Sequence[str]) -> bool:
            return bool(models) and not any(m not in catalog or catalog[m].priced
                                            for m in models)

        if unpriced(pool):
            name = (candidates_field if candidates is not None and candidates_field is not None
                    and unpriced(base) else also_field if pool is not base else field)
            raise PermissionDeniedError(
                f"{name}: {self._unpriced(policy, [m for m in pool if m in catalog])}, so "
                "\"auto\" has no model to choose", param=name)
        kept = [m for m in base if m not in catalog or catalog[m].priced]
        return kept if len(kept) < len(base) or names is not None else None

    def check_priced(self, policy: Policy, requested: str, catalog: Catalog) -> None:
        """403 when a caller a budget watches names a model without prices: what it would
        cost is unknown, so no budget could hold it (its answers would be spent without
        limit). The operator gives the model prices (0 for a free one)."""
        card = catalog.get(requested)
        if policy.budgeted and card is not None and not card.priced:
            raise PermissionDeniedError(f"model: {self._unpriced(policy, [requested])}",
                                        param="model")

    @staticmethod
    def _unpriced(policy: Policy, names: Sequence[str]) -> str:
        """Why a caller's budgets keep it from ``names`` (models without prices)."""
        watched = ", ".join(describe_account(a) for a in policy.budgets)
        one = len(names) == 1
        return (f"{listed_names(names, quoted=True)}"
                f" {'has' if one else 'have'} no prices in the catalog, "
                f"so what {'it costs' if one else 'they cost'} is unknown and the "
                f"budgets that watch {policy.who}'s requests ({watched}) could not hold it; "
                "requests under a budget use priced models only (the operator gives a model "
                "input_per_mtok and output_per_mtok, 0 for a free one)")

    # Routing -----------------------------------------------------------------------------------

    async def route(self, route: RouteFn, text: str, allowed: list[str],
                    cost_weight: float | None, *, policy: Policy, catalog: Catalog,
                    default_cost_weight: float) -> RoutingDecision:
        """Route ``text`` among ``allowed`` under ``policy``: constraints, the budget curve,
        the SLA and confidence-gated escalation (see the module docstring)."""
        notes: list[str] = []
        candidates = self._constrained(allowed, policy.escalation, catalog, notes)
        base = default_cost_weight if cost_weight is None else cost_weight
        lam, pressure = self._pressured(policy, base, notes)
        decision = await route(text, candidates, lam)
        # A model without a profile borrows a profiled model's estimate, which the reasoning
        # names: not to a caller that may not use that model.
        reaches = self._reacher(policy, catalog)
        decision = without_prior_names(decision, reaches)
        original = ""
        breaches: list[str] = []
        adjustments: list[str] = []
        sla = policy.sla
        if sla is not None:
            breaches = self._breaches(decision, sla, policy)
            if breaches and sla.auto_escalate_on_breach:
                pool, new_lam = self._adjusted(decision, sla, breaches, adjustments, policy)
                if adjustments:
                    adjusted = without_prior_names(await route(text, pool, new_lam), reaches)
                    if adjusted.selected_model != decision.selected_model:
                        original = decision.selected_model
                    notes.append(f"SLA breach ({listed_names(breaches)}): "
                                 f"{'; '.join(a.replace('_', ' ') for a in adjustments)}; "
                                 f"now {adjusted.selected_model}.")
                    decision = adjusted
            elif breaches:
                notes.append(f"SLA breach ({listed_names(breaches)}); auto_escalate_on_breach is "
                             "off, so the choice stands.")
        decision = self._escalate(decision, policy.escalation, notes, reaches)
        if decision.escalation_changed_model and not original:
            original = decision.original_model
        compliant = sla is None or not self._breaches(decision, sla, policy)
        return replace(decision, reasoning=[*decision.reasoning, *notes],
                       sla_compliant=compliant, sla_breaches=breaches,
                       sla_adjustments=adjustments, budget_pressure=pressure,
                       original_model=original or decision.original_model)

    def _constrained(self, allowed: list[str], esc: EscalationSettings, catalog: Catalog,
                     notes: list[str]) -> list[str]:
        names = [m for m in allowed if m in catalog]
        if esc.min_tier is not None:
            floor = TIERS.index(esc.min_tier)
            names = [m for m in names if catalog[m].tier is not None
                     and TIERS.index(catalog[m].tier or "trivial") >= floor]
            if not names:
                raise NoCapableModelError(
                    f"messages: none of {listed_names(allowed, quoted=True)} has a tier of "
                    f"{json_quoted(esc.min_tier)} or "
                    "above (escalation.min_tier)", {m: ["below min_tier"] for m in allowed})
        if esc.capability is not None:
            names = [m for m in names if catalog[m].has(esc.capability)]
            if not names:
                raise NoCapableModelError(
                    f"messages: none of {listed_names(allowed, quoted=True)} lists the capability "
                    f"{json_quoted(esc.capability)} (escalation.capability)",
                    {m: [f"lacks {esc.capability}"] for m in allowed})
        if esc.prefer_provider is not None:
            preferred = [m for m in names if catalog[m].provider == esc.prefer_provider]
            if preferred and len(preferred) < len(names):
                notes.append(f"Preferred provider {json_quoted(esc.prefer_provider)}: routed among "
                             f"{listed_names(preferred, quoted=True)}.")
                names = preferred
        return names

    def _pressured(self, policy: Policy, base: float, notes: list[str]
                   ) -> tuple[float, dict[str, Any] | None]:
        if not policy.curve or not policy.budgeted:
            return base, None
        used = self.ledger.most_used_budget(policy.budgets)
        if used is None:
            return base, None
        fraction, account, budget = used
        floor = curve_value(policy.curve, fraction)
        if floor <= base:
            return base, None
        lam = round(floor, 6)
        label = f"{describe_account(account)} ${budget}"
        if not is_callers_own(account):
            # A budget shared with other callers (the gateway's) says nothing of what they
            # spent, here as in a refusal: the caller sees that it fills, not how much.
            notes.append(f"Budget: {label}, shared with other callers, is filling; λ raised "
                         f"from {base:g} to {lam:g} to favour cheaper models.")
            return lam, {"fraction_used": None, "budget": label, "base_cost_weight": base,
                         "cost_weight": lam}
        notes.append(f"Budget: {label} is {fraction:.0%} used; λ raised from {base:g} to "
                     f"{lam:g} to favour cheaper models.")
        return lam, {"fraction_used": round(fraction, 6), "budget": label,
                     "base_cost_weight": base, "cost_weight": lam}

    def _hour_spend(self, policy: Policy) -> float:
        account = policy.sla_account
        return self.ledger.spent(account, "hour") + self.ledger.held(account)

    def _latency(self, model: str) -> float | None:
        tracker = self.health() if self.health is not None else None
        if tracker is None:
            return None
        value: float | None = tracker.latency_ms(model)
        return value

    def _breaches(self, decision: RoutingDecision, sla: SLASettings,
                  policy: Policy) -> list[str]:
        out = []
        model = decision.selected_model
        if sla.max_latency_ms is not None:
            latency = self._latency(model)
            if latency is not None and latency > sla.max_latency_ms:
                out.append("latency_exceeded")
        hourly = sla.budget_per_hour_usd
        if hourly is not None and self._hour_spend(policy) + decision.expected_cost > hourly:
            out.append("budget_exceeded")
        floor = sla.min_quality_score
        if floor is not None and 1.0 - decision.expected_error < floor:
            out.append("quality_below_minimum")
        return out

    def _adjusted(self, decision: RoutingDecision, sla: SLASettings, breaches: list[str],
                  adjustments: list[str], policy: Policy) -> tuple[list[str], float]:
        pool = list(decision.all_scores)
        lam = decision.cost_weight
        errors = decision.expected_errors
        if "quality_below_minimum" in breaches and sla.min_quality_score is not None:
            floor = sla.min_quality_score
            good = [m for m in pool if 1.0 - errors.get(m, 1.0) >= floor]
            if good:
                pool = good
                adjustments.append("routed_to_higher_quality_model_due_to_quality_sla")
        if "latency_exceeded" in breaches and sla.max_latency_ms is not None:
            limit = sla.max_latency_ms
            fast = [m for m in pool if (self._latency(m) or 0.0) <= limit]
            if fast:
                pool = fast
                adjustments.append("routed_to_faster_model_due_to_latency_sla")
        if "budget_exceeded" in breaches:
            lam = max(lam, SLA_BUDGET_COST_WEIGHT)
            adjustments.append("routed_to_cheaper_model_due_to_budget_sla")
        return pool, lam

    def _escalate(self, decision: RoutingDecision, esc: EscalationSettings,
                  notes: list[str], reaches: Callable[[str], bool] = lambda model: True
                  ) -> RoutingDecision:
        """Confidence-gated escalation. ``reaches`` says whether the caller may use a model:
        an escalation model it may not is not suggested or named to it (a key limited to some
        models is told of no others), and the choice stands."""
        threshold = esc.low_confidence_threshold
        if threshold <= 0 or decision.confidence >= threshold:
            return decision
        selected = decision.selected_model
        errors = decision.expected_errors
        target = esc.escalation_model or (min(errors, key=lambda m: errors[m]) if errors
                                          else selected)
        reason = (f"Low confidence {decision.confidence:.2f} below threshold {threshold:.2f}. "
                  f"Original model: {selected}")
        conf = decision.confidence
        if esc.strategy == "log_only":
            log.info("low-confidence decision %s: %s", decision.decision_id, reason)
            notes.append(f"{reason}; logged only (escalation strategy log_only).")
            return replace(decision, escalation_reason=reason, original_confidence=conf)
        if not reaches(target):
            notes.append(f"{reason}; the escalation model is not among the models this caller "
                         "may use, so the choice stands.")
            return replace(decision, escalation_reason=f"{reason}; the escalation model is not "
                                                       "among the models this caller may use",
                           original_confidence=conf)
        if esc.strategy == "ask":
            notes.append(f"{reason}; suggested escalation to {target} (strategy ask: the model "
                         "is kept, the caller decides).")
            return replace(decision, escalated=True, original_confidence=conf,
                           escalation_reason=f"{reason}; suggested escalation: {target}")
        if target == selected:
            notes.append(f"{reason}; it is already the escalation model.")
            return replace(decision, escalation_reason=f"{reason}; already the escalation "
                                                       "model", original_confidence=conf)
        if target not in decision.all_scores:
            notes.append(f"{reason}; the escalation model {target} cannot serve this request "
                         "(not among its candidates), so the choice stands.")
            return replace(decision, escalation_reason=f"{reason}; escalation model {target} "
                                                       "is not among the candidates",
                           original_confidence=conf)
        notes.append(f"{reason}; escalated to {target}.")
        return replace(
            decision, selected_model=target,
            expected_error=errors.get(target, decision.expected_error),
            cost_adjusted_score=decision.all_scores[target],
            expected_cost=decision.expected_costs.get(target, decision.expected_cost),
            fallback_models=[m for m in decision.all_scores if m != target],
            escalated=True, original_confidence=conf, escalation_reason=reason,
            original_model=selected)

    # Admission ---------------------------------------------------------------------------------

    def precheck(self, policy: Policy) -> None:
        """Refuse early (before routing) when an RPM window is already full."""
        if policy.limits:
            blocked = self.ledger.check_rate(policy.limits)
            if blocked is not None:
                raise _refusal(blocked)

    def count_route(self, policy: Policy) -> None:
        """A request that calls no model (routing, feedback, a score) counts against the
        caller's RPM (nothing to reserve)."""
        if policy.limits:
            blocked = self.ledger.count_request(policy.limits)
            if blocked is not None:
                raise _refusal(blocked)

    def admit(self, settings: Settings, policy: Policy | None, cards: list[ModelCard],
              body: dict[str, Any], *, key_id: str | None, tenant: str | None,
              notes: list[str], require_first: bool) -> tuple[Ticket, list[ModelCard]]:
        """Reserve the request's worst case and its tokens; returns the open ticket and the
        candidates that fit (those that cannot are dropped with a note). Raises
        :class:`BudgetExceededError` or :class:`RateLimitExceededError`."""
        g = settings.governance
        model_budgets = settings.budgets.models
        provider_budgets = settings.budgets.providers
        shared = dict(policy.budgets) if policy is not None else (
            {TOTAL: tuple(parse_budgets(settings.budgets.total))}
            if settings.budgets.total else {})
        if shared and not all(c.priced for c in cards):
            # What a model without prices costs is unknown: no budget could hold it.
            unpriced = [c.name for c in cards if not c.priced]
            if require_first and cards and not cards[0].priced:
                raise PermissionDeniedError(
                    f"model: {json_quoted(unpriced[0])} has no prices in the catalog, so no "
                    "budget can hold "
                    "what it costs; give it input_per_mtok and output_per_mtok (0 for a free "
                    "model)", param="model")
            cards = [c for c in cards if c.priced]
            if not cards:
                raise PermissionDeniedError(
                    f"model: {listed_names(unpriced, quoted=True)} have no prices in the "
                    "catalog, so no budget "
                    "can hold what they cost; give them input_per_mtok and output_per_mtok (0 "
                    "for a free model)", param="model")
            notes.append(f"No prices, so no budget can hold what it costs; left out of the "
                         f"fallbacks: {listed_names(unpriced, quoted=True)}.")
        per_card: dict[str, dict[str, tuple[Budget, ...]]] = {}
        for card in cards:
            own: dict[str, tuple[Budget, ...]] = {}
            if card.name in model_budgets:
                own[model_account(card.name)] = tuple(parse_budgets(model_budgets[card.name]))
            if card.provider in provider_budgets:
                own[provider_account(card.provider)] = tuple(
                    parse_budgets(provider_budgets[card.provider]))
            per_card[card.name] = own
        limits = policy.limits if policy is not None else ()
        budgeted = bool(shared) or any(per_card.values())
        counted = budgeted or any(limit.tpm for limit in limits)
        # (Imported here: the gateway's package imports this module.)
        from switchpoint.gateway.parsing import output_cap

        cap = output_cap(body)
        if cap is None:
            if counted:
                cap = g.max_output_tokens
                body[g.output_cap_field] = cap
                what = "a budget" if budgeted else "a tokens-per-minute limit"
                notes.append(f"{g.output_cap_field} set to {cap} (governance.max_output_tokens):"
                             f" {what} applies and the request named no output cap.")
            else:
                cap = max((c.context_window or g.max_output_tokens for c in cards),
                          default=g.max_output_tokens)
        prompt = prompt_bound(body, g.image_tokens)
        answers = choices(body)
        worst = {c.name: worst_cost(c, prompt, cap, answers) for c in cards}
        tokens = prompt + cap * answers
        ttl = settings.gateway.max_total_s + g.reservation_grace_s
        budgets: dict[str, tuple[Budget, ...]] = dict(shared)
        for own in per_card.values():
            budgets.update(own)
        kept = list(cards)
        while True:
            holds: dict[str, float] = {}
            for account in shared:
                holds[account] = max((worst[c.name] for c in kept), default=0.0)
            for card in kept:
                for account in per_card[card.name]:
                    holds[account] = max(holds.get(account, 0.0), worst[card.name])
            # (The one model, and provider, its tries may go to: a charge at its expiry, if a
            # crash leaves it open, goes to their accounts too.)
            providers = {c.provider for c in kept}
            result = self.ledger.reserve(holds=holds, budgets=budgets,
                                         worst_by_model={c.name: worst[c.name] for c in kept},
                                         tokens=tokens, limits=limits, ttl_s=ttl,
                                         key_id=key_id, tenant=tenant,
                                         model=kept[0].name if len(kept) == 1 else None,
                                         provider=providers.pop() if len(providers) == 1
                                         else None)
            if isinstance(result, Ticket):
                break
            if result.kind != "budget" or len(kept) <= 1:
                raise _refusal(result)
            culprit = self._culprit(result, kept, worst, per_card, require_first)
            if culprit is None:
                raise _refusal(result)
            notes.append(f"Budget: {culprit.name} (worst case "
                         f"{usd_text(worst[culprit.name])}) left "
                         f"out of the candidates, since with every candidate kept the request "
                         f"does not fit: {result.message}.")
            kept = [c for c in kept if c is not culprit]
        if self.store is not None:
            self._unwritten.append((result, LedgerRecord(
                ts=result.ts, reservation_id=result.id, kind="reserve",
                amount_usd=result.worst_usd, key_id=key_id, tenant=tenant,
                model=result.model, provider=result.provider, tokens=tokens,
                holds=result.holds, expires_at=result.expires_at)))
        self._write_expired()
        return result, kept

    @staticmethod
    def _culprit(blocked: Blocked, kept: list[ModelCard], worst: Mapping[str, float],
                 per_card: Mapping[str, Mapping[str, Any]],
                 require_first: bool) -> ModelCard | None:
        """The candidate to drop so the rest may fit: the one the blocking model or provider
        budget is about, else the dearest; never the first when the caller named it."""
        movable = kept[1:] if require_first else kept
        if blocked.account.startswith(("model:", "provider:")):
            pool = [c for c in movable if blocked.account in per_card[c.name]]
        else:
            pool = movable
        if not pool:
            return None
        return max(pool, key=lambda c: worst[c.name])

    @staticmethod
    def worst_of(ticket: Ticket, card: ModelCard) -> float:
        """The worst case ``ticket`` holds for one call of ``card`` (its prompt and all the
        answer it may write): what a try of it a provider may have billed is charged."""
        return ticket.worst_by_model.get(card.name, ticket.worst_usd)

    def hold_try(self, ticket: Ticket, card: ModelCard,
                 billed: Sequence[ModelCard | BilledTry]) -> Blocked | None:
        """Before a try of ``card`` that follows tries a provider may have billed (``billed``,
        see :func:`~switchpoint.gateway.failover.billed_tries`: each its card, or its card,
        cost and tokens when the upstream reported them, :data:`BilledTry`): hold what the
        request may then owe, those tries as they will be charged (:meth:`charge_of`: the
        usage an upstream reported, else the worst case and the tokens the request was
        admitted for) and this one at its worst case, on every account the ticket holds on
        (the key's, tenant's and gateway's budgets; the model's and provider's own) and in
        every TPM window it counts in (the key's, the tenant's), all or nothing, so that
        neither ever holds less than the tries sent may cost or use, nor a billed try's worst
        case once its usage is known (settlement counts each try once). Returns None when the
        try may be sent (held, or nothing more was needed), else why not: a budget cannot
        hold it (``kind`` ``budget``) or a TPM window cannot take it (``tpm``), its
        ``message`` saying which and what the earlier tries hold. With no billed try (the
        request's hold covers its first try) it does nothing, in memory only."""
        if not billed or ticket.closed:
            return None
        tries = [*(tried if isinstance(tried, tuple) else (tried, None, None)
                   for tried in billed), (card, None, None)]
        charges = [(tried, *self._charge(ticket, tried, cost, used)[:2])
                   for tried, cost, used in tries]
        needed: dict[str, float] = {}
        for tried, amount, _ in charges:
            for account in settle_accounts(ticket.key_id, ticket.tenant, tried.name,
                                           tried.provider):
                if account in ticket.holds:
                    needed[account] = needed.get(account, 0.0) + amount
        more = {account: amount - ticket.holds[account] for account, amount in needed.items()
                if amount > ticket.holds[account] * (1 + 1e-9) + 1e-12}
        tokens = sum(counted for _, _, counted in charges)
        more_tokens = {account: tokens - held for account, held in ticket.tokens_held().items()
                       if tokens > held}
        total = sum(amount for _, amount, _ in charges)
        if more or more_tokens:
            blocked = self.ledger.extend(ticket, more, more_tokens,
                                         what=f"another try of {card.name}")
            if blocked is not None:
                earlier = f"{len(billed)} earlier tr{'y' if len(billed) == 1 else 'ies'}"
                how = ("at its worst case" if len(billed) == 1 else "at their worst case")
                if any(cost is not None for _, cost, _ in tries):
                    how = "at the usage reported, else the worst case"
                if blocked.kind == "budget":
                    label = (f"{describe_account(blocked.account)}'s {blocked.budget} budget"
                             if blocked.budget is not None
                             else f"the budget of {describe_account(blocked.account)}")
                    spent = total - self.worst_of(ticket, card)
                    blocked.message = (
                        f"budget exceeded: not sent, as {label} cannot hold another try of "
                        f"{card.name} (its worst case {usd_text(self.worst_of(ticket, card))}) "
                        f"beside the {usd_text(spent)} that {earlier} a provider may have billed "
                        "cost")
                else:
                    blocked.message = (
                        f"rate limit exceeded: not sent, as {earlier} a provider may have "
                        f"billed count{'s' if len(billed) == 1 else ''} "
                        f"{tokens - ticket.tokens} tokens {how} in the "
                        f"tokens-per-minute window: {blocked.message}")
                return blocked
        ticket.cover_usd = max(ticket.cover_usd, total)
        if more:
            self._write_holds(ticket)
        return None

    def _write_holds(self, ticket: Ticket) -> None:
        """Say on disk what a reservation holds now that it holds more: its row, when not yet
        written, holds the same amounts (the ticket's own); one written already gets a later
        row (a restart reads a reservation's last)."""
        with self._persisting:
            if ticket.closed or not ticket.persisted:
                return
            self._append(LedgerRecord(ts=self.clock(), reservation_id=ticket.id,
                                      kind="reserve", amount_usd=ticket.held_for_usd,
                                      key_id=ticket.key_id, tenant=ticket.tenant,
                                      model=ticket.model, provider=ticket.provider,
                                      tokens=ticket.tokens, holds=dict(ticket.holds),
                                      expires_at=ticket.expires_at))

    def charge_of(self, ticket: Ticket, card: ModelCard, cost_usd: float | None,
                  tokens: int | None, *, request_id: str = "") -> tuple[float, int]:
        """What one try of ``card`` is charged (USD) and counts in the TPM windows (tokens):
        its cost and tokens as the upstream reported them, never past the worst case
        ``ticket`` holds for it; unknown (an answer that ended with no usage, a try a provider
        may have billed with no answer), its worst case (:meth:`worst_of`, and the tokens
        the request was admitted for). One rule for budgets and rate windows alike; a usage
        reported past the worst case is logged (once per charge: :meth:`hold_try` reads the
        same rule without logging)."""
        charged, counted, reported = self._charge(ticket, card, cost_usd, tokens)
        if reported > charged * (1 + 1e-9) + 1e-12:
            # What the upstream reported is past what the request could use (its prompt's
            # bytes and images, its output cap): a try is never charged past the worst case
            # held for its model.
            log.warning("request %s: %s reported usage costing %s, more than the %s "
                        "worst case held for it; charged the worst case (more image tokens "
                        "than governance.image_tokens, or an upstream that ignores the "
                        "output cap or misreports its usage?)", request_id, card.name,
                        usd_text(reported), usd_text(charged))
        return charged, counted

    def _charge(self, ticket: Ticket, card: ModelCard, cost_usd: float | None,
                tokens: int | None) -> tuple[float, int, float]:
        """:meth:`charge_of`'s amount and tokens, and the cost as reported (or the worst
        case), unlogged."""
        worst = self.worst_of(ticket, card)
        reported = cost_usd if cost_usd is not None else worst
        charged = (worst if reported > worst * (1 + 1e-9) + 1e-12 and ticket.worst_by_model
                   else reported)
        counted = ticket.tokens if tokens is None else (
            min(tokens, ticket.tokens) if ticket.tokens else tokens)
        return charged, counted, reported

    def settle(self, ticket: Ticket | None, *, request_id: str, card: ModelCard | None,
               cost_usd: float | None, tokens: int | None,
               billed: Sequence[ModelCard | BilledTry] = ()
               ) -> tuple[list[LedgerRecord], float | None]:
        """Close a reservation: charge the answer (``card``; its ``cost_usd`` and ``tokens``
        as reported, None: unknown) and each try in ``billed`` (one a provider may have billed
        with no answer, see :func:`~switchpoint.gateway.failover.billed_tries`: its card, or
        its card, cost and tokens when the upstream reported them, :data:`BilledTry`) as
        :meth:`charge_of` says, to the budgets and the TPM windows alike; with no answer
        (``card`` None) and no such try, release it. A reservation that expired meanwhile is
        charged all the same (its expiry freed its hold, not what its tries cost); one settled
        already is not charged again. Returns the ledger rows to log with the request (one per
        model charged; none when settled already) and the amount charged (their sum, which may
        pass the hold when failed tries add up to more than the dearest model's worst case:
        the provider billed them all the same)."""
        if ticket is None:
            return [], None
        with self._booking:
            return self._book(ticket, request_id=request_id, card=card, cost_usd=cost_usd,
                              tokens=tokens, billed=billed)

    def _book(self, ticket: Ticket, *, request_id: str, card: ModelCard | None,
              cost_usd: float | None, tokens: int | None,
              billed: Sequence[ModelCard | BilledTry]
              ) -> tuple[list[LedgerRecord], float | None]:
        """:meth:`settle`, with ``_booking`` held."""
        if ticket.settled:
            return [], None
        now = self.clock()
        if card is None and not billed:
            # (One that expired meanwhile freed its hold then, but stays open on disk until
            # this row: see the ledger.)
            with self._persisting:
                self.ledger.release(ticket, tokens=0)
                if not ticket.persisted:
                    return [], None
            return [LedgerRecord(ts=now, reservation_id=ticket.id, kind="release",
                                 request_id=request_id, key_id=ticket.key_id,
                                 tenant=ticket.tenant)], None
        # Per model charged, in order: its card, amount and tokens.
        charges: dict[str, tuple[ModelCard, float, int]] = {}
        tries: list[tuple[ModelCard, float | None, int | None]] = [
            *(tried if isinstance(tried, tuple) else (tried, None, None) for tried in billed),
            *(((card, cost_usd, tokens),) if card is not None else ())]
        for tried, cost, used in tries:
            amount, counted = self.charge_of(ticket, tried, cost, used, request_id=request_id)
            _, before, before_tokens = charges.get(tried.name, (tried, 0.0, 0))
            charges[tried.name] = (tried, before + amount, before_tokens + counted)
        total = sum(amount for _, amount, _ in charges.values())
        counted_tokens = sum(counted for _, _, counted in charges.values())
        if total > ticket.held_for_usd * (1 + 1e-9) + 1e-12 and ticket.worst_by_model:
            log.warning("request %s: tries a provider may have billed with no answer (timed "
                        "out, cut mid-answer, or broken) cost %s in all (each at the usage "
                        "it reported, else its worst case), more than the %s held for the "
                        "request; charged in full", request_id, usd_text(total),
                        usd_text(ticket.held_for_usd))
        booked = [(amount, settle_accounts(ticket.key_id, ticket.tenant, c.name, c.provider))
                  for c, amount, _ in charges.values()]
        if not self.ledger.settle(ticket, charges=booked, tokens=counted_tokens):
            log.warning("request %s settled after its reservation had expired; charged %s "
                        "anyway", request_id, usd_text(total))
        # (Dated when its request began: the periods the ledger charged it in.)
        return [LedgerRecord(ts=ticket.charged_at, reservation_id=ticket.id, kind="settle",
                             amount_usd=amount, request_id=request_id, key_id=ticket.key_id,
                             tenant=ticket.tenant, model=c.name, provider=c.provider,
                             tokens=counted)
                for c, amount, counted in charges.values()], total

    def write_unlogged(self, rows: Sequence[object]) -> None:
        """Write the ledger rows of ``rows``, a settlement's (see :meth:`settle`), whose
        request has no log entry to carry them (it ended some unforeseen way)."""
        for row in rows:
            if isinstance(row, LedgerRecord):
                self._append(row)

    # Internals ---------------------------------------------------------------------------------

    def _append(self, record: LedgerRecord) -> None:
        """Write a ledger row nobody waits for (it shares the next commit: no fsync of its
        own; a crash may lose the last :data:`~switchpoint.store.sqlite.LAZY_WAIT_S` of them,
        which then free their hold at once on restart)."""
        if self.store is None:
            return
        try:
            self.store.append_lazy(record)
        except StoreError as exc:
            log.error("ledger entry %s not written: %s", record.id, exc)

    def _write_expired(self) -> None:
        """Write the rows of the reservations that expired (on disk, and those the ledger
        charged: see :meth:`Ledger._expire`), and say what each expiry did."""
        with self._persisting:
            expired = [(ticket, ticket.persisted) for ticket in self.ledger.take_expired()]
        for ticket, persisted in expired:
            when = self.clock() if ticket.expired_at is None else ticket.expired_at
            charged = ticket.charged_usd
            if ticket.orphan and not self._serving:
                continue  # (not this process's to book: see open)
            if ticket.orphan and charged is not None:
                log.warning("budget reservation %s from a previous run expired: charged its "
                            "worst case, %s, to %s, as its request was cut by a stop or "
                            "crash after it had run; a provider may have billed it", ticket.id,
                            usd_text(charged), ", ".join(map(describe_account, ticket.accounts)))
                self._append(LedgerRecord(ts=ticket.charged_at, reservation_id=ticket.id,
                                          kind=EXPIRE_CHARGE, amount_usd=charged,
                                          key_id=ticket.key_id, tenant=ticket.tenant,
                                          model=ticket.model, provider=ticket.provider,
                                          expires_at=ticket.expires_at))
                continue
            log.warning("budget reservation %s expired before its request ended; its hold is "
                        "released (the request is charged what it cost when it ends)",
                        ticket.id)
            if not persisted:
                continue
            self._append(LedgerRecord(ts=when, reservation_id=ticket.id, kind=EXPIRE_RUNNING,
                                      key_id=ticket.key_id, tenant=ticket.tenant,
                                      expires_at=ticket.expires_at))

    def budget_status(self, settings: Settings, *, limit: int | None = None,
                      cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """The configured budgets' state (the gateway's, each tenant's, model's, provider's
        and key's: see :mod:`~switchpoint.governance.budget_list`), ``limit`` of them at most
        (None: all) after ``cursor``, and the next page's cursor (None on the last)."""
        listed, next_cursor = budget_page(settings, self.keys, limit=limit, cursor=cursor)
        return [self.ledger.status(entry.account, entry.budget) for entry in listed], next_cursor

    def tenant_budget_status(self, settings: Settings) -> dict[str, list[dict[str, Any]]]:
        """Each configured tenant's own budgets' state (not its keys'), by tenant: only
        those are read, whatever the number of keys."""
        return {name: [self.ledger.status(tenant_account(name), budget)
                       for budget in parse_budgets(t.budgets)]
                for name, t in settings.tenants.items()}


_FLAGS: dict[int, tuple[Settings, tuple[bool, bool]]] = {}
_NO_ESCALATION = EscalationSettings()


def _flags(settings: Settings) -> tuple[bool, bool]:
    """(the ledger is needed, anything governs) for ``settings``, computed once per object."""
    cached = _FLAGS.get(id(settings))
    if cached is not None and cached[0] is settings:
        return cached[1]
    active = (settings.auth == "keys" or bool(settings.tenants) or settings.budgets.any
              or settings.sla is not None)
    flags = (active, active or settings.escalation != _NO_ESCALATION)
    if len(_FLAGS) > 64:
        _FLAGS.clear()
    _FLAGS[id(settings)] = (settings, flags)
    return flags


def _reaches(policy: Policy, model: str, catalog: Catalog, pool: list[str] | None) -> bool:
    """Whether ``policy`` lets its caller use ``model``, by name or through ``auto`` (which
    chooses among ``pool``; None: the whole catalog)."""
    if policy.models is None or model in policy.models:
        return True
    return AUTO in policy.models and (model in catalog if pool is None else model in pool)


def _refusal(blocked: Blocked) -> BudgetExceededError | RateLimitExceededError:
    """The 429 for ``blocked``; one that waiting cannot fix (a request larger than a whole
    budget or TPM limit, no ``retry_after``) is permanent: clients are told not to retry."""
    error: BudgetExceededError | RateLimitExceededError
    if blocked.kind == "budget":
        label = (f"{describe_account(blocked.account)} {blocked.budget}"
                 if blocked.budget is not None else describe_account(blocked.account))
        error = BudgetExceededError(f"budget exceeded: {blocked.message}", budget=label,
                                    retry_after=blocked.retry_after)
    else:
        error = RateLimitExceededError(f"rate limit exceeded: {blocked.message}",
                                       retry_after=blocked.retry_after)
    error.permanent = blocked.retry_after is None
    return error
