"""Reading a store's SQLite file without writing to it or beside it: a read-only connection to
the file a store beside the reader still has open (never to one deleted or replaced since), a
file with its ``-wal`` but no ``-shm`` read from a copy in memory (kept while neither changes),
and a file of an older schema read as upgraded, from a copy, within a bound."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

from switchpoint._files import file_stamp, side_file
from switchpoint._messages import quoted_path
from switchpoint.errors import StoreError
from switchpoint.store.errors import LoneLogError, UpgradeNeededError
from switchpoint.store.migrations import SCHEMA_VERSION
from switchpoint.store.moved import read_only_connection, stale_log
from switchpoint.store.schema import schema_version, upgrade_schema

#: How the database a store has open left its path (its :meth:`SQLiteStore.gone`): ``was
#: deleted``, ``was replaced``, ...; None while it is still there. What a reader beside that
#: store (in the same process) is given, so that it reads no other file than the store writes.
Gone = Callable[[], str | None]


def still_there(path: str | Path, gone: Gone | None) -> None:
    """Nothing while the database ``path`` a store beside this reader has open is still at
    its path (``gone``: that store's :meth:`SQLiteStore.gone`; None: no store beside it, as in
    a command run alone), else :class:`StoreError`, marked ``damaged`` since waiting does not
    mend it: a file deleted or replaced since is not read (the log is not there, or another
    file is, which the store no longer writes), and only a restart opens the file now there."""
    left = gone() if gone is not None else None
    if left is None:
        return
    name = Path(path).name
    raise StoreError(
        f"{quoted_path(path)}: cannot read it: it {left} while the service ran; restore the "
        "file (or leave "
        "it gone to start an empty one), then restart the service",
        reason=f"{name} in data_dir {left} while the service ran, so what it logged cannot "
        "be read; the operator must restart the service",
        damaged=True)


def read_only(path: str | Path, gone: Gone | None = None) -> sqlite3.Connection:
    """A read-only connection to the database ``path``, usable from any thread, once
    :func:`still_there` (``gone``) lets it be read, before and after the path is opened; the
    log of another file a crash left beside it is not read (see
    :func:`~switchpoint.store.moved.read_only_connection`). :class:`sqlite3.Error` when it cannot
    be opened.

    A file with its own ``-wal`` but no ``-shm`` beside it (:func:`_lone_log`) is read from a
    copy in memory (:func:`_read_lone_log`), with what its log holds, and nothing is made
    beside it; past :data:`MAX_UPGRADE_COPY_BYTES`, :class:`LoneLogError`, saying to let a
    writer take the log in first."""
    still_there(path, gone)
    conn = _read_lone_log(path) if _lone_log(path) else read_only_connection(path)
    if gone is not None:
        try:  # (replaced between the look and the opening: the file opened is not the store's)
            still_there(path, gone)
        except BaseException:
            conn.close()
            raise
    return conn


#: What to do about a store file of a newer schema than this switchpoint's.
NEWER_HINT = "upgrade switchpoint or point data_dir elsewhere"


def read_store(path: str | Path, gone: Gone | None = None) -> sqlite3.Connection:
    """A read-only connection to the store's database ``path`` (see :func:`read_only`), for a
    reader that opens no :class:`SQLiteStore` (the reports, a prune's dry run): a file a newer
    switchpoint wrote, whose tables this one may read wrong (rows of a kind it does not know,
    totals kept where it does not look), is refused as opening it for writing is
    (:class:`NewerSchemaError`), not answered from. A file of an older schema is read as it is
    (its readers check the tables it lacks)."""
    conn = read_only(path, gone)
    try:
        schema_version(conn, SCHEMA_VERSION, NEWER_HINT)
    except BaseException:
        conn.close()
        raise
    return conn


#: The most bytes of a file and its ``-wal`` together that a reader copies into memory to
#: read it upgraded (see :func:`read_upgraded`) or to read a ``-wal`` with no ``-shm`` beside
#: it (see :func:`read_only`).
MAX_UPGRADE_COPY_BYTES = 64 * 2**20


def _size_with_log(path: str | Path) -> int:
    """The bytes of the database ``path`` and of the ``-wal`` beside it (if any), which a copy
    of it takes in together."""
    try:
        log_size = os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        log_size = 0
    return os.path.getsize(path) + log_size


def _lone_log(path: str | Path) -> bool:
    """Whether the database ``path`` has its own ``-wal`` beside it but no ``-shm`` (what a
    copy of the two leaves, or a crash that took the ``-shm``): SQLite reading it, read-only
    too, makes the ``-shm``, and leaves it there. (Another file's log, a
    :func:`~switchpoint.store.moved.stale_log`, is not read at all.)"""
    return (side_file(path, "-wal").exists() and not side_file(path, "-shm").exists()
            and stale_log(path) is None)


def _read_copied(path: str | Path, memory: sqlite3.Connection) -> None:
    """Read the database ``path`` with the ``-wal`` beside it into ``memory`` (a connection
    to a database in memory): both are copied into a private temporary folder, the copy
    opened there (SQLite takes the log into it) and backed up into ``memory``, and the folder
    removed, so nothing is made or changed beside ``path``."""
    with tempfile.TemporaryDirectory(prefix="switchpoint-read-") as folder:
        copy = Path(folder) / "copy.db"
        shutil.copyfile(path, copy)
        shutil.copyfile(side_file(path, "-wal"), side_file(copy, "-wal"))
        source = sqlite3.connect(copy, isolation_level=None)
        try:
            source.backup(memory)
        finally:
            source.close()


#: How many databases read with a lone log (see :func:`_read_lone_log`) keep their copy in
#: memory for the next read, while neither the file nor its ``-wal`` changes: a command reads
#: one several times (each report it makes, each reader of the store), and each read copied
#: the two and took the log in again (``switchpoint report sla`` on a 62 MiB copy spent 2 s
#: of its 3 s so; a program asking for reports spent it at every one). The readers of a copy
#: share it (SQLite's shared cache of a database in memory), so a read takes no more memory
#: than one did; but a copy stays in memory after its readers close, until its file changes
#: or another takes its place: each is at most :data:`MAX_UPGRADE_COPY_BYTES`, and the least
#: lately read goes first.
LONE_COPIES_KEPT = 2
# Resolved path: (the file's and its -wal's stamps when copied, the connection that keeps
# the copy, the copy's URI).
_lone_copies: OrderedDict[str, tuple[tuple[object, ...], sqlite3.Connection, str]] = (
    OrderedDict())
_lone_copies_lock = threading.Lock()
_lone_names = itertools.count()


def _log_stamp(path: str | Path) -> tuple[object, ...] | None:
    """What changes when the database ``path`` or its ``-wal`` changes: each one's identity,
    size and time of change; None when one is not there."""
    stamps: list[object] = []
    for file in (Path(path), side_file(path, "-wal")):
        try:
            st = os.stat(file)
        except FileNotFoundError:
            return None
        stamps.append((file_stamp(file), st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def _shared(uri: str) -> sqlite3.Connection:
    """A connection, usable from any thread, to the copy in memory at ``uri``."""
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


def _lone_copy(path: str | Path) -> sqlite3.Connection:
    """A connection to the database ``path`` with its ``-wal``, read into memory as
    :func:`_read_copied` reads it: to the copy kept of it while neither changed (see
    :data:`LONE_COPIES_KEPT`), else to a new one, kept when neither changed while it was
    made."""
    key = str(Path(path).resolve())
    stamp = _log_stamp(path)
    with _lone_copies_lock:
        kept = _lone_copies.get(key)
        if kept is not None and stamp is not None and kept[0] == stamp:
            _lone_copies.move_to_end(key)
            return _shared(kept[2])  # (under the lock: the copy is not let go meanwhile)
    uri = f"file:switchpoint-read-{os.getpid()}-{next(_lone_names)}?mode=memory&cache=shared"
    keeper = _shared(uri)
    try:
        _read_copied(path, keeper)
        conn = _shared(uri)
    except BaseException:
        keeper.close()
        raise
    let_go = [keeper]
    if stamp is not None and _log_stamp(path) == stamp:
        with _lone_copies_lock:
            old = _lone_copies.pop(key, None)
            _lone_copies[key] = (stamp, keeper, uri)
            let_go = [] if old is None else [old[1]]
            while len(_lone_copies) > LONE_COPIES_KEPT:
                let_go.append(_lone_copies.popitem(last=False)[1][1])
    for held in let_go:  # (a copy goes with the last connection to it)
        held.close()
    return conn


def _read_lone_log(path: str | Path) -> sqlite3.Connection:
    """The database ``path`` with its ``-wal`` and no ``-shm`` beside it (:func:`_lone_log`),
    read from a copy of the two in memory (:func:`_read_copied`), refusing writes
    (``query_only``), as long as the two together are no more than
    :data:`MAX_UPGRADE_COPY_BYTES`; past that, :class:`LoneLogError`.

    SQLite offers no way to read such a file in place without writing beside it: to read the
    log it needs the ``-shm`` index, and a connection opened read-only (``mode=ro``) makes the
    ``-shm`` wherever the folder lets it (and cannot open the file where the folder does not);
    ``immutable`` reads the file without its log (so without the commits the log holds);
    ``readonly_shm`` and ``nolock`` do not open it without a ``-shm``; and the exclusive
    locking mode, which keeps the index in memory, takes a write lock a read-only connection
    cannot take (and a writable one checkpoints the log into the file as it closes). So the
    reader copies, within a bound, and past it refuses rather than change the data_dir it may
    not own. The copy is kept for the next read while neither file changes, its readers
    sharing it (:func:`_lone_copy`)."""
    size = _size_with_log(path)
    if size > MAX_UPGRADE_COPY_BYTES:
        raise LoneLogError(
            f"its -wal holds writes not yet in the file and no -shm is beside it (a copy of "
            f"the two, or a crash that took the -shm, leaves it so): reading it in place would "
            f"make a -shm in data_dir, and the file with its -wal ({size / 2**20:.0f} MiB) is "
            f"too big to be read from a copy in memory (at most "
            f"{MAX_UPGRADE_COPY_BYTES // 2**20} MiB) by a command that writes nothing: start "
            "the service once (or run a command that writes the file) to take the log into "
            "the file, then run this command again")
    copy = _lone_copy(path)
    try:
        copy.execute("PRAGMA query_only=ON")
    except BaseException:
        copy.close()
        raise
    return copy


def _version_alone(path: str | Path, latest: int, newer: str) -> int:
    """The schema version the database ``path`` itself holds, read without its ``-wal`` (as
    SQLite reads a file it may not change: nothing is made beside it)."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return schema_version(conn, latest, newer)
    finally:
        conn.close()


def _too_big_to_upgrade(version: int, latest: int, size: int) -> UpgradeNeededError:
    return UpgradeNeededError(
        f"its schema version {version} is older than this switchpoint's {latest}, and the "
        f"file with its -wal ({size / 2**20:.0f} MiB) is too big to be read upgraded in "
        f"memory (at most {MAX_UPGRADE_COPY_BYTES // 2**20} MiB) by a command that writes "
        "nothing: start the service once (or run a command that writes the file) to upgrade "
        "it, then run this command again")


def read_upgraded(path: str | Path, migrations: Mapping[int, str], *,
                  newer: str = "") -> sqlite3.Connection:
    """A read-only connection to the database ``path`` (see :func:`read_only`) as its schema
    is once brought up to the last of ``migrations``, for a reader that writes nothing (a
    command that only reads the keys): a file already up to date is read as it is; one of an
    older schema is copied into memory and the copy upgraded (its readers then find every
    table and column they ask for), the file left as it was, to be upgraded by the next
    writer opening it. A file of a newer schema is :class:`NewerSchemaError` (``newer`` says
    what to do); an older one past :data:`MAX_UPGRADE_COPY_BYTES` (the file and its ``-wal``
    together), :class:`UpgradeNeededError`, saying to let a writer upgrade it first.

    A file with its ``-wal`` but no ``-shm`` beside it (:func:`_lone_log`) is read from a
    copy of the two in memory, up to date or not, as :func:`read_only` reads it, so that no
    ``-shm`` is left beside it; past :data:`MAX_UPGRADE_COPY_BYTES`, an older one is refused
    as above, its version read from the file alone, and one up to date as
    :func:`read_only` refuses it (:class:`LoneLogError`)."""
    latest = max(migrations)
    size = _size_with_log(path)
    if _lone_log(path) and size > MAX_UPGRADE_COPY_BYTES:
        version = _version_alone(path, latest, newer)
        if version < latest:
            raise _too_big_to_upgrade(version, latest, size)
    conn = read_only(path)  # (a lone log: a copy in memory, or LoneLogError past the bound)
    try:
        version = schema_version(conn, latest, newer)
        if version == latest:
            return conn
        if size > MAX_UPGRADE_COPY_BYTES:
            raise _too_big_to_upgrade(version, latest, size)
        copy = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        try:
            conn.backup(copy)
            upgrade_schema(copy, migrations, newer=newer)
            copy.execute("PRAGMA query_only=ON")
        except BaseException:
            copy.close()
            raise
    except BaseException:
        conn.close()
        raise
    conn.close()
    return copy
