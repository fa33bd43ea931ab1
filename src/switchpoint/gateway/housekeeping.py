"""The gateway's housekeeping: now and then, as requests come, expired session pins are purged
and ``data_dir``'s lock is checked to be still held on the file there (every
``gateway.pin_purge_interval_s``) and, with ``store.retention_days``, the logs and the keys that
ended are pruned (hourly), on a thread of its own: a request only checks the clock. One run at a
time, whichever doors ask at once; each run's work is bounded; closing waits for the run under
way and starts none after it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from switchpoint.config import Settings
from switchpoint.errors import StoreError
from switchpoint.gateway.owner import DataDirLock
from switchpoint.gateway.sessions import SessionPinner
from switchpoint.governance.governor import Governor
from switchpoint.store import SQLiteStore
from switchpoint.store.retention import SECONDS_PER_DAY, RetentionClock, cutoff_for, prune

log = logging.getLogger("switchpoint.gateway")

# With store.retention_days: how often the logs are pruned, and the most rows deleted per table
# each time (a backlog is worked off over several runs).
PRUNE_INTERVAL_S = 3600.0
PRUNE_MAX_ROWS = 50_000
# What the learning has caught up with: the log position it learned every row up to, and its
# checkpoint key (see GatewayLearning.caught_up).
CaughtUp = tuple[int | None, str]



class Housekeeping:
    """The housekeeping of one gateway: its settings (the live ones, read at each run),
    request log, session pins, learning (``caught_up``: :meth:`GatewayLearning.caught_up
    <switchpoint.gateway.learning.GatewayLearning.caught_up>`, or None once the gateway is
    gone), governor (keys.db) and ``data_dir``'s lock (the gateway's while it holds one), each
    read when a run needs it. A run's thread holds none of the gateway's own parts, so that a
    gateway its program drops is collected (and closed) even while a run is under way."""

    def __init__(self, settings: Callable[[], Settings], store: SQLiteStore | None,
                 pinner: SessionPinner, caught_up: Callable[[], CaughtUp | None],
                 governor: Governor, owner: Callable[[], DataDirLock | None]) -> None:
        self._settings = settings
        self.store = store
        self.pinner = pinner
        self._caught_up = caught_up
        self.governor = governor
        self._owner = owner
        # The housekeeping run under way, on a thread of its own: a future of no event loop,
        # since either door's loop may start it and the other close the gateway.
        self._maintenance: Future[None] | None = None
        # Held to decide whether a run is due and to start it, and to take the run to wait
        # for: the two doors' loops run on threads of their own, and could each start one.
        self._maintenance_lock = threading.Lock()
        # Set as the gateway closes (under the lock, as it takes the run to wait for): a
        # request that passed its open check just before starts no run after that.
        self._maintenance_shut = False
        self._next_pin_purge = 0.0
        self._next_prune = 0.0
        # What the retention's prunes go by: the wall clock, its steps ahead left out.
        self._retention_clock = RetentionClock()
        # Why the retention last could not prune keys.db (missing or deleted holding keys),
        # said once until a prune of it goes through again; None: it went through.
        self._keys_unpruned: str | None = None

    @property
    def settings(self) -> Settings:
        return self._settings()

    def reopen(self) -> None:
        """The gateway opened again: it housekeeps again."""
        with self._maintenance_lock:
            self._maintenance_shut = False

    def maintain(self) -> None:
        """Purge expired session pins and check that data_dir's lock is still held on the
        file there (every ``gateway.pin_purge_interval_s``) and, with
        ``store.retention_days``, prune the logs (hourly), on a worker thread: a request only
        checks the clock. One run at a time, whichever doors call at once; each run's work is
        bounded."""
        with self._maintenance_lock:
            if self._maintenance_shut:  # closing: a run now would touch closed state
                return
            if self._maintenance is not None and not self._maintenance.done():
                return
            settings = self.settings
            now = time.monotonic()
            purge = now >= self._next_pin_purge
            days = settings.store.retention_days
            trim = days is not None and self.store is not None and now >= self._next_prune
            if not (purge or trim):
                return
            if purge:
                self._next_pin_purge = now + settings.gateway.pin_purge_interval_s
            if trim:
                self._next_prune = now + PRUNE_INTERVAL_S
            self._maintenance = self._start(purge, days if trim else None)

    def _start(self, purge: bool, retention_days: float | None) -> Future[None]:
        """:meth:`run` on a thread of its own; the future of its end."""
        future: Future[None] = Future()

        def run() -> None:
            try:
                self.run(purge, retention_days)
            except BaseException as exc:  # (it catches what it can mend; the rest is said)
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=run, name="switchpoint-housekeeping", daemon=True).start()
        return future

    def run(self, purge: bool, retention_days: float | None) -> None:
        try:
            if purge:
                owner = self._owner()
                if owner is not None:  # (as often: a check of one file)
                    owner.keep()
                dropped = self.pinner.purge(time.time())
                if dropped:
                    log.debug("purged %d expired session pins", dropped)
            if retention_days is not None and self.store is not None:
                # What another process logged first, and no feedback row pruned past what
                # this service learned: the checkpoint the prune goes by may be that
                # process's, holding rows this one has not learned yet (logged meanwhile too).
                caught = self._caught_up()
                if caught is None:  # (its gateway was dropped meanwhile: closing goes on)
                    return
                through, key = caught
                now, step = self._retention_clock.read(self.store.path.parent)
                if step is not None:
                    log.warning(
                        "retention: the clock stepped %s %.2f days since the last prune, "
                        "beyond the time that passed; the retention leaves out %.2f days of "
                        "steps ahead (the entries logged before are pruned as the time that "
                        "really passed makes them old), until a restart: if the clock is "
                        "wrong, set it right", "ahead" if step > 0 else "back",
                        abs(step) / SECONDS_PER_DAY,
                        self._retention_clock.left_out / SECONDS_PER_DAY)
                report = prune(self.store.path, cutoff_for(retention_days, now), upgrade=False,
                               max_rows=PRUNE_MAX_ROWS, full_vacuum=False,
                               gone=self.store.gone, checkpoint_key=key,
                               learned_through=0 if through is None else through,
                               hold=True, now=now)
                note = report.clock_note(retention_days)
                if note is not None:
                    log.warning("retention: %s", note)
                if any(report.deleted.values()):
                    log.info("pruned log entries older than %g days%s: %s", retention_days,
                             "" if note is None else " before the newest entry logged",
                             report.deleted)
                # The keys that ended before the same cutoff go from keys.db (on the
                # service's own key store, whose lookups then read the file again).
                most = self.settings.governance.max_keys
                try:
                    keys = self.governor.keys.prune(report.cutoff, most, logged=True)
                except StoreError as exc:
                    if not exc.damaged:  # (busy, say: said as any failure, and tried again)
                        raise
                    # (a keys.db missing, deleted holding keys, not the one in use or
                    # damaged: said once, not each hour, until a prune of it goes through)
                    if str(exc) != self._keys_unpruned:
                        log.warning("retention: %s", exc)
                    self._keys_unpruned = str(exc)
                    return
                self._keys_unpruned = None
                if keys:
                    log.info("pruned %d revoked or expired keys (those that ended more than %g "
                             "days ago, and the oldest past the %d ended keys "
                             "governance.max_keys keeps)", keys, retention_days, most)
        except Exception as exc:  # housekeeping must never take a request down
            log.warning("housekeeping failed (it runs again later): %s: %s",
                        type(exc).__name__, exc)

    def take(self) -> Future[None] | None:
        """The housekeeping run to wait for (None: none was started), no longer the gateway's;
        from now until the gateway opens again, no run starts (a request that passed its open
        check as the gateway closed would otherwise start one on the state being closed)."""
        with self._maintenance_lock:
            future, self._maintenance = self._maintenance, None
            self._maintenance_shut = True
        return future

    async def done(self) -> None:
        future = self.take()
        if future is not None:
            await asyncio.wrap_future(future)
