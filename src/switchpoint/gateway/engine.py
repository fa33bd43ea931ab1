"""The gateway engine: route, call, fail over, pin and log, behind two doors.

::

    ChatCall ─► Planner.plan ─► call_with_failover ─► ChatCompletion / ChatStream
                (candidates,     (retries, Retry-After,   (the OpenAI body + CallInfo;
                 pins, health)    escalation, circuit       logged before it is returned,
                                  breakers, deadline)       a stream as it ends)

:class:`Gateway` owns what lives as long as the service: the live router (loaded and swapped by
:class:`~switchpoint.gateway.live.RouterState`), the upstream client pool and provider
adapters, the health tracker, the session pins and the request log. The HTTP server
(:mod:`switchpoint.server`) is one door: it turns requests into :class:`ChatCall` values and
renders what comes back. Python code is the other::

    from switchpoint import Gateway

    with Gateway.from_config("switchpoint.yaml") as gateway:
        reply = gateway.complete([{"role": "user", "content": "Hi"}])    # model="auto"
        print(reply.choices[0].message.content, reply.switchpoint.model)
        for chunk in gateway.stream([{"role": "user", "content": "Hi"}]):
            ...

Both doors take the same path through the same objects, so failover, health, pinning and the
log behave identically. Learning from outcomes (:mod:`switchpoint.gateway.learning`) is shared
too: :meth:`Gateway.report_outcome` / ``POST /v1/feedback`` teach the live router (and the
tenant's memory) and append to the feedback log every new router replays;
:meth:`Gateway.compare` / :meth:`Gateway.score` collect preferences; experiments and
exploration shape ``auto``. Keys, tenants, budgets, rate limits, SLAs and escalation are the
:class:`~switchpoint.governance.governor.Governor`'s: the HTTP door resolves a bearer key to
its principal; the in-process door takes ``key=`` or ``tenant=``. Async code uses
:meth:`Gateway.acomplete` / :meth:`Gateway.astream`; the sync methods run them on a private
event loop thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    NoReturn,
    SupportsIndex,
    TypeVar,
)

import numpy as np

from switchpoint._args import FUNCTION, PATH, expect, passes_on
from switchpoint._messages import quoted_path
from switchpoint._process import check_process, in_other_process
from switchpoint._redact import remember
from switchpoint.config import (
    MAPPING_CONFIG,
    Settings,
    check_catalog,
    load_settings,
)
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    ChatNotServedError,
    GatewayClosedError,
    InvalidInputError,
    StorageUnavailableError,
)
from switchpoint.gateway.ab_tests import ABTest, RuntimeExperiments
from switchpoint.gateway.admission import (
    Admission,
    one_request,
    one_sync_request,
)
from switchpoint.gateway.analytics_views import AnalyticsViews
from switchpoint.gateway.applied_settings import health_config as health_config
from switchpoint.gateway.applied_settings import retry_policy as retry_policy
from switchpoint.gateway.applied_settings import timeouts_of as timeouts_of
from switchpoint.gateway.caller_views import CallerViews
from switchpoint.gateway.chat_door import ChatDoor
from switchpoint.gateway.closing import Closing
from switchpoint.gateway.experiment_door import ExperimentDoor
from switchpoint.gateway.failed_tries import FailedTryLog
from switchpoint.gateway.feedback_rules import FeedbackResult
from switchpoint.gateway.health import HealthTracker
from switchpoint.gateway.health_views import HEALTH_EVENTS as HEALTH_EVENTS
from switchpoint.gateway.health_views import MAX_EVENT_LATENCY_MS as MAX_EVENT_LATENCY_MS
from switchpoint.gateway.health_views import HealthViews
from switchpoint.gateway.housekeeping import PRUNE_INTERVAL_S as PRUNE_INTERVAL_S
from switchpoint.gateway.housekeeping import PRUNE_MAX_ROWS as PRUNE_MAX_ROWS
from switchpoint.gateway.housekeeping import CaughtUp, Housekeeping
from switchpoint.gateway.in_flight import InFlight
from switchpoint.gateway.learning import GatewayLearning
from switchpoint.gateway.learning_door import LearningDoor
from switchpoint.gateway.library_door import LibraryDoor
from switchpoint.gateway.live import Live, Loader, RouterState
from switchpoint.gateway.misconfig import misconfigurations as misconfigurations
from switchpoint.gateway.observing import Observer, Told
from switchpoint.gateway.open_streams import LOOP_CLOSED as LOOP_CLOSED
from switchpoint.gateway.open_streams import LOOP_STOPPED as LOOP_STOPPED
from switchpoint.gateway.open_streams import OpenStreams
from switchpoint.gateway.owner import DataDirLock
from switchpoint.gateway.parsing import AUTO_MODEL
from switchpoint.gateway.planning import ChatCall, Plan, Planner
from switchpoint.gateway.providers.base import Provider
from switchpoint.gateway.registered_models import RuntimeModels
from switchpoint.gateway.reload_door import ReloadDoor
from switchpoint.gateway.results import ChatCompletion, ChatStream
from switchpoint.gateway.routing_door import RoutingDoor
from switchpoint.gateway.sessions import (
    MemoryPinStore,
    SessionPinner,
    SQLitePinStore,
)
from switchpoint.gateway.settling import Settler
from switchpoint.gateway.state_files import PINS_FILENAME as PINS_FILENAME
from switchpoint.gateway.state_files import StateFiles
from switchpoint.gateway.sync_bridge import AT_EXIT as AT_EXIT
from switchpoint.gateway.sync_bridge import CLOSED_DURING_CALL as CLOSED_DURING_CALL
from switchpoint.gateway.sync_bridge import INTERRUPTED_SETTLE_S as INTERRUPTED_SETTLE_S
from switchpoint.gateway.sync_bridge import LOOP_DRAIN_S as LOOP_DRAIN_S
from switchpoint.gateway.sync_bridge import LoopThread, SyncChatStream
from switchpoint.governance.governor import Governor, Policy, Principal
from switchpoint.governance.reports import Reports
from switchpoint.learning.events import (
    check_quality,
)
from switchpoint.router import Router
from switchpoint.store import SQLiteStore
from switchpoint.store.spill import spill_reserve
from switchpoint.store.sqlite import REFUSING_S

if TYPE_CHECKING:
    from switchpoint.gateway.providers import ClientPool, ProviderRegistry

log = logging.getLogger("switchpoint.gateway")

T = TypeVar("T")


class Gateway:
    """The gateway engine. Build it with :meth:`from_config` (or from :class:`Settings`), then
    :meth:`start` it (``from_config`` does) and :meth:`close` it when done (``with`` does).

    ``loader`` builds routers from settings (default: the configured or bundled weights);
    ``store`` is the request and decision log (default: SQLite in ``data_dir``; ``False``
    keeps no log); ``env`` is where providers read API keys (default: the process environment,
    at each call); ``providers`` maps provider or model names to adapters of your own;
    ``observer`` is told every logged request and routing decision; ``serves_chat=False``
    (a tool that only learns or reports, such as an offline ``switchpoint feedback``) skips
    the warnings about what would make chat requests fail or route them worse (an experiment
    arm's weights that do not profile catalog models), takes no lock on ``data_dir``,
    opens a store whose log tables are damaged (only a read of them names the damage), and
    calls no model (see :meth:`check_serves_chat`). ``reads_only=True`` (a tool that only
    reads ``data_dir``, such as ``switchpoint learn``; it serves no chat either) writes
    nothing there: the store is read through read-only connections, never opened for
    writing (which upgrades an older file's schema, takes up what a stop left beside it and
    rewrites the file's header), no session pins, key store or budget rows are opened, and no
    learning checkpoint is written, so the files are left as they were found, and a
    ``data_dir`` with no store is an error rather than made; what it would have to keep
    (feedback, scores, an experiment) is refused, a :class:`~switchpoint.errors.StoreError`
    naming ``reads_only``. ``replays_log=False`` (a tool that only calls the models it names,
    such as ``switchpoint label``, or only records an outcome, such as an offline
    ``switchpoint feedback``) takes up none of the feedback log as its router loads, which
    reads the learning checkpoint and replays every outcome after it (seconds and hundreds of
    MB at 100,000 outcomes), and writes no checkpoint; feedback on a decision made before it
    started first takes up that decision's own outcomes from the log, so it logs and answers
    what a gateway that replayed the log would (once retention pruned rows, the first such
    feedback takes up the learning checkpoint and the rows after it, as a start does), while
    its router routes as the weights alone do.

    A gateway that serves chat enforces budgets and rate limits from its own memory, so
    :meth:`open` takes ``data_dir``'s lock (see :mod:`switchpoint.gateway.owner`) and
    :meth:`close` releases it: while a service (or another such gateway, in this process or
    another) serves from the same ``data_dir``, opening raises
    :class:`~switchpoint.errors.DataDirInUseError` naming its pid.

    Its public API is its methods, the :attr:`router`, :attr:`reports` and :attr:`settings`
    properties and :meth:`admitted`. Each call that routes, calls a model, learns or reads
    its logs, through its methods or through the router and the reports it hands out, is a
    request inside the gateway (closing waits for it, and refuses it once begun); its
    methods check their caller as its HTTP door does (a key, or a trusted tenant, where they
    take one), while the router routes and learns as any :class:`~switchpoint.router.Router`
    does, bound by no tenant's models, budgets or rates (its ``tenant=`` only picks what that
    tenant's outcomes taught). Its other attributes (``state``, ``store``, ``learning``,
    ``governor``, ``models_registered``, ``ab_tests``, ``health``, ``pinner``, ``planner``,
    ``pool``, ``providers``, ``in_flight``, ``timeouts``, ``retry``, ``observer``) are the
    engine's parts, which the server's routes and the tests reach; they are no API and may
    change, and a call made through one skips what the methods do (closing's wait and refusal,
    a caller's checks, the request's log). :meth:`reload` and :meth:`swap_policy` re-read the
    config and swap the routing policy, answering as ``POST /v1/router/reload`` and ``POST
    /v1/router/policy/{name}`` answer (those routes, and ``SIGHUP`` to ``switchpoint serve``,
    call them); :meth:`register_model` and :meth:`unregister_model` add a model to the
    catalog at run time and take it out, as ``POST /v1/router/models`` and ``DELETE
    /v1/router/models/{name}`` do.
    """

    def __init__(self, settings: Settings, *, loader: Loader | None = None,
                 store: SQLiteStore | bool | None = None, env: Mapping[str, str] | None = None,
                 providers: Mapping[str, Provider] | None = None,
                 observer: Observer | None = None, serves_chat: bool = True,
                 reads_only: bool = False, replays_log: bool = True) -> None:
        expect("settings", settings, Settings, "Settings (Gateway.from_config takes a config "
                                               "file's path or a mapping)")
        expect("loader", loader, FUNCTION, "a function (settings, weights_path) -> Router",
               optional=True)
        expect("store", store, (SQLiteStore, bool), "a SQLiteStore, True or False",
               optional=True)
        expect("env", env, Mapping, "a mapping of environment variable names to values",
               optional=True)
        expect("providers", providers, Mapping,
               "a mapping of provider or model names to adapters", optional=True)
        expect("observer", observer, Observer,
               "an Observer (on_request, on_decision, on_store_error)", optional=True)
        expect("serves_chat", serves_chat, bool, "True or False")
        expect("reads_only", reads_only, bool, "True or False")
        expect("replays_log", replays_log, bool, "True or False")
        serves_chat = serves_chat and not reads_only
        # (Settings built in Python, not read by load_settings, keep the catalog's rules too)
        check_catalog(settings)
        g = settings.gateway
        self.state = RouterState(settings, loader)
        if store is None or store is True:
            limit = settings.store.spill_limit
            store = SQLiteStore(settings.db_path, synchronous=settings.store.synchronous,
                                spill_limit=limit, logs=serves_chat,
                                spill_reserve=spill_reserve(
                                    limit, settings.server.max_connections))
        self.store: SQLiteStore | None = store or None
        self.observer = observer
        self._told = Told(observer)  # (its callbacks, each error logged and kept from the work)
        # Each tenant's model calls in flight (the pool's size is kept until a restart).
        self.in_flight = InFlight()
        self._upstream_connections = g.max_upstream_connections
        #: The name this gateway gives itself in the Via header of each request it sends
        #: upstream, the same across reloads: a request naming it came from this gateway (a
        #: model whose base_url points back at the service), which the service refuses
        #: rather than call itself again and again.
        self.via_name = f"switchpoint-{uuid.uuid4().hex[:16]}"
        self._env = env
        self._overrides = providers
        self._providers: ProviderRegistry | None = None
        self._providers_lock = threading.Lock()
        if serves_chat:
            self._providers = self._new_providers()
        self._warned: set[str] = set()
        self._serves_chat = serves_chat
        self._reads_only = reads_only
        self.health = HealthTracker(config=health_config(g))
        self.pinner = SessionPinner(g.pin_hard_window_s, g.pin_soft_window_s, g.pin_soft_bonus,
                                    store=MemoryPinStore(g.pin_max_sessions))
        self.planner = Planner(self.health, self.pinner, prefer_healthy=g.prefer_healthy)
        self.timeouts = timeouts_of(g)
        self.retry = retry_policy(g)
        self._applied = g
        self._pins: SQLitePinStore | None = None
        self._owner: DataDirLock | None = None
        self._opened = False
        self._closed = False  # closed after it was opened: refuses work until opened again
        self._pid: int | None = None  # the process that opened it (see switchpoint._process)
        # Streams handed out and not yet ended: closing the gateway closes them first.
        self._streams = OpenStreams(lambda: self.retry.max_total_s)
        self._sync: LoopThread | None = None
        # Held to make the synchronous methods' loop: two threads' first calls make one.
        self._sync_lock = threading.Lock()
        # The requests inside it: closing refuses new ones and waits for these to end.
        self._admission = Admission()
        # Its failed tries' lines in the log, held to a few a minute (in process too).
        self._failed_tries = FailedTryLog()
        # (Looked up through a weak reference: the governor's flush thread, and a housekeeping
        # run's, must not keep a gateway its caller dropped alive, or it could not be closed as
        # it is collected.)
        me = weakref.ref(self)
        self.governor = Governor(settings, store=self.store,
                                 health=lambda: getattr(me(), "health", None),
                                 settings_of=lambda: getattr(me(), "settings", settings))
        # (a gateway that takes up no log routes no traffic either, as label and feedback open
        # it: an experiment arm's weights are none of its concern)
        self.learning = GatewayLearning(self.state, self.store, checkpoints=not reads_only,
                                        replays=replays_log,
                                        warns=serves_chat and replays_log)
        # (models first: a run-time experiment's arm may name a registered model)
        self.models_registered = RuntimeModels(self.state, self.store, self.learning,
                                               lambda: self.governor.keys)
        self.ab_tests = RuntimeExperiments(self.state, self.store, self.learning,
                                           self.models_registered.held)
        # What each chat request's budget holds and rate windows are settled at.
        self._settler = Settler(self.governor)
        # Pins purged, data_dir's lock checked and the logs pruned, now and then.
        self._housekeeping = Housekeeping(lambda: getattr(me(), "settings", settings),
                                          self.store, self.pinner, lambda: _caught_up(me),
                                          self.governor, lambda: getattr(me(), "_owner", None))
        # Experiments' reports and promotions.
        self._experiments = ExperimentDoor(self)
        # Its state in data_dir, opened and closed.
        self._state_files = StateFiles(self)
        # Its closing: what is under way waited for or settled, then what it holds let go of.
        self._closing = Closing(self)
        # Each model's health, shown and told.
        self._health_views = HealthViews(self)
        # The reports, stats and analytics of the logs.
        self._analytics = AnalyticsViews(self)
        # The routing door: route, rank by health and log each routing request.
        self._routing = RoutingDoor(self, told=self._told, housekeeping=self._housekeeping)
        # What a caller may see of the models and of what was learned.
        self._views = CallerViews(self.state, self.governor, self.learning, self._policy,
                                  lambda: self.reports)
        # Learning from outcomes: feedback, comparisons and their scores.
        self._learning_door = LearningDoor(self, self._views)
        # The in-process chat door: a chat request made of a program's arguments.
        self._library = LibraryDoor(self)
        # The chat door's work: plan, call, settle and log each chat request.
        self._chat = ChatDoor(self, told=self._told, failed_tries=self._failed_tries,
                              admission=self._admission, settler=self._settler,
                              streams=self._streams, housekeeping=self._housekeeping,
                              upstream_connections=self._upstream_connections)
        # The reloads and policy swaps, and what a router going live rebuilds.
        self._reloads = ReloadDoor(self)
        remember(settings.admin_token)
        self.state.on_swap(self._take_up)

    @classmethod
    @passes_on(__init__)
    def from_config(cls, config: str | Path | Mapping[str, Any] | Settings | None = None, *,
                    start: bool = True, **kwargs: Any) -> Gateway:
        """A gateway from a YAML config file, a mapping of the same keys, or :class:`Settings`
        (``None``: the defaults and ``SWITCHPOINT_*`` variables). With ``start`` (the default)
        its router is loaded before this returns. ``kwargs`` go to the constructor."""
        expect("config", config, (*PATH, Mapping, Settings),
               "a config file's path, a mapping of its keys or Settings", optional=True)
        expect("start", start, bool, "True or False")
        if isinstance(config, Settings):
            settings = config
        elif isinstance(config, Mapping):
            settings = load_settings(overrides=dict(config), overrides_from=MAPPING_CONFIG)
        else:
            settings = load_settings(config, path_arg="config")
        gateway = cls(settings, **kwargs)
        if start:
            gateway.start()
        return gateway

    # Lifecycle ---------------------------------------------------------------------------------

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # (pickle and copy.deepcopy alike: a copy would share, or lose, what is this process's)
        raise TypeError("cannot pickle or copy a Gateway: its event loop, store, data_dir lock "
                        "and upstream connections stay in the process that opened it; make one "
                        "in each process (Gateway.from_config), or pass its results, which "
                        "pickle")

    @property
    def settings(self) -> Settings:
        """The settings in force: the live router's (those of the last reload), or those the
        gateway was built with while its first router loads."""
        live = self.state.peek()
        return live.settings if live is not None else self.state.settings

    def open(self) -> None:
        """Open the request log and the session pins (in ``data_dir``), first taking its lock
        when this gateway serves chat (see the class). Idempotent."""
        self._state_files.open()

    def start(self, *, background: bool = False) -> None:
        """Open the state and load the router: now (the default), or on a background thread
        (the server's way: its port opens at once and ``/health`` says when it is ready).
        What would make chat requests fail (no models, an unset key variable) is logged as a
        warning, once."""
        self.open()
        self._warn_misconfigured(self.state.settings)
        if background:
            self.state.start()
            return
        try:
            self.state.load()
        except BaseException:  # nothing to serve: let go of data_dir (its lock) and the log
            self.close()
            raise

    async def aclose(self) -> None:
        """Close the streams still open (each is logged as closed by the client), the upstream
        connections, the pins and the log. A request that comes once closing has begun is
        refused (the closed error); one already under way is waited for, up to its deadline
        (``gateway.max_total_s``), so its log entry is written and what it taught is kept
        before the state closes; a read (a report, the stats, the learning status) is waited
        for so too. A synchronous call another thread makes is waited for as any request
        (counted in on its thread as it passes its open check, before the gateway's own loop
        takes it up); one still under way past that bound is given :data:`LOOP_DRAIN_S`, then
        cancelled (see :meth:`close`). A request on an event loop that is stopped, not running,
        is not waited for but settled, logged once as closed by the client: one still routing
        or planned, its call not begun, has its budget hold released and its decision
        forgotten; a call waiting for its answer has its hold settled as for a call cancelled
        (see docs/library.md, "Closing"). In a child of ``os.fork()`` it does nothing: what it
        would close is the parent's."""
        await self._closing.aclose()

    def close(self) -> None:
        """:meth:`aclose` from synchronous code. A request under way, a synchronous call
        another thread waits for or one on another event loop, is waited for as :meth:`aclose`
        waits (not one on the loop of the thread calling this, which cannot go on while it
        waits); a synchronous call still under way past that bound is given
        :data:`LOOP_DRAIN_S` to end, then cancelled. A request left routing, planned or
        waiting for its answer on an event loop that stopped is settled as :meth:`aclose`
        settles it (see docs/library.md, "Closing")."""
        self._closing.close()

    @property
    def providers(self) -> ProviderRegistry:
        """The adapters that call each model (the ``providers`` given first), over one pool of
        upstream connections: made with the gateway when it serves chat, else on first use,
        so one that calls no model (as switchpoint feedback and learn open one) never loads
        the HTTP client."""
        if self._providers is None:
            with self._providers_lock:
                if self._providers is None:
                    self._providers = self._new_providers()
        return self._providers

    @property
    def pool(self) -> ClientPool:
        """The pool of upstream connections the adapters share (see :attr:`providers`)."""
        return self.providers.pool

    def _new_providers(self) -> ProviderRegistry:
        from switchpoint.gateway.providers import ClientPool, ProviderRegistry
        from switchpoint.gateway.via import via

        pool = ClientPool(max_connections=self._upstream_connections,
                          max_keepalive_connections=self._upstream_connections,
                          via=via(self.via_name))
        return ProviderRegistry(pool, env=self._env, overrides=self._overrides)

    def _drain_s(self) -> float:
        """How long closing waits for the requests under way: a request's deadline."""
        return self.retry.max_total_s + LOOP_DRAIN_S

    def _closed_error(self) -> GatewayClosedError:
        return GatewayClosedError(f"{quoted_path(self.state.settings.data_dir)}: the gateway is "
                          "closed, so it neither routes, calls models nor learns; start it "
                          "again (Gateway.start) or make a new one")

    def _check_open(self) -> None:
        """Refuse work once :meth:`close` has run: its log, pins and learning state are shut,
        so nothing it did could be kept; and in a child of ``os.fork()``. (A request refused
        as closing begins is refused by :meth:`admitted`.)"""
        check_process(self._pid, "this Gateway")
        if self._closed:
            raise self._closed_error()

    def _admitted_until_ended(self) -> Callable[[], None]:
        """A chat request inside the gateway from its planning until its answer is returned,
        its stream has ended or its call failed, each once its log entry is queued (see
        :attr:`Plan.leave`): what counts it out."""
        check_process(self._pid, "this Gateway")
        return self._admission.enter(self._closed_error)

    def admitted(self) -> AbstractContextManager[None]:
        """The block as one request inside the gateway (see
        :mod:`switchpoint.gateway.admission`): refused with the closed error, as
        :meth:`_check_open` refuses, once closing has begun; closing waits for it to end. Its
        calls to the gateway are parts of it, let in while it is inside. The gateway's own
        methods count themselves in; a caller that reaches its state another way (the
        server's routes: the key check, the keys, the request log) counts itself in so."""
        check_process(self._pid, "this Gateway")
        return self._admission.admitted(self._closed_error)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        """A gateway dropped while open (never closed) is closed as it is collected, with a
        ``ResourceWarning`` as an unclosed file gives: its streams logged, its budget holds
        settled, its learning checkpointed, its threads stopped and ``data_dir``'s lock
        released. The closing runs on a thread of its own, since a collection may come on any
        thread, amid anything (the gateway's parts refer back to it, so a ``weakref.finalize``
        holding them would keep it alive for good)."""
        if (not getattr(self, "_opened", False) or sys.is_finalizing()
                or in_other_process(self._pid)):
            return
        threading.Thread(target=self._close_dropped, name="switchpoint-gateway-close").start()
        warnings.warn(f"a Gateway serving {quoted_path(self.state.settings.data_dir)} was "
                      "dropped without being closed, so it is being closed now; close a "
                      "gateway when done with it (with Gateway.from_config(...) as gateway:, "
                      "or gateway.close())", ResourceWarning, source=self, stacklevel=2)

    def _close_dropped(self) -> None:
        try:
            self.close()
        except Exception as exc:  # (nobody is left to tell but the log)
            log.error("a Gateway dropped without being closed did not close cleanly: %s", exc)

    def _take_up(self, live: Live) -> None:
        """A router went live: its route_and_execute calls models through us, and what
        derives from its gateway settings is rebuilt, once."""
        live.router.gateway = self
        self._reloads.take_up(live)

    @property
    def router(self) -> Router:
        """The live :class:`~switchpoint.router.Router` (raises while it is still loading)."""
        return self.state.live().router

    # The routing door --------------------------------------------------------------------------

    @one_request
    async def aroute(self, prompt: str | None = None,
                     available_models: Sequence[str] | None = None,
                     cost_weight: float | None = None, *,
                     embedding: Sequence[float] | np.ndarray | None = None,
                     key: str | None = None, tenant: str | None = None,
                     principal: Principal | None = None, measured: bool = False,
                     prefer_healthy: bool = False, auto_scale: bool = False,
                     estimate_tokens: Sequence[int] | None = None,
                     ab_test: str | ABTest | None = None) -> RoutingDecision:
        """Route one prompt (or embedding) with the live router and log the decision; the
        decision is returned once its log entry is committed. ``key`` (a client key) or
        ``tenant`` routes as that caller: its allowed models, λ, budget curve, SLA and
        escalation apply (``principal``: the HTTP door's already authenticated caller).
        A request whose body (as ``POST /v1/route`` would receive it) is over
        ``max_request_bytes`` is refused as over HTTP (``measured``: the HTTP door, which
        counted its body's bytes as it read them).

        The decision is the router's (after governance) unless these ask otherwise:

        - ``prefer_healthy``: the decision names the model a chat request for ``auto`` would
          be sent to first, its candidates ranked as ``auto`` ranks them with the gateway's
          health (degraded and down models after healthy ones; see ``GET /v1/router/health``),
          and its ``fallback_models`` in that order;
        - ``auto_scale``: models a call would skip now (an open circuit, a ``Retry-After``
          running) move behind the others, so the decision names the first model that can be
          called. The chat door always fails over down its candidates (retries, then the
          next); a budget that a model does not fit is checked when the request is sent, not
          here;
        - ``estimate_tokens``: ``(input_tokens, output_tokens)`` the request is priced at
          with the catalog's prices (see :meth:`Router.route
          <switchpoint.router.Router.route>`);
        - ``ab_test``: the experiment this request is routed in: the name of one of the
          config (``experiments:``) or of one created at run time, or the :class:`ABTest`
          :meth:`create_ab_test` returned. A request takes part in its tenant's experiment
          whether or not it names it (each call on its own, at random in the arms'
          proportions, as a call has no session; its promoted arm, once promoted), and the
          decision's ``experiment`` and ``arm`` say where it went; ``ab_test`` names it, and
          is refused when that experiment would not take this request (neither configured
          nor running, disabled, not the caller's tenant's, or
          another listed before it takes that tenant).

        Every argument is checked before anything is routed, counted or logged: a bad one
        raises :class:`~switchpoint.errors.InvalidInputError` naming it."""
        return await self._routing.route(
            prompt, available_models, cost_weight, embedding=embedding, key=key, tenant=tenant,
            principal=principal, measured=measured, prefer_healthy=prefer_healthy,
            auto_scale=auto_scale, estimate_tokens=estimate_tokens, ab_test=ab_test)

    def check_size(self, fields: Mapping[str, Any], *, route: bool = False) -> None:
        """Refuse a request whose body, as the HTTP door would receive it, is over
        ``max_request_bytes``, as that door does: an
        :class:`~switchpoint.errors.InvalidInputError` naming the argument that holds the most
        of it and the limit. ``fields`` are the request's arguments by name (None: left out);
        ``route``: a routing request (a long prompt gets the advice to send its end)."""
        self._routing.check_size(fields, route=route)

    def route(self, prompt: str | None = None, available_models: Sequence[str] | None = None,
              cost_weight: float | None = None, *,
              embedding: Sequence[float] | np.ndarray | None = None, key: str | None = None,
              tenant: str | None = None, prefer_healthy: bool = False, auto_scale: bool = False,
              estimate_tokens: Sequence[int] | None = None,
              ab_test: str | ABTest | None = None) -> RoutingDecision:
        """:meth:`aroute` from synchronous code."""
        return self._run(self.aroute(prompt, available_models, cost_weight,
                                     embedding=embedding, key=key, tenant=tenant,
                                     prefer_healthy=prefer_healthy, auto_scale=auto_scale,
                                     estimate_tokens=estimate_tokens, ab_test=ab_test))

    _assign = staticmethod(RoutingDoor.assign)
    _decide = staticmethod(RoutingDoor.decide)

    def _policy(self, settings: Settings, tenant: str | None,
                key_id: str | None) -> Policy | None:
        """What governs a caller, or None when nothing governs anyone (the fast path)."""
        return self._routing.policy(settings, tenant, key_id)

    # The chat door -----------------------------------------------------------------------------

    def check_serves_chat(self) -> None:
        """Refuse a model call when this gateway was built with ``serves_chat=False``: it
        holds no lock on ``data_dir``, so it would hold and spend budgets and count rate limits
        beside the service that does, each enforcing them on its own. Every door that calls a
        model (:meth:`complete`, :meth:`stream`, :meth:`compare`, their async forms,
        :meth:`plan` and ``Router.route_and_execute``) asks this first, so such a call is
        refused before anything is routed, held, called or logged."""
        if not self._serves_chat:
            raise ChatNotServedError(
                f"{quoted_path(self.state.settings.data_dir)}: this Gateway was opened not to "
                "serve chat (serves_chat=False, as switchpoint feedback and learn open one "
                "beside a running service), so it calls no model: it holds no lock on "
                "data_dir, and its budgets and rate limits would be enforced beside the "
                "service's. Send chat requests to the service, or make a gateway that serves "
                "chat, Gateway(settings) or Gateway.from_config(config) (it takes data_dir's "
                "lock: refused while a service serves from it)")

    async def plan(self, call: ChatCall, *, started: float | None = None) -> tuple[Plan, Live]:
        """Who may answer ``call``, in which order (see :class:`Planner`), with the live
        router it was planned on. A request the governance refuses (a model its key may not
        use, a budget or rate limit) is logged as ``refused`` before the error is raised. A
        request whose tenant has its share of calls in flight is refused before anything
        else is done for it (:class:`~switchpoint.errors.TooManyInFlightError`; see
        :mod:`switchpoint.gateway.in_flight`), and logged as ``refused`` alike; one planned
        holds a place in that share until :meth:`execute` ends it."""
        return await self._chat.plan(call, started=started)

    async def execute(self, plan: Plan, live: Live) -> ChatCompletion | ChatStream:
        """Call the plan's candidates. Returns the answer (logged), or a committed stream (logged
        as it ends). Raises :class:`~switchpoint.errors.FailoverError` (logged) when no model
        answers; its ``info`` says what was tried. A plan the service's stop ended before its
        call began raises :class:`~switchpoint.errors.ServiceStoppingError` (logged then), as
        does one taken up once the stop has begun (logged now, its hold released): the
        service calls no model once it stops. The plan's place among its tenant's calls in
        flight is given back as the answer or error is returned, or as the stream ends."""
        return await self._chat.execute(plan, live)

    def stop_in_flight(self, why: str) -> int:
        """End what is in flight on the running loop now, for a service that stops (its
        drain ran out): each upstream call still waiting for its answer is cancelled (its
        caller gets :class:`~switchpoint.errors.ServiceStoppingError`), each open stream is
        stopped (:meth:`ChatStream.stop`: its reader gets
        :class:`~switchpoint.errors.ServiceStopped`, one nobody reads is closed). Each is
        logged once, saying ``why``, its budget hold settled as for a request its client left
        (the worst case of the model being called when a try was under way upstream, unless
        its usage is known or, a stream still reasoning, the estimate of what came, and of
        each earlier try a provider may have billed; released when there was none), its
        upstream
        connection closed. A request still being planned is ended too (its routing is
        cancelled; its caller gets the same error, and it is logged once), and so is one
        planned whose call has not begun (its budget hold released, as no model was called;
        logged once, here). A request that reaches the gateway on this loop from now on is
        ended as it arrives. Returns how many were ended."""
        return self._chat.stop_in_flight(why)

    async def settled(self) -> None:
        """Wait for the closings :meth:`stop_in_flight` (or a deadline) started."""
        await self._streams.settled()

    async def chat(self, call: ChatCall) -> ChatCompletion | ChatStream:
        """Plan and execute one chat request (the HTTP door's path)."""
        plan, live = await self.plan(call)
        return await self.execute(plan, live)

    async def acomplete(self, messages: Sequence[Mapping[str, Any]] | None = None,
                        model: str = AUTO_MODEL, *, session_id: str | None = None,
                        cost_weight: float | None = None, models: Sequence[str] | None = None,
                        decision: RoutingDecision | None = None, exact: bool = False,
                        key: str | None = None, tenant: str | None = None,
                        **params: Any) -> ChatCompletion:
        """A chat completion, as ``openai``'s ``chat.completions.create`` would return it.

        ``params`` are the other OpenAI fields (temperature, tools, max_tokens, ...), forwarded
        as given; the openai client's own options (``timeout``, ``extra_body``, ...) are
        refused naming them. ``session_id`` pins a conversation; ``cost_weight`` overrides λ for
        ``auto``; ``models`` narrows the models ``auto`` may choose (beside a named ``model``
        it must list that model, else an :class:`~switchpoint.errors.InvalidInputError` naming
        ``models``, and the model's fallbacks it leaves out are not tried); ``decision`` (a
        routing decision already made) makes ``auto`` follow its ranking; ``exact`` asks the
        named model alone (retried, but never replaced by a fallback). ``key`` (a client key,
        verified) or ``tenant`` (trusted) makes the call as that caller: its models, budgets,
        limits, SLA and escalation apply. Raises :class:`~switchpoint.errors.GatewayError`
        subclasses (and ``InvalidInputError``).
        """
        result = await self._library.answer(
            messages, model, stream=False, session_id=session_id, cost_weight=cost_weight,
            models=models, decision=decision, exact=exact, key=key, tenant=tenant, params=params)
        assert isinstance(result, ChatCompletion)
        return result

    async def astream(self, messages: Sequence[Mapping[str, Any]] | None = None,
                      model: str = AUTO_MODEL, *, session_id: str | None = None,
                      cost_weight: float | None = None, models: Sequence[str] | None = None,
                      decision: RoutingDecision | None = None, exact: bool = False,
                      key: str | None = None, tenant: str | None = None,
                      **params: Any) -> ChatStream:
        """A streamed chat completion: ``async for chunk in await gateway.astream(...)``.
        Failover happens before this returns (the stream is committed to one model)."""
        result = await self._library.answer(
            messages, model, stream=True, session_id=session_id, cost_weight=cost_weight,
            models=models, decision=decision, exact=exact, key=key, tenant=tenant, params=params)
        assert isinstance(result, ChatStream)
        return result

    def complete(self, messages: Sequence[Mapping[str, Any]] | None = None,
                 model: str = AUTO_MODEL, *, session_id: str | None = None,
                 cost_weight: float | None = None, models: Sequence[str] | None = None,
                 decision: RoutingDecision | None = None, exact: bool = False,
                 key: str | None = None, tenant: str | None = None,
                 **params: Any) -> ChatCompletion:
        """:meth:`acomplete` from synchronous code."""
        return self._run(self.acomplete(messages, model, session_id=session_id,
                                        cost_weight=cost_weight, models=models,
                                        decision=decision, exact=exact, key=key,
                                        tenant=tenant, **params))

    def stream(self, messages: Sequence[Mapping[str, Any]] | None = None,
               model: str = AUTO_MODEL, *, session_id: str | None = None,
               cost_weight: float | None = None, models: Sequence[str] | None = None,
               decision: RoutingDecision | None = None, exact: bool = False,
               key: str | None = None, tenant: str | None = None,
               **params: Any) -> SyncChatStream:
        """:meth:`astream` from synchronous code: iterate the chunks with ``for``."""
        # (Wrapped on the gateway's loop: one its caller, cut off as it came, never took is
        # let go of, and closed, as any.)
        async def opened() -> SyncChatStream:
            stream = await self.astream(messages, model, session_id=session_id,
                                        cost_weight=cost_weight, models=models,
                                        decision=decision, exact=exact, key=key,
                                        tenant=tenant, **params)
            assert self._sync is not None
            return SyncChatStream(stream, self._sync, self._streams.dropped)

        return self._run(opened())

    # Learning from outcomes ---------------------------------------------------------------------

    @one_request
    async def areport_outcome(self, decision_id: str | None = None,
                              quality_score: float | None = None,
                              success: bool | None = None, *, model: str | None = None,
                              comment: str | None = None, key: str | None = None,
                              tenant: str | None = None, cost: float | None = None,
                              principal: Principal | None = None,
                              prompt_hash: str | None = None,
                              config_read: bool = True) -> FeedbackResult:
        """Learn how one answer went: a quality in [0, 1] or a success flag (exactly one).

        ``decision_id`` is what the answer carried (``x-switchpoint-decision-id``,
        ``reply.switchpoint.decision_id``): a routing decision's id teaches routing (the
        tenant's learned router and its memory); a request id of a request that named its model
        records a quality observation of that model. ``prompt_hash`` may name the decision in
        its place (exactly one of them): the SHA-256 of the prompt a decision routed on
        (``decision.prompt_hash``), which names the latest decision of that prompt that still
        takes feedback (the caller's tenant's; one made before a restart or a reload too, as a
        decision id is), learned as that decision id (the result's ``decision_id`` says
        which). ``model`` is the model the feedback is
        about (default: the one that answered); ``cost`` what the answer cost, which teaches
        that model's cost on this kind of prompt. With catalog prices it is in USD and may be
        left out: the gateway then takes what its own accounting priced the answer at
        (``cost_from`` says which); without them it is in the weights' cost units, and only
        the caller knows it (see ``Router.report_outcome``). ``key`` or ``tenant``
        scopes it to that caller's decisions (another tenant's id is not found); neither: any
        decision (trusted code). ``config_read=False`` says this gateway's settings were read
        from no config (a command given a data_dir alone: its catalog is the weights' own
        models): a decision answered by a model that catalog does not hold is then refused
        (an :class:`~switchpoint.errors.InvalidInputError` naming ``config``), where a gateway
        on its config keeps it as a quality observation (a reload took the model out). Returns
        once the outcome is committed to the feedback log; a
        repeat replaces the earlier outcome (``outcome.replaced``). Raises
        :class:`~switchpoint.errors.DecisionNotFoundError` for an unknown id and
        :class:`~switchpoint.errors.InvalidInputError` for a bad score, changing nothing."""
        return await self._learning_door.report_outcome(
            decision_id, quality_score, success, model=model, comment=comment, key=key,
            tenant=tenant, cost=cost, principal=principal, prompt_hash=prompt_hash,
            config_read=config_read)

    def report_outcome(self, decision_id: str | None = None,
                       quality_score: float | None = None,
                       success: bool | None = None, *, model: str | None = None,
                       comment: str | None = None, key: str | None = None,
                       tenant: str | None = None, cost: float | None = None,
                       prompt_hash: str | None = None,
                       config_read: bool = True) -> FeedbackResult:
        """:meth:`areport_outcome` from synchronous code."""
        return self._run(self.areport_outcome(decision_id, quality_score, success, model=model,
                                              comment=comment, key=key, tenant=tenant,
                                              cost=cost, prompt_hash=prompt_hash,
                                              config_read=config_read))

    def record_sla_quality(self, model: str, score: float, *, decision_id: str | None = None,
                           key: str | None = None, tenant: str | None = None
                           ) -> FeedbackResult:
        """Record the quality ``score`` (in [0, 1]) that ``model``'s answer to decision
        ``decision_id`` earned. An SLA's ``min_quality_score`` is judged on the router's
        expected quality of a model for the prompt (1 − expected error), and this outcome
        teaches that estimate, as :meth:`report_outcome` does (it is that call, with ``model``
        as the model the score is about): kept in the feedback log, it counts in the learning
        status's per-model quality and the quality later decisions expect. A score names the
        answer it is about, so ``decision_id`` (``decision.decision_id``,
        ``reply.switchpoint.decision_id``) is needed; ``key`` or ``tenant`` scopes it as for
        :meth:`report_outcome`. Bad input raises an error naming the argument and records
        nothing."""
        if decision_id is None:
            raise InvalidInputError("decision_id", "is needed: a quality score is about one "
                                                   "answer; pass the id of the decision it "
                                                   "answered (decision.decision_id, or "
                                                   "reply.switchpoint.decision_id)")
        expect("model", model, str, "a model name (a string)")
        if score is None:
            raise InvalidInputError("score", "must be a number in [0, 1], got None")
        try:
            check_quality(score, None)
        except InvalidInputError as exc:  # (named as this method names it)
            raise InvalidInputError("score", exc.reason) from None
        return self.report_outcome(decision_id, quality_score=score, model=model, key=key,
                                   tenant=tenant)

    @one_request
    async def acompare(self, messages: Sequence[Mapping[str, Any]] | None = None,
                       models: Iterable[str] | None = None, *, prompt: str | None = None,
                       blind: bool = True, key: str | None = None, tenant: str | None = None,
                       principal: Principal | None = None, measured: bool = False,
                       via: Sequence[str] = (), **params: Any) -> dict[str, Any]:
        """Ask up to six models the same thing at once (exact calls: no fallbacks, each logged
        and governed as a chat request) and return their answers under blind labels A, B, ...
        with a ``compare_id`` that :meth:`ascore` teaches from. ``prompt`` is a one-turn
        shortcut for ``messages``; ``models``, a list of 2 to 6 different names (read as
        :func:`~switchpoint.catalog.model_names` reads one: a set or a mapping is refused, a
        generator read once), default to those the caller may use that ``auto`` may choose
        (when there are at most six: a comparison teaches ``auto``, so a model with ``auto:
        false`` is compared only when named); ``params`` are OpenAI fields
        (max_tokens, temperature, ...). One whose body (as ``POST
        /v1/router/preferences/compare`` would receive it) is over ``max_request_bytes`` is
        refused as over HTTP (``measured``: the HTTP door, which counted its body's bytes).
        ``via``: the entries of the ``Via`` the comparison came with, which each compared
        model's upstream request lists before the gateway's own, as a chat's
        (:attr:`~switchpoint.gateway.planning.ChatCall.via`, bounded alike)."""
        return await self._learning_door.compare(
            messages, models, prompt=prompt, blind=blind, key=key, tenant=tenant,
            principal=principal, measured=measured, via=via, **params)

    def compare(self, messages: Sequence[Mapping[str, Any]] | None = None,
                models: Iterable[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """:meth:`acompare` from synchronous code."""
        return self._run(self.acompare(messages, models, **kwargs))

    @one_request
    async def ascore(self, compare_id: str, scores: Mapping[str, float], *,
                     key: str | None = None, tenant: str | None = None,
                     principal: Principal | None = None) -> dict[str, Any]:
        """Teach a comparison's scores ``{label or model: quality in [0, 1]}`` (ties and
        partial scores allowed; a repeat replaces what it names). The comparison must be the
        caller's tenant's. A blind comparison is scored by label, once: the answer reveals its
        models, and a later score is refused (:class:`ConflictError`), since it would not be
        blind. Returns once every outcome is committed, with the models revealed and the
        tenant's memory status, narrowed to the models the caller may use as
        :meth:`learning_status` narrows it."""
        return await self._learning_door.score(compare_id, scores, key=key, tenant=tenant,
                                               principal=principal)

    @passes_on(ascore)
    def score(self, compare_id: str, scores: Mapping[str, float], **kwargs: Any
              ) -> dict[str, Any]:
        """:meth:`ascore` from synchronous code."""
        return self._run(self.ascore(compare_id, scores, **kwargs))

    @one_sync_request
    def learning_status(self, tenants: Sequence[str] | None = None, *,
                        key: str | None = None, tenant: str | None = None,
                        principal: Principal | None = None) -> dict[str, Any]:
        """What each tenant has taught: its memory (examples, per-model coverage, still cold
        or not), the outcomes its learned router holds and the quality feedback says each model
        has (over the feedback rows the log keeps: ``feedback_log`` says whether retention
        pruned some, which the learned router still holds). ``tenants``: these (None: every
        tenant with a memory, outcomes, feedback or config); each tenant's ``feedback_log``
        says the same of its own rows (whether retention pruned some, which its learned router
        still holds, and the time of its oldest kept), as ``feedback_log`` says it to that
        tenant's keys. ``key`` (a client key, verified)
        or ``tenant`` (trusted) names the caller as :meth:`complete`'s do (``principal``: one
        the HTTP door checked): a caller reads its own tenant's status alone (``tenants``, if
        given, names only it), sees only its tenant's experiments and the models it may use,
        and not the deployment's replay counts nor its log positions. A caller narrowed to
        some models sees a view narrowed to them (``narrowed_to``, the models :meth:`models`
        lists to it, ``auto`` aside): its memory's examples and progress and its learned
        router's counts count only their records and outcomes (the learned router's are
        ``null`` when learned before a restore from a checkpoint that did not keep them by
        model). Neither: the deployment's view, of every tenant; a tenant ``tenants`` names
        is then narrowed as its keys' view is, to the models its config lets it use, when it
        lists some."""
        check_process(self._pid, "this Gateway")
        return self._views.learning_status(tenants, key=key, tenant=tenant,
                                           principal=principal)

    @one_sync_request
    def models(self, *, key: str | None = None, tenant: str | None = None,
               principal: Principal | None = None) -> list[dict[str, Any]]:
        """The routable models the caller may use, by name or through ``auto``, as OpenAI's
        model objects, ``auto`` first (unless it may not route with it): every one for no
        caller or one nothing narrows; none without ``models:`` configured, as a chat request
        is then answered for no name. ``key`` (a client key, verified) or ``tenant``
        (trusted) names the caller as :meth:`complete`'s do (``principal``: one the HTTP door
        checked). ``GET /v1/models``'s ``data``."""
        return self._views.models(key=key, tenant=tenant, principal=principal)

    @one_sync_request
    def model(self, model_id: str, *, key: str | None = None, tenant: str | None = None,
              principal: Principal | None = None) -> dict[str, Any]:
        """The one of :meth:`models` named ``model_id`` (``key``, ``tenant`` and ``principal``
        name the caller as there). A model the caller may not use is refused as a chat
        request naming it is (a :class:`~switchpoint.errors.PermissionDeniedError` listing
        those it may use), whether the catalog has it or not; one it may use that the catalog
        lacks, or a name unknown to a caller nothing narrows, is a
        :class:`~switchpoint.errors.ModelNotFoundError` naming the models it may use. Without
        ``models:`` configured, any name is the
        :class:`~switchpoint.errors.NoUpstreamError` a chat request naming it gets.
        ``GET /v1/models/{id}``'s answer."""
        return self._views.model(model_id, key=key, tenant=tenant, principal=principal)

    @one_sync_request
    def experiment_report(self, name: str) -> dict[str, Any]:
        """How each arm of experiment ``name`` does: decisions, scored decisions, mean quality
        with its 95% interval, mean cost, and the winner once the evidence is there. Of an
        experiment of the config, or one created at run time (running or ended)."""
        return self._experiments.report(name)

    @one_sync_request
    def experiment_reports(self) -> list[dict[str, Any]]:
        """Every experiment's report: the config's, those created at run time and running
        (in the order requests join them), then those ended that the store keeps."""
        return self._experiments.reports()

    @one_sync_request
    def promote(self, name: str, arm: str | None = None) -> dict[str, Any]:
        """Send all of experiment ``name``'s traffic to ``arm`` (default: its winner)."""
        return self._experiments.promote(name, arm)

    @one_sync_request
    def create_ab_test(self, name: str, strategy_a: str | Mapping[str, Any] | None = None,
                       strategy_b: str | Mapping[str, Any] | None = None,
                       split: float | None = None, *,
                       arms: Mapping[str, Mapping[str, Any]] | None = None,
                       tenants: Sequence[str] | None = None, min_n: int | None = None
                       ) -> ABTest:
        """Create experiment ``name`` at run time, beside the config's, and return it (pass
        it, or its name, as :meth:`route`'s ``ab_test``).

        Its arms are ``a``, routed by ``strategy_a`` (default ``"cost_optimized"``: the
        configured routing), and ``b``, by ``strategy_b`` (default ``"quality_first"``: λ 0,
        quality first); a strategy may also be a mapping of an arm's ``policy``,
        ``cost_weight`` and ``models``, as the config gives them. ``split`` is B's share of
        the traffic (default 0.5), between 0 and 1, neither included. Or give ``arms`` as the
        config does (name: weight, policy, cost_weight, models) instead of the three.
        ``tenants``: who takes part (default: every caller); ``min_n``: scored decisions each
        arm needs before a winner is named (default 30).

        It comes after the config's experiments and those created before it (a request
        joins the first enabled one that holds its tenant), and is checked by the config's
        rules with them; kept in ``data_dir``, so it survives restarts and reloads (a reload
        whose config lists an experiment of its name, or no longer fits it, is refused).
        Refused, with nothing created: :class:`~switchpoint.errors.InvalidInputError` naming
        the argument at fault, :class:`~switchpoint.errors.ConflictError` for a name taken (by
        the config, or a run-time experiment running or ended) or no room left."""
        return self.ab_tests.create(name, strategy_a, strategy_b, split, arms=arms,
                                    tenants=tenants, min_n=min_n)

    @one_sync_request
    def end_ab_test(self, name: str | ABTest) -> dict[str, Any]:
        """End experiment ``name`` (or the :class:`ABTest` given), created at run time: it
        takes no more traffic; its decisions and report stay (returned, with ``ended_at``),
        and its name stays taken. One of the config is ended in the config (a
        :class:`~switchpoint.errors.ConflictError` says so)."""
        return self.experiment_report(self.ab_tests.end(name))

    # Models registered at run time -------------------------------------------------------------

    @one_sync_request
    def register_model(self, card: Mapping[str, Any]) -> dict[str, Any]:
        """Add a model to the catalog at run time: ``card`` holds the keys of a config
        ``models:`` entry (``name``, ``tier``, ``input_per_mtok``, ``output_per_mtok``,
        ``base_url``, ``api_key_env``, ...), checked by the same rules. It goes live at once
        (requests under way finish on the old router) after the config's models, and is kept
        in ``data_dir``, so it survives restarts and reloads (a config that comes to list a
        model of its name wins: the registered one is then dropped, with a warning). Weights
        without a profile of it route it by its tier and price until it is labelled.

        Returns the model as :meth:`model` shows it, ``registered_at``, and the catalog models
        the live weights have no learned profile for (``unprofiled_models``, its count and
        ``note``). Refused, with nothing changed: an
        :class:`~switchpoint.errors.InvalidInputError` naming the key at fault (a
        ``base_url`` carrying a credential among them: put the key in the variable
        ``api_key_env`` names), a :class:`~switchpoint.errors.ConflictError` for a name taken
        (by the config, or a registered model), no room left
        (:data:`~switchpoint.registration.MAX_REGISTERED_MODELS`), or a config
        without ``models:``."""
        return self.models_registered.register(card)

    @one_sync_request
    def unregister_model(self, name: str) -> dict[str, Any]:
        """Take model ``name``, registered at run time (:meth:`register_model`), out of the
        catalog and ``data_dir``; requests under way finish on the old router. Returns
        ``{"id": name, "object": "model", "deleted": true}`` with the unprofiled models, as
        :meth:`register_model` does. A model of the config (edit the config and reload), one
        not registered, or one still named by a live client key, a run-time experiment's arm
        or a registered model's fallbacks is refused
        (:class:`~switchpoint.errors.ConflictError`,
        :class:`~switchpoint.errors.NotFoundError`), with nothing changed."""
        return self.models_registered.unregister(name)

    # Reloading and swapping --------------------------------------------------------------------

    @one_sync_request
    def swap_policy(self, name: str) -> dict[str, Any]:
        """Load policy ``name`` (a bundled one, or one under the config's ``policies:``) and
        make it live until the next reload or restart; requests under way finish on the old
        one. Returns what ``POST /v1/router/policy/{name}`` answers: ``policy``,
        ``weights_id`` and ``models`` now live, ``previous_policy`` and
        ``previous_weights_id``, ``load_ms``, ``restart_required``, and the catalog models the
        weights have no learned profile for (``unprofiled_models``, its count and ``note``).
        An unknown policy (to the config live as the swap runs, after a reload under way) is
        an :class:`~switchpoint.errors.InvalidInputError` naming ``name``; weights that do not
        fit the config (a catalog model they cannot serve) are a
        :class:`~switchpoint.errors.ConfigError`, and a package that cannot be read a
        :class:`~switchpoint.errors.WeightsError`; each leaves the old router serving."""
        return self._reloads.swap_policy(name)

    @one_sync_request
    def reload(self) -> dict[str, Any]:
        """Re-read the config file and the weights and make them live (what was made at run
        time, such as experiments created, stays); requests under way finish on the old
        router. Returns what ``POST /v1/router/reload`` answers: :meth:`swap_policy`'s answer
        with the live keys the new config leaves without their tenant or a model they could
        use under the old one (``keys_affected``, the first of them, ``keys_affected_count``
        and ``keys_note``, which is also logged as a warning). A bad config (or weights that
        do not fit it), a file that holds no settings or one that would lower the service's
        protection is a :class:`~switchpoint.errors.ConfigError` naming what is wrong, and a
        weights package that cannot be read a :class:`~switchpoint.errors.WeightsError`, and a
        keys.db that cannot be read (read first, to weigh the new config against its live
        keys) a :class:`~switchpoint.errors.StoreError` naming it; each leaves the old router
        serving. Behind a change made at run time that waits for the
        store to keep it (a registration, a run-time experiment's creation or end), it waits
        at most :data:`~switchpoint.gateway.live.SWAP_WAIT_S`, then is a
        :class:`~switchpoint.errors.StorageUnavailableError` (503) naming that change, as a
        policy swap is."""
        return self._reloads.reload()

    # Admin views -------------------------------------------------------------------------------

    @one_sync_request
    def reset_health(self) -> None:
        """Forget every model's health: circuits close, counts and errors start afresh."""
        self.health = HealthTracker(config=self.health.config)
        self.planner.health = self.health

    @one_sync_request
    def health_snapshot(self) -> dict[str, Any]:
        """Every catalog model's health (and any model called since), with the breaker's
        thresholds."""
        return self._health_views.snapshot()

    @one_sync_request
    def get_provider_health(self, model: str) -> dict[str, Any]:
        """``model``'s health: its entry of :meth:`health_snapshot` (what ``GET
        /v1/router/health`` answers under ``models``) with its name as ``model``, so the two
        always say the same. ``status`` is ``healthy``, ``degraded`` or ``down``;
        ``success_rate`` is over the tracker's window (its last ``window`` calls within
        ``window_s`` seconds, the snapshot's ``breaker``; None before any call);
        ``avg_latency_ms`` is ``latency_ewma_ms``, the exponentially weighted mean latency of
        its successes (time to first token for streams); ``recent_errors`` the newest first
        (``kind``, ``at``, ``age_s``, ``detail``); ``last_seen`` the time (seconds since the
        epoch) of its latest success or failure, None before any. A model that is neither in
        the catalog nor called since is an :class:`~switchpoint.errors.UnknownModelError`."""
        return self._health_views.provider_health(model)

    @one_sync_request
    def record_provider_event(self, model: str, event: str, latency_ms: float | None = None,
                              details: str | None = None) -> None:
        """Tell the gateway's health how a call to catalog ``model`` that the caller made
        itself, outside the gateway, went: the same tracker the gateway's own tries feed, so
        its circuit breaker and ``auto``'s ranking of degraded and down models take it in.
        ``event`` is ``success`` (``latency_ms``, if measured, joins the latency average),
        ``error`` or ``timeout`` (``details``, at most 300 characters, is shown among its recent
        errors, any secret in it redacted; ``kind`` is the event). Report only what the
        model's upstream is to blame for (an outage, a rate limit, a timeout), not a request it
        refused as malformed. Every
        argument is checked before anything is recorded: a bad one raises
        :class:`~switchpoint.errors.InvalidInputError` naming it and records nothing."""
        self._health_views.record_event(model, event, latency_ms, details)

    # Governance reports -----------------------------------------------------------------------

    @property
    def reports(self) -> Reports:
        """Cost, SLA and budget reports over this gateway's log (see
        :class:`~switchpoint.governance.reports.Reports`). Each of their reads is one request
        inside the gateway (see :meth:`admitted`), as the gateway's own methods are: closing
        waits for one under way, and one made once closing has begun is refused with the
        closed error, whenever the reports were taken. They price by the live router's
        catalog (the config's models and those registered since), built once at its reload or
        registration, not again for each report."""
        return self._analytics.reports()

    @one_sync_request
    @passes_on(Reports.cost_report)
    def cost_report(self, period: str = "day", **kwargs: Any) -> dict[str, Any]:
        """Requests and cost of the last day / week / month by model, tenant and key, with the
        savings against the strongest model (see :meth:`Reports.cost_report`)."""
        return self.reports.cost_report(period, **kwargs)

    @one_sync_request
    @passes_on(Reports.savings_estimate)
    def savings_estimate(self, comparison_model: str | None = None,
                         period: str = "month", **kwargs: Any) -> dict[str, Any]:
        """What the logged requests would have cost on ``comparison_model``."""
        return self.reports.savings_estimate(comparison_model, period, **kwargs)

    @one_sync_request
    @passes_on(Reports.forecast_cost)
    def forecast_cost(self, requests_per_hour: float, avg_input_tokens: float,
                      avg_output_tokens: float, **kwargs: Any) -> dict[str, Any]:
        """Projected spend of a traffic assumption over the logged routing mix."""
        return self.reports.forecast_cost(requests_per_hour, avg_input_tokens,
                                          avg_output_tokens, **kwargs)

    @one_sync_request
    @passes_on(Reports.get_cost_optimizations)
    def get_cost_optimizations(self, estimate_tokens: Sequence[int] | None = None,
                               **kwargs: Any) -> list[dict[str, Any]]:
        """Suggestions from re-routing the logged traffic offline at other λ and pools."""
        return self.reports.get_cost_optimizations(estimate_tokens, **kwargs)

    @one_sync_request
    @passes_on(Reports.suggestion_report)
    def suggestion_report(self, estimate_tokens: Sequence[int] | None = None,
                          **kwargs: Any) -> dict[str, Any]:
        """The suggestions with how many logged requests they re-routed and, with none to
        make, why (see :meth:`Reports.suggestion_report`)."""
        return self.reports.suggestion_report(estimate_tokens, **kwargs)

    @one_sync_request
    @passes_on(Reports.get_sla_report)
    def get_sla_report(self, since_hours: float = 1.0, **kwargs: Any) -> dict[str, Any]:
        """SLA compliance of the last ``since_hours`` of requests."""
        return self.reports.get_sla_report(since_hours, **kwargs)

    @one_sync_request
    def check_budget_alert(self, tenant: str | None = None, *, limit: int | None = None,
                           cursor: str | None = None) -> dict[str, Any]:
        """ok / warning / critical, the hour's spend and its projection, every budget (or a
        page of them: ``limit`` after ``cursor``, with the ``next_cursor``)."""
        return self.reports.check_budget_alert(tenant, limit=limit, cursor=cursor)

    @one_sync_request
    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Decisions by model, policy and cluster (``total``, ``by_model``, ...) and under
        ``requests`` the requests' counts, tokens and cost, from the logs; ``tenant``: that
        tenant's alone (an unknown one is refused as the reports refuse it). The body of ``GET
        /v1/router/stats``."""
        return self._analytics.stats(tenant)

    @one_sync_request
    def get_analytics(self, tenant: str | None = None) -> dict[str, Any]:
        """Routing at a glance, from the figures :meth:`stats`, :meth:`learning_status` and
        :meth:`savings_estimate` give (over every tenant, or ``tenant``'s alone):

        - ``total_routed``: the decisions logged (``stats()["total"]``), retention aside;
        - ``model_usage``: those decisions by the model each chose (``stats()["by_model"]``);
        - ``tier_distribution``: the same decisions by the catalog ``tier`` of the model each
          chose (``none``: a model whose card names no tier, or that the catalog no longer
          holds); switchpoint classes prompts by their embedding's cluster, not by a tier, so
          this says how hard the chosen models are, not the prompts;
        - ``avg_quality``: the mean quality of the outcomes the feedback log keeps (the latest
          of each decision, as the learning status's per-model ``feedback`` figures count
          them); None before any feedback;
        - ``cost_savings``: ``savings_usd`` of :meth:`savings_estimate`, what the last 30 days'
          answered requests cost less than they would have on the strongest model."""
        return self._analytics.analytics(tenant)

    @one_sync_request
    def budget_status(self) -> list[dict[str, Any]]:
        """Every configured budget: limit, spent, held by requests in flight, resets."""
        return self.governor.budget_status(self.settings)[0]

    @one_sync_request
    def tenant_status(self) -> dict[str, Any]:
        """``GET /v1/router/tenants``'s answer: each configured tenant's settings and its own
        budgets' state (``budget_status``), as ``data``."""
        settings = self.settings  # (one config throughout, should a reload come meanwhile)
        budgets = self.governor.tenant_budget_status(settings)
        return {"data": {name: {**t.model_dump(), "budget_status": budgets[name]}
                         for name, t in settings.tenants.items()}}

    @one_sync_request
    def budget_page(self, limit: int, cursor: str | None = None) -> dict[str, Any]:
        """A page of :meth:`budget_status`: ``limit`` budgets after ``cursor`` (the
        ``next_cursor`` of the page before; None: the first), as ``data``, and the next
        page's ``next_cursor`` (None on the last)."""
        data, next_cursor = self.governor.budget_status(self.settings, limit=limit,
                                                        cursor=cursor)
        return {"data": data, "next_cursor": next_cursor}

    # Internals ---------------------------------------------------------------------------------

    def _warn_misconfigured(self, settings: Settings) -> None:
        if not self._serves_chat:
            return
        env = os.environ if self._env is None else self._env
        skip = set(self.providers.overrides)
        for key, message in misconfigurations(settings, env, skip=skip):
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s", message)

    def _check_log_room(self) -> None:
        """Turn a new request away while what the store refused fills its spill file (see
        ``store.spill_max_mb``): it could be answered, but not logged."""
        full = self.store.spill_full if self.store is not None else None
        if full is not None:
            raise StorageUnavailableError(
                f"the service takes no new requests now: it could not log them ({full}); "
                "the operator must free space in data_dir, or stop what holds its database's "
                "lock, and requests are taken again once what waits is written",
                retry_after=REFUSING_S)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """A synchronous call: ``coro`` run on the gateway's own loop, as one request counted
        in here, on the caller's thread, before the loop takes it up (closing, begun
        meanwhile, waits for it as for any request let in); its task carries the mark."""
        with contextlib.ExitStack() as inside:
            try:
                if self._closed or in_other_process(self._pid):  # (the loop is the parent's)
                    self._check_open()
                if sys.is_finalizing():  # (no loop could be made, or run, for it now)
                    raise GatewayClosedError(AT_EXIT)
                inside.enter_context(self.admitted())
            except BaseException:
                coro.close()
                raise
            return self._sync_loop().run(coro)

    def _sync_loop(self) -> LoopThread:
        """The synchronous methods' loop, made by the first call that needs it."""
        with self._sync_lock:
            if self._sync is None:
                self._sync = LoopThread()
            return self._sync


def _caught_up(gateway: weakref.ref[Gateway]) -> CaughtUp | None:
    """What the learning of ``gateway`` has caught up with, for its housekeeping (which holds
    it weakly); None once it is gone."""
    held = gateway()
    return None if held is None else held.learning.caught_up()


__all__ = ["Gateway", "Observer", "SyncChatStream"]
