"""A store's SQLite file set up for writing: WAL mode, the JSON functions its triggers need, and
its schema brought up to date by numbered migrations, in one transaction that a second opener
waits for."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from switchpoint._messages import quoted_path
from switchpoint.errors import StoreError
from switchpoint.store.errors import NewerSchemaError

#: How long a write waits for a lock another connection holds (milliseconds, SQLite's
#: ``busy_timeout``): a backup or a prune beside the service holds it briefly.
BUSY_MS = 5000


def wal_mode(conn: sqlite3.Connection, wait_ms: int = BUSY_MS) -> None:
    """Put ``conn``'s file in WAL mode (if it is not already). Leaving a rollback journal takes
    the file's exclusive lock, which SQLite refuses at once, without waiting, to one of two
    connections converting it at the same moment (so that neither waits for the other): it is
    asked again, for up to ``wait_ms``, until the other's conversion is done."""
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            busy = isinstance(code, int) and (code & 0xFF) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def upgrade_schema(conn: sqlite3.Connection, migrations: Mapping[int, str], *,
                   newer: str = "") -> None:
    """Bring the schema of ``conn``'s file up to the last of ``migrations`` (version ``n``'s
    script at key ``n``), in one transaction that takes the write lock first and reads the
    version inside it: of two processes opening an old file at once (the CLI beside the
    service), the second waits for the first's upgrade, then finds nothing left to do. A file
    already up to date is only read. ``newer`` is added to the error for a file whose schema is
    newer than this switchpoint's (what to do about it)."""
    latest = max(migrations)
    if schema_version(conn, latest, newer) == latest:
        return
    conn.execute("BEGIN IMMEDIATE")  # waits (busy_timeout) for another opener's upgrade
    try:
        version = schema_version(conn, latest, newer)
        for target in range(version + 1, latest + 1):
            for statement in _statements(migrations[target]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # (a failed COMMIT may have rolled back already)
            conn.execute("ROLLBACK")
        raise


def require_json(conn: sqlite3.Connection, path: str | Path) -> None:
    """Refuse, saying why, a SQLite built without its JSON functions: the decisions table's
    hourly sums are kept by triggers that read each decision's expected errors with them, so
    every write would fail. SQLite 3.38 and later always have them; most earlier builds too."""
    try:
        conn.execute("SELECT json_valid('{}')").fetchone()
    except sqlite3.DatabaseError:  # (no such function; or, where denied, not authorized)
        raise StoreError(
            f"{quoted_path(path)}: cannot open it: this Python's SQLite "
            f"({sqlite3.sqlite_version}) was "
            "built without its JSON functions, which the store needs; SQLite 3.38 and later "
            "always have them: run switchpoint on a Python linked against such a SQLite") from None


def schema_version(conn: sqlite3.Connection, latest: int, newer: str) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > latest:
        raise NewerSchemaError(
            f"schema version {version} is newer than this switchpoint's {latest}"
            + (f"; {newer}" if newer else ""))
    return version


def _statements(script: str) -> list[str]:
    """The statements of ``script``, one by one (a trigger's body stays whole): run each with
    ``execute``, since ``executescript`` would commit the transaction it runs in."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):  # (an empty one does nothing)
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError(f"an incomplete statement ends the migration: {pending.strip()!r}")
    return statements
