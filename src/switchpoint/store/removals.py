"""What was taken out of service at run time, kept beside ``switchpoint.db`` so that restoring
an older backup of it does not put it back: each model unregistered and each run-time
experiment ended.

``switchpoint.db`` keeps the models registered and the experiments created at run time; a
backup of it taken before one of them was unregistered or ended holds it registered, running.
So each removal is first appended to :data:`REMOVALS_FILENAME` beside it and synced (the
model's or experiment's name and when), then written to the database; a removal the database
refuses is taken out of the file again. Each opening of the database for writing (a start, a
``Gateway`` in a program, ``switchpoint models unregister`` and ``experiments end``) makes
again what the file keeps and the database lacks (:func:`make_again`), with one warning naming
them: a model the database holds registered at or before the one removed (so before its
removal) is unregistered again; a running experiment of the name created at or before the one
ended is ended again, at that end's time (the one figure an end keeps). A model registered
again after its removal, or an experiment of the name made after the end, is left alone. Each
entry keeps when the model or experiment it removed was made beside when it was removed, and
a row is judged by the first: a clock set back between a removal and a registration of the
same name since does not take the new one for the old. A removal whose process died between
the file and the database is made by the next opening likewise: it was asked for, and the
database holds no later change of that name. Whatever only reads the database (a command
such as ``models list`` or the checks ``models unregister`` and ``experiments end`` make before
they take ``data_dir``'s lock, a ``Gateway`` that ``reads_only``) reads its registered models
and run-time experiments as the next opening will leave them, saying so: the store's
:class:`~switchpoint.store.learning.LearningReader` reads them through :func:`as_enforced`.

The file is bounded (:data:`MAX_REMOVALS_BYTES`): past it, the entries of a name that a newer
entry of the same kind and name covers go first (the newest removal of a name covers every
row made before it; an experiment's end it covered is made at the newer end's time), then, if
that is not enough, the older half of what is left. Each change of the file is crash-safe:
an entry is appended and synced, or the whole file rewritten to a new file renamed in its
place. A line that holds no removal (a damaged file) is passed over with a warning naming it.
A process parses the file again only once it changed (:func:`kept_removals`). Names are kept,
never a secret or a card.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from switchpoint._json import loads
from switchpoint._messages import json_quoted, listed_names, quoted_path
from switchpoint.errors import StoreError
from switchpoint.store.learning import LearningReader
from switchpoint.store.line_journal import LineJournal, kept_time, line_of, not_kept_remedy
from switchpoint.store.sqlite import SQLiteStore

log = logging.getLogger("switchpoint.store")

#: The file beside ``switchpoint.db`` that keeps each model unregistered and each run-time
#: experiment ended (name and when), appended and synced before the database takes the
#: change. A backup of ``switchpoint.db`` does not hold it; leave it in place when restoring.
REMOVALS_FILENAME = "switchpoint.removals.jsonl"
#: Most bytes :data:`REMOVALS_FILENAME` grows to (some 8,000 removals of 64-character names).
MAX_REMOVALS_BYTES = 1024 * 1024
MODEL, EXPERIMENT = "model", "experiment"
# What each kind's removal is called, and its done form.
_WORDS = {MODEL: ("unregistration", "unregistered"), EXPERIMENT: ("end", "ended")}
# A journal file's identity (see _identity).
_Identity = tuple[int, int, int, int, int]

# One change of a file at a time in this process (another process is kept out by its lock).
_lock = threading.Lock()


@dataclass(frozen=True)
class Removal:
    """A model (``kind`` :data:`MODEL`) unregistered, or a run-time experiment
    (:data:`EXPERIMENT`) ended, named ``name``, at ``at``; the one removed was registered (or
    created) at ``made``."""

    kind: str
    name: str
    made: float
    at: float

    def line(self) -> bytes:
        return line_of({self.kind: self.name, "made": self.made, "at": self.at})

    @classmethod
    def parse(cls, raw: bytes) -> Removal | None:
        """The removal a line holds; None for one that holds none."""
        try:
            return cls.of(loads(raw))
        except ValueError:
            return None

    @classmethod
    def of(cls, item: object) -> Removal | None:
        """The removal a line's JSON value holds; None for one that holds none."""
        if not isinstance(item, dict):
            return None
        try:
            kinds = [kind for kind in _WORDS if kind in item]
            made, at = float(item["made"]), float(item["at"])
        except (ValueError, TypeError, KeyError):
            return None
        if len(kinds) != 1 or kept_time(made) is None or kept_time(at) is None:
            return None
        name = item[kinds[0]]
        if not isinstance(name, str) or not name:  # (its length: the file's bound)
            return None
        return cls(kinds[0], name, made, at)

    @property
    def words(self) -> str:
        return f"{self.kind} {json_quoted(self.name, 100)}"


def removals_path(store: SQLiteStore) -> Path:
    """The file that keeps ``store``'s removals (:data:`REMOVALS_FILENAME`, beside it)."""
    return store.path.with_name(REMOVALS_FILENAME)


@contextmanager
def journaled(store: SQLiteStore, removal: Removal) -> Iterator[None]:
    """Keep ``removal`` in :func:`removals_path` (on disk before the block runs), for the
    block that writes it to the database; when the block raises (the database refused it),
    the entry is taken out again, so that no later opening makes a removal that was refused.
    :class:`StoreError` naming the file when it cannot be kept (then the block does not
    run)."""
    path = removals_path(store)
    line = removal.line()
    with _lock:
        try:
            _journal(path).append(line)
        except OSError as exc:
            noun, done = _WORDS[removal.kind]
            error = StoreError(f"{quoted_path(path)}: cannot keep the {noun} of "
                               f"{removal.words} there ({exc.strerror or exc}), which keeps it "
                               f"{done} should an older backup of switchpoint.db be restored; "
                               f"it was not {done}: {not_kept_remedy(exc)}, then try again",
                               reason=str(exc.strerror or exc))
            log.error("%s", error)  # (the caller's answer names no path: the log does)
            raise error from None
        try:
            yield
        except BaseException:
            _take_back(path, line, removal)
            raise


def _journal(path: Path) -> LineJournal:
    """The journal of removals at ``path``, bounded to :data:`MAX_REMOVALS_BYTES` by
    :func:`_folded`."""
    return LineJournal(path, MAX_REMOVALS_BYTES, "a model's unregistration or an experiment's "
                       "end", "no removal it keeps is made again", _folded)


def _folded(lines: list[bytes]) -> list[bytes]:
    """``lines`` without the removals a newer one of the same kind and name covers (nor lines
    that hold none), the order kept."""
    newest: dict[tuple[str, str], int] = {}
    for i, removal in enumerate(Removal.parse(raw) for raw in lines):
        if removal is not None:
            newest[(removal.kind, removal.name)] = i
    return [lines[i] for i in sorted(newest.values())]


def _take_back(path: Path, line: bytes, removal: Removal) -> None:
    """Take ``line`` (the removal the database refused) out of ``path`` again. Said when it
    cannot be: the next opening makes the removal."""
    try:
        _journal(path).take_back(line)
    except OSError as exc:
        noun, done = _WORDS[removal.kind]
        log.warning("%s: cannot take back the %s of %s, which switchpoint.db refused (%s): "
                    "the next start makes it, and it is %s then", path, noun, removal.words,
                    exc.strerror or exc, done)


def kept_removals(path: Path) -> list[Removal]:
    """The removals ``path`` keeps, in the order they were made; a line that holds none (a
    damaged file) is passed over, saying which (once for as long as the file is unchanged).
    A file unchanged since this process last read it is not parsed again (see
    :func:`_identity`): each reader of a restored database reads it, some several times."""
    identity = _identity(path)  # (taken before the read: never newer than what is read)
    with _read_lock:
        held = _read.get(path)
    if identity is not None and held is not None and held[0] == identity:
        return list(held[1])
    removals = _journal(path).read(Removal.of)
    if identity is not None:
        with _read_lock:
            _read.pop(path, None)
            _read[path] = (identity, tuple(removals))
            while len(_read) > _READ_HELD:  # (the least recently read let go)
                del _read[next(iter(_read))]
    return removals


# What the journals last read in this process kept, by path, with the file's identity then:
# at most _READ_HELD journals (one of some 1 MiB keeps some 10,000 removals).
_read: dict[Path, tuple[_Identity, tuple[Removal, ...]]] = {}
_read_lock = threading.Lock()
_READ_HELD = 4


def _identity(path: Path) -> _Identity | None:
    """What changes with any change of the regular file at ``path`` (an append, a rewrite
    renamed in its place, an edit in place, a change of who may read it): its device,
    inode, size, and modification and change times; None when there is no regular file
    there (which is then read, never held)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class _UnregisteredAgain:
    """A registered model's removal made again: its row goes if it was registered at or
    before the one removed (one registered again since stays)."""

    name: str
    made: float

    insert: ClassVar[str] = "DELETE FROM runtime_models WHERE name = ? AND created <= ?"
    what: ClassVar[str] = "registered model's removal made again"

    @property
    def id(self) -> str:
        return self.name

    def row(self) -> tuple[Any, ...]:
        return (self.name, self.made)


@dataclass(frozen=True)
class _EndedAgain:
    """A run-time experiment's end made again, at its time (``at``): only while the row runs
    and was made at or before the one ended (``made``; one made since stays)."""

    name: str
    made: float
    at: float

    insert: ClassVar[str] = ("UPDATE runtime_experiments SET ended = ? WHERE name = ? AND "
                             "ended IS NULL AND created <= ?")
    what: ClassVar[str] = "run-time experiment's end made again"

    @property
    def id(self) -> str:
        return self.name

    def row(self) -> tuple[Any, ...]:
        return (self.at, self.name, self.made)


def undone(store: SQLiteStore) -> list[_UnregisteredAgain | _EndedAgain]:
    """The changes that make again the removals :func:`removals_path` keeps that the
    database ``store`` (open) lacks (see :func:`_lacked`). The file is not read when the
    database holds no registered model and no running experiment."""
    path = removals_path(store)
    if not _holds_any(path):
        return []
    reader = LearningReader(store.path, store.gone)
    try:
        models = {m.name: m.created for m in reader.runtime_models(as_kept=True)}
        running = {e.name: e.created for e in reader.runtime_experiments(as_kept=True)
                   if e.ended is None}
    finally:
        reader.close()
    return _lacked(path, models, running)


def _holds_any(path: Path) -> bool:
    """Whether there is a journal at ``path`` that may hold a removal (one that cannot be
    looked at is read, and said so)."""
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return path.exists()


def _lacked(path: Path, models: dict[str, float], running: dict[str, float]
            ) -> list[_UnregisteredAgain | _EndedAgain]:
    """The removals ``path`` keeps that a database holding ``models`` (registered, name to
    when) and ``running`` (experiments, name to when created) lacks: a model registered at or
    before one removed of its name; a running experiment created at or before one ended of
    its name, ended when the first such one ended."""
    if not models and not running:
        return []
    models, running = dict(models), dict(running)
    out: list[_UnregisteredAgain | _EndedAgain] = []
    for removal in kept_removals(path):
        if removal.kind == MODEL:
            created = models.get(removal.name)
            if created is not None and created <= removal.made:
                out.append(_UnregisteredAgain(removal.name, removal.made))
                del models[removal.name]
        else:
            created = running.get(removal.name)
            if created is not None and created <= removal.made:
                out.append(_EndedAgain(removal.name, removal.made, removal.at))
                del running[removal.name]
    return out


def _made_again(changes: Sequence[_UnregisteredAgain | _EndedAgain],
                done: tuple[str, str] = ("unregistered again", "ended again")) -> str:
    """What making ``changes`` again does, naming the models and experiments (``done``: how
    each is said)."""
    models = [c.name for c in changes if isinstance(c, _UnregisteredAgain)]
    ended = [c.name for c in changes if isinstance(c, _EndedAgain)]
    return "; ".join(
        [*([f"{done[0]} model(s) {listed_names(models, quoted=True)}"] if models else []),
         *([f"{done[1]} experiment(s) {listed_names(ended, quoted=True)}"] if ended else [])])


def make_again(store: SQLiteStore) -> None:
    """Make again in ``store`` (open for writing) the removals :func:`removals_path` keeps
    that it lacks (a backup taken before them, restored), saying so; nothing when it lacks
    none. A :class:`StoreError` when the database refuses them (the opening fails, as it
    would for any write it refuses)."""
    with _lock:
        changes = undone(store)
    if not changes:
        return
    for change in changes:
        store.append(change).result()
    log.warning("%s: %s, taken away after this file was taken (a backup restored, or a "
                "change cut short before the file took it), as %s keeps them: what else "
                "changed in switchpoint.db since is not in it (spend since counts against no "
                "budget)", store.path, _made_again(changes), REMOVALS_FILENAME)


@dataclass(frozen=True)
class Enforced:
    """What the removals beside a database unregister (``gone``: names) and end (``ended``:
    name to when it ended) of what it holds, which the next opening for writing makes (see
    :func:`make_again`); ``warning`` says so (None: it lacks none)."""

    gone: frozenset[str] = frozenset()
    ended: Mapping[str, float] = field(default_factory=dict)
    warning: str | None = None


def as_enforced(db: str | Path, models: Mapping[str, float], running: Mapping[str, float]
                ) -> Enforced:
    """For a reader of the database at ``db`` outside an opening for writing, which holds
    ``models`` (registered: name to when) and ``running`` (experiments: name to when
    created): what the removals beside it take away, which the next opening for writing makes
    (see :func:`make_again`), so that what it reads is what a service enforces."""
    path = Path(db).with_name(REMOVALS_FILENAME)
    if not (models or running) or not _holds_any(path):
        return Enforced()
    changes = _lacked(path, dict(models), dict(running))
    if not changes:
        return Enforced()
    return Enforced(
        frozenset(c.name for c in changes if isinstance(c, _UnregisteredAgain)),
        {c.name: c.at for c in changes if isinstance(c, _EndedAgain)},
        f"{db} lacks removals {REMOVALS_FILENAME} keeps (a backup restored), which the next "
        "start (or `switchpoint models unregister`, `experiments end`) makes in it; read with "
        "them made: " + _made_again(changes, ("the service unregisters", "the service ends")))


__all__ = ["EXPERIMENT", "MAX_REMOVALS_BYTES", "MODEL", "REMOVALS_FILENAME", "Enforced",
           "Removal", "as_enforced", "journaled", "kept_removals", "make_again", "removals_path",
           "undone"]
