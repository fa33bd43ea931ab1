"""Session pinning: keep a conversation on one model while its prompt cache is warm.

Three windows, on the time since the session's last answered turn:

=========  ==============================  ===============================================
state      age                             what the gateway does
=========  ==============================  ===============================================
``hard``   ``<= hard_window_s`` (300 s)    skip the router; send to the pinned model
``soft``   ``<= soft_window_s`` (1800 s)   route normally, but subtract ``bonus[model]``
                                           from the pinned model's score (its warm cache)
``fresh``  older, or no pin                route normally
=========  ==============================  ===============================================

A window of 0 is off: ``hard_window_s=0`` pins no request hard, ``soft_window_s=0`` (which
makes both 0) turns pinning off.

Escapes override the pin, and the decision says which one fired:

- ``evicted_missing_model`` — the pinned model has left the catalog;
- ``evicted_vision`` — the request has images and the pinned model lacks ``vision``;
- ``evicted_capability`` — the pinned model's adapter cannot serve the request, whatever its
  card lists (:func:`~switchpoint.gateway.capabilities.adapter_limits`): it carries content
  parts the adapter cannot send (audio or file parts, for a model behind the Anthropic
  Messages API, or a legacy ``function`` result answering no call, or an earlier audio
  answer's id), or asks for several answers (``n``), log probabilities or a JSON answer
  (``response_format``) where the API gives one answer, none and free text;
- ``evicted_post_failure`` — the pinned model failed last time
  (:meth:`SessionPinner.evict_on_failure`; ``evicted_context`` instead when it refused the
  conversation as too long for it), or, when the request is planned, its circuit is
  open or its upstream's ``Retry-After`` is still running (:meth:`PinDecision.unavailable`):
  the router chooses;
- ``rehomed_context`` — in the hard window the conversation outgrew the pinned model's context
  window (the catalog's ``context_window`` no longer holds its estimate, or the pinned model
  refused it as too long last time, when no model answered it): it moves to the closest
  larger-context model that fits (same tier first, then the smallest sufficient window, then
  the lowest price) and is hard-pinned there, as the model that answers is (a target that
  refused it as too long too, when no model answered, is moved on from the same way);
- ``evicted_context`` — the same, but no model fits, or it happened in the soft window (where
  the router chooses anyway, among the models the context filter lets through: for a
  conversation the pinned model refused as too long, only larger ones,
  :attr:`PinDecision.context_floor`); or the re-home target cannot take this request (left
  out, unavailable: :meth:`PinDecision.not_followed`); or the pinned model, called, refused the
  conversation as too long for it (and another answered, or none did: then the next request
  re-homes it, or says ``evicted_context`` too).

A pinned model that is called and does not answer (another model does, by failover) makes
the request's pin ``evicted_post_failure``, and the session moves to the model that answered
(:meth:`Plan.answered_by <switchpoint.gateway.planning.Plan.answered_by>`). So does a request
no model answers (every one failed, the upstream refused the request, or the client left while
failover was calling another model) when the pinned model is among those that failed: the
request's pin is ``evicted_post_failure`` (``evicted_context`` when it refused the
conversation as too long for it), and the session's stored pin is evicted, remembering
which, so its next request says the same: the conversation has only grown since
(:meth:`Plan.unanswered <switchpoint.gateway.planning.Plan.unanswered>`,
:meth:`SessionPinner.evict_on_failure`). A stream the pinned model breaks after the answer
has started did not answer either: its headers, sent with the first byte, said what the pin
did then (``hard``, say), but the request log, which keeps what happened, says
``evicted_post_failure`` (its note says what the headers had said), and so do the session's
stored pin, evicted, and its next request
(:meth:`Plan.broke_off <switchpoint.gateway.planning.Plan.broke_off>`). A failure of the
gateway's own code (a bug, not the model's doing: its health is not charged either) leaves the
pin as it was: a stream it breaks is logged with the error kind ``internal_error`` and the pin
the headers said; a plain request it fails is answered with an internal error.

A hard or soft pin whose model turns out, when the request is planned, not to be usable for
it (it cannot serve it: it lacks ``tools``, say; or the caller's key, candidate list or a
budget leaves it out) is ``evicted_missing_model`` too: the model is missing from those this
request may go to, and the router chooses, without a bonus (:meth:`PinDecision.not_followed`;
the decision's notes say which).

A request that names its model is sent there whatever the pin says: its pin is ``hard`` (or
``soft``, ``rehomed_context``) only when it names the very model the pin would have sent it to;
otherwise ``evicted_missing_model`` (``evicted_context`` instead of a re-home), and the
session's pin moves to the model that answers (:meth:`PinDecision.not_followed`).

Every request's log entry carries a ``PinDecision.state``. A request refused before it is
planned (a model its key may not use, a budget, a rate limit, its tenant's share of calls in
flight) carries the state
:meth:`SessionPinner.decide` gives for it, read without changing the pin (``fresh`` when the
session has none; :meth:`PinDecision.not_followed` when the request named the model it was
refused): what the pin would have done, never a state outside the table above, and a
refusal never moves a pin. A conversation is known by the
client's own session id, else by its first user message within the caller's scope (so a
conversation keeps its key as it grows, and strangers never share one): see
:func:`session_key`. Pins live in a :class:`PinStore`: :class:`MemoryPinStore` by default,
:class:`SQLitePinStore` so pins survive a restart. Either keeps a bounded number of pins,
shared fairly by the tenants: when it is full, the tenant holding the most loses its least
recently used pin (:mod:`switchpoint._fair`), so a tenant opening sessions without end pushes
out only its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

from switchpoint._fair import FairMap, Shares
from switchpoint._files import (
    FileId,
    check_database_writable,
    clear_leftovers,
    database_identity,
    private_dir,
    private_file,
    temporary_name,
)
from switchpoint._messages import json_quoted, quoted_path, too_long, unprintable
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.errors import GatewayClosedError, InvalidInputError
from switchpoint.gateway.capabilities import Needs, adapter_limits
from switchpoint.learning.events import DEFAULT_TENANT
from switchpoint.store.errors import refused as database_refused
from switchpoint.store.errors import store_error
from switchpoint.store.moved import (
    close_moved,
    forget_log_owner,
    how_it_left,
    opened_for_writing,
    remove_stale_side_files,
)

log = logging.getLogger("switchpoint.gateway")

# The longest session id a client may send.
MAX_SESSION_ID = 256
# Pins deleted per statement when purging.
PURGE_BATCH = 5_000
#: The most sessions a pin store keeps by default (past it the least recently used pin of the
#: tenant holding the most goes).
MAX_PINS = 100_000
# Session ids looked up per statement when a batch of changes is counted.
LOOKUP_BATCH = 500
#: Pin changes the database refused (a full disk) kept to be written later, and how often
#: they are tried again while no other change comes (seconds).
MAX_UNWRITTEN = 100_000
UNWRITTEN_RETRY_S = 5.0
#: How often (seconds) the pins' writer looks whether its file is still the one at its path:
#: before a batch of changes once this long has passed since it last looked, and while no
#: change comes. (Three stats, about 10 microseconds: a batch's commit takes ten times that.)
FILE_CHECK_S = 1.0
#: How long (seconds) the pins' writer lets changes gather once one comes, to commit them as one
#: batch: a commit (and the writer's wake) per request cost more than the request's own pin
#: work, and a pin is read from memory until it is written. Closing, or a full queue of
#: changes, ends the wait at once.
GATHER_S = 0.005
#: The most session ids the SQLite pin store keeps to know a session has no pin without a
#: read (as their 64-bit hashes, some 80 bytes each): a table holding more (``max_entries`` set
#: higher) is read for a session the store has not seen, until a purge brings it under.
MAX_STORED_IDS = 1_000_000
#: How often (seconds) a file at the path that could not be used is tried again while it stays
#: there (another file put there, or none, is tried at once).
MOVE_RETRY_S = 60.0


#: What :class:`SQLitePinStore` keeps of a session id it knows the table holds: the id's
#: 64-bit hash, Python's own (SipHash, keyed anew each process unless ``PYTHONHASHSEED`` fixes
#: it; a string keeps it once computed), an int held in some 80 bytes where the id took some
#: 130. (The builtin itself: a function around it added a call to every lookup.)
_id_hash: Callable[[str], int] = hash


class PinState(StrEnum):
    FRESH = "fresh"
    HARD = "hard"
    SOFT = "soft"
    REHOMED_CONTEXT = "rehomed_context"
    EVICTED_VISION = "evicted_vision"
    EVICTED_CAPABILITY = "evicted_capability"
    EVICTED_MISSING_MODEL = "evicted_missing_model"
    EVICTED_CONTEXT = "evicted_context"
    EVICTED_POST_FAILURE = "evicted_post_failure"


@dataclass(frozen=True)
class Pin:
    """A session's pin: the model that last answered it, and when (seconds since the epoch).

    ``tenant`` is who the session belongs to
    (:data:`~switchpoint.learning.events.DEFAULT_TENANT` for the deployment's own traffic, as
    its decisions are: a pin written as ``""``, with no tenant or before pins kept theirs, is
    read as that group): a full store lets go of a pin of the tenant holding the most
    (:mod:`switchpoint._fair`), so one tenant's sessions, opened in any number, never push out
    another's. ``failed`` marks a pin evicted because that model failed; it is kept only so the next
    decision can say so. ``outgrown`` (with ``failed``) says the failure was the model
    refusing the conversation as too long for it: the next decision says ``evicted_context``,
    as the conversation has only grown since.
    """

    model: str
    last_used: float
    failed: bool = False
    outgrown: bool = False
    tenant: str = DEFAULT_TENANT

    @property
    def eviction(self) -> int:
        """The ``failed`` column of the pin table: 0 kept, 1 evicted for a failure, 2 for
        being too long for the model (read as "failed" by a version that knows only 0 and
        1)."""
        return 0 if not self.failed else 2 if self.outgrown else 1

    @classmethod
    def from_row(cls, model: str, last_used: float, eviction: int, tenant: str) -> Pin:
        return cls(model, float(last_used), failed=bool(eviction), outgrown=eviction == 2,
                   tenant=tenant or DEFAULT_TENANT)


@dataclass(frozen=True)
class PinDecision:
    """What the pin says for one request.

    ``pinned_model`` is set for ``hard`` and ``rehomed_context``: send there and skip the
    router. ``bonus`` (``soft`` only) maps a model to what to subtract from its routing score.
    """

    state: PinState
    pinned_model: str | None = None
    bonus: dict[str, float] = field(default_factory=dict)
    previous_model: str | None = None
    age_s: float | None = None
    #: The pinned model's context window when it refused the conversation as too long (the
    #: stored pin is outgrown): ``auto`` chooses no model that small (see
    #: :attr:`Needs.context_floor <switchpoint.gateway.capabilities.Needs.context_floor>`).
    context_floor: int | None = None

    @property
    def bypass_router(self) -> bool:
        return self.pinned_model is not None

    @property
    def favoured_model(self) -> str | None:
        """The model this pin sends the request to (``hard``, ``rehomed_context``) or favours
        with its bonus (``soft``); ``None`` when it does neither (``fresh``, an escape)."""
        if self.pinned_model is not None:
            return self.pinned_model
        return self.previous_model if self.state is PinState.SOFT else None

    @property
    def rehoming(self) -> bool:
        """Whether this pin sends the request to a re-home target (the conversation outgrew
        the pinned model, ``previous_model``), not to the pinned model itself."""
        return self.state is PinState.REHOMED_CONTEXT

    def not_followed(self) -> PinDecision:
        """This decision once its pinned (hard) or favoured (soft) model turns out unable to
        take the request (it cannot serve it, the request may not go to it, or names another):
        ``evicted_missing_model``, the router chooses without a bonus; ``previous_model``
        still names the model the session was pinned to. A re-home that cannot go to its
        target is ``evicted_context``: the conversation outgrew the pinned model, and no
        re-home happened."""
        if self.rehoming:
            return self.outgrown()
        return replace(self, state=PinState.EVICTED_MISSING_MODEL, pinned_model=None, bonus={})

    def unavailable(self) -> PinDecision:
        """This decision once its pinned (hard) or favoured (soft) model is known, when the
        request is planned, to be failing (its circuit is open, or it asked callers to wait):
        ``evicted_post_failure`` (a re-home target's: ``evicted_context``, as
        :meth:`not_followed`)."""
        if self.rehoming:
            return self.outgrown()
        return self.after_failure()

    def after_failure(self) -> PinDecision:
        """This decision once the model it sent the request to was called and did not answer:
        ``evicted_post_failure``; ``previous_model`` still names the pinned model."""
        return replace(self, state=PinState.EVICTED_POST_FAILURE, pinned_model=None, bonus={})

    def outgrown(self) -> PinDecision:
        """This decision once the conversation turned out too long for the model it sent the
        request to (it refused it so), or a re-home cannot be followed: ``evicted_context``."""
        return replace(self, state=PinState.EVICTED_CONTEXT, pinned_model=None, bonus={})

    def to_dict(self) -> dict[str, Any]:
        return {"pin_state": str(self.state), "pinned_model": self.pinned_model,
                "bonus": dict(self.bonus), "previous_model": self.previous_model,
                "age_s": self.age_s}


class PinStore(Protocol):
    """Where pins live. Implementations must be safe to call from several threads."""

    def get(self, session_id: str) -> Pin | None: ...

    def put(self, session_id: str, pin: Pin) -> None: ...

    def delete(self, session_id: str) -> None: ...

    def purge(self, older_than: float) -> int:
        """Drop pins last used before ``older_than``; how many were dropped."""
        ...

    def count(self, since: float) -> int:
        """Pins used at or after ``since`` (the active sessions)."""
        ...


class MemoryPinStore:
    """Pins in a dict, at most ``max_entries``: past it, the least recently used pin of the
    tenant holding the most goes (:class:`~switchpoint._fair.FairMap`; with a tenant alone,
    the least recently used). Lost on restart."""

    def __init__(self, max_entries: int = MAX_PINS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        # (each tenant's sessions, least recently used first)
        self._pins: FairMap[Pin] = FairMap(attrgetter("tenant"))
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Pin | None:
        with self._lock:
            return self._pins.held.get(session_id)

    def put(self, session_id: str, pin: Pin) -> None:
        with self._lock:
            self._pins.put_within(session_id, pin, self.max_entries)

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._pins.discard(session_id)

    def purge(self, older_than: float) -> int:
        with self._lock:
            stale = [k for k, p in self._pins.held.items() if p.last_used < older_than]
            for key in stale:
                self._pins.discard(key)
            return len(stale)

    def count(self, since: float) -> int:
        with self._lock:
            return sum(1 for p in self._pins.held.values()
                       if p.last_used >= since and not p.failed)


class SQLitePinStore:
    """Pins in a SQLite table (``session_pins``), so they survive restarts, written behind.

    Every request reads and writes its session's pin, on the event loop. So the store keeps
    the pins it has seen in memory (the ``cache_entries`` most recently used; a pin known to be
    absent is remembered too), answers from there, and hands each change to a writer thread
    that commits them in batches. It also keeps the session ids the table holds (read when it
    opens, and kept as it changes, while the table holds at most :data:`MAX_STORED_IDS`), so a
    session the table holds no pin for, as every new conversation's, is answered without a
    read. It keeps each id's 64-bit hash (``_id_hash``, Python's own, keyed per process),
    some 80 bytes an id held where the id itself took some 130: a new session whose hash a
    held one has is read as an unseen one is, and a held one whose hash a deleted one shared
    (under one chance in 10^7 at a million ids) is taken as having none, one cache-cold turn.
    Only a pinned session the store has not seen since it opened costs a read of the table
    (and the connection's lock, which the writer holds while it commits). One
    process owns the file (it owns its ``data_dir``), so the memory is never stale. A change
    reaches the table within a commit's time. :meth:`close` (a graceful stop) writes every
    pending change, and a crash loses at most the changes of that instant: a pin is a hint,
    and a lost one costs one cache-cold turn.

    It keeps at most ``max_entries`` pins, by :class:`MemoryPinStore`'s rule: past it, the
    least recently used (the oldest ``last_used``) of the tenant holding the most go
    (:class:`~switchpoint._fair.Shares`, whose counts of each tenant's pins it keeps: read
    when it opens, among tenants holding as many the one whose newest pin is older taken as
    having come to hold that many first), as the writer commits the pins that took it past,
    and at every :meth:`purge`; a file holding more (the cap lowered since it was written) is
    cut to it by the same rule when opened. :attr:`max_entries` may be changed while it runs.
    A pin written before pins kept their tenant is counted as a tenant ``""``'s.

    WAL mode, so readers in other processes are not blocked. ``path`` may be ``":memory:"``.
    ``synchronous`` is SQLite's setting: ``NORMAL`` (default) survives a crash of the process
    and skips the fsync per commit. ``FULL`` fsyncs every commit.

    The file deleted or replaced while the store runs (or its ``-wal`` or ``-shm``): the
    writer sees it within :data:`FILE_CHECK_S` (and at :meth:`close`) and moves to the file
    now at the path, made anew when there is none, carrying every pin the old file holds into
    it (see :meth:`_move_to_path`), so a restart still has them.
    """

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS session_pins (
            session_id TEXT PRIMARY KEY,
            model      TEXT NOT NULL,
            last_used  REAL NOT NULL,
            failed     INTEGER NOT NULL DEFAULT 0, -- Pin.eviction: 0, 1 failed, 2 too long
            tenant     TEXT NOT NULL DEFAULT ''    -- Pin.tenant
        );
        CREATE INDEX IF NOT EXISTS session_pins_last_used ON session_pins(last_used);
    """
    #: What a table written before pins kept their tenant is given (its pins: tenant "").
    TENANT_COLUMN = """
        ALTER TABLE session_pins ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
    """
    #: The pins written as tenant "" (no tenant, or before pins kept theirs) joined to the
    #: deployment's own group, under the one name its decisions have too: counted, and let
    #: go of when the table is full, with the pins written under that name since.
    DEFAULT_TENANT_ROWS = (f"UPDATE session_pins SET tenant = '{DEFAULT_TENANT}' "
                           "WHERE tenant = ''")
    #: Each tenant's pins, least recently used first: what a full table lets go of.
    TENANT_INDEX = """
        CREATE INDEX IF NOT EXISTS session_pins_tenant ON session_pins(tenant, last_used);
    """
    #: Changes waiting for the writer past which a change waits for it (a stalled disk).
    MAX_PENDING = 100_000

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL",
                 cache_entries: int = 100_000, max_entries: int = MAX_PINS) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, got "
                             f"{json_quoted(synchronous)}")
        if cache_entries < 1:
            raise ValueError("cache_entries must be >= 1")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.path = str(path)
        self.cache_entries = cache_entries
        self.max_entries = max_entries
        # The pins the table holds, by tenant (counted at open, kept as it changes).
        self._shares = Shares()
        self._synchronous = synchronous.upper()
        self._db_lock = threading.Lock()  # the connection: the writer, misses, purge, count
        try:
            self._db = self._connect()
            if self.path != ":memory:":
                clear_leftovers(Path(self.path))  # a copy a process killed mid-move left
        except (OSError, sqlite3.Error) as exc:
            raise store_error(self.path, "open the session pins", exc) from None
        # The file and side files opened (see _keep_file); while the file at the path cannot
        # be used, the copy beside it the pins are kept in; after a move failed, when to try
        # again, and what was logged about it (so it is logged once).
        self._files = self._identity()
        self._next_look = time.monotonic() + FILE_CHECK_S
        self._carried: Path | None = None
        self._next_try = 0.0
        self._trouble: str | None = None
        self._what = ""  # how the file left its path (for the log)
        self._tried: tuple[FileId | None, ...] | None = None  # the files when a move failed
        # What the store knows (None: known to have no pin), most recently used last; and
        # the changes the writer has not committed yet. Both under `_changed`'s lock.
        self._known: OrderedDict[str, Pin | None] = OrderedDict()
        self._pending: dict[str, Pin | None] = {}
        self._writing: dict[str, Pin | None] = {}  # the batch being committed
        # Changes the database refused (a full disk), oldest first: written with the next
        # batch, or tried again every UNWRITTEN_RETRY_S (at most MAX_UNWRITTEN are kept).
        self._unwritten: OrderedDict[str, Pin | None] = OrderedDict()
        self._changed = threading.Condition()
        # The session ids the table holds (and, for a moment, one a failed commit did not
        # write): one not here, nor in the memory or changes above, has no pin. None while
        # the table holds more than MAX_STORED_IDS (each session not in memory is read).
        self._stored: set[int] | None = set()  # (their hashes: _id_hash)
        self._queued = 0  # changes handed to the writer so far
        self._written = 0  # of those, committed (or given up on) so far
        self._closing = False
        try:
            self._shares = self._count_shares()
            while self._trim_alone():  # (a cap lowered since the file was written)
                pass
            self._stored = self._stored_ids()
        except sqlite3.Error as exc:
            self._db.close()
            raise store_error(self.path, "open the session pins", exc) from None
        self._writer = threading.Thread(target=self._write_loop, name="switchpoint-pins",
                                        daemon=True)
        self._writer.start()

    def get(self, session_id: str) -> Pin | None:
        with self._changed:
            if session_id in self._known:
                self._known.move_to_end(session_id)
                return self._known[session_id]
            # Forgotten, not yet written (the newest change first).
            for unwritten in (self._pending, self._writing, self._unwritten):
                if session_id in unwritten:
                    return unwritten[session_id]
            if self._stored is not None and _id_hash(session_id) not in self._stored:
                return None  # (a new session: no read, nothing to wait for)
        try:
            with self._db_lock:
                row = self._db.execute(
                    "SELECT model, last_used, failed, tenant FROM session_pins "
                    "WHERE session_id = ?", (session_id,)).fetchone()
        except sqlite3.Error as exc:  # a damaged page, a lock held too long
            raise store_error(self.path, "read a session pin", exc) from None
        pin = None if row is None else Pin.from_row(row[0], row[1], int(row[2]), str(row[3]))
        with self._changed:
            if session_id in self._known:  # changed (or read) meanwhile
                return self._known[session_id]
            self._remember(session_id, pin)
        return pin

    def put(self, session_id: str, pin: Pin) -> None:
        self._change(session_id, pin)

    def delete(self, session_id: str) -> None:
        self._change(session_id, None)

    def flush(self) -> None:
        """Wait until every change made so far is committed."""
        with self._changed:
            target = self._queued
            while self._written < target and self._writer.is_alive():
                self._changed.wait(0.5)

    def purge(self, older_than: float) -> int:
        """Drop pins last used before ``older_than``, a batch per lock hold, so requests
        reading and writing pins meanwhile wait for one batch at most."""
        self.flush()
        total = 0
        while True:
            with self._db_lock:
                rows = self._db.execute(
                    "DELETE FROM session_pins WHERE session_id IN (SELECT session_id FROM "
                    "session_pins WHERE last_used < ? LIMIT ?) RETURNING session_id, tenant",
                    (older_than, PURGE_BATCH)).fetchall()
                gone = [row[0] for row in rows]
                for row in rows:
                    self._shares.remove(row[1])
                with self._changed:
                    if self._stored is not None:
                        self._stored.difference_update(map(_id_hash, gone))
            n = len(gone)
            total += n
            if n < PURGE_BATCH:
                break
        with self._db_lock:
            if self._stored is None and len(self._shares) <= MAX_STORED_IDS:  # (under it again)
                stored = self._stored_ids()
                with self._changed:
                    self._stored = stored
        while True:  # (a cap lowered by a reload: a batch per lock hold)
            with self._db_lock:
                if not self._trim_alone():
                    break
        with self._changed:
            stale = [k for k, p in self._known.items() if p is not None
                     and p.last_used < older_than and k not in self._pending]
            for key in stale:
                del self._known[key]
        return total

    def count(self, since: float) -> int:
        self.flush()
        with self._db_lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM session_pins WHERE last_used >= ? AND failed = 0",
                (since,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Write every pending change, stop the writer and close the file."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._writer.join()
        with self._db_lock:
            self._db.close()
        if self.path != ":memory:":
            forget_log_owner(self.path)
        if self._carried is not None:
            log.error("%s %s while the service ran and the file now there could not be used: "
                      "the session pins are left in %s, which no start reads", self.path,
                      self._what, self._carried.name)

    # Internals ---------------------------------------------------------------------------------

    def _connect(self, path: str | None = None) -> sqlite3.Connection:
        """A connection to ``path`` (the store's own by default: made if need be, its owner's
        alone, in WAL mode) with the schema in place."""
        path = self.path if path is None else path
        own = path == self.path and path != ":memory:"
        if not own:
            return self._connect_to(path, own=False)
        private_file(private_dir(Path(path).parent) / Path(path).name)
        return opened_for_writing(path, lambda: self._connect_to(path, own=True))

    def _connect_to(self, path: str, *, own: bool) -> sqlite3.Connection:
        """A connection to ``path`` with the schema in place (``own``: the store's file, in
        WAL mode; it, and each side file beside it, that this process may not write is named
        now: SQLite would open it read-only and refuse only the first pin written)."""
        if own:
            check_database_writable(path)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            if own:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self._synchronous}")
                db.execute("PRAGMA busy_timeout=5000")
            db.executescript(self.SCHEMA)
            if "tenant" not in {row[1] for row in db.execute("PRAGMA table_info(session_pins)")}:
                db.executescript(self.TENANT_COLUMN)  # (written before pins kept their tenant)
            db.executescript(self.TENANT_INDEX)
            db.execute(self.DEFAULT_TENANT_ROWS)
        except BaseException:
            db.close()
            raise
        return db

    def _identity(self) -> tuple[FileId | None, ...]:
        """Which files are at the store's path and its side files' (nothing in memory)."""
        return () if self.path == ":memory:" else database_identity(self.path)

    def _keep_file(self, *, closing: bool = False) -> None:
        """Move to the file at the path when it is no longer the one open (the writer's, with
        the connection's lock held): looked at before a batch and while none comes, at most
        every :data:`FILE_CHECK_S`, and at ``closing``. A move that failed is tried again once
        other files are there, every :data:`MOVE_RETRY_S`, and once more at ``closing``."""
        now = time.monotonic()
        if self.path == ":memory:" or (now < self._next_look and not closing):
            return
        self._next_look = now + FILE_CHECK_S
        try:
            seen = self._identity()
            if self._carried is None and seen == self._files:
                return
            if not closing and seen == self._tried and now < self._next_try:
                return
            if self._carried is None:
                self._what = how_it_left(self._files, seen) or ""
            self._move_to_path()
            self._shares = self._count_shares()  # (the file now open: what it holds)
            stored = self._stored_ids()
            with self._changed:
                self._stored = stored
        except Exception:  # the writer must outlive it: the pins are still in memory
            log.exception("%s: the session pins could not be moved to the file at that path",
                          self.path)
            self._tried, self._next_try = self._identity(), time.monotonic() + MOVE_RETRY_S

    def _move_to_path(self) -> None:
        """Carry the pins into the file now at the path (made anew when there is none).

        Every pin the file open holds (its deleted or moved inode, read through the open
        connection) is first copied into a file beside it (:func:`temporary_name`), and that
        connection closed, the old file's side files left at the path removed (see
        :func:`~switchpoint.store.moved.close_moved`), before any opens the path. Then the file
        at the path is opened and the copy's pins written into it: where it holds a pin for the
        same session (a backup put in its place), the newer one stays. A replaced file is
        taken, not written over: it is what a restart opens, and the live pins written into
        it keep what the service knows. When the file at the path cannot be used (not a
        database, say), the store works on the copy and tries again once another file is put
        there (or in :data:`MOVE_RETRY_S`); a stop meanwhile leaves the pins there, where no
        start reads them."""
        path = Path(self.path)
        if self._carried is None:
            copy = temporary_name(path)
            try:
                clear_leftovers(path)
                private_file(private_dir(path.parent) / copy.name)
                self._db.execute("VACUUM INTO ?", (str(copy),))
            except (OSError, sqlite3.Error) as exc:
                with contextlib.suppress(OSError):
                    copy.unlink(missing_ok=True)
                self._failed(exc, "the session pins cannot be copied out of the file the "
                             "service has open, and go on into it, which no start reads")
                return
            self._carried, old = copy, self._db
        else:
            self._db.close()  # (the copy's, beside the path)
            old = None
        carried = self._carried
        try:
            if old is not None:
                close_moved(old, path, self._files)
            else:  # (tried before: what could not be removed then)
                remove_stale_side_files(path, self._files)
            db, moved, held = self._open_carrying(carried)
        except (OSError, sqlite3.Error) as exc:
            self._db = self._connect(str(carried))
            self._failed(exc, f"the file now there cannot be used; the session pins are kept "
                         f"in {carried.name} meanwhile, which no start reads")
            return
        self._db = db
        carried.unlink(missing_ok=True)
        self._carried, self._trouble, self._tried = None, None, None
        self._files = self._identity()
        if held:  # pins of its own (a backup): memory may not know them, or know older ones
            with self._changed:
                self._known.clear()  # (read again from the file; changes not written wait)
        log.warning("%s %s while the service ran; the session pins are kept in the file now "
                    "at that path (%d written into it)", path, self._what, moved)

    def _open_carrying(self, carried: Path) -> tuple[sqlite3.Connection, int, bool]:
        """A connection to the file at the path with the pins of ``carried`` written into it
        (a newer pin the file holds for the same session kept), how many were, and whether
        the file held pins before."""
        db = self._connect()
        try:
            held = db.execute("SELECT 1 FROM session_pins LIMIT 1").fetchone() is not None
            db.execute("ATTACH DATABASE ? AS carried", (str(carried),))
            db.execute("BEGIN")
            moved = db.execute(
                "INSERT INTO main.session_pins (session_id, model, last_used, failed, tenant) "
                "SELECT session_id, model, last_used, failed, tenant FROM carried.session_pins "
                "WHERE true ON CONFLICT(session_id) DO UPDATE SET model = excluded.model, "
                "last_used = excluded.last_used, failed = excluded.failed, "
                "tenant = excluded.tenant "
                "WHERE excluded.last_used > session_pins.last_used").rowcount
            db.execute(self.DEFAULT_TENANT_ROWS)  # (the carried file's, written as "")
            db.execute("COMMIT")
            db.execute("DETACH DATABASE carried")
        except BaseException:
            db.close()
            raise
        return db, moved, held

    def _failed(self, exc: BaseException, consequence: str) -> None:
        """Log, once for each problem, that the pins could not be moved to the file at the
        path (and why); tried again once other files are there, or in :data:`MOVE_RETRY_S`."""
        self._tried, self._next_try = self._identity(), time.monotonic() + MOVE_RETRY_S
        problem = f"{type(exc).__name__}: {exc}"
        if self._trouble != problem:
            self._trouble = problem
            log.error("%s %s while the service ran, and %s (%s); tried again once another "
                      "file is put there, or in %g s", self.path, self._what, consequence,
                      problem, MOVE_RETRY_S)

    def _remember(self, session_id: str, pin: Pin | None) -> None:
        self._known[session_id] = pin
        self._known.move_to_end(session_id)
        while len(self._known) > self.cache_entries:
            self._known.popitem(last=False)

    def _change(self, session_id: str, pin: Pin | None) -> None:
        with self._changed:
            if self._closing:
                raise GatewayClosedError(
                    f"{quoted_path(self.path)}: the session pin store is closed (its gateway "
                    "closed while this request was under way), so the session's pin was not "
                    "changed; start the gateway again (Gateway.start) or make a new one")
            while len(self._pending) >= self.MAX_PENDING and self._writer.is_alive():
                self._changed.wait(0.5)
            self._remember(session_id, pin)
            self._pending[session_id] = pin
            self._queued += 1
            # The writer waits for a change only while none is pending (then while they
            # gather, unless they fill the queue): a change after the first has no one to wake.
            if len(self._pending) == 1 or len(self._pending) >= self.MAX_PENDING:
                self._changed.notify_all()

    def _write_loop(self) -> None:
        while True:
            batch: dict[str, Pin | None] | None = None
            with self._changed:
                while not self._pending and not self._closing:
                    if not self._changed.wait(UNWRITTEN_RETRY_S if self._unwritten
                                              else FILE_CHECK_S):
                        break  # time to try the refused changes again, or to look at the file
                if self._pending and not self._closing:  # (the changes of requests running now)
                    self._changed.wait(GATHER_S)
                closing = self._closing
                if self._pending or self._unwritten:
                    batch = {**self._unwritten, **self._pending}  # a newer change wins
                    self._unwritten, self._pending = OrderedDict(), {}
                    self._writing = batch
                    upto = self._queued
                    self._changed.notify_all()  # room again for writers held back
            if batch is None:  # nothing to write: look at the file (the last time, closing)
                with self._db_lock:
                    self._keep_file(closing=closing)
                if closing:
                    return
                continue
            try:
                self._commit(batch, closing=closing)
            except sqlite3.Error as exc:  # the pins stay in memory; only persistence waits
                refused = database_refused(exc) and not closing
                with self._changed:
                    if refused:  # written later: with the next batch, or on a timer
                        for key, pin in batch.items():
                            if key not in self._pending:
                                self._unwritten[key] = pin
                        while len(self._unwritten) > MAX_UNWRITTEN:
                            self._unwritten.popitem(last=False)
                if refused:
                    log.error("%d session pin change(s) not written to %s yet: %s (tried "
                              "again once it takes writes)", len(batch), self.path, exc)
                else:
                    log.error("%d session pin change(s) lost: %s refused them (%s)",
                              len(batch), self.path, exc)
            with self._changed:
                self._written = upto
                self._writing = {}
                self._changed.notify_all()
                if closing and not self._pending:
                    return

    def _commit(self, batch: dict[str, Pin | None], *, closing: bool = False) -> None:
        puts = [(k, p.model, p.last_used, p.eviction, p.tenant) for k, p in batch.items()
                if p is not None]
        deletes = [(k,) for k, p in batch.items() if p is None]
        with self._db_lock:
            self._keep_file(closing=closing)
            journal: list[tuple[str, bool]] = []  # (the counts changed: undone on a rollback)
            self._db.execute("BEGIN")
            with self._changed:  # (before the batch leaves `_writing`: get() sees it)
                if self._stored is not None:
                    self._stored.update(_id_hash(put[0]) for put in puts)
                    if len(self._stored) > MAX_STORED_IDS:
                        self._stored = None
            try:
                held = self._tenants_of(list(batch))
                for key, pin in batch.items():
                    was, now = held.get(key), None if pin is None else pin.tenant
                    if was != now:
                        if was is not None:
                            self._count(journal, was, gained=False)
                        if now is not None:
                            self._count(journal, now, gained=True)
                self._db.executemany(
                    "INSERT INTO session_pins (session_id, model, last_used, failed, tenant) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET "
                    "model = excluded.model, last_used = excluded.last_used, "
                    "failed = excluded.failed, tenant = excluded.tenant", puts)
                self._db.executemany("DELETE FROM session_pins WHERE session_id = ?", deletes)
                self._trim(PURGE_BATCH, journal)  # (a cap lowered by a reload: purge cuts the rest)
                self._db.execute("COMMIT")
                with self._changed:
                    if self._stored is not None:
                        self._stored.difference_update(_id_hash(delete[0]) for delete in deletes)
            except BaseException:
                self._undo(journal)
                if self._db.in_transaction:  # (a failed COMMIT may have rolled back already)
                    self._db.execute("ROLLBACK")
                raise

    def _count(self, journal: list[tuple[str, bool]], tenant: str, *, gained: bool) -> None:
        """``tenant`` holds a pin more (``gained``) or less in the table, noted in ``journal``
        (see :meth:`_undo`)."""
        if gained:
            self._shares.add(tenant)
        else:
            self._shares.remove(tenant)
        journal.append((tenant, gained))

    def _undo(self, journal: list[tuple[str, bool]]) -> None:
        """Take back the counts a transaction rolled back changed (``journal``, as
        :meth:`_count` noted them)."""
        for tenant, gained in reversed(journal):
            if gained:
                self._shares.remove(tenant)
            else:
                self._shares.add(tenant)

    def _count_shares(self) -> Shares:
        """The pins the table holds, by tenant (with the connection's lock held, or at open):
        among tenants holding as many, the one whose newest pin is older counts as having
        come to hold that many first."""
        shares = Shares()
        for tenant, held in self._db.execute(
                "SELECT tenant, COUNT(*) FROM session_pins GROUP BY tenant "
                "ORDER BY MAX(last_used), tenant"):
            shares.add(str(tenant), int(held))
        return shares

    def _stored_ids(self) -> set[int] | None:
        """The hashes (:func:`_id_hash`) of the session ids the table holds, None past
        :data:`MAX_STORED_IDS` (with the connection's lock held, or at open, once
        :attr:`_shares` is counted)."""
        if len(self._shares) > MAX_STORED_IDS:
            return None
        return {_id_hash(session) for session, in self._db.execute(
            "SELECT session_id FROM session_pins")}

    def _tenants_of(self, sessions: Sequence[str]) -> dict[str, str]:
        """The tenant of each of ``sessions`` the table holds a pin for."""
        held: dict[str, str] = {}
        for start in range(0, len(sessions), LOOKUP_BATCH):
            part = sessions[start:start + LOOKUP_BATCH]
            held.update(self._db.execute(
                "SELECT session_id, tenant FROM session_pins WHERE session_id IN "
                f"({','.join('?' * len(part))})", part).fetchall())
        return held

    def _trim_alone(self) -> bool:
        """:meth:`_trim` a batch in a transaction of its own; whether more are left."""
        journal: list[tuple[str, bool]] = []
        self._db.execute("BEGIN")
        try:
            more = self._trim(PURGE_BATCH, journal)
            self._db.execute("COMMIT")
        except BaseException:
            self._undo(journal)
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return more

    def _trim(self, limit: int, journal: list[tuple[str, bool]]) -> bool:
        """Delete the pins past :attr:`max_entries`, at most ``limit`` of them, and forget
        them: the least recently used of the tenant holding the most, one by one
        (:class:`~switchpoint._fair.Shares`); whether more are left past it (with the
        connection's lock held, or at open)."""
        excess = len(self._shares) - self.max_entries
        if excess <= 0:
            return False
        losing: dict[str, int] = {}
        for _ in range(min(excess, limit)):
            tenant = self._shares.first()
            self._count(journal, tenant, gained=False)
            losing[tenant] = losing.get(tenant, 0) + 1
        gone: list[str] = []
        for tenant, n in losing.items():
            gone += [row[0] for row in self._db.execute(
                "SELECT session_id FROM session_pins WHERE tenant = ? ORDER BY last_used "
                "LIMIT ?", (tenant, n))]
        self._db.executemany("DELETE FROM session_pins WHERE session_id = ?",
                             [(key,) for key in gone])
        with self._changed:  # (a change not written yet wins: it is written after)
            if self._stored is not None:
                self._stored.difference_update(map(_id_hash, gone))
            for key in gone:
                if key not in self._pending and key not in self._unwritten:
                    self._known.pop(key, None)
        return bool(gone) and len(self._shares) > self.max_entries


def _first_user_text(messages: Sequence[object]) -> str | None:
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return None


def session_key(explicit: str | None, messages: Sequence[object], *,
                scope: str | None = None, field: str = "session_id") -> str | None:
    """The key a conversation's pin is stored under, or ``None`` (no pinning).

    ``explicit`` is the client's own session id, at most :data:`MAX_SESSION_ID` characters
    that show as themselves (:func:`~switchpoint._messages.unprintable`: no control character);
    ``field`` is what the client called it (an argument's name, or over HTTP its header's),
    which an error about it names. Without one, the conversation is known by its first user
    message, **within** ``scope`` (who is calling: a client key, else the client's address), so
    two unrelated callers who open with the same message are never tied together. An explicit id
    is scoped too, to the tenant when there is one. Keys are SHA-256 hex digests: a fixed 64
    characters whatever the client sends, and nothing the client wrote is stored.
    """
    if explicit is not None:
        explicit = explicit.strip()
        if len(explicit) > MAX_SESSION_ID:
            raise InvalidInputError(field, too_long(MAX_SESSION_ID, len(explicit)))
        hidden = unprintable(explicit)
        if hidden is not None:
            at, char = hidden
            raise InvalidInputError(field, f"holds U+{ord(char):04X} (character {at + 1}): a "
                                           "session id is text that shows as itself, so control "
                                           "characters (newline, NUL, ...) and invisible or "
                                           "direction-changing ones are refused; send letters, "
                                           "digits and punctuation, such as a UUID")
    if explicit:
        material = f"explicit\0{scope or ''}\0{explicit}"
    else:
        text = _first_user_text(messages)
        if text is None:
            return None
        material = f"implicit\0{scope or ''}\0{text}"
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def rehome_target(catalog: Catalog, pinned: ModelCard, needs: Needs) -> ModelCard | None:
    """The closest model with a larger context window that fits ``needs``.

    Order: the pinned model's tier first, then the smallest sufficient window, then the
    lowest price (unpriced last), then the name. Models lacking a capability the request
    needs (vision, tools) are skipped, and so are those whose adapter cannot serve it
    (:func:`~switchpoint.gateway.capabilities.adapter_limits`).
    """
    if pinned.context_window is None:
        return None
    fits = [
        c for c in catalog.cards
        if c.name != pinned.name and c.context_window is not None
        and c.context_window > pinned.context_window
        and c.context_window >= needs.total_tokens
        and (not needs.vision or c.has("vision")) and (not needs.tools or c.has("tools"))
        and not adapter_limits(c, needs)
    ]
    if not fits:
        return None

    def key(c: ModelCard) -> tuple[bool, int, bool, float, str]:
        price = c.price(1_000_000, 1_000_000)  # input + output price per million tokens
        assert c.context_window is not None
        return (c.tier != pinned.tier, c.context_window, not c.priced, price, c.name)

    return min(fits, key=key)


class SessionPinner:
    """Decides, per request, what a session's pin says, and remembers who answered.

    ``soft_bonus_weight`` is the score credit (in routing-score units, where lower is better)
    given to the pinned model in the soft window; 0 disables the bonus.
    """

    def __init__(self, hard_window_s: float = 300.0, soft_window_s: float = 1800.0,
                 soft_bonus_weight: float = 0.5, store: PinStore | None = None) -> None:
        if hard_window_s < 0 or soft_window_s < hard_window_s:
            raise ValueError("windows must satisfy 0 <= hard_window_s <= soft_window_s")
        if soft_bonus_weight < 0:
            raise ValueError("soft_bonus_weight must be >= 0")
        self.hard_window_s = hard_window_s
        self.soft_window_s = soft_window_s
        self.soft_bonus_weight = soft_bonus_weight
        self.store: PinStore = store if store is not None else MemoryPinStore()

    def decide(self, session: str | None, catalog: Catalog,
               needs: Needs | Mapping[str, Any], now: float) -> PinDecision:
        """The pin decision for a request of ``session`` at ``now`` (seconds since the epoch).

        ``needs`` is a :class:`Needs` or a mapping with ``vision``,
        ``tools`` and ``prompt_tokens`` (and optionally ``output_tokens``). Pure: it reads the
        store and changes nothing.
        """
        if not isinstance(needs, Needs):
            needs = Needs(vision=bool(needs.get("vision")), tools=bool(needs.get("tools")),
                          prompt_tokens=int(needs.get("prompt_tokens") or 0),
                          last_user_text=str(needs.get("last_user_text") or ""),
                          output_tokens=int(needs.get("output_tokens") or 0))
        pin = self.store.get(session) if session else None
        if pin is None:
            return PinDecision(PinState.FRESH)
        age = max(0.0, now - pin.last_used)

        floor: int | None = None  # (set once the pin is known to be outgrown)

        def decision(state: PinState, pinned: str | None = None,
                     bonus: dict[str, float] | None = None) -> PinDecision:
            return PinDecision(state, pinned_model=pinned, bonus=bonus or {},
                               previous_model=pin.model, age_s=round(age, 3),
                               context_floor=floor)

        if age > self.soft_window_s or self.soft_window_s == 0:  # 0: pinning off
            return decision(PinState.FRESH)
        card = catalog.get(pin.model)
        if card is None:
            return decision(PinState.EVICTED_MISSING_MODEL)
        if needs.vision and not card.has("vision"):
            return decision(PinState.EVICTED_VISION)
        if adapter_limits(card, needs):
            return decision(PinState.EVICTED_CAPABILITY)
        if pin.failed and not pin.outgrown:
            return decision(PinState.EVICTED_POST_FAILURE)
        window = card.context_window
        if pin.outgrown:  # it refused the conversation as too long: it has only grown since
            floor = window
        hard = age <= self.hard_window_s and self.hard_window_s > 0  # 0: no hard pins
        if pin.outgrown or (window is not None and needs.total_tokens > window):
            target = rehome_target(catalog, card, needs) if hard else None
            if target is None:
                return decision(PinState.EVICTED_CONTEXT)
            return decision(PinState.REHOMED_CONTEXT, pinned=target.name)
        if hard:
            return decision(PinState.HARD, pinned=card.name)
        bonus = {card.name: self.soft_bonus_weight} if self.soft_bonus_weight > 0 else {}
        return decision(PinState.SOFT, bonus=bonus)

    def record(self, session: str | None, model: str, now: float,
               tenant: str = DEFAULT_TENANT) -> None:
        """``model`` answered ``session`` (of ``tenant``) at ``now``: (re)start its windows on
        that model."""
        if session:
            self.store.put(session, Pin(model, now, tenant=tenant))

    def evict_on_failure(self, session: str | None, now: float | None = None, *,
                         failed: Collection[str] | None = None,
                         outgrown: Collection[str] = (),
                         rehomed_to: str | None = None) -> None:
        """The pinned model failed: drop the pin (the next decision says
        ``evicted_post_failure``, or ``evicted_context`` when the pinned model is among
        ``outgrown``, those that refused the conversation as too long for them) until some
        model answers the session again. ``failed``, when given, names the models that failed:
        a pin to none of them is kept as it is (a request that went elsewhere and failed there
        says nothing of the pinned model). ``rehomed_to``: the model the request was re-homed
        to; when it refused the conversation as too long too, the session's pin moves to it,
        outgrown, so the next re-home goes past it (to a larger model still), not back to it.
        """
        if not session:
            return
        pin = self.store.get(session)
        if pin is not None and rehomed_to is not None and rehomed_to in outgrown:
            self.store.put(session, Pin(rehomed_to, pin.last_used if now is None else now,
                                        failed=True, outgrown=True, tenant=pin.tenant))
            return
        if pin is not None and (failed is None or pin.model in failed):
            self.store.put(session, Pin(pin.model, pin.last_used if now is None else now,
                                        failed=True, outgrown=pin.model in outgrown,
                                        tenant=pin.tenant))

    def active_sessions(self, now: float) -> int:
        """Sessions with a pin inside the soft window."""
        return self.store.count(now - self.soft_window_s)

    def purge(self, now: float) -> int:
        """Forget pins older than the soft window; how many were dropped."""
        return self.store.purge(now - self.soft_window_s)
