"""The service's feedback log: outcomes appended to the store's ``feedback`` table and learned
only once it keeps them, and what a refused outcome leaves behind (what a comment may hold is
:mod:`switchpoint.learning.comment`'s).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from switchpoint.errors import (
    ConflictError,
    StorageUnavailableError,
    StoreError,
)
from switchpoint.gateway.kept import not_kept
from switchpoint.learning.comment import MAX_COMMENT
from switchpoint.learning.events import FeedbackEvent
from switchpoint.router import Router
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import LearningReader, LoggedFeedback, feedback_record

log = logging.getLogger("switchpoint.gateway")

#: Outcomes one decision (or one answer of a comparison) takes: its first and the repeats
#: that replace it. Each is a row of the feedback log, which retention prunes only once the
#: learning checkpoint holds it, so repeats without end would grow it without end. Counted
#: over the rows the log keeps: once retention pruned a decision's rows it takes as many
#: again, which is harmless, since the bound is on the log (it still keeps at most this many
#: rows of the decision) and the learned state holds one outcome per decision, each repeat
#: replacing the last.
MAX_OUTCOMES = 20
#: Characters of comment one decision's outcomes keep between them (its first and its
#: repeats): as many as one comment holds, so that each repeat adds a row to the log, not
#: the longest comment again (what a tenant's feedback adds to the disk grows with the
#: decisions it makes, as its requests' entries do, not twenty comments a decision).
MAX_DECISION_COMMENT = MAX_COMMENT
#: Outcomes a log without a store keeps at the least, whatever ``learning.memory_size`` says
#: (a decision's repeats are counted from them).
MIN_MEMORY_ROWS = MAX_OUTCOMES


@dataclass
class Note:
    """What a feedback event is recorded with (set around a report; see :class:`RouterLog`)."""

    kind: str = "decision"
    key_id: str | None = None
    comment: str | None = None
    commits: list[Future[None]] = field(default_factory=list)
    #: Called with the event once the log keeps it, before it is learned (the service takes
    #: up there the rows other processes logged before it, so it learns in the log's order).
    kept: Callable[[FeedbackEvent], None] | None = None


NOTE: contextvars.ContextVar[Note | None] = contextvars.ContextVar("switchpoint_feedback_note",
                                                                    default=None)


#: How long an outcome waits for the store to keep it (seconds); past that it is refused and
#: not learned.
KEEP_WAIT_S = 30.0


#: What a refused outcome left behind, as its 503 says.
NOTHING_LEARNED = "nothing of it was learned; sending it again replaces whatever was"


class ServiceFeedbackLog:
    """The service's feedback log: the store's ``feedback`` table (a list when the gateway keeps
    no store, so nothing survives the process). Appends are queued on the store's writer;
    :meth:`flush` waits until every one is committed (a replay reads what is on disk), and
    :meth:`keep` until one is: outcomes are learned only once kept.

    Without a store the list keeps the newest ``memory_rows`` outcomes (the gateway sizes it
    from ``learning.memory_size``, the decisions open to feedback; at least
    :data:`MIN_MEMORY_ROWS`), oldest dropped first: what the live router learned from a dropped
    one stays learned, but a reload or policy swap, which replays the log, relearns only those
    kept. Rows are indexed by decision, so a repeat's check reads only that decision's rows."""

    def __init__(self, store: SQLiteStore | None, memory_rows: int = 10_000) -> None:
        self.store = store
        self.reader = LearningReader(store.path, store.gone) if store is not None else None
        self.memory_rows = max(int(memory_rows), MIN_MEMORY_ROWS)
        self._memory: deque[LoggedFeedback] = deque()
        self._by_decision: dict[str, deque[LoggedFeedback]] = {}  # each oldest first
        self._last_seq = 0
        self._outstanding: dict[Future[None], str] = {}  # each append's event id
        self._lock = threading.Lock()
        # The event ids of the rows this process's appends committed since :meth:`forget_own`
        # (the rest of the log was written by other processes, such as an offline
        # ``switchpoint feedback`` on the same data_dir). Exact once :meth:`flush` returns.
        self._own: set[str] = set()

    def __len__(self) -> int:
        """Rows held in memory (0 with a store: its rows are on disk)."""
        return len(self._memory)

    def resize(self, memory_rows: int) -> None:
        """Keep at most ``memory_rows`` (at least :data:`MIN_MEMORY_ROWS`) in memory from now
        on, dropping the oldest at once (a reload that changed ``learning.memory_size``)."""
        with self._lock:
            self.memory_rows = max(int(memory_rows), MIN_MEMORY_ROWS)
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Drop the oldest rows past :attr:`memory_rows` (call with the lock held)."""
        while len(self._memory) > self.memory_rows:
            row = self._memory.popleft()
            rows = self._by_decision[row.event.decision_id]
            rows.popleft()  # the oldest row of the log is the oldest of its decision
            if not rows:
                del self._by_decision[row.event.decision_id]

    def append(self, event: FeedbackEvent, kind: str, *, weights_id: str | None,
               key_id: str | None = None, comment: str | None = None) -> Future[None]:
        record = feedback_record(event, kind, weights_id=weights_id, key_id=key_id,
                                 comment=comment)
        if self.store is None:
            with self._lock:
                self._last_seq += 1
                row = LoggedFeedback(self._last_seq, event, kind, weights_id)
                self._memory.append(row)
                self._by_decision.setdefault(event.decision_id, deque()).append(row)
                self._drop_oldest()
            done: Future[None] = Future()
            done.set_result(None)
            return done
        future = self.store.append(record)
        with self._lock:
            self._outstanding[future] = event.event_id
        future.add_done_callback(self._settled)
        return future

    def _settled(self, future: Future[None]) -> None:
        """Count a finished append once (its callback, or :meth:`flush`, whichever is first)."""
        with self._lock:
            if future not in self._outstanding:
                return
            event_id = self._outstanding.pop(future)
            if future.exception() is None:
                self._own.add(event_id)

    def own(self, event_id: str) -> bool:
        """Whether this process's appends committed the row of ``event_id`` since
        :meth:`forget_own` (exact for the rows committed before :meth:`flush` returns)."""
        with self._lock:
            return event_id in self._own

    def forget_own(self) -> None:
        """Forget which rows were this process's (the learning holds every row up to the log
        position it read after a :meth:`flush`: none of those is asked about again)."""
        with self._lock:
            self._own.clear()

    def keep(self, future: Future[None], what: str = "the feedback") -> None:
        """Wait until one appended event is committed; :class:`StorageUnavailableError` when
        the store refused it or did not answer within :data:`KEEP_WAIT_S`."""
        try:
            future.result(timeout=KEEP_WAIT_S)
        except FutureTimeoutError:
            # Not learned, but the store may write it yet: not counted as this process's own,
            # such a row is one it has not learned (like another process's), taken up before
            # the next feedback is learned.
            with self._lock:
                self._outstanding.pop(future, None)
            raise StorageUnavailableError(
                f"{what} was not confirmed kept: the store did not answer within "
                f"{KEEP_WAIT_S:.0f} s (a lock held too long, a slow disk). It was not learned "
                "now, but may still be kept, and then learned before the next feedback (or at "
                "the next reload or restart); sending it again replaces it") from None
        except StoreError as exc:
            raise not_kept(what, exc, then=NOTHING_LEARNED) from None

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every appended event is committed (or failed), and note it."""
        with self._lock:
            outstanding = list(self._outstanding)
        if outstanding:
            wait_futures(outstanding, timeout=timeout)
            for future in outstanding:
                if future.done():
                    self._settled(future)

    def close(self) -> None:
        """Close the read connections kept between reads of the log (before its store
        closes); reads after it open their own."""
        if self.reader is not None:
            self.reader.close()

    def replay(self, tenant: str | None = None, after: int = 0) -> Iterator[LoggedFeedback]:
        """Every logged event in order (of one tenant, if given), after log position
        ``after``."""
        if self.reader is None:
            with self._lock:
                rows = list(self._memory)
            return iter([r for r in rows if r.seq > after
                         and (tenant is None or r.event.tenant == tenant)])
        return self.reader.feedback(tenant, after=after)

    def check_repeats(self, decision_id: str, tenant: str | None, what: str,
                      param: str = "decision_id", comment: str | None = None) -> int:
        """409 when ``decision_id`` (of ``tenant``; None: any) already holds
        :data:`MAX_OUTCOMES` outcomes among the rows the log keeps (see there: those retention
        pruned are not counted), or when ``comment`` would take its outcomes' comments past
        :data:`MAX_DECISION_COMMENT` characters (naming ``comment``; a log without a store
        keeps no comment); ``what`` names it in the message. Waits for the appends under way,
        so that it counts them. Returns how many it holds."""
        self.flush()
        if self.reader is None:
            with self._lock:
                held = sum(1 for row in self._by_decision.get(decision_id, ())
                           if tenant is None or row.event.tenant == tenant)
        else:
            held = self.reader.outcomes(decision_id, tenant)
        if held >= MAX_OUTCOMES:
            raise ConflictError(f"{param}: {what} has taken {held} outcomes, its first and the "
                                f"repeats that replaced it, and takes at most {MAX_OUTCOMES}: "
                                "its latest stands; nothing was learned", param=param)
        if comment and held and self.reader is not None:
            kept = self.reader.comment_chars(decision_id, tenant)
            if kept + len(comment) > MAX_DECISION_COMMENT:
                left = MAX_DECISION_COMMENT - kept
                fix = (f"send a comment of at most {left} characters, or none" if left > 0
                       else "send the outcome without a comment")
                raise ConflictError(
                    f"comment: {what}'s outcomes keep at most {MAX_DECISION_COMMENT} "
                    f"characters of comment between them, and hold {kept} already: {fix} "
                    f"(the outcome replaces the last all the same); nothing was learned",
                    param="comment")
        return held

    def latest_quality(self, decision_id: str, tenant: str) -> float | None:
        if self.reader is None:
            with self._lock:
                for row in reversed(self._by_decision.get(decision_id, ())):
                    if row.event.tenant == tenant:
                        return row.event.quality
            return None
        return self.reader.latest_quality(decision_id, tenant)


class RouterLog:
    """One router's :class:`~switchpoint.learning.events.FeedbackLog`: the service's log,
    recording the router's weights with each event (and, around a gateway report, the kind,
    the caller's key and the comment). An append returns once the event is committed."""

    def __init__(self, log: ServiceFeedbackLog, router: Router) -> None:
        self.log = log
        self.weights_id = router.weights_id

    def append(self, event: FeedbackEvent) -> None:
        note = NOTE.get() or Note()
        future = self.log.append(event, note.kind, weights_id=self.weights_id,
                                 key_id=note.key_id, comment=note.comment)
        note.commits.append(future)
        self.log.keep(future)
        if note.kept is not None:
            note.kept(event)

    def replay(self, tenant: str | None = None) -> Iterator[FeedbackEvent]:
        return (row.event for row in self.log.replay(tenant) if row.kind != "model")


