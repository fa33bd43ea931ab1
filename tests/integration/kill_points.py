"""Kill a command at each of its steps on disk: a forked child runs the CLI and kills itself
with SIGKILL just before its N-th file-system operation under a folder (opening a file to
write, writing to a file opened with ``os.open``, making, renaming or removing a file or
folder); a sweep of N = 1, 2, ... until a run
finishes untouched reaches every moment between two of them."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

_STEPS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
          "shutil.rmtree", "os.unlink"}
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def run_killed_at(step: int, argv: list[str], under: str) -> int:
    """Run the CLI with ``argv`` in a forked child that SIGKILLs itself before its ``step``-th
    write step under ``under``; its wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
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

        try:
            from switchpoint.cli import main

            os.write = write_counted
            sys.addaudithook(hook)
            code = main(argv)
        except BaseException:  # the child reports by its exit status alone
            code = 99
        os._exit(code)
    return os.waitpid(pid, 0)[1]
