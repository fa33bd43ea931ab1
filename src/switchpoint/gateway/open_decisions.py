"""The decisions open to feedback across restarts and reloads: what feedback on each recent
decision needs is kept in the ``pending`` table (``learning.memory_size`` of them, shared by
the tenants as a router's memory shares its own), and :class:`OpenDecisions` counts which of
its rows are still open, keeps each new one, lets go of (and prunes) those past the memory, and
finds the one a feedback names, restoring it to the router that made it. :class:`MadeForACall`
forgets the decisions a routing call made but did not keep. The
:class:`~switchpoint.gateway.learning.GatewayLearning` owns one."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from typing import Any

from switchpoint._fair import FairShares
from switchpoint.decision import RoutingDecision
from switchpoint.errors import StoreError
from switchpoint.gateway.feedback_log import ServiceFeedbackLog
from switchpoint.gateway.live import Live, RouterState
from switchpoint.gateway.live_learning import LiveLearning
from switchpoint.learning.memory import PendingDecision
from switchpoint.router import Router
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import LearningReader, PendingForget, PendingRecord

log = logging.getLogger("switchpoint.gateway")


#: Pending decisions written between two prunes of the table; also the most decisions let go
#: of that wait for one (more, as when a reload makes ``learning.memory_size`` smaller, are
#: deleted at once, this many a forget).
PRUNE_EVERY = 256
#: Rows of one prompt a lookup by its hash reads, newest first, for the latest still open to
#: feedback: those let go of wait for the next prune (at most ``PRUNE_EVERY`` writes' worth).
MAX_PROMPT_ROWS = 4 * PRUNE_EVERY


class MadeForACall:
    """The decisions one routing call made (see :meth:`GatewayLearning.made_for_a_call`)."""

    def __init__(self, live: Live) -> None:
        self._routers = [live.router] if live.learning is None else live.learning.routers()
        self._ids: list[str] = []
        self._gone = False
        self._lock = threading.Lock()

    def made(self, decision: RoutingDecision) -> RoutingDecision:
        """Note ``decision`` as made for the call (on the thread that made it), or forget it
        at once when the call has ended without it."""
        with self._lock:
            if not self._gone:
                self._ids.append(decision.decision_id)
                return decision
        self._forget([decision.decision_id])
        return decision

    def let_go(self, kept: RoutingDecision | None = None) -> None:
        """The call ended keeping ``kept`` (None: no decision): forget the others made (one
        an SLA's re-routing replaced, whose id no caller holds), and any made later."""
        with self._lock:
            self._gone = True
            ids, self._ids = self._ids, []
        self._forget([i for i in ids if kept is None or i != kept.decision_id])

    def _forget(self, ids: list[str]) -> None:
        for decision_id in ids:
            for router in self._routers:
                router.learner.memory.forget(decision_id)

class OpenDecisions:
    """The decisions the pending table keeps open to feedback (see :meth:`holds`), kept in
    ``store`` (None: none is kept; feedback names the decisions the routers remember) and read
    through ``feedback_log``'s reader, for the learning memory of ``state``'s settings."""

    def __init__(self, state: RouterState, store: SQLiteStore | None,
                 feedback_log: ServiceFeedbackLog) -> None:
        self.state = state
        self.store = store
        self.log = feedback_log
        self._pending_writes = 0
        # The decisions the pending table keeps open to feedback, shared by the tenants as
        # each router's memory shares its own (read from the table at the first need: None
        # until then), and those let go of, whose rows the next prune deletes.
        self._open: FairShares | None = None
        self._let_go: list[str] = []
        self._open_lock = threading.Lock()
        self._reading_open: threading.Thread | None = None  # (the read at a start, running)

    @property
    def reader(self) -> LearningReader | None:
        return self.log.reader

    def open(self, *, read: bool) -> None:
        """The store is open: the table is read again at the first need, or now, on a thread
        of its own, when ``read`` (a service: off a request's path)."""
        with self._open_lock:  # (read again: the table may have changed while it was closed)
            self._open, self._let_go = None, []
        if self.reader is not None and read:  # a service: read now, off a request's path
            self._reading_open = threading.Thread(
                target=self._read_open, name="switchpoint-pending-read",
                args=(self.state.settings.learning.memory_size,), daemon=True)
            self._reading_open.start()

    def close(self) -> None:
        """Wait for the read at a start if it runs (it reads on the log's connections)."""
        if self._reading_open is not None:  # (it reads on the log's connections)
            self._reading_open.join()
            self._reading_open = None

    def _read_open(self, capacity: int) -> None:
        """Read the decisions the pending table keeps open (see :meth:`holds`), so that the
        first decision kept or looked up does not wait for it (it waits for this read, if it
        comes while it runs); one that fails is tried again at that first need."""
        try:
            self.holds("", capacity)
        except Exception as exc:  # (a thread of its own: nothing above it to raise to)
            log.warning("the decisions open to feedback were not read at the start: %s (read "
                        "again at the first feedback or routing decision)", exc)

    def keep(self, live: Live, decision: RoutingDecision) -> None:
        """:meth:`GatewayLearning.keep_pending
        <switchpoint.gateway.learning.GatewayLearning.keep_pending>`."""
        learning: LiveLearning | None = live.learning
        if learning is None:
            return
        if self.store is None:
            learning.follow(decision)
            return
        capacity = learning.settings.learning.memory_size
        if not capacity:
            return
        record = learning.pending(decision)
        if record is None:
            return
        try:
            self.store.append_lazy(record)
            with self._open_lock:
                held = self._open_decisions(capacity)
                let_go = list(held.track_within(record.id, record.entry.tenant, capacity))
                self._let_go.extend(let_go)
                self._pending_writes += 1
                forgets = self._forgets(every=self._pending_writes % PRUNE_EVERY == 0)
        except StoreError as exc:
            log.error("decision %s not kept for feedback: %s", decision.decision_id, exc)
            return
        self._forget_in(learning.routers(), let_go)
        self._prune(forgets)

    @staticmethod
    def _forget_in(routers: list[Router], let_go: list[str]) -> None:
        """The decisions the pending table let go of (``let_go``) are let go of by the
        ``routers``' memories too: the table counts the decisions kept before a restart, which
        a memory does not hold, so its rule may let one go that the memory still holds, which
        took feedback until a restart refused it. The table's order is the one order."""
        for decision_id in let_go:
            for router in routers:
                router.learner.memory.forget(decision_id)

    def _open_decisions(self, capacity: int) -> FairShares:
        """The decisions the pending table keeps open to feedback (see :meth:`holds`): read
        from the table the first time, in the order its rows were written, letting go of those
        past ``capacity`` by the memory's rule. Call with ``_open_lock`` held."""
        if self._open is None:
            held = FairShares()
            if self.reader is not None:
                for decision_id, tenant in self.reader.pending_tenants():
                    self._let_go.extend(held.track_within(decision_id, tenant, capacity))
            self._open = held
        return self._open

    def spilled_written(self, rows: list[tuple[str, list[Any]]]) -> None:
        """The store wrote ``rows`` of its spill file once open (the database refused them
        at the start; see ``SQLiteStore.spilled_written``): the pending rows among them are
        counted as open to feedback, the newest (as their place in the table says), and
        those a forget among them deleted are let go of, so the decisions held are the
        table's rows whether the start's read came before or after them. A row held already
        (that read saw it) keeps its place; one let go of waiting for its prune stays so."""
        with self._open_lock:
            held = self._open
            if held is None:  # (not read yet: the read sees them)
                return
            capacity = self.state.settings.learning.memory_size
            waiting = set(self._let_go)
            for insert, values in rows:
                if insert == PendingForget.insert:
                    for decision_id in json.loads(values[0]):
                        held.discard(decision_id)
                elif insert == PendingRecord.insert:
                    decision_id, tenant = str(values[0]), str(values[2])
                    if decision_id not in held and decision_id not in waiting:
                        held.track(decision_id, tenant)
            self._let_go_past(held, capacity)
            forgets = self._forgets()
        self._prune(forgets)

    def _let_go_past(self, held: FairShares, capacity: int) -> list[str]:
        """Let go of the decisions past ``capacity`` in ``held`` (its rule says which), their
        rows to be deleted by the next prune; returns them. Call with ``_open_lock`` held."""
        let_go = []
        while len(held) > capacity:
            let_go.append(held.pop())
        self._let_go.extend(let_go)
        return let_go

    def _forgets(self, *, every: bool = False) -> list[PendingForget]:
        """The forgets that delete the rows let go of (taken from those waiting): each full
        :data:`PRUNE_EVERY` of them, and the rest too when ``every`` (a prune), so that no
        more than that many wait. Call with ``_open_lock`` held; append them after."""
        waiting, forgets = self._let_go, []
        while len(waiting) >= PRUNE_EVERY or (every and waiting):
            forgets.append(PendingForget(tuple(waiting[:PRUNE_EVERY])))
            del waiting[:PRUNE_EVERY]
        return forgets

    def _prune(self, forgets: list[PendingForget]) -> None:
        """Append ``forgets`` (see :meth:`_forgets`) to the store; not appended (the store
        closed), their rows are let go of again as the table is read at the next start."""
        try:
            for forget in forgets:
                assert self.store is not None
                self.store.append_lazy(forget)
        except StoreError as exc:
            log.warning("pending decisions let go of were not deleted: %s (let go of again at "
                        "the next start)", exc)

    def resize(self, capacity: int, routers: list[Router]) -> None:
        """A snapshot of ``capacity`` (``learning.memory_size``) is readied, with ``routers``:
        where it is smaller, the decisions past it are let go of now, by the routers' memories
        too, and their rows deleted (on the reload's thread, not a request's)."""
        with self._open_lock:
            if self._open is None:  # (not read yet: the read lets go of them)
                return
            let_go = self._let_go_past(self._open, capacity)
            forgets = self._forgets(every=bool(let_go))
        self._forget_in(routers, let_go)
        self._prune(forgets)

    def holds(self, decision_id: str, capacity: int) -> bool:
        """Whether the pending table keeps ``decision_id`` open to feedback, with
        ``capacity`` (``learning.memory_size``) open in all: those a router's memory would hold
        had it never restarted. The table's rows are shared by the tenants as a memory shares
        its decisions (:class:`~switchpoint._fair.FairShares`): its rows are read
        once, in the order they were written, then each decision kept is counted as it is
        written, so a tenant routing without end pushes out its own oldest rows, not another
        tenant's, across restarts and reloads too. The rows let go of are deleted by the next
        prune (every :data:`PRUNE_EVERY` writes, or as soon as that many wait: a reload that
        makes the memory smaller deletes those past it at once), and are not found meanwhile;
        a row a crash kept past its prune is let go of again as the table is read at the next
        start."""
        if not capacity:
            return False
        with self._open_lock:
            held = self._open_decisions(capacity)
            self._let_go_past(held, capacity)  # (a reload may have made the memory smaller)
            forgets = self._forgets()  # (a table read past capacity: those past it)
            found = decision_id in held
        self._prune(forgets)
        return found

    def kept_open(self, decision_id: str, capacity: int) -> tuple[PendingDecision, str] | None:
        """The decision the pending table keeps open to feedback as ``decision_id`` (see
        :meth:`holds`), with the weights it was made under; None where it keeps none open (one
        let go of waits for a prune) or no store is read."""
        if self.reader is None or not self.holds(decision_id, capacity):
            return None
        return self.reader.pending(decision_id)

    def find(self, learning: LiveLearning, decision_id: str
             ) -> tuple[Router, PendingDecision] | None:
        """The router that remembers ``decision_id`` (restoring it from the store when the
        router in memory does not: a restart or a reload since). One restored stays open to
        feedback while the pending table holds it (see :meth:`holds`): its row's place, not
        its restoring, says when it goes (the memory remembers it as its newest, so it would
        outlive the row, taking feedback a restart then refuses)."""
        capacity = learning.router.learner.memory.capacity
        for router in learning.routers():
            memory = router.learner.memory
            entry = memory.get(decision_id)
            if entry is None:
                continue
            if (self.store is not None and memory.is_restored(decision_id)
                    and not self.holds(decision_id, capacity)):
                memory.forget(decision_id)  # (its row let go of: a restart would not find it)
                return None
            return router, entry
        # (only the decisions the table keeps open take feedback, though it keeps those let go
        # of until its next prune)
        found = self.kept_open(decision_id, capacity)
        if found is None:
            return None
        entry, weights_id = found
        for router in learning.routers():
            if router.weights_id == weights_id:
                break
        else:
            router = learning.router
            usable = (entry.embedding is not None and router.policy.requires == "embedding"
                      and entry.embedding.shape[-1] == router.weights.dimension)
            if not usable:
                return None
            entry = replace(entry, units=None)
        if not router.learner.memory.capacity:
            return None
        router.learner.remember(entry, restored=True)
        return router, entry
