"""The chat door's work: a chat request planned (routed, its pin, health and governance
weighed, its place among its tenant's calls in flight and its budget hold taken), called with
retries and failover, settled and logged, its stream handed out; and a service's stop ending
what is in flight, whatever stage it is in.

::

    ChatCall ─► plan ─► execute ─► ChatCompletion (logged) / ChatStream (logged as it ends)
                 │         │
                 │         └─ call_with_failover; a cancel, a stop or a failure logged once
                 └─ refused (logged) / ended by a stop (logged)

:class:`ChatDoor` is the :class:`~switchpoint.gateway.engine.Gateway`'s; what it reads of the
gateway is :class:`ChatHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import anyio.to_thread

import switchpoint.gateway.accounting as accounting
from switchpoint.catalog import usd
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    BudgetExceededError,
    ConflictError,
    FailoverError,
    GatewayClosedError,
    GatewayError,
    ModelNotFoundError,
    NoUpstreamError,
    PermissionDeniedError,
    RateLimitExceededError,
    ServiceStoppingError,
    StoreError,
    SwitchpointError,
    TooManyInFlightError,
    UnknownModelError,
)
from switchpoint.gateway.admission import Admission, runs_no_more
from switchpoint.gateway.capabilities import needs_of
from switchpoint.gateway.failed_tries import FailedTryLog
from switchpoint.gateway.failover import (
    Attempt,
    FailoverResult,
    FailoverStream,
    RetryPolicy,
    Sequel,
    TimeoutsFor,
    UnderWay,
    billed_tries,
    call_with_failover,
    failed_models,
    outgrown_models,
)
from switchpoint.gateway.health import HealthTracker
from switchpoint.gateway.housekeeping import Housekeeping
from switchpoint.gateway.in_flight import InFlight, Slot, owner_of, share_of
from switchpoint.gateway.learning import GatewayLearning, MadeForACall
from switchpoint.gateway.live import Live, RouterState
from switchpoint.gateway.misconfig import no_upstream_message
from switchpoint.gateway.observing import Told
from switchpoint.gateway.open_streams import OpenStreams
from switchpoint.gateway.parsing import AUTO_MODEL
from switchpoint.gateway.planning import ChatCall, Plan, Planner, call_session
from switchpoint.gateway.providers.base import Timeouts
from switchpoint.gateway.results import CallInfo, ChatCompletion, ChatStream
from switchpoint.gateway.routing_door import Deciding
from switchpoint.gateway.sessions import PinDecision, SessionPinner, session_key
from switchpoint.gateway.settling import Settler, answer_use, worst_held
from switchpoint.gateway.via import check_received, forwarding
from switchpoint.governance.governor import Governor
from switchpoint.learning.events import check_tenant, tenant_key
from switchpoint.store import SQLiteStore

if TYPE_CHECKING:
    from switchpoint.gateway.providers import ProviderRegistry

log = logging.getLogger("switchpoint.gateway")

# What a chat request is refused with for who asked (the governance: a model its key may not
# use, a budget, a rate limit; or its tenant's share of the calls in flight): logged as
# refused (see ChatDoor._refused), unlike malformed input.
_REFUSALS = (PermissionDeniedError, BudgetExceededError, RateLimitExceededError,
             TooManyInFlightError)
#: Why a call left waiting for its answer on an event loop stopped, not closed, as the
#: gateway closes is logged as closed by the client (see :meth:`ChatDoor.close_stopped`).
CALL_LOOP_STOPPED = (
    "the gateway closed while the call's event loop was stopped, not running (a "
    "run_until_complete that returned, a thread that ended without closing its loop), before "
    "its answer came, so nothing could take the answer; charged what the upstream may have "
    "billed, as a call its caller cancels is: await a call to its end, or cancel it, before "
    "its loop stops")
#: Why a request left being routed, or planned with its call not begun, on an event loop
#: stopped, not closed, as the gateway closes is logged as closed by the client (see
#: :meth:`ChatDoor.close_stopped`).
UNBEGUN_LOOP_STOPPED = (
    "the gateway closed while the request's event loop was stopped, not running (a "
    "run_until_complete that returned, a thread that ended without closing its loop), before "
    "any model was called (it was being routed, or planned and its call not begun), so nothing "
    "could go on with it; nothing charged: await a call to its end, or cancel it, before its "
    "loop stops")
#: Why a request planned on an event loop that closed before it was executed is logged as
#: closed by the client (see :meth:`ChatDoor._forget_stale_plans`), and the error its plan
#: raises should it be executed elsewhere after all.
PLAN_LOOP_CLOSED = (
    "its event loop closed (an asyncio.run that returned) after the request was planned and "
    "before it was executed, so nothing could execute it there; its budget hold was released, "
    "nothing charged, and the plan calls no model now: plan and execute a request on one "
    "event loop, before that loop ends")
#: What a plan executed a second time (or while its first execution is under way) raises:
#: one plan is one request, called, charged and logged once.
PLAN_EXECUTED = (
    "this plan was executed already (one plan is one request: its model was called, charged "
    "and logged then, or is being called now), so it calls no model again: plan the request "
    "again (Gateway.plan) for another answer")


def plan_past_deadline(max_total_s: float) -> str:
    """Why a request planned and not executed before its deadline ran out is logged as closed
    by the client (see :meth:`ChatDoor._drop_planned`), and the error its plan raises should it
    be executed after all."""
    return (f"its deadline (gateway.max_total_s: {max_total_s:g}s) ran out after the request "
            "was planned and before it was executed; its budget hold was released, nothing "
            "charged, and the plan calls no model now: execute a plan as soon as it is made, "
            "or raise gateway.max_total_s")


def closed_while_stopped() -> GatewayClosedError:
    """What a request the gateway's closing settled on a loop that ran no more raises, should
    that loop run again."""
    return GatewayClosedError(
        "the gateway closed while this call's event loop was stopped, so the call was ended "
        "then (logged as closed by the client, its budget hold settled); start the gateway "
        "again (Gateway.start) and make the call again")


class ChatHost(Deciding, Protocol):
    """What the chat door reads of its gateway, each time it needs it: its parts (its health,
    retry policy and timeouts are made again as a reload changes them), its checks, and how
    it decides, as the routing door does (:class:`~switchpoint.gateway.routing_door.Deciding`)."""

    state: RouterState
    store: SQLiteStore | None
    governor: Governor
    learning: GatewayLearning
    planner: Planner
    pinner: SessionPinner
    in_flight: InFlight
    health: HealthTracker
    retry: RetryPolicy
    timeouts: Timeouts

    @property
    def providers(self) -> ProviderRegistry: ...

    def check_serves_chat(self) -> None: ...
    def _check_open(self) -> None: ...
    def _admitted_until_ended(self) -> Callable[[], None]: ...


class ChatDoor:
    """Plans, calls, settles and logs the chat requests of one gateway (``host``), and keeps
    what is in flight for a stop to end."""

    def __init__(self, host: ChatHost, *, told: Told, failed_tries: FailedTryLog,
                 admission: Admission, settler: Settler, streams: OpenStreams,
                 housekeeping: Housekeeping, upstream_connections: int) -> None:
        self._host = host
        self.state = host.state
        self.store = host.store
        self.governor = host.governor
        self.learning = host.learning
        self.planner = host.planner
        self.pinner = host.pinner
        self.in_flight = host.in_flight
        self._told = told
        self._failed_tries = failed_tries
        self._admission = admission
        self._settler = settler
        self._streams = streams
        self._housekeeping = housekeeping
        self._upstream_connections = upstream_connections
        # The tasks waiting on an upstream's answer (a plain one, or a stream's first chunk),
        # each with its request (as closing settles one whose loop runs no more), and those
        # of them :meth:`stop_in_flight` ended, with why.
        self._calls: dict[asyncio.Task[Any], _Call] = {}
        self._stopped_calls: dict[asyncio.Task[Any], str] = {}
        # The tasks planning a request (routing it, reserving its budget hold), each with what
        # it holds (as closing settles one whose loop runs no more), and the requests planned
        # whose call has not begun (by request id, with the live router each was planned on
        # and its loop, and the watch that drops it as its deadline runs out): a stop ends
        # those too, whatever stage they are in.
        self._planning: dict[asyncio.Task[Any], _Routing] = {}
        self._planned: dict[str, _Planned] = {}
        # (Held as a planned request is taken out of them, so its execution, on any thread,
        # and its ending, by its deadline, a closed loop or a stop, take it once between them.)
        self._taking = threading.Lock()
        # The loops :meth:`stop_in_flight` ended the requests of, with why: a request that
        # reaches the gateway there since is ended as it arrives.
        self._stopping: dict[asyncio.AbstractEventLoop, str] = {}

    def reopen(self) -> None:
        """The gateway opened again: it serves again."""
        self._stopping.clear()

    async def plan(self, call: ChatCall, *, started: float | None = None) -> tuple[Plan, Live]:
        """:meth:`Gateway.plan <switchpoint.gateway.engine.Gateway.plan>`."""
        self._host.check_serves_chat()
        started = time.perf_counter() if started is None else started
        self._host._check_open()
        check_received(call.via)
        leave = self._host._admitted_until_ended()
        try:
            live = self.state.live()
            self._host._check_log_room()
            loop = asyncio.get_running_loop()
            why = self._stopping.get(loop)
            if why is not None:  # the service stops: it takes on nothing more
                raise await self._stopped_unplanned(call, live, started, why)
            self._forget_stale_plans()
            share = share_of(live.settings, call.tenant, self._upstream_connections)
            try:
                slot = self.in_flight.take(owner_of(call.tenant, call.key_id), share)
            except TooManyInFlightError as exc:
                await self._refused(call, exc, live, started)
                raise
        except BaseException:
            leave()
            raise
        try:
            with self._admission.within():  # (its routing, on the live router, is part of it)
                plan, live = await self._plan_held(_Routing(call, live, started, slot, leave))
        except BaseException:
            if slot is not None:
                slot.release()
            leave()
            raise
        plan.slot = slot
        plan.leave = leave
        left = self._host.retry.max_total_s - (time.perf_counter() - plan.started)
        # (The watch holds the door weakly: it keeps no gateway alive until the deadline.)
        watch = loop.call_later(max(0.0, left), _deadline_passed, weakref.ref(self),
                                plan.request_id)
        self._planned[plan.request_id] = _Planned(plan, live, loop, watch)
        return plan, live

    async def execute(self, plan: Plan, live: Live) -> ChatCompletion | ChatStream:
        """:meth:`Gateway.execute <switchpoint.gateway.engine.Gateway.execute>`."""
        if self._take_planned(plan.request_id) is None and plan.stopped is None:
            # (Its place in flight and its mark are its first execution's, still under way
            # for a stream: left alone.)
            raise ConflictError(PLAN_EXECUTED)
        try:
            result = await self._execute(plan, live)
        except BaseException:
            plan.release_slot()
            plan.leave()
            raise
        if not isinstance(result, ChatStream):
            plan.release_slot()
            plan.leave()
        return result

    def stop_in_flight(self, why: str) -> int:
        """:meth:`Gateway.stop_in_flight
        <switchpoint.gateway.engine.Gateway.stop_in_flight>`."""
        loop = asyncio.get_running_loop()
        for gone in [on for on in self._stopping if on.is_closed()]:
            del self._stopping[gone]
        self._stopping[loop] = why
        ended = 0
        for task in [*self._calls, *self._planning]:
            if task.get_loop() is loop and not task.done() and task not in self._stopped_calls:
                self._stopped_calls[task] = why
                task.cancel()
                ended += 1
        self._forget_stale_plans()
        for request_id, on_loop in list(self._planned.items()):
            if on_loop.loop is not loop:
                continue
            error = ServiceStoppingError(why)
            held = self._take_planned(request_id, error)
            if held is None:
                continue
            entry = self._stop_planned(held.plan, held.live, error)
            self._streams.keep(loop.create_task(self._log_ended(entry, held.plan)))
            ended += 1
        return ended + self._streams.stop(loop, why)

    async def _plan_held(self, routing: _Routing) -> tuple[Plan, Live]:
        call, live, started = routing.call, routing.live, routing.started
        task = asyncio.current_task()
        if task is not None:
            self._planning[task] = routing
        try:
            try:
                plan, live = await self._plan(call, live, started)
            finally:
                routing.planned = True
                if task is not None:
                    self._planning.pop(task, None)
                ours = routing.ended.by_task()  # (else closing settled it: _settle_unbegun)
        except _REFUSALS as exc:
            if not ours:  # (logged and let go of by closing)
                raise closed_while_stopped() from None
            await self._refused(call, exc, live, started)
            raise
        except asyncio.CancelledError:
            # (A cancel lands only where planning waits, before any budget hold is taken.)
            if not ours:  # (logged and let go of by closing)
                assert task is not None
                if task.uncancel() > 0:
                    raise
                raise closed_while_stopped() from None
            why = self._stopped_calls.pop(task, None) if task is not None else None
            if why is None or task is None or task.uncancel() > 0:
                # its caller cancelled it (too), which is obeyed: a client that left, logged
                # once as closed by the client (its decision is forgotten; no model called,
                # nothing held), so the request log counts every request that came in
                await self._write(accounting.abandoned_unplanned(
                    call, live, started, self._peek_pin(call, live)), wait=False)
                raise
            raise await self._stopped_unplanned(call, live, started, why) from None
        if not ours:  # (closing settled it as its planning ended: its hold is let go of too)
            self._settler.release(plan)
            raise closed_while_stopped()
        return plan, live

    async def _refused(self, call: ChatCall, exc: GatewayError, live: Live,
                       started: float) -> None:
        """Log ``call``, refused for who asked (one of ``_REFUSALS``) before any model was
        called, as ``refused``: the error, the key and tenant, the pin it would have had
        (:meth:`_peek_pin`, unless planning got as far as the pin); nothing routed, charged
        or held. It waits for the entry's commit, as every request's end does, so a flood of
        refusals queues no more entries than the requests under way (each holds its
        connection until then), and the store's group commit writes them together."""
        pin = None if isinstance(exc.info, CallInfo) else self._peek_pin(call, live)
        await self._write(accounting.refused(call, exc, live, started, pin), wait=True)

    def _forget_stale_plans(self) -> None:
        """Drop the planned requests whose call never began and never can: their loop closed
        (:data:`PLAN_LOOP_CLOSED`), or their deadline ran out while their loop was not running
        (stopped, or busy), so its watch could not drop them then (:func:`plan_past_deadline`).
        Each is logged and let go of as :meth:`_drop_planned` says. Only a caller that plans
        and never executes leaves such a plan."""
        now = time.perf_counter()
        max_total_s = self._host.retry.max_total_s
        for request_id, held in list(self._planned.items()):
            if held.loop.is_closed():
                self._drop_planned(request_id, ConflictError(PLAN_LOOP_CLOSED), PLAN_LOOP_CLOSED)
            elif now - held.plan.started > max_total_s:
                why = plan_past_deadline(max_total_s)
                self._drop_planned(request_id, ConflictError(why), why)

    def deadline_passed(self, request_id: str) -> None:
        """The deadline of the planned request ``request_id`` ran out on its loop: when its
        call has not begun, it never will (see :meth:`_drop_planned`)."""
        why = plan_past_deadline(self._host.retry.max_total_s)
        self._drop_planned(request_id, ConflictError(why), why)

    def _drop_planned(self, request_id: str, error: GatewayError | GatewayClosedError,
                      why: str) -> None:
        """End the planned request ``request_id`` if its call has not begun (nothing, when it
        was executed or dropped already): it is logged once as closed by the client saying
        ``why``, its budget hold released (no model was called), its place in its tenant's
        calls in flight given back and the gateway's closing no longer waiting for it; executed
        after all, it raises ``error``, calling no model (see :meth:`_end_planned`)."""
        held = self._take_planned(request_id, error)
        if held is None:
            return
        plan = held.plan
        try:
            self._queue(self._end_planned(plan, error, lambda ledger: accounting.abandoned(
                plan, held.live, [], ledger, why=why)))
        except Exception as exc:  # (the request under way matters more)
            log.error("request %s, planned and never executed, was not settled cleanly: %s",
                      request_id, exc)
        finally:
            plan.release_slot()
            plan.leave()

    async def _stopped_unplanned(self, call: ChatCall, live: Live, started: float,
                                 why: str) -> ServiceStoppingError:
        """A request the service's stop ended before it was planned, logged: the error its
        caller gets."""
        error = ServiceStoppingError(why)
        entry = accounting.stopped_unplanned(call, error, live, started,
                                             self._peek_pin(call, live))
        await self._write(entry, wait=True)
        return error

    def _peek_pin(self, call: ChatCall, live: Live) -> PinDecision | None:
        """What the session's pin would have done for ``call``, read without changing it: a
        request refused before it was planned reports this (the pin stays as it was), a pin
        the refused named model could not follow being ``evicted_missing_model``. A pin
        store that cannot be read gives None (``fresh``): the refusal, not the store's
        error, is what the caller is told and what the log keeps."""
        try:
            pin = self.pinner.decide(call_session(call), live.router.catalog,
                                     needs_of(call.body), time.time())
        except SwitchpointError as exc:
            log.warning("the session pin of a refused request could not be read: %s", exc)
            return None
        if call.requested != AUTO_MODEL and pin.favoured_model is not None:
            # Refused before planning, a request that names its model was refused that model
            # (its key may not use it, a budget may not price it): whether or not the pin
            # pointed there, the pin could not be followed.
            return pin.not_followed()
        return pin

    async def _plan(self, call: ChatCall, live: Live, started: float) -> tuple[Plan, Live]:
        self._housekeeping.maintain()
        catalog = live.router.catalog
        settings = live.settings
        if settings.models is None:
            raise NoUpstreamError(no_upstream_message(settings))
        assignment = None
        if call.requested == AUTO_MODEL and call.decision is None and settings.experiments:
            scope = call.tenant if call.session_id else call.caller
            unit = session_key(call.session_id, call.body["messages"], scope=scope,
                               field=call.session_field)
            assignment = self._host._assign(live, call.tenant, unit or uuid.uuid4().hex)
            if assignment is not None and call.cost_weight is None:
                call = replace(call, cost_weight=assignment.config.cost_weight)
        policy = self._host._policy(settings, call.tenant, call.key_id)
        if policy is not None:
            self.governor.check_model(policy, call.requested, catalog)
            self.governor.check_priced(policy, call.requested, catalog)
            if policy.pool is not None:
                call = replace(call, pool=policy.pool)
            # (Beside a named model too: a name the caller may not use is refused alike.)
            for field_name, listed in call.candidate_lists:
                self.governor.check_candidates(policy, catalog, field_name, listed)
            if call.requested == AUTO_MODEL:
                # Narrowed to what the caller may use; refused early when its RPM window is
                # full (routing costs CPU; a named model is admitted right away anyway).
                call = replace(call, models=self.governor.narrow(
                                   policy, catalog, call.models, also=call.body.get("models"),
                                   candidates_field=call.models_field),
                               cost_weight=(call.cost_weight if call.cost_weight is not None
                                            else policy.cost_weight))
                self.governor.precheck(policy)

        # Whether the request uses tools matters only to a tenant's memory (it falls back).
        tools = (call.requested == AUTO_MODEL and live.learning is not None
                 and check_tenant(call.tenant) in live.learning.memory_tenants
                 and needs_of(call.body).tools)

        async def route(text: str, allowed: list[str],
                        cost_weight: float | None) -> RoutingDecision:
            async def base(text: str, allowed: list[str],
                           cost_weight: float | None) -> RoutingDecision:
                return await anyio.to_thread.run_sync(lambda: made.made(self._host._decide(
                    live, text, allowed, cost_weight, tenant=call.tenant, tools=tools,
                    assignment=assignment)))

            # (a decision made for a call cancelled before it is kept is forgotten again)
            with self.learning.made_for_a_call(live) as made:
                task = asyncio.current_task()
                routing = self._planning.get(task) if task is not None else None
                if routing is not None:  # (closing lets go of it, should its loop stop)
                    routing.made.append(made)
                if policy is None:
                    decision = await base(text, allowed, cost_weight)
                else:
                    decision = await self.governor.route(
                        base, text, allowed, cost_weight, policy=policy, catalog=catalog,
                        default_cost_weight=live.router.cost_weight)
                if routing is not None and not routing.ended.by_task():
                    raise closed_while_stopped()  # (settled by closing: nothing of it is kept)
                self.learning.keep_pending(live, decision)
                made.let_go(kept=decision)
            self._told.decision(decision)
            return decision

        try:
            plan = await self.planner.plan(call, catalog, route, started=started)
        except (UnknownModelError, ModelNotFoundError) as exc:
            raise self.governor.unknown_model(policy, catalog, exc, call.requested) from None
        if call.decision is not None and plan.decision is not None:
            # A decision made before the call (Router.route_and_execute, a router's own route)
            # is kept for feedback after a restart, as one routed here is.
            self.learning.keep_pending(live, call.decision)
        if policy is not None and Governor.active(settings):
            try:
                plan.ticket, kept = self.governor.admit(
                    settings, policy, plan.cards, plan.body, key_id=call.key_id,
                    tenant=call.tenant, notes=plan.notes,
                    require_first=call.requested != AUTO_MODEL)
            except GatewayError as exc:
                exc.info = accounting.info_of(plan)
                raise
            plan.admitted(kept)
        return plan, live

    def _take_planned(self, request_id: str,
                      ending: GatewayError | GatewayClosedError | None = None
                      ) -> _Planned | None:
        """Take the planned request ``request_id`` out of those whose call has not begun
        (None: taken already), to execute it, or to end it with ``ending``, which its plan
        raises from then on (set as it is taken: an execution under way elsewhere then either
        took it first or sees the error)."""
        with self._taking:
            held = self._planned.pop(request_id, None)
            if held is not None:
                held.watch.cancel()
                if ending is not None:
                    held.plan.stopped = ending
            return held

    async def _execute(self, plan: Plan, live: Live) -> ChatCompletion | ChatStream:
        if plan.stopped is not None:
            raise plan.stopped
        why = self._stopping.get(asyncio.get_running_loop())
        if why is not None:
            error = ServiceStoppingError(why)
            await self._write(self._stop_planned(plan, live, error), wait=True)
            raise error
        attempts: list[Attempt] = []
        under_way = UnderWay()
        ended = _EndedOnce()  # (its end: the task's, or that of a closing settling it)
        task = asyncio.current_task()
        if task is not None:
            self._calls[task] = _Call(plan, live, attempts, under_way, ended)
        try:
            if task is not None and task.cancelling():
                # Cancelled before its call began (its caller left as planning ended): the
                # cancel lands here, before any model is called, not in the first try.
                await asyncio.sleep(0)
            with forwarding(plan.call.via):  # (its upstream requests' Via lists the call's)
                result = await call_with_failover(
                    plan.body, plan.cards, self._host.providers, stream=plan.stream,  # type: ignore[call-overload]
                    policy=self._host.retry, timeouts=self._timeouts_of(plan, live),
                    health=self._host.health, attempts=attempts,
                    before_try=self._settler.before_try(plan),
                    on_failed_try=functools.partial(self._failed_tries, plan.request_id),
                    under_way=under_way)
        except FailoverError as exc:
            if not ended.by_task():  # (logged and charged by closing already)
                raise
            rehomed_to = plan.pin.pinned_model if plan.pin.rehoming else None
            plan.unanswered(exc.attempts)
            self.pinner.evict_on_failure(plan.session, failed=failed_models(exc.attempts),
                                         outgrown=outgrown_models(exc.attempts),
                                         rehomed_to=rehomed_to)
            entry = self._settler.entry(self._settler.settle(plan, None, None, None, exc.attempts),
                                functools.partial(accounting.failed, plan, exc, live))
            exc.info = entry.info
            await self._write(entry, wait=True)
            raise
        except asyncio.CancelledError:
            # The caller left (an HTTP client disconnected; or the service, stopping, ended
            # the call).
            if not ended.by_task():  # (logged and charged by closing already)
                raise
            stopped = self._stopped_calls.pop(task, None) if task is not None else None
            if stopped is not None and task is not None and task.uncancel() > 0:
                stopped = None  # cancelled by its caller too: that one is obeyed
            settlement = self._settle_left(plan, attempts)
            if stopped is not None:  # the caller still waits: it is told, once it is logged
                error = ServiceStoppingError(stopped)
                entry = self._settler.entry(settlement, lambda ledger: accounting.stopped(
                    plan, live, attempts, error, ledger))
                error.info = entry.info
                await self._write(entry, wait=True)
                raise error from None
            await self._write(self._settler.entry(settlement, lambda ledger: accounting.abandoned(
                plan, live, attempts, ledger)), wait=False)
            raise
        except BaseException:
            if not ended.by_task():  # (logged and charged by closing already)
                raise
            self._settler.release(plan, attempts)
            raise
        finally:
            if task is not None:
                self._calls.pop(task, None)
                self._stopped_calls.pop(task, None)
        if not ended.by_task():  # (logged and charged by closing already)
            if isinstance(result, FailoverStream):
                await result.aclose()
            raise closed_while_stopped()
        if isinstance(result, FailoverStream):
            try:
                self._answered(plan, live, result.model, attempts)
                return self._committed(plan, live, result)
            except BaseException:
                # An internal error before the stream reached its caller (the provider bills
                # what it was generating, which nothing read): charged its usage if known,
                # else its worst case, its hold closed now rather than when the
                # reservation expires, its upstream let go (and no feedback taken on it).
                try:
                    self._settler.release(plan, result.attempts, answered=result)
                finally:  # (let go of the upstream and the feedback whatever the charge did)
                    self.learning.stream_ended(plan.request_id)
                    try:
                        await result.aclose()
                    except Exception as exc:  # (the error that ended the request is told)
                        log.error("request %s: its upstream stream did not close cleanly: %s",
                                  plan.request_id, exc)
                raise
        assert isinstance(result, FailoverResult)
        try:
            self._answered(plan, live, result.model, attempts)
            self.pinner.record(plan.session, result.model, time.time(),
                               tenant_key(plan.call.tenant))
            use = answer_use(plan, result)
            settlement = self._settler.settle(plan, result.card, use.cost_usd, use.usage,
                                      result.attempts)
        except BaseException:
            # An internal error once the model answered (the provider bills the answer): the
            # answer is charged, as it would have been, rather than its hold left open until
            # the reservation expires (a settlement under way booked it: not charged twice).
            self._settler.release(plan, result.attempts, answered=result)
            raise
        entry = self._settler.entry(settlement,
                            lambda ledger: accounting.answered(plan, result, live, ledger, use))
        body = result.body
        if isinstance(body.get("usage"), dict):
            # null when the model has no prices: unknown, not free (nor what the upstream says)
            cost = entry.info.cost_usd
            body["usage"]["cost"] = None if cost is None else usd(cost)
        await self._write(entry, wait=True)
        return ChatCompletion(body, entry.info)

    def _settle_left(self, plan: Plan, attempts: list[Attempt]
                     ) -> accounting.Settlement | None:
        """Settle the request its caller left before an answer came (``attempts``, the try
        under way among them, as :data:`~switchpoint.gateway.failover.CLIENT_CLOSED`): a try
        under way upstream is charged as every try a provider may have billed is (see
        :meth:`Settler.settle`). Before any model was called, between two tries, or before a
        try's request was sent (connecting), nothing sent could be billed: with no such try
        before, the hold is released. The session's pin learns whether it held."""
        if not billed_tries(attempts) and plan.ticket is not None:
            plan.notes.append("cancelled with no try under way upstream (before any "
                              "model was called, between two tries, or before its request "
                              "was sent): its budget hold was released, nothing charged")
        settlement = self._settler.settle(plan, None, None, None, attempts)
        # A pinned model that had failed before the caller left did not hold the pin.
        rehomed_to = plan.pin.pinned_model if plan.pin.rehoming else None
        plan.unanswered(attempts)
        self.pinner.evict_on_failure(plan.session, failed=failed_models(attempts),
                                     outgrown=outgrown_models(attempts),
                                     rehomed_to=rehomed_to)
        return settlement

    def left_on_stopped_loops(self) -> bool:
        """Whether a call waiting for its answer, an open stream, or a request being routed
        or planned with its call not begun, is left on an event loop that runs no more (see
        :func:`~switchpoint.gateway.admission.runs_no_more`)."""
        return any(runs_no_more(on) for on in [
            *self._streams.open_streams.values(),
            *(t.get_loop() for t in [*self._calls, *self._planning]),
            *(held.loop for held in list(self._planned.values()))])

    async def close_stopped(self) -> None:
        """As the gateway closes: close the open streams of the running loop, and settle
        what is left on a loop that runs no more, which nothing would run again: its streams
        (see :meth:`OpenStreams.close_all`), and each call waiting there for its answer,
        logged once as closed by the client saying so (:data:`CALL_LOOP_STOPPED`), its budget
        hold settled as for a call its caller cancels (the try under way charged if its
        request may have been sent), its place in its tenant's calls in flight given back.
        Should that loop run again, the call raises the closed error, logging and charging
        nothing more. So is each request there not yet calling a model: being routed, or
        planned with its call not begun (see :meth:`_settle_unbegun`). The upstream
        connections of such loops are ended then (see
        :meth:`ClientPool.shut_down <switchpoint.gateway.providers.ClientPool.shut_down>`), so
        a provider stops generating what nobody will read."""
        left = [(task, call) for task, call in list(self._calls.items())
                if not task.done() and runs_no_more(task.get_loop())
                and call.ended.by_closing()]  # (else its loop ran again: see _EndedOnce)
        stopped = {on for on in [*self._streams.open_streams.values(),
                                 *(task.get_loop() for task, _ in left)] if runs_no_more(on)}
        await self._streams.close_all(stopped=True)
        await self._settle_unbegun()
        for task, call in left:
            self._calls.pop(task, None)
            plan = call.plan
            try:
                now = call.under_way.left
                attempts = [*call.attempts, *([now()] if now is not None else [])]
                settlement = self._settle_left(plan, attempts)
                entry = self._settler.entry(settlement, lambda ledger: accounting.abandoned(
                    plan, call.live, attempts, ledger, why=CALL_LOOP_STOPPED))  # noqa: B023
                await self._write(entry, wait=False)
            except Exception as exc:  # (settling the rest matters more)
                log.error("request %s, left on a stopped event loop, was not settled "
                          "cleanly: %s", plan.request_id, exc)
            finally:
                plan.release_slot()
                plan.leave()
        if stopped:
            self._host.providers.pool.shut_down(stopped)
        if left:
            log.warning("%d call(s) were left waiting for their answer on an event loop "
                        "stopped, not running, as the gateway closed; each is logged as closed "
                        "by the client and its budget hold settled now: await a call to its "
                        "end, or cancel it, before its loop stops", len(left))

    async def _settle_unbegun(self) -> None:
        """As the gateway closes: settle each request left on an event loop that runs no
        more before any model was called, which nothing would run again: one being routed (its
        routing cancelled, the decisions made for it forgotten) and one planned whose call has
        not begun (its budget hold released), each logged once as closed by the client saying
        so (:data:`UNBEGUN_LOOP_STOPPED`), its place in its tenant's calls in flight given
        back. Should that loop run again, it raises the closed error, calling no model and
        logging nothing more. (One planned on a loop that closed, or past its deadline, is
        settled as one the next request finds, saying so: see :meth:`_forget_stale_plans`.)"""
        self._forget_stale_plans()
        # (Each settled by whichever comes first, closing or its task, should its owner run
        # its loop again meanwhile: see _EndedOnce.)
        routing = [(task, held) for task, held in list(self._planning.items())
                   if not task.done() and runs_no_more(task.get_loop())
                   and held.ended.by_closing()]
        planned = [request_id for request_id, held in list(self._planned.items())
                   if runs_no_more(held.loop)]
        for task, held in routing:
            self._planning.pop(task, None)
            # (lands where it waits, should its loop run again, on that loop's own thread; a
            # loop closed never runs again)
            with contextlib.suppress(RuntimeError):
                task.get_loop().call_soon_threadsafe(_cancel_routing, task, held)
            try:
                for made in held.made:
                    made.let_go()
                entry = accounting.abandoned_unplanned(
                    held.call, held.live, held.started, self._peek_pin(held.call, held.live),
                    why=UNBEGUN_LOOP_STOPPED)
                await self._write(entry, wait=False)
            except Exception as exc:  # (settling the rest matters more)
                log.error("a request being routed on a stopped event loop was not settled "
                          "cleanly: %s", exc)
            finally:
                if held.slot is not None:
                    held.slot.release()
                held.leave()
        for request_id in planned:
            self._drop_planned(request_id, closed_while_stopped(), UNBEGUN_LOOP_STOPPED)
        if routing or planned:
            log.warning("%d request(s) were left being routed or planned on an event loop "
                        "stopped, not running, as the gateway closed, before any model was "
                        "called; each is logged as closed by the client, its budget hold "
                        "released and its place among its tenant's calls in flight given back "
                        "now: await a call to its end, or cancel it, before its loop stops",
                        len(routing) + len(planned))

    def _answered(self, plan: Plan, live: Live, model: str, attempts: Sequence[Attempt]
                  ) -> None:
        """``model`` answers the plan's request (a plain answer, or a stream committed to it):
        the session's pin learns whether it held, and feedback on the request's routing
        decision teaches ``model``, whichever of the candidates it is (failover, a soft pin's
        bonus or the health-aware order may have put another before the router's choice)."""
        plan.answered_by(model, attempts)
        self.learning.answered_by(live, plan.decision, model)

    def _committed(self, plan: Plan, live: Live, stream: FailoverStream) -> ChatStream:
        """A stream whose first content chunk is in hand; nothing has reached the client."""
        ttft_ms = (time.perf_counter() - plan.started) * 1e3
        self.pinner.record(plan.session, stream.model, time.time(),
                           tenant_key(plan.call.tenant))
        self.learning.stream_started(plan.request_id, plan.decision, plan.call.tenant,
                                     stream.model)
        info = accounting.info_of(plan)
        info.model = stream.model
        info.models_tried = stream.models_tried
        info.ttft_ms = round(ttft_ms, 3)

        opened: list[ChatStream] = []
        watches: list[asyncio.TimerHandle] = []

        async def finish(s: FailoverStream, wait: bool) -> None:
            plan.release_slot()
            for watch in watches:
                watch.cancel()
            for ended in opened:
                self._streams.discard(ended)
            if s.error is not None and not s.error.internal:
                # (The gateway's own failure is not the model's: the pin stays as it was.)
                self._failed_tries(plan.request_id, s.attempts[-1], Sequel())
                plan.broke_off(s.model)
                self.pinner.evict_on_failure(plan.session, failed={s.model})
            use = s.use(plan.needs.prompt_tokens, cap)
            settlement = self._settler.settle(plan, s.card, use.cost_usd, use.usage, s.attempts)
            entry = self._settler.entry(settlement, lambda ledger: accounting.streamed(
                plan, s, live, ttft_ms, ledger, use))
            _update(info, entry.info)
            written = None
            try:
                written = await self._write(entry, wait=wait)
            finally:
                # Feedback on the stream's id reads the store once its entry is there.
                if written is None:
                    self.learning.stream_ended(plan.request_id)
                else:
                    written.add_done_callback(
                        lambda _: self.learning.stream_ended(plan.request_id))
                plan.leave()  # (its entry queued: the store's closing writes it)

        cap = worst_held(plan, stream.model)
        chat_stream = ChatStream(stream, info, finish, price_usage=True, cost_cap=cap)
        opened.append(chat_stream)
        self._streams.add(chat_stream, stream.seconds_left(), watches)
        return chat_stream

    def _stop_planned(self, plan: Plan, live: Live, error: ServiceStoppingError
                      ) -> accounting.Entry:
        """End a planned request whose call has not begun, for a service that stops (see
        :meth:`_end_planned`), logged as ended by the stop (``error``)."""
        return self._end_planned(plan, error, lambda ledger: accounting.stopped(
            plan, live, [], error, ledger))

    def _end_planned(self, plan: Plan, error: GatewayError | GatewayClosedError,
                     build: Callable[[accounting.Settlement | None], accounting.Entry]
                     ) -> accounting.Entry:
        """End a planned request whose call has not begun: its budget hold released (no
        model was called), :attr:`Plan.stopped` set to ``error``, which its caller gets should
        it execute the plan (a service error carrying the log entry's info). Returns its log
        entry (``build``'s), to write."""
        plan.stopped = error  # (first: should settling fail, the plan still calls no model)
        plan.unanswered([])
        entry = self._settler.entry(self._settler.settle(plan, None, None, None), build)
        if isinstance(error, GatewayError):
            error.info = entry.info
        return entry

    async def _log_ended(self, entry: accounting.Entry, plan: Plan) -> None:
        try:
            await self._write(entry, wait=True)
        finally:  # (ended and logged: closing need not wait for a call that never begins)
            plan.leave()

    def _timeouts_of(self, plan: Plan, live: Live) -> TimeoutsFor:
        """The timeouts of the plan's tries: a model registered at run time whose host may not
        be a link-local or metadata one (:attr:`Live.address_checked
        <switchpoint.gateway.live.Live.address_checked>`) has its connections' addresses
        checked as they are made; the others' as they are (a plan of none of them: nothing
        more is done)."""
        checked = live.address_checked
        plain = self._host.timeouts
        if not checked or not any(card.name in checked for card in plan.cards):
            return plain
        strict = replace(plain, metadata_hosts=False, nat64_prefixes=live.nat64_networks)
        return lambda card: strict if card.name in checked else plain

    async def _write(self, entry: accounting.Entry, *, wait: bool
                     ) -> Future[Any] | None:
        """Log ``entry`` (waiting for its commit when ``wait``); the commit's future, or None
        when nothing is left to wait for (no store, written, or refused)."""
        done = self._queue(entry)
        if not wait or done is None:
            return done
        try:
            await asyncio.wrap_future(done)
        except StoreError as exc:
            self._not_logged(entry, exc)
        return None

    def _queue(self, entry: accounting.Entry) -> Future[Any] | None:
        """Queue ``entry`` for the log: the commit's future, or None (no store, or refused)."""
        self._told.request(entry.request)
        if self.store is None:
            return None
        try:
            # One commit for the entry: every record but the last waits for the last one.
            *first, last = entry.records
            for record in first:
                self.store.append_lazy(record)
            return self.store.append(last, keep_trying=True)
        except StoreError as exc:
            self._not_logged(entry, exc)
            return None

    def _not_logged(self, entry: accounting.Entry, exc: StoreError) -> None:
        self._told.store_error()
        log.error("request %s not logged: %s", entry.request.id, exc)


class _EndedOnce:
    """Who ends a request that a closing may settle as its event loop is seen stopped: its
    task, going on with it (its owner ran the loop again, on a thread of its own, as closing
    looked; or its coroutine is closed as it is collected), or the closing (the task then
    logs and charges nothing more). Whichever asks first takes it; the other lets it be."""

    def __init__(self) -> None:
        self._by: str | None = None
        self._lock = threading.Lock()

    def by_task(self) -> bool:
        """The task goes on with its request: whether it may, no closing having taken it."""
        return self._take("task")

    def by_closing(self) -> bool:
        """A closing settles the request: whether it may, its task not having gone on."""
        return self._take("closing")

    def _take(self, who: str) -> bool:
        with self._lock:
            if self._by is None:
                self._by = who
            return self._by == who


@dataclass(slots=True)
class _Routing:
    """A request being planned: its call, the live router and start it was planned with, its
    place among its tenant's calls in flight (None: counted against no one), what counts it
    out of the requests inside the gateway, what its routing made (forgotten unless kept),
    whether its planning has ended, and who ends it (see :class:`_EndedOnce`)."""

    call: ChatCall
    live: Live
    started: float
    slot: Slot | None
    leave: Callable[[], None]
    made: list[MadeForACall] = field(default_factory=list)
    planned: bool = False
    ended: _EndedOnce = field(default_factory=_EndedOnce)


def _cancel_routing(task: asyncio.Task[Any], routing: _Routing) -> None:
    """Cancel ``task``, which closing settled as it was being planned, on its loop's own
    thread, should that loop run again: unless its planning ended meanwhile (it then raises
    the closed error itself), so a cancel never lands in what the task does next."""
    if not routing.planned:
        task.cancel()


class _Planned(NamedTuple):
    """A request planned whose call has not begun: its plan, the live router and event loop
    it was planned on, and the watch that drops it as its deadline runs out."""

    plan: Plan
    live: Live
    loop: asyncio.AbstractEventLoop
    watch: asyncio.TimerHandle


class _Call(NamedTuple):
    """A request waiting for its upstream's answer: its plan, its live router, its tries so
    far, the one under way, and who ends it."""

    plan: Plan
    live: Live
    attempts: list[Attempt]
    under_way: UnderWay
    ended: _EndedOnce


def _deadline_passed(door: weakref.ref[ChatDoor], request_id: str) -> None:
    """:meth:`ChatDoor.deadline_passed`, unless the door is gone."""
    held = door()
    if held is not None:
        held.deadline_passed(request_id)


def _update(info: CallInfo, final: CallInfo) -> None:
    """Copy what a stream's end taught into the info its caller holds."""
    for name in ("upstream_model", "reasoning", "attempts", "models_tried", "latency_ms",
                 "prompt_tokens", "completion_tokens", "cost_usd", "charged_usd", "pin_state",
                 "pin"):
        setattr(info, name, getattr(final, name))
