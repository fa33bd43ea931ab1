"""The learning checkpoints of one gateway: what the live snapshot has learned, saved beside the
store (``learning.checkpoint``; see :mod:`switchpoint.learning.checkpoint`) every
:data:`CHECKPOINT_EVERY` events on a thread of its own, when asked, and at a graceful stop, with
the log position it holds, and taken up by the next snapshot if it fits, so a start replays
only what follows. :class:`LearningCheckpoints` is the
:class:`~switchpoint.gateway.learning.GatewayLearning`'s, which answers ``checkpoint`` with it."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from switchpoint._files import access_problem
from switchpoint._messages import quoted_path
from switchpoint.errors import StoreError
from switchpoint.gateway.feedback_log import ServiceFeedbackLog
from switchpoint.gateway.live import RouterState
from switchpoint.gateway.live_learning import LiveLearning
from switchpoint.learning.checkpoint import (
    CHECKPOINT_FILENAME,
    Checkpoint,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from switchpoint.store.learning import LearningReader

log = logging.getLogger("switchpoint.gateway")

#: Events learned while live between two checkpoints.
CHECKPOINT_EVERY = 5000

class CheckpointHost(Protocol):
    """What the checkpoints read of their gateway's learning: the router state, the feedback
    log, and the log position the live snapshot has learned every row up to."""

    state: RouterState
    log: ServiceFeedbackLog

    def _learned_through(self, learning: LiveLearning) -> tuple[int, str] | None: ...


class LearningCheckpoints:
    """The checkpoints at ``checkpoint_path`` (None: no store, none) of one gateway's learning
    (``host``'s), written when ``checkpoints`` and ``replays`` (see
    :class:`~switchpoint.gateway.learning.GatewayLearning`), taken up when ``replays``."""

    def __init__(self, host: CheckpointHost, checkpoint_path: Path | None, *,
                 checkpoints: bool, replays: bool) -> None:
        self._host = host
        self.state = host.state
        self.log = host.log
        self.checkpoint_path = checkpoint_path
        self.checkpoints = checkpoints
        self.replays = replays
        self._checkpointing: threading.Thread | None = None
        self._checkpoint_lock = threading.Lock()
        # Held to start a checkpoint run and, as the gateway closes, to take the run to wait
        # for and stop runs from starting (until it opens again): feedback learned just as it
        # closed would otherwise start one that closing never waited for.
        self._checkpoint_start = threading.Lock()
        self._checkpoints_shut = False

    @property
    def reader(self) -> LearningReader | None:
        return self.log.reader

    def open(self) -> None:
        """Checkpoint runs start again, once the checkpoint is known usable: one this process
        may not read and replace stops the opening (see
        :meth:`GatewayLearning.open <switchpoint.gateway.learning.GatewayLearning.open>`)."""
        problem = (None if self.checkpoint_path is None or not self.replays
                   else access_problem(self.checkpoint_path, side_files=(),
                                       writes=self.checkpoints))
        if problem is not None:
            raise StoreError(f"{quoted_path(self.checkpoint_path)}: cannot use the learning "
                             f"checkpoint; {problem}")
        with self._checkpoint_start:
            self._checkpoints_shut = False

    def shut(self) -> None:
        """From now until :meth:`open`, no checkpoint run starts; waits for the one under
        way."""
        with self._checkpoint_start:
            self._checkpoints_shut = True
            running = self._checkpointing
        if running is not None:
            running.join()

    def restore(self, learning: LiveLearning) -> int:
        """Restore ``learning`` from the checkpoint in ``data_dir`` if it fits; returns the log
        position it holds (0: none, replay everything)."""
        if self.checkpoint_path is None or self.reader is None:
            return 0
        try:
            return self.read(learning)
        except CheckpointError as exc:
            if self.checkpoint_path.exists():
                log.warning("learning checkpoint not used: %s; replaying the whole feedback "
                            "log", exc)
            first = self.reader.first_feedback()
            if first is not None and first > 1:
                log.error("the feedback log was pruned by retention before log position %d: "
                          "what was learned from those outcomes was only in the learning "
                          "checkpoint, which is not used (%s), so it is not learned now; "
                          "restore %s from the backup taken with the database to take it up",
                          first, exc, CHECKPOINT_FILENAME)
            return 0

    def read(self, learning: LiveLearning) -> int:
        """Restore ``learning`` from the checkpoint in ``data_dir``; returns the log position
        it holds, or :class:`CheckpointError` saying why it does not fit (nothing learned)."""
        assert self.checkpoint_path is not None and self.reader is not None
        checkpoint = read_checkpoint(self.checkpoint_path, learning.checkpoint_key())
        if self.reader.event_id_at(checkpoint.seq) != checkpoint.event_id:
            raise CheckpointError("the feedback log does not hold the event it ends at "
                                  "(the log was replaced)")
        learning.restore(checkpoint.state)
        return checkpoint.seq

    def when_due(self, learning: LiveLearning, due: int | None = None) -> None:
        """Checkpoint on a thread of its own once ``due`` events (default
        :data:`CHECKPOINT_EVERY`) were learned since the last (called under the state's guard,
        which the checkpoint waits for)."""
        due = CHECKPOINT_EVERY if due is None else due
        with self._checkpoint_start:
            if (self._checkpoints_shut or self.checkpoint_path is None or not self.checkpoints
                    or not self.replays or learning.events - learning.tried < due
                    or (self._checkpointing is not None and self._checkpointing.is_alive())):
                return  # (closing: its own checkpoint holds what was learned)
            self._checkpointing = threading.Thread(target=self._quietly,
                                                   name="switchpoint-checkpoint", daemon=True)
            self._checkpointing.start()

    def _quietly(self) -> None:
        try:
            self.write()
        except (OSError, sqlite3.Error, StoreError, ValueError) as exc:
            log.error("learning checkpoint not written: %s (the feedback log still holds "
                      "everything; a start replays more of it)", exc)


    def write(self) -> Path | None:
        """:meth:`GatewayLearning.checkpoint
        <switchpoint.gateway.learning.GatewayLearning.checkpoint>`."""
        if (self.checkpoint_path is None or self.reader is None or not self.checkpoints
                or not self.replays):
            return None
        with self._checkpoint_lock:
            with self.state.guard:  # feedback waits for the snapshot, not for the writing
                snapshot_start = time.perf_counter()
                live = self.state.peek()
                learning: LiveLearning | None = None if live is None else live.learning
                if learning is None or learning.events == learning.checkpointed:
                    return None
                learning.tried = learning.events
                last = self._host._learned_through(learning)
                if last is None:
                    return None
                checkpoint = Checkpoint(learning.checkpoint_key(), last[0], last[1],
                                        learning.state())
                events = learning.events
                t0 = time.perf_counter()
                waited = t0 - snapshot_start
            size = write_checkpoint(self.checkpoint_path, checkpoint)
            learning.checkpointed = events
            log.info("learning checkpoint: %d event(s) up to log position %d, %.1f MB in "
                     "%.2f s (feedback waited %.0f ms for its snapshot)", events,
                     checkpoint.seq, size / 1e6, time.perf_counter() - t0, waited * 1e3)
            return self.checkpoint_path
