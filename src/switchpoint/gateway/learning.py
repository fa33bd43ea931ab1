"""Learning from outcomes in the gateway: feedback, tenants' memories, preference comparisons,
experiments and exploration.

::

    feedback ─► the feedback log (SQLite) ─► once committed: the live router's learner (its
                                             tenant's overlay), the other routers of the snapshot
                                             (experiment arms) and the tenant's memory

    start / reload / policy swap ─► new snapshot ─► the learning checkpoint, if it fits
                                 ─► replay the log after it (all of it, without one) ─► live

- **Decisions.** Every answer names a decision id: an ``auto`` request's routing decision, or
  (a named model, a hard-pinned session: nothing was routed) the request id. Feedback on a
  routing decision teaches routing (the tenant's overlay of the learned router, and its memory);
  feedback on a request id is kept as a quality observation of the model that answered (per
  tenant and model), which cannot teach routing: no prompt vector was computed for it.
- **Persistence.** The feedback log (:mod:`switchpoint.gateway.feedback_log`) is the ``feedback``
  table (append-only); every snapshot replays it before it goes live, under
  :attr:`RouterState.guard`, and feedback is applied under the same guard, so a lesson reaches the
  snapshot that serves next whatever the timing. Rows another process appends to the log (an
  offline ``switchpoint feedback`` on the same ``data_dir``) are taken up, in log order: those
  before a feedback's own row once the log keeps it, before that feedback is learned (so the
  live state learns the rows in the log's order, as a replay after a restart does), and all of
  them before a checkpoint, before a status reports what was learned, and before the
  service's retention prunes the log (never past what the service learned), so a repeat given
  here replaces one given there, and no such row is pruned unlearned. What learning needs from
  each recent decision is kept in the ``pending`` table (``learning.memory_size`` of them,
  shared by the tenants as a router's memory shares its own, with the hash of the prompt each
  routed on), so a decision made before a restart or a reload still accepts feedback, named by
  its id or by its prompt's hash. See
  :mod:`switchpoint.store.learning`.
- **Checkpoints.** What the live snapshot has learned is saved beside the store
  (``learning.checkpoint``; see :mod:`switchpoint.learning.checkpoint`) every
  :data:`CHECKPOINT_EVERY` events, after a replay of :data:`CHECKPOINT_AFTER_REPLAY` or more,
  and at a graceful stop, with the log position it holds, so a start replays only what
  follows. One that does not fit (other weights or settings, a replaced log, a damaged file)
  is passed over with a warning: the log is the record, the checkpoint only saves time.
- **Tenants' memories.** A tenant with ``memory:`` in its config (``learning.memory`` for the
  deployment's own traffic) keeps a
  :class:`~switchpoint.learning.tenant_memory.TenantKnnMemory` of its own outcomes; ``auto``
  consults it after the learned router and follows it when its evidence is strong, else falls
  back to the learned router and says why (decision ``source`` and ``memory_fallback``).
- **Preferences.** :class:`~switchpoint.gateway.preferences.Compares` holds blind-labelled
  comparisons waiting for scores (bounded, expiring, kept in the ``compares`` table too, so a
  score sent after a restart still finds its comparison); a score teaches as feedback does (one
  outcome per scored model).
- **Experiments.** :class:`~switchpoint.gateway.experiments.Experiments` assigns ``auto`` requests
  to arms by a hash of the session (or of the request), so a conversation stays in its arm;
  :func:`~switchpoint.gateway.experiments.experiment_report` says how each arm does and names a
  winner once the evidence is there.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from switchpoint._log_limit import SaidOnce
from switchpoint._messages import json_quoted, listed_names, quoted_path
from switchpoint.config import Settings
from switchpoint.decision import RoutingDecision
from switchpoint.errors import ConflictError, GatewayClosedError, StoreError
from switchpoint.gateway.experiments import (
    WINNER_RULE,
    Experiments,
    check_promotion,
    experiment_report,
)
from switchpoint.gateway.feedback_intake import MAX_STREAMS as MAX_STREAMS  # (re-exported)
from switchpoint.gateway.feedback_intake import FeedbackIntake
from switchpoint.gateway.feedback_log import NOTHING_LEARNED, RouterLog, ServiceFeedbackLog
from switchpoint.gateway.feedback_rules import FeedbackResult as FeedbackResult  # (re-exported)
from switchpoint.gateway.feedback_rules import answer_cost as answer_cost  # (re-exported)
from switchpoint.gateway.kept import not_kept, turn, written
from switchpoint.gateway.learning_checkpoints import (
    CHECKPOINT_EVERY as CHECKPOINT_EVERY,  # (re-exported)
)
from switchpoint.gateway.learning_checkpoints import LearningCheckpoints
from switchpoint.gateway.live import Live, RouterState, learning_settings, unprofiled_note
from switchpoint.gateway.live_learning import Applied as Applied  # (re-exported)
from switchpoint.gateway.live_learning import LiveLearning as LiveLearning  # (re-exported)
from switchpoint.gateway.open_decisions import PRUNE_EVERY as PRUNE_EVERY  # (re-exported)
from switchpoint.gateway.open_decisions import MadeForACall as MadeForACall  # (re-exported)
from switchpoint.gateway.open_decisions import OpenDecisions
from switchpoint.gateway.preference_scores import PreferenceScores
from switchpoint.gateway.preferences import Compare
from switchpoint.learning.checkpoint import CHECKPOINT_FILENAME, CheckpointError
from switchpoint.learning.config import ExperimentConfig
from switchpoint.learning.events import FeedbackEvent, check_tenant
from switchpoint.router import Router
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import LearningReader, LoggedFeedback, PromotionRecord

log = logging.getLogger("switchpoint.gateway")

#: The experiment arms (with their weights and the models those do not profile) a gateway
#: remembers having warned of, the first warned forgotten first: each registration of
#: a model the weights do not profile makes new ones, so without a bound a service whose
#: models come and go would remember them all. Far more than its arms see between restarts.
MAX_ARMS_WARNED = 1024
#: Events replayed at a start or reload past which the state is checkpointed at once.
CHECKPOINT_AFTER_REPLAY = 1000
#: Feedback rows another process logged that a status takes up before it reports, at most
#: (the rest at the next status, or before the next feedback is learned): a large backlog
#: must not keep a status, nor the feedback waiting on the state's guard behind it, long.
STATUS_TAKE_UP_ROWS = 2000
#: Feedback rows another process logged that the hourly retention takes up before it prunes,
#: at most (it prunes no row past what was learned, so the rest are pruned an hour later), read
#: :data:`STATUS_TAKE_UP_ROWS` at a time with the state's guard let go between them.
RETENTION_TAKE_UP_ROWS = 100_000


# The gateway's learning ----------------------------------------------------------------------


class GatewayLearning:
    """The gateway's side of learning, across snapshots: the feedback log, pending decisions
    (:class:`OpenDecisions`), feedback (:class:`FeedbackIntake`), comparisons
    (:class:`PreferenceScores`), checkpoints (:class:`LearningCheckpoints`), promotions. It
    readies every snapshot before it goes live (:meth:`prepare`, then the replay under the
    state's guard), and keeps it in step with the feedback log."""

    def __init__(self, state: RouterState, store: SQLiteStore | None, *,
                 checkpoints: bool = True, replays: bool = True, warns: bool = True) -> None:
        self.state = state
        self.store = store
        # Whether it warns of the catalog models an experiment arm's weights do not profile
        # (False: a gateway that routes no traffic, as switchpoint learn, feedback and label
        # open),
        # and the arms it warned of already, with the weights and the models: each is said
        # once, not again at every reload, registration or experiment made at run time.
        self.warns = warns
        # (at most MAX_ARMS_WARNED, the first warned let go first)
        self._arms_warned: SaidOnce[tuple[str, str, tuple[str, ...]]] = SaidOnce()
        settings = state.settings.learning
        self.log = ServiceFeedbackLog(store, settings.memory_size)
        # experiment: (arm, why); replaced whole, never changed in place, so a reload or a
        # creation readying its snapshot reads it while a promotion lands.
        self.promoted: Mapping[str, tuple[str, str]] = {}
        self._promotion_lock = threading.Lock()
        self.open_decisions = OpenDecisions(state, store, self.log)
        self.preferences = PreferenceScores(self, settings.max_compares, settings.compare_ttl_s)
        state.prepare = self.prepare
        state.on_swap(self._replay)
        if store is not None:  # (rows the start's read of the table may have missed)
            # (by a weak reference: the store's writer thread must not keep the gateway
            # alive, which a caller who drops it without closing has collected and closed)
            spilled_written = weakref.WeakMethod(self.open_decisions.spilled_written)

            def tell(rows: list[tuple[str, list[Any]]]) -> None:
                learning = spilled_written()
                if learning is not None:
                    learning(rows)

            store.spilled_written = tell
        self.checkpoint_path = (None if store is None
                                else Path(store.path).with_name(CHECKPOINT_FILENAME))
        #: Whether it writes learning checkpoints (False: a gateway that only reads data_dir,
        #: which takes one up all the same).
        self.checkpoints = checkpoints
        #: Whether each snapshot takes up the feedback log (the checkpoint, then the rows after
        #: it) before it goes live. False (a tool that only calls the models it names, or
        #: records an outcome and exits): it takes up none of it, and feedback on a decision
        #: made before it started first takes up that decision's own rows (what a repeat
        #: replaces, the cost it keeps), so what it logs and answers is what a gateway that
        #: took up the whole log would; once retention pruned rows (only the checkpoint
        #: still holds them), the first such feedback takes up the checkpoint and the rows
        #: after it, as a start does. No checkpoint is written.
        self.replays = replays
        self.checkpointer = LearningCheckpoints(self, self.checkpoint_path,
                                                checkpoints=checkpoints, replays=replays)
        self.intake = FeedbackIntake(self)

    @property
    def reader(self) -> LearningReader | None:
        return self.log.reader

    def open(self) -> None:
        """Read what was promoted (the store is open); checkpoints start again. A learning
        checkpoint this process may not read and replace (another user's, as a command run
        as root leaves it) stops the opening, naming it and what mends it, as the databases'
        do: passed over, what it alone holds (outcomes retention pruned) would be lost when
        this process wrote its own over it, or missing from what a gateway that only reads
        data_dir (writing no checkpoint: ``switchpoint learn``) learns; such a gateway needs
        only to read it."""
        self.checkpointer.open()
        if self.reader is not None:
            self.promoted = {name: (arm, reason) for name, (arm, _, reason) in
                             self.reader.promotions().items()}
        self.open_decisions.open(read=self.warns)

    # Snapshots -------------------------------------------------------------------------------

    def prepare(self, live: Live, old: Live | None) -> Live:
        """Give a new snapshot its learning: the service's settings and log on its router,
        a router for each policy an experiment arm names, its tenants' memories."""
        settings = live.settings
        wanted = learning_settings(settings)
        arms: dict[str, Router] = {}
        named: dict[str, list[str]] = {}  # policy -> the arms naming it
        for experiment_name, experiment in settings.experiments.items():
            for arm_name, arm in experiment.arms.items():
                policy = arm.policy
                if policy is None or policy == live.policy:
                    continue
                named.setdefault(policy, []).append(f"{experiment_name}/{arm_name}")
                if policy not in arms:
                    before = None if old is None or old.learning is None else (
                        old.learning.arm_routers.get(policy))
                    arms[policy] = self.state.arm_router(settings, policy, before)
        for policy, router in arms.items():
            self._warn_unprofiled(policy, router, named[policy])
        for router in [live.router, *arms.values()]:
            if router.learner.settings != wanted:
                router.learner.configure(wanted)
            router.learner.log = RouterLog(self.log, router)
        self.preferences.compares.resize(settings.learning.max_compares,
                                         settings.learning.compare_ttl_s)
        self.log.resize(settings.learning.memory_size)
        self.open_decisions.resize(settings.learning.memory_size, [live.router, *arms.values()])
        learning = LiveLearning(live.router, settings, arms,
                                Experiments(settings, self._promoted_arms()))
        return replace(live, learning=learning)

    def _warn_unprofiled(self, policy: str, router: Router, arms: list[str]) -> None:
        """Warn of the catalog models the weights of ``policy``, which experiment ``arms``
        route with (``router``'s), do not profile, naming the arms not warned of already
        with these weights and models (see :attr:`warns`)."""
        unprofiled = tuple(router.unprofiled_models)
        note = unprofiled_note(policy, router.weights_id, unprofiled)
        if note is None or not self.warns:
            return
        new = [arm for arm, _, _ in self._arms_warned.new(
            ((arm, router.weights_id, unprofiled) for arm in arms), MAX_ARMS_WARNED)]
        if not new:
            return
        log.warning("experiment arm(s) %s of policy %s: %s (the arm takes the weights under "
                    "policies: {%s: DIR} in the config, else the configured weights when "
                    "they are of its policy, else the bundled ones: switchpoint fit RECORDS "
                    "--policy %s --out DIR makes them)",
                    listed_names(new, quoted=True), policy, note, policy, policy)

    def forget_promotion(self, name: str) -> None:
        """Forget experiment ``name``'s promotion (one of an earlier experiment of its name)."""
        self.promoted = {n: p for n, p in self.promoted.items() if n != name}

    def _promoted_arms(self) -> dict[str, str]:
        """The arm each promoted experiment sends its traffic to."""
        return {name: arm for name, (arm, _) in self.promoted.items()}

    def _replay(self, live: Live) -> None:
        """Take up the feedback log into the snapshot (under the state's guard, right before
        it goes live): the learning checkpoint if it fits, then every event after it; else
        the whole log."""
        learning: LiveLearning | None = live.learning
        if learning is None:
            return
        # A promotion made while the snapshot was readied (outside the guard, which every
        # promotion is made under) applies to it too: it went to the snapshot serving then.
        learning.experiments.promoted = self._promoted_arms()
        t0 = time.perf_counter()
        self.log.flush()
        if not self.replays:
            last_row = None if self.reader is None else self.reader.last_feedback()
            learning.folded = self._folded(learning)
            learning.passed_over = 0 if last_row is None else last_row[0]
            self._cover(learning, learning.passed_over)
            return
        after = self.checkpointer.restore(learning)
        learning.folded = self._folded(learning)
        last = [after]

        def rows() -> Iterator[LoggedFeedback]:
            for row in self.log.replay(after=after):
                last[0] = row.seq
                yield row

        learning.replay(rows())
        self._cover(learning, last[0])
        if learning.replayed or learning.skipped:
            log.info("took up %d feedback event(s) (%d from the learning checkpoint, %d "
                     "replayed after it; of all of them, %d the weights held already, exported "
                     "from this log; %d passed over, learnable by none of the routers) in %.2f s",
                     learning.replayed, learning.restored,
                     learning.replayed - learning.restored, learning.in_weights,
                     learning.skipped, time.perf_counter() - t0)
        self.checkpointer.when_due(learning, CHECKPOINT_AFTER_REPLAY)

    def _folded(self, learning: LiveLearning) -> dict[tuple[int, str], int]:
        """Where each router's weights already hold outcomes of this log: weights exported by
        ``switchpoint learn --export`` name the log position they folded in (and the event
        there, so another data_dir's log is not mistaken for this one)."""
        folded: dict[tuple[int, str], int] = {}
        if self.reader is None:
            return folded
        for router in learning.routers():
            for entry in router.weights.provenance.get("learned", []):
                if not isinstance(entry, Mapping):
                    continue
                seq, event_id, tenant = (entry.get("through_seq"), entry.get("through_event"),
                                         entry.get("tenant"))
                if not (isinstance(seq, int) and isinstance(event_id, str)
                        and isinstance(tenant, str)):
                    continue
                if self.reader.event_id_at(seq) == event_id:
                    key = (id(router), tenant)
                    folded[key] = max(folded.get(key, 0), seq)
        return folded

    def nothing_new(self, tenant: str | None = None) -> str | None:
        """Why the live router holds no outcome of ``tenant`` to fold into new weights although
        the feedback log holds the tenant's feedback: all of it is in the live weights already
        (exported from this log), or teaches no routing (quality observations of a model a
        request named). None when that is not the case: no feedback at all, outcomes the
        router holds, or outcomes it passed over for another reason."""
        name = check_tenant(tenant)
        with self.state.guard:
            live = self.state.peek()
            if live is None or live.learning is None or self.reader is None:
                return None
            router = live.router
            if router.learner.n_outcomes(name):
                return None
            folded = max((seq for (key, who), seq in self._folded(live.learning).items()
                          if key == id(router) and who == name), default=0)
        reader = self.reader
        held = sum(reader.feedback_kinds(name).values())
        since = reader.feedback_kinds(name, after=folded)
        held -= sum(since.values())
        observations = since.get("model", 0)
        if sum(since.values()) != observations or not (held or observations):
            return None
        parts = []
        if held:
            parts.append(f"its {held} feedback row(s) up to feedback log position {folded} "
                         f"are in the weights already ({router.weights_id}, exported from "
                         "this log)")
        if observations:
            parts.append(f"{'the' if held else 'its'} {observations} "
                         f"{'since' if held else 'outcome(s)'} are quality observations of "
                         "a model a request named (or a session pin sent it to), which teach "
                         "no routing")
        return (f"tenant {json_quoted(name, 100)} has no outcome to fold into the weights: "
                + "; ".join(parts) + "; feedback on routed decisions (chat requests for model "
                "\"auto\" without a pin, or POST /v1/route) teaches routing, and an export "
                "after it folds that in")

    def log_position(self) -> tuple[int, str] | None:
        """The feedback log position the live snapshot has learned every row up to, with the
        event there, rows another process wrote taken up first (None: no store, or an empty
        log)."""
        with self.state.guard:
            live = self.state.peek()
            learning: LiveLearning | None = None if live is None else live.learning
            if learning is None:
                return None
            return self._learned_through(learning)

    def log_kept(self, *, deployment: bool, tenant: str | None = None
                 ) -> dict[str, Any] | None:
        """What of the feedback log a status's figures read from it (each tenant's feedback
        quality per model) cover: whether retention ``pruned`` rows of it, and the time of
        the oldest row kept (``kept_since``; None: none is kept). The outcomes pruned
        stay learned (the learning checkpoint holds them; the learned router's counts include
        them), but those figures no longer count them. ``tenant`` (a client's view): both are
        of that tenant's own rows, never another tenant's (whose first feedback's time, or
        that it gave feedback longer ago than retention keeps, is not the caller's to learn):
        ``pruned`` says whether retention deleted rows of that tenant, that is whether its
        learned router holds more of its outcomes than the log keeps of its rows that teach
        routing. ``deployment`` (the operator's view) adds the log position of the oldest row
        kept (``first_kept``) and how many rows were pruned before it (``pruned_rows``).
        None without a store: no figure is read from a log."""
        if self.reader is None:
            return None
        first = self.reader.first_kept()
        pruned = 0 if first is None else first[0] - 1
        own = first if tenant is None else self.reader.first_kept(tenant)
        out: dict[str, Any] = {"pruned": pruned > 0 and (tenant is None
                                                         or self._pruned_of(tenant)),
                               "kept_since": None if own is None else own[1]}
        if deployment:
            out.update(first_kept=None if first is None else first[0], pruned_rows=pruned)
        return out

    def _pruned_of(self, tenant: str) -> bool:
        """Whether retention deleted feedback rows of ``tenant``: its learned router holds
        more of its events than the log keeps of its rows that teach routing (each such row
        is one event learned; a quality observation of a named model teaches none)."""
        assert self.reader is not None
        with self.state.guard:
            live = self.state.peek()
            learned = 0 if live is None else live.router.learner.n_events(tenant)
        if not learned:
            return False
        kept = self.reader.feedback_kinds(tenant)
        return learned > sum(n for kind, n in kept.items() if kind != "model")

    def caught_up(self, most: int = RETENTION_TAKE_UP_ROWS,
                  step: int = STATUS_TAKE_UP_ROWS) -> tuple[int | None, str]:
        """Learn now the rows another process wrote to the log (see :meth:`_take_up`),
        ``step`` at a time under the state's guard, which feedback and statuses get between
        the steps (a large backlog keeps none of them waiting long), at most ``most`` in all
        (the rest at the next take-up). Returns the log position the live snapshot has learned
        every row up to and its checkpoint key, read together (None and ``""``: no store, or
        nothing learns). Before a status reports what was learned, and before the service's
        retention prunes the log, which it prunes no further than that position, nor past the
        checkpoint of that key (a checkpoint another process wrote may hold rows this one has
        not learned yet: once gone, no take-up finds them)."""
        previous: int | None = None
        read = 0
        while True:
            with self.state.guard:
                live = self.state.peek()
                learning: LiveLearning | None = None if live is None else live.learning
                if learning is None or self.reader is None:
                    return None, ""
                chunk = min(step, most - read)
                self._take_up(learning, most=chunk)
                position, key = learning.covered, learning.checkpoint_key()
            read += chunk
            if position == previous or read >= most:
                return position, key
            previous = position

    def _cover(self, learning: LiveLearning, seq: int) -> None:
        """``learning`` holds every row of the log up to position ``seq`` (read after a
        flush, under the state's guard): rows past it are this process's own appends from now
        on, or ones it has not learned."""
        learning.covered = seq
        self.log.forget_own()

    def _take_up(self, learning: LiveLearning, *, own: str | None = None,
                 most: int | None = None) -> None:
        """Learn, in log order, the rows after the position ``learning`` covers that another
        process wrote (an offline ``switchpoint feedback`` on this data_dir), or that the
        store kept after this one stopped waiting for them, as a replay would: a repeat of a
        decision's outcome given here then replaces the one given there, and says so, rather
        than being learned beside it. ``own``: the event of this process's row the log has
        just kept, which the caller learns next: only the rows before it are taken up, so
        whichever process wrote a row, the live state learns the rows in the log's order, as a
        replay after a restart does. ``most``: read at most that many rows (a status, which
        must not wait on a large backlog: the rest are taken up next time). Called under the
        state's guard, before feedback is learned (and before the learning's log position is
        read)."""
        if self.reader is None:
            return
        self.log.flush()
        stop: int | None = None  # (the position of ``own``, found in the same read)
        last, taken, read = learning.covered, 0, 0
        for row in self.reader.feedback(after=learning.covered):
            if own is not None and row.event.event_id == own:
                stop = row.seq
                break
            if most is not None and read >= most:
                break
            last, read = row.seq, read + 1
            if row.kind == "model" or self.log.own(row.event.event_id):
                continue  # a quality observation teaches no router; this process's is learned
            learning.learn(row.event, row.weights_id, seq=row.seq)
            taken += 1
        if taken:
            log.info("took up %d feedback event(s) another process (such as an offline "
                     "`switchpoint feedback`) wrote to the log after position %d",
                     taken, learning.covered)
        if most is not None and read >= most and stop is None:
            learning.covered = last  # more may follow: this process's rows past it stay known
        else:
            self._cover(learning, last if stop is None else stop)

    def _take_up_decision(self, learning: LiveLearning, router: Router, decision_id: str,
                          tenant: str) -> None:
        """Where the snapshot passed the log over (see :attr:`replays`), learn the rows of
        ``decision_id`` it passed over, in log order, as a replay would, before feedback on it
        reads what it holds (the outcome a repeat replaces, the cost it keeps): once, while
        ``router`` (the one that remembers the decision) holds no outcome of it; one it holds
        was taken up so, or learned here since, which is newer. Called under the state's
        guard."""
        if (learning.passed_over and self.reader is not None
                and router.learner.outcome(decision_id, tenant) is None):
            if self._take_up_pruned(learning):
                return
            learning.replay(iter(self.reader.decision_feedback(decision_id, tenant,
                                                               learning.passed_over)))

    def _take_up_pruned(self, learning: LiveLearning) -> bool:
        """Where the snapshot passed the log over and retention pruned rows of it, take up
        what a start would, once, before the first outcome it learns: the learning checkpoint
        (which alone holds what the pruned rows taught: the outcome a repeat replaces, the
        cost it keeps), then the rows after it that were passed over. A repeat of a pruned
        outcome then says it replaced it, as a service's answer does. Whether it did (False:
        the log was not pruned, something was learned already, or no checkpoint fits, which
        is logged); called under the state's guard."""
        if (self.reader is None or self.checkpoint_path is None or learning.events
                or not self.checkpoint_path.exists()):
            return False
        first = self.reader.first_feedback()
        if first is None or first <= 1:
            return False
        try:
            after = self.checkpointer.read(learning)
        except CheckpointError as exc:
            log.warning("learning checkpoint not used: %s; an outcome the feedback log no "
                        "longer keeps (pruned by retention) is not known to this command, so "
                        "its answer may say an outcome was learned where it replaced one",
                        exc)
            return False
        through = learning.passed_over
        learning.replay(itertools.takewhile(lambda row: row.seq <= through,
                                            self.log.replay(after=after)))
        learning.passed_over = 0  # (the log up to it is taken up: no decision's rows again)
        # (a checkpoint a service running beside wrote since holds rows past it too)
        learning.covered = max(learning.covered, after)
        return True

    def _taking_up(self, learning: LiveLearning) -> Callable[[FeedbackEvent], None]:
        """What a report calls once the log kept its event, before it learns it: the rows
        another process logged before that event are taken up first (see :meth:`_take_up`)."""
        return lambda event: self._take_up(learning, own=event.event_id)

    def _learned_through(self, learning: LiveLearning) -> tuple[int, str] | None:
        """The newest row of the feedback log, with its event id, once ``learning`` has
        learned every row up to it (those another process wrote taken up first); None for an
        empty log, or no store. Called under the state's guard."""
        if self.reader is None:
            return None
        self._take_up(learning)
        event_id = self.reader.event_id_at(learning.covered) if learning.covered else None
        return None if event_id is None else (learning.covered, event_id)

    # Checkpoints -----------------------------------------------------------------------------

    def checkpoint_key(self) -> str:
        """The key of the checkpoint the live snapshot's learning would take up (see
        :meth:`LiveLearning.checkpoint_key`); one no checkpoint has when it learns nothing."""
        with self.state.guard:
            live = self.state.peek()
            learning = None if live is None else live.learning
            return "" if learning is None else learning.checkpoint_key()

    def checkpoint(self) -> Path | None:
        """Save what the live snapshot has learned to ``data_dir`` now, with the log position
        it holds, so the next start or reload replays only what follows; returns the file
        (None: no store, or nothing learned). Everything learned is in the feedback log too:
        a checkpoint only saves replaying it."""
        return self.checkpointer.write()

    def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint what was learned since the last checkpoint (a graceful stop), after any
        checkpoint already under way; from now until :meth:`open`, no checkpoint run starts
        (what feedback learns meanwhile is in this one, or in the feedback log). Without
        ``checkpoint`` (an opening that failed), the log's read connections alone close."""
        self.checkpointer.shut()
        self.open_decisions.close()
        try:
            if checkpoint:
                self.checkpoint()
        except (OSError, sqlite3.Error, StoreError, ValueError) as exc:
            log.error("learning checkpoint not written at stop: %s (the next start replays "
                      "the feedback log instead)", exc)
        finally:
            self.log.close()

    # Pending decisions -----------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def made_for_a_call(live: Live) -> Iterator[MadeForACall]:
        """What a routing call makes (its thread gives each decision to :meth:`MadeForACall.
        made` as it is made), forgotten by the routers of ``live`` but for the one the call
        keeps (:meth:`MadeForACall.let_go`, after :meth:`keep_pending`); all of them when the
        call ends without keeping one (the block left by an exception): cancelled
        (``asyncio.wait_for``, Ctrl-C) or refused after routing, it returned no id an outcome
        could name, and no log or pending row has it, so a restart would not have it either;
        a prompt hash then names the decision of that prompt made before it. A decision its
        thread makes after that (a cancelled call does not wait for the thread) is forgotten
        as it is made."""
        made = MadeForACall(live)
        try:
            yield made
        except BaseException:
            made.let_go()
            raise

    def keep_pending(self, live: Live, decision: RoutingDecision) -> None:
        """Keep what feedback on ``decision`` needs in the store (lazily: it shares the commit
        of the decision's log entry), pruning the table to the learning memory now and then
        (the rows of the decisions let go of by the memory's rule: see
        :meth:`OpenDecisions.holds`); the remembered decision first made to name the model
        ``decision`` names (see :meth:`LiveLearning.follow`: escalation or a health-aware
        choice may have replaced the router's)."""
        self.open_decisions.keep(live, decision)

    def answered_by(self, live: Live, decision: RoutingDecision | None, model: str) -> None:
        """``model`` answers ``decision``'s request: feedback on the decision teaches the model
        that answered, not the one routed to. The request log says which model answered once
        its entry is written; this says it before (a stream's entry is written only when it
        ends), and where no log is kept (a gateway without a store)."""
        learning: LiveLearning | None = live.learning
        if decision is None or learning is None or model == decision.selected_model:
            return
        for router in learning.routers():
            router.learner.memory.set_chosen(decision.decision_id, model,
                                             decision.expected_costs.get(model))

    def stream_started(self, request_id: str, decision: RoutingDecision | None,
                       tenant: str | None, model: str) -> None:
        """A stream is under way, answered by ``model``: feedback on its request id is taken
        before its log entry is written, when it ends (see :meth:`stream_ended`)."""
        self.intake.stream_started(request_id, decision, tenant, model)

    def stream_ended(self, request_id: str) -> None:
        """The stream's log entry is written: feedback on its id reads it from the store."""
        self.intake.stream_ended(request_id)

    # Feedback --------------------------------------------------------------------------------

    def report(self, decision_id: object = None, quality_score: object = None,
               success: object = None, *, model: object = None, tenant: str | None = None,
               key_id: str | None = None, comment: object = None,
               cost: object = None, teachable: Callable[[str], None] | None = None,
               prompt_hash: object = None, config_read: bool = True) -> FeedbackResult:
        """Learn how one decision (or one named-model request) went; see the module docstring.
        It is named by ``decision_id`` or by ``prompt_hash`` (exactly one): the latest
        decision routed on that prompt that still takes feedback (for ``tenant``; made before
        a restart or a reload too, see :meth:`FeedbackIntake._latest_of`), learned as that
        decision id. ``tenant`` scopes the lookup (None: any tenant, for trusted code);
        ``cost`` is what the answer cost, if the caller knows it (see
        ``Router.report_outcome``); ``teachable`` refuses a model the caller may not teach
        about (its key's limits); ``config_read=False`` refuses a decision answered by a model
        the catalog does not hold (see
        :func:`~switchpoint.gateway.feedback_rules.check_listed`). Runs on a worker thread,
        under the state's guard, on the snapshot live then; the commits it returns are waited
        for by the caller. Everything is checked before anything is learned."""
        return self.intake.report(decision_id, quality_score, success, model=model, tenant=tenant,
                                  key_id=key_id, comment=comment, cost=cost,
                                  teachable=teachable, prompt_hash=prompt_hash,
                                  config_read=config_read)

    def check_writable(self, what: str, then: str = NOTHING_LEARNED) -> None:
        """Turn away at once what must be kept (feedback, a comparison) where it cannot be:
        by a gateway that only reads data_dir (a :class:`StoreError`), once the store is
        closed, and for a few seconds after the database refused a write (a
        full disk, a lock held too long), until a write goes through; after that the next
        write tries the database again."""
        if self.store is None:
            return
        if not self.checkpoints:  # (a gateway that only reads data_dir: its store stays shut)
            raise StoreError(f"{quoted_path(self.store.path)}: this gateway only reads "
                             f"data_dir (reads_only=True), so {what} cannot be kept "
                             f"({then}); send it to a gateway built without reads_only, "
                             "such as the service's")
        if not self.store.is_open:
            raise GatewayClosedError(f"{quoted_path(self.store.path)}: the gateway is closed, so "
                             "nothing can be "
                             "learned or kept; start it again (Gateway.start) to give feedback")
        refusing = self.store.refusing()
        if refusing is not None:
            reason, left = refusing
            raise not_kept(what, reason, then=then, retry_after=left, store=self.store)

    # Preferences -----------------------------------------------------------------------------

    def new_compare(self, live: Live, tenant: str, labels: dict[str, str],
                    answers: Mapping[str, float | None], text: str, *, blind: bool = True,
                    details: Mapping[str, Mapping[str, Any]] | None = None
                    ) -> tuple[Compare, Future[None] | None]:
        """Keep a comparison for its scores, with what they will teach by (the prompt's vector
        and units, computed now: the prompt itself is not kept; ``answers``, the models that
        answered, with what each answer cost where the catalog priced it, kept in the weights'
        units) and what its score reveals (``details``: each model's answer, see
        :func:`~switchpoint.gateway.preferences.answer_detail`), in memory and in the store;
        returns it with the store's commit to wait for (None without a store)."""
        return self.preferences.new_compare(live, tenant, labels, answers, text, blind=blind,
                                            details=details)

    def score(self, compare_id: object, scores: object, *, tenant: str,
              key_id: str | None = None, teachable: Callable[[str], None] | None = None
              ) -> tuple[Compare, list[dict[str, Any]], list[Future[None]]]:
        """Teach the scores of one comparison (checked whole before anything is learned;
        ``teachable`` refuses a model the caller may not teach about): one outcome per scored
        model, to the learned router (the tenant's overlay) and the tenant's memory, logged
        as ``preference`` feedback, each learned once the log keeps it. A repeat replaces the
        scores it names, unless the comparison is blind and was revealed (:meth:`reveal`): a
        409 then, as while another score of it is being taken: the caller reveals it, or
        :meth:`release` s it when the score is refused after this returns. A blind comparison
        is scored by label only."""
        return self.preferences.score(compare_id, scores, tenant=tenant, key_id=key_id,
                                      teachable=teachable)

    def reveal(self, compare: Compare) -> Compare:
        """Mark a blind comparison's models revealed (a score's answer names them), in the
        store first: it takes no score after this. A store that does not keep it is a 503
        (the models stay hidden, and a repeat of the scores is taken). Blocks on the store."""
        return self.preferences.reveal(compare)

    def release(self, compare: Compare) -> None:
        """End a blind comparison's hold for its score (see :meth:`score`)."""
        self.preferences.release(compare)

    # Experiments -----------------------------------------------------------------------------

    def report_experiment(self, settings: Settings, name: str,
                          ended: Mapping[str, tuple[ExperimentConfig, float]] | None = None
                          ) -> dict[str, Any]:
        """The experiment's report (see :func:`experiment_report`; ``ended``: the run-time
        experiments ended, with when), read from the logs and the totals the store keeps of
        the decisions retention pruned, with what of the feedback log is kept
        (``feedback_log``, see :meth:`log_kept`)."""
        return {**experiment_report(name, settings, self.reader, self.promoted, ended),
                "feedback_log": self.log_kept(deployment=False)}

    def promote(self, settings: Settings, name: str, arm: str | None) -> dict[str, Any]:
        """Send all of the experiment's traffic to ``arm`` (default: its winner; 409 while
        there is none). Kept in the store, so it survives restarts; the config still names the
        arms, so make it permanent there."""
        check_promotion(settings.experiments[name], name, arm)
        report = self.report_experiment(settings, name)
        if arm is None:
            arm = report["winner"]
            if arm is None:
                raise ConflictError(f"experiment {json_quoted(name, 100)} has no winner yet "
                                    f"({WINNER_RULE}); name an arm to promote it anyway",
                                    param="arm")
            reason = "winner"
        else:
            reason = "winner" if arm == report["winner"] else "chosen"
        # One promotion at a time, from its row to the arm it sends traffic to: of two at
        # once, the one the store keeps last is the one that applies, now and after a restart.
        with turn(self.store, self._promotion_lock, "the promotion", "nothing was promoted"):
            self.check_writable("the promotion", "nothing was promoted")
            written(self.store, PromotionRecord(time.time(), name, arm, reason),
                    "the promotion", "nothing was promoted")
            with self.state.guard:
                self.promoted = {**self.promoted, name: (arm, reason)}
                current = self.state.peek()
                if current is not None and current.learning is not None:
                    current.learning.experiments.promoted[name] = arm
        return self.report_experiment(settings, name)

