"""Kill a command at each of its steps on disk: a child process runs the CLI and kills itself
with SIGKILL just before its N-th file-system operation under a folder (opening a file to
write, writing to a file opened with ``os.open``, making, renaming or removing a file or
folder), or before its N-th SQL statement on a database there (a trigger's included: a kill
inside a transaction, mid-deletion); a sweep of N = 1, 2, ... until a run finishes untouched
reaches every moment between two of them.

The children are forked from the fork server of tests/fork_server.py (a fresh interpreter that
has imported the CLI and runs no thread; tests/fork_preload.py lists what it imports), not from
pytest: pytest's process runs servers on threads (a session's gateway, its store's writer), and
a fork taken while one of them held a lock left the child waiting on it for good. A fresh
interpreter for each run would be as safe but three times as slow. The child takes the
caller's environment and folder at the time of the run.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from typing import Any

from tests.fork_server import forks

_STEPS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
          "shutil.rmtree", "os.unlink"}
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _child(step: int, argv: list[str], under: str, env: dict[str, str], cwd: str,
           statements: str | None = None) -> None:
    """Run the CLI, SIGKILLing this process before its ``step``-th write step under ``under``
    (0: never; ``statements``: before its ``step``-th SQL statement, a trigger's included, on
    a connection to a database under ``under``, counted from the first that starts with
    ``statements``); exit with the CLI's status (99 if it raised)."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    seen = 0

    def count() -> None:
        nonlocal seen
        seen += 1
        if seen == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in _STEPS or not args:
            return
        if event == "open" and not (isinstance(args[2], int) and args[2] & _WRITES):
            return  # a read
        paths = [a for a in args if isinstance(a, str | bytes | os.PathLike)]
        if any(os.fsdecode(p).startswith(under) for p in paths):
            count()

    write = os.write

    def write_counted(fd: int, data: Any) -> int:
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(under):
                count()
        except OSError:
            pass
        return write(fd, data)

    connect = sqlite3.connect
    counting = [False]

    def traced(sql: str) -> None:  # (as each statement, or a trigger it fires, begins to run)
        counting[0] = counting[0] or sql.startswith(statements or "")
        if counting[0]:
            count()

    def connect_counted(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(database, *args, **kwargs)
        if os.fsdecode(database).startswith(under):
            conn.set_trace_callback(traced)
        return conn

    try:
        from switchpoint.cli import main

        if statements is not None:
            sqlite3.connect = connect_counted  # type: ignore[assignment]
        else:
            os.write = write_counted
            sys.addaudithook(hook)
        code = main(argv)
    except BaseException:  # the child reports by its exit status alone
        code = 99
    sys.stdout.flush()
    os._exit(code)


def run_killed_at(step: int, argv: list[str], under: str, *,
                  statements: str | None = None) -> int:
    """Run the CLI with ``argv`` in a child that SIGKILLs itself before its ``step``-th write
    step under ``under`` (0: never; ``statements``: its ``step``-th SQL statement on a
    database there, from the first that starts with ``statements``; "": from the first); its
    wait status (as :func:`os.waitpid` gives it)."""
    child = forks.Process(target=_child,
                          args=(step, argv, under, dict(os.environ), os.getcwd(), statements))
    child.start()
    child.join(timeout=120)
    code = child.exitcode
    assert code is not None, f"the command {argv[0]} killed at step {step} never ended"
    return -code if code < 0 else code << 8  # killed by a signal: its number; else the exit
